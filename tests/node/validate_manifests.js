#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
// Validates the documents of a `kubectl kustomize` output against the Kubernetes schemas with
// kubernetes-models (each object built with its model class, then .validate()), then checks
// the deployment rules of docs/kubernetes.md (read-only RBAC, an unprivileged DaemonSet with
// host network, ...). Prints "ok - ..." / "not ok - ..." lines; exit 1 on any failure.
//
//   node validate_manifests.js --label homelab built.yaml
//   node validate_manifests.js --extract ambit-config/ambitd.json built.yaml   (prints the entry)
'use strict';

const fs = require('fs');
const path = require('path');
const yaml = require('js-yaml');

function parseArgs(argv) {
  const a = { label: 'manifests', extract: null, file: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--label') a.label = argv[++i];
    else if (argv[i] === '--extract') a.extract = argv[++i];
    else a.file = argv[i];
  }
  if (!a.file) {
    console.error('usage: validate_manifests.js [--label NAME] [--extract CONFIGMAP/KEY] FILE');
    process.exit(2);
  }
  return a;
}

// "apps/v1" -> "kubernetes-models/apps/v1", "v1" -> "kubernetes-models/v1"
async function modelClass(apiVersion, kind) {
  const mod = await import('kubernetes-models/' + apiVersion);
  return mod[kind];
}

let failed = 0;
function report(ok, name, why) {
  if (!ok) failed++;
  console.log(`${ok ? 'ok' : 'not ok'} - ${name}${!ok && why ? ': ' + why : ''}`);
}

function podSpecOf(doc) {
  return doc.spec && doc.spec.template && doc.spec.template.spec;
}

// Node agents and waypoints hold no CA key (CONTRACT.md "Certificates"): no Secret reaches
// their pods (volume, projected source or env), the root comes from a ConfigMap, and the CA
// token is a projected service account token with audience istio-ca.
function noCaKeyProblems(ps) {
  const bad = [];
  const c = (ps.containers || [])[0] || {};
  const mounts = Object.fromEntries((c.volumeMounts || []).map((m) => [m.name, m]));
  for (const v of ps.volumes || []) {
    if (v.secret) bad.push(`mounts Secret ${v.secret.secretName} (no CA key on a node)`);
    for (const src of (v.projected && v.projected.sources) || [])
      if (src.secret) bad.push(`mounts Secret ${src.secret.name} (no CA key on a node)`);
  }
  for (const ct of [...(ps.containers || []), ...(ps.initContainers || [])]) {
    for (const e of ct.env || [])
      if (e.valueFrom && e.valueFrom.secretKeyRef) bad.push(`env ${e.name} from Secret ${e.valueFrom.secretKeyRef.name}`);
    for (const e of ct.envFrom || [])
      if (e.secretRef) bad.push(`envFrom Secret ${e.secretRef.name}`);
  }
  const root = (ps.volumes || []).find((v) => v.name === 'root-cert');
  if (!root || !root.configMap || !['ambit-root-cert', 'istio-ca-root-cert'].includes(root.configMap.name))
    bad.push('root not from ConfigMap ambit-root-cert (or istio-ca-root-cert)');
  if (!mounts['root-cert'] || mounts['root-cert'].readOnly !== true) bad.push('root not mounted read-only');
  const tok = (ps.volumes || []).find((v) => v.name === 'istio-token');
  const sat = tok && tok.projected && (tok.projected.sources || []).find((x) => x.serviceAccountToken);
  if (!sat || sat.serviceAccountToken.audience !== 'istio-ca')
    bad.push('no projected service account token with audience istio-ca');
  return bad;
}

