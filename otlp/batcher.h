/* SPDX-License-Identifier: Apache-2.0 */
/* The batch span processor (OTel SDK "Batching processor"), off the data path: a bounded
 * queue that never blocks submitters, one thread exporting batches with retry and backoff. */
#ifndef AMBIT_OTLP_BATCHER_H
#define AMBIT_OTLP_BATCHER_H

#include <stdint.h>

#include "otlp/exporter.h"
#include "otlp/span.h"

struct batcher_opts {
	uint32_t max_queue;		/* spans held (queued + being exported); default 2048 */
	uint32_t max_batch;		/* spans per export request; default 512 */
	uint32_t schedule_delay_ms;	/* export at least this often; default 5000 */
	uint32_t export_timeout_ms;	/* one export attempt; default 30000 */
	uint32_t backoff_initial_ms;	/* first retry delay; default 1000 */
	uint32_t backoff_max_ms;	/* retry delay cap; default 5000 */
	uint32_t retry_max_elapsed_ms;	/* give a batch up after retrying this long; default 300000 */
};

/* Counters since batcher_new (read with relaxed atomics; exact once the thread is idle). */
struct batcher_stats {
	uint64_t exported;	/* accepted by the collector (ambit_spans_exported_total) */
	uint64_t dropped;	/* refused at submit, queue full (ambit_spans_dropped_total) */
	uint64_t failed;	/* given up: non-retryable, retries exhausted, or shutdown */
	uint64_t rejected;	/* of exported: reported rejected by a partial success */
	uint64_t export_requests;	/* export attempts, retries included */
	uint64_t export_errors;		/* failed attempts */
	uint32_t queue_len;	/* spans held now */
};

void batcher_opts_default(struct batcher_opts *o);

struct batcher;

/* Starts the export thread. Takes ownership of ex (freed by batcher_free, also on failure).
 * Zero fields of opts take defaults; opts NULL = all defaults. NULL + errno. */
struct batcher *batcher_new(const struct batcher_opts *opts, struct otlp_exporter *ex);
/* Queues a finished span (takes a reference of its own). Never blocks on I/O: a mutex and
 * a signal. 0, or -ENOSPC when the queue is full: the span is marked DROPPED and counted. */
int batcher_submit(struct batcher *b, struct span *s);
/* Asks for an export of everything queued now and waits until the queue is empty or
 * timeout_ms passed. 0 or -ETIMEDOUT. Not from the batcher thread. */
int batcher_flush(struct batcher *b, uint32_t timeout_ms);
void batcher_stats(struct batcher *b, struct batcher_stats *out);
/* to += st, field by field. */
void batcher_stats_add(struct batcher_stats *to, const struct batcher_stats *st);
/* Shutdown: exports what is queued (retrying) until deadline_ms from now, counts the rest
 * as failed, joins the thread, frees the exporter and the batcher. NULL ok. */
void batcher_free(struct batcher *b, uint32_t deadline_ms);
/* The same, with the counters as they stood once the thread ended into final (NULL ok). */
void batcher_free_stats(struct batcher *b, uint32_t deadline_ms, struct batcher_stats *final);

#endif
