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
	"errors"
	"strconv"
	"strings"
	"time"
)

// The sentinels below classify every failure of Exchange. Callers branch on
// them with errors.Is, never on error strings: the kind decides how the
// controller retries and which condition reason the user sees.
var (
	// ErrUnauthorized means OpsNow rejected the API key (HTTP 401 or 403).
	// Retrying with the same key is pointless until someone fixes the key.
	ErrUnauthorized = errors.New("unauthorized")

	// ErrUnavailable means the exchange failed for a reason expected to be
	// transient: a network error, a timeout, HTTP 408, 425, 429 or any 5xx.
	ErrUnavailable = errors.New("upstream unavailable")

	// ErrInvalidResponse means OpsNow answered, but not with something usable:
	// a 2xx body without a valid token or expiry, a token that is not 1 to
	// 16 KiB of RFC 6750 b64token characters, a lifetime shorter than the
	// minimum, a body over the size limit, a refused redirect or an
	// unexpected HTTP status such as 400 or 404.
	ErrInvalidResponse = errors.New("invalid response")
)

// unexpectedStatusPrefix starts the Detail of an unexpected HTTP status. Error
// checks for it so the status code is not printed twice.
const unexpectedStatusPrefix = "unexpected HTTP status "

// Error is the error Exchange returns for every failure. Kind is one of
// ErrUnauthorized, ErrUnavailable or ErrInvalidResponse and is reachable
// through errors.Is. No field ever holds the API key or an access token, so
// the error can be logged, recorded in status and shown in events.
type Error struct {
	// Kind is ErrUnauthorized, ErrUnavailable or ErrInvalidResponse.
	Kind error
	// StatusCode is the HTTP status of the response, or 0 when no response
	// arrived (network error, timeout).
	StatusCode int
	// RetryAfter is how long OpsNow asked us to wait (Retry-After on 429 or
	// 503), capped at one hour; 0 when absent or invalid.
	RetryAfter time.Duration
	// Detail is a short, sanitized, human-readable cause.
	Detail string
}

// Error returns a lowercase one-line message such as
// "upstream unavailable: HTTP 503: maintenance (retry after 30s)".
func (e *Error) Error() string {
	var b strings.Builder
	if e.Kind != nil {
		b.WriteString(e.Kind.Error())
	} else {
		b.WriteString("token exchange failed")
	}
	if e.StatusCode != 0 && !strings.HasPrefix(e.Detail, unexpectedStatusPrefix) {
		b.WriteString(": HTTP ")
		b.WriteString(strconv.Itoa(e.StatusCode))
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.RetryAfter > 0 {
		b.WriteString(" (retry after ")
		b.WriteString(e.RetryAfter.String())
		b.WriteString(")")
	}
	return b.String()
}

// setDetail sets Detail to detail sanitized with secrets.
func (e *Error) setDetail(detail string, secrets ...string) *Error {
	set := newSecretSet(secrets)
	e.Detail = set.sanitize(detail, maxSanitizedBytes)
	return e.checkMessage(set)
}

// checkMessage leaves Detail out when the whole message would still show a
// secret: the fixed text around a sanitized detail ("HTTP 401: ") can
// complete a run of a secret that the detail begins or ends with.
func (e *Error) checkMessage(secrets secretSet) *Error {
	if e.Detail != "" && secrets.leaks(e.Error()) {
		e.Detail = ""
	}
	return e
}

// Unwrap returns Kind so that errors.Is(err, ErrUnavailable) and friends work.
func (e *Error) Unwrap() error {
	return e.Kind
}
