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

// The token lifecycle: what makes the operator ask OpsNow for a token, what
// must not, and what it does while OpsNow fails. Every story counts the token
// server's requests exactly.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

const (
	// lcAPIKey is distinctive, so that finding it in a message means a leak.
	lcAPIKey       = "opsnow-key-7Qx2Lm9"
	lcAPIKeySecret = "opsnow-api-key"
	lcToken        = "billing"
	// lcQuiet is how long a story watches for requests that must not come.
	lcQuiet = 300 * time.Millisecond
)

// lcReadyToken starts a harness with an API-key Secret and the OpsnowToken
// "billing", waits until it is Ready with its first token in the Secret,
// and checks that exactly one token request was sent.
func lcReadyToken(t *testing.T, mutate ...func(*authv1alpha1.OpsnowToken)) (*harness, *authv1alpha1.OpsnowToken) {
	t.Helper()
	h := newHarness(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager logs:\n%s", h.logs.String())
		}
	})
	h.createAPIKeySecret(lcAPIKeySecret, lcAPIKey)
	h.createToken(lcToken, lcAPIKeySecret, mutate...)
	tok := h.waitReady(lcToken, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	lcWaitSecretToken(h, lcLastIssued(h))
	if got := h.server.Requests(); got != 1 {
		t.Fatalf("token requests for a new OpsnowToken: got %d, want 1", got)
	}
	return h, tok
}

// lcLastIssued returns the token the server issued last.
func lcLastIssued(h *harness) string {
	h.t.Helper()
	issued := h.server.Issued()
	if len(issued) == 0 {
		h.t.Fatal("the token server issued no token")
	}
	return issued[len(issued)-1]
}

// lcWaitSecretToken waits until the target Secret holds token and returns it.
func lcWaitSecretToken(h *harness, token string) *corev1.Secret {
	h.t.Helper()
	var s *corev1.Secret
	h.eventually("the Secret to hold the expected token", func() (bool, string) {
		s = h.getSecret(lcToken)
		if s == nil {
			return false, "Secret missing"
		}
		return string(s.Data[authv1alpha1.SecretTokenKey]) == token, "Secret holds another token"
	})
	return s
}

// lcWaitStatus waits until cond holds for the OpsnowToken, in the API
// server and in the manager's cache, and returns it. The fake clock
// can fire the next retry faster than any real one comes, so a story that
// steps it right away must not leave the manager deciding on older status.
func lcWaitStatus(h *harness, what string, cond func(*authv1alpha1.OpsnowToken) (bool, string)) *authv1alpha1.OpsnowToken {
	h.t.Helper()
	var tok *authv1alpha1.OpsnowToken
	h.eventually(what, func() (bool, string) {
		tok = h.getToken(lcToken)
		return cond(tok)
	})
	h.eventually(what+" in the manager's cache", func() (bool, string) {
		cached := &authv1alpha1.OpsnowToken{}
		if err := h.mgr.GetCache().Get(context.Background(), client.ObjectKeyFromObject(tok), cached); err != nil {
			return false, err.Error()
		}
		return cond(cached)
	})
	return tok
}

// lcWaitFailedAttempts waits until status counts n consecutive failures.
func lcWaitFailedAttempts(h *harness, n int32) *authv1alpha1.OpsnowToken {
	h.t.Helper()
	return lcWaitStatus(h, fmt.Sprintf("failedAttempts %d", n), func(tok *authv1alpha1.OpsnowToken) (bool, string) {
		return tok.Status.FailedAttempts == n, fmt.Sprintf("failedAttempts %d", tok.Status.FailedAttempts)
	})
}

// lcAssertNoSecrets fails if text holds the API key or any issued token.
func lcAssertNoSecrets(h *harness, what, text string) {
	h.t.Helper()
	if strings.Contains(text, lcAPIKey) {
		h.t.Errorf("%s holds the API key: %q", what, text)
	}
	for _, tok := range h.server.Issued() {
		if strings.Contains(text, tok) {
			h.t.Errorf("%s holds an access token", what)
		}
	}
}

// lcAssertSecretUnchanged fails unless the target Secret is exactly want:
// same resourceVersion, same bytes.
func lcAssertSecretUnchanged(h *harness, want *corev1.Secret) {
	h.t.Helper()
	got := h.getSecret(lcToken)
	if got == nil {
		h.t.Fatal("target Secret: got deleted, want kept")
	}
	if got.ResourceVersion != want.ResourceVersion {
		h.t.Errorf("target Secret resourceVersion: got %s, want %s (unchanged)", got.ResourceVersion, want.ResourceVersion)
	}
	for _, k := range []string{authv1alpha1.SecretTokenKey, authv1alpha1.SecretExpiresAtKey} {
		if !bytes.Equal(got.Data[k], want.Data[k]) {
			h.t.Errorf("target Secret %s: got %d bytes that differ, want the old value byte for byte", k, len(got.Data[k]))
		}
	}
}

