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

package controller_test

// The SPEC's security rules, proven against a real API server: no API key
// or token in logs, events, status or metrics; the manager runs under
// exactly the generated RBAC and needs nothing more; --watch-namespaces
// keeps it out of other namespaces; the manager Deployment passes the Pod
// Security "restricted" profile.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

// configDir is the kustomize tree, relative to this package.
var configDir = filepath.Join("..", "..", "config")

// TestSecretsNeverLeak drives one namespace through success, a manual
// refresh, a 401 that echoes the API key, upstream errors that echo the key
// and the held token encoded (JSON-escaped, URL-encoded, HTML-escaped,
// base64, split), a 500 that quotes a JWT and the issued tokens, a malformed
// response and two Secret conflicts, then scans
// everything the operator writes outside the target Secret's data: the
// manager's log (at debug level), the events, every OpsnowToken, the other
// Secrets' metadata and the metrics. None may hold the API key or a token,
// nor any 16 characters of one, in any of those encodings.
func TestSecretsNeverLeak(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	// Characters that every encoding changes: '/', '+', '&', '='.
	apiKey := "opsnow/key+" + randomHex(t, 12) + "&x=" + randomHex(t, 12)
	h.server.SetAPIKeys(apiKey)
	h.createAPIKeySecret("opsnow-api-key", apiKey)

	// Success, then a manual refresh: two tokens issued.
	h.createToken("billing", "opsnow-api-key")
	h.waitReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	h.requestRefresh("billing", "r1")
	h.waitRefreshHandled("billing", "r1", 0)
	issued := h.server.Issued()
	if len(issued) != 2 {
		t.Fatalf("issued tokens: got %d, want 2", len(issued))
	}
	h.waitSecretToken("billing", issued[1])

	// 401 whose body echoes the API key: a refresh of the ready token fails
	// (Ready stays True, the failure is in status), a new token is not ready.
	h.server.SetFault(&tokenserver.Fault{Status: 401, Body: `{"message":"invalid key ` + apiKey + `"}`})
	h.createToken("rejected", "opsnow-api-key")
	h.waitReady("rejected", metav1.ConditionFalse, authv1alpha1.ReasonUnauthorized)
	h.requestRefresh("billing", "r2")
	h.waitRefreshHandled("billing", "r2", 1)

	// Echoes of the key and of the held token in other encodings, with and
	// without a message field: each is one more failed attempt.
	held := issued[1]
	failed := int32(1)
	for i, body := range encodedEchoes(apiKey, held) {
		// The scan below must recognise every echo, or it would prove nothing.
		if !holdsAnyForm(body, leakForms(apiKey)) && !holdsAnyForm(body, leakForms(held)) {
			t.Fatalf("echo %d is not recognised by the leak scan", i)
		}
		h.server.SetFault(&tokenserver.Fault{Status: []int{400, 401, 500}[i%3], Body: body})
		failed++
		h.requestRefresh("billing", fmt.Sprintf("echo-%d", i))
		h.waitRefreshHandled("billing", fmt.Sprintf("echo-%d", i), failed)
	}

	// 500 whose body quotes a JWT, the old token and the one in the Secret.
	jwt := fakeJWT(t)
	h.server.SetFault(&tokenserver.Fault{Status: 500, Body: fmt.Sprintf(
		`{"message":"internal error: session %s expired; tokens %s and %s revoked"}`, jwt, issued[0], issued[1])})
	h.createToken("unavailable", "opsnow-api-key")
	h.waitReady("unavailable", metav1.ConditionFalse, authv1alpha1.ReasonUpstreamUnavailable)
	h.requestRefresh("billing", "r3")
	h.waitRefreshHandled("billing", "r3", failed+1)

	// A 200 whose JSON breaks off right after a token.
	h.server.SetFault(&tokenserver.Fault{Status: 200, Body: `{"data":{"accessToken":"` + issued[1] + `","expiresIn":`})
	h.createToken("garbled", "opsnow-api-key")
	h.waitReady("garbled", metav1.ConditionFalse, authv1alpha1.ReasonInvalidResponse)
	h.requestRefresh("billing", "r4")
	h.waitRefreshHandled("billing", "r4", failed+2)
	h.server.SetFault(nil)

	// Conflicts: a token aiming at another token's Secret, and one aiming at
	// a foreign Secret that holds the key.
	h.createToken("intruder", "opsnow-api-key", func(tok *authv1alpha1.OpsnowToken) { tok.Spec.SecretName = "billing" })
	h.waitReady("intruder", metav1.ConditionFalse, authv1alpha1.ReasonSecretConflict)
	foreign := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "legacy"},
		Data:       map[string][]byte{"apiKey": []byte(apiKey)},
	}
	if err := k8s.Create(context.Background(), foreign); err != nil {
		t.Fatalf("create foreign Secret: %v", err)
	}
	h.createToken("legacy", "opsnow-api-key")
	h.waitReady("legacy", metav1.ConditionFalse, authv1alpha1.ReasonSecretConflict)

	// A last manual refresh succeeds and clears the failures.
	h.requestRefresh("billing", "r5")
	h.waitRefreshHandled("billing", "r5", 0)
	issued = h.server.Issued()
	if len(issued) != 3 {
		t.Fatalf("issued tokens: got %d, want 3", len(issued))
	}
	h.waitSecretToken("billing", issued[2])

	// The events are written asynchronously: wait for the last of each kind.
	h.waitEvent("billing", corev1.EventTypeNormal, "TokenRefreshed")
	h.waitEvent("rejected", corev1.EventTypeWarning, authv1alpha1.ReasonUnauthorized)
	h.waitEvent("unavailable", corev1.EventTypeWarning, authv1alpha1.ReasonUpstreamUnavailable)
	h.waitEvent("garbled", corev1.EventTypeWarning, authv1alpha1.ReasonInvalidResponse)
	h.waitEvent("intruder", corev1.EventTypeWarning, authv1alpha1.ReasonSecretConflict)
	h.waitEvent("legacy", corev1.EventTypeWarning, authv1alpha1.ReasonSecretConflict)

	// The failures did reach status, events and logs, as sanitized text:
	// otherwise the scan below would prove nothing.
	if msg := h.getToken("unavailable").Status.LastFailureMessage; !strings.Contains(msg, "internal error") {
		t.Errorf("lastFailureMessage of the 500: got %q, want the upstream's message, redacted", msg)
	}
	if msg := h.getToken("rejected").Status.LastFailureMessage; !strings.Contains(msg, "invalid key") {
		t.Errorf("lastFailureMessage of the 401: got %q, want the upstream's message, redacted", msg)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "Token refresh failed") {
		t.Error("manager log holds no failed refresh: the scan would prove nothing")
	}
	if !strings.Contains(logs, "\tDEBUG\t") {
		t.Error("manager log holds no debug (V(1)) line: the scan must cover the most verbose level")
	}

	secrets := map[string]string{"the API key": apiKey, "the JWT in the 500 body": jwt}
	for i, tok := range issued {
		secrets[fmt.Sprintf("issued token #%d", i+1)] = tok
	}
	for _, leak := range h.scanForSecrets(secrets, "opsnow-api-key", "legacy") {
		t.Error(leak)
	}
}

