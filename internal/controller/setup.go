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
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// secretControllerIndex maps a cached Secret to the UID of the OpsnowToken
// or ClusterOpsnowToken that controls it.
const secretControllerIndex = "metadata.controller.uid"

// DefaultMaxConcurrentReconciles lets a thousand new tokens wait on OpsNow
// in parallel rather than one after another; reconciles mostly wait on I/O.
const DefaultMaxConcurrentReconciles = 50

// CacheOptions returns the manager's cache configuration under the scale
// rules: managed fields and kubectl's last-applied copy are dropped,
// namespaces, when given, bound every watch, and a read of a kind nobody
// watches fails instead of silently starting an informer for it. No Secret
// is in this cache: Secrets are watched by metadata only (Setup), so no
// Secret's data, however large and whoever labelled it, is ever held.
func CacheOptions(namespaces []string) cache.Options {
	return cache.Options{
		DefaultNamespaces:           namespaceConfigs(namespaces),
		DefaultTransform:            stripForCache,
		ReaderFailOnMissingInformer: true,
	}
}

// lastAppliedAnnotation is kubectl apply's copy of the whole object, which
// the reconciler never reads.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// stripForCache drops what no reader of the cache needs from each object.
func stripForCache(in any) (any, error) {
	o, ok := in.(metav1.Object)
	if !ok {
		return in, nil
	}
	o.SetManagedFields(nil)
	o.SetNamespace(namespaces.intern(o.GetNamespace()))
	if a := o.GetAnnotations(); a[lastAppliedAnnotation] != "" {
		delete(a, lastAppliedAnnotation)
		o.SetAnnotations(a)
	}
	return in, nil
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

// keepSecretMetadata reduces a Secret's cached metadata to what the
// reconciler reads, so that memory stays flat however many Secrets a
// cluster holds and whatever labels or annotations they carry: identity and
// version for every Secret (API-key rotation, conflicts), and for a Secret
// an OpsnowToken or a ClusterOpsnowToken controls also that controller
// reference and the operator's own labels and annotations (expiry and
// hashes of the token it holds, the template applied).
func keepSecretMetadata(in any) (any, error) {
	m, ok := in.(*metav1.PartialObjectMetadata)
	if !ok {
		return in, nil
	}
	out := &metav1.PartialObjectMetadata{
		TypeMeta: m.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:              m.Name,
			Namespace:         namespaces.intern(m.Namespace),
			UID:               m.UID,
			ResourceVersion:   m.ResourceVersion,
			DeletionTimestamp: m.DeletionTimestamp,
		},
	}
	if ref := controllingToken(m); ref != nil {
		out.OwnerReferences = []metav1.OwnerReference{*ref}
		out.Labels = operatorKeys(m.Labels)
		out.Annotations = operatorKeys(m.Annotations)
	}
	return out, nil
}

// tokenKinds are the kinds whose Secrets keep their controller reference and
// the operator's keys in the metadata cache: OpsnowToken targets and
// ClusterOpsnowToken copies.
var tokenKinds = map[string]bool{"OpsnowToken": true, "ClusterOpsnowToken": true}

// controllingToken returns the controller reference of a Secret an
// OpsnowToken or a ClusterOpsnowToken controls, nil for any other Secret.
func controllingToken(o metav1.Object) *metav1.OwnerReference {
	ref := metav1.GetControllerOfNoCopy(o)
	if ref == nil || !tokenKinds[ref.Kind] || ref.APIVersion != authv1alpha1.GroupVersion.String() {
		return nil
	}
	r := *ref
	return &r
}

// operatorKeys returns the labels or annotations that are the operator's.
// Known keys and the managed-by value are the package's own strings, so ten
// thousand cached Secrets share one copy of each instead of holding their own.
func operatorKeys(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		if k != authv1alpha1.ManagedByLabel && !strings.HasPrefix(k, operatorKeyPrefix) {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(in))
		}
		if known, ok := knownOperatorKeys[k]; ok {
			k = known
		}
		if v == authv1alpha1.ManagedByValue {
			v = authv1alpha1.ManagedByValue
		}
		out[k] = v
	}
	return out
}

var knownOperatorKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{authv1alpha1.ManagedByLabel, authv1alpha1.TokenLabel, issuedAtAnnotation,
		expiresAtAnnotation, specHashAnnotation, apiKeyHashAnnotation, apiKeyVersionAnnotation,
		tokenHashAnnotation, refreshRequestAnnotation} {
		m[k] = k
	}
	return m
}()

// namespaces interns namespace names: every cached object holds its own
// copy of its namespace's name otherwise.
var namespaces = &interner{m: map[string]string{}}

// interner returns one shared copy of each string, for a bounded number of
// strings: past maxInterned it returns its argument.
type interner struct {
	mu sync.Mutex
	m  map[string]string
}

const maxInterned = 100000

func (i *interner) intern(s string) string {
	i.mu.Lock()
	defer i.mu.Unlock()
	if shared, ok := i.m[s]; ok {
		return shared
	}
	if len(i.m) < maxInterned {
		i.m[s] = s
	}
	return s
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
			DefaultTransform:  keepSecretMetadata,
		})
		if err != nil {
			return nil, fmt.Errorf("create Secret metadata cache: %w", err)
		}
		if err := IndexSecretMetadata(context.Background(), c); err != nil {
			return nil, err
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

// IndexSecretMetadata registers the index of the Secret metadata cache: the
// UID of the OpsnowToken or ClusterOpsnowToken that controls a Secret.
func IndexSecretMetadata(ctx context.Context, indexer client.FieldIndexer) error {
	if err := indexer.IndexField(ctx, secretMetadataObject(), secretControllerIndex, indexSecretController); err != nil {
		return fmt.Errorf("index Secrets by controlling token: %w", err)
	}
	return nil
}

// indexSecretController maps a Secret to the UID of the OpsnowToken or
// ClusterOpsnowToken that controls it.
func indexSecretController(o client.Object) []string {
	ref := controllingToken(o)
	if ref == nil {
		return nil
	}
	return []string{string(ref.UID)}
}

// SetupWithManager wires the reconciler's watches:
//   - OpsnowTokens, on spec or refresh-request changes only (its own status
//     writes and label edits do not reconcile);
//   - metadata of all Secrets (in the watched namespaces), through
//     secretMetadata, a cache that keeps little more than names and
//     resourceVersions (keepSecretMetadata): to notice a change of a target
//     Secret it controls, API-key rotation and a conflicting Secret going
//     away;
//   - the refresh scheduler's wake-ups; the scheduler runs with the manager.
func (r *OpsnowTokenReconciler) SetupWithManager(mgr ctrl.Manager, secretMetadata cache.Cache) error {
	tokens, err := mgr.GetCache().GetInformer(context.Background(), &authv1alpha1.OpsnowToken{})
	if err != nil {
		return fmt.Errorf("get OpsnowToken informer: %w", err)
	}
	if _, err := tokens.AddEventHandler(r.secretUsers.handler()); err != nil {
		return fmt.Errorf("follow the Secrets of OpsnowTokens: %w", err)
	}
	if err := mgr.Add(r.scheduler); err != nil {
		return fmt.Errorf("add refresh scheduler: %w", err)
	}
	tokenSeries.use(mgr.GetCache(), r.refreshCounts)
	b := ctrl.NewControllerManagedBy(mgr).
		For(&authv1alpha1.OpsnowToken{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, refreshRequested))).
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

// tokensForSecret maps a Secret to the OpsnowTokens that control it, read
// it as their API key or write it as their target.
func (r *OpsnowTokenReconciler) tokensForSecret(_ context.Context, s *metav1.PartialObjectMetadata) []reconcile.Request {
	var requests []reconcile.Request
	if ref := controllingToken(s); ref != nil && ref.Kind == "OpsnowToken" {
		requests = append(requests, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: ref.Name}})
	}
	for _, tok := range r.secretUsers.users(client.ObjectKeyFromObject(s)) {
		requests = append(requests, reconcile.Request{NamespacedName: tok})
	}
	return requests
}
