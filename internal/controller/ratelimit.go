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
	"context"
	"sync"

	"golang.org/x/time/rate"
)

// EndpointRateLimiter spaces token requests to each endpoint, so that a
// thousand new tokens or the recovery after an outage never flood OpsNow.
type EndpointRateLimiter struct {
	limit rate.Limit
	burst int

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
}

// NewEndpointRateLimiter allows perSecond token requests per endpoint with a
// burst of one tenth of that (at least one). It returns nil, meaning no
// limit, when perSecond is not positive.
func NewEndpointRateLimiter(perSecond float64) *EndpointRateLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &EndpointRateLimiter{
		limit:    rate.Limit(perSecond),
		burst:    max(1, int(perSecond/10)),
		limiters: map[string]*rate.Limiter{},
	}
}

// Wait blocks until a request to endpoint is allowed or ctx is done.
func (l *EndpointRateLimiter) Wait(ctx context.Context, endpoint string) error {
	l.mu.Lock()
	limiter, ok := l.limiters[endpoint]
	if !ok {
		limiter = rate.NewLimiter(l.limit, l.burst)
		l.limiters[endpoint] = limiter
	}
	l.mu.Unlock()
	return limiter.Wait(ctx)
}
