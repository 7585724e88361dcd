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
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// rlStart is the fake clock's origin; every time in these tests is an offset
// from it, so nothing sleeps and nothing depends on the wall clock.
var rlStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const rlEndpoint = "https://api.opsnow.example/auth/token"

// rlKey names the i-th OpsnowToken of a test.
func rlKey(i int) types.NamespacedName {
	return types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("token-%d", i)}
}

// at is the fake time d after rlStart.
func at(d time.Duration) time.Time { return rlStart.Add(d) }

// assertAt fails unless got is d after rlStart, within a microsecond: the
// rate package turns tokens into durations through float64.
func assertAt(t *testing.T, what string, got time.Time, d time.Duration) {
	t.Helper()
	if diff := got.Sub(at(d)); diff < -time.Microsecond || diff > time.Microsecond {
		t.Errorf("%s: got +%v, want +%v", what, got.Sub(rlStart), d)
	}
}

// heldCount and originCount read the limiter's maps under its lock.
func heldCount(l *EndpointRateLimiter) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.held)
}

func originCount(l *EndpointRateLimiter) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.origins)
}

func TestNewEndpointRateLimiter(t *testing.T) {
	tests := []struct {
		perSecond float64
		wantNil   bool
		wantBurst int
	}{
		{perSecond: -1, wantNil: true},
		{perSecond: 0, wantNil: true},
		{perSecond: 0.5, wantBurst: 1},
		{perSecond: 5, wantBurst: 1},
		{perSecond: 20, wantBurst: 2},
		{perSecond: 105, wantBurst: 10},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.perSecond), func(t *testing.T) {
			l := NewEndpointRateLimiter(tt.perSecond)
			if got := l == nil; got != tt.wantNil {
				t.Fatalf("nil limiter: got %v, want %v", got, tt.wantNil)
			}
			if l != nil && l.burst != tt.wantBurst {
				t.Errorf("burst: got %d, want %d", l.burst, tt.wantBurst)
			}
		})
	}
}

func TestEndpointOrigin(t *testing.T) {
	tests := []struct {
		url  string
		want string
	}{
		{url: "https://api.opsnow.example/auth/token", want: "https://api.opsnow.example:443"},
		{url: "https://api.opsnow.example", want: "https://api.opsnow.example:443"},
		{url: "https://api.opsnow.example:443/other?x=1", want: "https://api.opsnow.example:443"},
		{url: "HTTPS://API.OpsNow.Example/Auth", want: "https://api.opsnow.example:443"},
		{url: "https://user:secret@api.opsnow.example/", want: "https://api.opsnow.example:443"},
		{url: "https://api.opsnow.example:8443/auth", want: "https://api.opsnow.example:8443"},
		{url: "http://api.opsnow.example/auth", want: "http://api.opsnow.example:80"},
		{url: "http://api.opsnow.example:80/auth", want: "http://api.opsnow.example:80"},
		{url: "https://[2001:DB8::1]/auth", want: "https://[2001:db8::1]:443"},
		{url: "https://[2001:db8::1]:9443/auth", want: "https://[2001:db8::1]:9443"},
		{url: "grpc://api.opsnow.example/auth", want: "grpc://api.opsnow.example"},
		{url: "", want: invalidOrigin},
		{url: "not a url", want: invalidOrigin},
		{url: "api.opsnow.example/auth", want: invalidOrigin},
		{url: "https://", want: invalidOrigin},
		{url: "https://:443/auth", want: invalidOrigin},
		{url: "http://[::1", want: invalidOrigin},
		{url: "://missing-scheme", want: invalidOrigin},
		{url: "https://api.opsnow.example/%zz", want: invalidOrigin},
	}
	for _, tt := range tests {
		if got := endpointOrigin(tt.url); got != tt.want {
			t.Errorf("endpointOrigin(%q): got %q, want %q", tt.url, got, tt.want)
		}
	}
}

