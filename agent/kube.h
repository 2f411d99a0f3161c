/* SPDX-License-Identifier: Apache-2.0 */
/* Kubernetes discovery (discovery.source = kubernetes): lists then watches Pods, Services,
 * Namespaces and Nodes from the in-cluster API on threads of its own, keeps only the fields
 * the model needs, and after each burst of changes builds the workloads-file JSON, turns it
 * into a model (model_from_json) and publishes it. Istio's AuthorizationPolicy,
 * PeerAuthentication and Telemetry objects and the `istio` ConfigMap's MeshConfig are
 * watched the same way and become the model's `resources` and `mesh_config`.
 * docs/kubernetes.md has the mapping. */
#ifndef AMBIT_AGENT_KUBE_H
#define AMBIT_AGENT_KUBE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct model;
struct kube_discovery;

/* The watched resources, in the order stats list them. */
enum kube_res {
	KUBE_RES_PODS,
	KUBE_RES_SERVICES,
	KUBE_RES_NAMESPACES,
	KUBE_RES_NODES,
	/* Istio's objects (CONTRACT.md "Istio resources"): kept whole for the istio/ modules.
	 * A kind whose CRD is absent has no objects and is asked for again slowly. */
	KUBE_RES_AUTHZ_POLICIES,	/* security.istio.io v1, else v1beta1 */
	KUBE_RES_PEER_AUTHNS,		/* security.istio.io v1, else v1beta1 */
	KUBE_RES_TELEMETRIES,		/* telemetry.istio.io v1, else v1alpha1 */
	KUBE_RES_HTTPROUTES,		/* gateway.networking.k8s.io v1, else v1beta1 (the waypoint's) */
	KUBE_RES_MESH_CONFIG,		/* the `istio` ConfigMap of the root namespace */
	KUBE_RES_COUNT,
};

/* Receives each new model with one reference, which it takes over. Called on the
 * discovery's builder thread. */
typedef void (*kube_model_fn)(struct model *m, void *arg);

struct kube_opts {
	/* API base URL ("https://10.96.0.1:443"); NULL: https://$KUBERNETES_SERVICE_HOST:
	 * $KUBERNETES_SERVICE_PORT. */
	const char *api_url;
	/* NULL: /var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}. The token file is
	 * re-read whenever it changes (projected tokens rotate); a missing file sends no token. */
	const char *token_file;
	const char *ca_file;
	int watch_timeout_s;	/* timeoutSeconds of a watch, jittered up to 2x; default 300 */
	int idle_timeout_s;	/* a watch silent this long is restarted; default 120 */
	int debounce_ms;	/* quiet time before a rebuild; default 100 */
	int backoff_min_ms;	/* first retry delay after an error; default 250 */
	int backoff_max_ms;	/* cap; default 30000 */
	int list_page;		/* `limit` of each list page; default 250 */
	int absent_retry_ms;	/* an Istio kind without its CRD (404) or not allowed (403) is
				 * asked for again after this; default 30000 */
	const char *root_ns;	/* Istio's root namespace (the `istio` ConfigMap); NULL:
				 * istio-system */
	/* Kinds not watched (bits 1u << enum kube_res): empty and synced from the start, e.g.
	 * HTTPRoutes on a node agent, which only the waypoint uses. */
	uint32_t skip;
	/* NULL: model_publish(). */
	kube_model_fn on_model;
	void *arg;
};

struct kube_res_stats {
	bool watched;			/* false: skipped (kube_opts.skip) */
	bool synced;			/* listed at least once (or found absent) */
	bool absent;			/* an Istio kind: its CRD is not installed (or 403) */
	char path[160];			/* the API path in use (the served version) */
	char resource_version[64];	/* last one seen (list, event or bookmark) */
	uint64_t objects;		/* kept in the store */
	uint64_t lists;			/* completed lists (the first one included) */
	uint64_t relists_gone;		/* relists forced by 410 Gone / expired */
	uint64_t watches;		/* watch requests started */
	uint64_t events;		/* ADDED/MODIFIED/DELETED applied */
	uint64_t bookmarks;
	uint64_t errors;		/* failed requests, error events, malformed events */
	char last_error[160];		/* "" when none */
};

struct kube_stats {
	bool synced;			/* every resource listed: models are being published */
	uint64_t last_sync_unix_ms;	/* wall clock of the last published model; 0 never */
	uint64_t models_published;
	uint64_t model_errors;		/* builds model_from_json refused (last good kept) */
	uint64_t last_build_ms;		/* how long the last build took */
	uint64_t auth_reloads;		/* times a changed token file was read */
	struct kube_res_stats res[KUBE_RES_COUNT];
};

/* The in-cluster API URL, https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
 * (malloc'ed), or NULL when not in a cluster. */
char *kube_default_api_url(void);

/* Starts the watch threads; returns at once (the first model follows the first complete
 * list of every resource). NULL + errno: EINVAL (no API URL can be made), ENOMEM, or
 * thread creation errors. opts is copied; its strings are duplicated. */
struct kube_discovery *kube_discovery_new(const struct kube_opts *opts);
/* Cancels in-flight requests, joins the threads (within about a second), frees all.
 * Accepts NULL. */
void kube_discovery_free(struct kube_discovery *kd);

/* A snapshot of the counters; thread-safe. */
void kube_discovery_stats(struct kube_discovery *kd, struct kube_stats *out);
/* The same as JSON for the admin API (new reference, NULL on ENOMEM). */
json_t *kube_stats_to_json(const struct kube_stats *st);
const char *kube_res_str(enum kube_res r);

#endif
