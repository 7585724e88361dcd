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

package controller_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/controller"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/endpoint"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/localcluster"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/opsnow"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

// The control plane shared by all tests of the package; each test works in
// its own namespace with its own manager, token server and fake clock.
var (
	// testEnv is the control plane, kept for tests that provision users.
	testEnv *envtest.Environment
	// restConfig is the admin's; k8s, the tests' own client, uses it.
	restConfig *rest.Config
	k8s        client.Client
	scheme     = runtime.NewScheme()

	// managerConfig is the identity every harness manager runs as unless a
	// test gives another: the manager's ServiceAccount, holding only the
	// generated RBAC, under the admission guard (setUpManagerIdentity).
	managerConfig *rest.Config
	// guardPolicy is the admission guard's ValidatingAdmissionPolicy as
	// installed, read from config/admission-guard.
	guardPolicy *admissionregistrationv1.ValidatingAdmissionPolicy
)

// The manager's ServiceAccount as config/default names it (namespace and
// namePrefix applied to config/rbac/service_account.yaml): the admission
// guard of config/admission-guard matches this username.
const (
	managerNamespace      = "opsnow-token-operator-system"
	managerServiceAccount = "opsnow-token-operator-controller-manager"
	managerUsername       = "system:serviceaccount:" + managerNamespace + ":" + managerServiceAccount
)

// waitTimeout bounds every wait for the manager to act.
const waitTimeout = 20 * time.Second

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(authv1alpha1.AddToScheme(scheme))
}

func TestMain(m *testing.M) {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapLevelFromEnv())))
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		// The fast tests (decisions and the reconciler on a fake client)
		// need no control plane; the stories against one are skipped.
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: skipping the tests against a control plane; "+
			"`make test` provides kube-apiserver and etcd (hack/envtest-assets.sh)")
		os.Exit(m.Run())
	}
	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	// As on OpenShift: an owner reference that blocks its owner's deletion
	// needs update on the owner's finalizers.
	testEnv.ControlPlane.GetAPIServer().Configure().
		Append("enable-admission-plugins", "OwnerReferencesPermissionEnforcement")
	var err error
	if restConfig, err = testEnv.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "start envtest control plane: %v\n", err)
		os.Exit(1)
	}
	if k8s, err = client.New(restConfig, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintf(os.Stderr, "create client: %v\n", err)
		os.Exit(1)
	}
	if err := setUpManagerIdentity(context.Background()); err != nil {
		fmt.Fprintf(os.Stderr, "run the manager as its ServiceAccount under the admission guard: %v\n", err)
		_ = testEnv.Stop()
		os.Exit(1)
	}
	code := m.Run()
	if err := testEnv.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stop envtest control plane: %v\n", err)
	}
	os.Exit(code)
}

