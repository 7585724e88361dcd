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
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

// configDir is the kustomize tree, relative to this package.
var configDir = filepath.Join("..", "..", "config")

// TestSecretsNeverLeak drives one namespace through success, a manual
// refresh, a 401 that echoes the API key, a 500 that quotes a JWT and the
// issued tokens, a malformed response and two Secret conflicts, then scans
// everything the operator writes outside the target Secret's data: the
// manager's log (at debug level), the events, every OpsnowToken, the other
// Secrets' metadata and the metrics. None may hold the API key or a token.
func TestSecretsNeverLeak(t *testing.T) {
	h := newHarness(t)
	apiKey := "opsnow-key-" + randomHex(t, 16)
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

	// 500 whose body quotes a JWT, the old token and the one in the Secret.
	jwt := fakeJWT(t)
	h.server.SetFault(&tokenserver.Fault{Status: 500, Body: fmt.Sprintf(
		`{"message":"internal error: session %s expired; tokens %s and %s revoked"}`, jwt, issued[0], issued[1])})
	h.createToken("unavailable", "opsnow-api-key")
	h.waitReady("unavailable", metav1.ConditionFalse, authv1alpha1.ReasonUpstreamUnavailable)
	h.requestRefresh("billing", "r3")
	h.waitRefreshHandled("billing", "r3", 2)

	// A 200 whose JSON breaks off right after a token.
	h.server.SetFault(&tokenserver.Fault{Status: 200, Body: `{"data":{"accessToken":"` + issued[1] + `","expiresIn":`})
	h.createToken("garbled", "opsnow-api-key")
	h.waitReady("garbled", metav1.ConditionFalse, authv1alpha1.ReasonInvalidResponse)
	h.requestRefresh("billing", "r4")
	h.waitRefreshHandled("billing", "r4", 3)
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

// waitRefreshHandled waits until the refresh request value has been acted on
// and status counts failedAttempts.
func (h *harness) waitRefreshHandled(name, value string, failedAttempts int32) {
	h.t.Helper()
	h.eventually(fmt.Sprintf("%s to handle refresh request %q with %d failed attempts", name, value, failedAttempts),
		func() (bool, string) {
			st := h.getToken(name).Status
			return st.LastHandledRefreshRequest == value && st.FailedAttempts == failedAttempts,
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
	scan := func(where, text string) {
		for name, value := range secrets {
			if value != "" && strings.Contains(text, value) {
				found = append(found, fmt.Sprintf("%s holds %s", where, name))
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
