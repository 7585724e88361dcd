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
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/opsnow"
)

// The fast layer for ClusterOpsnowTokens: the real reconciler on the fake
// client, clock and exchanger of world_test.go.

// clusterNamespace is the cluster resource namespace of the fast tests.
const clusterNamespace = "opsnow-system"

// clusterWorld is a world with a ClusterOpsnowToken reconciler on top.
type clusterWorld struct {
	*world
	cr *ClusterOpsnowTokenReconciler
}

func newClusterWorld(t *testing.T) *clusterWorld {
	t.Helper()
	w := &clusterWorld{world: newWorld(t)}
	w.cr = NewClusterOpsnowTokenReconciler(w.r, clusterNamespace)
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: clusterNamespace, Name: "opsnow-api-key"},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{authv1alpha1.DefaultAPIKeyKey: []byte("cluster-key-1")},
	}
	w.createNamespace(clusterNamespace, nil)
	if err := w.store.Create(w.ctx, s); err != nil {
		t.Fatal(err)
	}
	return w
}

// restart replaces both reconcilers, as a restarted manager.
func (w *clusterWorld) restart() {
	w.world.restart()
	w.cr = NewClusterOpsnowTokenReconciler(w.r, clusterNamespace)
}

func (w *clusterWorld) createNamespace(name string, labels map[string]string) {
	w.t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := w.store.Create(w.ctx, ns); err != nil {
		w.t.Fatalf("create namespace %s: %v", name, err)
	}
}

func (w *clusterWorld) labelNamespace(name string, labels map[string]string) {
	w.t.Helper()
	ns := &corev1.Namespace{}
	if err := w.store.Get(w.ctx, client.ObjectKey{Name: name}, ns); err != nil {
		w.t.Fatal(err)
	}
	ns.Labels = labels
	if err := w.store.Update(w.ctx, ns); err != nil {
		w.t.Fatal(err)
	}
}

func (w *clusterWorld) setClusterAPIKey(key string) {
	w.t.Helper()
	s := &corev1.Secret{}
	if err := w.store.Get(w.ctx, client.ObjectKey{Namespace: clusterNamespace, Name: "opsnow-api-key"}, s); err != nil {
		w.t.Fatal(err)
	}
	s.Data[authv1alpha1.DefaultAPIKeyKey] = []byte(key)
	if err := w.store.Update(w.ctx, s); err != nil {
		w.t.Fatal(err)
	}
}

// teamSelector selects the namespaces with a team label, whatever its value.
func teamSelector() *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: "team", Operator: metav1.LabelSelectorOpExists,
	}}}
}

func (w *clusterWorld) createClusterToken(name string, mutate ...func(*authv1alpha1.ClusterOpsnowToken)) {
	w.t.Helper()
	ct := &authv1alpha1.ClusterOpsnowToken{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Generation: 1},
		Spec: authv1alpha1.ClusterOpsnowTokenSpec{
			APIKeySecretRef:   authv1alpha1.ClusterSecretKeySelector{Name: "opsnow-api-key"},
			SecretName:        "opsnow-token",
			NamespaceSelector: teamSelector(),
		},
	}
	for _, m := range mutate {
		m(ct)
	}
	if err := w.store.Create(w.ctx, ct); err != nil {
		w.t.Fatalf("create ClusterOpsnowToken: %v", err)
	}
}

func (w *clusterWorld) clusterToken(name string) *authv1alpha1.ClusterOpsnowToken {
	w.t.Helper()
	ct := &authv1alpha1.ClusterOpsnowToken{}
	if err := w.store.Get(w.ctx, client.ObjectKey{Name: name}, ct); err != nil {
		w.t.Fatalf("get ClusterOpsnowToken %s: %v", name, err)
	}
	return ct
}

func (w *clusterWorld) editClusterToken(name string, mutate func(*authv1alpha1.ClusterOpsnowToken)) {
	w.t.Helper()
	ct := w.clusterToken(name)
	before := *ct.Spec.DeepCopy()
	mutate(ct)
	if !equality.Semantic.DeepEqual(before, ct.Spec) {
		ct.Generation++
	}
	if err := w.store.Update(w.ctx, ct); err != nil {
		w.t.Fatalf("update ClusterOpsnowToken: %v", err)
	}
}

