#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench/run.sh: `make bench`. Brings up a two-node lab and measures four paths from a client pod
# on node 1 to a server pod on node 2, side by side in one run: direct (no agent), stunnel
# (client-mode stunnel on node 1, server-mode on node 2, mutual TLS 1.3, P-256 certificates from
# the lab CA), ambit (both ambitd, HBONE to the node, hbone.dial "node") and ambit_pod (the same
# with hbone.dial "pod": HBONE to the pod's IP:15008, ztunnel's form); and HTTP/2 and HTTP/1.1
# request rates and latencies (h2load) direct and through ambit-waypoint (path waypoint: both
# agents and the waypoint, a service behind it). Prints a table and writes
# bench/results/<date>.json and .md. Reports figures, never judges them: the exit status is
# non-zero only when a path does not work at all. See bench/README.md.
set -euo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP"
# Always the plain build: sanitizer builds are not benchmarked (BENCH_BUILD to override).
export AMBIT_BUILD=${BENCH_BUILD:-$TOP/build}
export TCPKIT=${TCPKIT:-$AMBIT_BUILD/tests/tools/tcpkit}
# shellcheck source-path=SCRIPTDIR/.. source=tests/lab/lib.sh
. "$TOP/tests/lab/lib.sh"

LAB=${BENCH_LAB:-bench}
OUT=${BENCH_OUT:-$TOP/bench/results}
PATHS=${BENCH_PATHS:-direct stunnel ambit ambit_pod waypoint}
DUR=${BENCH_DURATION:-5}          # seconds per iperf3 run
RR_COUNT=${BENCH_RR_COUNT:-10000} # round trips per latency run
CRR_COUNT=${BENCH_CRR_COUNT:-3000} # connections per connection-rate run
CRR_PAR=${BENCH_CRR_PARALLEL:-16} # concurrency of the second connection-rate run
IDLE=${BENCH_IDLE:-1000 10000}    # idle connection counts for the memory figures
IDLE_TIMEOUT=${BENCH_IDLE_TIMEOUT:-90}
POLICIES=${BENCH_POLICIES:-1000}  # AuthorizationPolicies in force for the policy row (0: no row)
SPAN_ROUNDS=${BENCH_SPAN_ROUNDS:-8} # pairs of HTTP runs with request spans on and off (same agents)
SPAN_WARMUP=${BENCH_SPAN_WARMUP:-5000} # untimed HTTP requests before the first pair
SPAN_PIN=${BENCH_SPAN_PIN:-1}     # 1: pin those runs' processes to CPUs (taskset), 0: do not
PROFILE=${BENCH_PROFILE:-auto}    # auto: profile the agents when a target is missed; 1; 0
PROFILE_ALL=${BENCH_PROFILE_ALL:-0} # 1: profile the whole machine, not only the agents
SPAN_PERF=${BENCH_SPAN_PERF:-0}   # 1: count each span run's syscalls, switches, CPU per request per agent; 2: and profile it
HTTP_REQS=${BENCH_HTTP_REQUESTS:-20000} # requests per h2load run (HTTP/2 and HTTP/1.1 rows)
HTTP_CONNS=${BENCH_HTTP_CONNS:-4}      # HTTP/2: connections, each with HTTP_STREAMS streams in flight;
HTTP_STREAMS=${BENCH_HTTP_STREAMS:-8}  # HTTP/1.1: CONNS x STREAMS connections, one request each
HTTP_BODY=${BENCH_HTTP_BODY:-64}       # bytes of each answer (GET /bytes/N)
DATE=$(date +%F)

IPERF_PORT=5201 ECHO_PORT=9000 HTTP_PORT=9080 # servers in the server pod
H2_PORT=8081 H1_PORT=8082                  # tests/node/h2_server.js in the server pod (HTTP load)
WP_SVC_VIP=10.96.0.40                      # service h2b behind the waypoint: port 80 h2c, 81 http
ST_CLI_IPERF=35201 ST_CLI_ECHO=39000       # stunnel client-mode listeners on node 1
ST_SRV_IPERF=45201 ST_SRV_ECHO=49000       # stunnel server-mode listeners on node 2

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

WORK=$(mktemp -d /tmp/ambit-bench.XXXXXX)
FIG=$WORK/figures.tsv # "path<TAB>key.path<TAB>value" lines, turned into JSON at the end
: >"$FIG"
LAB_IS_UP=""
T_START=$SECONDS

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	if [ -n "$LAB_IS_UP" ]; then
		say "tearing down lab $LAB"
		LAB_QUIET=1 "$LAB_SH" down "$LAB" >/dev/null 2>&1 || say "lab down $LAB failed: run $LAB_SH down $LAB"
	fi
	if [ "$rc" -ne 0 ] || [ -n "${BENCH_KEEP:-}" ]; then
		say "logs kept in $WORK"
	else
		rm -rf -- "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

put() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$FIG"; }   # PATH KEY VALUE
kv() { sed -n "s/^$1=//p" "$2" | tail -n1; }                # KEY FILE: tcpkit key=value output
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; } # PID: utime+stime
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fdiv() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "null"; else printf "%.6g\n", a / b }'; }
HZ=$(getconf CLK_TCK)

# ---------------- preflight ----------------

[ "$(id -u)" -eq 0 ] || die "must run as root (the lab creates network namespaces)"
for t in iperf3 stunnel openssl jq python3 nsenter ss curl awk; do
	command -v "$t" >/dev/null || die "'$t' not found (see mk/packages.txt; make deps)"
done
[ -x "$TCPKIT" ] || die "$TCPKIT not built (make $TCPKIT)"
PY=$(command -v python3)
# Idle connections need a descriptor or two each in the proxies: use the whole hard limit
# (raising the hard limit needs CAP_SYS_RESOURCE, which containers often lack).
ulimit -Sn "$(ulimit -Hn)"

HTTP_SKIP="" # non-empty: why the HTTP/2 and HTTP/1.1 load rows cannot run
for t in h2load node; do
	command -v "$t" >/dev/null || HTTP_SKIP="'$t' not found (nghttp2-client, nodejs: mk/packages.txt)"
done
case " $PATHS " in *" waypoint "*) WANT_WAYPOINT=1 ;; *) WANT_WAYPOINT="" ;; esac
[ -n "$WANT_WAYPOINT" ] || HTTP_SKIP=${HTTP_SKIP:-"the waypoint path is not in BENCH_PATHS"}
AMBIT_SKIP="" # non-empty: why the ambit path cannot run
AMBITD_SHA=""
if [ ! -x "$AMBIT_BUILD/ambitd" ]; then
	AMBIT_SKIP="$AMBIT_BUILD/ambitd is not built (make)"
elif ldd "$AMBIT_BUILD/ambitd" 2>/dev/null | grep -q -e libasan -e libubsan; then
	die "$AMBIT_BUILD/ambitd is a sanitizer build: benchmark the plain build (make, not make test)"
else
	# The agents (and the lab's CA, which signs their certificates; ambitctl, which reads their
	# tracing settings) run copies taken now: a
	# rebuild during the run cannot change what is measured, and perf still finds the symbols.
	mkdir -p "$WORK/build"
	cp "$AMBIT_BUILD/ambitd" "$AMBIT_BUILD/ambit-ca" "$AMBIT_BUILD/ambit-waypoint" "$AMBIT_BUILD/ambitctl" \
		"$WORK/build/" ||
		die "copying the binaries from $AMBIT_BUILD (make)"
	AMBIT_BUILD=$WORK/build
	AMBITD_SHA=$(sha256sum "$AMBIT_BUILD/ambitd" | cut -c1-16)
fi

# ---------------- lab ----------------

say "lab $LAB: 2 nodes x 2 pods, routed CNI, client n1-p1 and server n2-p1 enrolled"
LAB_IS_UP=1
"$LAB_SH" up "$LAB" --nodes 2 --pods 2 --cni routed --enroll n1-p1,n2-p1 ${WANT_WAYPOINT:+--waypoint} \
	>"$WORK/lab-up.log" 2>&1 || { cat "$WORK/lab-up.log" >&2; die "lab up failed"; }
lab_env "$LAB"
if [ -n "$WANT_WAYPOINT" ]; then
	# The waypoint serves one service of its own, h2b (the server pod only): app-1 does not name
	# it, so the other paths' pod-to-pod traffic stays as it is without a waypoint.
	jq --arg v "$WP_SVC_VIP" --argjson h2 "$H2_PORT" --argjson h1 "$H1_PORT" '
		.services |= map(if .name == "app-1" then .waypoint = null else . end) |
		.services += [{name: "h2b", namespace: "default", addresses: [$v],
			selector: {app: "app-1", "lab.ambit.io/node": "n2"},
			ports: [{port: 80, target_port: $h2, name: "h2", app_protocol: "kubernetes.io/h2c"},
				{port: 81, target_port: $h1, name: "http"}],
			waypoint: {name: "waypoint", namespace: "default"}}]' \
		"$LAB_WORKLOADS" >"$WORK/workloads.json" && cp "$WORK/workloads.json" "$LAB_WORKLOADS"
fi
# The lab's nodes use 10000-65000 for ephemeral ports, which holds the agent's ports: a stunnel
# connection from node 2 can leave 15008 in TIME_WAIT and keep ambitd from listening. Reserve them.
for k in 1 2; do
	pod_exec "$LAB" "n$k" sysctl -qw net.ipv4.ip_local_reserved_ports=15000-15021
done
CLI=n1-p1 SRV=n2-p1
SRV_IP=$(lab_pod_ip 2 1)
N1_IP=$(lab_node_ip 1) N2_IP=$(lab_node_ip 2)

