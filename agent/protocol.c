// SPDX-License-Identifier: Apache-2.0
/* Istio's protocol selection for a service port (app_protocol, then the port name's prefix) and
 * recognition of the HTTP/2 connection preface. */
#include "agent/protocol.h"
#include "common/util.h"

#include <string.h>
#include <strings.h>

static const char *const names[] = {
	[PROTOCOL_UNKNOWN] = "unknown", [PROTOCOL_HTTP] = "http", [PROTOCOL_HTTP2] = "http2",
	[PROTOCOL_HTTPS] = "https", [PROTOCOL_GRPC] = "grpc", [PROTOCOL_GRPC_WEB] = "grpc-web",
	[PROTOCOL_TCP] = "tcp", [PROTOCOL_TLS] = "tls", [PROTOCOL_MONGO] = "mongo",
	[PROTOCOL_MYSQL] = "mysql", [PROTOCOL_REDIS] = "redis", [PROTOCOL_UDP] = "udp",
};

/* The first n bytes of s as a protocol name (n = strlen for all of it). */
static enum protocol parse_n(const char *s, size_t n)
{
	for (size_t i = 1; s && i < ARRAY_SIZE(names); i++)
		if (strlen(names[i]) == n && strncasecmp(s, names[i], n) == 0)
			return (enum protocol)i;
	return PROTOCOL_UNKNOWN;
}

enum protocol protocol_parse(const char *s)
{
	return s ? parse_n(s, strlen(s)) : PROTOCOL_UNKNOWN;
}

enum protocol protocol_of_port(const char *name, const char *app_protocol)
{
	enum protocol p;

	if (app_protocol && *app_protocol) {
		if (strcasecmp(app_protocol, "kubernetes.io/h2c") == 0)
			return PROTOCOL_HTTP2;
		if ((p = protocol_parse(app_protocol)) != PROTOCOL_UNKNOWN)
			return p;
	}
	if (!name || !*name)
		return PROTOCOL_UNKNOWN;
	/* "grpc-web" holds the separator itself: a plain prefix, checked first (as istiod) */
	if (strncasecmp(name, "grpc-web", 8) == 0)
		return PROTOCOL_GRPC_WEB;
	const char *dash = strchr(name, '-');
	return parse_n(name, dash ? (size_t)(dash - name) : strlen(name));
}

const char *protocol_str(enum protocol p)
{
	return (unsigned)p < ARRAY_SIZE(names) ? names[p] : "unknown";
}

bool protocol_is_http(enum protocol p)
{
	return p == PROTOCOL_UNKNOWN || p == PROTOCOL_HTTP || p == PROTOCOL_HTTP2 ||
	       p == PROTOCOL_GRPC || p == PROTOCOL_GRPC_WEB;
}

bool protocol_is_h2(enum protocol p)
{
	return p == PROTOCOL_HTTP2 || p == PROTOCOL_GRPC;
}

enum protocol_sniff protocol_sniff_h2(const uint8_t *p, size_t n)
{
	static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	size_t len = sizeof(preface) - 1;

	if (n > len)
		n = len;
	if (n && memcmp(p, preface, n) != 0)
		return PROTOCOL_SNIFF_OTHER;
	return n == len ? PROTOCOL_SNIFF_H2 : PROTOCOL_SNIFF_MORE;
}
