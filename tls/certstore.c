// SPDX-License-Identifier: Apache-2.0
/* Per-identity certificate cache between the issuing backend and the connections: issue on
 * first use (sync) or fetch on worker threads (async: prefetch, half-life renewal, jittered
 * exponential backoff, one request per identity in flight), bound by LRU. Old certs stay
 * alive through their connections' refs. */
#include "tls/certstore.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "tls/tls_int.h"

#define CERTSTORE_MAX_DEFAULT 4096
#define CERTSTORE_WORKERS_DEFAULT 2
#define CERTSTORE_WORKERS_MAX 16
#define CERTSTORE_RETRY_MIN_MS 1000
#define CERTSTORE_RETRY_MAX_MS 60000
/* A worker sleeps at most this long, so a wall-clock jump is noticed. */
#define CERTSTORE_IDLE_MAX_MS 30000
#define CERTSTORE_ERR_MAX 256

struct cs_entry {
	struct spiffe_id id;
	struct tls_cert *cert;	/* the store's reference to the current cert; NULL while pending */
	int64_t renew_at;	/* Unix seconds (renew_time at installation) */
	uint64_t last_used;	/* LRU tick */
	uint64_t issued_total;
	/* async */
	bool in_flight;
	bool wanted;		/* in the set_wanted set: never evicted by the LRU bound */
	uint32_t failures;	/* consecutive */
	uint64_t next_try_ms;	/* monotonic; 0 = now */
	char last_error[CERTSTORE_ERR_MAX];
};

struct certstore {
	struct certstore_backend be;
	struct certstore_opts opts;
	pthread_mutex_t lock;	/* guards everything below; never held while issuing */
	pthread_cond_t wake;	/* async: work may be due */
	struct cs_entry **ents;	/* sorted by identity (binary search, sorted iteration) */
	size_t n, cap;
	uint64_t tick;
	/* async */
	pthread_t workers[CERTSTORE_WORKERS_MAX];
	unsigned nworkers;
	bool stopping;
	uint64_t requests, failures;
	int64_t last_success, last_failure;
	char last_error[CERTSTORE_ERR_MAX];
	uint64_t rng;
};

static int64_t default_clock(void *arg)
{
	(void)arg;
	return (int64_t)time(NULL);
}

const char *certstore_state_str(enum certstore_state st)
{
	switch (st) {
	case CERTSTORE_FRESH: return "fresh";
	case CERTSTORE_RENEWING: return "renewing";
	case CERTSTORE_EXPIRED: return "expired";
	case CERTSTORE_PENDING: return "pending";
	}
	return "?";
}

/* Renewal is due halfway through what was left of the cert's life when it arrived: a CA that
 * backdates not_before (for clock skew between nodes) must not make a short-lived cert due at
 * once. For a cert issued here, arrival is issuance: plain half-life. */
static int64_t renew_time(const struct tls_cert *c, int64_t received)
{
	int64_t from = received > c->issued_at ? received : c->issued_at;
	if (from > c->not_after)
		from = c->not_after;
	return from + (c->not_after - from) / 2;
}

static enum certstore_state entry_state(const struct cs_entry *e, int64_t now)
{
	if (!e->cert)
		return CERTSTORE_PENDING;
	if (now >= e->cert->not_after)
		return CERTSTORE_EXPIRED;
	if (now >= e->renew_at)
		return CERTSTORE_RENEWING;
	return CERTSTORE_FRESH;
}

static bool cert_valid(const struct tls_cert *c, int64_t now)
{
	return c && now < c->not_after;
}

/* The development backend: the agent's own CA signs. */
static struct tls_cert *local_issue(void *arg, const struct spiffe_id *id, uint32_t lifetime_s,
				    int64_t now, char *why, size_t whylen)
{
	struct tls_issue_opts io = { .lifetime_s = lifetime_s, .now = now };
	struct tls_cert *c = tls_ca_issue(arg, id, &io);

	if (!c)
		snprintf(why, whylen, "local CA: %s", strerror(errno));
	return c;
}

static void *worker_main(void *arg);

static void stop_workers(struct certstore *cs)
{
	pthread_mutex_lock(&cs->lock);
	cs->stopping = true;
	pthread_cond_broadcast(&cs->wake);
	pthread_mutex_unlock(&cs->lock);
	for (unsigned i = 0; i < cs->nworkers; i++)
		pthread_join(cs->workers[i], NULL);
	cs->nworkers = 0;
}

