#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The lab as lab.sh makes it by default: ambit-ca in the underlay holds the only CA key, node
# agents and the waypoint hold tokens (two nodes, routed CNI, a waypoint):
# - no agent or waypoint config names a CA key; ambit-ca issued every certificate they hold
#   (requests counted on both sides); HBONE traffic crosses the nodes with them;
# - the waypoint asks for its own identity only and becomes ready with it;
# - a node's token cannot get another node's pod identity (tests/node/ca_client.js, grpc-js, with
#   node 1's token: PERMISSION_DENIED; node 2's token: issued), nor an identity no pod has;
# - ambit-ca restarted while a paced stream runs: nothing drops, agents stay ready.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - ca lab (needs root)"; exit 1; }
lab_node_deps || { lab_result; exit 1; }
lab_tmpdir logs ca-lab
lab=calab-$$	# unique: other runs of this test may be up at the same time
spiffe() { echo "spiffe://cluster.local/ns/default/sa/$1"; }
admin() { pod_exec "$lab" "n$1" curl -fsS -m 5 "http://127.0.0.1:15000$2"; }

if ! lab_up "$lab" --nodes 2 --pods 2 --cni routed --waypoint >"$logs/up.log" 2>&1; then
	fail "lab up"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
dir=$LAB_ROOT/$lab
p21=$(lab_pod_ip 2 1)
check "lab.sh made ambit-ca's config and one token per node and for the waypoint" \
	test "$LAB_CA_MODE" = ambit-ca -a -s "$dir/ca.json" -a -s "$dir/token-n1" -a -s "$dir/token-n2" \
	-a -s "$dir/token-waypoint"
check "no agent or waypoint config names a CA key" sh -c "
	for f in '$dir/node1.json' '$dir/node2.json' '$LAB_WAYPOINT_CONFIG'; do
		jq -e '.ca.key == null and .ca.address == \"$LAB_CA_ADDRESS\"' \"\$f\" >/dev/null || exit 1
	done"
pod_spawn "$lab" n2-p1 "$logs/echo.log" "$TCPKIT" serve --port 9000 --mode echo
wait_port "$lab" n2-p1 9000
if ! lab_start_agent "$lab" 1 || ! lab_start_agent "$lab" 2; then
	fail "ambit-ca and the agents start"; lab_result; exit 1
fi
ok "ambit-ca starts, the agents become ready with its certificates"
for k in 1 2; do
	got=$(admin "$k" /certificates | jq -r '[.certificates[] | select(.serial != "") | .identity] | sort | join(",")')
	check "node $k holds ambit-ca's certificates for its workloads" \
		test "$got" = "$(spiffe app-1),$(spiffe app-2)"
done
issued=$(pod_exec "$lab" ul curl -fsS -m 5 http://127.0.0.1:15014/metrics |
	awk '/^ambit_ca_server_requests_total\{decision="issued"\}/ { s += $NF } END { printf "%d\n", s }')
reqs=$(($(lab_metric "$lab" 1 ambit_ca_requests_total) + $(lab_metric "$lab" 2 ambit_ca_requests_total)))
check "the agents' requests ($reqs) are what ambit-ca reports issuing ($issued)" test "$reqs" -ge 4 -a "$issued" -ge 4
check "HBONE carries traffic between the nodes with them" \
	pod_exec "$lab" n1-p1 "$TCPKIT" client --to "$p21:9000" --mode echo --bytes 4M --timeout 20

# ------------------------------------------------------------------------------ the waypoint
pod_spawn "$lab" "$LAB_WAYPOINT_POD" "$logs/waypoint.log" "$AMBIT_BUILD/ambit-waypoint" \
	--config "$LAB_WAYPOINT_CONFIG"
check "the waypoint becomes ready with a certificate from ambit-ca" lab_until pod_exec "$lab" "$LAB_WAYPOINT_POD" \
	curl -fsS -m 1 -o /dev/null "http://$LAB_WAYPOINT_IP:15021/healthz/ready"
