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
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The tests in this file assemble images around a stand-in binary and run
// in a moment; build_test.go builds the real manager.

var (
	testCreated = time.Date(2026, 11, 27, 15, 0, 0, 0, time.UTC)
	testMeta    = metadata{
		source:   "https://github.com/opsnow-token-operator/opsnow-token-operator",
		version:  "v1.2.3",
		revision: "0123456789abcdef0123456789abcdef01234567",
		created:  testCreated,
	}
	testPlatforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}
)

// layerFile is one entry of an image's filesystem.
type layerFile struct {
	header tar.Header
	body   []byte
}

// imageFiles returns the entries of img's layers, by path without a
// trailing slash.
func imageFiles(t *testing.T, img v1.Image) map[string]layerFile {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]layerFile{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[strings.TrimSuffix(h.Name, "/")] = layerFile{header: *h, body: body}
		}
		rc.Close()
	}
	return files
}

// checkConfig checks the parts of img's config a Deployment relies on.
func checkConfig(t *testing.T, img v1.Image, p v1.Platform, m metadata) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != p.OS || cf.Architecture != p.Architecture {
		t.Errorf("config platform %s/%s, want %s", cf.OS, cf.Architecture, p)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("User %q, want 65532:65532", cf.Config.User)
	}
	if !reflect.DeepEqual(cf.Config.Entrypoint, []string{"/manager"}) || len(cf.Config.Cmd) != 0 {
		t.Errorf("Entrypoint %q Cmd %q, want [/manager] and none", cf.Config.Entrypoint, cf.Config.Cmd)
	}
	if cf.Config.WorkingDir != "/" {
		t.Errorf("WorkingDir %q, want /", cf.Config.WorkingDir)
	}
	for _, e := range cf.Config.Env {
		if !strings.HasPrefix(e, "PATH=") {
			t.Errorf("Env has %q; the image ships no CA bundle and needs no other variable", e)
		}
	}
	want := map[string]string{
		"org.opencontainers.image.source":   m.source,
		"org.opencontainers.image.version":  m.version,
		"org.opencontainers.image.revision": m.revision,
		"org.opencontainers.image.licenses": "Apache-2.0",
		"org.opencontainers.image.created":  m.created.UTC().Format(time.RFC3339),
	}
	if !reflect.DeepEqual(cf.Config.Labels, want) {
		t.Errorf("labels %v, want %v", cf.Config.Labels, want)
	}
	if !cf.Created.Equal(m.created) {
		t.Errorf("created %s, want %s", cf.Created.Time, m.created)
	}
	for _, h := range cf.History {
		if !h.Created.Equal(m.created) {
			t.Errorf("history created %s, want %s", h.Created.Time, m.created)
		}
	}
}

// checkFiles checks img's filesystem: exactly the manager, /etc/passwd and
// /etc/group, owned by root or nonroot, nothing world-writable, no shell.
func checkFiles(t *testing.T, img v1.Image, created time.Time) map[string]layerFile {
	t.Helper()
	files := imageFiles(t, img)
	want := map[string]int64{"etc": 0o755, "etc/group": 0o644, "etc/passwd": 0o644, "manager": 0o555}
	for path, f := range files {
		h := f.header
		mode, ok := want[path]
		if !ok {
			t.Errorf("unexpected file %s in the image", path)
			continue
		}
		if h.Mode != mode {
			t.Errorf("%s: mode %o, want %o", path, h.Mode, mode)
		}
		// The one rule for any file ever added: nobody but its owner writes it.
		if h.Mode&0o002 != 0 {
			t.Errorf("%s: world-writable (mode %o)", path, h.Mode)
		}
		if (h.Uid != 0 || h.Gid != 0) && (h.Uid != nonroot || h.Gid != nonroot) {
			t.Errorf("%s: owner %d:%d, want 0:0 or 65532:65532", path, h.Uid, h.Gid)
		}
		if !h.ModTime.Equal(created) {
			t.Errorf("%s: mtime %s, want %s", path, h.ModTime, created)
		}
		if h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner names %q:%q, want none", path, h.Uname, h.Gname)
		}
	}
	for path := range want {
		if _, ok := files[path]; !ok {
			t.Errorf("%s missing from the image", path)
		}
	}

	var nonrootEntry []string
	for line := range strings.Lines(string(files["etc/passwd"].body)) {
		fields := strings.Split(strings.TrimSpace(line), ":")
		if len(fields) != 7 {
			t.Errorf("/etc/passwd line %q: want 7 fields", line)
			continue
		}
		if fields[2] == "65532" {
			nonrootEntry = fields
		}
		// No login shell for anyone, and the shell named is not in the image.
		if fields[6] != "/sbin/nologin" {
			t.Errorf("/etc/passwd: %s has shell %q, want /sbin/nologin", fields[0], fields[6])
		}
	}
	if nonrootEntry == nil || nonrootEntry[0] != "nonroot" || nonrootEntry[3] != "65532" {
		t.Errorf("/etc/passwd has no nonroot:x:65532:65532 entry: %q", files["etc/passwd"].body)
	}
	if !slices.Contains(strings.Split(string(files["etc/group"].body), "\n"), "nonroot:x:65532:") {
		t.Errorf("/etc/group has no nonroot:x:65532: entry: %q", files["etc/group"].body)
	}
	if _, ok := files["sbin/nologin"]; ok {
		t.Error("/sbin/nologin is in the image")
	}
	return files
}

