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

package tokenserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

type tokenBody struct {
	Data struct {
		AccessToken string `json:"accessToken"`
		ExpiresIn   int64  `json:"expiresIn"`
	} `json:"data"`
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func start(t *testing.T, opts Options) (*Server, *httptest.Server) {
	t.Helper()
	srv := New(opts)
	ts := httptest.NewServer(srv) // listens on 127.0.0.1
	t.Cleanup(ts.Close)
	return srv, ts
}

func do(t *testing.T, ctx context.Context, method, url, contentType, body string) (result, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return result{}, err
	}
	return result{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

func mustDo(t *testing.T, method, url, contentType, body string) result {
	t.Helper()
	res, err := do(t, context.Background(), method, url, contentType, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return res
}

// requestToken posts a well-formed token request for key.
func requestToken(t *testing.T, base, key string) result {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"apiKey": key})
	return mustDo(t, http.MethodPost, base+TokenPath, "application/json", string(b))
}

func decodeToken(t *testing.T, res result) tokenBody {
	t.Helper()
	if res.status != http.StatusOK {
		t.Fatalf("status = %d, body %s; want 200", res.status, res.body)
	}
	var tb tokenBody
	if err := json.Unmarshal(res.body, &tb); err != nil {
		t.Fatalf("decode %q: %v", res.body, err)
	}
	return tb
}

func checkTokenShape(t *testing.T, token string) {
	t.Helper()
	rest, ok := strings.CutPrefix(token, TokenPrefix)
	if !ok {
		t.Fatalf("token %q lacks prefix %q", token, TokenPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(raw) != 32 {
		t.Fatalf("token %q: want 32 base64url bytes after the prefix, got %d (%v)", token, len(raw), err)
	}
}

// waitFor polls cond until it holds, for server-side bookkeeping that ends
// after the client has already seen the outcome.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestIssueToken(t *testing.T) {
	for _, tc := range []struct {
		name     string
		lifetime time.Duration
		want     int64
	}{
		{"default lifetime", 0, 3600},
		{"one minute", time.Minute, 60},
		{"rounds down", 1500 * time.Millisecond, 1},
		{"never zero", 10 * time.Millisecond, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, ts := start(t, Options{Lifetime: tc.lifetime})
			res := requestToken(t, ts.URL, "key-1")
			if ct := res.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if cc := res.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control = %q", cc)
			}
			tb := decodeToken(t, res)
			checkTokenShape(t, tb.Data.AccessToken)
			if tb.Data.ExpiresIn != tc.want {
				t.Errorf("expiresIn = %d, want %d", tb.Data.ExpiresIn, tc.want)
			}
			if got := srv.Issued(); len(got) != 1 || got[0] != tb.Data.AccessToken {
				t.Errorf("Issued() = %v", got)
			}
		})
	}
}

func TestSetLifetime(t *testing.T) {
	srv, ts := start(t, Options{Lifetime: time.Minute})
	srv.SetLifetime(2 * time.Minute)
	if got := decodeToken(t, requestToken(t, ts.URL, "k")).Data.ExpiresIn; got != 120 {
		t.Errorf("expiresIn = %d, want 120", got)
	}
	srv.SetLifetime(0)
	if got := decodeToken(t, requestToken(t, ts.URL, "k")).Data.ExpiresIn; got != 3600 {
		t.Errorf("expiresIn after reset = %d, want 3600", got)
	}
}

func TestTokensAreDistinct(t *testing.T) {
	srv, ts := start(t, Options{})
	seen := map[string]bool{}
	var order []string
	for range 100 {
		tok := decodeToken(t, requestToken(t, ts.URL, "k")).Data.AccessToken
		if seen[tok] {
			t.Fatalf("token issued twice: %q", tok)
		}
		seen[tok] = true
		order = append(order, tok)
	}
	issued := srv.Issued()
	if fmt.Sprint(issued) != fmt.Sprint(order) {
		t.Errorf("Issued() does not list the tokens in issue order")
	}
	issued[0] = "mutated"
	if srv.Issued()[0] == "mutated" {
		t.Errorf("Issued() returned the server's own slice")
	}
}

