// SPDX-License-Identifier: Apache-2.0
/* The waypoint HTTP/2 path's decisions without I/O (see h2rules.h); h2.c gathers the facts from
 * its streams and sessions and acts on the answers. Tested in tests/unit/test_wp_h2rules.c. */
#include "agent/waypoint/h2rules.h"

#include <nghttp2/nghttp2.h>

/* Nothing of the answer yet, all of the body still kept, a retry left (Envoy retries only
 * before the response started downstream). */
static bool can_go_again(const struct wp_h2_attempt *a)
{
	return a->client_waits && !a->answered && !a->body_gone && a->retries < WP_H2_RETRIES;
}

bool wp_h2_retry_on_failure(const struct wp_h2_attempt *a, uint32_t h2_error, bool connect_failure)
{
	return can_go_again(a) && (h2_error == NGHTTP2_REFUSED_STREAM || connect_failure);
}

bool wp_h2_retry_on_answer(const struct wp_h2_attempt *a, int status, int grpc_status)
{
	return can_go_again(a) && (status == 503 || grpc_status == 14 || grpc_status == 1);
}

uint32_t wp_h2_client_reset_code(uint32_t h2_error)
{
	return h2_error == NGHTTP2_CANCEL || h2_error == NGHTTP2_REFUSED_STREAM ? NGHTTP2_CANCEL
										: NGHTTP2_INTERNAL_ERROR;
}

bool wp_h2_interim_forwarded(int code, unsigned already)
{
	return (code == 100 || code == 102 || code == 103 || code == 104) && already < WP_H2_INTERIM_MAX;
}

bool wp_h2_stream_room(uint32_t active, uint32_t ours, uint32_t peers)
{
	return active < (ours < peers ? ours : peers);
}

bool wp_h2_queue_room(unsigned queued, uint32_t max)
{
	return queued < (max ? max : WP_H2_QUEUE_MAX);
}
