// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the splice engine with TCP ends on real loopback sockets: bytes both ways,
 * half-close in each direction, reset propagation, backpressure, no leak. */
#include "harness.h"
#include "agent/conn.h"
#include "agent/loop.h"
#include "common/util.h"
#include "tcp_pair.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

struct rig {
	struct loop *l;
	struct conn *c;
	int client;	/* test's end of the downstream pair */
	int server;	/* test's end of the upstream pair */
	int closed_err;
	const char *closed_flag;
	uint64_t bytes_down, bytes_up;
	bool closed;
	pthread_t th;
};

static struct rig *cur;

static void on_closed(struct conn *c, int err, const char *flag, const char *reason)
{
	(void)reason;
	cur->bytes_down = conn_bytes(c, CONN_DOWN);
	cur->bytes_up = conn_bytes(c, CONN_UP);
	__atomic_store_n(&cur->closed, true, __ATOMIC_RELEASE);
	cur->closed_err = err;
	cur->closed_flag = flag;
}

static void *run_loop(void *arg)
{
	loop_run(arg);
	return NULL;
}

static void rig_start(struct rig *r, uint32_t bufsize)
{
	int d_agent, u_agent;
	struct conn_opts o = { .buffer_size = bufsize };
	struct conn_hooks h = { .closed = on_closed };
	memset(r, 0, sizeof(*r));
	cur = r;
	conn_set_hooks(&h);
	r->l = loop_new();
	tcp_pair(&r->client, &d_agent);
	tcp_pair(&u_agent, &r->server);
	fd_set_nonblock(d_agent);
	fd_set_nonblock(u_agent);
	r->c = conn_new(r->l, &o);
	struct conn_end *d = conn_tcp_end_new(r->l, d_agent, false);
	struct conn_end *u = conn_tcp_end_new(r->l, u_agent, false);
	conn_attach(r->c, CONN_DOWN, d);
	conn_attach(r->c, CONN_UP, u);
	conn_tcp_end_start(d);
	conn_tcp_end_start(u);
	conn_established(r->c);
	pthread_create(&r->th, NULL, run_loop, r->l);
}

static void rig_stop(struct rig *r)
{
	loop_stop(r->l);
	pthread_join(r->th, NULL);
	loop_free(r->l);
	close(r->client);
	close(r->server);
}

static bool wait_closed(struct rig *r)
{
	for (int i = 0; i < 500 && !__atomic_load_n(&r->closed, __ATOMIC_ACQUIRE); i++)
		usleep(10000);
	return r->closed;
}

static ssize_t read_all(int fd, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 5000) != 1)
			return -ETIMEDOUT;
		ssize_t r = read(fd, (char *)buf + got, n - got);
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

TEST(bytes_both_ways_and_half_close)
{
	struct rig r;
	char buf[64];
	rig_start(&r, 4096);
	CHECK_EQ_INT(write(r.client, "hello", 5), 5);
	CHECK_EQ_INT(read_all(r.server, buf, 5), 5);
	CHECK(memcmp(buf, "hello", 5) == 0);
	/* client half-closes; server still talks */
	shutdown(r.client, SHUT_WR);
	CHECK_EQ_INT(read_all(r.server, buf, sizeof(buf)), 0);	/* EOF passed on */
	CHECK_EQ_INT(write(r.server, "world", 5), 5);
	CHECK_EQ_INT(read_all(r.client, buf, 5), 5);
	CHECK(memcmp(buf, "world", 5) == 0);
	CHECK(!r.closed);
	shutdown(r.server, SHUT_WR);
	CHECK_EQ_INT(read_all(r.client, buf, sizeof(buf)), 0);
	CHECK(wait_closed(&r));
	CHECK_EQ_INT(r.closed_err, 0);
	CHECK_EQ_INT(r.bytes_down, 5);
	CHECK_EQ_INT(r.bytes_up, 5);
	rig_stop(&r);
	CHECK_EQ_INT(conn_count(), 0);
}

TEST(reset_propagates)
{
	struct rig r;
	char buf[8];
	rig_start(&r, 4096);
	struct linger lg = { 1, 0 };
	setsockopt(r.server, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(r.server);	/* upstream RST */
	r.server = open("/dev/null", O_RDONLY);
	CHECK(wait_closed(&r));
	CHECK(r.closed_err != 0);
	CHECK_EQ_STR(r.closed_flag, CONN_FLAG_UPSTREAM_RESET);
	ssize_t n = read_all(r.client, buf, sizeof(buf));
	CHECK(n == -ECONNRESET);	/* the client sees a reset, not a clean EOF */
	rig_stop(&r);
}

TEST(large_transfer_with_small_buffer)
{
	struct rig r;
	enum { TOTAL = 8 << 20 };
	rig_start(&r, 4096);	/* forces thousands of backpressure cycles */
	uint8_t *out = malloc(TOTAL), *in = malloc(TOTAL);
	for (size_t i = 0; i < TOTAL; i++)
		out[i] = (uint8_t)(i * 2654435761u >> 13);
	size_t sent = 0, got = 0;
	fd_set_nonblock(r.client);
	while (got < TOTAL) {
		struct pollfd p[2] = { { r.client, sent < TOTAL ? POLLOUT : 0, 0 }, { r.server, POLLIN, 0 } };
		if (poll(p, 2, 5000) <= 0)
			break;
		if (p[0].revents & POLLOUT) {
			ssize_t w = write(r.client, out + sent, MIN(65536, TOTAL - sent));
			if (w > 0)
				sent += (size_t)w;
		}
		if (p[1].revents & POLLIN) {
			ssize_t n = read(r.server, in + got, TOTAL - got);
			if (n <= 0)
				break;
			got += (size_t)n;
		}
	}
	CHECK_EQ_INT(got, TOTAL);
	CHECK(memcmp(in, out, TOTAL) == 0);
	free(in);
	free(out);
	rig_stop(&r);
}

TEST_MAIN("conn")
