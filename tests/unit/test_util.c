// SPDX-License-Identifier: Apache-2.0
/* common/util: the absolute deadlines condvar waits and timed joins use (timespec_after_ms). */
#include "common/util.h"
#include "harness.h"

#include <errno.h>
#include <pthread.h>

static int64_t ts_ms(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000 + ts->tv_nsec / 1000000;
}

TEST(timespec_after_ms)
{
	static const uint64_t delays[] = { 0, 1, 20, 999, 1000, 1001, 1999, 60000, 86400000 };
	static const clockid_t clocks[] = { CLOCK_MONOTONIC, CLOCK_REALTIME };

	for (size_t c = 0; c < ARRAY_SIZE(clocks); c++) {
		for (size_t i = 0; i < ARRAY_SIZE(delays); i++) {
			struct timespec before, after, t;
			clock_gettime(clocks[c], &before);
			t = timespec_after_ms(clocks[c], delays[i]);
			clock_gettime(clocks[c], &after);
			/* normalised, and on the clock asked for: between before+ms and after+ms */
			CHECK(t.tv_nsec >= 0 && t.tv_nsec < 1000000000L);
			CHECK(ts_ms(&t) >= ts_ms(&before) + (int64_t)delays[i]);
			CHECK(ts_ms(&t) <= ts_ms(&after) + (int64_t)delays[i]);
		}
	}
}

/* A condvar wait on CLOCK_MONOTONIC with it times out after about the delay. */
TEST(timespec_after_ms_times_a_condvar_wait)
{
	pthread_condattr_t ca;
	pthread_cond_t cond;
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	uint64_t start;
	struct timespec ts;
	int rc;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&cond, &ca);
	pthread_mutex_lock(&lock);
	start = now_mono_ms();
	ts = timespec_after_ms(CLOCK_MONOTONIC, 50);
	do
		rc = pthread_cond_timedwait(&cond, &lock, &ts);
	while (rc == 0);
	CHECK_EQ_INT(rc, ETIMEDOUT);
	CHECK(now_mono_ms() - start >= 50);
	CHECK(now_mono_ms() - start < 5000);
	pthread_mutex_unlock(&lock);
	pthread_cond_destroy(&cond);
	pthread_condattr_destroy(&ca);
}

int main(void)
{
	return test_main("util");
}
