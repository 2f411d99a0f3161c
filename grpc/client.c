// SPDX-License-Identifier: Apache-2.0
/* Unary gRPC client (PROTOCOL-HTTP2.md) with nghttp2 over cleartext HTTP/2 or TLS with ALPN
 * h2 through tls/: one call at a time on a connection that is kept and reused, with
 * poll()-driven I/O on a non-blocking socket, on the caller's thread. */
#include "grpc/client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "common/version.h"
#include "grpc/io.h"
#include "tls/conn.h"
#include "tls/ctx.h"

#define FIXED_HEADERS 8		/* :method :scheme :path :authority content-type te ua timeout */

/* The state of one call. */
struct call {
	int32_t stream_id;
	const uint8_t *body;		/* framed request, borrowed */
	size_t body_len, body_off;
	bool closed;			/* the stream closed (response complete or reset) */
	uint32_t rst_error;		/* HTTP/2 error code when reset */
	struct grpc_result *res;
	int grpc_status;		/* -1 until grpc-status */
	uint8_t *resp;			/* response DATA, at most 5 + GRPC_CLIENT_MAX_RESPONSE */
	size_t resp_len;
	bool resp_over;			/* more came than that */
};

struct grpc_client {
	char *host;
	char *server_name;
	uint16_t port;
	char authority[300];
	char *user_agent;
	struct tls_ctx *tls;		/* https: verifies the server; NULL for h2c */
	struct grpc_io io;		/* fd -1: not connected; conn: TLS over it (https) */
	bool goaway;			/* the server is closing: reconnect for the next call */
	struct call call;
};

/* ---- connection ---- */

void grpc_client_disconnect(struct grpc_client *g)
{
	if (g->io.sess)
		nghttp2_session_del(g->io.sess);
	g->io.sess = NULL;
	tls_conn_free(g->io.conn);	/* no close_notify: the socket goes anyway */
	g->io.conn = NULL;
	if (g->io.fd >= 0)
		close(g->io.fd);
	g->io.fd = -1;
	g->goaway = false;
}

static int tcp_connect(struct grpc_client *g, uint64_t deadline, const volatile bool *cancel,
		       char *msg, size_t msglen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *ai;
	char port[8];
	int err = -ECONNREFUSED, fd = -1;

	snprintf(port, sizeof(port), "%u", g->port);
	int gai = getaddrinfo(g->host, port, &hints, &res);
	if (gai) {
		snprintf(msg, msglen, "resolving %.120s: %s", g->host, gai_strerror(gai));
		return -EHOSTUNREACH;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd == -1) {
			err = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			int soerr = 0;
			socklen_t sl = sizeof(soerr);
			err = grpc_io_wait(fd, POLLOUT, deadline, cancel);
			if (!err && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
				break;
			if (!err)
				err = -(soerr ? soerr : ECONNREFUSED);
		} else {
			err = -errno;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(msg, msglen, "connecting to %.120s: %s", g->authority, strerror(-err));
		return err;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	g->io.fd = fd;
	return 0;
}

/* https: the TLS handshake on the connected socket. The server's certificate is checked
 * against the CA file or the system store and the server name (tls_conn_new), and it must
 * select ALPN h2 (PROTOCOL-HTTP2.md: "h2" over TLS). */
static int tls_connect(struct grpc_client *g, uint64_t deadline, const volatile bool *cancel,
		       char *msg, size_t msglen)
{
	struct tls_conn_opts o = { .hostname = g->server_name ? g->server_name : g->host };
	int err;

	if (!(g->io.conn = tls_conn_new(g->tls, g->io.fd, &o))) {
		err = -errno;
		snprintf(msg, msglen, "TLS to %.120s: %s", g->authority, strerror(-err));
		return err;
	}
	if ((err = grpc_io_handshake(&g->io, deadline, cancel))) {
		snprintf(msg, msglen, "TLS handshake with %.120s: %.100s", g->authority,
			 err == -ETIMEDOUT ? "timed out" : *tls_conn_reason(g->io.conn) ? tls_conn_reason(g->io.conn)
										 : strerror(-err));
		return err;
	}
	if (strcmp(tls_conn_alpn(g->io.conn), "h2") != 0) {
		snprintf(msg, msglen, "TLS to %.120s: the server did not select ALPN h2", g->authority);
		return -EPROTO;
	}
	return 0;
}

/* ---- nghttp2 callbacks (RFC 9113 framing is nghttp2's; gRPC semantics are ours) ---- */

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
		     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
	struct grpc_client *g = ud;
	struct call *c = &g->call;
	struct grpc_result *r = c->res;
	char v[32];

	if (frame->hd.stream_id != c->stream_id)
		return 0;
	snprintf(v, sizeof(v), "%.*s", (int)MIN(valuelen, sizeof(v) - 1), (const char *)value);
	if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
		r->http_status = atoi(v);
	} else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
		char *end;
		long st = strtol(v, &end, 10);
		c->grpc_status = (end != v && *end == '\0' && st >= 0 && st < 64) ? (int)st
										 : GRPC_STATUS_UNKNOWN;
	} else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
		grpc_message_decode((const char *)value, valuelen, r->message, sizeof(r->message));
	} else if (namelen == 22 && memcmp(name, "grpc-retry-pushback-ms", 22) == 0) {
		r->pushback_ms = (uint32_t)MIN(strtoul(v, NULL, 10),
					       (unsigned long)GRPC_CLIENT_MAX_DELAY_MS);
	} else if (namelen == 23 && memcmp(name, "grpc-status-details-bin", 23) == 0 && !r->details) {
		uint8_t *buf = malloc(GRPC_CLIENT_MAX_DETAILS);
		ssize_t n = buf ? base64_decode((const char *)value, valuelen, buf,
						GRPC_CLIENT_MAX_DETAILS, false) : -1;
		if (n >= 0) {
			r->details = buf;
			r->details_len = (size_t)n;
		} else {
			free(buf);
		}
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
			 size_t len, void *ud)
{
	struct grpc_client *g = ud;
	struct call *c = &g->call;
	size_t room = GRPC_FRAME_HDR + GRPC_CLIENT_MAX_RESPONSE - c->resp_len;

	if (stream_id != c->stream_id || !c->resp)
		return 0;
	if (len > room)
		c->resp_over = true;
	memcpy(c->resp + c->resp_len, data, MIN(room, len));
	c->resp_len += MIN(room, len);
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud)
{
	struct grpc_client *g = ud;

	if (stream_id == g->call.stream_id) {
		g->call.closed = true;
		g->call.rst_error = error_code;
	}
	return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
	struct grpc_client *g = ud;

	if (frame->hd.type == NGHTTP2_GOAWAY)
		g->goaway = true;
	return 0;
}

