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

// Package opsnow is the client for the OpsNow identity API: it exchanges a
// long-lived API key for a short-lived access token.
//
// Failures are returned as *Error, classified by the sentinels
// ErrUnauthorized, ErrUnavailable and ErrInvalidResponse. Neither the API key
// nor an access token ever appears in an error.
package opsnow

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/utils/clock"
)

const (
	// TokenPath is appended to an endpoint base URL to form the URL of the
	// token exchange.
	TokenPath = "/platform/v2/identity/api-keys/token"

	// DefaultLifetime applies when a response says nothing about expiry; it
	// is the lifetime OpsNow documents for its access tokens.
	DefaultLifetime = 3600 * time.Second

	// DefaultMinLifetime is the shortest lifetime a Client accepts unless
	// told otherwise (WithMinLifetime). A shorter one is ErrInvalidResponse,
	// so that an upstream answering "expiresIn": 1 backs off like any other
	// failure instead of driving a refresh loop.
	DefaultMinLifetime = 10 * time.Second

	// MaxLifetime is the longest lifetime planned for. A longer one (or a
	// lifetime in milliseconds read as seconds) is planned as MaxLifetime:
	// refreshing early costs one request, believing a wrong expiry leaves an
	// expired token in the Secret.
	MaxLifetime = 24 * time.Hour

	userAgent = "opsnow-token-operator"

	// maxBodyBytes bounds how much of a response is read: a token response
	// is a few KiB, and a misbehaving server must not exhaust our memory.
	maxBodyBytes = 1 << 20
	// maxDrainBytes is how much of an unread remainder is discarded so the
	// connection can be reused; beyond that, closing it is cheaper.
	maxDrainBytes = 64 << 10
	// maxRetryAfter caps Retry-After, so that a confused server cannot park
	// a token until long after it has expired.
	maxRetryAfter = time.Hour
)

// Token is an access token and the time it expires.
type Token struct {
	// AccessToken is the bearer token. It is a secret.
	AccessToken string
	// IssuedAt is the clock time when the request was sent. Taking it before
	// sending, not when the response arrives, errs on the side of an earlier
	// expiry.
	IssuedAt time.Time
	// ExpiresAt is when the token expires, in UTC, truncated to the second:
	// the earliest of the expiry the response states and the exp claim of a
	// JWT, and at most MaxLifetime after IssuedAt.
	ExpiresAt time.Time
}

// Lifetime returns how long the token is valid from IssuedAt.
func (t Token) Lifetime() time.Duration {
	return t.ExpiresAt.Sub(t.IssuedAt)
}

// Client exchanges API keys for access tokens. It holds no per-exchange state
// and is safe for concurrent use.
type Client struct {
	httpClient  *http.Client
	clock       clock.PassiveClock
	minLifetime time.Duration
}