func TestRejectedRequests(t *testing.T) {
	for _, tc := range []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		wantStatus  int
		wantMessage string
		counted     bool // a token request, as opposed to another path
	}{
		{"wrong method", http.MethodGet, TokenPath, "", "", 405, "method not allowed", true},
		{"wrong path", http.MethodPost, "/platform/v2/identity/api-keys/tokens", "application/json", `{"apiKey":"k"}`, 404, "not found", false},
		{"trailing slash", http.MethodPost, TokenPath + "/", "application/json", `{"apiKey":"k"}`, 404, "not found", false},
		{"bad json", http.MethodPost, TokenPath, "application/json", `{"apiKey":`, 400, "apiKey is required", true},
		{"trailing garbage", http.MethodPost, TokenPath, "application/json", `{"apiKey":"k"} x`, 400, "apiKey is required", true},
		{"missing apiKey", http.MethodPost, TokenPath, "application/json", `{"key":"k"}`, 400, "apiKey is required", true},
		{"empty apiKey", http.MethodPost, TokenPath, "application/json", `{"apiKey":""}`, 400, "apiKey is required", true},
		{"apiKey not a string", http.MethodPost, TokenPath, "application/json", `{"apiKey":42}`, 400, "apiKey is required", true},
		{"empty body", http.MethodPost, TokenPath, "application/json", ``, 400, "apiKey is required", true},
		{"no content type", http.MethodPost, TokenPath, "", `{"apiKey":"k"}`, 415, "Content-Type must be application/json", true},
		{"form content type", http.MethodPost, TokenPath, "application/x-www-form-urlencoded", `{"apiKey":"k"}`, 415, "Content-Type must be application/json", true},
		{"body too large", http.MethodPost, TokenPath, "application/json", `{"apiKey":"` + strings.Repeat("k", maxRequestBody) + `"}`, 413, "request body too large", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, ts := start(t, Options{})
			res := mustDo(t, tc.method, ts.URL+tc.path, tc.contentType, tc.body)
			if res.status != tc.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", res.status, tc.wantStatus, res.body)
			}
			var msg struct{ Message string }
			if err := json.Unmarshal(res.body, &msg); err != nil || msg.Message != tc.wantMessage {
				t.Errorf("body = %s, want message %q", res.body, tc.wantMessage)
			}
			if tc.wantStatus == 405 && res.header.Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q, want POST", res.header.Get("Allow"))
			}
			want := Stats{}
			if tc.counted {
				want = Stats{Requests: 1, Failed: 1, PeakPerSecond: 1, InFlightPeak: 1}
			}
			waitFor(t, "request bookkeeping", func() bool { return srv.Stats().InFlight == 0 })
			if got := srv.Stats(); got != want {
				t.Errorf("Stats() = %+v, want %+v", got, want)
			}
			if len(srv.Issued()) != 0 {
				t.Errorf("a token was issued")
			}
		})
	}
}

func TestContentTypeWithCharset(t *testing.T) {
	_, ts := start(t, Options{})
	res := mustDo(t, http.MethodPost, ts.URL+TokenPath, "application/json; charset=utf-8", `{"apiKey":"k"}`)
	decodeToken(t, res)
}

