#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A fake ambitd admin API for ambitctl's tests (stdlib only).

Serves canned answers, shaped as agent/admin.c shapes them (docs/admin-api.md), for
GET /workloads, /services, /connections, /hbone, /certificates, /bpf, /spans, /config_dump,
/stats, / and GET/POST /logging (POST ?level= changes the level it reports afterwards).

--node node-1|node-2 picks the agent's side of one two-node trace (TRACE_ID): node-1 holds
the outbound CLIENT span, node-2 the inbound SERVER span (a child of it) and an INTERNAL
child of that, in ERROR. node-1 also holds a span of another trace.

--mode:
  ok          every path answers 200 (default)
  nohbone     /hbone answers 404 (HBONE not running), the rest as ok
  nobpf       /bpf answers {"enabled": false}
  malformed   every path answers 200 with a truncated JSON body
  notobject   every path answers 200 with a JSON array
  error500    every path answers 500 {"error": "..."}
  slow        every answer waits --delay seconds first

The chosen port is printed as "LISTENING <port>" on stdout; GET /_requests lists the
requests seen so far ("METHOD path?query").
"""
import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
T0 = 1732613460 * 10**9  # 2024-11-26T09:31:00Z

NODES = {"node-1": "172.18.0.2", "node-2": "172.18.0.3"}


def resource(node, svc, pod, ns="default"):
    return {"service.name": svc, "k8s.namespace.name": ns, "k8s.pod.name": pod,
            "k8s.node.name": node, "cluster_name": "homelab"}


def span(tid, sid, parent, name, kind, start_ms, end_ms, code, msg, res, attrs=None):
    return {"trace_id": tid, "span_id": sid, "parent_span_id": parent, "name": name,
            "kind": kind, "start_unix_nano": T0 + int(start_ms * 1e6),
            "end_unix_nano": T0 + int(end_ms * 1e6), "status": {"code": code, "message": msg},
            "attributes": attrs or {"cluster_name": "homelab", "environment": "development"},
            "resource": res, "exported": True, "export_state": "exported"}


def spans_for(node):
    if node == "node-1":
        return [
            span(OTHER_TRACE, "1111111111111111", "", "outbound", "CLIENT", -5000, -4990, "OK", "",
                 resource("node-1", "api-gateway", "api-gateway-7d9")),
            span(TRACE_ID, "00f067aa0ba902b7", "", "outbound", "CLIENT", 0, 12.5, "UNSET", "",
                 resource("node-1", "api-gateway", "api-gateway-7d9"),
                 {"destination.workload": "reviews-v1-abc", "connection_security_policy": "mutual_tls"}),
        ]
    # node-2: answered out of order on purpose (ambitctl orders by start).
    return [
        span(TRACE_ID, "c0ffee00c0ffee00", "b7ad6b7169203331", "connect", "INTERNAL", 2.0, 9.0,
             "ERROR", "connection reset by peer", resource("node-2", "reviews", "reviews-v1-abc")),
        span(TRACE_ID, "b7ad6b7169203331", "00f067aa0ba902b7", "inbound", "SERVER", 1.0, 11.0,
             "ERROR", "upstream reset", resource("node-2", "reviews", "reviews-v1-abc")),
    ]


def workloads(node):
    wl = [
        {"uid": "default/api-gateway-7d9", "name": "api-gateway-7d9", "namespace": "default",
         "service_account": "api-gateway", "node": "node-1", "addresses": ["10.244.1.5"],
         "canonical_service": "api-gateway", "labels": {"app": "api-gateway"}, "enrolled": True,
         "waypoint": None, "protocol": "HBONE"},
        {"uid": "default/reviews-v1-abc", "name": "reviews-v1-abc", "namespace": "default",
         "service_account": "reviews", "node": "node-2", "addresses": ["10.244.2.7", "fd00::7"],
         "canonical_service": "reviews", "labels": {"app": "reviews"}, "enrolled": True,
         "waypoint": {"name": "waypoint", "namespace": "default"}, "protocol": "HBONE"},
        {"uid": "bookinfo-with-a-long-namespace/productpage-v1-6b746f74dc-9stvr-with-a-very-long-suffix",
         "name": "productpage-v1-6b746f74dc-9stvr-with-a-very-long-suffix",
         "namespace": "bookinfo-with-a-long-namespace", "service_account": "productpage",
         "node": "node-1", "addresses": ["10.244.1.9"], "canonical_service": "productpage",
         "labels": {"app": "productpage"}, "enrolled": False, "waypoint": None, "protocol": "TCP"},
        {"uid": "default/waypoint-5f7", "name": "waypoint-5f7", "namespace": "default",
         "service_account": "waypoint", "node": "node-2", "addresses": ["10.244.2.3"],
         "canonical_service": "waypoint", "labels": {"gateway.networking.k8s.io/gateway-name": "waypoint"},
         "enrolled": False, "waypoint": None, "protocol": "TCP"},
    ]
    for w in wl:
        w["local"] = w["node"] == node
    # not sorted on purpose: ambitctl sorts by namespace then name
    return {"generation": 3, "workloads": [wl[1], wl[2], wl[0], wl[3]]}


SERVICES = {"generation": 3, "services": [
    {"name": "reviews", "namespace": "default", "addresses": ["10.96.0.20"],
     "selector": {"app": "reviews"}, "ports": [{"port": 9080, "target_port": 9080}],
     "waypoint": {"name": "waypoint", "namespace": "default"}, "endpoints": ["default/reviews-v1-abc"]},
    {"name": "api-gateway", "namespace": "default", "addresses": ["10.96.0.10"],
     "selector": {"app": "api-gateway"}, "ports": [{"port": 80, "target_port": 8080}],
     "waypoint": None, "endpoints": ["default/api-gateway-7d9"]},
    {"name": "waypoint", "namespace": "default", "addresses": ["10.96.0.30"],
     "selector": {"gateway.networking.k8s.io/gateway-name": "waypoint"},
     "ports": [{"port": 15008, "target_port": 15008}], "waypoint": None, "endpoints": []},
]}


def connections(node):
    peer_ip = NODES["node-2" if node == "node-1" else "node-1"]
    return {"count": 2, "connections": [
        {"id": 41, "direction": "outbound", "state": "open", "src": "10.244.1.5:43512",
         "dst": "10.96.0.20:9080", "target": "10.244.2.7:9080", "via": peer_ip + ":15008",
         "service": "default/reviews",
         "source": {"workload": "api-gateway-7d9", "namespace": "default",
                    "identity": "spiffe://cluster.local/ns/default/sa/api-gateway",
                    "service_account": "api-gateway"},
         "destination": {"workload": "reviews-v1-abc", "namespace": "default",
                         "identity": "spiffe://cluster.local/ns/default/sa/reviews",
                         "service_account": "reviews"},
         "security": "mutual_tls", "bytes_sent": 1536000, "bytes_received": 52, "age_ms": 3723000},
        {"id": 42, "direction": "inbound", "state": "open", "src": "10.244.2.7:51000",
         "dst": "10.244.1.5:8080", "target": "10.244.1.5:8080", "via": None, "service": None,
         "source": {"workload": "reviews-v1-abc", "namespace": "default",
                    "identity": "spiffe://cluster.local/ns/default/sa/reviews",
                    "service_account": "reviews"},
         "destination": {"workload": "api-gateway-7d9", "namespace": "default",
                         "identity": "spiffe://cluster.local/ns/default/sa/api-gateway",
                         "service_account": "api-gateway"},
         "security": "mutual_tls", "bytes_sent": 900, "bytes_received": 2048, "age_ms": 850},
    ]}


def hbone(node):
    peer_ip = NODES["node-2" if node == "node-1" else "node-1"]
    return {"connections": [
        {"role": "client", "state": "ready", "peer": peer_ip + ":15008",
         "local_identity": "spiffe://cluster.local/ns/default/sa/api-gateway",
         "peer_identity": "spiffe://cluster.local/ns/default/sa/reviews", "streams": 1,
         "queued": 0, "streams_total": 7, "age_ms": 3723000, "idle_ms": 10, "bytes_sent": 1536100,
         "bytes_received": 120, "blocked": ""}]}


def telemetry(wl):
    """GET /telemetry: the homelab's settings (docs/admin-api.md), or one workload's."""
    tags = {"cluster_name": {"literal": "homelab"}, "environment": {"literal": "development"},
            "pod": {"environment": "POD_NAME", "default": "unknown"}}
    frm = {"provider": "mesh_config", "disabled": "default", "sampling": "mesh_config",
           "custom_tags": "Telemetry istio-system/mesh-default"}
    mode = {"provider": "otel", "protocol": "grpc", "disabled": False, "sampling": 100.0,
            "endpoint": "http://k8s-monitoring-alloy-receiver.monitoring.svc.cluster.local:4317",
            "custom_tags": tags, "from": frm}
    rows = [{"workload": "default/api-gateway-7d9", "node": "node-1", "source": "istio",
             "outbound": mode, "inbound": dict(mode, disabled=True, sampling=0.0,
                                               **{"from": dict(frm, sampling="Telemetry default/quiet",
                                                               disabled="Telemetry default/quiet")})},
            {"workload": "shop/reviews-v1-5c8", "node": "node-1", "source": "config",
             "outbound": dict(mode, provider="config", custom_tags={}, endpoint="http://localhost:4317",
                              **{"from": {k: "config" for k in frm}}),
             "inbound": dict(mode, provider="config", custom_tags={}, endpoint="http://localhost:4317",
                             **{"from": {k: "config" for k in frm}})}]
    if wl:
        rows = [r for r in rows if r["workload"] == wl]
    return {"generation": 3, "root_namespace": "istio-system", "istio": True,
            "providers": [{"name": "otel", "endpoint": mode["endpoint"], "protocol": "grpc",
                           "export_url": "http://10.244.2.13:4317", "in_use": True,
                           "exporting": True, "exported": 42, "dropped": 0, "failed": 0, "queued": 1}],
            "diagnostics": ["Telemetry default/bad: spec.tracing[0].randomSamplingPercentage "
                            "is not a number in 0..100; this Telemetry is ignored"],
            "workloads": rows}


CERTS = {"certificates": [
    {"identity": "spiffe://cluster.local/ns/default/sa/reviews", "serial": "5a1f0c3e9b7d2a4c",
     "not_before": 1732613400, "not_after": 1732699800, "issued_at": 1732613400, "renew_at": 1732656600, "state": "renewing",
     "refs": 1, "issued_total": 2},
    {"identity": "spiffe://cluster.local/ns/default/sa/api-gateway", "serial": "3c9e2f11aa0b7d64e8",
     "not_before": 1732613400, "not_after": 1732699800, "issued_at": 1732613400, "renew_at": 1732656600, "state": "fresh",
     "refs": 2, "issued_total": 1},
    {"identity": "spiffe://cluster.local/ns/bookinfo-with-a-long-namespace/sa/productpage-service-account",
     "serial": "77aa01c4e5d2b9f0", "not_before": 1732613400, "not_after": 1732699800, "issued_at": 1732613400,
     "renew_at": 1732656600, "state": "fresh", "refs": 1, "issued_total": 1},
]}

BPF = {"enabled": True, "pin_dir": "/sys/fs/bpf/ambit",
       "programs": {"ingress": {"name": "ambit_ingress", "id": 41}, "egress": {"name": "ambit_egress", "id": 42}},
       "tc": {"handle": 1, "priority": 1},
       "rule": {"fwmark": 1024, "mask": 1024, "table": 100, "priority": 32000},
       "listeners": {"outbound": {"socket_cookie": 4097}, "inbound": {"socket_cookie": 4098}},
       "interfaces": [
           {"ifname": "veth1a2b3c", "ifindex": 7, "pod_uid": "default/api-gateway-7d9",
            "ip": "10.244.1.5", "mode": "routed", "local_mac": "0a:58:0a:f4:01:01", "qdisc_ours": True}],
       "pending": [{"pod_uid": "default/late-pod", "ip": "10.244.1.11"}],
       "counters": {"pass": 100, "assigned_socket": 12, "captured_outbound": 7, "captured_inbound": 5,
                    "drop_no_listener": 0, "drop_no_socket": 0, "drop_assign_failed": 0,
                    "egress_to_ingress": 3, "fragment_local": 0}}


def config(node):
    return {"config_file": "/etc/ambit/config.json", "node_name": node, "node_ip": NODES[node],
            "trust_domain": "cluster.local", "admin_address": "127.0.0.1:15000",
            "ca": {"cert": "/etc/ambit/ca/ca.crt", "key": "/etc/ambit/ca/ca.key"},
            "discovery": {"source": "file", "file": "/etc/ambit/workloads.json",
                          "kubernetes": {"api_server": None, "token_file": "", "ca_file": ""}},
            "tracing": {"enabled": True, "sampling": 100.0,
                        "custom_tags": {"cluster_name": "homelab", "environment": "development"},
                        "otlp": {"endpoint": "http://127.0.0.1:4317", "protocol": "grpc",
                                 "headers": {"authorization": "<redacted>"}, "timeout_ms": 10000}},
            "log": {"level": "info", "format": "json"},
            "discovery_status": {"source": "file", "path": "/etc/ambit/workloads.json", "loads": 3,
                                 "errors": 0, "last_load_unix_ms": 1732613400000, "last_error": None}}


class State:
    level = "info"
    requests = []
    lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-ambitd"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, obj=None, raw=None):
        body = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self, method):
        a = self.server.args
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with State.lock:
            State.requests.append(method + " " + self.path)
        if url.path == "/_requests":
            return self.reply(200, {"requests": State.requests})
        if a.mode == "slow":
            time.sleep(a.delay)
        if a.mode == "malformed":
            return self.reply(200, raw=b'{"workloads": [{"name": "api-gateway-7d9", "namespace": ')
        if a.mode == "notobject":
            return self.reply(200, raw=b'[1, 2, 3]')
        if a.mode == "error500":
            return self.reply(500, {"error": "internal error: model not ready"})
        if method == "POST" and url.path != "/logging":
            return self.reply(405, {"error": "method not allowed"})
        node = a.node
        if url.path == "/workloads":
            return self.reply(200, workloads(node))
        if url.path == "/services":
            return self.reply(200, SERVICES)
        if url.path == "/connections":
            return self.reply(200, connections(node))
        if url.path == "/hbone":
            if a.mode == "nohbone":
                return self.reply(404, {"error": "HBONE is not running"})
            return self.reply(200, hbone(node))
        if url.path == "/certificates":
            return self.reply(200, CERTS)
        if url.path == "/bpf":
            return self.reply(200, {"enabled": False} if a.mode == "nobpf" else BPF)
        if url.path == "/spans":
            spans = spans_for(node)
            tid = q.get("trace_id", [""])[0].lower()
            if tid:
                spans = [s for s in spans if s["trace_id"] == tid]
            lim = q.get("limit", [""])[0]
            if lim:
                if not lim.isdigit():
                    return self.reply(400, {"error": "limit must be a non-negative integer"})
                if int(lim):
                    spans = spans[-int(lim):]
            return self.reply(200, {"spans": spans})
        if url.path == "/telemetry":
            wl = q.get("workload", [None])[0]
            if wl is not None and (wl.count("/") != 1 or wl.startswith("/") or wl.endswith("/")):
                return self.reply(400, {"error": "workload must be NAMESPACE/NAME"})
            return self.reply(200, telemetry(wl))
        if url.path == "/config_dump":
            return self.reply(200, config(node))
        if url.path == "/logging":
            lvl = q.get("level", [None])[0]
            if lvl is not None:
                if method != "POST":
                    return self.reply(405, {"error": "use POST to change the level"})
                if lvl.lower() not in ("error", "warn", "info", "debug", "trace"):
                    return self.reply(400, {"error": "level must be one of error, warn, info, debug, trace"})
                State.level = lvl.lower()
            return self.reply(200, {"level": State.level})
        if url.path == "/stats":
            return self.reply(200, {"version": "0.9.0", "node": node, "uptime_ms": 7260000,
                                    "rss_kb": 12800, "hwm_kb": 14000, "cpu_user_ms": 5120,
                                    "cpu_system_ms": 9870, "heap_in_use_kb": 4310,
                                    "heap_free_kb": 900, "connections": 2, "pods_captured": 1})
        if url.path == "/":
            return self.reply(200, {"ambitd": "0.9.0", "paths": [
                "/workloads", "/services", "/connections", "/bpf", "/certificates", "/hbone",
                "/spans", "/telemetry", "/config_dump", "/logging", "/stats"]})
        return self.reply(404, {"error": "no such admin path"})

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--node", choices=sorted(NODES), default="node-1")
    p.add_argument("--mode", default="ok",
                   choices=["ok", "nohbone", "nobpf", "malformed", "notobject", "error500", "slow"])
    p.add_argument("--delay", type=float, default=15.0)
    args = p.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    srv.args = args
    print("LISTENING %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
