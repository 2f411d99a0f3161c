#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The waypoint's paths that tests/lab/test_waypoint.sh leaves out, in a lab of its own (two
# nodes with agents, app-1 behind the waypoint, app-3 outside the mesh):
# - authority refusals, driven by an independent HTTP/2 client (tests/tools/h2peer.py probe, with
#   a client certificate from the lab CA) from an app-3 pod: a service that does not use this
#   waypoint -> 403, a port the service lacks or an unknown address -> 400, each with its
#   ambit-reason, and the connection still serves a good CONNECT after them;
# - malformed requests through the waypoint (bad header, bad chunk size, oversized head): a
#   local 400/431 with `connection: close`, the connection closes, the waypoint stays up;
# - balancing with one endpoint slow (http_echo.py --delay): round_robin splits concurrent
#   requests evenly, least_request sends most of them to the fast endpoint;
# - drain (SIGTERM) with a slow request in flight: it completes with its answer, new
#   connections are refused, an idle keep-alive client is closed, the process exits 0 before
#   the drain deadline; and when the deadline comes first the process still exits 0 on time.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - waypoint more (needs root)"; exit 1; }
WAYPOINT_BIN=$AMBIT_BUILD/ambit-waypoint
[ -x "$WAYPOINT_BIN" ] || { echo "not ok - waypoint more ($WAYPOINT_BIN not built)"; exit 1; }
lab_tmpdir logs wpm
lab=wpm-$$	# unique: other runs of this test may be up at the same time
H2PY=python3	# h2peer.py needs python3-h2: the system python has it when another one is first in PATH
for p in /usr/bin/python3 python3; do "$p" -c 'import h2' 2>/dev/null && { H2PY=$p; break; }; done
SLOW_MS=300	# the slow endpoint (app-1 on node 1) holds every answer this long
DRAIN_MS=8000	# proxy.drain_timeout_ms of the waypoint here

start_waypoint() { lab_start_waypoint "$lab" "$logs/waypoint.log" "$1"; } # CONFIG; sets WP_PID

wait_waypoint_exit() { # SECONDS: waits for the waypoint to exit; WP_EXIT (or "timeout")
	local rc=0
	WP_EXIT=timeout
	for _ in $(seq $(($1 * 10))); do kill -0 "$WP_PID" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$WP_PID" 2>/dev/null && return 1
	wait "$WP_PID" 2>/dev/null || rc=$?
	WP_EXIT=$rc
	cat "$logs/waypoint.log" >>"$logs/waypoint-all.log"
	WP_PID=""
}

stop_waypoint() {
	[ -n "${WP_PID:-}" ] || return 0
	kill -TERM "$WP_PID" 2>/dev/null || true
	wait_waypoint_exit 10 || { kill -KILL "$WP_PID" 2>/dev/null || true; wait_waypoint_exit 2 || true; }
}

cl() { pod_exec "$lab" n1-p2 "$@"; }   # the client pod (app-2, enrolled, node 1)
wp() { pod_exec "$lab" "$LAB_WAYPOINT_POD" "$@"; }

if ! lab_up "$lab" --nodes 2 --pods 3 --cni routed --enroll p1,p2 --waypoint >"$logs/up.log" 2>&1; then
	fail "lab up --waypoint"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
V=$LAB_SVC_APP_1_VIP
# The waypoint's configuration here: no collector, so no tracing (the span flush at exit would
# add its own shutdown deadline to the drain's), and a drain deadline of DRAIN_MS.
jq --argjson d "$DRAIN_MS" '.tracing.enabled = false | .proxy = {drain_timeout_ms: $d}' "$LAB_WAYPOINT_CONFIG" >"$logs/rr.json"
jq '.load_balancing = "least_request"' "$logs/rr.json" >"$logs/lr.json"

pod_spawn "$lab" n1-p1 "$logs/http-1.log" python3 "$LAB_TOP/tests/tools/http_echo.py" \
	--port 8080 --name "slow" --delay "$SLOW_MS"
