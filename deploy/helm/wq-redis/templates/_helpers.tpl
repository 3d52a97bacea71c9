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

{{- define "wq-redis.sentinelName" -}}
{{- printf "%s-sentinel" (include "wq-redis.fullname" .) -}}
{{- end -}}

{{/* Whether the bundled Redis runs with sentinels (redis.enabled and sentinel.enabled). */}}
{{- define "wq-redis.sentinel" -}}
{{- if and .Values.redis.enabled .Values.redis.sentinel.enabled -}}true{{- end -}}
{{- end -}}

{{/* Pod N's fully qualified DNS name: include "wq-redis.podHost" (dict "root" $ "set" NAME "index" N) */}}
{{- define "wq-redis.podHost" -}}
{{- printf "%s-%d.%s-headless.%s.svc.%s" .set (int .index) .set .root.Release.Namespace .root.Values.clusterDomain -}}
{{- end -}}

{{/* "host:port,host:port..." of every sentinel pod. */}}
{{- define "wq-redis.sentinelHosts" -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.redis.sentinel.replicas) -}}
{{- $host := include "wq-redis.podHost" (dict "root" $ "set" (include "wq-redis.sentinelName" $) "index" $i) -}}
{{- $hosts = append $hosts (printf "%s:%d" $host (int $.Values.redis.sentinel.port)) -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end -}}

{{/*
The bundled Redis' URL, $(REDIS_PASSWORD) left for Kubernetes to expand: the sentinels
(redis+sentinel://, the primary found through them), pod 0 when it has replicas but no
sentinels (the Service would also reach the replicas, which refuse writes), else the
Service.  rediss when TLS is on.
*/}}
{{- define "wq-redis.bundledUrl" -}}
{{- $s := ternary "s" "" (not (empty .Values.tls.existingSecret)) -}}
{{- if include "wq-redis.sentinel" . -}}
{{- printf "redis%s+sentinel://:$(REDIS_PASSWORD)@%s/%s/0?sentinel_password=$(REDIS_PASSWORD)" $s (include "wq-redis.sentinelHosts" .) .Values.redis.sentinel.masterSet -}}
{{- else if gt (int .Values.redis.replicas) 0 -}}
{{- printf "redis%s://:$(REDIS_PASSWORD)@%s:%d/0" $s (include "wq-redis.podHost" (dict "root" . "set" (include "wq-redis.redisName" .) "index" 0)) (int .Values.redis.port) -}}
{{- else -}}
{{- printf "redis%s://:$(REDIS_PASSWORD)@%s:%d/0" $s (include "wq-redis.redisName" .) (int .Values.redis.port) -}}
{{- end -}}
{{- end -}}

{{/*
Environment giving a container WQ_REDIS_URL.  For the bundled Redis the URL is composed
by Kubernetes from the password Secret ($(VAR) expansion), so the password never appears
in a manifest or on a command line; the same for an external sentinel password.  Then
the TLS files' variables, when TLS is on.
*/}}
{{- define "wq-redis.redisUrlEnv" -}}
{{- if .Values.redis.enabled -}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "wq-redis.redisSecretName" . }}
      key: {{ .Values.redis.auth.existingSecretPasswordKey }}
- name: WQ_REDIS_URL
  value: {{ include "wq-redis.bundledUrl" . | quote }}
{{- else -}}
{{- $ext := .Values.externalRedis -}}
{{- if not (or $ext.url $ext.existingSecret) -}}
{{- fail "redis.enabled is false: set externalRedis.url or externalRedis.existingSecret" -}}
{{- end -}}
{{- if $ext.sentinelPassword.existingSecret -}}
{{- if and $ext.url (not (regexMatch `^(redis|rediss)\+sentinel://|^sentinel://` $ext.url)) -}}
{{- fail "externalRedis.sentinelPassword needs a redis+sentinel:// (or rediss+sentinel://) externalRedis.url" -}}
{{- end -}}
- name: WQ_REDIS_BASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "wq-redis.externalSecretName" . }}
      key: {{ $ext.existingSecretUrlKey }}
- name: WQ_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $ext.sentinelPassword.existingSecret }}
      key: {{ $ext.sentinelPassword.existingSecretKey }}
- name: WQ_REDIS_URL
  value: {{ printf "$(WQ_REDIS_BASE_URL)%ssentinel_password=$(WQ_SENTINEL_PASSWORD)" (ternary "&" "?" (contains "?" $ext.url)) | quote }}
{{- else -}}
- name: WQ_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "wq-redis.externalSecretName" . }}
      key: {{ $ext.existingSecretUrlKey }}
{{- end -}}
{{- end -}}
{{- with .Values.tls.existingSecret }}
- name: WQ_TLS_CA_CERT
  value: {{ printf "%s/ca.crt" $.Values.tls.mountPath | quote }}
{{- if $.Values.tls.authClients }}
- name: WQ_TLS_CERT
  value: {{ printf "%s/tls.crt" $.Values.tls.mountPath | quote }}
- name: WQ_TLS_KEY
  value: {{ printf "%s/tls.key" $.Values.tls.mountPath | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* The TLS Secret's volume (a list item under volumes:), when TLS is on. */}}
{{- define "wq-redis.tlsVolume" -}}
{{- with .Values.tls.existingSecret }}
- name: tls
  secret:
    secretName: {{ . }}
    # 0440: readable by the pod's fsGroup, not by others.
    defaultMode: 288
{{- end -}}
{{- end -}}

{{/* redis-cli's TLS options inside the Redis and sentinel pods (their files under /tls). */}}
{{- define "wq-redis.cliTls" -}}
{{- if .Values.tls.existingSecret -}}
--tls --cacert /tls/ca.crt --cert /tls/tls.crt --key /tls/tls.key
{{- end -}}
{{- end -}}

{{/*
A shell function printing "HOST PORT" of the current primary, or nothing: first the
sentinels (get-master-addr-by-name), then the Redis pods (the one whose ROLE is master).
Used by Redis pods (to start as a replica of the primary that is, not of pod 0, after a
failover) and by sentinels (to monitor it).  $self is the calling pod's own DNS name.
*/}}
{{- define "wq-redis.findMaster" -}}
{{- $redis := include "wq-redis.redisName" . -}}
{{- $sentinel := include "wq-redis.sentinelName" . -}}
{{- $tls := include "wq-redis.cliTls" . -}}
find_master() {
  for s in {{ range $i := until (int .Values.redis.sentinel.replicas) }}{{ include "wq-redis.podHost" (dict "root" $ "set" $sentinel "index" $i) }} {{ end }}; do
    [ "$s" = "$self" ] && continue
    set -- $(timeout 3 redis-cli {{ $tls }} -h "$s" -p {{ .Values.redis.sentinel.port }} --no-auth-warning --raw sentinel get-master-addr-by-name {{ .Values.redis.sentinel.masterSet }} 2>/dev/null)
    if [ $# -eq 2 ]; then echo "$1 $2"; return; fi
  done
  for r in {{ range $i := until (add1 (int .Values.redis.replicas) | int) }}{{ include "wq-redis.podHost" (dict "root" $ "set" $redis "index" $i) }} {{ end }}; do
    [ "$r" = "$self" ] && continue
    if [ "$(timeout 3 redis-cli {{ $tls }} -h "$r" -p {{ .Values.redis.port }} --no-auth-warning --raw role 2>/dev/null | head -n 1)" = master ]; then
      echo "$r {{ .Values.redis.port }}"; return
    fi
  done
}
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
