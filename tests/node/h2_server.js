// SPDX-License-Identifier: Apache-2.0
// An independent HTTP/2 server (node's http2, cleartext h2c with prior knowledge only: an
// HTTP/1.1 client is refused, so a test sees whether something translated for it) for the
// waypoint's HTTP/2 lab tests and benchmarks.
//   node h2_server.js --port 8081 [--host 0.0.0.0] [--name NAME] [--log FILE] [--http1-port P]
// --fail N: every request is answered N (body "fail N from NAME"), whatever its path.
// Prints "ready" once listening. --http1-port: also HTTP/1.1 on port P, serving /whoami and
// /bytes/N alike (the benchmark's HTTP/1.1 rows: the same server and payload). Paths:
//   /whoami          text: --name
//   /status/NNN      that status, body "status NNN from NAME"
//   /echo            the request body streamed back (flow control both ways)
//   /upload          JSON {len, sha256} of the request body
//   /bytes/N[?cl=0]  N bytes of a fixed pattern (byte i is i % 251); cl=0: no content-length
//   /trailers        body "with trailers", then trailers x-trailer: yes and x-server: NAME
//   /early-hints     103 (link: </a.css>; rel=preload), then 200 "after hints"
//   /req-trailers    JSON {len, trailers} of the request body and its trailers
//   /slow            a chunk every 100 ms for 60 s (to be reset by the client)
//   /delay/MS        200 "NAME after MS ms", MS ms later (a slow endpoint)
//   .../flaky/KEY/N/CODE[?delay=MS] (any prefix) the first N requests of KEY answer CODE (body
//                    "CODE try T from NAME"), the next ones 200 "ok after T tries from NAME"
//                    (MS ms later with delay): an endpoint that fails, then recovers
//   /goaway[?after=MS[&notice=MS2]] answers (MS ms later), then sends GOAWAY and closes the
//                    session gracefully; notice: GOAWAY already after MS2 ms, before the answer
//   anything else    JSON {method, path, headers, len, sha256, server}
// A request with "expect: 100-continue" gets a 100 first (RFC 9110 §10.1.1).
// --log: one JSON line per finished stream {path, id, rst (the RST_STREAM code or 0), aborted}
// where id is the request's x-req-id header.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const http2 = require('http2');

const args = { host: '0.0.0.0', port: '8081', name: 'h2-echo' };
for (let i = 2; i < process.argv.length; i += 2)
	args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];

function pattern(n) {
	const b = Buffer.allocUnsafe(n);
	for (let i = 0; i < n; i++)
		b[i] = i % 251;
	return b;
}
const CHUNK = pattern(251 * 261);	// a multiple of the period: chunks line up

function readBody(stream, done) {
	const h = crypto.createHash('sha256');
	let len = 0;
	stream.on('data', (d) => { h.update(d); len += d.length; });
	stream.on('end', () => done(len, h.digest('hex')));
}

function sendBytes(stream, n, withLength) {
	const hdr = { ':status': 200, 'content-type': 'application/octet-stream' };
	if (withLength)
		hdr['content-length'] = n;
	stream.respond(hdr);
	let left = n;
	const pump = () => {
		while (left > 0) {
			const c = Math.min(left, CHUNK.length);
			left -= c;
			if (!stream.write(CHUNK.subarray(0, c))) {
				stream.once('drain', pump);
				return;
			}
		}
		stream.end();
	};
	pump();
}

