// SPDX-License-Identifier: Apache-2.0
/* One TLS connection over a caller's fd: non-blocking steps for the epoll loop (Redis tls.c's
 * shape: clear the error queue, map WANT_* to flags, expose SSL_pending), the identity
 * checks in the verify callback, SNI certificate selection, and reasons for refusals. */
#include "tls/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "tls/tls_int.h"

const char *tls_conn_st_to_str(enum tls_conn_st st)
{
	switch (st) {
	case TLS_ST_HANDSHAKE: return "handshake";
	case TLS_ST_ESTABLISHED: return "established";
	case TLS_ST_SHUTDOWN: return "shutdown";
	case TLS_ST_FAILED: return "failed";
	}
	return "?";
}

void tls_conn_set_reason(struct tls_conn *c, bool policy, const char *fmt, ...)
{
	va_list ap;

	if (c->reason)
		return;
	if (!(c->reason = malloc(TLS_REASON_MAX)))
		return;	/* tls_conn_reason() then says "out of memory" */
	va_start(ap, fmt);
	vsnprintf(c->reason, TLS_REASON_MAX, fmt, ap);
	va_end(ap);
	c->policy_fail = policy;
}

static struct tls_conn *conn_of(SSL *ssl)
{
	return ssl ? SSL_get_app_data(ssl) : NULL;
}

/* ---- callbacks (installed by ctx.c) ---- */

static const char *verify_reason(int err, int depth, bool *known)
{
	*known = true;
	switch (err) {
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
		return "peer certificate not signed by mesh CA";
	case X509_V_ERR_CERT_HAS_EXPIRED:
		return depth ? "peer CA certificate expired" : "peer certificate expired";
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return depth ? "peer CA certificate not yet valid"
			     : "peer certificate not yet valid (clock skew?)";
	case X509_V_ERR_INVALID_PURPOSE:
		return "peer certificate not valid for this TLS role (extended key usage)";
	case X509_V_ERR_INVALID_CA:
		return "peer certificate issued by a non-CA certificate";
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		return "server certificate does not match the host name";
	}
	*known = false;
	return X509_verify_cert_error_string(err);
}

static void expected_str(const struct tls_conn *c, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < c->nexpect && off < len; i++) {
		char ids[SPIFFE_ID_STR_MAX];
		int n = snprintf(buf + off, len - off, "%s%s", i ? " or " : "",
				 spiffe_id_str(&c->expect[i], ids));
		if (n < 0)
			break;
		off += (size_t)n;
	}
}

/* Identity policy on the verified leaf: server = the peer is in our trust domain;
 * client = the peer is one of the expected identities. */
static bool check_identity(struct tls_conn *c, X509 *leaf)
{
	char ids[SPIFFE_ID_STR_MAX];
	const char *why = NULL;
	struct spiffe_id id;

	if (spiffe_id_from_x509(leaf, &id, &why)) {
		tls_conn_set_reason(c, true, "peer certificate has no valid SPIFFE identity: %s",
				    why);
		return false;
	}
	if (c->ctx->role == TLS_ROLE_SERVER) {
		if (strcmp(id.td, c->ctx->td) != 0) {
			tls_conn_set_reason(c, true, "peer identity %s not in trust domain %s",
					    spiffe_id_str(&id, ids), c->ctx->td);
			return false;
		}
	} else {
		size_t i;
		for (i = 0; i < c->nexpect; i++)
			if (spiffe_id_equal(&id, &c->expect[i]))
				break;
		if (i == c->nexpect) {
			char exp[TLS_REASON_MAX];
			expected_str(c, exp, sizeof(exp));
			tls_conn_set_reason(c, true, "peer identity %s, expected %s",
					    spiffe_id_str(&id, ids), exp);
			return false;
		}
	}
	c->peer = id;
	c->has_peer = true;
	return true;
}

