#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# L4 capture and proxy, end to end in the lab with real agents and real BPF: pod to pod across
# nodes, to a service VIP, to and from pods outside the mesh, half-close, 1 GiB checked byte for
# byte, 1,000 concurrent connections, no fd leak after 10,000 connections, fail-closed restart,
# and nothing left after `ambitd --cleanup`. The core cases run for both CNI styles.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - l4 (needs root)"; exit 1; }
logs=$(mktemp -d /tmp/ambit-l4.XXXXXX)

# client NAME FROM TO ARGS...: tcpkit client in pod FROM; output in $out.
client() {
	local name=$1 from=$2 to=$3; shift 3
	out=$(pod_exec "$name" "$from" "$TCPKIT" client --to "$to" --timeout 60 "$@" 2>&1)
}

# metric NAME K REPORTER: sum of istio_tcp_connections_opened_total{reporter=REPORTER} on node K.
opened() {
	local name=$1 k=$2 rep=$3
	pod_exec "$name" "n$k" curl -fsS -m 5 "http://$(lab_node_ip "$k"):15020/metrics" |
		awk -v r="reporter=\"$rep\"" '/^istio_tcp_connections_opened_total/ && index($0, r) { s += $NF } END { print s + 0 }'
}

admin() { # NAME K PATH: the agent's admin API answer
	pod_exec "$1" "n$2" curl -fsS -m 5 "http://127.0.0.1:15000$3"
}

idle() { # NAME K: waits (10 s at most) until node K's agent has no connection open
	local i
	for i in $(seq 100); do
		[ "$(admin "$1" "$2" /stats | jq .connections)" = 0 ] && return 0
		sleep 0.1
	done
	echo "agent on node $2 still has $(admin "$1" "$2" /stats | jq .connections) connections"
	return 1
}

serve() { # NAME POD PORT MODE [ARGS]: starts a tcpkit server that prints its peers
	local name=$1 pod=$2 port=$3 mode=$4; shift 4
	pod_spawn "$name" "$pod" "$logs/$name-$pod-$port.log" "$TCPKIT" serve --port "$port" \
		--mode "$mode" --peers "$@"
	wait_port "$name" "$pod" "$port"
}

peers_seen() { # NAME POD PORT: how many connections that server accepted
	grep -c '^peer ' "$logs/$1-$2-$3.log" 2>/dev/null || true
}

