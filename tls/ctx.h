/* SPDX-License-Identifier: Apache-2.0 */
/* TLS context factories: the mesh (HBONE, port 15008) server and client contexts - TLS 1.3
 * only, ALPN h2, mutual certificates checked against the mesh root and SPIFFE identities -
 * and a plain https client context (OTLP exporter to a TLS collector). */
#ifndef AMBIT_TLS_CTX_H
#define AMBIT_TLS_CTX_H

#include <stdint.h>

#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/identity.h"

struct tls_ctx;

enum tls_role {
	TLS_ROLE_CLIENT,
	TLS_ROLE_SERVER,
};

/* Server certificate selection, on the handshaking thread, during the ClientHello.
 * id is the identity named by the client's SNI (spiffe_sni_encode), or NULL when the client
 * sent no SNI or one that is not an identity of our trust domain (use a default, or refuse).
 * Returns a new reference (the connection keeps it), or NULL to refuse the handshake. */
typedef struct tls_cert *(*tls_cert_select_fn)(void *arg, const struct spiffe_id *id);
/* Server, at the ClientHello, before select_cert, for a client whose SNI names identity id:
 * true holds the handshake (the certificate of id cannot be served yet, and may be soon):
 * tls_conn_handshake returns -EAGAIN with TLS_WANT_RETRY, and asks again each time it is
 * called; waited_ms is how long this connection has been held so far (0 the first time).
 * false goes on to select_cert. Same thread and arg as select_cert. */
typedef bool (*tls_cert_wait_fn)(void *arg, const struct spiffe_id *id, uint64_t waited_ms);

struct tls_ctx_opts {
	struct tls_ca *roots;		/* mesh trust anchors; the ctx takes its own references */
	const char *trust_domain;	/* peers must be in it (server); NULL = cluster.local.
					 * Copied. Also used to decode SNI. */
	tls_cert_select_fn select_cert;	/* server: picks our cert by SNI (may be NULL) */
	tls_cert_wait_fn cert_wait;	/* server: may hold a handshake first (may be NULL) */
	void *select_arg;
	struct tls_cert *default_cert;	/* server, when select_cert is NULL: always this one
					 * (a reference is taken) */
	int64_t verify_time;		/* Unix seconds to verify certs at; 0 = now (tests) */
};

/* A mesh context for role. TLS 1.3 only, ALPN "h2" (a server refuses clients that do not
 * offer it; a client fails unless the server selects it), peer certificate required both
 * ways and verified against opts->roots, no session tickets or resumption (every connection
 * proves its identity), SSL_MODE_RELEASE_BUFFERS. NULL + errno.
 * Lifetime: the ctx must outlive every tls_conn made from it. */
struct tls_ctx *tls_ctx_new(enum tls_role role, const struct tls_ctx_opts *opts);

/* A client context for an https:// endpoint: TLS 1.2 or 1.3, server verified against ca_file
 * (PEM; NULL = the system store) and the host name given to tls_conn_new; alpn is a
 * single protocol offered ("h2" for gRPC) or NULL. client_cert/client_key (PEM files, both
 * or neither) are presented when the server asks (mutual TLS to a collector); no SPIFFE ID is
 * required of them. NULL + errno, err (may be NULL) names the file on failure. */
struct tls_ctx *tls_ctx_new_https_client(const char *ca_file, const char *client_cert,
					 const char *client_key, const char *alpn, char *err,
					 size_t errlen);

#define TLS_SERVER_NAMES_MAX 32

/* A server context for a TLS endpoint outside the mesh (ambit-ca's gRPC port): a serving
 * certificate for names[0, n) (DNS names or IP literals, the subjectAltName) with a fresh
 * P-256 key, issued now by ca for lifetime_s (capped at the CA's own expiry) and sent with
 * the CA's chain; TLS 1.2 or 1.3, ALPN h2 required, no client certificate asked.
 * NULL + errno, err (may be NULL) says what. */
struct tls_ctx *tls_ctx_new_https_server(struct tls_ca *ca, const char *const *names, size_t n,
					 uint32_t lifetime_s, char *err, size_t errlen);
/* Issues the serving certificate of such a ctx again: a fresh key, the same names, from ca
 * (the current signing key) for lifetime_s (capped at ca's expiry), and sends it with ca's
 * chain in handshakes that start after the call; connections already open keep theirs. Any
 * thread. 0; -EINVAL (not an https server ctx); -EKEYEXPIRED (ca has expired); -errno
 * (ctx unchanged); err says what. */
int tls_ctx_https_server_renew(struct tls_ctx *ctx, struct tls_ca *ca, uint32_t lifetime_s,
			       char *err, size_t errlen);
/* When the current serving certificate was issued and when it expires (Unix seconds).
 * 0 or -EINVAL (not an https server ctx). */
int tls_ctx_https_server_validity(struct tls_ctx *ctx, int64_t *issued_at, int64_t *not_after);

/* Replaces the trust anchors of a mesh ctx with those of roots (a trust bundle: every root of
 * it is accepted), for handshakes that verify after the call: the old anchors are gone for
 * them, while connections already established from ctx keep working (their peers were
 * verified once, at the handshake). Call it on the thread that drives ctx's handshakes.
 * 0; -EINVAL (not a mesh ctx, roots NULL); -ENOMEM (ctx unchanged). */
int tls_ctx_set_roots(struct tls_ctx *ctx, struct tls_ca *roots);

/* Accepts NULL. */
void tls_ctx_free(struct tls_ctx *ctx);

enum tls_role tls_ctx_role(const struct tls_ctx *ctx);

/* Once per process, before threads start (safe to call again). 0 or -EIO. OpenSSL 3
 * initialises itself too; this also loads the error strings used in reasons. */
int tls_global_init(void);

#endif