func TestAPIKeys(t *testing.T) {
	srv, ts := start(t, Options{APIKeys: []string{"good-1", "good-2"}})
	for _, tc := range []struct {
		key  string
		want int
	}{
		{"good-1", 200},
		{"good-2", 200},
		{"bad", 401},
		{"good-1 ", 401},
	} {
		res := requestToken(t, ts.URL, tc.key)
		if res.status != tc.want {
			t.Errorf("key %q: status %d, want %d", tc.key, res.status, tc.want)
		}
		if tc.want == 401 && string(res.body) != `{"message":"invalid api key"}` {
			t.Errorf("key %q: body %s", tc.key, res.body)
		}
	}

	srv.SetAPIKeys("rotated")
	if res := requestToken(t, ts.URL, "good-1"); res.status != 401 {
		t.Errorf("old key after SetAPIKeys: status %d, want 401", res.status)
	}
	decodeToken(t, requestToken(t, ts.URL, "rotated"))

	srv.SetAPIKeys()
	decodeToken(t, requestToken(t, ts.URL, "anything"))

	waitFor(t, "request bookkeeping", func() bool { return srv.Stats().InFlight == 0 })
	if got, want := srv.Stats(), (Stats{Requests: 7, Issued: 4, Failed: 3}); got.Requests != want.Requests || got.Issued != want.Issued || got.Failed != want.Failed {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	if got := srv.RequestsFor("bad"); got != 1 {
		t.Errorf("RequestsFor(bad) = %d, want 1 (rejected requests count)", got)
	}
}

func TestFaults(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fault      Fault
		wantStatus int
		wantBody   string // exact, when set
		retryAfter string
		check      func(t *testing.T, srv *Server, res result)
	}{
		{
			name:       "500 default body",
			fault:      Fault{Status: 500},
			wantStatus: 500,
			wantBody:   `{"message":"Internal Server Error"}`,
		},
		{
			name:       "429 with Retry-After",
			fault:      Fault{Status: 429, RetryAfter: "7"},
			wantStatus: 429,
			wantBody:   `{"message":"Too Many Requests"}`,
			retryAfter: "7",
		},
		{
			name:       "503 with HTTP-date Retry-After",
			fault:      Fault{Status: 503, RetryAfter: "Wed, 21 Oct 2026 07:28:00 GMT"},
			wantStatus: 503,
			retryAfter: "Wed, 21 Oct 2026 07:28:00 GMT",
		},
		{
			name:       "401 custom body",
			fault:      Fault{Status: 401, Body: `{"code":"E401","message":"expired key"}`},
			wantStatus: 401,
			wantBody:   `{"code":"E401","message":"expired key"}`,
		},
		{
			name:       "200 with malformed body",
			fault:      Fault{Body: `{"data":{"accessToken":`},
			wantStatus: 200,
			wantBody:   `{"data":{"accessToken":`,
		},
		{
			name:       "200 without token",
			fault:      Fault{Body: `{"data":{}}`},
			wantStatus: 200,
			wantBody:   `{"data":{}}`,
		},
		{
			name:       "oversized error",
			fault:      Fault{Status: 502, Size: 2 << 20},
			wantStatus: 502,
			check: func(t *testing.T, srv *Server, res result) {
				if len(res.body) != 2<<20 {
					t.Fatalf("body is %d bytes, want %d", len(res.body), 2<<20)
				}
				var v struct{ Message, Padding string }
				if err := json.Unmarshal(res.body, &v); err != nil || v.Message != "Bad Gateway" {
					t.Errorf("padded body does not parse: %v", err)
				}
			},
		},
		{
			name:       "oversized success",
			fault:      Fault{Size: (1 << 20) + 1},
			wantStatus: 200,
			check: func(t *testing.T, srv *Server, res result) {
				if len(res.body) != (1<<20)+1 {
					t.Fatalf("body is %d bytes, want %d", len(res.body), (1<<20)+1)
				}
				tb := decodeToken(t, res)
				checkTokenShape(t, tb.Data.AccessToken)
				if got := srv.Issued(); len(got) != 1 || got[0] != tb.Data.AccessToken {
					t.Errorf("the padded token is not in Issued(): %v", got)
				}
			},
		},
		{
			name:       "size smaller than the document",
			fault:      Fault{Size: 10},
			wantStatus: 200,
			wantBody:   `{"data":{"`,
		},
		{
			name:       "delay only is a slow success",
			fault:      Fault{Delay: 150 * time.Millisecond},
			wantStatus: 200,
			check: func(t *testing.T, srv *Server, res result) {
				checkTokenShape(t, decodeToken(t, res).Data.AccessToken)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, ts := start(t, Options{})
			srv.SetFault(&tc.fault)
			tc.fault.Status = 299 // the server must have kept its own copy

			began := time.Now()
			res := requestToken(t, ts.URL, "k")
			if elapsed := time.Since(began); elapsed < tc.fault.Delay {
				t.Errorf("answered after %v, before the %v delay", elapsed, tc.fault.Delay)
			}
			if res.status != tc.wantStatus {
				t.Fatalf("status = %d, want %d", res.status, tc.wantStatus)
			}
			if ct := res.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if tc.wantBody != "" && string(res.body) != tc.wantBody {
				t.Errorf("body = %s, want %s", res.body, tc.wantBody)
			}
			if got := res.header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tc.retryAfter)
			}
			if tc.check != nil {
				tc.check(t, srv, res)
			}

			srv.SetFault(nil)
			decodeToken(t, requestToken(t, ts.URL, "k"))
			waitFor(t, "request bookkeeping", func() bool { return srv.Stats().InFlight == 0 })
			if st := srv.Stats(); st.Requests != 2 || st.Issued+st.Failed != 2 {
				t.Errorf("Stats() = %+v, want 2 requests, all finished", st)
			}
		})
	}
}

