/* SPDX-License-Identifier: Apache-2.0 */
/* The envelope every Istio object shares (kind, apiVersion, metadata, workload selector,
 * targetRefs), read strictly from the JSON `kubectl get -o json` prints, with a bounded list of
 * per-object diagnostics (what was refused, converted or is unsupported, and where). The
 * kind-specific modules (authz.c, telemetry.c) read `spec` and add their own diagnostics. */
#ifndef AMBIT_ISTIO_OBJECT_H
#define AMBIT_ISTIO_OBJECT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/labels.h"

#define ISTIO_MAX_NAME        253	/* metadata.name, namespace, targetRef names */
#define ISTIO_MAX_LABELS      64	/* selector.matchLabels entries */
#define ISTIO_MAX_TARGET_REFS 16
#define ISTIO_MAX_DIAGS       16	/* per object; more are counted, not kept */
#define ISTIO_DEFAULT_ROOT_NS "istio-system"

enum istio_kind {
	ISTIO_KIND_OTHER,			/* a kind this folder does not compile */
	ISTIO_KIND_AUTHORIZATION_POLICY,	/* security.istio.io v1, v1beta1 */
	ISTIO_KIND_PEER_AUTHENTICATION,		/* security.istio.io v1, v1beta1 */
	ISTIO_KIND_TELEMETRY,			/* telemetry.istio.io v1, v1alpha1 */
	ISTIO_KIND_HTTP_ROUTE,			/* gateway.networking.k8s.io v1, v1beta1 (GAMMA) */
};

enum istio_diag_kind {
	ISTIO_DIAG_REFUSED,	/* the object (or, with a previous version, this version) is not applied */
	ISTIO_DIAG_CONVERTED,	/* applied, but differently from what it says (Istio's L7 conversions) */
	ISTIO_DIAG_UNSUPPORTED,	/* a feature ambit does not enforce here (AUDIT, CUSTOM, ...) */
	ISTIO_DIAG_IGNORED,	/* not for this component (targetRefs at the node agent, ...) */
};

enum istio_severity {
	ISTIO_SEV_ERROR,	/* refused */
	ISTIO_SEV_WARNING,	/* converted or unsupported: enforced differently than written */
	ISTIO_SEV_INFO,		/* ignored by design */
};

struct istio_diag {
	enum istio_severity severity;
	enum istio_diag_kind kind;
	char *path;		/* "spec.rules[0].to[0].operation.methods", or "" for the object */
	char *message;
};

/* A Gateway API policy attachment (`targetRef`, `targetRefs[]`); namespace NULL = the
 * object's own. group "" is the core group (a Service). */
struct istio_target_ref {
	char *group;
	char *kind;
	char *name;
	char *namespace;
};

enum istio_scope {
	ISTIO_SCOPE_MESH,	/* root namespace, no selector: every workload of the mesh */
	ISTIO_SCOPE_NAMESPACE,	/* no selector: the workloads of its namespace */
	ISTIO_SCOPE_SELECTOR,	/* selector.matchLabels: those workloads (any namespace from the root) */
	ISTIO_SCOPE_TARGET_REFS,/* targetRef(s): a waypoint, Gateway or Service (L7, the waypoint's) */
};

struct istio_object {
	enum istio_kind kind;
	char *kind_name;	/* "AuthorizationPolicy", as written */
	char *api_version;	/* "security.istio.io/v1" */
	char *group;		/* "security.istio.io" */
	char *version;		/* "v1" */
	char *name;
	char *namespace;
	int64_t created;	/* creationTimestamp, seconds since the epoch; 0 when absent */
	bool has_created;
	int64_t generation;	/* metadata.generation, 0 when absent */
	struct label *annotations;	/* string-valued annotations only */
	int nannotations;
	bool dry_run;		/* annotation istio.io/dry-run: "true" (or "1", "t", "True", ...) */
	bool has_selector;	/* spec.selector present (even with no matchLabels) */
	struct label *selector;	/* spec.selector.matchLabels */
	int nselector;
	struct istio_target_ref *target_refs;	/* spec.targetRef and spec.targetRefs[] */
	int ntarget_refs;
	const json_t *spec;	/* borrowed from the parsed JSON; NULL when absent (= {}) */
	struct istio_diag diags[ISTIO_MAX_DIAGS];
	int ndiags;
	int ndiags_dropped;	/* past ISTIO_MAX_DIAGS */
};

/* Reads the envelope of one object. The object must be a JSON object with `apiVersion`,
 * `kind`, `metadata.name`, `metadata.namespace` (strings) and an object `spec` (absent = {});
 * metadata's other keys are read when known (creationTimestamp in RFC 3339, annotations,
 * generation) and otherwise ignored (kubectl prints many). `spec.selector` and
 * `spec.targetRef(s)` are read for every kind; the kind's module reads the rest of spec.
 * On error returns -EINVAL and writes "KIND NS/NAME: FIELD: message" (as much of it as is
 * known) to err; -ENOMEM. o is zeroed first and must be released with istio_object_fini
 * in every case. o->spec borrows from json, which must outlive o's use of it. */
int istio_object_parse(const json_t *json, struct istio_object *o, char *err, size_t errlen);
void istio_object_fini(struct istio_object *o);

/* "security.istio.io/v1beta1" -> its kind's group and version are known to this folder. */
bool istio_api_version_known(const char *api_version, const char *kind);
const char *istio_kind_str(enum istio_kind k);

/* Adds a diagnostic (path and message copied; path NULL = ""). Past ISTIO_MAX_DIAGS only
 * counts. Returns 0 or -ENOMEM. Severity follows the kind (refused: error, ignored: info). */
int istio_object_diag(struct istio_object *o, enum istio_diag_kind kind, const char *path,
		      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
const char *istio_diag_kind_str(enum istio_diag_kind k);
const char *istio_severity_str(enum istio_severity s);
/* [{"severity","kind","path","message"}...] plus {"kind":"dropped","count":N} past the bound. */
json_t *istio_object_diags_json(const struct istio_object *o);

/* RFC 3339 ("2024-05-01T10:00:00Z", fractions and +hh:mm offsets) to seconds. 0 or -EINVAL. */
int istio_parse_time(const char *s, int64_t *out);

/* Scope, with Istio's rules: targetRef(s) first; then a selector with at least one label;
 * then the namespace (mesh-wide in the root namespace). root_ns NULL = istio-system. */
enum istio_scope istio_object_scope(const struct istio_object *o, const char *root_ns);
const char *istio_scope_str(enum istio_scope s);
/* Whether a workload-scoped object (mesh, namespace, selector) applies to a workload of
 * namespace ns with labels[0..nlabels). TARGET_REFS objects never do. */
bool istio_object_selects(const struct istio_object *o, const char *root_ns, const char *ns,
			  const struct label *labels, int nlabels);
/* Whether one of o's targetRefs names (group, kind, ns, name). group NULL matches any
 * group; ns is compared with each ref's namespace (the object's when the ref has none). */
bool istio_object_targets(const struct istio_object *o, const char *group, const char *kind,
			  const char *ns, const char *name);
/* "Oldest wins": <0 when a is older than b (creationTimestamp, then namespace, then name). */
int istio_object_age_cmp(const struct istio_object *a, const struct istio_object *b);
/* The envelope as JSON: kind, apiVersion, namespace, name, creationTimestamp, generation,
 * dry_run, scope, selector, targetRefs, diagnostics. New reference, NULL on ENOMEM. */
json_t *istio_object_to_json(const struct istio_object *o, const char *root_ns);

#endif
