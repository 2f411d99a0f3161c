#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# L4 authorization end to end (issue 13), in both CNI styles: real agents on two nodes enforce
# Istio AuthorizationPolicy and PeerAuthentication objects given in the workloads file's
# `resources` (lab.sh resources, re-read by the agents). The destination is pod 1 of node 1;
# clients are enrolled pods of node 2 (HBONE, identities sa/app-1 and sa/app-2) and pod 3 of
# node 2, outside the mesh (plaintext through inbound capture). Checked: allow and deny by
# principal, namespace, port and source IP; plaintext vs HBONE; PeerAuthentication STRICT and
# PERMISSIVE; a policy added while a connection is open closes it once the agent applies it
# (and says so in its log line and span); the denials' spans on both sides at an
# independent OTLP receiver (ERROR, the policy in the status and as an attribute,
# response_flags DENY), the DENY series of istio_tcp_* and ambit_authorization_denied_total;
# a dry-run DENY passes traffic but is reported; a refused object leaves the others in force;
# ambitctl policies and policies check.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - authz (needs root)"; exit 1; }
command -v node >/dev/null || { echo "not ok - authz (node not found)"; exit 1; }
command -v python3 >/dev/null || { echo "not ok - authz (python3 not found)"; exit 1; }
"$LAB_TOP/tests/node/install.sh"
lab_tmpdir logs authz
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$LAB_TOP/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
CTL=$AMBIT_BUILD/ambitctl
TD=cluster.local

# ---------------- helpers ----------------

admin() { pod_exec "$lab" "n$1" curl -fsS -m 5 "http://127.0.0.1:15000$2"; } # K PATH

# policies JSON_ARRAY: the lab's resources := the array; waits until node 1's agent lists the
# objects (by name) in /policies, then until node 2's model has the same generation.
policies() {
	local want got end=$((SECONDS + LAB_WAIT_S))
	printf '%s\n' "$1" | "$LAB_SH" resources "$lab" - || return 1
	want=$(jq -c '[.[] | .metadata.namespace + "/" + .metadata.name] | sort' <<<"$1")
	while [ "$SECONDS" -le "$end" ]; do
		got=$(admin 1 /policies | jq -c '[.policies[] | .namespace + "/" + .name] | sort') || true
		[ "$got" = "$want" ] && return 0
		sleep 0.1
	done
	echo "# node 1 lists $got, want $want" >&2
	return 1
}

# ap NAME ACTION RULES_JSON [ANNOTATIONS_JSON]: an AuthorizationPolicy selecting app-1 in default.
ap() {
	local an=${4:-}
	[ -n "$an" ] || an='{}'
	jq -cn --arg n "$1" --arg a "$2" --argjson r "$3" --argjson an "$an" '{
		apiVersion: "security.istio.io/v1", kind: "AuthorizationPolicy",
		metadata: { name: $n, namespace: "default", annotations: $an,
			creationTimestamp: "2026-01-01T00:00:00Z" },
		spec: { selector: { matchLabels: { app: "app-1" } }, action: $a, rules: $r } }'
}

# pa NAME MODE: a namespace-wide PeerAuthentication in default.
pa() {
	jq -cn --arg n "$1" --arg m "$2" '{ apiVersion: "security.istio.io/v1",
		kind: "PeerAuthentication", metadata: { name: $n, namespace: "default" },
		spec: { mtls: { mode: $m } } }'
}

# reach FROM PORT: one echo connection from pod FROM (nK-pM) to the destination's PORT.
reach() {
	pod_exec "$lab" "$1" "$TCPKIT" client --to "$DST_IP:$2" --mode echo --bytes 4K \
		--timeout 10 >/dev/null 2>&1
}
allowed() { reach "$@" || { echo "$1 -> :$2 was refused"; return 1; }; } # FROM PORT
denied() { ! reach "$@" || { echo "$1 -> :$2 went through"; return 1; }; } # FROM PORT
# reset_seen FROM PORT: the connection is refused with a reset (ECONNRESET), not a clean close.
reset_seen() {
	local out
	out=$(pod_exec "$lab" "$1" "$TCPKIT" client --to "$DST_IP:$2" --mode echo --bytes 1K \
		--timeout 5 2>&1) && { echo "went through"; return 1; }
	grep -qi reset <<<"$out" || { echo "$out"; return 1; }
}

