#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Lab topology, no agent: for both CNI styles, pods reach each other across nodes and on one node
# with verified transfers (source IP preserved), service VIPs stay unreachable (no kube-proxy),
# the generated files have the contract's shape, and lab down leaves nothing behind.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - lab topology (needs root)"; exit 1; }
[ -x "$TCPKIT" ] || { echo "not ok - lab topology ($TCPKIT not built: make build/tests/tools/tcpkit)"; exit 1; }
lab_tmpdir logs lab-topology

# client NAME FROM TO_IP:PORT ARGS...: tcpkit client from pod FROM; output in $out.
client() {
	local name=$1 from=$2 to=$3; shift 3
	out=$(pod_exec "$name" "$from" "$TCPKIT" client --to "$to" --timeout 30 "$@" 2>&1)
}

files_ok() { # the files of lab $1 have the contract's shape (steps chained: no errexit here)
	local d=$LAB_ROOT/$1 w=$LAB_ROOT/$1/workloads.json
	jq -e '(.nodes | length) == 2 and (.workloads | length) == 4 and (.services | length) == 3' "$w" &&
	jq -e '[.workloads[] | select(.enrolled)] | length == 2' "$w" && # --enroll p1
	jq -e '.workloads[] | select(.name == "'"$1"'-n2-p1") | .uid == "default/'"$1"'-n2-p1"
		and .namespace == "default" and .node == "'"$1"'-n2" and .addresses == ["10.244.2.11"]
		and .service_account == "app-1" and .labels.app == "app-1" and .waypoint == null' "$w" &&
	jq -e '.services[] | select(.name == "app-1") | .addresses == ["10.96.1.1"]
		and .selector == {"app": "app-1"}
		and .ports[0] == {"port": 80, "target_port": 8080, "name": "http"}' "$w" &&
	jq -e '.node_name == "'"$1"'-n1" and .node_ip == "172.30.0.11" and .trust_domain == "cluster.local"
		and .ca.cert == "'"$d"'/ca.crt" and .discovery == {"source": "file", "file": "'"$w"'"}
		and .tracing.custom_tags == {"cluster_name": "lab", "environment": "test"}
		and .tracing.otlp.endpoint == "http://127.0.0.1:4317"
		and .redirect.pin_dir == "/sys/fs/bpf/ambit-'"$1"'-n1"' "$d/node1.json" &&
	openssl x509 -in "$d/ca.crt" -noout -text | grep 'ASN1 OID: prime256v1' >/dev/null &&
	openssl x509 -in "$d/ca.crt" -noout -text | grep 'CA:TRUE' >/dev/null &&
	openssl verify -CAfile "$d/ca.crt" "$d/ca.crt" >/dev/null &&
	openssl pkey -in "$d/ca.key" -noout &&
	[ "$(stat -c %a "$d/ca.key")" = 600 ]
}

nothing_left() { # lab $1 is gone: namespaces, links (host-side names), files, processes
	local name=$1; shift
	local left
	left=$(ip netns list | awk '{print $1}' | grep -E "^$name-" || true)
	[ -z "$left" ] || { echo "namespaces left: $left"; return 1; }
	[ ! -e "$LAB_ROOT/$name" ] || { echo "$LAB_ROOT/$name left"; return 1; }
	local ifn
	for ifn in "$@"; do
		! ip link show "$ifn" >/dev/null 2>&1 || { echo "link $ifn left"; return 1; }
	done
	local p
	for p in "${SERVER_PIDS[@]}"; do
		! kill -0 "$p" 2>/dev/null || { echo "process $p left"; return 1; }
	done
}

