#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# L4 capture and proxy, end to end in the lab with real agents and real BPF, for both CNI styles:
# pod to pod across nodes, to a service VIP, to and from pods outside the mesh; on each of the
# three proxied paths (mesh over HBONE, enrolled pod to a pod outside the mesh in plaintext, pod
# outside the mesh into an enrolled pod through inbound capture) half-close, resets both ways,
# 1 GiB checked byte for byte and 1,000 concurrent connections; the four istio_tcp_* metrics;
# no fd or memory leak after 10,000 connections; fail-closed restart; nothing left after
# `ambitd --cleanup`.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - l4 (needs root)"; exit 1; }
lab_tmpdir logs l4
# sanitizer builds: as tests/run.sh sets them, for a direct run too (a leak makes exit status 23)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$LAB_TOP/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
RSS_SLACK_KB=$((64 * 1024)) # RSS growth allowed over the 10,000 connections
RESET_AT=65536              # the reset servers echo this much, then reset on the next byte
HALFCLOSE_REPLY=65536       # what the half-close servers answer

# client NAME FROM TO ARGS...: tcpkit client in pod FROM; output in $out, shown on failure.
# Its bound is generous: 1 GiB through two ASan agents took more than 60 s with a fifth of a core.
client() {
	local name=$1 from=$2 to=$3; shift 3
	out=$(pod_exec "$name" "$from" "$TCPKIT" client --to "$to" --timeout 300 "$@" 2>&1) ||
		{ printf '%s\n' "$out"; return 1; }
}

# concurrent NAME FROM TO: 1,000 echo connections, all open at once before any closes.
concurrent() {
	client "$1" "$2" "$3" --mode echo --conns 1000 --parallel 1000 --msg-size 1024 &&
		{ grep -q '^max_open=1000$' <<<"$out" || { printf '%s\n' "$out"; return 1; }; }
}

# metric NAME K METRIC REPORTER: sum of METRIC{reporter=REPORTER} over its series on node K.
metric() { lab_metric "$1" "$2" "$3" "reporter=$4"; } # NAME K METRIC REPORTER
opened() { metric "$1" "$2" istio_tcp_connections_opened_total "$3"; } # NAME K REPORTER

# tcp_metrics NAME K REPORTER: "opened closed received sent" on node K for REPORTER.
tcp_metrics() {
	local m
	for m in connections_opened connections_closed received_bytes sent_bytes; do
		metric "$1" "$2" "istio_tcp_${m}_total" "$3"
	done | paste -sd' '
}

admin() { # NAME K PATH: the agent's admin API answer
	pod_exec "$1" "n$2" curl -fsS -m 5 "http://127.0.0.1:15000$3"
}

