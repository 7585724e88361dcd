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

// Command manager runs the opsnow-token-operator: it keeps, for each
// OpsnowToken, a Secret holding a valid OpsNow access token.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	// Import all Kubernetes client auth plugins (e.g. Azure, GCP, OIDC, etc.)
	// to ensure that exec-entrypoint and run can make use of them.
	_ "k8s.io/client-go/plugin/pkg/client/auth"

	// CA roots for TLS to OpsNow where the system has none, as in the image, which ships no bundle.
	_ "golang.org/x/crypto/x509roots/fallback"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/controller"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/endpoint"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/metricsauth"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/opsnow"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(authv1alpha1.AddToScheme(scheme))
}

// options are the manager's command-line flags.
type options struct {
	defaultEndpoint         string
	allowedEndpoints        string
	maxConcurrentReconciles int
	tokenRequestRate        float64
	minTokenLifetime        time.Duration
	exchangeTimeout         string
	watchNamespaces         string
	apiKeySecretSelector    string
	apiKeySelector          labels.Selector
	enableClusterTokens     bool
	clusterTokensExplicit   bool
	clusterResourceNS       string
	metricsAddr             string
	secureMetrics           bool
	metricsCertPath         string
	metricsCertName         string
	metricsCertKey          string
	enableHTTP2             bool
	probeAddr               string
	pprofAddr               string
	enableLeaderElection    bool
	leaderElectionID        string
	leaderElectionNamespace string
	leaseDuration           time.Duration
	renewDeadline           time.Duration
	retryPeriod             time.Duration
	zap                     zap.Options
}

