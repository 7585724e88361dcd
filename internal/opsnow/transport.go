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
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	// DefaultTimeout bounds a whole exchange: connecting, sending the key and
	// reading the response.
	DefaultTimeout = 30 * time.Second

	dialTimeout         = 10 * time.Second
	tlsHandshakeTimeout = 10 * time.Second
	// maxIdleConnsPerHost is high because thousands of tokens may be
	// refreshed against a handful of endpoints; Go's default of 2 idle
	// connections per host would make most exchanges open a new TLS session.
	maxIdleConnsPerHost = 100
	// maxResponseHeaderBytes is far above what a token response needs and far
	// below net/http's 1 MB default.
	maxResponseHeaderBytes = 64 << 10
	// maxRedirects is how many same-origin redirects are followed.
	maxRedirects = 3
)

// NewHTTPClient returns the hardened client shared by all exchanges: every
// request has a deadline, TLS is 1.2 or newer, the standard proxy environment
// variables (HTTPS_PROXY, NO_PROXY, ...) are honoured, idle connections are
// kept for reuse, and only same-origin redirects are followed. A timeout that
// is not positive means DefaultTimeout: an exchange is never unbounded.
func NewHTTPClient(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	dialer := &net.Dialer{
		Timeout:   dialTimeout,
		KeepAlive: 30 * time.Second,
	}
	transport := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    tlsHandshakeTimeout,
		ResponseHeaderTimeout:  timeout,
		ExpectContinueTimeout:  1 * time.Second,
		MaxIdleConns:           maxIdleConnsPerHost,
		MaxIdleConnsPerHost:    maxIdleConnsPerHost,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}
	return &http.Client{
		Transport:     transport,
		Timeout:       timeout,
		CheckRedirect: checkRedirect,
	}
}

// redirectError is returned by checkRedirect. It names only the origin of the
// refused target: the rest of the Location header is chosen by the server and
// may carry anything.
type redirectError struct {
	msg string
}

func (e *redirectError) Error() string { return e.msg }

// checkRedirect follows at most maxRedirects redirects, and only within the
// origin of the first request. The API key travels in the request body and
// net/http resends the body on 307 and 308, so a redirect to another host,
// port or scheme (https to http included) would hand the key to a server the
// cluster admin never allowed.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) == 0 {
		return nil
	}
	if len(via) > maxRedirects {
		return &redirectError{msg: fmt.Sprintf("stopped after %d redirects", maxRedirects)}
	}
	from, to := via[0].URL, req.URL
	if !strings.EqualFold(from.Scheme, to.Scheme) {
		return &redirectError{msg: "redirect to another scheme refused (" + origin(to) + ")"}
	}
	if canonicalHostPort(from) != canonicalHostPort(to) {
		return &redirectError{msg: "redirect to another host refused (" + origin(to) + ")"}
	}
	return nil
}

// canonicalHostPort returns host:port with the scheme's default port filled
// in, so that https://h and https://h:443 are the same origin.
func canonicalHostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// origin renders scheme://host[:port] without user info, path or query.
func origin(u *url.URL) string {
	return strings.ToLower(u.Scheme) + "://" + u.Host
}