// An upstream that quotes the token now held in the Secret gets it redacted
// even when the token looks like a plain word (no digits, no JWT shape),
// which pattern-based redaction alone would let through.
func TestFailureMessagesRedactTheHeldToken(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createAPIKeySecret("opsnow-api-key", "key-"+randomHex(t, 8))
	word := "demo." + strings.Repeat("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 1)
	h.server.SetFault(&tokenserver.Fault{Status: 200, Body: `{"accessToken":"` + word + `","expiresIn":3600}`})
	h.createToken("billing", "opsnow-api-key")
	h.waitReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	h.waitSecretToken("billing", word)

	h.server.SetFault(&tokenserver.Fault{Status: 503, Body: `{"message":"token ` + word + ` is being rotated"}`})
	h.requestRefresh("billing", "r1")
	h.waitRefreshHandled("billing", "r1", 1)
	h.waitEvent("billing", corev1.EventTypeWarning, authv1alpha1.ReasonUpstreamUnavailable)
	if msg := h.getToken("billing").Status.LastFailureMessage; !strings.Contains(msg, "being rotated") {
		t.Errorf("lastFailureMessage: got %q, want the upstream's message, redacted", msg)
	}
	for _, leak := range h.scanForSecrets(map[string]string{"the held token": word}, "opsnow-api-key") {
		t.Error(leak)
	}
}

// Endpoints the allowlist refuses get Ready=False/EndpointNotAllowed and
// nothing is sent anywhere; an allowed endpoint that redirects elsewhere
// gets InvalidResponse and the other host sees no request.
func TestRefusedEndpointsSendNothing(t *testing.T) {
	requireControlPlane(t)
	var attackerHits atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attackerHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"accessToken":"stolen-`+randomHex(t, 8)+`","expiresIn":3600}`)
	}))
	t.Cleanup(attacker.Close)
	var redirects atomic.Int64
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirects.Add(1)
		http.Redirect(w, r, attacker.URL+tokenserver.TokenPath, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)

	h := newHarness(t, withAllowedEndpoints(redirector.URL))
	key := "key-" + randomHex(t, 8)
	h.createAPIKeySecret("opsnow-api-key", key)
	allowed := strings.TrimPrefix(h.url, "http://") // 127.0.0.1:<port>, allowlisted as http
	other := strings.TrimPrefix(attacker.URL, "http://")
	port := allowed[strings.LastIndexByte(allowed, ':')+1:]

	cases := []struct{ name, endpoint string }{
		{"same host, another port", attacker.URL},
		{"userinfo naming the allowed host", "http://" + allowed + "@" + other},
		{"allowed host in the path", attacker.URL + "/" + allowed},
		{"https for an http entry", "https://" + allowed},
		{"localhost for 127.0.0.1", "http://localhost:" + port},
		{"short IPv4 form", "http://127.1:" + port},
		{"http for the built-in https endpoint", "http://api.opsnow.io"},
		{"built-in host, non-default port", "https://api.opsnow.io:8443"},
		{"look-alike suffix", "https://api.opsnow.io.evil.example"},
		{"look-alike prefix", "https://evilapi.opsnow.io"},
		{"userinfo naming a built-in host", "https://api.opsnow.io@evil.example"},
		{"built-in host in the path of another", "https://evil.example/api.opsnow.io"},
		{"dot segments", "https://api.opsnow.io/../evil"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := fmt.Sprintf("refused-%d", i)
			tok := &authv1alpha1.OpsnowToken{
				ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: name},
				Spec: authv1alpha1.OpsnowTokenSpec{
					APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: "opsnow-api-key"},
					Endpoint:        c.endpoint,
				},
			}
			if err := k8s.Create(context.Background(), tok); apierrors.IsInvalid(err) {
				t.Logf("refused at admission already: %v", err)
				return
			} else if err != nil {
				t.Fatalf("create OpsnowToken: %v", err)
			}
			got := h.waitReady(name, metav1.ConditionFalse, authv1alpha1.ReasonEndpointNotAllowed)
			if msg := readyCondition(got).Message; strings.Contains(msg, "@") && !strings.Contains(msg, "(@)") {
				t.Errorf("Ready message %q repeats userinfo", msg)
			}
		})
	}

	h.createToken("redirected", "opsnow-api-key", func(tok *authv1alpha1.OpsnowToken) { tok.Spec.Endpoint = redirector.URL })
	got := h.waitReady("redirected", metav1.ConditionFalse, authv1alpha1.ReasonInvalidResponse)
	if msg := got.Status.LastFailureMessage; !strings.Contains(msg, "redirect to another host refused") {
		t.Errorf("lastFailureMessage: got %q, want the refused redirect", msg)
	}
	if n := redirects.Load(); n != 1 {
		t.Errorf("requests to the allowed, redirecting endpoint: got %d, want 1", n)
	}

	h.assertRequestsStay(0, 300*time.Millisecond)
	if n := attackerHits.Load(); n != 0 {
		t.Errorf("requests to the endpoint no one allowed: got %d, want 0", n)
	}
}

// eventuallyNudging is eventually for a state reached when the fake clock
// fires a planned wake-up. A reconcile still running when the test steps
// the clock plans its wake-up from the new time, later than it meant to;
// so, while cond does not hold, the clock moves on five minutes every
// quarter second.
func (h *harness) eventuallyNudging(what string, cond func() (bool, string)) {
	h.t.Helper()
	polls := 0
	h.eventually(what, func() (bool, string) {
		ok, msg := cond()
		if polls++; !ok && polls%5 == 0 {
			h.step(5 * time.Minute)
		}
		return ok, msg
	})
}

// requestRefresh sets the refresh-requested-at annotation to value.
func (h *harness) requestRefresh(name, value string) {
	h.t.Helper()
	update(h.t, &authv1alpha1.OpsnowToken{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: name}},
		func(tok *authv1alpha1.OpsnowToken) {
			if tok.Annotations == nil {
				tok.Annotations = map[string]string{}
			}
			tok.Annotations[authv1alpha1.RefreshRequestedAtAnnotation] = value
		})
}

// waitRefreshHandled waits until the refresh request value has been acted
// on and status counts failedAttempts. A failed attempt leaves the request
// pending (retried at the backoff), so lastHandledRefreshRequest names the
// value only once a token answering it is in the Secret.
func (h *harness) waitRefreshHandled(name, value string, failedAttempts int32) {
	h.t.Helper()
	h.eventually(fmt.Sprintf("%s to handle refresh request %q with %d failed attempts", name, value, failedAttempts),
		func() (bool, string) {
			st := h.getToken(name).Status
			confirmed := st.LastHandledRefreshRequest == value
			return confirmed == (failedAttempts == 0) && st.FailedAttempts == failedAttempts,
				fmt.Sprintf("lastHandledRefreshRequest %q, failedAttempts %d", st.LastHandledRefreshRequest, st.FailedAttempts)
		})
}

// waitSecretToken waits until the target Secret holds token.
func (h *harness) waitSecretToken(name, token string) {
	h.t.Helper()
	h.eventually("Secret "+name+" to hold the expected token", func() (bool, string) {
		s := h.getSecret(name)
		if s == nil {
			return false, "Secret missing"
		}
		return string(s.Data[authv1alpha1.SecretTokenKey]) == token, "Secret holds another token"
	})
}

// encodedEchoes are upstream error bodies that echo the key and the token in
// the encodings a redactor looking for the raw value would miss.
func encodedEchoes(key, token string) []string {
	jsonEscaped := func(s string) string {
		b, _ := json.Marshal(s) // marshalling a string cannot fail
		return strings.ReplaceAll(strings.Trim(string(b), `"`), "/", `\/`)
	}
	half := len(key) / 2
	return []string{
		`{"apiKey":"` + jsonEscaped(key) + `"}`,
		`{"message":"invalid key ` + url.QueryEscape(key) + `"}`,
		`{"error":"invalid key ` + html.EscapeString(key) + `"}`,
		`{"error_description":"invalid key ` + base64.StdEncoding.EncodeToString([]byte(key)) + `"}`,
		`{"detail":"key ` + key[:half] + ` was split from ` + key[half:] + `"}`,
		`{"message":"token ` + jsonEscaped(token) + ` revoked"}`,
		`{"message":"token ` + url.PathEscape(token) + "	" + base64.RawURLEncoding.EncodeToString([]byte(token)) + `"}`,
		key + " " + token,
	}
}