// setUpManagerIdentity makes the manager's ServiceAccount the default
// manager identity: a client-certificate user with its username and groups,
// bound cluster-wide to the generated ClusterRole (config/rbac/role.yaml, as
// config/rbac/role_binding.yaml binds it) and to the leader-election rules.
// It then installs the admission guard from config/admission-guard and
// waits until the API server enforces it on that identity.
func setUpManagerIdentity(ctx context.Context) error {
	user, err := testEnv.AddUser(envtest.User{
		Name:   managerUsername,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + managerNamespace},
	}, nil)
	if err != nil {
		return fmt.Errorf("add user %s: %w", managerUsername, err)
	}
	managerConfig = user.Config()
	// The manager's own client rate limits would only slow the tests.
	managerConfig.QPS, managerConfig.Burst = 100, 200

	var role rbacv1.ClusterRole
	if err := readManifest(filepath.Join(configDir, "rbac", "role.yaml"), &role); err != nil {
		return err
	}
	var leaderElection rbacv1.Role
	if err := readManifest(filepath.Join(configDir, "rbac", "leader_election_role.yaml"), &leaderElection); err != nil {
		return err
	}
	var binding admissionregistrationv1.ValidatingAdmissionPolicyBinding
	guardPolicy = &admissionregistrationv1.ValidatingAdmissionPolicy{}
	if err := readManifest(filepath.Join(configDir, "admission-guard", "policy.yaml"), guardPolicy); err != nil {
		return err
	}
	if err := readManifest(filepath.Join(configDir, "admission-guard", "binding.yaml"), &binding); err != nil {
		return err
	}

	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: managerNamespace, Name: managerServiceAccount}}
	bind := func(name string, rules []rbacv1.PolicyRule) []client.Object {
		return []client.Object{
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules},
			&rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
				Subjects:   subjects,
			},
		}
	}
	objects := bind("opsnow-token-operator-manager-role", role.Rules)
	// Test only: the leader-election rules cluster-wide, because each test's
	// Lease lives in its own namespace; installs grant them as a Role in the
	// manager's namespace.
	objects = append(objects, bind("opsnow-token-operator-leader-election-test", leaderElection.Rules)...)
	probeNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "admission-guard-probe"}}
	objects = append(objects, guardPolicy, &binding, probeNS)
	for _, obj := range objects {
		if err := k8s.Create(ctx, obj); err != nil {
			return fmt.Errorf("create %T %s: %w", obj, obj.GetName(), err)
		}
	}

	// A new policy is enforced once the API server's informers have it: wait
	// until the manager is denied a service-account-token Secret, by the guard.
	asManager, err := client.New(managerConfig, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	probe := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: probeNS.Name, Name: "probe", Annotations: map[string]string{
			corev1.ServiceAccountNameKey: "default",
		}},
		Type: corev1.SecretTypeServiceAccountToken,
	}
	var last error
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := asManager.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		if ctx.Err() == nil {
			last = err
		}
		return isGuardDenial(err), nil
	})
	if err != nil {
		return fmt.Errorf("the admission guard %s is not enforced on %s after 30s; last dry-run create of a "+
			"service-account-token Secret: %v", guardPolicy.Name, managerUsername, last)
	}
	return nil
}

// readManifest decodes the single-object YAML file at path into obj,
// rejecting fields obj's type does not have.
func readManifest(path string, obj client.Object) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// isGuardDenial reports whether err is a denial by the admission guard.
func isGuardDenial(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), guardDenialPrefix())
}

// guardDenialPrefix starts the API server's message for a request the
// admission guard denies.
func guardDenialPrefix() string {
	return "ValidatingAdmissionPolicy '" + guardPolicy.Name + "'"
}

// requireControlPlane skips t when no control plane runs (KUBEBUILDER_ASSETS unset).
func requireControlPlane(t *testing.T) {
	t.Helper()
	if testEnv == nil {
		t.Skip("needs a control plane: KUBEBUILDER_ASSETS is not set")
	}
}

// zapLevelFromEnv lets TEST_LOG_LEVEL=-1 show the managers' debug logs.
func zapLevelFromEnv() zapcore.Level {
	var l int
	if _, err := fmt.Sscan(os.Getenv("TEST_LOG_LEVEL"), &l); err != nil {
		return zapcore.Level(10) // quiet: the per-test log buffers hold the managers' logs
	}
	return zapcore.Level(l)
}

// harness is one test's namespace, token server, fake clock and manager.
type harness struct {
	t      *testing.T
	ns     string
	clock  *clocktesting.FakeClock
	server *tokenserver.Server
	url    string
	logs   *localcluster.LogBuffer

	// managerConfig, when set, runs the manager as this identity instead of
	// the manager's ServiceAccount.
	managerConfig *rest.Config
	allowlist     []string
	watchAll      bool
	// leaderElection runs the manager with leader election on a Lease in the test namespace.
	leaderElection bool
	// clusterTokens runs the ClusterOpsnowToken controller too, watching all
	// namespaces, with the test namespace as cluster resource namespace.
	clusterTokens bool
	// beforeStart run once the test namespace exists, before the first manager starts.
	beforeStart []func(*harness)

	stop       func()
	mgr        ctrl.Manager
	reconciler *controller.OpsnowTokenReconciler
}

