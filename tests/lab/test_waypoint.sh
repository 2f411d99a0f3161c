#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The waypoint end to end: two nodes with agents (real capture), a waypoint pod running
# ambit-waypoint for service app-1, HTTP/1.1 servers (tests/tools/http_echo.py) on app-1's two
# endpoints. A client pod calls the service VIP: 200 and 500 answers arrive intact, request spans
# carry the status codes in the same trace as the client's outbound connection span (checked in
# what tests/node/otlp_sink.js decoded), keep-alive spreads many requests on one connection over
# both endpoints, a chunked upload comes back byte for byte, raw TCP through the waypoint port
# still works, and a waypoint presenting the wrong identity is refused by the agent.
# Also: a request's own traceparent is continued (the request span's parent is the caller's span);
# an upstream failure (nothing listening) gives an ERROR request span; a client that reaches an
# app-1 pod by its IP, skipping the waypoint, is flagged by the destination's agent (span attribute
# waypoint.bypassed, ambit_waypoint_bypass_total) while traffic through the waypoint is not;
# a workload naming a waypoint itself (app-2's pod on node 2) is reached through it by pod IP;
# and the source exemption: a workload behind waypoint "wp2" is reached directly from wp2's own
# pod (the client pod, labelled into wp2's selector), through wp2 from any other pod.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - waypoint (needs root)"; exit 1; }
WAYPOINT_BIN=$AMBIT_BUILD/ambit-waypoint
[ -x "$WAYPOINT_BIN" ] || { echo "not ok - waypoint ($WAYPOINT_BIN not built)"; exit 1; }
command -v node >/dev/null || { echo "not ok - waypoint (node not found)"; exit 1; }
command -v nc >/dev/null || { echo "not ok - waypoint (nc not found: netcat-openbsd)"; exit 1; }
"$LAB_TOP/tests/node/install.sh"
lab_tmpdir logs waypoint
lab=wp-$$	# unique: other runs of this test (make lab-test) may be up at the same time
NODE=$(command -v node)

start_waypoint() { lab_start_waypoint "$lab" "$logs/waypoint.log" "$1"; } # CONFIG; sets WP_PID

stop_waypoint() {
	[ -n "${WP_PID:-}" ] || return 0
	kill -TERM "$WP_PID" 2>/dev/null || true
	local i rc=0
	for i in $(seq 100); do kill -0 "$WP_PID" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$WP_PID" 2>/dev/null || true
	wait "$WP_PID" 2>/dev/null || rc=$?
	WP_EXIT=$rc
	WP_PID=""
}

cl() { pod_exec "$lab" n1-p2 "$@"; }   # the client pod (app-2, enrolled, node 1)

if ! lab_up "$lab" --nodes 2 --pods 3 --cni routed --enroll p1,p2,p3 --waypoint >"$logs/up.log" 2>&1; then
	fail "lab up --waypoint"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
V=$LAB_SVC_APP_1_VIP
check "lab: the waypoint pod, its Service and app-1's use-waypoint are in the workloads file" \
	jq -e '(.services[] | select(.name == "app-1") | .waypoint == {"name": "waypoint", "namespace": "default"})
		and (.workloads[] | select(.addresses == ["'"$LAB_WAYPOINT_IP"'"]) | .enrolled == false
		     and .service_account == "waypoint")' "$LAB_WORKLOADS"
# The workloads file for the waypoint cases below, before anything reads it: app-2's pod on node
# 2 names the waypoint itself; a second waypoint Service "wp2" selects the client pod (n1-p2),
# and app-3's pod on node 2 names wp2.
P21=$LAB_N2_P1_IP P22=$LAB_N2_P2_IP P23=$LAB_N2_P3_IP P11=$LAB_N1_P1_IP P12=$LAB_N1_P2_IP
jq --arg p12 "$lab-n1-p2" --arg p22 "$lab-n2-p2" --arg p23 "$lab-n2-p3" '
	.workloads |= map(
		if .name == $p22 then .waypoint = {name: "waypoint", namespace: "default"}
		elif .name == $p23 then .waypoint = {name: "wp2", namespace: "default"}
		elif .name == $p12 then .labels["lab.ambit.io/wp2"] = "1"
		else . end) |
	.services += [{name: "wp2", namespace: "default", addresses: ["10.96.0.21"],
		selector: {"lab.ambit.io/wp2": "1"},
		ports: [{port: 15008, target_port: 15008, name: "mesh"}], waypoint: null}]' \
	"$LAB_WORKLOADS" >"$logs/workloads.json" && cp "$logs/workloads.json" "$LAB_WORKLOADS"

