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

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// buildArgs build the manager as the image does (Dockerfile, hack/image):
// static, without local paths or symbol and debug tables, so that what is
// measured here is the binary a cluster runs.
var buildArgs = []string{"build", "-trimpath", "-ldflags=-s -w", "-buildvcs=false"}

// BuildManager compiles the manager (the main package at the module root)
// into the file out with the image's build flags. A warm Go build cache
// makes it take a few seconds; a cold one, a minute or more.
func BuildManager(ctx context.Context, out string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	args := append(append([]string{}, buildArgs...), "-o", out, ".")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(string(output)))
	}
	return nil
}

// ManagerOptions configures StartManager.
type ManagerOptions struct {
	// Binary is the manager executable, e.g. built by BuildManager.
	Binary string
	// Kubeconfig is passed to the manager as $KUBECONFIG.
	Kubeconfig string
	// Args are the manager's flags.
	Args []string
	// Output receives the manager's standard output and standard error
	// (its logs). Nil discards them.
	Output io.Writer
	// Env is added to the environment the manager inherits, e.g.
	// "HTTPS_PROXY=...".
	Env []string
}

// Manager is a manager binary running as a child process.
type Manager struct {
	cmd  *exec.Cmd
	done chan struct{}

	mu  sync.Mutex
	err error // result of Wait, valid once done is closed
}

// StartManager starts the manager binary as a child process. The child runs
// in its own process group, so that a Ctrl-C in the terminal reaches only the
// parent, which then stops the manager in its own order (Stop); on Linux the
// kernel also sends it SIGTERM if the parent dies without stopping it.
func StartManager(opts ManagerOptions) (*Manager, error) {
	if opts.Binary == "" {
		return nil, errors.New("no manager binary given")
	}
	cmd := exec.Command(opts.Binary, opts.Args...)
	cmd.Env = append(os.Environ(), opts.Env...)
	if opts.Kubeconfig != "" {
		cmd.Env = append(cmd.Env, "KUBECONFIG="+opts.Kubeconfig)
	}
	cmd.Stdout, cmd.Stderr = opts.Output, opts.Output
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start manager %s: %w", opts.Binary, err)
	}
	m := &Manager{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		m.mu.Lock()
		m.err = err
		m.mu.Unlock()
		close(m.done)
	}()
	return m, nil
}

// PID returns the process ID of the manager, e.g. to read
// /proc/PID/status for its memory use.
func (m *Manager) PID() int { return m.cmd.Process.Pid }

// Done is closed when the manager process has exited.
func (m *Manager) Done() <-chan struct{} { return m.done }

// Exited reports whether the manager has exited and, if so, how: nil for
// exit code 0, else an *exec.ExitError (or an error copying its output).
func (m *Manager) Exited() (bool, error) {
	select {
	case <-m.done:
		m.mu.Lock()
		defer m.mu.Unlock()
		return true, m.err
	default:
		return false, nil
	}
}

// ExitCode returns the manager's exit code, or -1 if it is still running or
// was ended by a signal.
func (m *Manager) ExitCode() int {
	select {
	case <-m.done:
		return m.cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

// Signal sends sig to the manager process.
func (m *Manager) Signal(sig os.Signal) error {
	if err := m.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// Stop asks the manager to stop with SIGTERM, as the kubelet does, and waits
// up to timeout for it to exit; then it kills it. It returns nil only if the
// manager exited with code 0 in time (a graceful stop). It is safe to call
// more than once and after the manager exited on its own.
func (m *Manager) Stop(timeout time.Duration) error {
	if err := m.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("send SIGTERM to manager (pid %d): %w", m.PID(), err)
	}
	select {
	case <-m.done:
	case <-time.After(timeout):
		_ = m.cmd.Process.Kill()
		<-m.done
		return fmt.Errorf("manager (pid %d) did not stop within %s of SIGTERM; killed it", m.PID(), timeout)
	}
	_, err := m.Exited()
	if err != nil {
		return fmt.Errorf("manager (pid %d) stopped with %w", m.PID(), err)
	}
	return nil
}

// WaitHealthy polls http://addr/healthz (addr as given to
// --health-probe-bind-address) until it answers 200. It fails at once if the
// manager exits meanwhile, and when ctx ends.
func (m *Manager) WaitHealthy(ctx context.Context, addr string) error {
	url := "http://" + addr + "/healthz"
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if exited, err := m.Exited(); exited {
			return fmt.Errorf("manager exited before %s answered: %v", url, err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy: %w (last: %v)", url, ctx.Err(), last)
		case <-m.done:
		case <-tick.C:
		}
	}
}
