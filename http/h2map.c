// SPDX-License-Identifier: Apache-2.0
/* HTTP/1.x <-> HTTP/2 translation of message heads and trailers (RFC 9113 §8.2, §8.3; RFC 9110
 * §6.5, §7.6.1), and the gRPC path and status helpers. The waypoint calls it where a client and an
 * endpoint speak different versions; it only builds header lists and HTTP/1 heads. */
#include "http/h2map.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- lists ---- */

void h2map_hdrs_init(struct h2map_hdrs *h)
{
	memset(h, 0, sizeof(*h));
}

void h2map_hdrs_fini(struct h2map_hdrs *h)
{
	free(h->nv);
	free(h->arena);
	memset(h, 0, sizeof(*h));
}

static bool is_pseudo(const nghttp2_nv *nv)
{
	return nv->namelen && nv->name[0] == ':';
}

/* Grows the arena to hold need more bytes. A new block, so the fields' pointers are moved over
 * while the old block is still there. */
static int arena_reserve(struct h2map_hdrs *h, size_t need)
{
	size_t cap = h->arena_cap ? h->arena_cap : 1024;
	char *a;

	if (h->arena_len + need <= h->arena_cap)
		return 0;
	while (cap < h->arena_len + need)
		cap *= 2;
	a = malloc(cap);
	if (!a)
		return -ENOMEM;
	if (h->arena_len)
		memcpy(a, h->arena, h->arena_len);
	for (size_t i = 0; i < h->n; i++) {
		h->nv[i].name = (uint8_t *)a + ((char *)h->nv[i].name - h->arena);
		h->nv[i].value = (uint8_t *)a + ((char *)h->nv[i].value - h->arena);
	}
	free(h->arena);
	h->arena = a;
	h->arena_cap = cap;
	return 0;
}

static bool name_eq(const uint8_t *a, size_t alen, const char *b)
{
	return alen == strlen(b) && strncasecmp((const char *)a, b, alen) == 0;
}

int h2map_hdrs_add(struct h2map_hdrs *h, const char *name, size_t nlen, const char *value, size_t vlen)
{
	size_t i0 = nlen && name[0] == ':' ? 1 : 0;
	size_t pseudo = 0, bytes;
	nghttp2_nv *nv;
	char *p;

	if (nlen <= i0)
		return -EPROTO;
	for (size_t i = i0; i < nlen; i++)
		if (!h1_is_tchar((unsigned char)name[i]))
			return -EPROTO;
	/* RFC 9113 §8.2.1 forbids NUL, CR and LF; the other controls but HTAB are no field-vchar
	 * either (RFC 9110 §5.5) and HTTP/1 peers refuse them: refused here, not forwarded. */
	for (size_t i = 0; i < vlen; i++)
		if (((unsigned char)value[i] < 0x20 && value[i] != '\t') || value[i] == 0x7f)
			return -EPROTO;
	for (size_t i = 0; i < h->n; i++)
		pseudo += is_pseudo(&h->nv[i]);
	/* the arena holds a NUL after each name and value: they do not count */
	bytes = h->arena_len - 2 * h->n;
	if ((i0 ? pseudo >= H2MAP_MAX_PSEUDO : h->n - pseudo >= H1_MAX_HEADERS) ||
	    nlen > H1_MAX_HEAD || vlen > H1_MAX_HEAD - nlen || bytes > H1_MAX_HEAD - nlen - vlen)
		return -E2BIG;
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 16;
		nv = realloc(h->nv, cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		h->nv = nv;
		h->cap = cap;
	}
	if (arena_reserve(h, nlen + vlen + 2))
		return -ENOMEM;
	p = h->arena + h->arena_len;
	for (size_t i = 0; i < nlen; i++)
		p[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] - 'A' + 'a') : name[i];
	p[nlen] = '\0';
	if (vlen)
		memcpy(p + nlen + 1, value, vlen);
	p[nlen + 1 + vlen] = '\0';
	h->arena_len += nlen + vlen + 2;
	nv = &h->nv[h->n++];
	nv->name = (uint8_t *)p;
	nv->namelen = nlen;
	nv->value = (uint8_t *)p + nlen + 1;
	nv->valuelen = vlen;
	nv->flags = name_eq(nv->name, nlen, "authorization") ||
				    name_eq(nv->name, nlen, "proxy-authorization")
			    ? NGHTTP2_NV_FLAG_NO_INDEX
			    : NGHTTP2_NV_FLAG_NONE;
	return 0;
}

