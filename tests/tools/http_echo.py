#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# http_echo.py: the HTTP/1.1 test server of the waypoint lab (keep-alive, chunked both ways).
#   GET  /whoami         -> 200, body "<name>\n"
#   GET  /status/<code>  -> <code>, body "status <code> from <name>\n"
#   POST /echo           -> 200, the request body sent back chunked (Transfer-Encoding: chunked)
#   GET  /headers        -> 200, the request headers as JSON (traceparent checks)
#   GET  /delay/<ms>     -> 200 after <ms> milliseconds, body "<name> after <ms> ms\n"
#   GET  /slow-body/<ms> -> 200 (content-length 13), "first\n" at once, "second\n" <ms> later
#   GET  /trailers       -> 200, chunked body "with trailers", trailers x-trailer: yes and
#                           x-server: <name>
#   GET  /early-hints    -> 103 (link: </a.css>; rel=preload), then 200 "after hints"
#   GET or POST .../flaky/<key>/<n>/<code>[?delay=<ms>] (any prefix): the first <n> requests of
#                           <key> answer <code> "<code> try <t> from <name>", the next ones 200
#                           "ok after <t> tries from <name> (<len> bytes)" (<ms> later)
# A request's own chunked trailers come back in "x-request-trailers" (JSON) on /echo's answer;
# "Expect: 100-continue" gets "100 Continue" (http.server does it).
# Every answer carries "x-served-by: <name>"; --delay MS holds every answer MS milliseconds
# more (a slow endpoint). usage: http_echo.py --port N --name NAME [--delay MS]
import argparse
import json
import re
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "http_echo"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.command, self.path))

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline(1024).strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while True:
                        t = self.rfile.readline(1024)
                        if t in (b"\r\n", b"\n", b""):
                            break
                        k, _, v = t.decode("latin-1").partition(":")
                        self.req_trailers[k.strip().lower()] = v.strip()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(8)
        n = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(n) if n else b""

    def flaky(self, body_len):
        """.../flaky/KEY/N/CODE: True when it answered."""
        m = re.search(r"/flaky/([^/?]+)/(\d+)/(\d{3})(\?|$)", self.path)
        if not m:
            return False
        with self.server.lock:
            t = self.server.flaky.get(m.group(1), 0) + 1
            self.server.flaky[m.group(1)] = t
        if t <= int(m.group(2)):
            self.send_plain(int(m.group(3)), ("%s try %d from %s\n" % (m.group(3), t, self.server.name)).encode())
            return True
        d = re.search(r"[?&]delay=(\d+)", self.path)
        if d:
            time.sleep(int(d.group(1)) / 1000.0)
        self.send_plain(200, ("ok after %d tries from %s (%d bytes)\n" % (t, self.server.name, body_len)).encode())
        return True

    def send_plain(self, code, body):
        self.send_response(code)
        self.send_header("x-served-by", self.server.name)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        name = self.server.name
        if self.server.delay_ms:
            time.sleep(self.server.delay_ms / 1000.0)
        if self.flaky(0):
            return
        if self.path.startswith("/delay/"):
            ms = int(self.path.split("/")[2].split("?")[0])
            time.sleep(ms / 1000.0)
            self.send_plain(200, ("%s after %d ms\n" % (name, ms)).encode())
        elif self.path.startswith("/slow-body/"):
            ms = int(self.path.split("/")[2].split("?")[0])
            self.send_response(200)
            self.send_header("x-served-by", name)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", "13")
            self.end_headers()
            try:
                self.wfile.write(b"first\n")
                self.wfile.flush()
                time.sleep(ms / 1000.0)
                self.wfile.write(b"second\n")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
        elif self.path.startswith("/status/"):
            code = int(self.path.split("/")[2].split("?")[0])
            self.send_plain(code, ("status %d from %s\n" % (code, name)).encode())
        elif self.path.startswith("/trailers"):
            self.send_response(200)
            self.send_header("x-served-by", name)
            self.send_header("content-type", "text/plain")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("trailer", "x-trailer, x-server")
            self.end_headers()
            self.wfile.write(b"d\r\nwith trailers\r\n0\r\nx-trailer: yes\r\nx-server: %s\r\n\r\n" % name.encode())
        elif self.path.startswith("/early-hints"):
            self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n")
            self.wfile.flush()
            time.sleep(0.05)
            self.send_plain(200, b"after hints\n")
        elif self.path.startswith("/headers"):
            self.send_plain(200, (json.dumps({k.lower(): v for k, v in self.headers.items()}) + "\n").encode())
        else:
            self.send_plain(200, (name + "\n").encode())

    do_HEAD = do_GET

    def do_POST(self):
        self.req_trailers = {}
        body = self.read_body()
        if self.server.delay_ms:
            time.sleep(self.server.delay_ms / 1000.0)
        if self.flaky(len(body)):
            return
        self.send_response(200)
        self.send_header("x-served-by", self.server.name)
        if self.req_trailers:
            self.send_header("x-request-trailers", json.dumps(self.req_trailers, sort_keys=True))
        self.send_header("content-type", "application/octet-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i in range(0, len(body), 40000):
            part = body[i:i + 40000]
            self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    do_PUT = do_POST


class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="http_echo")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--delay", type=int, default=0, help="milliseconds before every answer")
    a = ap.parse_args()
    srv = Server((a.host, a.port), Handler)
    srv.name = a.name
    srv.delay_ms = a.delay
    srv.flaky = {}
    srv.lock = threading.Lock()
    srv.serve_forever()


if __name__ == "__main__":
    main()
