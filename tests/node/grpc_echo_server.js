// SPDX-License-Identifier: Apache-2.0
// An independent gRPC server for the waypoint's HTTP/2 lab tests: @grpc/grpc-js serving
// echo.Echo (tests/node/echo.proto) in plaintext (h2c). Every reply says which server answered
// (--name and the local address), so a client can tell how its calls were spread.
//   node grpc_echo_server.js --port 50051 [--host 0.0.0.0] [--name NAME] [--log FILE]
// Prints "ready" once listening. --log: one JSON line per call (method, status, metadata).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const args = { host: '0.0.0.0', port: '50051', name: 'grpc-echo' };
for (let i = 2; i < process.argv.length; i += 2)
	args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];

const def = loader.loadSync(path.join(__dirname, 'echo.proto'), {
	keepCase: true, longs: Number, defaults: true,
});
const svc = grpc.loadPackageDefinition(def).echo.Echo.service;
const MAX = 64 << 20;

function log(rec) {
	if (args.log)
		fs.appendFileSync(args.log, JSON.stringify(rec) + '\n');
}

// The local address of the call's connection is not in grpc-js's API: the server's bound
// address stands for it (one address per server in the lab).
function reply(call, extra) {
	return Object.assign({ server: args.name, address: `${args.host}:${args.port}`,
			       peer: call.getPeer() }, extra);
}

const impl = {
	Echo(call, cb) {
		log({ method: 'Echo', metadata: call.metadata.getMap() });
		cb(null, reply(call, { message: call.request.message }));
	},
	Stream(call) {
		const n = call.request.count, every = call.request.interval_ms || 0;
		let i = 0, timer = null;
		const next = () => {
			if (call.cancelled)
				return;
			if (i >= n) {
				log({ method: 'Stream', sent: i });
				call.end();
				return;
			}
			call.write(reply(call, { message: call.request.message, seq: i++ }));
			timer = setTimeout(next, every);
		};
		call.on('cancelled', () => { clearTimeout(timer); log({ method: 'Stream', cancelled: i }); });
		next();
	},
	Fail(call, cb) {
		const md = new grpc.Metadata();
		md.set('x-fail-reason', 'requested');
		md.set('x-fail-code', String(call.request.code));
		md.set('x-fail-bin', Buffer.from([0, 1, 2, 255]));
		log({ method: 'Fail', code: call.request.code });
		cb({ code: call.request.code, details: call.request.details, metadata: md });
	},
	Big(call, cb) {
		const data = call.request.data;
		const sha = crypto.createHash('sha256').update(data).digest('hex');
		log({ method: 'Big', bytes: data.length, sha256: sha });
		cb(null, { data, sha256: sha, server: args.name });
	},
	Slow(call, cb) {
		const t = setTimeout(() => cb(null, reply(call, { message: 'slow' })), call.request.delay_ms);
		call.on('cancelled', () => { clearTimeout(t); log({ method: 'Slow', cancelled: true }); });
	},
};

const server = new grpc.Server({
	'grpc.max_receive_message_length': MAX, 'grpc.max_send_message_length': MAX,
});
server.addService(svc, impl);
server.bindAsync(`${args.host}:${args.port}`, grpc.ServerCredentials.createInsecure(), (err) => {
	if (err) {
		console.error(`grpc_echo_server: ${err.message}`);
		process.exit(1);
	}
	console.log('ready');
});
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
