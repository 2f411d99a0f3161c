// SPDX-License-Identifier: Apache-2.0
/* The waypoint's HTTP/2 path: a client whose CONNECT stream starts with the HTTP/2 preface gets
 * an nghttp2 server session over the stream's bytes (struct wp_h2d); each of its streams is one
 * request (struct wp_h2s), routed, authorized and balanced on its own, and carried on an
 * nghttp2 client session to the chosen endpoint (struct wp_h2u: one connection, pooled per
 * endpoint, many streams). Bodies move between the two sessions' streams through bounded
 * buffers: a side's receive window is only opened (nghttp2_session_consume) once the other
 * side's data provider has taken the bytes, so nothing is read faster than it is written.
 * nghttp2 callbacks only record, submit and schedule; bytes move in the sessions' pumps. */
#include "agent/waypoint/internal.h"
#include "agent/waypoint/h2rules.h"
#include "agent/hbone.h"
#include "agent/mesh.h"
#include "agent/proxy.h"
#include "agent/workloads.h"
#include "common/log.h"
#include "http/h2map.h"
#include "istio/authz.h"
#include "istio/httproute.h"
#include "otlp/tracer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* defaults of waypoint_opts' h2_* (config "http2") */
#define H2_DOWN_STREAMS		100		/* SETTINGS_MAX_CONCURRENT_STREAMS to clients */
#define H2_UP_STREAMS		100		/* streams per upstream connection (below the
						 * peer's own limit), when hbone.max_streams is 0 */
#define H2_CONNS_PER_EP		4		/* upstream connections per endpoint */
#define H2_CONN_WINDOW		(16u << 20)	/* connection receive window, both sides */
#define H2_IDLE_MS		60000		/* a client session with no stream this long */
#define H2_RETRY_BODY_MAX	WP_STAGE_MAX	/* request body kept for a retry, per stream */
#define H2_RESETS_PER_S		100		/* client resets of unanswered streams per second
						 * past which the session is cut (rapid reset) */

/* One client connection speaking HTTP/2 (the session's SS_H2 state). */
struct wp_h2d {
	struct wp_sess *s;
	nghttp2_session *ng;
	struct wp_h2s *streams;
	unsigned nstreams;
	uint64_t requests;
	bool goaway;			/* GOAWAY sent: no new streams; close when none is left */
	bool idle_armed;
	bool dying;			/* wp_h2_sess_fini runs: nothing is scheduled any more */
	uint64_t reset_window_ms;	/* rapid reset accounting: the current second */
	uint32_t resets;
};

/* One HTTP/2 connection to an endpoint. */
struct wp_h2u {
	struct waypoint *w;
	struct wp_up *u;		/* the connection; NULL once let go */
	nghttp2_session *ng;		/* NULL once closed */
	struct h1_buf out;		/* frames not yet taken by the conn */
	char key[sizeof(((struct wp_up *)0)->key)];
	struct conn_peer dst;		/* the endpoint, for spans and metrics */
	struct wp_h2s *streams;
	unsigned nstreams;
	int refs;
	bool scheduled, goaway, got_bytes;
	uint64_t idle_since_ms, requests;
	struct wp_h2u *prev, *next;	/* w->h2ups */
};

/* One request: a client stream and, once routed, its upstream stream. Freed when both are
 * closed. */
struct wp_h2s {
	struct wp_sess *s;		/* NULL once the client session let it go */
	struct wp_h2u *hu;		/* a reference, or NULL (answered locally) */
	struct wp_up *u1;		/* or an HTTP/1.1 upstream (an `http` port), ours */
	struct conn_peer dst1;		/* u1: the endpoint, for spans and metrics */
	struct h1_buf h1out;		/* u1: request bytes (head, framed body) not yet taken */
	bool req_chunked, req_end_sent;	/* u1: the body is chunked; its end went */
	int32_t down_sid, up_sid;
	bool down_open, up_open;
	bool head_done, req_eof, resp_final, resp_eof, resp_submitted, local, grpc, finished;
	bool head_req;
	uint8_t interim;		/* 1xx answers forwarded to the client (WP_H2_INTERIM_MAX) */
	bool h1c;			/* the client speaks HTTP/1.x (s->h2x), not HTTP/2 */
	bool te_trailers, resp_head_sent, resp_chunked, failed;	/* h1c */
	struct h2map_hdrs req, req_tr, resp, resp_tr;
	struct h2map_hdrs up_hdrs;	/* an HTTP/2 client's request as it goes upstream */
	struct h1_buf req_body, resp_body;
	/* waiting for room on the endpoint's connections (w->h2q) */
	bool queued;
	bool requeue_due;		/* a connection of its endpoint closed: wp_h2_step routes
					 * it again (a new connection now fits) */
	struct sockaddr_storage qtarget;	/* the endpoint's address */
	char qkey[sizeof(((struct wp_up *)0)->key)];
	struct loop_timer qtimer;
	struct wp_h2s *qprev, *qnext;
	int status, grpc_status;
	uint64_t resp_bytes;		/* response body bytes received from the endpoint */
	struct h1_buf req_sent;		/* the body that went upstream, kept for a retry until
					 * an answer comes (H2_RETRY_BODY_MAX at most) */
	bool body_sent;			/* body bytes went upstream and are not kept: no retry */
	size_t resent;			/* the front of req_body the client was credited for
					 * already (a retry's copy of req_sent) */
	bool retry_due;			/* refused before any answer: wp_h2_step retries it */
	bool backing_off;		/* waits for btimer before its retry is due */
	uint8_t retries;		/* retries so far (pol.retries at most) */
	struct wp_retry_policy pol;	/* Istio's default, or its HTTPRoute rule's retry */
	struct loop_timer btimer;	/* the back-off before a retry */
	struct loop_timer ptimer;	/* the try in flight's timeout (pol.per_try_ms) */
	const char *retry_flag;		/* why the last attempt failed (x->error says more) */
	struct span *span;
	char *ep_uid;
	const char *flag;
	char error[160];
	struct wp_route rt;		/* its HTTPRoute backend (retries pick from it) */
	struct waypoint *w;
	struct loop_timer rtimer;	/* its route timeout (an HTTP/2 client's stream; an
					 * HTTP/1.x client's request uses the session's) */
	struct wp_h2s *dprev, *dnext, *uprev, *unext;
};

static void hu_schedule(struct wp_h2u *hu);
static void hu_unref(struct wp_h2u *hu);
static void resp_edit(struct wp_h2s *x);

/* ---------------------------------------------------------- streams ---- */

static void d_unlink(struct wp_h2s *x)
{
	struct wp_h2d *d = x->s ? x->s->h2 : NULL;
	if (!d)
		return;
	if (x->dprev)
		x->dprev->dnext = x->dnext;
	else if (d->streams == x)
		d->streams = x->dnext;
	if (x->dnext)
		x->dnext->dprev = x->dprev;
	x->dprev = x->dnext = NULL;
	d->nstreams--;
}

static void u_unlink(struct wp_h2s *x)
{
	struct wp_h2u *hu = x->hu;
	if (x->uprev)
		x->uprev->unext = x->unext;
	else if (hu->streams == x)
		hu->streams = x->unext;
	if (x->unext)
		x->unext->uprev = x->uprev;
	x->uprev = x->unext = NULL;
	hu->nstreams--;
	if (!hu->nstreams)
		hu->idle_since_ms = loop_now_ms(hu->w->o.loop);
}

/* n bytes of the request body left us: the client may send as many more. */
static void credit_down(struct wp_h2s *x, size_t n)
{
	struct wp_h2d *d = x->s ? x->s->h2 : NULL;
	if (x->h1c) {		/* room in req_body: wp_h2_h1c_step moves more */
		if (x->s && n)
			wp_sess_schedule(x->s);
		return;
	}
	if (!n || !d || !d->ng)
		return;
	if (x->down_open)
		nghttp2_session_consume(d->ng, x->down_sid, n);
	else
		nghttp2_session_consume_connection(d->ng, n);
	if (!d->dying)
		wp_sess_schedule(x->s);
}

/* n bytes of the response body left us: the endpoint may send as many more. */
static void credit_up(struct wp_h2s *x, size_t n)
{
	struct wp_h2u *hu = x->hu;
	if (!n || !hu || !hu->ng)
		return;
	if (x->up_open)
		nghttp2_session_consume(hu->ng, x->up_sid, n);
	else
		nghttp2_session_consume_connection(hu->ng, n);
	hu_schedule(hu);
}

/* More of the request (body, trailers, its end) for the endpoint: its provider goes on. */
static void wake_up(struct wp_h2s *x)
{
	if (x->up_open && x->u1 && x->s)
		wp_sess_schedule(x->s);		/* h1_pump runs in the session's step */
	if (x->up_open && x->hu && x->hu->ng) {
		nghttp2_session_resume_data(x->hu->ng, x->up_sid);
		hu_schedule(x->hu);
	}
}

/* More of the response for the client. */
static void wake_down(struct wp_h2s *x)
{
	if (x->h1c && x->s)
		wp_sess_schedule(x->s);
	if (x->s && x->s->h2) {
		nghttp2_session_resume_data(x->s->h2->ng, x->down_sid);
		wp_sess_schedule(x->s);
	}
}

/* n bytes leave the front of the request body (upstream, or dropped): the client is credited
 * for those it was not credited for before a retry. */
static void req_body_take(struct wp_h2s *x, size_t n)
{
	size_t again = MIN(n, x->resent);
	x->resent -= again;
	h1_buf_consume(&x->req_body, n);
	credit_down(x, n - again);
}

/* An answer came: the body kept for a retry goes. */
static void h2s_drop_sent(struct wp_h2s *x)
{
	h1_buf_fini(&x->req_sent);
	memset(&x->req_sent, 0, sizeof(x->req_sent));
	x->body_sent = true;
}

static void h2s_finish(struct wp_h2s *x, const char *flag, const char *error)
{
	if (x->finished)
		return;
	x->finished = true;
	loop_timer_cancel(x->w->o.loop, &x->rtimer);
	loop_timer_cancel(x->w->o.loop, &x->ptimer);
	loop_timer_cancel(x->w->o.loop, &x->btimer);
	x->backing_off = false;
	if (!x->s) {
		span_end(x->span);
		x->span = NULL;
		free(x->ep_uid);
		x->ep_uid = NULL;
		return;
	}
	struct wp_outcome o = { .code = x->status, .flag = flag ? flag : x->flag,
				.error = error ? error : (x->error[0] ? x->error : NULL),
				.grpc = x->grpc, .grpc_status = x->grpc ? x->grpc_status : -1,
				.dst = x->hu ? &x->hu->dst : x->dst1.workload ? &x->dst1 : NULL,
				.service = x->rt.service };
	wp_request_finish(x->s, &x->span, &x->ep_uid, &o);
}

static void h2s_maybe_free(struct wp_h2s *x)
{
	if (x->down_open || x->up_open || x->s)
		return;
	loop_timer_cancel(x->w->o.loop, &x->rtimer);
	loop_timer_cancel(x->w->o.loop, &x->ptimer);
	loop_timer_cancel(x->w->o.loop, &x->btimer);
	credit_up(x, h1_buf_pending(&x->resp_body));
	if (!x->finished)
		h2s_finish(x, CONN_FLAG_DOWNSTREAM_RESET, "client closed");
	h2map_hdrs_fini(&x->req);
	h2map_hdrs_fini(&x->req_tr);
	h2map_hdrs_fini(&x->resp);
	h2map_hdrs_fini(&x->resp_tr);
	h2map_hdrs_fini(&x->up_hdrs);
	h1_buf_fini(&x->req_body);
	h1_buf_fini(&x->req_sent);
	h1_buf_fini(&x->resp_body);
	h1_buf_fini(&x->h1out);
	conn_peer_fini(&x->dst1);
	wp_route_fini(&x->rt);
	if (x->hu)
		hu_unref(x->hu);
	free(x);
}

