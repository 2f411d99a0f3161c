#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ambitctl against tests/tools/fake_admin.py (no lab, no root): every command in both formats
# (aligned columns, the two-node waterfall, JSON that parses with sorted keys); tables cut to
# fit a terminal (a pty, tests/tools/pty_run.py) but whole in a pipe, a file or -o wide; --watch, help,
# completion, and the error cases: a wrong address, a refused connection, a malformed answer,
# an HTTP 500 and a timeout each give one line on stderr and exit 1; bad usage exits 2.
set -u
top=${AMBIT_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${AMBIT_BUILD:-build}
case $build in /*) ;; *) build=$top/$build ;; esac
CTL=$build/ambitctl
FAKE=$top/tests/tools/fake_admin.py
PTY=$top/tests/tools/pty_run.py
TRACE=4bf92f3577b34da6a3ce929d0e0e4736
tmp=$(mktemp -d)
pids=()
passed=0
failed=0
. "$(dirname "$0")/lib.sh"	# lab_until (its ok/fail are replaced below)

cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

ok() { echo "ok - $*"; passed=$((passed + 1)); }
fail() { echo "not ok - $*"; failed=$((failed + 1)); }
# expect NAME COND_RESULT: ok/not ok, showing the last command's output on failure.
expect() {
	if [ "$2" -eq 0 ]; then ok "$1"; else
		fail "$1"
		echo "#   rc=$rc"
		sed 's/^/#   out| /' "$tmp/out" | head -30
		sed 's/^/#   err| /' "$tmp/err" | head -10
	fi
}
# run ARGS...: ambitctl with stdout in $tmp/out (a file: not a terminal, so $COLUMNS must not
# cut anything), stderr in $tmp/err, status in $rc.
run() {
	rc=0
	COLUMNS=80 "$CTL" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null || rc=$?
}
# run_tty COLS ARGS...: the same on a terminal COLS wide (stdout and stderr both in $tmp/out).
run_tty() {
	local cols=$1; shift
	rc=0
	: >"$tmp/err"
	env -u COLUMNS python3 "$PTY" --cols "$cols" -- "$CTL" "$@" >"$tmp/out" 2>&1 </dev/null || rc=$?
}
# run_pipe ARGS...: stdout through a pipe (cat), as in `ambitctl certificates | grep`.
run_pipe() {
	rc=0
	set -o pipefail
	COLUMNS=80 "$CTL" "$@" 2>"$tmp/err" </dev/null | cat >"$tmp/out" || rc=$?
	set +o pipefail
}
# No cell is cut: no ellipsis (UTF-8 or ASCII) anywhere.
uncut() { ! grep -q '…' "$tmp/out" && ! grep -q '~' "$tmp/out"; }
has() { grep -q -- "$1" "$tmp/out"; }
err_has() { grep -q -- "$1" "$tmp/err"; }
one_err_line() { [ "$(wc -l <"$tmp/err")" -eq 1 ] && [ ! -s "$tmp/out" ]; }
# The JSON on stdout parses, and is printed pretty with sorted keys (stable for scripts).
json_ok() {
	python3 -m json.tool "$tmp/out" >/dev/null 2>&1 &&
		python3 -c 'import json,sys; t=open(sys.argv[1]).read(); sys.exit(json.dumps(json.loads(t), indent=2, sort_keys=True, ensure_ascii=False)+"\n" != t)' "$tmp/out"
}
# Every line fits in N display columns.
fits() {
	python3 -c 'import sys; sys.exit(any(len(l.rstrip("\n")) > int(sys.argv[2]) for l in open(sys.argv[1], encoding="utf-8")))' "$tmp/out" "$1"
}
# aligned TITLE...: each named (left-aligned) column starts at its title's offset on every row of
# the first table (up to the first blank line): a space before it, text at it.
aligned() {
	python3 - "$tmp/out" "$@" <<'EOF'
import sys
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
table = []
for l in lines:
    if not l.strip():
        break
    table.append(l)
head, rows = table[0], table[1:]
if not rows:
    sys.exit("no rows")
for title in sys.argv[2:]:
    at = head.find(title)
    if at < 0:
        sys.exit("no column " + title)
    for r in rows:
        if len(r) <= at or r[at] == " " or (at and r[at - 1] != " "):
            sys.exit("column %s not aligned in: %r" % (title, r))
EOF
}

start_fake() { # NAME ARGS...: starts a fake agent, sets port_NAME
	local name=$1; shift
	python3 "$FAKE" "$@" >"$tmp/fake_$name.out" 2>"$tmp/fake_$name.err" &
	pids+=($!)
	for _ in $(seq 1 50); do
		grep -q LISTENING "$tmp/fake_$name.out" 2>/dev/null && break
		sleep 0.1
	done
	printf -v "port_$name" '%s' "$(awk '/LISTENING/ {print $2}' "$tmp/fake_$name.out")"
}

if [ ! -x "$CTL" ]; then
	fail "ambitctl is built ($CTL)"
	exit 1
fi
start_fake n1 --node node-1
start_fake n2 --node node-2
start_fake nohbone --node node-1 --mode nohbone
start_fake nobpf --node node-1 --mode nobpf
start_fake bad --mode malformed
start_fake arr --mode notobject
start_fake e500 --mode error500
start_fake slow --mode slow --delay 14
# A port nobody listens on: bound, then closed.
free_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
A1=127.0.0.1:$port_n1
A2=127.0.0.1:$port_n2
if [ -z "$port_n1" ] || [ -z "$port_n2" ] || [ -z "$port_e500" ]; then
	fail "fake admin servers started"
	cat "$tmp"/fake_*.err
	exit 1
fi

# ---- tables and JSON of every command ----
run --admin "$A1" workloads
expect "workloads: table" $([ $rc -eq 0 ] && head -1 "$tmp/out" | grep -Eq '^NAMESPACE +POD-NAME +ADDRESS +NODE +WAYPOINT +PROTOCOL$' &&
	[ "$(wc -l <"$tmp/out")" -eq 5 ] && has 'default  *api-gateway-7d9  *10.244.1.5  *node-1  *None  *HBONE' &&
	has 'reviews-v1-abc  *10.244.2.7.*node-2  *waypoint  *HBONE'; echo $?)
expect "workloads: columns aligned" $(aligned NAMESPACE POD-NAME ADDRESS NODE WAYPOINT PROTOCOL; echo $?)
expect "workloads to a file: whole cells whatever \$COLUMNS says" $(has 'bookinfo-with-a-long-namespace  *productpage-v1-6b746f74dc-9stvr-with-a-very-long-suffix  ' && uncut; echo $?)
expect "workloads: sorted by namespace then name" $(awk 'NR>1 {print $1, $2}' "$tmp/out" | sort -c 2>/dev/null; echo $?)
run_tty 80 --admin "$A1" workloads
expect "workloads on an 80-column terminal: fits, long cells end with an ellipsis" $([ $rc -eq 0 ] && fits 80 && has 'bookinfo-with-a.*…' && has 'productpage-v1-.*…' && aligned NAMESPACE POD-NAME ADDRESS NODE; echo $?)
run_tty 80 --admin "$A1" workloads -o wide
expect "workloads -o wide on a terminal: every column whole" $([ $rc -eq 0 ] && has 'bookinfo-with-a-long-namespace  *productpage-v1-6b746f74dc-9stvr-with-a-very-long-suffix  ' && uncut && aligned NAMESPACE POD-NAME ADDRESS NODE WAYPOINT PROTOCOL; echo $?)
run_tty 100 --admin "$A1" workloads
expect "workloads on a 100-column terminal: its own width, not 80" $([ $rc -eq 0 ] && fits 100 && ! fits 80; echo $?)
run_pipe --admin "$A1" workloads
expect "workloads through a pipe: whole cells" $([ $rc -eq 0 ] && has 'productpage-v1-6b746f74dc-9stvr-with-a-very-long-suffix' && uncut; echo $?)
run --admin "$A1" workloads --width 80
expect "workloads --width 80 to a file: cut as asked" $([ $rc -eq 0 ] && fits 80 && has 'productpage-v1-.*…'; echo $?)
run --admin "$A1" workloads -o json
expect "workloads: json" $([ $rc -eq 0 ] && json_ok && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d["workloads"]) == 4 and d["generation"] == 3' "$tmp/out"; echo $?)
run --admin "$A1" --width 0 workloads
expect "workloads: --width 0 never cuts" $([ $rc -eq 0 ] && has 'productpage-v1-6b746f74dc-9stvr-with-a-very-long-suffix' && ! has '…'; echo $?)

run --admin "$A1" services
expect "services: table" $([ $rc -eq 0 ] && head -1 "$tmp/out" | grep -Eq '^NAMESPACE +SERVICE-NAME +SERVICE-VIP +WAYPOINT +ENDPOINTS$' &&
	has 'default  *reviews  *10.96.0.20  *waypoint  *1$' && has 'default  *waypoint  *10.96.0.30  *None  *0$' && aligned NAMESPACE SERVICE-NAME SERVICE-VIP WAYPOINT; echo $?)
run --admin "$A1" -o json services
expect "services: json" $([ $rc -eq 0 ] && json_ok && grep -q '"services": \[' "$tmp/out"; echo $?)

run --admin "$A1" certificates
expect "certificates: table" $([ $rc -eq 0 ] && head -1 "$tmp/out" | grep -Eq '^IDENTITY +SERIAL +NOT-AFTER +STATE$' &&
	has 'sa/reviews .*2024-11-27T09:30:00Z  *renewing$' && has 'sa/api-gateway .*fresh$' && aligned IDENTITY SERIAL NOT-AFTER STATE; echo $?)
# The issue's own example: `ambitctl certificates | grep spiffe://` must find whole identities.
LONG_ID=spiffe://cluster.local/ns/bookinfo-with-a-long-namespace/sa/productpage-service-account
rc=0
found=$(COLUMNS=80 "$CTL" --admin "$A1" certificates 2>"$tmp/err" </dev/null | grep -o 'spiffe://[^ ]*' | sort | tr '\n' ' ') || rc=$?
echo "$found" >"$tmp/out"
expect "certificates | grep spiffe://: every identity whole" $([ $rc -eq 0 ] &&
	[ "$found" = "$LONG_ID spiffe://cluster.local/ns/default/sa/api-gateway spiffe://cluster.local/ns/default/sa/reviews " ]; echo $?)
run_tty 80 --admin "$A1" certificates
expect "certificates on an 80-column terminal: fits, the identity keeps its end" $([ $rc -eq 0 ] && fits 80 &&
	has '^…[^ ]*/sa/productpage-service-account ' && ! has "$LONG_ID" && aligned IDENTITY SERIAL NOT-AFTER STATE; echo $?)
run_tty 80 --admin "$A1" certificates -o wide
expect "certificates -o wide on a terminal: whole identities" $([ $rc -eq 0 ] && has "^$LONG_ID  " && uncut; echo $?)
run --admin "$A1" certificates --output=json
expect "certificates: json" $([ $rc -eq 0 ] && json_ok && grep -q '"not_after": 1732699800' "$tmp/out"; echo $?)

run --admin "$A1" telemetry
expect "telemetry: a row per workload and direction, providers, warnings" $([ $rc -eq 0 ] &&
	head -1 "$tmp/out" | grep -Eq '^WORKLOAD +DIRECTION +PROVIDER +SAMPLING +REPORTING +TAGS +FROM$' &&
	has '^default/api-gateway-7d9 *outbound *otel *100.00% *on ' && has '^default/api-gateway-7d9 *inbound .*0.00% *off ' &&
	has '^shop/reviews-v1-5c8 *outbound *config ' && has '^provider otel: grpc .*exported 42' &&
	has '^warning: Telemetry default/bad: spec.tracing\[0\].randomSamplingPercentage' &&
	aligned WORKLOAD DIRECTION PROVIDER; echo $?)
COLUMNS=400 "$CTL" --admin "$A1" --width 400 telemetry >"$tmp/out" 2>&1
expect "telemetry: tags and sources in full on a wide screen" $(has 'cluster_name=homelab' && has 'pod=\$POD_NAME' &&
	has 'custom_tags:Telemetry istio-system/mesh-default'; echo $?)
run --admin "$A1" telemetry --workload shop/reviews-v1-5c8 -o json
expect "telemetry --workload: that workload, json" $([ $rc -eq 0 ] && json_ok && grep -q '"workload": "shop/reviews-v1-5c8"' "$tmp/out" &&
	! grep -q 'api-gateway' "$tmp/out"; echo $?)

run_tty 80 --admin "$A1" connections
expect "connections: table and HBONE tunnels" $([ $rc -eq 0 ] && grep -Eq '^DIRECTION +SRC +DST +TARGET +IDENTITY +SENT +RECV +AGE$' "$tmp/out" &&
	grep -Eq '^ +BYTES +BYTES$' "$tmp/out" && has '^outbound .*1.5MiB  *52B  *1h2m$' && has '^inbound .*900B  *2.0KiB  *850ms$' &&
	has '^HBONE TUNNELS$' && has '^client  *172.18.0.3:15008 .*sa/reviews  *1  *1h2m  *ready$' && fits 80; echo $?)
run --admin "$A1" connections
expect "connections to a file: whole cells, titles on one line" $([ $rc -eq 0 ] && has '^DIRECTION  SRC  *DST  *TARGET  *IDENTITY  *BYTES-SENT  *BYTES-RECV  *AGE$' &&
	has 'spiffe://cluster.local/ns/default/sa/reviews' && uncut; echo $?)
run --admin "$A1" --width 200 connections
expect "connections: wide terminal shows whole cells" $([ $rc -eq 0 ] && has '^DIRECTION  SRC  *DST  *TARGET  *IDENTITY  *BYTES-SENT  *BYTES-RECV  *AGE$' &&
	has 'outbound   10.244.1.5:43512  10.96.0.20:9080  10.244.2.7:9080  spiffe://cluster.local/ns/default/sa/reviews' &&
	aligned DIRECTION SRC DST TARGET IDENTITY; echo $?)
run --admin "$A1" connections -o json
expect "connections: json with hbone" $([ $rc -eq 0 ] && json_ok && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["count"] == 2 and len(d["connections"]) == 2 and d["hbone"][0]["peer"] == "172.18.0.3:15008"' "$tmp/out"; echo $?)
run --admin "127.0.0.1:$port_nohbone" connections
expect "connections: no HBONE (404) is no error" $([ $rc -eq 0 ] && has '^outbound' && ! has 'HBONE TUNNELS' && [ ! -s "$tmp/err" ]; echo $?)
run --admin "127.0.0.1:$port_nohbone" connections -o json
expect "connections: json hbone null without HBONE" $([ $rc -eq 0 ] && json_ok && grep -q '"hbone": null' "$tmp/out"; echo $?)

run --admin "$A1" bpf
expect "bpf: table" $([ $rc -eq 0 ] && head -1 "$tmp/out" | grep -Eq '^IFACE +IFINDEX +POD +IP +PROGRAMS$' &&
	has '^veth1a2b3c  *7  *default/api-gateway-7d9  *10.244.1.5  *ingress:41,egress:42$' && has 'default/late-pod' &&
	has '^captured_outbound  *7$'; echo $?)
run --admin "$A1" bpf -o json
expect "bpf: json" $([ $rc -eq 0 ] && json_ok && grep -q '"counters": {' "$tmp/out"; echo $?)
run --admin "127.0.0.1:$port_nobpf" bpf
expect "bpf: disabled capture said in words" $([ $rc -eq 0 ] && has 'not enabled'; echo $?)

run --admin "$A1" config
expect "config: KEY VALUE rows" $([ $rc -eq 0 ] && head -1 "$tmp/out" | grep -Eq '^KEY +VALUE$' &&
	has '^tracing.otlp.endpoint  *http://127.0.0.1:4317$' && has '^tracing.custom_tags.cluster_name  *homelab$' &&
	has '^node_name  *node-1$' && awk 'NR>1 {print $1}' "$tmp/out" | sort -c; echo $?)
run --admin "$A1" config -o json
expect "config: json" $([ $rc -eq 0 ] && json_ok && grep -q '"trust_domain": "cluster.local"' "$tmp/out"; echo $?)

run --admin "$A1" log
expect "log: shows the level" $([ $rc -eq 0 ] && [ "$(cat "$tmp/out")" = "log level: info" ]; echo $?)
run --admin "$A1" log DEBUG
expect "log LEVEL: POST /logging?level=" $([ $rc -eq 0 ] && [ "$(cat "$tmp/out")" = "log level: debug (was info)" ] &&
	curl -s "http://$A1/_requests" | grep -q 'POST /logging?level=debug'; echo $?)
run --admin "$A1" log -o json
expect "log: json" $([ $rc -eq 0 ] && json_ok && grep -q '"level": "debug"' "$tmp/out"; echo $?)
run --admin "$A1" log info

run --admin "$A1" version
expect "version: client and agent" $([ $rc -eq 0 ] && has '^ambitctl ' && has "^ambitd 0.9.0 on node node-1 at $A1: .*RSS 1[23]MiB, heap 4.2MiB, CPU 5.12 s user 9.87 s system"; echo $?)
run --admin "$A1" version -o json
expect "version: json" $([ $rc -eq 0 ] && json_ok && grep -q '"version": "0.9.0"' "$tmp/out"; echo $?)
run --admin "127.0.0.1:$free_port" version --client
expect "version --client needs no agent" $([ $rc -eq 0 ] && has '^ambitctl '; echo $?)

# ---- spans ----
run_tty 80 --admin "$A1" --admin "$A2" spans
expect "spans: merged list ordered by start" $([ $rc -eq 0 ] && head -1 "$tmp/out" | grep -Eq "^ +SPAN$" &&
	sed -n 2p "$tmp/out" | grep -Eq "^TRACE-ID +ID +NAME +NODE +START +DURATION +STATUS$" &&
	[ "$(awk 'NR>2 {print $3}' "$tmp/out" | tr '\n' ' ')" = "outbound outbound inbound connect " ] && fits 80 &&
	grep -Eq "^$TRACE .*inbound +node-2 +09:31:00 +10.0ms +ERROR$" "$tmp/out"; echo $?)
run --admin "$A1,$A2" spans --limit 2 -o json
expect "spans --limit: the most recent N" $([ $rc -eq 0 ] && json_ok && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert [s["name"] for s in d["spans"]] == ["inbound", "connect"]' "$tmp/out"; echo $?)
run_tty 80 --admin "$A1" --admin "$A2" spans --trace "$TRACE"
cp "$tmp/out" "$tmp/waterfall"
expect "spans --trace: waterfall across two agents" $([ $rc -eq 0 ] && head -1 "$tmp/out" | grep -q "^trace $TRACE: 3 spans on 2 nodes, 12.500 ms, 2 errors$" &&
	sed -n 2p "$tmp/out" | grep -Eq '^SPAN +NODE +\|0 +12.5 ms\| +DURATION +STATUS$' && fits 80; echo $?)
expect "spans --trace: rows ordered by start, indented by depth" $(python3 - "$tmp/out" <<'EOF'
import re, sys
rows = open(sys.argv[1], encoding="utf-8").read().split("\n")[2:5]
want = [("outbound", 0, "node-1"), ("inbound", 2, "node-2"), ("connect", 4, "node-2")]
starts = []
for r, (name, indent, node) in zip(rows, want):
    m = re.match(r"^( *)(\S+) +(\S+) +\|( *)█", r)
    assert m, r
    assert (m.group(2), len(m.group(1)), m.group(3)) == (name, indent, node), r
    starts.append(len(m.group(4)))
assert starts[0] == 0 and starts[0] < starts[1] < starts[2], starts
assert "ERROR" not in rows[0] and "ERROR upstream reset" in rows[1] and "ERROR connection" in rows[2]
bars = [r.count("█") for r in rows]
assert bars[0] > bars[1] > bars[2] > 0, bars
EOF
echo $?)
run --admin "$A1" --admin "$A2" spans --trace "$TRACE"
expect "spans --trace to a file: messages whole, the same bars" $([ $rc -eq 0 ] && has '  ERROR connection reset by peer$' && has '  ERROR upstream reset$' && uncut &&
	[ "$(grep -c '|.*█.*|' "$tmp/out")" -eq 3 ]; echo $?)
run --admin "$A2" spans --trace "$TRACE"
expect "spans --trace: one agent's half, the missing parent said" $([ $rc -eq 0 ] && has '^inbound  *node-2' && has '^  connect  *node-2' && has 'parent on another node'; echo $?)
run --admin "$A1,$A2" spans --trace "${TRACE^^}" -o json
expect "spans --trace -o json: merged, ordered by start" $([ $rc -eq 0 ] && json_ok && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert [s["span_id"] for s in d["spans"]] == ["00f067aa0ba902b7","b7ad6b7169203331","c0ffee00c0ffee00"]' "$tmp/out"; echo $?)
run --admin "$A1" --admin "$A1" spans --trace "$TRACE"
expect "spans: the same agent twice does not double spans" $([ $rc -eq 0 ] && has '1 span on 1 node'; echo $?)
run --admin "$A1" spans --trace 00000000000000000000000000000001
expect "spans --trace: unknown trace is one line, exit 1" $([ $rc -eq 1 ] && one_err_line && err_has 'no span of trace'; echo $?)
LC_ALL=C COLUMNS=80 "$CTL" --admin "$A1,$A2" spans --trace "$TRACE" >"$tmp/out" 2>"$tmp/err"; rc=$?
expect "spans --trace: ASCII bars outside UTF-8 locales" $([ $rc -eq 0 ] && has '^outbound  *node-1  *|####' && ! has '█'; echo $?)

# ---- --watch ----
COLUMNS=80 "$CTL" --admin "$A1" connections --watch --interval 0.3 >"$tmp/watch" 2>&1 &
wpid=$!
redrawn() { # N: the watch has drawn N times (a loaded machine is slow: not a fixed sleep)
	[ "$(grep -o $'\033\[2J' "$tmp/watch" | wc -l)" -ge "$1" ] && [ "$(grep -c '^outbound' "$tmp/watch")" -ge "$1" ]
}
lab_until redrawn 3 || true
kill -INT "$wpid"
wrc=0
wait "$wpid" || wrc=$?
clears=$(grep -o $'\033\[2J' "$tmp/watch" | wc -l)
cp "$tmp/watch" "$tmp/out"; : >"$tmp/err"; rc=$wrc
expect "connections --watch: redraws until SIGINT, exit 0" $([ "$wrc" -eq 0 ] && [ "$clears" -ge 3 ] && [ "$(grep -c '^outbound' "$tmp/watch")" -ge 3 ] && grep -q 'Every 0.3s' "$tmp/watch"; echo $?)
COLUMNS=80 "$CTL" --admin "127.0.0.1:$free_port" connections --watch --interval 0.2 >"$tmp/watch" 2>&1 &
wpid=$!
lab_until eval '[ "$(grep -c "connection refused" "$tmp/watch")" -ge 2 ]' || true
kill -INT "$wpid"
wrc=0
wait "$wpid" || wrc=$?
cp "$tmp/watch" "$tmp/out"; rc=$wrc
expect "connections --watch: keeps going while the agent is away" $([ "$wrc" -eq 0 ] && [ "$(grep -c 'connection refused' "$tmp/watch")" -ge 2 ]; echo $?)

# ---- help and completion ----
for c in workloads services certificates connections bpf spans telemetry config policies log version help; do
	run help "$c"
	cp "$tmp/out" "$tmp/help1"
	run "$c" --help
	expect "help $c: man page, the same as $c --help" $([ $rc -eq 0 ] && cmp -s "$tmp/out" "$tmp/help1" &&
		[ "$(grep -Ec '^(NAME|SYNOPSIS|DESCRIPTION|OPTIONS|EXAMPLES)$' "$tmp/out")" -eq 5 ] && has "^    ambitctl $c - "; echo $?)
done
run --help
expect "--help: the tool's page lists every command" $([ $rc -eq 0 ] && has '^SYNOPSIS' && has '^EXIT STATUS' &&
	for c in workloads services certificates connections bpf spans telemetry config policies log; do has "^        $c "; done; echo $?)
run --version
expect "--version" $([ $rc -eq 0 ] && has '^ambitctl [0-9]'; echo $?)
comp() { # WORDS...: the completions for the last word
	bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _ambitctl; printf "%s\n" "${COMPREPLY[@]}"' \
		_ "$top/deploy/completion/ambitctl.bash" "$@"
}
expect "completion: commands, options, -o values" $([ "$(comp ambitctl con | sort | tr '\n' ' ')" = "config connections " ] &&
	[ "$(comp ambitctl workloads -o '' | tr '\n' ' ')" = "table wide json " ] &&
	comp ambitctl connections --w | grep -q -- --watch && comp ambitctl spans --t | grep -q -- --trace &&
	comp ambitctl log d | grep -q debug && comp ambitctl --admin x help ser | grep -q services &&
	[ "$(comp ambitctl policies c)" = check ] && comp ambitctl policies check --f | grep -q -- --from; echo $?)

# ---- agent errors: one line on stderr, exit 1 ----
for addr in 127.0.0.1:notaport 127.0.0.1:70000 'no such host:1' '[::1' 1.2.3.4.5:15000 ''; do
	run --admin "$addr" workloads
	expect "wrong address '$addr': one line, exit 1" $([ $rc -eq 1 ] && one_err_line && err_has 'bad agent address\|needs HOST:PORT'; echo $?)
done
for c in workloads services certificates connections bpf spans telemetry config log version; do
	run --admin "127.0.0.1:$free_port" "$c"
	expect "$c: refused connection, one line, exit 1" $([ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] &&
		err_has "^ambitctl: cannot reach the agent at 127.0.0.1:$free_port: connection refused (is ambitd running on this node?)$"; echo $?)
done
for c in workloads services certificates connections bpf spans telemetry config log; do
	run --admin "127.0.0.1:$port_bad" "$c" -o json
	expect "$c: malformed answer, one line, exit 1" $([ $rc -eq 1 ] && one_err_line && err_has "malformed answer from the agent at 127.0.0.1:$port_bad"; echo $?)
done
run --admin "127.0.0.1:$port_bad" spans --trace "$TRACE"
expect "spans --trace: malformed answer, one line, exit 1" $([ $rc -eq 1 ] && one_err_line && err_has 'malformed answer'; echo $?)
run --admin "127.0.0.1:$port_arr" workloads
expect "an answer that is not an object: one line, exit 1" $([ $rc -eq 1 ] && one_err_line && err_has 'not a JSON object'; echo $?)
run --admin "127.0.0.1:$port_nohbone" spans --trace "$TRACE" --admin "127.0.0.1:$port_e500"
expect "one failing agent of two: exit 1, the other's spans shown" $([ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && has '^outbound'; echo $?)
for c in workloads connections log; do
	run --admin "127.0.0.1:$port_e500" "$c"
	expect "$c: HTTP 500, one line with the agent's reason, exit 1" $([ $rc -eq 1 ] && one_err_line &&
		err_has "the agent at 127.0.0.1:$port_e500 answered HTTP 500 to GET .*: internal error: model not ready$"; echo $?)
done
run --admin "127.0.0.1:$port_e500" log debug
expect "log LEVEL: HTTP 500, exit 1" $([ $rc -eq 1 ] && one_err_line; echo $?)
run --admin "$A1" --admin "127.0.0.1:$free_port" workloads
expect "several agents, one refused: the other's table, exit 1" $([ $rc -eq 1 ] && has "^# agent $A1" && has 'api-gateway-7d9' && [ "$(wc -l <"$tmp/err")" -eq 1 ]; echo $?)
t0=$SECONDS
run --admin "127.0.0.1:$port_slow" workloads
expect "an agent that never answers: timeout bounded (10 s), one line, exit 1" $([ $rc -eq 1 ] && one_err_line && err_has 'no answer within 10 s' && [ $((SECONDS - t0)) -le 12 ]; echo $?)

# ---- bad usage: exit 2 ----
usage_case() { # NAME ARGS...
	local name=$1; shift
	run "$@"
	expect "usage: $name: one line, exit 2" $([ $rc -eq 2 ] && one_err_line; echo $?)
}
usage_case "no command"
usage_case "unknown command" frobnicate
usage_case "unknown global option" --frob workloads
usage_case "unknown command option" workloads --frob
usage_case "-o yaml" workloads -o yaml
usage_case "-o without a value" workloads -o
usage_case "extra argument" workloads extra
usage_case "bad trace id" spans --trace xyz
usage_case "--limit 0" spans --limit 0
usage_case "--interval too short" connections --watch --interval 0.01
usage_case "--interval without --watch" connections --interval 2
usage_case "unknown log level" log loud
usage_case "two log levels" log info debug
usage_case "help for no command" help nosuch
usage_case "telemetry --workload without a namespace" telemetry --workload reviews
usage_case "policies check without --to" policies check --from 10.0.0.1
usage_case "policies check: unknown option" policies check --from a --to b:1 --frob
usage_case "bad usage before a bad address" --admin 127.0.0.1:notaport frobnicate
usage_case "--width not a number" --width wide workloads

echo "# ctl: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
