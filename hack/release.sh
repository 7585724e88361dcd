#!/usr/bin/env bash
# Fills dist/ for a release from what `make image` and `make sbom` wrote:
#   install.yaml                               config/default, the image pinned by digest
#   opsnow-token-operator-X.Y.Z.tgz            the Helm chart: version and appVersion X.Y.Z, image.digest set
#   opsnow-token-operator-X.Y.Z-oci.tar        the image: an OCI layout of the linux/amd64+arm64 index
#   opsnow-token-operator-X.Y.Z-linux-ARCH.tar one platform's image as a docker-archive (docker load)
#   opsnow-token-operator-X.Y.Z.cdx.json       the SBOM (CycloneDX)
#   SHA256SUMS                                 sha256sum of every file above
# Run by `make release VERSION=X.Y.Z`, which sets the environment below. The
# checked-in config/ and chart are not touched: both are edited in copies.
# The digest comes from the OCI layout tar copied into dist/, and the other
# tarballs are checked against it, so what dist/ holds is one build even if
# another `make image` rewrites bin/image meanwhile.
set -euo pipefail

: "${VERSION:?VERSION=X.Y.Z is required}"
: "${IMG_REPO:?IMG_REPO (the image repository, without tag or digest) is required}"
KUSTOMIZE="${KUSTOMIZE:-kustomize}"
HELM="${HELM:-helm}"
CHART="${CHART:-charts/opsnow-token-operator}"
IMAGE_DIR="${IMAGE_DIR:-bin/image}"
SBOM="${SBOM:-bin/sbom/opsnow-token-operator.cdx.json}"
DIST="${DIST:-dist}"
NAME=opsnow-token-operator

die() { echo "release: $*" >&2; exit 1; }

[[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "VERSION must be X.Y.Z (no leading v), got '$VERSION'"
# Tools given by a path are run from other directories below.
for tool in KUSTOMIZE HELM; do
	if [[ "${!tool}" == */* ]]; then
		printf -v "$tool" '%s' "$(realpath -- "${!tool}")"
	fi
done
cd "$(dirname "$0")/.."

[ -f "$SBOM" ] || die "$SBOM not found: run 'make sbom' first"
[ -f "$IMAGE_DIR/$NAME.tar" ] || die "$IMAGE_DIR/$NAME.tar not found: run 'make image' first"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$DIST"
mkdir -p "$DIST"

# The image tarballs and the SBOM, named for the release: bin/image/NAME.tar
# (the OCI layout) -> NAME-X.Y.Z-oci.tar, bin/image/NAME-linux-amd64.tar (a
# docker-archive) -> NAME-X.Y.Z-linux-amd64.tar.
for tar in "$IMAGE_DIR"/*.tar; do
	base="$(basename "$tar" .tar)"
	case "$base" in
	"$NAME") suffix=-oci ;;
	"$NAME"-*) suffix="${base#"$NAME"}" ;;
	*) suffix="-$base" ;;
	esac
	cp "$tar" "$DIST/$NAME-$VERSION$suffix.tar"
done
cp "$SBOM" "$DIST/$NAME-$VERSION.cdx.json"

# The digest of the multi-platform image index, from the layout in dist/. In
# an OCI layout whose index.json holds one entry, that entry is the image
# index (what `crane push` pushes); with several entries, index.json itself
# is the index (what `crane push --index` pushes).
layout="$tmp/oci"
mkdir -p "$layout"
tar -xf "$DIST/$NAME-$VERSION-oci.tar" -C "$layout"
[ -f "$layout/index.json" ] || die "$IMAGE_DIR/$NAME.tar: no index.json, not an OCI layout"
blob() {
	local f="$layout/blobs/${1/://}"
	[ -f "$f" ] || die "$NAME-$VERSION-oci.tar: blob $1 is missing"
	[ "sha256:$(sha256sum < "$f" | cut -d' ' -f1)" = "$1" ] || die "$NAME-$VERSION-oci.tar: blob $1 does not match its digest"
	echo "$f"
}
if [ "$(jq '.manifests | length' "$layout/index.json")" = 1 ]; then
	[ "$(jq -r '.manifests[0].mediaType' "$layout/index.json")" = application/vnd.oci.image.index.v1+json ] ||
		die "$NAME-$VERSION-oci.tar: the one entry of index.json is not an image index"
	digest="$(jq -r '.manifests[0].digest' "$layout/index.json")"
	index="$(blob "$digest")"
else
	digest="sha256:$(sha256sum < "$layout/index.json" | cut -d' ' -f1)"
	index="$layout/index.json"
fi
[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || die "bad image digest '$digest'"
image="$IMG_REPO@$digest"

# bin/image is shared by every 'make image': check that the image was built
# for this release (labelled VERSION) and that each docker-archive holds one
# of its images, tagged IMG_REPO:VERSION.
version_label="$(jq -r '.annotations["org.opencontainers.image.version"] // empty' "$index")"
[ -z "$version_label" ] || [ "$version_label" = "$VERSION" ] ||
	die "$IMAGE_DIR holds an image of version '$version_label', not $VERSION: did another 'make image' run meanwhile?"
configs=()
for m in $(jq -r '.manifests[].digest' "$index"); do
	manifest="$(blob "$m")"
	configs+=("$(jq -r '.config.digest' "$manifest")")
done
for tar in "$DIST"/*.tar; do
	[ "$tar" != "$DIST/$NAME-$VERSION-oci.tar" ] || continue
	manifest="$(tar -xOf "$tar" manifest.json)" || die "$tar: not a docker-archive"
	config="$(jq -r '.[0].Config | sub("^blobs/sha256/"; "sha256:")' <<< "$manifest")"
	[[ " ${configs[*]} " == *" $config "* ]] || die "$tar: its image is not one of $digest"
	tag="$(jq -r '.[0].RepoTags[0] // empty' <<< "$manifest")"
	[ "$tag" = "$IMG_REPO:$VERSION" ] || die "$tar: tagged '$tag', not $IMG_REPO:$VERSION"
done

# install.yaml: config/ copied whole, since config/default refers to its siblings.
cp -R config "$tmp/config"
(cd "$tmp/config/manager" && "$KUSTOMIZE" edit set image "controller=$image")
"$KUSTOMIZE" build "$tmp/config/default" > "$DIST/install.yaml"
[ "$(grep -Ec "^ +image: $image\$" "$DIST/install.yaml")" = 1 ] ||
	die "install.yaml does not run $image exactly once"

# The chart: image.repository and image.digest set in the copy's values.yaml.
mkdir -p "$tmp/chart"
cp -R "$CHART" "$tmp/chart/$NAME"
awk -v repo="$IMG_REPO" -v digest="$digest" '
	/^image:/ { in_image = 1; print; next }
	/^[^ #]/ { in_image = 0 }
	in_image && /^  repository:/ { print "  repository: " repo; next }
	in_image && /^  digest:/ { print "  digest: \"" digest "\""; next }
	{ print }
' "$CHART/values.yaml" > "$tmp/chart/$NAME/values.yaml"
"$HELM" template "$NAME" "$tmp/chart/$NAME" | grep -Eq "^ +image: \"?$image\"?\$" ||
	die "the packaged chart would not run $image"
"$HELM" package "$tmp/chart/$NAME" --version "$VERSION" --app-version "$VERSION" --destination "$DIST" >/dev/null

(
	cd "$DIST"
	find . -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort | xargs sha256sum > "$tmp/SHA256SUMS"
	mv "$tmp/SHA256SUMS" SHA256SUMS
	sha256sum --quiet -c SHA256SUMS
)

echo "release $VERSION: $image"
ls -l "$DIST"
