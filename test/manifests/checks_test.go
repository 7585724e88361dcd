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

package manifests_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// fieldOwner is the field manager of the dry-run applies.
const fieldOwner = "manifests-test"

// checkRendering runs the checks every rendering must pass.
func checkRendering(t *testing.T, r *rendering) {
	t.Helper()
	t.Run("server-side dry run", func(t *testing.T) { checkDryRun(t, r) })
	t.Run("references resolve", func(t *testing.T) { checkReferences(t, r) })
	t.Run("manager flags exist", func(t *testing.T) { checkManagerFlags(t, r) })
	t.Run("restricted pod security", func(t *testing.T) { checkRestrictedPods(t, r) })
}

// checkDryRun applies every object with a server-side dry run: the API server
// validates it against the schema of its kind (unknown fields are errors for
// server-side apply), admission runs, nothing is stored. Warnings fail too.
func checkDryRun(t *testing.T, r *rendering) {
	ctx := context.Background()
	for _, o := range r.objects {
		mapping, err := k8s.RESTMapper().RESTMapping(o.GroupVersionKind().GroupKind(), o.GroupVersionKind().Version)
		if err != nil {
			t.Errorf("%s: %s/%s is not served by the API server: %v", describe(o), o.GetAPIVersion(), o.GetKind(), err)
			continue
		}
		if mapping.Scope.Name() != apimeta.RESTScopeNameNamespace && o.GetNamespace() != "" {
			// GitOps tools compare it with the live object, which has none.
			t.Errorf("%s: cluster-scoped object with metadata.namespace %q", describe(o), o.GetNamespace())
		}
		if mapping.Scope.Name() == apimeta.RESTScopeNameNamespace {
			if o.GetNamespace() == "" {
				t.Errorf("%s: namespaced object without metadata.namespace (kubectl apply would put it in the "+
					"current namespace)", describe(o))
				continue
			}
			if err := ensureNamespace(ctx, o.GetNamespace()); err != nil {
				t.Fatalf("create namespace %s: %v", o.GetNamespace(), err)
			}
		}
	}
	warnings.take()
	for _, o := range r.objects {
		err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()),
			client.DryRunAll, client.ForceOwnership, client.FieldOwner(fieldOwner))
		if err != nil {
			t.Errorf("%s: server-side dry run rejected: %v", describe(o), err)
		}
		for _, w := range warnings.take() {
			t.Errorf("%s: API server warning: %s", describe(o), w)
		}
	}
}

// checkReferences checks what the API server does not: bindings name roles
// and ServiceAccounts of the rendering, the Deployment's ServiceAccount is
// there, Services select the manager pods and target their ports,
// ServiceMonitors select a Service port, and the admission guard is bound
// and names the manager's ServiceAccount.
func checkReferences(t *testing.T, r *rendering) {
	for _, b := range append(r.all("RoleBinding"), r.all("ClusterRoleBinding")...) {
		kind, _, _ := unstructured.NestedString(b.Object, "roleRef", "kind")
		name, _, _ := unstructured.NestedString(b.Object, "roleRef", "name")
		ns := ""
		if kind == "Role" {
			ns = b.GetNamespace()
		}
		if r.find(kind, ns, name) == nil {
			t.Errorf("%s: roleRef %s %q is not in the rendering", describe(b), kind, name)
		}
		subjects, _, _ := unstructured.NestedSlice(b.Object, "subjects")
		for _, s := range subjects {
			s, _ := s.(map[string]any)
			if s["kind"] != "ServiceAccount" {
				continue
			}
			sa, _ := s["name"].(string)
			sns, _ := s["namespace"].(string)
			if r.find("ServiceAccount", sns, sa) == nil {
				t.Errorf("%s: subject ServiceAccount %s/%s is not in the rendering", describe(b), sns, sa)
			}
		}
	}

	deployments := r.all("Deployment")
	if len(deployments) == 0 {
		t.Fatalf("%s: no Deployment", r.source)
	}
	for _, d := range deployments {
		dep := toDeployment(t, d)
		if sa := dep.Spec.Template.Spec.ServiceAccountName; r.find("ServiceAccount", d.GetNamespace(), sa) == nil {
			t.Errorf("%s: serviceAccountName %q is not in the rendering", describe(d), sa)
		}
	}

	for _, s := range r.all("Service") {
		var svc corev1.Service
		fromUnstructured(t, s, &svc)
		var pod *corev1.PodTemplateSpec
		for _, d := range deployments {
			dep := toDeployment(t, d)
			if d.GetNamespace() == s.GetNamespace() && len(svc.Spec.Selector) > 0 &&
				labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)) {
				pod = &dep.Spec.Template
			}
		}
		if pod == nil {
			t.Errorf("%s: selector %v matches no Deployment's pods", describe(s), svc.Spec.Selector)
			continue
		}
		for _, p := range svc.Spec.Ports {
			if !hasContainerPort(pod, p.TargetPort) {
				t.Errorf("%s: port %q targets %s, which no container of the pods exposes", describe(s), p.Name, p.TargetPort.String())
			}
		}
	}

	for _, m := range r.all("ServiceMonitor") {
		checkServiceMonitor(t, r, m)
	}

	checkAdmissionGuard(t, r, deployments)

	for _, p := range r.all("NetworkPolicy") {
		selector, _, _ := unstructured.NestedStringMap(p.Object, "spec", "podSelector", "matchLabels")
		if !slices.ContainsFunc(deployments, func(d *unstructured.Unstructured) bool {
			return d.GetNamespace() == p.GetNamespace() &&
				labels.SelectorFromSet(selector).Matches(labels.Set(toDeployment(t, d).Spec.Template.Labels))
		}) {
			t.Errorf("%s: podSelector %v matches no Deployment's pods", describe(p), selector)
		}
	}
}

