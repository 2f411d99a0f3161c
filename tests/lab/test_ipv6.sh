#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# IPv6 capture end to end in a dual-stack lab (lab.sh --ipv6), real agents and real BPF, both CNI
# styles: an enrolled pod reaches an enrolled pod on the other node over IPv6 through HBONE
# (checked byte for byte; the source keeps its IPv6 address; both agents' spans and metrics
# show it), a pod outside the mesh over IPv6 in plaintext, and is reached over IPv6 through
# inbound capture; IPv4 works as before in the same lab; pods outside the mesh are untouched;
# capture fails closed for IPv6 while the agent is down; `ambitd --cleanup` leaves no IPv6 rule
# or route behind.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - ipv6 (needs root)"; exit 1; }
lab_tmpdir logs ipv6
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$LAB_TOP/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# v6_client NAME FROM IP6 PORT ARGS...: tcpkit client in pod FROM to [IP6]:PORT.
v6_client() {
	local name=$1 from=$2 ip=$3 port=$4 out; shift 4
	out=$(pod_exec "$name" "$from" "$TCPKIT" client --to "[$ip]:$port" --timeout 30 "$@" 2>&1) ||
		{ printf '%s\n' "$out"; return 1; }
}

# v6_serve NAME POD BIND PORT: a tcpkit verify server bound to BIND that logs its peers.
v6_serve() {
	local name=$1 pod=$2 bind=$3 port=$4
	pod_spawn "$name" "$pod" "$logs/$name-$pod-$port.log" "$TCPKIT" serve --bind "$bind" \
		--port "$port" --mode verify --peers
	wait_port "$name" "$pod" "$port"
}

# peer_seen NAME POD PORT PEER: the server there logged a connection from PEER (an address as
# tcpkit prints it: [IPv6]:PORT or IPv4:PORT).
peer_seen() { grep -qF "peer $4:" "$logs/$1-$2-$3.log"; }
# peers NAME POD PORT [PEER]: how many connections that server accepted (from PEER).
peers() { grep -cF "peer ${4:-}" "$logs/$1-$2-$3.log" 2>/dev/null || true; }

agent_api() { # NAME K PATH: node K's admin API answer
	pod_exec "$1" "n$2" curl -fsS -m 5 "http://127.0.0.1:15000$3"
}

# opened_total NAME K REPORTER: istio_tcp_connections_opened_total{reporter=...} on node K.
opened_total() { lab_metric "$1" "$2" istio_tcp_connections_opened_total "reporter=$3"; }

counter() { agent_api "$1" "$2" /bpf | jq -r ".counters.$3"; } # NAME K COUNTER

# span_with NAME K DIRECTION ADDR SECURITY: waits (LAB_WAIT_S at most) for node K's agent to
# hold a finished DIRECTION span whose server.address is ADDR and connection_security_policy
# SECURITY.
span_with() { lab_until _span_with "$@"; }
_span_with() {
	local q
	q='[.spans[] | select(.attributes.direction == $d and .attributes["server.address"] == $a
		and .attributes.connection_security_policy == $s)] | length'
	[ "$(agent_api "$1" "$2" /spans | jq --arg d "$3" --arg a "$4" --arg s "$5" "$q")" -gt 0 ] && return 0
	echo "no $3 span to $4 ($5) on node $2; spans:"
	agent_api "$1" "$2" /spans | jq -c '.spans[-5:][] | .attributes' | head -c 3000
	return 1
}

# v6_state NAME K: IPv6 capture state in node K's namespace, one line per item.
v6_state() {
	local ns=$1-n$2
	ip -n "$ns" -6 rule show | grep -w 'lookup 133' | sed 's/^/rule6: /'
	ip -n "$ns" -6 route show table all | grep -w 'table 133' | sed 's/^/route6: /'
	return 0
}