pod_spawn "$lab" n2-p1 "$logs/http-2.log" python3 "$LAB_TOP/tests/tools/http_echo.py" \
	--port 8080 --name "fast"
wait_port "$lab" n1-p1 8080
wait_port "$lab" n2-p1 8080
if ! lab_start_agent "$lab" 1 || ! lab_start_agent "$lab" 2; then
	fail "agents start"; lab_result; exit 1
fi
if start_waypoint "$logs/rr.json"; then ok "waypoint (round_robin) starts and becomes ready"
else fail "waypoint (round_robin) starts and becomes ready"; lab_result; exit 1; fi

# ---------------------------------------------------------------- authority refusals ----
# A client certificate from the lab CA for app-3 (outside the mesh, so its pod is not captured).
cat >"$logs/leaf.ext" <<EXT
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = URI:spiffe://cluster.local/ns/default/sa/app-3
EXT
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /O=probe \
	-keyout "$logs/leaf.key" -out "$logs/leaf.csr" 2>/dev/null
openssl x509 -req -in "$logs/leaf.csr" -CA "$LAB_CA_CERT" -CAkey "$LAB_CA_KEY" -set_serial 7 \
	-days 1 -extfile "$logs/leaf.ext" -out "$logs/leaf.crt" 2>/dev/null
probe() { # CASE...: h2peer.py probe from n2-p3 to the waypoint, one connection
	local args=() c
	for c in "$@"; do args+=(--case "$c"); done
	pod_exec "$lab" n2-p3 timeout 30 "$H2PY" "$LAB_TOP/tests/tools/h2peer.py" probe \
		"$LAB_WAYPOINT_IP:15008" --ca "$LAB_CA_CERT" --cert "$logs/leaf.crt" --key "$logs/leaf.key" \
		--expect "spiffe://cluster.local/ns/default/sa/waypoint" "${args[@]}"
}
check "authority: app-1's VIP:80 (uses the waypoint) -> 200 and an HTTP answer through it" \
	probe "$V:80=200"
check "authority: a service that does not use this waypoint (app-2, solo) -> 403 with the reason" \
	probe "$LAB_SVC_APP_2_VIP:80=403=service default/app-2 does not use waypoint default/waypoint" \
	"$LAB_SVC_SOLO_VIP:80=403=does not use waypoint"
check "authority: a workload that does not use this waypoint -> 403 with the reason" \
	probe "$LAB_N1_P2_IP:8080=403=is not a service or workload that uses waypoint"
check "authority: a port app-1 does not have -> 400 with the reason" \
	probe "$V:81=400=service default/app-1 has no port 81"
check "authority: unknown addresses (a free VIP, a free pod IP) -> 400 with the reason" \
	probe "10.96.9.9:80=400=is not a service or workload" "10.244.1.99:8080=400=is not a service"
check "authority: refusals are per stream: the same connection then serves app-1" \
	probe "10.96.9.9:80=400" "$LAB_SVC_APP_2_VIP:80=403" "$V:80=200" "$V:81=400" "$V:80=200"

# ---------------------------------------------------------------- malformed requests ----
cat >"$logs/raw.py" <<'PY'
# raw.py HOST PORT FILE: sends FILE's bytes on one TCP connection, prints what comes back, then
# "#closed" when the server closed within 8 s, else "#open".
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=8)
s.sendall(open(sys.argv[3], "rb").read())
out, end, state = b"", time.time() + 8, "#open"
while time.time() < end:
    try:
        d = s.recv(65536)
    except socket.timeout:
        break
    except ConnectionResetError:
        state = "#reset"
        break
    if not d:
        state = "#closed"
        break
    out += d
