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

package opsnow

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

const (
	testKey   = "ak-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
	testToken = "at-opaque-token-value-5d41402abc4b2a76b9719d911017c592"
)

var testNow = time.Date(2026, 11, 27, 13, 0, 0, 0, time.UTC)

// fakeJWT builds an unsigned-looking JWT with the given claims. The signature
// is junk: the client must never verify it, only read exp.
func fakeJWT(t *testing.T, claims map[string]any) string {
	t.Helper()
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatalf("marshal claims: %v", err)
	}
	sig := base64.RawURLEncoding.EncodeToString([]byte("not-a-real-signature-but-long-enough"))
	return header + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + sig
}

// jsonBody renders v as a JSON response body.
func jsonBody(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal body: %v", err)
	}
	return string(b)
}

// respond returns a handler answering every request with status and body.
func respond(status int, body string, header map[string]string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func newTestClient(t *testing.T, now time.Time) *Client {
	t.Helper()
	return NewClient(NewHTTPClient(5*time.Second), clocktesting.NewFakePassiveClock(now))
}

func TestExchangeSuccess(t *testing.T) {
	jwtExp := testNow.Add(45 * time.Minute)
	jwtWithExp := fakeJWT(t, map[string]any{"sub": "user", "exp": jwtExp.Unix()})
	jwtWithoutExp := fakeJWT(t, map[string]any{"sub": "user"})

	tests := []struct {
		name      string
		status    int       // 200 when zero
		now       time.Time // testNow when zero
		body      any
		wantToken string
		wantExp   time.Time
	}{
		{
			name:      "accessToken with expiresIn number",
			body:      map[string]any{"accessToken": testToken, "expiresIn": 3600},
			wantToken: testToken,
			wantExp:   testNow.Add(time.Hour),
		},
		{
			name:      "access_token with expires_in",
			body:      map[string]any{"access_token": testToken, "expires_in": 1800},
			wantToken: testToken,
			wantExp:   testNow.Add(30 * time.Minute),
		},
		{
			name:      "token without expiry uses default lifetime",
			body:      map[string]any{"token": testToken},
			wantToken: testToken,
			wantExp:   testNow.Add(3600 * time.Second),
		},
		{
			name:      "data.accessToken with expiresIn numeric string",
			body:      map[string]any{"data": map[string]any{"accessToken": testToken, "expiresIn": "7200"}},
			wantToken: testToken,
			wantExp:   testNow.Add(2 * time.Hour),
		},
		{
			name:      "result.access_token with expires_in",
			body:      map[string]any{"result": map[string]any{"access_token": testToken, "expires_in": 600}},
			wantToken: testToken,
			wantExp:   testNow.Add(10 * time.Minute),
		},
		{
			name:      "data.token with top-level expiresIn",
			body:      map[string]any{"code": 0, "expiresIn": 900, "data": map[string]any{"token": testToken}},
			wantToken: testToken,
			wantExp:   testNow.Add(15 * time.Minute),
		},
		{
			name:      "result.token without expiry",
			body:      map[string]any{"result": map[string]any{"token": testToken}},
			wantToken: testToken,
			wantExp:   testNow.Add(DefaultLifetime),
		},
		{
			name:      "expiry next to the token wins over top level",
			body:      map[string]any{"expiresIn": 200, "data": map[string]any{"accessToken": testToken, "expiresIn": 100}},
			wantToken: testToken,
			wantExp:   testNow.Add(100 * time.Second),
		},
		{
			name:      "top-level token wins over data",
			body:      map[string]any{"accessToken": testToken, "data": map[string]any{"accessToken": "other"}},
			wantToken: testToken,
			wantExp:   testNow.Add(DefaultLifetime),
		},
		{
			name:      "expiresAt RFC 3339 UTC",
			body:      map[string]any{"accessToken": testToken, "expiresAt": "2026-11-27T14:30:00Z"},
			wantToken: testToken,
			wantExp:   time.Date(2026, 11, 27, 14, 30, 0, 0, time.UTC),
		},
		{
			name:      "expiresAt RFC 3339 with offset and fraction",
			body:      map[string]any{"accessToken": testToken, "expiresAt": "2026-11-27T23:30:00.999+09:00"},
			wantToken: testToken,
			wantExp:   time.Date(2026, 11, 27, 14, 30, 0, 0, time.UTC),
		},
		{
			name:      "expiresAt Unix seconds",
			body:      map[string]any{"accessToken": testToken, "expiresAt": testNow.Add(2 * time.Hour).Unix()},
			wantToken: testToken,
			wantExp:   testNow.Add(2 * time.Hour),
		},
		{
			name:      "expiresAt Unix milliseconds",
			body:      map[string]any{"accessToken": testToken, "expiresAt": testNow.Add(90*time.Minute).UnixMilli() + 999},
			wantToken: testToken,
			wantExp:   testNow.Add(90 * time.Minute),
		},
		{
			name:      "expires_at Unix seconds as string",
			body:      map[string]any{"access_token": testToken, "expires_at": fmt.Sprint(testNow.Add(time.Hour).Unix())},
			wantToken: testToken,
			wantExp:   testNow.Add(time.Hour),
		},
		{
			name:      "expiration RFC 3339",
			body:      map[string]any{"token": testToken, "expiration": "2026-11-27T13:20:00Z"},
			wantToken: testToken,
			wantExp:   testNow.Add(20 * time.Minute),
		},
		{
			name:      "expiration Unix milliseconds as string",
			body:      map[string]any{"token": testToken, "expiration": fmt.Sprint(testNow.Add(time.Hour).UnixMilli())},
			wantToken: testToken,
			wantExp:   testNow.Add(time.Hour),
		},
		{
			name:      "expiresIn null falls through to expiresAt",
			body:      map[string]any{"accessToken": testToken, "expiresIn": nil, "expiresAt": "2026-11-27T13:30:00Z"},
			wantToken: testToken,
			wantExp:   testNow.Add(30 * time.Minute),
		},
		{
			name:      "JWT exp claim",
			body:      map[string]any{"accessToken": jwtWithExp},
			wantToken: jwtWithExp,
			wantExp:   jwtExp,
		},
		{
			name:      "expiresIn wins over JWT exp",
			body:      map[string]any{"accessToken": jwtWithExp, "expiresIn": 600},
			wantToken: jwtWithExp,
			wantExp:   testNow.Add(10 * time.Minute),
		},
		{
			name:      "JWT without exp uses default lifetime",
			body:      map[string]any{"accessToken": jwtWithoutExp},
			wantToken: jwtWithoutExp,
			wantExp:   testNow.Add(DefaultLifetime),
		},
		{
			name:      "fractional expiresIn rounds down to the second",
			body:      map[string]any{"accessToken": testToken, "expiresIn": 3599.9},
			wantToken: testToken,
			wantExp:   testNow.Add(3599 * time.Second),
		},
		{
			name:      "sub-second issue time rounds expiry down",
			now:       testNow.Add(700 * time.Millisecond),
			body:      map[string]any{"accessToken": testToken, "expiresIn": 3600},
			wantToken: testToken,
			wantExp:   testNow.Add(3600 * time.Second),
		},
		{
			name:      "201 Created is success",
			status:    http.StatusCreated,
			body:      map[string]any{"accessToken": testToken, "expiresIn": 60},
			wantToken: testToken,
			wantExp:   testNow.Add(time.Minute),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status := tc.status
			if status == 0 {
				status = http.StatusOK
			}
			now := tc.now
			if now.IsZero() {
				now = testNow
			}
			srv := httptest.NewServer(respond(status, jsonBody(t, tc.body), nil))
			defer srv.Close()

			tok, err := newTestClient(t, now).Exchange(context.Background(), srv.URL, testKey)
			if err != nil {
				t.Fatalf("Exchange: got error %q, want nil", err)
			}
			if tok.AccessToken != tc.wantToken {
				t.Errorf("AccessToken: got %q, want %q", tok.AccessToken, tc.wantToken)
			}
			if !tok.IssuedAt.Equal(now) {
				t.Errorf("IssuedAt: got %v, want %v", tok.IssuedAt, now)
			}
			if !tok.ExpiresAt.Equal(tc.wantExp) {
				t.Errorf("ExpiresAt: got %v, want %v", tok.ExpiresAt, tc.wantExp)
			}
			if got, want := tok.Lifetime(), tc.wantExp.Sub(now); got != want {
				t.Errorf("Lifetime: got %v, want %v", got, want)
			}
		})
	}
}

