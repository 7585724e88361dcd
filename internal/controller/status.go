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
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/opsnow"
)

// outcome is what acting on a plan did.
type outcome struct {
	// Now is the clock after acting: a token request can take seconds, and
	// planning from a time read before it would plan in the past.
	Now time.Time
	// Issued is the token this reconcile wrote to the Secret.
	Issued *heldToken
	// SlotAt, when set, is the time the token request may be sent under
	// the endpoint's rate limit; nothing was sent.
	SlotAt time.Time
	// Err is the failure of a step. Every one, whatever the step, is
	// recorded the same way by summarize.
	Err error
	// Deleted names the Secrets a rename left behind that were deleted.
	Deleted []string
	// Jitter in [0, 1) spreads the retries of tokens that failed together.
	Jitter float64
	// SecretVersion is the target Secret's resourceVersion after a write,
	// or unchanged when the Secret needed none; "" when nothing was written.
	SecretVersion string
	// HeldToken is the token in the target Secret, read after a failure so
	// that a message quoting it is redacted.
	HeldToken string
	// Minted is a token this reconcile minted and could not write: the
	// refused write carried it, and the refusal may quote it.
	Minted string
}

// reportSlotWaitAfter is the shortest wait for a request slot that status
// reports as Reconciling: a token created in a burst may wait N/rate
// seconds for its first token, and kstatus must see it in progress then.
const reportSlotWaitAfter = 5 * time.Second

// summary is the status a reconcile leaves and what follows from it.
type summary struct {
	Status authv1alpha1.OpsnowTokenStatus
	// WakeAt is when to look at the token again; zero when only a change
	// of its inputs can make a difference.
	WakeAt time.Time
	// Failure is the failure recorded, if any.
	Failure *refreshError
	// Schedule is the refresh plan of a token written by this reconcile.
	Schedule schedule
}

// refreshError is a failed step and the Ready reason it records.
type refreshError struct {
	Reason       string
	Message      string
	RetryAfter   time.Duration
	Unauthorized bool
}

func (e *refreshError) Error() string { return e.Message }

// stalledReasons need the user: nothing can succeed until an input changes,
// and kstatus reads them as failed rather than in progress.
var stalledReasons = map[string]bool{
	authv1alpha1.ReasonEndpointNotAllowed:     true,
	authv1alpha1.ReasonSecretConflict:         true,
	authv1alpha1.ReasonAPIKeySecretNotAllowed: true,
}

// summarize computes the status a reconcile leaves from what was read, the
// plan and what acting did. It is the one door every failure goes through
// (failed): a reason, a message, failedAttempts, the backoff capped before
// expiry, Ready kept True while the held token is still good.
// status.observedGeneration follows Flux's rule: it is set once the
// generation reached an outcome (a token, a recorded failure, a stall), not
// while a request waits for its slot.
func summarize(in inputs, p plan, out outcome) summary {
	d := newDraft(in, out)
	switch {
	case p.Action == actSuspend:
		d.stalled(authv1alpha1.ReasonSuspended, "Refreshing is suspended; the token in the Secret is not renewed", false)
	case p.Action == actStall:
		d.stalled(p.Reason, p.Message, true)
	case out.Err != nil:
		d.failed(out.Err, out.Jitter)
	case p.Action == actFail:
		d.failed(p.Err, out.Jitter)
	case !out.SlotAt.IsZero():
		d.waitingForSlot(out.SlotAt)
	case p.Action == actWait:
		d.waitingToRetry(p.At, in.FailedReason)
	default: // the held or the new token is current
		d.ready(in.Token)
	}
	d.s.Status = *d.st
	return d.s
}

// draft is the status being computed for one reconcile.
type draft struct {
	st       *authv1alpha1.OpsnowTokenStatus
	s        summary
	now      time.Time
	gen      int64
	held     heldToken
	valid    bool // held is current and unexpired
	redacted []string
}

func newDraft(in inputs, out outcome) *draft {
	d := &draft{st: in.Token.Status.DeepCopy(), now: out.Now, gen: in.Token.Generation}
	d.st.SecretName = in.SecretName
	held, current := in.Held, in.heldIsCurrent()
	if out.Issued != nil {
		held, current = *out.Issued, true
	}
	d.held, d.valid = held, current && out.Now.Before(held.ExpiresAt)
	d.redacted = []string{held.Token, pendingToken(in), out.HeldToken, out.Minted}
	if current && held.RefreshRequest != "" {
		// Read back from the Secret, so that a restart between the Secret
		// write and the status patch still confirms the request.
		d.st.LastHandledRefreshRequest = held.RefreshRequest
	}
	return d
}