// --- What causes exactly one exchange -------------------------------------

// Editing the spec (here refreshBefore) asks for a new token once, which is
// then planned with the new refreshBefore.
func TestLifecycleSpecChangeRefreshesOnce(t *testing.T) {
	requireControlPlane(t)
	h, tok := lcReadyToken(t)
	update(t, tok, func(o *authv1alpha1.OpsnowToken) { o.Spec.RefreshBefore = &metav1.Duration{Duration: 30 * time.Minute} })

	h.waitRequests(2)
	lcWaitSecretToken(h, lcLastIssued(h))
	tok = h.waitReady(lcToken, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	h.assertRequestsStay(2, lcQuiet)

	// Refreshed 30 min before expiry, minus at most a tenth of that.
	before := tok.Status.ExpiresAt.Sub(tok.Status.NextRefreshTime.Time)
	if before < 30*time.Minute || before > 33*time.Minute {
		t.Errorf("nextRefreshTime: got %s before expiry, want within [30m, 33m]", before)
	}
}

// Rotating the API key (new data in its Secret) asks once, with the new key.
func TestLifecycleAPIKeyRotationRefreshesOnce(t *testing.T) {
	requireControlPlane(t)
	h, _ := lcReadyToken(t)
	const rotated = "opsnow-key-rotated-8Rt"
	update(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: lcAPIKeySecret}}, func(s *corev1.Secret) {
		s.Data[authv1alpha1.DefaultAPIKeyKey] = []byte(rotated)
	})

	h.waitRequests(2)
	lcWaitSecretToken(h, lcLastIssued(h))
	h.assertRequestsStay(2, lcQuiet)
	if got := h.server.RequestsFor(rotated); got != 1 {
		t.Errorf("token requests with the new key: got %d, want 1", got)
	}
	if got := h.server.RequestsFor(lcAPIKey); got != 1 {
		t.Errorf("token requests with the old key: got %d, want 1 (the first token only)", got)
	}
	h.waitReady(lcToken, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
}

