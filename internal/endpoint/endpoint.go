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

// Package endpoint decides which OpsNow base URLs the operator may send API
// keys to.
//
// The cluster admin owns the allowlist (the built-in OpsNow endpoints, the
// default endpoint and --allowed-endpoints); users only choose among its
// entries through spec.endpoint. Secret-syncing operators have leaked
// credentials through user-supplied URLs (SSRF, look-alike hosts, userinfo
// tricks such as https://api.opsnow.io@evil.example), so this package parses
// every URL into scheme, host, port and path and compares those parts. It
// never compares raw strings, and it rejects rather than repairs anything a
// human reader could misread.
//
// The client appends the token path to the URL that Allow returns, so the
// path a user may add decides which service receives the key. An entry that
// is a built-in endpoint therefore allows only itself: OpsNow's public hosts
// serve more than the token exchange. An entry an admin adds allows its path
// and below, so that a gateway prefix can be listed once.
//
// A trailing dot marks a fully qualified name, which the resolver looks up
// only as written, never under a search domain. It is kept, and host. and
// host are different entries: allowing the relative spelling for a dotted
// entry would reopen the search-domain lookup the admin closed, and the
// dotted spelling is another Host header and another origin for the server.
package endpoint

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Default is the endpoint used when neither spec.endpoint nor
// --default-endpoint says otherwise.
const Default = "https://api.opsnow.io"

// maxLen bounds the input so that a hostile spec cannot make parsing or error
// messages arbitrarily large; real base URLs are far shorter.
const maxLen = 2048

// ErrNotAllowed reports a well-formed endpoint that is not in the allowlist.
// It is permanent: retrying cannot help until the admin changes the flags or
// the user changes spec.endpoint.
var ErrNotAllowed = errors.New("endpoint not allowed")

// ErrInvalid reports an endpoint that is not an acceptable base URL.
var ErrInvalid = errors.New("invalid endpoint")

// BuiltIn returns OpsNow's public endpoints, which are always allowed. It
// returns a new slice on each call so that no caller can widen the allowlist
// of another by mutating shared state.
func BuiltIn() []string {
	return []string{
		"https://api.opsnow.io",
		"https://api.opsnow360.io",
		"https://api.kr.opsnow360.io",
	}
}