// stalled records a state only the user can change (suspend, or a stall
// reason with Stalled=True): nothing is planned.
func (d *draft) stalled(reason, message string, stall bool) {
	d.st.ObservedGeneration = d.gen
	d.st.NextRefreshTime = nil
	var extra *metav1.Condition
	if stall {
		c := trueCondition(authv1alpha1.ConditionStalled, reason, message)
		extra = &c
	}
	setConditions(d.st, d.gen, d.now, falseCondition(authv1alpha1.ConditionReady, reason, message), extra)
}

// failed is the failure door: whatever step failed, the same record and
// the same backoff, capped to land before the held token expires.
func (d *draft) failed(err error, jitter float64) {
	rerr := classify(err, d.redacted...)
	st := d.st
	st.ObservedGeneration = d.gen
	st.FailedAttempts++
	st.LastFailureMessage = rerr.Message
	var keepUntil time.Time
	if d.valid {
		keepUntil = d.held.ExpiresAt
	}
	next := nextRetry(retryPolicy{
		Attempts:     st.FailedAttempts,
		Unauthorized: rerr.Unauthorized,
		RetryAfter:   rerr.RetryAfter,
		Jitter:       jitter,
	}, d.now, keepUntil)
	st.NextRefreshTime = &metav1.Time{Time: next}
	switch {
	case d.valid:
		markReady(st, d.gen, d.now, d.held)
	case stalledReasons[rerr.Reason]:
		stalled := trueCondition(authv1alpha1.ConditionStalled, rerr.Reason, rerr.Message)
		setConditions(st, d.gen, d.now, falseCondition(authv1alpha1.ConditionReady, rerr.Reason, rerr.Message), &stalled)
	default:
		retrying := trueCondition(authv1alpha1.ConditionReconciling, rerr.Reason,
			fmt.Sprintf("Retrying at %s", next.UTC().Format(time.RFC3339)))
		setConditions(st, d.gen, d.now, falseCondition(authv1alpha1.ConditionReady, rerr.Reason, rerr.Message), &retrying)
	}
	d.s.Failure, d.s.WakeAt = rerr, next
}

// waitingForSlot is not an outcome: the generation is not observed yet, and
// a token still good stays Ready untouched. A first token says it waits.
func (d *draft) waitingForSlot(at time.Time) {
	d.s.WakeAt = at
	if d.valid {
		d.s.WakeAt = earliest(at, d.held.ExpiresAt)
		return
	}
	if at.Sub(d.now) < reportSlotWaitAfter ||
		apimeta.IsStatusConditionTrue(d.st.Conditions, authv1alpha1.ConditionReconciling) {
		// Too short a wait to be worth a status write of its own; or
		// status already says the token is on its way (a retry after a
		// failure), and a write per attempt during an outage would double
		// its writes.
		return
	}
	msg := fmt.Sprintf("Waiting for a token request slot at %s (--token-request-rate)", at.UTC().Format(time.RFC3339))
	progressing := trueCondition(authv1alpha1.ConditionReconciling, authv1alpha1.ReasonProgressing, msg)
	setConditions(d.st, d.gen, d.now, falseCondition(authv1alpha1.ConditionReady, authv1alpha1.ReasonProgressing, msg), &progressing)
}

// waitingToRetry keeps the failure's record until its retry time; a held
// token that expires meanwhile turns Ready False with the failure's reason.
func (d *draft) waitingToRetry(at time.Time, failedReason string) {
	d.s.WakeAt = at
	if d.valid {
		markReady(d.st, d.gen, d.now, d.held)
		d.s.WakeAt = earliest(at, d.held.ExpiresAt)
		return
	}
	if !apimeta.IsStatusConditionTrue(d.st.Conditions, authv1alpha1.ConditionReady) {
		return
	}
	reason := failedReason
	if reason == "" { // not known after a restart
		reason = authv1alpha1.ReasonUpstreamUnavailable
	}
	retrying := trueCondition(authv1alpha1.ConditionReconciling, reason,
		fmt.Sprintf("Retrying at %s", at.UTC().Format(time.RFC3339)))
	setConditions(d.st, d.gen, d.now, falseCondition(authv1alpha1.ConditionReady, reason,
		"The token expired; "+d.st.LastFailureMessage), &retrying)
}

