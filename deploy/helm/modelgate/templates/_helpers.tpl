{{- define "modelgate.fullname" -}}
{{ .Release.Name }}-modelgate
{{- end }}

{{- define "modelgate.labels" -}}
app.kubernetes.io/name: modelgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "modelgate.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "modelgate.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{ .Values.secrets.existingSecret }}
{{- else -}}
{{ include "modelgate.fullname" . }}-secrets
{{- end -}}
{{- end }}

{{- define "modelgate.runnerTlsSecret" -}}
{{- if .Values.tls.runnerSecret -}}
{{ .Values.tls.runnerSecret }}
{{- else -}}
{{ include "modelgate.fullname" . }}-runner-tls
{{- end -}}
{{- end }}

{{- define "modelgate.gatewayTlsSecret" -}}
{{- if .Values.tls.gatewaySecret -}}
{{ .Values.tls.gatewaySecret }}
{{- else -}}
{{ include "modelgate.fullname" . }}-gateway-tls
{{- end -}}
{{- end }}
