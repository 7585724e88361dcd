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
	"bytes"
	"context"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// The kustomize install: what `make build-installer` writes to dist/install.yaml.
func TestKustomizeDefault(t *testing.T) {
	requireCluster(t)
	r := kustomizeBuild(t, filepath.Join(repoRoot, "config", "default"))
	checkRendering(t, r)

	const ns = "opsnow-token-operator-system"
	for _, want := range []struct{ kind, namespace, name string }{
		{"CustomResourceDefinition", "", "opsnowtokens.auth.opsnow.io"},
		{"Namespace", "", ns},
		{"ServiceAccount", ns, "opsnow-token-operator-controller-manager"},
		{"ClusterRole", "", "opsnow-token-operator-manager-role"},
		{"ClusterRoleBinding", "", "opsnow-token-operator-manager-rolebinding"},
		{"Role", ns, "opsnow-token-operator-leader-election-role"},
		{"RoleBinding", ns, "opsnow-token-operator-leader-election-rolebinding"},
		{"ClusterRole", "", "opsnow-token-operator-metrics-auth-role"},
		{"ClusterRoleBinding", "", "opsnow-token-operator-metrics-auth-rolebinding"},
		{"ClusterRole", "", "opsnow-token-operator-metrics-reader"},
		{"Service", ns, "opsnow-token-operator-controller-manager-metrics-service"},
		{"Deployment", ns, "opsnow-token-operator-controller-manager"},
		{"ValidatingAdmissionPolicy", "", "opsnow-token-operator-secret-guard"},
		{"ValidatingAdmissionPolicyBinding", "", "opsnow-token-operator-secret-guard"},
	} {
		if r.find(want.kind, want.namespace, want.name) == nil {
			t.Errorf("%s: no %s %s", r.source, want.kind, strings.TrimPrefix(want.namespace+"/"+want.name, "/"))
		}
	}

	dep := toDeployment(t, r.one(t, "Deployment"))
	manager := dep.Spec.Template.Spec.Containers[0]
	for _, arg := range []string{"--leader-elect", "--metrics-bind-address=:8443"} {
		if !slices.Contains(manager.Args, arg) {
			t.Errorf("manager args %q lack %s", manager.Args, arg)
		}
	}
	// The default IMG of the Makefile: `make build-installer` with it leaves
	// config/manager/kustomization.yaml unchanged.
	if want := "ghcr.io/opsnow-token-operator/opsnow-token-operator:latest"; manager.Image != want {
		t.Errorf("manager image: got %q, want %q (the Makefile's default IMG)", manager.Image, want)
	}
}

// The optional parts of config/default, each enabled the documented way:
// uncommenting its line in config/default/kustomization.yaml.
func TestKustomizeOptionalParts(t *testing.T) {
	requireCluster(t)
	for _, c := range []struct {
		line  string
		kinds []string
	}{
		{"#- ../prometheus\n", []string{"ServiceMonitor", "PrometheusRule"}},
		{"#- ../network-policy\n", []string{"NetworkPolicy"}},
		{"#- ../ha\n", []string{"PodDisruptionBudget"}},
	} {
		part := strings.TrimSpace(strings.TrimPrefix(c.line, "#- "))
		t.Run(part, func(t *testing.T) {
			config := filepath.Join(t.TempDir(), "config")
			copyTree(t, filepath.Join(repoRoot, "config"), config)
			path := filepath.Join(config, "default", "kustomization.yaml")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Count(data, []byte(c.line)) != 1 {
				t.Fatalf("config/default/kustomization.yaml has no line %q to uncomment", c.line)
			}
			if err := os.WriteFile(path, bytes.Replace(data, []byte(c.line), []byte(c.line[1:]), 1), 0o644); err != nil {
				t.Fatal(err)
			}
			r := kustomizeBuild(t, filepath.Join(config, "default"))
			r.source = "kustomize build config/default with " + part
			checkRendering(t, r)
			for _, kind := range c.kinds {
				r.one(t, kind)
			}
			if part == "../ha" {
				checkHA(t, r)
			}
		})
	}
}

// selects reports whether a non-empty matchLabels selects an object with labels.
func selects(matchLabels, labels map[string]string) bool {
	for k, v := range matchLabels {
		if labels[k] != v {
			return false
		}
	}
	return len(matchLabels) > 0
}

