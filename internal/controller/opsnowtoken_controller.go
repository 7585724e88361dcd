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

// Package controller is the OpsnowToken reconciler: for each OpsnowToken it
// exchanges the API key for an OpsNow access token, keeps the token in the
// target Secret, refreshes it before it expires and reports progress in the
// OpsnowToken's status. Setup wires it into a controller-runtime manager.
package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/endpoint"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/opsnow"
)

// TokenExchanger exchanges an API key for an access token at an endpoint.
// opsnow.Client implements it.
type TokenExchanger interface {
	Exchange(ctx context.Context, endpoint, apiKey string) (opsnow.Token, error)
}

// Options are what an OpsnowTokenReconciler is built from. Setup fills the
// cluster-facing ones from the manager.
type Options struct {
	// Client reads OpsnowTokens from the cache and writes Secrets and status.
	Client client.Client
	// APIReader reads Secrets straight from the API server: API keys, a
	// target Secret's data when its version is not one already checked, a
	// target missing from the metadata cache. The manager caches no Secret.
	APIReader client.Reader
	// SecretMetadata reads the metadata-only Secret cache: target Secrets'
	// versions and the operator's annotations, API-key versions, conflicts.
	SecretMetadata client.Reader
	Scheme         *runtime.Scheme
	Recorder       events.EventRecorder

	// Clock is the time refreshes are planned on; tests pass a fake one.
	Clock     clock.WithDelayedExecution
	Exchanger TokenExchanger
	// Endpoints is the allowlist spec.endpoint is checked against.
	Endpoints *endpoint.Allowlist
	// DefaultEndpoint is used when spec.endpoint is empty.
	DefaultEndpoint string
	// TokenRequestRate limits token requests per second per endpoint
	// origin; 0 means unlimited.
	TokenRequestRate float64
	// MaxConcurrentReconciles is the number of OpsnowTokens reconciled in parallel.
	MaxConcurrentReconciles int
	// WatchNamespaces restricts every watch; empty means all namespaces.
	WatchNamespaces []string
	// APIKeySecretSelector, when not empty, is what an API-key Secret's
	// labels must match for its key to be sent.
	APIKeySecretSelector labels.Selector
}

// OpsnowTokenReconciler keeps each OpsnowToken's target Secret holding a
// valid access token, refreshed before it expires.
type OpsnowTokenReconciler struct {
	client          client.Client
	apiReader       client.Reader
	secretMetadata  client.Reader
	scheme          *runtime.Scheme
	recorder        events.EventRecorder
	clock           clock.WithDelayedExecution
	exchanger       TokenExchanger
	endpoints       *endpoint.Allowlist
	defaultEndpoint string
	workers         int
	namespaces      []string
	apiKeySelector  labels.Selector

	// scheduler wakes tokens at their planned refresh or retry time.
	scheduler *refreshScheduler
	// limiter spaces token requests per endpoint origin; nil is unlimited.
	limiter *EndpointRateLimiter
	// recovery wakes the tokens waiting on an endpoint when it answers again.
	recovery *endpointRecovery
	// memory holds per-token facts that need no persistence.
	memory *memories
	// refreshCounts backs the opsnow_token_refresh_total series.
	refreshCounts *refreshCounts
	// secretUsers maps Secret events to the OpsnowTokens that use them.
	secretUsers *secretUsers
}

// NewOpsnowTokenReconciler builds a reconciler and all its internal state.
func NewOpsnowTokenReconciler(o Options) *OpsnowTokenReconciler {
	workers := o.MaxConcurrentReconciles
	if workers <= 0 {
		workers = DefaultMaxConcurrentReconciles
	}
	clk := o.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &OpsnowTokenReconciler{
		client:          o.Client,
		apiReader:       o.APIReader,
		secretMetadata:  o.SecretMetadata,
		scheme:          o.Scheme,
		recorder:        o.Recorder,
		clock:           clk,
		exchanger:       o.Exchanger,
		endpoints:       o.Endpoints,
		defaultEndpoint: o.DefaultEndpoint,
		workers:         workers,
		namespaces:      o.WatchNamespaces,
		apiKeySelector:  o.APIKeySecretSelector,
		scheduler:       newRefreshScheduler(clk),
		limiter:         NewEndpointRateLimiter(o.TokenRequestRate),
		recovery:        newEndpointRecovery(),
		memory:          newMemories(),
		refreshCounts:   newRefreshCounts(),
		secretUsers:     newSecretUsers(),
	}
}

