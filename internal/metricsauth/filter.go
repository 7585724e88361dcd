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

// Package metricsauth protects the metrics endpoint the way
// controller-runtime's filters.WithAuthenticationAndAuthorization and
// kube-rbac-proxy do: the caller's bearer token is authenticated with a
// TokenReview, and the request is authorized with a SubjectAccessReview
// for the verb and the non-resource path (get /metrics), so that the
// metrics-reader ClusterRole is what grants access.
//
// It exists because that filter links k8s.io/apiserver, and with it CEL,
// gRPC and OpenTelemetry: 20 MB of the manager's 54 MB binary, mapped into
// every replica's memory, for two API calls.
package metricsauth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// How long answers are reused, as the API server's delegating
// authenticator and authorizer do: a scrape every 15 s costs two reviews
// every few minutes, not two per scrape.
const (
	authenticatedTTL = 2 * time.Minute
	allowedTTL       = 5 * time.Minute
	deniedTTL        = 30 * time.Second
	// maxCached bounds the caches: callers with many tokens cannot grow them.
	maxCached = 256
	// reviewTimeout bounds one review, so that a slow API server cannot
	// pile up scrapes.
	reviewTimeout = 10 * time.Second
)

// Reviewer authenticates and authorizes metrics requests.
type Reviewer struct {
	tokens authenticationclient.TokenReviewInterface
	access authorizationclient.SubjectAccessReviewInterface
	clock  clock.PassiveClock

	mu       sync.Mutex
	users    map[[32]byte]cachedUser
	decision map[string]cachedDecision
}

type cachedUser struct {
	user    authenticationv1.UserInfo
	ok      bool
	expires time.Time
}

type cachedDecision struct {
	allowed bool
	expires time.Time
}

// NewReviewer returns a Reviewer that asks the API server of cfg.
func NewReviewer(cfg *rest.Config, httpClient *http.Client, clk clock.PassiveClock) (*Reviewer, error) {
	authn, err := authenticationclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("create TokenReview client: %w", err)
	}
	authz, err := authorizationclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("create SubjectAccessReview client: %w", err)
	}
	return &Reviewer{
		tokens:   authn.TokenReviews(),
		access:   authz.SubjectAccessReviews(),
		clock:    clk,
		users:    map[[32]byte]cachedUser{},
		decision: map[string]cachedDecision{},
	}, nil
}

// FilterProvider is a metricsserver.Options.FilterProvider.
func FilterProvider(cfg *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	r, err := NewReviewer(cfg, httpClient, clock.RealClock{})
	if err != nil {
		return nil, err
	}
	return r.Filter, nil
}

// Filter wraps handler: a request without a valid bearer token is 401, one
// whose user may not use the path is 403, and a failed review is 500.
func (r *Reviewer) Filter(log logr.Logger, handler http.Handler) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		token, ok := bearerToken(req)
		if !ok {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		ctx, cancel := context.WithTimeout(req.Context(), reviewTimeout)
		defer cancel()
		user, ok, err := r.authenticate(ctx, token)
		if err != nil {
			log.Error(err, "Authenticating a metrics request failed")
			http.Error(w, "Authentication failed", http.StatusInternalServerError)
			return
		}
		if !ok {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		verb := strings.ToLower(req.Method)
		allowed, err := r.authorize(ctx, user, verb, req.URL.Path)
		if err != nil {
			log.Error(err, "Authorizing a metrics request failed", "user", user.Username)
			http.Error(w, "Authorization failed", http.StatusInternalServerError)
			return
		}
		if !allowed {
			http.Error(w, fmt.Sprintf("Authorization denied for user %s", user.Username), http.StatusForbidden)
			return
		}
		handler.ServeHTTP(w, req)
	}), nil
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(req *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(req.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
		return "", false
	}
	return token, true
}

// authenticate returns who token belongs to, and false when it is not valid.
// Tokens are cached by hash, never kept themselves.
func (r *Reviewer) authenticate(ctx context.Context, token string) (authenticationv1.UserInfo, bool, error) {
	key := sha256.Sum256([]byte(token))
	now := r.clock.Now()
	r.mu.Lock()
	c, hit := r.users[key]
	r.mu.Unlock()
	if hit && now.Before(c.expires) {
		return c.user, c.ok, nil
	}
	review, err := r.tokens.Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token},
	}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.UserInfo{}, false, fmt.Errorf("create TokenReview: %w", err)
	}
	c = cachedUser{user: review.Status.User, ok: review.Status.Authenticated, expires: now.Add(authenticatedTTL)}
	if !c.ok {
		c.expires = now.Add(deniedTTL)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.users) >= maxCached {
		r.users = map[[32]byte]cachedUser{}
	}
	r.users[key] = c
	return c.user, c.ok, nil
}

// decisionKey identifies an authorization question: everything the
// SubjectAccessReview is asked with, extra attributes (such as scopes)
// included, so that a cached answer is never given to another question.
func decisionKey(user authenticationv1.UserInfo, verb, path string) string {
	key, _ := json.Marshal(struct { // marshalling strings and slices cannot fail
		User authenticationv1.UserInfo
		Verb string
		Path string
	}{user, verb, path})
	return string(key)
}

// authorize asks whether user may use verb on path.
func (r *Reviewer) authorize(ctx context.Context, user authenticationv1.UserInfo, verb, path string) (bool, error) {
	key := decisionKey(user, verb, path)
	now := r.clock.Now()
	r.mu.Lock()
	c, hit := r.decision[key]
	r.mu.Unlock()
	if hit && now.Before(c.expires) {
		return c.allowed, nil
	}
	extra := make(map[string]authorizationv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	review, err := r.access.Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:                  user.Username,
			UID:                   user.UID,
			Groups:                user.Groups,
			Extra:                 extra,
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("create SubjectAccessReview: %w", err)
	}
	c = cachedDecision{allowed: review.Status.Allowed, expires: now.Add(allowedTTL)}
	if !c.allowed {
		c.expires = now.Add(deniedTTL)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.decision) >= maxCached {
		r.decision = map[string]cachedDecision{}
	}
	r.decision[key] = c
	return c.allowed, nil
}
