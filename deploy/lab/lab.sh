#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# lab.sh: a Kubernetes-like cluster made of network namespaces on one machine (nodes on an
# underlay bridge, pods as namespaces behind veths, routed or bridge CNI), plus the CA, workloads
# file and per-node agent configs that ambitd reads. See deploy/lab/README.md.
set -euo pipefail

LAB_ROOT=${AMBIT_LAB_ROOT:-/run/ambit-lab}
BPF_ROOT=/sys/fs/bpf
UL_PREFIX=172.30.0       # underlay /24: bridge .1, node K .(10+K)
POD_PREFIX=10.244        # node K's pods: 10.244.K.0/24, pod M .(10+M)
SVC_PREFIX=10.96         # service VIPs: solo 10.96.0.10, app-M 10.96.1.M
ROUTED_GW=169.254.1.1    # Calico's link-local gateway inside routed pods
ROUTED_MAC=ee:ee:ee:ee:ee:ee
# --ipv6 (dual stack): underlay fd00:172:30::/64 (bridge ::1, node K ::(10+K)), node K's pods
# fd00:10:244:K::/64 (pod M ::(10+M), the gateway of bridge pods ::1); routed pods use the host
# veth's link-local (EUI-64 of ROUTED_MAC) as gateway, as Calico does.
UL6_PREFIX=fd00:172:30:
POD6_PREFIX=fd00:10:244
ROUTED_GW6=fe80::ecee:eeff:feee:eeee
LAB_V6=""                # set by `up --ipv6`
LAB_CA_MODE=${AMBIT_LAB_CA:-ambit-ca}  # `up --ca`: ambit-ca signs, or (local) each agent does
LAB_TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../tests/tools" 2>/dev/null && pwd || echo /nonexistent)
MAX_NODES=20
MAX_PODS=200

prog=lab.sh
die() { echo "$prog: $*" >&2; exit 1; }
usage_die() { echo "$prog: $*" >&2; echo "run '$prog help' for usage" >&2; exit 2; }
log() { [ -n "${LAB_QUIET:-}" ] || echo "$prog: $*" >&2; }

