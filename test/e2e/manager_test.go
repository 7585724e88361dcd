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

package e2e

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opsnow-token-operator/opsnow-token-operator/internal/localcluster"
)

// runManager runs the manager binary to completion (or until ctx ends) and
// returns its output and exit code. It talks to the shared cluster when
// there is one, so that a flag the manager wrongly accepted would show as
// a running manager rather than as a missing kubeconfig.
func runManager(ctx context.Context, args ...string) (stdout, stderr string, code int) {
	cmd := exec.CommandContext(ctx, managerBin, args...)
	kubeconfig := filepath.Join(workDir, "no-such-kubeconfig")
	if cluster != nil {
		kubeconfig = cluster.Kubeconfig
	}
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		code = 0
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		code = -1
	}
	return out.String(), errOut.String(), code
}

func TestHelpListsFlagsWithDefaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stdout, stderr, code := runManager(ctx, "--help")
	if code != 0 {
		t.Fatalf("manager --help exited %d, want 0; stderr:\n%s", code, stderr)
	}
	// Go's flag package prints "(default ...)" only for non-zero defaults;
	// an empty want means the SPEC's default is empty or false.
	for _, tc := range []struct {
		flag, wantDefault string
	}{
		{"default-endpoint", `(default "https://api.opsnow.io")`},
		{"allowed-endpoints", ""},
		{"max-concurrent-reconciles", "(default "},
		{"metrics-bind-address", `(default "0")`},
		{"health-probe-bind-address", `(default ":8081")`},
		{"leader-elect", ""},
		{"leader-elect-lease-duration", "(default 15s)"},
		{"leader-elect-renew-deadline", "(default 10s)"},
		{"leader-elect-retry-period", "(default 2s)"},
		{"watch-namespaces", ""},
		{"token-request-rate", "(default 20)"},
		{"enable-cluster-tokens", "(default true)"},
		{"cluster-resource-namespace", ""},
		{"zap-log-level", ""},
		{"zap-devel", ""},
	} {
		usage, ok := flagUsage(stdout, tc.flag)
		if !ok {
			t.Errorf("--help does not list --%s:\n%s", tc.flag, stdout)
			continue
		}
		if tc.wantDefault != "" && !strings.Contains(usage, tc.wantDefault) {
			t.Errorf("--help for --%s:\n%s\nwant it to show %s", tc.flag, usage, tc.wantDefault)
		}
	}
}

// flagUsage returns the usage block of one flag from Go's flag.PrintDefaults
// output: the "  -name type" line and its indented description.
func flagUsage(help, name string) (string, bool) {
	re := regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(name) + `( [^\n]*)?\n(    \t[^\n]*\n?)*`)
	block := re.FindString(help)
	return block, block != ""
}

func TestBadFlagsExitWithOneLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--no-such-flag"}, "no-such-flag"},
		{"negative rate", []string{"--token-request-rate=-1"}, "--token-request-rate"},
		{"non-http endpoint", []string{"--allowed-endpoints=ftp://x"}, "--allowed-endpoints"},
		{"cluster tokens with watched namespaces", []string{"--watch-namespaces=a", "--enable-cluster-tokens=true"}, "--enable-cluster-tokens"},
		{"renew deadline not below lease", []string{"--leader-elect-lease-duration=10s"}, "--leader-elect-renew-deadline"},
		{"retry period too long", []string{"--leader-elect-retry-period=9s"}, "--leader-elect-retry-period"},
		{"zero lease", []string{"--leader-elect-lease-duration=0s"}, "must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			args := append([]string{"--health-probe-bind-address=0", "--metrics-bind-address=0"}, tc.args...)
			stdout, stderr, code := runManager(ctx, args...)
			if ctx.Err() != nil {
				t.Fatalf("manager %s kept running, want it to refuse the flag", strings.Join(tc.args, " "))
			}
			if code == 0 {
				t.Errorf("manager %s exited 0, want non-zero", strings.Join(tc.args, " "))
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "manager: ") || !strings.Contains(stderr, tc.want) {
				t.Errorf("manager %s: stderr = %q, want one line starting with \"manager: \" naming %s",
					strings.Join(tc.args, " "), stderr, tc.want)
			}
			if stdout != "" {
				t.Errorf("manager %s: stdout = %q, want nothing", strings.Join(tc.args, " "), stdout)
			}
		})
	}
}

func TestHealthEndpoints(t *testing.T) {
	needCluster(t)
	client := &http.Client{Timeout: 5 * time.Second}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := client.Get("http://" + healthAddr + path)
		if err != nil {
			t.Errorf("GET %s: %v", path, err)
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %s, want 200 OK", path, resp.Status)
		}
	}
}

func TestStopsCleanlyOnSIGTERM(t *testing.T) {
	needCluster(t)
	addr, err := localcluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	// A second manager, watching a namespace of its own so that it never
	// competes with the shared one, with its own Lease if leader election
	// is on.
	args := append(deploymentFlags(addr), "--watch-namespaces=e2e-sigterm", "--leader-election-id=e2e-sigterm")
	logs := &localcluster.LogBuffer{}
	m, err := localcluster.StartManager(localcluster.ManagerOptions{
		Binary: managerBin, Kubeconfig: cluster.Kubeconfig, Args: args, Output: logs,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop(time.Second) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.WaitHealthy(ctx, addr); err != nil {
		t.Fatalf("manager %s: %v\nlog:\n%s", strings.Join(args, " "), err, logs.String())
	}

	start := time.Now()
	if err := m.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("manager still running 5s after SIGTERM")
	}
	if code := m.ExitCode(); code != 0 {
		t.Errorf("manager exited %d after SIGTERM, want 0", code)
	}
	t.Logf("manager stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	if t.Failed() {
		t.Logf("manager log:\n%s", logs.String())
	}
}

func TestLeaderElection(t *testing.T) {
	needCluster(t)
	if !leaderElectionNamespaceFlag() {
		t.Skip("the manager has no --leader-election-namespace flag, and outside a cluster --leader-elect " +
			"cannot find the Lease's namespace (controller-runtime reads it from the service-account mount), " +
			"so the e2e manager runs without leader election")
	}
	// The manager takes the Lease after it reports healthy.
	var holder string
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		holder, err = kubectlErr("-n", "default", "get", "lease", "opsnow-token-operator.auth.opsnow.io",
			"-o", "jsonpath={.spec.holderIdentity}")
		if err == nil && holder != "" {
			return
		}
	}
	t.Errorf("Lease default/opsnow-token-operator.auth.opsnow.io: holder %q, error %v; want the shared manager to hold it", holder, err)
}
