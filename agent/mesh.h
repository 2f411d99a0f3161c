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

struct mesh_opts {
	struct loop *loop;
	struct proxy *proxy;
	struct certstore *certs;
	struct tls_ca *ca;
	const char *node_name;
	const char *trust_domain;
	struct sockaddr_storage hbone_addr;	/* node IP:15008 */
	uint32_t max_streams, idle_timeout_ms, ping_interval_ms, window, connect_timeout_ms;
};

/* Creates the TLS contexts, the client pool and the 15008 server, and installs itself as the
 * proxy's mesh route. NULL + errno (logged). */
struct mesh *mesh_new(const struct mesh_opts *opts);
void mesh_free(struct mesh *m);
/* SIGTERM: GOAWAY on every HBONE connection, stop accepting on 15008. */
void mesh_drain(struct mesh *m);
/* Open inbound streams (drain progress). */
unsigned mesh_inbound_streams(const struct mesh *m);
/* Pooled and accepted HBONE connections (admin API /hbone). New reference. */
json_t *mesh_hbone_json(struct mesh *m);

#endif
