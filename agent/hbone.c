// SPDX-License-Identifier: Apache-2.0
/* HBONE transport: nghttp2 sessions over non-blocking tls_conns on the agent's loop. Outbound
 * CONNECT streams share pooled client connections; port 15008 accepts inbound ones. Each
 * stream is a struct conn_end spliced into a conn (agent/conn.h). */
#include "agent/hbone.h"
#include "common/log.h"
#include "common/util.h"
#include "tls/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define WBUF_SOFT (64 * 1024)	/* stop pulling frames from nghttp2 past this much output */
#define RBUF_SIZE (16 * 1024 + 512)	/* one TLS record */
#define READ_BUDGET 64		/* TLS records per wake-up before yielding to other fds */
#define DRAIN_NOTICE_MS 1000	/* shutdown notice -> final GOAWAY (RFC 9113 §6.8) */
#define REASON_MAX 256
#define ABUSE_LINGER_MS 1000	/* a cut-off peer gets this long to read our GOAWAY */

/* ------------------------------------------------------------ objects ---- */

/* Why a session is not moving (admin API "blocked"; HAProxy mux_h2 style). */
enum sess_flags {
	SF_RD_WANT_WRITE = 1u << 0,	/* a TLS read needs the socket writable */
	SF_WR_WANT_READ = 1u << 1,	/* a TLS write needs the socket readable */
	SF_WR_BLOCKED = 1u << 2,	/* TLS write returned EAGAIN: output waits for EPOLLOUT */
	SF_FLUSH_QUEUED = 1u << 3,	/* a before-sleep flush is scheduled (holds a ref) */
	SF_PEER_EOF = 1u << 4,		/* the peer closed the TLS connection */
	SF_REMOTE_SETTINGS = 1u << 5,	/* the peer's SETTINGS arrived (its stream limit counts) */
	SF_PING_OUT = 1u << 6,		/* a PING awaits its ACK */
	SF_GOAWAY_RECV = 1u << 7,
	SF_DRAIN_NOTICE = 1u << 8,	/* server: shutdown notice sent, final GOAWAY pending */
	SF_RETIRE = 1u << 9,		/* client: its cert was renewed during the handshake:
					 * GOAWAY once up */
	SF_ABUSE = 1u << 10,		/* server: cut off for abuse: GOAWAY(ENHANCE_YOUR_CALM)
					 * queued, nothing more is parsed */
	SF_LINGER = 1u << 11,		/* ... GOAWAY and close_notify sent, write side shut:
					 * input is discarded until EOF or the linger deadline,
					 * so that closing does not reset the GOAWAY away */
};

/* A token bucket of struct hbone_rate (abuse limits). */
struct rl_bucket {
	double tokens;
	uint64_t at_ms;		/* last refill; 0 = full, never used */
};

struct hbone_owner;

struct hbone_sess {
	int refs;		/* owner list 1 (until closed), each stream 1, queued flush 1 */
	bool server;
	enum hbone_sess_st st;
	unsigned flags;
	struct loop *loop;
	struct hbone_owner *owner;	/* NULL once the owner is gone */
	struct hbone_sess *prev, *next;	/* owner's list, while not closed */
	int fd;
	struct loop_io io;
	struct tls_conn *tls;
	nghttp2_session *ng;

	/* client pool key: (source identity, peer address, SNI identity or none, source pod
	 * address when given) + expected set */
	struct spiffe_id src, sni;
	bool no_sni, has_key_src;
	struct sockaddr_storage key_src;
	bool pod_addressed;	/* server: accepted on a pod-addressed listener */
	struct spiffe_id expect[TLS_EXPECT_MAX];
	size_t nexpect;
	struct sockaddr_storage peer_addr, local_addr;
	struct spiffe_id peer_id, local_id;
	bool has_peer_id, has_local_id;

	struct hbone_stream *streams;	/* every stream object not yet freed */
	uint32_t nstreams;		/* streams not yet finished (client: incl. queued) */
	uint64_t streams_total;
	size_t buffered;	/* overflow bytes of all streams */
	size_t unconsumed;	/* received DATA not yet consumed (window not returned): at
				 * most the connection window, enforced by nghttp2 */

	uint8_t *wbuf;		/* TLS output not yet taken by tls_conn_write */
	size_t wlen, woff, wcap;

	struct loop_timer hs_timer;	/* TCP+TLS handshake deadline */
	struct loop_timer ping_timer;	/* PING period, then ACK deadline */
	struct loop_timer idle_timer;	/* client: close when idle */
	struct loop_timer again_timer;	/* 0 ms: decrypted bytes left after the read budget */
	struct loop_timer drain_timer;	/* server: final GOAWAY after the notice */
	uint64_t created_ms, idle_since_ms, ping_sent_ms;
	uint64_t bytes_sent, bytes_recv, bytes_at_ping;
	char reason[REASON_MAX];

	/* server: abuse limits (opts.limits) */
	struct rl_bucket rl_resets, rl_settings, rl_pings, rl_empty;
	uint64_t premature_resets;	/* for the log line */
	uint32_t unanswered;		/* streams opened, not answered yet */
	struct hbone_stream *rq_head, *rq_tail;	/* complete requests not dispatched yet */
};

/* A pool and a server share the session bookkeeping. */
struct hbone_owner {
	bool server;
	bool draining;
	struct loop *loop;
	struct hbone_opts opts;
	struct tls_ctx *ctx;
	struct hbone_sess *sessions;
	uint32_t nsessions;
	uint64_t conns_total, streams_total, refused_total;
	uint64_t cut_off[HBONE_ABUSE_N], streams_refused_total, reset_before_dial_total;
	/* server: streams the agent holds unanswered (on_connect returned -EINPROGRESS), in
	 * the order they were held; hbone_server_retry_held dispatches them again */
	struct hbone_stream *held_head, *held_tail;
	uint32_t nheld;
};

struct cert_wait;

static void waiters_abort_all(struct hbone_pool *p, int err, const char *why);

struct hbone_pool {
	struct hbone_owner o;
	struct certstore *certs;
	struct cert_wait *waiters;	/* CONNECTs waiting for their source certificate */
	uint32_t nwaiters;
};

/* A listener of pod-addressed HBONE (transparent, fed by the eBPF capture). */
struct hbone_pod_listener {
	struct hbone_server *srv;
	int fd;			/* -1 when unused or closed */
	struct loop_io io;
};

struct hbone_server {
	struct hbone_owner o;
	int lfd;
	struct loop_io lio;
	struct sockaddr_storage addr;
	struct hbone_server_cbs cbs;
	bool listening;
	struct hbone_pod_listener pod[2];	/* IPv4, IPv6 */
};

enum stream_flags {
	STF_RELEASED = 1u << 0,		/* no conn will touch it again (released or never attached) */
	STF_CLOSED = 1u << 1,		/* nghttp2 is done with it (closed, not sent, session gone) */
	STF_DEFERRED = 1u << 2,		/* the data provider returned DEFERRED: resume on kick_write */
	STF_EOF_IN = 1u << 3,		/* peer END_STREAM received */
	STF_EOF_IN_DONE = 1u << 4,	/* ... and passed to the conn after the overflow */
	STF_EOF_OUT = 1u << 5,		/* our END_STREAM handed to nghttp2 */
	STF_ANSWERED = 1u << 6,		/* server: response submitted; client: final response seen */
	STF_ESTABLISHED = 1u << 7,	/* 200 sent / received: data flows */
	STF_DELIVERING = 1u << 8,	/* in stream_deliver (re-entrancy guard) */
	STF_REDELIVER = 1u << 9,	/* kick_read came while delivering */
	STF_FREEING = 1u << 10,		/* free scheduled */
	STF_COUNTED = 1u << 11,		/* counted in sess->nstreams */
	STF_RST_AFTER = 1u << 12,	/* server: RST_STREAM(NO_ERROR) once the answer is out */
	STF_QUEUED = 1u << 13,		/* server: request complete, in sess->rq_* until the
					 * reads of this wake-up are done */
	STF_UNANSWERED = 1u << 14,	/* server: counted in sess->unanswered */
	STF_HELD = 1u << 15,		/* server: held by the agent, in owner->held_* */
};

struct ovf_chunk {
	struct ovf_chunk *next;
	size_t off, len;
	uint8_t data[];
};

struct hbone_stream {
	struct conn_end base;
	struct hbone_sess *s;		/* holds a reference */
	struct hbone_stream *prev, *next;
	int32_t id;
	unsigned flags;
	uint64_t opened_ms;
	struct hbone_stream *rq_next;		/* server: dispatch queue */
	struct hbone_stream *held_prev, *held_next;	/* server: owner's held list */
	uint64_t held_since_ms;			/* server: first held (0: never) */
	struct ovf_chunk *ovf_head, *ovf_tail;	/* received, not yet taken by the conn */
	size_t ovf_bytes;			/* bounded by the stream window */
	size_t in_conn;		/* written into the conn's buffer, window not yet returned */
	int status;				/* client: response :status */
	char *reason;				/* client: HBONE_REASON_HEADER value */
	struct req_copy *rq;			/* client: the request, until its HEADERS left */
	/* server: request pseudo-headers and forwarded headers */
	char *method, *authority, *scheme, *path, *protocol;
	char *traceparent, *tracestate, *baggage, *forwarded;
};

static const char *const sess_st_names[] = {
	[HBONE_ST_CONNECTING] = "connecting", [HBONE_ST_HANDSHAKE] = "handshake",
	[HBONE_ST_READY] = "ready", [HBONE_ST_DRAINING] = "draining", [HBONE_ST_CLOSED] = "closed",
};

const char *hbone_sess_st_to_str(enum hbone_sess_st st)
{
	return (unsigned)st < ARRAY_SIZE(sess_st_names) ? sess_st_names[st] : "?";
}

