#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# An independent HTTP/2 client (python3-h2, cleartext with prior knowledge on one TCP connection)
# for the waypoint's HTTP/2 lab test, against tests/node/h2_server.js. Prints "ok -"/"not ok -"
# lines (h2client.NAME), one or more per scenario, all scenarios on the same connection unless
# a GOAWAY ends it.
#   h2client.py HOST:PORT --scenario LIST [--authority A] [--bytes N] [--window N]
#               [--pause S] [--watch-pid PID] [--max-growth-mib M] [--server-log FILE ...]
# Scenarios (comma-separated, in order):
#   get       GET /whoami: 200 and a body
#   upload    POST /upload of --bytes random bytes: the server's SHA-256 is ours
#   download  GET /bytes/N with and without content-length: the body is the server's pattern
#   echo      POST /echo of --bytes: what comes back is what went, byte for byte (both
#             directions in flight at once, each under flow control)
#   flow      a stream window of --window bytes, then GET /bytes/N and no WINDOW_UPDATE for --pause
#             seconds: the sender stalls (at most the windows arrive; with --watch-pid, that
#             process's RSS grows by less than --max-growth-mib meanwhile), then the data is
#             acknowledged in small steps and the whole body arrives intact
#   rst       GET /slow, RST_STREAM(CANCEL) after two chunks: the next request on the same
#             connection is answered; with --server-log, the server saw the stream reset too
#   trailers  GET /trailers: the body, then trailers x-trailer: yes
#   early_hints  GET /early-hints: a 103 with its link field first, then the 200 "after hints"
#   continue  POST /echo with "expect: 100-continue" and no body yet: a 100 comes (within 5 s),
#             then the body goes and comes back byte for byte
#   goaway    GET /goaway (the server answers, then sends GOAWAY): the answer is complete, and
#             three more requests succeed (on a new connection when a GOAWAY ended this one)
#   await_goaway  waits up to --await seconds for the peer's GOAWAY (a proxy draining): it comes,
#             with NO_ERROR
#   deny      GET --deny-path (default /forbidden) is refused by an L7 policy: 403, text/plain,
#             "RBAC: access denied"; then GET /whoami on the same connection is answered
import argparse
import glob
import hashlib
import json
import os
import socket
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import h2peer  # noqa: E402  (Pump, check, hostport: the HBONE peer's helpers)
from h2peer import Pump, check, hostport  # noqa: E402

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.errors  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402

h2peer.PREFIX = "h2client."


class Plain:
    """A TCP socket as Pump expects a TLS one (nothing is ever pending inside it)."""

    def __init__(self, sock):
        self.sock = sock

    def pending(self):
        return 0

    def sendall(self, data):
        self.sock.sendall(data)

    def recv(self, n):
        return self.sock.recv(n)

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        self.sock.close()


