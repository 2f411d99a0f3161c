// SPDX-License-Identifier: Apache-2.0
/* Per-identity certificate cache between the CA and the connections: issue on first use,
 * renew at half-life, bound by LRU. Old certs stay alive through their connections' refs. */
#include "tls/certstore.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "tls/tls_int.h"

#define CERTSTORE_MAX_DEFAULT 4096

struct cs_entry {
	struct spiffe_id id;
	struct tls_cert *cert;	/* the store's reference to the current cert */
	uint64_t last_used;	/* LRU tick */
	uint64_t issued_total;
};

struct certstore {
	struct tls_ca *ca;	/* borrowed */
	struct certstore_opts opts;
	pthread_mutex_t lock;	/* guards everything below; never held while issuing */
	struct cs_entry **ents;	/* sorted by identity (binary search, sorted iteration) */
	size_t n, cap;
	uint64_t tick;
};

static int64_t default_clock(void *arg)
{
	return (int64_t)time(NULL);
}

const char *certstore_state_str(enum certstore_state st)
{
	switch (st) {
	case CERTSTORE_FRESH: return "fresh";
	case CERTSTORE_RENEWING: return "renewing";
	case CERTSTORE_EXPIRED: return "expired";
	}
	return "?";
}

static int64_t renew_at(const struct tls_cert *c)
{
	return c->issued_at + (c->not_after - c->issued_at) / 2;
}

static enum certstore_state cert_state(const struct tls_cert *c, int64_t now)
{
	if (now >= c->not_after)
		return CERTSTORE_EXPIRED;
	if (now >= renew_at(c))
		return CERTSTORE_RENEWING;
	return CERTSTORE_FRESH;
}

struct certstore *certstore_new(struct tls_ca *ca, const struct certstore_opts *opts)
{
	struct certstore *cs;

