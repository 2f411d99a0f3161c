#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# L7 AuthorizationPolicy at the waypoint, end to end: one node with an agent (real capture), the
# waypoint pod running ambit-waypoint for service app-1, an HTTP/1.1 server (tests/tools/
# http_echo.py) on app-1's endpoint, clients app-2 and app-3 (their own service accounts). The
# workloads file's `resources` carry an ALLOW policy attached to Service app-1 (principal app-2,
# GET of two paths; POST /echo with header x-token), a DENY policy attached to the waypoint's
# Gateway (path /status/418) and one attached to Service app-2 (not this waypoint's). Checked:
# allow and deny by method, path, header and principal; a denial is 403 with the body
# "RBAC: access denied" (text/plain) and the connection goes on (pipelined requests, a denied
# one with a body in the middle); the request span (403, DENY, ERROR naming the policy) and
# istio_requests_total / ambit_authorization_denied_total; admin /policies; a policy removed
# from the file stops applying. HTTP/2 clients (prior knowledge) are checked per request too: an
# allowed GET over h2 (HTTP/1.1 upstream), a 403, a gRPC call answered trailers-only (grpc-status 7).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - waypoint authz (needs root)"; exit 1; }
WAYPOINT_BIN=$AMBIT_BUILD/ambit-waypoint
[ -x "$WAYPOINT_BIN" ] || { echo "not ok - waypoint authz ($WAYPOINT_BIN not built)"; exit 1; }
command -v node >/dev/null || { echo "not ok - waypoint authz (node not found)"; exit 1; }
command -v nc >/dev/null || { echo "not ok - waypoint authz (nc not found: netcat-openbsd)"; exit 1; }
"$LAB_TOP/tests/node/install.sh"
lab_tmpdir logs wpz
lab=wpz-$$
NODE=$(command -v node)

if ! lab_up "$lab" --nodes 1 --pods 3 --cni routed --enroll p1,p2,p3 --waypoint >"$logs/up.log" 2>&1; then
	fail "lab up --waypoint"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
V=$LAB_SVC_APP_1_VIP

# The policies (as `kubectl get -o json` prints them), in the workloads file before anyone reads it.
policies() { # with DENY=1: the waypoint's DENY policy too
	jq -n --arg deny "${DENY:-1}" '[
	{apiVersion: "security.istio.io/v1", kind: "AuthorizationPolicy",
	 metadata: {name: "app1-allow", namespace: "default", creationTimestamp: "2026-01-01T00:00:00Z"},
	 spec: {targetRefs: [{kind: "Service", group: "", name: "app-1"}], action: "ALLOW", rules: [
		{from: [{source: {principals: ["cluster.local/ns/default/sa/app-2"]}}],
		 to: [{operation: {methods: ["GET"], paths: ["/whoami", "/status/*"]}}]},
		{to: [{operation: {methods: ["POST"], paths: ["/echo"]}}],
		 when: [{key: "request.headers[x-token]", values: ["let-me-in"]}]},
		{from: [{source: {principals: ["cluster.local/ns/default/sa/app-3"]}}],
		 to: [{operation: {ports: ["9000"]}}]}]}},
	{apiVersion: "security.istio.io/v1", kind: "AuthorizationPolicy",
	 metadata: {name: "app2-only", namespace: "default", creationTimestamp: "2026-01-01T00:00:00Z"},
	 spec: {targetRefs: [{kind: "Service", group: "", name: "app-2"}], action: "DENY",
		rules: [{to: [{operation: {paths: ["/whoami"]}}]}]}}
	] + (if $deny == "1" then [
	{apiVersion: "security.istio.io/v1", kind: "AuthorizationPolicy",
	 metadata: {name: "wp-deny", namespace: "default", creationTimestamp: "2026-01-01T00:00:00Z"},
	 spec: {targetRefs: [{kind: "Gateway", group: "gateway.networking.k8s.io", name: "waypoint"}],
		action: "DENY", rules: [{to: [{operation: {paths: ["/status/418"]}}]}]}}] else [] end)'
}
set_policies() { # rewrites the workloads file (the discovery polls it) atomically
	jq --argjson r "$(policies)" '.resources = $r' "$LAB_WORKLOADS" >"$logs/wl.json" &&
	mv "$logs/wl.json" "$LAB_WORKLOADS"
}
set_policies

pod_spawn "$lab" "$LAB_WAYPOINT_POD" "$logs/wsink.log" "$NODE" "$LAB_TOP/tests/node/otlp_sink.js" \
	--host 127.0.0.1 --grpc-port 4317 --out "$logs/spans.jsonl" --ready "$logs/wsink.ready"