type harnessOption func(*harness)

// withManagerConfig runs the manager with cfg (for example a restricted user).
func withManagerConfig(cfg *rest.Config) harnessOption {
	return func(h *harness) { h.managerConfig = cfg }
}

// withAllowedEndpoints adds endpoints to the manager's allowlist.
func withAllowedEndpoints(e ...string) harnessOption {
	return func(h *harness) { h.allowlist = append(h.allowlist, e...) }
}

// withWatchAllNamespaces runs the manager without --watch-namespaces.
func withWatchAllNamespaces() harnessOption { return func(h *harness) { h.watchAll = true } }

// withClusterTokens runs the ClusterOpsnowToken controller as main.go does
// by default: all namespaces watched, API keys read in the test namespace.
func withClusterTokens() harnessOption {
	return func(h *harness) { h.clusterTokens, h.watchAll = true, true }
}

// withLeaderElection runs the manager with --leader-elect, its Lease in the test namespace.
func withLeaderElection() harnessOption { return func(h *harness) { h.leaderElection = true } }

// withBeforeStart runs f once the test namespace exists and before the
// manager starts, for objects the manager needs from its first moment
// (RBAC bindings in the namespace, say).
func withBeforeStart(f func(h *harness)) harnessOption {
	return func(h *harness) { h.beforeStart = append(h.beforeStart, f) }
}

func newHarness(t *testing.T, opts ...harnessOption) *harness {
	t.Helper()
	requireControlPlane(t)
	h := &harness{
		t:      t,
		clock:  clocktesting.NewFakeClock(time.Now().Truncate(time.Second)),
		server: tokenserver.New(tokenserver.Options{Lifetime: time.Hour}),
		logs:   &localcluster.LogBuffer{},
	}
	for _, o := range opts {
		o(h)
	}
	ts := httptest.NewServer(h.server)
	t.Cleanup(ts.Close)
	h.url = ts.URL

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	h.ns = ns.Name
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })

	for _, f := range h.beforeStart {
		f(h)
	}
	if h.managerConfig == nil {
		// Runs after stopManager (cleanups run last-in, first-out).
		t.Cleanup(h.checkNothingDenied)
	}
	h.startManager()
	t.Cleanup(h.stopManager)
	return h
}

// checkNothingDenied fails the test when the API server denied the manager,
// running as its ServiceAccount, a request: the generated RBAC and the
// admission guard must allow everything the manager does.
func (h *harness) checkNothingDenied() {
	h.t.Helper()
	var denials []string
	for line := range strings.SplitSeq(h.logs.String(), "\n") {
		// RBAC denials read `User "<name>" cannot <verb> resource ...`.
		if strings.Contains(line, guardDenialPrefix()) ||
			(strings.Contains(line, managerUsername) && strings.Contains(line, " cannot ")) {
			denials = append(denials, line)
		}
	}
	for i, line := range denials {
		if i == 3 {
			h.t.Errorf("... and %d more denials", len(denials)-i)
			break
		}
		h.t.Errorf("the API server denied the manager a request: %s", line)
	}
}