func (w *clusterWorld) reconcileCluster(name string) {
	w.t.Helper()
	res, err := w.cr.Reconcile(w.ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: name}})
	if err != nil {
		w.t.Fatalf("reconcile ClusterOpsnowToken %s: %v", name, err)
	}
	if res != (ctrl.Result{}) {
		w.t.Errorf("reconcile returned %+v: timing belongs to the scheduler", res)
	}
}

// copyIn returns the Secret "opsnow-token" in ns, nil when absent.
func (w *clusterWorld) copyIn(ns string) *corev1.Secret {
	w.t.Helper()
	s := &corev1.Secret{}
	err := w.store.Get(w.ctx, client.ObjectKey{Namespace: ns, Name: "opsnow-token"}, s)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		w.t.Fatal(err)
	}
	return s
}

// expectCopies fails unless exactly the namespaces given hold token in
// "opsnow-token", controlled by the ClusterOpsnowToken name.
func (w *clusterWorld) expectCopies(name, token string, namespaces ...string) {
	w.t.Helper()
	for _, ns := range namespaces {
		s := w.copyIn(ns)
		if s == nil {
			w.t.Fatalf("namespace %s: no Secret opsnow-token", ns)
		}
		if got := string(s.Data[authv1alpha1.SecretTokenKey]); got != token {
			w.t.Errorf("namespace %s: token %q, want %q", ns, got, token)
		}
		ref := metav1.GetControllerOf(s)
		if ref == nil || ref.Kind != "ClusterOpsnowToken" || ref.Name != name {
			w.t.Errorf("namespace %s: controller %+v, want ClusterOpsnowToken %s", ns, ref, name)
		}
		if s.Labels[authv1alpha1.ManagedByLabel] != authv1alpha1.ManagedByValue || s.Labels[authv1alpha1.ClusterTokenLabel] != name {
			w.t.Errorf("namespace %s: labels %v lack the operator's", ns, s.Labels)
		}
	}
}

func (w *clusterWorld) expectClusterReady(name string, status metav1.ConditionStatus, reason string) *authv1alpha1.ClusterOpsnowToken {
	w.t.Helper()
	ct := w.clusterToken(name)
	c := apimeta.FindStatusCondition(ct.Status.Conditions, authv1alpha1.ConditionReady)
	if c == nil || c.Status != status || c.Reason != reason {
		w.t.Fatalf("%s Ready: got %+v, want %s/%s (status %+v)", name, c, status, reason, ct.Status)
	}
	return ct
}

func expectCounts(t *testing.T, ct *authv1alpha1.ClusterOpsnowToken, selected, synced, failed int32) {
	t.Helper()
	want := authv1alpha1.NamespaceCounts{Selected: selected, Synced: synced, Failed: failed}
	if ct.Status.Namespaces != want {
		t.Errorf("namespace counts: got %+v, want %+v", ct.Status.Namespaces, want)
	}
}