// At 20/s with a burst of 2, two requests go at once and the rest follow
// 50ms apart.
func TestReserveSpacesRequests(t *testing.T) {
	l := NewEndpointRateLimiter(20)
	want := []time.Duration{0, 0, 50 * time.Millisecond, 100 * time.Millisecond, 150 * time.Millisecond}
	for i, w := range want {
		got := l.Reserve(rlKey(i), rlEndpoint, rlStart)
		assertAt(t, fmt.Sprintf("request %d", i), got, w)
	}
	// Only the three told to wait hold a reservation.
	if got := heldCount(l); got != 3 {
		t.Errorf("held reservations: got %d, want 3", got)
	}
}

// A flood of requests at one instant is spread over about N/r seconds rather
// than sent at once.
func TestReserveSpreadsManyAtOneInstant(t *testing.T) {
	const (
		n         = 100
		perSecond = 20
	)
	l := NewEndpointRateLimiter(perSecond)
	interval := time.Second / perSecond
	var last time.Time
	for i := range n {
		got := l.Reserve(rlKey(i), rlEndpoint, rlStart)
		// The first burst (2) go at once; the i-th waits for i-1 refills.
		assertAt(t, fmt.Sprintf("request %d", i), got, time.Duration(max(0, i-1))*interval)
		if got.Before(last) {
			t.Errorf("request %d: got +%v, want not before +%v", i, got.Sub(rlStart), last.Sub(rlStart))
		}
		last = got
	}
	spread := last.Sub(rlStart)
	ideal := time.Duration(n) * time.Second / perSecond
	if spread < ideal-2*interval || spread > ideal {
		t.Errorf("spread of %d requests: got %v, want about %v", n, spread, ideal)
	}
}

// A requeued object asking again keeps its place and does not take a second
// slot, so others are not pushed back by its retries.
func TestReserveSameKeyHoldsItsSlot(t *testing.T) {
	l := NewEndpointRateLimiter(20)
	l.Reserve(rlKey(0), rlEndpoint, rlStart)
	l.Reserve(rlKey(1), rlEndpoint, rlStart)
	first := l.Reserve(rlKey(2), rlEndpoint, rlStart)
	assertAt(t, "first reservation", first, 50*time.Millisecond)

	for _, d := range []time.Duration{0, 10 * time.Millisecond, 49 * time.Millisecond} {
		got := l.Reserve(rlKey(2), rlEndpoint, at(d))
		if !got.Equal(first) {
			t.Errorf("asking again at +%v: got +%v, want +%v", d, got.Sub(rlStart), first.Sub(rlStart))
		}
	}
	if got := heldCount(l); got != 1 {
		t.Errorf("held reservations: got %d, want 1", got)
	}
	// The next key is one interval behind, not four.
	got := l.Reserve(rlKey(3), rlEndpoint, at(10*time.Millisecond))
	assertAt(t, "next key", got, 100*time.Millisecond)
}

// At or after its time, the key is told to send now, its entry goes away,
// and no second slot is taken: the key behind it is not delayed further.
func TestReserveAtOrAfterHeldTimeConsumes(t *testing.T) {
	tests := []struct {
		name  string
		asked time.Duration
	}{
		{name: "at the time", asked: 50 * time.Millisecond},
		{name: "after the time", asked: 80 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewEndpointRateLimiter(20)
			l.Reserve(rlKey(0), rlEndpoint, rlStart)
			l.Reserve(rlKey(1), rlEndpoint, rlStart)
			assertAt(t, "reservation", l.Reserve(rlKey(2), rlEndpoint, rlStart), 50*time.Millisecond)

			now := at(tt.asked)
			if got := l.Reserve(rlKey(2), rlEndpoint, now); !got.Equal(now) {
				t.Errorf("asking at +%v: got +%v, want now", tt.asked, got.Sub(rlStart))
			}
			if got := heldCount(l); got != 0 {
				t.Errorf("held reservations: got %d, want 0", got)
			}
			// Had the key reserved again, the next would wait until +150ms.
			assertAt(t, "next key", l.Reserve(rlKey(3), rlEndpoint, now), 100*time.Millisecond)
		})
	}
}

