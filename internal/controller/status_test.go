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

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/opsnow"
)

// sumReady gives the token the status a reconcile leaves while its held
// token is good: Ready=True, the held token's times, no failure.
func sumReady(in *inputs) {
	st := &in.Token.Status
	st.ObservedGeneration = in.Token.Generation
	st.SecretName = in.SecretName
	st.ExpiresAt = &metav1.Time{Time: in.Held.ExpiresAt}
	st.LastRefreshTime = &metav1.Time{Time: in.Held.IssuedAt}
	st.NextRefreshTime = &metav1.Time{Time: in.schedule().RefreshAt}
	st.Conditions = []metav1.Condition{{
		Type: authv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: authv1alpha1.ReasonTokenValid,
		Message: "Secret billing holds a token", ObservedGeneration: in.Token.Generation,
		LastTransitionTime: metav1.NewTime(in.Held.IssuedAt),
	}}
}

// sumFailing gives the token the status of failed attempts without a token:
// Ready=False, Reconciling=True.
func sumFailing(attempts int32, reason string) func(*inputs) {
	return func(in *inputs) {
		st := &in.Token.Status
		st.ObservedGeneration = in.Token.Generation
		st.SecretName = in.SecretName
		st.FailedAttempts = attempts
		st.LastFailureMessage = "upstream unavailable: HTTP 503"
		st.NextRefreshTime = &metav1.Time{Time: in.Now.Add(-time.Second)}
		stamp := metav1.NewTime(decideT0)
		st.Conditions = []metav1.Condition{
			{Type: authv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason,
				Message: st.LastFailureMessage, ObservedGeneration: in.Token.Generation, LastTransitionTime: stamp},
			{Type: authv1alpha1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: reason,
				Message: "Retrying", ObservedGeneration: in.Token.Generation, LastTransitionTime: stamp},
		}
	}
}

// sumStalled adds a Stalled condition, as a stall leaves it.
func sumStalled(in *inputs) {
	apimeta.SetStatusCondition(&in.Token.Status.Conditions, metav1.Condition{
		Type: authv1alpha1.ConditionStalled, Status: metav1.ConditionTrue, Reason: authv1alpha1.ReasonSecretConflict,
		Message: "conflict", LastTransitionTime: metav1.NewTime(decideT0),
	})
}

// sumNew is a token just created: nothing in status, no Secret yet.
func sumNew(in *inputs) {
	in.Token.Status = authv1alpha1.OpsnowTokenStatus{}
	decSecretMissing(in)
}

// minted is a token issued at issuedAt for in's current inputs.
func minted(in inputs, issuedAt time.Time) *heldToken {
	return &heldToken{
		Token:          "new-token",
		IssuedAt:       issuedAt,
		ExpiresAt:      issuedAt.Add(time.Hour),
		SpecHash:       in.SpecHash,
		APIKeyHash:     saltedHash("k1"),
		APIKeyVersion:  in.APIKeyVersion,
		RefreshRequest: in.refreshRequest(),
	}
}

func cond(st authv1alpha1.OpsnowTokenStatus, condType string) *metav1.Condition {
	return apimeta.FindStatusCondition(st.Conditions, condType)
}

func wantCond(t *testing.T, st authv1alpha1.OpsnowTokenStatus, condType string, status metav1.ConditionStatus, reason string) *metav1.Condition {
	t.Helper()
	c := cond(st, condType)
	if c == nil {
		t.Fatalf("%s: got none, want %s/%s (conditions %+v)", condType, status, reason, st.Conditions)
	}
	if c.Status != status || c.Reason != reason {
		t.Errorf("%s: got %s/%s (%q), want %s/%s", condType, c.Status, c.Reason, c.Message, status, reason)
	}
	return c
}

func wantNoCond(t *testing.T, st authv1alpha1.OpsnowTokenStatus, condTypes ...string) {
	t.Helper()
	for _, ct := range condTypes {
		if c := cond(st, ct); c != nil {
			t.Errorf("%s: got %s/%s, want none", ct, c.Status, c.Reason)
		}
	}
}

func wantTime(t *testing.T, what string, got *metav1.Time, want time.Time) {
	t.Helper()
	switch {
	case want.IsZero() && got != nil:
		t.Errorf("%s: got %s, want none", what, got.Time)
	case !want.IsZero() && got == nil:
		t.Errorf("%s: got none, want %s", what, want)
	case !want.IsZero() && !got.Time.Equal(want):
		t.Errorf("%s: got %s, want %s", what, got.Time, want)
	}
}

func wantWake(t *testing.T, s summary, want time.Time) {
	t.Helper()
	if !s.WakeAt.Equal(want) {
		t.Errorf("WakeAt: got %s, want %s", s.WakeAt, want)
	}
}

func wantFailure(t *testing.T, s summary, reason string) {
	t.Helper()
	if s.Failure == nil {
		t.Fatalf("Failure: got none, want %s", reason)
	}
	if s.Failure.Reason != reason {
		t.Errorf("Failure reason: got %s (%q), want %s", s.Failure.Reason, s.Failure.Message, reason)
	}
	if s.Failure.Message != s.Status.LastFailureMessage {
		t.Errorf("lastFailureMessage: got %q, want the failure's message %q", s.Status.LastFailureMessage, s.Failure.Message)
	}
}

