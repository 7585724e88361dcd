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

package metricsauth

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

func TestBearerToken(t *testing.T) {
	for header, want := range map[string]string{
		"Bearer abc":   "abc",
		"bearer abc ":  "abc",
		"Bearer":       "",
		"Bearer  ":     "",
		"Basic abc":    "",
		"":             "",
		"Token abc":    "",
		"BEARER a.b.c": "a.b.c",
	} {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		got, ok := bearerToken(req)
		if got != want || ok != (want != "") {
			t.Errorf("bearerToken(%q): got %q, %t; want %q", header, got, ok, want)
		}
	}
}

// An authorization answer is cached for exactly the question asked: users
// that differ only in groups or extra attributes get their own.
func TestDecisionKey(t *testing.T) {
	base := authenticationv1.UserInfo{Username: "u", UID: "1", Groups: []string{"a,b"}}
	keys := map[string]string{}
	for name, u := range map[string]authenticationv1.UserInfo{
		"base":        base,
		"split group": {Username: "u", UID: "1", Groups: []string{"a", "b"}},
		"with scope":  {Username: "u", UID: "1", Groups: []string{"a,b"}, Extra: map[string]authenticationv1.ExtraValue{"scopes": {"read"}}},
	} {
		k := decisionKey(u, "get", "/metrics")
		if other, ok := keys[k]; ok {
			t.Errorf("%s and %s share a cache key", name, other)
		}
		keys[k] = name
	}
	if decisionKey(base, "get", "/metrics") == decisionKey(base, "get", "/healthz") {
		t.Error("two paths share a cache key")
	}
}

// countingTransport counts the requests that reach the API server.
type countingTransport struct {
	next  http.RoundTripper
	count atomic.Int64
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.count.Add(1)
	return c.next.RoundTrip(req)
}

// TestFilterAgainstTheAPIServer runs the filter against a real API server:
// the metrics-reader role lets a ServiceAccount scrape, another gets 403,
// a bad or missing token 401, and repeated scrapes reuse the reviews until
// they expire.
func TestFilterAgainstTheAPIServer(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set; run 'make test'")
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(cfg)

	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "metrics-reader"},
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "metrics-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "default", Name: "prometheus"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tokenOf := func(name string) string {
		t.Helper()
		if _, err := admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{
			ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		tr, err := admin.CoreV1().ServiceAccounts("default").CreateToken(ctx, name,
			&authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("request a token for %s: %v", name, err)
		}
		return tr.Status.Token
	}
	reader, stranger := tokenOf("prometheus"), tokenOf("stranger")

	counter := &countingTransport{}
	reviewCfg := rest.CopyConfig(cfg)
	reviewCfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter })
	httpClient, err := rest.HTTPClientFor(reviewCfg)
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakePassiveClock(time.Now())
	r, err := NewReviewer(reviewCfg, httpClient, clk)
	if err != nil {
		t.Fatal(err)
	}
	handler, err := r.Filter(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "opsnow_token_refresh_total 1\n")
	}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)

	scrape := func(token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	for _, tc := range []struct {
		name, token string
		code        int
		body        string
	}{
		{"no token", "", http.StatusUnauthorized, "Unauthorized"},
		{"a token the API server does not know", "not-a-token", http.StatusUnauthorized, "Unauthorized"},
		{"a ServiceAccount without the role", stranger, http.StatusForbidden, "Authorization denied for user system:serviceaccount:default:stranger"},
		{"the metrics reader", reader, http.StatusOK, "opsnow_token_refresh_total"},
	} {
		code, body := scrape(tc.token)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s: got %d %q, want %d with %q", tc.name, code, body, tc.code, tc.body)
		}
	}

	before := counter.count.Load()
	for range 5 {
		if code, _ := scrape(reader); code != http.StatusOK {
			t.Fatalf("repeated scrape: got %d, want 200", code)
		}
	}
	if n := counter.count.Load() - before; n != 0 {
		t.Errorf("five more scrapes within the cache time: %d reviews, want 0", n)
	}
	clk.SetTime(clk.Now().Add(allowedTTL + time.Second))
	if code, _ := scrape(reader); code != http.StatusOK {
		t.Fatalf("scrape after expiry: got %d, want 200", code)
	}
	if n := counter.count.Load() - before; n != 2 {
		t.Errorf("a scrape after the cache expired: %d reviews, want 2 (TokenReview and SubjectAccessReview)", n)
	}

	// A token must never be logged or cached as itself.
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.decision {
		if strings.Contains(k, reader) {
			t.Error("the authorization cache holds a bearer token")
		}
	}
}
