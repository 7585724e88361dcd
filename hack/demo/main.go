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

// Command demo runs the operator end to end on this machine, with nothing but
// Go and kubectl installed: a throw-away control plane (kube-apiserver and
// etcd, no nodes), a local OpsNow-compatible token server and the real
// manager binary. It creates an API-key Secret and the sample OpsnowToken
// with kubectl, waits until the token is Ready, shows it, then prints a line
// each time the operator refreshes the token.
//
//	make demo                          # watch until Ctrl-C
//	DEMO_DURATION=90s make demo        # watch 90s after the token is Ready, then stop
//	DEMO_TOKEN_LIFETIME=60s make demo  # tokens live 60s (default 30s)
//
// The manager's logs go to a file in the demo's temporary directory, whose
// path is printed, as is an `export KUBECONFIG=...` line for running kubectl
// against the control plane from another terminal. On Ctrl-C, SIGTERM or
// when DEMO_DURATION has passed, the demo stops the manager, the token server
// and the control plane and removes the temporary directory.
//
// The exit code is 0 when a Ready token was seen and, if the demo watched
// longer than one token lifetime, at least one refresh; 1 otherwise; 2 for
// bad settings.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/localcluster"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

const (
	// samplePath is the OpsnowToken the demo applies, relative to the module
	// root; tokenName is its name. kubectl puts it in namespace "default".
	samplePath = "config/samples/auth_v1alpha1_opsnowtoken.yaml"
	tokenName  = "billing"
	namespace  = "default"
	// apiKeySecret is the Secret the sample's spec.apiKeySecretRef names.
	apiKeySecret = "opsnow-api-key"

	defaultLifetime = 30 * time.Second
	readyTimeout    = 60 * time.Second
	healthTimeout   = 60 * time.Second
	managerStopWait = 15 * time.Second
	// pollInterval is how often the demo reads the Secret to spot a refresh:
	// far below the refresh interval of even a short-lived demo token.
	pollInterval = 500 * time.Millisecond
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// config holds the demo's settings.
type config struct {
	// lifetime is the lifetime of the tokens the token server issues; the
	// operator refreshes them at about two thirds of it.
	lifetime time.Duration
	// duration is how long to watch for refreshes once the token is Ready;
	// zero watches until interrupted.
	duration time.Duration
}

// parseConfig reads the flags, whose defaults come from DEMO_TOKEN_LIFETIME
// and DEMO_DURATION so that `make demo` is configured from the environment.
func parseConfig(args []string, stdout io.Writer) (config, error) {
	var cfg config
	lifetime, err := envDuration("DEMO_TOKEN_LIFETIME", defaultLifetime)
	if err != nil {
		return cfg, err
	}
	duration, err := envDuration("DEMO_DURATION", 0)
	if err != nil {
		return cfg, err
	}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.DurationVar(&cfg.lifetime, "token-lifetime", lifetime,
		"lifetime of the tokens the local token server issues ($DEMO_TOKEN_LIFETIME)")
	fs.DurationVar(&cfg.duration, "duration", duration,
		"watch this long after the token is Ready, then stop; 0 watches until Ctrl-C ($DEMO_DURATION)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: go run ./hack/demo [flags]   (or: make demo)")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.lifetime < 3*time.Second {
		return cfg, fmt.Errorf("token lifetime must be at least 3s, got %s", cfg.lifetime)
	}
	if cfg.duration < 0 {
		return cfg, fmt.Errorf("duration must not be negative, got %s", cfg.duration)
	}
	return cfg, nil
}

func envDuration(name string, def time.Duration) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not a duration such as 90s or 5m", name, v)
	}
	return d, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v (see --help)\n", err)
		return 2
	}
	kubectl, err := findKubectl()
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 2
	}

	// Signals stay caught until the end, so that a second Ctrl-C cannot cut
	// the clean-up short and leave the control plane running.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	d := &demo{cfg: cfg, out: stdout, kubectlBin: kubectl, start: time.Now()}
	err = d.run(ctx)
	if ctx.Err() != nil {
		// Whatever failed was cut short by the interrupt.
		err = nil
	}
	if cerr := d.cleanup(); err == nil {
		err = cerr
	}

	code := 0
	switch {
	case err != nil:
		fmt.Fprintf(d.out, "Demo failed: %v\n", err)
		code = 1
	case d.readyAt.IsZero():
		fmt.Fprintln(d.out, "Demo failed: stopped before the token was Ready")
		code = 1
	case cfg.duration > cfg.lifetime && d.refreshes == 0:
		fmt.Fprintf(d.out, "Demo failed: no token refresh within %s although tokens live %s\n", cfg.duration, cfg.lifetime)
		code = 1
	}
	fmt.Fprintf(d.out, "Demo finished: %d OpsnowToken%s, %d refresh%s, %d token request%s\n",
		d.tokens, plural(d.tokens, "s"), d.refreshes, plural(d.refreshes, "es"), d.requests, plural(int(d.requests), "s"))
	return code
}

