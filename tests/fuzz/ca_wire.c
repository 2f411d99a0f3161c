// SPDX-License-Identifier: Apache-2.0
/* Fuzzes the wire parsers around a certificate request, on both ends: the gRPC framing that
 * ambit-ca reads from every node and the agent from the CA (grpc_frame_parse, grpc/grpc.h), the
 * grpc-timeout and grpc-message headers, the "authorization: Bearer" value (ca_auth_bearer,
 * ca/auth.h), the base64url of the token's JWT segments (base64_decode, common/util.h; also
 * gRPC's -bin metadata) and the IstioCertificateResponse the agent decodes
 * (ca_msg_response_decode, ca/msg.h). First byte: which (mod 6); the second, for framing, the
 * size limit, for decoding the output size (and base64's alphabet). Properties:
 * frames stay inside the input and under the limit; a timeout formats and parses back within
 * its unit; decoded messages stay inside exact-size buffers and encode/decode round-trips; a
 * bearer token lies inside the value, trimmed; base64 decodes 6 bits a character into an
 * exact-size buffer or refuses; a decoded chain is NUL-terminated at its length and encodes
 * again. */
#include "fuzz.h"

#include <errno.h>
#include <sys/types.h>

#include "ca/auth.h"
#include "ca/msg.h"
#include "common/util.h"
#include "grpc/grpc.h"

static void frames(const uint8_t *buf, size_t len, size_t max)
{
	size_t off = 0;

	for (;;) {
		const uint8_t *msg = NULL;
		size_t mlen = 0;
		ssize_t n = grpc_frame_parse(buf + off, len - off, max, &msg, &mlen);

		if (n <= 0) {
			FUZZ_CHECK(n == 0 || n == -ENOTSUP || n == -EMSGSIZE);
			return;
		}
		FUZZ_CHECK((size_t)n == GRPC_FRAME_HDR + mlen && (size_t)n <= len - off);
		FUZZ_CHECK(msg == buf + off + GRPC_FRAME_HDR && mlen <= max);
		off += (size_t)n;
	}
}

static void timeout(const char *v, size_t len)
{
	char buf[GRPC_TIMEOUT_STR_MAX];
	uint64_t ms, back;

	if (grpc_timeout_parse(v, len, &ms))
		return;
	FUZZ_CHECK(ms <= 99999999ull * 3600000ull);
	grpc_timeout_format(ms, buf);
	FUZZ_CHECK(grpc_timeout_parse(buf, strlen(buf), &back) == 0);
	/* exact in milliseconds when they fit 8 digits, else rounded down to S or H */
	FUZZ_CHECK(back <= ms && ms - back < (ms <= 99999999u ? 1 : ms / 1000 <= 99999999u ?
					       1000 : 3600000));
}

static void message(const char *in, size_t len, size_t outlen)
{
	char *out = malloc(outlen);	/* exact size: ASan sees an overrun */
	size_t n = strnlen(in, len), enc_len = 3 * n + 1;
	char *enc = malloc(enc_len), *dec = malloc(n + 1);

	FUZZ_CHECK(out && enc && dec);
	grpc_message_decode(in, len, out, outlen);
	FUZZ_CHECK(memchr(out, '\0', outlen));
	/* encoding never loses what fits, and decodes back to the same bytes */
	grpc_message_encode(in, enc, enc_len);
	for (const char *p = enc; *p; p++)
		FUZZ_CHECK(*p >= 0x20 && *p <= 0x7e);
	grpc_message_decode(enc, strlen(enc), dec, n + 1);
	FUZZ_CHECK(strlen(dec) == n && memcmp(dec, in, n) == 0);
	free(dec);
	free(enc);
	free(out);
}

static void bearer(const char *v)
{
	const char *tok;
	size_t len;

	if (ca_auth_bearer(v, &tok, &len))
		return;
	FUZZ_CHECK(len > 0 && tok >= v + 7 && tok + len <= v + strlen(v));
	FUZZ_CHECK(tok[0] != ' ' && tok[len - 1] != ' ');
}

static void base64(const char *in, size_t len, size_t outlen, bool url)
{
	uint8_t *out = malloc(outlen ? outlen : 1);	/* exact size: ASan sees an overrun */
	size_t chars = len;
	ssize_t n;

	FUZZ_CHECK(out);
	n = base64_decode(in, len, out, outlen, url);
	while (chars && in[chars - 1] == '=')
		chars--;
	FUZZ_CHECK(n == -1 || ((size_t)n <= outlen && (size_t)n == chars * 6 / 8));
	free(out);
}

static void response(const uint8_t *buf, size_t len)
{
	char *pem = NULL;
	size_t pem_len = 0, ncerts = 0, outlen = 0;
	uint8_t *out = NULL;
	int rc = ca_msg_response_decode(buf, len, &pem, &pem_len, &ncerts);

	if (rc) {
		FUZZ_CHECK(rc == -EBADMSG || rc == -EMSGSIZE || rc == -ENOMEM);
		return;
	}
	FUZZ_CHECK(pem && ncerts >= 1 && strlen(pem) <= pem_len && pem[pem_len] == '\0');
	rc = ca_msg_response_encode(pem, pem_len, &out, &outlen);
	FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
	free(out);
	free(pem);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	const uint8_t *in = data + 2;
	size_t len = size - 2;
	char *s = fuzz_str(in, len);

	switch (data[0] % 6) {
	case 0: frames(in, len, (size_t)data[1] * 64); break;
	case 1: timeout(s, len); break;
	case 2: message(s, len, 1 + data[1] % 64); break;
	case 3: bearer(s); break;
	case 4: response(in, len); break;
	case 5: base64(s, len, data[1] >> 1, data[1] & 1); break;
	}
	free(s);
	return 0;
}
