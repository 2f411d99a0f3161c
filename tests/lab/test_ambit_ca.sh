#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ambit-ca end to end, as a process on 127.0.0.1 (no lab namespaces), against independent
# peers only: an Istio certificate client in grpc-js + proto-loader (tests/node/ca_client.js,
# Istio's ca.proto), CSRs made by the openssl CLI, tokens minted by python3-cryptography
# (tests/tools/mint_token.py), chains checked by `openssl verify`, and the test API server
# (tests/tools/fake_apiserver.py) for TokenReview, the Kubernetes view of pods and the root
# ConfigMap. Checks: a node agent gets its node's workload identity (ES256 and RS256 tokens);
# another node's pod, an app impersonating a neighbour, another trust domain are
# PERMISSION_DENIED; bad, expired, alg-none and wrong-audience tokens UNAUTHENTICATED; a CSR
# for another identity INVALID_ARGUMENT; an untrusted server fails the client's TLS; every
# decision is logged and counted; TokenReview mode: the same rules with the API server's
# answer, UNAUTHENTICATED for tokens it refuses; ConfigMap ambit-root-cert holds the root.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

lab_ca_peers || { lab_result; exit 1; }
t=$(mktemp -d /tmp/ambit-ca-e2e.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	rm -rf "$t"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

# ---- the CA, the token issuer's keys, the cluster ----
k='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'
# shellcheck disable=SC2086
if ! (cd "$t" && openssl req -x509 $k -keyout ca.key -out ca.crt -days 30 \
	-subj "/O=cluster.local/CN=e2e root" -addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" &&
	openssl req -x509 $k -keyout other.key -out other.crt -days 30 -subj "/CN=other" &&
	"$PY" "$MINT" keygen --alg ES256 --key es.key --pub es.pub &&
	"$PY" "$MINT" keygen --alg RS256 --key rs.key --pub rs.pub &&
	"$PY" "$MINT" keygen --alg ES256 --key rogue.key --pub rogue.pub) >"$t/pki.log" 2>&1; then
	fail "test PKI made"; cat "$t/pki.log"; lab_result; exit 1
fi
cat >"$t/workloads.json" <<'JSON'
{ "nodes": [ { "name": "node-1", "address": "172.18.0.2" }, { "name": "node-2", "address": "172.18.0.3" } ],
  "workloads": [
    { "uid": "default/api-1", "name": "api-1", "namespace": "default", "service_account": "api",
      "node": "node-1", "addresses": ["10.244.1.5"], "enrolled": true },
    { "uid": "prod/db-1", "name": "db-1", "namespace": "prod", "service_account": "db",
      "node": "node-2", "addresses": ["10.244.2.5"], "enrolled": true } ],
  "services": [] }
JSON
GRPC=$(port); ADMIN=$(port)
jq -n --arg l "127.0.0.1:$GRPC" --arg a "127.0.0.1:$ADMIN" --arg d "$t" '{
	listen: $l, admin_address: $a, trust_domain: "cluster.local",
	ca: { cert: ($d + "/ca.crt"), key: ($d + "/ca.key") },
	server_names: ["localhost", "127.0.0.1"],
	discovery: { source: "file", file: ($d + "/workloads.json") },
	tokens: { issuer_keys: [($d + "/es.pub"), ($d + "/rs.pub")], audience: "istio-ca" },
	max_validity_s: 7200, root_cert_configmap: "",
	log: { level: "info", format: "text" } }' >"$t/ca.json"