func TestExchangeRequest(t *testing.T) {
	tests := []struct {
		name     string
		suffix   string // appended to the server URL to form the endpoint
		wantPath string
	}{
		{name: "no trailing slash", suffix: "", wantPath: TokenPath},
		{name: "trailing slash", suffix: "/", wantPath: TokenPath},
		{name: "several trailing slashes", suffix: "//", wantPath: TokenPath},
		{name: "base path", suffix: "/gateway/", wantPath: "/gateway" + TokenPath},
		{name: "query dropped", suffix: "/?x=1", wantPath: TokenPath},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			type seen struct {
				method, path, rawQuery, contentType, accept, userAgent string
				body                                                   map[string]any
			}
			got := make(chan seen, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				s := seen{
					method:      r.Method,
					path:        r.URL.Path,
					rawQuery:    r.URL.RawQuery,
					contentType: r.Header.Get("Content-Type"),
					accept:      r.Header.Get("Accept"),
					userAgent:   r.Header.Get("User-Agent"),
				}
				if err := json.NewDecoder(r.Body).Decode(&s.body); err != nil {
					t.Errorf("request body: got invalid JSON (%v), want {\"apiKey\": ...}", err)
				}
				got <- s
				respond(http.StatusOK, `{"accessToken":"`+testToken+`"}`, nil)(w, r)
			}))
			defer srv.Close()

			if _, err := newTestClient(t, testNow).Exchange(context.Background(), srv.URL+tc.suffix, testKey); err != nil {
				t.Fatalf("Exchange: got error %q, want nil", err)
			}
			s := <-got
			if s.method != http.MethodPost {
				t.Errorf("method: got %q, want %q", s.method, http.MethodPost)
			}
			if s.path != tc.wantPath {
				t.Errorf("path: got %q, want %q", s.path, tc.wantPath)
			}
			if s.rawQuery != "" {
				t.Errorf("query: got %q, want none", s.rawQuery)
			}
			if s.contentType != "application/json" {
				t.Errorf("Content-Type: got %q, want %q", s.contentType, "application/json")
			}
			if s.accept != "application/json" {
				t.Errorf("Accept: got %q, want %q", s.accept, "application/json")
			}
			if s.userAgent != "opsnow-token-operator" {
				t.Errorf("User-Agent: got %q, want %q", s.userAgent, "opsnow-token-operator")
			}
			if len(s.body) != 1 || s.body["apiKey"] != testKey {
				t.Errorf("body: got %v, want {apiKey: %q}", s.body, testKey)
			}
		})
	}
}

// failureCase is one way for Exchange to fail.
type failureCase struct {
	name           string
	handler        http.Handler // served by an httptest server; the endpoint is its URL
	endpoint       func(t *testing.T) string
	ctx            func() (context.Context, context.CancelFunc)
	client         *http.Client
	wantKind       error
	wantStatus     int
	wantRetryAfter time.Duration
	wantDetail     string // substring of err.Error()
	wantError      string // all of err.Error(), when set
	secrets        []string
	apiKey         string // testKey when empty
}

func runFailureCases(t *testing.T, tests []failureCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := ""
			if tc.handler != nil {
				srv := httptest.NewServer(tc.handler)
				defer srv.Close()
				endpoint = srv.URL
			}
			if tc.endpoint != nil {
				endpoint = tc.endpoint(t)
			}
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if tc.ctx != nil {
				ctx, cancel = tc.ctx()
			}
			defer cancel()
			hc := tc.client
			if hc == nil {
				hc = NewHTTPClient(5 * time.Second)
			}
			c := NewClient(hc, clocktesting.NewFakePassiveClock(testNow))
			apiKey := tc.apiKey
			if apiKey == "" {
				apiKey = testKey
			}

			tok, err := c.Exchange(ctx, endpoint, apiKey)
			assertFailure(t, tok, err, tc)
		})
	}
}

func assertFailure(t *testing.T, tok Token, err error, tc failureCase) {
	t.Helper()
	if err == nil {
		t.Fatalf("Exchange: got token expiring %v and nil error, want %v", tok.ExpiresAt, tc.wantKind)
	}
	if tok != (Token{}) {
		t.Errorf("token: got %+v, want zero Token on error", tok)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error type: got %T (%q), want *opsnow.Error", err, err)
	}
	if !errors.Is(err, tc.wantKind) {
		t.Errorf("errors.Is: got kind %v (%q), want %v", e.Kind, err, tc.wantKind)
	}
	if e.StatusCode != tc.wantStatus {
		t.Errorf("StatusCode: got %d, want %d (%q)", e.StatusCode, tc.wantStatus, err)
	}
	if e.RetryAfter != tc.wantRetryAfter {
		t.Errorf("RetryAfter: got %v, want %v", e.RetryAfter, tc.wantRetryAfter)
	}
	msg := err.Error()
	t.Logf("error: %s", msg)
	if !strings.Contains(msg, tc.wantDetail) {
		t.Errorf("Error(): got %q, want it to contain %q", msg, tc.wantDetail)
	}
	if tc.wantError != "" && msg != tc.wantError {
		t.Errorf("Error(): got %q, want %q", msg, tc.wantError)
	}
	if msg != strings.ToLower(msg[:1])+msg[1:] {
		t.Errorf("Error(): got %q, want a lowercase start", msg)
	}
	for _, secret := range append([]string{testKey, testToken, tc.apiKey}, tc.secrets...) {
		if secret == "" {
			continue
		}
		if strings.Contains(msg, secret) || strings.Contains(e.Detail, secret) {
			t.Errorf("Error(): got %q, want it without secret %q", msg, secret)
		}
		if w := encodedLeak(msg, secret, ""); w != "" {
			t.Errorf("Error(): got %q, want it without %q, a part of secret %q in some encoding", msg, w, secret)
		}
	}
}

