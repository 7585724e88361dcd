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

package controller

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

func TestSaltedHash(t *testing.T) {
	const value = "the-api-key"
	a, b := saltedHash(value), saltedHash(value)
	if a == b {
		t.Errorf("two hashes of one value: got %q twice, want different salts", a)
	}
	for _, h := range []string{a, b} {
		if strings.Contains(h, value) {
			t.Errorf("hash %q holds the value", h)
		}
		if !strings.HasPrefix(h, "hmac-sha256:") {
			t.Errorf("hash %q: want the hmac-sha256 scheme", h)
		}
	}

	scheme, rest, _ := strings.Cut(a, ":")
	salt, mac, _ := strings.Cut(rest, ":")
	flip := func(s string) string {
		if s[0] == 'A' {
			return "B" + s[1:]
		}
		return "A" + s[1:]
	}
	tests := []struct {
		name  string
		hash  string
		value string
		want  bool
	}{
		{name: "same value", hash: a, value: value, want: true},
		{name: "same value, other salt", hash: b, value: value, want: true},
		{name: "other value", hash: a, value: "another-key", want: false},
		{name: "value with a trailing newline", hash: a, value: value + "\n", want: false},
		{name: "empty value", hash: a, value: "", want: false},
		{name: "tampered mac", hash: scheme + ":" + salt + ":" + flip(mac), value: value, want: false},
		{name: "tampered salt", hash: scheme + ":" + flip(salt) + ":" + mac, value: value, want: false},
		{name: "salt of another hash", hash: scheme + ":" + strings.Split(b, ":")[1] + ":" + mac, value: value, want: false},
		{name: "wrong scheme", hash: "sha256:" + salt + ":" + mac, value: value, want: false},
		{name: "no scheme", hash: salt + ":" + mac, value: value, want: false},
		{name: "empty salt", hash: scheme + "::" + mac, value: value, want: false},
		{name: "salt not base64", hash: scheme + ":!!!:" + mac, value: value, want: false},
		{name: "no mac", hash: scheme + ":" + salt, value: value, want: false},
		{name: "empty hash", hash: "", value: value, want: false},
		{name: "empty hash, empty value", hash: "", value: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hashMatches(tt.hash, tt.value); got != tt.want {
				t.Errorf("hashMatches(%q, %q): got %t, want %t", tt.hash, tt.value, got, tt.want)
			}
		})
	}
}

func TestSpecHash(t *testing.T) {
	const endpoint = "https://api.opsnow.io"
	base := authv1alpha1.OpsnowTokenSpec{
		APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: "opsnow-api-key", Key: "apiKey"},
		SecretName:      "billing-token",
		RefreshBefore:   &metav1.Duration{Duration: 20 * time.Minute},
	}
	want := specHash(base, endpoint)
	if want != specHash(*base.DeepCopy(), endpoint) {
		t.Fatal("equal specs: got different hashes")
	}

	tests := []struct {
		name     string
		mutate   func(*authv1alpha1.OpsnowTokenSpec)
		endpoint string
		same     bool
	}{
		{name: "endpoint", mutate: func(*authv1alpha1.OpsnowTokenSpec) {}, endpoint: "https://api.opsnow360.io"},
		{name: "API-key Secret name", mutate: func(s *authv1alpha1.OpsnowTokenSpec) { s.APIKeySecretRef.Name = "other" }},
		{name: "API-key key", mutate: func(s *authv1alpha1.OpsnowTokenSpec) { s.APIKeySecretRef.Key = "other" }},
		{name: "secretName", mutate: func(s *authv1alpha1.OpsnowTokenSpec) { s.SecretName = "other" }},
		{name: "refreshBefore", mutate: func(s *authv1alpha1.OpsnowTokenSpec) { s.RefreshBefore.Duration = 10 * time.Minute }},
		{name: "refreshBefore removed", mutate: func(s *authv1alpha1.OpsnowTokenSpec) { s.RefreshBefore = nil }},
		{name: "suspend", mutate: func(s *authv1alpha1.OpsnowTokenSpec) { s.Suspend = true }, same: true},
		{name: "spec.endpoint (the canonical endpoint is hashed)", mutate: func(s *authv1alpha1.OpsnowTokenSpec) {
			s.Endpoint = "https://API.opsnow.io/"
		}, same: true},
		{name: "the default key spelled out or not", mutate: func(s *authv1alpha1.OpsnowTokenSpec) { s.APIKeySecretRef.Key = "" }, same: true},
		{name: "refreshBefore written another way", mutate: func(s *authv1alpha1.OpsnowTokenSpec) {
			s.RefreshBefore = &metav1.Duration{Duration: 1200 * time.Second}
		}, same: true},
		// The fields are hashed as a list, not concatenated.
		{name: "fields shifted between each other", mutate: func(s *authv1alpha1.OpsnowTokenSpec) {
			s.APIKeySecretRef.Name, s.APIKeySecretRef.Key = "opsnow-api-keyapi", "Key"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := *base.DeepCopy()
			tt.mutate(&spec)
			e := endpoint
			if tt.endpoint != "" {
				e = tt.endpoint
			}
			got := specHash(spec, e)
			if tt.same && got != want {
				t.Errorf("got %s, want %s (unchanged)", got, want)
			}
			if !tt.same && got == want {
				t.Errorf("got %s, want a hash other than %s", got, want)
			}
		})
	}
}

