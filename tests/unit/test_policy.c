// SPDX-License-Identifier: Apache-2.0
/* agent/policy: models published with Istio objects become the set in force on the loop (a
 * refused new version keeps the previous one), /policies/check answers from it and refuses bad
 * arguments, /policies lists the objects, the gauges follow. The data path and the re-check of
 * open connections are covered end to end by tests/lab/test_authz.sh. */
#include "harness.h"
#include "agent/loop.h"
#include "agent/metrics.h"
#include "agent/policy.h"
#include "agent/workloads.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORKLOADS \
	"\"nodes\":[{\"name\":\"node-1\",\"address\":\"172.18.0.2\"}]," \
	"\"workloads\":[" \
	"{\"uid\":\"default/a\",\"name\":\"a\",\"namespace\":\"default\",\"service_account\":\"sa-a\"," \
	"\"node\":\"node-1\",\"addresses\":[\"10.244.1.5\"],\"labels\":{\"app\":\"a\"},\"enrolled\":true}," \
	"{\"uid\":\"default/b\",\"name\":\"b\",\"namespace\":\"default\",\"service_account\":\"sa-b\"," \
	"\"node\":\"node-1\",\"addresses\":[\"10.244.1.6\"],\"labels\":{\"app\":\"b\"},\"enrolled\":true}," \
	"{\"uid\":\"default/out\",\"name\":\"out\",\"namespace\":\"default\",\"node\":\"node-1\"," \
	"\"addresses\":[\"10.244.1.7\"],\"enrolled\":false}],\"services\":[]"

/* AuthorizationPolicy deny-a on app=b: DENY from sa-a on port PORT. */
#define DENY_A(PORT) \
	"{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\"," \
	"\"metadata\":{\"name\":\"deny-a\",\"namespace\":\"default\"},\"spec\":{\"selector\":" \
	"{\"matchLabels\":{\"app\":\"b\"}},\"action\":\"DENY\",\"rules\":[{\"from\":[{\"source\":" \
	"{\"principals\":[\"cluster.local/ns/default/sa/sa-a\"]}}],\"to\":[{\"operation\":" \
	"{\"ports\":[\"" PORT "\"]}}]}]}}"

/* The loop runs on its own thread, as in the agent; the checks run on it through on_loop(). */
static struct loop *L;
static sem_t done;

struct job {
	void (*fn)(struct job *j);
	const char *from, *to;
	json_t *ans;
	char err[256];
};

static void job_task(struct loop *l, void *arg)
{
	struct job *j = arg;
	(void)l;
	if (j && j->fn)
		j->fn(j);
	sem_post(&done);
}

static void on_loop(struct job *j)
{
	REQUIRE(loop_post(L, job_task, j) == 0);
	sem_wait(&done);
}

static void *loop_thread(void *arg)
{
	(void)arg;
	loop_run(L);
	return NULL;
}

/* Publishes a model and waits until the loop has swapped its set in (tasks run in order). */
static void publish(const char *json)
{
	char err[256];
	struct model *m = model_parse(json, strlen(json), err, sizeof(err));
	if (!m)
		fprintf(stderr, "  model: %s\n", err);
	REQUIRE(m != NULL);
	model_publish(m);
	on_loop(NULL);
}

static void check_job(struct job *j)
{
	j->ans = policy_check_json(j->from, j->to, j->err, sizeof(j->err));
}

static void dump_job(struct job *j)
{
	j->ans = policy_dump_json();
}

static void metrics_job(struct job *j)
{
	size_t len;
	char *text = metrics_render(&len);
	j->ans = text ? json_string(text) : NULL;
	free(text);
}

static const char *verdict(const char *from, const char *to)
{
	static char out[64];
	struct job j = { .fn = check_job, .from = from, .to = to };
	on_loop(&j);
	snprintf(out, sizeof(out), "%s", j.ans ? json_string_value(json_object_get(j.ans, "verdict")) : "error");
	json_decref(j.ans);
	return out;
}

static void expect_bad(const char *from, const char *to, const char *needle)
{
	struct job j = { .fn = check_job, .from = from, .to = to };
	on_loop(&j);
	CHECK(j.ans == NULL);
	json_decref(j.ans);
	if (!strstr(j.err, needle))
		fprintf(stderr, "  '%s' lacks '%s'\n", j.err, needle);
	CHECK(strstr(j.err, needle) != NULL);
}

TEST(models_become_the_set_in_force)
{
	pthread_t th;
	L = loop_new();
	REQUIRE(L != NULL);
	sem_init(&done, 0, 0);
	model_publish(model_new_empty());
	struct policy_opts o = { .loop = L, .root_namespace = "istio-system",
				 .trust_domain = "cluster.local" };
	REQUIRE(policy_init(&o) == 0);
	REQUIRE(pthread_create(&th, NULL, loop_thread, NULL) == 0);

	publish("{" WORKLOADS ",\"resources\":[]}");
	CHECK_EQ_STR(verdict("default/a", "default/b:8080"), "allow");

	publish("{" WORKLOADS ",\"resources\":[" DENY_A("8080") "]}");
	CHECK_EQ_STR(verdict("default/a", "default/b:8080"), "deny");
	CHECK_EQ_STR(verdict("10.244.1.5", "default/b:8080"), "deny");	/* by address, enrolled */
	CHECK_EQ_STR(verdict("default/a", "default/b:9000"), "allow");	/* another port */
	CHECK_EQ_STR(verdict("default/out", "default/b:8080"), "allow");	/* plaintext, no identity */

	/* A new version that does not compile: the previous one stays in force, marked. */
	publish("{" WORKLOADS ",\"resources\":[" DENY_A("70000") "]}");
	CHECK_EQ_STR(verdict("default/a", "default/b:8080"), "deny");
	struct job dj = { .fn = dump_job };
	on_loop(&dj);
	json_t *d = dj.ans;
	REQUIRE(d != NULL);
	json_t *p0 = json_array_get(json_object_get(d, "policies"), 0);
	CHECK_EQ_INT((int)json_array_size(json_object_get(d, "policies")), 1);
	CHECK_EQ_STR(json_string_value(json_object_get(p0, "name")), "deny-a");
	CHECK_EQ_STR(json_string_value(json_object_get(p0, "state")), "previous");
	CHECK_EQ_STR(json_string_value(json_object_get(d, "root_namespace")), "istio-system");
	json_decref(d);

	struct job mj = { .fn = metrics_job };
	on_loop(&mj);
	const char *text = json_string_value(mj.ans);
	REQUIRE(text != NULL);
	CHECK(strstr(text, "\nambit_authorization_policies 1\n") != NULL);
	CHECK(strstr(text, "\nambit_policies_refused 1\n") != NULL);
	json_decref(mj.ans);

	/* Removed: nothing applies. */
	publish("{" WORKLOADS ",\"resources\":[]}");
	CHECK_EQ_STR(verdict("default/a", "default/b:8080"), "allow");

	expect_bad("", "default/b:80", "required");
	expect_bad("not-an-ip", "default/b:80", "neither an IP address nor NS/NAME");
	expect_bad("default/a", "default/b", "is not NS/NAME:PORT");
	expect_bad("default/a", "default/b:70000", "is not 1 to 65535");
	expect_bad("default/a", "default/b:x", "is not 1 to 65535");
	expect_bad("default/a", "default/nosuch:80", "no workload default/nosuch");

	loop_stop(L);
	pthread_join(th, NULL);
	policy_fini();
	model_publish(model_new_empty());
	loop_free(L);
	sem_destroy(&done);
	metrics_reset();
}

TEST_MAIN("policy")
