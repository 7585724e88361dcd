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
	"fmt"
	"time"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// action is what a reconcile does about an OpsnowToken.
type action int

const (
	// actKeep: the held token stays; the Secret's metadata is kept as the
	// operator writes it and Secrets left behind by a rename are deleted.
	actKeep action = iota
	// actRefresh: ask OpsNow for a new token and write it.
	actRefresh
	// actWritePending: write the token minted by an attempt whose write
	// failed, without asking OpsNow again.
	actWritePending
	// actWait: an attempt failed and its backoff has not passed; nothing
	// changed that would make an earlier retry worth it.
	actWait
	// actFail: a refresh cannot start because of its inputs (the API key
	// cannot be read); recorded like any failed attempt.
	actFail
	// actStall: nothing can succeed until the user changes something;
	// nothing is requested or written.
	actStall
	// actSuspend: spec.suspend is set.
	actSuspend
)

var actionNames = [...]string{"keep", "refresh", "write-pending", "wait", "fail", "stall", "suspend"}

func (a action) String() string { return actionNames[a] }

// plan is the outcome of decide.
type plan struct {
	Action action
	// Cause says why a refresh is due (actRefresh, actWritePending, actWait).
	Cause string
	// At is when the held token is due for refresh (actKeep) or the retry
	// time (actWait).
	At time.Time
	// Err is the failure actFail records; Reason and Message describe actStall.
	Err             error
	Reason, Message string
}

// Causes of a refresh, as logged and put in events.
const (
	causeSecretMissing    = "no token in a target Secret yet, or the Secret was deleted"
	causeSecretEdited     = "target Secret edited"
	causeSpecChanged      = "spec changed"
	causeAPIKeyChanged    = "API key changed"
	causeRefreshRequested = "refresh requested"
	causeExpired          = "token expired"
	causeScheduled        = "scheduled refresh"
)

// decide turns what gather read into a plan. It is a pure function of in:
// every branch is table-tested in decide_test.go.
func decide(in inputs) plan {
	switch {
	case in.Token.Spec.Suspend:
		return plan{Action: actSuspend}
	case in.EndpointErr != nil:
		return plan{Action: actStall, Reason: authv1alpha1.ReasonEndpointNotAllowed, Message: in.EndpointErr.Error()}
	case in.SecretConflict:
		return plan{Action: actStall, Reason: authv1alpha1.ReasonSecretConflict, Message: fmt.Sprintf(
			"Secret %q exists and is not controlled by this OpsnowToken; it is left untouched", in.SecretName)}
	}

	cause := refreshCause(in)
	if cause == "" && in.APIKeyErr == nil {
		return plan{Action: actKeep, At: in.schedule().RefreshAt}
	}
	if retryAt, waiting := in.backoffUntil(); waiting {
		return plan{Action: actWait, Cause: cause, At: retryAt}
	}
	if cause == "" {
		// The held token stays valid, but the key it came from cannot be
		// read: the user hears of it now rather than at the next refresh.
		return plan{Action: actFail, Err: in.APIKeyErr}
	}
	if in.pendingUsable() {
		return plan{Action: actWritePending, Cause: cause}
	}
	return plan{Action: actRefresh, Cause: cause}
}

// refreshCause returns why the token in the Secret must be replaced now, or
// "" when it can stay until its refresh time.
func refreshCause(in inputs) string {
	switch {
	case in.Secret == nil:
		return causeSecretMissing
	case !in.Intact:
		return causeSecretEdited
	case in.Held.SpecHash != in.SpecHash:
		return causeSpecChanged
	case in.refreshRequest() != "" && in.refreshRequest() != in.Held.RefreshRequest:
		return causeRefreshRequested
	case in.APIKey != nil && !hashMatches(in.Held.APIKeyHash, in.APIKey.Value):
		return causeAPIKeyChanged
	case !in.Now.Before(in.Held.ExpiresAt):
		return causeExpired
	case !in.Now.Before(in.schedule().RefreshAt):
		return causeScheduled
	}
	return ""
}

// schedule is the held token's refresh plan.
func (in inputs) schedule() schedule {
	return refreshTime(in.Held.IssuedAt, in.Held.ExpiresAt, refreshBefore(in.Token),
		string(in.Token.UID)+in.Held.ExpiresAt.String())
}

// heldIsCurrent reports whether the held token was issued for the current
// spec and API key, whatever its expiry: such a token keeps Ready=True
// while refreshes fail.
func (in inputs) heldIsCurrent() bool {
	return in.Secret != nil && in.Intact && in.Held.SpecHash == in.SpecHash &&
		(in.APIKey == nil || hashMatches(in.Held.APIKeyHash, in.APIKey.Value))
}

// backoffUntil returns the retry time of the last failed attempt while it
// is still ahead and nothing has changed since that would make an earlier
// attempt worth it: the spec, the API-key Secret, the refresh request, or
// the endpoint recovering from an outage.
func (in inputs) backoffUntil() (time.Time, bool) {
	st := in.Token.Status
	if st.FailedAttempts == 0 || st.NextRefreshTime == nil || !in.Now.Before(st.NextRefreshTime.Time) {
		return time.Time{}, false
	}
	if in.Token.Generation != st.ObservedGeneration || in.Woken {
		return time.Time{}, false
	}
	// After a restart the fingerprint is unknown; waiting out the recorded
	// retry time is the cautious choice towards OpsNow.
	if in.FailedInputs != "" && in.FailedInputs != inputsFingerprint(in) {
		return time.Time{}, false
	}
	return st.NextRefreshTime.Time, true
}

// inputsFingerprint identifies the inputs an attempt ran with, beyond the
// spec (whose generation status records): the API-key Secret's version and
// the refresh request.
func inputsFingerprint(in inputs) string {
	return "key=" + in.APIKeyVersion + ",request=" + in.refreshRequest()
}

// pendingUsable reports whether the token minted by an earlier attempt can
// be written instead of asking for another: it was issued for the current
// spec, API-key Secret version and refresh request, and is not yet due.
func (in inputs) pendingUsable() bool {
	p := in.Pending
	if p == nil || p.SpecHash != in.SpecHash || p.APIKeyVersion != in.APIKeyVersion ||
		p.RefreshRequest != in.refreshRequest() {
		return false
	}
	due := refreshTime(p.IssuedAt, p.ExpiresAt, refreshBefore(in.Token), string(in.Token.UID)+p.ExpiresAt.String())
	return in.Now.Before(due.RefreshAt)
}

func refreshBefore(tok *authv1alpha1.OpsnowToken) time.Duration {
	if tok.Spec.RefreshBefore == nil {
		return 0
	}
	return tok.Spec.RefreshBefore.Duration
}
