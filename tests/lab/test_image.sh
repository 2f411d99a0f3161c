#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The container image, run as the manifests run it. Builds deploy/Dockerfile with `make image`
# (tests/lab/container.sh picks the engine and makes the base image once per machine), renders
# the homelab overlay with the test's image set through its `images:` entry, and runs, in a lab
# (bridge CNI, dual stack, two nodes, a waypoint pod):
# - both node agents from the image in their nodes' network namespaces, with the securityContext,
#   environment, command and volumes (hostPath, emptyDir, config, root certificate, projected
#   service-account token) of the rendered DaemonSet (tests/node/pod_run_args.js turns them into
#   engine options; nothing is copied by hand), with the rendered ConfigMaps' `ca` (the root and
#   token where the volumes put them; only the address is the lab's); they hold no CA key;
# - before them, ambit-ca from the image as its rendered Deployment runs it (uid 65532, the CA
#   key Secret readable through fsGroup), in the underlay where the lab's CA listens, with the
#   lab's workloads file and token issuer key in place of the Kubernetes API; it issues the
#   agents' and the waypoint's certificates against the lab's tokens;
# - first node 1's agent without the host's /proc/sys/net mount: it must refuse to start with one
#   line naming the sysctl file and the missing mount (a container's /proc/sys is read-only);
# - captured traffic (IPv4 and IPv6) across nodes over HBONE, the agents' metrics and OTLP spans;
# - the waypoint Deployment's container from the same image in the waypoint pod, serving a
#   Service's HTTP requests, with its metrics and spans;
# - SIGTERM to node 2's container with a connection open: it drains (the connection still
#   carries data), then exits 0; `ambitd --cleanup` from the image, with the DaemonSet's mounts,
#   removes every trace of capture (tc, rule, routes, pins, FDB, tcp_early_demux back to 1).
# Skipped (a "# skip" line, no ok) only where podman is not installed (docker cannot join a named
# network namespace); podman that cannot run is a failure.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/container.sh"

[ "$(id -u)" -eq 0 ] || { echo "not ok - image (needs root)"; exit 1; }
rc=0
container_engine_init || rc=$?
if [ "$rc" -eq 2 ]; then
	echo "# skip - image: no container engine to run the lab's containers ($CONTAINER_WHY)"
	exit 0
elif [ "$rc" -ne 0 ]; then
	echo "not ok - image: the container engine cannot run ($CONTAINER_WHY)"
	exit 1
fi
for t in node kubectl jq curl; do
	command -v "$t" >/dev/null || { echo "not ok - image ($t not found)"; exit 1; }
done
[ -x "$TCPKIT" ] || { echo "not ok - image ($TCPKIT not built)"; exit 1; }
NODE=$(command -v node)
NODE_DIR=$LAB_TOP/tests/node
[ -d "$NODE_DIR/node_modules/js-yaml" ] || "$NODE_DIR/install.sh" >/dev/null

lab=image-$$	# unique: other runs of this test may be up at the same time
IMG=localhost/ambit-lab:t$$
work=$(mktemp -d /tmp/ambit-image.XXXXXX)
CONTAINERS=()
image_cleanup() {
	local c
	for c in "${CONTAINERS[@]}"; do $ENGINE rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
	$ENGINE rmi "$IMG" >/dev/null 2>&1 || true
	rm -rf "$work"
}
# Containers go before the lab (lib.sh's teardown), so nothing holds its namespaces.
trap 'image_cleanup; _lab_on_exit' EXIT
trap 'exit 130' INT TERM
_LAB_TRAP_SET=1

# ------------------------------------------------------------------ the image and manifests
if ! container_build "$IMG" >"$work/build.log" 2>&1; then
	fail "image: make image CONTAINER_ENGINE=$ENGINE builds deploy/Dockerfile"
	tail -n 30 "$work/build.log" | sed 's/^/#   /'
	lab_result; exit 1
