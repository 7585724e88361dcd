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
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// clusterInputs is what a ClusterOpsnowToken's decision is made on: the
// OpsnowToken inputs of its view, whose Secret and Held are the best copy
// found, and the selected namespaces.
type clusterInputs struct {
	inputs
	Cluster *authv1alpha1.ClusterOpsnowToken
	// Targets are the selected namespaces, not being deleted, by name.
	Targets []nsTarget
	// Orphans are Secrets the ClusterOpsnowToken controls that are not a
	// target: in namespaces no longer selected, or left by a rename.
	Orphans []clusterOrphan
}

// nsTarget is one selected namespace and its copy of the Secret.
type nsTarget struct {
	Namespace string
	// Secret is the copy the ClusterOpsnowToken controls, nil when absent:
	// its cached metadata, or the whole Secret when its data was read.
	Secret *corev1.Secret
	// Conflict is set when a Secret of that name exists and is not ours.
	Conflict bool
	// Held is the token the copy holds, known without reading it when its
	// resourceVersion is one this reconciler wrote or checked; Intact is
	// false when the copy is absent or its data is not what was written.
	Held   heldToken
	Intact bool
}

// holds reports whether the target's copy is intact and holds token.
func (t nsTarget) holds(token string) bool {
	return t.Intact && token != "" && t.Held.Token == token
}

// clusterOrphan is a Secret the ClusterOpsnowToken controls that is not a
// target any more. Selected says whether its namespace is still selected
// (then only the name changed).
type clusterOrphan struct {
	Namespace, Name string
	UID             types.UID
	Selected        bool
}

// idle reports whether no namespace is selected while the token is active:
// nothing is requested for nobody.
func (ci *clusterInputs) idle() bool {
	return len(ci.Targets) == 0 && !ci.Token.Spec.Suspend && ci.EndpointErr == nil
}

// gather reads a ClusterOpsnowToken's world: the selected namespaces, its
// copies from the Secret metadata cache, which selected namespaces hold a
// foreign Secret of that name, what each copy holds, the best copy as the
// held token, and the API key only when it may have changed. A copy's data
// is read only when its resourceVersion is not one this reconciler wrote or
// checked (after a restart, or an edit by someone else): on the steady path
// (a routine refresh, a wake-up with nothing due, a namespace joining)
// nothing but the cache is read. Nothing is sent or written here.
func (r *ClusterOpsnowTokenReconciler) gather(ctx context.Context, ct *authv1alpha1.ClusterOpsnowToken) (*clusterInputs, error) {
	key := clusterKey(ct.Name)
	mem := r.memory.get(key)
	copiesMem := r.copies.get(key)
	view := r.view(ct)
	ci := &clusterInputs{Cluster: ct, inputs: inputs{
		Token:        view,
		Now:          r.tokens.clock.Now(),
		SecretName:   ct.Spec.SecretName,
		Pending:      mem.pending,
		FailedInputs: mem.failedInputs,
		FailedReason: mem.failedReason,
		Woken:        r.recovery.isWoken(key),
	}}
	ci.Endpoint, ci.EndpointErr = r.tokens.resolveEndpoint(ct.Spec.Endpoint)
	ci.SpecHash = specHash(view.Spec, ci.Endpoint)

	selected, terminating, err := r.selectedNamespaces(ctx, ct)
	if err != nil {
		return nil, err
	}
	copies, err := r.cachedCopies(ctx, ct)
	if err != nil {
		return nil, err
	}
	ci.sortCopies(copies, selected, terminating)
	if ct.Spec.Suspend || ci.EndpointErr != nil || len(ci.Targets) == 0 {
		return ci, nil
	}
	// A copy this reconciler wrote that the cache does not show (yet, or
	// any more) is looked up on the API server.
	if err := r.findCopies(ctx, ci, func(t *nsTarget) bool { return copiesMem.versions[t.Namespace] != "" }); err != nil {
		return nil, err
	}
	if err := r.checkCopies(ctx, ci, copiesMem); err != nil {
		return nil, err
	}
	ci.pickHeld()
	ci.APIKeyVersion = r.tokens.apiKeyVersion(ctx, view)
	r.tokens.readAPIKeyIfChanged(ctx, &ci.inputs, mem)
	if refreshCause(ci.inputs) != "" {
		// The cache may be behind the operator's own last writes; before
		// a token request, the namespaces without a copy in the cache are
		// asked on the API server, as for an OpsnowToken.
		if err := r.findCopies(ctx, ci, func(*nsTarget) bool { return true }); err != nil {
			return nil, err
		}
		if err := r.checkCopies(ctx, ci, copiesMem); err != nil {
			return nil, err
		}
		ci.pickHeld()
		r.tokens.readAPIKeyIfChanged(ctx, &ci.inputs, mem)
	}
	return ci, nil
}