// checkHA checks the high-availability setting of config/ha and of the
// chart's ci/ha-values.yaml: two replicas spread over nodes, a
// PodDisruptionBudget selecting exactly the manager's pods, and the 500 ms
// leader-election retry period docs/operations.md measures.
func checkHA(t *testing.T, r *rendering) {
	t.Helper()
	dep := toDeployment(t, r.one(t, "Deployment"))
	if got := ptr.Deref(dep.Spec.Replicas, 0); got != 2 {
		t.Errorf("%s: replicas %d, want 2", r.source, got)
	}
	args := dep.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "--leader-elect") || !slices.Contains(args, "--leader-elect-retry-period=500ms") {
		t.Errorf("%s: manager args %q, want --leader-elect and --leader-elect-retry-period=500ms", r.source, args)
	}
	spread := dep.Spec.Template.Spec.TopologySpreadConstraints
	if len(spread) != 1 || spread[0].TopologyKey != "kubernetes.io/hostname" || spread[0].LabelSelector == nil ||
		!selects(spread[0].LabelSelector.MatchLabels, dep.Spec.Template.Labels) {
		t.Errorf("%s: topologySpreadConstraints %+v, want one over kubernetes.io/hostname selecting the pods (labels %v)",
			r.source, spread, dep.Spec.Template.Labels)
	}
	pdb := r.one(t, "PodDisruptionBudget")
	if pdb.GetNamespace() != dep.Namespace {
		t.Errorf("%s: %s in namespace %q, want the Deployment's %q", r.source, describe(pdb), pdb.GetNamespace(), dep.Namespace)
	}
	selector, _, _ := unstructured.NestedStringMap(pdb.Object, "spec", "selector", "matchLabels")
	if !reflect.DeepEqual(selector, dep.Spec.Selector.MatchLabels) {
		t.Errorf("%s: %s selects %v, want the Deployment's pods %v", r.source, describe(pdb), selector, dep.Spec.Selector.MatchLabels)
	}
	if minAvailable, _, _ := unstructured.NestedInt64(pdb.Object, "spec", "minAvailable"); minAvailable != 1 {
		t.Errorf("%s: %s minAvailable %d, want 1", r.source, describe(pdb), minAvailable)
	}
}

// The admission guard follows config/default's namespace and namePrefix
// (its replacements), and config/default builds without it when its
// component line is commented out, as the comment there says.
func TestKustomizeAdmissionGuard(t *testing.T) {
	requireCluster(t)
	edit := func(t *testing.T, replacements ...string) *rendering {
		t.Helper()
		config := filepath.Join(t.TempDir(), "config")
		copyTree(t, filepath.Join(repoRoot, "config"), config)
		path := filepath.Join(config, "default", "kustomization.yaml")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(replacements); i += 2 {
			if bytes.Count(data, []byte(replacements[i])) != 1 {
				t.Fatalf("config/default/kustomization.yaml has no line %q", replacements[i])
			}
			data = bytes.Replace(data, []byte(replacements[i]), []byte(replacements[i+1]), 1)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return kustomizeBuild(t, filepath.Join(config, "default"))
	}

	t.Run("another namespace and namePrefix", func(t *testing.T) {
		r := edit(t,
			"\nnamespace: opsnow-token-operator-system\n", "\nnamespace: tokens\n",
			"\nnamePrefix: opsnow-token-operator-\n", "\nnamePrefix: tok-\n")
		r.source = "kustomize build config/default with namespace tokens and namePrefix tok-"
		checkRendering(t, r)
		policy := r.find("ValidatingAdmissionPolicy", "", "tok-secret-guard")
		if policy == nil {
			t.Fatalf("%s: no ValidatingAdmissionPolicy tok-secret-guard", r.source)
		}
		if ns, sa := guardServiceAccount(t, policy); ns != "tokens" || sa != "tok-controller-manager" {
			t.Errorf("%s: the guard matches ServiceAccount %s/%s, want tokens/tok-controller-manager", r.source, ns, sa)
		}
	})
	t.Run("component commented out", func(t *testing.T) {
		r := edit(t, "\n- ../admission-guard\n", "\n#- ../admission-guard\n")
		r.source = "kustomize build config/default without ../admission-guard"
		checkRendering(t, r)
		for _, kind := range []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
			for _, o := range r.all(kind) {
				t.Errorf("%s: unexpected %s", r.source, describe(o))
			}
		}
	})
}

