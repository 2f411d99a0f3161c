#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench/soak.sh: `make soak` (not in CI). A two-node lab runs mixed traffic for SOAK_MINUTES
# (default 30) while pods churn and the configuration changes; the RSS, open fds and CPU time of
# both agents are sampled every SOAK_SAMPLE_S seconds (10) into a plot-ready CSV. Writes
# bench/results/soak-<YYYY-MM-DD>.csv, .json and .md (bench/README.md says how to read them) and
# exits non-zero when RSS or fds do not end flat, or when traffic failed.
set -euo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP"
export AMBIT_BUILD=${SOAK_BUILD:-$TOP/build}	# the plain build: sanitizers inflate memory
export TCPKIT=${TCPKIT:-$AMBIT_BUILD/tests/tools/tcpkit}
# shellcheck source-path=SCRIPTDIR/.. source=tests/lab/lib.sh
. "$TOP/tests/lab/lib.sh"

LAB=${SOAK_LAB:-soak-$$}
OUT=${SOAK_OUT:-$TOP/bench/results}
MINUTES=${SOAK_MINUTES:-30}
SAMPLE_S=${SOAK_SAMPLE_S:-10}
CHURN_S=${SOAK_CHURN_S:-30}	# one pod/service/config change this often
DATE=$(date +%F)
TRAFFIC=$TOP/tests/tools/upgrade_traffic.py
CTL=$AMBIT_BUILD/ambitctl
DUR=$((MINUTES * 60))
say() { printf 'soak: %s\n' "$*" >&2; }

WORK=$(mktemp -d /tmp/ambit-soak.XXXXXX)
CSV=$WORK/samples.csv
EVENTS=$WORK/events.log
echo "elapsed_s,node,rss_kib,fds,cpu_s,connections" >"$CSV"
: >"$EVENTS"

[ "$(id -u)" -eq 0 ] || { say "needs root (network namespaces)"; exit 1; }
[ -x "$AMBIT_BUILD/ambitd" ] || { say "no $AMBIT_BUILD/ambitd: run make"; exit 1; }
lab_up "$LAB" --nodes 2 --pods 3 --cni routed --enroll p1,p2 >"$WORK/up.log" 2>&1 ||
	{ say "lab up failed: $WORK/up.log"; exit 1; }
WL=$LAB_ROOT/$LAB/workloads.json
p11=$(lab_pod_ip 1 1) p21=$(lab_pod_ip 2 1) p23=$(lab_pod_ip 2 3)
for pod in n1-p1 n2-p1 n2-p3; do
	pod_spawn "$LAB" "$pod" "$WORK/echo-$pod.log" "$TCPKIT" serve --port 9000 --mode echo
	wait_port "$LAB" "$pod" 9000
done
lab_start_agent "$LAB" 1 >/dev/null && lab_start_agent "$LAB" 2 >/dev/null ||
	{ say "agents did not start"; exit 1; }
PID1=$(cat "$LAB_ROOT/$LAB/agent1.pid") PID2=$(cat "$LAB_ROOT/$LAB/agent2.pid")
TICKS=$(getconf CLK_TCK)

