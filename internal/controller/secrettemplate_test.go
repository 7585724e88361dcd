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
	"testing"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// spec.secretTemplate: its labels and annotations reach the Secret, a
// change of the template rewrites the Secret's metadata without a token
// request, a key dropped from it is removed, and keys others set stay.
func TestSecretTemplateMergesWithoutTokenRequest(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("key-1")
	w.createToken("billing", func(tok *authv1alpha1.OpsnowToken) {
		tok.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{
			Labels:      map[string]string{"team": "a", "tier": "gold"},
			Annotations: map[string]string{"reloader.stakater.com/match": "true"},
		}
	})
	w.reconcile("billing")
	w.expectRequests(1)
	s := w.secret("billing")
	if s.Labels["team"] != "a" || s.Labels["tier"] != "gold" || s.Annotations["reloader.stakater.com/match"] != "true" {
		t.Fatalf("Secret metadata: labels %v annotations %v, want the template's", s.Labels, s.Annotations)
	}
	if s.Labels[authv1alpha1.ManagedByLabel] != authv1alpha1.ManagedByValue || s.Labels[authv1alpha1.TokenLabel] != "billing" {
		t.Fatalf("Secret labels %v lack the operator's", s.Labels)
	}
	token := string(s.Data[authv1alpha1.SecretTokenKey])

	// Someone else labels the Secret; the template changes and drops a key.
	s.Labels["owner"] = "ops"
	if err := w.store.Update(w.ctx, s); err != nil {
		t.Fatal(err)
	}
	w.editToken("billing", func(tok *authv1alpha1.OpsnowToken) {
		tok.Spec.SecretTemplate.Labels = map[string]string{"team": "b"}
		tok.Spec.SecretTemplate.Annotations = nil
	})
	w.reconcile("billing")
	w.expectRequests(1)
	s = w.secret("billing")
	if got := string(s.Data[authv1alpha1.SecretTokenKey]); got != token {
		t.Errorf("token changed with the template: got %q, want %q", got, token)
	}
	if s.Labels["team"] != "b" {
		t.Errorf("label team: got %q, want b", s.Labels["team"])
	}
	if _, ok := s.Labels["tier"]; ok {
		t.Errorf("label tier dropped from the template is still on the Secret: %v", s.Labels)
	}
	if _, ok := s.Annotations["reloader.stakater.com/match"]; ok {
		t.Errorf("annotation dropped from the template is still on the Secret: %v", s.Annotations)
	}
	if s.Labels["owner"] != "ops" {
		t.Errorf("label set by someone else: got %v, want it kept", s.Labels)
	}
	tok := w.expectReady("billing", "True", authv1alpha1.ReasonTokenValid)
	if tok.Status.ObservedGeneration != tok.Generation {
		t.Errorf("observedGeneration %d, want %d", tok.Status.ObservedGeneration, tok.Generation)
	}

	// Nothing changed: no write.
	_, before := w.counters()
	w.reconcile("billing")
	if _, after := w.counters(); after != before {
		t.Errorf("a reconcile with nothing changed wrote %d times", after-before)
	}
}

// The operator's keys in a template (which the API server's validation
// refuses; an object stored before that validation could hold them) are
// ignored: the template cannot relabel or re-annotate the operator's own.
func TestSecretTemplateCannotSetOperatorKeys(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("key-1")
	w.createToken("billing", func(tok *authv1alpha1.OpsnowToken) {
		tok.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{
			Labels: map[string]string{
				authv1alpha1.ManagedByLabel: "someone-else",
				authv1alpha1.TokenLabel:     "other",
			},
			Annotations: map[string]string{expiresAtAnnotation: "2099-01-01T00:00:00Z"},
		}
	})
	w.reconcile("billing")
	s := w.secret("billing")
	if s.Labels[authv1alpha1.ManagedByLabel] != authv1alpha1.ManagedByValue || s.Labels[authv1alpha1.TokenLabel] != "billing" {
		t.Errorf("labels: got %v, want the operator's values", s.Labels)
	}
	if s.Annotations[expiresAtAnnotation] == "2099-01-01T00:00:00Z" {
		t.Errorf("the template set the operator's annotation %s", expiresAtAnnotation)
	}
	if _, ok := s.Annotations[templateLabelsAnnotation]; ok {
		t.Errorf("annotation %s lists operator keys: %v", templateLabelsAnnotation, s.Annotations)
	}
	// Restart: the token is still recognised, with no request.
	w.restart()
	w.reconcile("billing")
	w.expectRequests(0)
}