// startManager starts a manager wired as main.go wires it, watching the
// test's namespace, against the test's token server and fake clock.
func (h *harness) startManager() {
	h.t.Helper()
	cfg := managerConfig
	if h.managerConfig != nil {
		cfg = h.managerConfig
	}
	namespaces := []string{h.ns}
	if h.watchAll {
		namespaces = nil
	}
	allow, err := endpoint.NewAllowlist(append([]string{h.url}, h.allowlist...)...)
	if err != nil {
		h.t.Fatalf("allowlist: %v", err)
	}
	logger := zap.New(zap.WriteTo(h.logs), zap.UseDevMode(true), zap.Level(zapcore.DebugLevel))
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controller.CacheOptions(namespaces),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Logger:                 logger,
		// Several managers run one after another in this process.
		Controller:                    config.Controller{SkipNameValidation: ptr.To(true)},
		LeaderElection:                h.leaderElection,
		LeaderElectionID:              "opsnow-token-operator.auth.opsnow.io",
		LeaderElectionNamespace:       h.ns,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		h.t.Fatalf("create manager: %v", err)
	}
	h.reconciler, err = controller.Setup(mgr, controller.Options{
		Clock:           h.clock,
		Exchanger:       opsnow.NewClient(opsnow.NewHTTPClient(2*time.Second), h.clock),
		Endpoints:       allow,
		DefaultEndpoint: h.url,
		WatchNamespaces: namespaces,
	})
	if err != nil {
		h.t.Fatalf("set up reconciler: %v", err)
	}
	if h.clusterTokens {
		if _, err := controller.SetupClusterTokens(mgr, h.reconciler, h.ns); err != nil {
			h.t.Fatalf("set up ClusterOpsnowToken reconciler: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	// Bounded, so that a manager denied a list or watch fails the test
	// instead of hanging it.
	syncCtx, cancelSync := context.WithTimeout(ctx, waitTimeout)
	defer cancelSync()
	if !mgr.GetCache().WaitForCacheSync(syncCtx) {
		cancel()
		h.t.Fatalf("manager cache did not sync within %s", waitTimeout)
	}
	h.mgr = mgr
	h.stop = func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("manager stopped with error: %v", err)
			}
		case <-time.After(waitTimeout):
			h.t.Errorf("manager did not stop within %s", waitTimeout)
		}
	}
}

func (h *harness) stopManager() {
	if h.stop != nil {
		h.stop()
		h.stop = nil
	}
}

// createAPIKeySecret creates the Secret "opsnow-api-key" holding key under "apiKey".
func (h *harness) createAPIKeySecret(name, key string) *corev1.Secret {
	h.t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: name},
		Data:       map[string][]byte{authv1alpha1.DefaultAPIKeyKey: []byte(key)},
	}
	if err := k8s.Create(context.Background(), s); err != nil {
		h.t.Fatalf("create API-key Secret: %v", err)
	}
	return s
}

// createToken creates an OpsnowToken reading the API key from apiKeySecret.
func (h *harness) createToken(name, apiKeySecret string, mutate ...func(*authv1alpha1.OpsnowToken)) *authv1alpha1.OpsnowToken {
	h.t.Helper()
	tok := &authv1alpha1.OpsnowToken{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: name},
		Spec: authv1alpha1.OpsnowTokenSpec{
			APIKeySecretRef: authv1alpha1.SecretKeySelector{Name: apiKeySecret},
		},
	}
	for _, m := range mutate {
		m(tok)
	}
	if err := k8s.Create(context.Background(), tok); err != nil {
		h.t.Fatalf("create OpsnowToken: %v", err)
	}
	return tok
}

func (h *harness) getToken(name string) *authv1alpha1.OpsnowToken {
	h.t.Helper()
	tok := &authv1alpha1.OpsnowToken{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: h.ns, Name: name}, tok); err != nil {
		h.t.Fatalf("get OpsnowToken %s: %v", name, err)
	}
	return tok
}

// getSecret returns the Secret, or nil when it does not exist.
func (h *harness) getSecret(name string) *corev1.Secret {
	h.t.Helper()
	s := &corev1.Secret{}
	err := k8s.Get(context.Background(), client.ObjectKey{Namespace: h.ns, Name: name}, s)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		h.t.Fatalf("get Secret %s: %v", name, err)
	}
	return s
}

// eventually polls cond until it holds or waitTimeout passes; what describes
// the awaited state in the failure message, with cond's last complaint.
func (h *harness) eventually(what string, cond func() (bool, string)) {
	h.t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, waitTimeout, true,
		func(context.Context) (bool, error) {
			ok, msg := cond()
			last = msg
			return ok, nil
		})
	if err != nil {
		h.t.Fatalf("timed out waiting for %s: %s", what, last)
	}
}

