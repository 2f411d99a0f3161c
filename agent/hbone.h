/* SPDX-License-Identifier: Apache-2.0 */
/* HBONE: HTTP/2 CONNECT streams over mutual TLS 1.3 on port 15008 (CONTRACT.md "Identity and
 * tunnel"). The client pool carries outbound conns to other nodes and waypoints; the server
 * accepts inbound CONNECTs. Both plug a stream into a conn as a struct conn_end (agent/conn.h). */
#ifndef AMBIT_AGENT_HBONE_H
#define AMBIT_AGENT_HBONE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "agent/conn.h"
#include "agent/loop.h"
#include "tls/certstore.h"
#include "tls/ctx.h"
#include "tls/identity.h"

#define HBONE_PORT 15008
/* Response header carrying a short human reason on a non-200 answer (ours, not a standard). */
#define HBONE_REASON_HEADER "ambit-reason"

struct hbone_pool;
struct hbone_server;

/* A token bucket: burst events at once, refilled at per_s a second. 0 picks the default. */
struct hbone_rate {
	uint32_t burst;
	uint32_t per_s;
};

/* What a server tolerates from one peer connection before it cuts it off with GOAWAY
 * (ENHANCE_YOUR_CALM): HTTP/2 abuse from a peer that holds a valid mesh certificate
 * (CVE-2023-44487 rapid reset, CVE-2019-9512/9515/9518 floods, CVE-2024-28182). 0 picks the
 * default shown; docs/configuration.md, keys hbone.limits.*. */
struct hbone_limits {
	struct hbone_rate resets;	/* streams the peer resets before they are served, or
					 * within HBONE_PREMATURE_MS of opening (100, 10/s) */
	struct hbone_rate settings;	/* SETTINGS frames, ACKs aside (50, 5/s) */
	struct hbone_rate pings;	/* PING frames, ACKs aside (50, 5/s) */
	struct hbone_rate empty_frames;	/* DATA frames with no payload and no END_STREAM
					 * (100, 10/s) */
	uint32_t max_continuations;	/* CONTINUATION frames after one HEADERS (8) */
	uint32_t max_pending_streams;	/* streams opened and not answered yet (connecting
					 * upstream); more are refused with REFUSED_STREAM (256) */
};
#define HBONE_PREMATURE_MS 1000
/* The defaults of struct hbone_limits (the configuration shows the same). */
#define HBONE_DEFAULT_LIMITS { .resets = { 100, 10 }, .settings = { 50, 5 }, \
			       .pings = { 50, 5 }, .empty_frames = { 100, 10 }, \
			       .max_continuations = 8, .max_pending_streams = 256 }

/* Why a server cut a connection off (hbone_stats.cut_off[]). */
enum hbone_abuse {
	HBONE_ABUSE_RAPID_RESET,
	HBONE_ABUSE_SETTINGS_FLOOD,
	HBONE_ABUSE_PING_FLOOD,
	HBONE_ABUSE_EMPTY_FRAMES,
	HBONE_ABUSE_CONTINUATION_FLOOD,
	HBONE_ABUSE_N,
};
/* "rapid_reset", "settings_flood", "ping_flood", "empty_frames", "continuation_flood". */
const char *hbone_abuse_to_str(enum hbone_abuse a);

/* Knobs shared by both sides; 0 picks the default shown. */
struct hbone_opts {
	uint32_t max_streams;		/* client: streams per pooled connection (100);
					 * server: SETTINGS_MAX_CONCURRENT_STREAMS (1000) */
	uint32_t idle_timeout_ms;	/* client: close a connection idle this long (60000) */
	uint32_t ping_interval_ms;	/* PING period (10000) */
	uint32_t ping_timeout_ms;	/* no ACK and no bytes this long after a PING: dead
					 * (= ping_interval_ms) */
	uint32_t window;		/* HTTP/2 stream receive window, bytes (4 MiB) */
	uint32_t conn_window;		/* connection receive window (max(16 MiB, window)): all
					 * a connection holds for slow readers, in total */
	uint32_t connect_timeout_ms;	/* client: TCP+TLS+200 per stream; server: TLS
					 * handshake (10000) */
	uint32_t max_sessions;		/* server: concurrent inbound connections; more are
					 * closed at accept (4096). Client: unused */
	struct hbone_limits limits;	/* server: abuse limits per connection */
	bool defer_listen;		/* server: bind only; hbone_server_listen() starts
					 * accepting (an agent taking over from another) */
};

