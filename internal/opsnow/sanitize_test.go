package opsnow

import (
	"fmt"
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
	}
}

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
	}
	for _, s := range seeds {
		f.Add(s.prefix, s.secret, s.suffix)
	}
	f.Fuzz(func(t *testing.T, prefix, secret, suffix string) {
		in := prefix + secret + suffix
		checkSanitized(t, Sanitize(in, secret), secret)
		// A message that merely mentions the secret twice, or not at all,
		// must also come out clean.
		checkSanitized(t, Sanitize(in+in, secret), secret)
		checkSanitized(t, Sanitize(prefix+suffix, secret), secret)
	})
}
