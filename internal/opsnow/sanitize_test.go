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
	"fmt"
	"html"
	"net/url"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestSanitize(t *testing.T) {
	const jwtSample = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"

	tests := []struct {
		name    string
		in      string
		secrets []string
		want    string
	}{
		{name: "plain text unchanged", in: "apiKey is required", want: "apiKey is required"},
		{name: "empty", in: "", want: ""},
		{name: "secret replaced", in: "invalid key sk-live-7h3k3y here", secrets: []string{"sk-live-7h3k3y"}, want: "invalid key [REDACTED] here"},
		{name: "every occurrence", in: "k1=abcd k2=abcd", secrets: []string{"abcd"}, want: "k1=[REDACTED] k2=[REDACTED]"},
		{name: "longest secret first", in: "x abcd1234efgh y", secrets: []string{"abcd1234", "abcd1234efgh"}, want: "x [REDACTED] y"},
		{name: "empty secret ignored", in: "hello", secrets: []string{""}, want: "hello"},
		{name: "JWT", in: "bearer " + jwtSample + " rejected", want: "bearer [REDACTED] rejected"},
		{name: "unsigned JWT", in: "token eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. rejected", want: "token [REDACTED] rejected"},
		{name: "opaque dotted triple", in: "t=abcdefghijklmnop.qrstuvwxyzABCDEF.GHIJKLMNOPQRSTUV", want: "t=[REDACTED]"},
		{name: "hostname kept", in: "dial api.kr.opsnow360.io failed", want: "dial api.kr.opsnow360.io failed"},
		{name: "long hex", in: "sha 5d41402abc4b2a76b9719d911017c592 end", want: "sha [REDACTED] end"},
		{name: "long base64", in: "key: QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0MTIz+/== end", want: "key: [REDACTED] end"},
		{name: "UUID", in: "request 123e4567-e89b-12d3-a456-426614174000 failed", want: "request [REDACTED] failed"},
		{name: "31 hex characters kept", in: "id 5d41402abc4b2a76b9719d911017c59", want: "id 5d41402abc4b2a76b9719d911017c59"},
		{name: "URL path kept", in: "no route for POST /platform/v2/identity/api-keys/token", want: "no route for POST /platform/v2/identity/api-keys/token"},
		{name: "URL with port kept", in: "POST http://127.0.0.1:45678/platform/v2/identity/api-keys/token: connection refused", want: "POST http://127.0.0.1:45678/platform/v2/identity/api-keys/token: connection refused"},
		{name: "URL kept", in: "POST https://api.opsnow360.io/platform/v2/identity/api-keys/token: EOF", want: "POST https://api.opsnow360.io/platform/v2/identity/api-keys/token: EOF"},
		{name: "path with a random segment", in: "GET /keys/5d41402abc4b2a76b9719d911017c592/x", want: "GET [REDACTED]"},
		{name: "names without digits kept", in: "secret opsnow-token-operator-controller-manager-token missing", want: "secret opsnow-token-operator-controller-manager-token missing"},
		{name: "whitespace collapsed", in: "  a\n\n b\t\tc\r\n ", want: "a b c"},
		{name: "control characters dropped", in: "a\x00b\x1b[31mc\x7f", want: "ab[31mc"},
		{name: "bidi override dropped", in: "safe\u202etxt.exe", want: "safetxt.exe"},
		{name: "zero-width space dropped", in: "a\u200bb", want: "ab"},
		{name: "invalid UTF-8 dropped", in: "a\xffb\xc3", want: "ab"},
		{name: "no-break space is a space", in: "a\u00a0\u00a0b", want: "a b"},
		{name: "non-ASCII text kept", in: "요청이 거부되었습니다", want: "요청이 거부되었습니다"},
		{name: "secret across a newline", in: "x abc\ndef1 y", secrets: []string{"abc\ndef1"}, want: "x [REDACTED] y"},
		{name: "secret split by a control character", in: "x abcd\x001234 y", secrets: []string{"abcd1234"}, want: "x [REDACTED] y"},
		{name: "invalid UTF-8 secret inside a character", in: "x 襢ab y", secrets: []string{"\xa5\xa2ab"}, want: "x [REDACTED] y"},
		{name: "secret inside the marker", in: "DACT", secrets: []string{"DACT"}, want: ""},
		{name: "overlapping secret", in: "]]]]]]]", secrets: []string{"]]]]"}, want: "[REDACTED]"},
		{name: "ellipsis completing a secret", in: strings.Repeat("-", 198) + "abxyz", secrets: []string{"ab…"}, want: "[REDACTED]"},
		{name: "truncated to 200 bytes", in: strings.Repeat("x", 250), want: strings.Repeat("x", 200) + "…"},
		{name: "exactly 200 bytes", in: strings.Repeat("x", 200), want: strings.Repeat("x", 200)},
		{name: "truncated on a rune boundary", in: "a" + strings.Repeat("é", 150), want: "a" + strings.Repeat("é", 99) + "…"},
		{name: "truncation trims a trailing space", in: strings.Repeat("x", 199) + " yyy", want: strings.Repeat("x", 199) + "…"},
		{name: "long input keeps its start", in: strings.Repeat("overloaded ", 100_000), want: strings.Repeat("overloaded ", 18) + "ov…"},
		// In the next two cases a long credential shrinks the first 4 KiB to a
		// few bytes, so whatever the scan limit cut in half would show.
		{
			name:    "secret split by the scan limit",
			in:      strings.Repeat("a1", 2043) + " secret key 1 and more",
			secrets: []string{"secret key 1"},
			want:    "[REDACTED]…",
		},
		{
			name: "credential split by the scan limit",
			in:   strings.Repeat("a1", 2000) + " note eyJhbGciOiJub25lIn0." + strings.Repeat("abcdefghij", 20) + ".c2ln",
			want: "[REDACTED] note…",
		},
		{name: "redaction before truncation", in: strings.Repeat("w ", 96) + "sk-abcdefgh-1234", secrets: []string{"sk-abcdefgh-1234"}, want: strings.Repeat("w ", 96) + "[REDACTE…"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Sanitize(tc.in, tc.secrets...)
			if got != tc.want {
				t.Errorf("Sanitize(%q, %q): got %q, want %q", abbreviate(tc.in), tc.secrets, got, tc.want)
			}
			checkSanitized(t, got, tc.secrets...)
		})
	}
}

