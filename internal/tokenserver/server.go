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

// Package tokenserver is a local stand-in for OpsNow's token endpoint.
//
// It implements POST /platform/v2/identity/api-keys/token: the request body is
// {"apiKey":"..."} (Content-Type: application/json) and a successful answer is
// {"data":{"accessToken":"demo.<random>","expiresIn":<seconds>}}. It is the one
// implementation shared by unit tests (httptest.NewServer(tokenserver.New(...))),
// the demo, end-to-end tests and benchmarks, so that all of them exercise the
// same upstream behaviour, including failures injected with SetFault.
//
// Besides the token endpoint the handler serves two admin endpoints for scripts:
//
//	GET    /stats  counters as JSON (see Stats); no keys or tokens
//	GET    /fault  the current fault as JSON, or null
//	POST   /fault  set a fault, e.g. {"status":503,"retryAfter":"5","delay":"2s"}
//	               or {"disconnect":true}
//	DELETE /fault  clear the fault
//
// The admin endpoints exist only for local test use. /fault answers only
// clients connecting from a loopback address, because it lets the caller break
// the server; /stats is read-only and never reveals a key or a token. The
// server hands out tokens to anyone who can reach it, so it belongs on a
// loopback address or inside a throw-away test cluster, never in front of
// real workloads.
package tokenserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// TokenPath is the path of the token endpoint, relative to an OpsNow base URL.
const TokenPath = "/platform/v2/identity/api-keys/token"

// DefaultLifetime is the token lifetime used when Options.Lifetime is zero;
// it matches the 3600 s that OpsNow reports.
const DefaultLifetime = time.Hour

// TokenPrefix starts every access token the server issues, so that tests can
// recognise a token in logs even when they did not keep the exact value.
const TokenPrefix = "demo."

// maxRequestBody bounds the token request body; a real key is a few dozen bytes.
const maxRequestBody = 64 << 10

// Options configures a Server.
type Options struct {
	// Lifetime is the token lifetime reported in expiresIn, rounded down to
	// whole seconds (at least 1). Zero or negative means DefaultLifetime.
	Lifetime time.Duration
	// Latency is an artificial delay added to every token request. It ends
	// early when the request context is cancelled (the client went away, or
	// the http.Server's BaseContext ended at shutdown); the request then
	// gets 503 {"message":"request cancelled"} and no token.
	Latency time.Duration
	// APIKeys, if non-empty, are the only accepted API keys; any other key
	// gets 401 {"message":"invalid api key"}. Empty means every key is valid.
	APIKeys []string
	// OnRequest, if set, is called once per token request, when its outcome
	// is settled, just before the answer is sent. It is called concurrently from request goroutines, so it
	// must be safe for concurrent use and quick.
	OnRequest func(Event)
}

// Event describes one finished token request. It never carries the API key or
// the access token, so it can be logged as is.
type Event struct {
	// Request is the 1-based sequence number of the request among all token
	// requests the server received.
	Request int64
	// Token is the 1-based sequence number of the token issued by this
	// request, or 0 if no token was issued.
	Token int64
	// Status is the HTTP status of the answer; 0 when a Disconnect fault
	// closed the connection instead.
	Status int
	// Lifetime is the lifetime reported for the issued token.
	Lifetime time.Duration
	// Reason says why no token was issued, e.g. "invalid api key",
	// "injected fault" or "request cancelled"; empty when one was.
	Reason string
}

// Fault makes the server fail token requests until cleared with SetFault(nil).
//
// A Fault with only Delay set is a slow but working server: tokens are issued
// after the delay. A Fault with Status, Body or Size set answers every token
// request with that response instead of a token (Size excepted, see below).
// Fault responses are always sent with Content-Type application/json, even
// when Body is not JSON, to mimic an upstream that lies about its content.
type Fault struct {
	// Status is the HTTP status to return (e.g. 500, 429, 401). Zero means
	// 200 when Body or Size is set.
	Status int
	// RetryAfter is the value of the Retry-After header; empty sends none.
	RetryAfter string
	// Body is the response body. Empty means {"message":"<status text>"}.
	Body string
	// Delay is waited before answering, on top of Options.Latency, so that
	// clients hit their timeouts. It ends early like Options.Latency.
	Delay time.Duration
	// Size, if positive, replaces the body with a JSON document of exactly
	// Size bytes, padded with filler, to test clients' response size limits.
	// With a 2xx status the document is a valid token response carrying a
	// real token (counted as issued), so a client that reads it without a
	// limit visibly succeeds where it should have failed. Sizes too small for
	// the document yield its first Size bytes.
	Size int
	// Disconnect closes the connection without any answer, as an upstream
	// that is down or crashes mid-request does; it wins over the other
	// fields except Delay.
	Disconnect bool
}