// One request, one token, every selected namespace (by label and by name);
// unselected and being-deleted namespaces get nothing. A namespace that
// joins gets the same token with no request; one that leaves loses it.
func TestClusterTokenFanOutJoinAndLeave(t *testing.T) {
	w := newClusterWorld(t)
	w.createNamespace("team-a", map[string]string{"team": "a"})
	w.createNamespace("team-b", map[string]string{"team": "b"})
	w.createNamespace("listed", nil)
	w.createNamespace("other", nil)
	w.createClusterToken("shared", func(ct *authv1alpha1.ClusterOpsnowToken) { ct.Spec.Namespaces = []string{"listed"} })

	w.reconcileCluster("shared")
	w.expectRequests(1)
	if got := w.ex.keys; len(got) != 1 || got[0] != "cluster-key-1" {
		t.Errorf("API keys sent: got %d, want the cluster resource namespace's key once", len(got))
	}
	w.expectCopies("shared", "token-1", "team-a", "team-b", "listed")
	if w.copyIn("other") != nil || w.copyIn(clusterNamespace) != nil {
		t.Errorf("an unselected namespace got a Secret")
	}
	ct := w.expectClusterReady("shared", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	expectCounts(t, ct, 3, 3, 0)
	if ct.Status.ExpiresAt == nil || ct.Status.NextRefreshTime == nil || ct.Status.ObservedGeneration != 1 {
		t.Errorf("status: %+v, want expiresAt, nextRefreshTime and observedGeneration 1", ct.Status)
	}

	// Nothing changed: no write at all, and no Secret read.
	reads, before := w.counters()
	w.reconcileCluster("shared")
	if r, after := w.counters(); after != before || r != reads {
		t.Errorf("a reconcile with nothing changed wrote %d times and read %d Secrets", after-before, r-reads)
	}

	// A namespace joins, one leaves: the token is remembered, no copy is read.
	w.labelNamespace("other", map[string]string{"team": "c"})
	w.labelNamespace("team-b", nil)
	w.reconcileCluster("shared")
	w.expectRequests(1)
	if r, _ := w.counters(); r != reads {
		t.Errorf("a namespace joining read %d Secrets, want none", r-reads)
	}
	w.expectCopies("shared", "token-1", "team-a", "other", "listed")
	if w.copyIn("team-b") != nil {
		t.Errorf("namespace team-b stopped matching and still holds the Secret")
	}
	expectCounts(t, w.clusterToken("shared"), 3, 3, 0)
	if e := eventsOf(w.events(), corev1.EventTypeNormal, eventOldSecretDeleted); len(e) != 1 || !strings.Contains(e[0], "team-b") {
		t.Errorf("events of the deletion: got %q, want one naming team-b", e)
	}
}

// A namespace being deleted is skipped: nothing is written there.
func TestClusterTokenSkipsTerminatingNamespace(t *testing.T) {
	w := newClusterWorld(t)
	w.createNamespace("team-a", map[string]string{"team": "a"})
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-gone", Labels: map[string]string{"team": "x"},
		Finalizers: []string{"example.com/hold"}}}
	if err := w.store.Create(w.ctx, ns); err != nil {
		t.Fatal(err)
	}
	if err := w.store.Delete(w.ctx, ns); err != nil {
		t.Fatal(err)
	}
	w.createClusterToken("shared")
	w.reconcileCluster("shared")
	if w.copyIn("team-gone") != nil {
		t.Errorf("a namespace being deleted got a Secret")
	}
	expectCounts(t, w.expectClusterReady("shared", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid), 1, 1, 0)
}

