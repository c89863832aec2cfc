{{/*
Names, labels and the pieces shared by the bot and the workers.
*/}}

{{/* The chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "aibrix.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name prefix of every resource, at most 46 characters: the longest suffixes
("-redis-headless", "-worker-metrics") stay within the 63 of a DNS label, and so does the
StatefulSet's controller-revision-hash label (name "-redis" plus an 11-character hash).
*/}}
{{- define "aibrix.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 46 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "aibrix.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "aibrix.labels" -}}
helm.sh/chart: {{ include "aibrix.chart" . }}
{{ include "aibrix.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aibrix-release-bot
{{- end }}

{{/* Labels that select the release's pods (a component label is added per workload). */}}
{{- define "aibrix.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aibrix.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "aibrix.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aibrix.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
repository:tag, or repository:tag@digest when a digest is given (the runtime pulls by the
digest; the tag is there for humans). Call with (dict "image" IMAGE "default" TAG).
*/}}
{{- define "aibrix.imageRef" -}}
{{- if and .image.digest .image.tag }}
{{- printf "%s:%s@%s" .image.repository (toString .image.tag) .image.digest }}
{{- else if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (toString (default .default .image.tag)) }}
{{- end }}
{{- end }}

{{- define "aibrix.image" -}}
{{- include "aibrix.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) }}
{{- end }}

{{/*
Workers: normalise each entry of workers.platforms into a map with platform, arch, suffix,
replicas, nodeSelector, tolerations and resources. Returns YAML {"workers": [...]}.
*/}}
{{- define "aibrix.workers" -}}
{{- $out := list }}
{{- $seen := dict }}
{{- range $i, $entry := .Values.workers.platforms }}
{{- $w := dict }}
{{- if kindIs "string" $entry }}
{{- $_ := set $w "platform" $entry }}
{{- else if kindIs "map" $entry }}
{{- $w = deepCopy $entry }}
{{- else }}
{{- fail (printf "workers.platforms[%d] must be a platform string or a map with a platform" $i) }}
{{- end }}
{{- $platform := required (printf "workers.platforms[%d].platform is required" $i) $w.platform | lower }}
{{- if not (regexMatch "^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$" $platform) }}
{{- fail (printf "workers.platforms[%d]: %q is not an os/arch[/variant] platform" $i $platform) }}
{{- end }}
{{- $parts := splitList "/" $platform }}
{{- $suffix := join "-" (rest $parts) | replace "_" "-" }}
{{- if hasKey $seen $suffix }}
{{- fail (printf "workers.platforms: %s is listed twice" $platform) }}
{{- end }}
{{- $_ := set $seen $suffix true }}
{{- $_ := set $w "platform" $platform }}
{{- $_ := set $w "os" (index $parts 0) }}
{{- $_ := set $w "arch" (index $parts 1) }}
{{- $_ := set $w "suffix" $suffix }}
{{- if not (hasKey $w "replicas") }}{{ $_ := set $w "replicas" $.Values.workers.replicas }}{{ end }}
{{- if not (hasKey $w "resources") }}{{ $_ := set $w "resources" $.Values.workers.resources }}{{ end }}
{{- if not (hasKey $w "tolerations") }}{{ $_ := set $w "tolerations" $.Values.workers.tolerations }}{{ end }}
{{- $selector := deepCopy (default dict $.Values.workers.nodeSelector) }}
{{- $pool := $.Values.workers.dedicatedPool }}
{{- if $pool.enabled }}
{{- $_ := set $selector $pool.key (toString $pool.value) }}
{{- $_ := set $w "tolerations" (append (default list $w.tolerations) (dict "key" $pool.key "operator" "Equal" "value" (toString $pool.value) "effect" $pool.effect)) }}
{{- end }}
{{- if $.Values.workers.pinToArchitecture }}
{{- $_ := set $selector "kubernetes.io/os" (index $parts 0) }}
{{- $_ := set $selector "kubernetes.io/arch" (index $parts 1) }}
{{- end }}
{{- $selector = merge (default dict $w.nodeSelector) $selector }}
{{- $_ := set $w "nodeSelector" $selector }}
{{- $out = append $out $w }}
{{- end }}
{{- if not $out }}
{{- fail "workers.platforms must list at least one platform" }}
{{- end }}
{{- toYaml (dict "workers" $out) }}
{{- end }}

{{/* A pod security context for the bot and the workers. */}}
{{- define "aibrix.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The container security context of every non-privileged container. */}}
{{- define "aibrix.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The Secret with the in-release Redis's password. Required: a Redis without a password is
open to every pod that can reach it, and a build step on a worker's IP can reach it.
*/}}
{{- define "aibrix.redisAuthSecret" -}}
{{- required "redis.auth.existingSecret is required: the in-release Redis always has a password (create the Secret first, see docs/deploy.md)" .Values.redis.auth.existingSecret }}
{{- end }}

{{- define "aibrix.redisHost" -}}
{{- printf "%s-redis" (include "aibrix.fullname" .) }}
{{- end }}

{{/*
Environment shared by the bot and the workers. Every secret comes from a secretKeyRef;
the only literals are paths, host names and the non-secret settings.
*/}}
{{- define "aibrix.hasConfig" -}}
{{- if or .Values.config.toml .Values.config.settings }}true{{ end }}
{{- end }}

{{- define "aibrix.commonEnv" -}}
{{- if include "aibrix.hasConfig" . }}
- name: AIBRIX_CONFIG
  value: /etc/aibrix/config.toml
{{- end }}
- name: HOME
  value: /tmp
- name: BUILDX_CONFIG
  value: /tmp/buildx
{{- if .Values.registry.dockerConfigSecret }}
- name: DOCKER_CONFIG
  value: /etc/aibrix/docker
{{- end }}
{{- if .Values.registry.insecureRegistries }}
- name: AIBRIX_INSECURE_REGISTRIES
  value: {{ join "," .Values.registry.insecureRegistries | quote }}
{{- end }}
{{- if .Values.redis.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "aibrix.redisAuthSecret" . }}
      key: {{ .Values.redis.auth.passwordKey }}
- name: REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/%d" (include "aibrix.redisHost" .) (int .Values.redis.database) | quote }}
{{- else }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "redis.external.existingSecret is required when redis.enabled is false" .Values.redis.external.existingSecret }}
      key: {{ .Values.redis.external.urlKey }}
{{- end }}
{{- end }}

{{/* Slack credentials, all from the existing Secret. */}}
{{- define "aibrix.slackEnv" -}}
{{- $secret := required "slack.existingSecret is required: create a Secret with the Slack tokens first" .Values.slack.existingSecret -}}
- name: SLACK_BOT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.slack.botTokenKey }}
- name: SLACK_SIGNING_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.slack.signingSecretKey }}
{{- if .Values.slack.socketMode }}
- name: SLACK_APP_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.slack.appTokenKey }}
{{- end }}
{{- if .Values.slack.apiUrl }}
- name: SLACK_API_URL
  value: {{ .Values.slack.apiUrl | quote }}
{{- end }}
{{- end }}

