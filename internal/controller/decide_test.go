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
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// decideT0 is when the held token of decideInputs was issued; it expires an
// hour later and, with the default refreshBefore (a third of the lifetime),
// is due 38 to 40 minutes in.
var decideT0 = time.Date(2026, 5, 4, 9, 0, 0, 0, time.UTC)

const (
	decideEndpoint = "https://api.opsnow.example"
	decideKeyRV    = "100"
	decideRequest  = "2026-05-04T09:20:00Z"
)

// decideInputs returns what gather reads for a token whose target Secret
// holds an intact token issued at decideT0 for the current spec and key
// "k1", ten minutes into its hour: nothing is due.
func decideInputs() inputs {
	tok := &authv1alpha1.OpsnowToken{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "billing", UID: "uid-billing", Generation: 1},
		Spec:       authv1alpha1.OpsnowTokenSpec{APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: "opsnow-api-key"}},
		Status:     authv1alpha1.OpsnowTokenStatus{ObservedGeneration: 1, SecretName: "billing"},
	}
	hash := specHash(tok.Spec, decideEndpoint)
	return inputs{
		Token:      tok,
		Now:        decideT0.Add(10 * time.Minute),
		Endpoint:   decideEndpoint,
		SpecHash:   hash,
		SecretName: "billing",
		Secret:     &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "billing"}},
		Held: heldToken{
			Token:         "held-token",
			IssuedAt:      decideT0,
			ExpiresAt:     decideT0.Add(time.Hour),
			SpecHash:      hash,
			APIKeyHash:    saltedHash("k1"),
			APIKeyVersion: decideKeyRV,
		},
		Intact:        true,
		APIKeyVersion: decideKeyRV,
	}
}

// decideRefreshAt is when decideInputs' held token is due, computed here
// rather than through inputs.schedule.
func decideRefreshAt(t *testing.T) time.Time {
	t.Helper()
	expires := decideT0.Add(time.Hour)
	at := refreshTime(decideT0, expires, 0, "uid-billing"+expires.String()).RefreshAt
	if at.Before(decideT0.Add(38*time.Minute)) || at.After(decideT0.Add(40*time.Minute)) {
		t.Fatalf("refresh time of the held token: got %s, want within 38 to 40 minutes of issue", at)
	}
	return at
}

// Mutations of decideInputs, applied in order.

func decSecretMissing(in *inputs) {
	in.Secret, in.Held, in.Intact = nil, heldToken{}, false
}

// decSecretEdited is what checkSecret leaves for a Secret whose data no longer
// matches what the operator wrote.
func decSecretEdited(in *inputs) { in.Held, in.Intact = heldToken{}, false }

func decSpecChanged(in *inputs) {
	in.Token.Spec.RefreshBefore = &metav1.Duration{Duration: 10 * time.Minute}
	in.Token.Generation = 2
	in.SpecHash = specHash(in.Token.Spec, in.Endpoint)
}

func decRefreshRequested(value string) func(*inputs) {
	return func(in *inputs) {
		in.Token.Annotations = map[string]string{authv1alpha1.RefreshRequestedAtAnnotation: value}
	}
}

// decKeyRead is gather reading the key after the API-key Secret changed.
func decKeyRead(value, version string) func(*inputs) {
	return func(in *inputs) {
		in.APIKeyVersion = version
		in.APIKey = &apiKey{Value: value, Version: version}
	}
}

func decAt(d time.Duration) func(*inputs) {
	return func(in *inputs) { in.Now = decideT0.Add(d) }
}

// decBackoff records a failed attempt, made with the inputs as they are now,
// whose retry is due after retryIn.
func decBackoff(retryIn time.Duration) func(*inputs) {
	return func(in *inputs) {
		in.Token.Status.FailedAttempts = 2
		in.Token.Status.ObservedGeneration = in.Token.Generation
		in.Token.Status.NextRefreshTime = &metav1.Time{Time: in.Now.Add(retryIn)}
		in.FailedInputs = inputsFingerprint(*in)
	}
}

