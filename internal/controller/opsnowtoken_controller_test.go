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

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// A new OpsnowToken gets its Secret with the token, the SPEC's keys, labels
// and owner, and Ready=True with the times in status, after one request.
func TestTokenWrittenAndReady(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	issuedAt := h.clock.Now()
	h.createAPIKeySecret("opsnow-api-key", "key-1")
	h.createToken("billing", "opsnow-api-key", func(tok *authv1alpha1.OpsnowToken) { tok.Spec.SecretName = "billing-token" })

	tok := h.waitReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	if got := h.server.Requests(); got != 1 {
		t.Errorf("token requests: got %d, want 1", got)
	}
	if got := h.server.RequestsFor("key-1"); got != 1 {
		t.Errorf("token requests with the API key: got %d, want 1", got)
	}

	s := h.getSecret("billing-token")
	if s == nil {
		t.Fatal("target Secret billing-token not created")
	}
	issued := h.server.Issued()
	wantExpiry := issuedAt.Add(time.Hour).UTC()
	if got := string(s.Data["token"]); got != issued[0] {
		t.Errorf("Secret token: got %q, want the issued token", got)
	}
	if got, want := string(s.Data["expiresAt"]), wantExpiry.Format(time.RFC3339); got != want {
		t.Errorf("Secret expiresAt: got %q, want %q", got, want)
	}
	if len(s.Data) != 2 {
		t.Errorf("Secret data keys: got %d, want exactly token and expiresAt", len(s.Data))
	}
	if s.Type != corev1.SecretTypeOpaque {
		t.Errorf("Secret type: got %q, want Opaque", s.Type)
	}
	for k, v := range map[string]string{
		"app.kubernetes.io/managed-by": "opsnow-token-operator",
		"auth.opsnow.io/token":         "billing",
	} {
		if s.Labels[k] != v {
			t.Errorf("Secret label %s: got %q, want %q", k, s.Labels[k], v)
		}
	}
	if !metav1.IsControlledBy(s, tok) {
		t.Errorf("Secret ownerReferences: got %+v, want a controller reference to the OpsnowToken", s.OwnerReferences)
	}
	for k, v := range s.Annotations {
		if strings.Contains(v, "key-1") || strings.Contains(v, issued[0]) {
			t.Errorf("Secret annotation %s holds the API key or the token", k)
		}
	}

	st := tok.Status
	if st.SecretName != "billing-token" {
		t.Errorf("status.secretName: got %q, want billing-token", st.SecretName)
	}
	if st.ExpiresAt == nil || !st.ExpiresAt.Time.Equal(wantExpiry) {
		t.Errorf("status.expiresAt: got %v, want %v", st.ExpiresAt, wantExpiry)
	}
	if st.LastRefreshTime == nil || !st.LastRefreshTime.Time.Equal(issuedAt) {
		t.Errorf("status.lastRefreshTime: got %v, want %v", st.LastRefreshTime, issuedAt)
	}
	// Two thirds of the hour, minus at most a tenth of the remaining third.
	latest, earliest := issuedAt.Add(40*time.Minute), issuedAt.Add(40*time.Minute-2*time.Minute)
	if st.NextRefreshTime == nil || st.NextRefreshTime.Time.After(latest) || st.NextRefreshTime.Time.Before(earliest) {
		t.Errorf("status.nextRefreshTime: got %v, want within [%v, %v]", st.NextRefreshTime, earliest, latest)
	}
	if st.FailedAttempts != 0 || st.LastFailureMessage != "" {
		t.Errorf("status failure fields: got %d %q, want none", st.FailedAttempts, st.LastFailureMessage)
	}
	h.waitEvent("billing", corev1.EventTypeNormal, "TokenRefreshed")
}

