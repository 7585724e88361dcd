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

// Command soak runs the operator for a while under injected faults and
// checks that no token ever lapses. It starts a local control plane
// (internal/localcluster), the token server (internal/tokenserver) on
// 127.0.0.1, and the real manager binary as two replicas with leader
// election, restarted whenever they exit as a Deployment's pods would be;
// creates N OpsnowTokens with short-lived tokens; then injects faults on a
// schedule it prints first:
//
//	upstream       5xx bursts, answers slower than the exchange timeout,
//	               latency spikes, 429 with Retry-After, a full outage
//	control plane  kube-apiserver killed and started again (etcd kept),
//	               etcd stalled with SIGSTOP
//	manager        the leader killed (SIGKILL) at a random moment or right
//	               after OpsNow handed it a token, before its Secret write;
//	               the leader stopped gracefully (SIGTERM)
//
// A detector reads every target Secret and OpsnowToken each second and
// checks the Secret's token against the token server's record of what it
// issued, for which key, and until when. The report (a table, and JSON in
// -json) gives lapses, token requests against the ideal, extra tokens per
// failover, takeover and recovery times and the longest Ready=False.
//
//	make soak
//	make soak SOAK_ARGS="-duration 30m -n 200"
//	go run ./hack/soak -duration 2m -faults sigkill,outage   # with KUBEBUILDER_ASSETS set
//
// The exit code is 0 when the targets were met, 1 when they were not or
// the soak could not run, 2 for bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/localcluster"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

// namespace holds the soak's OpsnowTokens and Secrets.
const namespace = "soak"

// readyTimeout bounds the wait for the tokens' first Ready.
const readyTimeout = 3 * time.Minute

// config holds the soak's flags.
type config struct {
	command         string
	duration        time.Duration
	n               int
	lifetime        time.Duration
	refreshBefore   time.Duration
	latency         time.Duration
	exchangeTimeout time.Duration
	upstreamFault   time.Duration
	outage          time.Duration
	apiDown         time.Duration
	etcdStall       time.Duration
	faults          []string
	seed            uint64
	leaseDuration   time.Duration
	renewDeadline   time.Duration
	retryPeriod     time.Duration
	jsonPath        string
	dir             string
	managerArgs     string
}

func parseConfig(args []string, stdout io.Writer) (config, error) {
	cfg := config{command: strings.Join(append([]string{"go run ./hack/soak"}, args...), " ")}
	var faults string
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.DurationVar(&cfg.duration, "duration", 7*time.Minute, "length of the fault phase, after the tokens are created (over one refresh interval) and Ready")
	fs.IntVar(&cfg.n, "n", 40, "number of OpsnowTokens")
	fs.DurationVar(&cfg.lifetime, "lifetime", 2*time.Minute, "lifetime of the tokens the token server issues")
	fs.DurationVar(&cfg.refreshBefore, "refresh-before", 0, "spec.refreshBefore of the tokens; 0 leaves the default, a third of the lifetime")
	fs.DurationVar(&cfg.latency, "latency", 50*time.Millisecond, "latency of the token server")
	fs.DurationVar(&cfg.exchangeTimeout, "exchange-timeout", 5*time.Second, "--exchange-timeout of the managers")
	fs.DurationVar(&cfg.upstreamFault, "upstream-fault", 12*time.Second, "how long the 5xx, timeout and 429 faults last (the latency spike twice as long)")
	fs.DurationVar(&cfg.outage, "outage", 20*time.Second, "how long the full upstream outage lasts")
	fs.DurationVar(&cfg.apiDown, "apiserver-down", 5*time.Second, "how long kube-apiserver stays dead before it is started again")
	fs.DurationVar(&cfg.etcdStall, "etcd-stall", 3*time.Second, "how long etcd is stopped")
	fs.StringVar(&faults, "faults", "default", "comma-separated faults in the order they run, spread evenly over -duration ("+
		strings.Join(allFaults, ", ")+"); default: "+strings.Join(defaultFaults, ","))
	fs.Uint64Var(&cfg.seed, "seed", 0, "seed of the random fault moments; 0 picks one (printed)")
	fs.DurationVar(&cfg.leaseDuration, "lease-duration", 15*time.Second, "--leader-elect-lease-duration of the managers")
	fs.DurationVar(&cfg.renewDeadline, "renew-deadline", 10*time.Second, "--leader-elect-renew-deadline of the managers")
	fs.DurationVar(&cfg.retryPeriod, "retry-period", 500*time.Millisecond, "--leader-elect-retry-period of the managers (the HA setting of the chart and config/ha)")
	fs.StringVar(&cfg.jsonPath, "json", "", "write the report as JSON to this file (default bin/soak.json)")
	fs.StringVar(&cfg.dir, "dir", "", "directory for the kubeconfig, manager binary and logs (default a new bin/soak-* directory)")
	fs.StringVar(&cfg.managerArgs, "manager-args", "", "extra manager flags, space-separated")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: go run ./hack/soak [flags]   (or: make soak SOAK_ARGS=\"...\")")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if cfg.faults, err = parseFaults(faults); err != nil {
		return cfg, err
	}
	switch {
	case cfg.n < 1:
		return cfg, errors.New("-n must be at least 1")
	case cfg.lifetime < 20*time.Second:
		return cfg, errors.New("-lifetime must be at least 20s (the managers refuse tokens shorter than 10s)")
	case cfg.refreshBefore < 0 || cfg.refreshBefore >= cfg.lifetime:
		return cfg, errors.New("-refresh-before must be shorter than -lifetime")
	case cfg.duration < 10*time.Second*time.Duration(len(cfg.faults)):
		return cfg, fmt.Errorf("-duration %s is too short for %d faults (10s each at least)", cfg.duration, len(cfg.faults))
	}
	if cfg.seed == 0 {
		cfg.seed = rand.Uint64() //nolint:gosec // G404: picks fault moments, no secret

	}
	return cfg, nil
}

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

func runMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, stdout)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "soak: %v\n", err)
		return 2
	}
	root, err := localcluster.ModuleRoot()
	if err != nil {
		fmt.Fprintf(stderr, "soak: %v\n", err)
		return 1
	}
	if cfg.jsonPath == "" {
		cfg.jsonPath = filepath.Join(root, "bin", "soak.json")
	}
	if cfg.dir == "" {
		if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
			fmt.Fprintf(stderr, "soak: %v\n", err)
			return 1
		}
		if cfg.dir, err = os.MkdirTemp(filepath.Join(root, "bin"), "soak-"); err != nil {
			fmt.Fprintf(stderr, "soak: %v\n", err)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, cfg, stdout)
	if rep != nil {
		rep.print(stdout)
		if jerr := rep.writeJSON(cfg.jsonPath); jerr != nil {
			fmt.Fprintf(stderr, "soak: write %s: %v\n", cfg.jsonPath, jerr)
		} else {
			fmt.Fprintf(stdout, "Report written to %s; manager logs in %s\n", cfg.jsonPath, cfg.dir)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "soak: %v\n", err)
		return 1
	}
	if !rep.Pass {
		return 1
	}
	return 0
}

// run runs one soak and returns its report.
func run(ctx context.Context, cfg config, out io.Writer) (rep *report, err error) {
	e := &env{cfg: cfg, out: out, dir: cfg.dir}
	defer func() {
		if serr := e.stop(); serr != nil {
			e.logf("Stopping: %v", serr)
		}
	}()
	if err := e.start(ctx); err != nil {
		return nil, err
	}
	keys, err := e.createKeys(ctx)
	if err != nil {
		return nil, err
	}
	if err := e.startReplicas(ctx); err != nil {
		return nil, err
	}
	if err := e.createTokens(ctx); err != nil {
		return nil, err
	}
	if err := e.waitReady(ctx); err != nil {
		return nil, err
	}

	rng := rand.New(rand.NewPCG(cfg.seed, 0)) //nolint:gosec // G404: a repeatable schedule from -seed, no secret
	faults := plan(cfg.faults, cfg.duration, rng)
	slot := cfg.duration / time.Duration(len(faults))
	e.logf("Fault schedule (seed %d), from now:", cfg.seed)
	for _, f := range faults {
		e.logf("  +%-7s %s", f.Offset.Round(time.Second), f.Kind)
	}

	d := newDetector(e.k8s, namespace, e.server.Lookup, keys)
	start := time.Now()
	dctx, stopDetector := context.WithCancel(ctx)
	detected := make(chan struct{})
	go func() { defer close(detected); d.run(dctx) }()

	for _, f := range faults {
		if !sleep(ctx, time.Until(start.Add(f.Offset))) {
			break
		}
		e.logf("Fault %s", f.Kind)
		e.inject(ctx, f, slot)
		msg := f.Detail
		if isFailover(f.Kind) {
			msg += fmt.Sprintf("; takeover %.1fs", f.Takeover.Seconds())
		}
		if f.Error != "" {
			msg += "; ERROR: " + f.Error
		}
		e.logf("  %s", msg)
	}
	sleep(ctx, time.Until(start.Add(cfg.duration)))
	stopDetector()
	<-detected
	end := time.Now()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	restarts := 0
	for _, r := range e.replicas {
		r.mu.Lock()
		restarts += r.restarts
		r.mu.Unlock()
	}
	a := &analysis{
		cfg: cfg, start: start, end: end, faults: faults, tokens: cfg.n, names: map[string]string{},
		grants: e.server.Grants(), requests: e.upstream.requests(),
		served: d.served, samples: d.samples, lapses: d.lapses, notReady: d.notReady,
	}
	for name, digest := range keys {
		a.names[digest] = name
	}
	rep = a.report()
	rep.ReplicaRestart = restarts
	return rep, nil
}

