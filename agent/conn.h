/* SPDX-License-Identifier: Apache-2.0 */
/* A proxied connection: two ends (downstream = who connected to us, upstream = where we
 * forward) spliced through one bounded buffer per direction. An end is a TCP socket
 * (agent/conn.c: conn_tcp_end) or an HBONE stream (agent/hbone.c); the conn does not care.
 * Owns the connection's accounting: bytes, state, the span and the access log, metrics. */
#ifndef AMBIT_AGENT_CONN_H
#define AMBIT_AGENT_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "agent/loop.h"

struct conn;
struct conn_end;

enum conn_side {
	CONN_DOWN = 0,	/* the accepted side: the client pod's socket, or an inbound HBONE stream */
	CONN_UP = 1,	/* the forwarded side: a TCP connect, or an outbound HBONE stream */
};

enum conn_kind {
	CONN_OUTBOUND,		/* captured on 15001 from a local pod */
	CONN_INBOUND_PLAIN,	/* captured on 15006 towards a local pod, from outside the mesh */
	CONN_INBOUND_HBONE,	/* CONNECT stream received on 15008 */
};

enum conn_st {
	CONN_ST_CONNECTING,	/* upstream not established yet; downstream bytes are buffered */
	CONN_ST_OPEN,		/* both ends up, bytes flow both ways */
	CONN_ST_HALF_CLOSED,	/* one direction finished (FIN passed on), the other still flows */
	CONN_ST_CLOSED,		/* both directions done or aborted; freed in the before-sleep step */
};
const char *conn_st_to_str(enum conn_st st);

/* What an end implements. All are called on the loop thread. */
struct conn_end_ops {
	const char *name;	/* "tcp", "hbone" */
	/* Bytes (or EOF) are waiting towards this end: write what it can now
	 * (conn_out_peek/conn_out_consume), shut down its write side when conn_out_eof(). */
	void (*kick_write)(struct conn_end *e);
	/* The buffer this end reads into has room again: resume reading. */
	void (*kick_read)(struct conn_end *e);
	/* The conn is done with this end: release everything (close the socket, RST or
	 * finish the stream). err 0 = graceful, else -errno and the peer should see a reset.
	 * Must not call back into the conn. */
	void (*release)(struct conn_end *e, int err);
};

/* Embedded in the end's own object. */
struct conn_end {
	const struct conn_end_ops *ops;
	struct conn *conn;
	enum conn_side side;
};

/* Response flags, as Envoy/Istio spell them in metrics and logs. */
#define CONN_FLAG_UPSTREAM_CONNECT_FAILURE "UF"
#define CONN_FLAG_NO_ROUTE "NR"
#define CONN_FLAG_UPSTREAM_RESET "UR"
#define CONN_FLAG_DOWNSTREAM_RESET "DR"	/* envoy: DC downstream connection termination */
#define CONN_FLAG_DENIED "DENY"
#define CONN_FLAG_OVERFLOW "UO"

/* The facts a conn carries for logs, spans, metrics and the admin API. Strings are owned
 * copies (workload data must outlive a model swap). NULL when unknown. */
struct conn_peer {
	char *workload;		/* pod name */
	char *namespace;
	char *service_account;
	char *canonical_service;
	char *principal;	/* SPIFFE ID */
	char *node;
};

/* Frees the strings of p (not p itself). */
void conn_peer_fini(struct conn_peer *p);

struct conn_info {
	enum conn_kind kind;
	struct sockaddr_storage src;		/* client address (pod IP:port) */
	struct sockaddr_storage orig_dst;	/* what the client dialled (pod, VIP or outside) */
	struct sockaddr_storage target;		/* where the bytes go (endpoint IP:port) */
	struct sockaddr_storage via;		/* HBONE peer (node:15008 / waypoint), or family 0 */
	struct conn_peer source;
	struct conn_peer destination;
	char *service;				/* destination service FQDN, if a service was dialled */
	bool mtls;				/* connection_security_policy: mutual_tls vs unknown */
	bool via_waypoint;
	bool waypoint_bypass;	/* the destination wants a waypoint; this did not come through it */
	/* W3C trace context: the one received (inbound HBONE; "" if none), and the conn's own
	 * span context that telemetry sets at open and HBONE propagates ("" when not traced). */
	char parent_traceparent[64];
	char traceparent[64];
	/* Request spans (docs/request-spans.md): outbound, this agent reports CLIENT spans of the
	 * conn's requests, and its CONNECT says so (tracestate "ambit=rq"); inbound, the CONNECT
	 * said so, so SERVER spans may name the CLIENT spans (derived IDs) as parents. */
	bool request_spans;
	/* L4 authorization (docs/policy.md), owned, NULL when none: the policy that denied
	 * ("NS/NAME"; the source side reads it from the 401's reason), and what dry-run
	 * policies would have decided ("deny: denied by NS/NAME"; never enforced). */
	char *authz_policy;
	char *authz_dry_run;
	/* Refused by policy before carrying data (inbound check, or the source side's 401): every
	 * istio_tcp_* series of the conn says DENY, its open one included. */
	bool denied;
};

