# Build the manager binary
# Override BASE_IMAGE to build from another registry, e.g. docker.io/library/golang:1.26
ARG BASE_IMAGE=golang:1.26
FROM ${BASE_IMAGE} AS builder
ARG TARGETOS
ARG TARGETARCH

WORKDIR /workspace
# Copy the Go Modules manifests
COPY go.mod go.mod
COPY go.sum go.sum
# cache deps before building and copying source so that we don't need to re-download as much
# and so that source changes don't invalidate our downloaded layer
RUN go mod download

# Copy the Go source (.dockerignore keeps only non-test Go files)
COPY . .

# A static binary (no cgo, so it runs on distroless/static without libc),
# without local paths (-trimpath) or symbol and debug tables (-s -w).
# GOARCH has no default, so that the binary is built for the platform of the
# image being built (docker buildx sets TARGETARCH).
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o manager .

# distroless/static: no shell, no package manager, nothing but the binary,
# CA certificates and time zone data. See
# https://github.com/GoogleContainerTools/distroless
FROM gcr.io/distroless/static:nonroot
WORKDIR /
COPY --from=builder /workspace/manager .
# Numeric, so that the kubelet can verify runAsNonRoot without an /etc/passwd
# lookup: 65532 is the distroless "nonroot" user.
USER 65532:65532

ENTRYPOINT ["/manager"]
