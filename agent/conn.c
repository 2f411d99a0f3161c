// SPDX-License-Identifier: Apache-2.0
/* The splice engine: moves bytes between a conn's two ends through one bounded ring buffer
 * per direction, passes half-closes and resets on, and frees the conn in the before-sleep
 * step once both directions are done. Also the TCP end (a non-blocking socket on the loop). */
#include "agent/conn.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Ring buffer; data is NULL while empty so an idle conn costs no buffer memory.
 * [head, head + len) waits to be written on. The newest `unobs` committed bytes have not been
 * shown to the data hook yet (observe_task); those already written on stay in the ring
 * ([head - retained, head), retained = unobs - len when unobs > len) until they have. */
struct cbuf {
	uint8_t *data;
	uint32_t cap;
	uint32_t head;
	uint32_t len;
	uint32_t unobs;
};

/* Switches between the sides' bytes that wait for one observe_task; more are observed at once.
 * A turn usually holds one run (a request, or a response) or two (a pipelined request and a
 * response). */
#define OBS_RUNS 4

struct conn {
	uint64_t id;
	struct loop *loop;
	enum conn_st st;
	struct cbuf buf[2];	/* buf[s]: bytes read from side s, to be written to side !s */
	bool eof_in[2];		/* side s sent EOF */
	bool done_out[2];	/* we shut down the write direction towards side s */
	bool established;
	bool closing;
	bool observed;		/* the data/eof hooks see this conn's bytes */
	bool obs_queued;	/* observe_task is deferred (late) for this conn */
	bool free_queued;	/* conn_free came first: observe_task frees */
	uint8_t nruns;
	/* What the hooks have not seen yet, in the order it was read: bytes of one side (the
	 * oldest of its unobserved ones), or its EOF. One more than fits between two tasks. */
	struct obs_run {
		uint32_t n;
		uint8_t side;
		bool eof;
	} runs[OBS_RUNS + 1];
	struct conn_end *end[2];
	struct conn_info info;
	uint64_t bytes[2];	/* read from side s */
	uint64_t start_ms;
	struct loop_timer connect_timer;
	void *user;
	struct conn *prev, *next;	/* registry */
};

static const char *const st_names[] = {
	[CONN_ST_CONNECTING] = "connecting", [CONN_ST_OPEN] = "open",
	[CONN_ST_HALF_CLOSED] = "half_closed", [CONN_ST_CLOSED] = "closed",
};

const char *conn_st_to_str(enum conn_st st)
{
	return (unsigned)st < ARRAY_SIZE(st_names) ? st_names[st] : "?";
}

static struct conn *registry;
static size_t registry_count;
static uint64_t next_id = 1;
static struct conn_hooks hooks;

void conn_set_hooks(const struct conn_hooks *h)
{
	hooks = *h;
}

struct conn *conn_new(struct loop *l, const struct conn_opts *opts)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->id = next_id++;
	c->loop = l;
	c->st = CONN_ST_CONNECTING;
	c->buf[0].cap = c->buf[1].cap = opts->buffer_size ? opts->buffer_size : 65536;
	c->start_ms = loop_now_ms(l);
	loop_timer_init(&c->connect_timer, NULL, c);
	c->next = registry;
	if (registry)
		registry->prev = c;
	registry = c;
	registry_count++;
	return c;
}

void conn_attach(struct conn *c, enum conn_side side, struct conn_end *e)
{
	e->conn = c;
	e->side = side;
	c->end[side] = e;
}

struct conn_info *conn_info(struct conn *c) { return &c->info; }
uint64_t conn_id(const struct conn *c) { return c->id; }
enum conn_st conn_state(const struct conn *c) { return c->st; }
struct loop *conn_loop(const struct conn *c) { return c->loop; }
uint64_t conn_bytes(const struct conn *c, enum conn_side from) { return c->bytes[from]; }
uint64_t conn_start_ms(const struct conn *c) { return c->start_ms; }
void *conn_user(const struct conn *c) { return c->user; }
void conn_set_user(struct conn *c, void *p) { c->user = p; }
void conn_set_observed(struct conn *c, bool on) { c->observed = on; }
bool conn_observed(const struct conn *c) { return c->observed; }
size_t conn_count(void) { return registry_count; }

