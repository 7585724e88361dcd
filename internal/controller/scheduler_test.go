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
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
)

// fired drains the events the scheduler has sent and returns the keys.
func fired(s *refreshScheduler) []types.NamespacedName {
	var keys []types.NamespacedName
	for {
		select {
		case e := <-s.events:
			keys = append(keys, types.NamespacedName{Namespace: e.Object.GetNamespace(), Name: e.Object.GetName()})
		default:
			return keys
		}
	}
}

func TestSchedulerCapsTimers(t *testing.T) {
	key := types.NamespacedName{Namespace: "team-a", Name: "billing"}
	other := types.NamespacedName{Namespace: "team-a", Name: "payroll"}
	type step struct {
		// schedule, when set, plans key (or cancel drops it) before the clock moves.
		schedule func(s *refreshScheduler, now time.Time)
		// advance moves the clock; want are the keys fired meanwhile.
		advance time.Duration
		want    []types.NamespacedName
	}
	plan := func(k types.NamespacedName, in time.Duration) func(*refreshScheduler, time.Time) {
		return func(s *refreshScheduler, now time.Time) { s.schedule(k, now.Add(in)) }
	}
	cases := []struct {
		name  string
		steps []step
		// planned is how many timers are left at the end.
		planned int
	}{
		{
			name: "an hour away fires after maxTimer",
			steps: []step{
				{schedule: plan(key, time.Hour), advance: maxTimer - time.Second},
				{advance: time.Second, want: []types.NamespacedName{key}},
				// Nothing more: the reconcile it wakes plans the next look.
				{advance: time.Hour},
			},
		},
		{
			name: "a minute away fires at the minute",
			steps: []step{
				{schedule: plan(key, time.Minute), advance: time.Minute - time.Second},
				{advance: time.Second, want: []types.NamespacedName{key}},
				{advance: maxTimer},
			},
		},
		{
			name: "exactly maxTimer away fires at maxTimer",
			steps: []step{
				{schedule: plan(key, maxTimer), advance: maxTimer - time.Second},
				{advance: time.Second, want: []types.NamespacedName{key}},
			},
		},
		{
			name: "a past time fires at the next tick",
			steps: []step{
				{schedule: plan(key, -time.Hour), advance: time.Nanosecond, want: []types.NamespacedName{key}},
			},
		},
		{
			name: "re-scheduling replaces the earlier plan",
			steps: []step{
				{schedule: plan(key, time.Minute), advance: 30 * time.Second},
				{schedule: plan(key, 2*time.Minute), advance: time.Minute},
				{advance: time.Minute, want: []types.NamespacedName{key}},
				{advance: maxTimer},
			},
		},
		{
			name: "re-scheduling sooner replaces a later plan",
			steps: []step{
				{schedule: plan(key, 4*time.Minute)},
				{schedule: plan(key, time.Minute), advance: time.Minute, want: []types.NamespacedName{key}},
				{advance: maxTimer},
			},
		},
		{
			name: "cancel drops the plan",
			steps: []step{
				{schedule: plan(key, time.Minute)},
				{schedule: func(s *refreshScheduler, _ time.Time) { s.cancel(key) }, advance: maxTimer},
			},
		},
		{
			name: "a zero time drops the plan",
			steps: []step{
				{schedule: plan(key, time.Minute)},
				{schedule: func(s *refreshScheduler, _ time.Time) { s.schedule(key, time.Time{}) }, advance: maxTimer},
			},
		},
		{
			name: "plans of other tokens are their own",
			steps: []step{
				{schedule: plan(key, time.Minute)},
				{schedule: plan(other, 2*time.Minute)},
				{schedule: func(s *refreshScheduler, _ time.Time) { s.cancel(key) }, advance: time.Minute},
				{advance: time.Minute, want: []types.NamespacedName{other}},
			},
		},
		{
			name: "a plan not yet due stays planned",
			steps: []step{
				{schedule: plan(key, time.Hour), advance: maxTimer - time.Second},
			},
			planned: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(decideT0)
			s := newRefreshScheduler(clk)
			for i, st := range tc.steps {
				if st.schedule != nil {
					st.schedule(s, clk.Now())
				}
				clk.Step(st.advance)
				got := fired(s)
				if fmt.Sprint(got) != fmt.Sprint(st.want) {
					t.Fatalf("step %d, at +%s: got events for %v, want %v", i, clk.Since(decideT0), got, st.want)
				}
			}
			if got := s.planned(); got != tc.planned {
				t.Errorf("planned: got %d, want %d", got, tc.planned)
			}
			if got := clk.Waiters(); got != tc.planned {
				t.Errorf("timers on the clock: got %d, want %d", got, tc.planned)
			}
		})
	}
}

func TestSchedulerStopsWithManager(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	s := newRefreshScheduler(clock.RealClock{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()

	// More tokens due at once than the channel holds, and nobody reading
	// it: the timers beyond its capacity wait to send.
	const tokens = 1100
	if tokens <= cap(s.events) {
		t.Fatalf("test needs more tokens than the channel holds (%d)", cap(s.events))
	}
	now := time.Now()
	for i := range tokens {
		s.schedule(types.NamespacedName{Namespace: "team-a", Name: fmt.Sprintf("token-%d", i)}, now)
	}
	deadline := time.Now().Add(2 * time.Second)
	for (s.planned() > 0 || len(s.events) < cap(s.events)) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.planned(); got != 0 {
		t.Fatalf("timers not fired after 2s: %d planned", got)
	}
	if got := len(s.events); got != cap(s.events) {
		t.Fatalf("events: got %d, want the channel full (%d)", got, cap(s.events))
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Start: got %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Start did not return after its context ended")
	}
	// The timers blocked on the full channel drop their events and end.
	goleak.VerifyNone(t, ignore)

	// Once stopped, a plan sets no timer. An hour ahead, so that a timer
	// set by mistake would still be counted.
	s.schedule(types.NamespacedName{Namespace: "team-a", Name: "late"}, time.Now().Add(time.Hour))
	if got := s.planned(); got != 0 {
		t.Errorf("planned after stop: got %d, want 0", got)
	}
	if got := len(s.events); got != cap(s.events) {
		t.Errorf("events after stop: got %d, want the %d sent before", got, cap(s.events))
	}
	if e := <-s.events; e.Object.GetNamespace() != "team-a" || !strings.HasPrefix(e.Object.GetName(), "token-") {
		t.Errorf("event: got %s/%s, want one of the tokens planned", e.Object.GetNamespace(), e.Object.GetName())
	}
}