// ParseList splits a comma-separated flag value into its elements, trimming
// spaces and dropping empty elements, so that "a, b," yields [a b].
func ParseList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// Normalize parses raw as a base URL and returns its canonical form
// scheme://host[:port][/path]: scheme and host lowercased, a host's trailing
// dot kept, IP literals in their canonical form, the scheme's default port
// dropped and no trailing slash. Anything that is not a plain
// http or https base URL is an error wrapping ErrInvalid; the message says
// what is wrong but does not repeat raw, which may carry credentials.
func Normalize(raw string) (string, error) {
	u, err := parse(raw)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

// Allowlist decides which endpoints the operator may call. The zero value and
// a nil *Allowlist allow nothing.
type Allowlist struct {
	entries []entry
}

// entry is one allowlist entry.
type entry struct {
	baseURL
	// exact restricts the entry to its base URL; see builtIn.
	exact bool
}

// builtIn holds the canonical built-in endpoints.
var builtIn = func() map[string]bool {
	m := map[string]bool{}
	for _, raw := range BuiltIn() {
		u, err := parse(raw)
		if err != nil {
			panic(fmt.Sprintf("built-in endpoint %q: %v", raw, err))
		}
		m[u.String()] = true
	}
	return m
}()

// isBuiltIn reports whether u is a built-in endpoint, in either spelling of
// its host: the entry is the same however it reached the list (built-in,
// --default-endpoint or --allowed-endpoints), so that listing it again
// cannot widen it.
func isBuiltIn(u baseURL) bool {
	u.host = strings.TrimSuffix(u.host, ".")
	return builtIn[u.String()]
}

// NewAllowlist builds an allowlist from base URLs, normalizing each one and
// dropping duplicates. A bad entry is an error that names it (with any
// userinfo redacted) and wraps ErrInvalid, suitable as the one-line message
// of a manager that refuses to start with bad flags.
func NewAllowlist(entries ...string) (*Allowlist, error) {
	a := &Allowlist{}
	seen := make(map[string]bool, len(entries))
	for _, raw := range entries {
		u, err := parse(raw)
		if err != nil {
			return nil, fmt.Errorf("allowed endpoint %q: %w", redact(raw), err)
		}
		if s := u.String(); !seen[s] {
			seen[s] = true
			a.entries = append(a.entries, entry{baseURL: u, exact: isBuiltIn(u)})
		}
	}
	return a, nil
}

// Allow returns the canonical URL to call for raw when an entry allows it:
// scheme, host (trailing dot included) and port equal, and the path equal to
// the entry's path or, unless the entry is a built-in endpoint, below it at a
// segment boundary (entry https://h/api allows https://h/api/v2 but not
// https://h/apiv2; https://api.opsnow.io allows only itself). Otherwise it
// returns an error wrapping ErrInvalid when raw is not an acceptable base
// URL, or ErrNotAllowed naming the normalized endpoint when no entry matches.
func (a *Allowlist) Allow(raw string) (string, error) {
	u, err := parse(raw)
	if err != nil {
		return "", err
	}
	if a != nil {
		for _, e := range a.entries {
			if e.allows(u) {
				return u.String(), nil
			}
		}
	}
	// u has passed parse, so it holds no userinfo, query or fragment and is
	// safe to show in a condition message.
	return "", fmt.Errorf("%w: %s is not in the operator's allowlist", ErrNotAllowed, u)
}

// Entries returns the canonical entries in the order first given, for
// logging at startup and for documentation.
func (a *Allowlist) Entries() []string {
	if a == nil {
		return nil
	}
	out := make([]string, len(a.entries))
	for i, e := range a.entries {
		out[i] = e.String()
	}
	return out
}

// baseURL is a parsed, canonical base URL.
type baseURL struct {
	scheme string // "http" or "https"
	host   string // lowercase DNS name (maybe dot-terminated), dotted IPv4, or bracketed IPv6
	port   string // decimal without leading zeros; empty for the default port
	path   string // empty or "/seg[/seg...]" without a trailing slash
}

func (u baseURL) String() string {
	s := u.scheme + "://" + u.host
	if u.port != "" {
		s += ":" + u.port
	}
	return s + u.path
}

// allows reports whether candidate c is e or, unless e is exact, lies below
// e's path.
func (e entry) allows(c baseURL) bool {
	if c.scheme != e.scheme || c.host != e.host || c.port != e.port {
		return false
	}
	if c.path == e.path {
		return true
	}
	// Paths are canonical (no trailing slash, no empty or dot segments), so
	// a prefix ending at a "/" is a whole-segment prefix.
	return !e.exact && strings.HasPrefix(c.path, e.path+"/")
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// parse validates raw and splits it into canonical parts.
func parse(raw string) (baseURL, error) {
	if raw == "" {
		return baseURL{}, invalid("empty")
	}
	if len(raw) > maxLen {
		return baseURL{}, invalid("longer than %d characters", maxLen)
	}
	if err := checkChars(raw); err != nil {
		return baseURL{}, err
	}
	// Require the "scheme://" form up front: "api.opsnow.io:443" and
	// "https:api.opsnow.io" parse as opaque URLs with surprising schemes.
	if !strings.Contains(raw, "://") {
		return baseURL{}, invalid("must start with https:// or http://")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// Report only the cause: *url.Error repeats the whole input.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return baseURL{}, invalid("%v", err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return baseURL{}, invalid("scheme must be https or http")
	}
	// An opaque URL such as "https:x://h" has a "://" but no authority.
	// checkChars has already excluded '@', '?', '#' and '%'; the other cases
	// are checked again so that a change in net/url cannot let them through.
	switch {
	case u.Opaque != "":
		return baseURL{}, invalid("must start with https:// or http://")
	case u.User != nil:
		return baseURL{}, invalid("must not contain userinfo")
	case u.RawQuery != "" || u.ForceQuery:
		return baseURL{}, invalid("must not contain a query")
	case u.Fragment != "" || u.RawFragment != "":
		return baseURL{}, invalid("must not contain a fragment")
	case u.RawPath != "":
		return baseURL{}, invalid("must not contain percent-encoding")
	}
	host, port, err := splitHostPort(u.Host)
	if err != nil {
		return baseURL{}, err
	}
	if host, err = canonicalHost(host); err != nil {
		return baseURL{}, err
	}
	if port, err = canonicalPort(scheme, port); err != nil {
		return baseURL{}, err
	}
	path, err := canonicalPath(u.Path)
	if err != nil {
		return baseURL{}, err
	}
	return baseURL{scheme: scheme, host: host, port: port, path: path}, nil
}

// checkChars rejects, before any parsing, every byte that a base URL does not
// need. This shuts out whole classes of parser confusion at once: userinfo,
// query and fragment delimiters, percent-encoding (which could hide any of
// them, a dot segment or a host), backslashes (which browsers and some HTTP
// stacks read as "/"), whitespace and control characters (which some parsers
// strip), and non-ASCII (internationalised hosts have look-alikes; the
// punycode xn-- form is accepted).
func checkChars(raw string) error {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~/:[]", c) >= 0:
		case c == '@':
			return invalid("must not contain userinfo (@)")
		case c == '?':
			return invalid("must not contain a query (?)")
		case c == '#':
			return invalid("must not contain a fragment (#)")
		case c == '%':
			return invalid("must not contain percent-encoding (%%)")
		case c == '\\':
			return invalid("must not contain a backslash")
		case c <= ' ' || c == 0x7f:
			return invalid("must not contain whitespace or control characters")
		case c >= 0x80:
			return invalid("must be ASCII; write internationalised host names in punycode (xn--)")
		default:
			return invalid("must not contain %q", c)
		}
	}
	return nil
}