int tls_verify_cb(int preverify_ok, X509_STORE_CTX *store)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct tls_conn *c = conn_of(ssl);
	int depth = X509_STORE_CTX_get_error_depth(store);

	if (!c)
		return preverify_ok;
	if (!preverify_ok) {
		bool known;
		int err = X509_STORE_CTX_get_error(store);
		const char *r = verify_reason(err, depth, &known);
		if (known)
			tls_conn_set_reason(c, true, "%s", r);
		else
			tls_conn_set_reason(c, true, "peer certificate rejected: %s (depth %d)", r,
					    depth);
		return 0;
	}
	if (depth == 0 && c->ctx->mesh &&
	    !check_identity(c, X509_STORE_CTX_get_current_cert(store))) {
		/* CERT_REJECTED sends bad_certificate, so the peer learns it was its cert
		 * (APPLICATION_VERIFICATION would send a bare handshake_failure). */
		X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
		return 0;
	}
	return 1;
}

/* Is the 2-byte-length-prefixed ALPN list (RFC 7301 §3.1) offering "h2"? */
static bool alpn_has_h2(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len;) {
		size_t n = p[i];
		if (i + 1 + n > len)
			return false;
		if (n == 2 && p[i + 1] == 'h' && p[i + 2] == '2')
			return true;
		i += 1 + n;
	}
	return false;
}

/* The host_name of a ClientHello's server_name extension into out, or false. */
static bool hello_sni(SSL *ssl, char *out, size_t outlen)
{
	const unsigned char *p;
	size_t len;

	return SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) == 1 &&
	       spiffe_sni_ext_host_name(p, len, out, outlen) > 0;
}

/* Should the handshake of c wait (ctx->cert_wait) for the certificate its SNI asks for? */
static bool hello_maybe_wait(struct tls_conn *c)
{
	char name[256];
	struct spiffe_id id;
	uint64_t now;

	if (!c || !c->ctx->cert_wait || c->fixed_cert ||
	    !hello_sni(c->ssl, name, sizeof(name)) || spiffe_sni_decode(name, c->ctx->td, &id))
		return false;
	now = now_mono_ms();
	if (!c->ctx->cert_wait(c->ctx->select_arg, &id,
			       c->held_since_ms ? now - c->held_since_ms : 0))
		return false;
	if (!c->held_since_ms)
		c->held_since_ms = now ? now : 1;
	return true;
}

/* Refuses, at the ClientHello, clients that cannot do TLS 1.3 or h2, so the reason is
 * precise and the alert is the right one (RFC 8446 §4.2.1, RFC 7301 §3.2). */
int tls_client_hello_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_conn *c = conn_of(ssl);
	const unsigned char *p;
	size_t len;
	bool v13 = false;

	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_versions, &p, &len) == 1 &&
	    len >= 1 && p[0] + 1u <= len) {
		for (size_t i = 1; i + 1 < (size_t)p[0] + 1; i += 2)
			if (p[i] == 0x03 && p[i + 1] == 0x04)
				v13 = true;
	}
	if (!v13) {
		if (c)
			tls_conn_set_reason(c, false, "TLS 1.2 refused (client offers no TLS 1.3)");
		*alert = SSL_AD_PROTOCOL_VERSION;
		return SSL_CLIENT_HELLO_ERROR;
	}
	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation,
				      &p, &len) != 1 ||
	    len < 2 || (size_t)((p[0] << 8) | p[1]) + 2 != len || !alpn_has_h2(p + 2, len - 2)) {
		if (c)
			tls_conn_set_reason(c, false, "client offers no ALPN h2");
		*alert = SSL_AD_NO_APPLICATION_PROTOCOL;
		return SSL_CLIENT_HELLO_ERROR;
	}
	return hello_maybe_wait(c) ? SSL_CLIENT_HELLO_RETRY : SSL_CLIENT_HELLO_SUCCESS;
}

