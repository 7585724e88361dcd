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

package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

// The ClusterOpsnowToken stories, against a control plane, as the manager's
// ServiceAccount under the generated RBAC and the admission guard.

// clusterFixture is a harness running the ClusterOpsnowToken controller,
// with a label that selects this test's namespaces only.
type clusterFixture struct {
	*harness
	key   string
	label string // the value of the "opsnow-test" label of this test's namespaces
}

func newClusterFixture(t *testing.T) *clusterFixture {
	t.Helper()
	h := newHarness(t, withClusterTokens())
	f := &clusterFixture{harness: h, key: "cluster-key-" + randomHex(t, 8), label: h.ns}
	h.createAPIKeySecret("opsnow-api-key", f.key)
	return f
}

// namespace creates a namespace; selected ones carry the team label and
// this test's label.
func (f *clusterFixture) namespace(selected bool) string {
	f.t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "member-"}}
	if selected {
		ns.Labels = map[string]string{"team": "payments", "opsnow-test": f.label}
	}
	if err := k8s.Create(context.Background(), ns); err != nil {
		f.t.Fatalf("create namespace: %v", err)
	}
	f.t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
	return ns.Name
}

func (f *clusterFixture) setLabels(ns string, labels map[string]string) {
	f.t.Helper()
	update(f.t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, func(n *corev1.Namespace) { n.Labels = labels })
}

// createClusterToken creates a ClusterOpsnowToken selecting the namespaces
// with a team label (whatever its value) among this test's.
func (f *clusterFixture) createClusterToken(mutate ...func(*authv1alpha1.ClusterOpsnowToken)) string {
	f.t.Helper()
	ct := &authv1alpha1.ClusterOpsnowToken{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "shared-"},
		Spec: authv1alpha1.ClusterOpsnowTokenSpec{
			APIKeySecretRef: authv1alpha1.ClusterSecretKeySelector{Name: "opsnow-api-key"},
			SecretName:      "opsnow-token",
			NamespaceSelector: &metav1.LabelSelector{
				MatchLabels:      map[string]string{"opsnow-test": f.label},
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpExists}},
			},
		},
	}
	for _, m := range mutate {
		m(ct)
	}
	if err := k8s.Create(context.Background(), ct); err != nil {
		f.t.Fatalf("create ClusterOpsnowToken: %v", err)
	}
	f.t.Cleanup(func() { _ = k8s.Delete(context.Background(), ct) })
	return ct.Name
}

func (f *clusterFixture) getClusterToken(name string) *authv1alpha1.ClusterOpsnowToken {
	f.t.Helper()
	ct := &authv1alpha1.ClusterOpsnowToken{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, ct); err != nil {
		f.t.Fatalf("get ClusterOpsnowToken %s: %v", name, err)
	}
	return ct
}

// waitClusterReady waits for Ready with status and reason, the current
// generation observed, and the namespace counts given.
func (f *clusterFixture) waitClusterReady(name string, status metav1.ConditionStatus, reason string, counts authv1alpha1.NamespaceCounts) *authv1alpha1.ClusterOpsnowToken {
	f.t.Helper()
	var ct *authv1alpha1.ClusterOpsnowToken
	f.eventually(fmt.Sprintf("%s Ready=%s/%s with %+v", name, status, reason, counts), func() (bool, string) {
		ct = f.getClusterToken(name)
		c := apimeta.FindStatusCondition(ct.Status.Conditions, authv1alpha1.ConditionReady)
		if c == nil {
			return false, "no Ready condition"
		}
		return c.Status == status && c.Reason == reason && ct.Status.ObservedGeneration == ct.Generation &&
				ct.Status.Namespaces == counts,
			fmt.Sprintf("Ready=%s/%s %q, observedGeneration %d of %d, namespaces %+v", c.Status, c.Reason, c.Message,
				ct.Status.ObservedGeneration, ct.Generation, ct.Status.Namespaces)
	})
	return ct
}

// tokenIn returns the token in ns's Secret "opsnow-token", "" when absent.
func (f *clusterFixture) tokenIn(ns string) string {
	f.t.Helper()
	s := &corev1.Secret{}
	err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "opsnow-token"}, s)
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		f.t.Fatalf("get Secret in %s: %v", ns, err)
	}
	return string(s.Data[authv1alpha1.SecretTokenKey])
}