// A deleted or edited target Secret is restored, with a new token, once.
func TestLifecycleSecretRestoredOnce(t *testing.T) {
	requireControlPlane(t)
	tests := []struct {
		name   string
		damage func(h *harness, s *corev1.Secret)
	}{
		{name: "deleted", damage: func(h *harness, s *corev1.Secret) {
			if err := k8s.Delete(context.Background(), s); err != nil {
				h.t.Fatalf("delete target Secret: %v", err)
			}
		}},
		{name: "token edited", damage: func(h *harness, s *corev1.Secret) {
			update(h.t, s, func(s *corev1.Secret) { s.Data[authv1alpha1.SecretTokenKey] = []byte("demo.forged") })
		}},
		{name: "expiresAt edited", damage: func(h *harness, s *corev1.Secret) {
			update(h.t, s, func(s *corev1.Secret) { s.Data[authv1alpha1.SecretExpiresAtKey] = []byte("2099-01-01T00:00:00Z") })
		}},
		{name: "operator annotations removed", damage: func(h *harness, s *corev1.Secret) {
			update(h.t, s, func(s *corev1.Secret) { s.Annotations = nil })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, tok := lcReadyToken(t)
			tt.damage(h, h.getSecret(lcToken))

			h.waitRequests(2)
			s := lcWaitSecretToken(h, lcLastIssued(h))
			h.assertRequestsStay(2, lcQuiet)
			if !metav1.IsControlledBy(s, tok) || s.Labels[authv1alpha1.ManagedByLabel] != authv1alpha1.ManagedByValue {
				t.Errorf("restored Secret: got owners %v labels %v, want controlled by the OpsnowToken and labelled", s.OwnerReferences, s.Labels)
			}
			if got := s.Data[authv1alpha1.SecretExpiresAtKey]; len(got) == 0 || string(got) == "2099-01-01T00:00:00Z" {
				t.Errorf("restored Secret expiresAt: got %q, want the new token's expiry", got)
			}
			h.waitReady(lcToken, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
		})
	}
}

// Each new value of the refresh-requested-at annotation asks exactly once
// and ends up in status.lastHandledRefreshRequest; the same value again, or
// removing the annotation, asks nothing.
func TestLifecycleManualRefresh(t *testing.T) {
	requireControlPlane(t)
	h, tok := lcReadyToken(t)
	request := func(value string) {
		update(t, tok, func(o *authv1alpha1.OpsnowToken) {
			if value == "" {
				delete(o.Annotations, authv1alpha1.RefreshRequestedAtAnnotation)
				return
			}
			if o.Annotations == nil {
				o.Annotations = map[string]string{}
			}
			o.Annotations[authv1alpha1.RefreshRequestedAtAnnotation] = value
		})
	}
	waitHandled := func(value string) {
		lcWaitStatus(h, "lastHandledRefreshRequest "+value, func(o *authv1alpha1.OpsnowToken) (bool, string) {
			return o.Status.LastHandledRefreshRequest == value, fmt.Sprintf("lastHandledRefreshRequest %q", o.Status.LastHandledRefreshRequest)
		})
	}

	request("r1")
	h.waitRequests(2)
	waitHandled("r1")
	lcWaitSecretToken(h, lcLastIssued(h))
	h.assertRequestsStay(2, lcQuiet)

	request("r1") // the same value: no change, no request
	h.assertRequestsStay(2, lcQuiet)

	// The same value next to an unrelated annotation change: still none.
	update(t, tok, func(o *authv1alpha1.OpsnowToken) { o.Annotations["example.com/note"] = "x" })
	h.assertRequestsStay(2, lcQuiet)

	request("")
	h.assertRequestsStay(2, lcQuiet)
	waitHandled("r1")

	request("r1") // back to the value handled last: not a new one
	h.assertRequestsStay(2, lcQuiet)

	request("r2")
	h.waitRequests(3)
	waitHandled("r2")
	lcWaitSecretToken(h, lcLastIssued(h))
	h.assertRequestsStay(3, lcQuiet)
	h.waitReady(lcToken, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
}

// --- What must cause no exchange ------------------------------------------

// Edits that do not concern the token, and the operator's own writes, send
// no token request; the operator repairs the Secret without one.
func TestLifecycleNoExchangeWithoutCause(t *testing.T) {
	requireControlPlane(t)
	h, tok := lcReadyToken(t)
	firstToken := lcLastIssued(h)
	ctx := context.Background()

	// Once the operator's own status and Secret writes have settled,
	// nothing more is written, nothing requested: its writes trigger no loop.
	h.assertRequestsStay(1, lcQuiet)
	settledToken, settledSecret := h.getToken(lcToken).ResourceVersion, h.getSecret(lcToken).ResourceVersion
	h.assertRequestsStay(1, lcQuiet)
	if got := h.getToken(lcToken).ResourceVersion; got != settledToken {
		t.Errorf("OpsnowToken resourceVersion: got %s, want %s: the operator keeps writing status", got, settledToken)
	}
	if got := h.getSecret(lcToken).ResourceVersion; got != settledSecret {
		t.Errorf("Secret resourceVersion: got %s, want %s: the operator keeps writing the Secret", got, settledSecret)
	}

	t.Run("label on the OpsnowToken", func(t *testing.T) {
		update(t, tok, func(o *authv1alpha1.OpsnowToken) { o.Labels = map[string]string{"team": "a"} })
		h.assertRequestsStay(1, lcQuiet)
	})
	t.Run("unrelated annotation on the OpsnowToken", func(t *testing.T) {
		update(t, tok, func(o *authv1alpha1.OpsnowToken) { o.Annotations = map[string]string{"example.com/note": "x"} })
		h.assertRequestsStay(1, lcQuiet)
	})
	t.Run("label on the API-key Secret", func(t *testing.T) {
		key := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: lcAPIKeySecret}}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(key), key); err != nil {
			t.Fatal(err)
		}
		before := key.ResourceVersion
		update(t, key, func(s *corev1.Secret) { s.Labels = map[string]string{"team": "a"} })
		if key.ResourceVersion == before {
			t.Fatal("API-key Secret resourceVersion unchanged by the label; the step proves nothing")
		}
		h.assertRequestsStay(1, lcQuiet)
	})
	t.Run("label on the target Secret", func(t *testing.T) {
		s := h.getSecret(lcToken)
		update(t, s, func(s *corev1.Secret) { s.Labels["team"] = "a" })
		labelled := s.ResourceVersion
		h.assertRequestsStay(1, lcQuiet)
		got := h.getSecret(lcToken)
		if got.ResourceVersion != labelled {
			t.Errorf("Secret resourceVersion: got %s, want %s: the operator rewrote an unchanged token", got.ResourceVersion, labelled)
		}
		if got.Labels["team"] != "a" {
			t.Errorf("foreign label on the Secret: got %q, want a (kept)", got.Labels["team"])
		}
	})
	t.Run("no-op update of the target Secret", func(t *testing.T) {
		s := h.getSecret(lcToken)
		if err := k8s.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		h.assertRequestsStay(1, lcQuiet)
	})
	t.Run("extra data key in the target Secret", func(t *testing.T) {
		update(t, h.getSecret(lcToken), func(s *corev1.Secret) { s.Data["extra"] = []byte("x") })
		h.eventually("the extra key to be removed", func() (bool, string) {
			s := h.getSecret(lcToken)
			_, ok := s.Data["extra"]
			return !ok && len(s.Data) == 2, fmt.Sprintf("%d data keys", len(s.Data))
		})
		h.assertRequestsStay(1, lcQuiet)
	})

	if got := string(h.getSecret(lcToken).Data[authv1alpha1.SecretTokenKey]); got != firstToken {
		t.Error("Secret token: got another token, want the first one still")
	}
	h.waitReady(lcToken, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
}