// A key that reaches its slot long after it (held up behind a backlog of
// reconciles) does not send then together with the others the backlog
// held up: its slot is spent, and it queues again behind those asking now.
func TestReserveTooLateQueuesAgain(t *testing.T) {
	l := NewEndpointRateLimiter(20) // a slot may be used up to 50ms late
	l.Reserve(rlKey(0), rlEndpoint, rlStart)
	l.Reserve(rlKey(1), rlEndpoint, rlStart)
	assertAt(t, "reservation", l.Reserve(rlKey(2), rlEndpoint, rlStart), 50*time.Millisecond)

	late := at(time.Second)
	for i := 10; i < 30; i++ { // others asking at +1s take the bucket and the next 900ms
		l.Reserve(rlKey(i), rlEndpoint, late)
	}
	got := l.Reserve(rlKey(2), rlEndpoint, late)
	if !got.After(late) {
		t.Errorf("asking 950ms after its slot, behind 20 others: got +%v, want a new slot after +1s", got.Sub(rlStart))
	}
	assertAt(t, "the new slot", got, time.Second+950*time.Millisecond)
}

// Forgetting a held reservation gives its slot to the keys behind it.
func TestForgetReturnsSlot(t *testing.T) {
	tests := []struct {
		name     string
		forget   bool
		wantNext time.Duration
	}{
		{name: "kept", forget: false, wantNext: 100 * time.Millisecond},
		{name: "forgotten", forget: true, wantNext: 50 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewEndpointRateLimiter(20)
			l.Reserve(rlKey(0), rlEndpoint, rlStart)
			l.Reserve(rlKey(1), rlEndpoint, rlStart)
			assertAt(t, "reservation", l.Reserve(rlKey(2), rlEndpoint, rlStart), 50*time.Millisecond)
			if tt.forget {
				l.Forget(rlKey(2), rlStart)
				if got := heldCount(l); got != 0 {
					t.Errorf("held reservations after Forget: got %d, want 0", got)
				}
			}
			assertAt(t, "next key", l.Reserve(rlKey(3), rlEndpoint, rlStart), tt.wantNext)
		})
	}
}

// Forgetting a key without a reservation, or twice, changes nothing.
func TestForgetWithoutReservation(t *testing.T) {
	l := NewEndpointRateLimiter(20)
	l.Forget(rlKey(0), rlStart)
	l.Reserve(rlKey(0), rlEndpoint, rlStart)
	l.Reserve(rlKey(1), rlEndpoint, rlStart)
	l.Reserve(rlKey(2), rlEndpoint, rlStart)
	l.Forget(rlKey(0), rlStart) // sent at once, nothing held
	l.Forget(rlKey(2), rlStart)
	l.Forget(rlKey(2), rlStart)
	// One slot came back, not two.
	assertAt(t, "next key", l.Reserve(rlKey(3), rlEndpoint, rlStart), 50*time.Millisecond)
	assertAt(t, "key after", l.Reserve(rlKey(4), rlEndpoint, rlStart), 100*time.Millisecond)
}

// The limit is per server: paths and queries share it; host, port and
// scheme make another server.
func TestReserveSharesLimitPerOrigin(t *testing.T) {
	tests := []struct {
		name       string
		other      string
		wantShared bool
	}{
		{name: "same URL", other: rlEndpoint, wantShared: true},
		{name: "other path", other: "https://api.opsnow.example/v2/token", wantShared: true},
		{name: "query", other: "https://api.opsnow.example/auth/token?tenant=b", wantShared: true},
		{name: "explicit default port", other: "https://api.opsnow.example:443/auth/token", wantShared: true},
		{name: "upper case host", other: "https://API.OPSNOW.EXAMPLE/auth/token", wantShared: true},
		{name: "other host", other: "https://eu.opsnow.example/auth/token", wantShared: false},
		{name: "other port", other: "https://api.opsnow.example:8443/auth/token", wantShared: false},
		{name: "other scheme", other: "http://api.opsnow.example/auth/token", wantShared: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewEndpointRateLimiter(20)
			l.Reserve(rlKey(0), rlEndpoint, rlStart)
			l.Reserve(rlKey(1), rlEndpoint, rlStart)
			want := time.Duration(0)
			if tt.wantShared {
				want = 50 * time.Millisecond
			}
			assertAt(t, tt.other, l.Reserve(rlKey(2), tt.other, rlStart), want)
		})
	}
}