const char *h2map_hdrs_get(const struct h2map_hdrs *h, const char *name, size_t *vlen)
{
	for (size_t i = 0; i < h->n; i++) {
		if (name_eq(h->nv[i].name, h->nv[i].namelen, name)) {
			if (vlen)
				*vlen = h->nv[i].valuelen;
			return (const char *)h->nv[i].value;
		}
	}
	return NULL;
}

static int add_str(struct h2map_hdrs *h, const char *name, const char *value, size_t vlen)
{
	return h2map_hdrs_add(h, name, strlen(name), value, vlen);
}

/* ---------------------------------------------------------------- fields ---- */

/* Optional whitespace around a value (RFC 9110 §5.5): HTTP/2 refuses it (RFC 9113 §8.2.1). */
static const char *trim(const char *v, size_t *len)
{
	while (*len && (v[0] == ' ' || v[0] == '\t')) {
		v++;
		(*len)--;
	}
	while (*len && (v[*len - 1] == ' ' || v[*len - 1] == '\t'))
		(*len)--;
	return v;
}

/* Whether the comma-separated list (RFC 9110 §5.6.1) holds the token tok, parameters after ';'
 * ignored ("te: trailers;q=1"). */
static bool list_has(const char *v, size_t len, const char *tok, size_t tlen)
{
	size_t i = 0;

	while (i < len) {
		size_t j = i, k;
		while (j < len && v[j] != ',')
			j++;
		k = i;
		while (k < j && v[k] != ';')
			k++;
		size_t elen = k - i;
		const char *e = trim(v + i, &elen);
		if (elen == tlen && strncasecmp(e, tok, tlen) == 0)
			return true;
		i = j + 1;
	}
	return false;
}

/* Connection-specific fields (RFC 9113 §8.2.2; http2-settings only means something to the h2c
 * upgrade, RFC 7540 §3.2). te is handled apart: it is kept as "trailers" in requests. */
