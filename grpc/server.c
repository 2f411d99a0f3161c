// SPDX-License-Identifier: Apache-2.0
/* Unary gRPC server (PROTOCOL-HTTP2.md) with nghttp2 over TLS (tls/) or h2c: an accept
 * thread, a thread per connection that reads requests, calls the handler for each complete
 * one and writes its answer. Everything a client controls is bounded: connections, streams,
 * headers, message size, handshake and idle time. */
#include "grpc/server.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "grpc/io.h"
#include "tls/conn.h"

#define MAX_STREAMS 16			/* SETTINGS_MAX_CONCURRENT_STREAMS */
#define MAX_HEADER_BYTES 16384		/* names + values kept per request */
#define WRITE_TIMEOUT_MS 10000		/* a client that stops reading is dropped */
#define PATH_MAX_LEN 256

struct grpc_server {
	int lfd;
	uint16_t port;
	struct grpc_server_opts o;
	pthread_t accept_thread;
	volatile bool stop;
	atomic_uint conns;
	pthread_mutex_t lock;		/* conns reaching zero */
	pthread_cond_t idle;
};

/* One request stream. */
struct stream {
	struct stream *prev, *next;	/* the conn's open streams (nghttp2_session_del does not
					 * close them through on_stream_close) */
	int32_t id;
	char path[PATH_MAX_LEN];
	bool post, grpc_ct, bad;	/* :method POST, content-type application/grpc, refused */
	uint64_t timeout_ms;
	struct grpc_header headers[GRPC_SERVER_MAX_HEADERS];
	size_t nheaders, header_bytes;
	uint8_t *body;			/* framed request, at most GRPC_FRAME_HDR + max_msg */
	size_t body_len;
	bool too_big;
	bool answered;
	uint8_t *resp;			/* framed response */
	size_t resp_len, resp_off;
	char status[4];			/* grpc-status of an OK answer's trailers */
};

struct conn {
	struct grpc_server *srv;
	struct grpc_io io;
	char peer[ADDR_STR_LEN];
	uint32_t open_streams;
	struct stream *streams;		/* open ones */
};

const char *grpc_server_call_header(const struct grpc_server_call *call, const char *name)
{
	for (size_t i = 0; i < call->nheaders; i++)
		if (strcmp(call->headers[i].name, name) == 0)
			return call->headers[i].value;
	return NULL;
}

/* Unlinks st from c and frees it. */
static void stream_free(struct conn *c, struct stream *st)
{
	if (!st)
		return;
	if (st->prev)
		st->prev->next = st->next;
	else
		c->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	c->open_streams--;
	for (size_t i = 0; i < st->nheaders; i++) {
		/* metadata carries credentials (authorization) */
		explicit_bzero((char *)st->headers[i].value, strlen(st->headers[i].value));
		free((char *)st->headers[i].name);
		free((char *)st->headers[i].value);
	}
	free(st->body);
	free(st->resp);
	free(st);
}

/* A plain HTTP answer to what is not a gRPC request (RFC 9113 §8.1; gRPC maps 415). */
static void answer_http(struct conn *c, struct stream *st, const char *status)
{
	nghttp2_nv nv[1];

	grpc_io_nv(&nv[0], ":status", status);
	nghttp2_submit_response(c->io.sess, st->id, nv, 1, NULL);
	st->answered = true;
}

/* Trailers-Only (PROTOCOL-HTTP2.md "Responses"): one HEADERS frame ending the stream. */
static void answer_error(struct conn *c, struct stream *st, int code, const char *msg)
{
	char num[8], enc[512];
	nghttp2_nv nv[4];

	snprintf(num, sizeof(num), "%d", code);
	grpc_io_nv(&nv[0], ":status", "200");
	grpc_io_nv(&nv[1], "content-type", "application/grpc");
	grpc_io_nv(&nv[2], "grpc-status", num);
	grpc_io_nv(&nv[3], "grpc-message", grpc_message_encode(msg ? msg : "", enc, sizeof(enc)));
	nghttp2_submit_response(c->io.sess, st->id, nv, msg && *msg ? 4 : 3, NULL);
	st->answered = true;
}

