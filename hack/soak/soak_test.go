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
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func grant(seq int64, key string, issued, lifetime int) tokenserver.Grant {
	return tokenserver.Grant{Token: seq, KeyDigest: key, RequestedAt: at(issued), IssuedAt: at(issued), ExpiresAt: at(issued + lifetime)}
}

// slow makes g's answer come d seconds after its request.
func slow(g tokenserver.Grant, d int) tokenserver.Grant {
	g.IssuedAt = g.IssuedAt.Add(time.Duration(d) * time.Second)
	g.ExpiresAt = g.ExpiresAt.Add(time.Duration(d) * time.Second)
	return g
}

func TestExtraGrants(t *testing.T) {
	// Tokens live 120 s with a 40 s margin: due from 76 s (jitter 4 s, slack 1 s).
	for _, tc := range []struct {
		name   string
		grants []tokenserver.Grant
		served []int64
		want   []int64
	}{
		{"on schedule", []tokenserver.Grant{grant(1, "a", 0, 120), grant(2, "a", 78, 120), grant(3, "a", 156, 120)}, []int64{1, 2, 3}, nil},
		{"lost to a kill, then asked again", []tokenserver.Grant{grant(1, "a", 0, 120), grant(2, "a", 78, 120), grant(3, "a", 90, 120)}, []int64{1, 3}, []int64{2}},
		{"asked before due", []tokenserver.Grant{grant(1, "a", 0, 120), grant(2, "a", 30, 120)}, []int64{1, 2}, []int64{2}},
		{"the last one not seen yet", []tokenserver.Grant{grant(1, "a", 0, 120), grant(2, "a", 79, 120)}, []int64{1}, nil},
		{"after a slow answer, due earlier", []tokenserver.Grant{slow(grant(1, "a", 0, 120), 3), grant(2, "a", 76, 120)}, []int64{1, 2}, nil},
		{"keys apart", []tokenserver.Grant{grant(1, "a", 0, 120), grant(2, "b", 10, 120), grant(3, "a", 80, 120)}, []int64{1, 2, 3}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			served := map[int64]bool{}
			for _, s := range tc.served {
				served[s] = true
			}
			var got []int64
			for _, g := range extraGrants(tc.grants, served, 40*time.Second) {
				got = append(got, g.Token)
				if g.why == "" {
					t.Errorf("extra token %d without a reason", g.Token)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("extra tokens: got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestIdealRequests(t *testing.T) {
	grants := []tokenserver.Grant{grant(1, "a", 0, 120), grant(2, "b", 50, 120), grant(3, "a", 80, 120)}
	// a: 0, 80, 160, 240 by 300 s; b: 50, 130, 210, 290.
	if got := idealRequests(grants, at(300), 120*time.Second, 40*time.Second); got != 8 {
		t.Errorf("ideal: got %d, want 8", got)
	}
}

func TestFaultAt(t *testing.T) {
	kill := &fault{Kind: faultSIGKILL, Start: at(100), End: at(100), Takeover: 15 * time.Second}
	outage := &fault{Kind: faultOutage, Start: at(200), End: at(220)}
	faults := []*fault{kill, outage}
	for _, tc := range []struct {
		t    int
		want *fault
	}{{50, nil}, {99, kill}, {130, kill}, {136, nil}, {210, outage}, {239, outage}, {241, nil}} {
		if got := faultAt(faults, at(tc.t)); got != tc.want {
			t.Errorf("fault at %ds: got %s, want %s", tc.t, faultName(got), faultName(tc.want))
		}
	}
}

func TestPlan(t *testing.T) {
	faults := plan(defaultFaults, 7*time.Minute, rand.New(rand.NewPCG(1, 0))) //nolint:gosec // G404: a fixed schedule, no secret
	if len(faults) != len(defaultFaults) {
		t.Fatalf("got %d faults, want %d", len(faults), len(defaultFaults))
	}
	slot := 7 * time.Minute / time.Duration(len(defaultFaults))
	for i, f := range faults {
		if lo, hi := time.Duration(i)*slot, time.Duration(i)*slot+slot/5; f.Offset < lo || f.Offset > hi || f.Kind != defaultFaults[i] {
			t.Errorf("fault %d: %s at %s, want %s within [%s, %s]", i, f.Kind, f.Offset, defaultFaults[i], lo, hi)
		}
	}
	kills := 0
	for _, k := range defaultFaults {
		if k == faultSIGKILL || k == faultMidRefresh {
			kills++
		}
	}
	if kills < 3 || !slices.Contains(defaultFaults, faultSIGTERM) || !slices.Contains(defaultFaults, faultAPIServer) {
		t.Errorf("the default schedule %v lacks three leader kills, a SIGTERM or an API-server restart", defaultFaults)
	}
	for _, k := range []string{faultErrors, faultTimeout, faultLatency, faultThrottle, faultOutage} {
		if !slices.Contains(defaultFaults, k) {
			t.Errorf("the default schedule lacks the upstream fault %s", k)
		}
	}
}

func TestParseConfig(t *testing.T) {
	cfg, err := parseConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.duration != 7*time.Minute || cfg.n != 40 || !slices.Equal(cfg.faults, defaultFaults) || cfg.seed == 0 {
		t.Errorf("defaults: duration %s, n %d, faults %v, seed %d", cfg.duration, cfg.n, cfg.faults, cfg.seed)
	}
	// The outage must end before a token due when it began runs out of
	// retries: the default leaves the margin 20 s.
	if cfg.outage >= cfg.margin()-10*time.Second {
		t.Errorf("default outage %s leaves no room in the margin %s", cfg.outage, cfg.margin())
	}
	var help bytes.Buffer
	if _, err := parseConfig([]string{"-help"}, &help); !errors.Is(err, flag.ErrHelp) || !strings.Contains(help.String(), "-faults") {
		t.Errorf("-help: got %v and %q, want flag.ErrHelp and the flags", err, help.String())
	}
	for _, args := range [][]string{{"-faults", "nope"}, {"-n", "0"}, {"-lifetime", "5s"}, {"-duration", "30s"}, {"-refresh-before", "3m"}} {
		if _, err := parseConfig(args, io.Discard); err == nil {
			t.Errorf("parseConfig(%q): got no error", args)
		}
	}
}

func TestDetector(t *testing.T) {
	grants := map[string]tokenserver.Grant{
		"good":  grant(1, "key-a", 0, 120),
		"other": grant(2, "key-b", 0, 120),
		"next":  grant(3, "key-a", 100, 120),
	}
	lookup := func(tok string) (tokenserver.Grant, bool) { g, ok := grants[tok]; return g, ok }
	d := newDetector(nil, "ns", lookup, map[string]string{"a": "key-a"})
	secret := func(tok string) []corev1.Secret {
		return []corev1.Secret{{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Data: map[string][]byte{"token": []byte(tok)}}}
	}
	ready := []authv1alpha1.OpsnowToken{{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Status: authv1alpha1.OpsnowTokenStatus{
		Conditions: []metav1.Condition{{Type: authv1alpha1.ConditionReady, Status: metav1.ConditionTrue}}}}}
	notReady := []authv1alpha1.OpsnowToken{{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Status: authv1alpha1.OpsnowTokenStatus{
		Conditions: []metav1.Condition{{Type: authv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: "UpstreamUnavailable"}}}}}

	d.observe(at(0), nil, nil) // before the first token: not a lapse
	d.observe(at(10), secret("good"), ready)
	d.observe(at(110), secret("good"), notReady) // valid until 120
	d.observe(at(123), secret("good"), notReady) // expired at 120
	d.observe(at(124), secret("other"), notReady)
	d.observe(at(125), secret("next"), ready)
	d.observe(at(126), secret("forged"), ready)
	d.finish(at(130))

	want := []interval{
		{Token: "a", Start: at(120), End: at(125), Reason: "token expired"},
		{Token: "a", Start: at(126), End: at(130), Reason: "a token the server never issued", Open: true},
	}
	if len(d.lapses) != len(want) {
		t.Fatalf("lapses: got %+v, want %+v", d.lapses, want)
	}
	for i := range want {
		if d.lapses[i] != want[i] {
			t.Errorf("lapse %d: got %+v, want %+v", i, d.lapses[i], want[i])
		}
	}
	if len(d.notReady) != 1 || d.notReady[0].Start != at(110) || d.notReady[0].End != at(125) || d.notReady[0].Reason != "UpstreamUnavailable" {
		t.Errorf("Ready=False spans: got %+v, want one from 110 s to 125 s", d.notReady)
	}
	if !d.served[1] || !d.served[3] || d.served[2] {
		t.Errorf("served: got %v, want tokens 1 and 3 only", d.served)
	}
	settled := 0
	for _, s := range d.samples {
		if s.Settled {
			settled++
		}
	}
	if settled != 2 { // at 10 s and at 125 s
		t.Errorf("settled samples: got %d, want 2 (%+v)", settled, d.samples)
	}
}

// TestSoak is the two-minute soak of `make test`: two replicas, a leader
// killed right after a token answer, one killed at a random moment and one
// stopped, an upstream 5xx burst and outage, an API-server restart. The
// lease is shorter than the default (10 s) so that tokens living one minute
// (a 20 s margin) outlast a takeover.
func TestSoak(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: run `make test`, which provides kube-apiserver and etcd")
	}
	if testing.Short() {
		t.Skip("the soak takes about three minutes")
	}
	args := []string{
		"-duration", "2m", "-n", "20", "-lifetime", "60s",
		"-lease-duration", "10s", "-renew-deadline", "8s",
		"-upstream-fault", "6s", "-outage", "8s", "-apiserver-down", "3s",
		"-faults", strings.Join([]string{faultMidRefresh, faultErrors, faultSIGTERM, faultOutage, faultSIGKILL, faultAPIServer}, ","),
	}
	cfg, err := parseConfig(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.dir = t.TempDir()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	rep, err := run(ctx, cfg, &out)
	if rep != nil {
		rep.print(&out)
		_ = rep.writeJSON(filepath.Join(cfg.dir, "soak.json"))
	}
	t.Logf("soak %s:\n%s", strings.Join(args, " "), out.String())
	if err != nil {
		t.Fatalf("soak did not run: %v", err)
	}
	if !rep.Pass {
		t.Errorf("soak missed its targets: %s", strings.Join(rep.Failures, "; "))
	}
	if len(rep.Faults) != len(cfg.faults) {
		t.Errorf("got %d faults in the report, want %d", len(rep.Faults), len(cfg.faults))
	}
	if rep.Issued == 0 || rep.Requests < rep.Issued {
		t.Errorf("token requests %d, issued %d: the soak saw no refreshes", rep.Requests, rep.Issued)
	}
}
