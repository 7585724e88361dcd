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

package controller

import (
	"fmt"
	"testing"
	"time"
)

// t0 is a fixed, whole-second time the pure tests count from.
var t0 = time.Date(2026, 11, 27, 13, 0, 0, 0, time.UTC)

func TestRefreshTime(t *testing.T) {
	tests := []struct {
		name          string
		issuedAt      time.Time
		lifetime      time.Duration
		refreshBefore time.Duration
		// The refresh lands in [earliest, latest] after issuedAt.
		earliest, latest time.Duration
		ignored          bool
	}{
		{
			name: "default two thirds of the lifetime", issuedAt: t0, lifetime: time.Hour,
			// 40 min, minus a jitter under a tenth of 20 min.
			earliest: 38 * time.Minute, latest: 40 * time.Minute,
		},
		{
			name: "refreshBefore honoured", issuedAt: t0, lifetime: time.Hour, refreshBefore: 10 * time.Minute,
			earliest: 49 * time.Minute, latest: 50 * time.Minute,
		},
		{
			name: "refreshBefore equal to the lifetime falls back", issuedAt: t0, lifetime: time.Hour, refreshBefore: time.Hour,
			earliest: 38 * time.Minute, latest: 40 * time.Minute, ignored: true,
		},
		{
			name: "refreshBefore longer than the lifetime falls back", issuedAt: t0, lifetime: time.Hour, refreshBefore: 2 * time.Hour,
			earliest: 38 * time.Minute, latest: 40 * time.Minute, ignored: true,
		},
		{
			name: "refreshBefore just under the lifetime is floored at a tenth", issuedAt: t0, lifetime: time.Hour, refreshBefore: 59 * time.Minute,
			earliest: 6 * time.Minute, latest: 6 * time.Minute,
		},
		{
			name: "jitter of a long lifetime is at most 5 min", issuedAt: t0, lifetime: 30 * 24 * time.Hour,
			earliest: 20*24*time.Hour - 5*time.Minute, latest: 20 * 24 * time.Hour,
		},
		{
			name: "sub-second issue time truncated", issuedAt: t0.Add(700 * time.Millisecond), lifetime: time.Hour,
			earliest: 38*time.Minute - time.Second, latest: 40 * time.Minute,
		},
		{
			name: "zero lifetime refreshes at once", issuedAt: t0, lifetime: 0,
		},
		{
			name: "negative lifetime refreshes at once", issuedAt: t0, lifetime: -time.Hour,
		},
		{
			name: "zero lifetime with sub-second issue time is not later than issuedAt", issuedAt: t0.Add(500 * time.Millisecond), lifetime: 0,
			earliest: -time.Second, latest: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 50 {
				seed := fmt.Sprintf("uid-%d", i)
				s := refreshTime(tt.issuedAt, tt.issuedAt.Add(tt.lifetime), tt.refreshBefore, seed)
				offset := s.RefreshAt.Sub(tt.issuedAt)
				if offset < tt.earliest || offset > tt.latest {
					t.Fatalf("seed %s: refresh %s after issue, want within [%s, %s]", seed, offset, tt.earliest, tt.latest)
				}
				if !s.RefreshAt.Equal(s.RefreshAt.Truncate(time.Second)) {
					t.Errorf("seed %s: refresh time %v not truncated to the second", seed, s.RefreshAt)
				}
				if s.RefreshBeforeIgnored != tt.ignored {
					t.Errorf("seed %s: RefreshBeforeIgnored: got %t, want %t", seed, s.RefreshBeforeIgnored, tt.ignored)
				}
			}
		})
	}
}

// The jitter is stable for a token (the same refresh time on every
// reconcile, so status is not rewritten) and spreads tokens created together.
func TestRefreshTimeJitter(t *testing.T) {
	expiresAt := t0.Add(time.Hour)
	if a, b := refreshTime(t0, expiresAt, 0, "same"), refreshTime(t0, expiresAt, 0, "same"); !a.RefreshAt.Equal(b.RefreshAt) {
		t.Errorf("one seed: got %v and %v, want the same refresh time", a.RefreshAt, b.RefreshAt)
	}

	distinct := map[time.Time]bool{}
	var earliest, latest time.Time
	for i := range 100 {
		at := refreshTime(t0, expiresAt, 0, fmt.Sprintf("uid-%d", i)).RefreshAt
		distinct[at] = true
		if earliest.IsZero() || at.Before(earliest) {
			earliest = at
		}
		if at.After(latest) {
			latest = at
		}
	}
	// 100 seeds over a 120 s window: collisions happen, but most differ.
	if len(distinct) < 50 {
		t.Errorf("100 seeds: got %d distinct refresh times, want at least 50", len(distinct))
	}
	if spread := latest.Sub(earliest); spread < time.Minute {
		t.Errorf("100 seeds: refresh times spread over %s, want at least 1m of the 2m jitter window", spread)
	}
}

func TestJitterBounds(t *testing.T) {
	tests := []struct {
		before, limit time.Duration
	}{
		{before: 0, limit: 0},
		{before: 5 * time.Nanosecond, limit: 0},
		{before: 10 * time.Second, limit: time.Second},
		{before: 20 * time.Minute, limit: 2 * time.Minute},
		{before: 50 * time.Minute, limit: 5 * time.Minute},
		{before: 24 * time.Hour, limit: 5 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.before.String(), func(t *testing.T) {
			for i := range 200 {
				j := jitter(tt.before, fmt.Sprintf("seed-%d", i))
				if tt.limit == 0 && j != 0 {
					t.Fatalf("seed-%d: got %s, want 0", i, j)
				}
				if tt.limit > 0 && (j < 0 || j >= tt.limit) {
					t.Fatalf("seed-%d: got %s, want within [0, %s)", i, j, tt.limit)
				}
			}
		})
	}
}