int tls_alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	for (unsigned i = 0; i < inlen;) {
		unsigned n = in[i];
		if (i + 1 + n > inlen)
			break;
		if (n == 2 && in[i + 1] == 'h' && in[i + 2] == '2') {
			*out = in + i + 1;
			*outlen = 2;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + n;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int use_cert(SSL *ssl, const struct tls_cert *cert)
{
	if (SSL_use_certificate(ssl, cert->x509) != 1 || SSL_use_PrivateKey(ssl, cert->key) != 1 ||
	    SSL_set1_chain(ssl, cert->chain) != 1)
		return -EIO;
	return 0;
}

/* Called for every ClientHello (with or without SNI, OpenSSL >= 1.1.1): picks our cert. */
int tls_servername_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_ctx *ctx = arg;
	struct tls_conn *c = conn_of(ssl);
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	struct spiffe_id id;
	bool have_id = name && spiffe_sni_decode(name, ctx->td, &id) == 0;
	struct tls_cert *cert;
	char ids[SPIFFE_ID_STR_MAX];

	if (!c)
		return SSL_TLSEXT_ERR_NOACK;
	if (c->fixed_cert)
		return SSL_TLSEXT_ERR_OK;	/* chosen by the caller; the SNI asks nothing */
	if (have_id && !c->sni_id && (c->sni_id = malloc(sizeof(*c->sni_id))))
		*c->sni_id = id;
	cert = ctx->select_cert ? ctx->select_cert(ctx->select_arg, have_id ? &id : NULL)
				: tls_cert_ref(ctx->default_cert);
	if (!cert) {
		if (have_id)
			tls_conn_set_reason(c, true, "no local certificate for %s (SNI)%s",
					    spiffe_id_str(&id, ids), c->held_since_ms ?
					    ", after waiting for it" : "");
		else
			tls_conn_set_reason(c, true, "no default certificate (SNI %s)",
					    name ? name : "absent");
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	if (use_cert(ssl, cert)) {
		tls_cert_unref(cert);
		tls_conn_set_reason(c, false, "cannot use the local certificate");
		*alert = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	tls_cert_unref(c->local);
	c->local = cert;
	return SSL_TLSEXT_ERR_OK;
}

/* ---- the connection ---- */

static int failed_code(const struct tls_conn *c);

/* ---- the write BIO: records collect in obuf and leave in few large sends ----
 * OpenSSL's socket BIO does one write(2) per TLS record (16 KiB at most): every record is
 * then a packet through the kernel's TCP stack on both hosts. This BIO keeps what SSL_write
 * produces and sends it when the buffer is full or on a flush (the end of each
 * tls_conn_write, and the end of every handshake flight, where OpenSSL flushes itself), so a
 * 64 KiB write leaves as one send. send() with MSG_NOSIGNAL: a peer that went away is an
 * EPIPE, never a SIGPIPE. The buffer is freed once drained, so an idle conn holds none. */
#define TLS_OBUF_CAP (128 * 1024)
#define TLS_DIRECT_MAX 4096	/* records below this skip the buffer when it is empty */

/* Sends what is buffered. 0 all sent, -EAGAIN the socket is full, -errno otherwise. */
static int out_send(struct tls_conn *c)
{
	while (c->ooff < c->olen) {
		ssize_t w = send(c->fd, c->obuf + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		}
		c->ooff += (size_t)w;
	}
	free(c->obuf);
	c->obuf = NULL;
	c->ooff = c->olen = 0;
	return 0;
}

/* Appends to obuf, sending what is there first when it would not fit. Bytes taken, or -1
 * (retry flag set: the socket and the buffer are full; or errno: the socket failed). */
static int out_buffer(BIO *b, struct tls_conn *c, const char *data, size_t len)
{
	size_t n;

	if (c->olen + len > TLS_OBUF_CAP) {
		int err = out_send(c);
		if (err && err != -EAGAIN) {
			errno = -err;
			return -1;
		}
		if (c->ooff) {	/* compact what the socket did not take */
			memmove(c->obuf, c->obuf + c->ooff, c->olen - c->ooff);
			c->olen -= c->ooff;
			c->ooff = 0;
		}
	}
	if (!c->obuf && !(c->obuf = malloc(TLS_OBUF_CAP))) {
		errno = ENOMEM;
		return -1;
	}
	n = MIN(len, TLS_OBUF_CAP - c->olen);
	if (!n) {
		BIO_set_retry_write(b);
		return -1;
	}
	memcpy(c->obuf + c->olen, data, n);
	c->olen += n;
	return (int)n;
}

static int out_write(BIO *b, const char *data, int len)
{
	struct tls_conn *c = BIO_get_data(b);
	ssize_t w;

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (c->olen || len >= TLS_DIRECT_MAX)
		return out_buffer(b, c, data, (size_t)len);
	/* A short record is the last of its write (SSL_write fills the records before it):
	 * with nothing ahead of it, it goes out now, with no buffer to fill and free. */
	do
		w = send(c->fd, data, (size_t)len, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	if (w == len)
		return len;
	if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
		return -1;
	if (w < 0)
		w = 0;
	/* The rest waits in the buffer like any other output. */
	int more = out_buffer(b, c, data + w, (size_t)(len - w));
	if (more < 0 && w) {
		BIO_clear_retry_flags(b);	/* progress: the failure shows on the next call */
		return (int)w;
	}
	if (more < 0)
		return more;
	return (int)w + more;
}

static long out_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct tls_conn *c = BIO_get_data(b);
	(void)num;
	(void)ptr;

	switch (cmd) {
	case BIO_CTRL_FLUSH: {
		int err;
		BIO_clear_retry_flags(b);
		if (!(err = out_send(c)))
			return 1;
		if (err == -EAGAIN)
			BIO_set_retry_write(b);
		else
			errno = -err;
		return -1;
	}
	case BIO_CTRL_WPENDING:
		return (long)(c->olen - c->ooff);
	case BIO_CTRL_DUP:
		return 1;
	default:
		return 0;	/* what a socket would say to KTLS and the rest: not supported */
	}
}

static BIO_METHOD *out_method;
static pthread_once_t out_method_once = PTHREAD_ONCE_INIT;

static void out_method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ambit-out");
	if (m && (!BIO_meth_set_write(m, out_write) || !BIO_meth_set_ctrl(m, out_ctrl))) {
		BIO_meth_free(m);
		m = NULL;
	}
	out_method = m;
}

/* The SSL reads from a socket BIO on fd and writes through out_write. */
static int conn_set_bios(struct tls_conn *c)
{
	BIO *rb, *wb;

	pthread_once(&out_method_once, out_method_init);
	if (!out_method)
		return -1;
	if (!(rb = BIO_new_socket(c->fd, BIO_NOCLOSE)))
		return -1;
	if (!(wb = BIO_new(out_method))) {
		BIO_free(rb);
		return -1;
	}
	BIO_set_data(wb, c);
	BIO_set_init(wb, 1);
	SSL_set_bio(c->ssl, rb, wb);	/* the SSL owns both now */
	return 0;
}

int tls_conn_flush(struct tls_conn *c)
{
	int err;

	if (c->st == TLS_ST_FAILED)
		return failed_code(c);
	if (!(err = out_send(c)))
		return 0;
	if (err == -EAGAIN) {
		c->want = TLS_WANT_WRITE;
		return -EAGAIN;
	}
	tls_conn_set_reason(c, false, "socket: %s", strerror(-err));
	c->st = TLS_ST_FAILED;
	c->want = 0;
	return err;
}

size_t tls_conn_unsent(const struct tls_conn *c)
{
	return c->olen - c->ooff;
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx, int fd, const struct tls_conn_opts *o)
{
	struct tls_conn *c;
	int e = EINVAL;

	if (!ctx || fd < 0) {
		errno = EINVAL;
		return NULL;
	}
	if (ctx->mesh && ctx->role == TLS_ROLE_CLIENT &&
	    (!o || !o->cert || !o->expect || !o->nexpect || o->nexpect > TLS_EXPECT_MAX)) {
		errno = EINVAL;
		return NULL;
	}
	if (!(c = calloc(1, sizeof(*c))))
		return NULL;
	c->ctx = ctx;
	c->fd = fd;
	c->st = TLS_ST_HANDSHAKE;
	if (!(c->ssl = SSL_new(ctx->ssl)) || conn_set_bios(c)) {
		e = ENOMEM;
		goto fail;
	}
	SSL_set_app_data(c->ssl, c);
	if (ctx->role == TLS_ROLE_SERVER) {
		if (o && o->cert) {
			c->local = tls_cert_ref(o->cert);
			c->fixed_cert = true;
			if (use_cert(c->ssl, c->local)) {
				e = EIO;
				goto fail;
			}
		}
		SSL_set_accept_state(c->ssl);
		ERR_clear_error();
		return c;
	}
	SSL_set_connect_state(c->ssl);
	if (ctx->mesh) {
		char sni[SPIFFE_SNI_MAX];
		c->local = tls_cert_ref(o->cert);
		if (use_cert(c->ssl, c->local)) {
			e = EIO;
			goto fail;
		}
		if (!(c->expect = malloc(o->nexpect * sizeof(*c->expect)))) {
			e = ENOMEM;
			goto fail;
		}
		memcpy(c->expect, o->expect, o->nexpect * sizeof(*c->expect));
		c->nexpect = o->nexpect;
		if (o->sni && (spiffe_sni_encode(o->sni, sni, sizeof(sni)) < 0 ||
			       SSL_set_tlsext_host_name(c->ssl, sni) != 1))
			goto fail;
	} else if (o && o->hostname) {
		unsigned char addr[16];
		bool is_ip = inet_pton(AF_INET, o->hostname, addr) == 1 ||
			     inet_pton(AF_INET6, o->hostname, addr) == 1;
		/* RFC 6066 §3: SNI never carries an IP literal. */
		if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), o->hostname) != 1
			  : (SSL_set_tlsext_host_name(c->ssl, o->hostname) != 1 ||
			     SSL_set1_host(c->ssl, o->hostname) != 1))
			goto fail;
	}
	ERR_clear_error();
	return c;
