#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The waypoint's retries of HTTP/2 requests (lab wh2m-*, two nodes), Istio's default retry
# policy: service h2-retry (port declared `http2`) selects app-1's pods, but only n1-p1 serves
# (tests/node/h2_server.js); on n2-p1 nothing listens, so a request sent there fails to connect
# and goes again to n1-p1. Every GET, and every POST whose body fits the retry buffer (64 KiB,
# echoed byte for byte), and 1 MB uploads (what leaves before the refusal is within the
# endpoint's initial window) are answered 200 by n1-p1; the admin's h2_upstreams.retries
# counts the retries; service h2-503's n2-p1 answers 503 to everything: retried on n1-p1 too;
# the same for HTTP/1.1 clients of those ports (translated to HTTP/2, retried alike);
# exit 0 on SIGTERM with no sanitizer report. Also the waypoint's `http2`
# keys (/config_dump, SETTINGS_MAX_CONCURRENT_STREAMS to a client). Clients: curl over HTTP/2
# with prior knowledge and over HTTP/1.1, python3-h2.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

lab_need_waypoint_h2 "waypoint h2 retry"
lab_tmpdir logs wh2m
lab=wh2m-$$
VIP=10.96.0.33 VIP503=10.96.0.34

if ! lab_up "$lab" --nodes 2 --pods 2 --cni routed --enroll p1,p2 --waypoint >"$logs/up.log" 2>&1; then
	fail "lab up --waypoint"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
jq --arg v "$VIP" --arg f "$VIP503" '.services += [
	{name: "h2-retry", namespace: "default", addresses: [$v], selector: {app: "app-1"},
	 ports: [{port: 80, target_port: 8082, name: "http2-web"}],
	 waypoint: {name: "waypoint", namespace: "default"}},
	{name: "h2-503", namespace: "default", addresses: [$f], selector: {app: "app-1"},
	 ports: [{port: 80, target_port: 8083, name: "http2-web"}],
	 waypoint: {name: "waypoint", namespace: "default"}}]' \
	"$LAB_WORKLOADS" >"$logs/workloads.json" && cp "$logs/workloads.json" "$LAB_WORKLOADS"
pod_spawn "$lab" n1-p1 "$logs/h2s.log" "$NODE" "$LAB_TOP/tests/node/h2_server.js" --port 8082 \
	--name "$lab-n1-p1"
wait_port "$lab" n1-p1 8082
# h2-503 (port 8083): n1-p1 answers; n2-p1 answers 503 to everything (retriable-status-codes)
pod_spawn "$lab" n1-p1 "$logs/h2s-ok.log" "$NODE" "$LAB_TOP/tests/node/h2_server.js" --port 8083 \
	--name "$lab-n1-p1"
pod_spawn "$lab" n2-p1 "$logs/h2s-503.log" "$NODE" "$LAB_TOP/tests/node/h2_server.js" --port 8083 \
	--name "$lab-n2-p1" --fail 503
wait_port "$lab" n1-p1 8083
wait_port "$lab" n2-p1 8083
if ! lab_start_agent "$lab" 1 || ! lab_start_agent "$lab" 2; then
	fail "agents start"; lab_result; exit 1
fi
jq '.tracing.sampling = 0 | .http2 = {max_connections_per_endpoint: 2, max_concurrent_streams: 7,
	max_pending_requests: 50}' "$LAB_WAYPOINT_CONFIG" >"$logs/waypoint.json"
if lab_start_waypoint "$lab" "$logs/waypoint.log" "$logs/waypoint.json"; then
	ok "waypoint starts and becomes ready"
else
	fail "waypoint starts and becomes ready"; lab_result; exit 1
fi

cl() { pod_exec "$lab" n1-p2 "$@"; }

config_dump() {
	pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 "http://127.0.0.1:15000/config_dump" |
		jq -ce '.http2 | select(. == {max_connections_per_endpoint: 2, max_concurrent_streams: 7,
			max_pending_requests: 50})'
}
check "config: the http2 keys, shown by /config_dump" config_dump
client_settings() { # python3-h2: the waypoint's SETTINGS_MAX_CONCURRENT_STREAMS is http2's 7
	cl "$H2PY" - "$VIP" <<'PY'
import socket, sys
import h2.config, h2.connection, h2.events, h2.settings
s = socket.create_connection((sys.argv[1], 80), timeout=10)
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
c.initiate_connection()
s.sendall(c.data_to_send())
for _ in range(5):
    for e in c.receive_data(s.recv(65536)):
        if isinstance(e, h2.events.RemoteSettingsChanged):
            v = e.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
            print("max_concurrent_streams", v.new_value if v else None)
            sys.exit(0 if v and v.new_value == 7 else 1)
print("no SETTINGS")
sys.exit(1)
PY
}
check "config: http2.max_concurrent_streams is the client's SETTINGS_MAX_CONCURRENT_STREAMS" client_settings

