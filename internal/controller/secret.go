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
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// Annotations the operator owns on a target Secret. They let it tell, after
// a restart and without asking OpsNow, whether the token in the Secret is
// still the one it issued, for the same spec and API key.
const (
	issuedAtAnnotation  = "auth.opsnow.io/issued-at"
	expiresAtAnnotation = "auth.opsnow.io/expires-at"
	// specHashAnnotation is a hash of the spec fields the token was issued for.
	specHashAnnotation = "auth.opsnow.io/spec-hash"
	// apiKeyHashAnnotation is a salted HMAC of the API key, never the key.
	apiKeyHashAnnotation = "auth.opsnow.io/api-key-hash"
	// apiKeyVersionAnnotation is the resourceVersion of the API-key Secret
	// read at issue: while it is unchanged the key needs no second read.
	apiKeyVersionAnnotation = "auth.opsnow.io/api-key-version"
	// tokenHashAnnotation is a salted HMAC of the Secret's data, so that an
	// edited token is noticed and replaced.
	tokenHashAnnotation = "auth.opsnow.io/token-hash"
	// refreshRequestAnnotation is the refresh-requested-at value this token answered.
	refreshRequestAnnotation = "auth.opsnow.io/refresh-request"
	// templateLabelsAnnotation and templateAnnotationsAnnotation list the
	// keys spec.secretTemplate set, so that a key dropped from the template
	// is removed from the Secret and keys others set are left alone.
	templateLabelsAnnotation      = "auth.opsnow.io/template-labels"
	templateAnnotationsAnnotation = "auth.opsnow.io/template-annotations"
	// templateHashAnnotation fingerprints the template as applied, so that
	// a change of it is seen without reading the Secret (see templateHash).
	templateHashAnnotation = "auth.opsnow.io/template-hash"
)

const hashScheme = "hmac-sha256"

// saltedHash returns "hmac-sha256:<salt>:<mac>" for value with a fresh random
// salt: comparable later with hashMatches, useless for guessing the value.
func saltedHash(value string) string {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt) // crypto/rand.Read never fails on supported platforms
	return hashScheme + ":" + base64.RawURLEncoding.EncodeToString(salt) + ":" + macOf(salt, value)
}

// hashMatches reports whether hash was made by saltedHash from value.
func hashMatches(hash, value string) bool {
	scheme, rest, ok := strings.Cut(hash, ":")
	if !ok || scheme != hashScheme {
		return false
	}
	encodedSalt, mac, ok := strings.Cut(rest, ":")
	if !ok {
		return false
	}
	salt, err := base64.RawURLEncoding.DecodeString(encodedSalt)
	if err != nil || len(salt) == 0 {
		return false
	}
	return hmac.Equal([]byte(mac), []byte(macOf(salt, value)))
}

func macOf(salt []byte, value string) string {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(value))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// specHash identifies the spec fields a token was issued for: changing any of
// them (but suspend) asks for a new token. The endpoint is the canonical one,
// so rewriting it in an equivalent form does not.
func specHash(spec authv1alpha1.OpsnowTokenSpec, endpoint string) string {
	refreshBefore := ""
	if spec.RefreshBefore != nil {
		refreshBefore = spec.RefreshBefore.Duration.String()
	}
	inputs, _ := json.Marshal([]string{ // marshalling strings cannot fail
		endpoint, spec.APIKeySecretRef.Name, apiKeyKey(spec), spec.SecretName, refreshBefore,
	})
	sum := sha256.Sum256(inputs)
	return hex.EncodeToString(sum[:16])
}

// tokenData is the content hashed into tokenHashAnnotation.
func tokenData(token, expiresAt string) string { return token + "\x00" + expiresAt }

func apiKeyKey(spec authv1alpha1.OpsnowTokenSpec) string {
	if spec.APIKeySecretRef.Key != "" {
		return spec.APIKeySecretRef.Key
	}
	return authv1alpha1.DefaultAPIKeyKey
}

// maxLabelValue is the longest label value the API server accepts.
const maxLabelValue = 63

