{{/* Labels of the monitoring objects (PodMonitor, dashboard ConfigMap, PrometheusRule). */}}
{{- define "correo.monitoringLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "correo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: monitoring
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: correo
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
