// SPDX-License-Identifier: Apache-2.0
/* The waypoint HTTP/2 path's decisions without I/O (see h2rules.h); h2.c gathers the facts from
 * its streams and sessions and acts on the answers. Tested in tests/unit/test_wp_h2rules.c. */
#include "agent/waypoint/h2rules.h"

#include <nghttp2/nghttp2.h>
#include <string.h>

void wp_retry_policy_of(const struct hr_rule *rule, struct wp_retry_policy *p)
{
	memset(p, 0, sizeof(*p));
	p->backoff_ms = WP_RETRY_BACKOFF_MS;
	if (!rule || !rule->retry.on) {
		p->retries = WP_H2_RETRIES;
		p->codes[p->ncodes++] = 503;
		return;
	}
	p->retries = rule->retry.attempts;
	p->ncodes = rule->retry.ncodes;
	memcpy(p->codes, rule->retry.codes, sizeof(p->codes));
	if (rule->retry.backoff_ms)
		p->backoff_ms = rule->retry.backoff_ms;
	p->per_try_ms = rule->retry.per_try_ms;
}

uint64_t wp_retry_backoff_ms(const struct wp_retry_policy *p, unsigned n, uint32_t rnd)
{
	uint64_t span = ((1ull << (n < 16 ? n : 16)) - 1) * p->backoff_ms;
	uint64_t max = 10 * p->backoff_ms;
	if (!span)
		return 0;
	span = span < max ? span : max;
	return rnd % span;
}

/* Nothing of the answer yet, all of the body still kept, a retry left (Envoy retries only
 * before the response started downstream). */
static bool can_go_again(const struct wp_h2_attempt *a, const struct wp_retry_policy *p)
{
	return a->client_waits && !a->answered && !a->body_gone && a->retries < p->retries;
}

bool wp_h2_retry_on_failure(const struct wp_h2_attempt *a, const struct wp_retry_policy *p,
			    uint32_t h2_error, bool connect_failure)
{
	return can_go_again(a, p) && (h2_error == NGHTTP2_REFUSED_STREAM || connect_failure);
}

bool wp_h2_retry_on_answer(const struct wp_h2_attempt *a, const struct wp_retry_policy *p,
			   int status, int grpc_status)
{
	bool code = false;
	for (int i = 0; i < p->ncodes && !code; i++)
		code = p->codes[i] == status;
	return can_go_again(a, p) && (code || grpc_status == 14 || grpc_status == 1);
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
