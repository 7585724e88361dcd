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
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

const (
	// nsIdle holds the few tokens of the idle scenario.
	nsIdle = "bench-idle"
	// nsSpoof holds the look-alike Secrets of the spoof scenario.
	nsSpoof = "bench-spoof"
	// idleTokens is the small installation the idle scenario measures.
	idleTokens = 10
	// spoofSecrets of spoofSize each carry the managed-by label without
	// being controlled by an OpsnowToken; spoofTokens of them are also the
	// target name of an OpsnowToken, which must report a conflict.
	spoofSecrets = 200
	spoofSize    = 1 << 20
	spoofTokens  = 10

	// Memory targets, in MiB of RSS.
	idleRSSMiB        = 40
	spoofGrowthMiB    = 10
	rssPerThousandMiB = 64  // up to 1,000 tokens
	rssTenThousandMiB = 128 // up to 10,000 tokens
)

// rssTarget is the RSS a manager with n Ready tokens may have: 64 MiB up to
// 1,000, 128 MiB up to 10,000, and in proportion beyond.
func rssTarget(n int) float64 {
	switch {
	case n <= 1000:
		return rssPerThousandMiB
	case n <= 10000:
		return rssTenThousandMiB
	default:
		return rssTenThousandMiB * float64(n) / 10000
	}
}

// burstUnlimitedTargetFor is how fast n tokens must all be Ready without a
// rate limit: 15 s for 1,000, 60 s for 10,000, on a line between and beyond.
func burstUnlimitedTargetFor(n int) time.Duration {
	if n <= 1000 {
		return burstUnlimitedTarget
	}
	extra := time.Duration(float64(45*time.Second) * float64(n-1000) / 9000)
	return burstUnlimitedTarget + extra
}

