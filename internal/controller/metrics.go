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

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// The per-token series are made at scrape time from the cached OpsnowTokens
// and the refresh counts, rather than stored as series of their own: a
// stored series costs about 400 bytes a token for each of the three, the
// largest part of a token's memory after the cache. A scrape builds them
// and lets them go.
var (
	refreshTotalDesc = prometheus.NewDesc("opsnow_token_refresh_total",
		"Refresh attempts by OpsnowToken and result: success (a new token written) or failure (an attempt that ended without one).",
		[]string{"namespace", "name", "result"}, nil)
	expiryTimestampDesc = prometheus.NewDesc("opsnow_token_expiry_timestamp_seconds",
		"Unix time at which the token now in the target Secret expires.",
		[]string{"namespace", "name"}, nil)
	nextRefreshTimestampDesc = prometheus.NewDesc("opsnow_token_next_refresh_timestamp_seconds",
		"Unix time of the next planned refresh or retry.",
		[]string{"namespace", "name"}, nil)
	exchangeDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "opsnow_token_exchange_duration_seconds",
		Help:    "Duration of HTTP token exchanges with OpsNow.",
		Buckets: []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	})
	// tokenSeries is the collector of the per-token series; the manager's
	// reconciler gives it its cache and counts.
	tokenSeries = &tokenCollector{}
)

func init() {
	metrics.Registry.MustRegister(exchangeDuration, tokenSeries)
}

// refreshCounts counts the token exchanges of each OpsnowToken by result,
// for as long as the OpsnowToken exists.
type refreshCounts struct {
	mu sync.Mutex
	m  map[types.NamespacedName][2]uint64 // success, failure
}

func newRefreshCounts() *refreshCounts {
	return &refreshCounts{m: map[types.NamespacedName][2]uint64{}}
}

func (c *refreshCounts) add(key types.NamespacedName, success bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.m[key]
	if success {
		n[0]++
	} else {
		n[1]++
	}
	c.m[key] = n
}

func (c *refreshCounts) get(key types.NamespacedName) ([2]uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.m[key]
	return n, ok
}

func (c *refreshCounts) forget(key types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

// tokenCollector makes the per-token series of the OpsnowTokens in a cache.
type tokenCollector struct {
	mu     sync.Mutex
	tokens client.Reader
	counts *refreshCounts
}

// use makes the collector report the tokens of reader with counts: the
// reconciler running in this process.
func (c *tokenCollector) use(reader client.Reader, counts *refreshCounts) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tokens, c.counts = reader, counts
}

// Describe implements prometheus.Collector.
func (c *tokenCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- refreshTotalDesc
	ch <- expiryTimestampDesc
	ch <- nextRefreshTimestampDesc
}

// Collect implements prometheus.Collector: the series of every cached
// OpsnowToken, read without copying the cache.
func (c *tokenCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	reader, counts := c.tokens, c.counts
	c.mu.Unlock()
	if reader == nil {
		return
	}
	var list authv1alpha1.OpsnowTokenList
	if err := reader.List(context.Background(), &list, client.UnsafeDisableDeepCopy); err != nil {
		ch <- prometheus.NewInvalidMetric(expiryTimestampDesc, err)
		return
	}
	for i := range list.Items {
		tok := &list.Items[i]
		if n, ok := counts.get(types.NamespacedName{Namespace: tok.Namespace, Name: tok.Name}); ok {
			if n[0] > 0 {
				ch <- prometheus.MustNewConstMetric(refreshTotalDesc, prometheus.CounterValue, float64(n[0]), tok.Namespace, tok.Name, "success")
			}
			if n[1] > 0 {
				ch <- prometheus.MustNewConstMetric(refreshTotalDesc, prometheus.CounterValue, float64(n[1]), tok.Namespace, tok.Name, "failure")
			}
		}
		if t := tok.Status.ExpiresAt; t != nil {
			ch <- prometheus.MustNewConstMetric(expiryTimestampDesc, prometheus.GaugeValue, float64(t.Unix()), tok.Namespace, tok.Name)
		}
		if t := tok.Status.NextRefreshTime; t != nil {
			ch <- prometheus.MustNewConstMetric(nextRefreshTimestampDesc, prometheus.GaugeValue, float64(t.Unix()), tok.Namespace, tok.Name)
		}
	}
}
