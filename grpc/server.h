/* SPDX-License-Identifier: Apache-2.0 */
/* A unary gRPC server over HTTP/2 (nghttp2) and TLS through tls/ (or cleartext h2c for
 * tests): an accept thread and one thread per connection, bounded in connections, streams,
 * header and message sizes and idle time. Each complete request goes to the handler on its
 * connection's thread; what it answers becomes the response message and trailers
 * (PROTOCOL-HTTP2.md "Responses", Trailers-Only for errors). ambit-ca serves
 * IstioCertificateService with it. */
#ifndef AMBIT_GRPC_SERVER_H
#define AMBIT_GRPC_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "grpc/client.h"
#include "grpc/grpc.h"

struct grpc_server;
struct tls_ctx;

#define GRPC_SERVER_MAX_HEADERS 32	/* request metadata entries kept per call */

/* One request, borrowed for the duration of the handler call. */
struct grpc_server_call {
	const char *path;			/* ":path", e.g. "/pkg.Service/Method" */
	const char *peer;			/* "ip:port" of the client */
	const struct grpc_header *headers;	/* non-pseudo headers, lower-case names */
	size_t nheaders;
	const uint8_t *msg;			/* the request message, unframed */
	size_t len;
	uint64_t timeout_ms;			/* grpc-timeout; 0 = none */
};
/* What the handler answers: status (GRPC_STATUS_OK with response, else an error and its
 * message). response is malloc'ed by the handler and freed by the server. */
struct grpc_server_reply {
	int status;
	char message[256];
	uint8_t *response;
	size_t response_len;
};
typedef void (*grpc_server_handler_fn)(void *arg, const struct grpc_server_call *call,
				       struct grpc_server_reply *reply);
/* Returns the value of header name (lower case) in call, or NULL. */
const char *grpc_server_call_header(const struct grpc_server_call *call, const char *name);

struct grpc_server_opts {
	const char *listen;		/* "IP:PORT" ("0.0.0.0:15012"; port 0 picks one) */
	struct tls_ctx *tls;		/* server ctx (tls_ctx_new_https_server), borrowed: it must
					 * outlive the server; NULL = cleartext h2c */
	grpc_server_handler_fn handler;
	void *arg;
	uint32_t max_conns;		/* default 1024: more are closed at once */
	uint32_t max_msg;		/* request message bound; default 64 KiB (RESOURCE_EXHAUSTED) */
	uint32_t idle_timeout_ms;	/* a connection with no stream this long closes; 300000 */
	uint32_t handshake_timeout_ms;	/* TLS handshake and the client preface; 10000 */
};

/* Binds and starts the accept thread. NULL + errno, err says what (address in use, ...). */
struct grpc_server *grpc_server_start(const struct grpc_server_opts *o, char *err, size_t errlen);
/* The bound port (when listen asked for 0). */
uint16_t grpc_server_port(const struct grpc_server *s);
/* Connections currently open. */
uint32_t grpc_server_conns(const struct grpc_server *s);
/* Stops accepting, closes every connection (each within about 100 ms of its current
 * handler call returning), joins, frees. Accepts NULL. */
void grpc_server_stop(struct grpc_server *s);

#endif