static void h1_release(struct wp_h2s *x, bool reusable);
static void unqueue(struct wp_h2s *x);

/* The client side is done with x (its stream closed, or the whole session went away). */
static void h2s_down_gone(struct wp_h2s *x, uint32_t error_code)
{
	struct wp_h2u *hu = x->hu;
	unqueue(x);
	x->down_open = false;
	if (!x->finished) {
		if (error_code == NGHTTP2_NO_ERROR && x->resp_eof)
			h2s_finish(x, NULL, NULL);
		else if (x->flag)
			h2s_finish(x, NULL, NULL);
		else
			h2s_finish(x, CONN_FLAG_DOWNSTREAM_RESET, error_code ?
				   "client reset the stream" : "client closed");
	}
	if (x->u1)
		h1_release(x, false);	/* cut inside the exchange: the connection is reset */
	if (x->up_open && hu && hu->ng) {
		/* RST_STREAM from the client cancels the upstream stream (RFC 9113 §8.1) */
		nghttp2_submit_rst_stream(hu->ng, NGHTTP2_FLAG_NONE, x->up_sid, NGHTTP2_CANCEL);
		hu_schedule(hu);
	}
	req_body_take(x, h1_buf_pending(&x->req_body));
	d_unlink(x);
	x->s = NULL;
	h2s_maybe_free(x);
}

static ssize_t resp_read(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *ud);
static int copy_fields(const struct h2map_hdrs *in, const char *tpbuf, const struct hr_hmod *mods,
		       const struct wp_route *rt, struct h2map_hdrs *out);

/* Answers the client's stream ourselves: code with a text body, or gRPC's trailers-only answer
 * with grpc_status when the request is a gRPC call, or the redirect of x->rt; with the matched
 * rule's ResponseHeaderModifier (Envoy applies a route's response headers to its local replies
 * too). The request ends here. */
static void h2s_local(struct wp_h2s *x, int code, int grpc_status, const char *msg,
		      const char *flag, const char *why)
{
	struct wp_h2d *d = x->s->h2;
	struct h2map_hdrs h;
	char cbuf[16], lbuf[24];
	int err = 0;

	x->local = true;
	x->s->w->local_replies++;
	h2map_hdrs_init(&h);
	if (x->rt.location) {	/* a route's RequestRedirect: no body, gRPC or not */
		snprintf(cbuf, sizeof(cbuf), "%d", code);
		x->status = code;
		err = h2map_hdrs_add(&h, ":status", 7, cbuf, strlen(cbuf)) ||
		      h2map_hdrs_add(&h, "location", 8, x->rt.location, strlen(x->rt.location)) ||
		      h2map_hdrs_add(&h, "content-length", 14, "0", 1);
		h1_buf_consume(&x->resp_body, h1_buf_pending(&x->resp_body));
		x->resp_eof = true;
	} else if (x->grpc) {
		snprintf(cbuf, sizeof(cbuf), "%d", grpc_status);
		x->status = 200;
		x->grpc_status = grpc_status;
		err = h2map_hdrs_add(&h, ":status", 7, "200", 3) ||
		      h2map_hdrs_add(&h, "content-type", 12, "application/grpc", 16) ||
		      h2map_hdrs_add(&h, "grpc-status", 11, cbuf, strlen(cbuf)) ||
		      h2map_hdrs_add(&h, "grpc-message", 12, msg, strlen(msg));
		x->resp_eof = true;
	} else {
		snprintf(cbuf, sizeof(cbuf), "%d", code);
		snprintf(lbuf, sizeof(lbuf), "%zu", strlen(msg));
		x->status = code;
		err = h2map_hdrs_add(&h, ":status", 7, cbuf, strlen(cbuf)) ||
		      h2map_hdrs_add(&h, "content-type", 12, "text/plain", 10) ||
		      h2map_hdrs_add(&h, "content-length", 14, lbuf, strlen(lbuf));
		h1_buf_consume(&x->resp_body, h1_buf_pending(&x->resp_body));
		if (!err && !x->head_req)
			err = h1_buf_append(&x->resp_body, msg, strlen(msg));
		x->resp_eof = true;
	}
	err = err || h2map_hdrs_add(&h, "server", 6, "ambit-waypoint", 14);
	const struct hr_hmod *mod = wp_route_resp_mod(x->rt.rule);
	if (!err && mod) {	/* the matched rule's ResponseHeaderModifier, as on its answers */
		struct h2map_hdrs tmp;
		h2map_hdrs_init(&tmp);
		err = copy_fields(&h, "", mod, NULL, &tmp);
		h2map_hdrs_fini(&h);
		h = tmp;
	}
	if (!err) {
		nghttp2_data_provider dp = { .source.ptr = x, .read_callback = resp_read };
		bool body = h1_buf_pending(&x->resp_body) > 0;
		err = nghttp2_submit_response(d->ng, x->down_sid, h.nv, h.n, body ? &dp : NULL);
	}
	if (err)
		nghttp2_submit_rst_stream(d->ng, NGHTTP2_FLAG_NONE, x->down_sid, NGHTTP2_INTERNAL_ERROR);
	x->resp_submitted = true;
	h2map_hdrs_fini(&h);
	h2s_finish(x, flag, why);
	req_body_take(x, h1_buf_pending(&x->req_body));
	wp_sess_schedule(x->s);
}

/* The upstream stream failed (reset, refused, its connection lost). Before any response the
 * client gets 503 (gRPC: UNAVAILABLE), after it a reset stream. */
static void h2s_up_failed(struct wp_h2s *x, uint32_t error_code, const char *flag, const char *why)
{
	struct wp_h2d *d = x->s ? x->s->h2 : NULL;
	if (x->h1c && x->s && x->down_open && !x->finished) {
		snprintf(x->error, sizeof(x->error), "%s", why);
		x->flag = flag;
		x->failed = true;	/* wp_h2_h1c_step answers */
		wp_sess_schedule(x->s);
		return;
	}
	if (!x->down_open || !d || x->finished)
		return;
	pr_debug("waypoint: h2 stream %d for %s: %s", x->down_sid,
		 x->s->service ? x->s->service : "?", why);
	snprintf(x->error, sizeof(x->error), "%s", why);
	x->flag = flag;
	if (!x->resp_submitted) {
		h2s_local(x, 503, 14, why, flag, why);
		return;
	}
	if (!x->status)
		x->status = 502;
	nghttp2_submit_rst_stream(d->ng, NGHTTP2_FLAG_NONE, x->down_sid, wp_h2_client_reset_code(error_code));
	wp_sess_schedule(x->s);
}

/* RST_STREAM(NO_ERROR) instead of END_STREAM after a body of its announced length: the answer
 * is complete (some servers, node's http2 among them, end a flow-controlled stream so). */
static bool resp_complete_by_length(const struct wp_h2s *x)
{
	size_t len;
	const char *cl = x->resp_final ? h2map_hdrs_get(&x->resp, "content-length", &len) : NULL;
	char *end;
	if (!cl || !len)
		return false;
	unsigned long long n = strtoull(cl, &end, 10);
	return end == cl + len && n == x->resp_bytes;
}

/* What x's attempt has seen, for Istio's default retry policy (h2rules.c): an HTTP/2 client's
 * stream, or an HTTP/1.x client's request to an http2/grpc port (s->h2x). */
static struct wp_h2_attempt h2s_attempt(const struct wp_h2s *x)
{
	bool alive = x->s && (x->h1c ? x->s->h2x == x : x->s->h2 && !x->s->h2->dying);
	return (struct wp_h2_attempt){
		.client_waits = alive && x->down_open && !x->finished,
		.answered = x->resp_submitted || x->resp_final,
		.body_gone = x->body_sent,	/* all the body that left is still in req_sent */
		.retries = x->retries,
	};
}

/* The endpoint refused the stream or could not be reached: x goes again. */
static bool h2s_retriable(const struct wp_h2s *x, uint32_t error_code, const char *flag)
{
	struct wp_h2_attempt a = h2s_attempt(x);
	return wp_h2_retry_on_failure(&a, &x->pol, error_code,
				      flag && strcmp(flag, CONN_FLAG_UPSTREAM_CONNECT_FAILURE) == 0);
}

static void h2s_backoff_fire(struct loop *l, struct loop_timer *t)
{
	struct wp_h2s *x = t->arg;
	(void)l;
	x->backing_off = false;
	if (!x->s || x->finished)
		return;
	x->retry_due = true;
	wp_sess_schedule(x->s);
}

/* x goes again after its policy's back-off (Envoy's jittered exponential one): at once when
 * it draws 0, else when btimer fires; the try's timeout stops meanwhile. */
static void h2s_retry_later(struct wp_h2s *x)
{
	uint64_t ms = wp_retry_backoff_ms(&x->pol, x->retries + 1u, (uint32_t)random());
	loop_timer_cancel(x->w->o.loop, &x->ptimer);
	if (ms && loop_timer_arm(x->w->o.loop, &x->btimer, ms) == 0) {
		x->backing_off = true;
		return;
	}
	x->retry_due = true;
	wp_sess_schedule(x->s);
}

/* The upstream side is done with x. */
static void h2s_up_gone(struct wp_h2s *x, uint32_t error_code, const char *flag, const char *why)
{
	x->up_open = false;
	u_unlink(x);
	if (!x->resp_eof) {
		char msg[160];
		snprintf(msg, sizeof(msg), "%s%s%s", why,
			 error_code ? ": " : "", error_code ? nghttp2_http2_strerror(error_code) : "");
		if (h2s_retriable(x, error_code, flag)) {
			/* not from inside the endpoint's nghttp2 callbacks: the session's step */
			snprintf(x->error, sizeof(x->error), "%s", msg);
			x->retry_flag = flag;
			h2s_retry_later(x);
			return;
		}
		h2s_up_failed(x, error_code, flag, msg);
	}
	h2s_maybe_free(x);
}

/* ---------------------------------------------------------- data providers ---- */

/* The response body towards the client, then its trailers (RFC 9113 §8.1). */
static ssize_t resp_read(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct wp_h2s *x = src->ptr;
	size_t n = MIN(len, h1_buf_pending(&x->resp_body));
	(void)ud;
	if (n) {
		memcpy(buf, h1_buf_head(&x->resp_body), n);
		h1_buf_consume(&x->resp_body, n);
		if (!x->local)
			credit_up(x, n);
	}
	if (!h1_buf_pending(&x->resp_body) && x->resp_eof) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (x->resp_tr.n && nghttp2_submit_trailer(ng, sid, x->resp_tr.nv, x->resp_tr.n) == 0)
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		return (ssize_t)n;
	}
	return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
}

/* n request body bytes went upstream: kept for a retry while within H2_RETRY_BODY_MAX and
 * before any answer, else the request is no longer retriable. */
static void h2s_keep_sent(struct wp_h2s *x, const uint8_t *p, size_t n)
{
	if (x->body_sent)
		return;
	if (x->resp_final || x->retries >= x->pol.retries ||
	    h1_buf_pending(&x->req_sent) + n > H2_RETRY_BODY_MAX || h1_buf_append(&x->req_sent, p, n)) {
		h2s_drop_sent(x);
	}
}

/* The request body towards the endpoint, then the client's trailers. */
static ssize_t req_read(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t len,
			uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct wp_h2s *x = src->ptr;
	size_t n = MIN(len, h1_buf_pending(&x->req_body));
	(void)ud;
	if (!x->up_open || !x->hu || x->hu->ng != ng || x->up_sid != sid)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;	/* an attempt given up (retried) */
	if (n) {
		memcpy(buf, h1_buf_head(&x->req_body), n);
		req_body_take(x, n);
		h2s_keep_sent(x, buf, n);
	}
	if (!h1_buf_pending(&x->req_body) && x->req_eof) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (x->req_tr.n && nghttp2_submit_trailer(ng, sid, x->req_tr.nv, x->req_tr.n) == 0)
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		return (ssize_t)n;
	}
	if (!x->down_open && !n) {
		/* the client went away mid-body: the stream is being reset */
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
}

