#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `make demo`: a two-node lab (network namespaces), the mesh CA (ambit-ca: agents hold no CA key,
# they get certificates with a node token), an ambit agent per node, a waypoint, an OTLP
# collector, traffic between pods (direct, through a service VIP, through the waypoint, a
# refused connection), then what an operator sees: ambitctl tables, the access log with trace
# IDs, and the spans the collector decoded, drawn as a trace waterfall. Tears everything down at
# the end (DEMO_KEEP=1 keeps it).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
export AMBIT_BUILD=${AMBIT_BUILD:-build}
. tests/lab/lib.sh

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it creates network namespaces and loads BPF)" >&2; exit 1; }
[ -x "$TCPKIT" ] && [ -x "$AMBIT_BUILD/ambitd" ] ||
	{ echo "demo: $AMBIT_BUILD is not built: run it as 'make demo'" >&2; exit 1; }
./tests/node/install.sh
name=demo
dir=$(mktemp -d /tmp/ambit-demo.XXXXXX)
keep=${DEMO_KEEP:-}
if [ -n "$keep" ]; then _LAB_TRAP_SET=1; fi	# keep the lab: no teardown trap

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "lab: 2 nodes x 2 pods (enrolled), routed CNI, a waypoint for service app-1"
lab_up "$name" --nodes 2 --pods 2 --cni routed --enroll p1,p2 --waypoint >"$dir/lab.log"
echo "nodes: $(lab_node_ip 1) $(lab_node_ip 2); pods: $LAB_POD_LIST; waypoint: $LAB_WAYPOINT_IP"
# The collector lives on the underlay; give it a way back to the pod networks so the waypoint
# pod (not enrolled, HBONE-native) can export to it too (lab.sh made them already for ambit-ca).
for k in 1 2; do
	pod_exec "$name" ul ip route replace "10.244.$k.0/24" via "$(lab_node_ip "$k")"
done

step "OTLP collector (gRPC :4317, decoding with the official protobuf definitions) on the underlay"
pod_spawn "$name" ul "$dir/sink.log" node tests/node/otlp_sink.js --host "$LAB_UL_IP" \
	--grpc-port 4317 --http-port 4318 --out "$dir/spans.jsonl" --ready "$dir/sink.ready"
for _ in $(seq 100); do [ -f "$dir/sink.ready" ] && break; sleep 0.1; done

step "the mesh CA (ambit-ca) on $LAB_CA_ADDRESS: the only holder of the CA key"
lab_start_ca "$name"
echo "ambit-ca ready; each agent has a node token (token-nK), none has the key"

step "agents (ambitd) on both nodes, certificates from ambit-ca, exporting to http://$LAB_UL_IP:4317"
export OTEL_EXPORTER_OTLP_ENDPOINT=http://$LAB_UL_IP:4317 OTEL_BSP_SCHEDULE_DELAY=500
lab_start_agent "$name" 1
lab_start_agent "$name" 2
echo "agents ready (their workloads' certificates came from ambit-ca)"

step "waypoint (ambit-waypoint) for service app-1, on $LAB_WAYPOINT_IP:15008"
pod_spawn "$name" "$LAB_WAYPOINT_POD" "$dir/waypoint.log" "$AMBIT_BUILD/ambit-waypoint" --config "$LAB_WAYPOINT_CONFIG"
for _ in $(seq 100); do
	pod_exec "$name" "$LAB_WAYPOINT_POD" curl -fsS -m 1 -o /dev/null "http://$LAB_WAYPOINT_IP:15021/healthz/ready" 2>/dev/null && break
	sleep 0.1
done
echo "waypoint ready"

step "traffic"
p22=$(lab_pod_ip 2 2)
for k in 1 2; do	# app-1's endpoints: pod 1 of each node, an HTTP server
	pod_spawn "$name" "n$k-p1" "$dir/http-$k.log" python3 tests/tools/http_echo.py --port 8080 --name "$name-n$k-p1"
	wait_port "$name" "n$k-p1" 8080
done
pod_spawn "$name" n2-p2 "$dir/server.log" "$TCPKIT" serve --port 9100 --mode verify --peers
pod_spawn "$name" n2-p2 "$dir/echo.log" "$TCPKIT" serve --port 9000 --mode echo
wait_port "$name" n2-p2 9100 && wait_port "$name" n2-p2 9000
echo "- $name-n1-p1 -> $name-n2-p2 ($p22:9100), 8 MiB checked byte for byte, over HBONE:"
pod_exec "$name" n1-p1 "$TCPKIT" client --to "$p22:9100" --mode verify --bytes 8M | grep -E 'result|gbit' | sed 's/^/    /'
echo "- $name-n1-p2 -> service solo ($LAB_SVC_SOLO_VIP:80 -> $name-n2-p1:8080), no waypoint:"
pod_exec "$name" n1-p2 curl -sS -m 10 "http://$LAB_SVC_SOLO_VIP/whoami" | sed 's/^/    /'
echo "- $name-n1-p2 -> service app-1 ($LAB_SVC_APP_1_VIP:80) through the waypoint, 4 requests on one connection:"
pod_exec "$name" n1-p2 curl -sS -m 10 "http://$LAB_SVC_APP_1_VIP/whoami" "http://$LAB_SVC_APP_1_VIP/whoami" \
	"http://$LAB_SVC_APP_1_VIP/whoami" "http://$LAB_SVC_APP_1_VIP/whoami" | sed 's/^/    /'