scenario() { # CNI FULL
	local cni=$1 full=$2 name=l4-$1
	if ! lab_up "$name" --nodes 2 --pods 2 --cni "$cni" --enroll p1 >"$logs/up-$cni.log" 2>&1; then
		fail "$cni: lab up"; sed 's/^/#   /' "$logs/up-$cni.log" | tail -20; return
	fi
	local p11 p12 p21 p22
	p11=$(lab_pod_ip 1 1); p12=$(lab_pod_ip 1 2); p21=$(lab_pod_ip 2 1); p22=$(lab_pod_ip 2 2)
	serve "$name" n2-p1 8080 verify
	serve "$name" n2-p1 9000 echo
	serve "$name" n2-p1 7000 halfclose --reply 65536
	serve "$name" n2-p2 8080 verify
	serve "$name" n1-p2 8080 verify
	if ! lab_start_agent "$name" 1 || ! lab_start_agent "$name" 2; then
		fail "$cni: agents start and become ready"; return
	fi
	ok "$cni: agents start and become ready"

	local o1 i2
	o1=$(opened "$name" 1 source); i2=$(opened "$name" 2 destination)
	check "$cni: enrolled pod to enrolled pod across nodes" \
		client "$name" n1-p1 "$p21:8080" --mode verify --bytes 4M
	check "$cni: ... captured on the source node (outbound)" test "$(opened "$name" 1 source)" -gt "$o1"
	check "$cni: ... captured on the destination node (inbound)" test "$(opened "$name" 2 destination)" -gt "$i2"

	local before
	before=$(peers_seen "$name" n2-p1 8080)
	check "$cni: pod to service VIP reaches its endpoint (80 -> 8080)" \
		client "$name" n1-p1 "$LAB_SVC_SOLO_VIP:80" --mode verify --bytes 1M
	check "$cni: ... the endpoint got the connection" test "$(peers_seen "$name" n2-p1 8080)" -gt "$before"

	check "$cni: enrolled pod to a pod outside the mesh" \
		client "$name" n1-p1 "$p22:8080" --mode verify --bytes 1M
	check "$cni: enrolled pod to a local pod outside the mesh" \
		client "$name" n1-p1 "$p12:8080" --mode verify --bytes 1M

	o1=$(opened "$name" 1 source)
	local i1
	i1=$(opened "$name" 1 destination)
	check "$cni: traffic between pods outside the mesh is untouched" \
		client "$name" n1-p2 "$p22:8080" --mode verify --bytes 1M
	check "$cni: ... and not captured" test "$(opened "$name" 1 source)" -eq "$o1" -a "$(opened "$name" 1 destination)" -eq "$i1"

	i2=$(opened "$name" 2 destination)
	check "$cni: pod outside the mesh to an enrolled pod (inbound capture)" \
		client "$name" n2-p2 "$p21:8080" --mode verify --bytes 1M
	check "$cni: ... captured on 15006" test "$(opened "$name" 2 destination)" -gt "$i2"
	check "$cni: ... with the client's source IP preserved" \
		grep -q "^peer $p22:" "$logs/$name-n2-p1-8080.log"

	check "$cni: half-close: request, FIN, then the full reply" \
		client "$name" n1-p1 "$p21:7000" --mode halfclose --bytes 1M --reply 65536

	if [ "$full" != yes ]; then
		lab_down "$name" >/dev/null 2>&1 || true
		return 0
	fi

	check "$cni: 1 GiB checked byte for byte" \
		client "$name" n1-p1 "$p21:8080" --mode verify --bytes 1G
	check "$cni: 1,000 concurrent connections" \
		client "$name" n1-p1 "$p21:9000" --mode echo --conns 1000 --parallel 1000 --msg-size 1024
	local pid fds0 fds1
	pid=$(cat "$LAB_ROOT/$name/agent1.pid")
	idle "$name" 1 && fds0=$(ls "/proc/$pid/fd" | wc -l)
	check "$cni: 10,000 connections, 50 at a time" \
		client "$name" n1-p1 "$p21:9000" --mode echo --conns 10000 --parallel 50 --msg-size 64
	check "$cni: ... every connection closed in the agent afterwards" idle "$name" 1
	fds1=$(ls "/proc/$pid/fd" | wc -l)
	check "$cni: ... no fd left behind (idle before: $fds0, idle after: $fds1)" test "$fds1" -le "$((fds0 + 2))"

	# Restart: while the agent is down, capture stays and fails closed.
	lab_stop_agent "$name" 1
	check "$cni: agent exits 0 on SIGTERM" test "$AGENT_EXIT" = 0
	before=$(peers_seen "$name" n2-p1 8080)
	if client "$name" n1-p1 "$p21:8080" --mode verify --bytes 1K --timeout 3; then
		fail "$cni: agent down: enrolled pod traffic fails closed"
	else
		ok "$cni: agent down: enrolled pod traffic fails closed"
	fi
	check "$cni: ... and never bypasses the agent" test "$(peers_seen "$name" n2-p1 8080)" -eq "$before"
	if lab_start_agent "$name" 1; then
		check "$cni: after restart, capture works again" \
			client "$name" n1-p1 "$p21:8080" --mode verify --bytes 1M
	else
		fail "$cni: agent restarts"
	fi

	# Uninstall.
	lab_stop_agent "$name" 1
	check "$cni: ambitd --cleanup" pod_exec "$name" n1 "$AMBIT_BUILD/ambitd" --cleanup \
		--config "$LAB_ROOT/$name/node1.json"
	local hostif
	hostif=$(lab_var N1_P1_HOSTIF)
	check "$cni: ... no tc filter left on the pod's interface" \
		sh -c "test -z \"\$(nsenter --net=/run/netns/$name-n1 tc filter show dev $hostif ingress; nsenter --net=/run/netns/$name-n1 tc filter show dev $hostif egress)\""
	check "$cni: ... no policy rule left" \
		sh -c "! nsenter --net=/run/netns/$name-n1 ip rule | grep -q 'lookup 133'"
	check "$cni: ... no pinned objects left" test ! -e "$(lab_var N1_PIN_DIR)"
	check "$cni: ... pod traffic flows directly again" \
		client "$name" n1-p1 "$p21:8080" --mode verify --bytes 1M
	lab_stop_agent "$name" 2
	pod_exec "$name" n2 "$AMBIT_BUILD/ambitd" --cleanup --config "$LAB_ROOT/$name/node2.json" >/dev/null 2>&1 || true
	lab_down "$name" >/dev/null 2>&1 || true
}

scenario routed yes
scenario bridge no
lab_result