func TestExchangeHTTPStatusFailures(t *testing.T) {
	leakedJWT := fakeJWT(t, map[string]any{"sub": "someone", "exp": testNow.Add(time.Hour).Unix()})
	retryDate := testNow.Add(90 * time.Second).Format(http.TimeFormat)

	runFailureCases(t, []failureCase{
		{
			name:       "401 echoing the API key",
			handler:    respond(http.StatusUnauthorized, `{"message":"invalid api key `+testKey+`"}`, nil),
			wantKind:   ErrUnauthorized,
			wantStatus: 401,
			wantDetail: "unauthorized: HTTP 401: invalid api key [REDACTED]",
		},
		{
			name:       "403",
			handler:    respond(http.StatusForbidden, `{"error":"forbidden"}`, nil),
			wantKind:   ErrUnauthorized,
			wantStatus: 403,
			wantDetail: "HTTP 403: forbidden",
		},
		{
			name:       "500 with a JWT in the body",
			handler:    respond(http.StatusInternalServerError, `{"message":"token `+leakedJWT+` rejected"}`, nil),
			wantKind:   ErrUnavailable,
			wantStatus: 500,
			wantDetail: "upstream unavailable: HTTP 500: token [REDACTED] rejected",
			secrets:    []string{leakedJWT},
		},
		{
			name:       "502 with an HTML page is not quoted",
			handler:    respond(http.StatusBadGateway, "<html>\n<head><title>502 Bad Gateway</title></head>\n</html>", nil),
			wantKind:   ErrUnavailable,
			wantStatus: 502,
			wantError:  "upstream unavailable: HTTP 502",
		},
		{
			name:           "503 with Retry-After seconds",
			handler:        respond(http.StatusServiceUnavailable, `{"message":"maintenance"}`, map[string]string{"Retry-After": "120"}),
			wantKind:       ErrUnavailable,
			wantStatus:     503,
			wantRetryAfter: 2 * time.Minute,
			wantDetail:     "upstream unavailable: HTTP 503: maintenance (retry after 2m0s)",
		},
		{
			name:           "503 with Retry-After over the cap",
			handler:        respond(http.StatusServiceUnavailable, "", map[string]string{"Retry-After": "86400"}),
			wantKind:       ErrUnavailable,
			wantStatus:     503,
			wantRetryAfter: time.Hour,
			wantDetail:     "HTTP 503",
		},
		{
			name:           "429 with Retry-After HTTP-date",
			handler:        respond(http.StatusTooManyRequests, `{"error":{"message":"slow down"}}`, map[string]string{"Retry-After": retryDate}),
			wantKind:       ErrUnavailable,
			wantStatus:     429,
			wantRetryAfter: 90 * time.Second,
			wantDetail:     "HTTP 429: slow down",
		},
		{
			name:       "429 without Retry-After",
			handler:    respond(http.StatusTooManyRequests, "", nil),
			wantKind:   ErrUnavailable,
			wantStatus: 429,
			wantDetail: "upstream unavailable: HTTP 429",
		},
		{
			name:       "429 with garbage Retry-After",
			handler:    respond(http.StatusTooManyRequests, "", map[string]string{"Retry-After": "soon"}),
			wantKind:   ErrUnavailable,
			wantStatus: 429,
			wantDetail: "HTTP 429",
		},
		{
			name:       "408",
			handler:    respond(http.StatusRequestTimeout, "", nil),
			wantKind:   ErrUnavailable,
			wantStatus: 408,
			wantDetail: "HTTP 408",
		},
		{
			name:       "425",
			handler:    respond(http.StatusTooEarly, "", nil),
			wantKind:   ErrUnavailable,
			wantStatus: 425,
			wantDetail: "HTTP 425",
		},
		{
			name:       "504 ignores Retry-After",
			handler:    respond(http.StatusGatewayTimeout, "", map[string]string{"Retry-After": "30"}),
			wantKind:   ErrUnavailable,
			wantStatus: 504,
			wantDetail: "HTTP 504",
		},
		{
			name:       "404",
			handler:    respond(http.StatusNotFound, `{"message":"Not Found"}`, nil),
			wantKind:   ErrInvalidResponse,
			wantStatus: 404,
			wantDetail: "invalid response: unexpected HTTP status 404: Not Found",
		},
		{
			name:       "400 with OAuth-style error",
			handler:    respond(http.StatusBadRequest, `{"error":"invalid_request","error_description":"apiKey is required"}`, nil),
			wantKind:   ErrInvalidResponse,
			wantStatus: 400,
			wantDetail: "unexpected HTTP status 400: apiKey is required",
		},
		{
			name:       "503 with a body over 1 MiB",
			handler:    respond(http.StatusServiceUnavailable, strings.Repeat("overloaded ", 200_000), nil),
			wantKind:   ErrUnavailable,
			wantStatus: 503,
			wantError:  "upstream unavailable: HTTP 503",
		},
		{
			name:       "503 with a long message",
			handler:    respond(http.StatusServiceUnavailable, `{"message":"`+strings.Repeat("overloaded ", 50_000)+`"}`, nil),
			wantKind:   ErrUnavailable,
			wantStatus: 503,
			wantError:  "upstream unavailable: HTTP 503: " + strings.Repeat("overloaded ", 18) + "ov…",
		},
		{
			name:       "400 with errors[0] as a string",
			handler:    respond(http.StatusBadRequest, `{"errors":["apiKey is required"]}`, nil),
			wantKind:   ErrInvalidResponse,
			wantStatus: 400,
			wantError:  "invalid response: unexpected HTTP status 400: apiKey is required",
		},
		{
			name:       "404 without a message field",
			handler:    respond(http.StatusNotFound, `{"status":404,"path":"/platform/v2/identity/api-keys/token"}`, nil),
			wantKind:   ErrInvalidResponse,
			wantStatus: 404,
			wantError:  "invalid response: unexpected HTTP status 404",
		},
		{
			name:       "500 carrying a token along with the error",
			handler:    respond(http.StatusInternalServerError, `{"accessToken":"plainwordtoken","message":"could not store plainwordtoken"}`, nil),
			wantKind:   ErrUnavailable,
			wantStatus: 500,
			wantError:  "upstream unavailable: HTTP 500: could not store [REDACTED]",
			secrets:    []string{"plainwordtoken"},
		},
	})
}

