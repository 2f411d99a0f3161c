/* SPDX-License-Identifier: Apache-2.0 */
/* Head sampling (OTel SDK "Sampling"): AlwaysOn/Off, TraceIdRatioBased decided from the
 * trace ID, and ParentBased wrapping any of them. Read-only after init: thread-safe. */
#ifndef AMBIT_OTLP_SAMPLER_H
#define AMBIT_OTLP_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "otlp/span.h"

/* The OTEL_TRACES_SAMPLER names. */
enum sampler_kind {
	SAMPLER_ALWAYS_ON,
	SAMPLER_ALWAYS_OFF,
	SAMPLER_TRACEIDRATIO,
	SAMPLER_PARENT_ALWAYS_ON,
	SAMPLER_PARENT_ALWAYS_OFF,
	SAMPLER_PARENT_TRACEIDRATIO,
};

struct sampler {
	enum sampler_kind kind;
	double ratio;		/* 0..1, for the ratio kinds */
	uint64_t bound;		/* sampled when (low 8 bytes of trace-id >> 1) < bound */
};

/* ratio in 0..1 (only used by the ratio kinds). 0 or -EINVAL (NaN, out of range, kind). */
int sampler_init(struct sampler *s, enum sampler_kind kind, double ratio);
/* "always_on", ... "parentbased_traceidratio". 0 or -EINVAL. */
int sampler_kind_parse(const char *name, enum sampler_kind *out);
const char *sampler_kind_str(enum sampler_kind kind);
/* The decision for a new span in trace_id whose parent is parent (NULL: a root span).
 * Parent-based kinds follow parent->flags & SPAN_FLAG_SAMPLED. */
bool sampler_should_sample(const struct sampler *s, const struct span_context *parent,
			   const uint8_t trace_id[SPAN_TRACE_ID_LEN]);

#endif