/* ---------------------------------------------------------------- client ---- */

struct hbone_header {
	const char *name;	/* lower case: "traceparent", "tracestate", "baggage", ... */
	const char *value;
};

/* What one outbound CONNECT asks for. Everything is borrowed for the call only (copied). */
struct hbone_request {
	const struct spiffe_id *source;		/* the client pod's identity: its cert is used */
	struct sockaddr_storage dst;		/* destination node IP:15008, or waypoint IP:15008 */
	const struct spiffe_id *expect;		/* accepted server identities (1..TLS_EXPECT_MAX):
						 * the destination workload's, or the waypoint's */
	size_t nexpect;
	const struct spiffe_id *sni;		/* identity encoded in SNI; NULL = expect[0] */
	bool no_sni;				/* send no SNI (ztunnel's pod-addressed form: dst
						 * is the destination pod's IP:15008, whose node
						 * answers with that pod's certificate) */
	const struct sockaddr_storage *key_src;	/* part of the pool key when set: the source
						 * pod's address (IP compared), as ztunnel keys
						 * its pool */
	const char *authority;			/* "podIP:port" direct, "VIP:port" to a waypoint */
	const struct hbone_header *headers;	/* extra request headers, may be NULL */
	size_t nheaders;
};

/* A pool of client connections. client_ctx is a mesh TLS_ROLE_CLIENT ctx, certs the store
 * the source certificates come from; both borrowed and must outlive the pool. opts may be
 * NULL. NULL + errno. */
struct hbone_pool *hbone_pool_new(struct loop *l, struct tls_ctx *client_ctx,
				  struct certstore *certs, const struct hbone_opts *opts);
/* Accepts NULL. Aborts every stream still open (their conns see a reset) and closes all
 * connections; the sockets are closed now, the memory in the loop's before-sleep step. */
void hbone_pool_free(struct hbone_pool *p);

/* Opens an outbound CONNECT stream for c and attaches it at CONN_UP (arming c's connect
 * timeout). The stream goes on a pooled connection keyed by (source identity, dst address,
 * SNI identity) with the same expected identities, or on a new one; it waits there for the
 * TLS handshake if needed. Only a connection opened with the source's current certificate
 * (certstore_get) takes new streams: once the cert is renewed, older connections drain
 * (GOAWAY, their streams finish) and close. Later: response 200 -> conn_established(c); anything else (status,
 * reset, handshake failure, wrong identity, timeout) -> conn_abort(c, CONN_UP, -err, "UF", why);
 * 401 or 403 (refused by the destination's policy) -> "DENY" with -EACCES.
 * When the source has no certificate yet (an asynchronous certstore answers EAGAIN), the
 * CONNECT waits for it (at most connect_timeout_ms, then conn_abort with the store's reason
 * "no certificate for <id>: ..."), resumed by hbone_pool_certs_changed.
 * 0, or -errno with nothing attached (EINVAL bad request, ESHUTDOWN draining, ENOMEM, or the
 * certstore's error): the caller aborts c. */
int hbone_connect(struct hbone_pool *p, const struct hbone_request *req, struct conn *c);
/* The certstore has news (its on_update, handed to the loop thread): CONNECTs waiting for a
 * source certificate that now has one go ahead. Accepts NULL. */
void hbone_pool_certs_changed(struct hbone_pool *p);
/* CONNECTs waiting for their source certificate. */
uint32_t hbone_pool_cert_waits(const struct hbone_pool *p);

/* Graceful drain: GOAWAY on every connection, no new streams (hbone_connect -> -ESHUTDOWN);
 * open streams finish, then the connections close. */
void hbone_pool_drain(struct hbone_pool *p);

/* ---------------------------------------------------------------- server ---- */

