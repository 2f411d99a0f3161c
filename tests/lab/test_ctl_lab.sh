#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ambitctl against real agents in the lab: every command in both formats, a live long connection
# in `connections`, the waterfall of a two-node trace (node 2's admin API forwarded into node 1,
# as an operator would with a port-forward), and one clear error line with exit 1 when the agent
# cannot be reached.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - ctl lab (needs root)"; exit 1; }
lab_tmpdir logs ctl-lab
lab=ctl-$$	# unique: other runs of this test may be up at the same time
CTL=$AMBIT_BUILD/ambitctl

ctl() { pod_exec "$lab" n1 "$CTL" "$@"; }

if ! lab_up "$lab" --nodes 2 --pods 2 --cni routed --enroll p1 >"$logs/up.log" 2>&1; then
	fail "lab up"; lab_result; exit 1
fi
p21=$(lab_pod_ip 2 1)
pod_spawn "$lab" n2-p1 "$logs/echo.log" "$TCPKIT" serve --port 9000 --mode echo
wait_port "$lab" n2-p1 9000
if ! lab_start_agent "$lab" 1 || ! lab_start_agent "$lab" 2; then
	fail "agents start"; lab_result; exit 1
fi
# A long connection (open for the whole test) and a finished one (spans on both nodes).
pod_spawn "$lab" n1-p1 "$logs/long.log" sh -c "(echo hello; sleep 120) | socat - TCP:$p21:9000"
long=$SPAWNED_PID
pod_exec "$lab" n1-p1 "$TCPKIT" client --to "$p21:9000" --mode echo --conns 1 >/dev/null

for cmd in workloads services certificates connections bpf spans config log; do
	check "ambitctl $cmd (table)" ctl "$cmd"
	check "ambitctl $cmd -o json parses" sh -c "nsenter --net=/run/netns/$lab-n1 $CTL $cmd -o json | jq -e . >/dev/null"
done

check "workloads lists the enrolled pods as HBONE" \
	sh -c "nsenter --net=/run/netns/$lab-n1 $CTL workloads | grep -E '$lab-n2-p1 +10.244.2.11 +$lab-n2 .* HBONE'"
check "connections shows the live long connection" lab_until \
	sh -c "nsenter --net=/run/netns/$lab-n1 $CTL connections -o json | jq -e '.connections | map(select(.dst == \"$p21:9000\" and .direction == \"outbound\")) | length >= 1' >/dev/null"
check "... and the HBONE tunnel carrying it" \
	sh -c "nsenter --net=/run/netns/$lab-n1 $CTL connections | grep -A3 'HBONE TUNNELS' | grep -q '$(lab_node_ip 2):15008'"
check "certificates shows the local workload's identity, fresh" \
	sh -c "nsenter --net=/run/netns/$lab-n1 $CTL certificates | grep -E 'spiffe://cluster.local/ns/default/sa/app-1 .* fresh'"
check "bpf shows the enrolled pod's interface" \
	sh -c "nsenter --net=/run/netns/$lab-n1 $CTL bpf -o json | jq -e '.interfaces | length >= 1' >/dev/null"
check "config shows the node name" \
	sh -c "nsenter --net=/run/netns/$lab-n1 $CTL config | grep -q '$lab-n1'"
check "log debug changes the agent's level" \
	sh -c "nsenter --net=/run/netns/$lab-n1 $CTL log debug >/dev/null && nsenter --net=/run/netns/$lab-n1 $CTL log -o json | jq -e '.level == \"debug\"' >/dev/null"
ctl log info >/dev/null 2>&1 || true

# A two-node trace: node 2's admin API reached from node 1 through a forward.
pod_spawn "$lab" n1 "$logs/forward.log" socat TCP-LISTEN:15100,bind=127.0.0.1,reuseaddr,fork \
	"EXEC:nsenter --net=/run/netns/$lab-n2 socat - TCP\\:127.0.0.1\\:15000"
wait_port "$lab" n1 15100
finished_trace() { # the trace ID of a finished outbound span on node 1
	ctl spans -o json | jq -er '[.spans[] | select(.name == "outbound" and .end_unix_nano > 0)][0].trace_id // empty'
}
trace=$(lab_until finished_trace) || true
check "spans has a finished outbound span" test -n "$trace" -a "$trace" != null
waterfall() { # (node 2 ends its inbound span when it sees the close: it may come after node 1's)
	ctl --admin 127.0.0.1:15000,127.0.0.1:15100 spans --trace "$trace" >"$logs/waterfall.txt" 2>&1
	grep -q '2 spans on 2 nodes' "$logs/waterfall.txt" && grep -qE "^outbound +$lab-n1" "$logs/waterfall.txt" &&
		grep -qE "^  inbound +$lab-n2" "$logs/waterfall.txt"
}
check "waterfall of a two-node trace: both spans, on both nodes" lab_until waterfall
sed 's/^/# /' "$logs/waterfall.txt"

# Errors: one line on stderr, exit 1.
one_line_exit1() { # ARGS...: ambitctl exits 1 with exactly one line on stderr
	local rc=0 err
	err=$(pod_exec "$lab" n1 "$CTL" "$@" 2>&1 >/dev/null) || rc=$?
	[ "$rc" -eq 1 ] && [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || { echo "rc=$rc stderr=$err"; return 1; }
}
check "a refused connection (nothing on 127.0.0.1:15999): one line, exit 1" one_line_exit1 --admin 127.0.0.1:15999 workloads
check "the metrics port instead of the admin API (not JSON): one line, exit 1" \
	one_line_exit1 --admin "$(lab_node_ip 1):15020" workloads
pkill -TERM -P "$long" 2>/dev/null || true	# socat holds the connection: the agent drains it before exiting
kill "$long" 2>/dev/null || true
lab_stop_agent "$lab" 1
check "agent exits 0 on SIGTERM once its connections are gone" test "$AGENT_EXIT" = 0
check "agent stopped: one line, exit 1" one_line_exit1 workloads
lab_stop_agent "$lab" 2
lab_result