fi
ok "image: make image CONTAINER_ENGINE=$ENGINE builds deploy/Dockerfile"
size=$($ENGINE image inspect --format '{{.Size}}' "$IMG")
note "image size: $size bytes ($((size / 1024 / 1024)) MiB)"
check "image: slim, under 40 MiB ($((size / 1024 / 1024)) MiB)" test "$size" -lt $((40 << 20))
check "image: no shell or package manager in it, only the binaries and their libraries" \
	sh -c "! $ENGINE run --rm --network none --entrypoint /bin/sh '$IMG' -c true"
check "image: the four binaries run" sh -c "for b in ambitd ambitctl ambit-waypoint ambit-ca; do
	$ENGINE run --rm --network none --entrypoint /usr/local/bin/\$b '$IMG' --version || exit 1; done"

# The homelab overlay, pointed at this image as `kustomize edit set image ambit=...` does.
cp -r "$LAB_TOP/kustomize" "$work/kz"
sed -i -e "/^  - name: ambit\$/,/newTag:/{s#newName: .*#newName: ${IMG%:*}#;s#newTag: .*#newTag: \"${IMG##*:}\"#}" \
	"$work/kz/overlays/homelab/kustomization.yaml"
rendered=$work/homelab.yaml
check "manifests: the homelab overlay renders (kubectl kustomize)" \
	sh -c "kubectl kustomize '$work/kz/overlays/homelab' >'$rendered'"
check "manifests: the DaemonSet, the waypoint and the ambit-ca Deployments all run $IMG" \
	test "$(sed -n 's/^ *image: //p' "$rendered" | sort | uniq -c | tr -s ' ')" = " 3 $IMG"
[ "$CHECK_RC" -eq 0 ] || { lab_result; exit 1; }

# ------------------------------------------------------------------------------- the lab
if ! lab_up "$lab" --nodes 2 --pods 2 --cni bridge --enroll p1,p2 --waypoint --ipv6 >"$work/up.log" 2>&1; then
	fail "lab up"; sed 's/^/#   /' "$work/up.log" | tail -20; lab_result; exit 1
fi
p21=$(lab_pod_ip 2 1)
n2=$(lab_node_ip 2)
[ "$LAB_CA_MODE" = ambit-ca ] || { fail "lab: certificates from ambit-ca (got --ca $LAB_CA_MODE)"; lab_result; exit 1; }
# rendered_ca KIND NAME KEY: the `ca` object of that workload's rendered config ConfigMap, its
# address the lab's ambit-ca (the Service name does not resolve in the lab).
rendered_ca() {
	"$NODE" "$NODE_DIR/pod_run_args.js" --kind "$1" --name "$2" --data config "$3" "$rendered" |
		jq -ce --arg a "$LAB_CA_ADDRESS" 'if .ca.key then error("a CA key in \(.ca)") else .ca + {address: $a} end'
}
node_ca=$(rendered_ca DaemonSet ambit ambitd.json)
wp_ca=$(rendered_ca Deployment waypoint waypoint.json)
# The ambit-root-cert ConfigMap: the lab's root, under the name the rendered config reads.
mkdir -p "$work/root"
cp "$LAB_CA_CERT" "$work/root/$(jq -r '.cert | split("/") | last' <<<"$node_ca")"
pod_spawn "$lab" ul "$work/sink.log" "$NODE" "$NODE_DIR/otlp_sink.js" --host "$LAB_UL_IP" \
	--grpc-port 4317 --out "$work/spans.jsonl" --ready "$work/sink.ready"
pod_spawn "$lab" "$LAB_WAYPOINT_POD" "$work/wsink.log" "$NODE" "$NODE_DIR/otlp_sink.js" \
	--host 127.0.0.1 --grpc-port 4317 --out "$work/wspans.jsonl" --ready "$work/wsink.ready"
for k in 1 2; do
	pod_spawn "$lab" "n$k-p1" "$work/echo$k.log" "$TCPKIT" serve --port 9000 --mode echo
	pod_spawn "$lab" "n$k-p1" "$work/http$k.log" python3 "$LAB_TOP/tests/tools/http_echo.py" \
		--port 8080 --name "$lab-n$k-p1"
	wait_port "$lab" "n$k-p1" 9000
	wait_port "$lab" "n$k-p1" 8080
