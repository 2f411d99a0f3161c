#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# tcpkit's failing exits (a timeout in each client mode and in the server, with connections still
# open) say why, exit 1, and free what they allocated: under ASan/LSan (build/san) a leak makes the
# exit status 23 and prints a LeakSanitizer report. Loopback of an unnamed network namespace
# (unshare), so no port can collide with another test's.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "# skip - tcpkit exits (needs root for unshare --net)"; exit 0; }
[ -x "$TCPKIT" ] || { echo "not ok - tcpkit exits ($TCPKIT not built)"; exit 1; }
lab_tmpdir tmp tcpkit-exits

# Runs inside the namespace: each case prints "CASE rc=N" and its stderr goes to $tmp/CASE.err.
# A sink server reads and never answers, so every client that waits for an answer times out.
ur=0
unshare --net bash -s "$TCPKIT" "$tmp" >"$tmp/results" 2>"$tmp/unshare.err" <<'EOF' || ur=$?
set -u
tk=$1 tmp=$2
ip link set lo up
run() { # CASE ARGS...
	local c=$1 rc=0; shift
	"$tk" "$@" >"$tmp/$c.out" 2>"$tmp/$c.err" || rc=$?
	echo "$c rc=$rc"
}
"$tk" serve --port 7001 --bind 127.0.0.1 --mode sink >/dev/null 2>&1 &
sink=$!
for _ in $(seq 100); do ss -Hltn 'sport = :7001' | grep -q . && break; sleep 0.05; done
run client-echo client --to 127.0.0.1:7001 --mode echo --parallel 4 --bytes 1K --timeout 0.5
run client-rr client --to 127.0.0.1:7001 --mode rr --count 10 --timeout 0.5
run client-http client --to 127.0.0.1:7001 --mode http --count 10 --timeout 0.5
run client-reset client --to 127.0.0.1:7001 --mode reset --bytes 1K --timeout 0.5
# The server times out holding two idle connections, each with its echo buffer.
"$tk" serve --port 7002 --bind 127.0.0.1 --mode echo --exit-after 3 --timeout 1 \
	>"$tmp/server-echo.out" 2>"$tmp/server-echo.err" &
srv=$!
for _ in $(seq 100); do ss -Hltn 'sport = :7002' | grep -q . && break; sleep 0.05; done
exec 3<>/dev/tcp/127.0.0.1/7002 4<>/dev/tcp/127.0.0.1/7002
rc=0
wait "$srv" || rc=$?
echo "server-echo rc=$rc"
exec 3>&- 4>&-
kill "$sink"
wait "$sink" 2>/dev/null || true
EOF
[ "$ur" -eq 0 ] || { fail "tcpkit exits (unshare: $(head -c 200 "$tmp/unshare.err"))"; lab_result; exit 1; }

exit_ok() { # CASE: exit 1 after its timeout line, no sanitizer report
	grep -qx "$1 rc=1" "$tmp/results" || { echo "$(grep "^$1 " "$tmp/results" || echo "$1 did not run")"; cat "$tmp/$1.err"; return 1; }
	grep -q 'timeout\|Resource temporarily unavailable' "$tmp/$1.err" || { cat "$tmp/$1.err"; return 1; }
	! grep -q 'Sanitizer' "$tmp/$1.err" || { cat "$tmp/$1.err"; return 1; }
}
for c in client-echo client-rr client-http client-reset server-echo; do
	check "tcpkit $c: timeout exits 1, says why, frees everything" exit_ok "$c"
done
lab_result