// chartEnv returns the environment the Helm chart gives the manager
// (values.yaml, env), e.g. GOMEMLIMIT, so that the benchmark measures the
// manager as it is deployed.
func chartEnv(root string) ([]string, error) {
	path := filepath.Join(root, "charts", "opsnow-token-operator", "values.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var values struct {
		Env []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"env"`
	}
	if err := yaml.Unmarshal(data, &values); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	env := make([]string, 0, len(values.Env))
	for _, e := range values.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	return env, nil
}

// saveHeapProfile writes the manager's heap profile, after a collection,
// to bin/bench-heap/NAME.pb.gz, for `go tool pprof`. A failure is a note:
// the profile explains numbers, it is not one.
func (b *bench) saveHeapProfile(ctx context.Context, name string) {
	if b.pprofAddr == "" || b.heapDir == "" {
		return
	}
	data, err := get(ctx, "http://"+b.pprofAddr+"/debug/pprof/heap?gc=1")
	if err == nil {
		err = os.MkdirAll(b.heapDir, 0o755)
	}
	if err == nil {
		file := strings.NewReplacer(" ", "-", ",", "", "/", "-").Replace(name) + ".pb.gz"
		err = os.WriteFile(filepath.Join(b.heapDir, file), data, 0o644)
	}
	if err != nil {
		b.rep.note("no heap profile for %s: %v", name, err)
	}
}

// idle measures the manager with nothing to do: no OpsnowToken, then a
// small installation of ten.
func (b *bench) idle(ctx context.Context) error {
	scenario := "idle"
	if err := b.ensureManager(ctx, b.cfg.rate); err != nil {
		return err
	}
	if err := sleep(ctx, memorySettleTime); err != nil {
		return err
	}
	u0, err := b.usage(ctx)
	if err != nil {
		return err
	}
	b.rep.check(scenario, "manager RSS, 0 tokens", mib(u0.RSS), unitMiB, fmt.Sprintf("≤ %d MiB", idleRSSMiB), mib(u0.RSS) <= idleRSSMiB)
	b.rep.add(scenario, "manager RSS anonymous, 0 tokens", mib(u0.Anon), unitMiB)
	b.rep.add(scenario, "manager Go heap, 0 tokens", mib(u0.Heap), unitMiB)
	b.saveHeapProfile(ctx, "idle-0")

	b.logf("Creating %d OpsnowTokens in %s", idleTokens, nsIdle)
	if _, err := b.createTokensN(ctx, nsIdle, idleTokens); err != nil {
		return err
	}
	if err := b.tracker.waitCount(ctx, nsIdle, idleTokens, readyTimeout(idleTokens, b.cfg.rate), "Ready", isReady); err != nil {
		return err
	}
	if err := sleep(ctx, memorySettleTime); err != nil {
		return err
	}
	u1, err := b.usage(ctx)
	if err != nil {
		return err
	}
	metric := fmt.Sprintf("manager RSS, %d tokens", idleTokens)
	b.rep.check(scenario, metric, mib(u1.RSS), unitMiB, fmt.Sprintf("≤ %d MiB", idleRSSMiB), mib(u1.RSS) <= idleRSSMiB)
	b.rep.add(scenario, fmt.Sprintf("manager RSS anonymous, %d tokens", idleTokens), mib(u1.Anon), unitMiB)
	b.rep.add(scenario, fmt.Sprintf("manager Go heap, %d tokens", idleTokens), mib(u1.Heap), unitMiB)
	b.rep.add(scenario, "manager peak RSS (VmHWM)", mib(u1.Peak), unitMiB)
	b.saveHeapProfile(ctx, "idle-10")
	return b.deleteTokens(ctx, nsIdle)
}

// spoof creates large Secrets that claim to be the operator's (the
// managed-by label) without an OpsnowToken controlling them, some of them
// at the target name of an OpsnowToken: the manager's memory must not grow
// with their data, and none of them may be written.
func (b *bench) spoof(ctx context.Context) error {
	scenario := "spoof"
	if err := b.ensureTokens(ctx); err != nil {
		return err
	}
	if err := b.ensureNamespace(ctx, nsSpoof); err != nil {
		return err
	}
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

	blob := make([]byte, spoofSize)
	_, _ = rand.Read(blob)
	b.logf("Creating %d Secrets of %d KiB labelled as the operator's in %s", spoofSecrets, spoofSize/1024, nsSpoof)
	start := time.Now()
	versions := make([]string, spoofSecrets)
	err = b.parallel(ctx, spoofSecrets, func(ctx context.Context, i int) error {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: nsSpoof,
				Name:      fmt.Sprintf("spoof-%03d", i),
				Labels: map[string]string{
					authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue,
					authv1alpha1.TokenLabel:     fmt.Sprintf("spoof-%03d", i),
				},
			},
			Data: map[string][]byte{authv1alpha1.SecretTokenKey: blob},
		}
		if err := b.k8s.Create(ctx, s); err != nil {
			return fmt.Errorf("create look-alike Secret: %w", err)
		}
		versions[i] = s.ResourceVersion
		return nil
	})
	if err != nil {
		return err
	}
	took := time.Since(start)
	// Tokens whose target is a look-alike: each must be a SecretConflict.
	err = b.parallel(ctx, spoofTokens, func(ctx context.Context, i int) error {
		key := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: nsSpoof, Name: apiKeyName(i)},
			StringData: map[string]string{authv1alpha1.DefaultAPIKeyKey: fmt.Sprintf("bench-key-spoof-%d", i)},
		}
		if err := b.k8s.Create(ctx, key); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create API-key Secret: %w", err)
		}
		tok := &authv1alpha1.OpsnowToken{
			ObjectMeta: metav1.ObjectMeta{Namespace: nsSpoof, Name: tokenName(i)},
			Spec: authv1alpha1.OpsnowTokenSpec{
				APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: apiKeyName(i)},
				SecretName:      fmt.Sprintf("spoof-%03d", i),
			},
		}
		if err := b.k8s.Create(ctx, tok); err != nil {
			return fmt.Errorf("create OpsnowToken: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
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
	conflicts, err := b.countConflicts(ctx)
	if err != nil {
		return err
	}
	written, err := b.countChanged(ctx, versions)
	if err != nil {
		return err
	}

	growth := mib(u1.RSS - u0.RSS)
	b.rep.add(scenario, fmt.Sprintf("create %d labelled Secrets of %d KiB", spoofSecrets, spoofSize/1024), took.Seconds(), unitSeconds)
	b.rep.add(scenario, "manager RSS before", mib(u0.RSS), unitMiB)
	b.rep.add(scenario, "manager RSS after", mib(u1.RSS), unitMiB)
	b.rep.check(scenario, "manager RSS growth", growth, unitMiB, fmt.Sprintf("≤ %d MiB", spoofGrowthMiB), growth <= spoofGrowthMiB)
	b.rep.add(scenario, "manager peak RSS (VmHWM)", mib(u1.Peak), unitMiB)
	b.rep.add(scenario, "manager Go heap growth", mib(u1.Heap-u0.Heap), unitMiB)
	b.rep.check(scenario, "look-alike Secrets written", float64(written), unitCount, "= 0", written == 0)
	b.rep.check(scenario, "tokens aimed at one: SecretConflict", float64(conflicts), unitCount,
		fmt.Sprintf("= %d", spoofTokens), conflicts == spoofTokens)
	b.rep.check(scenario, "token requests", float64(requests), unitCount, "= 0", requests == 0)
	b.rep.add(scenario, "manager Secret writes", managerWrites(w0, w1)["secrets"], unitCount)
	b.saveHeapProfile(ctx, "spoof")

	// A manager starting among the look-alikes lists them: its peak is what
	// an OOM kill would be decided on.
	if err := b.stopManager(); err != nil {
		return err
	}
	if _, err := b.startManager(ctx, b.cfg.rate); err != nil {
		return err
	}
	if err := sleep(ctx, memorySettleTime); err != nil {
		return err
	}
	u2, err := b.usage(ctx)
	if err != nil {
		return err
	}
	b.rep.add(scenario, "restarted among them: manager RSS", mib(u2.RSS), unitMiB)
	b.rep.check(scenario, "restarted among them: peak RSS (VmHWM)", mib(u2.Peak), unitMiB,
		fmt.Sprintf("≤ %g MiB", rssTarget(b.cfg.n)), mib(u2.Peak) <= rssTarget(b.cfg.n))
	if written, err = b.countChanged(ctx, versions); err != nil {
		return err
	}
	b.rep.check(scenario, "look-alike Secrets written, after the restart", float64(written), unitCount, "= 0", written == 0)
	return nil
}

// countConflicts counts the spoof scenario's tokens whose Ready reason is SecretConflict.
func (b *bench) countConflicts(ctx context.Context) (int, error) {
	var list authv1alpha1.OpsnowTokenList
	if err := b.k8s.List(ctx, &list, client.InNamespace(nsSpoof)); err != nil {
		return 0, fmt.Errorf("list OpsnowTokens of %s: %w", nsSpoof, err)
	}
	n := 0
	for _, t := range list.Items {
		for _, c := range t.Status.Conditions {
			if c.Type == authv1alpha1.ConditionReady && c.Reason == authv1alpha1.ReasonSecretConflict {
				n++
			}
		}
	}
	return n, nil
}

// countChanged counts the look-alike Secrets whose resourceVersion is no
// longer the one they were created with, or that are gone.
func (b *bench) countChanged(ctx context.Context, versions []string) (int, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	if err := b.k8s.List(ctx, list, client.InNamespace(nsSpoof)); err != nil {
		return 0, fmt.Errorf("list Secrets of %s: %w", nsSpoof, err)
	}
	now := map[string]string{}
	for _, s := range list.Items {
		now[s.Name] = s.ResourceVersion
	}
	changed := 0
	for i, v := range versions {
		if now[fmt.Sprintf("spoof-%03d", i)] != v {
			changed++
		}
	}
	return changed, nil
}