class Client:
    def __init__(self, a):
        self.a = a
        self.connect()

    def connect(self):
        sock = socket.create_connection(hostport(self.a.target), timeout=20)
        self.tls = Plain(sock)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.p = Pump(self.tls, self.conn)
        self.p.flush()
        self.goaway = None  # the GOAWAY's error code once one came
        self.streams = {}   # sid -> response state

    def close(self):
        try:
            self.conn.close_connection()
            self.p.flush()
        except Exception:
            pass
        self.tls.close()

    def submit(self, method, path, body=None, extra=()):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":authority", self.a.authority),
                (":path", path)] + list(extra)
        if body is not None:
            hdrs.append(("content-length", str(len(body))))
        self.conn.send_headers(sid, hdrs, end_stream=body is None)
        if body is not None:
            self.p.queue(sid, body, end=True)
        self.streams[sid] = {"status": None, "headers": {}, "body": bytearray(), "sha": hashlib.sha256(),
                             "len": 0, "trailers": {}, "ended": False, "reset": None, "keep": True,
                             "interim": []}
        self.p.flush()
        return sid

    def pump_once(self, ack=True, timeout=20):
        """Reads once and handles the events; False when the connection ended."""
        evs = self.p.events(timeout)
        if evs is None:
            return False
        for ev in evs:
            st = self.streams.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.ResponseReceived) and st:
                h = {k.decode(): v.decode() for k, v in ev.headers}
                st["status"], st["headers"] = int(h[":status"]), h
            elif isinstance(ev, h2.events.InformationalResponseReceived) and st:
                st["interim"].append({k.decode(): v.decode() for k, v in ev.headers})
            elif isinstance(ev, h2.events.TrailersReceived) and st:
                st["trailers"] = {k.decode(): v.decode() for k, v in ev.headers}
            elif isinstance(ev, h2.events.DataReceived):
                if st:
                    st["sha"].update(ev.data)
                    st["len"] += len(ev.data)
                    if st["keep"]:
                        st["body"] += ev.data
                if ack or not st:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                else:
                    st["unacked"] = st.get("unacked", 0) + ev.flow_controlled_length
            elif isinstance(ev, h2.events.StreamEnded) and st:
                st["ended"] = True
            elif isinstance(ev, h2.events.StreamReset) and st:
                st["reset"] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev.error_code
                self.goaway_last = ev.last_stream_id
        self.p.flush()
        return True

    def wait(self, sid, timeout=30):
        st = self.streams[sid]
        end = time.monotonic() + timeout
        while not st["ended"] and st["reset"] is None and time.monotonic() < end:
            if not self.pump_once(timeout=max(0.1, end - time.monotonic())):
                break
        return st

    def fetch(self, method, path, body=None, extra=()):
        return self.wait(self.submit(method, path, body, extra))


def pattern_sha(n):
    period = bytes(i % 251 for i in range(251))
    h = hashlib.sha256()
    h.update(period * (n // 251))
    h.update(period[: n % 251])
    return h.hexdigest()


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def sc_get(c, a):
    st = c.fetch("GET", "/whoami")
    check("get_whoami_200", st["status"] == 200 and st["ended"] and st["body"], repr(st["status"]))


def sc_upload(c, a):
    body = os.urandom(a.bytes)
    st = c.fetch("POST", "/upload", body)
    try:
        got = json.loads(bytes(st["body"]))
    except ValueError:
        got = {}
    check("upload_byte_exact", st["status"] == 200 and got.get("len") == len(body) and
          got.get("sha256") == hashlib.sha256(body).hexdigest(),
          f"status {st['status']} {str(got)[:200]}")


def sc_download(c, a):
    for q, name in (("", "download_with_length"), ("?cl=0", "download_without_length")):
        sid = c.submit("GET", f"/bytes/{a.bytes}{q}")
        c.streams[sid]["keep"] = False
        st = c.wait(sid, timeout=60)
        check(name, st["status"] == 200 and st["ended"] and st["len"] == a.bytes and
              st["sha"].hexdigest() == pattern_sha(a.bytes),
              f"status {st['status']} {st['len']} of {a.bytes} bytes, reset {st['reset']}")


def sc_echo(c, a):
    body = os.urandom(a.bytes)
    sid = c.submit("POST", "/echo", body)
    c.streams[sid]["keep"] = False
    st = c.wait(sid, timeout=60)
    check("echo_both_ways_byte_exact", st["status"] == 200 and st["ended"] and
          st["sha"].hexdigest() == hashlib.sha256(body).hexdigest(),
          f"status {st['status']} {st['len']} of {len(body)} bytes back, reset {st['reset']}")


def sc_flow(c, a):
    # RFC 9113 §6.9.2: a new SETTINGS_INITIAL_WINDOW_SIZE applies to the streams opened after it
    c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: a.window})
    c.p.flush()
    before = rss_kib(a.watch_pid) if a.watch_pid else None
    sid = c.submit("GET", f"/bytes/{a.bytes}")
    st = c.streams[sid]
    st["keep"] = False
    end, peak = time.monotonic() + a.pause, 0
    while time.monotonic() < end and not st["ended"] and st["reset"] is None:
        try:
            if not c.pump_once(ack=False, timeout=max(0.05, end - time.monotonic())):
                break
        except TimeoutError:
            break
        if a.watch_pid:
            peak = max(peak, rss_kib(a.watch_pid) or 0)
    stalled = st["len"]
    # the connection window (65535 until we raise it) bounds what may arrive unacknowledged
    check("flow_sender_stalls_at_the_window", 0 < stalled <= 65535 and not st["ended"],
          f"{stalled} bytes arrived without a WINDOW_UPDATE, ended {st['ended']}")
    if a.watch_pid:
        growth = (peak - before) / 1024 if before is not None and peak else None
        check("flow_no_unbounded_buffering", growth is not None and growth < a.max_growth_mib,
              f"pid {a.watch_pid} RSS {before} KiB -> peak {peak} KiB")
    # now read slowly: acknowledge in small steps until the body is complete
    end = time.monotonic() + 120
    while not st["ended"] and st["reset"] is None and time.monotonic() < end:
        n = st.get("unacked", 0)
        if n:
            c.conn.acknowledge_received_data(n, sid)
            st["unacked"] = 0
            c.p.flush()
        if not c.pump_once(ack=False, timeout=20):
            break
        time.sleep(0.001)
    check("flow_slow_reader_gets_everything", st["ended"] and st["len"] == a.bytes and
          st["sha"].hexdigest() == pattern_sha(a.bytes),
          f"{st['len']} of {a.bytes} bytes, reset {st['reset']}")
    c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
    c.p.flush()