	if (!ca) {
		errno = EINVAL;
		return NULL;
	}
	if (!(cs = calloc(1, sizeof(*cs))))
		return NULL;
	cs->ca = ca;
	if (opts)
		cs->opts = *opts;
	if (!cs->opts.lifetime_s)
		cs->opts.lifetime_s = TLS_LEAF_LIFETIME_DEFAULT_S;
	if (!cs->opts.max_entries)
		cs->opts.max_entries = CERTSTORE_MAX_DEFAULT;
	if (!cs->opts.clock)
		cs->opts.clock = default_clock;
	pthread_mutex_init(&cs->lock, NULL);
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
	for (size_t i = 0; i < cs->n; i++)
		entry_free(cs->ents[i]);
	free(cs->ents);
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

static void remove_at(struct certstore *cs, size_t i)
{
	entry_free(cs->ents[i]);
	memmove(&cs->ents[i], &cs->ents[i + 1], (cs->n - i - 1) * sizeof(cs->ents[0]));
	cs->n--;
}

/* Makes room for one more entry: grows the array, evicting the least recently used entry
 * when at the bound (its cert lives on in its connections). Lock held. 0 or -ENOMEM. */
static int make_room(struct certstore *cs)
{
	if (cs->n >= cs->opts.max_entries && cs->n) {
		size_t lru = 0;
		for (size_t i = 1; i < cs->n; i++)
			if (cs->ents[i]->last_used < cs->ents[lru]->last_used)
				lru = i;
		remove_at(cs, lru);
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

/* Installs cert (the store takes the caller's reference) for id. Lock held. 0 or -ENOMEM. */
static int install(struct certstore *cs, const struct spiffe_id *id, struct tls_cert *cert)
{
	long i = find(cs, id);
	struct cs_entry *e;

	if (i >= 0) {
		e = cs->ents[i];
		tls_cert_unref(e->cert);
		e->cert = cert;
		e->issued_total++;
		e->last_used = ++cs->tick;
		return 0;
	}
	if (!(e = calloc(1, sizeof(*e))) || make_room(cs)) {
		free(e);
		return -ENOMEM;
	}
	i = find(cs, id);	/* eviction may have moved the insertion point */
	size_t at = (size_t)(-i - 1);
	memmove(&cs->ents[at + 1], &cs->ents[at], (cs->n - at) * sizeof(cs->ents[0]));
	e->id = *id;
	e->cert = cert;
	e->issued_total = 1;
	e->last_used = ++cs->tick;
	cs->ents[at] = e;
	cs->n++;
	return 0;
}

/* The store's current cert for id if fresh (a new reference), else NULL. Lock held. */
static struct tls_cert *lookup_fresh(struct certstore *cs, const struct spiffe_id *id,
				     int64_t now)
{
	long i = find(cs, id);

	if (i < 0 || cert_state(cs->ents[i]->cert, now) != CERTSTORE_FRESH)
		return NULL;
	cs->ents[i]->last_used = ++cs->tick;
	return tls_cert_ref(cs->ents[i]->cert);
}

struct tls_cert *certstore_get(struct certstore *cs, const struct spiffe_id *id)
{
	struct tls_issue_opts io = { .lifetime_s = cs->opts.lifetime_s };
	struct tls_cert *cert, *fresh;
	int64_t now = cs->opts.clock(cs->opts.clock_arg);
	int err;

	pthread_mutex_lock(&cs->lock);
	cert = lookup_fresh(cs, id, now);
	pthread_mutex_unlock(&cs->lock);
	if (cert)
		return cert;

	/* Issue without the lock (key generation and signing take ~0.1-1 ms). Two threads may
	 * race to renew the same identity: both certs are valid, the later one is kept. */
	io.now = now;
	fresh = tls_ca_issue(cs->ca, id, &io);
	err = fresh ? 0 : -errno;

	pthread_mutex_lock(&cs->lock);
	if (fresh) {
		if ((err = install(cs, id, tls_cert_ref(fresh)))) {
			tls_cert_unref(fresh);	/* the reference install() did not take */
		}
		/* Even if it could not be cached, the caller can use it. */
		pthread_mutex_unlock(&cs->lock);
		return fresh;
	}
	long i = find(cs, id);
	if (i >= 0 && now < cs->ents[i]->cert->not_after) {
		cert = tls_cert_ref(cs->ents[i]->cert);
		cs->ents[i]->last_used = ++cs->tick;
	}
	pthread_mutex_unlock(&cs->lock);
	if (cert) {
		char ids[SPIFFE_ID_STR_MAX];
		/* The store decides to carry on with the old cert, so it says so. */
		pr_warn_rl("tls: renewing certificate of %s failed: %s; keeping serial %s until "
			   "%lld", spiffe_id_str(id, ids), strerror(-err), cert->serial,
			   (long long)cert->not_after);
		return cert;
	}
	errno = -err;
	return NULL;
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

int certstore_renew_due(struct certstore *cs)
{
	int64_t now = cs->opts.clock(cs->opts.clock_arg);
	struct spiffe_id *due = NULL;
	size_t ndue = 0;
	int renewed = 0, first_err = 0;

	/* Collect the due identities, then issue without the lock. */
	pthread_mutex_lock(&cs->lock);
	if (cs->n && !(due = malloc(cs->n * sizeof(*due))))
		first_err = -ENOMEM;
	for (size_t i = 0; due && i < cs->n; i++)
		if (cert_state(cs->ents[i]->cert, now) != CERTSTORE_FRESH)
			due[ndue++] = cs->ents[i]->id;
	pthread_mutex_unlock(&cs->lock);

	for (size_t i = 0; i < ndue; i++) {
		struct tls_issue_opts io = { .lifetime_s = cs->opts.lifetime_s, .now = now };
		struct tls_cert *fresh = tls_ca_issue(cs->ca, &due[i], &io);
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

size_t certstore_count(struct certstore *cs)
{
	size_t n;

	pthread_mutex_lock(&cs->lock);
	n = cs->n;
	pthread_mutex_unlock(&cs->lock);
	return n;
}

int certstore_foreach(struct certstore *cs,
		      int (*fn)(const struct certstore_info *info, void *arg), void *arg)
{
	int64_t now = cs->opts.clock(cs->opts.clock_arg);
	int ret = 0;

	pthread_mutex_lock(&cs->lock);
	for (size_t i = 0; i < cs->n && !ret; i++) {
		const struct cs_entry *e = cs->ents[i];
		unsigned refs = atomic_load(&e->cert->refs);
		struct certstore_info info = {
			.id = &e->id,
			.serial_hex = e->cert->serial,
			.not_before = e->cert->not_before,
			.not_after = e->cert->not_after,
			.issued_at = tls_cert_issued_at(e->cert),
			.renew_at = renew_at(e->cert),
			.state = cert_state(e->cert, now),
			.refs = refs ? refs - 1 : 0,
			.issued_total = e->issued_total,
		};
		ret = fn(&info, arg);
	}
	pthread_mutex_unlock(&cs->lock);
	return ret;
}
