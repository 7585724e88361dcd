# Build the manager binary
# Override BASE_IMAGE to build from another registry, e.g. docker.io/library/golang:1.26
ARG BASE_IMAGE=golang:1.26
FROM ${BASE_IMAGE} AS builder
ARG TARGETOS
ARG TARGETARCH
# The Go release of the binary, as in the Makefile (make docker-build passes its
# GOTOOLCHAIN): the golang images set GOTOOLCHAIN=local, which would ship the
# image's own Go; the go command fetches this one through the module proxy.
ARG GOTOOLCHAIN=go1.27.3
ENV GOTOOLCHAIN=${GOTOOLCHAIN}

WORKDIR /workspace
# Copy the Go Modules manifests
COPY go.mod go.mod
COPY go.sum go.sum
# cache deps before building and copying source so that we don't need to re-download as much
# and so that source changes don't invalidate our downloaded layer
RUN go mod download

# Copy the Go source (.dockerignore keeps only non-test Go files and hack/image/rootfs)
COPY . .

# The flags of `make image` (hack/image), so that both build the same binary
# from the same Go release: static (no cgo, so it needs no libc), without
# local paths (-trimpath) or symbol and debug tables (-s -w), no VCS stamp,
# baseline CPU levels. GOARCH has no default, so that the binary is built for
# the platform of the image being built (docker buildx sets TARGETARCH).
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    GOFLAGS=-buildvcs=false GOAMD64=v1 GOARM64=v8.0 \
    go build -trimpath -ldflags="-s -w" -o manager .

# The one layer of the image, as `make image` writes it: the manager, and
# /etc/passwd and /etc/group naming the nonroot user, all owned by root and
# read-only for everyone else.
RUN mkdir -p /rootfs/etc \
    && cp hack/image/rootfs/etc/passwd hack/image/rootfs/etc/group /rootfs/etc/ \
    && cp manager /rootfs/manager \
    && chmod 0755 /rootfs/etc && chmod 0644 /rootfs/etc/passwd /rootfs/etc/group \
    && chmod 0555 /rootfs/manager

# Nothing but that layer: no shell (nonroot's /sbin/nologin does not exist),
# no package manager, no CA bundle: the CA certificates are in the binary
# (golang.org/x/crypto/x509roots/fallback, imported by main.go).
FROM scratch
COPY --from=builder /rootfs/ /
# The labels of `make image`; it sets these from git, pass them with
# --build-arg (created is the commit time, RFC 3339).
ARG VERSION=0.0.0-dev
ARG REVISION=
ARG CREATED=
LABEL org.opencontainers.image.source="https://github.com/opsnow-token-operator/opsnow-token-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.created="${CREATED}"
WORKDIR /
# Numeric, so that the kubelet can verify runAsNonRoot without an /etc/passwd
# lookup: 65532 is the distroless "nonroot" user.
USER 65532:65532

ENTRYPOINT ["/manager"]