// Event reasons besides the Ready reasons.
const (
	eventTokenRefreshed       = "TokenRefreshed"
	eventRefreshBeforeIgnored = "RefreshBeforeIgnored"
	eventOldSecretDeleted     = "OldSecretDeleted"
)

// The manager's RBAC, and no more (security_test.go holds the exact list):
// OpsnowTokens are read and their status merge-patched; Secrets are listed
// and watched by metadata only, read (API keys, a target's data when it may
// have changed), created and patched (a merge patch under resourceVersion,
// so the data need not be read first), and deleted only when a change of
// spec.secretName leaves one behind that an OpsnowToken controls (delete
// also lets the OwnerReferencesPermissionEnforcement admission plugin accept
// the owner reference); events are written through events.k8s.io/v1, patch
// extending an event series.
// +kubebuilder:rbac:groups=auth.opsnow.io,resources=opsnowtokens,verbs=get;list;watch
// +kubebuilder:rbac:groups=auth.opsnow.io,resources=opsnowtokens/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one OpsnowToken's target Secret and status up to date:
// gather what it depends on, decide what to do, act, then record the
// outcome in one status patch and plan the next look.
func (r *OpsnowTokenReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	tok, err := r.getToken(ctx, req.NamespacedName)
	if err != nil || tok == nil {
		return ctrl.Result{}, err
	}
	if !tok.DeletionTimestamp.IsZero() {
		// The garbage collector removes the Secret; nothing is requested
		// or written for a token on its way out.
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	in, err := r.gather(ctx, tok)
	if err != nil {
		// Only reads failed: nothing was sent or written, and the
		// workqueue's backoff retries the reads.
		return ctrl.Result{}, err
	}
	p := decide(in)
	out := r.act(ctx, in, p)
	s := summarize(in, p, out)
	r.remember(in, p, out, s)
	r.record(ctx, in, p, out, s)
	r.scheduler.schedule(req.NamespacedName, s.WakeAt)
	return ctrl.Result{}, r.patchStatus(ctx, tok, s.Status)
}

// SecretMetadata is the cache of Secret metadata the reconciler reads: all
// the manager holds of any Secret.
func (r *OpsnowTokenReconciler) SecretMetadata() client.Reader { return r.secretMetadata }

// getToken returns the OpsnowToken, nil when it is gone, with the newest
// status this reconciler knows of.
func (r *OpsnowTokenReconciler) getToken(ctx context.Context, key types.NamespacedName) (*authv1alpha1.OpsnowToken, error) {
	tok := &authv1alpha1.OpsnowToken{}
	if err := r.client.Get(ctx, key, tok); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(key)
			return nil, nil
		}
		return nil, fmt.Errorf("get OpsnowToken: %w", err)
	}
	return r.freshToken(ctx, tok)
}

// act carries out the plan. Every failure is returned in the outcome, for
// summarize to record; none is left to the workqueue's own retry.
func (r *OpsnowTokenReconciler) act(ctx context.Context, in inputs, p plan) outcome {
	out := outcome{Jitter: rand.Float64()} //nolint:gosec // G404: retry jitter spreads load; it guards nothing, so math/rand is enough
	switch p.Action {
	case actRefresh:
		r.refresh(ctx, in, &out)
	case actWritePending:
		r.writeToken(ctx, in, *in.Pending, &out)
	case actKeep:
		// Puts back what of the operator's was edited: its labels and
		// annotations, and, when the data was read (it changed since the
		// operator last saw it), the data too. Writes nothing when the
		// Secret is as written.
		var err error
		if in.Held.Token != "" {
			err = r.writeSecret(ctx, in, in.Held, &out)
		} else {
			err = r.writeSecretMetadata(ctx, in, &out)
		}
		if err != nil {
			out.Err = err
		}
		if in.APIKey != nil && in.APIKeyErr == nil {
			r.memory.update(client.ObjectKeyFromObject(in.Token), func(m *tokenMemory) {
				m.apiKeyMatchedVersion = in.APIKeyVersion
			})
		}
	}
	if out.Err == nil && (p.Action == actKeep || out.Issued != nil) {
		out.Deleted, out.Err = r.deleteOrphans(ctx, in)
	}
	if out.Err != nil {
		out.HeldToken = r.heldTokenToRedact(ctx, in, out.Err)
	}
	out.Now = r.clock.Now()
	return out
}