/* ---------------------------------------------------------- upstream connections ---- */

static void hu_unref(struct wp_h2u *hu)
{
	if (--hu->refs > 0)
		return;
	h1_buf_fini(&hu->out);
	conn_peer_fini(&hu->dst);
	free(hu);
}

static void hu_task(struct loop *l, void *arg);

static void hu_schedule(struct wp_h2u *hu)
{
	if (hu->scheduled || !hu->ng)
		return;
	hu->refs++;
	if (loop_defer(hu->w->o.loop, hu_task, hu)) {
		hu->refs--;
		return;
	}
	hu->scheduled = true;
}

void wp_h2_up_kick(struct wp_h2u *hu)
{
	hu_schedule(hu);
}

/* One of key's connections closed: the oldest HTTP/2 client request waiting for room on them
 * goes on a new one (h2s_requeue, from its session's step); that connection then takes the
 * others waiting (hu_dequeue). */
static void h2q_wake(struct waypoint *w, const char *key)
{
	for (struct wp_h2s *x = w->h2q; x; x = x->qnext) {
		if (x->h1c || !x->s || strcmp(x->qkey, key) != 0)
			continue;
		unqueue(x);
		x->requeue_due = true;
		wp_sess_schedule(x->s);
		return;
	}
}

/* Ends the connection: its streams fail (why), the session goes, the conn is closed
 * (gracefully when ok) and the pool lets go of it. */
static void hu_close(struct wp_h2u *hu, bool ok, const char *flag, const char *why)
{
	struct waypoint *w = hu->w;
	if (!hu->ng)
		return;
	hu->refs++;
	while (hu->streams) {
		struct wp_h2s *x = hu->streams;
		nghttp2_session_set_stream_user_data(hu->ng, x->up_sid, NULL);
		h2s_up_gone(x, 0, flag, why);
	}
	nghttp2_session_del(hu->ng);
	hu->ng = NULL;
	if (hu->u) {
		struct wp_up *u = hu->u;
		hu->u = NULL;
		u->h2 = NULL;
		wp_up_put(u, false, ok);
	}
	if (hu->prev)
		hu->prev->next = hu->next;
	else
		w->h2ups = hu->next;
	if (hu->next)
		hu->next->prev = hu->prev;
	hu->prev = hu->next = NULL;
	w->nh2ups--;
	if (!w->draining)
		h2q_wake(w, hu->key);
	hu->refs--;	/* the pool's (never the last: ours) */
	hu_unref(hu);	/* ours */
}

static unsigned hu_dequeue(struct wp_h2u *hu);

static void hu_step(struct wp_h2u *hu)
{
	struct waypoint *w = hu->w;
	struct wp_up *u = hu->u;
	const uint8_t *p;
	size_t n;
	char why[160];

	if (!hu->ng || !u)
		return;
	if (!u->conn) {
		snprintf(why, sizeof(why), "upstream %s: %s", hu->got_bytes ? "reset" : "connect failed",
			 u->err ? strerror(-u->err) : "closed");
		hu_close(hu, false, hu->got_bytes ? CONN_FLAG_UPSTREAM_RESET
						  : CONN_FLAG_UPSTREAM_CONNECT_FAILURE, why);
		return;
	}
	while (hu->ng && u->conn && h1_buf_pending(&hu->out) < WP_STAGE_MAX &&
	       (n = conn_out_peek(u->conn, CONN_DOWN, &p)) > 0) {
		ssize_t rv = nghttp2_session_mem_recv(hu->ng, p, n);
		if (rv < 0) {
			snprintf(why, sizeof(why), "upstream HTTP/2 error: %s", nghttp2_strerror((int)rv));
			hu_close(hu, false, CONN_FLAG_UPSTREAM_RESET, why);
			return;
		}
		hu->got_bytes = true;
		if (u->conn)
			conn_out_consume(u->conn, CONN_DOWN, (size_t)rv);
	}
	if (u->conn && !conn_out_pending(u->conn, CONN_DOWN) && conn_out_eof(u->conn, CONN_DOWN)) {
		hu_close(hu, !hu->nstreams, CONN_FLAG_UPSTREAM_RESET, "upstream closed the connection");
		return;
	}
	for (;;) {
		while (u->conn && h1_buf_pending(&hu->out)) {
			size_t k = conn_in_write(u->conn, CONN_DOWN, h1_buf_head(&hu->out),
						 h1_buf_pending(&hu->out));
			if (!k)
				break;
			h1_buf_consume(&hu->out, k);
		}
		if (!u->conn || h1_buf_pending(&hu->out) >= WP_STAGE_MAX / 2)
			break;
		const uint8_t *data;
		ssize_t k = nghttp2_session_mem_send(hu->ng, &data);
		if (k < 0) {
			snprintf(why, sizeof(why), "upstream HTTP/2 error: %s", nghttp2_strerror((int)k));
			hu_close(hu, false, CONN_FLAG_UPSTREAM_RESET, why);
			return;
		}
		if (k == 0)
			break;
		if (h1_buf_append(&hu->out, data, (size_t)k)) {
			hu_close(hu, false, CONN_FLAG_OVERFLOW, "out of memory");
			return;
		}
	}
	if (!u->conn) {
		hu_schedule(hu);
		return;
	}
	if (!hu->nstreams && !h1_buf_pending(&hu->out) &&
	    (hu->goaway || (!nghttp2_session_want_read(hu->ng) && !nghttp2_session_want_write(hu->ng)))) {
		hu_close(hu, true, NULL, "closed");
		return;
	}
	if (w->h2q && hu_dequeue(hu))
		hu_schedule(hu);	/* their frames */
}

static void hu_task(struct loop *l, void *arg)
{
	struct wp_h2u *hu = arg;
	(void)l;
	hu->scheduled = false;
	hu_step(hu);
	hu_unref(hu);
}

/* ---- upstream nghttp2 callbacks (a client session) ---- */

static int up_on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct wp_h2s *x = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
	(void)ud;
	if (x && !x->resp_final) {
		h2map_hdrs_fini(&x->resp);	/* a 1xx answer before: the final one replaces it */
		h2map_hdrs_init(&x->resp);
	}
	return 0;
}

/* Both sessions: a field of the request (server side) or of the response (client side), or
 * of the trailers that follow either. */
static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
	struct wp_h2s *x = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
	(void)flags;
	(void)ud;
	if (!x || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	struct h2map_hdrs *h = nghttp2_session_check_server_session(ng) ?
		(x->head_done ? &x->req_tr : &x->req) : (x->resp_final ? &x->resp_tr : &x->resp);
	if (h2map_hdrs_add(h, (const char *)name, namelen, (const char *)value, valuelen))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;	/* too large: the stream is reset */
	return 0;
}

static int grpc_status_of(const struct h2map_hdrs *h)
{
	size_t len;
	const char *v = h2map_hdrs_get(h, "grpc-status", &len);
	return v ? h2map_grpc_status(v, len) : -1;
}

/* The endpoint's final response head: on to the client. */
static void forward_response(struct wp_h2s *x)
{
	struct wp_h2d *d = x->s->h2;
	nghttp2_data_provider dp = { .source.ptr = x, .read_callback = resp_read };
	int rv = nghttp2_submit_response(d->ng, x->down_sid, x->resp.nv, x->resp.n,
					 x->resp_eof && !h1_buf_pending(&x->resp_body) ? NULL : &dp);
	if (rv) {
		snprintf(x->error, sizeof(x->error), "cannot forward the response: %s", nghttp2_strerror(rv));
		nghttp2_submit_rst_stream(d->ng, NGHTTP2_FLAG_NONE, x->down_sid, NGHTTP2_INTERNAL_ERROR);
	}
	x->resp_submitted = true;
	wp_sess_schedule(x->s);
}

/* An interim (1xx) answer of x's endpoint (those wp_h2_interim_forwarded passes: as Envoy with
 * proxy_100_continue, Istio's default ENABLE_100_CONTINUE_HEADERS), as HTTP/2 fields h2 (an HTTP/2 endpoint) or an
 * HTTP/1.x head h1: on to the client before the final answer (RFC 9110 §15.2: a proxy
 * forwards them), as a HEADERS frame without END_STREAM to an HTTP/2 client, as an HTTP/1.1
 * interim head to an HTTP/1.1 client (never to HTTP/1.0, which does not know them). Once one
 * went, the request is not retried (the client saw an answer begin). */
static void h2s_interim(struct wp_h2s *x, int code, const struct h2map_hdrs *h2, const struct h1 *h1)
{
	struct wp_sess *s = x->s;
	struct h2map_hdrs tmp;
	int err = 0;

	if (!s || !x->down_open || x->finished || !wp_h2_interim_forwarded(code, x->interim))
		return;
	h2map_hdrs_init(&tmp);
	if (h1) {
		err = h2map_response_from_h1(h1, &tmp);
		h2 = &tmp;
	}
	if (!err && x->h1c) {
		bool chunked;
		if (x->resp_head_sent || s->req.p.http_major != 1 || s->req.p.http_minor < 1)
			goto out;
		err = h2map_response_to_h1(h2, false, false, &s->to_down, &chunked);
	} else if (!err && s->h2 && !x->resp_submitted) {
		err = nghttp2_submit_headers(s->h2->ng, NGHTTP2_FLAG_NONE, x->down_sid, NULL, h2->nv,
					     h2->n, NULL);
	} else {
		goto out;
	}
	if (err) {
		pr_debug("waypoint: a %d answer not forwarded: %s", code,
			 err <= -500 ? nghttp2_strerror(err) : strerror(-err));
		goto out;
	}
	x->interim++;
	h2s_drop_sent(x);	/* no retry after this */
	wp_sess_schedule(s);
out:
	h2map_hdrs_fini(&tmp);
}

/* Istio's default retry policy on an answer's head: retriable-status-codes (503), and for
 * gRPC `unavailable` and `cancelled` (grpc-status 14 or 1 in a trailers-only answer), while
 * the request is retriable (h2s_retriable's terms). */
static bool h2s_answer_retriable(const struct wp_h2s *x, int status, bool end)
{
	struct wp_h2_attempt a = h2s_attempt(x);
	return wp_h2_retry_on_answer(&a, &x->pol, status, x->grpc && end ? grpc_status_of(&x->resp) : -1);
}

/* The answer on x's upstream stream sid goes unseen: the stream is cancelled and x goes again
 * (wp_h2_step). */
static void h2s_retry_answer(struct wp_h2s *x, nghttp2_session *ng, int32_t sid, int status, bool end)
{
	int gs = x->grpc && end ? grpc_status_of(&x->resp) : -1;
	if (gs >= 0)
		snprintf(x->error, sizeof(x->error), "upstream answered grpc-status %d", gs);
	else
		snprintf(x->error, sizeof(x->error), "upstream answered %d", status);
	x->retry_flag = NULL;
	h2map_hdrs_fini(&x->resp);
	h2map_hdrs_init(&x->resp);
	nghttp2_session_set_stream_user_data(ng, sid, NULL);
	if (!end || !nghttp2_session_get_stream_local_close(ng, sid))
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
	x->up_open = false;
	u_unlink(x);
	h2s_retry_later(x);
}

