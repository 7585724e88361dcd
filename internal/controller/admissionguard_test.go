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

// The admission guard (config/admission-guard), installed by TestMain: as
// the manager's ServiceAccount, every write a compromised manager could try
// is denied with a message saying what and why, the writes the manager
// makes pass, and other identities are not affected.

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// The guard's reasons, as its messages word them.
const (
	guardWrongType     = "and the manager writes only Opaque Secrets"
	guardNoLabel       = "it lacks the label app.kubernetes.io/managed-by=opsnow-token-operator"
	guardNoController  = "it has no controller reference to an OpsnowToken"
	guardForeignUpdate = "the stored Secret is not controlled by an OpsnowToken"
	guardForeignDelete = "and the manager deletes only Secrets it wrote"
)

// guardFixture is a namespace with an OpsnowToken and clients for the
// manager's ServiceAccount and the admin.
type guardFixture struct {
	t         *testing.T
	ns        string
	token     *authv1alpha1.OpsnowToken
	asManager client.Client
}

func newGuardFixture(t *testing.T) *guardFixture {
	t.Helper()
	requireControlPlane(t)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "guard-"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
	// No API-key Secret: a manager watching every namespace leaves the
	// token not ready and writes no Secret of its own here.
	tok := &authv1alpha1.OpsnowToken{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "billing"},
		Spec:       authv1alpha1.OpsnowTokenSpec{APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: "absent"}},
	}
	if err := k8s.Create(ctx, tok); err != nil {
		t.Fatalf("create OpsnowToken: %v", err)
	}
	asManager, err := client.New(managerConfig, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return &guardFixture{t: t, ns: ns.Name, token: tok, asManager: asManager}
}

// controllerRef is the owner reference the manager sets on a target Secret.
func (f *guardFixture) controllerRef() metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion: authv1alpha1.GroupVersion.String(), Kind: "OpsnowToken",
		Name: f.token.Name, UID: f.token.UID,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(false),
	}
}

// targetSecret is a Secret as the manager writes it.
func (f *guardFixture) targetSecret(name string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: f.ns, Name: name,
			Labels: map[string]string{
				authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue,
				authv1alpha1.TokenLabel:     f.token.Name,
			},
			OwnerReferences: []metav1.OwnerReference{f.controllerRef()},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{authv1alpha1.SecretTokenKey: []byte("demo.token")},
	}
}

// foreignSecret creates, as the admin, a Secret the operator did not write.
func (f *guardFixture) foreignSecret(name string, mutate func(*corev1.Secret)) *corev1.Secret {
	f.t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
		Data:       map[string][]byte{"password": []byte("do-not-touch")},
	}
	if mutate != nil {
		mutate(s)
	}
	if err := k8s.Create(context.Background(), s); err != nil {
		f.t.Fatalf("create Secret %s: %v", name, err)
	}
	return s
}

// managerGet reads a Secret as the manager, which may read every Secret.
func (f *guardFixture) managerGet(name string) *corev1.Secret {
	f.t.Helper()
	s := &corev1.Secret{}
	if err := f.asManager.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: name}, s); err != nil {
		f.t.Fatalf("get Secret %s as the manager: %v", name, err)
	}
	return s
}

// wantGuardDenial fails t unless err is the guard's denial for reason.
func wantGuardDenial(t *testing.T, err error, reason string) {
	t.Helper()
	if !isGuardDenial(err) || !strings.Contains(err.Error(), reason) {
		t.Fatalf("got %v, want Forbidden by the admission guard %s: %q", err, guardPolicy.Name, reason)
	}
	if !strings.Contains(err.Error(), "the manager may not ") {
		t.Errorf("the guard's message %q does not say what was refused", err.Error())
	}
}