# Collectors: one on the underlay for the agents, one in the waypoint pod (its config's
# 127.0.0.1:4317); pods have no route to the underlay bridge.
pod_spawn "$lab" ul "$logs/sink.log" "$NODE" "$LAB_TOP/tests/node/otlp_sink.js" --host "$LAB_UL_IP" \
	--grpc-port 4317 --out "$logs/spans-agents.jsonl" --ready "$logs/sink.ready"
pod_spawn "$lab" "$LAB_WAYPOINT_POD" "$logs/wsink.log" "$NODE" "$LAB_TOP/tests/node/otlp_sink.js" \
	--host 127.0.0.1 --grpc-port 4317 --out "$logs/spans-waypoint.jsonl" --ready "$logs/wsink.ready"
check "the OTLP sinks (agents', waypoint's) start" lab_until test -f "$logs/sink.ready" -a -f "$logs/wsink.ready"
: >>"$logs/spans-agents.jsonl"
: >>"$logs/spans-waypoint.jsonl"
export OTEL_BSP_SCHEDULE_DELAY=300
for k in 1 2; do
	pod_spawn "$lab" "n$k-p1" "$logs/http-$k.log" python3 "$LAB_TOP/tests/tools/http_echo.py" \
		--port 8080 --name "$lab-n$k-p1"
	pod_spawn "$lab" "n$k-p1" "$logs/echo-$k.log" "$TCPKIT" serve --port 9000 --mode echo
	wait_port "$lab" "n$k-p1" 8080
	wait_port "$lab" "n$k-p1" 9000
done
pod_spawn "$lab" n2-p2 "$logs/http-22.log" python3 "$LAB_TOP/tests/tools/http_echo.py" \
	--port 8080 --name "$lab-n2-p2"
pod_spawn "$lab" n2-p3 "$logs/echo-23.log" "$TCPKIT" serve --port 9000 --mode echo
wait_port "$lab" n2-p2 8080
wait_port "$lab" n2-p3 9000
if ! OTEL_EXPORTER_OTLP_ENDPOINT=http://$LAB_UL_IP:4317 lab_start_agent "$lab" 1 ||
	! OTEL_EXPORTER_OTLP_ENDPOINT=http://$LAB_UL_IP:4317 lab_start_agent "$lab" 2; then
	fail "agents start"; lab_result; exit 1
fi
if start_waypoint "$LAB_WAYPOINT_CONFIG"; then ok "waypoint starts and becomes ready"
else fail "waypoint starts and becomes ready"; lab_result; exit 1; fi
check "waypoint: --check accepts the lab config" "$WAYPOINT_BIN" --config "$LAB_WAYPOINT_CONFIG" --check
echo '{"name": "waypoint", "namespace": "default", "bogus": 1}' >"$logs/bad.json"
bad_config() {
	local rc=0 out
	out=$("$WAYPOINT_BIN" --config "$logs/bad.json" 2>&1) || rc=$?
	[ "$rc" -eq 2 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] && [[ $out == *bogus* ]]
}
check "waypoint: a bad config key exits 2 with one line naming it" bad_config

answer() { # CODE PATH: the answer to GET PATH is CODE with the server's body
	local out
	out=$(cl curl -sS -m 10 -w '\n%{http_code}' "http://$V$2") &&
	[ "$(printf '%s\n' "$out" | tail -n1)" = "$1" ] &&
	head -n1 <<<"$out" | grep -Eq "^(status $1 from |)$lab-n[12]-p1\$"
}
check "client -> service with a waypoint: 200 arrives intact" answer 200 /whoami
check "client -> service with a waypoint: 500 arrives intact" answer 500 /status/500
check "... the agent sent it to the waypoint" \
	lab_until grep -q "\"dst.hbone_addr\":\"$LAB_WAYPOINT_IP:15008\"" "$LAB_DIR/agent1.log"