sys.stdout.write(out.decode("latin-1") + "\n" + state + "\n")
PY
malformed() { # FILE WANT...: sends FILE to app-1; the status lines must be WANT..., then closed
	local out
	out=$(cl timeout 20 python3 "$logs/raw.py" "$V" 80 "$1") || return 1
	shift
	printf '%s\n' "$out" | grep -E '^HTTP/1\.1 |^#|^connection:' | head -n 20
	[ "$(printf '%s\n' "$out" | grep -E '^HTTP/1\.1 ' | awk '{print $2}' | paste -sd,)" = "$(echo "$@" | tr ' ' ,)" ] &&
	tr -d '\r' <<<"$out" | grep -qix 'connection: close' &&
	[ "$(printf '%s\n' "$out" | tail -n1)" = "#closed" ]
}
printf 'GET /whoami HTTP/1.1\r\nHost: app-1\r\n\r\nGET /whoami HTTP/1.1\r\nHost: app-1\r\nBad Header: x\r\n\r\nGET /whoami HTTP/1.1\r\nHost: app-1\r\n\r\n' \
	>"$logs/bad-header.txt"
check "malformed: a bad header name after a good request -> 200, then 400 and the connection closes" \
	malformed "$logs/bad-header.txt" 200 400
printf 'GET /whoami HTTP/1.1\r\nHost : app-1\r\n\r\n' >"$logs/ws-colon.txt"
check "malformed: whitespace before a header's colon (RFC 9112 5.1) -> 400 and the connection closes" \
	malformed "$logs/ws-colon.txt" 400
printf 'POST /echo HTTP/1.1\r\nHost: app-1\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\nGET /status/299 HTTP/1.1\r\nHost: app-1\r\n\r\n' \
	>"$logs/smuggle.txt"
check "malformed: 'Transfer-Encoding : chunked' (a smuggling attempt) -> 400, nothing forwarded" \
	malformed "$logs/smuggle.txt" 400
printf 'GET /whoami HTTP/1.1\r\nHost: app-1\r\nContent-Length: 12x\r\n\r\n' >"$logs/bad-length.txt"
check "malformed: a bad Content-Length -> 400 and the connection closes" \
	malformed "$logs/bad-length.txt" 400
printf 'POST /echo HTTP/1.1\r\nHost: app-1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n' \
	>"$logs/bad-chunk.txt"
check "malformed: a bad chunk size (the head already went upstream) -> 400 and the connection closes" \
	malformed "$logs/bad-chunk.txt" 400
{ printf 'GET /whoami HTTP/1.1\r\nHost: app-1\r\nX-Big: '; head -c 70000 /dev/zero | tr '\0' a; printf '\r\n\r\n'; } \
	>"$logs/big-head.txt"
check "malformed: a 70 KB request head -> 431 and the connection closes" \
	malformed "$logs/big-head.txt" 431
