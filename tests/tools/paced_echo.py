#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""paced_echo.py HOST PORT ROUNDS [INTERVAL_S]: one connection to an echo server, one round trip
every INTERVAL_S (default 0.1 s), printing "round N"; then half-closes and requires a clean EOF.
Exit 0 when every echo matched: a long-lived stream that shows whether anything dropped it."""
import socket
import sys
import time

s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.1
for i in range(int(sys.argv[3])):
    msg = b"round %06d " % i * 64
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        d = s.recv(len(msg) - len(got))
        if not d:
            sys.exit("EOF in round %d" % i)
        got += d
    if got != msg:
        sys.exit("round %d: wrong echo" % i)
    print("round", i, flush=True)
    time.sleep(interval)
s.shutdown(socket.SHUT_WR)
if s.recv(1) != b"":
    sys.exit("data after the echoes")
print("done", flush=True)
