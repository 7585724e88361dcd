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
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/resourceversion"
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

// OpsnowTokenReconciler keeps each OpsnowToken's target Secret holding a
// valid access token, refreshed before it expires.
type OpsnowTokenReconciler struct {
	// Client reads OpsnowTokens and target Secrets from the cache and writes them.
	client.Client
	// APIReader reads API-key Secrets, and target Secrets missing from the
	// cache, straight from the API server: a cached read of an arbitrary
	// Secret would start a cluster-wide Secret informer.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Clock     clock.WithDelayedExecution
	Recorder  events.EventRecorder
	Exchanger TokenExchanger
	// Endpoints is the allowlist spec.endpoint is checked against.
	Endpoints *endpoint.Allowlist
	// DefaultEndpoint is used when spec.endpoint is empty.
	DefaultEndpoint string
	// RateLimiter limits token requests per endpoint; nil means unlimited.
	RateLimiter *EndpointRateLimiter
	// MaxConcurrentReconciles is the number of OpsnowTokens reconciled in parallel.
	MaxConcurrentReconciles int
	// WatchNamespaces restricts the watch of API-key Secrets; empty means all.
	WatchNamespaces []string

	// secretMetadata caches name, namespace and resourceVersion of Secrets,
	// nothing else, to notice API-key changes.
	secretMetadata secretMetadataReader
	// scheduler wakes tokens at their planned refresh or retry time.
	scheduler *refreshScheduler
	// recovery wakes the tokens waiting on an endpoint when it answers again.
	recovery *endpointRecovery
	// memory holds per-token facts that need no persistence (tokenMemory).
	memory sync.Map
}

// secretMetadataReader reads from the Secret metadata cache.
type secretMetadataReader interface {
	Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error
}

// tokenMemory is what the reconciler remembers about one OpsnowToken between
// reconciles. Losing it on restart costs at most one extra read or retry.
type tokenMemory struct {
	// apiKeyVersion is the API-key Secret resourceVersion at the last read
	// ("" when the Secret was absent); meaningful when apiKeyRead is set.
	apiKeyVersion string
	apiKeyRead    bool
	// refreshRequest is the last refresh-requested-at value acted on; it
	// guards against acting twice on a value while status is not yet in the cache.
	refreshRequest string
	// apiKeyMatchedVersion is the API-key Secret resourceVersion whose key
	// was read and found to be the one the held token was issued for.
	apiKeyMatchedVersion string
	// statusVersion is the resourceVersion returned by the last status
	// patch: a cached OpsnowToken older than that lacks the patch.
	statusVersion string
}

// refreshError is a failed refresh and the Ready reason it records.
type refreshError struct {
	Reason       string
	Message      string
	RetryAfter   time.Duration
	Unauthorized bool
}

func (e *refreshError) Error() string { return e.Message }

// errSecretConflict means the target Secret exists and is not controlled by the OpsnowToken.
var errSecretConflict = errors.New("target Secret not controlled by this OpsnowToken")

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

// Event reasons besides the Ready reasons.
const (
	eventTokenRefreshed       = "TokenRefreshed"
	eventRefreshBeforeIgnored = "RefreshBeforeIgnored"
)