static bool conn_specific(const char *n, size_t len)
{
	static const char *const names[] = {
		"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
		"http2-settings",
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (name_eq((const uint8_t *)n, len, names[i]))
			return true;
	return false;
}

/* A view of one field of either side, so the rules below are written once. */
struct field {
	const char *n, *v;
	size_t nlen, vlen;
};

/* The fields of either an HTTP/1 head (h1) or a list (h2), read through one interface. */
struct fields {
	const struct h1 *h1;
	const struct h2map_hdrs *h2;
	bool trailers;			/* h1: its trailer section, not its head */
};

static size_t fields_n(const struct fields *src)
{
	if (src->h1)
		return (size_t)(src->trailers ? src->h1->ntr : src->h1->nh);
	return src->h2->n;
}

/* Field i; an HTTP/1 value comes trimmed. */
static struct field fields_get(const struct fields *src, size_t i)
{
	struct field f;

	if (src->h1) {
		const struct h1 *h = src->h1;
		const struct h1_header *x = src->trailers ? &h->tr[i] : &h->h[i];
		f = (struct field){
			.n = h->arena + x->name, .nlen = x->name_len,
			.v = x->value_len ? h->arena + x->value : "", .vlen = x->value_len,
		};
		f.v = trim(f.v, &f.vlen);
	} else {
		const nghttp2_nv *nv = &src->h2->nv[i];
		f = (struct field){ .n = (const char *)nv->name, .nlen = nv->namelen,
				    .v = (const char *)nv->value, .vlen = nv->valuelen };
	}
	return f;
}

static struct field h2_field(const struct h2map_hdrs *h, size_t i)
{
	struct fields src = { .h2 = h };
	return fields_get(&src, i);
}

/* Whether a Connection field names f (RFC 9110 §7.6.1). */
static bool named_by_connection(const struct fields *src, const struct field *f)
{
	for (size_t i = 0; i < fields_n(src); i++) {
		struct field c = fields_get(src, i);
		if (name_eq((const uint8_t *)c.n, c.nlen, "connection") &&
		    list_has(c.v, c.vlen, f->n, f->nlen))
			return true;
	}
	return false;
}

/* What becomes of one field crossing over. */
enum keep {
	KEEP_DROP,	/* not forwarded */
	KEEP_AS_IS,
	KEEP_TE,	/* forwarded as "te: trailers" */
};

static enum keep field_keep(const struct field *f, bool named_by_connection, bool request)
{
	if (conn_specific(f->n, f->nlen) || named_by_connection)
		return KEEP_DROP;
	if (name_eq((const uint8_t *)f->n, f->nlen, "te"))
		return request && list_has(f->v, f->vlen, "trailers", 8) ? KEEP_TE : KEEP_DROP;
	return KEEP_AS_IS;
}

/* Copies the fields of an HTTP/1 head into out by the rules above; host is left to the caller. */
static int h1_fields_to_h2(const struct h1 *h, bool request, struct h2map_hdrs *out)
{
	struct fields src = { .h1 = h };

	for (size_t i = 0; i < fields_n(&src); i++) {
		struct field f = fields_get(&src, i);
		enum keep k = field_keep(&f, named_by_connection(&src, &f), request);
		int err = 0;
		if (request && name_eq((const uint8_t *)f.n, f.nlen, "host"))
			continue;
		if (k == KEEP_TE)
			err = add_str(out, "te", "trailers", 8);
		else if (k == KEEP_AS_IS)
			err = h2map_hdrs_add(out, f.n, f.nlen, f.v, f.vlen);
		if (err)
			return err;
	}
	return 0;
}

/* ---------------------------------------------------------------- h1 -> h2 ---- */

/* Splits an absolute-form target "scheme://authority[/path][?query]" (RFC 9112 §3.2.2). */
static int split_absolute(const char *u, size_t len, struct field *scheme, struct field *auth,
			  const char **path, size_t *plen)
{
	size_t i = 0, a;

	while (i < len && ((u[i] >= 'a' && u[i] <= 'z') || (u[i] >= 'A' && u[i] <= 'Z') ||
			   (i && ((u[i] >= '0' && u[i] <= '9') || u[i] == '+' || u[i] == '-' ||
				  u[i] == '.'))))
		i++;
	if (!i || len - i < 3 || memcmp(u + i, "://", 3) != 0)
		return -EPROTO;
	*scheme = (struct field){ .v = u, .vlen = i };
	a = i + 3;
	i = a;
	while (i < len && u[i] != '/' && u[i] != '?' && u[i] != '#')
		i++;
	/* no userinfo (RFC 9110 §4.2.4), and an authority to name */
	if (i == a || memchr(u + a, '@', i - a))
		return -EPROTO;
	*auth = (struct field){ .v = u + a, .vlen = i - a };
	*path = u + i;
	*plen = len - i;
	return 0;
}

int h2map_request_from_h1(const struct h1 *h, const char *scheme, struct h2map_hdrs *out)
{
	struct field sch = { .v = scheme && *scheme ? scheme : "http" }, auth = { 0 };
	const char *method = h1_method(h), *url, *path;
	size_t ulen, plen, hosts = 0;
	int err;

	if (h->type != HTTP_REQUEST)
		return -EINVAL;
	/* CONNECT and upgrades have no HTTP/2 form here (RFC 9113 §8.5, §8.6) */
	if (h->upgrade || h->p.method == HTTP_CONNECT)
		return -EPROTO;
	sch.vlen = strlen(sch.v);
	url = h1_url(h, &ulen);
	path = url;
	plen = ulen;
	struct fields src = { .h1 = h };
	for (size_t i = 0; i < fields_n(&src); i++) {
		struct field f = fields_get(&src, i);
		if (name_eq((const uint8_t *)f.n, f.nlen, "host")) {
			hosts++;
			auth = f;
		}
	}
	if (hosts > 1)
		return -EPROTO;	/* RFC 9112 §3.2: answered with 400 */
	if (ulen && url[0] == '/') {
		/* origin-form */
	} else if (ulen == 1 && url[0] == '*') {
		if (h->p.method != HTTP_OPTIONS)
			return -EPROTO;
	} else if (split_absolute(url, ulen, &sch, &auth, &path, &plen)) {
		return -EPROTO;
	}
	/* The fragment is not part of the target (RFC 9110 §4.2.5); an empty path is "/". */
	for (size_t i = 0; i < plen; i++)
		if (path[i] == '#')
			plen = i;
	err = add_str(out, ":method", method, strlen(method));
	if (!err)
		err = h2map_hdrs_add(out, ":scheme", 7, sch.v, sch.vlen);
	if (!err && auth.vlen)
		err = h2map_hdrs_add(out, ":authority", 10, auth.v, auth.vlen);
	if (!err && (!plen || path[0] == '?')) {
		/* "http://a?q" -> "/?q" */
		char *p = malloc(plen + 1);
		if (!p)
			return -ENOMEM;
		p[0] = '/';
		if (plen)
			memcpy(p + 1, path, plen);
		err = h2map_hdrs_add(out, ":path", 5, p, plen + 1);
		free(p);
	} else if (!err) {
		err = h2map_hdrs_add(out, ":path", 5, path, plen);
	}
	if (!err)
		err = h1_fields_to_h2(h, true, out);
	return err;
}

int h2map_response_from_h1(const struct h1 *h, struct h2map_hdrs *out)
{
	char status[8];
	int st = h1_status(h), err;

	if (h->type != HTTP_RESPONSE)
		return -EINVAL;
	if (st < 100 || st > 999 || st == 101)
		return -EPROTO;
	snprintf(status, sizeof(status), "%d", st);
	err = add_str(out, ":status", status, 3);
	if (!err)
		err = h1_fields_to_h2(h, false, out);
	return err;
}

/* ---------------------------------------------------------------- h2 -> h1 ---- */

static bool is_token(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!h1_is_tchar((unsigned char)s[i]))
			return false;
	return len > 0;
}

