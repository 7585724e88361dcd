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
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// specMetrics are the metrics of the product contract (SPEC "Metrics").
var specMetrics = []string{
	"opsnow_token_refresh_total",
	"opsnow_token_expiry_timestamp_seconds",
	"opsnow_token_next_refresh_timestamp_seconds",
	"opsnow_token_exchange_duration_seconds",
}

var (
	// A metric is registered by its options' Name, or, for series a
	// collector builds at scrape time, by its prometheus.NewDesc.
	metricNameInCode = regexp.MustCompile(`(?:Name:\s*|NewDesc\(\s*)"(opsnow_[a-z0-9_]+)"`)
	metricNameInExpr = regexp.MustCompile(`opsnow_[a-z0-9_]+`)
)

// docs/metrics.md lists every metric the manager registers and every alert
// of config/prometheus with its expression; the contract's metrics exist and
// the alerts use only metrics that exist.
func TestDocsListMetricsAndAlerts(t *testing.T) {
	doc := readFile(t, filepath.Join(repoRoot, "docs", "metrics.md"))
	registered := registeredMetrics(t)

	for _, m := range specMetrics {
		if !slices.Contains(registered, m) {
			t.Errorf("metric %s of the SPEC is not registered in internal/ (found %v)", m, registered)
		}
	}
	for _, m := range registered {
		if !strings.Contains(doc, "`"+m+"`") {
			t.Errorf("docs/metrics.md does not list metric %s", m)
		}
	}

	rule := readObject(t, filepath.Join(repoRoot, "config", "prometheus", "prometheusrule.yaml"))
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	alerts := 0
	for _, g := range groups {
		rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, r := range rules {
			r := r.(map[string]any)
			name, _ := r["alert"].(string)
			expr, _ := r["expr"].(string)
			alerts++
			if !strings.Contains(doc, "`"+name+"`") {
				t.Errorf("docs/metrics.md does not list alert %s", name)
			}
			if !strings.Contains(doc, "`"+expr+"`") {
				t.Errorf("docs/metrics.md does not show the expression of alert %s: `%s`", name, expr)
			}
			for _, m := range metricNameInExpr.FindAllString(expr, -1) {
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					base = strings.TrimSuffix(base, suffix)
				}
				if !slices.Contains(registered, m) && !slices.Contains(registered, base) {
					t.Errorf("alert %s uses metric %s, which the manager does not register", name, m)
				}
			}
		}
	}
	for _, want := range []string{"OpsnowTokenExpiringSoon", "OpsnowTokenRefreshFailing", "OpsnowTokenExpired"} {
		if !strings.Contains(toYAML(groups), "alert: "+want+"\n") {
			t.Errorf("config/prometheus/prometheusrule.yaml has no alert %s", want)
		}
	}
	if alerts == 0 {
		t.Error("config/prometheus/prometheusrule.yaml has no alerts")
	}
}

// registeredMetrics returns the names of the opsnow_* metrics defined in the
// non-test Go files under internal/.
func registeredMetrics(t *testing.T) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(filepath.Join(repoRoot, "internal"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		for _, m := range metricNameInCode.FindAllStringSubmatch(readFile(t, path), -1) {
			names = append(names, m[1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal(`no metric definitions (Name: "opsnow_...") found under internal/`)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