var (
	errUnavailable = &opsnow.Error{Kind: opsnow.ErrUnavailable, StatusCode: 503, Detail: "maintenance"}
	errRejected    = &opsnow.Error{Kind: opsnow.ErrUnauthorized, StatusCode: 401, Detail: "invalid API key"}
	errNoToken     = &opsnow.Error{Kind: opsnow.ErrInvalidResponse, StatusCode: 200, Detail: "response holds no access token"}
	errSlowDown    = &opsnow.Error{Kind: opsnow.ErrUnavailable, StatusCode: 429, RetryAfter: 2 * time.Minute}
	errLeaky       = &refreshError{Reason: authv1alpha1.ReasonSecretWriteFailed, Message: "leaked pending-SECRET-2"}
)

func TestSummarize(t *testing.T) {
	refreshAt := decideRefreshAt(t)
	expires := decideT0.Add(time.Hour)
	// A refresh due, 45 minutes into the held token's hour, whose request
	// took 20 seconds.
	dueAt, doneAt := decideT0.Add(45*time.Minute), decideT0.Add(45*time.Minute+20*time.Second)

	cases := []struct {
		name   string
		mutate []func(*inputs)
		plan   plan
		// out.Now defaults to in.Now.
		out   func(in inputs) outcome
		check func(t *testing.T, in inputs, s summary)
	}{
		{
			name:   "new token after failures: Ready, schedule, counters reset",
			mutate: []func(*inputs){decSecretMissing, sumFailing(3, authv1alpha1.ReasonUpstreamUnavailable), sumStalled, decSpecChanged},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out:    func(in inputs) outcome { return outcome{Now: in.Now.Add(2 * time.Second), Issued: minted(in, in.Now)} },
			check: func(t *testing.T, in inputs, s summary) {
				st := s.Status
				c := wantCond(t, st, authv1alpha1.ConditionReady, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
				if c.ObservedGeneration != 2 || strings.Contains(c.Message, "failed") {
					t.Errorf("Ready: got observedGeneration %d message %q, want 2 and no failure", c.ObservedGeneration, c.Message)
				}
				wantNoCond(t, st, authv1alpha1.ConditionReconciling, authv1alpha1.ConditionStalled)
				if st.ObservedGeneration != 2 || st.FailedAttempts != 0 || st.LastFailureMessage != "" {
					t.Errorf("status: got observedGeneration %d failedAttempts %d lastFailureMessage %q, want 2, 0 and none",
						st.ObservedGeneration, st.FailedAttempts, st.LastFailureMessage)
				}
				issued := in.Now
				want := refreshTime(issued, issued.Add(time.Hour), 10*time.Minute, "uid-billing"+issued.Add(time.Hour).String()).RefreshAt
				wantTime(t, "nextRefreshTime", st.NextRefreshTime, want)
				wantTime(t, "expiresAt", st.ExpiresAt, issued.Add(time.Hour))
				wantTime(t, "lastRefreshTime", st.LastRefreshTime, issued)
				wantWake(t, s, want)
				if !s.Schedule.RefreshAt.Equal(want) || s.Failure != nil {
					t.Errorf("summary: got schedule %s failure %v, want %s and none", s.Schedule.RefreshAt, s.Failure, want)
				}
				if st.SecretName != "billing" {
					t.Errorf("secretName: got %q, want billing", st.SecretName)
				}
			},
		},
		{
			name:   "held token kept: Ready, nextRefreshTime is its refresh time",
			mutate: []func(*inputs){func(in *inputs) { in.Token.Status = authv1alpha1.OpsnowTokenStatus{} }},
			plan:   plan{Action: actKeep, At: refreshAt},
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
				wantTime(t, "nextRefreshTime", s.Status.NextRefreshTime, refreshAt)
				wantTime(t, "expiresAt", s.Status.ExpiresAt, expires)
				wantWake(t, s, refreshAt)
				if s.Status.ObservedGeneration != 1 {
					t.Errorf("observedGeneration: got %d, want 1", s.Status.ObservedGeneration)
				}
			},
		},
		{
			name:   "held token kept: a second reconcile changes nothing",
			mutate: []func(*inputs){sumReady},
			plan:   plan{Action: actKeep, At: refreshAt},
			check: func(t *testing.T, in inputs, s summary) {
				// The Ready message is rewritten; everything else stays.
				got, want := s.Status.DeepCopy(), in.Token.Status.DeepCopy()
				got.Conditions[0].Message, want.Conditions[0].Message = "", ""
				if !apiequality.Semantic.DeepEqual(got, want) {
					t.Errorf("status: got %+v, want %+v", got, want)
				}
			},
		},
		{
			name:   "failure while the held token is valid: Ready stays, backoff from out.Now",
			mutate: []func(*inputs){sumReady, decAt(45 * time.Minute)},
			plan:   plan{Action: actRefresh, Cause: causeScheduled},
			out:    func(inputs) outcome { return outcome{Now: doneAt, Err: errUnavailable} },
			check: func(t *testing.T, in inputs, s summary) {
				st := s.Status
				c := wantCond(t, st, authv1alpha1.ConditionReady, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
				if !strings.Contains(c.Message, "the last 1 refresh attempt(s) failed") {
					t.Errorf("Ready message: got %q, want it to tell of the failed attempt", c.Message)
				}
				wantNoCond(t, st, authv1alpha1.ConditionReconciling, authv1alpha1.ConditionStalled)
				wantFailure(t, s, authv1alpha1.ReasonUpstreamUnavailable)
				if st.FailedAttempts != 1 || st.LastFailureMessage != errUnavailable.Error() {
					t.Errorf("status: got failedAttempts %d lastFailureMessage %q, want 1 and %q",
						st.FailedAttempts, st.LastFailureMessage, errUnavailable.Error())
				}
				// The first retry is 5 s after the attempt ended, not after it began.
				wantTime(t, "nextRefreshTime", st.NextRefreshTime, doneAt.Add(initialBackoff))
				wantWake(t, s, doneAt.Add(initialBackoff))
				if !dueAt.Add(initialBackoff).Before(st.NextRefreshTime.Time) {
					t.Errorf("nextRefreshTime %s: planned from in.Now", st.NextRefreshTime.Time)
				}
			},
		},
		{
			name: "failure while the held token is valid: the retry lands before expiry",
			mutate: []func(*inputs){sumReady, decAt(58 * time.Minute),
				func(in *inputs) { in.Token.Status.FailedAttempts = 7 }},
			plan: plan{Action: actRefresh, Cause: causeScheduled},
			out: func(in inputs) outcome {
				return outcome{Now: in.Now.Add(30 * time.Second), Err: errUnavailable, Jitter: 0.5}
			},
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
				if s.Status.FailedAttempts != 8 {
					t.Errorf("failedAttempts: got %d, want 8", s.Status.FailedAttempts)
				}
				// 4.5 min of backoff would pass expiry; the last chance is 30 s before it.
				wantTime(t, "nextRefreshTime", s.Status.NextRefreshTime, expires.Add(-finalAttemptLead))
			},
		},
		{
			name:   "failure that outlasted the held token: Ready=False, backoff not capped",
			mutate: []func(*inputs){sumReady, decAt(59*time.Minute + 50*time.Second)},
			plan:   plan{Action: actRefresh, Cause: causeScheduled},
			out:    func(inputs) outcome { return outcome{Now: expires.Add(10 * time.Second), Err: errUnavailable} },
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonUpstreamUnavailable)
				wantCond(t, s.Status, authv1alpha1.ConditionReconciling, metav1.ConditionTrue, authv1alpha1.ReasonUpstreamUnavailable)
				wantTime(t, "nextRefreshTime", s.Status.NextRefreshTime, expires.Add(15*time.Second))
			},
		},
		{
			name:   "failure without a token: Ready=False with the reason, Reconciling=True",
			mutate: []func(*inputs){sumNew, sumStalled},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out:    func(in inputs) outcome { return outcome{Now: in.Now.Add(time.Second), Err: errUnavailable} },
			check: func(t *testing.T, in inputs, s summary) {
				st := s.Status
				next := in.Now.Add(time.Second + initialBackoff)
				ready := wantCond(t, st, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonUpstreamUnavailable)
				if ready.Message != errUnavailable.Error() {
					t.Errorf("Ready message: got %q, want %q", ready.Message, errUnavailable.Error())
				}
				rec := wantCond(t, st, authv1alpha1.ConditionReconciling, metav1.ConditionTrue, authv1alpha1.ReasonUpstreamUnavailable)
				if want := "Retrying at " + next.Format(time.RFC3339); rec.Message != want {
					t.Errorf("Reconciling message: got %q, want %q", rec.Message, want)
				}
				wantNoCond(t, st, authv1alpha1.ConditionStalled)
				wantFailure(t, s, authv1alpha1.ReasonUpstreamUnavailable)
				if st.ObservedGeneration != 1 || st.FailedAttempts != 1 {
					t.Errorf("status: got observedGeneration %d failedAttempts %d, want 1 and 1", st.ObservedGeneration, st.FailedAttempts)
				}
				wantTime(t, "nextRefreshTime", st.NextRefreshTime, next)
				wantTime(t, "expiresAt", st.ExpiresAt, time.Time{})
				wantWake(t, s, next)
			},
		},
		{
			name:   "failures count up",
			mutate: []func(*inputs){decSecretMissing, sumFailing(3, authv1alpha1.ReasonUpstreamUnavailable)},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, Err: errUnavailable} },
			check: func(t *testing.T, in inputs, s summary) {
				if s.Status.FailedAttempts != 4 {
					t.Errorf("failedAttempts: got %d, want 4", s.Status.FailedAttempts)
				}
				// 5 s doubled three times.
				wantTime(t, "nextRefreshTime", s.Status.NextRefreshTime, in.Now.Add(40*time.Second))
			},
		},
		{
			name:   "Secret write refused: SecretWriteFailed through a wrapped refreshError",
			mutate: []func(*inputs){decSecretMissing},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out: func(in inputs) outcome {
				return outcome{Now: in.Now, Err: fmt.Errorf("write: %w", &refreshError{Reason: authv1alpha1.ReasonSecretWriteFailed,
					Message: `cannot create Secret "billing": admission webhook denied the request`})}
			},
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonSecretWriteFailed)
				wantCond(t, s.Status, authv1alpha1.ConditionReconciling, metav1.ConditionTrue, authv1alpha1.ReasonSecretWriteFailed)
				wantFailure(t, s, authv1alpha1.ReasonSecretWriteFailed)
				if want := `cannot create Secret "billing": admission webhook denied the request`; s.Status.LastFailureMessage != want {
					t.Errorf("lastFailureMessage: got %q, want %q", s.Status.LastFailureMessage, want)
				}
			},
		},
		{
			name:   "OpsNow rejects the key: Unauthorized, slow retry",
			mutate: []func(*inputs){decSecretMissing},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, Err: errRejected} },
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonUnauthorized)
				wantFailure(t, s, authv1alpha1.ReasonUnauthorized)
				if !s.Failure.Unauthorized {
					t.Errorf("Failure: got Unauthorized false, want true")
				}
				wantTime(t, "nextRefreshTime", s.Status.NextRefreshTime, in.Now.Add(unauthorizedRetry))
			},
		},
		{
			name:   "OpsNow unavailable: UpstreamUnavailable, Retry-After honoured",
			mutate: []func(*inputs){decSecretMissing},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, Err: errSlowDown} },
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonUpstreamUnavailable)
				wantFailure(t, s, authv1alpha1.ReasonUpstreamUnavailable)
				wantTime(t, "nextRefreshTime", s.Status.NextRefreshTime, in.Now.Add(2*time.Minute))
			},
		},
		{
			name:   "OpsNow answers without a token: InvalidResponse",
			mutate: []func(*inputs){decSecretMissing},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, Err: errNoToken} },
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonInvalidResponse)
				wantFailure(t, s, authv1alpha1.ReasonInvalidResponse)
			},
		},
		{
			name:   "any other error: UpstreamUnavailable",
			mutate: []func(*inputs){decSecretMissing},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, Err: errors.New("context deadline exceeded")} },
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonUpstreamUnavailable)
				wantFailure(t, s, authv1alpha1.ReasonUpstreamUnavailable)
				if s.Status.LastFailureMessage != "context deadline exceeded" {
					t.Errorf("lastFailureMessage: got %q", s.Status.LastFailureMessage)
				}
			},
		},
		{
			name: "the held and the pending token are redacted",
			mutate: []func(*inputs){decSpecChanged, decPending(5 * time.Minute), func(in *inputs) {
				in.Held.Token, in.Pending.Token = "held-SECRET-1", "pending-SECRET-2"
			}},
			plan: plan{Action: actWritePending, Cause: causeSpecChanged},
			out: func(in inputs) outcome {
				return outcome{Now: in.Now, Err: &refreshError{Reason: authv1alpha1.ReasonSecretWriteFailed,
					Message: `cannot update Secret "billing": policy denied: data.token held-SECRET-1 replaced by pending-SECRET-2`}}
			},
			check: func(t *testing.T, in inputs, s summary) {
				ready := wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonSecretWriteFailed)
				wantFailure(t, s, authv1alpha1.ReasonSecretWriteFailed)
				for what, msg := range map[string]string{
					"lastFailureMessage": s.Status.LastFailureMessage, "Ready message": ready.Message, "Failure": s.Failure.Message,
				} {
					if strings.Contains(msg, "SECRET") || strings.Count(msg, "[REDACTED]") != 2 {
						t.Errorf("%s: got %q, want both tokens redacted", what, msg)
					}
				}
			},
		},
		{
			name: "redaction leaves the caller's refreshError alone",
			mutate: []func(*inputs){decSecretMissing, decPending(5 * time.Minute), func(in *inputs) {
				in.Pending.Token = "pending-SECRET-2"
			}},
			plan: plan{Action: actWritePending, Cause: causeSecretMissing},
			out: func(in inputs) outcome {
				return outcome{Now: in.Now, Err: errLeaky}
			},
			check: func(t *testing.T, in inputs, s summary) {
				if s.Status.LastFailureMessage != "leaked [REDACTED]" {
					t.Errorf("lastFailureMessage: got %q, want %q", s.Status.LastFailureMessage, "leaked [REDACTED]")
				}
				if errLeaky.Message != "leaked pending-SECRET-2" || s.Failure == errLeaky {
					t.Errorf("the caller's error: got %q (shared: %t), want it untouched", errLeaky.Message, s.Failure == errLeaky)
				}
			},
		},
		{
			name:   "API key unreadable while the held token is valid: failure recorded, Ready stays",
			mutate: []func(*inputs){sumReady, decKeyUnreadable},
			plan:   plan{Action: actFail, Err: errDecKeyUnreadable},
			out:    func(in inputs) outcome { return outcome{Now: in.Now} },
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
				wantFailure(t, s, authv1alpha1.ReasonAPIKeySecretNotFound)
				if s.Status.FailedAttempts != 1 || s.Status.LastFailureMessage != errDecKeyUnreadable.Message {
					t.Errorf("status: got failedAttempts %d lastFailureMessage %q", s.Status.FailedAttempts, s.Status.LastFailureMessage)
				}
				wantTime(t, "nextRefreshTime", s.Status.NextRefreshTime, in.Now.Add(initialBackoff))
			},
		},
		{
			name:   "failure that needs the user: Stalled=True instead of Reconciling",
			mutate: []func(*inputs){decSecretMissing, sumFailing(1, authv1alpha1.ReasonUpstreamUnavailable)},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out: func(in inputs) outcome {
				return outcome{Now: in.Now, Err: &refreshError{Reason: authv1alpha1.ReasonAPIKeySecretNotAllowed, Message: "not allowed"}}
			},
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonAPIKeySecretNotAllowed)
				wantCond(t, s.Status, authv1alpha1.ConditionStalled, metav1.ConditionTrue, authv1alpha1.ReasonAPIKeySecretNotAllowed)
				wantNoCond(t, s.Status, authv1alpha1.ConditionReconciling)
				wantFailure(t, s, authv1alpha1.ReasonAPIKeySecretNotAllowed)
				if s.Status.FailedAttempts != 2 {
					t.Errorf("failedAttempts: got %d, want 2", s.Status.FailedAttempts)
				}
			},
		},
		{
			name:   "stall: Stalled=True, Ready=False, no Reconciling, no next refresh",
			mutate: []func(*inputs){sumFailing(2, authv1alpha1.ReasonUpstreamUnavailable), func(in *inputs) { in.Token.Generation = 3 }},
			plan: plan{Action: actStall, Reason: authv1alpha1.ReasonEndpointNotAllowed,
				Message: "endpoint is not allowed by the operator"},
			out: func(in inputs) outcome { return outcome{Now: in.Now} },
			check: func(t *testing.T, in inputs, s summary) {
				st := s.Status
				stalled := wantCond(t, st, authv1alpha1.ConditionStalled, metav1.ConditionTrue, authv1alpha1.ReasonEndpointNotAllowed)
				ready := wantCond(t, st, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonEndpointNotAllowed)
				if stalled.Message != "endpoint is not allowed by the operator" || ready.Message != stalled.Message {
					t.Errorf("messages: got Stalled %q Ready %q, want the plan's", stalled.Message, ready.Message)
				}
				wantNoCond(t, st, authv1alpha1.ConditionReconciling)
				wantTime(t, "nextRefreshTime", st.NextRefreshTime, time.Time{})
				wantWake(t, s, time.Time{})
				if st.ObservedGeneration != 3 || s.Failure != nil {
					t.Errorf("got observedGeneration %d failure %v, want 3 and none", st.ObservedGeneration, s.Failure)
				}
			},
		},
		{
			name:   "stall on a Secret conflict replaces Ready=True",
			mutate: []func(*inputs){sumReady, decSecretMissing, func(in *inputs) { in.SecretConflict = true }},
			plan: plan{Action: actStall, Reason: authv1alpha1.ReasonSecretConflict,
				Message: `Secret "billing" exists and is not controlled by this OpsnowToken; it is left untouched`},
			out: func(in inputs) outcome { return outcome{Now: in.Now} },
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionStalled, metav1.ConditionTrue, authv1alpha1.ReasonSecretConflict)
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonSecretConflict)
				wantNoCond(t, s.Status, authv1alpha1.ConditionReconciling)
				wantTime(t, "nextRefreshTime", s.Status.NextRefreshTime, time.Time{})
			},
		},
		{
			name: "suspend: Ready=False Suspended, nothing planned",
			mutate: []func(*inputs){sumFailing(2, authv1alpha1.ReasonUnauthorized), sumStalled,
				func(in *inputs) { in.Token.Spec.Suspend = true; in.Token.Generation = 2 }},
			plan: plan{Action: actSuspend},
			out:  func(in inputs) outcome { return outcome{Now: in.Now} },
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonSuspended)
				wantNoCond(t, s.Status, authv1alpha1.ConditionReconciling, authv1alpha1.ConditionStalled)
				wantTime(t, "nextRefreshTime", s.Status.NextRefreshTime, time.Time{})
				wantWake(t, s, time.Time{})
				if s.Status.ObservedGeneration != 2 || s.Failure != nil {
					t.Errorf("got observedGeneration %d failure %v, want 2 and none", s.Status.ObservedGeneration, s.Failure)
				}
			},
		},
		{
			name:   "rate-limited first token: Progressing, generation not observed",
			mutate: []func(*inputs){sumNew},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out: func(in inputs) outcome {
				return outcome{Now: in.Now.Add(time.Second), SlotAt: in.Now.Add(time.Second + reportSlotWaitAfter)}
			},
			check: func(t *testing.T, in inputs, s summary) {
				st := s.Status
				slot := in.Now.Add(time.Second + reportSlotWaitAfter)
				ready := wantCond(t, st, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonProgressing)
				wantCond(t, st, authv1alpha1.ConditionReconciling, metav1.ConditionTrue, authv1alpha1.ReasonProgressing)
				if !strings.Contains(ready.Message, slot.Format(time.RFC3339)) {
					t.Errorf("Ready message: got %q, want the slot time %s", ready.Message, slot.Format(time.RFC3339))
				}
				if st.ObservedGeneration != 0 || st.FailedAttempts != 0 || s.Failure != nil {
					t.Errorf("got observedGeneration %d failedAttempts %d failure %v, want 0, 0 and none",
						st.ObservedGeneration, st.FailedAttempts, s.Failure)
				}
				wantTime(t, "nextRefreshTime", st.NextRefreshTime, time.Time{})
				wantWake(t, s, slot)
			},
		},
		{
			name:   "rate-limited first token, a short wait: no status of its own",
			mutate: []func(*inputs){sumNew},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out: func(in inputs) outcome {
				// Measured from out.Now: from in.Now the wait would be long enough.
				return outcome{Now: in.Now.Add(time.Second), SlotAt: in.Now.Add(reportSlotWaitAfter)}
			},
			check: func(t *testing.T, in inputs, s summary) {
				want := authv1alpha1.OpsnowTokenStatus{SecretName: "billing"}
				if !apiequality.Semantic.DeepEqual(s.Status, want) {
					t.Errorf("status: got %+v, want %+v", s.Status, want)
				}
				wantWake(t, s, in.Now.Add(reportSlotWaitAfter))
			},
		},
		{
			name:   "rate-limited after a spec change: the old generation stays observed",
			mutate: []func(*inputs){sumReady, decSpecChanged},
			plan:   plan{Action: actRefresh, Cause: causeSpecChanged},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, SlotAt: in.Now.Add(time.Minute)} },
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonProgressing)
				wantCond(t, s.Status, authv1alpha1.ConditionReconciling, metav1.ConditionTrue, authv1alpha1.ReasonProgressing)
				if s.Status.ObservedGeneration != 1 {
					t.Errorf("observedGeneration: got %d, want 1", s.Status.ObservedGeneration)
				}
			},
		},
		{
			name:   "rate-limited retry of a failing token: status unchanged, no write per attempt",
			mutate: []func(*inputs){sumFailing(3, authv1alpha1.ReasonUpstreamUnavailable)},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, SlotAt: in.Now.Add(time.Minute)} },
			check: func(t *testing.T, in inputs, s summary) {
				want := in.Token.Status.DeepCopy()
				want.SecretName = in.SecretName
				if !apiequality.Semantic.DeepEqual(s.Status, *want) {
					t.Errorf("status: got %+v, want it unchanged %+v", s.Status, *want)
				}
				wantWake(t, s, in.Now.Add(time.Minute))
			},
		},
		{
			name:   "rate-limited while a valid token is held: status unchanged",
			mutate: []func(*inputs){sumReady, decAt(45 * time.Minute)},
			plan:   plan{Action: actRefresh, Cause: causeScheduled},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, SlotAt: in.Now.Add(time.Minute)} },
			check: func(t *testing.T, in inputs, s summary) {
				if !apiequality.Semantic.DeepEqual(s.Status, in.Token.Status) {
					t.Errorf("status: got %+v, want it unchanged %+v", s.Status, in.Token.Status)
				}
				wantWake(t, s, in.Now.Add(time.Minute))
			},
		},
		{
			name:   "rate-limited past the held token's expiry: wake at expiry",
			mutate: []func(*inputs){sumReady, decAt(59 * time.Minute)},
			plan:   plan{Action: actRefresh, Cause: causeScheduled},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, SlotAt: in.Now.Add(5 * time.Minute)} },
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
				wantWake(t, s, expires)
			},
		},
		{
			name: "refresh request answered by the held token is recorded without a new token",
			mutate: []func(*inputs){sumReady, decRefreshRequested(decideRequest),
				func(in *inputs) { in.Held.RefreshRequest = decideRequest }},
			plan: plan{Action: actKeep, At: refreshAt},
			check: func(t *testing.T, in inputs, s summary) {
				if s.Status.LastHandledRefreshRequest != decideRequest {
					t.Errorf("lastHandledRefreshRequest: got %q, want %q", s.Status.LastHandledRefreshRequest, decideRequest)
				}
			},
		},
		{
			name: "refresh request answered by the held token is recorded while a refresh waits for a slot",
			mutate: []func(*inputs){sumReady, decRefreshRequested(decideRequest), decAt(45 * time.Minute),
				func(in *inputs) { in.Held.RefreshRequest = decideRequest }},
			plan: plan{Action: actRefresh, Cause: causeScheduled},
			out:  func(in inputs) outcome { return outcome{Now: in.Now, SlotAt: in.Now.Add(time.Minute)} },
			check: func(t *testing.T, in inputs, s summary) {
				if s.Status.LastHandledRefreshRequest != decideRequest {
					t.Errorf("lastHandledRefreshRequest: got %q, want %q", s.Status.LastHandledRefreshRequest, decideRequest)
				}
			},
		},
		{
			name:   "refresh request answered by a new token",
			mutate: []func(*inputs){sumReady, decRefreshRequested(decideRequest)},
			plan:   plan{Action: actRefresh, Cause: causeRefreshRequested},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, Issued: minted(in, in.Now)} },
			check: func(t *testing.T, in inputs, s summary) {
				if s.Status.LastHandledRefreshRequest != decideRequest {
					t.Errorf("lastHandledRefreshRequest: got %q, want %q", s.Status.LastHandledRefreshRequest, decideRequest)
				}
			},
		},
		{
			name: "refresh request not answered: a failed refresh keeps the last one handled",
			mutate: []func(*inputs){sumReady, decRefreshRequested(decideRequest), func(in *inputs) {
				in.Held.RefreshRequest = "2026-05-01T00:00:00Z"
				in.Token.Status.LastHandledRefreshRequest = "2026-05-01T00:00:00Z"
			}},
			plan: plan{Action: actRefresh, Cause: causeRefreshRequested},
			out:  func(in inputs) outcome { return outcome{Now: in.Now, Err: errUnavailable} },
			check: func(t *testing.T, in inputs, s summary) {
				if s.Status.LastHandledRefreshRequest != "2026-05-01T00:00:00Z" {
					t.Errorf("lastHandledRefreshRequest: got %q, want the earlier request", s.Status.LastHandledRefreshRequest)
				}
			},
		},
		{
			name: "refresh request answered by a token of another spec is not recorded",
			mutate: []func(*inputs){sumReady, decRefreshRequested(decideRequest), decSpecChanged,
				func(in *inputs) { in.Held.RefreshRequest = decideRequest }},
			plan: plan{Action: actRefresh, Cause: causeSpecChanged},
			out:  func(in inputs) outcome { return outcome{Now: in.Now, SlotAt: in.Now.Add(time.Minute)} },
			check: func(t *testing.T, in inputs, s summary) {
				if s.Status.LastHandledRefreshRequest != "" {
					t.Errorf("lastHandledRefreshRequest: got %q, want none", s.Status.LastHandledRefreshRequest)
				}
			},
		},
		{
			name: "backoff wait while the held token is valid: Ready, wake at the retry",
			mutate: []func(*inputs){sumReady, decAt(45 * time.Minute), decBackoff(30 * time.Second),
				func(in *inputs) { in.Token.Status.LastFailureMessage = "upstream unavailable" }},
			plan: plan{Action: actWait, Cause: causeScheduled, At: dueAt.Add(30 * time.Second)},
			check: func(t *testing.T, in inputs, s summary) {
				c := wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
				if !strings.Contains(c.Message, "the last 2 refresh attempt(s) failed") {
					t.Errorf("Ready message: got %q, want it to tell of 2 failed attempts", c.Message)
				}
				if s.Status.FailedAttempts != 2 || s.Failure != nil {
					t.Errorf("got failedAttempts %d failure %v, want 2 and none", s.Status.FailedAttempts, s.Failure)
				}
				wantTime(t, "nextRefreshTime", s.Status.NextRefreshTime, dueAt.Add(30*time.Second))
				wantWake(t, s, dueAt.Add(30*time.Second))
			},
		},
		{
			name:   "backoff wait without a token: status unchanged",
			mutate: []func(*inputs){decSecretMissing, sumFailing(2, authv1alpha1.ReasonUnauthorized), decBackoff(time.Minute)},
			plan:   plan{Action: actWait, Cause: causeSecretMissing, At: decideT0.Add(11 * time.Minute)},
			check: func(t *testing.T, in inputs, s summary) {
				if !apiequality.Semantic.DeepEqual(s.Status, in.Token.Status) {
					t.Errorf("status: got %+v, want it unchanged %+v", s.Status, in.Token.Status)
				}
				wantWake(t, s, decideT0.Add(11*time.Minute))
			},
		},
		{
			name: "backoff wait past the held token's expiry: Ready=False, Reconciling",
			mutate: []func(*inputs){sumReady, decAt(time.Hour + time.Second), decBackoff(time.Second),
				func(in *inputs) { in.Token.Status.LastFailureMessage = "upstream unavailable: HTTP 503" }},
			plan: plan{Action: actWait, Cause: causeExpired, At: expires.Add(2 * time.Second)},
			check: func(t *testing.T, in inputs, s summary) {
				ready := wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonUpstreamUnavailable)
				if ready.Message != "The token expired; upstream unavailable: HTTP 503" {
					t.Errorf("Ready message: got %q", ready.Message)
				}
				wantCond(t, s.Status, authv1alpha1.ConditionReconciling, metav1.ConditionTrue, authv1alpha1.ReasonUpstreamUnavailable)
				wantWake(t, s, expires.Add(2*time.Second))
			},
		},
		{
			name: "backoff wait past expiry after a rejected key: the last failure's reason",
			mutate: []func(*inputs){sumReady, decAt(time.Hour + time.Second), decBackoff(time.Second),
				func(in *inputs) {
					in.Token.Status.LastFailureMessage = "unauthorized: HTTP 401: invalid API key"
					in.FailedReason = authv1alpha1.ReasonUnauthorized
				}},
			plan: plan{Action: actWait, Cause: causeExpired, At: expires.Add(2 * time.Second)},
			check: func(t *testing.T, in inputs, s summary) {
				wantCond(t, s.Status, authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonUnauthorized)
				wantCond(t, s.Status, authv1alpha1.ConditionReconciling, metav1.ConditionTrue, authv1alpha1.ReasonUnauthorized)
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := decideInputs()
			for _, m := range tc.mutate {
				m(&in)
			}
			before := in.Token.DeepCopy()
			out := outcome{Now: in.Now}
			if tc.out != nil {
				out = tc.out(in)
			}
			s := summarize(in, tc.plan, out)
			tc.check(t, in, s)
			if !apiequality.Semantic.DeepEqual(before, in.Token) {
				t.Errorf("summarize changed its input token")
			}
		})
	}
}