wp=$(pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 http://127.0.0.1:15000/certificates |
	jq -r '([.certificates[] | select(.serial != "") | .identity] | join(",")) + " " + .ca.mode')
check "... for its own identity only ($wp)" test "$wp" = "$(spiffe waypoint) ca-client"

# ---------------------------------------------------- a node's token, another node's workload
jq --arg n "$lab-n2" '.workloads += [{uid: "default/solo-2", name: "solo-2", namespace: "default",
	service_account: "only-two", node: $n, addresses: ["10.244.2.99"], canonical_service: "solo",
	labels: {app: "solo"}, enrolled: true, waypoint: null}]' "$dir/workloads.json" >"$logs/wl.json"
cp "$logs/wl.json" "$dir/workloads.json.tmp" && mv "$dir/workloads.json.tmp" "$dir/workloads.json"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$logs/only.key" \
	-out "$logs/only.csr" -subj "/" -addext "subjectAltName=critical,URI:$(spiffe only-two)" 2>/dev/null
ask() { # TOKEN_FILE: the client's JSON line for only-two's identity
	pod_exec "$lab" n1 node --no-deprecation "$LAB_TOP/tests/node/ca_client.js" \
		--addr "${LAB_CA_ADDRESS#https://}" --ca "$LAB_CA_CERT" --csr "$logs/only.csr" \
		--token "$(cat "$1")" --impersonate "$(spiffe only-two)" --validity 3600 --out "$logs/only.chain"
}
# node 2's agent wants it too: wait until ambit-ca's view has the new pod (node 2 gets it)
has_only_two() {
	admin 2 /certificates | jq -e --arg i "$(spiffe only-two)" '.certificates[] | select(.identity == $i and .serial != "")'
}
lab_until has_only_two >/dev/null 2>&1 || true
out1=$(ask "$dir/token-n1" 2>&1 || true)
check "node 1's token cannot get node 2's pod identity: PERMISSION_DENIED ($out1)" \
	test "$(echo "$out1" | jq -r .code 2>/dev/null)" = 7
out2=$(ask "$dir/token-n2" 2>&1 || true)
check "node 2's token gets it ($(echo "$out2" | jq -c '{code, certs}' 2>/dev/null))" \
	test "$(echo "$out2" | jq -r .code 2>/dev/null)" = 0
outw=$(ask "$dir/token-waypoint" 2>&1 || true)
check "the waypoint's token cannot impersonate anyone: PERMISSION_DENIED" \
	test "$(echo "$outw" | jq -r .code 2>/dev/null)" = 7
agent1_only=$(admin 1 /certificates | jq --arg i "$(spiffe only-two)" '[.certificates[] | select(.identity == $i)] | length')
check "node 1's agent does not even ask for it" test "$agent1_only" = 0

# ------------------------------------------------------------ ambit-ca restarts under traffic
pod_spawn "$lab" n1-p1 "$logs/paced.log" python3 "$LAB_TOP/tests/tools/paced_echo.py" "$p21" 9000 60 0.1
paced=$SPAWNED_PID
sleep 1
lab_stop_ca "$lab"
check "ambit-ca stops cleanly (status $LAB_STOP_EXIT)" test "$LAB_STOP_EXIT" = 0
sleep 1
check "ambit-ca starts again" lab_start_ca "$lab"
rc=0
wait "$paced" 2>/dev/null || rc=$?
check "the stream ran through the CA restart: 60 rounds, clean EOF (exit $rc)" \
	sh -c "test $rc -eq 0 && grep -q '^done' '$logs/paced.log'"
for k in 1 2; do
	check "node $k is still ready" pod_exec "$lab" "n$k" curl -fsS -m 5 -o /dev/null \
		"http://$(lab_node_ip "$k"):15021/healthz/ready"
done
for k in 1 2; do
	lab_stop_agent "$lab" "$k"
	check "agent $k exits cleanly (status $AGENT_EXIT)" test "$AGENT_EXIT" = 0
done
lab_stop_ca "$lab"
lab_result
