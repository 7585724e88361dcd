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

// Package e2e tests the real manager binary end to end: it is built once,
// run as a separate process with the flags a Deployment passes, against a
// local control plane and a local token server, and driven only with
// kubectl, as a user would drive it.
//
// The tests need kube-apiserver and etcd: `make test` provides them through
// KUBEBUILDER_ASSETS. Without it, the tests that need a cluster are skipped;
// those of the binary alone (--help, bad flags) still run.
package e2e

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsnow-token-operator/opsnow-token-operator/internal/localcluster"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

// Shared by all tests: one binary, and, when KUBEBUILDER_ASSETS is set, one
// control plane, one token server and one manager process. Tests work in
// their own namespaces.
var (
	managerBin string
	workDir    string

	// skipCluster, when not empty, says why the cluster tests are skipped.
	skipCluster string
	cluster     *localcluster.Cluster
	tokens      *tokenserver.Server
	tokenURL    string
	manager     *localcluster.Manager
	managerLog  string
	healthAddr  string
	// managerArgs are the shared manager's flags, for failure messages.
	managerArgs []string
)

// waitTimeout bounds each wait for the manager, passed to kubectl wait.
const waitTimeout = 30 * time.Second

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	var err error
	if workDir, err = os.MkdirTemp("", "opsnow-e2e-"); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer func() { _ = os.RemoveAll(workDir) }()

	managerBin = filepath.Join(workDir, "manager")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	err = localcluster.BuildManager(ctx, managerBin)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build the manager: %v\n", err)
		return 1
	}

	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		skipCluster = "KUBEBUILDER_ASSETS is not set: run `make test`, which provides kube-apiserver and etcd " +
			"(hack/envtest-assets.sh), to run the operator end to end"
		return m.Run()
	}
	stop, err := startEnvironment()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		stop()
		return 1
	}
	code := m.Run()

	// The shared manager must also stop cleanly, as under a Deployment rollout.
	if err := manager.Stop(10 * time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: the shared manager did not stop cleanly on SIGTERM: %v\n%s", err, logTail(managerLog, 30))
		code = 1
	} else if code != 0 {
		fmt.Fprintf(os.Stderr, "e2e: the shared manager's log ends with:\n%s", logTail(managerLog, 30))
	}
	stop()
	return code
}

// startEnvironment starts the control plane, the token server and the shared
// manager. The returned function stops whatever was started.
func startEnvironment() (stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}

	if cluster, err = localcluster.Start(localcluster.Options{Dir: workDir}); err != nil {
		return stop, err
	}
	stops = append(stops, func() { _ = cluster.Stop() })

	// One hour, as OpsNow: no scheduled refresh happens during the tests, so
	// every token request is one the test caused.
	tokens = tokenserver.New(tokenserver.Options{Lifetime: time.Hour})
	ts := httptest.NewServer(tokens)
	stops = append(stops, ts.Close)
	tokenURL = ts.URL

	if healthAddr, err = localcluster.FreeAddr(); err != nil {
		return stop, err
	}
	managerArgs = append(deploymentFlags(healthAddr), "--zap-log-level=debug")
	managerLog = filepath.Join(workDir, "manager.log")
	logFile, err := os.Create(managerLog)
	if err != nil {
		return stop, err
	}
	defer func() { _ = logFile.Close() }()
	manager, err = localcluster.StartManager(localcluster.ManagerOptions{
		Binary: managerBin, Kubeconfig: cluster.Kubeconfig, Args: managerArgs, Output: logFile,
	})
	if err != nil {
		return stop, err
	}
	stops = append(stops, func() { _ = manager.Stop(10 * time.Second) })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := manager.WaitHealthy(ctx, healthAddr); err != nil {
		return stop, fmt.Errorf("manager %s: %w\n%s", strings.Join(managerArgs, " "), err, logTail(managerLog, 30))
	}
	return stop, nil
}

// deploymentFlags are the flags config/manager/manager.yaml passes, with
// addresses fit for a shared machine: metrics off, the health probe on a
// free loopback port, and the local token server as the default endpoint.
func deploymentFlags(healthAddr string) []string {
	flags := []string{
		"--metrics-bind-address=0",
		"--health-probe-bind-address=" + healthAddr,
		"--default-endpoint=" + tokenURL,
		"--token-request-rate=20",
	}
	if leaderElectionNamespaceFlag() {
		// Outside a cluster the manager cannot read its own namespace from
		// the service-account mount, so the Lease's namespace is given.
		flags = append(flags, "--leader-elect", "--leader-election-namespace=default")
	}
	return flags
}

// leaderElectionNamespaceFlag reports whether the manager has a
// --leader-election-namespace flag. Without it, --leader-elect works only
// inside a cluster, so the tests run the manager without leader election.
func leaderElectionNamespaceFlag() bool {
	help, _, _ := runManager(context.Background(), "--help")
	return strings.Contains(help, "-leader-election-namespace")
}

// needCluster skips the test when no control plane is available.
func needCluster(t *testing.T) {
	t.Helper()
	if skipCluster != "" {
		t.Skip(skipCluster)
	}
}

// logTail returns the last n lines of the file at path, indented.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("    (no log: %v)\n", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ") + "\n"
}
