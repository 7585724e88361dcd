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

package v1alpha1

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// docs/api.md must describe every field of the generated CRD and every
// condition reason, so the reference cannot drift from the API.
func TestAPIReferenceCoversCRD(t *testing.T) {
	doc := readFile(t, filepath.Join("..", "..", "docs", "api.md"))

	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal([]byte(readFile(t, filepath.Join("..", "..", "config", "crd", "bases", "auth.opsnow.io_opsnowtokens.yaml"))), &crd); err != nil {
		t.Fatalf("decode CRD: %v", err)
	}
	schema := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	var fields []string
	for _, top := range []string{"spec", "status"} {
		collectFields(schema.Properties[top], top, &fields)
	}
	if len(fields) < 10 {
		t.Fatalf("found only %d fields in the CRD: %v", len(fields), fields)
	}
	for _, f := range fields {
		if !strings.Contains(doc, "`"+f+"`") {
			t.Errorf("docs/api.md does not describe the field `%s`", f)
		}
	}

	// The ClusterOpsnowToken's fields are described in its own part.
	_, clusterDoc, ok := strings.Cut(doc, "# ClusterOpsnowToken API reference")
	if !ok {
		t.Fatal("docs/api.md has no section \"# ClusterOpsnowToken API reference\"")
	}
	var clusterCRD apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal([]byte(readFile(t, filepath.Join("..", "..", "config", "crd", "bases", "auth.opsnow.io_clusteropsnowtokens.yaml"))), &clusterCRD); err != nil {
		t.Fatalf("decode ClusterOpsnowToken CRD: %v", err)
	}
	var clusterFields []string
	for _, top := range []string{"spec", "status"} {
		collectFields(clusterCRD.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties[top], top, &clusterFields)
	}
	for _, f := range clusterFields {
		if !strings.Contains(clusterDoc, "`"+f+"`") {
			t.Errorf("the ClusterOpsnowToken part of docs/api.md does not describe the field `%s`", f)
		}
	}

	reasons := reasonConstants(t)
	if len(reasons) < 9 {
		t.Fatalf("found only %d Reason constants: %v", len(reasons), reasons)
	}
	for _, r := range reasons {
		if !strings.Contains(doc, "| `"+r+"` |") {
			t.Errorf("docs/api.md has no row for the condition reason `%s`", r)
		}
	}
}

// collectFields lists the dotted paths of schema's properties, not descending
// into the standard condition type.
func collectFields(schema apiextensionsv1.JSONSchemaProps, path string, out *[]string) {
	for name, prop := range schema.Properties {
		p := path + "." + name
		*out = append(*out, p)
		if p != "status.conditions" {
			collectFields(prop, p, out)
		}
	}
}

// reasonConstants returns the values of the Reason* constants of this package.
func reasonConstants(t *testing.T) []string {
	t.Helper()
	var values []string
	for _, file := range []string{"opsnowtoken_types.go", "clusteropsnowtoken_types.go"} {
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatalf("parse types: %v", err)
		}
		values = append(values, reasonValues(f)...)
	}
	return values
}

// reasonValues returns the values of the Reason* constants declared in f.
func reasonValues(f *ast.File) []string {
	var values []string
	ast.Inspect(f, func(n ast.Node) bool {
		spec, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, name := range spec.Names {
			if strings.HasPrefix(name.Name, "Reason") && i < len(spec.Values) {
				if lit, ok := spec.Values[i].(*ast.BasicLit); ok {
					v, _ := strconv.Unquote(lit.Value)
					values = append(values, v)
				}
			}
		}
		return true
	})
	return values
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(b)
}
