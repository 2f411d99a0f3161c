// SPDX-License-Identifier: Apache-2.0
/* The passive HTTP/1 request tracker on crafted conversations: keep-alive, pipelining,
 * 100-continue and other 1xx, HEAD, 204, chunked and close-delimited bodies, upgrades
 * (accepted and declined), CONNECT, what is not HTTP, parse errors and bounds. Every script
 * is fed whole, byte by byte and in random splits; the events must be the same each time. */
#include "harness.h"

#include "http/h1track.h"

#include <stdarg.h>
#include <stdint.h>

/* One step of a conversation: bytes in a direction, an EOF, or the connection's end. */
enum { S_REQ, S_RESP, S_EOF_REQ, S_EOF_RESP, S_CLOSE, S_END };
struct step {
	int kind;
	const char *s;
	size_t len;	/* 0: strlen(s) */
};

/* Designated initializers (-Wmissing-field-initializers). */
#define REQ(x)		{ .kind = S_REQ, .s = (x) }
#define RESP(x)		{ .kind = S_RESP, .s = (x) }
#define REQN(x, n)	{ .kind = S_REQ, .s = (x), .len = (n) }
#define EOF_REQ		{ .kind = S_EOF_REQ }
#define EOF_RESP	{ .kind = S_EOF_RESP }
#define CLOSE		{ .kind = S_CLOSE }
#define END		{ .kind = S_END }

struct logbuf {
	char s[8192];
	size_t n;
};

static void logf_(struct logbuf *l, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(l->s + l->n, sizeof(l->s) - l->n, fmt, ap);
	va_end(ap);
	if (k > 0)
		l->n += (size_t)k < sizeof(l->s) - l->n ? (size_t)k : sizeof(l->s) - l->n - 1;
}

static void on_req(void *arg, const struct h1t_request *r)
{
	logf_(arg, "req %llu %s %.*s host=%.*s tp=%.*s v=%d.%d t=%llu\n",
	      (unsigned long long)r->ordinal, r->method, (int)r->path_len, r->path,
	      (int)r->host_len, r->host ? r->host : "", r->traceparent ? (int)r->traceparent_len : 1,
	      r->traceparent ? r->traceparent : "-", r->http_major, r->http_minor,
	      (unsigned long long)r->start_ns);
}

static void on_resp(void *arg, const struct h1t_response *r)
{
	logf_(arg, "resp %llu %d t=%llu%s%s\n", (unsigned long long)r->ordinal, r->status,
	      (unsigned long long)r->end_ns, r->why ? " " : "", r->why ? r->why : "");
}

static void on_stop(void *arg, const char *why, bool error)
{
	logf_(arg, "stop %s%s\n", error ? "error " : "", why);
}

static const struct h1t_cbs cbs = { .on_request = on_req, .on_response = on_resp, .on_stop = on_stop };

static uint32_t rnd(uint32_t *x)
{
	*x ^= *x << 13, *x ^= *x >> 17, *x ^= *x << 5;
	return *x;
}

/* mode 0: each step whole; 1: byte by byte; 2: random pieces (seed). Step i happens at time
 * (i + 1) * 10. Returns the final state. */
static enum h1t_state play(const struct step *st, int mode, uint32_t seed, struct logbuf *l)
{
	struct h1track t;
	uint32_t x = seed ? seed : 1;

	memset(l, 0, sizeof(*l));
	h1t_init(&t, &cbs, l);
	for (int i = 0; st[i].kind != S_END; i++) {
		uint64_t now = (uint64_t)(i + 1) * 10;
		size_t n = st[i].len ? st[i].len : (st[i].s ? strlen(st[i].s) : 0);
		switch (st[i].kind) {
		case S_REQ:
		case S_RESP:
			for (size_t off = 0; off < n;) {
				size_t k = mode == 0 ? n : mode == 1 ? 1 : 1 + rnd(&x) % 7;
				if (k > n - off)
					k = n - off;
				h1t_feed(&t, st[i].kind == S_REQ ? H1T_REQ : H1T_RESP,
					 (const uint8_t *)st[i].s + off, k, now);
				off += k;
			}
			break;
		case S_EOF_REQ:
			h1t_eof(&t, H1T_REQ, now);
			break;
		case S_EOF_RESP:
			h1t_eof(&t, H1T_RESP, now);
			break;
		case S_CLOSE:
			h1t_close(&t, "connection closed", now);
			break;
		}
	}
	return t.st;
}

