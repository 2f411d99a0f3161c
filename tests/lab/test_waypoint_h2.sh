#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# HTTP/2 and gRPC through ambit-waypoint, with independent peers on both ends: two nodes with
# agents, the waypoint pod, and on app-1's two endpoints (one per node) a grpc-js server
# (tests/node/grpc_echo_server.js) and a node http2 server (tests/node/h2_server.js, h2c only).
# The workloads file adds two services behind the waypoint with app-1's endpoints: grpc-echo
# (port named "grpc") and h2-echo (appProtocol kubernetes.io/h2c). The client pod (app-2) uses
# a grpc-js client (one channel), curl (--http2-prior-knowledge and --http1.1) and a python3-h2
# client (tests/lab/h2client.py). Checked: the peers work directly (harness sanity); 20 unary
# calls of one channel spread over both endpoints; server streaming; status codes, details and
# trailing metadata; large messages both ways; a deadline's cancel reaches the server; curl GET
# and POST; flow control with a small window (the sender stalls, the waypoint does not buffer the
# body); RST_STREAM keeps the connection and reaches the server; large bodies both ways;
# trailers; an upstream GOAWAY; an HTTP/1.1 client of the h2 port (translated); L7 denials (HTTP
# 403 "RBAC: access denied" over h2, gRPC PERMISSION_DENIED for one method while others pass on
# the same channel); request spans with rpc.* attributes (ERROR for INTERNAL); istio_requests_total
# with request_protocol="grpc" and grpc_response_status; GOAWAY to a connected HTTP/2 client when
# the waypoint drains, and its clean exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

lab_need_waypoint_h2 "waypoint h2"
"$LAB_TOP/tests/node/install.sh"
lab_tmpdir logs wh2
lab=wh2-$$
GRPC_VIP=10.96.0.30 H2_VIP=10.96.0.31

if ! lab_up "$lab" --nodes 2 --pods 2 --cni routed --enroll p1,p2 --waypoint >"$logs/up.log" 2>&1; then
	fail "lab up --waypoint"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
# Two services behind the waypoint, both on app-1's pods (n1-p1, n2-p1).
jq --arg g "$GRPC_VIP" --arg h "$H2_VIP" '.services += [
	{name: "grpc-echo", namespace: "default", addresses: [$g], selector: {app: "app-1"},
	 ports: [{port: 50051, target_port: 50051, name: "grpc"}],
	 waypoint: {name: "waypoint", namespace: "default"}},
	{name: "h2-echo", namespace: "default", addresses: [$h], selector: {app: "app-1"},
	 ports: [{port: 80, target_port: 8081, name: "web", app_protocol: "kubernetes.io/h2c"}],
	 waypoint: {name: "waypoint", namespace: "default"}}]' \
	"$LAB_WORKLOADS" >"$logs/workloads.json" && cp "$logs/workloads.json" "$LAB_WORKLOADS"

pod_spawn "$lab" "$LAB_WAYPOINT_POD" "$logs/wsink.log" "$NODE" "$LAB_TOP/tests/node/otlp_sink.js" \
	--host 127.0.0.1 --grpc-port 4317 --out "$logs/spans.jsonl" --ready "$logs/wsink.ready"
check "the waypoint's OTLP sink starts" lab_until test -f "$logs/wsink.ready"
: >>"$logs/spans.jsonl"
export OTEL_BSP_SCHEDULE_DELAY=300
for k in 1 2; do
	pod_spawn "$lab" "n$k-p1" "$logs/grpc-$k.log" "$NODE" "$LAB_TOP/tests/node/grpc_echo_server.js" \
		--port 50051 --name "$lab-n$k-p1" --log "$logs/grpc-$k.jsonl"
	pod_spawn "$lab" "n$k-p1" "$logs/h2s-$k.log" "$NODE" "$LAB_TOP/tests/node/h2_server.js" \
		--port 8081 --name "$lab-n$k-p1" --log "$logs/h2s-$k.jsonl"
	wait_port "$lab" "n$k-p1" 50051
	wait_port "$lab" "n$k-p1" 8081
done
if ! lab_start_agent "$lab" 1 || ! lab_start_agent "$lab" 2; then
	fail "agents start"; lab_result; exit 1
fi
if lab_start_waypoint "$lab" "$logs/waypoint.log" "$LAB_WAYPOINT_CONFIG"; then
	ok "waypoint starts and becomes ready"
else
	fail "waypoint starts and becomes ready"; lab_result; exit 1
fi

