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
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/event"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// refreshScheduler wakes OpsnowTokens at their planned refresh or retry
// time, measured on the reconciler's clock rather than the workqueue's, so
// that tests move time forward with a fake clock instead of sleeping.
type refreshScheduler struct {
	clock  clock.WithDelayedExecution
	events chan event.GenericEvent

	mu     sync.Mutex
	timers map[types.NamespacedName]clock.Timer
}

func newRefreshScheduler(clk clock.WithDelayedExecution) *refreshScheduler {
	return &refreshScheduler{
		clock:  clk,
		events: make(chan event.GenericEvent, 1024),
		timers: map[types.NamespacedName]clock.Timer{},
	}
}

// schedule wakes key at the given time on the clock, replacing any earlier
// plan for it. Taking a time rather than a delay keeps the plan right when
// the clock moved on while the reconcile that made it was running.
func (s *refreshScheduler) schedule(key types.NamespacedName, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.timers[key]; ok {
		t.Stop()
	}
	var timer clock.Timer
	timer = s.clock.AfterFunc(max(at.Sub(s.clock.Now()), 0), func() {
		s.mu.Lock()
		if s.timers[key] == timer {
			delete(s.timers, key)
		}
		s.mu.Unlock()
		tok := &authv1alpha1.OpsnowToken{}
		tok.Namespace, tok.Name = key.Namespace, key.Name
		s.events <- event.GenericEvent{Object: tok}
	})
	s.timers[key] = timer
}

// cancel drops the plan for key.
func (s *refreshScheduler) cancel(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.timers[key]; ok {
		t.Stop()
		delete(s.timers, key)
	}
}