struct certstore *certstore_new(struct tls_ca *ca, const struct certstore_opts *opts)
{
	struct certstore *cs;
	pthread_condattr_t ca_attr;
	int err;

	if (!ca && !(opts && opts->backend)) {
		errno = EINVAL;
		return NULL;
	}
	if (!(cs = calloc(1, sizeof(*cs))))
		return NULL;
	if (opts)
		cs->opts = *opts;
	if (cs->opts.backend)
		cs->be = *cs->opts.backend;
	else
		cs->be = (struct certstore_backend){ .issue = local_issue, .arg = ca,
						     .name = "local CA" };
	cs->opts.backend = NULL;	/* the copy in cs->be is the one used */
	if (!cs->be.name)
		cs->be.name = "CA";
	if (!cs->opts.lifetime_s)
		cs->opts.lifetime_s = TLS_LEAF_LIFETIME_DEFAULT_S;
	if (!cs->opts.max_entries)
		cs->opts.max_entries = CERTSTORE_MAX_DEFAULT;
	if (!cs->opts.clock)
		cs->opts.clock = default_clock;
	if (!cs->opts.workers)
		cs->opts.workers = CERTSTORE_WORKERS_DEFAULT;
	if (cs->opts.workers > CERTSTORE_WORKERS_MAX)
		cs->opts.workers = CERTSTORE_WORKERS_MAX;
	if (!cs->opts.retry_min_ms)
		cs->opts.retry_min_ms = CERTSTORE_RETRY_MIN_MS;
	if (!cs->opts.retry_max_ms)
		cs->opts.retry_max_ms = CERTSTORE_RETRY_MAX_MS;
	if (cs->opts.retry_max_ms < cs->opts.retry_min_ms)
		cs->opts.retry_max_ms = cs->opts.retry_min_ms;
	cs->rng = now_mono_ms() ^ (uint64_t)(uintptr_t)cs;
	pthread_mutex_init(&cs->lock, NULL);
	pthread_condattr_init(&ca_attr);
	pthread_condattr_setclock(&ca_attr, CLOCK_MONOTONIC);
	pthread_cond_init(&cs->wake, &ca_attr);
	pthread_condattr_destroy(&ca_attr);
	if (!cs->opts.async)
		return cs;
	for (unsigned i = 0; i < cs->opts.workers; i++) {
		if ((err = pthread_create(&cs->workers[i], NULL, worker_main, cs))) {
			certstore_free(cs);
			errno = err;
			return NULL;
		}
		cs->nworkers++;
	}
	return cs;
}

static void entry_free(struct cs_entry *e)
{
	if (!e)
		return;
	tls_cert_unref(e->cert);
	free(e);
}

void certstore_free(struct certstore *cs)
{
	if (!cs)
		return;
	stop_workers(cs);
	for (size_t i = 0; i < cs->n; i++)
		entry_free(cs->ents[i]);
	free(cs->ents);
	pthread_cond_destroy(&cs->wake);
	pthread_mutex_destroy(&cs->lock);
	free(cs);
}

/* Index of id, or -(insertion point) - 1. Lock held. */
static long find(const struct certstore *cs, const struct spiffe_id *id)
{
	size_t lo = 0, hi = cs->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = spiffe_id_cmp(&cs->ents[mid]->id, id);
		if (r == 0)
			return (long)mid;
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -(long)lo - 1;
}

static struct cs_entry *find_entry(const struct certstore *cs, const struct spiffe_id *id)
{
	long i = find(cs, id);
	return i >= 0 ? cs->ents[i] : NULL;
}

static void remove_at(struct certstore *cs, size_t i)
{
	entry_free(cs->ents[i]);
	memmove(&cs->ents[i], &cs->ents[i + 1], (cs->n - i - 1) * sizeof(cs->ents[0]));
	cs->n--;
}

/* Makes room for one more entry: grows the array, evicting the least recently used entry
 * that is neither wanted nor being fetched when at the bound (its cert lives on in its
 * connections). Lock held. 0 or -ENOMEM. */