keepalive() {
	local urls="" i out
	for i in $(seq 40); do urls+="http://$V/whoami "; done
	# shellcheck disable=SC2086
	out=$(cl curl -sS -m 30 -w '%{num_connects}\n' $urls) || return 1
	echo "$out" | sort | uniq -c
	[ "$(grep -c "^$lab-n1-p1" <<<"$out")" -ge 10 ] &&
	[ "$(grep -c "^$lab-n2-p1" <<<"$out")" -ge 10 ] &&
	[ "$(grep -Ec "^$lab-n[12]-p1" <<<"$out")" -eq 40 ] &&
	[ "$(grep -Ex '[0-9]+' <<<"$out" | paste -sd+ | bc)" -eq 1 ]
}
check "keep-alive: 40 requests on one client connection, spread over both endpoints" keepalive

pipelined() { # 5 requests written at once (pipelining), 5 answers back in order
	local req="" i out
	for i in 1 2 3 4 5; do req+="GET /status/20$i HTTP/1.1\r\nHost: app-1\r\n\r\n"; done
	req+="GET /whoami HTTP/1.1\r\nHost: app-1\r\nConnection: close\r\n\r\n"
	out=$(printf "$req" | lab_raw_exchange "$lab" n1-p2 "$V" 80 2>&1) || true	# (to the close)
	[ "$(grep -Ec '^HTTP/1.1 20[1-5] ' <<<"$out")" -eq 5 ] &&
	[ "$(grep -E '^HTTP/1.1 20[1-5] ' <<<"$out" | awk '{print $2}' | paste -sd,)" = "201,202,203,204,205" ]
}
check "pipelining: 5 requests in one write, answers in order" pipelined

chunked() {
	head -c 3000000 /dev/urandom >"$logs/upload.bin"
	cl curl -sS -m 60 -H 'Transfer-Encoding: chunked' --data-binary "@$logs/upload.bin" \
		-o "$logs/download.bin" "http://$V/echo" &&
	cmp "$logs/upload.bin" "$logs/download.bin"
}
check "chunked upload (3 MB) echoed back chunked, byte for byte" chunked

check "raw TCP through the waypoint port (9000): echo checked byte for byte" \
	cl "$TCPKIT" client --to "$V:9000" --mode echo --conns 8 --parallel 4 --msg-size 65536 --timeout 30
check "raw TCP: a 16 MiB verified stream" \
	cl "$TCPKIT" client --to "$V:9000" --mode echo --bytes 16M --timeout 60
check "waypoint: nothing logged at error level" sh -c "! grep -q '\"level\":\"error\"' '$logs/waypoint.log'"

metric() {
	# grep reads it all (grep -q may leave curl writing into a closed pipe: curl error 23)
	pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 "http://$LAB_WAYPOINT_IP:15020/metrics" |
		grep "^istio_requests_total{reporter=\"waypoint\".*response_code=\"500\"" >/dev/null
}
check "metrics: istio_requests_total with response_code 500" lab_until metric

# Spans: request spans with the status codes, in the trace of the client's outbound span.
span_chain() { # ALL: the checks on the decoded spans (all three spans present)
	local all=$1 t inb out
	t=$(jq -r 'select(.name == "GET /status/500") | .trace_id' "$all" 2>/dev/null | head -n1)
	[ -n "$t" ] || { echo "no request span GET /status/500"; return 1; }
	# (jq -s with any(): jq 1.6's -e reports the last input, not the last output)
	jq -se --arg t "$t" 'any(.[]; .trace_id == $t and .name == "GET /status/500"
		and .kind == 2 and .attributes["http.status_code"] == 500
		and .attributes["http.response.status_code"] == 500 and .status.code == 2
		and .attributes["http.request.method"] == "GET" and .attributes["url.path"] == "/status/500"
		and .attributes["destination.service"] == "app-1.default.svc.cluster.local"
		and (.attributes["destination.workload"] | test("-n[12]-p1$"))
		and .attributes.cluster_name == "lab" and .resource["service.name"] == "waypoint")' "$all" &&
	jq -se 'any(.[]; .name == "GET /whoami" and .attributes["http.status_code"] == 200
		and .status.code != 2)' "$all" || return 1
	# request span -> the waypoint's inbound span -> the client's outbound span, one trace
	inb=$(jq -r --arg t "$t" 'select(.trace_id == $t and .name == "GET /status/500") | .parent_span_id' "$all")
	jq -se --arg t "$t" --arg s "$inb" 'any(.[]; .trace_id == $t and .span_id == $s
		and .name == "inbound" and .kind == 2 and .resource["service.name"] == "waypoint")' "$all" || return 1
	out=$(jq -r --arg t "$t" --arg s "$inb" 'select(.trace_id == $t and .span_id == $s) | .parent_span_id' "$all")
	jq -se --arg t "$t" --arg s "$out" 'any(.[]; .trace_id == $t and .span_id == $s
		and .name == "outbound" and .kind == 3 and .resource["service.name"] == "app-2")' "$all"
}
spans_ok() {
	local all=$logs/spans.jsonl i
	for i in $(seq 60); do
		cat "$logs/spans-agents.jsonl" "$logs/spans-waypoint.jsonl" >"$all" 2>/dev/null || true
		span_chain "$all" >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	span_chain "$all"
}
check "spans: GET /status/500 is SERVER, 500, ERROR, a child of the waypoint's inbound span, in the client's trace" spans_ok
check "spans: the agents add no request spans for traffic through the waypoint (it traces it)" \
	jq -se '[.[] | select(.attributes["http.request.method"] != null)] | length == 0' "$logs/spans-agents.jsonl"