// tokenLabelValue is the OpsnowToken name as the value of the token label.
// Object names may be 253 characters, label values 63: a longer name is cut
// and ends in a hash of the whole name, so two long names that share a
// prefix do not share a label value. The ownerReference, not the label,
// is the authoritative link.
func tokenLabelValue(name string) string {
	if len(name) <= maxLabelValue {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	suffix := "-" + hex.EncodeToString(sum[:])[:16]
	return name[:maxLabelValue-len(suffix)] + suffix
}

// targetSecretName is spec.secretName, defaulting to the OpsnowToken's name.
func targetSecretName(secretName, tokenName string) string {
	if secretName != "" {
		return secretName
	}
	return tokenName
}

// heldToken is what a target Secret says about the token it holds.
type heldToken struct {
	Token          string
	IssuedAt       time.Time
	ExpiresAt      time.Time
	SpecHash       string
	APIKeyHash     string
	APIKeyVersion  string
	RefreshRequest string
}

// readHeldAnnotations parses what the operator's annotations on a target
// Secret say about the token it holds, without its data: enough to decide
// when a Secret whose content is known to be intact (its resourceVersion is
// one the operator wrote or checked) must be refreshed. Token is empty.
func readHeldAnnotations(a map[string]string) (heldToken, bool) {
	issuedAt, err1 := time.Parse(time.RFC3339, a[issuedAtAnnotation])
	expiresAt, err2 := time.Parse(time.RFC3339, a[expiresAtAnnotation])
	if err1 != nil || err2 != nil || a[tokenHashAnnotation] == "" {
		return heldToken{}, false
	}
	return heldToken{
		IssuedAt:       issuedAt,
		ExpiresAt:      expiresAt,
		SpecHash:       a[specHashAnnotation],
		APIKeyHash:     a[apiKeyHashAnnotation],
		APIKeyVersion:  a[apiKeyVersionAnnotation],
		RefreshRequest: a[refreshRequestAnnotation],
	}, true
}

// readHeldToken parses a target Secret written by the operator, data
// included. It returns false when the Secret's data no longer matches what
// the operator wrote (edited or damaged): the token must then be replaced.
func readHeldToken(s *corev1.Secret) (heldToken, bool) {
	held, ok := readHeldAnnotations(s.Annotations)
	token := string(s.Data[authv1alpha1.SecretTokenKey])
	expiresAtData := string(s.Data[authv1alpha1.SecretExpiresAtKey])
	if !ok || token == "" || expiresAtData != s.Annotations[expiresAtAnnotation] ||
		!hashMatches(s.Annotations[tokenHashAnnotation], tokenData(token, expiresAtData)) {
		return heldToken{}, false
	}
	held.Token = token
	return held, true
}

// secretContent is the part of a target Secret the operator owns.
type secretContent struct {
	Labels      map[string]string
	Annotations map[string]string
	Data        map[string][]byte
}

// tokenLabels are the operator's labels on an OpsnowToken's target Secret.
func tokenLabels(tokenName string) map[string]string {
	return map[string]string{
		authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue,
		authv1alpha1.TokenLabel:     tokenLabelValue(tokenName),
	}
}

// desiredSecretContent returns the labels, annotations and data a target
// Secret holding held must have: the operator's labels own, the template's
// metadata, and the operator's annotations. tokenHash is reused when it
// still matches, so rewriting an unchanged token does not change the Secret.
func desiredSecretContent(own map[string]string, tmpl *authv1alpha1.SecretTemplate, held heldToken, tokenHash string) secretContent {
	expiresAt := held.ExpiresAt.UTC().Format(time.RFC3339)
	if !hashMatches(tokenHash, tokenData(held.Token, expiresAt)) {
		tokenHash = saltedHash(tokenData(held.Token, expiresAt))
	}
	c := desiredSecretMetadata(own, tmpl, held, tokenHash)
	c.Data = map[string][]byte{
		authv1alpha1.SecretTokenKey:     []byte(held.Token),
		authv1alpha1.SecretExpiresAtKey: []byte(expiresAt),
	}
	return c
}

// desiredSecretMetadata is desiredSecretContent without the data: the
// labels and annotations of a Secret whose token, hashed as tokenHash, stays.
func desiredSecretMetadata(own map[string]string, tmpl *authv1alpha1.SecretTemplate, held heldToken, tokenHash string) secretContent {
	annotations := map[string]string{
		issuedAtAnnotation:      held.IssuedAt.UTC().Format(time.RFC3339),
		expiresAtAnnotation:     held.ExpiresAt.UTC().Format(time.RFC3339),
		specHashAnnotation:      held.SpecHash,
		apiKeyHashAnnotation:    held.APIKeyHash,
		apiKeyVersionAnnotation: held.APIKeyVersion,
		tokenHashAnnotation:     tokenHash,
	}
	if held.RefreshRequest != "" {
		annotations[refreshRequestAnnotation] = held.RefreshRequest
	}
	labels := map[string]string{}
	var templated templateKeys
	if tmpl != nil {
		// The API server's validation keeps the operator's keys out of the
		// template; skipping them here as well keeps an object admitted
		// before that validation from taking them over.
		for k, v := range tmpl.Labels {
			if !isOperatorKey(k) {
				labels[k] = v
				templated.Labels = append(templated.Labels, k)
			}
		}
		for k, v := range tmpl.Annotations {
			if !strings.HasPrefix(k, operatorKeyPrefix) {
				annotations[k] = v
				templated.Annotations = append(templated.Annotations, k)
			}
		}
	}
	if len(templated.Labels) > 0 {
		annotations[templateLabelsAnnotation] = joinSorted(templated.Labels)
	}
	if len(templated.Annotations) > 0 {
		annotations[templateAnnotationsAnnotation] = joinSorted(templated.Annotations)
	}
	if len(templated.Labels)+len(templated.Annotations) > 0 {
		annotations[templateHashAnnotation] = templateHash(labels, annotations, templated)
	}
	maps.Copy(labels, own)
	return secretContent{
		Labels:      labels,
		Annotations: annotations,
	}
}

// templateKeys are the label and annotation keys a secretTemplate set.
type templateKeys struct{ Labels, Annotations []string }

// templateHash fingerprints the template's labels and annotations as
// applied (keys sorted by joinSorted): the metadata cache holds the
// operator's annotations but not the template's keys, so a changed value
// is seen as a changed hash.
func templateHash(labels, annotations map[string]string, keys templateKeys) string {
	pairs := make([]string, 0, 2*(len(keys.Labels)+len(keys.Annotations)))
	for _, k := range keys.Labels {
		pairs = append(pairs, "l:"+k, labels[k])
	}
	for _, k := range keys.Annotations {
		pairs = append(pairs, "a:"+k, annotations[k])
	}
	b, _ := json.Marshal(pairs) // marshalling strings cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// isOperatorKey reports whether a label or annotation key is the operator's own.
func isOperatorKey(k string) bool {
	return strings.HasPrefix(k, operatorKeyPrefix) || k == authv1alpha1.ManagedByLabel
}

func joinSorted(keys []string) string {
	slices.Sort(keys)
	return strings.Join(keys, ",")
}

// splitKeys reads a list written by joinSorted.
func splitKeys(list string) []string {
	if list == "" {
		return nil
	}
	return strings.Split(list, ",")
}

// apply writes c into s, keeping labels and annotations others own (only
// keys under auth.opsnow.io/, the managed-by label and the keys the
// template set are the operator's), and reports whether s changed. Data is
// written only when c has data; then s holds exactly the operator's keys
// (a merge patch built from s removes others only when s held its data).
func (c secretContent) apply(s *corev1.Secret) bool {
	changed := c.applyMetadata(s)
	if c.Data == nil {
		return changed
	}
	if s.Type != corev1.SecretTypeOpaque {
		s.Type = corev1.SecretTypeOpaque
		changed = true
	}
	if !maps.EqualFunc(s.Data, c.Data, func(a, b []byte) bool { return string(a) == string(b) }) || len(s.StringData) > 0 {
		s.Data = c.Data
		s.StringData = nil
		changed = true
	}
	return changed
}

// applyMetadata is apply for labels and annotations alone.
func (c secretContent) applyMetadata(s *corev1.Secret) bool {
	changed := false
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	// Keys the template set before and sets no more go, unless they are
	// the operator's own (which the template never sets).
	for _, k := range splitKeys(s.Annotations[templateLabelsAnnotation]) {
		if _, keep := c.Labels[k]; !keep && !isOperatorKey(k) {
			if _, ok := s.Labels[k]; ok {
				delete(s.Labels, k)
				changed = true
			}
		}
	}
	for _, k := range splitKeys(s.Annotations[templateAnnotationsAnnotation]) {
		if _, keep := c.Annotations[k]; !keep && !isOperatorKey(k) {
			if _, ok := s.Annotations[k]; ok {
				delete(s.Annotations, k)
				changed = true
			}
		}
	}
	for k, v := range c.Labels {
		if s.Labels[k] != v {
			s.Labels[k] = v
			changed = true
		}
	}
	for k := range s.Annotations {
		if _, keep := c.Annotations[k]; !keep && strings.HasPrefix(k, operatorKeyPrefix) {
			delete(s.Annotations, k)
			changed = true
		}
	}
	for k, v := range c.Annotations {
		if s.Annotations[k] != v {
			s.Annotations[k] = v
			changed = true
		}
	}
	return changed
}

// operatorKeyPrefix marks the annotations (and labels) that are the operator's.
const operatorKeyPrefix = "auth.opsnow.io/"
