/* SPDX-License-Identifier: Apache-2.0 */
/* Istio AuthorizationPolicy and PeerAuthentication: compiled from the mesh model's
 * `resources` into an immutable, indexed, refcounted set (struct authz_set), and evaluated
 * with Istio ambient's semantics: per connection at L4 by the node agent (ztunnel's rules and
 * istiod's L7-field conversions), per request at L7 by the waypoint (every field, as
 * Envoy's RBAC filter does under Istio). docs/policy.md is the semantics page. */
#ifndef AMBIT_ISTIO_AUTHZ_H
#define AMBIT_ISTIO_AUTHZ_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/labels.h"

/* Bounds: an object past these is refused as a whole (the others apply). */
#define AUTHZ_MAX_OBJECTS  20000	/* AuthorizationPolicy + PeerAuthentication per set */
#define AUTHZ_MAX_RULES    256		/* spec.rules */
#define AUTHZ_MAX_ENTRIES  256		/* from[], to[], when[] of one rule */
#define AUTHZ_MAX_VALUES   1024		/* strings of one field (principals, ipBlocks, ...) */
#define AUTHZ_MAX_VALUE_LEN 1024	/* one such string */

struct authz_set;

/* ---- compiling ---- */

/* Compiles every AuthorizationPolicy and PeerAuthentication (security.istio.io v1/v1beta1)
 * of resources (a JSON array as the model carries it: borrowed, only read; other kinds are
 * skipped). root_ns NULL = "istio-system". prev (borrowed, may be NULL) is the set in force:
 * an object that is refused now but compiled there stays in force in its previous version,
 * and objects whose JSON did not change are shared, not compiled again. Refusals,
 * conversions and unsupported features are kept per object (authz_set_to_json) and logged
 * once when an object first shows them (pr_warn). Returns a set with one reference, or NULL
 * with errno ENOMEM. Never fails on content: bad objects are refused one by one. */
struct authz_set *authz_compile(const json_t *resources, const char *root_ns,
				const struct authz_set *prev);
/* An empty set (nothing applies: everything allowed, every port PERMISSIVE). NULL + ENOMEM. */
struct authz_set *authz_set_new_empty(void);
/* Thread-safe refcounting; a set never changes once compiled. unref accepts NULL. */
struct authz_set *authz_set_ref(struct authz_set *s);
void authz_set_unref(struct authz_set *s);

/* Counts, for logs and metrics. */
struct authz_set_stats {
	int authorization_policies;	/* in force (applied, or previous version kept) */
	int peer_authentications;
	int refused;			/* objects with a refused version (new or kept) */
	int converted;			/* objects enforced with Istio's L7 conversions */
	int unsupported;		/* AUDIT, CUSTOM, ... (not enforced) */
	int dry_run;
};
void authz_set_stats(const struct authz_set *s, struct authz_set_stats *out);
const char *authz_set_root_ns(const struct authz_set *s);

/* ---- the facts evaluation needs (plain structs: the caller maps its model to them) ---- */

/* A workload policies may apply to (the destination at L4). */
struct authz_workload {
	const char *namespace;
	const char *name;		/* for dumps only; may be NULL */
	const struct label *labels;
	int nlabels;
};

/* One connection as the destination sees it. */
struct authz_conn {
	const struct sockaddr_storage *src;	/* source IP (port ignored) */
	const struct sockaddr_storage *dst;	/* destination IP; its port is ignored too */
	uint16_t dst_port;			/* the target (container) port */
	/* The peer's SPIFFE ID from mTLS ("spiffe://td/ns/NS/sa/SA"), NULL for plaintext.
	 * Policies compare principals without "spiffe://"; namespaces and serviceAccounts use
	 * its ns and sa parts. An ID not in that shape matches principals only. */
	const char *src_identity;
	const struct authz_workload *dst_workload;	/* L4: NULL = not a known workload
							 * (only mesh-wide objects apply) */
};

/* One HTTP request at the waypoint (L7), on top of its connection's facts. */
struct authz_request {
	const char *method;		/* ":method" / request line */
	const char *path;		/* ":path" with its query (the query is not matched) */
	const char *host;		/* ":authority" / Host as sent (a port is part of it) */
	const char *request_principal;	/* "iss/sub" from a validated JWT; NULL: none */
	const struct sockaddr_storage *remote_ip;	/* X-Forwarded-For origin; NULL = src */
	const char *sni;		/* connection.sni; NULL: none */
	/* The value of header `name` (lower case; values of repeated headers joined with
	 * ","), or NULL when absent. Borrowed for the call. */
	const char *(*header)(void *arg, const char *name);
	void *header_arg;
};

/* Who a waypoint serves, for L7 (targetRefs): the waypoint itself (its Gateway and its
 * Service share the name) and the Service the request is for (NULL name: none). */
struct authz_l7_target {
	const char *waypoint_namespace;
	const char *waypoint_name;
	const char *service_namespace;
	const char *service_name;
};

/* ---- verdicts ---- */

enum authz_verdict {
	AUTHZ_ALLOW,
	AUTHZ_DENY,
};

