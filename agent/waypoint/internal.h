/* SPDX-License-Identifier: Apache-2.0 */
/* What the waypoint's data path shares between its files: waypoint.c (sessions, HTTP/1.x,
 * upstream dialing, balancing, policy, spans and metrics), h2.c (HTTP/2 per stream) and
 * routes.c (HTTPRoutes per request). Not a
 * public API: only agent/waypoint/ includes it. */
#ifndef AMBIT_AGENT_WAYPOINT_INTERNAL_H
#define AMBIT_AGENT_WAYPOINT_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent/conn.h"
#include "agent/protocol.h"
#include "agent/tracing.h"
#include "agent/waypoint/h2rules.h"
#include "agent/waypoint/waypoint.h"
#include "agent/workloads.h"
#include "common/util.h"
#include "http/http1.h"
#include "tls/identity.h"

struct model;
struct model_workload;
struct authz_set;
struct authz_request;
struct span;
struct hbone_pool;
struct hbone_server;
struct tls_ctx;
struct otlp_resource;
struct wp_h2d;
struct wp_h2u;
struct wp_h2s;
struct hr_rule;
struct hr_request;
struct httproute_set;
struct h2map_hdrs;
struct wp_route;

#define WP_STAGE_MAX	(64 * 1024)	/* staging past which a side stops reading */
#define WP_IDLE_MS	30000		/* an unused upstream connection closes after this */
/* Envoy's RBAC filter's local reply to a denied HTTP request. */
#define WP_RBAC_BODY	"RBAC: access denied"

enum sess_st {
	SS_SNIFF,	/* waiting for the first bytes: HTTP/1.x or not */
	SS_HEAD,	/* reading a request head (idle between requests) */
	SS_BODY,	/* the head went upstream; the request body follows */
	SS_RESPONSE,	/* the request is complete; waiting for the end of its response */
	SS_TUNNEL,	/* raw bytes both ways: not HTTP, or after an upgrade or CONNECT */
	SS_CLOSING,	/* our EOF is queued; discarding until the client closes */
	SS_H2,		/* an HTTP/2 client: agent/waypoint/h2.c serves its streams */
};

struct endpoint_stat {
	char *uid;
	uint32_t active;		/* requests in flight (least_request) */
	uint64_t total;
	struct endpoint_stat *next;
};

struct series {
	char *labels;			/* rendered {a="b",...} */
	uint64_t v;
	struct series *next;
};

struct wp_up;

/* One inbound CONNECT stream (one client connection). */
struct wp_sess {
	struct waypoint *w;
	struct conn_end end;		/* at CONN_UP of down */
	struct conn *down;		/* NULL once released */
	int down_err;
	int refs;
	bool scheduled, pumping, again;
	enum sess_st st;
	struct h1 req;
	struct h1_buf to_up, to_down;	/* staging */
	struct wp_up *up;		/* the request's (or tunnel's) upstream */
	bool client_eof;		/* the client finished sending (consumed) */
	bool eof_to_client;		/* our EOF is queued/sent */
	bool close_after;		/* close the client connection after this response */
	struct loop_timer timer;	/* sniff timeout, then close wait */
	struct loop_timer rt_timer;	/* the request in flight's HTTPRoute timeout */
	uint64_t rt_timeout_ms;		/* its length (0: none) */
	/* what the CONNECT asked for */
	struct sockaddr_storage authority;	/* VIP:port or workloadIP:port */
	char *svc_ns, *svc_name;	/* NULL in workload mode */
	char *service;			/* FQDN for spans and metrics */
	struct conn_peer source;	/* the client workload, for metrics */
	char *peer_identity;		/* the tunnel's verified peer ("spiffe://..."), for L7 policy */
	struct sockaddr_storage src_ip;	/* the client: the vouched source, else the tunnel's peer */
	uint16_t dst_port;		/* the target port (L7 policy's destination.port) */
	enum protocol proto;		/* the service port's declared protocol (UNKNOWN: detect) */
	bool answered;			/* the request in flight was answered locally (refused by
					 * policy, redirected): its body is read and dropped, then
					 * the next request follows */
	/* the request in flight */
	struct span *span;
	int status;
	bool resp_started;		/* bytes of its response went to the client */
	bool req_head, req_connect;
	char *ep_uid;			/* chosen endpoint (least_request accounting) */
	struct wp_h2d *h2;		/* SS_H2: the HTTP/2 server session (h2.c) */
	struct wp_h2s *h2x;		/* the request in flight goes as HTTP/2 (an http2/grpc port) */
	char *rt_service;		/* the request in flight's HTTPRoute backend (FQDN), for
					 * spans and metrics; NULL: service */
	struct httproute_set *rt_set;	/* a reference holding rt_resp */
	const struct hr_hmod *rt_resp;	/* the request in flight's ResponseHeaderModifier (its
					 * HTTP/1.x answers, local ones included), or NULL */
	const struct wp_route *rt_cur;	/* while its head is being sent: its route (header edits,
					 * the backend an HTTP/2 retry picks from) */
	/* retries of the request in flight on an HTTP/1.1 upstream (the HTTP/2 path's policy) */
	struct wp_retry_policy pol;	/* its retry policy (retries 0: none) */
	struct wp_route *rt_try;	/* its route, the backend a retry picks from (or NULL) */
	struct h1_buf sent;		/* its bytes as they go upstream (head, framed body), kept
					 * for a retry while they fit WP_STAGE_MAX */
	bool sent_over;			/* more did not fit: no retry */
	bool retry_answer;		/* the answer's head asked for a retry (up_step does it) */
	bool retry_wait;		/* waiting for retry_timer (the back-off) */
	uint8_t retries;		/* retries so far */
	char tp[64];			/* the request span's traceparent (a retry's CONNECT) */
	struct loop_timer retry_timer;	/* the back-off before a retry */
	struct loop_timer try_timer;	/* each try's timeout (pol.per_try_ms) */
	struct wp_sess *prev, *next;
};

