{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "mljob-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. A release named mljob-operator gets the same names as
manifests/ (mljob-operator, mljob-operator-data).
*/}}
{{- define "mljob-operator.fullname" -}}
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

{{- define "mljob-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mljob-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mljob-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mljob-operator.labels" -}}
helm.sh/chart: {{ include "mljob-operator.chart" . }}
{{ include "mljob-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mljob-operator
{{- end }}

{{- define "mljob-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mljob-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mljob-operator.claimName" -}}
{{- default (printf "%s-data" (include "mljob-operator.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}
