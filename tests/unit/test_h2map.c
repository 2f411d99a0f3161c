// SPDX-License-Identifier: Apache-2.0
/* HTTP/1.x <-> HTTP/2 translation (http/h2map.h): header lists and their bounds, the
 * connection-specific fields each way, pseudo-headers, cookies, body framing, trailers,
 * malformed input, round trips h1 -> h2 -> h1, and the gRPC helpers. */
#include "harness.h"

#include "http/h2map.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

/* ---------------------------------------------------------------- helpers ---- */

/* Parses one whole HTTP/1 message (head and body) into h; true when it completed. */
static bool parse(struct h1 *h, enum http_parser_type type, const char *msg)
{
	struct h1_buf out = { 0 };
	size_t n = strlen(msg), done;

	h1_init(h, type, NULL, NULL);
	done = h1_feed(h, (const uint8_t *)msg, n, &out);
	if (h->st == H1_ST_BODY && done == n)
		h1_feed_eof(h, &out);
	h1_buf_fini(&out);
	if (h->st != H1_ST_DONE && h->st != H1_ST_UPGRADED) {
		fprintf(stderr, "  parse: state %s (%s)\n", h1_st_to_str(h->st), h->error ? h->error : "");
		return false;
	}
	return true;
}

/* The list as "name: value\n" lines, for comparing whole lists. */
static const char *dump(const struct h2map_hdrs *l)
{
	static char s[8192];
	size_t off = 0;
	s[0] = '\0';
	for (size_t i = 0; i < l->n && off < sizeof(s); i++)
		off += (size_t)snprintf(s + off, sizeof(s) - off, "%.*s: %.*s\n", (int)l->nv[i].namelen,
					(const char *)l->nv[i].name, (int)l->nv[i].valuelen,
					(const char *)l->nv[i].value);
	return s;
}

static bool buf_is(const struct h1_buf *b, const char *want)
{
	size_t n = strlen(want);
	if (h1_buf_pending(b) != n || (n && memcmp(h1_buf_head(b), want, n) != 0)) {
		fprintf(stderr, "  got  [%.*s]\n  want [%s]\n", (int)h1_buf_pending(b),
			h1_buf_pending(b) ? (const char *)h1_buf_head(b) : "", want);
		return false;
	}
	return true;
}

/* Builds a list from "name", "value" pairs (NULL-terminated); every add must succeed. */
static bool build(struct h2map_hdrs *l, const char *const *kv)
{
	h2map_hdrs_init(l);
	for (; kv[0]; kv += 2)
		if (h2map_hdrs_add(l, kv[0], strlen(kv[0]), kv[1], strlen(kv[1])))
			return false;
	return true;
}

static int add(struct h2map_hdrs *l, const char *n, const char *v)
{
	return h2map_hdrs_add(l, n, strlen(n), v, strlen(v));
}

/* Whether the HTTP/1 request msg translates (scheme "http") to the list dumped as want. */
static bool h1_translates_to(const char *msg, const char *want)
{
	struct h1 h;
	struct h2map_hdrs l;
	bool ok = parse(&h, HTTP_REQUEST, msg);

	h2map_hdrs_init(&l);
	ok = ok && h2map_request_from_h1(&h, "http", &l) == 0;
	if (ok && strcmp(dump(&l), want) != 0) {
		fprintf(stderr, "  %s  got  [%s]\n  want [%s]\n", msg, dump(&l), want);
		ok = false;
	}
	h2map_hdrs_fini(&l);
	h1_fini(&h);
	return ok;
}

/* ---------------------------------------------------------------- lists ---- */

TEST(hdrs_add_get_lowercase)
{
	struct h2map_hdrs l;
	size_t vlen = 99;

	h2map_hdrs_init(&l);
	CHECK_EQ_INT(add(&l, "Content-Type", "text/plain"), 0);
	CHECK_EQ_INT(add(&l, ":path", "/x"), 0);
	CHECK_EQ_INT(add(&l, "Authorization", "Bearer t"), 0);
	CHECK_EQ_INT(add(&l, "x-empty", ""), 0);
	CHECK_EQ_INT(l.n, 4);
	CHECK_EQ_STR(dump(&l), "content-type: text/plain\n:path: /x\nauthorization: Bearer t\nx-empty: \n");
	CHECK_EQ_STR(h2map_hdrs_get(&l, "CONTENT-TYPE", &vlen), "text/plain");
	CHECK_EQ_INT(vlen, 10);
	CHECK_EQ_STR(h2map_hdrs_get(&l, "x-empty", &vlen), "");
	CHECK_EQ_INT(vlen, 0);
	CHECK(h2map_hdrs_get(&l, "content", NULL) == NULL);
	CHECK(h2map_hdrs_get(&l, "content-typex", NULL) == NULL);
	/* HPACK never-indexed for credentials only */
	CHECK_EQ_INT(l.nv[0].flags, NGHTTP2_NV_FLAG_NONE);
	CHECK_EQ_INT(l.nv[2].flags, NGHTTP2_NV_FLAG_NO_INDEX);
	h2map_hdrs_fini(&l);
	CHECK_EQ_INT(l.n, 0);
	h2map_hdrs_fini(&l);	/* twice is fine */
	/* usable again after fini */
	CHECK_EQ_INT(add(&l, "a", "b"), 0);
	h2map_hdrs_fini(&l);
}

