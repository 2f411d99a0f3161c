/* SPDX-License-Identifier: Apache-2.0 */
/* Per-caller rate limit for ambit-ca: a token bucket per key (the caller's node, else its
 * service account) in a bounded table; the least recently used bucket makes room. */
#ifndef AMBIT_CA_RATELIMIT_H
#define AMBIT_CA_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct ca_ratelimit;

#define CA_RATELIMIT_KEYS 4096	/* callers tracked at once */

/* burst requests at once, refilled at per_second. NULL + errno. */
struct ca_ratelimit *ca_ratelimit_new(uint32_t burst, uint32_t per_second);
void ca_ratelimit_free(struct ca_ratelimit *rl);
/* Takes one token from key's bucket at now_ms (monotonic). false: over the limit.
 * Thread-safe. */
bool ca_ratelimit_take(struct ca_ratelimit *rl, const char *key, uint64_t now_ms);

#endif
