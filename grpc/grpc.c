// SPDX-License-Identifier: Apache-2.0
/* gRPC protocol pieces shared by the client and the server (PROTOCOL-HTTP2.md). */
#include "grpc/grpc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

static const char *const status_names[GRPC_STATUS_MAX + 1] = {
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
};

const char *grpc_status_name(int code)
{
	return code >= 0 && code <= GRPC_STATUS_MAX ? status_names[code] : "UNKNOWN";
}

int grpc_status_from_http(int status)
{
	switch (status) {
	case 400: return GRPC_STATUS_INTERNAL;
	case 401: return GRPC_STATUS_UNAUTHENTICATED;
	case 403: return GRPC_STATUS_PERMISSION_DENIED;
	case 404: return GRPC_STATUS_UNIMPLEMENTED;
	case 429: case 502: case 503: case 504: return GRPC_STATUS_UNAVAILABLE;
	}
	return GRPC_STATUS_UNKNOWN;
}

void grpc_frame_header(uint8_t hdr[GRPC_FRAME_HDR], uint32_t len)
{
	hdr[0] = 0;
	hdr[1] = (uint8_t)(len >> 24);
	hdr[2] = (uint8_t)(len >> 16);
	hdr[3] = (uint8_t)(len >> 8);
	hdr[4] = (uint8_t)len;
}

ssize_t grpc_frame_parse(const uint8_t *buf, size_t len, size_t max, const uint8_t **msg,
			 size_t *msglen)
{
	size_t m;

	if (len < GRPC_FRAME_HDR)
		return 0;
	if (buf[0] != 0)
		return -ENOTSUP;
	m = (size_t)buf[1] << 24 | (size_t)buf[2] << 16 | (size_t)buf[3] << 8 | buf[4];
	if (m > max)
		return -EMSGSIZE;
	if (len - GRPC_FRAME_HDR < m)
		return 0;
	*msg = buf + GRPC_FRAME_HDR;
	*msglen = m;
	return (ssize_t)(GRPC_FRAME_HDR + m);
}

int grpc_timeout_parse(const char *v, size_t len, uint64_t *ms)
{
	uint64_t n = 0, mul_num, div;

	if (len < 2 || len > 9)
		return -EINVAL;
	for (size_t i = 0; i + 1 < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -EINVAL;
		n = n * 10 + (uint64_t)(v[i] - '0');
	}
	switch (v[len - 1]) {
	case 'H': mul_num = 3600000; div = 1; break;
	case 'M': mul_num = 60000; div = 1; break;
	case 'S': mul_num = 1000; div = 1; break;
	case 'm': mul_num = 1; div = 1; break;
	case 'u': mul_num = 1; div = 1000; break;
	case 'n': mul_num = 1; div = 1000000; break;
	default: return -EINVAL;
	}
	/* 8 digits of hours fit in 64 bits of milliseconds */
	*ms = (n * mul_num + div - 1) / div;
	return 0;
}

void grpc_timeout_format(uint64_t ms, char buf[GRPC_TIMEOUT_STR_MAX])
{
	if (ms <= 99999999u)
		snprintf(buf, GRPC_TIMEOUT_STR_MAX, "%llum", (unsigned long long)ms);
	else if (ms / 1000 <= 99999999u)
		snprintf(buf, GRPC_TIMEOUT_STR_MAX, "%lluS", (unsigned long long)(ms / 1000));
	else if (ms / 3600000 <= 99999999u)
		snprintf(buf, GRPC_TIMEOUT_STR_MAX, "%lluH", (unsigned long long)(ms / 3600000));
	else
		snprintf(buf, GRPC_TIMEOUT_STR_MAX, "99999999H");
}

char *grpc_message_encode(const char *in, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	if (!outlen)
		return out;
	for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
		if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
			if (o + 1 >= outlen)
				break;
			out[o++] = (char)*p;
		} else {
			if (o + 3 >= outlen)
				break;
			out[o++] = '%';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		}
	}
	out[o] = '\0';
	return out;
}

void grpc_message_decode(const char *in, size_t len, char *out, size_t outlen)
{
	size_t o = 0;

	if (!outlen)
		return;
	for (size_t i = 0; i < len && o + 1 < outlen; i++) {
		uint8_t b;
		if (in[i] == '%' && i + 2 < len && hex_decode(in + i + 1, &b, 1) == 0) {
			out[o++] = (char)b;
			i += 2;
		} else {
			out[o++] = in[i];
		}
	}
	out[o] = '\0';
}
