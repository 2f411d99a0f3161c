#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Upgrades without resets (docs/kubernetes.md "Upgrades"), as a DaemonSet rolling update with
# maxSurge 1 / maxUnavailable 0 does them, on both nodes of a lab while traffic runs:
# - old agents (a copy of ambitd reporting another version) serve; a new agent starts in the
#   same node netns beside each, binds the shared ports (SO_REUSEPORT), takes over capture
#   (its listeners in the pinned sockmap) and 15008 once ready; the old one gets SIGTERM,
#   stops accepting and serves its open connections until they end, then exits 0, leaving
#   the tc filters and pins to the new agent;
# - throughout, a new connection every 5 ms in each direction between pods of the two nodes:
#   none fails; a long-lived stream (echoed 1 KiB every 100 ms) lasts across both upgrades;
# - `ambitctl version` shows the old version before and only the new one after.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - upgrade lab (needs root)"; exit 1; }
lab_tmpdir logs upgrade
lab=upgrade-$$
TRAFFIC=$LAB_TOP/tests/tools/upgrade_traffic.py
NEW=$AMBIT_BUILD/ambitd
CTL=$AMBIT_BUILD/ambitctl
new_version=$("$NEW" --version | awk '{print $2}')
OLD_VERSION=0.0.0
# The "old" release: the same build reporting another version (the string patched in a copy,
# padded to the same length), so that the two can be told apart through the admin API.
OLD_DIR=$logs/old
mkdir -p "$OLD_DIR"
python3 - "$NEW" "$OLD_DIR/ambitd" "$new_version" "$OLD_VERSION" <<'PY'
import sys
src, dst, new, old = sys.argv[1:]
data = open(src, "rb").read()
want = old.encode()[:len(new)].ljust(len(new), b"\0")
n = data.count(b"\0" + new.encode() + b"\0")
data = data.replace(b"\0" + new.encode() + b"\0", b"\0" + want + b"\0")
open(dst, "wb").write(data)
print("patched %d copies of the version string" % n, file=sys.stderr)
PY
chmod +x "$OLD_DIR/ambitd"
old_version=$("$OLD_DIR/ambitd" --version | awk '{print $2}')
check "the old binary reports another version ($old_version, new $new_version)" \
	test "$old_version" != "$new_version" -a -n "$old_version"

if ! lab_up "$lab" --nodes 2 --pods 2 --cni routed --enroll p1,p2 >"$logs/up.log" 2>&1; then
	fail "lab up"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
p11=$(lab_pod_ip 1 1)
p21=$(lab_pod_ip 2 1)
pod_spawn "$lab" n2-p1 "$logs/echo2.log" "$TCPKIT" serve --port 9000 --mode echo
pod_spawn "$lab" n1-p1 "$logs/echo1.log" "$TCPKIT" serve --port 9000 --mode echo
wait_port "$lab" n2-p1 9000
wait_port "$lab" n1-p1 9000
# The mesh CA is not part of the node agents' upgrade: the current build's runs throughout.
if ! lab_start_ca "$lab" || ! AMBIT_BUILD=$OLD_DIR lab_start_agent "$lab" 1 || ! AMBIT_BUILD=$OLD_DIR lab_start_agent "$lab" 2; then
	fail "old agents start"; lab_result; exit 1
fi
agent_version() { # K: the version node K's admin API reports
	pod_exec "$lab" "n$1" "$CTL" version -o json | jq -r '.agents[0].version'
}
check "before: both nodes run the old version" \
	sh -c "test '$(agent_version 1)' = '$old_version' && test '$(agent_version 2)' = '$old_version'"
check "before: traffic flows through HBONE" pod_exec "$lab" n1-p1 "$TCPKIT" client --to "$p21:9000" \
	--mode echo --conns 5 --timeout 20

# ---- traffic for the whole upgrade
pod_spawn "$lab" n1-p1 "$logs/churn12.log" python3 "$TRAFFIC" churn --to "$p21:9000" --interval-ms 5 --duration 24
churn12=$SPAWNED_PID
pod_spawn "$lab" n2-p1 "$logs/churn21.log" python3 "$TRAFFIC" churn --to "$p11:9000" --interval-ms 5 --duration 24
churn21=$SPAWNED_PID
pod_spawn "$lab" n1-p1 "$logs/stream.log" python3 "$TRAFFIC" stream --to "$p21:9000" --duration 14
stream=$SPAWNED_PID
sleep 2