static void sess_pump(struct hbone_sess *s, uint32_t events);
static void sess_close(struct hbone_sess *s, int err, const char *reason);
static void sess_mark(struct hbone_sess *s);
static void stream_maybe_free(struct hbone_stream *st);
static void stream_deliver(struct hbone_stream *st);
static void stream_answered(struct hbone_stream *st);
static void sess_set_reason(struct hbone_sess *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void server_unqueue(struct hbone_sess *s, struct hbone_stream *st);
static bool client_resend(struct hbone_sess *s, struct hbone_stream *st);
static bool server_more_waiting(struct hbone_sess *s);
static void server_linger(struct hbone_sess *s);
static void server_request(struct hbone_sess *s, struct hbone_stream *st);
static void server_linger_read(struct hbone_sess *s);
static const struct conn_end_ops hbone_end_ops;

static void rate_default(struct hbone_rate *r, uint32_t burst, uint32_t per_s)
{
	if (!r->burst)
		r->burst = burst;
	if (!r->per_s)
		r->per_s = per_s;
}

static void limits_defaults(struct hbone_limits *l)
{
	static const struct hbone_limits d = HBONE_DEFAULT_LIMITS;
	rate_default(&l->resets, d.resets.burst, d.resets.per_s);
	rate_default(&l->settings, d.settings.burst, d.settings.per_s);
	rate_default(&l->pings, d.pings.burst, d.pings.per_s);
	rate_default(&l->empty_frames, d.empty_frames.burst, d.empty_frames.per_s);
	if (!l->max_continuations)
		l->max_continuations = d.max_continuations;
	if (!l->max_pending_streams)
		l->max_pending_streams = d.max_pending_streams;
}

static void opts_defaults(struct hbone_opts *o, bool server)
{
	if (!o->max_streams)
		o->max_streams = server ? 1000 : 100;
	if (!o->idle_timeout_ms)
		o->idle_timeout_ms = 60000;
	if (!o->ping_interval_ms)
		o->ping_interval_ms = 10000;
	if (!o->ping_timeout_ms)
		o->ping_timeout_ms = o->ping_interval_ms;
	if (!o->window)
		o->window = 4u << 20;
	if (o->window > (1u << 31) - 1)
		o->window = (1u << 31) - 1;
	if (!o->conn_window)
		o->conn_window = MAX(16u << 20, o->window);
	if (o->conn_window > (1u << 31) - 1)
		o->conn_window = (1u << 31) - 1;
	if (!o->connect_timeout_ms)
		o->connect_timeout_ms = 10000;
	if (!o->max_sessions)
		o->max_sessions = 4096;
	limits_defaults(&o->limits);
}

static char *xstrdup_n(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);
	if (s) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

/* ----------------------------------------------------- session refcount ---- */

static void sess_ref(struct hbone_sess *s)
{
	s->refs++;
}

static void sess_free_task(struct loop *l, void *arg)
{
	struct hbone_sess *s = arg;
	(void)l;
	nghttp2_session_del(s->ng);
	tls_conn_free(s->tls);
	if (s->fd >= 0)
		close(s->fd);
	free(s->wbuf);
	free(s);
}

/* The last reference frees in the before-sleep step: callers' stacks may still hold s. */
static void sess_unref(struct hbone_sess *s)
{
	if (--s->refs > 0)
		return;
	if (loop_defer(s->loop, sess_free_task, s))
		pr_warn_rl("hbone: cannot defer a session free: leaking it");
}

static void owner_unlink(struct hbone_sess *s)
{
	struct hbone_owner *o = s->owner;
	if (!o)
		return;
	if (s->prev)
		s->prev->next = s->next;
	else
		o->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->prev = s->next = NULL;
	o->nsessions--;
	s->owner = NULL;
	sess_unref(s);
}

static void owner_link(struct hbone_owner *o, struct hbone_sess *s)
{
	s->owner = o;
	s->next = o->sessions;
	if (o->sessions)
		o->sessions->prev = s;
	o->sessions = s;
	o->nsessions++;
	o->conns_total++;
	s->refs++;
}

/* --------------------------------------------------------------- streams ---- */

static bool stream_has_conn(const struct hbone_stream *st)
{
	return st->base.conn && !(st->flags & STF_RELEASED);
}

static enum conn_side stream_side(const struct hbone_stream *st)
{
	return st->s->server ? CONN_DOWN : CONN_UP;
}

/* Flow control (RFC 9113 §5.2, §6.9) is manual (NGHTTP2_OPT_NO_AUTO_WINDOW_UPDATE): window
 * goes back to the peer, stream and connection alike, only for bytes that left us, i.e. that
 * the conn passed on to the local socket (or the next hop). So a slow reader holds back the
 * connection window too, and all a session buffers (overflow plus conn buffers) stays within
 * its connection window. nghttp2 sends the WINDOW_UPDATEs once half a window is consumed. */
static void stream_consume(struct hbone_stream *st, size_t n)
{
	struct hbone_sess *s = st->s;

	if (!n)
		return;
	s->unconsumed -= n;
	/* After the stream closed this still returns the connection's share (nghttp2 counts
	 * the connection first, then skips a stream it no longer knows). */
	if (s->ng && st->id > 0)
		nghttp2_session_consume(s->ng, st->id, n);
}

/* Returns window for what the conn has written out of the bytes we gave it (all of them
 * once the conn let go of the stream). */
static void stream_credit(struct hbone_stream *st)
{
	size_t left;

	if (!st->in_conn)
		return;
	if (!stream_has_conn(st)) {
		stream_consume(st, st->in_conn);
		st->in_conn = 0;
		return;
	}
	/* Only this end fills its side's buffer: what is still pending there is ours. */
	left = conn_out_pending(st->base.conn, (enum conn_side)!stream_side(st));
	if (left >= st->in_conn)
		return;
	stream_consume(st, st->in_conn - left);
	st->in_conn = left;
}

/* The conn is gone (or never came): drops the overflow and gives back all the window the
 * stream still holds (the peer may still be owed it: its RST may not have gone yet). */
static void ovf_clear(struct hbone_stream *st)
{
	struct hbone_sess *s = st->s;
	while (st->ovf_head) {
		struct ovf_chunk *k = st->ovf_head;
		st->ovf_head = k->next;
		stream_consume(st, k->len - k->off);
		free(k);
	}
	st->ovf_tail = NULL;
	s->buffered -= st->ovf_bytes;
	st->ovf_bytes = 0;
	stream_consume(st, st->in_conn);
	st->in_conn = 0;
}

static struct hbone_stream *stream_new(struct hbone_sess *s)
{
	struct hbone_stream *st = calloc(1, sizeof(*st));
	if (!st)
		return NULL;
	st->base.ops = &hbone_end_ops;
	st->s = s;
	sess_ref(s);
	st->next = s->streams;
	if (s->streams)
		s->streams->prev = st;
	s->streams = st;
	st->flags |= STF_COUNTED;
	s->nstreams++;
	s->streams_total++;
	if (s->owner)
		s->owner->streams_total++;
	loop_timer_cancel(s->loop, &s->idle_timer);
	s->idle_since_ms = 0;
	return st;
}

static void req_copy_free(struct req_copy *rq);

static void stream_free_task(struct loop *l, void *arg)
{
	struct hbone_stream *st = arg;
	struct hbone_sess *s = st->s;
	(void)l;
	req_copy_free(st->rq);
	if (st->flags & STF_QUEUED)
		server_unqueue(s, st);
	ovf_clear(st);
	if (st->prev)
		st->prev->next = st->next;
	else
		s->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	free(st->reason);
	free(st->method);
	free(st->authority);
	free(st->scheme);
	free(st->path);
	free(st->protocol);
	free(st->traceparent);
	free(st->tracestate);
	free(st->baggage);
	free(st->forwarded);
	free(st);
	sess_unref(s);
}

/* A stream is finished for the session once nghttp2 and the conn are both done with it. */
static void stream_finish_count(struct hbone_stream *st)
{
	struct hbone_sess *s = st->s;
	stream_answered(st);
	if (!(st->flags & STF_COUNTED))
		return;
	st->flags &= ~STF_COUNTED;
	s->nstreams--;
	if (!s->nstreams && !s->server && s->st < HBONE_ST_CLOSED) {
		s->idle_since_ms = loop_now_ms(s->loop);
		if (s->owner && loop_timer_arm(s->loop, &s->idle_timer,
					       s->owner->opts.idle_timeout_ms))
			pr_warn_rl("hbone: no memory for the idle timer");
	}
}

static void stream_maybe_free(struct hbone_stream *st)
{
	if ((st->flags & (STF_RELEASED | STF_CLOSED)) != (STF_RELEASED | STF_CLOSED) ||
	    (st->flags & STF_FREEING))
		return;
	st->flags |= STF_FREEING;
	stream_finish_count(st);
	if (loop_defer(st->s->loop, stream_free_task, st))
		pr_warn_rl("hbone: cannot defer a stream free: leaking it");
}

static struct hbone_stream *sess_find_stream(struct hbone_sess *s, int32_t id)
{
	for (struct hbone_stream *st = s->streams; st; st = st->next)
		if (st->id == id && !(st->flags & STF_CLOSED))
			return st;
	return NULL;
}

/* Reset flag for a stream failing on its own side. */
static const char *stream_fail_flag(const struct hbone_stream *st)
{
	if (st->s->server)
		return CONN_FLAG_DOWNSTREAM_RESET;
	return (st->flags & STF_ESTABLISHED) ? CONN_FLAG_UPSTREAM_RESET
					      : CONN_FLAG_UPSTREAM_CONNECT_FAILURE;
}

static void stream_abort(struct hbone_stream *st, int err, const char *flag, const char *reason)
{
	if (stream_has_conn(st))
		conn_abort(st->base.conn, stream_side(st), err, flag ? flag : stream_fail_flag(st),
			   reason);
}

/* Returns window for what the conn wrote out, moves overflow into the conn, then passes a
 * peer END_STREAM on once nothing is left. Re-entrant calls (the conn kicking our read side
 * while we write into it) just ask the outer call to loop again. */
static void stream_deliver(struct hbone_stream *st)
{
	struct hbone_sess *s = st->s;

	if (st->flags & STF_DELIVERING) {
		st->flags |= STF_REDELIVER;
		return;
	}
	st->flags |= STF_DELIVERING;
	stream_credit(st);
	do {
		st->flags &= ~STF_REDELIVER;
		while (st->ovf_head && stream_has_conn(st)) {
			struct ovf_chunk *k = st->ovf_head;
			size_t n = conn_in_write(st->base.conn, stream_side(st), k->data + k->off,
						 k->len - k->off);
			if (!n)
				break;
			k->off += n;
			st->ovf_bytes -= n;
			s->buffered -= n;
			st->in_conn += n;
			if (k->off == k->len) {
				st->ovf_head = k->next;
				if (!st->ovf_head)
					st->ovf_tail = NULL;
				free(k);
			}
		}
	} while ((st->flags & STF_REDELIVER) && st->ovf_head && stream_has_conn(st));
	st->flags &= ~STF_DELIVERING;
	stream_credit(st);	/* a TCP end writes through at once */
	if (!st->ovf_head && (st->flags & (STF_EOF_IN | STF_EOF_IN_DONE)) == STF_EOF_IN &&
	    stream_has_conn(st)) {
		st->flags |= STF_EOF_IN_DONE;
		conn_in_eof(st->base.conn, stream_side(st));
	}
	sess_mark(s);	/* WINDOW_UPDATEs */
}

/* ---------------------------------------------------------- conn_end ops ---- */

static int stream_submit_response(struct hbone_stream *st, int status, const char *reason);

static void hbone_kick_write(struct conn_end *e)
{
	struct hbone_stream *st = container_of(e, struct hbone_stream, base);
	struct hbone_sess *s = st->s;

	if (!stream_has_conn(st) || (st->flags & STF_CLOSED))
		return;
	/* Server: the conn reached its upstream, so the tunnel is up (RFC 9113 §8.5). */
	if (s->server && !(st->flags & STF_ANSWERED) &&
	    conn_state(st->base.conn) != CONN_ST_CONNECTING)
		stream_submit_response(st, 200, NULL);
	if ((st->flags & STF_DEFERRED) && (st->flags & STF_ESTABLISHED)) {
		st->flags &= ~STF_DEFERRED;
		nghttp2_session_resume_data(s->ng, st->id);
	}
	sess_mark(s);
}

static void hbone_kick_read(struct conn_end *e)
{
	struct hbone_stream *st = container_of(e, struct hbone_stream, base);
	stream_deliver(st);
}

static int errno_to_status(int err)
{
	switch (-err) {
	case EACCES:
	case EPERM:
		return 403;
	case EINVAL:
		return 400;
	default:
		return 503;
	}
}

static void hbone_release(struct conn_end *e, int err)
{
	struct hbone_stream *st = container_of(e, struct hbone_stream, base);
	struct hbone_sess *s = st->s;

	if (st->flags & STF_RELEASED)
		return;
	st->flags |= STF_RELEASED;
	ovf_clear(st);
	if (!(st->flags & STF_CLOSED) && s->ng && s->st < HBONE_ST_CLOSED) {
		if (s->server && !(st->flags & STF_ANSWERED)) {
			/* The upstream never came up: answer with why instead of a bare reset. */
			char why[128];
			/* conn.c hands the end that did not fail -ECONNRESET, whatever the cause. */
			if (!err || err == -ECONNRESET)
				snprintf(why, sizeof(why), "upstream connect failed");
			else
				snprintf(why, sizeof(why), "upstream: %s", strerror(-err));
			stream_submit_response(st, errno_to_status(err), why);
		} else if (!(st->flags & STF_RST_AFTER) &&
			   (err || !(st->flags & STF_EOF_OUT) || !(st->flags & STF_EOF_IN))) {
			/* (STF_RST_AFTER: a refusal is queued; its RST follows it out.) */
			/* RFC 9113 §8.5: a TCP error is CONNECT_ERROR; other aborts cancel. */
			uint32_t code = err == -ECONNRESET || err == -EPIPE ? NGHTTP2_CONNECT_ERROR
									   : NGHTTP2_CANCEL;
			if (st->id > 0)
				nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, code);
		}
		sess_mark(s);
	} else if (s->st == HBONE_ST_CLOSED) {
		st->flags |= STF_CLOSED;
	}
	stream_maybe_free(st);
}

static const struct conn_end_ops hbone_end_ops = {
	.name = "hbone",
	.kick_write = hbone_kick_write,
	.kick_read = hbone_kick_read,
	.release = hbone_release,
};

/* Data provider: conn buffer -> DATA frames. DEFERRED while empty (resumed by kick_write);
 * END_STREAM once the other side's EOF has been written through. */
static ssize_t data_read_cb(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
			    uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	struct hbone_stream *st = source->ptr;
	size_t done = 0;
	(void)ng;
	(void)id;
	(void)user_data;

	if (!stream_has_conn(st) || !(st->flags & STF_ESTABLISHED)) {
		st->flags |= STF_DEFERRED;
		return NGHTTP2_ERR_DEFERRED;
	}
	while (done < length && stream_has_conn(st)) {
		const uint8_t *p;
		size_t n = conn_out_peek(st->base.conn, stream_side(st), &p);
		if (!n)
			break;
		n = MIN(n, length - done);
		memcpy(buf + done, p, n);
		done += n;
		conn_out_consume(st->base.conn, stream_side(st), n);
	}
	if (stream_has_conn(st) && conn_out_eof(st->base.conn, stream_side(st))) {
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
		st->flags |= STF_EOF_OUT;
		conn_out_done(st->base.conn, stream_side(st));	/* may release st */
		return (ssize_t)done;
	}
	if (!done) {
		st->flags |= STF_DEFERRED;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)done;
}

/* ------------------------------------------------------- server answers ---- */

static int stream_submit_response(struct hbone_stream *st, int status, const char *reason)
{
	struct hbone_sess *s = st->s;
	char code[8];
	nghttp2_nv nv[2];
	size_t n = 0;
	nghttp2_data_provider dp = { .source.ptr = st, .read_callback = data_read_cb };
	int rv;

	if (st->flags & STF_ANSWERED)
		return -EALREADY;
	st->flags |= STF_ANSWERED;
	stream_answered(st);
	if ((st->flags & STF_CLOSED) || !s->ng || s->st >= HBONE_ST_CLOSED)
		return -ENOTCONN;
	snprintf(code, sizeof(code), "%d", status);
	nv[n++] = (nghttp2_nv){ (uint8_t *)":status", (uint8_t *)code, 7, strlen(code),
				NGHTTP2_NV_FLAG_NONE };
	if (status != 200 && reason && *reason)
		nv[n++] = (nghttp2_nv){ (uint8_t *)HBONE_REASON_HEADER, (uint8_t *)reason,
					strlen(HBONE_REASON_HEADER), strlen(reason),
					NGHTTP2_NV_FLAG_NONE };
	if (status == 200) {
		st->flags |= STF_ESTABLISHED;
		rv = nghttp2_submit_response(s->ng, st->id, nv, n, &dp);
	} else {
		rv = nghttp2_submit_response(s->ng, st->id, nv, n, NULL);
		/* RFC 9113 §8.1: after a complete response the server may stop the request
		 * body with RST_STREAM(NO_ERROR); submitted once the response is out, since a
		 * queued RST would cancel it (on_frame_send_cb). */
		st->flags |= STF_RST_AFTER;
	}
	sess_mark(s);
	if (rv) {
		pr_warn_rl("hbone: stream %d: cannot answer %d: %s", st->id, status,
			   nghttp2_strerror(rv));
		return -ENOMEM;
	}
	return 0;
}