// ready records the current token, clears the failures and plans its refresh.
func (d *draft) ready(tok *authv1alpha1.OpsnowToken) {
	st := d.st
	st.ObservedGeneration = d.gen
	st.FailedAttempts = 0
	st.LastFailureMessage = ""
	d.s.Schedule = refreshTime(d.held.IssuedAt, d.held.ExpiresAt, refreshBefore(tok),
		string(tok.UID)+d.held.ExpiresAt.String())
	st.NextRefreshTime = &metav1.Time{Time: d.s.Schedule.RefreshAt}
	markReady(st, d.gen, d.now, d.held)
	d.s.WakeAt = d.s.Schedule.RefreshAt
}

// markReady sets Ready=True for held and the token's times in status.
func markReady(st *authv1alpha1.OpsnowTokenStatus, gen int64, now time.Time, held heldToken) {
	st.ExpiresAt = &metav1.Time{Time: held.ExpiresAt}
	st.LastRefreshTime = &metav1.Time{Time: held.IssuedAt}
	msg := fmt.Sprintf("Secret %s holds a token valid until %s", st.SecretName, held.ExpiresAt.UTC().Format(time.RFC3339))
	if st.FailedAttempts > 0 {
		msg += fmt.Sprintf("; the last %d refresh attempt(s) failed, see lastFailureMessage", st.FailedAttempts)
	}
	setConditions(st, gen, now, metav1.Condition{
		Type: authv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: authv1alpha1.ReasonTokenValid, Message: msg,
	}, nil)
}

// setConditions sets Ready and at most one of Reconciling and Stalled, the
// kstatus conditions: with neither, tools such as Flux, Argo CD and kstatus
// read Ready alone; Reconciling=True reads as in progress, Stalled=True as
// failed.
func setConditions(st *authv1alpha1.OpsnowTokenStatus, gen int64, now time.Time, ready metav1.Condition, extra *metav1.Condition) {
	stamp := metav1.NewTime(now.Truncate(time.Second))
	ready.ObservedGeneration, ready.LastTransitionTime = gen, stamp
	apimeta.SetStatusCondition(&st.Conditions, ready)
	for _, t := range []string{authv1alpha1.ConditionReconciling, authv1alpha1.ConditionStalled} {
		if extra == nil || extra.Type != t {
			apimeta.RemoveStatusCondition(&st.Conditions, t)
		}
	}
	if extra != nil {
		extra.ObservedGeneration, extra.LastTransitionTime = gen, stamp
		apimeta.SetStatusCondition(&st.Conditions, *extra)
	}
}

func trueCondition(condType, reason, message string) metav1.Condition {
	return metav1.Condition{Type: condType, Status: metav1.ConditionTrue, Reason: reason, Message: message}
}

func falseCondition(condType, reason, message string) metav1.Condition {
	return metav1.Condition{Type: condType, Status: metav1.ConditionFalse, Reason: reason, Message: message}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func pendingToken(in inputs) string {
	if in.Pending == nil {
		return ""
	}
	return in.Pending.Token
}

// classify turns the failure of any step into a refreshError with a Ready
// reason, and takes the tokens the operator holds out of its message, in
// every encoding: the OpsNow client redacts the API key and what looks like
// a credential, but cannot know those.
func classify(err error, tokens ...string) *refreshError {
	var rerr *refreshError
	var oerr *opsnow.Error
	switch {
	case errors.As(err, &rerr):
		c := *rerr
		rerr = &c
	case errors.As(err, &oerr):
		rerr = refreshErrorFrom(oerr)
	default:
		rerr = &refreshError{Reason: authv1alpha1.ReasonUpstreamUnavailable, Message: err.Error()}
	}
	if rerr.Reason == authv1alpha1.ReasonSecretWriteFailed {
		// The API server's message (an admission policy's reason) is what
		// the user acts on, and may run long.
		rerr.Message = opsnow.SanitizeLimit(rerr.Message, maxMessageLength, tokens...)
	} else {
		rerr.Message = opsnow.Sanitize(rerr.Message, tokens...)
	}
	return rerr
}

// refreshErrorFrom maps an OpsNow client error to a Ready reason.
func refreshErrorFrom(err *opsnow.Error) *refreshError {
	re := &refreshError{Message: err.Error(), RetryAfter: err.RetryAfter}
	switch {
	case errors.Is(err, opsnow.ErrUnauthorized):
		re.Reason, re.Unauthorized = authv1alpha1.ReasonUnauthorized, true
	case errors.Is(err, opsnow.ErrUnavailable):
		re.Reason = authv1alpha1.ReasonUpstreamUnavailable
	default:
		re.Reason = authv1alpha1.ReasonInvalidResponse
	}
	return re
}
