{{/*
Names, labels and the image string: every template takes them from here.
Kubernetes names and label values are limited to 63 characters.
*/}}

{{- define "token-health-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "token-health-exporter.fullname" -}}
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

{{/* One shard's Deployment name: the full name alone when there is one shard. */}}
{{- define "token-health-exporter.shardName" -}}
{{- $root := index . 0 }}
{{- $shard := index . 1 }}
{{- if eq (int $root.Values.shards) 1 }}
{{- include "token-health-exporter.fullname" $root }}
{{- else }}
{{- printf "%s-shard-%d" (include "token-health-exporter.fullname" $root | trunc 55 | trimSuffix "-") (int $shard) }}
{{- end }}
{{- end }}

{{- define "token-health-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "token-health-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "token-health-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "token-health-exporter.labels" -}}
helm.sh/chart: {{ include "token-health-exporter.chart" . }}
{{ include "token-health-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: exporter
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Service label the ServiceMonitor's jobLabel names. */}}
{{- define "token-health-exporter.jobLabelKey" -}}
token-health-exporter/job
{{- end }}

{{- define "token-health-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "token-health-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "token-health-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "token-health-exporter.configMapName" -}}
{{- default (printf "%s-config" (include "token-health-exporter.fullname" . | trunc 56 | trimSuffix "-")) .Values.existingConfigMap }}
{{- end }}