func TestNextRetry(t *testing.T) {
	now := t0
	tests := []struct {
		name      string
		policy    retryPolicy
		now       time.Time
		expiresAt time.Time
		want      time.Duration // from now
	}{
		{name: "first failure", policy: retryPolicy{Attempts: 1}, want: 5 * time.Second},
		{name: "second failure", policy: retryPolicy{Attempts: 2}, want: 10 * time.Second},
		{name: "third failure", policy: retryPolicy{Attempts: 3}, want: 20 * time.Second},
		{name: "sixth failure", policy: retryPolicy{Attempts: 6}, want: 160 * time.Second},
		{name: "seventh failure capped", policy: retryPolicy{Attempts: 7}, want: 5 * time.Minute},
		{name: "many failures capped", policy: retryPolicy{Attempts: 1000}, want: 5 * time.Minute},
		{name: "zero attempts treated as the first", policy: retryPolicy{Attempts: 0}, want: 5 * time.Second},
		{name: "largest jitter takes a fifth", policy: retryPolicy{Attempts: 3, Jitter: 0.999999}, want: 17 * time.Second}, // 16.000004 s rounded up
		{name: "three quarters jitter", policy: retryPolicy{Attempts: 3, Jitter: 0.75}, want: 17 * time.Second},
		{name: "half jitter", policy: retryPolicy{Attempts: 2, Jitter: 0.5}, want: 9 * time.Second},
		{name: "jitter rounded up to whole seconds", policy: retryPolicy{Attempts: 1, Jitter: 0.3}, want: 5 * time.Second}, // 4.7 s
		{name: "unauthorized is slow from the first failure", policy: retryPolicy{Attempts: 1, Unauthorized: true}, want: 5 * time.Minute},
		{name: "unauthorized with jitter", policy: retryPolicy{Attempts: 1, Unauthorized: true, Jitter: 0.5}, want: 270 * time.Second},
		{name: "Retry-After longer than the backoff", policy: retryPolicy{Attempts: 1, RetryAfter: 120 * time.Second}, want: 120 * time.Second},
		{name: "Retry-After shorter than the backoff", policy: retryPolicy{Attempts: 4, RetryAfter: 3 * time.Second}, want: 40 * time.Second},
		{name: "Retry-After not reduced by jitter", policy: retryPolicy{Attempts: 1, RetryAfter: 120 * time.Second, Jitter: 0.99}, want: 120 * time.Second},
		{name: "Retry-After fractional rounded up", policy: retryPolicy{Attempts: 1, RetryAfter: 7500 * time.Millisecond}, want: 8 * time.Second},
		{
			name: "capped to land before the old token's expiry", policy: retryPolicy{Attempts: 7},
			expiresAt: now.Add(time.Minute), want: 30 * time.Second,
		},
		{
			name: "within the last attempt's lead: at the expiry", policy: retryPolicy{Attempts: 1, RetryAfter: time.Hour},
			expiresAt: now.Add(30 * time.Second), want: 30 * time.Second,
		},
		{
			name: "unauthorized capped to land before the old token's expiry", policy: retryPolicy{Attempts: 1, Unauthorized: true},
			expiresAt: now.Add(2 * time.Minute), want: 90 * time.Second,
		},
		{
			name: "expiry later than the backoff changes nothing", policy: retryPolicy{Attempts: 2},
			expiresAt: now.Add(time.Hour), want: 10 * time.Second,
		},
		{
			name: "expired old token does not pull the retry into the past", policy: retryPolicy{Attempts: 2},
			expiresAt: now.Add(-time.Minute), want: 10 * time.Second,
		},
		{
			name: "expiry now: at least a second ahead", policy: retryPolicy{Attempts: 2},
			expiresAt: now, want: 10 * time.Second,
		},
		{
			name: "expiry under a second ahead: a second ahead", policy: retryPolicy{Attempts: 2},
			expiresAt: now.Add(300 * time.Millisecond), want: time.Second,
		},
		{
			name: "sub-second now rounded up", policy: retryPolicy{Attempts: 1},
			now: now.Add(400 * time.Millisecond), want: 5*time.Second + 600*time.Millisecond,
		},
		{
			name: "sub-second now, expiry under a second ahead: rounded up", policy: retryPolicy{Attempts: 1},
			now: now.Add(400 * time.Millisecond), expiresAt: now.Add(time.Second), want: 1600 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := now
			if !tt.now.IsZero() {
				at = tt.now
			}
			next := nextRetry(tt.policy, at, tt.expiresAt)
			if got := next.Sub(at); got != tt.want {
				t.Errorf("retry in: got %s, want %s", got, tt.want)
			}
			if !next.Equal(next.Truncate(time.Second)) {
				t.Errorf("retry at %v: not a whole second", next)
			}
			if next.Sub(at) < time.Second {
				t.Errorf("retry in %s: want at least 1s", next.Sub(at))
			}
		})
	}
}

// Whatever the jitter, the backoff stays within 80-100% of its base and
// grows with the attempts up to the cap.
func TestNextRetryJitterBounds(t *testing.T) {
	bases := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second,
		80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	for i, base := range bases {
		attempts := int32(i + 1)
		t.Run(fmt.Sprintf("attempt %d", attempts), func(t *testing.T) {
			for _, j := range []float64{0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999999} {
				got := nextRetry(retryPolicy{Attempts: attempts, Jitter: j}, t0, time.Time{}).Sub(t0)
				low := time.Duration(float64(base) * 0.8)
				if got < low || got > base {
					t.Errorf("jitter %v: got %s, want within [%s, %s]", j, got, low, base)
				}
			}
		})
	}
}
