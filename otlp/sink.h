/* SPDX-License-Identifier: Apache-2.0 */
/* An export pipeline (exporter + batcher) shared by reference: one per tracing provider in
 * use (Istio's extension providers). Spans hold a reference from span_start to span_end;
 * when the last reference goes, a short-lived thread drains its queue (up to the shutdown
 * timeout) and closes it, so a provider change never blocks the data path and never loses
 * what was queued for the old collector. */
#ifndef AMBIT_OTLP_SINK_H
#define AMBIT_OTLP_SINK_H

#include <stdint.h>

#include "otlp/batcher.h"
#include "otlp/config.h"
#include "otlp/span.h"

struct otlp_sink;

/* The exporter cfg asks for (protocol, endpoint, headers, TLS) behind a batcher with
 * cfg->batch; `name` labels it (the provider's name) in logs and stats. One reference.
 * NULL + errno, err set. */
struct otlp_sink *otlp_sink_new(const char *name, const struct otlp_config *cfg, char *err,
				size_t errlen);
/* The same around a given exporter (owned from here on, freed also on failure) with batch
 * options o and drain_ms to drain when retired: tests. */
struct otlp_sink *otlp_sink_new_with_exporter(const char *name, const struct batcher_opts *o,
					      uint32_t drain_ms, struct otlp_exporter *ex);
struct otlp_sink *otlp_sink_ref(struct otlp_sink *s);
/* The last reference retires the sink: drained and freed on a thread of its own. NULL ok. */
void otlp_sink_unref(struct otlp_sink *s);
/* Queues a finished span (the batcher takes its own reference). 0 or -ENOSPC (dropped). */
int otlp_sink_submit(struct otlp_sink *s, struct span *sp);
const char *otlp_sink_name(const struct otlp_sink *s);
/* Exports what is queued now; 0 or -ETIMEDOUT. */
int otlp_sink_flush(struct otlp_sink *s, uint32_t timeout_ms);
void otlp_sink_stats(struct otlp_sink *s, struct batcher_stats *out);

/* Counters of every sink of the process, live and retired, added up (the span metrics). */
void otlp_sinks_stats(struct batcher_stats *out);
/* Waits until retired sinks finished draining, at most max_ms. 0 or -ETIMEDOUT. At exit. */
int otlp_sinks_wait_retired(uint32_t max_ms);

#endif
