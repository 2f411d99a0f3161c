// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the conn's data and eof hooks (agent/conn.c, "observation"): they see every
 * byte in order, after the write the read kicked (not before it), from bytes the ring keeps
 * until then even when the write consumed them and the reader refilled the ring; EOF and an
 * abort see pending bytes first; a conn closed with its task queued is freed after it. */
#include "harness.h"
#include "agent/conn.h"
#include "agent/loop.h"
#include "common/util.h"
#include "tcp_pair.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

/* What the hooks and the ends did, in order: F = a flush (towards a side), D = data seen,
 * E = an EOF seen, C = closed. */
static char events[256];
static size_t nevents;
static uint8_t seen[2][4096];	/* by side the bytes came from */
static size_t nseen[2];
static size_t seen_at_close[2];
static int data_calls;

static void event(char e)
{
	if (nevents < sizeof(events) - 1)
		events[nevents++] = e;
	events[nevents] = '\0';
}

static void on_data(struct conn *c, enum conn_side from, const uint8_t *p, size_t n)
{
	(void)c;
	if (nseen[from] + n <= sizeof(seen[from]))
		memcpy(seen[from] + nseen[from], p, n);
	nseen[from] += n;
	data_calls++;
	event('D');
}

static void on_eof(struct conn *c, enum conn_side from)
{
	(void)c;
	(void)from;
	event('E');
}

static void on_closed(struct conn *c, int err, const char *flag, const char *reason)
{
	(void)c, (void)err, (void)flag, (void)reason;
	seen_at_close[0] = nseen[0];
	seen_at_close[1] = nseen[1];
	event('C');
}

/* ---- hand-driven conns: ends that only record, or flush in a deferred task as TCP does ---- */

struct fake_end {
	struct conn_end base;
	struct loop *l;
	bool defer_flush;	/* kick_write queues a flush task (else the test consumes) */
	bool queued, released;
	int kick_reads;
	uint8_t out[4096];	/* what was written on to this end */
	size_t nout;
};

static void fake_flush(struct loop *l, void *arg)
{
	struct fake_end *f = arg;
	struct conn *c = f->base.conn;
	const uint8_t *p;
	size_t n;
	(void)l;

	f->queued = false;
	if (f->released)
		return;
	event('F');
	while ((n = conn_out_peek(c, f->base.side, &p)) > 0) {
		if (f->nout + n <= sizeof(f->out))
			memcpy(f->out + f->nout, p, n);
		f->nout += n;
		conn_out_consume(c, f->base.side, n);
		if (f->released)
			return;
	}
	if (conn_out_eof(c, f->base.side))
		conn_out_done(c, f->base.side);	/* may end the conn */
}

static void fake_kick_write(struct conn_end *e)
{
	struct fake_end *f = container_of(e, struct fake_end, base);
	if (f->defer_flush && !f->queued && !loop_defer(f->l, fake_flush, f))
		f->queued = true;
}

static void fake_kick_read(struct conn_end *e)
{
	container_of(e, struct fake_end, base)->kick_reads++;
}

static void fake_release(struct conn_end *e, int err)
{
	(void)err;
	container_of(e, struct fake_end, base)->released = true;
}

static const struct conn_end_ops fake_ops = {
	.name = "fake", .kick_write = fake_kick_write, .kick_read = fake_kick_read,
	.release = fake_release,
};

static struct loop *lp;
static struct fake_end ends[2];

/* A conn of buffer size cap between two fake ends, established, observed when `observed`. */
static struct conn *hand_conn(uint32_t cap, bool defer_flush, bool observed)
{
	struct conn_opts o = { .buffer_size = cap };
	struct conn_hooks h = { .closed = on_closed, .data = on_data, .eof = on_eof };
	struct conn *c;

