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

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Well-known names of the OpsnowToken API: the target Secret's layout and the
// annotation users set to ask for a refresh.
const (
	// SecretTokenKey holds the raw access token in the target Secret.
	SecretTokenKey = "token"
	// SecretExpiresAtKey holds the token's expiry, RFC 3339 in UTC, in the target Secret.
	SecretExpiresAtKey = "expiresAt"

	// ManagedByLabel marks target Secrets written by the operator; its value is ManagedByValue.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of ManagedByLabel on target Secrets.
	ManagedByValue = "opsnow-token-operator"
	// TokenLabel names, on a target Secret, the OpsnowToken that owns it.
	TokenLabel = "auth.opsnow.io/token"

	// RefreshRequestedAtAnnotation asks for one immediate refresh each time its
	// value changes; status.lastHandledRefreshRequest echoes the value once acted on.
	RefreshRequestedAtAnnotation = "auth.opsnow.io/refresh-requested-at"

	// DefaultAPIKeyKey is the key read from the API-key Secret when spec.apiKeySecretRef.key is empty.
	DefaultAPIKeyKey = "apiKey"
)

// Condition types. Ready is the user's view; Reconciling and Stalled are the
// kstatus conditions, so that Flux, Argo CD and kstatus tell a token in
// progress from one that needs the user.
const (
	// ConditionReady says whether the target Secret holds an unexpired token
	// issued for the current spec and API key.
	ConditionReady = "Ready"
	// ConditionReconciling is True while the operator works towards a token
	// it does not have yet: waiting for a request slot, or retrying a failure.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when nothing will succeed until the user
	// changes something (EndpointNotAllowed, SecretConflict).
	ConditionStalled = "Stalled"
)

// Reasons of the Ready condition. Each says, in one word, why the token is or
// is not ready; docs/api.md tells users what to do about each.
const (
	// ReasonTokenValid: the target Secret holds a valid token for the current spec and API key.
	ReasonTokenValid = "TokenValid"
	// ReasonAPIKeySecretNotFound: the Secret named by spec.apiKeySecretRef does not exist.
	ReasonAPIKeySecretNotFound = "APIKeySecretNotFound"
	// ReasonAPIKeyMissing: the API-key Secret has no non-empty value under the referenced key.
	ReasonAPIKeyMissing = "APIKeyMissing"
	// ReasonAPIKeySecretNotAllowed: the API-key Secret is not an Opaque Secret, or lacks the labels the operator's --api-key-secret-selector requires; nothing was sent.
	ReasonAPIKeySecretNotAllowed = "APIKeySecretNotAllowed"
	// ReasonEndpointNotAllowed: spec.endpoint is not on the operator's allowlist; nothing was sent.
	ReasonEndpointNotAllowed = "EndpointNotAllowed"
	// ReasonUnauthorized: OpsNow rejected the API key (HTTP 401 or 403).
	ReasonUnauthorized = "Unauthorized"
	// ReasonUpstreamUnavailable: OpsNow could not be reached or answered 429/5xx.
	ReasonUpstreamUnavailable = "UpstreamUnavailable"
	// ReasonInvalidResponse: OpsNow answered with something that holds no usable token.
	ReasonInvalidResponse = "InvalidResponse"
	// ReasonSecretConflict: a Secret with the target name exists and is not controlled by this OpsnowToken.
	ReasonSecretConflict = "SecretConflict"
	// ReasonSecretWriteFailed: the target Secret could not be written (an admission policy or webhook, a quota, an immutable Secret); a token minted for the attempt is kept and only the write is retried.
	ReasonSecretWriteFailed = "SecretWriteFailed"
	// ReasonSuspended: spec.suspend is true; no token is requested.
	ReasonSuspended = "Suspended"
	// ReasonProgressing: a token is on its way; the request waits for a slot under the operator's --token-request-rate.
	ReasonProgressing = "Progressing"
)

// SecretKeySelector names a key of a Secret in the OpsnowToken's own namespace.
// There is deliberately no namespace field: references never leave the namespace.
type SecretKeySelector struct {
	// name of the Secret holding the API key, in the OpsnowToken's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key in the Secret's data holding the API key.
	// +optional
	// +kubebuilder:default=apiKey
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	// +kubebuilder:validation:XValidation:rule="self != '.' && self != '..'",message="key must not be '.' or '..'"
	Key string `json:"key,omitempty"`
}

