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

package controller

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/opsnow"
)

// Regression tests, one per defect the reconciler's second design fixed,
// each against the real Reconcile with a fake client, clock and upstream.

func TestFirstTokenWrittenAndReady(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	w.reconcile("billing")

	w.expectRequests(1)
	tok := w.expectReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	s := w.secret("billing")
	if s == nil || string(s.Data[authv1alpha1.SecretTokenKey]) != "token-1" {
		t.Fatalf("Secret: got %+v, want token-1", s)
	}
	if tok.Status.ObservedGeneration != 1 || tok.Status.SecretName != "billing" {
		t.Errorf("status: got observedGeneration %d secretName %q, want 1 and billing", tok.Status.ObservedGeneration, tok.Status.SecretName)
	}
	if got := eventsOf(w.events(), corev1.EventTypeNormal, eventTokenRefreshed); len(got) != 1 {
		t.Errorf("TokenRefreshed events: got %v, want 1", got)
	}
	// Nothing is due: another reconcile costs no request, write or live read.
	reads, writes := w.counters()
	w.reconcile("billing")
	w.expectRequests(1)
	if r2, w2 := w.counters(); r2 != reads || w2 != writes {
		t.Errorf("a reconcile with nothing due: got %d live reads and %d writes more, want 0 and 0", r2-reads, w2-writes)
	}
}

// Defect 1: a failed Secret write used to be returned to the workqueue,
// whose retries each minted a new token.
func TestDeniedSecretWriteCostsOneTokenRequest(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	w.set(func() { w.denySecretWrites = admissionDenied() })

	for attempt := int32(1); attempt <= 5; attempt++ {
		if err := w.tryReconcile("billing"); err != nil {
			t.Fatalf("attempt %d: the failure went to the workqueue: %v", attempt, err)
		}
		tok := w.expectReady("billing", metav1.ConditionFalse, authv1alpha1.ReasonSecretWriteFailed)
		if tok.Status.FailedAttempts != attempt || !strings.Contains(tok.Status.LastFailureMessage, "ValidatingAdmissionPolicy") {
			t.Fatalf("attempt %d: got failedAttempts %d message %q", attempt, tok.Status.FailedAttempts, tok.Status.LastFailureMessage)
		}
		if got := eventsOf(w.events(), corev1.EventTypeWarning, authv1alpha1.ReasonSecretWriteFailed); len(got) != 1 {
			t.Fatalf("attempt %d: SecretWriteFailed events: got %v, want 1", attempt, got)
		}
		if tok.Status.NextRefreshTime == nil || !tok.Status.NextRefreshTime.After(w.clock.Now()) {
			t.Fatalf("attempt %d: no retry planned ahead: %v", attempt, tok.Status.NextRefreshTime)
		}
		// A reconcile before the retry time (a watch event) changes nothing.
		w.reconcile("billing")
		if got := w.token("billing").Status.FailedAttempts; got != attempt {
			t.Fatalf("attempt %d: a reconcile during the backoff counted a failure: failedAttempts %d", attempt, got)
		}
		w.stepTo(tok.Status.NextRefreshTime.Time)
	}
	w.expectRequests(1)

	// The policy is lifted: the next retry writes the same token.
	w.set(func() { w.denySecretWrites = nil })
	w.reconcile("billing")
	w.expectRequests(1)
	w.expectReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	if got := string(w.secret("billing").Data[authv1alpha1.SecretTokenKey]); got != "token-1" {
		t.Errorf("Secret token: got %q, want the token minted before the write was denied", got)
	}
}

// Defect 1, continued: a minted token is written again only while it is
// good; once due, a new one is asked for.
func TestDeniedWriteMintsAgainOnceThePendingTokenIsDue(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	w.set(func() { w.denySecretWrites = admissionDenied() })
	w.reconcile("billing")
	w.stepTo(w.clock.Now().Add(50 * time.Minute))
	w.set(func() { w.denySecretWrites = nil })
	w.reconcile("billing")
	w.expectRequests(2)
	if got := string(w.secret("billing").Data[authv1alpha1.SecretTokenKey]); got != "token-2" {
		t.Errorf("Secret token: got %q, want token-2", got)
	}
}

