#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ambitd with discovery.source = kubernetes, end to end: node 1's agent watches the test API
# server (tests/tools/fake_apiserver.py) with the in-cluster configuration (no api_server:
# KUBERNETES_SERVICE_HOST/_PORT, HTTPS verified against the service account's ca.crt, its
# token as the bearer), is not ready before the first full list, then captures the pod the API
# says is enrolled and carries its traffic over HBONE to node 2 (file discovery, same cluster
# facts); un-labelling the namespace releases the pod's capture.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - kube agent (needs root)"; exit 1; }
lab_tmpdir logs kube-agent
lab=kube$$
PY=/usr/bin/python3

if ! lab_up "$lab" --nodes 2 --pods 2 --cni routed --enroll p1 >"$logs/up.log" 2>&1; then
	fail "lab up"; lab_result; exit 1
fi
p11=$(lab_pod_ip 1 1); p21=$(lab_pod_ip 2 1)
n1=$(lab_node_ip 1); n2=$(lab_node_ip 2)
# The service account as kubelet mounts it: a token and the cluster CA; the API server's
# certificate (for 127.0.0.1, the service address here) is signed by that CA.
sa=$logs/serviceaccount
mkdir -p "$sa"
echo "secret-token" >"$sa/token"
if ! (cd "$logs" && set -e && k='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes' &&
	openssl req -x509 $k -keyout ca.key -out "$sa/ca.crt" -days 2 -subj /CN=lab-kube-ca &&
	openssl req $k -keyout srv.key -out srv.csr -subj /CN=kube-apiserver &&
	printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >srv.ext &&
	openssl x509 -req -in srv.csr -CA "$sa/ca.crt" -CAkey ca.key -CAcreateserial -out srv.crt \
		-days 2 -extfile srv.ext) >"$logs/pki.log" 2>&1; then
	fail "test CA and API server certificate made"; lab_result; exit 1
fi
api_start() {
	pod_spawn "$lab" n1 "$logs/api.log" "$PY" "$LAB_TOP/tests/tools/fake_apiserver.py" \
		--bind 127.0.0.1 --port 16443 --token secret-token --state "$logs/api-state.json" \
		--tls-cert "$logs/srv.crt" --tls-key "$logs/srv.key"
	API_PID=$SPAWNED_PID
	wait_port "$lab" n1 16443
}
api_start
api() { # VERB JSON: drives the fake API server
	pod_exec "$lab" n1 curl -fsS -m 5 --cacert "$sa/ca.crt" -X POST -H 'Content-Type: application/json' \
		--data "$2" "https://127.0.0.1:16443/_control/$1" >/dev/null
}
api_stat() { # COUNTER: one of the fake's request counters
	pod_exec "$lab" n1 curl -fsS -m 5 --cacert "$sa/ca.crt" https://127.0.0.1:16443/_control/stats |
		jq -r ".$1"
}
cfg=$LAB_ROOT/$lab/node1.json
jq --arg t "$sa/token" --arg ca "$sa/ca.crt" '.discovery = {"source": "kubernetes", "kubernetes":
	{"token_file": $t, "ca_file": $ca}}' "$cfg" >"$cfg.new" && mv "$cfg.new" "$cfg"

pod_spawn "$lab" n2-p1 "$logs/echo.log" "$TCPKIT" serve --port 9000 --mode echo
wait_port "$lab" n2-p1 9000
lab_start_agent "$lab" 2 || { fail "node 2 agent (file discovery) starts"; lab_result; exit 1; }