// abbreviate keeps failure messages readable for megabyte inputs.
func abbreviate(s string) string {
	if len(s) <= 120 {
		return s
	}
	return s[:120] + fmt.Sprintf("...(%d bytes)", len(s))
}

// checkSanitized asserts the guarantees Sanitize documents.
func checkSanitized(t *testing.T, out string, secrets ...string) {
	t.Helper()
	if len(out) > maxSanitizedBytes+len(ellipsis) {
		t.Errorf("length: got %d bytes, want at most %d", len(out), maxSanitizedBytes+len(ellipsis))
	}
	if !utf8.ValidString(out) {
		t.Errorf("output %q: got invalid UTF-8, want valid", out)
	}
	for _, r := range out {
		if r != ' ' && (unicode.IsSpace(r) || !unicode.IsPrint(r)) {
			t.Errorf("output %q: got character %U, want only printable characters and spaces", out, r)
		}
	}
	for _, s := range secrets {
		if len(s) >= 4 && strings.Contains(out, s) {
			t.Errorf("output %q: got secret %q in it, want it redacted", out, s)
		}
		if w := encodedLeak(out, s, ""); w != "" {
			t.Errorf("output %q: got %q, a part of secret %q in some encoding, want it redacted", out, w, s)
		}
	}
}

// FuzzSanitize checks that a secret echoed in any of echoForms, anywhere in
// a message, once or twice, shows in no output, in any encoding; and that
// every output keeps the documented guarantees.
func FuzzSanitize(f *testing.F) {
	seeds := []struct{ prefix, secret, suffix string }{
		{"invalid api key ", "ak-0f1e2d3c4b5a6978", ""},
		{`{"message":"bad key `, "opsnow-key-1234", `"}`},
		{"", "DACT", ""},
		{"]]]", "]]]]", "]]]"},
		{strings.Repeat("-", 198) + "abxyz", "ab…", ""},
		{"x ", "abc\ndef1", " y"},
		{"abcd\x00", "1234abcd", "\x00"},
		{strings.Repeat("é", 120), "sécret-値", strings.Repeat("z", 90)},
		{"bearer ", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", " rejected"},
		{"\u202e", "\xff\xfe\xfd\xfc", "\u200b"},
		{"[REDAC", "TED]", ""},
		{"  ", "  a  b  ", "  "},
		{"0", "\xe8\xa5", "\xa2"},
		{"襢", "\xa5\xa2ab", "cd"},
		{`{"apiKey":"`, "Zk3pQ8rT2vX6bN1mF6/hJ5sL9wE4yU7cP7+aB3dG", `"}`},
		{"token ", "Xq7vLp2mR9sT4wYz8bNc\tK3dF6gH1jM5nP0qS2uV", "…"},
		{"a%zz ", "pass phrase with/slash+plus 1", " &amp"},
		{"&#", "%41&amp;\\u0041+/=~", "\\"},
	}
	for i, s := range seeds {
		for form := range echoForms {
			f.Add(s.prefix, s.secret, s.suffix, uint8(form+len(echoForms)*(i%3)))
		}
	}
	f.Fuzz(func(t *testing.T, prefix, secret, suffix string, form uint8) {
		ef := echoForms[int(form)%len(echoForms)]
		in := prefix + ef.encode(secret, int(form)/len(echoForms)) + suffix
		checkSanitized(t, Sanitize(in, secret), secret)
		// A message that mentions the secret twice, or not at all, or next
		// to another secret, must also come out clean.
		checkSanitized(t, Sanitize(in+in, secret), secret)
		checkSanitized(t, Sanitize(prefix+suffix, secret), secret)
		checkSanitized(t, Sanitize(in, prefix, secret), secret, prefix)
		checkDecoders(t, in)
	})
}

// checkDecoders asserts that the redactor's decoders read s as the standard
// library does, wherever the standard library reads it at all: a secret is
// then found in every form a reader of the message could decode.
func checkDecoders(t *testing.T, s string) {
	t.Helper()
	decoded := func(kinds int) string {
		v, _ := decodeView(renderings(s)[0], kinds)
		return string(v.text)
	}
	if got, want := decoded(decodeHTML), html.UnescapeString(s); got != want {
		t.Errorf("HTML-decoding %q: got %q, want %q as package html", s, got, want)
	}
	if want, err := url.PathUnescape(s); err == nil {
		if got := decoded(decodeURL); got != want {
			t.Errorf("URL-decoding %q: got %q, want %q as url.PathUnescape", s, got, want)
		}
	}
	if want, err := url.QueryUnescape(s); err == nil {
		if got := decoded(decodeURL | decodePlus); got != want {
			t.Errorf("URL-decoding %q with '+': got %q, want %q as url.QueryUnescape", s, got, want)
		}
	}
	// encoding/json replaces invalid UTF-8, which the redactor keeps.
	if utf8.ValidString(s) {
		if got, want := decoded(decodeJSON), jsonUnescape(s); got != want {
			t.Errorf("JSON-decoding %q: got %q, want %q as encoding/json", s, got, want)
		}
	}
}

// The controller passes the token it holds. A message may quote it already
// normalised or cut (by an earlier Sanitize, or by the upstream), which an
// exact match misses; every run of 8 bytes or more it shares with the token
// is redacted.
func TestSanitizeHeldToken(t *testing.T) {
	const (
		tabbed     = "Xq7vLp2mR9sT4wYz8bNc\tK3dF6gH1jM5nP0qS2uV"
		zeroWidth  = "tokenpartone\u200btokenparttwo-abc"
		shortToken = "abc1234"
	)
	long := strings.Repeat("qWeRtYuIoPaSdFgHjKlZ", 15)

	tests := []struct {
		name   string
		in     string
		secret string
		want   string
	}{
		{name: "tab, message normalised and cut", in: "upstream said Xq7vLp2mR9sT4wYz8bNc K3dF6gH1jM5nP0q…", secret: tabbed, want: "upstream said [REDACTED]…"},
		{name: "tab, message normalised", in: "upstream said Xq7vLp2mR9sT4wYz8bNc K3dF6gH1jM5nP0qS2uV", secret: tabbed, want: "upstream said [REDACTED]"},
		{name: "tab, message quoting the tab", in: "upstream said \"Xq7vLp2mR9sT4wYz8bNc\tK3dF6gH1jM5nP0qS2uV\"", secret: tabbed, want: "upstream said \"[REDACTED]\""},
		{name: "zero-width character, message cut", in: "previous token tokenpartonetokenpart… rejected", secret: zeroWidth, want: "previous token [REDACTED]… rejected"},
		{name: "zero-width character kept in the message", in: "token tokenpartone\u200btokenparttwo-abc", secret: zeroWidth, want: "token [REDACTED]"},
		{name: "long token cut at 200 bytes", in: "token " + long[:200] + "…", secret: long, want: "token [REDACTED]…"},
		{name: "long token without its start", in: "…" + long[100:] + " expired", secret: long, want: "…[REDACTED] expired"},
		{name: "8-byte run of the token", in: "id qWeRtYuI found", secret: long, want: "id [REDACTED] found"},
		{name: "7-byte run kept", in: "id qWeRtYu found", secret: long, want: "id qWeRtYu found"},
		{name: "short secret matched whole only", in: "abc123 abc1234 abc12345", secret: shortToken, want: "abc123 [REDACTED] [REDACTED]5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Sanitize(tc.in, tc.secret)
			if got != tc.want {
				t.Errorf("Sanitize(%q, %q): got %q, want %q", abbreviate(tc.in), abbreviate(tc.secret), got, tc.want)
			}
			checkSanitized(t, got, tc.secret)
		})
	}
}

