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

// Package manifests holds the tests of the install artifacts: the kustomize
// overlays under config/ and the Helm chart under charts/. The tests render
// each of them, apply every rendered object to an envtest API server as a
// server-side dry run, run the manager's pod through the restricted Pod
// Security profile and its arguments through the manager's flag parser, and
// check that the chart agrees with config/ (CRD, RBAC rules, pod hardening,
// alerts) and that docs/metrics.md lists every metric and alert.
//
// They need kustomize, helm, kube-apiserver and etcd: `make test` passes
// KUSTOMIZE, HELM and KUBEBUILDER_ASSETS. Without them, the tests that need
// them skip and say so.
package manifests
