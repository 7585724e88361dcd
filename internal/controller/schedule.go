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
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// Refresh and retry policy. Renewal at two thirds of the lifetime follows
// cert-manager: it leaves a third of the lifetime for retries before a token
// can lapse.
const (
	// defaultRefreshFraction is the part of the lifetime left when refreshing by default.
	defaultRefreshFraction = 3
	// maxJitterFraction bounds the jitter to a tenth of refreshBefore so that
	// tokens created together spread out without refreshing much earlier.
	maxJitterFraction = 10
	// maxJitter keeps the spread of long-lived tokens within a few minutes.
	maxJitter = 5 * time.Minute
	// minLifetimeFraction is the least part of the lifetime a token is used
	// before it is refreshed, whatever refreshBefore says: no refresh loops.
	minLifetimeFraction = 10

	// initialBackoff and maxBackoff bound the exponential retry after a failed exchange.
	initialBackoff = 5 * time.Second
	maxBackoff     = 5 * time.Minute
	// unauthorizedRetry is the slow retry for a rejected API key: asking again
	// soon cannot help, and fixing the key Secret triggers a retry at once.
	unauthorizedRetry = 5 * time.Minute
	// finalAttemptLead is how long before the held token's expiry the last
	// retry is planned: the length of one exchange's timeout.
	finalAttemptLead = 30 * time.Second
	// minRequeue keeps every requeue positive so nothing spins.
	minRequeue = time.Second
)

// schedule is when a token is refreshed and whether refreshBefore had to be ignored.
type schedule struct {
	RefreshAt time.Time
	// RefreshBeforeIgnored is true when spec.refreshBefore was not shorter
	// than the lifetime and the default applied instead.
	RefreshBeforeIgnored bool
}

// refreshTime returns when a token issued at issuedAt and expiring at
// expiresAt is refreshed: expiresAt - refreshBefore (default a third of the
// lifetime) minus a jitter of up to a tenth of refreshBefore derived from
// jitterSeed, never before a tenth of the lifetime has passed. The result is
// truncated to the second because status stores seconds, and truncating can
// only make the refresh earlier.
func refreshTime(issuedAt, expiresAt time.Time, refreshBefore time.Duration, jitterSeed string) schedule {
	lifetime := expiresAt.Sub(issuedAt)
	if lifetime <= 0 {
		return schedule{RefreshAt: issuedAt.Truncate(time.Second)}
	}
	var s schedule
	before := refreshBefore
	if before <= 0 || before >= lifetime {
		s.RefreshBeforeIgnored = before > 0
		before = lifetime / defaultRefreshFraction
	}
	refreshAt := expiresAt.Add(-before).Add(-jitter(before, jitterSeed))
	if earliest := issuedAt.Add(lifetime / minLifetimeFraction); refreshAt.Before(earliest) {
		refreshAt = earliest
	}
	s.RefreshAt = refreshAt.Truncate(time.Second)
	return s
}

// jitter returns a stable pseudo-random duration in [0, min(before/10, 5m)):
// stable for one seed, so repeated reconciles of the same token agree on its
// refresh time and do not rewrite status; spread across seeds, so tokens
// created together refresh apart.
func jitter(before time.Duration, seed string) time.Duration {
	limit := min(before/maxJitterFraction, maxJitter)
	if limit <= 0 {
		return 0
	}
	sum := sha256.Sum256([]byte(seed))
	return time.Duration(binary.BigEndian.Uint64(sum[:8]) % uint64(limit)) //nolint:gosec // G115: the remainder is below limit, at most maxJitter
}

// retryPolicy describes a failed attempt for nextRetry.
type retryPolicy struct {
	// Attempts is the number of consecutive failures, including this one (≥ 1).
	Attempts int32
	// Unauthorized selects the slow retry for a rejected key.
	Unauthorized bool
	// RetryAfter is the upstream's Retry-After, if any.
	RetryAfter time.Duration
	// Jitter in [0, 1) spreads retries of tokens that failed together.
	Jitter float64
}

// nextRetry returns when to try again after a failure at now: 5 s doubling up
// to 5 min (minus up to 20% jitter), 5 min for a rejected key, at least the
// upstream's Retry-After, and never later than finalAttemptLead before the
// expiry of the token still in the Secret (zero expiresAt means there is
// none), so a recovered upstream is asked before that token lapses.
func nextRetry(p retryPolicy, now, expiresAt time.Time) time.Time {
	delay := maxBackoff
	if p.Unauthorized {
		delay = unauthorizedRetry
	} else if p.Attempts < 8 { // 5 s << 6 = 320 s already exceeds the cap
		delay = min(initialBackoff<<max(p.Attempts-1, 0), maxBackoff)
	}
	delay -= time.Duration(float64(delay) * 0.2 * p.Jitter)
	delay = max(delay, p.RetryAfter, minRequeue)
	// Rounded up: status stores seconds, and a retry must not come early.
	next := ceilSecond(now.Add(delay))
	if !expiresAt.IsZero() && expiresAt.After(now) {
		// The last attempt lands early enough to finish before the token
		// lapses; once past that point, the next look is at the expiry.
		lastChance := expiresAt.Add(-finalAttemptLead).Truncate(time.Second)
		switch {
		case next.After(lastChance) && lastChance.After(now.Add(minRequeue)):
			next = lastChance
		case next.After(expiresAt):
			next = expiresAt
		}
	}
	if next.Sub(now) < minRequeue {
		// Rounded up as well: status would otherwise show a retry time
		// earlier than the one planned.
		next = ceilSecond(now.Add(minRequeue))
	}
	return next
}

// ceilSecond rounds t up to a whole second.
func ceilSecond(t time.Time) time.Time {
	if down := t.Truncate(time.Second); !down.Equal(t) {
		return down.Add(time.Second)
	}
	return t
}
