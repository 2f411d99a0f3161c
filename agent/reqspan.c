// SPDX-License-Identifier: Apache-2.0
/* Per-request spans from a conn's bytes: http/h1track reports request heads and final
 * responses; each request becomes a CLIENT span (source node) or a SERVER span (destination
 * node) timed from its first byte to its response's last byte, named and attributed as the
 * waypoint's request spans are. */
#include "agent/reqspan.h"
#include "agent/telemetry.h"
#include "common/log.h"
#include "common/util.h"
#include "http/h1track.h"
#include "otlp/tracecontext.h"
#include "otlp/tracer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct reqspan {
	struct h1track t;
	struct conn *c;
	const struct tracing_conf *tc;	/* the conn's settings (borrowed: the conn holds them) */
	bool outbound;			/* CLIENT spans; else SERVER spans */
	bool has_conn_ctx;		/* conn_ctx is known (both nodes see the same) */
	struct span_context conn_ctx;	/* the outbound conn span: trace and span ID */
	struct span *spans[H1T_PIPELINE];	/* by ordinal, while awaiting the response */
};

static uint64_t stopped;
static uint64_t live;	/* trackers allocated (loop thread) */

uint64_t reqspan_live_count(void)
{
	return live;
}

uint64_t reqspan_stopped_count(void)
{
	return stopped;
}

bool reqspan_wanted(const struct conn_info *ci, bool on, bool reporting)
{
	if (!on || !reporting || ci->via_waypoint)
		return false;
	return (ci->kind == CONN_OUTBOUND && ci->source.workload) || ci->kind == CONN_INBOUND_HBONE;
}

/* splitmix64's finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mix. */
static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t load_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

void reqspan_client_id(const struct span_context *conn, uint64_t ordinal, uint8_t out[SPAN_ID_LEN])
{
	uint64_t h = mix64(load_be64(conn->trace_id));
	h = mix64(h ^ load_be64(conn->trace_id + 8));
	h = mix64(h ^ load_be64(conn->span_id));
	h = mix64(h ^ ordinal);
	if (!h)
		h = 1;	/* an all-zero span ID is invalid */
	for (int i = SPAN_ID_LEN - 1; i >= 0; i--, h >>= 8)
		out[i] = (uint8_t)h;
}

/* "host:port" (or "[v6]:port"): the host alone and the port, as OTel's server.* want. */
static void set_server(struct span *s, const char *host, size_t len)
{
	char buf[H1T_HOST_MAX + 1];
	const char *colon;
	size_t hl = len;
	long port = 0;

	memcpy(buf, host, len);
	buf[len] = '\0';
	colon = strrchr(buf, ':');
	if (colon && (buf[0] == '[' ? colon > strchr(buf, ']') : !memchr(buf, ':', (size_t)(colon - buf)))) {
		char *end;
		port = strtol(colon + 1, &end, 10);
		if (*end || port <= 0 || port > 65535)
			port = 0;
		else
			hl = (size_t)(colon - buf);
	}
	if (hl >= 2 && buf[0] == '[' && buf[hl - 1] == ']') {
		buf[hl - 1] = '\0';
		span_set_str(s, "server.address", buf + 1);
	} else {
		buf[hl] = '\0';
		span_set_str(s, "server.address", buf);
	}
	if (port)
		span_set_int(s, "server.port", port);
}

#define METHOD_MAX 24	/* with its NUL; longer methods are cut */
_Static_assert(METHOD_MAX + 101 <= SPAN_MAX_NAME_LEN, "a request span's name fits");

