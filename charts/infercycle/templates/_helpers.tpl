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

{{/* The operator's rules in the namespaces it manages (a ClusterRole, or a Role in each). */}}
{{- define "infercycle.workloadRules" -}}
# Watch serving pods; drain and undrain them by flipping the serving label.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, patch]
# Recreate restarts go through the Eviction API, so PodDisruptionBudgets are respected.
- apiGroups: [""]
  resources: [pods/eviction]
  verbs: [create]
# Attached pods are drained through their readiness gate: a condition in the pod's status.
- apiGroups: [""]
  resources: [pods/status]
  verbs: [patch]
# Attached workloads (spec.targetRef) are read by name for their selector and replica count;
# never listed, never written.
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [get]
- apiGroups: [leaderworkerset.x-k8s.io]
  resources: [leaderworkersets]
  verbs: [get]
# Owned children, written by server-side apply (patch; create when absent). Never read, never
# deleted: the garbage collector removes them with their owner. Session volume claims come from
# the StatefulSet's volumeClaimTemplates, so the operator needs no rights on them.
- apiGroups: [""]
  resources: [services]
  verbs: [create, patch]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, patch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, patch]
# The agent token Secret of each deployment: read by name, created once. No list or watch, so
# no Secret can be found without knowing its name; the names (<deployment>-agent-token) are
# not known at install time, so resourceNames cannot narrow it further, and create is never
# narrowed by name (the name is not part of a create request's URL).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]
# Every recycle step is an Event; kopf posts its own through both APIs.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# The resources themselves: finalizer and bookkeeping annotations on the object, status.
- apiGroups: [infercycle.io]
  resources: [inferencedeployments]
  verbs: [get, list, watch, patch, update]
- apiGroups: [infercycle.io]
  resources: [inferencedeployments/status]
  verbs: [get, patch, update]
- apiGroups: [infercycle.io]
  resources: [inferencedeployments/finalizers]
  verbs: [update]
{{- end }}