// OpsnowTokenSpec defines which API key to exchange, where, and where to write the token.
type OpsnowTokenSpec struct {
	// apiKeySecretRef names the Secret and key holding the OpsNow API key.
	// +required
	APIKeySecretRef SecretKeySelector `json:"apiKeySecretRef"`

	// secretName is the target Secret the token is written to, in the same
	// namespace. Defaults to the OpsnowToken's name.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SecretName string `json:"secretName,omitempty"`

	// endpoint is the OpsNow API base URL. It must be on the operator's
	// allowlist. Defaults to the operator's --default-endpoint.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="endpoint must be an http or https URL with a host"
	Endpoint string `json:"endpoint,omitempty"`

	// refreshBefore is how long before expiry the token is refreshed.
	// Defaults to one third of the token's lifetime. A value not shorter than
	// the lifetime falls back to the default.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="refreshBefore must be a positive duration"
	RefreshBefore *metav1.Duration `json:"refreshBefore,omitempty"`

	// suspend stops refreshing while true; the token in the Secret then expires.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// secretTemplate holds labels and annotations merged onto the target
	// Secret. Changing it rewrites the Secret's metadata without a new token.
	// +optional
	SecretTemplate *SecretTemplate `json:"secretTemplate,omitempty"`
}

// SecretTemplate is metadata the operator merges onto the Secrets it writes,
// as cert-manager's Certificate secretTemplate does. The operator's own keys
// (under auth.opsnow.io/, and the managed-by label) cannot be set through it:
// they are how the operator recognises its Secrets and resumes after a restart.
type SecretTemplate struct {
	// labels are merged onto the Secret's labels. A label removed from the
	// template is removed from the Secret.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('auth.opsnow.io/') && k != 'app.kubernetes.io/managed-by')",message="labels under auth.opsnow.io/ and the label app.kubernetes.io/managed-by belong to the operator and cannot be set through secretTemplate"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(self[k]) <= 63)",message="label values must be at most 63 characters"
	Labels map[string]string `json:"labels,omitempty"`

	// annotations are merged onto the Secret's annotations. An annotation
	// removed from the template is removed from the Secret.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('auth.opsnow.io/'))",message="annotations under auth.opsnow.io/ belong to the operator and cannot be set through secretTemplate"
	Annotations map[string]string `json:"annotations,omitempty"`
}

// OpsnowTokenStatus is the observed state of the token.
type OpsnowTokenStatus struct {
	// observedGeneration is the generation last acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// secretName is the target Secret that holds the token.
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// expiresAt is the expiry of the token now in the Secret.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// lastRefreshTime is when the token now in the Secret was issued.
	// +optional
	LastRefreshTime *metav1.Time `json:"lastRefreshTime,omitempty"`

	// nextRefreshTime is when the next exchange is planned: the scheduled
	// refresh, or the next retry after a failure.
	// +optional
	NextRefreshTime *metav1.Time `json:"nextRefreshTime,omitempty"`

	// failedAttempts counts consecutive failed exchanges; reset on success.
	// +optional
	FailedAttempts int32 `json:"failedAttempts,omitempty"`

	// lastHandledRefreshRequest is the last value of the
	// auth.opsnow.io/refresh-requested-at annotation acted on.
	// +optional
	LastHandledRefreshRequest string `json:"lastHandledRefreshRequest,omitempty"`

	// lastFailureMessage describes the last failed exchange. It never holds a
	// token or an API key.
	// +optional
	LastFailureMessage string `json:"lastFailureMessage,omitempty"`

	// conditions hold the Ready condition.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// OpsnowToken keeps a Secret holding a valid OpsNow access token, exchanged
// from an API key and refreshed before it expires.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=opsnow
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Secret",type=string,JSONPath=`.status.secretName`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Next Refresh",type=string,JSONPath=`.status.nextRefreshTime`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type OpsnowToken struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec defines the API key, endpoint and target Secret.
	// +required
	Spec OpsnowTokenSpec `json:"spec"`

	// status reports the token's state.
	// +optional
	Status OpsnowTokenStatus `json:"status,omitzero"`
}

// OpsnowTokenList contains a list of OpsnowToken.
// +kubebuilder:object:root=true
type OpsnowTokenList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitzero"`
	Items           []OpsnowToken `json:"items"`
}

func init() {
	SchemeBuilder.Register(&OpsnowToken{}, &OpsnowTokenList{})
}
