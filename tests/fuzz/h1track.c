// SPDX-License-Identifier: Apache-2.0
/* Fuzzes the passive HTTP/1 request tracker (http/h1track.h): a conversation of frames is
 * played once with each frame whole and once split at random points; both runs must report
 * the same requests and responses in the same order (reasons masked: a head both malformed
 * and too large may be refused for either), every response must answer a reported request,
 * in order, and the final state must match.
 * Input: split seed byte, then frames: kind byte (bits 0-1: 0 client bytes, 1 server bytes,
 * 2 server EOF, 3 client EOF), length (2 bytes, little endian), the bytes. */
#include "fuzz.h"

#include "http/h1track.h"

#include <stdarg.h>

struct log {
	char *s;
	size_t len, cap;
	uint64_t next_req, next_resp;	/* ordinals expected next */
	int stops;
};

static void add(struct log *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct log *l, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	FUZZ_CHECK(n >= 0);
	if ((size_t)n >= sizeof(tmp))
		n = sizeof(tmp) - 1;
	if (l->len + (size_t)n + 1 > l->cap) {
		l->cap = (l->len + (size_t)n + 1) * 2;
		l->s = realloc(l->s, l->cap);
		FUZZ_CHECK(l->s);
	}
	memcpy(l->s + l->len, tmp, (size_t)n + 1);
	l->len += (size_t)n;
}

static void on_req(void *arg, const struct h1t_request *r)
{
	struct log *l = arg;
	FUZZ_CHECK(r->ordinal == l->next_req);
	l->next_req++;
	FUZZ_CHECK(r->method && r->path && r->path_len && r->path_len <= H1T_PATH_MAX);
	FUZZ_CHECK(r->host_len <= H1T_HOST_MAX && (r->host || !r->host_len));
	FUZZ_CHECK(r->traceparent_len <= H1T_TP_MAX && (r->traceparent || !r->traceparent_len));
	add(l, "req %llu %s %.*s %.*s %.*s %llu\n", (unsigned long long)r->ordinal, r->method,
	    (int)r->path_len, r->path, (int)r->host_len, r->host ? r->host : "",
	    (int)r->traceparent_len, r->traceparent ? r->traceparent : "",
	    (unsigned long long)r->start_ns);
}

static void on_resp(void *arg, const struct h1t_response *r)
{
	struct log *l = arg;
	/* answers come in order, for reported requests only (skipping unreported ones) */
	FUZZ_CHECK(r->ordinal >= l->next_resp && r->ordinal < l->next_req);
	l->next_resp = r->ordinal + 1;
	FUZZ_CHECK(r->status == 0 || (r->status >= 100 && r->status <= 999));
	FUZZ_CHECK((r->status == 0) == (r->why != NULL));
	add(l, "resp %llu %d %llu\n", (unsigned long long)r->ordinal, r->status,
	    (unsigned long long)r->end_ns);
}

static void on_stop(void *arg, const char *why, bool error)
{
	struct log *l = arg;
	FUZZ_CHECK(why && *why);
	l->stops++;
	FUZZ_CHECK(l->stops == 1);
	add(l, "stop %d\n", error);
}

static const struct h1t_cbs cbs = { .on_request = on_req, .on_response = on_resp, .on_stop = on_stop };

static uint32_t rng_next(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static enum h1t_state play(struct log *l, const uint8_t *p, size_t n, uint32_t seed)
{
	struct h1track t;
	uint64_t now = 0;

	h1t_init(&t, &cbs, l);
	while (n >= 3) {
		int kind = p[0] & 3;
		size_t len = (size_t)p[1] | (size_t)p[2] << 8;
		p += 3;
		n -= 3;
		if (len > n)
			len = n;
		now += 10;
		if (kind == 2 || kind == 3) {
			h1t_eof(&t, kind == 2 ? H1T_RESP : H1T_REQ, now);
		} else {
			for (size_t off = 0; off < len;) {
				size_t k = len - off;
				if (seed) {
					uint32_t x = rng_next(&seed);
					k = 1 + (x & 1 ? x % 8 : x % k);
					if (k > len - off)
						k = len - off;
				}
				h1t_feed(&t, kind == 0 ? H1T_REQ : H1T_RESP, p + off, k, now);
				off += k;
			}
		}
		p += len;
		n -= len;
	}
	h1t_close(&t, "closed", now + 10);
	FUZZ_CHECK(!h1t_active(&t));
	FUZZ_CHECK(l->next_resp <= l->next_req);
	return t.st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct log a = { 0 }, b = { 0 };
	uint32_t seed;

	if (size < 1)
		return 0;
	seed = 0x9e3779b9u * (data[0] + 1u);
	enum h1t_state sa = play(&a, data + 1, size - 1, 0);
	enum h1t_state sb = play(&b, data + 1, size - 1, seed);
	FUZZ_CHECK(sa == sb);
	FUZZ_CHECK(a.len == b.len && (!a.len || memcmp(a.s, b.s, a.len) == 0));
	free(a.s);
	free(b.s);
	return 0;
}