// The namespaced install (config/namespaced), when the overlay exists.
func TestKustomizeNamespaced(t *testing.T) {
	requireCluster(t)
	dir := filepath.Join(repoRoot, "config", "namespaced")
	if _, err := os.Stat(filepath.Join(dir, "kustomization.yaml")); err != nil {
		t.Skipf("no namespaced overlay: %v", err)
	}
	r := kustomizeBuild(t, dir)
	checkRendering(t, r)

	managerRules := namespacedRules(rulesOf(t, readObject(t, filepath.Join(repoRoot, "config", "rbac", "role.yaml"))))
	namespaces := watchNamespaces(t, r)
	if len(namespaces) == 0 {
		t.Fatalf("%s: the manager has no --watch-namespaces", r.source)
	}
	for _, ns := range namespaces {
		if !slices.ContainsFunc(r.all("Role"), func(o *unstructured.Unstructured) bool {
			return o.GetNamespace() == ns && reflect.DeepEqual(rulesOf(t, o), managerRules)
		}) {
			t.Errorf("%s: no Role in watched namespace %s with the namespaced rules of config/rbac/role.yaml", r.source, ns)
		}
	}
	for _, cr := range r.all("ClusterRole") {
		if reflect.DeepEqual(rulesOf(t, cr), managerRules) {
			t.Errorf("%s: %s grants the manager's rules cluster-wide", r.source, describe(cr))
		}
	}
	// Built on config/default, it keeps the admission guard.
	r.one(t, "ValidatingAdmissionPolicy")
	r.one(t, "ValidatingAdmissionPolicyBinding")
}

// chartCase is one set of chart values: a file of the chart's ci/ directory.
type chartCase struct {
	release, namespace string
	check              func(t *testing.T, r *rendering)
}

var chartCases = map[string]chartCase{
	"":                         {release: "opsnow-token-operator", namespace: "opsnow-system", check: checkChartDefaults},
	"all-values.yaml":          {release: "tokens", namespace: "opsnow-all", check: checkChartAllValues},
	"minimal-values.yaml":      {release: "minimal", namespace: "opsnow-minimal", check: checkChartMinimal},
	"http-metrics-values.yaml": {release: "plain", namespace: "opsnow-plain", check: checkChartHTTPMetrics},
	"ha-values.yaml":           {release: "opsnow-token-operator", namespace: "opsnow-ha", check: checkHA},
}

// The Helm chart with its default values and with each values file of ci/.
func TestHelmChart(t *testing.T) {
	requireCluster(t)
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, ok := chartCases[filepath.Base(f)]; !ok {
			t.Errorf("%s has no case in chartCases", relToRoot(f))
		}
	}
	for file, c := range chartCases {
		name := file
		if name == "" {
			name = "default values"
		}
		t.Run(name, func(t *testing.T) {
			var args []string
			if file != "" {
				args = []string{"--values", filepath.Join(chartDir, "ci", file)}
			}
			r := helmTemplate(t, c.release, c.namespace, args...)
			checkRendering(t, r)
			c.check(t, r)
		})
	}
}

func checkChartDefaults(t *testing.T, r *rendering) {
	for _, kind := range []string{"ServiceMonitor", "PrometheusRule", "Role"} {
		for _, o := range r.all(kind) {
			if kind != "Role" || !strings.HasSuffix(o.GetName(), "-leader-election-role") {
				t.Errorf("%s: unexpected %s by default", r.source, describe(o))
			}
		}
	}
	if r.find("ClusterRole", "", "opsnow-token-operator-manager-role") == nil {
		t.Errorf("%s: no manager ClusterRole", r.source)
	}
	for _, kind := range []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		if r.find(kind, "", "opsnow-token-operator-secret-guard") == nil {
			t.Errorf("%s: no %s: the admission guard is on by default", r.source, kind)
		}
	}
	args := toDeployment(t, r.one(t, "Deployment")).Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "--cluster-resource-namespace=opsnow-system") || slices.Contains(args, "--enable-cluster-tokens=false") {
		t.Errorf("%s: manager args %q, want ClusterOpsnowTokens on with the release namespace as cluster resource namespace", r.source, args)
	}
}

