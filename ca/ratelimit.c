// SPDX-License-Identifier: Apache-2.0
/* Token buckets per caller, in a fixed open-addressed table (bounded memory whatever the
 * callers): a short probe run per key, the stalest bucket of the run is reused when full. */
#include "ca/ratelimit.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 320
#define PROBES 8

struct bucket {
	char key[KEY_MAX];	/* "" = free */
	double tokens;
	uint64_t last_ms;
};

struct ca_ratelimit {
	pthread_mutex_t lock;
	double burst, per_ms;
	struct bucket b[CA_RATELIMIT_KEYS];
};

struct ca_ratelimit *ca_ratelimit_new(uint32_t burst, uint32_t per_second)
{
	struct ca_ratelimit *rl;

	if (!burst || !per_second) {
		errno = EINVAL;
		return NULL;
	}
	if (!(rl = calloc(1, sizeof(*rl))))
		return NULL;
	pthread_mutex_init(&rl->lock, NULL);
	rl->burst = burst;
	rl->per_ms = per_second / 1000.0;
	return rl;
}

void ca_ratelimit_free(struct ca_ratelimit *rl)
{
	if (!rl)
		return;
	pthread_mutex_destroy(&rl->lock);
	free(rl);
}

/* FNV-1a */
static uint64_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 1099511628211ull;
	return h;
}

bool ca_ratelimit_take(struct ca_ratelimit *rl, const char *key, uint64_t now_ms)
{
	size_t start = (size_t)(hash(key) % CA_RATELIMIT_KEYS);
	struct bucket *b = NULL, *stalest = NULL;
	bool ok;

	pthread_mutex_lock(&rl->lock);
	for (size_t i = 0; i < PROBES; i++) {
		struct bucket *c = &rl->b[(start + i) % CA_RATELIMIT_KEYS];
		if (strncmp(c->key, key, KEY_MAX - 1) == 0 && c->key[0]) {
			b = c;
			break;
		}
		if (!stalest || !c->key[0] || (stalest->key[0] && c->last_ms < stalest->last_ms))
			stalest = c;
	}
	if (!b) {
		b = stalest;
		strncpy(b->key, key[0] ? key : "-", KEY_MAX - 1);
		b->key[KEY_MAX - 1] = '\0';
		b->tokens = rl->burst;
		b->last_ms = now_ms;
	}
	if (now_ms > b->last_ms) {
		b->tokens += (double)(now_ms - b->last_ms) * rl->per_ms;
		if (b->tokens > rl->burst)
			b->tokens = rl->burst;
		b->last_ms = now_ms;
	}
	ok = b->tokens >= 1.0;
	if (ok)
		b->tokens -= 1.0;
	pthread_mutex_unlock(&rl->lock);
	return ok;
}