idle() { # NAME K: waits (LAB_WAIT_S at most) until node K's agent has no connection open
	local end=$((SECONDS + LAB_WAIT_S))
	while [ "$SECONDS" -le "$end" ]; do
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

# ended NAME POD PORT N: waits (LAB_WAIT_S at most) until the reset server there has logged the
# end of more than N connections, then prints how the last one ended.
ended() {
	local f="$logs/$1-$2-$3.log" end=$((SECONDS + LAB_WAIT_S))
	while [ "$SECONDS" -le "$end" ]; do
		if [ "$(grep -c '^end ' "$f" || true)" -gt "$4" ]; then
			grep '^end ' "$f" | tail -n 1 | sed 's/.* how=//'
			return 0
		fi
		sleep 0.1
	done
	echo none
}

# metrics_check NAME LABEL FROM TO REQ K:REPORTER...: one half-close transfer of REQ bytes from
# pod FROM to the half-close server at TO and its HALFCLOSE_REPLY bytes back; on each node K the
# REPORTER series must count exactly one connection opened and closed, REQ bytes received (the
# request, from the client) and HALFCLOSE_REPLY bytes sent (the response).
metrics_check() {
	local name=$1 label=$2 from=$3 to=$4 req=$5 resp=$HALFCLOSE_REPLY; shift 5
	local kr k r before=() after want
	for kr in "$@"; do
		k=${kr%%:*}
		idle "$name" "$k" >/dev/null || true
		before+=("$(tcp_metrics "$name" "$k" "${kr#*:}")")
	done
	check "$label: half-close transfer for the metrics ($req bytes out, $resp back)" \
		client "$name" "$from" "$to" --mode halfclose --bytes "$req" --reply "$resp"
	local i=0
	for kr in "$@"; do
		k=${kr%%:*} r=${kr#*:}
		idle "$name" "$k" >/dev/null || true
		after=$(tcp_metrics "$name" "$k" "$r")
		want=$(echo "${before[$i]} $req $resp" | awk '{ print $1 + 1, $2 + 1, $3 + $5, $4 + $6 }')
		check "$label: ... node $k reporter=$r: opened +1, closed +1, received +$req, sent +$resp" \
			sh -c "[ '$after' = '$want' ] || { echo 'opened closed received sent: before ${before[$i]}, after $after, want $want'; exit 1; }"
		i=$((i + 1))
	done
}

# reset_checks NAME LABEL FROM IP POD: resets both ways from pod FROM to the reset server of POD
# at IP:6000.
reset_checks() {
	local name=$1 label=$2 from=$3 ip=$4 pod=$5 n how
	n=$(grep -c '^end ' "$logs/$name-$pod-6000.log" || true)
	check "$label: the server's reset reaches the client (ECONNRESET, not EOF)" \
		client "$name" "$from" "$ip:6000" --mode reset --bytes "$RESET_AT"
	how=$(ended "$name" "$pod" 6000 "$n")
	check "$label: ... and the server did reset it" test "$how" = server-reset
	n=$(grep -c '^end ' "$logs/$name-$pod-6000.log" || true)
	check "$label: client resets after its echo" \
		client "$name" "$from" "$ip:6000" --mode abort --bytes 4K
	how=$(ended "$name" "$pod" 6000 "$n")
	check "$label: ... the server sees a reset, not a FIN (it saw: $how)" test "$how" = reset
}

# path_checks NAME LABEL FROM IP POD: half-close, resets, 1 GiB checked byte for byte and 1,000
# concurrent connections through one proxied path, from pod FROM to the servers of POD at IP.
path_checks() {
	local name=$1 label=$2 from=$3 ip=$4 pod=$5
	check "$label: half-close: request, FIN, then the full reply" \
		client "$name" "$from" "$ip:7000" --mode halfclose --bytes 1M --reply "$HALFCLOSE_REPLY"
	reset_checks "$name" "$label" "$from" "$ip" "$pod"
	check "$label: 1 GiB checked byte for byte" \
		client "$name" "$from" "$ip:8080" --mode verify --bytes 1G
	[ "$CHECK_RC" = 0 ] || diagnose "$name"
	check "$label: 1,000 concurrent connections (all open at once)" concurrent "$name" "$from" "$ip:9000"
}

# diagnose NAME: after a failed transfer, what each agent still holds (shown as comments).
diagnose() {
	local k
	for k in 1 2; do
		note "node $k agent connections: $(admin "$1" "$k" /connections | jq -c '.connections[] | del(.source, .destination)' 2>&1 | head -c 2000)"
		pod_exec "$1" "n$k" ss -tnoi state established 2>&1 | grep -v '^Recv-Q' | head -n 8 | sed "s/^/# node $k: /"
	done
}

agent_fds() { ls "/proc/$(cat "$LAB_ROOT/$1/agent$2.pid")/fd" | wc -l; } # NAME K
agent_rss() { admin "$1" "$2" /stats | jq .rss_kb; }                      # NAME K

# leak_checks CNI NAME IP: 10,000 connections through both agents; fds back to the idle
# baseline and RSS within RSS_SLACK_KB of it on both nodes.
leak_checks() {
	local cni=$1 name=$2 ip=$3 k fds0=() rss0=() fds1 rss1
	for k in 1 2; do
		idle "$name" "$k" >/dev/null || true
		fds0[k]=$(agent_fds "$name" "$k")
		rss0[k]=$(agent_rss "$name" "$k")
	done
	check "$cni: 10,000 connections, 50 at a time" \
		client "$name" n1-p1 "$ip:9000" --mode echo --conns 10000 --parallel 50 --msg-size 64
	for k in 1 2; do
		check "$cni: ... node $k: every connection closed in the agent afterwards" idle "$name" "$k"
		fds1=$(agent_fds "$name" "$k")
		rss1=$(agent_rss "$name" "$k")
		check "$cni: ... node $k: no fd left behind (idle before: ${fds0[$k]}, after: $fds1)" \
			test "$fds1" -le "$((fds0[k] + 2))"
		check "$cni: ... node $k: RSS within 64 MiB of before (${rss0[$k]} kB, after: $rss1 kB)" \
			test "$rss1" -le "$((rss0[k] + RSS_SLACK_KB))"
	done
}

# cleanup_checks CNI NAME K: node K's agent (stopped) left capture in place; ambitd --cleanup
# removes all of it.
cleanup_checks() {
	local cni=$1 name=$2 k=$3 st
	st=$(capture_state "$name" "$k" "n$k-p1")
	for what in tc qdisc rule route pin sysctl $([ "$cni" = bridge ] && echo fdb); do
		check "$cni: node $k: capture in place before cleanup: $what" grep -q "^$what" <<<"$st"
	done
	check "$cni: node $k: ambitd --cleanup" pod_exec "$name" "n$k" "$AMBIT_BUILD/ambitd" --cleanup \
		--config "$LAB_ROOT/$name/node$k.json"
	st=$(capture_state "$name" "$k" "n$k-p1")
	check "$cni: node $k: ... nothing left (tc filters, qdiscs, rule, routes, pins, FDB, sysctl)" \
		test -z "$st"
	[ -z "$st" ] || printf '%s\n' "$st" | head -n 20 | sed 's/^/#   /'
}

scenario() { # CNI
	local cni=$1 name=l4-$1-$$ f	# (unique: other runs of this test may be up at the same time)
	if ! lab_up "$name" --nodes 2 --pods 2 --cni "$cni" --enroll p1 >"$logs/up-$cni.log" 2>&1; then
		fail "$cni: lab up"; sed 's/^/#   /' "$logs/up-$cni.log" | tail -20; return
	fi
	local p12 p21 p22 pod
	p12=$(lab_pod_ip 1 2); p21=$(lab_pod_ip 2 1); p22=$(lab_pod_ip 2 2)
	for pod in n2-p1 n2-p2; do
		serve "$name" "$pod" 8080 verify
		serve "$name" "$pod" 9000 echo
		serve "$name" "$pod" 7000 halfclose --reply "$HALFCLOSE_REPLY"
		serve "$name" "$pod" 6000 reset --bytes "$RESET_AT"
	done
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

	o1=$(opened "$name" 1 source); i2=$(opened "$name" 2 destination)
	check "$cni: enrolled pod to a pod outside the mesh" \
		client "$name" n1-p1 "$p22:8080" --mode verify --bytes 1M
	check "$cni: ... through the source node's agent, in plaintext (no inbound on the destination)" \
		test "$(opened "$name" 1 source)" -gt "$o1" -a "$(opened "$name" 2 destination)" -eq "$i2"
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

	# The four istio_tcp_* metrics on each proxied path, with the reporter of each side.
	metrics_check "$name" "$cni: metrics, mesh" n1-p1 "$p21:7000" 1048576 1:source 2:destination
	metrics_check "$name" "$cni: metrics, plaintext out" n1-p1 "$p22:7000" 524288 1:source
	metrics_check "$name" "$cni: metrics, plaintext in" n1-p2 "$p21:7000" 262144 2:destination

	path_checks "$name" "$cni: mesh" n1-p1 "$p21" n2-p1
	path_checks "$name" "$cni: plaintext out" n1-p1 "$p22" n2-p2
	path_checks "$name" "$cni: plaintext in" n1-p2 "$p21" n2-p1

	leak_checks "$cni" "$name" "$p21"

	# Restart: while the agent is down, capture stays and fails closed.
	lab_stop_agent "$name" 1
	check "$cni: node 1: agent exits 0 on SIGTERM (no leak reported)" test "$AGENT_EXIT" = 0
	before=$(peers_seen "$name" n2-p1 8080)
	if client "$name" n1-p1 "$p21:8080" --mode verify --bytes 1K --timeout 3 >/dev/null; then
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

	# Uninstall, node by node.
	lab_stop_agent "$name" 1
	check "$cni: node 1: restarted agent exits 0 on SIGTERM" test "$AGENT_EXIT" = 0
	cleanup_checks "$cni" "$name" 1
	check "$cni: ... pod traffic flows directly again" \
		client "$name" n1-p1 "$p21:8080" --mode verify --bytes 1M
	lab_stop_agent "$name" 2
	check "$cni: node 2: agent exits 0 on SIGTERM (no leak reported)" test "$AGENT_EXIT" = 0
	cleanup_checks "$cni" "$name" 2
	check "$cni: ... traffic into the formerly enrolled pod flows directly" \
		client "$name" n2-p2 "$p21:8080" --mode verify --bytes 1M
	for f in "$LAB_ROOT/$name"/agent*.log; do cp "$f" "$logs/$name-${f##*/}" 2>/dev/null || true; done
	lab_down "$name" >/dev/null 2>&1 || true
}

scenario routed
scenario bridge
note "logs in $logs"
lab_result
