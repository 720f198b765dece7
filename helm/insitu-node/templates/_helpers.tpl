{{/*
Names. Resources are named "<namePrefix>-<component>" (default "insitu-gate",
...), not after the release: the hub's service URLs and the researchers'
environment in values.yaml (which Helm does not template) refer to them.
*/}}
{{- define "insitu.prefix" -}}
{{- .Values.namePrefix | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "insitu.name" -}}
{{- printf "%s-%s" (include "insitu.prefix" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "insitu.labels" -}}
app.kubernetes.io/name: insitu
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: insitu-node
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The labels a Service or NetworkPolicy selects a component's pods by. */}}
{{- define "insitu.selectorLabels" -}}
app.kubernetes.io/name: insitu
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "insitu.image" -}}
{{- $img := .image -}}
{{- if $img.digest -}}
{{ printf "%s@%s" $img.repository $img.digest }}
{{- else -}}
{{ printf "%s:%s" $img.repository (toString $img.tag) }}
{{- end -}}
{{- end -}}

{{/* Pod-level security: never root, the runtime's default seccomp profile. */}}
{{- define "insitu.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.security.runAsUser }}
runAsGroup: {{ .Values.security.runAsGroup }}
fsGroup: {{ .Values.security.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security: read-only root, no escalation, no capabilities. */}}
{{- define "insitu.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Where the node home lives inside every insitu container. */}}
{{- define "insitu.home" -}}
/var/lib/insitu
{{- end -}}

{{/* The environment every insitu process shares. */}}
{{- define "insitu.commonEnv" -}}
- name: INSITU_HOME
  value: {{ include "insitu.home" . | quote }}
- name: HOME
  value: /tmp
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end -}}

{{/*
Volumes. "state" is the node home (catalog, audit log, airlock, federation
approvals); "stores" the published stores; "private" the site key, pseudonym
links and quarantine; "fingerprints" the pixel-provenance index. The templates decide per component which of them a pod
gets, and how: see docs/deploy.md ("What is mounted where").
*/}}
{{- define "insitu.stateVolume" -}}
- name: state
  persistentVolumeClaim:
    claimName: {{ include "insitu.claimName" (dict "root" . "volume" "state") }}
- name: config
  configMap:
    name: {{ include "insitu.name" (dict "root" . "component" "config") }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.security.tmpSizeLimit }}
{{- end -}}

{{/*
The pixel-provenance index (private/fingerprints) for the pods whose disclosure
checks read it (airlock, SuperNode): its own claim, read-only, at the path the
engine reads (insitu.disclosure.provenance.fingerprints_dir). No other part of
the private area comes with it.
*/}}
{{- define "insitu.fingerprintsMount" -}}
- name: fingerprints
  mountPath: {{ include "insitu.home" . }}/private/fingerprints
  readOnly: true
{{- end -}}

{{- define "insitu.fingerprintsVolume" -}}
- name: fingerprints
  persistentVolumeClaim:
    claimName: {{ include "insitu.claimName" (dict "root" . "volume" "fingerprints") }}
    readOnly: true
{{- end -}}

{{- define "insitu.stateMounts" -}}
- name: state
  mountPath: {{ include "insitu.home" . }}
- name: config
  mountPath: {{ include "insitu.home" . }}/insitu.toml
  subPath: insitu.toml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "insitu.claimName" -}}
{{- $p := index .root.Values.persistence .volume -}}
{{- if $p.existingClaim -}}
{{ $p.existingClaim }}
{{- else -}}
{{ include "insitu.name" (dict "root" .root "component" .volume) }}
{{- end -}}
{{- end -}}

{{- define "insitu.scheduling" -}}
{{- with .Values.nodeServices.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeServices.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeServices.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