// waitTokenIn waits until ns's Secret holds token ("" waits for it to go).
func (f *clusterFixture) waitTokenIn(ns, token string) {
	f.t.Helper()
	f.eventually(fmt.Sprintf("Secret in %s holding the token %q", ns, token), func() (bool, string) {
		got := f.tokenIn(ns)
		return got == token, fmt.Sprintf("holds %q", got)
	})
}

func (f *clusterFixture) waitKeyRequests(n int64) {
	f.t.Helper()
	f.eventually(fmt.Sprintf("%d token requests with the cluster key", n), func() (bool, string) {
		got := f.server.RequestsFor(f.key)
		return got == n, fmt.Sprintf("%d requests", got)
	})
}

// lastTokenForKey returns the newest token issued for the cluster key: the
// token server is shared, and other keys' tokens may come after it.
func (f *clusterFixture) lastTokenForKey() string {
	f.t.Helper()
	issued := f.server.Issued()
	for i := len(issued) - 1; i >= 0; i-- {
		if g, ok := f.server.Lookup(issued[i]); ok && g.KeyDigest == tokenserver.KeyDigest(f.key) {
			return issued[i]
		}
	}
	f.t.Fatal("no token issued for the cluster key")
	return ""
}

func (f *clusterFixture) assertKeyRequestsStay(n int64, d time.Duration) {
	f.t.Helper()
	f.consistently(fmt.Sprintf("token requests with the cluster key at %d", n), d, func() (bool, string) {
		got := f.server.RequestsFor(f.key)
		return got == n, fmt.Sprintf("%d requests", got)
	})
}

// Fan-out with one request; a conflict in one namespace leaves the others
// holding the token; a namespace joining gets the token within seconds and
// with no request; one leaving loses its Secret; the conflict resolved,
// every namespace holds the one token.
func TestClusterTokenFanOutStory(t *testing.T) {
	requireControlPlane(t)
	f := newClusterFixture(t)
	ctx := context.Background()
	a, b, taken := f.namespace(true), f.namespace(true), f.namespace(true)
	unselected := f.namespace(false)
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: taken, Name: "opsnow-token"},
		Data: map[string][]byte{"password": []byte("do-not-touch")}}
	if err := k8s.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}

	name := f.createClusterToken()
	ct := f.waitClusterReady(name, metav1.ConditionFalse, authv1alpha1.ReasonSecretConflict,
		authv1alpha1.NamespaceCounts{Selected: 3, Synced: 2, Failed: 1})
	f.waitKeyRequests(1)
	token := f.lastTokenForKey()
	for _, ns := range []string{a, b} {
		if got := f.tokenIn(ns); got != token {
			t.Errorf("namespace %s: token %q, want the one issued", ns, got)
		}
	}
	if f.tokenIn(unselected) != "" {
		t.Errorf("an unselected namespace got the Secret")
	}
	if len(ct.Status.Failures) != 1 || ct.Status.Failures[0].Namespace != taken {
		t.Errorf("failures: got %+v, want the conflict in %s", ct.Status.Failures, taken)
	}
	if c := apimeta.FindStatusCondition(ct.Status.Conditions, authv1alpha1.ConditionStalled); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Stalled: got %+v, want True", c)
	}
	s := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(foreign), s); err != nil || s.ResourceVersion != foreign.ResourceVersion {
		t.Errorf("the foreign Secret was modified or removed: %v", err)
	}
	ref := f.copyRef(a)
	if ref == nil || ref.Kind != "ClusterOpsnowToken" || ref.Name != name || ptr.Deref(ref.BlockOwnerDeletion, true) {
		t.Errorf("owner of the copy: got %+v, want a controller reference to %s not blocking its deletion", ref, name)
	}

	// A copy deleted is written back from the others, with no request.
	if err := k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: a, Name: "opsnow-token"}}); err != nil {
		t.Fatal(err)
	}
	f.waitTokenIn(a, token)

	// A namespace joins: its Secret within 2 s, with no request.
	joined := f.namespace(false)
	start := time.Now()
	f.setLabels(joined, map[string]string{"team": "risk", "opsnow-test": f.label})
	f.waitTokenIn(joined, token)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the joining namespace got its Secret after %s, want within 2s", took)
	}
	// One leaves: its Secret goes.
	f.setLabels(b, map[string]string{"opsnow-test": f.label})
	f.waitTokenIn(b, "")
	// The conflict resolved: the namespace gets the held token.
	if err := k8s.Delete(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	f.waitTokenIn(taken, token)
	f.waitClusterReady(name, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid,
		authv1alpha1.NamespaceCounts{Selected: 3, Synced: 3, Failed: 0})
	f.assertKeyRequestsStay(1, time.Second)
}

