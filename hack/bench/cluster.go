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
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// The cluster scenario: one ClusterOpsnowToken fanning one token out to
// many namespaces.
const (
	// clusterNamespaces is how many namespaces the ClusterOpsnowToken selects.
	clusterNamespaces = 500
	// nsClusterResources is the cluster resource namespace of the scenario.
	nsClusterResources = "bench-cluster"
	clusterTokenName   = "bench-shared"
	clusterSecretName  = "opsnow-token"
	// clusterLabel selects the scenario's namespaces.
	clusterLabel = "bench.opsnow.io/team"

	clusterFanOutTarget = 10 * time.Second
	clusterJoinTarget   = 2 * time.Second
	clusterPoll         = 100 * time.Millisecond
	clusterTimeout      = 2 * time.Minute
)

// cluster creates clusterNamespaces labelled namespaces, then one
// ClusterOpsnowToken selecting them, and measures how long until every
// namespace's Secret holds the token and how many token requests that
// took; then how long a namespace that starts matching waits for its
// Secret; and what each selected namespace costs the manager in memory.
func (b *bench) cluster(ctx context.Context) error {
	scenario := fmt.Sprintf("cluster, %d namespaces", clusterNamespaces)
	// The manager runs outside a cluster: it is told where the API key is.
	saved := b.cfg.managerArgs
	b.cfg.managerArgs = strings.TrimSpace(saved + " --cluster-resource-namespace=" + nsClusterResources)
	defer func() { b.cfg.managerArgs = saved }()
	if err := b.stopManager(); err != nil {
		return err
	}
	if _, err := b.startManager(ctx, b.cfg.rate); err != nil {
		return err
	}
	if err := b.ensureNamespace(ctx, nsClusterResources); err != nil {
		return err
	}
	key := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsClusterResources, Name: "opsnow-api-key"},
		Data:       map[string][]byte{authv1alpha1.DefaultAPIKeyKey: []byte("bench-cluster-key")},
	}
	if err := b.k8s.Create(ctx, key); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create API-key Secret: %w", err)
	}

	b.logf("Creating %d namespaces labelled %s", clusterNamespaces, clusterLabel)
	if err := b.parallel(ctx, clusterNamespaces, func(ctx context.Context, i int) error {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("bench-team-%03d", i), Labels: map[string]string{clusterLabel: fmt.Sprintf("t%03d", i)},
		}}
		if err := b.k8s.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", ns.Name, err)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := sleep(ctx, memorySettleTime); err != nil {
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

	ct := &authv1alpha1.ClusterOpsnowToken{
		ObjectMeta: metav1.ObjectMeta{Name: clusterTokenName},
		Spec: authv1alpha1.ClusterOpsnowTokenSpec{
			APIKeySecretRef: authv1alpha1.ClusterSecretKeySelector{Name: "opsnow-api-key"},
			SecretName:      clusterSecretName,
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: clusterLabel, Operator: metav1.LabelSelectorOpExists,
			}}},
		},
	}
	b.logf("Creating ClusterOpsnowToken %s; waiting until %d Secrets hold its token", ct.Name, clusterNamespaces)
	start := time.Now()
	if err := b.k8s.Create(ctx, ct); err != nil {
		return fmt.Errorf("create ClusterOpsnowToken: %w", err)
	}
	token, err := b.waitCopies(ctx, clusterNamespaces, "")
	if err != nil {
		return err
	}
	fanOut := time.Since(start)
	b.logf("All %d Secrets hold the token %s after the create", clusterNamespaces, fanOut.Round(time.Millisecond))

	// A namespace that starts matching.
	joined := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench-team-joined"}}
	if err := b.k8s.Create(ctx, joined); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace: %w", err)
	}
	if err := sleep(ctx, time.Second); err != nil {
		return err
	}
	joined.Labels = map[string]string{clusterLabel: "joined"}
	start = time.Now()
	if err := b.k8s.Update(ctx, joined); err != nil {
		return fmt.Errorf("label namespace: %w", err)
	}
	if _, err := b.waitCopies(ctx, clusterNamespaces+1, token); err != nil {
		return err
	}
	join := time.Since(start)

	if err := sleep(ctx, memorySettleTime); err != nil {
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
	got := &authv1alpha1.ClusterOpsnowToken{}
	if err := b.k8s.Get(ctx, client.ObjectKey{Name: clusterTokenName}, got); err != nil {
		return err
	}

	n := float64(clusterNamespaces + 1)
	b.rep.check(scenario, "create → all Secrets hold the token", fanOut.Seconds(), unitSeconds,
		fmt.Sprintf("≤ %s", clusterFanOutTarget), fanOut <= clusterFanOutTarget)
	b.rep.check(scenario, "token requests", float64(requests), unitCount, "= 1", requests == 1)
	b.rep.check(scenario, "namespace labelled → its Secret", join.Seconds(), unitSeconds,
		fmt.Sprintf("≤ %s", clusterJoinTarget), join <= clusterJoinTarget)
	b.rep.add(scenario, "status synced / selected", float64(got.Status.Namespaces.Synced)/float64(got.Status.Namespaces.Selected), unitCount)
	b.rep.add(scenario, "manager API writes per namespace", totalWrites(managerWrites(w0, w1))/n, unitCount)
	b.rep.add(scenario, "Go heap per selected namespace (KiB)", (u1.Heap-u0.Heap)/n/1024, unitCount)
	b.rep.add(scenario, "RSS anonymous per selected namespace (KiB)", (u1.Anon-u0.Anon)/n/1024, unitCount)
	b.rep.add(scenario, "manager RSS", mib(u1.RSS), unitMiB)
	return nil
}

// waitCopies waits until want Secrets of the scenario's ClusterOpsnowToken
// hold one token (token, when given) and returns it.
func (b *bench) waitCopies(ctx context.Context, want int, token string) (string, error) {
	deadline := time.Now().Add(clusterTimeout)
	last := ""
	for time.Now().Before(deadline) {
		var list corev1.SecretList
		if err := b.k8s.List(ctx, &list, client.MatchingLabels{authv1alpha1.ClusterTokenLabel: clusterTokenName}); err != nil {
			return "", err
		}
		holding := map[string]int{}
		for _, s := range list.Items {
			if t := string(s.Data[authv1alpha1.SecretTokenKey]); t != "" {
				holding[t]++
			}
		}
		for t, count := range holding {
			if count >= want && (token == "" || t == token) {
				return t, nil
			}
		}
		last = fmt.Sprintf("%d Secrets, %d distinct tokens", len(list.Items), len(holding))
		if err := sleep(ctx, clusterPoll); err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("after %s, %s; want %d holding one token", clusterTimeout, last, want)
}