// findKubectl returns $KUBECTL or kubectl from PATH.
func findKubectl() (string, error) {
	name := os.Getenv("KUBECTL")
	if name == "" {
		name = "kubectl"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("the demo drives the operator with kubectl, and %q was not found: "+
			"install kubectl or set KUBECTL to its path", name)
	}
	return path, nil
}

// demo is one run of the demo and everything it started.
type demo struct {
	cfg        config
	out        io.Writer
	ctx        context.Context // ends on Ctrl-C or SIGTERM
	kubectlBin string
	start      time.Time

	root     string
	dir      string
	logPath  string
	cluster  *localcluster.Cluster
	k8s      client.Client
	server   *tokenserver.Server
	http     *http.Server
	endpoint string
	manager  *localcluster.Manager

	secretName string
	lastToken  string
	readyAt    time.Time
	refreshes  int
	tokens     int
	requests   int64
}

// run starts everything, creates the token and watches it until ctx ends or
// the configured duration passes. It returns nil on a normal stop.
func (d *demo) run(ctx context.Context) error {
	d.ctx = ctx
	var err error
	if d.root, err = localcluster.ModuleRoot(); err != nil {
		return err
	}
	if d.dir, err = os.MkdirTemp("", "opsnow-demo-"); err != nil {
		return err
	}
	d.logPath = filepath.Join(d.dir, "manager.log")
	binary := filepath.Join(d.dir, "manager")

	// The manager compiles while the control plane starts: with a cold build
	// cache the compile takes longest, and the two overlap well.
	type buildResult struct {
		err  error
		took time.Duration
	}
	built := make(chan buildResult, 1)
	go func() {
		t := time.Now()
		err := localcluster.BuildManager(ctx, binary)
		built <- buildResult{err, time.Since(t)}
	}()

	err = d.step("Starting local control plane (kube-apiserver + etcd) and installing the CRD", func() error {
		var err error
		d.cluster, err = localcluster.Start(localcluster.Options{Dir: d.dir})
		return err
	})
	if err == nil {
		d.detail("export KUBECONFIG=%s   # to use kubectl from another terminal", d.cluster.Kubeconfig)
		d.k8s, err = newClient(d.cluster)
	}
	if err != nil {
		<-built
		return err
	}

	fmt.Fprintf(d.out, "==> Building the manager binary (go build -o %s .)... ", binary)
	b := <-built
	if b.err != nil {
		fmt.Fprintln(d.out, d.failed())
		return b.err
	}
	fmt.Fprintf(d.out, "done in %s\n", seconds(b.took))

	if err := d.startTokenServer(); err != nil {
		return err
	}
	if err := d.startManager(ctx, binary); err != nil {
		return err
	}
	if err := d.createToken(ctx); err != nil {
		return err
	}
	return d.watch(ctx)
}

// startTokenServer serves internal/tokenserver on a free loopback port.
func (d *demo) startTokenServer() error {
	d.server = tokenserver.New(tokenserver.Options{Lifetime: d.cfg.lifetime})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the token server: %w", err)
	}
	d.endpoint = "http://" + ln.Addr().String()
	d.http = &http.Server{Handler: d.server, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = d.http.Serve(ln) }()
	fmt.Fprintf(d.out, "==> Token server (OpsNow stand-in) listening on %s, token lifetime %s\n",
		d.endpoint, d.cfg.lifetime)
	return nil
}

// startManager runs the manager binary as a separate process, with the
// flags a Deployment would pass, and waits until its health endpoint answers.
func (d *demo) startManager(ctx context.Context, binary string) error {
	logFile, err := os.Create(d.logPath)
	if err != nil {
		return err
	}
	// The child has its own descriptor of the file.
	defer func() { _ = logFile.Close() }()
	healthAddr, err := localcluster.FreeAddr()
	if err != nil {
		return err
	}
	args := []string{
		"--default-endpoint=" + d.endpoint,
		"--metrics-bind-address=0",
		"--health-probe-bind-address=" + healthAddr,
		"--zap-devel",
	}
	err = d.step("Starting the manager: manager "+strings.Join(args, " "), func() error {
		var err error
		d.manager, err = localcluster.StartManager(localcluster.ManagerOptions{
			Binary:     binary,
			Kubeconfig: d.cluster.Kubeconfig,
			Args:       args,
			Output:     logFile,
		})
		if err != nil {
			return err
		}
		hctx, cancel := context.WithTimeout(ctx, healthTimeout)
		defer cancel()
		return d.manager.WaitHealthy(hctx, healthAddr)
	})
	if err != nil {
		return d.withLogTail(err)
	}
	d.detail("pid %d, health http://%s/healthz", d.manager.PID(), healthAddr)
	d.detail("logs: tail -f %s", d.logPath)
	return nil
}