static bool all_digits(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return len > 0;
}

/* The pseudo-headers of a list, checked (RFC 9113 §8.3: each at most once, all before the
 * fields, none other than those of its kind). */
struct pseudo {
	struct field method, scheme, authority, path, status;
	size_t first_field;	/* index of the first regular field */
};

static int pseudo_scan(const struct h2map_hdrs *in, bool request, struct pseudo *ps)
{
	memset(ps, 0, sizeof(*ps));
	ps->first_field = in->n;
	for (size_t i = 0; i < in->n; i++) {
		struct field f = h2_field(in, i), *slot = NULL;
		if (!is_pseudo(&in->nv[i])) {
			if (ps->first_field == in->n)
				ps->first_field = i;
			continue;
		}
		if (ps->first_field != in->n)
			return -EPROTO;
		if (request && name_eq((const uint8_t *)f.n, f.nlen, ":method"))
			slot = &ps->method;
		else if (request && name_eq((const uint8_t *)f.n, f.nlen, ":scheme"))
			slot = &ps->scheme;
		else if (request && name_eq((const uint8_t *)f.n, f.nlen, ":authority"))
			slot = &ps->authority;
		else if (request && name_eq((const uint8_t *)f.n, f.nlen, ":path"))
			slot = &ps->path;
		else if (!request && name_eq((const uint8_t *)f.n, f.nlen, ":status"))
			slot = &ps->status;
		if (!slot || slot->n)
			return -EPROTO;
		*slot = f;
	}
	return 0;
}

/* The one content-length of a list: -EPROTO when malformed or when copies disagree (RFC 9110
 * §8.6), 1 when there is one (in *cl), 0 when none. */
static int content_length(const struct h2map_hdrs *in, size_t from, struct field *cl)
{
	int found = 0;

	for (size_t i = from; i < in->n; i++) {
		struct field f = h2_field(in, i);
		if (!name_eq((const uint8_t *)f.n, f.nlen, "content-length"))
			continue;
		if (!all_digits(f.v, f.vlen) || f.vlen > 19)
			return -EPROTO;
		if (found && (f.vlen != cl->vlen || memcmp(f.v, cl->v, f.vlen) != 0))
			return -EPROTO;
		*cl = f;
		found = 1;
	}
	return found;
}

/* Writes the fields from `from` as HTTP/1 lines: connection-specific ones, content-length
 * (written once by the caller) and, in requests, host (from :authority) left out; request
 * cookies joined into one line where the first one was (RFC 9113 §8.2.3). */
static int h2_fields_to_h1(const struct h2map_hdrs *in, size_t from, bool request, struct h1_buf *out)
{
	bool cookies_done = false;
	int err = 0;

	for (size_t i = from; !err && i < in->n; i++) {
		struct field f = h2_field(in, i);
		enum keep k = field_keep(&f, named_by_connection(&(struct fields){ .h2 = in }, &f), request);
		if (k == KEEP_DROP || name_eq((const uint8_t *)f.n, f.nlen, "content-length") ||
		    (request && name_eq((const uint8_t *)f.n, f.nlen, "host")))
			continue;
		if (k == KEEP_TE) {
			err = h1_buf_printf(out, "te: trailers\r\n");
			continue;
		}
		if (request && name_eq((const uint8_t *)f.n, f.nlen, "cookie")) {
			const char *sep = "cookie: ";
			if (cookies_done)
				continue;
			cookies_done = true;
			for (size_t j = i; !err && j < in->n; j++) {
				struct field c = h2_field(in, j);
				if (!name_eq((const uint8_t *)c.n, c.nlen, "cookie"))
					continue;
				err = h1_buf_printf(out, "%s%.*s", sep, (int)c.vlen, c.v);
				sep = "; ";
			}
			if (!err)
				err = h1_buf_append(out, "\r\n", 2);
			continue;
		}
		err = h1_buf_printf(out, "%.*s: %.*s\r\n", (int)f.nlen, f.n, (int)f.vlen, f.v);
	}
	return err;
}

