/* SPDX-License-Identifier: Apache-2.0 */
/* The L4 proxy: the transparent listeners that eBPF hands captured connections to (15001
 * outbound, 15006 inbound plaintext; an IPv4 and an IPv6 socket each), destination resolution against the mesh model, and the
 * upstream leg (plain TCP, or HBONE through the hooks in struct proxy_mesh). */
#ifndef AMBIT_AGENT_PROXY_H
#define AMBIT_AGENT_PROXY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "agent/conn.h"
#include "agent/loop.h"
#include "agent/workloads.h"

struct proxy;

/* How an upstream leg is carried when the destination is in the mesh (set by the agent when
 * HBONE is available; NULL = plaintext everywhere). */
struct proxy_route {
	const struct model_workload *src;	/* client workload (may be NULL for inbound plain) */
	const struct model_workload *dst;	/* destination workload (endpoint) */
	const struct model_service *svc;	/* the service dialled, if any */
	const struct model_service *waypoint;	/* waypoint to go through, if any */
	const struct model_workload *waypoint_wl; /* the chosen waypoint pod */
	struct sockaddr_storage target;		/* endpoint IP:target port */
	const struct model_node *dst_node;
};

struct proxy_mesh {
	/* Opens the upstream leg of c through HBONE: attaches an end at CONN_UP. 0 or -errno
	 * (then the proxy aborts the conn). */
	int (*connect)(void *arg, struct conn *c, const struct model *m, const struct proxy_route *r);
	void *arg;
};

struct proxy_opts {
	struct loop *loop;
	const char *node_name;
	const char *trust_domain;
	struct sockaddr_storage outbound_addr;	/* 127.0.0.1:15001 */
	struct sockaddr_storage inbound_addr;	/* 127.0.0.1:15006 */
	/* The IPv6 listeners (IPV6_V6ONLY); when not AF_INET6 (left zero), [::1] with the IPv4
	 * listener's port. Skipped, not an error, on a host without IPv6. */
	struct sockaddr_storage outbound6_addr;
	struct sockaddr_storage inbound6_addr;
	uint32_t connect_timeout_ms;
	uint32_t max_connections;
	uint32_t buffer_size;
	bool defer_listen;	/* bind only; proxy_start_listening() starts accepting */
};

/* Creates and listens on the transparent sockets (IPv4 and IPv6). They are bound with
 * SO_REUSEPORT, so the agent being upgraded may hold the ports too (docs/kubernetes.md); a
 * holder that did not set it (an agent from before surge upgrades) leaves an ephemeral port,
 * which capture does not mind (the sockmap names sockets, not ports). NULL + errno (logged). */
struct proxy *proxy_new(const struct proxy_opts *opts);
/* Starts accepting on listeners made with opts.defer_listen (a no-op otherwise): from here
 * on the listeners may be handed to the BPF sockmap. 0 or -errno (logged). */
int proxy_start_listening(struct proxy *p);
void proxy_free(struct proxy *p);
int proxy_outbound_fd(const struct proxy *p);
int proxy_inbound_fd(const struct proxy *p);
/* The IPv6 listeners' fds; -1 on a host without IPv6. */
int proxy_outbound6_fd(const struct proxy *p);
int proxy_inbound6_fd(const struct proxy *p);
/* A non-blocking transparent (IP_TRANSPARENT / IPV6_TRANSPARENT; IPv6 also IPV6_V6ONLY)
 * socket bound to addr with SO_REUSEPORT, as the capture listeners are, not listening yet
 * (listening joins the port's reuseport group: an agent taking over from another waits until it
 * can serve): the fd, or -errno. */
int proxy_bind_transparent(const struct sockaddr_storage *addr);
/* The same, listening: the fd, or -errno. */
int proxy_listen_transparent(const struct sockaddr_storage *addr);
void proxy_set_mesh(struct proxy *p, const struct proxy_mesh *mesh);
/* Stops accepting (drain). Existing connections continue. */
void proxy_stop_accepting(struct proxy *p);

/* Shared with the HBONE inbound path: opens a plain TCP leg from the agent to target,
 * bound to src_ip (transparent, source preserved) when src_ip is non-NULL; attaches it at
 * CONN_UP and arms the connect timeout. 0 or -errno. */
int proxy_connect_tcp(struct proxy *p, struct conn *c, const struct sockaddr_storage *target,
		      const struct sockaddr_storage *src_ip);
/* Copies workload facts into a conn peer (strings duplicated). */
int proxy_peer_fill(struct conn_peer *peer, const struct model_workload *w, const char *trust_domain);
/* "name.namespace.svc.cluster.local" (owned). */
char *proxy_service_fqdn(const struct model_service *s);
/* Inbound side: sets ci->service (when unset) to the service the client most likely dialled,
 * the first that selects dst with ci->target's port as a target port, preferring one served
 * by `waypoint` when the connection came through it (ztunnel's guess: the tunnel carries the
 * pod address only). 0, or -ENOMEM. */
int proxy_inbound_service(struct conn_info *ci, const struct model *m,
			  const struct model_workload *dst, const struct model_service *waypoint);
/* Picks a service endpoint (round robin) and its target port; NULL when none. */
const struct model_workload *proxy_pick_endpoint(struct proxy *p, const struct model *m,
						 const struct model_service *svc, uint16_t port,
						 int family, struct sockaddr_storage *target);
/* The waypoint Service that should front traffic to workload w: its own, else the first
 * one named by a service it is an endpoint of. NULL when none. */
const struct model_service *proxy_protecting_waypoint(const struct model *m,
						      const struct model_workload *w);
/* True when w is a pod of the waypoint Service wp. */
bool proxy_is_waypoint_pod(const struct model *m, const struct model_service *wp,
			   const struct model_workload *w);
bool proxy_workload_is_local(const struct proxy *p, const struct model_workload *w);

#endif
