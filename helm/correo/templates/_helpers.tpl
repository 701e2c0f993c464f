{{/* Names and labels shared by every template. */}}

{{- define "correo.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "correo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "correo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "correo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "correo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "correo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: correo
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "correo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "correo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "correo.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
What the operator calls, namespace by namespace. Kept equal to
correo_operator.kube.PERMISSIONS + correo_operator.kopfapp.KOPF_PERMISSIONS
(tests/helm checks it): the reconciler lists, applies (patch + create) and
prunes its children; reads the referenced Secrets and creates the DKIM key;
deletes volume claims under reclaimPolicy Delete; posts Events; writes status.
kopf watches MailDomains, Mailboxes and Secrets and patches its finalizer and
annotations on MailDomains.
*/}}
{{- define "correo.namespacedRules" -}}
- apiGroups: ["correo.dev"]
  resources: ["maildomains"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["correo.dev"]
  resources: ["mailboxes"]
  verbs: ["list", "watch"]
- apiGroups: ["correo.dev"]
  resources: ["maildomains/status", "mailboxes/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies", "ingresses"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* Only when serving every namespace: kopf follows CRDs to notice new resources. */}}
{{- define "correo.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end -}}
