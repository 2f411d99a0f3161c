/* SPDX-License-Identifier: Apache-2.0 */
/* Private to tls/: the layouts shared by cert.c, ca.c, ctx.c and conn.c. Not for other modules. */
#ifndef AMBIT_TLS_INT_H
#define AMBIT_TLS_INT_H

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/identity.h"

struct tls_cert {
	atomic_uint refs;
	X509 *x509;		/* the leaf */
	EVP_PKEY *key;		/* its private key: never logged, freed (and wiped) by OpenSSL */
	STACK_OF(X509) *chain;	/* intermediates up to, not including, the root; may be empty */
	struct spiffe_id id;
	char serial[TLS_SERIAL_HEX_MAX];
	int64_t not_before, not_after, issued_at;
};

/* Takes ownership of x509, key and chain (chain may be NULL) on success and on failure.
 * issued_at 0 = not_before. NULL + errno (EINVAL when the leaf has no single SPIFFE ID). */
struct tls_cert *tls_cert_wrap(X509 *x509, EVP_PKEY *key, STACK_OF(X509) *chain,
			       int64_t issued_at, const char **why);

/* The mesh trust anchors of a CA (borrowed) and whether an intermediate is one of them. */
STACK_OF(X509) *tls_ca_anchors(const struct tls_ca *ca);
bool tls_ca_partial_chain(const struct tls_ca *ca);
/* What follows a leaf on the wire: the signing cert and intermediates, never the root
 * (borrowed). */
STACK_OF(X509) *tls_ca_chain(const struct tls_ca *ca);
/* Signs a leaf for pub (not consumed) with identity id: the profile of tls_ca_issue
 * (validity [now - 60 s, now + lifetime] capped at the CA's own, SPIFFE URI SAN, serverAuth
 * and clientAuth). Thread-safe. NULL + errno (ENOKEY: verify-only CA). */
X509 *tls_ca_sign_leaf(struct tls_ca *ca, const struct spiffe_id *id, EVP_PKEY *pub,
		       const struct tls_issue_opts *opts);
/* Signs a serving certificate for pub with names[0, n) (DNS names or IP literals) as its
 * subjectAltName and EKU serverAuth; same validity rules. NULL + errno (EINVAL: a name that
 * is neither). */
X509 *tls_ca_sign_server(struct tls_ca *ca, const char *const *names, size_t n, EVP_PKEY *pub,
			 const struct tls_issue_opts *opts);

/* ASN1_TIME -> Unix seconds; 0 or -EINVAL. */
int tls_asn1_time_to_unix(const ASN1_TIME *t, int64_t *out);
/* Reads a PEM file (bounded) into a memory BIO; the file bytes are wiped. NULL + errno. */
BIO *tls_read_pem_file(const char *path);
/* snprintf into err if err != NULL; returns -e for "return tls_errf(...)" shapes. */
int tls_errf(char *err, size_t errlen, int e, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The first OpenSSL error of the queue as a short string (static or ERR's), clears the queue. */
const char *tls_ossl_err(void);

/* ---- contexts and connections (ctx.c, conn.c) ---- */
#include "tls/conn.h"
#include "tls/ctx.h"

struct tls_ctx {
	SSL_CTX *ssl;
	enum tls_role role;
	bool mesh;			/* SPIFFE checks; false for an https client */
	char td[SPIFFE_TD_MAX + 1];	/* our trust domain */
	tls_cert_select_fn select_cert;
	tls_cert_wait_fn cert_wait;
	void *select_arg;
	struct tls_cert *default_cert;	/* a reference */
	struct tls_serving *serving;	/* an https server's certificate (ctx.c); else NULL */
};

struct tls_conn {
	SSL *ssl;
	struct tls_ctx *ctx;		/* borrowed: outlives the conn */
	int fd;				/* borrowed */
	enum tls_conn_st st;
	unsigned want;			/* TLS_WANT_* of the last -EAGAIN */
	bool policy_fail;		/* the reason is a refusal (-EACCES), not a protocol error */
	bool has_peer;
	bool fixed_cert;		/* server: local was given at creation, SNI is not asked */
	uint64_t held_since_ms;		/* server: first held by cert_wait (CLOCK_MONOTONIC), 0 */
	struct tls_cert *local;		/* a reference: our cert on this conn */
	struct spiffe_id peer;		/* valid when has_peer */
	struct spiffe_id *sni_id;	/* server: what the client asked for; NULL if none */
	struct spiffe_id *expect;	/* client: accepted server identities */
	size_t nexpect;
	char *reason;			/* allocated on the first failure only */
	/* Encrypted output not yet on the socket (see out_write in conn.c): NULL when empty. */
	uint8_t *obuf;
	size_t ooff, olen;		/* unsent bytes are obuf[ooff, olen) */
};

/* Records the first failure reason of c (later ones are kept out: the first is the cause). */
void tls_conn_set_reason(struct tls_conn *c, bool policy, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* OpenSSL callbacks installed by ctx.c, implemented in conn.c (they need the conn). */
int tls_verify_cb(int preverify_ok, X509_STORE_CTX *store);
int tls_servername_cb(SSL *ssl, int *alert, void *arg);
int tls_client_hello_cb(SSL *ssl, int *alert, void *arg);
int tls_alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg);

#endif
