/* SPDX-License-Identifier: Apache-2.0 */
/* The node agent's CA client: Istio's IstioCertificateService/CreateCertificate over gRPC/TLS,
 * as ztunnel asks istiod, one call per workload identity (a fresh P-256 key and CSR, the
 * service account token as bearer, ImpersonatedIdentity metadata). The answer's chain is
 * checked against the trust bundle and the identity before use. A certstore backend. */
#ifndef AMBIT_CA_CLIENT_H
#define AMBIT_CA_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/certstore.h"
#include "tls/identity.h"

#define CA_DEFAULT_PORT 15012	/* istiod's and ambit-ca's */
#define CA_CALL_TIMEOUT_MS 10000

struct ca_client;

struct ca_client_opts {
	const char *address;	/* ca.address: https://HOST[:PORT] (PORT default 15012) */
	const char *bundle;	/* ca.cert: PEM trust bundle (one or more roots); verifies the
				 * CA's serving cert (server name = HOST) and the chains it
				 * issues. Re-read when the file changes: later calls use the
				 * new roots over new connections. */
	const char *token_file;	/* ca.token_file: bearer token, re-read when the file changes;
				 * NULL = send none */
	/* A node agent asks on its workloads' behalf: metadata ImpersonatedIdentity = the ID,
	 * as ztunnel sends it. A waypoint asks for its own identity and sends none (as Envoy:
	 * istiod and ambit-ca grant impersonation to node agents only). */
	bool impersonate;
	uint32_t timeout_ms;	/* per call; 0 = CA_CALL_TIMEOUT_MS */
	unsigned max_conns;	/* concurrent calls (one connection each); 0 = 4 */
};

/* Parses "https://HOST[:PORT]" (HOST a name, an IPv4 literal or a bracketed IPv6 literal; no
 * path). 0 or -EINVAL. host gets the name without brackets. */
int ca_address_parse(const char *address, char *host, size_t hostlen, uint16_t *port);

/* Checks the address and loads the bundle now (errors here name the key and file); connects
 * lazily. NULL + errno, err says what. */
struct ca_client *ca_client_new(const struct ca_client_opts *opts, char *err, size_t errlen);
/* Accepts NULL. No call may be in progress. */
void ca_client_free(struct ca_client *c);

/* Asks the CA for a certificate for id valid lifetime_s. Blocks up to the timeout; thread-safe
 * (up to max_conns calls at once, more wait for a connection). Returns one reference owned by
 * the caller, or NULL + errno with why saying what: EACCES (refused by the CA: its gRPC status
 * and message; or the chain does not verify), EINVAL (a bad answer: wrong identity, not our
 * key), ENOKEY (no token), or the transport's error (ECONNREFUSED, ETIMEDOUT, EPROTO, ...). */
struct tls_cert *ca_client_fetch(struct ca_client *c, const struct spiffe_id *id,
				 uint32_t lifetime_s, char *why, size_t whylen);

/* The client as a certstore backend (valid for the client's life). */
const struct certstore_backend *ca_client_backend(struct ca_client *c);

struct ca_client_stats {
	uint64_t calls, refused, transport_errors, bad_answers, token_reloads, bundle_reloads;
};
void ca_client_stats(struct ca_client *c, struct ca_client_stats *st);

#endif
