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
	"crypto/rand"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

const (
	// nsMain holds the N tokens that the scenarios after the burst share.
	nsMain = "bench"
	// nsLimited holds the tokens of the rate-limited burst, deleted after it.
	nsLimited = "bench-limited"
	// unrelatedNamespaces spread the unrelated Secrets.
	unrelatedNamespaces = 10
	// touchLabel is the label the benchmark adds to tokens and Secrets.
	touchLabel = "bench.opsnow.io/touch"
	// selfTriggerEdits is the number of edits of each kind in selftrigger.
	selfTriggerEdits = 100

	// settleTime lets trailing writes (status, events) and watch events
	// land before a phase's numbers are read.
	settleTime = 5 * time.Second
	// memorySettleTime lets the manager digest a wave of watch events
	// before its memory is read.
	memorySettleTime = 15 * time.Second

	// Targets.
	burstUnlimitedTarget = 15 * time.Second // for 1,000 tokens, scaled above
	burstLimitedSlack    = 5 * time.Second
	newTokenWrites       = 3
	refreshWrites        = 2
	unrelatedGrowthMiB   = 10
	outageRequestsPer5m  = 10
	recoveryTarget       = 30 * time.Second
)

// bench runs the scenarios on an env and records their numbers.
type bench struct {
	*env
	rep *report
	// mainReady: the N tokens of nsMain exist and were Ready.
	mainReady bool
	// short: the tokens of nsMain hold tokens of -outage-lifetime.
	short bool
}

func tokenName(i int) string  { return fmt.Sprintf("tok-%05d", i) }
func apiKeyName(i int) string { return fmt.Sprintf("key-%05d", i) }

// rateBurst is the burst the manager's rate limiter allows at rate r.
func rateBurst(r float64) float64 { return math.Max(1, math.Floor(r/10)) }

func rateName(r float64) string {
	if r == 0 {
		return "off"
	}
	return strconv.FormatFloat(r, 'f', -1, 64) + "/s"
}