int hbone_stream_respond(struct conn_end *end, int status, const char *reason)
{
	struct hbone_stream *st;
	int rv;

	if (!end || end->ops != &hbone_end_ops)
		return -EINVAL;
	st = container_of(end, struct hbone_stream, base);
	if (!st->s->server || (status == 200 && !stream_has_conn(st)))
		return -EINVAL;
	if (st->flags & STF_ANSWERED)
		return -EALREADY;
	rv = stream_submit_response(st, status, reason);
	if (status != 200 && stream_has_conn(st))
		conn_abort(st->base.conn, CONN_DOWN, -ECONNREFUSED,
			   status == 401 || status == 403 ? CONN_FLAG_DENIED
							  : CONN_FLAG_UPSTREAM_CONNECT_FAILURE,
			   reason ? reason : "refused");
	return rv;
}

/* ------------------------------------------------ server: held streams ---- */
/* A CONNECT the agent cannot serve yet (its target is not in the agent's model yet) waits
 * unanswered on the owner's list until hbone_server_retry_held dispatches it again. A held
 * stream the peer resets, or whose connection goes, leaves the list at once: the agent never
 * holds a pointer to it. */

static void held_link(struct hbone_owner *o, struct hbone_stream *st)
{
	if (!st->held_since_ms)
		st->held_since_ms = loop_now_ms(st->s->loop) ? loop_now_ms(st->s->loop) : 1;
	st->flags |= STF_HELD;
	st->held_next = NULL;
	st->held_prev = o->held_tail;
	if (o->held_tail)
		o->held_tail->held_next = st;
	else
		o->held_head = st;
	o->held_tail = st;
	o->nheld++;
}

static void held_unlink(struct hbone_stream *st)
{
	struct hbone_owner *o = st->s->owner;

	if (!(st->flags & STF_HELD))
		return;
	st->flags &= ~STF_HELD;
	if (o) {
		if (st->held_prev)
			st->held_prev->held_next = st->held_next;
		else
			o->held_head = st->held_next;
		if (st->held_next)
			st->held_next->held_prev = st->held_prev;
		else
			o->held_tail = st->held_prev;
		o->nheld--;
	}
	st->held_prev = st->held_next = NULL;
}

/* The request HEADERS of an inbound stream are complete: check it is a CONNECT we serve,
 * then let the agent decide. */
static void server_request(struct hbone_sess *s, struct hbone_stream *st)
{
	struct hbone_server *srv = s->owner ? container_of(s->owner, struct hbone_server, o) : NULL;
	struct hbone_inbound req;
	int rc;

	memset(&req, 0, sizeof(req));
	if (!st->method || strcmp(st->method, "CONNECT") != 0) {
		stream_submit_response(st, 405, "only CONNECT is served on this port");
		goto done;
	}
	/* RFC 9113 §8.5: CONNECT carries :authority only (no :scheme, :path, :protocol). */
	if (st->scheme || st->path || st->protocol) {
		stream_submit_response(st, 400, "CONNECT must not carry :scheme, :path or :protocol");
		goto done;
	}
	if (!st->authority || sockaddr_parse(st->authority, 0, &req.target) ||
	    sockaddr_port(&req.target) == 0) {
		stream_submit_response(st, 400, "bad :authority (want IP:port)");
		goto done;
	}
	/* While draining, requests before the final GOAWAY are still served (§6.8). */
	if (!srv) {
		stream_submit_response(st, 503, "shutting down");
		goto done;
	}
	req.end = &st->base;
	req.authority = st->authority;
	req.peer_id = s->has_peer_id ? &s->peer_id : NULL;
	req.local_id = s->has_local_id ? &s->local_id : NULL;
	req.peer_addr = s->peer_addr;
	req.local_addr = s->local_addr;
	req.pod_addressed = s->pod_addressed;
	req.traceparent = st->traceparent;
	req.tracestate = st->tracestate;
	req.baggage = st->baggage;
	req.forwarded = st->forwarded;
	req.held_ms = st->held_since_ms ? loop_now_ms(s->loop) - st->held_since_ms : 0;
	rc = srv->cbs.on_connect ? srv->cbs.on_connect(srv->cbs.arg, &req) : -ENOSYS;
	if (rc == -EINPROGRESS && !(st->flags & STF_ANSWERED) && !st->base.conn) {
		if (!srv->o.draining) {
			held_link(&srv->o, st);	/* answered later: hbone_server_retry_held */
			return;
		}
		/* Nothing will answer it later: the agent exits once drained. The peer may try
		 * again elsewhere (ztunnel too answers 503 a CONNECT it cannot serve). */
		stream_submit_response(st, 503, "shutting down");
		goto done;
	}
	if (!(st->flags & STF_ANSWERED) && (rc < 0 || !st->base.conn)) {
		char why[96];
		snprintf(why, sizeof(why), "not served: %s", strerror(rc < 0 ? -rc : ENOSYS));
		stream_submit_response(st, 503, why);
	}
done:
	if (!st->base.conn)
		st->flags |= STF_RELEASED;	/* no conn will ever own it */
	else if (st->flags & STF_EOF_IN || st->ovf_head)
		stream_deliver(st);	/* early bytes, END_STREAM: pass them on */
	stream_maybe_free(st);
}

/* ------------------------------------------------- server: abuse limits ---- */
/* A peer with a valid mesh certificate may still attack 15008 (RFC 9113 §10.5): streams reset
 * as soon as they open (CVE-2023-44487), floods of frames that cost us work and it nothing
 * (CVE-2019-9512, -9515, -9518, CVE-2024-28182). Each kind has a token bucket per connection
 * (struct hbone_limits); an empty bucket cuts the connection off with GOAWAY
 * (ENHANCE_YOUR_CALM), counted per reason and logged (rate-limited). Complete requests are
 * queued and dispatched once the bytes of a wake-up are parsed, so a stream reset in the same
 * read never reaches on_connect: no upstream is dialled for it. */

static const char *const abuse_names[HBONE_ABUSE_N] = {
	[HBONE_ABUSE_RAPID_RESET] = "rapid_reset",
	[HBONE_ABUSE_SETTINGS_FLOOD] = "settings_flood",
	[HBONE_ABUSE_PING_FLOOD] = "ping_flood",
	[HBONE_ABUSE_EMPTY_FRAMES] = "empty_frames",
	[HBONE_ABUSE_CONTINUATION_FLOOD] = "continuation_flood",
};

const char *hbone_abuse_to_str(enum hbone_abuse a)
{
	return (unsigned)a < HBONE_ABUSE_N ? abuse_names[a] : "?";
}

/* Takes one token; false when the bucket is empty. */
static bool rl_take(struct rl_bucket *b, const struct hbone_rate *r, uint64_t now)
{
	if (!b->at_ms) {
		b->tokens = r->burst;
		b->at_ms = now ? now : 1;
	} else if (now > b->at_ms) {
		b->tokens = MIN((double)r->burst,
				b->tokens + (double)(now - b->at_ms) * r->per_s / 1000.0);
		b->at_ms = now;
	}
	if (b->tokens < 1)
		return false;
	b->tokens -= 1;
	return true;
}

/* Counts and logs a cut-off (the caller closes or terminates the session). */
static void server_abuse_count(struct hbone_sess *s, enum hbone_abuse why, const char *detail)
{
	char peer[ADDR_STR_LEN], idb[SPIFFE_ID_STR_MAX];

	if (s->owner)
		s->owner->cut_off[why]++;
	pr_warn_rl("hbone: inbound connection from %s (%s) cut off: %s: %s",
		   sockaddr_str(&s->peer_addr, peer, sizeof(peer)),
		   s->has_peer_id ? spiffe_id_str(&s->peer_id, idb) : "no identity",
		   hbone_abuse_to_str(why), detail);
}

/* GOAWAY(ENHANCE_YOUR_CALM) now; nothing more is read from the peer (nghttp2 ignores new
 * streams once the session terminates), and it has ABUSE_LINGER_MS to take the GOAWAY. */
static void server_cut_off(struct hbone_sess *s, enum hbone_abuse why, const char *detail)
{
	if ((s->flags & SF_ABUSE) || s->st == HBONE_ST_CLOSED)
		return;
	s->flags |= SF_ABUSE;
	server_abuse_count(s, why, detail);
	sess_set_reason(s, "cut off: %s (%s)", hbone_abuse_to_str(why), detail);
	s->st = HBONE_ST_DRAINING;
	nghttp2_session_terminate_session(s->ng, NGHTTP2_ENHANCE_YOUR_CALM);
	if (loop_timer_arm(s->loop, &s->drain_timer, ABUSE_LINGER_MS)) {
		sess_close(s, -ENOMEM, s->reason);
		return;
	}
	sess_mark(s);
}

static void server_check_rate(struct hbone_sess *s, enum hbone_abuse why)
{
	const struct hbone_limits *lim;
	const struct hbone_rate *r;
	struct rl_bucket *b;
	char detail[96];

	if (!s->owner)
		return;
	lim = &s->owner->opts.limits;
	switch (why) {
	case HBONE_ABUSE_SETTINGS_FLOOD: r = &lim->settings, b = &s->rl_settings; break;
	case HBONE_ABUSE_PING_FLOOD: r = &lim->pings, b = &s->rl_pings; break;
	case HBONE_ABUSE_EMPTY_FRAMES: r = &lim->empty_frames, b = &s->rl_empty; break;
	default: r = &lim->resets, b = &s->rl_resets; break;
	}
	if (rl_take(b, r, loop_now_ms(s->loop)))
		return;
	snprintf(detail, sizeof(detail), "more than %u at once or %u/s", r->burst, r->per_s);
	server_cut_off(s, why, detail);
}