/* One connection to an endpoint: an HBONE stream to its node agent (or a TCP socket). */
struct wp_up {
	struct waypoint *w;
	struct conn_end end;		/* at CONN_DOWN of conn */
	struct conn *conn;		/* NULL once released */
	int err;
	int refs;
	struct wp_sess *sess;		/* the owner; NULL while idle or closing */
	struct wp_h2u *h2;		/* or the HTTP/2 client session that owns it (h2.c) */
	struct wp_h2s *h2s;		/* or the HTTP/2 client stream it serves over HTTP/1.1 */
	struct h1 resp;
	char key[ADDR_STR_LEN + SPIFFE_ID_STR_MAX];	/* endpoint addr + identity */
	bool idle, closing, scheduled;
	uint64_t idle_since_ms;
	struct wp_up *prev, *next;	/* idle list */
};

struct waypoint {
	struct waypoint_opts o;
	char *name, *namespace, *trust_domain, *node_name;
	struct tls_ctx *client_ctx, *server_ctx;
	struct hbone_pool *pool;
	struct hbone_server *server;
	struct sockaddr_storage local_ips[32];
	int nlocal;
	struct otlp_resource *resource;
	char resource_key[256];
	struct wp_sess *sessions;
	unsigned nsessions;
	struct wp_up *idle;
	unsigned nidle;
	struct wp_h2u *h2ups;		/* HTTP/2 upstream connections (h2.c) */
	unsigned nh2ups, nh2sessions;
	struct wp_h2s *h2q;		/* requests waiting for room on an endpoint's connections */
	unsigned nh2q;
	uint64_t h2_streams, h2ups_opened, h2_retries;
	struct loop_timer sweep;
	uint32_t rr;
	bool draining;
	struct endpoint_stat *eps[64];
	struct series *series[256];
	unsigned nseries;
	struct series *denied[64];	/* ambit_authorization_denied_total */
	unsigned ndenied;
	uint64_t requests, local_replies, tunnels, upstreams_opened, upstreams_reused;
};

/* ---- waypoint.c, for h2.c ---- */
void wp_sess_schedule(struct wp_sess *s);
/* An endpoint for the session's next request from m (balancing per waypoint_opts.lb); its
 * address in *target. NULL when none. */
const struct model_workload *wp_pick(struct waypoint *w, struct wp_sess *s, const struct model *m,
				     struct sockaddr_storage *target);
/* A connection to dst at target (HBONE, or plain TCP outside the mesh), owned by s (a pooled
 * HTTP/1.1 one when pooled_ok). NULL with *why set. New reference. */
struct wp_up *wp_up_get(struct wp_sess *s, const struct model *m, const struct model_workload *dst,
			const struct sockaddr_storage *target, const char *traceparent, bool pooled_ok,
			const char **why);
/* Hands an upstream back (closed gracefully when ok, reset when not); drops the reference. */
void wp_up_put(struct wp_up *u, bool reusable, bool ok);
/* The pool key of dst at target ("addr|identity|enrolled"); -ENOENT without an identity. */
int wp_up_key(struct waypoint *w, const struct model_workload *dst,
	      const struct sockaddr_storage *target, char *key, size_t len);
struct authz_set *wp_authz_current(void);
/* A compiler of each published model (istio/latest) follows from now on: fn is subscribed the
 * first time (*subscribed; a subscription cannot be undone, so it outlives a stop and finds
 * its istio_latest stopped) and called with the current model. 0 or -errno. */
int wp_follow_models(bool *subscribed, model_listener_fn fn);
/* L7 authorization of one request of s (rq NULL: as TCP); true when denied (msg says why). */
bool wp_policy_denies(struct wp_sess *s, const struct authz_set *set, const struct authz_request *rq,
		      struct span *span, char *msg, size_t msglen);