// splitHostPort splits the authority into host and port. It is stricter than
// net.SplitHostPort: a colon must be followed by a port, and only a bracketed
// IPv6 literal may contain colons.
func splitHostPort(hostport string) (host, port string, err error) {
	if hostport == "" {
		return "", "", invalid("missing host")
	}
	rest := hostport
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "", "", invalid("unterminated IPv6 literal")
		}
		host, rest = hostport[:end+1], hostport[end+1:]
		if rest != "" && rest[0] != ':' {
			return "", "", invalid("unexpected characters after IPv6 literal")
		}
	} else if i := strings.IndexByte(hostport, ':'); i >= 0 {
		host, rest = hostport[:i], hostport[i:]
	} else {
		host, rest = hostport, ""
	}
	if rest != "" {
		port = rest[1:]
		if port == "" {
			return "", "", invalid("empty port")
		}
	}
	return host, port, nil
}

// canonicalHost lowercases a DNS name, keeping one trailing dot, or
// canonicalizes an IP literal, so that equal hosts compare equal. The dot is
// kept because it changes the lookup: the resolver tries a dot-terminated
// name only as written, never under a search domain.
func canonicalHost(host string) (string, error) {
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return "", invalid("malformed IPv6 literal")
		}
		addr, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return "", invalid("malformed IPv6 literal")
		}
		return "[" + addr.String() + "]", nil
	}
	name, fqdn := strings.CutSuffix(strings.ToLower(host), ".")
	if name == "" {
		return "", invalid("missing host")
	}
	if len(name) > 253 {
		return "", invalid("host name longer than 253 characters")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" {
			return "", invalid("host has an empty label")
		}
		if len(l) > 63 {
			return "", invalid("host label longer than 63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", invalid("host label starts or ends with a hyphen")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return "", invalid("host must contain only letters, digits, hyphens and dots")
			}
		}
	}
	// No top-level domain starts with a digit, so a host whose last label
	// does is an IPv4 address. Only the dotted-quad form is accepted: other
	// forms (127.1, 2130706433, 0x7f.1, 0177.0.0.1) reach different
	// addresses depending on the resolver and would make two spellings of
	// one address compare unequal, or two addresses compare equal.
	if last := labels[len(labels)-1]; '0' <= last[0] && last[0] <= '9' {
		addr, err := netip.ParseAddr(name)
		if err != nil || !addr.Is4() {
			return "", invalid("numeric host is not a dotted-quad IPv4 address")
		}
		// With the dot, a resolver asks DNS for a name instead of dialling
		// the address.
		if fqdn {
			return "", invalid("IPv4 address must not end with a dot")
		}
		return addr.String(), nil
	}
	if fqdn {
		name += "."
	}
	return name, nil
}

// canonicalPort validates the port and returns it without leading zeros, or
// empty when it is the scheme's default, so that https://h:443 equals https://h.
func canonicalPort(scheme, port string) (string, error) {
	if port == "" {
		return "", nil
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return "", invalid("port must be a number from 1 to 65535")
		}
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", invalid("port must be a number from 1 to 65535")
	}
	if (scheme == "https" && n == 443) || (scheme == "http" && n == 80) {
		return "", nil
	}
	return strconv.FormatUint(n, 10), nil
}

// canonicalPath accepts only unreserved characters and "/" without empty or
// dot segments, so that the path the allowlist compares is the path a server
// sees: no client or server can resolve it to a different one. One trailing
// slash is dropped so that https://h/api/ equals https://h/api.
func canonicalPath(path string) (string, error) {
	path = strings.TrimSuffix(path, "/")
	if path == "" {
		return "", nil
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~/", c) >= 0) {
			return "", invalid("path must contain only letters, digits, and -._~/")
		}
	}
	if path[0] != '/' {
		return "", invalid("path must start with /")
	}
	for _, seg := range strings.Split(path[1:], "/") {
		switch seg {
		case "":
			return "", invalid("path must not contain empty segments (//)")
		case ".", "..":
			return "", invalid("path must not contain . or .. segments")
		}
	}
	return path, nil
}

// redact prepares raw for an error message: userinfo is replaced, because
// "https://user:password@host" would otherwise put a password in the
// manager's exit message and logs, and very long values are cut.
func redact(raw string) string {
	if at := strings.LastIndexByte(raw, '@'); at >= 0 {
		prefix := ""
		if i := strings.Index(raw[:at], "://"); i >= 0 && !strings.ContainsRune(raw[:i], '@') {
			prefix = raw[:i+3]
		}
		raw = prefix + "REDACTED@" + raw[at+1:]
	}
	const maxShown = 200
	if len(raw) > maxShown {
		raw = raw[:maxShown] + "..."
	}
	return raw
}