TEST(hdrs_arena_growth_keeps_fields)
{
	struct h2map_hdrs l;
	char n[32], v[600];
	bool same = true;

	h2map_hdrs_init(&l);
	for (int i = 0; i < 100; i++) {
		snprintf(n, sizeof(n), "x-field-%d", i);
		memset(v, 'a' + i % 26, sizeof(v) - 1);
		v[sizeof(v) - 1] = '\0';
		REQUIRE(add(&l, n, v) == 0);
	}
	for (int i = 0; i < 100; i++) {
		size_t vlen;
		const char *got;
		snprintf(n, sizeof(n), "x-field-%d", i);
		got = h2map_hdrs_get(&l, n, &vlen);
		same = same && got && vlen == 599 && got[0] == 'a' + i % 26 && got[598] == got[0] &&
		       got[599] == '\0' && l.nv[i].name[l.nv[i].namelen] == '\0';
	}
	CHECK(same);
	h2map_hdrs_fini(&l);
}

TEST(hdrs_refuses_bad_names_and_values)
{
	struct h2map_hdrs l;

	h2map_hdrs_init(&l);
	CHECK_EQ_INT(h2map_hdrs_add(&l, "", 0, "v", 1), -EPROTO);
	CHECK_EQ_INT(add(&l, ":", "v"), -EPROTO);
	CHECK_EQ_INT(add(&l, "bad name", "v"), -EPROTO);
	CHECK_EQ_INT(add(&l, "bad:name", "v"), -EPROTO);
	CHECK_EQ_INT(add(&l, "x(y)", "v"), -EPROTO);
	CHECK_EQ_INT(add(&l, "caf\xc3\xa9", "v"), -EPROTO);
	CHECK_EQ_INT(add(&l, "x", "a\r\nb: c"), -EPROTO);
	CHECK_EQ_INT(add(&l, "x", "a\nb"), -EPROTO);
	CHECK_EQ_INT(add(&l, "x", "a\rb"), -EPROTO);
	CHECK_EQ_INT(h2map_hdrs_add(&l, "x", 1, "a\0b", 3), -EPROTO);
	CHECK_EQ_INT(h2map_hdrs_add(&l, "x\0y", 3, "v", 1), -EPROTO);
	CHECK_EQ_INT(add(&l, "x", "a\x01"), -EPROTO);
	CHECK_EQ_INT(add(&l, "x", "a\x7f"), -EPROTO);
	CHECK_EQ_INT(add(&l, "x", "\x1b[31m"), -EPROTO);
	CHECK_EQ_INT(l.n, 0);
	/* a tab and obs-text are allowed in values */
	CHECK_EQ_INT(add(&l, "x", "a\tb \xff"), 0);
	h2map_hdrs_fini(&l);
}

TEST(hdrs_bounds)
{
	struct h2map_hdrs l;
	char n[32];
	char *big = malloc(H1_MAX_HEAD + 2);

	REQUIRE(big);
	h2map_hdrs_init(&l);
	for (int i = 0; i < H1_MAX_HEADERS; i++) {
		snprintf(n, sizeof(n), "h%d", i);
		REQUIRE(add(&l, n, "v") == 0);
	}
	CHECK_EQ_INT(add(&l, "one-more", "v"), -E2BIG);
	/* pseudo-headers have their own small bound */
	for (int i = 0; i < H2MAP_MAX_PSEUDO; i++)
		CHECK_EQ_INT(add(&l, ":p", "v"), 0);
	CHECK_EQ_INT(add(&l, ":p", "v"), -E2BIG);
	h2map_hdrs_fini(&l);

	/* bytes: names and values together up to H1_MAX_HEAD */
	memset(big, 'v', H1_MAX_HEAD + 1);
	CHECK_EQ_INT(h2map_hdrs_add(&l, "x", 1, big, H1_MAX_HEAD), -E2BIG);
	CHECK_EQ_INT(h2map_hdrs_add(&l, "x", 1, big, H1_MAX_HEAD - 1), 0);
	CHECK_EQ_INT(h2map_hdrs_add(&l, "y", 1, "", 0), -E2BIG);
	h2map_hdrs_fini(&l);
	CHECK_EQ_INT(h2map_hdrs_add(&l, "x", 1, big, H1_MAX_HEAD - 11), 0);
	CHECK_EQ_INT(h2map_hdrs_add(&l, "y", 1, big, 9), 0);
	CHECK_EQ_INT(h2map_hdrs_add(&l, "z", 1, "", 0), -E2BIG);
	h2map_hdrs_fini(&l);
	free(big);
}

/* ---------------------------------------------------------------- h1 -> h2 ---- */