// NewClient returns a Client that sends requests with httpClient and reads
// time from clk. A nil httpClient means NewHTTPClient(DefaultTimeout); a nil
// clk means the real clock. If httpClient has no redirect policy, the
// same-origin policy of NewHTTPClient is applied to a copy of it, because
// following a redirect elsewhere would send the API key there.
func NewClient(httpClient *http.Client, clk clock.PassiveClock) *Client {
	if httpClient == nil {
		httpClient = NewHTTPClient(DefaultTimeout)
	} else if httpClient.CheckRedirect == nil {
		c := *httpClient
		c.CheckRedirect = checkRedirect
		httpClient = &c
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Client{httpClient: httpClient, clock: clk, minLifetime: DefaultMinLifetime}
}

// WithMinLifetime returns a copy of c that refuses, as ErrInvalidResponse,
// tokens whose lifetime is shorter than d. A d of zero or less turns the
// check off (a token must still expire after it was issued); a d over
// MaxLifetime counts as MaxLifetime, which no token would otherwise pass.
func (c *Client) WithMinLifetime(d time.Duration) *Client {
	cp := *c
	cp.minLifetime = min(max(d, 0), MaxLifetime)
	return &cp
}

// exchangeRequest is the body of the token request.
type exchangeRequest struct {
	APIKey string `json:"apiKey"`
}

// Exchange trades apiKey for an access token at endpoint, a base URL such as
// https://api.opsnow.io to which TokenPath is appended. Every failure is an
// *Error; see ErrUnauthorized, ErrUnavailable and ErrInvalidResponse. The
// caller is responsible for checking endpoint against its allowlist: Exchange
// sends the key to whatever endpoint it is given.
func (c *Client) Exchange(ctx context.Context, endpoint, apiKey string) (Token, error) {
	u, err := tokenURL(endpoint)
	if err != nil {
		return Token{}, (&Error{Kind: ErrInvalidResponse}).setDetail(err.Error(), apiKey)
	}
	target := origin(u) + u.EscapedPath()

	payload, err := json.Marshal(exchangeRequest{APIKey: apiKey}) //nolint:gosec // G117: sending the API key to the token endpoint is what Exchange is for
	if err != nil {
		return Token{}, &Error{Kind: ErrInvalidResponse, Detail: "encode request body"}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(payload))
	if err != nil {
		return Token{}, (&Error{Kind: ErrInvalidResponse}).setDetail("build request for "+target, apiKey)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)

	issuedAt := c.clock.Now()
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return Token{}, transportError(ctx, resp, err, target, apiKey)
	}
	defer closeBody(resp.Body)

	body, readErr := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	tooLarge := len(body) > maxBodyBytes
	if tooLarge {
		body = body[:maxBodyBytes]
	}

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// A failed or oversized read still leaves a usable status and the
		// start of the body, which is all an error needs.
		return Token{}, c.statusError(resp, body, apiKey)
	}
	if readErr != nil {
		e := networkError(ctx, readErr, "read response body", apiKey)
		e.StatusCode = resp.StatusCode
		return Token{}, e
	}
	if tooLarge {
		return Token{}, &Error{Kind: ErrInvalidResponse, StatusCode: resp.StatusCode, Detail: "response body exceeds 1 MiB"}
	}

	tok, detail := parseToken(body, issuedAt, c.minLifetime)
	if detail != "" {
		// detail is one of parseToken's fixed messages: the body of a 2xx
		// response may hold a token and is never quoted.
		return Token{}, &Error{Kind: ErrInvalidResponse, StatusCode: resp.StatusCode, Detail: detail}
	}
	return tok, nil
}

// tokenURL joins endpoint and TokenPath. Query, fragment and trailing
// slashes of the endpoint are dropped: the endpoint is a base URL.
func tokenURL(endpoint string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(endpoint))
	if err != nil {
		return nil, errors.New("invalid endpoint URL")
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, errors.New("invalid endpoint URL: scheme must be https or http")
	}
	if u.Host == "" {
		return nil, errors.New("invalid endpoint URL: missing host")
	}
	u.Path = strings.TrimRight(u.Path, "/") + TokenPath
	u.RawPath = ""
	u.RawQuery = ""
	u.ForceQuery = false
	u.Fragment = ""
	u.RawFragment = ""
	return u, nil
}

// closeBody discards a bounded remainder of body and closes it, so that the
// connection returns to the idle pool.
func closeBody(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxDrainBytes))
	_ = body.Close()
}

// statusError classifies a non-2xx response. Only a recognised message field
// of the body is quoted, never the body itself: an error page or an echo of
// the request may hold the key in a form no redaction anticipates.
func (c *Client) statusError(resp *http.Response, body []byte, apiKey string) *Error {
	code := resp.StatusCode
	e := &Error{StatusCode: code}
	// A token the body carries along with the error is as secret as the key.
	secrets := newSecretSet(append(bodyCredentials(body), apiKey))
	e.Detail = secrets.sanitize(upstreamMessage(body), maxSanitizedBytes)
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		e.Kind = ErrUnauthorized
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		e.Kind = ErrUnavailable
		e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), c.clock.Now())
	case code == http.StatusRequestTimeout || code == http.StatusTooEarly || (code >= 500 && code <= 599):
		e.Kind = ErrUnavailable
	default:
		e.Kind = ErrInvalidResponse
		prefix := unexpectedStatusPrefix + strconv.Itoa(code)
		if e.Detail == "" {
			e.Detail = prefix
		} else {
			e.Detail = prefix + ": " + e.Detail
		}
	}
	return e.checkMessage(secrets)
}

var (
	// messageFields are the fields of a JSON error body meant to be read by
	// people, in order of preference.
	messageFields = []string{"message", "error_description", "errorMessage", "error_message", "error", "detail", "title", "msg", "description"}
	// credentialFields are the fields of a JSON body whose values are
	// credentials whatever they look like.
	credentialFields = []string{"accessToken", "access_token", "token", "refreshToken", "refresh_token", "idToken", "id_token", "apiKey", "api_key"}
)

