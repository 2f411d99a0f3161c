#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# h2_requests.py: N requests on one HTTP/2 connection (cleartext, prior knowledge; python3-h2),
# up to --concurrent streams in flight at once. Prints one line per request, in order:
# "STATUS BODY" (the body's first line), after its response fields as "name: value" lines with
# --show-headers; a stream the server reset also gets a line "stream ID reset: CODE" on stderr.
#   h2_requests.py HOST:PORT --path /whoami [-n 200] [--concurrent 10] [-H 'name: value' ...]
#                  [--show-headers]
import argparse
import socket
import sys

import h2.config
import h2.connection
import h2.events


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--path", default="/")
    ap.add_argument("-n", type=int, default=1)
    ap.add_argument("--concurrent", type=int, default=10)
    ap.add_argument("-H", dest="headers", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=20)
    ap.add_argument("--show-headers", action="store_true")
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=a.timeout)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    extra = [tuple(x.strip() for x in h.split(":", 1)) for h in a.headers]
    results = {}
    order = []
    inflight = set()
    sent = 0

    def send_one():
        nonlocal sent
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", a.path), (":scheme", "http"),
                                (":authority", a.target)] + extra, end_stream=True)
        results[sid] = {"status": 0, "body": b"", "fields": []}
        order.append(sid)
        inflight.add(sid)
        sent += 1

    while sent < a.n or inflight:
        while sent < a.n and len(inflight) < a.concurrent:
            send_one()
        sock.sendall(conn.data_to_send())
        data = sock.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                results[ev.stream_id]["status"] = int(dict(ev.headers)[b":status"])
                results[ev.stream_id]["fields"] = ev.headers
            elif isinstance(ev, h2.events.DataReceived):
                results[ev.stream_id]["body"] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                inflight.discard(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                inflight.discard(ev.stream_id)
                print("stream %d reset: %d" % (ev.stream_id, ev.error_code), file=sys.stderr)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                inflight.clear()
                sent = a.n
        sock.sendall(conn.data_to_send())
    for sid in order:
        r = results[sid]
        body = r["body"].decode("utf-8", "replace")
        for name, value in r["fields"] if a.show_headers else []:
            print("%s: %s" % (name.decode("latin-1"), value.decode("latin-1")))
        print("%d %s" % (r["status"], body.splitlines()[0] if body else ""))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