const flaky = new Map();	/* KEY of /flaky/KEY/N/CODE: the requests seen */
const server = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
server.on('stream', (stream, headers) => {
	const method = headers[':method'], url = new URL(headers[':path'], 'http://x');
	const p = url.pathname, id = headers['x-req-id'] || '';
	stream.on('error', () => {});
	if (headers.expect === '100-continue')
		stream.additionalHeaders({ ':status': 100 });
	stream.on('close', () => {
		if (args.log)
			fs.appendFileSync(args.log, JSON.stringify({ path: p, id, rst: stream.rstCode || 0,
				aborted: stream.aborted }) + '\n');
	});
	let m;
	if (args.fail) {	/* --fail 503: every request (its body read) */
		readBody(stream, () => {
			stream.respond({ ':status': Number(args.fail), 'content-type': 'text/plain' });
			stream.end(`fail ${args.fail} from ${args.name}`);
		});
	} else if ((m = p.match(/\/flaky\/([^/]+)\/(\d+)\/(\d{3})$/))) {
		const t = (flaky.get(m[1]) || 0) + 1, delay = Number(url.searchParams.get('delay') || 0);
		flaky.set(m[1], t);
		readBody(stream, () => {
			if (t <= Number(m[2])) {
				stream.respond({ ':status': Number(m[3]), 'content-type': 'text/plain' });
				stream.end(`${m[3]} try ${t} from ${args.name}`);
				return;
			}
			const timer = setTimeout(() => {
				if (stream.destroyed)
					return;
				stream.respond({ ':status': 200, 'content-type': 'text/plain' });
				stream.end(`ok after ${t} tries from ${args.name}`);
			}, delay);
			stream.on('close', () => clearTimeout(timer));
		});
	} else if (p === '/whoami') {
		stream.respond({ ':status': 200, 'content-type': 'text/plain' });
		stream.end(args.name);
	} else if ((m = p.match(/^\/status\/(\d{3})$/))) {
		stream.respond({ ':status': Number(m[1]), 'content-type': 'text/plain' });
		stream.end(`status ${m[1]} from ${args.name}`);
	} else if (p === '/echo') {
		stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' });
		stream.pipe(stream);
	} else if (p === '/upload') {
		readBody(stream, (len, sha256) => {
			stream.respond({ ':status': 200, 'content-type': 'application/json' });
			stream.end(JSON.stringify({ len, sha256, server: args.name }));
		});
	} else if ((m = p.match(/^\/bytes\/(\d+)$/))) {
		sendBytes(stream, Number(m[1]), url.searchParams.get('cl') !== '0');
	} else if (p === '/trailers') {
		stream.respond({ ':status': 200, 'content-type': 'text/plain' }, { waitForTrailers: true });
		stream.on('wantTrailers', () => stream.sendTrailers({ 'x-trailer': 'yes', 'x-server': args.name }));
		stream.end('with trailers');
	} else if (p === '/early-hints') {
		stream.additionalHeaders({ ':status': 103, link: '</a.css>; rel=preload' });
		setTimeout(() => {
			if (stream.destroyed)
				return;
			stream.respond({ ':status': 200, 'content-type': 'text/plain' });
			stream.end('after hints');
		}, 50);
	} else if (p === '/req-trailers') {
		let trailers = {};
		stream.on('trailers', (t) => { trailers = t; });
		readBody(stream, (len) => {
			stream.respond({ ':status': 200, 'content-type': 'application/json' });
			stream.end(JSON.stringify({ len, trailers }));
		});
	} else if (p === '/slow') {
		stream.respond({ ':status': 200, 'content-type': 'text/plain' });
		let n = 0;
		const t = setInterval(() => {
			if (stream.destroyed || ++n > 600) {
				clearInterval(t);
				if (!stream.destroyed)
					stream.end();
				return;
			}
			stream.write(`tick ${n}\n`);
		}, 100);
		stream.on('close', () => clearInterval(t));
	} else if ((m = p.match(/^\/delay\/(\d+)$/))) {
		const ms = Number(m[1]);
		const t = setTimeout(() => {
			if (stream.destroyed)
				return;
			stream.respond({ ':status': 200, 'content-type': 'text/plain' });
			stream.end(`${args.name} after ${ms} ms`);
		}, ms);
		stream.on('close', () => clearTimeout(t));
	} else if (p === '/goaway') {
		const answer = () => {
			if (stream.destroyed)
				return;
			stream.respond({ ':status': 200, 'content-type': 'text/plain' });
			stream.end('goaway follows', () => stream.session.close());
		};
		const after = Number(url.searchParams.get('after') || 0);
		const notice = Number(url.searchParams.get('notice') || 0);
		if (notice > 0)	/* GOAWAY first (this stream is the last), the answer later */
			setTimeout(() => stream.destroyed || stream.session.goaway(0, stream.id), notice);
		if (after > 0)
			setTimeout(answer, after);
		else
			answer();
	} else {
		readBody(stream, (len, sha256) => {
			const body = JSON.stringify({ method, path: headers[':path'], headers, len, sha256,
						      server: args.name });
			stream.respond({ ':status': 200, 'content-type': 'application/json' });
			stream.end(body);
		});
	}
});
server.on('error', (e) => {
	console.error(`h2_server: ${e.message}`);
	process.exit(1);
});
let h1 = null;
if (args['http1-port']) {
	h1 = http.createServer((req, res) => {
		const m = new URL(req.url, 'http://x').pathname.match(/^\/bytes\/(\d+)$/);
		req.resume();
		if (!m) {
			res.writeHead(200, { 'content-type': 'text/plain' });
			res.end(args.name);
			return;
		}
		const n = Number(m[1]);
		res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
		res.end(n <= CHUNK.length ? CHUNK.subarray(0, n) : pattern(n));
	});
	h1.keepAliveTimeout = 60000;
}
let listening = 0;
const up = () => { if (++listening === (h1 ? 2 : 1)) console.log('ready'); };
server.listen(Number(args.port), args.host, up);
if (h1)
	h1.listen(Number(args['http1-port']), args.host, up);
process.on('SIGTERM', () => {
	if (h1)
		h1.close();
	server.close(() => process.exit(0));
});