{{/*
User-supplied env: a name that looks secret must come from valueFrom, and no literal value
may look like a credential. Call with (dict "env" LIST "where" "bot.extraEnv").
*/}}
{{- define "aibrix.extraEnv" -}}
{{- range $i, $e := .env }}
{{- if not $e.name }}
{{- fail (printf "%s[%d] needs a name" $.where $i) }}
{{- end }}
{{- if hasKey $e "value" }}
{{- if regexMatch "(?i)(TOKEN|SECRET|PASSW|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|AUTH|REDIS_URL)" $e.name }}
{{- fail (printf "%s: %s looks like a secret: give it with valueFrom.secretKeyRef, not value" $.where $e.name) }}
{{- end }}
{{- include "aibrix.rejectSecretText" (dict "text" (toString $e.value) "where" (printf "%s %s" $.where $e.name)) }}
{{- end }}
{{- end }}
{{- with .env }}{{ toYaml . }}{{ end }}
{{- end }}

{{/* Fail when a text holds something that looks like a credential. */}}
{{- define "aibrix.rejectSecretText" -}}
{{- $patterns := list
  "xox[abposre]-[A-Za-z0-9-]{6,}"
  "xapp-[0-9]+-[A-Za-z0-9-]{6,}"
  "-----BEGIN [A-Z ]*PRIVATE KEY-----"
  "[a-z][a-z0-9+.-]*://[^/\\s:@\"']*:[^/\\s@\"']+@"
  "\"auths\"\\s*:"
  "(?im)^\\s*\"?[A-Za-z0-9_.-]*(token|secret|password|passwd)\"?\\s*=\\s*(\"[^\"]+\"|'[^']+')"
}}
{{- range $patterns }}
{{- if regexMatch . $.text }}
{{- fail (printf "%s contains what looks like a secret (matches %s): keep secrets in a Secret, referenced by name" $.where .) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Volumes shared by the bot and the workers. */}}
{{- define "aibrix.commonVolumes" -}}
{{- if include "aibrix.hasConfig" . }}
- name: config
  configMap:
    name: {{ include "aibrix.fullname" . }}-config
{{- end }}
{{- if .Values.registry.dockerConfigSecret }}
- name: docker-config
  secret:
    secretName: {{ .Values.registry.dockerConfigSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.registry.dockerConfigKey }}
        path: config.json
{{- end }}
{{- end }}

