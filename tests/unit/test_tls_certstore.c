// SPDX-License-Identifier: Apache-2.0
/* The certificate store's asynchronous mode against a scripted backend: prefetch of wanted
 * identities, one request per identity in flight, jittered exponential backoff, the old cert
 * kept while renewal fails, and the counters readiness and metrics read. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "common/util.h"
#include "tls/ca.h"
#include "tls/certstore.h"

#define TD "cluster.local"

static struct spiffe_id sid(const char *ns, const char *sa)
{
	struct spiffe_id id;
	spiffe_id_set(&id, TD, ns, sa, NULL);
	return id;
}

/* A backend that signs with a test CA, can be told to fail or to hold requests, and records
 * what it saw. */
struct fake_ca {
	struct tls_ca *ca;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	bool fail;		/* answer with an error */
	bool hold;		/* block requests until released */
	int calls, in_flight, max_in_flight_same_id, updates;
	uint64_t call_ms[16];	/* monotonic time of each call */
	struct spiffe_id last_id;
	struct spiffe_id busy[8];
	int nbusy;
};

static struct tls_cert *fake_issue(void *arg, const struct spiffe_id *id, uint32_t lifetime_s,
				   int64_t now, char *why, size_t whylen)
{
	struct fake_ca *f = arg;
	struct tls_cert *c = NULL;
	int same = 0;

	pthread_mutex_lock(&f->lock);
	if (f->calls < 16)
		f->call_ms[f->calls] = now_mono_ms();
	f->calls++;
	f->last_id = *id;
	for (int i = 0; i < f->nbusy; i++)
		same += spiffe_id_equal(&f->busy[i], id);
	if (same + 1 > f->max_in_flight_same_id)
		f->max_in_flight_same_id = same + 1;
	if (f->nbusy < 8)
		f->busy[f->nbusy++] = *id;
	pthread_cond_broadcast(&f->changed);
	while (f->hold)
		pthread_cond_wait(&f->changed, &f->lock);
	bool fail = f->fail;
	for (int i = 0; i < f->nbusy; i++)
		if (spiffe_id_equal(&f->busy[i], id)) {
			f->busy[i] = f->busy[--f->nbusy];
			break;
		}
	pthread_mutex_unlock(&f->lock);
	if (fail) {
		snprintf(why, whylen, "fake CA: connection refused");
		errno = ECONNREFUSED;
		return NULL;
	}
	c = tls_ca_issue(f->ca, id, &(struct tls_issue_opts){ .lifetime_s = lifetime_s,
							       .now = now });
	return c;
}

static void fake_update(void *arg)
{
	struct fake_ca *f = arg;
	pthread_mutex_lock(&f->lock);
	f->updates++;
	pthread_cond_broadcast(&f->changed);
	pthread_mutex_unlock(&f->lock);
}

/* Waits (up to ms) until *field >= want; returns whether it got there. */
static bool wait_for(struct fake_ca *f, int *field, int want, int ms)
{
	struct timespec ts = timespec_after_ms(CLOCK_REALTIME, (uint64_t)ms);
	bool ok;

	pthread_mutex_lock(&f->lock);
	while (*field < want && pthread_cond_timedwait(&f->changed, &f->lock, &ts) == 0)
		;
	ok = *field >= want;
	pthread_mutex_unlock(&f->lock);
	return ok;
}

static void fake_set(struct fake_ca *f, bool *field, bool v)
{
	pthread_mutex_lock(&f->lock);
	*field = v;
	pthread_cond_broadcast(&f->changed);
	pthread_mutex_unlock(&f->lock);
}

static int64_t fake_now;

/* A fresh fake CA; the fake clock starts at the real time. */
static struct fake_ca *fake_new(void)
{
	static struct fake_ca f;
	fake_now = time(NULL);
	tls_ca_free(f.ca);
	memset(&f, 0, sizeof(f));
	f.ca = tls_ca_new_self_signed(TD, 3600);
	pthread_mutex_init(&f.lock, NULL);
	pthread_cond_init(&f.changed, NULL);
	return &f;
}

