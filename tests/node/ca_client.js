// SPDX-License-Identifier: Apache-2.0
// An independent client of Istio's certificate API for tests: grpc-js + @grpc/proto-loader
// calling istio.v1.auth.IstioCertificateService/CreateCertificate (ca/proto/security/v1alpha1/
// ca.proto) over TLS, as ztunnel does: bearer token, PEM CSR, validity_duration, metadata
// {ImpersonatedIdentity}. No ambit code.
//
//   node ca_client.js --addr HOST:PORT --ca ca.crt --csr req.csr [--token T] [--impersonate ID]
//        [--validity S] [--server-name NAME] [--out chain.pem]
// Prints one JSON line: {"code": <gRPC status>, "details": "...", "certs": <count>} and writes
// the chain (cert_chain entries concatenated) to --out on success.
'use strict';
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const args = {};
for (let i = 2; i < process.argv.length; i += 2)
	args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];

const def = loader.loadSync('security/v1alpha1/ca.proto', {
	includeDirs: [path.join(__dirname, '..', '..', 'ca', 'proto')],
	keepCase: true, longs: String, defaults: true, oneofs: true,
});
const Service = grpc.loadPackageDefinition(def).istio.v1.auth.IstioCertificateService;
const opts = {};
if (args['server-name'])
	opts['grpc.ssl_target_name_override'] = args['server-name'];
const client = new Service(args.addr, grpc.credentials.createSsl(fs.readFileSync(args.ca)), opts);

const md = new grpc.Metadata();
if (args.token)
	md.set('authorization', 'Bearer ' + args.token);
const req = {
	csr: fs.readFileSync(args.csr, 'utf8'),
	validity_duration: String(args.validity || 3600),
};
if (args.impersonate)
	req.metadata = { fields: { ImpersonatedIdentity: { stringValue: args.impersonate } } };

client.CreateCertificate(req, md, { deadline: Date.now() + 10000 }, (err, resp) => {
	if (err) {
		console.log(JSON.stringify({ code: err.code, details: err.details }));
	} else {
		if (args.out)
			fs.writeFileSync(args.out, resp.cert_chain.join(''));
		console.log(JSON.stringify({ code: 0, details: '', certs: resp.cert_chain.length }));
	}
	client.close();
});
