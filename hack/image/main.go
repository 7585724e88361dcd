/*
Copyright 2026 The opsnow-token-operator Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Command image builds the manager's container image without a container
// engine: the static manager binary for each platform, /etc/passwd and
// /etc/group for the nonroot user, and nothing else, in one layer.
//
//	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) go run ./hack/image \
//	    -img ghcr.io/opsnow-token-operator/opsnow-token-operator:v1.2.3 \
//	    -version v1.2.3 -revision $(git rev-parse HEAD)
//
// `make image` runs it so. It writes, under -out:
//
//	oci/                                   OCI image layout, one index of all platforms
//	opsnow-token-operator.tar              the same layout as a tar
//	opsnow-token-operator-linux-amd64.tar  docker-archive of one platform, tagged -img
//	opsnow-token-operator-linux-arm64.tar
//
// and prints the index digest to stdout. Every timestamp is
// SOURCE_DATE_EPOCH, so that two builds of one commit with one Go toolchain
// give the same digest. The CA certificates are in the binary
// (golang.org/x/crypto/x509roots/fallback, imported by main.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// options are the command's flags.
type options struct {
	module    string
	out       string
	base      string
	img       string
	platforms []v1.Platform
	meta      metadata
}

func parseFlags(args []string, getenv func(string) string) (options, error) {
	var o options
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.StringVar(&o.module, "module", ".", "Directory of the module whose root package is the manager.")
	fs.StringVar(&o.out, "out", "bin/image", "Directory the image files are written to.")
	fs.StringVar(&o.base, "name", "opsnow-token-operator", "Base name of the tar files.")
	fs.StringVar(&o.img, "img", "ghcr.io/opsnow-token-operator/opsnow-token-operator:latest",
		"Image reference (with a tag) the tar files name the image by.")
	fs.StringVar(&o.meta.version, "version", "0.0.0-dev", "org.opencontainers.image.version label.")
	fs.StringVar(&o.meta.revision, "revision", "", "org.opencontainers.image.revision label: the commit.")
	fs.StringVar(&o.meta.source, "source", "https://github.com/opsnow-token-operator/opsnow-token-operator",
		"org.opencontainers.image.source label.")
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "Comma-separated platforms of the index.")
	epoch := fs.String("source-date-epoch", getenv("SOURCE_DATE_EPOCH"),
		"Seconds since 1970 used for every timestamp (default $SOURCE_DATE_EPOCH; make image uses the commit time).")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *epoch == "" {
		return o, errors.New("no -source-date-epoch and no SOURCE_DATE_EPOCH: give the commit time, `git log -1 --format=%ct`")
	}
	secs, err := strconv.ParseInt(*epoch, 10, 64)
	if err != nil || secs < 0 {
		return o, fmt.Errorf("source date epoch %q: not a number of seconds since 1970", *epoch)
	}
	o.meta.created = time.Unix(secs, 0).UTC()
	if _, err := name.NewTag(o.img); err != nil {
		return o, fmt.Errorf("-img: %w", err)
	}
	for _, s := range strings.Split(*platforms, ",") {
		p, err := v1.ParsePlatform(strings.TrimSpace(s))
		if err != nil {
			return o, fmt.Errorf("-platforms: %w", err)
		}
		o.platforms = append(o.platforms, *p)
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	digest, err := run(ctx, o, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%s index %s\n", o.img, digest)
}

// run builds the image and writes the outputs; it returns the index digest.
func run(ctx context.Context, o options, log io.Writer) (v1.Hash, error) {
	ref, err := name.NewTag(o.img)
	if err != nil {
		return v1.Hash{}, err
	}
	tmp, err := os.MkdirTemp("", "opsnow-image-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()

	images := make([]platformImage, 0, len(o.platforms))
	for _, p := range o.platforms {
		bin := filepath.Join(tmp, "manager-"+p.OS+"-"+p.Architecture)
		fmt.Fprintf(log, "building the manager for %s\n", p)
		if err := buildManager(ctx, o.module, p, bin, log); err != nil {
			return v1.Hash{}, fmt.Errorf("building the manager for %s: %w", p, err)
		}
		manager, err := os.ReadFile(bin)
		if err != nil {
			return v1.Hash{}, err
		}
		img, err := newImage(manager, p, o.meta)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("image for %s: %w", p, err)
		}
		d, err := img.Digest()
		if err != nil {
			return v1.Hash{}, err
		}
		fmt.Fprintf(log, "%s image %s\n", p, d)
		images = append(images, platformImage{platform: p, image: img})
	}
	idx, err := newIndex(images, o.meta)
	if err != nil {
		return v1.Hash{}, err
	}
	paths := outputPaths(o.out, o.base, images)
	if err := writeOutputs(paths, ref, idx, images, o.meta.created); err != nil {
		return v1.Hash{}, err
	}
	fmt.Fprintf(log, "wrote %s, %s", paths.layout, paths.layoutTar)
	for _, p := range o.platforms {
		fmt.Fprintf(log, ", %s", paths.archives[p.String()])
	}
	fmt.Fprintln(log)
	return idx.Digest()
}

// buildManager builds the module's root package for p into out with the
// Dockerfile's flags: static (no cgo, so no libc needed), without local
// paths or symbol tables. The environment is pinned where it changes the
// binary: GOFLAGS (-buildvcs=false, so that an uncommitted change in an
// unrelated file does not change the image, and no flags from the caller)
// and the baseline CPU levels, which must run on every node of the platform.
func buildManager(ctx context.Context, module string, p v1.Platform, out string, log io.Writer) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = module
	cmd.Env = append(os.Environ(),
		"CGO_ENABLED=0",
		"GOOS="+p.OS,
		"GOARCH="+p.Architecture,
		"GOFLAGS=-buildvcs=false",
		"GOAMD64=v1",
		"GOARM64=v8.0",
	)
	cmd.Stdout, cmd.Stderr = log, log
	return cmd.Run()
}