	if (!lp)
		lp = loop_new();
	conn_set_hooks(&h);
	nevents = 0;
	events[0] = '\0';
	nseen[0] = nseen[1] = 0;
	data_calls = 0;
	c = conn_new(lp, &o);
	if (!c)
		abort();
	for (int s = 0; s < 2; s++) {
		memset(&ends[s], 0, sizeof(ends[s]));
		ends[s].base.ops = &fake_ops;
		ends[s].l = lp;
		ends[s].defer_flush = defer_flush;
		conn_attach(c, (enum conn_side)s, &ends[s].base);
	}
	conn_established(c);
	loop_run_deferred(lp);	/* the kicks of the establishment: nothing to flush */
	nevents = 0;
	events[0] = '\0';
	conn_set_observed(c, observed);
	return c;
}

static void end_conn(struct conn *c)
{
	conn_abort(c, CONN_DOWN, 0, NULL, NULL);
	loop_run_deferred(lp);	/* frees it */
}

/* Reads from `side` as an end does: region, copy, commit; returns the bytes taken. */
static size_t put(struct conn *c, enum conn_side side, const char *s)
{
	return conn_in_write(c, side, s, strlen(s));
}

TEST(hooks_see_the_bytes_after_the_flush)
{
	static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
	static const char resp[] = "HTTP/1.1 204 No Content\r\n\r\n";
	struct conn *c = hand_conn(4096, true, true);

	CHECK_EQ_INT(put(c, CONN_DOWN, req), strlen(req));
	CHECK_EQ_STR(events, "");	/* nothing parsed inside the read */
	loop_run_deferred(lp);
	CHECK_EQ_STR(events, "FD");	/* written on first, then seen */
	CHECK_EQ_INT(nseen[CONN_DOWN], strlen(req));
	CHECK(memcmp(seen[CONN_DOWN], req, strlen(req)) == 0);
	CHECK_EQ_INT(ends[CONN_UP].nout, strlen(req));
	CHECK_EQ_INT(conn_in_room(c, CONN_DOWN), 4096);	/* nothing retained afterwards */

	CHECK_EQ_INT(put(c, CONN_UP, resp), strlen(resp));
	loop_run_deferred(lp);
	CHECK_EQ_STR(events, "FDFD");
	CHECK(nseen[CONN_UP] == strlen(resp) && memcmp(seen[CONN_UP], resp, strlen(resp)) == 0);
	CHECK(ends[CONN_DOWN].nout == strlen(resp) &&
	      memcmp(ends[CONN_DOWN].out, resp, strlen(resp)) == 0);
	end_conn(c);
}

/* Bytes written on but not observed stay in the ring: the reader gets only the room after
 * them, also when they wrap around its end, and they are seen intact once the task runs. */
TEST(retained_bytes_are_not_overwritten_by_a_refill)
{
	struct conn *c = hand_conn(16, false, true);
	uint8_t *p;

	/* 12 in, 8 written on, seen: 4 wait at [8, 12) */
	CHECK_EQ_INT(put(c, CONN_DOWN, "abcdefghijkl"), 12);
	conn_out_consume(c, CONN_UP, 8);
	loop_run_deferred(lp);
	CHECK_EQ_INT(nseen[CONN_DOWN], 12);
	CHECK_EQ_INT(conn_in_room(c, CONN_DOWN), 12);
	/* 8 more wrap around the end: [12, 16) and [0, 4); then all 12 are written on */
	CHECK_EQ_INT(put(c, CONN_DOWN, "mnopqrst"), 8);
	conn_out_consume(c, CONN_UP, 12);
	CHECK_EQ_INT(conn_out_pending(c, CONN_UP), 0);
	/* the 8 new ones are written on but not seen: only [4, 12) is free */
	CHECK_EQ_INT(conn_in_room(c, CONN_DOWN), 8);
	CHECK_EQ_INT(conn_in_region(c, CONN_DOWN, &p), 8);
	CHECK_EQ_INT(put(c, CONN_DOWN, "UVWXYZ01..."), 8);	/* refill: takes 8 of 11 */
	CHECK_EQ_INT(conn_in_room(c, CONN_DOWN), 0);
	CHECK_EQ_INT(conn_in_region(c, CONN_DOWN, &p), 0);
	CHECK_EQ_INT(nseen[CONN_DOWN], 12);
	loop_run_deferred(lp);
	CHECK_EQ_INT(nseen[CONN_DOWN], 28);
	CHECK(memcmp(seen[CONN_DOWN], "abcdefghijklmnopqrstUVWXYZ01", 28) == 0);
	CHECK_EQ_INT(data_calls, 3);	/* the 16 of the second task wrap: two calls */
	CHECK_EQ_INT(conn_in_room(c, CONN_DOWN), 8);	/* the refill still waits */
	conn_out_consume(c, CONN_UP, 8);
	CHECK_EQ_INT(conn_in_room(c, CONN_DOWN), 16);
	end_conn(c);
}