static int64_t fake_clock(void *arg)
{
	(void)arg;
	return __atomic_load_n(&fake_now, __ATOMIC_SEQ_CST);
}

static struct certstore *store_new(struct fake_ca *f, struct certstore_backend *be,
				   uint32_t retry_min, uint32_t retry_max)
{
	*be = (struct certstore_backend){ .issue = fake_issue, .arg = f, .name = "fake CA" };
	struct certstore_opts o = { .clock = fake_clock, .backend = be, .async = true,
				    .workers = 3, .retry_min_ms = retry_min, .retry_max_ms = retry_max,
				    .lifetime_s = 3600, .on_update = fake_update, .update_arg = f };
	return certstore_new(NULL, &o);
}

TEST(prefetch_wanted_and_get_never_blocks)
{
	struct fake_ca *f = fake_new();
	struct certstore_backend be;
	struct spiffe_id ids[2] = { sid("shop", "cart"), sid("shop", "pay") };
	struct spiffe_id other = sid("web", "front");
	char why[256];

	struct certstore *cs = store_new(f, &be, 1000, 1000);
	REQUIRE(cs);
	/* Nothing yet: get does not issue, it says to wait. */
	fake_set(f, &f->hold, true);
	errno = 0;
	CHECK(certstore_get(cs, &other) == NULL);
	CHECK_EQ_INT(errno, EAGAIN);
	CHECK(wait_for(f, &f->calls, 1, 2000));
	CHECK_EQ_STR(certstore_reason(cs, &other, why, sizeof(why)),
		     "no certificate yet: waiting for fake CA");
	CHECK(certstore_get(cs, &other) == NULL);	/* still in flight: no second request */
	fake_set(f, &f->hold, false);
	CHECK(wait_for(f, &f->updates, 1, 2000));
	struct tls_cert *c = certstore_get(cs, &other);
	REQUIRE(c);
	CHECK(spiffe_id_equal(tls_cert_id(c), &other));
	tls_cert_unref(c);
	CHECK_EQ_STR(certstore_reason(cs, &other, why, sizeof(why)), "");

	/* The node's workloads: both fetched without anyone asking; `other` is dropped. */
	CHECK_EQ_INT(certstore_set_wanted(cs, ids, 2), 0);
	CHECK(wait_for(f, &f->updates, 3, 2000));
	for (int i = 0; i < 2; i++) {
		struct tls_cert *w = certstore_get(cs, &ids[i]);
		CHECK(w && spiffe_id_equal(tls_cert_id(w), &ids[i]));
		tls_cert_unref(w);
	}
	CHECK_EQ_INT(certstore_count(cs), 2);
	struct certstore_stats st;
	certstore_stats(cs, &st);
	CHECK_EQ_INT(st.requests, 3);
	CHECK_EQ_INT(st.failures, 0);
	CHECK_EQ_INT(st.without_cert, 0);
	CHECK_EQ_STR(st.backend, "fake CA");
	CHECK_EQ_INT(f->max_in_flight_same_id, 1);
	certstore_free(cs);
}

TEST(one_request_per_identity_in_flight)
{
	struct fake_ca *f = fake_new();
	struct certstore_backend be;
	struct spiffe_id a = sid("a", "x"), b = sid("b", "y");

	struct certstore *cs = store_new(f, &be, 1000, 1000);
	REQUIRE(cs);
	fake_set(f, &f->hold, true);
	for (int i = 0; i < 50; i++) {
		CHECK(certstore_get(cs, &a) == NULL);
		CHECK(certstore_get(cs, &b) == NULL);
	}
	CHECK(wait_for(f, &f->calls, 2, 2000));
	usleep(50000);	/* the third worker had every chance to start a duplicate */
	CHECK_EQ_INT(f->calls, 2);
	CHECK_EQ_INT(f->max_in_flight_same_id, 1);
	fake_set(f, &f->hold, false);
	CHECK(wait_for(f, &f->updates, 2, 2000));
	CHECK_EQ_INT(f->calls, 2);
	certstore_free(cs);
}

