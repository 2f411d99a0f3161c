#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ambit-ca without restarts, as a process on 127.0.0.1 (no lab namespaces; temp dir
# /tmp/ambit-car.*), against independent peers only (the grpc-js Istio client, the openssl
# CLI, the test API server). Its ca.cert/ca.key are a Kubernetes Secret volume (..data
# symlink swapped by rename, as the kubelet does). With calls running throughout (zero
# failures allowed) and one process from start to end:
# - the serving certificate (serving.lifetime_s 10) is renewed at half its life, counted;
# - the three rotation steps of docs/ca.md: each new pair is taken without a restart, the root
#   ConfigMap follows at once, after the key switch the certificates issued and the serving
#   certificate chain to the new root alone;
# - a pair whose key does not match is refused: logged, counted, the current pair signs on;
# - SIGTERM ends it cleanly (no sanitizer report).
set -uo pipefail
. "$(dirname "$0")/lib.sh"

lab_ca_peers || { lab_result; exit 1; }
t=$(mktemp -d /tmp/ambit-car.XXXXXX)
PIDS=()
cleanup() {
	touch "$t/stop"
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	rm -rf "$t"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

# ---- two roots, the token issuer's key, the view of pods ----
k='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'
root() { # NAME: a self-signed CA
	# shellcheck disable=SC2086
	openssl req -x509 $k -keyout "$t/$1.key" -out "$t/$1.crt" -days 30 \
		-subj "/O=cluster.local/CN=root $1" -addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign"
}
if ! (root old && root new && "$PY" "$MINT" keygen --alg ES256 --key "$t/es.key" --pub "$t/es.pub") \
	>"$t/pki.log" 2>&1; then
	fail "test PKI made"; cat "$t/pki.log"; lab_result; exit 1
fi
cat "$t/old.crt" "$t/new.crt" >"$t/both.crt"	# what the clients trust throughout
cat >"$t/workloads.json" <<'JSON'
{ "nodes": [ { "name": "node-1", "address": "172.18.0.2" } ],
  "workloads": [
    { "uid": "default/api-1", "name": "api-1", "namespace": "default", "service_account": "api",
      "node": "node-1", "addresses": ["10.244.1.5"], "enrolled": true } ],
  "services": [] }
JSON
secret() { lab_secret_volume "$t/secret" "$t/$1" "${@:2}"; }	# KEY CERT...: a new version
secret old.key "$t/old.crt"

# ---- the API server (for the root ConfigMap) and ambit-ca ----
API=$(port); GRPC=$(port); ADMIN=$(port)
"$PY" "$LAB_TOP/tests/tools/fake_apiserver.py" --bind 127.0.0.1 --port "$API" --token ca-own-token \
	>"$t/api.log" 2>&1 &
PIDS+=($!)
lab_until curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$API/healthz" 2>/dev/null || true
echo ca-own-token >"$t/own-token"
jq -n --arg l "127.0.0.1:$GRPC" --arg a "127.0.0.1:$ADMIN" --arg d "$t" --arg api "http://127.0.0.1:$API" '{
	listen: $l, admin_address: $a, trust_domain: "cluster.local",
	ca: { cert: ($d + "/secret/ca.crt"), key: ($d + "/secret/ca.key") },
	server_names: ["localhost", "127.0.0.1"],
	serving: { lifetime_s: 10, renew_fraction: 0.5 },
	discovery: { source: "file", file: ($d + "/workloads.json"),
		     kubernetes: { api_server: $api, token_file: ($d + "/own-token") } },
	tokens: { issuer_keys: [($d + "/es.pub")], audience: "istio-ca" },
	root_cert_configmap: "ambit-root-cert",
	log: { level: "info", format: "text" } }' >"$t/ca.json"