fail:
	ERR_clear_error();
	tls_conn_free(c);
	errno = e;
	return NULL;
}

void tls_conn_free(struct tls_conn *c)
{
	if (!c)
		return;
	SSL_free(c->ssl);
	free(c->obuf);
	tls_cert_unref(c->local);
	free(c->sni_id);
	free(c->expect);
	free(c->reason);
	free(c);
}

/* A reason for an SSL_ERROR_SSL from the first queued OpenSSL error, unless a callback
 * already gave one. Returns the -errno. */
static int ssl_failure(struct tls_conn *c, bool handshake)
{
	unsigned long e = ERR_peek_error();
	int r = ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
	const char *s = e ? ERR_reason_error_string(e) : NULL;
	bool server = c->ctx->role == TLS_ROLE_SERVER;

	if (!s)
		s = "unknown error";
	switch (r) {
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_NO_PROTOCOLS_AVAILABLE:
		tls_conn_set_reason(c, false, server ? "TLS 1.2 refused (TLS 1.3 only)"
						     : "no common TLS version (TLS 1.3 only)");
		break;
	case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
		tls_conn_set_reason(c, false, "peer refused our TLS version (%s)", s);
		break;
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
		tls_conn_set_reason(c, true, "no client certificate");
		break;
	case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
		tls_conn_set_reason(c, true, "peer requires a client certificate");
		break;
	case SSL_R_NO_APPLICATION_PROTOCOL:
	case SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL:
		tls_conn_set_reason(c, false, "no ALPN h2 (%s)", s);
		break;
	case SSL_R_TLSV1_UNRECOGNIZED_NAME:
		tls_conn_set_reason(c, true, "peer has no certificate for the requested identity");
		break;
	case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
	case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
	case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
	case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
		tls_conn_set_reason(c, true, "peer rejected our certificate (%s)", s);
		break;
	case SSL_R_CERTIFICATE_VERIFY_FAILED:
		tls_conn_set_reason(c, true, "peer certificate verification failed");
		break;
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_HTTP_REQUEST:
	case SSL_R_HTTPS_PROXY_REQUEST:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
	case SSL_R_RECORD_LENGTH_MISMATCH:
		tls_conn_set_reason(c, false, "peer is not speaking TLS (plaintext?)");
		break;
	case SSL_R_UNEXPECTED_EOF_WHILE_READING:
		tls_conn_set_reason(c, false, handshake ? "peer closed the connection during "
						 "the handshake" : "peer closed without close_notify");
		ERR_clear_error();
		return -ECONNRESET;
	default:
		tls_conn_set_reason(c, false, "TLS error: %s", s);
		break;
	}
	ERR_clear_error();
	return c->policy_fail ? -EACCES : -EPROTO;
}

