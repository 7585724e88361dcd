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
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// maxTokenBytes bounds an access token. Real ones are a few KiB at most,
// and every consumer sends it in an HTTP header.
const maxTokenBytes = 16 << 10

// unixMillisThreshold tells Unix milliseconds from Unix seconds: as seconds
// it is the year 33658, as milliseconds September 2001.
const unixMillisThreshold = 1e12

var (
	// tokenFields and the lifetime fields are tried in order; the first one
	// present decides.
	tokenFields     = []string{"accessToken", "access_token", "token"}
	expiresInFields = []string{"expiresIn", "expires_in"}
	expiresAtFields = []string{"expiresAt", "expires_at", "expiration"}
	// containerFields are the objects a token may be wrapped in.
	containerFields = []string{"data", "result"}

	// decimalPattern is a JSON number. strconv.ParseFloat alone would also
	// accept "NaN", "Inf", hex floats and underscores inside numeric strings.
	decimalPattern = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)
)

// jsonObject keeps values raw so that each field is decoded only as far as
// needed, and numbers keep their exact text.
type jsonObject map[string]json.RawMessage

// parseToken extracts the token and its expiry from a 2xx body and checks
// them: the token against RFC 6750, the lifetime against minLifetime (0 for
// none). A lifetime over MaxLifetime is cut to it. On failure it returns a
// fixed description that never quotes the body, which may hold a token.
func parseToken(body []byte, issuedAt time.Time, minLifetime time.Duration) (Token, string) {
	var top jsonObject
	if err := json.Unmarshal(body, &top); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return Token{}, "response is not a JSON object"
		}
		return Token{}, "response is not valid JSON"
	}
	if top == nil {
		return Token{}, "response is not a JSON object"
	}

	holder, access, detail := findToken(top)
	if detail != "" {
		return Token{}, detail
	}

	objects := []jsonObject{top}
	if holder != nil {
		objects = []jsonObject{holder, top}
	}
	expiresAt, detail := findExpiry(objects, access, issuedAt)
	if detail != "" {
		return Token{}, detail
	}
	lifetime := expiresAt.Sub(issuedAt)
	if lifetime > MaxLifetime {
		expiresAt = issuedAt.Add(MaxLifetime)
	}
	// Status stores seconds. Rounding down means we never believe a token
	// lives longer than it does.
	expiresAt = expiresAt.UTC().Truncate(time.Second)
	if !expiresAt.After(issuedAt) {
		return Token{}, "token expires before it was issued"
	}
	if lifetime < minLifetime {
		return Token{}, fmt.Sprintf("lifetime %s is shorter than the minimum %s", lifetime.Round(time.Millisecond), minLifetime)
	}
	return Token{AccessToken: access, IssuedAt: issuedAt, ExpiresAt: expiresAt}, ""
}

// findToken looks for the token at the top level, then inside "data" and
// "result". It returns the wrapping object holding the token, or nil when the
// token is at the top level.
func findToken(top jsonObject) (jsonObject, string, string) {
	candidates := []jsonObject{top}
	for _, name := range containerFields {
		var inner jsonObject
		if raw, ok := top[name]; ok && json.Unmarshal(raw, &inner) == nil && inner != nil {
			candidates = append(candidates, inner)
		}
	}
	for i, obj := range candidates {
		for _, name := range tokenFields {
			raw, ok := obj[name]
			if !ok {
				continue
			}
			var s string
			if err := json.Unmarshal(raw, &s); err != nil || isNull(raw) {
				return nil, "", "access token field " + name + " is not a string"
			}
			if strings.TrimSpace(s) == "" {
				return nil, "", "access token field " + name + " is empty"
			}
			if detail := checkToken(name, s); detail != "" {
				return nil, "", detail
			}
			if i == 0 {
				return nil, s, ""
			}
			return obj, s, ""
		}
	}
	return nil, "", "no access token in response (expected accessToken, access_token or token)"
}

// checkToken enforces what an access token may hold. Every consumer sends
// it in an HTTP header ("Authorization: Bearer $(cat token)"), so CR, LF or
// NUL would inject headers: only RFC 6750 b64token characters pass, and no
// more than maxTokenBytes of them.
func checkToken(field, token string) string {
	if len(token) > maxTokenBytes {
		return "access token field " + field + " is longer than 16384 bytes"
	}
	if !isB64Token(token) {
		return "access token field " + field + " has characters outside the RFC 6750 b64token set"
	}
	return ""
}

// isB64Token reports whether s matches RFC 6750's
// b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	i := 0
	for i < len(s) && isB64TokenChar(s[i]) {
		i++
	}
	if i == 0 {
		return false
	}
	for i < len(s) && s[i] == '=' {
		i++
	}
	return i == len(s)
}

func isB64TokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~+/", c) >= 0
}

