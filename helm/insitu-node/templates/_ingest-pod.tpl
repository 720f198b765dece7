{{/* The ingest pod (used by the Job and the CronJob in ingest.yaml). */}}
{{- define "insitu.ingestPod" -}}
{{- $ing := .Values.ingest }}
metadata:
  labels:
    {{- include "insitu.labels" (dict "root" . "component" "ingest") | nindent 4 }}
spec:
  restartPolicy: Never
  # Kubernetes stops an ingest that runs longer than this.
  activeDeadlineSeconds: {{ $ing.activeDeadlineSeconds }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    {{- include "insitu.podSecurityContext" . | nindent 4 }}
  {{- include "insitu.scheduling" . | nindent 2 }}
  {{- if $ing.pacs.existingSecret }}
  initContainers:
    # The PACS credential from its Secret into a memory-backed folder, readable
    # by the ingest's user only (insitu refuses group-readable secret files,
    # and Kubernetes makes Secret files group-readable under fsGroup).
    - name: pacs-credentials
      image: {{ include "insitu.image" (dict "image" .Values.image) | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command:
        - install
        - -m
        - "0400"
        - /etc/insitu/pacs-secret/credential
        - {{ include "insitu.pacsCredentialFile" . | quote }}
      securityContext:
        {{- include "insitu.containerSecurityContext" . | nindent 8 }}
      resources:
        requests: {cpu: 10m, memory: 16Mi}
        limits: {memory: 32Mi}
      volumeMounts:
        - name: pacs-secret
          mountPath: /etc/insitu/pacs-secret
          readOnly: true
        - name: pacs-credentials
          mountPath: /run/insitu/pacs
  {{- end }}
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
        - name: fingerprints
          mountPath: {{ include "insitu.home" . }}/private/fingerprints
        - name: site-key
          mountPath: {{ include "insitu.home" . }}/private/site.key
          subPath: site.key
          readOnly: true
        {{- if $ing.pacs.existingSecret }}
        - name: pacs-credentials
          mountPath: /run/insitu/pacs
          readOnly: true
        {{- end }}
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
    - name: fingerprints
      persistentVolumeClaim:
        claimName: {{ include "insitu.claimName" (dict "root" . "volume" "fingerprints") }}
    - name: site-key
      secret:
        secretName: {{ .Values.siteKey.existingSecret | quote }}
        defaultMode: 0440
        items:
          - key: {{ .Values.siteKey.secretKey | quote }}
            path: site.key
    {{- if $ing.pacs.existingSecret }}
    - name: pacs-secret
      secret:
        secretName: {{ $ing.pacs.existingSecret | quote }}
        defaultMode: 0400
        items:
          - key: {{ ($ing.pacs.tokenKey | default $ing.pacs.passwordKey) | quote }}
            path: credential
    - name: pacs-credentials
      emptyDir:
        medium: Memory
        sizeLimit: 1Mi
    {{- end }}
    {{- if $ing.source.existingClaim }}
    - name: source
      persistentVolumeClaim:
        claimName: {{ $ing.source.existingClaim | quote }}
        readOnly: true
    {{- end }}
{{- end }}


{{/* Where the ingest reads its PACS password (or token) from. */}}
{{- define "insitu.pacsCredentialFile" -}}
/run/insitu/pacs/{{ if .Values.ingest.pacs.tokenKey }}token{{ else }}password{{ end }}
{{- end -}}