cl() { pod_exec "$lab" n1-p2 "$@"; }   # the client pod (app-2, enrolled, node 1)
grpc_client() { # TARGET SCENARIOS [OPTIONS...]: the grpc-js client's JSON in the client pod
	local target=$1 sc=$2; shift 2
	cl timeout 120 "$NODE" "$LAB_TOP/tests/node/grpc_echo_client.js" --target "$target" --scenario "$sc" "$@"
}
relay() { # PREFIX CMD...: runs a peer that prints its own ok/not ok lines; counts them here
	local prefix=$1 out rc=0 line; shift
	out=$("$@" 2>&1) || rc=$?
	while IFS= read -r line; do
		case $line in
		"ok - "*) ok "$prefix${line#ok - }" ;;
		"not ok - "*) fail "$prefix${line#not ok - }" ;;
		*) echo "#   $line" ;;
		esac
	done <<<"$out"
	grep -q '^ok - ' <<<"$out" || fail "$prefix: no result (exit $rc)"
}

# ---- the peers directly (an endpoint's pod IP, no waypoint): the harness itself ----
direct_grpc() {
	grpc_client "$LAB_N1_P1_IP:50051" unary,stream,fail,big --count 4 --size 1048576 >"$logs/direct.json" &&
	cat "$logs/direct.json" && jq -e '.unary.ok == 4 and .stream.received == 4 and .stream.code == 0
		and ([.fail[].code] == [5, 13]) and .big.back_sha256 == .big.sent_sha256' "$logs/direct.json"
}
check "direct (no waypoint): grpc-js client and server agree" direct_grpc
relay "direct (no waypoint): " cl "$H2PY" "$LAB_TOP/tests/lab/h2client.py" "$LAB_N1_P1_IP:8081" \
	--scenario get,trailers,rst --server-log "$logs/h2s-1.jsonl"

# ---- gRPC through the waypoint, all on one channel ----
grpc_client "$GRPC_VIP:50051" unary,stream,fail,big,deadline --count 20 --size $((8 << 20)) \
	--codes '5:no such thing here;13:it broke;14:try later' >"$logs/grpc.json" 2>"$logs/grpc.err" || true
note "grpc-js: $(jq -c '{unary, stream: (.stream | {received, in_order, code}), fail: [.fail[] | {code, details}], big: (.big | {code, size, back_size}), deadline}' "$logs/grpc.json" 2>/dev/null || cat "$logs/grpc.err")"
check "grpc: 20 unary calls on one channel all answered" jq -e '.unary.ok == 20' "$logs/grpc.json"
check "grpc: ... spread over both endpoints (at least 3 calls each)" \
	jq -e --arg a "$lab-n1-p1" --arg b "$lab-n2-p1" '.unary.servers[$a] >= 3 and .unary.servers[$b] >= 3' "$logs/grpc.json"
check "grpc: server streaming, 20 messages in order, status OK" \
	jq -e '.stream.received == 20 and .stream.in_order and .stream.code == 0' "$logs/grpc.json"
check "grpc: NOT_FOUND with its details and trailing metadata (text and binary) intact" \
	jq -e '.fail[0] | .code == 5 and .details == "no such thing here" and .metadata["x-fail-reason"] == "requested"
		and .metadata["x-fail-code"] == "5" and .metadata["x-fail-bin"] == "000102ff"' "$logs/grpc.json"
check "grpc: INTERNAL and UNAVAILABLE with their details intact" \
	jq -e '(.fail[1] | .code == 13 and .details == "it broke") and (.fail[2] | .code == 14 and .details == "try later")' \
	"$logs/grpc.json"
check "grpc: an 8 MiB message both ways, byte for byte" \
	jq -e '.big | .code == 0 and .back_size == .size and .server_sha256 == .sent_sha256 and .back_sha256 == .sent_sha256' \
	"$logs/grpc.json"
deadline_cancel() { # DEADLINE_EXCEEDED at the client, and the server saw the call cancelled
	jq -e '.deadline.code == 4' "$logs/grpc.json" || return 1
	lab_until server_cancelled
}
server_cancelled() { # (the cancel reaches the server in its own time)
	grep -qh '"method":"Slow","cancelled":true' "$logs"/grpc-[12].jsonl 2>/dev/null && return 0
	echo "no cancelled Slow call in the servers' logs"; return 1
}
check "grpc: a call past its deadline ends DEADLINE_EXCEEDED and its cancel reaches the server" deadline_cancel