// The metadata cache holds neither the template's keys nor the Secret's
// data: a template change (a value, a key dropped) is seen in the
// operator's annotations recording the template applied, and written as
// a metadata patch without reading the Secret.
func TestSecretTemplateChangeReadsNoData(t *testing.T) {
	w := newWorld(t)
	w.createAPIKey("key-1")
	w.createToken("billing", func(tok *authv1alpha1.OpsnowToken) {
		tok.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{
			Labels:      map[string]string{"team": "a", "tier": "gold"},
			Annotations: map[string]string{"note": "x"},
		}
	})
	w.reconcile("billing")
	w.expectRequests(1)
	token := string(w.secret("billing").Data[authv1alpha1.SecretTokenKey])

	steps := []struct {
		name   string
		tmpl   authv1alpha1.SecretTemplate
		labels map[string]string // wanted template labels; absent ones must be gone
		notes  map[string]string
	}{
		{"value changed", authv1alpha1.SecretTemplate{Labels: map[string]string{"team": "b", "tier": "gold"}, Annotations: map[string]string{"note": "x"}},
			map[string]string{"team": "b", "tier": "gold"}, map[string]string{"note": "x"}},
		{"key dropped", authv1alpha1.SecretTemplate{Labels: map[string]string{"team": "b"}, Annotations: map[string]string{"note": "y"}},
			map[string]string{"team": "b"}, map[string]string{"note": "y"}},
		{"template removed", authv1alpha1.SecretTemplate{}, nil, nil},
	}
	for _, step := range steps {
		w.editToken("billing", func(tok *authv1alpha1.OpsnowToken) { tok.Spec.SecretTemplate = &step.tmpl })
		reads, writes := w.counters()
		w.reconcile("billing")
		w.expectRequests(1)
		if r, wr := w.counters(); r != reads || wr-writes != 2 {
			t.Errorf("%s: %d live reads and %d writes, want none and 2 (the Secret's metadata, the status)", step.name, r-reads, wr-writes)
		}
		s := w.secret("billing")
		if got := string(s.Data[authv1alpha1.SecretTokenKey]); got != token {
			t.Errorf("%s: token changed with the template", step.name)
		}
		for _, k := range []string{"team", "tier"} {
			if got, ok := s.Labels[k]; got != step.labels[k] || ok != (step.labels[k] != "") {
				t.Errorf("%s: label %s = %q (present %t), want %q", step.name, k, got, ok, step.labels[k])
			}
		}
		if got, ok := s.Annotations["note"]; got != step.notes["note"] || ok != (step.notes["note"] != "") {
			t.Errorf("%s: annotation note = %q (present %t), want %q", step.name, got, ok, step.notes["note"])
		}
		if step.labels == nil {
			for _, k := range []string{templateLabelsAnnotation, templateAnnotationsAnnotation, templateHashAnnotation} {
				if _, ok := s.Annotations[k]; ok {
					t.Errorf("%s: annotation %s left behind", step.name, k)
				}
			}
		}
		// The same template again writes nothing.
		_, writes = w.counters()
		w.reconcile("billing")
		if _, after := w.counters(); after != writes {
			t.Errorf("%s: a reconcile with nothing changed wrote %d times", step.name, after-writes)
		}
	}
}
