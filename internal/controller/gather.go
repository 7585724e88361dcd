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

package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// inputs is everything a decision is made on, read once per reconcile.
type inputs struct {
	// Token is the OpsnowToken with the newest status known.
	Token *authv1alpha1.OpsnowToken
	// Now is the clock when reading began.
	Now time.Time

	// Endpoint is the canonical URL to call; EndpointErr says why none may be.
	Endpoint    string
	EndpointErr error
	// SpecHash fingerprints the spec fields a token is issued for.
	SpecHash string

	// SecretName is the target Secret's name.
	SecretName string
	// Secret is the target Secret, nil when it does not exist. Its data is
	// there only when it was read from the API server (checkSecret).
	Secret *corev1.Secret
	// SecretConflict is set when a Secret of that name exists and is not
	// controlled by this OpsnowToken; Secret is nil then.
	SecretConflict bool
	// Held is what the target Secret holds; Intact is false when the Secret
	// is absent or its data no longer matches what the operator wrote.
	// Held.Token is empty unless the data was read.
	Held   heldToken
	Intact bool
	// SecretVersion is the target Secret's resourceVersion when its content
	// is known to be intact, "" otherwise.
	SecretVersion string
	// Orphans are other Secrets this OpsnowToken controls: left behind by
	// a change of spec.secretName.
	Orphans []orphan

	// APIKeyVersion is the API-key Secret's resourceVersion in the metadata
	// cache, "" when it does not exist.
	APIKeyVersion string
	// APIKey is the key, read only when it may differ from the one the held
	// token was issued for; APIKeyErr is why that read failed.
	APIKey    *apiKey
	APIKeyErr error

	// Pending is a token minted earlier whose Secret write failed.
	Pending *heldToken
	// FailedInputs fingerprints the inputs of the last failed attempt, ""
	// when unknown (none, or the manager restarted since).
	FailedInputs string
	// FailedReason is the reason of the last failed attempt, "" when unknown.
	FailedReason string
	// Woken is set when the endpoint recovered from an outage this token
	// is waiting out: its retry need not wait for the backoff.
	Woken bool
}

// apiKey is an API key and the resourceVersion of the Secret it was read from.
type apiKey struct {
	Value   string
	Version string
}

// refreshRequest is the value of the token's refresh-requested-at annotation.
func (in inputs) refreshRequest() string {
	return in.Token.Annotations[authv1alpha1.RefreshRequestedAtAnnotation]
}

// gather reads the OpsnowToken's world: the target Secret (its metadata
// from the cache, its data from the API server only when checkSecret must),
// the API-key Secret's version, the key itself only when it may have
// changed, and what this reconciler remembers. Only reads of the
// cluster can fail here, and nothing has been sent or written yet.
func (r *OpsnowTokenReconciler) gather(ctx context.Context, tok *authv1alpha1.OpsnowToken) (inputs, error) {
	key := client.ObjectKeyFromObject(tok)
	mem := r.memory.get(key)
	in := inputs{
		Token:        tok,
		Now:          r.clock.Now(),
		SecretName:   targetSecretName(tok.Spec.SecretName, tok.Name),
		Pending:      mem.pending,
		FailedInputs: mem.failedInputs,
		FailedReason: mem.failedReason,
		Woken:        r.recovery.isWoken(key),
	}
	in.Endpoint, in.EndpointErr = r.resolveEndpoint(tok.Spec.Endpoint)
	in.SpecHash = specHash(tok.Spec, in.Endpoint)
	if tok.Spec.Suspend || in.EndpointErr != nil {
		return in, nil
	}

	secret, conflict, err := r.targetSecret(ctx, tok, in.SecretName)
	if err != nil {
		return in, err
	}
	in.Secret, in.SecretConflict = secret, conflict
	if err := r.checkSecret(ctx, &in, mem); err != nil {
		return in, err
	}
	in.APIKeyVersion = r.apiKeyVersion(ctx, tok)
	r.readAPIKeyIfChanged(ctx, &in, mem)
	if in.SecretConflict {
		return in, nil
	}
	in.Orphans, err = r.orphanSecrets(ctx, tok, in.SecretName)
	return in, err
}

