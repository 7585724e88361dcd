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
	"net/http/httptest"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/endpoint"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/opsnow"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

// A hostile upstream, reached through the real OpsNow client over HTTP on
// 127.0.0.1, cannot drive a refresh loop nor put a malformed token where
// consumers read it.

// withTokenServer points the world at a local token server through the
// real client, on the world's fake clock.
func withTokenServer(t *testing.T, server *tokenserver.Server) worldOption {
	ts := httptest.NewServer(server)
	t.Cleanup(ts.Close)
	allow, err := endpoint.NewAllowlist(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	return func(o *Options) {
		o.Exchanger = opsnow.NewClient(opsnow.NewHTTPClient(2*time.Second), o.Clock)
		o.Endpoints, o.DefaultEndpoint = allow, ts.URL
	}
}

// runFor reconciles name at every wake-up the scheduler plans, for d of
// fake time, and returns how many reconciles ran.
func (w *world) runFor(name string, d time.Duration) int {
	w.t.Helper()
	end := w.clock.Now().Add(d)
	runs := 0
	for w.clock.Now().Before(end) && runs < 1000 {
		w.reconcile(name)
		runs++
		next := w.token(name).Status.NextRefreshTime
		if next == nil || !next.After(w.clock.Now()) {
			w.clock.Step(time.Second)
			continue
		}
		w.stepTo(next.Time)
	}
	return runs
}

// An upstream answering every request with a one-second lifetime costs at
// most a dozen token requests a minute, and every answer is a failure.
func TestShortLifetimesDoNotLoop(t *testing.T) {
	server := tokenserver.New(tokenserver.Options{Lifetime: time.Second})
	w := newWorld(t, withTokenServer(t, server))
	w.createAPIKey("k1")
	w.createToken("billing")
	w.runFor("billing", time.Minute)
	got := server.Requests()
	t.Logf("token requests in a minute of an upstream answering expiresIn 1: %d", got)
	if got > 12 || got == 0 {
		t.Errorf("token requests in a minute: got %d, want 1 to 12", got)
	}
	tok := w.expectReady("billing", metav1.ConditionFalse, authv1alpha1.ReasonInvalidResponse)
	if tok.Status.FailedAttempts == 0 {
		t.Error("no failed attempt recorded")
	}
	if s := w.secret("billing"); s != nil {
		t.Errorf("a one-second token was written to the Secret: %s", s.Data[authv1alpha1.SecretExpiresAtKey])
	}
}

// Tokens a consumer cannot safely put in an Authorization header are
// refused; the Secret keeps the good token it had.
func TestMalformedTokensAreNotWritten(t *testing.T) {
	for name, body := range map[string]string{
		"header injection": `{"accessToken":"abc\r\nX-Injected: yes","expiresIn":3600}`,
		"NUL":              `{"accessToken":"abc\u0000def","expiresIn":3600}`,
		"space":            `{"accessToken":"abc def","expiresIn":3600}`,
		"non-ASCII":        `{"accessToken":"abcdé","expiresIn":3600}`,
	} {
		t.Run(name, func(t *testing.T) {
			server := tokenserver.New(tokenserver.Options{})
			w := newWorld(t, withTokenServer(t, server))
			w.createAPIKey("k1")
			w.createToken("billing")
			w.reconcile("billing")
			good := string(w.secret("billing").Data[authv1alpha1.SecretTokenKey])

			server.SetFault(&tokenserver.Fault{Status: 200, Body: body})
			w.editToken("billing", func(tok *authv1alpha1.OpsnowToken) {
				tok.Annotations = map[string]string{authv1alpha1.RefreshRequestedAtAnnotation: "r1"}
			})
			w.reconcile("billing")
			if got := server.Requests(); got != 2 {
				t.Fatalf("token requests: got %d, want 2", got)
			}
			tok := w.expectReady("billing", metav1.ConditionTrue, authv1alpha1.ReasonTokenValid)
			if tok.Status.FailedAttempts != 1 {
				t.Errorf("failedAttempts: got %d, want 1 (InvalidResponse)", tok.Status.FailedAttempts)
			}
			if got := string(w.secret("billing").Data[authv1alpha1.SecretTokenKey]); got != good {
				t.Errorf("Secret token: got %q, want the good one kept", got)
			}
		})
	}
}
