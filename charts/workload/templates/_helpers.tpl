{{- define "workload.name" -}}
{{- default .Release.Name .Values.nameOverride | trunc 52 | trimSuffix "-" -}}
{{- end }}

{{- define "workload.selectorLabels" -}}
app.kubernetes.io/name: {{ include "workload.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels: every object carries the agency and the app.kubernetes.io set. */}}
{{- define "workload.labels" -}}
{{ include "workload.selectorLabels" . }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sovcloud
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
sovcloud.kz/agency: {{ .Values.agency }}
{{- end }}

{{- define "workload.metricsPort" -}}
{{- if .Values.metrics.port }}{{ .Values.metrics.port }}{{ else }}{{ .Values.containerPort }}{{ end -}}
{{- end }}

{{/* Cross-field checks JSON Schema cannot express; each problem names the value and the fix, all at once. */}}
{{- define "workload.validate" -}}
{{- $v := .Values -}}
{{- $errs := list -}}
{{- if $v.route.enabled }}
{{- $d := $v.gateway.domain }}
{{- if not (or (eq $v.route.host $d) (hasSuffix (printf ".%s" $d) $v.route.host)) }}
{{- $errs = append $errs (printf "route.host: %q is outside the government domain %q; use a name ending in .%s" $v.route.host $d $d) }}
{{- end }}
{{- end }}
{{- if and $v.persistence.enabled (ne $v.kind "StatefulSet") }}
{{- $errs = append $errs "persistence.enabled: needs kind: StatefulSet (a Deployment's replicas would share one volume)" }}
{{- end }}
{{- if and $v.hpa.enabled (gt (int $v.hpa.minReplicas) (int $v.hpa.maxReplicas)) }}
{{- $errs = append $errs "hpa.minReplicas: must not exceed hpa.maxReplicas" }}
{{- end }}
{{- if and $v.pdb.enabled (not $v.hpa.enabled) (ge (int $v.pdb.maxUnavailable) (int $v.replicas)) }}
{{- $errs = append $errs "pdb.maxUnavailable: must be below replicas, or the budget allows taking every pod down" }}
{{- end }}
{{- if $errs }}
{{- fail (printf "invalid workload values:\n%s" (join "\n" $errs)) }}
{{- end }}
{{- end }}
