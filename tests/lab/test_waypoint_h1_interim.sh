#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The waypoint's HTTP/1.x trailers and 1xx interim answers across protocol versions (lab wptr-*,
# one node). app-1's port 80 (`http`: tests/tools/http_echo.py, HTTP/1.1), 7070 (undeclared:
# node's http2 server, tests/node/h2_server.js) and 7072 (`http2`, the same node server).
# 1xx, as Envoy with Istio's proxy_100_continue: a 103 Early Hints and the 100 Continue that
# answers "expect: 100-continue" reach an HTTP/2 client (python3-h2, tests/lab/h2client.py)
# from an HTTP/2 and from an HTTP/1.1 endpoint, and an HTTP/1.1 client (curl) from an HTTP/2
# endpoint; an HTTP/1.0 client gets none. Trailers of chunked HTTP/1.1 bodies: dropped by
# default (Istio's Envoy: http1 enable_trailers unset), then, with http1.enable_trailers, an
# HTTP/1.1 endpoint's response trailers reach an HTTP/2 client as a trailer HEADERS frame and an
# HTTP/1.1 client as chunked trailers, and an HTTP/1.1 client's request trailers reach an
# HTTP/1.1 endpoint (chunked) and an HTTP/2 endpoint (HEADERS). Exit 0 on SIGTERM both times.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

lab_need_waypoint_h2 "waypoint trailers and 1xx"
lab_tmpdir logs wptr
lab=wptr-$$

if ! lab_up "$lab" --nodes 1 --pods 3 --cni routed --enroll p1,p2,p3 --waypoint >"$logs/up.log" 2>&1; then
	fail "lab up --waypoint"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
V=$LAB_SVC_APP_1_VIP
jq '(.services[] | select(.name == "app-1") | .ports) += [{port: 7070, target_port: 7070},
	{port: 7072, target_port: 7070, name: "http2"}]' "$LAB_WORKLOADS" >"$logs/w.json" &&
	cp "$logs/w.json" "$LAB_WORKLOADS"
lab_app_servers "$lab" "$logs"
lab_start_agent "$lab" 1 || { fail "agent starts"; lab_result; exit 1; }
jq '.tracing.sampling = 0' "$LAB_WAYPOINT_CONFIG" >"$logs/waypoint.json"
if lab_start_waypoint "$lab" "$logs/waypoint.log" "$logs/waypoint.json"; then ok "waypoint starts and becomes ready"
else fail "waypoint starts and becomes ready"; lab_result; exit 1; fi

cl() { pod_exec "$lab" n1-p2 "$@"; }
h2c() { # HOST:PORT SCENARIOS: tests/lab/h2client.py from a client pod (its lines go to the log)
	cl "$H2PY" "$LAB_TOP/tests/lab/h2client.py" "$1" --scenario "$2" | tee -a "$logs/h2client.txt"
}
# raw HTTP/1.1: a chunked POST to PATH of port PORT with the trailer x-sum: 42; prints the answer
cat >"$logs/raw.py" <<'EOF'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"POST " + sys.argv[3].encode() + b" HTTP/1.1\r\nHost: app-1\r\nTransfer-Encoding: chunked\r\n"
          b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 42\r\ncontent-length: 9\r\n\r\n")
d = b""
while True:
    c = s.recv(65536)
    if not c:
        break
    d += c
sys.stdout.write(d.decode("latin-1"))
EOF

# ---- 1xx interim answers (whatever http1.enable_trailers says) ----
check "h2 client, HTTP/2 endpoint: 103 Early Hints forwarded, 100 Continue for expect" h2c "$V:7070" early_hints,continue
check "h2 client, HTTP/1.1 endpoint (port declared http): 103 and 100 Continue forwarded" h2c "$V:80" early_hints,continue
h1_hints() { # HTTP/1.1 client of the http2 port: the endpoint's 103 as an HTTP/1.1 interim head
	cl curl -sS -m 10 -D - -o "$logs/hints.body" "http://$V:7072/early-hints" >"$logs/hints.txt" &&
	cat "$logs/hints.txt" &&
	[ "$(grep -c '^HTTP/1.1 ' "$logs/hints.txt")" = 2 ] && head -n1 "$logs/hints.txt" | grep -q '^HTTP/1.1 103 ' &&
	grep -qi '^link: </a.css>; rel=preload' "$logs/hints.txt" && grep -q '^HTTP/1.1 200 ' "$logs/hints.txt" &&
	grep -qx 'after hints' "$logs/hints.body"
}
check "h1 client, HTTP/2 endpoint (port declared http2): 103 forwarded as HTTP/1.1 103, then 200" h1_hints
h1_continue() { # curl waits up to 8 s for the 100; it must come at once (the endpoint's)
	head -c 300000 /dev/urandom >"$logs/c.bin"
	local t
	t=$(cl curl -sS -m 20 --expect100-timeout 8 -H 'Expect: 100-continue' --data-binary "@$logs/c.bin" \
		-D "$logs/c.hdr" -o "$logs/c.out" -w '%{time_total}' "http://$V:7072/echo") &&
	cat "$logs/c.hdr" && echo "time $t" &&
	grep -q '^HTTP/1.1 100 Continue' "$logs/c.hdr" && grep -q '^HTTP/1.1 200 ' "$logs/c.hdr" &&
	awk -v t="$t" 'BEGIN { exit !(t < 5) }' && cmp "$logs/c.bin" "$logs/c.out"
}
check "h1 client, HTTP/2 endpoint: expect 100-continue answered by the endpoint's 100, body echoed" h1_continue
h10_no_hints() { # RFC 9110 §15.2: no 1xx to an HTTP/1.0 client
	cl curl -sS -m 10 -0 -D - -o /dev/null "http://$V:7072/early-hints" >"$logs/h10.txt" &&
	cat "$logs/h10.txt" && ! grep -q ' 103 ' "$logs/h10.txt" && head -n1 "$logs/h10.txt" | grep -q ' 200 '
}
check "h1.0 client, HTTP/2 endpoint: no 103 (HTTP/1.0 has no interim answers), the 200" h10_no_hints