// writtenSecret returns a Secret as writeSecret creates it for held.
func writtenSecret(held heldToken) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "billing"}}
	desiredSecretContent(tokenLabels("billing"), nil, held, "").apply(s)
	return s
}

func TestReadHeldToken(t *testing.T) {
	held := heldToken{
		Token:          "demo.token-1",
		IssuedAt:       t0,
		ExpiresAt:      t0.Add(time.Hour),
		SpecHash:       "spec",
		APIKeyHash:     saltedHash("key-1"),
		APIKeyVersion:  "42",
		RefreshRequest: "r1",
	}
	tests := []struct {
		name   string
		mutate func(*corev1.Secret)
		intact bool
	}{
		{name: "as written", mutate: func(*corev1.Secret) {}, intact: true},
		{name: "foreign labels and annotations added", mutate: func(s *corev1.Secret) {
			s.Labels["team"] = "a"
			s.Annotations["example.com/note"] = "x"
		}, intact: true},
		{name: "extra data key added", mutate: func(s *corev1.Secret) { s.Data["extra"] = []byte("x") }, intact: true},
		{name: "token edited", mutate: func(s *corev1.Secret) { s.Data[authv1alpha1.SecretTokenKey] = []byte("demo.forged") }},
		{name: "token emptied", mutate: func(s *corev1.Secret) { s.Data[authv1alpha1.SecretTokenKey] = nil }},
		{name: "token removed", mutate: func(s *corev1.Secret) { delete(s.Data, authv1alpha1.SecretTokenKey) }},
		{name: "expiresAt edited", mutate: func(s *corev1.Secret) {
			s.Data[authv1alpha1.SecretExpiresAtKey] = []byte(t0.Add(24 * time.Hour).Format(time.RFC3339))
		}},
		{name: "expiresAt and its annotation edited together", mutate: func(s *corev1.Secret) {
			later := t0.Add(24 * time.Hour).Format(time.RFC3339)
			s.Data[authv1alpha1.SecretExpiresAtKey] = []byte(later)
			s.Annotations[expiresAtAnnotation] = later
		}},
		{name: "expiresAt removed", mutate: func(s *corev1.Secret) { delete(s.Data, authv1alpha1.SecretExpiresAtKey) }},
		{name: "token hash removed", mutate: func(s *corev1.Secret) { delete(s.Annotations, tokenHashAnnotation) }},
		{name: "token hash replaced by one of another token", mutate: func(s *corev1.Secret) {
			s.Annotations[tokenHashAnnotation] = saltedHash(tokenData("demo.forged", string(s.Data[authv1alpha1.SecretExpiresAtKey])))
		}},
		{name: "expires-at annotation removed", mutate: func(s *corev1.Secret) { delete(s.Annotations, expiresAtAnnotation) }},
		{name: "issued-at annotation removed", mutate: func(s *corev1.Secret) { delete(s.Annotations, issuedAtAnnotation) }},
		{name: "issued-at annotation garbled", mutate: func(s *corev1.Secret) { s.Annotations[issuedAtAnnotation] = "yesterday" }},
		{name: "all annotations removed", mutate: func(s *corev1.Secret) { s.Annotations = nil }},
		{name: "no data", mutate: func(s *corev1.Secret) { s.Data = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := writtenSecret(held)
			tt.mutate(s)
			got, intact := readHeldToken(s)
			if intact != tt.intact {
				t.Fatalf("intact: got %t, want %t", intact, tt.intact)
			}
			if !intact {
				if got != (heldToken{}) {
					t.Errorf("held token of a damaged Secret: got %+v, want none", got)
				}
				return
			}
			if got.Token != held.Token || !got.IssuedAt.Equal(held.IssuedAt) || !got.ExpiresAt.Equal(held.ExpiresAt) ||
				got.SpecHash != held.SpecHash || got.APIKeyHash != held.APIKeyHash ||
				got.APIKeyVersion != held.APIKeyVersion || got.RefreshRequest != held.RefreshRequest {
				t.Errorf("got %+v, want %+v", got, held)
			}
		})
	}
}

