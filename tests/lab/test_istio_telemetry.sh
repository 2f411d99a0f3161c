#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Istio's Telemetry API and MeshConfig drive tracing (issue 14), end to end in the lab: the
# agents' configs have no `tracing` key; the workloads file carries the homelab's MeshConfig
# (an OpenTelemetry provider `otel` -> k8s-monitoring-alloy-receiver.monitoring.svc.cluster.local
# :4317, defaultProviders.tracing, sampling 100) and its mesh-wide Telemetry (customTags
# cluster_name=homelab, environment=development). The provider's Service resolves through the
# lab's model to a pod running tests/node/otlp_sink.js (an independent receiver). Checked: tagged
# linked spans at that receiver; a namespace Telemetry with randomSamplingPercentage 0 silences
# that namespace only; a provider change at runtime moves export to another receiver (OTLP/HTTP,
# with an environment tag and its default); ambitctl telemetry names the sources and warns about
# a bad Telemetry; clean exits. Then the Kubernetes path: the same objects (Telemetry v1alpha1,
# the istio ConfigMap's YAML) from the test API server (tests/tools/fake_apiserver.py).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - istio telemetry (needs root)"; exit 1; }
command -v node >/dev/null || { echo "not ok - istio telemetry (node not found)"; exit 1; }
"$LAB_TOP/tests/node/install.sh"
lab_tmpdir logs tm
lab=tm-$$
SINK=$LAB_TOP/tests/node/otlp_sink.js
CTL=$AMBIT_BUILD/ambitctl
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$LAB_TOP/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for v in $(env | sed -n 's/^\(OTEL_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

# receiver POD OUT: an OTLP receiver (gRPC 4317, HTTP 4318) on POD's address, spans to OUT.
receiver() {
	local pod=$1 out=$2 ready=$logs/$1.ready ip
	ip=$(lab_pod_ip "${pod:1:1}" "${pod:4:1}")
	pod_spawn "$lab" "$pod" "$logs/$pod-sink.log" node "$SINK" --host "$ip" --grpc-port 4317 \
		--http-port 4318 --out "$out" --ready "$ready" || return 1
	: >>"$out"
	lab_until test -s "$ready" && return 0
	sed 's/^/#   /' "$logs/$pod-sink.log" >&2
	return 1
}

count() { jq -c "select($2)" "$1" 2>/dev/null | wc -l; } # FILE JQ_FILTER
wait_count() { lab_until lab_spans_ge "$@"; } # FILE JQ_FILTER N
client() { # FROM TO PORT: one connection, 100 bytes each way
	pod_exec "$lab" "$1" "$TCPKIT" client --to "$2:$3" --timeout 20 --mode halfclose \
		--bytes 100 --reply 100
}
ctl() { pod_exec "$lab" "${CTL_NODE:-n1}" "$CTL" "$@"; }
# telemetry_is NS/NAME JQ: until both agents' telemetry answer for NS/NAME satisfies JQ.
TELEMETRY_NODES="n1 n2"
telemetry_is() {
	# shellcheck disable=SC2086 # the node list splits
	lab_telemetry_is "$lab" "$1" "$2" $TELEMETRY_NODES
}
model() { lab_model "$1"; }
agents_stop() {
	local k bad=0
	for k in 1 2; do
		lab_stop_agent "$lab" "$k"
		[ "${AGENT_EXIT:-0}" = 0 ] || { echo "# agent $k exited $AGENT_EXIT" >&2; bad=1; }
		if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$LAB_ROOT/$lab/agent$k.log"; then
			grep -E -A15 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' \
				"$LAB_ROOT/$lab/agent$k.log" | head -40 | sed 's/^/#   /' >&2
			bad=1
		fi
	done
	return "$bad"
}

if ! lab_up "$lab" --nodes 2 --pods 3 --cni routed --enroll p1,p2 >"$logs/up.log" 2>&1; then
	fail "lab up"; sed 's/^/#   /' "$logs/up.log" | tail -20
	lab_result; exit 1
fi
P21=$(lab_pod_ip 2 1) P23=$(lab_pod_ip 2 3)
SVC=${LAB_SERVICE_CIDR%.0.0/16}
W11=$(lab_var N1_P1_NAME) W12=$(lab_var N1_P2_NAME)

# The homelab's objects, as issue 14 quotes them. Pod n1-p2 lives in namespace "quiet"; n2-p3
# is the Alloy receiver behind its Service, n1-p3 a second receiver ("otel-b").
TELEMETRY='{"apiVersion": "telemetry.istio.io/v1alpha1", "kind": "Telemetry",
  "metadata": {"name": "mesh-default", "namespace": "istio-system",
               "creationTimestamp": "2025-01-01T00:00:00Z"},
  "spec": {"tracing": [{"customTags": {
    "cluster_name": {"literal": {"value": "homelab"}},
    "environment": {"literal": {"value": "development"}}}}]}}'