func TestExchangeInvalidSuccessBodies(t *testing.T) {
	pastJWT := fakeJWT(t, map[string]any{"exp": testNow.Add(-time.Minute).Unix()})
	badExpJWT := fakeJWT(t, map[string]any{"exp": "tomorrow"})
	ok := func(body string) http.Handler { return respond(http.StatusOK, body, nil) }

	// Every case is a 200 response, so kind and status are the same for all.
	tests := []failureCase{
		{name: "not JSON", handler: ok(`<html>` + testToken + `</html>`), wantDetail: "not valid JSON"},
		{name: "empty body", handler: ok(``), wantDetail: "not valid JSON"},
		{name: "JSON array", handler: ok(`["` + testToken + `"]`), wantDetail: "not a JSON object"},
		{name: "JSON null", handler: ok(`null`), wantDetail: "not a JSON object"},
		{name: "missing token", handler: ok(`{"expiresIn":3600,"tokenType":"Bearer"}`), wantDetail: "no access token"},
		{name: "empty token", handler: ok(`{"accessToken":"","expiresIn":3600}`), wantDetail: "accessToken is empty"},
		{name: "blank token", handler: ok(`{"data":{"token":"   "}}`), wantDetail: "token is empty"},
		{name: "token not a string", handler: ok(`{"access_token":12345}`), wantDetail: "access_token is not a string"},
		{name: "token null", handler: ok(`{"accessToken":null}`), wantDetail: "accessToken is not a string"},
		{name: "token is an object", handler: ok(`{"token":{"value":"` + testToken + `"}}`), wantDetail: "token is not a string"},
		{name: "expiresAt in the past", handler: ok(`{"accessToken":"` + testToken + `","expiresAt":"2026-11-27T12:59:59Z"}`), wantDetail: "expiresAt is not after"},
		{name: "expiresAt equal to issue time", handler: ok(`{"accessToken":"` + testToken + `","expiresAt":"2026-11-27T13:00:00Z"}`), wantDetail: "expiresAt is not after"},
		{name: "expiresAt garbage", handler: ok(`{"accessToken":"` + testToken + `","expiresAt":"` + testToken + `"}`), wantDetail: "expiresAt is not an RFC 3339 time"},
		{name: "expiration in microseconds", handler: ok(`{"accessToken":"` + testToken + `","expiration":1795780800000000}`), wantDetail: "expiration is not an RFC 3339 time"},
		{name: "expiresIn zero", handler: ok(`{"accessToken":"` + testToken + `","expiresIn":0}`), wantDetail: "expiresIn is not positive"},
		{name: "expiresIn negative", handler: ok(`{"accessToken":"` + testToken + `","expiresIn":-60}`), wantDetail: "expiresIn is not positive"},
		{name: "expiresIn NaN string", handler: ok(`{"accessToken":"` + testToken + `","expiresIn":"NaN"}`), wantDetail: "expiresIn is not a number"},
		{name: "expiresIn Inf string", handler: ok(`{"accessToken":"` + testToken + `","expires_in":"+Inf"}`), wantDetail: "expires_in is not a number"},
		{name: "expiresIn overflowing", handler: ok(`{"accessToken":"` + testToken + `","expiresIn":1e400}`), wantDetail: "expiresIn is not a number"},
		{name: "expiresIn boolean", handler: ok(`{"accessToken":"` + testToken + `","expiresIn":true}`), wantDetail: "expiresIn is not a number"},
		{name: "expiresIn under a second", handler: ok(`{"accessToken":"` + testToken + `","expiresIn":0.5}`), wantDetail: "expires before it was issued"},
		{name: "JWT exp in the past, expiresIn ahead", handler: ok(`{"accessToken":"` + pastJWT + `","expiresIn":3600}`), wantDetail: "JWT exp claim is not after", secrets: []string{pastJWT}},
		{name: "JWT exp malformed, expiresIn ahead", handler: ok(`{"accessToken":"` + badExpJWT + `","expiresIn":3600}`), wantDetail: "JWT exp claim is not a NumericDate", secrets: []string{badExpJWT}},
		{name: "JWT exp in the past", handler: ok(`{"accessToken":"` + pastJWT + `"}`), wantDetail: "JWT exp claim is not after", secrets: []string{pastJWT}},
		{name: "JWT exp malformed", handler: ok(`{"accessToken":"` + badExpJWT + `"}`), wantDetail: "JWT exp claim is not a NumericDate", secrets: []string{badExpJWT}},
		{
			name:       "body over 1 MiB",
			handler:    ok(`{"accessToken":"` + testToken + `","padding":"` + strings.Repeat("x", 1<<20) + `"}`),
			wantDetail: "response body exceeds 1 MiB",
		},
	}
	for i := range tests {
		tests[i].wantKind = ErrInvalidResponse
		tests[i].wantStatus = http.StatusOK
	}
	runFailureCases(t, tests)
}

func TestExchangeNetworkFailures(t *testing.T) {
	// The handler consumes the body first: only then does net/http watch the
	// connection and cancel r.Context() when the client gives up.
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(time.Second):
		}
	})

	runFailureCases(t, []failureCase{
		{
			name:       "client timeout",
			handler:    slow,
			client:     NewHTTPClient(200 * time.Millisecond),
			wantKind:   ErrUnavailable,
			wantDetail: "request timed out",
		},
		{
			name:    "context deadline",
			handler: slow,
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 200*time.Millisecond)
			},
			wantKind:   ErrUnavailable,
			wantDetail: "request timed out",
		},
		{
			name:    "context canceled",
			handler: respond(http.StatusOK, `{"accessToken":"`+testToken+`"}`, nil),
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			},
			wantKind:   ErrUnavailable,
			wantDetail: "request canceled",
		},
		{
			name:       "connection refused",
			endpoint:   closedListenerURL,
			wantKind:   ErrUnavailable,
			wantDetail: TokenPath + ": connection refused",
		},
		{
			name:       "endpoint with unsupported scheme",
			endpoint:   func(*testing.T) string { return "ftp://api.opsnow.io" },
			wantKind:   ErrInvalidResponse,
			wantDetail: "scheme must be https or http",
		},
		{
			name:       "endpoint without host",
			endpoint:   func(*testing.T) string { return "https:///path" },
			wantKind:   ErrInvalidResponse,
			wantDetail: "missing host",
		},
	})
}

// closedListenerURL returns the URL of a port nobody listens on.
func closedListenerURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	return "http://" + addr
}