// decPending keeps a token minted for the current inputs at issuedAfter past
// decideT0, whose write failed.
func decPending(issuedAfter time.Duration) func(*inputs) {
	return func(in *inputs) {
		in.Pending = &heldToken{
			Token:          "pending-token",
			IssuedAt:       decideT0.Add(issuedAfter),
			ExpiresAt:      decideT0.Add(issuedAfter + time.Hour),
			SpecHash:       in.SpecHash,
			APIKeyHash:     saltedHash("k1"),
			APIKeyVersion:  in.APIKeyVersion,
			RefreshRequest: in.refreshRequest(),
		}
	}
}

var errDecKeyUnreadable = &refreshError{Reason: authv1alpha1.ReasonAPIKeySecretNotFound,
	Message: `API-key Secret "opsnow-api-key" not found`}

func decKeyUnreadable(in *inputs) {
	in.APIKeyVersion, in.APIKey, in.APIKeyErr = "", nil, errDecKeyUnreadable
}

func TestDecide(t *testing.T) {
	refreshAt := decideRefreshAt(t)
	sinceT0 := func(tm time.Time) time.Duration { return tm.Sub(decideT0) }
	// retryAt is the backoff's retry time of cases that use decBackoff(30s)
	// at the default Now, ten minutes in.
	retryAt := decideT0.Add(10*time.Minute + 30*time.Second)
	// dueRetryAt is the same at 45 minutes in, when a scheduled refresh is due.
	dueRetryAt := decideT0.Add(45*time.Minute + 30*time.Second)

	cases := []struct {
		name    string
		mutate  []func(*inputs)
		action  action
		cause   string
		at      time.Time // checked for every case: zero unless set
		reason  string
		message string // a substring of the plan's message
		err     error
	}{
		// Before anything else: suspend, then the stalls.
		{name: "suspend", mutate: []func(*inputs){func(in *inputs) { in.Token.Spec.Suspend = true }},
			action: actSuspend},
		{name: "suspend wins over a stall and a due refresh", mutate: []func(*inputs){
			decSecretMissing, decAt(2 * time.Hour),
			func(in *inputs) {
				in.Token.Spec.Suspend = true
				in.EndpointErr = errors.New("endpoint is not allowed")
				in.SecretConflict = true
			}},
			action: actSuspend},
		{name: "endpoint not allowed stalls", mutate: []func(*inputs){func(in *inputs) {
			in.EndpointErr = errors.New("endpoint is not allowed by the operator (allowed: https://api.opsnow.io)")
		}},
			action: actStall, reason: authv1alpha1.ReasonEndpointNotAllowed,
			message: "endpoint is not allowed by the operator (allowed: https://api.opsnow.io)"},
		{name: "endpoint not allowed wins over a Secret conflict and a backoff", mutate: []func(*inputs){
			decSecretMissing, decBackoff(30 * time.Second),
			func(in *inputs) { in.EndpointErr = errors.New("not allowed"); in.SecretConflict = true }},
			action: actStall, reason: authv1alpha1.ReasonEndpointNotAllowed, message: "not allowed"},
		{name: "Secret conflict stalls", mutate: []func(*inputs){decSecretMissing,
			func(in *inputs) { in.SecretConflict = true }},
			action: actStall, reason: authv1alpha1.ReasonSecretConflict, message: `Secret "billing" exists and is not controlled`},
		{name: "Secret conflict stalls during a backoff", mutate: []func(*inputs){decSecretMissing, decBackoff(30 * time.Second),
			func(in *inputs) { in.SecretConflict = true }},
			action: actStall, reason: authv1alpha1.ReasonSecretConflict, message: "not controlled by this OpsnowToken"},

		// Nothing due.
		{name: "keep until the refresh time", action: actKeep, at: refreshAt},
		{name: "keep a second before the refresh time", mutate: []func(*inputs){decAt(sinceT0(refreshAt) - time.Second)},
			action: actKeep, at: refreshAt},
		{name: "keep: the refresh request was answered by the held token", mutate: []func(*inputs){
			decRefreshRequested(decideRequest), func(in *inputs) { in.Held.RefreshRequest = decideRequest }},
			action: actKeep, at: refreshAt},
		{name: "keep: the API-key Secret changed but not the key", mutate: []func(*inputs){decKeyRead("k1", "101")},
			action: actKeep, at: refreshAt},
		{name: "keep: a backoff recorded earlier does not matter when nothing is due", mutate: []func(*inputs){
			decBackoff(30 * time.Second)},
			action: actKeep, at: refreshAt},
		{name: "keep: a pending token does not matter when nothing is due", mutate: []func(*inputs){decPending(5 * time.Minute)},
			action: actKeep, at: refreshAt},

		// Each cause of a refresh.
		{name: "Secret missing", mutate: []func(*inputs){decSecretMissing},
			action: actRefresh, cause: causeSecretMissing},
		{name: "Secret edited", mutate: []func(*inputs){decSecretEdited},
			action: actRefresh, cause: causeSecretEdited},
		{name: "spec changed", mutate: []func(*inputs){decSpecChanged},
			action: actRefresh, cause: causeSpecChanged},
		{name: "refresh requested", mutate: []func(*inputs){decRefreshRequested(decideRequest)},
			action: actRefresh, cause: causeRefreshRequested},
		{name: "another refresh requested than the held token answered", mutate: []func(*inputs){
			decRefreshRequested(decideRequest), func(in *inputs) { in.Held.RefreshRequest = "2026-05-01T00:00:00Z" }},
			action: actRefresh, cause: causeRefreshRequested},
		{name: "API key changed", mutate: []func(*inputs){decKeyRead("k2", "101")},
			action: actRefresh, cause: causeAPIKeyChanged},
		{name: "API key read but the held token has no key hash", mutate: []func(*inputs){decKeyRead("k1", "101"),
			func(in *inputs) { in.Held.APIKeyHash = "" }},
			action: actRefresh, cause: causeAPIKeyChanged},
		{name: "expired at its expiry", mutate: []func(*inputs){decAt(time.Hour)},
			action: actRefresh, cause: causeExpired},
		{name: "expired long ago", mutate: []func(*inputs){decAt(30 * time.Hour)},
			action: actRefresh, cause: causeExpired},
		{name: "scheduled at the refresh time", mutate: []func(*inputs){decAt(sinceT0(refreshAt))},
			action: actRefresh, cause: causeScheduled},
		{name: "scheduled a second before expiry", mutate: []func(*inputs){decAt(time.Hour - time.Second)},
			action: actRefresh, cause: causeScheduled},

		// Their priority: each cause wins over all those after it.
		{name: "priority: Secret missing over the rest", mutate: []func(*inputs){
			decSpecChanged, decRefreshRequested(decideRequest), decKeyRead("k2", "101"), decAt(2 * time.Hour), decSecretMissing},
			action: actRefresh, cause: causeSecretMissing},
		{name: "priority: Secret edited over spec, request, key, expiry", mutate: []func(*inputs){
			decSpecChanged, decRefreshRequested(decideRequest), decKeyRead("k2", "101"), decAt(2 * time.Hour), decSecretEdited},
			action: actRefresh, cause: causeSecretEdited},
		{name: "priority: spec changed over request, key, expiry", mutate: []func(*inputs){
			decSpecChanged, decRefreshRequested(decideRequest), decKeyRead("k2", "101"), decAt(2 * time.Hour)},
			action: actRefresh, cause: causeSpecChanged},
		{name: "priority: refresh requested over key, expiry", mutate: []func(*inputs){
			decRefreshRequested(decideRequest), decKeyRead("k2", "101"), decAt(2 * time.Hour)},
			action: actRefresh, cause: causeRefreshRequested},
		{name: "priority: API key changed over expiry", mutate: []func(*inputs){decKeyRead("k2", "101"), decAt(2 * time.Hour)},
			action: actRefresh, cause: causeAPIKeyChanged},
		{name: "priority: API key changed over the schedule", mutate: []func(*inputs){
			decKeyRead("k2", "101"), decAt(sinceT0(refreshAt))},
			action: actRefresh, cause: causeAPIKeyChanged},

		// The API key cannot be read.
		{name: "API key unreadable while the held token is valid fails", mutate: []func(*inputs){decKeyUnreadable},
			action: actFail, err: errDecKeyUnreadable},
		{name: "API key unreadable during a backoff waits", mutate: []func(*inputs){decKeyUnreadable, decBackoff(30 * time.Second)},
			action: actWait, at: retryAt},
		{name: "API key unreadable once the backoff passed fails again", mutate: []func(*inputs){
			decKeyUnreadable, decBackoff(30 * time.Second), decAt(10*time.Minute + 30*time.Second)},
			action: actFail, err: errDecKeyUnreadable},
		{name: "API key unreadable with a refresh due refreshes: the refresh reports it", mutate: []func(*inputs){
			decKeyUnreadable, decAt(time.Hour)},
			action: actRefresh, cause: causeExpired},

		// A backoff and what ends it early.
		{name: "backoff waits for its retry time", mutate: []func(*inputs){decSecretMissing, decBackoff(30 * time.Second)},
			action: actWait, cause: causeSecretMissing, at: retryAt},
		{name: "backoff of a due refresh while the held token is valid waits", mutate: []func(*inputs){
			decAt(45 * time.Minute), decBackoff(30 * time.Second)},
			action: actWait, cause: causeScheduled, at: dueRetryAt},
		{name: "backoff waits a second before its retry time", mutate: []func(*inputs){
			decSecretMissing, decBackoff(30 * time.Second), decAt(10*time.Minute + 29*time.Second)},
			action: actWait, cause: causeSecretMissing, at: retryAt},
		{name: "backoff passed at its retry time", mutate: []func(*inputs){
			decSecretMissing, decBackoff(30 * time.Second), decAt(10*time.Minute + 30*time.Second)},
			action: actRefresh, cause: causeSecretMissing},
		{name: "backoff ended by a new generation", mutate: []func(*inputs){
			decSecretMissing, decBackoff(30 * time.Second), func(in *inputs) { in.Token.Generation = 2 }},
			action: actRefresh, cause: causeSecretMissing},
		{name: "backoff ended by a spec change", mutate: []func(*inputs){
			decAt(45 * time.Minute), decBackoff(30 * time.Second), decSpecChanged},
			action: actRefresh, cause: causeSpecChanged},
		{name: "backoff ended by a new version of the API-key Secret", mutate: []func(*inputs){
			decSecretMissing, decBackoff(30 * time.Second), func(in *inputs) { in.APIKeyVersion = "101" }},
			action: actRefresh, cause: causeSecretMissing},
		{name: "backoff ended by a new refresh request", mutate: []func(*inputs){
			decAt(45 * time.Minute), decBackoff(30 * time.Second), decRefreshRequested(decideRequest)},
			action: actRefresh, cause: causeRefreshRequested},
		{name: "backoff ended by the endpoint recovering", mutate: []func(*inputs){
			decSecretMissing, decBackoff(30 * time.Second), func(in *inputs) { in.Woken = true }},
			action: actRefresh, cause: causeSecretMissing},
		{name: "backoff after a restart: unknown inputs keep waiting", mutate: []func(*inputs){
			decSecretMissing, decBackoff(30 * time.Second),
			func(in *inputs) { in.FailedInputs = ""; in.APIKeyVersion = "101" }},
			action: actWait, cause: causeSecretMissing, at: retryAt},
		{name: "no failure recorded: nextRefreshTime ahead is no backoff", mutate: []func(*inputs){
			decSecretMissing, decBackoff(30 * time.Second), func(in *inputs) { in.Token.Status.FailedAttempts = 0 }},
			action: actRefresh, cause: causeSecretMissing},
		{name: "failures without a nextRefreshTime are no backoff", mutate: []func(*inputs){
			decSecretMissing, decBackoff(30 * time.Second), func(in *inputs) { in.Token.Status.NextRefreshTime = nil }},
			action: actRefresh, cause: causeSecretMissing},

		// A token minted by an attempt whose write failed.
		{name: "pending token usable is written", mutate: []func(*inputs){decSecretMissing, decPending(5 * time.Minute)},
			action: actWritePending, cause: causeSecretMissing},
		{name: "pending token for the current refresh request is written", mutate: []func(*inputs){
			decRefreshRequested(decideRequest), decPending(5 * time.Minute)},
			action: actWritePending, cause: causeRefreshRequested},
		{name: "pending token waits out a backoff", mutate: []func(*inputs){
			decSecretMissing, decPending(5 * time.Minute), decBackoff(30 * time.Second)},
			action: actWait, cause: causeSecretMissing, at: retryAt},
		{name: "pending token for another spec is not written", mutate: []func(*inputs){
			decPending(5 * time.Minute), decSpecChanged},
			action: actRefresh, cause: causeSpecChanged},
		{name: "pending token for another API-key Secret version is not written", mutate: []func(*inputs){
			decSecretMissing, decPending(5 * time.Minute), func(in *inputs) { in.APIKeyVersion = "101" }},
			action: actRefresh, cause: causeSecretMissing},
		{name: "pending token for another refresh request is not written", mutate: []func(*inputs){
			decRefreshRequested("2026-05-04T09:01:00Z"), decPending(5 * time.Minute), decRefreshRequested(decideRequest)},
			action: actRefresh, cause: causeRefreshRequested},
		{name: "pending token minted before a refresh request is not written", mutate: []func(*inputs){
			decPending(5 * time.Minute), decRefreshRequested(decideRequest)},
			action: actRefresh, cause: causeRefreshRequested},
		{name: "pending token due is not written", mutate: []func(*inputs){
			decSecretMissing, decPending(0), decAt(sinceT0(refreshAt))},
			action: actRefresh, cause: causeSecretMissing},
		{name: "pending token a second before due is written", mutate: []func(*inputs){
			decSecretMissing, decPending(0), decAt(sinceT0(refreshAt) - time.Second)},
			action: actWritePending, cause: causeSecretMissing},
		{name: "pending token expired is not written", mutate: []func(*inputs){
			decSecretMissing, decPending(0), decAt(2 * time.Hour)},
			action: actRefresh, cause: causeSecretMissing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := decideInputs()
			for _, m := range tc.mutate {
				m(&in)
			}
			got := decide(in)
			if got.Action != tc.action {
				t.Fatalf("action: got %v (cause %q, reason %q, err %v), want %v", got.Action, got.Cause, got.Reason, got.Err, tc.action)
			}
			if got.Cause != tc.cause {
				t.Errorf("cause: got %q, want %q", got.Cause, tc.cause)
			}
			if !got.At.Equal(tc.at) {
				t.Errorf("at: got %s, want %s", got.At, tc.at)
			}
			if got.Reason != tc.reason {
				t.Errorf("reason: got %q, want %q", got.Reason, tc.reason)
			}
			if tc.message == "" && got.Message != "" || !strings.Contains(got.Message, tc.message) {
				t.Errorf("message: got %q, want it to contain %q", got.Message, tc.message)
			}
			if !errors.Is(got.Err, tc.err) || (got.Err == nil) != (tc.err == nil) {
				t.Errorf("err: got %v, want %v", got.Err, tc.err)
			}
		})
	}
}

// TestDecideBaseInputs guards the helper TestDecide builds on: without it,
// a broken decideInputs could make every case pass for the wrong reason.
func TestDecideBaseInputs(t *testing.T) {
	in := decideInputs()
	if !in.heldIsCurrent() {
		t.Errorf("heldIsCurrent: got false, want true")
	}
	if c := refreshCause(in); c != "" {
		t.Errorf("refreshCause: got %q, want none", c)
	}
	if !hashMatches(in.Held.APIKeyHash, "k1") || hashMatches(in.Held.APIKeyHash, "k2") {
		t.Errorf("held API key hash %q: want it to match k1 only", in.Held.APIKeyHash)
	}
	if got, want := in.schedule().RefreshAt, decideRefreshAt(t); !got.Equal(want) {
		t.Errorf("schedule: got %s, want %s", got, want)
	}
	// Mutations apply to a fresh token each time.
	a := decideInputs()
	decSpecChanged(&a)
	if b := decideInputs(); b.Token.Generation != 1 || b.Token.Spec.RefreshBefore != nil {
		t.Errorf("decideInputs shares its token between calls")
	}
}
