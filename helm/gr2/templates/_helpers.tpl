{{/* Names, labels, images, resources and the value checks shared by every template. */}}

{{- define "gr2.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release fullname: the prefix of every resource (the release name when it already contains the chart name). */}}
{{- define "gr2.fullname" -}}
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

{{- define "gr2.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object; pass (dict "ctx" $ "component" "feast"). */}}
{{- define "gr2.labels" -}}
helm.sh/chart: {{ include "gr2.chart" .ctx }}
{{ include "gr2.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: gr2
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "gr2.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gr2.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "gr2.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gr2.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The gr2 image: repository:tag (tag defaults to appVersion) or repository@digest. */}}
{{- define "gr2.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "gr2.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "gr2.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{/* Container security context; pass (dict "ctx" $ "runAsUser" 999) to override the user (Redis). */}}
{{- define "gr2.containerSecurityContext" -}}
{{- $sc := deepCopy .ctx.Values.containerSecurityContext -}}
{{- with .runAsUser }}{{ $_ := set $sc "runAsUser" . }}{{ $_ := set $sc "runAsGroup" . }}{{ end -}}
{{- toYaml $sc -}}
{{- end -}}

{{/* Bitnami-style resource presets: requests and limits for a size name. */}}
{{- define "gr2.resources.preset" -}}
{{- $presets := dict
  "nano" (dict "requests" (dict "cpu" "100m" "memory" "128Mi" "ephemeral-storage" "50Mi") "limits" (dict "cpu" "150m" "memory" "192Mi" "ephemeral-storage" "2Gi"))
  "micro" (dict "requests" (dict "cpu" "250m" "memory" "256Mi" "ephemeral-storage" "50Mi") "limits" (dict "cpu" "375m" "memory" "384Mi" "ephemeral-storage" "2Gi"))
  "small" (dict "requests" (dict "cpu" "500m" "memory" "512Mi" "ephemeral-storage" "50Mi") "limits" (dict "cpu" "750m" "memory" "768Mi" "ephemeral-storage" "2Gi"))
  "medium" (dict "requests" (dict "cpu" "500m" "memory" "1024Mi" "ephemeral-storage" "50Mi") "limits" (dict "cpu" "750m" "memory" "1536Mi" "ephemeral-storage" "2Gi"))
  "large" (dict "requests" (dict "cpu" "1" "memory" "2048Mi" "ephemeral-storage" "50Mi") "limits" (dict "cpu" "1.5" "memory" "3072Mi" "ephemeral-storage" "2Gi"))
  "xlarge" (dict "requests" (dict "cpu" "1" "memory" "3072Mi" "ephemeral-storage" "50Mi") "limits" (dict "cpu" "3" "memory" "6144Mi" "ephemeral-storage" "2Gi"))
  "2xlarge" (dict "requests" (dict "cpu" "1" "memory" "3072Mi" "ephemeral-storage" "50Mi") "limits" (dict "cpu" "6" "memory" "12288Mi" "ephemeral-storage" "2Gi"))
-}}
{{- index $presets .type | toYaml -}}
{{- end -}}

{{/* Requests and limits: explicit resources, else the preset; (dict "resources" r "preset" p "gpu" n) adds n GPUs. */}}
{{- define "gr2.resources" -}}
{{- $res := deepCopy (default dict .resources) -}}
{{- if not $res -}}
{{- $res = include "gr2.resources.preset" (dict "type" .preset) | fromYaml -}}
{{- end -}}
{{- if gt (int (default 0 .gpu)) 0 -}}
{{- $_ := set $res "requests" (merge (dict "nvidia.com/gpu" (int .gpu)) (default dict $res.requests)) -}}
{{- $_ := set $res "limits" (merge (dict "nvidia.com/gpu" (int .gpu)) (default dict $res.limits)) -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* Writable paths of a read-only root filesystem. */}}
{{- define "gr2.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}
{{- define "gr2.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 2Gi
{{- end -}}
{{- define "gr2.homeEnv" -}}
- name: HOME
  value: /tmp
- name: HF_HOME
  value: /tmp/hf
- name: XDG_CACHE_HOME
  value: /tmp/.cache
{{- end -}}

{{/* Serving names: the champion InferenceService, the challenger, the graph, the runtime. */}}
{{- define "gr2.serving.name" -}}
{{- printf "%s-reranker" (include "gr2.fullname" .) | trunc 45 | trimSuffix "-" -}}
{{- end -}}
{{- define "gr2.serving.challengerName" -}}
{{- printf "%s-challenger" (include "gr2.serving.name" .) -}}
{{- end -}}
{{- define "gr2.serving.graphName" -}}
{{- printf "%s-ab" (include "gr2.serving.name" .) -}}
{{- end -}}
{{- define "gr2.serving.runtimeName" -}}
{{- printf "%s-%s" (include "gr2.fullname" .) .Values.serving.runtime | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{/* The model format the ServingRuntime declares and the InferenceService asks for. */}}
{{- define "gr2.serving.modelFormat" -}}
{{- ternary "gr2" "gr2-triton" (eq .Values.serving.runtime "gr2") -}}
{{- end -}}
{{/* The HTTP port of the chosen backend (v2 routes and probes). */}}
{{- define "gr2.serving.httpPort" -}}
{{- ternary .Values.serving.containerPorts.http .Values.serving.triton.containerPorts.http (eq .Values.serving.runtime "gr2") -}}
{{- end -}}
{{/* The port the gr2 metrics are scraped from. */}}
{{- define "gr2.serving.metricsPort" -}}
{{- ternary .Values.serving.containerPorts.http .Values.serving.triton.containerPorts.metrics (eq .Values.serving.runtime "gr2") -}}
{{- end -}}
{{/* In-cluster URL of the champion predictor (port 80 in both deployment modes). */}}
{{- define "gr2.serving.url" -}}
{{- printf "http://%s-predictor.%s.svc.cluster.local" (include "gr2.serving.name" .) .Release.Namespace -}}
{{- end -}}
{{/* Redis: bundled Service or external host; the Feast connection string uses $(REDIS_PASSWORD) when a Secret is set. */}}
{{- define "gr2.redis.host" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s-redis" (include "gr2.fullname" .) -}}
{{- else -}}
{{- .Values.externalRedis.host -}}
{{- end -}}
{{- end -}}
{{- define "gr2.redis.port" -}}
{{- ternary 6379 .Values.externalRedis.port .Values.redis.enabled -}}
{{- end -}}
{{- define "gr2.redis.secret" -}}
{{- if .Values.redis.enabled -}}
{{- .Values.redis.auth.existingSecret -}}
{{- else -}}
{{- .Values.externalRedis.existingSecret -}}
{{- end -}}
{{- end -}}
{{- define "gr2.redis.secretKey" -}}
{{- ternary .Values.redis.auth.existingSecretPasswordKey .Values.externalRedis.existingSecretPasswordKey .Values.redis.enabled -}}
{{- end -}}
{{- define "gr2.redis.connection" -}}
{{- $conn := printf "%s:%v" (include "gr2.redis.host" .) (include "gr2.redis.port" .) -}}
{{- if include "gr2.redis.secret" . }}{{ $conn = printf "%s,password=$(REDIS_PASSWORD)" $conn }}{{ end -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.ssl }}{{ $conn = printf "%s,ssl=true" $conn }}{{ end -}}
{{- $conn -}}
{{- end -}}

{{/* The pipeline publication mode after auto-detection: crd or job. */}}
{{- define "gr2.pipeline.mode" -}}
{{- if eq .Values.pipeline.mode "auto" -}}
{{- ternary "crd" "job" (.Capabilities.APIVersions.Has "pipelines.kubeflow.org/v2beta1/Pipeline") -}}
{{- else -}}
{{- .Values.pipeline.mode -}}
{{- end -}}
{{- end -}}
{{- define "gr2.pipeline.versionName" -}}
{{- default (printf "gr2-%s" .Chart.AppVersion) .Values.pipeline.versionName -}}
{{- end -}}

{{/* "true" when the Pod/ServiceMonitor is rendered: asked for, or the Prometheus operator is there. */}}
{{- define "gr2.metrics.monitorEnabled" -}}
{{- $kind := .Values.metrics.monitor.kind -}}
{{- if and .Values.serving.enabled (or .Values.metrics.monitor.enabled (and .Values.metrics.monitor.autoDetect (.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind)))) -}}
true
{{- end -}}
{{- end -}}

{{/* Refuse values that cannot work, naming what to set. Called from every template through NOTES.txt and validate.yaml. */}}
{{- define "gr2.validateValues" -}}
{{- $errors := list -}}
{{- $s := .Values.serving -}}
{{- if $s.enabled -}}
{{- if not $s.storageUri -}}
{{- $errors = append $errors "set serving.storageUri to the serving bundle's location (s3://, gs://, pvc://claim/path)" -}}
{{- end -}}
{{- if lt (int $s.maxReplicas) (int $s.minReplicas) -}}
{{- $errors = append $errors "set serving.maxReplicas >= serving.minReplicas" -}}
{{- end -}}
{{- if and (eq (int $s.minReplicas) 0) (eq $s.deploymentMode "Standard") -}}
{{- $errors = append $errors "set serving.minReplicas >= 1 (scale to zero needs serving.deploymentMode=Knative)" -}}
{{- end -}}
{{- if and (eq $s.deploymentMode "Standard") (has $s.scaleMetric (list "concurrency" "rps")) -}}
{{- $errors = append $errors "set serving.scaleMetric to cpu or memory (concurrency and rps need serving.deploymentMode=Knative)" -}}
{{- end -}}
{{- if and (eq $s.deploymentMode "Knative") (has $s.scaleMetric (list "cpu" "memory")) (gt (int $s.maxReplicas) (int $s.minReplicas)) -}}
{{- $errors = append $errors "set serving.scaleMetric to concurrency or rps (the Knative autoscaler)" -}}
{{- end -}}
{{- if $s.ab.enabled -}}
{{- if not $s.ab.challengerStorageUri -}}
{{- $errors = append $errors "set serving.ab.challengerStorageUri to the challenger bundle's location" -}}
{{- end -}}
{{- if ne (add $s.ab.championWeight $s.ab.challengerWeight | int) 100 -}}
{{- $errors = append $errors "set serving.ab.championWeight + serving.ab.challengerWeight = 100" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $s.runtime "triton") (eq $s.deploymentMode "Knative") (include "gr2.metrics.monitorEnabled" .) -}}
{{- $errors = append $errors "set serving.deploymentMode=Standard to scrape Triton's metrics port (Knative exposes one port)" -}}
{{- end -}}
{{- end -}}
{{- if and (include "gr2.metrics.monitorEnabled" .) (eq .Values.metrics.monitor.kind "ServiceMonitor") (ne $s.deploymentMode "Standard") -}}
{{- $errors = append $errors "set metrics.monitor.kind=PodMonitor (a ServiceMonitor needs serving.deploymentMode=Standard)" -}}
{{- end -}}
{{- if and .Values.feast.enabled (not .Values.redis.enabled) (not .Values.externalRedis.host) -}}
{{- $errors = append $errors "set externalRedis.host (or redis.enabled=true for the bundled Redis)" -}}
{{- end -}}
{{- if and .Values.feast.enabled (eq .Values.feast.registry.type "sql") (not .Values.feast.registry.existingSecret) -}}
{{- $errors = append $errors "set feast.registry.existingSecret to the Secret holding the SQL registry URL" -}}
{{- end -}}
{{- if and .Values.feast.enabled (eq .Values.feast.registry.type "file") (hasPrefix "/" .Values.feast.registry.path) (not .Values.feast.persistence.enabled) -}}
{{- $errors = append $errors "set feast.persistence.enabled=true (a local file registry needs the /feast-data volume) or a s3:// / gs:// feast.registry.path" -}}
{{- end -}}
{{- $fp := .Values.feast.persistence -}}
{{- if and .Values.feast.enabled $fp.enabled (gt (int .Values.feast.replicaCount) 1) (not (has "ReadWriteMany" $fp.accessModes)) -}}
{{- $errors = append $errors "set feast.persistence.accessModes=[ReadWriteMany] (feast.replicaCount > 1 pods share /feast-data) or feast.registry.type=sql" -}}
{{- end -}}
{{- if and .Values.trainJob.enabled (not .Values.trainJob.runsClaim) -}}
{{- $errors = append $errors "set trainJob.runsClaim to a ReadWriteMany PersistentVolumeClaim holding the run directory" -}}
{{- end -}}
{{- if $errors -}}
{{- fail (printf "\n\nVALUES VALIDATION:\n  - %s\n" (join "\n  - " $errors)) -}}
{{- end -}}
{{- end -}}


{{/*
Environment that feature_store.yaml (the Feast ConfigMap) expands: Redis address and password, SQL registry URL.
Shared by the Feast feature server and the gr2 predictor, which read the same online store.
*/}}
{{- define "gr2.feast.storeEnv" -}}
- name: FEAST_USAGE
  value: "False"
{{- if include "gr2.redis.secret" . }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "gr2.redis.secret" . }}
      key: {{ include "gr2.redis.secretKey" . }}
{{- end }}
- name: GR2_REDIS_CONNECTION
  value: {{ include "gr2.redis.connection" . | quote }}
{{- if eq .Values.feast.registry.type "sql" }}
- name: GR2_FEAST_REGISTRY_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.feast.registry.existingSecret }}
      key: {{ .Values.feast.registry.existingSecretKey }}
{{- end }}
{{- end -}}