// heldTokenToRedact returns the token the target Secret holds, so that a
// failure message quoting it can be redacted. The cache holds no Secret
// data, so it is read, on this failure path alone and only for a message
// written elsewhere (by OpsNow, or by the API server refusing a write):
// the operator's own messages quote no token. Empty when it cannot be read.
func (r *OpsnowTokenReconciler) heldTokenToRedact(ctx context.Context, in inputs, failure error) string {
	var own *refreshError
	if errors.As(failure, &own) && own.Reason != authv1alpha1.ReasonSecretWriteFailed {
		return in.Held.Token
	}
	if in.Held.Token != "" || in.Secret == nil {
		return in.Held.Token
	}
	s := &corev1.Secret{}
	if err := r.apiReader.Get(ctx, client.ObjectKeyFromObject(in.Secret), s); err != nil || !metav1.IsControlledBy(s, in.Token) {
		return ""
	}
	return string(s.Data[authv1alpha1.SecretTokenKey])
}

// refresh takes a request slot, reads the API key, exchanges it and writes
// the new token. A token whose write fails is kept, so that the retry
// writes it rather than asking OpsNow again.
func (r *OpsnowTokenReconciler) refresh(ctx context.Context, in inputs, out *outcome) {
	key := client.ObjectKeyFromObject(in.Token)
	if in.APIKeyErr != nil {
		// gather read the key and failed: no slot taken, no second read.
		out.Err = in.APIKeyErr
		return
	}
	if at := r.limiter.Reserve(key, in.Endpoint, r.clock.Now()); at.After(r.clock.Now()) {
		out.SlotAt = at
		return
	}
	apiKey := in.APIKey
	if apiKey == nil {
		var err error
		if apiKey, err = r.readAPIKey(ctx, in.Token); err != nil {
			out.Err = err
			return
		}
	}
	start := time.Now()
	token, err := r.exchanger.Exchange(ctx, in.Endpoint, apiKey.Value)
	exchangeDuration.Observe(time.Since(start).Seconds())
	r.noteExchange(key, in.Endpoint, err)
	if err != nil {
		out.Err = err
		return
	}
	minted := heldToken{
		Token:          token.AccessToken,
		IssuedAt:       token.IssuedAt.Truncate(time.Second),
		ExpiresAt:      token.ExpiresAt.Truncate(time.Second),
		SpecHash:       in.SpecHash,
		APIKeyHash:     saltedHash(apiKey.Value),
		APIKeyVersion:  apiKey.Version,
		RefreshRequest: in.refreshRequest(),
	}
	r.writeToken(ctx, in, minted, out)
}

// writeToken writes a minted token to the target Secret. Until that
// succeeds, the token is kept in memory for the retry.
func (r *OpsnowTokenReconciler) writeToken(ctx context.Context, in inputs, minted heldToken, out *outcome) {
	key := client.ObjectKeyFromObject(in.Token)
	if err := r.writeSecret(ctx, in, minted, out); err != nil {
		r.memory.update(key, func(m *tokenMemory) { m.pending = &minted })
		out.Err, out.Minted = err, minted.Token
		return
	}
	r.memory.update(key, func(m *tokenMemory) { m.pending = nil })
	out.Issued = &minted
}