for cni in routed bridge; do
	name=topo-$cni-$$	# unique: other runs of this test may be up at the same time
	SERVER_PIDS=()
	if ! lab_up "$name" --nodes 2 --pods 2 --cni "$cni" --enroll p1 >"$logs/up-$cni.log" 2>&1; then
		fail "$cni: lab up"; sed 's/^/#   /' "$logs/up-$cni.log"; continue
	fi
	ok "$cni: lab up (2 nodes x 2 pods)"
	check "$cni: workloads.json, node configs and CA have the contract's shape" files_ok "$name"

	# verify servers on n2-p1 (other node), n1-p2 (same node); an echo/halfclose server on n2-p2.
	pod_spawn "$name" n2-p1 "$logs/$cni-n2p1.log" "$TCPKIT" serve --port 8080 --mode verify --peers
	SERVER_PIDS+=("$SPAWNED_PID")
	pod_spawn "$name" n1-p2 "$logs/$cni-n1p2.log" "$TCPKIT" serve --port 8080 --mode verify --peers
	SERVER_PIDS+=("$SPAWNED_PID")
	pod_spawn "$name" n2-p2 "$logs/$cni-n2p2e.log" "$TCPKIT" serve --port 7000 --mode echo
	SERVER_PIDS+=("$SPAWNED_PID")
	pod_spawn "$name" n2-p2 "$logs/$cni-n2p2h.log" "$TCPKIT" serve --port 7001 --mode halfclose --reply 1M
	SERVER_PIDS+=("$SPAWNED_PID")
	wait_port "$name" n2-p1 8080 && wait_port "$name" n1-p2 8080 &&
		wait_port "$name" n2-p2 7000 && wait_port "$name" n2-p2 7001 ||
		{ fail "$cni: test servers listening"; continue; }

	p11=$(lab_pod_ip 1 1) p12=$(lab_pod_ip 1 2) p21=$(lab_pod_ip 2 1) p22=$(lab_pod_ip 2 2)
	if client "$name" n1-p1 "$p21:8080" --mode verify --bytes 1M; then
		ok "$cni: pod to pod across nodes ($p11 -> $p21), verified"
	else
		fail "$cni: pod to pod across nodes ($p11 -> $p21)"; echo "# $out"
	fi
	if grep -q "^peer $p11:" "$logs/$cni-n2p1.log"; then
		ok "$cni: server across nodes sees the client pod's IP $p11"
	else
		fail "$cni: server across nodes sees the client pod's IP $p11"; sed 's/^/#   /' "$logs/$cni-n2p1.log"
	fi
	if client "$name" n1-p1 "$p12:8080" --mode verify --bytes 1M &&
		grep -q "^peer $p11:" "$logs/$cni-n1p2.log"; then
		ok "$cni: pod to pod on the same node ($p11 -> $p12), verified, source IP kept"
	else
		fail "$cni: pod to pod on the same node ($p11 -> $p12)"; echo "# $out"
	fi
	if client "$name" n2-p1 "$p12:8080" --mode verify --bytes 1M; then
		ok "$cni: pod to pod across nodes, other direction ($p21 -> $p12)"
	else
		fail "$cni: pod to pod across nodes, other direction ($p21 -> $p12)"; echo "# $out"
	fi
	if client "$name" n1-p1 "$p21:8080" --mode verify --bytes 100M; then
		ok "$cni: 100 MiB verified transfer across nodes ($(grep -E '^gib_per_s=' <<<"$out"))"
	else
		fail "$cni: 100 MiB verified transfer across nodes"; echo "# $out"
	fi
	check "$cni: 200 concurrent echo connections across nodes" \
		client "$name" n1-p1 "$p22:7000" --mode echo --conns 200 --bytes 4K
	check "$cni: half-close across nodes (1 MiB up, FIN, 1 MiB reply)" \
		client "$name" n1-p2 "$p22:7001" --mode halfclose --bytes 1M --reply 1M
	check "$cni: node reaches a pod on another node" \
		pod_exec "$name" n1 "$TCPKIT" client --to "$p21:8080" --mode verify --bytes 64K --timeout 10
	if client "$name" n1-p1 "$LAB_SVC_APP_1_VIP:80" --mode echo --timeout 2; then
		fail "$cni: service VIP unreachable without an agent (no kube-proxy)"
	else
		ok "$cni: service VIP unreachable without an agent (no kube-proxy)"
	fi

	hostifs=("$LAB_N1_P1_HOSTIF" "$LAB_N1_P2_HOSTIF" "$LAB_N2_P1_HOSTIF" "$LAB_N2_P2_HOSTIF")
	if lab_down "$name" >"$logs/down-$cni.log" 2>&1; then
		ok "$cni: lab down"
	else
		fail "$cni: lab down"; sed 's/^/#   /' "$logs/down-$cni.log"
	fi
	check "$cni: nothing left after lab down (namespaces, links, files, processes)" \
		nothing_left "$name" "${hostifs[@]}" underlay cni0
done

# Robustness: a failed up cleans itself; a kept half-made lab is removed by down; up over an
# existing lab replaces it; down is idempotent.
name=topo-fail-$$
_LAB_UP+=("$name")
if AMBIT_LAB_FAULT=after-nodes "$LAB_SH" up "$name" --nodes 2 --pods 2 --cni routed >"$logs/fail.log" 2>&1; then
	fail "failed up exits non-zero"
else
	ok "failed up exits non-zero"
fi
SERVER_PIDS=()
check "failed up tears down what it made" nothing_left "$name"
LAB_KEEP_ON_FAIL=1 AMBIT_LAB_FAULT=after-nodes "$LAB_SH" up "$name" --nodes 2 --pods 2 --cni bridge \
	>"$logs/fail2.log" 2>&1 || true
check "down removes a half-made lab" "$LAB_SH" down "$name"
check "nothing left after down of a half-made lab" nothing_left "$name"
check "down of an absent lab succeeds" "$LAB_SH" down "$name"
if lab_up "$name" --nodes 1 --pods 1 --cni routed >"$logs/re1.log" 2>&1 &&
	pod_spawn "$name" n1-p1 "$logs/re-srv.log" "$TCPKIT" serve --port 8080 --mode echo &&
	SERVER_PIDS=("$SPAWNED_PID") &&
	lab_up "$name" --nodes 2 --pods 1 --cni bridge >"$logs/re2.log" 2>&1 &&
	[ "$LAB_NODES" = 2 ] && [ "$LAB_CNI" = bridge ] && ! kill -0 "${SERVER_PIDS[0]}" 2>/dev/null; then
	ok "up over an existing lab replaces it (and stops its processes)"
else
	fail "up over an existing lab replaces it"; sed 's/^/#   /' "$logs/re1.log" "$logs/re2.log"
fi
lab_down "$name" >/dev/null 2>&1 || true
check "nothing left after the last down" nothing_left "$name"

lab_result
