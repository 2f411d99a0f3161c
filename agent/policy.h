/* SPDX-License-Identifier: Apache-2.0 */
/* L4 authorization at the destination's node agent (CONTRACT.md "Istio resources",
 * docs/policy.md): the AuthorizationPolicy and PeerAuthentication set compiled by istio/authz
 * from each published model, swapped in on the loop, checked for every inbound connection
 * (HBONE CONNECT and captured plaintext) and again for the open ones after every change;
 * denials counted per policy; the admin API's /policies and /policies/check. */
#ifndef AMBIT_AGENT_POLICY_H
#define AMBIT_AGENT_POLICY_H

#include <jansson.h>
#include <stdbool.h>

#include "agent/conn.h"
#include "agent/loop.h"
#include "agent/workloads.h"

/* Bound of ambit_authorization_denied_total's series (policies); more go to "overflow". */
#define POLICY_METRIC_MAX_SERIES 256

struct policy_opts {
	struct loop *loop;		/* where sets are swapped and connections re-checked */
	const char *root_namespace;	/* Istio's root namespace (config root_namespace) */
	const char *trust_domain;
};

/* Compiles the current model's objects, subscribes to model updates (each is compiled on the
 * publishing thread, then swapped in and applied on the loop) and registers the metrics.
 * 0 or -errno (logged). One per process. */
int policy_init(const struct policy_opts *opts);
/* Drops the sets; call after the loop stopped. */
void policy_fini(void);

/* The inbound check of conn c (its conn_info filled: kind, src, target, source) towards dst,
 * a local enrolled workload of model m: peer_identity is the verified mTLS identity
 * (HBONE), NULL for plaintext. Dry-run verdicts are reported (conn_info, log, metric). On
 * deny returns -EACCES, writes the operator's sentence ("denied by NS/NAME", ...) to reason,
 * marks the conn denied and counts the denial; the caller refuses the connection (401, or a
 * reset) with CONN_FLAG_DENIED and that reason. 0 when allowed. Call it before conn_opened(),
 * so that the open's metrics say DENY too. Loop thread only. */
int policy_check_inbound(struct conn *c, const struct model *m, const struct model_workload *dst,
			 const char *peer_identity, char *reason, size_t reasonlen);

/* Admin API: every object with scope, action, state, diagnostics and the workloads it
 * applies to. New reference. */
json_t *policy_dump_json(void);
/* Admin API: the verdict for a connection from `from` (an IP address, or NS/NAME of a
 * workload: its identity when enrolled, else plaintext) to `to` (NS/NAME:PORT, a target
 * port) with the live set. NULL with a message in err (400) when an argument is wrong. */
json_t *policy_check_json(const char *from, const char *to, char *err, size_t errlen);

#endif