pod_spawn "$LAB" "$SRV" "$WORK/iperf3-server.log" iperf3 -s -p "$IPERF_PORT"
IPERF_SRV_PID=$SPAWNED_PID
pod_spawn "$LAB" "$SRV" "$WORK/echo-server.log" "$TCPKIT" serve --port "$ECHO_PORT" --mode echo
wait_port "$LAB" "$SRV" "$IPERF_PORT" || die "iperf3 server did not start"
wait_port "$LAB" "$SRV" "$ECHO_PORT" || die "tcpkit echo server did not start"
pod_spawn "$LAB" "$SRV" "$WORK/http-server.log" "$TCPKIT" serve --port "$HTTP_PORT" --mode http --msg-size 64
HTTP_SRV_PID=$SPAWNED_PID
wait_port "$LAB" "$SRV" "$HTTP_PORT" || die "tcpkit http server did not start"
if [ -z "$HTTP_SKIP" ]; then
	pod_spawn "$LAB" "$SRV" "$WORK/h2-server.log" node "$TOP/tests/node/h2_server.js" \
		--port "$H2_PORT" --http1-port "$H1_PORT" --name "$LAB-$SRV"
	wait_port "$LAB" "$SRV" "$H2_PORT" && wait_port "$LAB" "$SRV" "$H1_PORT" ||
		die "tests/node/h2_server.js did not start"
fi

# ---------------- stunnel: certificates and configs ----------------

issue_cert() { # NAME EKU: P-256 key and certificate from the lab CA in $WORK/NAME.{key,crt}
	local n=$1 eku=$2
	printf 'subjectAltName=DNS:%s,URI:spiffe://%s/ns/default/sa/app-1\nextendedKeyUsage=%s\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n' \
		"$n" "$LAB_TRUST_DOMAIN" "$eku" >"$WORK/$n.ext"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/$n.key" \
		-out "$WORK/$n.csr" -subj "/O=ambit-lab/CN=$n" 2>>"$WORK/openssl.log"
	openssl x509 -req -in "$WORK/$n.csr" -CA "$LAB_CA_CERT" -CAkey "$LAB_CA_KEY" -set_serial "0x$(openssl rand -hex 8)" \
		-days 1 -sha256 -extfile "$WORK/$n.ext" -out "$WORK/$n.crt" 2>>"$WORK/openssl.log"
}

stunnel_conf() { # FILE MODE(client|server) CN_OF_PEER then "accept connect" pairs
	local f=$1 mode=$2 peer=$3 i=0
	shift 3
	{
		echo "foreground = yes"
		echo "pid ="
		echo "debug = notice"
		# stderr only: without a syslog daemon, glibc falls back to /dev/console, which costs
		# milliseconds per log line and would make stunnel look far slower than it is.
		echo "syslog = no"
		while [ $# -ge 2 ]; do
			i=$((i + 1))
			printf '[svc%s]\n' "$i"
			[ "$mode" = client ] && echo "client = yes"
			echo "accept = $1"
			echo "connect = $2"
			echo "cert = $WORK/bench-$mode.crt"
			echo "key = $WORK/bench-$mode.key"
			echo "CAfile = $LAB_CA_CERT"
			echo "verifyChain = yes"    # verify the peer's chain; on the server side it also requires a client certificate
			echo "checkHost = $peer"
			echo "sslVersionMin = TLSv1.3"
			shift 2
		done
	} >"$f"
}

# What a handshake negotiates (protocol, suite, key exchange group, ALPN), seen by an
# openssl s_client on node 1 with a client certificate from the lab CA. HBONE serves the
# certificate of the workload that SNI names (README), so ambit's probe names the server pod's.
tls_facts() { # HOST:PORT [ALPN [SNI]]
	local out
	out=$(pod_exec "$LAB" n1 openssl s_client -connect "$1" -cert "$WORK/bench-client.crt" \
		-key "$WORK/bench-client.key" -CAfile "$LAB_CA_CERT" ${2:+-alpn "$2"} \
		${3:+-servername "$3"} </dev/null 2>&1) || true
	printf '%s\n' "$out" | awk '
		/^New, / { sub(/^New, /, ""); sub(/, Cipher is /, " "); p = $0 }
		/^Server Temp Key:/ { sub(/^Server Temp Key: /, ""); sub(/,.*/, ""); g = $0 }
		/^ALPN protocol:/ { a = " ALPN " $3 }
		END { if (p == "" || p ~ /NONE/) print "not observed (no handshake with a lab-CA client certificate)"; else print p " " g a }'
}

# ---------------- measurements ----------------

issue_cert bench-client clientAuth
issue_cert bench-server serverAuth

# The path's proxy processes (agents or stunnels), one per node: PROXY_PIDS=(node1 node2).
PROXY_PIDS=()

# Starts the proxies of PATH and sets the targets the client uses. Fails when they do not start.
start_path() {
	local path=$1
	case $path in
	direct)
		T_IPERF=$SRV_IP:$IPERF_PORT T_ECHO=$SRV_IP:$ECHO_PORT T_HTTP=$SRV_IP:$HTTP_PORT
		T_H2=$SRV_IP:$H2_PORT T_H1=$SRV_IP:$H1_PORT
		PROXY_PIDS=()
		;;
	stunnel)
		stunnel_conf "$WORK/stunnel-client.conf" client bench-server \
			"$N1_IP:$ST_CLI_IPERF" "$N2_IP:$ST_SRV_IPERF" "$N1_IP:$ST_CLI_ECHO" "$N2_IP:$ST_SRV_ECHO"
		stunnel_conf "$WORK/stunnel-server.conf" server bench-client \
			"$N2_IP:$ST_SRV_IPERF" "$SRV_IP:$IPERF_PORT" "$N2_IP:$ST_SRV_ECHO" "$SRV_IP:$ECHO_PORT"
		pod_spawn "$LAB" n2 "$WORK/stunnel-server.log" stunnel "$WORK/stunnel-server.conf"
		local p2=$SPAWNED_PID
		pod_spawn "$LAB" n1 "$WORK/stunnel-client.log" stunnel "$WORK/stunnel-client.conf"
		local p1=$SPAWNED_PID
		PROXY_PIDS=("$p1" "$p2")
		if ! wait_port "$LAB" n2 "$ST_SRV_ECHO" || ! wait_port "$LAB" n1 "$ST_CLI_ECHO"; then
			tail -n 5 "$WORK"/stunnel-*.log >&2
			return 1
		fi
		T_IPERF=$N1_IP:$ST_CLI_IPERF T_ECHO=$N1_IP:$ST_CLI_ECHO T_HTTP=
		put stunnel tls "$(tls_facts "$N2_IP:$ST_SRV_ECHO")"
		;;
	ambit | ambit_pod)
		[ -z "$AMBIT_SKIP" ] || { say "$AMBIT_SKIP"; return 1; }
		local dial=node k
		[ "$path" = ambit ] || dial=pod
		for k in 1 2; do
			jq --arg d "$dial" '.hbone.dial = $d' "$LAB_DIR/node$k.json" >"$LAB_DIR/node$k.json.new" &&
				mv "$LAB_DIR/node$k.json.new" "$LAB_DIR/node$k.json"
		done
		lab_start_agent "$LAB" 1 && lab_start_agent "$LAB" 2 || return 1
		PROXY_PIDS=("$(cat "$LAB_DIR/agent1.pid")" "$(cat "$LAB_DIR/agent2.pid")")
		T_IPERF=$SRV_IP:$IPERF_PORT T_ECHO=$SRV_IP:$ECHO_PORT T_HTTP=$SRV_IP:$HTTP_PORT
		# The server pod n2-p1 runs as service account app-1 (deploy/lab/lab.sh); pod-addressed
		# HBONE needs no SNI: the pod's own address picks its certificate.
		if [ "$dial" = node ]; then
			put "$path" tls "$(tls_facts "$N2_IP:15008" h2 "app-1.default.$LAB_TRUST_DOMAIN.spiffe")"
		else
			put "$path" tls "$(tls_facts "$SRV_IP:15008" h2)"
		fi
		;;
	waypoint)
		[ -z "$AMBIT_SKIP" ] || { say "$AMBIT_SKIP"; return 1; }
		[ -z "$HTTP_SKIP" ] || { say "$HTTP_SKIP"; return 1; }
		lab_start_agent "$LAB" 1 && lab_start_agent "$LAB" 2 || return 1
		lab_start_waypoint "$LAB" "$WORK/waypoint.log" "$LAB_WAYPOINT_CONFIG" || return 1
		echo "$WP_PID" >"$WORK/waypoint.pid"
		PROXY_PIDS=("$(cat "$LAB_DIR/agent1.pid")" "$(cat "$LAB_DIR/agent2.pid")" "$WP_PID")
		T_H2=$WP_SVC_VIP:80 T_H1=$WP_SVC_VIP:81
		;;
	esac
}

is_ambit() { [ "$1" = ambit ] || [ "$1" = ambit_pod ]; } # PATH: the agents carry it

opened_on_node1() { # ambit: outbound connections the node 1 agent has proxied
	pod_exec "$LAB" n1 curl -fsS -m 5 "http://$N1_IP:15020/metrics" |
		awk '/^istio_tcp_connections_opened_total/ && index($0, "reporter=\"source\"") { s += $NF } END { print s + 0 }'
}

