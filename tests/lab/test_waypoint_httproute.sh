#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Gateway API HTTPRoutes (GAMMA) at the waypoint, end to end: one node with an agent (real
# capture), the waypoint pod running ambit-waypoint for service app-1, HTTP/1.1 servers
# (tests/tools/http_echo.py) on the endpoints of app-1 ("front"), app-2 ("v1") and app-3 ("v2"),
# client app-4. The workloads file's `resources` carry an HTTPRoute attached to Service app-1:
# /whoami and /headers split 50/50 over app-2 and app-3, the same paths with `x-canary: 1` always
# to app-3 with a RequestHeaderModifier and a ResponseHeaderModifier (the same path and one header
# more: it takes precedence), /missing to a Service that does not exist; and a second route with a
# RegularExpression match, which is refused. Checked over HTTP/1.1 and HTTP/2 (prior knowledge):
# both backends answer in roughly the proportion, the header match always goes to v2 with the
# header set, a path no rule matches is 404 (NR), a missing backend 500 (NC); the request span
# and the metrics name the chosen backend as destination_service; admin /waypoint lists the routes (the refused one with
# its reason); the route removed from the file: app-1's own endpoint answers again.
# Route timeouts (timeouts.request 500ms on /delay and /slow-body): a slow answer gets 504
# `upstream request timeout` (UT) after about the timeout, an answer already begun is cut (the
# HTTP/1.1 connection closed, the HTTP/2 stream reset), a fast one on the same rule is 200;
# metrics count 504 UT. ResponseHeaderModifier (set/add/remove) on the answers of HTTP/1.1 and
# HTTP/2 endpoints, to HTTP/1.1 and HTTP/2 clients (all four translations). RequestRedirect: a 301
# with ReplacePrefixMatch (the query kept) and a 302 to https and another host, no backend asked.
# The ResponseHeaderModifier of a matched rule on the waypoint's own answers too (the redirect,
# a missing backend's 500, the route timeout's 504, the RBAC 403 of a DENY policy on
# /old/denied), not on the 404 of a request no rule matched; a redirect keeps the HTTP/1.1
# connection (a second request on it) unless the client closes.
# Upgrade: h2c from curl --http2 ignored (the request goes on as HTTP/1.1, its upgrade fields
# dropped; on the h2c Service translated to HTTP/2).
# URLRewrite: a prefix replaced and the Host rewritten (HTTP/1.1 endpoint), a full path (h2c
# endpoint); the span keeps the client's url.path. (Run it under AMBIT_BUILD=build/san: the late answers must be dropped
# without a use after free.)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

lab_need_waypoint_h2 "waypoint httproute"	# root, the binary, node, H2PY (python3-h2)
lab_tmpdir logs hrt
lab=hrt-$$

if ! lab_up "$lab" --nodes 1 --pods 4 --cni routed --enroll p1,p2,p3,p4 --waypoint >"$logs/up.log" 2>&1; then
	fail "lab up --waypoint"; sed 's/^/#   /' "$logs/up.log" | tail -20; lab_result; exit 1
fi
V=$LAB_SVC_APP_1_VIP
H2V=10.96.0.32	# h2-slow: an h2c Service behind the waypoint on app-3's pod (tests/node/h2_server.js)
jq --arg h "$H2V" '.services += [
	{name: "h2-slow", namespace: "default", addresses: [$h], selector: {app: "app-3"},
	 ports: [{port: 80, target_port: 8081, name: "web", app_protocol: "kubernetes.io/h2c"}],
	 waypoint: {name: "waypoint", namespace: "default"}}]' \
	"$LAB_WORKLOADS" >"$logs/workloads.json" && cp "$logs/workloads.json" "$LAB_WORKLOADS"