// consistently checks for d that cond keeps holding.
func (h *harness) consistently(what string, d time.Duration, cond func() (bool, string)) {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ok, msg := cond(); !ok {
			h.t.Fatalf("%s stopped holding: %s", what, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readyCondition returns the token's Ready condition, or nil.
func readyCondition(tok *authv1alpha1.OpsnowToken) *metav1.Condition {
	return apimeta.FindStatusCondition(tok.Status.Conditions, authv1alpha1.ConditionReady)
}

// waitReady waits for Ready with status and reason and returns the token.
func (h *harness) waitReady(name string, status metav1.ConditionStatus, reason string) *authv1alpha1.OpsnowToken {
	h.t.Helper()
	var tok *authv1alpha1.OpsnowToken
	h.eventually(fmt.Sprintf("%s Ready=%s/%s", name, status, reason), func() (bool, string) {
		tok = h.getToken(name)
		c := readyCondition(tok)
		if c == nil {
			return false, "no Ready condition"
		}
		return c.Status == status && c.Reason == reason && tok.Status.ObservedGeneration == tok.Generation,
			fmt.Sprintf("Ready=%s/%s %q, observedGeneration %d of %d", c.Status, c.Reason, c.Message,
				tok.Status.ObservedGeneration, tok.Generation)
	})
	return tok
}

// waitRequests waits until the token server has seen n token requests.
func (h *harness) waitRequests(n int64) {
	h.t.Helper()
	h.eventually(fmt.Sprintf("%d token requests", n), func() (bool, string) {
		got := h.server.Requests()
		return got == n, fmt.Sprintf("got %d token requests", got)
	})
}

// assertRequestsStay checks for a while that no further token request arrives.
func (h *harness) assertRequestsStay(n int64, d time.Duration) {
	h.t.Helper()
	h.consistently(fmt.Sprintf("token requests at %d", n), d, func() (bool, string) {
		got := h.server.Requests()
		return got == n, fmt.Sprintf("got %d token requests, want %d", got, n)
	})
}

// step moves the fake clock forward, firing planned refreshes and retries.
func (h *harness) step(d time.Duration) { h.clock.Step(d) }

// stepTo moves the fake clock to t (if it is in the future).
func (h *harness) stepTo(t time.Time) {
	if d := t.Sub(h.clock.Now()); d > 0 {
		h.clock.Step(d)
	}
}

// events returns the events regarding the named object in the test namespace.
func (h *harness) events(name string) []eventsv1.Event {
	h.t.Helper()
	var list eventsv1.EventList
	if err := k8s.List(context.Background(), &list, client.InNamespace(h.ns)); err != nil {
		h.t.Fatalf("list events: %v", err)
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	return out
}

// waitEvent waits for an event of the given type and reason about name.
func (h *harness) waitEvent(name, eventType, reason string) eventsv1.Event {
	h.t.Helper()
	var found eventsv1.Event
	h.eventually(fmt.Sprintf("%s event %s about %s", eventType, reason, name), func() (bool, string) {
		var seen []string
		for _, e := range h.events(name) {
			if e.Type == eventType && e.Reason == reason {
				found = e
				return true, ""
			}
			seen = append(seen, e.Type+"/"+e.Reason)
		}
		return false, "events seen: " + strings.Join(seen, ", ")
	})
	return found
}

// update re-reads obj, applies mutate and writes it, retrying on conflicts.
func update[T client.Object](t *testing.T, obj T, mutate func(T)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, waitTimeout, true,
		func(ctx context.Context) (bool, error) {
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
				return false, err
			}
			mutate(obj)
			err := k8s.Update(ctx, obj)
			if apierrors.IsConflict(err) {
				return false, nil
			}
			return err == nil, err
		})
	if err != nil {
		t.Fatalf("update %T %s: %v", obj, obj.GetName(), err)
	}
}

// reconcileCount is the number of OpsnowToken reconciles this process ran,
// read from controller-runtime's metrics.
func reconcileCount(t *testing.T) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	var n float64
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "opsnowtoken" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}
