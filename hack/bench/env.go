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

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/localcluster"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

const (
	managerStopTimeout = 30 * time.Second
	healthTimeout      = 90 * time.Second
	metricsTimeout     = 10 * time.Second
)

// env is everything a benchmark run starts: the control plane, the token
// server, the manager process, and the clients that drive and observe them.
type env struct {
	cfg     config
	out     io.Writer
	logPath string
	binary  string

	cluster   *localcluster.Cluster
	k8s       client.Client
	clientset *kubernetes.Clientset
	tracker   *tracker

	server   *tokenserver.Server
	meter    *meter
	http     *http.Server
	endpoint string

	manager     *localcluster.Manager
	managerRate float64
	metricsAddr string
	healthAddr  string
	pprofAddr   string
	// heapDir receives heap profiles of the manager (saveHeapProfile).
	heapDir string
	// chartEnv is the manager's environment as the Helm chart sets it.
	chartEnv []string

	// own counts the benchmark's own writes by resource, as apiWrites
	// keys them, so that they can be told apart from the manager's.
	ownMu sync.Mutex
	own   map[string]float64
}

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(authv1alpha1.AddToScheme(s))
	return s
}

// start brings up the control plane, the token server and the clients,
// and builds the manager binary meanwhile.
func (e *env) start(ctx context.Context, dir string) error {
	e.own = map[string]float64{}
	e.binary = filepath.Join(dir, "manager")
	root, err := localcluster.ModuleRoot()
	if err != nil {
		return err
	}
	if e.chartEnv, err = chartEnv(root); err != nil {
		return err
	}
	e.heapDir = filepath.Join(root, "bin", "bench-heap")
	built := make(chan error, 1)
	go func() { built <- localcluster.BuildManager(ctx, e.binary) }()

	e.logf("Starting the control plane and building the manager")
	e.cluster, err = localcluster.Start(localcluster.Options{Dir: dir})
	if berr := <-built; err == nil {
		err = berr
	}
	if err != nil {
		return err
	}

	restCfg := *e.cluster.Config
	// The benchmark creates thousands of objects at once; the API server's
	// priority and fairness, not the client, should be what limits it.
	restCfg.QPS, restCfg.Burst = -1, -1
	scheme := newScheme()
	base, err := client.NewWithWatch(&restCfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("create client: %w", err)
	}
	e.k8s = interceptor.NewClient(base, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				e.ownMu.Lock()
				e.own[secretReads]++
				e.ownMu.Unlock()
			}
			return c.Get(ctx, key, obj, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			e.countOwn(obj, "")
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			e.countOwn(obj, "")
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			e.countOwn(obj, "")
			return c.Patch(ctx, obj, patch, opts...)
		},
	})
	if e.clientset, err = kubernetes.NewForConfig(&restCfg); err != nil {
		return fmt.Errorf("create clientset: %w", err)
	}
	if e.tracker, err = startTracker(ctx, &restCfg, scheme); err != nil {
		return err
	}
	return e.startTokenServer()
}

// countOwn records one write of the benchmark's own.
func (e *env) countOwn(obj client.Object, subresource string) {
	var key string
	switch obj.(type) {
	case *corev1.Secret:
		key = "secrets"
	case *authv1alpha1.OpsnowToken:
		key = "opsnowtokens"
	default:
		return
	}
	if subresource != "" {
		key += "/" + subresource
	}
	e.ownMu.Lock()
	e.own[key]++
	e.ownMu.Unlock()
}

func (e *env) startTokenServer() error {
	e.server = tokenserver.New(tokenserver.Options{Latency: e.cfg.latency})
	e.meter = newMeter(e.server)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the token server: %w", err)
	}
	e.endpoint = "http://" + ln.Addr().String()
	e.http = &http.Server{Handler: e.meter, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = e.http.Serve(ln) }()
	e.logf("Token server on %s, latency %s", e.endpoint, e.cfg.latency)
	return nil
}