// The manager's RBAC, and no more (security_test.go holds the exact list):
// OpsnowTokens are read and their status merge-patched; Secrets are listed
// and watched (target Secrets by label, the others by metadata), read
// (API keys), created and updated, never patched or deleted; events are
// written through events.k8s.io/v1, patch extending an event series.
// +kubebuilder:rbac:groups=auth.opsnow.io,resources=opsnowtokens,verbs=get;list;watch
// +kubebuilder:rbac:groups=auth.opsnow.io,resources=opsnowtokens/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one OpsnowToken's target Secret and status up to date and
// requeues at the next planned refresh.
func (r *OpsnowTokenReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	tok := &authv1alpha1.OpsnowToken{}
	if err := r.Get(ctx, req.NamespacedName, tok); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	// The watch event of a Secret this reconciler just wrote often comes
	// before the cache holds its own status patch. Deciding on that older
	// status would patch the same status again, one extra write per new
	// token; the cache catches up within moments.
	if r.statusBehindCache(tok) {
		return ctrl.Result{RequeueAfter: cacheLagRetry}, nil
	}

	base := tok.DeepCopy()
	defer func() {
		tok.Status.ObservedGeneration = tok.Generation
		recordTokenMetrics(tok)
		if equality.Semantic.DeepEqual(base.Status, tok.Status) {
			return
		}
		if err := r.Status().Patch(ctx, tok, client.MergeFrom(base)); err != nil {
			if !apierrors.IsNotFound(err) {
				retErr = kerrors.NewAggregate([]error{retErr, fmt.Errorf("patch status: %w", err)})
			}
			return
		}
		r.remember(tok, func(m *tokenMemory) { m.statusVersion = tok.ResourceVersion })
	}()

	now := r.Clock.Now()
	result, err := r.reconcileToken(ctx, tok, now)
	// Planned refreshes and retries run on r.Clock; the workqueue keeps only
	// its own backoff for errors.
	if result.RequeueAfter > 0 {
		r.scheduler.schedule(req.NamespacedName, now.Add(result.RequeueAfter))
	} else {
		r.scheduler.cancel(req.NamespacedName)
	}
	return ctrl.Result{}, err
}