/* A reader stopped by bytes that wait only to be seen is kicked once they were; an
 * unobserved conn keeps nothing back and kicks at the write as before. */
TEST(a_reader_held_up_by_retained_bytes_is_kicked)
{
	struct conn *c = hand_conn(16, false, true);

	CHECK_EQ_INT(put(c, CONN_DOWN, "0123456789abcdef"), 16);
	conn_out_consume(c, CONN_UP, 16);
	CHECK_EQ_INT(conn_in_room(c, CONN_DOWN), 0);
	CHECK_EQ_INT(ends[CONN_DOWN].kick_reads, 0);	/* no room yet: no kick */
	loop_run_deferred(lp);
	CHECK_EQ_INT(ends[CONN_DOWN].kick_reads, 1);
	CHECK_EQ_INT(conn_in_room(c, CONN_DOWN), 16);
	end_conn(c);

	c = hand_conn(16, false, false);
	CHECK_EQ_INT(put(c, CONN_DOWN, "0123456789abcdef"), 16);
	conn_out_consume(c, CONN_UP, 16);
	CHECK_EQ_INT(ends[CONN_DOWN].kick_reads, 1);
	CHECK_EQ_INT(conn_in_room(c, CONN_DOWN), 16);
	loop_run_deferred(lp);
	CHECK_EQ_INT(data_calls, 0);
	end_conn(c);
}

/* Every split of a message over a buffer smaller than it, written on after each read: the
 * hook sees it whole and in order, and the writer gets it unchanged. */
TEST(every_split_through_a_small_ring)
{
	static const char msg[] = "POST /x HTTP/1.1\r\nContent-Length: 9\r\n\r\nhello you";
	const size_t n = sizeof(msg) - 1;

	for (size_t k = 1; k < n; k++) {
		for (int task_between = 0; task_between < 2; task_between++) {
			struct conn *c = hand_conn(16, false, true);
			size_t off = 0, step = k;
			while (off < n) {
				size_t want = MIN(step, n - off);
				size_t got = conn_in_write(c, CONN_DOWN, msg + off, want);
				off += got;
				conn_out_consume(c, CONN_UP, conn_out_pending(c, CONN_UP));
				if (task_between || !got)
					loop_run_deferred(lp);
				step = n;	/* after the first read, whatever fits */
			}
			loop_run_deferred(lp);
			if (nseen[CONN_DOWN] != n || memcmp(seen[CONN_DOWN], msg, n) != 0) {
				fprintf(stderr, "  split at %zu (task between: %d): seen %zu bytes\n",
					k, task_between, nseen[CONN_DOWN]);
				CHECK(false);
			}
			CHECK_EQ_INT(conn_in_room(c, CONN_DOWN), 16);
			end_conn(c);
		}
	}
}

/* Random reads, writes and tasks: whatever the schedule, the hook's bytes are the read bytes,
 * every one, in order; after a task it has seen all of them. */
