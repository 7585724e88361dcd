{{/*
Chart name, truncated to the 63 characters of a label value.
*/}}
{{- define "opsnow-token-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, the prefix of every object name. With the release
name "opsnow-token-operator" the names equal those of config/default.
*/}}
{{- define "opsnow-token-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "opsnow-token-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "opsnow-token-operator.labels" -}}
helm.sh/chart: {{ include "opsnow-token-operator.chart" . }}
{{ include "opsnow-token-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels selecting the manager pods.
*/}}
{{- define "opsnow-token-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "opsnow-token-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
control-plane: controller-manager
{{- end }}

{{/*
Name of the manager's ServiceAccount.
*/}}
{{- define "opsnow-token-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-controller-manager" (include "opsnow-token-operator.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The manager image: repository, then @digest or :tag (default appVersion).
*/}}
{{- define "opsnow-token-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the metrics Service.
*/}}
{{- define "opsnow-token-operator.metricsServiceName" -}}
{{- printf "%s-controller-manager-metrics-service" (include "opsnow-token-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the metrics port: https when metrics are served securely.
*/}}
{{- define "opsnow-token-operator.metricsPortName" -}}
{{- if .Values.metrics.secure }}https{{ else }}http{{ end }}
{{- end }}

{{/*
The manager's command-line flags. Every flag here is checked against the
manager's flag set by test/manifests.
*/}}
{{- define "opsnow-token-operator.args" -}}
{{- if .Values.leaderElection.enabled }}
- --leader-elect
{{- with .Values.leaderElection.leaseDuration }}
- --leader-elect-lease-duration={{ . }}
{{- end }}
{{- with .Values.leaderElection.renewDeadline }}
- --leader-elect-renew-deadline={{ . }}
{{- end }}
{{- with .Values.leaderElection.retryPeriod }}
- --leader-elect-retry-period={{ . }}
{{- end }}
{{- end }}
- --health-probe-bind-address=:8081
{{- if .Values.metrics.enabled }}
- --metrics-bind-address=:{{ .Values.metrics.port }}
{{- if not .Values.metrics.secure }}
- --metrics-secure=false
{{- end }}
{{- else }}
- --metrics-bind-address=0
{{- end }}
{{- with .Values.defaultEndpoint }}
- --default-endpoint={{ . }}
{{- end }}
{{- with .Values.allowedEndpoints }}
- --allowed-endpoints={{ join "," . }}
{{- end }}
{{- with .Values.watchNamespaces }}
- --watch-namespaces={{ join "," . }}
{{- end }}
{{- if and .Values.clusterTokens.enabled (not .Values.watchNamespaces) }}
- --cluster-resource-namespace={{ .Values.clusterTokens.resourceNamespace | default .Release.Namespace }}
{{- else }}
- --enable-cluster-tokens=false
{{- end }}
- --token-request-rate={{ .Values.tokenRequestRate }}
- --min-token-lifetime={{ .Values.minTokenLifetime }}
{{- with .Values.apiKeySecretSelector }}
- --api-key-secret-selector={{ . }}
{{- end }}
- --max-concurrent-reconciles={{ int .Values.maxConcurrentReconciles }}
- --zap-log-level={{ .Values.logLevel }}
- --zap-encoder={{ .Values.logFormat }}
{{- range .Values.extraArgs }}
- {{ . }}
{{- end }}
{{- end }}