// A secret echoed in any common encoding is redacted as a whole, whatever
// surrounds it.
func TestSanitizeEncodedSecrets(t *testing.T) {
	const key = "Zk3pQ8rT2vX6bN1mF6/hJ5sL9wE4yU7cP7+aB3dG"
	spaced := "pass phrase with/slash+plus 1"
	tests := []struct {
		name   string
		in     string
		secret string
		want   string
	}{
		{name: "JSON \\/", in: `key Zk3pQ8rT2vX6bN1mF6\/hJ5sL9wE4yU7cP7+aB3dG!`, secret: key, want: "key [REDACTED]!"},
		{name: "JSON \\u00XX", in: `key Zk3pQ8rT2vX6bN1mF6\u002fhJ5sL9wE4yU7cP7\u002BaB3dG!`, secret: key, want: "key [REDACTED]!"},
		{name: "JSON \\u00XX everywhere", in: "key " + echoForm(t, "JSON \\u00XX", key, 0) + "!", secret: key, want: "key [REDACTED]!"},
		{name: "URL %XX", in: "key=Zk3pQ8rT2vX6bN1mF6%2FhJ5sL9wE4yU7cP7%2BaB3dG&x=1", secret: key, want: "key=[REDACTED]&x=1"},
		{name: "URL %XX everywhere", in: "key=" + echoForm(t, "URL path-escaped", key, 0) + "&x=1", secret: key, want: "key=[REDACTED]&x=1"},
		{name: "URL + for space", in: "q=" + url.QueryEscape(spaced) + "&x=1", secret: spaced, want: "q=[REDACTED]&x=1"},
		{name: "URL-encoded twice", in: "key=" + url.QueryEscape(url.QueryEscape(key)), secret: key, want: "key=[REDACTED]"},
		{name: "HTML &#x2F; and &#43;", in: "<b>Zk3pQ8rT2vX6bN1mF6&#x2F;hJ5sL9wE4yU7cP7&#43;aB3dG</b>", secret: key, want: "<b>[REDACTED]</b>"},
		{name: "HTML &#47; and &plus;", in: "<b>Zk3pQ8rT2vX6bN1mF6&#47;hJ5sL9wE4yU7cP7&plus;aB3dG</b>", secret: key, want: "<b>[REDACTED]</b>"},
		{name: "HTML &sol; and &amp;", in: "k Zk3pQ8rT2vX6bN1mF6&sol;hJ5sL9wE4yU7cP7+aB3dG &amp; more", secret: key, want: "k [REDACTED] &amp; more"},
		{name: "HTML decimal everywhere", in: "k " + echoForm(t, "HTML decimal", key, 0), secret: key, want: "k [REDACTED]"},
		{name: "HTML inside JSON", in: `k Zk3pQ8rT2vX6bN1mF6\u0026#47;hJ5sL9wE4yU7cP7+aB3dG`, secret: key, want: "k [REDACTED]"},
		{name: "split in two", in: "starts Zk3pQ8rT2vX6bN1mF6 ends hJ5sL9wE4yU7cP7+aB3dG", secret: key, want: "starts [REDACTED] ends [REDACTED]"},
		{name: "split by a zero-width space", in: "k Zk3pQ8rT2vX6bN1mF6/\u200bhJ5sL9wE4yU7cP7+aB3dG", secret: key, want: "k [REDACTED]"},
		{name: "split by an encoded zero-width space", in: "k Zk3pQ8rT2vX6bN1mF6/%E2%80%8BhJ5sL9wE4yU7cP7+aB3dG", secret: key, want: "k [REDACTED]"},
	}
	for offset := range 3 {
		for _, form := range []string{"base64", "base64url unpadded"} {
			tests = append(tests, struct {
				name   string
				in     string
				secret string
				want   string
			}{
				name:   fmt.Sprintf("%s at offset %d", form, offset),
				in:     "blob " + echoForm(t, form, key, offset) + " end",
				secret: key,
				want:   "blob [REDACTED] end",
			})
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Sanitize(tc.in, tc.secret)
			if got != tc.want {
				t.Errorf("Sanitize(%q, %q): got %q, want %q", tc.in, tc.secret, got, tc.want)
			}
			checkSanitized(t, got, tc.secret)
		})
	}
}