// Defect 2: the Secret's owner reference must not set blockOwnerDeletion,
// which the OwnerReferencesPermissionEnforcement admission plugin allows
// only with update on opsnowtokens/finalizers.
func TestOwnerReferenceDoesNotBlockOwnerDeletion(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	w.reconcile("billing")
	ref := metav1.GetControllerOf(w.secret("billing"))
	if ref == nil || ref.UID != "uid-billing" {
		t.Fatalf("controller reference: got %+v", ref)
	}
	if ref.BlockOwnerDeletion == nil || *ref.BlockOwnerDeletion {
		t.Errorf("blockOwnerDeletion: got %v, want false", ref.BlockOwnerDeletion)
	}
}

// Defect 3: the manual-refresh confirmation is read back from the Secret,
// so a restart between the Secret write and the status patch confirms it.
func TestRefreshRequestConfirmedAfterRestart(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	w.reconcile("billing")
	w.editToken("billing", func(tok *authv1alpha1.OpsnowToken) {
		tok.Annotations = map[string]string{authv1alpha1.RefreshRequestedAtAnnotation: "r1"}
	})
	// The status patch of the refresh is lost, as in a crash right after
	// the Secret write.
	before := w.token("billing")
	w.reconcile("billing")
	w.expectRequests(2)
	restored := w.token("billing")
	restored.Status = before.Status
	if err := w.store.Status().Update(w.ctx, restored); err != nil {
		t.Fatal(err)
	}

	w.restart()
	w.reconcile("billing")
	w.expectRequests(0)
	if got := w.token("billing").Status.LastHandledRefreshRequest; got != "r1" {
		t.Errorf("lastHandledRefreshRequest after restart: got %q, want r1", got)
	}
}

// Defect 3, continued: a manual refresh whose write failed stays pending
// and is retried at the backoff, not dropped until the next scheduled refresh.
func TestFailedManualRefreshIsRetried(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	w.reconcile("billing")
	w.editToken("billing", func(tok *authv1alpha1.OpsnowToken) {
		tok.Annotations = map[string]string{authv1alpha1.RefreshRequestedAtAnnotation: "r1"}
	})
	w.set(func() { w.denySecretWrites = admissionDenied() })
	w.reconcile("billing")
	tok := w.expectReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	if tok.Status.FailedAttempts != 1 || tok.Status.LastHandledRefreshRequest == "r1" {
		t.Fatalf("after the failed write: failedAttempts %d lastHandled %q, want 1 and not r1",
			tok.Status.FailedAttempts, tok.Status.LastHandledRefreshRequest)
	}
	w.set(func() { w.denySecretWrites = nil })
	w.stepTo(tok.Status.NextRefreshTime.Time)
	w.reconcile("billing")
	w.expectRequests(2)
	tok = w.token("billing")
	if tok.Status.LastHandledRefreshRequest != "r1" || string(w.secret("billing").Data[authv1alpha1.SecretTokenKey]) != "token-2" {
		t.Errorf("after the retry: lastHandled %q, Secret %q; want r1 and token-2",
			tok.Status.LastHandledRefreshRequest, w.secret("billing").Data[authv1alpha1.SecretTokenKey])
	}
}

// Defect 4: the retry is planned from the clock after the exchange, and a
// token that expired during it is not reported Ready.
func TestTimeSpentInTheExchangeCounts(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	w.reconcile("billing")
	expires := w.token("billing").Status.ExpiresAt.Time

	// The scheduled refresh starts 20 s before expiry, and the upstream
	// takes 60 s to fail.
	w.stepTo(expires.Add(-20 * time.Second))
	w.ex.mu.Lock()
	w.ex.takes, w.ex.err = 60*time.Second, &opsnow.Error{Kind: opsnow.ErrUnavailable, Detail: "request timed out"}
	w.ex.mu.Unlock()
	w.reconcile("billing")

	after := w.clock.Now()
	tok := w.expectReady("billing", metav1.ConditionFalse, authv1alpha1.ReasonUpstreamUnavailable)
	if next := tok.Status.NextRefreshTime.Time; !next.After(after) {
		t.Errorf("retry planned at %s, not after the clock when the exchange ended (%s)", next, after)
	}
	if c := condition(tok, authv1alpha1.ConditionReconciling); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Reconciling: got %+v, want True while retrying without a token", c)
	}
}