// stop stops whatever start and startManager started, the manager first.
func (e *env) stop() error {
	var errs []error
	if e.manager != nil {
		if err := e.manager.Stop(managerStopTimeout); err != nil {
			errs = append(errs, err)
		}
		e.manager = nil
	}
	if e.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = e.http.Shutdown(ctx)
		cancel()
	}
	if e.tracker != nil {
		e.tracker.stop()
	}
	if e.cluster != nil {
		if err := e.cluster.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ensureManager makes sure the manager runs with --token-request-rate=rate,
// restarting it if it runs with another rate.
func (e *env) ensureManager(ctx context.Context, rate float64) error {
	if e.manager != nil && e.managerRate == rate {
		return nil
	}
	if err := e.stopManager(); err != nil {
		return err
	}
	_, err := e.startManager(ctx, rate)
	return err
}

// stopManager stops the manager, gracefully if it can.
func (e *env) stopManager() error {
	if e.manager == nil {
		return nil
	}
	err := e.manager.Stop(managerStopTimeout)
	e.manager = nil
	if err != nil {
		return fmt.Errorf("stop manager: %w", err)
	}
	return nil
}

// startManager starts the manager binary with the benchmark's flags and
// waits until its health endpoint answers. It returns when it started.
func (e *env) startManager(ctx context.Context, rate float64) (time.Time, error) {
	var err error
	if e.metricsAddr, err = localcluster.FreeAddr(); err != nil {
		return time.Time{}, err
	}
	if e.healthAddr, err = localcluster.FreeAddr(); err != nil {
		return time.Time{}, err
	}
	if e.pprofAddr, err = localcluster.FreeAddr(); err != nil {
		return time.Time{}, err
	}
	args := []string{
		"--pprof-bind-address=" + e.pprofAddr,
		"--default-endpoint=" + e.endpoint,
		"--metrics-bind-address=" + e.metricsAddr,
		"--metrics-secure=false",
		"--health-probe-bind-address=" + e.healthAddr,
		"--token-request-rate=" + strconv.FormatFloat(rate, 'f', -1, 64),
	}
	args = append(args, strings.Fields(e.cfg.managerArgs)...)

	logFile, err := os.OpenFile(e.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return time.Time{}, err
	}
	// The child has its own descriptor of the file.
	defer func() { _ = logFile.Close() }()
	// The chart's environment first: -manager-env overrides it.
	env := append(append([]string{}, e.chartEnv...), strings.Fields(e.cfg.managerEnv)...)
	fmt.Fprintf(logFile, "=== %s %s manager %s\n", time.Now().Format(time.RFC3339), strings.Join(env, " "), strings.Join(args, " "))

	started := time.Now()
	e.manager, err = localcluster.StartManager(localcluster.ManagerOptions{
		Binary:     e.binary,
		Kubeconfig: e.cluster.Kubeconfig,
		Args:       args,
		Env:        env,
		Output:     logFile,
	})
	if err != nil {
		return time.Time{}, err
	}
	e.managerRate = rate
	hctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	if err := e.manager.WaitHealthy(hctx, e.healthAddr); err != nil {
		return time.Time{}, fmt.Errorf("%w (manager log: %s)", err, e.logPath)
	}
	e.logf("Manager running (pid %d, --token-request-rate=%g)", e.manager.PID(), rate)
	return started, nil
}

// get fetches url with a timeout and returns the body of a 200 answer.
func get(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, metricsTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, nil
}

// managerMetrics reads the manager's metrics endpoint.
func (e *env) managerMetrics(ctx context.Context) ([]sample, error) {
	body, err := get(ctx, "http://"+e.metricsAddr+"/metrics")
	if err != nil {
		return nil, fmt.Errorf("read manager metrics: %w", err)
	}
	return parseMetrics(body), nil
}

// usage is the manager's resource use at one moment.
type usage struct {
	memory
	Heap float64 // bytes, go_memstats_heap_alloc_bytes
	CPU  float64 // seconds of CPU time since the process started
	// Reconciles is controller_runtime_reconcile_total of the controller.
	Reconciles float64
}

func (e *env) usage(ctx context.Context) (usage, error) {
	var u usage
	var err error
	pid := e.manager.PID()
	if u.memory, err = procStatus(pid); err != nil {
		return u, err
	}
	if u.CPU, err = procCPU(pid); err != nil {
		return u, err
	}
	m, err := e.managerMetrics(ctx)
	if err != nil {
		return u, err
	}
	u.Heap = sum(m, "go_memstats_heap_alloc_bytes", nil)
	u.Reconciles = sum(m, "controller_runtime_reconcile_total", func(l map[string]string) bool {
		return l["controller"] == "opsnowtoken"
	})
	return u, nil
}

// writes is a snapshot of API-server write counts: all of them, and the
// benchmark's own.
type writes struct {
	all, own map[string]float64
}

func (e *env) writes(ctx context.Context) (writes, error) {
	ctx, cancel := context.WithTimeout(ctx, metricsTimeout)
	defer cancel()
	body, err := e.clientset.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return writes{}, fmt.Errorf("read API-server metrics: %w", err)
	}
	w := writes{all: apiWrites(parseMetrics(body)), own: map[string]float64{}}
	e.ownMu.Lock()
	for k, v := range e.own {
		w.own[k] = v
	}
	e.ownMu.Unlock()
	return w, nil
}

// managerWrites returns the writes between two snapshots that were not the
// benchmark's own, by resource.
func managerWrites(before, after writes) map[string]float64 {
	out := map[string]float64{}
	for _, k := range append(writeResources, secretReads) {
		out[k] = (after.all[k] - before.all[k]) - (after.own[k] - before.own[k])
	}
	return out
}

func totalWrites(w map[string]float64) float64 {
	t := 0.0
	for _, k := range writeResources {
		t += w[k]
	}
	return t
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.out, "%s  %s\n", time.Now().Format(time.TimeOnly), fmt.Sprintf(format, args...))
}