// --- suspend --------------------------------------------------------------

// A suspended token is not refreshed, neither at its refresh time nor after
// it expired; its Secret is kept. On resume a token that expired or is due is
// refreshed once; one still valid and not due is kept without a request, as
// the refresh rules would have kept it had there been no suspension.
func TestLifecycleSuspend(t *testing.T) {
	requireControlPlane(t)
	tests := []struct {
		name string
		// advance moves the clock while suspended, from the first token's status.
		advance func(h *harness, tok *authv1alpha1.OpsnowToken)
		// requests is the count after resuming.
		requests int64
	}{
		{name: "resume while valid and not due", advance: func(h *harness, _ *authv1alpha1.OpsnowToken) { h.step(5 * time.Minute) }, requests: 1},
		{name: "resume when due", advance: func(h *harness, tok *authv1alpha1.OpsnowToken) {
			h.stepTo(tok.Status.NextRefreshTime.Add(time.Minute))
		}, requests: 2},
		{name: "resume after expiry", advance: func(h *harness, tok *authv1alpha1.OpsnowToken) {
			h.stepTo(tok.Status.NextRefreshTime.Add(time.Second))
			h.assertRequestsStay(1, lcQuiet)
			h.stepTo(tok.Status.ExpiresAt.Add(time.Hour))
		}, requests: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, tok := lcReadyToken(t)
			first := h.getSecret(lcToken)
			planned := tok.DeepCopy() // update re-reads tok

			update(t, tok, func(o *authv1alpha1.OpsnowToken) { o.Spec.Suspend = true })
			suspended := h.waitReady(lcToken, metav1.ConditionFalse, authv1alpha1.ReasonSuspended)
			if suspended.Status.NextRefreshTime != nil {
				t.Errorf("nextRefreshTime while suspended: got %v, want none", suspended.Status.NextRefreshTime)
			}
			h.waitEvent(lcToken, corev1.EventTypeNormal, authv1alpha1.ReasonSuspended)
			tt.advance(h, planned)
			h.assertRequestsStay(1, lcQuiet)
			lcAssertSecretUnchanged(h, first)

			update(t, tok, func(o *authv1alpha1.OpsnowToken) { o.Spec.Suspend = false })
			resumed := h.waitReady(lcToken, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
			h.assertRequestsStay(tt.requests, lcQuiet)
			if tt.requests == 1 {
				lcAssertSecretUnchanged(h, first)
				if !resumed.Status.NextRefreshTime.Equal(planned.Status.NextRefreshTime) {
					t.Errorf("nextRefreshTime after resume: got %v, want the plan before suspension %v",
						resumed.Status.NextRefreshTime, planned.Status.NextRefreshTime)
				}
				return
			}
			lcWaitSecretToken(h, lcLastIssued(h))
			resumed = lcWaitStatus(h, "the new expiry in status", func(o *authv1alpha1.OpsnowToken) (bool, string) {
				return o.Status.ExpiresAt.After(h.clock.Now()), fmt.Sprintf("expiresAt %v, now %v", o.Status.ExpiresAt, h.clock.Now())
			})
			if !resumed.Status.NextRefreshTime.After(h.clock.Now()) {
				t.Errorf("nextRefreshTime after resume: got %v, want after now %v", resumed.Status.NextRefreshTime, h.clock.Now())
			}
		})
	}
}

// --- OpsNow failing -------------------------------------------------------