TEST(random_schedules_keep_every_byte)
{
	uint64_t x = 0x2545f4914f6cdd1dull;
	uint8_t in[4096], out[4096];

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 131 + (i >> 7));
	for (int round = 0; round < 200; round++) {
		struct conn *c = hand_conn(16 + (uint32_t)(round % 5) * 7, false, true);
		size_t rd = 0, wr = 0;
		while (wr < sizeof(in)) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			switch (x % 3) {
			case 0:
				rd += conn_in_write(c, CONN_DOWN, in + rd,
						    MIN((size_t)(x >> 8) % 40 + 1, sizeof(in) - rd));
				break;
			case 1: {
				const uint8_t *p = NULL;
				size_t k = conn_out_peek(c, CONN_UP, &p);
				k = MIN(k, (size_t)(x >> 8) % 40 + 1);
				if (k)
					memcpy(out + wr, p, k);
				wr += k;
				conn_out_consume(c, CONN_UP, k);
				break;
			}
			default:
				loop_run_deferred(lp);
				CHECK_EQ_INT(nseen[CONN_DOWN], rd);
			}
			if (nseen[CONN_DOWN] > rd || conn_in_room(c, CONN_DOWN) > 16 + 4 * 7)
				break;
		}
		loop_run_deferred(lp);
		CHECK_EQ_INT(nseen[CONN_DOWN], sizeof(in));
		CHECK(memcmp(seen[CONN_DOWN], in, sizeof(in)) == 0);
		CHECK(memcmp(out, in, sizeof(in)) == 0);
		end_conn(c);
		if (test_failed_now)
			return;
	}
}

/* The EOF is seen after the side's pending bytes; an abort sees what is pending (bytes and
 * EOFs) before the closed hook; the task queued before it finds a closing conn, and the conn is
 * freed after it (ASan checks). */
TEST(eof_and_abort_see_pending_bytes_first)
{
	struct conn *c = hand_conn(64, true, true);

	put(c, CONN_DOWN, "GET / HTTP/1.0\r\n\r\n");
	conn_in_eof(c, CONN_DOWN);
	CHECK_EQ_STR(events, "");
	loop_run_deferred(lp);
	CHECK_EQ_STR(events, "FDE");
	put(c, CONN_UP, "HTTP/1.0 200 OK\r\n\r\nbody");
	conn_abort(c, CONN_UP, -ECONNRESET, CONN_FLAG_UPSTREAM_RESET, "reset");
	CHECK_EQ_STR(events, "FDEDC");
	CHECK_EQ_INT(seen_at_close[CONN_UP], 23);
	loop_run_deferred(lp);	/* the observe and flush tasks, then the free */
	CHECK_EQ_STR(events, "FDEDC");

	/* both sides pending with an EOF each, closed from inside the flush (both done) */
	c = hand_conn(64, true, true);
	put(c, CONN_UP, "late");
	put(c, CONN_DOWN, "early");
	conn_in_eof(c, CONN_UP);
	conn_in_eof(c, CONN_DOWN);
	loop_run_deferred(lp);
	/* the flushes end the conn (its free comes before the late task: the task frees it);
	 * the pending bytes and EOFs are seen before it closes, in the order they were read */
	CHECK_EQ_STR(events, "FFDDEEC");
	CHECK(nseen[CONN_UP] == 4 && memcmp(seen[CONN_UP], "late", 4) == 0);
	CHECK(nseen[CONN_DOWN] == 5 && memcmp(seen[CONN_DOWN], "early", 5) == 0);
	CHECK_EQ_INT(seen_at_close[CONN_DOWN], 5);
}

/* One turn, two conns, both directions: every flush of the turn comes before any
 * observation (late tasks), and each conn's bytes are seen in the order they were read. */
TEST(all_flushes_of_a_turn_come_first)
{
	struct conn *a = hand_conn(64, true, true);
	struct conn *b;
	struct fake_end a_ends[2];

	memcpy(a_ends, ends, sizeof(ends));	/* hand_conn reuses ends[]: move a's away */
	conn_attach(a, CONN_DOWN, &a_ends[CONN_DOWN].base);
	conn_attach(a, CONN_UP, &a_ends[CONN_UP].base);
	b = hand_conn(64, true, true);
	put(a, CONN_DOWN, "req-a ");
	put(b, CONN_UP, "resp-b ");
	put(a, CONN_UP, "resp-a ");
	put(b, CONN_DOWN, "req-b ");
	loop_run_deferred(lp);
	CHECK_EQ_STR(events, "FFFFDDDD");
	CHECK(nseen[CONN_DOWN] == 12 && memcmp(seen[CONN_DOWN], "req-a req-b ", 12) == 0);
	CHECK(nseen[CONN_UP] == 14 && memcmp(seen[CONN_UP], "resp-a resp-b ", 14) == 0);
	CHECK(a_ends[CONN_UP].nout == 6 && ends[CONN_DOWN].nout == 7);
	end_conn(a);
	end_conn(b);
}

