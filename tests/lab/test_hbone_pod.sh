#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# HBONE in ztunnel's wire format (TLS to <pod IP>:15008, no SNI, :authority <pod IP>:<port>), in
# both directions, with an independent HBONE peer (tests/tools/h2peer.py: python3-h2 + ssl):
# 1. node 1's agent with hbone.dial "pod" talks to a node that behaves like a ztunnel node
#    (no ambit agent on node 2; h2peer's server in the destination pod's netns on 15008): it
#    checks no SNI, the :authority, the client identity, and answers with the pod's identity;
#    node 1 pools per destination pod (its /hbone names <pod IP>:15008);
# 2. node 2's agent terminates pod-addressed HBONE (eBPF captures <pod IP>:15008 of an enrolled
#    pod): the independent client with no SNI, from another node and from a pod outside the
#    mesh, gets the pod's own certificate and a working tunnel (HTTP, 1 MiB echo), the source
#    pod's IP reaching the destination when the peer's identity vouches for it; node 1 (dial
#    "pod") to node 2, ambit to ambit, keeps the client pod's IP;
# 3. refusals of the pod-addressed form, each in node 2's log and in
#    ambit_hbone_refused_total{form="pod",reason=...}: no client certificate, a certificate
#    from another CA, :authority of another pod (and of a pod outside the mesh), a pod that is
#    not enrolled (never captured: its own stack refuses; the agent's listener itself refuses
#    an original destination that is not a local enrolled workload);
# 4. bridge CNI and IPv6 (a dual-stack lab): the same capture and answer over IPv4 and IPv6;
# 5. a waypoint with hbone.dial "pod": agents reach it, and it reaches the endpoints, at pod IPs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - hbone pod lab (needs root)"; exit 1; }
lab_tmpdir logs hbpod
lab=hbpod-$$	# unique: other runs of this test may be up at the same time
lab_h2peer
TD=cluster.local
spiffe() { echo "spiffe://$TD/ns/default/sa/$1"; }

admin() { pod_exec "$lab" "n$1" curl -fsS -m 5 "http://127.0.0.1:15000$2"; }
admin_jq() { admin "$1" "$2" | jq -e "$3" >/dev/null; }	# K PATH FILTER: it holds
# pod_refusals REASON: node 2's ambit_hbone_refused_total{form="pod",reason="REASON"}
pod_refusals() {
	pod_exec "$lab" n2 curl -fsS -m 5 "http://$n2:15020/metrics" |
		awk -v k="ambit_hbone_refused_total{form=\"pod\",reason=\"$1\"}" '$1 == k { print $2 }'
}
# h2 FROM MODE TARGET ARGS...: h2peer.py in FROM (a pod or node), bounded, mesh CA trusted
h2() {
	local from=$1 mode=$2 target=$3; shift 3
	pod_exec "$lab" "$from" timeout 30 "$H2PY" "$H2PEER" "$mode" "$target" --ca "$LAB_CA_CERT" "$@"
}
# leaf NAME SA CA_CERT CA_KEY: $logs/NAME.crt and .key, a mesh leaf for SA signed by that CA
leaf() { lab_leaf "$logs" "$1" "$(spiffe "$2")" "$3" "$4"; }

if ! lab_up "$lab" --nodes 2 --pods 3 --cni routed --enroll p1,p2 >"$logs/up.log" 2>&1; then
	fail "lab up"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
p11=$(lab_pod_ip 1 1)
p13=$(lab_pod_ip 1 3)
p21=$(lab_pod_ip 2 1)
p22=$(lab_pod_ip 2 2)
p23=$(lab_pod_ip 2 3)
n2=$(lab_node_ip 2)
other=$LAB_ROOT/$lab/other-ca
lab_other_ca "$other"
leaf app1 app-1 "$LAB_CA_CERT" "$LAB_CA_KEY"	# h2peer's server, standing in for n2-p1
leaf app2 app-2 "$LAB_CA_CERT" "$LAB_CA_KEY"	# ... with the wrong identity
leaf app3 app-3 "$LAB_CA_CERT" "$LAB_CA_KEY"	# h2peer's client: app-3 is outside the mesh
leaf foreign app-3 "$other/ca.crt" "$other/ca.key"
check "test certificates made (app-1, app-2, app-3 from the lab CA; app-3 from another CA)" \
	sh -c "openssl verify -CAfile '$LAB_CA_CERT' '$logs/app1.crt' '$logs/app2.crt' '$logs/app3.crt' && openssl verify -CAfile '$other/ca.crt' '$logs/foreign.crt'"

