// SPDX-License-Identifier: Apache-2.0
/* Fuzzes the OTEL_* environment parsers: OTEL_RESOURCE_ATTRIBUTES (otlp_resource_parse_env),
 * OTEL_EXPORTER_OTLP_HEADERS (otlp_config_parse_headers) and endpoint URLs (otlp_url_parse).
 * The first byte picks the parser; the rest, up to a NUL, is the variable's value. */
#include "fuzz.h"

#include <errno.h>

#include "otlp/config.h"
#include "otlp/resource.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	char *s;
	int rc;

	if (!size)
		return 0;
	s = fuzz_str(data + 1, size - 1);
	err[0] = '\0';
	switch (data[0] % 3) {
	case 0: {
		struct otlp_attrs a = { 0 };
		rc = otlp_resource_parse_env(s, &a, err, sizeof(err));
		FUZZ_CHECK(rc == 0 || err[0]);
		otlp_attrs_fini(&a);
		break;
	}
	case 1: {
		struct otlp_config c;
		otlp_config_init(&c);
		rc = otlp_config_parse_headers(&c, s, err, sizeof(err));
		FUZZ_CHECK(rc == 0 || err[0]);
		FUZZ_CHECK(c.nheaders <= OTLP_MAX_HEADERS);
		otlp_config_fini(&c);
		break;
	}
	default: {
		struct otlp_url u;
		rc = otlp_url_parse(s, &u, err, sizeof(err));
		FUZZ_CHECK(rc == 0 || err[0]);
		if (rc == 0) {
			FUZZ_CHECK(memchr(u.host, '\0', sizeof(u.host)));
			FUZZ_CHECK(memchr(u.path, '\0', sizeof(u.path)));
			FUZZ_CHECK(strchr("/?", u.path[0]));	/* "", "/...", "?..." */
		}
		break;
	}
	}
	free(s);
	return 0;
}