// createToken creates the API-key Secret and the sample OpsnowToken with
// kubectl, waits for Ready and shows the result.
func (d *demo) createToken(ctx context.Context) error {
	if _, err := d.kubectl(ctx, "create", "secret", "generic", apiKeySecret, "--from-literal=apiKey=demo-key"); err != nil {
		return err
	}
	if _, err := d.kubectl(ctx, "apply", "-f", samplePath); err != nil {
		return err
	}
	if _, err := d.kubectl(ctx, "wait", "--for=condition=Ready", "opsnowtoken/"+tokenName,
		fmt.Sprintf("--timeout=%ds", int(readyTimeout.Seconds()))); err != nil {
		if out, gerr := d.kubectlQuiet(ctx, "get", "opsnowtoken", tokenName, "-o", "wide"); gerr == nil {
			err = fmt.Errorf("%w\n%s", err, indent(out))
		}
		return d.withLogTail(err)
	}
	d.readyAt = time.Now()
	fmt.Fprintf(d.out, "==> Token Ready at %s, %s after the demo started\n",
		d.readyAt.Format(time.TimeOnly), seconds(d.readyAt.Sub(d.start)))

	if _, err := d.kubectl(ctx, "get", "opsnowtokens"); err != nil {
		return err
	}
	var tok authv1alpha1.OpsnowToken
	if err := d.k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: tokenName}, &tok); err != nil {
		return fmt.Errorf("get OpsnowToken %s: %w", tokenName, err)
	}
	d.secretName = tok.Status.SecretName
	secret, err := d.secret(ctx)
	if err != nil {
		return err
	}
	d.lastToken = string(secret.Data[authv1alpha1.SecretTokenKey])
	fmt.Fprintf(d.out, "==> Secret %s (type %s, managed by the operator); its keys, token shortened:\n",
		secret.Name, secret.Type)
	d.detail("%s: %s", authv1alpha1.SecretExpiresAtKey, secret.Data[authv1alpha1.SecretExpiresAtKey])
	d.detail("%s:     %s", authv1alpha1.SecretTokenKey, shorten(d.lastToken))
	return nil
}

// watch reads the Secret every pollInterval and prints a line when the token
// in it changes, until ctx ends or the configured duration passes.
func (d *demo) watch(ctx context.Context) error {
	every := d.cfg.lifetime * 2 / 3
	until := "press Ctrl-C to stop"
	var deadline <-chan time.Time
	if d.cfg.duration > 0 {
		until = fmt.Sprintf("for %s (DEMO_DURATION)", d.cfg.duration)
		timer := time.NewTimer(d.cfg.duration)
		defer timer.Stop()
		deadline = timer.C
	}
	fmt.Fprintf(d.out, "==> Watching for token refreshes (about every %s, at two thirds of the lifetime); %s\n",
		seconds(every), until)

	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var lastReady string
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(d.out, "==> Interrupted")
			return nil
		case <-deadline:
			fmt.Fprintf(d.out, "==> %s passed\n", d.cfg.duration)
			return nil
		case <-d.manager.Done():
			_, err := d.manager.Exited()
			return d.withLogTail(fmt.Errorf("the manager exited unexpectedly: %v", err))
		case <-tick.C:
		}

		if ready := d.readiness(ctx); ready != lastReady {
			if lastReady != "" {
				d.detail("OpsnowToken %s is now %s", tokenName, ready)
			}
			lastReady = ready
		}
		secret, err := d.secret(ctx)
		if err != nil {
			continue // deleted by the user, or a transient error: the next poll tells
		}
		token := string(secret.Data[authv1alpha1.SecretTokenKey])
		if token == "" || token == d.lastToken {
			continue
		}
		d.lastToken = token
		d.refreshes++
		d.detail("Token refreshed at %s, expires %s, token requests so far: %d",
			time.Now().Format(time.TimeOnly), clockTime(string(secret.Data[authv1alpha1.SecretExpiresAtKey])),
			d.server.Stats().Requests)
	}
}

// readiness summarises the Ready condition, e.g. "Ready=True (TokenValid)".
func (d *demo) readiness(ctx context.Context) string {
	var tok authv1alpha1.OpsnowToken
	if err := d.k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: tokenName}, &tok); err != nil {
		return "unreadable: " + err.Error()
	}
	c := apimeta.FindStatusCondition(tok.Status.Conditions, authv1alpha1.ConditionReady)
	if c == nil {
		return "without a Ready condition"
	}
	s := fmt.Sprintf("Ready=%s (%s)", c.Status, c.Reason)
	if c.Status != "True" && c.Message != "" {
		s += ": " + c.Message
	}
	return s
}