"$CA_BIN" --config "$t/ca.json" >"$t/ca.log" 2>&1 &
CA1=$!
PIDS+=($CA1)
ready() { curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$1/healthz/ready" 2>/dev/null; }
check "ambit-ca ready (JWT mode, file discovery)" lab_until ready "$ADMIN"

csr() { # NAME SPIFFE_ID: a P-256 key and a CSR whose URI SAN is the ID (openssl CLI)
	# shellcheck disable=SC2086
	openssl req -new $k -keyout "$t/$1.key" -out "$t/$1.csr" -subj "/O=test" \
		-addext "subjectAltName=URI:$2" >/dev/null 2>&1
}
csr api spiffe://cluster.local/ns/default/sa/api
csr db spiffe://cluster.local/ns/prod/sa/db
csr agent spiffe://cluster.local/ns/ambit-system/sa/ambit
csr evil spiffe://evil.example/ns/default/sa/api
mint() { "$PY" "$MINT" mint "$@"; }
AG1=$(mint --key "$t/es.key" --sub ambit-system:ambit --node node-1 --pod ambit-x1)
AG1RS=$(mint --key "$t/rs.key" --alg RS256 --sub ambit-system:ambit --node node-1 --pod ambit-x1)
APP=$(mint --key "$t/es.key" --sub default:api --node node-1 --pod api-1)
call() { # TOKEN CSR [IMPERSONATE] [ADDR] [CAFILE]: the client's JSON line
	node --no-deprecation "$NODE/ca_client.js" --addr "${4:-127.0.0.1:$GRPC}" --ca "${5:-$t/ca.crt}" \
		--csr "$t/$2.csr" --token "$1" ${3:+--impersonate "$3"} --validity 86400 \
		--out "$t/$2.chain" 2>>"$t/client.err"
}
expect() { # CODE DETAILS_SUBSTRING TOKEN CSR [IMPERSONATE] ...
	local code=$1 want=$2 out; shift 2
	out=$(call "$@")
	echo "$out"
	[ "$(jq -r .code <<<"$out")" = "$code" ] && grep -qF -- "$want" <<<"$(jq -r .details <<<"$out")"
}
issued() { # CSR ID: the chain verifies to the root, holds the CSR's key and exactly that URI SAN
	local leaf=$t/$1.leaf
	openssl x509 -in "$t/$1.chain" -out "$leaf" &&
	openssl verify -CAfile "$t/ca.crt" -untrusted "$t/$1.chain" "$leaf" &&
	[ "$(openssl x509 -in "$leaf" -noout -pubkey)" = "$(openssl req -in "$t/$1.csr" -noout -pubkey)" ] &&
	[ "$(openssl x509 -in "$leaf" -noout -ext subjectAltName | tail -n +2 | tr -d ' ')" = "URI:$2" ] &&
	openssl x509 -in "$leaf" -noout -checkend 7000 >/dev/null &&
	! openssl x509 -in "$leaf" -noout -checkend 7300 >/dev/null	# capped at max_validity_s
}

check "node-1 agent (ES256 token) gets node-1's workload identity" \
	expect 0 "" "$AG1" api spiffe://cluster.local/ns/default/sa/api
check "the chain verifies with openssl, holds the CSR key, the one URI SAN, validity capped" \
	issued api spiffe://cluster.local/ns/default/sa/api
check "RS256 token works the same" expect 0 "" "$AG1RS" api spiffe://cluster.local/ns/default/sa/api
check "node-1 agent refused node-2's pod identity (PERMISSION_DENIED)" \
	expect 7 "no workload of spiffe://cluster.local/ns/prod/sa/db runs on node node-1" \
	"$AG1" db spiffe://cluster.local/ns/prod/sa/db
check "an app impersonating a neighbour: PERMISSION_DENIED" \
	expect 7 "is not a node agent" "$APP" db spiffe://cluster.local/ns/prod/sa/db
check "an app without impersonation gets its own identity" expect 0 "" "$APP" api
check "an agent without impersonation gets its own identity" expect 0 "" "$AG1" agent
check "another trust domain: PERMISSION_DENIED" \
	expect 7 "trust domain evil.example is not ours" "$AG1" evil spiffe://evil.example/ns/default/sa/api
check "a CSR for another identity than asked: INVALID_ARGUMENT" \
	expect 3 "the CSR is for spiffe://cluster.local/ns/prod/sa/db" "$AG1" db spiffe://cluster.local/ns/default/sa/api
check "a garbage token: UNAUTHENTICATED" expect 16 "compact JWS" "garbage" api
check "a token signed by another key: UNAUTHENTICATED" expect 16 "does not verify" \
	"$(mint --key "$t/rogue.key" --sub ambit-system:ambit --node node-1)" api spiffe://cluster.local/ns/default/sa/api
check "an expired token: UNAUTHENTICATED" expect 16 "expired" \
	"$(mint --key "$t/es.key" --sub ambit-system:ambit --node node-1 --exp-in -120)" api
check "a token not valid yet: UNAUTHENTICATED" expect 16 "not yet valid" \
	"$(mint --key "$t/es.key" --sub ambit-system:ambit --node node-1 --nbf-in 600)" api
check "alg none: UNAUTHENTICATED" expect 16 "alg none refused" \
	"$(mint --key "$t/es.key" --sub ambit-system:ambit --node node-1 --header-alg none)" api
check "wrong audience: UNAUTHENTICATED" expect 16 "audience istio-ca not in" \
	"$(mint --key "$t/es.key" --sub ambit-system:ambit --node node-1 --aud https://kubernetes.default.svc)" api
check "a client trusting another CA fails the TLS handshake (UNAVAILABLE)" \
	expect 14 "" "$AG1" api spiffe://cluster.local/ns/default/sa/api "" "$t/other.crt"
metric() { curl -fsS -m 2 "http://127.0.0.1:$ADMIN/metrics" | awk -v s="ambit_ca_server_requests_total{decision=\"$1\"}" '$1 == s { print $2 }'; }
counted() { [ "$(metric issued)" = 4 ] && [ "$(metric denied)" = 3 ] && [ "$(metric invalid)" = 1 ] &&
	[ "$(metric unauthenticated)" = 6 ]; }
check "every decision counted (4 issued, 3 denied, 1 invalid, 6 unauthenticated)" counted
logged() { [ "$(grep -c 'CreateCertificate ' "$t/ca.log")" = 14 ] &&
	grep -q 'decision=denied .*caller=ambit-system/ambit caller_node=node-1 .*identity=spiffe://cluster.local/ns/prod/sa/db' "$t/ca.log"; }
check "every decision logged with caller, node and identity" logged
# Requests no gRPC client would send, by hand (python3-h2): each refused on its own stream.
probe() { "$PY" "$LAB_TOP/tests/tools/grpc_probe.py" "127.0.0.1:$GRPC" --ca "$t/ca.crt" "$@" 2>&1; }
probe get=method=GET ct=ct=text/plain comp=msg=10,flag=1 two=msg=3,twice \
	trunc=body=000000001000 tmo=timeout=abc,msg=0 path=path=/x.Y/Z,msg=0 >"$t/probe.json"
probe big=msg=70000 >>"$t/probe.json"	# it takes the connection's whole flow-control window
answer() { jq -r --arg c "$1" 'select(.case == $c) | "\(.status) \(.grpc_status)"' "$t/probe.json"; }
refusals() {
	cat "$t/probe.json" &&
	[ "$(answer get)" = "405 null" ] && [ "$(answer ct)" = "415 null" ] &&
	[ "$(answer big)" = "200 8" ] && [ "$(answer comp)" = "200 12" ] &&
	[ "$(answer two)" = "200 13" ] && [ "$(answer trunc)" = "200 13" ] &&
	[ "$(answer tmo)" = "400 null" ] && [ "$(answer path)" = "200 12" ]
}
check "malformed calls refused per stream: GET 405, content-type 415, oversize RESOURCE_EXHAUSTED, compressed UNIMPLEMENTED, two or truncated messages INTERNAL, bad grpc-timeout 400, unknown method UNIMPLEMENTED" refusals
check "a client without ALPN h2 is refused in the handshake" \
	bash -c "'$PY' '$LAB_TOP/tests/tools/grpc_probe.py' 127.0.0.1:$GRPC --ca '$t/ca.crt' --alpn http/1.1 | grep -qi 'no.application.protocol\|alert'"
check "ambit-ca still serves after them" expect 0 "" "$AG1" api spiffe://cluster.local/ns/default/sa/api
check "bad configuration: exit 2 with the key named" \
	bash -c "echo '{\"tokens\": {\"audience\": 5}}' >'$t/bad.json'; '$CA_BIN' --config '$t/bad.json' 2>&1 | grep -q 'tokens.audience'; [ \${PIPESTATUS[0]} -eq 2 ]"

# ---- TokenReview mode: the API server authenticates, its pods are the node view ----
API=$(port); GRPC2=$(port); ADMIN2=$(port)
"$PY" "$LAB_TOP/tests/tools/fake_apiserver.py" --bind 127.0.0.1 --port "$API" --token ca-own-token \
	>"$t/api.log" 2>&1 &
PIDS+=($!)
lab_until curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$API/healthz" 2>/dev/null || true
apic() { curl -fsS -m 5 -X POST -H 'Content-Type: application/json' --data "$2" "http://127.0.0.1:$API/_control/$1" >/dev/null; }
echo ca-own-token >"$t/own-token"
for n in 1 2; do
	apic apply '{"resource": "nodes", "object": {"metadata": {"name": "node-'$n'"}, "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.'$((n + 1))'"}]}}}'
done
apic apply '{"resource": "namespaces", "object": {"metadata": {"name": "default"}}}'
apic apply '{"resource": "namespaces", "object": {"metadata": {"name": "prod"}}}'
apic apply '{"resource": "pods", "object": {"metadata": {"name": "api-1", "namespace": "default"}, "spec": {"nodeName": "node-1", "serviceAccountName": "api", "containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}}}'
apic apply '{"resource": "pods", "object": {"metadata": {"name": "db-1", "namespace": "prod"}, "spec": {"nodeName": "node-2", "serviceAccountName": "db", "containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running", "podIP": "10.244.2.5", "podIPs": [{"ip": "10.244.2.5"}]}}}'
apic review '{"token": "agent-1-token", "user": "system:serviceaccount:ambit-system:ambit", "node": "node-1", "pod": "ambit-x1", "audiences": ["istio-ca"]}'
apic review '{"token": "api-audience-token", "user": "system:serviceaccount:ambit-system:ambit", "node": "node-1", "audiences": ["https://kubernetes.default.svc"]}'
jq --arg l "127.0.0.1:$GRPC2" --arg a "127.0.0.1:$ADMIN2" --arg api "http://127.0.0.1:$API" --arg d "$t" '
	.listen = $l | .admin_address = $a | del(.tokens.issuer_keys) | .root_cert_configmap = "ambit-root-cert" |
	.discovery = { source: "kubernetes", kubernetes: { api_server: $api, token_file: ($d + "/own-token"), ca_file: ($d + "/ca.crt") } }' \
	"$t/ca.json" >"$t/ca-tr.json"
POD_NAMESPACE=ambit-system "$CA_BIN" --config "$t/ca-tr.json" >"$t/ca-tr.log" 2>&1 &
CA2=$!
PIDS+=($CA2)
check "ambit-ca ready (TokenReview mode, Kubernetes view of pods)" lab_until ready "$ADMIN2"
check "TokenReview: node-1 agent gets node-1's workload identity" \
	expect 0 "" agent-1-token api spiffe://cluster.local/ns/default/sa/api "127.0.0.1:$GRPC2"
check "TokenReview: node-2's pod refused (PERMISSION_DENIED)" \
	expect 7 "runs on node node-1" agent-1-token db spiffe://cluster.local/ns/prod/sa/db "127.0.0.1:$GRPC2"
check "TokenReview: an unknown token is UNAUTHENTICATED with the API server's reason" \
	expect 16 "invalid bearer token" nobody-token api spiffe://cluster.local/ns/default/sa/api "127.0.0.1:$GRPC2"
check "TokenReview: a token for another audience is UNAUTHENTICATED" \
	expect 16 "invalid for the target audiences" api-audience-token api spiffe://cluster.local/ns/default/sa/api "127.0.0.1:$GRPC2"
reviews() { [ "$(curl -fsS -m 2 "http://127.0.0.1:$API/_control/stats" | jq .tokenreviews)" -ge 4 ]; }
check "TokenReview: every call asked the API server (with ambit-ca's own token)" reviews
rootcm() { # (ambit-ca writes it in its own time)
	curl -fsS -m 2 -H 'Authorization: Bearer ca-own-token' \
		"http://127.0.0.1:$API/api/v1/namespaces/ambit-system/configmaps/ambit-root-cert" |
		jq -r '.data["root-cert.pem"]' >"$t/root-cm.pem" 2>/dev/null &&
		[ "$(openssl x509 -in "$t/root-cm.pem" -noout -fingerprint)" = \
		  "$(openssl x509 -in "$t/ca.crt" -noout -fingerprint)" ]
}
check "ConfigMap ambit-system/ambit-root-cert holds the root (root-cert.pem)" lab_until rootcm
# SIGTERM ends both with status 0 and no sanitizer report (leaks included)
rc1=0; rc2=0
kill -TERM "$CA1" "$CA2"
wait "$CA1" || rc1=$?
wait "$CA2" || rc2=$?
check "both replicas stop cleanly on SIGTERM (exit 0, no sanitizer report)" \
	bash -c "[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && ! grep -l Sanitizer '$t/ca.log' '$t/ca-tr.log'"
lab_result
