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
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

// lookupFunc is the token server's record of what it issued.
type lookupFunc func(token string) (tokenserver.Grant, bool)

// interval is a span during which one token was lapsed or not Ready.
type interval struct {
	Token  string    `json:"token"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Reason string    `json:"reason"`
	// Open is true when the span had not ended when the run stopped.
	Open bool `json:"open,omitempty"`
	// Fault is the fault in force when the span began, or "none".
	Fault string `json:"fault"`
}

func (i interval) length() time.Duration { return i.End.Sub(i.Start) }

// sample is one round of the detector.
type sample struct {
	At time.Time
	// Observed is false when the API server could not be read.
	Observed bool
	// Settled: every token Ready with no failure outstanding, and every
	// Secret holding a valid token of its own key.
	Settled bool
}

// tokenTrack is what the detector knows of one token.
type tokenTrack struct {
	keyDigest string
	everValid bool
	lastGood  time.Time
	lapse     *interval
	everReady bool
	notReady  *interval
}

// detector reads every target Secret and OpsnowToken once a second and
// checks each Secret's token against the token server's record: a lapse is
// a Secret that, after it first held a valid token, holds none, an
// expired one, or one the server never issued for that token's key.
type detector struct {
	k8s    client.Client
	ns     string
	lookup lookupFunc
	tokens map[string]*tokenTrack

	// served holds the sequence numbers of every token seen in a Secret.
	served   map[int64]bool
	samples  []sample
	lapses   []interval
	notReady []interval
}

func newDetector(c client.Client, ns string, lookup lookupFunc, keyDigests map[string]string) *detector {
	d := &detector{k8s: c, ns: ns, lookup: lookup, tokens: map[string]*tokenTrack{}, served: map[int64]bool{}}
	for name, digest := range keyDigests {
		d.tokens[name] = &tokenTrack{keyDigest: digest}
	}
	return d
}

// run samples every second until ctx ends, then closes the open spans.
func (d *detector) run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		d.sampleOnce(ctx)
		select {
		case <-ctx.Done():
			d.finish(time.Now())
			return
		case <-tick.C:
		}
	}
}

func (d *detector) sampleOnce(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
	defer cancel()
	var secrets corev1.SecretList
	var tokens authv1alpha1.OpsnowTokenList
	err := d.k8s.List(rctx, &secrets, client.InNamespace(d.ns),
		client.MatchingLabels{authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue})
	if err == nil {
		err = d.k8s.List(rctx, &tokens, client.InNamespace(d.ns))
	}
	now := time.Now()
	if err != nil {
		d.samples = append(d.samples, sample{At: now})
		return
	}
	d.observe(now, secrets.Items, tokens.Items)
}

// observe checks one reading of the Secrets and OpsnowTokens taken at now.
func (d *detector) observe(now time.Time, secrets []corev1.Secret, tokens []authv1alpha1.OpsnowToken) {
	byName := make(map[string]*corev1.Secret, len(secrets))
	for i := range secrets {
		byName[secrets[i].Name] = &secrets[i]
	}
	settled := true
	for name, t := range d.tokens {
		reason, start := "", now
		if s := byName[name]; s == nil {
			reason = "Secret missing"
		} else if g, ok := d.lookup(string(s.Data["token"])); !ok {
			reason = "a token the server never issued"
		} else if g.KeyDigest != t.keyDigest {
			reason = "a token issued for another API key"
		} else if !now.Before(g.ExpiresAt) {
			reason = "token expired"
			// It lapsed at its expiry, or when last seen valid if later
			// (an earlier valid token may have been replaced by it).
			start = g.ExpiresAt
			if t.lastGood.After(start) {
				start = t.lastGood
			}
		} else {
			d.served[g.Token] = true
		}
		switch {
		case reason == "":
			t.everValid, t.lastGood = true, now
			if t.lapse != nil {
				t.lapse.End = now
				d.lapses = append(d.lapses, *t.lapse)
				t.lapse = nil
			}
		case t.everValid && t.lapse == nil:
			t.lapse = &interval{Token: name, Start: start, Reason: reason}
		}
		if reason != "" {
			settled = false
		}
	}
	seen := map[string]bool{}
	for i := range tokens {
		tok := &tokens[i]
		t := d.tokens[targetName(tok)]
		if t == nil {
			continue
		}
		seen[targetName(tok)] = true
		ready := apimeta.FindStatusCondition(tok.Status.Conditions, authv1alpha1.ConditionReady)
		isReady := ready != nil && ready.Status == "True"
		if !isReady || tok.Status.FailedAttempts > 0 {
			settled = false
		}
		switch {
		case isReady:
			t.everReady = true
			if t.notReady != nil {
				t.notReady.End = now
				d.notReady = append(d.notReady, *t.notReady)
				t.notReady = nil
			}
		case t.everReady && t.notReady == nil:
			reason := "no Ready condition"
			if ready != nil {
				reason = ready.Reason
			}
			t.notReady = &interval{Token: tok.Name, Start: now, Reason: reason}
		}
	}
	if len(seen) < len(d.tokens) {
		settled = false
	}
	d.samples = append(d.samples, sample{At: now, Observed: true, Settled: settled})
}

// targetName is the Secret an OpsnowToken writes.
func targetName(t *authv1alpha1.OpsnowToken) string {
	if t.Spec.SecretName != "" {
		return t.Spec.SecretName
	}
	return t.Name
}

// finish closes the spans still open at the end of the run.
func (d *detector) finish(end time.Time) {
	for _, t := range d.tokens {
		if t.lapse != nil {
			t.lapse.End, t.lapse.Open = end, true
			d.lapses = append(d.lapses, *t.lapse)
			t.lapse = nil
		}
		if t.notReady != nil {
			t.notReady.End, t.notReady.Open = end, true
			d.notReady = append(d.notReady, *t.notReady)
			t.notReady = nil
		}
	}
}
