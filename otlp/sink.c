// SPDX-License-Identifier: Apache-2.0
/* Shared export pipelines (otlp/sink.h): a refcounted batcher with its exporter, registered
 * process-wide for the span metrics; the last reference hands it to a detached thread that
 * drains it within the shutdown timeout and folds its counters into the retired totals. */
#include "otlp/sink.h"

#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"

struct otlp_sink {
	int refs;			/* atomic */
	char *name;
	struct batcher *batcher;
	uint32_t drain_ms;
	/* under reg_lock */
	bool draining;			/* batcher is being freed: read snap, not batcher */
	struct batcher_stats snap;	/* the counters when draining began */
	struct otlp_sink *next;		/* the registry */
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reg_cond = PTHREAD_COND_INITIALIZER;
static struct otlp_sink *reg_head;		/* live and draining sinks */
static struct batcher_stats reg_retired;	/* counters of freed sinks */
static int reg_draining;

struct otlp_sink *otlp_sink_new_with_exporter(const char *name, const struct batcher_opts *o,
					      uint32_t drain_ms, struct otlp_exporter *ex)
{
	struct otlp_sink *s = calloc(1, sizeof(*s));
	int e;

	if (!s || !(s->name = strdup(name ? name : ""))) {
		e = ENOMEM;
		goto fail;
	}
	s->batcher = batcher_new(o, ex);	/* owns ex from here, success or not */
	ex = NULL;
	if (!s->batcher) {
		e = errno;
		goto fail;
	}
	s->refs = 1;
	s->drain_ms = drain_ms;
	pthread_mutex_lock(&reg_lock);
	s->next = reg_head;
	reg_head = s;
	pthread_mutex_unlock(&reg_lock);
	return s;
fail:
	otlp_exporter_free(ex);
	if (s)
		free(s->name);
	free(s);
	errno = e;
	return NULL;
}

struct otlp_sink *otlp_sink_new(const char *name, const struct otlp_config *cfg, char *err,
				size_t errlen)
{
	struct otlp_exporter *ex = otlp_exporter_new(cfg, err, errlen);
	struct otlp_sink *s;

	if (!ex)
		return NULL;
	s = otlp_sink_new_with_exporter(name, &cfg->batch, cfg->shutdown_timeout_ms, ex);
	if (!s)
		snprintf(err, errlen, "cannot start the span export thread: %s", strerror(errno));
	return s;
}

struct otlp_sink *otlp_sink_ref(struct otlp_sink *s)
{
	if (s)
		__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
	return s;
}

/* Drains and frees s (batcher_free joins the export thread, which may take drain_ms; what
 * is still queued then counts as failed) and folds its final counters into the totals. */
static void *drain_main(void *arg)
{
	struct otlp_sink *s = arg;
	struct batcher_stats st;

	pr_debug("tracing: draining the exporter of provider %s", s->name);
	batcher_free_stats(s->batcher, s->drain_ms, &st);
	st.queue_len = 0;
	pthread_mutex_lock(&reg_lock);
	for (struct otlp_sink **p = &reg_head; *p; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			break;
		}
	}
	batcher_stats_add(&reg_retired, &st);
	reg_draining--;
	pthread_cond_broadcast(&reg_cond);
	pthread_mutex_unlock(&reg_lock);
	free(s->name);
	free(s);
	return NULL;
}

void otlp_sink_unref(struct otlp_sink *s)
{
	pthread_t th;
	pthread_attr_t attr;

	if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	pthread_mutex_lock(&reg_lock);
	batcher_stats(s->batcher, &s->snap);
	s->draining = true;
	reg_draining++;
	pthread_mutex_unlock(&reg_lock);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&th, &attr, drain_main, s) != 0) {
		/* no thread: drain here, without waiting for the collector */
		s->drain_ms = 0;
		drain_main(s);
	}
	pthread_attr_destroy(&attr);
}

int otlp_sink_submit(struct otlp_sink *s, struct span *sp)
{
	return batcher_submit(s->batcher, sp);
}

const char *otlp_sink_name(const struct otlp_sink *s)
{
	return s->name;
}

int otlp_sink_flush(struct otlp_sink *s, uint32_t timeout_ms)
{
	return batcher_flush(s->batcher, timeout_ms);
}

void otlp_sink_stats(struct otlp_sink *s, struct batcher_stats *out)
{
	batcher_stats(s->batcher, out);
}

void otlp_sinks_stats(struct batcher_stats *out)
{
	struct batcher_stats st;

	pthread_mutex_lock(&reg_lock);
	*out = reg_retired;
	for (struct otlp_sink *s = reg_head; s; s = s->next) {
		if (s->draining)
			st = s->snap;
		else
			batcher_stats(s->batcher, &st);
		batcher_stats_add(out, &st);
	}
	pthread_mutex_unlock(&reg_lock);
}

int otlp_sinks_wait_retired(uint32_t max_ms)
{
	uint64_t end = now_mono_ms() + max_ms;
	int rc = 0;

	pthread_mutex_lock(&reg_lock);
	while (reg_draining > 0) {
		uint64_t now = now_mono_ms();
		struct timespec ts;
		if (now >= end) {
			rc = -ETIMEDOUT;
			break;
		}
		ts = timespec_after_ms(CLOCK_REALTIME, 20);
		pthread_cond_timedwait(&reg_cond, &reg_lock, &ts);
	}
	pthread_mutex_unlock(&reg_lock);
	return rc;
}