/* Puts out back to the pending length it had (a failed translation leaves nothing). */
static int undo(struct h1_buf *out, size_t pending, int err)
{
	out->len = out->off + pending;
	return err;
}

static bool may_have_content(const struct field *method)
{
	return name_eq((const uint8_t *)method->v, method->vlen, "POST") ||
	       name_eq((const uint8_t *)method->v, method->vlen, "PUT") ||
	       name_eq((const uint8_t *)method->v, method->vlen, "PATCH");
}

int h2map_request_to_h1(const struct h2map_hdrs *in, bool end_stream, struct h1_buf *out, bool *chunked)
{
	size_t pending = h1_buf_pending(out);
	struct field cl = { 0 };
	struct pseudo ps;
	int has_cl, err;

	*chunked = false;
	err = pseudo_scan(in, true, &ps);
	if (err)
		return err;
	if (!is_token(ps.method.v, ps.method.vlen) || !ps.scheme.vlen || !ps.path.vlen ||
	    name_eq((const uint8_t *)ps.method.v, ps.method.vlen, "CONNECT"))
		return -EPROTO;
	/* The target goes on the request line as it is: visible ASCII only (no SP: the line would
	 * split), "/..." or "*" for OPTIONS (RFC 9113 §8.3.1). */
	for (size_t i = 0; i < ps.path.vlen; i++)
		if ((unsigned char)ps.path.v[i] <= 0x20 || (unsigned char)ps.path.v[i] >= 0x7f)
			return -EPROTO;
	if (ps.path.v[0] != '/' &&
	    !(ps.path.vlen == 1 && ps.path.v[0] == '*' &&
	      name_eq((const uint8_t *)ps.method.v, ps.method.vlen, "OPTIONS")))
		return -EPROTO;
	has_cl = content_length(in, ps.first_field, &cl);
	if (has_cl < 0)
		return has_cl;
	if (!ps.authority.n) {
		/* RFC 9113 §8.3.1: without :authority the host field stands; else empty Host */
		for (size_t i = ps.first_field; i < in->n; i++) {
			struct field f = h2_field(in, i);
			if (name_eq((const uint8_t *)f.n, f.nlen, "host")) {
				ps.authority = f;
				break;
			}
		}
	}
	err = h1_buf_printf(out, "%.*s %.*s HTTP/1.1\r\nhost: %.*s\r\n", (int)ps.method.vlen,
			    ps.method.v, (int)ps.path.vlen, ps.path.v, (int)ps.authority.vlen,
			    ps.authority.vlen ? ps.authority.v : "");
	if (!err)
		err = h2_fields_to_h1(in, ps.first_field, true, out);
	if (!err && has_cl)
		err = h1_buf_printf(out, "content-length: %.*s\r\n", (int)cl.vlen, cl.v);
	else if (!err && end_stream && may_have_content(&ps.method))
		err = h1_buf_printf(out, "content-length: 0\r\n");
	else if (!err && !end_stream) {
		err = h1_buf_printf(out, "transfer-encoding: chunked\r\n");
		*chunked = true;
	}
	if (!err)
		err = h1_buf_append(out, "\r\n", 2);
	if (err)
		*chunked = false;
	return err ? undo(out, pending, err) : 0;
}

int h2map_response_to_h1(const struct h2map_hdrs *in, bool head_request, bool end_stream,
			 struct h1_buf *out, bool *chunked)
{
	size_t pending = h1_buf_pending(out);
	struct field cl = { 0 };
	struct pseudo ps;
	int has_cl, err, st;
	bool bodiless;

