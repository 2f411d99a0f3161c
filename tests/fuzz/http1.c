// SPDX-License-Identifier: Apache-2.0
/* Fuzzes the waypoint's HTTP/1 framing (http/http1.h): a byte stream is fed once in
 * one piece and once split at random points; both runs must see the same heads, messages,
 * body bytes and final state (and the same output when no body is re-chunked).
 * Input: flags byte (bit 0: responses; bits 1-2: what on_head returns), split seed, stream. */
#include "fuzz.h"

#include "http/http1.h"

#include <errno.h>

struct run {
	int mode;		/* 0: forward; 1: H1_HEAD_NO_BODY; 2: H1_HEAD_TUNNEL; 3: refuse */
	struct h1_buf heads;	/* every head as h1_format_head wrote it */
	uint64_t body;		/* decoded body bytes of completed messages */
	uint64_t dones;
	bool chunked;		/* some body was re-chunked: output framing depends on the split */
	enum h1_st st;
	uint64_t messages;
	int error_status;
	int eof_rc;
	size_t consumed;
};

static int on_head(struct h1 *h, struct h1_buf *out, void *arg)
{
	static const char *const drop[] = { "connection", "keep-alive", "proxy-connection", NULL };
	static const char *const extra[] = { "via: 1.1 ambit-waypoint" };
	struct run *r = arg;
	size_t len = 0;

	FUZZ_CHECK(h1_method(h));
	FUZZ_CHECK(h1_url(h, &len) && (len == 0 || h->arena));
	if (h1_header(h, "host", &len))
		FUZZ_CHECK(len <= H1_MAX_HEAD);
	if (h->type == HTTP_REQUEST) {	/* as the waypoint: an h2c upgrade is not one */
		char *conn = NULL;
		int rc = h1_ignore_h2c_upgrade(h, &conn);
		FUZZ_CHECK(rc == 0 || rc == 1 || rc == -ENOMEM);
		FUZZ_CHECK(rc != 1 || !h->upgrade);
		FUZZ_CHECK(!conn || (rc == 1 && strlen(conn) <= H1_MAX_HEAD));
		free(conn);
	}
	FUZZ_CHECK(h1_format_head(h, out, drop, extra, 1) == 0);
	FUZZ_CHECK(h1_format_head(h, &r->heads, drop, extra, 1) == 0);
	if (h->chunked_out)
		r->chunked = true;
	if (r->mode == 3)
		return -1;
	return h->type == HTTP_RESPONSE ? r->mode : 0;
}

static void on_done(struct h1 *h, void *arg)
{
	struct run *r = arg;
	r->body += h->body_bytes;
	r->dones++;
}

/* h1_buf_head of a never-used buffer is NULL + 0: compare lengths first. */
static bool buf_eq(const struct h1_buf *a, const struct h1_buf *b)
{
	return h1_buf_pending(a) == h1_buf_pending(b) &&
	       (!h1_buf_pending(a) || memcmp(h1_buf_head(a), h1_buf_head(b), h1_buf_pending(a)) == 0);
}

static const struct h1_cbs cbs = { .on_head = on_head, .on_done = on_done };

static uint32_t rng_next(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* Feeds p[0..n) in chunks (seed 0: one piece); fills r; out gets the re-framed stream. */
static void run(struct run *r, enum http_parser_type type, const uint8_t *p, size_t n,
		uint32_t seed, struct h1_buf *out)
{
	struct h1 h;
	size_t off = 0, guard = 2 * n + 16;

	h1_init(&h, type, &cbs, r);
	h.keep_trailers = true;	/* the trailer sections re-sent too */
	while (off < n && guard--) {
		size_t want = n - off;
		if (seed) {
			uint32_t x = rng_next(&seed);
			want = 1 + (x & 1 ? x % 8 : x % (want + 1));
			if (want > n - off)
				want = n - off;
		}
		size_t c = h1_feed(&h, p + off, want, out);
		FUZZ_CHECK(c <= want);
		off += c;
		if (h.st == H1_ST_DONE) {
			/* the trailer fields lie within what was read (ASan checks the reads) */
			FUZZ_CHECK(h1_trailer_count(&h) <= H1_MAX_TRAILERS);
			for (int i = 0; i < h1_trailer_count(&h); i++) {
				const char *tn, *tv;
				size_t tnl, tvl;
				h1_trailer(&h, i, &tn, &tnl, &tv, &tvl);
				FUZZ_CHECK(tnl + tvl <= H1_MAX_HEAD);
				volatile char sink = tnl ? tn[tnl - 1] : 0;
				sink ^= tvl ? tv[tvl - 1] : 0;
				(void)sink;
			}
			h1_next(&h);
			FUZZ_CHECK(h.st == H1_ST_HEAD);
			continue;
		}
		if (h.st == H1_ST_UPGRADED || h.st == H1_ST_ERROR)
			break;
		FUZZ_CHECK(c == want);	/* reading a message: everything offered is taken */
	}
	FUZZ_CHECK(guard != (size_t)-1);
	r->eof_rc = h1_feed_eof(&h, out);
	FUZZ_CHECK(r->eof_rc == 0 || h.st == H1_ST_ERROR);
	if (h.st == H1_ST_ERROR)
		FUZZ_CHECK(h.error && h.error_status >= 400);
	r->st = h.st;
	r->messages = h.messages;
	r->error_status = h.error_status;
	r->consumed = off;
	h1_fini(&h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run a = { 0 }, b = { 0 };
	struct h1_buf oa = { 0 }, ob = { 0 };
	enum http_parser_type type;
	uint32_t seed;

	if (size < 2)
		return 0;
	type = data[0] & 1 ? HTTP_RESPONSE : HTTP_REQUEST;
	a.mode = b.mode = (data[0] >> 1) & 3;
	seed = 0x9e3779b9u * (data[1] + 1u);
	data += 2;
	size -= 2;
	(void)h1_sniff(data, size);

	run(&a, type, data, size, 0, &oa);
	run(&b, type, data, size, seed, &ob);

	FUZZ_CHECK(a.st == b.st);
	FUZZ_CHECK(a.messages == b.messages && a.dones == b.dones && a.messages == a.dones);
	/* A head that is both malformed and too large may get either answer: http_parser hands a
	 * field over only at a piece boundary or its end, and checks its own bytes first, so a
	 * bad byte in the field past a limit is seen first in one piece and second when split. */
	FUZZ_CHECK(a.error_status == b.error_status ||
		   ((a.error_status == 400 || a.error_status == 431) &&
		    (b.error_status == 400 || b.error_status == 431)));
	FUZZ_CHECK(a.eof_rc == b.eof_rc);
	FUZZ_CHECK(a.body == b.body);
	FUZZ_CHECK(buf_eq(&a.heads, &b.heads));
	if (a.st != H1_ST_ERROR) {
		FUZZ_CHECK(a.consumed == b.consumed);
		if (!a.chunked && !b.chunked)
			FUZZ_CHECK(buf_eq(&oa, &ob));
	}
	h1_buf_fini(&a.heads);
	h1_buf_fini(&b.heads);
	h1_buf_fini(&oa);
	h1_buf_fini(&ob);
	return 0;
}