// answers reports whether the fault replaces the normal answer, as opposed to
// only delaying it.
func (f *Fault) answers() bool {
	return f.Status != 0 || f.Body != "" || f.Size > 0 || f.Disconnect
}

// Grant is the server's record of one issued access token: what a test
// checks a Secret's token against to tell a valid token from a lapsed one.
type Grant struct {
	// Request and Token are the sequence numbers of Event.
	Request, Token int64
	// KeyDigest is KeyDigest of the API key the token was issued for.
	KeyDigest string
	// RequestedAt is when the request arrived; IssuedAt, when the server
	// issued the token, after any latency or delay. A client that counts
	// the lifetime from its request, as a careful one does, sees the token
	// expire IssuedAt - RequestedAt earlier than ExpiresAt.
	RequestedAt, IssuedAt time.Time
	// ExpiresAt is IssuedAt plus the lifetime the answer reported, in
	// whole seconds: the instant the token stops being valid.
	ExpiresAt time.Time
}

// KeyDigest returns a digest of an API key that identifies it in a Grant
// without holding the key itself.
func KeyDigest(apiKey string) string {
	sum := sha256.Sum256([]byte(apiKey))
	return hex.EncodeToString(sum[:16])
}

func (f *Fault) status() int {
	if f.Status == 0 {
		return http.StatusOK
	}
	return f.Status
}

// Stats holds the server's counters. Requests == Issued + Failed + InFlight.
// A request is counted as finished before its answer is sent, so a client
// that has read its answer finds it in the counters.
type Stats struct {
	// Requests is the number of token requests received, whatever their fate.
	Requests int64 `json:"requests"`
	// Issued is the number of access tokens handed out.
	Issued int64 `json:"issued"`
	// Failed is the number of finished token requests that got no token:
	// rejected, failed by a Fault, or cancelled.
	Failed int64 `json:"failed"`
	// PeakPerSecond is the largest number of token requests that arrived
	// within any sliding one-second window, for rate-limit checks.
	PeakPerSecond int64 `json:"peakPerSecond"`
	// InFlight is the number of token requests being handled right now.
	InFlight int64 `json:"inFlight"`
	// InFlightPeak is the largest number of token requests handled at once.
	InFlightPeak int64 `json:"inFlightPeak"`
}

// Server is an http.Handler serving the OpsNow token endpoint and the admin
// endpoints described in the package documentation. It is safe for
// concurrent use; its settings may be changed while it serves.
type Server struct {
	onRequest func(Event)
	// now returns the monotonic time used for the per-second window; tests
	// replace it to make the window deterministic.
	now func() time.Duration

	mu       sync.Mutex
	lifetime time.Duration
	latency  time.Duration
	keys     map[string]struct{} // nil or empty: accept every key
	fault    *Fault
	perKey   map[string]int64
	issued   []string
	grants   map[string]Grant
	stats    Stats
	// window holds the arrival times (per now) of the token requests of
	// the last second, oldest first; its length bounds itself to the
	// arrival rate, so memory stays small while the peak stays exact.
	window []time.Duration
}

// New returns a Server configured by opts.
func New(opts Options) *Server {
	start := time.Now()
	s := &Server{
		onRequest: opts.OnRequest,
		now:       func() time.Duration { return time.Since(start) },
		latency:   opts.Latency,
		perKey:    make(map[string]int64),
		grants:    make(map[string]Grant),
	}
	s.SetLifetime(opts.Lifetime)
	s.SetAPIKeys(opts.APIKeys...)
	return s
}

// SetFault makes every following token request fail as f describes; nil
// clears the fault. The server keeps a copy, so f may be reused.
func (s *Server) SetFault(f *Fault) {
	var c *Fault
	if f != nil {
		cp := *f
		c = &cp
	}
	s.mu.Lock()
	s.fault = c
	s.mu.Unlock()
}

// SetLifetime sets the lifetime of tokens issued from now on; zero or
// negative restores DefaultLifetime.
func (s *Server) SetLifetime(d time.Duration) {
	if d <= 0 {
		d = DefaultLifetime
	}
	s.mu.Lock()
	s.lifetime = d
	s.mu.Unlock()
}