func tokenName(i int) string { return fmt.Sprintf("tok-%03d", i) }

// createKeys creates the namespace and an API-key Secret per token, and
// returns each target Secret's key digest.
func (e *env) createKeys(ctx context.Context) (map[string]string, error) {
	if err := e.k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	keys := map[string]string{}
	for i := range e.cfg.n {
		key := fmt.Sprintf("soak-%d-%03d", e.cfg.seed, i)
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "key-" + tokenName(i)},
			Data:       map[string][]byte{authv1alpha1.DefaultAPIKeyKey: []byte(key)},
		}
		if err := e.k8s.Create(ctx, s); err != nil {
			return nil, fmt.Errorf("create API-key Secret: %w", err)
		}
		keys[tokenName(i)] = tokenserver.KeyDigest(key)
	}
	return keys, nil
}

// createTokens creates the OpsnowTokens one after another over one refresh
// interval, so that their refreshes spread over time as in a cluster whose
// tokens were not all created at once: a fault then meets refreshes
// whenever it comes.
func (e *env) createTokens(ctx context.Context) error {
	interval := e.cfg.lifetime - e.cfg.margin()
	e.logf("Creating %d OpsnowTokens over %s", e.cfg.n, interval)
	step := interval / time.Duration(e.cfg.n)
	start := time.Now()
	for i := range e.cfg.n {
		if !sleep(ctx, time.Until(start.Add(time.Duration(i)*step))) {
			return ctx.Err()
		}
		tok := &authv1alpha1.OpsnowToken{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: tokenName(i)},
			Spec:       authv1alpha1.OpsnowTokenSpec{APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: "key-" + tokenName(i)}},
		}
		if e.cfg.refreshBefore > 0 {
			tok.Spec.RefreshBefore = &metav1.Duration{Duration: e.cfg.refreshBefore}
		}
		if err := e.k8s.Create(ctx, tok); err != nil {
			return fmt.Errorf("create OpsnowToken: %w", err)
		}
	}
	return nil
}

// waitReady waits until every OpsnowToken is Ready.
func (e *env) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		var list authv1alpha1.OpsnowTokenList
		ready := 0
		if err := e.k8s.List(ctx, &list, client.InNamespace(namespace)); err == nil {
			for i := range list.Items {
				if apimeta.IsStatusConditionTrue(list.Items[i].Status.Conditions, authv1alpha1.ConditionReady) {
					ready++
				}
			}
		}
		if ready == e.cfg.n {
			e.logf("All %d OpsnowTokens Ready", ready)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d OpsnowTokens Ready after %s", ready, e.cfg.n, readyTimeout)
		}
		if !sleep(ctx, 500*time.Millisecond) {
			return ctx.Err()
		}
	}
}