done
p21v6=$(lab_var N2_P1_IP6)
pod_spawn "$lab" n2-p1 "$work/echo6.log" "$TCPKIT" serve --bind "$p21v6" --port 9001 --mode echo
wait_port "$lab" n2-p1 9001
lab_until test -f "$work/sink.ready" -a -f "$work/wsink.ready" || true
: >>"$work/spans.jsonl"
: >>"$work/wspans.jsonl"

# node_config K: node K's lab config as the ConfigMap would hold it: the rendered `ca` (root and
# token where the DaemonSet mounts them), spans to the sink on the underlay, exported quickly.
node_config() {
	mkdir -p "$work/n$1/config"
	jq --argjson ca "$node_ca" --arg otlp "http://$LAB_UL_IP:4317" '.ca = $ca |
		.tracing.otlp.endpoint = $otlp | .tracing.schedule_delay_ms = 200 |
		.proxy = {drain_timeout_ms: 20000}' "$LAB_DIR/node$1.json" >"$work/n$1/config/ambitd.json"
}
# run_args K KIND NAME [pod_run_args.js options]: the engine's options for that workload's
# container in node K's namespace, into the array ARGS.
run_args() {
	local k=$1 kind=$2 name=$3 ip ns stage
	shift 3
	ip=$(lab_node_ip "$k")
	ns=$(lab_var "N${k}_NS")
	[ "$name" = waypoint ] && ns=$LAB_WAYPOINT_NS ip=$LAB_WAYPOINT_IP
	[ "$name" = ambit-ca ] && ns=$LAB_UL_NS ip=$LAB_UL_IP
	stage=$(mktemp -d "$work/stage-$name-$k.XXXXXX")	# each container its own volumes
	mapfile -t ARGS < <("$NODE" "$NODE_DIR/pod_run_args.js" --kind "$kind" --name "$name" \
		--image "$IMG" --stage "$stage" --field "spec.nodeName=$lab-n$k" \
		--field "status.hostIP=$ip" --field "metadata.name=$name-$k" \
		--field metadata.namespace=ambit-system "$@" "$rendered" || echo FAILED)
	[ "${ARGS[-1]}" != FAILED ] || return 1
	# The lab's workloads file stands in for the Kubernetes API.
	ARGS=(--network "ns:/run/netns/$ns" -v "$LAB_DIR:$LAB_DIR:ro" "${ARGS[@]}")
}
# agent_args K [pod_run_args.js options]: run_args for node K's agent with its volumes' contents:
# its config, the root certificate and node K's token (audience istio-ca).
agent_args() {
	run_args "$1" DaemonSet ambit --source "config=$work/n$1/config" --source "root-cert=$work/root" \
		--source "istio-token=$LAB_DIR/token-n$1" "${@:2}"
}
# ready URL_NS URL CONTAINER: waits until URL answers in that namespace; shows the log if not.
ready() {
	for _ in $(seq 300); do
		nsenter --net="/run/netns/$1" curl -fsS -m 1 -o /dev/null "$2" 2>/dev/null && return 0
		[ "$($ENGINE inspect -f '{{.State.Running}}' "$3" 2>/dev/null)" = true ] || break
		sleep 0.1
	done
	$ENGINE logs "$3" 2>&1 | tail -n 20 | sed 's/^/#   /'
	return 1
}
start_agent() { # K
	local c=$lab-ambitd-$1
	agent_args "$1" || return 1
	CONTAINERS+=("$c")
	$ENGINE run -d --name "$c" "${ARGS[@]}" >/dev/null || return 1
	ready "$lab-n$1" "http://$(lab_node_ip "$1"):15021/healthz/ready" "$c"
}

