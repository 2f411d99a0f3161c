// SPDX-License-Identifier: Apache-2.0
/* One epoll loop per worker thread. Timers are a binary min-heap keyed by deadline;
 * deferred tasks run in the before-sleep step (late ones after the others: loop_defer_late);
 * other threads reach the loop via loop_post. */
#include "agent/loop.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256
#define LOOP_MAX_HOOKS 8

struct task {
	loop_task_fn fn;
	void *arg;
	struct task *next;
};

struct hook {
	loop_task_fn fn;
	void *arg;
};

struct loop {
	int epfd;
	int wakefd;			/* eventfd for loop_post and loop_stop */
	struct loop_io wake_io;
	volatile bool stop;
	uint64_t now_ms;

	struct loop_timer **heap;	/* min-heap on when_ms */
	int nheap, capheap;

	struct task *deferred, **deferred_tail;
	struct task *late, **late_tail;		/* loop_defer_late */

	pthread_mutex_t post_lock;
	struct task *posted, **posted_tail;

	struct hook hooks[LOOP_MAX_HOOKS];
	int nhooks;
};

static void wake_read(struct loop *l, struct loop_io *io, uint32_t events);

struct loop *loop_new(void)
{
	struct loop *l = calloc(1, sizeof(*l));
	int err;

	if (!l)
		return NULL;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd == -1) {
		err = errno;
		goto err_free;
	}
	l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->wakefd == -1) {
		err = errno;
		goto err_ep;
	}
	pthread_mutex_init(&l->post_lock, NULL);
	l->deferred_tail = &l->deferred;
	l->late_tail = &l->late;
	l->posted_tail = &l->posted;
	l->now_ms = now_mono_ms();
	loop_io_init(&l->wake_io, l->wakefd, wake_read, NULL);
	err = -loop_io_set(l, &l->wake_io, EPOLLIN);
	if (err)
		goto err_wake;
	return l;
err_wake:
	pthread_mutex_destroy(&l->post_lock);
	close(l->wakefd);
err_ep:
	close(l->epfd);
err_free:
	free(l);
	errno = err;
	return NULL;
}

static void run_tasks(struct loop *l, struct task *t)
{
	while (t) {
		struct task *next = t->next;
		t->fn(l, t->arg);
		free(t);
		t = next;
	}
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	/* Posted and deferred tasks still own resources: run them so they can release. */
	loop_run_deferred(l);
	run_tasks(l, l->posted);
	loop_io_del(l, &l->wake_io);
	pthread_mutex_destroy(&l->post_lock);
	close(l->wakefd);
	close(l->epfd);
	free(l->heap);
	free(l);
}

uint64_t loop_now_ms(struct loop *l)
{
	return l->now_ms;
}

void loop_io_init(struct loop_io *io, int fd, loop_io_fn fn, void *arg)
{
	io->fd = fd;
	io->events = 0;
	io->fn = fn;
	io->arg = arg;
	io->registered = false;
}

int loop_io_set(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = io };

	if (io->registered && io->events == events)
		return 0;
	if (epoll_ctl(l->epfd, io->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, io->fd, &ev) == -1)
		return -errno;
	io->registered = true;
	io->events = events;
	return 0;
}

void loop_io_del(struct loop *l, struct loop_io *io)
{
	if (!io->registered)
		return;
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
	io->registered = false;
	io->events = 0;
}

/* ---- timers: binary min-heap ---- */

static void heap_swap(struct loop *l, int a, int b)
{
	struct loop_timer *t = l->heap[a];
	l->heap[a] = l->heap[b];
	l->heap[b] = t;
	l->heap[a]->heap_idx = a;
	l->heap[b]->heap_idx = b;
}

static void heap_up(struct loop *l, int i)
{
	while (i > 0) {
		int p = (i - 1) / 2;
		if (l->heap[p]->when_ms <= l->heap[i]->when_ms)
			break;
		heap_swap(l, p, i);
		i = p;
	}
}

static void heap_down(struct loop *l, int i)
{
	for (;;) {
		int c = 2 * i + 1, m = i;
		if (c < l->nheap && l->heap[c]->when_ms < l->heap[m]->when_ms)
			m = c;
		if (c + 1 < l->nheap && l->heap[c + 1]->when_ms < l->heap[m]->when_ms)
			m = c + 1;
		if (m == i)
			break;
		heap_swap(l, m, i);
		i = m;
	}
}

void loop_timer_init(struct loop_timer *t, loop_timer_fn fn, void *arg)
{
	t->when_ms = 0;
	t->fn = fn;
	t->arg = arg;
	t->heap_idx = -1;
}

void loop_timer_cancel(struct loop *l, struct loop_timer *t)
{
	int i = t->heap_idx;
	if (i < 0)
		return;
	l->nheap--;
	if (i != l->nheap) {
		l->heap[i] = l->heap[l->nheap];
		l->heap[i]->heap_idx = i;
		heap_down(l, i);
		heap_up(l, i);
	}
	t->heap_idx = -1;
}

int loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t ms)
{
	uint64_t when = now_mono_ms() + ms;

	if (t->heap_idx >= 0) {
		/* Re-arm in place: no allocation, cannot fail. */
		t->when_ms = when;
		heap_down(l, t->heap_idx);
		heap_up(l, t->heap_idx);
		return 0;
	}
	if (l->nheap == l->capheap) {
		int ncap = l->capheap ? l->capheap * 2 : 64;
		struct loop_timer **nh = realloc(l->heap, (size_t)ncap * sizeof(*nh));
		if (!nh)
			return -ENOMEM;
		l->heap = nh;
		l->capheap = ncap;
	}
	t->when_ms = when;
	t->heap_idx = l->nheap;
	l->heap[l->nheap++] = t;
	heap_up(l, t->heap_idx);
	return 0;
}

