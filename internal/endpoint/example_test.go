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
	"fmt"

	"github.com/opsnow-token-operator/opsnow-token-operator/internal/endpoint"
)

// The manager builds its allowlist once from the built-ins, the default
// endpoint and --allowed-endpoints, and the controller asks it before every
// token request.
func ExampleAllowlist_Allow() {
	entries := append(endpoint.BuiltIn(), endpoint.Default)
	entries = append(entries, endpoint.ParseList(" http://opsnow-mock.test.svc.cluster.local.:8080, ")...)
	allow, err := endpoint.NewAllowlist(entries...)
	if err != nil {
		fmt.Println(err)
		return
	}

	for _, spec := range []string{
		"HTTPS://API.OpsNow.IO:443/",
		"https://api.opsnow.io/other/service",
		"http://opsnow-mock.test.svc.cluster.local.:8080/",
		"http://opsnow-mock.test.svc.cluster.local:8080",
		"http://api.opsnow.io",
		"https://api.opsnow.io.evil.example",
		"https://api.opsnow.io@evil.example",
	} {
		u, err := allow.Allow(spec)
		switch {
		case errors.Is(err, endpoint.ErrNotAllowed):
			fmt.Println("refused:", err)
		case errors.Is(err, endpoint.ErrInvalid):
			fmt.Println("invalid:", err)
		default:
			fmt.Println("call:", u)
		}
	}
	// Output:
	// call: https://api.opsnow.io
	// refused: endpoint not allowed: https://api.opsnow.io/other/service is not in the operator's allowlist
	// call: http://opsnow-mock.test.svc.cluster.local.:8080
	// refused: endpoint not allowed: http://opsnow-mock.test.svc.cluster.local:8080 is not in the operator's allowlist
	// refused: endpoint not allowed: http://api.opsnow.io is not in the operator's allowlist
	// refused: endpoint not allowed: https://api.opsnow.io.evil.example is not in the operator's allowlist
	// invalid: invalid endpoint: must not contain userinfo (@)
}

func ExampleNewAllowlist() {
	_, err := endpoint.NewAllowlist(endpoint.ParseList("https://opsnow.internal,https://admin:hunter2@proxy.internal")...)
	fmt.Println(err)
	// Output:
	// allowed endpoint "https://REDACTED@proxy.internal": invalid endpoint: must not contain userinfo (@)
}

func ExampleAllowlist_Entries() {
	allow, _ := endpoint.NewAllowlist("https://api.opsnow.io", "HTTPS://api.opsnow.io:443/", "http://127.0.0.1:80/", "https://Opsnow.Internal./")
	fmt.Println(allow.Entries())
	// Output:
	// [https://api.opsnow.io http://127.0.0.1 https://opsnow.internal.]
}
