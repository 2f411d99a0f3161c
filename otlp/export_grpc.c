// SPDX-License-Identifier: Apache-2.0
/* OTLP/gRPC client (OTLP spec "OTLP/gRPC", gRPC over HTTP2 PROTOCOL-HTTP2.md) with nghttp2
 * over cleartext HTTP/2 (http://) or TLS with ALPN h2 through tls/ (https://): one unary
 * TraceService/Export call per batch on a connection that is kept and reused, with
 * poll()-driven I/O on a non-blocking socket, on the batcher thread. */
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

#include "common/log.h"
#include "common/util.h"
#include "otlp/config.h"
#include "otlp/encode.h"
#include "otlp/exporter.h"
#include "tls/conn.h"
#include "tls/ctx.h"

#ifndef AMBIT_VERSION
#define AMBIT_VERSION "0.0.0"
#endif

#define GRPC_PATH "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
#define GRPC_MAX_RESPONSE (64 * 1024)
#define GRPC_POLL_SLICE_MS 100	/* how often a blocked call looks at the cancel flag */
#define GRPC_MAX_DETAILS 4096	/* decoded grpc-status-details-bin we look into */
#define GRPC_MAX_DELAY_MS 60000	/* bound on a server-asked retry delay */

/* gRPC status codes (grpc/doc/statuscodes.md) the exporter needs by name. */
enum {
	GRPC_OK = 0, GRPC_CANCELLED = 1, GRPC_UNKNOWN = 2, GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_PERMISSION_DENIED = 7, GRPC_RESOURCE_EXHAUSTED = 8, GRPC_ABORTED = 10,
	GRPC_OUT_OF_RANGE = 11, GRPC_UNIMPLEMENTED = 12, GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14, GRPC_DATA_LOSS = 15, GRPC_UNAUTHENTICATED = 16,
};

/* The state of one Export call. */
struct grpc_call {
	int32_t stream_id;
	const uint8_t *body;		/* framed request, borrowed */
	size_t body_len, body_off;
	bool closed;			/* the stream closed (response complete or reset) */
	uint32_t rst_error;		/* HTTP/2 error code when reset */
	int http_status;		/* 0 until :status */
	int grpc_status;		/* -1 until grpc-status */
	char grpc_message[160];
	uint32_t pushback_ms;		/* grpc-retry-pushback-ms */
	bool retry_info;		/* grpc-status-details-bin carried a RetryInfo */
	uint32_t retry_info_ms;		/* its retry_delay */
	uint8_t *resp;			/* response DATA, at most GRPC_MAX_RESPONSE */
	size_t resp_len;
};

struct export_grpc {
	struct otlp_exporter ex;
	struct otlp_url url;
	char authority[300];
	nghttp2_nv *nv;			/* request headers: fixed ones + custom; grpc-timeout last */
	size_t nnv;
	char **strs;			/* owned strings behind nv */
	size_t nstrs;
	int fd;				/* -1: not connected */
	struct tls_ctx *tls;		/* https: verifies the collector; NULL for h2c */
	struct tls_conn *conn;		/* https: the TLS layer over fd while connected */
	nghttp2_session *sess;
	bool goaway;			/* the server is closing: reconnect for the next call */
	struct grpc_call call;
};

/* ---- connection ---- */

static void grpc_disconnect(struct export_grpc *g)
{
	if (g->sess)
		nghttp2_session_del(g->sess);
	g->sess = NULL;
	tls_conn_free(g->conn);	/* no close_notify: the socket goes anyway */
	g->conn = NULL;
	if (g->fd >= 0)
		close(g->fd);
	g->fd = -1;
	g->goaway = false;
}

static int wait_fd(int fd, short events, uint64_t deadline, const volatile bool *cancel)
{
	for (;;) {
		uint64_t now = now_mono_ms();
		if (cancel && *cancel)
			return -ECANCELED;
		if (now >= deadline)
			return -ETIMEDOUT;
		struct pollfd p = { .fd = fd, .events = events };
		int n = poll(&p, 1, (int)MIN(deadline - now, (uint64_t)GRPC_POLL_SLICE_MS));
		if (n == -1 && errno != EINTR)
			return -errno;
		if (n > 0)
			return 0;
	}
}