// As the manager's ServiceAccount, each write outside the operator's own
// Secrets is denied by the guard, with the reason in the message. Creates
// and updates are dry runs: a denial proves admission refused them.
func TestAdmissionGuardRefusesForbiddenWrites(t *testing.T) {
	f := newGuardFixture(t)
	ctx := context.Background()

	creates := []struct {
		name   string
		secret func() *corev1.Secret
		reason string
	}{
		{"service-account-token Secret", func() *corev1.Secret {
			return &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "minted",
					Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"}},
				Type: corev1.SecretTypeServiceAccountToken,
			}
		}, "it is of type kubernetes.io/service-account-token, " + guardWrongType},
		{"TLS Secret with the label and the controller reference", func() *corev1.Secret {
			s := f.targetSecret("tls")
			s.Type = corev1.SecretTypeTLS
			s.Data = map[string][]byte{corev1.TLSCertKey: []byte("cert"), corev1.TLSPrivateKeyKey: []byte("key")}
			return s
		}, "it is of type kubernetes.io/tls, " + guardWrongType},
		{"dockerconfigjson Secret with the label and the controller reference", func() *corev1.Secret {
			s := f.targetSecret("pull")
			s.Type = corev1.SecretTypeDockerConfigJson
			s.Data = map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)}
			return s
		}, guardWrongType},
		{"Opaque Secret without the managed-by label", func() *corev1.Secret {
			s := f.targetSecret("unlabelled")
			delete(s.Labels, authv1alpha1.ManagedByLabel)
			return s
		}, guardNoLabel},
		{"Opaque Secret managed by someone else", func() *corev1.Secret {
			s := f.targetSecret("helm-owned")
			s.Labels[authv1alpha1.ManagedByLabel] = "Helm"
			return s
		}, guardNoLabel},
		{"Opaque Secret without an owner", func() *corev1.Secret {
			s := f.targetSecret("unowned")
			s.OwnerReferences = nil
			return s
		}, guardNoController},
		{"OpsnowToken owner reference that is not the controller", func() *corev1.Secret {
			s := f.targetSecret("not-controller")
			s.OwnerReferences[0].Controller = ptr.To(false)
			return s
		}, guardNoController},
		{"controller reference to another kind", func() *corev1.Secret {
			s := f.targetSecret("configmap-owned")
			s.OwnerReferences[0].APIVersion, s.OwnerReferences[0].Kind = "v1", "ConfigMap"
			return s
		}, guardNoController},
		{"controller reference to an OpsnowToken of another group", func() *corev1.Secret {
			s := f.targetSecret("lookalike-owned")
			s.OwnerReferences[0].APIVersion = "auth.opsnow.io.evil.example/v1alpha1"
			return s
		}, guardNoController},
	}
	for _, c := range creates {
		t.Run("create "+c.name, func(t *testing.T) {
			wantGuardDenial(t, f.asManager.Create(ctx, c.secret(), client.DryRunAll), c.reason)
		})
	}

	// Foreign Secrets: one plain, one carrying the operator's label (which
	// anyone may set) but no controller reference.
	f.foreignSecret("legacy", nil)
	f.foreignSecret("decoy", func(s *corev1.Secret) {
		s.Labels = map[string]string{authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue}
	})
	takeOver := func(s *corev1.Secret) {
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		s.Labels[authv1alpha1.ManagedByLabel] = authv1alpha1.ManagedByValue
		s.OwnerReferences = []metav1.OwnerReference{f.controllerRef()}
		s.Data = map[string][]byte{authv1alpha1.SecretTokenKey: []byte("demo.token")}
	}
	for _, name := range []string{"legacy", "decoy"} {
		t.Run("update foreign Secret "+name+" to take it over", func(t *testing.T) {
			wantGuardDenial(t, patchSecret(f.asManager, f.managerGet(name), takeOver, client.DryRunAll), guardForeignUpdate)
		})
		t.Run("delete foreign Secret "+name, func(t *testing.T) {
			s := f.managerGet(name)
			err := f.asManager.Delete(ctx, s, client.Preconditions{UID: &s.UID}, client.DryRunAll)
			wantGuardDenial(t, err, guardForeignDelete)
		})
	}

	// One of the operator's Secrets may not be turned into something else.
	own := f.targetSecret("own")
	if err := k8s.Create(ctx, own); err != nil {
		t.Fatalf("create target Secret: %v", err)
	}
	for _, c := range []struct {
		name   string
		mutate func(*corev1.Secret)
		reason string
	}{
		{"drop its managed-by label", func(s *corev1.Secret) { delete(s.Labels, authv1alpha1.ManagedByLabel) }, guardNoLabel},
		{"drop its controller reference", func(s *corev1.Secret) { s.OwnerReferences = nil }, guardNoController},
	} {
		t.Run("update own Secret to "+c.name, func(t *testing.T) {
			wantGuardDenial(t, patchSecret(f.asManager, f.managerGet("own"), c.mutate, client.DryRunAll), c.reason)
		})
	}
}