static void do_request(struct reqspan *r, const struct h1t_request *q)
{
	const struct conn_info *ci = conn_info(r->c);
	struct span_context own, parent;
	bool has_own = q->traceparent &&
		       tracecontext_parse(q->traceparent, q->traceparent_len, &own) == 0;
	uint8_t client_id[SPAN_ID_LEN];
	char name[SPAN_MAX_NAME_LEN], path[H1T_PATH_MAX + 1], method[METHOD_MAX];
	struct span *s;

	/* CLIENT: parent = the request's own span, else the outbound conn span. SERVER: parent
	 * = the CLIENT span (derived ID) in the same trace; without the conn's context (a peer
	 * that is not ambit) the request's own span, else the inbound conn span. */
	if (r->has_conn_ctx)
		reqspan_client_id(&r->conn_ctx, q->ordinal, client_id);
	if (has_own)
		parent = own;
	else if (r->has_conn_ctx)
		parent = r->conn_ctx;
	else if (!(ci->traceparent[0] &&
		   tracecontext_parse(ci->traceparent, strlen(ci->traceparent), &parent) == 0))
		memset(&parent, 0, sizeof(parent));
	if (!r->outbound && r->has_conn_ctx)
		memcpy(parent.span_id, client_id, SPAN_ID_LEN);
	parent.remote = has_own || (!r->outbound && r->has_conn_ctx);	/* else our conn span */

	/* method, path and the name "METHOD /path" (the path cut at 100 bytes), copied rather
	 * than formatted: this runs for every request */
	size_t ml = strnlen(q->method, sizeof(method) - 1);
	size_t pl = strnlen(q->path, MIN(q->path_len, sizeof(path) - 1));
	memcpy(method, q->method, ml);
	method[ml] = '\0';
	memcpy(path, q->path, pl);
	path[pl] = '\0';
	if (strcmp(method, "CONNECT") == 0) {
		memcpy(name, "CONNECT", sizeof("CONNECT"));
	} else {
		size_t k = MIN(pl, (size_t)100);
		memcpy(name, method, ml);
		name[ml] = ' ';
		memcpy(name + ml + 1, path, k);
		name[ml + 1 + k] = '\0';
	}
	/* the workload's own tracing settings (provider, sampling, tags), as its conn span */
	s = telemetry_span_start(ci, r->tc, name, r->outbound ? SPAN_KIND_CLIENT : SPAN_KIND_SERVER,
				 span_context_valid(&parent) ? &parent : NULL,
				 r->outbound && r->has_conn_ctx ? client_id : NULL);
	if (!s)
		return;	/* out of memory: this request goes untraced */
	s->start_ns = q->start_ns;
	if (s->recording) {
		span_set_str(s, "http.request.method", method);
		span_set_str(s, "url.path", path);
		span_set_str(s, "network.protocol.name", "http");
		span_set_str(s, "network.protocol.version", q->http_minor ? "1.1" : "1.0");
		if (q->host && q->host_len)
			set_server(s, q->host, q->host_len);
		telemetry_set_peers(s, ci);
		span_set_int(s, "http.request.ordinal", (int64_t)q->ordinal);
	}
	r->spans[q->ordinal % H1T_PIPELINE] = s;
}

static void do_response(struct reqspan *r, const struct h1t_response *a)
{
	struct span *s = r->spans[a->ordinal % H1T_PIPELINE];

	r->spans[a->ordinal % H1T_PIPELINE] = NULL;
	if (!s)
		return;
	s->end_ns = a->end_ns > s->start_ns ? a->end_ns : s->start_ns;
	if (s->recording) {
		if (a->status) {
			span_set_int(s, "http.response.status_code", a->status);
			span_set_int(s, "http.status_code", a->status);
		}
		if (a->status >= 500 || !a->status) {
			char msg[SPAN_MAX_STATUS_LEN];
			if (a->status)
				snprintf(msg, sizeof(msg), "HTTP %d", a->status);
			else
				snprintf(msg, sizeof(msg), "no response: %s", a->why);
			span_set_status(s, SPAN_STATUS_ERROR, msg);
		}
	}
	span_end(s);
}

/* The spans of a loop turn's requests are made at the end of its before-sleep step: the
 * tracker already runs there, after the relay has written the bytes on (agent/conn.c shows
 * them in a late task, behind the flush tasks), and the spans come after the tracking of every
 * conn of the turn. The tracker's events of the turn wait here in order, copied (their strings
 * live only during the callback); a full queue is worked off at once, and a conn that closes
 * first has the queue worked off before it goes. One queue per loop thread. */
#define EV_MAX 32	/* 16 requests a turn; more are made at once (16 KiB per thread) */
#define EV_WHY_MAX 96

struct rq_event {
	struct reqspan *r;
	bool is_request;
	struct h1t_request q;		/* strings point into the copies below when worked off */
	struct h1t_response a;
	char method[METHOD_MAX];
	char path[H1T_PATH_MAX];
	char host[H1T_HOST_MAX];
	char tp[H1T_TP_MAX];
	char why[EV_WHY_MAX];
};

static __thread struct {
	struct rq_event ev[EV_MAX];
	unsigned head, n;
	bool scheduled;			/* a before-sleep task will work the queue off */
} evq;

static void evq_run(void)
{
	while (evq.n) {
		struct rq_event *e = &evq.ev[evq.head];
		evq.head = (evq.head + 1) % EV_MAX;
		evq.n--;
		if (e->is_request)
			do_request(e->r, &e->q);
		else
			do_response(e->r, &e->a);
	}
}

static void evq_task(struct loop *l, void *arg)
{
	(void)l;
	(void)arg;
	evq.scheduled = false;
	evq_run();
}

/* A free slot at the queue's tail for r, with the before-sleep task scheduled. NULL: the
 * caller makes the span now (no memory for the task). */
static struct rq_event *evq_add(struct reqspan *r)
{
	struct rq_event *e;

