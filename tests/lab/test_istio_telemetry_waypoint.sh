#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Istio's Telemetry API at the waypoint (issue 14), in the lab: a Telemetry whose targetRefs name
# the waypoint's Gateway gives its request spans a provider (MeshConfig's, resolved through the
# model to a receiver pod running tests/node/otlp_sink.js), a header tag (with its default when
# the request has no such header) and an environment tag of the waypoint's own process; the
# waypoint's config has no tracing key. A second Telemetry for the waypoint, younger, is not used.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - istio telemetry waypoint (needs root)"; exit 1; }
command -v node >/dev/null || { echo "not ok - istio telemetry waypoint (node not found)"; exit 1; }
"$LAB_TOP/tests/node/install.sh"
lab_tmpdir logs tmw
lab=tmw-$$
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$LAB_TOP/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for v in $(env | sed -n 's/^\(OTEL_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

if ! lab_up "$lab" --nodes 2 --pods 3 --cni routed --enroll p1,p2 --waypoint >"$logs/up.log" 2>&1; then
	fail "lab up --waypoint"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
V=$LAB_SVC_APP_1_VIP P23=$LAB_N2_P3_IP
SVC=${LAB_SERVICE_CIDR%.0.0/16}
S=$logs/spans.jsonl
jq --arg p23 "$lab-n2-p3" --arg vip "$SVC.9.1" '
	.workloads |= map(if .name == $p23 then .namespace = "monitoring" | .labels = {app: "coll"} else . end)
	| .services += [{name: "coll", namespace: "monitoring", addresses: [$vip], selector: {app: "coll"},
		ports: [{port: 4317, target_port: 4317, name: "grpc"}], waypoint: null}]
	| .mesh_config = {defaultProviders: {tracing: ["otel"]}, defaultConfig: {tracing: {sampling: 100}},
		extensionProviders: [{name: "otel", opentelemetry: {service: "coll.monitoring.svc.cluster.local", port: 4317}}]}
	| .resources = [
		{apiVersion: "telemetry.istio.io/v1", kind: "Telemetry",
		 metadata: {name: "wp", namespace: "default", creationTimestamp: "2025-01-01T00:00:00Z"},
		 spec: {targetRefs: [{group: "gateway.networking.k8s.io", kind: "Gateway", name: "waypoint"}],
			tracing: [{customTags: {tenant: {header: {name: "x-tenant", defaultValue: "none"}},
				node: {environment: {name: "TMW_NODE", defaultValue: "unset"}},
				cluster_name: {literal: {value: "homelab"}}}}]}},
		{apiVersion: "telemetry.istio.io/v1", kind: "Telemetry",
		 metadata: {name: "wp-younger", namespace: "default", creationTimestamp: "2025-06-01T00:00:00Z"},
		 spec: {targetRefs: [{group: "gateway.networking.k8s.io", kind: "Gateway", name: "waypoint"}],
			tracing: [{randomSamplingPercentage: 0}]}}]' \
	"$LAB_WORKLOADS" >"$logs/workloads.json" && cp "$logs/workloads.json" "$LAB_WORKLOADS"
for f in "$LAB_N1_CONFIG" "$LAB_N2_CONFIG" "$LAB_WAYPOINT_CONFIG"; do
	jq 'del(.tracing)' "$f" >"$f.new" && mv "$f.new" "$f"
done

pod_spawn "$lab" n2-p3 "$logs/sink.log" node "$LAB_TOP/tests/node/otlp_sink.js" --host "$P23" \
	--grpc-port 4317 --out "$S" --ready "$logs/sink.ready"
check "the receiver behind monitoring/coll starts" lab_until test -s "$logs/sink.ready"
: >>"$S"
for k in 1 2; do
	pod_spawn "$lab" "n$k-p1" "$logs/http-$k.log" python3 "$LAB_TOP/tests/tools/http_echo.py" \
		--port 8080 --name "$lab-n$k-p1"
	wait_port "$lab" "n$k-p1" 8080
done
export OTEL_BSP_SCHEDULE_DELAY=200
if ! lab_start_agent "$lab" 1 || ! lab_start_agent "$lab" 2; then
	fail "agents start"; lab_result; exit 1
fi
pod_spawn "$lab" "$LAB_WAYPOINT_POD" "$logs/waypoint.log" env TMW_NODE=from-env \
	"$AMBIT_BUILD/ambit-waypoint" --config "$LAB_WAYPOINT_CONFIG"
WP_PID=$SPAWNED_PID
unset OTEL_BSP_SCHEDULE_DELAY
wp_ready() {
	pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 1 -o /dev/null "http://$LAB_WAYPOINT_IP:15021/healthz/ready"
}
check "the waypoint starts with no tracing key" lab_until wp_ready

req() { # [HEADER]: one request from the client pod (app-2, enrolled) to app-1 through the waypoint
	pod_exec "$lab" n1-p2 curl -fsS -m 10 -o /dev/null ${1:+-H "$1"} "http://$V/headers"
}
wait_span() { # JQ: until the receiver has a waypoint request span matching JQ
	lab_until lab_spans_ge "$S" ".kind == 2 and (.name | startswith(\"GET \")) and ($1)" 1 && return 0
	jq -c 'select(.kind == 2) | {name, attributes}' "$S" | tail -5
	return 1
}
check "a request through the waypoint with x-tenant: t1" req "x-tenant: t1"
check "... its span reaches the provider's receiver with tenant=t1 (header), node=from-env, cluster_name" \
	wait_span '.attributes.tenant == "t1" and .attributes.node == "from-env" and .attributes.cluster_name == "homelab"'
check "a request without the header" req
check "... its span has the header tag's default (tenant=none)" wait_span '.attributes.tenant == "none"'
check "the agents' connection spans carry no request-header tag" sh -c \
	"[ \$(jq -c 'select(.name == \"outbound\" or .name == \"inbound\") | select(.attributes.tenant)' $S | wc -l) -eq 0 ]"

kill -TERM "$WP_PID" 2>/dev/null || true
rc=0
lab_until eval '! kill -0 "$WP_PID" 2>/dev/null' || true
wait "$WP_PID" 2>/dev/null || rc=$?
check "the waypoint exits 0, no sanitizer report" sh -c \
	"[ $rc -eq 0 ] && ! grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' $logs/waypoint.log"
for k in 1 2; do
	lab_stop_agent "$lab" "$k"
	check "agent $k exits 0" test "${AGENT_EXIT:-0}" = 0
done
[ "$LAB_FAILED" -eq 0 ] || grep -i 'tracing' "$logs/waypoint.log" | tail -10 | sed 's/^/#   /'
lab_result
