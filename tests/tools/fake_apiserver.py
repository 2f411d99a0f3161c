#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A small Kubernetes list/watch API server for tests (stdlib only).

Serves GET /api/v1/{pods,services,namespaces,nodes}, /api/v1/namespaces/NS/configmaps (with
?fieldSelector=metadata.name=NAME) and Istio's custom resources
/apis/{security.istio.io,telemetry.istio.io,gateway.networking.k8s.io}/VERSION/
{authorizationpolicies,peerauthentications,telemetries,httproutes} (only the versions whose "CRD" is installed: all of them unless
--no-istio-crds; a version not served is 404, as for a missing CRD) as the real API server
shapes them:
lists (PodList, ... with metadata.resourceVersion, limit/continue paging) and, with
?watch=1, chunked newline-delimited watch events (ADDED, MODIFIED, DELETED, BOOKMARK, and
ERROR with a 410 Status for a resourceVersion older than the retained history). Requests
need "Authorization: Bearer TOKEN" when --token is given. With --tls-cert/--tls-key it
serves HTTPS only (the control endpoints too), as the in-cluster API does; a client that
rejects the certificate shows up as a failed handshake in the stats.

A test drives it through POST /_control/<verb> with a JSON body:
  apply    {"resource": "pods", "object": {...}}        ADDED or MODIFIED
  delete   {"resource": "pods", "namespace": "x", "name": "y"}
           either with "silent": true changes the object without an event, as a change
           compacted away before any watch saw it (only a list shows it)
  bookmark {}                        a BOOKMARK at the current resourceVersion to every watch
  expire   {}                        compaction: history dropped, watches get ERROR 410
  close    {}                        every watch stream ends normally (as on timeoutSeconds)
  garbage  {"resource": "pods"}      a malformed line on the watches of that resource
  token    {"token": "t2"}           only that token is accepted from now on
  bump     {"n": 100}                advance the resourceVersion without an event
  crd      {"resource": "telemetries", "versions": ["v1alpha1"]}  the versions served from
                                        now on ([] = the CRD is deleted: its watches end)
  gone_next       {"resource": "pods"}  the next watch request of that resource is answered
                                        HTTP 410 with a Status body (no event stream);
                                        "newline": true ends the body with a newline
  expire_continue {"resource": "pods"}  the next list page asked with a continue token is
                                        answered 410 Expired (the token outlived compaction)
  review   {"token": "T", "user": "system:serviceaccount:NS:SA", "node": "N", "pod": "P",
            "audiences": ["istio-ca"]}   T is a valid token for TokenReview from now on

POST /apis/authentication.k8s.io/v1/tokenreviews answers as the API server does: a token
registered with `review` whose audiences meet spec.audiences (any, when spec has none) is
authenticated, with user.username and user.extra authentication.kubernetes.io/pod-name and
node-name, and status.audiences; any other token gets authenticated false and an error.
ConfigMaps: GET, PUT /api/v1/namespaces/NS/configmaps/NAME and POST /api/v1/namespaces/NS/
configmaps (create; 409 when it exists), enough for a controller that keeps one current.
GET /_control/stats gives request counters (list_starts: lists asked without a continue
token, per resource; tls_failures: handshakes that failed).

