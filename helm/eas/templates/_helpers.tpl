{{- define "eas.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "eas.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "eas.labels" -}}
app.kubernetes.io/name: {{ include "eas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "eas.serverSelector" -}}
app.kubernetes.io/name: {{ include "eas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "eas.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "eas.raycluster" -}}
{{ include "eas.fullname" . }}-ray
{{- end -}}

{{- define "eas.credentialsSecret" -}}
{{ .Values.credentials.existingSecret | default (printf "%s-credentials" (include "eas.fullname" .)) }}
{{- end -}}

{{- define "eas.storeSecret" -}}
{{ .Values.store.postgresql.existingSecret | default (printf "%s-store" (include "eas.fullname" .)) }}
{{- end -}}

{{- define "eas.objectStoreSecret" -}}
{{ .Values.objectStore.existingSecret | default (printf "%s-objectstore" (include "eas.fullname" .)) }}
{{- end -}}

{{- define "eas.releaseSelector" -}}
app.kubernetes.io/name: {{ include "eas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Writable scratch space under a read-only root filesystem (Ray's session files, temp files). */}}
{{- define "eas.tmpVolume" -}}
- name: tmp
  emptyDir: {}
{{- end -}}

{{/* Environment every pod that runs eas code needs: Ray on the pod network, object store settings. */}}
{{- define "eas.commonEnv" -}}
- name: HOME
  value: /tmp
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
- name: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
  value: "1"
{{- if .Values.objectStore.endpoint }}
- name: EAS_OSS_ENDPOINT
  valueFrom: {configMapKeyRef: {name: {{ include "eas.fullname" . }}, key: EAS_OSS_ENDPOINT}}
{{- end }}
{{- if .Values.objectStore.region }}
- name: EAS_OSS_REGION
  valueFrom: {configMapKeyRef: {name: {{ include "eas.fullname" . }}, key: EAS_OSS_REGION}}
{{- end }}
{{- if or .Values.objectStore.existingSecret .Values.objectStore.accessKeyId }}
- name: EAS_OSS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ include "eas.objectStoreSecret" . }}, key: EAS_OSS_ACCESS_KEY_ID}}
- name: EAS_OSS_ACCESS_KEY_SECRET
  valueFrom: {secretKeyRef: {name: {{ include "eas.objectStoreSecret" . }}, key: EAS_OSS_ACCESS_KEY_SECRET}}
{{- end }}
{{- end -}}

{{/* eas-server joins the RayCluster as a node: with token auth it needs the token KubeRay generated. */}}
{{- define "eas.rayAuthEnv" -}}
{{- if .Values.ray.tokenAuth }}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom: {secretKeyRef: {name: {{ include "eas.raycluster" . }}, key: auth_token}}
{{- end }}
{{- end -}}
