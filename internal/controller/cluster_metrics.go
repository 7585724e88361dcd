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
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// ClusterOpsnowToken metrics. The SPEC fixes the label sets of the
// opsnow_token_* series ({namespace,name[,result]}); a kind label there
// would change series users already aggregate and alert on, and a
// cluster-scoped object has no namespace. So ClusterOpsnowTokens get their
// own series of the same shape, named opsnow_cluster_token_*, and share
// only the exchange-duration histogram, which has no labels.
var (
	clusterRefreshTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsnow_cluster_token_refresh_total",
		Help: "Token exchanges by ClusterOpsnowToken and result (success or failure).",
	}, []string{"name", "result"})

	clusterExpiryTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "opsnow_cluster_token_expiry_timestamp_seconds",
		Help: "Unix time at which the ClusterOpsnowToken's current token expires.",
	}, []string{"name"})

	clusterNextRefreshTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "opsnow_cluster_token_next_refresh_timestamp_seconds",
		Help: "Unix time of the ClusterOpsnowToken's next planned refresh or retry.",
	}, []string{"name"})

	clusterNamespaces = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "opsnow_cluster_token_namespaces",
		Help: "Namespaces of a ClusterOpsnowToken by state: selected, synced (holding the current token) or failed.",
	}, []string{"name", "state"})
)

func init() {
	metrics.Registry.MustRegister(clusterRefreshTotal, clusterExpiryTimestamp, clusterNextRefreshTimestamp, clusterNamespaces)
}

// recordClusterTokenMetrics sets the gauges from status.
func recordClusterTokenMetrics(ct *authv1alpha1.ClusterOpsnowToken) {
	st := ct.Status
	if t := st.ExpiresAt; t != nil {
		clusterExpiryTimestamp.WithLabelValues(ct.Name).Set(float64(t.Unix()))
	} else {
		clusterExpiryTimestamp.DeleteLabelValues(ct.Name)
	}
	if t := st.NextRefreshTime; t != nil {
		clusterNextRefreshTimestamp.WithLabelValues(ct.Name).Set(float64(t.Unix()))
	} else {
		clusterNextRefreshTimestamp.DeleteLabelValues(ct.Name)
	}
	clusterNamespaces.WithLabelValues(ct.Name, "selected").Set(float64(st.Namespaces.Selected))
	clusterNamespaces.WithLabelValues(ct.Name, "synced").Set(float64(st.Namespaces.Synced))
	clusterNamespaces.WithLabelValues(ct.Name, "failed").Set(float64(st.Namespaces.Failed))
}

// deleteClusterTokenMetrics drops the series of a deleted ClusterOpsnowToken.
func deleteClusterTokenMetrics(name string) {
	labels := prometheus.Labels{"name": name}
	clusterRefreshTotal.DeletePartialMatch(labels)
	clusterExpiryTimestamp.Delete(labels)
	clusterNextRefreshTimestamp.Delete(labels)
	clusterNamespaces.DeletePartialMatch(labels)
}