// checkSecret tells what the target Secret holds. Its data is read only
// when its resourceVersion is not one whose content this reconciler wrote
// or already checked: after a restart, an edit by someone else, or when
// the cache is behind the operator's own last write. On the steady path
// (a routine refresh, a wake-up with nothing due) nothing is read.
func (r *OpsnowTokenReconciler) checkSecret(ctx context.Context, in *inputs, mem tokenMemory) error {
	if in.Secret == nil {
		return nil
	}
	if in.Secret.ResourceVersion == mem.secretVersion {
		in.Held, in.Intact = readHeldAnnotations(in.Secret.Annotations)
		if in.Intact {
			in.SecretVersion = mem.secretVersion
		}
		return nil
	}
	live := &corev1.Secret{}
	if err := r.apiReader.Get(ctx, client.ObjectKeyFromObject(in.Secret), live); err != nil {
		if apierrors.IsNotFound(err) {
			in.Secret = nil
			return nil
		}
		return fmt.Errorf("get target Secret: %w", err)
	}
	if !metav1.IsControlledBy(live, in.Token) {
		in.Secret, in.SecretConflict = nil, true
		return nil
	}
	in.Secret = live
	in.Held, in.Intact = readHeldToken(live)
	if in.Intact {
		in.SecretVersion = live.ResourceVersion
	}
	return nil
}

// readAPIKeyIfChanged reads the API key when the held token may have been
// issued for another: the API-key Secret changed since, and not only in
// ways already found to keep the key.
func (r *OpsnowTokenReconciler) readAPIKeyIfChanged(ctx context.Context, in *inputs, mem tokenMemory) {
	if in.APIKey != nil || in.APIKeyErr != nil || !in.Intact || in.APIKeyVersion == in.Held.APIKeyVersion ||
		(in.APIKeyVersion != "" && in.APIKeyVersion == mem.apiKeyMatchedVersion) {
		return
	}
	in.APIKey, in.APIKeyErr = r.readAPIKey(ctx, in.Token)
}

// resolveEndpoint returns the canonical URL to call, or why it may not be called.
func (r *OpsnowTokenReconciler) resolveEndpoint(specEndpoint string) (string, error) {
	raw := specEndpoint
	if raw == "" {
		raw = r.defaultEndpoint
	}
	u, err := r.endpoints.Allow(raw)
	if err != nil {
		return "", fmt.Errorf("endpoint is not allowed by the operator (allowed: %s): %w",
			strings.Join(r.endpoints.Entries(), ", "), err)
	}
	return u, nil
}

// freshToken returns tok as the API server last returned it to this
// reconciler. The cache often delivers a Secret event before it holds the
// status patch the same reconcile wrote; deciding on that older status
// would count a failure twice or patch the same status again. When the
// cached copy is older than the last patch, the API server is asked.
func (r *OpsnowTokenReconciler) freshToken(ctx context.Context, tok *authv1alpha1.OpsnowToken) (*authv1alpha1.OpsnowToken, error) {
	written := r.memory.get(client.ObjectKeyFromObject(tok)).statusVersion
	if written == "" {
		return tok, nil
	}
	if cmp, err := resourceversion.CompareResourceVersion(tok.ResourceVersion, written); err != nil || cmp >= 0 {
		r.memory.update(client.ObjectKeyFromObject(tok), func(m *tokenMemory) { m.statusVersion = "" })
		return tok, nil
	}
	live := &authv1alpha1.OpsnowToken{}
	if err := r.apiReader.Get(ctx, client.ObjectKeyFromObject(tok), live); err != nil {
		return nil, client.IgnoreNotFound(fmt.Errorf("get OpsnowToken: %w", err))
	}
	return live, nil
}

// targetSecret returns the target Secret's metadata as a Secret without
// data (nil when it does not exist) and whether a Secret of that name
// exists that tok does not control. The metadata cache answers; a Secret it
// does not hold yet (just created) is looked up on the API server.
func (r *OpsnowTokenReconciler) targetSecret(ctx context.Context, tok *authv1alpha1.OpsnowToken, name string) (*corev1.Secret, bool, error) {
	key := client.ObjectKey{Namespace: tok.Namespace, Name: name}
	m := secretMetadataObject()
	err := r.secretMetadata.Get(ctx, key, m)
	if apierrors.IsNotFound(err) {
		err = r.apiReader.Get(ctx, key, m)
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("get target Secret metadata: %w", err)
	case !metav1.IsControlledBy(m, tok):
		return nil, true, nil
	}
	return &corev1.Secret{ObjectMeta: m.ObjectMeta}, false, nil
}

