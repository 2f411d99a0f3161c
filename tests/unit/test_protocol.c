// SPDX-License-Identifier: Apache-2.0
/* Unit tests of Istio's protocol selection (agent/protocol.c): app_protocol, then the port
 * name's prefix, and the HTTP/2 preface. */
#include "harness.h"
#include "agent/protocol.h"

#include <string.h>

static const struct {
	const char *name, *app_protocol;
	enum protocol want;
} ports[] = {
	/* the port name: <protocol>[-<suffix>], case-insensitive */
	{ "http", NULL, PROTOCOL_HTTP },
	{ "http-web", NULL, PROTOCOL_HTTP },
	{ "HTTP-Web", NULL, PROTOCOL_HTTP },
	{ "http2", NULL, PROTOCOL_HTTP2 },
	{ "http2-api", NULL, PROTOCOL_HTTP2 },
	{ "https", NULL, PROTOCOL_HTTPS },
	{ "grpc", NULL, PROTOCOL_GRPC },
	{ "grpc-api", NULL, PROTOCOL_GRPC },
	{ "grpc-web", NULL, PROTOCOL_GRPC_WEB },
	{ "grpc-web-api", NULL, PROTOCOL_GRPC_WEB },
	{ "grpc-webx", NULL, PROTOCOL_GRPC_WEB },	/* istiod: a plain prefix */
	{ "tcp", NULL, PROTOCOL_TCP },
	{ "tcp-db", NULL, PROTOCOL_TCP },
	{ "tls-x", NULL, PROTOCOL_TLS },
	{ "mongo", NULL, PROTOCOL_MONGO },
	{ "mysql-main", NULL, PROTOCOL_MYSQL },
	{ "redis", NULL, PROTOCOL_REDIS },
	{ "udp-dns", NULL, PROTOCOL_UDP },
	/* no protocol in the name: detected */
	{ "web", NULL, PROTOCOL_UNKNOWN },
	{ "httpx", NULL, PROTOCOL_UNKNOWN },
	{ "xhttp", NULL, PROTOCOL_UNKNOWN },
	{ "-http", NULL, PROTOCOL_UNKNOWN },
	{ "", NULL, PROTOCOL_UNKNOWN },
	{ NULL, NULL, PROTOCOL_UNKNOWN },
	/* app_protocol first */
	{ "tcp", "http", PROTOCOL_HTTP },
	{ "http", "kubernetes.io/h2c", PROTOCOL_HTTP2 },
	{ NULL, "kubernetes.io/h2c", PROTOCOL_HTTP2 },
	{ NULL, "GRPC", PROTOCOL_GRPC },
	{ "http", "grpc-web", PROTOCOL_GRPC_WEB },
	{ "grpc", "tcp", PROTOCOL_TCP },
	/* an app_protocol Istio does not know: the name decides */
	{ "grpc", "example.com/custom", PROTOCOL_GRPC },
	{ "web", "example.com/custom", PROTOCOL_UNKNOWN },
	{ "http2", "", PROTOCOL_HTTP2 },
	{ "grpc", "http-x", PROTOCOL_GRPC },	/* app_protocol is a whole name, no prefix */
};

TEST(selection_table)
{
	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		enum protocol got = protocol_of_port(ports[i].name, ports[i].app_protocol);
		if (got != ports[i].want)
			fprintf(stderr, "  name=%s app_protocol=%s: got %s, want %s\n",
				ports[i].name ? ports[i].name : "(null)",
				ports[i].app_protocol ? ports[i].app_protocol : "(null)",
				protocol_str(got), protocol_str(ports[i].want));
		CHECK(got == ports[i].want);
	}
}

TEST(names_and_classes)
{
	for (int p = PROTOCOL_UNKNOWN; p <= PROTOCOL_UDP; p++) {
		CHECK(strcmp(protocol_str((enum protocol)p), "?") != 0);
		if (p != PROTOCOL_UNKNOWN)
			CHECK_EQ_INT(protocol_parse(protocol_str((enum protocol)p)), p);
	}
	CHECK_EQ_STR(protocol_str((enum protocol)99), "unknown");
	CHECK_EQ_INT(protocol_parse(NULL), PROTOCOL_UNKNOWN);
	CHECK_EQ_INT(protocol_parse("unknown"), PROTOCOL_UNKNOWN);
	CHECK(protocol_is_http(PROTOCOL_UNKNOWN));
	CHECK(protocol_is_http(PROTOCOL_GRPC));
	CHECK(!protocol_is_http(PROTOCOL_HTTPS));
	CHECK(!protocol_is_http(PROTOCOL_TCP));
	CHECK(!protocol_is_http(PROTOCOL_REDIS));
	CHECK(protocol_is_h2(PROTOCOL_HTTP2));
	CHECK(protocol_is_h2(PROTOCOL_GRPC));
	CHECK(!protocol_is_h2(PROTOCOL_HTTP));
	CHECK(!protocol_is_h2(PROTOCOL_GRPC_WEB));
}

TEST(h2_preface)
{
	static const char pre[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	const uint8_t *p = (const uint8_t *)pre;
	uint8_t more[64];

	CHECK_EQ_INT(protocol_sniff_h2(p, 0), PROTOCOL_SNIFF_MORE);
	for (size_t n = 1; n < 24; n++)
		CHECK_EQ_INT(protocol_sniff_h2(p, n), PROTOCOL_SNIFF_MORE);
	CHECK_EQ_INT(protocol_sniff_h2(p, 24), PROTOCOL_SNIFF_H2);
	memcpy(more, pre, 24);
	memset(more + 24, 0, sizeof(more) - 24);	/* a SETTINGS frame follows */
	CHECK_EQ_INT(protocol_sniff_h2(more, sizeof(more)), PROTOCOL_SNIFF_H2);
	CHECK_EQ_INT(protocol_sniff_h2((const uint8_t *)"GET / HTTP/1.1\r\n", 16), PROTOCOL_SNIFF_OTHER);
	CHECK_EQ_INT(protocol_sniff_h2((const uint8_t *)"PRI * HTTP/1.1", 14), PROTOCOL_SNIFF_OTHER);
	CHECK_EQ_INT(protocol_sniff_h2((const uint8_t *)"\x16\x03\x01", 3), PROTOCOL_SNIFF_OTHER);
	memcpy(more, pre, 24);
	more[23] = 'x';
	CHECK_EQ_INT(protocol_sniff_h2(more, 24), PROTOCOL_SNIFF_OTHER);
}

TEST_MAIN("protocol")
