// SPDX-License-Identifier: Apache-2.0
/* SSL_CTX factories: the mesh policy (TLS 1.3 only, ALPN h2, mutual certs against the mesh
 * root, SPIFFE checks, no resumption) in one place, and a plain https client context. */
#include "tls/ctx.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tls/tls_int.h"

int tls_global_init(void)
{
	uint64_t flags = OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS;
	return OPENSSL_init_ssl(flags, NULL) == 1 ? 0 : -EIO;
}

/* The certificate of an https server ctx (tls_ctx_new_https_server): replaced whole under
 * lock by a renewal while handshakes run on other threads, each of which takes references to
 * the current one in the certificate callback (serving_cert_cb), so a connection keeps the
 * certificate it started with. */
struct tls_serving {
	pthread_mutex_t lock;
	X509 *cert;
	EVP_PKEY *key;
	STACK_OF(X509) *chain;		/* the CA's, after the leaf */
	int64_t issued_at, not_after;
	char **names;			/* the subjectAltName, kept for renewals */
	size_t n;
};

static void serving_free(struct tls_serving *sv)
{
	if (!sv)
		return;
	X509_free(sv->cert);
	EVP_PKEY_free(sv->key);
	sk_X509_pop_free(sv->chain, X509_free);
	for (size_t i = 0; i < sv->n; i++)
		free(sv->names[i]);
	free(sv->names);
	pthread_mutex_destroy(&sv->lock);
	free(sv);
}

void tls_ctx_free(struct tls_ctx *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->ssl);
	serving_free(ctx->serving);
	tls_cert_unref(ctx->default_cert);
	free(ctx);
}

enum tls_role tls_ctx_role(const struct tls_ctx *ctx)
{
	return ctx->role;
}

/* Settings both kinds of context share. 0 or -EIO. */
static int ctx_common(SSL_CTX *ssl, int min_version)
{
	if (!SSL_CTX_set_min_proto_version(ssl, min_version) ||
	    !SSL_CTX_set_max_proto_version(ssl, TLS1_3_VERSION))
		return -EIO;
	/* Tickets and the session cache are off: a resumed session would skip the verify
	 * callback, where identities are checked; TLS 1.3 has no renegotiation, and
	 * NO_RENEGOTIATION also covers the https client's TLS 1.2. */
	SSL_CTX_set_options(ssl, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION |
				 SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ssl, 0);
	/* RELEASE_BUFFERS: idle conns give their 16 KiB record buffers back. PARTIAL_WRITE and
	 * MOVING_WRITE_BUFFER: the non-blocking write contract of tls_conn_write(). */
	SSL_CTX_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
			      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* Read-ahead: one read(2) fetches a record's header, its body and whatever follows,
	 * instead of two or three calls per record (measured in bench/: 3 reads per round trip).
	 * Buffered records are then invisible to SSL_pending(); tls_conn_pending() uses
	 * SSL_has_pending() so the loop still drains them. */
	SSL_CTX_set_read_ahead(ssl, 1);
	SSL_CTX_set_default_read_buffer_len(ssl, 64 * 1024);
	if (!SSL_CTX_set1_groups_list(ssl, "X25519:P-256"))
		return -EIO;
	return 0;
}

/* The verify settings of a mesh ctx that come from its roots: a store of their anchors
 * (replacing the ctx's) and PARTIAL_CHAIN when they hold no self-signed root. 0 or -ENOMEM
 * (ctx unchanged). */
static int ctx_load_roots(SSL_CTX *ssl, struct tls_ca *roots)
{
	STACK_OF(X509) *anchors = tls_ca_anchors(roots);
	X509_STORE *store = X509_STORE_new();
	X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ssl);

	if (!store)
		return -ENOMEM;
	for (int i = 0; i < sk_X509_num(anchors); i++) {
		if (!X509_STORE_add_cert(store, sk_X509_value(anchors, i))) {
			X509_STORE_free(store);
			return -ENOMEM;
		}
	}
	SSL_CTX_set_cert_store(ssl, store);	/* takes it, frees the old one */
	if (tls_ca_partial_chain(roots))
		X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
	else
		X509_VERIFY_PARAM_clear_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
	return 0;
}

int tls_ctx_set_roots(struct tls_ctx *ctx, struct tls_ca *roots)
{
	int err;

	if (!ctx || !ctx->mesh || !roots)
		return -EINVAL;
	err = ctx_load_roots(ctx->ssl, roots);
	ERR_clear_error();
	return err;
}

static const unsigned char alpn_h2[] = { 2, 'h', '2' };

struct tls_ctx *tls_ctx_new(enum tls_role role, const struct tls_ctx_opts *o)
{
	struct tls_ctx *ctx = NULL;
	const char *td;
	int e = EIO;

