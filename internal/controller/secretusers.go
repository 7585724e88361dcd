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
	"sync"

	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// secretUsers maps a Secret to the OpsnowTokens that read it as their API
// key or write it as their target, so that a Secret event reaches them.
// It does the work of two field indexes at a tenth of their memory: a
// field index keeps a set (a map) per value, twice (per namespace and for
// all), which is 1.5 KiB a token when, as usual, every token names Secrets
// of its own; here a Secret used by one token costs one map entry.
type secretUsers struct {
	mu sync.RWMutex
	m  map[types.NamespacedName]tokenNames
}

// tokenNames are the names of the OpsnowTokens, in the Secret's namespace,
// that use a Secret: one in all but rare cases.
type tokenNames struct {
	first string
	more  []string
}

func newSecretUsers() *secretUsers {
	return &secretUsers{m: map[types.NamespacedName]tokenNames{}}
}

// secretsOf returns the Secrets tok uses: its API-key Secret and its target.
func secretsOf(tok *authv1alpha1.OpsnowToken) [2]types.NamespacedName {
	return [2]types.NamespacedName{
		{Namespace: tok.Namespace, Name: tok.Spec.APIKeySecretRef.Name},
		{Namespace: tok.Namespace, Name: targetSecretName(tok.Spec.SecretName, tok.Name)},
	}
}

// users returns the OpsnowTokens that use the Secret key.
func (u *secretUsers) users(key types.NamespacedName) []types.NamespacedName {
	u.mu.RLock()
	defer u.mu.RUnlock()
	names, ok := u.m[key]
	if !ok {
		return nil
	}
	out := []types.NamespacedName{{Namespace: key.Namespace, Name: names.first}}
	for _, n := range names.more {
		out = append(out, types.NamespacedName{Namespace: key.Namespace, Name: n})
	}
	return out
}

func (u *secretUsers) add(tok *authv1alpha1.OpsnowToken) {
	u.mu.Lock()
	defer u.mu.Unlock()
	refs := secretsOf(tok)
	for i, ref := range refs {
		if i == 1 && ref == refs[0] {
			break // a token whose target is its API-key Secret: refused later, counted once
		}
		names, ok := u.m[ref]
		switch {
		case !ok:
			u.m[ref] = tokenNames{first: tok.Name}
		case names.first == tok.Name || slices.Contains(names.more, tok.Name):
		default:
			names.more = append(names.more, tok.Name)
			u.m[ref] = names
		}
	}
}

func (u *secretUsers) remove(tok *authv1alpha1.OpsnowToken) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, ref := range secretsOf(tok) {
		names, ok := u.m[ref]
		if !ok {
			continue
		}
		if names.first == tok.Name {
			if len(names.more) == 0 {
				delete(u.m, ref)
				continue
			}
			names.first, names.more = names.more[0], names.more[1:]
		} else {
			names.more = slices.DeleteFunc(names.more, func(n string) bool { return n == tok.Name })
		}
		if len(names.more) == 0 {
			names.more = nil
		}
		u.m[ref] = names
	}
}

// handler keeps the map in step with an OpsnowToken informer.
func (u *secretUsers) handler() toolscache.ResourceEventHandler {
	token := func(obj any) *authv1alpha1.OpsnowToken {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		tok, _ := obj.(*authv1alpha1.OpsnowToken)
		return tok
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if tok := token(obj); tok != nil {
				u.add(tok)
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			old, tok := token(oldObj), token(newObj)
			if old == nil || tok == nil || secretsOf(old) == secretsOf(tok) {
				return
			}
			u.remove(old)
			u.add(tok)
		},
		DeleteFunc: func(obj any) {
			if tok := token(obj); tok != nil {
				u.remove(tok)
			}
		},
	}
}
