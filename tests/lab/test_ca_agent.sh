#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Node agents with no CA key, getting their workloads' certificates from a CA over Istio's
# certificate API (an independent one: tests/node/ca_server.js, grpc-js + proto-loader, signing
# with python3-cryptography), in the lab (two nodes, routed CNI, every pod enrolled):
# - the agents' configs have ca.address and no ca.key; readiness waits for the certificates; the
#   CA saw one request per local workload identity, each with the node's bearer token,
#   ImpersonatedIdentity and a CSR for that identity; HBONE traffic crosses the nodes;
# - with 90 s certificates, renewal at half-life and a CA restart while a paced stream runs drop
#   nothing (every echo round comes back, the stream ends cleanly), and renewal is no storm;
# - the CA unreachable: existing and new connections keep working with the current
#   certificates; a new local workload has none and readiness is 503 naming it and the CA
#   error; without it readiness is 200 with a warning line; ambit_ca_request_failures_total and
#   ambit_certificates_failing count it and /certificates shows the last error; the CA back,
#   the warning clears.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - ca agent lab (needs root)"; exit 1; }
lab_node_deps || { lab_result; exit 1; }
lab_tmpdir logs ca-agent
lab=caag-$$	# unique: other runs of this test may be up at the same time
TD=cluster.local
spiffe() { echo "spiffe://$TD/ns/default/sa/$1"; }
admin() { pod_exec "$lab" "n$1" curl -fsS -m 5 "http://127.0.0.1:15000$2"; }
ready() { pod_exec "$lab" "n$1" curl -sS -m 5 -w '\n%{http_code}\n' "http://$(lab_node_ip "$1"):15021/healthz/ready"; }
# wait_ready K CODE: until node K's readiness answers CODE (LAB_WAIT_S at most); its answer in $out.
wait_ready() { lab_until ready_is "$@" >/dev/null || true; }
ready_is() { out=$(ready "$1" || true); [ "$(echo "$out" | tail -n 1)" = "$2" ]; }

if ! lab_up "$lab" --nodes 2 --pods 2 --cni routed --ca local >"$logs/up.log" 2>&1; then
	fail "lab up"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
dir=$LAB_ROOT/$lab
p21=$(lab_pod_ip 2 1)
ca_ip=$(lab_var UL_IP)

# The CA's serving certificate (for its underlay address) from the mesh root, whose key only the
# CA has: the agents get ca.crt as their trust bundle and nothing else.
mkdir -p "$logs/ca"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$logs/ca/srv.key" \
	-out "$logs/ca/srv.csr" -subj "/CN=ambit-ca" 2>/dev/null &&
	printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$ca_ip" >"$logs/ca/srv.ext" &&
	openssl x509 -req -in "$logs/ca/srv.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
		-set_serial 11 -days 2 -extfile "$logs/ca/srv.ext" -out "$logs/ca/srv.crt" 2>/dev/null ||
	{ fail "CA serving certificate"; lab_result; exit 1; }
echo "node-token-$$" >"$dir/ca-token"
echo "node-token-$$" >"$logs/ca/expected-token"
echo ok >"$logs/ca/mode"

ca_start() {
	pod_spawn "$lab" ul "$logs/ca-server.log" node "$LAB_TOP/tests/node/ca_server.js" \
		--host "$ca_ip" --port 15012 --cert "$logs/ca/srv.crt" --key "$logs/ca/srv.key" \
		--ca-cert "$dir/ca.crt" --ca-key "$dir/ca.key" --token-file "$logs/ca/expected-token" \
		--mode-file "$logs/ca/mode" --log "$logs/ca/requests.jsonl"
	CA_PID=$SPAWNED_PID
	wait_port "$lab" ul 15012 20
}
ca_stop() { kill "$CA_PID" 2>/dev/null; wait "$CA_PID" 2>/dev/null || true; }

for k in 1 2; do
	cfg=$dir/node$k.json
	jq --arg a "https://$ca_ip:15012" --arg t "$dir/ca-token" \
		'.ca = {address: $a, cert: .ca.cert, token_file: $t} | .hbone = {cert_lifetime_s: 90}' \
		"$cfg" >"$cfg.new" && mv "$cfg.new" "$cfg"