usage() {
	cat <<USAGE
usage: $prog up NAME --nodes N --pods M --cni routed|bridge [--enroll all|none|LIST] [--waypoint]
                [--ipv6] [--ca ambit-ca|local]
       $prog down NAME
       $prog env NAME
       $prog exec NAME TARGET -- CMD [ARG...]
       $prog resources NAME [FILE]
       $prog list
NAME: lowercase letters, digits and dashes (at most 20), e.g. "demo" or "t-routed".
TARGET: ul (the underlay), nK (node K), nK-pM (pod M on node K), or a full namespace name.
--enroll LIST: comma-separated entries nK-pM (one pod), nK (every pod of node K) or pM (pod M
of every node); default all. Files go to $LAB_ROOT/NAME/ (lab.env lists every name and IP).
--waypoint: one more pod on node 1 (nK-pM with M = pods + 1, not enrolled) as the pod of a
waypoint Service "waypoint" (VIP $SVC_PREFIX.0.20, port 15008), named by service app-1
(istio.io/use-waypoint); waypoint.json is its ambit-waypoint config (LAB_WAYPOINT_* in lab.env).
--ipv6: dual stack (default: IPv4 only, IPv6 disabled everywhere): nodes get ${UL6_PREFIX}:(10+K)
on the underlay, pods ${POD6_PREFIX}:K::(10+M) besides their IPv4 (both in workloads.json; *_IP6,
*_CIDR6 and LAB_IPV6=1 in lab.env). Services and HBONE between nodes stay IPv4.
--ca: where workload certificates come from. ambit-ca (default): the agents and the waypoint
hold no CA key; ambit-ca (config ca.json, run in the underlay on $UL_PREFIX.1:15012 by
tests/lab/lib.sh's lab_start_ca) signs for them, and each gets a service account token
(token-nK, token-waypoint: ES256 JWTs of the lab's issuer key, audience istio-ca).
local: development mode, each agent signs with ca.key itself.
resources: replaces the Istio objects (\`resources\`: AuthorizationPolicy, PeerAuthentication,
...) of the lab's workloads.json with the JSON array in FILE (default: stdin; [] clears them),
atomically; the agents pick it up at their next poll of the file (about a second).
USAGE
}

check_name() {
	local n=$1
	[[ $n =~ ^[a-z][a-z0-9-]{0,19}$ ]] ||
		usage_die "bad lab name '$n' (lowercase letters, digits, dashes; at most 20; starts with a letter)"
	[[ $n =~ -(n[0-9]+|p[0-9]+|ul)(-|$) ]] &&
		usage_die "bad lab name '$n': parts like -nK, -pM and -ul are the lab's own namespace suffixes"
	[[ $n == *- ]] && usage_die "bad lab name '$n': ends with a dash"
	return 0
}

need_root() {
	[ "$(id -u)" -eq 0 ] || die "must run as root (creates network namespaces)"
	local t
	for t in ip nsenter openssl jq sha1sum; do
		command -v "$t" >/dev/null || die "'$t' not found (apt-get install iproute2 util-linux openssl jq)"
	done
}

# Runs a command inside a namespace's network stack only. nsenter, not `ip netns exec`: that one
# remounts /sys, which hides the shared bpffs at /sys/fs/bpf that the agents pin to.
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" -- "$@"; }

# Namespaces of lab NAME that exist now (found by name, so half-made labs are found too).
lab_namespaces() {
	local name=$1
	ip netns list 2>/dev/null | awk '{print $1}' |
		grep -E "^${name}-(ul|n[0-9]+|n[0-9]+-p[0-9]+)\$" || true
}

host_if() { # NS STYLE: the host-side veth name, like the CNI's (hash of the pod's namespace)
	local h
	h=$(printf '%s' "$1" | sha1sum | cut -c1-11)
	if [ "$2" = routed ]; then echo "cali$h"; else echo "veth${h:0:8}"; fi
}

# ---------------- down ----------------

# Kills the processes in the lab's namespaces: those recorded in pids (if still inside one of
# them; a recycled pid is left alone) and any other found there. TERM, then KILL after 5 s.
kill_lab_processes() {
	local name=$1 dir=$LAB_ROOT/$1 ns pid ino inodes=" " tries
	local -a found=() victims=() alive=()
	for ns in $(lab_namespaces "$name"); do
		inodes+="$(stat -L -c %i "/run/netns/$ns" 2>/dev/null || true) "
		mapfile -t -O "${#found[@]}" found < <(ip netns pids "$ns" 2>/dev/null || true)
	done
	if [ -f "$dir/pids" ]; then
		while read -r pid _; do
			[[ $pid =~ ^[0-9]+$ ]] || continue
			ino=$(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null) || continue
			[[ $inodes == *" $ino "* ]] && found+=("$pid")
		done <"$dir/pids"
	fi
	[ ${#found[@]} -gt 0 ] || return 0
	mapfile -t victims < <(printf '%s\n' "${found[@]}" | grep -E '^[0-9]+$' | sort -un)
	[ ${#victims[@]} -gt 0 ] || return 0
	log "stopping processes in lab $name: ${victims[*]}"
	kill -TERM "${victims[@]}" 2>/dev/null || true
	for ((tries = 0; tries < 50; tries++)); do
		alive=()
		for pid in "${victims[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
		[ ${#alive[@]} -eq 0 ] && return 0
		sleep 0.1
	done
	log "killing processes that ignored SIGTERM: ${alive[*]}"
	kill -KILL "${alive[@]}" 2>/dev/null || true
	sleep 0.2
}

do_down() {
	local name=$1 dir=$LAB_ROOT/$1 ns p
	kill_lab_processes "$name"
	# Pods first, then nodes, then the underlay; each namespace takes its veths with it.
	for ns in $(lab_namespaces "$name" | grep -E -- '-p[0-9]+$'; lab_namespaces "$name" |
		grep -E -- '-n[0-9]+$'; lab_namespaces "$name" | grep -E -- '-ul$'); do
		ip netns del "$ns" 2>/dev/null || ip netns del "$ns" ||
			die "could not delete namespace $ns"
	done
	# BPF objects the agents pinned under the pin_dir the lab gave them.
	for p in "$BPF_ROOT/ambit-$name"-n*; do
		[[ -e $p && $(basename "$p") =~ ^ambit-${name}-n[0-9]+$ ]] || continue
		log "removing BPF pins $p"
		rm -rf -- "$p"
	done
	[ -d "$dir" ] && rm -rf -- "$dir"
	local left
	left=$(lab_namespaces "$name")
	[ -z "$left" ] || die "namespaces still present after down: $left"
	return 0
}

# ---------------- up ----------------

parse_enroll() { # SPEC NODES PODS -> prints the enrolled pods as "nK-pM" lines
	local spec=$1 nodes=$2 pods=$3 e k m
	case $spec in
	all) for k in $(seq "$nodes"); do for m in $(seq "$pods"); do echo "n$k-p$m"; done; done ;;
	none) ;;
	*)
		IFS=, read -r -a items <<<"$spec"
		for e in "${items[@]}"; do
			e=${e#"$name"-}
			if [[ $e =~ ^n([0-9]+)-p([0-9]+)$ ]]; then
				k=${BASH_REMATCH[1]} m=${BASH_REMATCH[2]}
				((k >= 1 && k <= nodes && m >= 1 && m <= pods)) || usage_die "--enroll: no pod '$e' in this lab"
				echo "n$k-p$m"
			elif [[ $e =~ ^n([0-9]+)$ ]]; then
				k=${BASH_REMATCH[1]}
				((k >= 1 && k <= nodes)) || usage_die "--enroll: no node '$e' in this lab"
				for m in $(seq "$pods"); do echo "n$k-p$m"; done
			elif [[ $e =~ ^p([0-9]+)$ ]]; then
				m=${BASH_REMATCH[1]}
				((m >= 1 && m <= pods)) || usage_die "--enroll: no pod index '$e' in this lab"
				for k in $(seq "$nodes"); do echo "n$k-p$m"; done
			else
				usage_die "--enroll: bad entry '$e' (want all, none, or a list of nK-pM, nK, pM)"
			fi
		done | sort -u
		;;
	esac
}

make_ca() {
	local dir=$1 name=$2 cnf
	cnf=$(mktemp)
	cat >"$cnf" <<CNF
[req]
distinguished_name = dn
x509_extensions = v3
prompt = no
[dn]
O = ambit-lab
CN = ambit lab $name root CA
[v3]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
CNF
	(umask 077 && openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$dir/ca.key" -out "$dir/ca.crt" -days 30 -config "$cnf" 2>"$dir/openssl.err") ||
		{ rm -f "$cnf"; die "openssl could not make the lab CA: $(tail -n1 "$dir/openssl.err")"; }
	rm -f "$cnf" "$dir/openssl.err"
	chmod 644 "$dir/ca.crt"
}

sysctls() { # NS KEY=VAL... (IPv6 keys may be missing on kernels without IPv6: ignore those)
	local ns=$1; shift
	in_ns "$ns" sysctl -qw "$@" >/dev/null
}

make_node() { # NAME K CNI NODES
	local name=$1 k=$2 cni=$3 nodes=$4 ns="$1-n$2" ul="$1-ul" j
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	sysctls "$ns" net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
		net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.all.route_localnet=1 \
		net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="10000 65000" \
		net.ipv4.ip_local_reserved_ports="15000-15021"	# the agent's ports, as a node keeps them
	if [ -n "$LAB_V6" ]; then
		# No duplicate address detection: addresses are usable at once.
		sysctls "$ns" net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
			net.ipv6.conf.all.forwarding=1 net.ipv6.conf.all.accept_dad=0 \
			net.ipv6.conf.default.accept_dad=0
	else
		in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
			>/dev/null 2>&1 || true
	fi
	ip -n "$ul" link add "n$k" type veth peer name eth0 netns "$ns"
	ip -n "$ul" link set "n$k" master underlay up
	ip -n "$ns" addr add "$UL_PREFIX.$((10 + k))/24" dev eth0
	[ -z "$LAB_V6" ] || ip -n "$ns" addr add "$UL6_PREFIX:$((10 + k))/64" dev eth0 nodad
	ip -n "$ns" link set eth0 up
	if [ "$cni" = bridge ]; then
		ip -n "$ns" link add cni0 type bridge
		ip -n "$ns" addr add "$POD_PREFIX.$k.1/24" dev cni0
		[ -z "$LAB_V6" ] || ip -n "$ns" addr add "$POD6_PREFIX:$k::1/64" dev cni0 nodad
		ip -n "$ns" link set cni0 up
	fi
	for j in $(seq "$nodes"); do
		[ "$j" -eq "$k" ] && continue
		ip -n "$ns" route add "$POD_PREFIX.$j.0/24" via "$UL_PREFIX.$((10 + j))" dev eth0
		[ -z "$LAB_V6" ] ||
			ip -n "$ns" -6 route add "$POD6_PREFIX:$j::/64" via "$UL6_PREFIX:$((10 + j))" dev eth0
	done
}

make_pod() { # NAME K M CNI
	local name=$1 k=$2 m=$3 cni=$4 node="$1-n$2" ns="$1-n$2-p$3" ip="$POD_PREFIX.$2.$((10 + $3))" hif
	local ip6="$POD6_PREFIX:$2::$((10 + $3))"
	hif=$(host_if "$ns" "$cni")
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	sysctls "$ns" net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
		net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="10000 65000"
	if [ -n "$LAB_V6" ]; then
		sysctls "$ns" net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
			net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
	else
		in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
			>/dev/null 2>&1 || true
	fi
	ip -n "$node" link add "$hif" type veth peer name eth0 netns "$ns"
	if [ "$cni" = routed ]; then
		# Calico: the host veth has no IP and answers ARP for the pod's gateway (proxy_arp); the
		# pod has a /32 and a default route via a link-local gateway; the node routes the /32
		# to the veth. The pod's neighbour entry for the gateway is static so that the
		# gateway resolves whatever the node's own routes are.
		ip -n "$node" link set "$hif" address "$ROUTED_MAC"
		ip -n "$node" link set "$hif" up
		sysctls "$node" "net.ipv4.conf.$hif.proxy_arp=1" "net.ipv4.conf.$hif.rp_filter=0"
		ip -n "$node" route add "$ip/32" dev "$hif" scope link
		ip -n "$ns" addr add "$ip/32" dev eth0
		ip -n "$ns" link set eth0 up
		ip -n "$ns" route add "$ROUTED_GW" dev eth0 scope link
		ip -n "$ns" neigh replace "$ROUTED_GW" lladdr "$ROUTED_MAC" dev eth0 nud permanent
		ip -n "$ns" route add default via "$ROUTED_GW" dev eth0
		if [ -n "$LAB_V6" ]; then
			ip -n "$node" -6 route add "$ip6/128" dev "$hif"
			ip -n "$ns" addr add "$ip6/128" dev eth0 nodad
			ip -n "$ns" -6 neigh replace "$ROUTED_GW6" lladdr "$ROUTED_MAC" dev eth0 nud permanent
			ip -n "$ns" -6 route add default via "$ROUTED_GW6" dev eth0
		fi
	else
		# flannel: host veths enslaved to cni0 (10.244.K.1/24), pods default-route via it.
		ip -n "$node" link set "$hif" master cni0 up
		ip -n "$ns" addr add "$ip/24" dev eth0
		ip -n "$ns" link set eth0 up
		ip -n "$ns" route add default via "$POD_PREFIX.$k.1" dev eth0
		if [ -n "$LAB_V6" ]; then
			ip -n "$ns" addr add "$ip6/64" dev eth0 nodad
			ip -n "$ns" -6 route add default via "$POD6_PREFIX:$k::1" dev eth0
		fi
	fi
}

# The service-account issuer of the lab (an ES256 key pair, as kube-apiserver's) and a projected
# token per node agent (ambit-system/ambit on node K) and for the waypoint (default/waypoint on
# node 1), audience istio-ca, valid 30 days like the lab CA.
make_tokens() { # NAME NODES WAYPOINT_POD_INDEX
	local name=$1 nodes=$2 wpm=$3 dir=$LAB_ROOT/$1 k
	local mint="$LAB_TOOLS/mint_token.py"
	(umask 077 && python3 "$mint" keygen --alg ES256 --key "$dir/issuer.key" --pub "$dir/issuer.pub") ||
		die "cannot make the lab's token issuer key ($mint, python3-cryptography)"
	for k in $(seq "$nodes"); do
		python3 "$mint" mint --key "$dir/issuer.key" --sub ambit-system:ambit --node "$name-n$k" \
			--pod "ambit-$name-n$k" --aud istio-ca --exp-in 2592000 >"$dir/token-n$k" ||
			die "cannot mint node $k's token"
	done
	python3 "$mint" mint --key "$dir/issuer.key" --sub default:waypoint --node "$name-n1" \
		--pod "$name-n1-p$wpm" --aud istio-ca --exp-in 2592000 >"$dir/token-waypoint" ||
		die "cannot mint the waypoint's token"
}

write_files() { # NAME NODES PODS CNI ENROLLED... (WAYPOINT=1: add the waypoint pod and Service)
	local name=$1 nodes=$2 pods=$3 cni=$4; shift 4
	local wpm=$((pods + 1)) wpip="$POD_PREFIX.1.$((10 + pods + 1))"
	local enrolled=" $* " dir=$LAB_ROOT/$name k m pod app en wl="" sv="" nd="" env
	for k in $(seq "$nodes"); do
		nd+=$(printf '{"name":"%s","address":"%s"}\n' "$name-n$k" "$UL_PREFIX.$((10 + k))")
		for m in $(seq "$pods"); do
			pod="$name-n$k-p$m" app="app-$m" en=false
			[[ $enrolled == *" n$k-p$m "* ]] && en=true
			local addrs="$POD_PREFIX.$k.$((10 + m))"
			[ -z "$LAB_V6" ] || addrs+="\",\"$POD6_PREFIX:$k::$((10 + m))"
			wl+=$(printf '{"uid":"default/%s","name":"%s","namespace":"default","service_account":"%s","node":"%s","addresses":["%s"],"canonical_service":"%s","labels":{"app":"%s","lab.ambit.io/node":"n%s"},"enrolled":%s,"waypoint":null}\n' \
				"$pod" "$pod" "$app" "$name-n$k" "$addrs" "$app" "$app" "$k" "$en")
		done
	done
	if [ -n "${WAYPOINT:-}" ]; then
		wl+=$(printf '{"uid":"default/waypoint-%s","name":"waypoint-%s","namespace":"default","service_account":"waypoint","node":"%s","addresses":["%s"],"canonical_service":"waypoint","labels":{"gateway.networking.k8s.io/gateway-name":"waypoint"},"enrolled":false,"waypoint":null}\n' \
			"$name-n1-p$wpm" "$name-n1-p$wpm" "$name-n1" "$wpip")
		sv+=$(printf '{"name":"waypoint","namespace":"default","addresses":["%s"],"selector":{"gateway.networking.k8s.io/gateway-name":"waypoint"},"ports":[{"port":15008,"target_port":15008,"name":"mesh"}],"waypoint":null}\n' \
			"$SVC_PREFIX.0.20")
	fi
	local ports='[{"port":80,"target_port":8080,"name":"http"},{"port":9000,"target_port":9000,"name":"tcp"}]'
	sv+=$(printf '{"name":"solo","namespace":"default","addresses":["%s"],"selector":{"app":"app-1","lab.ambit.io/node":"n%s"},"ports":%s,"waypoint":null}\n' \
		"$SVC_PREFIX.0.10" "$nodes" "$ports")
	for m in $(seq "$pods"); do
		sv+=$(printf '{"name":"app-%s","namespace":"default","addresses":["%s"],"selector":{"app":"app-%s"},"ports":%s,"waypoint":null}\n' \
			"$m" "$SVC_PREFIX.1.$m" "$m" "$ports")
	done
	jq -n --slurpfile n <(echo "$nd") --slurpfile w <(echo "$wl") --slurpfile s <(echo "$sv") \
		--arg wp "${WAYPOINT:-}" '{nodes: $n, workloads: $w, services: ($s | map(
			if $wp != "" and .name == "app-1" then .waypoint = {name: "waypoint", namespace: "default"}
			else . end))}' >"$dir/workloads.json.tmp"
	mv "$dir/workloads.json.tmp" "$dir/workloads.json"

	# Where certificates come from: ambit-ca (a key only it holds, tokens for the others) or,
	# in development mode, each agent's own copy of the key.
	local ca_addr="https://$UL_PREFIX.1:15012"
	if [ "$LAB_CA_MODE" = ambit-ca ]; then
		make_tokens "$name" "$nodes" "$wpm"
		jq -n --arg dir "$dir" --arg ip "$UL_PREFIX.1" --arg level "${AMBIT_LAB_LOG_LEVEL:-info}" '{
			listen: ($ip + ":15012"), trust_domain: "cluster.local",
			ca: { cert: ($dir + "/ca.crt"), key: ($dir + "/ca.key") },
			server_names: [$ip],
			discovery: { source: "file", file: ($dir + "/workloads.json") },
			tokens: { issuer_keys: [($dir + "/issuer.pub")], audience: "istio-ca",
				node_accounts: ["ambit-system/ambit"] },
			admin_address: "127.0.0.1:15014",
			log: { level: $level, format: "json" }
		}' >"$dir/ca.json"
	fi
	# ca_block TOKEN: the "ca" object of an agent or waypoint config.
	ca_block() {
		if [ "$LAB_CA_MODE" = ambit-ca ]; then
			jq -n --arg a "$ca_addr" --arg c "$dir/ca.crt" --arg t "$1" \
				'{address: $a, cert: $c, token_file: $t}'
		else
			jq -n --arg c "$dir/ca.crt" --arg k "$dir/ca.key" '{cert: $c, key: $k}'
		fi
	}
	for k in $(seq "$nodes"); do
		jq -n --arg node "$name-n$k" --arg ip "$UL_PREFIX.$((10 + k))" --arg dir "$dir" \
			--arg pin "$BPF_ROOT/ambit-$name-n$k" --arg level "${AMBIT_LAB_LOG_LEVEL:-info}" \
			--argjson ca "$(ca_block "$dir/token-n$k")" '{
			node_name: $node, node_ip: $ip, trust_domain: "cluster.local",
			ca: $ca,
			discovery: { source: "file", file: ($dir + "/workloads.json") },
			tracing: { sampling: 100.0,
				custom_tags: { cluster_name: "lab", environment: "test" },
				otlp: { endpoint: "http://127.0.0.1:4317", protocol: "grpc" } },
			log: { level: $level, format: "json" },
			redirect: { pin_dir: $pin }
		}' >"$dir/node$k.json"
	done

	if [ -n "${WAYPOINT:-}" ]; then
		jq -n --arg node "$name-n1" --arg ip "$wpip" --arg dir "$dir" --arg level "${AMBIT_LAB_LOG_LEVEL:-info}" \
			--argjson ca "$(ca_block "$dir/token-waypoint")" '{
			name: "waypoint", namespace: "default", node_name: $node, node_ip: $ip,
			trust_domain: "cluster.local", load_balancing: "round_robin",
			ca: $ca,
			discovery: { source: "file", file: ($dir + "/workloads.json") },
			tracing: { sampling: 100.0,
				custom_tags: { cluster_name: "lab", environment: "test" },
				otlp: { endpoint: "http://127.0.0.1:4317", protocol: "grpc" } },
			log: { level: $level, format: "json" }
		}' >"$dir/waypoint.json"
	fi
	env="$dir/lab.env.tmp"
	{
		echo "# ambit lab $name: source this file (set -a; . lab.env; set +a)"
		echo "LAB_NAME=$name"
		echo "LAB_DIR=$dir"
		echo "LAB_CNI=$cni"
		echo "LAB_NODES=$nodes"
		echo "LAB_PODS=$pods"
		echo "LAB_NAMESPACE=default"
		echo "LAB_TRUST_DOMAIN=cluster.local"
		echo "LAB_CA_CERT=$dir/ca.crt"
		echo "LAB_CA_KEY=$dir/ca.key"
		echo "LAB_CA_MODE=$LAB_CA_MODE"
		if [ "$LAB_CA_MODE" = ambit-ca ]; then
			echo "LAB_CA_CONFIG=$dir/ca.json"
			echo "LAB_CA_ADDRESS=$ca_addr"
			echo "LAB_CA_ISSUER_KEY=$dir/issuer.key"
		fi
		echo "LAB_WORKLOADS=$dir/workloads.json"
		echo "LAB_PIDS=$dir/pids"
		echo "LAB_UL_NS=$name-ul"
		echo "LAB_UL_BRIDGE=underlay"
		echo "LAB_UL_IP=$UL_PREFIX.1"
		echo "LAB_UL_CIDR=$UL_PREFIX.0/24"
		echo "LAB_POD_CIDR=$POD_PREFIX.0.0/16"
		echo "LAB_SERVICE_CIDR=$SVC_PREFIX.0.0/16"
		echo "LAB_NODE_LIST=\"$(seq -s ' ' "$nodes")\""
		local plist="" m2
		for k in $(seq "$nodes"); do for m2 in $(seq "$pods"); do plist+="n$k-p$m2 "; done; done
		echo "LAB_POD_LIST=\"${plist% }\""
		echo "LAB_ENROLLED_LIST=\"$*\""
		[ -z "$LAB_V6" ] || echo "LAB_IPV6=1"
		for k in $(seq "$nodes"); do
			local N="LAB_N$k"
			echo "${N}_NAME=$name-n$k"
			echo "${N}_NS=$name-n$k"
			echo "${N}_IP=$UL_PREFIX.$((10 + k))"
			echo "${N}_DEV=eth0"
			echo "${N}_CIDR=$POD_PREFIX.$k.0/24"
			if [ -n "$LAB_V6" ]; then
				echo "${N}_IP6=$UL6_PREFIX:$((10 + k))"
				echo "${N}_CIDR6=$POD6_PREFIX:$k::/64"
			fi
			if [ "$cni" = bridge ]; then echo "${N}_GW=$POD_PREFIX.$k.1"; echo "${N}_BRIDGE=cni0"
			else echo "${N}_GW=$ROUTED_GW"; echo "${N}_BRIDGE="; fi
			echo "${N}_CONFIG=$dir/node$k.json"
			echo "${N}_LOG=$dir/agent$k.log"
			echo "${N}_PIN_DIR=$BPF_ROOT/ambit-$name-n$k"
			for m in $(seq "$pods"); do
				local P="${N}_P$m" pns="$name-n$k-p$m"
				en=false
				[[ $enrolled == *" n$k-p$m "* ]] && en=true
				echo "${P}_NAME=$pns"
				echo "${P}_NS=$pns"
				echo "${P}_IP=$POD_PREFIX.$k.$((10 + m))"
				[ -z "$LAB_V6" ] || echo "${P}_IP6=$POD6_PREFIX:$k::$((10 + m))"
				echo "${P}_HOSTIF=$(host_if "$pns" "$cni")"
				echo "${P}_UID=default/$pns"
				echo "${P}_APP=app-$m"
				echo "${P}_SA=app-$m"
				echo "${P}_ENROLLED=$en"
			done
		done
		echo "LAB_SERVICES=\"solo$(for m in $(seq "$pods"); do printf ' app-%s' "$m"; done)\""
		echo "LAB_SVC_SOLO_VIP=$SVC_PREFIX.0.10"
		echo "LAB_SVC_SOLO_ENDPOINTS=\"$POD_PREFIX.$nodes.11\""
		for m in $(seq "$pods"); do
			echo "LAB_SVC_APP_${m}_VIP=$SVC_PREFIX.1.$m"
			echo "LAB_SVC_APP_${m}_ENDPOINTS=\"$(for k in $(seq "$nodes"); do printf '%s ' "$POD_PREFIX.$k.$((10 + m))"; done | sed 's/ $//')\""
		done
		echo "LAB_SVC_PORTS=\"80:8080 9000:9000\""
		if [ -n "${WAYPOINT:-}" ]; then
			echo "LAB_WAYPOINT_POD=n1-p$wpm"
			echo "LAB_WAYPOINT_NS=$name-n1-p$wpm"
			echo "LAB_WAYPOINT_IP=$wpip"
			echo "LAB_WAYPOINT_NAME=$name-n1-p$wpm"
			echo "LAB_WAYPOINT_UID=default/waypoint-$name-n1-p$wpm"
			echo "LAB_WAYPOINT_SA=waypoint"
			echo "LAB_WAYPOINT_CONFIG=$dir/waypoint.json"
			echo "LAB_WAYPOINT_SERVICE=app-1"
			echo "LAB_SVC_WAYPOINT_VIP=$SVC_PREFIX.0.20"
		fi
	} >"$env"
	mv "$env" "$dir/lab.env"
}

UP_NAME=""
on_up_exit() {
	local rc=$?
	[ "$rc" -ne 0 ] && [ -n "$UP_NAME" ] || return 0
	echo "$prog: up $UP_NAME failed (exit $rc)" >&2
	if [ -z "${LAB_KEEP_ON_FAIL:-}" ]; then
		echo "$prog: tearing down the half-made lab $UP_NAME" >&2
		(do_down "$UP_NAME") || true
	else
		echo "$prog: kept the half-made lab (LAB_KEEP_ON_FAIL); run: $prog down $UP_NAME" >&2
	fi
	exit "$rc"
}

do_up() {
	local name="" nodes="" pods="" cni="" enroll=all waypoint=""
	[ $# -ge 1 ] || usage_die "up needs a lab NAME"
	name=$1; shift
	check_name "$name"
	while [ $# -gt 0 ]; do
		case $1 in
		--nodes) [ $# -ge 2 ] || usage_die "--nodes needs a value"; nodes=$2; shift 2 ;;
		--pods) [ $# -ge 2 ] || usage_die "--pods needs a value"; pods=$2; shift 2 ;;
		--cni) [ $# -ge 2 ] || usage_die "--cni needs a value"; cni=$2; shift 2 ;;
		--enroll) [ $# -ge 2 ] || usage_die "--enroll needs a value"; enroll=$2; shift 2 ;;
		--waypoint) waypoint=1; shift ;;
		--ipv6) LAB_V6=1; shift ;;
		--ca) [ $# -ge 2 ] || usage_die "--ca needs a value"; LAB_CA_MODE=$2; shift 2 ;;
		*) usage_die "up: unknown argument '$1'" ;;
		esac
	done
	if ! [[ $nodes =~ ^[0-9]+$ ]] || ((nodes < 1 || nodes > MAX_NODES)); then
		usage_die "--nodes: want 1..$MAX_NODES, got '$nodes'"
	fi
	if ! [[ $pods =~ ^[0-9]+$ ]] || ((pods < 1 || pods > MAX_PODS)); then
		usage_die "--pods: want 1..$MAX_PODS, got '$pods'"
	fi
	[[ $cni == routed || $cni == bridge ]] || usage_die "--cni: want routed or bridge, got '$cni'"
	[[ $LAB_CA_MODE == ambit-ca || $LAB_CA_MODE == local ]] ||
		usage_die "--ca: want ambit-ca or local, got '$LAB_CA_MODE'"
	local enrolled
	enrolled=$(parse_enroll "$enroll" "$nodes" "$pods") || exit $?
	need_root

	local dir=$LAB_ROOT/$name
	if [ -d "$dir" ] || [ -n "$(lab_namespaces "$name")" ]; then
		log "lab $name exists: tearing it down first"
		do_down "$name"
	fi
	# From here on, a failure tears down what was made (LAB_KEEP_ON_FAIL=1 keeps it to debug).
	UP_NAME=$name
	trap on_up_exit EXIT
	mkdir -p "$dir"
	: >"$dir/pids"
	printf 'nodes=%s\npods=%s\ncni=%s\n' "$nodes" "$pods" "$cni" >"$dir/state"
	[ -z "$LAB_V6" ] || echo "ipv6=1" >>"$dir/state"

	ip netns add "$name-ul"
	ip -n "$name-ul" link set lo up
	[ -z "$LAB_V6" ] || sysctls "$name-ul" net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
	ip -n "$name-ul" link add underlay type bridge
	ip -n "$name-ul" addr add "$UL_PREFIX.1/24" dev underlay
	[ -z "$LAB_V6" ] || ip -n "$name-ul" addr add "$UL6_PREFIX:1/64" dev underlay nodad
	ip -n "$name-ul" link set underlay up
	local k m
	for k in $(seq "$nodes"); do make_node "$name" "$k" "$cni" "$nodes"; done
	[ "${AMBIT_LAB_FAULT:-}" = after-nodes ] && die "fault injected after the nodes (AMBIT_LAB_FAULT)"
	for k in $(seq "$nodes"); do
		for m in $(seq "$pods"); do make_pod "$name" "$k" "$m" "$cni"; done
	done
	[ -z "$waypoint" ] || make_pod "$name" 1 $((pods + 1)) "$cni"
	make_ca "$dir" "$name"
	# ambit-ca listens on the underlay: the waypoint pod (HBONE-native, not captured) asks it
	# for its certificate, so the underlay routes back to the pod networks.
	if [ "$LAB_CA_MODE" = ambit-ca ]; then
		for k in $(seq "$nodes"); do
			ip -n "$name-ul" route replace "$POD_PREFIX.$k.0/24" via "$UL_PREFIX.$((10 + k))"
		done
	fi
	# shellcheck disable=SC2086
	WAYPOINT=$waypoint write_files "$name" "$nodes" "$pods" "$cni" $enrolled
	trap - EXIT
	log "lab $name up: $nodes nodes x $pods pods, cni $cni${LAB_V6:+, dual stack}, CA $LAB_CA_MODE, enrolled: $(echo $enrolled | wc -w) pods; env in $dir/lab.env"
}

set_resources() { # NAME FILE|-: workloads.json's resources := the array in FILE
	local wl=$LAB_ROOT/$1/workloads.json
	[ -f "$wl" ] || die "no lab '$1' ($wl missing)"
	cat -- "$2" >"$wl.res" || die "cannot read $2"
	jq -se 'length == 1 and (.[0] | type == "array")' "$wl.res" >/dev/null 2>&1 ||
		{ rm -f "$wl.res"; die "resources: $2 is not one JSON array"; }
	# a new file renamed over the old one: an agent never reads half of it
	jq --slurpfile r "$wl.res" '.resources = $r[0]' "$wl" >"$wl.tmp" && mv "$wl.tmp" "$wl"
	rm -f "$wl.res"
}

resolve_target() { # NAME TARGET -> namespace name
	local name=$1 t=$2
	case $t in
	ul | n[0-9]* ) t="$name-$t" ;;
	esac
	[ -e "/run/netns/$t" ] && [[ $t == "$name"-* ]] || die "lab $name has no namespace '$t'"
	echo "$t"
}

main() {
	local cmd=${1:-help}
	[ $# -gt 0 ] && shift
	case $cmd in
	up) do_up "$@" ;;
	down)
		[ $# -eq 1 ] || usage_die "usage: $prog down NAME"
		check_name "$1"; need_root
		do_down "$1"
		log "lab $1 down"
		;;
	env)
		[ $# -eq 1 ] || usage_die "usage: $prog env NAME"
		check_name "$1"
		[ -f "$LAB_ROOT/$1/lab.env" ] || die "no lab '$1' ($LAB_ROOT/$1/lab.env missing)"
		cat "$LAB_ROOT/$1/lab.env"
		;;
	exec)
		[ $# -ge 3 ] || usage_die "usage: $prog exec NAME TARGET -- CMD [ARG...]"
		check_name "$1"
		local ns
		ns=$(resolve_target "$1" "$2")
		shift 2
		[ "${1:-}" = -- ] && shift
		[ $# -ge 1 ] || usage_die "exec: no command"
		exec nsenter --net="/run/netns/$ns" -- "$@"
		;;
	resources)
		[ $# -ge 1 ] && [ $# -le 2 ] || usage_die "usage: $prog resources NAME [FILE]"
		check_name "$1"
		set_resources "$1" "${2:--}"
		;;
	list)
		ls -1 "$LAB_ROOT" 2>/dev/null || true
		;;
	help | -h | --help) usage ;;
	*) usage_die "unknown command '$cmd'" ;;
	esac
}

main "$@"