// writeSecret creates the target Secret or updates it to hold held, and
// notes the resourceVersion written in out. A refused write is
// SecretWriteFailed.
func (r *OpsnowTokenReconciler) writeSecret(ctx context.Context, in inputs, held heldToken, out *outcome) error {
	tok := in.Token
	if in.Secret == nil {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: tok.Namespace, Name: in.SecretName}}
		desiredSecretContent(tokenLabels(tok.Name), tok.Spec.SecretTemplate, held, "").apply(s)
		// blockOwnerDeletion stays false: setting it true needs the update
		// verb on opsnowtokens/finalizers under the
		// OwnerReferencesPermissionEnforcement admission plugin, and
		// nothing here needs the owner's deletion to wait for the Secret.
		if err := controllerutil.SetControllerReference(tok, s, r.scheme, controllerutil.WithBlockOwnerDeletion(false)); err != nil {
			return secretWriteError("set the owner of", in.SecretName, err)
		}
		if err := r.client.Create(ctx, s); err != nil {
			return secretWriteError("create", in.SecretName, err)
		}
		out.SecretVersion = s.ResourceVersion
		return nil
	}
	return r.patchSecret(ctx, in, desiredSecretContent(tokenLabels(tok.Name), tok.Spec.SecretTemplate, held, in.Secret.Annotations[tokenHashAnnotation]), out)
}

// writeSecretMetadata puts back the operator's labels and annotations of a
// Secret whose token stays, and the template's; its data is neither read
// nor written.
func (r *OpsnowTokenReconciler) writeSecretMetadata(ctx context.Context, in inputs, out *outcome) error {
	if in.Secret == nil || !in.Intact {
		return nil
	}
	c := desiredSecretMetadata(tokenLabels(in.Token.Name), in.Token.Spec.SecretTemplate, in.Held, in.Secret.Annotations[tokenHashAnnotation])
	return r.patchSecret(ctx, in, c, out)
}

// patchSecret changes the target Secret to have c (see patchSecret) and
// notes the resourceVersion written, or kept, in out.
func (r *OpsnowTokenReconciler) patchSecret(ctx context.Context, in inputs, c secretContent, out *outcome) error {
	version, err := patchSecret(ctx, r.client, in.Secret, c)
	if err != nil {
		return secretWriteError("update", in.SecretName, err)
	}
	if version == in.Secret.ResourceVersion {
		version = in.SecretVersion
	}
	out.SecretVersion = version
	return nil
}

// patchSecret changes the existing Secret cur to have c, with a merge patch
// that holds only what differs, under cur's resourceVersion: the Secret's
// data need not be read to be replaced, and a Secret changed since is a
// conflict retried on fresh inputs rather than overwritten. cur is either
// the Secret read from the API server (it has data) or its cached metadata
// (no data, and of its labels and annotations only the operator's). It
// returns the resourceVersion after the patch, cur's when nothing was to
// be written.
func patchSecret(ctx context.Context, w client.Writer, cur *corev1.Secret, c secretContent) (string, error) {
	base := &corev1.Secret{ObjectMeta: *cur.ObjectMeta.DeepCopy(), Type: cur.Type, Data: cur.Data}
	metadataOnly := base.Data == nil
	if metadataOnly {
		markTemplated(base)
	}
	s := base.DeepCopy()
	changed := c.apply(s)
	if metadataOnly && c.Data == nil {
		// The template's keys are not cached, so they always look
		// missing here; the operator's keys, which are cached and record
		// the template applied (its keys and hash), tell whether anything
		// is to be written.
		changed = !maps.Equal(operatorKeys(s.Labels), operatorKeys(base.Labels)) ||
			!maps.Equal(operatorKeys(s.Annotations), operatorKeys(base.Annotations))
	}
	if !changed {
		return cur.ResourceVersion, nil
	}
	if metadataOnly && c.Data != nil {
		// Unknown data: the patch replaces the operator's keys.
		s.Type = base.Type
	}
	if err := w.Patch(ctx, s, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return "", err
	}
	return s.ResourceVersion, nil
}