// leakForms are the forms of a secret value the scan looks for: the raw
// value and its encodings, each also by every 16-character window.
func leakForms(value string) []string {
	b, _ := json.Marshal(value) // marshalling a string cannot fail
	encoded := []string{value, strings.Trim(string(b), `"`), strings.ReplaceAll(value, "/", `\/`),
		url.QueryEscape(value), url.PathEscape(value), html.EscapeString(value),
		base64.StdEncoding.EncodeToString([]byte(value)), base64.RawURLEncoding.EncodeToString([]byte(value))}
	var forms []string
	for _, e := range encoded {
		if len(e) <= 16 {
			forms = append(forms, e)
			continue
		}
		for i := 0; i+16 <= len(e); i++ {
			forms = append(forms, e[i:i+16])
		}
	}
	return forms
}

// holdsAnyForm reports whether text contains one of forms.
func holdsAnyForm(text string, forms []string) bool {
	for _, f := range forms {
		if strings.Contains(text, f) {
			return true
		}
	}
	return false
}

// scanForSecrets looks for every secret value in what the operator writes
// besides the target Secrets' data: the manager's log, the namespace's
// events of both APIs, every OpsnowToken in full, the metadata of every
// Secret and the data of the Secrets not listed in ownData (API-key and
// foreign Secrets), and the metrics. It returns one line per finding,
// naming the place and the secret but never showing the value.
func (h *harness) scanForSecrets(secrets map[string]string, ownData ...string) []string {
	h.t.Helper()
	ctx := context.Background()
	var found []string
	forms := map[string][]string{}
	for name, value := range secrets {
		if value != "" {
			forms[name] = leakForms(value)
		}
	}
	scan := func(where, text string) {
		for name, fs := range forms {
			if holdsAnyForm(text, fs) {
				found = append(found, fmt.Sprintf("%s holds %s (or 16 characters of it, or an encoding)", where, name))
			}
		}
	}
	asJSON := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			h.t.Fatalf("marshal %T: %v", v, err)
		}
		return string(b)
	}

	scan("the manager log", h.logs.String())

	var events eventsv1.EventList
	if err := k8s.List(ctx, &events, client.InNamespace(h.ns)); err != nil {
		h.t.Fatalf("list events.k8s.io events: %v", err)
	}
	if len(events.Items) == 0 {
		h.t.Fatal("no events.k8s.io events in the namespace: nothing to scan")
	}
	for _, e := range events.Items {
		scan(fmt.Sprintf("event %s/%s about %s", e.Type, e.Reason, e.Regarding.Name), asJSON(e))
	}
	var coreEvents corev1.EventList
	if err := k8s.List(ctx, &coreEvents, client.InNamespace(h.ns)); err != nil {
		h.t.Fatalf("list core events: %v", err)
	}
	for _, e := range coreEvents.Items {
		scan(fmt.Sprintf("core event %s/%s about %s", e.Type, e.Reason, e.InvolvedObject.Name), asJSON(e))
	}

	var tokens authv1alpha1.OpsnowTokenList
	if err := k8s.List(ctx, &tokens, client.InNamespace(h.ns)); err != nil {
		h.t.Fatalf("list OpsnowTokens: %v", err)
	}
	for _, tok := range tokens.Items {
		scan("OpsnowToken "+tok.Name, asJSON(tok))
	}

	var secretList corev1.SecretList
	if err := k8s.List(ctx, &secretList, client.InNamespace(h.ns)); err != nil {
		h.t.Fatalf("list Secrets: %v", err)
	}
	for _, s := range secretList.Items {
		scan("metadata of Secret "+s.Name, asJSON(s.ObjectMeta))
		if _, managed := s.Labels[authv1alpha1.TokenLabel]; !managed && !slices.Contains(ownData, s.Name) {
			scan("data of Secret "+s.Name, asJSON(s.Data))
		}
	}

	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		h.t.Fatalf("gather metrics: %v", err)
	}
	var metrics strings.Builder
	for _, f := range families {
		metrics.WriteString(f.GetName() + " " + f.GetHelp() + "\n")
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				metrics.WriteString(l.GetName() + "=" + l.GetValue() + "\n")
			}
		}
	}
	scan("the metrics", metrics.String())
	return found
}