// The token is refreshed at its planned time, before it expires, and the
// Secret then holds the new token.
func TestRefreshBeforeExpiry(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createAPIKeySecret("opsnow-api-key", "key-1")
	h.createToken("billing", "opsnow-api-key")
	tok := h.waitReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	first := tok.Status.ExpiresAt.Time

	// Just before the planned time nothing happens.
	h.stepTo(tok.Status.NextRefreshTime.Time.Add(-time.Second))
	h.assertRequestsStay(1, 300*time.Millisecond)

	h.stepTo(tok.Status.NextRefreshTime.Time)
	h.waitRequests(2)
	h.eventually("a new expiry in status", func() (bool, string) {
		tok = h.getToken("billing")
		return tok.Status.ExpiresAt.Time.After(first), fmt.Sprintf("expiresAt %v", tok.Status.ExpiresAt)
	})
	if !tok.Status.ExpiresAt.Time.After(h.clock.Now()) || !first.After(h.clock.Now()) {
		t.Errorf("refresh came after expiry: old token expired at %v, now %v", first, h.clock.Now())
	}
	issued := h.server.Issued()
	h.eventually("the new token in the Secret", func() (bool, string) {
		got := string(h.getSecret("billing").Data["token"])
		return got == issued[1], "Secret still holds the first token"
	})
	h.assertRequestsStay(2, 300*time.Millisecond)
}

// Without its API-key Secret the token is not ready and nothing is sent;
// creating the Secret makes it ready without waiting for a retry.
func TestAPIKeySecretMissingThenCreated(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createToken("billing", "opsnow-api-key")
	tok := h.waitReady("billing", metav1.ConditionFalse, authv1alpha1.ReasonAPIKeySecretNotFound)
	if !strings.Contains(readyCondition(tok).Message, "opsnow-api-key") {
		t.Errorf("Ready message %q does not name the missing Secret", readyCondition(tok).Message)
	}
	if h.getSecret("billing") != nil {
		t.Error("target Secret created without an API key")
	}
	h.assertRequestsStay(0, 200*time.Millisecond)

	h.createAPIKeySecret("opsnow-api-key", "key-1")
	tok = h.waitReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	if tok.Status.FailedAttempts != 0 || tok.Status.LastFailureMessage != "" {
		t.Errorf("failure fields after recovery: got %d %q, want reset", tok.Status.FailedAttempts, tok.Status.LastFailureMessage)
	}
	if got := h.server.Requests(); got != 1 {
		t.Errorf("token requests: got %d, want 1", got)
	}
}

// An API-key Secret without the referenced key is APIKeyMissing.
func TestAPIKeyMissing(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createAPIKeySecret("opsnow-api-key", "key-1")
	h.createToken("billing", "opsnow-api-key", func(tok *authv1alpha1.OpsnowToken) { tok.Spec.APIKeySecretRef.Key = "other" })
	h.waitReady("billing", metav1.ConditionFalse, authv1alpha1.ReasonAPIKeyMissing)
	h.assertRequestsStay(0, 200*time.Millisecond)
}

// A rejected key is Unauthorized: no Secret, the failure in status, and the
// key in no message.
func TestUnauthorized(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.server.SetAPIKeys("the-right-key")
	h.createAPIKeySecret("opsnow-api-key", "a-wrong-key")
	h.createToken("billing", "opsnow-api-key")

	tok := h.waitReady("billing", metav1.ConditionFalse, authv1alpha1.ReasonUnauthorized)
	if h.getSecret("billing") != nil {
		t.Error("target Secret created although the key was rejected")
	}
	if tok.Status.FailedAttempts != 1 {
		t.Errorf("status.failedAttempts: got %d, want 1", tok.Status.FailedAttempts)
	}
	if tok.Status.LastFailureMessage == "" || strings.Contains(tok.Status.LastFailureMessage, "a-wrong-key") {
		t.Errorf("status.lastFailureMessage: got %q, want a message without the key", tok.Status.LastFailureMessage)
	}
	// A rejected key is retried slowly: not within the first minute.
	h.step(time.Minute)
	h.assertRequestsStay(1, 300*time.Millisecond)
	h.waitEvent("billing", corev1.EventTypeWarning, authv1alpha1.ReasonUnauthorized)
}

