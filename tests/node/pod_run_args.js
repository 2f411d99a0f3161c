#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
// Turns one container of a rendered manifest (`kubectl kustomize` output) into `podman run`
// options, the way a kubelet would run it: securityContext (pod and container), volumes and
// mounts, environment (downward API fields from --field), command and args. tests/lab/
// test_image.sh runs the image with them, so the lab exercises what the manifests say, not a
// copy. Anything it cannot map faithfully is an error, never silently dropped.
// Prints one argument per line: the options, the image, then the command's arguments.
//
//   node pod_run_args.js --kind DaemonSet --name ambit --image IMG --stage DIR
//        [--container NAME] [--source VOLUME=DIR]... [--field PATH=VALUE]...
//        [--without-volume VOLUME] FILE
//   node pod_run_args.js --kind DaemonSet --name ambit --mount-path VOLUME FILE
//   node pod_run_args.js --kind DaemonSet --name ambit --data VOLUME KEY FILE
// --source DIR gives a configMap or secret volume's files; they are staged in --stage DIR with
// the volume's defaultMode and the pod's fsGroup (group-readable then), and mounted read-only,
// as the kubelet does. For a projected volume of one serviceAccountToken, --source FILE gives
// the token: it is staged under the projection's path (the kubelet would mint and rotate it).
// --mount-path prints where the container mounts VOLUME; --data prints KEY of the ConfigMap
// that the configMap volume VOLUME names (the rendered config, to run it as deployed). --without-volume leaves one volume out
// (to see what the container does without it).
'use strict';

const fs = require('fs');
const path = require('path');
const yaml = require('js-yaml');

function die(msg) {
  console.error(`pod_run_args: ${msg}`);
  process.exit(1);
}

function parseArgs(argv) {
  const a = { kind: null, name: null, container: null, image: null, stage: null, mountPath: null,
    data: null, sources: {}, fields: {}, without: [], file: null };
  const pair = (s, what) => {
    const i = s.indexOf('=');
    if (i <= 0) die(`${what}: want KEY=VALUE, got '${s}'`);
    return [s.slice(0, i), s.slice(i + 1)];
  };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--kind': a.kind = v; i++; break;
      case '--name': a.name = v; i++; break;
      case '--container': a.container = v; i++; break;
      case '--image': a.image = v; i++; break;
      case '--stage': a.stage = v; i++; break;
      case '--mount-path': a.mountPath = v; i++; break;
      case '--data': a.data = [v, argv[i + 2]]; i += 2; break;
      case '--without-volume': a.without.push(v); i++; break;
      case '--source': { const [k, d] = pair(v || '', '--source'); a.sources[k] = d; i++; break; }
      case '--field': { const [k, d] = pair(v || '', '--field'); a.fields[k] = d; i++; break; }
      default:
        if (argv[i].startsWith('--') || a.file) die(`unknown argument '${argv[i]}'`);
        a.file = argv[i];
    }
  }
  if (!a.kind || !a.name || !a.file || (!a.mountPath && !a.data && (!a.image || !a.stage)))
    die('usage: --kind KIND --name NAME (--image IMG --stage DIR | --mount-path VOL | --data VOL KEY) FILE');
  return a;
}

// "16Mi" -> bytes (the quantities emptyDir sizeLimit uses).
function quantity(q) {
  const m = /^([0-9]+)(Ki|Mi|Gi|k|M|G)?$/.exec(String(q));
  if (!m) die(`unsupported quantity '${q}'`);
  const mul = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, k: 1e3, M: 1e6, G: 1e9 }[m[2]] || 1;
  return Number(m[1]) * mul;
}

function only(obj, keys, what) {
  for (const k of Object.keys(obj || {}))
    if (!keys.includes(k)) die(`${what}.${k} is not supported by this runner`);
}

// Copies FILES ([source, name in the volume]) into stage/NAME with mode and group, as the
// kubelet projects a volume: with an fsGroup the files are that group's and group-readable.
function stageVolume(stage, name, files, mode, gid) {
  const out = path.join(stage, name);
  fs.mkdirSync(out, { recursive: true });
  for (const [src, f] of files) {
    const dst = path.join(out, f);
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    fs.copyFileSync(src, dst);
    fs.chmodSync(dst, gid === undefined ? mode : mode | 0o440);
    fs.chownSync(dst, 0, gid === undefined ? 0 : gid);
  }
  return out;
}