/* ---- real sockets: a TCP end's bytes are on the peer's socket when the hook sees them ---- */

static int peer_fd[2];	/* the test's socket that receives what came from side s */
static long peeked[2] = { -1, -1 };	/* bytes already there at the first hook call */
static int tcp_eofs;

static void tcp_on_data(struct conn *c, enum conn_side from, const uint8_t *p, size_t n)
{
	char buf[256];
	(void)c, (void)p, (void)n;
	if (peeked[from] < 0)
		__atomic_store_n(&peeked[from], (long)recv(peer_fd[from], buf, sizeof(buf),
							   MSG_PEEK | MSG_DONTWAIT), __ATOMIC_RELEASE);
}

static void tcp_on_eof(struct conn *c, enum conn_side from)
{
	(void)c, (void)from;
	__atomic_add_fetch(&tcp_eofs, 1, __ATOMIC_RELEASE);
}

static void *run_loop(void *arg)
{
	loop_run(arg);
	return NULL;
}

static bool wait_for(long *v, int *i)
{
	for (int k = 0; k < 500; k++) {
		if ((v && __atomic_load_n(v, __ATOMIC_ACQUIRE) >= 0) ||
		    (i && __atomic_load_n(i, __ATOMIC_ACQUIRE) > 0))
			return true;
		usleep(10000);
	}
	return false;
}

TEST(tcp_bytes_reach_the_peer_before_the_hook)
{
	static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
	static const char resp[] = "HTTP/1.0 200 OK\r\n\r\nclose-delimited";
	struct conn_hooks h = { .data = tcp_on_data, .eof = tcp_on_eof };
	struct conn_opts o = { .buffer_size = 4096 };
	struct loop *l = loop_new();
	int client, server, d_agent, u_agent;
	char buf[256];
	pthread_t th;

	REQUIRE(l);
	conn_set_hooks(&h);
	tcp_pair(&client, &d_agent);
	tcp_pair(&u_agent, &server);
	fd_set_nonblock(d_agent);
	fd_set_nonblock(u_agent);
	peer_fd[CONN_DOWN] = server;
	peer_fd[CONN_UP] = client;
	struct conn *c = conn_new(l, &o);
	REQUIRE(c);
	struct conn_end *d = conn_tcp_end_new(l, d_agent, false);
	struct conn_end *u = conn_tcp_end_new(l, u_agent, false);
	conn_attach(c, CONN_DOWN, d);
	conn_attach(c, CONN_UP, u);
	conn_set_observed(c, true);
	conn_tcp_end_start(d);
	conn_tcp_end_start(u);
	conn_established(c);
	pthread_create(&th, NULL, run_loop, l);

	CHECK_EQ_INT(write(client, req, sizeof(req) - 1), sizeof(req) - 1);
	CHECK(wait_for(&peeked[CONN_DOWN], NULL));
	/* the request was on the server's socket when the hook first saw it */
	CHECK_EQ_INT(peeked[CONN_DOWN], sizeof(req) - 1);
	CHECK_EQ_INT(read(server, buf, sizeof(buf)), sizeof(req) - 1);
	CHECK_EQ_INT(write(server, resp, sizeof(resp) - 1), sizeof(resp) - 1);
	shutdown(server, SHUT_WR);
	CHECK(wait_for(NULL, &tcp_eofs));
	CHECK_EQ_INT(peeked[CONN_UP], sizeof(resp) - 1);
	loop_stop(l);
	pthread_join(th, NULL);
	conn_abort(c, CONN_DOWN, 0, NULL, NULL);
	loop_free(l);
	close(client);
	close(server);
}

int main(void)
{
	int rc = test_main("conn_observe");
	loop_free(lp);
	return rc;
}
