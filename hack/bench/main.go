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

// Command bench measures the operator at scale on one machine and checks
// the numbers against the targets of docs/performance.md. It starts a local
// control plane (kube-apiserver and etcd, see internal/localcluster), a
// token server (internal/tokenserver) on 127.0.0.1 with a fixed latency,
// builds the real manager binary and runs it as a separate process, so that
// its memory is that of the process (VmRSS) and its Go heap is read from its
// metrics endpoint. Then it runs the scenarios, in this order:
//
//	burst        N new OpsnowTokens at once, with --token-request-rate at
//	             -rate and then off (burst-limited, burst-unlimited)
//	restart      restart the manager while N tokens are valid
//	selftrigger  label edits and no-op rewrites of tokens and Secrets
//	unrelated    many large Secrets the operator has nothing to do with
//	spoof        200 Secrets of 1 MiB labelled as the operator's, not its own
//	refresh      N short-lived tokens refreshing on schedule
//	outage       the token server fails for -outage, then recovers
//	cluster      one ClusterOpsnowToken selecting 500 namespaces
//
// and prints one table, also written as JSON (-json). API-server writes come
// from kube-apiserver's own apiserver_request_total, less the benchmark's
// own writes.
//
//	make bench
//	make bench BENCH_ARGS="-n 10000 -scenarios burst"
//	go run ./hack/bench -n 100 -outage 20s    # with KUBEBUILDER_ASSETS set
//
// The exit code is 0 when every scenario ran, whether or not its targets
// were met (the table says), 1 when the benchmark could not run, 2 for bad
// flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/opsnow-token-operator/opsnow-token-operator/internal/localcluster"
)

// Scenario names, in the order they run.
const (
	scenarioIdle           = "idle"
	scenarioBurstLimited   = "burst-limited"
	scenarioBurstUnlimited = "burst-unlimited"
	scenarioRestart        = "restart"
	scenarioSelfTrigger    = "selftrigger"
	scenarioUnrelated      = "unrelated"
	scenarioRefresh        = "refresh"
	scenarioOutage         = "outage"
	scenarioSpoof          = "spoof"
	scenarioCluster        = "cluster"
)

var allScenarios = []string{
	scenarioIdle, scenarioBurstLimited, scenarioBurstUnlimited, scenarioRestart, scenarioSelfTrigger,
	scenarioUnrelated, scenarioSpoof, scenarioRefresh, scenarioOutage, scenarioCluster,
}

// config holds the benchmark's flags.
type config struct {
	n              int
	scenarios      []string
	latency        time.Duration
	rate           float64
	outage         time.Duration
	outageLifetime time.Duration
	restartWindow  time.Duration
	unrelated      int
	unrelatedSize  int
	clients        int
	jsonPath       string
	managerArgs    string
	managerEnv     string
}

func parseConfig(args []string, stdout io.Writer) (config, error) {
	var cfg config
	var scenarios, size string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.IntVar(&cfg.n, "n", 1000, "number of OpsnowTokens")
	fs.StringVar(&scenarios, "scenarios", "all", "comma-separated scenarios: all, burst (both burst runs), "+
		strings.Join(allScenarios, ", "))
	fs.DurationVar(&cfg.latency, "latency", 100*time.Millisecond, "latency of the token server")
	fs.Float64Var(&cfg.rate, "rate", 20, "--token-request-rate of the manager (the burst runs also test 0)")
	fs.DurationVar(&cfg.outage, "outage", 5*time.Minute, "how long the token server fails in the outage scenario")
	fs.DurationVar(&cfg.outageLifetime, "outage-lifetime", time.Minute,
		"token lifetime in the refresh and outage scenarios")
	fs.DurationVar(&cfg.restartWindow, "restart-window", time.Minute,
		"how long token requests are counted after a restart")
	fs.IntVar(&cfg.unrelated, "unrelated", 10000, "number of unrelated Secrets")
	fs.StringVar(&size, "unrelated-size", "8Ki", "data size of each unrelated Secret (a quantity: 8Ki, 8192)")
	fs.IntVar(&cfg.clients, "clients", 16, "parallel clients creating objects")
	fs.StringVar(&cfg.jsonPath, "json", "", "write the results as JSON to this file (default bin/bench.json)")
	fs.StringVar(&cfg.managerArgs, "manager-args", "", "extra manager flags, space-separated")
	fs.StringVar(&cfg.managerEnv, "manager-env", "", "extra manager environment, space-separated NAME=VALUE (e.g. GOMEMLIMIT=200MiB)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: go run ./hack/bench [flags]   (or: make bench BENCH_ARGS=\"...\")")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if cfg.scenarios, err = parseScenarios(scenarios); err != nil {
		return cfg, err
	}
	q, err := resource.ParseQuantity(size)
	if err != nil || q.Value() < 0 || q.Value() > 1<<20 {
		return cfg, fmt.Errorf("-unrelated-size must be a size between 0 and 1Mi, got %q", size)
	}
	cfg.unrelatedSize = int(q.Value())
	switch {
	case cfg.n < 1:
		return cfg, fmt.Errorf("-n must be at least 1, got %d", cfg.n)
	case cfg.rate < 0:
		return cfg, fmt.Errorf("-rate must not be negative, got %g", cfg.rate)
	case cfg.latency < 0:
		return cfg, fmt.Errorf("-latency must not be negative, got %s", cfg.latency)
	case cfg.outage <= 0 || cfg.restartWindow <= 0:
		return cfg, errors.New("-outage and -restart-window must be positive")
	case cfg.outageLifetime < 10*time.Second:
		return cfg, fmt.Errorf("-outage-lifetime must be at least 10s, got %s", cfg.outageLifetime)
	case cfg.unrelated < 0:
		return cfg, fmt.Errorf("-unrelated must not be negative, got %d", cfg.unrelated)
	case cfg.clients < 1 || cfg.clients > 256:
		return cfg, fmt.Errorf("-clients must be between 1 and 256, got %d", cfg.clients)
	}
	return cfg, nil
}

