/* SPDX-License-Identifier: Apache-2.0 */
/* Per-identity certificate cache in front of an issuing backend (the local CA in development
 * mode, a remote CA over Istio's certificate API otherwise). Synchronous mode issues on first
 * use; asynchronous mode fetches on worker threads (prefetch, renewal at half-life, jittered
 * backoff) so the data path never waits on the network. Old certs live on by refcount. */
#ifndef AMBIT_TLS_CERTSTORE_H
#define AMBIT_TLS_CERTSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/identity.h"

struct certstore;

/* Wall clock in Unix seconds; injectable for tests. */
typedef int64_t (*certstore_clock_fn)(void *arg);

/* Where certificates come from. issue() makes a cert for id valid lifetime_s from now
 * (Unix seconds; the backend may shorten it), returning one reference owned by the caller, or
 * NULL + errno with one line in why (e.g. "CA refused: PERMISSION_DENIED: ..."). It may block
 * (the asynchronous store calls it on a worker thread, never under the store's lock) and must
 * be safe to call from several threads for different identities at once. */
struct certstore_backend {
	struct tls_cert *(*issue)(void *arg, const struct spiffe_id *id, uint32_t lifetime_s,
				  int64_t now, char *why, size_t whylen);
	void *arg;
	const char *name;	/* for logs and the admin API: "local CA", "https://istiod..:15012" */
};

struct certstore_opts {
	uint32_t lifetime_s;		/* leaf lifetime asked for; 0 = 24 h */
	size_t max_entries;		/* bound; 0 = 4096. The least recently used goes first */
	certstore_clock_fn clock;	/* NULL = time(NULL) */
	void *clock_arg;
	/* NULL: the local CA given to certstore_new (must then be non-NULL). Copied; backend
	 * arg and name are borrowed and must outlive the store. */
	const struct certstore_backend *backend;
	/* Asynchronous mode: certstore_get never issues; worker threads fetch what is missing
	 * or past half-life, one request per identity in flight. */
	bool async;
	unsigned workers;		/* async: concurrent fetches; 0 = 2 */
	uint32_t retry_min_ms;		/* async: first retry after a failure; 0 = 1000 */
	uint32_t retry_max_ms;		/* async: backoff cap; 0 = 60000 */
	/* async: called on a worker thread after each fetch (success or failure), without the
	 * store's lock (e.g. loop_post to retry waiting connections). May be NULL. */
	void (*on_update)(void *arg);
	void *update_arg;
};

/* ca may be NULL when opts->backend is set; else it is borrowed and must outlive the store.
 * opts may be NULL. NULL + errno. Thread-safe (one mutex); async mode starts its workers. */
struct certstore *certstore_new(struct tls_ca *ca, const struct certstore_opts *opts);
/* Accepts NULL. Stops the workers (waits for fetches in flight), drops the store's references;
 * certs held by connections live on. */
void certstore_free(struct certstore *cs);

/* The current cert for id. Synchronous mode: issues one when missing and re-issues when past
 * half-life (if re-issuing fails and the old cert is still valid, the old one is returned).
 * Async mode: the cached cert while it is valid (renewal is the workers' job); when there is
 * none, the identity is queued for a fetch and NULL is returned with errno EAGAIN (wait for
 * on_update; certstore_reason says why it is missing).
 * Returns a new reference the caller must tls_cert_unref(); NULL + errno. */
struct tls_cert *certstore_get(struct certstore *cs, const struct spiffe_id *id);
/* Forgets id (a workload left the node). 0 or -ENOENT. */
int certstore_remove(struct certstore *cs, const struct spiffe_id *id);
/* Async mode: the identities the node needs (its local workloads): each gets a fetch now if it
 * has no cert, and is kept fresh; entries not in the set are dropped (their certs live on in
 * their connections). ids may repeat. 0 or -ENOMEM. */
int certstore_set_wanted(struct certstore *cs, const struct spiffe_id *ids, size_t n);
/* Synchronous mode: renews every entry past half-life now (call from a timer). Returns how
 * many were renewed or -errno of the first failure (the others are still attempted).
 * Async mode: wakes the workers to look again (e.g. after a clock jump); returns 0. */
int certstore_renew_due(struct certstore *cs);
/* Renews early every entry whose cert keep() refuses (a trust bundle changed and the cert no
 * longer chains to the preferred root): it is due now, as if past half-life, and kept in use
 * until its successor arrives. Marks each such entry once per call (a successor that is
 * refused again waits for its own half-life or the next call). Returns how many. */
size_t certstore_renew_unless(struct certstore *cs,
			      bool (*keep)(void *arg, const struct tls_cert *c), void *arg);
size_t certstore_count(struct certstore *cs);
/* Why id has no usable cert, in a few words, into buf ("waiting for the first answer from
 * <backend>", "<backend>: <last error>; retry in 4 s"); "" when it has one. Returns buf. */
char *certstore_reason(struct certstore *cs, const struct spiffe_id *id, char *buf, size_t len);

enum certstore_state {
	CERTSTORE_FRESH,	/* before half-life */
	CERTSTORE_RENEWING,	/* past half-life, renewal due (next get, renew_due or a worker) */
	CERTSTORE_EXPIRED,	/* past not_after: a get will re-issue (async: waits for one) */
	CERTSTORE_PENDING,	/* async: no cert yet, a fetch is queued or in flight */
};
/* "fresh", "renewing", "expired", "pending" */
const char *certstore_state_str(enum certstore_state st);

/* One entry as the admin API shows it. Pointers are valid during the callback only. Cert
 * fields are 0 / "" while PENDING. */
struct certstore_info {
	const struct spiffe_id *id;
	const char *serial_hex;
	int64_t not_before;	/* Unix seconds */
	int64_t not_after;
	int64_t issued_at;	/* Unix seconds */
	int64_t renew_at;	/* half of the life left when it arrived (half-life when issued here) */
	enum certstore_state state;
	uint32_t refs;		/* references besides the store's (≈ connections/holders) */
	uint64_t issued_total;	/* certs issued for this identity since it was added */
	/* async: */
	bool in_flight;		/* a request for it is on its way */
	uint32_t failures;	/* consecutive failed fetches (0 after a success) */
	const char *last_error;	/* of the last failed fetch, "" if none since the last success */
	int64_t next_attempt_ms;	/* ms from now until the next try (0: due / none planned) */
};
/* Calls fn for each entry (sorted by identity) under the store's lock: fn must not call back
 * into the store. A non-zero return from fn stops and is returned; else 0. */
int certstore_foreach(struct certstore *cs, int (*fn)(const struct certstore_info *info,
						      void *arg), void *arg);

/* Totals for metrics, readiness and the admin API. */
struct certstore_stats {
	uint64_t requests;	/* backend calls made */
	uint64_t failures;	/* of which failed */
	size_t entries;
	size_t without_cert;	/* entries with no valid cert (pending or expired) */
	size_t failing;		/* entries whose last fetch failed */
	int64_t last_success;	/* Unix seconds of the last good fetch; 0 = never */
	int64_t last_failure;	/* Unix seconds of the last failed fetch; 0 = never */
	char last_error[256];	/* of the last failed fetch */
	const char *backend;	/* the backend's name (static for the store's life) */
};
void certstore_stats(struct certstore *cs, struct certstore_stats *st);

#endif
