{{/* The chart name, shortened to what a label value allows. */}}
{{- define "infercycle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of the operator's objects: <release>-infercycle, or just infercycle for that release. */}}
{{- define "infercycle.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "infercycle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infercycle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "infercycle.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "infercycle.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: infercycle
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "infercycle.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-operator" (include "infercycle.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image; the agent sidecar runs from the same one unless agent.image says otherwise. */}}
{{- define "infercycle.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "infercycle.agentImage" -}}
{{- default (include "infercycle.image" .) .Values.agent.image }}
{{- end }}

{{/* Where the Prometheus credentials Secret is mounted. */}}
{{- define "infercycle.prometheusSecretDir" -}}
/var/run/secrets/infercycle/prometheus
{{- end }}

{{/* Refuses credential settings that cannot work, with the fix in the message. */}}
{{- define "infercycle.validatePrometheusAuth" -}}
{{- $auth := .Values.prometheus.auth }}
{{- $basic := or $auth.usernameKey $auth.passwordKey }}
{{- if $auth.secretName }}
{{- if and $auth.tokenKey $basic }}
{{- fail "prometheus.auth: set tokenKey (bearer token) or usernameKey and passwordKey (basic auth), not both" }}
{{- end }}
{{- if not (or $auth.tokenKey $basic) }}
{{- fail "prometheus.auth.secretName is set but no key is: set tokenKey, or usernameKey and passwordKey" }}
{{- end }}
{{- if and $basic (not (and $auth.usernameKey $auth.passwordKey)) }}
{{- fail "prometheus.auth: basic auth needs both usernameKey and passwordKey" }}
{{- end }}
{{- else if or $auth.tokenKey $basic }}
{{- fail "prometheus.auth: tokenKey, usernameKey and passwordKey name keys of a Secret; set prometheus.auth.secretName too" }}
{{- end }}
{{- end }}
