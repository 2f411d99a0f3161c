#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# pcap_tls.py: checks that every TCP connection to PORT in a capture (tcpdump -w, Ethernet or
# Linux cooked) is TLS 1.3 from its first byte. Each direction is reassembled from the SYN;
# then, per RFC 8446 §5.1 and appendix D.4: the client's first record is a handshake record
# with legacy version 0x0301 holding a ClientHello that offers 0x0304, the server's first is a
# handshake record (0x0303) holding a ServerHello whose supported_versions selects 0x0304, and
# every later record either way is application_data (0x17 0x03 0x03), after at most one
# middlebox-compatibility change_cipher_spec (0x14 0x03 0x03, one byte 0x01) before the first.
# No other cleartext record (a TLS 1.2 Certificate, an alert) may appear.
#   pcap_tls.py FILE [--port 15008] [--min-flows 1]
# Prints "flow A -> B: N records..." per connection; exit 0 when all pass, 1 otherwise.
import argparse
import struct
import sys


def packets(path):
    """Yields (src, dst, sport, dport, seq, flags, payload) for each IPv4/IPv6 TCP packet."""
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise ValueError("not a pcap file (pcapng is not read here: use tcpdump -w)")
    linktype = struct.unpack(e + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        _, _, incl, orig = struct.unpack(e + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if incl < orig:
            raise ValueError("a packet was truncated by the capture (use -s 0)")
        if linktype == 1:       # Ethernet, with VLAN tags skipped
            p, etype = 14, struct.unpack(">H", frame[12:14])[0]
            while etype in (0x8100, 0x88a8):
                etype = struct.unpack(">H", frame[p + 2:p + 4])[0]
                p += 4
        elif linktype == 113:   # Linux cooked (tcpdump -i any)
            p, etype = 16, struct.unpack(">H", frame[14:16])[0]
        elif linktype == 276:   # Linux cooked v2
            p, etype = 20, struct.unpack(">H", frame[0:2])[0]
        else:
            raise ValueError("link type %d not handled" % linktype)
        ip = frame[p:]
        if etype == 0x0800 and len(ip) >= 20 and ip[9] == 6:
            ihl = (ip[0] & 15) * 4
            total = struct.unpack(">H", ip[2:4])[0]
            src, dst, tcp = ip[12:16], ip[16:20], ip[ihl:total]
        elif etype == 0x86DD and len(ip) >= 40 and ip[6] == 6:
            total = 40 + struct.unpack(">H", ip[4:6])[0]
            src, dst, tcp = ip[8:24], ip[24:40], ip[40:total]
        else:
            continue
        if len(tcp) < 20:
            continue
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        doff = (tcp[12] >> 4) * 4
        yield src, dst, sport, dport, seq, tcp[13], tcp[doff:]


def addr(a, port):
    if len(a) == 4:
        return "%s:%d" % (".".join(str(b) for b in a), port)
    return "[%s]:%d" % (":".join("%x" % struct.unpack(">H", a[i:i + 2]) for i in range(0, 16, 2)),
                        port)


class Direction:
    def __init__(self):
        self.isn = None
        self.segs = {}  # offset -> bytes (the longest seen at that offset)

    def add(self, seq, flags, payload):
        if flags & 0x02:  # SYN
            self.isn = seq
            return
        if self.isn is None or not payload:
            return
        o = (seq - self.isn - 1) & 0xFFFFFFFF
        if len(payload) > len(self.segs.get(o, b"")):
            self.segs[o] = payload

    def stream(self):
        """The reassembled bytes up to the first hole; (bytes, has_hole)."""
        out = bytearray()
        for o in sorted(self.segs):
            s = self.segs[o]
            if o > len(out):
                return bytes(out), True
            if o + len(s) > len(out):
                out += s[len(out) - o:]
        return bytes(out), False


def extensions(body, hello_type):
    """The extensions of a ClientHello (hello_type 1) or ServerHello (2) body: {type: data}."""
    p = 2 + 32  # legacy_version, random
    sid_len = body[p]
    p += 1 + sid_len
    if hello_type == 1:
        n = struct.unpack(">H", body[p:p + 2])[0]
        p += 2 + n  # cipher_suites
        p += 1 + body[p]  # legacy_compression_methods
    else:
        p += 2 + 1  # cipher_suite, legacy_compression_method
    ext_len = struct.unpack(">H", body[p:p + 2])[0]
    p += 2
    end, exts = p + ext_len, {}
    while p + 4 <= end:
        t, n = struct.unpack(">HH", body[p:p + 4])
        exts[t] = body[p + 4:p + 4 + n]
        p += 4 + n
    return exts


def records(stream):
    """Splits a TLS byte stream into (type, version, fragment); the last may be incomplete."""
    p, out = 0, []
    while p + 5 <= len(stream):
        t, v, n = struct.unpack(">BHH", stream[p:p + 5])
        out.append((t, v, stream[p + 5:p + 5 + n], p + 5 + n <= len(stream)))
        p += 5 + n
    return out


def check_direction(name, stream, client):
    """Problems found in one direction's bytes (empty list when it is TLS 1.3)."""
    recs = records(stream)
    if not recs:
        return ["%s: no TLS record" % name], recs
    t, v, frag, _ = recs[0]
    want_v = 0x0301 if client else 0x0303
    probs = []
    if t != 0x16 or v != want_v:
        probs.append("%s: first record is type 0x%02x version 0x%04x, want 0x16 0x%04x (%r)" %
                     (name, t, v, want_v, stream[:16]))
        return probs, recs
    hs_type = frag[0] if frag else None
    want_hs = 1 if client else 2
    if hs_type != want_hs:
        probs.append("%s: first handshake message is type %s, want %d" % (name, hs_type, want_hs))
        return probs, recs
    try:
        exts = extensions(frag[4:], want_hs)
    except (IndexError, struct.error):
        return ["%s: hello message cut short" % name], recs
    sv = exts.get(43)  # supported_versions
    if client:
        versions = [struct.unpack(">H", sv[i:i + 2])[0] for i in range(1, len(sv), 2)] if sv else []
        if 0x0304 not in versions:
            probs.append("%s: ClientHello offers no TLS 1.3 (%s)" % (name, versions))
    elif sv != b"\x03\x04":
        probs.append("%s: ServerHello selects %r, not TLS 1.3 (0x0304)" % (name, sv))
    seen_app = False
    for i, (t, v, frag, complete) in enumerate(recs[1:], 1):
        if t == 0x14 and v == 0x0303 and frag == b"\x01" and not seen_app and i == 1:
            continue  # the one compatibility change_cipher_spec
        if t == 0x17 and v == 0x0303:
            seen_app = True
            if len(frag) > (1 << 14) + 256 and complete:
                probs.append("%s: record %d too long (%d)" % (name, i, len(frag)))
            continue
        probs.append("%s: record %d is type 0x%02x version 0x%04x, want application_data "
                     "0x17 0x0303" % (name, i, t, v))
        break
    if not seen_app:
        probs.append("%s: no application_data record after the hello" % name)
    return probs, recs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--port", type=int, default=15008)
    ap.add_argument("--min-flows", type=int, default=1)
    a = ap.parse_args()
    flows = {}  # (client, server) -> [client->server, server->client]
    for src, dst, sport, dport, seq, flags, payload in packets(a.file):
        if dport == a.port:
            key, d = ((src, sport), (dst, dport)), 0
        elif sport == a.port:
            key, d = ((dst, dport), (src, sport)), 1
        else:
            continue
        flows.setdefault(key, [Direction(), Direction()])[d].add(seq, flags, payload)
    bad, good = 0, 0
    for (c, s), dirs in sorted(flows.items()):
        label = "flow %s -> %s" % (addr(*c), addr(*s))
        if dirs[0].isn is None or dirs[1].isn is None:
            print("# %s: handshake not captured (started before the capture); skipped" % label)
            continue
        probs, counts = [], []
        for d, client in ((dirs[0], True), (dirs[1], False)):
            stream, hole = d.stream()
            name = "client" if client else "server"
            if hole:
                probs.append("%s: a hole in the captured stream after %d bytes" % (name, len(stream)))
            p, recs = check_direction(name, stream, client)
            probs += p
            counts.append("%s %d records %d bytes" % (name, len(recs), len(stream)))
        if probs:
            bad += 1
            print("%s: NOT TLS 1.3: %s" % (label, "; ".join(probs)))
        else:
            good += 1
            print("%s: TLS 1.3 (%s)" % (label, ", ".join(counts)))
    if good < a.min_flows:
        print("only %d TLS 1.3 connections to port %d, want at least %d" % (good, a.port, a.min_flows))
    sys.exit(0 if bad == 0 and good >= a.min_flows else 1)


if __name__ == "__main__":
    main()