/* DATA with no payload (padding aside) and no END_STREAM carries nothing but work. */
static void server_check_data(struct hbone_sess *s, const nghttp2_frame *frame)
{
	if (frame->hd.length <= frame->data.padlen && !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		server_check_rate(s, HBONE_ABUSE_EMPTY_FRAMES);
}

/* RST_STREAM from the peer (st NULL: a stream we no longer track, e.g. one we refused).
 * Premature: before its tunnel was up, or within HBONE_PREMATURE_MS of opening. */
static void server_peer_reset(struct hbone_sess *s, const struct hbone_stream *st)
{
	uint64_t now = loop_now_ms(s->loop);

	if (st && (st->flags & STF_ESTABLISHED) && now - st->opened_ms >= HBONE_PREMATURE_MS)
		return;
	s->premature_resets++;
	if (!s->owner || rl_take(&s->rl_resets, &s->owner->opts.limits.resets, now))
		return;
	char detail[128];
	snprintf(detail, sizeof(detail), "%llu streams reset before they were served (more than %u at once or %u/s)",
		 (unsigned long long)s->premature_resets, s->owner->opts.limits.resets.burst,
		 s->owner->opts.limits.resets.per_s);
	server_cut_off(s, HBONE_ABUSE_RAPID_RESET, detail);
}

/* Requests wait for dispatch and the socket holds more bytes (a RST_STREAM for one of them,
 * perhaps, in the next TLS record): read on before dialling anything. */
static bool server_more_waiting(struct hbone_sess *s)
{
	int n = 0;
	return s->rq_head && ioctl(s->fd, FIONREAD, &n) == 0 && n > 0;
}

/* A cut-off peer has its GOAWAY: close_notify, shut our write side and discard its input
 * until it closes or ABUSE_LINGER_MS pass (drain_timer). Closing at once, with its frames
 * still unread, would send a TCP RST that can destroy the GOAWAY before it is read. */
static void server_linger(struct hbone_sess *s)
{
	if (!(s->flags & SF_LINGER)) {
		s->flags |= SF_LINGER;
		tls_conn_shutdown(s->tls);
		shutdown(s->fd, SHUT_WR);
	}
	if (loop_io_set(s->loop, &s->io, EPOLLIN))
		sess_close(s, -ENOMEM, "epoll registration failed");
}

static void server_linger_read(struct hbone_sess *s)
{
	uint8_t buf[16384];

	for (int i = 0; i < READ_BUDGET; i++) {
		ssize_t r = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (r > 0)
			continue;
		if (r == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		sess_close(s, -ECONNABORTED, s->reason);	/* EOF or error: done */
		return;
	}
}

/* Streams opened faster than they are served: past max_pending_streams unanswered ones, a new
 * stream is refused (RFC 9113 §8.7: REFUSED_STREAM, safe to retry). true when refused. */
static bool server_refuse_stream(struct hbone_sess *s, int32_t id)
{
	char peer[ADDR_STR_LEN];

	if (!s->owner || s->unanswered < s->owner->opts.limits.max_pending_streams)
		return false;
	s->owner->streams_refused_total++;
	pr_warn_rl("hbone: inbound connection from %s: %u streams not served yet "
		   "(hbone.limits.max_pending_streams): refusing stream %d",
		   sockaddr_str(&s->peer_addr, peer, sizeof(peer)), s->unanswered, id);
	nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
	sess_mark(s);
	return true;
}

/* The stream got its answer, or ended without one: no longer pending. */
static void stream_answered(struct hbone_stream *st)
{
	if (!(st->flags & STF_UNANSWERED))
		return;
	st->flags &= ~STF_UNANSWERED;
	st->s->unanswered--;
}

static void server_queue(struct hbone_sess *s, struct hbone_stream *st)
{
	if (st->flags & STF_QUEUED)
		return;
	st->flags |= STF_QUEUED;
	st->rq_next = NULL;
	if (s->rq_tail)
		s->rq_tail->rq_next = st;
	else
		s->rq_head = st;
	s->rq_tail = st;
}

static void server_unqueue(struct hbone_sess *s, struct hbone_stream *st)
{
	struct hbone_stream **pp = &s->rq_head, *prev = NULL;

	for (; *pp; prev = *pp, pp = &(*pp)->rq_next) {
		if (*pp != st)
			continue;
		*pp = st->rq_next;
		if (s->rq_tail == st)
			s->rq_tail = prev;
		break;
	}
	st->flags &= ~STF_QUEUED;
	st->rq_next = NULL;
}

/* The session is going: queued requests are never dispatched (sess_close resets them); those
 * the peer had reset count as such. */
static void server_queue_drop(struct hbone_sess *s)
{
	while (s->rq_head) {
		if ((s->rq_head->flags & STF_CLOSED) && s->owner)
			s->owner->reset_before_dial_total++;
		server_unqueue(s, s->rq_head);
	}
}

/* After the reads of a wake-up: each queued request whose stream is still open goes to the
 * agent (on_connect), in arrival order; one the peer reset meanwhile is only counted. */
static void server_dispatch(struct hbone_sess *s)
{
	struct hbone_stream *st;

	while ((st = s->rq_head)) {
		server_unqueue(s, st);
		if (s->st == HBONE_ST_CLOSED || (s->flags & SF_ABUSE)) {
			server_queue_drop(s);
			return;
		}
		if (st->flags & STF_CLOSED) {
			if (s->owner)
				s->owner->reset_before_dial_total++;
			continue;
		}
		server_request(s, st);
	}
}

/* ------------------------------------------------------ nghttp2 callbacks ---- */

static ssize_t send_cb(nghttp2_session *ng, const uint8_t *data, size_t len, int flags,
		       void *user_data)
{
	struct hbone_sess *s = user_data;
	(void)ng;
	(void)flags;

	if (s->wlen - s->woff >= WBUF_SOFT)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (s->woff && s->woff == s->wlen)
		s->woff = s->wlen = 0;
	if (s->wlen + len > s->wcap) {
		size_t ncap = MAX(s->wcap ? s->wcap : 16384, s->wlen + len);
		uint8_t *nb;
		if (s->woff) {	/* compact first */
			memmove(s->wbuf, s->wbuf + s->woff, s->wlen - s->woff);
			s->wlen -= s->woff;
			s->woff = 0;
		}
		if (s->wlen + len > s->wcap) {
			ncap = MAX(ncap, s->wlen + len);
			if (!(nb = realloc(s->wbuf, ncap)))
				return NGHTTP2_ERR_CALLBACK_FAILURE;
			s->wbuf = nb;
			s->wcap = ncap;
		}
	}
	memcpy(s->wbuf + s->wlen, data, len);
	s->wlen += len;
	return (ssize_t)len;
}

static int on_begin_headers_cb(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
	struct hbone_sess *s = user_data;
	struct hbone_stream *st;

	if (!s->server || frame->hd.type != NGHTTP2_HEADERS ||
	    frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (server_refuse_stream(s, frame->hd.stream_id))
		return 0;	/* no stream object: its headers are ignored */
	if (!(st = stream_new(s)))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;	/* resets this stream */
	st->id = frame->hd.stream_id;
	st->opened_ms = loop_now_ms(s->loop);
	st->flags |= STF_UNANSWERED;
	s->unanswered++;
	nghttp2_session_set_stream_user_data(ng, st->id, st);
	return 0;
}

static int set_hdr(char **dst, const uint8_t *v, size_t vlen)
{
	if (*dst)
		return 0;	/* first one wins; nghttp2 already refuses duplicate pseudo-headers */
	*dst = xstrdup_n(v, vlen);
	return *dst ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int on_header_cb(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
			size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
			void *user_data)
{
	struct hbone_sess *s = user_data;
	struct hbone_stream *st;
	(void)flags;

	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
	if (!st)
		return 0;
#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, namelen) == 0)
	if (s->server) {
		if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
			return 0;
		if (IS(":method"))
			return set_hdr(&st->method, value, valuelen);
		if (IS(":authority"))
			return set_hdr(&st->authority, value, valuelen);
		if (IS(":scheme"))
			return set_hdr(&st->scheme, value, valuelen);
		if (IS(":path"))
			return set_hdr(&st->path, value, valuelen);
		if (IS(":protocol"))
			return set_hdr(&st->protocol, value, valuelen);
		if (IS("traceparent"))
			return set_hdr(&st->traceparent, value, valuelen);
		if (IS("tracestate"))
			return set_hdr(&st->tracestate, value, valuelen);
		if (IS("baggage"))
			return set_hdr(&st->baggage, value, valuelen);
		if (IS("forwarded"))
			return set_hdr(&st->forwarded, value, valuelen);
		return 0;
	}
	if (IS(":status")) {
		st->status = 0;
		for (size_t i = 0; i < valuelen && i < 3; i++)
			st->status = st->status * 10 + (value[i] - '0');
	} else if (IS(HBONE_REASON_HEADER)) {
		free(st->reason);
		st->reason = xstrdup_n(value, MIN(valuelen, (size_t)200));
	}
#undef IS
	return 0;
}

static void client_response(struct hbone_sess *s, struct hbone_stream *st)
{
	char peer[ADDR_STR_LEN], why[REASON_MAX + 64];
	int err;

	if (st->status >= 100 && st->status < 200)
		return;	/* interim */
	if (st->flags & STF_ANSWERED)
		return;	/* trailers */
	st->flags |= STF_ANSWERED;
	req_copy_free(st->rq);	/* answered: never sent again */
	st->rq = NULL;
	if (!stream_has_conn(st))
		return;
	if (st->status == 200) {
		st->flags |= STF_ESTABLISHED;
		conn_established(st->base.conn);
		return;
	}
	err = st->status == 401 || st->status == 403 ? -EACCES : -ECONNREFUSED;
	snprintf(why, sizeof(why), "HBONE CONNECT via %s: status %d%s%s",
		 sockaddr_str(&s->peer_addr, peer, sizeof(peer)), st->status,
		 st->reason ? ": " : "", st->reason ? st->reason : "");
	/* 401/403: the destination's agent refused by policy (its reason names the policy). */
	if (err == -EACCES)
		conn_info(st->base.conn)->denied = true;
	conn_abort(st->base.conn, CONN_UP, err,
		   err == -EACCES ? CONN_FLAG_DENIED : CONN_FLAG_UPSTREAM_CONNECT_FAILURE, why);
}

static int on_frame_recv_cb(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
	struct hbone_sess *s = user_data;
	struct hbone_stream *st = NULL;

	if (frame->hd.stream_id)
		st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		if (!st)
			break;
		if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
			st->flags |= STF_EOF_IN;
		if (s->server && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
			server_queue(s, st);	/* dispatched once this read is done */
		else if (!s->server)
			client_response(s, st);
		if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && st->base.conn)
			stream_deliver(st);
		break;
	case NGHTTP2_DATA:
		if (st && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
			st->flags |= STF_EOF_IN;
			stream_deliver(st);
		}
		if (s->server)
			server_check_data(s, frame);
		break;
	case NGHTTP2_PING:
		if (frame->hd.flags & NGHTTP2_FLAG_ACK)
			s->flags &= ~SF_PING_OUT;
		else if (s->server)
			server_check_rate(s, HBONE_ABUSE_PING_FLOOD);
		break;
	case NGHTTP2_SETTINGS:
		if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
			s->flags |= SF_REMOTE_SETTINGS;
			if (s->server)
				server_check_rate(s, HBONE_ABUSE_SETTINGS_FLOOD);
		}
		break;
	case NGHTTP2_RST_STREAM:
		if (s->server)
			server_peer_reset(s, st);
		break;
	case NGHTTP2_GOAWAY:
		s->flags |= SF_GOAWAY_RECV;
		if (s->st == HBONE_ST_READY)
			s->st = HBONE_ST_DRAINING;
		pr_debug("hbone: GOAWAY from peer (last stream %d, %s)",
			 frame->goaway.last_stream_id, nghttp2_http2_strerror(frame->goaway.error_code));
		break;
	default:
		break;
	}
	return 0;
}

/* Received DATA. Window comes back (stream_credit) only once the conn has written the bytes
 * out; what the conn cannot take yet waits in the overflow queue. A slow reader thus stalls
 * its stream at the stream window and, with others, the connection at its window: nothing
 * here grows past that, however many streams there are. */
static int on_data_chunk_recv_cb(nghttp2_session *ng, uint8_t flags, int32_t id,
				 const uint8_t *data, size_t len, void *user_data)
{
	struct hbone_sess *s = user_data;
	struct hbone_stream *st = nghttp2_session_get_stream_user_data(ng, id);
	size_t n = 0;
	(void)flags;

	/* A queued request (not dispatched yet) keeps its early bytes in the overflow. */
	bool queued = st && (st->flags & STF_QUEUED);
	if (!st || (!stream_has_conn(st) && !queued)) {
		nghttp2_session_consume(ng, id, len);	/* nobody will read it */
		return 0;
	}
	s->unconsumed += len;
	bool kicked = false;
	if (!queued && !st->ovf_head && !(st->flags & STF_DELIVERING)) {
		/* The conn may flush its buffer to the socket inside this write and ask for more
		 * (kick_read -> stream_deliver) before the rest below is queued: note it, and
		 * deliver once the rest is in the overflow, or nothing would ask again. */
		st->flags |= STF_DELIVERING;
		n = conn_in_write(st->base.conn, stream_side(st), data, len);
		kicked = st->flags & STF_REDELIVER;
		st->flags &= ~(STF_DELIVERING | STF_REDELIVER);
		st->in_conn += n;
	}
	if (n < len && !stream_has_conn(st) && !queued) {	/* released while writing */
		stream_consume(st, len - n);
	} else if (n < len) {
		struct ovf_chunk *k = malloc(sizeof(*k) + len - n);
		if (!k) {
			stream_consume(st, len - n);
			if (stream_has_conn(st))
				conn_abort(st->base.conn, stream_side(st), -ENOMEM,
					   CONN_FLAG_OVERFLOW, "out of memory");
			else
				nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id,
							  NGHTTP2_INTERNAL_ERROR);
			return 0;
		}
		k->next = NULL;
		k->off = 0;
		k->len = len - n;
		memcpy(k->data, data + n, len - n);
		if (st->ovf_tail)
			st->ovf_tail->next = k;
		else
			st->ovf_head = k;
		st->ovf_tail = k;
		st->ovf_bytes += k->len;
		s->buffered += k->len;
		if (kicked) {
			stream_deliver(st);
			return 0;
		}
	}
	stream_credit(st);
	return 0;
}

static int on_stream_close_cb(nghttp2_session *ng, int32_t id, uint32_t error_code,
			      void *user_data)
{
	struct hbone_sess *s = user_data;
	struct hbone_stream *st = nghttp2_session_get_stream_user_data(ng, id);
	char why[160];

	if (!st)
		return 0;
	/* Refused unprocessed (REFUSED_STREAM, or above a GOAWAY's last stream ID, which nghttp2
	 * reports the same way): safe to send again (RFC 9113 §8.7). */
	if (!s->server && error_code == NGHTTP2_REFUSED_STREAM && client_resend(s, st)) {
		nghttp2_session_set_stream_user_data(ng, id, NULL);
		return 0;
	}
	nghttp2_session_set_stream_user_data(ng, id, NULL);
	st->flags |= STF_CLOSED;
	stream_answered(st);
	if (st->flags & STF_HELD) {	/* the peer gave up waiting: nothing was dialled */
		held_unlink(st);
		if (s->owner)
			s->owner->reset_before_dial_total++;
	}
	if (!st->base.conn)
		st->flags |= STF_RELEASED;	/* reset before its request completed */
	if (stream_has_conn(st)) {
		bool clean = error_code == NGHTTP2_NO_ERROR && (st->flags & STF_EOF_IN) &&
			     (st->flags & STF_EOF_OUT);
		if (!clean) {
			if (error_code == NGHTTP2_NO_ERROR)
				snprintf(why, sizeof(why), "HBONE stream closed by peer before the end");
			else
				snprintf(why, sizeof(why), "HBONE stream reset by peer (%s)",
					 nghttp2_http2_strerror(error_code));
			if (!s->server && error_code == NGHTTP2_REFUSED_STREAM)
				snprintf(why, sizeof(why), "HBONE stream refused by peer (draining)");
			stream_abort(st, error_code == NGHTTP2_NO_ERROR ? -EPIPE : -ECONNRESET,
				     NULL, why);
		}
	}
	stream_maybe_free(st);
	return 0;
}

static int on_frame_send_cb(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
	struct hbone_sess *s = user_data;
	struct hbone_stream *st;

	if (!s->server || frame->hd.type != NGHTTP2_HEADERS ||
	    !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
	if (st && (st->flags & STF_RST_AFTER) &&
	    !nghttp2_session_get_stream_remote_close(ng, st->id))
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
	return 0;
}

static int on_frame_not_send_cb(nghttp2_session *ng, const nghttp2_frame *frame, int lib_error,
				void *user_data)
{
	struct hbone_sess *s = user_data;
	struct hbone_stream *st;
	char why[160];
	(void)ng;

	if (s->server || frame->hd.type != NGHTTP2_HEADERS ||
	    frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	/* A request that never left: refused by GOAWAY, or cancelled before it went. */
	if (!(st = sess_find_stream(s, frame->hd.stream_id)))
		return 0;
	if (lib_error == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED && client_resend(s, st))
		return 0;
	st->flags |= STF_CLOSED;
	snprintf(why, sizeof(why), "HBONE request not sent: %s", nghttp2_strerror(lib_error));
	stream_abort(st, -ECONNREFUSED, CONN_FLAG_UPSTREAM_CONNECT_FAILURE, why);
	stream_maybe_free(st);
	return 0;
}

static nghttp2_session_callbacks *make_callbacks(void)
{
	nghttp2_session_callbacks *cb;
	if (nghttp2_session_callbacks_new(&cb))
		return NULL;
	nghttp2_session_callbacks_set_send_callback(cb, send_cb);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers_cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header_cb);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv_cb);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv_cb);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close_cb);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send_cb);
	nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send_cb);
	return cb;
}

