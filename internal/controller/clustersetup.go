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
	"maps"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// SetupClusterTokens wires a ClusterOpsnowToken reconciler into mgr next to
// tokens (as Setup returned it), sharing its clients, exchanger, allowlist
// and rate limiter; API keys are read in namespace. It needs the manager to
// watch all namespaces: copies go to any namespace a selector matches.
func SetupClusterTokens(mgr ctrl.Manager, tokens *OpsnowTokenReconciler, namespace string) (*ClusterOpsnowTokenReconciler, error) {
	if namespace == "" {
		return nil, errors.New("no cluster resource namespace for the API-key Secrets of ClusterOpsnowTokens")
	}
	if len(tokens.namespaces) > 0 {
		return nil, errors.New("ClusterOpsnowTokens need the manager to watch all namespaces")
	}
	metadata, ok := tokens.secretMetadata.(cache.Cache)
	if !ok {
		return nil, errors.New("ClusterOpsnowTokens need the Secret metadata cache Setup creates")
	}
	r := NewClusterOpsnowTokenReconciler(tokens, namespace)
	// A standby's informers run too, as for OpsnowTokens (warmCaches).
	if err := warmObjects(context.Background(), mgr.GetCache(), &authv1alpha1.ClusterOpsnowToken{}, &corev1.Namespace{}); err != nil {
		return nil, err
	}
	if err := mgr.Add(r.scheduler); err != nil {
		return nil, fmt.Errorf("add ClusterOpsnowToken refresh scheduler: %w", err)
	}
	b := ctrl.NewControllerManagedBy(mgr).
		For(&authv1alpha1.ClusterOpsnowToken{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, refreshRequested))).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.allClusterTokens),
			builder.WithPredicates(namespaceSelectionChanged)).
		WatchesRawSource(source.Channel(r.scheduler.events, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.workers}).
		Named("clusteropsnowtoken").
		// Copies are watched by metadata only, as OpsnowToken targets are:
		// no Secret's data is cached (see CacheOptions).
		WatchesRawSource(source.Kind(metadata, secretMetadataObject(),
			handler.TypedEnqueueRequestsFromMapFunc(r.clusterTokensForSecret)))
	if err := b.Complete(r); err != nil {
		return nil, err
	}
	return r, nil
}

// namespaceSelectionChanged passes the namespace events that can change a
// selection: a namespace created or deleted, its labels changed, or its
// deletion begun.
var namespaceSelectionChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		return !maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) ||
			e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
	},
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// allClusterTokens maps an event to every ClusterOpsnowToken: there are few,
// and a namespace's labels can make it join one selection and leave another.
func (r *ClusterOpsnowTokenReconciler) allClusterTokens(ctx context.Context, _ client.Object) []reconcile.Request {
	var list authv1alpha1.ClusterOpsnowTokenList
	if err := r.tokens.client.List(ctx, &list); err != nil {
		logf.FromContext(ctx).Error(err, "Failed to list ClusterOpsnowTokens")
		return nil
	}
	requests := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		requests = append(requests, reconcile.Request{NamespacedName: clusterKey(list.Items[i].Name)})
	}
	return requests
}

// clusterTokensForSecret maps a Secret to the ClusterOpsnowToken that
// controls it (a copy edited or deleted), and to those that read it as
// their API key (in the cluster resource namespace) or write a Secret of
// its name (a conflict appearing or going).
func (r *ClusterOpsnowTokenReconciler) clusterTokensForSecret(ctx context.Context, s *metav1.PartialObjectMetadata) []reconcile.Request {
	var requests []reconcile.Request
	if ref := controllingToken(s); ref != nil && ref.Kind == "ClusterOpsnowToken" {
		requests = append(requests, reconcile.Request{NamespacedName: clusterKey(ref.Name)})
	}
	var list authv1alpha1.ClusterOpsnowTokenList
	if err := r.tokens.client.List(ctx, &list); err != nil {
		logf.FromContext(ctx).Error(err, "Failed to list ClusterOpsnowTokens for Secret", "secret", client.ObjectKeyFromObject(s))
		return requests
	}
	for i := range list.Items {
		ct := &list.Items[i]
		if ct.Spec.SecretName == s.Name || (s.Namespace == r.namespace && ct.Spec.APIKeySecretRef.Name == s.Name) {
			requests = append(requests, reconcile.Request{NamespacedName: clusterKey(ct.Name)})
		}
	}
	return requests
}