def sc_rst(c, a):
    rid = uuid.uuid4().hex
    sid = c.submit("GET", "/slow", extra=[("x-req-id", rid)])
    st = c.streams[sid]
    end = time.monotonic() + 10
    while st["body"].count(b"\n") < 2 and not st["ended"] and time.monotonic() < end:
        if not c.pump_once():
            break
    got_ticks = st["body"].count(b"\n") >= 2
    c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    c.p.flush()
    check("rst_slow_stream_started", got_ticks, f"status {st['status']} {bytes(st['body'][:80])}")
    nxt = c.fetch("GET", "/whoami")
    check("rst_connection_still_usable", nxt["status"] == 200 and nxt["ended"] and c.goaway is None,
          f"status {nxt['status']} goaway {c.goaway}")
    if a.server_log:
        seen, end = None, time.monotonic() + 5
        while seen is None and time.monotonic() < end:
            for path in [p for pat in a.server_log for p in glob.glob(pat)]:
                with open(path) as f:
                    for line in f:
                        rec = json.loads(line)
                        if rec.get("id") == rid:
                            seen = rec
            time.sleep(0.1)
        check("rst_reaches_the_server", seen is not None and (seen["rst"] != 0 or seen["aborted"]),
              f"server record: {seen}")


def sc_trailers(c, a):
    st = c.fetch("GET", "/trailers")
    check("trailers_received", st["status"] == 200 and bytes(st["body"]) == b"with trailers" and
          st["trailers"].get("x-trailer") == "yes", f"status {st['status']} trailers {st['trailers']}")


def sc_early_hints(c, a):
    st = c.fetch("GET", "/early-hints")
    hints = [i for i in st["interim"] if i.get(":status") == "103"]
    check("early_hints_forwarded", st["status"] == 200 and bytes(st["body"]).strip() == b"after hints" and
          len(hints) == 1 and hints[0].get("link") == "</a.css>; rel=preload",
          f"status {st['status']} interim {st['interim']}")


def sc_continue(c, a):
    body = os.urandom(20000)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", a.authority),
                              (":path", "/echo"), ("content-length", str(len(body))),
                              ("expect", "100-continue")], end_stream=False)
    st = c.streams[sid] = {"status": None, "headers": {}, "body": bytearray(), "sha": hashlib.sha256(),
                           "len": 0, "trailers": {}, "ended": False, "reset": None, "keep": True,
                           "interim": []}
    c.p.flush()
    end = time.monotonic() + 5
    while not st["interim"] and st["status"] is None and time.monotonic() < end:
        if not c.pump_once(timeout=max(0.1, end - time.monotonic())):
            break
    # the 100 came before any body byte went (the final head may be there too: node's /echo
    # answers at once)
    got100 = [i.get(":status") for i in st["interim"]] == ["100"]
    check("continue_100_before_body", got100, f"interim {st['interim']} status {st['status']}")
    c.p.queue(sid, body, end=True)
    c.p.flush()
    c.wait(sid)
    check("continue_body_echoed", st["status"] == 200 and bytes(st["body"]) == body,
          f"status {st['status']} {len(st['body'])} bytes")