	if (!o || !o->roots || (role == TLS_ROLE_SERVER && !o->select_cert && !o->default_cert)) {
		errno = EINVAL;
		return NULL;
	}
	td = o->trust_domain ? o->trust_domain : SPIFFE_DEFAULT_TRUST_DOMAIN;
	if (strlen(td) > SPIFFE_TD_MAX) {
		errno = EINVAL;
		return NULL;
	}
	if (!(ctx = calloc(1, sizeof(*ctx))))
		return NULL;
	ctx->role = role;
	ctx->mesh = true;
	strcpy(ctx->td, td);
	ctx->select_cert = o->select_cert;
	ctx->cert_wait = o->cert_wait;
	ctx->select_arg = o->select_arg;
	ctx->default_cert = tls_cert_ref(o->default_cert);
	ctx->ssl = SSL_CTX_new(role == TLS_ROLE_SERVER ? TLS_server_method() : TLS_client_method());
	if (!ctx->ssl || ctx_common(ctx->ssl, TLS1_3_VERSION))
		goto fail;

	if (ctx_load_roots(ctx->ssl, o->roots))
		goto fail;
	if (o->verify_time)
		X509_VERIFY_PARAM_set_time(SSL_CTX_get0_param(ctx->ssl), (time_t)o->verify_time);
	SSL_CTX_set_verify_depth(ctx->ssl, 4);
	/* Purpose (EKU serverAuth/clientAuth) is checked by OpenSSL from the role. */
	SSL_CTX_set_verify(ctx->ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
			   tls_verify_cb);

	if (role == TLS_ROLE_SERVER) {
		SSL_CTX_set_client_hello_cb(ctx->ssl, tls_client_hello_cb, ctx);
		SSL_CTX_set_tlsext_servername_callback(ctx->ssl, tls_servername_cb);
		SSL_CTX_set_tlsext_servername_arg(ctx->ssl, ctx);
		SSL_CTX_set_alpn_select_cb(ctx->ssl, tls_alpn_select_cb, ctx);
	} else if (SSL_CTX_set_alpn_protos(ctx->ssl, alpn_h2, sizeof(alpn_h2)) != 0) {
		goto fail;	/* (this one returns 0 on success) */
	}
	ERR_clear_error();
	return ctx;
fail:
	ERR_clear_error();
	tls_ctx_free(ctx);
	errno = e;
	return NULL;
}

struct tls_ctx *tls_ctx_new_https_client(const char *ca_file, const char *client_cert,
					 const char *client_key, const char *alpn, char *err,
					 size_t errlen)
{
	struct tls_ctx *ctx = calloc(1, sizeof(*ctx));
	unsigned char protos[256];
	size_t alen = alpn ? strlen(alpn) : 0;
	int e = EIO;

	if (!ctx)
		return NULL;
	ctx->role = TLS_ROLE_CLIENT;
	if (alen > 255) {
		e = -tls_errf(err, errlen, EINVAL, "ALPN protocol too long");
		goto fail;
	}
	if (!(ctx->ssl = SSL_CTX_new(TLS_client_method())) || ctx_common(ctx->ssl, TLS1_2_VERSION)) {
		tls_errf(err, errlen, e, "TLS context: %s", tls_ossl_err());
		goto fail;
	}
	if (ca_file ? SSL_CTX_load_verify_locations(ctx->ssl, ca_file, NULL) != 1
		    : SSL_CTX_set_default_verify_paths(ctx->ssl) != 1) {
		e = -tls_errf(err, errlen, EINVAL, "%s: cannot load CA certificates (%s)",
			      ca_file ? ca_file : "system CA store", tls_ossl_err());
		goto fail;
	}
	SSL_CTX_set_verify(ctx->ssl, SSL_VERIFY_PEER, tls_verify_cb);
	if (!client_cert != !client_key) {
		e = -tls_errf(err, errlen, EINVAL, "a client certificate needs its key, and a key its "
			      "certificate");
		goto fail;
	}
	if (client_cert && SSL_CTX_use_certificate_chain_file(ctx->ssl, client_cert) != 1) {
		e = -tls_errf(err, errlen, EINVAL, "%s: cannot load the client certificate (%s)",
			      client_cert, tls_ossl_err());
		goto fail;
	}
	if (client_key && (SSL_CTX_use_PrivateKey_file(ctx->ssl, client_key, SSL_FILETYPE_PEM) != 1 ||
			   SSL_CTX_check_private_key(ctx->ssl) != 1)) {
		e = -tls_errf(err, errlen, EINVAL, "%s: cannot load the client key, or it does not "
			      "match the certificate (%s)", client_key, tls_ossl_err());
		goto fail;
	}
	if (alen) {
		protos[0] = (unsigned char)alen;
		memcpy(protos + 1, alpn, alen);
		if (SSL_CTX_set_alpn_protos(ctx->ssl, protos, (unsigned)alen + 1) != 0)
			goto fail;
	}
	ERR_clear_error();
	return ctx;
fail:
	ERR_clear_error();
	tls_ctx_free(ctx);
	errno = e;
	return NULL;
}

/* Runs on the handshaking thread before the server picks its certificate: the current
 * serving certificate, key and chain go into this connection (SSL_use_cert_and_key takes its
 * own references). 1 or 0 (the handshake fails). */