func TestExchangeRedirects(t *testing.T) {
	t.Run("redirect to another host is refused", func(t *testing.T) {
		var otherHits atomic.Int32
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			otherHits.Add(1)
			respond(http.StatusOK, `{"accessToken":"`+testToken+`"}`, nil)(w, r)
		}))
		defer other.Close()
		origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+TokenPath+"?steal=yes&sig=abcdef", http.StatusTemporaryRedirect)
		}))
		defer origin.Close()

		tok, err := newTestClient(t, testNow).Exchange(context.Background(), origin.URL, testKey)
		assertFailure(t, tok, err, failureCase{
			wantKind:   ErrInvalidResponse,
			wantStatus: http.StatusTemporaryRedirect,
			wantDetail: "redirect to another host refused",
		})
		if n := otherHits.Load(); n != 0 {
			t.Errorf("requests to the other host: got %d, want 0", n)
		}
		if err != nil && (strings.Contains(err.Error(), "steal") || strings.Contains(err.Error(), TokenPath)) {
			t.Errorf("Error(): got %q, want no path or query of the redirect target", err)
		}
	})

	t.Run("redirect is refused even with a caller's client", func(t *testing.T) {
		var otherHits atomic.Int32
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			otherHits.Add(1)
		}))
		defer other.Close()
		origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL, http.StatusPermanentRedirect)
		}))
		defer origin.Close()

		c := NewClient(&http.Client{Timeout: 5 * time.Second}, clocktesting.NewFakePassiveClock(testNow))
		_, err := c.Exchange(context.Background(), origin.URL, testKey)
		if !errors.Is(err, ErrInvalidResponse) {
			t.Errorf("Exchange: got %v, want ErrInvalidResponse", err)
		}
		if n := otherHits.Load(); n != 0 {
			t.Errorf("requests to the other host: got %d, want 0", n)
		}
	})

	t.Run("same-host 307 is followed with the body", func(t *testing.T) {
		mux := http.NewServeMux()
		mux.HandleFunc(TokenPath, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/v3/token", http.StatusTemporaryRedirect)
		})
		mux.HandleFunc("/v3/token", func(w http.ResponseWriter, r *http.Request) {
			var body map[string]string
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body["apiKey"] != testKey {
				t.Errorf("redirected request body: got %v (err %v), want apiKey", body, err)
			}
			if r.Method != http.MethodPost {
				t.Errorf("redirected method: got %s, want POST", r.Method)
			}
			respond(http.StatusOK, `{"accessToken":"`+testToken+`","expiresIn":60}`, nil)(w, r)
		})
		srv := httptest.NewServer(mux)
		defer srv.Close()

		tok, err := newTestClient(t, testNow).Exchange(context.Background(), srv.URL, testKey)
		if err != nil {
			t.Fatalf("Exchange: got error %q, want nil", err)
		}
		if tok.AccessToken != testToken {
			t.Errorf("AccessToken: got %q, want %q", tok.AccessToken, testToken)
		}
		if want := testNow.Add(time.Minute); !tok.ExpiresAt.Equal(want) {
			t.Errorf("ExpiresAt: got %v, want %v", tok.ExpiresAt, want)
		}
	})

	t.Run("redirect loop stops after 3", func(t *testing.T) {
		var hits atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			http.Redirect(w, r, r.URL.Path, http.StatusTemporaryRedirect)
		}))
		defer srv.Close()

		tok, err := newTestClient(t, testNow).Exchange(context.Background(), srv.URL, testKey)
		assertFailure(t, tok, err, failureCase{
			wantKind:   ErrInvalidResponse,
			wantStatus: http.StatusTemporaryRedirect,
			wantDetail: "stopped after 3 redirects",
		})
		if n := hits.Load(); n != 4 {
			t.Errorf("requests: got %d, want 4 (the original and 3 redirects)", n)
		}
	})
}

func TestCheckRedirect(t *testing.T) {
	mustReq := func(rawURL string) *http.Request {
		req, err := http.NewRequest(http.MethodPost, rawURL, nil)
		if err != nil {
			t.Fatalf("new request %q: %v", rawURL, err)
		}
		return req
	}
	tests := []struct {
		name    string
		from    string
		to      string
		hops    int // requests already made
		wantErr string
	}{
		{name: "same origin", from: "https://api.opsnow.io/a", to: "https://api.opsnow.io/b", hops: 1},
		{name: "explicit default port", from: "https://api.opsnow.io/a", to: "https://API.opsnow.io:443/b", hops: 1},
		{name: "third redirect", from: "https://api.opsnow.io/a", to: "https://api.opsnow.io/b", hops: 3},
		{name: "fourth redirect", from: "https://api.opsnow.io/a", to: "https://api.opsnow.io/b", hops: 4, wantErr: "stopped after 3 redirects"},
		{name: "other host", from: "https://api.opsnow.io/a", to: "https://evil.example/b?k=v", hops: 1, wantErr: "redirect to another host refused (https://evil.example)"},
		{name: "other port", from: "https://api.opsnow.io/a", to: "https://api.opsnow.io:8443/b", hops: 1, wantErr: "another host"},
		{name: "https to http", from: "https://api.opsnow.io/a", to: "http://api.opsnow.io/b", hops: 1, wantErr: "another scheme"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			via := make([]*http.Request, tc.hops)
			for i := range via {
				via[i] = mustReq(tc.from)
			}
			err := checkRedirect(mustReq(tc.to), via)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("checkRedirect: got %q, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("checkRedirect: got %v, want error containing %q", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "k=v") {
				t.Errorf("checkRedirect: got %q, want no query of the target", err)
			}
		})
	}
}

func TestNewHTTPClient(t *testing.T) {
	hc := NewHTTPClient(7 * time.Second)
	if hc.Timeout != 7*time.Second {
		t.Errorf("Timeout: got %v, want 7s", hc.Timeout)
	}
	if hc.CheckRedirect == nil {
		t.Errorf("CheckRedirect: got nil, want the same-origin policy")
	}
	tr, ok := hc.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("Transport: got %T, want *http.Transport", hc.Transport)
	}
	if tr.TLSClientConfig == nil || tr.TLSClientConfig.MinVersion != tls.VersionTLS12 {
		t.Errorf("TLS MinVersion: got %+v, want TLS 1.2", tr.TLSClientConfig)
	}
	if tr.Proxy == nil {
		t.Errorf("Proxy: got nil, want http.ProxyFromEnvironment")
	}
	if tr.TLSHandshakeTimeout <= 0 || tr.ResponseHeaderTimeout <= 0 {
		t.Errorf("timeouts: got handshake %v, response header %v, want both set", tr.TLSHandshakeTimeout, tr.ResponseHeaderTimeout)
	}
	if tr.MaxIdleConnsPerHost < 100 {
		t.Errorf("MaxIdleConnsPerHost: got %d, want at least 100", tr.MaxIdleConnsPerHost)
	}
	if !tr.ForceAttemptHTTP2 {
		t.Errorf("ForceAttemptHTTP2: got false, want true")
	}
	if got := NewHTTPClient(0).Timeout; got != DefaultTimeout {
		t.Errorf("Timeout for 0: got %v, want %v", got, DefaultTimeout)
	}
}

func TestExchangeTLS(t *testing.T) {
	// Failed handshakes are the point of two cases; keep them out of the log.
	quiet := log.New(io.Discard, "", 0)
	srv := httptest.NewUnstartedServer(respond(http.StatusOK, `{"accessToken":"`+testToken+`","expiresIn":3600}`, nil))
	srv.Config.ErrorLog = quiet
	srv.StartTLS()
	defer srv.Close()

	t.Run("trusted server", func(t *testing.T) {
		hc := NewHTTPClient(5 * time.Second)
		tr := hc.Transport.(*http.Transport).Clone()
		tr.TLSClientConfig = tr.TLSClientConfig.Clone()
		tr.TLSClientConfig.RootCAs = srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
		hc.Transport = tr

		tok, err := NewClient(hc, clocktesting.NewFakePassiveClock(testNow)).Exchange(context.Background(), srv.URL, testKey)
		if err != nil {
			t.Fatalf("Exchange: got error %q, want nil", err)
		}
		if want := testNow.Add(time.Hour); !tok.ExpiresAt.Equal(want) {
			t.Errorf("ExpiresAt: got %v, want %v", tok.ExpiresAt, want)
		}
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		tok, err := newTestClient(t, testNow).Exchange(context.Background(), srv.URL, testKey)
		assertFailure(t, tok, err, failureCase{
			wantKind:   ErrUnavailable,
			wantDetail: "TLS certificate verification failed",
		})
	})

	t.Run("TLS 1.1 server is refused", func(t *testing.T) {
		old := httptest.NewUnstartedServer(respond(http.StatusOK, `{"accessToken":"`+testToken+`"}`, nil))
		old.TLS = &tls.Config{MaxVersion: tls.VersionTLS11}
		old.Config.ErrorLog = quiet
		old.StartTLS()
		defer old.Close()

		hc := NewHTTPClient(5 * time.Second)
		tr := hc.Transport.(*http.Transport)
		tr.TLSClientConfig.RootCAs = old.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
		tok, err := NewClient(hc, clocktesting.NewFakePassiveClock(testNow)).Exchange(context.Background(), old.URL, testKey)
		assertFailure(t, tok, err, failureCase{wantKind: ErrUnavailable, wantDetail: "POST https://"})
	})
}

