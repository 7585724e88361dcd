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
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// redacted replaces anything that is or looks like a credential.
	redacted = "[REDACTED]"
	// maxSanitizedBytes bounds a sanitized message before the ellipsis, so an
	// upstream error page cannot bloat status, events or logs.
	maxSanitizedBytes = 200
	ellipsis          = "…"
	// maxScanBytes bounds the text that is read. The result keeps 200 bytes,
	// and scanning a whole 1 MiB error page would cost hundreds of
	// milliseconds of CPU per failed exchange during an outage.
	maxScanBytes = 4 << 10
	// maxPathPiece is the longest segment a URL path may have and still be
	// recognised as a path rather than a credential that happens to hold '/'.
	maxPathPiece = 16
)

// These regular expressions are compiled once and only read afterwards;
// regexp.Regexp is safe for concurrent use.
var (
	// jwtPattern matches JSON Web Tokens (header.payload.signature in
	// base64url): those whose header starts with `{"` (base64 "eyJ"), and any
	// other dotted triple whose parts are all long enough to be opaque.
	jwtPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}`)
	// longRunPattern matches runs of characters used by base64, base64url and
	// hex encodings, long enough (32) to be a credential: that is what API
	// keys, tokens and signatures look like.
	longRunPattern = regexp.MustCompile(`[A-Za-z0-9+/=_-]{32,}`)
)

// Sanitize makes s safe to show to users: in logs, events, status and error
// messages. It
//
//   - replaces each non-empty secret with [REDACTED] wherever s shows it: as
//     written, JSON-escaped (\/, \u00XX), URL-encoded (%XX, '+' for a
//     space), HTML-escaped (&amp;, &#x2F;, &#47;, &sol;, ...), nested
//     encodings of those, and base64 (standard and URL alphabets, any
//     alignment, padded or not) or hex encoded; secrets of 8 bytes or more
//     also wherever s shares a run of 8 bytes or more with them, so that a
//     split, cut or already normalised echo is caught too. This happens
//     before anything else, on s as given;
//   - drops invalid UTF-8, control and other non-printable characters (bidi
//     overrides included) and collapses whitespace to single spaces,
//   - replaces anything that looks like a credential with [REDACTED]: JWTs and
//     runs of 32 or more base64/hex characters that contain a digit,
//   - truncates the result to 200 bytes on a UTF-8 boundary, adding "…".
//
// Only the first 4 KiB of s are read; a word or secret split by that cut is
// dropped rather than shown in part.
//
// The result is valid UTF-8, at most 203 bytes long, and shows none of the
// secrets in any of those forms: if redaction and normalisation together
// would still show one (the marker or the ellipsis completing a crafted
// fragment), Sanitize returns only the marker, or nothing.
func Sanitize(s string, secrets ...string) string {
	return newSecretSet(secrets).sanitize(s, maxSanitizedBytes)
}

// SanitizeLimit is Sanitize with the result truncated to limit bytes (at
// most 4 KiB) instead of 200: for messages whose end is what a user acts on,
// such as an admission policy's reason for refusing a write.
func SanitizeLimit(s string, limit int, secrets ...string) string {
	return newSecretSet(secrets).sanitize(s, min(max(limit, 1), maxScanBytes))
}

func (set secretSet) sanitize(s string, limit int) string {
	cut := len(s) > maxScanBytes
	if cut {
		s = cutForScan(s, set)
	}
	s = set.redact(s)
	out := normalizeText(s, len(s))
	out = jwtPattern.ReplaceAllLiteralString(out, redacted)
	out = longRunPattern.ReplaceAllStringFunc(out, func(run string) string {
		if looksLikeCredential(run) {
			return redacted
		}
		return run
	})
	if cut && len(out) <= limit {
		if out = strings.TrimRight(out, " "); out != "" {
			out += ellipsis
		}
	} else {
		out = truncateUTF8(out, limit)
	}

	// Redaction works on s as given, and normalisation, the marker and the
	// ellipsis can still join fragments into a secret. Verify instead of
	// reasoning about every such case.
	if set.leaks(out) {
		if set.leaks(redacted) {
			return ""
		}
		return redacted
	}
	return out
}

// cutForScan shortens s to at most maxScanBytes. Whatever the cut may have
// split is dropped as well, because redaction would no longer recognise it:
// a trailing run of credential characters or escape sequences (part of a
// token or key) and a trailing fragment, too short to be redacted as a
// shared run, that begins any of the secrets.
func cutForScan(s string, set secretSet) string {
	end := maxScanBytes
	for n := 0; n < utf8.UTFMax-1 && end > 0 && !utf8.RuneStart(s[end]); n++ {
		end--
	}
	s = s[:end]
	for {
		before := len(s)
		s = strings.TrimRightFunc(s, func(r rune) bool {
			return isCredentialChar(r) || strings.ContainsRune(`%\&#;`, r)
		})
		for _, list := range [][]string{set.runs, set.whole} {
			for _, n := range list {
				s = trimSecretStart(s, n)
			}
		}
		if len(s) == before {
			return s
		}
	}
}