// Defect 5: the rate limiter never parks a worker; a token over the limit
// is told when its slot comes and reconciled then.
func TestRateLimitDoesNotBlockWorkers(t *testing.T) {
	w := newWorld(t, withRate(0.1)) // one request per 10 s, burst 1
	w.createAPIKey("k1")
	for _, name := range []string{"a", "b", "c"} {
		w.createToken(name)
	}
	start := time.Now()
	for _, name := range []string{"a", "b", "c"} {
		w.reconcile(name)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("three reconciles took %s of real time: a worker waited on the rate limit", elapsed)
	}
	w.expectRequests(1)
	w.expectReady("a", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	c := w.expectReady("c", metav1.ConditionFalse, authv1alpha1.ReasonProgressing)
	if rc := condition(c, authv1alpha1.ConditionReconciling); rc == nil || rc.Status != metav1.ConditionTrue {
		t.Errorf("c Reconciling: got %+v, want True", rc)
	}
	if c.Status.ObservedGeneration != 0 {
		t.Errorf("c observedGeneration: got %d, want 0 while its request waits", c.Status.ObservedGeneration)
	}
	// At b's slot, b goes; c still waits for its own.
	w.clock.Step(10 * time.Second)
	w.reconcile("b")
	w.reconcile("c")
	w.expectRequests(2)
	w.clock.Step(10 * time.Second)
	w.reconcile("c")
	w.expectRequests(3)
	w.expectReady("c", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
}

// Defect 6: no refresh waits on one long timer; a wake-up comes within
// maxTimer and, with nothing due, costs no API call.
func TestLongWaitsAreCheckedEveryFiveMinutes(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	w.reconcile("billing")
	if !w.clock.HasWaiters() {
		t.Fatal("no timer planned after the first token")
	}
	reads, writes := w.counters()
	w.clock.Step(maxTimer)
	select {
	case <-w.r.scheduler.events:
	default:
		t.Fatalf("no wake-up %s after the token was written (refresh due at %s)", maxTimer, w.token("billing").Status.NextRefreshTime)
	}
	w.reconcile("billing")
	if r2, w2 := w.counters(); r2 != reads || w2 != writes {
		t.Errorf("a wake-up with nothing due: got %d live reads and %d writes, want 0 and 0", r2-reads, w2-writes)
	}
	w.expectRequests(1)
	// A jump past the refresh time (a host suspend) is noticed at the next wake-up.
	w.clock.SetTime(w.token("billing").Status.NextRefreshTime.Time.Add(time.Second))
	w.reconcile("billing")
	w.expectRequests(2)
}

// Defect 7: a token being deleted (foreground deletion removes the Secret
// first) gets no request and no write.
func TestDeletingTokenIsLeftAlone(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing", func(tok *authv1alpha1.OpsnowToken) {
		tok.Finalizers = []string{metav1.FinalizerDeleteDependents}
	})
	if err := w.store.Delete(w.ctx, w.token("billing")); err != nil {
		t.Fatal(err)
	}
	if w.token("billing").DeletionTimestamp == nil {
		t.Fatal("the token is not being deleted")
	}
	w.reconcile("billing")
	w.expectRequests(0)
	if s := w.secret("billing"); s != nil {
		t.Errorf("a Secret was written for a token being deleted: %+v", s.ObjectMeta)
	}
}