func checkChartAllValues(t *testing.T, r *rendering) {
	managerRules := namespacedRules(rulesOf(t, readObject(t, filepath.Join(repoRoot, "config", "rbac", "role.yaml"))))
	if r.find("ClusterRole", "", "tokens-opsnow-token-operator-manager-role") != nil {
		t.Errorf("%s: a manager ClusterRole despite watchNamespaces", r.source)
	}
	if got := watchNamespaces(t, r); !slices.Equal(got, []string{"team-a", "team-b"}) {
		t.Errorf("%s: --watch-namespaces %v, want [team-a team-b]", r.source, got)
	}
	for _, ns := range []string{"team-a", "team-b"} {
		role := r.find("Role", ns, "tokens-opsnow-token-operator-manager-role")
		if role == nil {
			t.Errorf("%s: no manager Role in %s", r.source, ns)
			continue
		}
		if got := rulesOf(t, role); !reflect.DeepEqual(got, managerRules) {
			t.Errorf("%s: rules of %s:\n%s\nwant the namespaced ones of config/rbac/role.yaml:\n%s", r.source, describe(role), toYAML(got), toYAML(managerRules))
		}
		if r.find("RoleBinding", ns, "tokens-opsnow-token-operator-manager-rolebinding") == nil {
			t.Errorf("%s: no manager RoleBinding in %s", r.source, ns)
		}
	}
	r.one(t, "ServiceMonitor")
	if ns, sa := guardServiceAccount(t, r.one(t, "ValidatingAdmissionPolicy")); ns != "opsnow-all" || sa != "tokens-opsnow-token-operator-controller-manager" {
		t.Errorf("%s: the admission guard matches ServiceAccount %s/%s, want the release's", r.source, ns, sa)
	}
	rule := r.one(t, "PrometheusRule")
	if !strings.Contains(toYAML(rule.Object["spec"]), "< 300 > 0") {
		t.Errorf("%s: OpsnowTokenExpiringSoon ignores prometheusRule.expiringSoonSeconds: 300", r.source)
	}
	dep := toDeployment(t, r.one(t, "Deployment"))
	if got := ptr.Deref(dep.Spec.Replicas, 0); got != 2 {
		t.Errorf("%s: replicas %d, want 2", r.source, got)
	}
	args := dep.Spec.Template.Spec.Containers[0].Args
	for _, want := range []string{
		"--allowed-endpoints=https://opsnow.internal.example.com,http://opsnow-mock.opsnow-system.svc:8080",
		"--default-endpoint=https://api.opsnow360.io",
		"--token-request-rate=5.5",
		"--max-concurrent-reconciles=10",
		"--zap-log-level=debug",
		"--exchange-timeout=20s",
		"--enable-cluster-tokens=false",
	} {
		if !slices.Contains(args, want) {
			t.Errorf("%s: manager args %q lack %s", r.source, args, want)
		}
	}
}

func checkChartMinimal(t *testing.T, r *rendering) {
	for _, kind := range []string{"Service", "ServiceMonitor", "PrometheusRule", "Role", "RoleBinding",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		for _, o := range r.all(kind) {
			t.Errorf("%s: unexpected %s", r.source, describe(o))
		}
	}
	for _, o := range r.all("ClusterRole") {
		if !strings.HasSuffix(o.GetName(), "-manager-role") {
			t.Errorf("%s: unexpected %s", r.source, describe(o))
		}
	}
	args := toDeployment(t, r.one(t, "Deployment")).Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "--metrics-bind-address=0") || slices.Contains(args, "--leader-elect") {
		t.Errorf("%s: manager args %q, want --metrics-bind-address=0 and no --leader-elect", r.source, args)
	}
}

func checkChartHTTPMetrics(t *testing.T, r *rendering) {
	for _, o := range r.all("ClusterRole") {
		if strings.Contains(o.GetName(), "-metrics-") {
			t.Errorf("%s: %s without HTTPS metrics", r.source, describe(o))
		}
	}
	args := toDeployment(t, r.one(t, "Deployment")).Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "--metrics-secure=false") {
		t.Errorf("%s: manager args %q lack --metrics-secure=false", r.source, args)
	}
	scheme, _, _ := unstructured.NestedSlice(r.one(t, "ServiceMonitor").Object, "spec", "endpoints")
	if len(scheme) != 1 || scheme[0].(map[string]any)["scheme"] != "http" {
		t.Errorf("%s: ServiceMonitor endpoints %v, want one with scheme http", r.source, scheme)
	}
}

