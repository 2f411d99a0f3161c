/* SPDX-License-Identifier: Apache-2.0 */
/* ambit-ca's node authorization: which SPIFFE ID a caller may have signed. Without
 * impersonation, its own service account's; with ImpersonatedIdentity (a node agent asking
 * for a workload, as ztunnel does), only when the caller is a node agent account and a
 * workload with that identity runs on the caller's node in ambit-ca's own view of pods. The
 * caller's node is its token's; a token that names only the pod gets that pod's node from the
 * same view. */
#ifndef AMBIT_CA_AUTHZ_H
#define AMBIT_CA_AUTHZ_H

#include <stddef.h>

#include "ca/auth.h"
#include "grpc/grpc.h"
#include "tls/identity.h"

struct model;

struct ca_authz_policy {
	const char *trust_domain;		/* the only one we sign for */
	const char *const *node_accounts;	/* "NS/SA" of node agents: they may impersonate */
	size_t nnode_accounts;
};

/* Decides for caller (authenticated) asking for the identity `impersonated` (the metadata
 * value; NULL when absent) with a CSR whose SAN is csr_id, against model m.
 * GRPC_STATUS_OK and *grant = the identity to sign; otherwise the gRPC status to answer
 * (INVALID_ARGUMENT, PERMISSION_DENIED) with why (CA_WHY_MAX) saying what. */
int ca_authorize(const struct ca_authz_policy *p, const struct ca_caller *caller,
		 const char *impersonated, const struct spiffe_id *csr_id, const struct model *m,
		 struct spiffe_id *grant, char *why);

#endif
