#!/usr/bin/env bash
# Prints a directory holding kube-apiserver and etcd for envtest, getting them
# the cheapest way that works, in this order:
#   1. KUBEBUILDER_ASSETS, if already set;
#   2. binaries already cached under $ENVTEST_CACHE;
#   3. setup-envtest's normal download (works with internet access);
#   4. a build from source through the Go module proxy (about 8 minutes cold).
# The cache lives outside the checkout so fresh clones reuse it.
# Progress goes to stderr; stdout carries only the directory.
set -euo pipefail

K8S_VERSION=${ENVTEST_K8S_VERSION:-1.37.2}
ETCD_VERSION=${ENVTEST_ETCD_VERSION:-3.6.16}
SETUP_ENVTEST=${SETUP_ENVTEST:-}
CACHE_ROOT=${ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/opsnow-token-operator/envtest}
dir="$CACHE_ROOT/$K8S_VERSION"

log() { echo "envtest-assets: $*" >&2; }
have_assets() { [ -x "$1/kube-apiserver" ] && [ -x "$1/etcd" ]; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && have_assets "$KUBEBUILDER_ASSETS"; then
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

if have_assets "$dir"; then
  echo "$dir"
  exit 0
fi

if [ -n "$SETUP_ENVTEST" ] && [ -x "$SETUP_ENVTEST" ]; then
  log "trying setup-envtest download of $K8S_VERSION"
  if downloaded=$("$SETUP_ENVTEST" use "$K8S_VERSION" --bin-dir "$CACHE_ROOT/download" -p path 2>/dev/null) \
     && have_assets "$downloaded"; then
    mkdir -p "$dir"
    cp "$downloaded/kube-apiserver" "$downloaded/etcd" "$dir/"
    echo "$dir"
    exit 0
  fi
  log "download unavailable; building from source through the Go module proxy"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dir.partial"

# kube-apiserver: k8s.io/kubernetes replaces its staging modules with local
# paths that the published module lacks, so point each at its published tag.
log "building kube-apiserver v$K8S_VERSION (about 8 minutes on 2 cores, once)"
mkdir "$work/apiserver"
(
  cd "$work/apiserver"
  go mod init envtest-kube-apiserver >/dev/null 2>&1
  gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  staging_version="v0.${K8S_VERSION#*.}"
  args=(-require "k8s.io/kubernetes@v$K8S_VERSION")
  while read -r name; do
    args+=(-replace "$name=$name@$staging_version")
  done < <(sed -n 's|^[[:space:]]*\(k8s.io/[^[:space:]]*\) => ./staging/src/.*|\1|p' "$gomod")
  go mod edit "${args[@]}"
  go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" >&2
  go build -ldflags "-s -w" -o "$dir.partial/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
)

log "building etcd v$ETCD_VERSION (about 1 minute, once)"
mkdir "$work/etcd"
(
  cd "$work/etcd"
  go mod init envtest-etcd >/dev/null 2>&1
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
  go mod tidy >&2
  go build -ldflags "-s -w" -o "$dir.partial/etcd" . >&2
)

rm -rf "$dir"
mv "$dir.partial" "$dir"
log "cached in $dir"
echo "$dir"
