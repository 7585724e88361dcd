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
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/endpoint"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/opsnow"
)

// The fast layer: the real Reconcile against controller-runtime's fake
// client, a fake clock and a fake exchanger. No control plane, no network.

const (
	testNamespace = "team-a"
	testEndpoint  = "https://api.opsnow.io"
)

var testScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(authv1alpha1.AddToScheme(s))
	return s
}()

// fakeExchanger stands in for OpsNow: it counts requests, issues numbered
// tokens and can fail, or take time on the clock, as a test says.
type fakeExchanger struct {
	clock *clocktesting.FakeClock

	mu       sync.Mutex
	calls    int
	keys     []string
	lifetime time.Duration
	err      error
	// takes is how long each exchange takes on the fake clock.
	takes time.Duration
}

func (f *fakeExchanger) Exchange(_ context.Context, _, apiKey string) (opsnow.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.keys = append(f.keys, apiKey)
	issued := f.clock.Now()
	if f.takes > 0 {
		f.clock.Step(f.takes)
	}
	if f.err != nil {
		return opsnow.Token{}, f.err
	}
	return opsnow.Token{
		AccessToken: fmt.Sprintf("token-%d", f.calls),
		IssuedAt:    issued,
		ExpiresAt:   issued.Add(f.lifetime).Truncate(time.Second),
	}, nil
}

func (f *fakeExchanger) requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeExchanger) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// world is one fast test's cluster, clock, upstream and reconciler.
type world struct {
	t     *testing.T
	ctx   context.Context
	store client.WithWatch // the fake API server's objects
	clock *clocktesting.FakeClock
	ex    *fakeExchanger
	rec   *events.FakeRecorder
	r     *OpsnowTokenReconciler
	opts  Options

	mu sync.Mutex
	// denySecretWrites, when set, is returned by every Secret create,
	// update or patch, or only by those in denyNamespace when that is set.
	denySecretWrites error
	denyNamespace    string
	// failSecretReads, when set, is returned by every Secret read.
	failSecretReads error
	// staleToken, when set, is what the cache returns for that OpsnowToken.
	staleToken *authv1alpha1.OpsnowToken
	// liveReads counts reads that bypass the cache.
	liveReads int
	// writes counts creates, updates, deletes and patches.
	writes int
}

type worldOption func(*Options)

func withRate(perSecond float64) worldOption {
	return func(o *Options) { o.TokenRequestRate = perSecond }
}

func newWorld(t *testing.T, opts ...worldOption) *world {
	t.Helper()
	w := &world{
		t:     t,
		ctx:   context.Background(),
		clock: clocktesting.NewFakeClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)),
		rec:   events.NewFakeRecorder(1000),
	}
	w.ex = &fakeExchanger{clock: w.clock, lifetime: time.Hour}
	w.store = fake.NewClientBuilder().WithScheme(testScheme).
		WithStatusSubresource(&authv1alpha1.OpsnowToken{}, &authv1alpha1.ClusterOpsnowToken{}).
		WithIndex(&corev1.Secret{}, secretControllerIndex, indexSecretController).
		Build()
	writes := interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if err := w.secretWriteDenied(obj); err != nil {
				return err
			}
			w.count(&w.writes)
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if err := w.secretWriteDenied(obj); err != nil {
				return err
			}
			w.count(&w.writes)
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			if err := w.secretWriteDenied(obj); err != nil {
				return err
			}
			w.count(&w.writes)
			return c.Patch(ctx, obj, patch, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			w.count(&w.writes)
			return c.Delete(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			w.count(&w.writes)
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	}
	cached := writes
	cached.Get = func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		if err := w.readFails(obj); err != nil {
			return err
		}
		if tok, ok := obj.(*authv1alpha1.OpsnowToken); ok {
			w.mu.Lock()
			stale := w.staleToken
			w.mu.Unlock()
			if stale != nil && client.ObjectKeyFromObject(stale) == key {
				stale.DeepCopyInto(tok)
				return nil
			}
		}
		return c.Get(ctx, key, obj, opts...)
	}
	live := interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if err := w.readFails(obj); err != nil {
				return err
			}
			w.count(&w.liveReads)
			return c.Get(ctx, key, obj, opts...)
		},
	}
	// The metadata cache holds what keepSecretMetadata keeps, no more.
	metadataCache := interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if err := c.Get(ctx, key, obj, opts...); err != nil {
				return err
			}
			if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
				*m = *asCached(m)
			}
			return nil
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if err := c.List(ctx, list, opts...); err != nil {
				return err
			}
			if l, ok := list.(*metav1.PartialObjectMetadataList); ok {
				for i := range l.Items {
					l.Items[i] = *asCached(&l.Items[i])
				}
			}
			return nil
		},
	}
	allow, err := endpoint.NewAllowlist(testEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{
		Client:          interceptor.NewClient(w.store, cached),
		APIReader:       interceptor.NewClient(w.store, live),
		SecretMetadata:  interceptor.NewClient(w.store, metadataCache),
		Scheme:          testScheme,
		Recorder:        w.rec,
		Clock:           w.clock,
		Exchanger:       w.ex,
		Endpoints:       allow,
		DefaultEndpoint: testEndpoint,
	}
	for _, opt := range opts {
		opt(&o)
	}
	w.opts = o
	w.r = NewOpsnowTokenReconciler(o)
	return w
}