func TestFaultDelayClientTimeout(t *testing.T) {
	var mu sync.Mutex
	var events []Event
	srv, ts := start(t, Options{OnRequest: func(ev Event) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}})
	srv.SetFault(&Fault{Status: 500, Delay: 10 * time.Second})

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := do(t, ctx, http.MethodPost, ts.URL+TokenPath, "application/json", `{"apiKey":"k"}`)
	if err == nil {
		t.Fatal("request succeeded, want a client timeout")
	}
	waitFor(t, "the abandoned request to finish", func() bool { return srv.Stats().Failed == 1 })
	if elapsed := time.Since(began); elapsed > 5*time.Second {
		t.Errorf("the server kept waiting %v after the client left", elapsed)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 1 || events[0].Status != 503 || events[0].Reason != "request cancelled" || events[0].Token != 0 {
		t.Errorf("events = %+v", events)
	}
	if got := srv.RequestsFor("k"); got != 1 {
		t.Errorf("RequestsFor(k) = %d, want 1", got)
	}
}

func TestLatency(t *testing.T) {
	const latency = 100 * time.Millisecond
	srv, ts := start(t, Options{Latency: latency})

	t.Run("honoured", func(t *testing.T) {
		began := time.Now()
		decodeToken(t, requestToken(t, ts.URL, "k"))
		if elapsed := time.Since(began); elapsed < latency {
			t.Errorf("answered after %v, want at least %v", elapsed, latency)
		}
	})

	t.Run("cancelled by the client", func(t *testing.T) {
		srv.mu.Lock()
		srv.latency = time.Hour
		srv.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if _, err := do(t, ctx, http.MethodPost, ts.URL+TokenPath, "application/json", `{"apiKey":"k"}`); err == nil {
			t.Fatal("request succeeded, want a client timeout")
		}
		waitFor(t, "the abandoned request to finish", func() bool { return srv.Stats().InFlight == 0 })
		if st := srv.Stats(); st.Issued != 1 || st.Failed != 1 || st.Requests != 2 {
			t.Errorf("Stats() = %+v, want the second request failed without a token", st)
		}
	})
}

