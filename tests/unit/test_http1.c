// SPDX-License-Identifier: Apache-2.0
/* The waypoint's HTTP/1 framing on crafted byte streams: sniffing, keep-alive, chunked bodies
 * (fed whole and byte by byte), pipelining, upgrade and CONNECT hand-over, interim answers,
 * close-delimited bodies, and malformed input (an error status, never a crash). */
#include "harness.h"

#include "http/http1.c"
#include "common/util.h"

#include <stdint.h>

/* A test context: on_head writes the head (with one added header) and counts. */
struct ctx {
	int heads, dones;
	int head_ret;
	const char *extra;
};

static int t_on_head(struct h1 *h, struct h1_buf *out, void *arg)
{
	struct ctx *c = arg;
	const char *extra[1] = { c->extra };
	static const char *const drop[] = { "traceparent", NULL };
	c->heads++;
	if (h1_format_head(h, out, drop, extra, 1))
		return -1;
	return c->head_ret;
}

static void t_on_done(struct h1 *h, void *arg)
{
	(void)h;
	((struct ctx *)arg)->dones++;
}

static const struct h1_cbs cbs = { .on_head = t_on_head, .on_done = t_on_done };

/* Feeds s in pieces of `step` bytes (0 = all at once) until the parser stops consuming. */
static size_t feed_all(struct h1 *h, const char *s, size_t n, size_t step, struct h1_buf *out)
{
	size_t off = 0;
	while (off < n && (h->st == H1_ST_HEAD || h->st == H1_ST_BODY)) {
		size_t k = step ? MIN(step, n - off) : n - off;
		size_t c = h1_feed(h, (const uint8_t *)s + off, k, out);
		off += c;
		if (c < k)
			break;
	}
	return off;
}

static bool out_is(const struct h1_buf *b, const char *want)
{
	size_t n = strlen(want);
	if (h1_buf_pending(b) != n || memcmp(h1_buf_head(b), want, n) != 0) {
		fprintf(stderr, "  got  [%.*s]\n  want [%s]\n", (int)h1_buf_pending(b),
			(const char *)h1_buf_head(b), want);
		return false;
	}
	return true;
}

TEST(sniff)
{
	CHECK_EQ_INT(h1_sniff((const uint8_t *)"GET / HTTP/1.1\r\n", 16), H1_SNIFF_HTTP);
	CHECK_EQ_INT(h1_sniff((const uint8_t *)"POST /x", 7), H1_SNIFF_HTTP);
	CHECK_EQ_INT(h1_sniff((const uint8_t *)"DELETE ", 7), H1_SNIFF_HTTP);
	CHECK_EQ_INT(h1_sniff((const uint8_t *)"GE", 2), H1_SNIFF_MORE);
	CHECK_EQ_INT(h1_sniff((const uint8_t *)"GET", 3), H1_SNIFF_MORE);
	CHECK_EQ_INT(h1_sniff((const uint8_t *)"", 0), H1_SNIFF_MORE);
	CHECK_EQ_INT(h1_sniff((const uint8_t *)"GETX / HTTP/1.1", 15), H1_SNIFF_OTHER);
	CHECK_EQ_INT(h1_sniff((const uint8_t *)"\x16\x03\x01\x02\x00", 5), H1_SNIFF_OTHER);
	CHECK_EQ_INT(h1_sniff((const uint8_t *)"PRI * HTTP/2.0\r\n", 16), H1_SNIFF_OTHER);
	CHECK_EQ_INT(h1_sniff((const uint8_t *)"get / HTTP/1.1", 14), H1_SNIFF_OTHER);
	CHECK_EQ_INT(h1_sniff((const uint8_t *)"SSH-2.0-OpenSSH", 15), H1_SNIFF_OTHER);
}