func (f *clusterFixture) copyRef(ns string) *metav1.OwnerReference {
	f.t.Helper()
	s := &corev1.Secret{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "opsnow-token"}, s); err != nil {
		f.t.Fatalf("get Secret in %s: %v", ns, err)
	}
	return metav1.GetControllerOf(s)
}

// A restart finds the token in the copies and asks for none; a rotated key
// costs one request, and so does a manual refresh, confirmed in status.
func TestClusterTokenRestartRotationAndRefreshStory(t *testing.T) {
	requireControlPlane(t)
	f := newClusterFixture(t)
	a, b := f.namespace(true), f.namespace(true)
	name := f.createClusterToken()
	f.waitClusterReady(name, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid,
		authv1alpha1.NamespaceCounts{Selected: 2, Synced: 2})
	f.waitKeyRequests(1)
	token := f.tokenIn(a)

	f.stopManager()
	f.startManager()
	f.assertKeyRequestsStay(1, 2*time.Second)
	f.waitClusterReady(name, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid,
		authv1alpha1.NamespaceCounts{Selected: 2, Synced: 2})
	if got := f.tokenIn(b); got != token {
		t.Errorf("after the restart namespace %s holds %q, want the token from before", b, got)
	}

	// Key rotation: one request, the new token everywhere.
	rotated := "cluster-key-" + randomHex(t, 8)
	update(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "opsnow-api-key"}},
		func(s *corev1.Secret) { s.Data[authv1alpha1.DefaultAPIKeyKey] = []byte(rotated) })
	f.eventually("one request with the rotated key", func() (bool, string) {
		n := f.server.RequestsFor(rotated)
		return n == 1, fmt.Sprintf("%d requests", n)
	})
	f.eventually("the new token in both namespaces", func() (bool, string) {
		ta, tb := f.tokenIn(a), f.tokenIn(b)
		return ta != token && ta == tb, fmt.Sprintf("%q and %q", ta, tb)
	})

	// Manual refresh: one request, confirmed.
	update(t, &authv1alpha1.ClusterOpsnowToken{ObjectMeta: metav1.ObjectMeta{Name: name}}, func(ct *authv1alpha1.ClusterOpsnowToken) {
		ct.Annotations = map[string]string{authv1alpha1.RefreshRequestedAtAnnotation: "r1"}
	})
	f.eventually("the refresh request handled", func() (bool, string) {
		ct := f.getClusterToken(name)
		return ct.Status.LastHandledRefreshRequest == "r1", fmt.Sprintf("lastHandledRefreshRequest %q", ct.Status.LastHandledRefreshRequest)
	})
	f.consistently("two requests with the rotated key", time.Second, func() (bool, string) {
		n := f.server.RequestsFor(rotated)
		return n == 2, fmt.Sprintf("%d requests", n)
	})
	if f.tokenIn(a) != f.tokenIn(b) {
		t.Errorf("the namespaces hold different tokens")
	}
}

// A write refused in one namespace is SecretWriteFailed through the one
// failure door, retried on the backoff without minting again; the other
// namespace holds the token meanwhile; lifting the policy completes it.
func TestClusterTokenDeniedWriteStory(t *testing.T) {
	requireControlPlane(t)
	f := newClusterFixture(t)
	ctx := context.Background()
	open, denied := f.namespace(true), f.namespace(true)
	policy := f.denyCopiesIn(denied, "Secrets in this namespace come from the platform team")

	name := f.createClusterToken()
	ct := f.waitClusterReady(name, metav1.ConditionFalse, authv1alpha1.ReasonSecretWriteFailed,
		authv1alpha1.NamespaceCounts{Selected: 2, Synced: 1, Failed: 1})
	f.waitKeyRequests(1)
	token := f.tokenIn(open)
	if token == "" {
		t.Fatalf("namespace %s holds no token while another's write is refused", open)
	}
	if !strings.Contains(ct.Status.LastFailureMessage, "platform team") || ct.Status.FailedAttempts < 1 {
		t.Errorf("status: failedAttempts %d, lastFailureMessage %q; want the policy's message", ct.Status.FailedAttempts, ct.Status.LastFailureMessage)
	}
	for attempt := ct.Status.FailedAttempts + 1; attempt <= ct.Status.FailedAttempts+2; attempt++ {
		f.stepTo(f.getClusterToken(name).Status.NextRefreshTime.Time)
		f.eventually(fmt.Sprintf("failed attempt %d", attempt), func() (bool, string) {
			got := f.getClusterToken(name).Status.FailedAttempts
			return got >= attempt, fmt.Sprintf("failedAttempts %d", got)
		})
	}
	f.assertKeyRequestsStay(1, time.Second)

	for _, obj := range policy {
		if err := k8s.Delete(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	f.eventually("the policy lifted", func() (bool, string) {
		err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: denied, Name: "opsnow-token"}}, client.DryRunAll)
		return err == nil, fmt.Sprintf("probe: %v", err)
	})
	f.stepTo(f.getClusterToken(name).Status.NextRefreshTime.Time)
	f.waitTokenIn(denied, token)
	f.waitClusterReady(name, metav1.ConditionTrue, authv1alpha1.ReasonTokenValid,
		authv1alpha1.NamespaceCounts{Selected: 2, Synced: 2})
	f.assertKeyRequestsStay(1, time.Second)
}