void conn_foreach(conn_visit_fn fn, void *arg)
{
	for (struct conn *c = registry; c; c = c->next)
		fn(c, arg);
}

void conn_opened(struct conn *c)
{
	if (hooks.opened)
		hooks.opened(c);
}

void conn_peer_fini(struct conn_peer *p)
{
	free(p->workload);
	free(p->namespace);
	free(p->service_account);
	free(p->canonical_service);
	free(p->principal);
	free(p->node);
}

static void conn_free(struct loop *l, void *arg)
{
	struct conn *c = arg;
	(void)l;
	if (c->obs_queued) {	/* a late task still holds c: it frees */
		c->free_queued = true;
		return;
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		registry = c->next;
	if (c->next)
		c->next->prev = c->prev;
	registry_count--;
	free(c->buf[0].data);
	free(c->buf[1].data);
	conn_peer_fini(&c->info.source);
	conn_peer_fini(&c->info.destination);
	free(c->info.service);
	free(c->info.authz_policy);
	free(c->info.authz_dry_run);
	free(c);
}

static void observe_pending(struct conn *c);

/* Ends the conn once: releases both ends, runs the closed hook, frees it before sleep. */
static void conn_finish(struct conn *c, int err, const char *flag, const char *reason)
{
	if (c->closing)
		return;
	c->closing = true;	/* (before observing: no kick_read now) */
	/* What was read before the end is seen before it (a response, then a reset). */
	observe_pending(c);
	c->st = CONN_ST_CLOSED;
	loop_timer_cancel(c->loop, &c->connect_timer);
	for (int s = 0; s < 2; s++) {
		struct conn_end *e = c->end[s];
		c->end[s] = NULL;
		/* Both ends get the real error: the failed one is already broken, the other
		 * passes it on (a TCP reset, or an HBONE answer naming the cause). */
		if (e)
			e->ops->release(e, err);
	}
	if (hooks.closed)
		hooks.closed(c, err, flag, reason);
	if (loop_defer(c->loop, conn_free, c)) {
		/* Cannot defer: the callers' stack may still hold c. Leak rather than crash. */
		pr_warn_rl("conn %llu: cannot defer free: leaking it", (unsigned long long)c->id);
	}
}

void conn_abort(struct conn *c, enum conn_side side, int err, const char *flag, const char *reason)
{
	(void)side;	/* the flag says which side failed */
	conn_finish(c, err ? err : -ECONNRESET, flag, reason);
}

static void maybe_done(struct conn *c)
{
	if (c->done_out[CONN_DOWN] && c->done_out[CONN_UP])
		conn_finish(c, 0, NULL, NULL);
}

static void kick_write(struct conn *c, enum conn_side side)
{
	struct conn_end *e = c->end[side];
	if (e && !c->closing && (side == CONN_DOWN || c->established))
		e->ops->kick_write(e);
}

static void kick_read(struct conn *c, enum conn_side side)
{
	struct conn_end *e = c->end[side];
	if (e && !c->closing)
		e->ops->kick_read(e);
}

/* ---- observation: the data and eof hooks see the bytes after they were written on ----
 *
 * The hooks (the request tracker's parser) used to run inside the read, before the write to
 * the other side, which is deferred to the before-sleep step (tcp_flush_task, hbone's
 * sess_flush_task): every request and response waited for them. Now a commit notes its bytes
 * as unobserved and observe_task runs late in the before-sleep step (loop_defer_late), after
 * the turn's flush tasks. Bytes a flush wrote on stay in the ring until the task has shown
 * them (struct cbuf), so the hooks still see every byte, in order, unchanged. */

/* Room the bytes of a buffer take: waiting to be written on, or written but unobserved. */
static uint32_t cbuf_used(const struct cbuf *b)
{
	return MAX(b->len, b->unobs);
}

/* Shows the hooks what they have not seen, in the order it was read (bytes of a side are its
 * oldest unobserved ones: two calls when they wrap around the ring); then lets go of the
 * bytes already written on: a buffer is freed when nothing waits in it, and a reader they
 * held up resumes. */
static void observe_pending(struct conn *c)
{
	uint32_t was[2] = { c->buf[0].unobs, c->buf[1].unobs };
	uint8_t nruns = c->nruns;

	c->nruns = 0;
	for (uint8_t i = 0; i < nruns; i++) {
		const struct obs_run *r = &c->runs[i];
		struct cbuf *b = &c->buf[r->side];
		enum conn_side side = (enum conn_side)r->side;
		if (r->n && c->observed && hooks.data) {
			uint32_t at = (uint32_t)(((uint64_t)b->head + b->len + b->cap - b->unobs) % b->cap);
			uint32_t n = MIN(r->n, b->cap - at);
			hooks.data(c, side, b->data + at, n);
			if (n < r->n && c->observed)
				hooks.data(c, side, b->data, r->n - n);
		}
		b->unobs -= r->n;
		if (r->eof && c->observed && hooks.eof)
			hooks.eof(c, side);
	}
	for (int s = 0; s < 2; s++) {
		struct cbuf *b = &c->buf[s];
		if (was[s] <= b->len)
			continue;	/* nothing was retained */
		bool held_up = MAX(b->len, was[s]) == b->cap;
		if (!b->len) {
			free(b->data);
			b->data = NULL;
			b->head = 0;
		}
		if (held_up)
			kick_read(c, (enum conn_side)s);
	}
}

static void observe_task(struct loop *l, void *arg)
{
	struct conn *c = arg;
	c->obs_queued = false;
	/* Closing: conn_finish observed everything, and conn_free may have run first. */
	if (c->free_queued)
		conn_free(l, c);
	else if (!c->closing)
		observe_pending(c);
}

/* n committed bytes (or the EOF) of `side`, not seen by the hooks yet. */
static void observe_note(struct conn *c, enum conn_side side, uint32_t n, bool eof)
{
	struct obs_run *last = c->nruns ? &c->runs[c->nruns - 1] : NULL;

	c->buf[side].unobs += n;
	if (last && last->side == side) {
		last->n += n;
		last->eof |= eof;
		return;
	}
	c->runs[c->nruns++] = (struct obs_run){ .n = n, .side = (uint8_t)side, .eof = eof };
	if (c->nruns > OBS_RUNS)
		observe_pending(c);	/* the sides alternate too often for one task: now */
}

/* After the kick_write: the hooks run in a late task, once the turn's flush tasks (the one
 * the kick queued, and every other conn's) have written the bytes on. */
static void observe_later(struct conn *c)
{
	if (c->obs_queued || c->closing || !c->nruns)
		return;
	if (loop_defer_late(c->loop, observe_task, c)) {
		observe_pending(c);	/* no memory for the task: now, as before */
		return;
	}
	c->obs_queued = true;
}

static void connect_timeout(struct loop *l, struct loop_timer *t)
{
	struct conn *c = t->arg;
	(void)l;
	if (!c->established)
		conn_abort(c, CONN_UP, -ETIMEDOUT, CONN_FLAG_UPSTREAM_CONNECT_FAILURE,
			   "upstream connect timeout");
}

void conn_arm_connect_timeout(struct conn *c, uint32_t ms)
{
	c->connect_timer.fn = connect_timeout;
	if (!c->closing && !c->established && loop_timer_arm(c->loop, &c->connect_timer, ms))
		pr_warn_rl("conn %llu: no memory for the connect timer", (unsigned long long)c->id);
}

void conn_established(struct conn *c)
{
	if (c->closing)
		return;
	loop_timer_cancel(c->loop, &c->connect_timer);
	c->established = true;
	c->st = c->eof_in[0] || c->eof_in[1] ? CONN_ST_HALF_CLOSED : CONN_ST_OPEN;
	kick_write(c, CONN_UP);
	kick_read(c, CONN_UP);
	kick_write(c, CONN_DOWN);
}

/* ---- reading side ---- */

size_t conn_in_room(const struct conn *c, enum conn_side side)
{
	const struct cbuf *b = &c->buf[side];
	if (c->closing || c->eof_in[side])
		return 0;
	return b->cap - cbuf_used(b);
}

ssize_t conn_in_region(struct conn *c, enum conn_side side, uint8_t **p)
{
	struct cbuf *b = &c->buf[side];
	uint32_t tail, start, n;

	if (conn_in_room(c, side) == 0)
		return 0;
	if (!b->data) {
		b->data = malloc(b->cap);
		if (!b->data) {
			conn_abort(c, side, -ENOMEM, CONN_FLAG_OVERFLOW, "out of memory");
			return -ENOMEM;
		}
		b->head = 0;
	}
	/* Free room runs from the tail to where the used bytes start: the retained ones
	 * (written on, not observed yet) before head, if any. */
	tail = (b->head + b->len) % b->cap;
	start = (uint32_t)(((uint64_t)tail + b->cap - cbuf_used(b)) % b->cap);
	n = tail >= start ? b->cap - tail : start - tail;
	*p = b->data + tail;
	return n;
}

void conn_in_commit(struct conn *c, enum conn_side side, size_t n)
{
	if (!n || c->closing)
		return;
	c->buf[side].len += (uint32_t)n;
	c->bytes[side] += n;
	if (c->observed && hooks.data)
		observe_note(c, side, (uint32_t)n, false);
	kick_write(c, (enum conn_side)!side);
	observe_later(c);
}

size_t conn_in_write(struct conn *c, enum conn_side side, const void *data, size_t n)
{
	size_t done = 0;
	while (done < n) {
		uint8_t *p;
		ssize_t room = conn_in_region(c, side, &p);
		if (room <= 0)
			break;
		size_t k = MIN((size_t)room, n - done);
		memcpy(p, (const uint8_t *)data + done, k);
		done += k;
		c->buf[side].len += (uint32_t)k;
		c->bytes[side] += k;
		if (c->observed && hooks.data)
			observe_note(c, side, (uint32_t)k, false);
	}
	if (done) {
		kick_write(c, (enum conn_side)!side);
		observe_later(c);
	}
	return done;
}

void conn_in_eof(struct conn *c, enum conn_side side)
{
	if (c->closing || c->eof_in[side])
		return;
	c->eof_in[side] = true;
	if (c->observed && hooks.eof)	/* seen after the bytes before it, in observe_task */
		observe_note(c, side, 0, true);
	if (c->established)
		c->st = CONN_ST_HALF_CLOSED;
	kick_write(c, (enum conn_side)!side);
	observe_later(c);
}

/* ---- writing side ---- */

size_t conn_out_peek(struct conn *c, enum conn_side side, const uint8_t **p)
{
	struct cbuf *b = &c->buf[!side];
	if (!b->len)
		return 0;
	*p = b->data + b->head;
	return MIN(b->len, b->cap - b->head);
}

size_t conn_out_pending(const struct conn *c, enum conn_side side)
{
	return c->buf[!side].len;
}

void conn_out_consume(struct conn *c, enum conn_side side, size_t n)
{
	struct cbuf *b = &c->buf[!side];
	bool was_full = cbuf_used(b) == b->cap;

	if (!n)
		return;
	b->head = (b->head + (uint32_t)n) % b->cap;
	b->len -= (uint32_t)n;
	if (!b->len && !b->unobs) {
		/* Idle conns hold no buffer memory. */
		free(b->data);
		b->data = NULL;
		b->head = 0;
	}
	/* Still full (the bytes wait to be observed): observe_side kicks once they were. */
	if ((was_full || !b->len) && cbuf_used(b) < b->cap)
		kick_read(c, (enum conn_side)!side);
}

bool conn_out_eof(const struct conn *c, enum conn_side side)
{
	return c->eof_in[!side] && c->buf[!side].len == 0 && !c->done_out[side];
}

void conn_out_done(struct conn *c, enum conn_side side)
{
	c->done_out[side] = true;
	maybe_done(c);
}

/* ---- the TCP end ---- */

enum tcp_end_flags {
	TCP_CONNECTING = 1 << 0,	/* connect() in progress */
	TCP_RD_EOF = 1 << 1,		/* read returned 0 */
	TCP_WR_SHUT = 1 << 2,		/* shutdown(SHUT_WR) done */
	TCP_RELEASED = 1 << 3,		/* the conn let go; only the deferred free remains */
	TCP_FLUSH_QUEUED = 1 << 4,	/* a flush is deferred to the before-sleep step */
	TCP_RD_STALLED = 1 << 5,	/* readable, but the conn buffer is full */
};

struct conn_tcp_end {
	struct conn_end base;
	struct loop_io io;
	int fd;
	unsigned flags;
};

static void tcp_update(struct conn_tcp_end *t)
{
	struct conn *c = t->base.conn;
	uint32_t ev = 0;

	if (t->flags & TCP_RELEASED)
		return;
	if (t->flags & TCP_CONNECTING)
		ev = EPOLLOUT;
	else {
		/* A full buffer keeps EPOLLIN until a wake-up finds it still full: it usually
		 * drains in the same loop turn, and dropping and re-adding interest would cost two
		 * epoll_ctl per buffer's worth of bytes. */
		bool room = conn_in_room(c, t->base.side) > 0;
		if (room)
			t->flags &= ~TCP_RD_STALLED;
		if (!(t->flags & TCP_RD_EOF) &&
		    (room || ((t->io.events & EPOLLIN) && !(t->flags & TCP_RD_STALLED))))
			ev |= EPOLLIN | EPOLLRDHUP;
		if (conn_out_pending(c, t->base.side))
			ev |= EPOLLOUT;
	}
	if (loop_io_set(c->loop, &t->io, ev))
		conn_abort(c, t->base.side, -ENOMEM, CONN_FLAG_OVERFLOW, "epoll registration failed");
}

static const char *side_flag(const struct conn_tcp_end *t)
{
	return t->base.side == CONN_DOWN ? CONN_FLAG_DOWNSTREAM_RESET : CONN_FLAG_UPSTREAM_RESET;
}

/* Writes what is pending; shuts down the write side after the last byte. */
static void tcp_flush(struct conn_tcp_end *t)
{
	struct conn *c = t->base.conn;
	enum conn_side side = t->base.side;
	const uint8_t *p;
	size_t n;

	if (t->flags & (TCP_CONNECTING | TCP_RELEASED))
		return;
	while ((n = conn_out_peek(c, side, &p)) > 0) {
		ssize_t w = send(t->fd, p, n, MSG_NOSIGNAL);
		if (w == -1) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			conn_abort(c, side, -errno, side_flag(t), strerror(errno));
			return;
		}
		conn_out_consume(c, side, (size_t)w);
		if (t->flags & TCP_RELEASED)
			return;
		if ((size_t)w < n)
			return;
	}
	if (conn_out_eof(c, side) && !(t->flags & TCP_WR_SHUT)) {
		t->flags |= TCP_WR_SHUT;
		shutdown(t->fd, SHUT_WR);
		conn_out_done(c, side);
	}
}

