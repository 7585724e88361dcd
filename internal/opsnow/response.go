package opsnow

import (
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// maxLifetime is the longest lifetime believed. A longer one is a unit
// mix-up (milliseconds read as seconds) or garbage, and trusting it would
// keep an expired token in the Secret for years.
const maxLifetime = 10 * 365 * 24 * time.Hour

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

// parseToken extracts the token and its expiry from a 2xx body. On failure
// it returns a fixed description that never quotes the body, which may hold
// a token.
func parseToken(body []byte, issuedAt time.Time) (Token, string) {
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
	// Status stores seconds. Rounding down means we never believe a token
	// lives longer than it does.
	expiresAt = expiresAt.UTC().Truncate(time.Second)
	if !expiresAt.After(issuedAt) {
		return Token{}, "token expires before it was issued"
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
			if i == 0 {
				return nil, s, ""
			}
			return obj, s, ""
		}
	}
	return nil, "", "no access token in response (expected accessToken, access_token or token)"
}

// findExpiry returns when the token expires. Lifetime fields are read from
// objects in order (the object holding the token, then the top level), then
// from the token's own exp claim; without any, DefaultLifetime applies.
func findExpiry(objects []jsonObject, access string, issuedAt time.Time) (time.Time, string) {
	for _, obj := range objects {
		if name, raw, ok := firstField(obj, expiresInFields); ok {
			secs, ok := parseNumber(raw)
			if !ok {
				return time.Time{}, name + " is not a number of seconds"
			}
			if secs <= 0 {
				return time.Time{}, name + " is not positive"
			}
			if secs > maxLifetime.Seconds() {
				return time.Time{}, name + " is longer than 10 years"
			}
			return issuedAt.Add(time.Duration(secs * float64(time.Second))), ""
		}
		if name, raw, ok := firstField(obj, expiresAtFields); ok {
			t, ok := parseTimestamp(raw)
			if !ok {
				return time.Time{}, name + " is not an RFC 3339 time or a Unix timestamp"
			}
			return checkExpiry(name, t, issuedAt)
		}
	}
	exp, isJWT, err := jwtExpiry(access)
	if err != nil {
		return time.Time{}, "JWT exp claim is not a NumericDate"
	}
	if isJWT && !exp.IsZero() {
		return checkExpiry("JWT exp claim", exp, issuedAt)
	}
	return issuedAt.Add(DefaultLifetime), ""
}

// checkExpiry validates an absolute expiry against issuedAt.
func checkExpiry(name string, t, issuedAt time.Time) (time.Time, string) {
	if !t.After(issuedAt) {
		return time.Time{}, name + " is not after the time of the request"
	}
	if t.Sub(issuedAt) > maxLifetime {
		return time.Time{}, name + " is more than 10 years ahead"
	}
	return t, ""
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
			// Microseconds or garbage; as milliseconds it is the year 33658+,
			// which checkExpiry would refuse anyway. Refuse before int64
			// conversion can overflow.
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