// A failed refresh keeps the old token byte for byte, keeps Ready=True while
// it is valid, counts the failure in status without the key or a token,
// emits a Warning, and recovers at the retry time.
func TestLifecycleRefreshFailureAndRecovery(t *testing.T) {
	requireControlPlane(t)
	tests := []struct {
		name   string
		fault  tokenserver.Fault
		reason string
		// minRetry is the least wait before the retry.
		minRetry time.Duration
	}{
		{name: "500", fault: tokenserver.Fault{Status: 500}, reason: authv1alpha1.ReasonUpstreamUnavailable, minRetry: 4 * time.Second},
		{name: "429 with Retry-After", fault: tokenserver.Fault{Status: 429, RetryAfter: "120"},
			reason: authv1alpha1.ReasonUpstreamUnavailable, minRetry: 120 * time.Second},
		{name: "401", fault: tokenserver.Fault{Status: 401}, reason: authv1alpha1.ReasonUnauthorized, minRetry: 4 * time.Minute},
		{name: "timeout", fault: tokenserver.Fault{Delay: 3 * time.Second}, reason: authv1alpha1.ReasonUpstreamUnavailable, minRetry: 4 * time.Second},
		{name: "malformed JSON", fault: tokenserver.Fault{Body: "{not json"}, reason: authv1alpha1.ReasonInvalidResponse, minRetry: 4 * time.Second},
		{name: "oversized body", fault: tokenserver.Fault{Size: 2 << 20}, reason: authv1alpha1.ReasonInvalidResponse, minRetry: 4 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, tok := lcReadyToken(t)
			old := h.getSecret(lcToken)

			h.server.SetFault(&tt.fault)
			h.stepTo(tok.Status.NextRefreshTime.Time)
			h.waitRequests(2)
			failed := lcWaitFailedAttempts(h, 1)
			now := h.clock.Now()

			if c := readyCondition(failed); c.Status != metav1.ConditionTrue {
				t.Errorf("Ready while the old token is valid: got %s/%s, want True", c.Status, c.Reason)
			}
			if failed.Status.LastFailureMessage == "" {
				t.Error("lastFailureMessage: got empty, want the failure")
			}
			lcAssertNoSecrets(h, "lastFailureMessage", failed.Status.LastFailureMessage)
			lcAssertNoSecrets(h, "Ready message", readyCondition(failed).Message)
			if !failed.Status.ExpiresAt.Equal(tok.Status.ExpiresAt) {
				t.Errorf("status.expiresAt: got %v, want the old token's %v", failed.Status.ExpiresAt, tok.Status.ExpiresAt)
			}
			retryAt := failed.Status.NextRefreshTime.Time
			if wait := retryAt.Sub(now); wait < tt.minRetry || retryAt.After(tok.Status.ExpiresAt.Time) {
				t.Errorf("retry: got in %s at %v, want at least %s and not after the old token's expiry %v",
					wait, retryAt, tt.minRetry, tok.Status.ExpiresAt)
			}
			e := h.waitEvent(lcToken, corev1.EventTypeWarning, tt.reason)
			lcAssertNoSecrets(h, "event", e.Note)

			// Nothing more until the retry time.
			h.stepTo(retryAt.Add(-time.Second))
			h.assertRequestsStay(2, lcQuiet)
			lcAssertSecretUnchanged(h, old)

			h.server.SetFault(nil)
			h.stepTo(retryAt)
			h.waitRequests(3)
			lcWaitSecretToken(h, lcLastIssued(h))
			recovered := lcWaitFailedAttempts(h, 0)
			if recovered.Status.LastFailureMessage != "" {
				t.Errorf("lastFailureMessage after recovery: got %q, want empty", recovered.Status.LastFailureMessage)
			}
			if !recovered.Status.ExpiresAt.After(tok.Status.ExpiresAt.Time) {
				t.Errorf("status.expiresAt after recovery: got %v, want after the old %v", recovered.Status.ExpiresAt, tok.Status.ExpiresAt)
			}
			h.waitReady(lcToken, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
			h.assertRequestsStay(3, lcQuiet)
		})
	}
}

