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
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

// Fault kinds, by what they break.
const (
	faultSIGKILL    = "sigkill"             // the leader killed at a random moment
	faultMidRefresh = "sigkill-mid-refresh" // the leader killed right after OpsNow answered it, before its Secret write
	faultSIGTERM    = "sigterm"             // the leader stopped gracefully, as in a rollout or a drain
	faultErrors     = "5xx"                 // a burst of 500, 502 and 503 answers
	faultTimeout    = "timeout"             // answers slower than --exchange-timeout
	faultLatency    = "latency"             // answers slow but within the timeout
	faultThrottle   = "429"                 // 429 Too Many Requests with Retry-After
	faultOutage     = "outage"              // OpsNow unreachable: every connection dropped
	faultAPIServer  = "apiserver"           // kube-apiserver killed and started again (etcd kept)
	faultEtcd       = "etcd"                // etcd stalled (SIGSTOP, then SIGCONT)
)

// defaultFaults is the schedule of `make soak`: every kind, four leader
// kills (two of them between a token answer and the Secret write) and one
// graceful stop, spread so that each fault is over before the next.
var defaultFaults = []string{
	faultSIGKILL, faultErrors, faultSIGTERM, faultTimeout, faultMidRefresh, faultLatency,
	faultAPIServer, faultThrottle, faultSIGKILL, faultOutage, faultEtcd, faultMidRefresh,
}

var allFaults = []string{
	faultSIGKILL, faultMidRefresh, faultSIGTERM, faultErrors, faultTimeout, faultLatency,
	faultThrottle, faultOutage, faultAPIServer, faultEtcd,
}

// isFailover reports whether a fault kind ends the leader.
func isFailover(kind string) bool {
	return kind == faultSIGKILL || kind == faultMidRefresh || kind == faultSIGTERM
}

// isUpstream reports whether a fault kind is the token server's.
func isUpstream(kind string) bool {
	switch kind {
	case faultErrors, faultTimeout, faultLatency, faultThrottle, faultOutage:
		return true
	}
	return false
}

// fault is one scheduled fault and what happened when it ran.
type fault struct {
	Kind string `json:"kind"`
	// Offset is the planned start, from the start of the soak phase.
	Offset time.Duration `json:"-"`
	Detail string        `json:"detail"`
	Start  time.Time     `json:"start"`
	// End is when the fault was lifted; for a leader kill, when the signal was sent.
	End time.Time `json:"end"`
	// Takeover is, for a leader kill, from the signal until another
	// replica acquired the Lease (the Lease's own acquireTime).
	Takeover time.Duration `json:"-"`
	Error    string        `json:"error,omitempty"`
}

// plan spreads kinds over d: each fault gets a slot of d/len(kinds) and
// starts at a random moment in the first fifth of it.
func plan(kinds []string, d time.Duration, rng *rand.Rand) []*fault {
	if len(kinds) == 0 {
		return nil
	}
	slot := d / time.Duration(len(kinds))
	out := make([]*fault, 0, len(kinds))
	for i, k := range kinds {
		jitter := time.Duration(rng.Int64N(int64(slot/5) + 1))
		out = append(out, &fault{Kind: k, Offset: time.Duration(i)*slot + jitter})
	}
	return out
}

func parseFaults(s string) ([]string, error) {
	if s == "" || s == "default" {
		return slices.Clone(defaultFaults), nil
	}
	var out []string
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		if k == "" {
			continue
		}
		if !slices.Contains(allFaults, k) {
			return nil, fmt.Errorf("unknown fault %q (known: %s)", k, strings.Join(allFaults, ", "))
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no faults in %q", s)
	}
	return out, nil
}