# ---- HTTP/2 (h2c prior knowledge) through the waypoint ----
curl_h2() {
	local out
	out=$(cl curl -sS -m 10 --http2-prior-knowledge -w '\n%{http_code} %{http_version}' "http://$H2_VIP/whoami") &&
	echo "$out" && [ "$(echo "$out" | tail -n1)" = "200 2" ] &&
	head -n1 <<<"$out" | grep -Eqx "$lab-n[12]-p1"
}
check "curl --http2-prior-knowledge GET: 200 over HTTP/2 from an endpoint" curl_h2
curl_h2_post() {
	head -c 3000000 /dev/urandom >"$logs/post.bin"
	local out
	out=$(cl curl -sS -m 30 --http2-prior-knowledge --data-binary "@$logs/post.bin" "http://$H2_VIP/upload") &&
	echo "$out" && [ "$(echo "$out" | jq -r .sha256)" = "$(sha256sum <"$logs/post.bin" | cut -d' ' -f1)" ]
}
check "curl --http2-prior-knowledge POST of 3 MB: the server got it byte for byte" curl_h2_post
WP_RSS_PID=$WP_PID
relay "h2 (python3-h2): " cl "$H2PY" "$LAB_TOP/tests/lab/h2client.py" "$H2_VIP:80" --authority h2-echo \
	--scenario get,upload,download,echo,rst,trailers,goaway --bytes $((8 << 20)) \
	--server-log "$logs/h2s-1.jsonl" --server-log "$logs/h2s-2.jsonl"
relay "h2 (python3-h2): " cl "$H2PY" "$LAB_TOP/tests/lab/h2client.py" "$H2_VIP:80" --authority h2-echo \
	--scenario flow --bytes $((64 << 20)) --window 16384 --pause 3 --watch-pid "$WP_RSS_PID" \
	--max-growth-mib 24

# ---- HTTP/1.1 clients of the h2 port: translated to HTTP/2 upstream ----
h1_get() {
	local out
	out=$(cl curl -sS -m 10 --http1.1 -w '\n%{http_code} %{http_version}' "http://$H2_VIP/whoami") &&
	echo "$out" && [ "$(echo "$out" | tail -n1)" = "200 1.1" ] &&
	head -n1 <<<"$out" | grep -Eqx "$lab-n[12]-p1"
}
check "HTTP/1.1 client of the h2c port: GET answered (translated to HTTP/2)" h1_get
h1_post() {
	local out
	out=$(cl curl -sS -m 30 --http1.1 --data-binary "@$logs/post.bin" "http://$H2_VIP/upload") &&
	echo "$out" && [ "$(echo "$out" | jq -r .sha256)" = "$(sha256sum <"$logs/post.bin" | cut -d' ' -f1)" ]
}
check "HTTP/1.1 client of the h2c port: POST of 3 MB byte for byte" h1_post
h1_chunked() { # no content-length upstream: the answer comes chunked, complete
	local n=$((5 << 20)) want
	want=$("$H2PY" -c "import hashlib,sys; n=$n; p=bytes(i % 251 for i in range(251)); print(hashlib.sha256(p*(n//251)+p[:n%251]).hexdigest())")
	cl curl -sS -m 30 --http1.1 -D "$logs/h1-chunked.hdr" -o "$logs/h1-chunked.bin" "http://$H2_VIP/bytes/$n?cl=0" &&
	grep -i '^transfer-encoding: chunked' "$logs/h1-chunked.hdr" &&
	[ "$(sha256sum <"$logs/h1-chunked.bin" | cut -d' ' -f1)" = "$want" ]
}
check "HTTP/1.1 client of the h2c port: a 5 MiB body without content-length arrives chunked, intact" h1_chunked

# ---- L7 AuthorizationPolicy on HTTP/2 and gRPC ----
jq '.resources = [{apiVersion: "security.istio.io/v1", kind: "AuthorizationPolicy",
	metadata: {name: "h2-deny", namespace: "default", creationTimestamp: "2026-01-01T00:00:00Z"},
	spec: {targetRefs: [{kind: "Service", group: "", name: "grpc-echo"},
			    {kind: "Service", group: "", name: "h2-echo"}],
	       action: "DENY", rules: [
		{to: [{operation: {paths: ["/echo.Echo/Fail"]}}],
		 when: [{key: "request.headers[x-deny]", values: ["yes"]}]},
		{to: [{operation: {paths: ["/forbidden"]}}]}]}}]' \
	"$LAB_WORKLOADS" >"$logs/wl.json" && mv "$logs/wl.json" "$LAB_WORKLOADS"
h2_denied() { # curl (one request: curl 7.88 cannot reuse an h2c prior-knowledge connection)
	local out
	out=$(cl curl -sS -m 30 --http2-prior-knowledge -w '\n%{http_code} %{http_version} %{content_type}' \
		"http://$H2_VIP/forbidden" 2>&1) || true
	echo "$out"
	[ "$(echo "$out" | tail -n1)" = "403 2 text/plain" ] && grep -qx 'RBAC: access denied' <<<"$out"
}
# (the waypoint reloads the file with the policy in its own time)
check "authz over HTTP/2 (curl): denied path is 403 'RBAC: access denied' (text/plain)" lab_until h2_denied
relay "authz over HTTP/2 (python3-h2): " cl "$H2PY" "$LAB_TOP/tests/lab/h2client.py" "$H2_VIP:80" \
	--authority h2-echo --scenario deny,get