TEST(request_with_length_keep_alive)
{
	struct ctx c = { .extra = "traceparent: 00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01" };
	struct h1 h;
	struct h1_buf out = { 0 };
	const char *req = "POST /api/v1?x=1 HTTP/1.1\r\nHost: svc\r\ntraceparent: old\r\n"
			  "Content-Length: 5\r\n\r\nhello";
	h1_init(&h, HTTP_REQUEST, &cbs, &c);
	CHECK_EQ_INT(feed_all(&h, req, strlen(req), 0, &out), strlen(req));
	CHECK_EQ_INT(h.st, H1_ST_DONE);
	CHECK_EQ_INT(c.heads, 1);
	CHECK_EQ_INT(c.dones, 1);
	CHECK(h.keep_alive);
	CHECK(!h.upgrade);
	CHECK_EQ_STR(h1_method(&h), "POST");
	size_t ul, hl;
	const char *url = h1_url(&h, &ul);
	CHECK(ul == 11 && memcmp(url, "/api/v1?x=1", 11) == 0);
	const char *host = h1_header(&h, "HOST", &hl);
	CHECK(host && hl == 3 && memcmp(host, "svc", 3) == 0);
	CHECK(out_is(&out, "POST /api/v1?x=1 HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n"
		      "traceparent: 00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01\r\n\r\nhello"));
	h1_buf_fini(&out);
	h1_fini(&h);
}

TEST(connection_close_and_http10)
{
	struct ctx c = { 0 };
	struct h1 h;
	struct h1_buf out = { 0 };
	const char *a = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
	const char *b = "GET / HTTP/1.0\r\n\r\n";
	const char *k = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
	h1_init(&h, HTTP_REQUEST, &cbs, &c);
	feed_all(&h, a, strlen(a), 0, &out);
	CHECK(h.st == H1_ST_DONE && !h.keep_alive);
	h1_fini(&h);
	h1_init(&h, HTTP_REQUEST, &cbs, &c);
	feed_all(&h, b, strlen(b), 0, &out);
	CHECK(h.st == H1_ST_DONE && !h.keep_alive);
	h1_fini(&h);
	h1_init(&h, HTTP_REQUEST, &cbs, &c);
	feed_all(&h, k, strlen(k), 0, &out);
	CHECK(h.st == H1_ST_DONE && h.keep_alive);
	h1_fini(&h);
	h1_buf_fini(&out);
}

/* Chunked in, chunked out: the same for every split of the input. */
TEST(chunked_request_any_split)
{
	const char *req = "PUT /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
			  "5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
	const char *want = "PUT /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
			   "5\r\nhello\r\n1\r\n \r\na\r\n0123456789\r\n0\r\n\r\n";
	for (size_t step = 0; step <= 7; step++) {
		struct ctx c = { 0 };
		struct h1 h;
		struct h1_buf out = { 0 };
		h1_init(&h, HTTP_REQUEST, &cbs, &c);
		CHECK_EQ_INT(feed_all(&h, req, strlen(req), step, &out), strlen(req));
		CHECK_EQ_INT(h.st, H1_ST_DONE);
		CHECK_EQ_INT(h.body_bytes, 16);
		CHECK_EQ_INT(c.heads, 1);
		/* pieces re-chunk differently when split: decode and compare the body instead */
		if (step == 0)
			CHECK(out_is(&out, want));
		struct ctx c2 = { 0 };
		struct h1 again;
		struct h1_buf out2 = { 0 };
		h1_init(&again, HTTP_REQUEST, &cbs, &c2);
		CHECK_EQ_INT(h1_feed(&again, h1_buf_head(&out), h1_buf_pending(&out), &out2),
			     h1_buf_pending(&out));
		CHECK_EQ_INT(again.st, H1_ST_DONE);
		CHECK_EQ_INT(again.body_bytes, 16);
		h1_fini(&again);
		h1_buf_fini(&out2);
		h1_fini(&h);
		h1_buf_fini(&out);
	}
}

/* Found by tests/fuzz/http1: after a chunked message with trailers fed in pieces, the next
 * message looked started (http_parser's nread), so a clean close became -EPROTO. */