// While OpsNow keeps failing past the old token's expiry, Ready turns False
// with the failure's reason, and the Secret still holds the old token: it
// is never emptied or deleted. Recovery writes a new token.
func TestLifecycleFailurePastExpiryKeepsSecret(t *testing.T) {
	requireControlPlane(t)
	h, tok := lcReadyToken(t)
	old := h.getSecret(lcToken)

	h.server.SetFault(&tokenserver.Fault{Status: 503})
	h.stepTo(tok.Status.NextRefreshTime.Time)
	h.waitRequests(2)
	lcWaitFailedAttempts(h, 1)

	h.stepTo(tok.Status.ExpiresAt.Add(time.Second))
	h.waitRequests(3)
	expired := h.waitReady(lcToken, metav1.ConditionFalse, authv1alpha1.ReasonUpstreamUnavailable)
	if expired.Status.FailedAttempts != 2 {
		t.Errorf("failedAttempts: got %d, want 2", expired.Status.FailedAttempts)
	}
	lcAssertNoSecrets(h, "Ready message", readyCondition(expired).Message)
	h.assertRequestsStay(3, lcQuiet)
	lcAssertSecretUnchanged(h, old)

	h.server.SetFault(nil)
	h.stepTo(expired.Status.NextRefreshTime.Time)
	h.waitRequests(4)
	lcWaitSecretToken(h, lcLastIssued(h))
	h.waitReady(lcToken, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	lcWaitFailedAttempts(h, 0)
	h.assertRequestsStay(4, lcQuiet)
}

// Consecutive failures wait about 5 s, 10 s, 20 s, 40 s (jitter takes up to
// a fifth), and a retry is never planned after the old token's expiry.
func TestLifecycleBackoffGrowsUntilExpiry(t *testing.T) {
	requireControlPlane(t)
	h, tok := lcReadyToken(t)
	expiresAt := tok.Status.ExpiresAt.Time
	h.server.SetFault(&tokenserver.Fault{Status: 500})

	next := tok.Status.NextRefreshTime.Time
	for i, base := range []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second} {
		h.stepTo(next)
		h.waitRequests(int64(i) + 2)
		failed := lcWaitFailedAttempts(h, int32(i)+1)
		now := h.clock.Now()
		next = failed.Status.NextRefreshTime.Time
		low := time.Duration(float64(base) * 0.8)
		if gap := next.Sub(now); gap < low || gap > base {
			t.Errorf("failure %d: retry in %s, want within [%s, %s]", i+1, gap, low, base)
		}
	}

	// Three seconds before expiry the next backoff (80 s) would outlive the
	// old token: the retry is planned at its expiry.
	h.stepTo(expiresAt.Add(-3 * time.Second))
	h.waitRequests(6)
	failed := lcWaitFailedAttempts(h, 5)
	if got := failed.Status.NextRefreshTime.Time; !got.Equal(expiresAt) {
		t.Errorf("retry after failure 5: got %v, want the old token's expiry %v", got, expiresAt)
	}
	if c := readyCondition(failed); c.Status != metav1.ConditionTrue {
		t.Errorf("Ready before expiry: got %s/%s, want True", c.Status, c.Reason)
	}

	h.stepTo(expiresAt)
	h.waitRequests(7)
	failed = h.waitReady(lcToken, metav1.ConditionFalse, authv1alpha1.ReasonUpstreamUnavailable)
	if failed.Status.FailedAttempts != 6 {
		t.Errorf("failedAttempts: got %d, want 6", failed.Status.FailedAttempts)
	}
	h.assertRequestsStay(7, lcQuiet)
	if h.getSecret(lcToken) == nil {
		t.Error("target Secret deleted after the token expired")
	}
}

// --- refreshBefore not shorter than the lifetime --------------------------

// refreshBefore: 2h for a 1 h token falls back to two thirds of the
// lifetime with a Warning, instead of refreshing in a loop.
func TestLifecycleRefreshBeforeIgnored(t *testing.T) {
	requireControlPlane(t)
	h, tok := lcReadyToken(t, func(o *authv1alpha1.OpsnowToken) { o.Spec.RefreshBefore = &metav1.Duration{Duration: 2 * time.Hour} })
	issuedAt := tok.Status.LastRefreshTime.Time

	e := h.waitEvent(lcToken, corev1.EventTypeWarning, "RefreshBeforeIgnored")
	if !strings.Contains(e.Note, "2h0m0s") {
		t.Errorf("event note %q does not name refreshBefore", e.Note)
	}
	if at := tok.Status.NextRefreshTime.Sub(issuedAt); at < 38*time.Minute || at > 40*time.Minute {
		t.Errorf("nextRefreshTime: got %s after issue, want within [38m, 40m]", at)
	}
	h.assertRequestsStay(1, lcQuiet)
	h.stepTo(tok.Status.NextRefreshTime.Time)
	h.waitRequests(2)
	h.assertRequestsStay(2, lcQuiet)
}

// --- metrics --------------------------------------------------------------