func TestExchangeConcurrent(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		respond(http.StatusOK, fmt.Sprintf(`{"accessToken":"token-%d","expiresIn":%d}`, n, 60*n), nil)(w, r)
	}))
	defer srv.Close()

	c := newTestClient(t, testNow)
	const workers = 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			tok, err := c.Exchange(context.Background(), srv.URL, testKey)
			if err != nil {
				errs <- err
				return
			}
			if tok.Lifetime() <= 0 || !strings.HasPrefix(tok.AccessToken, "token-") {
				errs <- fmt.Errorf("got token %q with lifetime %v, want token-N with a positive lifetime", tok.AccessToken, tok.Lifetime())
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Exchange: %v", err)
	}
	if n := hits.Load(); n != workers {
		t.Errorf("requests: got %d, want %d", n, workers)
	}
}

func TestParseRetryAfter(t *testing.T) {
	tests := []struct {
		name  string
		value string
		want  time.Duration
	}{
		{name: "absent", value: "", want: 0},
		{name: "seconds", value: "120", want: 2 * time.Minute},
		{name: "seconds with spaces", value: " 30 ", want: 30 * time.Second},
		{name: "zero", value: "0", want: 0},
		{name: "negative", value: "-5", want: 0},
		{name: "plus sign", value: "+5", want: 0},
		{name: "fraction", value: "1.5", want: 0},
		{name: "garbage", value: "later", want: 0},
		{name: "capped seconds", value: "7200", want: time.Hour},
		{name: "overflowing seconds", value: "99999999999999999999999", want: time.Hour},
		{name: "HTTP-date ahead", value: testNow.Add(45 * time.Second).Format(http.TimeFormat), want: 45 * time.Second},
		{name: "HTTP-date past", value: testNow.Add(-time.Minute).Format(http.TimeFormat), want: 0},
		{name: "HTTP-date far ahead", value: testNow.Add(48 * time.Hour).Format(http.TimeFormat), want: time.Hour},
		{name: "RFC 850 date", value: testNow.Add(10 * time.Second).Format("Monday, 02-Jan-06 15:04:05 GMT"), want: 10 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseRetryAfter(tc.value, testNow); got != tc.want {
				t.Errorf("parseRetryAfter(%q): got %v, want %v", tc.value, got, tc.want)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{name: "status and detail", err: &Error{Kind: ErrUnavailable, StatusCode: 503, Detail: "maintenance"}, want: "upstream unavailable: HTTP 503: maintenance"},
		{name: "retry after", err: &Error{Kind: ErrUnavailable, StatusCode: 429, RetryAfter: 30 * time.Second}, want: "upstream unavailable: HTTP 429 (retry after 30s)"},
		{name: "no response", err: &Error{Kind: ErrUnavailable, Detail: "POST https://h/p: connection refused"}, want: "upstream unavailable: POST https://h/p: connection refused"},
		{name: "unexpected status", err: &Error{Kind: ErrInvalidResponse, StatusCode: 404, Detail: "unexpected HTTP status 404"}, want: "invalid response: unexpected HTTP status 404"},
		{name: "unauthorized without detail", err: &Error{Kind: ErrUnauthorized, StatusCode: 401}, want: "unauthorized: HTTP 401"},
		{name: "no kind", err: &Error{Detail: "x"}, want: "token exchange failed: x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error(): got %q, want %q", got, tc.want)
			}
		})
	}

	wrapped := fmt.Errorf("exchange API key: %w", &Error{Kind: ErrUnauthorized, StatusCode: 401})
	if !errors.Is(wrapped, ErrUnauthorized) || errors.Is(wrapped, ErrUnavailable) {
		t.Errorf("errors.Is through fmt.Errorf: got Unauthorized=%t Unavailable=%t, want true, false",
			errors.Is(wrapped, ErrUnauthorized), errors.Is(wrapped, ErrUnavailable))
	}
}

// echoKey holds the characters encoders treat specially ('/' and '+'); each
// part between them is shorter than the runs redacted as credentials.
const echoKey = "Zk3pQ8rT2vX6bN1mF6/hJ5sL9wE4yU7cP7+aB3dG"

