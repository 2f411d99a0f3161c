/* SPDX-License-Identifier: Apache-2.0 */
/* The waypoint's L7 proxy: terminates HBONE on the pod's IP:15008 for the services (and
 * workloads) that name this waypoint, reads HTTP/1.x on each CONNECT stream (anything else
 * passes as TCP), routes every request by the HTTPRoutes attached to its service (routes.c),
 * balances it over the chosen service's endpoints and carries it over
 * HBONE to the endpoint's node agent under the waypoint's own identity, with one span per
 * request, after the L7 AuthorizationPolicies attached to it (istio/authz). Used by
 * agent/waypoint/main.c (ambit-waypoint). */
#ifndef AMBIT_AGENT_WAYPOINT_WAYPOINT_H
#define AMBIT_AGENT_WAYPOINT_WAYPOINT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "agent/loop.h"
#include "tls/identity.h"

struct waypoint;
struct certstore;
struct tls_ca;
struct otlp_tracer;
struct model;
struct model_workload;

enum waypoint_lb {
	WAYPOINT_LB_ROUND_ROBIN,
	WAYPOINT_LB_LEAST_REQUEST,
};

struct waypoint_opts {
	struct loop *loop;
	struct certstore *certs;		/* borrowed; issues the waypoint's own certificate */
	struct tls_ca *ca;			/* mesh roots */
	struct otlp_tracer *tracer;		/* NULL: no request spans */
	const char *trust_domain;
	const char *root_namespace;		/* Istio's root namespace (NULL: istio-system) */
	const char *name, *namespace;		/* the waypoint Service this process serves */
	const char *node_name;			/* k8s.node.name of the resource, may be NULL */
	/* The pod's own IP: names its workload (hence its identity) in the model. Family 0:
	 * the first local interface address that is an endpoint of the waypoint Service. */
	struct sockaddr_storage pod_ip;
	struct sockaddr_storage hbone_addr;	/* where to listen (pod IP:15008) */
	enum waypoint_lb lb;
	uint32_t connect_timeout_ms, buffer_size;
	uint32_t max_streams, idle_timeout_ms, ping_interval_ms, window;
	uint32_t max_inbound;		/* concurrent inbound HBONE connections */
	const struct hbone_limits *limits;	/* abuse limits on 15008 (copied); NULL: defaults */
	uint32_t sniff_timeout_ms;		/* no byte from the client this long: TCP (1000) */
	/* HTTP/2 limits (config "http2"; 0: the default in brackets) */
	uint32_t h2_conns_per_endpoint;		/* upstream connections per endpoint (4) */
	uint32_t h2_client_streams;		/* SETTINGS_MAX_CONCURRENT_STREAMS to clients (100) */
	uint32_t h2_pending;			/* requests waiting for room, in all (1024) */
	bool h1_trailers;			/* http1.enable_trailers: HTTP/1.x trailer sections
						 * are forwarded (else dropped, as Istio's Envoy) */
	bool dial_pod;				/* hbone.dial "pod": endpoints at their pod IP:15008,
						 * no SNI (mesh_hbone_dial) */
};

/* Listens and starts serving. NULL + errno (logged). */
struct waypoint *waypoint_new(const struct waypoint_opts *opts);
/* Accepts NULL. Resets what is still open. Call once loop_run() has returned (the loop is
 * stopped): it runs the loop's before-sleep step again so that the deferred frees happen. */
void waypoint_free(struct waypoint *w);
/* SIGTERM: stop accepting CONNECTs (GOAWAY), close idle keep-alive connections, answer
 * in-flight requests with `connection: close`. */
void waypoint_drain(struct waypoint *w);
/* The certstore has news (runtime_identity.on_certs; arg is the waypoint): CONNECTs to
 * backends waiting for the waypoint's certificate go ahead. */
void waypoint_certs_changed(void *arg);
/* runtime_identity on_roots: a reloaded trust bundle for new HBONE handshakes. Loop thread. */
void waypoint_roots_changed(void *arg, struct tls_ca *roots);
/* Client streams still open (drain progress). */
unsigned waypoint_sessions(const struct waypoint *w);

/* The waypoint's own workload in m (by pod IP) and its identity. 0 or -ENOENT. */
int waypoint_self(struct waypoint *w, const struct model *m, const struct model_workload **wl,
		  struct spiffe_id *id);

/* Admin API: sessions, upstreams, balancing, identity. New reference. */
json_t *waypoint_status_json(struct waypoint *w);
json_t *waypoint_hbone_json(struct waypoint *w);
/* Admin API /policies: the AuthorizationPolicy and PeerAuthentication set in force, in the
 * node agent's shape ({root_namespace, model_generation, stats, policies}), each policy with
 * "waypoint_applies": whether one of its targetRefs names this waypoint (Gateway or Service)
 * or a Service it serves. New reference; NULL on ENOMEM. */
json_t *waypoint_policies_json(struct waypoint *w);
/* Appends the istio_requests_total series (Prometheus text) to f. */
void waypoint_metrics_write(struct waypoint *w, FILE *f);

#endif
