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

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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

// Field indexes on OpsnowTokens, to map a Secret event to the tokens it concerns.
const (
	apiKeySecretIndex = "spec.apiKeySecretRef.name"
	targetSecretIndex = "status.secretName"
	// secretControllerIndex maps a cached Secret to its controlling OpsnowToken's UID.
	secretControllerIndex = "metadata.controller.uid"
)

// DefaultMaxConcurrentReconciles lets a thousand new tokens wait on OpsNow
// in parallel rather than one after another; reconciles mostly wait on I/O.
const DefaultMaxConcurrentReconciles = 50

// CacheOptions returns the manager's cache configuration under the scale
// rules: of all Secrets only the operator's own target Secrets (selected by
// label) are cached, managed fields are dropped, and namespaces, when given,
// bound every watch.
func CacheOptions(namespaces []string) cache.Options {
	return cache.Options{
		DefaultNamespaces: namespaceConfigs(namespaces),
		DefaultTransform:  cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {
				Label: labels.SelectorFromSet(labels.Set{
					authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue,
				}),
				Transform: keepDataOfControlledSecrets,
			},
		},
	}
}

// keepDataOfControlledSecrets drops the data of cached Secrets that no
// OpsnowToken controls. The label that selects them is a claim anyone may
// make: a tenant labelling many large Secrets as the operator's must not
// grow its memory. The reconciler never reads such a Secret's data (it is a
// SecretConflict, decided on metadata). Managed fields go too, as for every
// other cached object.
func keepDataOfControlledSecrets(in any) (any, error) {
	s, ok := in.(*corev1.Secret)
	if !ok {
		return in, nil
	}
	s.ManagedFields = nil
	if ref := metav1.GetControllerOf(s); ref == nil || ref.Kind != "OpsnowToken" || ref.APIVersion != authv1alpha1.GroupVersion.String() {
		s.Data, s.StringData = nil, nil
	}
	return s, nil
}

func namespaceConfigs(namespaces []string) map[string]cache.Config {
	if len(namespaces) == 0 {
		return nil
	}
	configs := make(map[string]cache.Config, len(namespaces))
	for _, ns := range namespaces {
		configs[ns] = cache.Config{}
	}
	return configs
}

// keepSecretIdentity reduces cached Secret metadata to what change detection
// needs, so memory stays flat however many Secrets a cluster holds.
func keepSecretIdentity(in any) (any, error) {
	m, ok := in.(*metav1.PartialObjectMetadata)
	if !ok {
		return in, nil
	}
	return &metav1.PartialObjectMetadata{
		TypeMeta: m.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:            m.Name,
			Namespace:       m.Namespace,
			UID:             m.UID,
			ResourceVersion: m.ResourceVersion,
		},
	}, nil
}

// refreshRequested passes updates that change the refresh-requested-at annotation.
var refreshRequested = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		key := authv1alpha1.RefreshRequestedAtAnnotation
		return e.ObjectOld.GetAnnotations()[key] != e.ObjectNew.GetAnnotations()[key]
	},
}

// Setup builds the reconciler and wires it into mgr: the one wiring the
// manager binary and the tests share. The cluster-facing Options left empty
// (clients, scheme, event recorder, the Secret metadata cache) come from mgr.
func Setup(mgr ctrl.Manager, o Options) (*OpsnowTokenReconciler, error) {
	if o.Client == nil {
		o.Client = mgr.GetClient()
	}
	if o.APIReader == nil {
		o.APIReader = mgr.GetAPIReader()
	}
	if o.Scheme == nil {
		o.Scheme = mgr.GetScheme()
	}
	if o.Recorder == nil {
		o.Recorder = mgr.GetEventRecorder("opsnow-token-operator")
	}
	var secretMetadata cache.Cache
	if o.SecretMetadata == nil {
		c, err := cache.New(mgr.GetConfig(), cache.Options{
			HTTPClient:        mgr.GetHTTPClient(),
			Scheme:            mgr.GetScheme(),
			Mapper:            mgr.GetRESTMapper(),
			DefaultNamespaces: namespaceConfigs(o.WatchNamespaces),
			DefaultTransform:  keepSecretIdentity,
		})
		if err != nil {
			return nil, fmt.Errorf("create Secret metadata cache: %w", err)
		}
		if err := mgr.Add(warmCaches(mgr, c)); err != nil {
			return nil, fmt.Errorf("add Secret metadata cache: %w", err)
		}
		secretMetadata, o.SecretMetadata = c, c
	}
	r := NewOpsnowTokenReconciler(o)
	if err := r.SetupWithManager(mgr, secretMetadata); err != nil {
		return nil, err
	}
	return r, nil
}