func TestLatencyCancelledByShutdown(t *testing.T) {
	srv := New(Options{Latency: time.Hour})
	base, shutdown := context.WithCancel(context.Background())
	defer shutdown()
	ts := httptest.NewUnstartedServer(srv)
	ts.Config.BaseContext = func(net.Listener) context.Context { return base }
	ts.Start()
	defer ts.Close()

	answered := make(chan result, 1)
	go func() {
		res, err := do(t, context.Background(), http.MethodPost, ts.URL+TokenPath, "application/json", `{"apiKey":"k"}`)
		if err != nil {
			t.Errorf("request: %v", err)
		}
		answered <- res
	}()
	waitFor(t, "the request to arrive", func() bool { return srv.Stats().InFlight == 1 })
	shutdown()
	select {
	case res := <-answered:
		if res.status != http.StatusServiceUnavailable || res.header.Get("Retry-After") != "1" || string(res.body) != `{"message":"request cancelled"}` {
			t.Errorf("answer at shutdown: %d Retry-After %q %s", res.status, res.header.Get("Retry-After"), res.body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request kept waiting after shutdown")
	}
	if st := srv.Stats(); st.Failed != 1 || st.Issued != 0 {
		t.Errorf("Stats() = %+v", st)
	}
}

func TestCounts(t *testing.T) {
	srv, ts := start(t, Options{})
	for range 3 {
		requestToken(t, ts.URL, "a")
	}
	requestToken(t, ts.URL, "b")
	srv.SetFault(&Fault{Status: 503})
	requestToken(t, ts.URL, "b")
	srv.SetFault(nil)
	mustDo(t, http.MethodPost, ts.URL+TokenPath, "application/json", `{}`)
	mustDo(t, http.MethodGet, ts.URL+"/stats", "", "") // admin calls are not token requests

	waitFor(t, "request bookkeeping", func() bool { return srv.Stats().InFlight == 0 })
	for key, want := range map[string]int64{"a": 3, "b": 2, "c": 0, "": 0} {
		if got := srv.RequestsFor(key); got != want {
			t.Errorf("RequestsFor(%q) = %d, want %d", key, got, want)
		}
	}
	if got := srv.Requests(); got != 6 {
		t.Errorf("Requests() = %d, want 6", got)
	}
	if got := len(srv.Issued()); got != 4 {
		t.Errorf("len(Issued()) = %d, want 4", got)
	}
	st := srv.Stats()
	if st.Requests != 6 || st.Issued != 4 || st.Failed != 2 || st.InFlight != 0 || st.InFlightPeak != 1 {
		t.Errorf("Stats() = %+v", st)
	}
}

func TestPeakPerSecondSlidingWindow(t *testing.T) {
	srv := New(Options{})
	var now time.Duration
	srv.now = func() time.Duration { return now }
	arrive := func(at time.Duration) {
		now = at
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, TokenPath, strings.NewReader(`{"apiKey":"k"}`))
		req.Header.Set("Content-Type", "application/json")
		srv.ServeHTTP(rec, req)
	}
	ms := time.Millisecond
	for _, step := range []struct {
		at   time.Duration
		want int64
	}{
		{0, 1},
		{500 * ms, 2},
		{900 * ms, 3},
		{1000 * ms, 3}, // the arrival at 0 has left the window
		{1400 * ms, 4}, // 500, 900, 1000, 1400: straddles a second boundary
		{5000 * ms, 4},
		{5000 * ms, 4},
		{5001 * ms, 4},
		{5999 * ms, 4},
		{5999 * ms, 5},
	} {
		arrive(step.at)
		if got := srv.Stats().PeakPerSecond; got != step.want {
			t.Fatalf("after arrival at %v: PeakPerSecond = %d, want %d", step.at, got, step.want)
		}
	}
	if n := len(srv.window); n != 5 {
		t.Errorf("window holds %d arrivals, want only the last second's 5", n)
	}
}

func TestStatsEndpoint(t *testing.T) {
	_, ts := start(t, Options{APIKeys: []string{"good"}})
	requestToken(t, ts.URL, "good")
	requestToken(t, ts.URL, "bad")

	res := mustDo(t, http.MethodGet, ts.URL+"/stats", "", "")
	if res.status != 200 || res.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /stats: %d %q", res.status, res.header.Get("Content-Type"))
	}
	var m map[string]int64
	if err := json.Unmarshal(res.body, &m); err != nil {
		t.Fatalf("decode %s: %v", res.body, err)
	}
	// Two requests in a row normally share a second, but a stalled machine
	// may spread them further.
	if p := m["peakPerSecond"]; p == 1 || p == 2 {
		m["peakPerSecond"] = 2
	}
	want := map[string]int64{"requests": 2, "issued": 1, "failed": 1, "peakPerSecond": 2, "inFlight": 0, "inFlightPeak": 1}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Errorf("GET /stats = %v, want %v", m, want)
	}
	if bytes.Contains(res.body, []byte("good")) {
		t.Errorf("stats reveal an API key: %s", res.body)
	}
	if res := mustDo(t, http.MethodPost, ts.URL+"/stats", "", ""); res.status != 405 {
		t.Errorf("POST /stats: status %d, want 405", res.status)
	}
}

