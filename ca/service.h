/* SPDX-License-Identifier: Apache-2.0 */
/* ambit-ca's IstioCertificateService: authenticates the caller's bearer token, applies the
 * per-caller rate limit, parses the request and its CSR, authorizes the identity against the
 * node view (ca/authz.h), signs, and logs and counts every decision. The gRPC server
 * (grpc/server.h) calls ca_service_handle on each connection's thread. */
#ifndef AMBIT_CA_SERVICE_H
#define AMBIT_CA_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "ca/auth.h"
#include "ca/config.h"
#include "grpc/server.h"

struct ca_service;
struct tls_ca;
struct tls_jwt_keys;

/* The outcome of one call: the label of ambit_ca_server_requests_total. */
enum ca_result {
	CA_RES_ISSUED,		/* a certificate was signed */
	CA_RES_UNAUTHENTICATED,	/* no, bad, expired or wrong-audience token */
	CA_RES_DENIED,		/* authenticated, but not allowed that identity */
	CA_RES_INVALID,		/* malformed request or CSR */
	CA_RES_RATE_LIMITED,	/* over the caller's rate */
	CA_RES_UNAVAILABLE,	/* TokenReview failed, or no view of pods yet */
	CA_RES_UNIMPLEMENTED,	/* another method */
	CA_RES_ERROR,		/* signing or encoding failed */
	CA_RES_COUNT,
};
const char *ca_result_str(enum ca_result r);

/* cfg, keys (NULL: TokenReview with tr) and tr are borrowed and must outlive the service;
 * the service takes its own reference to ca. NULL + errno. */
struct ca_service *ca_service_new(const struct ca_config *cfg, struct tls_ca *ca,
				  const struct tls_jwt_keys *keys, const struct ca_tokenreview *tr);
void ca_service_free(struct ca_service *s);
/* Signs with ca (a reference is taken) from the next call on; calls already past
 * authentication finish with the CA they took. Any thread. */
void ca_service_set_ca(struct ca_service *s, struct tls_ca *ca);
/* The grpc_server_handler_fn (arg = the service). */
void ca_service_handle(void *arg, const struct grpc_server_call *call,
		       struct grpc_server_reply *reply);
/* The counters in the Prometheus text format (malloc'ed, *len its length); NULL on ENOMEM. */
char *ca_service_metrics(struct ca_service *s, size_t *len);
uint64_t ca_service_count(struct ca_service *s, enum ca_result r);

#endif
