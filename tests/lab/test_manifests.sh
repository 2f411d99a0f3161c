#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The Kubernetes manifests: `kubectl kustomize` builds the base and every overlay offline, every
# document validates against the Kubernetes schemas (tests/node/validate_manifests.js, with
# npm's kubernetes-models), each overlay's values landed in the agent's JSON config, and the
# agent's own parser accepts that config (`ambitd --config FILE --check`) when it is built.
set -u
top=${AMBIT_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${AMBIT_BUILD:-build}
case "$build" in /*) ;; *) build=$top/$build ;; esac
node_dir=$top/tests/node
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0

ok() { echo "ok - $1"; passes=$((passes + 1)); }
notok() { echo "not ok - $1${2:+: $2}"; fails=$((fails + 1)); }

if ! command -v kubectl >/dev/null; then
	notok manifests.kubectl "kubectl is not installed (it builds the kustomizations)"
	exit 1
fi
if [ ! -d "$node_dir/node_modules/kubernetes-models" ]; then
	"$node_dir/install.sh" || { notok manifests.npm "tests/node/install.sh failed"; exit 1; }
fi

# A value of the JSON document on stdin: jsonval EXPR (a Python expression over `c`).
jsonval() { python3 -c "import json,sys; c=json.load(sys.stdin); print($1)"; }

# check NAME ACTUAL EXPECTED
check() {
	if [ "$2" = "$3" ]; then ok "$1"; else notok "$1" "got '$2', want '$3'"; fi
}

dirs=(base)
for d in "$top"/kustomize/overlays/*/; do
	dirs+=("overlays/$(basename "$d")")
done

for d in "${dirs[@]}"; do
	name=$(basename "$d")
	out=$tmp/$name.yaml
	if kubectl kustomize "$top/kustomize/$d" >"$out" 2>"$tmp/$name.err"; then
		ok "manifests.build.$name"
	else
		notok "manifests.build.$name" "$(head -n 3 "$tmp/$name.err" | tr '\n' ' ')"
		continue
	fi
	node "$node_dir/validate_manifests.js" --label "manifests.$name" "$out" || true
	for cm in ambit-config/ambitd.json waypoint-config/waypoint.json; do
		f=$tmp/$name.$(basename "$cm")
		if node "$node_dir/validate_manifests.js" --extract "$cm" "$out" >"$f" &&
			python3 -m json.tool "$f" >/dev/null 2>&1; then
			ok "manifests.$name.config.$(basename "$cm")"
		else
			notok "manifests.$name.config.$(basename "$cm")" "missing or not JSON"
			continue
		fi
		check "manifests.$name.$(basename "$cm").discovery" \
			"$(jsonval 'c["discovery"]["source"]' <"$f")" kubernetes
		# Certificates from the CA (CONTRACT.md): an address, the root, a token, no key.
		check "manifests.$name.$(basename "$cm").ca" \
			"$(jsonval '(c["ca"].get("address", ""), "key" in c["ca"], c["ca"]["cert"], c["ca"]["token_file"])' <"$f")" \
			"('https://ambit-ca.ambit-system.svc:15012', False, '/etc/ambit/root/root-cert.pem', '/var/run/secrets/tokens/istio-token')"
	done
	# No DaemonSet (nor the waypoint) mounts a Secret; only the CA's own Deployment may.
	secrets=$(NODE_PATH=$node_dir/node_modules node -e '
		const y = require("js-yaml"), fs = require("fs");
		const out = [];
		for (const d of y.loadAll(fs.readFileSync(process.argv[1], "utf8"))) {
			if (!d || !["DaemonSet", "Deployment"].includes(d.kind)) continue;
			const ps = d.spec.template.spec;
			for (const v of ps.volumes || [])
				if (v.secret || (v.projected && (v.projected.sources || []).some((s) => s.secret)))
					out.push(`${d.kind}/${d.metadata.name}:${v.name}`);
		}
		console.log(out.filter((x) => !x.startsWith("Deployment/ambit-ca:")).join(",") || "none");' "$out")
	check "manifests.$name.no_ca_key_on_nodes" "$secrets" none
done

# The istiod overlay: agents and waypoints ask istiod and trust its root ConfigMap.
if [ -s "$tmp/istiod.yaml" ]; then
	istiod=$(NODE_PATH=$node_dir/node_modules node -e '
		const y = require("js-yaml"), fs = require("fs");
		const out = [];
		for (const d of y.loadAll(fs.readFileSync(process.argv[1], "utf8"))) {
			if (!d || !["DaemonSet", "Deployment"].includes(d.kind) || d.metadata.name === "ambit-ca") continue;
			const ps = d.spec.template.spec;
			const env = (ps.containers[0].env || []).find((e) => e.name === "CA_ADDRESS");
			const root = (ps.volumes || []).find((v) => v.name === "root-cert");
			out.push(`${d.kind}:${env && env.value}:${root && root.configMap && root.configMap.name}`);
		}
		console.log(out.sort().join(","));' "$tmp/istiod.yaml")
	check manifests.istiod.ca "$istiod" \
		"DaemonSet:https://istiod.istio-system.svc:15012:istio-ca-root-cert,Deployment:https://istiod.istio-system.svc:15012:istio-ca-root-cert"	# ... and ambit-ca is not deployed there (base has it; components/istiod-ca deletes it)
	ca_objs() { # FILE: Kind/name of the ambit-ca objects (not its generated ConfigMap)
		NODE_PATH=$node_dir/node_modules node -e '
			const y = require("js-yaml"), fs = require("fs");
			console.log(y.loadAll(fs.readFileSync(process.argv[1], "utf8"))
				.filter((d) => d && d.kind !== "ConfigMap" && /^ambit-ca/.test(d.metadata.name))
				.map((d) => `${d.kind}/${d.metadata.name}`).sort().join(","));' "$1"
	}
	check manifests.istiod.no_ambit_ca "$(ca_objs "$tmp/istiod.yaml")" ""
	check manifests.base.ambit_ca "$(ca_objs "$tmp/base.yaml")" \
		"ClusterRole/ambit-ca,ClusterRoleBinding/ambit-ca,Deployment/ambit-ca,Role/ambit-ca-root-cert,RoleBinding/ambit-ca-root-cert,Service/ambit-ca,ServiceAccount/ambit-ca"
fi

# The overlays' values, in the config the agent reads.
hl=$tmp/homelab.ambitd.json
if [ -s "$hl" ]; then
	check manifests.homelab.sampling "$(jsonval 'c["tracing"]["sampling"]' <"$hl")" 100.0
	check manifests.homelab.cluster_name "$(jsonval 'c["tracing"]["custom_tags"]["cluster_name"]' <"$hl")" homelab
	check manifests.homelab.environment "$(jsonval 'c["tracing"]["custom_tags"]["environment"]' <"$hl")" development
	check manifests.homelab.otlp_endpoint "$(jsonval 'c["tracing"]["otlp"]["endpoint"]' <"$hl")" \
		http://k8s-monitoring-alloy-receiver.monitoring.svc.cluster.local:4317
	check manifests.homelab.otlp_protocol "$(jsonval 'c["tracing"]["otlp"]["protocol"]' <"$hl")" grpc
	check manifests.homelab.waypoint_sampling \
		"$(jsonval 'c["tracing"]["sampling"]' <"$tmp/homelab.waypoint.json")" 100.0
fi
pr=$tmp/production.ambitd.json
if [ -s "$pr" ]; then
	check manifests.production.sampling "$(jsonval 'c["tracing"]["sampling"]' <"$pr")" 1.0
	check manifests.production.waypoint_sampling \
		"$(jsonval 'c["tracing"]["sampling"]' <"$tmp/production.waypoint.json")" 1.0
	limits=$(NODE_PATH=$node_dir/node_modules node -e '
		const y = require("js-yaml"), fs = require("fs");
		const docs = y.loadAll(fs.readFileSync(process.argv[1], "utf8"));
		const out = [];
		for (const d of docs)
			if (d && (d.kind === "DaemonSet" || d.kind === "Deployment"))
				for (const c of d.spec.template.spec.containers)
					out.push(`${d.kind}:${c.resources && c.resources.limits && c.resources.limits.memory ? "limits" : "none"}`);
		console.log(out.sort().join(","));' "$tmp/production.yaml")
	check manifests.production.limits "$limits" "DaemonSet:limits,Deployment:limits,Deployment:limits"
fi

# Each overlay takes the user's image for every workload (the agent, the waypoint, ambit-ca where
# it deploys it) through its `images:` entry
# `ambit` (what `kustomize edit set image ambit=REGISTRY/ambit:TAG` rewrites; done with sed on a
# copy here, since kubectl has no `edit`).
for d in "${dirs[@]}"; do
	[ "$d" = base ] && continue
	name=$(basename "$d")
	cp -r "$top/kustomize" "$tmp/kz-$name"
	k=$tmp/kz-$name/$d/kustomization.yaml
	if ! grep -q '^  - name: ambit$' "$k"; then
		notok "manifests.$name.images" "no images: entry named ambit"
		continue
	fi
	sed -i -e '/^  - name: ambit$/,/newTag:/{s#newName: .*#newName: registry.example/ambit#;s#newTag: .*#newTag: test#}' "$k"
	out=$(kubectl kustomize "$tmp/kz-$name/$d" 2>&1)
	imgs=$(sed -n 's/^ *image: //p' <<<"$out" | sort | uniq -c | tr -s ' ')
	check "manifests.$name.images" "$imgs" " $(grep -Ec '^kind: (DaemonSet|Deployment)$' <<<"$out") registry.example/ambit:test"
done

# The rules must catch a broken manifest, or the checks above prove nothing.
if [ -s "$tmp/base.yaml" ]; then
	sed -e 's/privileged: false/privileged: true/' -e 's/- watch/- create/' \
		"$tmp/base.yaml" >"$tmp/broken.yaml"
	if node "$node_dir/validate_manifests.js" --label broken "$tmp/broken.yaml" >"$tmp/broken.out"; then
		notok manifests.validator_rejects_broken "a privileged DaemonSet and a create verb passed"
	else
		# the DaemonSet, and the ClusterRoles of the agents, of the waypoint's routes and of ambit-ca
		check manifests.validator_rejects_broken "$(grep -c '^not ok' "$tmp/broken.out")" 4
	fi
	# A DaemonSet that mounts the CA key Secret again is refused.
	NODE_PATH=$node_dir/node_modules node -e '
		const y = require("js-yaml"), fs = require("fs");
		const docs = y.loadAll(fs.readFileSync(process.argv[1], "utf8")).filter((d) => d);
		for (const d of docs)
			if (d.kind === "DaemonSet")
				d.spec.template.spec.volumes.push({ name: "ca", secret: { secretName: "ambit-ca" } });
		process.stdout.write(docs.map((d) => y.dump(d)).join("---\n"));' "$tmp/base.yaml" >"$tmp/cakey.yaml"
	if node "$node_dir/validate_manifests.js" --label cakey "$tmp/cakey.yaml" >"$tmp/cakey.out"; then
		notok manifests.validator_rejects_ca_key "a DaemonSet mounting Secret ambit-ca passed"
	else
		check manifests.validator_rejects_ca_key \
			"$(grep -c '^not ok - cakey/DaemonSet/ambit: .*mounts Secret ambit-ca (no CA key on a node)' "$tmp/cakey.out")" 1
	fi
	sed -e 's/containerPort: 15008/containerPort: "hbone"/' "$tmp/base.yaml" >"$tmp/badschema.yaml"
	if node "$node_dir/validate_manifests.js" --label badschema "$tmp/badschema.yaml" >/dev/null; then
		notok manifests.validator_rejects_schema "a string containerPort passed"
	else
		ok manifests.validator_rejects_schema
	fi
fi

# The agent's own parser, when the binaries are built.
for pair in ambitd:ambitd.json ambit-waypoint:waypoint.json; do
	bin=$build/${pair%%:*}
	file=${pair#*:}
	for d in "${dirs[@]}"; do
		name=$(basename "$d")
		cfg=$tmp/$name.$file
		[ -s "$cfg" ] || continue
		if [ ! -x "$bin" ] || ! "$bin" --help 2>&1 | grep -q -- --check; then
			echo "# $(basename "$bin") --check skipped for $name: $bin is not built (or has no --check)"
			continue
		fi
		if err=$(NODE_NAME=node-1 NODE_IP=172.18.0.2 "$bin" --config "$cfg" --check 2>&1); then
			ok "manifests.$name.$(basename "$bin")_check"
		else
			notok "manifests.$name.$(basename "$bin")_check" "$(echo "$err" | tail -n 1)"
		fi
	done
done

echo "# manifests: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
