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
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

var (
	refreshTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsnow_token_refresh_total",
		Help: "Token exchanges by OpsnowToken and result (success or failure).",
	}, []string{"namespace", "name", "result"})

	expiryTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "opsnow_token_expiry_timestamp_seconds",
		Help: "Unix time at which the token now in the target Secret expires.",
	}, []string{"namespace", "name"})

	nextRefreshTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "opsnow_token_next_refresh_timestamp_seconds",
		Help: "Unix time of the next planned refresh or retry.",
	}, []string{"namespace", "name"})

	exchangeDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "opsnow_token_exchange_duration_seconds",
		Help:    "Duration of HTTP token exchanges with OpsNow.",
		Buckets: []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	})
)

func init() {
	metrics.Registry.MustRegister(refreshTotal, expiryTimestamp, nextRefreshTimestamp, exchangeDuration)
}

// recordTokenMetrics sets the gauges from status.
func recordTokenMetrics(tok *authv1alpha1.OpsnowToken) {
	if t := tok.Status.ExpiresAt; t != nil {
		expiryTimestamp.WithLabelValues(tok.Namespace, tok.Name).Set(float64(t.Unix()))
	}
	if t := tok.Status.NextRefreshTime; t != nil {
		nextRefreshTimestamp.WithLabelValues(tok.Namespace, tok.Name).Set(float64(t.Unix()))
	} else {
		nextRefreshTimestamp.DeleteLabelValues(tok.Namespace, tok.Name)
	}
}

// deleteTokenMetrics drops the series of a deleted OpsnowToken.
func deleteTokenMetrics(key types.NamespacedName) {
	labels := prometheus.Labels{"namespace": key.Namespace, "name": key.Name}
	refreshTotal.DeletePartialMatch(labels)
	expiryTimestamp.Delete(labels)
	nextRefreshTimestamp.Delete(labels)
}