// reconcileToken runs the steps in order; each records the Ready reason of
// its own failure.
func (r *OpsnowTokenReconciler) reconcileToken(ctx context.Context, tok *authv1alpha1.OpsnowToken, now time.Time) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	tok.Status.SecretName = targetSecretName(tok.Spec.SecretName, tok.Name)

	// Suspended: nothing is requested; Ready=False/Suspended.
	if tok.Spec.Suspend {
		tok.Status.NextRefreshTime = nil
		r.markNotReady(tok, authv1alpha1.ReasonSuspended, "Refreshing is suspended; the token in the Secret is not renewed")
		return ctrl.Result{}, nil
	}

	// The endpoint must be allowlisted before anything is read or sent:
	// Ready=False/EndpointNotAllowed. A spec change re-triggers this.
	endpointURL, err := r.resolveEndpoint(tok.Spec.Endpoint)
	if err != nil {
		r.markNotReady(tok, authv1alpha1.ReasonEndpointNotAllowed, err.Error())
		return ctrl.Result{}, nil
	}

	// The target Secret must be absent or ours: Ready=False/SecretConflict
	// otherwise, and it is never touched. Its deletion re-triggers this.
	secret, err := r.targetSecret(ctx, tok)
	if errors.Is(err, errSecretConflict) {
		r.markSecretConflict(tok)
		return ctrl.Result{}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}

	hash := specHash(tok.Spec, endpointURL)
	d, err := r.decide(ctx, tok, secret, hash, now)
	// A due refresh is confirmed against the live Secret: the cache may still
	// hold it as it was before this reconciler's own last write (the Secret
	// metadata watch can requeue the token first), and deciding on that old
	// content would spend a second exchange, then fail to write on a conflict.
	if err == nil && d.cause != "" && secret != nil {
		live, liveErr := r.liveTargetSecret(ctx, tok)
		if errors.Is(liveErr, errSecretConflict) {
			r.markSecretConflict(tok)
			return ctrl.Result{}, nil
		}
		if liveErr != nil {
			return ctrl.Result{}, liveErr
		}
		if live == nil || live.ResourceVersion != secret.ResourceVersion {
			secret = live
			d, err = r.decide(ctx, tok, secret, hash, now)
		}
	}
	held, intact, sched, cause, key := d.held, d.intact, d.sched, d.cause, d.key
	if err != nil {
		return r.refreshFailed(ctx, tok, held, intact && held.SpecHash == hash, err, now)
	}

	if cause == "" {
		log.V(1).Info("Token is current", "secret", tok.Status.SecretName, "refreshAt", sched.RefreshAt)
		if err := r.writeSecret(ctx, tok, secret, held); err != nil {
			return ctrl.Result{}, err
		}
		// Whatever failed before (a missing API-key Secret restored with the
		// same key, say) no longer stands in the way.
		tok.Status.FailedAttempts = 0
		tok.Status.LastFailureMessage = ""
		r.markReady(tok, held, sched.RefreshAt)
		return ctrl.Result{RequeueAfter: requeueAfter(sched.RefreshAt, now)}, nil
	}

	// After a failure, wait for the retry time unless the inputs changed or
	// the endpoint, unavailable then, has answered another token since.
	if retryAt := tok.Status.NextRefreshTime; tok.Status.FailedAttempts > 0 && retryAt != nil &&
		now.Before(retryAt.Time) && !r.inputsChangedSinceFailure(ctx, tok) &&
		!r.recovery.isWoken(client.ObjectKeyFromObject(tok)) {
		log.V(1).Info("Waiting to retry", "cause", cause, "retryAt", retryAt.Time)
		return ctrl.Result{RequeueAfter: requeueAfter(retryAt.Time, now)}, nil
	}

	current := intact && held.SpecHash == hash && cause != causeAPIKeyChanged
	if key == nil {
		if key, err = r.readAPIKey(ctx, tok); err != nil {
			return r.refreshFailed(ctx, tok, held, current, err, now)
		}
	}
	r.remember(tok, func(m *tokenMemory) {
		m.refreshRequest = tok.Annotations[authv1alpha1.RefreshRequestedAtAnnotation]
	})

	token, err := r.exchange(ctx, endpointURL, key.Value)
	r.noteExchange(tok, endpointURL, err)
	if err != nil {
		tok.Status.LastHandledRefreshRequest = tok.Annotations[authv1alpha1.RefreshRequestedAtAnnotation]
		return r.refreshFailed(ctx, tok, held, current, err, now)
	}

	issued := heldToken{
		Token:          token.AccessToken,
		IssuedAt:       token.IssuedAt.Truncate(time.Second),
		ExpiresAt:      token.ExpiresAt.Truncate(time.Second),
		SpecHash:       hash,
		APIKeyHash:     saltedHash(key.Value),
		APIKeyVersion:  key.Version,
		RefreshRequest: tok.Annotations[authv1alpha1.RefreshRequestedAtAnnotation],
	}
	if err := r.writeSecret(ctx, tok, secret, issued); err != nil {
		return ctrl.Result{}, err
	}
	return r.refreshSucceeded(ctx, tok, issued, cause, now), nil
}

// decision is what the target Secret and the API key say about the token.
type decision struct {
	held   heldToken
	intact bool
	sched  schedule
	// cause is why a refresh is due now, "" when none is.
	cause string
	// key is the API key when it was read and found changed.
	key *apiKey
}

// decide reads the token secret holds (nil: none), when it is to be
// refreshed, and whether a refresh is due now. The API key is read only
// when nothing else asks for a refresh and it may have changed.
func (r *OpsnowTokenReconciler) decide(ctx context.Context, tok *authv1alpha1.OpsnowToken, secret *corev1.Secret, hash string, now time.Time) (decision, error) {
	var d decision
	if secret != nil {
		d.held, d.intact = readHeldToken(secret)
	}
	d.sched = refreshTime(d.held.IssuedAt, d.held.ExpiresAt, refreshBefore(tok), string(tok.UID)+d.held.ExpiresAt.String())
	d.cause = refreshDue(refreshState{
		SecretExists:     secret != nil,
		Intact:           d.intact,
		Held:             d.held,
		SpecHash:         hash,
		RefreshRequested: r.refreshRequestPending(tok, d.held),
		RefreshAt:        d.sched.RefreshAt,
		Now:              now,
	})
	if d.cause == "" {
		changed, current, err := r.apiKeyChanged(ctx, tok, d.held)
		if err != nil {
			return d, err
		}
		if changed {
			d.cause, d.key = causeAPIKeyChanged, current
		}
	}
	return d, nil
}