static ssize_t resp_read(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t len,
			 uint32_t *data_flags, nghttp2_data_source *src, void *ud)
{
	struct stream *st = src->ptr;
	size_t n = MIN(len, st->resp_len - st->resp_off);

	memcpy(buf, st->resp + st->resp_off, n);
	st->resp_off += n;
	if (st->resp_off == st->resp_len) {
		nghttp2_nv nv[1];
		*data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		grpc_io_nv(&nv[0], "grpc-status", st->status);
		if (nghttp2_submit_trailer(s, stream_id, nv, 1))
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return (ssize_t)n;
}

/* A complete request: check it, call the handler, queue the answer. */
static void dispatch(struct conn *c, struct stream *st)
{
	struct grpc_server *srv = c->srv;
	struct grpc_server_reply reply = { .status = GRPC_STATUS_UNKNOWN };
	const uint8_t *msg = NULL;
	size_t mlen = 0;
	ssize_t n;

	if (st->answered)
		return;
	if (!st->post || st->bad) {
		answer_http(c, st, st->bad ? "400" : "405");
		return;
	}
	if (!st->grpc_ct) {
		answer_http(c, st, "415");
		return;
	}
	if (st->too_big) {
		answer_error(c, st, GRPC_STATUS_RESOURCE_EXHAUSTED, "request message too large");
		return;
	}
	n = grpc_frame_parse(st->body, st->body_len, srv->o.max_msg, &msg, &mlen);
	if (n == -ENOTSUP) {
		answer_error(c, st, GRPC_STATUS_UNIMPLEMENTED, "compressed messages not supported");
		return;
	}
	if (n <= 0 || (size_t)n != st->body_len) {
		answer_error(c, st, n == -EMSGSIZE ? GRPC_STATUS_RESOURCE_EXHAUSTED
						   : GRPC_STATUS_INTERNAL,
			     n == -EMSGSIZE ? "request message too large"
					    : "a unary call takes exactly one message");
		return;
	}
	struct grpc_server_call call = {
		.path = st->path, .peer = c->peer, .headers = st->headers,
		.nheaders = st->nheaders, .msg = msg, .len = mlen, .timeout_ms = st->timeout_ms,
	};
	srv->o.handler(srv->o.arg, &call, &reply);
	if (reply.status != GRPC_STATUS_OK) {
		answer_error(c, st, reply.status, reply.message);
		free(reply.response);
		return;
	}
	if (reply.response_len > UINT32_MAX ||
	    !(st->resp = malloc(GRPC_FRAME_HDR + reply.response_len))) {
		free(reply.response);
		answer_error(c, st, GRPC_STATUS_INTERNAL, "out of memory");
		return;
	}
	grpc_frame_header(st->resp, (uint32_t)reply.response_len);
	if (reply.response_len)
		memcpy(st->resp + GRPC_FRAME_HDR, reply.response, reply.response_len);
	st->resp_len = GRPC_FRAME_HDR + reply.response_len;
	free(reply.response);
	strcpy(st->status, "0");
	nghttp2_nv nv[2];
	grpc_io_nv(&nv[0], ":status", "200");
	grpc_io_nv(&nv[1], "content-type", "application/grpc");
	nghttp2_data_provider dp = { .source.ptr = st, .read_callback = resp_read };
	if (nghttp2_submit_response(c->io.sess, st->id, nv, 2, &dp) == 0)
		st->answered = true;
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
	struct conn *c = ud;
	struct stream *st;

	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (!(st = calloc(1, sizeof(*st))))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;	/* resets the stream */
	st->id = frame->hd.stream_id;
	nghttp2_session_set_stream_user_data(s, st->id, st);
	st->next = c->streams;
	if (c->streams)
		c->streams->prev = st;
	c->streams = st;
	c->open_streams++;
	return 0;
}

static bool name_is(const uint8_t *name, size_t len, const char *lit)
{
	return len == strlen(lit) && memcmp(name, lit, len) == 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
	struct stream *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);

	if (!st || frame->hd.type != NGHTTP2_HEADERS || st->bad)
		return 0;
	st->header_bytes += namelen + valuelen;
	if (st->header_bytes > MAX_HEADER_BYTES) {
		st->bad = true;
		return 0;
	}
	if (name_is(name, namelen, ":method")) {
		st->post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
	} else if (name_is(name, namelen, ":path")) {
		if (valuelen >= sizeof(st->path))
			st->bad = true;
		else
			memcpy(st->path, value, valuelen);
	} else if (name_is(name, namelen, "content-type")) {
		/* "application/grpc" or "application/grpc+proto" etc. */
		st->grpc_ct = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
			      (valuelen == 16 || value[16] == '+' || value[16] == ';');
	} else if (name_is(name, namelen, "grpc-timeout")) {
		if (grpc_timeout_parse((const char *)value, valuelen, &st->timeout_ms))
			st->bad = true;
	} else if (namelen && name[0] != ':' && st->nheaders < GRPC_SERVER_MAX_HEADERS) {
		char *n = strndup((const char *)name, namelen), *v = strndup((const char *)value, valuelen);
		if (!n || !v) {
			free(n);
			free(v);
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		}
		st->headers[st->nheaders].name = n;
		st->headers[st->nheaders++].value = v;
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
			 size_t len, void *ud)
{
	struct conn *c = ud;
	struct stream *st = nghttp2_session_get_stream_user_data(s, stream_id);
	size_t max = GRPC_FRAME_HDR + c->srv->o.max_msg;

	if (!st || st->too_big)
		return 0;
	if (len > max - st->body_len) {
		/* answer now, keep nothing more */
		st->too_big = true;
		free(st->body);
		st->body = NULL;
		dispatch(c, st);	/* the rest of its DATA is dropped as it comes */
		return 0;
	}
	if (!st->body && !(st->body = malloc(max)))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	memcpy(st->body + st->body_len, data, len);
	st->body_len += len;
	/* a message declared larger than we take is refused at its header, not its end */
	const uint8_t *m;
	size_t mlen;
	if (grpc_frame_parse(st->body, st->body_len, c->srv->o.max_msg, &m, &mlen) == -EMSGSIZE) {
		st->too_big = true;
		free(st->body);
		st->body = NULL;
		dispatch(c, st);
	}
	return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
	struct conn *c = ud;
	struct stream *st;

	if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
	    !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	if ((st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id)))
		dispatch(c, st);
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud)
{
	struct conn *c = ud;
	struct stream *st = nghttp2_session_get_stream_user_data(s, stream_id);

	if (st) {
		nghttp2_session_set_stream_user_data(s, stream_id, NULL);
		stream_free(c, st);
	}
	return 0;
}