TEST(idle_after_chunked_trailers_any_split)
{
	static const char req[] = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
				  "5\r\nhello\r\n0\r\nTrailer: x\r\n\r\n";
	for (size_t step = 0; step <= 7; step++) {
		struct ctx c = { 0 };
		struct h1_buf out = { 0 };
		struct h1 h;
		h1_init(&h, HTTP_REQUEST, &cbs, &c);
		CHECK_EQ_INT(feed_all(&h, req, sizeof(req) - 1, step, &out), sizeof(req) - 1);
		CHECK_EQ_INT(h.st, H1_ST_DONE);
		h1_next(&h);
		CHECK(h1_idle(&h));
		CHECK_EQ_INT(h1_feed_eof(&h, &out), 0);
		h1_buf_fini(&out);
		h1_fini(&h);
	}
}

TEST(pipelined_requests_stop_at_each_end)
{
	struct ctx c = { 0 };
	struct h1 h;
	struct h1_buf out = { 0 };
	const char *one = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n";
	const char *two = "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
	const char *three = "GET /3 HTTP/1.1\r\nHost: h\r\n\r\n";
	char all[512];
	snprintf(all, sizeof(all), "%s%s%s", one, two, three);
	size_t n = strlen(all), off = 0, k;

	h1_init(&h, HTTP_REQUEST, &cbs, &c);
	k = h1_feed(&h, (const uint8_t *)all, n, &out);
	CHECK_EQ_INT(k, strlen(one));
	CHECK_EQ_INT(h.st, H1_ST_DONE);
	CHECK_EQ_INT(h1_feed(&h, (const uint8_t *)all + k, n - k, &out), 0);	/* paused */
	off += k;
	h1_next(&h);
	CHECK(h1_idle(&h));
	k = h1_feed(&h, (const uint8_t *)all + off, n - off, &out);
	CHECK_EQ_INT(k, strlen(two));
	CHECK_EQ_STR(h1_method(&h), "POST");
	off += k;
	h1_next(&h);
	k = h1_feed(&h, (const uint8_t *)all + off, n - off, &out);
	CHECK_EQ_INT(k, strlen(three));
	CHECK_EQ_INT(h.st, H1_ST_DONE);
	CHECK_EQ_INT(c.heads, 3);
	CHECK_EQ_INT(h.messages, 3);
	h1_buf_fini(&out);
	h1_fini(&h);
}

TEST(upgrade_and_connect_hand_over)
{
	struct ctx c = { 0 };
	struct h1 h;
	struct h1_buf out = { 0 };
	const char *head = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
	char req[256];
	snprintf(req, sizeof(req), "%s\x81\x05hello", head);

	h1_init(&h, HTTP_REQUEST, &cbs, &c);
	CHECK_EQ_INT(h1_feed(&h, (const uint8_t *)req, strlen(req), &out), strlen(head));
	CHECK_EQ_INT(h.st, H1_ST_UPGRADED);
	CHECK(h.upgrade);
	h1_fini(&h);

	const char *conn = "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\nrawbytes";
	h1_init(&h, HTTP_REQUEST, &cbs, &c);
	CHECK_EQ_INT(h1_feed(&h, (const uint8_t *)conn, strlen(conn), &out), strlen(conn) - 8);
	CHECK_EQ_INT(h.st, H1_ST_UPGRADED);
	CHECK_EQ_STR(h1_method(&h), "CONNECT");
	h1_fini(&h);

	/* the answers: 101 switches, 2xx to CONNECT tunnels (on_head says so) */
	const char *sw = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi";
	h1_init(&h, HTTP_RESPONSE, &cbs, &c);
	CHECK_EQ_INT(h1_feed(&h, (const uint8_t *)sw, strlen(sw), &out), strlen(sw) - 4);
	CHECK_EQ_INT(h.st, H1_ST_UPGRADED);
	CHECK_EQ_INT(h1_status(&h), 101);
	h1_fini(&h);

	struct ctx ct = { .head_ret = H1_HEAD_TUNNEL };
	const char *ok = "HTTP/1.1 200 Connection established\r\n\r\nserverbytes";
	h1_init(&h, HTTP_RESPONSE, &cbs, &ct);
	CHECK_EQ_INT(h1_feed(&h, (const uint8_t *)ok, strlen(ok), &out), strlen(ok) - 11);
	CHECK_EQ_INT(h.st, H1_ST_UPGRADED);
	h1_fini(&h);
	h1_buf_fini(&out);
}