// A Secret with the target name that the OpsnowToken does not control is
// never touched; deleting it lets the token be written.
func TestForeignSecretConflict(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	foreign := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "billing"},
		Data:       map[string][]byte{"password": []byte("do-not-touch")},
	}
	if err := k8s.Create(context.Background(), foreign); err != nil {
		t.Fatalf("create foreign Secret: %v", err)
	}
	h.createAPIKeySecret("opsnow-api-key", "key-1")
	h.createToken("billing", "opsnow-api-key")

	h.waitReady("billing", metav1.ConditionFalse, authv1alpha1.ReasonSecretConflict)
	h.assertRequestsStay(0, 300*time.Millisecond)
	got := h.getSecret("billing")
	if got.ResourceVersion != foreign.ResourceVersion || string(got.Data["password"]) != "do-not-touch" || len(got.OwnerReferences) != 0 {
		t.Errorf("foreign Secret modified: resourceVersion %s (was %s), data %v, owners %v",
			got.ResourceVersion, foreign.ResourceVersion, got.Data, got.OwnerReferences)
	}
	h.waitEvent("billing", corev1.EventTypeWarning, authv1alpha1.ReasonSecretConflict)

	if err := k8s.Delete(context.Background(), foreign); err != nil {
		t.Fatalf("delete foreign Secret: %v", err)
	}
	h.waitReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	if s := h.getSecret("billing"); s == nil || len(s.Data["token"]) == 0 {
		t.Error("token not written after the conflicting Secret was deleted")
	}
}