# The path works end to end (echoed bytes checked); for ambit, through the agent.
smoke() {
	local path=$1 before=0
	is_ambit "$path" && before=$(opened_on_node1)
	pod_exec "$LAB" "$CLI" "$TCPKIT" client --to "$T_ECHO" --mode echo --bytes 64K --timeout 20 \
		>"$WORK/$path-smoke.txt" 2>&1 || { cat "$WORK/$path-smoke.txt" >&2; return 1; }
	if is_ambit "$path" && [ "$(opened_on_node1)" -le "$before" ]; then
		say "$path: the client's connection was not captured by the node 1 agent"
		return 1
	fi
}

# Idle connections: VmRSS of the two proxies at 0, then at each count of $IDLE.
measure_idle() {
	local path=$1 n line wfd last=0
	put "$path" rss_kib.idle_0.node1 "$(rss_kib "${PROXY_PIDS[0]}")"
	put "$path" rss_kib.idle_0.node2 "$(rss_kib "${PROXY_PIDS[1]}")"
	coproc HOLD { exec nsenter --net="/run/netns/$LAB-$CLI" -- "$PY" "$TOP/bench/hold.py" \
		--to "$T_ECHO" --timeout "$IDLE_TIMEOUT" 2>"$WORK/$path-hold.err"; }
	# shellcheck disable=SC2153 # HOLD_PID is set by coproc
	local hold_pid=$HOLD_PID rfd=${HOLD[0]}
	wfd=${HOLD[1]}
	# Most connections one process can hold here: the client-side stunnel needs two descriptors
	# per connection and refuses clients above 125/256 of its limit; an agent needs one.
	local hard most
	hard=$(ulimit -Hn)
	if [ "$path" = stunnel ]; then most=$((hard * 125 / 256 - 16)); else most=$((hard - 256)); fi
	for n in $IDLE; do
		if [ "$n" -gt "$most" ]; then
			put "$path" "idle_error" "$n idle connections not tried: one $path process can hold at most about $most here (hard RLIMIT_NOFILE $hard)"
			say "$path: $n idle connections not tried (at most about $most with RLIMIT_NOFILE $hard)"
			break
		fi
		say "$path: opening $n idle connections"
		echo "$n" >&"$wfd"
		if ! read -r -t "$((IDLE_TIMEOUT + 10))" line <&"$rfd" || [[ $line != held=$n\ * ]]; then
			put "$path" "idle_error" "$n idle connections: $(tail -n1 "$WORK/$path-hold.err" 2>/dev/null)"
			say "$path: could not hold $n idle connections: $(tail -n1 "$WORK/$path-hold.err" 2>/dev/null)"
			kill "$hold_pid" 2>/dev/null || true
			break
		fi
		put "$path" "idle_open_s.c$n" "${line##*seconds=}"
		sleep 1
		put "$path" "rss_kib.idle_$n.node1" "$(rss_kib "${PROXY_PIDS[0]}")"
		put "$path" "rss_kib.idle_$n.node2" "$(rss_kib "${PROXY_PIDS[1]}")"
		last=$n
	done
	exec {wfd}>&-
	wait "$hold_pid" 2>/dev/null || true
	put "$path" idle_max "$last"
	sleep 1 # let the proxies close their sides before the next test
}

iperf() { # PATH STREAMS: one iperf3 run; the client's CPU comes from its parent's cutime/cstime
	local path=$1 p=$2 j=$WORK/$1-iperf-$2.json
	# shellcheck disable=SC2016 # $$ and $1.. are for the inner sh
	pod_exec "$LAB" "$CLI" sh -c 'iperf3 -c "$1" -p "$2" -t "$3" -P "$4" -J >"$5"; rc=$?; cat /proc/$$/stat >"$6"; exit $rc' \
		sh "${T_IPERF%:*}" "${T_IPERF#*:}" "$DUR" "$p" "$j" "$WORK/$path-iperf-$p.stat" ||
		{ jq -r '.error // empty' "$j" >&2 2>/dev/null; return 1; }
	put "$path" "throughput_gbit_s.streams_$p" "$(jq '.end.sum_received.bits_per_second / 1e9' "$j")"
	put "$path" "retransmits.streams_$p" "$(jq '.end.sum_sent.retransmits // 0' "$j")"
}

measure_bulk() {
	local path=$1 pid c0=() s0 s1 cli=0 bytes=0 proxy=0 i
	s0=$(cpu_ticks "$IPERF_SRV_PID")
	for pid in "${PROXY_PIDS[@]}"; do c0+=("$(cpu_ticks "$pid")"); done
	for p in 1 8; do
		say "$path: iperf3, $p stream(s), ${DUR}s"
		iperf "$path" "$p"
		bytes=$((bytes + $(jq '.end.sum_received.bytes' "$WORK/$path-iperf-$p.json")))
		cli=$((cli + $(sed 's/.*) //' "$WORK/$path-iperf-$p.stat" | awk '{print $14 + $15}')))
	done
	s1=$(cpu_ticks "$IPERF_SRV_PID")
	for i in "${!PROXY_PIDS[@]}"; do
		proxy=$((proxy + $(cpu_ticks "${PROXY_PIDS[$i]}") - c0[i]))
	done
	local gib
	gib=$(awk -v b="$bytes" 'BEGIN { printf "%.6f", b / 1073741824 }')
	put "$path" cpu.gib_moved "$gib"
	put "$path" cpu.client_server_s "$(fdiv "$((cli + s1 - s0))" "$HZ")"
	put "$path" cpu_s_per_gib.client_server "$(fdiv "$(fdiv "$((cli + s1 - s0))" "$HZ")" "$gib")"
	if [ ${#PROXY_PIDS[@]} -gt 0 ]; then
		put "$path" cpu.proxies_s "$(fdiv "$proxy" "$HZ")"
		put "$path" cpu_s_per_gib.proxies "$(fdiv "$(fdiv "$proxy" "$HZ")" "$gib")"
	fi
}

rr() { # PATH SIZE [COUNT]: latency on one persistent connection
	local path=$1 m=$2 f=$WORK/$1-rr-$2.txt
	say "$path: request/response, $m-byte messages, ${3:-$RR_COUNT} round trips"
	pod_exec "$LAB" "$CLI" "$TCPKIT" client --to "$T_ECHO" --mode rr --msg-size "$m" \
		--count "${3:-$RR_COUNT}" --timeout 120 >"$f" 2>&1 || { cat "$f" >&2; return 1; }
	put "$path" "latency_us.msg_$m.p50" "$(kv p50_us "$f")"
	put "$path" "latency_us.msg_$m.p99" "$(kv p99_us "$f")"
	put "$path" "latency_us.msg_$m.avg" "$(kv avg_us "$f")"
}

# HTTP/1.1 GETs (64-byte answers) on one keep-alive connection: what the agents' request
# spans cost (docs/request-spans.md). Not through stunnel (no listener for it).
http_rr() { # PATH KEY
	local path=$1 key=$2 f=$WORK/$1-$2.txt
	[ -n "${T_HTTP:-}" ] || return 0
	say "$path: HTTP/1.1 request/response ($key), $RR_COUNT requests"
	pod_exec "$LAB" "$CLI" ${HTTP_CLIENT_CPU:+taskset -c "$HTTP_CLIENT_CPU"} "$TCPKIT" client \
		--to "$T_HTTP" --mode http --msg-size 64 \
		--count "$RR_COUNT" --timeout 120 >"$f" 2>&1 || { cat "$f" >&2; return 1; }
	put "$path" "$key.p50" "$(kv p50_us "$f")"
	put "$path" "$key.p99" "$(kv p99_us "$f")"
	put "$path" "$key.avg" "$(kv avg_us "$f")"
	put "$path" "$key.req_per_s" "$(fdiv 1000000 "$(kv avg_us "$f")")"
}

# ambit: the same with request spans on and off, compared in pairs on the same two agent
# processes. Restarting the agents between the arms (as this did before) moved p50 by 160-250 us
# from one start to the next (where the scheduler puts 6 processes on 2 vCPUs), more than the
# 5% being judged; so the agents stay, and request tracing is switched at run time the way a
# user switches it: off = a mesh-wide Telemetry (root namespace, disableSpanReporting) in the
# lab's resources, on = none. New connections resolve it (docs/request-spans.md), and each
# http_rr run is a new connection. SPAN_ROUNDS pairs, back to back, alternating which arm goes
# first; each pair gives its on/off ratio and the ratios reported are the medians of the pair
# ratios (the rows show the medians of each arm's rounds). Before each arm both agents'
# resolution is checked (ambitctl telemetry). The export queue an "on" arm leaves is not
# waited for: export goes nowhere here, its retries never empty it, and they cost little; the
# alternating order shares what one arm leaves to the next. The spans each arm made are
# recorded (an "off" arm making request spans stops the bench: the comparison would be void).
SPANS_OFF_TELEMETRY='[{"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
  "metadata": {"name": "bench-request-spans-off", "namespace": "istio-system",
	       "creationTimestamp": "2026-01-01T00:00:00Z"},
  "spec": {"tracing": [{"disableSpanReporting": true}]}}]'
http_warmup() {
	[ "$SPAN_WARMUP" -gt 0 ] || return 0
	pod_exec "$LAB" "$CLI" ${HTTP_CLIENT_CPU:+taskset -c "$HTTP_CLIENT_CPU"} "$TCPKIT" client \
		--to "$T_HTTP" --mode http --msg-size 64 \
		--count "$SPAN_WARMUP" --timeout 120 >"$WORK/http-warmup.txt" 2>&1 ||
		{ cat "$WORK/http-warmup.txt" >&2; return 1; }
}