// parallel runs do(i) for i in [0, n) on the configured number of clients
// and returns the first error.
func (b *bench) parallel(ctx context.Context, n int, do func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(b.cfg.clients, n) {
		wg.Go(func() {
			for i := range jobs {
				if err := do(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

func (b *bench) ensureNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := b.k8s.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// createTokens creates N API-key Secrets and OpsnowTokens in ns, each Secret
// just before its token, and returns when each token was created.
func (b *bench) createTokens(ctx context.Context, ns string) (map[types.NamespacedName]time.Time, error) {
	return b.createTokensN(ctx, ns, b.cfg.n)
}

// createTokensN is createTokens for n tokens.
func (b *bench) createTokensN(ctx context.Context, ns string, n int) (map[types.NamespacedName]time.Time, error) {
	if err := b.ensureNamespace(ctx, ns); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	created := make(map[types.NamespacedName]time.Time, n)
	err := b.parallel(ctx, n, func(ctx context.Context, i int) error {
		key := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: apiKeyName(i)},
			StringData: map[string]string{authv1alpha1.DefaultAPIKeyKey: "bench-key-" + ns + "-" + strconv.Itoa(i)},
		}
		if err := b.k8s.Create(ctx, key); err != nil {
			return fmt.Errorf("create API-key Secret: %w", err)
		}
		tok := &authv1alpha1.OpsnowToken{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: tokenName(i)},
			Spec:       authv1alpha1.OpsnowTokenSpec{APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: apiKeyName(i)}},
		}
		at := time.Now()
		if err := b.k8s.Create(ctx, tok); err != nil {
			return fmt.Errorf("create OpsnowToken: %w", err)
		}
		mu.Lock()
		created[client.ObjectKeyFromObject(tok)] = at
		mu.Unlock()
		return nil
	})
	return created, err
}

// deleteTokens deletes the tokens and Secrets of ns. Without a
// kube-controller-manager neither namespaces nor owned Secrets are
// garbage-collected, so both are deleted explicitly.
func (b *bench) deleteTokens(ctx context.Context, ns string) error {
	b.logf("Deleting the OpsnowTokens and Secrets of %s", ns)
	if err := b.k8s.DeleteAllOf(ctx, &authv1alpha1.OpsnowToken{}, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("delete OpsnowTokens of %s: %w", ns, err)
	}
	if err := b.k8s.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("delete Secrets of %s: %w", ns, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		total, _ := b.tracker.count(ns, isReady)
		if total == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d OpsnowTokens of %s still seen after deletion", total, ns)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// readyTimeout bounds the wait for n token requests at rate r.
func readyTimeout(n int, r float64) time.Duration {
	d := 2*time.Minute + time.Duration(n)*20*time.Millisecond
	if r > 0 {
		d += time.Duration(2 * float64(n) / r * float64(time.Second))
	}
	return d
}

// burst creates N tokens at once in ns, with the manager's rate limit at
// rate, and measures how fast they become Ready and what that costs.
func (b *bench) burst(ctx context.Context, rate float64, ns string) error {
	scenario := "burst, rate " + rateName(rate)
	n := b.cfg.n
	if err := b.ensureManager(ctx, rate); err != nil {
		return err
	}
	u0, err := b.usage(ctx)
	if err != nil {
		return err
	}
	w0, err := b.writes(ctx)
	if err != nil {
		return err
	}
	b.meter.reset()
	serverBefore := b.server.Stats().Requests

	b.logf("Creating %d API-key Secrets and OpsnowTokens in %s with %d clients", n, ns, b.cfg.clients)
	start := time.Now()
	created, err := b.createTokens(ctx, ns)
	if err != nil {
		return err
	}
	createdIn := time.Since(start)
	b.logf("Created in %s; waiting until all are Ready", createdIn.Round(time.Millisecond))
	if err := b.tracker.waitCount(ctx, ns, n, readyTimeout(n, rate), "Ready", isReady); err != nil {
		return err
	}
	ready := b.tracker.readyTimes(ns)
	var last time.Time
	latencies := make([]time.Duration, 0, n)
	for k, at := range ready {
		if at.After(last) {
			last = at
		}
		if c, ok := created[k]; ok {
			latencies = append(latencies, at.Sub(c))
		}
	}
	allReady := last.Sub(start)
	b.logf("All %d Ready %s after the first create", n, allReady.Round(time.Millisecond))

	if err := sleep(ctx, settleTime); err != nil {
		return err
	}
	requests, peak := b.meter.read()
	w1, err := b.writes(ctx)
	if err != nil {
		return err
	}
	u1, err := b.usage(ctx)
	if err != nil {
		return err
	}

	b.rep.add(scenario, fmt.Sprintf("create %d tokens (%d clients)", n, b.cfg.clients), createdIn.Seconds(), unitSeconds)
	if rate == 0 {
		target := burstUnlimitedTargetFor(n)
		b.rep.check(scenario, "first create → all Ready", allReady.Seconds(), unitSeconds,
			fmt.Sprintf("≤ %s", target), allReady <= target)
	} else {
		target := time.Duration(float64(n)/rate*float64(time.Second)) + burstLimitedSlack
		b.rep.check(scenario, "first create → all Ready", allReady.Seconds(), unitSeconds,
			fmt.Sprintf("≤ N/r + 5 s = %s", target.Round(100*time.Millisecond)), allReady <= target)
	}
	b.rep.add(scenario, "create → Ready p50", percentile(latencies, 0.5).Seconds(), unitSeconds)
	b.rep.add(scenario, "create → Ready p99", percentile(latencies, 0.99).Seconds(), unitSeconds)
	b.rep.add(scenario, "create → Ready max", percentile(latencies, 1).Seconds(), unitSeconds)
	b.rep.check(scenario, "token requests", float64(requests), unitCount, fmt.Sprintf("= N = %d", n), requests == int64(n))
	if rate > 0 {
		limit := rate + rateBurst(rate)
		b.rep.check(scenario, "peak token requests in 1 s", float64(peak), unitCount,
			fmt.Sprintf("≤ r + burst = %g", limit), float64(peak) <= limit)
		// The server's own counter covers its whole life: it is this
		// phase's only if the server saw nothing before.
		if st := b.server.Stats(); serverBefore == 0 && st.Requests == requests {
			b.rep.check(scenario, "peak in 1 s (token server Stats)", float64(st.PeakPerSecond), unitCount,
				fmt.Sprintf("≤ %g", limit), float64(st.PeakPerSecond) <= limit)
		}
	} else {
		b.rep.add(scenario, "peak token requests in 1 s", float64(peak), unitCount)
	}
	b.addWrites(scenario, "per new token", managerWrites(w0, w1), float64(n), newTokenWrites)
	b.addUsage(scenario, u0, u1, true)
	return nil
}

// addWrites reports the manager's API-server writes divided by per, by
// resource, and their total against target (0: no target).
func (b *bench) addWrites(scenario, per string, w map[string]float64, count float64, target float64) {
	if count <= 0 {
		count = 1
	}
	for _, k := range writeResources {
		if k == "opsnowtokens" && w[k] == 0 {
			// The manager never writes the main resource; no row for it.
			continue
		}
		b.rep.add(scenario, fmt.Sprintf("API writes %s: %s", per, k), w[k]/count, unitCount)
	}
	b.rep.add(scenario, "Secret reads (GET) "+per, w[secretReads]/count, unitCount)
	total := totalWrites(w) / count
	if target > 0 {
		b.rep.check(scenario, "API writes "+per+": total", total, unitCount, fmt.Sprintf("≤ %g", target), total <= target)
	} else {
		b.rep.add(scenario, "API writes "+per+": total", total, unitCount)
	}
}

// addUsage reports the manager's CPU time between two snapshots of the
// same process and its memory at the second.
func (b *bench) addUsage(scenario string, u0, u1 usage, withTarget bool) {
	b.rep.add(scenario, "manager CPU time", u1.CPU-u0.CPU, unitSeconds)
	if withTarget {
		limit := rssTarget(b.cfg.n)
		b.rep.check(scenario, "manager RSS", mib(u1.RSS), unitMiB, fmt.Sprintf("≤ %g MiB", limit), mib(u1.RSS) <= limit)
	} else {
		b.rep.add(scenario, "manager RSS", mib(u1.RSS), unitMiB)
	}
	b.rep.add(scenario, "manager RSS anonymous (RssAnon)", mib(u1.Anon), unitMiB)
	b.rep.add(scenario, "manager peak RSS (VmHWM)", mib(u1.Peak), unitMiB)
	b.rep.add(scenario, "manager Go heap", mib(u1.Heap), unitMiB)
	b.saveHeapProfile(context.Background(), scenario)
}

// ensureTokens makes sure N Ready tokens exist in nsMain, for scenarios run
// without the burst.
func (b *bench) ensureTokens(ctx context.Context) error {
	if b.mainReady && b.manager != nil {
		return nil
	}
	if err := b.ensureManager(ctx, b.cfg.rate); err != nil {
		return err
	}
	if b.mainReady {
		return nil
	}
	b.logf("Creating %d OpsnowTokens in %s", b.cfg.n, nsMain)
	if _, err := b.createTokens(ctx, nsMain); err != nil {
		return err
	}
	if err := b.tracker.waitCount(ctx, nsMain, b.cfg.n, readyTimeout(b.cfg.n, b.cfg.rate), "Ready", isReady); err != nil {
		return err
	}
	b.mainReady = true
	return sleep(ctx, settleTime)
}

// restart restarts the manager while N tokens are valid: no token may be
// requested again, and it should be back at work quickly.
func (b *bench) restart(ctx context.Context) error {
	scenario := "restart"
	n := b.cfg.n
	if err := b.ensureTokens(ctx); err != nil {
		return err
	}
	b.logf("Restarting the manager with %d valid tokens", n)
	if err := b.stopManager(); err != nil {
		return err
	}
	w0, err := b.writes(ctx)
	if err != nil {
		return err
	}
	b.meter.reset()
	started, err := b.startManager(ctx, b.cfg.rate)
	if err != nil {
		return err
	}
	readyz, err := b.waitReadyz(ctx)
	if err != nil {
		return err
	}
	readyzAfter := readyz.Sub(started)

	// Every token is reconciled once after the restart; the reconcile
	// counter shows when that is done.
	deadline := started.Add(b.cfg.restartWindow)
	reconciledAfter := time.Duration(-1)
	var reconciles float64
	for time.Now().Before(deadline) {
		m, err := b.managerMetrics(ctx)
		if err != nil {
			return err
		}
		reconciles = sum(m, "controller_runtime_reconcile_total", func(l map[string]string) bool {
			return l["controller"] == "opsnowtoken"
		})
		if reconciles >= float64(n) {
			reconciledAfter = time.Since(started)
			break
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	b.logf("Reconciled %g tokens; counting token requests until %s after the start", reconciles, b.cfg.restartWindow)
	if err := sleep(ctx, time.Until(deadline)); err != nil {
		return err
	}
	requests, _ := b.meter.read()
	_, ready := b.tracker.count(nsMain, isReady)
	w1, err := b.writes(ctx)
	if err != nil {
		return err
	}
	u, err := b.usage(ctx)
	if err != nil {
		return err
	}

	b.rep.check(scenario, fmt.Sprintf("token requests in %s", b.cfg.restartWindow), float64(requests), unitCount, "= 0", requests == 0)
	b.rep.add(scenario, "start → /readyz", readyzAfter.Seconds(), unitSeconds)
	if reconciledAfter >= 0 {
		b.rep.add(scenario, fmt.Sprintf("start → %d tokens reconciled", n), reconciledAfter.Seconds(), unitSeconds)
	} else {
		b.rep.note("restart: only %g of %d tokens were reconciled within %s", reconciles, n, b.cfg.restartWindow)
	}
	b.rep.add(scenario, "reconciles", u.Reconciles, unitCount)
	b.rep.check(scenario, "tokens Ready", float64(ready), unitCount, fmt.Sprintf("= %d", n), ready == n)
	b.addWrites(scenario, "in total", managerWrites(w0, w1), 1, 0)
	b.addUsage(scenario, usage{}, u, true)
	return nil
}

// waitReadyz polls the manager's /readyz until it answers 200.
func (b *bench) waitReadyz(ctx context.Context) (time.Time, error) {
	deadline := time.Now().Add(healthTimeout)
	for {
		if _, err := get(ctx, "http://"+b.healthAddr+"/readyz"); err == nil {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("manager not ready after %s", healthTimeout)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return time.Time{}, err
		}
	}
}

// selfTrigger edits tokens and their Secrets in ways that must not cost a
// token request: labels on tokens and Secrets, and rewrites of Secrets with
// the same content.
func (b *bench) selfTrigger(ctx context.Context) error {
	scenario := "selftrigger"
	if err := b.ensureTokens(ctx); err != nil {
		return err
	}
	k := min(selfTriggerEdits, b.cfg.n)
	u0, err := b.usage(ctx)
	if err != nil {
		return err
	}
	w0, err := b.writes(ctx)
	if err != nil {
		return err
	}
	b.meter.reset()
	b.logf("%d label patches on OpsnowTokens, %d same-content updates and %d label patches on their Secrets", k, k, k)
	for i := range k {
		tok := &authv1alpha1.OpsnowToken{}
		tok.Namespace, tok.Name = nsMain, tokenName(i)
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+touchLabel+`":"`+strconv.Itoa(i)+`"}}}`))
		if err := b.k8s.Patch(ctx, tok, patch); err != nil {
			return fmt.Errorf("label OpsnowToken: %w", err)
		}
	}
	for i := range k {
		s := &corev1.Secret{}
		if err := b.k8s.Get(ctx, client.ObjectKey{Namespace: nsMain, Name: tokenName(i)}, s); err != nil {
			return fmt.Errorf("get target Secret: %w", err)
		}
		if err := b.k8s.Update(ctx, s); err != nil {
			return fmt.Errorf("rewrite target Secret: %w", err)
		}
	}
	for i := range k {
		s := &corev1.Secret{}
		s.Namespace, s.Name = nsMain, tokenName(i)
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+touchLabel+`":"`+strconv.Itoa(i)+`"}}}`))
		if err := b.k8s.Patch(ctx, s, patch); err != nil {
			return fmt.Errorf("label target Secret: %w", err)
		}
	}
	if err := sleep(ctx, 2*settleTime); err != nil {
		return err
	}
	requests, _ := b.meter.read()
	w1, err := b.writes(ctx)
	if err != nil {
		return err
	}
	u1, err := b.usage(ctx)
	if err != nil {
		return err
	}
	b.rep.check(scenario, fmt.Sprintf("token requests after %d edits", 3*k), float64(requests), unitCount, "= 0", requests == 0)
	b.rep.add(scenario, "reconciles caused", u1.Reconciles-u0.Reconciles, unitCount)
	w := managerWrites(w0, w1)
	total := totalWrites(w)
	b.rep.check(scenario, "manager API writes", total, unitCount, "= 0", total == 0)
	return nil
}

// unrelatedSecrets creates many large Secrets the operator has no business
// with and compares the manager's memory before and after.
func (b *bench) unrelatedSecrets(ctx context.Context) error {
	scenario := "unrelated Secrets"
	if err := b.ensureTokens(ctx); err != nil {
		return err
	}
	m, size := b.cfg.unrelated, b.cfg.unrelatedSize
	if err := sleep(ctx, settleTime); err != nil {
		return err
	}
	u0, err := b.usage(ctx)
	if err != nil {
		return err
	}
	w0, err := b.writes(ctx)
	if err != nil {
		return err
	}
	b.meter.reset()
	for i := range unrelatedNamespaces {
		if err := b.ensureNamespace(ctx, fmt.Sprintf("bench-unrelated-%d", i)); err != nil {
			return err
		}
	}
	blob := make([]byte, size)
	_, _ = rand.Read(blob)
	b.logf("Creating %d unrelated Secrets of %d bytes", m, size)
	start := time.Now()
	err = b.parallel(ctx, m, func(ctx context.Context, i int) error {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: fmt.Sprintf("bench-unrelated-%d", i%unrelatedNamespaces),
				Name:      fmt.Sprintf("blob-%05d", i),
			},
			Data: map[string][]byte{"blob": blob},
		}
		if err := b.k8s.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create unrelated Secret: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	took := time.Since(start)
	b.logf("Created in %s; letting the manager settle for %s", took.Round(time.Millisecond), memorySettleTime)
	if err := sleep(ctx, memorySettleTime); err != nil {
		return err
	}
	u1, err := b.usage(ctx)
	if err != nil {
		return err
	}
	requests, _ := b.meter.read()
	w1, err := b.writes(ctx)
	if err != nil {
		return err
	}
	growth := mib(u1.RSS - u0.RSS)
	b.rep.add(scenario, fmt.Sprintf("create %d Secrets of %d KiB", m, size/1024), took.Seconds(), unitSeconds)
	b.rep.add(scenario, "manager RSS before", mib(u0.RSS), unitMiB)
	b.rep.add(scenario, "manager RSS after", mib(u1.RSS), unitMiB)
	b.rep.check(scenario, "manager RSS growth", growth, unitMiB, fmt.Sprintf("≤ %d MiB", unrelatedGrowthMiB), growth <= unrelatedGrowthMiB)
	b.rep.add(scenario, "manager RSS anonymous growth", mib(u1.Anon-u0.Anon), unitMiB)
	b.rep.add(scenario, "manager Go heap before", mib(u0.Heap), unitMiB)
	b.rep.add(scenario, "manager Go heap after", mib(u1.Heap), unitMiB)
	b.rep.add(scenario, "manager Go heap growth", mib(u1.Heap-u0.Heap), unitMiB)
	b.rep.add(scenario, "manager CPU time", u1.CPU-u0.CPU, unitSeconds)
	b.rep.check(scenario, "token requests", float64(requests), unitCount, "= 0", requests == 0)
	total := totalWrites(managerWrites(w0, w1))
	b.rep.check(scenario, "manager API writes", total, unitCount, "= 0", total == 0)
	return nil
}

// ensureShortTokens makes the N tokens of nsMain hold tokens of
// -outage-lifetime: the token server issues them from now on, and a manual
// refresh (the refresh-requested-at annotation) of every token fetches them.
func (b *bench) ensureShortTokens(ctx context.Context) error {
	if err := b.ensureManager(ctx, b.cfg.rate); err != nil {
		return err
	}
	if b.short {
		return nil
	}
	if err := b.ensureTokens(ctx); err != nil {
		return err
	}
	scenario := "manual refresh"
	n := b.cfg.n
	b.server.SetLifetime(b.cfg.outageLifetime)
	value := "bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	patch := []byte(`{"metadata":{"annotations":{"` + authv1alpha1.RefreshRequestedAtAnnotation + `":"` + value + `"}}}`)
	w0, err := b.writes(ctx)
	if err != nil {
		return err
	}
	b.meter.reset()
	b.logf("Requesting a refresh of all %d tokens, to %s tokens", n, b.cfg.outageLifetime)
	start := time.Now()
	err = b.parallel(ctx, n, func(ctx context.Context, i int) error {
		tok := &authv1alpha1.OpsnowToken{}
		tok.Namespace, tok.Name = nsMain, tokenName(i)
		if err := b.k8s.Patch(ctx, tok, client.RawPatch(types.MergePatchType, patch)); err != nil {
			return fmt.Errorf("annotate OpsnowToken: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	handled := func(s *tokenState) bool { return s.Handled == value && isSettled(s) }
	if err := b.tracker.waitCount(ctx, nsMain, n, readyTimeout(n, b.cfg.rate), "refreshed", handled); err != nil {
		return err
	}
	took := time.Since(start)
	requests, _ := b.meter.read()
	w1, err := b.writes(ctx)
	if err != nil {
		return err
	}
	b.short = true
	b.rep.add(scenario, fmt.Sprintf("annotate %d tokens → all refreshed", n), took.Seconds(), unitSeconds)
	// Tokens refreshed first may be due again before the last one is done.
	lifetimeShare := b.cfg.outageLifetime * 2 / 3
	if took < lifetimeShare {
		b.rep.check(scenario, "token requests", float64(requests), unitCount, fmt.Sprintf("= N = %d", n), requests == int64(n))
	} else {
		b.rep.add(scenario, "token requests (incl. scheduled refreshes)", float64(requests), unitCount)
	}
	b.addWrites(scenario, "per refresh", managerWrites(w0, w1), float64(requests), 0)
	return nil
}

// quiesce holds back the token server's answers for a moment, so that every
// exchange answered before has written its results, then reads the number of
// tokens issued and the API-server writes. Between two such readings the
// writes and the exchanges that caused them are counted alike; answers held
// back come after the reading. A held-back refresh is late by a second or two.
func (b *bench) quiesce(ctx context.Context) (int64, writes, error) {
	b.server.SetFault(&tokenserver.Fault{Delay: 2 * time.Second})
	defer b.server.SetFault(nil)
	if err := sleep(ctx, time.Second); err != nil {
		return 0, writes{}, err
	}
	issued := b.server.Stats().Issued
	w, err := b.writes(ctx)
	return issued, w, err
}

// refresh watches N short-lived tokens refresh on schedule for half a token
// lifetime: every token should stay Ready, each refresh costing few writes.
func (b *bench) refresh(ctx context.Context) error {
	scenario := fmt.Sprintf("refresh (%s tokens)", b.cfg.outageLifetime)
	n := b.cfg.n
	if err := b.ensureShortTokens(ctx); err != nil {
		return err
	}
	// Half a lifetime holds enough refreshes to count writes per refresh.
	window := b.cfg.outageLifetime / 2
	u0, err := b.usage(ctx)
	if err != nil {
		return err
	}
	issued0, w0, err := b.quiesce(ctx)
	if err != nil {
		return err
	}
	b.meter.reset()
	b.logf("Watching scheduled refreshes for %s", window)
	minReady := n
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		_, ready := b.tracker.count(nsMain, isReady)
		minReady = min(minReady, ready)
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	requests, peak := b.meter.read()
	issued1, w1, err := b.quiesce(ctx)
	if err != nil {
		return err
	}
	u1, err := b.usage(ctx)
	if err != nil {
		return err
	}
	b.rep.add(scenario, fmt.Sprintf("refreshes in %s", window), float64(requests), unitCount)
	b.rep.add(scenario, "refreshes per second", float64(requests)/window.Seconds(), unitPerSec)
	if b.cfg.rate > 0 {
		limit := b.cfg.rate + rateBurst(b.cfg.rate)
		b.rep.check(scenario, "peak token requests in 1 s", float64(peak), unitCount, fmt.Sprintf("≤ %g", limit), float64(peak) <= limit)
	}
	b.rep.check(scenario, "fewest tokens Ready at once", float64(minReady), unitCount, fmt.Sprintf("= %d", n), minReady == n)
	b.addWrites(scenario, "per refresh", managerWrites(w0, w1), float64(issued1-issued0), refreshWrites)
	b.addUsage(scenario, u0, u1, false)
	return nil
}

// outage makes the token server answer 500 for -outage while N short-lived
// tokens need refreshing, then recovers it.
func (b *bench) outage(ctx context.Context) error {
	scenario := fmt.Sprintf("outage (%s, %s tokens)", b.cfg.outage, b.cfg.outageLifetime)
	n := b.cfg.n
	if err := b.ensureShortTokens(ctx); err != nil {
		return err
	}
	if err := b.tracker.waitCount(ctx, nsMain, n, readyTimeout(n, b.cfg.rate), "settled", isSettled); err != nil {
		return err
	}
	w0, err := b.writes(ctx)
	if err != nil {
		return err
	}
	b.logf("Token server failing with 500 for %s", b.cfg.outage)
	b.server.SetFault(&tokenserver.Fault{Status: http.StatusInternalServerError})
	b.meter.reset()
	deadline := time.Now().Add(b.cfg.outage)
	minReady := n
	for time.Now().Before(deadline) {
		_, ready := b.tracker.count(nsMain, isReady)
		minReady = min(minReady, ready)
		if err := sleep(ctx, min(time.Second, time.Until(deadline))); err != nil {
			return err
		}
	}
	b.server.SetFault(nil)
	recovered := time.Now()
	requests, peak := b.meter.read()
	b.meter.reset()
	_, readyAtEnd := b.tracker.count(nsMain, isReady)
	w1, err := b.writes(ctx)
	if err != nil {
		return err
	}
	b.logf("Token server recovered; %d of %d tokens Ready", readyAtEnd, n)

	// Recovery is over when every token holds a fresh token and no
	// failure is outstanding. Backoff can reach 5 minutes, so the wait is
	// long enough to measure a slow recovery rather than to give up.
	timeout := 6*time.Minute + readyTimeout(n, b.cfg.rate)
	if err := b.tracker.waitCount(ctx, nsMain, n, timeout, "recovered", isSettled); err != nil {
		return err
	}
	recovery := time.Since(recovered)
	recRequests, recPeak := b.meter.read()
	u, err := b.usage(ctx)
	if err != nil {
		return err
	}

	// The target is per 5 minutes of outage; a shorter outage gets the
	// allowance of 5 minutes, as backoff spends most of it early.
	perToken := float64(requests) / float64(n)
	allowed := outageRequestsPer5m * math.Ceil(b.cfg.outage.Minutes()/5)
	b.rep.add(scenario, "token requests during the outage", float64(requests), unitCount)
	b.rep.check(scenario, "requests per token", perToken, unitCount,
		fmt.Sprintf("≤ %g (%d per 5 min)", allowed, outageRequestsPer5m), perToken <= allowed)
	if b.cfg.rate > 0 {
		limit := b.cfg.rate + rateBurst(b.cfg.rate)
		b.rep.check(scenario, "peak token requests in 1 s", float64(peak), unitCount, fmt.Sprintf("≤ %g", limit), float64(peak) <= limit)
	}
	b.rep.add(scenario, "fewest tokens Ready during the outage", float64(minReady), unitCount)
	b.rep.add(scenario, "tokens Ready when it ended", float64(readyAtEnd), unitCount)
	b.addWrites(scenario, "per failed request", managerWrites(w0, w1), float64(requests), 0)
	// Recovering k expired tokens takes at least k/r; within 30 s when the
	// rate allows it.
	target := recoveryTarget
	label := fmt.Sprintf("≤ %s", target)
	if b.cfg.rate > 0 {
		if floor := time.Duration(float64(n)/b.cfg.rate*float64(time.Second)) + burstLimitedSlack; floor > target {
			target = floor
			label = fmt.Sprintf("≤ max(30 s, N/r + 5 s) = %s", target.Round(100*time.Millisecond))
		}
	}
	b.rep.check(scenario, "recovery → all Ready, no failures", recovery.Seconds(), unitSeconds, label, recovery <= target)
	b.rep.add(scenario, "token requests during recovery", float64(recRequests), unitCount)
	if b.cfg.rate > 0 {
		limit := b.cfg.rate + rateBurst(b.cfg.rate)
		b.rep.check(scenario, "peak token requests in 1 s, recovery", float64(recPeak), unitCount, fmt.Sprintf("≤ %g", limit), float64(recPeak) <= limit)
	}
	b.rep.add(scenario, "manager RSS", mib(u.RSS), unitMiB)
	b.rep.add(scenario, "manager RSS anonymous (RssAnon)", mib(u.Anon), unitMiB)
	b.rep.add(scenario, "manager peak RSS (VmHWM)", mib(u.Peak), unitMiB)
	return nil
}