func TestRootfs(t *testing.T) {
	manager := []byte("\x7fELF stand-in for the manager")
	p := testPlatforms[0]
	img, err := newImage(manager, p, testMeta)
	if err != nil {
		t.Fatal(err)
	}
	checkConfig(t, img, p, testMeta)
	files := checkFiles(t, img, testCreated)
	if !bytes.Equal(files["manager"].body, manager) {
		t.Error("/manager is not the binary given")
	}

	mt, err := img.MediaType()
	if err != nil || mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %q (%v), want %q", mt, err, types.OCIManifestSchema1)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d (%v), want 1", len(layers), err)
	}
	if mt, err := layers[0].MediaType(); err != nil || mt != types.OCILayer {
		t.Errorf("layer media type %q (%v), want %q", mt, err, types.OCILayer)
	}
}

// TestOutputsReproducible writes the outputs of two assemblies of the same
// inputs and wants the same bytes; build_test.go does it with the real
// build.
func TestOutputsReproducible(t *testing.T) {
	ref, err := name.NewTag("example.com/opsnow/opsnow-token-operator:v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	write := func(dir string) (v1.Hash, outputs) {
		var images []platformImage
		for _, p := range testPlatforms {
			img, err := newImage([]byte("manager for "+p.String()), p, testMeta)
			if err != nil {
				t.Fatal(err)
			}
			images = append(images, platformImage{platform: p, image: img})
		}
		idx, err := newIndex(images, testMeta)
		if err != nil {
			t.Fatal(err)
		}
		o := outputPaths(dir, "opsnow-token-operator", images)
		if err := writeOutputs(o, ref, idx, images, testCreated); err != nil {
			t.Fatal(err)
		}
		d, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d, o
	}
	d1, o1 := write(t.TempDir())
	d2, o2 := write(t.TempDir())
	if d1 != d2 {
		t.Errorf("index digests differ: %s, %s", d1, d2)
	}
	compareOutputs(t, o1, o2)
	checkLayout(t, o1, ref, d1, testMeta)
}

