#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
// An OTLP trace receiver for the exporter's transport tests: TLS (a @grpc/grpc-js server with
// SSL credentials, and an https server for POST /v1/traces) and the failure answers that
// steer retries (RESOURCE_EXHAUSTED with or without RetryInfo in grpc-status-details-bin,
// HTTP statuses with Retry-After). Requests are decoded with the protobuf code generated from
// the official definitions in @opentelemetry/otlp-transformer; the google.rpc messages are
// built with protobufjs from their official field numbers. Plaintext without --cert.
//
// usage: node otlp_tls_sink.js [--grpc-port N] [--http-port N] [--cert PEM --key PEM]
//          [--out FILE] [--ready FILE] [--stats FILE]
//          [--fail-first N] [--fail-code 8] [--retry-info-ms MS]
//          [--http-fail-status 429] [--retry-after VALUE] [--client-ca PEM]
//   --fail-first N     answer the first N requests with --fail-code / --http-fail-status
//   --retry-info-ms MS add a google.rpc.RetryInfo with this retry_delay to the gRPC failures
//   --retry-after V    send "Retry-After: V" with the HTTP failures
//   --client-ca PEM    https: require a client certificate issued by this CA
//   --out FILE         one JSON line {proto, name, span_id} per received span
//   --stats FILE       {requests, refused, spans, times: [ms since start of each request]}
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const grpc = require('@grpc/grpc-js');
const protobuf = require('protobufjs');
const { Req, Resp, service } = require('./otlp_service');

// google/rpc/status.proto, google/rpc/error_details.proto, google/protobuf/{any,duration}.proto
const rpc = protobuf.Root.fromJSON({ nested: {
	google: { nested: {
		protobuf: { nested: {
			Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } },
			Duration: { fields: { seconds: { type: 'int64', id: 1 }, nanos: { type: 'int32', id: 2 } } },
		} },
		rpc: { nested: {
			Status: { fields: { code: { type: 'int32', id: 1 }, message: { type: 'string', id: 2 },
				details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 } } },
			RetryInfo: { fields: { retry_delay: { type: 'google.protobuf.Duration', id: 1 } } },
		} },
	} },
} });
const Status = rpc.lookupType('google.rpc.Status');
const RetryInfo = rpc.lookupType('google.rpc.RetryInfo');

const opt = { grpcPort: 0, httpPort: 0, host: '127.0.0.1', cert: null, key: null, out: null,
	ready: null, stats: null, failFirst: 0, failCode: grpc.status.RESOURCE_EXHAUSTED,
	retryInfoMs: -1, httpFailStatus: 429, retryAfter: null, clientCa: null };
const names = { '--grpc-port': 'grpcPort', '--http-port': 'httpPort', '--host': 'host',
	'--cert': 'cert', '--key': 'key', '--out': 'out', '--ready': 'ready', '--stats': 'stats',
	'--fail-first': 'failFirst', '--fail-code': 'failCode', '--retry-info-ms': 'retryInfoMs',
	'--http-fail-status': 'httpFailStatus', '--retry-after': 'retryAfter', '--client-ca': 'clientCa' };
const strings = ['host', 'cert', 'key', 'out', 'ready', 'stats', 'retryAfter', 'clientCa'];
for (let i = 2; i < process.argv.length; i += 2) {
	const k = names[process.argv[i]];
	if (!k || i + 1 >= process.argv.length) {
		console.error(`otlp_tls_sink: bad argument ${process.argv[i]}`);
		process.exit(2);
	}
	opt[k] = strings.includes(k) ? process.argv[i + 1] : Number(process.argv[i + 1]);
}

const started = Date.now();
const stats = { requests: 0, refused: 0, spans: 0, times: [] };

function writeStats() {
	if (!opt.stats) return;
	fs.writeFileSync(opt.stats + '.tmp', JSON.stringify(stats) + '\n');
	fs.renameSync(opt.stats + '.tmp', opt.stats);
}