check "the waypoint's OTLP sink starts" lab_until test -f "$logs/wsink.ready"
: >>"$logs/spans.jsonl"
export OTEL_BSP_SCHEDULE_DELAY=300
pod_spawn "$lab" n1-p1 "$logs/http.log" python3 "$LAB_TOP/tests/tools/http_echo.py" \
	--port 8080 --name "$lab-n1-p1"
# HTTP on app-1's port 9000 too, which the lab names "tcp": the waypoint must pass it as TCP
pod_spawn "$lab" n1-p1 "$logs/http9000.log" python3 "$LAB_TOP/tests/tools/http_echo.py" \
	--port 9000 --name "$lab-n1-p1-9000"
wait_port "$lab" n1-p1 8080
wait_port "$lab" n1-p1 9000
if ! lab_start_agent "$lab" 1; then fail "agent starts"; lab_result; exit 1; fi
if lab_start_waypoint "$lab" "$logs/waypoint.log" "$LAB_WAYPOINT_CONFIG"; then
	ok "waypoint starts and becomes ready"
else
	fail "waypoint starts and becomes ready"; lab_result; exit 1
fi

# code POD METHOD PATH [CURL ARGS...]: prints "HTTP-CODE BODY" of one request to app-1.
code() {
	local pod=$1 method=$2 path=$3; shift 3
	pod_exec "$lab" "$pod" curl -sS -m 30 -X "$method" -w ' %{http_code} %{content_type}' "$@" \
		"http://$V$path"
}
expect() { # NAME POD METHOD PATH WANT [CURL ARGS...]: the answer's code is WANT
	local name=$1 pod=$2 method=$3 path=$4 want=$5 out; shift 5
	out=$(code "$pod" "$method" "$path" "$@" 2>&1) || true
	if [[ $out == *" $want "* ]]; then ok "$name"; else fail "$name"; echo "#   got: $out"; fi
}
denied_body() { # the exact answer Envoy's RBAC filter gives
	local out
	out=$(code n1-p2 DELETE /whoami) && echo "$out" &&
	[ "$out" = "RBAC: access denied 403 text/plain" ]
}
expect "allowed: app-2 GET /whoami (principal + method + path)" n1-p2 GET /whoami 200
expect "allowed: app-2 GET /status/500 (path wildcard; the server's 500 passes)" n1-p2 GET /status/500 500
check "denied: app-2 DELETE /whoami (method) is 403 'RBAC: access denied' text/plain" denied_body
expect "denied: app-2 GET /other (path)" n1-p2 GET /other 403
expect "denied: app-3 GET /whoami (principal)" n1-p3 GET /whoami 403
expect "denied: app-2 GET /status/418 (DENY attached to the waypoint's Gateway wins)" n1-p2 GET /status/418 403
expect "denied: app-3 POST /echo without x-token (header)" n1-p3 POST /echo 403 --data-binary hello
expect "allowed: app-3 POST /echo with x-token: let-me-in" n1-p3 POST /echo 200 --data-binary hello \
	-H 'x-token: let-me-in'
expect "denied: app-3 POST /echo with x-token: wrong" n1-p3 POST /echo 403 --data-binary hello \
	-H 'x-token: wrong'
expect "denied: x-token twice (values joined with ',' as Envoy does: 'let-me-in,a')" n1-p3 POST /echo 403 \
	--data-binary hello -H 'x-token: let-me-in' -H 'x-token: a'
expect_close() { # a denied request whose client waits for 100-continue: 403 and the connection closes
	local out
	out=$(pod_exec "$lab" n1-p3 curl -sS -m 30 -v -H 'Expect: 100-continue' --data-binary hello \
		"http://$V/echo" 2>&1) || true
	grep -E '^< HTTP|^< connection|RBAC' <<<"$out"
	grep -q '^< HTTP/1.1 403' <<<"$out" && grep -qi '^< connection: close' <<<"$out"
}
check "denied with Expect: 100-continue: 403 with connection: close" expect_close