// A key whose endpoint moved to another server gives back its old slot and
// is limited by the new server.
func TestReserveMovedEndpoint(t *testing.T) {
	const other = "https://eu.opsnow.example/auth/token"
	l := NewEndpointRateLimiter(20)
	l.Reserve(rlKey(0), rlEndpoint, rlStart)
	l.Reserve(rlKey(1), rlEndpoint, rlStart)
	assertAt(t, "reservation", l.Reserve(rlKey(2), rlEndpoint, rlStart), 50*time.Millisecond)

	now := at(10 * time.Millisecond)
	if got := l.Reserve(rlKey(2), other, now); !got.Equal(now) {
		t.Errorf("moved key: got +%v, want now (+%v)", got.Sub(rlStart), now.Sub(rlStart))
	}
	if got := heldCount(l); got != 0 {
		t.Errorf("held reservations: got %d, want 0", got)
	}
	// The old server got the slot back: the next key there takes +50ms.
	assertAt(t, "next key at old server", l.Reserve(rlKey(3), rlEndpoint, now), 50*time.Millisecond)
}

func TestNilLimiterIsUnlimited(t *testing.T) {
	var l *EndpointRateLimiter
	for i := range 1000 {
		now := at(time.Duration(i) * time.Microsecond)
		if got := l.Reserve(rlKey(i%3), rlEndpoint, now); !got.Equal(now) {
			t.Fatalf("request %d: got +%v, want now (+%v)", i, got.Sub(rlStart), now.Sub(rlStart))
		}
		l.Forget(rlKey(i%3), now)
	}
	if l := NewEndpointRateLimiter(0); l != nil {
		t.Errorf("NewEndpointRateLimiter(0): got %p, want nil", l)
	}
}

// The maps stay small whatever endpoints are asked for.
func TestEndpointRateLimiterMemoryBounded(t *testing.T) {
	const n = 10000

	t.Run("distinct origins over time", func(t *testing.T) {
		l := NewEndpointRateLimiter(20)
		peak := 0
		for i := range n {
			// 10ms apart: the last few origins are still refilling when
			// the sweep runs, the rest are idle.
			now := at(time.Duration(i) * 10 * time.Millisecond)
			url := fmt.Sprintf("https://tenant-%d.opsnow.example/auth/token", i)
			if got := l.Reserve(rlKey(i), url, now); !got.Equal(now) {
				t.Fatalf("first request to origin %d: got +%v, want now", i, got.Sub(rlStart))
			}
			peak = max(peak, originCount(l))
		}
		if peak > originSweepThreshold {
			t.Errorf("peak origins: got %d, want at most %d", peak, originSweepThreshold)
		}
		if got := heldCount(l); got != 0 {
			t.Errorf("held reservations: got %d, want 0", got)
		}
	})

	t.Run("burst of distinct origins shrinks once idle", func(t *testing.T) {
		l := NewEndpointRateLimiter(20)
		for i := range n {
			l.Reserve(rlKey(i), fmt.Sprintf("https://tenant-%d.opsnow.example/", i), rlStart)
		}
		// All are refilling, so none could be dropped yet.
		if got := originCount(l); got != n {
			t.Errorf("origins during burst: got %d, want %d", got, n)
		}
		l.Reserve(rlKey(n), "https://late.opsnow.example/", at(time.Second))
		if got := originCount(l); got != 1 {
			t.Errorf("origins after they went idle: got %d, want 1", got)
		}
	})

	t.Run("distinct paths under one origin", func(t *testing.T) {
		l := NewEndpointRateLimiter(20)
		for i := range n {
			now := at(time.Duration(i) * time.Millisecond)
			url := fmt.Sprintf("https://api.opsnow.example/tenant/%d/token?i=%d", i, i)
			l.Reserve(rlKey(i), url, now)
		}
		if got := originCount(l); got != 1 {
			t.Errorf("origins: got %d, want 1", got)
		}
		for i := range n {
			l.Forget(rlKey(i), at(n*time.Millisecond))
		}
		if got := heldCount(l); got != 0 {
			t.Errorf("held reservations after Forget: got %d, want 0", got)
		}
	})

	t.Run("distinct unparsable URLs", func(t *testing.T) {
		l := NewEndpointRateLimiter(20)
		for i := range n {
			now := at(time.Duration(i) * time.Millisecond)
			l.Reserve(rlKey(i), fmt.Sprintf("http://[::%d", i), now)
		}
		l.mu.Lock()
		_, ok := l.origins[invalidOrigin]
		got := len(l.origins)
		l.mu.Unlock()
		if got != 1 || !ok {
			t.Errorf("origins: got %d (%q present: %v), want 1 (%q)", got, invalidOrigin, ok, invalidOrigin)
		}
	})
}

