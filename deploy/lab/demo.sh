#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `make demo`: a two-node lab (network namespaces), an ambit agent per node, an OTLP collector,
# traffic between pods (direct, through a service VIP, a refused connection), then what an
# operator sees: ambitctl tables, the access log with trace IDs, and the spans the collector
# decoded, drawn as a trace waterfall. Tears everything down at the end (DEMO_KEEP=1 keeps it).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
export AMBIT_BUILD=${AMBIT_BUILD:-build}
. tests/lab/lib.sh

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it creates network namespaces and loads BPF)" >&2; exit 1; }
make --no-print-directory -s "$AMBIT_BUILD/tests/tools/tcpkit" >/dev/null
./tests/node/install.sh
name=demo
dir=$(mktemp -d /tmp/ambit-demo.XXXXXX)
keep=${DEMO_KEEP:-}
if [ -n "$keep" ]; then _LAB_TRAP_SET=1; fi	# keep the lab: no teardown trap

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "lab: 2 nodes x 2 pods, routed CNI, pod 1 of each node enrolled"
lab_up "$name" --nodes 2 --pods 2 --cni routed --enroll p1 >"$dir/lab.log"
echo "nodes: $(lab_node_ip 1) $(lab_node_ip 2); pods: $LAB_POD_LIST"

step "OTLP collector (gRPC :4317, decoding with the official protobuf definitions) on the underlay"
pod_spawn "$name" ul "$dir/sink.log" node tests/node/otlp_sink.js --host "$LAB_UL_IP" \
	--grpc-port 4317 --http-port 4318 --out "$dir/spans.jsonl" --ready "$dir/sink.ready"
for _ in $(seq 100); do [ -f "$dir/sink.ready" ] && break; sleep 0.1; done

step "agents (ambitd) on both nodes, exporting to http://$LAB_UL_IP:4317"
export OTEL_EXPORTER_OTLP_ENDPOINT=http://$LAB_UL_IP:4317 OTEL_BSP_SCHEDULE_DELAY=500
lab_start_agent "$name" 1
lab_start_agent "$name" 2
echo "agents ready"

step "traffic"
p21=$(lab_pod_ip 2 1)
pod_spawn "$name" n2-p1 "$dir/server.log" "$TCPKIT" serve --port 8080 --mode verify --peers
pod_spawn "$name" n2-p1 "$dir/echo.log" "$TCPKIT" serve --port 9000 --mode echo
wait_port "$name" n2-p1 8080 && wait_port "$name" n2-p1 9000
echo "- $name-n1-p1 -> $name-n2-p1 ($p21:8080), 8 MiB checked byte for byte:"
pod_exec "$name" n1-p1 "$TCPKIT" client --to "$p21:8080" --mode verify --bytes 8M | sed 's/^/    /'
echo "- $name-n1-p1 -> service solo ($LAB_SVC_SOLO_VIP:80 -> :8080):"
pod_exec "$name" n1-p1 "$TCPKIT" client --to "$LAB_SVC_SOLO_VIP:80" --mode verify --bytes 1M | sed 's/^/    /'
echo "- $name-n1-p1 -> $p21:7777 (nothing listens: a refused connection, an ERROR span):"
pod_exec "$name" n1-p1 "$TCPKIT" client --to "$p21:7777" --mode verify --bytes 1K --timeout 5 2>&1 |
	sed 's/^/    /' || true
echo "- a long connection kept open for the connections table"
pod_spawn "$name" n1-p1 "$dir/long.log" sh -c "(echo hello; sleep 60) | socat - TCP:$p21:9000"
sleep 1

step "ambitctl workloads (node 1)"
pod_exec "$name" n1 "$AMBIT_BUILD/ambitctl" workloads || true
step "ambitctl connections (node 1)"
pod_exec "$name" n1 "$AMBIT_BUILD/ambitctl" connections || true
step "ambitctl certificates (node 2)"
pod_exec "$name" n2 "$AMBIT_BUILD/ambitctl" certificates || true

step "access log (node 1, last connection): every line carries trace_id and span_id"
grep '"connection complete"' "$LAB_ROOT/$name/agent1.log" | tail -n 1

step "spans received by the collector"
for _ in $(seq 50); do
	[ "$(wc -l <"$dir/spans.jsonl" 2>/dev/null || echo 0)" -ge 6 ] && break
	sleep 0.2
done
jq -r '[.name, (if .kind == 3 then "CLIENT" else "SERVER" end), .trace_id[0:16],
	.resource["service.name"], .resource["k8s.node.name"], .attributes.cluster_name,
	(.attributes["destination.service"] // "-"), (if .status.code == 2 then "ERROR " + .status.message else "ok" end)]
	| @tsv' "$dir/spans.jsonl" | column -t -s $'\t' -N NAME,KIND,TRACE,SERVICE,NODE,CLUSTER,DST-SERVICE,STATUS || true

trace=$(jq -r 'select(.kind == 2) | .trace_id' "$dir/spans.jsonl" | head -n 1)
if [ -n "$trace" ]; then
	step "one trace across both nodes: ambitctl --admin node1,node2 spans --trace $trace"
	# Each admin API listens on its own node's loopback; forward node 2's into node 1, as
	# `kubectl port-forward` would, so one ambitctl call merges both halves of the trace.
	pod_spawn "$name" n1 "$dir/forward.log" socat TCP-LISTEN:15100,bind=127.0.0.1,reuseaddr,fork \
		"EXEC:nsenter --net=/run/netns/$name-n2 socat - TCP\:127.0.0.1\:15000"
	wait_port "$name" n1 15100
	pod_exec "$name" n1 "$AMBIT_BUILD/ambitctl" --admin 127.0.0.1:15000,127.0.0.1:15100 spans --trace "$trace" || true
fi

step "metrics (node 2, istio_tcp_connections_opened_total)"
pod_exec "$name" n2 curl -fsS "http://$(lab_node_ip 2):15020/metrics" | grep '^istio_tcp_connections_opened_total' | head -n 3 || true

if [ -n "$keep" ]; then
	echo; echo "lab '$name' kept: deploy/lab/lab.sh down $name when done (spans: $dir/spans.jsonl)"
else
	step "tearing down"
fi
