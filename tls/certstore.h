/* SPDX-License-Identifier: Apache-2.0 */
/* Per-identity certificate cache: issues a workload's cert on first use, renews it at
 * half-life, evicts idle entries past a bound; connections keep old certs alive by refcount. */
#ifndef AMBIT_TLS_CERTSTORE_H
#define AMBIT_TLS_CERTSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/identity.h"

struct certstore;

/* Wall clock in Unix seconds; injectable for tests. */
typedef int64_t (*certstore_clock_fn)(void *arg);

struct certstore_opts {
	uint32_t lifetime_s;		/* leaf lifetime; 0 = 24 h */
	size_t max_entries;		/* bound; 0 = 4096. The least recently used goes first */
	certstore_clock_fn clock;	/* NULL = time(NULL) */
	void *clock_arg;
};

/* ca is borrowed and must outlive the store. opts may be NULL. NULL + errno.
 * The store is thread-safe (one mutex): workers may share it. */
struct certstore *certstore_new(struct tls_ca *ca, const struct certstore_opts *opts);
/* Accepts NULL. Drops the store's references; certs held by connections live on. */
void certstore_free(struct certstore *cs);

/* The current cert for id, issuing one when missing and re-issuing when past half-life
 * (if re-issuing fails and the old cert is still valid, the old one is returned).
 * Returns a new reference the caller must tls_cert_unref(); NULL + errno. */
struct tls_cert *certstore_get(struct certstore *cs, const struct spiffe_id *id);
/* Forgets id (a workload left the node). 0 or -ENOENT. */
int certstore_remove(struct certstore *cs, const struct spiffe_id *id);
/* Renews every entry past half-life now (call from a timer, e.g. every minute, so that idle
 * identities are fresh before their next connection). Returns how many were renewed or
 * -errno of the first failure (the others are still attempted). */
int certstore_renew_due(struct certstore *cs);
size_t certstore_count(struct certstore *cs);

enum certstore_state {
	CERTSTORE_FRESH,	/* before half-life */
	CERTSTORE_RENEWING,	/* past half-life, renewal due (next get or renew_due) */
	CERTSTORE_EXPIRED,	/* past not_after: a get will re-issue */
};
const char *certstore_state_str(enum certstore_state st);	/* "fresh", "renewing", "expired" */

/* One entry as the admin API shows it. Pointers are valid during the callback only. */
struct certstore_info {
	const struct spiffe_id *id;
	const char *serial_hex;
	int64_t not_before;	/* Unix seconds */
	int64_t not_after;
	int64_t issued_at;	/* Unix seconds */
	int64_t renew_at;	/* half-life */
	enum certstore_state state;
	uint32_t refs;		/* references besides the store's (≈ connections/holders) */
	uint64_t issued_total;	/* certs issued for this identity since it was added */
};
/* Calls fn for each entry (sorted by identity) under the store's lock: fn must not call back
 * into the store. A non-zero return from fn stops and is returned; else 0. */
int certstore_foreach(struct certstore *cs, int (*fn)(const struct certstore_info *info,
						      void *arg), void *arg);

#endif