# upgrade K: the new agent beside the old one, ready and taking traffic, then SIGTERM to the old
declare -A OLD_PID NEW_PID
upgrade() {
	local k=$1 dir=$LAB_ROOT/$lab ns="$lab-n$1" i
	OLD_PID[$k]=$(cat "$dir/agent$k.pid")
	nsenter --net="/run/netns/$ns" -- "$NEW" --config "$dir/node$k.json" >>"$logs/agent$k-new.log" 2>&1 </dev/null &
	NEW_PID[$k]=$!
	echo "${NEW_PID[$k]} n$k ambitd" >>"$dir/pids"
	for i in $(seq 300); do
		grep -q 'taking traffic' "$logs/agent$k-new.log" && break
		kill -0 "${NEW_PID[$k]}" 2>/dev/null || break
		sleep 0.1
	done
	grep -q 'taking traffic' "$logs/agent$k-new.log" || { tail -20 "$logs/agent$k-new.log"; return 1; }
	kill -0 "${OLD_PID[$k]}" || return 1
	kill -TERM "${OLD_PID[$k]}"
	echo "${NEW_PID[$k]}" >"$dir/agent$k.pid"	# lab_stop_agent stops the new one at the end
}
# (not through check: that runs its command in a subshell, and the pids are needed here)
for k in 2 1; do
	if upgrade "$k" >"$logs/upgrade$k.out" 2>&1; then
		ok "node $k: the new agent starts beside the old one and takes over; the old one gets SIGTERM"
	else
		fail "node $k: the new agent starts beside the old one and takes over"
		sed 's/^/#   /' "$logs/upgrade$k.out"
	fi
done
t_term=$SECONDS
check "the old agents keep serving the open stream (still running 3 s after SIGTERM)" \
	sh -c "sleep 3; kill -0 ${OLD_PID[1]} && kill -0 ${OLD_PID[2]}"

rc_stream=0; wait "$stream" || rc_stream=$?
check "the long-lived stream survived both upgrades" \
	sh -c "test $rc_stream -eq 0 && grep -q '^stream ok' '$logs/stream.log'"
for k in 1 2; do	# (here, not in check's subshell: wait needs this shell's children)
	for _ in $(seq 300); do kill -0 "${OLD_PID[$k]}" 2>/dev/null || break; sleep 0.1; done
	rc=0
	wait "${OLD_PID[$k]}" 2>/dev/null || rc=$?
	check "node $k's old agent exits 0 once its connections ended (status $rc), not at its deadline" \
		sh -c "test $rc -eq 0 && ! grep -q 'drain deadline reached' '$LAB_ROOT/$lab/agent$k.log'"
done
note "old agents exited $((SECONDS - t_term)) s after SIGTERM"
rc12=0; wait "$churn12" || rc12=$?
rc21=0; wait "$churn21" || rc21=$?
note "node 1 -> node 2: $(grep '^churn' "$logs/churn12.log" || echo none); node 2 -> node 1: $(grep '^churn' "$logs/churn21.log" || echo none)"
grep '^# fail' "$logs/churn12.log" "$logs/churn21.log" | head -10 | sed 's/^/#   /' || true
check "a new connection every 5 ms node 1 -> node 2 throughout: zero failed" \
	sh -c "test $rc12 -eq 0 && grep -q '^churn ok=[1-9][0-9]* failed=0$' '$logs/churn12.log'"
check "a new connection every 5 ms node 2 -> node 1 throughout: zero failed" \
	sh -c "test $rc21 -eq 0 && grep -q '^churn ok=[1-9][0-9]* failed=0$' '$logs/churn21.log'"
check "after: both nodes run the new version" \
	sh -c "test '$(agent_version 1)' = '$new_version' && test '$(agent_version 2)' = '$new_version'"
bpf_ifaces() { pod_exec "$lab" "n$1" "$CTL" bpf -o json | jq -e '.interfaces | length >= 2'; }
check "after: node 1's capture is in place (tc programs on both enrolled pods' interfaces)" bpf_ifaces 1
check "after: node 2's capture is in place" bpf_ifaces 2
check "after: the old agents removed nothing (no cleanup in their logs)" \
	sh -c "! grep -qi 'detached from\|cleanup' '$LAB_ROOT/$lab/agent1.log' '$LAB_ROOT/$lab/agent2.log'"
check "after: traffic still flows, both ways" sh -c "
	nsenter --net=/run/netns/$lab-n1-p1 $TCPKIT client --to $p21:9000 --mode echo --conns 20 --timeout 20 >/dev/null &&
	nsenter --net=/run/netns/$lab-n2-p1 $TCPKIT client --to $p11:9000 --mode echo --conns 20 --timeout 20 >/dev/null"
lab_stop_agent "$lab" 1
lab_stop_agent "$lab" 2
cp "$LAB_ROOT/$lab"/agent*.log "$logs/" 2>/dev/null || true
note "logs in $logs"
lab_result
