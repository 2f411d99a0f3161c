/* SPDX-License-Identifier: Apache-2.0 */
/* Mesh policy between the proxy and HBONE: which identities and certificates a connection
 * uses, what an outbound CONNECT carries (authority, traceparent, baggage, forwarded), and
 * what an inbound CONNECT may reach (a local enrolled workload, source IP preserved only when
 * the peer's identity vouches for it). */
#ifndef AMBIT_AGENT_MESH_H
#define AMBIT_AGENT_MESH_H

#include <jansson.h>
#include <sys/socket.h>

#include "agent/loop.h"
#include "agent/proxy.h"

struct mesh;
struct certstore;
struct tls_ca;
struct spiffe_id;
struct hbone_inbound;
struct hbone_conn_info;
struct hbone_limits;
struct hbone_stats;
struct hbone_request;

struct mesh_opts {
	struct loop *loop;
	struct proxy *proxy;
	struct certstore *certs;
	struct tls_ca *ca;
	const char *node_name;
	const char *trust_domain;
	struct sockaddr_storage hbone_addr;	/* node IP:15008 */
	uint32_t max_streams, idle_timeout_ms, ping_interval_ms, window, connect_timeout_ms;
	uint32_t max_inbound;		/* concurrent inbound HBONE connections */
	const struct hbone_limits *limits;	/* abuse limits on 15008 (copied); NULL: defaults */
	bool defer_listen;		/* 15008 bound only; mesh_start_listening() accepts */
	bool dial_pod;			/* hbone.dial "pod": ztunnel's form (mesh_hbone_dial) */
	/* Serve pod-addressed HBONE (ztunnel's form) on transparent listeners 127.0.0.1:15008
	 * and [::1]:15008, for the eBPF capture to feed (mesh_pod_listener_fd). */
	bool pod_listeners;
	/* An inbound CONNECT whose target is not a local enrolled workload in the applied model
	 * (mesh_model_applied) but may become one (unknown, or this node's and not enrolled) is
	 * held this long for the model to catch up, as ztunnel waits for a workload it does not
	 * know yet; 0 refuses at once. At most wait_max are held at a time. */
	uint32_t wait_ms, wait_max;
	/* Is the local pod at addr captured now (its tc programs attached)? A local enrolled pod
	 * whose capture is not in place yet waits too (mesh_retry_held when it is). NULL: no
	 * capture here, every pod counts as captured. */
	bool (*captured)(void *arg, const struct sockaddr_storage *addr);
	void *captured_arg;
};

/* What an inbound CONNECT gets, from its target's workload in the applied model. */
enum mesh_wait {
	MESH_WAIT_SERVE,	/* a local enrolled workload: serve it */
	MESH_WAIT_HOLD,		/* not one yet, may become one: hold it for the model */
	MESH_WAIT_REFUSE,	/* not one (another node's), or the wait is over or full */
};
/* The decision for target workload dst (NULL: unknown) on node `node`, captured or not yet
 * (opts.captured), held for held_ms so far, with nheld other CONNECTs held now, under wait_ms
 * and wait_max (struct mesh_opts). */
enum mesh_wait mesh_wait_decide(const struct model_workload *dst, const char *node,
				bool captured, uint64_t held_ms, uint32_t wait_ms, uint32_t nheld,
				uint32_t wait_max);

/* ---- policy helpers, shared with the waypoint ---- */
/* spiffe://td/ns/NS/sa/SA of w. 0 or -EINVAL (a name that is not a valid SPIFFE part). */
int mesh_workload_id(const char *td, const struct model_workload *w, struct spiffe_id *id);
/* The `forwarded` value for a client address (RFC 7239 for=). */
void mesh_forwarded_for(const struct sockaddr_storage *src, char *out, size_t len);
/* The CONNECT's `tracestate` of a source agent that reports CLIENT request spans for the
 * conn (docs/request-spans.md): W3C tracestate member "ambit=rq". */
