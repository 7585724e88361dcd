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

package localcluster

import "syscall"

// childProcAttr puts the manager in its own process group and has the kernel
// send it SIGTERM when the parent dies, so that a crashed demo or test
// leaves no manager running. (Pdeathsig fires when the parent's OS thread
// that started the child exits; the Go runtime keeps its threads for the
// life of the process unless a goroutine exits while locked to one, which
// this package never does.)
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
