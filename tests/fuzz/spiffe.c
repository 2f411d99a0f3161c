// SPDX-License-Identifier: Apache-2.0
/* Fuzzes SPIFFE ID parsing (spiffe_id_parse) and SNI decoding (spiffe_sni_decode). Input:
 * "A\0B": A is parsed as an ID and decoded as an SNI for trust domain B (default when absent).
 * Accepted values must format/encode back to something that parses to the same identity. */
#include "fuzz.h"

#include "tls/identity.h"

static void check_same(const struct spiffe_id *a, const struct spiffe_id *b)
{
	FUZZ_CHECK(spiffe_id_equal(a, b) && spiffe_id_cmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_str(data, size);
	size_t l = strlen(s);
	const char *td = l < size ? s + l + 1 : SPIFFE_DEFAULT_TRUST_DOMAIN;
	struct spiffe_id id, id2;
	char buf[SPIFFE_ID_STR_MAX], sni[SPIFFE_SNI_MAX];
	const char *why = NULL;
	int n;

	if (spiffe_id_parse(s, &id, &why) == 0) {
		n = spiffe_id_format(&id, buf, sizeof(buf));
		FUZZ_CHECK(n >= 0 && (size_t)n == strlen(buf));
		FUZZ_CHECK(spiffe_id_parse(buf, &id2, &why) == 0);
		check_same(&id, &id2);
		n = spiffe_sni_encode(&id, sni, sizeof(sni));
		if (n >= 0) {
			FUZZ_CHECK(spiffe_sni_decode(sni, id.td, &id2) == 0);
			check_same(&id, &id2);
		}
	} else {
		FUZZ_CHECK(why && *why);
	}
	if (spiffe_sni_decode(s, td, &id) == 0) {
		/* a decoded identity is a valid one */
		n = spiffe_id_format(&id, buf, sizeof(buf));
		FUZZ_CHECK(n >= 0);
		FUZZ_CHECK(spiffe_id_parse(buf, &id2, &why) == 0);
		check_same(&id, &id2);
	}
	free(s);
	return 0;
}