// TestKstatus checks what kstatus, and so Flux, Argo CD and kubectl wait
// tools built on it, read from the status summarize writes.
func TestKstatus(t *testing.T) {
	cases := []struct {
		name   string
		mutate []func(*inputs)
		plan   plan
		out    func(in inputs) outcome
		// generation is the object's metadata.generation when set: a spec
		// change the operator has not reconciled yet.
		generation int64
		want       status.Status
	}{
		{
			name:   "first token waiting for a rate-limit slot",
			mutate: []func(*inputs){sumNew},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, SlotAt: in.Now.Add(time.Minute)} },
			want:   status.InProgressStatus,
		},
		{
			name:   "failing without a token",
			mutate: []func(*inputs){sumNew},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, Err: errUnavailable} },
			want:   status.InProgressStatus,
		},
		{
			name:   "rejected key without a token",
			mutate: []func(*inputs){sumNew},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, Err: errRejected} },
			want:   status.InProgressStatus,
		},
		{
			name:   "Ready with a new token",
			mutate: []func(*inputs){sumNew},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, Issued: minted(in, in.Now)} },
			want:   status.CurrentStatus,
		},
		{
			name:   "Ready with the held token",
			mutate: []func(*inputs){sumReady},
			plan:   plan{Action: actKeep},
			want:   status.CurrentStatus,
		},
		{
			name:   "Ready with failed attempts while the token is valid",
			mutate: []func(*inputs){sumReady, decAt(45 * time.Minute)},
			plan:   plan{Action: actRefresh, Cause: causeScheduled},
			out:    func(in inputs) outcome { return outcome{Now: in.Now, Err: errUnavailable} },
			want:   status.CurrentStatus,
		},
		{
			name:   "endpoint not allowed",
			mutate: []func(*inputs){sumFailing(1, authv1alpha1.ReasonUpstreamUnavailable)},
			plan:   plan{Action: actStall, Reason: authv1alpha1.ReasonEndpointNotAllowed, Message: "endpoint is not allowed"},
			want:   status.FailedStatus,
		},
		{
			name:   "Secret conflict",
			mutate: []func(*inputs){sumNew, func(in *inputs) { in.SecretConflict = true }},
			plan:   plan{Action: actStall, Reason: authv1alpha1.ReasonSecretConflict, Message: "Secret exists"},
			want:   status.FailedStatus,
		},
		{
			name:   "API-key Secret not allowed",
			mutate: []func(*inputs){sumNew},
			plan:   plan{Action: actRefresh, Cause: causeSecretMissing},
			out: func(in inputs) outcome {
				return outcome{Now: in.Now, Err: &refreshError{Reason: authv1alpha1.ReasonAPIKeySecretNotAllowed, Message: "not allowed"}}
			},
			want: status.FailedStatus,
		},
		{
			name:       "spec change not yet observed",
			mutate:     []func(*inputs){sumReady},
			plan:       plan{Action: actKeep},
			generation: 2,
			want:       status.InProgressStatus,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := decideInputs()
			for _, m := range tc.mutate {
				m(&in)
			}
			out := outcome{Now: in.Now}
			if tc.out != nil {
				out = tc.out(in)
			}
			tok := in.Token.DeepCopy()
			tok.Status = summarize(in, tc.plan, out).Status
			if tc.generation != 0 {
				tok.Generation = tc.generation
			}
			obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(tok)
			if err != nil {
				t.Fatalf("to unstructured: %v", err)
			}
			u := &unstructured.Unstructured{Object: obj}
			u.SetAPIVersion(authv1alpha1.GroupVersion.String())
			u.SetKind("OpsnowToken")
			u.SetGeneration(tok.Generation)
			res, err := status.Compute(u)
			if err != nil {
				t.Fatalf("kstatus: %v", err)
			}
			if res.Status != tc.want {
				t.Errorf("kstatus: got %s (%q), want %s; status %+v", res.Status, res.Message, tc.want, tok.Status)
			}
		})
	}
}
