#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# HBONE between node agents, end to end in the lab: the underlay carries only TCP to 15008
# and a capture holds no payload byte (TLS 1.3 itself is checked by test_tls and test_hbone), 200 concurrent streams share one pooled connection, a peer
# agent killed mid-stream gives resets rather than hangs, and a node whose agent has a
# certificate from another CA is refused.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - hbone lab (needs root)"; exit 1; }
logs=$(mktemp -d /tmp/ambit-hbone.XXXXXX)
name=hbone

admin() { pod_exec "$name" "n$1" curl -fsS -m 5 "http://127.0.0.1:15000$2"; }

if ! lab_up "$name" --nodes 2 --pods 2 --cni routed --enroll p1 >"$logs/up.log" 2>&1; then
	fail "lab up"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
p21=$(lab_pod_ip 2 1)
n2=$(lab_node_ip 2)
# Streams per pooled connection above the 200 this test opens at once.
cfg=$LAB_ROOT/$name/node1.json
jq '.hbone = {"max_streams_per_connection": 256}' "$cfg" >"$cfg.new" && mv "$cfg.new" "$cfg"

pod_spawn "$name" n2-p1 "$logs/echo.log" "$TCPKIT" serve --port 9000 --mode echo
pod_spawn "$name" n2-p1 "$logs/sink.log" "$TCPKIT" serve --port 9001 --mode sink
pod_spawn "$name" n2-p1 "$logs/socat.log" socat -u TCP-LISTEN:8081,reuseaddr "OPEN:$logs/received.txt,creat,trunc"
wait_port "$name" n2-p1 9000 && wait_port "$name" n2-p1 9001 && wait_port "$name" n2-p1 8081
if ! lab_start_agent "$name" 1 || ! lab_start_agent "$name" 2; then
	fail "agents start"; lab_result; exit 1
fi

# 1. Only TLS on the underlay.
for _ in $(seq 2000); do echo "AMBIT-CLEARTEXT-MARKER the quick brown fox"; done >"$logs/sent.txt"
pod_spawn "$name" ul "$logs/tcpdump.log" tcpdump -i "$LAB_UL_BRIDGE" -U -s 0 -w "$logs/underlay.pcap" tcp
sleep 1
check "payload crosses nodes" pod_exec "$name" n1-p1 socat -u "OPEN:$logs/sent.txt" "TCP:$p21:8081"
for _ in $(seq 50); do cmp -s "$logs/sent.txt" "$logs/received.txt" && break; sleep 0.1; done
check "... and arrives intact" cmp "$logs/sent.txt" "$logs/received.txt"
sleep 1
kill "$SPAWNED_PID" 2>/dev/null || true
wait "$SPAWNED_PID" 2>/dev/null || true
check "the underlay capture saw the transfer" \
	sh -c "test \$(tcpdump -nr '$logs/underlay.pcap' 'tcp port 15008' 2>/dev/null | wc -l) -gt 10"
check "... only as TCP to or from port 15008" \
	sh -c "test \$(tcpdump -nr '$logs/underlay.pcap' 'tcp and not port 15008' 2>/dev/null | wc -l) -eq 0"
check "... and never in cleartext" \
	sh -c "! tcpdump -nr '$logs/underlay.pcap' -A 2>/dev/null | grep -q AMBIT-CLEARTEXT-MARKER"
check "... carried by a pooled HBONE connection node 1 reports" \
	sh -c "admin_out=\$(nsenter --net=/run/netns/$name-n1 curl -fsS http://127.0.0.1:15000/hbone) &&
		echo \"\$admin_out\" | jq -e '[.connections[] | select(.role == \"client\" and .peer == \"$n2:15008\")] | length >= 1' >/dev/null"

# 2. 200 concurrent streams over one pooled connection.
check "200 concurrent connections through HBONE" pod_exec "$name" n1-p1 "$TCPKIT" client \
	--to "$p21:9000" --mode echo --conns 200 --parallel 200 --msg-size 4096 --timeout 60
hb=$(admin 1 /hbone)
check "... share one pooled TLS connection to node 2" \
	sh -c "echo '$hb' | jq -e '[.connections[] | select(.role == \"client\" and .peer == \"$n2:15008\")] | length == 1' >/dev/null"
check "... which carried them all as streams" \
	sh -c "echo '$hb' | jq -e '[.connections[] | select(.role == \"client\" and .peer == \"$n2:15008\")][0].streams_total >= 200' >/dev/null"
check "... presenting the client pod's identity, verifying the destination's" \
	sh -c "echo '$hb' | jq -e '[.connections[] | select(.role == \"client\")][0] | .local_identity == \"spiffe://cluster.local/ns/default/sa/app-1\" and .peer_identity == \"spiffe://cluster.local/ns/default/sa/app-1\"' >/dev/null"

# 3. The peer agent dies mid-stream: the client sees a reset, not a hang.
pod_spawn "$name" n1-p1 "$logs/long.log" "$TCPKIT" client --to "$p21:9001" --mode sink --bytes 100G --timeout 120
long=$SPAWNED_PID
sleep 2
start=$SECONDS
kill -KILL "$(cat "$LAB_ROOT/$name/agent2.pid")"
rc=0
for _ in $(seq 300); do kill -0 "$long" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$long" 2>/dev/null; then
	fail "peer agent killed mid-stream: the client's connection ends (still open after 30 s)"
	kill "$long" 2>/dev/null || true
else
	wait "$long" 2>/dev/null || rc=$?
	check "peer agent killed mid-stream: the client's connection ends with an error in $((SECONDS - start)) s" test "$rc" -ne 0
fi
rm -f "$LAB_ROOT/$name/agent2.pid"

# 4. A node whose agent has a certificate from another CA is refused.
other=$LAB_ROOT/$name/other-ca
mkdir -p "$other"
openssl ecparam -name prime256v1 -genkey -noout -out "$other/ca.key" 2>/dev/null
openssl req -x509 -new -key "$other/ca.key" -subj "/O=other" -days 1 -out "$other/ca.crt" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
cfg2=$LAB_ROOT/$name/node2.json
jq --arg c "$other/ca.crt" --arg k "$other/ca.key" '.ca = {"cert": $c, "key": $k}' "$cfg2" >"$cfg2.new" && mv "$cfg2.new" "$cfg2"
if lab_start_agent "$name" 2; then
	if pod_exec "$name" n1-p1 "$TCPKIT" client --to "$p21:9000" --mode echo --conns 1 --timeout 10 >/dev/null 2>&1; then
		fail "node agent with a certificate from another CA is refused"
	else
		ok "node agent with a certificate from another CA is refused"
	fi
	sleep 0.5
	check "... and node 1's access log flags it (UF)" \
		sh -c "grep '\"connection complete\"' '$LAB_ROOT/$name/agent1.log' | tail -n 3 | grep -q '\"response_flags\":\"UF\"'"
else
	fail "node 2 agent starts with another CA"
fi
lab_stop_agent "$name" 1
lab_stop_agent "$name" 2
lab_result