// findExpiry returns when the token expires. Lifetime fields are read from
// objects in order (the object holding the token, then the top level);
// without any, the exp claim of a JWT, else DefaultLifetime. An exp claim
// earlier than the body's expiry wins: the token is useless after it,
// whatever the body says.
func findExpiry(objects []jsonObject, access string, issuedAt time.Time) (time.Time, string) {
	expiresAt, detail := bodyExpiry(objects, issuedAt)
	if detail != "" {
		return time.Time{}, detail
	}
	exp, isJWT, err := jwtExpiry(access)
	if err != nil {
		return time.Time{}, "JWT exp claim is not a NumericDate"
	}
	if isJWT && !exp.IsZero() {
		if !exp.After(issuedAt) {
			return time.Time{}, "JWT exp claim is not after the time of the request"
		}
		if expiresAt.IsZero() || exp.Before(expiresAt) {
			expiresAt = exp
		}
	}
	if expiresAt.IsZero() {
		expiresAt = issuedAt.Add(DefaultLifetime)
	}
	return expiresAt, ""
}

// bodyExpiry returns the expiry the body states, or the zero time when it
// states none.
func bodyExpiry(objects []jsonObject, issuedAt time.Time) (time.Time, string) {
	for _, obj := range objects {
		if name, raw, ok := firstField(obj, expiresInFields); ok {
			secs, ok := parseNumber(raw)
			if !ok {
				return time.Time{}, name + " is not a number of seconds"
			}
			if secs <= 0 {
				return time.Time{}, name + " is not positive"
			}
			// Seconds, as the field says: a lifetime in milliseconds is not
			// guessed at but capped like any other over MaxLifetime. Capping
			// here also keeps the conversion below from overflowing.
			if secs > MaxLifetime.Seconds() {
				return issuedAt.Add(MaxLifetime), ""
			}
			return issuedAt.Add(time.Duration(secs * float64(time.Second))), ""
		}
		if name, raw, ok := firstField(obj, expiresAtFields); ok {
			t, ok := parseTimestamp(raw)
			if !ok {
				return time.Time{}, name + " is not an RFC 3339 time or a Unix timestamp"
			}
			if !t.After(issuedAt) {
				return time.Time{}, name + " is not after the time of the request"
			}
			return t, ""
		}
	}
	return time.Time{}, ""
}

// firstField returns the first of names present in obj with a non-null
// value; null is treated as absent.
func firstField(obj jsonObject, names []string) (string, json.RawMessage, bool) {
	for _, name := range names {
		if raw, ok := obj[name]; ok && !isNull(raw) {
			return name, raw, true
		}
	}
	return "", nil, false
}

func isNull(raw json.RawMessage) bool {
	return strings.TrimSpace(string(raw)) == "null"
}

// parseNumber reads a finite JSON number or a string holding one.
func parseNumber(raw json.RawMessage) (float64, bool) {
	text := strings.TrimSpace(string(raw))
	if strings.HasPrefix(text, `"`) {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		text = strings.TrimSpace(s)
	}
	if !decimalPattern.MatchString(text) {
		return 0, false
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// parseTimestamp reads an RFC 3339 string, or Unix seconds or milliseconds
// as a number or numeric string, told apart by magnitude.
func parseTimestamp(raw json.RawMessage) (time.Time, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s)); err == nil {
			return t, true
		}
	}
	v, ok := parseNumber(raw)
	if !ok || v <= 0 {
		return time.Time{}, false
	}
	if v > unixMillisThreshold {
		if v > unixMillisThreshold*1000 {
			// Microseconds or garbage; as milliseconds it is the year
			// 33658+. Refuse before int64 conversion can overflow.
			return time.Time{}, false
		}
		return time.UnixMilli(int64(v)), true
	}
	return time.Unix(int64(v), 0), true
}

// jwtExpiry returns the exp claim of token if it is a JWT that has one
// (zero time otherwise), whether token is a JWT at all, and an error if the
// claim is present but malformed. The signature is not verified and need not
// be: the claim is only a hint for scheduling the next refresh, never used to
// authorise anything.
func jwtExpiry(token string) (time.Time, bool, error) {
	if strings.Count(token, ".") != 2 {
		return time.Time{}, false, nil
	}
	claims := jwt.MapClaims{}
	_, _, err := jwt.NewParser().ParseUnverified(token, claims)
	// An unknown or missing "alg" is reported after the claims were decoded;
	// for reading exp that does not matter.
	if err != nil && !errors.Is(err, jwt.ErrTokenUnverifiable) {
		return time.Time{}, false, nil
	}
	exp, err := claims.GetExpirationTime()
	if err != nil {
		return time.Time{}, true, err
	}
	if exp == nil {
		return time.Time{}, true, nil
	}
	return exp.Time, true, nil
}