func TestDesiredSecretContent(t *testing.T) {
	held := heldToken{Token: "demo.token-1", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour), SpecHash: "spec", APIKeyHash: "kh", APIKeyVersion: "7"}
	c := desiredSecretContent(tokenLabels("billing"), nil, held, "")
	if got, want := string(c.Data[authv1alpha1.SecretExpiresAtKey]), "2026-11-27T14:00:00Z"; got != want {
		t.Errorf("expiresAt: got %q, want %q", got, want)
	}
	if got := string(c.Data[authv1alpha1.SecretTokenKey]); got != held.Token {
		t.Errorf("token: got %q, want %q", got, held.Token)
	}
	if len(c.Data) != 2 {
		t.Errorf("data keys: got %d, want 2", len(c.Data))
	}
	if _, ok := c.Annotations[refreshRequestAnnotation]; ok {
		t.Errorf("refresh-request annotation without a request: got %q, want none", c.Annotations[refreshRequestAnnotation])
	}
	for k, v := range c.Annotations {
		if strings.Contains(v, held.Token) {
			t.Errorf("annotation %s holds the token", k)
		}
	}
	// The token hash is kept while it matches, so an unchanged token
	// yields identical content.
	again := desiredSecretContent(tokenLabels("billing"), nil, held, c.Annotations[tokenHashAnnotation])
	if !maps.Equal(again.Annotations, c.Annotations) {
		t.Errorf("content for the same token: got annotations %v, want %v", again.Annotations, c.Annotations)
	}
	other := desiredSecretContent(tokenLabels("billing"), nil, heldToken{Token: "demo.token-2", ExpiresAt: held.ExpiresAt}, c.Annotations[tokenHashAnnotation])
	if other.Annotations[tokenHashAnnotation] == c.Annotations[tokenHashAnnotation] {
		t.Error("content for another token kept the old token hash")
	}
}

