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

package controller_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/controller"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/endpoint"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/opsnow"
)

// watchRecorder records the watches a manager opens, by path and the kind
// of object asked for (full objects or metadata only).
type watchRecorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen map[string]bool
}

func (w *watchRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Query().Get("watch") == "true" {
		key := req.URL.Path
		if strings.Contains(req.Header.Get("Accept"), "as=PartialObjectMetadata") {
			key += " metadata-only"
		}
		if sel := req.URL.Query().Get("labelSelector"); sel != "" {
			key += " labelSelector=" + sel
		}
		w.mu.Lock()
		w.seen[key] = true
		w.mu.Unlock()
	}
	return w.next.RoundTrip(req)
}

func (w *watchRecorder) watching(key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen[key]
}

// A standby replica, which never leads, runs every informer the reconciler
// uses: taking over then costs no initial list. Without the warm-up,
// controller-runtime would open the metadata-only Secret watch only when the
// controller starts, after winning the election.
func TestStandbyCachesAreWarm(t *testing.T) {
	requireControlPlane(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "standby-"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })

	// Another replica holds the Lease for an hour.
	const leaseName = "opsnow-token-operator.auth.opsnow.io"
	now := metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: leaseName},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity: ptr.To("the-leader"), LeaseDurationSeconds: ptr.To[int32](3600),
			AcquireTime: &now, RenewTime: &now,
		},
	}
	if err := k8s.Create(ctx, lease); err != nil {
		t.Fatalf("create Lease: %v", err)
	}
	apiKey := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "key"},
		Data:       map[string][]byte{authv1alpha1.DefaultAPIKeyKey: []byte("k")},
	}
	if err := k8s.Create(ctx, apiKey); err != nil {
		t.Fatalf("create API-key Secret: %v", err)
	}

	rec := &watchRecorder{seen: map[string]bool{}}
	cfg := rest.CopyConfig(managerConfig)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { rec.next = rt; return rec })
	namespaces := []string{ns.Name}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         controller.CacheOptions(namespaces),
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		Controller:                    config.Controller{SkipNameValidation: ptr.To(true)},
		LeaderElection:                true,
		LeaderElectionID:              leaseName,
		LeaderElectionNamespace:       ns.Name,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		t.Fatalf("create manager: %v", err)
	}
	clk := clocktesting.NewFakeClock(time.Now())
	allow, err := endpoint.NewAllowlist("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := controller.Setup(mgr, controller.Options{
		Clock:           clk,
		Exchanger:       opsnow.NewClient(opsnow.NewHTTPClient(time.Second), clk),
		Endpoints:       allow,
		DefaultEndpoint: "http://127.0.0.1:1",
		WatchNamespaces: namespaces,
	}); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("manager stopped with error: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("manager did not stop within %s", waitTimeout)
		}
	})

	base := "/apis/auth.opsnow.io/v1alpha1/namespaces/" + ns.Name + "/opsnowtokens"
	secrets := "/api/v1/namespaces/" + ns.Name + "/secrets"
	want := []string{base, secrets + " metadata-only"}
	deadline := time.Now().Add(waitTimeout)
	for _, key := range want {
		for !rec.watching(key) {
			if time.Now().After(deadline) {
				rec.mu.Lock()
				t.Fatalf("the standby opened no watch %q within %s; it watches %v", key, waitTimeout, rec.seen)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Secrets are watched by metadata only, on a standby as on a leader.
	rec.mu.Lock()
	for key := range rec.seen {
		if strings.HasPrefix(key, secrets) && !strings.HasSuffix(key, " metadata-only") {
			t.Errorf("the standby opened a watch of Secrets with their data: %q", key)
		}
	}
	rec.mu.Unlock()

	// It is a standby indeed: it reconciles nothing.
	select {
	case <-mgr.Elected():
		t.Fatalf("the manager was elected although another replica holds the Lease")
	default:
	}
	tok := &authv1alpha1.OpsnowToken{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "standby"},
		Spec:       authv1alpha1.OpsnowTokenSpec{APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: "key"}},
	}
	if err := k8s.Create(ctx, tok); err != nil {
		t.Fatalf("create OpsnowToken: %v", err)
	}
	time.Sleep(2 * time.Second)
	var target corev1.Secret
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "standby"}, &target); !apierrors.IsNotFound(err) {
		t.Errorf("the standby wrote a target Secret (get: %v), want none", err)
	}
}
