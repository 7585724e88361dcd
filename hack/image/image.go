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
	"compress/gzip"
	_ "embed"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// nonroot is distroless's "nonroot" user and group. The image names it
	// by number so that the kubelet can check runAsNonRoot without reading
	// /etc/passwd.
	nonroot   = 65532
	imageUser = "65532:65532"

	managerPath = "/manager"

	// defaultPathEnv is the PATH BuildKit gives an image built FROM scratch,
	// so that the Dockerfile and this builder write the same config. Nothing
	// in the image is looked up on it.
	defaultPathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

	license = "Apache-2.0"

	// containerdNameAnnotation is what containerd, and so `docker load` with
	// the containerd image store, `ctr import` and kind, read as the image
	// name in an OCI layout's index.json.
	containerdNameAnnotation = "io.containerd.image.name"
)

// The only accounts in the image. Their shell is /sbin/nologin, which does
// not exist: the image has no shell at all. The Dockerfile copies the same
// files.
var (
	//go:embed rootfs/etc/passwd
	passwdFile []byte
	//go:embed rootfs/etc/group
	groupFile []byte
)

// metadata is what the image says about itself in its labels and in the
// index's annotations.
type metadata struct {
	source   string
	version  string
	revision string
	// created stands for every timestamp in the image: the commit time, so
	// that two builds of one commit are byte for byte the same.
	created time.Time
}

// labels returns the OCI labels of the image config, also written as the
// annotations of the index, where registries such as GHCR look for them.
func (m metadata) labels() map[string]string {
	return map[string]string{
		"org.opencontainers.image.source":   m.source,
		"org.opencontainers.image.version":  m.version,
		"org.opencontainers.image.revision": m.revision,
		"org.opencontainers.image.licenses": license,
		"org.opencontainers.image.created":  m.created.UTC().Format(time.RFC3339),
	}
}

// tarEntry is one file or directory of a tar written by writeTar.
type tarEntry struct {
	name     string
	mode     int64
	uid, gid int
	dir      bool
	body     []byte
}

// rootfsEntries are the files of the image's only layer. Everything is
// owned by root and nothing is writable by the manager's user: with
// readOnlyRootFilesystem in the Deployment it could not write anyway, and
// without it the image still gives it nothing to change.
func rootfsEntries(manager []byte) []tarEntry {
	return []tarEntry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, body: groupFile},
		{name: "etc/passwd", mode: 0o644, body: passwdFile},
		{name: "manager", mode: 0o555, body: manager},
	}
}

// writeTar writes entries in the given order, every one with mtime and no
// user or group names, so that equal inputs give equal bytes.
func writeTar(w io.Writer, entries []tarEntry, mtime time.Time) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := &tar.Header{
			Name:     e.name,
			Mode:     e.mode,
			Uid:      e.uid,
			Gid:      e.gid,
			ModTime:  mtime,
			Typeflag: tar.TypeReg,
			Size:     int64(len(e.body)),
		}
		if e.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(e.body); err != nil {
			return err
		}
	}
	return tw.Close()
}

// newImage returns the single-platform image holding manager, a binary
// built for p.
func newImage(manager []byte, p v1.Platform, m metadata) (v1.Image, error) {
	var rootfs bytes.Buffer
	if err := writeTar(&rootfs, rootfsEntries(manager), m.created); err != nil {
		return nil, err
	}
	layerBytes := rootfs.Bytes()
	layer, err := tarball.LayerFromOpener(
		func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil },
		tarball.WithMediaType(types.OCILayer),
		tarball.WithCompressionLevel(gzip.DefaultCompression),
		// The layer is read for its digest, the layout and each tarball:
		// compress it once.
		tarball.WithCompressedCaching,
	)
	if err != nil {
		return nil, err
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: m.created},
			CreatedBy: "make image: /manager, /etc/passwd, /etc/group",
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant, cf.OSVersion = p.OS, p.Architecture, p.Variant, p.OSVersion
	cf.Created = v1.Time{Time: m.created}
	cf.Config = v1.Config{
		User:       imageUser,
		Entrypoint: []string{managerPath},
		WorkingDir: "/",
		Env:        []string{defaultPathEnv},
		Labels:     m.labels(),
	}
	return mutate.ConfigFile(img, cf)
}

// platformImage is one entry of the index.
type platformImage struct {
	platform v1.Platform
	image    v1.Image
}