// Defect 8: fixing a rejected key ends the backoff at once, also when a
// target Secret exists.
func TestFixedKeyEndsTheBackoff(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	w.reconcile("billing")

	w.ex.fail(&opsnow.Error{Kind: opsnow.ErrUnauthorized, StatusCode: 401, Detail: "invalid API key"})
	w.setAPIKey("bad")
	w.reconcile("billing")
	tok := w.expectReady("billing", metav1.ConditionFalse, authv1alpha1.ReasonUnauthorized)
	if wait := tok.Status.NextRefreshTime.Sub(w.clock.Now()); wait < time.Minute {
		t.Fatalf("unauthorized retry in %s, want the slow retry", wait)
	}
	w.reconcile("billing") // a watch event during the backoff
	w.expectRequests(2)

	w.ex.fail(nil)
	w.setAPIKey("k2")
	w.reconcile("billing")
	w.expectRequests(3)
	w.expectReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	if got := w.ex.keys[len(w.ex.keys)-1]; got != "k2" {
		t.Errorf("key sent: got %q, want k2", got)
	}
}

// Defect 9: observedGeneration is not set by a transient error, and a
// spec change after a failure ends the backoff.
func TestObservedGenerationFollowsOutcomes(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	w.set(func() { w.failSecretReads = errors.New("etcdserver: request timed out") })
	if err := w.tryReconcile("billing"); err == nil {
		t.Fatal("a failed read of the cluster returned no error")
	}
	w.expectRequests(0)
	if got := w.token("billing").Status.ObservedGeneration; got != 0 {
		t.Errorf("observedGeneration after a transient error: got %d, want 0", got)
	}
	w.set(func() { w.failSecretReads = nil })

	w.ex.fail(&opsnow.Error{Kind: opsnow.ErrUnavailable, StatusCode: 503})
	w.reconcile("billing")
	tok := w.expectReady("billing", metav1.ConditionFalse, authv1alpha1.ReasonUpstreamUnavailable)
	if tok.Status.ObservedGeneration != 1 {
		t.Errorf("observedGeneration after a recorded failure: got %d, want 1", tok.Status.ObservedGeneration)
	}
	w.ex.fail(nil)
	w.editToken("billing", func(tok *authv1alpha1.OpsnowToken) { tok.Spec.SecretName = "billing-token" })
	w.reconcile("billing")
	w.expectRequests(2)
	tok = w.expectReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	if tok.Status.ObservedGeneration != 2 {
		t.Errorf("observedGeneration: got %d, want 2", tok.Status.ObservedGeneration)
	}
}

// Defect 10: any name the API server accepts works; the token label of a
// long name is shortened, valid and distinct.
func TestLongTokenNames(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	long := strings.Repeat("a", 240)
	names := []string{long + "-one", long + "-two"}
	values := map[string]bool{}
	for _, name := range names {
		w.createToken(name)
		w.reconcile(name)
		w.expectReady(name, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
		v := w.secret(name).Labels[authv1alpha1.TokenLabel]
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			t.Errorf("label value %q: %v", v, errs)
		}
		values[v] = true
	}
	if len(values) != 2 {
		t.Errorf("label values of two long names: got %v, want two distinct", values)
	}
}

// Defect 11: changing spec.secretName deletes the old Secret this token
// controls, and nothing else.
func TestSecretNameChangeDeletesTheOldSecret(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	w.createToken("other", func(tok *authv1alpha1.OpsnowToken) { tok.Spec.SecretName = "other-token" })
	w.reconcile("billing")
	w.reconcile("other")

	w.editToken("billing", func(tok *authv1alpha1.OpsnowToken) { tok.Spec.SecretName = "billing-token" })
	w.reconcile("billing")
	if w.secret("billing") != nil {
		t.Error("the old Secret billing is still there")
	}
	if w.secret("billing-token") == nil || w.secret("other-token") == nil {
		t.Error("the new Secret, or another token's Secret, is missing")
	}
	if got := eventsOf(w.events(), corev1.EventTypeNormal, eventOldSecretDeleted); len(got) != 1 {
		t.Errorf("OldSecretDeleted events: got %v, want 1", got)
	}
	if got := w.token("billing").Status.SecretName; got != "billing-token" {
		t.Errorf("status.secretName: got %q, want billing-token", got)
	}
}