// randomHex returns n random bytes in hex, so that a value found anywhere
// can only have come from this test.
func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// fakeJWT returns a JWT-shaped string with a random subject and signature.
func fakeJWT(t *testing.T) string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	header := enc([]byte(`{"alg":"HS256","typ":"JWT"}`))
	payload := enc([]byte(`{"sub":"` + randomHex(t, 8) + `","exp":4102444800}`))
	return header + "." + payload + "." + enc([]byte(randomHex(t, 16)))
}

// --- Least privilege ------------------------------------------------------

// rbacRule is one verb on one resource, the unit in which RBAC is compared.
type rbacRule struct{ group, resource, verb string }

func (r rbacRule) String() string {
	g := r.group
	if g == "" {
		g = "core"
	}
	return g + "/" + r.resource + ":" + r.verb
}

// expandRules flattens policy rules into single verbs on single resources.
// Wildcards stay as "*", so that they show up as unexpected.
func expandRules(t *testing.T, rules []rbacv1.PolicyRule) []rbacRule {
	t.Helper()
	var out []rbacRule
	for _, r := range rules {
		if len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
			t.Errorf("unexpected rule form %+v: want plain apiGroups/resources/verbs", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, rbacRule{g, res, v})
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b rbacRule) int { return strings.Compare(a.String(), b.String()) })
	return slices.Compact(out)
}

// compareRules fails t with every rule granted but not expected (too wide)
// and every rule expected but not granted (too narrow).
func compareRules(t *testing.T, what string, got []rbacv1.PolicyRule, want []rbacRule) {
	t.Helper()
	granted := expandRules(t, got)
	for _, r := range granted {
		if !slices.Contains(want, r) {
			t.Errorf("%s grants %s, which the manager does not use: remove it", what, r)
		}
	}
	for _, r := range want {
		if !slices.Contains(granted, r) {
			t.Errorf("%s lacks %s, which the manager needs", what, r)
		}
	}
}

// The rules the manager needs, and nothing more. A change here must come
// with a change in what the controller calls; the envtest stories below
// prove that these suffice.
var (
	// managerRules is config/rbac/role.yaml, generated from the
	// +kubebuilder:rbac markers of the reconciler.
	managerRules = []rbacRule{
		// Metadata of all Secrets watched (list, watch); target Secrets
		// created, and patched when refreshed (a merge patch under their
		// resourceVersion, so that their data need not be read first); a
		// target's data and API keys read with get. Delete only for a Secret
		// a change of spec.secretName left behind, which the OpsnowToken
		// controls (it also lets OwnerReferencesPermissionEnforcement accept
		// the owner reference); garbage collection removes the rest. No
		// update.
		{"", "secrets", "create"},
		{"", "secrets", "delete"},
		{"", "secrets", "get"},
		{"", "secrets", "list"},
		{"", "secrets", "patch"},
		{"", "secrets", "watch"},
		{"auth.opsnow.io", "opsnowtokens", "get"},
		{"auth.opsnow.io", "opsnowtokens", "list"},
		{"auth.opsnow.io", "opsnowtokens", "watch"},
		// Status is written with a merge patch only.
		{"auth.opsnow.io", "opsnowtokens/status", "patch"},
		// Events through events.k8s.io/v1; patch updates an event series.
		{"events.k8s.io", "events", "create"},
		{"events.k8s.io", "events", "patch"},
		// ClusterOpsnowTokens, like OpsnowTokens; namespaces are cached to
		// follow their selection (list, watch; never read one by one).
		{"auth.opsnow.io", "clusteropsnowtokens", "get"},
		{"auth.opsnow.io", "clusteropsnowtokens", "list"},
		{"auth.opsnow.io", "clusteropsnowtokens", "watch"},
		{"auth.opsnow.io", "clusteropsnowtokens/status", "patch"},
		{"", "namespaces", "list"},
		{"", "namespaces", "watch"},
	}
	// namespacedManagerRules are managerRules without those on
	// cluster-scoped resources: a namespaced install, which runs no
	// ClusterOpsnowToken controller, grants these as Roles.
	namespacedManagerRules = slices.DeleteFunc(slices.Clone(managerRules), func(r rbacRule) bool {
		return r.resource == "namespaces" || strings.HasPrefix(r.resource, "clusteropsnowtokens")
	})
	// leaderElectionRules is config/rbac/leader_election_role.yaml, a Role
	// in the manager's own namespace.
	leaderElectionRules = []rbacRule{
		{"coordination.k8s.io", "leases", "create"},
		{"coordination.k8s.io", "leases", "get"},
		{"coordination.k8s.io", "leases", "update"},
		// The leader-election events go through the core/v1 recorder.
		{"", "events", "create"},
		{"", "events", "patch"},
	}
	// metricsAuthRules is config/rbac/metrics_auth_role.yaml: the metrics
	// endpoint asks the API server who a scraper is and whether it may read.
	metricsAuthRules = []rbacRule{
		{"authentication.k8s.io", "tokenreviews", "create"},
		{"authorization.k8s.io", "subjectaccessreviews", "create"},
	}
)