// A foreign Secret in one namespace is a per-namespace conflict: left
// untouched, listed in status, Stalled; the others hold the token.
func TestClusterTokenConflictInOneNamespace(t *testing.T) {
	w := newClusterWorld(t)
	for _, ns := range []string{"team-a", "team-b", "team-c"} {
		w.createNamespace(ns, map[string]string{"team": ns})
	}
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: "opsnow-token"},
		Data: map[string][]byte{"token": []byte("theirs")}}
	if err := w.store.Create(w.ctx, foreign); err != nil {
		t.Fatal(err)
	}
	w.createClusterToken("shared")
	w.reconcileCluster("shared")
	w.expectRequests(1)
	w.expectCopies("shared", "token-1", "team-a", "team-c")
	if s := w.copyIn("team-b"); string(s.Data["token"]) != "theirs" || metav1.GetControllerOf(s) != nil {
		t.Errorf("the foreign Secret was modified: %+v", s)
	}
	ct := w.expectClusterReady("shared", metav1.ConditionFalse, authv1alpha1.ReasonSecretConflict)
	expectCounts(t, ct, 3, 2, 1)
	if len(ct.Status.Failures) != 1 || ct.Status.Failures[0].Namespace != "team-b" || ct.Status.Failures[0].Reason != authv1alpha1.ReasonSecretConflict {
		t.Errorf("failures: got %+v, want team-b SecretConflict", ct.Status.Failures)
	}
	if c := apimeta.FindStatusCondition(ct.Status.Conditions, authv1alpha1.ConditionStalled); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Stalled: got %+v, want True", c)
	}
	if ct.Status.FailedAttempts != 0 {
		t.Errorf("failedAttempts %d: a conflict is not a failed attempt", ct.Status.FailedAttempts)
	}
	if e := eventsOf(w.events(), corev1.EventTypeWarning, authv1alpha1.ReasonSecretConflict); len(e) != 1 {
		t.Errorf("conflict events: got %q, want one", e)
	}
	// Again: no new event, no request, and nothing read from the API
	// server: the conflict is decided on the cached metadata.
	reads, _ := w.counters()
	w.reconcileCluster("shared")
	w.expectRequests(1)
	if r, _ := w.counters(); r != reads {
		t.Errorf("a second look at the conflict: %d live reads, want 0", r-reads)
	}
	if e := eventsOf(w.events(), corev1.EventTypeWarning, authv1alpha1.ReasonSecretConflict); len(e) != 0 {
		t.Errorf("conflict events on a second look: %q", e)
	}

	// The foreign Secret goes: the namespace gets the held token.
	if err := w.store.Delete(w.ctx, foreign); err != nil {
		t.Fatal(err)
	}
	w.reconcileCluster("shared")
	w.expectRequests(1)
	w.expectCopies("shared", "token-1", "team-a", "team-b", "team-c")
	expectCounts(t, w.expectClusterReady("shared", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid), 3, 3, 0)
}