// compareOutputs wants the tar files of a and b to be the same bytes.
func compareOutputs(t *testing.T, a, b outputs) {
	t.Helper()
	pairs := [][2]string{{a.layoutTar, b.layoutTar}}
	for p, path := range a.archives {
		pairs = append(pairs, [2]string{path, b.archives[p]})
	}
	for _, pair := range pairs {
		if h1, h2 := fileSHA256(t, pair[0]), fileSHA256(t, pair[1]); h1 != h2 {
			t.Errorf("%s and %s differ: sha256 %s, %s", pair[0], pair[1], h1, h2)
		}
	}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkLayout opens the layout tar as the tools that read it would: one
// entry in index.json, named for containerd and by tag, pointing at the
// index of every platform; and each docker-archive as one image tagged ref.
// It returns the images of the index by platform.
func checkLayout(t *testing.T, o outputs, ref name.Tag, digest v1.Hash, m metadata) map[string]v1.Image {
	t.Helper()
	dir := t.TempDir()
	untar(t, o.layoutTar, dir)
	for _, f := range []string{"oci-layout", "index.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("layout tar: %v", err)
		}
	}
	lp, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := lp.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Manifests) != 1 {
		t.Fatalf("index.json has %d entries, want 1 (the index)", len(top.Manifests))
	}
	desc := top.Manifests[0]
	if desc.Digest != digest || desc.MediaType != types.OCIImageIndex {
		t.Errorf("index.json entry %s %s, want %s %s", desc.MediaType, desc.Digest, types.OCIImageIndex, digest)
	}
	if got, want := desc.Annotations["io.containerd.image.name"], containerdName(ref); got != want {
		t.Errorf("io.containerd.image.name %q, want %q", got, want)
	}
	if got := desc.Annotations["org.opencontainers.image.ref.name"]; got != ref.TagStr() {
		t.Errorf("org.opencontainers.image.ref.name %q, want %q", got, ref.TagStr())
	}

	idx, err := lp.ImageIndex(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(im.Annotations, m.labels()) {
		t.Errorf("index annotations %v, want %v", im.Annotations, m.labels())
	}
	images := map[string]v1.Image{}
	for _, d := range im.Manifests {
		if d.Platform == nil {
			t.Fatalf("index entry %s has no platform", d.Digest)
		}
		if d.MediaType != types.OCIManifestSchema1 || d.ArtifactType != "" {
			t.Errorf("index entry %s: media type %q artifactType %q, want an image manifest and no artifactType", d.Digest, d.MediaType, d.ArtifactType)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		images[d.Platform.String()] = img
	}
	var platforms []string
	for p := range images {
		platforms = append(platforms, p)
	}
	slices.Sort(platforms)
	if want := []string{"linux/amd64", "linux/arm64"}; !slices.Equal(platforms, want) {
		t.Fatalf("index platforms %v, want %v", platforms, want)
	}

	for p, img := range images {
		archive := o.archives[p]
		tagged, err := tarball.ImageFromPath(archive, &ref)
		if err != nil {
			t.Fatalf("%s: %v", archive, err)
		}
		// The docker-archive holds the same image: same config, same layer.
		want, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tagged.ConfigName(); err != nil || got != want {
			t.Errorf("%s: image ID %s (%v), want %s as in the index", archive, got, err, want)
		}
	}
	return images
}

// untar extracts the tar at path into dir.
func untar(t *testing.T, path, dir string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Mode&0o002 != 0 || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: %s mode %o owner %d:%d, want root's and not world-writable", path, h.Name, h.Mode, h.Uid, h.Gid)
		}
		target := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(target, dir+string(filepath.Separator)) {
			t.Fatalf("%s: entry %q outside the archive", path, h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			body, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(target, body, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("%s: entry %q of type %c", path, h.Name, h.Typeflag)
		}
	}
}

func TestContainerdName(t *testing.T) {
	for in, want := range map[string]string{
		"ghcr.io/opsnow-token-operator/opsnow-token-operator:v1": "ghcr.io/opsnow-token-operator/opsnow-token-operator:v1",
		"opsnow-token-operator":                                  "docker.io/library/opsnow-token-operator:latest",
		"example/operator:dev":                                   "docker.io/example/operator:dev",
		"localhost:5000/operator:dev":                            "localhost:5000/operator:dev",
	} {
		ref, err := name.NewTag(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := containerdName(ref); got != want {
			t.Errorf("containerdName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	env := func(v string) func(string) string { return func(string) string { return v } }
	o, err := parseFlags([]string{"-version", "v1", "-revision", "abc"}, env("1764255600"))
	if err != nil {
		t.Fatal(err)
	}
	if !o.meta.created.Equal(time.Unix(1764255600, 0)) || o.meta.version != "v1" || o.meta.revision != "abc" {
		t.Errorf("parsed %+v", o.meta)
	}
	if len(o.platforms) != 2 || o.platforms[0].String() != "linux/amd64" || o.platforms[1].String() != "linux/arm64" {
		t.Errorf("platforms %v, want linux/amd64 and linux/arm64", o.platforms)
	}
	for _, bad := range [][]string{
		{},                             // no epoch
		{"-source-date-epoch", "soon"}, // not a number
		{"-source-date-epoch", "1", "-img", "Not A Ref"},
		{"-source-date-epoch", "1", "extra"},
	} {
		if _, err := parseFlags(bad, env("")); err == nil {
			t.Errorf("parseFlags(%q) succeeded", bad)
		}
	}
}