// A Secret labelled as managed but controlled by another OpsnowToken is a
// conflict too.
func TestSecretOfAnotherTokenConflict(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createAPIKeySecret("opsnow-api-key", "key-1")
	h.createToken("first", "opsnow-api-key", func(tok *authv1alpha1.OpsnowToken) { tok.Spec.SecretName = "shared" })
	h.waitReady("first", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	h.createToken("second", "opsnow-api-key", func(tok *authv1alpha1.OpsnowToken) { tok.Spec.SecretName = "shared" })
	h.waitReady("second", metav1.ConditionFalse, authv1alpha1.ReasonSecretConflict)
	if got := h.getSecret("shared").Labels[authv1alpha1.TokenLabel]; got != "first" {
		t.Errorf("shared Secret's token label: got %q, want first", got)
	}
	h.assertRequestsStay(1, 200*time.Millisecond)
}

// A manager restarted while the Secret holds a valid token asks OpsNow
// nothing and writes nothing.
func TestRestartCausesNoRequests(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createAPIKeySecret("opsnow-api-key", "key-1")
	for i := range 3 {
		h.createToken(fmt.Sprintf("token-%d", i), "opsnow-api-key")
	}
	before := map[string]string{}
	for i := range 3 {
		name := fmt.Sprintf("token-%d", i)
		h.waitReady(name, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
		h.eventually("Secret "+name, func() (bool, string) { return h.getSecret(name) != nil, "missing" })
	}
	h.assertRequestsStay(3, 300*time.Millisecond)
	for i := range 3 {
		name := fmt.Sprintf("token-%d", i)
		before[name] = h.getToken(name).ResourceVersion + "/" + h.getSecret(name).ResourceVersion
	}

	h.stopManager()
	reconciles := reconcileCount(t)
	h.step(10 * time.Minute) // time passed while the manager was away
	h.startManager()
	h.eventually("the new manager to reconcile every token", func() (bool, string) {
		n := reconcileCount(t) - reconciles
		return n >= 3, fmt.Sprintf("%v reconciles", n)
	})
	h.assertRequestsStay(3, 500*time.Millisecond)
	for name, rv := range before {
		if got := h.getToken(name).ResourceVersion + "/" + h.getSecret(name).ResourceVersion; got != rv {
			t.Errorf("%s: resourceVersions of token/Secret changed from %s to %s: the restart wrote", name, rv, got)
		}
	}
}

// Objects the SPEC calls bad are rejected by the API server itself.
func TestInvalidObjectsRejected(t *testing.T) {
	requireControlPlane(t)
	ns := newHarness(t).ns
	valid := func() *authv1alpha1.OpsnowToken {
		return &authv1alpha1.OpsnowToken{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "bad-"},
			Spec:       authv1alpha1.OpsnowTokenSpec{APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: "k"}},
		}
	}
	tests := []struct {
		name   string
		mutate func(*authv1alpha1.OpsnowToken)
		field  string
	}{
		{"empty API-key Secret name", func(o *authv1alpha1.OpsnowToken) { o.Spec.APIKeySecretRef.Name = "" }, "apiKeySecretRef.name"},
		{"API-key Secret name not a DNS name", func(o *authv1alpha1.OpsnowToken) { o.Spec.APIKeySecretRef.Name = "Bad_Name" }, "apiKeySecretRef.name"},
		{"key with a slash", func(o *authv1alpha1.OpsnowToken) { o.Spec.APIKeySecretRef.Key = "a/b" }, "apiKeySecretRef.key"},
		{"key dot-dot", func(o *authv1alpha1.OpsnowToken) { o.Spec.APIKeySecretRef.Key = ".." }, "apiKeySecretRef.key"},
		{"secretName not a DNS name", func(o *authv1alpha1.OpsnowToken) { o.Spec.SecretName = "UPPER" }, "secretName"},
		{"secretName too long", func(o *authv1alpha1.OpsnowToken) { o.Spec.SecretName = strings.Repeat("a", 254) }, "secretName"},
		{"endpoint not a URL", func(o *authv1alpha1.OpsnowToken) { o.Spec.Endpoint = "not a url" }, "endpoint"},
		{"endpoint without host", func(o *authv1alpha1.OpsnowToken) { o.Spec.Endpoint = "https://" }, "endpoint"},
		{"endpoint ftp", func(o *authv1alpha1.OpsnowToken) { o.Spec.Endpoint = "ftp://api.opsnow.io" }, "endpoint"},
		{"refreshBefore negative", func(o *authv1alpha1.OpsnowToken) { o.Spec.RefreshBefore = &metav1.Duration{Duration: -time.Minute} }, "refreshBefore"},
		{"refreshBefore zero", func(o *authv1alpha1.OpsnowToken) { o.Spec.RefreshBefore = &metav1.Duration{} }, "refreshBefore"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.mutate(o)
			err := k8s.Create(context.Background(), o)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("create: got %v, want an Invalid error", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name the field %s", err, tt.field)
			}
		})
	}
	// Raw JSON reaches validation rules typed Go values cannot express.
	for _, raw := range []string{`"abc"`, `"5"`, `"-5m"`} {
		t.Run("refreshBefore "+raw, func(t *testing.T) {
			body := fmt.Sprintf(`{"apiVersion":"auth.opsnow.io/v1alpha1","kind":"OpsnowToken","metadata":{"generateName":"bad-","namespace":%q},`+
				`"spec":{"apiKeySecretRef":{"name":"k"},"refreshBefore":%s}}`, ns, raw)
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON([]byte(body)); err != nil {
				t.Fatalf("decode: %v", err)
			}
			err := k8s.Create(context.Background(), u)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "refreshBefore") {
				t.Errorf("create with refreshBefore %s: got %v, want Invalid naming refreshBefore", raw, err)
			}
		})
	}
	t.Run("valid object accepted with defaults", func(t *testing.T) {
		o := valid()
		if err := k8s.Create(context.Background(), o); err != nil {
			t.Fatalf("create: %v", err)
		}
		if o.Spec.APIKeySecretRef.Key != "apiKey" {
			t.Errorf("default key: got %q, want apiKey", o.Spec.APIKeySecretRef.Key)
		}
	})
}

