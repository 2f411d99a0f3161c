// SPDX-License-Identifier: Apache-2.0
// An independent Istio certificate service for tests: grpc-js + @grpc/proto-loader serving
// istio.v1.auth.IstioCertificateService/CreateCertificate (ca/proto/security/v1alpha1/ca.proto)
// over TLS, signing CSRs with python3-cryptography (tests/tools/sign_csr.py; no ambit code).
// What it does per call is read from --mode-file each time: ok (leaf + root, as istiod
// answers), refuse (PERMISSION_DENIED), unavailable (UNAVAILABLE), wrong-id (signs another
// SPIFFE ID). --token-file: the bearer token callers must send (read on every call;
// UNAUTHENTICATED otherwise). Every request is appended to --log as one JSON line.
//
//   node ca_server.js --port 0 --cert srv.crt --key srv.key --ca-cert ca.crt --ca-key ca.key
//        [--token-file F] [--mode-file F] [--log F] [--host 127.0.0.1] [--max-validity S]
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

// Signs with tests/tools/sign_csr.py: the CSR's key and SAN (or wrongId), the validity asked
// for (capped by --max-validity, as istiod caps it), the leaf profile. Returns
// [the CSR's URI SAN, the leaf PEM].
function sign(csrPem, dir, validity, wrongId) {
	const csr = path.join(dir, 'req.csr'), out = path.join(dir, 'leaf.crt');
	fs.writeFileSync(csr, csrPem);
	const max = Number(args['max-validity'] || 86400);
	const a = [path.join(__dirname, '..', 'tools', 'sign_csr.py'), '--csr', csr,
		   '--ca-cert', args['ca-cert'], '--ca-key', args['ca-key'],
		   '--validity', String(validity > 0 && validity < max ? validity : max), '--out', out];
	if (wrongId)
		a.push('--san', wrongId);
	const uri = execFileSync('python3', a, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
	return [uri.trim(), fs.readFileSync(out, 'utf8')];
}

// Logs the request (one JSON line, with the answer's status) and answers.
function answer(rec, cb, err, resp) {
	rec.status = err ? err.code : 0;
	if (args.log)
		fs.appendFileSync(args.log, JSON.stringify(rec) + '\n');
	cb(err, resp);
}

function createCertificate(call, cb) {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ca-server-'));
	const md = call.request.metadata && call.request.metadata.fields || {};
	const auth = call.metadata.get('authorization')[0] || '';
	const rec = {
		authorization: String(auth),
		impersonated: md.ImpersonatedIdentity ? md.ImpersonatedIdentity.stringValue : null,
		validity: Number(call.request.validity_duration),
		mode: args['mode-file'] ? readOr(args['mode-file'], 'ok') : 'ok',
		csr_uri: null,
	};
	try {
		if (args['token-file'] && auth !== 'Bearer ' + readOr(args['token-file'], ''))
			return answer(rec, cb, { code: grpc.status.UNAUTHENTICATED,
						 details: 'token not accepted' });
		if (rec.mode === 'refuse')
			return answer(rec, cb, { code: grpc.status.PERMISSION_DENIED,
						 details: 'identity not on the caller\'s node' });
		if (rec.mode === 'unavailable')
			return answer(rec, cb, { code: grpc.status.UNAVAILABLE, details: 'try again later' });
		const wrong = rec.mode === 'wrong-id' ? 'spiffe://cluster.local/ns/kube-system/sa/admin'
						       : null;
		const [uri, leaf] = sign(call.request.csr, dir, rec.validity, wrong);
		rec.csr_uri = uri;
		answer(rec, cb, null, { cert_chain: [leaf, fs.readFileSync(args['ca-cert'], 'utf8')] });
	} catch (e) {
		answer(rec, cb, { code: grpc.status.INTERNAL, details: String(e.message).slice(0, 200) });
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
process.on('SIGTERM', () => {
	server.forceShutdown();
	process.exit(0);
});