POD_NAMESPACE=ambit-system "$CA_BIN" --config "$t/ca.json" >"$t/ca.log" 2>&1 &
CA=$!
PIDS+=("$CA")
ready() { curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$ADMIN/healthz/ready" 2>/dev/null; }
check "ambit-ca ready (serving.lifetime_s 10, a Secret volume for ca.cert/ca.key)" lab_until ready

before_expiry() { LAB_WAIT_S=12 lab_until "$@"; } # CMD...: within the 10 s lifetime, and a little
metric() { curl -fsS -m 2 "http://127.0.0.1:$ADMIN/metrics" | awk -v s="$1" '$1 == s { print $2 }'; }
reloads() { [ "$(grep -c 'reloaded without a restart' "$t/ca.log")" -ge "$1" ]; }
serving() { # CAFILE: the serving certificate (PEM) of a new handshake verified against CAFILE
	openssl s_client -connect "127.0.0.1:$GRPC" -servername localhost -alpn h2 -CAfile "$1" \
		-verify_return_error </dev/null 2>/dev/null | openssl x509
}
serving_from() { serving "$1" >/dev/null; }	# CAFILE: a new handshake verifies against it alone
serial() { serving "$t/both.crt" | openssl x509 -noout -serial; }
renewed_since() { local s; s=$(serial) && [ -n "$s" ] && [ "$s" != "$1" ]; }
# shellcheck disable=SC2086
openssl req -new $k -keyout "$t/api.key" -out "$t/api.csr" -subj "/O=test" \
	-addext "subjectAltName=URI:spiffe://cluster.local/ns/default/sa/api" >/dev/null 2>&1
TOKEN=$("$PY" "$MINT" mint --key "$t/es.key" --sub ambit-system:ambit --node node-1 --pod ambit-x1 --exp-in 3600)
call() { # OUT: one CreateCertificate for api (trusting both roots); chain in OUT; its JSON line
	node --no-deprecation "$NODE/ca_client.js" --addr "127.0.0.1:$GRPC" --ca "$t/both.crt" \
		--csr "$t/api.csr" --token "$TOKEN" --impersonate spiffe://cluster.local/ns/default/sa/api \
		--validity 3600 --out "$1" 2>>"$t/client.err"
}
issued_by() { # CAFILE: a new certificate chains to CAFILE alone
	local out
	out=$(call "$t/chain.pem") && [ "$(jq -r .code <<<"$out")" = 0 ] &&
		openssl x509 -in "$t/chain.pem" -out "$t/leaf.pem" &&
		openssl verify -CAfile "$1" -untrusted "$t/chain.pem" "$t/leaf.pem" >/dev/null
}
cm_roots() { # the subjects of the root ConfigMap's certificates, in order, one line
	curl -fsS -m 2 -H 'Authorization: Bearer ca-own-token' \
		"http://127.0.0.1:$API/api/v1/namespaces/ambit-system/configmaps/ambit-root-cert" |
		jq -r '.data["root-cert.pem"]' |
		openssl crl2pkcs7 -nocrl -certfile /dev/stdin | openssl pkcs7 -print_certs -noout |
		sed -n 's/^subject=.*CN *= *//p' | tr '\n' ' '
}
cm_is() { [ "$(cm_roots)" = "$1" ]; }	# "root old root new " ...

check "the root ConfigMap holds the old root" lab_until cm_is "root old "
check "a certificate is issued from the old root" issued_by "$t/old.crt"

# ---- calls throughout: each a new connection, every one must succeed ----
bash -c "while [ ! -e '$t/stop' ]; do
	if out=\$(node --no-deprecation '$NODE/ca_client.js' --addr 127.0.0.1:$GRPC --ca '$t/both.crt' \
		--csr '$t/api.csr' --token '$TOKEN' --impersonate spiffe://cluster.local/ns/default/sa/api \
		--validity 3600 --out '$t/bg.pem' 2>&1) && [ \"\$(jq -r .code <<<\"\$out\")\" = 0 ]
	then echo ok; else echo \"FAIL \$(date +%T.%N) \$out\"; fi; sleep 0.2; done" >"$t/calls.log" 2>&1 &
PIDS+=($!)

# ---- the serving certificate is renewed at half its life (5 s) ----
s0=$(serial)
check "the serving certificate is renewed before it expires (new serial)" before_expiry renewed_since "$s0"
check "... logged and counted" sh -c "grep -q 'serving certificate renewed (due)' '$t/ca.log' &&
	[ \"\$(curl -fsS http://127.0.0.1:$ADMIN/metrics | awk '\$1 == \"ambit_ca_server_serving_cert_renewals_total\" { print \$2 }')\" -ge 1 ]"
check "... its expiry is a metric, in the future" \
	sh -c "[ \"\$(curl -fsS http://127.0.0.1:$ADMIN/metrics | awk '\$1 == \"ambit_ca_server_serving_cert_expiry_timestamp_seconds\" { print \$2 }')\" -gt $(date +%s) ]"

# ---- 1. add the new root (ca.cert = old, new; the old key) ----
secret old.key "$t/old.crt" "$t/new.crt"
check "1: ambit-ca takes the new ca.cert without a restart" lab_until reloads 1
check "1: the root ConfigMap lists both roots, the old first" lab_until cm_is "root old root new "
check "1: certificates still come from the old key" issued_by "$t/old.crt"

# ---- 2. switch the signing key (ca.cert = new, old; the new key) ----
secret new.key "$t/new.crt" "$t/old.crt"
check "2: ambit-ca takes the new key without a restart" lab_until reloads 2
check "2: certificates come from the new root alone" issued_by "$t/new.crt"
check "2: the serving certificate comes from the new key (verifies with the new root alone)" \
	lab_until serving_from "$t/new.crt"
check "2: the root ConfigMap lists the new root first" lab_until cm_is "root new root old "

# ---- a bad pair: the old root's certificate with the new key ----
secret new.key "$t/old.crt"
bad() { grep -q "are refused, the current pair .* signs on: .*key does not match" "$t/ca.log"; }
check "a mismatched pair is refused with a clear error" lab_until bad
metric_is() { local v; v=$(metric "$1"); echo "$1 = $v"; [ "$v" = "$2" ]; } # NAME VALUE
check "... counted (ambit_ca_server_ca_reload_errors_total 1)" \
	lab_until metric_is ambit_ca_server_ca_reload_errors_total 1
check "... and the current pair signs on" issued_by "$t/new.crt"
check "... the ConfigMap keeps the current roots" cm_is "root new root old "

# ---- 3. remove the old root ----
secret new.key "$t/new.crt"
check "3: ambit-ca takes ca.cert without the old root" lab_until reloads 3
check "3: the root ConfigMap holds the new root alone" lab_until cm_is "root new "
check "3: certificates come from the new root" issued_by "$t/new.crt"
check "ambit_ca_server_ca_reloads_total counts the three" \
	lab_until metric_is ambit_ca_server_ca_reloads_total 3
check "one process throughout (never restarted)" kill -0 "$CA"
sleep 1

# ---- the calls' account ----
touch "$t/stop"
sleep 1
n_ok=$(grep -c '^ok' "$t/calls.log" || true)
n_fail=$(grep -c '^FAIL' "$t/calls.log" || true)
check "calls throughout: $n_ok succeeded, $n_fail failed" test "$n_fail" = 0 -a "$n_ok" -ge 5
[ "$n_fail" = 0 ] || grep FAIL "$t/calls.log" | head -5 | sed 's/^/#   /'
rc=0
kill -TERM "$CA"
wait "$CA" || rc=$?
check "SIGTERM: exit 0, no sanitizer report" bash -c "[ $rc -eq 0 ] && ! grep -q Sanitizer '$t/ca.log'"
[ "$rc" = 0 ] || tail -20 "$t/ca.log" | sed 's/^/#   /'
lab_result