TP_TRACE=0af7651916cd43dd8448eb211c80319c TP_SPAN=b7ad6b7169203331
own_traceparent() { # a request's own traceparent is continued and a new one goes upstream
	local tp=00-$TP_TRACE-$TP_SPAN-01 out
	out=$(cl curl -sS -m 10 -H "traceparent: $tp" "http://$V/headers") &&
	echo "$out" | jq -r .traceparent >"$logs/upstream-traceparent" &&
	echo "$out" | jq -e --arg t "$TP_TRACE" --arg s "$TP_SPAN" '.traceparent |
		test("^00-" + $t + "-[0-9a-f]{16}-01$") and (. != "00-" + $t + "-" + $s + "-01")'
}
check "traceparent: the request's own trace continues, the request span's context goes upstream" own_traceparent
# wait_span FILE JQ_SELECT: until FILE has a span matching JQ_SELECT (30 s); prints the first.
wait_span() {
	local i
	for i in $(seq 60); do
		jq -c "select($2)" "$1" 2>/dev/null | head -n 1 | grep . && return 0
		sleep 0.5
	done
	echo "no span matches $2 in $1"
	return 1
}
own_parent() { # the exported request span: the caller's trace, the caller's span as parent
	local up sp
	up=$(cat "$logs/upstream-traceparent")
	sp=$(wait_span "$logs/spans-waypoint.jsonl" ".name == \"GET /headers\" and .trace_id == \"$TP_TRACE\"") || return 1
	echo "request span: $sp; upstream traceparent: $up"
	echo "$sp" | jq -e --arg s "$TP_SPAN" --arg up "$up" '.parent_span_id == $s and .kind == 2 and
		$up == "00-" + .trace_id + "-" + .span_id + "-01"'
}
check "traceparent: ... the request span has the caller's trace_id, parent_span_id = the caller's span, and is what went upstream" own_parent

# An upstream failure: nothing listens on app-2's pod on node 2 at 8081 (that workload names the
# waypoint, so the request goes through it): a local 503 and an ERROR request span.
up_fail() {
	local code
	code=$(cl curl -sS -m 15 -o /dev/null -w '%{http_code}' "http://$P22:8081/upstream-down") || true
	echo "http code $code"
	[ "$code" = 503 ] || return 1
	wait_span "$logs/spans-waypoint.jsonl" '.name == "GET /upstream-down"' | jq -e --arg ip "$P22" --arg wl "$lab-n2-p2" '
		.status.code == 2 and (.status.message | test("upstream connect failed")) and
		.attributes.response_flags == "UF" and .attributes["http.status_code"] == 503 and
		.attributes["destination.address"] == $ip and .attributes["destination.port"] == 8081 and
		.attributes["destination.workload"] == $wl'
}
check "upstream failure (nothing listens): 503 from the waypoint, request span ERROR with the upstream's message, UF and the endpoint it picked" up_fail

