// SPDX-License-Identifier: Apache-2.0
/* Fuzzes the HTTP/1.x <-> HTTP/2 translation (http/h2map.h). An HTTP/2 header list goes through
 * h2map_request_to_h1, h2map_response_to_h1 and h2map_trailers_to_h1; whatever is accepted must
 * parse back as exactly one HTTP/1.1 head with the same method or status (no field can split
 * the head: no smuggling), and a refusal leaves the output as it was. An HTTP/1 message goes
 * h1 -> h2 -> h1 and must keep its method or status; its trailer section, if any, goes to
 * HTTP/2 trailers (no pseudo-header, none of h1_trailer_forbidden's) and back to a chunked end
 * that parses.
 * Input: mode byte (bits 0-1: 0 request list, 1 response list, 2 trailers, 3 an HTTP/1 message;
 * bit 2: end_stream, or for an HTTP/1 message a response; bit 3: HEAD), then for lists fields
 * as "name\0value\0" pairs, for a message the bytes. */
#include "fuzz.h"

#include "http/h2map.h"

#include <errno.h>

/* The parser's answer to one translated head (and, for trailers, the chunked end). */
struct reparse {
	bool head_request;
	int heads;
};

static int on_head(struct h1 *h, struct h1_buf *out, void *arg)
{
	struct reparse *r = arg;
	r->heads++;
	return h->type == HTTP_RESPONSE && r->head_request ? H1_HEAD_NO_BODY : 0;
}

static const struct h1_cbs cbs = { .on_head = on_head };

/* Parses p[0..n) as one message head (plus what follows): the head must be complete and valid
 * and take all n bytes (nothing left over for a second message). Only a head at the field bound
 * may be refused, as too large (a host field added to H1_MAX_HEADERS others): false then. */
static bool reparse(struct h1 *h, enum http_parser_type type, struct reparse *r, const uint8_t *p,
		    size_t n, bool at_bound)
{
	struct h1_buf sink = { 0 };
	size_t c;

	h1_init(h, type, &cbs, r);
	c = h1_feed(h, p, n, &sink);
	h1_buf_fini(&sink);
	if (h->st == H1_ST_ERROR && h->error_status == 431 && at_bound) {
		h1_fini(h);
		return false;
	}
	FUZZ_CHECK(h->st != H1_ST_ERROR);
	FUZZ_CHECK(r->heads == 1);
	FUZZ_CHECK(c == n);
	return true;
}

/* http_parser 2.9 takes any field name that starts with "transfer-encoding" for that field
 * (it sets its flag on the 17th byte matching), and then refuses a content-length beside it: a
 * head with such a name is not reparsed. */
static bool te_prefix_quirk(const struct h2map_hdrs *l)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->nv[i].namelen > 17 && memcmp(l->nv[i].name, "transfer-encoding", 17) == 0)
			return true;
	return false;
}

/* Reads the "name\0value\0" pairs into l; fields h2map_hdrs_add refuses are skipped. */
static void read_list(struct h2map_hdrs *l, const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		const uint8_t *name = p + i, *value, *e;
		size_t nlen, vlen;
		e = memchr(name, '\0', n - i);
		nlen = e ? (size_t)(e - name) : n - i;
		i += nlen + 1;
		value = i < n ? p + i : (const uint8_t *)"";
		e = i < n ? memchr(value, '\0', n - i) : NULL;
		vlen = i < n ? (e ? (size_t)(e - value) : n - i) : 0;
		i += vlen + 1;
		size_t before = l->n;
		int rc = h2map_hdrs_add(l, (const char *)name, nlen, (const char *)value, vlen);
		FUZZ_CHECK(rc == 0 || rc == -EPROTO || rc == -E2BIG);
		FUZZ_CHECK(l->n == before + (rc == 0));
		if (rc == 0) {
			size_t got;
			FUZZ_CHECK(l->nv[before].namelen == nlen && l->nv[before].valuelen == vlen);
			FUZZ_CHECK(memcmp(l->nv[before].value, value, vlen) == 0);
			FUZZ_CHECK(h2map_hdrs_get(l, (const char *)l->nv[before].name, &got) != NULL);
		}
	}
}

