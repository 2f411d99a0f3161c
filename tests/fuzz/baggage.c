// SPDX-License-Identifier: Apache-2.0
/* Fuzzes the W3C baggage parsers (baggage_parse, and baggage_parse_env when the first byte is
 * 'E'): what parses must format (within the limits) to a header that parses to the same set. */
#include "fuzz.h"

#include <errno.h>

#include "otlp/tracecontext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct baggage b = { 0 }, b2 = { 0 };
	bool env = size && data[0] == 'E';
	static char buf[BAGGAGE_MAX_BYTES + 1];
	int rc, n;

	if (env) {
		data++;
		size--;
	}
	rc = env ? baggage_parse_env((const char *)data, size, &b)
		 : baggage_parse((const char *)data, size, &b);
	if (rc) {
		FUZZ_CHECK(rc == -EINVAL || rc == -E2BIG || rc == -ENOMEM);
		FUZZ_CHECK(b.n == 0);
		goto out;
	}
	FUZZ_CHECK(b.n <= BAGGAGE_MAX_MEMBERS);
	for (size_t i = 0; i < b.n; i++)
		FUZZ_CHECK(baggage_get(&b, b.m[i].key) == b.m[i].value);
	n = baggage_format(&b, buf, sizeof(buf));
	if (n == -E2BIG || n == -ENOSPC)	/* percent-encoding can grow past the limit */
		goto out;
	FUZZ_CHECK(n >= 0 && (size_t)n == strlen(buf));
	FUZZ_CHECK(baggage_parse(buf, (size_t)n, &b2) == 0);
	FUZZ_CHECK(b2.n == b.n);
	for (size_t i = 0; i < b.n; i++) {
		const char *v = baggage_get(&b2, b.m[i].key);
		FUZZ_CHECK(v && strcmp(v, b.m[i].value) == 0);
	}
out:
	baggage_fini(&b2);
	baggage_fini(&b);
	return 0;
}
