#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# bench/hold.py: holds idle TCP connections open for the memory figures of bench/run.sh.
# Reads target totals from stdin, one per line ("1000", then "10000"): opens connections to
# --to until that many are open, each proven end to end by one echoed byte (the server is a
# `tcpkit serve --mode echo`), then prints "held=N seconds=S" and leaves them idle. EOF on stdin
# closes everything and exits 0. A connection that fails is one line on stderr and exit 1.
import argparse
import errno
import resource
import selectors
import socket
import sys
import time

PROBE = b"h"


def parse_addr(s):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"want IP:PORT, got '{s}'")
    return host, int(port)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def open_more(addr, held, target, window, timeout):
    """Opens connections until len(held) == target, at most `window` in flight at once."""
    sel = selectors.DefaultSelector()
    pending = 0
    deadline = time.monotonic() + timeout
    while len(held) < target:
        while pending < window and len(held) + pending < target:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(addr)
            sel.register(s, selectors.EVENT_WRITE, "connecting")
            pending += 1
        left = deadline - time.monotonic()
        if left <= 0:
            sys.exit(f"hold.py: timeout after {timeout}s: {len(held)} of {target} held, "
                     f"{pending} pending towards {addr[0]}:{addr[1]}")
        for key, _ in sel.select(min(left, 1.0)):
            s = key.fileobj
            if key.data == "connecting":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    sys.exit(f"hold.py: connect to {addr[0]}:{addr[1]}: {errno.errorcode.get(err, err)} "
                             f"after {len(held)} held")
                s.send(PROBE)
                sel.modify(s, selectors.EVENT_READ, "probing")
            else:
                try:
                    got = s.recv(1)
                except OSError as e:
                    sys.exit(f"hold.py: recv from {addr[0]}:{addr[1]}: {e} after {len(held)} held")
                if got != PROBE:
                    sys.exit(f"hold.py: connection closed by {addr[0]}:{addr[1]} before the echo "
                             f"(after {len(held)} held)")
                sel.unregister(s)
                held.append(s)
                pending -= 1
    sel.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--to", type=parse_addr, required=True, help="IP:PORT of an echo server")
    ap.add_argument("--window", type=int, default=128, help="connections being opened at once")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds allowed per target")
    a = ap.parse_args()
    raise_nofile()
    held = []
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        target = int(line)
        t0 = time.monotonic()
        open_more(a.to, held, target, a.window, a.timeout)
        print(f"held={len(held)} seconds={time.monotonic() - t0:.3f}", flush=True)
    for s in held:
        s.close()
    print(f"closed={len(held)}", flush=True)


if __name__ == "__main__":
    main()
