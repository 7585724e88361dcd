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
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/types"
)

// originSweepThreshold is how many per-origin limiters may exist before idle
// ones are evicted. A handful of OpsNow origins is normal, so 64 leaves room
// without letting a stream of distinct or mistyped endpoints grow the map:
// when adding an origin would exceed the threshold, every idle origin (bucket
// full again, no held reservation) is dropped. Dropping one loses nothing,
// since a new limiter starts with the same full bucket.
//
// Origins still refilling cannot be dropped, so after a sweep the next one
// waits until the map has doubled or a bucket's refill time has passed;
// otherwise a burst of many new origins would sweep the whole map for each.
// The map thus holds at most max(64, twice the busy origins at the last
// sweep), and shrinks on the first new origin once those are idle.
const originSweepThreshold = 64

// invalidOrigin is the one origin shared by all endpoint URLs that do not
// parse to a scheme and host. A limiter per raw string would let a typo in
// many objects, or a changing bad value, grow the map without bound.
const invalidOrigin = "invalid"

// EndpointRateLimiter spaces token requests to each endpoint origin, so that
// a thousand new tokens or the recovery after an outage never flood OpsNow.
//
// It never blocks: Reserve tells the caller when a request may be sent, and
// the reconciler requeues until then instead of holding a worker. Because a
// requeued object comes back and asks again, the slot it was given is held
// for its key, so asking again neither moves it back in the queue nor takes
// a second slot. All times come from the caller, so a fake clock works.
//
// A nil *EndpointRateLimiter is valid and means no limit.
type EndpointRateLimiter struct {
	limit rate.Limit
	burst int

	mu sync.Mutex
	// origins holds one limiter per origin; see originSweepThreshold.
	origins map[string]*originLimiter
	// held holds the reservation of each key told to come back later. An
	// entry lives until the key uses it or is forgotten.
	held map[types.NamespacedName]heldReservation
	// sweepAt is the origin count at which idle origins are evicted
	// regardless of lastSweep; see originSweepThreshold.
	sweepAt int
	// lastSweep is when idle origins were last evicted, and refill how long
	// an empty bucket takes to fill: every origin busy at lastSweep and not
	// used since is idle by lastSweep+refill.
	lastSweep time.Time
	refill    time.Duration
	// interval is how late a held slot may still be used.
	interval time.Duration
}

// originLimiter is the token bucket of one origin and the number of held
// reservations taken from it; an origin with held reservations is never
// evicted, so that Forget can still return their slots.
type originLimiter struct {
	limiter *rate.Limiter
	held    int
}

// heldReservation is a future slot given to one key.
type heldReservation struct {
	origin      string
	reservation *rate.Reservation
	at          time.Time
}

// NewEndpointRateLimiter allows perSecond token requests per endpoint origin
// with a burst of one tenth of that (at least one). It returns nil, meaning
// no limit, when perSecond is not positive.
func NewEndpointRateLimiter(perSecond float64) *EndpointRateLimiter {
	if perSecond <= 0 {
		return nil
	}
	burst := max(1, int(perSecond/10))
	return &EndpointRateLimiter{
		limit:   rate.Limit(perSecond),
		burst:   burst,
		origins: map[string]*originLimiter{},
		held:    map[types.NamespacedName]heldReservation{},
		sweepAt: originSweepThreshold,
		refill:  time.Duration(float64(burst) / perSecond * float64(time.Second)),
		// One slot's length: a slot used later than that could make two
		// requests share one.
		interval: time.Duration(float64(time.Second) / perSecond),
	}
}

// Reserve asks, for key, for a token-request slot at the origin of
// endpointURL at time now, and returns when the request may be sent.
//
// A result not after now means send now; the slot is then consumed. A later
// result is a reservation held for key: asking again before that time
// returns the same time without reserving again, and asking at or after it
// returns now and consumes the held reservation. If key's endpoint moved to
// another origin meanwhile, the old reservation is cancelled and a slot at
// the new origin is reserved, since the old one would limit the wrong server.
func (l *EndpointRateLimiter) Reserve(key types.NamespacedName, endpointURL string, now time.Time) time.Time {
	if l == nil {
		return now
	}
	origin := endpointOrigin(endpointURL)

	l.mu.Lock()
	defer l.mu.Unlock()

	if h, ok := l.held[key]; ok {
		switch {
		case h.origin != origin:
			h.reservation.CancelAt(now)
		case now.Before(h.at):
			return h.at
		case now.Sub(h.at) <= l.interval:
			l.release(key, h)
			return now
		}
		// Moved to another origin, or too late: a reconcile that reaches
		// its slot only after a backlog would send together with the
		// others the backlog held up, above the rate. Its slot is spent;
		// it takes a new one.
		l.release(key, h)
	}

	ol := l.originFor(origin, now)
	r := ol.limiter.ReserveN(now, 1)
	if !r.OK() {
		// Cannot happen with a finite positive limit and a burst of at
		// least one; a limiter that cannot grant must not stop refreshes.
		return now
	}
	delay := r.DelayFrom(now)
	if delay <= 0 {
		return now
	}
	at := now.Add(delay)
	l.held[key] = heldReservation{origin: origin, reservation: r, at: at}
	ol.held++
	return at
}

// Forget drops key's held reservation, if any, because the OpsnowToken was
// deleted or no longer needs a request. The slot goes back to the bucket as
// far as golang.org/x/time/rate allows, so the keys behind it move up.
func (l *EndpointRateLimiter) Forget(key types.NamespacedName, now time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()

	h, ok := l.held[key]
	if !ok {
		return
	}
	h.reservation.CancelAt(now)
	l.release(key, h)
}

// release removes key's held reservation h. l.mu must be held.
func (l *EndpointRateLimiter) release(key types.NamespacedName, h heldReservation) {
	delete(l.held, key)
	if ol, ok := l.origins[h.origin]; ok && ol.held > 0 {
		ol.held--
	}
}

// originFor returns the limiter of origin, creating it, and first evicting
// idle origins if adding one would exceed the threshold; see
// originSweepThreshold. l.mu must be held.
func (l *EndpointRateLimiter) originFor(origin string, now time.Time) *originLimiter {
	if ol, ok := l.origins[origin]; ok {
		return ol
	}
	if n := len(l.origins); n >= originSweepThreshold && (n >= l.sweepAt || !now.Before(l.lastSweep.Add(l.refill))) {
		l.evictIdle(now)
		l.sweepAt = max(originSweepThreshold, 2*len(l.origins))
		l.lastSweep = now
	}
	ol := &originLimiter{limiter: rate.NewLimiter(l.limit, l.burst)}
	l.origins[origin] = ol
	return ol
}

// evictIdle drops every origin whose bucket is full again at now and that
// holds no reservation: a new limiter for it would behave the same. l.mu
// must be held.
func (l *EndpointRateLimiter) evictIdle(now time.Time) {
	burst := float64(l.burst)
	for origin, ol := range l.origins {
		if ol.held == 0 && ol.limiter.TokensAt(now) >= burst {
			delete(l.origins, origin)
		}
	}
}

// endpointOrigin returns the lowercase scheme://host:port of endpointURL,
// filling in the default port of http and https so that an explicit default
// port names the same server. Path, query and user info are dropped: one
// server is one limit. URLs without a scheme and host share invalidOrigin.
func endpointOrigin(endpointURL string) string {
	u, err := url.Parse(endpointURL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return invalidOrigin
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return invalidOrigin
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	if port == "" {
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		return scheme + "://" + host
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}