// selectedNamespaces returns the names of the namespaces ct selects, by its
// selector or its list, that exist and are not being deleted, and the set
// of namespaces being deleted (whose copies the namespace's deletion removes).
func (r *ClusterOpsnowTokenReconciler) selectedNamespaces(ctx context.Context, ct *authv1alpha1.ClusterOpsnowToken) (map[string]bool, map[string]bool, error) {
	selector, err := namespaceSelector(ct.Spec.NamespaceSelector)
	if err != nil {
		return nil, nil, err
	}
	var list corev1.NamespaceList
	if err := r.tokens.client.List(ctx, &list); err != nil {
		return nil, nil, fmt.Errorf("list namespaces: %w", err)
	}
	selected, terminating := map[string]bool{}, map[string]bool{}
	for i := range list.Items {
		ns := &list.Items[i]
		if !ns.DeletionTimestamp.IsZero() || ns.Status.Phase == corev1.NamespaceTerminating {
			terminating[ns.Name] = true
			continue
		}
		if selector.Matches(labels.Set(ns.Labels)) || slices.Contains(ct.Spec.Namespaces, ns.Name) {
			selected[ns.Name] = true
		}
	}
	return selected, terminating, nil
}

// namespaceSelector converts spec.namespaceSelector; an absent or empty
// selector selects nothing, so that a forgotten selector never writes a
// token to every namespace of the cluster.
func namespaceSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0) {
		return labels.Nothing(), nil
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		// The API server validates the selector's syntax; this is defensive.
		return labels.Nothing(), nil //nolint:nilerr // an invalid selector selects nothing
	}
	return sel, nil
}

// cachedCopies lists, from the Secret metadata cache, the Secrets ct
// controls in any namespace, as Secrets without data.
func (r *ClusterOpsnowTokenReconciler) cachedCopies(ctx context.Context, ct *authv1alpha1.ClusterOpsnowToken) ([]corev1.Secret, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	if err := r.tokens.secretMetadata.List(ctx, list, client.MatchingFields{secretControllerIndex: string(ct.UID)}); err != nil {
		return nil, fmt.Errorf("list Secrets of the ClusterOpsnowToken: %w", err)
	}
	copies := make([]corev1.Secret, len(list.Items))
	for i := range list.Items {
		copies[i] = corev1.Secret{ObjectMeta: list.Items[i].ObjectMeta}
	}
	return copies, nil
}

// sortCopies turns the selection and ct's copies into targets and orphans.
func (ci *clusterInputs) sortCopies(copies []corev1.Secret, selected, terminating map[string]bool) {
	byNamespace := map[string]*corev1.Secret{}
	for i := range copies {
		s := &copies[i]
		if !metav1.IsControlledBy(s, ci.Cluster) {
			continue
		}
		if s.Name == ci.SecretName && selected[s.Namespace] {
			byNamespace[s.Namespace] = s
			continue
		}
		if !terminating[s.Namespace] {
			ci.Orphans = append(ci.Orphans, clusterOrphan{Namespace: s.Namespace, Name: s.Name, UID: s.UID, Selected: selected[s.Namespace]})
		}
	}
	names := make([]string, 0, len(selected))
	for ns := range selected {
		names = append(names, ns)
	}
	slices.Sort(names)
	ci.Targets = make([]nsTarget, len(names))
	for i, ns := range names {
		ci.Targets[i] = nsTarget{Namespace: ns, Secret: byNamespace[ns]}
	}
}

// findCopies looks up, for the targets without a copy of ours, whether a
// Secret of that name exists: a foreign one is a conflict, one of ours the
// cache does not hold yet is the target's copy. The metadata cache knows
// which names exist; the API server is asked for those, and for the
// targets ask selects, so that neither a copy the cache has not seen yet
// nor a conflict is missed.
func (r *ClusterOpsnowTokenReconciler) findCopies(ctx context.Context, ci *clusterInputs, ask func(*nsTarget) bool) error {
	for i := range ci.Targets {
		t := &ci.Targets[i]
		if t.Secret != nil || t.Conflict {
			continue
		}
		key := client.ObjectKey{Namespace: t.Namespace, Name: ci.SecretName}
		if m := secretMetadataObject(); r.tokens.secretMetadata.Get(ctx, key, m) == nil {
			// Cached, yet not among the copies it controls: decided on
			// the cached owner, as an OpsnowToken's target is, with no read.
			if t.Conflict = !metav1.IsControlledBy(m, ci.Cluster); !t.Conflict {
				t.Secret = &corev1.Secret{ObjectMeta: m.ObjectMeta}
			}
			continue
		}
		if !ask(t) {
			continue // absent (or unknown: the create will tell)
		}
		s, conflict, err := r.liveCopy(ctx, ci.Cluster, key)
		if err != nil {
			return err
		}
		t.Secret, t.Conflict = s, conflict
	}
	return nil
}

