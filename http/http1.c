// SPDX-License-Identifier: Apache-2.0
/* HTTP/1.x framing on top of http_parser (nodejs http-parser 2.9): the parser is paused at
 * every message end so that pipelined bytes stay with the caller until it is ready, heads are
 * kept in a bounded arena and rebuilt on the way out, bodies are re-framed as they are decoded
 * (RFC 9112 §7.1: chunked in, chunked out); the trailer section is read into the head's arena
 * and re-sent only when the caller asks (keep_trailers), else dropped (§7.1.2 allows both). */
#include "http/http1.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- buffer ---- */

static int buf_reserve(struct h1_buf *b, size_t n)
{
	if (b->off && b->off == b->len)
		b->off = b->len = 0;
	if (b->len + n <= b->cap)
		return 0;
	if (b->off) {
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
		if (b->len + n <= b->cap)
			return 0;
	}
	size_t cap = b->cap ? b->cap : 1024;
	while (cap < b->len + n)
		cap *= 2;
	uint8_t *d = realloc(b->data, cap);
	if (!d)
		return -ENOMEM;
	b->data = d;
	b->cap = cap;
	return 0;
}

int h1_buf_append(struct h1_buf *b, const void *p, size_t n)
{
	if (!n)
		return 0;
	if (buf_reserve(b, n))
		return -ENOMEM;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int h1_buf_printf(struct h1_buf *b, const char *fmt, ...)
{
	va_list ap;
	char small[256];
	int n;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n < sizeof(small))
		return h1_buf_append(b, small, (size_t)n);
	if (buf_reserve(b, (size_t)n + 1))
		return -ENOMEM;
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void h1_buf_consume(struct h1_buf *b, size_t n)
{
	b->off += n;
	if (b->off >= b->len) {
		b->off = b->len = 0;
		/* Idle connections keep no staging memory. */
		if (b->cap > 16384) {
			free(b->data);
			b->data = NULL;
			b->cap = 0;
		}
	}
}

void h1_buf_fini(struct h1_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* ---------------------------------------------------------------- sniff ---- */

/* RFC 9110 §9 methods plus the WebDAV ones http_parser knows and PATCH (RFC 5789). */
static const char *const methods[] = {
	"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
	"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "PURGE",
	"REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE",
	"MKCALENDAR", "LINK", "UNLINK", "BIND", "REBIND", "UNBIND", "ACL", "SOURCE",
};

enum h1_sniff h1_sniff(const uint8_t *p, size_t n)
{
	bool more = false;

	if (!n)
		return H1_SNIFF_MORE;
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		size_t ml = strlen(methods[i]);
		size_t k = n < ml + 1 ? n : ml + 1;
		/* the method then one space (RFC 9112 §3) */
		if (memcmp(p, methods[i], k < ml ? k : ml) != 0)
			continue;
		if (n <= ml) {
			more = true;
			continue;
		}
		if (p[ml] == ' ')
			return H1_SNIFF_HTTP;
	}
	return more ? H1_SNIFF_MORE : H1_SNIFF_OTHER;
}

/* ---------------------------------------------------------------- parser ---- */

static const char *const st_names[] = {
	[H1_ST_HEAD] = "head", [H1_ST_BODY] = "body", [H1_ST_DONE] = "done",
	[H1_ST_UPGRADED] = "upgraded", [H1_ST_ERROR] = "error",
};

const char *h1_st_to_str(enum h1_st st)
{
	return (unsigned)st < sizeof(st_names) / sizeof(st_names[0]) ? st_names[st] : "?";
}

static void fail(struct h1 *h, int status, const char *why)
{
	if (h->st == H1_ST_ERROR)
		return;
	h->st = H1_ST_ERROR;
	h->error_status = status;
	h->error = why;
}

/* Appends to the arena; the head as a whole is bounded by H1_MAX_HEAD. */
static int arena_add(struct h1 *h, const char *at, size_t len)
{
	if (!len)
		return 0;
	if (h->arena_len + len > H1_MAX_HEAD) {
		fail(h, 431, "request head too large");
		return -1;
	}
	if (h->arena_len + len > h->arena_cap) {
		size_t cap = h->arena_cap ? h->arena_cap : 2048;
		while (cap < h->arena_len + len)
			cap *= 2;
		char *a = realloc(h->arena, cap);
		if (!a) {
			fail(h, 500, "out of memory");
			return -1;
		}
		h->arena = a;
		h->arena_cap = cap;
	}
	memcpy(h->arena + h->arena_len, at, len);
	h->arena_len += len;
	return 0;
}

static struct h1 *of(http_parser *p)
{
	return p->data;
}

static int on_message_begin(http_parser *p)
{
	struct h1 *h = of(p);
	h->arena_len = 0;
	h->url = h->url_len = 0;
	h->nh = 0;
	h->ntr = 0;
	h->tr_full = false;
	h->in_value = false;
	h->chunked_out = false;
	h->body_bytes = 0;
	h->upgrade = false;
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct h1 *h = of(p);
	if (!h->url_len)
		h->url = (uint32_t)h->arena_len;
	if (arena_add(h, at, len))
		return -1;
	h->url_len += (uint32_t)len;
	return 0;
}

/* The system http_parser is built non-strict and lets a space into a field name
 * ("Transfer-Encoding : chunked"), which would go upstream as it came: names are checked here. */
bool h1_is_tchar(unsigned char c)
{
	return c > 0x20 && c < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", c);
}

/* A field name (or a piece of one) of the head or, after the body, of the trailer section:
 * into fields[*n] (at most max). Problems are reported in byte order, so the same stream gets
 * the same answer however it is split: a new field past the limit, then the bytes before a bad
 * one (which may not fit), then the bad byte. */
static int field_name(struct h1 *h, struct h1_header *fields, int *n, int max, const char *at,
		      size_t len)
{
	size_t ok = 0;
	if (h->in_value || *n == 0) {
		if (*n == max) {
			fail(h, 431, "too many header fields");
			return -1;
		}
		fields[(*n)++] = (struct h1_header){ .name = (uint32_t)h->arena_len };
		h->in_value = false;
	}
	while (ok < len && h1_is_tchar((unsigned char)at[ok]))
		ok++;
	if (arena_add(h, at, ok))
		return -1;
	fields[*n - 1].name_len += (uint32_t)ok;
	if (ok < len) {
		fail(h, 400, "invalid character in a header field name");
		return -1;
	}
	return 0;
}

static int field_value(struct h1 *h, struct h1_header *x, const char *at, size_t len)
{
	if (!h->in_value) {
		x->value = (uint32_t)h->arena_len;
		h->in_value = true;
	}
	if (arena_add(h, at, len))
		return -1;
	x->value_len += (uint32_t)len;
	return 0;
}

/* Whether len more bytes of the trailer section are kept: only when the caller wants them, and
 * within H1_MAX_TRAILERS fields and the arena's bound; past those the rest of the section is
 * dropped (the field in progress too), never an error (they were all dropped before). */
static bool trailer_fits(struct h1 *h, bool new_field, size_t len)
{
	if (!h->keep_trailers || h->tr_full)
		return false;
	if ((new_field && h->ntr == H1_MAX_TRAILERS) || h->arena_len + len > H1_MAX_HEAD) {
		if (!new_field)
			h->ntr--;	/* the field in progress */
		h->tr_full = true;
		return false;
	}
	return true;
}

/* http_parser 2.9 reports the trailer section of a chunked body through the same callbacks as
 * the head, after the last chunk and before on_message_complete (tests/unit/test_http1.c). */
static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct h1 *h = of(p);
	if (h->st == H1_ST_BODY) {
		if (!trailer_fits(h, h->in_value || !h->ntr, len))
			return 0;
		return field_name(h, h->tr, &h->ntr, H1_MAX_TRAILERS, at, len);
	}
	if (h->st != H1_ST_HEAD)
		return 0;
	return field_name(h, h->h, &h->nh, H1_MAX_HEADERS, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct h1 *h = of(p);
	if (h->st == H1_ST_BODY) {
		if (!h->ntr || !trailer_fits(h, false, len))
			return 0;
		return field_value(h, &h->tr[h->ntr - 1], at, len);
	}
	if (h->st != H1_ST_HEAD || !h->nh)
		return 0;
	return field_value(h, &h->h[h->nh - 1], at, len);
}

static int on_headers_complete(http_parser *p)
{
	struct h1 *h = of(p);
	int rc;

	h->st = H1_ST_BODY;
	h->in_value = false;	/* a trailer section starts with a name */
	h->keep_alive = http_should_keep_alive(p);
	h->upgrade = p->upgrade || (h->type == HTTP_REQUEST && p->method == HTTP_CONNECT);
	h->chunked_out = (p->flags & F_CHUNKED) != 0;
	rc = h->cbs && h->cbs->on_head ? h->cbs->on_head(h, h->out, h->arg) : 0;
	if (rc < 0) {
		fail(h, 502, "refused by the proxy");
		return -1;
	}
	if (rc == H1_HEAD_NO_BODY || rc == H1_HEAD_TUNNEL)
		h->chunked_out = false;
	if (rc == H1_HEAD_TUNNEL)
		h->upgrade = true;
	return rc;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct h1 *h = of(p);
	int err = 0;

	h->body_bytes += len;
	if (h->chunked_out)
		err = h1_buf_printf(h->out, "%zx\r\n", len);
	if (!err)
		err = h1_buf_append(h->out, at, len);
	if (!err && h->chunked_out)
		err = h1_buf_append(h->out, "\r\n", 2);
	if (err) {
		fail(h, 500, "out of memory");
		return -1;
	}
	return 0;
}

/* The end of a re-chunked body: the last chunk, the trailers when kept, the blank line. */
static int write_last_chunk(const struct h1 *h, struct h1_buf *out)
{
	int err = h1_buf_append(out, "0\r\n", 3);
	for (int i = 0; !err && h->keep_trailers && i < h->ntr; i++) {
		const char *n, *v;
		size_t nl, vl;
		h1_trailer(h, i, &n, &nl, &v, &vl);
		if (!h1_trailer_forbidden(n, nl))
			err = h1_buf_printf(out, "%.*s: %.*s\r\n", (int)nl, n, (int)vl, v);
	}
	return err ? err : h1_buf_append(out, "\r\n", 2);
}

static int on_message_complete(http_parser *p)
{
	struct h1 *h = of(p);

	if (h->chunked_out && write_last_chunk(h, h->out)) {
		fail(h, 500, "out of memory");
		return -1;
	}
	h->keep_alive = h->keep_alive && http_should_keep_alive(p);
	h->messages++;
	h->st = h->upgrade && p->upgrade ? H1_ST_UPGRADED : H1_ST_DONE;
	if (h->cbs && h->cbs->on_done)
		h->cbs->on_done(h, h->arg);
	/* Stop here: bytes after this message belong to the next one (pipelining). */
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_status = on_url,	/* responses: the reason phrase, kept where a request keeps its URL */
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

void h1_init(struct h1 *h, enum http_parser_type type, const struct h1_cbs *cbs, void *arg)
{
	memset(h, 0, sizeof(*h));
	h->type = type;
	h->cbs = cbs;
	h->arg = arg;
	h->st = H1_ST_HEAD;
	http_parser_init(&h->p, type);
	h->p.data = h;
}

void h1_fini(struct h1 *h)
{
	free(h->arena);
	h->arena = NULL;
	h->arena_cap = h->arena_len = 0;
}

void h1_next(struct h1 *h)
{
	if (h->st != H1_ST_DONE)
		return;
	h->st = H1_ST_HEAD;
	h->arena_len = 0;
	h->url = h->url_len = 0;
	h->nh = 0;
	h->ntr = 0;
	h->tr_full = false;
	/* http_parser counts trailer bytes in nread and may not clear it at the message end,
	 * depending on where the input was split; h1_idle reads it (a clean close after a
	 * chunked message with trailers was taken for a cut message). */
	h->p.nread = 0;
	http_parser_pause(&h->p, 0);
}

bool h1_idle(const struct h1 *h)
{
	return h->st == H1_ST_HEAD && h->p.nread == 0 && h->arena_len == 0;
}

size_t h1_feed(struct h1 *h, const uint8_t *p, size_t n, struct h1_buf *out)
{
	size_t done;
	enum http_errno e;

	if (h->st != H1_ST_HEAD && h->st != H1_ST_BODY)
		return 0;
	if (!n)
		return 0;
	h->out = out;
	done = http_parser_execute(&h->p, &settings, (const char *)p, n);
	h->out = NULL;
	e = HTTP_PARSER_ERRNO(&h->p);
	if (h->st == H1_ST_ERROR)
		return done;
	if (e == HPE_PAUSED)
		return done;	/* stopped at a message end (DONE or UPGRADED) */
	if (e != HPE_OK) {
		fail(h, e == HPE_HEADER_OVERFLOW ? 431 : 400, http_errno_description(e));
		return done;
	}
	/* No pause but an upgrade, and input left: http_parser returned early at the protocol
	 * switch. The upgrade flag alone is not enough: it is set at the end of the head, and an
	 * upgrade request with a body (chunked or sized) is still reading that body here. */
	if (h->p.upgrade && done < n && h->st != H1_ST_UPGRADED && h->st != H1_ST_DONE)
		h->st = H1_ST_UPGRADED;
	return done;
}

int h1_feed_eof(struct h1 *h, struct h1_buf *out)
{
	enum http_errno e;

	if (h->st == H1_ST_DONE || h->st == H1_ST_UPGRADED || h->st == H1_ST_ERROR)
		return h->st == H1_ST_ERROR ? -EPROTO : 0;
	if (h1_idle(h))
		return 0;
	h->out = out;
	http_parser_execute(&h->p, &settings, NULL, 0);
	h->out = NULL;
	e = HTTP_PARSER_ERRNO(&h->p);
	if (h->st == H1_ST_DONE)
		return 0;
	if (h->st != H1_ST_ERROR)
		fail(h, 502, e != HPE_OK && e != HPE_PAUSED ? http_errno_description(e)
							    : "connection closed inside a message");
	return -EPROTO;
}

/* ---------------------------------------------------------------- heads ---- */

const char *h1_method(const struct h1 *h)
{
	return http_method_str((enum http_method)h->p.method);
}

int h1_status(const struct h1 *h)
{
	return (int)h->p.status_code;
}

const char *h1_url(const struct h1 *h, size_t *len)
{
	*len = h->url_len;
	return h->url_len ? h->arena + h->url : "";
}

static bool name_is(const struct h1 *h, const struct h1_header *x, const char *name)
{
	return strlen(name) == x->name_len && strncasecmp(h->arena + x->name, name, x->name_len) == 0;
}

const char *h1_header(const struct h1 *h, const char *name, size_t *len)
{
	for (int i = 0; i < h->nh; i++) {
		if (name_is(h, &h->h[i], name)) {
			*len = h->h[i].value_len;
			return h->arena + h->h[i].value;
		}
	}
	return NULL;
}

int h1_trailer_count(const struct h1 *h)
{
	return h->ntr;
}

void h1_trailer(const struct h1 *h, int i, const char **name, size_t *nlen, const char **value,
		size_t *vlen)
{
	const struct h1_header *x = &h->tr[i];
	*name = h->arena + x->name;
	*nlen = x->name_len;
	*value = x->value_len ? h->arena + x->value : "";
	*vlen = x->value_len;
}

/* Whether the token list v (vlen bytes) names tok (case-insensitive). */
static bool conn_token_is(const char *v, size_t vlen, const char *tok)
{
	return vlen == strlen(tok) && strncasecmp(v, tok, vlen) == 0;
}

int h1_ignore_h2c_upgrade(struct h1 *h, char **conn)
{
	size_t ulen, len = 0;
	const char *up = h1_header(h, "upgrade", &ulen);
	char *out = NULL;

	*conn = NULL;
	if (h->type != HTTP_REQUEST || !h->p.upgrade || !up || !conn_token_is(up, ulen, "h2c"))
		return 0;
	h->p.upgrade = 0;	/* http_parser reads it after on_headers_complete: no switch */
	h->upgrade = false;
	for (int i = 0; i < h->nh; i++) {	/* every connection line, its tokens but two */
		const struct h1_header *f = &h->h[i];
		const char *v = h->arena + f->value, *end = v + f->value_len;
		if (!conn_token_is(h->arena + f->name, f->name_len, "connection"))
			continue;
		while (v < end) {
			const char *c = memchr(v, ',', (size_t)(end - v));
			const char *te = c ? c : end, *ts = v;
			while (ts < te && (*ts == ' ' || *ts == '\t'))
				ts++;
			const char *tz = te;
			while (tz > ts && (tz[-1] == ' ' || tz[-1] == '\t'))
				tz--;
			size_t tl = (size_t)(tz - ts);
			if (tl && !conn_token_is(ts, tl, "upgrade") && !conn_token_is(ts, tl, "http2-settings")) {
				char *n = realloc(out, len + tl + 3);
				if (!n) {
					free(out);
					return -ENOMEM;
				}
				out = n;
				if (len) {
					memcpy(out + len, ", ", 2);
					len += 2;
				}
				memcpy(out + len, ts, tl);
				len += tl;
				out[len] = '\0';
			}
			v = c ? c + 1 : end;
		}
	}
	*conn = out;
	return 1;
}

bool h1_trailer_forbidden(const char *name, size_t len)
{
	static const char *const never[] = {
		/* framing and routing, content metadata (RFC 9110 §6.5.1) */
		"content-length", "transfer-encoding", "host", "trailer", "content-type",
		"content-encoding", "content-range", "te",
		/* connection-specific (RFC 9110 §7.6.1, RFC 9113 §8.2.2) */
		"connection", "keep-alive", "proxy-connection", "upgrade",
	};
	for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
		if (strlen(never[i]) == len && strncasecmp(name, never[i], len) == 0)
			return true;
	return false;
}

int h1_format_head(const struct h1 *h, struct h1_buf *out, const char *const *drop,
		   const char *const *extra, size_t nextra)
{
	return h1_format_head_url(h, out, NULL, drop, extra, nextra);
}

int h1_format_head_url(const struct h1 *h, struct h1_buf *out, const char *url,
		       const char *const *drop, const char *const *extra, size_t nextra)
{
	int err;

	if (h->type == HTTP_REQUEST && url)
		err = h1_buf_printf(out, "%s %s HTTP/%u.%u\r\n", h1_method(h), url, h->p.http_major,
				    h->p.http_minor);
	else if (h->type == HTTP_REQUEST)
		err = h1_buf_printf(out, "%s %.*s HTTP/%u.%u\r\n", h1_method(h), (int)h->url_len,
				    h->url_len ? h->arena + h->url : "/", h->p.http_major,
				    h->p.http_minor);
	else
		err = h1_buf_printf(out, "HTTP/%u.%u %u %.*s\r\n", h->p.http_major, h->p.http_minor,
				    h->p.status_code, (int)h->url_len, h->url_len ? h->arena + h->url : "");
	for (int i = 0; !err && i < h->nh; i++) {
		const struct h1_header *x = &h->h[i];
		bool skip = false;
		for (const char *const *d = drop; d && *d && !skip; d++)
			skip = name_is(h, x, *d);
		if (skip)
			continue;
		err = h1_buf_printf(out, "%.*s: %.*s\r\n", (int)x->name_len, h->arena + x->name,
				    (int)x->value_len, x->value_len ? h->arena + x->value : "");
	}
	for (size_t i = 0; !err && i < nextra; i++)
		if (extra[i])
			err = h1_buf_printf(out, "%s\r\n", extra[i]);
	if (!err)
		err = h1_buf_append(out, "\r\n", 2);
	return err;
}

/* RFC 9110 §15 reason phrases (a client must not depend on them, RFC 9112 §4; an unknown code
 * gets "Error" from 400 up, else an empty phrase). Statuses translated from HTTP/2 come here. */
const char *h1_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 103: return "Early Hints";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 203: return "Non-Authoritative Information";
	case 204: return "No Content";
	case 205: return "Reset Content";
	case 206: return "Partial Content";
	case 300: return "Multiple Choices";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 421: return "Misdirected Request";
	case 422: return "Unprocessable Content";
	case 426: return "Upgrade Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return status >= 400 ? "Error" : "";
	}
}

int h1_local_response(struct h1_buf *out, int status, const char *body, bool close)
{
	size_t n = body ? strlen(body) : 0;
	return h1_buf_printf(out, "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %zu\r\n"
			     "server: ambit-waypoint\r\n%s\r\n%s", status, h1_reason(status), n + 1,
			     close ? "connection: close\r\n" : "", body ? body : "") ||
	       h1_buf_append(out, "\n", 1) ? -ENOMEM : 0;
}
