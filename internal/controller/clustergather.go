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
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
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
	// Secret is the copy the ClusterOpsnowToken controls, nil when absent.
	Secret *corev1.Secret
	// Conflict is set when a Secret of that name exists and is not ours.
	Conflict bool
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

// gather reads a ClusterOpsnowToken's world: the selected namespaces, the
// copies it controls (cached), which selected namespaces hold a foreign
// Secret of that name (from the metadata cache, confirmed on the API
// server), the best copy as the held token, and the API key only when it
// may have changed. Nothing is sent or written here.
func (r *ClusterOpsnowTokenReconciler) gather(ctx context.Context, ct *authv1alpha1.ClusterOpsnowToken) (*clusterInputs, error) {
	key := clusterKey(ct.Name)
	mem := r.memory.get(key)
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
	if err := r.findConflicts(ctx, ci); err != nil {
		return nil, err
	}
	ci.pickHeld()
	ci.APIKeyVersion = r.tokens.apiKeyVersion(ctx, view)
	r.tokens.readAPIKeyIfChanged(ctx, &ci.inputs, mem)
	if refreshCause(ci.inputs) != "" {
		// The cache may be behind the operator's own last writes; a token
		// request is confirmed against the API server first, as for an
		// OpsnowToken. One list of this token's copies answers for all
		// namespaces.
		live, err := r.liveCopies(ctx, ct)
		if err != nil {
			return nil, err
		}
		ci.Targets, ci.Orphans = nil, nil
		ci.sortCopies(live, selected, terminating)
		if err := r.findConflicts(ctx, ci); err != nil {
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

// cachedCopies lists the cached Secrets ct controls, in any namespace.
func (r *ClusterOpsnowTokenReconciler) cachedCopies(ctx context.Context, ct *authv1alpha1.ClusterOpsnowToken) ([]corev1.Secret, error) {
	var list corev1.SecretList
	if err := r.tokens.client.List(ctx, &list, client.MatchingFields{clusterSecretControllerIndex: string(ct.UID)}); err != nil {
		return nil, fmt.Errorf("list Secrets of the ClusterOpsnowToken: %w", err)
	}
	return list.Items, nil
}

// liveCopies lists ct's copies on the API server, by its label: one
// request, and only Secrets labelled as ct's are returned.
func (r *ClusterOpsnowTokenReconciler) liveCopies(ctx context.Context, ct *authv1alpha1.ClusterOpsnowToken) ([]corev1.Secret, error) {
	var list corev1.SecretList
	if err := r.tokens.apiReader.List(ctx, &list, client.MatchingLabels{
		authv1alpha1.ManagedByLabel:    authv1alpha1.ManagedByValue,
		authv1alpha1.ClusterTokenLabel: tokenLabelValue(ct.Name),
	}); err != nil {
		return nil, fmt.Errorf("list Secrets of the ClusterOpsnowToken: %w", err)
	}
	return list.Items, nil
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

// findConflicts marks the targets without a copy of ours where a Secret of
// that name exists: the metadata cache says which exist, and the API
// server confirms, since the metadata cache may see the operator's own new
// copy before the Secret cache does. A copy found that way is taken.
func (r *ClusterOpsnowTokenReconciler) findConflicts(ctx context.Context, ci *clusterInputs) error {
	for i := range ci.Targets {
		t := &ci.Targets[i]
		if t.Secret != nil {
			continue
		}
		key := client.ObjectKey{Namespace: t.Namespace, Name: ci.SecretName}
		if r.tokens.secretMetadata.Get(ctx, key, secretMetadataObject()) != nil {
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

// liveCopy reads a Secret from the API server, metadata first so that a
// foreign Secret's data is never read: nil when absent, conflict when
// ct does not control it.
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
	s := &corev1.Secret{}
	if err := r.tokens.apiReader.Get(ctx, key, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("get Secret: %w", err)
	}
	return s, false, nil
}

// pickHeld makes the best copy the held token: intact, issued for the
// current spec if any is, and the newest. All copies normally hold the
// same token; one is enough to resume after a restart with no request.
func (ci *clusterInputs) pickHeld() {
	var best *corev1.Secret
	var bestHeld heldToken
	var edited *corev1.Secret
	for i := range ci.Targets {
		s := ci.Targets[i].Secret
		if s == nil {
			continue
		}
		edited = s
		h, ok := readHeldToken(s)
		if !ok {
			continue
		}
		better := best == nil ||
			(h.SpecHash == ci.SpecHash) != (bestHeld.SpecHash == ci.SpecHash) && h.SpecHash == ci.SpecHash ||
			(h.SpecHash == ci.SpecHash) == (bestHeld.SpecHash == ci.SpecHash) && h.ExpiresAt.After(bestHeld.ExpiresAt)
		if better {
			best, bestHeld = s, h
		}
	}
	if best == nil {
		// No intact copy: an edited one, if any, says "edited" rather
		// than "missing"; either way a new token is due.
		best = edited
	}
	ci.Secret, ci.SecretConflict = best, false
	ci.Held, ci.Intact = heldToken{}, false
	if best != nil {
		ci.Held, ci.Intact = readHeldToken(best)
	}
}

// holds reports whether s is an intact copy holding token.
func holds(s *corev1.Secret, token string) bool {
	if s == nil {
		return false
	}
	h, ok := readHeldToken(s)
	return ok && h.Token == token
}
