{{/* vim: set filetype=mustache: */}}

{{/* The chart name, or nameOverride. */}}
{{- define "dsr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: fullnameOverride, else
<release>-<chart> (just <release> when it already contains the chart name).
Truncated to 63 characters (DNS label).
*/}}
{{- define "dsr.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "dsr.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "dsr.labels" -}}
helm.sh/chart: {{ include "dsr.chart" . }}
{{ include "dsr.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dsr-orchestrator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select this release's pods. Never change them: a
Deployment's selector is immutable. */}}
{{- define "dsr.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dsr.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dsr.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dsr.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is set. */}}
{{- define "dsr.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "dsr.configMapName" -}}
{{- printf "%s-config" (include "dsr.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dsr.processorsConfigMapName" -}}
{{- printf "%s-processors" (include "dsr.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dsr.sqliteClaimName" -}}
{{- default (printf "%s-data" (include "dsr.fullname" .) | trunc 63 | trimSuffix "-") .Values.database.sqlite.persistence.existingClaim }}
{{- end }}

{{/* "true" when the database is SQLite. */}}
{{- define "dsr.sqlite" -}}
{{- if eq .Values.database.mode "sqlite" }}true{{ end }}
{{- end }}

{{/* "true" when more than one pod may run at once (not counting a rollout's
surge). */}}
{{- define "dsr.multiReplica" -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* The SQLite URL (a path, no credentials). */}}
{{- define "dsr.sqliteUrl" -}}
{{- printf "sqlite://%s/%s" (.Values.database.sqlite.mountPath | trimSuffix "/") .Values.database.sqlite.fileName }}
{{- end }}

{{/* Where the processors file is mounted. */}}
{{- define "dsr.processorsDir" -}}/etc/dsr{{- end }}

{{/* Where tls.existingSecret and auth.existingSecret are mounted: apart
from the processors' directory, not inside it, so each volume has a
mount point of its own in the read-only root filesystem. */}}
{{- define "dsr.tlsDir" -}}/etc/dsr-tls{{- end }}
{{- define "dsr.authDir" -}}/etc/dsr-auth{{- end }}

{{/* Where encryption.existingSecret (the keys file) is mounted. */}}
{{- define "dsr.keysDir" -}}/etc/dsr-keys{{- end }}

{{/* Where admin.metricsToken.secretName (the metrics token) is mounted. */}}
{{- define "dsr.metricsTokenDir" -}}/etc/dsr-metrics-token{{- end }}

{{/* Where the compliance ConfigMap (the policy and its holidays files) is
mounted. */}}
{{- define "dsr.complianceDir" -}}/etc/dsr-compliance{{- end }}

{{- define "dsr.complianceConfigMapName" -}}
{{- printf "%s-compliance" (include "dsr.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* compliance.policy and compliance.holidays, never nil. */}}
{{- define "dsr.compliancePolicyValues" -}}
{{- toYaml (default (dict) (default (dict) .Values.compliance).policy) }}
{{- end }}
{{- define "dsr.complianceHolidays" -}}
{{- toYaml (default (dict) (default (dict) .Values.compliance).holidays) }}
{{- end }}

{{/* "true" when a compliance policy is given: then the compliance
ConfigMap is rendered and mounted, and DSR_COMPLIANCE_FILE set. */}}
{{- define "dsr.compliance" -}}
{{- if include "dsr.compliancePolicyValues" . | fromYaml }}true{{ end }}
{{- end }}

{{/* The ConfigMap key of a calendar's holidays file (compliance.holidays). */}}
{{- define "dsr.holidaysKey" -}}
{{- printf "holidays-%s.txt" . }}
{{- end }}

{{/*
The compliance file as the server reads it: compliance.policy, with every
calendar of compliance.holidays given a holidays_file in the compliance
ConfigMap (and created, with the default weekend, where the policy does
not list it under calendars).
*/}}
{{- define "dsr.complianceFile" -}}
{{- $policy := include "dsr.compliancePolicyValues" . | fromYaml }}
{{- $calendars := default (dict) $policy.calendars }}
{{- range $name, $days := include "dsr.complianceHolidays" . | fromYaml }}
{{- $calendar := default (dict) (get $calendars $name) }}
{{- $_ := set $calendar "holidays_file" (printf "%s/%s" (include "dsr.complianceDir" $) (include "dsr.holidaysKey" $name)) }}
{{- $_ := set $calendars $name $calendar }}
{{- end }}
{{- if $calendars }}
{{- $_ := set $policy "calendars" $calendars }}
{{- end }}
{{- toYaml $policy }}
{{- end }}

{{/*
The Secrets the user asks to mount (auth.extraSecrets, processorSecrets),
as a YAML list of {name, secretName, mountPath}: the volume names are
numbered so the same Secret may be listed twice.
*/}}
{{- define "dsr.extraSecretMounts" -}}
{{- $mounts := list }}
{{- range $i, $m := .Values.auth.extraSecrets }}
{{- $mounts = append $mounts (dict "name" (printf "auth-extra-%d" $i) "secretName" $m.secretName "mountPath" ($m.mountPath | trimSuffix "/")) }}
{{- end }}
{{- range $i, $m := .Values.processorSecrets }}
{{- $mounts = append $mounts (dict "name" (printf "processor-secret-%d" $i) "secretName" $m.secretName "mountPath" ($m.mountPath | trimSuffix "/")) }}
{{- end }}
{{- toYaml $mounts }}
{{- end }}

{{/* Container ports: fixed, the Service maps its own ports onto them. */}}
{{- define "dsr.grpcContainerPort" -}}50051{{- end }}
{{- define "dsr.metricsContainerPort" -}}9090{{- end }}

{{/*
A duration of the form <integer><unit> (unit ms, s, m or h) in whole
seconds, rounded up.
*/}}
{{- define "dsr.durationSeconds" -}}
{{- $d := toString . }}
{{- if not (regexMatch "^[0-9]+(ms|s|m|h)$" $d) }}
{{- fail (printf "dsr-orchestrator: cannot read the duration %q: write it as <integer><unit>, unit one of ms, s, m, h (e.g. 20s)" $d) }}
{{- end }}
{{- $n := regexReplaceAll "^([0-9]+)(ms|s|m|h)$" $d "${1}" | atoi }}
{{- $unit := regexReplaceAll "^([0-9]+)(ms|s|m|h)$" $d "${2}" }}
{{- if eq $unit "ms" }}{{ div (add $n 999) 1000 }}
{{- else if eq $unit "s" }}{{ $n }}
{{- else if eq $unit "m" }}{{ mul $n 60 }}
{{- else }}{{ mul $n 3600 }}
{{- end }}
{{- end }}

{{/*
"true" when a humantime duration as the schema admits it (terms of
<integer><unit>, unit ns, us, ms, s, m, h, d or w) is shorter than one
second, zero included. Sums the terms below a second in nanoseconds; a
term of a second or more settles it, so nothing overflows.
*/}}
{{- define "dsr.belowASecond" -}}
{{- $atLeast := false }}
{{- $ns := 0 }}
{{- range regexFindAll "[0-9]+(ns|us|ms|s|m|h|d|w)" (toString .) -1 }}
  {{- $n := regexReplaceAll "^([0-9]+).*$" . "${1}" | atoi }}
  {{- $unit := regexReplaceAll "^[0-9]+" . "" }}
  {{- if has $unit (list "s" "m" "h" "d" "w") }}
    {{- if gt $n 0 }}{{ $atLeast = true }}{{ end }}
  {{- else if eq $unit "ms" }}
    {{- if ge $n 1000 }}{{ $atLeast = true }}{{ else }}{{ $ns = add $ns (mul $n 1000000) }}{{ end }}
  {{- else if eq $unit "us" }}
    {{- if ge $n 1000000 }}{{ $atLeast = true }}{{ else }}{{ $ns = add $ns (mul $n 1000) }}{{ end }}
  {{- else }}
    {{- if ge $n 1000000000 }}{{ $atLeast = true }}{{ else }}{{ $ns = add $ns $n }}{{ end }}
  {{- end }}
{{- end }}
{{- if not (or $atLeast (ge (int64 $ns) 1000000000)) }}true{{ end }}
{{- end }}

{{/*
"true" when a humantime duration as the schema admits it is zero or longer
than a day: the bounds the server puts on the durations it repeats or waits
by (database.acquireTimeout, config.pollInterval, config.reloadInterval).
Adds the terms in nanoseconds; a term, or a sum, longer than a day settles
it at once, so nothing overflows.
*/}}
{{- define "dsr.notAnInterval" -}}
{{- $day := 86400000000000 }}
{{- $over := false }}
{{- $ns := 0 }}
{{- $units := dict "ns" 1 "us" 1000 "ms" 1000000 "s" 1000000000 "m" 60000000000 "h" 3600000000000 "d" 86400000000000 "w" 604800000000000 }}
{{- range regexFindAll "[0-9]+(ns|us|ms|s|m|h|d|w)" (toString .) -1 }}
  {{- $digits := regexReplaceAll "^0*([0-9]+?)(ns|us|ms|s|m|h|d|w)$" . "${1}" }}
  {{- $unit := regexReplaceAll "^[0-9]+" . "" }}
  {{- $size := get $units $unit | int64 }}
  {{- if or (gt (len $digits) 15) (gt (atoi $digits | int64) (div $day $size)) }}
    {{- $over = true }}
  {{- else }}
    {{- $ns = add $ns (mul (atoi $digits) $size) }}
    {{- if gt (int64 $ns) $day }}{{ $over = true }}{{ $ns = $day }}{{ end }}
  {{- end }}
{{- end }}
{{- if or $over (eq (int64 $ns) 0) (gt (int64 $ns) $day) }}true{{ end }}
{{- end }}

{{/*
Checks across values that values.schema.json cannot express. Each failure
names the values to change.
*/}}
{{- define "dsr.validate" -}}
{{- $v := .Values }}
{{- if eq $v.database.mode "sqlite" }}
  {{- if gt (int $v.replicaCount) 1 }}
    {{- fail (printf "dsr-orchestrator: replicaCount=%d needs database.mode=postgres. SQLite is for one process (a second pod on the same file is refused at startup): set replicaCount=1, or database.mode=postgres with database.existingSecret." (int $v.replicaCount)) }}
  {{- end }}
  {{- if $v.autoscaling.enabled }}
    {{- fail "dsr-orchestrator: autoscaling.enabled=true needs database.mode=postgres. SQLite is for one process: disable autoscaling, or use database.mode=postgres with database.existingSecret." }}
  {{- end }}
{{- else }}
  {{- if not $v.database.existingSecret }}
    {{- fail (printf "dsr-orchestrator: database.existingSecret is required when database.mode=postgres: name an existing Secret whose key %q holds the URL postgres://USER:PASS@HOST:PORT/DB (the chart never puts the URL in values)." $v.database.secretKey) }}
  {{- end }}
  {{- if and $v.networkPolicy.enabled (not (or $v.networkPolicy.egress.database.cidrs $v.networkPolicy.egress.database.peers)) }}
    {{- fail "dsr-orchestrator: networkPolicy.enabled=true with database.mode=postgres needs networkPolicy.egress.database.cidrs or .peers, or the pods could not reach the database." }}
  {{- end }}
{{- end }}
{{- if $v.autoscaling.enabled }}
  {{- if gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas) }}
    {{- fail (printf "dsr-orchestrator: autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d)." (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
  {{- end }}
  {{- if not (or $v.autoscaling.targetCPUUtilizationPercentage $v.autoscaling.targetMemoryUtilizationPercentage) }}
    {{- fail "dsr-orchestrator: autoscaling.enabled=true needs autoscaling.targetCPUUtilizationPercentage or autoscaling.targetMemoryUtilizationPercentage." }}
  {{- end }}
{{- end }}
{{- $drain := include "dsr.durationSeconds" $v.config.drainTimeout | int }}
{{- if le (int $v.terminationGracePeriodSeconds) $drain }}
  {{- fail (printf "dsr-orchestrator: terminationGracePeriodSeconds (%d) must be longer than config.drainTimeout (%s), or pods are killed before deliveries in flight drain; leave 10s or more for the rest of shutdown." (int $v.terminationGracePeriodSeconds) $v.config.drainTimeout) }}
{{- end }}
{{- if and $v.auth.insecureNoAuth $v.auth.existingSecret }}
  {{- fail "dsr-orchestrator: auth.insecureNoAuth=true and auth.existingSecret are both set: with an auth file callers are authenticated, so remove auth.insecureNoAuth (or the Secret, to run unauthenticated)." }}
{{- end }}
{{- if not (or $v.auth.existingSecret $v.auth.insecureNoAuth) }}
  {{- fail (printf "dsr-orchestrator: authentication is not configured, and the gRPC port is reachable beyond loopback: set auth.existingSecret to a Secret whose key %q holds the auth file (principals and their roles, see docs/security.md), or set auth.insecureNoAuth=true to accept that anyone who reaches the port may do anything but speak for a processor." $v.auth.secretKey) }}
{{- end }}
{{- if not $v.encryption.existingSecret }}
  {{- fail (printf "dsr-orchestrator: encryption.existingSecret is required: the server seals personal data at rest and, listening beyond loopback, refuses to start without its keys. Create a Secret whose key %q holds the keys file (active: <key id>; keys: a list of {id, key: base64 of 32 random bytes}; hmac_secret: base64 of at least 32 random bytes; the recipe is in the chart's values.yaml under encryption) and set encryption.existingSecret to its name. Keep a copy of the keys elsewhere: without them nothing sealed can be read again." $v.encryption.secretKey) }}
{{- end }}
{{- range $v.extraEnv }}
  {{- if has .name (list "DSR_KEYS" "DSR_KEYS_FILE") }}
    {{- fail (printf "dsr-orchestrator: extraEnv sets %s: the keys come from encryption.existingSecret (DSR_KEYS_FILE, which the server reads before DSR_KEYS). Remove it from extraEnv and put the keys file in that Secret." .name) }}
  {{- end }}
{{- end }}
{{- if and $v.tls.clientAuth (not $v.tls.existingSecret) }}
  {{- fail "dsr-orchestrator: tls.clientAuth=true needs tls.existingSecret: a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt (the CA client certificates must be signed by)." }}
{{- end }}
{{- if and $v.admin.tls (not $v.tls.existingSecret) }}
  {{- fail "dsr-orchestrator: admin.tls=true needs tls.existingSecret: the admin port serves TLS with the gRPC port's certificate (tls.crt, tls.key)." }}
{{- end }}
{{- if and $v.admin.tls $v.serviceMonitor.enabled (not $v.serviceMonitor.tlsConfig) }}
  {{- fail "dsr-orchestrator: admin.tls=true with serviceMonitor.enabled needs serviceMonitor.tlsConfig: Prometheus must verify the admin port's certificate, e.g. {ca: {secret: {name: <tls.existingSecret>, key: ca.crt}}, serverName: <the Service's DNS name>}." }}
{{- end }}
{{- range $name, $d := dict "database.acquireTimeout" $v.database.acquireTimeout "config.pollInterval" $v.config.pollInterval "config.reloadInterval" $v.config.reloadInterval "config.limits.stalledReaderTimeout" $v.config.limits.stalledReaderTimeout }}
  {{- if include "dsr.notAnInterval" $d }}
    {{- fail (printf "dsr-orchestrator: %s (%s) must be above 0s and at most 1d (the server refuses anything else): it is how long to wait or how often to look again, e.g. 10s." $name $d) }}
  {{- end }}
{{- end }}
{{- if include "dsr.belowASecond" $v.retention.purgeInterval }}
  {{- fail (printf "dsr-orchestrator: retention.purgeInterval (%s) must be at least 1s (the server refuses less): it is how often the retention purge runs, e.g. 1h." $v.retention.purgeInterval) }}
{{- end }}
{{- if include "dsr.belowASecond" $v.protection.eraseInterval }}
  {{- fail (printf "dsr-orchestrator: protection.eraseInterval (%s) must be at least 1s (the server refuses less): it is how often finished requests' personal data is erased, e.g. 30s." $v.protection.eraseInterval) }}
{{- end }}
{{- $policy := include "dsr.compliancePolicyValues" . | fromYaml }}
{{- $holidays := include "dsr.complianceHolidays" . | fromYaml }}
{{- $calendars := default (dict) $policy.calendars }}
{{- $used := list }}
{{- range $jurisdiction, $regime := default (dict) $policy.jurisdictions }}
  {{- with (default (dict) $regime).calendar }}
    {{- if not (or (hasKey $calendars .) (hasKey $holidays .)) }}
      {{- fail (printf "dsr-orchestrator: compliance.policy.jurisdictions.%s.calendar: no calendar %q is defined. Add it under compliance.holidays (its holiday dates; the weekend stays Saturday and Sunday) or compliance.policy.calendars (time_zone, weekend, holidays_file)." $jurisdiction .) }}
    {{- end }}
    {{- $used = append $used . }}
  {{- end }}
{{- end }}
{{- range $name, $_ := $holidays }}
  {{- if (default (dict) (get $calendars $name)).holidays_file }}
    {{- fail (printf "dsr-orchestrator: the calendar %q has holidays in compliance.holidays.%s and a holidays_file in compliance.policy.calendars.%s: keep one. With compliance.holidays the chart writes the file and sets the path itself." $name $name $name) }}
  {{- end }}
  {{- if not (has $name $used) }}
    {{- fail (printf "dsr-orchestrator: compliance.holidays.%s: no jurisdiction uses the calendar %q, so its holidays would count for nothing. Set calendar: %s on a jurisdiction in compliance.policy.jurisdictions (e.g. CCPA), or remove the entry." $name $name $name) }}
  {{- end }}
{{- end }}
{{- /* Each volume needs a mount point of its own: no user mount on, or
inside, another mount. */}}
{{- $taken := dict "/tmp" "the scratch volume" (include "dsr.processorsDir" .) "the processors file" }}
{{- if $v.tls.existingSecret }}{{ $_ := set $taken (include "dsr.tlsDir" .) "tls.existingSecret" }}{{ end }}
{{- if $v.auth.existingSecret }}{{ $_ := set $taken (include "dsr.authDir" .) "auth.existingSecret" }}{{ end }}
{{- if $v.encryption.existingSecret }}{{ $_ := set $taken (include "dsr.keysDir" .) "encryption.existingSecret" }}{{ end }}
{{- if $v.admin.metricsToken.secretName }}{{ $_ := set $taken (include "dsr.metricsTokenDir" .) "admin.metricsToken.secretName" }}{{ end }}
{{- if include "dsr.compliance" . }}{{ $_ := set $taken (include "dsr.complianceDir" .) "the compliance policy" }}{{ end }}
{{- if eq $v.database.mode "sqlite" }}{{ $_ := set $taken ($v.database.sqlite.mountPath | trimSuffix "/") "database.sqlite.mountPath" }}{{ end }}
{{- range (include "dsr.extraSecretMounts" . | fromYamlArray) }}
  {{- $path := .mountPath }}
  {{- $secret := .secretName }}
  {{- range $other, $owner := $taken }}
    {{- if or (eq $path $other) (hasPrefix (printf "%s/" $other) $path) (hasPrefix (printf "%s/" $path) $other) }}
      {{- fail (printf "dsr-orchestrator: the Secret %s cannot be mounted at %s: it overlaps %s, where %s is mounted. Give each Secret a directory of its own, outside the others." $secret $path $other $owner) }}
    {{- end }}
  {{- end }}
  {{- $_ := set $taken $path (printf "the Secret %s" $secret) }}
{{- end }}
{{- $ids := list }}
{{- range $v.processors }}
  {{- if has .processor_id $ids }}
    {{- fail (printf "dsr-orchestrator: processors: processor_id %q is declared more than once." .processor_id) }}
  {{- end }}
  {{- $ids = append $ids .processor_id }}
{{- end }}
{{- end }}