/* Found by tests/fuzz/http1: an upgrade request with a chunked body, fed in pieces, was taken
 * as upgraded mid-body (http_parser flags the upgrade at the end of the head). The body is
 * read first, whatever the split; the switch comes after the message. */
TEST(upgrade_request_with_body_any_split)
{
	static const char req[] = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
				  "Upgrade: websocket\r\nTransfer-Encoding: chunked\r\n\r\n"
				  "5\r\nhello\r\n0\r\n\r\n";
	static const char after[] = "\x81\x02hi";
	char all[256];
	size_t n = (size_t)snprintf(all, sizeof(all), "%s%s", req, after);

	for (size_t step = 0; step <= 9; step++) {
		struct ctx c = { 0 };
		struct h1_buf out = { 0 };
		struct h1 h;
		h1_init(&h, HTTP_REQUEST, &cbs, &c);
		CHECK_EQ_INT(feed_all(&h, all, n, step, &out), sizeof(req) - 1);
		CHECK_EQ_INT(h.st, H1_ST_UPGRADED);
		CHECK_EQ_INT(h.body_bytes, 5);
		CHECK_EQ_INT(h.messages, 1);
		CHECK_EQ_INT(c.dones, 1);
		h1_buf_fini(&out);
		h1_fini(&h);
	}
}

/* An on_head as the waypoint's: "Upgrade: h2c" ignored (h1_ignore_h2c_upgrade), its fields
 * dropped and what is left of connection sent. */
struct h2c_ctx {
	int rc;
	char *conn;
};

static int h2c_on_head(struct h1 *h, struct h1_buf *out, void *arg)
{
	struct h2c_ctx *c = arg;
	static const char *const drop[] = { "upgrade", "http2-settings", "connection", NULL };
	char line[128];
	const char *extra[1] = { line };
	free(c->conn);
	c->rc = h1_ignore_h2c_upgrade(h, &c->conn);
	snprintf(line, sizeof(line), "connection: %s", c->conn ? c->conn : "");
	if (c->rc < 0 || h1_format_head(h, out, c->rc ? drop : NULL, extra, c->rc && c->conn ? 1 : 0))
		return -1;
	return 0;
}

static const struct h1_cbs h2c_cbs = { .on_head = h2c_on_head };

/* Envoy ignores an h2c upgrade (envoyproxy/envoy#7161): the message is plain HTTP/1.1 (done,
 * not upgraded; its body read, the next request parsed), without upgrade and http2-settings,
 * connection keeping its other tokens; any other upgrade is left alone. */
