/* SPDX-License-Identifier: Apache-2.0 */
/* The mesh model: nodes, workloads and services, as the workloads file (CONTRACT.md) or the
 * Kubernetes watch describe them. A model is immutable once built and shared by reference:
 * discovery builds a new one and publishes it (model_publish); the data path takes a
 * reference per connection (model_current) and never sees a half-updated state. */
#ifndef AMBIT_AGENT_WORKLOADS_H
#define AMBIT_AGENT_WORKLOADS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/labels.h"

/* Bounds: a model larger than these is refused, never half-loaded. */
#define MODEL_MAX_WORKLOADS 100000
#define MODEL_MAX_SERVICES  20000
#define MODEL_MAX_NODES     5000
#define MODEL_MAX_ADDRS     16	/* per workload or service */
#define MODEL_MAX_PORTS     64	/* per service */
#define MODEL_MAX_LABELS    64	/* per workload or selector */
#define MODEL_MAX_RESOURCES 20000	/* Istio objects (AuthorizationPolicy, Telemetry, ...) */

/* A reference to a waypoint Service; name NULL when there is none. */
struct model_waypoint_ref {
	char *name;
	char *namespace;
};

struct model_node {
	char *name;
	struct sockaddr_storage addr;	/* HBONE goes to addr:15008; port 0 here */
};

struct model_workload {
	char *uid;
	char *name;
	char *namespace;
	char *service_account;
	char *node;
	char *canonical_service;
	struct sockaddr_storage *addrs;	/* naddrs entries, port 0 */
	int naddrs;
	struct label *labels;
	int nlabels;
	bool enrolled;
	struct model_waypoint_ref waypoint;
};

struct model_port {
	uint16_t port;
	uint16_t target_port;
};

struct model_service {
	char *name;
	char *namespace;
	struct sockaddr_storage *addrs;	/* naddrs VIPs, port 0 */
	int naddrs;
	struct label *selector;
	int nselector;
	struct model_port *ports;
	int nports;
	struct model_waypoint_ref waypoint;
	/* Endpoints, resolved at build time: indexes into model.workloads. */
	int *endpoints;
	int nendpoints;
};

struct model {
	int refs;			/* atomic */
	uint64_t generation;		/* increases with every published model */
	struct model_node *nodes;
	int nnodes;
	struct model_workload *workloads;
	int nworkloads;
	struct model_service *services;
	int nservices;
	struct model_index *index;	/* private: address -> workload/service hash */
	/* Istio objects as `kubectl get -o json` prints them (CONTRACT.md "Istio resources"),
	 * and the MeshConfig as JSON: carried as read-only JSON (never NULL: an empty array and
	 * an empty object when absent) and compiled by the istio/ modules, which refuse bad
	 * objects one by one. Only their envelope is checked here: each resource is an object
	 * with string `apiVersion` and `kind`. Owned by the model; readers must not modify them. */
	json_t *resources;
	json_t *mesh_config;
};

/* Builds a model from the workloads-file JSON shape (CONTRACT.md). On error returns NULL and
 * writes one line to err ("workloads[3].addresses[0]: '10.1.x' is not an IP address").
 * The caller keeps ownership of root. The result has one reference. */
struct model *model_from_json(const json_t *root, char *err, size_t errlen);
/* Same, from text. */
struct model *model_parse(const char *text, size_t len, char *err, size_t errlen);
/* An empty model (no nodes, workloads or services); NULL on ENOMEM. */
struct model *model_new_empty(void);

struct model *model_ref(struct model *m);
/* Accepts NULL. */
void model_unref(struct model *m);

/* Lookups; the results live as long as the model reference. NULL when not found.
 * Addresses compare by IP only (port ignored). */
const struct model_workload *model_workload_by_ip(const struct model *m,
						  const struct sockaddr_storage *ip);
const struct model_service *model_service_by_vip(const struct model *m,
						 const struct sockaddr_storage *ip);
const struct model_service *model_service_by_name(const struct model *m, const char *ns,
						  const char *name);
const struct model_workload *model_workload_by_uid(const struct model *m, const char *uid);
const struct model_node *model_node_by_name(const struct model *m, const char *name);
/* w's first address of that family (AF_INET, AF_INET6), or NULL. */
const struct sockaddr_storage *model_workload_addr(const struct model_workload *w, int family);
/* The target port for service port `port`, or 0 when the service does not expose it. */
uint16_t model_service_target_port(const struct model_service *svc, uint16_t port);
/* The first service that has w among its endpoints and sends to `target_port` (a target
 * port, or a port without one): the inbound side's best guess of the service a client
 * dialled, as ztunnel guesses it. With `waypoint` (the connection came through that waypoint
 * Service), a service that names it comes first. NULL when none matches. */
const struct model_service *model_service_of_endpoint(const struct model *m,
						      const struct model_workload *w,
						      uint16_t target_port,
						      const struct model_service *waypoint);
/* The waypoint Service that traffic to svc (or to workload wl, when svc is NULL) must go
 * through, honouring the service's own label before its namespace's; NULL when none. */
const struct model_service *model_waypoint_for(const struct model *m,
					       const struct model_service *svc,
					       const struct model_workload *wl);

/* JSON dump of the model in the workloads-file shape (admin API, tests). New reference. */
json_t *model_to_json(const struct model *m);

/* ---- the published model (one per process) ---- */

/* Replaces the current model; takes over the caller's reference. Thread-safe. Listeners
 * registered with model_subscribe are called on the publishing thread. */
void model_publish(struct model *m);
/* A new reference to the current model (an empty one before the first publish). */
struct model *model_current(void);
typedef void (*model_listener_fn)(struct model *m, void *arg);
/* At most 8 listeners; -ENOSPC past that. */
int model_subscribe(model_listener_fn fn, void *arg);

#endif
