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
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsnow-token-operator/opsnow-token-operator/internal/localcluster"
)

// kubectl runs kubectl against the shared cluster and fails the test if it
// fails.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectlErr(args...)
	if err != nil {
		t.Fatalf("%v\nmanager log (manager %s):\n%s", err, strings.Join(managerArgs, " "), logTail(managerLog, 20))
	}
	return out
}

func kubectlErr(args ...string) (string, error) {
	// kubectl wait gets its own, shorter, timeout.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout+30*time.Second)
	defer cancel()
	return cluster.Kubectl(ctx, args...)
}

// secretValue reads one key of a Secret, decoded.
func secretValue(t *testing.T, ns, secret, key string) string {
	t.Helper()
	enc := kubectl(t, "-n", ns, "get", "secret", secret, "-o", "jsonpath={.data."+key+"}")
	dec, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		t.Fatalf("Secret %s/%s key %s is not base64: %v", ns, secret, key, err)
	}
	return string(dec)
}

// lastIssued returns the token server's most recent token.
func lastIssued(t *testing.T) string {
	t.Helper()
	issued := tokens.Issued()
	if len(issued) == 0 {
		t.Fatal("the token server issued no token")
	}
	return issued[len(issued)-1]
}

// assertRequests checks that the token server has received exactly want
// token requests, and still has a moment later, so that a late extra
// request is caught too.
func assertRequests(t *testing.T, want int64, what string) {
	t.Helper()
	for range 2 {
		if got := tokens.Requests(); got != want {
			t.Fatalf("%s: the token server got %d token requests, want %d", what, got, want)
		}
		time.Sleep(time.Second)
	}
}

func TestOpsnowTokenLifecycle(t *testing.T) {
	needCluster(t)
	root, err := localcluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	const ns = "e2e-lifecycle"
	timeout := fmt.Sprintf("--timeout=%ds", int(waitTimeout.Seconds()))
	kubectl(t, "create", "namespace", ns)
	t.Cleanup(func() { _, _ = kubectlErr("delete", "namespace", ns, "--wait=false") })
	base := tokens.Requests()

	// The shipped sample: OpsnowToken "billing" writing Secret "billing-token".
	kubectl(t, "-n", ns, "create", "secret", "generic", "opsnow-api-key", "--from-literal=apiKey=e2e-key")
	kubectl(t, "-n", ns, "apply", "-f", filepath.Join(root, "config", "samples", "auth_v1alpha1_opsnowtoken.yaml"))
	kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "opsnowtoken/billing", timeout)

	first := secretValue(t, ns, "billing-token", "token")
	if want := lastIssued(t); first != want {
		t.Errorf("Secret billing-token holds token %.12s…, want the token server's last one, %.12s…", first, want)
	}
	expiresAt := secretValue(t, ns, "billing-token", "expiresAt")
	if exp, err := time.Parse(time.RFC3339, expiresAt); err != nil || time.Until(exp) < 50*time.Minute {
		t.Errorf("Secret billing-token expiresAt = %q, want an RFC 3339 time about an hour ahead", expiresAt)
	}
	assertRequests(t, base+1, "after the token became Ready")

	owner := kubectl(t, "-n", ns, "get", "secret", "billing-token", "-o",
		`jsonpath={.metadata.ownerReferences[?(@.controller==true)].kind}/{.metadata.ownerReferences[?(@.controller==true)].name}`)
	if owner != "OpsnowToken/billing" {
		t.Errorf("Secret billing-token is controlled by %q, want OpsnowToken/billing (so that deleting the token collects it)", owner)
	}

	// A manual refresh: exactly one exchange for a new annotation value.
	kubectl(t, "-n", ns, "annotate", "opsnowtoken/billing", "auth.opsnow.io/refresh-requested-at=r1")
	kubectl(t, "-n", ns, "wait", "--for=jsonpath={.status.lastHandledRefreshRequest}=r1", "opsnowtoken/billing", timeout)
	second := secretValue(t, ns, "billing-token", "token")
	if second == first {
		t.Errorf("after refresh r1 the Secret still holds the first token")
	}
	if want := lastIssued(t); second != want {
		t.Errorf("after refresh r1 the Secret holds %.12s…, want the token server's last token, %.12s…", second, want)
	}
	assertRequests(t, base+2, "after refresh r1")
	kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "opsnowtoken/billing", timeout)

	table := kubectl(t, "-n", ns, "get", "opsnowtokens")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 2 {
		t.Fatalf("kubectl get opsnowtokens:\n%s\nwant a header and one row", table)
	}
	header, row := strings.Fields(lines[0]), strings.Fields(lines[1])
	for _, col := range []string{"NAME", "READY", "SECRET", "EXPIRES", "AGE"} {
		if !contains(header, col) {
			t.Errorf("kubectl get opsnowtokens has columns %v, want %s among them", header, col)
		}
	}
	for col, want := range map[string]string{"NAME": "billing", "READY": "True", "SECRET": "billing-token"} {
		if i := index(header, col); i >= 0 && (i >= len(row) || row[i] != want) {
			t.Errorf("kubectl get opsnowtokens:\n%s\nwant %s = %s", table, col, want)
		}
	}

	kubectl(t, "-n", ns, "delete", "opsnowtoken", "billing", timeout)
	if out, err := kubectlErr("-n", ns, "get", "opsnowtoken", "billing"); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("kubectl get opsnowtoken billing after delete = %q, %v; want NotFound", out, err)
	}
	// The control plane runs no garbage collector, so the Secret's removal
	// is the ownerReference checked above; the manager must not act on it.
	assertRequests(t, base+2, "after the delete")
}

func contains(list []string, s string) bool { return index(list, s) >= 0 }

func index(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}
