// SPDX-License-Identifier: Apache-2.0
/* Unit tests of grpc/grpc.c: status names and HTTP mapping, Length-Prefixed-Message framing,
 * grpc-timeout parsing and formatting, grpc-message percent-encoding, base64 (common/util). */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "common/util.h"
#include "grpc/grpc.h"
#include "harness.h"

TEST(status_names)
{
	CHECK_EQ_STR(grpc_status_name(0), "OK");
	CHECK_EQ_STR(grpc_status_name(GRPC_STATUS_PERMISSION_DENIED), "PERMISSION_DENIED");
	CHECK_EQ_STR(grpc_status_name(16), "UNAUTHENTICATED");
	CHECK_EQ_STR(grpc_status_name(17), "UNKNOWN");
	CHECK_EQ_STR(grpc_status_name(-1), "UNKNOWN");
	CHECK_EQ_INT(grpc_status_from_http(401), GRPC_STATUS_UNAUTHENTICATED);
	CHECK_EQ_INT(grpc_status_from_http(503), GRPC_STATUS_UNAVAILABLE);
	CHECK_EQ_INT(grpc_status_from_http(418), GRPC_STATUS_UNKNOWN);
}

TEST(framing)
{
	uint8_t buf[16] = { 0 };
	const uint8_t *m;
	size_t mlen;

	grpc_frame_header(buf, 3);
	memcpy(buf + 5, "abc", 3);
	CHECK_EQ_INT(grpc_frame_parse(buf, 8, 100, &m, &mlen), 8);
	CHECK_EQ_INT(mlen, 3);
	CHECK(memcmp(m, "abc", 3) == 0);
	CHECK_EQ_INT(grpc_frame_parse(buf, 7, 100, &m, &mlen), 0);	/* incomplete */
	CHECK_EQ_INT(grpc_frame_parse(buf, 4, 100, &m, &mlen), 0);
	CHECK_EQ_INT(grpc_frame_parse(buf, 8, 2, &m, &mlen), -EMSGSIZE);
	grpc_frame_header(buf, 0xffffffffu);
	CHECK_EQ_INT(grpc_frame_parse(buf, 5, 1 << 20, &m, &mlen), -EMSGSIZE);
	buf[0] = 1;
	CHECK_EQ_INT(grpc_frame_parse(buf, 8, 100, &m, &mlen), -ENOTSUP);
	grpc_frame_header(buf, 0);
	CHECK_EQ_INT(grpc_frame_parse(buf, 5, 100, &m, &mlen), 5);
	CHECK_EQ_INT(mlen, 0);
}

TEST(timeout)
{
	uint64_t ms = 0;
	char b[GRPC_TIMEOUT_STR_MAX];

	CHECK_EQ_INT(grpc_timeout_parse("10S", 3, &ms), 0);
	CHECK_EQ_INT(ms, 10000);
	CHECK_EQ_INT(grpc_timeout_parse("1500u", 5, &ms), 0);
	CHECK_EQ_INT(ms, 2);	/* rounded up */
	CHECK_EQ_INT(grpc_timeout_parse("2H", 2, &ms), 0);
	CHECK_EQ_INT(ms, 7200000);
	CHECK_EQ_INT(grpc_timeout_parse("99999999H", 9, &ms), 0);
	CHECK_EQ_INT(grpc_timeout_parse("100000000m", 10, &ms), -EINVAL);	/* 9 digits */
	CHECK_EQ_INT(grpc_timeout_parse("S", 1, &ms), -EINVAL);
	CHECK_EQ_INT(grpc_timeout_parse("5x", 2, &ms), -EINVAL);
	CHECK_EQ_INT(grpc_timeout_parse("-5S", 3, &ms), -EINVAL);
	grpc_timeout_format(1500, b);
	CHECK_EQ_STR(b, "1500m");
	grpc_timeout_format(100000000ull, b);
	CHECK_EQ_STR(b, "100000S");
	grpc_timeout_format(UINT64_MAX, b);
	CHECK_EQ_STR(b, "99999999H");
}

TEST(message_encoding)
{
	char e[64], d[64];

	grpc_message_encode("denied: 100% \xc3\xa9\n", e, sizeof(e));
	CHECK_EQ_STR(e, "denied: 100%25 %C3%A9%0A");
	grpc_message_decode(e, strlen(e), d, sizeof(d));
	CHECK_EQ_STR(d, "denied: 100% \xc3\xa9\n");
	grpc_message_decode("50%", 3, d, sizeof(d));	/* stray % stays */
	CHECK_EQ_STR(d, "50%");
	grpc_message_decode("%zz%4", 5, d, sizeof(d));
	CHECK_EQ_STR(d, "%zz%4");
	grpc_message_encode("abcdef", e, 4);	/* truncated, terminated */
	CHECK_EQ_STR(e, "abc");
	grpc_message_encode("\x01\x02", e, 6);	/* never half an escape */
	CHECK_EQ_STR(e, "%01");
}

TEST(base64)
{
	uint8_t out[16];

	CHECK_EQ_INT(base64_decode("aGk=", 4, out, sizeof(out), false), 2);
	CHECK(memcmp(out, "hi", 2) == 0);
	CHECK_EQ_INT(base64_decode("aGk", 3, out, sizeof(out), false), 2);
	CHECK_EQ_INT(base64_decode("-_8", 3, out, sizeof(out), true), 2);
	CHECK_EQ_INT(out[0], 0xfb);
	CHECK_EQ_INT(out[1], 0xff);
	CHECK_EQ_INT(base64_decode("-_8", 3, out, sizeof(out), false), -1);
	CHECK_EQ_INT(base64_decode("+/8", 3, out, sizeof(out), true), -1);
	CHECK_EQ_INT(base64_decode("a", 1, out, sizeof(out), false), -1);
	CHECK_EQ_INT(base64_decode("aGVsbG8=", 8, out, 4, false), -1);	/* too long */
}

int main(void)
{
	return test_main("grpc");
}