spans_ended() { # K: spans node K's agent ended and handed on (exported, dropped, failed, queued)
	local m t=0
	for m in ambit_spans_exported_total ambit_spans_dropped_total ambit_spans_failed_total ambit_spans_queued; do
		t=$((t + $(lab_metric "$LAB" "$1" "$m")))
	done
	echo "$t"
}

spans_switch() { # WORKLOAD on|off: the Telemetry of the arm in force on both agents
	local wl=$1
	if [ "$2" = on ]; then
		echo '[]' | "$LAB_SH" resources "$LAB" - >/dev/null || return 1
		lab_telemetry_is "$LAB" "$wl" '.workloads[0] | (.outbound.disabled | not) and (.inbound.disabled | not)' n1 n2 ||
			{ say "request spans did not come back on"; return 1; }
	else
		echo "$SPANS_OFF_TELEMETRY" | "$LAB_SH" resources "$LAB" - >/dev/null || return 1
		lab_telemetry_is "$LAB" "$wl" '.workloads[0] | .outbound.disabled and .inbound.disabled' n1 n2 ||
			{ say "the Telemetry turning request spans off did not apply"; return 1; }
	fi
}

# spans_pin on|off: with SPAN_PIN and two CPUs or more, node 1's side (its agent, every thread,
# and the HTTP client, started pinned) on CPU 0, node 2's (its agent and the HTTP server) on
# CPU 1, the same for both arms: a new client process per run otherwise lands on either CPU, and
# p50 with it (44-49 or 60-74 us within the same pair on the shared 2-vCPU machine). off: all
# CPUs again.
spans_pin() {
	local all pid
	[ "$SPAN_PIN" = 1 ] && [ "$(nproc)" -ge 2 ] || return 0
	all=0-$(($(nproc) - 1))
	if [ "$1" = on ]; then
		taskset -a -p -c 0 "${PROXY_PIDS[0]}" >/dev/null &&
			taskset -a -p -c 1 "${PROXY_PIDS[1]}" >/dev/null &&
			taskset -a -p -c 1 "$HTTP_SRV_PID" >/dev/null || return 1
		HTTP_CLIENT_CPU=0
	else
		for pid in "${PROXY_PIDS[0]}" "${PROXY_PIDS[1]}" "$HTTP_SRV_PID"; do
			taskset -a -p -c "$all" "$pid" >/dev/null || true
		done
		HTTP_CLIENT_CPU=""
	fi
}

# span_perf start|stop KEY: with SPAN_PERF=1, perf stat of each agent (all its threads) over
# one span run: syscalls, context switches, migrations, CPU time (task-clock, µs) and page
# faults per request, put as KEY.perf.nodeK.*; with 2 also a profile of both agents (perf
# record, cpu-clock: this VM has no hardware counters), its kernel and contended-spinlock
# shares put as KEY.perf.*_pct, the profile kept as span-perf-KEY.data with BENCH_KEEP=1
# (issue 17: where the lab cost of request spans goes; the profile slows the run down).
SPAN_PERF_PIDS=()
span_perf() {
	local k ev f
	[ "$SPAN_PERF" = 1 ] || [ "$SPAN_PERF" = 2 ] || return 0
	if [ "$1" = start ]; then
		SPAN_PERF_PIDS=()
		for k in 1 2; do
			perf stat -x, -o "$WORK/span-perf-$k.csv" -p "${PROXY_PIDS[$((k - 1))]}" \
				-e raw_syscalls:sys_enter,context-switches,cpu-migrations,task-clock,page-faults \
				-e syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,syscalls:sys_enter_write,syscalls:sys_enter_read \
				2>/dev/null &
			SPAN_PERF_PIDS+=($!)
		done
		if [ "$SPAN_PERF" = 2 ]; then
			perf record -q -e cpu-clock -F 2999 -g -o "$WORK/span-perf-$2.data" \
				-p "${PROXY_PIDS[0]},${PROXY_PIDS[1]}" >/dev/null 2>&1 &
			SPAN_PERF_PIDS+=($!)
		fi
		sleep 0.3 # perf attached
		return 0
	fi
	for k in 1 2; do
		kill -INT "${SPAN_PERF_PIDS[$((k - 1))]}" 2>/dev/null || true
		wait "${SPAN_PERF_PIDS[$((k - 1))]}" 2>/dev/null || true
		f=$WORK/span-perf-$k.csv
		for ev in raw_syscalls:sys_enter context-switches cpu-migrations task-clock page-faults \
			syscalls:sys_enter_epoll_wait syscalls:sys_enter_futex syscalls:sys_enter_write syscalls:sys_enter_read; do
			put ambit "$2.perf.node$k.${ev##*:}_per_req" "$(awk -F, -v e="$ev" -v n="$RR_COUNT" \
				'$3 == e { printf "%.3f", (e == "task-clock" ? $1 * 1000 : $1) / n; exit }' "$f")"
		done
	done
	if [ "$SPAN_PERF" = 2 ]; then
		kill -INT "${SPAN_PERF_PIDS[2]}" 2>/dev/null || true
		wait "${SPAN_PERF_PIDS[2]}" 2>/dev/null || true
		# both agents' samples: in the kernel, and spinning for a contended spinlock
		perf report -i "$WORK/span-perf-$2.data" --no-children --sort sym -q -g none 2>/dev/null |
			awk -v key="$2.perf" '$2 == "[k]" { k += $1 } $3 ~ /queued_spin_lock_slowpath$/ { s += $1 }
				END { printf "%s.kernel_pct\t%.1f\n%s.spinlock_slowpath_pct\t%.1f\n", key, k, key, s }' |
			while IFS=$'\t' read -r k v; do put ambit "$k" "$v"; done
	fi
	SPAN_PERF_PIDS=()
}

http_rr_spans_on_off() {
	local i on order wl s0 s1 made
	wl=$(jq -r --arg n "$(lab_var N1_P1_NAME)" '.workloads[] | select(.name == $n) | "\(.namespace)/\(.name)"' "$LAB_WORKLOADS")
	spans_pin on || { say "taskset failed"; return 1; }
	http_warmup || return 1
	for i in $(seq "$SPAN_ROUNDS"); do
		order="on off"
		[ $((i % 2)) -eq 1 ] || order="off on"
		for on in $order; do
			spans_switch "$wl" "$on" || return 1
			s0=$(($(spans_ended 1) + $(spans_ended 2)))
			span_perf start "http_request_spans_$on.round_$i"
			http_rr ambit "http_request_spans_$on.round_$i" || return 1
			span_perf stop "http_request_spans_$on.round_$i"
			s1=$(($(spans_ended 1) + $(spans_ended 2)))
			made=$((s1 - s0))
			put ambit "http_request_spans_$on.round_$i.spans_made" "$made"
			if [ "$on" = off ] && [ "$made" -gt $((RR_COUNT / 10)) ]; then
				say "request spans off made $made spans in round $i: the comparison is void"
				return 1
			fi
		done
	done
	spans_pin off
	spans_switch "$wl" on
}

crr() { # PATH PARALLEL [COUNT [KEY]]: connect, one 1-byte request/response, close
	local path=$1 par=$2 key=${4:-conn_per_s} f=$WORK/$1-crr-$2-${4:-conn_per_s}.txt
	say "$path: connection rate, ${3:-$CRR_COUNT} connections, $par at a time${4:+ ($4)}"
	pod_exec "$LAB" "$CLI" "$TCPKIT" client --to "$T_ECHO" --mode crr --msg-size 1 \
		--count "${3:-$CRR_COUNT}" --parallel "$par" --timeout 120 >"$f" 2>&1 ||
		{ cat "$f" >&2; return 1; }
	put "$path" "$key.parallel_$par" "$(kv conn_per_s "$f")"
}

# policies_json N: N AuthorizationPolicies shaped like a cluster's: one ALLOW for the server
# (app-1 in default: the client's identity, port 9000), one mesh-wide DENY in istio-system that
# matches no one (evaluated on every connection), and the rest for other namespaces and, one in
# ten, other apps of default (never the server's: the index must skip them, not scan them).
policies_json() {
	jq -cn --argjson n "$1" --arg td "$LAB_TRUST_DOMAIN" '[range($n) as $i |
		{ apiVersion: "security.istio.io/v1", kind: "AuthorizationPolicy",
		  metadata: { name: "bench-\($i)", creationTimestamp: "2026-01-01T00:00:00Z",
			namespace: (if $i == 0 or $i % 10 == 2 then "default" elif $i == 1 then "istio-system"
				    else "ns-\($i % 100)" end) },
		  spec: (if $i == 0 then { selector: { matchLabels: { app: "app-1" } }, action: "ALLOW",
				rules: [{ from: [{ source: { principals: ["\($td)/ns/default/sa/app-1"] } }],
					  to: [{ operation: { ports: ["9000"] } }] }] }
			elif $i == 1 then { action: "DENY",
				rules: [{ from: [{ source: { principals: ["\($td)/ns/blocked/sa/x"] } }] }] }
			else { selector: { matchLabels: { app: "app-\(2 + $i % 50)" } },
				action: (if $i % 3 == 0 then "DENY" else "ALLOW" end),
				rules: [{ from: [{ source: { principals: ["\($td)/ns/ns-\($i % 100)/sa/s\($i)"],
							     ipBlocks: ["10.\($i % 250).0.0/16"] } }],
					  to: [{ operation: { ports: ["80", "\(1000 + $i)"] } }] }] } end) }]'
}