// The chart installs what config/default installs, with the same names when
// the release is called opsnow-token-operator: the same roles with the same
// rules, the same bindings, and a manager pod hardened the same way.
func TestHelmChartMirrorsKustomize(t *testing.T) {
	requireCluster(t)
	k := kustomizeBuild(t, filepath.Join(repoRoot, "config", "default"))
	h := helmTemplate(t, "opsnow-token-operator", "opsnow-system")

	for _, kind := range []string{"ClusterRole", "Role"} {
		for _, want := range k.all(kind) {
			got := h.find(kind, namespaceIn(want, "opsnow-system"), want.GetName())
			if got == nil {
				t.Errorf("chart: no %s %s, which config/default installs", kind, want.GetName())
				continue
			}
			if g, w := rulesOf(t, got), rulesOf(t, want); !reflect.DeepEqual(g, w) {
				t.Errorf("chart: rules of %s:\n%s\nwant those of config/default:\n%s", describe(got), toYAML(g), toYAML(w))
			}
		}
		for _, extra := range h.all(kind) {
			if k.find(kind, namespaceIn(extra, "opsnow-token-operator-system"), extra.GetName()) == nil {
				t.Errorf("chart: %s is not in config/default", describe(extra))
			}
		}
	}
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, want := range k.all(kind) {
			got := h.find(kind, namespaceIn(want, "opsnow-system"), want.GetName())
			if got == nil {
				t.Errorf("chart: no %s %s, which config/default installs", kind, want.GetName())
				continue
			}
			if g, w := bindingOf(got), bindingOf(want); g != w {
				t.Errorf("chart: %s binds %s, want %s", describe(got), g, w)
			}
		}
	}

	// The same admission guard: the same policy and binding, but for the
	// namespace of the manager's ServiceAccount.
	for _, kind := range []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		want := k.one(t, kind)
		got := h.find(kind, "", want.GetName())
		if got == nil {
			t.Errorf("chart: no %s %s, which config/default installs", kind, want.GetName())
			continue
		}
		w := strings.ReplaceAll(toYAML(want.Object["spec"]), "'opsnow-token-operator-system'", "'opsnow-system'")
		if g := toYAML(got.Object["spec"]); g != w {
			t.Errorf("chart: spec of %s:\n%s\nwant that of config/default (namespace opsnow-system):\n%s", describe(got), g, w)
		}
	}

	ks := k.one(t, "ServiceAccount")
	hs := h.one(t, "ServiceAccount")
	if g, w := hs.Object["automountServiceAccountToken"], ks.Object["automountServiceAccountToken"]; g != w {
		t.Errorf("chart: ServiceAccount automountServiceAccountToken %v, want %v", g, w)
	}

	kd := toDeployment(t, k.one(t, "Deployment"))
	hd := toDeployment(t, h.one(t, "Deployment"))
	kp, hp := kd.Spec.Template.Spec, hd.Spec.Template.Spec
	samePod := []struct {
		field     string
		got, want any
	}{
		{"securityContext", hp.SecurityContext, kp.SecurityContext},
		{"automountServiceAccountToken", hp.AutomountServiceAccountToken, kp.AutomountServiceAccountToken},
		{"enableServiceLinks", hp.EnableServiceLinks, kp.EnableServiceLinks},
		{"dnsPolicy", hp.DNSPolicy, kp.DNSPolicy},
		{"dnsConfig", hp.DNSConfig, kp.DNSConfig},
		{"hostNetwork", hp.HostNetwork, kp.HostNetwork},
		{"terminationGracePeriodSeconds", hp.TerminationGracePeriodSeconds, kp.TerminationGracePeriodSeconds},
		{"volumes", len(hp.Volumes), len(kp.Volumes)},
		{"containers", len(hp.Containers), len(kp.Containers)},
	}
	for _, f := range samePod {
		if !reflect.DeepEqual(f.got, f.want) {
			t.Errorf("chart: pod %s:\n%s\nwant that of config/manager/manager.yaml:\n%s", f.field, toYAML(f.got), toYAML(f.want))
		}
	}
	if t.Failed() || len(kp.Containers) != 1 {
		return
	}
	kc, hc := kp.Containers[0], hp.Containers[0]
	sameContainer := []struct {
		field     string
		got, want any
	}{
		{"name", hc.Name, kc.Name},
		{"command", hc.Command, kc.Command},
		{"securityContext", hc.SecurityContext, kc.SecurityContext},
		{"resources", hc.Resources, kc.Resources},
		{"livenessProbe", hc.LivenessProbe, kc.LivenessProbe},
		{"readinessProbe", hc.ReadinessProbe, kc.ReadinessProbe},
		{"ports", sortedPorts(hc.Ports), sortedPorts(kc.Ports)},
	}
	for _, f := range sameContainer {
		if !reflect.DeepEqual(f.got, f.want) {
			t.Errorf("chart: manager container %s:\n%s\nwant that of config/manager/manager.yaml:\n%s", f.field, toYAML(f.got), toYAML(f.want))
		}
	}
	for _, arg := range kc.Args {
		if !slices.Contains(hc.Args, arg) {
			t.Errorf("chart: manager args %q lack %s, which config/default passes", hc.Args, arg)
		}
	}

	ksvc, hsvc := k.one(t, "Service"), h.one(t, "Service")
	kports, _, _ := unstructured.NestedSlice(ksvc.Object, "spec", "ports")
	hports, _, _ := unstructured.NestedSlice(hsvc.Object, "spec", "ports")
	if len(kports) != len(hports) {
		t.Errorf("chart: metrics Service ports %v, want %v", hports, kports)
	} else {
		for i := range kports {
			kp, hp := kports[i].(map[string]any), hports[i].(map[string]any)
			if kp["name"] != hp["name"] || kp["port"] != hp["port"] {
				t.Errorf("chart: metrics Service port %v, want name and port of %v", hp, kp)
			}
		}
	}
}

