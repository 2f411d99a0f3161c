// SPDX-License-Identifier: Apache-2.0
// An independent Istio certificate service for tests: grpc-js + @grpc/proto-loader serving
// istio.v1.auth.IstioCertificateService/CreateCertificate (ca/proto/security/v1alpha1/ca.proto)
// over TLS, signing CSRs with the openssl command line (no ambit code). What it does per call is
// read from --mode-file each time: ok (leaf + root, as istiod answers), refuse
// (PERMISSION_DENIED), unavailable (UNAVAILABLE), wrong-id (signs another SPIFFE ID).
// --token-file: the bearer token callers must send (read on every call; UNAUTHENTICATED
// otherwise). Every request is appended to --log as one JSON line.
//
//   node ca_server.js --port 0 --cert srv.crt --key srv.key --ca-cert ca.crt --ca-key ca.key
//        [--token-file F] [--mode-file F] [--log F] [--host 127.0.0.1]
// Prints "PORT <n>" once listening.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const args = {};
for (let i = 2; i < process.argv.length; i += 2)
	args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];

const protoDir = path.join(__dirname, '..', '..', 'ca', 'proto');
const def = loader.loadSync('security/v1alpha1/ca.proto', {
	includeDirs: [protoDir], keepCase: true, longs: String, defaults: true, oneofs: true,
});
const svc = grpc.loadPackageDefinition(def).istio.v1.auth.IstioCertificateService.service;

function readOr(file, dflt) {
	try {
		return fs.readFileSync(file, 'utf8').trim();
	} catch (e) {
		return dflt;
	}
}

function csrUri(csrPem, dir) {
	const f = path.join(dir, 'req.csr');
	fs.writeFileSync(f, csrPem);
	const txt = execFileSync('openssl', ['req', '-in', f, '-noout', '-text'], { encoding: 'utf8' });
	const m = txt.match(/URI:(\S+)/);
	return m ? m[1].replace(/,$/, '') : null;
}

function sign(csrPem, dir, wrongId) {
	const csr = path.join(dir, 'req.csr'), ext = path.join(dir, 'ext.cnf');
	const out = path.join(dir, 'leaf.crt');
	fs.writeFileSync(csr, csrPem);
	let e = 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n' +
		'extendedKeyUsage=serverAuth,clientAuth\n';
	const a = ['x509', '-req', '-in', csr, '-CA', args['ca-cert'], '-CAkey', args['ca-key'],
		   '-set_serial', '0x' + require('crypto').randomBytes(16).toString('hex'),
		   '-days', '1', '-sha256', '-extfile', ext, '-out', out];
	if (wrongId)
		e += 'subjectAltName=URI:' + wrongId + '\n';
	else
		a.push('-copy_extensions', 'copyall');
	fs.writeFileSync(ext, e);
	execFileSync('openssl', a, { stdio: ['ignore', 'ignore', 'pipe'] });
	return fs.readFileSync(out, 'utf8');
}

function createCertificate(call, cb) {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ca-server-'));
	const md = call.request.metadata && call.request.metadata.fields || {};
	const imp = md.ImpersonatedIdentity ? md.ImpersonatedIdentity.stringValue : null;
	const auth = call.metadata.get('authorization')[0] || '';
	const mode = args['mode-file'] ? readOr(args['mode-file'], 'ok') : 'ok';
	const rec = {
		authorization: String(auth), impersonated: imp,
		validity: Number(call.request.validity_duration), mode,
		csr_uri: null,
	};
	try {
		rec.csr_uri = csrUri(call.request.csr, dir);
		if (args.log)
			fs.appendFileSync(args.log, JSON.stringify(rec) + '\n');
		if (args['token-file'] && auth !== 'Bearer ' + readOr(args['token-file'], ''))
			return cb({ code: grpc.status.UNAUTHENTICATED, details: 'token not accepted' });
		if (mode === 'refuse')
			return cb({ code: grpc.status.PERMISSION_DENIED,
				    details: 'identity not on the caller\'s node' });
		if (mode === 'unavailable')
			return cb({ code: grpc.status.UNAVAILABLE, details: 'try again later' });
		const wrong = mode === 'wrong-id' ? 'spiffe://cluster.local/ns/kube-system/sa/admin' : null;
		const leaf = sign(call.request.csr, dir, wrong);
		cb(null, { cert_chain: [leaf, fs.readFileSync(args['ca-cert'], 'utf8')] });
	} catch (e) {
		cb({ code: grpc.status.INTERNAL, details: String(e.message).slice(0, 200) });
	} finally {
		fs.rmSync(dir, { recursive: true, force: true });
	}
}

const server = new grpc.Server();
server.addService(svc, { CreateCertificate: createCertificate });
const creds = grpc.ServerCredentials.createSsl(null, [{
	private_key: fs.readFileSync(args.key), cert_chain: fs.readFileSync(args.cert),
}], false);
server.bindAsync(`${args.host || '127.0.0.1'}:${args.port || 0}`, creds, (err, port) => {
	if (err) {
		console.error(String(err));
		process.exit(1);
	}
	console.log('PORT ' + port);
});
process.on('SIGTERM', () => server.forceShutdown() || process.exit(0));