// The generated and hand-written roles grant exactly what the manager
// uses: too wide fails here, too narrow fails the stories under RBAC.
func TestRolesGrantExactlyWhatIsUsed(t *testing.T) {
	requireControlPlane(t)
	var cr rbacv1.ClusterRole
	readObject(t, filepath.Join(configDir, "rbac", "role.yaml"), "ClusterRole", &cr)
	compareRules(t, "ClusterRole "+cr.Name+" (config/rbac/role.yaml)", cr.Rules, managerRules)

	var le rbacv1.Role
	readObject(t, filepath.Join(configDir, "rbac", "leader_election_role.yaml"), "Role", &le)
	compareRules(t, "Role "+le.Name+" (config/rbac/leader_election_role.yaml)", le.Rules, leaderElectionRules)

	var ma rbacv1.ClusterRole
	readObject(t, filepath.Join(configDir, "rbac", "metrics_auth_role.yaml"), "ClusterRole", &ma)
	compareRules(t, "ClusterRole "+ma.Name+" (config/rbac/metrics_auth_role.yaml)", ma.Rules, metricsAuthRules)

	var mr rbacv1.ClusterRole
	readObject(t, filepath.Join(configDir, "rbac", "metrics_reader_role.yaml"), "ClusterRole", &mr)
	want := []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}
	if !equalJSON(mr.Rules, want) {
		t.Errorf("ClusterRole %s rules: got %+v, want only get on /metrics", mr.Name, mr.Rules)
	}

	// The namespaced install grants the same rules as Roles.
	var nr rbacv1.Role
	readObject(t, filepath.Join(configDir, "namespaced", "tenant", "role.yaml"), "Role", &nr)
	compareRules(t, "Role "+nr.Name+" (config/namespaced/tenant/role.yaml)", nr.Rules, namespacedManagerRules)
}

// The manager runs cluster-wide, with leader election, as a user that holds
// only the generated ClusterRole and the leader-election Role, and every
// story works: nothing it does is denied.
func TestManagerRunsUnderGeneratedRBAC(t *testing.T) {
	requireControlPlane(t)
	user := newManagerUser(t)
	h := newHarness(t, withManagerConfig(user.config), withWatchAllNamespaces(), withLeaderElection(),
		withBeforeStart(func(h *harness) { user.bind(h, false) }))
	runStoriesUnderRBAC(t, h, user)
}

// The namespaced install: the same rules as a Role in the one watched
// namespace are enough.
func TestManagerRunsUnderNamespacedRBAC(t *testing.T) {
	requireControlPlane(t)
	user := newManagerUser(t)
	h := newHarness(t, withManagerConfig(user.config), withLeaderElection(),
		withBeforeStart(func(h *harness) { user.bind(h, true) }))
	runStoriesUnderRBAC(t, h, user)
}

// managerUser is an identity with no rights but those bound by bind.
type managerUser struct {
	name   string
	config *rest.Config
}

func newManagerUser(t *testing.T) *managerUser {
	t.Helper()
	name := "opsnow-token-operator-" + randomHex(t, 4)
	u, err := testEnv.AddUser(envtest.User{Name: name}, nil)
	if err != nil {
		t.Fatalf("add user: %v", err)
	}
	cfg := u.Config()
	// The manager's own client rate limits would only slow the test.
	cfg.QPS, cfg.Burst = 100, 200
	return &managerUser{name: name, config: cfg}
}

// bind grants the user the manager's rules from config/rbac/role.yaml,
// cluster-wide or, when namespaced, as a Role in the test namespace only,
// and the leader-election Role in the test namespace.
func (u *managerUser) bind(h *harness, namespaced bool) {
	t := h.t
	t.Helper()
	ctx := context.Background()
	subjects := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: u.name}}
	create := func(obj client.Object) {
		t.Helper()
		if err := k8s.Create(ctx, obj); err != nil {
			t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
	}

	var manager rbacv1.ClusterRole
	readObject(t, filepath.Join(configDir, "rbac", "role.yaml"), "ClusterRole", &manager)
	if namespaced {
		create(&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: manager.Name}, Rules: manager.Rules})
		create(&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: manager.Name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: manager.Name},
			Subjects:   subjects,
		})
	} else {
		name := manager.Name + "-" + u.name
		create(&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: manager.Rules})
		create(&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
			Subjects:   subjects,
		})
	}

	var le rbacv1.Role
	readObject(t, filepath.Join(configDir, "rbac", "leader_election_role.yaml"), "Role", &le)
	create(&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: le.Name}, Rules: le.Rules})
	create(&rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: le.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: le.Name},
		Subjects:   subjects,
	})
}

