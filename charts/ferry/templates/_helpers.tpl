{{/* The release's full name, at most 63 characters. */}}
{{- define "ferry.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ferry.labels" -}}
{{ include "ferry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ferry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ferry.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ferry.tokenSecretName" -}}
{{- default (printf "%s-token" (include "ferry.fullname" .)) .Values.apiToken.existingSecret -}}
{{- end -}}

{{- define "ferry.manifestsConfigMap" -}}
{{- default (printf "%s-jobs" (include "ferry.fullname" .)) .Values.manifests.existingConfigMap -}}
{{- end -}}

{{- define "ferry.hasManifests" -}}
{{- if or .Values.jobs .Values.manifests.existingConfigMap -}}true{{- end -}}
{{- end -}}

{{/* The folders ferry may read: the shared data folder, or the node folders. */}}
{{- define "ferry.allowedRoots" -}}
{{- if eq .Values.mode "daemonset" -}}
{{- $roots := list -}}
{{- range .Values.daemonset.hostPaths }}{{ $roots = append $roots .mountPath }}{{ end -}}
{{- join ":" $roots -}}
{{- else -}}
{{- .Values.data.mountPath -}}
{{- end -}}
{{- end -}}

{{/*
The ferry container. Other charts may include it in their own pod specs (with this chart as a
dependency) to add ferry to any workload; it expects the volumes of "ferry.volumes".
*/}}
{{- define "ferry.container" -}}
name: ferry
image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
imagePullPolicy: {{ .Values.image.pullPolicy }}
args: [serve]
ports:
  - name: http
    containerPort: {{ .Values.ferry.port }}
    protocol: TCP
env:
  - name: FERRY_LISTEN
    value: "0.0.0.0:{{ .Values.ferry.port }}"
  - name: FERRY_DATABASE_URL
    value: sqlite:///var/lib/ferry/ferry.db
  - name: FERRY_API_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ include "ferry.tokenSecretName" . }}
        key: {{ .Values.apiToken.key }}
  - name: FERRY_ALLOWED_ROOTS
    value: {{ include "ferry.allowedRoots" . | quote }}
  {{- if include "ferry.hasManifests" . }}
  - name: FERRY_MANIFESTS_DIR
    value: /etc/ferry/jobs
  {{- end }}
  - name: FERRY_CHUNK_SIZE
    value: {{ .Values.ferry.chunkSize | quote }}
  - name: FERRY_CONCURRENCY
    value: {{ .Values.ferry.concurrency | quote }}
  - name: FERRY_MAX_BANDWIDTH
    value: {{ .Values.ferry.maxBandwidth | default "unlimited" | quote }}
  - name: FERRY_SCAN_INTERVAL
    value: {{ .Values.ferry.scanInterval | quote }}
  - name: FERRY_RESYNC_INTERVAL
    value: {{ .Values.ferry.resyncInterval | quote }}
  - name: FERRY_SETTLE_TIME
    value: {{ .Values.ferry.settleTime | quote }}
  - name: FERRY_MAX_ATTEMPTS
    value: {{ .Values.ferry.maxAttempts | quote }}
  - name: FERRY_CHECKSUM
    value: {{ .Values.ferry.checksum | quote }}
  - name: FERRY_FOLLOW_SYMLINKS
    value: {{ .Values.ferry.followSymlinks | quote }}
  - name: FERRY_LOG
    value: {{ .Values.ferry.log | quote }}
  - name: FERRY_LOG_FORMAT
    value: {{ .Values.ferry.logFormat | quote }}
  - name: FERRY_S3_FORCE_PATH_STYLE
    value: {{ .Values.s3.forcePathStyle | quote }}
  - name: AWS_REGION
    value: {{ .Values.s3.region | quote }}
  {{- with .Values.s3.endpoint }}
  - name: AWS_ENDPOINT_URL
    value: {{ . | quote }}
  {{- end }}
  {{- with .Values.ferry.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.credentials.existingSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- if .Values.probes.liveness.enabled }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
{{- end }}
{{- if .Values.probes.readiness.enabled }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- end }}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 2
  failureThreshold: 30
resources:
  {{- toYaml .Values.resources | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: ferry-state
    mountPath: /var/lib/ferry
  {{- if include "ferry.hasManifests" . }}
  - name: ferry-jobs
    mountPath: /etc/ferry/jobs
    readOnly: true
  {{- end }}
  {{- if eq .Values.mode "daemonset" }}
  {{- $moves := include "ferry.movesFiles" . }}
  {{- range .Values.daemonset.hostPaths }}
  - name: {{ .name }}
    mountPath: {{ .mountPath }}
    readOnly: {{ not $moves }}
  {{- end }}
  {{- else }}
  - name: data
    mountPath: {{ .Values.data.mountPath }}
    readOnly: {{ not (include "ferry.movesFiles" .) }}
  {{- end }}
{{- end -}}

{{/* The volumes the ferry container needs, but for the state volume, which differs by mode. */}}
{{- define "ferry.volumes" -}}
{{- if include "ferry.hasManifests" . }}
- name: ferry-jobs
  configMap:
    name: {{ include "ferry.manifestsConfigMap" . }}
{{- end }}
{{- end -}}

{{- define "ferry.podAnnotations" -}}
{{- if .Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.ferry.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* "true" when a job moves its files (afterUpload: delete): ferry then needs to write its folders, which are read-only otherwise. */}}
{{- define "ferry.movesFiles" -}}
{{- range .Values.jobs }}{{ if eq (.afterUpload | default "keep") "delete" }}true{{ end }}{{ end }}
{{- end -}}
