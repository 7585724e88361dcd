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
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	clocktesting "k8s.io/utils/clock/testing"
)

// leakWindow is the length of the runs of a secret that must never appear in
// an output. Sanitize redacts shorter shared runs too (8 bytes and up); the
// margin keeps the property independent of that detail.
const leakWindow = 16

// echoForms are the ways an upstream may echo a secret back. Each form is
// produced with the standard library, not with the redactor's own decoders,
// so a test that passes is evidence and not a tautology.
var echoForms = []struct {
	name   string
	encode func(s string, offset int) string
}{
	{"raw", func(s string, _ int) string { return s }},
	{"JSON-escaped", func(s string, _ int) string {
		b, _ := json.Marshal(s)
		return strings.ReplaceAll(string(b[1:len(b)-1]), "/", `\/`)
	}},
	{"JSON \\u00XX", func(s string, _ int) string {
		var b strings.Builder
		for _, r := range s {
			if r >= 0x10000 {
				b.WriteRune(r)
				continue
			}
			fmt.Fprintf(&b, `\u%04X`, r)
		}
		return b.String()
	}},
	{"URL path-escaped", func(s string, _ int) string {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			fmt.Fprintf(&b, "%%%02x", s[i])
		}
		return b.String()
	}},
	{"URL query-escaped", func(s string, _ int) string { return url.QueryEscape(s) }},
	{"HTML-escaped", func(s string, _ int) string {
		return strings.NewReplacer("/", "&#x2F;", "+", "&#43;", "=", "&equals;").Replace(html.EscapeString(s))
	}},
	{"HTML decimal", func(s string, _ int) string {
		var b strings.Builder
		for _, r := range s {
			fmt.Fprintf(&b, "&#%d;", r)
		}
		return b.String()
	}},
	{"base64", func(s string, offset int) string {
		return base64.StdEncoding.EncodeToString([]byte(strings.Repeat("~", offset%3) + s))
	}},
	{"base64url unpadded", func(s string, offset int) string {
		return base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("~", offset%3) + s))
	}},
	{"split", func(s string, _ int) string {
		h := len(s) / 2
		return s[:h] + " (…) " + s[h:]
	}},
	{"URL-encoded, then JSON-escaped", func(s string, _ int) string {
		b, _ := json.Marshal(url.PathEscape(s))
		return strings.ReplaceAll(string(b[1:len(b)-1]), "%", `\u0025`)
	}},
}

// encodedLeak returns a run of leakWindow bytes of secret found in out as
// written, or in any of the decodings a reader of out might apply, or in the
// base64 encodings of secret; "" when there is none. Runs found in allowed
// (text the output may hold whatever the secret, such as the fixed start of
// an error message) do not count.
func encodedLeak(out, secret, allowed string) string {
	if len(secret) < leakWindow {
		return ""
	}
	texts := []string{out, html.UnescapeString(out), jsonUnescape(out)}
	if s, err := url.PathUnescape(out); err == nil {
		texts = append(texts, s)
	}
	if s, err := url.QueryUnescape(out); err == nil {
		texts = append(texts, s)
	}
	needles := []string{secret}
	for offset := range 3 {
		junk := strings.Repeat("~", offset)
		// The first characters of an encoding at an offset also carry bits
		// of the junk before the secret: skip them.
		skip := []int{0, 2, 3}[offset]
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			needles = append(needles, enc.EncodeToString([]byte(junk + secret))[skip:])
		}
	}
	// The texts are short and a secret may be 16 KiB: index the texts.
	windows := map[string]bool{}
	for _, text := range texts {
		for i := 0; i+leakWindow <= len(text); i++ {
			windows[text[i:i+leakWindow]] = true
		}
	}
	for _, needle := range needles {
		for i := 0; i+leakWindow <= len(needle); i++ {
			if w := needle[i : i+leakWindow]; windows[w] && !strings.Contains(allowed, w) {
				return w
			}
		}
	}
	return ""
}

// jsonUnescape decodes the JSON string escapes in s with encoding/json,
// leaving anything that is not a valid escape as it is.
func jsonUnescape(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			b.WriteString(`\"`)
		case c == '\\' && i+1 < len(s) && strings.IndexByte(`"\/bfnrt`, s[i+1]) >= 0:
			b.WriteString(s[i : i+2])
			i++
		case c == '\\' && i+5 < len(s) && s[i+1] == 'u' && isHex(s[i+2:i+6]):
			b.WriteString(s[i : i+6])
			i += 5
		case c == '\\':
			b.WriteString(`\\`)
		case c < 0x20:
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	var out string
	if err := json.Unmarshal([]byte(b.String()), &out); err != nil {
		return s
	}
	return out
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune("0123456789abcdefABCDEF", rune(s[i])) {
			return false
		}
	}
	return true
}