/* Plays the script every way and checks the events and the final state. */
static bool script_gives(const struct step *st, const char *want, enum h1t_state want_st)
{
	struct logbuf ref, l;
	bool ok = true;
	enum h1t_state s0 = play(st, 0, 0, &ref);

	if (strcmp(ref.s, want) != 0 || s0 != want_st) {
		fprintf(stderr, "  got (%s):\n%s  want (%s):\n%s", h1t_state_str(s0), ref.s,
			h1t_state_str(want_st), want);
		ok = false;
	}
	for (uint32_t seed = 0; seed < 40; seed++) {
		enum h1t_state s = play(st, seed == 0 ? 1 : 2, seed * 2654435761u, &l);
		if (strcmp(ref.s, l.s) != 0 || s != s0) {
			fprintf(stderr, "  split %u differs (%s):\n%s  whole:\n%s", seed,
				h1t_state_str(s), l.s, ref.s);
			return false;
		}
	}
	return ok;
}

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

TEST(keep_alive_content_length_and_chunked)
{
	const struct step st[] = {
		REQ("GET /a/b?secret=1 HTTP/1.1\r\nHost: svc.ns:8080\r\ntraceparent: " TP "\r\n\r\n"),
		RESP("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
		REQ("POST /up HTTP/1.1\r\nhost: h\r\nContent-Length: 3\r\n\r\nabc"),
		RESP("HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"),
		RESP("0\r\nX-Trailer: 1\r\n\r\n"),
		CLOSE,
		END,
	};
	CHECK(script_gives(st,
		"req 0 GET /a/b host=svc.ns:8080 tp=" TP " v=1.1 t=10\n"
		"resp 0 200 t=20\n"
		"req 1 POST /up host=h tp=- v=1.1 t=30\n"
		"resp 1 503 t=50\n", H1T_STOPPED));
}

TEST(pipelining_head_and_204)
{
	const struct step st[] = {
		REQ("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: a\r\n\r\n"
			 "DELETE /3 HTTP/1.1\r\nHost: a\r\n\r\n"),
		RESP("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
			  "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
			  "HTTP/1.1 204 No Content\r\n\r\n"),
		REQ("GET /4 HTTP/1.1\r\nHost: a\r\n\r\n"),
		RESP("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
		END,
	};
	CHECK(script_gives(st,
		"req 0 GET /1 host=a tp=- v=1.1 t=10\n"
		"req 1 HEAD /2 host=a tp=- v=1.1 t=10\n"
		"req 2 DELETE /3 host=a tp=- v=1.1 t=10\n"
		"resp 0 200 t=20\nresp 1 200 t=20\nresp 2 204 t=20\n"
		"req 3 GET /4 host=a tp=- v=1.1 t=30\n"
		"resp 3 304 t=40\n", H1T_ON));
}

TEST(expect_continue_and_early_hints)
{
	const struct step st[] = {
		REQ("PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"),
		RESP("HTTP/1.1 100 Continue\r\n\r\n"),
		REQ("data"),
		RESP("HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"),
		RESP("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
		END,
	};
	CHECK(script_gives(st,
		"req 0 PUT /f host=a tp=- v=1.1 t=10\n"
		"resp 0 201 t=50\n", H1T_ON));
}

TEST(close_delimited_response)
{
	const struct step st[] = {
		REQ("GET / HTTP/1.0\r\n\r\n"),
		RESP("HTTP/1.0 200 OK\r\n\r\nsome body"),
		RESP(" and more"),
		EOF_RESP,
		CLOSE,
		END,
	};
	CHECK(script_gives(st,
		"req 0 GET / host= tp=- v=1.0 t=10\n"
		"resp 0 200 t=40\n", H1T_STOPPED));
}

TEST(websocket_upgrade_stops_at_switch)
{
	const struct step st[] = {
		REQ("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"),
		RESP("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x02hi"),
		REQ("GET /not-http HTTP/1.1\r\n\r\n"),
		RESP("HTTP/1.1 200 OK\r\n\r\n"),
		END,
	};
	CHECK(script_gives(st,
		"req 0 GET /ws host=a tp=- v=1.1 t=10\n"
		"resp 0 101 t=20\n"
		"stop protocol switched\n", H1T_UPGRADED));
}

TEST(declined_upgrade_goes_on)
{
	const struct step st[] = {
		REQ("GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"),
		RESP("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
		REQ("GET /y HTTP/1.1\r\nHost: a\r\n\r\n"),
		RESP("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
		END,
	};
	CHECK(script_gives(st,
		"req 0 GET /x host=a tp=- v=1.1 t=10\n"
		"resp 0 200 t=20\n"
		"req 1 GET /y host=a tp=- v=1.1 t=30\n"
		"resp 1 404 t=40\n", H1T_ON));
}

TEST(declined_upgrade_with_bytes_in_between_stops)
{
	const struct step st[] = {
		REQ("GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\nGET /y HTTP/1.1\r\n\r\n"),
		RESP("HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\n"),
		END,
	};
	CHECK(script_gives(st,
		"req 0 GET /x host=a tp=- v=1.1 t=10\n"
		"resp 0 400 t=20\n"
		"stop error client bytes after a declined upgrade\n", H1T_STOPPED));
}

TEST(connect_tunnel)
{
	const struct step st[] = {
		REQ("CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n"),
		RESP("HTTP/1.1 200 Connection established\r\n\r\n"),
		REQ("\x16\x03\x01 tls inside"),
		END,
	};
	CHECK(script_gives(st,
		"req 0 CONNECT db:5432 host=db:5432 tp=- v=1.1 t=10\n"
		"resp 0 200 t=20\n"
		"stop protocol switched\n", H1T_UPGRADED));
}

TEST(not_http_is_left_alone)
{
	static const char hello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03GET / HTTP/1.1\r\n\r\n";
	const struct step tls[] = { REQN(hello, sizeof(hello) - 1), RESP("HTTP/1.1 200 OK\r\n\r\n"), END };
	const struct step h2[] = { REQ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), END };
	const struct step server_first[] = { RESP("220 smtp ready\r\n"), REQ("GET / HTTP/1.1\r\n\r\n"), END };
	const struct step lower[] = { REQ("get / HTTP/1.1\r\n\r\n"), END };
	const struct step short_eof[] = { REQ("GE"), EOF_REQ, END };
	CHECK(script_gives(tls, "", H1T_NOT_HTTP));
	CHECK(script_gives(h2, "", H1T_NOT_HTTP));
	CHECK(script_gives(server_first, "", H1T_NOT_HTTP));
	CHECK(script_gives(lower, "", H1T_NOT_HTTP));
	CHECK(script_gives(short_eof, "", H1T_NOT_HTTP));
}

TEST(parse_error_stops_tracking_once)
{
	const struct step st[] = {
		REQ("GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"),
		REQ("GET /bad HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n"),
		RESP("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
		REQ("garbage garbage"),
		CLOSE,
		END,
	};
	/* The second head was never complete: it was never reported, so nothing is abandoned
	 * but the first, which was still waiting for its answer. */
	CHECK(script_gives(st,
		"req 0 GET /ok host=a tp=- v=1.1 t=10\n"
		"resp 0 0 t=20 invalid character in content-length header\n"
		"stop error invalid character in content-length header\n", H1T_STOPPED));
}

TEST(bad_response_stops)
{
	const struct step st[] = {
		REQ("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
		RESP("HTTP/1.1 2x0 what\r\n\r\n"),
		END,
	};
	CHECK(script_gives(st,
		"req 0 GET / host=a tp=- v=1.1 t=10\n"
		"resp 0 0 t=20 invalid HTTP status code\n"
		"stop error invalid HTTP status code\n", H1T_STOPPED));
}

TEST(response_without_request_stops)
{
	const struct step st[] = {
		REQ("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
		RESP("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 408 Timeout\r\n\r\n"),
		END,
	};
	CHECK(script_gives(st,
		"req 0 GET / host=a tp=- v=1.1 t=10\n"
		"resp 0 200 t=20\n"
		"stop error response without a request\n", H1T_STOPPED));
}

TEST(close_abandons_pending_requests)
{
	const struct step st[] = {
		REQ("GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /slower HTTP/1.1\r\nHost: a\r\n\r\n"),
		RESP("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npartial"),
		CLOSE,
		END,
	};
	CHECK(script_gives(st,
		"req 0 GET /slow host=a tp=- v=1.1 t=10\n"
		"req 1 GET /slower host=a tp=- v=1.1 t=10\n"
		"resp 0 0 t=30 connection closed\n"
		"resp 1 0 t=30 connection closed\n", H1T_STOPPED));
}

TEST(early_response_reports_the_request)
{
	const struct step st[] = {
		REQ("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nxx"),
		RESP("HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
		REQ("more body"),
		END,
	};
	CHECK(script_gives(st,
		"req 0 POST /big host=a tp=- v=1.1 t=10\n"
		"resp 0 413 t=20\n", H1T_ON));
}

TEST(absolute_form_and_long_fields)
{
	char path[400], req[1024];
	memset(path, 'p', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\ntraceparent: %s0123456789\r\n\r\n", path,
		 "a-very-long-host-name-that-goes-on-and-on-past-sixty-four-bytes.example.com", TP);
	const struct step abs_form[] = {
		REQ("GET http://other.ns:81/p/q?x HTTP/1.1\r\nTraceParent: " TP "\r\n\r\n"),
		END,
	};
	const struct step long_fields[] = { REQ(req), END };
	const struct step two_tp[] = {
		REQ("GET / HTTP/1.1\r\ntraceparent: " TP "\r\ntraceparent: " TP "\r\n\r\n"),
		END,
	};
	char want[1024];
	CHECK(script_gives(abs_form, "req 0 GET /p/q host=other.ns:81 tp=" TP " v=1.1 t=10\n", H1T_ON));
	snprintf(want, sizeof(want), "req 0 GET %.128s host=%.64s tp=- v=1.1 t=10\n", path,
		 "a-very-long-host-name-that-goes-on-and-on-past-sixty-four-bytes.example.com");
	CHECK(script_gives(long_fields, want, H1T_ON));
	CHECK(script_gives(two_tp, "req 0 GET / host= tp=- v=1.1 t=10\n", H1T_ON));
}

TEST(head_over_64k_stops)
{
	size_t n = 70 * 1024;
	char *big = malloc(n + 64);
	REQUIRE(big);
	int k = snprintf(big, 64, "GET / HTTP/1.1\r\nX-Big: ");
	memset(big + k, 'a', n - (size_t)k);
	memcpy(big + n, "\r\n\r\n", 5);
	const struct step st[] = {
		REQ("GET /first HTTP/1.1\r\nHost: a\r\n\r\n"),
		RESP("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
		REQ(big),
		END,
	};
	CHECK(script_gives(st,
		"req 0 GET /first host=a tp=- v=1.1 t=10\n"
		"resp 0 200 t=20\n"
		"stop error head over 64 KiB\n", H1T_STOPPED));
	free(big);
}

TEST(too_many_pipelined_requests_stop)
{
	char reqs[2048] = "";
	for (int i = 0; i <= H1T_PIPELINE; i++)
		strcat(reqs, "GET / HTTP/1.1\r\n\r\n");
	const struct step st[] = { REQ(reqs), END };
	struct logbuf l;
	CHECK_EQ_INT(play(st, 0, 0, &l), H1T_STOPPED);
	CHECK(strstr(l.s, "stop error too many pipelined requests\n") != NULL);
	CHECK(strstr(l.s, "resp 7 0 t=10 too many pipelined requests\n") != NULL);
}

TEST(state_stays_small)
{
	/* "a few hundred bytes" per connection */
	CHECK(sizeof(struct h1track) <= 640);
}

TEST_MAIN("h1track")