static ssize_t body_read(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t len,
			 uint32_t *data_flags, nghttp2_data_source *src, void *ud)
{
	struct grpc_client *g = ud;
	struct call *c = &g->call;
	size_t n = MIN(len, c->body_len - c->body_off);

	memcpy(buf, c->body + c->body_off, n);
	c->body_off += n;
	if (c->body_off == c->body_len)
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

static int session_open(struct grpc_client *g, char *msg, size_t msglen)
{
	nghttp2_session_callbacks *cb;
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20 },
	};

	if (nghttp2_session_callbacks_new(&cb))
		return -ENOMEM;
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	int rv = nghttp2_session_client_new(&g->io.sess, cb, g);
	nghttp2_session_callbacks_del(cb);
	if (rv) {
		g->io.sess = NULL;
		snprintf(msg, msglen, "nghttp2: %s", nghttp2_strerror(rv));
		return -ENOMEM;
	}
	rv = nghttp2_submit_settings(g->io.sess, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv));
	if (rv) {
		snprintf(msg, msglen, "nghttp2: %s", nghttp2_strerror(rv));
		return -EPROTO;
	}
	return 0;
}

/* Drives the session until the call's stream closed. */
static int pump(struct grpc_client *g, uint64_t deadline, const volatile bool *cancel)
{
	short events = POLLIN;

	for (;;) {
		int err = grpc_io_flush(&g->io, deadline, cancel);
		if (err)
			return err;
		if (g->call.closed)
			return 0;
		if (!nghttp2_session_want_read(g->io.sess) && !nghttp2_session_want_write(g->io.sess))
			return -ECONNRESET;
		err = grpc_io_wait(g->io.fd, events, deadline, cancel);
		if (err)
			return err;
		err = grpc_io_read(&g->io, &events);
		if (err && err != -EAGAIN)
			return err;
		if (!err)
			events = POLLIN;
	}
}

/* A reused connection may have been closed by the server while idle (GOAWAY, FIN):
 * read what arrived since the last call before trusting it. */
