// SPDX-License-Identifier: Apache-2.0
/* Fuzzes the ClientHello server_name extension parser (spiffe_sni_ext_host_name, read before a
 * handshake may be held for the model). Input: the extension body as a peer sends it. An
 * accepted name is the exact bytes the extension names, NUL-free and terminated inside the
 * buffer; one that decodes as a SPIFFE SNI encodes back to the same name (case aside). */
#include "fuzz.h"

#include <errno.h>
#include <strings.h>

#include "tls/identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char name[SPIFFE_SNI_MAX + 2], again[SPIFFE_SNI_MAX + 2];
	struct spiffe_id id;
	int n = spiffe_sni_ext_host_name(data, size, name, sizeof(name));

	if (n < 0) {
		FUZZ_CHECK(n == -EINVAL || n == -ENOSPC);
		return 0;
	}
	FUZZ_CHECK(n > 0 && (size_t)n < sizeof(name) && strlen(name) == (size_t)n);
	FUZZ_CHECK(size >= 5 && (size_t)((data[0] << 8) | data[1]) + 2 == size && data[2] == 0);
	FUZZ_CHECK((size_t)((data[3] << 8) | data[4]) == (size_t)n && (size_t)n + 5 <= size);
	FUZZ_CHECK(memcmp(name, data + 5, (size_t)n) == 0);
	if (spiffe_sni_decode(name, SPIFFE_DEFAULT_TRUST_DOMAIN, &id) == 0) {
		FUZZ_CHECK(spiffe_sni_encode(&id, again, sizeof(again)) == n);
		FUZZ_CHECK(strcasecmp(again, name) == 0);
	}
	return 0;
}