// SetAPIKeys replaces the accepted API keys; no keys means every key is
// accepted. Empty strings are ignored.
func (s *Server) SetAPIKeys(keys ...string) {
	m := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		if k != "" {
			m[k] = struct{}{}
		}
	}
	s.mu.Lock()
	s.keys = m
	s.mu.Unlock()
}

// Requests returns how many token requests arrived, including failed and
// rejected ones.
func (s *Server) Requests() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats.Requests
}

// RequestsFor returns how many token requests carried apiKey, including
// failed and rejected ones.
func (s *Server) RequestsFor(apiKey string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perKey[apiKey]
}

// Issued returns a copy of every access token issued so far, oldest first,
// so that tests can check that none of them leaked into logs or events.
func (s *Server) Issued() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// Lookup returns the record of an issued token, and false for a token the
// server never issued.
func (s *Server) Lookup(token string) (Grant, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.grants[token]
	return g, ok
}

// Grants returns the records of every issued token, in the order issued.
func (s *Server) Grants() []Grant {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Grant, 0, len(s.issued))
	for _, t := range s.issued {
		out = append(out, s.grants[t])
	}
	return out
}

// Stats returns a consistent snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// ServeHTTP serves the token endpoint and the admin endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case TokenPath:
		s.serveToken(w, r)
	case "/stats":
		s.serveStats(w, r)
	case "/fault":
		s.serveFault(w, r)
	default:
		writeMessage(w, http.StatusNotFound, "not found")
	}
}

// settings is what a token request needs from the server's mutable
// configuration, captured once at arrival so that a request is handled
// consistently even if a test changes the settings meanwhile.
type settings struct {
	lifetime time.Duration
	latency  time.Duration
	keys     map[string]struct{}
	fault    *Fault
	arrived  time.Time
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	var ev Event
	cfg := s.arrive(&ev)
	send := s.answerToken(w, r, cfg, &ev)
	// The books are closed before the answer goes out, so a client that has
	// its answer already sees it in Stats and never finds its own request
	// still in flight.
	s.finish(ev)
	send()
}

// answerToken decides the answer to a token request, fills in ev and returns
// the function that sends the answer. Headers may already be set on w;
// nothing is written to it.
func (s *Server) answerToken(w http.ResponseWriter, r *http.Request, cfg settings, ev *Event) func() {
	reject := func(status int, msg string) func() {
		ev.Status, ev.Reason = status, msg
		return func() { writeMessage(w, status, msg) }
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return reject(http.StatusMethodNotAllowed, "method not allowed")
	}

	// The body is read before waiting so that per-key counts are right even
	// for requests that the client abandons during the delay.
	key, badRequest := readAPIKey(w, r)
	if key != "" {
		s.mu.Lock()
		s.perKey[key]++
		s.mu.Unlock()
	}

	wait := cfg.latency
	if cfg.fault != nil {
		wait += cfg.fault.Delay
	}
	if !sleep(r.Context(), wait) {
		// Either the client is gone and nobody reads this, or the server
		// is shutting down and the client deserves a clear, retryable
		// answer rather than an empty 200.
		w.Header().Set("Retry-After", "1")
		return reject(http.StatusServiceUnavailable, "request cancelled")
	}

	if f := cfg.fault; f != nil && f.answers() {
		return s.answerFault(w, f, key, cfg, ev)
	}
	if badRequest != nil {
		return reject(badRequest.status, badRequest.message)
	}
	if len(cfg.keys) > 0 {
		if _, ok := cfg.keys[key]; !ok {
			return reject(http.StatusUnauthorized, "invalid api key")
		}
	}

	token := s.issue(ev, key, cfg.lifetime, cfg.arrived)
	body, _ := json.Marshal(tokenResponse(token, cfg.lifetime))
	w.Header().Set("Cache-Control", "no-store")
	ev.Status = http.StatusOK
	return func() { writeJSON(w, http.StatusOK, body) }
}

// arrive counts a new token request and returns the settings to handle it with.
func (s *Server) arrive(ev *Event) settings {
	s.mu.Lock()
	defer s.mu.Unlock()

	s.stats.Requests++
	ev.Request = s.stats.Requests
	s.stats.InFlight++
	s.stats.InFlightPeak = max(s.stats.InFlightPeak, s.stats.InFlight)

	now := s.now()
	cut := 0
	for cut < len(s.window) && now-s.window[cut] >= time.Second {
		cut++
	}
	s.window = append(s.window[cut:], now)
	s.stats.PeakPerSecond = max(s.stats.PeakPerSecond, int64(len(s.window)))

	return settings{lifetime: s.lifetime, latency: s.latency, keys: s.keys, fault: s.fault, arrived: time.Now()}
}