static bool conn_alive(struct grpc_client *g)
{
	if (g->io.fd < 0 || g->goaway)
		return false;
	for (;;) {
		struct pollfd p = { .fd = g->io.fd, .events = POLLIN };
		short events;
		if (poll(&p, 1, 0) <= 0)
			break;
		int err = grpc_io_read(&g->io, &events);
		if (err == -EAGAIN)	/* TLS records with no data in them (session tickets) */
			break;
		if (err)
			return false;
	}
	return !g->goaway && (nghttp2_session_want_read(g->io.sess) || nghttp2_session_want_write(g->io.sess));
}

/* ---- the call ---- */

static int call_once(struct grpc_client *g, const nghttp2_nv *nv, size_t nnv, const uint8_t *body,
		     size_t len, uint64_t deadline, const volatile bool *cancel, struct grpc_result *r)
{
	struct call *c = &g->call;
	int err;

	r->reused = false;
	if (!conn_alive(g)) {
		grpc_client_disconnect(g);
		if ((err = tcp_connect(g, deadline, cancel, r->message, sizeof(r->message))))
			return err;
		if (g->tls && (err = tls_connect(g, deadline, cancel, r->message, sizeof(r->message))))
			return err;
		if ((err = session_open(g, r->message, sizeof(r->message))))
			return err;
	} else {
		r->reused = true;
	}
	free(c->resp);
	memset(c, 0, sizeof(*c));
	c->grpc_status = -1;
	c->res = r;
	c->body = body;
	c->body_len = len;
	if (!(c->resp = malloc(GRPC_FRAME_HDR + GRPC_CLIENT_MAX_RESPONSE)))
		return -ENOMEM;
	nghttp2_data_provider dp = { .read_callback = body_read };
	c->stream_id = nghttp2_submit_request(g->io.sess, NULL, nv, nnv, &dp, NULL);
	if (c->stream_id < 0) {
		snprintf(r->message, sizeof(r->message), "nghttp2: %s", nghttp2_strerror(c->stream_id));
		return c->stream_id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? -EAGAIN : -EPROTO;
	}
	err = pump(g, deadline, cancel);
	if (err) {
		snprintf(r->message, sizeof(r->message), "%.120s: %s", g->authority,
			 err == -ETIMEDOUT ? "timed out waiting for the server" : strerror(-err));
		return err;
	}
	return 0;
}

/* Resets what a failed first attempt left in r before the second. */
static void result_reset(struct grpc_result *r)
{
	grpc_result_fini(r);
	memset(r, 0, sizeof(*r));
}