// IndexFields registers the field indexes the reconciler lists by.
func IndexFields(ctx context.Context, indexer client.FieldIndexer) error {
	if err := indexer.IndexField(ctx, &authv1alpha1.OpsnowToken{}, apiKeySecretIndex, indexAPIKeySecret); err != nil {
		return fmt.Errorf("index OpsnowTokens by API-key Secret: %w", err)
	}
	if err := indexer.IndexField(ctx, &authv1alpha1.OpsnowToken{}, targetSecretIndex, indexTargetSecret); err != nil {
		return fmt.Errorf("index OpsnowTokens by target Secret: %w", err)
	}
	if err := indexer.IndexField(ctx, &corev1.Secret{}, secretControllerIndex, indexSecretController); err != nil {
		return fmt.Errorf("index Secrets by controlling OpsnowToken: %w", err)
	}
	return nil
}

func indexAPIKeySecret(o client.Object) []string {
	return []string{o.(*authv1alpha1.OpsnowToken).Spec.APIKeySecretRef.Name}
}

func indexTargetSecret(o client.Object) []string {
	t := o.(*authv1alpha1.OpsnowToken)
	return []string{targetSecretName(t.Spec.SecretName, t.Name)}
}

// indexSecretController maps a cached (operator-labelled) Secret to the UID
// of the OpsnowToken that controls it.
func indexSecretController(o client.Object) []string {
	ref := metav1.GetControllerOf(o)
	if ref == nil || ref.Kind != "OpsnowToken" || ref.APIVersion != authv1alpha1.GroupVersion.String() {
		return nil
	}
	return []string{string(ref.UID)}
}

// SetupWithManager wires the reconciler's watches:
//   - OpsnowTokens, on spec or refresh-request changes only (its own status
//     writes and label edits do not reconcile);
//   - target Secrets it controls, from the label-selected cache;
//   - metadata of all Secrets (in the watched namespaces), through
//     secretMetadata, a cache that keeps only names and resourceVersions, to
//     notice API-key rotation and a conflicting Secret going away;
//   - the refresh scheduler's wake-ups; the scheduler runs with the manager.
func (r *OpsnowTokenReconciler) SetupWithManager(mgr ctrl.Manager, secretMetadata cache.Cache) error {
	if err := IndexFields(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return err
	}
	if err := mgr.Add(r.scheduler); err != nil {
		return fmt.Errorf("add refresh scheduler: %w", err)
	}
	b := ctrl.NewControllerManagedBy(mgr).
		For(&authv1alpha1.OpsnowToken{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, refreshRequested))).
		Owns(&corev1.Secret{}).
		WatchesRawSource(source.Channel(r.scheduler.events, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.workers}).
		Named("opsnowtoken")
	if secretMetadata != nil {
		b = b.WatchesRawSource(source.Kind(secretMetadata, secretMetadataObject(),
			handler.TypedEnqueueRequestsFromMapFunc(r.tokensForSecret)))
	}
	return b.Complete(r)
}

func secretMetadataObject() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}

// tokensForSecret maps a Secret to the OpsnowTokens that read it as their
// API key or write it as their target.
func (r *OpsnowTokenReconciler) tokensForSecret(ctx context.Context, s *metav1.PartialObjectMetadata) []reconcile.Request {
	var requests []reconcile.Request
	for _, index := range []string{apiKeySecretIndex, targetSecretIndex} {
		var tokens authv1alpha1.OpsnowTokenList
		if err := r.client.List(ctx, &tokens, client.InNamespace(s.Namespace), client.MatchingFields{index: s.Name}); err != nil {
			logf.FromContext(ctx).Error(err, "Failed to list OpsnowTokens for Secret", "secret", client.ObjectKeyFromObject(s))
			continue
		}
		for i := range tokens.Items {
			requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&tokens.Items[i])})
		}
	}
	return requests
}
