/* SPDX-License-Identifier: Apache-2.0 */
/* The decisions of the waypoint's HTTP/2 path that need no I/O (agent/waypoint/h2.c asks, then
 * acts): Istio's default retry policy on a failure or an answer, the reset a client gets when
 * its endpoint fails mid-answer, which 1xx answers pass, room on a connection and in the wait
 * queue. Not a public API: only agent/waypoint/ and its unit test include it. */
#ifndef AMBIT_AGENT_WAYPOINT_H2RULES_H
#define AMBIT_AGENT_WAYPOINT_H2RULES_H

#include <stdbool.h>
#include <stdint.h>

/* Istio's default HTTP retry policy (VirtualService HTTPRetry unset): 2 retries, another
 * endpoint than the last (Envoy's previous_hosts predicate, at most 5 picks). */
#define WP_H2_RETRIES		2
#define WP_H2_RETRY_PICKS	5
#define WP_H2_INTERIM_MAX	8	/* 1xx answers forwarded per request */
#define WP_H2_QUEUE_MAX		1024	/* requests waiting for room, in all (http2.max_pending_requests) */

/* What one attempt of a request has seen, for the retry decision. */
struct wp_h2_attempt {
	bool client_waits;	/* the client is there and still waits for this answer, and may
				 * be retried at all (its session is not going away) */
	bool answered;		/* the final answer's head came, or something went to the client */
	bool body_gone;		/* request body left and is no longer kept (or an interim answer
				 * went on): the request cannot be sent again */
	uint8_t retries;	/* retries so far */
};

/* Retry on a failure before any answer: the endpoint refused the stream (REFUSED_STREAM, or
 * past the last stream ID of its GOAWAY) or could not be reached (connect_failure). */
bool wp_h2_retry_on_failure(const struct wp_h2_attempt *a, uint32_t h2_error, bool connect_failure);
/* Retry on an answer's head: retriable-status-codes 503, and for gRPC `unavailable` and
 * `cancelled` (grpc_status 14 or 1 of a trailers-only answer; -1: none). */
bool wp_h2_retry_on_answer(const struct wp_h2_attempt *a, int status, int grpc_status);
/* The RST_STREAM code for the client when its endpoint's stream ended with h2_error after the
 * answer began: CANCEL for CANCEL and REFUSED_STREAM, else INTERNAL_ERROR. */
uint32_t wp_h2_client_reset_code(uint32_t h2_error);
/* A 1xx answer passed on to the client (Envoy's isSpecial1xx with proxy_100_continue): 100,
 * 102, 103, 104, while fewer than WP_H2_INTERIM_MAX went. */
bool wp_h2_interim_forwarded(int code, unsigned already);
/* Room for one more stream on a connection with active streams: below our bound and the peer's
 * SETTINGS_MAX_CONCURRENT_STREAMS. */
bool wp_h2_stream_room(uint32_t active, uint32_t ours, uint32_t peers);
/* Room for one more request in the wait queue (max 0: WP_H2_QUEUE_MAX). */
bool wp_h2_queue_room(unsigned queued, uint32_t max);

#endif
