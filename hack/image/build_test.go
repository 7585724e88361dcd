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

package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestImage builds the real image, as `make image` does, and checks it the
// way a cluster would use it. It builds the manager for two platforms, twice
// (the second time to compare), which takes a minute or two: -short skips it.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the manager for linux/amd64 and linux/arm64, twice")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	const img = "example.com/opsnow/opsnow-token-operator:v1.2.3"
	ref, err := name.NewTag(img)
	if err != nil {
		t.Fatal(err)
	}
	build := func(out string) (v1.Hash, outputs) {
		o := options{
			module:    filepath.Join("..", ".."),
			out:       out,
			base:      "opsnow-token-operator",
			img:       img,
			platforms: testPlatforms,
			meta:      testMeta,
		}
		var log bytes.Buffer
		start := time.Now()
		d, err := run(ctx, o, &log)
		if err != nil {
			t.Fatalf("build: %v\n%s", err, log.String())
		}
		t.Logf("built %s in %s", d, time.Since(start).Round(time.Second))
		return d, outputPaths(out, o.base, []platformImage{{platform: testPlatforms[0]}, {platform: testPlatforms[1]}})
	}
	digest, out := build(t.TempDir())

	images := checkLayout(t, out, ref, digest, testMeta)
	for _, p := range testPlatforms {
		t.Run("image "+p.OS+"-"+p.Architecture, func(t *testing.T) {
			img := images[p.String()]
			checkConfig(t, img, p, testMeta)
			files := checkFiles(t, img, testCreated)
			checkBinary(t, files["manager"].body, p)
		})
	}

	t.Run("manager --help", func(t *testing.T) {
		p := v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
		img, ok := images[p.String()]
		if !ok {
			t.Skipf("no image for this machine's platform %s to run", p)
		}
		manager := filepath.Join(t.TempDir(), "manager")
		if err := os.WriteFile(manager, imageFiles(t, img)["manager"].body, 0o555); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, manager, "--help")
		// As in the image: no variables beyond PATH.
		cmd.Env = []string{defaultPathEnv}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("manager --help: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		}
		if !strings.Contains(stdout.String(), "Usage of manager") {
			t.Errorf("manager --help printed no usage:\n%s", stdout.String())
		}
	})

	t.Run("reproducible", func(t *testing.T) {
		again, out2 := build(t.TempDir())
		if again != digest {
			t.Errorf("two builds of one tree give index digests %s and %s", digest, again)
		}
		compareOutputs(t, out, out2)
	})
}

// checkBinary checks that the manager is the static, stripped, trimmed
// binary for p, with the CA roots it needs where the system has none.
func checkBinary(t *testing.T, manager []byte, p v1.Platform) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(manager))
	if err != nil {
		t.Fatalf("/manager is not an ELF file: %v", err)
	}
	defer f.Close()
	if want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[p.Architecture]; f.Machine != want {
		t.Errorf("/manager is for %s, want %s", f.Machine, want)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Error("/manager has a program interpreter: it is not static")
		}
	}
	if f.Section(".symtab") != nil {
		t.Error("/manager has a symbol table: it was not built with -ldflags=-s")
	}

	info, err := buildinfo.Read(bytes.NewReader(manager))
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
		if strings.HasPrefix(s.Key, "vcs") {
			t.Errorf("/manager records %s=%s: the build must not depend on the work tree's VCS state", s.Key, s.Value)
		}
	}
	// With -trimpath the go command does not record -ldflags; the missing
	// symbol table above shows -s.
	for k, v := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true", "GOOS": p.OS, "GOARCH": p.Architecture} {
		if settings[k] != v {
			t.Errorf("/manager built with %s=%q, want %q", k, settings[k], v)
		}
	}
	found := false
	for _, d := range info.Deps {
		found = found || d.Path == "golang.org/x/crypto/x509roots/fallback"
	}
	if !found {
		t.Error("/manager does not embed golang.org/x/crypto/x509roots/fallback: with no CA bundle in the image it could not verify OpsNow")
	}
}