// issue creates a token for apiKey, asked for at arrived, records it and
// numbers it in ev.
func (s *Server) issue(ev *Event, apiKey string, lifetime time.Duration, arrived time.Time) string {
	token := newToken()
	now := time.Now()
	s.mu.Lock()
	s.issued = append(s.issued, token)
	s.stats.Issued++
	ev.Token = s.stats.Issued
	s.grants[token] = Grant{
		Request: ev.Request, Token: ev.Token, KeyDigest: KeyDigest(apiKey),
		RequestedAt: arrived, IssuedAt: now, ExpiresAt: now.Add(time.Duration(expiresIn(lifetime)) * time.Second),
	}
	s.mu.Unlock()
	ev.Lifetime = lifetime
	return token
}

// finish closes the books on a token request and reports it.
func (s *Server) finish(ev Event) {
	s.mu.Lock()
	s.stats.InFlight--
	if ev.Token == 0 {
		s.stats.Failed++
	}
	s.mu.Unlock()
	if s.onRequest != nil {
		s.onRequest(ev)
	}
}

type requestError struct {
	status  int
	message string
}

// readAPIKey parses the token request body. It returns the key when one is
// present, and a non-nil error describing the answer when the request is bad.
func readAPIKey(w http.ResponseWriter, r *http.Request) (string, *requestError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return "", &requestError{http.StatusRequestEntityTooLarge, "request body too large"}
		}
		return "", &requestError{http.StatusBadRequest, "cannot read request body"}
	}
	var req struct {
		APIKey *string `json:"apiKey"`
	}
	jsonErr := json.Unmarshal(body, &req)
	var key string
	if jsonErr == nil && req.APIKey != nil {
		key = *req.APIKey
	}
	// The contract requires the JSON content type; checking it catches a
	// client that forgets the header before the real service rejects it.
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return key, &requestError{http.StatusUnsupportedMediaType, "Content-Type must be application/json"}
	}
	if jsonErr != nil || key == "" {
		return key, &requestError{http.StatusBadRequest, "apiKey is required"}
	}
	return key, nil
}

// answerFault prepares the answer that the fault f dictates.
func (s *Server) answerFault(w http.ResponseWriter, f *Fault, key string, cfg settings, ev *Event) func() {
	lifetime := cfg.lifetime
	if f.Disconnect {
		ev.Reason = "injected disconnect"
		return func() { disconnect(w) }
	}
	status := f.status()
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	ev.Status = status
	ev.Reason = "injected fault"
	if f.Size > 0 {
		var doc any
		if status >= 200 && status < 300 {
			w.Header().Set("Cache-Control", "no-store")
			token := s.issue(ev, key, lifetime, cfg.arrived)
			ev.Reason = ""
			doc = tokenResponse(token, lifetime)
		} else {
			doc = map[string]string{"message": statusText(status)}
		}
		return func() { writePadded(w, status, doc, f.Size) }
	}
	body := f.Body
	if body == "" {
		b, _ := json.Marshal(map[string]string{"message": statusText(status)})
		body = string(b)
	}
	return func() { writeJSON(w, status, []byte(body)) }
}

// disconnect closes the client's connection with no answer at all. Where the
// connection cannot be taken over (HTTP/2), the handler panics with
// http.ErrAbortHandler, which makes the server reset the stream instead.
func disconnect(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// writePadded writes doc as JSON with an extra "padding" member of filler
// that makes the body exactly size bytes. The filler is streamed, so sizes
// far beyond a client's limit cost the server no memory.
func writePadded(w http.ResponseWriter, status int, doc any, size int) {
	b, _ := json.Marshal(doc)
	// b ends with '}': reopen the object to append the padding member.
	prefix := append(b[:len(b)-1:len(b)-1], `,"padding":"`...)
	const suffix = `"}`
	filler := size - len(prefix) - len(suffix)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(size))
	w.WriteHeader(status)
	if filler < 0 {
		_, _ = w.Write(append(prefix, suffix...)[:size])
		return
	}
	if _, err := w.Write(prefix); err != nil {
		return
	}
	chunk := bytes.Repeat([]byte{'x'}, min(filler, 32<<10))
	for filler > 0 {
		n := min(filler, len(chunk))
		if _, err := w.Write(chunk[:n]); err != nil {
			return // the client stopped reading, as a size-limited one should
		}
		filler -= n
	}
	_, _ = io.WriteString(w, suffix)
}