// guardUsername matches the admission guard's condition on the manager's
// ServiceAccount, capturing its namespace and name.
var guardUsername = regexp.MustCompile(`^request\.userInfo\.username == 'system:serviceaccount:' \+\s+'([^']+)' \+ ':' \+ '([^']+)'$`)

// checkAdmissionGuard checks that every ValidatingAdmissionPolicyBinding
// names a policy of the rendering, and that the admission guard's policy is
// bound and matches the username of the ServiceAccount the manager pods run
// as: a stale name would leave the manager unguarded, silently.
func checkAdmissionGuard(t *testing.T, r *rendering, deployments []*unstructured.Unstructured) {
	bound := map[string]bool{}
	for _, b := range r.all("ValidatingAdmissionPolicyBinding") {
		policy, _, _ := unstructured.NestedString(b.Object, "spec", "policyName")
		if r.find("ValidatingAdmissionPolicy", "", policy) == nil {
			t.Errorf("%s: policyName %q is not in the rendering", describe(b), policy)
		}
		actions, _, _ := unstructured.NestedStringSlice(b.Object, "spec", "validationActions")
		if slices.Contains(actions, "Deny") {
			bound[policy] = true
		}
	}
	for _, p := range r.all("ValidatingAdmissionPolicy") {
		if !bound[p.GetName()] {
			t.Errorf("%s: no binding with validationActions [Deny]", describe(p))
		}
		ns, sa := guardServiceAccount(t, p)
		if ns == "" {
			continue
		}
		if !slices.ContainsFunc(deployments, func(d *unstructured.Unstructured) bool {
			return d.GetNamespace() == ns && toDeployment(t, d).Spec.Template.Spec.ServiceAccountName == sa
		}) {
			t.Errorf("%s: matches ServiceAccount %s/%s, which no manager Deployment runs as", describe(p), ns, sa)
		}
	}
}

// guardServiceAccount returns the namespace and name of the ServiceAccount
// the admission guard p applies to, or "" when p is not the guard.
func guardServiceAccount(t *testing.T, p *unstructured.Unstructured) (namespace, name string) {
	t.Helper()
	conditions, _, _ := unstructured.NestedSlice(p.Object, "spec", "matchConditions")
	for _, c := range conditions {
		c, _ := c.(map[string]any)
		if c["name"] != "manager-service-account" {
			continue
		}
		expr, _ := c["expression"].(string)
		m := guardUsername.FindStringSubmatch(expr)
		if m == nil {
			t.Errorf("%s: condition manager-service-account %q does not have the form %s", describe(p), expr, guardUsername)
			return "", ""
		}
		return m[1], m[2]
	}
	return "", ""
}