static int up_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct wp_h2u *hu = ud;
	struct wp_h2s *x;

	if (f->hd.type == NGHTTP2_GOAWAY) {
		/* no new streams here; nghttp2 closes those past last_stream_id (REFUSED_STREAM) */
		hu->goaway = true;
		return 0;
	}
	x = f->hd.stream_id ? nghttp2_session_get_stream_user_data(ng, f->hd.stream_id) : NULL;
	if (!x)
		return 0;
	bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
	if (f->hd.type == NGHTTP2_HEADERS) {
		if (!x->resp_final) {
			size_t len;
			const char *st = h2map_hdrs_get(&x->resp, ":status", &len);
			int code = 0;
			for (size_t i = 0; st && i < len && i < 3; i++)
				code = code * 10 + (st[i] - '0');
			if (st && len == 3 && st[0] == '1') {
				h2s_interim(x, code, &x->resp, NULL);	/* the final one follows */
				return 0;
			}
			if (h2s_answer_retriable(x, code, end)) {
				h2s_retry_answer(x, ng, f->hd.stream_id, code, end);
				return 0;
			}
			x->resp_final = true;
			resp_edit(x);
			h2s_drop_sent(x);
			x->resp_eof = end;
			x->status = code;
			if (x->grpc)
				x->grpc_status = grpc_status_of(&x->resp);	/* trailers-only */
			if (x->s && x->down_open && x->h1c)
				wp_sess_schedule(x->s);		/* wp_h2_h1c_step translates it */
			else if (x->s && x->down_open)
				forward_response(x);
		} else {
			/* trailers (RFC 9113 §8.1): sent after the body, by resp_read */
			x->resp_eof = true;
			if (x->grpc && x->grpc_status < 0)
				x->grpc_status = grpc_status_of(&x->resp_tr);
			wake_down(x);
		}
	} else if (f->hd.type == NGHTTP2_DATA && end) {
		x->resp_eof = true;
		wake_down(x);
	}
	return 0;
}

static int up_on_data(nghttp2_session *ng, uint8_t flags, int32_t sid, const uint8_t *data,
		      size_t len, void *ud)
{
	struct wp_h2s *x = nghttp2_session_get_stream_user_data(ng, sid);
	(void)flags;
	(void)ud;
	if (!x || !x->s || !x->down_open || (!x->h1c && !x->s->h2)) {
		nghttp2_session_consume(ng, sid, len);	/* nobody to hand it to */
		return 0;
	}
	if (h1_buf_append(&x->resp_body, data, len))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	x->resp_bytes += len;
	wake_down(x);
	return 0;
}

static int up_on_stream_close(nghttp2_session *ng, int32_t sid, uint32_t error_code, void *ud)
{
	struct wp_h2s *x = nghttp2_session_get_stream_user_data(ng, sid);
	(void)ud;
	if (!x)
		return 0;
	if (!x->resp_eof && error_code == NGHTTP2_NO_ERROR && resp_complete_by_length(x)) {
		x->resp_eof = true;
		wake_down(x);
	}
	h2s_up_gone(x, error_code, CONN_FLAG_UPSTREAM_RESET,
		    error_code == NGHTTP2_REFUSED_STREAM ? "upstream refused the stream"
							 : "upstream reset the stream");
	return 0;
}

/* A new HTTP/2 connection to dst at target (HBONE or plain TCP, as wp_up_get dials). */
static struct wp_h2u *hu_new(struct wp_sess *s, const struct model *m, const struct model_workload *dst,
			     const struct sockaddr_storage *target, const char *key,
			     const char *traceparent, const char **why)
{
	struct waypoint *w = s->w;
	struct wp_h2u *hu = calloc(1, sizeof(*hu));
	nghttp2_session_callbacks *cb = NULL;
	nghttp2_option *opt = NULL;
	uint32_t win = MAX(w->o.buffer_size, 16384u);
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, win },
	};

	*why = "out of memory";
	if (!hu || nghttp2_session_callbacks_new(&cb) || nghttp2_option_new(&opt))
		goto fail;
	hu->w = w;
	hu->refs = 1;	/* the pool's */
	snprintf(hu->key, sizeof(hu->key), "%s", key);
	if (proxy_peer_fill(&hu->dst, dst, w->trust_domain))
		goto fail;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, up_on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, up_on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, up_on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, up_on_stream_close);
	/* windows open only as the client takes the bytes (credit_up) */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	if (nghttp2_session_client_new2(&hu->ng, cb, hu, opt))
		goto fail;
	if (nghttp2_submit_settings(hu->ng, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv)) ||
	    nghttp2_session_set_local_window_size(hu->ng, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW))
		goto fail;
	hu->u = wp_up_get(s, m, dst, target, traceparent, false, why);
	if (!hu->u)
		goto fail;
	hu->u->sess = NULL;
	hu->u->h2 = hu;
	hu->idle_since_ms = loop_now_ms(w->o.loop);
	hu->next = w->h2ups;
	if (w->h2ups)
		w->h2ups->prev = hu;
	w->h2ups = hu;
	w->nh2ups++;
	w->h2ups_opened++;
	nghttp2_session_callbacks_del(cb);
	nghttp2_option_del(opt);
	hu_schedule(hu);
	return hu;
fail:
	nghttp2_session_callbacks_del(cb);
	nghttp2_option_del(opt);
	if (hu) {
		nghttp2_session_del(hu->ng);
		conn_peer_fini(&hu->dst);
	}
	free(hu);
	return NULL;
}

static bool hu_usable(const struct wp_h2u *hu)
{
	return hu->ng && hu->u && hu->u->conn && !hu->goaway;
}

