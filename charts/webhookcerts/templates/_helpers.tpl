{{/* Names, labels and the RBAC rules shared by the templates. */}}

{{- define "webhookcerts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "webhookcerts.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "webhookcerts.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "webhookcerts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "webhookcerts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "webhookcerts.labels" -}}
helm.sh/chart: {{ include "webhookcerts.chart" . }}
{{ include "webhookcerts.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: webhookcerts
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "webhookcerts.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "webhookcerts.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "webhookcerts.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "webhookcerts.peering" -}}
{{- gt (int .Values.replicaCount) 1 | ternary "true" "" -}}
{{- end -}}

{{- define "webhookcerts.peeringName" -}}
{{- default (include "webhookcerts.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/*
What the operator does in the namespaces it serves, verb for verb (README.md, "RBAC", says where each
comes from). Used as a ClusterRole's rules when every namespace is watched, or as a Role's in each
watched namespace. tests/integration/test_chart_rbac.py runs the operator with exactly these rules.
*/}}
{{- define "webhookcerts.namespacedRules" -}}
# WebhookCertificates: Kopf lists and watches them into the operator's in-memory view; the operator
# reads one afresh (get) after a write conflict; patch is kept for Kopf's own bookkeeping.
- apiGroups: ["webhookcerts.io"]
  resources: ["webhookcertificates"]
  verbs: ["get", "list", "watch", "patch"]
# Their status: merge patches of what changed.
- apiGroups: ["webhookcerts.io"]
  resources: ["webhookcertificates/status"]
  verbs: ["patch"]
# Key, trust store and bundle Secrets: listed and watched with the operator's label selector
# (app.kubernetes.io/managed-by=webhookcerts: never every Secret; RBAC cannot narrow a list to a label,
# the selector does), read by name where a user made one by hand, created, brought up to date, and the
# retired key destroyed at cut-over.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# spec.trust.configMap: the trust store's copy in a ConfigMap, read by name, created, brought up to date.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
# An Event for every state change.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# PresentationReports (what the receiving endpoints saw the provider present): listed and watched into
# the view, one read afresh by name. The operator never writes one: each reporter writes its own.
- apiGroups: ["webhookcerts.io"]
  resources: ["presentationreports"]
  verbs: ["get", "list", "watch"]
# A report counts only while the pod it names runs with the report's uid and serves the trust store:
# that pod is read by name when its report changes (never listed or watched).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get"]
{{- if .Values.consumers.enabled }}
# Consumers (spec.consumers), only with consumers.enabled: patching a pod template is running any
# image, so the admission policy (admissionPolicy.enabled) holds these patches to the trust-hash
# annotations. Hot reload annotates the pods that mount the trust store...
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
# ...Rollout annotates the pod template of their Deployment or StatefulSet.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["list", "patch"]
{{- end }}
{{- end -}}

{{/* What Kopf itself reads cluster-wide, whatever the namespaces watched. */}}
{{- define "webhookcerts.clusterRules" -}}
# Kopf notices CRDs being added or removed (it serves WebhookCertificates once their CRD exists).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.watchNamespaces }}
# Kopf notices the watched namespaces being created or deleted.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end -}}