static int tcp_connect(struct export_grpc *g, uint64_t deadline, const volatile bool *cancel, char *msg, size_t msglen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *ai;
	char port[8];
	int err = -ECONNREFUSED, fd = -1;

	snprintf(port, sizeof(port), "%u", g->url.port);
	int gai = getaddrinfo(g->url.host, port, &hints, &res);
	if (gai) {
		snprintf(msg, msglen, "resolving %.120s: %s", g->url.host, gai_strerror(gai));
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
			err = wait_fd(fd, POLLOUT, deadline, cancel);
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
		snprintf(msg, msglen, "connecting to %.120s:%u: %s", g->url.host, g->url.port, strerror(-err));
		return err;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	g->fd = fd;
	return 0;
}

/* The poll events a TLS step that said -EAGAIN waits for. */
static short tls_events(const struct tls_conn *c)
{
	unsigned w = tls_conn_want(c);
	return (short)((w & TLS_WANT_READ ? POLLIN : 0) | (w & TLS_WANT_WRITE ? POLLOUT : 0));
}

/* https: the TLS handshake on the connected socket. The collector's certificate is checked
 * against the CA file or the system store and the URL's host (tls_conn_new), and it must
 * select ALPN h2 (gRPC PROTOCOL-HTTP2.md: "h2" over TLS). */
static int tls_connect(struct export_grpc *g, uint64_t deadline, const volatile bool *cancel, char *msg, size_t msglen)
{
	struct tls_conn_opts o = { .hostname = g->url.host };
	int err;

	if (!(g->conn = tls_conn_new(g->tls, g->fd, &o))) {
		err = -errno;
		snprintf(msg, msglen, "TLS to %.120s: %s", g->url.host, strerror(-err));
		return err;
	}
	while ((err = tls_conn_handshake(g->conn)) == -EAGAIN)
		if ((err = wait_fd(g->fd, tls_events(g->conn), deadline, cancel)))
			break;
	if (err) {
		snprintf(msg, msglen, "TLS handshake with %.120s:%u: %.100s", g->url.host, g->url.port,
			 err == -ETIMEDOUT ? "timed out" : *tls_conn_reason(g->conn) ? tls_conn_reason(g->conn)
										 : strerror(-err));
		return err;
	}
	if (strcmp(tls_conn_alpn(g->conn), "h2") != 0) {
		snprintf(msg, msglen, "TLS to %.120s:%u: the collector did not select ALPN h2",
			 g->url.host, g->url.port);
		return -EPROTO;
	}
	return 0;
}

/* One write of the connection's bytes: >0 taken, -EAGAIN (then *events says for what), or
 * -errno. */
static ssize_t conn_write(struct export_grpc *g, const uint8_t *data, size_t len, short *events)
{
	*events = POLLOUT;
	if (g->conn) {
		ssize_t w = tls_conn_write(g->conn, data, len);
		if (w == -EAGAIN)
			*events = tls_events(g->conn);
		return w;
	}
	for (;;) {
		ssize_t w = send(g->fd, data, len, MSG_NOSIGNAL);
		if (w >= 0)
			return w;
		if (errno != EINTR)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

/* ---- nghttp2 callbacks (RFC 9113 framing is nghttp2's; gRPC semantics are ours) ---- */

/* Base64 (RFC 4648 §4), padded or not, as gRPC sends "-bin" values (PROTOCOL-HTTP2.md
 * "Custom-Metadata"). Returns the decoded length, or -1 if malformed or over outlen. */
static ssize_t base64_decode(const uint8_t *in, size_t len, uint8_t *out, size_t outlen)
{
	uint32_t acc = 0;
	size_t bits = 0, o = 0;

	while (len && in[len - 1] == '=')
		len--;
	for (size_t i = 0; i < len; i++) {
		uint8_t ch = in[i];
		int v = ch >= 'A' && ch <= 'Z' ? ch - 'A' : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26
		      : ch >= '0' && ch <= '9' ? ch - '0' + 52 : ch == '+' ? 62 : ch == '/' ? 63 : -1;
		if (v < 0)
			return -1;
		acc = acc << 6 | (uint32_t)v;
		if ((bits += 6) >= 8) {
			bits -= 8;
			if (o == outlen)
				return -1;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	return bits >= 6 ? -1 : (ssize_t)o;	/* one stray character is not base64 */
}

/* OTLP/gRPC "Failures": the server says when to retry in a RetryInfo of the status details. */
static void read_status_details(struct grpc_call *c, const uint8_t *value, size_t len)
{
	uint8_t *buf = malloc(GRPC_MAX_DETAILS);
	ssize_t n = buf ? base64_decode(value, len, buf, GRPC_MAX_DETAILS) : -1;

	if (n >= 0 && otlp_decode_retry_info(buf, (size_t)n, GRPC_MAX_DELAY_MS, &c->retry_info_ms) == 0)
		c->retry_info = true;
	free(buf);
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
		     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
	struct export_grpc *g = ud;
	struct grpc_call *c = &g->call;
	char v[160];

	if (frame->hd.stream_id != c->stream_id)
		return 0;
	snprintf(v, sizeof(v), "%.*s", (int)MIN(valuelen, sizeof(v) - 1), (const char *)value);
	if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
		c->http_status = atoi(v);
	} else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
		char *end;
		long st = strtol(v, &end, 10);
		c->grpc_status = (end != v && *end == '\0' && st >= 0 && st < 64) ? (int)st : GRPC_UNKNOWN;
	} else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
		/* percent-encoded (PROTOCOL-HTTP2.md "Responses"); decode what is well formed */
		size_t o = 0;
		for (size_t i = 0; v[i] && o + 1 < sizeof(c->grpc_message); i++) {
			unsigned hi, lo;
			if (v[i] == '%' && sscanf(v + i + 1, "%1x%1x", &hi, &lo) == 2) {
				c->grpc_message[o++] = (char)(hi << 4 | lo);
				i += 2;
			} else {
				c->grpc_message[o++] = v[i];
			}
		}
		c->grpc_message[o] = '\0';
	} else if (namelen == 22 && memcmp(name, "grpc-retry-pushback-ms", 22) == 0) {
		c->pushback_ms = (uint32_t)MIN(strtoul(v, NULL, 10), (unsigned long)GRPC_MAX_DELAY_MS);
	} else if (namelen == 23 && memcmp(name, "grpc-status-details-bin", 23) == 0) {
		read_status_details(c, value, valuelen);
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
			 size_t len, void *ud)
{
	struct export_grpc *g = ud;
	struct grpc_call *c = &g->call;

	if (stream_id != c->stream_id || !c->resp)
		return 0;
	size_t room = GRPC_MAX_RESPONSE - c->resp_len;
	memcpy(c->resp + c->resp_len, data, MIN(room, len));
	c->resp_len += MIN(room, len);
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud)
{
	struct export_grpc *g = ud;

	if (stream_id == g->call.stream_id) {
		g->call.closed = true;
		g->call.rst_error = error_code;
	}
	return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
	struct export_grpc *g = ud;

	if (frame->hd.type == NGHTTP2_GOAWAY)
		g->goaway = true;
	return 0;
}

static ssize_t body_read(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t len,
			 uint32_t *data_flags, nghttp2_data_source *src, void *ud)
{
	struct export_grpc *g = ud;
	struct grpc_call *c = &g->call;
	size_t n = MIN(len, c->body_len - c->body_off);

	memcpy(buf, c->body + c->body_off, n);
	c->body_off += n;
	if (c->body_off == c->body_len)
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

static int session_open(struct export_grpc *g, char *msg, size_t msglen)
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
	int rv = nghttp2_session_client_new(&g->sess, cb, g);
	nghttp2_session_callbacks_del(cb);
	if (rv) {
		g->sess = NULL;
		snprintf(msg, msglen, "nghttp2: %s", nghttp2_strerror(rv));
		return -ENOMEM;
	}
	rv = nghttp2_submit_settings(g->sess, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv));
	if (rv) {
		snprintf(msg, msglen, "nghttp2: %s", nghttp2_strerror(rv));
		return -EPROTO;
	}
	return 0;
}

/* Writes what nghttp2 has queued, waiting for the socket as needed. */
static int flush_out(struct export_grpc *g, uint64_t deadline, const volatile bool *cancel)
{
	for (;;) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(g->sess, &data);
		if (n < 0)
			return -EPROTO;
		if (n == 0) {
			/* Records a full socket did not take yet. */
			while (g->conn && tls_conn_unsent(g->conn)) {
				int err = tls_conn_flush(g->conn);
				if (err == -EAGAIN)
					err = wait_fd(g->fd, POLLOUT, deadline, cancel);
				if (err)
					return err;
			}
			return 0;
		}
		for (ssize_t off = 0; off < n;) {
			short events;
			ssize_t w = conn_write(g, data + off, (size_t)(n - off), &events);
			if (w >= 0) {
				off += w;
				continue;
			}
			if (w != -EAGAIN)
				return (int)w;
			int err = wait_fd(g->fd, events, deadline, cancel);
			if (err)
				return err;
		}
	}
}

/* Reads what is there (non-blocking) into nghttp2, with what TLS already decrypted.
 * 0, -EAGAIN when nothing was there (*events then says what to wait for), -ECONNRESET on
 * EOF, or another -errno. */
static int read_in(struct export_grpc *g, short *events)
{
	uint8_t buf[16384];
	ssize_t n;

	*events = POLLIN;
	do {
		if (g->conn) {
			n = tls_conn_read(g->conn, buf, sizeof(buf));
			if (n == -EAGAIN)
				*events = tls_events(g->conn);
		} else {
			n = recv(g->fd, buf, sizeof(buf), 0);
			if (n < 0)
				n = errno == EINTR || errno == EWOULDBLOCK ? -EAGAIN : -errno;
		}
		if (n == 0)
			return -ECONNRESET;
		if (n < 0)
			return (int)n;
		if (nghttp2_session_mem_recv(g->sess, buf, (size_t)n) < 0)
			return -EPROTO;
	} while (g->conn && tls_conn_pending(g->conn));	/* epoll/poll will not announce these */
	return 0;
}

/* Drives the session until the call's stream closed. */
static int pump(struct export_grpc *g, uint64_t deadline, const volatile bool *cancel)
{
	short events = POLLIN;

	for (;;) {
		int err = flush_out(g, deadline, cancel);
		if (err)
			return err;
		if (g->call.closed)
			return 0;
		if (!nghttp2_session_want_read(g->sess) && !nghttp2_session_want_write(g->sess))
			return -ECONNRESET;
		err = wait_fd(g->fd, events, deadline, cancel);
		if (err)
			return err;
		err = read_in(g, &events);
		if (err && err != -EAGAIN)
			return err;
		if (!err)
			events = POLLIN;
	}
}

/* A reused connection may have been closed by the server while idle (GOAWAY, FIN):
 * read what arrived since the last call before trusting it. */
static bool conn_alive(struct export_grpc *g)
{
	if (g->fd < 0 || g->goaway)
		return false;
	for (;;) {
		struct pollfd p = { .fd = g->fd, .events = POLLIN };
		short events;
		if (poll(&p, 1, 0) <= 0)
			break;
		int err = read_in(g, &events);
		if (err == -EAGAIN)	/* TLS records with no data in them (session tickets) */
			break;
		if (err)
			return false;
	}
	return !g->goaway && (nghttp2_session_want_read(g->sess) || nghttp2_session_want_write(g->sess));
}

/* ---- the Export call ---- */

static bool grpc_retryable(int code, bool retry_info)
{
	/* OTLP/gRPC "Failures": the retryable codes; RESOURCE_EXHAUSTED only when the server
	 * can recover, which it says by sending RetryInfo ("OTLP/gRPC Throttling") */
	switch (code) {
	case GRPC_CANCELLED: case GRPC_DEADLINE_EXCEEDED: case GRPC_ABORTED:
	case GRPC_OUT_OF_RANGE: case GRPC_UNAVAILABLE: case GRPC_DATA_LOSS:
		return true;
	case GRPC_RESOURCE_EXHAUSTED:
		return retry_info;
	}
	return false;
}

/* gRPC's HTTP-to-status mapping (doc/http-grpc-status-mapping.md) for non-200 answers. */
static int http_to_grpc(int status)
{
	switch (status) {
	case 400: return GRPC_INTERNAL;
	case 401: return GRPC_UNAUTHENTICATED;
	case 403: return GRPC_PERMISSION_DENIED;
	case 404: return GRPC_UNIMPLEMENTED;
	case 429: case 502: case 503: case 504: return GRPC_UNAVAILABLE;
	}
	return GRPC_UNKNOWN;
}

static int call_once(struct export_grpc *g, const uint8_t *body, size_t len, uint32_t timeout_ms,
		     uint64_t deadline, struct otlp_export_status *st, bool *sent_on_reused)
{
	struct grpc_call *c = &g->call;
	char tmo[16];
	int err;

	*sent_on_reused = false;
	if (!conn_alive(g)) {
		grpc_disconnect(g);
		if ((err = tcp_connect(g, deadline, st->cancel, st->msg, sizeof(st->msg))))
			return err;
		if (g->tls && (err = tls_connect(g, deadline, st->cancel, st->msg, sizeof(st->msg))))
			return err;
		if ((err = session_open(g, st->msg, sizeof(st->msg))))
			return err;
	} else {
		*sent_on_reused = true;
	}
	free(c->resp);
	memset(c, 0, sizeof(*c));
	c->grpc_status = -1;
	c->body = body;
	c->body_len = len;
	c->resp = malloc(GRPC_MAX_RESPONSE);
	if (!c->resp)
		return -ENOMEM;
	/* grpc-timeout: at most 8 digits and a unit (PROTOCOL-HTTP2.md "Requests") */
	snprintf(tmo, sizeof(tmo), "%um", MIN(timeout_ms, 99999999u));
	g->nv[g->nnv - 1].value = (uint8_t *)tmo;
	g->nv[g->nnv - 1].valuelen = strlen(tmo);
	nghttp2_data_provider dp = { .read_callback = body_read };
	c->stream_id = nghttp2_submit_request(g->sess, NULL, g->nv, g->nnv, &dp, NULL);
	if (c->stream_id < 0) {
		snprintf(st->msg, sizeof(st->msg), "nghttp2: %s", nghttp2_strerror(c->stream_id));
		return c->stream_id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? -EAGAIN : -EPROTO;
	}
	err = pump(g, deadline, st->cancel);
	if (err) {
		snprintf(st->msg, sizeof(st->msg), "%.120s:%u: %s", g->url.host, g->url.port,
			 err == -ETIMEDOUT ? "timed out waiting for the collector" : strerror(-err));
		return err;
	}
	return 0;
}

static int grpc_export(struct otlp_exporter *ex, struct span *const *spans, size_t n,
		       uint32_t timeout_ms, struct otlp_export_status *st)
{
	struct export_grpc *g = container_of(ex, struct export_grpc, ex);
	struct grpc_call *c = &g->call;
	uint64_t deadline = now_mono_ms() + timeout_ms;
	uint8_t *body = NULL;
	size_t len;
	bool reused;
	int err, code;

	err = otlp_encode_request(spans, n, 5, &body, &len);
	if (err) {
		snprintf(st->msg, sizeof(st->msg), "encoding %zu spans: %s", n, strerror(-err));
		st->retryable = true;
		return err;
	}
	/* gRPC Length-Prefixed-Message: compressed flag 0, 4-byte big-endian length */
	size_t mlen = len - 5;
	body[0] = 0;
	body[1] = (uint8_t)(mlen >> 24);
	body[2] = (uint8_t)(mlen >> 16);
	body[3] = (uint8_t)(mlen >> 8);
	body[4] = (uint8_t)mlen;

	err = call_once(g, body, len, timeout_ms, deadline, st, &reused);
	if (err && reused && c->http_status == 0 && err != -ETIMEDOUT && err != -ECANCELED) {
		/* the idle connection died under us before any answer: once more, fresh */
		grpc_disconnect(g);
		err = call_once(g, body, len, timeout_ms, deadline, st, &reused);
	}
	free(body);
	if (err) {
		grpc_disconnect(g);
		st->retryable = err != -ECANCELED;	/* connection errors: retry (OTLP spec) */
		goto out;
	}
	if (c->http_status != 200) {
		code = http_to_grpc(c->http_status);
		snprintf(st->msg, sizeof(st->msg), "HTTP status %d (gRPC %d)", c->http_status, code);
	} else if (c->grpc_status < 0) {
		/* the stream ended without trailers: reset, or a broken server */
		code = c->rst_error ? GRPC_UNAVAILABLE : GRPC_INTERNAL;
		snprintf(st->msg, sizeof(st->msg), "stream closed without grpc-status (%s)",
			 nghttp2_http2_strerror(c->rst_error));
	} else {
		code = c->grpc_status;
		if (code != GRPC_OK)
			snprintf(st->msg, sizeof(st->msg), "grpc-status %d: %s", code, c->grpc_message);
	}
	if (code != GRPC_OK) {
		st->retryable = grpc_retryable(code, c->retry_info);
		st->retry_after_ms = MAX(c->pushback_ms, c->retry_info ? c->retry_info_ms : 0);
		err = st->retryable ? -EAGAIN : -EPROTO;
		goto out;
	}
	if (c->resp_len >= 5 && c->resp[0] == 0) {
		size_t m = (size_t)c->resp[1] << 24 | (size_t)c->resp[2] << 16 | (size_t)c->resp[3] << 8 | c->resp[4];
		if (m <= c->resp_len - 5)
			otlp_decode_response(c->resp + 5, m, &st->rejected, st->msg, sizeof(st->msg));
	}
	err = 0;
out:
	if (g->goaway)
		grpc_disconnect(g);
	free(c->resp);
	c->resp = NULL;
	return err;
}

static void grpc_free(struct otlp_exporter *ex)
{
	struct export_grpc *g = container_of(ex, struct export_grpc, ex);

	grpc_disconnect(g);
	tls_ctx_free(g->tls);
	free(g->call.resp);
	for (size_t i = 0; i < g->nstrs; i++)
		free(g->strs[i]);
	free(g->strs);
	free(g->nv);
	free(g);
}

static const struct otlp_exporter_ops grpc_ops = {
	.name = "grpc",
	.export_spans = grpc_export,
	.free = grpc_free,
};

static char *keep_str(struct export_grpc *g, const char *s)
{
	char *d = strdup(s);
	if (d)
		g->strs[g->nstrs++] = d;
	return d;
}

static void nv_set(nghttp2_nv *nv, const char *name, const char *value)
{
	nv->name = (uint8_t *)name;
	nv->namelen = strlen(name);
	nv->value = (uint8_t *)value;
	nv->valuelen = strlen(value);
	nv->flags = NGHTTP2_NV_FLAG_NONE;
}

struct otlp_exporter *export_grpc_new(const char *endpoint, const struct otlp_header *headers,
				      size_t nheaders, const struct otlp_exporter_tls *tls, char *err,
				      size_t errlen)
{
	struct export_grpc *g;
	struct otlp_url u;
	char sub[200];

	if (otlp_url_parse(endpoint, &u, err, errlen)) {
		errno = EINVAL;
		return NULL;
	}
	g = calloc(1, sizeof(*g));
	if (!g)
		goto nomem;
	g->fd = -1;
	g->ex.ops = &grpc_ops;
	g->url = u;
	if (u.https && !(g->tls = tls_ctx_new_https_client(tls ? tls->ca_file : NULL,
							     tls ? tls->client_cert : NULL,
							     tls ? tls->client_key : NULL, "h2",
							     sub, sizeof(sub)))) {
		int e = errno;
		snprintf(err, errlen, "OTLP/gRPC endpoint %.128s: %s", endpoint, sub);
		grpc_free(&g->ex);
		errno = e;
		return NULL;
	}
	if (strchr(u.host, ':'))
		snprintf(g->authority, sizeof(g->authority), "[%s]:%u", u.host, u.port);
	else
		snprintf(g->authority, sizeof(g->authority), "%s:%u", u.host, u.port);
	g->nv = calloc(nheaders + 8, sizeof(*g->nv));
	g->strs = calloc(2 * nheaders + 1, sizeof(*g->strs));
	if (!g->nv || !g->strs)
		goto nomem;
	nv_set(&g->nv[g->nnv++], ":method", "POST");
	nv_set(&g->nv[g->nnv++], ":scheme", u.https ? "https" : "http");
	nv_set(&g->nv[g->nnv++], ":path", GRPC_PATH);
	nv_set(&g->nv[g->nnv++], ":authority", g->authority);
	nv_set(&g->nv[g->nnv++], "content-type", "application/grpc");
	nv_set(&g->nv[g->nnv++], "te", "trailers");
	nv_set(&g->nv[g->nnv++], "user-agent", "ambit-otlp-grpc/" AMBIT_VERSION);
	for (size_t i = 0; i < nheaders; i++) {
		char *name = keep_str(g, headers[i].name), *value = keep_str(g, headers[i].value);
		if (!name || !value)
			goto nomem;
		for (char *p = name; *p; p++)	/* RFC 9113 §8.2.1: lower-case names */
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
		nv_set(&g->nv[g->nnv++], name, value);
	}
	nv_set(&g->nv[g->nnv++], "grpc-timeout", "1S");	/* set per call */
	return &g->ex;
nomem:
	if (g)
		grpc_free(&g->ex);
	snprintf(err, errlen, "out of memory");
	errno = ENOMEM;
	return NULL;
}