/* Room for one more stream: below our bound and the endpoint's own limit. */
static bool hu_room(struct wp_h2u *hu, uint32_t bound)
{
	uint32_t peer = nghttp2_session_get_remote_settings(hu->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
	return wp_h2_stream_room(hu->nstreams, bound, peer);
}

/* A connection to dst with room for one more stream: a pooled one, else a new one within
 * http2.max_connections_per_endpoint. NULL with *why and *flag set. Borrowed (the pool's). */
static struct wp_h2u *hu_get(struct wp_sess *s, const struct model *m, const struct model_workload *dst,
			     const struct sockaddr_storage *target, const char *traceparent,
			     const char **why, const char **flag, char key[], bool *full)
{
	struct waypoint *w = s->w;
	unsigned conns = 0;

	*full = false;
	uint32_t bound = w->o.max_streams ? w->o.max_streams : H2_UP_STREAMS;

	*flag = CONN_FLAG_UPSTREAM_CONNECT_FAILURE;
	if (wp_up_key(w, dst, target, key, sizeof(((struct wp_h2u *)0)->key))) {
		*why = "the endpoint has no valid identity";
		return NULL;
	}
	for (struct wp_h2u *hu = w->h2ups; hu; hu = hu->next) {
		if (strcmp(hu->key, key) != 0 || !hu_usable(hu))
			continue;
		conns++;
		if (hu_room(hu, bound))
			return hu;
	}
	if (conns >= (w->o.h2_conns_per_endpoint ? w->o.h2_conns_per_endpoint : H2_CONNS_PER_EP)) {
		*why = "the endpoint's HTTP/2 connections are full";
		*flag = CONN_FLAG_OVERFLOW;
		*full = true;
		return NULL;
	}
	return hu_new(s, m, dst, target, key, traceparent, why);
}

void wp_h2_sweep(struct waypoint *w, uint64_t now, bool all)
{
	struct wp_h2u *hu = w->h2ups, *next;
	for (; hu; hu = next) {
		next = hu->next;
		if (all) {
			hu_close(hu, false, CONN_FLAG_DOWNSTREAM_RESET, "waypoint shutting down");
			continue;
		}
		if (!hu->nstreams && now - hu->idle_since_ms >= WP_IDLE_MS)
			hu_close(hu, true, NULL, "idle");
	}
}

/* The route timeout of an HTTP/2 client's stream expired (Envoy: 504, UT): its upstream
 * stream is cancelled (RST_STREAM CANCEL; an HTTP/1.1 upstream connection reset) and let go,
 * so a late answer finds nothing; the client gets 504 (gRPC: UNAVAILABLE, as Envoy maps it)
 * or, when the answer began, a reset stream. */
static void h2s_timeout_fire(struct loop *l, struct loop_timer *t)
{
	struct wp_h2s *x = t->arg;
	struct wp_sess *s = x->s;
	struct wp_h2u *hu = x->hu;
	(void)l;
	/* the endpoint's answer complete (only the client is slow to take it): not a timeout */
	if (!s || !s->h2 || !x->down_open || x->finished || x->h1c || x->resp_eof)
		return;
	pr_debug("waypoint: h2 stream %d for %s: %s after %" PRIu64 " ms", x->down_sid,
		 s->service ? s->service : "?", WP_TIMEOUT_WHY, x->rt.timeout_ms);
	unqueue(x);
	x->retry_due = false;
	x->backing_off = false;
	loop_timer_cancel(x->w->o.loop, &x->btimer);
	if (x->u1)
		h1_release(x, false);
	if (x->up_open && hu && hu->ng) {
		nghttp2_session_set_stream_user_data(hu->ng, x->up_sid, NULL);
		nghttp2_submit_rst_stream(hu->ng, NGHTTP2_FLAG_NONE, x->up_sid, NGHTTP2_CANCEL);
		x->up_open = false;
		u_unlink(x);
		hu_schedule(hu);
	}
	x->flag = WP_FLAG_TIMEOUT;
	snprintf(x->error, sizeof(x->error), "%s", WP_TIMEOUT_WHY);
	if (!x->resp_submitted) {
		h2s_local(x, 504, 14, WP_TIMEOUT_WHY, WP_FLAG_TIMEOUT, WP_TIMEOUT_WHY);
		return;
	}
	h2s_finish(x, WP_FLAG_TIMEOUT, WP_TIMEOUT_WHY);
	nghttp2_submit_rst_stream(s->h2->ng, NGHTTP2_FLAG_NONE, x->down_sid, NGHTTP2_CANCEL);
	wp_sess_schedule(s);
}

/* The try in flight of x took longer than its rule's backendRequest (Envoy's per-try timeout,
 * which Istio's retry triggers do not retry): as the route timeout, 504 (UT). */
static void h2s_try_timeout_fire(struct loop *l, struct loop_timer *t)
{
	struct wp_h2s *x = t->arg;
	struct wp_sess *s = x->s;
	if (!x->h1c) {
		h2s_timeout_fire(l, t);
	} else if (s && s->h2x == x && !x->finished && s->st == SS_RESPONSE) {
		wp_h2_h1c_timeout(s);	/* may free x */
		wp_sess_schedule(s);
	}
}

/* A try of x is under way (its stream submitted or waiting for room) and the client's request
 * is complete: its per-try timeout starts anew (Envoy's starts with each upstream request once
 * the downstream one is complete). */
static void h2s_try_deadline(struct wp_h2s *x)
{
	if (!x->pol.per_try_ms || !x->req_eof || x->finished || !(x->up_open || x->queued || x->u1))
		return;
	loop_timer_cancel(x->w->o.loop, &x->ptimer);
	wp_route_deadline(x->w, &x->ptimer, x->pol.per_try_ms);
}

/* x's request is complete: its route timeout starts (an HTTP/2 client's stream), and the
 * try's. */
static void h2s_deadline(struct wp_h2s *x)
{
	if (!x->h1c && x->req_eof && x->head_done && !x->finished && x->down_open)
		wp_route_deadline(x->w, &x->rtimer, x->rt.timeout_ms);
	h2s_try_deadline(x);
}

static struct wp_h2s *h2s_new(struct wp_sess *s)
{
	struct wp_h2s *x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	x->s = s;
	x->w = s->w;
	x->down_open = true;
	x->grpc_status = -1;
	loop_timer_init(&x->rtimer, h2s_timeout_fire, x);
	loop_timer_init(&x->ptimer, h2s_try_timeout_fire, x);
	loop_timer_init(&x->btimer, h2s_backoff_fire, x);
	wp_retry_policy_of(NULL, &x->pol);
	h2map_hdrs_init(&x->req);
	h2map_hdrs_init(&x->req_tr);
	h2map_hdrs_init(&x->resp);
	h2map_hdrs_init(&x->resp_tr);
	return x;
}

/* Appends the fields of in to out, the traceparent replaced by tpbuf when there is one, a
 * header modifier's edits made (mods NULL: none), a route's URL rewrite made (rt NULL or
 * without one: none; :path and :authority / host replaced in place). */
static int copy_fields(const struct h2map_hdrs *in, const char *tpbuf, const struct hr_hmod *mods,
		       const struct wp_route *rt, struct h2map_hdrs *out)
{
	const char *target = rt ? rt->rw_target : NULL, *host = rt ? rt->rw_host : NULL;
	int err = 0;
	for (size_t i = 0; i < in->n && !err; i++) {
		const nghttp2_nv *f = &in->nv[i];
		if (tpbuf[0] && f->namelen == 11 && memcmp(f->name, "traceparent", 11) == 0)
			continue;
		const char *sub = target && f->namelen == 5 && memcmp(f->name, ":path", 5) == 0 ? target :
				  host && ((f->namelen == 10 && memcmp(f->name, ":authority", 10) == 0) ||
					   (f->namelen == 4 && memcmp(f->name, "host", 4) == 0)) ? host : NULL;
		if (sub) {
			err = h2map_hdrs_add(out, (const char *)f->name, f->namelen, sub, strlen(sub));
			continue;
		}
		if (wp_route_drops(mods, (const char *)f->name, f->namelen))
			continue;	/* the route's header modifier sets or removes it */
		err = h2map_hdrs_add(out, (const char *)f->name, f->namelen,
				     (const char *)f->value, f->valuelen);
	}
	if (!err)
		err = wp_route_add_fields(mods, out);
	if (!err && tpbuf[0])
		err = h2map_hdrs_add(out, "traceparent", 11, tpbuf, strlen(tpbuf));
	return err;
}

/* x's final answer gets its route's ResponseHeaderModifier (Envoy's response_headers_to_add),
 * whatever protocol it came in and goes out in. When the edited head would not fit the
 * bounds (or memory runs out) the answer goes unedited, with a warning. */
static void resp_edit(struct wp_h2s *x)
{
	const struct hr_hmod *mod = wp_route_resp_mod(x->rt.rule);
	struct h2map_hdrs tmp;
	int err;

	if (!mod)
		return;
	h2map_hdrs_init(&tmp);
	err = copy_fields(&x->resp, "", mod, NULL, &tmp);
	if (err) {
		pr_warn_rl("waypoint: route %s: the ResponseHeaderModifier cannot be applied (%s); "
			   "the answer goes unedited", x->rt.route ? x->rt.route : "?", strerror(-err));
		h2map_hdrs_fini(&tmp);
		return;
	}
	h2map_hdrs_fini(&x->resp);
	x->resp = tmp;
}

static void hu_attach(struct wp_h2s *x, struct wp_h2u *hu, int32_t sid)
{
	x->up_sid = sid;
	x->up_open = true;
	hu->requests++;
	x->unext = hu->streams;
	if (hu->streams)
		hu->streams->uprev = x;
	hu->streams = x;
	hu->nstreams++;
	hu_schedule(hu);
}

/* Opens x's upstream stream on hu (its request: up_hdrs, or the translated head of an HTTP/1.x
 * client). 0, or an nghttp2 error (x untouched but for its reference on hu). */
static int h2s_submit(struct wp_h2s *x, struct wp_h2u *hu)
{
	const struct h2map_hdrs *h = x->h1c ? &x->req : &x->up_hdrs;
	nghttp2_data_provider dp = { .source.ptr = x, .read_callback = req_read };
	x->hu = hu;
	hu->refs++;
	int32_t sid = nghttp2_submit_request(hu->ng, NULL, h->nv, h->n,
					     x->req_eof && !x->req_tr.n && !x->h1c &&
					     !h1_buf_pending(&x->req_body) ? NULL : &dp, x);
	if (sid < 0)
		return sid;
	hu_attach(x, hu, sid);
	return 0;
}

static void unqueue(struct wp_h2s *x)
{
	struct waypoint *w;
	if (!x->queued)
		return;
	w = x->s->w;
	loop_timer_cancel(w->o.loop, &x->qtimer);
	if (x->qprev)
		x->qprev->qnext = x->qnext;
	else
		w->h2q = x->qnext;
	if (x->qnext)
		x->qnext->qprev = x->qprev;
	x->qprev = x->qnext = NULL;
	x->queued = false;
	w->nh2q--;
}

static void queue_expired(struct loop *l, struct loop_timer *t)
{
	struct wp_h2s *x = t->arg;
	(void)l;
	unqueue(x);
	h2s_up_failed(x, 0, CONN_FLAG_OVERFLOW, "the endpoint's HTTP/2 connections stayed full");
}

/* All of the endpoint's connections are full: x waits for room (in order, at most
 * proxy.connect_timeout_ms; http2.max_pending_requests in all). False when the queue is full. */
static bool enqueue(struct wp_h2s *x, const char *key, const struct sockaddr_storage *target)
{
	struct waypoint *w = x->s->w;
	struct wp_h2s **tail = &w->h2q, *prev = NULL;
	if (!wp_h2_queue_room(w->nh2q, w->o.h2_pending))
		return false;
	snprintf(x->qkey, sizeof(x->qkey), "%s", key);
	x->qtarget = *target;
	while (*tail) {
		prev = *tail;
		tail = &(*tail)->qnext;
	}
	*tail = x;
	x->qprev = prev;
	x->queued = true;
	w->nh2q++;
	loop_timer_init(&x->qtimer, queue_expired, x);
	loop_timer_arm(w->o.loop, &x->qtimer, w->o.connect_timeout_ms ? w->o.connect_timeout_ms : 10000);
	return true;
}

/* hu has room: the requests waiting for its endpoint go on it, oldest first. Returns how
 * many went. */
static unsigned hu_dequeue(struct wp_h2u *hu)
{
	struct waypoint *w = hu->w;
	unsigned n = 0;
	uint32_t bound = w->o.max_streams ? w->o.max_streams : H2_UP_STREAMS;
	struct wp_h2s *x = w->h2q, *next;
	for (; x && hu_usable(hu) && hu_room(hu, bound); x = next) {
		next = x->qnext;
		if (strcmp(x->qkey, hu->key) != 0)
			continue;
		unqueue(x);
		int rv = h2s_submit(x, hu);
		if (rv)
			h2s_up_failed(x, 0, CONN_FLAG_OVERFLOW, nghttp2_strerror(rv));
		n++;
	}
	return n;
}

/* ---------------------------------------------------------- requests ---- */

/* request.headers[NAME] for the policy engine: the values joined with ",". */
struct h2_req_headers {
	const struct h2map_hdrs *h;
	char *buf;
};

static const char *h2_req_header(void *arg, const char *name)
{
	struct h2_req_headers *rh = arg;
	size_t nl = strlen(name), len = 0;
	char *v = NULL;

	free(rh->buf);
	rh->buf = NULL;
	for (size_t i = 0; i < rh->h->n; i++) {
		const nghttp2_nv *f = &rh->h->nv[i];
		if (f->namelen != nl || strncasecmp((const char *)f->name, name, nl) != 0)
			continue;
		char *nv = realloc(v, len + 1 + f->valuelen + 1);
		if (!nv) {
			free(v);
			return NULL;
		}
		v = nv;
		if (len)
			v[len++] = ',';
		memcpy(v + len, f->value, f->valuelen);
		len += f->valuelen;
		v[len] = '\0';
	}
	rh->buf = v;
	return v;
}

/* tracing_header_fn over the request's fields (custom tags name headers in any case). */
static const char *h2_tag_header(void *arg, const char *name, size_t *len)
{
	const struct h2map_hdrs *h = arg;
	size_t nl = strlen(name);
	for (size_t i = 0; i < h->n; i++)
		if (h->nv[i].namelen == nl && strncasecmp((const char *)h->nv[i].name, name, nl) == 0) {
			*len = h->nv[i].valuelen;
			return (const char *)h->nv[i].value;
		}
	return NULL;
}

static bool is_grpc(const struct h2map_hdrs *h)
{
	size_t len, n = strlen("application/grpc");
	const char *ct = h2map_hdrs_get(h, "content-type", &len);
	return ct && len >= n && strncasecmp(ct, "application/grpc", n) == 0 &&
	       (len == n || ct[n] == '+' || ct[n] == ';');
}

static void h1_request(struct wp_h2s *x, const struct model *m, const struct model_workload *dst,
		       const struct sockaddr_storage *target, const char *tpbuf);

/* The request span's destination.* attributes: the endpoint chosen (last, after a retry). */
static void h2s_span_dst(struct wp_h2s *x, const struct model_workload *dst,
			 const struct sockaddr_storage *target)
{
	char ip[ADDR_STR_LEN];
	if (!x->span)
		return;
	span_set_str(x->span, "destination.workload", dst->name);
	span_set_str(x->span, "destination.namespace", dst->namespace);
	span_set_str(x->span, "destination.address", sockaddr_ip_str(target, ip, sizeof(ip)));
	span_set_int(x->span, "destination.port", sockaddr_port(target));
}

/* x could not be routed: 503 (gRPC: UNAVAILABLE) to an HTTP/2 client at once, to an HTTP/1.x
 * client from wp_h2_h1c_step. */
static void h2s_route_failed(struct wp_h2s *x, const char *flag, const char *why)
{
	if (x->h1c)
		h2s_up_failed(x, 0, flag, why);
	else
		h2s_local(x, 503, 14, "upstream connect error", flag, why);
}

/* x's request (up_hdrs, or an HTTP/1.x client's translated head) goes to dst at target as HTTP/2: a stream on a pooled connection with
 * room, on a new one, or it waits for room; else the client gets 503. tp: the traceparent of a
 * new connection's CONNECT. */
static void h2s_route(struct wp_h2s *x, const struct model *m, const struct model_workload *dst,
		      const struct sockaddr_storage *target, const char *tp)
{
	struct wp_sess *s = x->s;
	struct waypoint *w = s->w;
	const char *why = NULL, *flag = NULL;
	char key[sizeof(((struct wp_h2u *)0)->key)];
	bool full;

	h2s_span_dst(x, dst, target);
	struct wp_h2u *hu = hu_get(s, m, dst, target, tp, &why, &flag, key, &full);
	bool queued = !hu && full && enqueue(x, key, target);
	if (!hu && !queued) {
		h2s_route_failed(x, flag, why);
		return;
	}
	struct endpoint_stat *e = wp_ep_stat(w, dst->uid, true);
	if (e) {
		e->active++;
		e->total++;
		x->ep_uid = strdup(dst->uid);
	}
	int rv = hu ? h2s_submit(x, hu) : 0;
	if (rv)
		h2s_route_failed(x, CONN_FLAG_OVERFLOW, nghttp2_strerror(rv));
	else
		h2s_try_deadline(x);
}

/* The end of an attempt for least-request accounting (the next one counts anew). */
static void h2s_ep_release(struct wp_h2s *x)
{
	struct endpoint_stat *e = x->ep_uid && x->s ? wp_ep_stat(x->s->w, x->ep_uid, false) : NULL;
	if (e && e->active)
		e->active--;
	free(x->ep_uid);
	x->ep_uid = NULL;
}

/* The traceparent of x's upstream request into tp (a new connection's CONNECT carries it);
 * NULL when it has none. */
static const char *h2s_up_traceparent(const struct wp_h2s *x, char tp[64])
{
	size_t len = 0;
	const char *v = h2map_hdrs_get(x->h1c ? &x->req : &x->up_hdrs, "traceparent", &len);
	if (!v || len >= 64)
		return NULL;
	memcpy(tp, v, len);
	tp[len] = '\0';
	return tp;
}

/* Another attempt of x (h2s_retriable): another endpoint than the last when there is one. */
static void h2s_retry(struct wp_h2s *x)
{
	struct wp_sess *s = x->s;
	struct waypoint *w = s->w;
	struct model *m = model_current();
	const struct model_workload *dst = NULL;
	struct sockaddr_storage target;
	char tp[64];

	x->retry_due = false;
	x->retries++;
	w->h2_retries++;
	if (x->hu) {
		hu_unref(x->hu);
		x->hu = NULL;
	}
	for (int i = 0; i < WP_H2_RETRY_PICKS; i++) {
		dst = wp_pick_route(w, s, m, &x->rt, &target);
		if (!dst || !x->ep_uid || strcmp(dst->uid, x->ep_uid) != 0)
			break;
	}
	h2s_ep_release(x);
	if (h1_buf_pending(&x->req_sent)) {	/* the body from its start again */
		struct h1_buf b = { 0 };
		if (h1_buf_append(&b, h1_buf_head(&x->req_sent), h1_buf_pending(&x->req_sent)) ||
		    h1_buf_append(&b, h1_buf_head(&x->req_body), h1_buf_pending(&x->req_body))) {
			h1_buf_fini(&b);
			h2s_up_failed(x, 0, CONN_FLAG_OVERFLOW, "out of memory");
			goto out;
		}
		x->resent = h1_buf_pending(&x->req_sent);
		h1_buf_fini(&x->req_body);
		h1_buf_fini(&x->req_sent);
		memset(&x->req_sent, 0, sizeof(x->req_sent));
		x->req_body = b;
	}
	if (x->span)
		span_set_int(x->span, "retry.count", x->retries);
	pr_debug("waypoint: h2 stream %d for %s: retry %u after: %s", x->down_sid,
		 s->service ? s->service : "?", x->retries, x->error);
	if (!dst) {
		h2s_up_failed(x, 0, x->retry_flag, x->error);
		goto out;
	}
	h2s_route(x, m, dst, &target, h2s_up_traceparent(x, tp));
out:
	model_unref(m);
}

/* x waited for room on its endpoint's connections and one of them closed: it goes to the
 * same endpoint again, on a new connection. */
static void h2s_requeue(struct wp_h2s *x)
{
	struct model *m = model_current();
	const struct model_workload *dst = x->ep_uid ? model_workload_by_uid(m, x->ep_uid) : NULL;
	char tp[64];

	x->requeue_due = false;
	h2s_ep_release(x);
	if (!dst)
		h2s_up_failed(x, 0, CONN_FLAG_NO_ROUTE, "the endpoint left the model");
	else
		h2s_route(x, m, dst, &x->qtarget, h2s_up_traceparent(x, tp));
	model_unref(m);
}

/* A client stream's request head is complete: span, policy, route, upstream stream. */
static void h2s_request(struct wp_h2s *x)
{
	struct wp_sess *s = x->s;
	struct waypoint *w = s->w;
	struct model *m = NULL;
	size_t mlen = 0, plen = 0, alen = 0, tlen = 0;
	const char *method = h2map_hdrs_get(&x->req, ":method", &mlen);
	const char *path = h2map_hdrs_get(&x->req, ":path", &plen);
	const char *auth = h2map_hdrs_get(&x->req, ":authority", &alen);
	const char *tp = h2map_hdrs_get(&x->req, "traceparent", &tlen);
	char tpbuf[64] = "", amsg[300];
	struct sockaddr_storage target;
	size_t pl = 0;

	x->head_done = true;
	w->requests++;
	s->h2->requests++;
	w->h2_streams++;
	if (!auth)
		auth = h2map_hdrs_get(&x->req, "host", &alen);
	if (!method || !path) {	/* nghttp2 checked the pseudo-headers; CONNECT has no :path */
		method = method ? method : "?";
		path = "/";
		plen = 1;
	}
	while (pl < plen && path[pl] != '?' && path[pl] != '#')
		pl++;
	x->grpc = is_grpc(&x->req);
	x->grpc_status = -1;
	x->head_req = strcmp(method, "HEAD") == 0;
	struct wp_req_head rh = { .method = method, .path = path, .plen = pl, .host = auth,
				  .hlen = alen, .traceparent = tp, .tplen = tlen, .version = "2",
				  .hdr = h2_tag_header, .hdr_arg = &x->req };
	x->span = wp_request_span(s, &rh, tpbuf);
	if (x->grpc)
		wp_span_grpc(x->span, path, pl);

	/* The HTTPRoute rule first, acted on after authorization (as for HTTP/1.x requests:
	 * Envoy picks the route before the RBAC filter, which runs before the router) */
	m = model_current();
	struct h2_req_headers rqh = { .h = &x->req };
	size_t qend = pl;
	while (qend < plen && path[qend] != '#')
		qend++;
	struct hr_request hq = { .method = method, .path = path, .plen = pl,
				 .query = pl < qend ? path + pl + 1 : NULL,
				 .qlen = pl < qend ? qend - pl - 1 : 0,
				 .header = h2_req_header, .header_arg = &rqh };
	const char *why = NULL, *flag = NULL;
	int code = wp_route_request(s, m, &hq, &x->rt, &why, &flag);
	free(rqh.buf);
	wp_retry_policy_of(x->rt.rule, &x->pol);

	/* L7 authorization, as for HTTP/1.x requests */
	struct authz_set *set = wp_authz_current();
	if (set) {
		struct h2_req_headers hh = { .h = &x->req };
		char *p = strndup(path, plen), *hs = auth ? strndup(auth, alen) : NULL;
		bool denied;
		if (!p || (auth && !hs)) {
			snprintf(amsg, sizeof(amsg), "out of memory checking the request's policies");
			denied = true;
		} else {
			struct authz_request rq = { .method = method, .path = p, .host = hs,
						    .header = h2_req_header, .header_arg = &hh };
			denied = wp_policy_denies(s, set, &rq, x->span, amsg, sizeof(amsg));
		}
		free(hh.buf);
		free(p);
		free(hs);
		authz_set_unref(set);
		if (denied) {
			pr_debug("waypoint: h2 %s %.*s for %s from %s: %s", method, (int)MIN(pl, 100), path,
				 s->service ? s->service : "?", s->peer_identity ? s->peer_identity : "?",
				 amsg);
			free(x->rt.location);	/* a 403, not the rule's redirect */
			x->rt.location = NULL;
			h2s_local(x, 403, 7, WP_RBAC_BODY, CONN_FLAG_DENIED, amsg);
			goto out;
		}
	}
	wp_route_span(&x->rt, x->span);
	if (code) {
		/* gRPC's mapping of HTTP statuses: 404 UNIMPLEMENTED, 500 INTERNAL, 503 UNAVAILABLE */
		h2s_local(x, code, code == 404 ? 12 : code == 500 ? 13 : 14, why, flag, why);
		goto out;
	}
	const struct model_workload *dst = wp_pick_route(w, s, m, &x->rt, &target);
	if (!dst) {
		h2s_local(x, 503, 14, "no healthy upstream", CONN_FLAG_NO_ROUTE, "no healthy upstream");
		goto out;
	}
	if (s->proto == PROTOCOL_HTTP) {
		/* a port declared HTTP/1.x: the request goes as HTTP/1.1 (as Envoy does) */
		h2s_span_dst(x, dst, &target);
		h1_request(x, m, dst, &target, tpbuf);
		goto out;
	}
	/* The request goes as received, with the request span's context (W3C §3). */
	if (copy_fields(&x->req, tpbuf, x->rt.rule ? &x->rt.rule->req : NULL, &x->rt, &x->up_hdrs)) {
		h2s_local(x, 503, 14, "upstream connect error", CONN_FLAG_OVERFLOW, "out of memory");
		goto out;
	}
	h2s_route(x, m, dst, &target, tpbuf[0] ? tpbuf : NULL);
out:
	h2s_deadline(x);
	model_unref(m);
}

/* ---------------------------------------------------------- HTTP/1.1 upstreams ---- */

/* Moves up to 16 KiB of body from `from` to HTTP/1.1 bytes in `to`, as one chunk when chunked
 * (RFC 9112 §7.1). Returns the body bytes taken; *err is set on ENOMEM. */
static size_t move_body(struct h1_buf *from, struct h1_buf *to, bool chunked, int *err)
{
	size_t m = MIN(h1_buf_pending(from), (size_t)16384);
	if (!m)
		return 0;
	if (chunked)
		*err = h1_buf_printf(to, "%zx\r\n", m);
	*err = *err || h1_buf_append(to, h1_buf_head(from), m);
	if (chunked)
		*err = *err || h1_buf_append(to, "\r\n", 2);
	h1_buf_consume(from, m);
	return m;
}

/* The trailer section of a complete HTTP/1.x message h as HTTP/2 trailers into tr, when
 * http1.enable_trailers says so (else they are dropped, as Istio's Envoy drops them). One that
 * HTTP/2 cannot carry is dropped too (logged). */
static void h1_trailers_take(const struct waypoint *w, const struct h1 *h, struct h2map_hdrs *tr)
{
	if (!w || !w->o.h1_trailers || !h1_trailer_count(h) || tr->n)
		return;
	int err = h2map_trailers_from_h1(h, tr);
	if (err) {
		pr_debug("waypoint: HTTP/1.x trailers dropped: %s", strerror(-err));
		h2map_hdrs_fini(tr);
		h2map_hdrs_init(tr);
	}
}

/* Lets go of the stream's HTTP/1.1 upstream: back to the pool when its exchange completed and
 * the connection may carry another, else closed (reset when cut short). */
static void h1_release(struct wp_h2s *x, bool reusable)
{
	struct wp_up *u = x->u1;
	if (!u)
		return;
	x->u1 = NULL;
	x->up_open = false;
	u->h2s = NULL;
	wp_up_put(u, reusable && u->resp.keep_alive && x->req_end_sent, reusable);
}

static void h1_request(struct wp_h2s *x, const struct model *m, const struct model_workload *dst,
		       const struct sockaddr_storage *target, const char *tpbuf)
{
	struct wp_sess *s = x->s;
	struct h2map_hdrs out;
	const char *why = NULL;
	int err = 0;

	h2map_hdrs_init(&out);
	err = copy_fields(&x->req, tpbuf, x->rt.rule ? &x->rt.rule->req : NULL, &x->rt, &out);
	/* RFC 9113 §8.3 -> RFC 9112: Host from :authority, chunked when the length is unknown */
	if (!err)
		err = h2map_request_to_h1(&out, x->req_eof && !x->req_tr.n, &x->h1out, &x->req_chunked);
	h2map_hdrs_fini(&out);
	if (err) {
		h2s_local(x, err == -EPROTO ? 400 : 503, 13, err == -EPROTO ?
			  "the request cannot be sent as HTTP/1.1" : "out of memory", NULL,
			  err == -EPROTO ? "the request cannot be sent as HTTP/1.1" : "out of memory");
		return;
	}
	x->u1 = wp_up_get(s, m, dst, target, tpbuf[0] ? tpbuf : NULL, true, &why);
	if (!x->u1) {
		h2s_local(x, 503, 14, "upstream connect error", CONN_FLAG_UPSTREAM_CONNECT_FAILURE, why);
		return;
	}
	x->u1->h2s = x;
	x->up_open = true;
	x->req_end_sent = !x->req_chunked && x->req_eof && !x->req_tr.n;
	struct endpoint_stat *e = wp_ep_stat(s->w, dst->uid, true);
	if (e) {
		e->active++;
		e->total++;
		x->ep_uid = strdup(dst->uid);
	}
	if (proxy_peer_fill(&x->dst1, dst, s->w->trust_domain))
		conn_peer_fini(&x->dst1);
	wp_sess_schedule(s);
}

int wp_h2_h1_resp_head(struct wp_h2s *x, struct h1 *h)
{
	h->chunked_out = false;		/* the body as it decodes: it goes into DATA frames */
	if (h1_status(h) < 200) {
		h2s_interim(x, h1_status(h), NULL, h);	/* h1_pump skips to the final one */
		return 0;
	}
	h2map_hdrs_fini(&x->resp);
	h2map_hdrs_init(&x->resp);
	if (h2map_response_from_h1(h, &x->resp))
		return -1;
	x->resp_final = true;
	resp_edit(x);
	if (x->s && x->down_open && x->s->h2)
		forward_response(x);
	return x->head_req ? H1_HEAD_NO_BODY : 0;
}

/* Moves an HTTP/2 client stream's exchange with its HTTP/1.1 upstream: request head and body
 * out (chunked when its length is unknown, the client's trailers as chunked trailers), the
 * response in (decoded into DATA). True on progress. */
static bool h1_pump(struct wp_h2s *x)
{
	struct wp_up *u = x->u1;
	const uint8_t *p;
	size_t n;
	bool progress = false;
	char why[160];

	if (!u->conn) {
		snprintf(why, sizeof(why), "upstream %s: %s", x->resp_final ? "reset" : "connect failed",
			 u->err ? strerror(-u->err) : "closed");
		h1_release(x, false);
		h2s_up_failed(x, 0, x->resp_final ? CONN_FLAG_UPSTREAM_RESET
						  : CONN_FLAG_UPSTREAM_CONNECT_FAILURE, why);
		return true;
	}
	for (;;) {
		while (u->conn && h1_buf_pending(&x->h1out)) {
			size_t k = conn_in_write(u->conn, CONN_DOWN, h1_buf_head(&x->h1out),
						 h1_buf_pending(&x->h1out));
			if (!k)
				break;
			h1_buf_consume(&x->h1out, k);
			progress = true;
		}
		if (!u->conn || h1_buf_pending(&x->h1out))
			break;
		int err = 0;
		size_t m = move_body(&x->req_body, &x->h1out, x->req_chunked, &err);
		if (m) {
			credit_down(x, m);
		} else if (x->req_eof && !x->req_end_sent) {
			x->req_end_sent = true;
			if (x->req_chunked)
				err = h2map_trailers_to_h1(x->req_tr.n ? &x->req_tr : NULL, &x->h1out);
		} else {
			break;
		}
		if (err) {
			h1_release(x, false);
			h2s_up_failed(x, 0, CONN_FLAG_OVERFLOW, "out of memory");
			return true;
		}
	}
	size_t before = h1_buf_pending(&x->resp_body);
	while (x->u1 && u->conn && h1_buf_pending(&x->resp_body) < WP_STAGE_MAX &&
	       (n = conn_out_peek(u->conn, CONN_DOWN, &p)) > 0) {
		size_t k = h1_feed(&u->resp, p, MIN(n, (size_t)16384), &x->resp_body);
		if (u->conn)
			conn_out_consume(u->conn, CONN_DOWN, k);
		progress |= k > 0;
		if (u->resp.st == H1_ST_DONE && u->resp.p.status_code < 200) {
			h1_next(&u->resp);	/* 1xx: the final answer follows */
			continue;
		}
		if (u->resp.st != H1_ST_HEAD && u->resp.st != H1_ST_BODY)
			break;
		if (!k)
			break;
	}
	if (u->conn && (u->resp.st == H1_ST_HEAD || u->resp.st == H1_ST_BODY) &&
	    !conn_out_pending(u->conn, CONN_DOWN) && conn_out_eof(u->conn, CONN_DOWN)) {
		h1_feed_eof(&u->resp, &x->resp_body);	/* a body delimited by the close */
		conn_out_done(u->conn, CONN_DOWN);
		u->resp.keep_alive = false;
		progress = true;
	}
	if (h1_buf_pending(&x->resp_body) != before)
		wake_down(x);
	switch (u->resp.st) {
	case H1_ST_DONE:
		h1_trailers_take(x->s ? x->s->w : NULL, &u->resp, &x->resp_tr);
		x->resp_eof = true;
		h1_release(x, true);
		wake_down(x);
		return true;
	case H1_ST_ERROR:
	case H1_ST_UPGRADED:
		snprintf(why, sizeof(why), "bad response from the upstream: %s",
			 u->resp.error ? u->resp.error : "an upgrade");
		h1_release(x, false);
		h2s_up_failed(x, 0, CONN_FLAG_UPSTREAM_RESET, why);
		return true;
	default:
		if (!u->conn) {
			h1_release(x, false);
			h2s_up_failed(x, 0, CONN_FLAG_UPSTREAM_RESET, "upstream closed");
			return true;
		}
		return progress;
	}
}

/* ---------------------------------------------------------- HTTP/1.x clients ---- */

int wp_h2_h1c_request(struct wp_sess *s, const struct h1 *h, const struct model *m,
		      const struct model_workload *dst, const struct sockaddr_storage *target,
		      const char *tpbuf, const char **why)
{
	struct wp_h2s *x = h2s_new(s);
	struct h2map_hdrs tmp;
	const char *flag;
	size_t len;
	int err;

	*why = "out of memory";
	if (!x)
		return -1;
	h2map_hdrs_init(&tmp);
	err = h2map_request_from_h1(h, "http", &tmp);
	err = err ? err : copy_fields(&tmp, tpbuf, s->rt_cur && s->rt_cur->rule ? &s->rt_cur->rule->req : NULL,
				    s->rt_cur, &x->req);
	if (!err && s->rt_cur)	/* its retries pick from the route's backend too */
		err = wp_route_copy(&x->rt, s->rt_cur);
	wp_retry_policy_of(x->rt.rule, &x->pol);
	h2map_hdrs_fini(&tmp);
	if (err) {
		if (err == -EPROTO)
			*why = "the request cannot be sent as HTTP/2";
		goto fail;
	}
	x->h1c = true;
	x->grpc = is_grpc(&x->req);
	x->head_req = strcmp(h1_method(h), "HEAD") == 0;
	const char *te = h1_header(h, "te", &len);
	x->te_trailers = te && memmem(te, len, "trailers", 8);
	char key[sizeof(((struct wp_h2u *)0)->key)];
	bool full;
	struct wp_h2u *hu = hu_get(s, m, dst, target, tpbuf[0] ? tpbuf : NULL, why, &flag, key, &full);
	if (!hu && !(full && enqueue(x, key, target)))
		goto fail;
	int rv = hu ? h2s_submit(x, hu) : 0;
	if (rv) {
		*why = nghttp2_strerror(rv);
		goto fail;
	}
	struct endpoint_stat *e = wp_ep_stat(s->w, dst->uid, true);
	if (e) {
		e->active++;
		e->total++;
		x->ep_uid = strdup(dst->uid);
	}
	if (x->grpc)
		wp_span_grpc(s->span, h2map_hdrs_get(&x->req, ":path", &len), len);
	x->span = s->span;	/* the request ends with x */
	s->span = NULL;
	s->h2x = x;
	return 0;
fail:
	x->down_open = false;
	x->s = NULL;
	x->finished = true;
	h2s_maybe_free(x);
	return -1;
}

void wp_h2_h1c_end(struct wp_sess *s, const char *flag, const char *why)
{
	struct wp_h2s *x = s->h2x;
	loop_timer_cancel(s->w->o.loop, &s->rt_timer);
	if (!x)
		return;
	s->h2x = NULL;
	unqueue(x);
	x->down_open = false;
	if (!x->finished)
		h2s_finish(x, flag, why);
	if (x->up_open && x->hu && x->hu->ng) {
		nghttp2_submit_rst_stream(x->hu->ng, NGHTTP2_FLAG_NONE, x->up_sid, NGHTTP2_CANCEL);
		hu_schedule(x->hu);
	}
	h1_buf_consume(&x->req_body, h1_buf_pending(&x->req_body));
	x->s = NULL;
	h2s_maybe_free(x);
}

void wp_h2_h1c_timeout(struct wp_sess *s)
{
	struct wp_h2s *x = s->h2x;
	if (!x || x->resp_eof)	/* the answer is complete upstream: the client is just slow */
		return;
	if (!x->resp_head_sent) {
		s->w->local_replies++;
		x->status = 504;
		wp_h1_local_answer(s, 504, WP_TIMEOUT_WHY, NULL, true);
		wp_h2_h1c_end(s, WP_FLAG_TIMEOUT, WP_TIMEOUT_WHY);
		s->close_after = true;
		s->st = SS_CLOSING;
		return;
	}
	wp_h2_h1c_end(s, WP_FLAG_TIMEOUT, WP_TIMEOUT_WHY);
	if (s->down)
		conn_abort(s->down, CONN_UP, -ETIMEDOUT, WP_FLAG_TIMEOUT, WP_TIMEOUT_WHY);
}

bool wp_h2_h1c_step(struct wp_sess *s)
{
	struct wp_h2s *x = s->h2x;
	bool progress = false, moved = false;
	int err = 0;

	if (x->retry_due) {	/* refused or failed before any answer: again (h2s_retriable) */
		h2s_retry(x);
		progress = true;
		if (s->h2x != x)
			return true;
	}
	/* the request body (decoded by the parser) into the stream's bounded buffer */
	bool keep = x->up_open || x->queued || x->retry_due || x->backing_off;
	while (h1_buf_pending(&s->to_up) && (!keep || h1_buf_pending(&x->req_body) < WP_STAGE_MAX)) {
		size_t m = MIN(h1_buf_pending(&s->to_up), (size_t)(WP_STAGE_MAX));
		if (keep && h1_buf_append(&x->req_body, h1_buf_head(&s->to_up), m))
			break;
		h1_buf_consume(&s->to_up, m);
		moved = progress = true;
	}
	if (!x->req_eof && !h1_buf_pending(&s->to_up) &&
	    (s->req.st == H1_ST_DONE || s->req.st == H1_ST_UPGRADED)) {
		h1_trailers_take(s->w, &s->req, &x->req_tr);	/* req_read sends them */
		x->req_eof = true;
		h2s_try_deadline(x);
		moved = progress = true;
	}
	if (moved)
		wake_up(x);
	if (x->failed) {
		if (!x->resp_head_sent) {
			s->w->local_replies++;
			x->status = 503;
			wp_h1_local_answer(s, 503, x->error, NULL, true);
			wp_h2_h1c_end(s, NULL, NULL);
			s->close_after = true;
			s->st = SS_CLOSING;
		} else {
			char why[sizeof(x->error)];
			snprintf(why, sizeof(why), "%s", x->error);
			wp_h2_h1c_end(s, NULL, NULL);
			if (s->down)
				conn_abort(s->down, CONN_UP, -ECONNRESET, CONN_FLAG_UPSTREAM_RESET, why);
		}
		return true;
	}
	if (x->resp_final && !x->resp_head_sent) {
		bool end = x->resp_eof && !h1_buf_pending(&x->resp_body) && !x->resp_tr.n;
		/* RFC 9113 §8.3 -> RFC 9112: chunked when the length is unknown */
		err = h2map_response_to_h1(&x->resp, x->head_req, end, &s->to_down, &x->resp_chunked);
		x->resp_head_sent = true;
		s->resp_started = true;
		s->status = x->status;
		progress = true;
	}
	while (!err && x->resp_head_sent && h1_buf_pending(&x->resp_body) &&
	       h1_buf_pending(&s->to_down) < WP_STAGE_MAX) {
		size_t m = move_body(&x->resp_body, &s->to_down, x->resp_chunked, &err);
		credit_up(x, m);
		progress = true;
	}
	if (err) {
		wp_h2_h1c_end(s, CONN_FLAG_UPSTREAM_RESET, "cannot translate the response");
		if (s->down)
			conn_abort(s->down, CONN_UP, -EPROTO, CONN_FLAG_UPSTREAM_RESET,
				   "cannot translate the response");
		return true;
	}
	if (!x->resp_head_sent || !x->resp_eof || h1_buf_pending(&x->resp_body))
		return progress;
	/* the end: trailers as chunked trailers to a client that said TE: trailers */
	if (x->resp_chunked &&
	    h2map_trailers_to_h1(x->te_trailers && x->resp_tr.n ? &x->resp_tr : NULL, &s->to_down))
		s->close_after = true;
	bool req_done = s->req.st == H1_ST_DONE && x->req_eof;
	wp_h2_h1c_end(s, NULL, NULL);
	if (!req_done || !s->req.keep_alive || s->close_after || s->w->draining) {
		s->close_after = true;
		s->st = SS_CLOSING;
		return true;
	}
	h1_next(&s->req);
	s->resp_started = false;
	s->status = 0;
	s->st = SS_HEAD;
	return true;
}

/* ---------------------------------------------------------- downstream session ---- */

static int down_on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct wp_sess *s = ud;
	struct wp_h2d *d = s->h2;
	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct wp_h2s *x = h2s_new(s);
	if (!x)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	x->down_sid = f->hd.stream_id;
	if (nghttp2_session_set_stream_user_data(ng, x->down_sid, x)) {
		free(x);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	x->dnext = d->streams;
	if (d->streams)
		d->streams->dprev = x;
	d->streams = x;
	d->nstreams++;
	return 0;
}

static void rapid_reset(struct wp_sess *s, struct wp_h2d *d)
{
	uint64_t now = loop_now_ms(s->w->o.loop);
	uint32_t max = s->w->o.limits && s->w->o.limits->resets.burst ? s->w->o.limits->resets.burst
								       : H2_RESETS_PER_S;
	if (now - d->reset_window_ms >= 1000) {
		d->reset_window_ms = now;
		d->resets = 0;
	}
	if (++d->resets <= max || d->goaway)
		return;
	pr_warn_rl("waypoint: h2 client %s reset %u unanswered streams within a second: closing",
		   s->peer_identity ? s->peer_identity : "?", d->resets);
	nghttp2_session_terminate_session(d->ng, NGHTTP2_ENHANCE_YOUR_CALM);
	d->goaway = true;
}

static int down_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct wp_sess *s = ud;
	struct wp_h2s *x = f->hd.stream_id ? nghttp2_session_get_stream_user_data(ng, f->hd.stream_id)
					   : NULL;
	if (!x)
		return 0;
	bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
	switch (f->hd.type) {
	case NGHTTP2_HEADERS:
		if (!x->head_done) {
			x->req_eof = end;
			h2s_request(x);
		} else {
			x->req_eof = true;	/* trailers */
			wake_up(x);
			h2s_deadline(x);
		}
		break;
	case NGHTTP2_DATA:
		if (end) {
			x->req_eof = true;
			wake_up(x);
			h2s_deadline(x);
		}
		break;
	case NGHTTP2_RST_STREAM:
		if (!x->resp_submitted)
			rapid_reset(s, s->h2);
		break;
	default:
		break;
	}
	return 0;
}

