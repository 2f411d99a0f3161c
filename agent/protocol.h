/* SPDX-License-Identifier: Apache-2.0 */
/* Application protocol of a service port, as Istio selects it: the port's `app_protocol`
 * (Kubernetes appProtocol), else the prefix of its name (`<protocol>[-<suffix>]`), else none
 * (the proxy detects it from the first bytes: protocol_sniff). Pure functions, no I/O. */
#ifndef AMBIT_AGENT_PROTOCOL_H
#define AMBIT_AGENT_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum protocol {
	PROTOCOL_UNKNOWN,	/* not declared: detected from the first bytes */
	PROTOCOL_HTTP,		/* HTTP/1.x (and h2c with prior knowledge when detected) */
	PROTOCOL_HTTP2,		/* h2c with prior knowledge */
	PROTOCOL_HTTPS,		/* TLS carrying HTTP: opaque to a proxy without the keys */
	PROTOCOL_GRPC,		/* gRPC: HTTP/2 */
	PROTOCOL_GRPC_WEB,	/* gRPC-Web: HTTP/1.1 or HTTP/2 */
	PROTOCOL_TCP,
	PROTOCOL_TLS,
	PROTOCOL_MONGO,		/* the protocols below are TCP to ambit */
	PROTOCOL_MYSQL,
	PROTOCOL_REDIS,
	PROTOCOL_UDP,
};

/* One of Istio's protocol names, case-insensitive ("http", "HTTP2", "grpc-web", "tcp", ...);
 * PROTOCOL_UNKNOWN for anything else or NULL. */
enum protocol protocol_parse(const char *s);
/* A service port's protocol: app_protocol ("kubernetes.io/h2c" is HTTP/2; another known name
 * as protocol_parse), else the port name: starting with "grpc-web" is gRPC-Web, else its part
 * before the first '-' as protocol_parse. Either may be NULL. PROTOCOL_UNKNOWN: detect. */
enum protocol protocol_of_port(const char *name, const char *app_protocol);
/* Lower-case name ("http2", "grpc-web", "unknown"). */
const char *protocol_str(enum protocol p);
/* Whether the waypoint reads requests on it: HTTP, HTTP2, GRPC, GRPC_WEB (and UNKNOWN until
 * detected); the others pass as TCP. */
bool protocol_is_http(enum protocol p);
/* Whether its upstream speaks HTTP/2 with prior knowledge (HTTP2, GRPC). */
bool protocol_is_h2(enum protocol p);

enum protocol_sniff {
	PROTOCOL_SNIFF_MORE,	/* a prefix of the HTTP/2 preface: not enough bytes to tell */
	PROTOCOL_SNIFF_H2,	/* the HTTP/2 connection preface (RFC 9113 §3.4) */
	PROTOCOL_SNIFF_OTHER,	/* not the preface (maybe HTTP/1.x: see h1_sniff) */
};
/* Whether the first bytes of a client stream are the HTTP/2 connection preface. */
enum protocol_sniff protocol_sniff_h2(const uint8_t *p, size_t n);

#endif
