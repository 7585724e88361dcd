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
	"context"
	"fmt"
	"sync"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// tokenState is what the tracker knows of one OpsnowToken.
type tokenState struct {
	Ready bool
	// ReadyAt is when the tracker first saw the token Ready.
	ReadyAt        time.Time
	FailedAttempts int32
	ExpiresAt      time.Time
	Handled        string
}

// tracker follows every OpsnowToken through an informer and notes when each
// becomes Ready, so that waiting costs no polling of the API server.
type tracker struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	tokens map[types.NamespacedName]*tokenState
}

func startTracker(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme) (*tracker, error) {
	c, err := cache.New(cfg, cache.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("create OpsnowToken cache: %w", err)
	}
	inf, err := c.GetInformer(ctx, &authv1alpha1.OpsnowToken{})
	if err != nil {
		return nil, fmt.Errorf("OpsnowToken informer: %w", err)
	}
	t := &tracker{tokens: map[types.NamespacedName]*tokenState{}, done: make(chan struct{})}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    t.observe,
		UpdateFunc: func(_, obj any) { t.observe(obj) },
		DeleteFunc: t.forget,
	}); err != nil {
		return nil, fmt.Errorf("watch OpsnowTokens: %w", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	t.cancel = cancel
	go func() {
		defer close(t.done)
		_ = c.Start(cctx)
	}()
	sctx, scancel := context.WithTimeout(ctx, time.Minute)
	defer scancel()
	if !c.WaitForCacheSync(sctx) {
		cancel()
		return nil, fmt.Errorf("OpsnowToken cache did not sync")
	}
	return t, nil
}

func (t *tracker) stop() {
	t.cancel()
	<-t.done
}

func (t *tracker) observe(obj any) {
	tok, ok := obj.(*authv1alpha1.OpsnowToken)
	if !ok {
		return
	}
	now := time.Now()
	key := client.ObjectKeyFromObject(tok)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.tokens[key]
	if s == nil {
		s = &tokenState{}
		t.tokens[key] = s
	}
	s.Ready = apimeta.IsStatusConditionTrue(tok.Status.Conditions, authv1alpha1.ConditionReady)
	if s.Ready && s.ReadyAt.IsZero() {
		s.ReadyAt = now
	}
	s.FailedAttempts = tok.Status.FailedAttempts
	s.ExpiresAt = time.Time{}
	if tok.Status.ExpiresAt != nil {
		s.ExpiresAt = tok.Status.ExpiresAt.Time
	}
	s.Handled = tok.Status.LastHandledRefreshRequest
}

func (t *tracker) forget(obj any) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if tok, ok := obj.(*authv1alpha1.OpsnowToken); ok {
		t.mu.Lock()
		delete(t.tokens, client.ObjectKeyFromObject(tok))
		t.mu.Unlock()
	}
}

// count returns how many tokens of namespace ns the tracker knows and how
// many of them pass match.
func (t *tracker) count(ns string, match func(*tokenState) bool) (total, matched int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, s := range t.tokens {
		if k.Namespace != ns {
			continue
		}
		total++
		if match(s) {
			matched++
		}
	}
	return total, matched
}

// readyTimes returns when each token of namespace ns was first seen Ready.
func (t *tracker) readyTimes(ns string) map[types.NamespacedName]time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[types.NamespacedName]time.Time{}
	for k, s := range t.tokens {
		if k.Namespace == ns && !s.ReadyAt.IsZero() {
			out[k] = s.ReadyAt
		}
	}
	return out
}

func isReady(s *tokenState) bool { return s.Ready }

// isSettled: Ready after a successful exchange, no failure outstanding.
func isSettled(s *tokenState) bool { return s.Ready && s.FailedAttempts == 0 }

// waitCount polls the tracker until want tokens of namespace ns pass match,
// and fails after timeout.
func (t *tracker) waitCount(ctx context.Context, ns string, want int, timeout time.Duration, what string, match func(*tokenState) bool) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		_, n := t.count(ns, match)
		if n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d OpsnowTokens in %s %s after %s", n, want, ns, what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