struct conn_opts {
	uint32_t buffer_size;		/* per direction; allocated only while bytes are in flight */
};

/* A new conn with no ends yet (owned by the conn registry: it frees itself when done).
 * NULL on ENOMEM. */
struct conn *conn_new(struct loop *l, const struct conn_opts *opts);
/* Attaches an end. The end must stay valid until its release() is called. */
void conn_attach(struct conn *c, enum conn_side side, struct conn_end *e);
/* Info the proxy filled in; valid for the conn's life. */
struct conn_info *conn_info(struct conn *c);
uint64_t conn_id(const struct conn *c);
enum conn_st conn_state(const struct conn *c);
struct loop *conn_loop(const struct conn *c);

/* Aborts the conn with UF if the upstream is not established within ms. */
void conn_arm_connect_timeout(struct conn *c, uint32_t ms);
/* The upstream end is connected: bytes start flowing towards it. */
void conn_established(struct conn *c);

/* ---- for ends: reading (end -> buffer towards the other side) ---- */
/* Room for bytes read from `side`; 0 = stop reading until kick_read. */
size_t conn_in_room(const struct conn *c, enum conn_side side);
/* A contiguous writable region for bytes from `side` (allocates the buffer on first use).
 * Returns its length (<= room), 0 when full; -ENOMEM aborts the conn. */
ssize_t conn_in_region(struct conn *c, enum conn_side side, uint8_t **p);
/* n bytes were written into the region. */
void conn_in_commit(struct conn *c, enum conn_side side, size_t n);
/* Copies (all or nothing is not required): returns bytes taken. */
size_t conn_in_write(struct conn *c, enum conn_side side, const void *data, size_t n);
/* The end at `side` finished sending (FIN / END_STREAM). */
void conn_in_eof(struct conn *c, enum conn_side side);

/* ---- for ends: writing (buffer -> end) ---- */
/* Contiguous bytes waiting to go to `side`; *p set when > 0. */
size_t conn_out_peek(struct conn *c, enum conn_side side, const uint8_t **p);
/* Total bytes waiting to go to `side`. */
size_t conn_out_pending(const struct conn *c, enum conn_side side);
/* n bytes were written to `side`. */
void conn_out_consume(struct conn *c, enum conn_side side, size_t n);
/* True once the other side sent EOF and everything has been written: shut down now. */
bool conn_out_eof(const struct conn *c, enum conn_side side);
/* The end at `side` has shut down its write direction (FIN sent). */
void conn_out_done(struct conn *c, enum conn_side side);

/* The end at `side` failed (reset, connect error): the conn aborts, the other end is
 * released with a reset. flag is a CONN_FLAG_*, reason a short text for logs and spans. */
void conn_abort(struct conn *c, enum conn_side side, int err, const char *flag, const char *reason);

/* ---- the TCP end ---- */
struct conn_tcp_end;
/* Wraps a connected (or connecting, when `connecting`) non-blocking socket; takes the fd. */
struct conn_end *conn_tcp_end_new(struct loop *l, int fd, bool connecting);
/* Starts polling the socket; call after conn_attach. */
void conn_tcp_end_start(struct conn_end *e);

/* ---- registry (admin API, metrics, drain) ---- */
typedef void (*conn_visit_fn)(struct conn *c, void *arg);
void conn_foreach(conn_visit_fn fn, void *arg);
size_t conn_count(void);
uint64_t conn_bytes(const struct conn *c, enum conn_side from);
uint64_t conn_start_ms(const struct conn *c);

/* Hooks the agent installs (spans, access log, metrics); all optional. */
struct conn_hooks {
	void (*opened)(struct conn *c);		/* after the proxy filled info, before bytes */
	void (*closed)(struct conn *c, int err, const char *flag, const char *reason);
	/* Only for conns marked with conn_set_observed: bytes read from `from` as they enter
	 * the buffer (read-only, borrowed for the call: never kept, changed or held back). */
	void (*data)(struct conn *c, enum conn_side from, const uint8_t *p, size_t n);
	/* The same conns: `from` sent EOF. */
	void (*eof)(struct conn *c, enum conn_side from);
};
void conn_set_hooks(const struct conn_hooks *h);
/* The agent stores its span (or anything) here; freed by the closed hook. */
void *conn_user(const struct conn *c);
void conn_set_user(struct conn *c, void *p);
/* Turns the data/eof hooks on or off for c (off by default). */
void conn_set_observed(struct conn *c, bool on);
bool conn_observed(const struct conn *c);
/* Call once the proxy has filled conn_info: runs the opened hook. */
void conn_opened(struct conn *c);

#endif