/* One inbound CONNECT, valid during the on_connect callback only. */
struct hbone_inbound {
	struct conn_end *end;			/* attach at CONN_DOWN, or answer it */
	const char *authority;			/* as received */
	struct sockaddr_storage target;		/* :authority parsed (IP:port) */
	const struct spiffe_id *peer_id;	/* verified client identity (tls_conn_peer_id) */
	const struct spiffe_id *local_id;	/* the identity we presented (SNI-selected cert),
						 * NULL if unknown */
	struct sockaddr_storage peer_addr;	/* the TCP peer: the other node or waypoint */
	struct sockaddr_storage local_addr;	/* our address the peer dialled: with
						 * pod_addressed, the destination pod's IP:15008 */
	bool pod_addressed;			/* TLS came to a pod's own IP:15008 (captured),
						 * local_id is that pod's identity */
	const char *traceparent;		/* header values, NULL when absent */
	const char *tracestate;
	const char *baggage;
	const char *forwarded;
	uint64_t held_ms;			/* how long on_connect has held it so far
						 * (0: its first dispatch) */
};

struct hbone_server_cbs {
	/* A valid CONNECT arrived (method CONNECT, parseable :authority, verified peer).
	 * The agent either attaches req->end to a new conn at CONN_DOWN and connects upstream
	 * (returning 0; the 200 goes out by itself once conn_established(c) is called, and a
	 * conn_abort before that answers 503 with the reason's errno text), or answers now with
	 * hbone_stream_respond() (returning 0), or holds it unanswered (returning -EINPROGRESS
	 * with nothing attached: the server keeps it, and hbone_server_retry_held calls
	 * on_connect again for it, held_ms telling for how long; a peer reset or a closed
	 * connection drops it meanwhile). Another negative return answers 503. */
	int (*on_connect)(void *arg, const struct hbone_inbound *req);
	/* Pod-addressed connections (hbone_server_listen_pod): the certificate to present for
	 * the dialled address (the original destination, a pod's IP:15008), chosen before the
	 * handshake and whatever the SNI says. A new reference, or NULL to refuse: the
	 * connection is then closed (the callee logs and counts why). */
	struct tls_cert *(*pod_cert)(void *arg, const struct sockaddr_storage *dialed,
				     const struct sockaddr_storage *peer);
	/* Optional: an inbound connection failed before it was up (TLS refused: certificate,
	 * protocol, timeout). err is the -errno, reason the TLS layer's words (logged already). */
	void (*on_refused)(void *arg, bool pod_addressed, int err, const char *reason);
	void *arg;
};

/* Listens on bind_addr (IP:15008) with server_ctx (a mesh TLS_ROLE_SERVER ctx, borrowed,
 * must outlive the server). cbs is copied, opts may be NULL. NULL + errno (logged). */
struct hbone_server *hbone_server_new(struct loop *l, const struct sockaddr_storage *bind_addr,
				      struct tls_ctx *server_ctx, const struct hbone_server_cbs *cbs,
				      const struct hbone_opts *opts);
/* Adds a listener for pod-addressed HBONE: fd is a listening transparent socket that the eBPF
 * capture feeds with TCP towards local pods' port 15008 (the accepted socket's local address is
 * the pod's). Needs cbs.pod_cert. Takes fd on success (closed with the server, or at drain).
 * 0, -EINVAL, -ENOSPC (two at most: IPv4 and IPv6), or the loop's -errno. */
int hbone_server_listen_pod(struct hbone_server *s, int fd);
/* Accepts NULL. Closes the listener, resets every open stream, frees (see hbone_pool_free). */
void hbone_server_free(struct hbone_server *s);
/* Starts accepting on a server made with opts.defer_listen (a no-op otherwise). The socket is
 * bound with SO_REUSEPORT, so another process (the agent being upgraded) may hold the port
 * too; the kernel spreads new connections over both until that one closes. 0 or -errno. */
int hbone_server_listen(struct hbone_server *s);
/* The bound address (port filled when bind_addr had port 0). */
int hbone_server_addr(const struct hbone_server *s, struct sockaddr_storage *out);
/* Graceful drain: closes the listener, sends GOAWAY (last processed stream id) on every
 * connection; open streams finish, then connections close. Held CONNECTs and handshakes are
 * dispatched again at once (hbone_server_retry_held): a CONNECT that on_connect would hold
 * again is answered 503 instead, now and for the rest of the drain. The agent frees the
 * server at its deadline (hbone_server_stream_count() tells when nothing is left). */
void hbone_server_drain(struct hbone_server *s);

