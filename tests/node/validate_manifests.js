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

// Rules the schemas cannot express; each returns a list of problems.
const rules = {
  ClusterRole(doc) {
    const bad = [];
    for (const r of doc.rules || []) {
      for (const v of r.verbs || [])
        if (!['get', 'list', 'watch'].includes(v)) bad.push(`verb ${v} on ${r.resources}`);
      for (const res of r.resources || [])
        if (!['pods', 'services', 'namespaces', 'nodes', 'endpointslices'].includes(res))
          bad.push(`resource ${res}`);
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
    const mounts = Object.fromEntries((c.volumeMounts || []).map((m) => [m.name, m]));
    const vols = Object.fromEntries((ps.volumes || []).map((v) => [v.name, v]));
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
    if (!vols.ca || !vols.ca.secret || vols.ca.secret.secretName !== 'ambit-ca') bad.push('CA not from Secret ambit-ca');
    if (!mounts.ca || mounts.ca.readOnly !== true) bad.push('CA not mounted read-only');
    return bad;
  },
  Deployment(doc) {
    const bad = [];
    const ps = podSpecOf(doc);
    const c = (ps.containers || [])[0] || {};
    const labels = (doc.spec.template.metadata || {}).labels || {};
    if (labels['istio.io/dataplane-mode'] !== 'none') bad.push('waypoint pods are not opted out of capture');
    if (!(c.ports || []).some((p) => p.containerPort === 15008)) bad.push('no port 15008');
    if (!(c.command || []).some((a) => /ambit-waypoint$/.test(a))) bad.push('does not run ambit-waypoint');
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
