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

package manifests_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// chartDir is the Helm chart, relative to this package's directory.
var chartDir = filepath.Join(repoRoot, "charts", "opsnow-token-operator")

// rendering is the output of one kustomize build or helm template.
type rendering struct {
	source  string
	objects []*unstructured.Unstructured
}

// kustomizeBuild renders the kustomization in dir.
func kustomizeBuild(t *testing.T, dir string) *rendering {
	t.Helper()
	out := runTool(t, kustomizeBin, "", "build", dir)
	return &rendering{source: "kustomize build " + relToRoot(dir), objects: parseManifests(t, dir, out)}
}

// helmTemplate renders the chart, CRDs included, as release in namespace.
func helmTemplate(t *testing.T, release, namespace string, args ...string) *rendering {
	t.Helper()
	args = append([]string{"template", release, chartDir, "--namespace", namespace, "--include-crds"}, args...)
	out := runTool(t, helmBin, "", args...)
	source := "helm " + strings.Join(args, " ")
	return &rendering{source: source, objects: parseManifests(t, source, out)}
}

// runTool runs a tool and returns its stdout; it fails t with the tool's
// stderr when the tool fails.
func runTool(t *testing.T, bin, dir string, args ...string) []byte {
	t.Helper()
	out, err := tryTool(bin, dir, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return out
}

// tryTool runs a tool and returns its stdout, or an error holding its stderr.
func tryTool(bin, dir string, args ...string) ([]byte, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// parseManifests splits a multi-document YAML stream into objects. Duplicate
// keys are errors: YAML parsers disagree on which value wins.
func parseManifests(t *testing.T, source string, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: read document %d: %v", source, i, err)
		}
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			t.Fatalf("%s: document %d is not valid YAML: %v\n%s", source, i, err, doc)
		}
		if s := strings.TrimSpace(string(js)); s == "null" || s == "" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			t.Fatalf("%s: document %d is not a Kubernetes object: %v\n%s", source, i, err, doc)
		}
		objs = append(objs, u)
	}
	if len(objs) == 0 {
		t.Fatalf("%s rendered no objects", source)
	}
	return objs
}

// all returns the objects of kind.
func (r *rendering) all(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.objects {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// find returns the object of kind, namespace and name, or nil.
func (r *rendering) find(kind, namespace, name string) *unstructured.Unstructured {
	for _, o := range r.objects {
		if o.GetKind() == kind && o.GetNamespace() == namespace && o.GetName() == name {
			return o
		}
	}
	return nil
}

// one returns the only object of kind, failing t if there is not exactly one.
func (r *rendering) one(t *testing.T, kind string) *unstructured.Unstructured {
	t.Helper()
	objs := r.all(kind)
	if len(objs) != 1 {
		t.Fatalf("%s: got %d objects of kind %s, want 1", r.source, len(objs), kind)
	}
	return objs[0]
}

// describe names an object in failure messages.
func describe(o *unstructured.Unstructured) string {
	if o.GetNamespace() == "" {
		return o.GetKind() + " " + o.GetName()
	}
	return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
}

// relToRoot shows a path relative to the module root.
func relToRoot(p string) string {
	if rel, err := filepath.Rel(repoRoot, p); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return p
}

// copyTree copies the directory src to dst, for overlays edited by a test.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}