// The writes the manager makes pass the guard: creating a target Secret,
// updating it, putting back a managed-by label someone removed, and deleting
// it with a UID precondition, as deleteOrphans does.
func TestAdmissionGuardAllowsTheManagersWrites(t *testing.T) {
	f := newGuardFixture(t)
	ctx := context.Background()

	s := f.targetSecret("billing")
	if err := f.asManager.Create(ctx, s); err != nil {
		t.Fatalf("create a target Secret as the manager: %v", err)
	}
	if err := patchSecret(f.asManager, s, func(s *corev1.Secret) {
		s.Data[authv1alpha1.SecretTokenKey] = []byte("demo.refreshed")
	}); err != nil {
		t.Fatalf("update a target Secret as the manager: %v", err)
	}

	update(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "billing"}},
		func(s *corev1.Secret) { delete(s.Labels, authv1alpha1.ManagedByLabel) })
	s = f.managerGet("billing")
	if err := patchSecret(f.asManager, s, func(s *corev1.Secret) {
		s.Labels[authv1alpha1.ManagedByLabel] = authv1alpha1.ManagedByValue
	}); err != nil {
		t.Fatalf("put back the managed-by label as the manager: %v", err)
	}

	if err := f.asManager.Delete(ctx, s, client.Preconditions{UID: &s.UID}); err != nil {
		t.Fatalf("delete a target Secret as the manager: %v", err)
	}
}

// The guard binds the manager's ServiceAccount only: the admin, and a user
// holding the very same RBAC under another name, write what the manager may
// not.
func TestAdmissionGuardLeavesOtherIdentitiesAlone(t *testing.T) {
	f := newGuardFixture(t)
	ctx := context.Background()
	sameRights := newManagerUser(t)
	sameRights.bind(&harness{t: t, ns: f.ns}, true)
	asOther, err := client.New(sameRights.config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}

	for who, c := range map[string]client.Client{"the admin": k8s, "a user with the manager's RBAC": asOther} {
		t.Run(who, func(t *testing.T) {
			token := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, GenerateName: "minted-",
					Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"}},
				Type: corev1.SecretTypeServiceAccountToken,
			}
			if err := c.Create(ctx, token, client.DryRunAll); err != nil {
				t.Errorf("dry-run create of a service-account-token Secret: %v", err)
			}
			plain := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, GenerateName: "plain-"}}
			if err := c.Create(ctx, plain); err != nil {
				t.Fatalf("create an unlabelled Opaque Secret: %v", err)
			}
			if err := patchSecret(c, plain, func(s *corev1.Secret) {
				s.Data = map[string][]byte{"password": []byte("changed")}
			}); err != nil {
				t.Errorf("update a foreign Secret: %v", err)
			}
			if err := c.Delete(ctx, plain); err != nil {
				t.Errorf("delete a foreign Secret: %v", err)
			}
		})
	}
}

// A manager running under the guard keeps its Secrets in order: it writes
// the token, puts back the managed-by label someone removed, and, when
// spec.secretName changes, writes the new Secret and deletes the old one.
// newHarness fails the test on any denial in the manager's log.
func TestAdmissionGuardLetsTheManagerKeepItsSecrets(t *testing.T) {
	h := newHarness(t)
	h.createAPIKeySecret("opsnow-api-key", "key-"+randomHex(t, 8))
	h.createToken("billing", "opsnow-api-key")
	h.waitReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	h.waitSecretToken("billing", h.server.Issued()[0])

	update(t, h.getSecret("billing"), func(s *corev1.Secret) { delete(s.Labels, authv1alpha1.ManagedByLabel) })
	h.eventually("the managed-by label put back", func() (bool, string) {
		s := h.getSecret("billing")
		if s == nil {
			return false, "Secret missing"
		}
		return s.Labels[authv1alpha1.ManagedByLabel] == authv1alpha1.ManagedByValue, fmt.Sprintf("labels %v", s.Labels)
	})

	update(t, h.getToken("billing"), func(tok *authv1alpha1.OpsnowToken) { tok.Spec.SecretName = "billing-token" })
	h.eventually("the token moved to Secret billing-token", func() (bool, string) {
		moved, old := h.getSecret("billing-token"), h.getSecret("billing")
		return moved != nil && len(moved.Data[authv1alpha1.SecretTokenKey]) > 0 && old == nil,
			fmt.Sprintf("new Secret written: %t, old Secret still there: %t", moved != nil, old != nil)
	})
	h.waitReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
}

// patchSecret changes s with mutate as the manager writes Secrets: a merge
// patch under the resourceVersion it was read at.
func patchSecret(c client.Client, s *corev1.Secret, mutate func(*corev1.Secret), opts ...client.PatchOption) error {
	base := s.DeepCopy()
	mutate(s)
	return c.Patch(context.Background(), s, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}), opts...)
}
