// SPDX-License-Identifier: Apache-2.0
/* Head samplers of the OTel SDK spec ("Built-in samplers"). The ratio decision uses the
 * low 8 bytes of the trace ID, so every node decides the same for a trace. */
#include "otlp/sampler.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "common/util.h"

static const char *const kind_names[] = {
	[SAMPLER_ALWAYS_ON] = "always_on",
	[SAMPLER_ALWAYS_OFF] = "always_off",
	[SAMPLER_TRACEIDRATIO] = "traceidratio",
	[SAMPLER_PARENT_ALWAYS_ON] = "parentbased_always_on",
	[SAMPLER_PARENT_ALWAYS_OFF] = "parentbased_always_off",
	[SAMPLER_PARENT_TRACEIDRATIO] = "parentbased_traceidratio",
};

int sampler_kind_parse(const char *name, enum sampler_kind *out)
{
	for (size_t i = 0; name && i < ARRAY_SIZE(kind_names); i++) {
		if (strcmp(name, kind_names[i]) == 0) {
			*out = (enum sampler_kind)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *sampler_kind_str(enum sampler_kind kind)
{
	return (unsigned)kind < ARRAY_SIZE(kind_names) ? kind_names[kind] : "?";
}

int sampler_init(struct sampler *s, enum sampler_kind kind, double ratio)
{
	if ((unsigned)kind >= ARRAY_SIZE(kind_names) || isnan(ratio) || ratio < 0.0 || ratio > 1.0)
		return -EINVAL;
	s->kind = kind;
	s->ratio = ratio;
	/* The trace ID's low 63 bits are uniform; sample when they fall under ratio * 2^63.
	 * ratio 1 must take every ID, so it gets the full range (2^63 exceeds every value). */
	if (ratio >= 1.0)
		s->bound = 1ull << 63;
	else
		s->bound = (uint64_t)(ratio * 9223372036854775808.0);
	return 0;
}

static bool ratio_sample(const struct sampler *s, const uint8_t trace_id[SPAN_TRACE_ID_LEN])
{
	uint64_t v = 0;
	for (int i = 8; i < 16; i++)
		v = v << 8 | trace_id[i];
	return (v >> 1) < s->bound;
}

bool sampler_should_sample(const struct sampler *s, const struct span_context *parent,
			   const uint8_t trace_id[SPAN_TRACE_ID_LEN])
{
	bool has_parent = parent && span_context_valid(parent);

	switch (s->kind) {
	case SAMPLER_ALWAYS_ON:
		return true;
	case SAMPLER_ALWAYS_OFF:
		return false;
	case SAMPLER_TRACEIDRATIO:
		return ratio_sample(s, trace_id);
	case SAMPLER_PARENT_ALWAYS_ON:
	case SAMPLER_PARENT_ALWAYS_OFF:
	case SAMPLER_PARENT_TRACEIDRATIO:
		/* ParentBased: a parent's sampled flag decides, remote or local alike (the
		 * default delegates of the spec follow it both ways). */
		if (has_parent)
			return parent->flags & SPAN_FLAG_SAMPLED;
		if (s->kind == SAMPLER_PARENT_ALWAYS_ON)
			return true;
		if (s->kind == SAMPLER_PARENT_ALWAYS_OFF)
			return false;
		return ratio_sample(s, trace_id);
	}
	return false;
}