func TestFaultEndpoint(t *testing.T) {
	srv, ts := start(t, Options{})

	res := mustDo(t, http.MethodGet, ts.URL+"/fault", "", "")
	if res.status != 200 || string(res.body) != "null" {
		t.Fatalf("GET /fault without a fault: %d %s", res.status, res.body)
	}

	res = mustDo(t, http.MethodPost, ts.URL+"/fault", "application/json", `{"status":429,"retryAfter":"3","delay":"20ms"}`)
	if res.status != http.StatusNoContent {
		t.Fatalf("POST /fault: %d %s", res.status, res.body)
	}
	res = requestToken(t, ts.URL, "k")
	if res.status != 429 || res.header.Get("Retry-After") != "3" {
		t.Errorf("token request under fault: %d Retry-After %q", res.status, res.header.Get("Retry-After"))
	}
	res = mustDo(t, http.MethodGet, ts.URL+"/fault", "", "")
	if string(res.body) != `{"status":429,"retryAfter":"3","delay":"20ms"}` {
		t.Errorf("GET /fault = %s", res.body)
	}

	res = mustDo(t, http.MethodPost, ts.URL+"/fault", "application/json", `{"delay":0.25}`)
	if res.status != http.StatusNoContent {
		t.Fatalf("POST /fault with numeric delay: %d %s", res.status, res.body)
	}
	srv.mu.Lock()
	delay := srv.fault.Delay
	srv.mu.Unlock()
	if delay != 250*time.Millisecond {
		t.Errorf("numeric delay parsed as %v, want 250ms", delay)
	}

	if res := mustDo(t, http.MethodDelete, ts.URL+"/fault", "", ""); res.status != http.StatusNoContent {
		t.Fatalf("DELETE /fault: %d", res.status)
	}
	decodeToken(t, requestToken(t, ts.URL, "k"))

	for _, bad := range []string{
		`{"stauts":500}`,
		`{"status":42}`,
		`{"status":500,"delay":"soon"}`,
		`{"delay":"-1s"}`,
		`{"size":-1}`,
		`{"status":500} {}`,
		`not json`,
	} {
		res := mustDo(t, http.MethodPost, ts.URL+"/fault", "application/json", bad)
		if res.status != 400 {
			t.Errorf("POST /fault %s: status %d, want 400", bad, res.status)
		}
	}
	decodeToken(t, requestToken(t, ts.URL, "k")) // rejected faults change nothing

	if res := mustDo(t, http.MethodPatch, ts.URL+"/fault", "", ""); res.status != 405 {
		t.Errorf("PATCH /fault: status %d, want 405", res.status)
	}
}