scenario() { # CNI
	local cni=$1 name=ipv6-$1
	if ! lab_up "$name" --nodes 2 --pods 2 --cni "$cni" --enroll p1 --ipv6 >"$logs/up-$cni.log" 2>&1; then
		fail "$cni: dual-stack lab up"; sed 's/^/#   /' "$logs/up-$cni.log" | tail -20; return
	fi
	local p11=$LAB_N1_P1_IP6 p12=$LAB_N1_P2_IP6 p21=$LAB_N2_P1_IP6 p22=$LAB_N2_P2_IP6
	local p21v4=$LAB_N2_P1_IP
	check "$cni: lab is dual stack (pods have IPv6 addresses, in workloads.json too)" \
		sh -c "[ -n '$p11' ] && [ -n '$p22' ] && jq -e --arg a '$p21' '[.workloads[].addresses[] | select(. == \$a)] | length == 1' '$LAB_WORKLOADS' >/dev/null"
	v6_serve "$name" n2-p1 "$p21" 8080
	v6_serve "$name" n2-p2 "$p22" 8080
	v6_serve "$name" n1-p2 "$p12" 8080
	v6_serve "$name" n2-p1 0.0.0.0 8090
	check "$cni: IPv6 between pods works before any agent" \
		v6_client "$name" n1-p1 "$p21" 8080 --mode verify --bytes 64K
	if ! lab_start_agent "$name" 1 || ! lab_start_agent "$name" 2; then
		fail "$cni: agents start and become ready"; return
	fi
	ok "$cni: agents start and become ready"

	local k bpf
	for k in 1 2; do
		bpf=$(agent_api "$name" "$k" /bpf)
		check "$cni: node $k: IPv6 rule and local route in place, IPv6 listeners in the sockmap" \
			jq -e '.rule.ipv6 == true and .listeners.outbound6 != null and .listeners.inbound6 != null' <<<"$bpf"
		check "$cni: node $k: the enrolled pod's interface carries its IPv6 address" \
			jq -e --arg a "$(lab_var "N${k}_P1_IP6")" '[.interfaces[] | select(.ip6 == $a)] | length == 1' <<<"$bpf"
		check "$cni: node $k: ip -6 rule fwmark ... lookup 133 and local ::/0 in table 133" \
			bash -c "ip -n $name-n$k -6 rule show | grep -q 'fwmark 0xa3b0000/0xffff0000 lookup 133' && ip -n $name-n$k -6 route show table 133 | grep -q '^local default dev lo'"
	done

	# Mesh over IPv6: n1-p1 -> n2-p1 through HBONE, :authority [IPv6]:port.
	local o1 i2 out6 in6 n
	o1=$(opened_total "$name" 1 source); i2=$(opened_total "$name" 2 destination)
	out6=$(counter "$name" 1 captured_outbound_ipv6); in6=$(counter "$name" 2 captured_inbound_ipv6)
	n=$(peers "$name" n2-p1 8080 "[$p11]:")
	check "$cni: enrolled pod to enrolled pod across nodes over IPv6 (4 MiB checked byte for byte)" \
		v6_client "$name" n1-p1 "$p21" 8080 --mode verify --bytes 4M
	check "$cni: ... captured on the source node (outbound, IPv6 listener)" \
		test "$(opened_total "$name" 1 source)" -gt "$o1" -a "$(counter "$name" 1 captured_outbound_ipv6)" -gt "$out6"
	check "$cni: ... and on the destination node through HBONE (inbound), not through capture" \
		test "$(opened_total "$name" 2 destination)" -gt "$i2" -a "$(counter "$name" 2 captured_inbound_ipv6)" -eq "$in6"
	check "$cni: ... the destination pod sees the client's IPv6 address" \
		test "$(peers "$name" n2-p1 8080 "[$p11]:")" -gt "$n"
	check "$cni: ... node 1 outbound span to [$p21], mutual TLS" \
		span_with "$name" 1 outbound "$p21" mutual_tls
	check "$cni: ... node 2 inbound span for [$p21], mutual TLS" \
		span_with "$name" 2 inbound "$p21" mutual_tls

	# Plaintext over IPv6 to a pod outside the mesh.
	o1=$(opened_total "$name" 1 source); i2=$(opened_total "$name" 2 destination)
	check "$cni: enrolled pod to a pod outside the mesh over IPv6 (1 MiB checked)" \
		v6_client "$name" n1-p1 "$p22" 8080 --mode verify --bytes 1M
	check "$cni: ... through the source agent in plaintext (no inbound on the destination)" \
		test "$(opened_total "$name" 1 source)" -gt "$o1" -a "$(opened_total "$name" 2 destination)" -eq "$i2"
	check "$cni: ... node 1 outbound span to [$p22], no mTLS" \
		span_with "$name" 1 outbound "$p22" unknown

	# Inbound capture over IPv6: a pod outside the mesh into the enrolled pod.
	i2=$(opened_total "$name" 2 destination); in6=$(counter "$name" 2 captured_inbound_ipv6)
	check "$cni: pod outside the mesh to an enrolled pod over IPv6 (inbound capture)" \
		v6_client "$name" n2-p2 "$p21" 8080 --mode verify --bytes 1M
	check "$cni: ... captured on [::1]:15006" \
		test "$(opened_total "$name" 2 destination)" -gt "$i2" -a "$(counter "$name" 2 captured_inbound_ipv6)" -gt "$in6"
	check "$cni: ... with the client's IPv6 source preserved" peer_seen "$name" n2-p1 8080 "[$p22]"

	# Untouched: IPv6 between pods outside the mesh.
	local o1b i1b
	o1b=$(opened_total "$name" 1 source); i1b=$(opened_total "$name" 1 destination)
	check "$cni: IPv6 between pods outside the mesh flows" \
		v6_client "$name" n1-p2 "$p22" 8080 --mode verify --bytes 1M
	check "$cni: ... and is not captured" \
		test "$(opened_total "$name" 1 source)" -eq "$o1b" -a "$(opened_total "$name" 1 destination)" -eq "$i1b"

	# IPv4 in the same lab, unchanged.
	o1=$(opened_total "$name" 1 source); i2=$(opened_total "$name" 2 destination)
	check "$cni: IPv4 in the same lab: enrolled pod to enrolled pod (4 MiB checked)" \
		pod_exec "$name" n1-p1 "$TCPKIT" client --to "$p21v4:8090" --mode verify --bytes 4M --timeout 30
	check "$cni: ... through both agents" \
		test "$(opened_total "$name" 1 source)" -gt "$o1" -a "$(opened_total "$name" 2 destination)" -gt "$i2"
	check "$cni: ... the destination pod sees the client's IPv4 address" \
		peer_seen "$name" n2-p1 8090 "$LAB_N1_P1_IP"

	# Agent down: IPv6 fails closed too.
	lab_stop_agent "$name" 1
	check "$cni: node 1: agent exits 0 on SIGTERM" test "$AGENT_EXIT" = 0
	n=$(peers "$name" n2-p2 8080)
	if v6_client "$name" n1-p1 "$p22" 8080 --mode verify --bytes 1K --timeout 3 >/dev/null; then
		fail "$cni: agent down: enrolled pod's IPv6 traffic fails closed"
	else
		ok "$cni: agent down: enrolled pod's IPv6 traffic fails closed"
	fi
	check "$cni: ... and never bypasses the agent" test "$(peers "$name" n2-p2 8080)" -eq "$n"

	# Uninstall: no IPv6 rule or route left, and IPv6 flows directly again.
	lab_stop_agent "$name" 2
	check "$cni: node 2: agent exits 0 on SIGTERM" test "$AGENT_EXIT" = 0
	for k in 1 2; do
		check "$cni: node $k: IPv6 rule and route still in place with the agent stopped" \
			sh -c "[ \$(printf '%s\n' \"\$1\" | grep -c .) -ge 2 ]" _ "$(v6_state "$name" "$k")"
		check "$cni: node $k: ambitd --cleanup" pod_exec "$name" "n$k" "$AMBIT_BUILD/ambitd" \
			--cleanup --config "$LAB_ROOT/$name/node$k.json"
		check "$cni: node $k: ... no IPv6 rule or route left" test -z "$(v6_state "$name" "$k")"
		check "$cni: node $k: ... nor an IPv4 one" \
			sh -c "! ip -n $name-n$k rule show | grep -qw 'lookup 133' && [ -z \"\$(ip -n $name-n$k route show table 133 2>/dev/null)\" ]"
	done
	n=$(peers "$name" n2-p1 8080 "[$p11]:")
	check "$cni: after cleanup, IPv6 between the formerly enrolled pods flows directly" \
		v6_client "$name" n1-p1 "$p21" 8080 --mode verify --bytes 1M
	check "$cni: ... from the client's address" test "$(peers "$name" n2-p1 8080 "[$p11]:")" -gt "$n"
	lab_down "$name" >/dev/null 2>&1 || fail "$cni: lab down"
}

for cni in routed bridge; do
	scenario "$cni"
done
lab_result