static int down_on_data(nghttp2_session *ng, uint8_t flags, int32_t sid, const uint8_t *data,
			size_t len, void *ud)
{
	struct wp_h2s *x = nghttp2_session_get_stream_user_data(ng, sid);
	(void)flags;
	(void)ud;
	/* kept while it waits for room or for its retry (its back-off): the next try sends it */
	bool waits = x && (x->queued || x->retry_due || x->backing_off);
	if (!x || x->local || (!waits && (!x->up_open || (!x->u1 && (!x->hu || !x->hu->ng))))) {
		nghttp2_session_consume(ng, sid, len);	/* answered already, or no upstream */
		return 0;
	}
	if (h1_buf_append(&x->req_body, data, len))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	wake_up(x);
	return 0;
}

/* Our last frame of a stream went out: a client still sending after the answer is told to
 * stop (RFC 9113 §8.1: RST_STREAM NO_ERROR). */
static int down_on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	(void)ud;
	if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
	    !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	struct wp_h2s *x = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
	if (x && !x->req_eof)
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
	return 0;
}

static int down_on_stream_close(nghttp2_session *ng, int32_t sid, uint32_t error_code, void *ud)
{
	struct wp_h2s *x = nghttp2_session_get_stream_user_data(ng, sid);
	(void)ud;
	if (x)
		h2s_down_gone(x, error_code);
	return 0;
}