// runStoriesUnderRBAC runs the main stories against a manager running as
// user: token written, planned refresh, API-key rotation, a deleted Secret
// restored, a conflict left alone, events written, leadership acquired;
// then checks that the API server denied the manager nothing.
func runStoriesUnderRBAC(t *testing.T, h *harness, user *managerUser) {
	ctx := context.Background()
	// Last, and also when a story failed: stop the manager (releasing the
	// Lease) and report every request the API server denied it.
	t.Cleanup(func() {
		h.stopManager()
		// RBAC denials read `User "<name>" cannot <verb> resource ...`,
		// with the quotes escaped inside a logged error.
		var denials []string
		for line := range strings.SplitSeq(h.logs.String(), "\n") {
			if strings.Contains(line, user.name) && strings.Contains(line, " cannot ") {
				denials = append(denials, line)
			}
		}
		for i, line := range denials {
			if i == 3 {
				t.Errorf("... and %d more denials", len(denials)-i)
				break
			}
			t.Errorf("the API server denied the manager a request: %s", line)
		}
	})
	select {
	case <-h.mgr.Elected():
	case <-time.After(waitTimeout):
		t.Fatal("the manager did not become leader")
	}
	var lease coordinationv1.Lease
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: h.ns, Name: "opsnow-token-operator.auth.opsnow.io"}, &lease); err != nil {
		t.Fatalf("get leader-election Lease: %v", err)
	}

	// Keys unique to this test: a cluster-wide manager also sees the
	// tokens other tests left behind and may send their keys here.
	key1, key2 := "key-"+randomHex(t, 8), "key-"+randomHex(t, 8)
	h.createAPIKeySecret("opsnow-api-key", key1)
	h.createToken("billing", "opsnow-api-key")
	tok := h.waitReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	h.eventually("the token in the target Secret", func() (bool, string) {
		s := h.getSecret("billing")
		return s != nil && slices.Contains(h.server.Issued(), string(s.Data[authv1alpha1.SecretTokenKey])),
			"no Secret holding an issued token"
	})
	h.waitEvent("billing", corev1.EventTypeNormal, "TokenRefreshed")

	// Planned refresh: the Secret is updated.
	first := tok.Status.ExpiresAt.Time
	h.stepTo(tok.Status.NextRefreshTime.Time)
	h.eventuallyNudging("the planned refresh", func() (bool, string) {
		tok = h.getToken("billing")
		return tok.Status.ExpiresAt.Time.After(first), fmt.Sprintf("expiresAt %v", tok.Status.ExpiresAt)
	})
	if got := h.server.RequestsFor(key1); got != 2 {
		t.Errorf("token requests with the first key: got %d, want 2", got)
	}

	// API-key rotation: read again, exchanged at once.
	update(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "opsnow-api-key"}},
		func(s *corev1.Secret) { s.Data[authv1alpha1.DefaultAPIKeyKey] = []byte(key2) })
	h.eventually("an exchange with the rotated key", func() (bool, string) {
		n := h.server.RequestsFor(key2)
		return n == 1, fmt.Sprintf("%d requests with the new key", n)
	})
	h.waitReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)

	// A deleted target Secret is created again.
	if err := k8s.Delete(ctx, h.getSecret("billing")); err != nil {
		t.Fatalf("delete target Secret: %v", err)
	}
	h.eventually("the target Secret restored", func() (bool, string) {
		s := h.getSecret("billing")
		return s != nil && len(s.Data[authv1alpha1.SecretTokenKey]) > 0, "Secret missing"
	})

	// A foreign Secret with the target name is left alone.
	foreign := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "taken"},
		Data:       map[string][]byte{"password": []byte("do-not-touch")},
	}
	if err := k8s.Create(ctx, foreign); err != nil {
		t.Fatalf("create foreign Secret: %v", err)
	}
	h.createToken("second", "opsnow-api-key", func(tok *authv1alpha1.OpsnowToken) { tok.Spec.SecretName = "taken" })
	h.waitReady("second", metav1.ConditionFalse, authv1alpha1.ReasonSecretConflict)
	h.waitEvent("second", corev1.EventTypeWarning, authv1alpha1.ReasonSecretConflict)
	if got := h.getSecret("taken"); got.ResourceVersion != foreign.ResourceVersion {
		t.Errorf("foreign Secret modified: resourceVersion %s, was %s", got.ResourceVersion, foreign.ResourceVersion)
	}

	// Leader election announces itself with a core/v1 event.
	h.eventually("the leader-election event", func() (bool, string) {
		var events corev1.EventList
		if err := k8s.List(ctx, &events, client.InNamespace(h.ns)); err != nil {
			return false, err.Error()
		}
		for _, e := range events.Items {
			if e.Reason == "LeaderElection" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d core events, none about leader election", len(events.Items))
	})
}