done
ca_start || { fail "CA server starts"; lab_result; exit 1; }
pod_spawn "$lab" n2-p1 "$logs/echo.log" "$TCPKIT" serve --port 9000 --mode echo
wait_port "$lab" n2-p1 9000
if ! lab_start_agent "$lab" 1 || ! lab_start_agent "$lab" 2; then
	fail "agents start (ready once their certificates came from the CA)"; lab_result; exit 1
fi
ok "agents start and are ready: their certificates came from the CA"
t_start=$SECONDS

# ------------------------------------------------------------------ 1. no key, one request each
check "the agents' configs hold no CA key, only the CA's address, bundle and token" sh -c "
	for k in 1 2; do
		jq -e '.ca.key == null and (.ca.address | startswith(\"https://\")) and .ca.token_file != null' \
			'$dir/node'\$k.json >/dev/null || exit 1
	done"
mode=$(admin 1 /certificates | jq -r '.ca.mode + " " + .ca.backend')
check "/certificates says ca-client mode with the CA's address ($mode)" \
	test "$mode" = "ca-client https://$ca_ip:15012"
ids1=$(admin 1 /certificates | jq -r '[.certificates[] | select(.serial != "") | .identity] | sort | join(",")')
check "node 1 holds certificates for its two workloads ($ids1)" \
	test "$ids1" = "$(spiffe app-1),$(spiffe app-2)"
check "the CA saw requests with the node token, ImpersonatedIdentity and a CSR for that identity" python3 - "$logs/ca/requests.jsonl" "node-token-$$" <<'PY'
import json, sys
reqs = [json.loads(l) for l in open(sys.argv[1])]
ok = [r for r in reqs if r["status"] == 0]
assert len(ok) >= 4, reqs
for r in reqs:
    assert r["authorization"] == "Bearer " + sys.argv[2], r
    assert r["impersonated"] == r["csr_uri"] or r["csr_uri"] is None, r
    assert r["validity"] == 90, r
assert {r["impersonated"] for r in ok} == {"spiffe://cluster.local/ns/default/sa/app-1",
                                          "spiffe://cluster.local/ns/default/sa/app-2"}, reqs
PY
check "HBONE carries traffic between the nodes with those certificates" \
	pod_exec "$lab" n1-p1 "$TCPKIT" client --to "$p21:9000" --mode echo --bytes 4M --timeout 20

# ------------------------------------------- 2. renewal and a CA restart under a running stream
serial0=$(admin 1 /certificates | jq -r --arg i "$(spiffe app-1)" '.certificates[] | select(.identity == $i) | .serial')
pod_spawn "$lab" n1-p1 "$logs/paced.log" python3 "$LAB_TOP/tests/tools/paced_echo.py" "$p21" 9000 550 0.1
paced=$SPAWNED_PID
renewed=""
for _ in $(seq 700); do
	s=$(admin 1 /certificates | jq -r --arg i "$(spiffe app-1)" '.certificates[] | select(.identity == $i) | .serial')
	[ -n "$s" ] && [ "$s" != "$serial0" ] && { renewed=$s; break; }
	sleep 0.1
done
check "node 1 renewed app-1's certificate at half-life while the stream runs" test -n "$renewed"
nreq=$(wc -l <"$logs/ca/requests.jsonl")
most=$((4 * ((SECONDS - t_start) / 45 + 2)))	# 4 identities, one renewal per 45 s, slack
check "... at half-life, no renewal storm ($nreq requests for 4 identities in $((SECONDS - t_start)) s)" \
	test "$nreq" -le "$most"
ca_stop
sleep 2
ca_start || fail "CA server restarts"
rc=0
for _ in $(seq 600); do kill -0 "$paced" 2>/dev/null || break; sleep 0.1; done
wait "$paced" 2>/dev/null || rc=$?
check "renewal and a CA restart dropped nothing: all 550 rounds echoed, clean EOF (exit $rc)" \
	sh -c "test $rc -eq 0 && grep -q '^done' '$logs/paced.log'"

# -------------------------------------------------------------------- 3. the CA unreachable
ca_stop
fails0=$(lab_metric "$lab" 1 ambit_ca_request_failures_total)
# A new workload on node 1 has no certificate while the CA is away.
jq --arg n "$lab-n1" '.workloads += [{uid: "default/late-1", name: "late-1", namespace: "default",
	service_account: "late", node: $n, addresses: ["10.244.1.99"], canonical_service: "late",
	labels: {app: "late"}, enrolled: true, waypoint: null}]' "$dir/workloads.json" >"$logs/wl.json"