TEST(h2c_upgrade_ignored_any_split)
{
	static const char req[] = "POST /a HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings, x-hop\r\n"
				  "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
				  "Content-Length: 5\r\n\r\nhello";
	static const char next[] = "GET /b HTTP/1.1\r\nHost: h\r\nConnection: upgrade, http2-settings\r\n"
				   "Upgrade: H2C\r\n\r\n";
	char all[512];
	size_t n = (size_t)snprintf(all, sizeof(all), "%s%s", req, next);

	for (size_t step = 0; step <= 7; step++) {
		struct h2c_ctx c = { 0 };
		struct h1_buf out = { 0 };
		struct h1 h;
		h1_init(&h, HTTP_REQUEST, &h2c_cbs, &c);
		CHECK_EQ_INT(feed_all(&h, all, n, step, &out), sizeof(req) - 1);
		CHECK_EQ_INT(h.st, H1_ST_DONE);
		CHECK(!h.upgrade);
		CHECK(h.keep_alive);
		CHECK_EQ_INT(c.rc, 1);
		CHECK(c.conn && strcmp(c.conn, "x-hop") == 0);
		CHECK_EQ_INT(h.body_bytes, 5);
		CHECK(out_is(&out, "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nconnection: x-hop\r\n\r\nhello"));
		h1_buf_consume(&out, h1_buf_pending(&out));
		h1_next(&h);
		CHECK_EQ_INT(feed_all(&h, next, sizeof(next) - 1, step, &out), sizeof(next) - 1);
		CHECK_EQ_INT(h.st, H1_ST_DONE);
		CHECK_EQ_INT(c.rc, 1);
		CHECK(c.conn == NULL);	/* nothing left: connection dropped */
		CHECK(out_is(&out, "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"));
		free(c.conn);
		h1_buf_fini(&out);
		h1_fini(&h);
	}
	/* websocket: not touched, the upgrade goes on */
	static const char ws[] = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
	struct h2c_ctx c = { 0 };
	struct h1_buf out = { 0 };
	struct h1 h;
	h1_init(&h, HTTP_REQUEST, &h2c_cbs, &c);
	CHECK_EQ_INT(h1_feed(&h, (const uint8_t *)ws, sizeof(ws) - 1, &out), sizeof(ws) - 1);
	CHECK_EQ_INT(c.rc, 0);
	CHECK_EQ_INT(h.st, H1_ST_UPGRADED);
	free(c.conn);
	h1_buf_fini(&out);
	h1_fini(&h);
}