/* Answers an inbound stream that is not attached to a conn (or whose conn is still
 * connecting): status 200 starts the tunnel, anything else ends the stream with status and
 * reason (HBONE_REASON_HEADER; may be NULL). Returns 0, -EALREADY if already answered,
 * -EINVAL for a client stream. The end stays valid until answered when never attached;
 * once attached, until the conn releases it. */
int hbone_stream_respond(struct conn_end *end, int status, const char *reason);

/* ------------------------------------------------------- introspection ---- */

enum hbone_sess_st {
	HBONE_ST_CONNECTING,	/* client: TCP connect in progress */
	HBONE_ST_HANDSHAKE,	/* TLS handshake; client streams queue here */
	HBONE_ST_READY,		/* HTTP/2 session up, streams may open */
	HBONE_ST_DRAINING,	/* GOAWAY sent or received: no new streams, open ones finish */
	HBONE_ST_CLOSED,	/* torn down; freed in the before-sleep step */
};
const char *hbone_sess_st_to_str(enum hbone_sess_st st);

/* One pooled (client) or accepted (server) connection, for the admin API. Pointers are valid
 * during the callback only. */
struct hbone_conn_info {
	bool server;				/* accepted on 15008 */
	bool pod_addressed;			/* server: accepted at a pod's IP:15008 (captured);
						 * client: dialled a pod that way, no SNI */
	enum hbone_sess_st state;
	struct sockaddr_storage peer_addr;
	const struct spiffe_id *local_id;	/* client: source identity; server: presented */
	const struct spiffe_id *peer_id;	/* verified peer identity, NULL before handshake */
	const struct spiffe_id *expect_id;	/* client: expected server identity (expect[0]) */
	const char *cert_serial;		/* serial of the cert we presented (hex), NULL
						 * before the handshake */
	uint32_t streams;			/* open streams */
	uint32_t queued;			/* client: streams waiting for the handshake */
	uint64_t streams_total;			/* streams carried since it opened */
	uint64_t age_ms;
	uint64_t idle_ms;			/* since the last stream ended (0 while busy) */
	uint64_t bytes_sent, bytes_received;	/* TLS payload (HTTP/2 frames) */
	size_t buffered;			/* bytes held in stream overflow queues */
	size_t unconsumed;			/* received, window not yet given back: overflow
						 * plus what conns still hold (<= conn_window) */
	const char *blocked;			/* why it waits, e.g. "tls_want_read", or "" */
};
typedef void (*hbone_visit_fn)(const struct hbone_conn_info *info, void *arg);
void hbone_pool_foreach(struct hbone_pool *p, hbone_visit_fn fn, void *arg);
void hbone_server_foreach(struct hbone_server *s, hbone_visit_fn fn, void *arg);

struct hbone_stats {
	uint32_t conns;			/* live connections */
	uint32_t streams;		/* open streams (client: including queued) */
	uint64_t conns_total;		/* opened since start */
	uint64_t streams_total;
	size_t buffered;		/* bytes held in stream overflow queues */
	size_t unconsumed;		/* received, window not yet given back (see conn_info) */
	uint64_t refused_total;		/* server: connections closed at accept (max_sessions) */
	/* server, abuse limits (struct hbone_limits): */
	uint64_t cut_off[HBONE_ABUSE_N];	/* connections cut off, by reason */
	uint64_t streams_refused_total;	/* REFUSED_STREAM past max_pending_streams */
	uint64_t reset_before_dial_total; /* streams reset before their upstream was dialled
					   * (so it never was) */
};
void hbone_pool_stats(struct hbone_pool *p, struct hbone_stats *out);
void hbone_server_stats(struct hbone_server *s, struct hbone_stats *out);
/* Open inbound streams (drain progress). */
uint32_t hbone_server_stream_count(const struct hbone_server *s);
/* Inbound CONNECTs held by on_connect (-EINPROGRESS), not answered yet, plus inbound
 * handshakes held at the ClientHello by the server ctx's cert_wait (tls/ctx.h). */
uint32_t hbone_server_held(const struct hbone_server *s);
/* Resumes every held handshake (cert_wait is asked again), then dispatches every held CONNECT
 * to on_connect again, in the order they were held (each may be held again). Loop thread,
 * never from inside on_connect or cert_wait. Accepts NULL. */
void hbone_server_retry_held(struct hbone_server *s);

#endif