routes() { # the HTTPRoutes (as `kubectl get -o json` prints them); ROUTES=0: none
	[ "${ROUTES:-1}" = 1 ] || { echo '[]'; return; }
	jq -n '[
	{apiVersion: "gateway.networking.k8s.io/v1", kind: "HTTPRoute",
	 metadata: {name: "app1-split", namespace: "default", creationTimestamp: "2026-01-01T00:00:00Z"},
	 spec: {parentRefs: [{group: "", kind: "Service", name: "app-1", port: 80}], rules: [
		{matches: [{path: {type: "PathPrefix", value: "/whoami"}, headers: [{name: "x-canary", value: "1"}]},
			   {path: {type: "Exact", value: "/headers"}, headers: [{name: "x-canary", value: "1"}]}],
		 filters: [{type: "RequestHeaderModifier", requestHeaderModifier: {
			set: [{name: "x-routed", value: "canary"}], remove: ["x-drop-me"]}},
			  {type: "ResponseHeaderModifier", responseHeaderModifier: {
			set: [{name: "x-route", value: "canary"}], add: [{name: "x-served-by", value: "route"}],
			remove: ["content-type"]}}],
		 backendRefs: [{name: "app-3", port: 80}]},
		{matches: [{path: {type: "PathPrefix", value: "/whoami"}},
			   {path: {type: "Exact", value: "/headers"}}],
		 backendRefs: [{name: "app-2", port: 80, weight: 50}, {name: "app-3", port: 80, weight: 50}]},
		{matches: [{path: {type: "PathPrefix", value: "/missing"}}],
		 filters: [{type: "ResponseHeaderModifier", responseHeaderModifier: {
			set: [{name: "x-local", value: "missing"}]}}],
		 backendRefs: [{name: "app-9", port: 80}]},
		{matches: [{path: {type: "PathPrefix", value: "/legacy"}}],
		 filters: [{type: "URLRewrite", urlRewrite: {hostname: "rewritten.example",
			path: {type: "ReplacePrefixMatch", replacePrefixMatch: "/"}}}],
		 backendRefs: [{name: "app-2", port: 80}]},
		{matches: [{path: {type: "PathPrefix", value: "/old"}}],
		 filters: [{type: "RequestRedirect", requestRedirect: {statusCode: 301,
			path: {type: "ReplacePrefixMatch", replacePrefixMatch: "/new"}}},
			  {type: "ResponseHeaderModifier", responseHeaderModifier: {
			set: [{name: "x-local", value: "redirect"}], add: [{name: "x-local-add", value: "1"}]}}]},
		{matches: [{path: {type: "Exact", value: "/secure"}}],
		 filters: [{type: "RequestRedirect", requestRedirect: {scheme: "https", hostname: "secure.example"}}],
		 backendRefs: [{name: "app-2", port: 80}]},
		{matches: [{path: {type: "PathPrefix", value: "/retry"}}],
		 retry: {codes: [503], attempts: 2, backoff: "10ms"},
		 backendRefs: [{name: "app-2", port: 80}]},
		{matches: [{path: {type: "PathPrefix", value: "/r0"}}],
		 retry: {attempts: 0},
		 backendRefs: [{name: "app-2", port: 80}]},
		{matches: [{path: {type: "PathPrefix", value: "/dflt"}}],
		 backendRefs: [{name: "app-2", port: 80}]},
		{matches: [{path: {type: "PathPrefix", value: "/pt"}}],
		 retry: {codes: [503], attempts: 2, backoff: "10ms"},
		 timeouts: {request: "3s", backendRequest: "300ms"},
		 backendRefs: [{name: "app-2", port: 80}]},
		{matches: [{path: {type: "PathPrefix", value: "/delay"}},
			   {path: {type: "PathPrefix", value: "/slow-body"}}],
		 timeouts: {request: "500ms"},
		 filters: [{type: "ResponseHeaderModifier", responseHeaderModifier: {
			set: [{name: "x-local", value: "timeout"}]}}],
		 backendRefs: [{name: "app-2", port: 80}]}]}},
	{apiVersion: "security.istio.io/v1", kind: "AuthorizationPolicy",
	 metadata: {name: "hrt-deny", namespace: "default", creationTimestamp: "2026-01-01T00:00:00Z"},
	 spec: {targetRefs: [{kind: "Service", group: "", name: "app-1"}], action: "DENY",
		rules: [{to: [{operation: {paths: ["/old/denied"]}}]}]}},
	{apiVersion: "gateway.networking.k8s.io/v1", kind: "HTTPRoute",
	 metadata: {name: "app1-regex", namespace: "default", creationTimestamp: "2026-01-02T00:00:00Z"},
	 spec: {parentRefs: [{kind: "Service", name: "app-1"}], rules: [
		{matches: [{path: {type: "RegularExpression", value: "/.*"}}],
		 backendRefs: [{name: "app-2", port: 80}]}]}},
	{apiVersion: "gateway.networking.k8s.io/v1", kind: "HTTPRoute",
	 metadata: {name: "h2-slow-timeout", namespace: "default", creationTimestamp: "2026-01-03T00:00:00Z"},
	 spec: {parentRefs: [{kind: "Service", name: "h2-slow", port: 80}], rules: [
		{matches: [{path: {type: "PathPrefix", value: "/v2api"}}],
		 filters: [{type: "URLRewrite", urlRewrite: {path: {type: "ReplaceFullPath", replaceFullPath: "/whoami"}}}],
		 backendRefs: [{name: "h2-slow", port: 80}]},
		{matches: [{path: {type: "PathPrefix", value: "/retry"}}],
		 retry: {codes: [503], attempts: 2, backoff: "10ms"},
		 backendRefs: [{name: "h2-slow", port: 80}]},
		{matches: [{path: {type: "PathPrefix", value: "/r0"}}],
		 retry: {attempts: 0},
		 backendRefs: [{name: "h2-slow", port: 80}]},
		{matches: [{path: {type: "PathPrefix", value: "/pt"}}],
		 retry: {codes: [503], attempts: 2, backoff: "10ms"},
		 timeouts: {request: "3s", backendRequest: "300ms"},
		 backendRefs: [{name: "h2-slow", port: 80}]},
		{timeouts: {request: "1s", backendRequest: "500ms"},
		 filters: [{type: "ResponseHeaderModifier", responseHeaderModifier: {
			set: [{name: "x-h2-route", value: "yes"}]}}],
		 backendRefs: [{name: "h2-slow", port: 80}]}]}}]'
}
set_routes() { # rewrites the workloads file (the discovery polls it) atomically
	jq --argjson r "$(routes)" '.resources = $r' "$LAB_WORKLOADS" >"$logs/wl.json" &&
	mv "$logs/wl.json" "$LAB_WORKLOADS"
}
set_routes

