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

// ClusterTokenLabel names, on a Secret written for a ClusterOpsnowToken, the
// ClusterOpsnowToken that owns it.
const ClusterTokenLabel = "auth.opsnow.io/cluster-token"

// MaxNamespaceFailures bounds status.failures of a ClusterOpsnowToken; the
// counts in status.namespaces cover the rest.
const MaxNamespaceFailures = 20

// ReasonNoNamespacesSelected means a ClusterOpsnowToken selects no namespace; no token is requested.
const ReasonNoNamespacesSelected = "NoNamespacesSelected"

// ClusterSecretKeySelector names a key of a Secret in the operator's cluster
// resource namespace (--cluster-resource-namespace). There is no namespace
// field: the cluster admin, not the author of the object, decides where
// API keys of ClusterOpsnowTokens live.
type ClusterSecretKeySelector struct {
	// name of the Secret holding the API key, in the operator's cluster
	// resource namespace.
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

// ClusterOpsnowTokenSpec defines the API key, the endpoint, and the Secret
// written to every selected namespace.
type ClusterOpsnowTokenSpec struct {
	// apiKeySecretRef names the Secret and key holding the OpsNow API key,
	// in the operator's cluster resource namespace.
	// +required
	APIKeySecretRef ClusterSecretKeySelector `json:"apiKeySecretRef"`

	// secretName is the Secret the token is written to in each selected namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SecretName string `json:"secretName"`

	// namespaceSelector selects the namespaces by label. An empty or absent
	// selector selects none; {matchExpressions: [{key: team, operator:
	// Exists}]} selects every namespace with a team label.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// namespaces lists namespaces selected by name, besides those the
	// selector matches.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespaces []string `json:"namespaces,omitempty"`

	// endpoint is the OpsNow API base URL. It must be on the operator's
	// allowlist. Defaults to the operator's --default-endpoint.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="endpoint must be an http or https URL with a host"
	Endpoint string `json:"endpoint,omitempty"`

	// refreshBefore is how long before expiry the token is refreshed.
	// Defaults to one third of the token's lifetime.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="refreshBefore must be a positive duration"
	RefreshBefore *metav1.Duration `json:"refreshBefore,omitempty"`

	// suspend stops refreshing while true; the tokens in the Secrets then expire.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// secretTemplate holds labels and annotations merged onto every Secret written.
	// +optional
	SecretTemplate *SecretTemplate `json:"secretTemplate,omitempty"`
}

// NamespaceCounts counts a ClusterOpsnowToken's namespaces.
type NamespaceCounts struct {
	// selected is the number of namespaces selected (and not being deleted).
	Selected int32 `json:"selected"`
	// synced is the number of selected namespaces whose Secret holds the current token.
	Synced int32 `json:"synced"`
	// failed is the number of selected namespaces whose Secret could not be
	// written: a foreign Secret of that name, or a refused write.
	Failed int32 `json:"failed"`
}

// NamespaceFailure is why one namespace does not hold the token.
type NamespaceFailure struct {
	// namespace is the namespace concerned.
	Namespace string `json:"namespace"`
	// reason is SecretConflict or SecretWriteFailed.
	Reason string `json:"reason"`
	// message says what happened. It never holds a token or an API key.
	// +optional
	Message string `json:"message,omitempty"`
}

// ClusterOpsnowTokenStatus is the observed state of the token and its copies.
type ClusterOpsnowTokenStatus struct {
	// observedGeneration is the generation last acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// expiresAt is the expiry of the current token.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// lastRefreshTime is when the current token was issued.
	// +optional
	LastRefreshTime *metav1.Time `json:"lastRefreshTime,omitempty"`

	// nextRefreshTime is when the next exchange is planned: the scheduled
	// refresh, or the next retry after a failure.
	// +optional
	NextRefreshTime *metav1.Time `json:"nextRefreshTime,omitempty"`

	// failedAttempts counts consecutive failed attempts; reset on success.
	// +optional
	FailedAttempts int32 `json:"failedAttempts,omitempty"`

	// lastHandledRefreshRequest is the last value of the
	// auth.opsnow.io/refresh-requested-at annotation acted on.
	// +optional
	LastHandledRefreshRequest string `json:"lastHandledRefreshRequest,omitempty"`

	// lastFailureMessage describes the last failed attempt. It never holds
	// a token or an API key.
	// +optional
	LastFailureMessage string `json:"lastFailureMessage,omitempty"`

	// namespaces counts the selected, synced and failed namespaces.
	// +optional
	Namespaces NamespaceCounts `json:"namespaces,omitzero"`

	// failures lists, in namespace order, up to 20 namespaces that do not
	// hold the token and why.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	Failures []NamespaceFailure `json:"failures,omitempty"`

	// conditions hold Ready and the kstatus conditions Reconciling and Stalled.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ClusterOpsnowToken keeps, in every selected namespace, a Secret holding
// one OpsNow access token, exchanged once per lifetime from an API key in
// the operator's cluster resource namespace.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=opsnow
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Secret",type=string,JSONPath=`.spec.secretName`
// +kubebuilder:printcolumn:name="Selected",type=integer,JSONPath=`.status.namespaces.selected`
// +kubebuilder:printcolumn:name="Synced",type=integer,JSONPath=`.status.namespaces.synced`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.namespaces.failed`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Next Refresh",type=string,JSONPath=`.status.nextRefreshTime`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterOpsnowToken struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec defines the API key, endpoint, namespaces and Secret.
	// +required
	Spec ClusterOpsnowTokenSpec `json:"spec"`

	// status reports the token's state.
	// +optional
	Status ClusterOpsnowTokenStatus `json:"status,omitzero"`
}

// ClusterOpsnowTokenList contains a list of ClusterOpsnowToken.
// +kubebuilder:object:root=true
type ClusterOpsnowTokenList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitzero"`
	Items           []ClusterOpsnowToken `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ClusterOpsnowToken{}, &ClusterOpsnowTokenList{})
}
