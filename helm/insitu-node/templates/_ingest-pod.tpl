{{/* The ingest pod (used by the Job and the CronJob in ingest.yaml). */}}
{{- define "insitu.ingestPod" -}}
{{- $ing := .Values.ingest }}
metadata:
  labels:
    {{- include "insitu.labels" (dict "root" . "component" "ingest") | nindent 4 }}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    {{- include "insitu.podSecurityContext" . | nindent 4 }}
  {{- include "insitu.scheduling" . | nindent 2 }}
  containers:
    - name: ingest
      image: {{ include "insitu.image" (dict "image" .Values.image) | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command:
        - insitu
        - ingest
        - {{ if $ing.source.url }}{{ $ing.source.url | quote }}{{ else }}/source{{ end }}
        - --dataset
        - {{ $ing.dataset | quote }}
        {{- with $ing.title }}
        - --title
        - {{ . | quote }}
        {{- end }}
        - --json
        {{- range $ing.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        {{- include "insitu.commonEnv" . | nindent 8 }}
      securityContext:
        {{- include "insitu.containerSecurityContext" . | nindent 8 }}
      resources:
        {{- toYaml $ing.resources | nindent 8 }}
      volumeMounts:
        {{- include "insitu.stateMounts" . | nindent 8 }}
        - name: stores
          mountPath: {{ include "insitu.home" . }}/stores
        - name: private
          mountPath: {{ include "insitu.home" . }}/private
        - name: site-key
          mountPath: {{ include "insitu.home" . }}/private/site.key
          subPath: site.key
          readOnly: true
        {{- if $ing.source.existingClaim }}
        - name: source
          mountPath: /source
          {{- with $ing.source.subPath }}
          subPath: {{ . | quote }}
          {{- end }}
          readOnly: true
        {{- end }}
  volumes:
    {{- include "insitu.stateVolume" . | nindent 4 }}
    - name: stores
      persistentVolumeClaim:
        claimName: {{ include "insitu.claimName" (dict "root" . "volume" "stores") }}
    - name: private
      persistentVolumeClaim:
        claimName: {{ include "insitu.claimName" (dict "root" . "volume" "private") }}
    - name: site-key
      secret:
        secretName: {{ .Values.siteKey.existingSecret | quote }}
        defaultMode: 0440
        items:
          - key: {{ .Values.siteKey.secretKey | quote }}
            path: site.key
    {{- if $ing.source.existingClaim }}
    - name: source
      persistentVolumeClaim:
        claimName: {{ $ing.source.existingClaim | quote }}
        readOnly: true
    {{- end }}
{{- end }}