// liveCopy reads a Secret's metadata from the API server, never a foreign
// Secret's data: nil when absent, conflict when ct does not control it.
func (r *ClusterOpsnowTokenReconciler) liveCopy(ctx context.Context, ct *authv1alpha1.ClusterOpsnowToken, key client.ObjectKey) (*corev1.Secret, bool, error) {
	m := secretMetadataObject()
	if err := r.tokens.apiReader.Get(ctx, key, m); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("get Secret metadata: %w", err)
	}
	if !metav1.IsControlledBy(m, ct) {
		return nil, true, nil
	}
	return &corev1.Secret{ObjectMeta: m.ObjectMeta}, false, nil
}

// checkCopies tells what each copy holds. A copy at a resourceVersion this
// reconciler wrote or checked holds the token it remembers, and is not
// read; any other copy is read from the API server (in parallel, bounded
// like the writes) and its data checked, as checkSecret does for an
// OpsnowToken's target.
func (r *ClusterOpsnowTokenReconciler) checkCopies(ctx context.Context, ci *clusterInputs, mem copiesMemory) error {
	var unknown []int
	for i := range ci.Targets {
		t := &ci.Targets[i]
		switch {
		case t.Secret == nil || t.Intact:
		case t.Secret.Data == nil && mem.held.Token != "" && notNewer(t.Secret.ResourceVersion, mem.versions[t.Namespace]):
			// Written or checked at that version, or the cache has not
			// caught up with the write yet: a later edit brings its event.
			t.Held, t.Intact = mem.held, true
		case t.Secret.Data == nil:
			unknown = append(unknown, i)
		}
	}
	errs := make([]error, len(unknown))
	inParallel(len(unknown), func(j int) {
		t := &ci.Targets[unknown[j]]
		live := &corev1.Secret{}
		err := r.tokens.apiReader.Get(ctx, client.ObjectKeyFromObject(t.Secret), live)
		switch {
		case apierrors.IsNotFound(err):
			t.Secret = nil
		case err != nil:
			errs[j] = fmt.Errorf("get Secret %s/%s: %w", t.Namespace, ci.SecretName, err)
		case !metav1.IsControlledBy(live, ci.Cluster):
			t.Secret, t.Conflict = nil, true
		default:
			t.Secret = live
			t.Held, t.Intact = readHeldToken(live)
		}
	})
	return errors.Join(errs...)
}

// notNewer reports whether the cached resourceVersion is the remembered
// one or older than it; false when nothing is remembered.
func notNewer(cached, remembered string) bool {
	if remembered == "" {
		return false
	}
	cmp, err := resourceversion.CompareResourceVersion(cached, remembered)
	return err == nil && cmp <= 0
}

// inParallel runs f(0..n-1) with at most syncWriters running at once.
func inParallel(n int, f func(int)) {
	sem := make(chan struct{}, syncWriters)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i)
		}()
	}
	wg.Wait()
}

// pickHeld makes the best copy the held token: intact, issued for the
// current spec if any is, and the newest. All copies normally hold the
// same token; one is enough to resume after a restart with no request.
func (ci *clusterInputs) pickHeld() {
	var best, edited *nsTarget
	for i := range ci.Targets {
		t := &ci.Targets[i]
		if t.Secret == nil {
			continue
		}
		edited = t
		if !t.Intact {
			continue
		}
		h, b := t.Held, heldToken{}
		if best != nil {
			b = best.Held
		}
		better := best == nil ||
			(h.SpecHash == ci.SpecHash) != (b.SpecHash == ci.SpecHash) && h.SpecHash == ci.SpecHash ||
			(h.SpecHash == ci.SpecHash) == (b.SpecHash == ci.SpecHash) && h.ExpiresAt.After(b.ExpiresAt)
		if better {
			best = t
		}
	}
	ci.Secret, ci.SecretConflict = nil, false
	ci.Held, ci.Intact = heldToken{}, false
	switch {
	case best != nil:
		ci.Secret, ci.Held, ci.Intact = best.Secret, best.Held, true
	case edited != nil:
		// No intact copy: an edited one says "edited" rather than
		// "missing"; either way a new token is due.
		ci.Secret = edited.Secret
	default:
		// No copy, and none can be written: a token would go nowhere.
		ci.SecretConflict = allConflicts(ci.Targets)
	}
}

// allConflicts reports whether every target namespace holds a foreign
// Secret of the name, so that no copy can be written anywhere.
func allConflicts(targets []nsTarget) bool {
	for _, t := range targets {
		if !t.Conflict {
			return false
		}
	}
	return len(targets) > 0
}
