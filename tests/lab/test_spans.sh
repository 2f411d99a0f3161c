#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Connection spans end to end in the lab (issue 4): real agents on two routed nodes (pod 1 of
# each enrolled) export over OTLP/gRPC and OTLP/HTTP protobuf to tests/node/otlp_sink.js, an
# independent receiver (@grpc/grpc-js + the official protobuf code of @opentelemetry/
# otlp-transformer) on the underlay. Checked: linked outbound/inbound spans across nodes with
# resource, scope, custom tags and attributes; destination.service on both sides through a
# service VIP; the access log's trace and span IDs (the debug "connection opened" line and the
# info "connection complete" line); ERROR spans for refused connections and for a connection the
# server resets mid-transfer; sampling 0 (over both protocols) and 50 (parent-based across
# nodes); the collector down for 30 s with no span lost under the bound; the drop counter above
# the bound.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - spans (needs root)"; exit 1; }
command -v node >/dev/null || { echo "not ok - spans (node not found)"; exit 1; }
"$LAB_TOP/tests/node/install.sh"
lab_tmpdir logs spans
lab=spans-$$	# unique: other runs may have labs up at the same time
DOWN_S=${SPANS_DOWN_S:-30}	# how long the collector stays down in case 5
# sanitizer builds (CI): as tests/run.sh sets them, for a direct run too
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$LAB_TOP/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# ---------------- helpers ----------------

# sink_start OUT / sink_stop: the OTLP sink on this lab's underlay (lib.sh).
sink_start() { lab_sink_start "$lab" "$1" "$logs"; }
sink_stop() { lab_sink_stop "$lab"; }