// newIndex returns the multi-platform index of images.
func newIndex(images []platformImage, m metadata) (v1.ImageIndex, error) {
	adds := make([]mutate.IndexAddendum, 0, len(images))
	for _, pi := range images {
		p := pi.platform
		adds = append(adds, mutate.IndexAddendum{Add: notArtifact{pi.image}, Descriptor: v1.Descriptor{Platform: &p}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	annotated, ok := mutate.Annotations(idx, m.labels()).(v1.ImageIndex)
	if !ok {
		return nil, fmt.Errorf("annotating the index gave no index")
	}
	return annotated, nil
}

// notArtifact is an image whose index entry has no artifactType.
// go-containerregistry otherwise sets it to the config's media type, which
// the image spec meant for artifacts and which Docker's indexes do not carry.
type notArtifact struct{ v1.Image }

// ArtifactType is what go-containerregistry asks for the entry's artifactType.
func (notArtifact) ArtifactType() (string, error) { return "", nil }

// containerdName is ref as containerd spells image names: Docker Hub is
// docker.io, not go-containerregistry's index.docker.io.
func containerdName(ref name.Tag) string {
	registry := ref.RegistryStr()
	if registry == name.DefaultRegistry {
		registry = "docker.io"
	}
	return registry + "/" + ref.RepositoryStr() + ":" + ref.TagStr()
}

// outputs are the files writeOutputs writes under its directory.
type outputs struct {
	layout    string            // the OCI image layout with the index
	layoutTar string            // the same layout as one tar
	archives  map[string]string // platform ("linux/amd64") -> docker-archive
}

func outputPaths(dir, base string, images []platformImage) outputs {
	o := outputs{
		layout:    filepath.Join(dir, "oci"),
		layoutTar: filepath.Join(dir, base+".tar"),
		archives:  map[string]string{},
	}
	for _, pi := range images {
		o.archives[pi.platform.String()] = filepath.Join(dir, fmt.Sprintf("%s-%s-%s.tar", base, pi.platform.OS, pi.platform.Architecture))
	}
	return o
}

// writeOutputs writes the index as an OCI layout directory and as a tar of
// it, and each image as a docker-archive tagged ref, for the tools that want
// one platform in Docker's format: kind, and `docker load` with the classic
// image store, which reads no OCI layout.
func writeOutputs(o outputs, ref name.Tag, idx v1.ImageIndex, images []platformImage, mtime time.Time) error {
	if err := os.MkdirAll(filepath.Dir(o.layout), 0o755); err != nil {
		return err
	}
	// layout.Write appends to an existing index.json: start from nothing,
	// in a directory of this build's own.
	tmp, err := os.MkdirTemp(filepath.Dir(o.layout), filepath.Base(o.layout)+".tmp*")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		containerdNameAnnotation:            containerdName(ref),
		"org.opencontainers.image.ref.name": ref.TagStr(),
	})); err != nil {
		return err
	}
	// go-containerregistry writes with mode 0777 less the umask.
	if err := normalizeModes(tmp); err != nil {
		return err
	}
	if err := os.RemoveAll(o.layout); err != nil {
		return err
	}
	if err := os.Rename(tmp, o.layout); err != nil {
		return err
	}

	if err := writeFile(o.layoutTar, func(w io.Writer) error { return tarDir(w, o.layout, mtime) }); err != nil {
		return err
	}
	for _, pi := range images {
		img := pi.image
		if err := writeFile(o.archives[pi.platform.String()], func(w io.Writer) error {
			return tarball.Write(ref, img, w)
		}); err != nil {
			return err
		}
	}
	return nil
}

// normalizeModes gives the files under dir mode 0644 and the directories
// 0755, whatever the umask.
func normalizeModes(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(path, 0o755)
		}
		return os.Chmod(path, 0o644)
	})
}

// tarDir writes the tree under dir as a tar, in lexical order, every entry
// owned by root with mtime, so that equal trees give equal bytes.
func tarDir(w io.Writer, dir string, mtime time.Time) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime}
		switch {
		case d.IsDir():
			h.Typeflag, h.Mode, h.Name = tar.TypeDir, 0o755, h.Name+"/"
			return tw.WriteHeader(h)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, info.Size()
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			// Read-only: a failed Close loses nothing that io.Copy did not report.
			defer func() { _ = f.Close() }()
			_, err = io.Copy(tw, f)
			return err
		default:
			return fmt.Errorf("%s: not a regular file or directory", path)
		}
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// writeFile writes path through a temporary file, so that an interrupted
// build leaves the previous file or none, never half of one.
func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	// Gone once renamed; removed here when anything failed first.
	defer func() { _ = os.Remove(f.Name()) }()
	if err := write(f); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
