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

package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"
)

func TestParseMetrics(t *testing.T) {
	text := `# HELP apiserver_request_total Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",group="",resource="secrets",scope="resource",subresource="",verb="POST",version="v1"} 1002
apiserver_request_total{code="200",component="apiserver",group="auth.opsnow.io",resource="opsnowtokens",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 998
apiserver_request_total{code="409",component="apiserver",group="auth.opsnow.io",resource="opsnowtokens",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 2
apiserver_request_total{code="200",component="apiserver",group="",resource="secrets",scope="resource",subresource="",verb="GET",version="v1"} 5000
apiserver_request_total{code="201",component="apiserver",group="events.k8s.io",resource="events",scope="resource",subresource="",verb="POST",version="v1"} 1e3
odd_label{msg="a \"quoted\", comma\\ and } brace"} 7
go_memstats_heap_alloc_bytes 1.2345e+07
not a sample
`
	samples := parseMetrics([]byte(text))
	if got := sum(samples, "go_memstats_heap_alloc_bytes", nil); got != 12345000 {
		t.Errorf("heap: got %g, want 12345000", got)
	}
	odd := sum(samples, "odd_label", func(l map[string]string) bool { return l["msg"] == `a "quoted", comma\ and } brace` })
	if odd != 7 {
		t.Errorf("escaped label value: got %g, want 7", odd)
	}
	w := apiWrites(samples)
	want := map[string]float64{"secrets": 1002, "opsnowtokens/status": 1000, "events": 1000, secretReads: 5000}
	for k, v := range want {
		if w[k] != v {
			t.Errorf("writes of %s: got %g, want %g (all: %v)", k, w[k], v, w)
		}
	}
	if len(w) != len(want) {
		t.Errorf("writes: got %v, want %v", w, want)
	}
}

func TestManagerWrites(t *testing.T) {
	before := writes{all: map[string]float64{"secrets": 10, "events": 3}, own: map[string]float64{"secrets": 4}}
	after := writes{
		all: map[string]float64{"secrets": 2010, "opsnowtokens": 1000, "opsnowtokens/status": 1000, "events": 1003},
		own: map[string]float64{"secrets": 1004, "opsnowtokens": 1000},
	}
	got := managerWrites(before, after)
	want := map[string]float64{"secrets": 1000, "opsnowtokens": 0, "opsnowtokens/status": 1000, "events": 1000}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %g, want %g", k, got[k], v)
		}
	}
	if total := totalWrites(got); total != 3000 {
		t.Errorf("total: got %g, want 3000", total)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		if got := percentile(slices.Clone(ds), tt.q); got != tt.want {
			t.Errorf("percentile(%g): got %s, want %s", tt.q, got, tt.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of nothing: got %s, want 0", got)
	}
}

func TestMeterPeak(t *testing.T) {
	var now time.Time
	m := newMeter(http.NotFoundHandler())
	m.now = func() time.Time { return now }
	// The first request falls out of the window at 1 s; the last four are
	// within 0.7 s.
	for _, at := range []time.Duration{0, 400 * time.Millisecond, 900 * time.Millisecond, 1000 * time.Millisecond, 1100 * time.Millisecond} {
		now = time.Unix(0, 0).Add(at)
		req := httptest.NewRequest(http.MethodPost, "/platform/v2/identity/api-keys/token", nil)
		m.ServeHTTP(httptest.NewRecorder(), req)
	}
	m.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/stats", nil))
	if requests, peak := m.read(); requests != 5 || peak != 4 {
		t.Errorf("got %d requests, peak %d; want 5, 4", requests, peak)
	}
	m.reset()
	if requests, peak := m.read(); requests != 0 || peak != 0 {
		t.Errorf("after reset: got %d requests, peak %d; want 0, 0", requests, peak)
	}
}

func TestParseConfig(t *testing.T) {
	cfg, err := parseConfig([]string{"-scenarios", "outage,burst", "-unrelated-size", "16Ki"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{scenarioBurstLimited, scenarioBurstUnlimited, scenarioOutage}
	if !slices.Equal(cfg.scenarios, want) {
		t.Errorf("scenarios: got %v, want %v (running order)", cfg.scenarios, want)
	}
	if cfg.unrelatedSize != 16384 || cfg.n != 1000 || cfg.rate != 20 || cfg.outage != 5*time.Minute {
		t.Errorf("got size %d, n %d, rate %g, outage %s; want 16384, 1000, 20, 5m", cfg.unrelatedSize, cfg.n, cfg.rate, cfg.outage)
	}
	for _, args := range [][]string{{"-scenarios", "nope"}, {"-n", "0"}, {"-unrelated-size", "2Mi"}, {"-outage-lifetime", "1s"}} {
		if _, err := parseConfig(args, io.Discard); err == nil {
			t.Errorf("parseConfig(%q): got no error", args)
		}
	}
}