struct endpoint_stat *wp_ep_stat(struct waypoint *w, const char *uid, bool create);

/* A local answer of the waypoint to s's HTTP/1.x request in flight, queued to the client: code
 * with body as text/plain (no body to HEAD), or a redirect to location (no body); with the
 * matched rule's ResponseHeaderModifier (s->rt_resp) and "connection: close" when close.
 * 0 or -ENOMEM. */
int wp_h1_local_answer(struct wp_sess *s, int code, const char *body, const char *location,
		       bool close);
/* The request span of one request of s (NULL when not traced): name "METHOD path", the HTTP
 * attributes, the source facts. hdr/arg look request headers up (custom tags); tp is the
 * request's traceparent (NULL: the connection's); the span's own context is written to
 * tpbuf ("" when none). */
struct wp_req_head {
	const char *method, *path, *host, *traceparent;
	size_t plen, hlen, tplen;	/* path up to '?' or '#' */
	const char *version;		/* "1.1", "2" */
	tracing_header_fn hdr;
	void *hdr_arg;
};
struct span *wp_request_span(struct wp_sess *s, const struct wp_req_head *rh, char tpbuf[64]);
/* rpc.* attributes of a gRPC request span from its path ("/pkg.Service/Method"). */
void wp_span_grpc(struct span *sp, const char *path, size_t plen);

/* How a request ended, for its span and istio_requests_total. */
struct wp_outcome {
	int code;			/* HTTP status (0: none) */
	const char *flag;		/* CONN_FLAG_* or NULL */
	const char *error;		/* NULL when fine */
	bool grpc;			/* request_protocol "grpc" */
	int grpc_status;		/* -1: none */
	const struct conn_peer *dst;	/* the endpoint, or NULL */
	const char *service;		/* destination_service when an HTTPRoute chose it (NULL:
					 * the session's) */
};
/* Ends the span (*spp, set NULL), the least-request accounting (*ep_uid, freed) and counts it. */
void wp_request_finish(struct wp_sess *s, struct span **spp, char **ep_uid, const struct wp_outcome *o);

/* ---- routes.c: HTTPRoutes (istio/httproute) per request ---- */
#define WP_FLAG_NO_CLUSTER "NC"		/* Envoy: the route's backend is not there */
#define WP_FLAG_TIMEOUT "UT"		/* Envoy: the route's timeout expired */
#define WP_TIMEOUT_WHY "upstream request timeout"	/* Envoy's 504 body and details */
/* The routing decision of one request: the backend Service an HTTPRoute rule chose. */
struct wp_route {
	struct httproute_set *set;	/* a reference while rule is in use (wp_route_fini) */
	const struct hr_rule *rule;	/* the matched rule (header edits), or NULL */
	char *route;			/* "ns/name" of its HTTPRoute, or NULL */
	char *ns, *name;		/* the backend Service; NULL: the session's own */
	uint16_t port;			/* its service port */
	char *service;			/* its FQDN (spans, metrics) */
	uint64_t timeout_ms;		/* the rule's timeouts (0: none) */
	char *location;			/* a RequestRedirect rule's Location (the answer is its
					 * status), else NULL */
	char *rw_target;		/* URLRewrite: the request target upstream (path and
					 * query), else NULL */
	char *rw_host;			/* URLRewrite: the Host / :authority upstream, else NULL */
};
/* Follows the HTTPRoutes compiled from the published models (0 or -ENOMEM) / stops. */
int wp_routes_start(void);
void wp_routes_stop(void);
/* Routes one request of s (after authorization, before balancing): 0 with rt filled (rt->ns
 * NULL: no route attached to the service port, balance over it as before), or the status of
 * a local answer (404 no rule matched, 500 no usable backend, 503 out of memory) with *why
 * and *flag, or a RequestRedirect's 3xx with rt->location set (*why and *flag NULL). rt is zeroed first; wp_route_fini it in every case. */
int wp_route_request(struct wp_sess *s, const struct model *m, const struct hr_request *rq,
		     struct wp_route *rt, const char **why, const char **flag);
void wp_route_fini(struct wp_route *rt);
/* The route timeout of one request (Envoy's route timeout: from the end of the downstream
 * request until the response is complete, retries included) starts: t is armed for ms
 * (0: no timeout, nothing armed; already armed: left as it is). */
void wp_route_deadline(struct waypoint *w, struct loop_timer *t, uint64_t ms);
/* A copy of src (backend ns, name, port, service, route name, rewrite; a reference to its
 * set and its rule) into dst, zeroed first. 0 or -ENOMEM (dst then holds what was copied: wp_route_fini it). */
