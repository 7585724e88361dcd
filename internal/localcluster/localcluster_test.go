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

package localcluster

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// childModeEnv makes the test binary act as a stand-in manager process,
// so that process handling is tested without building the real one.
const childModeEnv = "LOCALCLUSTER_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childModeEnv) {
	case "":
		os.Exit(m.Run())
	case "graceful": // exits 0 on SIGTERM, like the manager
		waitForSIGTERM()
		os.Exit(0)
	case "failing": // exits 3 on SIGTERM
		waitForSIGTERM()
		os.Exit(3)
	case "stubborn": // ignores SIGTERM
		signal.Ignore(syscall.SIGTERM)
		os.Stdout.WriteString("ignoring SIGTERM\n")
		time.Sleep(time.Minute)
		os.Exit(0)
	case "crash": // exits at once
		os.Stderr.WriteString("manager: something is wrong\n")
		os.Exit(1)
	}
}

func waitForSIGTERM() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	os.Stdout.WriteString("ready\n")
	<-c
}

// startChild runs the test binary in the given mode and waits until it has
// installed its signal handling (it prints a line then).
func startChild(t *testing.T, mode string) (*Manager, *LogBuffer) {
	t.Helper()
	out := &LogBuffer{}
	m, err := StartManager(ManagerOptions{Binary: os.Args[0], Output: out, Env: []string{childModeEnv + "=" + mode}})
	if err != nil {
		t.Fatalf("StartManager: %v", err)
	}
	t.Cleanup(func() { _ = m.cmd.Process.Kill(); <-m.Done() })
	if mode == "crash" {
		return m, out
	}
	deadline := time.Now().Add(10 * time.Second)
	for out.String() == "" {
		if time.Now().After(deadline) {
			t.Fatalf("child %q printed nothing within 10s", mode)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return m, out
}

func TestManagerStopGraceful(t *testing.T) {
	m, _ := startChild(t, "graceful")
	if m.PID() <= 0 {
		t.Fatalf("PID() = %d, want a process ID", m.PID())
	}
	if runtime.GOOS == "linux" {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(m.PID()), "status")); err != nil {
			t.Fatalf("PID() = %d, but /proc has no such process: %v", m.PID(), err)
		}
	}
	if err := m.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop() = %v, want nil for a process exiting 0 on SIGTERM", err)
	}
	if got := m.ExitCode(); got != 0 {
		t.Errorf("ExitCode() = %d, want 0", got)
	}
	if err := m.Stop(time.Second); err != nil {
		t.Errorf("second Stop() = %v, want nil", err)
	}
}

func TestManagerStopReportsExitCode(t *testing.T) {
	m, _ := startChild(t, "failing")
	err := m.Stop(10 * time.Second)
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("Stop() = %v, want an *exec.ExitError", err)
	}
	if got := m.ExitCode(); got != 3 {
		t.Errorf("ExitCode() = %d, want 3", got)
	}
}

func TestManagerStopKillsAfterTimeout(t *testing.T) {
	m, _ := startChild(t, "stubborn")
	start := time.Now()
	err := m.Stop(300 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Stop() = %v, want an error saying the process was killed", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Stop took %s, want about the 300ms timeout", took)
	}
	if exited, _ := m.Exited(); !exited {
		t.Errorf("Exited() = false after Stop, want true")
	}
	if got := m.ExitCode(); got != -1 {
		t.Errorf("ExitCode() = %d, want -1 for a killed process", got)
	}
}

func TestManagerWaitHealthyFailsWhenProcessExits(t *testing.T) {
	m, out := startChild(t, "crash")
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = m.WaitHealthy(ctx, addr)
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("WaitHealthy() = %v, want an error saying the manager exited", err)
	}
	if ctx.Err() != nil {
		t.Errorf("WaitHealthy waited for its context instead of noticing the exit")
	}
	<-m.Done()
	if !strings.Contains(out.String(), "something is wrong") {
		t.Errorf("Output got %q, want the child's stderr", out.String())
	}
}

func TestStartManagerWithoutBinary(t *testing.T) {
	if _, err := StartManager(ManagerOptions{}); err == nil {
		t.Fatal("StartManager without a binary succeeded, want an error")
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "config", "crd", "bases")); err != nil {
		t.Errorf("ModuleRoot() = %s, which has no config/crd/bases: %v", root, err)
	}
}

func TestStartWithoutAssets(t *testing.T) {
	t.Setenv("KUBEBUILDER_ASSETS", "")
	_, err := Start(Options{})
	if err == nil || !strings.Contains(err.Error(), "KUBEBUILDER_ASSETS") {
		t.Fatalf("Start() = %v, want an error naming KUBEBUILDER_ASSETS", err)
	}
}

func TestClusterStartStop(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: run `make test`, which provides kube-apiserver and etcd")
	}
	c, err := Start(Options{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if out, err := c.Kubectl(ctx, "get", "crd", "opsnowtokens.auth.opsnow.io", "-o", "name"); err != nil ||
		strings.TrimSpace(out) != "customresourcedefinition.apiextensions.k8s.io/opsnowtokens.auth.opsnow.io" {
		t.Errorf("kubectl get crd = %q, %v; want the OpsnowToken CRD installed", out, err)
	}

	// A new user has no permissions until a role is bound to it.
	kubeconfig, err := c.AddUser("limited", "e2e:limited")
	if err != nil {
		t.Fatalf("AddUser: %v", err)
	}
	out, err := exec.CommandContext(ctx, kubectlForTest(), "--kubeconfig="+kubeconfig, "auth", "can-i", "list", "secrets").Output()
	if got := strings.TrimSpace(string(out)); got != "no" {
		t.Errorf("limited user: kubectl auth can-i list secrets = %q (%v), want no", got, err)
	}

	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Stop left the directory %s (stat: %v), want it removed", c.Dir, err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func kubectlForTest() string {
	if k := os.Getenv("KUBECTL"); k != "" {
		return k
	}
	return "kubectl"
}

func TestClusterFaults(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: run `make test`, which provides kube-apiserver and etcd")
	}
	c, err := Start(Options{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kept", Namespace: "default"}, Data: map[string]string{"k": "v"}}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ConfigMap: %v", err)
	}

	for round := 1; round <= 2; round++ { // the second round kills the server StartAPIServer started
		if err := c.KillAPIServer(); err != nil {
			t.Fatalf("round %d: KillAPIServer: %v", round, err)
		}
		if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "kept", metav1.GetOptions{}); err == nil {
			t.Fatalf("round %d: GET with the API server killed succeeded", round)
		}
		if err := c.StartAPIServer(ctx); err != nil {
			t.Fatalf("round %d: StartAPIServer: %v", round, err)
		}
		// Same port and certificates (the old client works), same etcd data.
		got, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "kept", metav1.GetOptions{})
		if err != nil || got.Data["k"] != "v" {
			t.Fatalf("round %d: after the restart, GET = %v, %v; want the ConfigMap kept in etcd", round, got, err)
		}
	}

	if err := c.PauseEtcd(); err != nil {
		t.Fatalf("PauseEtcd: %v", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	_, err = cs.CoreV1().ConfigMaps("default").Update(short, cm, metav1.UpdateOptions{})
	cancelShort()
	if err == nil {
		t.Errorf("an update with etcd paused succeeded, want it to stall")
	}
	if err := c.ResumeEtcd(); err != nil {
		t.Fatalf("ResumeEtcd: %v", err)
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Errorf("GET after ResumeEtcd: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, _, err := childProcess("kube-apiserver"); err == nil {
		t.Errorf("Stop left a kube-apiserver running")
	}
}
