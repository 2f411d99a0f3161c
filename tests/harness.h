/* SPDX-License-Identifier: Apache-2.0 */
/* A tiny unit-test harness: TEST(name) { ... CHECK(cond); ... } registers a test; main() runs
 * them all and prints "ok - name" / "not ok - name" lines that tests/run.sh counts.
 * A test may #include the .c under test to reach its statics (as h2o's t/00unit does). */
#ifndef AMBIT_TESTS_HARNESS_H
#define AMBIT_TESTS_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct test_case {
	const char *name;
	void (*fn)(void);
	struct test_case *next;
};

static struct test_case *test_list, **test_tail = &test_list;
static int test_failed_now;

#define TEST(name)                                                                   \
	static void test_##name(void);                                               \
	static struct test_case test_case_##name = { #name, test_##name, NULL };     \
	__attribute__((constructor)) static void test_reg_##name(void)               \
	{                                                                            \
		*test_tail = &test_case_##name;                                      \
		test_tail = &test_case_##name.next;                                  \
	}                                                                            \
	static void test_##name(void)

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__,     \
				__LINE__, #cond);                                    \
			test_failed_now = 1;                                         \
		}                                                                    \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                           \
	do {                                                                         \
		long long _a = (long long)(a), _b = (long long)(b);                 \
		if (_a != _b) {                                                      \
			fprintf(stderr, "  %s:%d: %s == %s failed: %lld != %lld\n",  \
				__FILE__, __LINE__, #a, #b, _a, _b);                 \
			test_failed_now = 1;                                         \
		}                                                                    \
	} while (0)

#define CHECK_EQ_STR(a, b)                                                           \
	do {                                                                         \
		const char *_a = (a), *_b = (b);                                     \
		if (!_a || !_b || strcmp(_a, _b) != 0) {                             \
			fprintf(stderr, "  %s:%d: %s == %s failed: \"%s\" != \"%s\"\n", \
				__FILE__, __LINE__, #a, #b, _a ? _a : "(null)",      \
				_b ? _b : "(null)");                                 \
			test_failed_now = 1;                                         \
		}                                                                    \
	} while (0)

/* Stops the current test (after a failed precondition). */
#define REQUIRE(cond)                                                                \
	do {                                                                         \
		CHECK(cond);                                                         \
		if (test_failed_now)                                                 \
			return;                                                      \
	} while (0)

static inline int test_main(const char *suite)
{
	int passed = 0, failed = 0;
	const char *only = getenv("TEST_ONLY");
	for (struct test_case *t = test_list; t; t = t->next) {
		if (only && strcmp(only, t->name) != 0)
			continue;
		test_failed_now = 0;
		t->fn();
		printf("%s - %s.%s\n", test_failed_now ? "not ok" : "ok", suite, t->name);
		fflush(stdout);
		if (test_failed_now)
			failed++;
		else
			passed++;
	}
	printf("# %s: %d passed, %d failed\n", suite, passed, failed);
	return failed ? 1 : 0;
}

/* A scratch directory for the whole test program, made on first use, /tmp/ambit-<tag>-XXXXXX,
 * removed with its contents at exit. Aborts when it cannot be made. */
static char test_tmp[96];
static inline void test_tmpdir_rm(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_tmp);
	if (system(cmd))
		fprintf(stderr, "cannot remove %s\n", test_tmp);
}
static inline const char *test_tmpdir(const char *tag)
{
	if (!test_tmp[0]) {
		snprintf(test_tmp, sizeof(test_tmp), "/tmp/ambit-%s-XXXXXX", tag);
		if (!mkdtemp(test_tmp))
			abort();
		atexit(test_tmpdir_rm);
	}
	return test_tmp;
}

#define TEST_MAIN(suite) \
	int main(void) { return test_main(suite); }

#endif
