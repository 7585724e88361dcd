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
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// ClusterOpsnowTokenReconciler keeps, for each ClusterOpsnowToken, one
// access token in the Secret spec.secretName of every selected namespace.
//
// It is the OpsnowToken reconciler's pipeline fanned out: the token is
// decided on by the same pure decide, failures go through the same
// summarize, and requests share the same exchanger, allowlist and rate
// limiter. The ClusterOpsnowToken is presented to those as an OpsnowToken
// (view) whose namespace is the cluster resource namespace, where its API
// key lives, and whose held token is the newest of the copies already
// written: one copy is enough to resume after a restart, and a namespace
// that starts matching is given that token without a request.
type ClusterOpsnowTokenReconciler struct {
	// tokens is the OpsnowToken reconciler whose clients, exchanger,
	// allowlist and rate limiter are shared.
	tokens *OpsnowTokenReconciler
	// namespace is the cluster resource namespace, where API-key Secrets are read.
	namespace string
	workers   int

	scheduler *refreshScheduler
	recovery  *endpointRecovery
	memory    *memories
	// copies remembers, per ClusterOpsnowToken, the token its copies hold
	// and the resourceVersion of each copy known to hold it.
	copies *copiesMemories
}

// copiesMemory is what a ClusterOpsnowToken's copies hold, as far as this
// reconciler wrote or checked them: held (token included) and, by
// namespace, the resourceVersion of each copy holding it. While the
// metadata cache shows a remembered version, that copy is not read. Like
// tokenMemory it is not needed after a restart: the copies are read once.
type copiesMemory struct {
	held     heldToken
	versions map[string]string
}

// copiesMemories holds the copiesMemory of every ClusterOpsnowToken.
type copiesMemories struct {
	mu sync.Mutex
	m  map[types.NamespacedName]copiesMemory
}

func newCopiesMemories() *copiesMemories {
	return &copiesMemories{m: map[types.NamespacedName]copiesMemory{}}
}

// get returns key's memory; its versions map must not be changed.
func (c *copiesMemories) get(key types.NamespacedName) copiesMemory {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

// set replaces key's memory, dropping it when it holds no token.
func (c *copiesMemories) set(key types.NamespacedName, m copiesMemory) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.held.Token == "" || len(m.versions) == 0 {
		delete(c.m, key)
		return
	}
	c.m[key] = m
}

