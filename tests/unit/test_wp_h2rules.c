// SPDX-License-Identifier: Apache-2.0
/* The waypoint HTTP/2 path's decisions without I/O (agent/waypoint/h2rules.c): Istio's default
 * retry policy on failures and answers, the client's reset code after the answer began, the
 * 1xx answers passed on, room on a connection and in the wait queue. */
#include "harness.h"

#include "agent/waypoint/h2rules.c"

static const struct wp_h2_attempt fresh = { .client_waits = true };

/* Istio's default policy (no HTTPRoute rule, or one without retry) */
static const struct wp_retry_policy *dflt(void)
{
	static struct wp_retry_policy p;
	wp_retry_policy_of(NULL, &p);
	return &p;
}

/* connect-failure and refused-stream, nothing else, and only while nothing was answered, the
 * body is all kept, the client waits, and a retry is left (2 of them). */
TEST(retry_on_failure)
{
	struct wp_h2_attempt a = fresh;
	CHECK(wp_h2_retry_on_failure(&a, dflt(), NGHTTP2_REFUSED_STREAM, false));
	CHECK(wp_h2_retry_on_failure(&a, dflt(), NGHTTP2_NO_ERROR, true));
	CHECK(!wp_h2_retry_on_failure(&a, dflt(), NGHTTP2_NO_ERROR, false));	/* a reset, not a refusal */
	CHECK(!wp_h2_retry_on_failure(&a, dflt(), NGHTTP2_CANCEL, false));
	CHECK(!wp_h2_retry_on_failure(&a, dflt(), NGHTTP2_INTERNAL_ERROR, false));
	a.retries = 1;
	CHECK(wp_h2_retry_on_failure(&a, dflt(), NGHTTP2_REFUSED_STREAM, false));
	a.retries = WP_H2_RETRIES;
	CHECK(!wp_h2_retry_on_failure(&a, dflt(), NGHTTP2_REFUSED_STREAM, false));
	a = fresh;
	a.answered = true;
	CHECK(!wp_h2_retry_on_failure(&a, dflt(), NGHTTP2_REFUSED_STREAM, true));
	a = fresh;
	a.body_gone = true;
	CHECK(!wp_h2_retry_on_failure(&a, dflt(), NGHTTP2_REFUSED_STREAM, true));
	a = fresh;
	a.client_waits = false;
	CHECK(!wp_h2_retry_on_failure(&a, dflt(), NGHTTP2_REFUSED_STREAM, true));
}

/* retriable-status-codes 503; gRPC unavailable (14) and cancelled (1) of a trailers-only
 * answer; nothing else, and under the same terms as failures. */
TEST(retry_on_answer)
{
	struct wp_h2_attempt a = fresh;
	CHECK(wp_h2_retry_on_answer(&a, dflt(), 503, -1));
	CHECK(wp_h2_retry_on_answer(&a, dflt(), 200, 14));
	CHECK(wp_h2_retry_on_answer(&a, dflt(), 200, 1));
	CHECK(!wp_h2_retry_on_answer(&a, dflt(), 200, 0));
	CHECK(!wp_h2_retry_on_answer(&a, dflt(), 200, 13));
	CHECK(!wp_h2_retry_on_answer(&a, dflt(), 200, 4));
	CHECK(!wp_h2_retry_on_answer(&a, dflt(), 502, -1));
	CHECK(!wp_h2_retry_on_answer(&a, dflt(), 504, -1));
	CHECK(!wp_h2_retry_on_answer(&a, dflt(), 500, -1));
	CHECK(!wp_h2_retry_on_answer(&a, dflt(), 200, -1));
	a.retries = WP_H2_RETRIES;
	CHECK(!wp_h2_retry_on_answer(&a, dflt(), 503, -1));
	a = fresh;
	a.body_gone = true;	/* e.g. a 100 Continue went on already */
	CHECK(!wp_h2_retry_on_answer(&a, dflt(), 503, 14));
}

/* A rule's retry (Istio's conversion): its attempts and codes instead of the default's 2 and
 * 503, the same failure and gRPC triggers; attempts 0: no retry at all; a rule without retry
 * keeps the default; backoff and per-try timeout carried over. */
TEST(route_policy)
{
	struct hr_rule r = { 0 };
	struct wp_retry_policy p;
	struct wp_h2_attempt a = fresh;

	wp_retry_policy_of(&r, &p);	/* no retry stanza: the default */
	CHECK_EQ_INT(p.retries, WP_H2_RETRIES);
	CHECK(wp_h2_retry_on_answer(&a, &p, 503, -1));
	CHECK_EQ_INT(p.backoff_ms, WP_RETRY_BACKOFF_MS);
	r.retry.on = true;
	r.retry.attempts = 3;
	r.retry.codes[0] = 500;
	r.retry.codes[1] = 429;
	r.retry.ncodes = 2;
	r.retry.backoff_ms = 100;
	r.retry.per_try_ms = 2000;
	wp_retry_policy_of(&r, &p);
	CHECK_EQ_INT(p.retries, 3);
	CHECK_EQ_INT(p.backoff_ms, 100);
	CHECK_EQ_INT(p.per_try_ms, 2000);
	CHECK(wp_h2_retry_on_answer(&a, &p, 500, -1));
	CHECK(wp_h2_retry_on_answer(&a, &p, 429, -1));
	CHECK(!wp_h2_retry_on_answer(&a, &p, 503, -1));	/* not in the rule's codes */
	CHECK(wp_h2_retry_on_answer(&a, &p, 200, 14));	/* unavailable */
	CHECK(wp_h2_retry_on_failure(&a, &p, NGHTTP2_REFUSED_STREAM, false));
	CHECK(wp_h2_retry_on_failure(&a, &p, NGHTTP2_NO_ERROR, true));
	a.retries = 2;
	CHECK(wp_h2_retry_on_answer(&a, &p, 500, -1));	/* the third of 3 */
	a.retries = 3;
	CHECK(!wp_h2_retry_on_answer(&a, &p, 500, -1));
	CHECK(!wp_h2_retry_on_failure(&a, &p, NGHTTP2_REFUSED_STREAM, true));
	r.retry.attempts = 0;
	r.retry.backoff_ms = 0;
	wp_retry_policy_of(&r, &p);
	a = fresh;
	CHECK(!wp_h2_retry_on_answer(&a, &p, 500, -1));
	CHECK(!wp_h2_retry_on_failure(&a, &p, NGHTTP2_REFUSED_STREAM, true));
	CHECK_EQ_INT(p.backoff_ms, WP_RETRY_BACKOFF_MS);	/* unset: Envoy's 25 ms */
}