// parseScenarios returns the named scenarios in running order.
func parseScenarios(list string) ([]string, error) {
	want := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		switch name = strings.TrimSpace(name); name {
		case "":
		case "all":
			for _, s := range allScenarios {
				want[s] = true
			}
		case "burst":
			want[scenarioBurstLimited], want[scenarioBurstUnlimited] = true, true
		default:
			if !slices.Contains(allScenarios, name) {
				return nil, fmt.Errorf("unknown scenario %q (known: all, burst, %s)", name, strings.Join(allScenarios, ", "))
			}
			want[name] = true
		}
	}
	var out []string
	for _, s := range allScenarios {
		if want[s] {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no scenario selected")
	}
	return out, nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v (see -help)\n", err)
		return 2
	}
	root, err := localcluster.ModuleRoot()
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	if cfg.jsonPath == "" {
		cfg.jsonPath = filepath.Join(root, "bin", "bench.json")
	}

	// The benchmark's own informer logs nothing worth reading.
	logf.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b := &bench{
		env: &env{cfg: cfg, out: stdout, logPath: filepath.Join(root, "bin", "bench-manager.log")},
		rep: &report{Started: time.Now(), Machine: describeMachine(), Settings: map[string]any{
			"n": cfg.n, "scenarios": cfg.scenarios, "latency": cfg.latency.String(), "rate": cfg.rate,
			"outage": cfg.outage.String(), "outageLifetime": cfg.outageLifetime.String(),
			"restartWindow": cfg.restartWindow.String(), "unrelated": cfg.unrelated,
			"unrelatedSize": cfg.unrelatedSize, "clients": cfg.clients, "managerArgs": cfg.managerArgs,
			"managerEnv": cfg.managerEnv,
		}},
	}
	if b.rep.Machine.LoadStart[0] > 1.5 {
		b.rep.note("the machine was busy: load average %.2f at the start on %d CPUs; times and peaks are pessimistic",
			b.rep.Machine.LoadStart[0], b.rep.Machine.CPUs)
	}
	err = b.run(ctx, root)
	b.rep.Seconds = time.Since(b.rep.Started).Round(time.Second).Seconds()
	b.rep.Machine.LoadEnd = loadAverage()
	if err != nil {
		b.rep.note("the run stopped early: %v", err)
	}

	fmt.Fprintln(stdout)
	b.rep.printTable(stdout)
	if jerr := b.rep.writeJSON(cfg.jsonPath); jerr != nil {
		fmt.Fprintf(stderr, "bench: write %s: %v\n", cfg.jsonPath, jerr)
		return 1
	}
	fmt.Fprintf(stdout, "Results written to %s; manager log in %s\n", cfg.jsonPath, b.logPath)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

// run starts the environment, runs the selected scenarios in order and
// stops everything it started.
func (b *bench) run(ctx context.Context, root string) (err error) {
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(b.logPath, nil, 0o644); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "opsnow-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if serr := b.stop(); err == nil {
			err = serr
		}
		_ = os.RemoveAll(dir)
	}()
	if err := b.start(ctx, dir); err != nil {
		return err
	}
	for i, s := range b.cfg.scenarios {
		b.logf("--- Scenario %s", s)
		if err := b.runScenario(ctx, s, b.cfg.scenarios[i+1:]); err != nil {
			return fmt.Errorf("scenario %s: %w", s, err)
		}
	}
	return nil
}

func (b *bench) runScenario(ctx context.Context, name string, later []string) error {
	switch name {
	case scenarioBurstLimited:
		if err := b.burst(ctx, b.cfg.rate, nsLimited); err != nil {
			return err
		}
		// The later scenarios work on namespace bench alone.
		if len(later) == 0 {
			return nil
		}
		if err := b.stopManager(); err != nil {
			return err
		}
		return b.deleteTokens(ctx, nsLimited)
	case scenarioBurstUnlimited:
		if err := b.burst(ctx, 0, nsMain); err != nil {
			return err
		}
		b.mainReady = true
		return nil
	case scenarioRestart:
		return b.restart(ctx)
	case scenarioSelfTrigger:
		return b.selfTrigger(ctx)
	case scenarioUnrelated:
		return b.unrelatedSecrets(ctx)
	case scenarioSpoof:
		return b.spoof(ctx)
	case scenarioIdle:
		return b.idle(ctx)
	case scenarioRefresh:
		return b.refresh(ctx)
	case scenarioOutage:
		return b.outage(ctx)
	case scenarioCluster:
		return b.cluster(ctx)
	}
	return fmt.Errorf("unknown scenario %q", name)
}