sample() { # ELAPSED: one CSV line per agent
	local k pid rss fds cpu conns
	for k in 1 2; do
		pid=$([ "$k" = 1 ] && echo "$PID1" || echo "$PID2")
		[ -d "/proc/$pid" ] || { say "agent $k (pid $pid) is gone"; return 1; }
		rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
		fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
		cpu=$(awk -v t="$TICKS" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$pid/stat")
		conns=$(pod_exec "$LAB" "n$k" curl -fsS -m 2 http://127.0.0.1:15000/stats 2>/dev/null |
			jq -r '.connections // ""' 2>/dev/null || true)
		echo "$1,$k,$rss,$fds,$cpu,$conns" >>"$CSV"
	done
}

# ---- traffic for the whole run: mesh churn both ways, a long stream, bulk, plaintext
say "lab $LAB up; $MINUTES min of traffic, a change every ${CHURN_S}s, samples every ${SAMPLE_S}s"
pod_spawn "$LAB" n1-p1 "$WORK/churn12.log" python3 "$TRAFFIC" churn --to "$p21:9000" --interval-ms 20 --duration "$DUR"
pod_spawn "$LAB" n2-p1 "$WORK/churn21.log" python3 "$TRAFFIC" churn --to "$p11:9000" --interval-ms 20 --duration "$DUR"
pod_spawn "$LAB" n1-p1 "$WORK/stream.log" python3 "$TRAFFIC" stream --to "$p21:9000" --duration "$DUR"
pod_spawn "$LAB" n1-p1 "$WORK/plain.log" python3 "$TRAFFIC" churn --to "$p23:9000" --interval-ms 100 --duration "$DUR"
bulk_failed=0 bulk_ok=0

# ---- churn: one change every CHURN_S seconds, in turn
wl_edit() { # JQ_FILTER: rewrites the workloads file atomically (the agents re-read it)
	jq "$1" "$WL" >"$WL.tmp" && mv "$WL.tmp" "$WL"
}
churn_step() { # N
	case $(($1 % 5)) in
	0) wl_edit "(.workloads[] | select(.name == \"$LAB-n2-p3\") | .enrolled) |= not"
	   echo "enrollment of n2-p3 toggled" ;;
	1) wl_edit "(.workloads[] | select(.name == \"$LAB-n1-p3\") | .enrolled) |= not"
	   echo "enrollment of n1-p3 toggled" ;;
	2) if jq -e '.services | any(.name == "soak-extra")' "$WL" >/dev/null; then
		wl_edit 'del(.services[] | select(.name == "soak-extra"))'; echo "service soak-extra removed"
	   else
		wl_edit '.services += [{"name":"soak-extra","namespace":"default","addresses":["10.96.9.9"],"selector":{"app":"app-2"},"ports":[{"port":9000,"target_port":9000}],"waypoint":null}]'
		echo "service soak-extra added"
	   fi ;;
	3) local w
	   w=$(jq -c ".workloads[] | select(.name == \"$LAB-n2-p2\")" "$WL")
	   wl_edit "del(.workloads[] | select(.name == \"$LAB-n2-p2\"))"
	   sleep 2
	   wl_edit ".workloads += [$w]"
	   echo "workload n2-p2 deleted and re-created" ;;
	4) local k
	   for k in 1 2; do pod_exec "$LAB" "n$k" "$CTL" log debug >/dev/null; done
	   sleep 3
	   for k in 1 2; do pod_exec "$LAB" "n$k" "$CTL" log info >/dev/null; done
	   echo "log level debug for 3 s, back to info" ;;
	esac
}

t0=$SECONDS next_sample=0 next_churn=$CHURN_S next_bulk=15 n=0
while [ $((SECONDS - t0)) -lt "$DUR" ]; do
	el=$((SECONDS - t0))
	if [ "$el" -ge "$next_sample" ]; then
		sample "$el" || break
		next_sample=$((next_sample + SAMPLE_S))
	fi
	if [ "$el" -ge "$next_churn" ]; then
		echo "$el $(churn_step "$n")" >>"$EVENTS"
		n=$((n + 1))
		next_churn=$((next_churn + CHURN_S))
	fi
	if [ "$el" -ge "$next_bulk" ]; then
		if pod_exec "$LAB" n1-p1 "$TCPKIT" client --to "$p21:9000" --mode echo --bytes 4M \
			--conns 4 --parallel 4 --timeout 60 >>"$WORK/bulk.log" 2>&1; then
			bulk_ok=$((bulk_ok + 1))
		else
			bulk_failed=$((bulk_failed + 1))
		fi
		next_bulk=$((next_bulk + 15))
	fi
	sleep 1
done
say "traffic done; letting the agents settle"
for _ in $(seq 60); do pgrep -f "$TRAFFIC" >/dev/null || break; sleep 1; done
sleep 20
sample "$((SECONDS - t0))"

mkdir -p "$OUT"
cp "$CSV" "$OUT/soak-$DATE.csv"
rc=0
if ! python3 "$TOP/bench/soak_summary.py" "$CSV" "$OUT/soak-$DATE" "$MINUTES" "$WORK" "$bulk_ok" \
	"$bulk_failed" "$(wc -l <"$EVENTS")"; then
	rc=1
fi
cp "$EVENTS" "$WORK/events.kept" 2>/dev/null || true
lab_stop_agent "$LAB" 1
lab_stop_agent "$LAB" 2
say "results in $OUT/soak-$DATE.{csv,json,md}; logs in $WORK"
exit "$rc"
