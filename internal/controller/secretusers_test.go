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
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// A Secret event reaches exactly the OpsnowTokens that read the Secret as
// their API key or write it as their target, through adds, spec changes
// and deletions (also those the informer saw only as a final state).
func TestSecretUsers(t *testing.T) {
	tok := func(name, key, target string) *authv1alpha1.OpsnowToken {
		return &authv1alpha1.OpsnowToken{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Spec: authv1alpha1.OpsnowTokenSpec{
				APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: key}, SecretName: target},
		}
	}
	u := newSecretUsers()
	h := u.handler()
	users := func(secret string) string {
		var names []string
		for _, k := range u.users(types.NamespacedName{Namespace: "ns", Name: secret}) {
			names = append(names, k.Name)
		}
		slices.Sort(names)
		return strings.Join(names, ",")
	}
	expect := func(step string, want map[string]string) {
		t.Helper()
		for secret, w := range want {
			if got := users(secret); got != w {
				t.Errorf("%s: users of %s: got %q, want %q", step, secret, got, w)
			}
		}
	}

	a, b, c := tok("a", "key", ""), tok("b", "key", "shared"), tok("c", "key", "shared")
	h.OnAdd(a, true)
	h.OnAdd(b, true)
	h.OnAdd(c, true)
	h.OnAdd(c, false) // a resync adds nothing twice
	expect("added", map[string]string{"key": "a,b,c", "a": "a", "shared": "b,c", "b": ""})

	b2 := tok("b", "other-key", "b-secret")
	h.OnUpdate(b, b2)
	expect("b changed both", map[string]string{"key": "a,c", "other-key": "b", "b-secret": "b", "shared": "c"})

	h.OnUpdate(b2, b2) // a status change: nothing moves
	expect("b's status changed", map[string]string{"other-key": "b", "b-secret": "b"})

	h.OnDelete(a)
	h.OnDelete(toolscache.DeletedFinalStateUnknown{Key: "ns/c", Obj: c})
	expect("a and c deleted", map[string]string{"key": "", "a": "", "shared": "", "other-key": "b"})

	self := tok("self", "same", "same")
	h.OnAdd(self, true)
	expect("a token whose target is its key", map[string]string{"same": "self"})
	h.OnDelete(self)
	h.OnDelete(b2)
	if len(u.m) != 0 {
		t.Errorf("after every delete: %d entries left, want none: %v", len(u.m), u.m)
	}
}
