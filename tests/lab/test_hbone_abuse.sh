#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# HTTP/2 abuse against a real node agent's 15008, from a peer holding a valid mesh certificate
# (tests/tools/h2peer.py attack, in a pod outside the mesh), while a client pod keeps using
# HBONE to the same node:
# - rapid reset (CONNECT then RST_STREAM, again and again) is cut off with GOAWAY
#   ENHANCE_YOUR_CALM within 1,000 streams, on each of three connections, and the destination
#   pod named in those CONNECTs never sees a connection;
# - SETTINGS, PING and empty-DATA floods get GOAWAY ENHANCE_YOUR_CALM, a CONTINUATION flood is
#   closed; streams opened past hbone.limits.max_pending_streams are refused (REFUSED_STREAM);
# - every cut-off shows in Prometheus (:15020) and in the admin API's /hbone, and is logged;
# - the client pod's connections through node 2 all succeed meanwhile and afterwards.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - hbone abuse lab (needs root)"; exit 1; }
lab_tmpdir logs abuse
lab=h2abuse-$$
H2PY=python3	# h2peer.py needs python3-h2: the system python has it when another one is first in PATH
for p in /usr/bin/python3 python3; do "$p" -c 'import h2' 2>/dev/null && { H2PY=$p; break; }; done
H2PEER=$LAB_TOP/tests/tools/h2peer.py
TD=cluster.local
spiffe() { echo "spiffe://$TD/ns/default/sa/$1"; }
admin() { pod_exec "$lab" "n$1" curl -fsS -m 5 "http://127.0.0.1:15000$2"; }

if ! lab_up "$lab" --nodes 2 --pods 3 --cni routed --enroll p1,p2 >"$logs/up.log" 2>&1; then
	fail "lab up"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
p21=$(lab_pod_ip 2 1)
n2=$(lab_node_ip 2)
# Node 2 refuses streams past 20 unanswered ones, so the pending case needs few streams.
cfg2=$LAB_ROOT/$lab/node2.json
jq '.hbone = {"limits": {"max_pending_streams": 20}}' "$cfg2" >"$cfg2.new" && mv "$cfg2.new" "$cfg2"

pod_spawn "$lab" n2-p1 "$logs/echo.log" "$TCPKIT" serve --port 9000 --mode echo
pod_spawn "$lab" n2-p1 "$logs/target.log" "$TCPKIT" serve --port 9100 --mode echo --peers
for port in 9000 9100; do wait_port "$lab" n2-p1 "$port"; done
if ! lab_start_agent "$lab" 1 || ! lab_start_agent "$lab" 2; then
	fail "agents start"; lab_result; exit 1
fi

# The attacker: app-3 (pod n1-p3, outside the mesh, not captured) with a leaf of the mesh CA.
lab_leaf "$logs" app3 "$(spiffe app-3)" "$LAB_CA_CERT" "$LAB_CA_KEY"
check "the attacker's certificate chains to the mesh CA" openssl verify -CAfile "$LAB_CA_CERT" "$logs/app3.crt"
SNI1=app-1.default.$TD.spiffe	# tls/identity.c: the SNI asking for app-1's identity

attack() { # LOG KIND AUTHORITY COUNT CONNECTIONS [ARGS...]: h2peer.py attack on node 2's 15008
	local log=$1 kind=$2 auth=$3 count=$4 conns=$5; shift 5
	pod_exec "$lab" n1-p3 timeout 120 "$H2PY" "$H2PEER" attack "$n2:15008" --kind "$kind" \
		--authority "$auth" --count "$count" --connections "$conns" --sni "$SNI1" \
		--ca "$LAB_CA_CERT" --cert "$logs/app3.crt" --key "$logs/app3.key" "$@" >"$log" 2>&1
}
# results LOG: "goaway:last" per connection
results() { sed -n 's/^RESULT .*goaway=\([-0-9]*\) last=\([-0-9]*\) .*/\1:\2/p' "$1"; }
# cut_off LOG N: N connections, each ended by GOAWAY ENHANCE_YOUR_CALM (11) within 1,000
# streams (its last stream ID below 2000)
cut_off() {
	local r
	r=$(results "$1")
	echo "$r"
	[ "$(grep -c . <<<"$r")" -eq "$2" ] && [ "$(grep -c '^11:' <<<"$r")" -eq "$2" ] &&
		awk -F: '$2 < 0 || $2 >= 2000 { bad = 1 } END { exit bad }' <<<"$r"
}
# (the counters, /hbone and the log line are written in node 2's own time: the checks wait)
metric_is() { # METRIC VALUE: node 2's Prometheus sample
	local v
	v=$(lab_metric "$lab" 2 "$1")
	echo "$1 = $v"
	[ "$v" = "$2" ]
}
# Legitimate traffic from app-1 to app-2's echo, through node 2's 15008, in the background.
legit() { # LOG CONNS
	pod_spawn "$lab" n1-p1 "$1" "$TCPKIT" client --to "$p21:9000" --mode echo --conns "$2" \
		--parallel 4 --msg-size 4096 --timeout 120
	LEGIT_PID=$SPAWNED_PID
}

