// SPDX-License-Identifier: Apache-2.0
/* OTLP/gRPC client (OTLP spec "OTLP/gRPC", gRPC over HTTP2 PROTOCOL-HTTP2.md) with nghttp2
 * over cleartext HTTP/2: one unary TraceService/Export call per batch on a connection that
 * is kept and reused, with blocking poll()-driven I/O on the batcher thread. */
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

#ifndef AMBIT_VERSION
#define AMBIT_VERSION "0.0.0"
#endif

#define GRPC_PATH "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
#define GRPC_MAX_RESPONSE (64 * 1024)
#define GRPC_POLL_SLICE_MS 100	/* how often a blocked call looks at the cancel flag */

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

/* ---- nghttp2 callbacks (RFC 9113 framing is nghttp2's; gRPC semantics are ours) ---- */

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
		c->pushback_ms = (uint32_t)MIN(strtoul(v, NULL, 10), 60000ul);
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
		if (n == 0)
			return 0;
		for (ssize_t off = 0; off < n;) {
			ssize_t w = send(g->fd, data + off, (size_t)(n - off), MSG_NOSIGNAL);
			if (w >= 0) {
				off += w;
				continue;
			}
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			int err = wait_fd(g->fd, POLLOUT, deadline, cancel);
			if (err)
				return err;
		}
	}
}

/* Reads what is there (non-blocking) into nghttp2. 0, -EAGAIN when nothing was there,
 * -ECONNRESET on EOF, or another -errno. */
static int read_in(struct export_grpc *g)
{
	uint8_t buf[16384];
	ssize_t n = recv(g->fd, buf, sizeof(buf), 0);

	if (n == 0)
		return -ECONNRESET;
	if (n < 0)
		return errno == EINTR || errno == EWOULDBLOCK ? -EAGAIN : -errno;
	if (nghttp2_session_mem_recv(g->sess, buf, (size_t)n) < 0)
		return -EPROTO;
	return 0;
}

/* Drives the session until the call's stream closed. */
static int pump(struct export_grpc *g, uint64_t deadline, const volatile bool *cancel)
{
	for (;;) {
		int err = flush_out(g, deadline, cancel);
		if (err)
			return err;
		if (g->call.closed)
			return 0;
		if (!nghttp2_session_want_read(g->sess) && !nghttp2_session_want_write(g->sess))
			return -ECONNRESET;
		err = wait_fd(g->fd, POLLIN, deadline, cancel);
		if (err)
			return err;
		err = read_in(g);
		if (err && err != -EAGAIN)
			return err;
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
		if (poll(&p, 1, 0) <= 0)
			break;
		if (read_in(g))
			return false;
	}
	return !g->goaway && (nghttp2_session_want_read(g->sess) || nghttp2_session_want_write(g->sess));
}

/* ---- the Export call ---- */

static bool grpc_retryable(int code)
{
	/* OTLP/gRPC "Failures": the retryable codes */
	switch (code) {
	case GRPC_CANCELLED: case GRPC_DEADLINE_EXCEEDED: case GRPC_RESOURCE_EXHAUSTED:
	case GRPC_ABORTED: case GRPC_OUT_OF_RANGE: case GRPC_UNAVAILABLE: case GRPC_DATA_LOSS:
		return true;
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
		st->retryable = grpc_retryable(code);
		st->retry_after_ms = c->pushback_ms;
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
				      size_t nheaders, char *err, size_t errlen)
{
	struct export_grpc *g;
	struct otlp_url u;

	if (otlp_url_parse(endpoint, &u, err, errlen)) {
		errno = EINVAL;
		return NULL;
	}
	if (u.https) {
		snprintf(err, errlen, "OTLP/gRPC endpoint %.128s: https not supported yet "
			 "(use http://, or protocol http/protobuf for TLS)", endpoint);
		errno = ENOTSUP;
		return NULL;
	}
	g = calloc(1, sizeof(*g));
	if (!g)
		goto nomem;
	g->fd = -1;
	g->ex.ops = &grpc_ops;
	g->url = u;
	if (strchr(u.host, ':'))
		snprintf(g->authority, sizeof(g->authority), "[%s]:%u", u.host, u.port);
	else
		snprintf(g->authority, sizeof(g->authority), "%s:%u", u.host, u.port);
	g->nv = calloc(nheaders + 8, sizeof(*g->nv));
	g->strs = calloc(2 * nheaders + 1, sizeof(*g->strs));
	if (!g->nv || !g->strs)
		goto nomem;
	nv_set(&g->nv[g->nnv++], ":method", "POST");
	nv_set(&g->nv[g->nnv++], ":scheme", "http");
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
