#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# rq_http.py: the HTTP/1.1 peers of the request-span lab test (tests/lab/test_rq_spans.sh),
# written on raw sockets so every byte each side sees can be compared between runs.
#   serve --port N --record DIR: keep-alive server; answers have no Date (deterministic):
#     /fail -> 500, /slow -> 200 after 400 ms, anything else -> 200; "content-length" bodies.
#     The bytes of connection i go to DIR/conn-i.in (received) and DIR/conn-i.out (sent).
#   client --to IP:PORT --out FILE [--traceparent TP]: one connection, four requests in turn
#     (GET /ok, GET /fail with TP, GET /slow, GET /ok?q=1 with TP), FILE gets every byte
#     received; prints "durations_ms=a,b,c,d" and fails on an unexpected status.
import argparse
import os
import socket
import sys
import threading
import time


def read_head(sock, buf):
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            return None, buf
        buf += d
    i = buf.index(b"\r\n\r\n") + 4
    return buf[:i], buf[i:]


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return int(v.strip())
    return 0


def serve_conn(c, n, rec):
    got, sent = bytearray(), bytearray()
    buf = b""
    try:
        while True:
            head, buf = read_head(c, buf)
            if head is None:
                break
            got += head
            need = content_length(head)
            while len(buf) < need:
                d = c.recv(65536)
                if not d:
                    break
                buf += d
            got += buf[:need]
            buf = buf[need:]
            path = head.split(b" ")[1]
            code, reason = (500, b"Internal Server Error") if path.startswith(b"/fail") else (200, b"OK")
            if path.startswith(b"/slow"):
                time.sleep(0.4)
            body = b"answer to " + path + b"\n"
            out = b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n" % (
                code, reason, len(body)) + body
            c.sendall(out)
            sent += out
    finally:
        c.close()
        with open(os.path.join(rec, "conn-%d.in" % n), "wb") as f:
            f.write(got)
        with open(os.path.join(rec, "conn-%d.out" % n), "wb") as f:
            f.write(sent)


def serve(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", a.port))
    s.listen(64)
    n = 0
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve_conn, args=(c, n, a.record), daemon=True).start()
        n += 1


def client(a):
    host, port = a.to.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    tp = b"traceparent: " + a.traceparent.encode() + b"\r\n" if a.traceparent else b""
    reqs = [
        (b"GET /ok HTTP/1.1\r\nHost: app.default:%s\r\n\r\n" % port.encode(), 200),
        (b"GET /fail HTTP/1.1\r\nHost: app.default:%s\r\n%s\r\n" % (port.encode(), tp), 500),
        (b"GET /slow HTTP/1.1\r\nHost: app.default:%s\r\n\r\n" % port.encode(), 200),
        (b"GET /ok?q=1 HTTP/1.1\r\nHost: app.default:%s\r\n%s\r\n" % (port.encode(), tp), 200),
    ]
    got = bytearray()
    buf = b""
    durs = []
    for req, want in reqs:
        t0 = time.monotonic()
        s.sendall(req)
        head, buf = read_head(s, buf)
        if head is None:
            sys.exit("connection closed before the response")
        need = content_length(head)
        while len(buf) < need:
            d = s.recv(65536)
            if not d:
                sys.exit("connection closed in the body")
            buf += d
        got += head + buf[:need]
        buf = buf[need:]
        durs.append(int((time.monotonic() - t0) * 1000))
        code = int(head.split(b" ")[1])
        if code != want:
            sys.exit("got %d, want %d" % (code, want))
    s.close()
    with open(a.out, "wb") as f:
        f.write(got)
    print("durations_ms=" + ",".join(map(str, durs)))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sv = sub.add_parser("serve")
    sv.add_argument("--port", type=int, required=True)
    sv.add_argument("--record", required=True)
    cl = sub.add_parser("client")
    cl.add_argument("--to", required=True)
    cl.add_argument("--out", required=True)
    cl.add_argument("--traceparent", default="")
    a = ap.parse_args()
    serve(a) if a.cmd == "serve" else client(a)


if __name__ == "__main__":
    main()
