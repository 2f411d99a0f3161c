#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Traffic for the upgrade lab test (stdlib only), against an echo server:

    upgrade_traffic.py churn  --to IP:PORT --interval-ms N --duration S
        a new connection every N ms for S seconds, each sends 32 bytes and needs their echo;
        prints "churn ok=N failed=M" and one "# fail ..." line per failure (at most 20)
    upgrade_traffic.py stream --to IP:PORT --duration S
        one connection for S seconds, 1 KiB every 100 ms, each echoed byte for byte;
        prints "stream ok bytes=N" or "stream failed after N bytes: why"

Exit 0 when nothing failed."""
import argparse
import os
import socket
import sys
import time


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def recv_exact(s, n):
    got = bytearray()
    while len(got) < n:
        d = s.recv(n - len(got))
        if not d:
            raise ConnectionError("EOF after %d of %d bytes" % (len(got), n))
        got += d
    return bytes(got)


def churn(a):
    ok = failed = 0
    start = time.monotonic()
    end = start + a.duration
    nxt = start
    while time.monotonic() < end:
        msg = os.urandom(32)
        try:
            with socket.create_connection(addr(a.to), timeout=5) as s:
                s.sendall(msg)
                if recv_exact(s, len(msg)) != msg:
                    raise ValueError("echo differs")
            ok += 1
        except Exception as e:  # every failure counts, whatever it is
            failed += 1
            if failed <= 20:
                print("# fail at +%.3fs: %r" % (time.monotonic() - start, e))
        nxt += a.interval_ms / 1000.0
        time.sleep(max(0.0, nxt - time.monotonic()))
    print("churn ok=%d failed=%d" % (ok, failed))
    return failed == 0 and ok > 0


def stream(a):
    sent = 0
    try:
        with socket.create_connection(addr(a.to), timeout=10) as s:
            end = time.monotonic() + a.duration
            while time.monotonic() < end:
                msg = os.urandom(1024)
                s.sendall(msg)
                if recv_exact(s, len(msg)) != msg:
                    raise ValueError("echo differs")
                sent += len(msg)
                time.sleep(0.1)
            s.shutdown(socket.SHUT_WR)
            if s.recv(1):
                raise ValueError("bytes after the end")
    except Exception as e:
        print("stream failed after %d bytes: %r" % (sent, e))
        return False
    print("stream ok bytes=%d" % sent)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["churn", "stream"])
    ap.add_argument("--to", required=True)
    ap.add_argument("--interval-ms", type=float, default=5)
    ap.add_argument("--duration", type=float, default=10)
    a = ap.parse_args()
    ok = churn(a) if a.mode == "churn" else stream(a)
    sys.stdout.flush()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