grpc_denied() { # a gRPC call (by content-type) is answered as Envoy does: 200, grpc-status 7
	local out
	out=$(pod_exec "$lab" n1-p2 curl -sS -m 30 -i -X POST -H 'content-type: application/grpc' \
		--data-binary hello "http://$V/pkg.Greeter/SayHello" | tr -d '\r') && echo "$out" &&
	head -n1 <<<"$out" | grep -q '^HTTP/1.1 200' &&
	grep -qx 'grpc-status: 7' <<<"$out" &&
	grep -qx 'grpc-message: RBAC: access denied' <<<"$out" &&
	grep -qx 'content-type: application/grpc' <<<"$out"
}
check "denied gRPC call (by content-type): 200 with grpc-status: 7 (PERMISSION_DENIED)" grpc_denied

same_conn() { # allowed, denied with a body, denied, allowed: four answers on one connection
	local req out
	req='GET /whoami HTTP/1.1\r\nHost: app-1\r\n\r\n'
	req+='POST /echo HTTP/1.1\r\nHost: app-1\r\nContent-Length: 5\r\n\r\nhello'
	req+='DELETE /whoami HTTP/1.1\r\nHost: app-1\r\n\r\n'
	req+='GET /status/201 HTTP/1.1\r\nHost: app-1\r\nConnection: close\r\n\r\n'
	# (read until the waypoint closes after the last answer: Connection: close)
	out=$(printf "$req" | lab_raw_exchange "$lab" n1-p2 "$V" 80 2>&1) || true
	# (the 403's body has no newline: the next status line follows it on the same line)
	grep -oE 'HTTP/1.1 [0-9]+' <<<"$out"
	[ "$(grep -oE 'HTTP/1.1 [0-9]+' <<<"$out" | awk '{print $2}' | paste -sd,)" = "200,403,403,201" ] &&
	[ "$(grep -o 'RBAC: access denied' <<<"$out" | wc -l)" -eq 2 ]
}
check "a denial keeps the connection: 200, 403 (body dropped), 403, 201 in order on one connection" same_conn