// With prometheusRule and serviceMonitor on and their defaults, the chart
// renders the alerts and the scrape endpoint of config/prometheus.
func TestHelmMonitoringMirrorsKustomize(t *testing.T) {
	requireCluster(t)
	k := kustomizeBuild(t, filepath.Join(repoRoot, "config", "prometheus"))
	h := helmTemplate(t, "opsnow-token-operator", "opsnow-system",
		"--set", "prometheusRule.enabled=true", "--set", "serviceMonitor.enabled=true")

	kr, hr := k.one(t, "PrometheusRule"), h.one(t, "PrometheusRule")
	if g, w := hr.Object["spec"], kr.Object["spec"]; !reflect.DeepEqual(g, w) {
		t.Errorf("chart PrometheusRule spec:\n%s\nwant that of config/prometheus/prometheusrule.yaml:\n%s", toYAML(g), toYAML(w))
	}
	km, hm := k.one(t, "ServiceMonitor"), h.one(t, "ServiceMonitor")
	ke, _, _ := unstructured.NestedSlice(km.Object, "spec", "endpoints")
	he, _, _ := unstructured.NestedSlice(hm.Object, "spec", "endpoints")
	if !reflect.DeepEqual(he, ke) {
		t.Errorf("chart ServiceMonitor endpoints:\n%s\nwant those of config/prometheus/monitor.yaml:\n%s", toYAML(he), toYAML(ke))
	}
}

// helm lint --strict, with the default values and each values file of ci/.
func TestHelmLint(t *testing.T) {
	requireCluster(t)
	runTool(t, helmBin, "", "lint", "--strict", chartDir)
	files, _ := filepath.Glob(filepath.Join(chartDir, "ci", "*.yaml"))
	for _, f := range files {
		runTool(t, helmBin, "", "lint", "--strict", chartDir, "--values", f)
	}
}