cp "$dir/workloads.json" "$logs/workloads.orig.json"
cp "$logs/wl.json" "$dir/workloads.json.tmp" && mv "$dir/workloads.json.tmp" "$dir/workloads.json"
wait_ready 1 503
check "readiness is 503 naming the workload without a certificate and the CA error" sh -c "
	echo '$out' | grep -q '^503$' &&
	echo '$out' | grep -q 'not ready: no certificate yet for 1 of 3 local identities; $(spiffe late)' &&
	echo '$out' | grep -q 'unreachable'"
check "existing workloads keep serving with their certificates (a new connection works)" \
	pod_exec "$lab" n1-p1 "$TCPKIT" client --to "$p21:9000" --mode echo --bytes 1M --timeout 20
cp "$logs/workloads.orig.json" "$dir/workloads.json.tmp" && mv "$dir/workloads.json.tmp" "$dir/workloads.json"
wait_ready 1 200
check "without it readiness is 200 with a warning: the CA fails, current certificates serve" sh -c "
	echo '$out' | grep -q '^200$' && echo '$out' | grep -q '^ready$' &&
	echo '$out' | grep -q '^warning: the CA (https://$ca_ip:15012) is failing'"
fails1=$(lab_metric "$lab" 1 ambit_ca_request_failures_total)
check "ambit_ca_request_failures_total counts the failed requests ($fails0 -> $fails1)" \
	test "$fails1" -gt "$fails0"
# The running certificates come due while the CA is away: renewal fails, they are kept.
failing=0
for _ in $(seq 600); do
	failing=$(lab_metric "$lab" 1 ambit_certificates_failing)
	[ "$failing" -ge 1 ] && break
	sleep 0.1
done
check "ambit_certificates_failing shows identities whose renewal failed ($failing)" test "$failing" -ge 1
kept=$(admin 1 /certificates | jq '[.certificates[] | select(.failures > 0 and
	(.last_error | test("unreachable")) and .serial != "" and .state != "expired")] | length')
check "/certificates shows the renewal error and keeps the current certificate ($kept)" \
	test "$kept" -ge 1
check "... and connections still work meanwhile" \
	pod_exec "$lab" n1-p1 "$TCPKIT" client --to "$p21:9000" --mode echo --bytes 1M --timeout 20

# ------------------------------------------------------------------------- 4. the CA is back
ca_start || fail "CA server restarts"
# Readiness turns plain at the CA's first success (last success newer than last failure); an
# identity whose own retry is still due (or whose request the restart cut) still counts in
# ambit_certificates_failing until its next attempt succeeds: wait for both, not one then the
# other. Bound: the longest retry backoff (60 s) and a signing under load.
end=$((SECONDS + 90))
while :; do
	out=$(ready 1 || true)
	failing=$(lab_metric "$lab" 1 ambit_certificates_failing || true)
	[ "$out" = "$(printf 'ready\n\n200')" ] && [ "$failing" = 0 ] && break
	[ "$SECONDS" -lt "$end" ] || break
	sleep 0.2
done
check "the CA back: readiness is plain ready again, nothing failing ($failing)" \
	test "$out" = "$(printf 'ready\n\n200')" -a "$failing" = 0
if [ "$CHECK_RC" -ne 0 ]; then
	note "readiness: $out"
	admin 1 /certificates | jq -c '.certificates[] | {identity, state, failures, last_error, next_attempt_ms, in_flight}, .ca' | sed 's/^/#   /'
	grep -i "certif\|ca" "$dir/agent1.log" | tail -n 15 | sed 's/^/#   /'
fi
ca_stop
if [ "$LAB_FAILED" -gt 0 ]; then
	for k in 1 2; do
		note "agent $k: warnings"
		grep -E '"level":"(warn|error)"' "$dir/agent$k.log" | tail -n 15 | sed 's/^/#   /'
	done
fi
for k in 1 2; do
	lab_stop_agent "$lab" "$k"
	check "agent $k exits cleanly (status $AGENT_EXIT)" test "$AGENT_EXIT" = 0
done
lab_result
