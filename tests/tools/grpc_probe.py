#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Sends hand-made gRPC requests (python3-h2 over Python's ssl, no ambit code) to a gRPC/TLS
server and prints what came back, for tests of a server's refusals.

  grpc_probe.py HOST:PORT --ca CA.pem CASE...

CASE is NAME=SPEC; SPEC is comma-separated: method=GET, ct=text/plain, path=/x,
timeout=VALUE (grpc-timeout), body=HEX (the raw DATA, framing included) or msg=N (one
uncompressed message of N zero bytes), flag=1 (the compressed flag on msg), twice (the message
twice). All cases go as streams of one connection. Prints one JSON line per case:
{"case": NAME, "status": ":status", "grpc_status": "..." or null, "grpc_message": ..., "reset": code or null}.
--alpn http/1.1 only tries the handshake with that ALPN and prints {"handshake": "ok"|error}.
"""
import argparse
import json
import socket
import ssl
import struct
import sys

import h2.config
import h2.connection
import h2.events


def request(spec):
    opts = dict(p.split("=", 1) if "=" in p else (p, "1") for p in spec.split(",") if p)
    headers = [(":method", opts.get("method", "POST")), (":scheme", "https"),
               (":path", opts.get("path", "/istio.v1.auth.IstioCertificateService/CreateCertificate")),
               (":authority", "ambit-ca"), ("content-type", opts.get("ct", "application/grpc")),
               ("te", "trailers")]
    if "timeout" in opts:
        headers.append(("grpc-timeout", opts["timeout"]))
    if "body" in opts:
        body = bytes.fromhex(opts["body"])
    else:
        n = int(opts.get("msg", "0"))
        body = struct.pack(">BI", int(opts.get("flag", "0")), n) + b"\0" * n
        if "twice" in opts:
            body += body
    return headers, body


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("addr")
    ap.add_argument("--ca", required=True)
    ap.add_argument("--alpn", default="h2")
    ap.add_argument("cases", nargs="*")
    a = ap.parse_intermixed_args()
    host, port = a.addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=a.ca)
    ctx.check_hostname = False
    ctx.set_alpn_protocols([a.alpn])
    raw = socket.create_connection((host, int(port)), timeout=10)
    try:
        tls = ctx.wrap_socket(raw, server_hostname="ambit-ca")
    except (ssl.SSLError, OSError) as e:
        print(json.dumps({"handshake": str(e)}))
        return 0
    if a.alpn != "h2":
        print(json.dumps({"handshake": "ok", "alpn": tls.selected_alpn_protocol()}))
        return 0
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    names, out = {}, {}
    for c in a.cases:
        name, spec = c.split("=", 1)
        hdrs, body = request(spec)
        sid = conn.get_next_available_stream_id()
        names[sid] = name
        out[sid] = {"case": name, "status": None, "grpc_status": None, "grpc_message": None,
                    "reset": None}
        conn.send_headers(sid, hdrs, end_stream=not body)
        if body:
            # within the initial windows (64 KiB): larger bodies go as far as they may
            n = min(len(body), conn.local_flow_control_window(sid), 65535)
            for off in range(0, n, 16384):
                conn.send_data(sid, body[off:min(off + 16384, n)])
            conn.end_stream(sid) if n == len(body) else None
    tls.sendall(conn.data_to_send())
    done = set()
    while len(done) < len(out):
        data = tls.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            sid = getattr(ev, "stream_id", None)
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                for k, v in ev.headers:
                    k, v = k.decode(), v.decode()
                    if k == ":status":
                        out[sid]["status"] = v
                    elif k == "grpc-status":
                        out[sid]["grpc_status"] = v
                    elif k == "grpc-message":
                        out[sid]["grpc_message"] = v
            elif isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            if isinstance(ev, h2.events.StreamEnded):
                done.add(sid)
            elif isinstance(ev, h2.events.StreamReset):
                out[sid]["reset"] = int(ev.error_code)
                done.add(sid)
        tls.sendall(conn.data_to_send())
    for sid in sorted(out):
        print(json.dumps(out[sid]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
