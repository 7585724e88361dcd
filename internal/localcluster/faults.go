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
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
)

// Control-plane faults, for soak tests: the API server killed and started
// again on the same port, certificates and etcd data, and etcd stalled. They
// find the processes envtest started by looking for children of this
// process in /proc, so they work on Linux only.

// apiServerStopTimeout bounds the wait for a killed API server to be gone.
const apiServerStopTimeout = 10 * time.Second

// KillAPIServer kills kube-apiserver with SIGKILL, as a crash would, and
// waits until it is gone; etcd keeps running with its data. StartAPIServer
// brings it back.
func (c *Cluster) KillAPIServer() error {
	if c.env == nil {
		return errors.New("control plane is not running")
	}
	if c.apiServer != nil {
		// A server this package restarted earlier.
		_ = c.apiServer.Process.Kill()
		_ = c.apiServer.Wait()
		c.apiServer = nil
		return nil
	}
	pid, args, err := childProcess("kube-apiserver")
	if err != nil {
		return err
	}
	c.apiServerArgs = args
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill kube-apiserver (pid %d): %w", pid, err)
	}
	// envtest waits for its child and so reaps it; until then it is a zombie.
	deadline := time.Now().Add(apiServerStopTimeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver (pid %d) still running %s after SIGKILL", pid, apiServerStopTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// StartAPIServer starts kube-apiserver again after KillAPIServer, with the
// flags it had (so the same port, certificates and etcd), and waits until
// it is ready or ctx ends.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	if c.env == nil {
		return errors.New("control plane is not running")
	}
	if len(c.apiServerArgs) == 0 {
		return errors.New("kube-apiserver was not killed by KillAPIServer")
	}
	if c.apiServer != nil {
		return errors.New("kube-apiserver is already running")
	}
	cmd := exec.Command(c.apiServerArgs[0], c.apiServerArgs[1:]...)
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	c.apiServer = cmd
	return waitReady(ctx, c.Config)
}

// waitReady polls the API server's /readyz until it answers 200.
func waitReady(ctx context.Context, cfg *rest.Config) error {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	hc.Timeout = time.Second
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(cfg.Host, "/")+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
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
			return fmt.Errorf("kube-apiserver not ready: %w (last: %v)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// PauseEtcd stops etcd with SIGSTOP: it keeps its connections but answers
// nothing until ResumeEtcd, as a stalled disk or a long pause would do.
// The caller must call ResumeEtcd; Stop does so too.
func (c *Cluster) PauseEtcd() error { return c.signalEtcd(syscall.SIGSTOP) }

// ResumeEtcd continues etcd after PauseEtcd.
func (c *Cluster) ResumeEtcd() error { return c.signalEtcd(syscall.SIGCONT) }

func (c *Cluster) signalEtcd(sig syscall.Signal) error {
	if c.env == nil {
		return errors.New("control plane is not running")
	}
	pid, _, err := childProcess("etcd")
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("send %s to etcd (pid %d): %w", sig, pid, err)
	}
	c.etcdPaused = sig == syscall.SIGSTOP
	return nil
}

// stopFaults undoes the faults before the control plane stops: etcd runs
// again, and an API server this package restarted is stopped (envtest
// stops only the one it started).
func (c *Cluster) stopFaults() error {
	var errs []error
	if c.etcdPaused {
		if err := c.ResumeEtcd(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.apiServer != nil {
		_ = c.apiServer.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.apiServer.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(apiServerStopTimeout):
			_ = c.apiServer.Process.Kill()
			<-done
		}
		c.apiServer = nil
	}
	return errors.Join(errs...)
}

// childProcess finds the one live child of this process whose executable
// is named name, and returns its pid and command line.
func childProcess(name string) (int, []string, error) {
	if runtime.GOOS != "linux" {
		return 0, nil, fmt.Errorf("finding %s needs /proc (Linux)", name)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, err
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, state, ok := procStat(pid)
		if !ok || ppid != self || state == "Z" {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) == name {
			return pid, args, nil
		}
	}
	return 0, nil, fmt.Errorf("no %s process started by this process", name)
}

// procStat returns the parent pid and state of pid from /proc/PID/stat.
func procStat(pid int) (ppid int, state string, ok bool) {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, "", false
	}
	// The command name is in parentheses and may itself hold spaces or ')'.
	i := strings.LastIndexByte(string(raw), ')')
	if i < 0 {
		return 0, "", false
	}
	fields := strings.Fields(string(raw[i+1:]))
	if len(fields) < 2 {
		return 0, "", false
	}
	ppid, err = strconv.Atoi(fields[1])
	return ppid, fields[0], err == nil
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	_, state, ok := procStat(pid)
	return ok && state != "Z"
}
