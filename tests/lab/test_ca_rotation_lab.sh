#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A root rotation in the lab (ambit-ca, two nodes) in the three steps of docs/ca.md, with a
# long-lived stream and new connections running throughout (zero failures allowed):
# 1. the new root joins the agents' trust bundle (ca.crt swapped by rename, as the kubelet swaps
#    a mounted ConfigMap): both agents reload it without a restart;
# 2. ambit-ca switches its signing key (new root first in its ca.cert, the new key: a new
#    version of its Secret volume, taken without a restart) and the bundle lists the new root
#    first: the agents renew their leaves from it at once;
# 3. the old root leaves the bundle: a peer with an old-root leaf is refused, the stream that
#    was opened with old-root leaves before step 1 is still running, new connections succeed.
# A waypoint follows the same steps (reloads, renews its own leaf, refuses the old root).
# ambit-ca is one process from start to end: it follows its Secret volume at each step.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - ca rotation lab (needs root)"; exit 1; }
lab_node_deps || { lab_result; exit 1; }
lab_h2peer
lab_tmpdir logs rot-lab
lab=rot-$$
spiffe() { echo "spiffe://cluster.local/ns/default/sa/$1"; }
admin() { pod_exec "$lab" "n$1" curl -fsS -m 5 "http://127.0.0.1:15000$2"; }
swap() { cat "${@:2}" >"$1.new" && mv -f "$1.new" "$1"; }	# FILE PARTS...: replaced by rename
who() { if [ "$1" = wp ]; then echo "the waypoint"; else echo "agent $1"; fi; }
reloaded() { # K|wp N: node K's agent (the waypoint) logged N bundle reloads or more
	local log=$dir/agent$1.log
	[ "$1" != wp ] || log=$logs/waypoint.log
	[ "$(grep -c "trust bundle .* reloaded for new connections" "$log")" -ge "$2" ]
}
serials() { # K|wp: the serials of the certificates node K's agent (the waypoint) holds
	if [ "$1" = wp ]; then
		pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 http://127.0.0.1:15000/certificates
	else
		admin "$1" /certificates
	fi | jq -r '[.certificates[].serial] | sort | join(",")'
}

if ! lab_up "$lab" --nodes 2 --pods 3 --cni routed --enroll p1,p2 --waypoint >"$logs/up.log" 2>&1; then
	fail "lab up"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
dir=$LAB_ROOT/$lab
p21=$(lab_pod_ip 2 1)
n2=$(lab_node_ip 2)
SNI1=app-1.default.cluster.local.spiffe
# ambit-ca signs with its own copies of the CA files, a Secret volume (signer/ca.crt, ca.key);
# the agents' ca.crt is their trust bundle
cp "$dir/ca.crt" "$dir/old.crt"
lab_secret_volume "$dir/signer" "$dir/ca.key" "$dir/old.crt"
jq --arg c "$dir/signer/ca.crt" --arg k "$dir/signer/ca.key" '.ca.cert = $c | .ca.key = $k' \
	"$dir/ca.json" >"$dir/ca.json.new" && mv "$dir/ca.json.new" "$dir/ca.json"
lab_other_ca "$dir/new"
lab_leaf "$logs" oldleaf "$(spiffe app-3)" "$dir/old.crt" "$dir/ca.key"
lab_leaf "$logs" newleaf "$(spiffe app-3)" "$dir/new/ca.crt" "$dir/new/ca.key"
h2py() { pod_exec "$lab" n1-p3 timeout 30 "$H2PY" "$H2PEER" "$@"; }
cat "$dir/old.crt" "$dir/new/ca.crt" >"$logs/both.crt"	# h2peer trusts node 2 before and after
refused_with() { # LEAF [HOST SNI]: node 2's 15008 (or HOST's, asking for SNI) refuses a client
	h2py refused "${2:-$n2}:15008" --ca "$logs/both.crt" --sni "${3:-$SNI1}" \
		--cert "$logs/$1.crt" --key "$logs/$1.key" --want "unknown ca"	# ... with LEAF
}
accepted_with() { ! refused_with "$1"; }	# LEAF: the handshake is not refused
renewed() { [ "$(serials "$1")" != "$2" ]; }	# K SERIALS: node K's leaves are others now