cfg1=$LAB_ROOT/$lab/node1.json
jq '.hbone = {"dial": "pod"}' "$cfg1" >"$cfg1.new" && mv "$cfg1.new" "$cfg1"

# ----------------------------- 1. node 1 (hbone.dial pod) -> a node that behaves like ztunnel
bag() { printf '(^|,) *%s=%s *(;[^,]*)?(,|$)' "$1" "$(printf '%s' "$2" | sed 's/[.]/\\./g')"; }
pod_spawn "$lab" n2-p1 "$logs/zt-server.log" timeout 60 "$H2PY" "$H2PEER" server \
	--listen "0.0.0.0:15008" --ca "$LAB_CA_CERT" --cert "$logs/app1.crt" --key "$logs/app1.key" \
	--expect-peer "$(spiffe app-1)" --authority "$p21:9000" --streams 2 --no-sni \
	--header "forwarded=^for=${p11//./\\.}$" --header "baggage=$(bag service.name app-1)"
zt=$SPAWNED_PID
lab_until grep -q '^PORT' "$logs/zt-server.log" || true
if ! lab_start_agent "$lab" 1; then
	fail "node 1's agent starts with hbone.dial pod"; lab_result; exit 1
fi
check "node 1's config says hbone.dial pod" admin_jq 1 /config_dump '.hbone.dial == "pod"'
check "ztunnel-like node: h2peer's server listens in n2-p1 on $p21:15008" grep -q '^PORT' "$logs/zt-server.log"
check "... two connections from n1-p1 to $p21:9000 go through it, echoed byte for byte" \
	pod_exec "$lab" n1-p1 "$TCPKIT" client --to "$p21:9000" --mode echo --conns 2 --bytes 64K --timeout 30
rc=0
for _ in $(seq 300); do kill -0 "$zt" 2>/dev/null || break; sleep 0.1; done
wait "$zt" 2>/dev/null || rc=$?
check "... with no SNI, :authority $p21:9000, client identity app-1; node 1 accepted the pod's identity (app-1)" \
	sh -c "test $rc -eq 0 && ! grep -q '^not ok' '$logs/zt-server.log' &&
		test \$(grep -c '^ok - h2peer.server_no_sni' '$logs/zt-server.log') -ge 1 &&
		test \$(grep -c '^ok - h2peer.server_connect_request' '$logs/zt-server.log') -eq 2"
grep -E '^(not ok|# )' "$logs/zt-server.log" | sed 's/^/#   /'
check "... node 1 pooled them: both streams on one TLS connection to $p21:15008 (the server accepted one)" \
	test "$(grep -c '^ok - h2peer.server_tls13_alpn_h2' "$logs/zt-server.log")" -eq 1

# The same server answering with another identity (app-2's) than the destination pod's.
pod_spawn "$lab" n2-p1 "$logs/zt-wrong.log" timeout 20 "$H2PY" "$H2PEER" server \
	--listen "0.0.0.0:15008" --ca "$LAB_CA_CERT" --cert "$logs/app2.crt" --key "$logs/app2.key" \
	--expect-peer "$(spiffe app-1)" --authority "$p21:9000" --streams 1 --no-sni
zt=$SPAWNED_PID
lab_until grep -q '^PORT' "$logs/zt-wrong.log" || true
check "... a server in that place with another identity (app-2) is refused: the client's connection fails" \
	sh -c "! nsenter --net=/run/netns/$lab-n1-p1 '$TCPKIT' client --to '$p21:9000' --mode echo --conns 1 --timeout 10"
kill "$zt" 2>/dev/null || true
wait "$zt" 2>/dev/null || true
check "... node 1 logs why (the peer identity is app-2, app-1 expected)" \
	lab_until grep -qF "peer identity $(spiffe app-2), expected $(spiffe app-1)" "$LAB_ROOT/$lab/agent1.log"

# ------------------------------------------- 2. node 2's agent serves pod-addressed HBONE
pod_spawn "$lab" n2-p1 "$logs/http.log" python3 "$LAB_TOP/tests/tools/http_echo.py" --port 8080 --name n2-p1
pod_spawn "$lab" n2-p1 "$logs/echo.log" "$TCPKIT" serve --port 9000 --mode echo
pod_spawn "$lab" n2-p1 "$logs/peers.log" "$TCPKIT" serve --port 9002 --mode echo --peers
for port in 8080 9000 9002; do wait_port "$lab" n2-p1 "$port"; done
if ! lab_start_agent "$lab" 2; then
	fail "node 2's agent starts"; lab_result; exit 1
