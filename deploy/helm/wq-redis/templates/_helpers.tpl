{{/* Names, labels and the values every template shares. */}}

{{- define "wq-redis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-<chart>", or the release alone when it already contains the chart name. */}}
{{- define "wq-redis.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "wq-redis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: stable for the life of a release (Deployments cannot change them). */}}
{{- define "wq-redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wq-redis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "wq-redis.labels" -}}
helm.sh/chart: {{ include "wq-redis.chart" . }}
{{ include "wq-redis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wq-redis
{{- end -}}

{{- define "wq-redis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wq-redis.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "wq-redis.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "wq-redis.redisName" -}}
{{- printf "%s-redis" (include "wq-redis.fullname" .) -}}
{{- end -}}

{{/* The Secret holding the bundled Redis' password. */}}
{{- define "wq-redis.redisSecretName" -}}
{{- .Values.redis.auth.existingSecret | default (include "wq-redis.redisName" .) -}}
{{- end -}}

{{/* The Secret holding an external Redis' URL. */}}
{{- define "wq-redis.externalSecretName" -}}
{{- .Values.externalRedis.existingSecret | default (printf "%s-redis-url" (include "wq-redis.fullname" .)) -}}
{{- end -}}

{{/*
Environment giving a container WQ_REDIS_URL.  For the bundled Redis the URL is composed
by Kubernetes from the password Secret ($(VAR) expansion), so the password never appears
in a manifest or on a command line.
*/}}
{{- define "wq-redis.redisUrlEnv" -}}
{{- if .Values.redis.enabled -}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "wq-redis.redisSecretName" . }}
      key: {{ .Values.redis.auth.existingSecretPasswordKey }}
- name: WQ_REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:%d/0" (include "wq-redis.redisName" .) (int .Values.redis.port) | quote }}
{{- else -}}
{{- if not (or .Values.externalRedis.url .Values.externalRedis.existingSecret) -}}
{{- fail "redis.enabled is false: set externalRedis.url or externalRedis.existingSecret" -}}
{{- end -}}
- name: WQ_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "wq-redis.externalSecretName" . }}
      key: {{ .Values.externalRedis.existingSecretUrlKey }}
{{- end -}}
{{- end -}}

{{/*
One pool's settings: poolDefaults overlaid with the pool's own keys.  hasKey, not
mergeOverwrite, so a pool can set a value to false, 0 or [] (mergeOverwrite skips empty
values).  autoscaling and podDisruptionBudget merge one level deeper.
Call: include "wq-redis.pool" (dict "root" $ "spec" $spec) | fromYaml
*/}}
{{- define "wq-redis.pool" -}}
{{- $spec := .spec | default dict -}}
{{- $out := dict -}}
{{- range $key, $default := .root.Values.poolDefaults -}}
{{- if and (has $key (list "autoscaling" "podDisruptionBudget")) (kindIs "map" (get $spec $key)) -}}
{{- $merged := deepCopy $default -}}
{{- range $k, $v := get $spec $key -}}
{{- $_ := set $merged $k $v -}}
{{- end -}}
{{- $_ := set $out $key $merged -}}
{{- else if hasKey $spec $key -}}
{{- $_ := set $out $key (get $spec $key) -}}
{{- else -}}
{{- $_ := set $out $key (deepCopy $default) -}}
{{- end -}}
{{- end -}}
{{- range $key, $value := $spec -}}
{{- if not (hasKey $out $key) -}}
{{- $_ := set $out $key $value -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{- define "wq-redis.poolName" -}}
{{- printf "%s-%s" (include "wq-redis.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wq-redis.poolSelectorLabels" -}}
{{ include "wq-redis.selectorLabels" .root }}
app.kubernetes.io/component: worker
wq-redis/pool: {{ .name }}
{{- end -}}