// lcMetric returns the value of the series name with exactly labels in the
// controller-runtime registry: a gauge's or counter's value, a histogram's
// sample count. ok is false when the series does not exist.
func lcMetric(t *testing.T, name string, labels map[string]string) (value float64, ok bool) {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
					continue series
				}
			}
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// The token's metrics follow its status, count successes and failures, and
// disappear with the OpsnowToken.
func TestLifecycleMetrics(t *testing.T) {
	requireControlPlane(t)
	exchangesBefore, _ := lcMetric(t, "opsnow_token_exchange_duration_seconds", nil)
	h, tok := lcReadyToken(t)
	id := map[string]string{"namespace": h.ns, "name": lcToken}
	withResult := func(result string) map[string]string {
		return map[string]string{"namespace": h.ns, "name": lcToken, "result": result}
	}
	expect := func(name string, labels map[string]string, want float64) {
		t.Helper()
		h.eventually(fmt.Sprintf("%s %v = %v", name, labels, want), func() (bool, string) {
			got, ok := lcMetric(t, name, labels)
			return ok && got == want, fmt.Sprintf("got %v (present %t)", got, ok)
		})
	}

	expect("opsnow_token_expiry_timestamp_seconds", id, float64(tok.Status.ExpiresAt.Unix()))
	expect("opsnow_token_next_refresh_timestamp_seconds", id, float64(tok.Status.NextRefreshTime.Unix()))
	expect("opsnow_token_refresh_total", withResult("success"), 1)
	if n, _ := lcMetric(t, "opsnow_token_exchange_duration_seconds", nil); n <= exchangesBefore {
		t.Errorf("exchange duration observations: got %v, want more than %v", n, exchangesBefore)
	}

	h.server.SetFault(&tokenserver.Fault{Status: 500})
	h.stepTo(tok.Status.NextRefreshTime.Time)
	h.waitRequests(2)
	failed := lcWaitFailedAttempts(h, 1)
	expect("opsnow_token_refresh_total", withResult("failure"), 1)
	expect("opsnow_token_refresh_total", withResult("success"), 1)
	expect("opsnow_token_next_refresh_timestamp_seconds", id, float64(failed.Status.NextRefreshTime.Unix()))
	expect("opsnow_token_expiry_timestamp_seconds", id, float64(tok.Status.ExpiresAt.Unix()))

	if err := k8s.Delete(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	h.eventually("the token's series to disappear", func() (bool, string) {
		var present []string
		for _, s := range []struct {
			name   string
			labels map[string]string
		}{
			{"opsnow_token_expiry_timestamp_seconds", id},
			{"opsnow_token_next_refresh_timestamp_seconds", id},
			{"opsnow_token_refresh_total", withResult("success")},
			{"opsnow_token_refresh_total", withResult("failure")},
		} {
			if _, ok := lcMetric(t, s.name, s.labels); ok {
				present = append(present, s.name+fmt.Sprint(s.labels))
			}
		}
		return len(present) == 0, "still present: " + strings.Join(present, ", ")
	})
}

// --- cache discipline -----------------------------------------------------

// The manager holds no Secret's data, whatever its labels: Secrets are
// watched by metadata only, and of that it keeps only names and versions,
// plus the operator's own labels and annotations of the Secrets an
// OpsnowToken controls. A look-alike labelled as the operator's keeps
// nothing more than an unrelated Secret.
func TestLifecycleCacheHoldsNoSecretData(t *testing.T) {
	requireControlPlane(t)
	h, _ := lcReadyToken(t)
	ctx := context.Background()
	for i := range 5 {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: fmt.Sprintf("unrelated-%d", i),
				Labels: map[string]string{"app.kubernetes.io/managed-by": "someone-else"}},
			Data: map[string][]byte{"blob": bytes.Repeat([]byte{'x'}, 64<<10)},
		}
		if err := k8s.Create(ctx, s); err != nil {
			t.Fatalf("create unrelated Secret: %v", err)
		}
	}
	spoof := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "look-alike",
			Labels: map[string]string{authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue,
				authv1alpha1.TokenLabel: "billing"},
			Annotations: map[string]string{"auth.opsnow.io/expires-at": "2030-01-01T00:00:00Z",
				"note": strings.Repeat("y", 64<<10)}},
		Data: map[string][]byte{"blob": bytes.Repeat([]byte{'x'}, 256<<10)},
	}
	if err := k8s.Create(ctx, spoof); err != nil {
		t.Fatalf("create look-alike Secret: %v", err)
	}
	// A Secret the manager writes afterwards is seen: the cache is live.
	h.createToken("second", lcAPIKeySecret)
	h.waitReady("second", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	if got := h.server.Requests(); got != 2 {
		t.Errorf("token requests: got %d, want 2 (one per OpsnowToken)", got)
	}

	// No typed Secret informer exists, and reading one through the
	// manager's cache fails rather than starting one.
	err := h.mgr.GetCache().Get(ctx, client.ObjectKeyFromObject(spoof), &corev1.Secret{})
	var notCached *cache.ErrResourceNotCached
	if !errors.As(err, &notCached) {
		t.Errorf("a Secret read through the manager's cache: got %v, want ErrResourceNotCached", err)
	}

	metadata := h.reconciler.SecretMetadata()
	get := func(name string) *metav1.PartialObjectMetadata {
		t.Helper()
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		h.eventually("Secret "+name+" in the metadata cache", func() (bool, string) {
			err := metadata.Get(ctx, client.ObjectKey{Namespace: h.ns, Name: name}, m)
			return err == nil, fmt.Sprint(err)
		})
		return m
	}
	for _, name := range []string{"look-alike", "unrelated-0", lcAPIKeySecret} {
		if m := get(name); m.Labels != nil || m.Annotations != nil || m.OwnerReferences != nil || m.ManagedFields != nil {
			t.Errorf("Secret %s: cached with metadata beyond its identity: %+v", name, m.ObjectMeta)
		}
	}
	for _, name := range []string{"billing", "second"} {
		m := get(name)
		if m.Annotations["auth.opsnow.io/expires-at"] == "" || m.Labels[authv1alpha1.ManagedByLabel] == "" ||
			metav1.GetControllerOf(m) == nil {
			t.Errorf("target Secret %s: cached without the operator's labels, annotations or controller: %+v", name, m.ObjectMeta)
		}
	}
}