// An upstream that echoes the API key in an error body, encoded in some way
// or split, must not get any part of it into the error. Only a recognised
// message field is quoted; without one the error is just the status.
func TestExchangeRedactsEncodedKeyEcho(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte("apiKey=" + echoKey))
	tests := []failureCase{
		{
			name:      "401 without a message field, JSON-escaped echo",
			handler:   respond(http.StatusUnauthorized, `{"apiKey":"Zk3pQ8rT2vX6bN1mF6\/hJ5sL9wE4yU7cP7+aB3dG"}`, nil),
			wantKind:  ErrUnauthorized,
			wantError: "unauthorized: HTTP 401",
		},
		{
			name:      "401 message with a JSON-escaped echo",
			handler:   respond(http.StatusUnauthorized, `{"message":"invalid key Zk3pQ8rT2vX6bN1mF6\\\/hJ5sL9wE4yU7cP7+aB3dG"}`, nil),
			wantKind:  ErrUnauthorized,
			wantError: "unauthorized: HTTP 401: invalid key [REDACTED]",
		},
		{
			name:      "401 message with a split echo",
			handler:   respond(http.StatusUnauthorized, `{"message":"key starts Zk3pQ8rT2vX6bN1m and ends hJ5sL9wE4yU7cP7+aB3dG"}`, nil),
			wantKind:  ErrUnauthorized,
			wantError: "unauthorized: HTTP 401: key starts [REDACTED] and ends [REDACTED]",
		},
		{
			name:      "400 message with a \\u00XX-escaped echo",
			handler:   respond(http.StatusBadRequest, `{"error_description":"apiKey Zk3pQ8rT2vX6bN1mF6\\u002FhJ5sL9wE4yU7cP7\\u002BaB3dG is malformed"}`, nil),
			wantKind:  ErrInvalidResponse,
			wantError: "invalid response: unexpected HTTP status 400: apiKey [REDACTED] is malformed",
		},
		{
			name:      "400 message with a URL-encoded echo",
			handler:   respond(http.StatusBadRequest, `{"message":"bad request: apiKey=Zk3pQ8rT2vX6bN1mF6%2FhJ5sL9wE4yU7cP7%2BaB3dG"}`, nil),
			wantKind:  ErrInvalidResponse,
			wantError: "invalid response: unexpected HTTP status 400: bad request: apiKey=[REDACTED]",
		},
		{
			name:      "400 errors[0].message with a lowercase URL-encoded echo",
			handler:   respond(http.StatusBadRequest, `{"errors":[{"message":"apiKey Zk3pQ8rT2vX6bN1mF6%2fhJ5sL9wE4yU7cP7%2baB3dG unknown"}]}`, nil),
			wantKind:  ErrInvalidResponse,
			wantError: "invalid response: unexpected HTTP status 400: apiKey [REDACTED] unknown",
		},
		{
			name:      "400 without a message field, URL-encoded echo",
			handler:   respond(http.StatusBadRequest, `{"code":"E401","echo":"apiKey=Zk3pQ8rT2vX6bN1mF6%2FhJ5sL9wE4yU7cP7%2BaB3dG"}`, nil),
			wantKind:  ErrInvalidResponse,
			wantError: "invalid response: unexpected HTTP status 400",
		},
		{
			name:      "500 message with an HTML-escaped echo",
			handler:   respond(http.StatusInternalServerError, `{"detail":"key Zk3pQ8rT2vX6bN1mF6&#x2F;hJ5sL9wE4yU7cP7&#43;aB3dG rejected"}`, nil),
			wantKind:  ErrUnavailable,
			wantError: "upstream unavailable: HTTP 500: key [REDACTED] rejected",
		},
		{
			name:      "500 nested error.message with an entity-escaped echo",
			handler:   respond(http.StatusInternalServerError, `{"error":{"message":"key Zk3pQ8rT2vX6bN1mF6&sol;hJ5sL9wE4yU7cP7&plus;aB3dG &amp; more"}}`, nil),
			wantKind:  ErrUnavailable,
			wantError: "upstream unavailable: HTTP 500: key [REDACTED] &amp; more",
		},
		{
			name:      "500 HTML page echoing the key",
			handler:   respond(http.StatusInternalServerError, "<html><body>key Zk3pQ8rT2vX6bN1mF6&#47;hJ5sL9wE4yU7cP7&#43;aB3dG</body></html>", nil),
			wantKind:  ErrUnavailable,
			wantError: "upstream unavailable: HTTP 500",
		},
		{
			name:      "403 title with a base64 echo",
			handler:   respond(http.StatusForbidden, `{"title":"credential `+b64+` refused"}`, nil),
			wantKind:  ErrUnauthorized,
			wantError: "unauthorized: HTTP 403: credential [REDACTED] refused",
		},
	}
	for i := range tests {
		tests[i].apiKey = echoKey
		tests[i].wantStatus = statusOf(t, tests[i].handler)
	}
	runFailureCases(t, tests)
}

// statusOf returns the status h answers with.
func statusOf(t *testing.T, h http.Handler) int {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, TokenPath, strings.NewReader("{}")))
	return rec.Code
}

// The token ends up in an HTTP header of every consumer
// ("Authorization: Bearer $(cat token)"): anything but RFC 6750 b64token
// characters, or an absurd size, is an invalid response.
func TestExchangeRejectsInvalidTokenContent(t *testing.T) {
	const invalidChars = "access token field accessToken has characters outside the RFC 6750 b64token set"
	ok := func(token string) http.Handler {
		return respond(http.StatusOK, jsonBody(t, map[string]any{"accessToken": token, "expiresIn": 3600}), nil)
	}
	tests := []failureCase{
		{name: "CR LF header injection", handler: ok("abc\r\nX-Injected: yes"), wantDetail: invalidChars},
		{name: "LF", handler: ok("abc\ndef"), wantDetail: invalidChars},
		{name: "NUL", handler: ok("abc\x00def"), wantDetail: invalidChars},
		{name: "space", handler: ok("abc def"), wantDetail: invalidChars},
		{name: "tab", handler: ok("abc\tdef"), wantDetail: invalidChars},
		{name: "leading space", handler: ok(" " + testToken), wantDetail: invalidChars},
		{name: "non-ASCII", handler: ok("tökén-value"), wantDetail: invalidChars},
		{name: "zero-width space", handler: ok("abc\u200bdef"), wantDetail: invalidChars},
		{name: "invalid UTF-8", handler: respond(http.StatusOK, "{\"accessToken\":\"abc\xff\xfedef\"}", nil), wantDetail: invalidChars},
		{name: "quote", handler: ok(`abc"def`), wantDetail: invalidChars},
		{name: "comma", handler: ok("abc,def"), wantDetail: invalidChars},
		{name: "padding in the middle", handler: ok("abc=def"), wantDetail: invalidChars},
		{name: "only padding", handler: ok("=="), wantDetail: invalidChars},
		{name: "data.token with CR LF", handler: respond(http.StatusOK, `{"data":{"token":"a\r\nb"}}`, nil), wantDetail: "access token field token has characters outside"},
		{name: "16 KiB and one byte", handler: ok(strings.Repeat("a", 16<<10+1)), wantDetail: "access token field accessToken is longer than 16384 bytes"},
		{name: "1 MiB", handler: respond(http.StatusOK, `{"accessToken":"`+strings.Repeat("a", 1<<20)+`"}`, nil), wantDetail: "response body exceeds 1 MiB"},
	}
	for i := range tests {
		tests[i].wantKind = ErrInvalidResponse
		tests[i].wantStatus = http.StatusOK
		tests[i].secrets = []string{"X-Injected"}
	}
	runFailureCases(t, tests)

	for _, token := range []string{strings.Repeat("a", 16<<10), "a-b.c_d~e+f/g==", "demo.Zm9v", "x"} {
		srv := httptest.NewServer(ok(token))
		tok, err := newTestClient(t, testNow).Exchange(context.Background(), srv.URL, testKey)
		srv.Close()
		if err != nil || tok.AccessToken != token {
			t.Errorf("Exchange with token %q: got %q, %v, want the token and nil", abbreviate(token), abbreviate(tok.AccessToken), err)
		}
	}
}

