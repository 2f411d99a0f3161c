/* SPDX-License-Identifier: Apache-2.0 */
/* The decisions of the waypoint's HTTP/2 path that need no I/O (agent/waypoint/h2.c asks, then
 * acts): Istio's default retry policy on a failure or an answer, the reset a client gets when
 * its endpoint fails mid-answer, which 1xx answers pass, room on a connection and in the wait
 * queue. Not a public API: only agent/waypoint/ and its unit test include it. */
#ifndef AMBIT_AGENT_WAYPOINT_H2RULES_H
#define AMBIT_AGENT_WAYPOINT_H2RULES_H

#include <stdbool.h>
#include <stdint.h>

#include "istio/httproute.h"

/* Istio's default HTTP retry policy (VirtualService HTTPRetry unset): 2 retries, another
 * endpoint than the last (Envoy's previous_hosts predicate, at most 5 picks). */
#define WP_H2_RETRIES		2
#define WP_H2_RETRY_PICKS	5
#define WP_RETRY_BACKOFF_MS	25	/* Envoy's default base interval of its back-off */
#define WP_H2_INTERIM_MAX	8	/* 1xx answers forwarded per request */
#define WP_H2_QUEUE_MAX		1024	/* requests waiting for room, in all (http2.max_pending_requests) */

/* The retry policy of a request: Istio's default (retry on connect-failure, refused-stream,
 * gRPC unavailable and cancelled, and retriable-status-codes 503; 2 retries), or its HTTPRoute
 * rule's retry (the same triggers with the rule's codes and attempts, its back-off and per-try
 * timeout). */
struct wp_retry_policy {
	uint8_t retries;			/* after the first try */
	uint16_t codes[HTTPROUTE_MAX_RETRY_CODES];	/* retriable status codes */
	int ncodes;
	uint64_t backoff_ms;			/* base interval of the jittered back-off */
	uint64_t per_try_ms;			/* each try's timeout (0: none) */
};
/* The policy of a request that took rule (NULL, or a rule without retry: the default). */
void wp_retry_policy_of(const struct hr_rule *rule, struct wp_retry_policy *p);
/* The wait before retry number n (1 for the first) as Envoy's jittered exponential back-off:
 * rnd modulo (2^n - 1) base intervals, at most 10 base intervals. */
uint64_t wp_retry_backoff_ms(const struct wp_retry_policy *p, unsigned n, uint32_t rnd);

/* What one attempt of a request has seen, for the retry decision. */
struct wp_h2_attempt {
	bool client_waits;	/* the client is there and still waits for this answer, and may
				 * be retried at all (its session is not going away) */
	bool answered;		/* the final answer's head came, or something went to the client */
	bool body_gone;		/* request body left and is no longer kept (or an interim answer
				 * went on): the request cannot be sent again */
	uint8_t retries;	/* retries so far */
};

/* Retry (under policy p) on a failure before any answer: the endpoint refused the stream
 * (REFUSED_STREAM, or past the last stream ID of its GOAWAY) or could not be reached
 * (connect_failure). */
bool wp_h2_retry_on_failure(const struct wp_h2_attempt *a, const struct wp_retry_policy *p,
			    uint32_t h2_error, bool connect_failure);
/* Retry (under p) on an answer's head: p's retriable status codes, and for gRPC `unavailable`
 * and `cancelled` (grpc_status 14 or 1 of a trailers-only answer; -1: none). */
bool wp_h2_retry_on_answer(const struct wp_h2_attempt *a, const struct wp_retry_policy *p,
			   int status, int grpc_status);
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
