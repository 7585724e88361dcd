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
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/localcluster"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

const (
	// leaseName and leaseNamespace locate the managers' leader-election Lease.
	leaseName      = "opsnow-token-operator.auth.opsnow.io"
	leaseNamespace = "default"
	// restartDelay is how long a dead replica stays down before it is
	// started again, as a kubelet restarts a container.
	restartDelay   = 2 * time.Second
	healthTimeout  = 90 * time.Second
	stopTimeout    = 30 * time.Second
	requestTimeout = 3 * time.Second
)

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(authv1alpha1.AddToScheme(s))
	return s
}

// env is what a soak run starts: the control plane, the token server and
// two manager replicas, and the client that drives and observes them.
type env struct {
	cfg    config
	out    io.Writer
	dir    string
	binary string

	cluster *localcluster.Cluster
	k8s     client.Client

	server   *tokenserver.Server
	http     *http.Server
	endpoint string
	upstream *upstream

	mu       sync.Mutex
	replicas []*replica
	// superviseCtx ends the supervisors' restarts when the run stops.
	superviseCtx    context.Context
	stopSupervisors context.CancelFunc
	wg              sync.WaitGroup
}

// upstream wraps the token server: it logs every token request with the
// digest of its key and its status, and can kill the leader right after a
// token was handed out, before the manager writes it to its Secret.
type upstream struct {
	next http.Handler

	mu       sync.Mutex
	log      []request
	afterOne func() // armed by the mid-refresh kill; run once after the next token answer
}

// request is one token request as the upstream saw it.
type request struct {
	At     time.Time
	Status int
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Hijack lets the token server's disconnect fault close the connection.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked")
	}
	return hj.Hijack()
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != tokenserver.TokenPath {
		u.next.ServeHTTP(w, r)
		return
	}
	at := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	u.next.ServeHTTP(sw, r)
	u.mu.Lock()
	u.log = append(u.log, request{At: at, Status: sw.status})
	var after func()
	if sw.status == http.StatusOK {
		after, u.afterOne = u.afterOne, nil
	}
	u.mu.Unlock()
	if after != nil {
		// The manager has its token on the wire but has not written it.
		sw.Flush()
		after()
	}
}

// armAfterAnswer runs f once, right after the next token is handed out.
func (u *upstream) armAfterAnswer(f func()) {
	u.mu.Lock()
	u.afterOne = f
	u.mu.Unlock()
}

// disarm drops an armed function that has not run; it reports whether there was one.
func (u *upstream) disarm() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	armed := u.afterOne != nil
	u.afterOne = nil
	return armed
}

func (u *upstream) requests() []request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]request(nil), u.log...)
}

// replica is one manager process, restarted whenever it exits, as a
// Deployment's pod would be.
type replica struct {
	name        string
	healthAddr  string
	metricsAddr string
	logPath     string

	mu       sync.Mutex
	mgr      *localcluster.Manager
	killed   bool // the last exit was caused by the soak
	healthy  bool // started and answering its health endpoint
	restarts int  // exits the soak did not cause
	starts   int
}

func (e *env) start(ctx context.Context) error {
	e.binary = filepath.Join(e.dir, "manager")
	built := make(chan error, 1)
	go func() { built <- localcluster.BuildManager(ctx, e.binary) }()
	e.logf("Starting the control plane and building the manager")
	var err error
	e.cluster, err = localcluster.Start(localcluster.Options{Dir: e.dir})
	if berr := <-built; err == nil {
		err = berr
	}
	if err != nil {
		return err
	}
	cfg := *e.cluster.Config
	cfg.QPS, cfg.Burst = -1, -1
	cfg.Timeout = requestTimeout
	if e.k8s, err = client.New(&cfg, client.Options{Scheme: newScheme()}); err != nil {
		return fmt.Errorf("create client: %w", err)
	}

	e.server = tokenserver.New(tokenserver.Options{Lifetime: e.cfg.lifetime, Latency: e.cfg.latency})
	e.upstream = &upstream{next: e.server}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the token server: %w", err)
	}
	e.endpoint = "http://" + ln.Addr().String()
	e.http = &http.Server{Handler: e.upstream, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = e.http.Serve(ln) }()
	e.logf("Token server on %s, token lifetime %s", e.endpoint, e.cfg.lifetime)
	return nil
}