static void tcp_read(struct conn_tcp_end *t)
{
	struct conn *c = t->base.conn;
	enum conn_side side = t->base.side;

	/* A few reads per wake-up so one busy conn does not starve the others. */
	for (int i = 0; i < 4 && !(t->flags & (TCP_RD_EOF | TCP_RELEASED)); i++) {
		uint8_t *p;
		ssize_t room = conn_in_region(c, side, &p);
		if (room <= 0) {
			if (!i && !room)
				t->flags |= TCP_RD_STALLED;
			return;
		}
		ssize_t r = recv(t->fd, p, (size_t)room, 0);
		if (r > 0) {
			conn_in_commit(c, side, (size_t)r);
			if (r < room)
				return;
		} else if (r == 0) {
			t->flags |= TCP_RD_EOF;
			conn_in_eof(c, side);
		} else {
			if (errno == EAGAIN || errno == EINTR)
				return;
			conn_abort(c, side, -errno, side_flag(t), strerror(errno));
			return;
		}
	}
}

static void tcp_io(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct conn_tcp_end *t = io->arg;
	struct conn *c = t->base.conn;
	(void)l;

	if (t->flags & TCP_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err) {
			conn_abort(c, t->base.side, -err, CONN_FLAG_UPSTREAM_CONNECT_FAILURE,
				   strerror(err));
			return;
		}
		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		t->flags &= ~TCP_CONNECTING;
		conn_established(c);
		if (!(t->flags & TCP_RELEASED))
			tcp_update(t);
		return;
	}
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		tcp_read(t);
	if (!(t->flags & TCP_RELEASED) && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
		tcp_flush(t);
	if (!(t->flags & TCP_RELEASED) && (events & EPOLLERR)) {
		int err = 0;
		socklen_t len = sizeof(err);
		getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			conn_abort(c, t->base.side, -err, side_flag(t), strerror(err));
			return;
		}
	}
	tcp_update(t);
}

