/* SPDX-License-Identifier: Apache-2.0 */
/* The epoll event loop of one worker thread: fd events, one timer heap, a before-sleep step
 * (flush writes, free deferred objects) and a cross-thread queue (loop_post). */
#ifndef AMBIT_AGENT_LOOP_H
#define AMBIT_AGENT_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

struct loop;
struct loop_io;
struct loop_timer;

typedef void (*loop_io_fn)(struct loop *l, struct loop_io *io, uint32_t events);
typedef void (*loop_timer_fn)(struct loop *l, struct loop_timer *t);
typedef void (*loop_task_fn)(struct loop *l, void *arg);

/* Embedded in the owner's object; the owner keeps it alive while registered. */
struct loop_io {
	int fd;
	uint32_t events;	/* EPOLLIN/EPOLLOUT currently registered */
	loop_io_fn fn;
	void *arg;
	bool registered;
};

struct loop_timer {
	uint64_t when_ms;	/* monotonic deadline */
	loop_timer_fn fn;
	void *arg;
	int heap_idx;		/* -1 when not armed */
};

/* Returns NULL and sets errno. */
struct loop *loop_new(void);
/* Accepts NULL. Registered ios and timers must have been removed by their owners. */
void loop_free(struct loop *l);

/* Runs until loop_stop(); returns 0 or -errno from epoll_wait. */
int loop_run(struct loop *l);
/* Safe from any thread and from signal-safe contexts (writes the eventfd). */
void loop_stop(struct loop *l);
/* Cached monotonic time of the current iteration. */
uint64_t loop_now_ms(struct loop *l);

void loop_io_init(struct loop_io *io, int fd, loop_io_fn fn, void *arg);
/* Sets the interest set (0 keeps the fd registered with no events). 0 or -errno. */
int loop_io_set(struct loop *l, struct loop_io *io, uint32_t events);
/* Unregisters; safe if not registered. Does not close the fd. */
void loop_io_del(struct loop *l, struct loop_io *io);

void loop_timer_init(struct loop_timer *t, loop_timer_fn fn, void *arg);
/* (Re)arms the timer to fire after ms milliseconds. 0, or -ENOMEM (only when not yet armed). */
int loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t ms);
void loop_timer_cancel(struct loop *l, struct loop_timer *t);
static inline bool loop_timer_armed(const struct loop_timer *t) { return t->heap_idx >= 0; }

/* Runs fn(arg) once in the before-sleep step of this iteration (same thread).
 * Used to close objects outside the callback that decided to close them. -ENOMEM on failure. */
int loop_defer(struct loop *l, loop_task_fn fn, void *arg);
/* Runs fn(arg) once in the before-sleep step of this iteration, after every task deferred
 * with loop_defer (and what those defer) has run, and after the events that came in
 * meanwhile (one look, without waiting: a peer those writes woke on this CPU may have
 * answered already) and the tasks they defer: work that should come after the turn's
 * relaying. Late tasks run in order; what they defer runs after the whole batch. -ENOMEM. */
int loop_defer_late(struct loop *l, loop_task_fn fn, void *arg);
/* Runs the deferred and late tasks now, as the before-sleep step does (and those they defer): a loop
 * turn without the wait, for tests and benches that drive conns by hand. Loop thread only. */
void loop_run_deferred(struct loop *l);
/* Runs fn(arg) on the loop's thread soon; callable from any thread. -ENOMEM on failure. */
int loop_post(struct loop *l, loop_task_fn fn, void *arg);

/* A hook run before every sleep (e.g. flushing pending writes). At most 8 per loop. */
int loop_add_before_sleep(struct loop *l, loop_task_fn fn, void *arg);

#endif
