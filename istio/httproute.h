/* SPDX-License-Identifier: Apache-2.0 */
/* Gateway API HTTPRoutes attached to Services (GAMMA: parentRefs of kind Service, core group),
 * compiled from a model's resources into an immutable, refcounted set, and the per-request
 * decision the waypoint takes with it: which rule of which route (the spec's match precedence),
 * which backend Service by weight, which request header edits. */
#ifndef AMBIT_ISTIO_HTTPROUTE_H
#define AMBIT_ISTIO_HTTPROUTE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "istio/object.h"

/* Bounds, the Gateway API CRD's own where it has one (v1: 32 parentRefs, 16 rules, 64 matches,
 * 16 backendRefs, 16 header or query matches, 16 filters) */
#define HTTPROUTE_MAX_PARENTS	32
#define HTTPROUTE_MAX_RULES	16
#define HTTPROUTE_MAX_MATCHES	64
#define HTTPROUTE_MAX_BACKENDS	16
#define HTTPROUTE_MAX_FIELDS	16	/* header / query param matches, header modifier entries */
#define HTTPROUTE_MAX_PATH	1024
#define HTTPROUTE_MAX_VALUE	4096	/* a header or query value */
#define HTTPROUTE_MAX_HMOD_BYTES 8192	/* the "name: value" lines a header modifier sets and adds */
#define HTTPROUTE_MAX_PER_SERVICE 64	/* routes attached to one Service; the youngest past it are refused */
#define HTTPROUTE_MAX_OBJECTS	4096	/* HTTPRoute objects per set; the rest are refused */
#define HTTPROUTE_MAX_RETRIES	10	/* retry.attempts; more refuses the route (a bound on
					 * what one request can cost the endpoints) */
#define HTTPROUTE_MAX_RETRY_CODES 16	/* retry.codes */

enum hr_path_type {
	HR_PATH_PREFIX,		/* PathPrefix: element by element, a trailing '/' ignored */
	HR_PATH_EXACT,		/* Exact */
};

struct hr_kv {
	char *name;		/* header names lower-cased (they match case-insensitively) */
	char *value;
};

struct hr_match {
	enum hr_path_type path_type;
	char *path;		/* a PathPrefix without its trailing '/' ("" for "/") */
	char *method;		/* NULL: any */
	struct hr_kv *headers;	/* Exact */
	int nheaders;
	struct hr_kv *query;	/* Exact */
	int nquery;
};

struct hr_backend {
	char *name, *namespace;	/* a Service of the core group */
	uint16_t port;		/* its service port */
	uint32_t weight;
	const char *invalid;	/* static reason when the reference cannot be followed (its share
				 * of the requests gets 500), else NULL */
};

/* A Request- or ResponseHeaderModifier: headers set (replaced), added, removed. */
struct hr_hmod {
	struct hr_kv *set, *add;
	int nset, nadd;
	char **remove;
	int nremove;
};

/* The path of a RequestRedirect or URLRewrite (HTTPPathModifier). */
struct hr_pathmod {
	enum { HR_PATH_KEEP, HR_PATH_FULL, HR_PATH_REPLACE_PREFIX } mod;
	char *value;		/* ReplaceFullPath, or ReplacePrefixMatch without trailing '/' */
};

/* A RequestRedirect: the rule answers 3xx with a Location itself, no backend. */
struct hr_redirect {
	bool on;
	int status;		/* 301, 302 (the default), 303, 307, 308 */
	char *scheme;		/* "http" / "https"; NULL: the request's ("http") */
	char *hostname;		/* NULL: the request's Host (without its port) */
	uint16_t port;		/* 0: the scheme's when scheme is set, else the Service port */
	struct hr_pathmod path;
};

/* A URLRewrite: the request goes upstream with another path and/or Host. */
struct hr_rewrite {
	bool on;
	char *hostname;		/* NULL: kept */
	struct hr_pathmod path;
};

/* A rule's retry (GEP-1731 HTTPRouteRetry) as Istio's gateway conversion maps it: retry on
 * connect-failure, refused-stream and gRPC unavailable / cancelled, and on the answers whose
 * status is one of codes (retriable-status-codes); attempts retries after the first try
 * (default 2; 0: none at all, not even Istio's default policy); backoff the base interval of
 * Envoy's jittered exponential back-off; timeouts.backendRequest each try's timeout. */
struct hr_retry {
	bool on;			/* the rule has retry (else Istio's default policy) */
	uint8_t attempts;
	uint16_t codes[HTTPROUTE_MAX_RETRY_CODES];
	int ncodes;
	uint64_t backoff_ms;		/* 0: Envoy's default (25 ms) */
	uint64_t per_try_ms;		/* 0: none */
};

struct hr_rule {
	struct hr_match *matches;	/* none written: one PathPrefix "/" */
	int nmatches;
	struct hr_backend *backends;
	int nbackends;
	uint64_t total_weight;		/* over all backends, invalid ones included */
	struct hr_hmod req;		/* RequestHeaderModifier */
	struct hr_hmod resp;		/* ResponseHeaderModifier (answers of the backend) */
	uint64_t timeout_ms;		/* timeouts: request (backendRequest without retry, when
					 * set); 0: none */
	struct hr_retry retry;		/* retry (backendRequest is its per-try timeout) */
	struct hr_redirect redirect;	/* RequestRedirect (backendRefs then unused) */
	struct hr_rewrite rewrite;	/* URLRewrite */
};