func TestFaultEndpointLoopbackOnly(t *testing.T) {
	srv := New(Options{})
	for _, remote := range []string{"10.1.2.3:5555", "[2001:db8::1]:5555", "garbage"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/fault", strings.NewReader(`{"status":500}`))
		req.RemoteAddr = remote
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("POST /fault from %s: status %d, want 403", remote, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/fault", strings.NewReader(`{"status":500}`))
	req.RemoteAddr = "[::1]:5555"
	srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent {
		t.Errorf("POST /fault from ::1: status %d, want 204", rec.Code)
	}
}

func TestOnRequestEvents(t *testing.T) {
	var mu sync.Mutex
	var events []Event
	_, ts := start(t, Options{Lifetime: time.Minute, APIKeys: []string{"good"}, OnRequest: func(ev Event) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}})
	tok := decodeToken(t, requestToken(t, ts.URL, "good")).Data.AccessToken
	requestToken(t, ts.URL, "wrong")

	waitFor(t, "two events", func() bool { mu.Lock(); defer mu.Unlock(); return len(events) == 2 })
	mu.Lock()
	defer mu.Unlock()
	want := []Event{
		{Request: 1, Token: 1, Status: 200, Lifetime: time.Minute},
		{Request: 2, Token: 0, Status: 401, Reason: "invalid api key"},
	}
	if fmt.Sprint(events) != fmt.Sprint(want) {
		t.Errorf("events = %+v, want %+v", events, want)
	}
	if s := fmt.Sprintf("%+v", events); strings.Contains(s, tok) || strings.Contains(s, "good") || strings.Contains(s, "wrong") {
		t.Errorf("events reveal a key or token: %s", s)
	}
}

func TestConcurrentRequests(t *testing.T) {
	const workers, perWorker = 50, 4
	srv, ts := start(t, Options{Latency: 20 * time.Millisecond})
	var wg sync.WaitGroup
	tokens := make(chan string, workers*perWorker)
	for w := range workers {
		wg.Go(func() {
			key := fmt.Sprintf("key-%d", w%5)
			for range perWorker {
				b, _ := json.Marshal(map[string]string{"apiKey": key})
				res, err := do(t, context.Background(), http.MethodPost, ts.URL+TokenPath, "application/json", string(b))
				if err != nil || res.status != 200 {
					t.Errorf("request failed: %v %d", err, res.status)
					return
				}
				var tb tokenBody
				if err := json.Unmarshal(res.body, &tb); err != nil {
					t.Errorf("decode: %v", err)
					return
				}
				tokens <- tb.Data.AccessToken
			}
		})
	}
	// Settings change while requests are served; -race checks the locking.
	for range 10 {
		srv.SetLifetime(time.Minute)
		srv.SetAPIKeys()
		srv.SetFault(nil)
		_ = srv.Stats()
		_ = srv.Issued()
	}
	wg.Wait()
	close(tokens)

	const total = workers * perWorker
	seen := map[string]bool{}
	for tok := range tokens {
		if seen[tok] {
			t.Errorf("token issued twice")
		}
		seen[tok] = true
	}
	waitFor(t, "request bookkeeping", func() bool { return srv.Stats().InFlight == 0 })
	st := srv.Stats()
	if st.Requests != total || st.Issued != total || st.Failed != 0 || len(seen) != total || len(srv.Issued()) != total {
		t.Errorf("Stats() = %+v, %d distinct tokens; want %d issued", st, len(seen), total)
	}
	if st.InFlightPeak < 2 || st.InFlightPeak > workers {
		t.Errorf("InFlightPeak = %d, want between 2 and %d", st.InFlightPeak, workers)
	}
	if st.PeakPerSecond < 1 || st.PeakPerSecond > total {
		t.Errorf("PeakPerSecond = %d", st.PeakPerSecond)
	}
	var sum int64
	for i := range 5 {
		n := srv.RequestsFor(fmt.Sprintf("key-%d", i))
		if n != total/5 {
			t.Errorf("RequestsFor(key-%d) = %d, want %d", i, n, total/5)
		}
		sum += n
	}
	if sum != total {
		t.Errorf("per-key counts sum to %d, want %d", sum, total)
	}
}

func TestGrants(t *testing.T) {
	srv, ts := start(t, Options{Lifetime: 90*time.Second + 500*time.Millisecond, Latency: 50 * time.Millisecond})
	before := time.Now()
	a := decodeToken(t, requestToken(t, ts.URL, "key-a")).Data.AccessToken
	b := decodeToken(t, requestToken(t, ts.URL, "key-b")).Data.AccessToken
	after := time.Now()

	ga, ok := srv.Lookup(a)
	if !ok {
		t.Fatalf("Lookup of an issued token: not found")
	}
	if ga.KeyDigest != KeyDigest("key-a") || ga.KeyDigest == KeyDigest("key-b") {
		t.Errorf("KeyDigest = %s, want that of key-a (%s)", ga.KeyDigest, KeyDigest("key-a"))
	}
	if ga.RequestedAt.Before(before) || ga.IssuedAt.After(after) || ga.IssuedAt.Sub(ga.RequestedAt) < 50*time.Millisecond {
		t.Errorf("RequestedAt %s, IssuedAt %s: want both between %s and %s, the latency (50ms) apart", ga.RequestedAt, ga.IssuedAt, before, after)
	}
	// The answer said 90 s (rounded down): the record must not promise more.
	if got := ga.ExpiresAt.Sub(ga.IssuedAt); got != 90*time.Second {
		t.Errorf("ExpiresAt - IssuedAt = %s, want 90s", got)
	}
	if ga.Token != 1 || ga.Request != 1 {
		t.Errorf("grant of the first token: Token %d, Request %d; want 1, 1", ga.Token, ga.Request)
	}
	if _, ok := srv.Lookup("demo.never-issued"); ok {
		t.Errorf("Lookup of a token never issued: found")
	}
	grants := srv.Grants()
	if len(grants) != 2 || grants[0] != ga || grants[1].KeyDigest != KeyDigest("key-b") {
		t.Errorf("Grants = %+v, want key-a's then key-b's", grants)
	}
	if s := fmt.Sprintf("%+v", grants); strings.Contains(s, "key-a") || strings.Contains(s, a) || strings.Contains(s, b) {
		t.Errorf("grants reveal a key or token: %s", s)
	}
}

func TestDisconnectFault(t *testing.T) {
	var mu sync.Mutex
	var events []Event
	srv, ts := start(t, Options{OnRequest: func(ev Event) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}})
	srv.SetFault(&Fault{Disconnect: true, Status: 200})
	b, _ := json.Marshal(map[string]string{"apiKey": "k"})
	res, err := do(t, context.Background(), http.MethodPost, ts.URL+TokenPath, "application/json", string(b))
	if err == nil {
		t.Fatalf("request during a disconnect fault: got status %d, body %s; want a connection error", res.status, res.body)
	}
	if got := srv.Stats(); got.Issued != 0 || got.Failed != 1 {
		t.Errorf("stats = %+v, want 0 issued, 1 failed", got)
	}
	mu.Lock()
	if len(events) != 1 || events[0].Status != 0 || events[0].Reason != "injected disconnect" {
		t.Errorf("events = %+v, want one with status 0, reason %q", events, "injected disconnect")
	}
	mu.Unlock()

	// Over the admin endpoint, as a script sets it.
	mustDo(t, http.MethodPost, ts.URL+"/fault", "application/json", `{"disconnect":true}`)
	if got := mustDo(t, http.MethodGet, ts.URL+"/fault", "", ""); !strings.Contains(string(got.body), `"disconnect":true`) {
		t.Errorf("GET /fault = %s, want disconnect true", got.body)
	}
	if _, err := do(t, context.Background(), http.MethodPost, ts.URL+TokenPath, "application/json", string(b)); err == nil {
		t.Errorf("request after POST /fault {disconnect:true}: got an answer, want a connection error")
	}
	srv.SetFault(nil)
	decodeToken(t, requestToken(t, ts.URL, "k"))
}