func (c *copiesMemories) forget(key types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

// NewClusterOpsnowTokenReconciler builds a ClusterOpsnowToken reconciler
// sharing tokens' clients, exchanger, allowlist and rate limiter, reading
// API keys from namespace.
func NewClusterOpsnowTokenReconciler(tokens *OpsnowTokenReconciler, namespace string) *ClusterOpsnowTokenReconciler {
	return &ClusterOpsnowTokenReconciler{
		tokens:    tokens,
		namespace: namespace,
		workers:   max(tokens.workers/10, 2),
		scheduler: newRefreshScheduler(tokens.clock),
		recovery:  newEndpointRecovery(),
		memory:    newMemories(),
		copies:    newCopiesMemories(),
	}
}

// The manager's rights for ClusterOpsnowTokens (security_test.go holds the
// exact list): read them and merge-patch their status, and watch namespaces
// to follow the selection. Secrets and events use the rules above.
// +kubebuilder:rbac:groups=auth.opsnow.io,resources=clusteropsnowtokens,verbs=get;list;watch
// +kubebuilder:rbac:groups=auth.opsnow.io,resources=clusteropsnowtokens/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=list;watch

// Reconcile brings one ClusterOpsnowToken's Secrets and status up to date:
// gather, decide (the OpsnowToken decision on the view), act on every
// selected namespace, summarize through the one failure door, record.
func (r *ClusterOpsnowTokenReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	key := clusterKey(req.Name)
	ct, err := r.getClusterToken(ctx, key)
	if err != nil || ct == nil {
		return ctrl.Result{}, err
	}
	if !ct.DeletionTimestamp.IsZero() {
		// The garbage collector removes every copy.
		r.forget(key)
		return ctrl.Result{}, nil
	}
	ci, err := r.gather(ctx, ct)
	if err != nil {
		return ctrl.Result{}, err
	}
	var s clusterSummary
	if ci.idle() {
		out := r.actIdle(ctx, ci)
		r.copies.forget(key)
		s = summarizeIdle(ci, out)
		r.record(ctx, ci, plan{}, out, s)
	} else {
		p := decide(ci.inputs)
		out := r.act(ctx, ci, p)
		r.rememberCopies(ci, out)
		s = summarizeCluster(ci, p, out)
		r.remember(ci, p, s.summary)
		r.record(ctx, ci, p, out, s)
	}
	r.scheduler.schedule(key, s.WakeAt)
	return ctrl.Result{}, r.patchStatus(ctx, ct, s.Cluster)
}

// clusterKey is the key of a ClusterOpsnowToken in the shared rate limiter
// and this reconciler's memory: no namespace, so it never collides with an
// OpsnowToken's.
func clusterKey(name string) types.NamespacedName { return types.NamespacedName{Name: name} }

// getClusterToken returns the ClusterOpsnowToken, nil when it is gone, with
// the newest status this reconciler wrote (see freshToken).
func (r *ClusterOpsnowTokenReconciler) getClusterToken(ctx context.Context, key types.NamespacedName) (*authv1alpha1.ClusterOpsnowToken, error) {
	ct := &authv1alpha1.ClusterOpsnowToken{}
	if err := r.tokens.client.Get(ctx, key, ct); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(key)
			return nil, nil
		}
		return nil, fmt.Errorf("get ClusterOpsnowToken: %w", err)
	}
	written := r.memory.get(key).statusVersion
	if written == "" {
		return ct, nil
	}
	if cmp, err := resourceversion.CompareResourceVersion(ct.ResourceVersion, written); err != nil || cmp >= 0 {
		r.memory.update(key, func(m *tokenMemory) { m.statusVersion = "" })
		return ct, nil
	}
	live := &authv1alpha1.ClusterOpsnowToken{}
	if err := r.tokens.apiReader.Get(ctx, key, live); err != nil {
		return nil, client.IgnoreNotFound(fmt.Errorf("get ClusterOpsnowToken: %w", err))
	}
	return live, nil
}

// view presents ct as the OpsnowToken decide and summarize read: in the
// cluster resource namespace (where readAPIKey looks), with ct's identity,
// refresh inputs and the token part of its status.
func (r *ClusterOpsnowTokenReconciler) view(ct *authv1alpha1.ClusterOpsnowToken) *authv1alpha1.OpsnowToken {
	st := ct.Status.DeepCopy()
	return &authv1alpha1.OpsnowToken{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: r.namespace, Name: ct.Name, UID: ct.UID,
			Generation: ct.Generation, Annotations: ct.Annotations,
		},
		Spec: authv1alpha1.OpsnowTokenSpec{
			APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: ct.Spec.APIKeySecretRef.Name, Key: ct.Spec.APIKeySecretRef.Key},
			SecretName:      ct.Spec.SecretName,
			Endpoint:        ct.Spec.Endpoint,
			RefreshBefore:   ct.Spec.RefreshBefore,
			Suspend:         ct.Spec.Suspend,
			SecretTemplate:  ct.Spec.SecretTemplate,
		},
		Status: authv1alpha1.OpsnowTokenStatus{
			ObservedGeneration:        st.ObservedGeneration,
			SecretName:                ct.Spec.SecretName,
			ExpiresAt:                 st.ExpiresAt,
			LastRefreshTime:           st.LastRefreshTime,
			NextRefreshTime:           st.NextRefreshTime,
			FailedAttempts:            st.FailedAttempts,
			LastHandledRefreshRequest: st.LastHandledRefreshRequest,
			LastFailureMessage:        st.LastFailureMessage,
			Conditions:                st.Conditions,
		},
	}
}