TEST(request_from_h1_basic)
{
	struct h1 h;
	struct h2map_hdrs l;

	REQUIRE(parse(&h, HTTP_REQUEST, "GET /a/b?c=d HTTP/1.1\r\nHost: echo.default:8080\r\n"
					 "User-Agent: curl/8\r\nAccept: */*   \r\nX-Multi: 1\r\nX-Multi: 2\r\n\r\n"));
	h2map_hdrs_init(&l);
	CHECK_EQ_INT(h2map_request_from_h1(&h, NULL, &l), 0);
	CHECK_EQ_STR(dump(&l), ":method: GET\n:scheme: http\n:authority: echo.default:8080\n:path: /a/b?c=d\n"
			       "user-agent: curl/8\naccept: */*\nx-multi: 1\nx-multi: 2\n");
	/* the caller appends its own fields afterwards */
	CHECK_EQ_INT(add(&l, "x-forwarded-proto", "http"), 0);
	h2map_hdrs_fini(&l);
	CHECK_EQ_INT(h2map_request_from_h1(&h, "https", &l), 0);
	CHECK_EQ_STR(h2map_hdrs_get(&l, ":scheme", NULL), "https");
	h2map_hdrs_fini(&l);
	h1_fini(&h);
}

/* RFC 9113 §8.2.2: what a client of the waypoint sends for its own hop stays there. */
TEST(request_from_h1_drops_connection_specific)
{
	static const struct {
		const char *fields;	/* extra request fields */
		const char *want;	/* the regular fields that come out */
	} cases[] = {
		{ "Connection: keep-alive\r\n", "" },
		{ "Keep-Alive: timeout=5\r\n", "" },
		{ "Proxy-Connection: keep-alive\r\n", "" },
		{ "Upgrade: h2c\r\n", "" },	/* without Connection: upgrade it is no upgrade */
		{ "HTTP2-Settings: AAMAAABkAAQAAP__\r\n", "" },
		{ "Connection: X-Hop, x-other\r\nX-Hop: 1\r\nX-Other: 2\r\nX-Kept: 3\r\n", "x-kept: 3\n" },
		{ "Connection: close\r\nConnection: X-Hop\r\nX-Hop: 1\r\n", "" },
		{ "TE: trailers\r\n", "te: trailers\n" },
		{ "TE: gzip, Trailers;q=0.5\r\n", "te: trailers\n" },
		{ "TE: gzip\r\n", "" },
		{ "Cookie: a=1\r\nCookie: b=2\r\n", "cookie: a=1\ncookie: b=2\n" },
		{ "X-Connection-Ish: y\r\n", "x-connection-ish: y\n" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char msg[512], want[512];
		snprintf(msg, sizeof(msg), "GET / HTTP/1.1\r\nHost: a\r\n%s\r\n", cases[i].fields);
		snprintf(want, sizeof(want), ":method: GET\n:scheme: http\n:authority: a\n:path: /\n%s",
			 cases[i].want);
		CHECK(h1_translates_to(msg, want));
	}
}

TEST(request_from_h1_chunked_body)
{
	struct h1 h;
	struct h2map_hdrs l;

	REQUIRE(parse(&h, HTTP_REQUEST, "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
					 "Content-Type: application/octet-stream\r\n\r\n3\r\nabc\r\n0\r\n\r\n"));
	h2map_hdrs_init(&l);
	CHECK_EQ_INT(h2map_request_from_h1(&h, "http", &l), 0);
	CHECK_EQ_STR(dump(&l), ":method: POST\n:scheme: http\n:authority: a\n:path: /up\n"
			       "content-type: application/octet-stream\n");
	h2map_hdrs_fini(&l);
	h1_fini(&h);
}

TEST(request_from_h1_targets)
{
	/* absolute-form: the target's scheme and authority win over Host (RFC 9112 §3.2.2) */
	CHECK(h1_translates_to("GET http://Other:8080?x=1 HTTP/1.1\r\nHost: ignored\r\n\r\n",
			       ":method: GET\n:scheme: http\n:authority: Other:8080\n:path: /?x=1\n"));
	CHECK(h1_translates_to("GET https://b.example/p/q HTTP/1.1\r\nHost: b.example\r\n\r\n",
			       ":method: GET\n:scheme: https\n:authority: b.example\n:path: /p/q\n"));
	CHECK(h1_translates_to("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
			       ":method: OPTIONS\n:scheme: http\n:authority: a\n:path: *\n"));
	/* HTTP/1.0 without Host: no :authority (RFC 9113 §8.3.1) */
	CHECK(h1_translates_to("GET /old HTTP/1.0\r\n\r\n", ":method: GET\n:scheme: http\n:path: /old\n"));
}

TEST(request_from_h1_refusals)
{
	static const char *const msgs[] = {
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
		struct h1 h;
		struct h2map_hdrs l;
		if (!parse(&h, HTTP_REQUEST, msgs[i])) {
			h1_fini(&h);
			continue;	/* refused by the parser already: fine too */
		}
		h2map_hdrs_init(&l);
		if (h2map_request_from_h1(&h, "http", &l) != -EPROTO) {
			fprintf(stderr, "  accepted: %s\n", msgs[i]);
			test_failed_now = 1;
		}
		h2map_hdrs_fini(&l);
		h1_fini(&h);
	}
	/* a response is not a request */
	struct h1 h;
	struct h2map_hdrs l;
	h2map_hdrs_init(&l);
	REQUIRE(parse(&h, HTTP_RESPONSE, "HTTP/1.1 204 No Content\r\n\r\n"));
	CHECK_EQ_INT(h2map_request_from_h1(&h, "http", &l), -EINVAL);
	CHECK_EQ_INT(h2map_response_from_h1(&h, &l), 0);
	h1_fini(&h);
	REQUIRE(parse(&h, HTTP_REQUEST, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
	CHECK_EQ_INT(h2map_response_from_h1(&h, &l), -EINVAL);
	h1_fini(&h);
	h2map_hdrs_fini(&l);
}

/* The most fields an HTTP/1 head may have still fit beside the pseudo-headers. */
TEST(request_from_h1_at_the_bounds)
{
	struct h1_buf msg = { 0 };
	struct h1 h;
	struct h2map_hdrs l;

	h1_buf_printf(&msg, "GET / HTTP/1.1\r\nHost: a\r\n");
	for (int i = 1; i < H1_MAX_HEADERS; i++)
		h1_buf_printf(&msg, "x-%d: %d\r\n", i, i);
	h1_buf_append(&msg, "\r\n\0", 3);
	REQUIRE(parse(&h, HTTP_REQUEST, (const char *)msg.data));
	h2map_hdrs_init(&l);
	CHECK_EQ_INT(h2map_request_from_h1(&h, "http", &l), 0);
	CHECK_EQ_INT(l.n, 4 + H1_MAX_HEADERS - 1);
	h2map_hdrs_fini(&l);
	h1_fini(&h);
	h1_buf_fini(&msg);
}

TEST(response_from_h1)
{
	struct h1 h;
	struct h2map_hdrs l;

	h2map_hdrs_init(&l);
	REQUIRE(parse(&h, HTTP_RESPONSE, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
					  "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
					  "Transfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
					  "TE: trailers\r\n\r\n3\r\nabc\r\n0\r\n\r\n"));
	CHECK_EQ_INT(h2map_response_from_h1(&h, &l), 0);
	CHECK_EQ_STR(dump(&l), ":status: 404\ncontent-type: text/plain\nset-cookie: a=1\nset-cookie: b=2\n");
	h2map_hdrs_fini(&l);
	h1_fini(&h);

	REQUIRE(parse(&h, HTTP_RESPONSE, "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
					  "Upgrade: websocket\r\n\r\n"));
	CHECK_EQ_INT(h2map_response_from_h1(&h, &l), -EPROTO);
	h2map_hdrs_fini(&l);
	h1_fini(&h);
}

/* ---------------------------------------------------------------- h2 -> h1 ---- */

/* Whether the list kv translates to the HTTP/1.1 head want, chunked or not. */
static bool req_to_h1_is(const char *const *kv, bool end_stream, const char *want, bool want_chunked)
{
	struct h2map_hdrs l;
	struct h1_buf out = { 0 };
	bool chunked = !want_chunked, ok = build(&l, kv);

	ok = ok && h2map_request_to_h1(&l, end_stream, &out, &chunked) == 0 && buf_is(&out, want);
	if (ok && chunked != want_chunked) {
		fprintf(stderr, "  chunked %d\n", chunked);
		ok = false;
	}
	h2map_hdrs_fini(&l);
	h1_buf_fini(&out);
	return ok;
}

TEST(request_to_h1_framing)
{
	static const char *const get[] = { ":method", "GET", ":scheme", "http", ":authority", "a:80",
					   ":path", "/x?y", "accept", "*/*", NULL };
	static const char *const post_cl[] = { ":method", "POST", ":scheme", "http", ":authority", "a",
					       ":path", "/", "content-length", "5", NULL };
	static const char *const post[] = { ":method", "POST", ":scheme", "http", ":authority", "a",
					    ":path", "/", "content-type", "application/grpc",
					    "te", "trailers", NULL };

	CHECK(req_to_h1_is(get, true, "GET /x?y HTTP/1.1\r\nhost: a:80\r\naccept: */*\r\n\r\n", false));
	/* a GET whose body is still to come (HEADERS without END_STREAM) is chunked */
	CHECK(req_to_h1_is(get, false, "GET /x?y HTTP/1.1\r\nhost: a:80\r\naccept: */*\r\n"
				       "transfer-encoding: chunked\r\n\r\n", true));
	CHECK(req_to_h1_is(post_cl, false, "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\n", false));
	CHECK(req_to_h1_is(post, false, "POST / HTTP/1.1\r\nhost: a\r\ncontent-type: application/grpc\r\n"
					"te: trailers\r\ntransfer-encoding: chunked\r\n\r\n", true));
	/* no body at all: an explicit zero length for a method that has content */
	CHECK(req_to_h1_is(post, true, "POST / HTTP/1.1\r\nhost: a\r\ncontent-type: application/grpc\r\n"
				       "te: trailers\r\ncontent-length: 0\r\n\r\n", false));
}

TEST(request_to_h1_host_cookies_and_dropped_fields)
{
	static const char *const kv[] = {
		":method", "GET", ":scheme", "https", ":path", "/", "cookie", "a=1", "x-a", "1",
		"host", "h.example", "cookie", "b=2", "connection", "x-hop", "x-hop", "1",
		"keep-alive", "5", "transfer-encoding", "chunked", "upgrade", "foo",
		"proxy-connection", "x", "te", "gzip", "cookie", "c=3", NULL,
	};
	static const char *const noauth[] = { ":method", "GET", ":scheme", "http", ":path", "/", NULL };
	static const char *const both[] = { ":method", "GET", ":scheme", "http", ":authority", "auth",
					    ":path", "/", "host", "other", NULL };

	CHECK(req_to_h1_is(kv, true, "GET / HTTP/1.1\r\nhost: h.example\r\ncookie: a=1; b=2; c=3\r\n"
				     "x-a: 1\r\n\r\n", false));
	/* no authority at all: an empty Host (RFC 9112 §3.2) */
	CHECK(req_to_h1_is(noauth, true, "GET / HTTP/1.1\r\nhost: \r\n\r\n", false));
	/* :authority wins; the host field does not go out twice */
	CHECK(req_to_h1_is(both, true, "GET / HTTP/1.1\r\nhost: auth\r\n\r\n", false));
}

/* Whether the list kv is refused with -EPROTO (as a request or a response), leaving the output
 * as it was and *chunked false. */
static bool refused(const char *const *kv, bool response)
{
	struct h2map_hdrs l;
	struct h1_buf out = { 0 };
	bool chunked = true, ok = build(&l, kv);
	int rc;

	h1_buf_append(&out, "kept", 4);
	rc = response ? h2map_response_to_h1(&l, false, false, &out, &chunked)
		      : h2map_request_to_h1(&l, false, &out, &chunked);
	ok = ok && rc == -EPROTO && !chunked && buf_is(&out, "kept");
	h2map_hdrs_fini(&l);
	h1_buf_fini(&out);
	return ok;
}

TEST(request_to_h1_malformed)
{
	static const char *const cases[][14] = {
		{ ":scheme", "http", ":path", "/", NULL },					/* no :method */
		{ ":method", "GET", ":scheme", "http", NULL },					/* no :path */
		{ ":method", "GET", ":path", "/", NULL },					/* no :scheme */
		{ ":method", "GET", ":scheme", "http", ":path", "/", ":path", "/b", NULL },	/* twice */
		{ ":method", "GET", ":scheme", "http", "x", "1", ":path", "/", NULL },		/* after a field */
		{ ":method", "GET", ":scheme", "http", ":path", "/", ":status", "200", NULL },
		{ ":method", "GET", ":scheme", "http", ":path", "/", ":protocol", "websocket", NULL },
		{ ":method", "CONNECT", ":authority", "a:443", NULL },
		{ ":method", "CONNECT", ":scheme", "http", ":path", "/", NULL },
		{ ":method", "GET", ":scheme", "http", ":path", "/a b", NULL },
		{ ":method", "GET", ":scheme", "http", ":path", "/a\tb", NULL },
		{ ":method", "GET", ":scheme", "http", ":path", "/\xc3\xa9", NULL },
		{ ":method", "GET", ":scheme", "http", ":path", "x", NULL },
		{ ":method", "GET", ":scheme", "http", ":path", "*", NULL },
		{ ":method", "GET", ":scheme", "http", ":path", "", NULL },
		{ ":method", "G T", ":scheme", "http", ":path", "/", NULL },
		{ ":method", "", ":scheme", "http", ":path", "/", NULL },
		{ ":method", "POST", ":scheme", "http", ":path", "/", "content-length", "1x", NULL },
		{ ":method", "POST", ":scheme", "http", ":path", "/", "content-length", "", NULL },
		{ ":method", "POST", ":scheme", "http", ":path", "/", "content-length", "1",
		  "content-length", "2", NULL },
		{ ":method", "POST", ":scheme", "http", ":path", "/", "content-length",
		  "99999999999999999999", NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (!refused(cases[i], false))
			fprintf(stderr, "  case %zu\n", i), test_failed_now = 1;
	/* the same content-length twice is one; OPTIONS * is fine */
	static const char *const same[] = { ":method", "POST", ":scheme", "http", ":path", "/",
					    "content-length", "3", "content-length", "3", NULL };
	static const char *const opt[] = { ":method", "OPTIONS", ":scheme", "http", ":authority", "a",
					   ":path", "*", NULL };
	CHECK(req_to_h1_is(same, false, "POST / HTTP/1.1\r\nhost: \r\ncontent-length: 3\r\n\r\n", false));
	CHECK(req_to_h1_is(opt, true, "OPTIONS * HTTP/1.1\r\nhost: a\r\n\r\n", false));
}

TEST(response_to_h1_framing)
{
	static const struct {
		const char *status, *cl;	/* cl NULL: no content-length field */
		bool head, end;
		const char *want;
		bool chunked;
	} cases[] = {
		{ "200", "12", false, false, "HTTP/1.1 200 OK\r\nx: y\r\ncontent-length: 12\r\n\r\n", false },
		{ "200", NULL, false, false, "HTTP/1.1 200 OK\r\nx: y\r\ntransfer-encoding: chunked\r\n\r\n", true },
		{ "200", NULL, false, true, "HTTP/1.1 200 OK\r\nx: y\r\ncontent-length: 0\r\n\r\n", false },
		{ "200", NULL, true, false, "HTTP/1.1 200 OK\r\nx: y\r\n\r\n", false },
		{ "200", "99", true, true, "HTTP/1.1 200 OK\r\nx: y\r\ncontent-length: 99\r\n\r\n", false },
		{ "204", NULL, false, false, "HTTP/1.1 204 No Content\r\nx: y\r\n\r\n", false },
		{ "204", "0", false, true, "HTTP/1.1 204 No Content\r\nx: y\r\n\r\n", false },
		{ "304", "7", false, true, "HTTP/1.1 304 Not Modified\r\nx: y\r\ncontent-length: 7\r\n\r\n", false },
		{ "100", NULL, false, false, "HTTP/1.1 100 Continue\r\nx: y\r\n\r\n", false },
		{ "103", NULL, false, false, "HTTP/1.1 103 Early Hints\r\nx: y\r\n\r\n", false },
		{ "500", NULL, false, false, "HTTP/1.1 500 Internal Server Error\r\nx: y\r\n"
					     "transfer-encoding: chunked\r\n\r\n", true },
		{ "299", NULL, false, true, "HTTP/1.1 299 \r\nx: y\r\ncontent-length: 0\r\n\r\n", false },
		{ "599", NULL, false, true, "HTTP/1.1 599 Error\r\nx: y\r\ncontent-length: 0\r\n\r\n", false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct h2map_hdrs l;
		struct h1_buf out = { 0 };
		bool chunked = !cases[i].chunked;
		h2map_hdrs_init(&l);
		add(&l, ":status", cases[i].status);
		add(&l, "x", "y");
		add(&l, "connection", "close");
		add(&l, "transfer-encoding", "gzip");
		add(&l, "te", "trailers");
		if (cases[i].cl)
			add(&l, "content-length", cases[i].cl);
		CHECK_EQ_INT(h2map_response_to_h1(&l, cases[i].head, cases[i].end, &out, &chunked), 0);
		if (!buf_is(&out, cases[i].want) || chunked != cases[i].chunked) {
			fprintf(stderr, "  case %zu\n", i);
			test_failed_now = 1;
		}
		h2map_hdrs_fini(&l);
		h1_buf_fini(&out);
	}
}

TEST(response_to_h1_malformed)
{
	static const char *const cases[][8] = {
		{ "x", "y", NULL },
		{ ":status", "20", NULL },
		{ ":status", "2000", NULL },
		{ ":status", "abc", NULL },
		{ ":status", "099", NULL },
		{ ":status", "600", NULL },
		{ ":status", "101", NULL },
		{ ":status", "200", ":status", "200", NULL },
		{ ":status", "200", ":path", "/", NULL },
		{ "x", "y", ":status", "200", NULL },
		{ ":status", "200", "content-length", "-1", NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (!refused(cases[i], true))
			fprintf(stderr, "  case %zu\n", i), test_failed_now = 1;
}

TEST(trailers_to_h1)
{
	static const char *const grpc[] = { "grpc-status", "13", "grpc-message", "boom%20here",
					    "x-trailer-bin", "AAEC", "content-length", "5",
					    "connection", "close", "host", "a", NULL };
	static const char *const bad[] = { ":status", "200", NULL };
	struct h2map_hdrs l;
	struct h1_buf out = { 0 };

	REQUIRE(build(&l, grpc));
	CHECK_EQ_INT(h2map_trailers_to_h1(&l, &out), 0);
	CHECK(buf_is(&out, "0\r\ngrpc-status: 13\r\ngrpc-message: boom%20here\r\nx-trailer-bin: AAEC\r\n\r\n"));
	h1_buf_consume(&out, h1_buf_pending(&out));
	h2map_hdrs_fini(&l);
	CHECK_EQ_INT(h2map_trailers_to_h1(NULL, &out), 0);
	CHECK(buf_is(&out, "0\r\n\r\n"));
	h1_buf_consume(&out, h1_buf_pending(&out));
	CHECK_EQ_INT(h2map_trailers_to_h1(&l, &out), 0);	/* empty list */
	CHECK(buf_is(&out, "0\r\n\r\n"));
	h1_buf_consume(&out, h1_buf_pending(&out));
	REQUIRE(build(&l, bad));
	CHECK_EQ_INT(h2map_trailers_to_h1(&l, &out), -EPROTO);
	CHECK_EQ_INT(h1_buf_pending(&out), 0);
	h2map_hdrs_fini(&l);
	h1_buf_fini(&out);
}

/* A chunked HTTP/1.1 body's trailer section (read: keep_trailers) -> HTTP/2 trailers:
 * lowercased, trimmed, framing and connection fields left out; and back to chunked trailers. */
static bool parse_kept(struct h1 *h, const char *msg)
{
	struct h1_buf out = { 0 };
	h1_init(h, HTTP_RESPONSE, NULL, NULL);
	h->keep_trailers = true;
	h1_feed(h, (const uint8_t *)msg, strlen(msg), &out);
	h1_buf_fini(&out);
	return h->st == H1_ST_DONE;
}

TEST(trailers_from_h1)
{
	struct h1 h;
	struct h2map_hdrs l;
	struct h1_buf out = { 0 };

	h2map_hdrs_init(&l);
	CHECK(parse_kept(&h, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			 "2\r\nhi\r\n0\r\nGrpc-Status: 0 \r\nX-Sum:  abc\r\nContent-Length: 2\r\n"
			 "Connection: close\r\nTrailer: x\r\n\r\n"));
	CHECK_EQ_INT(h2map_trailers_from_h1(&h, &l), 0);
	CHECK_EQ_STR(dump(&l), "grpc-status: 0\nx-sum: abc\n");
	CHECK_EQ_INT(h2map_trailers_to_h1(&l, &out), 0);
	CHECK(buf_is(&out, "0\r\ngrpc-status: 0\r\nx-sum: abc\r\n\r\n"));
	h2map_hdrs_fini(&l);
	h1_fini(&h);
	/* none: an empty list */
	CHECK(parse_kept(&h, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"));
	CHECK_EQ_INT(h2map_trailers_from_h1(&h, &l), 0);
	CHECK_EQ_INT(l.n, 0);
	h2map_hdrs_fini(&l);
	h1_fini(&h);
	h1_buf_fini(&out);
}

/* ---------------------------------------------------------------- round trips ---- */

/* h1 -> h2 -> h1 -> parsed again: the same method, target, host, end-to-end fields and body. */
TEST(round_trip_request)
{
	static const struct {
		const char *in, *want_head;
		bool end_stream;
	} cases[] = {
		{ "GET /p?q=1 HTTP/1.1\r\nHost: svc:80\r\nAccept: */*\r\nConnection: keep-alive\r\n"
		  "Cookie: a=1\r\n\r\n",
		  "GET /p?q=1 HTTP/1.1\r\nhost: svc:80\r\naccept: */*\r\ncookie: a=1\r\n\r\n", true },
		{ "POST /echo.Echo/Say HTTP/1.1\r\nHost: g\r\nContent-Type: application/grpc\r\n"
		  "TE: trailers\r\nContent-Length: 3\r\n\r\nabc",
		  "POST /echo.Echo/Say HTTP/1.1\r\nhost: g\r\ncontent-type: application/grpc\r\n"
		  "te: trailers\r\ncontent-length: 3\r\n\r\n", false },
		{ "PUT /f HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		  "PUT /f HTTP/1.1\r\nhost: g\r\ntransfer-encoding: chunked\r\n\r\n", false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct h1 h, back;
		struct h2map_hdrs l;
		struct h1_buf out = { 0 };
		bool chunked;
		size_t a, b;
		REQUIRE(parse(&h, HTTP_REQUEST, cases[i].in));
		h2map_hdrs_init(&l);
		CHECK_EQ_INT(h2map_request_from_h1(&h, "http", &l), 0);
		CHECK_EQ_INT(h2map_request_to_h1(&l, cases[i].end_stream, &out, &chunked), 0);
		CHECK(buf_is(&out, cases[i].want_head));
		/* the head parses as HTTP/1.1 again, to the same request */
		if (chunked)
			h1_buf_append(&out, "3\r\nabc\r\n0\r\n\r\n", 13);
		else if (h1_header(&h, "content-length", &a))
			h1_buf_append(&out, "abc", 3);
		h1_buf_append(&out, "", 1);
		CHECK(parse(&back, HTTP_REQUEST, (const char *)h1_buf_head(&out)));
		CHECK_EQ_STR(h1_method(&back), h1_method(&h));
		CHECK(h1_url(&back, &a) && h1_url(&h, &b) && a == b &&
		      memcmp(h1_url(&back, &a), h1_url(&h, &b), a) == 0);
		CHECK(h1_header(&back, "host", &a) && h1_header(&h, "host", &b) && a == b);
		CHECK_EQ_INT(back.body_bytes, h.body_bytes);
		h1_fini(&back);
		h2map_hdrs_fini(&l);
		h1_buf_fini(&out);
		h1_fini(&h);
	}
}

TEST(round_trip_response)
{
	struct h1 h, back;
	struct h2map_hdrs l;
	struct h1_buf out = { 0 };
	bool chunked;
	size_t n;

	REQUIRE(parse(&h, HTTP_RESPONSE, "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\n"
					  "Content-Length: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
					  "Connection: keep-alive\r\n\r\nok"));
	h2map_hdrs_init(&l);
	CHECK_EQ_INT(h2map_response_from_h1(&h, &l), 0);
	CHECK_EQ_INT(h2map_response_to_h1(&l, false, false, &out, &chunked), 0);
	CHECK(!chunked);
	CHECK(buf_is(&out, "HTTP/1.1 201 Created\r\ncontent-type: text/plain\r\nset-cookie: a=1\r\n"
			   "set-cookie: b=2\r\ncontent-length: 2\r\n\r\n"));
	h1_buf_append(&out, "ok", 3);
	REQUIRE(parse(&back, HTTP_RESPONSE, (const char *)h1_buf_head(&out)));
	CHECK_EQ_INT(h1_status(&back), 201);
	CHECK(h1_header(&back, "content-type", &n) && n == 10);
	CHECK_EQ_INT(back.body_bytes, 2);
	CHECK_EQ_INT(back.nh, 4);
	h1_fini(&back);
	h2map_hdrs_fini(&l);
	h1_buf_fini(&out);
	h1_fini(&h);

	/* chunked in, chunked out, with trailers; the whole thing parses */
	REQUIRE(parse(&h, HTTP_RESPONSE, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
					  "2\r\nhi\r\n0\r\n\r\n"));
	h2map_hdrs_init(&l);
	CHECK_EQ_INT(h2map_response_from_h1(&h, &l), 0);
	CHECK_EQ_INT(h2map_response_to_h1(&l, false, false, &out, &chunked), 0);
	CHECK(chunked);
	h2map_hdrs_fini(&l);
	add(&l, "grpc-status", "0");
	h1_buf_append(&out, "2\r\nhi\r\n", 7);
	CHECK_EQ_INT(h2map_trailers_to_h1(&l, &out), 0);
	h1_buf_append(&out, "", 1);
	REQUIRE(parse(&back, HTTP_RESPONSE, (const char *)h1_buf_head(&out)));
	CHECK_EQ_INT(back.body_bytes, 2);
	CHECK_EQ_INT(back.messages, 1);
	h1_fini(&back);
	h2map_hdrs_fini(&l);
	h1_buf_fini(&out);
	h1_fini(&h);
}

/* ---------------------------------------------------------------- gRPC ---- */

TEST(grpc_method)
{
	const char *svc, *meth;
	size_t sl, ml;
	static const char *const bad[] = {
		"", "/", "//", "/a/", "//b", "a/b", "/a/b/c", "/a/b?x", "/a?x/b", "/a/b#f", "/ab",
	};

	CHECK_EQ_INT(h2map_grpc_method("/echo.Echo/Fail", 15, &svc, &sl, &meth, &ml), 0);
	CHECK(sl == 9 && memcmp(svc, "echo.Echo", 9) == 0);
	CHECK(ml == 4 && memcmp(meth, "Fail", 4) == 0);
	CHECK_EQ_INT(h2map_grpc_method("/grpc.health.v1.Health/Check", 28, &svc, &sl, &meth, &ml), 0);
	CHECK(sl == 21 && ml == 5);
	/* a service without a package is still a gRPC path */
	CHECK_EQ_INT(h2map_grpc_method("/S/M", 4, &svc, &sl, &meth, &ml), 0);
	CHECK(sl == 1 && ml == 1 && *svc == 'S' && *meth == 'M');
	/* the length bounds the path (no NUL needed) */
	CHECK_EQ_INT(h2map_grpc_method("/a/bXXXX", 4, &svc, &sl, &meth, &ml), 0);
	CHECK(ml == 1);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_EQ_INT(h2map_grpc_method(bad[i], strlen(bad[i]), &svc, &sl, &meth, &ml), -EINVAL);
	CHECK_EQ_INT(h2map_grpc_method(NULL, 0, &svc, &sl, &meth, &ml), -EINVAL);
}

TEST(grpc_status)
{
	CHECK_EQ_INT(h2map_grpc_status("0", 1), 0);
	CHECK_EQ_INT(h2map_grpc_status("7", 1), 7);
	CHECK_EQ_INT(h2map_grpc_status("16", 2), 16);
	CHECK_EQ_INT(h2map_grpc_status("13xx", 2), 13);
	CHECK_EQ_INT(h2map_grpc_status("17", 2), -1);
	CHECK_EQ_INT(h2map_grpc_status("99", 2), -1);
	CHECK_EQ_INT(h2map_grpc_status("100", 3), -1);
	CHECK_EQ_INT(h2map_grpc_status("", 0), -1);
	CHECK_EQ_INT(h2map_grpc_status(NULL, 0), -1);
	CHECK_EQ_INT(h2map_grpc_status("-1", 2), -1);
	CHECK_EQ_INT(h2map_grpc_status(" 1", 2), -1);
	CHECK_EQ_INT(h2map_grpc_status("a", 1), -1);
}

TEST(grpc_server_errors)
{
	/* OpenTelemetry semantic conventions, gRPC server spans */
	static const bool want[17] = { [2] = true, [4] = true, [12] = true, [13] = true,
				       [14] = true, [15] = true };
	for (int c = 0; c <= 16; c++)
		CHECK_EQ_INT(h2map_grpc_is_server_error(c), want[c]);
	CHECK(!h2map_grpc_is_server_error(-1));
	CHECK(!h2map_grpc_is_server_error(17));
}

TEST(reason_phrases)
{
	CHECK_EQ_STR(h1_reason(200), "OK");
	CHECK_EQ_STR(h1_reason(204), "No Content");
	CHECK_EQ_STR(h1_reason(403), "Forbidden");
	CHECK_EQ_STR(h1_reason(429), "Too Many Requests");
	CHECK_EQ_STR(h1_reason(503), "Service Unavailable");
	CHECK_EQ_STR(h1_reason(499), "Error");
	CHECK_EQ_STR(h1_reason(299), "");
}

int main(void)
{
	return test_main("h2map");
}
