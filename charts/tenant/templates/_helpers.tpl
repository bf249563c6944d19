{{/* Common labels: every object carries the agency and the app.kubernetes.io set. */}}
{{- define "tenant.labels" -}}
app.kubernetes.io/name: tenant
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sovcloud
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
sovcloud.kz/agency: {{ .Values.agency }}
{{- end }}

{{/*
The gateway nodes allowed in and out (network.gatewayAddresses), as a JSON list. Empty: the platform's own
list, from ConfigMap kube-public/sovcloud-platform (key gatewayAddresses) that sovcloud's `pulumi up` keeps on
every cluster, so an agency installing into the cluster needs to know nothing about the gateways. Offline
(`helm template`) there is no cluster to ask: the value given is used.
*/}}
{{- define "tenant.gatewayAddresses" -}}
{{- $given := .Values.network.gatewayAddresses -}}
{{- if $given -}}
{{- toJson $given -}}
{{- else -}}
{{- $platform := lookup "v1" "ConfigMap" "kube-public" "sovcloud-platform" -}}
{{- dig "data" "gatewayAddresses" "[]" $platform -}}
{{- end -}}
{{- end }}

{{/* Full namespace name from a suffix: <agency>-<suffix>. */}}
{{- define "tenant.ns" -}}
{{- printf "%s-%s" .root.Values.agency .suffix -}}
{{- end }}

{{/*
Cross-field checks JSON Schema cannot express. Each failure names the value and the fix; rendered
from every template through "tenant.validate" so no object is produced from bad input.
*/}}
{{- define "tenant.validate" -}}
{{- $v := .Values -}}
{{- $domain := $v.gateway.domain -}}
{{- range $i, $ns := $v.namespaces }}
{{- if gt (len (printf "%s-%s" $v.agency $ns)) 63 }}
{{- fail (printf "namespaces[%d]: namespace %s-%s is longer than 63 characters; shorten agency or the suffix" $i $v.agency $ns) }}
{{- end }}
{{- end }}
{{- range $i, $r := $v.gateway.routes }}
{{- if not (or (eq $r.host $domain) (hasSuffix (printf ".%s" $domain) $r.host)) }}
{{- fail (printf "gateway.routes[%d].host: %q is outside the government domain %q; use a name ending in .%s" $i $r.host $domain $domain) }}
{{- end }}
{{- if not (has $r.namespace $v.namespaces) }}
{{- fail (printf "gateway.routes[%d].namespace: %q is not one of namespaces %v" $i $r.namespace $v.namespaces) }}
{{- end }}
{{- end }}
{{- range $i, $d := $v.backup.datasets }}
{{- if not (has $d.namespace $v.namespaces) }}
{{- fail (printf "backup.datasets[%d].namespace: %q is not one of namespaces %v" $i $d.namespace $v.namespaces) }}
{{- end }}
{{- end }}
{{- if and (has $v.dataClassification (list "confidential" "secret")) (empty $v.backup.datasets) }}
{{- fail (printf "backup.datasets: dataClassification %q requires at least one backup dataset" $v.dataClassification) }}
{{- end }}
{{- if and (eq $v.dataClassification "secret") $v.network.internetEgress }}
{{- fail "network.internetEgress: must be false when dataClassification is \"secret\" (secret data never reaches the Internet)" }}
{{- end }}
{{- if $v.slo.enabled }}
{{- if not $v.slo.targetUrl }}
{{- fail "slo.targetUrl: required when slo.enabled is true (an https:// URL under gateway.domain)" }}
{{- end }}
{{- $host := (urlParse $v.slo.targetUrl).hostname }}
{{- if not (or (eq $host $domain) (hasSuffix (printf ".%s" $domain) $host)) }}
{{- fail (printf "slo.targetUrl: host %q is outside the government domain %q" $host $domain) }}
{{- end }}
{{- if ge $v.slo.timeoutSeconds $v.slo.intervalSeconds }}
{{- fail "slo.timeoutSeconds: must be shorter than slo.intervalSeconds" }}
{{- end }}
{{- end }}
{{- end }}