// values.schema.json and the templates reject bad values at install time
// rather than rendering something that fails later, or silently ignoring them.
func TestHelmRejectsBadValues(t *testing.T) {
	requireCluster(t)
	for _, c := range []struct {
		set  []string
		want string
	}{
		{[]string{"metrics.prot=8443"}, "additional properties 'prot' not allowed"},
		{[]string{"watchNamespaces[0]=Team_A"}, "/watchNamespaces/0"},
		{[]string{"allowedEndpoints[0]=api.example.com"}, "/allowedEndpoints/0"},
		{[]string{"logFormat=text"}, "/logFormat"},
		{[]string{"maxConcurrentReconciles=0"}, "/maxConcurrentReconciles"},
		{[]string{"tokenRequestRate=-1"}, "/tokenRequestRate"},
		{[]string{"serviceMonitor.enabled=true", "metrics.enabled=false"}, "serviceMonitor.enabled needs metrics.enabled"},
		{[]string{"serviceAccount.create=false"}, "serviceAccount.name is required"},
		{[]string{"admissionGuard.enabled=yes"}, "/admissionGuard/enabled"},
		{[]string{"podDisruptionBudget.enabled=true"}, "podDisruptionBudget.enabled needs replicas >= 2"},
		{[]string{"leaderElection.retryPeriod=1"}, "/leaderElection/retryPeriod"},
	} {
		args := []string{"template", "x", chartDir}
		for _, s := range c.set {
			args = append(args, "--set", s)
		}
		_, err := tryTool(helmBin, "", args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("helm template --set %s: got error %v, want one containing %q", strings.Join(c.set, ","), err, c.want)
		}
	}
}

// The chart's NOTES.txt renders, with a quick start for a watched namespace.
func TestHelmNotes(t *testing.T) {
	requireCluster(t)
	out, err := tryTool(helmBin, "", "install", "tokens", chartDir, "--dry-run=client", "--namespace", "opsnow-all",
		"--kubeconfig", kubeconfigPath, "--values", filepath.Join(chartDir, "ci", "all-values.yaml"))
	if err != nil {
		t.Fatalf("helm install --dry-run: %v", err)
	}
	_, notes, ok := strings.Cut(string(out), "\nNOTES:\n")
	if !ok {
		t.Fatalf("helm install --dry-run printed no NOTES:\n%s", out)
	}
	for _, want := range []string{
		"watches namespaces team-a, team-b",
		"kubectl -n team-a wait --for=condition=Ready opsnowtoken/billing",
		"tokens-opsnow-token-operator-metrics-reader",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, notes)
		}
	}
}

// A control for checkRestrictedPods: the API server does enforce the profile.
func TestRestrictedProfileIsEnforced(t *testing.T) {
	requireCluster(t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "privileged-", Namespace: restrictedNamespace},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "c", Image: "busybox",
			SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
		}}},
	}
	err := k8s.Create(context.Background(), pod, client.DryRunAll)
	if !apierrors.IsForbidden(err) {
		t.Fatalf("dry-run create of a privileged pod in %s: got %v, want Forbidden by PodSecurity", restrictedNamespace, err)
	}
}

// The chart's copies of generated files are current: make helm-sync.
func TestChartCopiesAreCurrent(t *testing.T) {
	for _, c := range []struct{ chart, source string }{
		{"files/manager-role.yaml", "config/rbac/role.yaml"},
		{"files/leader-election-role.yaml", "config/rbac/leader_election_role.yaml"},
	} {
		sameFile(t, filepath.Join(chartDir, c.chart), filepath.Join(repoRoot, c.source))
	}
	bases, _ := filepath.Glob(filepath.Join(repoRoot, "config", "crd", "bases", "*.yaml"))
	crds, _ := filepath.Glob(filepath.Join(chartDir, "crds", "*.yaml"))
	if len(bases) == 0 {
		t.Fatal("no CRDs in config/crd/bases")
	}
	names := func(paths []string) []string {
		var out []string
		for _, p := range paths {
			out = append(out, filepath.Base(p))
		}
		return out
	}
	if !slices.Equal(names(crds), names(bases)) {
		t.Fatalf("chart crds/ holds %v, config/crd/bases %v: run make helm-sync", names(crds), names(bases))
	}
	for i := range bases {
		sameFile(t, crds[i], bases[i])
	}
}

func sameFile(t *testing.T, copyPath, sourcePath string) {
	t.Helper()
	got, err := os.ReadFile(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(sourcePath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s: run make helm-sync", relToRoot(copyPath), relToRoot(sourcePath))
	}
}

// readObject reads a single-object YAML file.
func readObject(t *testing.T, path string) *unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs := parseManifests(t, relToRoot(path), data)
	if len(objs) != 1 {
		t.Fatalf("%s: got %d objects, want 1", relToRoot(path), len(objs))
	}
	return objs[0]
}