# agent_start K [VAR=VALUE...]: node K's agent with those variables (and the ones in AGENT_ENV)
# in its environment.
AGENT_ENV=()
agent_start() {
	local k=$1 kv rc=0 names=()
	shift
	for kv in "${AGENT_ENV[@]}" "$@"; do
		export "${kv?}"
		names+=("${kv%%=*}")
	done
	lab_start_agent "$lab" "$k" || rc=$?
	[ ${#names[@]} -eq 0 ] || unset "${names[@]}"
	return "$rc"
}

# agents_stop: both agents stopped cleanly (lib.sh: lab_stop_agents).
agents_stop() { lab_stop_agents "$lab" 1 2; }

# nothing_lost: no span dropped or given up on either node.
nothing_lost() {
	local k m v bad=0
	for k in 1 2; do
		for m in ambit_spans_dropped_total ambit_spans_failed_total; do
			v=$(metric "$k" "$m")
			[ "$v" = 0 ] || { echo "node $k: $m = $v"; bad=1; }
		done
	done
	return "$bad"
}

# metric K NAME: the sum of the samples of NAME on node K's /metrics.
metric() { lab_metric "$lab" "$1" "$2"; } # K NAME

# count FILE JQ_FILTER: how many spans in FILE match (one JSON object per line).
count() { jq -c "select($2)" "$1" 2>/dev/null | wc -l; }

# wait_count FILE JQ_FILTER N: until at least N spans match (LAB_WAIT_S at most).
wait_count() { lab_until lab_spans_ge "$@"; }

# outbound_to IP PORT: a jq select() of the outbound spans to IP:PORT.
outbound_to() {
	echo "select(.name == \"outbound\" and .attributes[\"server.address\"] == \"$1\" and .attributes[\"server.port\"] == $2)"
}
# settle FILE SELECT...: waits (LAB_WAIT_S at most each) until FILE has a span for each jq
# select(); the checks that follow judge what arrived.
settle() {
	local f=$1 q
	shift
	for q; do wait_count "$f" "$q | true" 1 >/dev/null 2>&1 || true; done
}

# metric_is K NAME VALUE: node K's NAME equals VALUE (otherwise says what it is).
metric_is() {
	local v
	v=$(metric "$1" "$2")
	[ "$v" = "$3" ] && return 0
	echo "# node $1: $2 is $v (want $3)"
	return 1
}

# both_metric NAME VALUE [TIMEOUT_S]: until NAME equals VALUE on both nodes (LAB_WAIT_S at most;
# 0: a state that must already hold, read at once).
both_metric() {
	LAB_WAIT_S=${3:-$LAB_WAIT_S} lab_until metric_is 1 "$1" "$2" &&
		LAB_WAIT_S=${3:-$LAB_WAIT_S} lab_until metric_is 2 "$1" "$2"
}

# client FROM TO ARGS...: tcpkit client in pod FROM; its output in $out.
client() {
	local from=$1 to=$2; shift 2
	out=$(pod_exec "$lab" "$from" "$TCPKIT" client --to "$to" --timeout 30 "$@" 2>&1)
}
# check_client NAME FROM TO ARGS...: check of a client run in this shell (keeps $out for kv).
check_client() {
	local title=$1; shift
	out=""
	if client "$@"; then
		ok "$title"
	else
		fail "$title"
		printf '%s\n' "$out" | tail -n 20 | sed 's/^/#   /'
	fi
}
# check_fails NAME FROM TO ARGS...: the client run must fail.
check_fails() {
	local title=$1; shift
	if client "$@"; then fail "$title"; else ok "$title"; fi
}
kv() { printf '%s\n' "$out" | sed -n "s/^$1=//p" | head -n 1; }

serve() { # POD PORT MODE [ARGS]
	local pod=$1 port=$2 mode=$3; shift 3
	pod_spawn "$lab" "$pod" "$logs/serve-$pod-$port.log" "$TCPKIT" serve --port "$port" \
		--mode "$mode" "$@"
	wait_port "$lab" "$pod" "$port"
}

# check_here NAME CMD...: like check, but CMD runs in this shell (it may change its state:
# reap agents, keep $out, SINK_PID).
check_here() {
	local title=$1 rc=0
	shift
	"$@" >"$logs/check.out" 2>&1 || rc=$?
	if [ "$rc" -eq 0 ]; then
		ok "$title"
	else
		fail "$title"
		tail -n 20 "$logs/check.out" | sed 's/^/#   /'
	fi
	return 0
}

# ---------------- the lab ----------------

if ! lab_up "$lab" --nodes 2 --pods 2 --cni routed --enroll p1 >"$logs/up.log" 2>&1; then
	fail "lab up"; sed 's/^/#   /' "$logs/up.log" | tail -20
	lab_result; exit 1
fi
N1=$(lab_var N1_NAME) N2=$(lab_var N2_NAME)
P11=$(lab_pod_ip 1 1) P21=$(lab_pod_ip 2 1) P22=$(lab_pod_ip 2 2)
W11=$(lab_var N1_P1_NAME) W21=$(lab_var N2_P1_NAME)
SA1="spiffe://cluster.local/ns/default/sa/$(lab_var N1_P1_SA)"
SA2="spiffe://cluster.local/ns/default/sa/$(lab_var N2_P1_SA)"
APP=$(lab_var N1_P1_APP)
cp "$LAB_ROOT/$lab/node1.json" "$logs/node1.orig.json"
cp "$LAB_ROOT/$lab/node2.json" "$logs/node2.orig.json"

REQ=12345 REPLY=54321	# case 1: what the client sends and the server answers
serve n2-p1 7000 halfclose --reply "$REPLY"
serve n2-p1 9000 echo
serve n1-p1 9000 echo	# the marker connections of case 4 (node 2 to node 1)
SOLO=$LAB_SVC_SOLO_VIP	# service "solo": node 2's app-1 pod only, first in the file to select it
SOLO_FQDN=solo.default.svc.cluster.local
# A server that resets mid-transfer: echoes the first 64 KiB, then closes with SO_LINGER 0 (RST).
cat >"$logs/reset.py" <<'PY'
import socket, struct, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    got = 0
    while got < 65536:
        d = c.recv(65536 - got)
        if not d:
            break
        got += len(d)
        c.sendall(d)
    time.sleep(0.2)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    print("reset after", got, flush=True)
PY
pod_spawn "$lab" n2-p1 "$logs/reset-server.log" python3 "$logs/reset.py" 7100
wait_port "$lab" n2-p1 7100

# ---------------- cases 1-3, per protocol ----------------

# linked PROTO PORT: cases 1-3 with the agents exporting over PROTO to the sink's PORT.
linked() {
	local proto=$1 port=$2 spans p=$1
	p=${p/\//-}
	spans=$logs/spans-$p.jsonl
	sink_start "$spans" || { fail "$proto: OTLP sink starts"; return; }
	AGENT_ENV=(OTEL_EXPORTER_OTLP_PROTOCOL="$proto" OTEL_EXPORTER_OTLP_ENDPOINT="http://$LAB_UL_IP:$port"
		OTEL_BSP_SCHEDULE_DELAY=200 OTEL_RESOURCE_ATTRIBUTES=deployment.environment=lab)
	# debug level, for the "connection opened" lines: node 1 by its config, node 2 by the admin API
	jq '.log.level = "debug"' "$logs/node1.orig.json" >"$LAB_ROOT/$lab/node1.json"
	if ! agent_start 1 || ! agent_start 2; then
		fail "$proto: agents start and become ready"; agents_stop || true; sink_stop || true
		restore_configs; return
	fi
	restore_configs
	ok "$proto: agents start and become ready"
	check "$proto: node 2's log level set to debug through the admin API" sh -c \
		"nsenter --net=/run/netns/$lab-n2 -- curl -fsS -m 5 -X POST 'http://127.0.0.1:15000/logging?level=debug' |
			jq -e '.level == \"debug\"'"

	# 1. one connection pod to pod across nodes
	local bout bin
	check_client "$proto: pod to pod across nodes ($REQ bytes out, $REPLY back)" \
		n1-p1 "$P21:7000" --mode halfclose --bytes "$REQ" --reply "$REPLY"
	bout=$(kv bytes_out) bin=$(kv bytes_in)
	local sel_out='.name == "outbound" and .attributes["server.port"] == 7000'
	local sel_in='.name == "inbound" and .attributes["destination.port"] == 7000'
	check "$proto: ... the sink gets its outbound and inbound spans" \
		wait_count "$spans" "($sel_out) or ($sel_in)" 2
	sleep 0.5	# anything extra (a duplicate) would come with the same batch
	check "$proto: ... exactly one CLIENT span 'outbound' from node 1's agent" jq_check "$spans" \
		"[.[] | select($sel_out)] | length == 1 and .[0].kind == 3 and .[0].resource[\"k8s.node.name\"] == \"$N1\""
	check "$proto: ... exactly one SERVER span 'inbound' from node 2's agent" jq_check "$spans" \
		"[.[] | select($sel_in)] | length == 1 and .[0].kind == 2 and .[0].resource[\"k8s.node.name\"] == \"$N2\""
	check "$proto: ... both came over $proto" jq_check "$spans" \
		"[.[] | select(($sel_out) or ($sel_in)) | .proto] == [\"$([ "$proto" = grpc ] && echo grpc || echo http)\", \"$([ "$proto" = grpc ] && echo grpc || echo http)\"]"
	local o i
	o=$(jq -c "select($sel_out)" "$spans" | head -n 1)
	i=$(jq -c "select($sel_in)" "$spans" | head -n 1)
	[ -n "$o" ] || o='{}'
	[ -n "$i" ] || i='{}'
	printf '%s\n' "$o" >"$logs/outbound-$p.json"
	printf '%s\n' "$i" >"$logs/inbound-$p.json"
	local both="$logs/pair-$p.jsonl"
	printf '%s\n%s\n' "$o" "$i" >"$both"
	check "$proto: ... same trace_id, inbound's parent is the outbound span" jq_check "$both" \
		'.[0].trace_id == .[1].trace_id and (.[0].trace_id | test("^[0-9a-f]{32}$")) and
		 (.[0].trace_id | test("^0+$") | not) and .[1].parent_span_id == .[0].span_id and
		 .[0].parent_span_id == "" and .[0].span_id != .[1].span_id'
	check "$proto: ... resource of the outbound: the source workload" jq_check "$both" \
		--arg app "$APP" --arg pod "$W11" --arg node "$N1" \
		'.[0].resource | ."service.name" == $app and ."k8s.namespace.name" == "default" and
		 ."k8s.pod.name" == $pod and ."k8s.node.name" == $node and ."deployment.environment" == "lab"'
	check "$proto: ... resource of the inbound: the destination workload" jq_check "$both" \
		--arg app "$APP" --arg pod "$W21" --arg node "$N2" \
		'.[1].resource | ."service.name" == $app and ."k8s.namespace.name" == "default" and
		 ."k8s.pod.name" == $pod and ."k8s.node.name" == $node and ."deployment.environment" == "lab"'
	check "$proto: ... scope 'ambit' with a version" jq_check "$both" \
		'all(.[]; .scope.name == "ambit" and (.scope.version | length) > 0)'
	check "$proto: ... custom tags cluster_name=lab, environment=test on both" jq_check "$both" \
		'all(.[]; .attributes.cluster_name == "lab" and .attributes.environment == "test")'
	check "$proto: ... source and destination workload, namespace, principal on both" jq_check "$both" \
		--arg s "$W11" --arg d "$W21" --arg sa1 "$SA1" --arg sa2 "$SA2" \
		'all(.[]; .attributes | ."source.workload" == $s and ."destination.workload" == $d and
		 ."source.namespace" == "default" and ."destination.namespace" == "default" and
		 ."source.principal" == $sa1 and ."destination.principal" == $sa2)'
	# Istio's (and ztunnel's) meaning: received = the request (client to server), sent = the
	# response (server to client), from the reporting proxy's point of view.
	check "$proto: ... bytes_received = $bout (the request), bytes_sent = $bin (the reply), mutual_tls, status unset" \
		jq_check "$both" --argjson req "${bout:-0}" --argjson rep "${bin:-0}" \
		'$req > 0 and $rep > 0 and all(.[]; .attributes.bytes_received == $req and
		 .attributes.bytes_sent == $rep and .attributes.connection_security_policy == "mutual_tls" and
		 .status.code == 0 and (.attributes.response_flags == null) and
		 (.attributes["destination.service"] == null))'
	check "$proto: ... start <= end, inbound within the outbound" jq_check "$both" \
		'(.[0].start | tonumber) <= (.[0].end | tonumber) and (.[1].start | tonumber) <= (.[1].end | tonumber) and
		 (.[0].start | tonumber) <= (.[1].start | tonumber)'

	# 2. the access log line of the connection carries the outbound span's IDs
	local tid sid
	tid=$(jq -r '.trace_id // ""' "$logs/outbound-$p.json") sid=$(jq -r '.span_id // ""' "$logs/outbound-$p.json")
	check "$proto: access log: node 1's 'connection complete' line has the outbound's trace_id and span_id" \
		sh -c "grep -F '\"connection complete\"' '$LAB_ROOT/$lab/agent1.log' |
			jq -R -c 'fromjson? | select(.trace_id == \"$tid\" and .span_id == \"$sid\" and .direction == \"outbound\")' |
			grep -q . && test -n '$tid'"
	local isid
	isid=$(jq -r '.span_id // ""' "$logs/inbound-$p.json")
	check "$proto: access log: node 2's line has the inbound's IDs (same trace)" \
		sh -c "grep -F '\"connection complete\"' '$LAB_ROOT/$lab/agent2.log' |
			jq -R -c 'fromjson? | select(.trace_id == \"$tid\" and .span_id == \"$isid\")' | grep -q . && test -n '$isid'"
	check "$proto: access log: node 1's debug 'connection opened' line has the outbound's IDs" \
		log_line "$LAB_ROOT/$lab/agent1.log" "connection opened" debug outbound "$tid" "$sid"
	check "$proto: access log: node 2's debug 'connection opened' line has the inbound's IDs" \
		log_line "$LAB_ROOT/$lab/agent2.log" "connection opened" debug inbound "$tid" "$isid"

	# 3. refused connections: an enrolled pod where nothing listens, and a non-mesh pod
	check_fails "$proto: connection to a closed port of an enrolled pod fails" \
		n1-p1 "$P21:7777" --mode verify --bytes 1K --timeout 5
	check_fails "$proto: connection to a closed port of a non-mesh pod fails" \
		n1-p1 "$P22:7777" --mode verify --bytes 1K --timeout 5
	local err_mesh err_plain
	err_mesh=$(outbound_to "$P21" 7777) err_plain=$(outbound_to "$P22" 7777)
	settle "$spans" "$err_mesh" "$err_plain"
	check "$proto: ... mesh destination: one outbound span, status ERROR with a message and response_flags" \
		jq_check "$spans" "[.[] | $err_mesh] | length == 1 and .[0].status.code == 2 and
		 (.[0].status.message | length) > 0 and (.[0].attributes.response_flags | length) > 0 and
		 .[0].kind == 3 and .[0].attributes.cluster_name == \"lab\""
	check "$proto: ... non-mesh destination: one outbound span, status ERROR with a message and response_flags" \
		jq_check "$spans" "[.[] | $err_plain] | length == 1 and .[0].status.code == 2 and
		 (.[0].status.message | length) > 0 and (.[0].attributes.response_flags | length) > 0 and
		 .[0].attributes.connection_security_policy != \"mutual_tls\""

	# 4. through a service VIP: both sides name the service (the inbound guesses it as ztunnel
	# does: the first service selecting the destination with the target port)
	check_client "$proto: pod to the service VIP $SOLO:9000 (solo, on node 2)" \
		n1-p1 "$SOLO:9000" --mode echo --bytes 1000
	local svc_o svc_i svc_sid
	svc_o=$(outbound_to "$SOLO" 9000)
	settle "$spans" "$svc_o"
	svc_sid=$(jq -r "$svc_o | .span_id" "$spans" | head -n 1)
	svc_i="select(.name == \"inbound\" and .parent_span_id == \"$svc_sid\")"
	settle "$spans" "$svc_i"
	check "$proto: ... outbound span: destination.service = $SOLO_FQDN, the endpoint on node 2" \
		jq_check "$spans" --arg f "$SOLO_FQDN" --arg d "$W21" --arg ip "$P21" \
		"[.[] | $svc_o] | length == 1 and .[0].attributes[\"destination.service\"] == \$f and
		 .[0].attributes[\"destination.workload\"] == \$d and .[0].attributes[\"destination.address\"] == \$ip and
		 .[0].status.code == 0"
	check "$proto: ... inbound span (child of it): destination.service = $SOLO_FQDN too" \
		jq_check "$spans" --arg f "$SOLO_FQDN" --arg d "$W21" --arg n "$N2" \
		"[.[] | $svc_i] | length == 1 and .[0].attributes[\"destination.service\"] == \$f and
		 .[0].attributes[\"destination.workload\"] == \$d and .[0].resource[\"k8s.node.name\"] == \$n and
		 .[0].status.code == 0"

	# 5. the server resets the connection mid-transfer (after echoing 64 KiB)
	check_fails "$proto: a connection the server resets mid-transfer fails at the client" \
		n1-p1 "$P21:7100" --mode echo --bytes 4M --timeout 20
	local rst_o rst_i="select(.name == \"inbound\" and .attributes[\"destination.port\"] == 7100)"
	rst_o=$(outbound_to "$P21" 7100)
	settle "$spans" "$rst_o" "$rst_i"
	check "$proto: ... inbound span: ERROR with a message, response_flags UR (upstream reset), 64 KiB+ received" \
		jq_check "$spans" "[.[] | $rst_i] | length == 1 and .[0].status.code == 2 and
		 (.[0].status.message | length) > 0 and .[0].attributes.response_flags == \"UR\" and
		 .[0].attributes.bytes_received >= 65536"
	check "$proto: ... outbound span: ERROR with a message, response_flags UR, the inbound's parent" \
		jq_check "$spans" "[.[] | $rst_o] as \$o | [.[] | $rst_i] as \$i | (\$o | length) == 1 and
		 \$o[0].status.code == 2 and (\$o[0].status.message | length) > 0 and
		 \$o[0].attributes.response_flags == \"UR\" and \$o[0].attributes.bytes_received >= 65536 and
		 (\$i | length) == 1 and \$i[0].parent_span_id == \$o[0].span_id"
	check "$proto: no span was dropped or given up" nothing_lost
	check_here "$proto: agents exit cleanly" agents_stop
	sink_stop || true
}

# log_line LOG MSG LEVEL DIRECTION TRACE_ID SPAN_ID: LOG has a JSON line MSG at LEVEL for that
# direction with those IDs.
log_line() {
	[ -n "$5" ] && [ -n "$6" ] || { echo "no span IDs to look for"; return 1; }
	grep -F "\"$2\"" "$1" | jq -R -c --arg l "$3" --arg d "$4" --arg t "$5" --arg s "$6" \
		'fromjson? | select(.level == $l and .direction == $d and .trace_id == $t and .span_id == $s)' |
		grep -q .
}

# opened K REPORTER: istio_tcp_connections_opened_total{reporter=REPORTER} on node K.
opened() { lab_metric "$lab" "$1" istio_tcp_connections_opened_total "reporter=$2"; }
opened_ge() { # K REPORTER N: at least N (counted in the agent's own time: wait with lab_until)
	local v
	v=$(opened "$1" "$2")
	echo "node $1: $v connections opened (reporter=$2), want $3 or more"
	[ "$v" -ge "$3" ]
}

# marker FILE: one connection from node 2's pod to node 1's (sampled at node 2: 100%), then waits
# for its two spans. Batches leave in order, so every span of an earlier connection that was
# going to be exported is in FILE once the marker's are.
marker() {
	local f=$1 out
	client n2-p1 "$P11:9000" --mode echo --bytes 100 || { echo "marker connection failed: $out"; return 1; }
	wait_count "$f" ".resource[\"k8s.node.name\"] == \"$N2\" and .name == \"outbound\" and .attributes[\"server.address\"] == \"$P11\"" 1 &&
		wait_count "$f" ".resource[\"k8s.node.name\"] == \"$N1\" and .name == \"inbound\" and .attributes[\"destination.port\"] == 9000" 1
}

# restore_configs: the lab's node configs as lab.sh wrote them.
restore_configs() {
	cp "$logs/node1.orig.json" "$LAB_ROOT/$lab/node1.json"
	cp "$logs/node2.orig.json" "$LAB_ROOT/$lab/node2.json"
}

# ---------------- case 4: sampling ----------------

# sampling_zero PROTO PORT: node 1 at 0 %, node 2 at 100 %, exporting over PROTO.
sampling_zero() {
	local proto=$1 port=$2 spans=$logs/spans-s0-${1/\//-}.jsonl out n=50 i2
	local sel_o="select(.name == \"outbound\" and .resource[\"k8s.node.name\"] == \"$N1\" and .attributes[\"server.address\"] == \"$P21\" and .attributes[\"server.port\"] == 9000)"
	local sel_i="select(.name == \"inbound\" and .resource[\"k8s.node.name\"] == \"$N2\" and .attributes[\"destination.port\"] == 9000)"
	sink_start "$spans" || { fail "sampling 0 ($proto): OTLP sink starts"; return; }
	AGENT_ENV=(OTEL_EXPORTER_OTLP_PROTOCOL="$proto" OTEL_EXPORTER_OTLP_ENDPOINT="http://$LAB_UL_IP:$port"
		OTEL_BSP_SCHEDULE_DELAY=200)
	# node 1 samples nothing (OTEL_TRACES_SAMPLER); node 2 keeps tracing.sampling 100, so its
	# inbound spans exist only if it follows the unsampled flag of the CONNECT's traceparent
	if ! agent_start 1 OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0 ||
		! agent_start 2; then
		fail "sampling 0 ($proto): agents start"; agents_stop || true; sink_stop || true; return
	fi
	i2=$(opened 2 destination)
	check_client "sampling 0 ($proto): $n connections across nodes" \
		n1-p1 "$P21:9000" --mode crr --count "$n" --msg-size 16
	check "sampling 0 ($proto): ... all reached node 2's agent (inbound)" lab_until opened_ge 2 destination "$((i2 + n))"
	check "sampling 0 ($proto): ... a sampled marker connection from node 2 arrives (node 1's inbound follows its sampled flag)" \
		marker "$spans"
	sleep 0.5
	check "sampling 0 ($proto): ... no span exported for the $n connections, from either side" jq_check "$spans" \
		"([.[] | $sel_o] | length) == 0 and ([.[] | $sel_i] | length) == 0 and length == 2 and
		 all(.[]; .proto == \"$([ "$proto" = grpc ] && echo grpc || echo http)\")"
	check_here "sampling 0 ($proto): agents exit cleanly" agents_stop
	sink_stop || true
}

# sampling_half: node 1 at 50 % (tracing.sampling in its config), node 2 at 100 %.
sampling_half() {
	local spans=$logs/spans-s50.jsonl out n=200 i2
	local sel_o="select(.name == \"outbound\" and .resource[\"k8s.node.name\"] == \"$N1\" and .attributes[\"server.address\"] == \"$P21\" and .attributes[\"server.port\"] == 9000)"
	local sel_i="select(.name == \"inbound\" and .resource[\"k8s.node.name\"] == \"$N2\" and .attributes[\"destination.port\"] == 9000)"
	AGENT_ENV=(OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_EXPORTER_OTLP_ENDPOINT="http://$LAB_UL_IP:4317"
		OTEL_BSP_SCHEDULE_DELAY=200)
	sink_start "$spans" || { fail "sampling 50: OTLP sink starts"; return; }
	jq '.tracing.sampling = 50' "$logs/node1.orig.json" >"$LAB_ROOT/$lab/node1.json"
	if ! agent_start 1 || ! agent_start 2; then
		fail "sampling 50: agents start"; agents_stop || true; restore_configs; return
	fi
	i2=$(opened 2 destination)
	check_client "sampling 50: $n connections across nodes" \
		n1-p1 "$P21:9000" --mode crr --count "$n" --msg-size 16
	check "sampling 50: ... all reached node 2's agent" lab_until opened_ge 2 destination "$((i2 + n))"
	check "sampling 50: ... marker connection's spans arrive" marker "$spans"
	sleep 0.5
	local so si
	so=$(count "$spans" "$sel_o | true") si=$(count "$spans" "$sel_i | true")
	note "sampling 50: $so of $n outbound spans sampled, $si inbound"
	check "sampling 50: ... sampled traces within 60..$((n - 60)) of $n (got $so)" \
		test "$so" -ge 60 -a "$so" -le "$((n - 60))"
	check "sampling 50: ... every sampled outbound has its inbound, and no other inbound" jq_check "$spans" \
		"([.[] | $sel_o | .trace_id + \"/\" + .span_id] | sort) as \$o |
		 ([.[] | $sel_i | .trace_id + \"/\" + .parent_span_id] | sort) as \$i |
		 (\$o | length) > 0 and \$o == \$i and (\$o | unique | length) == (\$o | length)"
	check "sampling 50: ... node 1 dropped nothing" nothing_lost
	check_here "sampling 50: agents exit cleanly" agents_stop
	restore_configs
	sink_stop || true
}

# ---------------- case 5: the collector down for DOWN_S seconds ----------------

collector_down() {
	local spans=$logs/spans-down.jsonl spans2=$logs/spans-back.jsonl out m=40
	local is_o=".name == \"outbound\" and .resource[\"k8s.node.name\"] == \"$N1\" and .attributes[\"server.port\"] == 9000"
	local is_i=".name == \"inbound\" and .resource[\"k8s.node.name\"] == \"$N2\" and .attributes[\"destination.port\"] == 9000"
	local sel_o="select($is_o)" sel_i="select($is_i)"
	sink_start "$spans" || { fail "collector down: OTLP sink starts"; return; }
	AGENT_ENV=(OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_EXPORTER_OTLP_ENDPOINT="http://$LAB_UL_IP:4317"
		OTEL_BSP_SCHEDULE_DELAY=200)
	if ! agent_start 1 || ! agent_start 2; then
		fail "collector down: agents start"; agents_stop || true; sink_stop || true; return
	fi
	# a connection first, so that the exporters hold a connection to the collector that dies
	client n1-p1 "$P21:9000" --mode echo --bytes 100 || true
	check "collector down: export works before (both spans arrive)" \
		wait_count "$spans" "($is_o) or ($is_i)" 2
	check_here "collector down: sink killed" sink_stop
	check_client "collector down: $m connections while it is down" \
		n1-p1 "$P21:9000" --mode crr --count "$m" --msg-size 16
	note "collector down: waiting ${DOWN_S}s"
	sleep "$DOWN_S"
	check "collector down: ... the $m spans of each side wait in the queues" \
		both_metric ambit_spans_queued "$m"
	check_here "collector down: the sink is back on the same ports" sink_start "$spans2"
	check "collector down: ... all $((2 * m)) spans arrive" \
		wait_count "$spans2" "($is_o) or ($is_i)" "$((2 * m))"
	check "collector down: ... the queues drain" both_metric ambit_spans_queued 0
	sleep 1
	check "collector down: ... exactly once: $m outbound, $m inbound, each span ID once, each outbound with its inbound" \
		jq_check "$spans2" --argjson m "$m" \
		"([.[] | $sel_o | .trace_id + \"/\" + .span_id] | sort) as \$o |
		 ([.[] | $sel_i | .trace_id + \"/\" + .parent_span_id] | sort) as \$i |
		 (\$o | length) == \$m and \$o == \$i and ([.[] | .span_id] | unique | length) == length and length == 2 * \$m"
	check "collector down: ... ambit_spans_dropped_total (and failed) 0 on both nodes" nothing_lost
	check_here "collector down: agents exit cleanly" agents_stop
	sink_stop || true
}

# ---------------- case 6: above the bound ----------------

overflow() {
	local spans=$logs/spans-overflow.jsonl out q=20 x=60 r1 r2
	AGENT_ENV=(OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_EXPORTER_OTLP_ENDPOINT="http://$LAB_UL_IP:4318"
		OTEL_BSP_SCHEDULE_DELAY=200 OTEL_BSP_MAX_QUEUE_SIZE=$q OTEL_BSP_MAX_EXPORT_BATCH_SIZE=10)
	# the collector is down from the start
	if ! agent_start 1 || ! agent_start 2; then
		fail "overflow: agents start with OTEL_BSP_MAX_QUEUE_SIZE=$q"; agents_stop || true; return
	fi
	check_client "overflow: $q connections fill the queues (collector down)" \
		n1-p1 "$P21:9000" --mode crr --count "$q" --msg-size 16
	r1=$(kv conn_per_s)
	check "overflow: ... the queues hold $q spans each" both_metric ambit_spans_queued "$q"
	check "overflow: ... nothing dropped yet" both_metric ambit_spans_dropped_total 0 0
	check_client "overflow: $x more connections all succeed" \
		n1-p1 "$P21:9000" --mode crr --count "$x" --msg-size 16
	r2=$(kv conn_per_s)
	note "overflow: $r1 conn/s with room in the queue, $r2 conn/s with the queue full"
	check "overflow: ... not slowed by the full queue ($r2 conn/s vs $r1)" \
		awk -v a="${r1:-0}" -v b="${r2:-0}" 'BEGIN { exit !(a > 0 && b >= a / 3) }'
	check "overflow: ... ambit_spans_dropped_total = $x (the overflow) on both nodes" \
		both_metric ambit_spans_dropped_total "$x"
	check "overflow: ... and the queues still hold $q each" both_metric ambit_spans_queued "$q" 0
	check_here "overflow: the collector is back" sink_start "$spans"
	check "overflow: ... the $q queued spans of each node are exported" \
		both_metric ambit_spans_exported_total "$q"
	check "overflow: ... and the sink decoded them ($((2 * q)) spans)" wait_count "$spans" true "$((2 * q))"
	check_here "overflow: agents exit cleanly" agents_stop
	sink_stop || true
}

# unset OTEL_* from the caller's environment: every run sees the same settings
for v in $(env | sed -n 's/^\(OTEL_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

linked grpc 4317
linked http/protobuf 4318
sampling_zero grpc 4317
sampling_zero http/protobuf 4318
sampling_half
collector_down
overflow
lab_result
