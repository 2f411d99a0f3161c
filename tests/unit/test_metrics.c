// SPDX-License-Identifier: Apache-2.0
/* agent/metrics: the bounded labelled counters (metrics_counter_vec) in the rendered text. */
#include "agent/metrics.h"
#include "harness.h"

#include <stdlib.h>
#include <string.h>

static char *render(void)
{
	size_t len;
	char *s = metrics_render(&len);
	if (s && strlen(s) != len) {
		free(s);
		return NULL;
	}
	return s;
}

static const char *const labels[] = { "policy", "dry_run" };

TEST(vec_counts_per_label_set)
{
	struct metrics_counter_vec *v = metrics_counter_vec_new("t_denied_total", "Denials",
								 labels, 2, 8);
	REQUIRE(v != NULL);
	CHECK_EQ_INT(metrics_counter_vec_add(v, (const char *[]){ "ns/a", "false" }, 1), 0);
	CHECK_EQ_INT(metrics_counter_vec_add(v, (const char *[]){ "ns/a", "false" }, 2), 0);
	CHECK_EQ_INT(metrics_counter_vec_add(v, (const char *[]){ "ns/b", "true" }, 1), 0);
	CHECK_EQ_INT(metrics_counter_vec_add(v, (const char *[]){ NULL, "" }, 1), 0);
	char *s = render();
	REQUIRE(s != NULL);
	CHECK(strstr(s, "# TYPE t_denied_total counter\n") != NULL);
	CHECK(strstr(s, "t_denied_total{policy=\"ns/a\",dry_run=\"false\"} 3\n") != NULL);
	CHECK(strstr(s, "t_denied_total{policy=\"ns/b\",dry_run=\"true\"} 1\n") != NULL);
	CHECK(strstr(s, "t_denied_total{policy=\"unknown\",dry_run=\"unknown\"} 1\n") != NULL);
	free(s);
	metrics_reset();
}

TEST(vec_bounded_with_overflow_and_escaped)
{
	struct metrics_counter_vec *v = metrics_counter_vec_new("t_b_total", "Bounded", labels, 2, 3);
	char name[32];
	REQUIRE(v != NULL);
	for (int i = 0; i < 100; i++) {
		snprintf(name, sizeof(name), "ns/p%d", i);
		CHECK_EQ_INT(metrics_counter_vec_add(v, (const char *[]){ name, "false" }, 1), 0);
	}
	CHECK_EQ_INT(metrics_counter_vec_add(v, (const char *[]){ "ns/p0", "false" }, 1), 0);
	CHECK_EQ_INT(metrics_counter_vec_add(v, (const char *[]){ "a\"b\\c\nd", "x" }, 1), 0);
	char *s = render();
	REQUIRE(s != NULL);
	int n = 0;
	for (const char *p = s; (p = strstr(p, "\nt_b_total{")); p++)
		n++;
	CHECK_EQ_INT(n, 4);	/* three label sets and the overflow series */
	CHECK(strstr(s, "t_b_total{policy=\"ns/p0\",dry_run=\"false\"} 2\n") != NULL);
	CHECK(strstr(s, "t_b_total{policy=\"overflow\",dry_run=\"overflow\"} 98\n") != NULL);
	free(s);
	/* a label value with quotes, backslashes and newlines stays one escaped line */
	metrics_reset();
	v = metrics_counter_vec_new("t_e_total", "Escaped", labels, 2, 3);
	REQUIRE(v != NULL);
	CHECK_EQ_INT(metrics_counter_vec_add(v, (const char *[]){ "a\"b\\c\nd", "x" }, 1), 0);
	s = render();
	REQUIRE(s != NULL);
	CHECK(strstr(s, "t_e_total{policy=\"a\\\"b\\\\c\\nd\",dry_run=\"x\"} 1\n") != NULL);
	free(s);
	metrics_reset();
}

TEST(vec_bad_arguments)
{
	CHECK(metrics_counter_vec_new("x", "x", labels, 0, 1) == NULL);
	CHECK(metrics_counter_vec_new("x", "x", labels, 5, 1) == NULL);
	metrics_reset();
}

TEST_MAIN("metrics")