// parseFlags parses args; a bad flag is an error of one line. The help
// text, when asked for, goes to stdout and returns flag.ErrHelp.
func parseFlags(args []string, stdout io.Writer) (*options, error) {
	o := &options{zap: zap.Options{Development: false}}
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.defaultEndpoint, "default-endpoint", endpoint.Default,
		"OpsNow endpoint used when spec.endpoint is empty; allowlisted implicitly.")
	fs.StringVar(&o.allowedEndpoints, "allowed-endpoints", "",
		"Extra allowed OpsNow endpoints, comma-separated base URLs, besides the built-in ones ("+
			strings.Join(endpoint.BuiltIn(), ", ")+").")
	fs.IntVar(&o.maxConcurrentReconciles, "max-concurrent-reconciles", controller.DefaultMaxConcurrentReconciles,
		"Number of OpsnowTokens reconciled in parallel.")
	fs.Float64Var(&o.tokenRequestRate, "token-request-rate", 20,
		"Token requests per second per endpoint, with a small burst; 0 means unlimited.")
	fs.StringVar(&o.exchangeTimeout, "exchange-timeout", opsnow.DefaultTimeout.String(),
		"Timeout of one token request to OpsNow.")
	fs.StringVar(&o.watchNamespaces, "watch-namespaces", "",
		"Comma-separated namespaces to watch; empty watches all namespaces.")
	fs.DurationVar(&o.minTokenLifetime, "min-token-lifetime", opsnow.DefaultMinLifetime,
		"Token lifetimes the upstream reports shorter than this are InvalidResponse and retried on the backoff, never refreshed in a loop.")
	fs.StringVar(&o.apiKeySecretSelector, "api-key-secret-selector", "",
		"Label selector API-key Secrets must match for their key to be sent (e.g. opsnow.io/api-key=true); empty allows any Opaque Secret.")
	fs.BoolVar(&o.enableClusterTokens, "enable-cluster-tokens", true,
		"Run the ClusterOpsnowToken controller, which needs cluster-wide watches; with --watch-namespaces it is off unless set, and setting it true there is an error.")
	fs.StringVar(&o.clusterResourceNS, "cluster-resource-namespace", "",
		"Namespace holding the API-key Secrets of ClusterOpsnowTokens; empty means the manager's own namespace.")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", "0",
		"Address the metrics endpoint binds to: :8443 for HTTPS, :8080 for HTTP, 0 to disable.")
	fs.BoolVar(&o.secureMetrics, "metrics-secure", true,
		"Serve metrics over HTTPS with authentication and authorization; false serves plain HTTP.")
	fs.StringVar(&o.metricsCertPath, "metrics-cert-path", "",
		"Directory holding the metrics server's certificate (e.g. from cert-manager); empty uses a self-signed one.")
	fs.StringVar(&o.metricsCertName, "metrics-cert-name", "tls.crt", "File name of the metrics server certificate.")
	fs.StringVar(&o.metricsCertKey, "metrics-cert-key", "tls.key", "File name of the metrics server key.")
	fs.BoolVar(&o.enableHTTP2, "enable-http2", false,
		"Enable HTTP/2 for the metrics server (off by default against HTTP/2 rapid-reset attacks).")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address the health probe endpoint binds to.")
	fs.StringVar(&o.pprofAddr, "pprof-bind-address", "0",
		"Address of the Go profiler endpoint (/debug/pprof/), e.g. 127.0.0.1:6060 for heap profiles; 0 disables. It has no authentication: bind it to loopback.")
	fs.BoolVar(&o.enableLeaderElection, "leader-elect", false,
		"Enable leader election, so that only one replica refreshes tokens at a time.")
	fs.StringVar(&o.leaderElectionID, "leader-election-id", "opsnow-token-operator.auth.opsnow.io",
		"Name of the Lease used for leader election.")
	fs.StringVar(&o.leaderElectionNamespace, "leader-election-namespace", "",
		"Namespace of the leader-election Lease; empty means the manager's own namespace, which is known only in a cluster.")
	fs.DurationVar(&o.leaseDuration, "leader-elect-lease-duration", 15*time.Second,
		"How long a standby waits after the leader's last renewal before taking over: the takeover time when a leader dies without releasing the Lease.")
	fs.DurationVar(&o.renewDeadline, "leader-elect-renew-deadline", 10*time.Second,
		"How long the leader keeps retrying to renew the Lease (e.g. while the API server is unreachable) before it gives up leading and exits; shorter than the lease duration.")
	fs.DurationVar(&o.retryPeriod, "leader-elect-retry-period", 2*time.Second,
		"How often replicas try to acquire or renew the Lease; a standby notices a released Lease within 1 to 2.2 times this.")
	o.zap.BindFlags(fs)

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage of manager:")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.maxConcurrentReconciles < 1 {
		return nil, fmt.Errorf("--max-concurrent-reconciles must be at least 1, got %d", o.maxConcurrentReconciles)
	}
	if o.tokenRequestRate < 0 {
		return nil, fmt.Errorf("--token-request-rate must not be negative, got %g", o.tokenRequestRate)
	}
	if o.minTokenLifetime <= 0 || o.minTokenLifetime > opsnow.MaxLifetime {
		return nil, fmt.Errorf("--min-token-lifetime must be positive and at most %s, got %s", opsnow.MaxLifetime, o.minTokenLifetime)
	}
	fs.Visit(func(f *flag.Flag) {
		o.clusterTokensExplicit = o.clusterTokensExplicit || f.Name == "enable-cluster-tokens"
	})
	if o.watchNamespaces != "" && o.enableClusterTokens {
		// ClusterOpsnowTokens write to any namespace their selector
		// matches; a manager restricted to some namespaces can neither see
		// nor write the others, and its install grants no cluster rights.
		if o.clusterTokensExplicit {
			return nil, errors.New("--enable-cluster-tokens needs cluster-wide watches and cannot be combined with --watch-namespaces")
		}
		o.enableClusterTokens = false
	}
	if err := checkLeaseTimings(o.leaseDuration, o.renewDeadline, o.retryPeriod); err != nil {
		return nil, err
	}
	selector, err := labels.Parse(o.apiKeySecretSelector)
	if err != nil {
		return nil, fmt.Errorf("--api-key-secret-selector: %v", oneLine(err))
	}
	o.apiKeySelector = selector
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "manager: %v (see --help)\n", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "manager: %v\n", err)
		os.Exit(1)
	}
}