// A manual refresh that fails is retried at the backoff time until an
// exchange succeeds: the request is not dropped, nor its failure forgotten,
// because it was tried once.
func TestLifecycleFailedManualRefreshRetried(t *testing.T) {
	requireControlPlane(t)
	h, tok := lcReadyToken(t)
	first := h.getSecret(lcToken)
	h.server.SetFault(&tokenserver.Fault{Status: 500})
	update(t, tok, func(o *authv1alpha1.OpsnowToken) {
		o.Annotations = map[string]string{authv1alpha1.RefreshRequestedAtAnnotation: "r1"}
	})
	h.waitRequests(2)
	failed := lcWaitFailedAttempts(h, 1)
	if failed.Status.LastHandledRefreshRequest == "r1" {
		t.Errorf("lastHandledRefreshRequest after the failed attempt: got r1, want it pending until a token answers it")
	}
	if c := readyCondition(failed); c.Status != metav1.ConditionTrue {
		t.Errorf("Ready while the old token is valid: got %s/%s, want True", c.Status, c.Reason)
	}
	h.assertRequestsStay(2, lcQuiet)

	h.stepTo(failed.Status.NextRefreshTime.Time)
	h.waitRequests(3)
	failed = lcWaitFailedAttempts(h, 2)
	lcAssertSecretUnchanged(h, first)

	h.server.SetFault(nil)
	h.stepTo(failed.Status.NextRefreshTime.Time)
	h.waitRequests(4)
	lcWaitSecretToken(h, lcLastIssued(h))
	lcWaitFailedAttempts(h, 0)
	h.assertRequestsStay(4, lcQuiet)
	if got := h.getToken(lcToken).Status.LastHandledRefreshRequest; got != "r1" {
		t.Errorf("lastHandledRefreshRequest: got %q, want r1", got)
	}
}

// A rotated key whose first exchange fails is retried with the new key at
// the backoff time; meanwhile the token in the Secret, issued for the old
// key, is kept but not reported Ready.
func TestLifecycleAPIKeyRotationRetriedWhileFailing(t *testing.T) {
	requireControlPlane(t)
	h, _ := lcReadyToken(t)
	first := h.getSecret(lcToken)
	const rotated = "opsnow-key-rotated-8Rt"
	h.server.SetFault(&tokenserver.Fault{Status: 500})
	update(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: lcAPIKeySecret}}, func(s *corev1.Secret) {
		s.Data[authv1alpha1.DefaultAPIKeyKey] = []byte(rotated)
	})
	h.waitRequests(2)
	failed := lcWaitFailedAttempts(h, 1)
	if c := readyCondition(failed); c.Status != metav1.ConditionFalse || c.Reason != authv1alpha1.ReasonUpstreamUnavailable {
		t.Errorf("Ready with a token for the old key: got %s/%s, want False/%s", c.Status, c.Reason, authv1alpha1.ReasonUpstreamUnavailable)
	}
	h.assertRequestsStay(2, lcQuiet)

	h.stepTo(failed.Status.NextRefreshTime.Time)
	h.waitRequests(3)
	failed = lcWaitFailedAttempts(h, 2)
	lcAssertSecretUnchanged(h, first)

	h.server.SetFault(nil)
	h.stepTo(failed.Status.NextRefreshTime.Time)
	h.waitRequests(4)
	lcWaitSecretToken(h, lcLastIssued(h))
	h.waitReady(lcToken, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	lcWaitFailedAttempts(h, 0)
	h.assertRequestsStay(4, lcQuiet)
	if got := h.server.RequestsFor(rotated); got != 3 {
		t.Errorf("token requests with the new key: got %d, want 3", got)
	}
}
