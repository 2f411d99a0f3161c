// SPDX-License-Identifier: Apache-2.0
/* The tracer: span_start (sample, IDs, custom tags) on the data path, span_end handing
 * sampled spans to the batcher and to a ring of recent spans for the admin API. */
#include "otlp/tracer.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

struct otlp_tracer {
	struct otlp_config cfg;		/* own copy */
	struct sampler sampler;
	struct batcher *batcher;	/* NULL: nothing exported */
	pthread_mutex_t ring_lock;
	struct span **ring;		/* ring_size slots, each a reference */
	uint32_t ring_head, ring_len;
};

static struct otlp_tracer *tracer_make(const struct otlp_config *cfg, struct otlp_exporter *ex,
				       bool use_ex, char *err, size_t errlen)
{
	struct otlp_tracer *t = calloc(1, sizeof(*t));
	int rc;

	if (!t) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((rc = otlp_config_validate(cfg, err, errlen)))
		goto fail;
	if ((rc = otlp_config_copy(&t->cfg, cfg))) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if ((rc = otlp_config_sampler(&t->cfg, &t->sampler))) {
		snprintf(err, errlen, "bad sampler settings");
		goto fail_cfg;
	}
	if (t->cfg.ring_size) {
		t->ring = calloc(t->cfg.ring_size, sizeof(*t->ring));
		if (!t->ring) {
			rc = -ENOMEM;
			goto fail_cfg;
		}
	}
	if (t->cfg.enabled && t->cfg.export) {
		if (!use_ex) {
			ex = otlp_exporter_new(&t->cfg, err, errlen);
			if (!ex) {
				rc = -errno;
				goto fail_ring;
			}
		}
		t->batcher = batcher_new(&t->cfg.batch, ex);
		ex = NULL;	/* batcher_new owns it, success or not */
		if (!t->batcher) {
			rc = -errno;
			snprintf(err, errlen, "cannot start the span export thread: %s", strerror(-rc));
			goto fail_ring;
		}
	}
	otlp_exporter_free(ex);
	pthread_mutex_init(&t->ring_lock, NULL);
	return t;
fail_ring:
	free(t->ring);
fail_cfg:
	otlp_config_fini(&t->cfg);
fail:
	free(t);
	if (use_ex)
		otlp_exporter_free(ex);
	errno = -rc;
	return NULL;
}

struct otlp_tracer *otlp_tracer_new(const struct otlp_config *cfg, char *err, size_t errlen)
{
	return tracer_make(cfg, NULL, false, err, errlen);
}

struct otlp_tracer *otlp_tracer_new_with_exporter(const struct otlp_config *cfg,
						  struct otlp_exporter *ex, char *err, size_t errlen)
{
	return tracer_make(cfg, ex, true, err, errlen);
}

uint32_t otlp_tracer_flush_budget_ms(const struct otlp_tracer *t)
{
	return t && t->batcher ? t->cfg.shutdown_timeout_ms : 0;
}

void otlp_tracer_free(struct otlp_tracer *t)
{
	otlp_tracer_free_within(t, UINT32_MAX);
}

void otlp_tracer_free_within(struct otlp_tracer *t, uint32_t max_ms)
{
	if (!t)
		return;
	batcher_free(t->batcher, MIN(t->cfg.shutdown_timeout_ms, max_ms));
	for (uint32_t i = 0; i < t->ring_len; i++)
		span_unref(t->ring[(t->ring_head + i) % t->cfg.ring_size]);
	free(t->ring);
	pthread_mutex_destroy(&t->ring_lock);
	otlp_config_fini(&t->cfg);
	free(t);
}

struct span *span_start(struct otlp_tracer *t, struct otlp_resource *resource, const char *name,
			enum span_kind kind, const struct span_context *parent)
{
	return span_start_opts(t, resource, name, kind, parent, NULL);
}

static bool all_zero_id(const uint8_t id[SPAN_ID_LEN])
{
	uint8_t acc = 0;
	for (int i = 0; i < SPAN_ID_LEN; i++)
		acc |= id[i];
	return !acc;
}