static int session_open(struct conn *c)
{
	nghttp2_session_callbacks *cb;
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_BYTES },
	};
	int rv;

	if (nghttp2_session_callbacks_new(&cb))
		return -ENOMEM;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	rv = nghttp2_session_server_new(&c->io.sess, cb, c);
	nghttp2_session_callbacks_del(cb);
	if (rv)
		return -ENOMEM;
	if (nghttp2_submit_settings(c->io.sess, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv)))
		return -EPROTO;
	return 0;
}

/* ---- connections ---- */

static void conn_close(struct conn *c)
{
	struct grpc_server *srv = c->srv;

	if (c->io.sess)
		nghttp2_session_del(c->io.sess);
	while (c->streams)
		stream_free(c, c->streams);
	tls_conn_free(c->io.conn);
	close(c->io.fd);
	free(c);
	pthread_mutex_lock(&srv->lock);
	if (atomic_fetch_sub(&srv->conns, 1) == 1)
		pthread_cond_broadcast(&srv->idle);
	pthread_mutex_unlock(&srv->lock);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct grpc_server *srv = c->srv;
	const volatile bool *stop = &srv->stop;
	uint64_t last = now_mono_ms();
	short events = POLLIN;
	int err = 0;

	if (srv->o.tls) {
		if (!(c->io.conn = tls_conn_new(srv->o.tls, c->io.fd, NULL))) {
			err = -errno;
			goto out;
		}
		err = grpc_io_handshake(&c->io, last + srv->o.handshake_timeout_ms, stop);
		if (err) {
			pr_debug("grpc: TLS handshake from %s: %s", c->peer,
				 *tls_conn_reason(c->io.conn) ? tls_conn_reason(c->io.conn)
							      : strerror(-err));
			goto out;
		}
	}
	if ((err = session_open(c)))
		goto out;
	for (;;) {
		uint64_t now = now_mono_ms();
		if ((err = grpc_io_flush(&c->io, now + WRITE_TIMEOUT_MS, stop)))
			break;
		if (!nghttp2_session_want_read(c->io.sess) && !nghttp2_session_want_write(c->io.sess))
			break;
		if (*stop || (!c->open_streams && now - last > srv->o.idle_timeout_ms)) {
			/* RFC 9113 §6.8: GOAWAY, then close */
			nghttp2_session_terminate_session(c->io.sess, NGHTTP2_NO_ERROR);
			grpc_io_flush(&c->io, now + 1000, NULL);
			break;
		}
		struct pollfd p = { .fd = c->io.fd, .events = events };
		int n = poll(&p, 1, 100);
		if (n == -1 && errno != EINTR) {
			err = -errno;
			break;
		}
		if (n <= 0)
			continue;
		err = grpc_io_read(&c->io, &events);
		if (err == -EAGAIN) {
			err = 0;
			continue;
		}
		if (err)
			break;
		events = POLLIN;
		last = now_mono_ms();
	}
out:
	if (err && err != -ECONNRESET)
		pr_debug("grpc: connection from %s: %s", c->peer, strerror(-err));
	conn_close(c);
	return NULL;
}

