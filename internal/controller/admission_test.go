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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// A ValidatingAdmissionPolicy that denies the target Secret's creation:
// the OpsnowToken shows SecretWriteFailed within seconds, the token server
// sees one request however many times the write is retried (the minted
// token is kept), and lifting the policy makes it Ready at the next retry.
func TestDeniedSecretWriteStory(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	ctx := context.Background()
	deny := h.denySecretCreates("Secrets in this namespace come from the platform team")

	h.createAPIKeySecret("opsnow-api-key", "key-"+randomHex(t, 8))
	h.createToken("billing", "opsnow-api-key")
	tok := h.waitReady("billing", metav1.ConditionFalse, authv1alpha1.ReasonSecretWriteFailed)
	if !strings.Contains(tok.Status.LastFailureMessage, "platform team") {
		t.Errorf("lastFailureMessage: got %q, want the policy's message", tok.Status.LastFailureMessage)
	}
	h.waitEvent("billing", corev1.EventTypeWarning, authv1alpha1.ReasonSecretWriteFailed)
	h.waitRequests(1)

	// Three retries of the write: still the one token request.
	for attempt := int32(2); attempt <= 4; attempt++ {
		h.stepTo(tok.Status.NextRefreshTime.Time)
		h.eventually(fmt.Sprintf("failed attempt %d", attempt), func() (bool, string) {
			tok = h.getToken("billing")
			return tok.Status.FailedAttempts == attempt, fmt.Sprintf("failedAttempts %d", tok.Status.FailedAttempts)
		})
	}
	h.assertRequestsStay(1, time.Second)

	// The policy goes: Ready at the next retry, with the token minted first.
	for _, obj := range deny {
		if err := k8s.Delete(ctx, obj); err != nil {
			t.Fatalf("delete %T: %v", obj, err)
		}
	}
	h.waitSecretCreateAllowed()
	h.stepTo(tok.Status.NextRefreshTime.Time)
	h.waitReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	h.waitSecretToken("billing", h.server.Issued()[0])
	h.assertRequestsStay(1, time.Second)
}

// denySecretCreates installs a ValidatingAdmissionPolicy and its binding
// that deny creating Secrets named like an OpsnowToken's target in the test
// namespace, and waits until the API server enforces it.
func (h *harness) denySecretCreates(message string) []client.Object {
	h.t.Helper()
	ctx := context.Background()
	name := "deny-token-secrets-" + h.ns
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
			Validations: []admissionregistrationv1.Validation{{
				Expression: `!object.metadata.name.startsWith("billing")`,
				Message:    message,
			}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources: &admissionregistrationv1.MatchResources{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{
					"kubernetes.io/metadata.name": h.ns,
				}},
			},
		},
	}
	for _, obj := range []client.Object{policy, binding} {
		if err := k8s.Create(ctx, obj); err != nil {
			h.t.Fatalf("create %T: %v", obj, err)
		}
		h.t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
	}
	h.eventually("the admission policy to be enforced", func() (bool, string) {
		err := h.probeSecretCreate()
		return apierrors.IsForbidden(err) || apierrors.IsInvalid(err), fmt.Sprintf("probe create: %v", err)
	})
	return []client.Object{binding, policy}
}

// waitSecretCreateAllowed waits until a probe Secret may be created again.
func (h *harness) waitSecretCreateAllowed() {
	h.t.Helper()
	h.eventually("Secret creation allowed again", func() (bool, string) {
		err := h.probeSecretCreate()
		return err == nil, fmt.Sprintf("probe create: %v", err)
	})
}

// probeSecretCreate tries, in a dry run, the create a policy would deny.
func (h *harness) probeSecretCreate() error {
	probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "billing-probe"}}
	return k8s.Create(context.Background(), probe, client.DryRunAll)
}

// The API server runs the OwnerReferencesPermissionEnforcement admission
// plugin (suite_test.go), as OpenShift does: an owner reference with
// blockOwnerDeletion needs update on opsnowtokens/finalizers, which the
// manager does not have; the one it writes (blockOwnerDeletion false) needs
// delete on Secrets, which it has. The stories under the generated RBAC
// (TestManagerRunsUnderGeneratedRBAC) create Secrets through that plugin.
func TestOwnerReferencesPermissionEnforcement(t *testing.T) {
	requireControlPlane(t)
	user := newManagerUser(t)
	h := newHarness(t, withManagerConfig(user.config), withBeforeStart(func(h *harness) { user.bind(h, true) }))
	h.createAPIKeySecret("opsnow-api-key", "key-"+randomHex(t, 8))
	tok := h.createToken("billing", "opsnow-api-key")
	h.waitReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
	ref := metav1.GetControllerOf(h.getSecret("billing"))
	if ref == nil || ref.BlockOwnerDeletion == nil || *ref.BlockOwnerDeletion {
		t.Errorf("the manager's owner reference: got %+v, want a controller reference with blockOwnerDeletion false", ref)
	}

	// The plugin is on: the same identity may not block the owner's deletion.
	asManager, err := client.New(user.config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	blocking := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "blocking",
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion: authv1alpha1.GroupVersion.String(), Kind: "OpsnowToken", Name: tok.Name, UID: tok.UID,
			Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
		}}}}
	err = asManager.Create(context.Background(), blocking, client.DryRunAll)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "finalizers") {
		t.Errorf("a blocking owner reference as the manager: got %v, want Forbidden for lack of opsnowtokens/finalizers", err)
	}
}