# ------------------------------------------------------------------- ambit-ca from the image
# Its rendered config, where the lab differs: the names the agents dial (the underlay address),
# the lab's workloads file and token issuer key (staged with the config: the lab's copy is
# root's only) instead of the Kubernetes API, and no root ConfigMap to keep.
mkdir -p "$work/ca/config" "$work/ca/key"
ca_cfg_dir=$("$NODE" "$NODE_DIR/pod_run_args.js" --kind Deployment --name ambit-ca --mount-path config "$rendered")
cp "$LAB_DIR/issuer.pub" "$work/ca/config/issuer.pub"
"$NODE" "$NODE_DIR/pod_run_args.js" --kind Deployment --name ambit-ca --data config ambit-ca.json "$rendered" |
	jq --slurpfile lab "$LAB_CA_CONFIG" --arg pub "$ca_cfg_dir/issuer.pub" '.server_names = $lab[0].server_names |
		.discovery = $lab[0].discovery | .tokens.issuer_keys = [$pub] | del(.root_cert_configmap)' \
	>"$work/ca/config/ambit-ca.json"
# The Secret ambit-ca: the lab's CA, under the names the rendered config reads.
ca_cfg=$(jq -c .ca "$work/ca/config/ambit-ca.json")
cp "$LAB_CA_CERT" "$work/ca/key/$(jq -r '.cert | split("/") | last' <<<"$ca_cfg")"
cp "$LAB_CA_KEY" "$work/ca/key/$(jq -r '.key | split("/") | last' <<<"$ca_cfg")"
caps_of() { # CONTAINER: its PID 1's effective capability set (hex)
	awk '/^CapEff/ { print $2 }' "/proc/$($ENGINE inspect -f '{{.State.Pid}}' "$1")/status"
}
start_ca() {
	local c=$lab-ambit-ca
	run_args 1 Deployment ambit-ca --source "config=$work/ca/config" --source "ca-key=$work/ca/key" || return 1
	CONTAINERS+=("$c")
	$ENGINE run -d --name "$c" "${ARGS[@]}" >/dev/null || return 1
	ready "$LAB_UL_NS" "http://127.0.0.1:15014/healthz/ready" "$c"
}
if start_ca; then ok "ambit-ca: its container runs as the Deployment says, in the underlay ($LAB_CA_ADDRESS), and becomes ready"
else fail "ambit-ca: its container runs as the Deployment says, in the underlay ($LAB_CA_ADDRESS), and becomes ready"; lab_result; exit 1; fi
ca_pid=$($ENGINE inspect -f '{{.State.Pid}}' "$lab-ambit-ca" 2>/dev/null || echo 0)
check "ambit-ca: runs as uid 65532 with no capabilities (the key readable through fsGroup only)" \
	test "$(awk '/^Uid/ { print $2 }' "/proc/$ca_pid/status" 2>&1) $(caps_of "$lab-ambit-ca" 2>&1) $(stat -c '%a %g' "$work"/stage-ambit-ca-1.*/ca-key/ca.key)" = "65532 0000000000000000 440 65532"

# ------------------------------------------ node 1 without the host's /proc/sys/net: a clear no
node_config 1
node_config 2
without_sysctl_mount() {
	local out rc=0 line
	agent_args 1 --without-volume host-proc-sys-net || return 1
	out=$(timeout 60 $ENGINE run --rm "${ARGS[@]}" 2>&1) || rc=$?
	line=$(grep -F 'tcp_early_demux' <<<"$out" | head -n 1)
	printf '%s\n' "$line"
	[ "$rc" -ne 0 ] && [[ $line == *"/proc/sys/net/ipv4/tcp_early_demux"* ]] &&
		[[ $line == *"mount the host's /proc/sys/net at /host/proc/sys/net"* ]] &&
		[[ $line == *"Read-only file system"* ]]
}
check "DaemonSet without the host's /proc/sys/net mount: the agent exits, one line naming the sysctl and the mount" \
	without_sysctl_mount

# --------------------------------------------------------------- both agents from the image
for k in 1 2; do
	if start_agent "$k"; then ok "node $k: the agent container runs as the DaemonSet says and becomes ready"
	else fail "node $k: the agent container runs as the DaemonSet says and becomes ready"; lab_result; exit 1; fi
done
nadd=$(agent_args 1 &&
	printf '%s\n' "${ARGS[@]}" | grep -c '^CAP_')