// upstreamMessage returns the message field of a JSON error body: at the top
// level, else in a nested "error" object or the first entry of an "errors"
// list. It returns "" when there is none.
func upstreamMessage(body []byte) string {
	var obj jsonObject
	if json.Unmarshal(body, &obj) != nil || obj == nil {
		return ""
	}
	if m := messageField(obj); m != "" {
		return m
	}
	var nested jsonObject
	if raw, ok := obj["error"]; ok && json.Unmarshal(raw, &nested) == nil {
		if m := messageField(nested); m != "" {
			return m
		}
	}
	var list []json.RawMessage
	if raw, ok := obj["errors"]; ok && json.Unmarshal(raw, &list) == nil && len(list) > 0 {
		var s string
		if json.Unmarshal(list[0], &s) == nil && strings.TrimSpace(s) != "" {
			return s
		}
		var first jsonObject
		if json.Unmarshal(list[0], &first) == nil {
			return messageField(first)
		}
	}
	return ""
}

func messageField(obj jsonObject) string {
	for _, key := range messageFields {
		var s string
		if raw, ok := obj[key]; ok && json.Unmarshal(raw, &s) == nil && strings.TrimSpace(s) != "" {
			return s
		}
	}
	return ""
}

// bodyCredentials returns the string values of the credential fields of a
// JSON body, at the top level and in a "data" or "result" object.
func bodyCredentials(body []byte) []string {
	var top jsonObject
	if json.Unmarshal(body, &top) != nil {
		return nil
	}
	objects := []jsonObject{top}
	for _, name := range containerFields {
		var inner jsonObject
		if raw, ok := top[name]; ok && json.Unmarshal(raw, &inner) == nil {
			objects = append(objects, inner)
		}
	}
	var creds []string
	for _, obj := range objects {
		for _, name := range credentialFields {
			var s string
			if raw, ok := obj[name]; ok && json.Unmarshal(raw, &s) == nil && s != "" {
				creds = append(creds, s)
			}
		}
	}
	return creds
}

// parseRetryAfter reads a Retry-After header: delta-seconds or an HTTP-date,
// relative to now. Absent, negative or malformed values give 0; values over
// maxRetryAfter are capped.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if isDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(maxRetryAfter/time.Second) {
			// Only overflow fails here: a huge number of seconds.
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	return min(d, maxRetryAfter)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// transportError classifies an error from http.Client.Do: no usable
// response arrived.
func transportError(ctx context.Context, resp *http.Response, err error, target, apiKey string) *Error {
	var re *redirectError
	if errors.As(err, &re) {
		e := &Error{Kind: ErrInvalidResponse}
		if resp != nil {
			// net/http returns the redirect response, body already closed,
			// together with the CheckRedirect error.
			e.StatusCode = resp.StatusCode
			_ = resp.Body.Close()
		}
		return e.setDetail(re.msg, apiKey)
	}
	return networkError(ctx, err, "POST "+target, apiKey)
}

// networkError turns a transport or body-read error into an ErrUnavailable
// with a short cause. The raw *url.Error text is not used: it repeats the
// full request URL and wraps several layers of detail nobody acts on.
func networkError(ctx context.Context, err error, what, apiKey string) *Error {
	return (&Error{Kind: ErrUnavailable}).setDetail(what+": "+networkCause(ctx, err), apiKey)
}

func networkCause(ctx context.Context, err error) string {
	var (
		netErr  net.Error
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		recErr  tls.RecordHeaderError
	)
	switch {
	case errors.Is(ctx.Err(), context.Canceled) || errors.Is(err, context.Canceled):
		return "request canceled"
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		return "request timed out"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "request timed out"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by peer"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return "DNS lookup failed: no such host"
		}
		return "DNS lookup failed"
	case errors.As(err, &certErr):
		return "TLS certificate verification failed: " + innermost(certErr.Err).Error()
	case errors.As(err, &recErr):
		return "TLS handshake failed: server did not answer with TLS"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by server"
	}
	return innermost(err).Error()
}

// innermost unwraps err down to the first error that wraps nothing (or more
// than one thing) — the cause without the layers of context around it.
func innermost(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}