# ---------------- waypoint hand-off for workloads; bypass detection ----------------
agent_metric() { lab_metric "$lab" "$1" "$2"; } # K NAME: the sum of NAME's samples on node K
# agent_line K DST [SRC_IP]: the last 'connection complete' line of node K's agent for
# destination DST (and source SRC_IP), once there is one (the agent logs it at close: LAB_WAIT_S)
agent_line() { lab_until _agent_line "$@"; }
_agent_line() {
	local line
	line=$(grep -F '"connection complete"' "$LAB_DIR/agent$1.log" | grep -F "\"dst.addr\":\"$2\"" |
		grep -F "\"src.addr\":\"${3:-}" | tail -n 1)
	[ -n "$line" ] && { echo "$line"; return 0; }
	echo "no 'connection complete' line for $2 in node $1's log"
	return 1
}
# pair DST_IP DST_PORT: the client's outbound span to DST and the inbound span that is its child
# (the agents' spans), as a JSON array of two
pair() {
	local o sid i
	o=$(wait_span "$logs/spans-agents.jsonl" ".name == \"outbound\" and .attributes[\"server.address\"] == \"$1\" and
		.attributes[\"server.port\"] == $2") || return 1
	sid=$(echo "$o" | jq -r .span_id)
	i=$(wait_span "$logs/spans-agents.jsonl" ".name == \"inbound\" and .parent_span_id == \"$sid\"") || return 1
	printf '[%s,%s]\n' "$o" "$i"
}
bypass0=$(agent_metric 2 ambit_waypoint_bypass_total)
direct() { # the client reaches app-1's pod on node 2 by its IP, skipping the waypoint
	local out
	out=$(cl curl -sS -m 10 "http://$P21:8080/whoami") && [ "$out" = "$lab-n2-p1" ] &&
	agent_line 1 "$P21:8080" | grep -F "\"dst.hbone_addr\":\"$LAB_N2_IP:15008\""
}
check "bypass: the client reaches an app-1 pod by pod IP directly (node 1's agent -> node 2's, no waypoint)" direct
bypass_span() {
	local p
	p=$(pair "$P21" 8080) || return 1
	echo "$p" | jq -e --arg n "$LAB_N2_NAME" '.[1].attributes["waypoint.bypassed"] == true and
		.[1].resource["k8s.node.name"] == $n and .[1].attributes.waypoint == null and
		.[0].attributes["waypoint.bypassed"] == null'
}
check "bypass: ... node 2's inbound span has waypoint.bypassed = true" bypass_span
bypass_is() { # N: node 2's ambit_waypoint_bypass_total is N
	local v
	v=$(agent_metric 2 ambit_waypoint_bypass_total)
	echo "node 2's ambit_waypoint_bypass_total: $v"
	[ "$v" -eq "$1" ]
}
check "bypass: ... node 2's ambit_waypoint_bypass_total rose by exactly 1 (from $bypass0)" \
	lab_until bypass_is $((bypass0 + 1))
bypass_logged() { agent_line 2 "$P21:8080" | grep '"waypoint_bypassed":true' >/dev/null; }
check "bypass: ... node 2's access log line says waypoint_bypassed" bypass_logged

wl_waypoint() { # app-2's pod on node 2 names the waypoint: by pod IP, the request goes through it
	local out
	out=$(cl curl -sS -m 10 "http://$P22:8080/whoami") && [ "$out" = "$lab-n2-p2" ] &&
	agent_line 1 "$P22:8080" | grep -F "\"dst.hbone_addr\":\"$LAB_WAYPOINT_IP:15008\""
}
check "workload waypoint: a request to the pod IP of a workload naming the waypoint goes through it" wl_waypoint
wl_spans() {
	wait_span "$logs/spans-waypoint.jsonl" ".name == \"GET /whoami\" and
		.attributes[\"destination.workload\"] == \"$lab-n2-p2\" and .attributes[\"http.status_code\"] == 200" &&
	wait_span "$logs/spans-agents.jsonl" ".name == \"inbound\" and .attributes[\"destination.address\"] == \"$P22\" and
		.attributes.waypoint == true and .attributes[\"waypoint.bypassed\"] == null and
		.attributes[\"source.principal\"] == \"spiffe://cluster.local/ns/default/sa/waypoint\""
}
check "workload waypoint: ... a request span at the waypoint, and node 2's inbound span from the waypoint is not flagged" wl_spans

exempt() { # from wp2's own pod (the client), app-3's pod behind wp2 is reached directly
	cl "$TCPKIT" client --to "$P23:9000" --mode echo --bytes 1000 --timeout 20 >/dev/null &&
	agent_line 1 "$P23:9000" "$P12:" | grep -F "\"dst.hbone_addr\":\"$LAB_N2_IP:15008\""
}
check "exemption: wp2's own pod reaches a workload behind wp2 directly, not through wp2" exempt
exempt_span() {
	local p
	p=$(pair "$P23" 9000) || return 1
	echo "$p" | jq -e '.[1].attributes.waypoint == true and .[1].attributes["waypoint.bypassed"] == null and
		.[1].attributes["destination.workload"] == "'"$lab-n2-p3"'"'
}
check "exemption: ... node 2 counts it as coming from the waypoint (attribute waypoint, not bypassed)" exempt_span
via_wp2() { # any other pod goes through wp2 (whose pod runs no waypoint here: the call fails)
	if pod_exec "$lab" n1-p1 "$TCPKIT" client --to "$P23:9000" --mode echo --bytes 1000 --timeout 10; then
		echo "the connection worked: it did not go to wp2's pod"
		return 1
	fi
	agent_line 1 "$P23:9000" "$P11:" | grep -F "\"dst.hbone_addr\":\"$P12:15008\""
}
check "exemption: ... from another pod the same workload is sent to wp2's pod ($P12:15008)" via_wp2
not_flagged() { # every inbound span of traffic through a waypoint: not flagged
	jq -se 'map(select(.name == "inbound" and .attributes.waypoint == true)) |
		length >= 3 and all(.[]; .attributes["waypoint.bypassed"] == null)' "$logs/spans-agents.jsonl" &&
	[ "$(agent_metric 1 ambit_waypoint_bypass_total)" = 0 ] &&
	[ "$(agent_metric 2 ambit_waypoint_bypass_total)" = 1 ]
}
check "bypass: traffic through the waypoints is never flagged (spans; node 1's counter 0, node 2's 1: the bypass)" not_flagged

# Identity: a waypoint that presents another identity is refused by the client's agent.
stop_waypoint
check "waypoint exits 0 on SIGTERM" test "${WP_EXIT:-1}" = 0
check "the endpoints' agents saw the requests come through the waypoint" \
	lab_until sh -c "grep -h '\"direction\":\"inbound\"' '$LAB_DIR/agent1.log' '$LAB_DIR/agent2.log' | grep -q '\"waypoint\":true'"
jq '(.workloads[] | select(.addresses == ["'"$LAB_WAYPOINT_IP"'"]) | .service_account) = "impostor"' \
	"$LAB_WORKLOADS" >"$logs/impostor-workloads.json"
# The lab's ambit-ca would not sign sa/impostor for the waypoint's token at all: the impostor
# holds the CA key itself (development mode), the worst case the client must still refuse.
jq --arg f "$logs/impostor-workloads.json" --arg c "$LAB_CA_CERT" --arg k "$LAB_CA_KEY" \
	'.discovery.file = $f | .ca = {cert: $c, key: $k}' "$LAB_WAYPOINT_CONFIG" >"$logs/impostor.json"
if start_waypoint "$logs/impostor.json"; then
	refused() {
		local code
		code=$(cl curl -sS -m 10 -o /dev/null -w '%{http_code}' "http://$V/whoami" 2>/dev/null) || true
		[ "$code" != 200 ] || return 1
		grep -E '"dst.hbone_addr":"'"$LAB_WAYPOINT_IP"':15008"' "$LAB_DIR/agent1.log" | tail -n1 |
			grep -Eiq 'identity|impostor|certificate|verify'
	}
	check "identity: a waypoint presenting sa/impostor is refused by the agent" lab_until refused
	stop_waypoint
else
	fail "identity: impostor waypoint starts"
fi
if start_waypoint "$LAB_WAYPOINT_CONFIG"; then
	check "identity: the real waypoint serves again" answer 200 /whoami
fi
stop_waypoint
lab_stop_agent "$lab" 1
lab_stop_agent "$lab" 2
lab_down "$lab" >/dev/null 2>&1 || true
lab_result
