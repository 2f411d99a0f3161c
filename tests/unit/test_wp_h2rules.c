// SPDX-License-Identifier: Apache-2.0
/* The waypoint HTTP/2 path's decisions without I/O (agent/waypoint/h2rules.c): Istio's default
 * retry policy on failures and answers, the client's reset code after the answer began, the
 * 1xx answers passed on, room on a connection and in the wait queue. */
#include "harness.h"

#include "agent/waypoint/h2rules.c"

static const struct wp_h2_attempt fresh = { .client_waits = true };

/* connect-failure and refused-stream, nothing else, and only while nothing was answered, the
 * body is all kept, the client waits, and a retry is left (2 of them). */
TEST(retry_on_failure)
{
	struct wp_h2_attempt a = fresh;
	CHECK(wp_h2_retry_on_failure(&a, NGHTTP2_REFUSED_STREAM, false));
	CHECK(wp_h2_retry_on_failure(&a, NGHTTP2_NO_ERROR, true));
	CHECK(!wp_h2_retry_on_failure(&a, NGHTTP2_NO_ERROR, false));	/* a reset, not a refusal */
	CHECK(!wp_h2_retry_on_failure(&a, NGHTTP2_CANCEL, false));
	CHECK(!wp_h2_retry_on_failure(&a, NGHTTP2_INTERNAL_ERROR, false));
	a.retries = 1;
	CHECK(wp_h2_retry_on_failure(&a, NGHTTP2_REFUSED_STREAM, false));
	a.retries = WP_H2_RETRIES;
	CHECK(!wp_h2_retry_on_failure(&a, NGHTTP2_REFUSED_STREAM, false));
	a = fresh;
	a.answered = true;
	CHECK(!wp_h2_retry_on_failure(&a, NGHTTP2_REFUSED_STREAM, true));
	a = fresh;
	a.body_gone = true;
	CHECK(!wp_h2_retry_on_failure(&a, NGHTTP2_REFUSED_STREAM, true));
	a = fresh;
	a.client_waits = false;
	CHECK(!wp_h2_retry_on_failure(&a, NGHTTP2_REFUSED_STREAM, true));
}

/* retriable-status-codes 503; gRPC unavailable (14) and cancelled (1) of a trailers-only
 * answer; nothing else, and under the same terms as failures. */
TEST(retry_on_answer)
{
	struct wp_h2_attempt a = fresh;
	CHECK(wp_h2_retry_on_answer(&a, 503, -1));
	CHECK(wp_h2_retry_on_answer(&a, 200, 14));
	CHECK(wp_h2_retry_on_answer(&a, 200, 1));
	CHECK(!wp_h2_retry_on_answer(&a, 200, 0));
	CHECK(!wp_h2_retry_on_answer(&a, 200, 13));
	CHECK(!wp_h2_retry_on_answer(&a, 200, 4));
	CHECK(!wp_h2_retry_on_answer(&a, 502, -1));
	CHECK(!wp_h2_retry_on_answer(&a, 504, -1));
	CHECK(!wp_h2_retry_on_answer(&a, 500, -1));
	CHECK(!wp_h2_retry_on_answer(&a, 200, -1));
	a.retries = WP_H2_RETRIES;
	CHECK(!wp_h2_retry_on_answer(&a, 503, -1));
	a = fresh;
	a.body_gone = true;	/* e.g. a 100 Continue went on already */
	CHECK(!wp_h2_retry_on_answer(&a, 503, 14));
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