// restart replaces the reconciler with a new one, as a restarted manager
// or a new leader: all it knew in memory is gone. The upstream's request
// count starts again at 0.
func (w *world) restart() {
	w.ex = &fakeExchanger{clock: w.clock, lifetime: time.Hour}
	w.opts.Exchanger = w.ex
	w.r = NewOpsnowTokenReconciler(w.opts)
}

// asCached is m as the Secret metadata cache holds it.
func asCached(m *metav1.PartialObjectMetadata) *metav1.PartialObjectMetadata {
	out, _ := keepSecretMetadata(m) // never fails
	return out.(*metav1.PartialObjectMetadata)
}

func (w *world) count(n *int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	*n++
}

func (w *world) secretWriteDenied(obj client.Object) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := obj.(*corev1.Secret); ok && (w.denyNamespace == "" || w.denyNamespace == obj.GetNamespace()) {
		return w.denySecretWrites
	}
	return nil
}

func (w *world) readFails(obj client.Object) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch obj.(type) {
	case *corev1.Secret, *metav1.PartialObjectMetadata:
		return w.failSecretReads
	}
	return nil
}

func (w *world) set(f func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f()
}

func (w *world) counters() (liveReads, writes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.liveReads, w.writes
}

// admissionDenied is what the API server answers when a
// ValidatingAdmissionPolicy refuses a write.
func admissionDenied() error {
	return apierrors.NewForbidden(corev1.Resource("secrets"), "t",
		fmt.Errorf("ValidatingAdmissionPolicy 'no-secrets' denied request: Secrets are created by the platform team"))
}

// createAPIKey creates the API-key Secret "opsnow-api-key" holding key.
func (w *world) createAPIKey(key string) *corev1.Secret {
	w.t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: "opsnow-api-key"},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{authv1alpha1.DefaultAPIKeyKey: []byte(key)},
	}
	if err := w.store.Create(w.ctx, s); err != nil {
		w.t.Fatalf("create API-key Secret: %v", err)
	}
	return s
}

// setAPIKey changes the key in the API-key Secret.
func (w *world) setAPIKey(key string) {
	w.t.Helper()
	s := &corev1.Secret{}
	if err := w.store.Get(w.ctx, client.ObjectKey{Namespace: testNamespace, Name: "opsnow-api-key"}, s); err != nil {
		w.t.Fatal(err)
	}
	s.Data[authv1alpha1.DefaultAPIKeyKey] = []byte(key)
	if err := w.store.Update(w.ctx, s); err != nil {
		w.t.Fatal(err)
	}
}