static void *accept_main(void *arg)
{
	struct grpc_server *srv = arg;

	while (!srv->stop) {
		struct pollfd p = { .fd = srv->lfd, .events = POLLIN };
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		pthread_attr_t attr;
		pthread_t t;
		struct conn *c;
		int fd;

		if (poll(&p, 1, 100) <= 0)
			continue;
		fd = accept4(srv->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1)
			continue;
		if (atomic_load(&srv->conns) >= srv->o.max_conns || !(c = calloc(1, sizeof(*c)))) {
			pr_warn("grpc: refusing a connection: %u open (max_conns)",
				atomic_load(&srv->conns));
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->srv = srv;
		c->io.fd = fd;
		sockaddr_str(&ss, c->peer, sizeof(c->peer));
		atomic_fetch_add(&srv->conns, 1);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, conn_main, c)) {
			pr_warn("grpc: no thread for a connection from %s", c->peer);
			conn_close(c);
		}
		pthread_attr_destroy(&attr);
	}
	return NULL;
}

struct grpc_server *grpc_server_start(const struct grpc_server_opts *o, char *err, size_t errlen)
{
	struct grpc_server *srv;
	struct sockaddr_storage ss;
	int one = 1, e;

	if (!o || !o->listen || !o->handler || sockaddr_parse(o->listen, 0, &ss)) {
		snprintf(err, errlen, "listen address '%s' is not IP:PORT", o && o->listen ? o->listen : "");
		errno = EINVAL;
		return NULL;
	}
	if (!(srv = calloc(1, sizeof(*srv))))
		return NULL;
	srv->o = *o;
	srv->o.listen = NULL;
	if (!srv->o.max_conns)
		srv->o.max_conns = 1024;
	if (!srv->o.max_msg)
		srv->o.max_msg = 64 * 1024;
	if (!srv->o.idle_timeout_ms)
		srv->o.idle_timeout_ms = 300000;
	if (!srv->o.handshake_timeout_ms)
		srv->o.handshake_timeout_ms = 10000;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->idle, NULL);
	srv->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (srv->lfd == -1 ||
	    setsockopt(srv->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(srv->lfd, (struct sockaddr *)&ss, sockaddr_len(&ss)) == -1 ||
	    listen(srv->lfd, 128) == -1) {
		e = errno;
		snprintf(err, errlen, "listening on %s: %s", o->listen, strerror(e));
		goto fail;
	}
	{
		socklen_t sl = sizeof(ss);
		getsockname(srv->lfd, (struct sockaddr *)&ss, &sl);
		srv->port = sockaddr_port(&ss);
	}
	if ((e = pthread_create(&srv->accept_thread, NULL, accept_main, srv))) {
		snprintf(err, errlen, "accept thread: %s", strerror(e));
		goto fail;
	}
	return srv;
fail:
	if (srv->lfd >= 0)
		close(srv->lfd);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->idle);
	free(srv);
	errno = e;
	return NULL;
}

uint16_t grpc_server_port(const struct grpc_server *s)
{
	return s->port;
}

uint32_t grpc_server_conns(const struct grpc_server *s)
{
	return atomic_load(&((struct grpc_server *)s)->conns);
}

void grpc_server_stop(struct grpc_server *s)
{
	if (!s)
		return;
	s->stop = true;
	pthread_join(s->accept_thread, NULL);
	close(s->lfd);
	pthread_mutex_lock(&s->lock);
	while (atomic_load(&s->conns))
		pthread_cond_wait(&s->idle, &s->lock);
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->idle);
	free(s);
}
