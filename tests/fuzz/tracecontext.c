// SPDX-License-Identifier: Apache-2.0
/* Fuzzes the W3C traceparent parser (tracecontext_parse): what it accepts must format back to
 * a version-00 header that parses to the same context. The same input as a tracestate: a
 * value found lies inside it and is a valid tracestate value. */
#include "fuzz.h"

#include "otlp/tracecontext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct span_context c, c2;
	char buf[TRACEPARENT_LEN + 1];
	const char *v = NULL;
	size_t vlen = 0;

	if (tracestate_get((const char *)data, size, "ambit", &v, &vlen) == 0) {
		FUZZ_CHECK(v > (const char *)data && v + vlen <= (const char *)data + size);
		FUZZ_CHECK(vlen >= 1 && vlen <= 256 && v[-1] == '=');
		FUZZ_CHECK(!memchr(v, ',', vlen) && !memchr(v, '=', vlen) && v[vlen - 1] != ' ');
	}

	memset(&c, 0xa5, sizeof(c));
	if (tracecontext_parse((const char *)data, size, &c) != 0)
		return 0;
	FUZZ_CHECK(c.remote);
	FUZZ_CHECK(tracecontext_format(&c, buf, sizeof(buf)) == TRACEPARENT_LEN);
	/* version 00 round-trips byte for byte up to trace-flags, of which only sampled is kept
	 * (the only flag version 00 defines, W3C Trace Context §3.2.2.5) */
	if (size == TRACEPARENT_LEN && data[0] == '0' && data[1] == '0')
		FUZZ_CHECK(memcmp(buf, data, TRACEPARENT_LEN - 2) == 0);
	memset(&c2, 0, sizeof(c2));
	FUZZ_CHECK(tracecontext_parse(buf, TRACEPARENT_LEN, &c2) == 0);
	FUZZ_CHECK(memcmp(c.trace_id, c2.trace_id, sizeof(c.trace_id)) == 0);
	FUZZ_CHECK(memcmp(c.span_id, c2.span_id, sizeof(c.span_id)) == 0);
	FUZZ_CHECK((c.flags & SPAN_FLAG_SAMPLED) == (c2.flags & SPAN_FLAG_SAMPLED));
	return 0;
}