fi
check "node 2's capture has the pod-addressed HBONE listener in its sockmap" \
	admin_jq 2 /bpf '.listeners.hbone_pod != null'
probe() { # FROM CASE...: one connection to $p21:15008 with no SNI, one CONNECT per case
	local from=$1 args=() c; shift
	for c in "$@"; do args+=(--case "$c"); done
	h2 "$from" probe "$p21:15008" --cert "$logs/app3.crt" --key "$logs/app3.key" \
		--expect "$(spiffe app-1)" "${args[@]}"
}
check "from node 1 (another node), no SNI: $p21:15008 presents app-1's certificate, CONNECT $p21:8080 -> 200, an HTTP answer" \
	probe n1 "$p21:8080=200"
check "from n1-p3 (outside the mesh), no SNI: 1 MiB echoed through CONNECT $p21:9000 (and a GET on 15008 gets 405)" \
	h2 n1-p3 client "$p21:15008" --authority "$p21:9000" --cert "$logs/app3.crt" --key "$logs/app3.key" \
	--expect "$(spiffe app-1)" --bytes 1048576
last_peer_is() { # IP: the last connection to n2-p1:9002 came from IP
	grep '^peer ' "$logs/peers.log" | tail -n 1 | grep -q "^peer $1:[0-9]* local $p21:9002\$"
}
own_address_vouched() {
	h2 n1-p3 client "$p21:15008" --authority "$p21:9002" --cert "$logs/app3.crt" --key "$logs/app3.key" \
		--expect "$(spiffe app-1)" --bytes 4096 && last_peer_is "$p13"
}
check "... the destination sees n1-p3's IP $p13 (its identity app-3 vouches for its own address)" \
	own_address_vouched
check "ambit to ambit in the pod form: n1-p1 (node 1 dials pods) reaches $p21:9002 through node 2's capture" \
	pod_exec "$lab" n1-p1 "$TCPKIT" client --to "$p21:9002" --mode echo --conns 1 --bytes 4096 --timeout 30
check "... the destination sees the client pod's IP $p11 (forwarded, vouched by app-1's identity)" \
	last_peer_is "$p11"
spans_linked() { # node 2's inbound span of a connection to $p21:9002 is the child of node 1's outbound one
	lab_until spans_linked_once
}
spans_linked_once() {
	local out in
	out=$(admin 1 /spans | jq -c "[.spans[] | select(.name == \"outbound\" and .attributes[\"server.address\"] == \"$p21\")] | last | {trace_id, span_id}") &&
		in=$(admin 2 /spans | jq -c "[.spans[] | select(.name == \"inbound\" and .kind == \"SERVER\")] | map({trace_id, parent_span_id})") &&
		jq -e --argjson o "$out" 'any(.[]; .trace_id == $o.trace_id and .parent_span_id == $o.span_id)' <<<"$in" >/dev/null ||
		{ echo "outbound $out; inbound $in"; return 1; }
}
check "... its inbound span on node 2 is the child of node 1's outbound span (traceparent honoured)" spans_linked
check "... node 1 pools it in the pod form (/hbone: client, form pod, peer $p21:15008, app-1 verified)" \
	admin_jq 1 /hbone "[.connections[] | select(.role == \"client\" and .form == \"pod\" and .peer == \"$p21:15008\" and .peer_identity == \"$(spiffe app-1)\")] | length == 1"
check "... node 2 shows it as a pod-addressed server connection presenting app-1's certificate" \
	admin_jq 2 /hbone "[.connections[] | select(.role == \"server\" and .form == \"pod\" and .local_identity == \"$(spiffe app-1)\")] | length >= 1"
check "... node 2 captured them as pod-addressed HBONE (bpf captured_hbone_pod >= 4)" \
	admin_jq 2 /bpf '.counters.captured_hbone_pod >= 4'
opened_ge() { opened=$(lab_metric "$lab" 2 istio_tcp_connections_opened_total reporter=destination) && [ "${opened:-0}" -ge "$1" ]; }
lab_until opened_ge 4 || true
check "... and reported them: istio_tcp_connections_opened_total{reporter=destination} on node 2 ($opened >= 4)" \
	test "$opened" -ge 4

# ------------------------------------------------------------- 3. refusals, pod-addressed
refused() { h2 n1-p3 refused "$p21:15008" "$@"; }
check "no client certificate -> TLS alert certificate required" \
	refused --no-cert --cert "$logs/app3.crt" --key "$logs/app3.key" --want "certificate required"
