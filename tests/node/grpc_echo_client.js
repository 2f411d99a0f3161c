// SPDX-License-Identifier: Apache-2.0
// An independent gRPC client for the waypoint's HTTP/2 lab tests: @grpc/grpc-js over ONE
// plaintext (h2c) channel to --target, running the scenarios named in --scenario (comma-separated,
// in order, all on that channel) against echo.Echo (tests/node/echo.proto, grpc_echo_server.js).
// Prints one JSON object: a key per scenario.
//   node grpc_echo_client.js --target HOST:PORT --scenario unary,stream,fail,big,deadline,authz
//        [--count N] [--codes CODE:DETAILS;...] [--size BYTES] [--timeout-ms MS]
// unary:    --count Echo calls one after the other: {ok, errors, servers: {NAME: calls}}
// stream:   one Stream call of --count messages: {received, in_order, code, servers}
// fail:     a Fail call per --codes entry: [{asked, code, details, metadata}] (trailing metadata,
//           binary values in hex)
// big:      Big with --size random bytes: {size, back_size, sent_sha256, server_sha256,
//           back_sha256, code}
// deadline: Slow(3 s) with a 500 ms deadline: {code} (4, DEADLINE_EXCEEDED, from the client)
// authz:    Echo; Fail(NOT_FOUND) with metadata x-deny: yes; Echo: {codes, details}
'use strict';
const crypto = require('crypto');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const args = { count: '20', codes: '5:no such thing;13:it broke', size: String(4 << 20),
	       'timeout-ms': '20000' };
for (let i = 2; i < process.argv.length; i += 2)
	args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
if (!args.target || !args.scenario) {
	console.error('usage: grpc_echo_client.js --target HOST:PORT --scenario LIST [options]');
	process.exit(2);
}

const def = loader.loadSync(path.join(__dirname, 'echo.proto'), {
	keepCase: true, longs: Number, defaults: true,
});
const Echo = grpc.loadPackageDefinition(def).echo.Echo;
const MAX = 64 << 20;
// One channel: a proxy from the environment must not come between, and no second connection.
const client = new Echo(args.target, grpc.credentials.createInsecure(), {
	'grpc.enable_http_proxy': 0, 'grpc.max_receive_message_length': MAX,
	'grpc.max_send_message_length': MAX, 'grpc.use_local_subchannel_pool': 1,
});
const timeout = Number(args['timeout-ms']);
const deadline = () => new Date(Date.now() + timeout);
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

function unary(method, req, md) {
	return new Promise((resolve) => {
		client[method](req, md || new grpc.Metadata(), { deadline: deadline() }, (err, resp) => {
			resolve({ err, resp });
		});
	});
}

function metadataObject(md) {
	const o = {};
	if (!md)
		return o;
	for (const [k, v] of Object.entries(md.getMap()))
		o[k] = Buffer.isBuffer(v) ? v.toString('hex') : v;
	return o;
}

const scenarios = {
	async unary() {
		const r = { ok: 0, errors: 0, servers: {}, first_error: null };
		for (let i = 0; i < Number(args.count); i++) {
			const { err, resp } = await unary('Echo', { message: `m${i}` });
			if (err || resp.message !== `m${i}`) {
				r.errors++;
				r.first_error = r.first_error || (err ? `${err.code} ${err.details}` : 'wrong message');
				continue;
			}
			r.ok++;
			r.servers[resp.server] = (r.servers[resp.server] || 0) + 1;
		}
		return r;
	},
	stream() {
		return new Promise((resolve) => {
			const r = { received: 0, in_order: true, code: null, servers: {} };
			const call = client.Stream({ message: 's', count: Number(args.count), interval_ms: 5 },
						   { deadline: deadline() });
			call.on('data', (m) => {
				if (m.seq !== r.received)
					r.in_order = false;
				r.received++;
				r.servers[m.server] = (r.servers[m.server] || 0) + 1;
			});
			call.on('status', (s) => { r.code = s.code; });
			call.on('error', () => {});
			call.on('close', () => resolve(r));
		});
	},
	async fail() {
		const out = [];
		for (const entry of args.codes.split(';')) {
			const i = entry.indexOf(':');
			const code = Number(entry.slice(0, i)), details = entry.slice(i + 1);
			const { err } = await unary('Fail', { code, details });
			out.push({ asked: code, code: err ? err.code : 0, details: err ? err.details : '',
				   metadata: metadataObject(err && err.metadata) });
		}
		return out;
	},
	async big() {
		const data = crypto.randomBytes(Number(args.size));
		const { err, resp } = await unary('Big', { data });
		return { size: data.length, sent_sha256: sha(data), code: err ? err.code : 0,
			 details: err ? err.details : '', back_size: resp ? resp.data.length : 0,
			 server_sha256: resp ? resp.sha256 : '', back_sha256: resp ? sha(resp.data) : '' };
	},
	deadline() {
		return new Promise((resolve) => {
			client.Slow({ delay_ms: 3000 }, new grpc.Metadata(),
				    { deadline: new Date(Date.now() + 500) },
				    (err) => resolve({ code: err ? err.code : 0 }));
		});
	},
	async authz() {
		const deny = new grpc.Metadata();
		deny.set('x-deny', 'yes');
		const calls = [await unary('Echo', { message: 'before' }),
			       await unary('Fail', { code: 5, details: 'not denied' }, deny),
			       await unary('Echo', { message: 'after' })];
		return { codes: calls.map((c) => (c.err ? c.err.code : 0)),
			 details: calls.map((c) => (c.err ? c.err.details : '')) };
	},
};

(async () => {
	const out = {};
	for (const s of args.scenario.split(',')) {
		if (!scenarios[s]) {
			console.error(`grpc_echo_client: unknown scenario ${s}`);
			process.exit(2);
		}
		out[s] = await scenarios[s]();
	}
	client.close();
	console.log(JSON.stringify(out));
})().catch((e) => {
	console.error(`grpc_echo_client: ${e.stack || e}`);
	process.exit(1);
});