pod_spawn "$lab" n2-p1 "$logs/echo.log" "$TCPKIT" serve --port 9000 --mode echo
wait_port "$lab" n2-p1 9000
if ! lab_start_agent "$lab" 1 || ! lab_start_agent "$lab" 2; then
	fail "ambit-ca and the agents start"; lab_result; exit 1
fi
ok "ambit-ca starts, the agents become ready with its certificates (old root)"
ca_pid=$(cat "$dir/ca.pid")
ca_reloaded() { [ "$(grep -c 'reloaded without a restart' "$dir/ca.log")" -ge "$1" ]; }	# N
if ! lab_start_waypoint "$lab" "$logs/waypoint.log" "$LAB_WAYPOINT_CONFIG"; then	# sets WP_PID
	fail "the waypoint becomes ready with its certificate"; lab_result; exit 1
fi
ok "the waypoint becomes ready with its certificate"
wp=$WP_PID
check "before the rotation a leaf from the new root is refused" refused_with newleaf

# ------------------------------------------------------------------ traffic throughout
pod_spawn "$lab" n1-p1 "$logs/paced.log" python3 "$LAB_TOP/tests/tools/paced_echo.py" "$p21" 9000 \
	100000 0.1
paced=$SPAWNED_PID
# (the 0.2 s pause paces the new connections: part of the scenario, not a wait)
pod_spawn "$lab" n1-p2 "$logs/conns.log" bash -c "while [ ! -e '$logs/stop' ]; do
	if '$TCPKIT' client --to '$p21:9000' --mode echo --bytes 64K --timeout 10 >/dev/null 2>&1
	then echo ok; else echo FAIL \$(date +%T.%N); fi; sleep 0.2; done"
conns=$SPAWNED_PID
# Each step holds its state until the traffic has gone through it: 5 more new connections and
# 25 more rounds of the stream (2.5 s at its pace; the 4 windows make the 100 rounds and 20
# connections checked at the end) since the step began.
count() { grep -c "$1" "$2" || true; }	# PATTERN FILE
traffic_mark() { C0=$(count '^ok' "$logs/conns.log"); R0=$(count '^round' "$logs/paced.log"); }
traffic_went_through() {
	[ "$(count '^ok' "$logs/conns.log")" -ge $((C0 + 5)) ] &&
		[ "$(count '^round' "$logs/paced.log")" -ge $((R0 + 25)) ]
}
traffic_mark
check "the stream and new connections run before the rotation" lab_until traffic_went_through

# ------------------------------------------------------------------ 1. add the new root
traffic_mark
swap "$dir/ca.crt" "$dir/old.crt" "$dir/new/ca.crt"
lab_secret_volume "$dir/signer" "$dir/ca.key" "$dir/old.crt" "$dir/new/ca.crt"
check "1: ambit-ca takes its new ca.cert without a restart" lab_until ca_reloaded 1
for k in 1 2 wp; do
	check "1: $(who "$k") reloads the bundle (old + new root) without a restart" \
		lab_until reloaded "$k" 1
done
check "1: a leaf from the new root is accepted now (not refused as unknown CA)" \
	lab_until accepted_with newleaf
check "1: a leaf from the old root is still accepted" accepted_with oldleaf
check "1: the traffic goes through the step" lab_until traffic_went_through

# ------------------------------------------------------------------ 2. switch the signing key
traffic_mark
before1=$(serials 1)
before2=$(serials 2)
beforewp=$(serials wp)
lab_secret_volume "$dir/signer" "$dir/new/ca.key" "$dir/new/ca.crt" "$dir/old.crt"
check "2: ambit-ca signs with the new key without a restart" lab_until ca_reloaded 2
swap "$dir/ca.crt" "$dir/new/ca.crt" "$dir/old.crt"
at_once() { LAB_WAIT_S=15 lab_until "$@"; }	# CMD...: within 15 s, not lib.sh's generous wait
check "2: agent 1 renews its leaves from the new root at once" at_once renewed 1 "$before1"
check "2: agent 2 renews its leaves from the new root at once" at_once renewed 2 "$before2"
check "2: the waypoint renews its leaf at once" at_once renewed wp "$beforewp"
note "leaves of node 1: ${before1} -> $(serials 1)"
check "2: the traffic goes through the step" lab_until traffic_went_through

