#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# An independent HBONE peer for interop tests (python3-h2 + Python's ssl: TLS 1.3, ALPN h2,
# certificates from the test CA). Driven by tests/unit/test_hbone.c; prints "ok -"/"not ok -".
#   h2peer.py client HOST:PORT AUTHORITY --sni NAME --expect SPIFFE_ID --bytes N  (+ TLS files)
#   h2peer.py server --expect-peer SPIFFE_ID --streams N [--listen IP:PORT]
#                    [--header NAME=REGEX ...] [--no-sni]                        (+ TLS files)
#     each CONNECT must carry header NAME matching REGEX (re.search), as well as traceparent;
#     --no-sni: the client must send no SNI (ztunnel's pod-addressed form, where the server
#     is found by the destination pod's IP:15008, as a ztunnel node serves it)
#   HOST:PORT may be IPv6 as [ADDR]:PORT; without --sni no SNI is sent (pod-addressed HBONE)
#   h2peer.py probe HOST:PORT --expect SPIFFE_ID --case AUTHORITY=STATUS[=REASON] ... (+ TLS files)
#     one connection, one CONNECT per --case in turn: the answer's :status must be STATUS and
#     its ambit-reason contain REASON; on a 200 an HTTP/1.1 "GET --path" goes through the
#     tunnel and its answer must start with "HTTP/1.1 200" (a waypoint's refusals, lab test);
#     --sni NAME asks for that server identity (a node agent's 15008 requires it)
#   h2peer.py refused HOST:PORT [--no-cert] [--tls12] [--plain preface|junk] [--want TEXT]
#     the server must refuse the connection: no HTTP/2 frame comes back and it ends (with a TLS
#     alert, an error or EOF); --want: the TLS error (alert) must contain TEXT
#   h2peer.py attack HOST:PORT --kind KIND --authority A --count N [--connections C]
#     [--verdict-s S] (+ TLS)
#     HTTP/2 abuse from a peer with a valid certificate, on C connections in turn, written frame
#     by frame (h2 would refuse to misbehave); KIND: rapid_reset (CONNECT then RST_STREAM, N
#     times), settings / ping (N frames), empty_data (N empty DATA frames on an open CONNECT
#     stream to A), continuation (HEADERS then N empty CONTINUATIONs), pending (N CONNECTs to A,
#     which should never answer). Prints one line per connection:
#       RESULT conn=I sent=N goaway=CODE last=ID refused=R ended=HOW
#     (goaway -1: none came; last: its last stream ID; refused: RST_STREAM REFUSED_STREAM seen);
#     after the flood it waits up to S seconds (default 5, pending 2) for the connection to end
#     (pending: for --want-refused refusals)
import argparse
import hashlib
import os
import re
import select
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events

results = []
PREFIX = "h2peer."  # of the check names; tests/lab/h2client.py, which imports this, sets its own


def check(name, cond, detail=""):
    results.append(bool(cond))
    print(("ok - " if cond else "not ok - ") + PREFIX + name + ("" if cond else " # " + detail))
    sys.stdout.flush()


def hostport(target):
    """'IP:PORT' or '[IPv6]:PORT' -> (host, port)."""
    host, port = target.rsplit(":", 1)
    return host.strip("[]"), int(port)


def peer_uri(tls):
    for kind, val in tls.getpeercert().get("subjectAltName", ()):
        if kind == "URI" and val.startswith("spiffe://"):
            return val
    return None


def h2config(client_side):
    # h2 4.1 insists on :path for every request, even a plain CONNECT, which RFC 9113 §8.5
    # forbids: header validation is off here and the tests check the headers themselves.
    return h2.config.H2Configuration(client_side=client_side, validate_inbound_headers=False,
                                     validate_outbound_headers=False)