# The checks below take curl's version option ($1: --http2-prior-knowledge, or --http1.1 for an
# HTTP/1.1 client the waypoint translates to HTTP/2) and what %{http_version} then says ($2).
# Bodies go without "Expect: 100-continue": the endpoint's 100 would go on to the client, and
# after it a request is not retried (as Envoy).
H2="--http2-prior-knowledge 2" H1="--http1.1 1.1"
gets() { # 12 GETs, one connection each: every one answered by n1-p1
	local i out=""
	for i in $(seq 12); do
		out+=$(cl curl -sS -m 10 "$1" -w ' %{http_version} %{http_code}' \
			"http://$VIP/whoami")$'\n' || true
	done
	echo "$out"; [ "$(grep -cx "$lab-n1-p1 $2 200" <<<"$out")" -eq 12 ]
}
# shellcheck disable=SC2086
check "12 GETs, half sent first to an endpoint that refuses: all 200 from n1-p1" gets $H2

admin_retries() {
	pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 "http://127.0.0.1:15000/waypoint" |
		jq -r '.h2_upstreams.retries'
}
retried() {
	local n
	n=$(admin_retries) && echo "retries $n" && [ "$n" -ge 1 ]
}
check "admin: h2_upstreams.retries counts them" retried

posts() { # 6 POSTs of 40 KB (within the retry buffer) echoed byte for byte
	local i ok=0
	head -c 40000 /dev/urandom >"$logs/small.bin"
	for i in $(seq 6); do
		cl curl -sS -m 30 "$1" -H Expect: --data-binary "@$logs/small.bin" \
			-o "$logs/small.out" -w '%{http_code}\n' "http://$VIP/echo" | grep -qx 200 &&
			cmp -s "$logs/small.bin" "$logs/small.out" && ok=$((ok + 1))
	done
	echo "echoed $ok of 6"; [ "$ok" -eq 6 ]
}
# shellcheck disable=SC2086
check "POSTs of 40 KB, half first sent to the refusing endpoint: all echoed byte for byte" posts $H2

big() { # 1 MB bodies: before the refusal at most the endpoint's initial window (65535) left,
	# which the retry buffer holds: all answered by n1-p1 with the whole body
	local i ok=0 sum
	head -c 1000000 /dev/urandom >"$logs/big.bin"
	sum=$(sha256sum "$logs/big.bin" | cut -d' ' -f1)
	for i in $(seq 4); do
		cl curl -sS -m 30 "$1" -H Expect: --data-binary "@$logs/big.bin" "http://$VIP/upload" |
			jq -e --arg s "$sum" --arg n "$lab-n1-p1" '.len == 1000000 and .sha256 == $s and .server == $n' \
			>/dev/null && ok=$((ok + 1))
	done
	echo "uploaded $ok of 4"; [ "$ok" -eq 4 ]
}
# shellcheck disable=SC2086
check "1 MB uploads, half first sent to the refusing endpoint: all received whole by n1-p1" big $H2

answers_503() { # 10 GETs and 4 POSTs of 40 KB: n2-p1's 503s are retried on n1-p1
	local i out="" before after
	before=$(admin_retries)
	for i in $(seq 10); do
		out+=$(cl curl -sS -m 10 "$1" -w ' %{http_code}' "http://$VIP503/whoami")$'\n' || true
	done
	for i in $(seq 4); do
		out+=$(cl curl -sS -m 10 "$1" -H Expect: --data-binary "@$logs/small.bin" \
			-o "$logs/small.out" -w '%{http_code}' "http://$VIP503/echo")
		cmp -s "$logs/small.bin" "$logs/small.out" && out+=" same"$'\n'
	done
	after=$(admin_retries)
	echo "$out"; echo "retries $before -> $after"
	[ "$(grep -cx "$lab-n1-p1 200" <<<"$out")" -eq 10 ] &&
	[ "$(grep -cx "200 same" <<<"$out")" -eq 4 ] && [ "$after" -gt "$before" ]
}
# shellcheck disable=SC2086
check "an endpoint answering 503: GETs and POSTs retried on the other one (retriable-status-codes)" answers_503 $H2

# HTTP/1.1 clients of the same ports: translated to HTTP/2 and retried by the same policy
h1_retries_before=$(admin_retries)
# shellcheck disable=SC2086
check "HTTP/1.1 client: 12 GETs, half first sent to the refusing endpoint: all 200 from n1-p1" gets $H1
# shellcheck disable=SC2086
check "HTTP/1.1 client: POSTs of 40 KB echoed byte for byte" posts $H1
# shellcheck disable=SC2086
check "HTTP/1.1 client: 1 MB uploads all received whole by n1-p1" big $H1
# shellcheck disable=SC2086
check "HTTP/1.1 client: an endpoint answering 503: retried on the other one" answers_503 $H1
h1_retried() {
	local n
	n=$(admin_retries) && echo "retries $h1_retries_before -> $n" && [ "$n" -gt "$h1_retries_before" ]
}
check "admin: h2_upstreams.retries counts the HTTP/1.1 clients' retries" h1_retried

lab_check_waypoint_exit "$logs/waypoint.log"
lab_result