	*chunked = false;
	err = pseudo_scan(in, false, &ps);
	if (err)
		return err;
	if (ps.status.vlen != 3 || !all_digits(ps.status.v, 3))
		return -EPROTO;
	st = (ps.status.v[0] - '0') * 100 + (ps.status.v[1] - '0') * 10 + (ps.status.v[2] - '0');
	/* RFC 9110 §15: 100..599; 101 does not exist in HTTP/2 (RFC 9113 §8.6) */
	if (st < 100 || st > 599 || st == 101)
		return -EPROTO;
	has_cl = content_length(in, ps.first_field, &cl);
	if (has_cl < 0)
		return has_cl;
	/* RFC 9110 §6.4.1: these never have content, whatever the fields say */
	bodiless = head_request || st < 200 || st == 204 || st == 304;
	err = h1_buf_printf(out, "HTTP/1.1 %d %s\r\n", st, h1_reason(st));
	if (!err)
		err = h2_fields_to_h1(in, ps.first_field, false, out);
	/* 1xx and 204 carry no content-length (RFC 9110 §8.6); HEAD and 304 keep the one given */
	if (!err && has_cl && st >= 200 && st != 204)
		err = h1_buf_printf(out, "content-length: %.*s\r\n", (int)cl.vlen, cl.v);
	else if (!err && !has_cl && !bodiless && end_stream)
		err = h1_buf_printf(out, "content-length: 0\r\n");
	else if (!err && !has_cl && !bodiless) {
		err = h1_buf_printf(out, "transfer-encoding: chunked\r\n");
		*chunked = true;
	}
	if (!err)
		err = h1_buf_append(out, "\r\n", 2);
	if (err)
		*chunked = false;
	return err ? undo(out, pending, err) : 0;
}

int h2map_trailers_to_h1(const struct h2map_hdrs *in, struct h1_buf *out)
{
	size_t pending = h1_buf_pending(out);
	int err;

	for (size_t i = 0; in && i < in->n; i++)
		if (is_pseudo(&in->nv[i]))
			return -EPROTO;
	err = h1_buf_append(out, "0\r\n", 3);
	for (size_t i = 0; !err && in && i < in->n; i++) {
		struct field f = h2_field(in, i);
		/* framing, routing and connection fields cannot be trailers (RFC 9110 §6.5.1) */
		bool skip = field_keep(&f, named_by_connection(&(struct fields){ .h2 = in }, &f), false) != KEEP_AS_IS ||
			    h1_trailer_forbidden(f.n, f.nlen);
		if (!skip)
			err = h1_buf_printf(out, "%.*s: %.*s\r\n", (int)f.nlen, f.n, (int)f.vlen, f.v);
	}
	if (!err)
		err = h1_buf_append(out, "\r\n", 2);
	return err ? undo(out, pending, err) : 0;
}

int h2map_trailers_from_h1(const struct h1 *h, struct h2map_hdrs *out)
{
	struct fields src = { .h1 = h, .trailers = true };

	for (size_t i = 0; i < fields_n(&src); i++) {
		struct field f = fields_get(&src, i);
		if (field_keep(&f, false, false) != KEEP_AS_IS || h1_trailer_forbidden(f.n, f.nlen))
			continue;
		int err = h2map_hdrs_add(out, f.n, f.nlen, f.v, f.vlen);
		if (err)
			return err;
	}
	return 0;
}

/* ---------------------------------------------------------------- gRPC ---- */

int h2map_grpc_method(const char *path, size_t len, const char **svc, size_t *svc_len,
		      const char **meth, size_t *meth_len)
{
	const char *slash;

	if (!path || len < 4 || path[0] != '/')
		return -EINVAL;
	slash = memchr(path + 1, '/', len - 1);
	if (!slash || slash == path + 1 || slash == path + len - 1)
		return -EINVAL;
	if (memchr(slash + 1, '/', (size_t)(path + len - slash - 1)) || memchr(path, '?', len) ||
	    memchr(path, '#', len))
		return -EINVAL;
	*svc = path + 1;
	*svc_len = (size_t)(slash - path - 1);
	*meth = slash + 1;
	*meth_len = (size_t)(path + len - slash - 1);
	return 0;
}

int h2map_grpc_status(const char *v, size_t len)
{
	int code = 0;

	if (!v || !len || len > 2)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		code = code * 10 + (v[i] - '0');
	}
	return code <= 16 ? code : -1;
}

bool h2map_grpc_is_server_error(int code)
{
	switch (code) {
	case 2: case 4: case 12: case 13: case 14: case 15:
		return true;
	default:
		return false;
	}
}