// orphanSecrets lists the cached Secrets tok controls other than the target:
// what a change of spec.secretName left behind.
func (r *OpsnowTokenReconciler) orphanSecrets(ctx context.Context, tok *authv1alpha1.OpsnowToken, target string) ([]orphan, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	if err := r.secretMetadata.List(ctx, list, client.InNamespace(tok.Namespace),
		client.MatchingFields{secretControllerIndex: string(tok.UID)}); err != nil {
		return nil, fmt.Errorf("list Secrets of the OpsnowToken: %w", err)
	}
	var orphans []orphan
	for i := range list.Items {
		s := &list.Items[i]
		if s.Name != target && metav1.IsControlledBy(s, tok) {
			orphans = append(orphans, orphan{Name: s.Name, UID: s.UID})
		}
	}
	return orphans, nil
}

// orphan is a Secret the OpsnowToken controls that is no longer its target.
type orphan struct {
	Name string
	UID  types.UID
}

// apiKeyVersion returns the cached resourceVersion of the API-key Secret, or
// "" when it does not exist.
func (r *OpsnowTokenReconciler) apiKeyVersion(ctx context.Context, tok *authv1alpha1.OpsnowToken) string {
	m := secretMetadataObject()
	key := client.ObjectKey{Namespace: tok.Namespace, Name: tok.Spec.APIKeySecretRef.Name}
	if r.secretMetadata.Get(ctx, key, m) != nil {
		return ""
	}
	return m.ResourceVersion
}

// apiKeySecretAllowed refuses Secrets that are not an explicit choice of
// API key: a user who may create OpsnowTokens but not read Secrets must not
// be able to have a service-account token or a TLS key of the namespace
// sent upstream. Only Opaque Secrets qualify, and, when the admin set
// --api-key-secret-selector, only those carrying its labels.
func (r *OpsnowTokenReconciler) apiKeySecretAllowed(s *corev1.Secret) error {
	if s.Type != corev1.SecretTypeOpaque && s.Type != "" {
		return &refreshError{Reason: authv1alpha1.ReasonAPIKeySecretNotAllowed, Message: fmt.Sprintf(
			"API-key Secret %q is of type %q; only Opaque Secrets are read as API keys, nothing was sent", s.Name, s.Type)}
	}
	if r.apiKeySelector != nil && !r.apiKeySelector.Empty() && !r.apiKeySelector.Matches(labels.Set(s.Labels)) {
		return &refreshError{Reason: authv1alpha1.ReasonAPIKeySecretNotAllowed, Message: fmt.Sprintf(
			"API-key Secret %q lacks the labels this operator requires of API-key Secrets (%s); nothing was sent", s.Name, r.apiKeySelector)}
	}
	return nil
}

// readAPIKey reads the API key straight from the API server. A missing
// Secret or key is a refreshError with reason APIKeySecretNotFound or
// APIKeyMissing; another failed read keeps the API server's error.
func (r *OpsnowTokenReconciler) readAPIKey(ctx context.Context, tok *authv1alpha1.OpsnowToken) (*apiKey, error) {
	ref := tok.Spec.APIKeySecretRef
	s := &corev1.Secret{}
	if err := r.apiReader.Get(ctx, client.ObjectKey{Namespace: tok.Namespace, Name: ref.Name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &refreshError{Reason: authv1alpha1.ReasonAPIKeySecretNotFound,
				Message: fmt.Sprintf("API-key Secret %q not found", ref.Name)}
		}
		return nil, &refreshError{Reason: authv1alpha1.ReasonAPIKeySecretNotFound,
			Message: fmt.Sprintf("cannot read API-key Secret %q: %s", ref.Name, apierrors.ReasonForError(err))}
	}
	if err := r.apiKeySecretAllowed(s); err != nil {
		return nil, err
	}
	// A trailing newline is a common accident of creating the Secret from a file.
	value := strings.TrimSpace(string(s.Data[apiKeyKey(tok.Spec)]))
	if value == "" {
		return nil, &refreshError{Reason: authv1alpha1.ReasonAPIKeyMissing,
			Message: fmt.Sprintf("API-key Secret %q has no value for key %q", ref.Name, apiKeyKey(tok.Spec))}
	}
	return &apiKey{Value: value, Version: s.ResourceVersion}, nil
}
