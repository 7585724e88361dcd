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

package endpoint_test

import (
	"errors"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/opsnow-token-operator/opsnow-token-operator/internal/endpoint"
)

// seeds are inputs that have fooled URL allowlists elsewhere, plus the
// allowed forms they imitate. go test runs them on every build; go test -fuzz
// starts from them.
var seeds = []string{
	"",
	"https://api.opsnow.io",
	"HTTPS://API.OpsNow.IO/",
	"https://api.opsnow.io.",
	"https://api.opsnow.io:443",
	"https://api.opsnow.io:0443",
	"https://api.opsnow.io:8443",
	"https://api.opsnow.io:",
	"https://api.opsnow.io:65536",
	"https://api.opsnow.io.evil.example",
	"https://evil.example/api.opsnow.io",
	"https://api.opsnow.io@evil.example",
	"https://user:pw@api.opsnow.io",
	"https://evil.example#@api.opsnow.io",
	"https://evil.example?.api.opsnow.io",
	"https://api.opsnow.io?",
	"http://api.opsnow.io",
	"http://127.0.0.1:8080",
	"http://127.0.0.1:80",
	"http://127.0.0.1",
	"http://127.1:8080",
	"http://2130706433:8080",
	"http://0x7f.0.0.1:8080",
	"http://[::ffff:127.0.0.1]:8080",
	"ftp://api.opsnow.io",
	"//api.opsnow.io",
	"api.opsnow.io",
	"api.opsnow.io:443",
	"https:api.opsnow.io",
	"https:x://api.opsnow.io",
	"https://",
	"https:///api.opsnow.io",
	"https://api.opsnow.io/../x",
	"https://api.opsnow.io/%2e%2e/x",
	"https://api.opsnow.io/x%2fy",
	`https://api.opsnow.io\@evil`,
	"https://api.opsnow.io%2eevil.example",
	" https://api.opsnow.io",
	"https://api.opsnow.io\n",
	"https://api.opsnow.io\x00.evil.example",
	"https://аpi.opsnow.io",
	"https://[::1]:8443",
	"https://[0:0::1]:8443/",
	"https://[::1%25eth0]:8443",
	"https://[::1",
	"https://h.example/api",
	"https://h.example/api/",
	"https://h.example/api/v2",
	"https://h.example/apiv2",
	"https://h.example/api/../admin",
	"https://h.example/api//v2",
	"https://h.example",
	"https://api.opsnow.io/0.",
	"https://api.opsnow.io./",
	"https://api.opsnow.io./x",
	"HTTPS://API.OPSNOW.IO.:443/",
	"https://api.opsnow.io/any/other/service",
	"https://api.opsnow.io/platform/v2/identity/api-keys/token",
	"https://api.opsnow360.io/x",
	"https://api.kr.opsnow360.io/x/",
	"http://opsnow-mock.tools.svc.cluster.local.:8080",
	"http://opsnow-mock.tools.svc.cluster.local:8080",
	"http://opsnow-mock.tools.svc.cluster.local.:8080/api",
	"http://opsnow-mock.tools.svc:8080",
	"http://127.0.0.1.:8080",
	"http://localhost.",
	"https://.",
	"https://[::1].:8443",
}

// fuzzEntries is the allowlist FuzzAllow checks against: the built-ins plus
// the shapes an admin may add (http, loopback, IPv6, a path prefix, a fully
// qualified name, a built-in spelt again as the default endpoint).
var fuzzEntries = append(endpoint.BuiltIn(),
	"HTTPS://API.OPSNOW.IO:443/",
	"https://api.opsnow360.io.",
	"http://127.0.0.1:8080",
	"https://[::1]:8443",
	"https://h.example/api",
	"http://localhost",
	"http://opsnow-mock.tools.svc.cluster.local.:8080",
)

// origin is scheme, host and port as net/url sees them, brought to one
// spelling. It is written independently of the package so that the fuzz
// tests check the package against net/url rather than against itself. A
// trailing dot stays part of the host: the resolver treats host. and host
// differently.
type origin struct{ scheme, host, port string }

func originOf(u *url.URL) origin {
	o := origin{
		scheme: strings.ToLower(u.Scheme),
		host:   strings.ToLower(u.Hostname()),
		port:   u.Port(),
	}
	if a, err := netip.ParseAddr(o.host); err == nil {
		o.host = a.String()
	}
	if n, err := strconv.Atoi(o.port); err == nil {
		o.port = strconv.Itoa(n)
	}
	if o.scheme == "https" && o.port == "443" || o.scheme == "http" && o.port == "80" {
		o.port = ""
	}
	return o
}

// checkCanonical fails t unless s is a plain absolute http(s) URL as net/url
// sees it, and returns the parsed form.
func checkCanonical(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("url.Parse(%q): %v", s, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		t.Fatalf("%q: got scheme %q, want http or https", s, u.Scheme)
	}
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawPath != "" {
		t.Fatalf("%q: got %#v, want no opaque part, userinfo, query, fragment or escaping", s, u)
	}
	if u.Hostname() == "" {
		t.Fatalf("%q: got no host", s)
	}
	if strings.HasSuffix(s, "/") {
		t.Fatalf("%q: got a trailing slash", s)
	}
	if h := u.Hostname(); strings.HasPrefix(h, ".") || strings.HasSuffix(h, "..") || h != strings.ToLower(h) {
		t.Fatalf("%q: got host %q, want it lowercase with at most one trailing dot", s, h)
	}
	if h, ok := strings.CutSuffix(u.Hostname(), "."); ok {
		if _, err := netip.ParseAddr(h); err == nil {
			t.Fatalf("%q: got IP literal %q with a trailing dot, which a resolver reads as a name", s, u.Hostname())
		}
	}
	if p := u.Path + "/"; strings.Contains(u.Path, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") || strings.ContainsAny(p, `%\`) {
		t.Fatalf("%q: got path %q, want one without empty or dot segments, %% or \\", s, u.Path)
	}
	return u
}