func run(o *options) error {
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	setupLog := ctrl.Log.WithName("setup")

	timeout, err := parseDuration("exchange-timeout", o.exchangeTimeout)
	if err != nil {
		return err
	}
	defaultEndpoint, err := endpoint.Normalize(o.defaultEndpoint)
	if err != nil {
		return fmt.Errorf("--default-endpoint: %w", err)
	}
	entries := append(append(endpoint.BuiltIn(), defaultEndpoint), endpoint.ParseList(o.allowedEndpoints)...)
	allowlist, err := endpoint.NewAllowlist(entries...)
	if err != nil {
		return fmt.Errorf("--allowed-endpoints: %w", err)
	}
	namespaces := endpoint.ParseList(o.watchNamespaces)

	// HTTP/2 stays off unless asked for: CVE-2023-44487 (rapid reset) and
	// CVE-2023-39325 hit HTTP/2 servers.
	var tlsOpts []func(*tls.Config)
	if !o.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOptions := metricsserver.Options{
		BindAddress:   o.metricsAddr,
		SecureServing: o.secureMetrics,
		TLSOpts:       tlsOpts,
	}
	if o.secureMetrics {
		metricsOptions.FilterProvider = metricsauth.FilterProvider
	}
	if o.metricsCertPath != "" {
		metricsOptions.CertDir = o.metricsCertPath
		metricsOptions.CertName = o.metricsCertName
		metricsOptions.KeyName = o.metricsCertKey
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                        scheme,
		Cache:                         controller.CacheOptions(namespaces),
		Metrics:                       metricsOptions,
		HealthProbeBindAddress:        o.probeAddr,
		PprofBindAddress:              o.pprofAddr,
		LeaderElection:                o.enableLeaderElection,
		LeaderElectionID:              o.leaderElectionID,
		LeaderElectionNamespace:       o.leaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &o.leaseDuration,
		RenewDeadline:                 &o.renewDeadline,
		RetryPeriod:                   &o.retryPeriod,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}

	tokens, err := controller.Setup(mgr, controller.Options{
		Clock:                   clock.RealClock{},
		Exchanger:               opsnow.NewClient(opsnow.NewHTTPClient(timeout), clock.RealClock{}).WithMinLifetime(o.minTokenLifetime),
		Endpoints:               allowlist,
		DefaultEndpoint:         defaultEndpoint,
		TokenRequestRate:        o.tokenRequestRate,
		MaxConcurrentReconciles: o.maxConcurrentReconciles,
		WatchNamespaces:         namespaces,
		APIKeySecretSelector:    o.apiKeySelector,
	})
	if err != nil {
		return fmt.Errorf("set up controller: %w", err)
	}
	clusterNS, err := clusterResourceNamespace(o)
	if err != nil {
		return err
	}
	if clusterNS != "" {
		if _, err := controller.SetupClusterTokens(mgr, tokens, clusterNS); err != nil {
			return fmt.Errorf("set up ClusterOpsnowToken controller: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("set up health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("set up ready check: %w", err)
	}

	setupLog.Info("Starting manager", "defaultEndpoint", defaultEndpoint, "allowedEndpoints", allowlist.Entries(),
		"watchNamespaces", namespaces, "maxConcurrentReconciles", o.maxConcurrentReconciles,
		"tokenRequestRate", o.tokenRequestRate, "minTokenLifetime", o.minTokenLifetime, "apiKeySecretSelector", o.apiKeySelector.String(),
		"clusterTokens", clusterNS != "", "clusterResourceNamespace", clusterNS)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

// serviceAccountNamespaceFile holds the namespace of a pod's ServiceAccount.
const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// clusterResourceNamespace returns where ClusterOpsnowTokens' API keys are
// read, or "" when the ClusterOpsnowToken controller does not run: the
// flag, else the manager's own namespace (POD_NAMESPACE, or the
// ServiceAccount mount, as cert-manager finds its cluster resource
// namespace). Outside a cluster with neither, the controller stays off
// unless --enable-cluster-tokens was given, which is then an error.
func clusterResourceNamespace(o *options) (string, error) {
	if !o.enableClusterTokens {
		return "", nil
	}
	if o.clusterResourceNS != "" {
		return o.clusterResourceNS, nil
	}
	if ns := strings.TrimSpace(os.Getenv("POD_NAMESPACE")); ns != "" {
		return ns, nil
	}
	if b, err := os.ReadFile(serviceAccountNamespaceFile); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), nil
	}
	if o.clusterTokensExplicit {
		return "", errors.New("--enable-cluster-tokens: the manager's namespace is unknown outside a cluster; set --cluster-resource-namespace")
	}
	ctrl.Log.WithName("setup").Info("ClusterOpsnowTokens are off: the manager's namespace is unknown outside a cluster; set --cluster-resource-namespace")
	return "", nil
}

// checkLeaseTimings applies client-go's rules for leader election, which
// would otherwise fail only when the manager starts: the renew deadline is
// shorter than the lease duration, and longer than the retry period with
// its jitter (1.2 times it).
func checkLeaseTimings(lease, renew, retry time.Duration) error {
	switch {
	case lease <= 0 || renew <= 0 || retry <= 0:
		return fmt.Errorf("--leader-elect-lease-duration, --leader-elect-renew-deadline and --leader-elect-retry-period must be positive, got %s, %s, %s", lease, renew, retry)
	case renew >= lease:
		return fmt.Errorf("--leader-elect-renew-deadline (%s) must be shorter than --leader-elect-lease-duration (%s)", renew, lease)
	case float64(renew) <= 1.2*float64(retry):
		return fmt.Errorf("--leader-elect-renew-deadline (%s) must be longer than 1.2 times --leader-elect-retry-period (%s)", renew, retry)
	}
	return nil
}

// oneLine keeps a flag error on the one line the usage promises.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func parseDuration(name, value string) (time.Duration, error) {
	d, err := time.ParseDuration(value)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--%s must be a positive duration, got %q", name, value)
	}
	return d, nil
}