// checkServiceMonitor checks that m selects a Service of the rendering and
// one of its ports by name.
func checkServiceMonitor(t *testing.T, r *rendering, m *unstructured.Unstructured) {
	namespaces, _, _ := unstructured.NestedStringSlice(m.Object, "spec", "namespaceSelector", "matchNames")
	if len(namespaces) == 0 {
		namespaces = []string{m.GetNamespace()}
	}
	matchLabels, _, _ := unstructured.NestedStringMap(m.Object, "spec", "selector", "matchLabels")
	endpoints, _, _ := unstructured.NestedSlice(m.Object, "spec", "endpoints")
	if len(matchLabels) == 0 || len(endpoints) == 0 {
		t.Errorf("%s: needs spec.selector.matchLabels and spec.endpoints", describe(m))
		return
	}
	var selected []corev1.Service
	for _, s := range r.all("Service") {
		if slices.Contains(namespaces, s.GetNamespace()) &&
			labels.SelectorFromSet(matchLabels).Matches(labels.Set(s.GetLabels())) {
			var svc corev1.Service
			fromUnstructured(t, s, &svc)
			selected = append(selected, svc)
		}
	}
	if len(selected) != 1 {
		t.Errorf("%s: selects %d Services in %v, want 1", describe(m), len(selected), namespaces)
		return
	}
	for _, e := range endpoints {
		e, _ := e.(map[string]any)
		port, _ := e["port"].(string)
		if !slices.ContainsFunc(selected[0].Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == port }) {
			t.Errorf("%s: endpoint port %q is not a port of Service %s", describe(m), port, selected[0].Name)
		}
	}
}

// checkManagerFlags runs the manager binary with each Deployment's arguments
// followed by --help: the manager parses the arguments, so an unknown flag
// or a bad value exits non-zero, then stops at --help.
func checkManagerFlags(t *testing.T, r *rendering) {
	manager := managerBinary(t)
	for _, d := range r.all("Deployment") {
		dep := toDeployment(t, d)
		for _, c := range dep.Spec.Template.Spec.Containers {
			if !slices.Equal(c.Command, []string{"/manager"}) {
				t.Errorf("%s: container %s runs %v, want [/manager] (the image's manager binary)", describe(d), c.Name, c.Command)
				continue
			}
			args := append(slices.Clone(c.Args), "--help")
			if out, err := exec.Command(manager, args...).CombinedOutput(); err != nil {
				t.Errorf("%s: the manager rejects its arguments (%v): %s\narguments: %q", describe(d), err, firstLine(out), c.Args)
			}
		}
	}
}

var buildManager = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(workDir, "manager")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
})

// managerBinary builds the manager once per test run.
func managerBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildManager()
	if err != nil {
		t.Fatalf("build the manager: %v", err)
	}
	return bin
}

// checkRestrictedPods creates, as a dry run, a pod from each Deployment's
// template in a namespace enforcing the restricted Pod Security profile.
func checkRestrictedPods(t *testing.T, r *rendering) {
	for _, d := range r.all("Deployment") {
		dep := toDeployment(t, d)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "manager-", Namespace: restrictedNamespace, Labels: dep.Spec.Template.Labels},
			Spec:       dep.Spec.Template.Spec,
		}
		warnings.take()
		if err := k8s.Create(context.Background(), pod, client.DryRunAll); err != nil {
			t.Errorf("%s: the restricted Pod Security profile rejects its pods: %v", describe(d), err)
		}
		for _, w := range warnings.take() {
			t.Errorf("%s: API server warning for its pods: %s", describe(d), w)
		}
	}
}

func hasContainerPort(pod *corev1.PodTemplateSpec, target intstr.IntOrString) bool {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if (target.Type == intstr.String && p.Name == target.StrVal) ||
				(target.Type == intstr.Int && p.ContainerPort == target.IntVal) {
				return true
			}
		}
	}
	return false
}

func toDeployment(t *testing.T, o *unstructured.Unstructured) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	fromUnstructured(t, o, &d)
	return &d
}

func fromUnstructured(t *testing.T, o *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, into, true); err != nil {
		t.Fatalf("%s: %v", describe(o), err)
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}