// The API has no field to name another namespace: a namespace given in the
// reference is dropped by the API server's schema, and the token reads its
// own namespace's Secret.
func TestReferencesStayInNamespace(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	other := newHarness(t)
	other.createAPIKeySecret("opsnow-api-key", "other-teams-key")
	body := fmt.Sprintf(`{"apiVersion":"auth.opsnow.io/v1alpha1","kind":"OpsnowToken","metadata":{"name":"sneaky","namespace":%q},`+
		`"spec":{"apiKeySecretRef":{"name":"opsnow-api-key","namespace":%q},"secretName":"x"}}`, h.ns, other.ns)
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON([]byte(body)); err != nil {
		t.Fatalf("decode: %v", err)
	}
	err := k8s.Create(context.Background(), u)
	if err == nil {
		// Unknown fields are pruned: the reference is to this namespace.
		h.waitReady("sneaky", metav1.ConditionFalse, authv1alpha1.ReasonAPIKeySecretNotFound)
	} else if !apierrors.IsBadRequest(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("create: %v", err)
	}
	if got := other.server.RequestsFor("other-teams-key") + h.server.RequestsFor("other-teams-key"); got != 0 {
		t.Errorf("the other namespace's key was sent %d times", got)
	}
	var tokens authv1alpha1.OpsnowTokenList
	if err := k8s.List(context.Background(), &tokens, client.InNamespace(other.ns)); err != nil {
		t.Fatal(err)
	}
	if other.getSecret("x") != nil {
		t.Error("a Secret was written into the other namespace")
	}
}

// Deleting an OpsnowToken leaves its Secret to the garbage collector (owner
// reference) and stops its refreshes.
func TestDeletionStopsRefreshes(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createAPIKeySecret("opsnow-api-key", "key-1")
	h.createToken("billing", "opsnow-api-key")
	tok := h.waitReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	next := tok.Status.NextRefreshTime.Time
	if err := k8s.Delete(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	h.eventually("the OpsnowToken to be gone from the manager's cache", func() (bool, string) {
		err := h.mgr.GetClient().Get(context.Background(), client.ObjectKeyFromObject(tok), &authv1alpha1.OpsnowToken{})
		return apierrors.IsNotFound(err), fmt.Sprintf("get: %v", err)
	})
	h.stepTo(next.Add(time.Minute))
	h.assertRequestsStay(1, 300*time.Millisecond)
}

// spec.secretTemplate may not set the operator's keys: the API server
// refuses them with a message naming the rule; other keys pass.
func TestSecretTemplateOperatorKeysRejected(t *testing.T) {
	requireControlPlane(t)
	ns := newHarness(t).ns
	create := func(tmpl authv1alpha1.SecretTemplate) error {
		return k8s.Create(context.Background(), &authv1alpha1.OpsnowToken{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "tmpl-"},
			Spec: authv1alpha1.OpsnowTokenSpec{
				APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: "k"},
				SecretTemplate:  &tmpl,
			},
		})
	}
	tests := []struct {
		name string
		tmpl authv1alpha1.SecretTemplate
		want string
	}{
		{"managed-by label", authv1alpha1.SecretTemplate{Labels: map[string]string{authv1alpha1.ManagedByLabel: "me"}},
			"belong to the operator"},
		{"token label", authv1alpha1.SecretTemplate{Labels: map[string]string{authv1alpha1.TokenLabel: "other"}},
			"belong to the operator"},
		{"operator annotation", authv1alpha1.SecretTemplate{Annotations: map[string]string{"auth.opsnow.io/expires-at": "x"}},
			"belong to the operator"},
		{"long label value", authv1alpha1.SecretTemplate{Labels: map[string]string{"team": strings.Repeat("a", 64)}},
			"at most 63 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := create(tt.tmpl)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "secretTemplate") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("create: got %v, want Invalid naming secretTemplate with %q", err, tt.want)
			}
		})
	}
	ok := authv1alpha1.SecretTemplate{
		Labels:      map[string]string{"team": "a", "app.kubernetes.io/part-of": "billing"},
		Annotations: map[string]string{"reloader.stakater.com/match": "true"},
	}
	if err := create(ok); err != nil {
		t.Errorf("create with an ordinary template: %v", err)
	}
}
