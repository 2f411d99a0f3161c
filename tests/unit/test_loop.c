// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the event loop's task order (agent/loop.c): deferred tasks, then what came in
 * while they ran, then the late tasks (the request tracker's work waits for the relaying). */
#include "harness.h"
#include "agent/loop.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

static char order[64];
static size_t norder;
static int fds[2];

static void note(char c)
{
	if (norder < sizeof(order) - 1)
		order[norder++] = c;
	order[norder] = '\0';
}

static void on_readable(struct loop *l, struct loop_io *io, uint32_t events)
{
	char b[16];
	(void)l;
	(void)io;
	(void)events;
	while (read(fds[0], b, sizeof(b)) > 0)
		note('R');
}

static void late_task(struct loop *l, void *arg)
{
	(void)l;
	(void)arg;
	note('L');
}

static void stop_task(struct loop *l, void *arg)
{
	(void)arg;
	note('S');
	loop_stop(l);
}

/* A deferred task that wakes a peer (here: the pipe becomes readable, as a pod on this CPU
 * answers while the agent's send is preempted) and leaves late work, then a late stop. */
static void write_task(struct loop *l, void *arg)
{
	(void)arg;
	note('W');
	if (write(fds[1], "x", 1) != 1 || loop_defer_late(l, late_task, NULL) ||
	    loop_defer_late(l, stop_task, NULL))
		note('!');
}

TEST(what_came_in_during_the_turn_runs_before_the_late_tasks)
{
	struct loop *l = loop_new();
	struct loop_io io;

	REQUIRE(l);
	REQUIRE(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
	loop_io_init(&io, fds[0], on_readable, NULL);
	REQUIRE(loop_io_set(l, &io, EPOLLIN) == 0);
	REQUIRE(loop_defer(l, write_task, NULL) == 0);
	REQUIRE(loop_run(l) == 0);
	/* the byte the deferred task's write made ready is read before the late task runs
	 * (before: "WLSR", the late work first) */
	CHECK_EQ_STR(order, "WRLS");
	loop_io_del(l, &io);
	close(fds[0]);
	close(fds[1]);
	loop_free(l);
}

static void late_only(struct loop *l, void *arg)
{
	(void)arg;
	note('L');
	loop_stop(l);
}

TEST(late_tasks_run_when_nothing_came_in)
{
	struct loop *l = loop_new();

	REQUIRE(l);
	norder = 0;
	order[0] = '\0';
	REQUIRE(loop_defer_late(l, late_only, NULL) == 0);
	REQUIRE(loop_run(l) == 0);
	CHECK_EQ_STR(order, "L");
	loop_free(l);
}

static void stop_now(struct loop *l, void *arg)
{
	(void)arg;
	note('S');
	loop_stop(l);
	if (loop_defer_late(l, late_task, NULL))
		note('!');
}

/* A stop with late work pending: the look at epoll reads the stop's wake-up, and the loop must
 * still end rather than wait for another. */
TEST(a_stop_with_late_work_pending_ends_the_loop)
{
	struct loop *l = loop_new();

	REQUIRE(l);
	norder = 0;
	order[0] = '\0';
	REQUIRE(loop_defer(l, stop_now, NULL) == 0);
	REQUIRE(loop_run(l) == 0);
	CHECK_EQ_STR(order, "SL");
	loop_free(l);
}

TEST_MAIN("loop")
