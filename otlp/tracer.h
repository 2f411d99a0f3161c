/* SPDX-License-Identifier: Apache-2.0 */
/* The tracer the agent holds: span_start() samples, assigns IDs and adds custom tags;
 * span_end() stamps the end and hands the span to the batcher and the recent-spans ring. */
#ifndef AMBIT_OTLP_TRACER_H
#define AMBIT_OTLP_TRACER_H

#include <stdbool.h>
#include <stddef.h>

#include "otlp/batcher.h"
#include "otlp/config.h"
#include "otlp/resource.h"
#include "otlp/sink.h"
#include "otlp/span.h"

struct otlp_tracer;

/* Builds sampler, exporter (per cfg) and batcher; cfg is copied. With cfg->enabled false
 * or cfg->export false no exporter is made. NULL + errno, err set (bad endpoint, ...). */
struct otlp_tracer *otlp_tracer_new(const struct otlp_config *cfg, char *err, size_t errlen);
/* The same with a given exporter (owned from here on, freed also on failure): tests. */
struct otlp_tracer *otlp_tracer_new_with_exporter(const struct otlp_config *cfg,
						  struct otlp_exporter *ex, char *err, size_t errlen);
/* Flushes (up to cfg->shutdown_timeout_ms), stops the thread, frees. Spans still held by
 * callers must be ended before. NULL ok. */
void otlp_tracer_free(struct otlp_tracer *t);
/* The same with the flush cut to at most max_ms (an exit deadline: a drain ending). */
void otlp_tracer_free_within(struct otlp_tracer *t, uint32_t max_ms);
/* cfg->shutdown_timeout_ms when spans are exported, 0 otherwise (nothing to flush). */
uint32_t otlp_tracer_flush_budget_ms(const struct otlp_tracer *t);

/* Starts a span at now: a child of parent (remote from a traceparent, or local) or a root
 * when parent is NULL or invalid. The sampler decides; an unsampled span still has valid
 * IDs (for traceparent) but records nothing and is never queued. Adds the custom tags.
 * Takes a reference on resource (NULL ok). The caller owns the span until span_end().
 * Any thread. NULL + errno (ENOMEM). */
struct span *span_start(struct otlp_tracer *t, struct otlp_resource *resource, const char *name,
			enum span_kind kind, const struct span_context *parent);

/* Per-span settings that replace the tracer's own (Istio's per-workload tracing): the
 * sampler, the custom tags, and where the span is exported. All borrowed for the call. */
struct span_opts {
	const struct sampler *sampler;		/* NULL: the tracer's */
	const struct otlp_header *tags;		/* replace the tracer's custom tags */
	size_t ntags;
	struct otlp_sink *sink;			/* export here (span_start takes a reference) */
	bool no_export;				/* with sink NULL: keep in the ring, export nowhere */
	const uint8_t *span_id;			/* SPAN_ID_LEN bytes, the span's ID (one derived
						 * where both sides must know it); NULL or all
						 * zero: random */
};
/* span_start with o (NULL: the tracer's settings, as span_start). */
struct span *span_start_opts(struct otlp_tracer *t, struct otlp_resource *resource,
			     const char *name, enum span_kind kind,
			     const struct span_context *parent, const struct span_opts *o);
/* Stamps the end time (if not set) and, when sampled, queues it for export and keeps it
 * in the recent-spans ring. Gives up the caller's reference. NULL ok. */
void span_end(struct span *s);

/* Exports what is queued now; 0 or -ETIMEDOUT (0 without an exporter). */
int otlp_tracer_flush(struct otlp_tracer *t, uint32_t timeout_ms);
/* Export counters: the tracer's exporter's plus every sink's (otlp_sinks_stats). */
void otlp_tracer_stats(struct otlp_tracer *t, struct batcher_stats *out);
/* Calls fn on the recent finished sampled spans, oldest first, under the ring's lock (fn
 * must not call span_end). The span is borrowed for the call. Returns how many were seen. */
size_t otlp_tracer_recent(struct otlp_tracer *t, void (*fn)(const struct span *s, void *arg), void *arg);
const struct otlp_config *otlp_tracer_config(const struct otlp_tracer *t);

#endif
