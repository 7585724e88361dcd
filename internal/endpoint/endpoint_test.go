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
	"slices"
	"strings"
	"testing"

	"github.com/opsnow-token-operator/opsnow-token-operator/internal/endpoint"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		in   string
		want string // empty: want an error wrapping ErrInvalid
	}{
		{in: "https://api.opsnow.io", want: "https://api.opsnow.io"},
		{in: "HTTPS://API.OpsNow.IO/", want: "https://api.opsnow.io"},
		// A trailing dot makes the name absolute, so the resolver skips the
		// search domains: it is kept, not dropped.
		{in: "https://api.opsnow.io.", want: "https://api.opsnow.io."},
		{in: "https://api.opsnow.io./", want: "https://api.opsnow.io."},
		{in: "HTTPS://Opsnow-Mock.Tools.SVC.Cluster.Local.:443/", want: "https://opsnow-mock.tools.svc.cluster.local."},
		{in: "http://opsnow-mock.tools.svc.cluster.local.:8080/api/", want: "http://opsnow-mock.tools.svc.cluster.local.:8080/api"},
		{in: "https://localhost.", want: "https://localhost."},
		{in: "https://" + strings.Repeat("a.", 126) + "a.", want: "https://" + strings.Repeat("a.", 126) + "a."},
		{in: "https://api.opsnow.io:443", want: "https://api.opsnow.io"},
		{in: "https://api.opsnow.io:0443", want: "https://api.opsnow.io"},
		{in: "https://api.opsnow.io:80", want: "https://api.opsnow.io:80"},
		{in: "https://api.opsnow.io:8443", want: "https://api.opsnow.io:8443"},
		{in: "http://api.opsnow.io:80", want: "http://api.opsnow.io"},
		{in: "http://api.opsnow.io:443", want: "http://api.opsnow.io:443"},
		{in: "http://127.0.0.1:80", want: "http://127.0.0.1"},
		{in: "http://127.0.0.1:8080/", want: "http://127.0.0.1:8080"},
		{in: "https://[::1]:8443", want: "https://[::1]:8443"},
		{in: "https://[0:0:0:0:0:0:0:1]:8443", want: "https://[::1]:8443"},
		{in: "https://[2001:DB8::1]", want: "https://[2001:db8::1]"},
		{in: "https://h.example/api/", want: "https://h.example/api"},
		{in: "https://h.example/API/v2", want: "https://h.example/API/v2"},
		{in: "https://h.example/.well-known/x", want: "https://h.example/.well-known/x"},
		{in: "https://h.example/a-b_c~d.e", want: "https://h.example/a-b_c~d.e"},
		{in: "https://h.example/v1./x..", want: "https://h.example/v1./x.."},
		{in: "https://h.example/.../x", want: "https://h.example/.../x"},
		{in: "http://opsnow-mock.test.svc:8080", want: "http://opsnow-mock.test.svc:8080"},
		{in: "https://xn--bcher-kva.example", want: "https://xn--bcher-kva.example"},
		{in: "https://localhost", want: "https://localhost"},

		// Not http(s) or not an absolute URL with an authority.
		{in: ""},
		{in: "ftp://api.opsnow.io"},
		{in: "file:///etc/passwd"},
		{in: "gopher://api.opsnow.io"},
		{in: "//api.opsnow.io"},
		{in: "api.opsnow.io"},
		{in: "api.opsnow.io:443"},
		{in: "https:api.opsnow.io"},
		{in: "https:/api.opsnow.io"},
		{in: "https:x://api.opsnow.io"},
		{in: "https:/x://api.opsnow.io"},
		{in: "x://https://api.opsnow.io"},
		{in: "https://"},
		{in: "https:///api.opsnow.io"},
		{in: "https://:443"},
		// Userinfo, query and fragment: a reader may take the wrong part
		// for the host.
		{in: "https://api.opsnow.io@evil.example"},
		{in: "https://user:pw@api.opsnow.io"},
		{in: "https://@api.opsnow.io"},
		{in: "https://evil.example#@api.opsnow.io"},
		{in: "https://evil.example?.api.opsnow.io"},
		{in: "https://api.opsnow.io?"},
		{in: "https://api.opsnow.io#"},
		// Parser confusion.
		{in: `https://api.opsnow.io\@evil`},
		{in: `https://api.opsnow.io\.evil.example`},
		{in: "https://api.opsnow.io%2eevil.example"},
		{in: "https://api%2eopsnow.io"},
		{in: " https://api.opsnow.io"},
		{in: "https://api.opsnow.io "},
		{in: "https://api.opsnow.io\n"},
		{in: "https://api.opsnow.io\t.evil.example"},
		{in: "https://api.opsnow.io\x00.evil.example"},
		{in: "https://api.opsnow.io\x7f"},
		{in: "https://аpi.opsnow.io"}, // Cyrillic "а"
		{in: "https://bücher.example"},
		{in: "https://api.opsnow.io;.evil.example"},
		{in: "https://api.opsnow.io,evil.example"},
		// Hosts.
		{in: "https://api.opsnow.io.."},
		{in: "https://."},
		{in: "https://.:443"},
		{in: "https://" + strings.Repeat("a.", 127) + "."},
		// A dotted-quad with a trailing dot is a DNS name to the resolver,
		// not an address.
		{in: "http://127.0.0.1."},
		{in: "http://127.0.0.1.:8080"},
		{in: "https://[::1].:8443"},
		{in: "https://.api.opsnow.io"},
		{in: "https://api..opsnow.io"},
		{in: "https://-api.opsnow.io"},
		{in: "https://api-.opsnow.io"},
		{in: "https://api_x.opsnow.io"},
		{in: "https://" + strings.Repeat("a", 64) + ".example"},
		{in: "https://" + strings.Repeat("a.", 127) + "example"},
		{in: "http://127.1"},
		{in: "http://2130706433"},
		{in: "http://0x7f.0.0.1"},
		{in: "http://0177.0.0.1"},
		{in: "http://127.0.0.01"},
		{in: "http://256.0.0.1"},
		{in: "http://1.2.3.4.5"},
		{in: "https://[127.0.0.1]"},
		{in: "https://[::1"},
		{in: "https://[::1]x"},
		{in: "https://[::1]]"},
		{in: "https://[fe80::1%25eth0]"},
		{in: "https://[v1.fe80::1]"},
		{in: "https://::1"},
		// Ports.
		{in: "https://api.opsnow.io:"},
		{in: "https://api.opsnow.io:0"},
		{in: "https://api.opsnow.io:65536"},
		{in: "https://api.opsnow.io:99999999999999999999"},
		{in: "https://api.opsnow.io:-1"},
		{in: "https://api.opsnow.io:443:443"},
		{in: "https://api.opsnow.io:https"},
		// Paths.
		{in: "https://api.opsnow.io/../x"},
		{in: "https://api.opsnow.io/x/../y"},
		{in: "https://api.opsnow.io/./x"},
		{in: "https://api.opsnow.io/x/.."},
		{in: "https://api.opsnow.io/x/."},
		{in: "https://api.opsnow.io/%2e%2e/x"},
		{in: "https://api.opsnow.io/x%2fy"},
		{in: "https://api.opsnow.io//evil.example"},
		{in: "https://api.opsnow.io/x//y"},
		{in: "https://api.opsnow.io//"},
		{in: "https://api.opsnow.io/x;y"},
		{in: "https://api.opsnow.io/x:y"},
		{in: "https://api.opsnow.io/x+y"},
		{in: "https://api.opsnow.io/" + strings.Repeat("a", 2048)},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := endpoint.Normalize(tt.in)
			if tt.want == "" {
				if !errors.Is(err, endpoint.ErrInvalid) {
					t.Fatalf("Normalize(%q) = %q, %v; want an error wrapping ErrInvalid", tt.in, got, err)
				}
				if got != "" {
					t.Errorf("Normalize(%q) returned %q with its error, want \"\"", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Normalize(%q): got error %v, want %q", tt.in, err, tt.want)
			}
			if got != tt.want {
				t.Errorf("Normalize(%q): got %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestNormalizeErrorHidesInput guards the rule that error messages never
// carry credentials: a rejected URL may hold a password in its userinfo.
func TestNormalizeErrorHidesInput(t *testing.T) {
	for _, in := range []string{
		"https://user:s3cr3t@api.opsnow.io",
		"https://s3cr3t@api.opsnow.io",
		"ftp://user:s3cr3t@api.opsnow.io",
		"https://api.opsnow.io/s3cr3t%2f",
	} {
		_, err := endpoint.Normalize(in)
		if err == nil {
			t.Fatalf("Normalize(%q): got no error, want one", in)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("Normalize(%q): got error %q, want one that does not repeat the input", in, err)
		}
	}
}

func TestAllow(t *testing.T) {
	builtIn := endpoint.BuiltIn()
	local := []string{"http://127.0.0.1:8080", "https://[::1]:8443"}
	tests := []struct {
		name    string
		entries []string
		in      string
		want    string
		wantErr error
	}{
		{name: "built-in", entries: builtIn, in: "https://api.opsnow.io", want: "https://api.opsnow.io"},
		{name: "built-in 360", entries: builtIn, in: "https://api.opsnow360.io", want: "https://api.opsnow360.io"},
		{name: "built-in kr", entries: builtIn, in: "https://api.kr.opsnow360.io/", want: "https://api.kr.opsnow360.io"},
		{name: "case and trailing slash", entries: builtIn, in: "HTTPS://API.OpsNow.IO/", want: "https://api.opsnow.io"},
		{name: "trailing dot on built-in", entries: builtIn, in: "https://api.opsnow.io.", wantErr: endpoint.ErrNotAllowed},
		{name: "default port", entries: builtIn, in: "https://api.opsnow.io:443", want: "https://api.opsnow.io"},
		{name: "other port", entries: builtIn, in: "https://api.opsnow.io:8443", wantErr: endpoint.ErrNotAllowed},
		{name: "https port on http entry", entries: []string{"http://api.opsnow.io"}, in: "http://api.opsnow.io:443", wantErr: endpoint.ErrNotAllowed},
		{name: "look-alike suffix", entries: builtIn, in: "https://api.opsnow.io.evil.example", wantErr: endpoint.ErrNotAllowed},
		{name: "look-alike prefix", entries: builtIn, in: "https://evilapi.opsnow.io", wantErr: endpoint.ErrNotAllowed},
		{name: "subdomain", entries: builtIn, in: "https://x.api.opsnow.io", wantErr: endpoint.ErrNotAllowed},
		{name: "parent domain", entries: builtIn, in: "https://opsnow.io", wantErr: endpoint.ErrNotAllowed},
		{name: "host in path", entries: builtIn, in: "https://evil.example/api.opsnow.io", wantErr: endpoint.ErrNotAllowed},
		{name: "userinfo", entries: builtIn, in: "https://api.opsnow.io@evil.example", wantErr: endpoint.ErrInvalid},
		{name: "userinfo on allowed host", entries: builtIn, in: "https://user:pw@api.opsnow.io", wantErr: endpoint.ErrInvalid},
		{name: "fragment", entries: builtIn, in: "https://evil.example#@api.opsnow.io", wantErr: endpoint.ErrInvalid},
		{name: "query", entries: builtIn, in: "https://evil.example?.api.opsnow.io", wantErr: endpoint.ErrInvalid},
		{name: "http when only https", entries: builtIn, in: "http://api.opsnow.io", wantErr: endpoint.ErrNotAllowed},
		{name: "https when only http", entries: []string{"http://opsnow.internal"}, in: "https://opsnow.internal", wantErr: endpoint.ErrNotAllowed},
		{name: "http when listed", entries: []string{"http://api.opsnow.io"}, in: "http://api.opsnow.io/", want: "http://api.opsnow.io"},
		{name: "loopback unlisted", entries: builtIn, in: "http://127.0.0.1:8080", wantErr: endpoint.ErrNotAllowed},
		{name: "loopback listed", entries: local, in: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080"},
		{name: "loopback other port", entries: local, in: "http://127.0.0.1:8081", wantErr: endpoint.ErrNotAllowed},
		{name: "loopback as localhost", entries: local, in: "http://localhost:8080", wantErr: endpoint.ErrNotAllowed},
		{name: "loopback short form", entries: local, in: "http://127.1:8080", wantErr: endpoint.ErrInvalid},
		{name: "loopback default port", entries: []string{"http://127.0.0.1:80"}, in: "http://127.0.0.1", want: "http://127.0.0.1"},
		{name: "loopback default port reversed", entries: []string{"http://127.0.0.1"}, in: "http://127.0.0.1:80/", want: "http://127.0.0.1"},
		{name: "IPv6 listed", entries: local, in: "https://[::1]:8443", want: "https://[::1]:8443"},
		{name: "IPv6 long form", entries: local, in: "https://[0:0::1]:8443/", want: "https://[::1]:8443"},
		{name: "IPv6 unlisted", entries: builtIn, in: "https://[::1]:8443", wantErr: endpoint.ErrNotAllowed},
		{name: "IPv4-mapped IPv6", entries: local, in: "http://[::ffff:127.0.0.1]:8080", wantErr: endpoint.ErrNotAllowed},
		{name: "ftp", entries: builtIn, in: "ftp://api.opsnow.io", wantErr: endpoint.ErrInvalid},
		{name: "scheme-relative", entries: builtIn, in: "//api.opsnow.io", wantErr: endpoint.ErrInvalid},
		{name: "no scheme", entries: builtIn, in: "api.opsnow.io", wantErr: endpoint.ErrInvalid},
		{name: "empty", entries: builtIn, in: "", wantErr: endpoint.ErrInvalid},
		{name: "no host", entries: builtIn, in: "https://", wantErr: endpoint.ErrInvalid},
		{name: "dot-dot", entries: builtIn, in: "https://api.opsnow.io/../x", wantErr: endpoint.ErrInvalid},
		{name: "encoded dot-dot", entries: builtIn, in: "https://api.opsnow.io/%2e%2e/x", wantErr: endpoint.ErrInvalid},
		{name: "backslash", entries: builtIn, in: `https://api.opsnow.io\@evil`, wantErr: endpoint.ErrInvalid},
		{name: "encoded dot in host", entries: builtIn, in: "https://api.opsnow.io%2eevil.example", wantErr: endpoint.ErrInvalid},
		{name: "leading space", entries: builtIn, in: " https://api.opsnow.io", wantErr: endpoint.ErrInvalid},
		{name: "trailing newline", entries: builtIn, in: "https://api.opsnow.io\n", wantErr: endpoint.ErrInvalid},

		// Path prefixes match whole segments only.
		{name: "path entry exact", entries: []string{"https://h.example/api"}, in: "https://h.example/api", want: "https://h.example/api"},
		{name: "path entry trailing slash", entries: []string{"https://h.example/api/"}, in: "https://h.example/api/", want: "https://h.example/api"},
		{name: "path below entry", entries: []string{"https://h.example/api"}, in: "https://h.example/api/v2", want: "https://h.example/api/v2"},
		{name: "path deep below entry", entries: []string{"https://h.example/api"}, in: "https://h.example/api/v2/x/", want: "https://h.example/api/v2/x"},
		{name: "path sharing a prefix", entries: []string{"https://h.example/api"}, in: "https://h.example/apiv2", wantErr: endpoint.ErrNotAllowed},
		{name: "path above entry", entries: []string{"https://h.example/api/v2"}, in: "https://h.example/api", wantErr: endpoint.ErrNotAllowed},
		{name: "root", entries: []string{"https://h.example/api"}, in: "https://h.example", wantErr: endpoint.ErrNotAllowed},
		{name: "path case differs", entries: []string{"https://h.example/api"}, in: "https://h.example/API", wantErr: endpoint.ErrNotAllowed},
		{name: "path escapes entry", entries: []string{"https://h.example/api"}, in: "https://h.example/api/../admin", wantErr: endpoint.ErrInvalid},
		{name: "admin root entry allows paths", entries: []string{"https://opsnow.internal"}, in: "https://opsnow.internal/proxy/v1", want: "https://opsnow.internal/proxy/v1"},

		// Built-in entries allow only their base, so that the token path
		// the client appends is the only URL the key can reach on them.
		{name: "built-in root slash", entries: builtIn, in: "https://api.opsnow.io/", want: "https://api.opsnow.io"},
		{name: "built-in path", entries: builtIn, in: "https://api.opsnow.io/proxy/v1", wantErr: endpoint.ErrNotAllowed},
		{name: "built-in other service", entries: builtIn, in: "https://api.opsnow.io/any/other/service", wantErr: endpoint.ErrNotAllowed},
		{name: "built-in token path", entries: builtIn, in: "https://api.opsnow.io/platform/v2/identity/api-keys/token", wantErr: endpoint.ErrNotAllowed},
		{name: "built-in 360 path", entries: builtIn, in: "https://api.opsnow360.io/x", wantErr: endpoint.ErrNotAllowed},
		{name: "built-in kr path", entries: builtIn, in: "HTTPS://API.KR.OPSNOW360.IO:443/x/", wantErr: endpoint.ErrNotAllowed},
		{name: "built-in listed again", entries: append(endpoint.BuiltIn(), "HTTPS://API.OPSNOW.IO:443/"), in: "https://api.opsnow.io/x", wantErr: endpoint.ErrNotAllowed},
		{name: "built-in as the only entry", entries: []string{"https://api.opsnow.io"}, in: "https://api.opsnow.io/x", wantErr: endpoint.ErrNotAllowed},
		{name: "built-in listed fully qualified", entries: []string{"https://api.opsnow.io."}, in: "https://api.opsnow.io.", want: "https://api.opsnow.io."},
		{name: "built-in listed fully qualified, path", entries: []string{"https://api.opsnow.io."}, in: "https://api.opsnow.io./x", wantErr: endpoint.ErrNotAllowed},
		{name: "built-in host over http", entries: []string{"http://api.opsnow.io"}, in: "http://api.opsnow.io/x", want: "http://api.opsnow.io/x"},
		{name: "admin path on built-in host", entries: append(endpoint.BuiltIn(), "https://api.opsnow.io/gateway"), in: "https://api.opsnow.io/gateway/v2", want: "https://api.opsnow.io/gateway/v2"},
		{name: "admin path on built-in host, other path", entries: append(endpoint.BuiltIn(), "https://api.opsnow.io/gateway"), in: "https://api.opsnow.io/other", wantErr: endpoint.ErrNotAllowed},

		// host. and host are different entries: the dotted name is looked up
		// only as written, the other may fall back to the search domains.
		{name: "fully qualified entry", entries: []string{"http://opsnow-mock.tools.svc.cluster.local.:8080"}, in: "http://opsnow-mock.tools.svc.cluster.local.:8080", want: "http://opsnow-mock.tools.svc.cluster.local.:8080"},
		{name: "fully qualified entry, other spelling", entries: []string{"http://opsnow-mock.tools.svc.cluster.local.:8080"}, in: "HTTP://OPSNOW-MOCK.Tools.Svc.Cluster.Local.:8080/", want: "http://opsnow-mock.tools.svc.cluster.local.:8080"},
		{name: "fully qualified entry, path", entries: []string{"http://opsnow-mock.tools.svc.cluster.local.:8080"}, in: "http://opsnow-mock.tools.svc.cluster.local.:8080/api", want: "http://opsnow-mock.tools.svc.cluster.local.:8080/api"},
		{name: "fully qualified entry, relative name", entries: []string{"http://opsnow-mock.tools.svc.cluster.local.:8080"}, in: "http://opsnow-mock.tools.svc.cluster.local:8080", wantErr: endpoint.ErrNotAllowed},
		{name: "fully qualified entry, short name", entries: []string{"http://opsnow-mock.tools.svc.cluster.local.:8080"}, in: "http://opsnow-mock.tools.svc:8080", wantErr: endpoint.ErrNotAllowed},
		{name: "relative entry, fully qualified name", entries: []string{"http://opsnow-mock.tools.svc.cluster.local:8080"}, in: "http://opsnow-mock.tools.svc.cluster.local.:8080", wantErr: endpoint.ErrNotAllowed},
		{name: "loopback with trailing dot", entries: local, in: "http://127.0.0.1.:8080", wantErr: endpoint.ErrInvalid},

		{name: "empty allowlist", entries: nil, in: "https://api.opsnow.io", wantErr: endpoint.ErrNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := endpoint.NewAllowlist(tt.entries...)
			if err != nil {
				t.Fatalf("NewAllowlist(%q): %v", tt.entries, err)
			}
			got, err := a.Allow(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Allow(%q) with %q: got %q, %v; want error %v", tt.in, tt.entries, got, err, tt.wantErr)
				}
				if got != "" {
					t.Errorf("Allow(%q) returned %q with its error, want \"\"", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Allow(%q) with %q: got error %v, want %q", tt.in, tt.entries, err, tt.want)
			}
			if got != tt.want {
				t.Errorf("Allow(%q) with %q: got %q, want %q", tt.in, tt.entries, got, tt.want)
			}
		})
	}
}

func TestAllowNotAllowedMessage(t *testing.T) {
	a, err := endpoint.NewAllowlist(endpoint.BuiltIn()...)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Allow("HTTPS://Evil.Example.:443/x/")
	want := "endpoint not allowed: https://evil.example./x is not in the operator's allowlist"
	if err == nil || err.Error() != want {
		t.Errorf("got error %v, want %q", err, want)
	}
	if errors.Is(err, endpoint.ErrInvalid) {
		t.Errorf("got error %v that is also ErrInvalid, want only ErrNotAllowed", err)
	}
}

func TestAllowNil(t *testing.T) {
	var a *endpoint.Allowlist
	if got, err := a.Allow("https://api.opsnow.io"); !errors.Is(err, endpoint.ErrNotAllowed) {
		t.Errorf("nil Allowlist: got %q, %v; want ErrNotAllowed", got, err)
	}
	if got := a.Entries(); got != nil {
		t.Errorf("nil Allowlist: got entries %q, want none", got)
	}
	var zero endpoint.Allowlist
	if got, err := zero.Allow("https://api.opsnow.io"); !errors.Is(err, endpoint.ErrNotAllowed) {
		t.Errorf("zero Allowlist: got %q, %v; want ErrNotAllowed", got, err)
	}
}

func TestNewAllowlistRejectsBadEntries(t *testing.T) {
	tests := []struct {
		entry    string
		wantText string // the entry as the error must name it
	}{
		{entry: "ftp://files.example", wantText: `"ftp://files.example"`},
		{entry: "api.opsnow.io", wantText: `"api.opsnow.io"`},
		{entry: "", wantText: `""`},
		{entry: "https://api.opsnow.io/../x", wantText: `"https://api.opsnow.io/../x"`},
		{entry: "https://api.opsnow.io?x=1", wantText: `"https://api.opsnow.io?x=1"`},
		{entry: " https://api.opsnow.io", wantText: `" https://api.opsnow.io"`},
		{entry: "https://api.opsnow.io\n", wantText: `"https://api.opsnow.io\n"`},
		{entry: "https://user:s3cr3t@api.opsnow.io", wantText: `"https://REDACTED@api.opsnow.io"`},
		{entry: "https://api.opsnow.io@evil.example", wantText: `"https://REDACTED@evil.example"`},
		{entry: "user:s3cr3t@api.opsnow.io", wantText: `"REDACTED@api.opsnow.io"`},
	}
	for _, tt := range tests {
		t.Run(tt.entry, func(t *testing.T) {
			entries := append(endpoint.BuiltIn(), tt.entry)
			a, err := endpoint.NewAllowlist(entries...)
			if !errors.Is(err, endpoint.ErrInvalid) {
				t.Fatalf("NewAllowlist(%q): got %v, %v; want an error wrapping ErrInvalid", entries, a, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.wantText) {
				t.Errorf("NewAllowlist(%q): got error %q, want it to name the entry as %s", entries, msg, tt.wantText)
			}
			if strings.Contains(msg, "s3cr3t") {
				t.Errorf("NewAllowlist(%q): got error %q, want the password redacted", entries, msg)
			}
			if strings.ContainsAny(msg, "\n\r") {
				t.Errorf("NewAllowlist(%q): got error %q, want a single line", entries, msg)
			}
		})
	}
}

func TestNewAllowlistLongEntryIsCut(t *testing.T) {
	entry := "ftp://" + strings.Repeat("a", 5000)
	_, err := endpoint.NewAllowlist(entry)
	if err == nil {
		t.Fatal("got no error, want one")
	}
	if len(err.Error()) > 400 {
		t.Errorf("got a %d-byte error, want the entry cut to keep it short", len(err.Error()))
	}
}

func TestEntries(t *testing.T) {
	a, err := endpoint.NewAllowlist(
		"https://api.opsnow.io",
		"https://api.opsnow360.io",
		"https://api.kr.opsnow360.io",
		"HTTPS://API.OPSNOW.IO:443/", // the default endpoint, spelt differently
		"http://127.0.0.1:80",
		"https://[0::1]:8443/api/",
		"https://opsnow-mock.tools.svc.cluster.local.",
		"HTTPS://OPSNOW-MOCK.TOOLS.SVC.CLUSTER.LOCAL.:443/",
		"https://opsnow-mock.tools.svc.cluster.local", // another entry: not fully qualified
	)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"https://api.opsnow.io",
		"https://api.opsnow360.io",
		"https://api.kr.opsnow360.io",
		"http://127.0.0.1",
		"https://[::1]:8443/api",
		"https://opsnow-mock.tools.svc.cluster.local.",
		"https://opsnow-mock.tools.svc.cluster.local",
	}
	got := a.Entries()
	if !slices.Equal(got, want) {
		t.Errorf("got entries %q, want %q", got, want)
	}
	got[0] = "https://evil.example"
	if _, err := a.Allow("https://evil.example"); !errors.Is(err, endpoint.ErrNotAllowed) {
		t.Errorf("after editing the result of Entries: got %v, want ErrNotAllowed", err)
	}
}

func TestBuiltIn(t *testing.T) {
	want := []string{"https://api.opsnow.io", "https://api.opsnow360.io", "https://api.kr.opsnow360.io"}
	got := endpoint.BuiltIn()
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for _, e := range got {
		if n, err := endpoint.Normalize(e); err != nil || n != e {
			t.Errorf("Normalize(%q): got %q, %v; want it unchanged", e, n, err)
		}
	}
	if !slices.Contains(got, endpoint.Default) {
		t.Errorf("got built-ins %q, want them to contain Default %q", got, endpoint.Default)
	}
	got[0] = "https://evil.example"
	if again := endpoint.BuiltIn(); again[0] != want[0] {
		t.Errorf("after editing a returned slice: got %q, want %q", again[0], want[0])
	}
}

func TestParseList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{in: "", want: nil},
		{in: " ", want: nil},
		{in: ",, ,", want: nil},
		{in: "https://a.example", want: []string{"https://a.example"}},
		{in: "https://a.example,https://b.example", want: []string{"https://a.example", "https://b.example"}},
		{in: " https://a.example , https://b.example ,", want: []string{"https://a.example", "https://b.example"}},
		{in: "https://a.example,,\thttps://b.example\n", want: []string{"https://a.example", "https://b.example"}},
		{in: "https://a.example/x y", want: []string{"https://a.example/x y"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := endpoint.ParseList(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("ParseList(%q): got %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