// echoForm encodes s with the named form of echoForms.
func echoForm(t *testing.T, name, s string, offset int) string {
	t.Helper()
	for _, f := range echoForms {
		if f.name == name {
			return f.encode(s, offset)
		}
	}
	t.Fatalf("no echo form %q", name)
	return ""
}

// SanitizeLimit keeps the end of a long message (an admission policy's
// reason) that Sanitize would cut, and redacts as Sanitize does.
func TestSanitizeLimit(t *testing.T) {
	secret := "tok-" + strings.Repeat("x9", 20)
	msg := strings.Repeat("policy prefix ", 20) + "echoes " + secret + " and ends with the reason"
	got := SanitizeLimit(msg, 1024, secret)
	if !strings.HasSuffix(got, "the reason") {
		t.Errorf("got %q, want the whole message kept", got)
	}
	if strings.Contains(got, secret[:16]) {
		t.Errorf("got %q, want the secret redacted", got)
	}
	if short := Sanitize(msg, secret); strings.HasSuffix(short, "the reason") || len(short) > 203 {
		t.Errorf("Sanitize: got %d bytes %q, want it cut at 200", len(short), short)
	}
	if got := SanitizeLimit(msg, 50, secret); len(got) > 53 {
		t.Errorf("limit 50: got %d bytes", len(got))
	}
}