/* -------------------------------------------------------------- sessions ---- */

static struct hbone_sess *sess_new(struct hbone_owner *o, int fd, bool server);
static void sess_io(struct loop *l, struct loop_io *io, uint32_t events);

static int sess_ng_init(struct hbone_sess *s, const struct hbone_opts *o)
{
	nghttp2_session_callbacks *cb = make_callbacks();
	nghttp2_option *opt = NULL;
	nghttp2_settings_entry iv[3];
	size_t n = 0;
	int rv = NGHTTP2_ERR_NOMEM;

	if (!cb || nghttp2_option_new(&opt))
		goto out;
	/* Flow control is ours: window is given back only for bytes the conn has taken. */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	if (s->server)	/* CVE-2024-28182: a header block may not go on forever */
		nghttp2_option_set_max_continuations(opt, o->limits.max_continuations);
	rv = s->server ? nghttp2_session_server_new2(&s->ng, cb, s, opt)
		       : nghttp2_session_client_new2(&s->ng, cb, s, opt);
	if (rv)
		goto out;
	iv[n++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->window };
	if (s->server)
		iv[n++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
						    o->max_streams };
	else
		iv[n++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 };
	rv = nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, n);
	if (!rv)
		rv = nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0,
							   (int32_t)o->conn_window);
out:
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	return rv ? -ENOMEM : 0;
}

static void sess_set_reason(struct hbone_sess *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->reason, sizeof(s->reason), fmt, ap);
	va_end(ap);
}

/* An inbound connection failed before it was up: tell the server's owner (metrics). */
static void sess_refused(struct hbone_sess *s, int err)
{
	struct hbone_server *srv;

	if (!s->server || !s->owner)
		return;
	srv = container_of(s->owner, struct hbone_server, o);
	if (srv->cbs.on_refused)
		srv->cbs.on_refused(srv->cbs.arg, s->pod_addressed, err, s->reason);
}

/* Tears the session down once: every stream still open is aborted (its conn sees a reset, or
 * UF before the response), the socket closes now, memory goes when the last ref drops. */
static void sess_close(struct hbone_sess *s, int err, const char *reason)
{
	char peer[ADDR_STR_LEN], why[REASON_MAX + 96];

	if (s->st == HBONE_ST_CLOSED)
		return;
	sess_ref(s);
	bool was_up = s->st >= HBONE_ST_READY;
	s->st = HBONE_ST_CLOSED;
	if (reason && reason != s->reason)
		snprintf(s->reason, sizeof(s->reason), "%s", reason);
	if (!was_up && err && err != -ECONNABORTED)
		sess_refused(s, err);
	sockaddr_str(&s->peer_addr, peer, sizeof(peer));
	if (err && err != -ECONNABORTED)	/* ECONNABORTED: our own shutdown */
		pr_warn_rl("hbone: %s connection %s %s closed: %s (%s)",
			   s->server ? "inbound" : "outbound", s->server ? "from" : "to", peer,
			   s->reason, strerror(-err));
	else
		pr_debug("hbone: %s connection with %s closed: %s",
			 s->server ? "inbound" : "outbound", peer, s->reason);
	loop_timer_cancel(s->loop, &s->hs_timer);
	loop_timer_cancel(s->loop, &s->ping_timer);
	loop_timer_cancel(s->loop, &s->idle_timer);
	loop_timer_cancel(s->loop, &s->again_timer);
	loop_timer_cancel(s->loop, &s->drain_timer);
	loop_io_del(s->loop, &s->io);
	if (was_up && !err && s->tls)
		tls_conn_shutdown(s->tls);	/* best effort close_notify, never waits */
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
	snprintf(why, sizeof(why), "HBONE connection %s %s: %s", s->server ? "from" : "to", peer,
		 s->reason);
	server_queue_drop(s);
	/* Frees are deferred, so the list stays intact while conns release their ends. */
	for (struct hbone_stream *st = s->streams; st; st = st->next) {
		if (st->flags & STF_CLOSED)
			continue;
		st->flags |= STF_CLOSED;
		held_unlink(st);
		if (!st->base.conn)
			st->flags |= STF_RELEASED;
		stream_abort(st, err ? err : -ECONNRESET, NULL, why);
		stream_maybe_free(st);
	}
	owner_unlink(s);
	sess_unref(s);
}

/* No new streams on s: GOAWAY (RFC 9113 §6.8) with the last stream we processed; open streams
 * finish, and once none is left nghttp2 wants nothing more and sess_update closes it. */
static void sess_goaway(struct hbone_sess *s)
{
	s->st = HBONE_ST_DRAINING;
	nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE,
			      nghttp2_session_get_last_proc_stream_id(s->ng), NGHTTP2_NO_ERROR, NULL,
			      0);
	sess_mark(s);
}

static void sess_established(struct hbone_sess *s)
{
	const struct spiffe_id *pid = tls_conn_peer_id(s->tls);
	struct tls_cert *lc = tls_conn_local_cert(s->tls);
	char peer[ADDR_STR_LEN], idb[SPIFFE_ID_STR_MAX];

	loop_timer_cancel(s->loop, &s->hs_timer);
	s->st = HBONE_ST_READY;
	if (pid) {
		s->peer_id = *pid;
		s->has_peer_id = true;
	}
	if (lc) {
		s->local_id = *tls_cert_id(lc);
		s->has_local_id = true;
	}
	pr_debug("hbone: %s connection %s %s up, peer %s", s->server ? "inbound" : "outbound",
		 s->server ? "from" : "to", sockaddr_str(&s->peer_addr, peer, sizeof(peer)),
		 pid ? spiffe_id_str(pid, idb) : "?");
	if (s->owner && loop_timer_arm(s->loop, &s->ping_timer, s->owner->opts.ping_interval_ms))
		pr_warn_rl("hbone: no memory for the ping timer");
	if ((s->owner && s->owner->draining) || (s->flags & SF_RETIRE))
		sess_goaway(s);
}

static void sess_read(struct hbone_sess *s)
{
	uint8_t buf[RBUF_SIZE];

	for (int i = 0; i < READ_BUDGET; i++) {
		ssize_t r = tls_conn_read(s->tls, buf, sizeof(buf));
		if (r > 0) {
			s->flags &= ~SF_RD_WANT_WRITE;
			s->bytes_recv += (uint64_t)r;
			ssize_t rv = nghttp2_session_mem_recv(s->ng, buf, (size_t)r);
			if (rv < 0) {
				if (rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS && s->server)
					server_abuse_count(s, HBONE_ABUSE_CONTINUATION_FLOOD,
							   "more CONTINUATION frames than allowed");
				sess_set_reason(s, "HTTP/2: %s", nghttp2_strerror((int)rv));
				sess_close(s, -EPROTO, s->reason);
				return;
			}
			if (s->st == HBONE_ST_CLOSED || (s->flags & SF_ABUSE))
				return;
			/* TLS reads ahead into a 64 KiB buffer: with nothing left in it, the socket
			 * gave all it had, and another read would only say EAGAIN (one syscall per
			 * small message). If more came meanwhile, epoll (level-triggered) says so. */
			if (!tls_conn_pending(s->tls) && !server_more_waiting(s))
				return;
			continue;
		}
		if (r == -EAGAIN) {
			if (tls_conn_want(s->tls) & TLS_WANT_WRITE)
				s->flags |= SF_RD_WANT_WRITE;
			else
				s->flags &= ~SF_RD_WANT_WRITE;
			return;
		}
		if (r == 0) {
			s->flags |= SF_PEER_EOF;
			return;
		}
		sess_set_reason(s, "read: %s", *tls_conn_reason(s->tls) ? tls_conn_reason(s->tls)
								   : strerror((int)-r));
		/* A peer dropping a connection that carries no stream is not a failure. */
		sess_close(s, s->nstreams || r != -ECONNRESET ? (int)r : 0, s->reason);
		return;
	}
	/* Budget spent: decrypted bytes epoll will not announce get their own turn. */
	if (tls_conn_pending(s->tls) && loop_timer_arm(s->loop, &s->again_timer, 0))
		pr_warn_rl("hbone: no memory for a timer");
}

/* A TLS write step failed: EAGAIN waits for the socket, anything else closes the session. */
static void sess_write_failed(struct hbone_sess *s, ssize_t w)
{
	if (w == -EAGAIN) {
		s->flags |= SF_WR_BLOCKED;
		if (tls_conn_want(s->tls) & TLS_WANT_READ)
			s->flags |= SF_WR_WANT_READ;
		else
			s->flags &= ~SF_WR_WANT_READ;
		return;
	}
	sess_set_reason(s, "write: %s", *tls_conn_reason(s->tls) ? tls_conn_reason(s->tls)
								 : strerror((int)-w));
	sess_close(s, (int)w, s->reason);
}

/* nghttp2 -> wbuf -> TLS -> socket, until the socket is full or nothing is left. TLS keeps
 * records the socket did not take (tls_conn_unsent); they go first. */
static void sess_flush(struct hbone_sess *s)
{
	int rc;

	if (tls_conn_unsent(s->tls) && (rc = tls_conn_flush(s->tls))) {
		sess_write_failed(s, rc);
		return;
	}
	for (;;) {
		while (s->woff < s->wlen) {
			ssize_t w = tls_conn_write(s->tls, s->wbuf + s->woff, s->wlen - s->woff);
			if (w > 0) {
				s->woff += (size_t)w;
				s->bytes_sent += (uint64_t)w;
				continue;
			}
			sess_write_failed(s, w);
			return;
		}
		s->woff = s->wlen = 0;
		s->flags &= ~(SF_WR_BLOCKED | SF_WR_WANT_READ);
		if (tls_conn_unsent(s->tls))	/* the socket is full: EPOLLOUT, then the rest */
			s->flags |= SF_WR_BLOCKED;
		if (!nghttp2_session_want_write(s->ng))
			return;
		int rv = nghttp2_session_send(s->ng);
		if (rv) {
			sess_set_reason(s, "HTTP/2 send: %s", nghttp2_strerror(rv));
			sess_close(s, -EPROTO, s->reason);
			return;
		}
		if (s->st == HBONE_ST_CLOSED || s->wlen == 0)
			return;
	}
}

/* Interest from what TLS and nghttp2 want; nothing wanted and nothing left to send: close. */
static void sess_update(struct hbone_sess *s)
{
	uint32_t ev = 0;

	switch (s->st) {
	case HBONE_ST_CONNECTING:
		ev = EPOLLOUT;
		break;
	case HBONE_ST_HANDSHAKE: {
		unsigned w = tls_conn_want(s->tls);
		ev = (w & TLS_WANT_WRITE ? EPOLLOUT : 0) | (w & TLS_WANT_READ ? EPOLLIN : 0);
		if (!ev && !(w & TLS_WANT_RETRY))	/* held: hbone_server_retry_held */
			ev = EPOLLIN;
		break;
	}
	case HBONE_ST_READY:
	case HBONE_ST_DRAINING: {
		bool rd = !(s->flags & (SF_PEER_EOF | SF_ABUSE)) && nghttp2_session_want_read(s->ng);
		bool wr = s->woff < s->wlen || tls_conn_unsent(s->tls);
		if ((s->flags & SF_ABUSE) && !wr && !nghttp2_session_want_write(s->ng)) {
			server_linger(s);
			return;
		}
		if (!rd && !wr && !nghttp2_session_want_write(s->ng)) {
			sess_close(s, 0, (s->flags & SF_ABUSE) ? s->reason
				   : (s->flags & SF_PEER_EOF) ? "peer closed" : "finished");
			return;
		}
		if (s->flags & SF_PEER_EOF && s->nstreams) {
			sess_close(s, -ECONNRESET, "peer closed the connection");
			return;
		}
		if (rd)
			ev |= EPOLLIN | (s->flags & SF_RD_WANT_WRITE ? EPOLLOUT : 0);
		if (wr)
			ev |= s->flags & SF_WR_WANT_READ ? EPOLLIN : EPOLLOUT;
		break;
	}
	case HBONE_ST_CLOSED:
		return;
	}
	if (loop_io_set(s->loop, &s->io, ev))
		sess_close(s, -ENOMEM, "epoll registration failed");
}