/* Maps a failed SSL_* call (ret <= 0, saved errno) to 0 (clean EOF), -EAGAIN + want flags
 * or a fatal -errno (the conn becomes FAILED). */
static int map_error(struct tls_conn *c, int ret, int saved_errno, bool handshake)
{
	int err;

	switch (SSL_get_error(c->ssl, ret)) {
	case SSL_ERROR_WANT_READ:
		c->want = TLS_WANT_READ;
		return -EAGAIN;
	case SSL_ERROR_WANT_WRITE:
		c->want = TLS_WANT_WRITE;
		return -EAGAIN;
	case SSL_ERROR_WANT_CLIENT_HELLO_CB:	/* held by hello_maybe_wait */
		c->want = TLS_WANT_RETRY;
		return -EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		if (!handshake)
			return 0;
		tls_conn_set_reason(c, false, "peer closed the connection during the handshake");
		err = -ECONNRESET;
		break;
	case SSL_ERROR_SYSCALL:
		ERR_clear_error();
		if (saved_errno == EAGAIN || saved_errno == EINTR) {
			/* A blocking fd with a timeout or a signal: not fatal. */
			c->want = TLS_WANT_READ | TLS_WANT_WRITE;
			return -EAGAIN;
		}
		if (saved_errno) {
			tls_conn_set_reason(c, false, "socket: %s", strerror(saved_errno));
			err = -saved_errno;
		} else {
			tls_conn_set_reason(c, false, "peer closed the connection%s",
					    handshake ? " during the handshake" : "");
			err = -ECONNRESET;
		}
		break;
	case SSL_ERROR_SSL:
		err = ssl_failure(c, handshake);
		break;
	default:
		ERR_clear_error();
		tls_conn_set_reason(c, false, "unexpected TLS state");
		err = -EPROTO;
		break;
	}
	c->st = TLS_ST_FAILED;
	c->want = 0;
	return err;
}

