{{/*
The app.kubernetes.io/name label: the selector of the DaemonSet.
*/}}
{{- define "ipvs-node-controller.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of every object. Not derived from the release name: one controller per node is the only
sensible setup, and fixed names make a second release fail on the ClusterRole instead of
installing a second DaemonSet.
*/}}
{{- define "ipvs-node-controller.fullname" -}}
{{- .Values.fullnameOverride | default (include "ipvs-node-controller.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels, also the pods' labels. The same as the kustomize manifests', and without the
release: a DaemonSet's selector cannot change, and keeping it equal lets an installation move
between kustomize and Helm without deleting the DaemonSet.
*/}}
{{- define "ipvs-node-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ipvs-node-controller.name" . }}
{{- end }}

{{- define "ipvs-node-controller.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString }}
{{- end }}

{{/*
Labels of every object's metadata: the selector labels plus Helm's. Not put on the pod
template: a new chart version would otherwise restart every pod of the cluster.
*/}}
{{- define "ipvs-node-controller.labels" -}}
{{ include "ipvs-node-controller.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "ipvs-node-controller.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ipvs-node-controller.image" -}}
{{- $image := printf "%s:%s" .Values.image.repository (include "ipvs-node-controller.imageTag" .) }}
{{- if .Values.image.digest }}
{{- $image = printf "%s@%s" $image .Values.image.digest }}
{{- end }}
{{- $image }}
{{- end }}

{{/*
host:port for --health-probe-bind-address, with an IPv6 host in brackets.
*/}}
{{- define "ipvs-node-controller.healthProbeAddress" -}}
{{- $host := .Values.healthProbe.host | toString }}
{{- if contains ":" $host }}
{{- $host = printf "[%s]" $host }}
{{- end }}
{{- printf "%s:%d" $host (.Values.healthProbe.port | int) }}
{{- end }}

{{/*
Fails the rendering when extraArgs carries a flag that a value of its own sets: the controller
would see it twice, and which one wins would not be obvious from the values.
*/}}
{{- define "ipvs-node-controller.checkExtraArgs" -}}
{{- $owned := dict
  "--backend" "backend"
  "--log-level" "logLevel"
  "--health-probe-bind-address" "healthProbe"
  "--metrics-bind-address" "metrics.bindAddress"
  "--node-name" "(set from the pod's node)"
  "--net-stack" "netStack" }}
{{- range .Values.extraArgs }}
{{- $flag := regexReplaceAll "=.*$" (toString .) "" }}
{{- if hasKey $owned $flag }}
{{- fail (printf "extraArgs: %s is set by the value %s; set that instead" $flag (get $owned $flag)) }}
{{- end }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if has .name (list "NODE_NAME" "NODE_OPTIONS" "NET_STACK") }}
{{- fail (printf "extraEnv: %s is set by the chart (values nodeOptions, netStack); set those instead" .name) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The port of metrics.bindAddress ("0" disables metrics: no port).
*/}}
{{- define "ipvs-node-controller.metricsPort" -}}
{{- regexFind "[0-9]+$" (.Values.metrics.bindAddress | toString) }}
{{- end }}

{{/*
Fails the rendering when a ServiceMonitor is asked for but Prometheus could not reach the
metrics: disabled, or bound to the node's loopback.
*/}}
{{- define "ipvs-node-controller.checkServiceMonitor" -}}
{{- $address := .Values.metrics.bindAddress | toString }}
{{- if eq $address "0" }}
{{- fail "metrics.serviceMonitor.enabled: metrics are disabled (metrics.bindAddress is 0)" }}
{{- end }}
{{- if regexMatch "^(127\\.|localhost:|\\[::1\\]:)" $address }}
{{- fail (printf "metrics.serviceMonitor.enabled: metrics.bindAddress %s is the node's loopback, which Prometheus cannot reach; use 0.0.0.0:%s or the node's address" $address (include "ipvs-node-controller.metricsPort" .)) }}
{{- end }}
{{- end }}
