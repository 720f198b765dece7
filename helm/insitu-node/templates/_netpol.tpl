{{/* Egress to cluster DNS, which every pod needs to resolve service names. */}}
{{- define "insitu.netpol.dns" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.dns.namespace | quote }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.podLabels | nindent 10 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}

{{- define "insitu.netpol.toHub" -}}
- to:
    - podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.hubPodLabels | nindent 10 }}
  ports:
    - port: {{ .Values.networkPolicy.hubPort }}
      protocol: TCP
{{- end -}}

{{/* Egress to one of insitu's services (dict "root" $ "component" "gate"). */}}
{{- define "insitu.netpol.toService" -}}
{{- $svc := index .root.Values.services .component -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "insitu.selectorLabels" . | nindent 10 }}
  ports:
    - port: {{ $svc.port }}
      protocol: TCP
{{- end -}}

{{/* The schedulers and workers of researchers' dask clusters. */}}
{{- define "insitu.netpol.daskClusterSelector" -}}
matchLabels:
  {{- toYaml .Values.networkPolicy.daskGateway.clusterPodLabels | nindent 2 }}
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values:
      {{- toYaml .Values.networkPolicy.daskGateway.clusterComponents | nindent 6 }}
{{- end -}}
