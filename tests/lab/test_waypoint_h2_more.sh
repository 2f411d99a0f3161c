#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The waypoint's HTTP/2 client path beyond tests/lab/test_waypoint_h2.sh (lab wh2a-*, one node):
# HTTP/2 clients of app-1's port declared `http` are carried as HTTP/1.1 to the HTTP/1.1 servers
# (tests/tools/http_echo.py): a GET, the Host the server sees, a 5 MB body without a length
# echoed byte for byte; an endpoint that refuses (nothing listens on the port declared `grpc`)
# gives 503 to an HTTP/2 request and UNAVAILABLE (grpc-status 14, trailers-only) to a gRPC
# call; an HTTP/2 client resetting unanswered streams past hbone.limits.resets gets GOAWAY
# ENHANCE_YOUR_CALM; a request waiting for room moves to a new connection when the endpoint's
# connections close after GOAWAY; an HTTP/2 client idle past hbone.idle_timeout_ms gets GOAWAY NO_ERROR; the
# waypoint's h2 gauges; exit 0 on SIGTERM with no sanitizer report. Clients: curl and python3-h2.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

lab_need_waypoint_h2 "waypoint h2 more"
lab_tmpdir logs wh2a
lab=wh2a-$$

if ! lab_up "$lab" --nodes 1 --pods 3 --cni routed --enroll p1,p2,p3 --waypoint >"$logs/up.log" 2>&1; then
	fail "lab up --waypoint"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
V=$LAB_SVC_APP_1_VIP
# app-1: port 80 (`http`, HTTP/1.1 servers), 7070 (undeclared: node's http2 server), 7071
# (`grpc`, nothing listens)
jq '(.services[] | select(.name == "app-1") | .ports) += [{port: 7070, target_port: 7070},
	{port: 7071, target_port: 7071, name: "grpc"}]' "$LAB_WORKLOADS" >"$logs/w.json" &&
	cp "$logs/w.json" "$LAB_WORKLOADS"
lab_app_servers "$lab" "$logs"
lab_start_agent "$lab" 1 || { fail "agent starts"; lab_result; exit 1; }
jq '.hbone.idle_timeout_ms = 2000 | .hbone.limits.resets = {burst: 20, per_s: 1} | .tracing.sampling = 0 |
	.hbone.max_streams_per_connection = 1 | .proxy.connect_timeout_ms = 1500' \
	"$LAB_WAYPOINT_CONFIG" >"$logs/waypoint.json"
if lab_start_waypoint "$lab" "$logs/waypoint.log" "$logs/waypoint.json"; then ok "waypoint starts and becomes ready"
else fail "waypoint starts and becomes ready"; lab_result; exit 1; fi

cl() { pod_exec "$lab" n1-p2 "$@"; }

h2_to_h1() { # GET over HTTP/2 to the `http` port: answered by the HTTP/1.1 server, Host = :authority
	local out
	out=$(cl curl -sS -m 10 --http2-prior-knowledge -w '\n%{http_version} %{http_code}' "http://$V/headers") &&
	echo "$out" && [ "$(echo "$out" | tail -n1)" = "2 200" ] &&
	head -n1 <<<"$out" | jq -e --arg v "$V" '.host == $v and (.traceparent | length) == 55'
}
check "h2 client, port declared http: GET carried as HTTP/1.1 (Host from :authority, traceparent)" h2_to_h1
h2_to_h1_body() { # 5 MB without content-length: chunked to the server, echoed back byte for byte
	head -c 5000000 /dev/urandom >"$logs/up.bin"
	cl curl -sS -m 60 --http2-prior-knowledge -H 'content-length:' --data-binary "@$logs/up.bin" \
		-o "$logs/down.bin" -w '%{http_version} %{http_code}\n' "http://$V/echo" | grep -qx '2 200' &&
	cmp "$logs/up.bin" "$logs/down.bin"
}
check "h2 client, port declared http: a 5 MB body without length echoed byte for byte" h2_to_h1_body