static void sess_pump(struct hbone_sess *s, uint32_t events)
{
	int rc;

	sess_ref(s);
	if (s->st == HBONE_ST_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (!events)
			goto update;
		if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err) {
			sess_set_reason(s, "connect: %s", strerror(err));
			sess_close(s, -err, s->reason);
			goto out;
		}
		s->st = HBONE_ST_HANDSHAKE;
	}
	if (s->st == HBONE_ST_HANDSHAKE) {
		rc = tls_conn_handshake(s->tls);
		if (rc == -EAGAIN)
			goto update;
		if (rc) {
			sess_set_reason(s, "TLS: %s", *tls_conn_reason(s->tls)
						      ? tls_conn_reason(s->tls) : strerror(-rc));
			sess_close(s, rc, s->reason);
			goto out;
		}
		sess_established(s);
		events |= EPOLLIN;	/* TLS 1.3: frames may sit right behind the Finished */
	}
	if (s->flags & SF_LINGER) {
		server_linger_read(s);
		goto out;
	}
	if (s->st == HBONE_ST_READY || s->st == HBONE_ST_DRAINING) {
		if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ||
		    ((events & EPOLLOUT) && (s->flags & SF_RD_WANT_WRITE))) {
			sess_read(s);
			server_dispatch(s);
		}
		if (s->st != HBONE_ST_CLOSED)
			sess_flush(s);
	}
update:
	if (s->st != HBONE_ST_CLOSED)
		sess_update(s);
out:
	sess_unref(s);
}

static void sess_io(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)l;
	sess_pump(io->arg, events);
}

static void sess_flush_task(struct loop *l, void *arg)
{
	struct hbone_sess *s = arg;
	(void)l;
	s->flags &= ~SF_FLUSH_QUEUED;
	if (s->st != HBONE_ST_CLOSED)
		sess_pump(s, 0);
	sess_unref(s);
}

/* Something was queued on the session (frames, window, resumed data): flush it in the
 * before-sleep step, once, however many streams asked. */
static void sess_mark(struct hbone_sess *s)
{
	if ((s->flags & SF_FLUSH_QUEUED) || s->st == HBONE_ST_CLOSED)
		return;
	if (loop_defer(s->loop, sess_flush_task, s)) {
		pr_warn_rl("hbone: cannot schedule a flush (out of memory)");
		return;
	}
	s->flags |= SF_FLUSH_QUEUED;
	sess_ref(s);
}

static void hs_timeout(struct loop *l, struct loop_timer *t)
{
	struct hbone_sess *s = t->arg;
	(void)l;
	sess_close(s, -ETIMEDOUT, s->st == HBONE_ST_CONNECTING ? "TCP connect timeout"
							      : "TLS handshake timeout");
}

/* PING every interval; a PING with neither an ACK nor any other byte from the peer within
 * the timeout means the peer (or the path) is gone. */
static void ping_fire(struct loop *l, struct loop_timer *t)
{
	struct hbone_sess *s = t->arg;
	const struct hbone_opts *o;
	uint64_t now = loop_now_ms(l);

	if (!s->owner || s->st == HBONE_ST_CLOSED)
		return;
	o = &s->owner->opts;
	if (s->flags & SF_PING_OUT) {
		if (s->bytes_recv == s->bytes_at_ping) {
			sess_close(s, -ETIMEDOUT, "peer not answering pings");
			return;
		}
		s->flags &= ~SF_PING_OUT;	/* it is talking, just slow to ACK */
	} else if (s->ping_sent_ms && now - s->ping_sent_ms < o->ping_interval_ms) {
		loop_timer_arm(l, t, o->ping_interval_ms - (now - s->ping_sent_ms));
		return;
	}
	if (nghttp2_submit_ping(s->ng, NGHTTP2_FLAG_NONE, NULL) == 0) {
		s->flags |= SF_PING_OUT;
		s->bytes_at_ping = s->bytes_recv;
		s->ping_sent_ms = now;
		sess_mark(s);
	}
	loop_timer_arm(l, t, o->ping_timeout_ms);
}

static void idle_fire(struct loop *l, struct loop_timer *t)
{
	struct hbone_sess *s = t->arg;
	(void)l;
	if (s->nstreams || s->st == HBONE_ST_CLOSED)
		return;
	if (s->st != HBONE_ST_READY) {
		sess_close(s, 0, "idle");
		return;
	}
	/* GOAWAY; once it is out nghttp2 wants nothing more and sess_update closes. */
	s->st = HBONE_ST_DRAINING;
	snprintf(s->reason, sizeof(s->reason), "idle");
	nghttp2_session_terminate_session(s->ng, NGHTTP2_NO_ERROR);
	sess_mark(s);
}

static void again_fire(struct loop *l, struct loop_timer *t)
{
	(void)l;
	sess_pump(t->arg, EPOLLIN);
}

static void drain_fire(struct loop *l, struct loop_timer *t)
{
	struct hbone_sess *s = t->arg;
	(void)l;
	if (s->flags & SF_ABUSE)	/* it did not take its GOAWAY in time */
		sess_close(s, -ECONNABORTED, s->reason);
	else if (s->st == HBONE_ST_DRAINING)
		sess_goaway(s);
}

static struct hbone_sess *sess_new(struct hbone_owner *o, int fd, bool server)
{
	struct hbone_sess *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->server = server;
	s->loop = o->loop;
	s->fd = fd;
	s->created_ms = loop_now_ms(o->loop);
	loop_io_init(&s->io, fd, sess_io, s);
	loop_timer_init(&s->hs_timer, hs_timeout, s);
	loop_timer_init(&s->ping_timer, ping_fire, s);
	loop_timer_init(&s->idle_timer, idle_fire, s);
	loop_timer_init(&s->again_timer, again_fire, s);
	loop_timer_init(&s->drain_timer, drain_fire, s);
	return s;
}

/* ---------------------------------------------------------------- client ---- */

static bool addr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	return a->ss_family == b->ss_family && sockaddr_ip_equal(a, b) &&
	       sockaddr_port(a) == sockaddr_port(b);
}

struct hbone_pool *hbone_pool_new(struct loop *l, struct tls_ctx *client_ctx,
				  struct certstore *certs, const struct hbone_opts *opts)
{
	struct hbone_pool *p;

	if (!l || !client_ctx || !certs || tls_ctx_role(client_ctx) != TLS_ROLE_CLIENT) {
		errno = EINVAL;
		return NULL;
	}
	if (!(p = calloc(1, sizeof(*p))))
		return NULL;
	p->o.loop = l;
	p->o.ctx = client_ctx;
	if (opts)
		p->o.opts = *opts;
	opts_defaults(&p->o.opts, false);
	p->certs = certs;
	return p;
}

static void owner_close_all(struct hbone_owner *o, const char *why)
{
	while (o->sessions)
		sess_close(o->sessions, -ECONNABORTED, why);
}

void hbone_pool_free(struct hbone_pool *p)
{
	if (!p)
		return;
	waiters_abort_all(p, -ECONNABORTED, "HBONE pool shut down");
	owner_close_all(&p->o, "HBONE pool shut down");
	free(p);
}

/* The pool key. CONTRACT.md names (source identity, destination node); the destination
 * identity is part of it too, because a server presents one certificate per TLS connection
 * (chosen by SNI): streams to two workloads on one node need two connections. Pod-addressed
 * (no SNI), the address is the destination pod's and the source pod's address is part of it,
 * as ztunnel keys its pool (source and destination identities, destination, source IP). */
static bool sess_matches(const struct hbone_sess *s, const struct hbone_request *req,
			 const struct spiffe_id *sni)
{
	if (!spiffe_id_equal(&s->src, req->source) || !addr_equal(&s->peer_addr, &req->dst) ||
	    s->no_sni != req->no_sni || (!req->no_sni && !spiffe_id_equal(&s->sni, sni)) ||
	    s->has_key_src != (req->key_src != NULL) ||
	    (req->key_src && !sockaddr_ip_equal(&s->key_src, req->key_src)) ||
	    s->nexpect != req->nexpect)
		return false;
	for (size_t i = 0; i < req->nexpect; i++)
		if (!spiffe_id_equal(&s->expect[i], &req->expect[i]))
			return false;
	return true;
}

static uint32_t sess_stream_limit(const struct hbone_sess *s)
{
	uint32_t lim = s->owner->opts.max_streams;
	/* Before the peer's SETTINGS its limit is unknown; nghttp2 queues any excess. */
	if (s->flags & SF_REMOTE_SETTINGS)
		lim = MIN(lim, nghttp2_session_get_remote_settings(
				       s->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS));
	return lim;
}

/* A session opened with an older cert of the source (renewed since, or evicted and
 * re-issued) takes no new stream: it drains, so that no connection outlives its cert (the
 * leaf lives 24 h, renewed at half-life) and the peer sees the current one. Its open streams
 * are never cut. */
static void sess_retire(struct hbone_sess *s)
{
	char peer[ADDR_STR_LEN], idb[SPIFFE_ID_STR_MAX];

	if (s->flags & SF_RETIRE)
		return;
	s->flags |= SF_RETIRE;
	pr_debug("hbone: connection to %s for %s: certificate renewed, draining %u stream(s)",
		 sockaddr_str(&s->peer_addr, peer, sizeof(peer)), spiffe_id_str(&s->src, idb),
		 s->nstreams);
	if (s->st == HBONE_ST_READY)
		sess_goaway(s);	/* else sess_established does, once it is up */
}

/* cert: the source's current cert (borrowed). */
static struct hbone_sess *pool_pick(struct hbone_pool *p, const struct hbone_request *req,
				    const struct spiffe_id *sni, const struct tls_cert *cert)
{
	for (struct hbone_sess *s = p->o.sessions; s; s = s->next) {
		if (s->st > HBONE_ST_READY || (s->flags & SF_RETIRE) || !sess_matches(s, req, sni))
			continue;
		/* The session's tls_conn holds its cert, so the pointer cannot be reused. */
		if (tls_conn_local_cert(s->tls) != cert) {
			sess_retire(s);
			continue;
		}
		if (s->nstreams < sess_stream_limit(s))
			return s;
	}
	return NULL;
}

/* cert: the source's cert (borrowed; the tls_conn takes its own reference). */
static struct hbone_sess *client_sess_new(struct hbone_pool *p, const struct hbone_request *req,
					  const struct spiffe_id *sni, struct tls_cert *cert,
					  int *errp)
{
	struct tls_conn_opts to = { .sni = req->no_sni ? NULL : sni, .expect = req->expect,
				    .nexpect = req->nexpect };
	struct hbone_sess *s = NULL;
	int fd = -1, one = 1, err;
	bool connected = false;

	fd = socket(req->dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		err = -errno;
		goto fail;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (const struct sockaddr *)&req->dst, sockaddr_len(&req->dst)) == 0)
		connected = true;
	else if (errno != EINPROGRESS) {
		err = -errno;
		goto fail;
	}
	if (!(s = sess_new(&p->o, fd, false))) {
		err = -ENOMEM;
		goto fail;
	}
	fd = -1;	/* the session owns it */
	s->src = *req->source;
	s->sni = *sni;
	s->no_sni = req->no_sni;
	if (req->key_src) {
		s->key_src = *req->key_src;
		s->has_key_src = true;
	}
	memcpy(s->expect, req->expect, req->nexpect * sizeof(*req->expect));
	s->nexpect = req->nexpect;
	s->peer_addr = req->dst;
	s->local_id = *req->source;
	s->has_local_id = true;
	to.cert = cert;
	if (!(s->tls = tls_conn_new(p->o.ctx, s->fd, &to))) {
		err = -(errno ? errno : ENOMEM);
		goto fail;
	}
	if ((err = sess_ng_init(s, &p->o.opts)))
		goto fail;
	s->st = connected ? HBONE_ST_HANDSHAKE : HBONE_ST_CONNECTING;
	owner_link(&p->o, s);
	/* Idle from birth: the first stream cancels it, so a session no stream ever used
	 * still goes away. */
	if (loop_timer_arm(s->loop, &s->hs_timer, p->o.opts.connect_timeout_ms) ||
	    loop_timer_arm(s->loop, &s->idle_timer, p->o.opts.idle_timeout_ms)) {
		sess_close(s, -ENOMEM, "no memory for a timer");
		*errp = -ENOMEM;
		return NULL;
	}
	sess_pump(s, connected ? EPOLLOUT : 0);
	if (s->st == HBONE_ST_CLOSED) {
		*errp = -ECONNREFUSED;
		return NULL;
	}
	return s;
fail:
	if (fd >= 0)
		close(fd);
	if (s) {
		nghttp2_session_del(s->ng);
		tls_conn_free(s->tls);
		close(s->fd);
		free(s);
	}
	*errp = err;
	return NULL;
}

/* ---- client: a request crossed by a GOAWAY goes again on another connection ----
 * The peer (an agent being upgraded, say) sent GOAWAY while our HEADERS waited in nghttp2's
 * queue (nghttp2 then refuses to start the stream), or refused the stream unprocessed
 * (REFUSED_STREAM, or an ID above its GOAWAY's last one). The peer did nothing with it, so it
 * is safe to send it again (RFC 9113 §6.8, §8.7): the stream keeps a copy of its request until
 * the answer comes, and at most REQ_TRIES sends are made. */

