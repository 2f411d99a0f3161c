// SPDX-License-Identifier: Apache-2.0
/* Node authorization for ambit-ca (the rule istiod applies to ztunnel's impersonated
 * requests): a node agent gets the identities of the workloads on its own node, nothing else. */
#include "ca/authz.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "agent/workloads.h"

static bool is_node_account(const struct ca_authz_policy *p, const struct ca_caller *c)
{
	size_t nl = strlen(c->ns);

	for (size_t i = 0; i < p->nnode_accounts; i++) {
		const char *a = p->node_accounts[i];
		if (strncmp(a, c->ns, nl) == 0 && a[nl] == '/' && strcmp(a + nl + 1, c->sa) == 0)
			return true;
	}
	return false;
}

static bool runs_on(const struct model *m, const struct spiffe_id *id, const char *node)
{
	for (int i = 0; m && i < m->nworkloads; i++) {
		const struct model_workload *w = &m->workloads[i];
		if (w->node && strcmp(w->node, node) == 0 && strcmp(w->namespace, id->ns) == 0 &&
		    w->service_account && strcmp(w->service_account, id->sa) == 0)
			return true;
	}
	return false;
}

/* The node of the caller's own pod in our view, for tokens that name the pod but not the node
 * (clusters before the node claims); "" when unknown. */
static const char *node_of_pod(const struct model *m, const struct ca_caller *c)
{
	for (int i = 0; m && c->pod[0] && i < m->nworkloads; i++) {
		const struct model_workload *w = &m->workloads[i];
		if (w->node && strcmp(w->name, c->pod) == 0 && strcmp(w->namespace, c->ns) == 0)
			return w->node;
	}
	return "";
}

int ca_authorize(const struct ca_authz_policy *p, const struct ca_caller *caller,
		 const char *impersonated, const struct spiffe_id *csr_id, const struct model *m,
		 struct spiffe_id *grant, char *why)
{
	char a[SPIFFE_ID_STR_MAX], b[SPIFFE_ID_STR_MAX];
	const char *pwhy = NULL;
	struct spiffe_id own;

	if (spiffe_id_set(&own, p->trust_domain, caller->ns, caller->sa, &pwhy))
		return ca_whyf(why, GRPC_STATUS_PERMISSION_DENIED,
			    "caller %.63s/%.100s has no identity in trust domain %.64s: %s",
			    caller->ns, caller->sa, p->trust_domain, pwhy);
	if (!impersonated || !*impersonated) {
		*grant = own;
	} else if (spiffe_id_parse(impersonated, grant, &pwhy)) {
		return ca_whyf(why, GRPC_STATUS_INVALID_ARGUMENT,
			    "ImpersonatedIdentity is not a SPIFFE ID: %s", pwhy);
	}
	if (strcmp(grant->td, p->trust_domain) != 0)
		return ca_whyf(why, GRPC_STATUS_PERMISSION_DENIED,
			    "trust domain %.64s is not ours (%.64s)", grant->td, p->trust_domain);
	if (!spiffe_id_equal(grant, csr_id))
		return ca_whyf(why, GRPC_STATUS_INVALID_ARGUMENT, "the CSR is for %s, the request for %s",
			    spiffe_id_str(csr_id, a), spiffe_id_str(grant, b));
	if (spiffe_id_equal(grant, &own))
		return GRPC_STATUS_OK;
	/* Impersonation: node agents only, for workloads on their own node. */
	if (!is_node_account(p, caller))
		return ca_whyf(why, GRPC_STATUS_PERMISSION_DENIED,
			    "caller %.63s/%.100s is not a node agent and may not ask for %s",
			    caller->ns, caller->sa, spiffe_id_str(grant, a));
	const char *node = caller->node[0] ? caller->node : node_of_pod(m, caller);
	if (!node[0])
		return ca_whyf(why, GRPC_STATUS_PERMISSION_DENIED,
			       "the caller's token names no node (nor a pod we know)");
	if (!runs_on(m, grant, node))
		return ca_whyf(why, GRPC_STATUS_PERMISSION_DENIED, "no workload of %s runs on node %.100s",
			    spiffe_id_str(grant, a), node);
	return GRPC_STATUS_OK;
}
