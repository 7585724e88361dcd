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

// Package localcluster runs the operator on one machine, without a real
// cluster: a throw-away control plane (envtest's kube-apiserver and etcd) with
// the CRDs installed and a kubeconfig file for kubectl, and the real manager
// binary as a separate process. The demo (hack/demo), the end-to-end tests
// (test/e2e), benchmarks (hack/bench) and the soak (hack/soak) share it, so
// they all run the operator the way a user does: a binary, flags, a
// kubeconfig and kubectl. For the soak, a Cluster can also kill and restart
// its API server and stall its etcd (KillAPIServer, StartAPIServer,
// PauseEtcd, ResumeEtcd).
//
// A typical session:
//
//	c, err := localcluster.Start(localcluster.Options{})
//	defer c.Stop()
//	bin, err := localcluster.BuildManager(ctx, filepath.Join(dir, "manager"))
//	m, err := localcluster.StartManager(localcluster.ManagerOptions{
//		Binary: bin, Kubeconfig: c.Kubeconfig, Output: logFile,
//		Args: []string{"--default-endpoint=" + url, "--health-probe-bind-address=" + addr},
//	})
//	defer m.Stop(10 * time.Second)
//	out, err := c.Kubectl(ctx, "get", "opsnowtokens")
package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// modulePath identifies the operator's go.mod when looking for the module root.
const modulePath = "github.com/opsnow-token-operator/opsnow-token-operator"

// DefaultStartTimeout bounds the start of each control-plane component. It is
// well above envtest's 20 s default because the control plane often starts
// while the manager binary compiles on the same, possibly small, machine.
const DefaultStartTimeout = 90 * time.Second

// Options configures Start.
type Options struct {
	// AssetsDir holds the kube-apiserver and etcd binaries. Empty means
	// $KUBEBUILDER_ASSETS, which `make test` and `make demo` set from
	// hack/envtest-assets.sh.
	AssetsDir string
	// Dir receives the kubeconfig file. Empty means a new temporary
	// directory, removed by Stop.
	Dir string
	// CRDDirs hold the CRD manifests to install. Empty means the module's
	// config/crd/bases.
	CRDDirs []string
	// StartTimeout bounds the start of each control-plane component; zero
	// means DefaultStartTimeout.
	StartTimeout time.Duration
}

// Cluster is a running local control plane.
type Cluster struct {
	// Config connects to the API server as the admin (group system:masters).
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file for the admin, for kubectl
	// and for the manager process (as $KUBECONFIG).
	Kubeconfig string
	// Dir is the directory holding Kubeconfig.
	Dir string

	env       *envtest.Environment
	removeDir bool

	// apiServer is a kube-apiserver started by StartAPIServer, with the
	// command line of the one KillAPIServer killed.
	apiServer     *exec.Cmd
	apiServerArgs []string
	etcdPaused    bool
}

// Start starts kube-apiserver and etcd, installs the CRDs and writes the
// admin kubeconfig. It takes about 5 s on a 2-core machine. The caller must
// call Stop, also when a later step fails, or the two processes outlive it.
func Start(opts Options) (*Cluster, error) {
	assets := opts.AssetsDir
	if assets == "" {
		assets = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if assets == "" {
		return nil, errors.New("no control-plane binaries: set KUBEBUILDER_ASSETS to a directory holding " +
			"kube-apiserver and etcd (hack/envtest-assets.sh prints one; `make test` and `make demo` set it)")
	}
	crdDirs := opts.CRDDirs
	if len(crdDirs) == 0 {
		root, err := ModuleRoot()
		if err != nil {
			return nil, err
		}
		crdDirs = []string{filepath.Join(root, "config", "crd", "bases")}
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}

	c := &Cluster{Dir: opts.Dir}
	if c.Dir == "" {
		dir, err := os.MkdirTemp("", "opsnow-localcluster-")
		if err != nil {
			return nil, fmt.Errorf("create kubeconfig directory: %w", err)
		}
		c.Dir, c.removeDir = dir, true
	}

	c.env = &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        crdDirs,
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: timeout,
	}
	cfg, err := c.env.Start()
	if err != nil {
		// envtest may have started etcd before the API server failed.
		_ = c.Stop()
		return nil, fmt.Errorf("start control plane from %s: %w", assets, err)
	}
	c.Config = cfg

	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	// The kubeconfig holds the admin's client key: readable by the owner only.
	if err := os.WriteFile(c.Kubeconfig, c.env.KubeConfig, 0o600); err != nil {
		_ = c.Stop()
		return nil, fmt.Errorf("write kubeconfig: %w", err)
	}
	return c, nil
}

// Stop stops the control plane and, if Start created it, removes Dir. It is
// safe to call more than once.
func (c *Cluster) Stop() error {
	var errs []error
	if c.env != nil {
		if err := c.stopFaults(); err != nil {
			errs = append(errs, err)
		}
		if err := c.env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop control plane: %w", err))
		}
		c.env = nil
	}
	if c.removeDir {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, err)
		}
		c.removeDir = false
	}
	return errors.Join(errs...)
}

// AddUser provisions a user authenticated by a client certificate, with the
// given name and groups, and writes a kubeconfig for it to Dir, named after
// the user. Use it to run the manager with exactly the permissions of a role
// bound to that user, instead of the admin's.
func (c *Cluster) AddUser(name string, groups ...string) (kubeconfig string, err error) {
	if c.env == nil {
		return "", errors.New("control plane is not running")
	}
	u, err := c.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return "", fmt.Errorf("add user %q: %w", name, err)
	}
	data, err := u.KubeConfig()
	if err != nil {
		return "", fmt.Errorf("kubeconfig of user %q: %w", name, err)
	}
	path := filepath.Join(c.Dir, "kubeconfig-"+strings.NewReplacer("/", "-", ":", "-").Replace(name))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", fmt.Errorf("write kubeconfig of user %q: %w", name, err)
	}
	return path, nil
}

// KubectlCommand returns a kubectl command against the cluster, as the admin.
// The binary is $KUBECTL, else kubectl from PATH.
func (c *Cluster) KubectlCommand(ctx context.Context, args ...string) *exec.Cmd {
	bin := os.Getenv("KUBECTL")
	if bin == "" {
		bin = "kubectl"
	}
	return exec.CommandContext(ctx, bin, append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
}

// Kubectl runs kubectl against the cluster and returns its standard output.
// On failure the error holds the command and kubectl's standard error.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := c.KubectlCommand(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// ModuleRoot returns the directory of the operator's go.mod, searching from
// the working directory upwards, so that it works from `go run` at the root
// as well as from a test in a sub-package.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s in the working directory or above", modulePath)
		}
		dir = parent
	}
}

// FreeAddr returns a loopback address with a port that was free a moment ago,
// for flags such as --health-probe-bind-address that must name a port the
// caller then connects to. Another process may take the port in between;
// that is unlikely enough for tests and demos.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", err
	}
	return addr, nil
}