# workloads_edit JQ_PROGRAM: rewrites the lab's workloads.json (a new file renamed over it).
workloads_edit() {
	local f=$LAB_ROOT/$lab/workloads.json
	jq "$1" "$f" >"$f.tmp" && mv "$f.tmp" "$f"
}

# metric K NAME [LABEL=VALUE]: sum of NAME's samples on node K.
metric() { lab_metric "$lab" "$@"; }

# wait_span FILE JQ_FILTER: until a span in FILE matches (LAB_WAIT_S at most).
wait_span() {
	lab_until lab_spans_ge "$1" "$2" 1 && return 0
	echo "# the last ones:" >&2
	tail -n 3 "$1" | cut -c1-600 | sed 's/^/#   /' >&2
	return 1
}

# A long connection from pod FROM to the destination's PORT, a byte echoed every 20 ms; prints
# "open" once established, then "closed <how> <unix time>" when it breaks. Output to FILE.
long_conn() { # FROM PORT FILE
	pod_spawn "$lab" "$1" "$3" python3 -u -c '
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(b"x"); assert s.recv(1) == b"x"
print("open", flush=True)
while True:
    try:
        s.sendall(b"x")
        if s.recv(1) != b"x":
            how = "eof"; break
    except OSError as e:
        how = type(e).__name__; break
    time.sleep(0.02)
print("closed", how, "%.3f" % time.time(), flush=True)
' "$DST_IP" "$2"
}

# long_open FROM PORT FILE: long_conn, then waits (lab_until) until it is open.
long_open() {
	long_conn "$@"
	lab_until grep -q open "$3" && return 0
	echo "not open: $(cat "$3")"
	return 1
}

# closed_after FILE SINCE: waits (lab_until: a loaded machine is slow, the promise is the
# outcome, not its speed) for FILE's "closed" line, which must not be before SINCE (unix time,
# taken just before the change): the connection lived until the change, then was closed.
closed_after() {
	local closed
	lab_until grep -q closed "$1" || true
	closed=$(awk '/^closed/ {print $3}' "$1")
	[ -n "$closed" ] && awk -v a="$2" -v c="$closed" 'BEGIN { exit !(c >= a) }' ||
		{ cat "$1"; echo "changed at $2"; return 1; }
}