// unknownValue stands, in a patch's base, for the value of a label or
// annotation the metadata cache does not hold. No label or annotation can
// have it, so a key set to any value differs from it, and a key removed
// becomes null in the patch.
const unknownValue = "\x00"

// markTemplated gives base, a Secret's cached metadata, the keys the
// template set last (its annotations list them) that the cache dropped,
// so that a merge patch computed from base removes those dropped from the
// template.
func markTemplated(base *corev1.Secret) {
	for _, k := range splitKeys(base.Annotations[templateLabelsAnnotation]) {
		if _, ok := base.Labels[k]; !ok {
			if base.Labels == nil {
				base.Labels = map[string]string{}
			}
			base.Labels[k] = unknownValue
		}
	}
	for _, k := range splitKeys(base.Annotations[templateAnnotationsAnnotation]) {
		if _, ok := base.Annotations[k]; !ok {
			base.Annotations[k] = unknownValue
		}
	}
}

// deleteOrphans deletes the Secrets this OpsnowToken controls besides its
// target: those a change of spec.secretName left behind, as gather found
// them controlled. The UID precondition keeps a Secret recreated under that
// name by someone else safe.
func (r *OpsnowTokenReconciler) deleteOrphans(ctx context.Context, in inputs) ([]string, error) {
	var deleted []string
	for _, o := range in.Orphans {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: in.Token.Namespace, Name: o.Name}}
		err := r.client.Delete(ctx, s, client.Preconditions{UID: &o.UID})
		switch {
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			continue // gone, or replaced by a Secret that is not ours
		case err != nil:
			return deleted, secretWriteError("delete old", o.Name, err)
		}
		deleted = append(deleted, o.Name)
	}
	return deleted, nil
}

// secretWriteError is a refused write of a Secret, as the user sees it:
// the API server's reason and message (an admission policy's message says
// what to change), which never hold Secret data.
func secretWriteError(verb, name string, err error) *refreshError {
	return &refreshError{Reason: authv1alpha1.ReasonSecretWriteFailed,
		Message: fmt.Sprintf("cannot %s Secret %q: %s", verb, name, err)}
}

// maxMessageLength bounds messages taken from the API server in status.
const maxMessageLength = 1024

// remember keeps what the next reconcile needs and status does not hold:
// the inputs of a failed attempt, so that a change of them ends the backoff.
func (r *OpsnowTokenReconciler) remember(in inputs, p plan, out outcome, s summary) {
	key := client.ObjectKeyFromObject(in.Token)
	version := in.SecretVersion
	if out.SecretVersion != "" {
		version = out.SecretVersion
	}
	r.memory.update(key, func(m *tokenMemory) { m.secretVersion = version })
	switch {
	case s.Failure != nil:
		r.memory.update(key, func(m *tokenMemory) { m.failedInputs, m.failedReason = inputsFingerprint(in), s.Failure.Reason })
	case p.Action != actWait && s.Status.FailedAttempts == 0:
		r.memory.update(key, func(m *tokenMemory) { m.failedInputs, m.failedReason = "", "" })
	}
	if p.Action == actSuspend || p.Action == actStall {
		r.limiter.Forget(key, r.clock.Now())
	}
}

// patchStatus writes status when it changed.
func (r *OpsnowTokenReconciler) patchStatus(ctx context.Context, tok *authv1alpha1.OpsnowToken, status authv1alpha1.OpsnowTokenStatus) error {
	next := tok.DeepCopy()
	next.Status = status
	if equality.Semantic.DeepEqual(tok.Status, status) {
		return nil
	}
	if err := r.client.Status().Patch(ctx, next, client.MergeFrom(tok)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("patch status: %w", err)
	}
	r.memory.update(client.ObjectKeyFromObject(tok), func(m *tokenMemory) { m.statusVersion = next.ResourceVersion })
	return nil
}