pod_spawn "$lab" n1-p1 "$logs/front.log" python3 "$LAB_TOP/tests/tools/http_echo.py" --port 8080 --name front
pod_spawn "$lab" n1-p2 "$logs/v1.log" python3 "$LAB_TOP/tests/tools/http_echo.py" --port 8080 --name v1
pod_spawn "$lab" n1-p3 "$logs/v2.log" python3 "$LAB_TOP/tests/tools/http_echo.py" --port 8080 --name v2
pod_spawn "$lab" n1-p3 "$logs/h2s.log" "$NODE" "$LAB_TOP/tests/node/h2_server.js" --port 8081 \
	--name h2slow --log "$logs/h2s.jsonl"
for p in 1 2 3; do wait_port "$lab" "n1-p$p" 8080; done
wait_port "$lab" n1-p3 8081
if ! lab_start_agent "$lab" 1; then fail "agent starts"; lab_result; exit 1; fi
if lab_start_waypoint "$lab" "$logs/waypoint.log" "$LAB_WAYPOINT_CONFIG"; then
	ok "waypoint starts and becomes ready"
else
	fail "waypoint starts and becomes ready"; lab_result; exit 1
fi

# bodies PROTO N PATH [-H 'name: value' ...]: the first line of each of N answers to GET PATH
# from app-4, all on one connection: HTTP/1.1 keep-alive (curl), or HTTP/2 streams, up to 10 in
# flight at once (tests/tools/h2_requests.py, python3-h2)
bodies() {
	local proto=$1 n=$2 path=$3 urls=(); shift 3
	if [ "$proto" = h2 ]; then
		pod_exec "$lab" n1-p4 "$H2PY" "$LAB_TOP/tests/tools/h2_requests.py" "$V:80" --path "$path" \
			-n "$n" "$@" | sed 's/^[0-9]* //'
		return
	fi
	for _ in $(seq "$n"); do urls+=("http://$V$path"); done
	pod_exec "$lab" n1-p4 curl -sS -m 30 "$@" "${urls[@]}"
}
split() { # PROTO: 200 GETs /whoami, each backend answers 25%-75%, app-1's own endpoint never
	local out v1 v2 front
	out=$(bodies "$1" 200 /whoami 2>&1) || true
	v1=$(grep -cx v1 <<<"$out" || true); v2=$(grep -cx v2 <<<"$out" || true)
	front=$(grep -cx front <<<"$out" || true)
	echo "v1=$v1 v2=$v2 front=$front"
	[ "$v1" -ge 50 ] && [ "$v1" -le 150 ] && [ "$v2" -ge 50 ] && [ "$v2" -le 150 ] &&
		[ $((v1 + v2)) -eq 200 ] && [ "$front" -eq 0 ]
}
canary() { # PROTO: 20 requests with x-canary: 1, all v2
	local out
	out=$(bodies "$1" 20 /whoami -H 'x-canary: 1' 2>&1) || true
	echo "$out" | sort | uniq -c
	[ "$(grep -cx v2 <<<"$out" || true)" -eq 20 ]
}
status_of() { # PROTO PATH: the answer's status code
	if [ "$1" = h2 ]; then
		pod_exec "$lab" n1-p4 "$H2PY" "$LAB_TOP/tests/tools/h2_requests.py" "$V:80" --path "$2" |
			cut -d' ' -f1
	else
		pod_exec "$lab" n1-p4 curl -sS -m 10 -o /dev/null -w '%{http_code}' "http://$V$2"
	fi
}
expect_status() { # NAME PROTO PATH WANT
	local got
	got=$(status_of "$2" "$3" 2>&1) || true
	if [ "$got" = "$4" ]; then ok "$1"; else fail "$1"; echo "#   got: $got"; fi
}
headers_canary() { # PROTO: the canary rule's RequestHeaderModifier: x-routed set, x-drop-me removed
	local out
	out=$(bodies "$1" 1 /headers -H 'x-canary: 1' -H 'x-routed: client' -H 'x-drop-me: 1') || true
	echo "$out" | head -c 600; echo
	jq -e '(with_entries(.key |= ascii_downcase)) as $h |
		$h["x-routed"] == "canary" and ($h | has("x-drop-me") | not)' <<<"$out" >/dev/null
}
resp_headers() { # PROTO HOST PATH [-H ...]: the answer's header lines, names lower-cased
	local proto=$1 host=$2 path=$3; shift 3
	if [ "$proto" = h2 ]; then
		pod_exec "$lab" n1-p4 "$H2PY" "$LAB_TOP/tests/tools/h2_requests.py" "$host:80" --path "$path" \
			--show-headers "$@" | grep -v '^[0-9][0-9][0-9] '
	else
		pod_exec "$lab" n1-p4 curl -sS -m 10 -o /dev/null -D - "$@" "http://$host$path" | tr -d '\r'
	fi | sed 's/^\([^:]*\):/\L\1:/'
}
resp_canary() { # PROTO: the canary rule's ResponseHeaderModifier on an HTTP/1.1 endpoint's answer
	local out
	out=$(resp_headers "$1" "$V" /whoami -H 'x-canary: 1') || true
	echo "$out" | tr '\n' '|'; echo
	grep -qx 'x-route: canary' <<<"$out" && grep -qx 'x-served-by: v2' <<<"$out" &&
		grep -qx 'x-served-by: route' <<<"$out" && ! grep -q '^content-type:' <<<"$out"
}
resp_plain() { # PROTO: a rule without one leaves the answer as it is
	local out
	out=$(resp_headers "$1" "$V" /whoami) || true
	grep -q '^content-type:' <<<"$out" && ! grep -q '^x-route:' <<<"$out" &&
		[ "$(grep -c '^x-served-by:' <<<"$out")" -eq 1 ]
}
resp_h2up() { # PROTO: the h2-slow rule's ResponseHeaderModifier on an HTTP/2 endpoint's answer
	local out
	out=$(resp_headers "$1" "$H2V" /whoami) || true
	echo "$out" | tr '\n' '|'; echo
	grep -qx 'x-h2-route: yes' <<<"$out" && grep -q '^content-type:' <<<"$out"
}
redirected() { # PROTO PATH STATUS LOCATION: the waypoint answers STATUS with that location
	local out
	out=$(resp_headers "$1" "$V" "$2") || true
	echo "$out" | tr '\n' '|'; echo
	grep -Eq "^(HTTP/1.1 $3 |:status: $3\$)" <<<"$out" && grep -qxF "location: $4" <<<"$out" &&
		grep -qx 'content-length: 0' <<<"$out"
}
local_hdr() { # PROTO PATH STATUS WANT: the waypoint's own STATUS answer has x-local: WANT ("": none)
	local out
	out=$(resp_headers "$1" "$V" "$2") || true
	echo "$out" | tr '\n' '|'; echo
	grep -Eq "^(HTTP/1.1 $3 |:status: $3\$)" <<<"$out" || return 1
	if [ -n "$4" ]; then grep -qxF "x-local: $4" <<<"$out"; else ! grep -q '^x-local:' <<<"$out"; fi
}
redirect_keepalive() { # a redirect, then a request on the same HTTP/1.1 connection
	local out
	out=$(pod_exec "$lab" n1-p4 curl -sS -m 10 -o /dev/null -o /dev/null \
		-w '%{http_code} %{num_connects}\n' "http://$V/old/x" "http://$V/whoami") || true
	echo "$out" | tr '\n' '|'; echo
	[ "$out" = $'301 1\n200 0' ]
}
redirect_close() { # a client that says connection: close gets it back on the redirect
	local out
	out=$(resp_headers http1 "$V" /old/x -H 'connection: close') || true
	echo "$out" | tr '\n' '|'; echo
	grep -q '^HTTP/1.1 301 ' <<<"$out" && grep -qx 'connection: close' <<<"$out"
}
rewritten_host() { # PROTO: URLRewrite hostname: the endpoint sees Host rewritten.example
	local out
	out=$(bodies "$1" 1 /legacy/headers) || true
	echo "$out" | head -c 400; echo
	jq -e '(with_entries(.key |= ascii_downcase)) as $h | $h.host == "rewritten.example"' <<<"$out" >/dev/null
}
rewritten_h2up() { # PROTO: URLRewrite ReplaceFullPath /whoami towards the h2c endpoint
	local out
	if [ "$1" = h2 ]; then
		out=$(pod_exec "$lab" n1-p4 "$H2PY" "$LAB_TOP/tests/tools/h2_requests.py" "$H2V:80" --path /v2api/x 2>&1) || true
	else
		out=$(pod_exec "$lab" n1-p4 curl -sS -m 10 -w ' %{http_code}' "http://$H2V/v2api/x" 2>&1) || true
	fi
	echo "$out"
	grep -Eq '^(200 h2slow|h2slow 200)$' <<<"$out"
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
timed_out() { # PROTO: GET /delay/3000 answers 504 in 400..2500 ms
	local t0 out el
	t0=$(now_ms)
	if [ "$1" = h2 ]; then
		out=$(pod_exec "$lab" n1-p4 "$H2PY" "$LAB_TOP/tests/tools/h2_requests.py" "$V:80" --path /delay/3000 2>&1) || true
	else
		out=$(pod_exec "$lab" n1-p4 curl -sS -m 10 -w ' %{http_code}' "http://$V/delay/3000" 2>&1) || true
	fi
	el=$(( $(now_ms) - t0 ))
	echo "$out (${el} ms)"
	grep -q 504 <<<"$out" && grep -q 'upstream request timeout' <<<"$out" &&
		[ "$el" -ge 400 ] && [ "$el" -le 2500 ]
}
fast_ok() { # PROTO: GET /delay/50 on the same rule: 200 from v1
	local out
	out=$(bodies "$1" 1 /delay/50 2>&1) || true
	echo "$out"
	[ "$out" = "v1 after 50 ms" ]
}
cut_short() { # PROTO: GET /slow-body/3000: "first" arrives, then the cut, within 2.5 s
	local t0 out el rc=0
	t0=$(now_ms)
	if [ "$1" = h2 ]; then
		out=$(pod_exec "$lab" n1-p4 "$H2PY" "$LAB_TOP/tests/tools/h2_requests.py" "$V:80" --path /slow-body/3000 2>&1) || true
	else
		out=$(pod_exec "$lab" n1-p4 curl -sS -m 10 "http://$V/slow-body/3000" 2>&1) || rc=$?
	fi
	el=$(( $(now_ms) - t0 ))
	echo "$out (rc $rc, ${el} ms)"
	grep -q first <<<"$out" && ! grep -q second <<<"$out" && [ "$el" -le 2500 ] || return 1
	if [ "$1" = h2 ]; then grep -q '^200 first' <<<"$out" && grep -q 'reset' <<<"$out"; else [ "$rc" -ne 0 ]; fi
}

for proto in http1 h2; do
	check "$proto: 50/50 weights: 200 GETs /whoami, v1 and v2 each 25%-75%, never app-1's own" split "$proto"
	check "$proto: x-canary: 1 always goes to v2" canary "$proto"
	check "$proto: the canary rule's RequestHeaderModifier sets x-routed and removes x-drop-me" \
		headers_canary "$proto"
	check "$proto: the canary rule's ResponseHeaderModifier sets x-route, adds x-served-by, removes content-type" \
		resp_canary "$proto"
	check "$proto: ... a rule without one leaves the answer's headers alone" resp_plain "$proto"
	check "$proto: ResponseHeaderModifier on an HTTP/2 (h2c) endpoint's answer" resp_h2up "$proto"
	expect_status "$proto: URLRewrite ReplacePrefixMatch /legacy -> /: /legacy/status/202 is v1's /status/202" \
		"$proto" /legacy/status/202 202
	check "$proto: URLRewrite hostname: the endpoint sees host rewritten.example" rewritten_host "$proto"
	check "$proto: URLRewrite ReplaceFullPath towards an HTTP/2 (h2c) endpoint" rewritten_h2up "$proto"
	check "$proto: RequestRedirect 301 ReplacePrefixMatch /old -> /new, the query kept" \
		redirected "$proto" '/old/x?q=1' 301 "http://$V/new/x?q=1"
	check "$proto: RequestRedirect scheme https + hostname: 302 to https://secure.example/secure" \
		redirected "$proto" /secure 302 "https://secure.example/secure"
	check "$proto: the redirect rule's ResponseHeaderModifier is on its redirect" local_hdr "$proto" /old/x 301 redirect
	check "$proto: ... on the 500 of a rule whose backend is missing" local_hdr "$proto" /missing/x 500 missing
	check "$proto: ... on the RBAC 403 of a request that matched the rule (the denial wins over the redirect)" \
		local_hdr "$proto" /old/denied 403 redirect
	check "$proto: ... not on the 404 of a request no rule matched" local_hdr "$proto" /other 404 ""
	expect_status "$proto: a path no rule matches is 404" "$proto" /other 404
	expect_status "$proto: a rule whose backend Service does not exist is 500" "$proto" /missing/x 500
	expect_status "$proto: /whoamix is not under PathPrefix /whoami (element-wise): 404" "$proto" /whoamix 404
	check "$proto: timeouts.request 500ms: a 3 s answer gets 504 upstream request timeout after about 0.5 s" \
		timed_out "$proto"
	check "$proto: ... with the rule's ResponseHeaderModifier on the 504" local_hdr "$proto" /delay/3000 504 timeout
	check "$proto: ... a fast answer on the same rule is 200" fast_ok "$proto"
	check "$proto: ... an answer already begun is cut at the timeout (client connection/stream reset)" \
		cut_short "$proto"
done

check "http1: a redirect keeps the connection: the next request goes on it (curl reuses it)" redirect_keepalive
check "http1: ... unless the client said connection: close (the redirect says it too)" redirect_close

# An HTTP/2 endpoint (h2-slow, backendRequest 500ms): the timed-out upstream stream is
# cancelled (the server sees RST_STREAM CANCEL), for an HTTP/2 client and for an HTTP/1.1 one
# (translated to HTTP/2).
up_cancelled() { # PATH: h2_server.js logged the stream of PATH closed by RST_STREAM CANCEL (8)
	lab_until _up_cancelled "$1"	# (the cancel reaches the server in its own time)
}
_up_cancelled() {
	jq -e --arg p "$1" 'select(.path == $p and .rst == 8)' "$logs/h2s.jsonl" >/dev/null 2>&1 && return 0
	cat "$logs/h2s.jsonl" 2>/dev/null; return 1
}
h2up_timeout() { # PROTO N: GET /delay/30N on h2-slow: 504 in 400..2500 ms, the upstream stream cancelled
	local t0 out el path=/delay/30$2
	t0=$(now_ms)
	if [ "$1" = h2 ]; then
		out=$(pod_exec "$lab" n1-p4 "$H2PY" "$LAB_TOP/tests/tools/h2_requests.py" "$H2V:80" --path "$path" 2>&1) || true
	else
		out=$(pod_exec "$lab" n1-p4 curl -sS -m 10 -w ' %{http_code}' "http://$H2V$path" 2>&1) || true
	fi
	el=$(( $(now_ms) - t0 ))
	echo "$out (${el} ms)"
	grep -q 504 <<<"$out" && grep -q 'upstream request timeout' <<<"$out" &&
		[ "$el" -ge 400 ] && [ "$el" -le 2500 ] && up_cancelled "$path"
}
h2up_cut() { # GET /slow (a chunk every 100 ms) over HTTP/2: ticks, then the stream reset, upstream cancelled
	local out
	out=$(pod_exec "$lab" n1-p4 "$H2PY" "$LAB_TOP/tests/tools/h2_requests.py" "$H2V:80" --path /slow 2>&1) || true
	echo "$out"
	grep -q '^200 tick 1' <<<"$out" && grep -q reset <<<"$out" && up_cancelled /slow
}
h2up_fast() { # PROTO: GET /delay/50 on h2-slow: 200
	local out
	if [ "$1" = h2 ]; then
		out=$(pod_exec "$lab" n1-p4 "$H2PY" "$LAB_TOP/tests/tools/h2_requests.py" "$H2V:80" --path /delay/50 2>&1) || true
	else
		out=$(pod_exec "$lab" n1-p4 curl -sS -m 10 -w ' %{http_code}' "http://$H2V/delay/50" 2>&1) || true
	fi
	echo "$out"
	grep -q 'h2slow after 50 ms' <<<"$out" && grep -q 200 <<<"$out"
}
# HTTPRoute retry on the h2c Service (tests/node/h2_server.js's /flaky/KEY/N/CODE: N answers
# CODE, then 200), from HTTP/2 clients and HTTP/1.1 ones (translated): the rule's codes retried,
# its attempts exhausted gives the last answer, a code not listed and attempts 0 are not
# retried (not even by Istio's default policy), backendRequest is each try's timeout.
h2get() { # PROTO HOST PATH: "STATUS BODY" (one line)
	local out
	if [ "$1" = h2 ]; then
		pod_exec "$lab" n1-p4 "$H2PY" "$LAB_TOP/tests/tools/h2_requests.py" "$2:80" --path "$3" 2>&1
	else
		out=$(pod_exec "$lab" n1-p4 curl -sS -m 10 -w '\n%{http_code}' "http://$2$3" 2>&1) || true
		echo "$(tail -n1 <<<"$out") $(head -n1 <<<"$out")"
	fi
}
expect_answer() { # PROTO PATH WANT: the answer (STATUS BODY) is WANT
	local out
	out=$(h2get "$1" "$H2V" "$2") || true
	echo "$out"
	[ "$out" = "$3" ]
}
per_try() { # PROTO KEY: a 503 retried, the second try 2 s late: 504 after about 0.3 s + back-off
	local t0 out el path=/pt/flaky/$2/1/503
	t0=$(now_ms)
	out=$(h2get "$1" "$H2V" "$path?delay=2000") || true
	el=$(( $(now_ms) - t0 ))
	echo "$out (${el} ms)"
	grep -q '^504 upstream request timeout' <<<"$out" && [ "$el" -ge 280 ] && [ "$el" -le 1800 ] || return 1
	lab_until both_tries "$path"	# (the server logs the cancel in its own time)
}
both_tries() { # PATH: both tries reached the endpoint; the second was cancelled
	[ "$(jq -c --arg p "$1" 'select(.path == $p)' "$logs/h2s.jsonl" | wc -l)" -eq 2 ] &&
		jq -e --arg p "$1" 'select(.path == $p and .rst == 8)' "$logs/h2s.jsonl" >/dev/null && return 0
	jq -c --arg p "$1" 'select(.path == $p)' "$logs/h2s.jsonl"; return 1
}
head -c 40000 /dev/urandom >"$logs/post.bin"
for proto in h2 http1; do
	check "$proto: retry codes [503]: a 503 then 200 is retried (200 after 2 tries)" \
		expect_answer "$proto" "/retry/flaky/a$proto/1/503" "200 ok after 2 tries from h2slow"
	check "$proto: ... attempts 2 exhausted: the last answer (the third 503)" \
		expect_answer "$proto" "/retry/flaky/b$proto/5/503" "503 503 try 3 from h2slow"
	check "$proto: ... a 500 (not in codes) is not retried" \
		expect_answer "$proto" "/retry/flaky/c$proto/1/500" "500 500 try 1 from h2slow"
	check "$proto: attempts 0: not retried at all (not even Istio's default 503 retry)" \
		expect_answer "$proto" "/r0/flaky/d$proto/1/503" "503 503 try 1 from h2slow"
	check "$proto: a rule without retry keeps Istio's default (503 retried)" \
		expect_answer "$proto" "/flaky/f$proto/2/503" "200 ok after 3 tries from h2slow"
	check "$proto: backendRequest with retry is each try's timeout: 504 after the second try's 300 ms" \
		per_try "$proto" "e$proto"
done
admin_retry() {
	local out
	out=$(pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 http://127.0.0.1:15000/waypoint) || return 1
	jq -c '.routes.routes[] | select(.name == "h2-slow-timeout") | [.rules[].retry]' <<<"$out"
	jq -e '[.routes.routes[] | select(.name == "h2-slow-timeout") | .rules[] | select(.retry) | .retry] |
		any(. == {attempts: 2, codes: [503], backoff_ms: 10, per_try_timeout_ms: 300}) and
		any(. == {attempts: 0, codes: [], backoff_ms: 0, per_try_timeout_ms: 0})' <<<"$out" >/dev/null
}
check "admin /waypoint: a rule's retry (attempts, codes, backoff, per-try timeout)" admin_retry

# The same on an HTTP/1.1 endpoint (app-1's routes to app-2, http_echo.py's /flaky), from an
# HTTP/1.1 client (curl; the request goes upstream as HTTP/1.1, the body kept and sent again).
h1answer() { # PATH [curl args]: "STATUS BODY"
	local out path=$1; shift
	out=$(pod_exec "$lab" n1-p4 curl -sS -m 10 -w '\n%{http_code}' "$@" "http://$V$path" 2>&1) || true
	echo "$(tail -n1 <<<"$out") $(head -n1 <<<"$out")"
}
h1expect() { # PATH WANT [curl args]
	local out path=$1 want=$2; shift 2
	out=$(h1answer "$path" "$@")
	echo "$out"
	[ "$out" = "$want" ]
}
h1per_try() { # 503, then a 2 s late 200: 504 after the second try's 300 ms
	local t0 out el
	t0=$(now_ms)
	out=$(h1answer "/pt/flaky/h1e/1/503?delay=2000")
	el=$(( $(now_ms) - t0 ))
	echo "$out (${el} ms)"
	grep -q '^504 upstream request timeout' <<<"$out" && [ "$el" -ge 280 ] && [ "$el" -le 1800 ]
}
h1keep() { # after a retried request, the client connection goes on
	local out
	out=$(pod_exec "$lab" n1-p4 curl -sS -m 10 -o /dev/null -o /dev/null \
		-w '%{http_code} %{num_connects}\n' "http://$V/retry/flaky/h1k/1/503" "http://$V/whoami") || true
	echo "$out" | tr '\n' '|'; echo
	[ "$out" = $'200 1\n200 0' ]
}
check "HTTP/1.1 endpoint: retry codes [503]: a 503 then 200 is retried" \
	h1expect /retry/flaky/h1a/1/503 "200 ok after 2 tries from v1 (0 bytes)"
check "HTTP/1.1 endpoint: ... a POST's body sent again whole" \
	h1expect /retry/flaky/h1p/2/503 "200 ok after 3 tries from v1 (40000 bytes)" --data-binary "@$logs/post.bin"
check "HTTP/1.1 endpoint: ... attempts 2 exhausted: the third 503" \
	h1expect /retry/flaky/h1b/5/503 "503 503 try 3 from v1"
check "HTTP/1.1 endpoint: ... a 500 (not in codes) is not retried" \
	h1expect /retry/flaky/h1c/1/500 "500 500 try 1 from v1"
check "HTTP/1.1 endpoint: attempts 0: not retried at all" \
	h1expect /r0/flaky/h1d/1/503 "503 503 try 1 from v1"
check "HTTP/1.1 endpoint: a rule without retry: Istio's default (503 retried twice)" \
	h1expect /dflt/flaky/h1f/2/503 "200 ok after 3 tries from v1 (0 bytes)"
check "HTTP/1.1 endpoint: backendRequest with retry is each try's timeout (504)" h1per_try
check "HTTP/1.1 endpoint: the client connection goes on after a retried request" h1keep

check "h2c endpoint, HTTP/2 client: backendRequest 500ms: 504 after about 0.5 s, the upstream stream cancelled" \
	h2up_timeout h2 01
check "h2c endpoint, HTTP/1.1 client: 504 after about 0.5 s, the upstream stream cancelled" \
	h2up_timeout http1 02
check "h2c endpoint, HTTP/2 client: an answer begun is cut at the timeout, the upstream stream cancelled" h2up_cut
check "h2c endpoint: a fast answer on the same rule is 200 (HTTP/2)" h2up_fast h2
check "h2c endpoint: ... and HTTP/1.1" h2up_fast http1

# `Upgrade: h2c` (curl --http2 over cleartext) is not an upgrade at the waypoint (as Envoy): the
# request goes on as HTTP/1.1 without its upgrade, http2-settings and connection tokens, the
# answer is HTTP/1.1, the connection is kept; on an h2c Service it is translated to HTTP/2.
h2c_stripped() {
	local out body
	out=$(pod_exec "$lab" n1-p4 curl --http2 -sS -m 10 -w '\nVERSION %{http_version} %{http_code}\n' \
		"http://$V/headers") || true
	echo "$out" | head -c 600; echo
	grep -qx 'VERSION 1.1 200' <<<"$out" || return 1
	body=$(grep -v '^VERSION ' <<<"$out")
	jq -e '(with_entries(.key |= ascii_downcase)) as $h | ($h | has("upgrade") | not) and
		($h | has("http2-settings") | not) and
		(($h.connection // "") | ascii_downcase | test("upgrade|http2-settings") | not)' <<<"$body" >/dev/null
}
h2c_keepalive() {
	local out
	out=$(pod_exec "$lab" n1-p4 curl --http2 -sS -m 10 -o /dev/null -o /dev/null \
		-w '%{http_version} %{http_code} %{num_connects}\n' "http://$V/whoami" "http://$V/whoami") || true
	echo "$out" | tr '\n' '|'; echo
	[ "$out" = $'1.1 200 1\n1.1 200 0' ]
}
h2c_h2port() {
	local out
	out=$(pod_exec "$lab" n1-p4 curl --http2 -sS -m 10 -w ' %{http_version} %{http_code}' "http://$H2V/whoami") || true
	echo "$out"
	[ "$out" = "h2slow 1.1 200" ]
}
check "Upgrade: h2c (curl --http2): not upgraded, the endpoint sees no upgrade, http2-settings nor their connection tokens" h2c_stripped
check "... the connection goes on as HTTP/1.1 (a second request on it)" h2c_keepalive
check "... to an h2c Service: translated to HTTP/2 as any HTTP/1.1 request, answered HTTP/1.1" h2c_h2port

metric() { lab_until lab_waypoint_metric "$lab" "$1"; } # (a stream is counted when it closes)
check "metrics: the chosen backend is destination_service (app-2)" \
	metric '^istio_requests_total\{reporter="waypoint",.*destination_service="app-2\.default\.svc\.cluster\.local",.*response_code="200"'
check "metrics: ... and app-3" \
	metric '^istio_requests_total\{reporter="waypoint",.*destination_service="app-3\.default\.svc\.cluster\.local",.*response_code="200"'
check "metrics: 404 with response_flags NR for app-1" \
	metric '^istio_requests_total\{reporter="waypoint",.*destination_service="app-1\.default\.svc\.cluster\.local",.*response_code="404",response_flags="NR"'
check "metrics: a redirect is counted (301, app-1, no response flag)" \
	metric '^istio_requests_total\{reporter="waypoint",.*destination_service="app-1\.default\.svc\.cluster\.local",.*response_code="301",response_flags="-"'
check "metrics: 500 with response_flags NC" \
	metric '^istio_requests_total\{reporter="waypoint",.*response_code="500",response_flags="NC"'
check "metrics: 504 with response_flags UT (route timeout)" \
	metric '^istio_requests_total\{reporter="waypoint",.*destination_service="app-2\.default\.svc\.cluster\.local",.*response_code="504",response_flags="UT"'
check "metrics: a begun answer cut by the timeout: 200 with response_flags UT" \
	metric '^istio_requests_total\{reporter="waypoint",.*response_code="200",response_flags="UT"'

route_span() { # TRACE_ID PATH JQ-FILTER: the request span of a routed request to PATH matches
	local tid=$1 out
	pod_exec "$lab" n1-p4 curl -sS -m 10 -o /dev/null -H "traceparent: 00-$tid-00f067aa0ba902b7-01" \
		-H 'x-canary: 1' "http://$V$2" || return 1
	lab_until trace_has "$tid" "$3"	# (the span ends in the waypoint's own time)
}
trace_has() { # TRACE_ID JQ-FILTER: the waypoint's /spans of that trace have one SERVER span matching
	local out
	out=$(pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 "http://127.0.0.1:15000/spans?trace_id=$1") ||
		return 1
	jq -e "[.spans[] | select(.kind == \"SERVER\" and $2)] | length == 1" <<<"$out" >/dev/null && return 0
	jq -c '.spans[] | {name, kind, status, attributes}' <<<"$out"; return 1
}
check "span: route.name and the backend as destination.service" route_span \
	5a1e0f00c0ffee00000000000000beef /whoami '.attributes["route.name"] == "default/app1-split" and
	.attributes["destination.service"] == "app-3.default.svc.cluster.local" and
	.attributes["http.status_code"] == 200'
check "span: a rewritten request keeps the client's url.path" route_span \
	5a1e0f00c0ffee0000000000000000aa /legacy/status/203 '.attributes["url.path"] == "/legacy/status/203" and
	.attributes["http.status_code"] == 203'
check "span: a route timeout is 504, response_flags UT, status ERROR" route_span \
	5a1e0f00c0ffee00000000000000b504 /delay/3000 '.attributes["http.status_code"] == 504 and
	.attributes.response_flags == "UT" and .status.code == "ERROR" and
	(.status.message | test("upstream request timeout"))'

admin_routes() {
	local out
	out=$(pod_exec "$lab" "$LAB_WAYPOINT_POD" curl -fsS -m 5 http://127.0.0.1:15000/waypoint) || return 1
	jq -c '.routes.stats' <<<"$out"
	jq -e '.routes.stats == {routes: 3, accepted: 2, refused: 1, services: 2} and
		([.routes.routes[] | select(.name == "app1-split" and .accepted)] | length) == 1 and
		([.routes.routes[] | select(.name == "app1-regex" and (.accepted | not)) | .diagnostics[] |
		  select(.kind == "refused" and (.message | test("RegularExpression")))] | length) == 1' \
		<<<"$out" >/dev/null
}
check "admin /waypoint: routes listed, the RegularExpression one refused with its reason" admin_routes
check "the refused route is logged" lab_until grep -q 'HTTPRoute default/app1-regex not applied' "$logs/waypoint.log"

ROUTES=0 set_routes
removed() { # PROTO: app-1's own endpoint answers every request again
	local out
	out=$(bodies "$1" 10 /whoami 2>&1) || true
	[ "$(grep -cx front <<<"$out" || true)" -eq 10 ] && return 0
	echo "$out"; return 1
}
# (the waypoint reloads the file in its own time)
check "routes removed from the file: plain balancing over app-1 again (HTTP/1.1)" lab_until removed http1
check "... and over HTTP/2" removed h2
expect_status "... and /other reaches app-1's endpoint (its own 404 now, not the route's)" h2 /status/202 202
check "waypoint: nothing logged at error level" sh -c "! grep -q '\"level\":\"error\"' '$logs/waypoint.log'"
if [ -n "${WP_PID:-}" ]; then
	lab_check_waypoint_exit "$logs/waypoint.log"
fi
lab_stop_agent "$lab" 1
lab_down "$lab" >/dev/null 2>&1 || true
lab_result