static int next_timeout(struct loop *l)
{
	if (l->deferred || l->late || !l->nheap)
		return l->deferred || l->late ? 0 : -1;
	uint64_t now = now_mono_ms();
	if (l->heap[0]->when_ms <= now)
		return 0;
	uint64_t d = l->heap[0]->when_ms - now;
	return d > 60000 ? 60000 : (int)d;
}

static void run_timers(struct loop *l)
{
	while (l->nheap && l->heap[0]->when_ms <= l->now_ms) {
		struct loop_timer *t = l->heap[0];
		loop_timer_cancel(l, t);
		t->fn(l, t);
	}
}

/* ---- tasks ---- */

/* Appends a task to the list whose tail pointer is *tail. */
static int task_append(struct task ***tail, loop_task_fn fn, void *arg)
{
	struct task *t = malloc(sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->fn = fn;
	t->arg = arg;
	t->next = NULL;
	**tail = t;
	*tail = &t->next;
	return 0;
}

int loop_defer(struct loop *l, loop_task_fn fn, void *arg)
{
	return task_append(&l->deferred_tail, fn, arg);
}

int loop_defer_late(struct loop *l, loop_task_fn fn, void *arg)
{
	return task_append(&l->late_tail, fn, arg);
}

int loop_post(struct loop *l, loop_task_fn fn, void *arg)
{
	struct task *t = malloc(sizeof(*t));
	uint64_t one = 1;

	if (!t)
		return -ENOMEM;
	t->fn = fn;
	t->arg = arg;
	t->next = NULL;
	pthread_mutex_lock(&l->post_lock);
	*l->posted_tail = t;
	l->posted_tail = &t->next;
	pthread_mutex_unlock(&l->post_lock);
	if (write(l->wakefd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		return -errno;
	return 0;
}

void loop_stop(struct loop *l)
{
	uint64_t one = 1;
	l->stop = true;
	if (write(l->wakefd, &one, sizeof(one)) == -1) {
		/* EAGAIN: the counter is saturated, so the loop is awake anyway. */
	}
}

int loop_add_before_sleep(struct loop *l, loop_task_fn fn, void *arg)
{
	if (l->nhooks == LOOP_MAX_HOOKS)
		return -ENOSPC;
	l->hooks[l->nhooks].fn = fn;
	l->hooks[l->nhooks].arg = arg;
	l->nhooks++;
	return 0;
}

static void wake_read(struct loop *l, struct loop_io *io, uint32_t events)
{
	uint64_t v;
	struct task *t;

	(void)events;
	if (read(io->fd, &v, sizeof(v)) == -1) {
		/* EAGAIN: spurious wake-up */
	}
	pthread_mutex_lock(&l->post_lock);
	t = l->posted;
	l->posted = NULL;
	l->posted_tail = &l->posted;
	pthread_mutex_unlock(&l->post_lock);
	run_tasks(l, t);
}

static void run_normal(struct loop *l)
{
	/* Deferred tasks may defer more; run until the list is empty. */
	while (l->deferred) {
		struct task *t = l->deferred;
		l->deferred = NULL;
		l->deferred_tail = &l->deferred;
		run_tasks(l, t);
	}
}

void loop_run_deferred(struct loop *l)
{
	/* The deferred tasks, then the late ones, whose own deferred tasks run after them all;
	 * and again until both lists are empty. */
	while (l->deferred || l->late) {
		run_normal(l);
		struct task *t = l->late;
		l->late = NULL;
		l->late_tail = &l->late;
		run_tasks(l, t);
	}
}

/* Waits up to timeout ms for events and runs their callbacks, then the timers due. 0, or
 * -errno (EINTR is 0: nothing ran). */
static int poll_once(struct loop *l, struct epoll_event *evs, int timeout)
{
	int n = epoll_wait(l->epfd, evs, LOOP_MAX_EVENTS, timeout);
	if (n == -1)
		return errno == EINTR ? 0 : -errno;
	l->now_ms = now_mono_ms();
	for (int i = 0; i < n; i++) {
		struct loop_io *io = evs[i].data.ptr;
		/* An earlier callback of this batch may have unregistered it; its owner is freed
		 * only in the before-sleep step, so the pointer is still valid. */
		if (io->registered)
			io->fn(l, io, evs[i].events);
	}
	run_timers(l);
	return 0;
}

int loop_run(struct loop *l)
{
	struct epoll_event evs[LOOP_MAX_EVENTS];
	int err;

	while (!l->stop) {
		for (int i = 0; i < l->nhooks; i++)
			l->hooks[i].fn(l, l->hooks[i].arg);
		run_normal(l);
		/* Late work waits (request tracking): first whatever came in while the turn's
		 * writes ran. A peer they woke on this CPU may have answered already (it preempts
		 * the sender), and its bytes go on before the late work, not after. Once a turn,
		 * so late work is never starved. */
		if (l->late && (err = poll_once(l, evs, 0)) < 0)
			return err;
		loop_run_deferred(l);
		if (l->stop)	/* a task, or the look above (which read the wake-up), stopped it */
			break;
		if ((err = poll_once(l, evs, next_timeout(l))) < 0)
			return err;
	}
	loop_run_deferred(l);
	return 0;
}