// refreshState is what refreshDue decides on.
type refreshState struct {
	SecretExists     bool
	Intact           bool
	Held             heldToken
	SpecHash         string
	RefreshRequested bool
	RefreshAt        time.Time
	Now              time.Time
}

// refreshDue returns why the token in the Secret must be replaced now, or ""
// when it can stay until its refresh time. API-key changes are checked
// separately because they need a read.
func refreshDue(s refreshState) string {
	switch {
	case !s.SecretExists:
		return causeSecretMissing
	case !s.Intact:
		return causeSecretEdited
	case s.Held.SpecHash != s.SpecHash:
		return causeSpecChanged
	case s.RefreshRequested:
		return causeRefreshRequested
	case !s.Now.Before(s.Held.ExpiresAt):
		return causeExpired
	case !s.Now.Before(s.RefreshAt):
		return causeScheduled
	}
	return ""
}

// refreshRequestPending reports whether the refresh-requested-at annotation
// holds a value no exchange has answered yet.
func (r *OpsnowTokenReconciler) refreshRequestPending(tok *authv1alpha1.OpsnowToken, held heldToken) bool {
	v := tok.Annotations[authv1alpha1.RefreshRequestedAtAnnotation]
	if v == "" || v == held.RefreshRequest {
		return false
	}
	if v == tok.Status.LastHandledRefreshRequest || v == r.recall(tok).refreshRequest {
		// Acted on, but no token in the Secret answers it: while that
		// attempt stands failed, it is retried at the backoff time rather
		// than dropped.
		return tok.Status.FailedAttempts > 0
	}
	return true
}

// inputsChangedSinceFailure reports whether the spec, the refresh request or
// the API-key Secret changed since the last failed attempt, which makes a
// retry worth it before the backoff ends.
func (r *OpsnowTokenReconciler) inputsChangedSinceFailure(ctx context.Context, tok *authv1alpha1.OpsnowToken) bool {
	if tok.Generation != tok.Status.ObservedGeneration {
		return true
	}
	if v := tok.Annotations[authv1alpha1.RefreshRequestedAtAnnotation]; v != "" &&
		v != tok.Status.LastHandledRefreshRequest && v != r.recall(tok).refreshRequest {
		return true
	}
	m := r.recall(tok)
	return m.apiKeyRead && m.apiKeyVersion != r.apiKeyVersion(ctx, tok)
}

// resolveEndpoint returns the canonical URL to call, or why it may not be called.
func (r *OpsnowTokenReconciler) resolveEndpoint(specEndpoint string) (string, error) {
	raw := specEndpoint
	if raw == "" {
		raw = r.DefaultEndpoint
	}
	u, err := r.Endpoints.Allow(raw)
	if err != nil {
		return "", fmt.Errorf("endpoint is not allowed by the operator (allowed: %s): %w",
			strings.Join(r.Endpoints.Entries(), ", "), err)
	}
	return u, nil
}

// targetSecret returns the target Secret, nil when it does not exist, or
// errSecretConflict when it is not controlled by tok. Only Secrets labelled
// as managed are cached; one missing from the cache is looked up by metadata
// alone, so a foreign Secret's data is never read.
func (r *OpsnowTokenReconciler) targetSecret(ctx context.Context, tok *authv1alpha1.OpsnowToken) (*corev1.Secret, error) {
	key := client.ObjectKey{Namespace: tok.Namespace, Name: tok.Status.SecretName}
	s := &corev1.Secret{}
	err := r.Get(ctx, key, s)
	if err == nil {
		if !metav1.IsControlledBy(s, tok) {
			return nil, errSecretConflict
		}
		return s, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get target Secret: %w", err)
	}
	// Not in the cache: absent, not labelled as ours, or ours but not cached
	// yet (just created, or its labels removed).
	return r.liveTargetSecret(ctx, tok)
}