/* A Service this route attaches to (its parentRef). */
struct hr_parent {
	char *name;		/* in the route's namespace (consumer routes are not supported) */
	uint16_t port;		/* 0: every port of the Service */
};

struct httproute {
	struct istio_object obj;	/* diagnostics live here */
	bool accepted;			/* compiled: applies to its parents */
	struct hr_parent *parents;
	int nparents;
	struct hr_rule *rules;
	int nrules;
};

/* One match of one rule of one route, attached to one Service (and maybe a port), in the
 * order requests try them. */
struct hr_entry {
	const struct httproute *route;
	const struct hr_rule *rule;
	const struct hr_match *match;
	uint16_t port;			/* the parentRef's (0: any) */
	int rule_idx;
};

struct hr_service {
	char *namespace, *name;
	struct hr_entry *entries;	/* precedence order */
	int nentries;
	const struct httproute **routes;	/* attached, oldest first */
	uint16_t *route_ports;		/* per routes[] entry: its parentRef's port (0: any) */
	int nroutes;
};

struct httproute_stats {
	int routes, accepted, refused, services;
};

struct httproute_set {
	int refs;
	uint64_t generation;		/* the model generation it was compiled from */
	struct httproute **routes;
	int nroutes;
	struct hr_service *services;
	int nservices;
	struct httproute_stats stats;
};

/* Compiles the HTTPRoute objects of resources (the model's JSON array, borrowed; other kinds
 * are skipped): each is accepted or refused with its diagnostics (a refused one applies to
 * nothing). NULL + errno ENOMEM. The result has one reference. */
struct httproute_set *httproute_set_compile(const json_t *resources, uint64_t generation);
void httproute_set_ref(struct httproute_set *s);
void httproute_set_unref(struct httproute_set *s);

/* What a request looks like to the matcher. header returns the values of a header (name lower
 * case) joined with ',', or NULL; the string lives until the next call. */
struct hr_request {
	const char *method;
	const char *path;	/* up to '?' */
	size_t plen;
	const char *query;	/* after '?', up to '#'; NULL: none */
	size_t qlen;
	const char *(*header)(void *arg, const char *name);
	void *header_arg;
};

enum hr_verdict {
	HR_NO_ROUTES,		/* no route attached to this Service port: balance as before */
	HR_NOT_FOUND,		/* routes attached, none matched: 404 (Envoy NR) */
	HR_MATCHED,		/* *rule (of *route) decides */
};

/* The rule a request to Service ns/name port takes. */
enum hr_verdict httproute_match(const struct httproute_set *s, const char *ns, const char *name,
				uint16_t port, const struct hr_request *rq,
				const struct httproute **route, const struct hr_rule **rule);
/* The same, with the match of the rule that took it (ReplacePrefixMatch replaces its prefix). */
enum hr_verdict httproute_match_ex(const struct httproute_set *s, const char *ns, const char *name,
				   uint16_t port, const struct hr_request *rq,
				   const struct httproute **route, const struct hr_rule **rule,
				   const struct hr_match **match);
/* The Location of redirect rd for a request to path (plen bytes, no query) with query (qlen
 * bytes; NULL: none) that took match m, its Host host (hlen bytes, a port in it dropped; empty:
 * fallback) to a Service port port. The Gateway API's rules: the scheme's port when rd sets a
 * scheme and no port, the Service port otherwise, left out when it is the scheme's default; the
 * query kept. New string, NULL on ENOMEM. */
/* The path (plen bytes, no query) of a request that took match m, as pm rewrites it (the
 * Gateway API's HTTPPathModifier). New string, NULL on ENOMEM. */
char *httproute_rewrite_path(const struct hr_pathmod *pm, const struct hr_match *m,
			     const char *path, size_t plen);
char *httproute_redirect_location(const struct hr_redirect *rd, const struct hr_match *m,
				  const char *host, size_t hlen, const char *fallback, uint16_t port,
				  const char *path, size_t plen, const char *query, size_t qlen);
/* Whether at least one route is attached to ns/name (any port). */
bool httproute_attached(const struct httproute_set *s, const char *ns, const char *name);
/* The backend of rule for a random number rnd, by weight; NULL when the rule has no backend
 * or every weight is 0 (the caller answers 500). May return an invalid backend (500 too). */
const struct hr_backend *httproute_pick(const struct hr_rule *rule, uint32_t rnd);
/* Whether path (plen bytes, no query) matches m's path (exported for the tests). */
bool httproute_path_matches(const struct hr_match *m, const char *path, size_t plen);
/* "1h", "30s", "500ms", "1m30s" (GEP-2257) to milliseconds. 0 or -EINVAL. */
int httproute_parse_duration(const char *s, uint64_t *ms);

/* Admin API: {"generation", "stats", "routes": [envelope + accepted, parents, rules]}; routes
 * restricted to those attached to one of the Services in keep(arg, ns, name) when keep is
 * set, plus every refused one. New reference; NULL on ENOMEM. */
json_t *httproute_set_json(const struct httproute_set *s,
			   bool (*keep)(void *arg, const char *ns, const char *name), void *arg);

#endif