# TCP through the waypoint is checked too, as istiod converts policies for TCP: ALLOW rules with
# HTTP fields do not apply, so only app-3's port rule admits a stream.
tunnels() { pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 http://127.0.0.1:15000/waypoint | jq .tcp_tunnels; }
tcp_port() { # port 9000 is declared TCP ("tcp"): HTTP bytes on it are not parsed, app-3 is let through
	local before after out
	before=$(tunnels) &&
	out=$(pod_exec "$lab" n1-p3 curl -sS -m 30 "http://$V:9000/whoami") && echo "$out" &&
	[ "$out" = "$lab-n1-p1-9000" ] && after=$(tunnels) && echo "tunnels $before -> $after" &&
	[ "$after" -gt "$before" ]
}
check "declared TCP port (name 'tcp'): passed as TCP; app-3 allowed by its L4 rule" tcp_port
tcp_denied() { # app-2's ALLOW rules all have HTTP fields: its TCP stream is refused
	local out
	out=$(pod_exec "$lab" n1-p2 curl -sS -m 30 "http://$V:9000/whoami" 2>&1) && return 1
	echo "$out"
}
check "declared TCP port: app-2's stream refused (its ALLOW rules have HTTP fields)" tcp_denied
h2c() { # POD METHOD PATH CODE [CURL ARGS]: over HTTP/2 (prior knowledge), one request per stream
	local pod=$1 method=$2 path=$3 code=$4 out
	shift 4
	out=$(pod_exec "$lab" "$pod" curl -sS -m 30 --http2-prior-knowledge -X "$method" \
		-w '\n%{http_version} %{http_code}' "$@" "http://$V$path") || return 1
	echo "$out"
	[ "$(echo "$out" | tail -n1)" = "2 $code" ]
}
check "HTTP/2 (prior knowledge): app-2 GET /whoami allowed per request (200 over h2, HTTP/1.1 upstream)" \
	h2c n1-p2 GET /whoami 200
h2c_denied() {
	local out
	out=$(h2c n1-p3 GET /whoami 403) && echo "$out" && [ "$(echo "$out" | head -n1)" = 'RBAC: access denied' ]
}
check "HTTP/2: app-3 GET /whoami denied per request: 403 RBAC: access denied" h2c_denied
# (no request body: the waypoint answers at the request's head and ends the stream with
# RST_STREAM NO_ERROR, as Envoy does and RFC 9113 §8.1 allows; curl 7.88 then fails a body it had
# not sent yet with "Stream error in the HTTP/2 framing layer", one run in a few)
h2c_grpc_denied() { # a gRPC call over HTTP/2: trailers-only answer, grpc-status 7
	local out
	out=$(pod_exec "$lab" n1-p3 curl -sS -m 30 -i --http2-prior-knowledge -X POST \
		-H 'content-type: application/grpc' -H 'te: trailers' \
		"http://$V/pkg.Greeter/SayHello" | tr -d '\r') && echo "$out" &&
	head -n1 <<<"$out" | grep -q '^HTTP/2 200' &&
	grep -qx 'grpc-status: 7' <<<"$out" && grep -qx 'grpc-message: RBAC: access denied' <<<"$out"
}
check "HTTP/2: a denied gRPC call gets 200 with grpc-status: 7 (trailers-only)" h2c_grpc_denied

metric() { # REGEX: a line of the waypoint's metrics matches
	pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 "http://$LAB_WAYPOINT_IP:15020/metrics" |
		grep -E "$1"
}
# (counted when the answer is queued, before the client reads it; lab_until all the same)
check "metrics: istio_requests_total with response_code 403 and response_flags DENY" lab_until \
	metric '^istio_requests_total\{reporter="waypoint",.*response_code="403",response_flags="DENY"'
check "metrics: ambit_authorization_denied_total names the DENY policy" lab_until \
	metric '^ambit_authorization_denied_total\{policy="default/wp-deny",reason="deny_matched",dry_run="false"\} [1-9]'
check "metrics: ... and the ALLOW-without-match denials" lab_until \
	metric '^ambit_authorization_denied_total\{policy="-",reason="no_allow_matched",dry_run="false"\} [1-9]'

span_ok() { # the request spans of denials: 403, DENY, ERROR with the policy
	jq -se 'any(.[]; .name == "GET /status/418" and .kind == 2
		and .attributes["http.status_code"] == 403 and .attributes.response_flags == "DENY"
		and .attributes["authorization.policy"] == "default/wp-deny"
		and .status.code == 2 and (.status.message | test("denied by default/wp-deny")))' \
		"$logs/spans.jsonl" &&
	jq -se 'any(.[]; .name == "POST /pkg.Greeter/SayHello" and .attributes["rpc.system"] == "grpc"
		and .attributes["rpc.service"] == "pkg.Greeter" and .attributes["rpc.method"] == "SayHello"
		and .attributes["rpc.grpc.status_code"] == 7 and .attributes.response_flags == "DENY")' \
		"$logs/spans.jsonl" &&
	jq -se 'any(.[]; .name == "DELETE /whoami" and .attributes["http.status_code"] == 403
		and (.status.message | test("allow policies exist, but none allowed")))' "$logs/spans.jsonl" &&
	jq -se 'any(.[]; .name == "GET /whoami" and .attributes["http.status_code"] == 200
		and .attributes["authorization.policy"] == "default/app1-allow" and .status.code != 2)' \
		"$logs/spans.jsonl"
}
check "spans: denied requests are 403 (gRPC: rpc.* with status 7), DENY, ERROR naming the policy; an allowed one names its policy" \
	lab_until span_ok
# (after the spans of later requests: one of port 9000 would have come in an earlier batch)
check "declared TCP port: no request span" sh -c "! jq -se 'any(.[]; .name == \"GET /whoami\" and
	.attributes[\"destination.port\"] == 9000)' '$logs/spans.jsonl' >/dev/null"

admin_policies() {
	local out
	out=$(pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 http://127.0.0.1:15000/policies) &&
	echo "$out" | jq -e '.root_namespace == "istio-system"
		and .waypoint == {namespace: "default", name: "waypoint"}
		and ([.policies[] | select(.waypoint_applies) | .name] | sort) == ["app1-allow", "wp-deny"]
		and (.policies[] | select(.name == "app2-only") | .waypoint_applies == false
		     and .enforced_by == "waypoint")
		and .stats.authorization_policies == 3'
}
check "admin /policies: the set, which apply at this waypoint" admin_policies

DENY=0 set_policies
removed() { # the waypoint reloads the file in its own time
	local out
	out=$(code n1-p2 GET /status/418 2>&1) || true
	echo "$out"
	[[ $out == *" 418 "* ]]
}
check "the DENY policy removed from the file: GET /status/418 reaches the server (418)" lab_until removed
check "waypoint: nothing logged at error level" sh -c "! grep -q '\"level\":\"error\"' '$logs/waypoint.log'"

if [ -n "${WP_PID:-}" ]; then
	kill -TERM "$WP_PID" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$WP_PID" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$WP_PID" 2>/dev/null || true
	wait "$WP_PID" 2>/dev/null || true
fi
lab_stop_agent "$lab" 1
lab_down "$lab" >/dev/null 2>&1 || true
lab_result