// Counts the request; true when it must be refused.
function refuse() {
	stats.requests++;
	stats.times.push(Date.now() - started);
	if (stats.requests <= opt.failFirst) {
		stats.refused++;
		writeStats();
		return true;
	}
	return false;
}

function record(req, proto) {
	let text = '';
	for (const rs of req.resourceSpans || [])
		for (const ss of rs.scopeSpans || [])
			for (const s of ss.spans || []) {
				text += JSON.stringify({ proto, name: s.name,
					span_id: Buffer.from(s.spanId || []).toString('hex') }) + '\n';
				stats.spans++;
			}
	if (opt.out) fs.appendFileSync(opt.out, text);
	writeStats();
}

function grpcFailure() {
	const details = 'sink: refusing for the test';
	const e = { code: opt.failCode, details };
	if (opt.retryInfoMs >= 0) {
		const info = RetryInfo.encode({ retry_delay: { seconds: Math.floor(opt.retryInfoMs / 1000),
			nanos: (opt.retryInfoMs % 1000) * 1e6 } }).finish();
		const st = Status.encode({ code: opt.failCode, message: details, details: [
			{ type_url: 'type.googleapis.com/google.rpc.RetryInfo', value: info }] }).finish();
		e.metadata = new grpc.Metadata();
		e.metadata.set('grpc-status-details-bin', Buffer.from(st));
	}
	return e;
}

let pending = 0;
function listening() {
	if (--pending === 0 && opt.ready) fs.writeFileSync(opt.ready, String(process.pid) + '\n');
}
function fatal(what, err) {
	console.error(`otlp_tls_sink: ${what}: ${err.message}`);
	process.exit(1);
}

const tls = opt.cert ? { cert: fs.readFileSync(opt.cert), key: fs.readFileSync(opt.key) } : null;
if (tls && opt.clientCa)
	Object.assign(tls, { ca: fs.readFileSync(opt.clientCa), requestCert: true, rejectUnauthorized: true });

if (opt.grpcPort) {
	const server = new grpc.Server();
	server.addService(service, {
		Export(call, cb) {
			if (refuse()) return cb(grpcFailure());
			record(call.request, 'grpc');
			cb(null, Resp.fromObject({}));
		},
	});
	// With --client-ca, a client certificate from that CA is required (checkClientCertificate).
	const creds = tls ? grpc.ServerCredentials.createSsl(tls.ca || null,
		[{ private_key: tls.key, cert_chain: tls.cert }], !!tls.ca)
		: grpc.ServerCredentials.createInsecure();
	pending++;
	server.bindAsync(`${opt.host}:${opt.grpcPort}`, creds, err => err ? fatal('grpc listen', err) : listening());
}

if (opt.httpPort) {
	const handler = (req, res) => {
		const chunks = [];
		req.on('data', c => chunks.push(c));
		req.on('end', () => {
			if (req.method !== 'POST' || req.url !== '/v1/traces') return res.writeHead(404).end();
			if (refuse()) {
				const h = { 'content-type': 'text/plain' };
				if (opt.retryAfter !== null) h['retry-after'] = opt.retryAfter;
				return res.writeHead(opt.httpFailStatus, h).end('sink: refusing');
			}
			record(Req.decode(Buffer.concat(chunks)), 'http');
			res.writeHead(200, { 'content-type': 'application/x-protobuf' });
			res.end(Buffer.from(Resp.encode(Resp.fromObject({})).finish()));
		});
	};
	const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
	server.on('error', e => fatal('http listen', e));
	pending++;
	server.listen(opt.httpPort, opt.host, listening);
}

if (!pending) {
	console.error('otlp_tls_sink: give --grpc-port and/or --http-port');
	process.exit(2);
}
for (const sig of ['SIGTERM', 'SIGINT'])
	process.on(sig, () => process.exit(0));