static int make_room(struct certstore *cs)
{
	if (cs->n >= cs->opts.max_entries && cs->n) {
		long lru = -1;
		for (size_t i = 0; i < cs->n; i++) {
			const struct cs_entry *e = cs->ents[i];
			if (e->wanted || e->in_flight)
				continue;
			if (lru < 0 || e->last_used < cs->ents[lru]->last_used)
				lru = (long)i;
		}
		if (lru >= 0)
			remove_at(cs, (size_t)lru);
	}
	if (cs->n == cs->cap) {
		size_t ncap = cs->cap ? cs->cap * 2 : 16;
		struct cs_entry **ne = realloc(cs->ents, ncap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		cs->ents = ne;
		cs->cap = ncap;
	}
	return 0;
}

/* The entry for id, made (with no cert) when missing. Lock held. NULL on ENOMEM. */
static struct cs_entry *entry_get(struct certstore *cs, const struct spiffe_id *id)
{
	long i = find(cs, id);
	struct cs_entry *e;

	if (i >= 0)
		return cs->ents[i];
	if (!(e = calloc(1, sizeof(*e))) || make_room(cs)) {
		free(e);
		return NULL;
	}
	i = find(cs, id);	/* eviction may have moved the insertion point */
	size_t at = (size_t)(-i - 1);
	memmove(&cs->ents[at + 1], &cs->ents[at], (cs->n - at) * sizeof(cs->ents[0]));
	e->id = *id;
	cs->ents[at] = e;
	cs->n++;
	return e;
}

/* Installs cert (the store takes the caller's reference) for id. Lock held. 0 or -ENOMEM. */
static int install(struct certstore *cs, const struct spiffe_id *id, struct tls_cert *cert)
{
	struct cs_entry *e = entry_get(cs, id);

	if (!e)
		return -ENOMEM;
	tls_cert_unref(e->cert);
	e->cert = cert;
	e->renew_at = renew_time(cert, cs->opts.clock(cs->opts.clock_arg));
	e->issued_total++;
	e->last_used = ++cs->tick;
	e->failures = 0;
	e->next_try_ms = 0;
	e->last_error[0] = '\0';
	return 0;
}

/* The store's current cert for id if fresh (a new reference), else NULL. Lock held. */
static struct tls_cert *lookup_fresh(struct certstore *cs, const struct spiffe_id *id,
				     int64_t now)
{
	long i = find(cs, id);

	if (i < 0 || entry_state(cs->ents[i], now) != CERTSTORE_FRESH)
		return NULL;
	cs->ents[i]->last_used = ++cs->tick;
	return tls_cert_ref(cs->ents[i]->cert);
}

/* Calls the backend and counts the request. No lock held. */
static struct tls_cert *backend_issue(struct certstore *cs, const struct spiffe_id *id,
				      int64_t now, char *why, size_t whylen)
{
	struct tls_cert *c;
	int e;

	why[0] = '\0';
	c = cs->be.issue(cs->be.arg, id, cs->opts.lifetime_s, now, why, whylen);
	e = c ? 0 : (errno ? errno : EIO);
	if (!c && !why[0])
		snprintf(why, whylen, "%s: %s", cs->be.name, strerror(e));
	pthread_mutex_lock(&cs->lock);
	cs->requests++;
	if (c) {
		cs->last_success = now;
	} else {
		cs->failures++;
		cs->last_failure = now;
		snprintf(cs->last_error, sizeof(cs->last_error), "%s", why);
	}
	pthread_mutex_unlock(&cs->lock);
	errno = e;
	return c;
}

static struct tls_cert *get_sync(struct certstore *cs, const struct spiffe_id *id, int64_t now)
{
	struct tls_cert *cert = NULL, *fresh;
	char why[CERTSTORE_ERR_MAX];
	int err;

	/* Issue without the lock (key generation and signing take ~0.1-1 ms). Two threads may
	 * race to renew the same identity: both certs are valid, the later one is kept. */
	fresh = backend_issue(cs, id, now, why, sizeof(why));
	err = fresh ? 0 : -errno;

	pthread_mutex_lock(&cs->lock);
	if (fresh) {
		if ((err = install(cs, id, tls_cert_ref(fresh))))
			tls_cert_unref(fresh);	/* the reference install() did not take */
		/* Even if it could not be cached, the caller can use it. */
		pthread_mutex_unlock(&cs->lock);
		return fresh;
	}
	struct cs_entry *e = find_entry(cs, id);
	if (e && cert_valid(e->cert, now)) {
		cert = tls_cert_ref(e->cert);
		e->last_used = ++cs->tick;
	}
	pthread_mutex_unlock(&cs->lock);
	if (cert) {
		char ids[SPIFFE_ID_STR_MAX];
		/* The store decides to carry on with the old cert, so it says so. */
		pr_warn_rl("tls: renewing certificate of %s failed: %s; keeping serial %s until "
			   "%lld", spiffe_id_str(id, ids), why, cert->serial,
			   (long long)cert->not_after);
		return cert;
	}
	errno = -err;
	return NULL;
}

struct tls_cert *certstore_get(struct certstore *cs, const struct spiffe_id *id)
{
	struct tls_cert *cert;
	struct cs_entry *e;
	int64_t now = cs->opts.clock(cs->opts.clock_arg);

	pthread_mutex_lock(&cs->lock);
	if (!cs->opts.async) {
		cert = lookup_fresh(cs, id, now);
		pthread_mutex_unlock(&cs->lock);
		return cert ? cert : get_sync(cs, id, now);
	}
	/* Async: whatever valid cert there is; the workers renew it. */
	if (!(e = entry_get(cs, id))) {
		pthread_mutex_unlock(&cs->lock);
		errno = ENOMEM;
		return NULL;
	}
	e->last_used = ++cs->tick;
	cert = cert_valid(e->cert, now) ? tls_cert_ref(e->cert) : NULL;
	if (!cert && !e->in_flight)
		pthread_cond_signal(&cs->wake);
	pthread_mutex_unlock(&cs->lock);
	if (!cert)
		errno = EAGAIN;
	return cert;
}

int certstore_remove(struct certstore *cs, const struct spiffe_id *id)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&cs->lock);
	long i = find(cs, id);
	if (i >= 0) {
		remove_at(cs, (size_t)i);
		ret = 0;
	}
	pthread_mutex_unlock(&cs->lock);
	return ret;
}