# The connection rate of ambit with no policy and then with POLICIES in force, back to back
# (the server's node enforces: its agent must list them all first).
measure_policies() {
	local i n=""
	[ "$POLICIES" -gt 0 ] || return 0
	crr ambit 1 "$CRR_COUNT" conn_per_s.policies_0
	policies_json "$POLICIES" | "$LAB_SH" resources "$LAB" - || return 1
	for i in $(seq 300); do
		n=$(pod_exec "$LAB" n2 curl -fsS -m 5 http://127.0.0.1:15000/policies |
			jq '.stats.authorization_policies' 2>/dev/null) || true
		[ "$n" = "$POLICIES" ] && break
		sleep 0.1
	done
	[ "$n" = "$POLICIES" ] || { say "ambit: node 2 has $n policies in force, not $POLICIES"; return 1; }
	smoke ambit || { say "ambit: the server's ALLOW policy does not let the client in"; return 1; }
	crr ambit 1 "$CRR_COUNT" "conn_per_s.policies_$POLICIES"
	echo '[]' | "$LAB_SH" resources "$LAB" -
}

# HTTP/2 (h2c prior knowledge) and HTTP/1.1 request rate and latency with h2load: GET /bytes/N
# from tests/node/h2_server.js, the same number of requests in flight for both (HTTP/2: CONNS
# connections x STREAMS streams; HTTP/1.1: CONNS x STREAMS connections), after an uncounted
# warm-up run of a tenth as many. p50/p99 from h2load's per-request log (microseconds until the
# end of each response).
http_load() { # PATH PROTO(h2|h1) TARGET
	local path=$1 proto=$2 target=$3 f=$WORK/$1-$2-h2load.txt l=$WORK/$1-$2-h2load.log
	local opts=(-c "$HTTP_CONNS" -m "$HTTP_STREAMS")
	[ "$proto" = h2 ] || opts=(--h1 -c "$((HTTP_CONNS * HTTP_STREAMS))" -m 1)
	say "$path: $proto GETs with h2load, $HTTP_REQS requests, $((HTTP_CONNS * HTTP_STREAMS)) in flight"
	# A tenth of the run first, not counted: the server's JIT and the proxies' pools warm up.
	pod_exec "$LAB" "$CLI" timeout 120 h2load -n "$((HTTP_REQS / 10 + 1))" "${opts[@]}" \
		"http://$target/bytes/$HTTP_BODY" >/dev/null 2>&1 || true
	pod_exec "$LAB" "$CLI" timeout 300 h2load -n "$HTTP_REQS" "${opts[@]}" --log-file="$l" \
		"http://$target/bytes/$HTTP_BODY" >"$f" 2>&1 || { tail -n 5 "$f" >&2; return 1; }
	local ok rps
	ok=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$f")
	rps=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$f")
	[ "${ok:-0}" -eq "$HTTP_REQS" ] || { say "$path: $proto: ${ok:-0} of $HTTP_REQS requests succeeded"; grep -E '^(requests|status codes):' "$f" >&2; return 1; }
	put "$path" "http_load.$proto.req_per_s" "$rps"
	# the log's third column: microseconds until the end of the response
	awk -F'\t' '$2 == 200 { print $3 }' "$l" | sort -n | awk '{ v[NR] = $1 } END {
		if (NR == 0) exit 1
		i50 = int(NR * 0.50 + 0.5); i99 = int(NR * 0.99 + 0.5)
		if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1
		print v[i50], v[i99] }' >"$WORK/$path-$proto-pct.txt" || return 1
	put "$path" "http_load.$proto.p50_us" "$(cut -d' ' -f1 "$WORK/$path-$proto-pct.txt")"
	put "$path" "http_load.$proto.p99_us" "$(cut -d' ' -f2 "$WORK/$path-$proto-pct.txt")"
}

measure_http_load() { # PATH
	[ -z "$HTTP_SKIP" ] || return 0
	http_load "$1" h2 "$T_H2" && http_load "$1" h1 "$T_H1" || return 1
	[ "$1" = waypoint ] || return 0
	# How many of them the waypoint handled as requests (istio_requests_total for h2b): a
	# waypoint that passes a protocol as TCP counts none.
	put waypoint http_load.requests_seen_by_waypoint "$(pod_exec "$LAB" "$LAB_WAYPOINT_POD" \
		curl -fsS -m 5 "http://$LAB_WAYPOINT_IP:15020/metrics" | awk '/^istio_requests_total\{/ &&
		index($0, "destination_service=\"h2b.") { s += $NF } END { print s + 0 }')"
}

# The waypoint path works: an HTTP/2 GET of the service answers, and node 1's agent sent the
# client's connection to the waypoint.
smoke_waypoint() {
	local out
	out=$(pod_exec "$LAB" "$CLI" curl -sS -m 10 --http2-prior-knowledge "http://$T_H2/whoami") &&
	[ "$out" = "$LAB-$SRV" ] && grep -q "\"dst.hbone_addr\":\"$LAB_WAYPOINT_IP:15008\"" "$LAB_DIR/agent1.log" ||
		{ say "waypoint: GET http://$T_H2/whoami through the waypoint: '${out:-}'"; return 1; }
}

# ---------------- profile (ambit, when a target is missed) ----------------