int grpc_client_call(struct grpc_client *g, const char *path, const struct grpc_header *headers,
		     size_t nheaders, const uint8_t *msg, size_t len, uint32_t timeout_ms,
		     const volatile bool *cancel, struct grpc_result *r)
{
	struct call *c = &g->call;
	uint64_t deadline = now_mono_ms() + timeout_ms;
	char tmo[GRPC_TIMEOUT_STR_MAX];
	nghttp2_nv *nv = NULL;
	uint8_t *body = NULL;
	size_t nnv = 0;
	int err;

	memset(r, 0, sizeof(*r));
	if (len > UINT32_MAX) {
		snprintf(r->message, sizeof(r->message), "request of %zu bytes", len);
		return -EMSGSIZE;
	}
	if (!(nv = calloc(FIXED_HEADERS + nheaders, sizeof(*nv))) ||
	    !(body = malloc(GRPC_FRAME_HDR + len))) {
		err = -ENOMEM;
		snprintf(r->message, sizeof(r->message), "out of memory");
		goto out;
	}
	grpc_frame_header(body, (uint32_t)len);
	if (len)
		memcpy(body + GRPC_FRAME_HDR, msg, len);
	grpc_timeout_format(timeout_ms, tmo);
	grpc_io_nv(&nv[nnv++], ":method", "POST");
	grpc_io_nv(&nv[nnv++], ":scheme", g->tls ? "https" : "http");
	grpc_io_nv(&nv[nnv++], ":path", path);
	grpc_io_nv(&nv[nnv++], ":authority", g->authority);
	grpc_io_nv(&nv[nnv++], "content-type", "application/grpc");
	grpc_io_nv(&nv[nnv++], "te", "trailers");
	grpc_io_nv(&nv[nnv++], "user-agent", g->user_agent);
	grpc_io_nv(&nv[nnv++], "grpc-timeout", tmo);
	for (size_t i = 0; i < nheaders; i++)
		grpc_io_nv(&nv[nnv++], headers[i].name, headers[i].value);

	err = call_once(g, nv, nnv, body, GRPC_FRAME_HDR + len, deadline, cancel, r);
	if (err && r->reused && r->http_status == 0 && err != -ETIMEDOUT && err != -ECANCELED) {
		/* the idle connection died under us before any answer: once more, fresh */
		grpc_client_disconnect(g);
		result_reset(r);
		err = call_once(g, nv, nnv, body, GRPC_FRAME_HDR + len, deadline, cancel, r);
	}
	if (err) {
		grpc_client_disconnect(g);
		goto out;
	}
	if (r->http_status != 200) {
		r->status = grpc_status_from_http(r->http_status);
		snprintf(r->message, sizeof(r->message), "HTTP status %d", r->http_status);
	} else if (c->grpc_status < 0) {
		/* the stream ended without trailers: reset, or a broken server */
		r->status = c->rst_error ? GRPC_STATUS_UNAVAILABLE : GRPC_STATUS_INTERNAL;
		snprintf(r->message, sizeof(r->message), "stream closed without grpc-status (%s)",
			 nghttp2_http2_strerror(c->rst_error));
	} else {
		r->status = c->grpc_status;
	}
	if (r->status == GRPC_STATUS_OK && c->resp_len) {
		const uint8_t *m;
		size_t mlen;
		ssize_t n = grpc_frame_parse(c->resp, c->resp_len, GRPC_CLIENT_MAX_RESPONSE, &m, &mlen);
		if (n > 0 && (r->response = malloc(mlen ? mlen : 1))) {
			memcpy(r->response, m, mlen);
			r->response_len = mlen;
		} else if (n != 0 || c->resp_over) {
			r->status = n == -ENOTSUP ? GRPC_STATUS_UNIMPLEMENTED : GRPC_STATUS_RESOURCE_EXHAUSTED;
			snprintf(r->message, sizeof(r->message), "response message %s",
				 n == -ENOTSUP ? "compressed" : "over the size limit");
		} else {
			r->status = GRPC_STATUS_INTERNAL;
			snprintf(r->message, sizeof(r->message), "response message truncated");
		}
	}
out:
	if (g->goaway)
		grpc_client_disconnect(g);
	free(c->resp);
	c->resp = NULL;
	free(body);
	free(nv);
	return err;
}

void grpc_result_fini(struct grpc_result *r)
{
	if (!r)
		return;
	free(r->details);
	free(r->response);
	r->details = NULL;
	r->response = NULL;
}

const char *grpc_client_authority(const struct grpc_client *g)
{
	return g->authority;
}

void grpc_client_free(struct grpc_client *g)
{
	if (!g)
		return;
	grpc_client_disconnect(g);
	tls_ctx_free(g->tls);
	free(g->call.resp);
	free(g->host);
	free(g->server_name);
	free(g->user_agent);
	free(g);
}

struct grpc_client *grpc_client_new(const struct grpc_client_opts *o, char *err, size_t errlen)
{
	struct grpc_client *g;
	char sub[200];
	int e = ENOMEM;

	if (!o || !o->host || !*o->host || !o->port) {
		if (err && errlen)
			snprintf(err, errlen, "no host or port");
		errno = EINVAL;
		return NULL;
	}
	if (!(g = calloc(1, sizeof(*g))))
		goto fail;
	g->io.fd = -1;
	g->port = o->port;
	if (!(g->host = strdup(o->host)) ||
	    (o->server_name && !(g->server_name = strdup(o->server_name))) ||
	    !(g->user_agent = strdup(o->user_agent ? o->user_agent : "ambit-grpc/" AMBIT_VERSION)))
		goto fail;
	if (strchr(o->host, ':'))
		snprintf(g->authority, sizeof(g->authority), "[%.256s]:%u", o->host, o->port);
	else
		snprintf(g->authority, sizeof(g->authority), "%.256s:%u", o->host, o->port);
	if (o->tls && !(g->tls = tls_ctx_new_https_client(o->ca_file, o->client_cert, o->client_key,
							  "h2", sub, sizeof(sub)))) {
		e = errno;
		if (err && errlen)
			snprintf(err, errlen, "%s", sub);
		grpc_client_free(g);
		errno = e;
		return NULL;
	}
	return g;
fail:
	grpc_client_free(g);
	if (err && errlen)
		snprintf(err, errlen, "out of memory");
	errno = e;
	return NULL;
}