static int fail_now(struct tls_conn *c, bool policy, const char *reason)
{
	tls_conn_set_reason(c, policy, "%s", reason);
	c->st = TLS_ST_FAILED;
	c->want = 0;
	return policy ? -EACCES : -EPROTO;
}

static int failed_code(const struct tls_conn *c)
{
	return c->policy_fail ? -EACCES : -EPROTO;
}

int tls_conn_handshake(struct tls_conn *c)
{
	const unsigned char *alpn;
	unsigned alen;
	int ret;

	if (c->st == TLS_ST_ESTABLISHED || c->st == TLS_ST_SHUTDOWN)
		return 0;
	if (c->st == TLS_ST_FAILED)
		return failed_code(c);
	ERR_clear_error();
	errno = 0;
	ret = SSL_do_handshake(c->ssl);
	if (ret != 1)
		return map_error(c, ret, errno, true);
	c->want = 0;
	if (c->ctx->mesh) {
		/* Resumption is off, so the verify callback saw the leaf; be sure anyway. */
		if (!c->has_peer)
			return fail_now(c, true, "peer presented no verified identity");
		SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
		if (alen != 2 || memcmp(alpn, "h2", 2) != 0)
			return fail_now(c, false, "server did not select ALPN h2");
	}
	c->st = TLS_ST_ESTABLISHED;
	return 0;
}

ssize_t tls_conn_read(struct tls_conn *c, void *buf, size_t len)
{
	size_t n = 0;
	int ret;

	if (c->st == TLS_ST_FAILED)
		return failed_code(c);
	if (c->st == TLS_ST_HANDSHAKE)
		return -ENOTCONN;
	if (!len)
		return -EINVAL;
	ERR_clear_error();
	errno = 0;
	ret = SSL_read_ex(c->ssl, buf, len, &n);
	if (ret == 1) {
		/* A read may answer (a KeyUpdate): out with it; the caller flushes the rest. */
		if (c->olen && tls_conn_flush(c) && c->st == TLS_ST_FAILED)
			return failed_code(c);
		c->want = 0;	/* a full socket here is the caller's to wait for (unsent) */
		return (ssize_t)n;
	}
	return map_error(c, ret, errno, false);
}