// A restart finds the token in the copies: zero requests; a copy deleted
// meanwhile is restored from the others, also with no request.
func TestClusterTokenRestartWithZeroRequests(t *testing.T) {
	w := newClusterWorld(t)
	w.createNamespace("team-a", map[string]string{"team": "a"})
	w.createNamespace("team-b", map[string]string{"team": "b"})
	w.createClusterToken("shared")
	w.reconcileCluster("shared")
	if err := w.store.Delete(w.ctx, w.copyIn("team-b")); err != nil {
		t.Fatal(err)
	}
	w.restart()
	reads, _ := w.counters()
	w.reconcileCluster("shared")
	w.expectRequests(0)
	w.expectCopies("shared", "token-1", "team-a", "team-b")
	w.expectClusterReady("shared", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	if r, _ := w.counters(); r-reads != 1 {
		t.Errorf("the restart read %d Secrets, want the one copy left", r-reads)
	}

	// The planned refresh: one request for all; of Secrets only the API
	// key is read, the copies' versions being the ones written.
	ct := w.clusterToken("shared")
	w.stepTo(ct.Status.NextRefreshTime.Time)
	reads, _ = w.counters()
	w.reconcileCluster("shared")
	w.expectRequests(1)
	if r, _ := w.counters(); r-reads != 1 {
		t.Errorf("a routine refresh read %d Secrets, want the API key alone", r-reads)
	}
	// A wake-up with nothing due reads nothing.
	reads, _ = w.counters()
	w.reconcileCluster("shared")
	if r, _ := w.counters(); r != reads {
		t.Errorf("a wake-up with nothing due read %d Secrets", r-reads)
	}
	w.expectCopies("shared", "token-1", "team-a", "team-b") // the restarted upstream numbers from 1 again
	if got := w.clusterToken("shared").Status.ExpiresAt; !got.After(ct.Status.ExpiresAt.Time) {
		t.Errorf("expiresAt after the refresh: %v, want later than %v", got, ct.Status.ExpiresAt)
	}
}

// Key rotation: one request; a manual refresh: one request per value,
// confirmed in status.
func TestClusterTokenKeyRotationAndManualRefresh(t *testing.T) {
	w := newClusterWorld(t)
	w.createNamespace("team-a", map[string]string{"team": "a"})
	w.createNamespace("team-b", map[string]string{"team": "b"})
	w.createClusterToken("shared")
	w.reconcileCluster("shared")

	w.setClusterAPIKey("cluster-key-2")
	w.reconcileCluster("shared")
	w.reconcileCluster("shared")
	w.expectRequests(2)
	if got := w.ex.keys[1]; got != "cluster-key-2" {
		t.Errorf("key sent after rotation: got %q", got)
	}
	w.expectCopies("shared", "token-2", "team-a", "team-b")

	w.editClusterToken("shared", func(ct *authv1alpha1.ClusterOpsnowToken) {
		ct.Annotations = map[string]string{authv1alpha1.RefreshRequestedAtAnnotation: "r1"}
	})
	w.reconcileCluster("shared")
	w.reconcileCluster("shared")
	w.expectRequests(3)
	w.expectCopies("shared", "token-3", "team-a", "team-b")
	if got := w.clusterToken("shared").Status.LastHandledRefreshRequest; got != "r1" {
		t.Errorf("lastHandledRefreshRequest: got %q, want r1", got)
	}
}

// A write denied in one namespace goes through the failure door
// (SecretWriteFailed, failedAttempts, a Warning event, the backoff) and is
// retried from the copies already written: never a second token request.
// When every write is denied, the minted token is kept in memory.
func TestClusterTokenDeniedWriteNeverMintsAgain(t *testing.T) {
	w := newClusterWorld(t)
	w.createNamespace("team-a", map[string]string{"team": "a"})
	w.createNamespace("team-b", map[string]string{"team": "b"})
	w.set(func() { w.denySecretWrites, w.denyNamespace = admissionDenied(), "team-b" })
	w.createClusterToken("shared")
	w.reconcileCluster("shared")
	w.expectRequests(1)
	w.expectCopies("shared", "token-1", "team-a")
	ct := w.expectClusterReady("shared", metav1.ConditionFalse, authv1alpha1.ReasonSecretWriteFailed)
	expectCounts(t, ct, 2, 1, 1)
	if ct.Status.FailedAttempts != 1 || !strings.Contains(ct.Status.LastFailureMessage, "platform team") ||
		!strings.Contains(ct.Status.LastFailureMessage, "team-b") {
		t.Errorf("status: failedAttempts %d, lastFailureMessage %q; want 1 and the policy's message naming team-b",
			ct.Status.FailedAttempts, ct.Status.LastFailureMessage)
	}
	if c := apimeta.FindStatusCondition(ct.Status.Conditions, authv1alpha1.ConditionReconciling); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Reconciling: got %+v, want True while the write is retried", c)
	}
	if e := eventsOf(w.events(), corev1.EventTypeWarning, authv1alpha1.ReasonSecretWriteFailed); len(e) != 1 {
		t.Errorf("Warning events: got %q, want one SecretWriteFailed", e)
	}
	for attempt := int32(2); attempt <= 3; attempt++ {
		w.stepTo(w.clusterToken("shared").Status.NextRefreshTime.Time)
		w.reconcileCluster("shared")
		if got := w.clusterToken("shared").Status.FailedAttempts; got != attempt {
			t.Fatalf("failedAttempts: got %d, want %d", got, attempt)
		}
	}
	w.expectRequests(1)

	w.set(func() { w.denySecretWrites = nil })
	w.reconcileCluster("shared")
	w.expectRequests(1)
	w.expectCopies("shared", "token-1", "team-a", "team-b")
	ct = w.expectClusterReady("shared", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	if ct.Status.FailedAttempts != 0 || len(ct.Status.Failures) != 0 {
		t.Errorf("after the write: failedAttempts %d, failures %+v; want none", ct.Status.FailedAttempts, ct.Status.Failures)
	}
}

func TestClusterTokenAllWritesDeniedKeepsMintedToken(t *testing.T) {
	w := newClusterWorld(t)
	w.createNamespace("team-a", map[string]string{"team": "a"})
	w.set(func() { w.denySecretWrites = admissionDenied() })
	w.createClusterToken("shared")
	w.reconcileCluster("shared")
	w.expectClusterReady("shared", metav1.ConditionFalse, authv1alpha1.ReasonSecretWriteFailed)
	w.stepTo(w.clusterToken("shared").Status.NextRefreshTime.Time)
	w.reconcileCluster("shared")
	w.expectRequests(1)
	w.set(func() { w.denySecretWrites = nil })
	w.stepTo(w.clusterToken("shared").Status.NextRefreshTime.Time)
	w.reconcileCluster("shared")
	w.expectRequests(1)
	w.expectCopies("shared", "token-1", "team-a")
	w.expectClusterReady("shared", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
}

// The rules of an OpsnowToken hold: an endpoint off the allowlist stalls
// with no request; no namespace selected requests nothing; suspend writes
// nothing; upstream failures back off, and the token is redacted.
func TestClusterTokenRefusalsSendNothing(t *testing.T) {
	w := newClusterWorld(t)
	w.createNamespace("team-a", map[string]string{"team": "a"})
	w.createClusterToken("evil", func(ct *authv1alpha1.ClusterOpsnowToken) { ct.Spec.Endpoint = "https://attacker.example" })
	w.createClusterToken("nobody", func(ct *authv1alpha1.ClusterOpsnowToken) { ct.Spec.NamespaceSelector = nil })
	w.createClusterToken("empty", func(ct *authv1alpha1.ClusterOpsnowToken) { ct.Spec.NamespaceSelector = &metav1.LabelSelector{} })
	w.createClusterToken("paused", func(ct *authv1alpha1.ClusterOpsnowToken) { ct.Spec.Suspend = true })
	for _, name := range []string{"evil", "nobody", "empty", "paused"} {
		w.reconcileCluster(name)
	}
	w.expectRequests(0)
	if w.copyIn("team-a") != nil {
		t.Errorf("a Secret was written")
	}
	ct := w.expectClusterReady("evil", metav1.ConditionFalse, authv1alpha1.ReasonEndpointNotAllowed)
	if c := apimeta.FindStatusCondition(ct.Status.Conditions, authv1alpha1.ConditionStalled); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Stalled: got %+v, want True", c)
	}
	w.expectClusterReady("nobody", metav1.ConditionFalse, authv1alpha1.ReasonNoNamespacesSelected)
	w.expectClusterReady("empty", metav1.ConditionFalse, authv1alpha1.ReasonNoNamespacesSelected)
	w.expectClusterReady("paused", metav1.ConditionFalse, authv1alpha1.ReasonSuspended)
}

func TestClusterTokenUpstreamFailureBacksOff(t *testing.T) {
	w := newClusterWorld(t)
	w.createNamespace("team-a", map[string]string{"team": "a"})
	w.ex.fail(&opsnow.Error{Kind: opsnow.ErrUnavailable, StatusCode: 503, RetryAfter: 90 * time.Second,
		Detail: "overloaded"})
	w.createClusterToken("shared")
	start := w.clock.Now()
	w.reconcileCluster("shared")
	ct := w.expectClusterReady("shared", metav1.ConditionFalse, authv1alpha1.ReasonUpstreamUnavailable)
	if got := ct.Status.NextRefreshTime.Sub(start); got < 90*time.Second {
		t.Errorf("retry after %s, want at least Retry-After 90s", got)
	}
	// Reconciles before the retry time send nothing.
	w.reconcileCluster("shared")
	w.expectRequests(1)
	w.ex.fail(nil)
	w.stepTo(ct.Status.NextRefreshTime.Time)
	w.reconcileCluster("shared")
	w.expectRequests(2)
	w.expectClusterReady("shared", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
}

// A failure message never carries the token: one echoed by the API server
// in a refused write is redacted.
func TestClusterTokenFailuresRedactTheToken(t *testing.T) {
	w := newClusterWorld(t)
	w.createNamespace("team-a", map[string]string{"team": "a"})
	w.set(func() {
		w.denySecretWrites = apierrors.NewForbidden(corev1.Resource("secrets"), "opsnow-token",
			errors.New("denied: data.token is token-1"))
	})
	w.createClusterToken("shared")
	w.reconcileCluster("shared")
	ct := w.clusterToken("shared")
	text := fmt.Sprintf("%+v", ct.Status) + strings.Join(w.events(), "\n")
	if strings.Contains(text, "token-1") {
		t.Errorf("the token leaked into status or events: %s", text)
	}
}

// A template change rewrites every copy's metadata with no request.
func TestClusterTokenTemplateChangeWithoutRequest(t *testing.T) {
	w := newClusterWorld(t)
	w.createNamespace("team-a", map[string]string{"team": "a"})
	w.createNamespace("team-b", map[string]string{"team": "b"})
	w.createClusterToken("shared")
	w.reconcileCluster("shared")
	reads, _ := w.counters()
	w.editClusterToken("shared", func(ct *authv1alpha1.ClusterOpsnowToken) {
		ct.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{Labels: map[string]string{"app": "billing", "tier": "gold"}}
	})
	w.reconcileCluster("shared")
	w.expectRequests(1)
	for _, ns := range []string{"team-a", "team-b"} {
		if got := w.copyIn(ns).Labels["app"]; got != "billing" {
			t.Errorf("namespace %s: label app %q, want billing", ns, got)
		}
	}
	ct := w.expectClusterReady("shared", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	if ct.Status.ObservedGeneration != 2 {
		t.Errorf("observedGeneration %d, want 2", ct.Status.ObservedGeneration)
	}
	// A value changed and a key dropped: seen from the cached record of
	// the template applied, with no copy read.
	w.editClusterToken("shared", func(ct *authv1alpha1.ClusterOpsnowToken) {
		ct.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{Labels: map[string]string{"app": "payments"}}
	})
	w.reconcileCluster("shared")
	w.expectRequests(1)
	for _, ns := range []string{"team-a", "team-b"} {
		l := w.copyIn(ns).Labels
		if _, tier := l["tier"]; l["app"] != "payments" || tier {
			t.Errorf("namespace %s: labels %v, want app=payments and no tier", ns, l)
		}
	}
	if r, _ := w.counters(); r != reads {
		t.Errorf("template changes read %d Secrets, want none", r-reads)
	}
	w.expectCopies("shared", "token-1", "team-a", "team-b")
}

// More failures than status lists are counted, and the list is bounded.
func TestClusterTokenFailureListIsBounded(t *testing.T) {
	w := newClusterWorld(t)
	for i := range 25 {
		ns := fmt.Sprintf("team-%02d", i)
		w.createNamespace(ns, map[string]string{"team": ns})
		if err := w.store.Create(w.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "opsnow-token"}}); err != nil {
			t.Fatal(err)
		}
	}
	w.createNamespace("team-ok", map[string]string{"team": "ok"})
	w.createClusterToken("shared")
	w.reconcileCluster("shared")
	ct := w.clusterToken("shared")
	expectCounts(t, ct, 26, 1, 25)
	if len(ct.Status.Failures) != authv1alpha1.MaxNamespaceFailures || ct.Status.Failures[0].Namespace != "team-00" {
		t.Errorf("failures: %d listed starting %+v, want %d in namespace order", len(ct.Status.Failures),
			ct.Status.Failures[0], authv1alpha1.MaxNamespaceFailures)
	}
}

// A copy's metadata event wakes the ClusterOpsnowToken that controls it,
// and never an OpsnowToken of the same name in that namespace.
func TestSecretEventsMapToTheirKind(t *testing.T) {
	w := newClusterWorld(t)
	w.createNamespace("team-a", map[string]string{"team": "a"})
	w.createToken("shared")
	w.createClusterToken("shared")
	ct := w.clusterToken("shared")
	m := secretMetadataObject()
	m.Namespace, m.Name = testNamespace, "shared-copy"
	m.OwnerReferences = []metav1.OwnerReference{{APIVersion: authv1alpha1.GroupVersion.String(),
		Kind: "ClusterOpsnowToken", Name: ct.Name, UID: ct.UID, Controller: ptr.To(true)}}
	if got := w.r.tokensForSecret(w.ctx, m); len(got) != 0 {
		t.Errorf("OpsnowToken requests for a ClusterOpsnowToken's copy: %v, want none", got)
	}
	got := w.cr.clusterTokensForSecret(w.ctx, m)
	if len(got) != 1 || got[0].NamespacedName != clusterKey("shared") {
		t.Errorf("ClusterOpsnowToken requests: %v, want shared", got)
	}
	m.OwnerReferences[0].Kind = "OpsnowToken"
	if got := w.r.tokensForSecret(w.ctx, m); len(got) != 1 || got[0].Name != "shared" || got[0].Namespace != testNamespace {
		t.Errorf("OpsnowToken requests for its Secret: %v, want %s/shared", got, testNamespace)
	}
	if got := w.cr.clusterTokensForSecret(w.ctx, m); len(got) != 0 {
		t.Errorf("ClusterOpsnowToken requests for an OpsnowToken's Secret: %v, want none", got)
	}
}

// When every selected namespace holds a foreign Secret of the name, no copy
// can be written: the ClusterOpsnowToken stalls on the conflict and asks
// OpsNow for nothing, however often it is reconciled.
func TestClusterTokenAllConflictsRequestNothing(t *testing.T) {
	w := newClusterWorld(t)
	w.createNamespace("team-a", map[string]string{"team": "a"})
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "opsnow-token"},
		Data: map[string][]byte{"token": []byte("theirs")}}
	if err := w.store.Create(w.ctx, foreign); err != nil {
		t.Fatal(err)
	}
	w.createClusterToken("shared")
	for range 3 {
		w.reconcileCluster("shared")
	}
	w.expectRequests(0)
	ct := w.expectClusterReady("shared", metav1.ConditionFalse, authv1alpha1.ReasonSecretConflict)
	if ct.Status.ExpiresAt != nil {
		t.Errorf("expiresAt %s for a token no Secret holds", ct.Status.ExpiresAt)
	}
	if s := w.copyIn("team-a"); string(s.Data["token"]) != "theirs" {
		t.Errorf("the foreign Secret was modified: %+v", s)
	}

	// The foreign Secret goes: now one token is requested and written.
	if err := w.store.Delete(w.ctx, foreign); err != nil {
		t.Fatal(err)
	}
	w.reconcileCluster("shared")
	w.expectRequests(1)
	w.expectCopies("shared", "token-1", "team-a")
}