# The cluster as the API server knows it; then the API server goes away (its state is kept).
api apply '{"resource": "namespaces", "object": {"metadata": {"name": "default", "labels": {"istio.io/dataplane-mode": "ambient"}}}}'
for k in 1 2; do
	ip=$(lab_node_ip "$k")
	api apply '{"resource": "nodes", "object": {"metadata": {"name": "'"$lab-n$k"'"}, "status": {"addresses": [{"type": "InternalIP", "address": "'"$ip"'"}]}}}'
	pip=$(lab_pod_ip "$k" 1)
	api apply '{"resource": "pods", "object": {"metadata": {"name": "'"$lab-n$k-p1"'", "namespace": "default", "labels": {"app": "app-1"}},
		"spec": {"nodeName": "'"$lab-n$k"'", "serviceAccountName": "app-1", "containers": [{"name": "c", "image": "i"}]},
		"status": {"phase": "Running", "podIP": "'"$pip"'", "podIPs": [{"ip": "'"$pip"'"}]}}}'
done
kill "$API_PID"; wait "$API_PID" 2>/dev/null || true

# Node 1's agent, started by hand while the API is unreachable: not ready until it has listed.
pod_spawn "$lab" n1 "$LAB_ROOT/$lab/agent1.log" env KUBERNETES_SERVICE_HOST=127.0.0.1 \
	KUBERNETES_SERVICE_PORT=16443 "$AMBIT_BUILD/ambitd" --config "$cfg"
echo "$SPAWNED_PID" >"$LAB_ROOT/$lab/agent1.pid"
ready() { pod_exec "$lab" n1 curl -fsS -m 1 -o /dev/null "http://$n1:15021/healthz/ready" 2>/dev/null; }
sleep 1.5
if ready; then fail "not ready while the API server is unreachable"; else ok "not ready while the API server is unreachable"; fi
api_start

check "ready once the API server has been listed" lab_until ready
check "the model is the API's from the first ready moment: both pods, enrolled by the namespace label" \
	sh -c "nsenter --net=/run/netns/$lab-n1 $AMBIT_BUILD/ambitctl workloads -o json |
		jq -e '[.workloads[] | select(.enrolled)] | length == 2' >/dev/null"
check "config shows the Kubernetes discovery status, synced" \
	sh -c "nsenter --net=/run/netns/$lab-n1 curl -fsS http://127.0.0.1:15000/config_dump | jq -e '.discovery_status.synced == true' >/dev/null"
check "the API URL came from KUBERNETES_SERVICE_HOST/_PORT, over HTTPS" \
	grep -q 'kube: watching https://127.0.0.1:16443' "$LAB_ROOT/$lab/agent1.log"
check "the API server's certificate was verified against ca.crt and the token sent (no 401, no failed handshake)" \
	test "$(api_stat unauthorized) $(api_stat tls_failures)" = "0 0"
captured() { nsenter --net="/run/netns/$lab-n1" curl -fsS http://127.0.0.1:15000/bpf | jq '.interfaces | length'; }
captured_is() { [ "$(captured)" = "$1" ]; }
check "the enrolled local pod is captured" lab_until captured_is 1
check "its traffic reaches node 2 over HBONE" pod_exec "$lab" n1-p1 "$TCPKIT" client --to "$p21:9000" \
	--mode echo --conns 5 --timeout 20
# The close line is written when the agent sees both sides finish, just after the client exits.
completes() { [ "$(grep -c '"connection complete"' "$LAB_ROOT/$lab/agent1.log")" -ge "$1" ]; }
lab_until completes 5 || true
check "... as mutual TLS" sh -c "grep '\"connection complete\"' '$LAB_ROOT/$lab/agent1.log' | tail -n1 |
	grep -q '\"dst.hbone_addr\":\"$n2:15008\".*mutual_tls'"

api apply '{"resource": "namespaces", "object": {"metadata": {"name": "default", "labels": {}}}}'
check "un-labelling the namespace releases the pod's capture" lab_until captured_is 0
check "... and its traffic flows directly" pod_exec "$lab" n1-p1 "$TCPKIT" client --to "$p21:9000" \
	--mode echo --conns 1 --timeout 20
lab_stop_agent "$lab" 1
check "agent exits 0" test "$AGENT_EXIT" = 0
lab_stop_agent "$lab" 2
lab_result