--state FILE saves the objects and resourceVersion after every change and loads them at
start, so a test can kill the server and start it again ("restart"); --rv-jump N then
starts N versions later with no history, as after an etcd restore (watches get 410).
--generate pods=10000,services=2000,nodes=100,namespaces=50 fills a large cluster.
The chosen port is printed as "LISTENING <port>" on stdout.
"""
import argparse
import base64
import copy
import json
import os
import queue
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

KINDS = {
    "pods": ("Pod", True),
    "services": ("Service", True),
    "namespaces": ("Namespace", False),
    "nodes": ("Node", False),
    "endpointslices": ("EndpointSlice", True),
    "configmaps": ("ConfigMap", True),
    "authorizationpolicies": ("AuthorizationPolicy", True),
    "peerauthentications": ("PeerAuthentication", True),
    "telemetries": ("Telemetry", True),
    "httproutes": ("HTTPRoute", True),
}
# Custom resources: group and served versions, newest first.
CRDS = {
    "authorizationpolicies": ("security.istio.io", ["v1", "v1beta1"]),
    "peerauthentications": ("security.istio.io", ["v1", "v1beta1"]),
    "telemetries": ("telemetry.istio.io", ["v1", "v1alpha1"]),
    "httproutes": ("gateway.networking.k8s.io", ["v1", "v1beta1"]),
}


def api_version(resource, version=None):
    if resource in CRDS:
        return CRDS[resource][0] + "/" + (version or CRDS[resource][1][0])
    return "discovery.k8s.io/v1" if resource == "endpointslices" else "v1"


def selected(obj, ns, name):
    """The list/watch filters: a namespace in the path, fieldSelector metadata.name=NAME."""
    md = obj.get("metadata", {})
    return (ns is None or md.get("namespace") == ns) and (name is None or md.get("name") == name)
HISTORY_MAX = 10000


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class Cluster:
    def __init__(self, state_file=None, rv_jump=0):
        self.lock = threading.Lock()
        self.objects = {r: {} for r in KINDS}
        self.rv = 1
        self.min_rv = 1            # the oldest resourceVersion a watch may start from
        self.history = []          # (rv, resource, type, object)
        self.watchers = []         # (resource, queue)
        self.token = None
        self.state_file = state_file
        self.counters = {"lists": 0, "watches": 0, "unauthorized": 0, "gone": 0,
                         "gone_watch_http": 0, "gone_continue": 0, "tls_failures": 0,
                         "tokenreviews": 0, "configmap_writes": 0,
                         "list_starts": {r: 0 for r in KINDS}}
        self.served = {r: list(v[1]) for r, v in CRDS.items()}   # CRD versions installed
        self.gone_next = {}            # resource -> its next watch gets HTTP 410 (value: the
                                       # Status body ends with a newline, as Go's encoder writes)
        self.expire_continue = set()   # resources whose next continued list page gets 410
        self.uid = 0
        self.reviews = {}              # token -> {"user", "node", "pod", "audiences"}
        self.configmaps = {}           # (ns, name) -> object
        if state_file and os.path.exists(state_file):
            with open(state_file) as f:
                st = json.load(f)
            self.objects.update(st["objects"])
            self.rv = st["rv"] + rv_jump
            self.min_rv = self.rv
            self.uid = st.get("uid", 0)

    def save(self):
        if not self.state_file:
            return
        tmp = self.state_file + ".tmp"
        # json.dumps in one go (the C encoder): json.dump's chunked writes take 4x the CPU,
        # seconds for a --generate'd cluster, all under the lock
        data = json.dumps({"objects": self.objects, "rv": self.rv, "uid": self.uid})
        with open(tmp, "w") as f:
            f.write(data)
        os.replace(tmp, self.state_file)

    @staticmethod
    def key(resource, obj_or_ns, name=None):
        if name is None:
            md = obj_or_ns["metadata"]
            ns, name = md.get("namespace", ""), md["name"]
        else:
            ns = obj_or_ns or ""
        return f"{ns}/{name}" if KINDS[resource][1] else name

    def _emit(self, resource, etype, obj):
        self.history.append((self.rv, resource, etype, obj))
        if len(self.history) > HISTORY_MAX:
            drop = self.history[: len(self.history) - HISTORY_MAX]
            self.history = self.history[len(drop):]
            self.min_rv = drop[-1][0]
        for res, q in self.watchers:
            if res == resource:
                q.put(("event", etype, obj))

    def apply(self, resource, obj, emit=True, save=None):
        kind, namespaced = KINDS[resource]
        obj = copy.deepcopy(obj)
        obj["kind"] = kind
        obj["apiVersion"] = api_version(resource)
        md = obj.setdefault("metadata", {})
        if namespaced:
            md.setdefault("namespace", "default")
        with self.lock:
            k = self.key(resource, obj)
            old = self.objects[resource].get(k)
            self.rv += 1
            md["resourceVersion"] = str(self.rv)
            if old:
                md["uid"] = old["metadata"]["uid"]
                md["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            else:
                self.uid += 1
                md.setdefault("uid", "00000000-0000-4000-8000-%012d" % self.uid)
                md.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            self.objects[resource][k] = obj
            if emit:
                self._emit(resource, "MODIFIED" if old else "ADDED", obj)
            if emit if save is None else save:
                self.save()
        return obj

    def delete(self, resource, ns, name, emit=True):
        with self.lock:
            obj = self.objects[resource].pop(self.key(resource, ns, name), None)
            if obj is None:
                return None
            self.rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.rv)
            if emit:
                self._emit(resource, "DELETED", obj)
            self.save()
        return obj

    def broadcast(self, msg, resource=None):
        with self.lock:
            for res, q in self.watchers:
                if resource is None or res == resource:
                    q.put(msg)

    def expire(self):
        with self.lock:
            self.history = []
            self.min_rv = self.rv
            for _, q in self.watchers:
                q.put(("gone",))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-apiserver"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("fake-apiserver: " + (fmt % args) + "\n")

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)    # a client that never finishes its handshake
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError) as e:
                with self.cluster.lock:
                    self.cluster.counters["tls_failures"] += 1
                self.log_message("TLS handshake failed: %s", e)
                raise
            self.request.settimeout(None)
        super().setup()

    @property
    def cluster(self):
        return self.server.cluster

    def send_json(self, code, body, newline=False):
        data = json.dumps(body).encode() + (b"\n" if newline else b"")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def authorized(self):
        tok = self.cluster.token
        if tok is None:
            return True
        if self.headers.get("Authorization") == "Bearer " + tok:
            return True
        with self.cluster.lock:
            self.cluster.counters["unauthorized"] += 1
        self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
        return False

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/_control/stats":
            with self.cluster.lock:
                body = dict(self.cluster.counters, rv=self.cluster.rv,
                            watchers=len(self.cluster.watchers))
            return self.send_json(200, body)
        if url.path in ("/healthz", "/readyz", "/livez"):
            return self.send_json(200, {"status": "ok"})
        parts = url.path.strip("/").split("/")
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "configmaps":
            if not self.authorized():
                return
            with self.cluster.lock:
                cm = self.cluster.configmaps.get((parts[3], parts[5]))
            if cm is None:
                return self.send_json(404, status(404, "NotFound", f'configmaps "{parts[5]}" not found'))
            return self.send_json(200, cm)
        resource = version = ns = None
        if len(parts) == 3 and parts[:2] == ["api", "v1"] and parts[2] not in CRDS:
            resource = parts[2]
        elif len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "configmaps":
            resource, ns = "configmaps", parts[3]
        elif len(parts) == 4 and parts[:3] == ["apis", "discovery.k8s.io", "v1"]:
            resource = parts[3]
        elif len(parts) == 4 and parts[0] == "apis" and parts[3] in CRDS and \
                parts[1] == CRDS[parts[3]][0]:
            with self.cluster.lock:
                if parts[2] in self.cluster.served[parts[3]]:
                    resource, version = parts[3], parts[2]
        if resource not in KINDS:
            return self.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))
        if not self.authorized():
            return
        sel = q.get("fieldSelector", "")
        name = sel[len("metadata.name="):] if sel.startswith("metadata.name=") else None
        if q.get("watch") in ("1", "true"):
            return self.watch(resource, q, version, ns, name)
        return self.list(resource, q, version, ns, name)

    def list(self, resource, q, version=None, ns=None, name=None):
        c = self.cluster
        limit = int(q.get("limit", "0") or 0)
        start = 0
        with c.lock:
            c.counters["lists"] += 1
            rv = c.rv
            if not q.get("continue"):
                c.counters["list_starts"][resource] += 1
            elif resource in c.expire_continue:
                c.expire_continue.discard(resource)
                c.counters["gone_continue"] += 1
                return self.send_json(410, status(410, "Expired",
                    "The provided continue parameter is too old to display a consistent list result."))
            if q.get("continue"):
                try:
                    tok = json.loads(base64.b64decode(q["continue"]))
                    rv, start = tok["rv"], tok["start"]
                except (ValueError, KeyError):
                    return self.send_json(400, status(400, "BadRequest", "invalid continue token"))
                if rv < c.min_rv:
                    c.counters["gone"] += 1
                    return self.send_json(410, status(410, "Expired",
                        "The provided continue parameter is too old to display a consistent list result."))
            keys = sorted(k for k, o in c.objects[resource].items() if selected(o, ns, name))
            end = len(keys) if not limit else min(len(keys), start + limit)
            items = [copy.deepcopy(c.objects[resource][k]) for k in keys[start:end]]
        for it in items:
            if resource in CRDS:    # custom resources keep them, in the version asked
                it["apiVersion"] = api_version(resource, version)
            else:
                it.pop("kind", None)
                it.pop("apiVersion", None)
        md = {"resourceVersion": str(rv)}
        if end < len(keys):
            md["continue"] = base64.b64encode(json.dumps({"rv": rv, "start": end}).encode()).decode()
            md["remainingItemCount"] = len(keys) - end
        kind = KINDS[resource][0] + "List"
        self.send_json(200, {"kind": kind, "apiVersion": api_version(resource, version),
                             "metadata": md, "items": items})

    def chunk(self, obj=None, raw=None):
        data = raw if raw is not None else (json.dumps(obj) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def watch(self, resource, q, version=None, ns=None, name=None):
        c = self.cluster
        timeout = float(q.get("timeoutSeconds", "1800") or 1800)
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true")
        try:
            from_rv = int(q.get("resourceVersion", "0") or 0)
        except ValueError:
            return self.send_json(400, status(400, "BadRequest", "invalid resourceVersion"))
        mq = queue.Queue()
        with c.lock:
            c.counters["watches"] += 1
            http_gone = c.gone_next.pop(resource, None)
            if http_gone is not None:
                c.counters["gone_watch_http"] += 1
        if http_gone is not None:
            self.close_connection = True
            return self.send_json(410, status(410, "Gone",
                "too old resource version: %d (%d)" % (from_rv, c.min_rv)), newline=http_gone)
        with c.lock:
            gone = from_rv != 0 and from_rv < c.min_rv
            if gone:
                c.counters["gone"] += 1
                backlog = []
            else:
                backlog = [(t, o) for (rv, r, t, o) in c.history
                           if r == resource and rv > from_rv and selected(o, ns, name)]
                c.watchers.append((resource, mq))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if gone:
                self.chunk({"type": "ERROR", "object": status(410, "Expired",
                    "too old resource version: %d (%d)" % (from_rv, c.min_rv))})
                self.chunk(raw=b"")
                return
            def event(t, o):
                if resource in CRDS:
                    o = dict(o, apiVersion=api_version(resource, version))
                self.chunk({"type": t, "object": o})
            for t, o in backlog:
                event(t, o)
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    msg = mq.get(timeout=min(left, 0.5))
                except queue.Empty:
                    continue
                if msg[0] == "event":
                    if selected(msg[2], ns, name):
                        event(msg[1], msg[2])
                elif msg[0] == "bookmark":
                    if bookmarks:
                        kind = KINDS[resource][0]
                        self.chunk({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": "v1",
                                    "metadata": {"resourceVersion": str(msg[1]),
                                                 "annotations": {"k8s.io/initial-events-end": "true"}}}})
                elif msg[0] == "gone":
                    self.chunk({"type": "ERROR", "object": status(410, "Expired",
                        "too old resource version: %d (%d)" % (from_rv, c.min_rv))})
                    break
                elif msg[0] == "garbage":
                    self.chunk(raw=b'{"type":"ADDED","object":{"metadata":\n')
                elif msg[0] == "close":
                    break
            self.chunk(raw=b"")
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            with c.lock:
                if (resource, mq) in c.watchers:
                    c.watchers.remove((resource, mq))
            self.close_connection = True

    def read_body(self):
        """The request's JSON body, or None after answering 400."""
        n = int(self.headers.get("Content-Length", "0") or 0)
        try:
            return json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            self.send_json(400, {"error": "bad json"})
            return None

    def do_POST(self):
        url = urlparse(self.path)
        body = self.read_body()
        if body is None:
            return
        c = self.cluster
        if url.path == "/apis/authentication.k8s.io/v1/tokenreviews":
            return self.token_review(body)
        parts = url.path.strip("/").split("/")
        if len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "configmaps":
            return self.configmap_write(parts[3], None, body, create=True)
        verb = url.path[len("/_control/"):] if url.path.startswith("/_control/") else None
        silent = bool(body.get("silent"))
        if verb == "apply":
            obj = c.apply(body["resource"], body["object"], emit=not silent, save=True)
            return self.send_json(200, {"resourceVersion": obj["metadata"]["resourceVersion"]})
        if verb == "delete":
            obj = c.delete(body["resource"], body.get("namespace"), body["name"], emit=not silent)
            return self.send_json(200 if obj else 404, {"deleted": bool(obj)})
        if verb == "bookmark":
            with c.lock:
                c.rv += 1
                rv = c.rv
                c.save()
            c.broadcast(("bookmark", rv))
            return self.send_json(200, {"resourceVersion": str(rv)})
        if verb == "bump":
            with c.lock:
                c.rv += int(body.get("n", 1))
                rv = c.rv
                c.save()
            return self.send_json(200, {"resourceVersion": str(rv)})
        if verb == "expire":
            c.expire()
            return self.send_json(200, {"minResourceVersion": str(c.min_rv)})
        if verb == "close":
            c.broadcast(("close",))
            return self.send_json(200, {})
        if verb == "garbage":
            c.broadcast(("garbage",), body.get("resource"))
            return self.send_json(200, {})
        if verb in ("gone_next", "expire_continue"):
            if body.get("resource") not in KINDS:
                return self.send_json(400, {"error": "unknown resource"})
            with c.lock:
                if verb == "gone_next":
                    c.gone_next[body["resource"]] = bool(body.get("newline"))
                else:
                    c.expire_continue.add(body["resource"])
            return self.send_json(200, {})
        if verb == "token":
            c.token = body.get("token")
            return self.send_json(200, {})
        if verb == "review":
            with c.lock:
                c.reviews[body["token"]] = body
            return self.send_json(200, {})
        if verb == "crd":
            if body.get("resource") not in CRDS:
                return self.send_json(400, {"error": "unknown custom resource"})
            with c.lock:
                c.served[body["resource"]] = [v for v in CRDS[body["resource"]][1]
                                              if v in body.get("versions", [])]
            c.broadcast(("close",), body["resource"])   # a deleted CRD ends its watches
            return self.send_json(200, {})
        return self.send_json(404, {"error": "unknown control verb"})

    def do_PUT(self):
        url = urlparse(self.path)
        body = self.read_body()
        if body is None:
            return
        parts = url.path.strip("/").split("/")
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "configmaps":
            return self.configmap_write(parts[3], parts[5], body, create=False)
        return self.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))

    def configmap_write(self, ns, name, body, create):
        if not self.authorized():
            return
        c = self.cluster
        name = name or body.get("metadata", {}).get("name")
        if body.get("kind") != "ConfigMap" or not name:
            return self.send_json(400, status(400, "BadRequest", "not a ConfigMap"))
        with c.lock:
            exists = (ns, name) in c.configmaps
            if create and exists:
                return self.send_json(409, status(409, "AlreadyExists", f'configmaps "{name}" already exists'))
            if not create and not exists:
                return self.send_json(404, status(404, "NotFound", f'configmaps "{name}" not found'))
            c.rv += 1
            obj = copy.deepcopy(body)
            obj.setdefault("metadata", {}).update({"name": name, "namespace": ns,
                                                   "resourceVersion": str(c.rv)})
            c.configmaps[(ns, name)] = obj
            c.counters["configmap_writes"] += 1
        return self.send_json(201 if create else 200, obj)

    def token_review(self, body):
        if not self.authorized():
            return
        c = self.cluster
        spec = body.get("spec", {})
        want = spec.get("audiences") or []
        with c.lock:
            c.counters["tokenreviews"] += 1
            r = c.reviews.get(spec.get("token"))
        st = {"authenticated": False}
        if r is None:
            st["error"] = "[invalid bearer token, square/go-jose: error in cryptographic primitive]"
        else:
            auds = [a for a in r.get("audiences", []) if not want or a in want]
            if not auds:
                st["error"] = (f"[invalid bearer token, token audiences {r.get('audiences')} is "
                               f"invalid for the target audiences {want}]")
            else:
                extra = {}
                if r.get("pod"):
                    extra["authentication.kubernetes.io/pod-name"] = [r["pod"]]
                if r.get("node"):
                    extra["authentication.kubernetes.io/node-name"] = [r["node"]]
                st = {"authenticated": True, "audiences": auds,
                      "user": {"username": r["user"], "uid": "uid-" + r["user"],
                               "groups": ["system:serviceaccounts", "system:authenticated"],
                               "extra": extra}}
        out = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
               "metadata": {"creationTimestamp": None}, "spec": spec, "status": st}
        return self.send_json(201, out)


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if self.verbose:
            super().handle_error(request, client_address)