struct span *span_start_opts(struct otlp_tracer *t, struct otlp_resource *resource,
			     const char *name, enum span_kind kind,
			     const struct span_context *parent, const struct span_opts *o)
{
	const struct sampler *smp = o && o->sampler ? o->sampler : &t->sampler;
	struct span *s;
	int rc = 0;

	if (!t || !name) {
		errno = EINVAL;
		return NULL;
	}
	s = span_alloc();
	if (!s)
		return NULL;
	if (parent && !span_context_valid(parent))
		parent = NULL;	/* an invalid parent makes a root span (W3C: restart the trace) */
	/* Random IDs only where needed (a child keeps its parent's trace, a given span ID is
	 * used as is); getrandom never blocks once the pool is initialised; never all-zero. */
	if (parent) {
		memcpy(s->ctx.trace_id, parent->trace_id, SPAN_TRACE_ID_LEN);
		memcpy(s->parent_span_id, parent->span_id, SPAN_ID_LEN);
		s->has_parent = true;
		s->parent_remote = parent->remote;
	} else {
		rc = span_random_id(s->ctx.trace_id, SPAN_TRACE_ID_LEN);
	}
	if (!rc && o && o->span_id && !all_zero_id(o->span_id))
		memcpy(s->ctx.span_id, o->span_id, SPAN_ID_LEN);
	else if (!rc)
		rc = span_random_id(s->ctx.span_id, SPAN_ID_LEN);
	if (rc) {
		s->refs = 1;
		span_unref(s);	/* back to the pool */
		errno = -rc;
		return NULL;
	}
	s->recording = t->cfg.enabled && sampler_should_sample(smp, parent, s->ctx.trace_id);
	s->ctx.flags = s->recording ? SPAN_FLAG_SAMPLED : 0;
	s->kind = kind;
	size_t nl = strnlen(name, sizeof(s->name) - 1);
	memcpy(s->name, name, nl);	/* calloc'd: NUL-terminated */
	s->start_ns = now_real_ns();
	s->refs = 1;
	s->tracer = t;
	if (s->recording) {
		const struct otlp_header *tags = o ? o->tags : t->cfg.tags;
		size_t ntags = o ? o->ntags : t->cfg.ntags;
		s->resource = otlp_resource_ref(resource);
		for (size_t i = 0; i < ntags; i++)
			span_set_str(s, tags[i].name, tags[i].value);
		if (o) {
			s->sink = otlp_sink_ref(o->sink);
			s->no_export = !o->sink && o->no_export;
		}
	}
	return s;
}

static void ring_push(struct otlp_tracer *t, struct span *s)
{
	struct span *old = NULL;
	uint32_t size = t->cfg.ring_size;

	if (!size)
		return;
	pthread_mutex_lock(&t->ring_lock);
	if (t->ring_len == size) {
		old = t->ring[t->ring_head];
		t->ring[t->ring_head] = span_ref(s);
		t->ring_head = (t->ring_head + 1) % size;
	} else {
		t->ring[(t->ring_head + t->ring_len) % size] = span_ref(s);
		t->ring_len++;
	}
	pthread_mutex_unlock(&t->ring_lock);
	span_unref(old);
}

void span_end(struct span *s)
{
	if (!s)
		return;
	if (!s->end_ns)
		s->end_ns = now_real_ns();
	if (s->recording && s->tracer) {
		/* a full queue is counted there */
		if (s->sink)
			otlp_sink_submit(s->sink, s);
		else if (s->tracer->batcher && !s->no_export)
			batcher_submit(s->tracer->batcher, s);
		ring_push(s->tracer, s);
	}
	otlp_sink_unref(s->sink);	/* the batcher holds the span; the sink may retire */
	s->sink = NULL;
	span_unref(s);
}

int otlp_tracer_flush(struct otlp_tracer *t, uint32_t timeout_ms)
{
	return t && t->batcher ? batcher_flush(t->batcher, timeout_ms) : 0;
}

void otlp_tracer_stats(struct otlp_tracer *t, struct batcher_stats *out)
{
	struct batcher_stats own = { 0 };

	otlp_sinks_stats(out);
	if (t && t->batcher)
		batcher_stats(t->batcher, &own);
	batcher_stats_add(out, &own);
}

size_t otlp_tracer_recent(struct otlp_tracer *t, void (*fn)(const struct span *s, void *arg), void *arg)
{
	size_t n;

	if (!t || !t->cfg.ring_size)
		return 0;
	pthread_mutex_lock(&t->ring_lock);
	n = t->ring_len;
	for (uint32_t i = 0; fn && i < t->ring_len; i++)
		fn(t->ring[(t->ring_head + i) % t->cfg.ring_size], arg);
	pthread_mutex_unlock(&t->ring_lock);
	return n;
}

const struct otlp_config *otlp_tracer_config(const struct otlp_tracer *t)
{
	return &t->cfg;
}
