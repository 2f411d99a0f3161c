// SPDX-License-Identifier: Apache-2.0
/* common/util: the absolute deadlines condvar waits and timed joins use (timespec_after_ms),
 * and the IP:port parser that reads config addresses and HBONE's :authority (sockaddr_parse). */
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

/* The port is 1 to 5 digits and nothing else: strtoul alone took a sign, leading blanks and
 * wrapped negatives (fuzz/hbone_connect: corpus/hbone_connect/regress-port-sign). */
TEST(sockaddr_parse_port_is_digits_only)
{
	static const char *const good[] = { "10.0.0.1:80", "10.0.0.1:0", "10.0.0.1:65535",
		"[fd00::1]:8080", "[::1]:00080", "10.0.0.1", "fd00::1", "[fd00::1]" };
	static const char *const bad[] = { "10.0.0.1:+80", "10.0.0.1: 80", "10.0.0.1:-0",
		"[fd00::1]:+800", "10.0.0.1:-18446744073709551535", "10.0.0.1:65536",
		"10.0.0.1:080080", "10.0.0.1:", "[fd00::1]:", "10.0.0.1:80 ", "10.0.0.1:0x50",
		"[fd00::1]x", "", "10.0.0.256:80" };
	struct sockaddr_storage ss;
	char buf[ADDR_STR_LEN];

	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		if (sockaddr_parse(good[i], 7, &ss))
			fprintf(stderr, "  refused: '%s'\n", good[i]);
		CHECK_EQ_INT(sockaddr_parse(good[i], 7, &ss), 0);
	}
	CHECK_EQ_INT(sockaddr_parse("[::1]:00080", 7, &ss), 0);
	CHECK_EQ_STR(sockaddr_str(&ss, buf, sizeof(buf)), "[::1]:80");
	CHECK_EQ_INT(sockaddr_parse("10.0.0.1", 7, &ss), 0);
	CHECK_EQ_INT(sockaddr_port(&ss), 7);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		if (sockaddr_parse(bad[i], 7, &ss) != -EINVAL)
			fprintf(stderr, "  accepted: '%s'\n", bad[i]);
		CHECK_EQ_INT(sockaddr_parse(bad[i], 7, &ss), -EINVAL);
	}
}

int main(void)
{
	return test_main("util");
}