grpc_denied() { # one channel: allowed, denied (PERMISSION_DENIED), allowed
	local out
	out=$(grpc_client "$GRPC_VIP:50051" authz) && echo "$out" &&
	echo "$out" | jq -e '.authz.codes == [0, 7, 0] and (.authz.details[1] | test("RBAC: access denied"))'
}
check "authz over gRPC: /echo.Echo/Fail denied with PERMISSION_DENIED (7), Echo before and after passes on the same channel" grpc_denied

# ---- telemetry: request spans and istio_requests_total ----
span_ok() {
	jq -se 'any(.[]; .kind == 2 and .attributes["rpc.system"] == "grpc"
		and .attributes["rpc.service"] == "echo.Echo" and .attributes["rpc.method"] == "Echo"
		and .attributes["rpc.grpc.status_code"] == 0 and .attributes["network.protocol.version"] == "2"
		and .status.code != 2)' "$logs/spans.jsonl" &&
	jq -se 'any(.[]; .attributes["rpc.method"] == "Fail" and .attributes["rpc.grpc.status_code"] == 13
		and .status.code == 2)' "$logs/spans.jsonl" &&
	jq -se 'any(.[]; .attributes["rpc.method"] == "Fail" and .attributes["rpc.grpc.status_code"] == 5
		and .status.code != 2)' "$logs/spans.jsonl" &&
	jq -se 'any(.[]; .attributes["rpc.method"] == "Fail" and .attributes["rpc.grpc.status_code"] == 7
		and .attributes.response_flags == "DENY")' "$logs/spans.jsonl"
}
check "spans: gRPC calls are SERVER spans with rpc.system/service/method and rpc.grpc.status_code; INTERNAL is ERROR, NOT_FOUND is not; the denial is DENY" \
	lab_until span_ok
metric() { # REGEX...: a line of the waypoint's metrics matches every REGEX
	local out re
	out=$(pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 "http://$LAB_WAYPOINT_IP:15020/metrics" |
		grep '^istio_requests_total{') || return 1
	for re in "$@"; do out=$(echo "$out" | grep -E -- "$re") || { echo "no line with $re"; return 1; }; done
	echo "$out" | head -n3
}
check "metrics: istio_requests_total with request_protocol=\"grpc\" and grpc_response_status=\"13\"" \
	lab_until metric 'request_protocol="grpc"' 'grpc_response_status="13"' 'destination_service="grpc-echo\.'
check "metrics: ... and grpc_response_status=\"0\" for the OK calls" \
	lab_until metric 'request_protocol="grpc"' 'grpc_response_status="0"'
check "metrics: HTTP/2 requests of h2-echo with request_protocol=\"http\"" \
	lab_until metric 'request_protocol="http"' 'destination_service="h2-echo\.' 'response_code="200"'
check "waypoint: nothing logged at error level" sh -c "! grep -q '\"level\":\"error\"' '$logs/waypoint.log'"

# Drain: a client holding an HTTP/2 connection gets GOAWAY when the waypoint is told to stop.
pod_spawn "$lab" n1-p2 "$logs/drain.out" "$H2PY" "$LAB_TOP/tests/lab/h2client.py" "$H2_VIP:80" \
	--authority h2-echo --scenario get,await_goaway --await 15
DRAIN_PID=$SPAWNED_PID
lab_until grep -q 'waiting for GOAWAY' "$logs/drain.out" || true
WP_EXIT=none
if [ -n "${WP_PID:-}" ]; then
	kill -TERM "$WP_PID" 2>/dev/null || true
	lab_until eval '! kill -0 "$WP_PID" 2>/dev/null' || true
	kill -KILL "$WP_PID" 2>/dev/null || true
	WP_EXIT=0
	wait "$WP_PID" 2>/dev/null || WP_EXIT=$?
fi
wait "$DRAIN_PID" 2>/dev/null || true
relay "drain (python3-h2): " cat "$logs/drain.out"
wp_exit() { # exit 0 on SIGTERM, and no sanitizer report (ASan/UBSan/LSan builds) in its log
	echo "exit $WP_EXIT"
	[ "$WP_EXIT" = 0 ] && ! grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$logs/waypoint.log"
}
check "waypoint: exits 0 on SIGTERM with no sanitizer report" wp_exit
lab_stop_agent "$lab" 1
lab_stop_agent "$lab" 2
lab_down "$lab" >/dev/null 2>&1 || true
rm -f "$logs/post.bin" "$logs/h1-chunked.bin"	# the logs stay, not the bodies (8 MB)
lab_result