// act carries out the plan on every selected namespace. As for an
// OpsnowToken, every failure ends in the outcome for summarize.
func (r *ClusterOpsnowTokenReconciler) act(ctx context.Context, ci *clusterInputs, p plan) clusterOutcome {
	out := clusterOutcome{outcome: outcome{Jitter: rand.Float64()}} //nolint:gosec // G404: retry jitter, guards nothing
	switch p.Action {
	case actRefresh:
		r.refresh(ctx, ci, &out)
	case actWritePending:
		r.writeToken(ctx, ci, *ci.Pending, &out)
	case actKeep, actWait, actFail:
		// The held token is current: copy it to namespaces that lack it
		// (newly selected, deleted or edited copies), with no request.
		if ci.heldIsCurrent() && ci.Now.Before(ci.Held.ExpiresAt) {
			out.Err = r.sync(ctx, ci, ci.Held, &out)
		}
		if p.Action == actKeep && ci.APIKey != nil && ci.APIKeyErr == nil {
			r.memory.update(clusterKey(ci.Cluster.Name), func(m *tokenMemory) { m.apiKeyMatchedVersion = ci.APIKeyVersion })
		}
	}
	if p.Action != actStall && p.Action != actSuspend {
		// Copies left by a change of secretName go only once the new ones
		// hold the current token, as for an OpsnowToken: never while a
		// refresh for the new name fails or waits. Copies in namespaces no
		// longer selected go in any case.
		current := p.Action == actKeep || out.Issued != nil
		out.Deleted, out.DeleteErr = r.deleteOrphans(ctx, ci, current && out.Err == nil && len(out.Failed) == 0)
	}
	// The held token is known (remembered or read): failure messages
	// quoting it are redacted without reading a copy again.
	out.HeldToken = ci.Held.Token
	out.Now = r.tokens.clock.Now()
	return out
}

// rememberCopies keeps the token the copies now hold and the version of
// each copy that holds it: the copies written or found unchanged by a sync,
// else those gather found holding the held token.
func (r *ClusterOpsnowTokenReconciler) rememberCopies(ci *clusterInputs, out clusterOutcome) {
	m := copiesMemory{held: ci.Held, versions: map[string]string{}}
	if out.SyncRan {
		m.held = out.SyncedToken
		maps.Copy(m.versions, out.Versions)
	} else {
		for _, t := range ci.Targets {
			if t.holds(m.held.Token) {
				m.versions[t.Namespace] = t.Secret.ResourceVersion
			}
		}
	}
	r.copies.set(clusterKey(ci.Cluster.Name), m)
}

// refresh takes a request slot, reads the API key, exchanges it once and
// writes the token to every selected namespace.
func (r *ClusterOpsnowTokenReconciler) refresh(ctx context.Context, ci *clusterInputs, out *clusterOutcome) {
	key := clusterKey(ci.Cluster.Name)
	clk := r.tokens.clock
	if at := r.tokens.limiter.Reserve(key, ci.Endpoint, clk.Now()); at.After(clk.Now()) {
		out.SlotAt = at
		return
	}
	apiKey := ci.APIKey
	if apiKey == nil {
		var err error
		if apiKey, err = r.tokens.readAPIKey(ctx, ci.Token); err != nil {
			out.Err = err
			return
		}
	}
	start := time.Now()
	token, err := r.tokens.exchanger.Exchange(ctx, ci.Endpoint, apiKey.Value)
	exchangeDuration.Observe(time.Since(start).Seconds())
	r.noteExchange(key, ci.Endpoint, err)
	if err != nil {
		out.Err = err
		return
	}
	minted := heldToken{
		Token:          token.AccessToken,
		IssuedAt:       token.IssuedAt.Truncate(time.Second),
		ExpiresAt:      token.ExpiresAt.Truncate(time.Second),
		SpecHash:       ci.SpecHash,
		APIKeyHash:     saltedHash(apiKey.Value),
		APIKeyVersion:  apiKey.Version,
		RefreshRequest: ci.refreshRequest(),
	}
	r.writeToken(ctx, ci, minted, out)
}

