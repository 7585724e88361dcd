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
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// repoRoot is the module root, relative to this package's directory.
const repoRoot = "../.."

// restrictedNamespace enforces the restricted Pod Security profile; the
// manager pods of every rendering are dry-run created in it.
const restrictedNamespace = "pod-security-restricted"

var (
	// skipReason, when set, says why the tests needing the tools and the API
	// server skip.
	skipReason string

	kustomizeBin string
	helmBin      string

	// workDir holds the kubeconfig of the API server and the manager binary.
	workDir        string
	kubeconfigPath string

	k8s      client.Client
	warnings = &warningRecorder{}
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	kustomizeBin = toolPath(os.Getenv("KUSTOMIZE"))
	helmBin = toolPath(os.Getenv("HELM"))
	var missing []string
	for _, v := range []struct{ name, value string }{
		{"KUBEBUILDER_ASSETS", assets}, {"KUSTOMIZE", kustomizeBin}, {"HELM", helmBin},
	} {
		if v.value == "" {
			missing = append(missing, v.name)
		}
	}
	if len(missing) > 0 {
		skipReason = strings.Join(missing, ", ") + " not set: run `make test`, which builds kustomize and helm " +
			"into bin/ and provides kube-apiserver and etcd"
		fmt.Fprintln(os.Stderr, "test/manifests: "+skipReason)
		return m.Run()
	}

	env := &envtest.Environment{
		CRDDirectoryPaths: []string{
			filepath.Join(repoRoot, "config", "crd", "bases"),
			filepath.Join("testdata", "crds"),
		},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "start envtest control plane: %v\n", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop envtest control plane: %v\n", err)
		}
	}()
	cfg.WarningHandlerWithContext = warnings
	if k8s, err = client.New(cfg, client.Options{}); err != nil {
		fmt.Fprintf(os.Stderr, "create client: %v\n", err)
		return 1
	}
	if err := ensureNamespace(context.Background(), restrictedNamespace); err != nil {
		fmt.Fprintf(os.Stderr, "create namespace %s: %v\n", restrictedNamespace, err)
		return 1
	}

	if workDir, err = os.MkdirTemp("", "manifests-test-"); err != nil {
		fmt.Fprintf(os.Stderr, "create work directory: %v\n", err)
		return 1
	}
	defer os.RemoveAll(workDir)
	kubeconfigPath = filepath.Join(workDir, "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, env.KubeConfig, 0o600); err != nil {
		fmt.Fprintf(os.Stderr, "write kubeconfig: %v\n", err)
		return 1
	}
	return m.Run()
}

// trackedInputs are what kustomize, helm and the manager build read. go test
// reuses a cached result until an environment variable the tests read or a
// file they opened changes; files only the tools open do not count, so the
// tests open them all. Reads in TestMain before m.Run do not count either.
var trackedInputs = []string{"charts", "config", "docs", "api", "internal", "main.go", "go.mod", "go.sum"}

var trackInputsOnce = sync.OnceValue(func() error {
	for _, name := range []string{"KUBEBUILDER_ASSETS", "KUSTOMIZE", "HELM"} {
		os.Getenv(name)
	}
	for _, in := range trackedInputs {
		err := filepath.WalkDir(filepath.Join(repoRoot, in), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			_, err = os.ReadFile(path)
			return err
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
})

// toolPath resolves a relative tool path against the module root, where
// `make` runs, rather than this package's directory, where `go test` runs.
func toolPath(p string) string {
	if p == "" || filepath.IsAbs(p) || !strings.ContainsRune(p, filepath.Separator) {
		return p
	}
	return filepath.Join(repoRoot, p)
}

// requireCluster skips t unless kustomize, helm and the API server are there.
func requireCluster(t *testing.T) {
	t.Helper()
	if err := trackInputsOnce(); err != nil {
		t.Fatalf("read the rendered inputs: %v", err)
	}
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// ensureNamespace creates namespace name if it does not exist, enforcing and
// warning about the restricted Pod Security profile, as the operator's
// namespace does (config/manager/manager.yaml). A rendered workload that
// breaks the profile then fails the dry run with a warning.
func ensureNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: name,
		Labels: map[string]string{
			"pod-security.kubernetes.io/enforce":         "restricted",
			"pod-security.kubernetes.io/enforce-version": "latest",
			"pod-security.kubernetes.io/warn":            "restricted",
			"pod-security.kubernetes.io/warn-version":    "latest",
		},
	}}
	return client.IgnoreAlreadyExists(k8s.Create(ctx, ns))
}

// warningRecorder collects the API server's warnings (deprecated APIs,
// unknown fields, Pod Security), which the tests treat as failures.
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

// HandleWarningHeaderWithContext implements rest.WarningHandlerWithContext.
func (w *warningRecorder) HandleWarningHeaderWithContext(_ context.Context, code int, _, message string) {
	if code != 299 || message == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, message)
}

// take returns the warnings recorded since the last call and forgets them.
func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	msgs := w.msgs
	w.msgs = nil
	return msgs
}