refused_http() {
	local out
	out=$(cl curl -sS -m 10 --http2-prior-knowledge -w '\n%{http_version} %{http_code}' "http://$V:7071/x") &&
	echo "$out" && [ "$(echo "$out" | tail -n1)" = "2 503" ]
}
check "endpoint refuses (nothing on the grpc port): HTTP/2 request answered 503" refused_http
refused_grpc() {
	local out
	out=$(cl curl -sS -m 10 -i --http2-prior-knowledge -X POST -H 'content-type: application/grpc' \
		-H 'te: trailers' --data-binary hello "http://$V:7071/pkg.Svc/Call" | tr -d '\r') &&
	echo "$out" && head -n1 <<<"$out" | grep -q '^HTTP/2 200' && grep -qx 'grpc-status: 14' <<<"$out"
}
check "endpoint refuses: gRPC call answered trailers-only with grpc-status 14 (UNAVAILABLE)" refused_grpc

# A python3-h2 client: MODE reset (open streams and reset each at once) or idle (one request,
# then wait); prints what the waypoint did to the connection.
h2py() {
	cl "$H2PY" - "$V" 7070 "$1" <<'EOF'
import socket, sys, time
import h2.config, h2.connection, h2.events
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port), timeout=10)
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
c.initiate_connection()
s.sendall(c.data_to_send())
hdrs = [(":method", "GET"), (":scheme", "http"), (":authority", "app-1"), (":path", "/slow")]
def post(n):  # n streams POST /echo, each with 10 bytes sent and its end held back
    out = []
    for _ in range(n):
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, [(":method", "POST")] + hdrs[1:3] + [(":path", "/echo")])
        c.send_data(sid, b"x" * 10)
        out.append(sid)
    s.sendall(c.data_to_send())
    return out
def pump(until, secs):  # events until until() or secs; returns {sid: [status, body, ended]}
    t = time.monotonic()
    while not until() and time.monotonic() - t < secs:
        s.settimeout(max(0.05, secs - (time.monotonic() - t)))
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if not d:
            break
        for e in c.receive_data(d):
            if isinstance(e, h2.events.ResponseReceived):
                st.setdefault(e.stream_id, [0, b"", False])[0] = int(dict(e.headers)[b":status"])
            elif isinstance(e, h2.events.DataReceived):
                st.setdefault(e.stream_id, [0, b"", False])[1] += e.data
                c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded):
                st.setdefault(e.stream_id, [0, b"", False])[2] = True
        s.sendall(c.data_to_send())
st = {}
if mode == "queue":  # 4 connections of 1 stream: 4 answered at once, 2 wait, then all 6
    sids = post(6)
    pump(lambda: False, 1.0)
    print("answered at once", sum(1 for x in sids if x in st))
    for x in sids:
        c.end_stream(x)
    s.sendall(c.data_to_send())
    pump(lambda: all(st.get(x, [0, b"", False])[2] for x in sids), 10)
    print("result queue", sorted(set((st[x][0], st[x][1], st[x][2]) for x in sids if x in st)), len(st))
    sys.exit(0)
if mode == "move":  # 4 streams fill the connections, a 5th waits; GOAWAY on those (so none
    # takes it), then the 4 are answered and they close: the 5th goes on a new one (not 503
    # after its 1.5 s)
    sids = []
    for _ in range(4):
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, hdrs[:3] + [(":path", "/goaway?after=800&notice=400")], end_stream=True)
        sids.append(sid)
    s.sendall(c.data_to_send())
    pump(lambda: False, 0.2)
    t0 = time.monotonic()
    five = c.get_next_available_stream_id()
    c.send_headers(five, hdrs[:3] + [(":path", "/whoami")], end_stream=True)
    s.sendall(c.data_to_send())
    pump(lambda: all(st.get(x, [0, b"", False])[2] for x in sids + [five]), 6)
    print("result move", st.get(five, [0])[0], "after %.1f s" % (time.monotonic() - t0),
          sorted(set(st.get(x, [0])[0] for x in sids)))
    sys.exit(0)