// createToken creates an OpsnowToken reading "opsnow-api-key".
func (w *world) createToken(name string, mutate ...func(*authv1alpha1.OpsnowToken)) *authv1alpha1.OpsnowToken {
	w.t.Helper()
	tok := &authv1alpha1.OpsnowToken{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: name, UID: types.UID("uid-" + name), Generation: 1},
		Spec:       authv1alpha1.OpsnowTokenSpec{APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: "opsnow-api-key"}},
	}
	for _, m := range mutate {
		m(tok)
	}
	if err := w.store.Create(w.ctx, tok); err != nil {
		w.t.Fatalf("create OpsnowToken: %v", err)
	}
	return tok
}

// editToken changes an OpsnowToken as a user would; a spec change bumps
// the generation, as the API server does.
func (w *world) editToken(name string, mutate func(*authv1alpha1.OpsnowToken)) {
	w.t.Helper()
	tok := w.token(name)
	before := *tok.Spec.DeepCopy()
	mutate(tok)
	if !equality.Semantic.DeepEqual(before, tok.Spec) {
		tok.Generation++
	}
	if err := w.store.Update(w.ctx, tok); err != nil {
		w.t.Fatalf("update OpsnowToken: %v", err)
	}
}

func (w *world) token(name string) *authv1alpha1.OpsnowToken {
	w.t.Helper()
	tok := &authv1alpha1.OpsnowToken{}
	if err := w.store.Get(w.ctx, client.ObjectKey{Namespace: testNamespace, Name: name}, tok); err != nil {
		w.t.Fatalf("get OpsnowToken %s: %v", name, err)
	}
	return tok
}

// secret returns the Secret, or nil when it does not exist.
func (w *world) secret(name string) *corev1.Secret {
	w.t.Helper()
	s := &corev1.Secret{}
	err := w.store.Get(w.ctx, client.ObjectKey{Namespace: testNamespace, Name: name}, s)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		w.t.Fatalf("get Secret %s: %v", name, err)
	}
	return s
}

// reconcile runs one Reconcile of the named token and fails the test on an error.
func (w *world) reconcile(name string) {
	w.t.Helper()
	if err := w.tryReconcile(name); err != nil {
		w.t.Fatalf("reconcile %s: %v", name, err)
	}
}

func (w *world) tryReconcile(name string) error {
	res, err := w.r.Reconcile(w.ctx, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: testNamespace, Name: name}})
	if res != (ctrl.Result{}) {
		w.t.Errorf("reconcile %s returned %+v: timing belongs to the scheduler on the injected clock", name, res)
	}
	return err
}

// stepTo moves the fake clock to t, if it is ahead.
func (w *world) stepTo(t time.Time) {
	if d := t.Sub(w.clock.Now()); d > 0 {
		w.clock.Step(d)
	}
}

// events drains the events recorded so far, as "Type Reason message".
func (w *world) events() []string {
	var out []string
	for {
		select {
		case e := <-w.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// eventsOf returns the drained events whose type and reason are given.
func eventsOf(all []string, eventType, reason string) []string {
	var out []string
	for _, e := range all {
		if strings.HasPrefix(e, eventType+" "+reason+" ") {
			out = append(out, e)
		}
	}
	return out
}

func condition(tok *authv1alpha1.OpsnowToken, condType string) *metav1.Condition {
	return apimeta.FindStatusCondition(tok.Status.Conditions, condType)
}

// expectReady fails the test unless the token's Ready condition has status and reason.
func (w *world) expectReady(name string, status metav1.ConditionStatus, reason string) *authv1alpha1.OpsnowToken {
	w.t.Helper()
	tok := w.token(name)
	c := condition(tok, authv1alpha1.ConditionReady)
	if c == nil || c.Status != status || c.Reason != reason {
		w.t.Fatalf("%s Ready: got %+v, want %s/%s (status %+v)", name, c, status, reason, tok.Status)
	}
	return tok
}

func (w *world) expectRequests(n int) {
	w.t.Helper()
	if got := w.ex.requests(); got != n {
		w.t.Fatalf("token requests: got %d, want %d", got, n)
	}
}
