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
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/event"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// maxTimer is the longest a token waits on one timer. A timer measures
// elapsed time; after a host suspend or a jump of the wall clock, the wall
// time a plan was made for may already have passed. Waking at least this
// often re-reads the clock, so a due refresh is noticed within maxTimer; a
// wake-up with nothing due reads only the cache.
const maxTimer = 5 * time.Minute

// refreshScheduler wakes OpsnowTokens at their planned refresh or retry
// time, measured on the reconciler's clock rather than the workqueue's, so
// that tests move time forward with a fake clock instead of sleeping. It is
// a manager Runnable: its timers stop with the manager.
type refreshScheduler struct {
	clock  clock.WithDelayedExecution
	events chan event.GenericEvent
	// stopped is closed when the manager stops; fired timers then drop
	// their event instead of blocking on a channel nobody reads.
	stopped chan struct{}

	mu     sync.Mutex
	timers map[types.NamespacedName]clock.Timer
	done   bool
}

func newRefreshScheduler(clk clock.WithDelayedExecution) *refreshScheduler {
	return &refreshScheduler{
		clock:   clk,
		events:  make(chan event.GenericEvent, 1024),
		stopped: make(chan struct{}),
		timers:  map[types.NamespacedName]clock.Timer{},
	}
}

// Start waits for ctx to end, then stops every timer.
func (s *refreshScheduler) Start(ctx context.Context) error {
	<-ctx.Done()
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, t := range s.timers {
		t.Stop()
		delete(s.timers, key)
	}
	s.done = true
	close(s.stopped)
	return nil
}

// NeedLeaderElection is false: the scheduler only holds the timers the
// reconciler sets, and must stop with every manager.
func (s *refreshScheduler) NeedLeaderElection() bool { return false }

// schedule wakes key at the given time on the clock, or after maxTimer if
// that is sooner, replacing any earlier plan for it; a zero time drops the
// plan. Taking a time rather than a delay keeps the plan right when the
// clock moved on while the reconcile that made it was running.
func (s *refreshScheduler) schedule(key types.NamespacedName, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.timers[key]; ok {
		t.Stop()
		delete(s.timers, key)
	}
	if at.IsZero() || s.done {
		return
	}
	var timer clock.Timer
	timer = s.clock.AfterFunc(min(max(at.Sub(s.clock.Now()), 0), maxTimer), func() {
		s.mu.Lock()
		if s.timers[key] == timer {
			delete(s.timers, key)
		}
		s.mu.Unlock()
		tok := &authv1alpha1.OpsnowToken{}
		tok.Namespace, tok.Name = key.Namespace, key.Name
		select {
		case s.events <- event.GenericEvent{Object: tok}:
		case <-s.stopped:
		}
	})
	s.timers[key] = timer
}

// cancel drops the plan for key.
func (s *refreshScheduler) cancel(key types.NamespacedName) { s.schedule(key, time.Time{}) }

// planned returns how many tokens have a timer, for tests.
func (s *refreshScheduler) planned() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.timers)
}
