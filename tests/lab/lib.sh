# SPDX-License-Identifier: Apache-2.0
# tests/lab/lib.sh: helpers for the lab test scripts (source it). Brings labs up and down through
# deploy/lab/lab.sh (torn down by an EXIT trap whatever happens), runs commands in pods, starts
# and stops agents, and prints the "ok - NAME" / "not ok - NAME" lines that tests/run.sh counts.
# shellcheck shell=bash

LAB_TOP=${AMBIT_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
AMBIT_BUILD=${AMBIT_BUILD:-build}
case $AMBIT_BUILD in /*) ;; *) AMBIT_BUILD=$LAB_TOP/$AMBIT_BUILD ;; esac
LAB_SH=$LAB_TOP/deploy/lab/lab.sh
LAB_ROOT=${AMBIT_LAB_ROOT:-/run/ambit-lab}
TCPKIT=${TCPKIT:-$AMBIT_BUILD/tests/tools/tcpkit}
[ -x "$TCPKIT" ] || TCPKIT=$LAB_TOP/build/tests/tools/tcpkit # tools build fine outside san
AGENT_READY_TIMEOUT=${AGENT_READY_TIMEOUT:-60}
export AMBIT_BUILD TCPKIT

LAB_PASSED=0
LAB_FAILED=0
_LAB_UP=()        # labs this script brought up, torn down on exit
_LAB_TMP=()       # lab_tmpdir's directories: removed on exit when nothing failed
_LAB_TRAP_SET=""

ok() { echo "ok - $*"; LAB_PASSED=$((LAB_PASSED + 1)); }
fail() { echo "not ok - $*"; LAB_FAILED=$((LAB_FAILED + 1)); }
note() { echo "# $*"; }

# How long lib.sh waits for a process to start, stop or answer: generous, since CI runs on a
# loaded machine; a wait ends as soon as its condition holds.
LAB_WAIT_S=${LAB_WAIT_S:-60}

# lab_until CMD...: runs CMD every 0.1 s until it succeeds (returning at once), at most LAB_WAIT_S
# seconds; 0, or 1 when it never did. Only the last run's output is shown (stdout and stderr kept
# apart): on failure, why it still failed, e.g. in `check NAME lab_until CMD...`. CMD runs in
# this shell (what it sets stays set). For a state that comes in its own time (a span exported,
# a metric counted, a model reloaded, a connection listed or closed, a line logged).
lab_until() {
	# (names CMD will not use: it runs in this function's scope and may set globals of its own)
	local _lu_end=$((SECONDS + LAB_WAIT_S)) _lu_out _lu_err _lu_rc=0
	_lu_out=$(mktemp) && _lu_err=$(mktemp) || return 1
	until "$@" >"$_lu_out" 2>"$_lu_err"; do
		_lu_rc=1
		[ "$SECONDS" -le "$_lu_end" ] || break
		sleep 0.1
		_lu_rc=0
	done
	cat "$_lu_out"
	cat "$_lu_err" >&2
	rm -f "$_lu_out" "$_lu_err"
	return "$_lu_rc"
}

# check NAME CMD...: runs CMD, prints ok/not ok; on failure shows its output (indented).
# Returns 0 either way (a failed check must not stop a `set -e` script); CHECK_RC has CMD's status.
# CMD runs with errexit off (bash's rule for functions in a condition): chain its steps with &&.
check() {
	local name=$1 out rc=0; shift
	out=$("$@" 2>&1) || rc=$?
	if [ "$rc" -eq 0 ]; then
		ok "$name"
	else
		fail "$name"
		printf '%s\n' "$out" | tail -n 20 | sed 's/^/#   /'
	fi
	CHECK_RC=$rc
	return 0
}

# jq_check FILE [JQ_OPTION...] PROGRAM: PROGRAM (reading FILE whole, as an array of JSON values,
# e.g. spans one per line) must print true; otherwise what it printed is shown.
jq_check() {
	local f=$1 prog=${!#} res
	shift
	res=$(jq -s "${@:1:$(($# - 1))}" "$prog" "$f" 2>&1) || true
	[ "$res" = true ] && return 0
	echo "got: $res"
	return 1
}

# lab_spans_ge FILE JQ_FILTER N: FILE (spans, one JSON object per line) holds at least N spans that
# select(JQ_FILTER) keeps; otherwise says how many. Spans come in their own batches: wait with
# `lab_until lab_spans_ge ...`.
lab_spans_ge() {
	local n
	n=$(jq -c "select($2)" "$1" 2>/dev/null | wc -l)
	[ "$n" -ge "$3" ] && return 0
	echo "only $n spans match '$2' in $1 (want $3)"
	return 1
}

# lab_result: the script's exit status (0 when nothing failed); call last.
lab_result() {
	note "$LAB_PASSED passed, $LAB_FAILED failed"
	[ "$LAB_FAILED" -eq 0 ]
}

_lab_on_exit() {
	local rc=$? name d
	for name in "${_LAB_UP[@]}"; do
		[ -n "$name" ] || continue
		LAB_QUIET=1 "$LAB_SH" down "$name" >/dev/null 2>&1 || echo "# lab down $name failed" >&2
	done
	for d in "${_LAB_TMP[@]}"; do
		if [ "$rc" -eq 0 ] && [ "$LAB_FAILED" -eq 0 ]; then
			rm -rf "$d"
		else
			echo "# kept for debugging: $d" >&2
		fi
	done
	exit "$rc"
}

_lab_trap() {
	[ -n "$_LAB_TRAP_SET" ] && return 0
	trap _lab_on_exit EXIT
	trap 'exit 130' INT TERM
	_LAB_TRAP_SET=1
}

# lab_tmpdir VAR NAME: makes /tmp/ambit-NAME.XXXXXX (logs, configs) and sets VAR to it; removed
# on exit when the script succeeded and nothing failed, kept (and named) otherwise.
lab_tmpdir() {
	local d
	d=$(mktemp -d "/tmp/ambit-$2.XXXXXX") || return 1
	_lab_trap
	_LAB_TMP+=("$d")
	printf -v "$1" '%s' "$d"
}

# lab_up NAME ARGS...: lab.sh up NAME ARGS (see lab.sh help); loads lab.env into LAB_* variables
# and registers the teardown on EXIT. Returns non-zero (with lab.sh's error) on failure.
lab_up() {
	local name=$1
	_lab_trap
	_LAB_UP+=("$name")
	"$LAB_SH" up "$@" || return $?
	lab_env "$name"
}

# lab_env NAME: loads an existing lab's lab.env into this shell.
lab_env() {
	local f=$LAB_ROOT/$1/lab.env
	[ -f "$f" ] || { echo "# no lab $1 ($f missing)" >&2; return 1; }
	set -a
	# shellcheck disable=SC1090
	. "$f"
	set +a
}

# lab_down NAME: stops everything in the lab and removes it.
lab_down() {
	local name=$1 i
	"$LAB_SH" down "$name" || return $?
	for i in "${!_LAB_UP[@]}"; do
		[ "${_LAB_UP[$i]}" = "$name" ] && _LAB_UP[$i]=""
	done
	return 0
}

# lab_var SUFFIX: the value of LAB_SUFFIX (e.g. lab_var N1_P2_IP).
lab_var() { local v="LAB_$1"; printf '%s\n' "${!v-}"; }
lab_pod_ip() { lab_var "N$1_P$2_IP"; }   # K M
lab_node_ip() { lab_var "N$1_IP"; }      # K

_lab_ns() { # NAME TARGET -> namespace (TARGET: ul, nK, nK-pM or a full namespace name)
	local t=$2
	case $t in ul | n[0-9]*) t="$1-$t" ;; esac
	[ -e "/run/netns/$t" ] || { echo "# lab $1 has no namespace $t" >&2; return 1; }
	echo "$t"
}

# pod_exec NAME POD CMD...: runs CMD in the network namespace of POD (nK-pM; nK for a node, ul).
pod_exec() {
	local ns
	ns=$(_lab_ns "$1" "$2") || return 1
	shift 2
	nsenter --net="/run/netns/$ns" -- "$@"
}

# lab_metric NAME K METRIC [LABEL=VALUE]: the sum of METRIC's samples on node K's agent
# (:15020/metrics), only those carrying LABEL="VALUE" when given; 0 when there are none.
lab_metric() {
	local sel=${4:+${4%%=*}=\"${4#*=}\"}
	pod_exec "$1" "n$2" curl -fsS -m 5 "http://$(lab_node_ip "$2"):15020/metrics" |
		awk -v m="$3" -v r="$sel" '($1 == m || index($1, m "{") == 1) && index($0, r) { s += $NF }
			END { printf "%.0f\n", s }'
}

# lab_model JQ: rewrites the lab's workloads file through JQ (the agents reload it within 1 s).
lab_model() {
	jq "$1" "$LAB_WORKLOADS" >"$LAB_WORKLOADS.tmp" && mv "$LAB_WORKLOADS.tmp" "$LAB_WORKLOADS"
}

# lab_telemetry_is NAME NS/WORKLOAD JQ NODE...: until every NODE's (nK) agent answers
# `ambitctl telemetry --workload NS/WORKLOAD -o json` with something JQ finds true (each agent
# reloads the workloads file on its own: a change is in force once all have it); the last
# answer is shown when one never does.
lab_telemetry_is() {
	local name=$1 wl=$2 filter=$3 k end good
	shift 3
	for k; do
		good=""
		end=$((SECONDS + LAB_WAIT_S))
		while [ "$SECONDS" -le "$end" ]; do
			if pod_exec "$name" "$k" "$AMBIT_BUILD/ambitctl" telemetry --workload "$wl" -o json 2>/dev/null |
				jq -e "$filter" >/dev/null; then
				good=1
				break
			fi
			sleep 0.2
		done
		[ -n "$good" ] && continue
		pod_exec "$name" "$k" "$AMBIT_BUILD/ambitctl" telemetry --workload "$wl" -o json | sed 's/^/#   /' >&2 || true
		return 1
	done
}

# pod_spawn NAME POD LOG CMD...: starts CMD in the background in POD, output to LOG; records the
# pid in the lab's pids file (killed by lab down) and sets SPAWNED_PID.
pod_spawn() {
	local name=$1 pod=$2 log=$3 ns
	ns=$(_lab_ns "$name" "$pod") || return 1
	shift 3
	nsenter --net="/run/netns/$ns" -- "$@" >"$log" 2>&1 </dev/null &
	SPAWNED_PID=$!
	echo "$SPAWNED_PID $pod $(basename "$1")" >>"$LAB_ROOT/$name/pids"
}

# wait_port NAME POD PORT [TIMEOUT_S]: waits until something listens on TCP PORT in POD's
# namespace (checked with ss, so no connection is made to the server), at most TIMEOUT_S
# seconds (LAB_WAIT_S by default: a server starts slowly on a loaded machine).
wait_port() {
	local name=$1 pod=$2 port=$3 t=${4:-$LAB_WAIT_S} ns end
	ns=$(_lab_ns "$name" "$pod") || return 1
	end=$((SECONDS + t))
	while [ "$SECONDS" -le "$end" ]; do
		[ -n "$(nsenter --net="/run/netns/$ns" -- ss -Hltn "sport = :$port" 2>/dev/null)" ] &&
			return 0
		sleep 0.05
	done
	echo "# nothing listens on port $port in $ns after ${t}s" >&2
	return 1
}

# Mounts bpffs at /sys/fs/bpf when it is not: the agents of a lab share it for their pins.
_lab_bpffs() {
	[ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" = bpf_fs ] && return 0
	mkdir -p /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf
}

# _lab_run_ready NAME NS WHAT BIN LOG PIDFILE URL [ARGS...]: runs BIN ARGS in namespace NS in the
# background (output appended to LOG, pid in PIDFILE and the lab's pids file), then waits up to
# AGENT_READY_TIMEOUT seconds for URL (fetched in NS). Non-zero, with LOG's tail, when BIN exits
# or never becomes ready.
_lab_run_ready() {
	local name=$1 ns=$2 what=$3 bin=$4 log=$5 pidf=$6 url=$7 pid end
	shift 7
	[ -x "$bin" ] || { echo "# $what: binary $bin not built" >&2; return 1; }
	if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
		echo "# $what already running (pid $(cat "$pidf"))" >&2
		return 1
	fi
	echo "# start $what: $(date -u +%FT%TZ)" >>"$log"
	# nsenter (not ip netns exec) keeps the shared /sys/fs/bpf visible to the agent.
	nsenter --net="/run/netns/$ns" -- "$bin" "$@" >>"$log" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$pidf"
	echo "$pid ${ns#"$name"-} $(basename "$bin")" >>"$LAB_ROOT/$name/pids"
	end=$((SECONDS + AGENT_READY_TIMEOUT))
	while :; do
		nsenter --net="/run/netns/$ns" -- curl -fsS -m 1 -o /dev/null "$url" 2>/dev/null && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			local rc=0
			wait "$pid" 2>/dev/null || rc=$?
			echo "# $what exited (status $rc) before ready; log tail:" >&2
			tail -n 20 "$log" | sed 's/^/#   /' >&2
			return 1
		fi
		if [ "$SECONDS" -ge "$end" ]; then
			echo "# $what not ready at $url after ${AGENT_READY_TIMEOUT}s; log tail:" >&2
			tail -n 20 "$log" | sed 's/^/#   /' >&2
			return 1
		fi
		sleep 0.1
	done
}

# lab_raw_exchange NAME POD HOST PORT: sends stdin to HOST:PORT from POD in one go (no half-close)
# and prints what comes back until the peer closes, 30 s at most: raw HTTP/1.1 pipelines, read
# without a fixed wait (nc -q waits its whole time).
lab_raw_exchange() {
	pod_exec "$1" "$2" python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(sys.stdin.buffer.read())
got = b""
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += b
except socket.timeout:
    pass
sys.stdout.write(got.decode("latin1"))' "$3" "$4"
}

# lab_node_deps: the npm packages of tests/node (grpc-js, proto-loader, ...) are installed, or
# installs them; non-zero (reported) when that fails.
lab_node_deps() {
	[ -d "$LAB_TOP/tests/node/node_modules/@grpc/proto-loader" ] && return 0
	"$LAB_TOP/tests/node/install.sh" || { fail "tests/node/install.sh"; return 1; }
}

# lab_ca_peers: what the ambit-ca tests on 127.0.0.1 use: CA_BIN (the binary), NODE (the
# grpc-js Istio client's directory, installed when missing), MINT (the token minter) and PY (a
# python3 with h2 and cryptography). Non-zero, with a failed check, when one is missing.
lab_ca_peers() {
	local p
	CA_BIN=$AMBIT_BUILD/ambit-ca
	NODE=$LAB_TOP/tests/node
	MINT=$LAB_TOP/tests/tools/mint_token.py
	# python3-h2 and python3-cryptography: the system python has them when another one is first
	PY=python3
	for p in /usr/bin/python3 python3; do "$p" -c 'import h2, cryptography' 2>/dev/null && { PY=$p; break; }; done
	[ -x "$CA_BIN" ] || { fail "ambit-ca built ($CA_BIN)"; return 1; }
	lab_node_deps
}

# lab_secret_volume DIR KEY CERT...: a new version of a Kubernetes Secret volume at DIR as the
# kubelet writes one: the files in DIR/..vN/ (ca.key = KEY, ca.crt = the CERTs concatenated),
# DIR/..data -> ..vN swapped by rename, DIR/ca.crt and DIR/ca.key -> ..data/... (made once).
lab_secret_volume() {
	local dir=$1 key=$2 v=1
	shift 2
	mkdir -p "$dir" || return 1
	while [ -e "$dir/..v$v" ]; do v=$((v + 1)); done
	mkdir "$dir/..v$v" && cat "$@" >"$dir/..v$v/ca.crt" && install -m 600 "$key" "$dir/..v$v/ca.key" &&
		ln -sfn "..v$v" "$dir/..data_tmp" && mv -T "$dir/..data_tmp" "$dir/..data" || return 1
	[ -L "$dir/ca.crt" ] || ln -s ..data/ca.crt "$dir/ca.crt" || return 1
	[ -L "$dir/ca.key" ] || ln -s ..data/ca.key "$dir/ca.key"
}

# lab_start_ca NAME: runs $AMBIT_BUILD/ambit-ca --config ca.json in the underlay namespace (log
# ca.log, pid ca.pid) when the lab has one (lab.sh up --ca ambit-ca, the default) and it is not
# running yet, and waits for its readiness (127.0.0.1:15014 in the underlay). 0 when the lab has
# no CA to run (development mode: the agents sign themselves).
lab_start_ca() {
	local name=$1 dir=$LAB_ROOT/$1
	[ -f "$dir/ca.json" ] || return 0
	[ -f "$dir/ca.pid" ] && kill -0 "$(cat "$dir/ca.pid")" 2>/dev/null && return 0
	_lab_run_ready "$name" "$name-ul" ambit-ca "$AMBIT_BUILD/ambit-ca" "$dir/ca.log" "$dir/ca.pid" \
		http://127.0.0.1:15014/healthz/ready --config "$dir/ca.json"
}

# lab_stop_ca NAME [SIGNAL]: stops the lab's ambit-ca (SIGTERM by default, SIGKILL after LAB_WAIT_S).
lab_stop_ca() {
	_lab_stop "$LAB_ROOT/$1/ca.pid" ambit-ca "${2:-TERM}"
}

# lab_start_agent NAME K [ARGS...]: runs $AMBIT_BUILD/ambitd --config nodeK.json in node K's
# namespace in the background (log: agentK.log, pid: agentK.pid and the pids file), then waits
# up to AGENT_READY_TIMEOUT seconds for http://NODE_IP:15021/healthz/ready (which needs its
# workloads' certificates: the lab's ambit-ca is started first, see lab_start_ca). Returns
# non-zero, with the log's tail, when the agent exits or never becomes ready.
lab_start_agent() {
	local name=$1 k=$2 dir=$LAB_ROOT/$1 ip
	shift 2
	[ -f "$dir/node$k.json" ] || { echo "# lab $name has no node $k" >&2; return 1; }
	lab_start_ca "$name" || return 1
	ip=$(jq -r .node_ip "$dir/node$k.json")
	_lab_bpffs || { echo "# cannot mount bpffs at /sys/fs/bpf" >&2; return 1; }
	_lab_run_ready "$name" "$name-n$k" "agent on node $k" "$AMBIT_BUILD/ambitd" "$dir/agent$k.log" \
		"$dir/agent$k.pid" "http://$ip:15021/healthz/ready" --config "$dir/node$k.json" "$@"
}

# _lab_stop PIDFILE WHAT SIGNAL: stops the process (SIGKILL after LAB_WAIT_S); LAB_STOP_EXIT is its
# exit status when this shell started it.
_lab_stop() {
	local f=$1 what=$2 sig=$3 pid end=$((SECONDS + LAB_WAIT_S))
	LAB_STOP_EXIT=""
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	rm -f "$f"
	kill -0 "$pid" 2>/dev/null || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
	while [ "$SECONDS" -le "$end" ]; do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "# $what ignored SIG$sig for ${LAB_WAIT_S}s: killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	local rc=0
	wait "$pid" 2>/dev/null || rc=$?
	LAB_STOP_EXIT=$rc
	return 0
}

# lab_stop_agents NAME K...: SIGTERM to those nodes' agents (the ones started by this shell);
# fails unless each exits 0 (ASan builds report leaks and errors through the exit status) with
# no sanitizer report in its log. Run it in the test's own shell, not in `check` (a subshell
# cannot wait for the agents).
lab_stop_agents() {
	local name=$1 k bad=0
	shift
	for k; do
		[ -f "$LAB_ROOT/$name/agent$k.pid" ] || continue
		lab_stop_agent "$name" "$k"
		if [ "${AGENT_EXIT:-0}" != 0 ]; then
			echo "# agent $k exited with status $AGENT_EXIT" >&2
			bad=1
		fi
		if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$LAB_ROOT/$name/agent$k.log"; then
			echo "# sanitizer report in agent $k's log:" >&2
			grep -E -A15 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' \
				"$LAB_ROOT/$name/agent$k.log" | head -40 | sed 's/^/#   /' >&2
			bad=1
		fi
	done
	return "$bad"
}

# lab_sink_start NAME OUT LOGDIR: tests/node/otlp_sink.js (an independent OTLP receiver) on the
# lab's underlay, gRPC 4317 and HTTP 4318 (where lab.sh's agent configs export), one JSON line
# per received span to OUT; its log in LOGDIR/sink.log. Sets LAB_SINK_PID. Needs
# tests/node/install.sh to have run.
LAB_SINK_PID=""
lab_sink_start() {
	local name=$1 out=$2 ready=$3/sink.ready end=$((SECONDS + LAB_WAIT_S))
	rm -f "$ready"
	pod_spawn "$name" ul "$3/sink.log" node "$LAB_TOP/tests/node/otlp_sink.js" \
		--host "$LAB_UL_IP" --grpc-port 4317 --http-port 4318 --out "$out" --ready "$ready" ||
		return 1
	LAB_SINK_PID=$SPAWNED_PID
	: >>"$out"
	while [ "$SECONDS" -le "$end" ]; do
		[ -s "$ready" ] && return 0
		kill -0 "$LAB_SINK_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "# the OTLP sink did not start; its log:" >&2
	sed 's/^/#   /' "$3/sink.log" >&2
	return 1
}

# lab_sink_stop NAME: stops the sink and waits until nothing listens on its ports (the agents
# must see the collector gone).
lab_sink_stop() {
	local end=$((SECONDS + LAB_WAIT_S))
	[ -n "$LAB_SINK_PID" ] || return 0
	kill -TERM "$LAB_SINK_PID" 2>/dev/null || true
	while [ "$SECONDS" -le "$end" ]; do kill -0 "$LAB_SINK_PID" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$LAB_SINK_PID" 2>/dev/null || true
	wait "$LAB_SINK_PID" 2>/dev/null || true
	LAB_SINK_PID=""
	end=$((SECONDS + LAB_WAIT_S))
	while [ "$SECONDS" -le "$end" ]; do
		[ -z "$(pod_exec "$1" ul ss -Hltn 'sport = :4317 or sport = :4318')" ] && return 0
		sleep 0.1
	done
	echo "# the sink's ports are still open" >&2
	return 1
}

# lab_h2peer: sets H2PEER (tests/tools/h2peer.py, the independent HBONE peer) and H2PY, a python3
# that has python3-h2 (the system one has it when another python3 comes first in PATH).
lab_h2peer() {
	local p
	H2PEER=$LAB_TOP/tests/tools/h2peer.py
	H2PY=python3
	for p in /usr/bin/python3 python3; do "$p" -c 'import h2' 2>/dev/null && { H2PY=$p; break; }; done
}

# lab_need_waypoint_h2 WHAT: what the waypoint's HTTP/2 lab tests need (root, ambit-waypoint,
# node, python3-h2 through lab_h2peer); prints "not ok - WHAT (why)" and exits 1 when one is missing.
lab_need_waypoint_h2() {
	local why=
	if [ "$(id -u)" -ne 0 ]; then why="needs root"
	elif WAYPOINT_BIN=$AMBIT_BUILD/ambit-waypoint; [ ! -x "$WAYPOINT_BIN" ]; then why="$WAYPOINT_BIN not built"
	elif ! command -v node >/dev/null; then why="node not found"
	else
		lab_h2peer
		"$H2PY" -c 'import h2' 2>/dev/null || why="python3-h2 not found"
	fi
	[ -z "$why" ] || { echo "not ok - $1 ($why)"; exit 1; }
	NODE=$(command -v node)
}

# lab_app_servers NAME LOGDIR: app-1's endpoint on n1-p1 serves HTTP/1.1 on 8080
# (tests/tools/http_echo.py) and HTTP/2 on 7070 (tests/node/h2_server.js, $NODE from
# lab_need_waypoint_h2), both named NAME-n1-p1, logs in LOGDIR; returns once both listen.
lab_app_servers() {
	pod_spawn "$1" n1-p1 "$2/http.log" python3 "$LAB_TOP/tests/tools/http_echo.py" --port 8080 \
		--name "$1-n1-p1"
	pod_spawn "$1" n1-p1 "$2/h2s.log" "$NODE" "$LAB_TOP/tests/node/h2_server.js" --port 7070 \
		--name "$1-n1-p1"
	wait_port "$1" n1-p1 8080
	wait_port "$1" n1-p1 7070
}

# lab_other_ca DIR: a CA that the mesh does not trust, DIR/ca.crt and DIR/ca.key (P-256, 1 day).
lab_other_ca() {
	mkdir -p "$1" &&
		openssl ecparam -name prime256v1 -genkey -noout -out "$1/ca.key" 2>/dev/null &&
		openssl req -x509 -new -key "$1/ca.key" -subj "/O=other" -days 1 -out "$1/ca.crt" \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# lab_leaf_ext FILE: the X.509 extensions of a mesh leaf (client and server), its URI SAN read from
# $LEAF_URI when it is signed (openssl x509 -req / openssl ca -extfile FILE).
lab_leaf_ext() {
	cat >"$1" <<'EXT'
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = URI:${ENV::LEAF_URI}
EXT
}

# lab_leaf DIR NAME URI CA_CERT CA_KEY: DIR/NAME.key and DIR/NAME.crt, a P-256 mesh leaf for the
# SPIFFE ID URI signed by that CA, valid 1 day (DIR/NAME.csr and DIR/leaf.ext are left there).
lab_leaf() {
	local dir=$1 n=$2
	lab_leaf_ext "$dir/leaf.ext" &&
		openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=$n" \
			-keyout "$dir/$n.key" -out "$dir/$n.csr" 2>/dev/null &&
		LEAF_URI=$3 openssl x509 -req -in "$dir/$n.csr" -CA "$4" -CAkey "$5" \
			-set_serial "$RANDOM" -days 1 -extfile "$dir/leaf.ext" -out "$dir/$n.crt" 2>/dev/null
}

# lab_start_waypoint NAME LOG CONFIG: runs $AMBIT_BUILD/ambit-waypoint --config CONFIG in the lab's
# waypoint pod (lab.sh up --waypoint), output to LOG, pid in WP_PID; waits up to LAB_WAIT_S for its
# readiness. Returns non-zero (with the log's tail) when it exits or never becomes ready.
lab_start_waypoint() {
	local name=$1 log=$2 end=$((SECONDS + LAB_WAIT_S))
	pod_spawn "$name" "$LAB_WAYPOINT_POD" "$log" "$AMBIT_BUILD/ambit-waypoint" --config "$3"
	WP_PID=$SPAWNED_PID
	while [ "$SECONDS" -le "$end" ]; do
		pod_exec "$name" "$LAB_WAYPOINT_POD" curl -fsS -m 1 -o /dev/null \
			"http://$LAB_WAYPOINT_IP:15021/healthz/ready" 2>/dev/null && return 0
		kill -0 "$WP_PID" 2>/dev/null || break
		sleep 0.1
	done
	tail -n 20 "$log" | sed 's/^/#   /'
	return 1
}

# lab_waypoint_metric NAME REGEX: a line of the waypoint's metrics (:15020) matches REGEX.
lab_waypoint_metric() {
	pod_exec "$1" "$LAB_WAYPOINT_POD" curl -fsS -m 5 "http://$LAB_WAYPOINT_IP:15020/metrics" |
		grep -E "$2"
}

# lab_check_waypoint_exit LOG: SIGTERM to the waypoint (WP_PID), then two checks: it exits 0
# within 10 s, and LOG has no sanitizer report and nothing at error level.
lab_check_waypoint_exit() {
	local log=$1 rc=0
	kill -TERM "$WP_PID" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$WP_PID" 2>/dev/null || break; sleep 0.1; done
	wait "$WP_PID" || rc=$?
	check "waypoint exits 0 on SIGTERM (exit $rc)" test "$rc" -eq 0
	check "waypoint: no sanitizer report, nothing at error level" \
		sh -c "! grep -Eq 'Sanitizer|runtime error|\"level\":\"error\"' '$log'"
}

# capture_state NAME K POD: what capture leaves in node K's namespace, one line per item:
# tc filters and clsact qdiscs on any interface, rules and routes of table 133, pins, the static
# FDB entry of POD (nK-pM) on a bridge, tcp_early_demux.
capture_state() {
	local name=$1 k=$2 pod=$3 ns=$1-n$2 dev mac hostif pin
	for dev in $(ip -n "$ns" -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'); do
		ip netns exec "$ns" tc filter show dev "$dev" ingress | sed "s/^/tc $dev ingress: /"
		ip netns exec "$ns" tc filter show dev "$dev" egress | sed "s/^/tc $dev egress: /"
		ip netns exec "$ns" tc qdisc show dev "$dev" | grep clsact | sed "s/^/qdisc $dev: /"
	done
	ip -n "$ns" rule show | grep -w 'lookup 133' | sed 's/^/rule: /'
	ip -n "$ns" route show table all | grep -w 'table 133' | sed 's/^/route: /'
	ip -n "$ns" -6 route show table all | grep -w 'table 133' | sed 's/^/route6: /'
	pin=$(lab_var "N${k}_PIN_DIR")
	[ -e "$pin" ] && find "$pin" | sed 's/^/pin: /'
	if [ "$LAB_CNI" = bridge ]; then
		hostif=$(lab_var "$(echo "$pod" | tr 'a-z-' 'A-Z_')_HOSTIF")
		mac=$(ip -n "$name-$pod" -o link show eth0 | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2)
		bridge -n "$ns" fdb show brport "$hostif" | grep -i "^$mac " | grep -w static | sed 's/^/fdb: /'
	fi
	[ "$(ip netns exec "$ns" sysctl -n net.ipv4.tcp_early_demux)" = 1 ] || echo "sysctl: tcp_early_demux is not 1"
	return 0
}

# lab_stop_agent NAME K [SIGNAL]: stops node K's agent (SIGTERM by default, SIGKILL after LAB_WAIT_S);
# sets AGENT_EXIT to its exit status when this shell started it.
lab_stop_agent() {
	_lab_stop "$LAB_ROOT/$1/agent$2.pid" "agent on node $2" "${3:-TERM}"
	AGENT_EXIT=$LAB_STOP_EXIT
}
