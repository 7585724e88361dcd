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
	"net/http"
	"sync"
	"time"

	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

// meter counts token requests as they arrive at the token server, per
// phase of the benchmark: the server's own Stats cover its whole life,
// while each scenario needs its own count and peak rate.
type meter struct {
	next http.Handler
	now  func() time.Time

	mu       sync.Mutex
	requests int64
	peak     int
	// window holds the arrival times of the last second, oldest first.
	window []time.Time
}

func newMeter(next http.Handler) *meter {
	return &meter{next: next, now: time.Now}
}

// ServeHTTP counts a token request, then lets the token server answer it.
func (m *meter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == tokenserver.TokenPath {
		m.arrive()
	}
	m.next.ServeHTTP(w, r)
}

func (m *meter) arrive() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	cut := 0
	for cut < len(m.window) && now.Sub(m.window[cut]) >= time.Second {
		cut++
	}
	m.window = append(m.window[cut:], now)
	m.requests++
	m.peak = max(m.peak, len(m.window))
}

// reset starts a new phase: the count and the peak start from zero.
func (m *meter) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests, m.peak, m.window = 0, 0, nil
}

// read returns the token requests since the last reset and the largest
// number of them that arrived within any one-second window.
func (m *meter) read() (requests int64, peakPerSecond int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.requests, m.peak
}