// FuzzParseToken checks that an accepted token is RFC 6750 b64token text of
// at most 16 KiB with a lifetime within bounds, and that a refusal quotes
// nothing of the body. The fuzzer either writes the body itself or fills a
// token response with a token and an expiry.
func FuzzParseToken(f *testing.F) {
	for _, raw := range []string{
		`{"accessToken":"` + testToken + `","expiresIn":3600}`,
		`{"data":{"token":"a\r\nX-Injected: yes"}}`,
		`{"access_token":"x","expires_in":"3600000"}`,
		`{"token":"demo.Zm9v","expiresAt":1795780800000}`,
		`{"accessToken":"abc","expiresIn":1}`,
		`{"accessToken":"abc","expiresAt":"2026-11-27T13:00:02Z"}`,
		`{"result":{"access_token":"` + strings.Repeat("a", 16<<10+1) + `"}}`,
		`{"accessToken":"\u0000"}`,
		"{\"accessToken\":\"ab\xffcd\"}",
		`{"accessToken":"eyJhbGciOiJub25lIn0.eyJleHAiOjE3OTU3ODA4MDB9.","expiresIn":86400}`,
		`null`, `[]`, `{"accessToken":"=="}`,
	} {
		f.Add([]byte(raw), "", "", uint8(0))
	}
	for i, s := range []struct{ token, expiry string }{
		{testToken, "3600"},
		{"abc\r\nX-Injected: yes", "3600"},
		{"tökén", `"60"`},
		{"a~b+c/d==", "3600000"},
		{"abc", "1"},
		{"abc", `"2026-11-27T13:00:02Z"`},
		{"abc", "1795780800000"},
		{"eyJhbGciOiJub25lIn0.eyJleHAiOjE3OTU3ODA4MDB9.", "1e12"},
		{strings.Repeat("A", 16<<10), "10"},
	} {
		f.Add([]byte(nil), s.token, s.expiry, uint8(2*i+1))
	}
	b64token := regexp.MustCompile(`^[A-Za-z0-9._~+/-]+=*$`)
	f.Fuzz(func(t *testing.T, raw []byte, token, expiry string, shape uint8) {
		body := raw
		if shape%2 == 1 {
			body = tokenBody(t, token, expiry, int(shape/2))
		}
		issuedAt := testNow.Add(time.Duration(shape%8) * 125 * time.Millisecond)
		tok, detail := parseToken(body, issuedAt, DefaultMinLifetime)
		if detail == "" {
			if len(tok.AccessToken) > 16<<10 || !b64token.MatchString(tok.AccessToken) {
				t.Fatalf("parseToken(%q): accepted token %q, want only 1 to 16384 b64token characters", abbreviate(string(body)), abbreviate(tok.AccessToken))
			}
			if !tok.IssuedAt.Equal(issuedAt) {
				t.Errorf("IssuedAt: got %v, want %v", tok.IssuedAt, issuedAt)
			}
			if tok.ExpiresAt.Location() != time.UTC || !tok.ExpiresAt.Equal(tok.ExpiresAt.Truncate(time.Second)) {
				t.Errorf("ExpiresAt: got %v, want UTC whole seconds", tok.ExpiresAt)
			}
			// Truncating the expiry to the second may take up to a second
			// off a lifetime that passed the minimum.
			if l := tok.Lifetime(); l > MaxLifetime || l <= DefaultMinLifetime-time.Second {
				t.Errorf("parseToken(%q): got lifetime %v, want it within (%v, %v]", abbreviate(string(body)), l, DefaultMinLifetime-time.Second, MaxLifetime)
			}
			return
		}
		if tok != (Token{}) {
			t.Errorf("parseToken(%q): got token %+v with detail %q, want zero Token", abbreviate(string(body)), tok, detail)
		}
		if !utf8.ValidString(detail) {
			t.Errorf("detail %q: got invalid UTF-8", detail)
		}
		// Details are fixed English text, in which no run of 16 bytes lacks a
		// space; a run of a body string that has none is therefore quoted.
		for _, s := range append(jsonStrings(body), token) {
			for i := 0; i+leakWindow <= len(s); i++ {
				if w := s[i : i+leakWindow]; !strings.Contains(w, " ") && strings.Contains(detail, w) {
					t.Fatalf("parseToken(%q): got detail %q quoting %q of the body", abbreviate(string(body)), detail, w)
				}
			}
		}
	})
}

// tokenBody builds a token response holding token in one of the token
// fields, expiry (raw JSON when valid, else a string) in one of the expiry
// fields or none, at the top level or in a container.
func tokenBody(t *testing.T, token, expiry string, shape int) []byte {
	t.Helper()
	obj := map[string]any{tokenFields[shape%len(tokenFields)]: token}
	shape /= len(tokenFields)
	expiryFields := append(append([]string{""}, expiresInFields...), expiresAtFields...)
	if name := expiryFields[shape%len(expiryFields)]; name != "" {
		if json.Valid([]byte(expiry)) {
			obj[name] = json.RawMessage(expiry)
		} else {
			obj[name] = expiry
		}
	}
	shape /= len(expiryFields)
	var v any = obj
	if c := shape % (len(containerFields) + 1); c > 0 {
		v = map[string]any{containerFields[c-1]: obj}
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal body: %v", err)
	}
	return b
}