int wp_h2_start(struct wp_sess *s)
{
	struct waypoint *w = s->w;
	struct wp_h2d *d = calloc(1, sizeof(*d));
	nghttp2_session_callbacks *cb = NULL;
	nghttp2_option *opt = NULL;
	uint32_t win = MAX(w->o.buffer_size, 16384u);
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
		  w->o.h2_client_streams ? w->o.h2_client_streams : H2_DOWN_STREAMS },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, win },
	};
	int err = -ENOMEM;

	if (!d || nghttp2_session_callbacks_new(&cb) || nghttp2_option_new(&opt))
		goto fail;
	d->s = s;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, down_on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, down_on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, down_on_data);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, down_on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, down_on_stream_close);
	/* windows open only as the endpoint takes the bytes (credit_down) */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	if (nghttp2_session_server_new2(&d->ng, cb, s, opt))
		goto fail;
	if (nghttp2_submit_settings(d->ng, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv)) ||
	    nghttp2_session_set_local_window_size(d->ng, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW))
		goto fail;
	s->h2 = d;
	s->st = SS_H2;
	w->nh2sessions++;
	err = 0;
	d = NULL;
fail:
	nghttp2_session_callbacks_del(cb);
	nghttp2_option_del(opt);
	if (d)
		nghttp2_session_del(d->ng);
	free(d);
	return err;
}

