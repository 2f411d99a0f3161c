// SPDX-License-Identifier: Apache-2.0
/* Fuzzes what the span exporter reads back from a collector: the ExportTraceServiceResponse of
 * OTLP/HTTP and OTLP/gRPC (otlp_decode_response) and the google.rpc.Status of a gRPC failure's
 * grpc-status-details-bin for a RetryInfo (otlp_decode_retry_info), both in otlp/encode.h.
 * First byte: which (bit 0) and the message buffer size (the rest). Properties: the message
 * stays inside an exact-size buffer, NUL-terminated; a retry delay never exceeds the cap. */
#include "fuzz.h"

#include <errno.h>

#include "otlp/encode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *in = data + 1;
	size_t len = size - 1, msglen = 1 + (data[0] >> 1) % 96;

	if (data[0] & 1) {
		uint32_t delay = UINT32_MAX;
		int rc = otlp_decode_retry_info(in, len, 30000, &delay);
		FUZZ_CHECK(rc == 0 || rc == -ENOENT || rc == -EBADMSG);
		if (rc == 0)
			FUZZ_CHECK(delay <= 30000);
		return 0;
	}
	char *msg = malloc(msglen);	/* exact size: ASan sees an overrun */
	int64_t rejected = -1;

	FUZZ_CHECK(msg);
	int rc = otlp_decode_response(in, len, &rejected, msg, msglen);
	FUZZ_CHECK(rc == 0 || rc == -EBADMSG);
	FUZZ_CHECK(memchr(msg, '\0', msglen));
	if (rc == 0 && len == 0)
		FUZZ_CHECK(rejected == 0 && msg[0] == '\0');
	free(msg);
	return 0;
}
