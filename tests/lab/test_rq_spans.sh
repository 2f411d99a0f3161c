#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Request spans from the node agents (issue 17), end to end: an HTTP/1.1 client in an enrolled
# pod on node 1 makes four requests on one keep-alive connection to a pod on node 2 (no
# waypoint), two carrying their own traceparent. The agents export to tests/node/otlp_sink.js
# (an independent OTLP receiver). Checked: a CLIENT span per request from node 1's agent and a
# SERVER span per request from node 2's, each SERVER the child of its CLIENT, in the request's
# own trace (parent = its traceparent) or else under the connection's outbound span; 500 as
# ERROR; the slow answer's duration; attributes; then, with tracing.request_spans false, no
# request spans and the very same bytes on both sides (tests/tools/rq_http.py records them).
# Last, per workload through Istio's Telemetry API: a Telemetry turning span reporting off in
# the namespace of a second client pod (n1-p2, namespace "quiet"): no tracking and no span of
# its own (request or connection) from its node, the server's SERVER spans still, parented
# without the unreported CLIENT span, the other client traced as before; with the object gone,
# new connections of the quiet pod are traced again.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - rq_spans (needs root)"; exit 1; }
command -v node >/dev/null || { echo "not ok - rq_spans (node not found)"; exit 1; }
"$LAB_TOP/tests/node/install.sh"
lab_tmpdir logs rq
lab=rq-$$
RQ=$LAB_TOP/tests/tools/rq_http.py
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$LAB_TOP/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for v in $(env | sed -n 's/^\(OTEL_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

# wait_spans FILE JQ_FILTER N: until FILE holds at least N spans matching (LAB_WAIT_S).
wait_spans() { lab_until lab_spans_ge "$@"; }
# agents K...: (re)start the agents of the nodes given, exporting to the sink.
agents() {
	local k
	for k; do
		OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_EXPORTER_OTLP_ENDPOINT="http://$LAB_UL_IP:4318" \
			OTEL_BSP_SCHEDULE_DELAY=200 lab_start_agent "$lab" "$k" || return 1
	done
}
# in_shell NAME CMD...: a check whose CMD runs in this shell (agents are its children: their
# exit status can only be collected here).
in_shell() {
	local title=$1
	shift
	if "$@" >"$logs/in_shell.out" 2>&1; then ok "$title"; else fail "$title"; sed 's/^/#   /' "$logs/in_shell.out" | tail -20; fi
}
# stop_clean: stop both agents; both must exit 0 without a sanitizer report.
stop_clean() {
	local k bad=0
	for k in 1 2; do
		lab_stop_agent "$lab" "$k"
		[ "${AGENT_EXIT:-0}" = 0 ] || { echo "agent $k exited $AGENT_EXIT"; bad=1; }
		if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$LAB_ROOT/$lab/agent$k.log"; then
			grep -E -A15 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$LAB_ROOT/$lab/agent$k.log" | head -30
			bad=1
		fi
	done
	return "$bad"
}

if ! lab_up "$lab" --nodes 2 --pods 2 --cni routed --enroll p1,p2 >"$logs/up.log" 2>&1; then
	fail "rq: lab up"; sed 's/^/#   /' "$logs/up.log" | tail -20
	lab_result; exit 1
fi
N1=$(lab_var N1_NAME) N2=$(lab_var N2_NAME)
P21=$(lab_pod_ip 2 1)
W11=$(lab_var N1_P1_NAME) W21=$(lab_var N2_P1_NAME)
TRACE=4bf92f3577b34da6a3ce929d0e0e4736 PARENT=00f067aa0ba902b7
TP="00-$TRACE-$PARENT-01"
spans=$logs/spans.jsonl
: >"$spans"
pod_spawn "$lab" ul "$logs/sink.log" node "$LAB_TOP/tests/node/otlp_sink.js" --host "$LAB_UL_IP" \
	--grpc-port 4317 --http-port 4318 --out "$spans" --ready "$logs/sink.ready"
mkdir -p "$logs/rec"
pod_spawn "$lab" n2-p1 "$logs/server.log" python3 "$RQ" serve --port 8080 --record "$logs/rec"
check "rq: OTLP sink and HTTP server up" lab_until test -s "$logs/sink.ready"
wait_port "$lab" n2-p1 8080

# ---------------- request spans on (the default) ----------------
in_shell "rq: agents start (request spans on by default)" agents 1 2
out=$(pod_exec "$lab" n1-p1 python3 "$RQ" client --to "$P21:8080" --out "$logs/client-on" --traceparent "$TP" 2>&1) &&
	ok "rq: four requests on one connection, 200 500 200 200" ||
	{ fail "rq: four requests on one connection, 200 500 200 200"; printf '%s\n' "$out" | sed 's/^/#   /'; }
note "client-side durations: $out"

REQ='(.attributes["http.request.method"] == "GET")'
CLI="select($REQ and .kind == 3)" SRV="select($REQ and .kind == 2)"
OUTB='select(.name == "outbound" and .attributes["server.port"] == 8080)'
check "rq: the sink gets 4 CLIENT and 4 SERVER request spans and the connection span" \
	wait_spans "$spans" "($REQ) or (.name == \"outbound\" and .attributes[\"server.port\"] == 8080)" 9
sleep 0.5	# a duplicate would come in the same batch
check "rq: ... exactly 4 CLIENT spans, from node 1's agent, resource = the client pod" jq_check "$spans" \
	--arg n "$N1" --arg w "$W11" \
	"[.[] | $CLI] | length == 4 and all(.[]; .resource[\"k8s.node.name\"] == \$n and .resource[\"k8s.pod.name\"] == \$w)"
check "rq: ... exactly 4 SERVER spans, from node 2's agent, resource = the server pod" jq_check "$spans" \
	--arg n "$N2" --arg w "$W21" \
	"[.[] | $SRV] | length == 4 and all(.[]; .resource[\"k8s.node.name\"] == \$n and .resource[\"k8s.pod.name\"] == \$w)"
check "rq: ... each SERVER span is the child of its request's CLIENT span, same trace" jq_check "$spans" \
	"([.[] | $CLI] | sort_by(.attributes[\"http.request.ordinal\"])) as \$c |
	 ([.[] | $SRV] | sort_by(.attributes[\"http.request.ordinal\"])) as \$s |
	 [range(4)] | all(.[]; \$s[.].parent_span_id == \$c[.].span_id and \$s[.].trace_id == \$c[.].trace_id and
	   \$s[.].attributes[\"http.request.ordinal\"] == . and \$c[.].attributes[\"http.request.ordinal\"] == .)"
check "rq: ... without a traceparent: CLIENT under the connection's outbound span" jq_check "$spans" \
	"([.[] | $OUTB] | .[0]) as \$o | [.[] | $CLI | select(.attributes[\"http.request.ordinal\"] == 0 or .attributes[\"http.request.ordinal\"] == 2)] |
	 length == 2 and all(.[]; .trace_id == \$o.trace_id and .parent_span_id == \$o.span_id)"
check "rq: ... with a traceparent: CLIENT in that trace, its parent the caller's span" jq_check "$spans" \
	--arg t "$TRACE" --arg p "$PARENT" \
	"[.[] | $CLI | select(.attributes[\"http.request.ordinal\"] == 1 or .attributes[\"http.request.ordinal\"] == 3)] |
	 length == 2 and all(.[]; .trace_id == \$t and .parent_span_id == \$p)"
check "rq: ... the 500 is ERROR on both sides with http.status_code 500; the others UNSET with 200" jq_check "$spans" \
	"[.[] | select($REQ)] | length == 8 and all(.[];
	  if .attributes[\"url.path\"] == \"/fail\" then .status.code == 2 and .attributes[\"http.status_code\"] == 500 and .attributes[\"http.response.status_code\"] == 500
	  else .status.code == 0 and .attributes[\"http.status_code\"] == 200 end)"
check "rq: ... the slow answer lasts 400 ms to 1.4 s on both sides, SERVER within CLIENT" jq_check "$spans" \
	"[.[] | select($REQ and .attributes[\"url.path\"] == \"/slow\") | {k: .kind, s: (.start | tonumber), e: (.end | tonumber)}] |
	 length == 2 and all(.[]; (.e - .s) >= 400e6 and (.e - .s) <= 1400e6) and
	 ((map(select(.k == 3))[0]) as \$c | (map(select(.k == 2))[0]) as \$v | \$v.s >= \$c.s - 5e6 and \$v.e <= \$c.e + 5e6)"
check "rq: ... names, url.path without the query, server.address/port, protocol, workloads" jq_check "$spans" \
	--arg s "$W11" --arg d "$W21" \
	"[.[] | select($REQ)] | all(.[]; .name == \"GET \" + .attributes[\"url.path\"] and
	  (.attributes[\"url.path\"] | test(\"^/(ok|fail|slow)\$\")) and .attributes[\"server.address\"] == \"app.default\" and
	  .attributes[\"server.port\"] == 8080 and .attributes[\"network.protocol.version\"] == \"1.1\" and
	  .attributes[\"source.workload\"] == \$s and .attributes[\"destination.workload\"] == \$d and
	  .attributes.cluster_name == \"lab\")"
stopped="$(lab_metric "$lab" 1 ambit_request_tracing_stopped_total)/$(lab_metric "$lab" 2 ambit_request_tracing_stopped_total)"
check "rq: ... no request tracing stopped on either node ($stopped)" test "$stopped" = 0/0
in_shell "rq: agents exit cleanly" stop_clean

# ---------------- request spans off ----------------
for k in 1 2; do
	jq '.tracing.request_spans = false' "$LAB_ROOT/$lab/node$k.json" >"$logs/node$k.json" &&
		cp "$logs/node$k.json" "$LAB_ROOT/$lab/node$k.json"
done
in_shell "rq: agents start with tracing.request_spans false" agents 1 2
out=$(pod_exec "$lab" n1-p1 python3 "$RQ" client --to "$P21:8080" --out "$logs/client-off" --traceparent "$TP" 2>&1) &&
	ok "rq: the same four requests with request spans off" ||
	{ fail "rq: the same four requests with request spans off"; printf '%s\n' "$out" | sed 's/^/#   /'; }
check "rq: ... its connection spans arrive" wait_spans "$spans" '.name == "outbound" and .attributes["server.port"] == 8080' 2
lab_until test -s "$logs/rec/conn-1.out" || true	# the server records a connection at its end
sleep 1
check "rq: ... and no request span more" jq_check "$spans" "[.[] | select($REQ)] | length == 8"
check "rq: the client received the same bytes with request spans on and off" cmp "$logs/client-on" "$logs/client-off"
check "rq: the server received the same bytes with request spans on and off" cmp "$logs/rec/conn-0.in" "$logs/rec/conn-1.in"
check "rq: what the server sent is what the client received" cmp "$logs/rec/conn-0.out" "$logs/client-on"
in_shell "rq: agents exit cleanly (request spans off)" stop_clean

# ---------------- the source node reports no CLIENT span, the destination is on ----------------
# Node 1 keeps tracing.request_spans false, so its CONNECT carries no tracestate "ambit=rq":
# node 2's SERVER spans must not name CLIENT spans nobody reported.
jq 'del(.tracing.request_spans)' "$LAB_ROOT/$lab/node2.json" >"$logs/node2.json" &&
	cp "$logs/node2.json" "$LAB_ROOT/$lab/node2.json"
in_shell "rq: agents start, request spans off on node 1 only" agents 1 2
TP3=00-7c0a2b3c4d5e6f708192a3b4c5d6e7f8-1a2b3c4d5e6f7081-01
out=$(pod_exec "$lab" n1-p1 python3 "$RQ" client --to "$P21:8080" --out "$logs/client-mixed" --traceparent "$TP3" 2>&1) &&
	ok "rq: four requests from node 1 (off) to node 2 (on)" ||
	{ fail "rq: four requests from node 1 (off) to node 2 (on)"; printf '%s\n' "$out" | sed 's/^/#   /'; }
check "rq: ... node 2 reports their 4 SERVER spans" \
	wait_spans "$spans" "$REQ and .kind == 2 and .attributes[\"source.workload\"] == \"$W11\"" 8
# (the inbound span ends with the connection: it may come in a later batch than the requests')
check "rq: ... each under the request's traceparent, else the inbound span, never an unreported CLIENT span" \
	lab_until jq_check "$spans" --arg w "$W11" --arg t "${TP3:3:32}" --arg p "${TP3:36:16}" \
	'([.[] | select(.name == "inbound") | .span_id]) as $in |
	 [.[] | select(.kind == 2 and .attributes["http.request.method"] == "GET" and .attributes["source.workload"] == $w)
	  | select(.parent_span_id == $p or (.parent_span_id as $x | $in | index($x)))] |
	 length == 4 and ([.[] | select(.trace_id == $t and .parent_span_id == $p)] | length) == 2'
check "rq: ... and no CLIENT span from node 1" jq_check "$spans" --arg t "${TP3:3:32}" \
	'[.[] | select(.kind == 3 and .trace_id == $t)] | length == 0'
in_shell "rq: agents exit cleanly (request spans off on node 1)" stop_clean

# ---------------- off for one namespace through a Telemetry object ----------------
W12=$(lab_var N1_P2_NAME)
for k in 1 2; do
	jq 'del(.tracing.request_spans)' "$LAB_ROOT/$lab/node$k.json" >"$logs/node$k.json" &&
		cp "$logs/node$k.json" "$LAB_ROOT/$lab/node$k.json"
done
lab_model '.workloads |= map(if (.name | endswith("-n1-p2")) then .namespace = "quiet" | .uid = "quiet/" + .name else . end)
  | .mesh_config = {defaultConfig: {tracing: {sampling: 100}}, defaultProviders: {tracing: ["sink"]},
    extensionProviders: [{name: "sink", opentelemetry: {service: "'"$LAB_UL_IP"'", port: 4318,
      http: {path: "/v1/traces"}}}]}
  | .resources = [{apiVersion: "telemetry.istio.io/v1", kind: "Telemetry",
    metadata: {name: "off", namespace: "quiet", creationTimestamp: "2025-01-01T00:00:00Z"},
    spec: {tracing: [{disableSpanReporting: true}]}}]'
in_shell "rq: agents start with a Telemetry quiet/off (disableSpanReporting)" agents 1 2
check "rq: ... both agents resolve quiet's tracing as disabled" lab_telemetry_is "$lab" "quiet/$W12" \
	'.workloads[0] | .outbound.disabled and .inbound.disabled and .outbound.from.disabled == "Telemetry quiet/off"' n1 n2
check "rq: ... and default's as reporting to the mesh's provider (the sink)" lab_telemetry_is "$lab" "default/$W11" \
	'.workloads[0] | .source == "istio" and .outbound.provider == "sink" and (.outbound.disabled | not)' n1 n2
TP2=00-5bf92f3577b34da6a3ce929d0e0e4737-10f067aa0ba902b8-01
for who in quiet:n1-p2 default:n1-p1; do
	out=$(pod_exec "$lab" "${who#*:}" python3 "$RQ" client --to "$P21:8080" --out "$logs/client-${who%%:*}" \
		--traceparent "$TP2" 2>&1) && ok "rq: four requests from ${who%%:*} (${who#*:})" ||
		{ fail "rq: four requests from ${who%%:*} (${who#*:})"; printf '%s\n' "$out" | sed 's/^/#   /'; }
done
check "rq: node 2 traces the quiet pod's 4 requests (SERVER spans)" \
	wait_spans "$spans" "$REQ and .kind == 2 and .attributes[\"source.workload\"] == \"$W12\"" 4
check "rq: ... and the default client's CLIENT spans in that trace" \
	wait_spans "$spans" "$REQ and .kind == 3 and .trace_id == \"${TP2:3:32}\" and .attributes[\"source.workload\"] == \"$W11\"" 2
sleep 1	# a span of the quiet pod would come with the same batches
check "rq: ... no span of the quiet pod's own from node 1: no CLIENT request span, no outbound span" jq_check "$spans" \
	--arg w "$W12" '[.[] | select(.resource["k8s.pod.name"] == $w)] | length == 0'
# (the inbound span ends with the connection: it may come in a later batch than the requests')
check "rq: ... node 2 traced the quiet pod's 4 requests: SERVER spans under the request's traceparent, else the inbound span" \
	lab_until jq_check "$spans" --arg w "$W12" --arg p "${TP2:36:16}" \
	'([.[] | select(.name == "inbound" and .attributes["source.workload"] == $w)] | .[0].span_id) as $in |
	 [.[] | select(.kind == 2 and .attributes["http.request.method"] == "GET" and .attributes["source.workload"] == $w)] |
	 length == 4 and $in != null and
	 all(.[]; if (.attributes["http.request.ordinal"] % 2) == 1 then .parent_span_id == $p else .parent_span_id == $in end)'
lab_model '.resources = []'
check "rq: the Telemetry object removed: both agents resolve quiet's tracing as reporting" \
	lab_telemetry_is "$lab" "quiet/$W12" '.workloads[0] | .outbound.provider == "sink" and (.outbound.disabled | not)' n1 n2
out=$(pod_exec "$lab" n1-p2 python3 "$RQ" client --to "$P21:8080" --out "$logs/client-quiet2" 2>&1) &&
	ok "rq: four requests from quiet (n1-p2) on a new connection" ||
	{ fail "rq: four requests from quiet (n1-p2) on a new connection"; printf '%s\n' "$out" | sed 's/^/#   /'; }
check "rq: ... now traced on node 1: 4 CLIENT spans of the quiet pod, each with its SERVER child" \
	wait_spans "$spans" "$REQ and .kind == 3 and .resource[\"k8s.pod.name\"] == \"$W12\"" 4
# node 2's SERVER spans come in their own batches: 4 from before plus these 4
check "rq: ... and node 2's SERVER spans of them" \
	wait_spans "$spans" "$REQ and .kind == 2 and .attributes[\"source.workload\"] == \"$W12\"" 8
check "rq: ... each SERVER span of the new connection the child of its CLIENT span" jq_check "$spans" --arg w "$W12" \
	'[.[] | select(.kind == 3 and .resource["k8s.pod.name"] == $w and .attributes["http.request.method"] == "GET")] as $c |
	 [.[] | select(.kind == 2 and .attributes["source.workload"] == $w and .attributes["http.request.method"] == "GET")] as $s |
	 $c | length == 4 and all(.[]; .span_id as $id | [$s[] | select(.parent_span_id == $id)] | length == 1)'
in_shell "rq: agents exit cleanly (Telemetry)" stop_clean

lab_result