// An origin whose bucket is full again is still kept while a key holds a
// reservation there, so that Forget can hand the slot back.
func TestEvictionKeepsHeldOrigins(t *testing.T) {
	l := NewEndpointRateLimiter(20)
	l.Reserve(rlKey(0), rlEndpoint, rlStart)
	l.Reserve(rlKey(1), rlEndpoint, rlStart)
	assertAt(t, "reservation", l.Reserve(rlKey(2), rlEndpoint, rlStart), 50*time.Millisecond)

	// Long after the bucket refilled, enough new origins to force sweeps.
	for i := range 3 * originSweepThreshold {
		now := at(time.Hour + time.Duration(i)*time.Second)
		l.Reserve(rlKey(100+i), fmt.Sprintf("https://tenant-%d.opsnow.example/", i), now)
	}
	l.mu.Lock()
	_, kept := l.origins[endpointOrigin(rlEndpoint)]
	total := len(l.origins)
	l.mu.Unlock()
	if !kept {
		t.Errorf("origin with a held reservation: got evicted, want kept")
	}
	if total > originSweepThreshold {
		t.Errorf("origins: got %d, want at most %d", total, originSweepThreshold)
	}

	later := at(2 * time.Hour)
	l.Forget(rlKey(2), later)
	if got := heldCount(l); got != 0 {
		t.Errorf("held reservations: got %d, want 0", got)
	}
	// With the reservation gone, the origin can go at the next sweep.
	for i := range originSweepThreshold + 1 {
		l.Reserve(rlKey(1000+i), fmt.Sprintf("https://other-%d.opsnow.example/", i), later.Add(time.Duration(i)*time.Second))
	}
	l.mu.Lock()
	_, kept = l.origins[endpointOrigin(rlEndpoint)]
	l.mu.Unlock()
	if kept {
		t.Errorf("idle origin without reservations: got kept, want evicted")
	}
}

// Reconcile workers call the limiter at once; run with -race.
func TestEndpointRateLimiterConcurrent(t *testing.T) {
	const (
		workers = 8
		rounds  = 500
	)
	l := NewEndpointRateLimiter(20)
	endpoints := []string{
		rlEndpoint,
		"https://api.opsnow.example/other",
		"https://eu.opsnow.example/auth/token",
		"http://[::1",
	}
	var wg sync.WaitGroup
	errs := make(chan string, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				key := rlKey(w*10 + i%10)
				now := at(time.Duration(i) * 5 * time.Millisecond)
				url := endpoints[(w+i)%len(endpoints)]
				if i%7 == 0 {
					// New origins now and then, so sweeps run too.
					url = fmt.Sprintf("https://w%d-%d.opsnow.example/", w, i)
				}
				got := l.Reserve(key, url, now)
				if got.Before(now) {
					errs <- fmt.Sprintf("worker %d round %d: got +%v, want not before +%v", w, i, got.Sub(rlStart), now.Sub(rlStart))
					return
				}
				if i%3 == 0 {
					l.Forget(key, now)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}

	end := at(time.Hour)
	for w := range workers {
		for i := range 10 {
			l.Forget(rlKey(w*10+i), end)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.held) != 0 {
		t.Errorf("held reservations after Forget: got %d, want 0", len(l.held))
	}
	for origin, ol := range l.origins {
		if ol.held != 0 {
			t.Errorf("origin %s held count: got %d, want 0", origin, ol.held)
		}
	}
}