ssize_t tls_conn_write(struct tls_conn *c, const void *buf, size_t len)
{
	size_t n = 0;
	int ret;

	if (c->st == TLS_ST_FAILED)
		return failed_code(c);
	if (c->st == TLS_ST_HANDSHAKE)
		return -ENOTCONN;
	if (c->st == TLS_ST_SHUTDOWN)
		return -EPIPE;
	if (!len)
		return 0;
	/* PARTIAL_WRITE makes SSL_write stop after each record: take record after record, so
	 * that they all leave in one send below. */
	size_t done = 0;
	do {
		ERR_clear_error();
		errno = 0;
		ret = SSL_write_ex(c->ssl, (const uint8_t *)buf + done, len - done, &n);
		if (ret == 1)
			done += n;
	} while (ret == 1 && done < len);
	if (done) {
		/* What stopped the loop (a full buffer, or a failure) shows on the next call. */
		ERR_clear_error();
		c->want = 0;
		/* Send what is buffered now; a full socket keeps the rest for tls_conn_flush. */
		ret = tls_conn_flush(c);
		return ret && ret != -EAGAIN ? ret : (ssize_t)done;
	}
	ret = map_error(c, ret, errno, false);
	if (ret == 0) {	/* the peer's close_notify came and the transport is gone */
		tls_conn_set_reason(c, false, "peer closed the connection");
		c->st = TLS_ST_FAILED;
		ret = -EPIPE;
	}
	return ret;
}

int tls_conn_shutdown(struct tls_conn *c)
{
	int ret;

	if (c->st == TLS_ST_FAILED)
		return failed_code(c);
	if (c->st == TLS_ST_HANDSHAKE)
		return -ENOTCONN;
	if (SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN && c->want == 0)
		return 0;
	ERR_clear_error();
	errno = 0;
	ret = SSL_shutdown(c->ssl);
	if (ret >= 0) {
		/* 0: our close_notify is out, the peer's not yet read - fine for a half-close. */
		c->st = TLS_ST_SHUTDOWN;
		c->want = 0;
		return tls_conn_flush(c) == -EAGAIN ? -EAGAIN : 0;
	}
	c->st = TLS_ST_SHUTDOWN;
	ret = map_error(c, ret, errno, false);
	return ret == 0 ? 0 : ret;
}

unsigned tls_conn_want(const struct tls_conn *c) { return c->want; }
size_t tls_conn_pending(const struct tls_conn *c)
{
	/* With read-ahead, whole records may wait unprocessed in OpenSSL's buffer: SSL_pending()
	 * counts only the decrypted part, SSL_has_pending() sees both. */
	int n = SSL_pending(c->ssl);
	if (n > 0)
		return (size_t)n;
	return SSL_has_pending(c->ssl) ? 1 : 0;
}
enum tls_conn_st tls_conn_state(const struct tls_conn *c) { return c->st; }
int tls_conn_fd(const struct tls_conn *c) { return c->fd; }

const struct spiffe_id *tls_conn_peer_id(const struct tls_conn *c)
{
	return c->has_peer && c->st != TLS_ST_HANDSHAKE ? &c->peer : NULL;
}

struct tls_cert *tls_conn_local_cert(const struct tls_conn *c) { return c->local; }
const struct spiffe_id *tls_conn_sni_id(const struct tls_conn *c) { return c->sni_id; }

const char *tls_conn_alpn(const struct tls_conn *c)
{
	const unsigned char *p;
	unsigned len;

	/* The mesh and gRPC only ever negotiate h2; anything else is reported as "". */
	SSL_get0_alpn_selected(c->ssl, &p, &len);
	return p && len == 2 && memcmp(p, "h2", 2) == 0 ? "h2" : "";
}

const char *tls_conn_version(const struct tls_conn *c) { return SSL_get_version(c->ssl); }

const char *tls_conn_cipher(const struct tls_conn *c)
{
	const char *s = SSL_get_cipher_name(c->ssl);
	return s ? s : "";
}

const char *tls_conn_reason(const struct tls_conn *c)
{
	if (c->reason)
		return c->reason;
	return c->st == TLS_ST_FAILED ? "out of memory recording the reason" : "";
}