// denyCopiesIn installs a policy refusing Secret creation in ns and waits
// until the API server enforces it.
func (f *clusterFixture) denyCopiesIn(ns, message string) []client.Object {
	f.t.Helper()
	ctx := context.Background()
	name := "deny-copies-" + ns
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
						Rule: admissionregistrationv1.Rule{
							APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"secrets"},
						},
					},
				}},
			},
			Validations: []admissionregistrationv1.Validation{{Expression: "false", Message: message}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources: &admissionregistrationv1.MatchResources{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
			},
		},
	}
	for _, obj := range []client.Object{policy, binding} {
		if err := k8s.Create(ctx, obj); err != nil {
			f.t.Fatalf("create %T: %v", obj, err)
		}
		f.t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
	}
	f.eventually("the admission policy to be enforced", func() (bool, string) {
		err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"}}, client.DryRunAll)
		return apierrors.IsForbidden(err) || apierrors.IsInvalid(err), fmt.Sprintf("probe create: %v", err)
	})
	return []client.Object{binding, policy}
}

// The CRD refuses a ClusterOpsnowToken without a secretName, with a bad
// namespace name, or with the operator's keys in its template.
func TestClusterTokenInvalidObjectsRejected(t *testing.T) {
	requireControlPlane(t)
	valid := func() *authv1alpha1.ClusterOpsnowToken {
		return &authv1alpha1.ClusterOpsnowToken{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "bad-"},
			Spec: authv1alpha1.ClusterOpsnowTokenSpec{
				APIKeySecretRef: authv1alpha1.ClusterSecretKeySelector{Name: "k"},
				SecretName:      "opsnow-token",
			},
		}
	}
	tests := []struct {
		name   string
		mutate func(*authv1alpha1.ClusterOpsnowToken)
		field  string
	}{
		{"no secretName", func(c *authv1alpha1.ClusterOpsnowToken) { c.Spec.SecretName = "" }, "secretName"},
		{"namespace not a DNS label", func(c *authv1alpha1.ClusterOpsnowToken) { c.Spec.Namespaces = []string{"Team_A"} }, "namespaces"},
		{"operator label in template", func(c *authv1alpha1.ClusterOpsnowToken) {
			c.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{Labels: map[string]string{authv1alpha1.ClusterTokenLabel: "x"}}
		}, "secretTemplate"},
		{"endpoint ftp", func(c *authv1alpha1.ClusterOpsnowToken) { c.Spec.Endpoint = "ftp://api.opsnow.io" }, "endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.mutate(o)
			err := k8s.Create(context.Background(), o)
			if err == nil {
				_ = k8s.Delete(context.Background(), o)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("create: got %v, want Invalid naming %s", err, tt.field)
			}
		})
	}
	m, err := k8s.RESTMapper().RESTMapping(authv1alpha1.GroupVersion.WithKind("ClusterOpsnowToken").GroupKind(), authv1alpha1.GroupVersion.Version)
	if err != nil {
		t.Fatalf("REST mapping: %v", err)
	}
	if m.Scope.Name() != apimeta.RESTScopeNameRoot {
		t.Errorf("ClusterOpsnowToken scope: got %s, want cluster-scoped", m.Scope.Name())
	}
}