// jsonStrings returns every string in a JSON document, keys included.
func jsonStrings(body []byte) []string {
	var doc any
	if json.Unmarshal(body, &doc) != nil {
		return nil
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			out = append(out, v)
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			for k, e := range v {
				out = append(out, k)
				walk(e)
			}
		}
	}
	walk(doc)
	return out
}

// FuzzStatusError checks the error made of a non-2xx answer: no part of the
// API key, nor of a token the body carries, in its Detail or message, in
// any encoding; and nothing of the body at all unless it has a message
// field. The fuzzer picks the status, the key, the token, the text around
// their echo, the echo's form and the shape of the body.
func FuzzStatusError(f *testing.F) {
	for i, s := range []struct {
		status             uint16
		key, prefix, after string
	}{
		{401, echoKey, `{"apiKey":"`, `"}`},
		{400, echoKey, "invalid key ", ""},
		{500, testKey, "<html><body>", "</body></html>"},
		{429, echoKey, "slow down ", " 30"},
		{404, "ak-short", "", ""},
		{403, "unauthorized: HTTP 403: Zk3pQ8rT", "", ""},
	} {
		for form := range echoForms {
			f.Add(s.status, s.key, testToken, s.prefix, s.after, uint8(form), uint8(i*2+form))
		}
	}
	c := NewClient(nil, clocktesting.NewFakePassiveClock(testNow))
	f.Fuzz(func(t *testing.T, status uint16, key, token, prefix, suffix string, form, shape uint8) {
		code := 300 + int(status)%300
		ef := echoForms[int(form)%len(echoForms)]
		offset := int(form) / len(echoForms)
		msg := prefix + ef.encode(key, offset) + suffix
		layout := int(shape/2) % 6
		// A token can only be known as one when the body says so: only the
		// JSON layouts carry it in a token field.
		withToken := shape%2 == 1 && layout >= 1 && layout <= 4
		fields := map[string]any{}
		if withToken {
			msg += " " + ef.encode(token, offset)
			fields["accessToken"] = token
		}
		var body []byte
		switch layout {
		case 0:
			body = []byte(msg)
		case 1:
			fields["message"] = msg
		case 2:
			fields["error"] = map[string]any{"message": msg}
		case 3:
			fields["errors"] = []any{map[string]any{"message": msg}}
		case 4:
			fields["error"], fields["error_description"], fields["apiKey"] = "invalid_request", msg, key
		case 5:
			body = []byte("<html><body>" + msg + "</body></html>")
		}
		if body == nil {
			var err error
			if body, err = json.Marshal(fields); err != nil {
				t.Fatalf("marshal body: %v", err)
			}
		}
		resp := &http.Response{StatusCode: code, Header: http.Header{"Retry-After": {suffix}}}

		e := c.statusError(resp, body, key)
		if e.StatusCode != code {
			t.Errorf("StatusCode: got %d, want %d", e.StatusCode, code)
		}
		if e.Kind != ErrUnauthorized && e.Kind != ErrUnavailable && e.Kind != ErrInvalidResponse {
			t.Errorf("Kind: got %v, want one of the three sentinels", e.Kind)
		}
		statusDetail := unexpectedStatusPrefix + strconv.Itoa(code)
		if limit := len(statusDetail) + len(": ") + maxSanitizedBytes + len(ellipsis); !utf8.ValidString(e.Detail) || len(e.Detail) > limit {
			t.Errorf("Detail %q: got invalid UTF-8 or %d bytes, want valid and at most %d", e.Detail, len(e.Detail), limit)
		}
		if upstreamMessage(body) == "" && e.Detail != "" && e.Detail != statusDetail {
			t.Errorf("body %q without a message field: got Detail %q, want nothing but the status", abbreviate(string(body)), e.Detail)
		}
		msgText := e.Error()
		// The message with no detail is fixed text; whatever of a secret it
		// holds is no leak.
		skeleton := (&Error{Kind: e.Kind, StatusCode: e.StatusCode, RetryAfter: e.RetryAfter}).Error()
		secrets := []string{key}
		if withToken {
			secrets = append(secrets, token)
		}
		for _, s := range secrets {
			if w := encodedLeak(e.Detail, s, ""); w != "" {
				t.Fatalf("body %q: got Detail %q showing %q of secret %q", abbreviate(string(body)), e.Detail, w, s)
			}
			if w := encodedLeak(msgText, s, skeleton); w != "" {
				t.Fatalf("body %q: got error %q showing %q of secret %q", abbreviate(string(body)), msgText, w, s)
			}
		}
	})
}