// Rules the schemas cannot express; each returns a list of problems.
const rules = {
  ClusterRole(doc) {
    const bad = [];
    for (const r of doc.rules || []) {
      // ambit-ca asks the API server who its callers are: create on tokenreviews, nothing else.
      if (doc.metadata.name === 'ambit-ca' && (r.apiGroups || []).join() === 'authentication.k8s.io' &&
          (r.resources || []).join() === 'tokenreviews' && (r.verbs || []).join() === 'create')
        continue;
      for (const v of r.verbs || [])
        if (!['get', 'list', 'watch'].includes(v)) bad.push(`verb ${v} on ${r.resources}`);
      const group = (r.apiGroups || [''])[0];
      const allowed = {
        '': ['pods', 'services', 'namespaces', 'nodes', 'endpointslices', 'configmaps'],
        'security.istio.io': ['authorizationpolicies', 'peerauthentications'],
        'telemetry.istio.io': ['telemetries'],
        'gateway.networking.k8s.io': ['httproutes'],
      }[group] || [];
      for (const res of r.resources || []) {
        if (!allowed.includes(res))
          bad.push(`resource ${group}/${res}`);
        // ConfigMaps hold other components' settings: only the istio one (MeshConfig)
        if (res === 'configmaps' && JSON.stringify(r.resourceNames) !== '["istio"]')
          bad.push('configmaps beyond resourceNames [istio]');
      }
    }
    return bad;
  },
  // Namespaced writes: only ambit-ca's, to keep the root ConfigMap.
  Role(doc) {
    const bad = [];
    if (doc.metadata.name !== 'ambit-ca-root-cert') return [`unexpected Role ${doc.metadata.name}`];
    for (const r of doc.rules || []) {
      if ((r.resources || []).join() !== 'configmaps') bad.push(`resource ${r.resources}`);
      for (const v of r.verbs || [])
        if (!['get', 'create', 'update'].includes(v)) bad.push(`verb ${v} on ${r.resources}`);
    }
    return bad;
  },
  DaemonSet(doc) {
    const bad = [];
    const ps = podSpecOf(doc);
    const c = (ps.containers || [])[0] || {};
    const sc = c.securityContext || {};
    const caps = (sc.capabilities && sc.capabilities.add) || [];
    const env = Object.fromEntries((c.env || []).map((e) => [e.name, e]));
    const vols = Object.fromEntries((ps.volumes || []).map((v) => [v.name, v]));
    const mounts = Object.fromEntries((c.volumeMounts || []).map((m) => [m.name, m]));
    if (ps.hostNetwork !== true) bad.push('hostNetwork is not true');
    if (ps.dnsPolicy !== 'ClusterFirstWithHostNet') bad.push('dnsPolicy is not ClusterFirstWithHostNet');
    if (ps.priorityClassName !== 'system-node-critical') bad.push('priorityClassName');
    if (!(ps.tolerations || []).some((t) => t.operator === 'Exists' && !t.key)) bad.push('does not tolerate every taint');
    if (!ps.terminationGracePeriodSeconds) bad.push('no terminationGracePeriodSeconds');
    const ru = doc.spec.updateStrategy || {};
    // Upgrades without resets: the new agent starts beside the old one (docs/kubernetes.md).
    if (ru.type !== 'RollingUpdate' || !ru.rollingUpdate || ru.rollingUpdate.maxSurge !== 1 ||
        ru.rollingUpdate.maxUnavailable !== 0)
      bad.push('rolling update with maxSurge 1, maxUnavailable 0');
    // hostNetwork turns container ports into host ports, which would keep the surge pod off
    // the node while the old pod runs.
    if ((c.ports || []).length) bad.push('container ports (host ports) block the surge pod');
    if (sc.privileged === true) bad.push('privileged: true');
    if (sc.allowPrivilegeEscalation !== false) bad.push('allowPrivilegeEscalation is not false');
    for (const cap of ['BPF', 'NET_ADMIN']) if (!caps.includes(cap)) bad.push(`capability ${cap} missing`);
    const rp = c.readinessProbe && c.readinessProbe.httpGet;
    if (!rp || rp.port !== 15021 || rp.path !== '/healthz/ready') bad.push('readiness probe 15021 /healthz/ready');
    if (!c.resources || !c.resources.requests) bad.push('no resource requests');
    for (const e of ['NODE_NAME', 'NODE_IP'])
      if (!env[e] || !env[e].valueFrom || !env[e].valueFrom.fieldRef) bad.push(`${e} not from the downward API`);
    if (!vols.bpffs || !vols.bpffs.hostPath || vols.bpffs.hostPath.path !== '/sys/fs/bpf') bad.push('no bpffs mount');
    if (!vols.cgroup || !vols.cgroup.hostPath) bad.push('no cgroup mount');
    const sysnet = Object.values(vols).find((v) => v.hostPath && v.hostPath.path === '/proc/sys/net');
    const sysnetMount = sysnet && mounts[sysnet.name];
    if (!sysnetMount || sysnetMount.mountPath !== '/host/proc/sys/net' || sysnetMount.readOnly)
      bad.push("the host's /proc/sys/net is not mounted writable at /host/proc/sys/net");
    bad.push(...noCaKeyProblems(ps));
    return bad;
  },
  Deployment(doc) {
    const bad = [];
    const ps = podSpecOf(doc);
    const c = (ps.containers || [])[0] || {};
    const labels = (doc.spec.template.metadata || {}).labels || {};
    // The CA's own Deployment is the one place the CA key may be mounted.
    if (doc.metadata.name === 'ambit-ca') {
      const sec = (ps.volumes || []).find((v) => v.secret);
      if (!sec || sec.secret.secretName !== 'ambit-ca') bad.push('does not mount Secret ambit-ca');
      if (!(c.command || []).some((a) => /ambit-ca$/.test(a))) bad.push('does not run ambit-ca');
      if (!(doc.spec.replicas >= 2)) bad.push('fewer than 2 replicas');
      const rp = c.readinessProbe && c.readinessProbe.httpGet;
      if (!rp || rp.port !== 15014 || rp.path !== '/healthz/ready') bad.push('readiness probe 15014 /healthz/ready');
      const sc = c.securityContext || {};
      if (sc.privileged === true || sc.allowPrivilegeEscalation !== false) bad.push('privileged');
      return bad;
    }
    if (labels['istio.io/dataplane-mode'] !== 'none') bad.push('waypoint pods are not opted out of capture');
    if (!(c.ports || []).some((p) => p.containerPort === 15008)) bad.push('no port 15008');
    if (!(c.command || []).some((a) => /ambit-waypoint$/.test(a))) bad.push('does not run ambit-waypoint');
    bad.push(...noCaKeyProblems(ps));
    return bad;
  },
};

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const docs = yaml.loadAll(fs.readFileSync(a.file, 'utf8')).filter((d) => d);

  if (a.extract) {
    const [cm, key] = a.extract.split('/');
    const hit = docs.find((d) => d.kind === 'ConfigMap' && (d.metadata.name === cm ||
      d.metadata.name.startsWith(cm + '-')) && d.data && key in d.data);
    if (!hit) {
      console.error(`no ConfigMap ${cm} with key ${key} in ${a.file}`);
      process.exit(1);
    }
    process.stdout.write(hit.data[key]);
    return;
  }

  const seen = new Set();
  for (const doc of docs) {
    const id = `${a.label}/${doc.kind}/${doc.metadata && doc.metadata.name}`;
    seen.add(doc.kind);
    let Cls;
    try {
      Cls = await modelClass(doc.apiVersion, doc.kind);
    } catch (e) {
      Cls = null;
    }
    if (!Cls) {
      report(false, id, `no model for ${doc.apiVersion} ${doc.kind}`);
      continue;
    }
    let problem = null;
    try {
      new Cls(doc).validate();
    } catch (e) {
      problem = 'schema: ' + String(e.message || e).split('\n')[0];
    }
    if (!problem && rules[doc.kind]) {
      const bad = rules[doc.kind](doc);
      if (bad.length) problem = bad.join('; ');
    }
    report(!problem, id, problem);
  }
  for (const kind of ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'ConfigMap',
    'DaemonSet', 'Service', 'Deployment'])
    report(seen.has(kind), `${a.label}/has-${kind}`, 'missing');
  if (failed) process.exitCode = 1;
}

main().catch((e) => {
  console.log(`not ok - ${path.basename(process.argv[1])}: ${e.stack || e}`);
  process.exit(1);
});