static void tcp_flush_task(struct loop *l, void *arg)
{
	struct conn_tcp_end *t = arg;
	(void)l;
	t->flags &= ~TCP_FLUSH_QUEUED;
	if (t->flags & TCP_RELEASED)
		return;
	tcp_flush(t);
	if (!(t->flags & TCP_RELEASED))
		tcp_update(t);
}

/* New bytes for this socket: write them in the before-sleep step, once, so that what one
 * wake-up brings (say every DATA frame of a 64 KiB TLS read) leaves in one send, not one per
 * frame; each send is a packet through the kernel's stack. The deferred free of a released
 * end runs after this task (tasks run in order), so t is still there. */
static void tcp_kick_write(struct conn_end *e)
{
	struct conn_tcp_end *t = container_of(e, struct conn_tcp_end, base);

	if (t->flags & (TCP_FLUSH_QUEUED | TCP_RELEASED))
		return;
	if (loop_defer(e->conn->loop, tcp_flush_task, t)) {
		tcp_flush(t);	/* no memory for the task: write now */
		if (!(t->flags & TCP_RELEASED))
			tcp_update(t);
		return;
	}
	t->flags |= TCP_FLUSH_QUEUED;
}

static void tcp_kick_read(struct conn_end *e)
{
	struct conn_tcp_end *t = container_of(e, struct conn_tcp_end, base);
	tcp_update(t);
}