// trimSecretStart removes the longest suffix of s that is a proper prefix of
// secret and shorter than minSharedRun (a longer one is redacted as a
// shared run), together with the rest of a character it starts inside.
func trimSecretStart(s, secret string) string {
	for p := max(0, len(s)-min(len(secret)-1, minSharedRun-1)); p < len(s); p++ {
		if strings.HasPrefix(secret, s[p:]) {
			for p > 0 && !utf8.RuneStart(s[p]) {
				p--
			}
			return s[:p]
		}
	}
	return s
}

// isCredentialChar reports whether r can be part of a JWT or of a base64 or
// hex encoded credential.
func isCredentialChar(r rune) bool {
	return r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("+/=_-.", r))
}

// normalizeText drops invalid UTF-8 and non-printable characters and
// collapses every run of whitespace into one space, trimming both ends. It
// stops once the result holds limit bytes or more. Non-printable characters
// go because they can forge log lines (newlines) or hide text (bidi
// overrides, zero-width characters).
func normalizeText(s string, limit int) string {
	var b strings.Builder
	b.Grow(min(len(s), limit+utf8.UTFMax))
	pendingSpace := false
	for len(s) > 0 && b.Len() < limit {
		r, size := utf8.DecodeRuneInString(s)
		s = s[size:]
		switch {
		case r == utf8.RuneError && size == 1:
			// Invalid byte: drop it.
		case unicode.IsSpace(r):
			pendingSpace = true
		case !unicode.IsPrint(r):
			// Control, format or unassigned: drop it.
		default:
			if pendingSpace && b.Len() > 0 {
				b.WriteByte(' ')
			}
			pendingSpace = false
			b.WriteRune(r)
		}
	}
	return b.String()
}

// looksLikeCredential reports whether a long run of base64/hex characters is
// likely a secret. Runs without a digit are words joined by '-' or '_' (names
// of Kubernetes objects, for instance), and runs of short '/'-separated pieces
// that are words or small numbers are URL paths such as
// 45678/platform/v2/identity/api-keys/token (after a host's port); both are
// useful to keep in messages.
func looksLikeCredential(run string) bool {
	if !strings.ContainsAny(run, "0123456789") {
		return false
	}
	if !strings.Contains(run, "/") {
		return true
	}
	for _, piece := range strings.Split(run, "/") {
		if !isPathPiece(piece) {
			return true
		}
	}
	return false
}

// isPathPiece reports whether piece looks like a segment of a URL path: a
// short word with at most one digit ("v2", "api-keys"), or a small number (a
// port, an ID). Random base64 segments rarely pass both tests.
func isPathPiece(piece string) bool {
	if len(piece) >= maxPathPiece {
		return false
	}
	digits := 0
	for i := 0; i < len(piece); i++ {
		if piece[i] >= '0' && piece[i] <= '9' {
			digits++
		}
	}
	return digits <= 1 || (digits == len(piece) && digits <= 6)
}

// truncateUTF8 cuts s to at most n bytes without splitting a character and
// marks the cut with an ellipsis.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.TrimRight(s[:cut], " ") + ellipsis
}
