/* SPDX-License-Identifier: Apache-2.0 */
/* gRPC over HTTP/2 (grpc/doc/PROTOCOL-HTTP2.md), the parts both ends share: status codes and
 * their names, the Length-Prefixed-Message framing, grpc-timeout and grpc-message encoding.
 * grpc/client.h and grpc/server.h carry the calls over nghttp2. */
#ifndef AMBIT_GRPC_GRPC_H
#define AMBIT_GRPC_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Status codes (grpc/doc/statuscodes.md). */
enum grpc_status {
	GRPC_STATUS_OK = 0,
	GRPC_STATUS_CANCELLED = 1,
	GRPC_STATUS_UNKNOWN = 2,
	GRPC_STATUS_INVALID_ARGUMENT = 3,
	GRPC_STATUS_DEADLINE_EXCEEDED = 4,
	GRPC_STATUS_NOT_FOUND = 5,
	GRPC_STATUS_ALREADY_EXISTS = 6,
	GRPC_STATUS_PERMISSION_DENIED = 7,
	GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
	GRPC_STATUS_FAILED_PRECONDITION = 9,
	GRPC_STATUS_ABORTED = 10,
	GRPC_STATUS_OUT_OF_RANGE = 11,
	GRPC_STATUS_UNIMPLEMENTED = 12,
	GRPC_STATUS_INTERNAL = 13,
	GRPC_STATUS_UNAVAILABLE = 14,
	GRPC_STATUS_DATA_LOSS = 15,
	GRPC_STATUS_UNAUTHENTICATED = 16,
};
#define GRPC_STATUS_MAX 16

/* "OK", "PERMISSION_DENIED", ...; "UNKNOWN" for codes outside 0..16. Static. */
const char *grpc_status_name(int code);
/* gRPC's mapping of a non-200 HTTP status (doc/http-grpc-status-mapping.md). */
int grpc_status_from_http(int http_status);

/* Length-Prefixed-Message: 1 byte compressed flag, 4 bytes big-endian length. */
#define GRPC_FRAME_HDR 5
void grpc_frame_header(uint8_t hdr[GRPC_FRAME_HDR], uint32_t len);
/* Parses one message at buf[0, len): > 0 bytes consumed (*msg, *msglen set), 0 incomplete,
 * -EMSGSIZE when its length is over max, -ENOTSUP when compressed (we never negotiate a
 * grpc-encoding, so a compressed message is a protocol error). */
ssize_t grpc_frame_parse(const uint8_t *buf, size_t len, size_t max, const uint8_t **msg,
			 size_t *msglen);

/* grpc-timeout: "TimeoutValue TimeoutUnit", at most 8 digits, units H M S m u n.
 * Parse: 0 and *ms (rounded up, saturating) or -EINVAL. Format: ms into buf, exact when it
 * fits in 8 digits of milliseconds, else in coarser units. */
#define GRPC_TIMEOUT_STR_MAX 16
int grpc_timeout_parse(const char *v, size_t len, uint64_t *ms);
void grpc_timeout_format(uint64_t ms, char buf[GRPC_TIMEOUT_STR_MAX]);

/* grpc-message is percent-encoded UTF-8 (bytes outside 0x20..0x7e and '%'). Encode: into out
 * (always NUL-terminated, truncated on a character boundary of the encoding); returns out.
 * Decode: what is well formed is decoded, a stray '%' stays; NUL-terminated. */
char *grpc_message_encode(const char *in, char *out, size_t outlen);
void grpc_message_decode(const char *in, size_t len, char *out, size_t outlen);

#endif