func TestSecretContentApply(t *testing.T) {
	held := heldToken{Token: "demo.token-1", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour), SpecHash: "spec", APIKeyHash: "kh", APIKeyVersion: "7", RefreshRequest: "r1"}
	tests := []struct {
		name    string
		mutate  func(*corev1.Secret)
		changed bool
		// check, if set, inspects the Secret after apply.
		check func(t *testing.T, s *corev1.Secret)
	}{
		{name: "already as desired", mutate: func(*corev1.Secret) {}},
		{name: "foreign label and annotation kept", mutate: func(s *corev1.Secret) {
			s.Labels["team"] = "a"
			s.Annotations["example.com/note"] = "x"
		}, check: func(t *testing.T, s *corev1.Secret) {
			if s.Labels["team"] != "a" || s.Annotations["example.com/note"] != "x" {
				t.Errorf("foreign metadata: got labels %v annotations %v, want team=a and example.com/note=x kept", s.Labels, s.Annotations)
			}
		}},
		{name: "stale operator annotation removed", mutate: func(s *corev1.Secret) {
			s.Annotations["auth.opsnow.io/obsolete"] = "x"
		}, changed: true, check: func(t *testing.T, s *corev1.Secret) {
			if _, ok := s.Annotations["auth.opsnow.io/obsolete"]; ok {
				t.Error("stale auth.opsnow.io/ annotation: got kept, want removed")
			}
		}},
		{name: "operator annotation edited", mutate: func(s *corev1.Secret) { s.Annotations[specHashAnnotation] = "edited" }, changed: true},
		{name: "operator label removed", mutate: func(s *corev1.Secret) { delete(s.Labels, authv1alpha1.ManagedByLabel) }, changed: true},
		{name: "token label edited", mutate: func(s *corev1.Secret) { s.Labels[authv1alpha1.TokenLabel] = "other" }, changed: true},
		{name: "extra data key removed", mutate: func(s *corev1.Secret) { s.Data["extra"] = []byte("x") }, changed: true,
			check: func(t *testing.T, s *corev1.Secret) {
				if _, ok := s.Data["extra"]; ok || len(s.Data) != 2 {
					t.Errorf("data keys: got %v, want token and expiresAt only", slices.Sorted(maps.Keys(s.Data)))
				}
			}},
		{name: "token edited", mutate: func(s *corev1.Secret) { s.Data[authv1alpha1.SecretTokenKey] = []byte("x") }, changed: true},
		{name: "stringData cleared", mutate: func(s *corev1.Secret) { s.StringData = map[string]string{"token": "x"} }, changed: true,
			check: func(t *testing.T, s *corev1.Secret) {
				if s.StringData != nil {
					t.Errorf("stringData: got %v, want none", s.StringData)
				}
			}},
		{name: "type set", mutate: func(s *corev1.Secret) { s.Type = "" }, changed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := writtenSecret(held)
			tt.mutate(s)
			c := desiredSecretContent(tokenLabels("billing"), nil, held, s.Annotations[tokenHashAnnotation])
			if got := c.apply(s); got != tt.changed {
				t.Errorf("changed: got %t, want %t", got, tt.changed)
			}
			if got, intact := readHeldToken(s); !intact || got.Token != held.Token {
				t.Errorf("after apply: got intact %t, token %q, want the held token", intact, got.Token)
			}
			if s.Type != corev1.SecretTypeOpaque {
				t.Errorf("type: got %q, want Opaque", s.Type)
			}
			if again := c.apply(s); again {
				t.Error("second apply: got changed, want unchanged")
			}
			if tt.check != nil {
				tt.check(t, s)
			}
		})
	}

	t.Run("new Secret", func(t *testing.T) {
		s := &corev1.Secret{}
		if !desiredSecretContent(tokenLabels("billing"), nil, held, "").apply(s) {
			t.Error("changed: got false for an empty Secret, want true")
		}
		for k, v := range map[string]string{authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue, authv1alpha1.TokenLabel: "billing"} {
			if s.Labels[k] != v {
				t.Errorf("label %s: got %q, want %q", k, s.Labels[k], v)
			}
		}
		if got := s.Annotations[refreshRequestAnnotation]; got != "r1" {
			t.Errorf("refresh-request annotation: got %q, want r1", got)
		}
	})
	t.Run("refresh request dropped", func(t *testing.T) {
		s := writtenSecret(held)
		noRequest := held
		noRequest.RefreshRequest = ""
		if !desiredSecretContent(tokenLabels("billing"), nil, noRequest, s.Annotations[tokenHashAnnotation]).apply(s) {
			t.Error("changed: got false, want true")
		}
		if _, ok := s.Annotations[refreshRequestAnnotation]; ok {
			t.Error("refresh-request annotation: got kept, want removed")
		}
	})
}