def sc_goaway(c, a):
    st = c.fetch("GET", "/goaway")
    check("goaway_answer_complete", st["status"] == 200 and st["ended"] and
          bytes(st["body"]) == b"goaway follows", f"status {st['status']} reset {st['reset']}")
    # Let a GOAWAY that follows the answer arrive.
    end = time.monotonic() + 1
    try:
        while time.monotonic() < end and c.goaway is None:
            if not c.pump_once(timeout=max(0.05, end - time.monotonic())):
                break
    except TimeoutError:
        pass
    print(f"# h2client: GOAWAY received: {c.goaway is not None}")
    ok = 0
    for _ in range(3):
        if c.goaway is not None:
            c.close()
            c.connect()
        if c.fetch("GET", "/whoami")["status"] == 200:
            ok += 1
    check("goaway_later_requests_succeed", ok == 3, f"{ok} of 3")


def sc_await_goaway(c, a):
    print("# h2client: waiting for GOAWAY", flush=True)
    end = time.monotonic() + a.await_s
    try:
        while c.goaway is None and time.monotonic() < end:
            if not c.pump_once(timeout=max(0.05, end - time.monotonic())):
                break
    except (TimeoutError, OSError):
        pass
    check("goaway_received_from_peer", c.goaway == 0,
          "no GOAWAY" if c.goaway is None else f"GOAWAY with error code {c.goaway}")


def sc_deny(c, a):
    st = c.fetch("GET", a.deny_path)
    check("deny_403_rbac_access_denied", st["status"] == 403 and st["ended"] and
          st["headers"].get("content-type", "").startswith("text/plain") and
          bytes(st["body"]).strip() == b"RBAC: access denied",
          f"status {st['status']} {st['headers'].get('content-type')} {bytes(st['body'][:80])!r}")
    nxt = c.fetch("GET", "/whoami")
    check("deny_connection_still_usable", nxt["status"] == 200 and nxt["ended"] and c.goaway is None,
          f"status {nxt['status']} goaway {c.goaway} reset {nxt['reset']}")


SCENARIOS = {"get": sc_get, "upload": sc_upload, "download": sc_download, "echo": sc_echo,
             "flow": sc_flow, "rst": sc_rst, "trailers": sc_trailers, "goaway": sc_goaway,
             "deny": sc_deny, "await_goaway": sc_await_goaway, "early_hints": sc_early_hints,
             "continue": sc_continue}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--authority")
    ap.add_argument("--bytes", type=int, default=8 << 20)
    ap.add_argument("--window", type=int, default=16384)
    ap.add_argument("--pause", type=float, default=2.0)
    ap.add_argument("--watch-pid", type=int)
    ap.add_argument("--max-growth-mib", type=float, default=16)
    ap.add_argument("--server-log", action="append", default=[])
    ap.add_argument("--deny-path", default="/forbidden")
    ap.add_argument("--await", dest="await_s", type=float, default=15)
    a = ap.parse_args()
    a.authority = a.authority or a.target
    names = a.scenario.split(",")
    for n in names:
        if n not in SCENARIOS:
            ap.error(f"unknown scenario {n}")
    c = None
    try:
        c = Client(a)
        for n in names:
            SCENARIOS[n](c, a)
    except Exception as e:  # a failure is a "not ok" line, never a hang
        check("exception", False, repr(e))
    finally:
        if c:
            c.close()
    sys.exit(0 if h2peer.results and all(h2peer.results) else 1)


if __name__ == "__main__":
    main()
