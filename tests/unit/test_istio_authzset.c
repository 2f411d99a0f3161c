// SPDX-License-Identifier: Apache-2.0
/* istio/authzset: the newest compiled policy set of a model stream, as the node agent and the
 * waypoint keep it: a refused version leaves the last good one in force, an older model never
 * replaces a newer one (also with compiles racing on several threads), stop and start again. */
#include <errno.h>
#include <pthread.h>

#include "harness.h"
#include "istio/authzset.h"

#define AP(ports) "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\"," \
	"\"metadata\":{\"name\":\"d\",\"namespace\":\"foo\"},\"spec\":{\"action\":\"DENY\"," \
	"\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"" ports "\"]}}]}]}}"

static json_t *resources(const char *objs)
{
	json_error_t je;
	json_t *j = json_loads(objs, 0, &je);
	if (!j)
		fprintf(stderr, "  bad test JSON: %s\n", je.text);
	return j;
}

/* The state ("applied", "previous", ...) of the set's first object. */
static const char *first_state(const struct authz_set *s, char *buf, size_t len)
{
	json_t *d = authz_set_to_json(s, NULL, 0);
	const char *st = json_string_value(json_object_get(json_array_get(d, 0), "state"));
	snprintf(buf, len, "%s", st ? st : "-");
	json_decref(d);
	return buf;
}

TEST(previous_good_version_stays)
{
	struct authz_latest l = AUTHZ_LATEST_INIT;
	json_t *good = resources("[" AP("8080") "]"), *bad = resources("[" AP("70000") "]");
	struct authz_set_stats st;
	struct authz_set *s, *s2;
	char state[32];

	REQUIRE(good && bad);
	CHECK(!authz_latest_get(&l));
	CHECK_EQ_INT(authz_latest_start(&l, "mesh-root"), 0);
	CHECK_EQ_INT(authz_latest_compile(&l, good, 2, &st), 0);
	CHECK_EQ_INT(st.authorization_policies, 1);
	CHECK_EQ_INT(st.refused, 0);
	s = authz_latest_get(&l);
	REQUIRE(s);
	CHECK_EQ_STR(authz_set_root_ns(s), "mesh-root");
	CHECK_EQ_STR(first_state(s, state, sizeof(state)), "applied");
	/* the next model's version is refused: the good one stays in force */
	CHECK_EQ_INT(authz_latest_compile(&l, bad, 3, &st), 0);
	CHECK_EQ_INT(st.authorization_policies, 1);
	CHECK_EQ_INT(st.refused, 1);
	s2 = authz_latest_get(&l);
	REQUIRE(s2);
	CHECK(s2 != s);
	CHECK_EQ_STR(first_state(s2, state, sizeof(state)), "previous");
	/* an older model than the newest set's is skipped */
	CHECK_EQ_INT(authz_latest_compile(&l, good, 1, NULL), -ESTALE);
	authz_set_unref(s);
	s = authz_latest_get(&l);
	CHECK(s == s2);
	authz_set_unref(s);
	authz_set_unref(s2);
	authz_latest_stop(&l);
	json_decref(good);
	json_decref(bad);
}

TEST(stop_and_start_again)
{
	struct authz_latest l = AUTHZ_LATEST_INIT;
	json_t *good = resources("[" AP("8080") "]");
	struct authz_set *s;

	REQUIRE(good);
	CHECK_EQ_INT(authz_latest_compile(&l, good, 1, NULL), -ECANCELED);	/* not started */
	CHECK(!authz_latest_active(&l));
	CHECK_EQ_INT(authz_latest_start(&l, NULL), 0);
	CHECK(authz_latest_active(&l));
	CHECK_EQ_INT(authz_latest_compile(&l, good, 5, NULL), 0);
	authz_latest_stop(&l);
	CHECK(!authz_latest_active(&l));
	CHECK(!authz_latest_get(&l));
	CHECK_EQ_INT(authz_latest_compile(&l, good, 6, NULL), -ECANCELED);
	/* started again: the generations start over, root namespace by default */
	CHECK_EQ_INT(authz_latest_start(&l, NULL), 0);
	CHECK_EQ_INT(authz_latest_compile(&l, good, 1, NULL), 0);
	s = authz_latest_get(&l);
	REQUIRE(s);
	CHECK_EQ_STR(authz_set_root_ns(s), "istio-system");
	authz_set_unref(s);
	authz_latest_stop(&l);
	json_decref(good);
}

/* Publishers on several threads: whatever the order, the newest generation's set wins. */
#define RACE_THREADS 4
#define RACE_GENS 40

static struct authz_latest race = AUTHZ_LATEST_INIT;
static json_t *race_res;

static void *race_worker(void *arg)
{
	int k = (int)(intptr_t)arg, fails = 0;
	/* thread k compiles the generations k+1, k+1+RACE_THREADS, ... from the top down */
	for (int g = RACE_GENS - (RACE_THREADS - 1 - k); g > 0; g -= RACE_THREADS) {
		int err = authz_latest_compile(&race, race_res, (uint64_t)g, NULL);
		if (err && err != -ESTALE)
			fails++;
	}
	return (void *)(intptr_t)fails;
}

TEST(racing_compiles_keep_the_newest)
{
	pthread_t th[RACE_THREADS];
	void *fails;
	int total = 0;

	race_res = resources("[" AP("8080") "]");
	REQUIRE(race_res);
	CHECK_EQ_INT(authz_latest_start(&race, NULL), 0);
	for (int k = 0; k < RACE_THREADS; k++)
		REQUIRE(pthread_create(&th[k], NULL, race_worker, (void *)(intptr_t)k) == 0);
	for (int k = 0; k < RACE_THREADS; k++) {
		pthread_join(th[k], &fails);
		total += (int)(intptr_t)fails;
	}
	CHECK_EQ_INT(total, 0);
	CHECK_EQ_INT(race.base.gen, RACE_GENS);
	authz_latest_stop(&race);
	json_decref(race_res);
}

int main(void)
{
	return test_main("istio_authzset");
}