{{- define "aibrix.commonVolumeMounts" -}}
{{- if include "aibrix.hasConfig" . }}
- name: config
  mountPath: /etc/aibrix/config.toml
  subPath: config.toml
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- if .Values.registry.dockerConfigSecret }}
- name: docker-config
  mountPath: /etc/aibrix/docker
  readOnly: true
{{- end }}
{{- end }}

{{/* The rendered TOML configuration text. */}}
{{- define "aibrix.configToml" -}}
{{- if .Values.config.toml }}
{{- .Values.config.toml }}
{{- else if .Values.config.settings }}
{{- include "aibrix.toml.table" (dict "path" list "map" .Values.config.settings) }}
{{- end }}
{{- end }}

{{/*
A minimal TOML writer for maps from values: scalars and inline arrays first, then
sub-tables, then arrays of tables. Unlike toToml it keeps whole numbers integers (YAML
values reach templates as float64). Call with (dict "path" LIST-OF-KEYS "map" MAP).
*/}}
{{- define "aibrix.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "aibrix.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) }}
{{- $all := true }}
{{- range . }}{{ if not (kindIs "map" .) }}{{ $all = false }}{{ end }}{{ end }}
{{- if $all }}true{{ end }}
{{- end }}
{{- end }}

{{- define "aibrix.toml.value" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if kindIs "float64" . }}{{ if eq . (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) (kindIs "float32" .) (kindIs "int32" .) }}{{ . }}
{{- else if kindIs "slice" . }}[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "aibrix.toml.value" $v }}{{ end }}]
{{- else if kindIs "map" . }}{ {{- range $i, $k := keys . | sortAlpha }}{{ if $i }},{{ end }} {{ include "aibrix.toml.key" $k }} = {{ include "aibrix.toml.value" (get $ $k) }}{{ end }} }
{{- else if kindIs "invalid" . }}{{ fail "config.settings: TOML has no null; remove the key instead" }}
{{- else }}{{ toJson . }}
{{- end }}
{{- end }}