int certstore_set_wanted(struct certstore *cs, const struct spiffe_id *ids, size_t n)
{
	int err = 0;

	pthread_mutex_lock(&cs->lock);
	for (size_t i = 0; i < cs->n; i++)
		cs->ents[i]->wanted = false;
	for (size_t i = 0; i < n; i++) {
		struct cs_entry *e = entry_get(cs, &ids[i]);
		if (!e) {
			err = -ENOMEM;
			break;
		}
		e->wanted = true;
	}
	/* The rest left the node. An entry being fetched stays until its answer lands (the
	 * worker finds it by identity), then goes with the next set. On ENOMEM nothing is
	 * dropped: the set is incomplete. */
	for (size_t i = cs->n; !err && i-- > 0;)
		if (!cs->ents[i]->wanted && !cs->ents[i]->in_flight)
			remove_at(cs, i);
	pthread_cond_broadcast(&cs->wake);
	pthread_mutex_unlock(&cs->lock);
	return err;
}

static int renew_due_sync(struct certstore *cs)
{
	int64_t now = cs->opts.clock(cs->opts.clock_arg);
	struct spiffe_id *due = NULL;
	size_t ndue = 0;
	int renewed = 0, first_err = 0;
	char why[CERTSTORE_ERR_MAX];

	/* Collect the due identities, then issue without the lock. */
	pthread_mutex_lock(&cs->lock);
	if (cs->n && !(due = malloc(cs->n * sizeof(*due))))
		first_err = -ENOMEM;
	for (size_t i = 0; due && i < cs->n; i++)
		if (entry_state(cs->ents[i], now) != CERTSTORE_FRESH)
			due[ndue++] = cs->ents[i]->id;
	pthread_mutex_unlock(&cs->lock);

	for (size_t i = 0; i < ndue; i++) {
		struct tls_cert *fresh = backend_issue(cs, &due[i], now, why, sizeof(why));
		int err = fresh ? 0 : -errno;

		if (fresh) {
			bool present;
			pthread_mutex_lock(&cs->lock);
			/* Only if still present: a removed identity stays removed. */
			present = find(cs, &due[i]) >= 0;
			if (present)
				err = install(cs, &due[i], fresh);
			pthread_mutex_unlock(&cs->lock);
			if (!present || err)
				tls_cert_unref(fresh);
			else
				renewed++;
		}
		if (err && !first_err)
			first_err = err;
	}
	free(due);
	return first_err ? first_err : renewed;
}

