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
Cross-field checks JSON Schema cannot express. Each problem names the value and the fix; every problem is
reported at once, one line each, from every template through "tenant.validate", so no object is produced
from bad input.
*/}}
{{- define "tenant.validate" -}}
{{- $v := .Values -}}
{{- $errs := list -}}
{{- $domain := $v.gateway.domain -}}
{{- $platform := list "default" $v.network.dnsNamespace $v.network.gatewayNamespace $v.network.monitoringNamespace -}}
{{- range $i, $ns := $v.namespaces }}
{{- $full := printf "%s-%s" $v.agency $ns }}
{{- if gt (len $full) 63 }}
{{- $errs = append $errs (printf "namespaces[%d]: namespace %s is longer than 63 characters; shorten agency or the suffix" $i $full) }}
{{- end }}
{{- if or (hasPrefix "kube-" $full) (hasPrefix "sovcloud-" $full) (has $full $platform) }}
{{- $errs = append $errs (printf "namespaces[%d]: namespace %s is the cluster's or the platform's (kube-*, sovcloud-*, default, network.*Namespace); choose another suffix or agency" $i $full) }}
{{- end }}
{{- end }}
{{- range $i, $r := $v.gateway.routes }}
{{- if not (or (eq $r.host $domain) (hasSuffix (printf ".%s" $domain) $r.host)) }}
{{- $errs = append $errs (printf "gateway.routes[%d].host: %q is outside the government domain %q; use a name ending in .%s" $i $r.host $domain $domain) }}
{{- end }}
{{- if not (has $r.namespace $v.namespaces) }}
{{- $errs = append $errs (printf "gateway.routes[%d].namespace: %q is not one of namespaces %v" $i $r.namespace $v.namespaces) }}
{{- end }}
{{- end }}
{{- range $i, $d := $v.backup.datasets }}
{{- if not (has $d.namespace $v.namespaces) }}
{{- $errs = append $errs (printf "backup.datasets[%d].namespace: %q is not one of namespaces %v" $i $d.namespace $v.namespaces) }}
{{- end }}
{{- end }}
{{- if and (has $v.dataClassification (list "confidential" "secret")) (empty $v.backup.datasets) }}
{{- $errs = append $errs (printf "backup.datasets: dataClassification %q requires at least one backup dataset" $v.dataClassification) }}
{{- end }}
{{- /* The DR station reads the schedule as cron does (dr/schedule.py): each field *, N or N-M, lists, /STEP. */}}
{{- $cron := list (list "minute" "[0-5]?[0-9]" "0-59") (list "hour" "(2[0-3]|[01]?[0-9])" "0-23") (list "day of month" "(3[01]|[12][0-9]|0?[1-9])" "1-31") (list "month" "(1[0-2]|0?[1-9])" "1-12") (list "day of week" "[0-7]" "0-7") }}
{{- $fields := splitList " " (regexReplaceAll "\\s+" (trim $v.backup.schedule) " ") }}
{{- if eq (len $fields) 5 }}
{{- range $i, $f := $fields }}
{{- $spec := index $cron $i }}
{{- $one := printf "(\\*|%s(-%s)?)(/[1-9][0-9]*)?" (index $spec 1) (index $spec 1) }}
{{- if not (regexMatch (printf "^%s(,%s)*$" $one $one) $f) }}
{{- $errs = append $errs (printf "backup.schedule: %s %q: use *, N or N-M within %s, lists of them and /STEP (cron, UTC)" (index $spec 0) $f (index $spec 2)) }}
{{- end }}
{{- end }}
{{- /* A day the month never has (31 April, 30 February) is never due: the station would find no backup time. */}}
{{- $dom := index $fields 2 }}{{- $month := index $fields 3 }}
{{- if and (regexMatch "^[0-9]+$" $dom) (regexMatch "^[0-9]+$" $month) (eq (index $fields 4) "*") }}
{{- $days := index (list 31 29 31 30 31 30 31 31 30 31 30 31) (sub (atoi $month | int) 1 | int) }}
{{- if gt (atoi $dom | int) $days }}
{{- $errs = append $errs (printf "backup.schedule: day of month %s never comes in month %s (at most %d days): the schedule is never due; pick a day that month has" $dom $month $days) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq $v.dataClassification "secret") $v.network.internetEgress }}
{{- $errs = append $errs "network.internetEgress: must be false when dataClassification is \"secret\" (secret data never reaches the Internet)" }}
{{- end }}
{{- if $v.slo.enabled }}
{{- if not $v.slo.targetUrl }}
{{- $errs = append $errs "slo.targetUrl: required when slo.enabled is true (an https:// URL under gateway.domain)" }}
{{- else }}
{{- $host := (urlParse $v.slo.targetUrl).hostname }}
{{- if not (or (eq $host $domain) (hasSuffix (printf ".%s" $domain) $host)) }}
{{- $errs = append $errs (printf "slo.targetUrl: host %q is outside the government domain %q" $host $domain) }}
{{- end }}
{{- end }}
{{- if ge $v.slo.timeoutSeconds $v.slo.intervalSeconds }}
{{- $errs = append $errs "slo.timeoutSeconds: must be shorter than slo.intervalSeconds" }}
{{- end }}
{{- end }}
{{- if $errs }}
{{- fail (printf "invalid tenant values:\n%s" (join "\n" $errs)) }}
{{- end }}
{{- end }}