// The regular files of DIR, each under its own name.
function dirFiles(dir) {
  return fs.readdirSync(dir).map((f) => [path.join(dir, f), f])
    .filter(([src]) => fs.statSync(src).isFile());
}

function main() {
  const a = parseArgs(process.argv.slice(2));
  const docs = yaml.loadAll(fs.readFileSync(a.file, 'utf8')).filter((d) => d);
  const doc = docs.find((d) => d.kind === a.kind && d.metadata && d.metadata.name === a.name);
  if (!doc) die(`no ${a.kind} ${a.name} in ${a.file}`);
  const ps = doc.spec.template.spec;
  const cs = ps.containers || [];
  const c = a.container ? cs.find((x) => x.name === a.container) : cs[0];
  if (!c) die(`${a.kind} ${a.name} has no container ${a.container || ''}`);
  const vols = Object.fromEntries((ps.volumes || []).map((v) => [v.name, v]));

  if (a.mountPath) {
    const m = (c.volumeMounts || []).find((x) => x.name === a.mountPath);
    if (!m) die(`container ${c.name} does not mount ${a.mountPath}`);
    console.log(m.mountPath);
    return;
  }
  if (a.data) {
    const v = vols[a.data[0]];
    if (!v || !v.configMap) die(`${a.kind} ${a.name} has no configMap volume ${a.data[0]}`);
    const cm = docs.find((d) => d.kind === 'ConfigMap' && d.metadata.name === v.configMap.name);
    if (!cm || !cm.data || cm.data[a.data[1]] === undefined)
      die(`no ConfigMap ${v.configMap.name} with key ${a.data[1]} in ${a.file}`);
    process.stdout.write(cm.data[a.data[1]]);
    return;
  }

  const out = [];
  const psc = ps.securityContext || {};
  const sc = c.securityContext || {};
  only(psc, ['runAsUser', 'runAsGroup', 'runAsNonRoot', 'fsGroup', 'seccompProfile'],
    'pod securityContext');
  only(sc, ['privileged', 'allowPrivilegeEscalation', 'readOnlyRootFilesystem', 'runAsUser',
    'runAsGroup', 'runAsNonRoot', 'capabilities', 'seccompProfile'], 'securityContext');
  const eff = (k) => (sc[k] !== undefined ? sc[k] : psc[k]);
  if (sc.privileged === true) out.push('--privileged');
  if (sc.allowPrivilegeEscalation === false) out.push('--security-opt', 'no-new-privileges');
  // podman's --read-only adds tmpfs on /tmp, /run and /var/tmp; a kubelet does not.
  if (sc.readOnlyRootFilesystem === true) out.push('--read-only', '--read-only-tmpfs=false');
  const caps = sc.capabilities || {};
  only(caps, ['add', 'drop'], 'securityContext.capabilities');
  for (const d of caps.drop || []) out.push('--cap-drop', d === 'ALL' ? 'all' : `CAP_${d}`);
  for (const d of caps.add || []) out.push('--cap-add', `CAP_${d}`);
  const uid = eff('runAsUser'), gid = eff('runAsGroup');
  if (eff('runAsNonRoot') === true && !uid) die('runAsNonRoot without a non-zero runAsUser');
  if (uid !== undefined) out.push('--user', gid !== undefined ? `${uid}:${gid}` : `${uid}`);
  if (psc.fsGroup !== undefined) out.push('--group-add', String(psc.fsGroup));
  // No profile means Unconfined to a kubelet without --seccomp-default; the runtime's default
  // profile (stricter) is used for it here, so the lab also covers clusters that set that flag.
  const sp = eff('seccompProfile');
  if (sp && sp.type === 'Unconfined') out.push('--security-opt', 'seccomp=unconfined');
  else if (sp && sp.type !== 'RuntimeDefault') die(`seccompProfile ${sp.type} is not supported`);

  for (const e of c.env || []) {
    if (e.value !== undefined) { out.push('-e', `${e.name}=${e.value}`); continue; }
    const fp = e.valueFrom && e.valueFrom.fieldRef && e.valueFrom.fieldRef.fieldPath;
    if (!fp) die(`env ${e.name}: only value and fieldRef are supported`);
    if (!(fp in a.fields)) die(`env ${e.name}: give --field ${fp}=VALUE`);
    out.push('-e', `${e.name}=${a.fields[fp]}`);
  }

  for (const w of a.without)
    if (!(c.volumeMounts || []).some((m) => m.name === w)) die(`--without-volume: no mount ${w}`);
  for (const m of c.volumeMounts || []) {
    if (a.without.includes(m.name)) continue;
    only(m, ['name', 'mountPath', 'readOnly'], `volumeMount ${m.name}`);
    const v = vols[m.name];
    if (!v) die(`volumeMount ${m.name}: no such volume`);
    const ro = m.readOnly === true;
    if (v.hostPath) {
      const t = v.hostPath.type || '';
      if (t === 'DirectoryOrCreate') fs.mkdirSync(v.hostPath.path, { recursive: true });
      else if (t === 'Directory' && !fs.statSync(v.hostPath.path, { throwIfNoEntry: false }))
        die(`hostPath ${v.hostPath.path} (volume ${m.name}) does not exist`);
      else if (t !== 'Directory' && t !== '') die(`hostPath type ${t} is not supported`);
      out.push('-v', `${v.hostPath.path}:${m.mountPath}${ro ? ':ro' : ''}`);
    } else if (v.emptyDir) {
      const lim = v.emptyDir.sizeLimit ? `,size=${quantity(v.emptyDir.sizeLimit)}` : '';
      out.push('--tmpfs', `${m.mountPath}:rw,mode=1777${lim}`);
    } else if (v.configMap || v.secret) {
      const src = a.sources[m.name];
      if (!src) die(`volume ${m.name} (${v.secret ? 'secret' : 'configMap'}): give --source ${m.name}=DIR`);
      const spec = v.configMap || v.secret;
      only(spec, ['name', 'secretName', 'defaultMode'], `volume ${m.name}`);
      const mode = spec.defaultMode !== undefined ? spec.defaultMode : 0o644;
      out.push('-v', `${stageVolume(a.stage, m.name, dirFiles(src), mode, psc.fsGroup)}:${m.mountPath}:ro`);
    } else if (v.projected) {
      only(v.projected, ['sources', 'defaultMode'], `volume ${m.name}.projected`);
      const srcs = v.projected.sources || [];
      if (srcs.length !== 1 || !srcs[0].serviceAccountToken || Object.keys(srcs[0]).length !== 1)
        die(`volume ${m.name}: only a projection of one serviceAccountToken is supported`);
      const t = srcs[0].serviceAccountToken;
      only(t, ['path', 'audience', 'expirationSeconds'], `volume ${m.name} serviceAccountToken`);
      if (!t.path || t.path.split('/').includes('..')) die(`volume ${m.name}: bad token path '${t.path}'`);
      const src = a.sources[m.name];
      if (!src || !fs.statSync(src, { throwIfNoEntry: false })?.isFile())
        die(`volume ${m.name} (serviceAccountToken, audience ${t.audience}): give --source ${m.name}=TOKEN_FILE`);
      const mode = v.projected.defaultMode !== undefined ? v.projected.defaultMode : 0o644;
      out.push('-v', `${stageVolume(a.stage, m.name, [[src, t.path]], mode, psc.fsGroup)}:${m.mountPath}:ro`);
    } else {
      die(`volume ${m.name}: only hostPath, emptyDir, configMap, secret and projected serviceAccountToken are supported`);
    }
  }

  const cmd = c.command || [];
  if (cmd.length) out.push('--entrypoint', cmd[0]);
  out.push(a.image, ...cmd.slice(1), ...(c.args || []));
  for (const x of out) {
    if (/\n/.test(String(x))) die(`an argument holds a newline: ${JSON.stringify(x)}`);
    console.log(x);
  }
}

main();
