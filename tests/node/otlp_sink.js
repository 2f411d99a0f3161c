#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
// An independent OTLP trace receiver for the tests: a @grpc/grpc-js server for
// TraceService/Export and an HTTP server for POST /v1/traces, both decoding with the
// protobuf code generated from the official definitions in @opentelemetry/otlp-transformer.
// Writes one JSON line per received span.
//
// usage: node otlp_sink.js [--grpc-port N] [--http-port N] [--host 127.0.0.1]
//          [--out FILE] [--ready FILE] [--fail-first N] [--fail-ms MS] [--fail-code 14]
//          [--http-fail-status 503] [--partial N] [--stats FILE]
//   --fail-first N  answer the first N export requests with UNAVAILABLE / HTTP 503
//   --fail-ms MS    answer every request with UNAVAILABLE / HTTP 503 for MS after start
//   --partial N     report N rejected spans in partial_success on every accepted request
//   --ready FILE    written once both servers listen; --stats FILE rewritten after each request
// Being "down" is the caller killing this process and starting it again on the same ports.
'use strict';

const fs = require('fs');
const http = require('http');
const grpc = require('@grpc/grpc-js');
const { Req, Resp, service } = require('./otlp_service');

function parseArgs(argv) {
	const o = { host: '127.0.0.1', grpcPort: 0, httpPort: 0, out: null, ready: null, stats: null,
		failFirst: 0, failMs: 0, failCode: grpc.status.UNAVAILABLE, httpFailStatus: 503, partial: 0 };
	const names = { '--grpc-port': 'grpcPort', '--http-port': 'httpPort', '--host': 'host',
		'--out': 'out', '--ready': 'ready', '--stats': 'stats', '--fail-first': 'failFirst',
		'--fail-ms': 'failMs', '--fail-code': 'failCode', '--http-fail-status': 'httpFailStatus',
		'--partial': 'partial' };
	for (let i = 2; i < argv.length; i++) {
		const k = names[argv[i]];
		if (!k || i + 1 >= argv.length) {
			console.error(`otlp_sink: bad argument ${argv[i]}`);
			process.exit(2);
		}
		const v = argv[++i];
		o[k] = ['host', 'out', 'ready', 'stats'].includes(k) ? v : Number(v);
	}
	return o;
}

const opt = parseArgs(process.argv);
const started = Date.now();
const stats = { requests: 0, refused: 0, spans: 0, grpc_requests: 0, http_requests: 0, bad: 0 };

function hex(b) {
	return b && b.length ? Buffer.from(b).toString('hex') : '';
}

function anyValue(v) {
	if (!v) return null;
	if (v.stringValue !== undefined && v.stringValue !== null && v.value === 'stringValue') return v.stringValue;
	if (v.value === 'intValue') return Number(v.intValue.toString());
	if (v.value === 'boolValue') return v.boolValue;
	if (v.value === 'doubleValue') return v.doubleValue;
	if (v.value === 'bytesValue') return hex(v.bytesValue);
	if (v.value === 'arrayValue') return (v.arrayValue.values || []).map(anyValue);
	if (v.value === 'kvlistValue') return kvs(v.kvlistValue.values);
	return null;
}

function kvs(list) {
	const o = {};
	for (const kv of list || []) o[kv.key] = anyValue(kv.value);
	return o;
}

// One JSON line per span of a decoded ExportTraceServiceRequest.
function record(req, proto) {
	const lines = [];
	for (const rs of req.resourceSpans || []) {
		const resource = kvs(rs.resource && rs.resource.attributes);
		for (const ss of rs.scopeSpans || []) {
			const scope = ss.scope ? { name: ss.scope.name, version: ss.scope.version } : null;
			for (const s of ss.spans || []) {
				lines.push(JSON.stringify({
					proto, resource, scope,
					trace_id: hex(s.traceId), span_id: hex(s.spanId),
					parent_span_id: hex(s.parentSpanId), flags: s.flags || 0,
					name: s.name, kind: s.kind,
					start: String(s.startTimeUnixNano), end: String(s.endTimeUnixNano),
					attributes: kvs(s.attributes),
					dropped_attributes: s.droppedAttributesCount || 0,
					status: { code: s.status ? s.status.code || 0 : 0, message: s.status ? s.status.message || '' : '' },
					links: (s.links || []).map(l => ({ trace_id: hex(l.traceId), span_id: hex(l.spanId) })),
				}));
			}
		}
	}
	stats.spans += lines.length;
	const text = lines.length ? lines.join('\n') + '\n' : '';
	if (opt.out) fs.appendFileSync(opt.out, text);
	else process.stdout.write(text);
}

function writeStats() {
	if (!opt.stats) return;
	const tmp = opt.stats + '.tmp';
	fs.writeFileSync(tmp, JSON.stringify(stats) + '\n');
	fs.renameSync(tmp, opt.stats);
}

// True when this request must be refused (fault injection).
function refuse() {
	stats.requests++;
	if (stats.requests <= opt.failFirst || Date.now() - started < opt.failMs) {
		stats.refused++;
		return true;
	}
	return false;
}

function okResponse() {
	const r = {};
	if (opt.partial > 0) r.partialSuccess = { rejectedSpans: opt.partial, errorMessage: 'sink: partial' };
	return Resp.fromObject(r);
}

const grpcServer = new grpc.Server();
grpcServer.addService(service, {
	Export(call, cb) {
		stats.grpc_requests++;
		if (refuse()) {
			writeStats();
			return cb({ code: opt.failCode, details: 'sink: refusing for the test' });
		}
		record(call.request, 'grpc');
		writeStats();
		cb(null, okResponse());
	},
});

const httpServer = http.createServer((req, res) => {
	if (req.method !== 'POST' || req.url !== '/v1/traces') {
		res.writeHead(404).end();
		return;
	}
	const chunks = [];
	req.on('data', c => chunks.push(c));
	req.on('end', () => {
		stats.http_requests++;
		if (refuse()) {
			writeStats();
			res.writeHead(opt.httpFailStatus, { 'content-type': 'text/plain' }).end('sink: refusing');
			return;
		}
		if (req.headers['content-type'] !== 'application/x-protobuf') {
			stats.bad++;
			writeStats();
			res.writeHead(415).end();
			return;
		}
		let msg;
		try {
			msg = Req.decode(Buffer.concat(chunks));
		} catch (e) {
			stats.bad++;
			writeStats();
			res.writeHead(400).end(String(e));
			return;
		}
		record(msg, 'http');
		writeStats();
		res.writeHead(200, { 'content-type': 'application/x-protobuf' });
		res.end(Buffer.from(Resp.encode(okResponse()).finish()));
	});
});

let pending = 0;
function listening() {
	if (--pending === 0 && opt.ready) fs.writeFileSync(opt.ready, String(process.pid) + '\n');
}

if (opt.grpcPort) {
	pending++;
	grpcServer.bindAsync(`${opt.host}:${opt.grpcPort}`, grpc.ServerCredentials.createInsecure(), (err) => {
		if (err) {
			console.error(`otlp_sink: grpc listen: ${err.message}`);
			process.exit(1);
		}
		listening();
	});
}
if (opt.httpPort) {
	pending++;
	httpServer.on('error', e => {
		console.error(`otlp_sink: http listen: ${e.message}`);
		process.exit(1);
	});
	httpServer.listen(opt.httpPort, opt.host, listening);
}
if (!pending) {
	console.error('otlp_sink: give --grpc-port and/or --http-port');
	process.exit(2);
}
for (const sig of ['SIGTERM', 'SIGINT']) {
	process.on(sig, () => {
		writeStats();
		process.exit(0);
	});
}