/* Envoy's jittered exponential back-off: retry n waits below (2^n - 1) base intervals, at most
 * 10 of them. */
TEST(backoff)
{
	struct wp_retry_policy p;
	wp_retry_policy_of(NULL, &p);
	p.backoff_ms = 100;
	CHECK_EQ_INT(wp_retry_backoff_ms(&p, 1, 0), 0);
	CHECK_EQ_INT(wp_retry_backoff_ms(&p, 1, 99), 99);
	CHECK_EQ_INT(wp_retry_backoff_ms(&p, 1, 100), 0);	/* below 1 interval */
	CHECK_EQ_INT(wp_retry_backoff_ms(&p, 2, 250), 250);	/* below 3 */
	CHECK_EQ_INT(wp_retry_backoff_ms(&p, 2, 300), 0);
	CHECK_EQ_INT(wp_retry_backoff_ms(&p, 3, 699), 699);	/* below 7 */
	CHECK_EQ_INT(wp_retry_backoff_ms(&p, 4, 999), 999);	/* 15 capped at 10 */
	CHECK_EQ_INT(wp_retry_backoff_ms(&p, 4, 1000), 0);
	CHECK(wp_retry_backoff_ms(&p, 60, 0xffffffffu) < 1000);	/* no overflow */
	p.backoff_ms = 0;
	CHECK_EQ_INT(wp_retry_backoff_ms(&p, 1, 12345), 0);
}

/* After the answer began, an endpoint's reset reaches the client as CANCEL (it cancelled or
 * refused) or INTERNAL_ERROR (anything else went wrong). */
TEST(client_reset_code)
{
	CHECK_EQ_INT(wp_h2_client_reset_code(NGHTTP2_CANCEL), NGHTTP2_CANCEL);
	CHECK_EQ_INT(wp_h2_client_reset_code(NGHTTP2_REFUSED_STREAM), NGHTTP2_CANCEL);
	CHECK_EQ_INT(wp_h2_client_reset_code(NGHTTP2_INTERNAL_ERROR), NGHTTP2_INTERNAL_ERROR);
	CHECK_EQ_INT(wp_h2_client_reset_code(NGHTTP2_PROTOCOL_ERROR), NGHTTP2_INTERNAL_ERROR);
	CHECK_EQ_INT(wp_h2_client_reset_code(NGHTTP2_NO_ERROR), NGHTTP2_INTERNAL_ERROR);
	CHECK_EQ_INT(wp_h2_client_reset_code(NGHTTP2_FLOW_CONTROL_ERROR), NGHTTP2_INTERNAL_ERROR);
}

/* Envoy's isSpecial1xx: 100, 102, 103, 104; not 101 (no HTTP/2 form) nor other 1xx; at most
 * WP_H2_INTERIM_MAX per request. */
TEST(interim_forwarded)
{
	CHECK(wp_h2_interim_forwarded(100, 0));
	CHECK(wp_h2_interim_forwarded(102, 0));
	CHECK(wp_h2_interim_forwarded(103, 0));
	CHECK(wp_h2_interim_forwarded(104, 0));
	CHECK(!wp_h2_interim_forwarded(101, 0));
	CHECK(!wp_h2_interim_forwarded(105, 0));
	CHECK(!wp_h2_interim_forwarded(199, 0));
	CHECK(!wp_h2_interim_forwarded(200, 0));
	CHECK(wp_h2_interim_forwarded(103, WP_H2_INTERIM_MAX - 1));
	CHECK(!wp_h2_interim_forwarded(103, WP_H2_INTERIM_MAX));
}

/* A connection takes streams below the lower of our bound and the peer's setting. */
TEST(stream_room)
{
	CHECK(wp_h2_stream_room(0, 100, 100));
	CHECK(wp_h2_stream_room(99, 100, 100));
	CHECK(!wp_h2_stream_room(100, 100, 100));
	CHECK(!wp_h2_stream_room(1, 100, 1));		/* the peer allows one */
	CHECK(!wp_h2_stream_room(1, 1, 1000));		/* hbone.max_streams_per_connection 1 */
	CHECK(!wp_h2_stream_room(0, 100, 0));		/* SETTINGS_MAX_CONCURRENT_STREAMS 0 */
	CHECK(wp_h2_stream_room(5, 100, UINT32_MAX));	/* the peer's default: no limit */
}

/* The wait queue holds http2.max_pending_requests (0: the default, 1024). */
TEST(queue_room)
{
	CHECK(wp_h2_queue_room(0, 0));
	CHECK(wp_h2_queue_room(WP_H2_QUEUE_MAX - 1, 0));
	CHECK(!wp_h2_queue_room(WP_H2_QUEUE_MAX, 0));
	CHECK(wp_h2_queue_room(9, 10));
	CHECK(!wp_h2_queue_room(10, 10));
	CHECK(!wp_h2_queue_room(1, 1));
}

TEST_MAIN("wp_h2rules")
