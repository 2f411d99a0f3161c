// SPDX-License-Identifier: Apache-2.0
/* The batch span processor: submitters append to a bounded circular queue under a mutex;
 * one thread exports the head in batches, retrying with backoff while the collector is
 * unreachable. Spans stay queued (and count against the bound) until accepted or given up. */
#include "otlp/batcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"

struct batcher {
	struct batcher_opts o;
	struct otlp_exporter *ex;	/* owned */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;		/* the export thread: work, flush, stop */
	pthread_cond_t idle;		/* flushers: the queue drained */
	/* under lock */
	struct span **q;		/* circular, o.max_queue slots, each holding a reference */
	uint32_t head, len;
	bool flush_req;
	bool stop;
	uint64_t stop_deadline_ms;	/* monotonic, valid once stop */
	volatile bool cancel;		/* shutdown deadline passed: abort the export in flight */
	/* atomics */
	struct batcher_stats st;
	/* export thread only */
	uint64_t rng;
	bool failing;			/* the last attempt failed (log the recovery once) */
};

void batcher_opts_default(struct batcher_opts *o)
{
	/* OTel SDK BatchSpanProcessor defaults; retries as the collector's exporterhelper
	 * does, with a shorter cap so a returning collector is found within seconds. */
	o->max_queue = 2048;
	o->max_batch = 512;
	o->schedule_delay_ms = 5000;
	o->export_timeout_ms = 30000;
	o->backoff_initial_ms = 1000;
	o->backoff_max_ms = 5000;
	o->retry_max_elapsed_ms = 300000;
}

#define STAT_ADD(b, field, n) __atomic_add_fetch(&(b)->st.field, (n), __ATOMIC_RELAXED)

static void set_qlen(struct batcher *b)
{
	__atomic_store_n(&b->st.queue_len, b->len, __ATOMIC_RELAXED);
}

/* Full delay in [d/2, d]: spreads the retries of many agents after a collector restart. */
static uint32_t jitter(struct batcher *b, uint32_t d)
{
	return (uint32_t)jitter_half(&b->rng, d);
}

/* Removes the n oldest spans, marking them st. Under lock. */
static void pop_n(struct batcher *b, uint32_t n, enum span_export_state st)
{
	uint32_t cap = b->o.max_queue;
	for (uint32_t i = 0; i < n && b->len; i++) {
		struct span *s = b->q[b->head];
		b->q[b->head] = NULL;
		b->head = (b->head + 1) % cap;
		b->len--;
		span_set_export_state(s, st);
		span_unref(s);
	}
	set_qlen(b);
}

/* Waits until ms passed or stop was newly asked (under lock). True when it should go on. */
static void wait_ms_locked(struct batcher *b, uint64_t ms)
{
	struct timespec ts = timespec_after_ms(CLOCK_MONOTONIC, ms);
	bool was_stop = b->stop;
	while (b->stop == was_stop) {
		if (pthread_cond_timedwait(&b->wake, &b->lock, &ts) == ETIMEDOUT)
			break;
	}
}

/* Exports batch[0..n) with retries. Called without the lock. True when accepted. */
static bool export_with_retry(struct batcher *b, struct span **batch, uint32_t n)
{
	uint64_t first = now_mono_ms();
	uint32_t backoff = b->o.backoff_initial_ms;

	for (;;) {
		struct otlp_export_status st = { .cancel = &b->cancel };
		uint32_t timeout = b->o.export_timeout_ms;
		uint64_t now = now_mono_ms();

		pthread_mutex_lock(&b->lock);
		bool stopping = b->stop;
		uint64_t deadline = b->stop_deadline_ms;
		pthread_mutex_unlock(&b->lock);
		if (stopping) {
			if (now >= deadline) {
				pr_warn("otlp: shutdown deadline reached, %u spans not exported", n);
				return false;
			}
			timeout = (uint32_t)MIN((uint64_t)timeout, deadline - now);
		}
		STAT_ADD(b, export_requests, 1);
		int rc = b->ex->ops->export_spans(b->ex, batch, n, timeout, &st);
		if (rc == 0) {
			if (b->failing)
				pr_info("otlp: %s export to the collector works again", b->ex->ops->name);
			b->failing = false;
			if (st.rejected > 0) {
				STAT_ADD(b, rejected, (uint64_t)st.rejected);
				pr_warn_rl("otlp: collector rejected %lld of %u spans: %s",
					   (long long)st.rejected, n, st.msg);
			}
			return true;
		}
		STAT_ADD(b, export_errors, 1);
		b->failing = true;
		now = now_mono_ms();
		if (!st.retryable) {
			pr_warn("otlp: %s export of %u spans failed, not retryable: %s (%s)",
				b->ex->ops->name, n, st.msg, strerror(-rc));
			return false;
		}
		if (now - first >= b->o.retry_max_elapsed_ms) {
			pr_warn("otlp: %s export of %u spans failed for %llu ms, giving up: %s",
				b->ex->ops->name, n, (unsigned long long)(now - first), st.msg);
			return false;
		}
		uint32_t delay = MAX(jitter(b, backoff), st.retry_after_ms);
		backoff = (uint32_t)MIN((uint64_t)backoff * 2, (uint64_t)b->o.backoff_max_ms);
		pr_warn_rl("otlp: %s export of %u spans failed, retrying in %u ms: %s",
			   b->ex->ops->name, n, delay, st.msg);
		pthread_mutex_lock(&b->lock);
		if (b->stop && now + delay >= b->stop_deadline_ms) {
			pthread_mutex_unlock(&b->lock);
			pr_warn("otlp: shutdown deadline before the next retry, %u spans not exported", n);
			return false;
		}
		wait_ms_locked(b, delay);
		pthread_mutex_unlock(&b->lock);
	}
}

