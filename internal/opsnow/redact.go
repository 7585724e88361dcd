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
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"html"
	"net/url"
	"sort"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

const (
	// minSharedRun is the shortest run of bytes shared with a secret that is
	// redacted. An echo split in two, cut short by a truncation or broken by
	// an inserted character still shares runs this long with the secret,
	// and a run this long of a random key or token does not occur by chance.
	// Secrets shorter than this are redacted where they appear whole.
	minSharedRun = 8
	// maxDecodePasses bounds how many nested encodings are undone: an
	// HTML-escaped, URL-encoded key needs two.
	maxDecodePasses = 3
	// maxEntityName is longer than the longest HTML character reference
	// name, so scanning no further does not change how a reference decodes.
	maxEntityName = 40
	// longestEntityWithoutSemicolon mirrors package html: references such
	// as "&amp" decode without a ';' and are at most this long.
	longestEntityWithoutSemicolon = 6
)

// secretSet is what Sanitize looks for: the secrets in every form in which
// an upstream or an earlier message may show them.
type secretSet struct {
	// runs are the secrets of at least minSharedRun bytes, as given and
	// normalised; any run of minSharedRun bytes of them is redacted.
	runs []string
	// blobs are base64 and hex encodings of those secrets. A run of one
	// redacts the whole run of encoding characters around it: that is one
	// encoded value, partly made of the secret.
	blobs []string
	// whole are the shorter secrets (and short normalised forms), redacted
	// only where they appear whole.
	whole []string
}

func newSecretSet(secrets []string) secretSet {
	var set secretSet
	for _, s := range secrets {
		if s == "" {
			continue
		}
		forms := []string{s}
		// Messages are normalised; a secret with a tab or a zero-width
		// character appears there in normalised form.
		if n := normalizeText(s, len(s)); n != "" && n != s {
			forms = append(forms, n)
		}
		for _, f := range forms {
			if len(f) >= minSharedRun {
				set.runs = append(set.runs, f)
			} else {
				set.whole = append(set.whole, f)
			}
		}
		if len(s) >= minSharedRun {
			set.blobs = append(set.blobs, encodedForms(s)...)
		}
	}
	return set
}

func (set secretSet) empty() bool {
	return len(set.runs) == 0 && len(set.whole) == 0
}

// encodedForms returns the base64 (standard and URL alphabets) and hex
// encodings of s. An encoded value may hold s at any of three alignments;
// for each, only the characters that depend on s alone are kept. The padded
// forms cover the unpadded ones: every run of the one is a run of the other.
func encodedForms(s string) []string {
	forms := make([]string, 0, 8)
	buf := make([]byte, 2+len(s))
	copy(buf[2:], s)
	for offset := range 3 {
		// The first characters at an offset also carry bits of the bytes
		// before s.
		skip := [3]int{0, 2, 3}[offset]
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			forms = append(forms, enc.EncodeToString(buf[2-offset:])[skip:])
		}
	}
	h := hex.EncodeToString([]byte(s))
	return append(forms, h, strings.ToUpper(h))
}

// span is a byte range [start, end) of a text.
type span struct{ start, end int }

// redact replaces every span of s that shows a secret with the marker.
func (set secretSet) redact(s string) string {
	spans := set.find(s)
	if len(spans) == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + len(spans)*len(redacted))
	last := 0
	for _, sp := range spans {
		b.WriteString(s[last:sp.start])
		b.WriteString(redacted)
		last = sp.end
	}
	b.WriteString(s[last:])
	return b.String()
}

// leaks reports whether s shows any secret: in a form find looks for, or
// once decoded by the standard library, which reads malformed escapes
// differently.
func (set secretSet) leaks(s string) bool {
	if set.empty() || s == "" {
		return false
	}
	texts := []string{s, html.UnescapeString(s)}
	if u, err := url.PathUnescape(s); err == nil {
		texts = append(texts, u)
	}
	if u, err := url.QueryUnescape(s); err == nil {
		texts = append(texts, u)
	}
	var views []view
	for _, t := range texts {
		views = append(views, renderings(t)...)
	}
	return len(set.match(views, true)) > 0
}