MESH='{"enableTracing": true, "defaultConfig": {"tracing": {"sampling": 100.0}},
  "defaultProviders": {"tracing": ["otel"]},
  "extensionProviders": [
    {"name": "otel", "opentelemetry": {"service": "k8s-monitoring-alloy-receiver.monitoring.svc.cluster.local", "port": 4317}},
    {"name": "otel-b", "opentelemetry": {"service": "monitoring/otel-b", "port": 4318, "http": {"path": "/v1/traces", "timeout": "5s"}}}]}'
model "
  .workloads |= map(
    if (.name | endswith(\"-n1-p2\")) then .namespace = \"quiet\" | .uid = \"quiet/\" + .name
    elif (.name | endswith(\"-n2-p3\")) then .namespace = \"monitoring\" | .labels = {app: \"alloy\"}
    elif (.name | endswith(\"-n1-p3\")) then .namespace = \"monitoring\" | .labels = {app: \"otel-b\"}
    else . end)
  | .services += [
    {name: \"k8s-monitoring-alloy-receiver\", namespace: \"monitoring\", addresses: [\"$SVC.9.1\"],
     selector: {app: \"alloy\"}, ports: [{port: 4317, target_port: 4317, name: \"grpc\"}], waypoint: null},
    {name: \"otel-b\", namespace: \"monitoring\", addresses: [\"$SVC.9.2\"],
     selector: {app: \"otel-b\"}, ports: [{port: 4318, target_port: 4318, name: \"http\"}], waypoint: null}]
  | .mesh_config = $MESH | .resources = [$TELEMETRY]"
for k in 1 2; do
	jq 'del(.tracing)' "$LAB_ROOT/$lab/node$k.json" >"$logs/node$k.json"
	cp "$logs/node$k.json" "$LAB_ROOT/$lab/node$k.json"
done
check "the agents' configs have no tracing key" sh -c \
	"! jq -e 'has(\"tracing\")' $LAB_ROOT/$lab/node1.json $LAB_ROOT/$lab/node2.json >/dev/null"

A=$logs/alloy.jsonl B=$logs/otel-b.jsonl
check "receiver behind the alloy Service starts" receiver n2-p3 "$A"
check "second receiver (otel-b) starts" receiver n1-p3 "$B"
pod_spawn "$lab" n2-p1 "$logs/serve.log" "$TCPKIT" serve --port 7000 --mode halfclose --reply 100
wait_port "$lab" n2-p1 7000
export OTEL_BSP_SCHEDULE_DELAY=200
if lab_start_agent "$lab" 1 && lab_start_agent "$lab" 2; then
	ok "agents start without tracing keys"
else
	fail "agents start without tracing keys"; lab_result; exit 1
fi
unset OTEL_BSP_SCHEDULE_DELAY

# ---- 1. the homelab objects: tagged spans at the provider's receiver ----
check "ambitctl telemetry: provider otel from MeshConfig, tags from the mesh-wide Telemetry" \
	telemetry_is "default/$W11" '.workloads[0] | .source == "istio" and .outbound.provider == "otel"
		and .outbound.from.provider == "mesh_config" and .outbound.sampling == 100
		and .outbound.from.custom_tags == "Telemetry istio-system/mesh-default"
		and .outbound.custom_tags.cluster_name.literal == "homelab"'
export_url_is() { # PROVIDER URL
	ctl telemetry -o json | jq -e --arg p "$1" --arg u "$2" '.providers[] | select(.name == $p) | .export_url == $u'
}
check "ambitctl telemetry: the provider's Service resolved to the receiver pod" \
	lab_until export_url_is otel "http://$P23:4317"
check "a connection n1-p1 -> n2-p1 goes through" client n1-p1 "$P21" 7000
SEL_OUT='.name == "outbound" and .attributes["server.port"] == 7000'
SEL_IN='.name == "inbound" and .attributes["destination.port"] == 7000'
check "the alloy receiver gets its outbound and inbound spans" wait_count "$A" "($SEL_OUT) or ($SEL_IN)" 2
check "... over gRPC, with cluster_name=homelab and environment=development" sh -c \
	"jq -s -e '[.[] | select(($SEL_OUT) or ($SEL_IN))] | length >= 2 and all(.proto == \"grpc\"
		and .attributes.cluster_name == \"homelab\" and .attributes.environment == \"development\")' $A"
check "... linked: the inbound span is the outbound span's child" sh -c \
	"jq -s -e '([.[] | select($SEL_OUT)][0]) as \$o | [.[] | select($SEL_IN)][0] |
		.trace_id == \$o.trace_id and .parent_span_id == \$o.span_id' $A"
check "... and nothing went to the other receiver" sh -c "[ \$(wc -l <$B) -eq 0 ]"

# ---- 2. a namespace Telemetry with randomSamplingPercentage 0 silences that namespace ----
model ".resources += [{apiVersion: \"telemetry.istio.io/v1\", kind: \"Telemetry\",
  metadata: {name: \"off\", namespace: \"quiet\", creationTimestamp: \"2025-02-01T00:00:00Z\"},
  spec: {tracing: [{randomSamplingPercentage: 0}]}}]"
check "ambitctl telemetry: quiet's sampling is 0 from Telemetry quiet/off" \
	telemetry_is "quiet/$W12" '.workloads[0].outbound | .sampling == 0 and .from.sampling == "Telemetry quiet/off"'
check "... default's stays 100" telemetry_is "default/$W11" '.workloads[0].outbound.sampling == 100'
before=$(count "$A" "$SEL_OUT")
check "a connection from the quiet namespace (n1-p2 -> n2-p1) goes through" client n1-p2 "$P21" 7000
check "a connection from default (n1-p1 -> n2-p1) goes through" client n1-p1 "$P21" 7000
check "... default's spans still arrive" wait_count "$A" "$SEL_OUT" $((before + 1))
wait_count "$A" "$SEL_IN" $((before + 1)) >/dev/null 2>&1 || true
sleep 1	# the quiet connection's spans would have come with the same batches
check "... no span of the quiet namespace's connection arrives" sh -c \
	"[ \$(jq -c 'select(.resource[\"k8s.namespace.name\"] == \"quiet\" or .attributes[\"source.namespace\"] == \"quiet\")' $A | wc -l) -eq 0 ]"

# ---- 3. a provider change at runtime moves export to another receiver ----
model ".resources[0].spec.tracing[0].providers = [{name: \"otel-b\"}]
  | .resources[0].spec.tracing[0].customTags.node_tag = {environment: {name: \"TM_UNSET_VAR\", defaultValue: \"no-env\"}}"
check "ambitctl telemetry: provider otel-b from Telemetry istio-system/mesh-default" \
	telemetry_is "default/$W11" '.workloads[0].outbound | .provider == "otel-b" and .protocol == "http/protobuf"
		and .from.provider == "Telemetry istio-system/mesh-default"'
a_before=$(wc -l <"$A")
check "a connection n1-p1 -> n2-p1 after the change goes through" client n1-p1 "$P21" 7000
check "the otel-b receiver gets its spans over OTLP/HTTP" wait_count "$B" "($SEL_OUT) or ($SEL_IN)" 2
check "... tagged, with the environment tag's default" sh -c \
	"jq -s -e 'map(select(($SEL_OUT) or ($SEL_IN))) | length >= 2 and all(.proto == \"http\"
		and .attributes.cluster_name == \"homelab\" and .attributes.node_tag == \"no-env\")' $B"
sleep 1
check "... and none of them reached the alloy receiver" sh -c "[ \$(wc -l <$A) -eq $a_before ]"
nothing_lost() {
	local k
	for k in 1 2; do
		[ "$(lab_metric "$lab" "$k" ambit_spans_dropped_total)" = 0 ] &&
			[ "$(lab_metric "$lab" "$k" ambit_spans_failed_total)" = 0 ] || return 1
	done
}
check "nothing was dropped or given up" nothing_lost

# ---- 4. a bad Telemetry is one warning and is left out ----
model ".resources += [{apiVersion: \"telemetry.istio.io/v1\", kind: \"Telemetry\",
  metadata: {name: \"bad\", namespace: \"default\", creationTimestamp: \"2025-03-01T00:00:00Z\"},
  spec: {tracing: [{providers: [{name: \"nope\"}]}]}}]"
warned() { ctl telemetry 2>&1 | grep -F "warning: $1" >/dev/null; }	# (not grep -q: ctl cut short fails the pipe)
warns() { # TEXT: until `ambitctl telemetry` prints a warning line containing TEXT
	lab_until warned "$1" && return 0
	ctl telemetry 2>&1 | tail -5
	return 1
}
check "ambitctl telemetry warns about the unknown provider, naming object and field" \
	warns "Telemetry default/bad: spec.tracing[0].providers[0].name: 'nope'"
check "... and default keeps the mesh-wide settings" \
	telemetry_is "default/$W11" '.workloads[0].outbound.provider == "otel-b"'

# stop_check TITLE: agents_stop as a check, in this shell (the agents are its children).
stop_check() {
	if agents_stop >"$logs/stop.out" 2>&1; then
		ok "$1"
	else
		fail "$1"; sed 's/^/#   /' "$logs/stop.out"
	fi
}
stop_check "agents exit cleanly"

# ---- 5. the Kubernetes path: the same objects from the test API server ----
# Node 1's agent watches tests/tools/fake_apiserver.py: the pods, the receiver's Service, the
# mesh-wide Telemetry (telemetry.istio.io/v1alpha1 only, as an older Istio serves it) and the
# istio ConfigMap of istio-system whose `mesh` key is the homelab's MeshConfig in YAML.
# Node 2's agent keeps file discovery (the same cluster facts, no Istio objects: its own
# fallback, which has no tracing keys either, exports nowhere that matters here).
model 'del(.mesh_config) | .resources = []'
api_pid=""
api() { pod_exec "$lab" n1 curl -fsS -m 10 -X POST --data "$2" "http://127.0.0.1:16080/_control/$1" >/dev/null; }
pod_spawn "$lab" n1 "$logs/api.log" python3 "$LAB_TOP/tests/tools/fake_apiserver.py" --bind 127.0.0.1 \
	--port 16080
api_pid=$SPAWNED_PID
wait_port "$lab" n1 16080
api crd '{"resource": "telemetries", "versions": ["v1alpha1"]}'
api apply '{"resource": "namespaces", "object": {"metadata": {"name": "default", "labels": {"istio.io/dataplane-mode": "ambient"}}}}'
api apply '{"resource": "namespaces", "object": {"metadata": {"name": "monitoring"}}}'
for k in 1 2; do
	api apply "{\"resource\": \"nodes\", \"object\": {\"metadata\": {\"name\": \"$lab-n$k\"}, \"status\": {\"addresses\": [{\"type\": \"InternalIP\", \"address\": \"$(lab_node_ip $k)\"}]}}}"
done
kpod() { # NS NAME NODE IP LABELS: the service account as the workloads file has it (identities match)
	api apply "{\"resource\": \"pods\", \"object\": {\"metadata\": {\"name\": \"$2\", \"namespace\": \"$1\", \"labels\": $5},
		\"spec\": {\"nodeName\": \"$3\", \"serviceAccountName\": \"$(jq -r --arg n "$2" '.workloads[] | select(.name == $n) | .service_account' "$LAB_WORKLOADS")\", \"containers\": [{\"name\": \"c\", \"image\": \"i\"}]},
		\"status\": {\"phase\": \"Running\", \"podIP\": \"$4\", \"podIPs\": [{\"ip\": \"$4\"}]}}}"
}
kpod default "$W11" "$lab-n1" "$(lab_pod_ip 1 1)" '{"app": "app-1"}'
kpod default "$(lab_var N2_P1_NAME)" "$lab-n2" "$P21" '{"app": "app-1"}'
kpod monitoring "$(lab_var N2_P3_NAME)" "$lab-n2" "$P23" '{"app": "alloy"}'
api apply "{\"resource\": \"services\", \"object\": {\"metadata\": {\"name\": \"k8s-monitoring-alloy-receiver\", \"namespace\": \"monitoring\"},
	\"spec\": {\"clusterIP\": \"$SVC.9.1\", \"clusterIPs\": [\"$SVC.9.1\"], \"selector\": {\"app\": \"alloy\"},
	\"ports\": [{\"name\": \"grpc\", \"port\": 4317, \"targetPort\": 4317}]}}}"
api apply "$(jq -c '{resource: "telemetries", object: .}' <<<"$TELEMETRY")"
MESH_YAML='enableTracing: true
defaultConfig:
  tracing:
    sampling: 100.0
defaultProviders:
  tracing:
  - otel
extensionProviders:
- name: otel
  opentelemetry:
    port: 4317
    service: k8s-monitoring-alloy-receiver.monitoring.svc.cluster.local'
api apply "$(jq -nc --arg m "$MESH_YAML" '{resource: "configmaps", object: {metadata: {name: "istio", namespace: "istio-system"}, data: {mesh: $m}}}')"
TELEMETRY_NODES=n1	# node 2 keeps file discovery, without the Istio objects
jq '.discovery = {source: "kubernetes", kubernetes: {api_server: "http://127.0.0.1:16080",
	token_file: "/nonexistent/token", ca_file: "/nonexistent/ca.crt"}}' "$logs/node1.json" >"$LAB_ROOT/$lab/node1.json"
: >"$A"
if lab_start_agent "$lab" 1 && lab_start_agent "$lab" 2; then
	ok "kubernetes: node 1's agent starts with the API's objects (no tracing key)"
else
	fail "kubernetes: node 1's agent starts with the API's objects (no tracing key)"
fi
check "kubernetes: ambitctl telemetry: provider otel from the ConfigMap, tags from Telemetry v1alpha1" \
	telemetry_is "default/$W11" '.workloads[0] | .source == "istio" and .outbound.provider == "otel"
		and .outbound.from.custom_tags == "Telemetry istio-system/mesh-default"'
check "kubernetes: the provider's Service resolved through the API's endpoints" \
	lab_until export_url_is otel "http://$P23:4317"
discovery_is() { # JQ over node 1's /config_dump .discovery_status.resources; shown when false
	local j
	j=$(pod_exec "$lab" n1 curl -fsS http://127.0.0.1:15000/config_dump | jq '.discovery_status.resources')
	jq -e "$1" <<<"$j" >/dev/null || { echo "$j"; return 1; }
}
check "kubernetes: the discovery status shows the Telemetry CRD served at v1alpha1, the policy CRDs at v1" \
	lab_until discovery_is '.telemetries.path == "/apis/telemetry.istio.io/v1alpha1/telemetries" and
		.meshconfig.objects == 1 and .authorizationpolicies.absent == false'
check "kubernetes: the model has the Telemetry and the MeshConfig" sh -c \
	"nsenter --net=/run/netns/$lab-n1 curl -fsS http://127.0.0.1:15000/workloads >/dev/null"
check "kubernetes: a connection n1-p1 -> n2-p1 goes through" client n1-p1 "$P21" 7000
check "kubernetes: node 1's outbound span reaches the alloy receiver, tagged" wait_count "$A" \
	"($SEL_OUT) and .resource[\"k8s.node.name\"] == \"$lab-n1\" and .attributes.cluster_name == \"homelab\" and .attributes.environment == \"development\" and .proto == \"grpc\"" 1
# a namespace Telemetry through the API silences default, at run time
api apply '{"resource": "telemetries", "object": {"apiVersion": "telemetry.istio.io/v1alpha1", "kind": "Telemetry", "metadata": {"name": "off", "namespace": "default"}, "spec": {"tracing": [{"randomSamplingPercentage": 0}]}}}'
check "kubernetes: a namespace Telemetry from the API applies without a restart" \
	telemetry_is "default/$W11" '.workloads[0].outbound | .sampling == 0 and .from.sampling == "Telemetry default/off"'
stop_check "kubernetes: agents exit cleanly"
if [ "$LAB_FAILED" -gt 0 ]; then
	for k in 1 2; do
		note "agent $k's tracing lines:"
		grep -i 'tracing\|kube' "$LAB_ROOT/$lab/agent$k.log" | tail -20 | sed 's/^/#   /'
	done
fi
lab_result
