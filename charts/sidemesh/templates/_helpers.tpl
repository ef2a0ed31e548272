{{/* The revision: `default` names istiod, istio-sidecar-injector, ... without a suffix. */}}
{{- define "sidemesh.revision" -}}
{{- .Values.revision | default "default" -}}
{{- end -}}

{{- define "sidemesh.suffix" -}}
{{- $rev := include "sidemesh.revision" . -}}
{{- if ne $rev "default" }}-{{ $rev }}{{ end -}}
{{- end -}}

{{- define "sidemesh.name" -}}
istiod{{ include "sidemesh.suffix" . }}
{{- end -}}

{{/* Everything lives in istio-system: the webhook, the sidecars and the docs name it. */}}
{{- define "sidemesh.namespace" -}}
{{- if ne .Release.Namespace "istio-system" -}}
{{- fail "install the sidemesh chart into istio-system: helm install ... -n istio-system" -}}
{{- end -}}
istio-system
{{- end -}}

{{/* Labels on every object of the revision; uninstall finds them by the install label. */}}
{{- define "sidemesh.labels" -}}
app.kubernetes.io/part-of: sidemesh
install.sidemesh.io/revision: {{ include "sidemesh.revision" . }}
istio.io/rev: {{ include "sidemesh.revision" . }}
{{- end -}}

{{- define "sidemesh.selectorLabels" -}}
app: istiod
istio.io/rev: {{ include "sidemesh.revision" . }}
{{- end -}}

{{- define "sidemesh.image" -}}
{{- $image := .Values.pilot.image -}}
{{- if or (contains "/" $image) (contains ":" $image) (contains "@" $image) -}}
{{- $image -}}
{{- else -}}
{{- .Values.pilot.hub | default .Values.global.hub }}/{{ $image }}:{{ .Values.pilot.tag | default .Values.global.tag -}}
{{- end -}}
{{- end -}}