	if (evq.n == EV_MAX)
		evq_run();
	if (!evq.scheduled) {
		if (loop_defer(conn_loop(r->c), evq_task, NULL)) {
			evq_run();	/* (empty when nothing is scheduled) keeps the order */
			return NULL;
		}
		evq.scheduled = true;
	}
	e = &evq.ev[(evq.head + evq.n++) % EV_MAX];
	e->r = r;
	return e;
}

static size_t copy_cut(char *dst, size_t cap, const char *src, size_t len)
{
	len = MIN(len, cap);
	memcpy(dst, src, len);
	return len;
}

static void on_request(void *arg, const struct h1t_request *q)
{
	struct reqspan *r = arg;
	struct rq_event *e = evq_add(r);

	if (!e) {
		do_request(r, q);
		return;
	}
	e->is_request = true;
	e->q = *q;
	e->q.method = e->method;
	e->method[copy_cut(e->method, sizeof(e->method) - 1, q->method,
			   strnlen(q->method, sizeof(e->method) - 1))] = '\0';
	e->q.path_len = copy_cut(e->path, sizeof(e->path), q->path, q->path_len);
	e->q.path = e->path;
	if (q->host) {
		e->q.host_len = copy_cut(e->host, sizeof(e->host), q->host, q->host_len);
		e->q.host = e->host;
	}
	if (q->traceparent) {
		e->q.traceparent_len = copy_cut(e->tp, sizeof(e->tp), q->traceparent,
						q->traceparent_len);
		e->q.traceparent = e->tp;
	}
}

static void on_response(void *arg, const struct h1t_response *a)
{
	struct reqspan *r = arg;
	struct rq_event *e = evq_add(r);

	if (!e) {
		do_response(r, a);
		return;
	}
	e->is_request = false;
	e->a = *a;
	if (a->why) {
		snprintf(e->why, sizeof(e->why), "%s", a->why);
		e->a.why = e->why;
	}
}

static void on_stop(void *arg, const char *why, bool error)
{
	struct reqspan *r = arg;
	if (!error)
		return;	/* an upgrade: the tunnel is not HTTP, nothing went wrong */
	static struct log_ratelimit rl = LOG_RATELIMIT_INIT(5000, 10);

	stopped++;
	/* Once per connection (on_stop comes once), and rate-limited across connections: a
	 * client speaking odd HTTP at a high rate must not flood the log. */
	if (log_enabled(LOG_LVL_INFO) && log_ratelimit_ok(&rl))
		log_msg(LOG_LVL_INFO, "conn %llu: request tracing stopped: %s",
			(unsigned long long)conn_id(r->c), why);
}

static const struct h1t_cbs cbs = {
	.on_request = on_request, .on_response = on_response, .on_stop = on_stop,
};

struct reqspan *reqspan_new(struct conn *c, const struct tracing_conf *tc, bool client_reported)
{
	const struct conn_info *ci = conn_info(c);
	struct reqspan *r = calloc(1, sizeof(*r));
	const char *tp;

	if (!r)
		return NULL;
	r->c = c;
	r->tc = tc;
	r->outbound = ci->kind == CONN_OUTBOUND;
	/* The outbound conn span: ours on the source node, the CONNECT's on the destination. The
	 * destination derives the CLIENT span IDs from it only when the source reports them. */
	tp = r->outbound ? ci->traceparent : ci->parent_traceparent;
	r->has_conn_ctx = (r->outbound || client_reported) && tp[0] &&
			  tracecontext_parse(tp, strlen(tp), &r->conn_ctx) == 0;
	h1t_init(&r->t, &cbs, r);
	live++;
	return r;
}

bool reqspan_feed(struct reqspan *r, enum conn_side from, const uint8_t *p, size_t n)
{
	h1t_feed(&r->t, from == CONN_DOWN ? H1T_REQ : H1T_RESP, p, n, now_real_ns());
	return h1t_active(&r->t);
}

void reqspan_eof(struct reqspan *r, enum conn_side from)
{
	h1t_eof(&r->t, from == CONN_DOWN ? H1T_REQ : H1T_RESP, now_real_ns());
}

bool reqspan_settled(const struct reqspan *r)
{
	return !h1t_active(&r->t) && r->t.resp_seq == r->t.req_seq;
}

void reqspan_free(struct reqspan *r, const char *why)
{
	if (!r)
		return;
	h1t_close(&r->t, why, now_real_ns());
	evq_run();	/* r's events (and others', in order) before r goes */
	/* Requests whose head was never complete were never started; all others ended. */
	for (size_t i = 0; i < H1T_PIPELINE; i++)
		span_end(r->spans[i]);
	live--;
	free(r);
}