def context(a, server):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if getattr(a, "tls12", False):
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if not getattr(a, "no_cert", False):
        ctx.load_cert_chain(a.cert, a.key)
    ctx.load_verify_locations(a.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if not server:
        ctx.check_hostname = False  # SPIFFE identity is checked from the URI SAN below
    ctx.set_alpn_protocols(["h2"])
    return ctx


class Pump:
    """Blocking h2 connection driver with per-stream send queues honouring flow control."""

    def __init__(self, tls, conn):
        self.tls, self.conn = tls, conn
        self.out = {}  # stream id -> [bytearray, end_stream]

    def queue(self, sid, data, end=False):
        q = self.out.setdefault(sid, [bytearray(), False])
        q[0] += data
        q[1] = q[1] or end

    def flush(self):
        for sid, q in list(self.out.items()):
            while q[0]:
                try:
                    win = self.conn.local_flow_control_window(sid)
                except Exception:
                    q[0].clear()
                    break
                n = min(win, self.conn.max_outbound_frame_size, len(q[0]))
                if n <= 0:
                    break
                self.conn.send_data(sid, bytes(q[0][:n]))
                del q[0][:n]
            if not q[0] and q[1]:
                self.conn.end_stream(sid)
                del self.out[sid]
        data = self.conn.data_to_send()
        if data:
            self.tls.sendall(data)

    def events(self, timeout=10):
        r, _, _ = select.select([self.tls], [], [], 0 if self.tls.pending() else timeout)
        if not r and not self.tls.pending():
            raise TimeoutError("no data from peer")
        data = self.tls.recv(65536)
        if not data:
            return None
        return self.conn.receive_data(data)


def run_client(a):
    ctx = context(a, False)
    tls = ctx.wrap_socket(socket.create_connection(hostport(a.target), timeout=10),
                          server_hostname=a.sni)
    check("client_tls13_alpn_h2", tls.version() == "TLSv1.3" and
          tls.selected_alpn_protocol() == "h2", f"{tls.version()} {tls.selected_alpn_protocol()}")
    check("client_server_identity", peer_uri(tls) == a.expect, str(peer_uri(tls)))
    conn = h2.connection.H2Connection(h2config(True))
    conn.initiate_connection()
    conn.increment_flow_control_window(16 << 20)
    p = Pump(tls, conn)
    payload = os.urandom(a.bytes)
    # RFC 9113 §8.5: CONNECT has :method and :authority only
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "CONNECT"), (":authority", a.authority),
                            ("traceparent", "00-11111111111111111111111111111111-2222222222222222-01")])
    # A GET on 15008 must be refused with 405
    gid = conn.get_next_available_stream_id()
    conn.send_headers(gid, [(":method", "GET"), (":scheme", "https"), (":path", "/"),
                            (":authority", a.authority)], end_stream=True)
    p.flush()
    status, gstatus, got, ended, sent = None, None, bytearray(), False, False
    while not ended or gstatus is None:
        evs = p.events()
        if evs is None:
            break
        for ev in evs:
            if isinstance(ev, h2.events.ResponseReceived):
                st = dict(ev.headers).get(b":status")
                if ev.stream_id == sid:
                    status = st
                    if st == b"200" and not sent:
                        p.queue(sid, payload, end=True)  # send, then half-close
                        sent = True
                else:
                    gstatus = st
            elif isinstance(ev, h2.events.DataReceived):
                if ev.stream_id == sid:
                    got += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                ended = True
            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                ended = True
        p.flush()
    check("client_connect_200", status == b"200", str(status))
    check("client_echo_byte_for_byte", hashlib.sha256(got).digest() ==
          hashlib.sha256(payload).digest(), f"{len(got)} of {len(payload)} bytes")
    check("client_half_close_end_stream", ended)
    check("client_get_refused_405", gstatus == b"405", str(gstatus))
    conn.close_connection()
    p.flush()
    tls.close()


def probe_one(p, conn, authority, want, reason, path):
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "CONNECT"), (":authority", authority)])
    p.flush()
    status, why, body, ended = None, "", bytearray(), False
    while not ended:
        evs = p.events()
        if evs is None:
            break
        for ev in evs:
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                h = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes)
                     else v for k, v in ev.headers}
                status, why = h.get(":status"), h.get("ambit-reason", "")
                if status == "200":
                    p.queue(sid, ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                                  % (path, authority)).encode())
                elif status is not None:
                    ended = True  # a refusal ends the stream (checked: the connection lives on)
            elif isinstance(ev, h2.events.DataReceived):
                if ev.stream_id == sid:
                    body += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and \
                    ev.stream_id == sid:
                ended = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                ended = True
        p.flush()
    detail = "status %s reason %r" % (status, why)
    ok = status == str(want) and reason in why
    if ok and status == "200":
        ok = bytes(body).startswith(b"HTTP/1.1 200")
        detail += " answer %r" % bytes(body[:80])
    check("probe %s -> %s%s" % (authority, want, " (%s)" % reason if reason else ""), ok, detail)
    print("# %s: %s" % (authority, detail))
    sys.stdout.flush()