popcount() { local v=$((0x$1)) n=0; while [ "$v" -gt 0 ]; do n=$((n + (v & 1))); v=$((v >> 1)); done; echo "$n"; }
check "node 1: not privileged, read-only root, exactly the DaemonSet's $nadd added capabilities" \
	test "$($ENGINE inspect -f '{{.HostConfig.Privileged}} {{.HostConfig.ReadonlyRootfs}}' "$lab-ambitd-1") $(popcount "$(caps_of "$lab-ambitd-1")")" = "false true $nadd"
check "node 1: tcp_early_demux is 0 in the node's namespace (written through /host/proc/sys/net)" \
	test "$(ip netns exec "$lab-n1" sysctl -n net.ipv4.tcp_early_demux)" = 0
check "node 1: capture attached to its two enrolled pods, bridge mode (static FDB entry), sysctls through the mount" sh -c \
	"nsenter --net=/run/netns/$lab-n1 curl -fsS http://127.0.0.1:15000/bpf |
		jq -e '(.interfaces | length == 2 and all(.[]; .mode == \"bridge\")) and
			.sysctl_dir == \"/host/proc/sys/net\"' >/dev/null &&
	 bridge -n $lab-n1 fdb show | grep -w static | grep -q ."

# ca_issued: ambit-ca's count of certificates issued (its metrics, in the underlay).
ca_issued() {
	nsenter --net="/run/netns/$lab-ul" curl -fsS -m 5 http://127.0.0.1:15014/metrics |
		awk '/^ambit_ca_server_requests_total\{decision="issued"\}/ { s += $NF } END { printf "%d\n", s }'
}
for k in 1 2; do
	check "node $k: its workloads' certificates come from the lab's ambit-ca (admin /certificates), no CA key in it" sh -c \
		"nsenter --net=/run/netns/$lab-n$k curl -fsS http://127.0.0.1:15000/certificates |
			jq -e '.ca.mode == \"ca-client\" and .ca.backend == \"$LAB_CA_ADDRESS\" and
				(.certificates | length >= 2 and all(.[]; .serial != \"\" and .state == \"fresh\"))' >/dev/null"
done
issued=$(ca_issued)
check "... ambit-ca counts them issued ($issued)" test "$issued" -ge 4

check "node 1: ambitctl (found through the image's PATH, as kubectl exec does) reads the agent's admin API" sh -c \
	"$ENGINE run --rm --network ns:/run/netns/$lab-n1 --read-only --cap-drop all --entrypoint \
		ambitctl '$IMG' workloads -o json | jq -e '(.workloads // .) | length >= 4' >/dev/null"

# --------------------------------------------------------------- traffic, metrics and spans
o1=$(lab_metric "$lab" 1 istio_tcp_connections_opened_total reporter=source)
i2=$(lab_metric "$lab" 2 istio_tcp_connections_opened_total reporter=destination)
check "n1-p1 -> n2-p1 through both agents' containers (3 connections, 1 MiB echoed each)" \
	pod_exec "$lab" n1-p1 "$TCPKIT" client --to "$p21:9000" --mode echo --conns 3 --bytes 1M --timeout 30
check "... over an HBONE connection from node 1 to node 2" sh -c \
	"nsenter --net=/run/netns/$lab-n1 curl -fsS http://127.0.0.1:15000/hbone |
		jq -e '[.connections[] | select(.role == \"client\" and .peer == \"$n2:15008\")] | length >= 1' >/dev/null"
o1b=$(lab_metric "$lab" 1 istio_tcp_connections_opened_total reporter=source)
i2b=$(lab_metric "$lab" 2 istio_tcp_connections_opened_total reporter=destination)
check "... counted on :15020/metrics by node 1 (source: $o1 -> $o1b) and node 2 (destination: $i2 -> $i2b)" \
	test "$o1b" -ge $((o1 + 3)) -a "$i2b" -ge $((i2 + 3))
check "n1-p1 -> n2-p1 over IPv6 through both agents' containers (the IPv6 rule and route are in place)" sh -c \
	"nsenter --net=/run/netns/$lab-n1-p1 '$TCPKIT' client --to '[$p21v6]:9001' --mode echo --conns 2 \
		--bytes 64K --timeout 30 && nsenter --net=/run/netns/$lab-n1 curl -fsS http://127.0.0.1:15000/bpf |
		jq -e '.rule.ipv6 == true and .counters.captured_outbound_ipv6 > 0' >/dev/null"
# spans FILE JQ: waits (LAB_WAIT_S) until JQ (over FILE's spans as one array) is true.
spans() { lab_until jq -se "$2" "$1"; }
check "... spans: node 1's CLIENT 'outbound', node 2's SERVER 'inbound' its child, over OTLP/gRPC" \
	spans "$work/spans.jsonl" "[.[] | select(.name == \"outbound\" and .kind == 3 and
		.resource[\"k8s.node.name\"] == \"$lab-n1\")] as \$o | [.[] | select(.name == \"inbound\" and
		.kind == 2 and .resource[\"k8s.node.name\"] == \"$lab-n2\")] as \$i |
		any(\$o[]; . as \$x | any(\$i[]; .trace_id == \$x.trace_id and .parent_span_id == \$x.span_id))"

# ----------------------------------------------------------------------------- the waypoint
mkdir -p "$work/wp/config"
jq --argjson ca "$wp_ca" '.ca = $ca | .tracing.schedule_delay_ms = 200' "$LAB_WAYPOINT_CONFIG" \
	>"$work/wp/config/waypoint.json"
start_waypoint() {
	local c=$lab-waypoint
	run_args 1 Deployment waypoint --source "config=$work/wp/config" --source "root-cert=$work/root" \
		--source "istio-token=$LAB_DIR/token-waypoint" || return 1
	CONTAINERS+=("$c")
	$ENGINE run -d --name "$c" "${ARGS[@]}" >/dev/null || return 1
	ready "$LAB_WAYPOINT_NS" "http://$LAB_WAYPOINT_IP:15021/healthz/ready" "$c"
}
if start_waypoint; then ok "waypoint: its container runs as the Deployment says (uid 65532, no capabilities) and becomes ready"
else fail "waypoint: its container runs as the Deployment says (uid 65532, no capabilities) and becomes ready"; fi
wp_pid=$($ENGINE inspect -f '{{.State.Pid}}' "$lab-waypoint" 2>/dev/null || echo 0)
issued_more() { # N: waits (LAB_WAIT_S) until ambit-ca has issued more than N certificates
	lab_until eval "[ \"\$(ca_issued)\" -gt $1 ]"
}
check "waypoint: its certificate from the lab's ambit-ca, asked with its own token" issued_more "$issued"
check "waypoint: runs as uid 65532 with no capabilities" \
	test "$(awk '/^Uid/ { print $2 }' "/proc/$wp_pid/status" 2>&1) $(caps_of "$lab-waypoint" 2>&1)" = "65532 0000000000000000"
http_via_waypoint() {
	local out
	out=$(pod_exec "$lab" n1-p2 curl -sS -m 10 -w '\n%{http_code}' "http://$LAB_SVC_APP_1_VIP/whoami") &&
		[ "$(printf '%s\n' "$out" | tail -n 1)" = 200 ] &&
		head -n1 <<<"$out" | grep -Eq "^$lab-n[12]-p1\$"
}
check "waypoint: n1-p2 -> service app-1 (use-waypoint) answers 200 from an app-1 pod" http_via_waypoint
check "... the agent sent it to the waypoint" sh -c \
	"$ENGINE logs $lab-ambitd-1 2>&1 | grep -q '\"dst.hbone_addr\":\"$LAB_WAYPOINT_IP:15008\"'"
check "... counted on the waypoint's :15020/metrics (istio_requests_total, code 200)" sh -c \
	"nsenter --net=/run/netns/$LAB_WAYPOINT_NS curl -fsS http://$LAB_WAYPOINT_IP:15020/metrics |
		grep '^istio_requests_total{' | grep -q 'response_code=\"200\"'"
check "... and its SERVER span exported over OTLP" spans "$work/wspans.jsonl" \
	'any(.[]; .kind == 2 and (.attributes["http.response.status_code"] | tostring) == "200")'

# --------------------------------------------------------- SIGTERM: drain, exit, --cleanup
# One connection n1-p1 -> n2-p1 is open (an echo round done) when node 2's container gets
# SIGTERM; it must still echo after, then the container exits 0 once it is closed.
cat >"$work/held.py" <<'PY'
# held.py HOST PORT GO: an echo round, then waits for the file GO, another round, then closes.
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
def rt(m):
    s.sendall(m)
    got = b""
    while len(got) < len(m):
        d = s.recv(len(m) - len(got))
        if not d:
            sys.exit("EOF")
        got += d
    if got != m:
        sys.exit("wrong echo")
rt(b"before " * 100)
print("first", flush=True)
while not os.path.exists(sys.argv[3]):
    time.sleep(0.05)
rt(b"after " * 100)
s.close()
print("done", flush=True)
PY
pod_spawn "$lab" n1-p1 "$work/held.log" python3 "$work/held.py" "$p21" 9000 "$work/go"
held=$SPAWNED_PID
check "drain: a connection through node 2 is open" lab_until grep -q first "$work/held.log"
$ENGINE kill --signal TERM "$lab-ambitd-2" >/dev/null
sleep 1
check "drain: node 2's container is still running after SIGTERM while it is open" \
	test "$($ENGINE inspect -f '{{.State.Running}}' "$lab-ambitd-2")" = true
check "drain: ... no longer listening on 15008 (new HBONE connections go elsewhere)" \
	lab_until test -z "$(nsenter --net="/run/netns/$lab-n2" ss -Hltn 'sport = :15008')"
touch "$work/go"
rc=0
wait "$held" || rc=$?
check "drain: the open connection still echoes after SIGTERM, then closes cleanly" \
	sh -c "test $rc -eq 0 && grep -q done '$work/held.log'"
exited() { # CONTAINER: its exit status once stopped (waits up to 15 s)
	for _ in $(seq 150); do
		[ "$($ENGINE inspect -f '{{.State.Running}}' "$1")" = false ] && break
		sleep 0.1
	done
	$ENGINE inspect -f '{{.State.Running}} {{.State.ExitCode}}' "$1"
}
check "drain: node 2's container then exits with status 0" test "$(exited "$lab-ambitd-2")" = "false 0"
check "drain: ... having logged the drain" sh -c "$ENGINE logs $lab-ambitd-2 2>&1 | grep -q 'draining'"

# cleanup_in_container K: `ambitd --cleanup` from the image with the DaemonSet's mounts.
cleanup_in_container() {
	agent_args "$1" || return 1
	timeout 60 $ENGINE run --rm "${ARGS[@]}" --cleanup
}
for k in 2 1; do
	if [ "$k" = 1 ]; then
		$ENGINE kill --signal TERM "$lab-ambitd-1" >/dev/null
		check "node 1: SIGTERM stops its container with status 0" test "$(exited "$lab-ambitd-1")" = "false 0"
	fi
	st=$(capture_state "$lab" "$k" "n$k-p1")
	for what in tc qdisc rule route pin fdb sysctl; do
		check "node $k: capture stays in place after the agent stops: $what" grep -q "^$what" <<<"$st"
	done
	check "node $k: ambitd --cleanup in a container as the DaemonSet runs it" cleanup_in_container "$k"
	st=$(capture_state "$lab" "$k" "n$k-p1")
	check "node $k: ... nothing left (tc filters, qdiscs, rule, routes, pins, FDB, tcp_early_demux 1)" test -z "$st"
	[ -z "$st" ] || printf '%s\n' "$st" | head -n 20 | sed 's/^/#   /'
done
$ENGINE kill --signal TERM "$lab-waypoint" >/dev/null 2>&1 || true
check "waypoint: SIGTERM stops its container with status 0" test "$(exited "$lab-waypoint")" = "false 0"

lab_result