size_t certstore_renew_unless(struct certstore *cs,
			      bool (*keep)(void *arg, const struct tls_cert *c), void *arg)
{
	size_t marked = 0;

	pthread_mutex_lock(&cs->lock);
	int64_t now = cs->opts.clock(cs->opts.clock_arg);
	for (size_t i = 0; i < cs->n; i++) {
		struct cs_entry *e = cs->ents[i];
		if (!e->cert || e->renew_at <= now || keep(arg, e->cert))
			continue;
		e->renew_at = now;
		marked++;
	}
	if (marked)
		pthread_cond_broadcast(&cs->wake);
	pthread_mutex_unlock(&cs->lock);
	return marked;
}

int certstore_renew_due(struct certstore *cs)
{
	if (!cs->opts.async)
		return renew_due_sync(cs);
	pthread_mutex_lock(&cs->lock);
	pthread_cond_broadcast(&cs->wake);
	pthread_mutex_unlock(&cs->lock);
	return 0;
}

/* ---- async workers ---- */

/* The wait before retry number `failures` (1 = first): retry_min doubling up to retry_max,
 * then 50-100 % of it, so that many agents that lost the CA together do not return in step.
 * Lock held. */
static uint64_t backoff_ms(struct certstore *cs, uint32_t failures)
{
	uint64_t d = cs->opts.retry_min_ms;

	for (uint32_t i = 1; i < failures && d < cs->opts.retry_max_ms; i++)
		d *= 2;
	if (d > cs->opts.retry_max_ms)
		d = cs->opts.retry_max_ms;
	return jitter_half(&cs->rng, d);
}

/* When e needs a fetch, in monotonic ms (UINT64_MAX: not before something changes). */
static uint64_t due_ms(const struct certstore *cs, const struct cs_entry *e, int64_t now,
		       uint64_t mono)
{
	uint64_t at;

	if (e->in_flight)
		return UINT64_MAX;
	if (entry_state(e, now) != CERTSTORE_FRESH)
		at = mono;
	else	/* the renewal time, in wall seconds from now, as a monotonic deadline */
		at = mono + (uint64_t)(e->renew_at - now) * 1000;
	(void)cs;
	return e->next_try_ms > at ? e->next_try_ms : at;
}

static void *worker_main(void *arg)
{
	struct certstore *cs = arg;
	char why[CERTSTORE_ERR_MAX], ids[SPIFFE_ID_STR_MAX];

	pthread_mutex_lock(&cs->lock);
	while (!cs->stopping) {
		int64_t now = cs->opts.clock(cs->opts.clock_arg);
		uint64_t mono = now_mono_ms(), next = mono + CERTSTORE_IDLE_MAX_MS;
		struct cs_entry *pick = NULL;

		for (size_t i = 0; i < cs->n; i++) {
			uint64_t d = due_ms(cs, cs->ents[i], now, mono);
			if (d <= mono && (!pick || cs->ents[i]->cert == NULL)) {
				pick = cs->ents[i];	/* the ones with no cert first */
				if (!pick->cert)
					break;
			}
			if (d < next)
				next = d;
		}
		if (!pick) {
			struct timespec ts = { .tv_sec = (time_t)(next / 1000),
					       .tv_nsec = (long)(next % 1000) * 1000000 };
			pthread_cond_timedwait(&cs->wake, &cs->lock, &ts);
			continue;
		}
		struct spiffe_id id = pick->id;
		bool had_cert = cert_valid(pick->cert, now);
		pick->in_flight = true;
		pthread_mutex_unlock(&cs->lock);

		struct tls_cert *fresh = backend_issue(cs, &id, now, why, sizeof(why));

		pthread_mutex_lock(&cs->lock);
		struct cs_entry *e = find_entry(cs, &id);
		if (e) {
			e->in_flight = false;
			if (fresh) {
				install(cs, &id, fresh);	/* e exists: cannot fail */
				fresh = NULL;
			} else {
				uint64_t d;
				e->failures++;
				d = backoff_ms(cs, e->failures);
				e->next_try_ms = now_mono_ms() + d;
				snprintf(e->last_error, sizeof(e->last_error), "%s", why);
				/* The store decides to retry (and to keep any old cert): it logs. */
				pr_warn_rl("certificates: %s for %s failed: %s; %s; retry in %llu ms",
					   had_cert ? "renewal" : "fetch", spiffe_id_str(&id, ids),
					   why, had_cert ? "keeping the current certificate"
							 : "connections for it wait",
					   (unsigned long long)d);
			}
		}
		pthread_mutex_unlock(&cs->lock);
		tls_cert_unref(fresh);	/* the identity left meanwhile */
		if (cs->opts.on_update)
			cs->opts.on_update(cs->opts.update_arg);
		pthread_mutex_lock(&cs->lock);
		/* Other workers may sleep while this answer made more work due (or not). */
		pthread_cond_signal(&cs->wake);
	}
	pthread_mutex_unlock(&cs->lock);
	return NULL;
}

