// SPDX-License-Identifier: Apache-2.0
/* Fuzzes the admin/metrics server's query-string decoder (httpd_query_get). Input: one byte of
 * output size, then "KEY\0QUERY". The result must stay inside the buffer, NUL-terminated. */
#include "fuzz.h"

#include <errno.h>

#include "agent/httpd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t outlen = 1 + data[0] % 64;	/* callers pass a real buffer (sizeof) */
	char *s = fuzz_str(data + 1, size - 1);
	size_t kl = strlen(s);
	const char *key = s, *query = kl < size - 1 ? s + kl + 1 : "";
	char *out = malloc(outlen);	/* exact size: ASan sees any overrun */

	FUZZ_CHECK(out);
	int rc = httpd_query_get(query, key, out, outlen);
	FUZZ_CHECK(rc == 0 || rc == -ENOENT);
	if (rc == 0)
		FUZZ_CHECK(memchr(out, '\0', outlen));
	free(out);
	free(s);
	return 0;
}