# ---- trailers dropped by default ----
dropped_h1() {
	cl curl -sS -m 10 --raw "http://$V/trailers" >"$logs/raw0.txt" && od -c "$logs/raw0.txt" | head &&
	grep -q 'with trailers' "$logs/raw0.txt" && ! grep -q 'x-trailer' "$logs/raw0.txt"
}
check "default: an HTTP/1.1 endpoint's trailers do not reach an HTTP/1.1 client" dropped_h1
dropped_h2() {
	local out
	out=$(cl "$H2PY" "$LAB_TOP/tests/lab/h2client.py" "$V:80" --scenario trailers) || true
	echo "$out" && grep -q "^not ok - h2client.trailers_received # status 200 trailers {}" <<<"$out"
}
check "default: nor an HTTP/2 client (the answer is 200 without trailers)" dropped_h2
dropped_req() {
	cl "$H2PY" "$logs/raw.py" "$V" 80 /echo >"$logs/rq0.txt" && cat "$logs/rq0.txt" &&
	grep -q '^HTTP/1.1 200 ' "$logs/rq0.txt" && ! grep -qi 'x-request-trailers' "$logs/rq0.txt"
}
check "default: an HTTP/1.1 client's request trailers do not reach the endpoint" dropped_req
lab_check_waypoint_exit "$logs/waypoint.log"

# ---- http1.enable_trailers ----
jq '.http1.enable_trailers = true' "$logs/waypoint.json" >"$logs/waypoint2.json"
if lab_start_waypoint "$lab" "$logs/waypoint2.log" "$logs/waypoint2.json"; then ok "waypoint with http1.enable_trailers starts"
else fail "waypoint with http1.enable_trailers starts"; lab_result; exit 1; fi
config_dump() {
	pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 "http://127.0.0.1:15000/config_dump" |
		jq -e '.http1.enable_trailers == true'
}
check "/config_dump shows http1.enable_trailers" config_dump
check "enable_trailers: an HTTP/1.1 endpoint's response trailers reach an HTTP/2 client (HEADERS)" h2c "$V:80" trailers
kept_h1() {
	cl curl -sS -m 10 --raw "http://$V/trailers" >"$logs/raw1.txt" && od -c "$logs/raw1.txt" | head &&
	grep -q 'with trailers' "$logs/raw1.txt" && grep -q '^x-trailer: yes' "$logs/raw1.txt"
}
check "enable_trailers: ... and an HTTP/1.1 client (chunked trailers)" kept_h1
kept_req_h1() {
	cl "$H2PY" "$logs/raw.py" "$V" 80 /echo >"$logs/rq1.txt" && cat "$logs/rq1.txt" &&
	grep -q '^x-request-trailers: {"x-sum": "42"}' "$logs/rq1.txt"
}
check "enable_trailers: an HTTP/1.1 client's request trailers reach an HTTP/1.1 endpoint (content-length left out)" kept_req_h1
kept_req_h2() {
	cl "$H2PY" "$logs/raw.py" "$V" 7072 /req-trailers >"$logs/rq2.txt" && cat "$logs/rq2.txt" &&
	grep -q '^HTTP/1.1 200 ' "$logs/rq2.txt" &&
	sed '1,/^\r$/d' "$logs/rq2.txt" | grep -o '{.*}' | jq -e '.len == 3 and .trailers["x-sum"] == "42" and
		(.trailers | has("content-length") | not)'
}
check "enable_trailers: an HTTP/1.1 client's request trailers reach an HTTP/2 endpoint (HEADERS)" kept_req_h2
lab_check_waypoint_exit "$logs/waypoint2.log"
lab_result