func (d *demo) secret(ctx context.Context) (*corev1.Secret, error) {
	var s corev1.Secret
	if err := d.k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: d.secretName}, &s); err != nil {
		return nil, fmt.Errorf("get Secret %s: %w", d.secretName, err)
	}
	return &s, nil
}

// cleanup stops what run started, in reverse order, and removes the
// temporary directory. It reports a manager that did not stop cleanly.
func (d *demo) cleanup() error {
	var errs []error
	// Counted before the stop, while the API server still answers.
	if d.k8s != nil {
		var list authv1alpha1.OpsnowTokenList
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := d.k8s.List(ctx, &list); err == nil {
			d.tokens = len(list.Items)
		}
		cancel()
	}
	// A manager that already exited has had its failure reported.
	if d.manager != nil {
		if exited, _ := d.manager.Exited(); !exited {
			if err := d.step("Stopping the manager (SIGTERM)", func() error { return d.manager.Stop(managerStopWait) }); err != nil {
				errs = append(errs, d.withLogTail(err))
			}
		}
	}
	if d.http != nil {
		_ = d.step("Stopping the token server", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return d.http.Shutdown(ctx)
		})
		d.requests = d.server.Stats().Requests
	}
	if d.cluster != nil {
		if err := d.step("Stopping the control plane", d.cluster.Stop); err != nil {
			errs = append(errs, err)
		}
	}
	if d.dir != "" {
		if err := os.RemoveAll(d.dir); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(d.out, "==> Removed %s\n", d.dir)
		}
	}
	return errors.Join(errs...)
}

// step prints "==> what... ", runs fn and ends the line with its duration.
func (d *demo) step(what string, fn func() error) error {
	fmt.Fprintf(d.out, "==> %s... ", what)
	t := time.Now()
	if err := fn(); err != nil {
		fmt.Fprintln(d.out, d.failed())
		return err
	}
	fmt.Fprintf(d.out, "done in %s\n", seconds(time.Since(t)))
	return nil
}

// failed ends a step's line: "interrupted" if the user stopped the demo,
// whose signal also reached the step's child processes, else "failed".
func (d *demo) failed() string {
	if d.ctx != nil && d.ctx.Err() != nil {
		return "interrupted"
	}
	return "failed"
}

// detail prints an indented line belonging to the step above it.
func (d *demo) detail(format string, args ...any) {
	fmt.Fprintf(d.out, "    "+format+"\n", args...)
}

// kubectl shows the command, runs it from the module root against the
// demo's control plane and shows its output, indented.
func (d *demo) kubectl(ctx context.Context, args ...string) (string, error) {
	fmt.Fprintf(d.out, "==> kubectl %s\n", strings.Join(args, " "))
	out, err := d.kubectlQuiet(ctx, args...)
	if out != "" {
		fmt.Fprintln(d.out, indent(out))
	}
	return out, err
}

// kubectlQuiet runs kubectl without showing anything; the error carries
// kubectl's standard error.
func (d *demo) kubectlQuiet(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.kubectlBin, append([]string{"--kubeconfig=" + d.cluster.Kubeconfig}, args...)...)
	cmd.Dir = d.root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return strings.TrimRight(stdout.String(), "\n"), nil
}

// withLogTail appends the end of the manager's log to err, since the log
// file goes away with the temporary directory.
func (d *demo) withLogTail(err error) error {
	data, rerr := os.ReadFile(d.logPath)
	if rerr != nil || len(data) == 0 {
		return err
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return fmt.Errorf("%w\nLast lines of the manager's log:\n%s", err, indent(strings.Join(lines, "\n")))
}

func newClient(c *localcluster.Cluster) (client.Client, error) {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(authv1alpha1.AddToScheme(scheme))
	k8s, err := client.New(c.Config, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("create client: %w", err)
	}
	return k8s, nil
}

// shorten shows enough of a token to tell tokens apart, and its length.
func shorten(token string) string {
	n := 9
	if len(token) < 3*n {
		n = len(token) / 3
	}
	return fmt.Sprintf("%s…(%d chars)", token[:n], len(token))
}

// clockTime shows an RFC 3339 time as a local time of day, or as is if it
// does not parse.
func clockTime(rfc3339 string) string {
	t, err := time.Parse(time.RFC3339, rfc3339)
	if err != nil {
		return rfc3339
	}
	return t.Local().Format(time.TimeOnly)
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

func seconds(d time.Duration) string {
	return fmt.Sprintf("%.1fs", d.Seconds())
}

func plural(n int, suffix string) string {
	if n == 1 {
		return ""
	}
	return suffix
}