#define REQ_TRIES 3

struct req_copy {
	struct hbone_request req;
	struct spiffe_id source, sni, expect[TLS_EXPECT_MAX];
	struct sockaddr_storage key_src;
	struct hbone_header headers[16];
	int tries;
	char strs[];		/* authority, then each header's name and value */
};

static void req_copy_free(struct req_copy *rq)
{
	free(rq);
}

/* A deep copy of req (validated by hbone_connect). NULL on ENOMEM. */
static struct req_copy *req_copy_new(const struct hbone_request *req, int tries)
{
	size_t len = strlen(req->authority) + 1;
	struct req_copy *rq;
	char *p;

	for (size_t i = 0; i < req->nheaders; i++)
		len += strlen(req->headers[i].name) + strlen(req->headers[i].value) + 2;
	if (!(rq = calloc(1, sizeof(*rq) + len)))
		return NULL;
	rq->req = *req;
	rq->tries = tries;
	rq->source = *req->source;
	rq->req.source = &rq->source;
	memcpy(rq->expect, req->expect, req->nexpect * sizeof(*req->expect));
	rq->req.expect = rq->expect;
	if (req->sni) {
		rq->sni = *req->sni;
		rq->req.sni = &rq->sni;
	}
	if (req->key_src) {
		rq->key_src = *req->key_src;
		rq->req.key_src = &rq->key_src;
	}
	p = rq->strs;
	rq->req.authority = strcpy(p, req->authority);
	p += strlen(p) + 1;
	for (size_t i = 0; i < req->nheaders; i++) {
		rq->headers[i].name = strcpy(p, req->headers[i].name);
		p += strlen(p) + 1;
		rq->headers[i].value = strcpy(p, req->headers[i].value);
		p += strlen(p) + 1;
	}
	rq->req.headers = req->nheaders ? rq->headers : NULL;
	return rq;
}

static int client_connect(struct hbone_pool *p, const struct hbone_request *req, struct conn *c,
			  int tries);

/* st's request was refused unsent by a GOAWAY: sends it again for the same conn. true when
 * done (st is then let go), false to fail the conn as before. */
static bool client_resend(struct hbone_sess *s, struct hbone_stream *st)
{
	struct req_copy *rq = st->rq;
	struct conn *c = st->base.conn;

	if (!rq || !s->owner || !stream_has_conn(st) || rq->tries >= REQ_TRIES ||
	    (st->flags & STF_ANSWERED))
		return false;
	st->rq = NULL;
	/* The conn's upstream end becomes the new stream's; this one is let go. */
	st->flags |= STF_CLOSED | STF_RELEASED;
	if (client_connect(container_of(s->owner, struct hbone_pool, o), &rq->req, c,
			   rq->tries + 1)) {
		st->flags &= ~(STF_CLOSED | STF_RELEASED);	/* fail it as before */
		req_copy_free(rq);
		return false;
	}
	pr_debug("hbone: stream %d refused unsent by GOAWAY: sent again on another connection",
		 st->id);
	req_copy_free(rq);
	stream_maybe_free(st);
	return true;
}

/* Opens the stream with the source's current cert (a reference borrowed for the call).
 * timeout_ms: the conn's connect deadline from now; tries: sends of this request so far + 1. */
static int connect_with(struct hbone_pool *p, const struct hbone_request *req, struct conn *c,
			struct tls_cert *cert, uint32_t timeout_ms, int tries)
{
	nghttp2_nv nva[2 + 16];
	size_t n = 0;
	const struct spiffe_id *sni;
	struct hbone_sess *s;
	struct hbone_stream *st;
	nghttp2_data_provider dp = { .read_callback = data_read_cb };
	int32_t id;
	int err = 0;

	sni = req->sni ? req->sni : &req->expect[0];
	s = pool_pick(p, req, sni, cert);
	if (!s)
		s = client_sess_new(p, req, sni, cert, &err);
	if (!s)
		return err;
	if (!(st = stream_new(s)))
		return -ENOMEM;	/* a new session then idles out */

#define NV(n_, v_) ((nghttp2_nv){ (uint8_t *)(n_), (uint8_t *)(v_), strlen(n_), strlen(v_), \
				  NGHTTP2_NV_FLAG_NONE })
	/* RFC 9113 §8.5: CONNECT has :method and :authority only. */
	nva[n++] = NV(":method", "CONNECT");
	nva[n++] = NV(":authority", req->authority);
	for (size_t i = 0; i < req->nheaders; i++)
		nva[n++] = NV(req->headers[i].name, req->headers[i].value);
#undef NV
	dp.source.ptr = st;
	id = nghttp2_submit_request(s->ng, NULL, nva, n, &dp, st);
	if (id < 0) {
		st->flags |= STF_RELEASED | STF_CLOSED;
		stream_maybe_free(st);
		return id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? -EAGAIN : -ENOMEM;
	}
	st->id = id;
	st->rq = req_copy_new(req, tries);	/* NULL: no resend, nothing else lost */
	conn_attach(c, CONN_UP, &st->base);
	conn_arm_connect_timeout(c, timeout_ms);
	sess_mark(s);
	return 0;
}

/* ---- CONNECTs waiting for their source certificate ----
 * With an asynchronous certstore, a workload's first certificate may still be on its way from
 * the CA. Its CONNECT then waits here, holding the conn's upstream side like a connect in
 * progress (the client's bytes are buffered), until hbone_pool_certs_changed() finds the
 * cert, the deadline (connect_timeout_ms) passes, the pool drains, or the client leaves. */
struct cert_wait {
	struct conn_end base;
	struct hbone_pool *pool;
	struct cert_wait *prev, *next;
	struct loop_timer timer;
	uint64_t deadline_ms;
	struct spiffe_id source, sni, expect[TLS_EXPECT_MAX];
	size_t nexpect;
	struct sockaddr_storage dst;
	char *authority;
	struct hbone_header headers[16];	/* name and value allocated */
	size_t nheaders;
};

static void wait_free(struct cert_wait *w)
{
	struct hbone_pool *p = w->pool;

	if (w->prev)
		w->prev->next = w->next;
	else
		p->waiters = w->next;
	if (w->next)
		w->next->prev = w->prev;
	p->nwaiters--;
	loop_timer_cancel(p->o.loop, &w->timer);
	free(w->authority);
	for (size_t i = 0; i < w->nheaders; i++) {
		free((char *)w->headers[i].name);
		free((char *)w->headers[i].value);
	}
	free(w);
}

static void wait_kick(struct conn_end *e) { (void)e; }

/* The conn is done with the wait (the client left, or the conn aborted it). */
static void wait_release(struct conn_end *e, int err)
{
	(void)err;
	wait_free(container_of(e, struct cert_wait, base));
}

static const struct conn_end_ops wait_ops = {
	.name = "hbone-cert-wait",
	.kick_write = wait_kick,
	.kick_read = wait_kick,
	.release = wait_release,
};

/* Aborts the waiting conn; the abort releases (frees) w. */
static void wait_abort(struct cert_wait *w, int err, const char *why)
{
	char ids[SPIFFE_ID_STR_MAX], reason[SPIFFE_ID_STR_MAX + REASON_MAX + 32];

	snprintf(reason, sizeof(reason), "no certificate for %s: %s",
		 spiffe_id_str(&w->source, ids), why);
	conn_abort(w->base.conn, CONN_UP, err, CONN_FLAG_UPSTREAM_CONNECT_FAILURE, reason);
}

static void wait_timeout(struct loop *l, struct loop_timer *t)
{
	struct cert_wait *w = t->arg;
	char why[REASON_MAX];
	(void)l;
	certstore_reason(w->pool->certs, &w->source, why, sizeof(why));
	wait_abort(w, -ETIMEDOUT, why[0] ? why : "timed out waiting for it");
}

/* Parks c's CONNECT (a deep copy of req). 0 or -ENOMEM. */
static int wait_new(struct hbone_pool *p, const struct hbone_request *req, struct conn *c)
{
	struct cert_wait *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	w->pool = p;
	w->base.ops = &wait_ops;
	loop_timer_init(&w->timer, wait_timeout, w);
	w->source = *req->source;
	w->sni = req->sni ? *req->sni : req->expect[0];
	memcpy(w->expect, req->expect, req->nexpect * sizeof(*req->expect));
	w->nexpect = req->nexpect;
	w->dst = req->dst;
	w->next = p->waiters;
	if (w->next)
		w->next->prev = w;
	p->waiters = w;
	p->nwaiters++;
	if (!(w->authority = strdup(req->authority)))
		goto nomem;
	for (size_t i = 0; i < req->nheaders; i++, w->nheaders++) {
		w->headers[i].name = strdup(req->headers[i].name);
		w->headers[i].value = strdup(req->headers[i].value);
		if (!w->headers[i].name || !w->headers[i].value) {
			w->nheaders++;
			goto nomem;
		}
	}
	w->deadline_ms = loop_now_ms(p->o.loop) + p->o.opts.connect_timeout_ms;
	if (loop_timer_arm(p->o.loop, &w->timer, p->o.opts.connect_timeout_ms))
		goto nomem;
	conn_attach(c, CONN_UP, &w->base);
	return 0;
nomem:
	wait_free(w);
	return -ENOMEM;
}

void hbone_pool_certs_changed(struct hbone_pool *p)
{
	struct cert_wait *w, *next;

	if (!p)
		return;
	for (w = p->waiters; w; w = next) {
		struct hbone_request req = {
			.source = &w->source, .dst = w->dst, .expect = w->expect,
			.nexpect = w->nexpect, .sni = &w->sni, .authority = w->authority,
			.headers = w->headers, .nheaders = w->nheaders,
		};
		struct conn *c = w->base.conn;
		uint64_t now = loop_now_ms(p->o.loop);
		struct tls_cert *cert = certstore_get(p->certs, &w->source);
		int err;

		next = w->next;
		if (!cert) {
			if (errno != EAGAIN)
				wait_abort(w, -errno, strerror(errno));
			continue;
		}
		/* What is left of the deadline goes to the connect itself. */
		err = connect_with(p, &req, c, cert,
				   w->deadline_ms > now ? (uint32_t)(w->deadline_ms - now) : 1, 1);
		tls_cert_unref(cert);
		if (err)	/* nothing attached: w is still the conn's upstream end */
			conn_abort(c, CONN_UP, err, CONN_FLAG_UPSTREAM_CONNECT_FAILURE,
				   "cannot open HBONE");
		else		/* the stream replaced w at CONN_UP */
			wait_free(w);
	}
}

uint32_t hbone_pool_cert_waits(const struct hbone_pool *p)
{
	return p ? p->nwaiters : 0;
}

static void waiters_abort_all(struct hbone_pool *p, int err, const char *why)
{
	while (p->waiters)
		wait_abort(p->waiters, err, why);
}

int hbone_connect(struct hbone_pool *p, const struct hbone_request *req, struct conn *c)
{
	struct tls_cert *cert;
	int err;

	if (!p || !req || !c || !req->source || !req->expect || !req->nexpect ||
	    req->nexpect > TLS_EXPECT_MAX || !req->authority || !*req->authority ||
	    req->nheaders > 16 || (req->nheaders && !req->headers) ||
	    (req->dst.ss_family != AF_INET && req->dst.ss_family != AF_INET6))
		return -EINVAL;
	for (size_t i = 0; i < req->nheaders; i++) {
		const struct hbone_header *h = &req->headers[i];
		if (!h->name || !h->value || h->name[0] == ':' ||
		    !nghttp2_check_header_name((const uint8_t *)h->name, strlen(h->name)) ||
		    !nghttp2_check_header_value((const uint8_t *)h->value, strlen(h->value)))
			return -EINVAL;
	}
	if (p->o.draining)
		return -ESHUTDOWN;
	/* The current cert decides which sessions may take the stream. */
	if (!(cert = certstore_get(p->certs, req->source)))
		return errno == EAGAIN ? wait_new(p, req, c) : -(errno ? errno : ENOKEY);
	err = connect_with(p, req, c, cert, p->o.opts.connect_timeout_ms, 1);
	tls_cert_unref(cert);
	return err;
}

/* A resend (client_resend): the request was validated when first sent, and its source's
 * certificate was there then; without one now (evicted), the conn fails as before. */
static int client_connect(struct hbone_pool *p, const struct hbone_request *req, struct conn *c,
			  int tries)
{
	struct tls_cert *cert;
	int err;

	if (p->o.draining)
		return -ESHUTDOWN;
	if (!(cert = certstore_get(p->certs, req->source)))
		return -(errno ? errno : ENOKEY);
	err = connect_with(p, req, c, cert, p->o.opts.connect_timeout_ms, tries);
	tls_cert_unref(cert);
	return err;
}

void hbone_pool_drain(struct hbone_pool *p)
{
	if (!p || p->o.draining)
		return;
	p->o.draining = true;
	waiters_abort_all(p, -ESHUTDOWN, "the agent is draining");
	for (struct hbone_sess *s = p->o.sessions; s; s = s->next)
		if (s->st == HBONE_ST_READY)
			sess_goaway(s);
}

/* ---------------------------------------------------------------- server ---- */

