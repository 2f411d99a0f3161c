// SPDX-License-Identifier: Apache-2.0
/* Unit tests of ca/msg.c: IstioCertificateRequest/Response encode and decode (metadata
 * ImpersonatedIdentity, one cert_chain entry per certificate), and refusals of bad bytes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ca/msg.h"
#include "harness.h"

TEST(request_roundtrip)
{
	struct ca_request r;
	uint8_t *buf = NULL;
	size_t len = 0;

	REQUIRE(ca_msg_request_encode("CSR", 3600, "spiffe://cluster.local/ns/a/sa/b", &buf, &len) == 0);
	CHECK_EQ_INT(ca_msg_request_decode(buf, len, &r, NULL, 0), 0);
	CHECK_EQ_STR(r.csr, "CSR");
	CHECK_EQ_INT(r.csr_len, 3);
	CHECK_EQ_INT(r.validity_s, 3600);
	CHECK_EQ_STR(r.impersonated, "spiffe://cluster.local/ns/a/sa/b");
	ca_request_fini(&r);
	free(buf);
	REQUIRE(ca_msg_request_encode("CSR", 0, NULL, &buf, &len) == 0);
	CHECK_EQ_INT(ca_msg_request_decode(buf, len, &r, NULL, 0), 0);
	CHECK(r.impersonated == NULL);
	ca_request_fini(&r);
	free(buf);
}

TEST(request_refusals)
{
	struct ca_request r;
	char why[100];
	/* field 4 (metadata): Struct{fields: {key "ImpersonatedIdentity", value {bool_value: true}}} */
	static const uint8_t not_string[] = {
		0x22, 0x1c, 0x0a, 0x1a, 0x0a, 0x14, 'I', 'm', 'p', 'e', 'r', 's', 'o', 'n', 'a', 't',
		'e', 'd', 'I', 'd', 'e', 'n', 't', 'i', 't', 'y', 0x12, 0x02, 0x20, 0x01,
	};
	static const uint8_t truncated[] = { 0x0a, 0x10, 'a' };

	CHECK_EQ_INT(ca_msg_request_decode(not_string, sizeof(not_string), &r, why, sizeof(why)), -EBADMSG);
	CHECK(strstr(why, "not a string"));
	CHECK_EQ_INT(ca_msg_request_decode(truncated, sizeof(truncated), &r, why, sizeof(why)), -EBADMSG);
	CHECK_EQ_INT(ca_msg_request_decode(truncated, CA_MSG_MAX + 1, &r, why, sizeof(why)), -EMSGSIZE);
	/* empty message: no csr */
	CHECK_EQ_INT(ca_msg_request_decode((const uint8_t *)"", 0, &r, why, sizeof(why)), 0);
	CHECK_EQ_STR(r.csr, "");
	ca_request_fini(&r);
}

TEST(response_split_and_join)
{
	const char *chain = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"
			    "-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
	uint8_t *buf = NULL;
	char *pem = NULL;
	size_t len = 0, plen = 0, n = 0;

	REQUIRE(ca_msg_response_encode(chain, strlen(chain), &buf, &len) == 0);
	CHECK_EQ_INT(ca_msg_response_decode(buf, len, &pem, &plen, &n), 0);
	CHECK_EQ_INT(n, 2);
	CHECK_EQ_STR(pem, chain);
	CHECK_EQ_INT(plen, strlen(chain));
	free(pem);
	free(buf);
	CHECK_EQ_INT(ca_msg_response_encode("no pem", 6, &buf, &len), -EINVAL);
	CHECK_EQ_INT(ca_msg_response_decode((const uint8_t *)"", 0, &pem, &plen, &n), -EBADMSG);
}

int main(void)
{
	return test_main("ca_msg");
}