still_up() {
	kill -0 "$WP_PID" && [ "$(cl curl -sS -m 10 -o /dev/null -w '%{http_code}' "http://$V/whoami")" = 200 ]
}
check "malformed: the waypoint is still up and serves" still_up
local_replies() {
	local n
	n=$(wp curl -fsS -m 5 http://127.0.0.1:15000/waypoint | jq .local_replies) && echo "local_replies $n" &&
	[ "$n" -ge 6 ]
}
check "malformed: counted as local replies in /waypoint" local_replies

# ---------------------------------------------------------------- balancing ----
spread() { # LB MIN_FAST MAX_FAST: 4 clients x 10 keep-alive requests at once; "fast" answers
	local urls="" fast slow
	for _ in $(seq 10); do urls+="http://$V/whoami "; done
	rm -f "$logs/$1".out.*
	# shellcheck disable=SC2086
	cl bash -c "for c in 1 2 3 4; do curl -sS -m 30 $urls >'$logs/$1.out.'\$c & done; wait" || return 1
	fast=$(cat "$logs/$1".out.* | grep -cx fast || true)
	slow=$(cat "$logs/$1".out.* | grep -cx slow || true)
	echo "$1: fast $fast, slow $slow"
	[ $((fast + slow)) -eq 40 ] && [ "$fast" -ge "$2" ] && [ "$fast" -le "$3" ]
}
check "round_robin: 40 concurrent requests, one endpoint ${SLOW_MS} ms slow: split evenly (16..24 each)" \
	spread round_robin 16 24
stop_waypoint
if start_waypoint "$logs/lr.json"; then
	policy() { wp curl -fsS -m 5 http://127.0.0.1:15000/waypoint | jq -e '.load_balancing == "least_request"'; }
	check "least_request: /waypoint reports the policy" policy
	check "least_request: the same 40 requests: most (>= 30) go to the fast endpoint" \
		spread least_request 30 40
else
	fail "waypoint (least_request) starts"
fi

# ---------------------------------------------------------------- drain ----
# An idle keep-alive client (one answered request, then waiting) and a slow request in flight.
cat >"$logs/idle.py" <<'PY'
# idle.py HOST: one keep-alive request, then waits for the server to close (30 s at most);
# prints the answer's status line and "closed at T" (T: epoch seconds).
import socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=30)
s.sendall(b"GET /whoami HTTP/1.1\r\nHost: app-1\r\n\r\n")
data = b""
while b"\r\n\r\n" not in data or not data.endswith(b"\n"):
    data += s.recv(4096)
print(data.split(b"\r\n")[0].decode(), flush=True)
try:
    while s.recv(4096):
        pass
    print("closed at %.3f" % time.time(), flush=True)
except socket.timeout:
    print("still open after 30 s", flush=True)
except ConnectionResetError:
    print("reset at %.3f" % time.time(), flush=True)
PY
drain_ok=""
if stop_waypoint && start_waypoint "$logs/rr.json"; then
	cl python3 "$logs/idle.py" "$V" >"$logs/idle.out" 2>&1 &
	idle_pid=$!
	cl curl -sS -m 20 -D "$logs/slow.head" -o "$logs/slow.body" "http://$V/delay/3000" 2>"$logs/slow.err" &
	slow_pid=$!
	in_flight() { # the slow request reached the upstream, the idle client had its answer
		wp curl -fsS -m 2 http://127.0.0.1:15000/waypoint |
			jq -e '[.sessions[] | select(.state == "response" and .upstream)] | length == 1' >/dev/null &&
			grep -q '^HTTP/1.1 200' "$logs/idle.out"
	}
	check "drain: a slow request in flight and an idle keep-alive client before SIGTERM" lab_until in_flight
	t0=$(date +%s.%N)
	kill -TERM "$WP_PID"
	refused() { # a new TCP connection to 15008 is refused (curl exit 7)
		local rc=0
		wp curl -sS -m 3 -o /dev/null "http://$LAB_WAYPOINT_IP:15008/" 2>/dev/null || rc=$?
		echo "curl exit $rc"
		[ "$rc" -eq 7 ]
	}
	# (the waypoint closes its listeners when it handles the signal: in its own time)
	check "drain: new connections to 15008 are refused" lab_until refused
	not_ready() {
		[ "$(wp curl -sS -m 2 -o /dev/null -w '%{http_code}' "http://$LAB_WAYPOINT_IP:15021/healthz/ready")" = 503 ]
	}
	check "drain: readiness answers 503" lab_until not_ready
	new_request() { # through the client's agent: no answer from the draining waypoint
		local code
		code=$(cl curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://$V/whoami" 2>/dev/null) || true
		echo "http code $code"
		[ "$code" != 200 ]
	}
	check "drain: a new request through the client's agent gets no answer" new_request
	slow_rc=0
	timeout 15 tail --pid="$slow_pid" -f /dev/null || true
	wait "$slow_pid" || slow_rc=$?
	t_slow=$(date +%s.%N)
	slow_answer() {
		cat "$logs/slow.err"
		tr -d '\r' <"$logs/slow.head"
		cat "$logs/slow.body"
		[ "$slow_rc" -eq 0 ] && grep -q '^HTTP/1.1 200' "$logs/slow.head" &&
		tr -d '\r' <"$logs/slow.head" | grep -qix 'connection: close' &&
		grep -Eqx '(slow|fast) after 3000 ms' "$logs/slow.body"
	}
	check "drain: the request in flight completes with its answer (200, connection: close)" slow_answer
	wait "$idle_pid" || true
	idle_closed() {
		local t
		cat "$logs/idle.out"
		t=$(sed -n 's/^closed at //p' "$logs/idle.out")
		[ -n "$t" ] && [ "$(echo "$t - $t0 < $DRAIN_MS / 2000" | bc)" = 1 ]
	}
	check "drain: the idle keep-alive client was closed at once (well before the ${DRAIN_MS} ms deadline)" idle_closed
	if wait_waypoint_exit $((DRAIN_MS / 1000 + 5)); then
		t_exit=$(date +%s.%N)
		exit_ok() {
			echo "exit $WP_EXIT; answer at +$(echo "$t_slow - $t0" | bc) s, exit at +$(echo "$t_exit - $t0" | bc) s"
			[ "$WP_EXIT" = 0 ] && [ "$(echo "$t_exit - $t0 < $DRAIN_MS / 1000" | bc)" = 1 ]
		}
		check "drain: the waypoint exits 0 once the request is done, before the ${DRAIN_MS} ms deadline" exit_ok
		drain_ok=1
	else
		fail "drain: the waypoint exits within the deadline"
		stop_waypoint
	fi
else
	fail "drain: the waypoint restarts"
fi

# The deadline comes first: a 10 s request, a 1.5 s deadline.
jq '.proxy.drain_timeout_ms = 1500' "$logs/rr.json" >"$logs/short.json"
if [ -n "$drain_ok" ] && start_waypoint "$logs/short.json"; then
	cl curl -sS -m 20 -o /dev/null "http://$V/delay/10000" 2>/dev/null &
	cut_pid=$!
	responding() {
		wp curl -fsS -m 2 http://127.0.0.1:15000/waypoint |
			jq -e '[.sessions[] | select(.state == "response")] | length == 1'
	}
	lab_until responding >/dev/null 2>&1 || true
	t0=$(date +%s.%N)
	kill -TERM "$WP_PID"
	if wait_waypoint_exit 9; then
		t_exit=$(date +%s.%N)
		deadline_ok() {
			echo "exit $WP_EXIT at +$(echo "$t_exit - $t0" | bc) s"
			[ "$WP_EXIT" = 0 ] && [ "$(echo "$t_exit - $t0 >= 1.4 && $t_exit - $t0 < 7" | bc)" = 1 ] &&
			grep -q 'drain deadline reached' "$logs/waypoint.log"
		}
		check "drain: with a 1.5 s deadline and a 10 s request, the waypoint exits 0 at the deadline" deadline_ok
	else
		fail "drain: the waypoint exits at the deadline"
		stop_waypoint
	fi
	cut_rc=0
	timeout 10 tail --pid="$cut_pid" -f /dev/null || true
	wait "$cut_pid" || cut_rc=$?
	check "drain: the request cut by the deadline fails at the client (no hang)" test "$cut_rc" -ne 0
fi

check "no sanitizer report and nothing at error level in the waypoint's logs" \
	sh -c "! grep -E 'AddressSanitizer|LeakSanitizer|runtime error|\"level\":\"error\"' '$logs/waypoint-all.log'"
check "no sanitizer report in the agents' logs" \
	sh -c "! grep -E 'AddressSanitizer|LeakSanitizer|runtime error' '$LAB_DIR/agent1.log' '$LAB_DIR/agent2.log'"
stop_waypoint
lab_stop_agent "$lab" 1
lab_stop_agent "$lab" 2
lab_down "$lab" >/dev/null 2>&1 || true
lab_result