/* ---- inspection ---- */

size_t certstore_count(struct certstore *cs)
{
	size_t n;

	pthread_mutex_lock(&cs->lock);
	n = cs->n;
	pthread_mutex_unlock(&cs->lock);
	return n;
}

char *certstore_reason(struct certstore *cs, const struct spiffe_id *id, char *buf, size_t len)
{
	int64_t now = cs->opts.clock(cs->opts.clock_arg);
	uint64_t mono = now_mono_ms();

	if (!len)
		return buf;
	buf[0] = '\0';
	pthread_mutex_lock(&cs->lock);
	const struct cs_entry *e = find_entry(cs, id);
	if (!e)
		snprintf(buf, len, "no certificate requested yet");
	else if (cert_valid(e->cert, now))
		;
	else if (e->last_error[0])
		snprintf(buf, len, "no certificate: %s (%u failed attempts; next in %llu s)",
			 e->last_error, e->failures,
			 (unsigned long long)(e->next_try_ms > mono ? (e->next_try_ms - mono + 999) / 1000
								    : 0));
	else
		snprintf(buf, len, "no certificate yet: waiting for %s", cs->be.name);
	pthread_mutex_unlock(&cs->lock);
	return buf;
}

int certstore_foreach(struct certstore *cs,
		      int (*fn)(const struct certstore_info *info, void *arg), void *arg)
{
	int64_t now = cs->opts.clock(cs->opts.clock_arg);
	uint64_t mono = now_mono_ms();
	int ret = 0;

	pthread_mutex_lock(&cs->lock);
	for (size_t i = 0; i < cs->n && !ret; i++) {
		const struct cs_entry *e = cs->ents[i];
		const struct tls_cert *c = e->cert;
		unsigned refs = c ? atomic_load(&c->refs) : 0;
		struct certstore_info info = {
			.id = &e->id,
			.serial_hex = c ? c->serial : "",
			.not_before = c ? c->not_before : 0,
			.not_after = c ? c->not_after : 0,
			.issued_at = c ? tls_cert_issued_at(c) : 0,
			.renew_at = c ? e->renew_at : 0,
			.state = entry_state(e, now),
			.refs = refs ? refs - 1 : 0,
			.issued_total = e->issued_total,
			.in_flight = e->in_flight,
			.failures = e->failures,
			.last_error = e->last_error,
			.next_attempt_ms = e->next_try_ms > mono ? (int64_t)(e->next_try_ms - mono) : 0,
		};
		ret = fn(&info, arg);
	}
	pthread_mutex_unlock(&cs->lock);
	return ret;
}

void certstore_stats(struct certstore *cs, struct certstore_stats *st)
{
	int64_t now = cs->opts.clock(cs->opts.clock_arg);

	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&cs->lock);
	st->requests = cs->requests;
	st->failures = cs->failures;
	st->entries = cs->n;
	for (size_t i = 0; i < cs->n; i++) {
		if (!cert_valid(cs->ents[i]->cert, now))
			st->without_cert++;
		if (cs->ents[i]->failures)
			st->failing++;
	}
	st->last_success = cs->last_success;
	st->last_failure = cs->last_failure;
	snprintf(st->last_error, sizeof(st->last_error), "%s", cs->last_error);
	st->backend = cs->be.name;
	pthread_mutex_unlock(&cs->lock);
}