check "a client certificate from another CA -> TLS alert unknown ca" \
	refused --cert "$logs/foreign.crt" --key "$logs/foreign.key" --want "unknown ca"
check ":authority of another pod (app-2, enrolled; app-3, outside the mesh) -> 400 per stream, the connection still serves $p21" \
	probe n1-p3 "$p22:8080=400=authority is not the dialed pod" \
	"$p23:8080=400=authority is not the dialed pod" "$p21:8080=200"
refused_tcp() { # FROM IP PORT: the TCP connect is refused (nothing listens there)
	local out
	! out=$(pod_exec "$lab" "$1" timeout 10 bash -c "exec 3<>/dev/tcp/$2/$3" 2>&1) &&
		grep -q 'Connection refused' <<<"$out"
}
check "a pod that is not enrolled ($p23): its 15008 is not captured, its own stack refuses (no certificate is ever presented in its name)" \
	refused_tcp n1-p3 "$p23" 15008
check "... and the agent's pod-addressed listener refuses an original destination that is not a local enrolled workload" \
	h2 n2 refused "127.0.0.1:15008" --cert "$logs/app3.crt" --key "$logs/app3.key"
log2=$LAB_ROOT/$lab/agent2.log
logged() { lab_until _logged "$@"; }	# written in the agent's own time
_logged() { grep -F "$1" "$log2" | grep -F "$2" >/dev/null; }	# (grep -q would cut the first one short: pipefail)
check "node 2's log: no client certificate (from $p13)" logged "inbound connection from $p13:" "no client certificate"
check "node 2's log: the certificate from another CA (from $p13)" logged "inbound connection from $p13:" "not signed by mesh CA"
check "node 2's log: CONNECT to another pod, refused 400 with the reason, naming the peer's identity" \
	logged "CONNECT $p22:8080 from $p13:" "($(spiffe app-3), pod-addressed) refused with 400: authority is not the dialed pod"
check "node 2's log: the original destination that is not a local enrolled workload" \
	logged "pod-addressed connection from 127.0.0.1:" "to 127.0.0.1:15008 refused: not a local enrolled workload"
refusals_are() { v=$(pod_refusals "$1") && [ "${v:-0}" -eq "$2" ]; }
for r in no_client_certificate:1 untrusted_certificate:1 authority_not_dialed_pod:2 not_local_enrolled_workload:1; do
	lab_until refusals_are "${r%%:*}" "${r#*:}" || true
	check "ambit_hbone_refused_total{form=\"pod\",reason=\"${r%%:*}\"} = ${r#*:} (is ${v:-absent})" test "${v:-0}" -eq "${r#*:}"
done
check "... node 2's agent is still running after them" kill -0 "$(cat "$LAB_ROOT/$lab/agent2.pid")"
lab_stop_agent "$lab" 1
lab_stop_agent "$lab" 2
check "node 2's agent exits cleanly (status ${AGENT_EXIT:-?})" test "${AGENT_EXIT:-1}" -eq 0
cp "$LAB_ROOT/$lab"/agent*.log "$logs/" 2>/dev/null || true
lab_down "$lab"

# ------------------------------------------------------ 4. bridge CNI, IPv4 and IPv6
lab=hbpod6-$$
if ! lab_up "$lab" --nodes 2 --pods 3 --cni bridge --ipv6 --enroll p1,p2 >"$logs/up6.log" 2>&1; then
	fail "dual-stack bridge lab up"; sed 's/^/#   /' "$logs/up6.log" | tail -20; lab_result; exit 1