enum authz_reason {
	AUTHZ_REASON_NO_POLICY,		/* allowed: no ALLOW policy applies and no DENY matched */
	AUTHZ_REASON_ALLOW_MATCHED,	/* allowed by `policy` */
	AUTHZ_REASON_DENY_MATCHED,	/* denied by `policy` */
	AUTHZ_REASON_NO_ALLOW_MATCHED,	/* denied: allow policies exist, but none allowed */
	AUTHZ_REASON_MTLS_REQUIRED,	/* denied: plaintext under STRICT (`policy` is the PeerAuthentication) */
};

enum authz_mtls_mode {
	AUTHZ_MTLS_UNSET,	/* inherit (only inside objects; never an effective mode) */
	AUTHZ_MTLS_DISABLE,
	AUTHZ_MTLS_PERMISSIVE,
	AUTHZ_MTLS_STRICT,
};

/* The policy that decided, as "KIND" + "NS/NAME"; NULL when no object did. */
struct authz_policy_ref {
	const char *kind;	/* "AuthorizationPolicy" or "PeerAuthentication" */
	const char *namespace;
	const char *name;
};

struct authz_result {
	enum authz_verdict verdict;	/* what to enforce */
	enum authz_reason reason;
	struct authz_policy_ref policy;	/* the deciding object, when reason names one */
	/* Dry-run (`istio.io/dry-run: "true"`) objects: the verdict had they been enforced
	 * along with the others, and the one that would have decided. Never enforced. */
	bool dry_run_applied;		/* at least one dry-run policy applies to this workload */
	enum authz_verdict dry_run_verdict;
	enum authz_reason dry_run_reason;
	struct authz_policy_ref dry_run_policy;
	enum authz_mtls_mode mtls_mode;	/* effective PeerAuthentication mode of (workload, port) */
};
/* The strings in results borrow from the set: valid while the caller holds its reference. */

/* L4: PeerAuthentication (plaintext under STRICT is denied), then AuthorizationPolicy
 * (any matching DENY denies; no ALLOW policy allows; a matching ALLOW allows; else deny).
 * Selector, namespace and mesh-wide objects apply; targetRefs ones do not (waypoint's). */
void authz_check_conn(const struct authz_set *s, const struct authz_conn *c,
		      struct authz_result *r);
/* L7 at a waypoint: the AuthorizationPolicies whose targetRefs name t's waypoint (kind
 * Gateway or Service, its namespace) or t's Service, with every field; c->dst_workload may be
 * NULL. PeerAuthentication is not consulted (the waypoint only accepts HBONE). */
void authz_check_request(const struct authz_set *s, const struct authz_conn *c,
			 const struct authz_l7_target *t, const struct authz_request *req,
			 struct authz_result *r);
/* Whether any L7 policy names t (the waypoint can skip building requests otherwise). */
bool authz_has_l7(const struct authz_set *s, const struct authz_l7_target *t);

/* The effective mTLS mode of a workload on a target port: workload-level portLevelMtls, then
 * the workload-level, namespace-level and mesh-level modes, the first that is set (UNSET
 * inherits); PERMISSIVE when none is. The deciding object goes to *by when non-NULL
 * (fields NULL when none). Never returns UNSET. */
enum authz_mtls_mode authz_mtls_mode(const struct authz_set *s, const struct authz_workload *w,
				     uint16_t port, struct authz_policy_ref *by);

const char *authz_verdict_str(enum authz_verdict v);	/* "allow", "deny" */
const char *authz_reason_str(enum authz_reason r);	/* "no_policy", "deny_matched", ... */
const char *authz_mtls_mode_str(enum authz_mtls_mode m);	/* "STRICT", ... */
/* The operator's sentence for r (the contract's span status message): "denied by NS/NAME",
 * "allow policies exist, but none allowed", "plaintext refused by STRICT
 * PeerAuthentication NS/NAME", "allowed by NS/NAME", "no policy". Returns buf. */
char *authz_result_str(const struct authz_result *r, char *buf, size_t len);

/* ---- dumps (admin /policies, ambitctl policies) ---- */

/* Every object of the set: {"kind","apiVersion","namespace","name","creationTimestamp",
 * "generation","scope","selector","targetRefs","action" (AuthorizationPolicy: ALLOW, DENY,
 * AUDIT, CUSTOM), "mtls" (PeerAuthentication: mode and portLevelMtls), "dry_run", "state"
 * ("applied", "converted", "previous" = this version refused, the previous in force,
 * "refused", "unsupported", "ignored" = not for the node agent), "rules" (count),
 * "diagnostics" [{"severity","kind","path","message"}], "workloads" (when ws is given:
 * "NS/NAME" of those it applies to at L4, at most 100, and "workloads_total"; for a
 * PeerAuthentication, those it is the one in effect for at its level)}.
 * ws[0..nws) may be NULL/0. New reference; NULL on ENOMEM. */
json_t *authz_set_to_json(const struct authz_set *s, const struct authz_workload *ws, int nws);
/* One verdict as JSON for `policies check`: {"verdict","reason","message","policy",
 * "mtls_mode","dry_run":{...}}. New reference. */
json_t *authz_result_to_json(const struct authz_result *r);

#endif