# Figures of a path measured so far: FIG lines as a JSON object.
fig_json() {
	jq -R -n '[inputs | split("\t")] | map(select(.[0] == $p)) |
		reduce .[] as [$x, $k, $v] ({}; setpath($k | split("."); ($v | tonumber? // $v)))' \
		--arg p "$1" <"$FIG"
}

targets_missed() { # prints the missed ambit targets that the profile should explain
	local a s
	a=$(fig_json ambit) s=$(fig_json stunnel)
	jq -n -r --argjson a "$a" --argjson s "$s" '
		def r(x; y): if x == null or y == null or y == 0 then null else x / y end;
	# the median over the rounds of on/off of metric m, each round a pair on the same agents
	def pair_ratio($a; m): [($a.http_request_spans_on // {}) | to_entries[] | select(.key | startswith("round_"))
		| r(.value[m]; $a.http_request_spans_off[.key][m]) | select(. != null)] | med;
		[ (if (r($a.throughput_gbit_s.streams_1; $s.throughput_gbit_s.streams_1) // 9) < 1.5 then "bulk" else empty end),
		  (if (r($a.latency_us.msg_1.p50; $s.latency_us.msg_1.p50) // 0) > 1 then "rr" else empty end),
		  (if (r($a.conn_per_s.parallel_1; $s.conn_per_s.parallel_1) // 9) < 3 then "crr" else empty end) ] | join(" ")'
}

# perf record on both agents while WORKLOAD runs; the top of the report goes to profile-NAME.txt.
profile_run() { # NAME WORKLOAD...
	local name=$1 data=$WORK/perf-$1.data ppid scope=(-p "${PROXY_PIDS[0]},${PROXY_PIDS[1]}") who="both agents"
	shift
	if [ "$PROFILE_ALL" = 1 ]; then scope=(-a) who="whole machine"; fi
	perf record -q -e cpu-clock -F 1999 -g "${scope[@]}" -o "$data" >"$WORK/perf-$name.log" 2>&1 &
	ppid=$!
	sleep 0.5
	"$@" >/dev/null || true
	kill -INT "$ppid" 2>/dev/null || true
	wait "$ppid" 2>/dev/null || true
	# Best effort: a report that comes out empty (grep finds nothing) or is cut short by head
	# is still a report, not a failed path.
	(
		set +e +o pipefail
		if [ "$PROFILE_ALL" = 1 ]; then
			echo "## $name: whole machine, by process (swapper: idle)"
			perf report -i "$data" --stdio --no-children --sort comm,pid -g none --percent-limit 0.5 2>/dev/null |
				grep -v -e '^#' -e '^$' | head -n 12
		fi
		echo "## $name: $who, by symbol (self time, >= 0.8%)"
		perf report -i "$data" --stdio --no-children --sort dso,sym -g none --percent-limit 0.8 2>/dev/null |
			grep -v -e '^#' -e '^$' | head -n 30
		echo "## $name: $who, user space only, by symbol (self time, % of all samples)"
		perf report -i "$data" --stdio --no-children --sort dso,sym -g none --percent-limit 0.3 2>/dev/null |
			grep -v -e '^#' -e '^$' -e kernel.kallsyms | head -n 25
		echo "## $name: $who, by shared object"
		perf report -i "$data" --stdio --no-children --sort dso -g none --percent-limit 0.5 2>/dev/null |
			grep -v -e '^#' -e '^$' | head -n 12
		echo "## $name: where processes enter the kernel (children time of their syscalls, >= 2%)"
		perf report -i "$data" --stdio --children --sort sym -g none --percent-limit 2 2>/dev/null |
			grep -v -e '^#' -e '^$' | grep -E '__x64_sys_|__sys_|ksys_|do_epoll|tcp_sendmsg$|tcp_recvmsg$|do_softirq|net_rx_action' | head -n 14
	) >"$WORK/profile-$name.txt"
	rm -f "$data"
}

profile_ambit() {
	local want=$1 w
	command -v perf >/dev/null || { say "perf not installed: no profile"; return 0; }
	for w in $want; do
		say "ambit: profiling the agents under '$w'"
		case $w in
		bulk) profile_run bulk pod_exec "$LAB" "$CLI" iperf3 -c "$SRV_IP" -p "$IPERF_PORT" -t 4 ;;
		rr) profile_run rr pod_exec "$LAB" "$CLI" "$TCPKIT" client --to "$T_ECHO" --mode rr --msg-size 1 --count 20000 ;;
		crr) profile_run crr pod_exec "$LAB" "$CLI" "$TCPKIT" client --to "$T_ECHO" --mode crr --msg-size 1 --count 3000 ;;
		esac
	done
}

# One path, start to finish, in a subshell of its own (errexit applies inside; figures go to FIG).
measure_path() {
	local path=$1
	start_path "$path"
	if [ "$path" = waypoint ]; then
		smoke_waypoint
		measure_http_load waypoint
		kill -TERM "$WP_PID" 2>/dev/null || true
		local i
		for i in $(seq 100); do kill -0 "$WP_PID" 2>/dev/null || break; sleep 0.1; done
		return 0
	fi
	smoke "$path"
	if [ ${#PROXY_PIDS[@]} -eq 2 ]; then measure_idle "$path"; fi
	measure_bulk "$path"
	rr "$path" 1
	rr "$path" 1024
	crr "$path" 1
	crr "$path" "$CRR_PAR"
	http_rr "$path" http_latency_us
	[ "$path" != direct ] || measure_http_load direct
	if [ "$path" = ambit ]; then
		local want=""
		case $PROFILE in
		1) want="bulk rr crr" ;;
		auto) want=$(targets_missed) ;;
		esac
		[ -z "$want" ] || profile_ambit "$want"
		measure_policies
		http_rr_spans_on_off
	fi
	# The proxies stop here, so that the next path runs alone.
	if is_ambit "$path"; then
		local k t0
		for k in 1 2; do
			t0=$(date +%s.%N)
			lab_stop_agent "$LAB" "$k"
			put "$path" "stop.node$k.seconds" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
			put "$path" "stop.node$k.exit" "${AGENT_EXIT:-null}"
		done
	else
		local pid
		for pid in "${PROXY_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	fi
}

FAILED=()
for path in $PATHS; do
	case $path in direct | stunnel | ambit | ambit_pod | waypoint) ;; *) die "BENCH_PATHS: unknown path '$path'" ;; esac
	say "---- $path ----"
	put "$path" loadavg_1m.start "$(cut -d' ' -f1 /proc/loadavg)"
	set +e
	(set -e; measure_path "$path")
	rc=$?
	set -e
	put "$path" loadavg_1m.end "$(cut -d' ' -f1 /proc/loadavg)"
	if [ "$rc" -eq 0 ]; then
		put "$path" status ok
	else
		status=failed reason="did not work (exit $rc); logs in $WORK"
		if { is_ambit "$path" || [ "$path" = waypoint ]; } && [ -n "$AMBIT_SKIP" ]; then
			status=unmeasured reason=$AMBIT_SKIP
		elif [ "$path" = waypoint ] && [ -n "$HTTP_SKIP" ]; then
			status=unmeasured reason=$HTTP_SKIP
		fi
		put "$path" status "$status"
		put "$path" reason "$reason"
		FAILED+=("$path")
		say "$path: $reason"
	fi
	# Whatever the path left behind in the nodes (a failed start) stops before the next one.
	if [ -f "$WORK/waypoint.pid" ]; then
		kill -KILL "$(cat "$WORK/waypoint.pid")" 2>/dev/null || true
		rm -f "$WORK/waypoint.pid"
	fi
	lab_stop_agent "$LAB" 1
	lab_stop_agent "$LAB" 2
done

# ---------------- results ----------------

mkdir -p "$OUT"
json=$OUT/$DATE.json md=$OUT/$DATE.md
rev=$(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$TOP" diff --quiet HEAD -- agent tls common otlp bpf 2>/dev/null || rev="$rev (+ uncommitted changes)"
ambit_ver=$("$AMBIT_BUILD/ambitd" --version 2>/dev/null | head -n1 || true)

jq -R -n \
	--arg date "$(date -u +%FT%TZ)" --arg kernel "$(uname -r)" --argjson cores "$(nproc)" \
	--arg cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
	--argjson mem_mib "$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)" \
	--arg rev "$rev" --arg ambit "${ambit_ver:-not built}${AMBITD_SHA:+ (sha256 $AMBITD_SHA...)}" --argjson nofile "$(ulimit -Hn)" \
	--arg stunnel "$(stunnel -version 2>&1 | grep -m1 '^stunnel' || true)" \
	--arg openssl "$(openssl version)" --arg iperf3 "$(iperf3 --version | head -n1)" \
	--argjson seconds "$((SECONDS - T_START))" --argjson dur "$DUR" --argjson rr "$RR_COUNT" \
	--argjson crr "$CRR_COUNT" --argjson crrpar "$CRR_PAR" --arg idle "$IDLE" --arg paths "$PATHS" \
	--argjson npol "$POLICIES" --argjson hreq "$HTTP_REQS" --argjson hconns "$HTTP_CONNS" \
	--argjson hstreams "$HTTP_STREAMS" --argjson hbody "$HTTP_BODY" --arg hskip "$HTTP_SKIP" \
	--argjson spanrounds "$SPAN_ROUNDS" --argjson spanwarm "$SPAN_WARMUP" --argjson spanpin "$SPAN_PIN" '
	def num: . as $v | ($v | tonumber? // $v);
	def med: sort | if length == 0 then null elif length % 2 == 1 then .[(length - 1) / 2]
		else (.[length / 2 - 1] + .[length / 2]) / 2 end;
	def rss_total: if . == null then null else
		with_entries(if (.value | type) == "object" then .value.total = (.value.node1 + .value.node2) else . end) end;
	def r(x; y): if x == null or y == null or y == 0 then null else x / y end;
	# the median over the rounds of on/off of metric m, each round a pair on the same agents
	def pair_ratio($a; m): [($a.http_request_spans_on // {}) | to_entries[] | select(.key | startswith("round_"))
		| r(.value[m]; $a.http_request_spans_off[.key][m]) | select(. != null)] | med;
	([inputs | split("\t")] | reduce .[] as [$p, $k, $v] ({}; setpath([$p] + ($k | split(".")); $v | num))) as $f
	| ($paths | split(" ") | map(select(. != ""))) as $plist
	| reduce $plist[] as $p ($f; .[$p] = ((.[$p] // {status: "skipped"}) | .rss_kib |= rss_total))
	| reduce ("http_request_spans_on", "http_request_spans_off") as $k (.;
		if .ambit[$k] == null then . else
			.ambit[$k] |= (. as $r | reduce ("p50", "p99", "avg", "req_per_s") as $m ($r;
				.[$m] = ([$r | to_entries[] | select(.key | startswith("round_")) | .value[$m]
					  | select(type == "number")] | med))) end)
	| reduce ("stunnel", "ambit", "ambit_pod") as $p (.;
		if .[$p].rss_kib.idle_0 != null and (.[$p].idle_max // 0) > 0 then
			.[$p].rss_per_idle_conn_kib = ((.[$p].rss_kib["idle_\(.[$p].idle_max)"].total - .[$p].rss_kib.idle_0.total) / .[$p].idle_max)
		else . end)
	| . as $all | .direct as $d | .stunnel as $s | .ambit as $a | .ambit_pod as $ap | .waypoint as $w
	| {
		machine: { cores: $cores, kernel: $kernel, cpu: $cpu, mem_mib: $mem_mib, nofile_hard: $nofile, date: $date,
			git_rev: $rev, ambitd: $ambit, stunnel: $stunnel, openssl: $openssl, iperf3: $iperf3 },
		settings: { iperf3_seconds: $dur, rr_count: $rr, crr_count: $crr, crr_parallel: [1, $crrpar],
			policies: $npol, request_span_rounds: $spanrounds, request_span_warmup: $spanwarm,
			request_span_pin: ($spanpin == 1),
			http_load: { requests: $hreq, in_flight: ($hconns * $hstreams), h2_connections: $hconns,
				h2_streams_per_connection: $hstreams, h1_connections: ($hconns * $hstreams),
				body_bytes: $hbody, skipped: (if $hskip == "" then null else $hskip end) },
			idle_connections: ($idle | split(" ") | map(select(. != "") | tonumber)),
			lab: "2 nodes, routed CNI, client n1-p1 -> server n2-p1", run_seconds: $seconds },
		direct: ($d // {status: "skipped"}), stunnel: ($s // {status: "skipped"}), ambit: ($a // {status: "skipped"}),
		ambit_pod: ($ap // {status: "skipped"}), waypoint: ($w // {status: "skipped"}),
		ratios: {
			throughput_vs_stunnel: r($a.throughput_gbit_s.streams_1; $s.throughput_gbit_s.streams_1),
			throughput_vs_direct: r($a.throughput_gbit_s.streams_1; $d.throughput_gbit_s.streams_1),
			throughput_8_streams_vs_stunnel: r($a.throughput_gbit_s.streams_8; $s.throughput_gbit_s.streams_8),
			throughput_8_streams_vs_direct: r($a.throughput_gbit_s.streams_8; $d.throughput_gbit_s.streams_8),
			conn_rate_vs_stunnel: r($a.conn_per_s.parallel_1; $s.conn_per_s.parallel_1),
			conn_rate_vs_direct: r($a.conn_per_s.parallel_1; $d.conn_per_s.parallel_1),
			"conn_rate_\($crrpar)_parallel_vs_stunnel": r($a.conn_per_s["parallel_\($crrpar)"]; $s.conn_per_s["parallel_\($crrpar)"]),
			"conn_rate_\($crrpar)_parallel_vs_direct": r($a.conn_per_s["parallel_\($crrpar)"]; $d.conn_per_s["parallel_\($crrpar)"]),
			p50_latency_vs_stunnel: r($a.latency_us.msg_1.p50; $s.latency_us.msg_1.p50),
			p99_latency_vs_stunnel: r($a.latency_us.msg_1.p99; $s.latency_us.msg_1.p99),
			p50_latency_vs_direct: r($a.latency_us.msg_1.p50; $d.latency_us.msg_1.p50),
			p99_latency_vs_direct: r($a.latency_us.msg_1.p99; $d.latency_us.msg_1.p99),
			p50_latency_1k_vs_stunnel: r($a.latency_us.msg_1024.p50; $s.latency_us.msg_1024.p50),
			p99_latency_1k_vs_stunnel: r($a.latency_us.msg_1024.p99; $s.latency_us.msg_1024.p99),
			p50_latency_1k_vs_direct: r($a.latency_us.msg_1024.p50; $d.latency_us.msg_1024.p50),
			p99_latency_1k_vs_direct: r($a.latency_us.msg_1024.p99; $d.latency_us.msg_1024.p99),
			cpu_per_gib_proxies_vs_stunnel: r($a.cpu_s_per_gib.proxies; $s.cpu_s_per_gib.proxies),
			rss_per_idle_conn_vs_stunnel: r($a.rss_per_idle_conn_kib; $s.rss_per_idle_conn_kib),
			conn_rate_policies_vs_none: r($a.conn_per_s["policies_\($npol)"].parallel_1; $a.conn_per_s.policies_0.parallel_1),
			pod_dial_conn_rate_vs_node_dial: r($ap.conn_per_s.parallel_1; $a.conn_per_s.parallel_1),
			"pod_dial_conn_rate_\($crrpar)_parallel_vs_node_dial": r($ap.conn_per_s["parallel_\($crrpar)"]; $a.conn_per_s["parallel_\($crrpar)"]),
			pod_dial_throughput_vs_node_dial: r($ap.throughput_gbit_s.streams_1; $a.throughput_gbit_s.streams_1),
			pod_dial_p50_latency_vs_node_dial: r($ap.latency_us.msg_1.p50; $a.latency_us.msg_1.p50),
			pod_dial_rss_per_idle_conn_vs_node_dial: r($ap.rss_per_idle_conn_kib; $a.rss_per_idle_conn_kib),
			http_p50_latency_request_spans_on_vs_off: pair_ratio($a; "p50"),
			http_p99_latency_request_spans_on_vs_off: pair_ratio($a; "p99"),
			http_req_per_s_request_spans_on_vs_off: pair_ratio($a; "req_per_s"),
			h2_req_per_s_waypoint_vs_direct: r($w.http_load.h2.req_per_s; $d.http_load.h2.req_per_s),
			h2_p50_latency_waypoint_vs_direct: r($w.http_load.h2.p50_us; $d.http_load.h2.p50_us),
			h2_p99_latency_waypoint_vs_direct: r($w.http_load.h2.p99_us; $d.http_load.h2.p99_us),
			h1_req_per_s_waypoint_vs_direct: r($w.http_load.h1.req_per_s; $d.http_load.h1.req_per_s),
			h1_p50_latency_waypoint_vs_direct: r($w.http_load.h1.p50_us; $d.http_load.h1.p50_us),
			h1_p99_latency_waypoint_vs_direct: r($w.http_load.h1.p99_us; $d.http_load.h1.p99_us),
			waypoint_h2_vs_h1_req_per_s: r($w.http_load.h2.req_per_s; $w.http_load.h1.req_per_s),
			direct_h2_vs_h1_req_per_s: r($d.http_load.h2.req_per_s; $d.http_load.h1.req_per_s)
		}
	}' <"$FIG" >"$json.tmp"
mv "$json.tmp" "$json"

# The table (markdown: printed as is, and the body of the .md).
table() {
	jq -r --argjson par "$CRR_PAR" --argjson npol "$POLICIES" '
		def f(n): if . == null then "-" elif (type == "number") then (. * pow(10; n) | round / pow(10; n) | tostring) else tostring end;
		def r(x; y): if x == null or y == null or y == 0 then null else x / y end;
	# the median over the rounds of on/off of metric m, each round a pair on the same agents
	def pair_ratio($a; m): [($a.http_request_spans_on // {}) | to_entries[] | select(.key | startswith("round_"))
		| r(.value[m]; $a.http_request_spans_off[.key][m]) | select(. != null)] | med;
		. as $j | def rows: [
			["throughput, 1 stream (Gbit/s)", ["throughput_gbit_s", "streams_1"], 2],
			["throughput, 8 streams (Gbit/s)", ["throughput_gbit_s", "streams_8"], 2],
			["latency 1 B, p50 (us)", ["latency_us", "msg_1", "p50"], 1],
			["latency 1 B, p99 (us)", ["latency_us", "msg_1", "p99"], 1],
			["latency 1 KiB, p50 (us)", ["latency_us", "msg_1024", "p50"], 1],
			["latency 1 KiB, p99 (us)", ["latency_us", "msg_1024", "p99"], 1],
			["HTTP/1.1 GET, p50 (us)", ["http_latency_us", "p50"], 1],
			["HTTP/1.1 GET, p99 (us)", ["http_latency_us", "p99"], 1],
			["HTTP/1.1 GETs/s, 1 connection", ["http_latency_us", "req_per_s"], 0],
			["HTTP/1.1 GET, p50 (us), request spans on (median of rounds)", ["http_request_spans_on", "p50"], 1],
			["HTTP/1.1 GET, p99 (us), request spans on", ["http_request_spans_on", "p99"], 1],
			["HTTP/1.1 GETs/s, request spans on", ["http_request_spans_on", "req_per_s"], 0],
			["HTTP/1.1 GET, p50 (us), request spans off", ["http_request_spans_off", "p50"], 1],
			["HTTP/1.1 GET, p99 (us), request spans off", ["http_request_spans_off", "p99"], 1],
			["HTTP/1.1 GETs/s, request spans off", ["http_request_spans_off", "req_per_s"], 0],
			["new connections/s, 1 at a time", ["conn_per_s", "parallel_1"], 0],
			["new connections/s, \($par) at a time", ["conn_per_s", "parallel_\($par)"], 0],
			(if $npol > 0 then
				["new connections/s, 1 at a time, no policy (policy pair)", ["conn_per_s", "policies_0", "parallel_1"], 0],
				["new connections/s, 1 at a time, \($npol) policies", ["conn_per_s", "policies_\($npol)", "parallel_1"], 0]
			else empty end),
			["CPU s/GiB, proxies (both nodes)", ["cpu_s_per_gib", "proxies"], 2],
			["CPU s/GiB, iperf3 client + server", ["cpu_s_per_gib", "client_server"], 2],
			(([0] + $j.settings.idle_connections)[] | ["RSS KiB, proxies, \(.) idle conns", ["rss_kib", "idle_\(.)", "total"], 0]),
			["RSS KiB per idle connection", ["rss_per_idle_conn_kib"], 2]
		];
		. as $j
		| "| figure | direct | stunnel | ambit | ambit_pod | ambit/stunnel | ambit/direct | ambit_pod/ambit |",
		  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
		  (rows[] | . as [$l, $p, $n]
			| ($j.direct | getpath($p)) as $d | ($j.stunnel | getpath($p)) as $s | ($j.ambit | getpath($p)) as $a
			| (($j.ambit_pod // {}) | getpath($p)) as $ap
			| "| \($l) | \($d | f($n)) | \($s | f($n)) | \($a | f($n)) | \($ap | f($n)) | \(r($a; $s) | f(2)) | \(r($a; $d) | f(2)) | \(r($ap; $a) | f(2)) |")
	' "$json"
}

# HTTP/2 and HTTP/1.1 through the waypoint against direct (markdown).
http_table() {
	jq -r '
		def f(n): if . == null then "-" elif (type == "number") then (. * pow(10; n) | round / pow(10; n) | tostring) else tostring end;
		def r(x; y): if x == null or y == null or y == 0 then null else x / y end;
	# the median over the rounds of on/off of metric m, each round a pair on the same agents
	def pair_ratio($a; m): [($a.http_request_spans_on // {}) | to_entries[] | select(.key | startswith("round_"))
		| r(.value[m]; $a.http_request_spans_off[.key][m]) | select(. != null)] | med;
		. as $j
		| "| figure | direct | waypoint | waypoint/direct |", "| --- | ---: | ---: | ---: |",
		  ([["HTTP/2 GETs/s", ["h2", "req_per_s"], 0], ["HTTP/2 GET, p50 (us)", ["h2", "p50_us"], 0],
		    ["HTTP/2 GET, p99 (us)", ["h2", "p99_us"], 0], ["HTTP/1.1 GETs/s", ["h1", "req_per_s"], 0],
		    ["HTTP/1.1 GET, p50 (us)", ["h1", "p50_us"], 0], ["HTTP/1.1 GET, p99 (us)", ["h1", "p99_us"], 0]][]
			| . as [$l, $p, $n]
			| ($j.direct.http_load // {} | getpath($p)) as $d | ($j.waypoint.http_load // {} | getpath($p)) as $w
			| "| \($l) | \($d | f($n)) | \($w | f($n)) | \(r($w; $d) | f(2)) |")
	' "$json"
}

targets() {
	jq -r '
		def f(n): if . == null then "-" else (. * pow(10; n) | round / pow(10; n) | tostring) end;
		def v(x; ok): if x == null then "unmeasured" elif ok then "met" else "missed" end;
		.ratios as $r | .ambit.rss_per_idle_conn_kib as $m
		| "| target | figure | result |", "| --- | ---: | --- |",
		  "| throughput >= 1.5x stunnel (1 stream) | \($r.throughput_vs_stunnel | f(3))x | \(v($r.throughput_vs_stunnel; $r.throughput_vs_stunnel >= 1.5)) |",
		  "| throughput >= 1.5x stunnel (8 streams) | \($r.throughput_8_streams_vs_stunnel | f(3))x | \(v($r.throughput_8_streams_vs_stunnel; $r.throughput_8_streams_vs_stunnel >= 1.5)) |",
		  "| p50 latency <= stunnel (1 B) | \($r.p50_latency_vs_stunnel | f(3))x | \(v($r.p50_latency_vs_stunnel; $r.p50_latency_vs_stunnel <= 1)) |",
		  "| p50 latency <= stunnel (1 KiB) | \($r.p50_latency_1k_vs_stunnel | f(3))x | \(v($r.p50_latency_1k_vs_stunnel; $r.p50_latency_1k_vs_stunnel <= 1)) |",
		  "| new connections/s >= 3x stunnel (1 at a time) | \($r.conn_rate_vs_stunnel | f(3))x | \(v($r.conn_rate_vs_stunnel; $r.conn_rate_vs_stunnel >= 3)) |",
		  # under 1,000 idle connections the fixed growth of the processes (malloc arenas, the
		  # epoll and conn tables) dominates the per-connection figure: not judged then
		  (if (.ambit.idle_max // 0) < 1000 and $m != null then
			"| <= 8 KiB RSS per idle connection (both agents) | \($m | f(2)) KiB | not judged (\(.ambit.idle_max) idle connections; the target is for 1,000 or more) |"
		  else
			"| <= 8 KiB RSS per idle connection (both agents) | \($m | f(2)) KiB | \(v($m; $m <= 8)) |"
		  end),
		  (if $r.http_p50_latency_request_spans_on_vs_off != null then
			"| HTTP p50 with request spans within 5% of without (issue 17) | \($r.http_p50_latency_request_spans_on_vs_off | f(3))x | \(v($r.http_p50_latency_request_spans_on_vs_off; $r.http_p50_latency_request_spans_on_vs_off <= 1.05)) |",
			"| HTTP GETs/s with request spans within 10% of without (issue 17) | \($r.http_req_per_s_request_spans_on_vs_off | f(3))x | \(v($r.http_req_per_s_request_spans_on_vs_off; $r.http_req_per_s_request_spans_on_vs_off >= 0.9)) |"
		  else empty end),
		  (if .settings.policies > 0 then "| new connections/s with \(.settings.policies) policies within 10% of none (issue 13) | \($r.conn_rate_policies_vs_none | f(3))x | \(v($r.conn_rate_policies_vs_none; $r.conn_rate_policies_vs_none >= 0.9)) |" else empty end)
	' "$json"
}

{
	echo "# ambit benchmark, $DATE"
	echo
	jq -r '.machine | "Machine: \(.cores) cores (\(.cpu)), \(.mem_mib) MiB, kernel \(.kernel). Run \(.date), git \(.git_rev).",
		"", "Software: \(.ambitd); \(.stunnel); \(.openssl); \(.iperf3)."' "$json"
	jq -r '.settings | "Settings: iperf3 \(.iperf3_seconds) s per run; \(.rr_count) round trips per latency run; \(.crr_count) connections per connection-rate run; idle connections \(.idle_connections | map(tostring) | join(", ")); whole run \(.run_seconds) s."' "$json"
	echo
	echo "Client pod n1-p1 on node 1 to server pod n2-p1 on node 2 (routed CNI). direct: no proxy."
	echo "stunnel: client-mode stunnel on node 1 -> server-mode stunnel on node 2 -> server pod, mutual"
	echo "TLS 1.3, P-256 certificates from the lab CA, chains and names verified both sides, one TLS"
	echo "connection per TCP connection. ambit: both ambitd with the lab config, eBPF capture, HBONE"
	echo "(mutual TLS 1.3 + HTTP/2 CONNECT, pooled per node and destination identity). ambit_pod: the"
	echo "same agents with hbone.dial \"pod\" (ztunnel's form: TLS to the server pod's IP:15008, no SNI,"
	echo "captured on node 2, pooled per source pod and destination pod; with one client pod and one"
	echo "server pod here both pool the same way, so the difference is the address form and its"
	echo "capture; across many pods the pod form opens one TLS connection per pod pair)."
	echo "Ratios are ambit's figure divided by the other's (ambit_pod/ambit: the pod form's over the"
	echo "node form's)."
	echo
	table
	echo
	echo "## HTTP/2 and HTTP/1.1 through the waypoint (issue 16)"
	echo
	jq -r '.settings.http_load | if .skipped then "Not measured: \(.skipped)." else
		"h2load GETs of /bytes/\(.body_bytes) (tests/node/h2_server.js in the server pod, the same server for both protocols), \(.requests) requests per run, \(.in_flight) in flight: HTTP/2 (h2c prior knowledge) on \(.h2_connections) connections x \(.h2_streams_per_connection) streams, HTTP/1.1 on \(.h1_connections) keep-alive connections. direct: client pod to the server pod, no agent. waypoint: both agents and ambit-waypoint, the client calling service h2b (port 80 appProtocol kubernetes.io/h2c, port 81 http) whose waypoint it is: HBONE to the waypoint, which forwards to the server pod. p50/p99 from h2load'"'"'s per-request log." end' "$json"
	jq -r '(.waypoint.http_load.requests_seen_by_waypoint // null) as $n | .settings.http_load as $h
		| if $n == null then empty else
		"The waypoint counted \($n) requests to h2b in istio_requests_total (two runs of \($h.requests) plus their warm-ups: \(2 * ($h.requests + ($h.requests / 10 | floor) + 1)) and its smoke GET; far fewer means it passed the connections as TCP)." end' "$json"
	echo
	http_table
	echo
	echo "## Targets (issues 8, 13 and 17)"
	echo
	targets
	echo
	echo "## Notes"
	echo
	jq -r '
		(["direct", "stunnel", "ambit", "ambit_pod", "waypoint"][] as $n | .[$n] // {status: "skipped"} |
			(if .status != "ok" then "- \($n): \(.reason // .status)." else empty end),
			(if .idle_error then "- \($n): idle connections stopped at \(.idle_max // 0): \(.idle_error)." else empty end)),
		(if .stunnel.tls then "- TLS as negotiated (openssl s_client against the node 2 side): stunnel \(.stunnel.tls); ambit HBONE \(.ambit.tls // "-"); ambit_pod HBONE \(.ambit_pod.tls // "-")." else empty end),
		(if (.ambit.stop.node1.seconds // 0) > 5 or (.ambit.stop.node2.seconds // 0) > 5 then
			"- After the run, the agents took \(.ambit.stop.node1.seconds) s and \(.ambit.stop.node2.seconds) s to stop on SIGTERM (exit status \(.ambit.stop.node1.exit) and \(.ambit.stop.node2.exit); 137 means killed after 10 s)." else empty end),
		"- 1-minute load average at the start and end of each path (other work on the machine shows here; the bench itself adds about 2-3): direct \(.direct.loadavg_1m.start // "-")-\(.direct.loadavg_1m.end // "-"), stunnel \(.stunnel.loadavg_1m.start // "-")-\(.stunnel.loadavg_1m.end // "-"), ambit \(.ambit.loadavg_1m.start // "-")-\(.ambit.loadavg_1m.end // "-"), ambit_pod \(.ambit_pod.loadavg_1m.start // "-")-\(.ambit_pod.loadavg_1m.end // "-").",
		(if .ambit.http_request_spans_on then "- HTTP with request spans on and off: \(.settings.request_span_rounds) pairs of runs on the same two agents (after \(.settings.request_span_warmup) untimed requests), back to back, alternating which arm goes first, \(if .settings.request_span_pin then "the agent and the pod of each node pinned to a CPU of their own (taskset)" else "unpinned" end); off = a mesh-wide Telemetry with disableSpanReporting applied at run time, on = none; the on/off ratios are the medians of the ratios of the pairs. p50 per round (us), on: \([.ambit.http_request_spans_on | to_entries[] | select(.key | startswith("round_")) | .value.p50 | tostring] | join(", ")); off: \([.ambit.http_request_spans_off | to_entries[] | select(.key | startswith("round_")) | .value.p50 | tostring] | join(", ")); spans made per round, on: \([.ambit.http_request_spans_on | to_entries[] | select(.key | startswith("round_")) | .value.spans_made | tostring] | join(", ")); off: \([.ambit.http_request_spans_off | to_entries[] | select(.key | startswith("round_")) | .value.spans_made | tostring] | join(", ")). The plain HTTP rows (ambit column) come from the same agents before, request spans on, unpinned." else empty end),
		"- RSS is VmRSS of the two proxies (node 1 + node 2) with the idle connections open and proven by one echoed byte each; per connection = (RSS at the largest count - RSS at 0) / count.",
		"- CPU s/GiB: utime+stime (/proc/PID/stat) over both iperf3 runs, divided by the GiB received. Softirq work is charged to whatever runs when it fires, so the split between proxies and client+server is approximate; their sum is not.",
		"- 2 cores are shared by the client, the server, both proxies and the kernel work of four veth hops; figures are for comparing paths in one run, not absolute capacity."
	' "$json"
	if compgen -G "$WORK/profile-*.txt" >/dev/null; then
		echo
		echo "## Profile (perf record -g on $([ "$PROFILE_ALL" = 1 ] && echo "the whole machine" || echo "both agents") while the workload ran)"
		echo
		echo '```'
		cat "$WORK"/profile-*.txt
		echo '```'
	fi
} >"$md"

echo
table
echo
http_table
echo
targets
echo
say "wrote $json and $md in $((SECONDS - T_START)) s"
[ ${#FAILED[@]} -eq 0 ] || die "path(s) did not work: ${FAILED[*]}"