// liveTargetSecret is targetSecret read from the API server: metadata
// first, so that a foreign Secret's data is never read.
func (r *OpsnowTokenReconciler) liveTargetSecret(ctx context.Context, tok *authv1alpha1.OpsnowToken) (*corev1.Secret, error) {
	key := client.ObjectKey{Namespace: tok.Namespace, Name: tok.Status.SecretName}
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := r.APIReader.Get(ctx, key, m); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("get target Secret metadata: %w", err)
	}
	if !metav1.IsControlledBy(m, tok) {
		return nil, errSecretConflict
	}
	s := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, key, s); err != nil {
		return nil, client.IgnoreNotFound(fmt.Errorf("get target Secret: %w", err))
	}
	return s, nil
}

// writeSecret creates the target Secret or updates it to hold held, and
// writes nothing when it already does.
func (r *OpsnowTokenReconciler) writeSecret(ctx context.Context, tok *authv1alpha1.OpsnowToken, existing *corev1.Secret, held heldToken) error {
	if existing == nil {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: tok.Namespace, Name: tok.Status.SecretName}}
		desiredSecretContent(tok.Name, held, "").apply(s)
		if err := controllerutil.SetControllerReference(tok, s, r.Scheme); err != nil {
			return fmt.Errorf("set owner of target Secret: %w", err)
		}
		if err := r.Create(ctx, s); err != nil {
			return fmt.Errorf("create target Secret: %w", err)
		}
		return nil
	}
	s := existing.DeepCopy()
	if !desiredSecretContent(tok.Name, held, existing.Annotations[tokenHashAnnotation]).apply(s) {
		return nil
	}
	if err := r.Update(ctx, s); err != nil {
		return fmt.Errorf("update target Secret: %w", err)
	}
	return nil
}

// apiKey is an API key and the resourceVersion of the Secret it was read from.
type apiKey struct {
	Value   string
	Version string
}

// readAPIKey reads the API key straight from the API server and remembers
// the Secret's resourceVersion. A missing Secret or key is
// Ready=False/APIKeySecretNotFound or APIKeyMissing.
func (r *OpsnowTokenReconciler) readAPIKey(ctx context.Context, tok *authv1alpha1.OpsnowToken) (*apiKey, error) {
	ref := tok.Spec.APIKeySecretRef
	s := &corev1.Secret{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: tok.Namespace, Name: ref.Name}, s)
	if err == nil || apierrors.IsNotFound(err) {
		r.remember(tok, func(m *tokenMemory) { m.apiKeyVersion, m.apiKeyRead = s.ResourceVersion, true })
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &refreshError{Reason: authv1alpha1.ReasonAPIKeySecretNotFound,
				Message: fmt.Sprintf("API-key Secret %q not found", ref.Name)}
		}
		return nil, fmt.Errorf("get API-key Secret: %w", err)
	}
	// A trailing newline is a common accident of creating the Secret from a file.
	value := strings.TrimSpace(string(s.Data[apiKeyKey(tok.Spec)]))
	if value == "" {
		return nil, &refreshError{Reason: authv1alpha1.ReasonAPIKeyMissing,
			Message: fmt.Sprintf("API-key Secret %q has no value for key %q", ref.Name, apiKeyKey(tok.Spec))}
	}
	return &apiKey{Value: value, Version: s.ResourceVersion}, nil
}

// apiKeyVersion returns the cached resourceVersion of the API-key Secret, or
// "" when it does not exist.
func (r *OpsnowTokenReconciler) apiKeyVersion(ctx context.Context, tok *authv1alpha1.OpsnowToken) string {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	key := client.ObjectKey{Namespace: tok.Namespace, Name: tok.Spec.APIKeySecretRef.Name}
	if r.secretMetadata == nil || r.secretMetadata.Get(ctx, key, m) != nil {
		return ""
	}
	return m.ResourceVersion
}