func tokenResponse(token string, lifetime time.Duration) any {
	type data struct {
		AccessToken string `json:"accessToken"`
		ExpiresIn   int64  `json:"expiresIn"`
	}
	return struct {
		Data data `json:"data"`
	}{data{AccessToken: token, ExpiresIn: expiresIn(lifetime)}}
}

// expiresIn converts a lifetime to whole seconds, rounding down so that the
// server never promises more than it means, but never reporting zero.
func expiresIn(lifetime time.Duration) int64 {
	return max(int64(lifetime/time.Second), 1)
}

// newToken returns an opaque token: the prefix and 32 random bytes.
func newToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// sleep waits for d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeMessage(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	body, _ := json.Marshal(s.Stats())
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, body)
}

// faultJSON is the wire form of a Fault on the /fault endpoint. Delay is a
// Go duration string ("1.5s") or a number of seconds, which is what a shell
// script can write; Go's default nanosecond encoding is not.
type faultJSON struct {
	Status     int             `json:"status"`
	RetryAfter string          `json:"retryAfter,omitempty"`
	Body       string          `json:"body,omitempty"`
	Delay      json.RawMessage `json:"delay,omitempty"`
	Size       int             `json:"size,omitempty"`
	Disconnect bool            `json:"disconnect,omitempty"`
}

func (s *Server) serveFault(w http.ResponseWriter, r *http.Request) {
	if !fromLoopback(r) {
		writeMessage(w, http.StatusForbidden, "admin endpoints answer loopback clients only")
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.mu.Lock()
		f := s.fault
		s.mu.Unlock()
		body := []byte("null")
		if f != nil {
			delay, _ := json.Marshal(f.Delay.String())
			body, _ = json.Marshal(faultJSON{Status: f.Status, RetryAfter: f.RetryAfter, Body: f.Body, Delay: delay, Size: f.Size, Disconnect: f.Disconnect})
		}
		writeJSON(w, http.StatusOK, body)
	case http.MethodPost, http.MethodPut:
		f, err := decodeFault(http.MaxBytesReader(w, r.Body, maxRequestBody))
		if err != nil {
			writeMessage(w, http.StatusBadRequest, "invalid fault: "+err.Error())
			return
		}
		s.SetFault(f)
		w.WriteHeader(http.StatusNoContent)
	case http.MethodDelete:
		s.SetFault(nil)
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "GET, POST, PUT, DELETE")
		writeMessage(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

func decodeFault(r io.Reader) (*Fault, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields() // a typo in a script must not silently mean "no fault"
	var in faultJSON
	if err := dec.Decode(&in); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	f := &Fault{Status: in.Status, RetryAfter: in.RetryAfter, Body: in.Body, Size: in.Size, Disconnect: in.Disconnect}
	if in.Status != 0 && (in.Status < 100 || in.Status > 599) {
		return nil, fmt.Errorf("status %d is not an HTTP status", in.Status)
	}
	if in.Size < 0 {
		return nil, errors.New("size must not be negative")
	}
	if len(in.Delay) > 0 && string(in.Delay) != "null" {
		d, err := parseDelay(in.Delay)
		if err != nil {
			return nil, err
		}
		f.Delay = d
	}
	return f, nil
}

func parseDelay(raw json.RawMessage) (time.Duration, error) {
	var d time.Duration
	var str string
	var secs float64
	switch {
	case json.Unmarshal(raw, &str) == nil:
		var err error
		if d, err = time.ParseDuration(str); err != nil {
			return 0, fmt.Errorf("delay: %w", err)
		}
	case json.Unmarshal(raw, &secs) == nil:
		d = time.Duration(secs * float64(time.Second))
	default:
		return 0, errors.New(`delay must be a duration string like "2s" or a number of seconds`)
	}
	if d < 0 {
		return 0, errors.New("delay must not be negative")
	}
	return d, nil
}

// fromLoopback reports whether the request came from a loopback address.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return ip != nil && ip.IsLoopback()
}

func statusText(status int) string {
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "status " + strconv.Itoa(status)
}

// writeMessage writes {"message":msg} with the given status.
func writeMessage(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(map[string]string{"message": msg})
	writeJSON(w, status, b)
}

// writeJSON writes body as application/json with the given status.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