fi
p21=$(lab_pod_ip 2 1)
p21v6=$(lab_var N2_P1_IP6)
leaf app3 app-3 "$LAB_CA_CERT" "$LAB_CA_KEY"	# this lab has a CA of its own
pod_spawn "$lab" n2-p1 "$logs/echo6.log" "$TCPKIT" serve --bind :: --port 9000 --mode echo
pod_spawn "$lab" n2-p1 "$logs/echo4.log" "$TCPKIT" serve --port 9001 --mode echo
wait_port "$lab" n2-p1 9000
wait_port "$lab" n2-p1 9001
if lab_start_agent "$lab" 2; then
	check "bridge CNI, IPv4: TLS to $p21:15008 from node 1, no SNI -> app-1's certificate, 1 MiB echoed" \
		h2 n1 client "$p21:15008" --authority "$p21:9001" --cert "$logs/app3.crt" --key "$logs/app3.key" \
		--expect "$(spiffe app-1)"
	check "bridge CNI, IPv6: TLS to [$p21v6]:15008 from n1-p3, no SNI -> app-1's certificate, 1 MiB echoed" \
		h2 n1-p3 client "[$p21v6]:15008" --authority "[$p21v6]:9000" --cert "$logs/app3.crt" --key "$logs/app3.key" \
		--expect "$(spiffe app-1)"
	check "bridge CNI, IPv6: :authority of the pod's IPv4 on its IPv6 connection -> 400" \
		h2 n1-p3 probe "[$p21v6]:15008" --cert "$logs/app3.crt" --key "$logs/app3.key" \
		--expect "$(spiffe app-1)" --case "$p21:9001=400=authority is not the dialed pod"
	check "... captured by the IPv6 listener (bpf captured_hbone_pod >= 3, captured_inbound_ipv6 >= 2)" \
		admin_jq 2 /bpf '.counters.captured_hbone_pod >= 3 and .counters.captured_inbound_ipv6 >= 2'
	lab_stop_agent "$lab" 2
	check "node 2's agent exits cleanly (status ${AGENT_EXIT:-?})" test "${AGENT_EXIT:-1}" -eq 0
	cp "$LAB_ROOT/$lab/agent2.log" "$logs/agent2-bridge6.log" 2>/dev/null || true
else
	fail "node 2's agent starts in the dual-stack bridge lab"
fi
lab_down "$lab"

# ------------------------------------ 5. a waypoint's upstream side with hbone.dial pod
lab=hbpodw-$$
if ! lab_up "$lab" --nodes 2 --pods 2 --cni routed --enroll p1,p2 --waypoint >"$logs/upw.log" 2>&1; then
	fail "waypoint lab up"; sed 's/^/#   /' "$logs/upw.log" | tail -20; lab_result; exit 1
fi
p11=$(lab_pod_ip 1 1)
p21=$(lab_pod_ip 2 1)
for f in "$LAB_ROOT/$lab/node1.json" "$LAB_ROOT/$lab/node2.json" "$LAB_WAYPOINT_CONFIG"; do
	jq '.hbone.dial = "pod"' "$f" >"$f.new" && mv "$f.new" "$f"
done
for k in 1 2; do
	pod_spawn "$lab" "n$k-p1" "$logs/wp-http-$k.log" python3 "$LAB_TOP/tests/tools/http_echo.py" \
		--port 8080 --name "n$k-p1"
	wait_port "$lab" "n$k-p1" 8080
done
whoami_both() { # four calls to app-1's VIP through the waypoint reach both endpoints
	local i out=""
	for i in 1 2 3 4; do
		out+=$(pod_exec "$lab" n1-p2 curl -fsS -m 10 "http://$LAB_SVC_APP_1_VIP/whoami") || return 1
	done
	grep -q n1-p1 <<<"$out" && grep -q n2-p1 <<<"$out"
}
wp_pool_to_pods() { # the waypoint's upstream HBONE connections go to both pods' IP:15008
	pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 http://127.0.0.1:15000/hbone |
		jq -e --arg a "$p11:15008" --arg b "$p21:15008" \
			'[.connections[] | select(.role == "client") | .peer] | index($a) != null and index($b) != null'
}
if lab_start_agent "$lab" 1 && lab_start_agent "$lab" 2 &&
	lab_start_waypoint "$lab" "$logs/waypoint.log" "$LAB_WAYPOINT_CONFIG"; then
	ok "agents and the waypoint start, all with hbone.dial pod"
	check "n1-p2 -> app-1's VIP -> the waypoint -> both endpoints, all three legs in the pod form: 200s from n1-p1 and n2-p1" \
		whoami_both
	check "... the waypoint dialled the endpoint pods at their own IP:15008 ($p11, $p21)" wp_pool_to_pods
	check "... where node 1's capture took its pod's as pod-addressed HBONE" \
		admin_jq 1 /bpf '.counters.captured_hbone_pod >= 1'
	check "... and node 2's its pod's" admin_jq 2 /bpf '.counters.captured_hbone_pod >= 1'
else
	fail "agents and waypoint start in the waypoint lab"
fi
kill -TERM "${WP_PID:-}" 2>/dev/null || true
wait "${WP_PID:-}" 2>/dev/null || true
lab_stop_agent "$lab" 1
lab_stop_agent "$lab" 2
cp "$logs/waypoint.log" "$logs/waypoint-pod.log" 2>/dev/null || true
note "logs in $logs"
lab_result