// startReplicas starts the two replicas, the first one alone until it leads,
// so that which one leads first is known.
func (e *env) startReplicas(ctx context.Context) error {
	e.superviseCtx, e.stopSupervisors = context.WithCancel(ctx)
	ctx = e.superviseCtx
	for i, name := range []string{"a", "b"} {
		r := &replica{name: name, logPath: filepath.Join(e.dir, "manager-"+name+".log")}
		var err error
		if r.healthAddr, err = localcluster.FreeAddr(); err != nil {
			return err
		}
		if r.metricsAddr, err = localcluster.FreeAddr(); err != nil {
			return err
		}
		e.mu.Lock()
		e.replicas = append(e.replicas, r)
		e.mu.Unlock()
		if err := e.launch(ctx, r); err != nil {
			return err
		}
		e.wg.Add(1)
		go e.supervise(ctx, r)
		if i == 0 {
			if _, err := e.waitLeader(ctx, e.cfg.leaseDuration+30*time.Second); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *env) managerArgs(r *replica) []string {
	return append([]string{
		"--default-endpoint=" + e.endpoint,
		"--watch-namespaces=" + namespace,
		"--leader-elect",
		"--leader-election-namespace=" + leaseNamespace,
		"--leader-election-id=" + leaseName,
		"--leader-elect-lease-duration=" + e.cfg.leaseDuration.String(),
		"--leader-elect-renew-deadline=" + e.cfg.renewDeadline.String(),
		"--leader-elect-retry-period=" + e.cfg.retryPeriod.String(),
		"--exchange-timeout=" + e.cfg.exchangeTimeout.String(),
		"--health-probe-bind-address=" + r.healthAddr,
		"--metrics-bind-address=" + r.metricsAddr,
		"--metrics-secure=false",
	}, strings.Fields(e.cfg.managerArgs)...)
}

// launch starts r's manager process and waits until it is healthy.
func (e *env) launch(ctx context.Context, r *replica) error {
	logFile, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = logFile.Close() }() // the child has its own descriptor
	args := e.managerArgs(r)
	fmt.Fprintf(logFile, "=== %s manager %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	m, err := localcluster.StartManager(localcluster.ManagerOptions{
		Binary: e.binary, Kubeconfig: e.cluster.Kubeconfig, Args: args, Output: logFile,
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.mgr, r.killed, r.healthy = m, false, false
	r.starts++
	r.mu.Unlock()
	hctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	if err := m.WaitHealthy(hctx, r.healthAddr); err != nil {
		return fmt.Errorf("replica %s: %w (log: %s)", r.name, err, r.logPath)
	}
	r.mu.Lock()
	r.healthy = r.mgr == m
	r.mu.Unlock()
	return nil
}

// waitStandby waits until every replica runs and is healthy, and then a
// little longer for its caches to sync, so that a leader kill has a
// standby to fail over to, as with two pods.
func (e *env) waitStandby(ctx context.Context) error {
	deadline := time.Now().Add(healthTimeout)
	for {
		all := true
		e.mu.Lock()
		for _, r := range e.replicas {
			r.mu.Lock()
			exited, _ := r.mgr.Exited()
			all = all && r.healthy && !exited
			r.mu.Unlock()
		}
		e.mu.Unlock()
		if all {
			sleep(ctx, 2*time.Second)
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("a replica is not running %s after the last fault", healthTimeout)
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// supervise starts r again whenever it exits, until the run stops.
func (e *env) supervise(ctx context.Context, r *replica) {
	defer e.wg.Done()
	for {
		r.mu.Lock()
		m := r.mgr
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-m.Done():
		}
		r.mu.Lock()
		if !r.killed {
			r.restarts++
			e.logf("Replica %s exited by itself (%v); restarting it", r.name, exitOf(m))
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(restartDelay):
		}
		for attempt := 1; ; attempt++ {
			err := e.launch(ctx, r)
			if err == nil || ctx.Err() != nil {
				break
			}
			e.logf("Replica %s did not start (attempt %d): %v", r.name, attempt, err)
			r.mu.Lock()
			_ = r.mgr.Signal(syscall.SIGKILL)
			<-r.mgr.Done()
			r.mu.Unlock()
			if attempt == 5 {
				return
			}
			time.Sleep(restartDelay)
		}
	}
}

func exitOf(m *localcluster.Manager) error {
	_, err := m.Exited()
	return err
}

// leader returns the replica whose metrics say it leads, or nil.
func (e *env) leader(ctx context.Context) *replica {
	e.mu.Lock()
	replicas := append([]*replica(nil), e.replicas...)
	e.mu.Unlock()
	for _, r := range replicas {
		if leads(ctx, r.metricsAddr) {
			return r
		}
	}
	return nil
}

// leads reads controller-runtime's leader_election_master_status gauge.
func leads(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "leader_election_master_status{") && strings.Contains(line, `name="`+leaseName+`"`) {
			return strings.HasSuffix(line, " 1")
		}
	}
	return false
}

// waitLeader waits until a replica leads.
func (e *env) waitLeader(ctx context.Context, timeout time.Duration) (*replica, error) {
	deadline := time.Now().Add(timeout)
	for {
		if r := e.leader(ctx); r != nil {
			return r, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no replica leads after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// signal sends sig to r's current process, marking the exit as the soak's doing.
func (r *replica) signal(sig syscall.Signal) (pid int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.killed, r.healthy = true, false
	return r.mgr.PID(), r.mgr.Signal(sig)
}

// lease reads the leader-election Lease.
func (e *env) lease(ctx context.Context) (*coordinationv1.Lease, error) {
	var l coordinationv1.Lease
	err := e.k8s.Get(ctx, client.ObjectKey{Namespace: leaseNamespace, Name: leaseName}, &l)
	return &l, err
}

func holder(l *coordinationv1.Lease) string {
	if l == nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// stop stops the replicas (SIGTERM, as a rollout does), then the rest.
func (e *env) stop() error {
	var errs []error
	if e.stopSupervisors != nil {
		e.stopSupervisors()
	}
	e.wg.Wait()
	e.mu.Lock()
	replicas := append([]*replica(nil), e.replicas...)
	e.mu.Unlock()
	for _, r := range replicas {
		r.mu.Lock()
		m := r.mgr
		r.mu.Unlock()
		if m == nil {
			continue
		}
		if exited, _ := m.Exited(); exited {
			continue // killed by a fault and not started again
		}
		if err := m.Stop(stopTimeout); err != nil {
			errs = append(errs, fmt.Errorf("replica %s: %w", r.name, err))
		}
	}
	if e.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = e.http.Shutdown(ctx)
		cancel()
	}
	if e.cluster != nil {
		if err := e.cluster.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.out, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}