static void tcp_free(struct loop *l, void *arg)
{
	(void)l;
	free(arg);
}

static void tcp_release(struct conn_end *e, int err)
{
	struct conn_tcp_end *t = container_of(e, struct conn_tcp_end, base);
	struct loop *l = e->conn->loop;

	loop_io_del(l, &t->io);
	if (err) {
		/* Pass the reset on: close with linger 0 sends RST instead of FIN. */
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };
		setsockopt(t->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	close(t->fd);
	t->fd = -1;
	t->flags |= TCP_RELEASED;
	if (loop_defer(l, tcp_free, t))
		pr_warn_rl("tcp end: cannot defer free: leaking it");
}

static const struct conn_end_ops tcp_ops = {
	.name = "tcp",
	.kick_write = tcp_kick_write,
	.kick_read = tcp_kick_read,
	.release = tcp_release,
};

struct conn_end *conn_tcp_end_new(struct loop *l, int fd, bool connecting)
{
	struct conn_tcp_end *t = calloc(1, sizeof(*t));
	(void)l;
	if (!t)
		return NULL;
	t->base.ops = &tcp_ops;
	t->fd = fd;
	t->flags = connecting ? TCP_CONNECTING : 0;
	loop_io_init(&t->io, fd, tcp_io, t);
	return &t->base;
}

void conn_tcp_end_start(struct conn_end *e)
{
	tcp_update(container_of(e, struct conn_tcp_end, base));
}