// find returns the sorted, disjoint spans of s that show a secret, widened
// to whole characters.
func (set secretSet) find(s string) []span {
	if set.empty() || s == "" {
		return nil
	}
	return mergeSpans(s, set.match(renderings(s), false))
}

// match returns the spans of the views' texts that show a secret; only the
// first one when first is set.
func (set secretSet) match(views []view, first bool) []span {
	var found []span
	add := func(v view, p, q int) {
		found = append(found, span{v.start[p], v.end[q-1]})
	}

	if len(set.runs) > 0 {
		// Index every run of minSharedRun bytes of every view, then look each
		// run of each secret up. The index follows the text, which is
		// bounded, not the secrets (a token may be 16 KiB); a bitmap in front
		// of it makes most lookups a single load. A run found is removed from
		// the index once all its occurrences are redacted, so that a
		// repetitive secret or text costs no more.
		type occurrence struct{ view, pos, next int32 }
		var seen [1 << 16 / 64]uint64
		heads := make(map[uint64]int32)
		var occs []occurrence
		for vi, v := range views {
			for p := 0; p+minSharedRun <= len(v.text); p++ {
				k := pack(v.text[p:])
				h := bucket(k)
				seen[h/64] |= 1 << (h % 64)
				next, ok := heads[k]
				if !ok {
					next = -1
				}
				occs = append(occs, occurrence{int32(vi), int32(p), next})
				// The texts are short (sanitize cuts them to maxScanBytes, error
				// messages are shorter): the count of occurrences fits in an int32.
				heads[k] = int32(len(occs) - 1) //nolint:gosec // G115: bounded, see above
			}
		}
		lookup := func(needle string, blob bool) bool {
			for i := 0; i+minSharedRun <= len(needle); i++ {
				k := pack(needle[i:])
				if h := bucket(k); seen[h/64]&(1<<(h%64)) == 0 {
					continue
				}
				o, ok := heads[k]
				if !ok {
					continue
				}
				delete(heads, k)
				for ; o >= 0; o = occs[o].next {
					v := views[occs[o].view]
					p, q := int(occs[o].pos), int(occs[o].pos)+minSharedRun
					if blob {
						p, q = widenEncoded(v.text, p, q)
					}
					add(v, p, q)
					if first {
						return true
					}
				}
			}
			return false
		}
		for _, n := range set.runs {
			if lookup(n, false) {
				return found
			}
		}
		for _, n := range set.blobs {
			if lookup(n, true) {
				return found
			}
		}
	}

	for _, v := range views {
		text := string(v.text)
		for _, n := range set.whole {
			// Overlapping occurrences count: "]]]]" in "]]]]]]]".
			for i := 0; i+len(n) <= len(text); i++ {
				j := strings.Index(text[i:], n)
				if j < 0 {
					break
				}
				i += j
				add(v, i, i+len(n))
				if first {
					return found
				}
			}
		}
	}
	return found
}

// bucket hashes a packed run into 16 bits for the bitmap in front of the
// index.
func bucket(k uint64) uint64 {
	return (k * 0x9E3779B97F4A7C15) >> 48
}

// pack reads the first 8 bytes of s as one number: a run of minSharedRun
// bytes, exactly, as a map key.
func pack[T string | []byte](s T) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// widenEncoded extends [p, q) of text over the base64/hex characters around
// it.
func widenEncoded(text []byte, p, q int) (int, int) {
	for p > 0 && isEncodedChar(text[p-1]) {
		p--
	}
	for q < len(text) && isEncodedChar(text[q]) {
		q++
	}
	return p, q
}

func isEncodedChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=' || c == '_' || c == '-'
}