// config/namespaced renders (with kustomize) to an install whose manager
// holds no cluster-wide right to Secrets or OpsnowTokens: exactly the
// manager's rules as a Role in each namespace it watches, and nowhere else.
func TestNamespacedInstallRenders(t *testing.T) {
	requireControlPlane(t)
	kustomize := os.Getenv("KUSTOMIZE")
	if kustomize == "" {
		kustomize = filepath.Join("..", "..", "bin", "kustomize")
	}
	if _, err := os.Stat(kustomize); err != nil {
		t.Skipf("kustomize not found at %s (make kustomize installs it): %v", kustomize, err)
	}
	out, err := exec.Command(kustomize, "build", filepath.Join(configDir, "namespaced")).Output()
	if err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			t.Fatalf("kustomize build config/namespaced: %v\n%s", err, exitErr.Stderr)
		}
		t.Fatalf("kustomize build config/namespaced: %v", err)
	}

	const sa = "opsnow-token-operator-controller-manager"
	const saNamespace = "opsnow-token-operator-system"
	boundToManager := func(subjects []rbacv1.Subject) bool {
		return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Name == sa && s.Namespace == saNamespace
		})
	}
	var (
		watched      []string
		clusterRoles = map[string][]rbacv1.PolicyRule{}
		roles        = map[string][]rbacv1.PolicyRule{} // namespace/name
		roleNS       = map[string]bool{}
	)
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	var objects []unstructured.Unstructured
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode kustomize output: %v", err)
		}
		objects = append(objects, u)
	}
	convert := func(u unstructured.Unstructured, obj any) {
		t.Helper()
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	clusterTokensOff := false
	for _, u := range objects {
		switch u.GetKind() {
		case "ClusterRole":
			var cr rbacv1.ClusterRole
			convert(u, &cr)
			clusterRoles[cr.Name] = cr.Rules
		case "Role":
			var r rbacv1.Role
			convert(u, &r)
			roles[r.Namespace+"/"+r.Name] = r.Rules
		case "Deployment":
			var d appsv1.Deployment
			convert(u, &d)
			for _, arg := range d.Spec.Template.Spec.Containers[0].Args {
				if v, ok := strings.CutPrefix(arg, "--watch-namespaces="); ok {
					watched = strings.Split(v, ",")
				}
				clusterTokensOff = clusterTokensOff || arg == "--enable-cluster-tokens=false"
			}
		}
	}
	if !clusterTokensOff {
		t.Errorf("the namespaced install's manager lacks --enable-cluster-tokens=false: it holds no rights for ClusterOpsnowTokens")
	}
	if len(watched) == 0 {
		t.Fatal("the manager Deployment has no --watch-namespaces")
	}
	for _, u := range objects {
		switch u.GetKind() {
		case "ClusterRoleBinding":
			var b rbacv1.ClusterRoleBinding
			convert(u, &b)
			if !boundToManager(b.Subjects) {
				continue
			}
			rules, ok := clusterRoles[b.RoleRef.Name]
			if !ok {
				t.Errorf("ClusterRoleBinding %s binds the manager to ClusterRole %s, which the install does not define", b.Name, b.RoleRef.Name)
			}
			for _, r := range expandRules(t, rules) {
				if slices.Contains(metricsAuthRules, r) {
					continue
				}
				t.Errorf("ClusterRoleBinding %s grants the manager %s cluster-wide", b.Name, r)
			}
		case "RoleBinding":
			var b rbacv1.RoleBinding
			convert(u, &b)
			if !boundToManager(b.Subjects) || b.RoleRef.Kind != "Role" {
				continue
			}
			rules, ok := roles[b.Namespace+"/"+b.RoleRef.Name]
			if !ok {
				t.Errorf("RoleBinding %s/%s names a Role that is not in the install", b.Namespace, b.Name)
				continue
			}
			if b.Namespace == saNamespace && b.RoleRef.Name == "opsnow-token-operator-leader-election-role" {
				compareRules(t, "leader-election Role", rules, leaderElectionRules)
				continue
			}
			if !slices.Contains(watched, b.Namespace) {
				t.Errorf("RoleBinding %s/%s grants the manager rights in a namespace it does not watch", b.Namespace, b.Name)
			}
			compareRules(t, "Role "+b.Namespace+"/"+b.RoleRef.Name, rules, namespacedManagerRules)
			roleNS[b.Namespace] = true
		}
	}
	for _, ns := range watched {
		if !roleNS[ns] {
			t.Errorf("--watch-namespaces names %s, but no Role there is bound to the manager", ns)
		}
	}
}

// --- --watch-namespaces ---------------------------------------------------

// A manager restricted to its namespace never touches an OpsnowToken in
// another: no status, no Secret, its key never sent, not even read.
func TestWatchNamespacesIgnoresOtherNamespaces(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t) // restricted to h.ns, as --watch-namespaces=<h.ns>
	ctx := context.Background()
	other := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "unwatched-"}}
	if err := k8s.Create(ctx, other); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), other) })

	otherKey := "key-" + randomHex(t, 8)
	if err := k8s.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: other.Name, Name: "opsnow-api-key"},
		Data:       map[string][]byte{authv1alpha1.DefaultAPIKeyKey: []byte(otherKey)},
	}); err != nil {
		t.Fatalf("create API-key Secret: %v", err)
	}
	unwatched := &authv1alpha1.OpsnowToken{
		ObjectMeta: metav1.ObjectMeta{Namespace: other.Name, Name: "billing"},
		Spec:       authv1alpha1.OpsnowTokenSpec{APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: "opsnow-api-key"}},
	}
	if err := k8s.Create(ctx, unwatched); err != nil {
		t.Fatalf("create OpsnowToken: %v", err)
	}

	key := "key-" + randomHex(t, 8)
	h.createAPIKeySecret("opsnow-api-key", key)
	h.createToken("billing", "opsnow-api-key")
	h.waitReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	h.step(2 * time.Hour) // every planned refresh and retry is due
	h.eventuallyNudging("the watched token's refresh", func() (bool, string) {
		n := h.server.RequestsFor(key)
		return n == 2, fmt.Sprintf("%d token requests in the watched namespace", n)
	})

	h.consistently("the unwatched token untouched", time.Second, func() (bool, string) {
		tok := &authv1alpha1.OpsnowToken{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(unwatched), tok); err != nil {
			return false, err.Error()
		}
		if !equalJSON(tok.Status, authv1alpha1.OpsnowTokenStatus{}) {
			return false, fmt.Sprintf("status written: %+v", tok.Status)
		}
		err := k8s.Get(ctx, client.ObjectKey{Namespace: other.Name, Name: "billing"}, &corev1.Secret{})
		if !apierrors.IsNotFound(err) {
			return false, fmt.Sprintf("target Secret in the unwatched namespace: get returned %v", err)
		}
		if n := h.server.RequestsFor(otherKey); n != 0 {
			return false, fmt.Sprintf("%d token requests with the unwatched namespace's key", n)
		}
		return true, ""
	})
	if strings.Contains(h.logs.String(), other.Name) {
		t.Errorf("the manager log names the unwatched namespace %s", other.Name)
	}
	var events eventsv1.EventList
	if err := k8s.List(ctx, &events, client.InNamespace(other.Name)); err != nil {
		t.Fatal(err)
	}
	if len(events.Items) != 0 {
		t.Errorf("events in the unwatched namespace: got %d, want none", len(events.Items))
	}
}