static void *batcher_main(void *arg)
{
	struct batcher *b = arg;
	struct span **batch = calloc(b->o.max_batch, sizeof(*batch));
	uint64_t last = now_mono_ms();

	pthread_mutex_lock(&b->lock);
	while (batch) {
		uint64_t next = last + b->o.schedule_delay_ms;
		/* Sleep until a full batch, the schedule delay with something queued, a flush,
		 * or shutdown (OTel SDK batching processor). */
		while (!b->stop && !b->flush_req && b->len < b->o.max_batch) {
			uint64_t now = now_mono_ms();
			if (b->len > 0 && now >= next)
				break;
			struct timespec ts = timespec_after_ms(CLOCK_MONOTONIC,
							       now < next ? next - now : b->o.schedule_delay_ms);
			pthread_cond_timedwait(&b->wake, &b->lock, &ts);
			if (b->len == 0 && now_mono_ms() >= next)
				next = now_mono_ms() + b->o.schedule_delay_ms;
		}
		if (b->len == 0) {
			b->flush_req = false;
			pthread_cond_broadcast(&b->idle);
			if (b->stop)
				break;
			last = now_mono_ms();
			continue;
		}
		uint32_t n = MIN(b->len, b->o.max_batch);
		for (uint32_t i = 0; i < n; i++)
			batch[i] = b->q[(b->head + i) % b->o.max_queue];
		pthread_mutex_unlock(&b->lock);

		bool ok = export_with_retry(b, batch, n);

		pthread_mutex_lock(&b->lock);
		pop_n(b, n, ok ? SPAN_EXPORT_EXPORTED : SPAN_EXPORT_FAILED);
		if (ok)
			STAT_ADD(b, exported, n);
		else
			STAT_ADD(b, failed, n);
		last = now_mono_ms();
		if (b->len == 0) {
			b->flush_req = false;
			pthread_cond_broadcast(&b->idle);
		}
		if (b->stop && now_mono_ms() >= b->stop_deadline_ms)
			break;
	}
	/* Shutdown (or no memory for the batch array): what is left is given up. */
	if (b->len) {
		pr_warn("otlp: %u spans dropped at shutdown", b->len);
		STAT_ADD(b, failed, b->len);
		pop_n(b, b->len, SPAN_EXPORT_FAILED);
	}
	pthread_cond_broadcast(&b->idle);
	pthread_mutex_unlock(&b->lock);
	free(batch);
	return NULL;
}

struct batcher *batcher_new(const struct batcher_opts *opts, struct otlp_exporter *ex)
{
	struct batcher *b = NULL;
	pthread_condattr_t ca;
	int err;

	if (!ex || !ex->ops || !ex->ops->export_spans) {
		err = EINVAL;
		goto fail;
	}
	b = calloc(1, sizeof(*b));
	if (!b) {
		err = ENOMEM;
		goto fail;
	}
	batcher_opts_default(&b->o);
	if (opts) {
#define TAKE(f) if (opts->f) b->o.f = opts->f
		TAKE(max_queue); TAKE(max_batch); TAKE(schedule_delay_ms); TAKE(export_timeout_ms);
		TAKE(backoff_initial_ms); TAKE(backoff_max_ms); TAKE(retry_max_elapsed_ms);
#undef TAKE
	}
	if (b->o.max_batch > b->o.max_queue)
		b->o.max_batch = b->o.max_queue;
	b->ex = ex;
	b->q = calloc(b->o.max_queue, sizeof(*b->q));
	if (!b->q) {
		err = ENOMEM;
		goto fail_free;
	}
	if (getrandom(&b->rng, sizeof(b->rng), 0) != sizeof(b->rng) || !b->rng)
		b->rng = now_mono_ns() | 1;
	pthread_mutex_init(&b->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&b->wake, &ca);
	pthread_cond_init(&b->idle, &ca);
	pthread_condattr_destroy(&ca);
	err = pthread_create(&b->thread, NULL, batcher_main, b);
	if (err) {
		pthread_cond_destroy(&b->wake);
		pthread_cond_destroy(&b->idle);
		pthread_mutex_destroy(&b->lock);
		goto fail_free;
	}
	return b;
fail_free:
	free(b->q);
	free(b);
	b = NULL;
fail:
	otlp_exporter_free(ex);
	errno = err;
	return NULL;
}