// mergeSpans widens spans to whole characters of s, so that what remains
// stays valid UTF-8 (a secret that is not valid UTF-8 itself can match part
// of a character), then sorts and merges them.
func mergeSpans(s string, spans []span) []span {
	if len(spans) == 0 {
		return nil
	}
	for i := range spans {
		sp := &spans[i]
		for n := 0; n < utf8.UTFMax-1 && sp.start > 0 && !utf8.RuneStart(s[sp.start]); n++ {
			sp.start--
		}
		for n := 0; n < utf8.UTFMax-1 && sp.end < len(s) && !utf8.RuneStart(s[sp.end]); n++ {
			sp.end++
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	merged := spans[:1]
	for _, sp := range spans[1:] {
		last := &merged[len(merged)-1]
		if sp.start <= last.end {
			last.end = max(last.end, sp.end)
			continue
		}
		merged = append(merged, sp)
	}
	return merged
}

// view is a rendering of a text: decoded, normalised or both. Byte i of the
// rendering comes from bytes [start[i], end[i]) of the text, so that a
// secret found in the rendering is redacted in the text.
type view struct {
	text       []byte
	start, end []int
}

func newView(capacity int) view {
	return view{
		text:  make([]byte, 0, capacity),
		start: make([]int, 0, capacity),
		end:   make([]int, 0, capacity),
	}
}

func (v *view) add(c byte, start, end int) {
	v.text = append(v.text, c)
	v.start = append(v.start, start)
	v.end = append(v.end, end)
}

// The escapes decodeView undoes.
const (
	decodeJSON = 1 << iota // JSON string escapes
	decodeURL              // URL percent-encoding
	decodePlus             // '+' for a space, as in URL query strings
	decodeHTML             // HTML character references

	decodeAll = decodeJSON | decodeURL | decodeHTML
)

// renderings returns s as written; with every kind of escape undone at
// once, one, two and three times over (with '+' kept, and read as a space
// when s has one); with each kind alone undone once; and each of those
// normalised as normalizeText does. A secret is looked for in all of them:
// a literal "%2F" in a secret is only found in s as written, and a secret
// holding "&amp;" echoed JSON-escaped only with JSON escapes undone.
func renderings(s string) []view {
	raw := newView(len(s))
	for i := 0; i < len(s); i++ {
		raw.add(s[i], i, i+1)
	}
	views := []view{raw}
	addNormalized := func(v view) {
		if n := normalizeView(v); !bytes.Equal(n.text, v.text) {
			views = append(views, n)
		}
	}
	addNormalized(raw)
	if strings.ContainsAny(s, `\%&+`) {
		nested := []int{decodeAll}
		single := []int{decodeJSON, decodeURL, decodeHTML}
		if strings.IndexByte(s, '+') >= 0 {
			nested = append(nested, decodeAll|decodePlus)
			single = append(single, decodeURL|decodePlus)
		}
		for _, kinds := range nested {
			v := raw
			for range maxDecodePasses {
				next, changed := decodeView(v, kinds)
				if !changed {
					break
				}
				views = append(views, next)
				addNormalized(next)
				v = next
			}
		}
		for _, kinds := range single {
			if next, changed := decodeView(raw, kinds); changed {
				views = append(views, next)
				addNormalized(next)
			}
		}
	}
	return views
}

// normalizeView renders v as normalizeText renders text: invalid UTF-8 and
// non-printable characters dropped, whitespace runs collapsed into one
// space, both ends trimmed.
func normalizeView(v view) view {
	out := newView(len(v.text))
	pending := false
	var spaceStart, spaceEnd int
	for i := 0; i < len(v.text); {
		r, size := utf8.DecodeRune(v.text[i:])
		switch {
		case r == utf8.RuneError && size == 1:
		case unicode.IsSpace(r):
			if !pending {
				spaceStart, pending = v.start[i], true
			}
			spaceEnd = v.end[i+size-1]
		case !unicode.IsPrint(r):
		default:
			if pending && len(out.text) > 0 {
				out.add(' ', spaceStart, spaceEnd)
			}
			pending = false
			for j := i; j < i+size; j++ {
				out.add(v.text[j], v.start[j], v.end[j])
			}
		}
		i += size
	}
	return out
}

// decodeView undoes one layer of the escapes in kinds in v. It reports
// whether there was anything to undo.
func decodeView(v view, kinds int) (view, bool) {
	out := newView(len(v.text))
	changed := false
	var buf []byte
	for i := 0; i < len(v.text); {
		n := 0
		buf = buf[:0]
		switch t := v.text[i:]; {
		case t[0] == '\\' && kinds&decodeJSON != 0:
			buf, n = unescapeJSON(buf, t)
		case t[0] == '%' && kinds&decodeURL != 0:
			if len(t) >= 3 && isHexDigit(t[1]) && isHexDigit(t[2]) {
				buf, n = append(buf, unhex(t[1])<<4|unhex(t[2])), 3
			}
		case t[0] == '&' && kinds&decodeHTML != 0:
			buf, n = unescapeHTML(buf, t)
		case t[0] == '+' && kinds&decodePlus != 0:
			buf, n = append(buf, ' '), 1
		}
		if n == 0 {
			out.add(v.text[i], v.start[i], v.end[i])
			i++
			continue
		}
		start, end := v.start[i], v.end[i+n-1]
		for _, c := range buf {
			out.add(c, start, end)
		}
		i += n
		changed = true
	}
	return out, changed
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// unescapeJSON decodes the JSON string escape at the start of s, as
// encoding/json does, appending it to dst. It returns how many bytes of s
// the escape takes, 0 when s does not start with one.
func unescapeJSON(dst, s []byte) ([]byte, int) {
	if len(s) < 2 {
		return dst, 0
	}
	switch s[1] {
	case '"', '\\', '/':
		return append(dst, s[1]), 2
	case 'b':
		return append(dst, '\b'), 2
	case 'f':
		return append(dst, '\f'), 2
	case 'n':
		return append(dst, '\n'), 2
	case 'r':
		return append(dst, '\r'), 2
	case 't':
		return append(dst, '\t'), 2
	case 'u':
		r, ok := hex4(s[2:])
		if !ok {
			return dst, 0
		}
		if !utf16.IsSurrogate(r) {
			return utf8.AppendRune(dst, r), 6
		}
		if len(s) >= 12 && s[6] == '\\' && s[7] == 'u' {
			if r2, ok := hex4(s[8:]); ok {
				if pair := utf16.DecodeRune(r, r2); pair != unicode.ReplacementChar {
					return utf8.AppendRune(dst, pair), 12
				}
			}
		}
		return utf8.AppendRune(dst, unicode.ReplacementChar), 6
	}
	return dst, 0
}

func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		if !isHexDigit(c) {
			return 0, false
		}
		r = r<<4 | rune(unhex(c))
	}
	return r, true
}

// unescapeHTML decodes the HTML character reference at the start of s,
// appending it to dst, and returns how many bytes of s it takes (0 when s
// does not start with one). Which bytes form a reference follows package
// html exactly (references without ';', the longest legacy prefix of an
// unknown name); package html itself gives the value, as it has the table.
func unescapeHTML(dst, s []byte) ([]byte, int) {
	if len(s) <= 1 {
		return dst, 0
	}
	i := 1
	if s[i] == '#' {
		if len(s) <= 3 {
			return dst, 0
		}
		i++
		hexRef := s[i] == 'x' || s[i] == 'X'
		if hexRef {
			i++
		}
		for i < len(s) {
			c := s[i]
			i++
			if hexRef && isHexDigit(c) || !hexRef && c >= '0' && c <= '9' {
				continue
			}
			if c != ';' {
				i--
			}
			break
		}
		if i <= 3 {
			return dst, 0
		}
		return append(dst, html.UnescapeString(string(s[:i]))...), i
	}

	for i < len(s) && i <= maxEntityName {
		c := s[i]
		i++
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if c != ';' {
			i--
		}
		break
	}
	name := string(s[1:i])
	if name == "" {
		return dst, 0
	}
	ref := "&" + name
	decoded := html.UnescapeString(ref)
	if decoded == ref {
		return dst, 0
	}
	// Either the whole name is a reference, or package html decoded its
	// longest prefix that is a legacy reference and kept the rest. A prefix
	// is one when it alone decodes to a single character.
	for j := min(len(name)-1, longestEntityWithoutSemicolon); j > 1; j-- {
		p := "&" + name[:j]
		d := html.UnescapeString(p)
		if d == p || utf8.RuneCountInString(d) != 1 {
			continue
		}
		if decoded == d+name[j:] {
			return append(dst, d...), 1 + j
		}
		break
	}
	return append(dst, decoded...), len(ref)
}