if mode == "expire":  # 4 held streams fill the connections: a 5th request waits, then 503 (UO)
    sids = post(4)
    pump(lambda: all(x in st for x in sids), 3)
    t0 = time.monotonic()
    five = c.get_next_available_stream_id()
    c.send_headers(five, hdrs[:3] + [(":path", "/whoami")], end_stream=True)
    s.sendall(c.data_to_send())
    pump(lambda: five in st and st[five][2], 6)
    waited = time.monotonic() - t0
    for x in sids:
        c.end_stream(x)
    s.sendall(c.data_to_send())
    pump(lambda: all(st.get(x, [0, b"", False])[2] for x in sids), 10)
    print("result expire", st.get(five, [0])[0], "after %.1f s" % waited,
          sorted(set(st[x][0] for x in sids)))
    sys.exit(0)
if mode == "reset":
    for _ in range(60):
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, hdrs, end_stream=True)
        c.reset_stream(sid)
    s.sendall(c.data_to_send())
else:
    c.send_headers(1, hdrs[:3] + [(":path", "/whoami")], end_stream=True)
    s.sendall(c.data_to_send())
t0, ended, goaway = time.monotonic(), False, None
while time.monotonic() - t0 < 8:
    try:
        d = s.recv(65536)
    except OSError:
        break
    if not d:
        print("eof after %.1f s" % (time.monotonic() - t0))
        break
    for e in c.receive_data(d):
        if isinstance(e, h2.events.StreamEnded) and e.stream_id == 1:
            ended = True
            print("answered after %.1f s" % (time.monotonic() - t0))
        if isinstance(e, h2.events.ConnectionTerminated):
            goaway = e.error_code
            print("goaway %d after %.1f s" % (e.error_code, time.monotonic() - t0))
    out = c.data_to_send()
    if out:
        try:
            s.sendall(out)
        except OSError:
            break
print("result", mode, ended, goaway)
EOF
}
rapid_reset() {
	local out
	out=$(h2py reset) && echo "$out" && grep -qx 'result reset False 11' <<<"$out"
}
check "rapid reset: 60 streams reset unanswered (burst 20) get GOAWAY ENHANCE_YOUR_CALM" rapid_reset
idle_goaway() {
	local out
	out=$(h2py idle) && echo "$out" && grep -qx 'result idle True 0' <<<"$out" &&
	grep -Eq '^goaway 0 after [1-3]\.' <<<"$out"
}
check "an HTTP/2 client idle past hbone.idle_timeout_ms (2 s) gets GOAWAY NO_ERROR" idle_goaway
queue() {
	local out
	out=$(h2py queue) && echo "$out" && grep -qx 'answered at once 4' <<<"$out" &&
	grep -qx "result queue \[(200, b'xxxxxxxxxx', True)\] 6" <<<"$out"
}
check "queue: 4 connections of 1 stream (max_streams_per_connection 1): 2 of 6 requests wait, then all 6 answered" queue
expire() {
	local out
	out=$(h2py expire) && echo "$out" && grep -Eqx 'result expire 503 after (1\.[5-9]|2\.[0-9]) s \[200\]' <<<"$out"
}
check "queue: a request waiting past proxy.connect_timeout_ms (1.5 s) gets 503; the others finish" expire
move() {
	local out
	out=$(h2py move) && echo "$out" && grep -Eqx 'result move 200 after (0\.[6-9]|1\.[0-3]) s \[200\]' <<<"$out"
}
check "queue: a waiting request moves to a new connection when the endpoint's connections close (GOAWAY)" move
check "the waypoint serves on after those (GET over h2)" h2_to_h1

metrics() {
	pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 "http://$LAB_WAYPOINT_IP:15020/metrics" >"$logs/metrics.txt" &&
	grep -E '^ambit_waypoint_h2_upstreams_opened_total [1-9]' "$logs/metrics.txt" &&
	grep -E '^ambit_waypoint_h2_sessions [0-9]+$' "$logs/metrics.txt" &&
	grep -E '^istio_requests_total\{.*request_protocol="grpc",response_code="200",response_flags="UF".*grpc_response_status="14"' \
		"$logs/metrics.txt"
}
check "metrics: the h2 gauges; the refused gRPC call counted with UF and grpc_response_status 14" lab_until metrics

lab_check_waypoint_exit "$logs/waypoint.log"
lab_result