TEST(unreachable_ca_backs_off_with_jitter_then_recovers)
{
	struct fake_ca *f = fake_new();
	struct certstore_backend be;
	struct spiffe_id a = sid("a", "x");
	char why[256];

	/* retries after 50-100 % of 40, 80, 160, 160 ms */
	struct certstore *cs = store_new(f, &be, 40, 160);
	REQUIRE(cs);
	fake_set(f, &f->fail, true);
	CHECK_EQ_INT(certstore_set_wanted(cs, &a, 1), 0);
	CHECK(wait_for(f, &f->updates, 5, 3000));
	uint64_t cap[] = { 40, 80, 160, 160 };
	for (int i = 1; i < 5; i++) {
		uint64_t gap = f->call_ms[i] - f->call_ms[i - 1];
		if (gap + 2 < cap[i - 1] / 2 || gap > cap[i - 1] + 250) {
			fprintf(stderr, "  retry %d after %llu ms, expected %llu..%llu\n", i,
				(unsigned long long)gap, (unsigned long long)cap[i - 1] / 2,
				(unsigned long long)cap[i - 1]);
			CHECK(0);
		}
	}
	CHECK(certstore_get(cs, &a) == NULL);
	certstore_reason(cs, &a, why, sizeof(why));
	CHECK(strstr(why, "fake CA: connection refused") != NULL);
	CHECK(strstr(why, "failed attempts") != NULL);
	struct certstore_stats st;
	certstore_stats(cs, &st);
	CHECK(st.failures >= 5);
	CHECK_EQ_INT(st.requests, st.failures);
	CHECK_EQ_INT(st.without_cert, 1);
	CHECK_EQ_INT(st.failing, 1);
	CHECK_EQ_STR(st.last_error, "fake CA: connection refused");

	/* The CA is back: the next retry gets the cert and the failure state clears. */
	int seen = f->updates;
	fake_set(f, &f->fail, false);
	struct tls_cert *c = NULL;
	for (int i = 0; i < 100 && !c; i++) {
		wait_for(f, &f->updates, seen + 1, 500);
		seen = f->updates;
		c = certstore_get(cs, &a);
	}
	REQUIRE(c);
	tls_cert_unref(c);
	certstore_stats(cs, &st);
	CHECK_EQ_INT(st.failing, 0);
	CHECK_EQ_INT(st.without_cert, 0);
	CHECK(st.last_success > 0);
	certstore_free(cs);
}

TEST(renewal_failure_keeps_the_old_cert)
{
	struct fake_ca *f = fake_new();
	struct certstore_backend be;
	struct spiffe_id a = sid("a", "x");

	struct certstore *cs = store_new(f, &be, 20, 40);
	REQUIRE(cs);
	CHECK_EQ_INT(certstore_set_wanted(cs, &a, 1), 0);
	CHECK(wait_for(f, &f->updates, 1, 2000));
	struct tls_cert *old = certstore_get(cs, &a);
	REQUIRE(old);

	/* Past half-life with the CA down: the old cert keeps being served. */
	fake_set(f, &f->fail, true);
	__atomic_store_n(&fake_now, fake_now + 1801, __ATOMIC_SEQ_CST);
	CHECK_EQ_INT(certstore_renew_due(cs), 0);
	CHECK(wait_for(f, &f->calls, 4, 2000));
	struct tls_cert *still = certstore_get(cs, &a);
	CHECK(still == old);
	tls_cert_unref(still);
	struct certstore_stats st;
	certstore_stats(cs, &st);
	CHECK_EQ_INT(st.without_cert, 0);
	CHECK_EQ_INT(st.failing, 1);

	/* Back: a new cert replaces it; the holder of the old one still has it. */
	int calls = f->calls;
	fake_set(f, &f->fail, false);
	CHECK(wait_for(f, &f->calls, calls + 1, 2000));
	struct tls_cert *fresh = NULL;
	for (int i = 0; i < 100; i++) {
		fresh = certstore_get(cs, &a);
		if (fresh != old)
			break;
		tls_cert_unref(fresh);
		fresh = NULL;
		usleep(10000);
	}
	REQUIRE(fresh);
	CHECK(strcmp(tls_cert_serial_hex(fresh), tls_cert_serial_hex(old)) != 0);
	tls_cert_unref(fresh);
	tls_cert_unref(old);

	/* Past not_after with the CA down: no cert at all, get says wait. */
	fake_set(f, &f->fail, true);
	__atomic_store_n(&fake_now, fake_now + 3700, __ATOMIC_SEQ_CST);
	errno = 0;
	CHECK(certstore_get(cs, &a) == NULL);
	CHECK_EQ_INT(errno, EAGAIN);
	certstore_free(cs);
}