// writeToken writes a minted token to every selected namespace. Once one
// copy holds it, that copy is where the next reconcile finds it; until
// then it is kept in memory, so a retry writes it instead of minting again.
func (r *ClusterOpsnowTokenReconciler) writeToken(ctx context.Context, ci *clusterInputs, minted heldToken, out *clusterOutcome) {
	key := clusterKey(ci.Cluster.Name)
	out.Err = r.sync(ctx, ci, minted, out)
	if out.Err != nil && out.Synced == 0 {
		r.memory.update(key, func(m *tokenMemory) { m.pending = &minted })
		return
	}
	r.memory.update(key, func(m *tokenMemory) { m.pending = nil })
	out.Issued = &minted
}

// noteExchange is the OpsnowToken reconciler's, waking ClusterOpsnowTokens
// on this reconciler's scheduler.
func (r *ClusterOpsnowTokenReconciler) noteExchange(key types.NamespacedName, endpointURL string, err error) {
	wakeOnRecovery(r.recovery, r.scheduler, r.tokens.clock.Now(), key, endpointURL, err)
}

// remember keeps the inputs of a failed attempt, as for an OpsnowToken.
func (r *ClusterOpsnowTokenReconciler) remember(ci *clusterInputs, p plan, s summary) {
	key := clusterKey(ci.Cluster.Name)
	switch {
	case s.Failure != nil:
		r.memory.update(key, func(m *tokenMemory) { m.failedInputs, m.failedReason = inputsFingerprint(ci.inputs), s.Failure.Reason })
	case p.Action != actWait && s.Status.FailedAttempts == 0:
		r.memory.update(key, func(m *tokenMemory) { m.failedInputs, m.failedReason = "", "" })
	}
	if p.Action == actSuspend || p.Action == actStall {
		r.tokens.limiter.Forget(key, r.tokens.clock.Now())
	}
}

// patchStatus writes status when it changed and records the metrics.
func (r *ClusterOpsnowTokenReconciler) patchStatus(ctx context.Context, ct *authv1alpha1.ClusterOpsnowToken, status authv1alpha1.ClusterOpsnowTokenStatus) error {
	next := ct.DeepCopy()
	next.Status = status
	recordClusterTokenMetrics(next)
	if equality.Semantic.DeepEqual(ct.Status, status) {
		return nil
	}
	if err := r.tokens.client.Status().Patch(ctx, next, client.MergeFrom(ct)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("patch status: %w", err)
	}
	r.memory.update(clusterKey(ct.Name), func(m *tokenMemory) { m.statusVersion = next.ResourceVersion })
	return nil
}

// forget drops what is kept about a ClusterOpsnowToken that is gone or going.
func (r *ClusterOpsnowTokenReconciler) forget(key types.NamespacedName) {
	r.memory.forget(key)
	r.copies.forget(key)
	r.scheduler.cancel(key)
	r.recovery.forget(key)
	r.tokens.limiter.Forget(key, r.tokens.clock.Now())
	deleteClusterTokenMetrics(key.Name)
}

// clusterEventRef refers to ct in events, without its resourceVersion (see eventRef).
func clusterEventRef(ct *authv1alpha1.ClusterOpsnowToken) *corev1.ObjectReference {
	return &corev1.ObjectReference{
		APIVersion: authv1alpha1.GroupVersion.String(),
		Kind:       "ClusterOpsnowToken",
		Name:       ct.Name,
		UID:        ct.UID,
	}
}
