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
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// tokenMemory is what the reconciler keeps about one OpsnowToken between
// reconciles. None of it is needed for correctness after a restart: what
// must survive one (the token, the inputs it was issued for, the refresh
// request it answered, the failure count and retry time) lives in the
// target Secret and in status. Losing this costs at most one extra API-key
// read, one read of the target Secret's data, or one more token request for
// a minted token whose write failed.
type tokenMemory struct {
	// apiKeyMatchedVersion is an API-key Secret resourceVersion whose key
	// was read and found to be the one the held token was issued for, so
	// that edits of that Secret's labels do not cost a read per reconcile.
	apiKeyMatchedVersion string
	// failedInputs fingerprints the inputs of the last failed attempt
	// (inputsFingerprint): a retry waits for its backoff unless they change.
	failedInputs string
	// failedReason is the Ready reason of the last failed attempt, which
	// status does not show while the held token keeps Ready=True.
	failedReason string
	// pending is a token minted by an attempt whose Secret write failed:
	// the retry writes it again instead of asking OpsNow for another.
	pending *heldToken
	// statusVersion is the resourceVersion returned by the last status
	// patch; a cached OpsnowToken older than that lacks the patch.
	statusVersion string
	// secretVersion is the target Secret's resourceVersion whose content
	// the operator wrote or read and found intact: while the cache shows
	// that version, the Secret's data need not be read again.
	secretVersion string
}

// memories holds the tokenMemory of every OpsnowToken, keyed by namespace and name.
type memories struct {
	mu sync.Mutex
	m  map[types.NamespacedName]tokenMemory
}

func newMemories() *memories {
	return &memories{m: map[types.NamespacedName]tokenMemory{}}
}

// get returns a copy of key's memory; the zero value when there is none.
func (s *memories) get(key types.NamespacedName) tokenMemory {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[key]
}

// update changes key's memory with f, dropping it when nothing is left.
func (s *memories) update(key types.NamespacedName, f func(*tokenMemory)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.m[key]
	f(&m)
	if m == (tokenMemory{}) {
		delete(s.m, key)
		return
	}
	s.m[key] = m
}

// forget drops key's memory.
func (s *memories) forget(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
}