#define MESH_TRACESTATE_KEY "ambit"
#define MESH_TRACESTATE_REQUEST_SPANS MESH_TRACESTATE_KEY "=rq"
/* Does a CONNECT's tracestate value (NULL when absent) say so? A malformed one says nothing. */
bool mesh_request_spans_said(const char *tracestate);
/* The `baggage` value with w's facts (W3C Baggage); "" when w is NULL or it does not fit. */
void mesh_baggage_of(const struct model_workload *w, char *out, size_t len);
/* The client workload named by req's `forwarded: for=IP`, trusted only when that workload's
 * identity is the verified peer identity; else the workload at the peer's own address under
 * the same check (an HBONE-native peer such as a waypoint); else NULL (the peer vouches for
 * nobody else). *src gets the IP (port 0). */
const struct model_workload *mesh_vouched_source(const struct model *m, const char *td,
						 const struct hbone_inbound *req,
						 struct sockaddr_storage *src);
/* The abuse-limit counters of a server's stats as JSON (admin /hbone "server".limits). */
json_t *mesh_hbone_limits_json(const struct hbone_stats *st);
/* Registers the ambit_hbone_* abuse counters of server (read at scrape time; the pointer is
 * borrowed until metrics_reset). 0 or -ENOSPC. */
struct hbone_server;
int mesh_hbone_metrics_register(struct hbone_server *server);
/* Where an outbound CONNECT goes, by hbone.dial. Node form (dial_pod false): node:15008, SNI
 * naming the destination identity, pooled per (source identity, node, destination identity).
 * Pod form, as ztunnel sends it: the destination pod's own target IP, port 15008, no SNI, pooled
 * as ztunnel keys it (source identity, destination identities, destination pod IP:15008, source
 * pod IP src). A waypoint (not NULL) is dialled at its own pod IP either way. Fills req->dst,
 * no_sni and key_src (src is borrowed). 0, or -EHOSTUNREACH when the address is unknown. */
int mesh_hbone_dial(bool dial_pod, const struct sockaddr_storage *node,
		    const struct sockaddr_storage *waypoint, const struct sockaddr_storage *target,
		    const struct sockaddr_storage *src, struct hbone_request *req);
/* hbone_*_foreach visitor appending one JSON object per connection to the array arg. */
void mesh_hbone_conn_json(const struct hbone_conn_info *i, void *json_array);

/* Creates the TLS contexts, the client pool and the 15008 server, and installs itself as the
 * proxy's mesh route. NULL + errno (logged). */
struct mesh *mesh_new(const struct mesh_opts *opts);
void mesh_free(struct mesh *m);
/* Starts accepting on 15008 (made with opts.defer_listen). 0 or -errno. */
int mesh_start_listening(struct mesh *m);
/* The pod-addressed HBONE listener of family (AF_INET, AF_INET6) for the capture's sockmap,
 * or -1 (none: pod_listeners off, or no IPv6). Owned by the mesh. */
int mesh_pod_listener_fd(const struct mesh *m, int family);
/* SIGTERM: GOAWAY on every HBONE connection, stop accepting on 15008. */
void mesh_drain(struct mesh *m);
/* The certstore has news (runtime_identity.on_certs; arg is the mesh): outbound CONNECTs
 * waiting for their source certificate go ahead. */
void mesh_certs_changed(void *arg);
/* runtime_identity on_roots: a reloaded trust bundle for new HBONE handshakes, both ways;
 * open connections stay. Loop thread. */
void mesh_roots_changed(void *arg, struct tls_ca *roots);
/* tls_ctx_set_roots on a client and a server context, logging a failure (the waypoint's too). */
struct tls_ctx;
void mesh_set_ctx_roots(struct tls_ctx *client, struct tls_ctx *server, struct tls_ca *roots);
/* Open inbound streams (drain progress). */
unsigned mesh_inbound_streams(const struct mesh *m);
/* The agent applied model (its capture in place for the model's local enrolled pods):
 * inbound CONNECTs are checked against it from now on, and the held ones are tried again.
 * Takes a new reference. Loop thread. */
void mesh_model_applied(struct mesh *m, struct model *model);
/* Something held CONNECTs wait for may have come (a pod's capture got attached): they are
 * tried again. Loop thread. */
void mesh_retry_held(struct mesh *m);
/* Pooled and accepted HBONE connections (admin API /hbone). New reference. */
json_t *mesh_hbone_json(struct mesh *m);

#endif