// The Secret metadata cache keeps, of a Secret an OpsnowToken controls, the
// controller reference and the operator's own labels and annotations; of
// any other Secret, whatever it claims, only its identity and version.
func TestKeepSecretMetadata(t *testing.T) {
	controlled := metav1.OwnerReference{APIVersion: authv1alpha1.GroupVersion.String(), Kind: "OpsnowToken",
		Name: "billing", UID: "u", Controller: ptr.To(true)}
	other := func(f func(*metav1.OwnerReference)) []metav1.OwnerReference {
		r := controlled
		f(&r)
		return []metav1.OwnerReference{r}
	}
	tests := []struct {
		name string
		refs []metav1.OwnerReference
		kept bool
	}{
		{name: "controlled by an OpsnowToken", refs: []metav1.OwnerReference{controlled}, kept: true},
		{name: "controlled by a ClusterOpsnowToken", refs: other(func(r *metav1.OwnerReference) { r.Kind = "ClusterOpsnowToken" }), kept: true},
		{name: "no owner"},
		{name: "owned, not controlled", refs: other(func(r *metav1.OwnerReference) { r.Controller = nil })},
		{name: "controlled by another kind", refs: other(func(r *metav1.OwnerReference) { r.Kind = "Certificate" })},
		{name: "controlled by a look-alike group", refs: other(func(r *metav1.OwnerReference) {
			r.APIVersion = "auth.opsnow.io.evil.example/v1alpha1"
		})},
	}
	big := strings.Repeat("x", 64<<10)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := secretMetadataObject()
			m.ObjectMeta = metav1.ObjectMeta{Name: "s", Namespace: "ns", UID: "s-uid", ResourceVersion: "7",
				OwnerReferences: tt.refs,
				Labels: map[string]string{authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue,
					authv1alpha1.TokenLabel: "billing", authv1alpha1.ClusterTokenLabel: "billing", "team": big},
				Annotations: map[string]string{expiresAtAnnotation: "2026-12-01T00:00:00Z", templateHashAnnotation: "h",
					templateLabelsAnnotation: "team", "note": big},
				ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}},
				Finalizers:    []string{"example.com/" + big[:100]},
			}
			out, err := keepSecretMetadata(m)
			if err != nil {
				t.Fatal(err)
			}
			got := out.(*metav1.PartialObjectMetadata)
			if got.Name != "s" || got.Namespace != "ns" || got.UID != "s-uid" || got.ResourceVersion != "7" ||
				got.GroupVersionKind().Kind != "Secret" {
				t.Errorf("identity: got %+v", got.ObjectMeta)
			}
			if got.ManagedFields != nil || got.Finalizers != nil || got.Labels["team"] != "" || got.Annotations["note"] != "" {
				t.Errorf("kept what no reader needs: %+v", got.ObjectMeta)
			}
			kept := got.Labels[authv1alpha1.TokenLabel] == "billing" && got.Labels[authv1alpha1.ClusterTokenLabel] == "billing" &&
				got.Annotations[expiresAtAnnotation] != "" &&
				got.Annotations[templateHashAnnotation] == "h" && got.Annotations[templateLabelsAnnotation] == "team" &&
				metav1.IsControlledBy(got, &metav1.ObjectMeta{UID: "u"})
			if kept != tt.kept {
				t.Errorf("operator's labels, annotations and controller kept: got %t, want %t (%+v)", kept, tt.kept, got.ObjectMeta)
			}
			if !tt.kept && (got.Labels != nil || got.Annotations != nil || got.OwnerReferences != nil) {
				t.Errorf("a Secret no OpsnowToken controls keeps metadata: %+v", got.ObjectMeta)
			}
		})
	}
}