int wp_route_copy(struct wp_route *dst, const struct wp_route *src);
/* The span attributes of a routed request (route.name, destination.service). */
void wp_route_span(const struct wp_route *rt, struct span *sp);
/* HTTP/1.x head edits: a header modifier's (mod NULL: none) and one header replaced (name
 * NULL: none; the request span's traceparent, the answer's "connection: close"). drop[] is
 * NULL-terminated, extra[] has nextra "name: value" lines. 0 or -ENOMEM; wp_h1_edits_fini in
 * every case. */
struct wp_h1_edits {
	const char *drop[40];
	const char *extra[40];
	int nextra;
	char *mem[40];
	int nmem;
};
int wp_h1_edits(const struct hr_hmod *mod, const char *name, const char *value,
		struct wp_h1_edits *e);
/* One more header of e replaced: name dropped, "name: value" added. 0 or -ENOMEM. */
int wp_h1_edits_replace(struct wp_h1_edits *e, const char *name, const char *value);
/* One more header of e dropped (name borrowed). 0 or -ENOMEM (no room). */
int wp_h1_edits_drop(struct wp_h1_edits *e, const char *name);
void wp_h1_edits_fini(struct wp_h1_edits *e);
/* HTTP/2 field edits: whether a header modifier drops (sets or removes) field name, and its
 * set and add fields appended to out. mod NULL: nothing. */
bool wp_route_drops(const struct hr_hmod *mod, const char *name, size_t nlen);
int wp_route_add_fields(const struct hr_hmod *mod, struct h2map_hdrs *out);
/* The head of a local answer (the waypoint's own: redirect, 403, 5xx): the status line, lines[]
 * ("name: value", n of them) except those mod sets or removes, mod's set and add fields (mod
 * NULL: none), the blank line. 0 or -ENOMEM. */
int wp_h1_local_head(struct h1_buf *out, int code, const char *const *lines, size_t n,
		     const struct hr_hmod *mod);
/* The rule's ResponseHeaderModifier, NULL when it has none (or rule is NULL). */
const struct hr_hmod *wp_route_resp_mod(const struct hr_rule *rule);
/* wp_pick over the route's backend Service (rt NULL or without one: wp_pick). */
const struct model_workload *wp_pick_route(struct waypoint *w, struct wp_sess *s,
					   const struct model *m, const struct wp_route *rt,
					   struct sockaddr_storage *target);
/* Admin API /waypoint "routes": the set in force, restricted to the services of this
 * waypoint (and refused routes). New reference. */
json_t *wp_routes_json(struct waypoint *w);

/* ---- h2.c, for waypoint.c ---- */
/* The client's first bytes are the HTTP/2 preface: serve its streams (s->st becomes SS_H2).
 * 0 or -ENOMEM. */
int wp_h2_start(struct wp_sess *s);
/* Moves bytes and streams of an SS_H2 session; true on progress. */
bool wp_h2_step(struct wp_sess *s);
/* The session is going away (client gone or freed): its streams are reset upstream. */
void wp_h2_sess_fini(struct wp_sess *s);
/* Drain: GOAWAY to the client; it finishes its streams, then the session closes. */
void wp_h2_drain(struct wp_sess *s);
/* The upstream conn of an HTTP/2 connection has news (kick) or is gone (released). */
void wp_h2_up_kick(struct wp_h2u *h);
/* An HTTP/1.1 response head for an HTTP/2 client's stream (h1_cbs.on_head of its upstream). */
int wp_h2_h1_resp_head(struct wp_h2s *x, struct h1 *h);
/* An HTTP/1.x request of s to an http2/grpc port (RFC 9113 §8.3): its head h translated, on
 * a pooled HTTP/2 connection to dst; s->h2x is set and s->span moves to it. 0, or -1 with
 * *why (the caller answers 503). */
int wp_h2_h1c_request(struct wp_sess *s, const struct h1 *h, const struct model *m,
		      const struct model_workload *dst, const struct sockaddr_storage *target,
		      const char *tpbuf, const char **why);
/* Moves s->h2x: request body out, the response back as HTTP/1.1; true on progress. */
bool wp_h2_h1c_step(struct wp_sess *s);
/* Lets go of s->h2x (its upstream stream is reset if still open). */
void wp_h2_h1c_end(struct wp_sess *s, const char *flag, const char *why);
/* s->h2x's route timeout expired: 504 to the client (or its connection cut when the answer
 * began), the upstream stream cancelled. */
void wp_h2_h1c_timeout(struct wp_sess *s);
/* The periodic sweep: idle HTTP/2 upstream connections close. */
void wp_h2_sweep(struct waypoint *w, uint64_t now, bool all);
/* Admin API: a session's HTTP/2 facts, the upstream pool. New references. */
json_t *wp_h2_sess_json(const struct wp_sess *s);
json_t *wp_h2_pool_json(struct waypoint *w);

#endif