// apiKeyChanged reports whether the API key differs from the one the held
// token was issued for. While the API-key Secret's resourceVersion is the one
// the token was issued with, or one whose key was found unchanged, no read is
// needed, so a restart costs no Secret reads.
func (r *OpsnowTokenReconciler) apiKeyChanged(ctx context.Context, tok *authv1alpha1.OpsnowToken, held heldToken) (bool, *apiKey, error) {
	version := r.apiKeyVersion(ctx, tok)
	// A version merely read is not enough: a rotated key whose exchange
	// failed must still count as changed at the retry.
	if m := r.recall(tok); version != "" && (version == held.APIKeyVersion || version == m.apiKeyMatchedVersion) {
		return false, nil, nil
	}
	key, err := r.readAPIKey(ctx, tok)
	if err != nil {
		return false, nil, err
	}
	if hashMatches(held.APIKeyHash, key.Value) {
		r.remember(tok, func(m *tokenMemory) { m.apiKeyMatchedVersion = key.Version })
		return false, nil, nil
	}
	return true, key, nil
}

// exchange asks OpsNow for a token, within the endpoint's rate limit.
func (r *OpsnowTokenReconciler) exchange(ctx context.Context, endpointURL, key string) (opsnow.Token, error) {
	if r.RateLimiter != nil {
		if err := r.RateLimiter.Wait(ctx, endpointURL); err != nil {
			return opsnow.Token{}, fmt.Errorf("wait for token request rate limit: %w", err)
		}
	}
	start := time.Now()
	token, err := r.Exchanger.Exchange(ctx, endpointURL, key)
	exchangeDuration.Observe(time.Since(start).Seconds())
	return token, err
}

