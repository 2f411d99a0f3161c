// SPDX-License-Identifier: Apache-2.0
/* Fuzzes ambit-ca's request parsing: tls_csr_parse (tls/csr.h) on the input as a PEM CSR, and
 * ca_msg_request_decode (ca/msg.h) on it as an IstioCertificateRequest whose csr field then
 * goes through tls_csr_parse too, as the server does. Every refusal says why; an accepted CSR
 * yields a SPIFFE ID that formats and parses back equal. */
#include "fuzz.h"

#include "ca/msg.h"
#include "tls/csr.h"
#include "tls/identity.h"

static void parse_csr(const void *data, size_t size)
{
	struct tls_csr_req *req = NULL;
	struct spiffe_id id, id2;
	char why[TLS_CSR_WHY_MAX], buf[SPIFFE_ID_STR_MAX];
	int rc = tls_csr_parse(data, size, &req, &id, why);

	if (rc == 0) {
		FUZZ_CHECK(req);
		FUZZ_CHECK(spiffe_id_format(&id, buf, sizeof(buf)) > 0);
		FUZZ_CHECK(spiffe_id_parse(buf, &id2, NULL) == 0 && spiffe_id_equal(&id, &id2));
	} else {
		FUZZ_CHECK(!req && why[0]);
	}
	tls_csr_req_free(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ca_request r;
	char why[160];

	parse_csr(data, size);
	if (ca_msg_request_decode(data, size, &r, why, sizeof(why)) == 0) {
		FUZZ_CHECK(r.csr && strlen(r.csr) == r.csr_len);
		parse_csr(r.csr, r.csr_len);
		ca_request_fini(&r);
	}
	return 0;
}
