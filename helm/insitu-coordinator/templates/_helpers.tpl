{{- define "coord.name" -}}
{{- printf "%s-%s" (.root.Values.namePrefix | trunc 40 | trimSuffix "-") .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "coord.selectorLabels" -}}
app.kubernetes.io/name: insitu-coordinator
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "coord.labels" -}}
{{ include "coord.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: insitu
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
insitu.io/federation: {{ .root.Values.federation | quote }}
{{- end -}}

{{- define "coord.image" -}}
{{- if .digest -}}
{{ printf "%s@%s" .repository .digest }}
{{- else -}}
{{ printf "%s:%s" .repository (toString .tag) }}
{{- end -}}
{{- end -}}
