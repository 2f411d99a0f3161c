/* SPDX-License-Identifier: Apache-2.0 */
/* A blocking unary gRPC client over HTTP/2 (nghttp2): cleartext (h2c) or TLS with ALPN h2
 * through tls/; one call at a time on a connection kept and reused between calls, poll()-driven
 * on a non-blocking socket so a deadline and a cancel flag bound every wait. Used by the OTLP
 * exporter (TraceService/Export) and the node agent's CA client (CreateCertificate), each from
 * its own thread. Not thread-safe: one client per thread. */
#ifndef AMBIT_GRPC_CLIENT_H
#define AMBIT_GRPC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "grpc/grpc.h"

struct grpc_client;

#define GRPC_CLIENT_MAX_RESPONSE (64 * 1024)	/* response message bytes kept per call */
#define GRPC_CLIENT_MAX_DETAILS 4096		/* decoded grpc-status-details-bin kept */
#define GRPC_CLIENT_MAX_DELAY_MS 60000		/* bound on grpc-retry-pushback-ms */

struct grpc_client_opts {
	const char *host;		/* name or IP literal (no brackets); copied */
	uint16_t port;
	bool tls;			/* https: TLS 1.2+, ALPN h2, server verified */
	const char *ca_file;		/* TLS trust anchors (PEM); NULL = the system store */
	const char *client_cert;	/* mutual TLS: PEM cert and key, both or neither */
	const char *client_key;
	const char *server_name;	/* TLS: SNI and the name verified; NULL = host */
	const char *user_agent;		/* NULL = "ambit-grpc/<version>"; copied */
};

/* A request header (lower-case names; RFC 9113 §8.2.1). Borrowed for the call. */
struct grpc_header {
	const char *name;
	const char *value;
};

/* What one call got back. Free with grpc_result_fini. */
struct grpc_result {
	int http_status;		/* 0 when no :status came */
	int status;			/* grpc-status, or the mapped code when the server gave none
					 * (non-200 HTTP; a reset or truncated stream) */
	char message[256];		/* grpc-message, decoded (or what went wrong) */
	uint32_t pushback_ms;		/* grpc-retry-pushback-ms, bounded */
	uint8_t *details;		/* grpc-status-details-bin, base64-decoded; NULL if none */
	size_t details_len;
	uint8_t *response;		/* the response message (unframed); NULL if none */
	size_t response_len;
	bool reused;			/* the call went out on a kept connection */
};
void grpc_result_fini(struct grpc_result *r);

/* Loads TLS material now (a bad CA file fails here), connects lazily. NULL + errno, with
 * err (may be NULL) saying what, naming the file. */
struct grpc_client *grpc_client_new(const struct grpc_client_opts *opts, char *err, size_t errlen);
/* Closes the connection. Accepts NULL. */
void grpc_client_free(struct grpc_client *c);

/* One unary call: POST path ("/pkg.Service/Method") with message msg[0, len) (framed here),
 * extra headers[0, nheaders), grpc-timeout = timeout_ms, waiting at most timeout_ms in all
 * and ending early when *cancel (may be NULL) becomes true. Reconnects as needed (once more
 * when a kept connection turns out dead before any answer).
 * Returns 0 when an answer came (res->status says which; OK or not), or a transport error:
 * -ETIMEDOUT, -ECANCELED, -ECONNREFUSED, -EHOSTUNREACH, -EPROTO (TLS or HTTP/2), -errno,
 * with res->message saying what. res is always filled (fini it either way). */
int grpc_client_call(struct grpc_client *c, const char *path, const struct grpc_header *headers,
		     size_t nheaders, const uint8_t *msg, size_t len, uint32_t timeout_ms,
		     const volatile bool *cancel, struct grpc_result *res);
/* Drops the kept connection (after an error the caller does not trust it). */
void grpc_client_disconnect(struct grpc_client *c);
/* "host:port" (brackets for IPv6), for messages. */
const char *grpc_client_authority(const struct grpc_client *c);

#endif
