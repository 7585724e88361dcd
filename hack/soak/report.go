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
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

// afterFault is how long after a fault ends its effects are still put down
// to it: extra token requests, lapses and Ready=False spans.
const afterFault = 20 * time.Second

// report is the outcome of a soak run; it is also written as JSON.
type report struct {
	Command   string    `json:"command"`
	Seed      uint64    `json:"seed"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	Tokens    int       `json:"tokens"`
	Lifetime  string    `json:"tokenLifetime"`
	Margin    string    `json:"refreshMargin"`
	LeaseArgs string    `json:"leaseSettings"`

	Faults []faultResult `json:"faults"`

	Lapses            []interval `json:"lapses"`
	LongestLapse      float64    `json:"longestLapseSeconds"`
	NotReady          []interval `json:"readyFalse"`
	LongestNotReady   float64    `json:"longestReadyFalseSeconds"`
	UnobservedSeconds float64    `json:"unobservedSeconds"`

	Requests       int          `json:"tokenRequests"`
	Issued         int          `json:"tokensIssued"`
	Ideal          int          `json:"idealTokenRequests"`
	Extra          int          `json:"extraTokens"`
	ExtraTokens    []extraToken `json:"extraTokenList"`
	ExtraNoFault   int          `json:"extraTokensOutsideFaults"`
	ReplicaRestart int          `json:"unplannedReplicaRestarts"`

	// Warnings are what weakens the run's evidence without missing a
	// target, such as an upstream fault no token request ran into.
	Warnings []string `json:"warnings"`
	Failures []string `json:"failures"`
	Pass     bool     `json:"pass"`
}

// faultResult is one fault's row of the report.
type faultResult struct {
	fault
	AtSeconds       float64 `json:"atSeconds"`
	ActiveSeconds   float64 `json:"activeSeconds"`
	TakeoverSeconds float64 `json:"takeoverSeconds,omitempty"`
	// RecoverySeconds is from the end of the fault until every token was
	// Ready with no failure outstanding and every Secret valid (for a leader
	// kill, at least the takeover); -1 if that never happened.
	RecoverySeconds float64 `json:"recoverySeconds"`
	// ExtraTokens are tokens issued because of the fault: handed out but
	// never written (the leader died first), or asked for before due.
	// Requests and Failed count the token requests that arrived while the
	// fault was in force, and those of them that got no token.
	Requests         int `json:"tokenRequests"`
	Failed           int `json:"failedTokenRequests"`
	ExtraTokens      int `json:"extraTokens"`
	MaxExtraPerToken int `json:"maxExtraPerToken"`
	Lapses           int `json:"lapses"`
	ReadyFalse       int `json:"readyFalse"`
}

// analysis is the input of the report: what the run recorded.
type analysis struct {
	cfg      config
	start    time.Time
	end      time.Time
	faults   []*fault
	grants   []tokenserver.Grant
	requests []request
	served   map[int64]bool
	samples  []sample
	lapses   []interval
	notReady []interval
	tokens   int
	// names maps a key digest to its OpsnowToken.
	names map[string]string
}

// margin is the refresh margin the tokens run with: spec.refreshBefore, or
// the operator's default of a third of the lifetime.
func (c config) margin() time.Duration {
	if c.refreshBefore > 0 {
		return c.refreshBefore
	}
	return c.lifetime / 3
}

// extraGrants returns the tokens issued that the ideal operator would not
// have asked for: one handed out but never seen in its Secret while a later
// one was, or one asked for before the token it replaced was due. Due is
// the expiry as the operator sees it (counted from its request, so earlier
// by the upstream's latency) less the margin and the operator's largest
// jitter, a tenth of the margin, with a second of slack for rounding.
func extraGrants(grants []tokenserver.Grant, served map[int64]bool, margin time.Duration) []extraGrant {
	byKey := map[string][]tokenserver.Grant{}
	for _, g := range grants {
		byKey[g.KeyDigest] = append(byKey[g.KeyDigest], g)
	}
	var extra []extraGrant
	for _, gs := range byKey {
		sort.Slice(gs, func(i, j int) bool { return gs[i].IssuedAt.Before(gs[j].IssuedAt) })
		var lastServed *tokenserver.Grant
		for i := range gs {
			g := gs[i]
			switch {
			case !served[g.Token] && i < len(gs)-1:
				extra = append(extra, extraGrant{g, "never written"})
			case lastServed != nil && g.RequestedAt.Before(due(*lastServed, margin)):
				extra = append(extra, extraGrant{g, "asked for before due"})
			}
			if served[g.Token] {
				lastServed = &gs[i]
			}
		}
	}
	return extra
}

// extraGrant is a token the ideal operator would not have asked for, and why.
type extraGrant struct {
	tokenserver.Grant
	why string
}

// extraToken is an extra token in the report.
type extraToken struct {
	Token     string  `json:"token"`
	AtSeconds float64 `json:"atSeconds"`
	Why       string  `json:"why"`
	Fault     string  `json:"fault"`
}

// due is when the operator should refresh the token of g, at the earliest.
func due(g tokenserver.Grant, margin time.Duration) time.Time {
	seen := g.ExpiresAt.Add(-g.IssuedAt.Sub(g.RequestedAt))
	return seen.Add(-margin - margin/10 - time.Second)
}

// idealRequests is how many tokens an operator with no faults would ask
// for: each token's first, then one per (lifetime - margin) until the end.
func idealRequests(grants []tokenserver.Grant, end time.Time, lifetime, margin time.Duration) int {
	first := map[string]time.Time{}
	for _, g := range grants {
		if t, ok := first[g.KeyDigest]; !ok || g.IssuedAt.Before(t) {
			first[g.KeyDigest] = g.IssuedAt
		}
	}
	n := 0
	for _, t := range first {
		n += 1 + int(end.Sub(t)/(lifetime-margin))
	}
	return n
}

// faultAt returns the fault in force at t: the last one that started at or
// before t and ended no more than afterFault (plus its takeover) before it.
func faultAt(faults []*fault, t time.Time) *fault {
	var found *fault
	for _, f := range faults {
		if f.Start.IsZero() || t.Before(f.Start.Add(-time.Second)) {
			continue
		}
		if t.After(f.End.Add(f.Takeover + afterFault)) {
			continue
		}
		found = f
	}
	return found
}

func faultName(f *fault) string {
	if f == nil {
		return "none"
	}
	return f.Kind
}

// recovery returns how long after from the samples first show the whole
// set settled, or -1.
func recovery(samples []sample, from time.Time) time.Duration {
	for _, s := range samples {
		if s.Observed && s.Settled && !s.At.Before(from) {
			return s.At.Sub(from)
		}
	}
	return -1
}

func (a *analysis) report() *report {
	margin := a.cfg.margin()
	r := &report{
		Command: a.cfg.command, Seed: a.cfg.seed, Start: a.start, End: a.end, Tokens: a.tokens,
		Lifetime: a.cfg.lifetime.String(), Margin: margin.String(),
		LeaseArgs: fmt.Sprintf("lease %s, renew deadline %s, retry period %s", a.cfg.leaseDuration, a.cfg.renewDeadline, a.cfg.retryPeriod),
	}
	for _, q := range a.requests {
		if !q.At.Before(a.start) {
			r.Requests++
		}
	}
	var soakGrants []tokenserver.Grant
	for _, g := range a.grants {
		if !g.IssuedAt.Before(a.start) {
			soakGrants = append(soakGrants, g)
		}
	}
	r.Issued = len(soakGrants)
	// The ideal counts from the tokens' first issue, minus those first ones.
	r.Ideal = idealRequests(a.grants, a.end, a.cfg.lifetime, margin) - idealRequests(a.grants, a.start, a.cfg.lifetime, margin)

	extraBy := map[*fault]map[string]int{}
	for _, g := range extraGrants(a.grants, a.served, margin) {
		if g.IssuedAt.Before(a.start) {
			continue
		}
		r.Extra++
		f := faultAt(a.faults, g.IssuedAt)
		r.ExtraTokens = append(r.ExtraTokens, extraToken{Token: a.names[g.KeyDigest],
			AtSeconds: g.RequestedAt.Sub(a.start).Seconds(), Why: g.why, Fault: faultName(f)})
		if f == nil {
			r.ExtraNoFault++
			continue
		}
		if extraBy[f] == nil {
			extraBy[f] = map[string]int{}
		}
		extraBy[f][g.KeyDigest]++
	}
	for i := range a.lapses {
		a.lapses[i].Fault = faultName(faultAt(a.faults, a.lapses[i].Start))
		r.LongestLapse = max(r.LongestLapse, a.lapses[i].length().Seconds())
	}
	for i := range a.notReady {
		a.notReady[i].Fault = faultName(faultAt(a.faults, a.notReady[i].Start))
		r.LongestNotReady = max(r.LongestNotReady, a.notReady[i].length().Seconds())
	}
	r.Lapses, r.NotReady, r.ExtraTokens = nonNil(a.lapses), nonNil(a.notReady), nonNil(r.ExtraTokens)
	var last time.Time
	for _, s := range a.samples {
		if !s.Observed && !last.IsZero() {
			r.UnobservedSeconds += s.At.Sub(last).Seconds()
		}
		last = s.At
	}

	for _, f := range a.faults {
		fr := faultResult{fault: *f}
		if f.Start.IsZero() {
			r.Failures = append(r.Failures, fmt.Sprintf("%s at %s did not run", f.Kind, f.Offset))
			r.Faults = append(r.Faults, fr)
			continue
		}
		fr.AtSeconds = f.Start.Sub(a.start).Seconds()
		fr.ActiveSeconds = f.End.Sub(f.Start).Seconds()
		fr.TakeoverSeconds = f.Takeover.Seconds()
		rec := recovery(a.samples, f.End)
		if rec >= 0 && isFailover(f.Kind) {
			rec = max(rec, f.Takeover)
		}
		fr.RecoverySeconds = rec.Seconds()
		if rec < 0 {
			fr.RecoverySeconds = -1
		}
		for _, q := range a.requests {
			if !q.At.Before(f.Start) && !q.At.After(f.End) {
				fr.Requests++
				if q.Status != 200 {
					fr.Failed++
				}
			}
		}
		for _, n := range extraBy[f] {
			fr.ExtraTokens += n
			fr.MaxExtraPerToken = max(fr.MaxExtraPerToken, n)
		}
		for _, l := range a.lapses {
			if faultAt(a.faults, l.Start) == f {
				fr.Lapses++
			}
		}
		for _, l := range a.notReady {
			if faultAt(a.faults, l.Start) == f {
				fr.ReadyFalse++
			}
		}
		if f.Error != "" {
			r.Failures = append(r.Failures, fmt.Sprintf("%s at %.0fs: %s", f.Kind, fr.AtSeconds, f.Error))
		}
		if isUpstream(f.Kind) && fr.Requests == 0 {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s at %.0fs: no token request came while it lasted", f.Kind, fr.AtSeconds))
		}
		if isFailover(f.Kind) {
			if fr.MaxExtraPerToken > 1 {
				r.Failures = append(r.Failures, fmt.Sprintf("%s at %.0fs: %d extra token requests for one token, want at most 1",
					f.Kind, fr.AtSeconds, fr.MaxExtraPerToken))
			}
			limit := a.cfg.leaseDuration + 3*time.Second
			if f.Kind == faultSIGTERM {
				limit = 3 * time.Second
			}
			if f.Error == "" && f.Takeover > limit {
				r.Failures = append(r.Failures, fmt.Sprintf("%s at %.0fs: takeover took %.1fs, want at most %s",
					f.Kind, fr.AtSeconds, fr.TakeoverSeconds, limit))
			}
		}
		r.Faults = append(r.Faults, fr)
	}
	if len(a.lapses) > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d lapses, the longest %.1fs", len(a.lapses), r.LongestLapse))
	}
	r.Failures, r.Warnings = nonNil(r.Failures), nonNil(r.Warnings)
	r.Pass = len(r.Failures) == 0
	return r
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// print writes the report as tables.
func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\nSoak: %d tokens living %s (refresh margin %s), %s; %s\n",
		r.Tokens, r.Lifetime, r.Margin, r.End.Sub(r.Start).Round(time.Second), r.LeaseArgs)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "at\tfault\tactive\trequests (failed)\ttakeover\trecovery\textra tokens (max/token)\tlapses\tReady=False\tdetail")
	for _, f := range r.Faults {
		takeover := "-"
		if isFailover(f.Kind) {
			takeover = fmt.Sprintf("%.1fs", f.TakeoverSeconds)
		}
		recov := fmt.Sprintf("%.0fs", f.RecoverySeconds)
		if f.RecoverySeconds < 0 {
			recov = "never"
		}
		detail := f.Detail
		if f.Error != "" {
			detail += " ERROR: " + f.Error
		}
		fmt.Fprintf(tw, "%.0fs\t%s\t%.1fs\t%d (%d)\t%s\t%s\t%d (%d)\t%d\t%d\t%s\n", f.AtSeconds, f.Kind, f.ActiveSeconds,
			f.Requests, f.Failed, takeover, recov, f.ExtraTokens, f.MaxExtraPerToken, f.Lapses, f.ReadyFalse, detail)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nlapses: %d (longest %.1fs)   longest Ready=False: %.1fs   API server unreadable: %.0fs\n",
		len(r.Lapses), r.LongestLapse, r.LongestNotReady, r.UnobservedSeconds)
	fmt.Fprintf(w, "token requests: %d (%d tokens issued) against an ideal of %d; extra tokens %d (%d outside any fault); unplanned replica restarts: %d\n",
		r.Requests, r.Issued, r.Ideal, r.Extra, r.ExtraNoFault, r.ReplicaRestart)
	for _, l := range r.Lapses {
		fmt.Fprintf(w, "  lapse: %s %.1fs from %s (%s) during %s\n", l.Token, l.length().Seconds(),
			l.Start.Sub(r.Start).Round(time.Second), l.Reason, l.Fault)
	}
	for _, warning := range r.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warning)
	}
	if r.Pass {
		fmt.Fprintln(w, "PASS: no lapse, at most one extra token request per token per failover, takeovers within target")
	} else {
		fmt.Fprintf(w, "FAIL:\n  %s\n", strings.Join(r.Failures, "\n  "))
	}
}

func (r *report) writeJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644) //nolint:gosec // G703: the report goes where the developer's -json says
}