// expiresIn is seconds: a value that only makes sense in milliseconds is not
// guessed but planned as the 24 h cap, like every lifetime over 24 h; a JWT
// exp earlier than the body's expiry wins.
func TestExchangeLifetimeCapAndJWTExp(t *testing.T) {
	jwt45m := fakeJWT(t, map[string]any{"exp": testNow.Add(45 * time.Minute).Unix()})
	jwt2h := fakeJWT(t, map[string]any{"exp": testNow.Add(2 * time.Hour).Unix()})
	jwt30h := fakeJWT(t, map[string]any{"exp": testNow.Add(30 * time.Hour).Unix()})
	day := testNow.Add(24 * time.Hour)

	tests := []struct {
		name    string
		now     time.Time // testNow when zero
		body    any
		wantExp time.Time
	}{
		{name: "expiresIn in milliseconds is capped", body: map[string]any{"accessToken": testToken, "expiresIn": 3600000}, wantExp: day},
		{name: "expires_in numeric string in milliseconds is capped", body: map[string]any{"accessToken": testToken, "expires_in": "3600000"}, wantExp: day},
		{name: "expiresIn of exactly 24h", body: map[string]any{"accessToken": testToken, "expiresIn": 86400}, wantExp: day},
		{name: "expiresIn one second over 24h", body: map[string]any{"accessToken": testToken, "expiresIn": 86401}, wantExp: day},
		{name: "expiresIn absurd", body: map[string]any{"accessToken": testToken, "expiresIn": 1e12}, wantExp: day},
		{name: "expiresAt three days ahead", body: map[string]any{"accessToken": testToken, "expiresAt": "2026-11-30T13:00:00Z"}, wantExp: day},
		{name: "expiresAt in milliseconds two days ahead", body: map[string]any{"accessToken": testToken, "expiresAt": testNow.Add(48 * time.Hour).UnixMilli()}, wantExp: day},
		{name: "expires_at more than 10 years ahead", body: map[string]any{"accessToken": testToken, "expires_at": "2040-01-01T00:00:00Z"}, wantExp: day},
		{name: "cap from a sub-second issue time", now: testNow.Add(700 * time.Millisecond), body: map[string]any{"accessToken": testToken, "expiresIn": 3600000}, wantExp: day},
		{name: "JWT exp earlier than expiresIn wins", body: map[string]any{"accessToken": jwt45m, "expiresIn": 3600}, wantExp: testNow.Add(45 * time.Minute)},
		{name: "JWT exp earlier than expiresAt wins", body: map[string]any{"accessToken": jwt45m, "expiresAt": "2026-11-27T15:00:00Z"}, wantExp: testNow.Add(45 * time.Minute)},
		{name: "JWT exp earlier than a capped expiresIn wins", body: map[string]any{"data": map[string]any{"token": jwt2h, "expiresIn": 3600000}}, wantExp: testNow.Add(2 * time.Hour)},
		{name: "expiresIn earlier than JWT exp wins", body: map[string]any{"accessToken": jwt2h, "expiresIn": 3600}, wantExp: testNow.Add(time.Hour)},
		{name: "JWT exp over 24h is capped", body: map[string]any{"accessToken": jwt30h}, wantExp: day},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := tc.now
			if now.IsZero() {
				now = testNow
			}
			srv := httptest.NewServer(respond(http.StatusOK, jsonBody(t, tc.body), nil))
			defer srv.Close()

			tok, err := newTestClient(t, now).Exchange(context.Background(), srv.URL, testKey)
			if err != nil {
				t.Fatalf("Exchange: got error %q, want nil", err)
			}
			if !tok.ExpiresAt.Equal(tc.wantExp) {
				t.Errorf("ExpiresAt: got %v, want %v", tok.ExpiresAt, tc.wantExp)
			}
			if got := tok.Lifetime(); got > 24*time.Hour {
				t.Errorf("Lifetime: got %v, want at most 24h", got)
			}
		})
	}
}

// An upstream answering with a lifetime shorter than the minimum (10 s by
// default) must not drive a refresh loop: the answer is an invalid response,
// and backs off like any failure.
func TestExchangeRejectsShortLifetime(t *testing.T) {
	jwt5s := fakeJWT(t, map[string]any{"exp": testNow.Add(5 * time.Second).Unix()})
	ok := func(body string) http.Handler { return respond(http.StatusOK, body, nil) }
	tests := []failureCase{
		{name: "expiresIn 1", handler: ok(`{"accessToken":"` + testToken + `","expiresIn":1}`), wantError: "invalid response: HTTP 200: lifetime 1s is shorter than the minimum 10s"},
		{name: "expires_in 9 as a string", handler: ok(`{"accessToken":"` + testToken + `","expires_in":"9"}`), wantDetail: "lifetime 9s is shorter than the minimum 10s"},
		{name: "expiresAt 2s ahead", handler: ok(`{"accessToken":"` + testToken + `","expiresAt":"2026-11-27T13:00:02Z"}`), wantDetail: "lifetime 2s is shorter than the minimum 10s"},
		{name: "expiresAt 5s ahead in milliseconds", handler: ok(`{"accessToken":"` + testToken + `","expiresAt":` + fmt.Sprint(testNow.Add(5*time.Second).UnixMilli()) + `}`), wantDetail: "lifetime 5s is shorter than the minimum 10s"},
		{name: "JWT exp 5s ahead, expiresIn 3600", handler: ok(`{"accessToken":"` + jwt5s + `","expiresIn":3600}`), wantDetail: "lifetime 5s is shorter than the minimum 10s", secrets: []string{jwt5s}},
	}
	for i := range tests {
		tests[i].wantKind = ErrInvalidResponse
		tests[i].wantStatus = http.StatusOK
	}
	runFailureCases(t, tests)

	srv := httptest.NewServer(ok(`{"accessToken":"` + testToken + `","expiresIn":10}`))
	defer srv.Close()
	tok, err := newTestClient(t, testNow).Exchange(context.Background(), srv.URL, testKey)
	if err != nil || tok.Lifetime() != 10*time.Second {
		t.Errorf("Exchange with expiresIn 10: got lifetime %v, error %v, want 10s and nil", tok.Lifetime(), err)
	}
}

func TestClientWithMinLifetime(t *testing.T) {
	tests := []struct {
		name      string
		min       time.Duration
		expiresIn int
		wantErr   string // "" for success
	}{
		{name: "a minute refuses 30s", min: time.Minute, expiresIn: 30, wantErr: "lifetime 30s is shorter than the minimum 1m0s"},
		{name: "a minute accepts a minute", min: time.Minute, expiresIn: 60},
		{name: "zero turns the check off", min: 0, expiresIn: 1},
		{name: "negative turns the check off", min: -time.Second, expiresIn: 1},
		{name: "over MaxLifetime counts as MaxLifetime", min: 48 * time.Hour, expiresIn: 86399, wantErr: "lifetime 23h59m59s is shorter than the minimum 24h0m0s"},
		{name: "over MaxLifetime accepts 24h", min: 48 * time.Hour, expiresIn: 3600000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(respond(http.StatusOK, fmt.Sprintf(`{"accessToken":%q,"expiresIn":%d}`, testToken, tc.expiresIn), nil))
			defer srv.Close()
			base := newTestClient(t, testNow)

			_, err := base.WithMinLifetime(tc.min).Exchange(context.Background(), srv.URL, testKey)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Exchange: got %q, want nil", err)
			case tc.wantErr != "" && (!errors.Is(err, ErrInvalidResponse) || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Exchange: got %v, want an invalid response containing %q", err, tc.wantErr)
			}

			// The copy leaves the original client and its default alone.
			_, err = base.Exchange(context.Background(), srv.URL, testKey)
			if tooShort := time.Duration(tc.expiresIn)*time.Second < DefaultMinLifetime; tooShort != errors.Is(err, ErrInvalidResponse) {
				t.Errorf("Exchange with the original client: got %v, want an error only for lifetimes under %v", err, DefaultMinLifetime)
			}
		})
	}
}