TEST(responses)
{
	struct ctx c = { 0 };
	struct h1 h;
	struct h1_buf out = { 0 };

	/* HEAD: the answer's content-length announces a body that never comes */
	struct ctx ch = { .head_ret = H1_HEAD_NO_BODY };
	const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
	h1_init(&h, HTTP_RESPONSE, &cbs, &ch);
	CHECK_EQ_INT(h1_feed(&h, (const uint8_t *)head, strlen(head), &out), 41);
	CHECK_EQ_INT(h.st, H1_ST_DONE);
	CHECK(h.keep_alive);
	h1_fini(&h);

	/* 100 Continue, then the final answer */
	const char *cont = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Internal Server Error\r\n"
			   "Content-Length: 4\r\n\r\noops";
	h1_init(&h, HTTP_RESPONSE, &cbs, &c);
	size_t k = h1_feed(&h, (const uint8_t *)cont, strlen(cont), &out);
	CHECK_EQ_INT(h.st, H1_ST_DONE);
	CHECK_EQ_INT(h1_status(&h), 100);
	h1_next(&h);
	CHECK_EQ_INT(h1_feed(&h, (const uint8_t *)cont + k, strlen(cont) - k, &out), strlen(cont) - k);
	CHECK_EQ_INT(h1_status(&h), 500);
	CHECK_EQ_INT(h.body_bytes, 4);
	h1_fini(&h);

	/* a body delimited by the close (RFC 9112 §6.3) */
	const char *eof = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end";
	h1_buf_fini(&out);
	h1_init(&h, HTTP_RESPONSE, &cbs, &c);
	CHECK_EQ_INT(h1_feed(&h, (const uint8_t *)eof, strlen(eof), &out), strlen(eof));
	CHECK_EQ_INT(h.st, H1_ST_BODY);
	CHECK_EQ_INT(h1_feed_eof(&h, &out), 0);
	CHECK_EQ_INT(h.st, H1_ST_DONE);
	CHECK(!h.keep_alive);
	CHECK(out_is(&out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"));
	h1_fini(&h);

	/* cut short inside a content-length body: an error, not a complete answer */
	const char *cut = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
	h1_init(&h, HTTP_RESPONSE, &cbs, &c);
	h1_feed(&h, (const uint8_t *)cut, strlen(cut), &out);
	CHECK_EQ_INT(h1_feed_eof(&h, &out), -EPROTO);
	CHECK_EQ_INT(h.st, H1_ST_ERROR);
	h1_fini(&h);

	/* chunked answer, re-chunked */
	const char *ch2 = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
	h1_buf_fini(&out);
	h1_init(&h, HTTP_RESPONSE, &cbs, &c);
	CHECK_EQ_INT(h1_feed(&h, (const uint8_t *)ch2, strlen(ch2), &out), strlen(ch2));
	CHECK(out_is(&out, ch2));
	h1_fini(&h);
	h1_buf_fini(&out);
}

static void expect_error(const char *what, const char *s, size_t n, int status)
{
	struct ctx c = { 0 };
	struct h1 h;
	struct h1_buf out = { 0 };
	h1_init(&h, HTTP_REQUEST, &cbs, &c);
	feed_all(&h, s, n, 0, &out);
	if (h.st != H1_ST_ERROR || h.error_status != status || !h.error) {
		fprintf(stderr, "  %s: state %s status %d\n", what, h1_st_to_str(h.st), h.error_status);
		test_failed_now = 1;
	}
	/* once in error, nothing more is consumed */
	CHECK_EQ_INT(h1_feed(&h, (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18, &out), 0);
	h1_fini(&h);
	h1_buf_fini(&out);
}

TEST(malformed_requests_are_400)
{
	const char *a = "GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n";
	const char *b = "GET / HTTP/9.9.9\r\n\r\n";
	const char *cl = "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello";
	const char *chunk = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
	const char *sp = "GET /a b HTTP/1.1\r\n\r\n";
	expect_error("header without colon", a, strlen(a), 400);
	expect_error("bad version", b, strlen(b), 400);
	expect_error("two content-lengths", cl, strlen(cl), 400);
	expect_error("bad chunk size", chunk, strlen(chunk), 400);
	expect_error("space in target", sp, strlen(sp), 400);
	expect_error("binary", "\x00\x01\x02\x03 garbage\r\n\r\n", 16, 400);
	/* Field names are tokens (RFC 9110 §5.1); whitespace before the colon must be refused
	 * (RFC 9112 §5.1): the system http_parser is built non-strict and lets spaces into a
	 * name, which the proxy would forward as "Transfer-Encoding : chunked" (smuggling). */
	const char *ws = "GET / HTTP/1.1\r\nHost : x\r\n\r\n";
	const char *te = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n";
	const char *inner = "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n";
	const char *sep = "GET / HTTP/1.1\r\nX(y): x\r\n\r\n";
	expect_error("space before the colon", ws, strlen(ws), 400);
	expect_error("Transfer-Encoding with a space before the colon", te, strlen(te), 400);
	expect_error("space inside a field name", inner, strlen(inner), 400);
	expect_error("separator in a field name", sep, strlen(sep), 400);
	for (size_t step = 1; step < 8; step++) {	/* the name split over feeds */
		struct ctx c = { 0 };
		struct h1 h;
		struct h1_buf out = { 0 };
		h1_init(&h, HTTP_REQUEST, &cbs, &c);
		feed_all(&h, ws, strlen(ws), step, &out);
		CHECK_EQ_INT(h.st, H1_ST_ERROR);
		CHECK_EQ_INT(h.error_status, 400);
		h1_fini(&h);
		h1_buf_fini(&out);
	}
}

TEST(oversized_head_is_431)
{
	size_t n = 70 * 1024;
	char *big = malloc(n + 64);
	REQUIRE(big);
	int off = sprintf(big, "GET / HTTP/1.1\r\nX-Big: ");
	memset(big + off, 'a', n);
	memcpy(big + off + n, "\r\n\r\n", 5);
	expect_error("70 KiB header", big, strlen(big), 431);
	free(big);

	/* too many fields */
	char *many = malloc(200 * 16 + 64);
	REQUIRE(many);
	off = sprintf(many, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < 200; i++)
		off += sprintf(many + off, "X-%03d: v\r\n", i);
	strcpy(many + off, "\r\n");
	expect_error("200 fields", many, strlen(many), 431);
	free(many);
}

TEST(local_response)
{
	struct h1_buf out = { 0 };
	CHECK_EQ_INT(h1_local_response(&out, 503, "no healthy upstream", true), 0);
	CHECK(out_is(&out, "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
		      "content-length: 20\r\nserver: ambit-waypoint\r\nconnection: close\r\n\r\n"
		      "no healthy upstream\n"));
	/* and it parses as one complete answer */
	struct ctx c = { 0 };
	struct h1 h;
	struct h1_buf o2 = { 0 };
	h1_init(&h, HTTP_RESPONSE, &cbs, &c);
	CHECK_EQ_INT(h1_feed(&h, h1_buf_head(&out), h1_buf_pending(&out), &o2), h1_buf_pending(&out));
	CHECK(h.st == H1_ST_DONE && !h.keep_alive && h1_status(&h) == 503);
	h1_fini(&h);
	h1_buf_fini(&o2);
	h1_buf_fini(&out);
}

/* Random and mutated streams in random splits: any state, never a crash (ASan/UBSan). */
TEST(fuzz_never_crashes)
{
	static const char *const seeds[] = {
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
		"GET /ws HTTP/1.1\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
	};
	uint64_t x = 0x9e3779b97f4a7c15ull;
	uint8_t buf[512];
	for (int iter = 0; iter < 20000; iter++) {
		const char *seed = seeds[iter % 4];
		size_t n = strlen(seed);
		memcpy(buf, seed, n);
		for (int m = 0; m < 1 + iter % 5; m++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			buf[x % n] = (uint8_t)(x >> 32);
		}
		struct ctx c = { .head_ret = (int)(x >> 40) % 3 };
		struct h1 h;
		struct h1_buf out = { 0 };
		h1_init(&h, iter % 4 == 2 ? HTTP_RESPONSE : HTTP_REQUEST, &cbs, &c);
		size_t off = 0;
		while (off < n) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			size_t k = 1 + x % 9;
			if (k > n - off)
				k = n - off;
			size_t used = h1_feed(&h, buf + off, k, &out);
			off += used;
			if (h.st == H1_ST_DONE)
				h1_next(&h);
			else if (used < k)
				break;
		}
		h1_feed_eof(&h, &out);
		CHECK(h.st <= H1_ST_ERROR);
		h1_fini(&h);
		h1_buf_fini(&out);
	}
}

TEST_MAIN("waypoint_http1")

/* http_parser 2.9 reports the trailer section through the header callbacks after the last
 * chunk: the fields are kept (every split of the input), re-sent only when asked for, and the
 * framing and connection fields among them never. */
TEST(chunked_trailers_read_and_kept_any_split)
{
	static const char req[] = "POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
				  "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 5\r\n"
				  "grpc-status:  0 \r\n\r\n";
	for (int keep = 0; keep <= 1; keep++) {
		for (size_t step = 0; step <= 9; step++) {
			struct ctx c = { 0 };
			struct h1_buf out = { 0 };
			struct h1 h;
			const char *n, *v;
			size_t nl, vl;
			h1_init(&h, HTTP_REQUEST, &cbs, &c);
			h.keep_trailers = keep;
			CHECK_EQ_INT(feed_all(&h, req, sizeof(req) - 1, step, &out), sizeof(req) - 1);
			CHECK_EQ_INT(h.st, H1_ST_DONE);
			CHECK_EQ_INT(h1_trailer_count(&h), keep ? 3 : 0);	/* only read when kept */
			if (keep) {
				h1_trailer(&h, 0, &n, &nl, &v, &vl);
				CHECK(nl == 10 && memcmp(n, "X-Checksum", 10) == 0 && vl == 3 &&
				      memcmp(v, "abc", 3) == 0);
				h1_trailer(&h, 2, &n, &nl, &v, &vl);
				CHECK(nl == 11 && memcmp(n, "grpc-status", 11) == 0 && vl >= 1 && v[0] == '0');
			}
			/* the head is intact beside them */
			CHECK(h1_header(&h, "host", &vl) && vl == 1);
			/* kept: re-sent after the last chunk (the value as http_parser gives it, which
			 * may keep its trailing space), content-length left out; else none */
			const char *o = (const char *)h1_buf_head(&out);
			size_t ol = h1_buf_pending(&out);
			if (keep) {
				CHECK(memmem(o, ol, "0\r\nX-Checksum: abc\r\ngrpc-status: 0", 34) != NULL);
				CHECK(memmem(o, ol, "Content-Length: 5", 17) == NULL);
			} else {
				CHECK(ol >= 5 && memcmp(o + ol - 5, "0\r\n\r\n", 5) == 0);
			}
			h1_next(&h);
			CHECK_EQ_INT(h1_trailer_count(&h), 0);
			CHECK(h1_idle(&h));
			h1_buf_fini(&out);
			h1_fini(&h);
		}
	}
}

/* A response's trailers the same way; past H1_MAX_TRAILERS fields (or the head's byte bound)
 * the rest are dropped, fed whole or byte by byte, and the message is fine. */
TEST(chunked_response_trailers_and_limit)
{
	static const char resp[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
				   "3\r\nabc\r\n0\r\nx-a: 1\r\n\r\n";
	struct ctx c = { 0 };
	struct h1_buf out = { 0 }, big = { 0 }, huge = { 0 };
	struct h1 h;
	h1_init(&h, HTTP_RESPONSE, &cbs, &c);
	h.keep_trailers = true;
	CHECK_EQ_INT(feed_all(&h, resp, sizeof(resp) - 1, 0, &out), sizeof(resp) - 1);
	CHECK_EQ_INT(h.st, H1_ST_DONE);
	CHECK_EQ_INT(h1_trailer_count(&h), 1);
	h1_fini(&h);

	h1_buf_printf(&big, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n");
	for (int i = 0; i < H1_MAX_TRAILERS + 8; i++)
		h1_buf_printf(&big, "x-%d: v%d\r\n", i, i);
	h1_buf_append(&big, "\r\n", 2);
	for (size_t step = 0; step <= 3; step++) {
		const char *n, *v;
		size_t nl, vl;
		h1_buf_consume(&out, h1_buf_pending(&out));
		h1_init(&h, HTTP_RESPONSE, &cbs, &c);
		h.keep_trailers = true;
		CHECK_EQ_INT(feed_all(&h, (const char *)h1_buf_head(&big), h1_buf_pending(&big), step, &out),
			     h1_buf_pending(&big));
		CHECK_EQ_INT(h.st, H1_ST_DONE);
		CHECK_EQ_INT(h1_trailer_count(&h), H1_MAX_TRAILERS);
		h1_trailer(&h, H1_MAX_TRAILERS - 1, &n, &nl, &v, &vl);
		CHECK(nl == 4 && memcmp(n, "x-31", 4) == 0 && vl == 3 && memcmp(v, "v31", 3) == 0);
		h1_fini(&h);
	}
	/* a trailer value past the head's bound: dropped with the rest, the fields before kept */
	h1_buf_printf(&huge, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx-a: 1\r\nx-big: ");
	for (int i = 0; i < H1_MAX_HEAD / 1000 + 1; i++)
		h1_buf_printf(&huge, "%01000d", 0);
	h1_buf_printf(&huge, "\r\nx-c: 3\r\n\r\n");
	h1_init(&h, HTTP_RESPONSE, &cbs, &c);
	h.keep_trailers = true;
	feed_all(&h, (const char *)h1_buf_head(&huge), h1_buf_pending(&huge), 0, &out);
	/* http_parser's own bound on a header section (80 KiB) may refuse it first; if not,
	 * only x-a is kept */
	CHECK(h.st == H1_ST_ERROR || (h.st == H1_ST_DONE && h1_trailer_count(&h) == 1));
	CHECK(h1_trailer_forbidden("Transfer-Encoding", 17) && h1_trailer_forbidden("HOST", 4) &&
	      !h1_trailer_forbidden("grpc-status", 11));
	h1_fini(&h);
	h1_buf_fini(&out);
	h1_buf_fini(&big);
	h1_buf_fini(&huge);
}