TEST(wanted_entries_survive_the_lru_bound)
{
	struct fake_ca *f = fake_new();
	struct certstore_backend be = { .issue = fake_issue, .arg = f, .name = "fake CA" };
	struct certstore_opts o = { .clock = fake_clock, .backend = &be, .async = true,
				    .max_entries = 2, .lifetime_s = 3600,
				    .on_update = fake_update, .update_arg = f };
	struct spiffe_id w[2] = { sid("a", "w1"), sid("a", "w2") }, x = sid("a", "x");

	struct certstore *cs = certstore_new(NULL, &o);
	REQUIRE(cs);
	CHECK_EQ_INT(certstore_set_wanted(cs, w, 2), 0);
	CHECK(wait_for(f, &f->updates, 2, 2000));
	CHECK(certstore_get(cs, &x) == NULL);	/* over the bound, but wanted ones stay */
	for (int i = 0; i < 2; i++) {
		struct tls_cert *c = certstore_get(cs, &w[i]);
		CHECK(c != NULL);
		tls_cert_unref(c);
	}
	certstore_free(cs);
	tls_ca_free(f->ca);
	f->ca = NULL;
}

/* A CA that backdates its certs (as for clock skew): renewal is half of what is left, not
 * half of the whole validity, or a short-lived cert would be due the moment it arrives. */
static struct tls_cert *backdated_issue(void *arg, const struct spiffe_id *id, uint32_t lifetime_s,
					int64_t now, char *why, size_t whylen)
{
	struct fake_ca *f = arg;
	(void)why, (void)whylen;
	f->calls++;
	return tls_ca_issue(f->ca, id, &(struct tls_issue_opts){ .lifetime_s = lifetime_s + 600,
								  .now = now - 600 });
}

static int first_info(const struct certstore_info *info, void *arg)
{
	*(struct certstore_info *)arg = *info;
	return 1;
}

TEST(renewal_time_of_a_backdated_cert)
{
	struct fake_ca *f = fake_new();
	struct certstore_backend be = { .issue = backdated_issue, .arg = f, .name = "backdating CA" };
	struct certstore_opts o = { .clock = fake_clock, .backend = &be, .lifetime_s = 60 };
	struct spiffe_id a = sid("a", "x");
	struct certstore_info info;

	struct certstore *cs = certstore_new(NULL, &o);
	REQUIRE(cs);
	struct tls_cert *c = certstore_get(cs, &a);
	REQUIRE(c);
	/* valid from now - 660 to now + 60: renewal due at now + 30 */
	CHECK_EQ_INT(tls_cert_not_after(c) - fake_now, 60);
	CHECK_EQ_INT(certstore_foreach(cs, first_info, &info), 1);
	CHECK_EQ_INT(info.renew_at - fake_now, 30);
	CHECK_EQ_INT(info.state, CERTSTORE_FRESH);
	tls_cert_unref(certstore_get(cs, &a));
	CHECK_EQ_INT(f->calls, 1);	/* fresh: no second request */
	fake_now += 31;
	tls_cert_unref(certstore_get(cs, &a));
	CHECK_EQ_INT(f->calls, 2);
	tls_cert_unref(c);
	certstore_free(cs);
}

TEST_MAIN("tls_certstore")
