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
AGENT_READY_TIMEOUT=${AGENT_READY_TIMEOUT:-30}
export AMBIT_BUILD TCPKIT

LAB_PASSED=0
LAB_FAILED=0
_LAB_UP=()        # labs this script brought up, torn down on exit
_LAB_TRAP_SET=""

ok() { echo "ok - $*"; LAB_PASSED=$((LAB_PASSED + 1)); }
fail() { echo "not ok - $*"; LAB_FAILED=$((LAB_FAILED + 1)); }
note() { echo "# $*"; }

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

# lab_result: the script's exit status (0 when nothing failed); call last.
lab_result() {
	note "$LAB_PASSED passed, $LAB_FAILED failed"
	[ "$LAB_FAILED" -eq 0 ]
}

_lab_on_exit() {
	local rc=$? name
	for name in "${_LAB_UP[@]}"; do
		[ -n "$name" ] || continue
		LAB_QUIET=1 "$LAB_SH" down "$name" >/dev/null 2>&1 || echo "# lab down $name failed" >&2
	done
	exit "$rc"
}

# lab_up NAME ARGS...: lab.sh up NAME ARGS (see lab.sh help); loads lab.env into LAB_* variables
# and registers the teardown on EXIT. Returns non-zero (with lab.sh's error) on failure.
lab_up() {
	local name=$1
	if [ -z "$_LAB_TRAP_SET" ]; then
		trap _lab_on_exit EXIT
		trap 'exit 130' INT TERM
		_LAB_TRAP_SET=1
	fi
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
# namespace (checked with ss, so no connection is made to the server).
wait_port() {
	local name=$1 pod=$2 port=$3 t=${4:-10} ns end
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

# lab_start_agent NAME K [ARGS...]: runs $AMBIT_BUILD/ambitd --config nodeK.json in node K's
# namespace in the background (log: agentK.log, pid: agentK.pid and the pids file), then waits
# up to AGENT_READY_TIMEOUT seconds for http://NODE_IP:15021/healthz/ready. Returns non-zero,
# with the log's tail, when the agent exits or never becomes ready.
lab_start_agent() {
	local name=$1 k=$2 dir=$LAB_ROOT/$1 ns="$1-n$2" bin=$AMBIT_BUILD/ambitd ip pid end
	shift 2
	[ -x "$bin" ] || { echo "# agent binary $bin not built" >&2; return 1; }
	[ -f "$dir/node$k.json" ] || { echo "# lab $name has no node $k" >&2; return 1; }
	if [ -f "$dir/agent$k.pid" ] && kill -0 "$(cat "$dir/agent$k.pid")" 2>/dev/null; then
		echo "# agent on node $k already running (pid $(cat "$dir/agent$k.pid"))" >&2
		return 1
	fi
	ip=$(jq -r .node_ip "$dir/node$k.json")
	echo "# lab_start_agent $name $k: $(date -u +%FT%TZ)" >>"$dir/agent$k.log"
	_lab_bpffs || { echo "# cannot mount bpffs at /sys/fs/bpf" >&2; return 1; }
	# nsenter (not ip netns exec) keeps the shared /sys/fs/bpf visible to the agent.
	nsenter --net="/run/netns/$ns" -- "$bin" --config "$dir/node$k.json" "$@" \
		>>"$dir/agent$k.log" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$dir/agent$k.pid"
	echo "$pid n$k ambitd" >>"$dir/pids"
	end=$((SECONDS + AGENT_READY_TIMEOUT))
	while :; do
		if nsenter --net="/run/netns/$ns" -- curl -fsS -m 1 -o /dev/null \
			"http://$ip:15021/healthz/ready" 2>/dev/null; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			local rc=0
			wait "$pid" 2>/dev/null || rc=$?
			echo "# agent on node $k exited (status $rc) before ready; log tail:" >&2
			tail -n 20 "$dir/agent$k.log" | sed 's/^/#   /' >&2
			return 1
		fi
		if [ "$SECONDS" -ge "$end" ]; then
			echo "# agent on node $k not ready at http://$ip:15021/healthz/ready after ${AGENT_READY_TIMEOUT}s; log tail:" >&2
			tail -n 20 "$dir/agent$k.log" | sed 's/^/#   /' >&2
			return 1
		fi
		sleep 0.1
	done
}

# lab_stop_agent NAME K [SIGNAL]: stops node K's agent (SIGTERM by default, SIGKILL after 10 s);
# sets AGENT_EXIT to its exit status when this shell started it.
lab_stop_agent() {
	local name=$1 k=$2 sig=${3:-TERM} f="$LAB_ROOT/$1/agent$2.pid" pid i
	AGENT_EXIT=""
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	rm -f "$f"
	kill -0 "$pid" 2>/dev/null || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "# agent on node $k ignored SIG$sig for 10s: killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	local rc=0
	wait "$pid" 2>/dev/null || rc=$?
	AGENT_EXIT=$rc
	return 0
}

# lab_h2peer: sets H2PEER (tests/tools/h2peer.py, the independent HBONE peer) and H2PY, a python3
# that has python3-h2 (the system one has it when another python3 comes first in PATH).
lab_h2peer() {
	local p
	H2PEER=$LAB_TOP/tests/tools/h2peer.py
	H2PY=python3
	for p in /usr/bin/python3 python3; do "$p" -c 'import h2' 2>/dev/null && { H2PY=$p; break; }; done
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
# waypoint pod (lab.sh up --waypoint), output to LOG, pid in WP_PID; waits up to 10 s for its
# readiness. Returns non-zero (with the log's tail) when it exits or never becomes ready.
lab_start_waypoint() {
	local name=$1 log=$2 i
	pod_spawn "$name" "$LAB_WAYPOINT_POD" "$log" "$AMBIT_BUILD/ambit-waypoint" --config "$3"
	WP_PID=$SPAWNED_PID
	for i in $(seq 100); do
		pod_exec "$name" "$LAB_WAYPOINT_POD" curl -fsS -m 1 -o /dev/null \
			"http://$LAB_WAYPOINT_IP:15021/healthz/ready" 2>/dev/null && return 0
		kill -0 "$WP_PID" 2>/dev/null || break
		sleep 0.1
	done
	tail -n 20 "$log" | sed 's/^/#   /'
	return 1
}