// Defect 12: the cache-lag shortcut never delays a due refresh: a cache
// stuck before the last status patch is read around, not waited for.
func TestStaleCacheDoesNotDelayADueRefresh(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	stale := w.token("billing")
	w.reconcile("billing")
	w.set(func() { w.staleToken = stale })
	w.stepTo(w.token("billing").Status.NextRefreshTime.Time)
	w.reconcile("billing")
	w.expectRequests(2)
}

// Only an Opaque Secret is an API key: a service-account token, a TLS key
// or registry credentials of the namespace are never sent upstream.
func TestAPIKeySecretMustBeOpaque(t *testing.T) {
	for _, secretType := range []corev1.SecretType{
		corev1.SecretTypeServiceAccountToken, corev1.SecretTypeTLS, corev1.SecretTypeDockerConfigJson,
		corev1.SecretTypeBasicAuth, corev1.SecretTypeSSHAuth, corev1.SecretTypeBootstrapToken,
	} {
		t.Run(string(secretType), func(t *testing.T) {
			w := newWorld(t)
			key := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: "opsnow-api-key"},
				Type:       secretType,
				Data:       map[string][]byte{authv1alpha1.DefaultAPIKeyKey: []byte("borrowed-credential")},
			}
			if err := w.store.Create(w.ctx, key); err != nil {
				t.Fatal(err)
			}
			w.createToken("billing")
			w.reconcile("billing")
			w.expectRequests(0)
			tok := w.expectReady("billing", metav1.ConditionFalse, authv1alpha1.ReasonAPIKeySecretNotAllowed)
			if c := condition(tok, authv1alpha1.ConditionStalled); c == nil || c.Status != metav1.ConditionTrue {
				t.Errorf("Stalled: got %+v, want True", c)
			}
			if strings.Contains(tok.Status.LastFailureMessage, "borrowed-credential") {
				t.Errorf("lastFailureMessage quotes the Secret's data: %q", tok.Status.LastFailureMessage)
			}
		})
	}
}

// With --api-key-secret-selector, only Secrets carrying the labels are read
// as API keys; labelling the Secret is enough to go on.
func TestAPIKeySecretSelector(t *testing.T) {
	selector, err := labels.Parse("opsnow.io/api-key=true")
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, func(o *Options) { o.APIKeySecretSelector = selector })
	key := w.createAPIKey("k1")
	w.createToken("billing")
	w.reconcile("billing")
	w.expectRequests(0)
	w.expectReady("billing", metav1.ConditionFalse, authv1alpha1.ReasonAPIKeySecretNotAllowed)

	key.Labels = map[string]string{"opsnow.io/api-key": "true"}
	if err := w.store.Update(w.ctx, key); err != nil {
		t.Fatal(err)
	}
	w.reconcile("billing")
	w.expectRequests(1)
	w.expectReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
}

// The cache holds no Secret data. A routine refresh reads nothing from the
// API server beyond the API key (one request, one Secret patch, one status
// patch); a restarted manager reads each target Secret once, to check the
// token it holds, and sends nothing; a Secret edited behind the operator's
// back is read, found edited and replaced.
func TestSecretDataIsReadOnlyWhenItMayHaveChanged(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	w.reconcile("billing")
	w.expectRequests(1)

	w.stepTo(w.token("billing").Status.NextRefreshTime.Time)
	reads, writes := w.counters()
	w.reconcile("billing")
	w.expectRequests(2)
	r2, w2 := w.counters()
	// The API key is read for the exchange; the Secret is not read at all.
	if r2-reads != 1 || w2-writes != 2 {
		t.Errorf("routine refresh: %d live reads and %d writes, want 1 (the API key) and 2 (Secret, status)", r2-reads, w2-writes)
	}

	w.restart()
	reads, writes = w.counters()
	w.reconcile("billing")
	w.expectRequests(0)
	if r3, w3 := w.counters(); r3-reads != 1 || w3 != writes {
		t.Errorf("first reconcile after a restart: %d live reads and %d writes, want 1 (the Secret) and 0", r3-reads, w3-writes)
	}
	reads, _ = w.counters()
	w.reconcile("billing")
	if r4, _ := w.counters(); r4 != reads {
		t.Errorf("second reconcile after a restart: %d live reads, want 0", r4-reads)
	}

	s := w.secret("billing")
	s.Data[authv1alpha1.SecretTokenKey] = []byte("edited")
	if err := w.store.Update(w.ctx, s); err != nil {
		t.Fatal(err)
	}
	w.reconcile("billing")
	w.expectRequests(1)
	if got := string(w.secret("billing").Data[authv1alpha1.SecretTokenKey]); got == "edited" {
		t.Errorf("edited Secret: token %q kept, want a new one", got)
	}
}