# ------------------------------------------------------------------------ 1. rapid reset
legit "$logs/legit1.log" 400
attack "$logs/rapid.log" rapid_reset "$p21:9100" 20000 3 || true
rc=0; wait "$LEGIT_PID" || rc=$?
sed 's/^/#   /' "$logs/rapid.log" | grep RESULT || true
check "rapid reset: three connections, each cut off with GOAWAY ENHANCE_YOUR_CALM within 1,000 streams" \
	cut_off "$logs/rapid.log" 3
check "... and the destination pod saw no connection for those streams" \
	sh -c "! grep -q '^peer ' '$logs/target.log'"
check "... while 400 connections of a client pod through node 2 all succeeded" \
	sh -c "test $rc -eq 0 && grep -q 'result=ok' '$logs/legit1.log'"
check "... counted in Prometheus (ambit_hbone_rapid_reset_cutoffs_total 3)" \
	lab_until metric_is ambit_hbone_rapid_reset_cutoffs_total 3
limits_ok() {
	admin 2 /hbone | jq -e '.server.limits.cut_off.rapid_reset == 3 and .server.limits.reset_before_dial_total >= 300'
}
check "... and in the admin API (/hbone server.limits)" lab_until limits_ok
check "... and logged with the peer's identity" \
	lab_until grep -q "cut off: rapid_reset.*$(spiffe app-3)\|$(spiffe app-3).*cut off: rapid_reset" "$LAB_ROOT/$lab/agent2.log"

# ------------------------------------------------------------------------- 2. floods
legit "$logs/legit2.log" 400
for kind in settings ping empty_data continuation; do
	attack "$logs/$kind.log" "$kind" "$p21:9000" 20000 1 || true
done
rc=0; wait "$LEGIT_PID" || rc=$?
for kind in settings ping empty_data; do
	grep RESULT "$logs/$kind.log" | sed 's/^/#   /' || true
	check "$kind flood: cut off with GOAWAY ENHANCE_YOUR_CALM" cut_off "$logs/$kind.log" 1
done
check "continuation flood: closed" grep -q 'RESULT .* ended=eof\|RESULT .* ended=error' "$logs/continuation.log"
check "... a client pod's 400 connections through node 2 all succeeded meanwhile" \
	sh -c "test $rc -eq 0 && grep -q 'result=ok' '$logs/legit2.log'"
for m in settings_flood ping_flood empty_frames continuation_flood; do
	check "... ambit_hbone_${m}_cutoffs_total is 1" lab_until metric_is "ambit_hbone_${m}_cutoffs_total" 1
done

# --------------------------------------------------------- 3. streams faster than served
# app-2's port 9100 answers at once, so pending streams need an upstream that never answers:
# a pod IP of node 2 with nothing behind it, dropped by a firewall rule in the pod.
pod_exec "$lab" n2-p2 iptables -I INPUT -p tcp --dport 9200 -j DROP 2>/dev/null ||
	pod_exec "$lab" n2-p2 nft add table ip drop9200 2>/dev/null || true
if pod_exec "$lab" n2-p2 iptables -C INPUT -p tcp --dport 9200 -j DROP 2>/dev/null; then
	attack "$logs/pending.log" pending "$(lab_pod_ip 2 2):9200" 50 1 --want-refused 30 --sni "app-2.default.$TD.spiffe" || true
	grep RESULT "$logs/pending.log" | sed 's/^/#   /' || true
	check "streams past max_pending_streams (20) refused with REFUSED_STREAM, no GOAWAY" \
		grep -q 'RESULT .*goaway=-1 .*refused=30 ' "$logs/pending.log"
	check "... counted (ambit_hbone_streams_refused_total 30)" lab_until metric_is ambit_hbone_streams_refused_total 30
else
	note "no iptables in this environment: the pending-streams case is covered by test_hbone"
fi

check "node 2 still serves HBONE afterwards" pod_exec "$lab" n1-p1 "$TCPKIT" client \
	--to "$p21:9000" --mode echo --conns 20 --bytes 64K --timeout 30
lab_stop_agent "$lab" 1
lab_stop_agent "$lab" 2
cp "$LAB_ROOT/$lab"/agent*.log "$logs/" 2>/dev/null || true
note "logs in $logs"
lab_result