// A change of secretName while OpsNow fails keeps the old copies: they are
// deleted only once the new ones hold a token.
func TestClusterTokenRenameDuringOutageKeepsOldCopies(t *testing.T) {
	w := newClusterWorld(t)
	w.createNamespace("team-a", map[string]string{"team": "a"})
	w.createClusterToken("shared")
	w.reconcileCluster("shared")
	w.expectCopies("shared", "token-1", "team-a")

	w.ex.fail(&opsnow.Error{Kind: opsnow.ErrUnavailable, StatusCode: 503, Detail: "down"})
	w.editClusterToken("shared", func(ct *authv1alpha1.ClusterOpsnowToken) { ct.Spec.SecretName = "renamed" })
	w.reconcileCluster("shared") // the failed request
	w.reconcileCluster("shared") // within the backoff
	if s := w.copyIn("team-a"); s == nil || string(s.Data["token"]) != "token-1" {
		t.Fatalf("old copy during the outage: got %+v, want it kept with token-1", s)
	}

	w.ex.fail(nil)
	w.stepTo(w.clusterToken("shared").Status.NextRefreshTime.Time)
	w.reconcileCluster("shared")
	if s := w.copyIn("team-a"); s != nil {
		t.Errorf("old copy after the new one was written: got %s, want it deleted", s.Name)
	}
	if err := w.store.Get(w.ctx, client.ObjectKey{Namespace: "team-a", Name: "renamed"}, &corev1.Secret{}); err != nil {
		t.Errorf("new copy: %v", err)
	}
	w.expectClusterReady("shared", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
}