func FuzzNormalize(f *testing.F) {
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := endpoint.Normalize(in)
		if err != nil {
			if !errors.Is(err, endpoint.ErrInvalid) {
				t.Fatalf("Normalize(%q): got error %v, want it to wrap ErrInvalid", in, err)
			}
			if got != "" {
				t.Fatalf("Normalize(%q): returned %q with its error, want \"\"", in, got)
			}
			return
		}
		again, err := endpoint.Normalize(got)
		if err != nil || again != got {
			t.Fatalf("Normalize(%q) = %q, but Normalize(%q) = %q, %v; want it unchanged", in, got, got, again, err)
		}
		u := checkCanonical(t, got)
		orig, err := url.Parse(in)
		if err != nil {
			t.Fatalf("Normalize(%q) = %q, but url.Parse rejects the input: %v", in, got, err)
		}
		if o, n := originOf(orig), originOf(u); o != n {
			t.Fatalf("Normalize(%q) = %q: got origin %+v, want %+v as net/url parses the input", in, got, n, o)
		}
		if want := strings.TrimSuffix(orig.Path, "/"); u.Path != want {
			t.Fatalf("Normalize(%q) = %q: got path %q, want %q", in, got, u.Path, want)
		}
	})
}

func FuzzAllow(f *testing.F) {
	for _, s := range seeds {
		f.Add(s)
	}
	for _, s := range fuzzEntries {
		f.Add(s)
	}
	a, err := endpoint.NewAllowlist(fuzzEntries...)
	if err != nil {
		f.Fatal(err)
	}
	type entry struct {
		origin
		path  string
		exact bool // a built-in: only the base itself
	}
	// builtIn holds the built-in origins, with and without a trailing dot:
	// both spellings reach the same OpsNow server.
	builtIn := map[origin]bool{}
	for _, s := range endpoint.BuiltIn() {
		u, err := url.Parse(s)
		if err != nil {
			f.Fatal(err)
		}
		o := originOf(u)
		builtIn[o] = true
		o.host += "."
		builtIn[o] = true
	}
	var entries []entry
	hosts := map[string]bool{}
	for _, s := range fuzzEntries {
		u, err := url.Parse(s)
		if err != nil {
			f.Fatal(err)
		}
		e := entry{origin: originOf(u), path: strings.TrimSuffix(u.Path, "/")}
		e.exact = builtIn[e.origin] && e.path == ""
		entries = append(entries, e)
		hosts[e.host] = true
	}

	f.Fuzz(func(t *testing.T, in string) {
		got, err := a.Allow(in)
		if err != nil {
			if !errors.Is(err, endpoint.ErrNotAllowed) && !errors.Is(err, endpoint.ErrInvalid) {
				t.Fatalf("Allow(%q): got error %v, want ErrNotAllowed or ErrInvalid", in, err)
			}
			if got != "" {
				t.Fatalf("Allow(%q): returned %q with its error, want \"\"", in, got)
			}
			return
		}

		// The input itself, as net/url reads it, must name an allowed host:
		// whatever canonicalization did, it must not have moved the host.
		orig, err := url.Parse(in)
		if err != nil {
			t.Fatalf("Allow(%q) = %q, but url.Parse rejects the input: %v", in, got, err)
		}
		if h := originOf(orig).host; !hosts[h] {
			t.Fatalf("Allow(%q) = %q, but net/url reads host %q, which no entry has", in, got, h)
		}

		u := checkCanonical(t, got)
		if o, n := originOf(orig), originOf(u); o != n {
			t.Fatalf("Allow(%q) = %q: got origin %+v, want %+v as net/url parses the input", in, got, n, o)
		}
		matched := false
		for _, e := range entries {
			if e.origin != originOf(u) {
				continue
			}
			if u.Path == e.path || !e.exact && (e.path == "" || strings.HasPrefix(u.Path, e.path+"/")) {
				matched = true
				break
			}
		}
		if !matched {
			t.Fatalf("Allow(%q) = %q, which no entry of %q covers", in, got, fuzzEntries)
		}
		// fuzzEntries lists no path on a built-in host, so the base is the
		// only URL allowed there and the client's token path the only one
		// the key reaches.
		if builtIn[originOf(u)] && u.Path != "" {
			t.Fatalf("Allow(%q) = %q: got path %q on a built-in endpoint, want none", in, got, u.Path)
		}
		if again, err := a.Allow(got); err != nil || again != got {
			t.Fatalf("Allow(%q) = %q, but Allow(%q) = %q, %v; want it unchanged", in, got, got, again, err)
		}
		if n, err := endpoint.Normalize(in); err != nil || n != got {
			t.Fatalf("Allow(%q) = %q, but Normalize gives %q, %v; want the same", in, got, n, err)
		}
	})
}