# ------------------------------------------------------------------ 3. remove the old root
traffic_mark
swap "$dir/ca.crt" "$dir/new/ca.crt"
lab_secret_volume "$dir/signer" "$dir/new/ca.key" "$dir/new/ca.crt"
check "3: ambit-ca takes ca.cert without the old root, without a restart" lab_until ca_reloaded 3
for k in 1 2 wp; do
	check "3: $(who "$k") reloads the bundle (new root only)" lab_until reloaded "$k" 3
done
check "3: a leaf from the old root is refused as from an unknown CA" lab_until refused_with oldleaf
served_by_new_root() { # node 2 serves app-1's leaf; it must verify against the new root alone
	pod_exec "$lab" n1-p3 timeout 10 openssl s_client -connect "$n2:15008" -servername "$SNI1" \
		-alpn h2 -cert "$logs/newleaf.crt" -key "$logs/newleaf.key" -CAfile "$dir/new/ca.crt" \
		-verify_return_error </dev/null 2>&1 | grep "Verify return code: 0 (ok)" >/dev/null	# (all read: pipefail)
}
check "3: node 2's leaf for app-1 chains to the new root alone" served_by_new_root
check "3: the waypoint refuses a leaf from the old root too" \
	refused_with oldleaf "$LAB_WAYPOINT_IP" waypoint.default.cluster.local.spiffe
check "3: the traffic goes through the step" lab_until traffic_went_through

# ------------------------------------------------------------------ the traffic's account
touch "$logs/stop"
wait "$conns" 2>/dev/null || true
check "the stream opened before step 1 is still running" kill -0 "$paced"
kill "$paced" 2>/dev/null || true
rounds=$(count '^round' "$logs/paced.log")
check "... and answered every round ($rounds, no error)" \
	sh -c "test '$rounds' -ge 100 && ! grep -qv '^round' '$logs/paced.log'"
n_ok=$(count '^ok' "$logs/conns.log")
n_fail=$(count '^FAIL' "$logs/conns.log")
check "new connections throughout: $n_ok succeeded, $n_fail failed" \
	test "$n_fail" = 0 -a "$n_ok" -ge 20
[ "$n_fail" = 0 ] || grep FAIL "$logs/conns.log" | head -5 | sed 's/^/#   /'
for k in 1 2; do
	check "node $k is still ready" pod_exec "$lab" "n$k" curl -fsS -m 5 -o /dev/null \
		"http://$(lab_node_ip "$k"):15021/healthz/ready"
	check "node $k refused no mesh peer" \
		sh -c "! grep 'not signed by mesh CA' '$dir/agent$k.log' | grep -v '$(lab_pod_ip 1 3)'"
done
check "ambit-ca ran throughout as one process (pid $ca_pid), no pair refused" \
	sh -c "[ \"\$(cat '$dir/ca.pid')\" = $ca_pid ] && kill -0 $ca_pid && ! grep -q 'are refused' '$dir/ca.log'"
check "the waypoint is still ready" pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 -o /dev/null \
	"http://$LAB_WAYPOINT_IP:15021/healthz/ready"
kill -TERM "$wp" 2>/dev/null || true
wp_rc=0
wait "$wp" 2>/dev/null || wp_rc=$?
check "the waypoint exits cleanly (status $wp_rc)" test "$wp_rc" = 0
if lab_stop_agents "$lab" 1 2; then	# in this shell: it waits for the agents
	ok "the agents exit cleanly, no sanitizer report"
else
	fail "the agents exit cleanly, no sanitizer report"
fi
lab_stop_ca "$lab"
check "ambit-ca exits cleanly (status $LAB_STOP_EXIT), no sanitizer report" \
	sh -c "[ '$LAB_STOP_EXIT' = 0 ] && ! grep -q Sanitizer '$dir/ca.log'"
lab_result