// rulesOf returns the rules of a Role or ClusterRole.
func rulesOf(t *testing.T, o *unstructured.Unstructured) []any {
	t.Helper()
	rules, _, err := unstructured.NestedSlice(o.Object, "rules")
	if err != nil || len(rules) == 0 {
		t.Fatalf("%s: no rules (%v)", describe(o), err)
	}
	return rules
}

// The roles for people (config/rbac's OpsnowToken admin, editor and viewer
// roles, and any role aggregated into admin, edit or view) never grant
// ClusterOpsnowTokens: a namespace admin bound to them must not be able to
// write a token into other namespaces or read which ones get it.
func TestUserRolesNeverGrantClusterTokens(t *testing.T) {
	requireCluster(t)
	renders := []*rendering{
		kustomizeBuild(t, filepath.Join(repoRoot, "config", "default")),
		helmTemplate(t, "opsnow-token-operator", "opsnow-system"),
	}
	for _, r := range renders {
		userRoles := 0
		for _, cr := range r.all("ClusterRole") {
			aggregated := false
			for k := range cr.GetLabels() {
				aggregated = aggregated || strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-")
			}
			if !aggregated && !strings.Contains(cr.GetName(), "opsnowtoken-") {
				continue
			}
			userRoles++
			for _, rule := range rulesOf(t, cr) {
				rule, _ := rule.(map[string]any)
				groups, _ := rule["apiGroups"].([]any)
				resources, _ := rule["resources"].([]any)
				if !slices.Contains(groups, any("auth.opsnow.io")) && !slices.Contains(groups, any("*")) {
					continue
				}
				for _, res := range resources {
					if s, _ := res.(string); s == "*" || strings.HasPrefix(s, "clusteropsnowtokens") {
						t.Errorf("%s: %s grants %s to the people it is bound to", r.source, describe(cr), s)
					}
				}
			}
		}
		if userRoles < 3 {
			t.Errorf("%s: found %d user roles, want the OpsnowToken admin, editor and viewer roles", r.source, userRoles)
		}
	}
}

// clusterScopedResources are the resources of config/rbac/role.yaml that a
// Role cannot grant; a namespaced install runs without the controller that
// needs them.
var clusterScopedResources = []any{"namespaces", "clusteropsnowtokens", "clusteropsnowtokens/status"}

// namespacedRules are rules without the cluster-scoped resources, rules left
// with none dropped: what a namespaced install grants as Roles.
func namespacedRules(rules []any) []any {
	var out []any
	for _, r := range rules {
		rule, _ := r.(map[string]any)
		resources, _ := rule["resources"].([]any)
		var kept []any
		for _, res := range resources {
			if !slices.Contains(clusterScopedResources, res) {
				kept = append(kept, res)
			}
		}
		if len(kept) == 0 {
			continue
		}
		c := maps.Clone(rule)
		c["resources"] = kept
		out = append(out, c)
	}
	return out
}

// bindingOf summarises a binding as its role and subjects, namespaces aside.
func bindingOf(o *unstructured.Unstructured) string {
	kind, _, _ := unstructured.NestedString(o.Object, "roleRef", "kind")
	name, _, _ := unstructured.NestedString(o.Object, "roleRef", "name")
	var subjects []string
	list, _, _ := unstructured.NestedSlice(o.Object, "subjects")
	for _, s := range list {
		s, _ := s.(map[string]any)
		subjects = append(subjects, s["kind"].(string)+" "+s["name"].(string))
	}
	return kind + " " + name + " to " + strings.Join(subjects, ", ")
}

// namespaceIn is o's namespace replaced by ns, or "" for cluster objects.
func namespaceIn(o *unstructured.Unstructured, ns string) string {
	if o.GetNamespace() == "" {
		return ""
	}
	return ns
}

// watchNamespaces returns the manager's --watch-namespaces.
func watchNamespaces(t *testing.T, r *rendering) []string {
	t.Helper()
	for _, arg := range toDeployment(t, r.one(t, "Deployment")).Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(arg, "--watch-namespaces="); ok {
			return strings.Split(v, ",")
		}
	}
	return nil
}

func sortedPorts(ports []corev1.ContainerPort) []corev1.ContainerPort {
	out := slices.Clone(ports)
	slices.SortFunc(out, func(a, b corev1.ContainerPort) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func toYAML(v any) string {
	out, err := yaml.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(out)
}