// refreshSucceeded records a new token in status and, unless the refresh
// was routine, in an event.
func (r *OpsnowTokenReconciler) refreshSucceeded(ctx context.Context, tok *authv1alpha1.OpsnowToken, issued heldToken, cause string, now time.Time) ctrl.Result {
	sched := refreshTime(issued.IssuedAt, issued.ExpiresAt, refreshBefore(tok), string(tok.UID)+issued.ExpiresAt.String())
	refreshTotal.WithLabelValues(tok.Namespace, tok.Name, "success").Inc()
	// A planned refresh without earlier failures is routine: status and
	// metrics show it, and an event for each would add a write per token
	// every two thirds of a lifetime. Events mark what a user looks for: a
	// first token, a change, a manual refresh, the end of failures.
	routine := cause == causeScheduled && tok.Status.FailedAttempts == 0
	tok.Status.FailedAttempts = 0
	tok.Status.LastFailureMessage = ""
	tok.Status.LastRefreshTime = &metav1.Time{Time: issued.IssuedAt}
	if issued.RefreshRequest != "" {
		tok.Status.LastHandledRefreshRequest = issued.RefreshRequest
	}
	r.markReady(tok, issued, sched.RefreshAt)

	logf.FromContext(ctx).Info("Refreshed access token", "secret", tok.Status.SecretName, "cause", cause,
		"expiresAt", issued.ExpiresAt, "refreshAt", sched.RefreshAt)
	if !routine {
		r.Recorder.Eventf(eventRef(tok), nil, corev1.EventTypeNormal, eventTokenRefreshed, "Refresh",
			"Wrote a new access token to Secret %s (%s); it expires at %s", tok.Status.SecretName, cause,
			issued.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if sched.RefreshBeforeIgnored {
		r.Recorder.Eventf(eventRef(tok), nil, corev1.EventTypeWarning, eventRefreshBeforeIgnored, "Refresh",
			"spec.refreshBefore (%s) is not shorter than the token lifetime (%s); refreshing at two thirds of the lifetime instead",
			refreshBefore(tok), issued.ExpiresAt.Sub(issued.IssuedAt))
	}
	return ctrl.Result{RequeueAfter: requeueAfter(sched.RefreshAt, now)}
}

// refreshFailed records a failed refresh. The token in the Secret is kept;
// Ready stays True while it is current and unexpired, and the next attempt
// follows the backoff.
func (r *OpsnowTokenReconciler) refreshFailed(ctx context.Context, tok *authv1alpha1.OpsnowToken, held heldToken, current bool, err error, now time.Time) (ctrl.Result, error) {
	var rerr *refreshError
	if !errors.As(err, &rerr) {
		var oerr *opsnow.Error
		if !errors.As(err, &oerr) {
			// Not a refresh failure (the API server, a cancelled context):
			// controller-runtime retries it with its own backoff.
			return ctrl.Result{}, err
		}
		rerr = refreshErrorFrom(oerr)
	}
	// The client redacts the API key and whatever looks like a credential
	// from upstream messages, but cannot know the token now in the Secret:
	// an upstream quoting it must not put it in status, events or logs.
	if held.Token != "" && strings.Contains(rerr.Message, held.Token) {
		rerr.Message = strings.ReplaceAll(rerr.Message, held.Token, "[REDACTED]")
	}
	refreshTotal.WithLabelValues(tok.Namespace, tok.Name, "failure").Inc()
	tok.Status.FailedAttempts++
	tok.Status.LastFailureMessage = rerr.Message

	valid := current && now.Before(held.ExpiresAt)
	var expiresAt time.Time
	if valid {
		expiresAt = held.ExpiresAt
	}
	next := nextRetry(retryPolicy{
		Attempts:     tok.Status.FailedAttempts,
		Unauthorized: rerr.Unauthorized,
		RetryAfter:   rerr.RetryAfter,
		Jitter:       rand.Float64(),
	}, now, expiresAt)
	tok.Status.NextRefreshTime = &metav1.Time{Time: next}
	if valid {
		r.markReady(tok, held, next)
	} else {
		r.markNotReady(tok, rerr.Reason, rerr.Message)
	}

	logf.FromContext(ctx).Info("Token refresh failed", "reason", rerr.Reason, "message", rerr.Message,
		"failedAttempts", tok.Status.FailedAttempts, "retryAt", next, "tokenStillValid", valid)
	// Events of one reason are aggregated by the recorder: no flood.
	r.Recorder.Eventf(eventRef(tok), nil, corev1.EventTypeWarning, rerr.Reason, "Refresh",
		"Token refresh failed: %s; retrying at %s", rerr.Message, next.UTC().Format(time.RFC3339))
	return ctrl.Result{RequeueAfter: requeueAfter(next, now)}, nil
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

// markReady sets Ready=True for the held token and the times in status.
func (r *OpsnowTokenReconciler) markReady(tok *authv1alpha1.OpsnowToken, held heldToken, next time.Time) {
	tok.Status.ExpiresAt = &metav1.Time{Time: held.ExpiresAt}
	tok.Status.LastRefreshTime = &metav1.Time{Time: held.IssuedAt}
	tok.Status.NextRefreshTime = &metav1.Time{Time: next}
	msg := fmt.Sprintf("Secret %s holds a token valid until %s", tok.Status.SecretName, held.ExpiresAt.UTC().Format(time.RFC3339))
	if tok.Status.FailedAttempts > 0 {
		msg += fmt.Sprintf("; the last %d refresh attempt(s) failed, see lastFailureMessage", tok.Status.FailedAttempts)
	}
	apimeta.SetStatusCondition(&tok.Status.Conditions, metav1.Condition{
		Type:               authv1alpha1.ConditionReady,
		Status:             metav1.ConditionTrue,
		Reason:             authv1alpha1.ReasonTokenValid,
		Message:            msg,
		ObservedGeneration: tok.Generation,
	})
}

// markSecretConflict records that the target Secret is not this OpsnowToken's.
func (r *OpsnowTokenReconciler) markSecretConflict(tok *authv1alpha1.OpsnowToken) {
	r.markNotReady(tok, authv1alpha1.ReasonSecretConflict, fmt.Sprintf(
		"Secret %q exists and is not controlled by this OpsnowToken; it is left untouched", tok.Status.SecretName))
}

// markNotReady sets Ready=False with reason and emits a Warning event when
// the reason is new.
func (r *OpsnowTokenReconciler) markNotReady(tok *authv1alpha1.OpsnowToken, reason, message string) {
	// The reason is copied: FindStatusCondition points into the list that
	// SetStatusCondition is about to change.
	var previousReason string
	if c := apimeta.FindStatusCondition(tok.Status.Conditions, authv1alpha1.ConditionReady); c != nil {
		previousReason = c.Reason
	}
	apimeta.SetStatusCondition(&tok.Status.Conditions, metav1.Condition{
		Type:               authv1alpha1.ConditionReady,
		Status:             metav1.ConditionFalse,
		Reason:             reason,
		Message:            message,
		ObservedGeneration: tok.Generation,
	})
	if previousReason == reason {
		return
	}
	// Failures of an exchange have their own events (refreshFailed); these
	// are the states that need the user, announced once.
	switch reason {
	case authv1alpha1.ReasonSuspended:
		r.Recorder.Eventf(eventRef(tok), nil, corev1.EventTypeNormal, reason, "Refresh", "%s", message)
	case authv1alpha1.ReasonEndpointNotAllowed, authv1alpha1.ReasonSecretConflict:
		r.Recorder.Eventf(eventRef(tok), nil, corev1.EventTypeWarning, reason, "Refresh", "%s", message)
	}
}

func refreshBefore(tok *authv1alpha1.OpsnowToken) time.Duration {
	if tok.Spec.RefreshBefore == nil {
		return 0
	}
	return tok.Spec.RefreshBefore.Duration
}

func (r *OpsnowTokenReconciler) recall(tok *authv1alpha1.OpsnowToken) tokenMemory {
	if m, ok := r.memory.Load(client.ObjectKeyFromObject(tok)); ok {
		return m.(tokenMemory)
	}
	return tokenMemory{}
}

func (r *OpsnowTokenReconciler) remember(tok *authv1alpha1.OpsnowToken, update func(*tokenMemory)) {
	m := r.recall(tok)
	update(&m)
	r.memory.Store(client.ObjectKeyFromObject(tok), m)
}

// forget drops what is kept about a deleted OpsnowToken.
func (r *OpsnowTokenReconciler) forget(key types.NamespacedName) {
	r.memory.Delete(key)
	r.scheduler.cancel(key)
	r.recovery.forget(key)
	deleteTokenMetrics(key)
}

// cacheLagRetry is how long a reconcile waits for the cache to catch up with
// the reconciler's own status patch.
const cacheLagRetry = time.Second

// statusBehindCache reports whether the cached tok is older than the last
// status this reconciler wrote for it.
func (r *OpsnowTokenReconciler) statusBehindCache(tok *authv1alpha1.OpsnowToken) bool {
	written := r.recall(tok).statusVersion
	if written == "" {
		return false
	}
	cmp, err := resourceversion.CompareResourceVersion(tok.ResourceVersion, written)
	return err == nil && cmp < 0
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

// noteExchange tells the endpoint recovery how an exchange went and, when
// it is the first success after the endpoint was unavailable, wakes the
// tokens that wait to retry it. Failures the upstream asked to retry after a
// time (Retry-After) wait for that time.
func (r *OpsnowTokenReconciler) noteExchange(tok *authv1alpha1.OpsnowToken, endpointURL string, err error) {
	key := client.ObjectKeyFromObject(tok)
	var oerr *opsnow.Error
	switch {
	case err == nil:
		now := r.Clock.Now()
		for _, k := range r.recovery.succeeded(endpointURL, key, now) {
			r.scheduler.schedule(k, now)
		}
	case errors.As(err, &oerr) && errors.Is(oerr, opsnow.ErrUnavailable) && oerr.RetryAfter == 0:
		r.recovery.failed(endpointURL, key)
	default:
		r.recovery.forget(key)
	}
}