// Operator's labels edited away are put back by a patch of the metadata
// alone: the token stays, no token is requested, and others' labels stay.
func TestLabelsPutBackWithoutTheData(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	w.reconcile("billing")
	token := string(w.secret("billing").Data[authv1alpha1.SecretTokenKey])

	s := w.secret("billing")
	delete(s.Labels, authv1alpha1.TokenLabel)
	s.Labels["team"] = "a"
	if err := w.store.Update(w.ctx, s); err != nil {
		t.Fatal(err)
	}
	// The edit is the operator's to notice; its memory of the version it
	// wrote makes it read the Secret once, then patch its labels.
	w.reconcile("billing")
	w.expectRequests(1)
	got := w.secret("billing")
	if got.Labels[authv1alpha1.TokenLabel] != "billing" || got.Labels["team"] != "a" ||
		string(got.Data[authv1alpha1.SecretTokenKey]) != token {
		t.Errorf("after the repair: labels %v, token %q; want the token label back, team kept, token %q",
			got.Labels, got.Data[authv1alpha1.SecretTokenKey], token)
	}
}

// A refused write that quotes the token it carried, a token minted by this
// very reconcile, gets it redacted in status and events.
func TestRefusedWriteQuotingTheNewTokenIsRedacted(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("k1")
	w.createToken("billing")
	w.set(func() {
		w.denySecretWrites = apierrors.NewForbidden(corev1.Resource("secrets"), "billing",
			fmt.Errorf("ValidatingAdmissionPolicy 'policy' denied request: data.token token-1 is not allowed"))
	})
	w.reconcile("billing")
	w.expectRequests(1)
	tok := w.expectReady("billing", metav1.ConditionFalse, authv1alpha1.ReasonSecretWriteFailed)
	if msg := tok.Status.LastFailureMessage; strings.Contains(msg, "token-1") || !strings.Contains(msg, "is not allowed") {
		t.Errorf("lastFailureMessage: got %q, want the refusal with the new token redacted", msg)
	}
	for _, e := range w.events() {
		if strings.Contains(e, "token-1") {
			t.Errorf("event quotes the new token: %q", e)
		}
	}
}

// An API key found unreadable while gathering is not read again for the
// refresh: one read, the failure recorded, nothing sent.
func TestUnreadableAPIKeyIsReadOnce(t *testing.T) {
	w := newWorld(t)
	key := w.createAPIKey("k1")
	w.createToken("billing")
	w.reconcile("billing")
	w.expectRequests(1)
	if err := w.store.Delete(w.ctx, key); err != nil {
		t.Fatal(err)
	}
	w.stepTo(w.token("billing").Status.NextRefreshTime.Time)
	reads, _ := w.counters()
	w.reconcile("billing")
	w.expectRequests(1)
	if r, _ := w.counters(); r-reads != 1 {
		t.Errorf("live reads: got %d, want 1 (the API key, once)", r-reads)
	}
	if tok := w.token("billing"); tok.Status.FailedAttempts != 1 {
		t.Errorf("failedAttempts: got %d, want 1", tok.Status.FailedAttempts)
	}
	if e := eventsOf(w.events(), corev1.EventTypeWarning, authv1alpha1.ReasonAPIKeySecretNotFound); len(e) != 1 {
		t.Errorf("APIKeySecretNotFound events: got %q, want one", e)
	}
}