// record is the one place a reconcile's outcome is told: logs, the refresh
// counter and events (a Warning for each failure and for a stall the user
// must resolve, a Normal event for a new token unless its refresh was
// routine).
func (r *OpsnowTokenReconciler) record(ctx context.Context, in inputs, p plan, out outcome, s summary) {
	tok, ref := in.Token, eventRef(in.Token)
	log := logf.FromContext(ctx)
	oldReason := ""
	if c := apimeta.FindStatusCondition(tok.Status.Conditions, authv1alpha1.ConditionReady); c != nil {
		oldReason = c.Reason
	}
	if f := s.Failure; f != nil {
		r.refreshCounts.add(client.ObjectKeyFromObject(tok), false)
		retry := s.Status.NextRefreshTime.UTC().Format(time.RFC3339)
		log.Info("Token refresh failed", "reason", f.Reason, "message", f.Message,
			"failedAttempts", s.Status.FailedAttempts, "retryAt", retry)
		// Events of one reason are aggregated by the recorder: no flood.
		r.recorder.Eventf(ref, nil, corev1.EventTypeWarning, f.Reason, "Refresh",
			"Token refresh failed: %s; retrying at %s", f.Message, retry)
	}
	switch {
	case p.Action == actStall && oldReason != p.Reason:
		r.recorder.Eventf(ref, nil, corev1.EventTypeWarning, p.Reason, "Refresh", "%s", p.Message)
	case p.Action == actSuspend && oldReason != authv1alpha1.ReasonSuspended:
		r.recorder.Eventf(ref, nil, corev1.EventTypeNormal, authv1alpha1.ReasonSuspended, "Refresh",
			"Refreshing is suspended; the token in the Secret is not renewed")
	}
	if issued := out.Issued; issued != nil {
		r.refreshCounts.add(client.ObjectKeyFromObject(tok), true)
		log.Info("Refreshed access token", "secret", in.SecretName, "cause", p.Cause,
			"expiresAt", issued.ExpiresAt, "refreshAt", s.Schedule.RefreshAt)
		// A planned refresh without earlier failures is routine: status
		// and metrics show it, and an event for each would add a write per
		// token every two thirds of a lifetime. Events mark what a user
		// looks for: a first token, a change, a manual refresh, the end of
		// failures.
		if p.Cause != causeScheduled || tok.Status.FailedAttempts > 0 {
			r.recorder.Eventf(ref, nil, corev1.EventTypeNormal, eventTokenRefreshed, "Refresh",
				"Wrote a new access token to Secret %s (%s); it expires at %s", in.SecretName, p.Cause,
				issued.ExpiresAt.UTC().Format(time.RFC3339))
		}
		if s.Schedule.RefreshBeforeIgnored {
			r.recorder.Eventf(ref, nil, corev1.EventTypeWarning, eventRefreshBeforeIgnored, "Refresh",
				"spec.refreshBefore (%s) is not shorter than the token lifetime (%s); refreshing at two thirds of the lifetime instead",
				refreshBefore(tok), issued.ExpiresAt.Sub(issued.IssuedAt))
		}
	}
	for _, name := range out.Deleted {
		r.recorder.Eventf(ref, nil, corev1.EventTypeNormal, eventOldSecretDeleted, "Refresh",
			"Deleted Secret %s, which this OpsnowToken wrote before spec.secretName changed to %s", name, in.SecretName)
	}
}

// forget drops what is kept about an OpsnowToken that is gone or going.
func (r *OpsnowTokenReconciler) forget(key types.NamespacedName) {
	r.memory.forget(key)
	r.scheduler.cancel(key)
	r.recovery.forget(key)
	r.limiter.Forget(key, r.clock.Now())
	r.refreshCounts.forget(key)
}

// eventRef refers to tok in events without its resourceVersion. Every status
// patch changes that, and the event recorder aggregates repeated events (a
// failure retried with backoff) only while they name the same reference.
func eventRef(tok *authv1alpha1.OpsnowToken) *corev1.ObjectReference {
	return &corev1.ObjectReference{
		APIVersion: authv1alpha1.GroupVersion.String(),
		Kind:       "OpsnowToken",
		Namespace:  tok.Namespace,
		Name:       tok.Name,
		UID:        tok.UID,
	}
}
