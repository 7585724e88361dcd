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
	"errors"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/opsnow-token-operator/opsnow-token-operator/internal/opsnow"
)

// recoveryWakeInterval is the least time between two wake-ups of one
// endpoint's waiting tokens. Each wake-up costs every waiting token at most
// one extra request, so an endpoint that keeps failing and recovering cannot
// undo the backoff.
const recoveryWakeInterval = time.Minute

// endpointRecovery ends an outage for all tokens at once. Endpoints are
// kept by origin (endpointOrigin): what is down is a server, not a path. Tokens whose
// exchange failed because an endpoint was unavailable wait out their own
// backoff, which reaches 5 minutes; without help, a long outage would end
// token by token over those minutes. When an exchange with the endpoint
// succeeds again, the tokens waiting on it are woken to retry now, paced by
// the endpoint's rate limiter.
type endpointRecovery struct {
	mu sync.Mutex
	// waiting holds, per endpoint, the tokens whose last exchange failed
	// as unavailable.
	waiting map[string]map[types.NamespacedName]struct{}
	// woken holds the tokens woken by a recovery and not tried since.
	woken map[types.NamespacedName]struct{}
	// lastWake is when each endpoint's tokens were last woken.
	lastWake map[string]time.Time
}

func newEndpointRecovery() *endpointRecovery {
	return &endpointRecovery{
		waiting:  map[string]map[types.NamespacedName]struct{}{},
		woken:    map[types.NamespacedName]struct{}{},
		lastWake: map[string]time.Time{},
	}
}

// failed records that key's exchange with endpoint failed as unavailable.
func (e *endpointRecovery) failed(endpoint string, key types.NamespacedName) {
	endpoint = endpointOrigin(endpoint)
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.woken, key)
	w := e.waiting[endpoint]
	if w == nil {
		w = map[types.NamespacedName]struct{}{}
		e.waiting[endpoint] = w
	}
	w[key] = struct{}{}
}

// succeeded records that key's exchange with endpoint succeeded at now, and
// returns the tokens to wake: those waiting on endpoint, unless they were
// woken less than recoveryWakeInterval ago.
func (e *endpointRecovery) succeeded(endpoint string, key types.NamespacedName, now time.Time) []types.NamespacedName {
	endpoint = endpointOrigin(endpoint)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.forgetLocked(key)
	w := e.waiting[endpoint]
	if len(w) == 0 || now.Sub(e.lastWake[endpoint]) < recoveryWakeInterval {
		return nil
	}
	e.lastWake[endpoint] = now
	delete(e.waiting, endpoint)
	wake := make([]types.NamespacedName, 0, len(w))
	for k := range w {
		e.woken[k] = struct{}{}
		wake = append(wake, k)
	}
	return wake
}

// isWoken reports whether key was woken by a recovery and has not tried
// its endpoint since.
func (e *endpointRecovery) isWoken(key types.NamespacedName) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.woken[key]
	return ok
}

// forget drops key, after an exchange that needs no recovery or when its
// OpsnowToken is gone.
func (e *endpointRecovery) forget(key types.NamespacedName) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.forgetLocked(key)
}

func (e *endpointRecovery) forgetLocked(key types.NamespacedName) {
	delete(e.woken, key)
	for endpoint, w := range e.waiting {
		delete(w, key)
		if len(w) == 0 {
			delete(e.waiting, endpoint)
		}
	}
}

// noteExchange tells the endpoint recovery how key's exchange went and, when
// it is the first success after the endpoint was unavailable, wakes the
// tokens that wait to retry it. Failures the upstream asked to retry after a
// time (Retry-After) wait for that time.
func (r *OpsnowTokenReconciler) noteExchange(key types.NamespacedName, endpointURL string, err error) {
	wakeOnRecovery(r.recovery, r.scheduler, r.clock.Now(), key, endpointURL, err)
}

// wakeOnRecovery is noteExchange for a recovery and the scheduler that
// wakes the tokens it tracks.
func wakeOnRecovery(recovery *endpointRecovery, scheduler *refreshScheduler, now time.Time,
	key types.NamespacedName, endpointURL string, err error) {
	var oerr *opsnow.Error
	switch {
	case err == nil:
		for _, k := range recovery.succeeded(endpointURL, key, now) {
			scheduler.schedule(k, now)
		}
	case errors.As(err, &oerr) && errors.Is(oerr, opsnow.ErrUnavailable) && oerr.RetryAfter == 0:
		recovery.failed(endpointURL, key)
	default:
		recovery.forget(key)
	}
}
