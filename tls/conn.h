/* SPDX-License-Identifier: Apache-2.0 */
/* One TLS connection over a caller's socket, for the agent's epoll loop (non-blocking fd) or
 * a helper thread (blocking fd): handshake/read/write/shutdown steps that say what they wait
 * for, the peer's SPIFFE ID, and a short reason when something fails. */
#ifndef AMBIT_TLS_CONN_H
#define AMBIT_TLS_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "tls/cert.h"
#include "tls/ctx.h"
#include "tls/identity.h"

struct tls_conn;

/* What a step returning -EAGAIN waits for (tls_conn_want): register EPOLLIN / EPOLLOUT.
 * A read may want write and a write may want read (TLS 1.3 KeyUpdate, post-handshake
 * messages), so always use these flags, not the call's direction. */
#define TLS_WANT_READ  0x1u
#define TLS_WANT_WRITE 0x2u
/* Server handshake held at the ClientHello (tls_ctx_opts.cert_wait): it waits for news, not
 * for the socket; call tls_conn_handshake again when there is some. */
#define TLS_WANT_RETRY 0x4u

#define TLS_EXPECT_MAX 4	/* accepted server identities: destination, its waypoint, ... */
#define TLS_REASON_MAX 256

enum tls_conn_st {
	TLS_ST_HANDSHAKE,	/* tls_conn_handshake() until it returns 0 */
	TLS_ST_ESTABLISHED,	/* data flows; peer identity known */
	TLS_ST_SHUTDOWN,	/* our close_notify is sent or queued */
	TLS_ST_FAILED,		/* a fatal error: see tls_conn_reason(); only free remains */
};
const char *tls_conn_st_to_str(enum tls_conn_st st);

struct tls_conn_opts {
	/* Mesh client: the source workload's cert (a reference is taken). Server: NULL takes
	 * the cert from the ctx (SNI selection); set, it is presented whatever the SNI says (a
	 * reference is taken; pod-addressed HBONE, where the dialled address chose it). */
	struct tls_cert *cert;
	/* Mesh client: the identity named in SNI (the destination workload, or the waypoint
	 * when sending to one); NULL sends no SNI (the server's default cert). Copied. */
	const struct spiffe_id *sni;
	/* Mesh client: the server's SPIFFE ID must equal one of these (1..TLS_EXPECT_MAX).
	 * Copied. Checked in the certificate verify step, so a mismatch aborts with an alert. */
	const struct spiffe_id *expect;
	size_t nexpect;
	/* https client: the host name sent as SNI and verified against the cert (copied). */
	const char *hostname;
};

/* Wraps fd (borrowed: never closed here, must outlive the conn). The fd's blocking mode
 * decides the mode: on a blocking fd every step blocks and never returns -EAGAIN (how the
 * OTLP exporter thread uses it). opts may be NULL on a server. NULL + errno (EINVAL when a
 * mesh client lacks cert or expect).
 * Writes use send(MSG_NOSIGNAL): a socket the peer closed is an error, not a SIGPIPE.
 * Memory: an idle established conn costs about 2-3 KiB in OpenSSL (SSL object, keys) thanks to
 * SSL_MODE_RELEASE_BUFFERS; while data is in flight it holds up to ~34 KiB of record buffers
 * (one 16 KiB record each way plus overhead) and up to 128 KiB of sealed records waiting for
 * the socket, all released again when drained. */
struct tls_conn *tls_conn_new(struct tls_ctx *ctx, int fd, const struct tls_conn_opts *opts);
/* Accepts NULL. Sends nothing (call tls_conn_shutdown first for a clean close); does not
 * close the fd; drops the cert reference. */
void tls_conn_free(struct tls_conn *c);

/* Drives the handshake. 0 when established (the peer identity and ALPN are checked);
 * -EAGAIN: call again when tls_conn_want() is ready; otherwise the conn is FAILED:
 * -EACCES peer refused by policy (certificate chain, expiry, identity, trust domain),
 * -EPROTO protocol (TLS version, ALPN, malformed, peer alert), -ECONNRESET peer closed,
 * or the socket's -errno. tls_conn_reason() says which in a few words. */
int tls_conn_handshake(struct tls_conn *c);

/* Reads decrypted bytes. >0 bytes; 0 the peer sent close_notify (clean EOF); -EAGAIN;
 * -ECONNRESET EOF without close_notify (truncation); -EPROTO; -errno.
 * After a read, more bytes may already be decrypted in OpenSSL's buffer that epoll will
 * never announce: read again while tls_conn_pending() > 0 (or just until -EAGAIN). */
ssize_t tls_conn_read(struct tls_conn *c, void *buf, size_t len);
/* Writes. >0 bytes taken (partial writes happen; taken bytes may still wait in the conn,
 * see tls_conn_flush); -EAGAIN: nothing taken, retry later with at least the same bytes
 * (the buffer may move); -EPIPE / -ECONNRESET / -EPROTO / -errno. */
ssize_t tls_conn_write(struct tls_conn *c, const void *buf, size_t len);
/* Writes buffer their records and send them at the end of each call (and whenever 64 KiB
 * have collected), so one call's records leave in one send. What a full socket did not take
 * stays with the conn: while tls_conn_unsent() > 0, wait for EPOLLOUT and call
 * tls_conn_flush(). 0 all sent; -EAGAIN; -errno (the conn is FAILED). */
int tls_conn_flush(struct tls_conn *c);
size_t tls_conn_unsent(const struct tls_conn *c);
/* Sends close_notify (once) without waiting for the peer's. 0 sent; -EAGAIN (queued: flush
 * it); -errno.
 * In TLS 1.3 the peer may keep sending; read until 0 if a full half-close is wanted. */
int tls_conn_shutdown(struct tls_conn *c);

/* TLS_WANT_* of the last -EAGAIN (0 otherwise). */
unsigned tls_conn_want(const struct tls_conn *c);
/* Non-zero when OpenSSL holds input epoll will not announce: decrypted bytes (their count),
 * or records read ahead and not yet processed (1). */
size_t tls_conn_pending(const struct tls_conn *c);
enum tls_conn_st tls_conn_state(const struct tls_conn *c);
int tls_conn_fd(const struct tls_conn *c);

/* The peer's SPIFFE ID once established on a mesh ctx; NULL otherwise. Owned by c. */
const struct spiffe_id *tls_conn_peer_id(const struct tls_conn *c);
/* Our cert: the client's own, or the one the server selected. Borrowed, may be NULL. */
struct tls_cert *tls_conn_local_cert(const struct tls_conn *c);
/* The SNI identity the client asked for (server side), NULL if none. Owned by c. */
const struct spiffe_id *tls_conn_sni_id(const struct tls_conn *c);
/* Negotiated ALPN: "h2", or "" for none (or another protocol); protocol ("TLSv1.3") and
 * cipher for logs. Static strings. */
const char *tls_conn_alpn(const struct tls_conn *c);
const char *tls_conn_version(const struct tls_conn *c);
const char *tls_conn_cipher(const struct tls_conn *c);
/* Why the conn failed, e.g. "peer certificate not signed by mesh CA", "peer identity
 * spiffe://x/ns/a/sa/b, expected spiffe://x/ns/c/sa/d", "TLS 1.2 refused"; "" if it did not. */
const char *tls_conn_reason(const struct tls_conn *c);

#endif