echo "- ... and one answered 500 by the application:"
pod_exec "$name" n1-p2 curl -sS -m 10 -o /dev/null -w '    HTTP %{http_code}\n' "http://$LAB_SVC_APP_1_VIP/status/500"
echo "- $name-n1-p1 -> $p22:7777 (nothing listens: a refused connection, an ERROR span):"
pod_exec "$name" n1-p1 "$TCPKIT" client --to "$p22:7777" --mode verify --bytes 1K --timeout 5 2>&1 |
	sed 's/^/    /' || true
echo "- a long connection kept open for the connections table"
pod_spawn "$name" n1-p1 "$dir/long.log" sh -c "(echo hello; sleep 60) | socat - TCP:$p22:9000"
sleep 1

step "ambitctl workloads (node 1)"
pod_exec "$name" n1 "$AMBIT_BUILD/ambitctl" workloads || true
step "ambitctl connections (node 1)"
pod_exec "$name" n1 "$AMBIT_BUILD/ambitctl" connections || true
step "ambitctl certificates (node 2): issued by ambit-ca, renewed at half-life"
pod_exec "$name" n2 "$AMBIT_BUILD/ambitctl" certificates || true

step "access log (node 1, last connection): every line carries trace_id and span_id"
grep '"connection complete"' "$LAB_ROOT/$name/agent1.log" | tail -n 1

step "spans received by the collector"
for _ in $(seq 50); do
	[ "$(wc -l <"$dir/spans.jsonl" 2>/dev/null || echo 0)" -ge 20 ] && break
	sleep 0.2
done
jq -sr 'sort_by(.trace_id, .start) | .[] | [.name, (if .kind == 3 then "CLIENT" else "SERVER" end), .trace_id[0:16],
	.resource["service.name"], (.resource["k8s.node.name"] // "-"), .attributes.cluster_name,
	(.attributes["http.status_code"] // "-" | tostring),
	(if .status.code == 2 then "ERROR " + .status.message else "ok" end)]
	| @tsv' "$dir/spans.jsonl" | column -t -s $'\t' -N NAME,KIND,TRACE,SERVICE,NODE,CLUSTER,HTTP,STATUS || true

# The trace of the 500: client outbound -> waypoint inbound -> request span -> endpoint inbound.
trace=$(jq -r 'select(.attributes["http.status_code"] == 500) | .trace_id' "$dir/spans.jsonl" | head -n 1)
[ -n "$trace" ] || trace=$(jq -r 'select(.kind == 2) | .trace_id' "$dir/spans.jsonl" | head -n 1)
if [ -n "$trace" ]; then
	step "one trace across both nodes and the waypoint: ambitctl --admin node1,waypoint,node2 spans --trace $trace"
	# Each admin API listens on its own node's loopback; forward node 2's into node 1, as
	# `kubectl port-forward` would, so one ambitctl call merges both halves of the trace.
	pod_spawn "$name" n1 "$dir/forward.log" socat TCP-LISTEN:15100,bind=127.0.0.1,reuseaddr,fork \
		"EXEC:nsenter --net=/run/netns/$name-n2 socat - TCP\:127.0.0.1\:15000"
	wait_port "$name" n1 15100
	pod_spawn "$name" n1 "$dir/forward-wp.log" socat TCP-LISTEN:15101,bind=127.0.0.1,reuseaddr,fork \
		"EXEC:nsenter --net=/run/netns/$name-$LAB_WAYPOINT_POD socat - TCP\:127.0.0.1\:15000"
	wait_port "$name" n1 15101
	pod_exec "$name" n1 "$AMBIT_BUILD/ambitctl" --admin 127.0.0.1:15000,127.0.0.1:15101,127.0.0.1:15100 \
		spans --trace "$trace" || true
fi

step "metrics (node 2, istio_tcp_connections_opened_total)"
pod_exec "$name" n2 curl -fsS "http://$(lab_node_ip 2):15020/metrics" | grep '^istio_tcp_connections_opened_total' | head -n 3 || true

if [ -n "$keep" ]; then
	echo; echo "lab '$name' kept: deploy/lab/lab.sh down $name when done (spans: $dir/spans.jsonl)"
else
	step "tearing down"
fi