{{- define "aibrix.toml.table" -}}
{{- $path := .path }}
{{- $m := .map }}
{{- $keys := keys $m | sortAlpha }}
{{- range $keys }}
{{- $v := get $m . }}
{{- if and (not (kindIs "map" $v)) (not (include "aibrix.toml.isTableArray" $v)) }}
{{ include "aibrix.toml.key" . }} = {{ include "aibrix.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $keys }}
{{- $v := get $m . }}
{{- $sub := append $path (include "aibrix.toml.key" .) }}
{{- if kindIs "map" $v }}

[{{ join "." $sub }}]
{{- include "aibrix.toml.table" (dict "path" $sub "map" $v) }}
{{- else if include "aibrix.toml.isTableArray" $v }}
{{- range $v }}

[[{{ join "." $sub }}]]
{{- include "aibrix.toml.table" (dict "path" $sub "map" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}


{{/*
IPv4 arithmetic for NetworkPolicy ipBlocks. "aibrix.ipv4" turns "a.b.c.d/n" into YAML
{ip: INT, bits: n, size: 2^(32-n)}; "aibrix.ipv4.contains" prints true when the block
(dict "outer" CIDR "inner" CIDR) holds the other one.
*/}}
{{- define "aibrix.ipv4" -}}
{{- $parts := splitList "/" . }}
{{- if ne (len $parts) 2 }}{{ fail (printf "networkPolicy: %q is not a CIDR (ADDRESS/BITS)" .) }}{{ end }}
{{- $octets := splitList "." (index $parts 0) }}
{{- if ne (len $octets) 4 }}{{ fail (printf "networkPolicy: %q is not an IPv4 CIDR" .) }}{{ end }}
{{- $ip := 0 }}
{{- range $octets }}
{{- if not (regexMatch "^[0-9]{1,3}$" .) }}{{ fail (printf "networkPolicy: %q is not an IPv4 address" .) }}{{ end }}
{{- $ip = add (mul $ip 256) (atoi .) }}
{{- end }}
{{- $bits := atoi (index $parts 1) }}
{{- if or (lt $bits 0) (gt $bits 32) }}{{ fail (printf "networkPolicy: %q has a bad prefix length" .) }}{{ end }}
{{- $size := 1 }}
{{- range until (int (sub 32 $bits)) }}{{ $size = mul $size 2 }}{{ end }}
{{- toYaml (dict "ip" $ip "bits" $bits "size" $size) }}
{{- end }}

{{- define "aibrix.ipv4.contains" -}}
{{- $o := include "aibrix.ipv4" .outer | fromYaml }}
{{- $i := include "aibrix.ipv4" .inner | fromYaml }}
{{- if and (le (int $o.bits) (int $i.bits)) (eq (div (int64 $o.ip) (int64 $o.size)) (div (int64 $i.ip) (int64 $o.size))) }}true{{ end }}
{{- end }}

{{/*
One NetworkPolicyPeer ipBlock for an allowed CIDR, with the cloud metadata addresses taken
out of it. A block inside the IPv4 metadata range is refused; an IPv6 block other than ::/0
must not be a unique-local or link-local one (where fd00:ec2::254 lives). Call with
(dict "cidr" CIDR "except" LIST "where" TEXT).
*/}}
{{- define "aibrix.ipBlock" -}}
{{- $cidr := toString .cidr }}
{{- $except := list }}
{{- if contains ":" $cidr }}
{{- if eq $cidr "::/0" }}
{{- range .except }}{{ if contains ":" (toString .) }}{{ $except = append $except (toString .) }}{{ end }}{{ end }}
{{- $except = append $except "fd00:ec2::254/128" }}
{{- else if regexMatch "(?i)^f[cde]" $cidr }}
{{- fail (printf "%s: %s may hold the metadata address fd00:ec2::254; list narrower public ranges" .where $cidr) }}
{{- end }}
{{- else }}
{{- $meta := "169.254.0.0/16" }}
{{- if include "aibrix.ipv4.contains" (dict "outer" $meta "inner" $cidr) }}
{{- fail (printf "%s: %s lies in the link-local metadata range 169.254.0.0/16, which is never allowed" .where $cidr) }}
{{- end }}
{{- range .except }}
{{- $e := toString . }}
{{- if and (not (contains ":" $e)) (ne $e $cidr) (include "aibrix.ipv4.contains" (dict "outer" $cidr "inner" $e)) }}
{{- $except = append $except $e }}
{{- end }}
{{- end }}
{{- if include "aibrix.ipv4.contains" (dict "outer" $cidr "inner" $meta) }}
{{- $except = append $except $meta }}
{{- end }}
{{- end }}
- ipBlock:
    cidr: {{ $cidr | quote }}
    {{- with uniq $except }}
    except:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}

{{/* Egress rules for a list of {cidr, ports}. Call with (dict "targets" LIST "where" TEXT). */}}
{{- define "aibrix.egressTargets" -}}
{{- range $i, $t := .targets }}
{{- if not $t.cidr }}{{ fail (printf "%s[%d] needs a cidr" $.where $i) }}{{ end }}
{{- if not $t.ports }}{{ fail (printf "%s[%d] needs ports" $.where $i) }}{{ end }}
- to:
    {{- include "aibrix.ipBlock" (dict "cidr" $t.cidr "except" list "where" (printf "%s[%d]" $.where $i)) | trim | nindent 4 }}
  ports:
    {{- range $t.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- end }}

{{/* DNS egress, for every pod that resolves names. */}}
{{- define "aibrix.dnsEgress" -}}
- to:
    {{- toYaml .Values.networkPolicy.egress.dns | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{/*
Egress of the bot and the workers (and so of the build steps, which share the worker pod's
network namespace): DNS, the release's Redis, the public internet over HTTPS minus private
and metadata ranges, the listed registries, git hosts and external Redis, and raw extras.
*/}}
{{- define "aibrix.appEgress" -}}
{{- $eg := .Values.networkPolicy.egress }}
{{- include "aibrix.dnsEgress" . }}
{{- if .Values.redis.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "aibrix.selectorLabels" . | nindent 10 }}
          app.kubernetes.io/component: redis
  ports:
    - port: 6379
      protocol: TCP
{{- end }}
{{- if $eg.public.enabled }}
- to:
    {{- range $i, $cidr := $eg.public.cidrs }}
    {{- include "aibrix.ipBlock" (dict "cidr" $cidr "except" $eg.public.except "where" (printf "networkPolicy.egress.public.cidrs[%d]" $i)) | trim | nindent 4 }}
    {{- end }}
  ports:
    {{- range $eg.public.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- with include "aibrix.egressTargets" (dict "targets" $eg.registries "where" "networkPolicy.egress.registries") }}
{{ . }}
{{- end }}
{{- with include "aibrix.egressTargets" (dict "targets" $eg.gitHosts "where" "networkPolicy.egress.gitHosts") }}
{{ . }}
{{- end }}
{{- with include "aibrix.egressTargets" (dict "targets" $eg.redis "where" "networkPolicy.egress.redis") }}
{{ . }}
{{- end }}
{{- with $eg.extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
buildkitd.toml of the rootless BuildKit sidecar: the plain-HTTP registries, and nothing that
grants an entitlement (no insecure-entitlements key).
*/}}
{{- define "aibrix.buildkitdToml" -}}
# Rendered by the aibrix-release-bot chart.
{{- range .Values.registry.insecureRegistries }}
[registry.{{ toJson . }}]
  http = true
  insecure = true
{{- end }}
{{- end }}