// inject runs one fault: it returns when the fault is lifted (for a leader
// kill, once another replica leads).
func (e *env) inject(ctx context.Context, f *fault, slot time.Duration) {
	f.Start = time.Now()
	var err error
	switch f.Kind {
	case faultSIGKILL:
		err = e.killLeader(ctx, f, syscall.SIGKILL, false, slot)
	case faultMidRefresh:
		err = e.killLeader(ctx, f, syscall.SIGKILL, true, slot)
	case faultSIGTERM:
		err = e.killLeader(ctx, f, syscall.SIGTERM, false, slot)
	case faultErrors:
		// A burst that changes its status as real ones do.
		step := e.cfg.upstreamFault / 3
		for _, status := range []int{500, 502, 503} {
			e.server.SetFault(&tokenserver.Fault{Status: status})
			sleep(ctx, step)
		}
		f.Detail = fmt.Sprintf("500, 502, 503 for %s", e.cfg.upstreamFault)
	case faultTimeout:
		delay := e.cfg.exchangeTimeout + 3*time.Second
		e.server.SetFault(&tokenserver.Fault{Status: 504, Delay: delay})
		sleep(ctx, e.cfg.upstreamFault)
		f.Detail = fmt.Sprintf("answers after %s (timeout %s) for %s", delay, e.cfg.exchangeTimeout, e.cfg.upstreamFault)
	case faultLatency:
		delay := e.cfg.exchangeTimeout / 2
		e.server.SetFault(&tokenserver.Fault{Delay: delay})
		sleep(ctx, 2*e.cfg.upstreamFault)
		f.Detail = fmt.Sprintf("+%s per answer for %s", delay, 2*e.cfg.upstreamFault)
	case faultThrottle:
		e.server.SetFault(&tokenserver.Fault{Status: 429, RetryAfter: "5"})
		sleep(ctx, e.cfg.upstreamFault)
		f.Detail = fmt.Sprintf("429, Retry-After 5, for %s", e.cfg.upstreamFault)
	case faultOutage:
		e.server.SetFault(&tokenserver.Fault{Disconnect: true})
		sleep(ctx, e.cfg.outage)
		f.Detail = fmt.Sprintf("every connection dropped for %s", e.cfg.outage)
	case faultAPIServer:
		err = e.cluster.KillAPIServer()
		if err == nil {
			sleep(ctx, e.cfg.apiDown)
			err = e.cluster.StartAPIServer(ctx)
		}
		f.Detail = fmt.Sprintf("killed, started again after %s, ready after %s", e.cfg.apiDown, time.Since(f.Start).Round(100*time.Millisecond))
	case faultEtcd:
		err = e.cluster.PauseEtcd()
		if err == nil {
			sleep(ctx, e.cfg.etcdStall)
			err = e.cluster.ResumeEtcd()
		}
		f.Detail = fmt.Sprintf("SIGSTOP for %s", e.cfg.etcdStall)
	}
	e.server.SetFault(nil)
	if f.End.IsZero() {
		f.End = time.Now()
	}
	if err != nil {
		f.Error = err.Error()
	}
}

// killLeader sends sig to the leading replica, at once or, with
// midRefresh, right after the upstream next hands it a token, and waits
// until another replica holds the Lease.
func (e *env) killLeader(ctx context.Context, f *fault, sig syscall.Signal, midRefresh bool, slot time.Duration) error {
	if err := e.waitStandby(ctx); err != nil {
		return err
	}
	r, err := e.waitLeader(ctx, e.cfg.leaseDuration+10*time.Second)
	if err != nil {
		return err
	}
	before, err := e.lease(ctx)
	if err != nil {
		return fmt.Errorf("read Lease: %w", err)
	}
	old := holder(before)
	// The fault is in force from here: waiting for a standby is not part of it.
	f.Start = time.Now()
	var pid int
	if midRefresh {
		fired := make(chan time.Time, 1)
		e.upstream.armAfterAnswer(func() {
			pid, _ = r.signal(sig)
			fired <- time.Now()
		})
		select {
		case at := <-fired:
			f.End = at
			f.Detail = fmt.Sprintf("replica %s (pid %d) killed right after a token answer", r.name, pid)
		case <-time.After(slot / 3):
			if e.upstream.disarm() {
				pid, err = r.signal(sig)
				f.End = time.Now()
				f.Detail = fmt.Sprintf("replica %s (pid %d) killed; no token request came within %s", r.name, pid, slot/3)
			} else {
				f.End = <-fired
				f.Detail = fmt.Sprintf("replica %s (pid %d) killed right after a token answer", r.name, pid)
			}
		case <-ctx.Done():
			e.upstream.disarm()
			return ctx.Err()
		}
	} else {
		pid, err = r.signal(sig)
		f.End = time.Now()
		f.Detail = fmt.Sprintf("replica %s (pid %d)", r.name, pid)
	}
	if err != nil {
		return err
	}
	// The Lease's acquireTime is written by the new leader itself: the
	// takeover time does not depend on how often it is polled here.
	deadline := f.End.Add(e.cfg.leaseDuration + time.Minute)
	for time.Now().Before(deadline) {
		if l, err := e.lease(ctx); err == nil {
			if h := holder(l); h != "" && h != old && l.Spec.AcquireTime != nil {
				f.Takeover = l.Spec.AcquireTime.Sub(f.End)
				return nil
			}
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("no other replica took the Lease within %s", e.cfg.leaseDuration+time.Minute)
}

// sleep waits for d or until ctx ends; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
