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
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

func TestEndpointRecovery(t *testing.T) {
	const a, b = "https://a.example", "https://b.example"
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	key := func(name string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: name} }
	names := func(keys []types.NamespacedName) []string {
		var out []string
		for _, k := range keys {
			out = append(out, k.Name)
		}
		slices.Sort(out)
		return out
	}

	e := newEndpointRecovery()
	e.failed(a, key("t1"))
	e.failed(a, key("t2"))
	e.failed(a, key("t3"))
	e.failed(b, key("t4"))
	e.forget(key("t3")) // deleted, or failed for another reason since

	// The first success at a wakes the others waiting on a, not those on b.
	got := names(e.succeeded(a, key("t1"), t0))
	if want := []string{"t2"}; !slices.Equal(got, want) {
		t.Fatalf("woken by the first success at a: got %v, want %v", got, want)
	}
	if !e.isWoken(key("t2")) || e.isWoken(key("t1")) || e.isWoken(key("t4")) {
		t.Errorf("woken: t1 %t, t2 %t, t4 %t; want false, true, false",
			e.isWoken(key("t1")), e.isWoken(key("t2")), e.isWoken(key("t4")))
	}
	// A further success wakes nobody: the waiting set was handed over.
	if got := e.succeeded(a, key("t2"), t0.Add(time.Second)); len(got) != 0 {
		t.Errorf("second success at a: woke %v, want nobody", names(got))
	}
	if e.isWoken(key("t2")) {
		t.Error("t2 still woken after its own success")
	}

	// Failing again right after a wake-up: the next success within
	// recoveryWakeInterval wakes nobody, so flapping cannot undo backoff.
	e.failed(a, key("t2"))
	if got := e.succeeded(a, key("t1"), t0.Add(recoveryWakeInterval-time.Second)); len(got) != 0 {
		t.Errorf("success within %s of the last wake-up: woke %v, want nobody", recoveryWakeInterval, names(got))
	}
	if got := names(e.succeeded(a, key("t1"), t0.Add(recoveryWakeInterval))); !slices.Equal(got, []string{"t2"}) {
		t.Errorf("success %s after the last wake-up: woke %v, want [t2]", recoveryWakeInterval, got)
	}

	// A woken token that fails again waits for its backoff once more.
	e.failed(a, key("t2"))
	if e.isWoken(key("t2")) {
		t.Error("t2 still woken after failing again")
	}
	if got := names(e.succeeded(b, key("t5"), t0)); !slices.Equal(got, []string{"t4"}) {
		t.Errorf("first success at b: woke %v, want [t4]", got)
	}
}

func TestEventRefLeavesOutResourceVersion(t *testing.T) {
	tok := &authv1alpha1.OpsnowToken{ObjectMeta: metav1.ObjectMeta{
		Namespace: "ns", Name: "billing", UID: "uid-1", ResourceVersion: "42",
	}}
	ref := eventRef(tok)
	if ref.ResourceVersion != "" {
		t.Errorf("resourceVersion: got %q, want none (it would split event series)", ref.ResourceVersion)
	}
	if ref.Kind != "OpsnowToken" || ref.Name != "billing" || ref.Namespace != "ns" || ref.UID != "uid-1" ||
		!strings.HasPrefix(ref.APIVersion, "auth.opsnow.io/") {
		t.Errorf("reference: got %+v, want the OpsnowToken ns/billing with its UID", ref)
	}
}