def generate(c, spec):
    n = {"pods": 0, "services": 0, "nodes": 1, "namespaces": 1}
    for part in spec.split(","):
        k, v = part.split("=")
        n[k] = int(v)
    for i in range(n["namespaces"]):
        labels = {"kubernetes.io/metadata.name": f"ns-{i}"}
        if i % 2 == 0:
            labels["istio.io/dataplane-mode"] = "ambient"
        c.apply("namespaces", {"metadata": {"name": f"ns-{i}", "labels": labels}}, emit=False)
    for i in range(n["nodes"]):
        c.apply("nodes", {"metadata": {"name": f"node-{i}", "labels": {"kubernetes.io/hostname": f"node-{i}"}},
                          "status": {"addresses": [{"type": "InternalIP", "address": f"172.18.{i // 250}.{i % 250 + 2}"},
                                                   {"type": "Hostname", "address": f"node-{i}"}]}}, emit=False)
    apps = max(1, n["services"])
    for i in range(n["services"]):
        ns = f"ns-{i % n['namespaces']}"
        c.apply("services", {"metadata": {"name": f"app-{i}", "namespace": ns, "labels": {"app": f"app-{i}"}},
                             "spec": {"type": "ClusterIP", "clusterIP": f"10.96.{i // 250}.{i % 250 + 1}",
                                      "clusterIPs": [f"10.96.{i // 250}.{i % 250 + 1}"], "selector": {"app": f"app-{i}"},
                                      "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}},
                emit=False)
    for i in range(n["pods"]):
        a = i % apps
        ns = f"ns-{a % n['namespaces']}"
        h = "%010x" % (a * 7919)
        ip = f"10.{100 + i // 65000}.{(i // 250) % 256}.{i % 250 + 1}"
        c.apply("pods", {
            "metadata": {"name": f"app-{a}-{h}-{i:05d}", "namespace": ns,
                         "labels": {"app": f"app-{a}", "pod-template-hash": h, "version": "v1"},
                         "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"app-{a}-{h}",
                                              "uid": "u", "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"serviceAccountName": f"app-{a}", "nodeName": f"node-{i % n['nodes']}",
                     "containers": [{"name": "app", "image": "registry.example/app:1.0",
                                     "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                                     "env": [{"name": "LOG_LEVEL", "value": "info"}],
                                     "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                                     "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}]}],
                     "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler"},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "172.18.0.2",
                       "qosClass": "Burstable", "startTime": "2024-01-01T00:00:00Z",
                       "conditions": [{"type": t, "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}
                                      for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
                       "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0, "started": True,
                                              "image": "registry.example/app:1.0", "imageID": "sha256:" + "ab" * 32,
                                              "containerID": "containerd://" + "cd" * 32,
                                              "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}]}},
            emit=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--token")
    ap.add_argument("--state")
    ap.add_argument("--rv-jump", type=int, default=0)
    ap.add_argument("--generate")
    ap.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM chain)")
    ap.add_argument("--tls-key", help="the certificate's private key (PEM)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--no-istio-crds", action="store_true",
                    help="serve no Istio custom resource (as a cluster without Istio)")
    args = ap.parse_args()
    cluster = Cluster(args.state, args.rv_jump)
    cluster.token = args.token
    if args.no_istio_crds:
        cluster.served = {r: [] for r in CRDS}
    if args.generate:
        generate(cluster, args.generate)
        cluster.save()
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    srv = Server((args.bind, args.port), Handler)
    srv.cluster = cluster
    srv.verbose = args.verbose
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        # the handshake runs on the connection's thread (Handler.setup), not in accept()
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    print("LISTENING %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