/* pod: accepted on a pod-addressed listener; the certificate comes from the dialled address. */
static void server_accept_one(struct hbone_server *srv, int fd,
			      const struct sockaddr_storage *peer, bool pod)
{
	struct hbone_sess *s;
	struct tls_cert *cert = NULL;
	socklen_t len = sizeof(struct sockaddr_storage);
	char addr[ADDR_STR_LEN];
	int one = 1;

	/* Each session may hold up to conn_window for slow readers: bound how many there are. */
	if (srv->o.nsessions >= srv->o.opts.max_sessions) {
		srv->o.refused_total++;
		pr_warn_rl("hbone: %u inbound connections open (max_sessions): refusing %s",
			   srv->o.nsessions, sockaddr_str(peer, addr, sizeof(addr)));
		close(fd);
		return;
	}
	if (!(s = sess_new(&srv->o, fd, true))) {
		close(fd);
		pr_warn_rl("hbone: out of memory accepting a connection");
		return;
	}
	s->peer_addr = *peer;
	s->pod_addressed = pod;
	getsockname(fd, (struct sockaddr *)&s->local_addr, &len);
	if (pod && !(cert = srv->cbs.pod_cert(srv->cbs.arg, &s->local_addr, peer))) {
		close(fd);	/* refused: the callback said why */
		free(s);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s->tls = tls_conn_new(srv->o.ctx, fd, cert ? &(struct tls_conn_opts){ .cert = cert } : NULL);
	tls_cert_unref(cert);
	if (!s->tls || sess_ng_init(s, &srv->o.opts)) {
		pr_warn_rl("hbone: cannot set up an inbound connection: %s", strerror(errno));
		nghttp2_session_del(s->ng);
		tls_conn_free(s->tls);
		close(fd);
		free(s);
		return;
	}
	s->st = HBONE_ST_HANDSHAKE;
	owner_link(&srv->o, s);
	if (loop_timer_arm(s->loop, &s->hs_timer, srv->o.opts.connect_timeout_ms)) {
		sess_close(s, -ENOMEM, "no memory for a timer");
		return;
	}
	sess_update(s);
}

static void server_accept_from(struct hbone_server *srv, int lfd, bool pod)
{
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		int fd = accept4(lfd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				pr_warn_rl("hbone: accept on 15008: %s", strerror(errno));
			return;
		}
		server_accept_one(srv, fd, &peer, pod);
		if (srv->o.draining)
			return;	/* a callback drained the server: the listener is closed */
	}
}

static void server_accept(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct hbone_server *srv = io->arg;
	(void)l;
	(void)events;

	if (srv->lfd >= 0)
		server_accept_from(srv, srv->lfd, false);
}

static void server_accept_pod(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct hbone_pod_listener *pl = io->arg;
	(void)l;
	(void)events;

	if (pl->fd >= 0)
		server_accept_from(pl->srv, pl->fd, true);
}

int hbone_server_listen_pod(struct hbone_server *srv, int fd)
{
	struct hbone_pod_listener *pl = NULL;
	int err;

	if (!srv || fd < 0 || !srv->cbs.pod_cert || srv->o.draining)
		return -EINVAL;
	for (size_t i = 0; i < ARRAY_SIZE(srv->pod) && !pl; i++)
		if (srv->pod[i].fd < 0)
			pl = &srv->pod[i];
	if (!pl)
		return -ENOSPC;
	pl->srv = srv;
	loop_io_init(&pl->io, fd, server_accept_pod, pl);
	if ((err = loop_io_set(srv->o.loop, &pl->io, EPOLLIN)))
		return err;
	pl->fd = fd;
	return 0;
}

struct hbone_server *hbone_server_new(struct loop *l, const struct sockaddr_storage *bind_addr,
				      struct tls_ctx *server_ctx, const struct hbone_server_cbs *cbs,
				      const struct hbone_opts *opts)
{
	struct hbone_server *srv;
	socklen_t len = sizeof(struct sockaddr_storage);
	char addr[ADDR_STR_LEN];
	int one = 1, err;

	if (!l || !bind_addr || !server_ctx || !cbs || !cbs->on_connect ||
	    tls_ctx_role(server_ctx) != TLS_ROLE_SERVER) {
		errno = EINVAL;
		return NULL;
	}
	if (!(srv = calloc(1, sizeof(*srv))))
		return NULL;
	srv->o.server = true;
	srv->o.loop = l;
	srv->o.ctx = server_ctx;
	if (opts)
		srv->o.opts = *opts;
	opts_defaults(&srv->o.opts, true);
	srv->cbs = *cbs;
	for (size_t i = 0; i < ARRAY_SIZE(srv->pod); i++)
		srv->pod[i].fd = -1;
	srv->lfd = socket(bind_addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (srv->lfd == -1)
		goto fail;
	setsockopt(srv->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* The agent being upgraded and its successor share 15008 (docs/kubernetes.md). */
	setsockopt(srv->lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(srv->lfd, (const struct sockaddr *)bind_addr, sockaddr_len(bind_addr)) == -1 ||
	    getsockname(srv->lfd, (struct sockaddr *)&srv->addr, &len) == -1)
		goto fail;
	loop_io_init(&srv->lio, srv->lfd, server_accept, srv);
	if (!srv->o.opts.defer_listen && (err = hbone_server_listen(srv))) {
		errno = -err;
		goto fail;
	}
	return srv;
fail:
	err = errno;
	pr_err("hbone: cannot listen on %s: %s", sockaddr_str(bind_addr, addr, sizeof(addr)),
	       strerror(err));
	if (srv->lfd >= 0)
		close(srv->lfd);
	free(srv);
	errno = err;
	return NULL;
}

int hbone_server_listen(struct hbone_server *srv)
{
	char addr[ADDR_STR_LEN];
	int err;

	if (!srv || srv->lfd < 0)
		return -EINVAL;
	if (srv->listening)
		return 0;
	/* Listening is what joins the port's SO_REUSEPORT group: from here on connections come. */
	if (listen(srv->lfd, 1024) == -1)
		return -errno;
	if ((err = loop_io_set(srv->o.loop, &srv->lio, EPOLLIN)))
		return err;
	srv->listening = true;
	pr_info("hbone: listening on %s", sockaddr_str(&srv->addr, addr, sizeof(addr)));
	return 0;
}

static void server_stop_listening(struct hbone_server *srv)
{
	for (size_t i = 0; i < ARRAY_SIZE(srv->pod); i++) {
		if (srv->pod[i].fd < 0)
			continue;
		loop_io_del(srv->o.loop, &srv->pod[i].io);
		close(srv->pod[i].fd);
		srv->pod[i].fd = -1;
	}
	if (srv->lfd < 0)
		return;
	if (srv->listening)
		loop_io_del(srv->o.loop, &srv->lio);
	close(srv->lfd);
	srv->lfd = -1;
}

void hbone_server_free(struct hbone_server *srv)
{
	if (!srv)
		return;
	server_stop_listening(srv);
	owner_close_all(&srv->o, "HBONE server shut down");
	free(srv);
}

int hbone_server_addr(const struct hbone_server *srv, struct sockaddr_storage *out)
{
	if (!srv || !out)
		return -EINVAL;
	*out = srv->addr;
	return 0;
}

void hbone_server_drain(struct hbone_server *srv)
{
	if (!srv || srv->o.draining)
		return;
	srv->o.draining = true;
	server_stop_listening(srv);
	for (struct hbone_sess *s = srv->o.sessions; s; s = s->next) {
		if (s->st != HBONE_ST_READY)
			continue;	/* a handshaking one gets GOAWAY when it is up */
		/* RFC 9113 §6.8: announce, let requests in flight land, then the real GOAWAY. */
		s->st = HBONE_ST_DRAINING;
		s->flags |= SF_DRAIN_NOTICE;
		nghttp2_submit_shutdown_notice(s->ng);
		if (loop_timer_arm(s->loop, &s->drain_timer, DRAIN_NOTICE_MS))
			drain_fire(s->loop, &s->drain_timer);
		sess_mark(s);
	}
	/* Held CONNECTs and handshakes get their answer now, not a reset when the agent exits:
	 * dispatched again, a CONNECT is served if it can be, else refused with 503 (see
	 * server_request); a handshake goes on or is refused as the agent's callbacks say. */
	hbone_server_retry_held(srv);
}

/* --------------------------------------------------------- introspection ---- */

static const char *sess_blocked(const struct hbone_sess *s)
{
	if (s->st == HBONE_ST_CONNECTING)
		return "tcp_connect";
	if (s->st == HBONE_ST_HANDSHAKE && (tls_conn_want(s->tls) & TLS_WANT_RETRY))
		return "tls_held_for_model";
	if (s->st == HBONE_ST_HANDSHAKE)
		return tls_conn_want(s->tls) & TLS_WANT_WRITE ? "tls_want_write" : "tls_want_read";
	if (s->flags & SF_WR_WANT_READ)
		return "tls_write_wants_read";
	if (s->flags & SF_WR_BLOCKED)
		return "tls_write_blocked";
	if (s->flags & SF_RD_WANT_WRITE)
		return "tls_read_wants_write";
	return "";
}

static void owner_foreach(struct hbone_owner *o, hbone_visit_fn fn, void *arg)
{
	uint64_t now = loop_now_ms(o->loop);

	for (struct hbone_sess *s = o->sessions; s; s = s->next) {
		struct tls_cert *lc = s->st >= HBONE_ST_READY ? tls_conn_local_cert(s->tls) : NULL;
		struct hbone_conn_info ci = {
			.server = s->server,
			.pod_addressed = s->server ? s->pod_addressed : s->no_sni,
			.state = s->st,
			.peer_addr = s->peer_addr,
			.local_id = s->has_local_id ? &s->local_id : NULL,
			.peer_id = s->has_peer_id ? &s->peer_id : NULL,
			.expect_id = s->server ? NULL : &s->expect[0],
			.cert_serial = lc ? tls_cert_serial_hex(lc) : NULL,
			.streams = s->nstreams,
			.queued = s->st < HBONE_ST_READY ? s->nstreams : 0,
			.streams_total = s->streams_total,
			.age_ms = now - s->created_ms,
			.idle_ms = s->idle_since_ms ? now - s->idle_since_ms : 0,
			.bytes_sent = s->bytes_sent,
			.bytes_received = s->bytes_recv,
			.buffered = s->buffered,
			.unconsumed = s->unconsumed,
			.blocked = sess_blocked(s),
		};
		fn(&ci, arg);
	}
}

static void owner_stats(struct hbone_owner *o, struct hbone_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->conns = o->nsessions;
	out->conns_total = o->conns_total;
	out->streams_total = o->streams_total;
	out->refused_total = o->refused_total;
	memcpy(out->cut_off, o->cut_off, sizeof(out->cut_off));
	out->streams_refused_total = o->streams_refused_total;
	out->reset_before_dial_total = o->reset_before_dial_total;
	for (struct hbone_sess *s = o->sessions; s; s = s->next) {
		out->streams += s->nstreams;
		out->buffered += s->buffered;
		out->unconsumed += s->unconsumed;
	}
}

void hbone_pool_foreach(struct hbone_pool *p, hbone_visit_fn fn, void *arg)
{
	if (p && fn)
		owner_foreach(&p->o, fn, arg);
}

void hbone_server_foreach(struct hbone_server *srv, hbone_visit_fn fn, void *arg)
{
	if (srv && fn)
		owner_foreach(&srv->o, fn, arg);
}

void hbone_pool_stats(struct hbone_pool *p, struct hbone_stats *out)
{
	if (p && out)
		owner_stats(&p->o, out);
}

void hbone_server_stats(struct hbone_server *srv, struct hbone_stats *out)
{
	if (srv && out)
		owner_stats(&srv->o, out);
}

uint32_t hbone_server_stream_count(const struct hbone_server *srv)
{
	uint32_t n = 0;
	if (!srv)
		return 0;
	for (const struct hbone_sess *s = srv->o.sessions; s; s = s->next)
		n += s->nstreams;
	return n;
}

/* A server session whose handshake the certificate wait holds (TLS_WANT_RETRY). */
static bool sess_hs_held(const struct hbone_sess *s)
{
	return s->st == HBONE_ST_HANDSHAKE && s->tls && (tls_conn_want(s->tls) & TLS_WANT_RETRY);
}

uint32_t hbone_server_held(const struct hbone_server *srv)
{
	uint32_t n;

	if (!srv)
		return 0;
	n = srv->o.nheld;
	for (const struct hbone_sess *s = srv->o.sessions; s; s = s->next)
		n += sess_hs_held(s);
	return n;
}

void hbone_server_retry_held(struct hbone_server *srv)
{
	struct hbone_stream *st, *next;

	if (!srv)
		return;
	/* Held handshakes first: their streams come after them. */
	for (struct hbone_sess *s = srv->o.sessions, *n; s; s = n) {
		n = s->next;	/* pumping closes s at most: the rest of the list stays */
		if (!sess_hs_held(s))
			continue;
		sess_ref(s);
		sess_pump(s, 0);
		sess_unref(s);
	}
	/* Take the whole list: a stream held again goes back on it, and is not seen twice. */
	st = srv->o.held_head;
	srv->o.held_head = srv->o.held_tail = NULL;
	srv->o.nheld = 0;
	for (; st; st = next) {
		struct hbone_sess *s = st->s;

		next = st->held_next;
		st->flags &= ~STF_HELD;
		st->held_prev = st->held_next = NULL;
		if (s->flags & SF_ABUSE)
			continue;	/* cut off: never dispatched; freed with its session */
		sess_ref(s);
		server_request(s, st);
		sess_unref(s);
	}
}