static void fuzz_list(int kind, bool flag, bool head, const uint8_t *p, size_t n)
{
	struct h2map_hdrs l;
	struct h1_buf out = { 0 };
	struct reparse r = { .head_request = head && kind == 1 };
	struct h1 h;
	bool chunked = false;
	int rc;

	h2map_hdrs_init(&l);
	read_list(&l, p, n);
	h1_buf_append(&out, "x", 1);
	h1_buf_consume(&out, 1);	/* an offset in the buffer, as a caller's would have */
	if (kind == 0)
		rc = h2map_request_to_h1(&l, flag, &out, &chunked);
	else if (kind == 1)
		rc = h2map_response_to_h1(&l, head, flag, &out, &chunked);
	else
		rc = h2map_trailers_to_h1(&l, &out);
	FUZZ_CHECK(rc == 0 || rc == -EPROTO);
	if (rc) {
		FUZZ_CHECK(h1_buf_pending(&out) == 0 && !chunked);
		goto out;
	}
	if (kind == 2) {
		/* the trailer section closes a chunked body after any head */
		static const char head1[] = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
		struct h1_buf all = { 0 };
		h1_buf_append(&all, head1, sizeof(head1) - 1);
		h1_buf_append(&all, h1_buf_head(&out), h1_buf_pending(&out));
		reparse(&h, HTTP_RESPONSE, &r, h1_buf_head(&all), h1_buf_pending(&all), false);
		FUZZ_CHECK(h.st == H1_ST_DONE && h.body_bytes == 0);
		h1_fini(&h);
		h1_buf_fini(&all);
		goto out;
	}
	/* http_parser knows a fixed set of methods (any token is one, RFC 9110 §9) */
	if ((kind == 0 && h1_sniff(h1_buf_head(&out), h1_buf_pending(&out)) != H1_SNIFF_HTTP) ||
	    te_prefix_quirk(&l))
		goto out;
	if (!reparse(&h, kind == 0 ? HTTP_REQUEST : HTTP_RESPONSE, &r, h1_buf_head(&out),
		     h1_buf_pending(&out), l.n >= H1_MAX_HEADERS))
		goto out;
	if (kind == 0) {
		size_t mlen;
		const char *m = h2map_hdrs_get(&l, ":method", &mlen);
		FUZZ_CHECK(m);
		FUZZ_CHECK(strlen(h1_method(&h)) == mlen && memcmp(h1_method(&h), m, mlen) == 0);
		FUZZ_CHECK(h1_header(&h, "host", &mlen));
		FUZZ_CHECK(!h1_header(&h, "connection", &mlen));
	} else {
		const char *s = h2map_hdrs_get(&l, ":status", NULL);
		FUZZ_CHECK(s && h1_status(&h) == atoi(s));
	}
	/* chunked exactly when the head says so and a body is to come */
	FUZZ_CHECK(chunked == (h.st == H1_ST_BODY && (h.p.flags & F_CHUNKED)));
	h1_fini(&h);
out:
	h2map_hdrs_fini(&l);
	h1_buf_fini(&out);
}

static int msg_on_head(struct h1 *h, struct h1_buf *out, void *arg)
{
	struct h2map_hdrs l;
	struct h1_buf back = { 0 };
	struct reparse r = { 0 };
	struct h1 h2;
	bool chunked;
	int rc;

	h2map_hdrs_init(&l);
	rc = h->type == HTTP_REQUEST ? h2map_request_from_h1(h, "http", &l) : h2map_response_from_h1(h, &l);
	FUZZ_CHECK(rc == 0 || rc == -EPROTO || rc == -E2BIG);
	if (rc == 0) {
		rc = h->type == HTTP_REQUEST ? h2map_request_to_h1(&l, true, &back, &chunked)
					     : h2map_response_to_h1(&l, false, true, &back, &chunked);
		/* an HTTP/1 head the parser took may still be no HTTP/2 message (an odd status) */
		FUZZ_CHECK(rc == 0 || rc == -EPROTO);
	}
	if (rc == 0 && !te_prefix_quirk(&l) && reparse(&h2, h->type, &r, h1_buf_head(&back), h1_buf_pending(&back),
			       h->nh == H1_MAX_HEADERS)) {
		if (h->type == HTTP_REQUEST)
			FUZZ_CHECK(strcmp(h1_method(&h2), h1_method(h)) == 0);
		else
			FUZZ_CHECK(h1_status(&h2) == h1_status(h));
		h1_fini(&h2);
	}
	h1_buf_fini(&back);
	h2map_hdrs_fini(&l);
	return 0;
}

static const struct h1_cbs msg_cbs = { .on_head = msg_on_head };

/* A complete message's trailer section -> HTTP/2 trailers -> a chunked end after a head. */
static void fuzz_trailers(const struct h1 *h)
{
	static const char head[] = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
	struct h2map_hdrs l;
	struct h1_buf all = { 0 };
	struct reparse r = { 0 };
	struct h1 back;
	int rc;

	h2map_hdrs_init(&l);
	rc = h2map_trailers_from_h1(h, &l);
	FUZZ_CHECK(rc == 0 || rc == -EPROTO || rc == -E2BIG);
	if (rc == 0) {
		FUZZ_CHECK(l.n <= (size_t)h1_trailer_count(h));
		for (size_t i = 0; i < l.n; i++)
			FUZZ_CHECK(l.nv[i].namelen && l.nv[i].name[0] != ':' &&
				   !h1_trailer_forbidden((const char *)l.nv[i].name, l.nv[i].namelen));
		h1_buf_append(&all, head, sizeof(head) - 1);
		FUZZ_CHECK(h2map_trailers_to_h1(&l, &all) == 0);
		if (!te_prefix_quirk(&l)) {
			reparse(&back, HTTP_RESPONSE, &r, h1_buf_head(&all), h1_buf_pending(&all), false);
			FUZZ_CHECK(back.st == H1_ST_DONE && back.body_bytes == 0);
			h1_fini(&back);
		}
	}
	h1_buf_fini(&all);
	h2map_hdrs_fini(&l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int kind;
	bool flag, head;

	if (size < 1)
		return 0;
	kind = data[0] & 3;
	flag = data[0] & 4;
	head = data[0] & 8;
	data++;
	size--;
	if (kind < 3) {
		fuzz_list(kind, flag, head, data, size);
	} else {
		struct h1 h;
		struct h1_buf sink = { 0 };
		h1_init(&h, flag ? HTTP_RESPONSE : HTTP_REQUEST, &msg_cbs, NULL);
		h.keep_trailers = true;
		h1_feed(&h, data, size, &sink);
		if (h.st == H1_ST_DONE)
			fuzz_trailers(&h);
		h1_fini(&h);
		h1_buf_fini(&sink);
	}
	return 0;
}