static int serving_cert_cb(SSL *ssl, void *arg)
{
	struct tls_serving *sv = arg;
	int ok;

	pthread_mutex_lock(&sv->lock);
	ok = SSL_use_cert_and_key(ssl, sv->cert, sv->key, sv->chain, 1) == 1;
	pthread_mutex_unlock(&sv->lock);
	return ok;
}

int tls_ctx_https_server_renew(struct tls_ctx *ctx, struct tls_ca *ca, uint32_t lifetime_s,
			       char *err, size_t errlen)
{
	struct tls_serving *sv = ctx ? ctx->serving : NULL;
	struct tls_issue_opts o = { .lifetime_s = lifetime_s, .now = (int64_t)time(NULL) };
	STACK_OF(X509) *chain = NULL;
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	int64_t not_after;
	int e = EIO;

	if (!sv || !ca)
		return tls_errf(err, errlen, EINVAL, "not an https server context");
	if (!(key = EVP_EC_gen("P-256"))) {
		tls_errf(err, errlen, e, "serving key: %s", tls_ossl_err());
		goto fail;
	}
	if (!(x = tls_ca_sign_server(ca, (const char *const *)sv->names, sv->n, key, &o))) {
		e = errno;
		tls_errf(err, errlen, e, "serving certificate: %s", e == EINVAL
			 ? "a server name is neither a DNS name nor an IP address" : strerror(e));
		goto fail;
	}
	if (tls_asn1_time_to_unix(X509_get0_notAfter(x), &not_after) || not_after <= o.now) {
		e = EKEYEXPIRED;
		tls_errf(err, errlen, e, "serving certificate: the CA has expired");
		goto fail;
	}
	if (!(chain = X509_chain_up_ref(tls_ca_chain(ca)))) {
		e = ENOMEM;
		tls_errf(err, errlen, e, "serving certificate: out of memory");
		goto fail;
	}
	pthread_mutex_lock(&sv->lock);
	X509 *old_x = sv->cert;
	EVP_PKEY *old_key = sv->key;
	STACK_OF(X509) *old_chain = sv->chain;
	sv->cert = x;
	sv->key = key;
	sv->chain = chain;
	sv->issued_at = o.now;
	sv->not_after = not_after;
	pthread_mutex_unlock(&sv->lock);
	X509_free(old_x);
	EVP_PKEY_free(old_key);
	sk_X509_pop_free(old_chain, X509_free);
	ERR_clear_error();
	return 0;
fail:
	ERR_clear_error();
	X509_free(x);
	EVP_PKEY_free(key);
	return -e;
}

int tls_ctx_https_server_validity(struct tls_ctx *ctx, int64_t *issued_at, int64_t *not_after)
{
	struct tls_serving *sv = ctx ? ctx->serving : NULL;

	if (!sv)
		return -EINVAL;
	pthread_mutex_lock(&sv->lock);
	*issued_at = sv->issued_at;
	*not_after = sv->not_after;
	pthread_mutex_unlock(&sv->lock);
	return 0;
}

struct tls_ctx *tls_ctx_new_https_server(struct tls_ca *ca, const char *const *names, size_t n,
					 uint32_t lifetime_s, char *err, size_t errlen)
{
	struct tls_ctx *ctx = calloc(1, sizeof(*ctx));
	struct tls_serving *sv;
	int e = ENOMEM;

	if (!ctx || !(ctx->serving = sv = calloc(1, sizeof(*sv))))
		goto nomem;
	pthread_mutex_init(&sv->lock, NULL);
	ctx->role = TLS_ROLE_SERVER;
	if (!(sv->names = calloc(n ? n : 1, sizeof(*sv->names))))
		goto nomem;
	for (; sv->n < n; sv->n++)
		if (!(sv->names[sv->n] = strdup(names[sv->n])))
			goto nomem;
	if ((e = -tls_ctx_https_server_renew(ctx, ca, lifetime_s, err, errlen)))
		goto fail;
	e = EIO;
	if (!(ctx->ssl = SSL_CTX_new(TLS_server_method())) || ctx_common(ctx->ssl, TLS1_2_VERSION)) {
		tls_errf(err, errlen, e, "TLS context: %s", tls_ossl_err());
		goto fail;
	}
	/* The certificate is chosen per handshake, so a renewal reaches new connections. */
	SSL_CTX_set_cert_cb(ctx->ssl, serving_cert_cb, sv);
	/* gRPC over TLS is h2 only (PROTOCOL-HTTP2.md); no client certificate is asked: callers
	 * prove who they are with a bearer token. */
	SSL_CTX_set_alpn_select_cb(ctx->ssl, tls_alpn_select_cb, ctx);
	ERR_clear_error();
	return ctx;
nomem:
	tls_errf(err, errlen, e, "out of memory");
fail:
	ERR_clear_error();
	tls_ctx_free(ctx);
	errno = e;
	return NULL;
}