int batcher_submit(struct batcher *b, struct span *s)
{
	pthread_mutex_lock(&b->lock);
	if (b->len >= b->o.max_queue || b->stop) {
		pthread_mutex_unlock(&b->lock);
		/* OTel SDK: a full queue drops the new span; counted, never waited for */
		STAT_ADD(b, dropped, 1);
		span_set_export_state(s, SPAN_EXPORT_DROPPED);
		return -ENOSPC;
	}
	span_set_export_state(s, SPAN_EXPORT_QUEUED);
	b->q[(b->head + b->len) % b->o.max_queue] = span_ref(s);
	b->len++;
	set_qlen(b);
	if (b->len == b->o.max_batch)
		pthread_cond_signal(&b->wake);
	pthread_mutex_unlock(&b->lock);
	return 0;
}

int batcher_flush(struct batcher *b, uint32_t timeout_ms)
{
	struct timespec ts = timespec_after_ms(CLOCK_MONOTONIC, timeout_ms);
	int rc = 0;

	pthread_mutex_lock(&b->lock);
	if (b->len) {
		b->flush_req = true;
		pthread_cond_signal(&b->wake);
	}
	while (b->len && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&b->idle, &b->lock, &ts);
	rc = b->len ? -ETIMEDOUT : 0;
	pthread_mutex_unlock(&b->lock);
	return rc;
}

void batcher_stats(struct batcher *b, struct batcher_stats *out)
{
	out->exported = __atomic_load_n(&b->st.exported, __ATOMIC_RELAXED);
	out->dropped = __atomic_load_n(&b->st.dropped, __ATOMIC_RELAXED);
	out->failed = __atomic_load_n(&b->st.failed, __ATOMIC_RELAXED);
	out->rejected = __atomic_load_n(&b->st.rejected, __ATOMIC_RELAXED);
	out->export_requests = __atomic_load_n(&b->st.export_requests, __ATOMIC_RELAXED);
	out->export_errors = __atomic_load_n(&b->st.export_errors, __ATOMIC_RELAXED);
	out->queue_len = __atomic_load_n(&b->st.queue_len, __ATOMIC_RELAXED);
}

void batcher_stats_add(struct batcher_stats *to, const struct batcher_stats *st)
{
	to->exported += st->exported;
	to->dropped += st->dropped;
	to->failed += st->failed;
	to->rejected += st->rejected;
	to->export_requests += st->export_requests;
	to->export_errors += st->export_errors;
	to->queue_len += st->queue_len;
}

void batcher_free(struct batcher *b, uint32_t deadline_ms)
{
	batcher_free_stats(b, deadline_ms, NULL);
}

void batcher_free_stats(struct batcher *b, uint32_t deadline_ms, struct batcher_stats *final)
{
	if (!b)
		return;
	pthread_mutex_lock(&b->lock);
	b->stop = true;
	b->stop_deadline_ms = now_mono_ms() + deadline_ms;
	pthread_cond_broadcast(&b->wake);
	pthread_mutex_unlock(&b->lock);
	/* The thread honours the deadline between attempts; an attempt in flight is told to
	 * stop through cancel once the deadline passes. */
	/* an attempt in flight gets 250 ms more */
	struct timespec ts = timespec_after_ms(CLOCK_REALTIME, (uint64_t)deadline_ms + 250);
	if (pthread_timedjoin_np(b->thread, NULL, &ts) != 0) {
		__atomic_store_n(&b->cancel, true, __ATOMIC_RELAXED);
		pthread_join(b->thread, NULL);
	}
	if (final)
		batcher_stats(b, final);
	otlp_exporter_free(b->ex);
	pthread_cond_destroy(&b->wake);
	pthread_cond_destroy(&b->idle);
	pthread_mutex_destroy(&b->lock);
	free(b->q);
	free(b);
}