static void h2_idle_fire(struct loop *l, struct loop_timer *t)
{
	struct wp_sess *s = t->arg;
	(void)l;
	if (!s->h2 || s->h2->nstreams || s->h2->goaway)
		return;
	s->h2->idle_armed = false;
	nghttp2_submit_goaway(s->h2->ng, NGHTTP2_FLAG_NONE,
			      nghttp2_session_get_last_proc_stream_id(s->h2->ng), NGHTTP2_NO_ERROR,
			      NULL, 0);
	s->h2->goaway = true;
	wp_sess_schedule(s);
}

static bool h1_pump(struct wp_h2s *x);

bool wp_h2_step(struct wp_sess *s)
{
	struct wp_h2d *d = s->h2;
	struct waypoint *w = s->w;
	const uint8_t *p;
	size_t n;
	bool progress = false;
	const char *fatal = NULL;
	char why[128];

	if (!d || !s->down)
		return false;
	for (struct wp_h2s *x = d->streams, *next; x; x = next) {
		next = x->dnext;
		if (x->u1)
			progress |= h1_pump(x);
		if (x->retry_due) {
			h2s_retry(x);
			progress = true;
		} else if (x->requeue_due) {
			h2s_requeue(x);
			progress = true;
		}
	}
	while (s->down && h1_buf_pending(&s->to_down) < WP_STAGE_MAX &&
	       (n = conn_out_peek(s->down, CONN_UP, &p)) > 0) {
		ssize_t rv = nghttp2_session_mem_recv(d->ng, p, n);
		if (rv < 0) {
			snprintf(why, sizeof(why), "client HTTP/2 error: %s", nghttp2_strerror((int)rv));
			fatal = why;
			break;
		}
		if (s->down)
			conn_out_consume(s->down, CONN_UP, (size_t)rv);
		progress = true;
	}
	if (s->down && !fatal && !s->client_eof && !conn_out_pending(s->down, CONN_UP) &&
	    conn_out_eof(s->down, CONN_UP)) {
		s->client_eof = true;
		conn_out_done(s->down, CONN_UP);
		progress = true;
	}
	while (s->down && !fatal && h1_buf_pending(&s->to_down) < WP_STAGE_MAX) {
		const uint8_t *data;
		ssize_t k = nghttp2_session_mem_send(d->ng, &data);
		if (k < 0) {
			snprintf(why, sizeof(why), "HTTP/2 error: %s", nghttp2_strerror((int)k));
			fatal = why;
			break;
		}
		if (k == 0)
			break;
		if (h1_buf_append(&s->to_down, data, (size_t)k)) {
			fatal = "out of memory";
			break;
		}
		progress = true;
	}
	if (!s->down)
		return true;
	if (fatal) {
		pr_debug("waypoint: h2 session for %s: %s", s->service ? s->service : "?", fatal);
		conn_abort(s->down, CONN_UP, -EPROTO, CONN_FLAG_DOWNSTREAM_RESET, fatal);
		return true;
	}
	if (!d->nstreams && !d->goaway && !d->idle_armed) {
		s->timer.fn = h2_idle_fire;
		loop_timer_arm(w->o.loop, &s->timer, w->o.idle_timeout_ms ? w->o.idle_timeout_ms : H2_IDLE_MS);
		d->idle_armed = true;
	} else if (d->nstreams && d->idle_armed) {
		loop_timer_cancel(w->o.loop, &s->timer);
		d->idle_armed = false;
	}
	/* Done when nghttp2 is (GOAWAY either way, terminated), or when no stream is left after
	 * our GOAWAY or the client's EOF. Our EOF follows the last frames (sess_step). */
	if (!nghttp2_session_want_write(d->ng) &&
	    (!nghttp2_session_want_read(d->ng) || (!d->nstreams && (d->goaway || s->client_eof)))) {
		loop_timer_cancel(w->o.loop, &s->timer);
		wp_h2_sess_fini(s);
		s->st = SS_CLOSING;
		s->close_after = true;
		return true;
	}
	return progress;
}

void wp_h2_drain(struct wp_sess *s)
{
	struct wp_h2d *d = s->h2;
	if (!d || d->goaway)
		return;
	nghttp2_submit_goaway(d->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(d->ng),
			      NGHTTP2_NO_ERROR, NULL, 0);
	d->goaway = true;
	wp_sess_schedule(s);
}

void wp_h2_sess_fini(struct wp_sess *s)
{
	struct wp_h2d *d = s->h2;
	wp_h2_h1c_end(s, CONN_FLAG_DOWNSTREAM_RESET, "client closed");
	if (!d)
		return;
	d->dying = true;
	while (d->streams) {
		struct wp_h2s *x = d->streams;
		nghttp2_session_set_stream_user_data(d->ng, x->down_sid, NULL);
		h2s_down_gone(x, NGHTTP2_CANCEL);
	}
	nghttp2_session_del(d->ng);
	s->w->nh2sessions--;
	s->h2 = NULL;
	free(d);
}

/* ---------------------------------------------------------- admin ---- */

json_t *wp_h2_sess_json(const struct wp_sess *s)
{
	const struct wp_h2d *d = s->h2;
	if (!d)
		return NULL;
	return json_pack("{s:i,s:I,s:b}", "streams", (int)d->nstreams, "requests",
			 (json_int_t)d->requests, "goaway", d->goaway);
}

json_t *wp_h2_pool_json(struct waypoint *w)
{
	json_t *arr = json_array();
	for (struct wp_h2u *hu = w->h2ups; hu; hu = hu->next) {
		uint32_t peer = hu->ng ? nghttp2_session_get_remote_settings(
				hu->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) : 0;
		const char *bar = strchr(hu->key, '|');
		char addr[ADDR_STR_LEN];
		snprintf(addr, sizeof(addr), "%.*s", bar ? (int)(bar - hu->key) : (int)strlen(hu->key),
			 hu->key);
		json_array_append_new(arr, json_pack("{s:s,s:s?,s:s?,s:i,s:I,s:I,s:b,s:b}",
			"endpoint", addr, "workload", hu->dst.workload, "namespace", hu->dst.namespace,
			"active_streams", (int)hu->nstreams, "peer_max_streams", (json_int_t)peer,
			"requests", (json_int_t)hu->requests, "goaway", hu->goaway,
			"connected", hu->got_bytes));
	}
	return json_pack("{s:i,s:I,s:i,s:I,s:i,s:I,s:o}", "connections", (int)w->nh2ups,
			 "opened", (json_int_t)w->h2ups_opened, "client_sessions", (int)w->nh2sessions,
			 "streams", (json_int_t)w->h2_streams, "queued", (int)w->nh2q,
			 "retries", (json_int_t)w->h2_retries, "pool", arr);
}