# recheck_source_span FILE POLICY: the source's span of the connection POLICY's re-check closed
# (the outbound span in the trace of that inbound one) is ERROR with what the source saw, the
# stream reset (UR, RST_STREAM CANCEL), and names no policy: nothing on the wire tells it why.
recheck_source_span() {
	local t
	t=$(jq -r "select(.name == \"inbound\" and (.status.message // \"\" |
		test(\"closed by the policy re-check: denied by default/$2\"))) | .trace_id" "$1" | head -n 1)
	[ -n "$t" ] || { echo "# no inbound span closed by the re-check of $2"; return 1; }
	wait_span "$1" ".name == \"outbound\" and .trace_id == \"$t\" and .status.code == 2 and
		.attributes.response_flags == \"UR\" and (.status.message | test(\"reset by peer .CANCEL.\")) and
		.attributes[\"authorization.policy\"] == null"
}

agents_stop() { lab_stop_agents "$lab" 1 2; }

# ---------------- one CNI style ----------------

scenario() {
	local cni=$1 t spans w1 p1 p2
	lab=az-$cni-$$
	note "---- $cni ----"
	if ! lab_up "$lab" --nodes 2 --pods 3 --cni "$cni" --enroll n1-p1,n2-p1,n2-p2 \
		>"$logs/up-$cni.log" 2>&1; then
		fail "$cni: lab up"; sed 's/^/#   /' "$logs/up-$cni.log"; return
	fi
	spans=$logs/spans-$cni.jsonl
	if ! lab_sink_start "$lab" "$spans" "$logs"; then
		fail "$cni: OTLP sink starts"; lab_down "$lab"; return
	fi
	# spans to the sink on the underlay, exported every 200 ms
	if ! OTEL_EXPORTER_OTLP_ENDPOINT="http://$LAB_UL_IP:4317" OTEL_BSP_SCHEDULE_DELAY=200 \
		lab_start_agent "$lab" 1 ||
		! OTEL_EXPORTER_OTLP_ENDPOINT="http://$LAB_UL_IP:4317" OTEL_BSP_SCHEDULE_DELAY=200 \
		lab_start_agent "$lab" 2; then
		fail "$cni: agents start"; agents_stop || true; lab_sink_stop "$lab" || true
		lab_down "$lab"; return
	fi
	DST_IP=$(lab_pod_ip 1 1)
	w1=$lab-n1-p1 p1=$(lab_pod_ip 2 1) p2=$(lab_pod_ip 2 2)
	for port in 8080 9000; do
		pod_spawn "$lab" n1-p1 "$logs/serve-$cni-$port.log" "$TCPKIT" serve --port "$port" --mode echo
		wait_port "$lab" n1-p1 "$port"
	done
	local app1="$TD/ns/default/sa/app-1" app2="$TD/ns/default/sa/app-2"

	check "$cni: no policy: HBONE and plaintext pass" \
		eval 'allowed n2-p1 8080 && allowed n2-p2 8080 && allowed n2-p3 8080'

	# ---- by principal ----
	policies "[$(ap deny-app2 DENY "[{\"from\":[{\"source\":{\"principals\":[\"$app2\"]}}]}]")]" ||
		fail "$cni: policy deny-app2 applied"
	check "$cni: DENY principal: app-2 refused, app-1 passes" \
		eval 'denied n2-p2 8080 && allowed n2-p1 8080'
	# the denial as operators see it: both sides' spans, the metrics, the access log
	check "$cni: denied: inbound span ERROR naming the policy, response_flags DENY" wait_span "$spans" \
		".name == \"inbound\" and .status.code == 2 and (.status.message | test(\"denied by default/deny-app2\")) and .attributes[\"authorization.policy\"] == \"default/deny-app2\" and .attributes.response_flags == \"DENY\" and .attributes[\"source.principal\"] == \"spiffe://$app2\""
	check "$cni: denied: outbound span ERROR naming the policy (from the 401)" wait_span "$spans" \
		".name == \"outbound\" and .status.code == 2 and (.status.message | test(\"401: denied by default/deny-app2\")) and .attributes[\"authorization.policy\"] == \"default/deny-app2\" and .attributes.response_flags == \"DENY\""
	check "$cni: denied: ambit_authorization_denied_total{policy=default/deny-app2}" \
		eval '[ "$(metric 1 ambit_authorization_denied_total policy=default/deny-app2)" -ge 1 ]'
	check "$cni: denied: istio_tcp_* DENY: every series of the destination, closed of the source" \
		eval 'for m in connections_opened connections_closed received_bytes sent_bytes; do
			pod_exec "$lab" n1 curl -fsS -m 5 "http://$(lab_node_ip 1):15020/metrics" |
				grep "^istio_tcp_${m}_total{reporter=\"destination\"" |
				grep -q "source_principal=\"spiffe://$app2\".*response_flags=\"DENY\"" ||
				{ echo "node 1: no DENY series of istio_tcp_${m}_total"; exit 1; }
		      done
		      [ "$(metric 2 istio_tcp_connections_closed_total response_flags=DENY)" -ge 1 ]'
	check "$cni: denied: access log line with DENY and the policy" \
		grep -q '"response_flags":"DENY".*"authorization_policy":"default/deny-app2"' "$LAB_ROOT/$lab/agent1.log"

	policies "[$(ap allow-app1 ALLOW "[{\"from\":[{\"source\":{\"principals\":[\"$app1\"]}}]}]")]" ||
		fail "$cni: policy allow-app1 applied"
	check "$cni: ALLOW principal: app-1 passes, app-2 and plaintext refused" \
		eval 'allowed n2-p1 8080 && denied n2-p2 8080 && denied n2-p3 8080'
	check "$cni: no ALLOW matched: span says allow policies exist, but none allowed" wait_span "$spans" \
		".name == \"inbound\" and .status.code == 2 and (.status.message | test(\"allow policies exist, but none allowed\"))"
	check "$cni: plaintext refused with a reset; HBONE refused: the client sees a reset too" \
		eval 'reset_seen n2-p3 8080 && reset_seen n2-p2 8080'

	# ---- by namespace (plaintext has none) and notPrincipals ----
	policies "[$(ap allow-default ALLOW '[{"from":[{"source":{"namespaces":["default"],"notPrincipals":["'"$app2"'"]}}]}]')]" ||
		fail "$cni: policy allow-default applied"
	check "$cni: ALLOW namespace minus notPrincipals: app-1 passes; app-2 and plaintext refused" \
		eval 'allowed n2-p1 8080 && denied n2-p2 8080 && denied n2-p3 8080'

	# ---- by port (target ports) ----
	policies "[$(ap allow-9000 ALLOW '[{"to":[{"operation":{"ports":["9000"]}}]}]')]" ||
		fail "$cni: policy allow-9000 applied"
	check "$cni: ALLOW port 9000: 9000 passes, 8080 refused" \
		eval 'allowed n2-p1 9000 && denied n2-p1 8080'

	# ---- by source IP (the vouched source of HBONE, the client of plaintext) ----
	policies "[$(ap deny-ip DENY "[{\"from\":[{\"source\":{\"ipBlocks\":[\"$p2/32\"]}}]}]")]" ||
		fail "$cni: policy deny-ip applied"
	check "$cni: DENY ipBlocks: app-2's address refused, app-1's passes" \
		eval 'denied n2-p2 8080 && allowed n2-p1 8080'
	policies "[$(ap deny-notip DENY "[{\"from\":[{\"source\":{\"notIpBlocks\":[\"$p1/32\"]}}]}]")]" ||
		fail "$cni: policy deny-notip applied"
	check "$cni: DENY notIpBlocks: only app-1's address passes (HBONE and plaintext)" \
		eval 'allowed n2-p1 8080 && denied n2-p2 8080 && denied n2-p3 8080'

	# ---- PeerAuthentication ----
	policies "[$(pa strict STRICT)]" || fail "$cni: PeerAuthentication STRICT applied"
	check "$cni: STRICT: plaintext refused, HBONE passes" eval 'denied n2-p3 8080 && allowed n2-p1 8080'
	check "$cni: STRICT: the inbound span names the PeerAuthentication" wait_span "$spans" \
		".name == \"inbound\" and .status.code == 2 and (.status.message | test(\"default/strict\")) and .attributes.response_flags == \"DENY\""
	policies "[$(pa permissive PERMISSIVE)]" || fail "$cni: PeerAuthentication PERMISSIVE applied"
	check "$cni: PERMISSIVE: plaintext passes" allowed n2-p3 8080

	# ---- dry-run ----
	policies "[$(ap dry-deny DENY "[{\"from\":[{\"source\":{\"principals\":[\"$app2\"]}}]}]" '{"istio.io/dry-run":"true"}')]" ||
		fail "$cni: dry-run policy applied"
	check "$cni: dry-run DENY: traffic passes" allowed n2-p2 8080
	check "$cni: dry-run DENY: counted with dry_run=true" \
		eval '[ "$(metric 1 ambit_authorization_denied_total policy=default/dry-deny)" -ge 1 ] &&
		      [ "$(metric 1 ambit_authorization_denied_total dry_run=true)" -ge 1 ]'
	check "$cni: dry-run DENY: span attribute and log line, span not ERROR" wait_span "$spans" \
		".name == \"inbound\" and .status.code != 2 and (.attributes[\"authorization.dry_run\"] // \"\" | test(\"^deny: denied by default/dry-deny\"))"
	check "$cni: dry-run DENY: logged" grep -q 'dry-run: connection .* would be denied by default/dry-deny' "$LAB_ROOT/$lab/agent1.log"

	# ---- a refused object keeps the others in force ----
	policies "[$(ap deny-app2 DENY "[{\"from\":[{\"source\":{\"principals\":[\"$app2\"]}}]}]"),$(ap bad-port ALLOW '[{"to":[{"operation":{"ports":["70000"]}}]}]')]" ||
		fail "$cni: a good and a bad policy listed"
	check "$cni: bad object refused (state, message naming the field), the good one enforced" eval '
		admin 1 /policies | jq -e ".policies[] | select(.name == \"bad-port\") | .state == \"refused\" and (.diagnostics | map(.path + \" \" + .message) | join(\" \") | test(\"ports.*70000\"))" >/dev/null ||
		{ admin 1 /policies | jq -c ".policies[] | select(.name == \"bad-port\")"; false; } &&
		denied n2-p2 8080 && allowed n2-p1 8080'

	# ---- ambitctl ----
	check "$cni: ambitctl policies lists them" eval "pod_exec $lab n1 $CTL policies | grep -E '^default +deny-app2 +authz +DENY +selector +applied +[0-9]+ '"
	check "$cni: ambitctl policies check: deny by deny-app2 (workload names)" eval \
		"pod_exec $lab n1 $CTL policies check --from default/$lab-n2-p2 --to default/$w1:8080 -o json | jq -e '.verdict == \"deny\" and (.message | test(\"deny-app2\"))' >/dev/null"
	check "$cni: ambitctl policies check: app-1's address is allowed" eval \
		"pod_exec $lab n1 $CTL policies check --from $p1 --to default/$w1:8080 | grep -E '^verdict +allow'"

	# ---- re-check of open connections ----
	policies '[]' || fail "$cni: policies cleared"
	check "$cni: long connection open" long_open n2-p1 8080 "$logs/long-$cni.out"
	sleep 0.5
	local changed
	changed=$(date +%s.%N)
	policies "[$(ap deny-app1 DENY "[{\"from\":[{\"source\":{\"principals\":[\"$app1\"]}}]}]")]" ||
		fail "$cni: policy deny-app1 applied"
	check "$cni: the policy added closes the open connection" \
		closed_after "$logs/long-$cni.out" "$changed"
	check "$cni: re-check: log line names the policy" \
		lab_until grep -q 'closed by the policy re-check: denied by default/deny-app1' "$LAB_ROOT/$lab/agent1.log"
	check "$cni: re-check: the span says so" wait_span "$spans" \
		".name == \"inbound\" and .status.code == 2 and (.status.message | test(\"closed by the policy re-check: denied by default/deny-app1\"))"
	check "$cni: re-check: the source's span shows the reset it saw (UR), not the policy" \
		recheck_source_span "$spans" deny-app1
	check "$cni: re-check: counted" lab_until eval '[ "$(metric 1 ambit_authorization_recheck_closed_total)" -ge 1 ]'
	# ---- a workload change re-checks too: the destination gains the label a DENY selects ----
	local lock
	lock=$(jq -cn '{ apiVersion: "security.istio.io/v1", kind: "AuthorizationPolicy",
		metadata: { name: "deny-locked", namespace: "default" },
		spec: { selector: { matchLabels: { tier: "locked" } }, action: "DENY", rules: [{}] } }')
	policies "[$lock]" || fail "$cni: policy deny-locked applied"
	check "$cni: workload change: a long connection open (no workload is locked yet)" \
		long_open n2-p1 9000 "$logs/long2-$cni.out"
	sleep 0.5
	changed=$(date +%s.%N)
	workloads_edit "(.workloads[] | select(.name == \"$w1\") | .labels.tier) = \"locked\""
	check "$cni: workload change: the connection now denied closes" \
		closed_after "$logs/long2-$cni.out" "$changed"
	check "$cni: workload change: log line names the policy" \
		lab_until grep -q 'closed by the policy re-check: denied by default/deny-locked' "$LAB_ROOT/$lab/agent1.log"
	workloads_edit "(.workloads[] | select(.name == \"$w1\") | .labels) |= del(.tier)"
	policies '[]' || true

	# in this shell (check runs its command in a subshell, which cannot wait for the agents)
	if agents_stop; then ok "$cni: agents exit cleanly (no sanitizer report)"
	else fail "$cni: agents exit cleanly (no sanitizer report)"; fi
	cp "$LAB_ROOT/$lab"/agent*.log "$logs/" 2>/dev/null || true
	lab_sink_stop "$lab" || true
	lab_down "$lab"
}

for cni in ${AUTHZ_CNI:-routed bridge}; do scenario "$cni"; done
lab_result