def run_probe(a):
    tls = context(a, False).wrap_socket(socket.create_connection(hostport(a.target), timeout=10),
                                        server_hostname=a.sni)
    check("probe_server_identity", peer_uri(tls) == a.expect, str(peer_uri(tls)))
    conn = h2.connection.H2Connection(h2config(True))
    conn.initiate_connection()
    p = Pump(tls, conn)
    p.flush()
    for c in a.case:
        parts = c.split("=", 2)
        probe_one(p, conn, parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", a.path)
    conn.close_connection()
    p.flush()
    tls.close()


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")


def read_until_end(recv, timeout=10):
    """Reads until EOF, an error or the timeout: (bytes, how it ended)."""
    got, end = bytearray(), None
    try:
        while True:
            d = recv(65536)
            if not d:
                end = "eof"
                break
            got += d
    except ssl.SSLError as e:
        end = "tls error: %s" % (e.reason or e)
    except ConnectionResetError:
        end = "reset"
    except socket.timeout:
        end = "timeout"
    except OSError as e:
        end = "error: %s" % e
    return bytes(got), end


def run_refused(a):
    raw = socket.create_connection(hostport(a.target), timeout=10)
    if a.plain:
        # plaintext on a TLS port: an HTTP/2 prior-knowledge preface, or bytes that are no protocol
        raw.sendall(H2_PREFACE if a.plain == "preface" else b"hello, is this thing on?\r\n" * 64)
        got, end = read_until_end(raw.recv)
        # the only acceptable answer is nothing or a TLS alert record (0x15), never HTTP/2
        ok = end in ("eof", "reset") and (not got or got[0] == 0x15)
        check("refused_plaintext_%s" % a.plain, ok, "ended %s after %r" % (end, got[:32]))
        print("# plaintext %s: %s after %d bytes %r" % (a.plain, end, len(got), got[:16]))
        raw.close()
        return
    ctx = context(a, False)
    err, got, end, version = None, b"", None, None
    try:
        tls = ctx.wrap_socket(raw, server_hostname=a.sni)
        version = tls.version()
        # TLS 1.3: the server judges our certificate after our Finished; its verdict arrives as
        # an alert on the first read. Speak HTTP/2 so an accepting server would answer SETTINGS.
        try:
            tls.sendall(H2_PREFACE)
        except OSError:
            pass
        got, end = read_until_end(tls.recv)
        err = end
    except ssl.SSLError as e:
        err = end = "tls error: %s" % (e.reason or e)
    except (ConnectionResetError, BrokenPipeError):
        err = end = "reset"
    except socket.timeout:
        end = "timeout"
    ok = not got and end not in (None, "timeout")
    detail = "handshake %s, ended %s, %d bytes of HTTP/2 %r" % (version, end, len(got), got[:16])
    if ok and a.want:
        ok = a.want.lower() in (err or "").lower().replace("_", " ")
        detail += ", want %r" % a.want
    what = "no_cert" if a.no_cert else "tls12" if a.tls12 else "cert"
    check("refused_%s" % what, ok, detail)
    print("# refused %s: %s" % (what, detail))


# ---- abuse (frames written by hand: h2 keeps to the protocol) ----
FT_DATA, FT_HEADERS, FT_RST, FT_SETTINGS, FT_PING, FT_GOAWAY, FT_CONT = 0, 1, 3, 4, 6, 7, 9


def frame(ftype, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


class RawPeer:
    """Reads the server's frames as they come: GOAWAY, RST_STREAM, response HEADERS."""

    def __init__(self, tls):
        self.tls, self.buf = tls, bytearray()
        self.goaway, self.last, self.refused, self.ended = -1, -1, 0, None
        self.answered = set()
        self.tls.setblocking(False)

    def poll(self, timeout=0.0):
        """Reads what is there (waits up to timeout for the first bytes); False once it ended."""
        if self.ended:
            return False
        if not self.tls.pending():
            r, _, _ = select.select([self.tls], [], [], timeout)
            if not r:
                return True
        try:
            while True:
                d = self.tls.recv(65536)
                if not d:
                    self.ended = "eof"
                    break
                self.buf += d
                if not self.tls.pending():
                    break
        except (ssl.SSLWantReadError, BlockingIOError):
            pass
        except ssl.SSLError as e:
            self.ended = "tls error: %s" % (e.reason or e)
        except OSError as e:
            self.ended = "error: %s" % e
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                break
            t, sid, pl = self.buf[3], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF, self.buf[9:9 + n]
            del self.buf[:9 + n]
            if t == FT_GOAWAY and len(pl) >= 8 and self.goaway < 0:
                self.last = int.from_bytes(pl[:4], "big") & 0x7FFFFFFF
                self.goaway = int.from_bytes(pl[4:8], "big")
            elif t == FT_RST and len(pl) == 4 and int.from_bytes(pl, "big") == 7:
                self.refused += 1
            elif t == FT_HEADERS:
                self.answered.add(sid)
        return not self.ended

    def send(self, data):
        """Writes all of data unless the server stops reading (5 s) or closes; True if written."""
        view = memoryview(data)
        end = time.monotonic() + 5
        while view:
            try:
                n = self.tls.send(view)
                view = view[n:]
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                if time.monotonic() > end:
                    return False
                select.select([self.tls], [self.tls], [], 0.05)
                self.poll()
            except OSError as e:
                self.ended = self.ended or "error: %s" % e
                return False
        return True


def attack_once(a, i):
    import hpack
    host, port = a.target.rsplit(":", 1)
    tls = context(a, False).wrap_socket(socket.create_connection((host, int(port)), timeout=10),
                                        server_hostname=a.sni)
    p, enc = RawPeer(tls), hpack.Encoder()
    connect = [(":method", "CONNECT"), (":authority", a.authority)]
    p.send(H2_PREFACE)
    p.poll(1.0)
    p.send(frame(FT_SETTINGS, 1, 0))  # ACK the server's SETTINGS
    print("ATTACKING conn=%d" % i)
    sys.stdout.flush()
    sent, sid, batch = 0, 1, 50
    if a.kind in ("empty_data",):
        p.send(frame(FT_HEADERS, 4, sid, enc.encode(connect)))
        deadline = time.monotonic() + 5
        while sid not in p.answered and p.poll(0.2) and time.monotonic() < deadline:
            pass
    while sent < a.count and p.poll():
        out = bytearray()
        for _ in range(min(batch, a.count - sent)):
            if a.kind == "rapid_reset":
                out += frame(FT_HEADERS, 4, sid, enc.encode(connect))
                out += frame(FT_RST, 0, sid, (8).to_bytes(4, "big"))  # CANCEL
                sid += 2
            elif a.kind == "pending":
                out += frame(FT_HEADERS, 4, sid, enc.encode(connect))
                sid += 2
            elif a.kind == "settings":
                out += frame(FT_SETTINGS, 0, 0)
            elif a.kind == "ping":
                out += frame(FT_PING, 0, 0, sent.to_bytes(8, "big"))
            elif a.kind == "empty_data":
                out += frame(FT_DATA, 0, 1)
            elif a.kind == "continuation":
                if sent == 0:
                    out += frame(FT_HEADERS, 0, sid, enc.encode(connect))  # no END_HEADERS
                out += frame(FT_CONT, 0, sid)
            sent += 1
        if not p.send(bytes(out)):
            break
    # The verdict: GOAWAY and the end, or (pending) the refusals; at most --verdict-s (an
    # attack the server must cut off passes a generous bound: it ends as soon as it is cut).
    deadline = time.monotonic() + (a.verdict_s or (2 if a.kind == "pending" else 5))
    while p.poll(0.2) and time.monotonic() < deadline:
        if a.kind == "pending" and p.refused >= a.want_refused:
            break
    print("RESULT conn=%d sent=%d goaway=%d last=%d refused=%d ended=%s" %
          (i, sent, p.goaway, p.last, p.refused, (p.ended or "open").replace(" ", "_")))
    sys.stdout.flush()
    try:
        tls.close()
    except OSError:
        pass


def run_attack(a):
    for i in range(a.connections):
        attack_once(a, i)
    results.append(True)


def run_server(a):
    ctx = context(a, True)
    snis = []
    ctx.sni_callback = lambda sock, name, c: snis.append(name)  # name None: no SNI
    lhost, lport = hostport(a.listen or "127.0.0.1:0")
    ls = socket.socket(socket.AF_INET6 if ":" in lhost else socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((lhost, lport))
    ls.listen(8)
    ls.settimeout(20)
    print("PORT %d" % ls.getsockname()[1])
    sys.stdout.flush()
    done = 0
    while done < a.streams:
        raw, _ = ls.accept()
        raw.settimeout(20)
        tls = ctx.wrap_socket(raw, server_side=True)
        check("server_tls13_alpn_h2", tls.version() == "TLSv1.3" and
              tls.selected_alpn_protocol() == "h2")
        check("server_client_identity", peer_uri(tls) == a.expect_peer, str(peer_uri(tls)))
        if a.no_sni:
            check("server_no_sni", snis[-1:] == [None], "SNI %r" % snis[-1:])
        conn = h2.connection.H2Connection(h2config(False))
        conn.initiate_connection()
        conn.increment_flow_control_window(16 << 20)
        p = Pump(tls, conn)
        if a.goaway_first:
            # An agent being upgraded: GOAWAY at once on the first connection (a request the
            # client queued meanwhile was never processed and may go again elsewhere).
            a.goaway_first = False
            conn.close_connection()
            p.flush()
            try:  # read (and ignore) what comes until the client closes: no RST over GOAWAY
                tls.settimeout(5)
                while tls.recv(65536):
                    pass
            except OSError:
                pass
            tls.close()
            print("# sent GOAWAY on the first connection")
            continue
        p.flush()
        open_streams = set()
        while done < a.streams or open_streams:
            evs = p.events(timeout=20)
            if evs is None:
                break
            for ev in evs:
                if isinstance(ev, h2.events.RequestReceived):
                    h = dict(ev.headers)
                    ok = (h.get(b":method") == b"CONNECT" and b":path" not in h and
                          b":scheme" not in h and h.get(b":authority") == a.authority.encode())
                    check("server_connect_request", ok, repr(h))
                    check("server_traceparent", b"traceparent" in h)
                    for want in a.header:
                        name, rx = want.split("=", 1)
                        val = h.get(name.encode(), b"").decode("latin-1")
                        check("server_header %s ~ /%s/" % (name, rx), re.search(rx, val),
                              "%s: %r" % (name, val))
                        print("# %s: %s" % (name, val))
                    conn.send_headers(ev.stream_id, [(":status", "200" if ok else "400")])
                    open_streams.add(ev.stream_id)
                elif isinstance(ev, h2.events.DataReceived):
                    p.queue(ev.stream_id, ev.data)  # echo
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    p.queue(ev.stream_id, b"", end=True)  # half-close back after the echo
                    open_streams.discard(ev.stream_id)
                    done += 1
                elif isinstance(ev, h2.events.StreamReset):
                    open_streams.discard(ev.stream_id)
                    done += 1
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    open_streams.clear()
            p.flush()
        if done >= a.streams:
            # let our peer read the last frames before the socket goes
            try:
                p.flush()
                select.select([tls], [], [], 1)
            except OSError:
                pass
        tls.close()
    check("server_streams_done", done >= a.streams)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["client", "server", "probe", "refused", "attack"])
    ap.add_argument("target", nargs="?")
    ap.add_argument("authority_pos", nargs="?")
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--sni")
    ap.add_argument("--expect")
    ap.add_argument("--expect-peer")
    ap.add_argument("--authority")
    ap.add_argument("--bytes", type=int, default=1 << 20)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--case", action="append", default=[])
    ap.add_argument("--path", default="/whoami")
    ap.add_argument("--listen")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--no-cert", action="store_true")
    ap.add_argument("--tls12", action="store_true")
    ap.add_argument("--plain", choices=["preface", "junk"])
    ap.add_argument("--want")
    ap.add_argument("--kind", choices=["rapid_reset", "settings", "ping", "empty_data",
                                       "continuation", "pending"])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--want-refused", type=int, default=1)
    ap.add_argument("--verdict-s", type=float, default=0)
    ap.add_argument("--no-sni", action="store_true")
    ap.add_argument("--goaway-first", action="store_true")
    a = ap.parse_args()
    if a.authority is None:
        a.authority = a.authority_pos
    try:
        {"client": run_client, "server": run_server, "probe": run_probe,
         "refused": run_refused, "attack": run_attack}[a.mode](a)
    except Exception as e:  # a failure is a "not ok" line, never a hang
        check(a.mode + "_exception", False, repr(e))
    sys.exit(0 if results and all(results) else 1)


if __name__ == "__main__":
    main()