// --- The manager Deployment -------------------------------------------------

// managerDeployment reads the Deployment from config/manager/manager.yaml.
func managerDeployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	readObject(t, filepath.Join(configDir, "manager", "manager.yaml"), "Deployment", &d)
	return &d
}

// The Deployment sets every field of the Pod Security "restricted" profile
// itself, and the other hardening the SPEC asks for.
func TestManagerDeploymentIsHardened(t *testing.T) {
	d := managerDeployment(t)
	pod := d.Spec.Template.Spec
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot: want true")
	} else if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext.seccompProfile: got %+v, want RuntimeDefault", psc.SeccompProfile)
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Error("pod shares a host namespace")
	}
	if pod.AutomountServiceAccountToken == nil || !*pod.AutomountServiceAccountToken {
		t.Error("pod automountServiceAccountToken: want an explicit true, the manager talks to the API server")
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Error("pod enableServiceLinks: want false, the manager needs no service environment variables")
	}
	ndots := ""
	if pod.DNSConfig != nil {
		for _, o := range pod.DNSConfig.Options {
			if o.Name == "ndots" && o.Value != nil {
				ndots = *o.Value
			}
		}
	}
	if ndots != "1" {
		t.Errorf("pod dnsConfig ndots: got %q, want \"1\" so that api.opsnow.io is never looked up under a cluster search domain first", ndots)
	}

	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		t.Fatalf("containers: got %d (and %d init), want the manager alone", len(pod.Containers), len(pod.InitContainers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("manager securityContext: missing")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("manager allowPrivilegeEscalation: want false")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("manager readOnlyRootFilesystem: want true")
	case sc.Privileged != nil && *sc.Privileged:
		t.Error("manager privileged: want false")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
		t.Errorf("manager capabilities: got %+v, want drop [ALL] and nothing added", sc.Capabilities)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("manager resources.requests.%s: missing", r)
		}
		if _, ok := c.Resources.Limits[r]; !ok {
			t.Errorf("manager resources.limits.%s: missing", r)
		}
	}
	for _, arg := range []string{"--leader-elect", "--metrics-bind-address=:8443", "--health-probe-bind-address=:8081"} {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("manager args %q: want %s", c.Args, arg)
		}
	}
	for _, arg := range c.Args {
		if strings.HasPrefix(arg, "--zap-devel") || strings.HasPrefix(arg, "--zap-encoder") || strings.HasPrefix(arg, "--metrics-secure=false") {
			t.Errorf("manager arg %s: want the default JSON logs and HTTPS metrics", arg)
		}
	}
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != 8081 {
			t.Errorf("manager %s probe: got %+v, want an HTTP probe on port 8081", name, p)
		}
	}
}

// The API server's PodSecurity admission, enforcing "restricted" on a
// namespace, accepts a Pod made from the Deployment's template, and rejects
// it once a required field is taken out (proof that it is enforcing).
func TestManagerPodPassesRestrictedPodSecurity(t *testing.T) {
	requireControlPlane(t)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "restricted-", Labels: map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	}}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })

	template := managerDeployment(t).Spec.Template
	podFrom := func(mutate func(*corev1.PodSpec)) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, GenerateName: "manager-", Labels: template.Labels},
			Spec:       *template.Spec.DeepCopy(),
		}
		mutate(&p.Spec)
		return p
	}
	if err := k8s.Create(ctx, podFrom(func(*corev1.PodSpec) {}), client.DryRunAll); err != nil {
		t.Fatalf("dry-run create of the manager Pod in a restricted namespace: %v", err)
	}

	weakened := map[string]func(*corev1.PodSpec){
		"no seccompProfile":        func(s *corev1.PodSpec) { s.SecurityContext.SeccompProfile = nil },
		"no runAsNonRoot":          func(s *corev1.PodSpec) { s.SecurityContext.RunAsNonRoot = nil },
		"privilege escalation":     func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil },
		"capabilities not dropped": func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.Capabilities = nil },
		"NET_RAW capability added": func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_RAW"}
		},
		"host network":              func(s *corev1.PodSpec) { s.HostNetwork = true },
		"hostPath volume":           func(s *corev1.PodSpec) { s.Volumes = append(s.Volumes, hostPathVolume()) },
		"container runs as root id": func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.RunAsUser = new(int64) },
	}
	for name, mutate := range weakened {
		t.Run(name, func(t *testing.T) {
			err := k8s.Create(ctx, podFrom(mutate), client.DryRunAll)
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "PodSecurity") {
				t.Errorf("dry-run create with %s: got %v, want PodSecurity to forbid it", name, err)
			}
		})
	}
}

func hostPathVolume() corev1.Volume {
	return corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}
}

// --- helpers ---------------------------------------------------------------

// readObject decodes the one object of kind in the YAML file at path (which
// may hold several documents) into obj.
func readObject(t *testing.T, path, kind string, obj runtime.Object) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer func() { _ = f.Close() }()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	found := 0
	for {
		var u unstructured.Unstructured
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decode %s: %v", path, err)
		}
		if u.GetKind() != kind {
			continue
		}
		found++
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, obj, true); err != nil {
			t.Fatalf("%s in %s: %v", kind, path, err)
		}
	}
	if found != 1 {
		t.Fatalf("%s: got %d objects of kind %s, want 1", path, found, kind)
	}
}

// equalJSON reports whether a and b marshal to the same JSON.
func equalJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}
