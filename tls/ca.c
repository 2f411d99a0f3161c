// SPDX-License-Identifier: Apache-2.0
/* The mesh CA: loading ca.crt/ca.key, issuing workload leaves (ECDSA P-256, SPIFFE URI SAN)
 * for the certstore, and making self-signed roots (tests, `ambitd ca-init`). */
#include "tls/ca.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tls/tls_int.h"

struct tls_ca {
	X509 *cert;		/* the signing certificate */
	EVP_PKEY *key;		/* its key; NULL for a verify-only CA */
	STACK_OF(X509) *chain;	/* sent after a leaf: the signing cert and intermediates,
				 * unless self-signed (the root is never sent) */
	STACK_OF(X509) *anchors;/* every certificate of ca.crt */
	bool partial_chain;	/* no self-signed root in ca.crt: trust the intermediate */
	int64_t not_before, not_after;
	pthread_mutex_t lock;	/* signing with one EVP_PKEY from several threads */
	atomic_uint refs;	/* tls_ca_ref / tls_ca_free */
};

static bool self_signed(X509 *x)
{
	return X509_check_issued(x, x) == X509_V_OK;
}

static struct tls_ca *ca_alloc(void)
{
	struct tls_ca *ca = calloc(1, sizeof(*ca));

	if (!ca)
		return NULL;
	pthread_mutex_init(&ca->lock, NULL);
	atomic_init(&ca->refs, 1);
	ca->chain = sk_X509_new_null();
	ca->anchors = sk_X509_new_null();
	if (!ca->chain || !ca->anchors) {
		tls_ca_free(ca);
		errno = ENOMEM;
		return NULL;
	}
	return ca;
}

struct tls_ca *tls_ca_ref(struct tls_ca *ca)
{
	if (ca)
		atomic_fetch_add(&ca->refs, 1);
	return ca;
}

void tls_ca_free(struct tls_ca *ca)
{
	if (!ca || atomic_fetch_sub(&ca->refs, 1) != 1)
		return;
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	sk_X509_pop_free(ca->chain, X509_free);
	sk_X509_pop_free(ca->anchors, X509_free);
	pthread_mutex_destroy(&ca->lock);
	free(ca);
}

static int push_ref(STACK_OF(X509) *sk, X509 *x)
{
	if (!X509_up_ref(x))
		return -ENOMEM;
	if (!sk_X509_push(sk, x)) {
		X509_free(x);
		return -ENOMEM;
	}
	return 0;
}

/* Fills chain, anchors and dates from ca->cert and the certificates that follow it. */
static int ca_finish(struct tls_ca *ca, STACK_OF(X509) *rest)
{
	bool have_root = self_signed(ca->cert);
	int err;

	if ((err = push_ref(ca->anchors, ca->cert)))
		return err;
	if (!have_root && (err = push_ref(ca->chain, ca->cert)))
		return err;
	for (int i = 0; rest && i < sk_X509_num(rest); i++) {
		X509 *x = sk_X509_value(rest, i);
		if ((err = push_ref(ca->anchors, x)))
			return err;
		if (self_signed(x))
			have_root = true;
		else if ((err = push_ref(ca->chain, x)))
			return err;
	}
	ca->partial_chain = !have_root;
	if (tls_asn1_time_to_unix(X509_get0_notBefore(ca->cert), &ca->not_before))
		return -EINVAL;
	return tls_asn1_time_to_unix(X509_get0_notAfter(ca->cert), &ca->not_after);
}

struct tls_ca *tls_ca_load(const char *cert_path, const char *key_path, char *err,
			   size_t errlen)
{
	struct tls_ca *ca = NULL;
	STACK_OF(X509) *rest = NULL;
	BIO *bio = NULL;
	X509 *x;
	int e = 0;

	if (!cert_path) {
		e = -tls_errf(err, errlen, EINVAL, "CA certificate path not set");
		goto out;
	}
	if (!(ca = ca_alloc()) || !(rest = sk_X509_new_null())) {
		e = -tls_errf(err, errlen, ENOMEM, "%s: out of memory", cert_path);
		goto out;
	}
	if (!(bio = tls_read_pem_file(cert_path))) {
		e = -tls_errf(err, errlen, errno, "%s: %s", cert_path, strerror(errno));
		goto out;
	}
	if (!(ca->cert = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		e = -tls_errf(err, errlen, EINVAL, "%s: no PEM certificate (%s)", cert_path,
			      tls_ossl_err());
		goto out;
	}
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		if (!sk_X509_push(rest, x)) {
			X509_free(x);
			e = -tls_errf(err, errlen, ENOMEM, "%s: out of memory", cert_path);
			goto out;
		}
	}
	ERR_clear_error();
	BIO_free(bio);
	bio = NULL;
	if (X509_check_ca(ca->cert) < 1) {
		e = -tls_errf(err, errlen, EINVAL, "%s: not a CA certificate (basicConstraints)",
			      cert_path);
		goto out;
	}
	if ((e = -ca_finish(ca, rest))) {
		tls_errf(err, errlen, e, "%s: %s", cert_path, strerror(e));
		goto out;
	}
	if (!key_path)
		goto out;
	if (!(bio = tls_read_pem_file(key_path))) {
		e = -tls_errf(err, errlen, errno, "%s: %s", key_path, strerror(errno));
		goto out;
	}
	if (!(ca->key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL))) {
		e = -tls_errf(err, errlen, EINVAL, "%s: no PEM private key (%s)", key_path,
			      tls_ossl_err());
		goto out;
	}
	if (X509_check_private_key(ca->cert, ca->key) != 1) {
		ERR_clear_error();
		e = -tls_errf(err, errlen, EINVAL, "%s: key does not match CA certificate %s",
			      key_path, cert_path);
		goto out;
	}
out:
	BIO_free(bio);
	sk_X509_pop_free(rest, X509_free);
	if (e) {
		tls_ca_free(ca);
		errno = e;
		return NULL;
	}
	return ca;
}

/* A random positive 128-bit serial (RFC 5280 §4.1.2.2: positive, at most 20 octets). */
static int set_random_serial(X509 *x)
{
	unsigned char b[16];
	BIGNUM *bn = NULL;
	int ret = -EIO;

	if (RAND_bytes(b, sizeof(b)) != 1)
		goto out;
	b[0] &= 0x7f;
	b[0] |= 0x01 << 6;	/* never zero, and always 16 octets wide in DER */
	if (!(bn = BN_bin2bn(b, sizeof(b), NULL)))
		goto out;
	if (BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		ret = 0;
out:
	BN_free(bn);
	return ret;
}

static int add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
	int ok;

	if (!ext)
		return -EINVAL;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -ENOMEM;
}

static EVP_PKEY *gen_p256(void)
{
	return EVP_EC_gen("P-256");
}

struct tls_ca *tls_ca_new_self_signed(const char *trust_domain, uint32_t lifetime_s)
{
	struct tls_ca *ca = ca_alloc();
	X509_NAME *name;
	X509V3_CTX v3;
	time_t now = time(NULL);
	int e = EIO;

	if (!ca)
		return NULL;
	if (!trust_domain || !*trust_domain) {
		e = EINVAL;
		goto fail;
	}
	if (!(ca->key = gen_p256()) || !(ca->cert = X509_new()))
		goto fail;
	name = X509_get_subject_name(ca->cert);
	if (!X509_set_version(ca->cert, X509_VERSION_3) || set_random_serial(ca->cert) ||
	    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
					(const unsigned char *)trust_domain, -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
					(const unsigned char *)"ambit mesh root", -1, -1, 0) ||
	    !X509_set_issuer_name(ca->cert, name) ||
	    !ASN1_TIME_set(X509_getm_notBefore(ca->cert), now - TLS_LEAF_BACKDATE_S) ||
	    !ASN1_TIME_set(X509_getm_notAfter(ca->cert), now + (time_t)lifetime_s) ||
	    !X509_set_pubkey(ca->cert, ca->key))
		goto fail;
	X509V3_set_ctx(&v3, ca->cert, ca->cert, NULL, NULL, 0);
	if (add_ext(ca->cert, &v3, NID_basic_constraints, "critical,CA:TRUE") ||
	    add_ext(ca->cert, &v3, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    add_ext(ca->cert, &v3, NID_subject_key_identifier, "hash") ||
	    add_ext(ca->cert, &v3, NID_authority_key_identifier, "keyid:always"))
		goto fail;
	if (!X509_sign(ca->cert, ca->key, EVP_sha256()))
		goto fail;
	if ((e = -ca_finish(ca, NULL)))
		goto fail;
	return ca;
fail:
	ERR_clear_error();
	tls_ca_free(ca);
	errno = e;
	return NULL;
}

/* Writes len bytes to path created with mode (exclusively when excl). 0 or -errno. */
static int write_file(const char *path, const void *data, size_t len, mode_t mode, bool excl)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (excl ? O_EXCL : O_TRUNC), mode);
	const char *p = data;
	int err = 0;

	if (fd == -1)
		return -errno;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		p += n;
		len -= (size_t)n;
	}
	if (close(fd) == -1 && !err)
		err = -errno;
	return err;
}

int tls_ca_write(const struct tls_ca *ca, const char *cert_path, const char *key_path,
		 char *err, size_t errlen)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long n;
	int e = 0;

	if (!bio)
		return tls_errf(err, errlen, ENOMEM, "out of memory");
	if (!ca->key) {
		e = tls_errf(err, errlen, ENOKEY, "%s: CA has no private key", key_path);
		goto out;
	}
	if (!PEM_write_bio_PrivateKey(bio, ca->key, NULL, NULL, 0, NULL, NULL)) {
		e = tls_errf(err, errlen, EIO, "%s: %s", key_path, tls_ossl_err());
		goto out;
	}
	n = BIO_get_mem_data(bio, &data);
	e = write_file(key_path, data, (size_t)n, 0600, true);
	OPENSSL_cleanse(data, (size_t)n);
	if (e) {
		tls_errf(err, errlen, -e, "%s: %s", key_path, strerror(-e));
		goto out;
	}
	BIO_free(bio);
	if (!(bio = BIO_new(BIO_s_mem())) || !PEM_write_bio_X509(bio, ca->cert)) {
		e = tls_errf(err, errlen, ENOMEM, "%s: out of memory", cert_path);
		goto out;
	}
	n = BIO_get_mem_data(bio, &data);
	if ((e = write_file(cert_path, data, (size_t)n, 0644, false)))
		tls_errf(err, errlen, -e, "%s: %s", cert_path, strerror(-e));
out:
	ERR_clear_error();
	BIO_free(bio);
	return e;
}

STACK_OF(X509) *tls_ca_anchors(const struct tls_ca *ca) { return ca->anchors; }

char *tls_ca_roots_pem(const struct tls_ca *ca)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *out = NULL;
	long n;

	if (!bio)
		return NULL;
	for (int i = 0; i < sk_X509_num(ca->anchors); i++) {
		X509 *x = sk_X509_value(ca->anchors, i);
		if ((ca->partial_chain || self_signed(x)) && !PEM_write_bio_X509(bio, x))
			goto out;
	}
	n = BIO_get_mem_data(bio, &data);
	if (n > 0 && (out = malloc((size_t)n + 1))) {
		memcpy(out, data, (size_t)n);
		out[n] = '\0';
	}
out:
	ERR_clear_error();
	BIO_free(bio);
	if (!out)
		errno = ENOMEM;
	return out;
}
bool tls_ca_partial_chain(const struct tls_ca *ca) { return ca->partial_chain; }
int64_t tls_ca_not_before(const struct tls_ca *ca) { return ca->not_before; }
int64_t tls_ca_not_after(const struct tls_ca *ca) { return ca->not_after; }
bool tls_ca_has_key(const struct tls_ca *ca) { return ca->key != NULL; }

bool tls_ca_issued_by_first(const struct tls_ca *ca, const struct tls_cert *c)
{
	int n = c->chain ? sk_X509_num(c->chain) : 0;
	X509 *top = n ? sk_X509_value(c->chain, n - 1) : c->x509;

	/* the top of the chain is the first root itself (a root sent along), or issued by it */
	if (!X509_cmp(top, ca->cert))
		top = n > 1 ? sk_X509_value(c->chain, n - 2) : c->x509;
	return X509_check_issued(ca->cert, top) == X509_V_OK;
}

/* Signs a leaf for pub: validity [now - 60 s, now + lifetime] capped at the CA's own,
 * subjectAltName from the config string san (critical: the subject is empty, RFC 5280
 * §4.2.1.6), extended key usage eku. NULL + errno. */
static X509 *sign_cert(struct tls_ca *ca, EVP_PKEY *pub, const struct tls_issue_opts *opts,
		       const char *san, const char *eku)
{
	uint32_t lifetime = opts && opts->lifetime_s ? opts->lifetime_s
						     : TLS_LEAF_LIFETIME_DEFAULT_S;
	int64_t now = opts && opts->now ? opts->now : (int64_t)time(NULL);
	int64_t not_after = now + lifetime;
	X509 *x = NULL;
	X509V3_CTX v3;

	if (!ca || !pub) {
		errno = EINVAL;
		return NULL;
	}
	if (!ca->key) {
		errno = ENOKEY;
		return NULL;
	}
	/* A leaf never outlives its issuer. */
	if (not_after > ca->not_after)
		not_after = ca->not_after;
	if (!(x = X509_new()))
		goto fail;
	if (!X509_set_version(x, X509_VERSION_3) || set_random_serial(x) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) ||
	    !ASN1_TIME_set(X509_getm_notBefore(x), (time_t)(now - TLS_LEAF_BACKDATE_S)) ||
	    !ASN1_TIME_set(X509_getm_notAfter(x), (time_t)not_after) ||
	    !X509_set_pubkey(x, pub))
		goto fail;
	X509V3_set_ctx(&v3, ca->cert, x, NULL, NULL, 0);
	if (add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") ||
	    add_ext(x, &v3, NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
	    add_ext(x, &v3, NID_ext_key_usage, eku) ||
	    add_ext(x, &v3, NID_subject_key_identifier, "hash") ||
	    add_ext(x, &v3, NID_authority_key_identifier, "keyid:always") ||
	    add_ext(x, &v3, NID_subject_alt_name, san))
		goto fail;
	pthread_mutex_lock(&ca->lock);
	int signed_ok = X509_sign(x, ca->key, EVP_sha256()) > 0;
	pthread_mutex_unlock(&ca->lock);
	if (!signed_ok)
		goto fail;
	ERR_clear_error();
	return x;
fail:
	ERR_clear_error();
	X509_free(x);
	errno = EIO;
	return NULL;
}

X509 *tls_ca_sign_leaf(struct tls_ca *ca, const struct spiffe_id *id, EVP_PKEY *pub,
		       const struct tls_issue_opts *opts)
{
	char uri[4 + SPIFFE_ID_STR_MAX + 9];

	/* SPIFFE X509-SVID: the identity only in the URI SAN. */
	snprintf(uri, sizeof(uri), "critical,URI:");
	if (!id || spiffe_id_format(id, uri + strlen(uri), sizeof(uri) - strlen(uri)) < 0) {
		errno = EINVAL;
		return NULL;
	}
	return sign_cert(ca, pub, opts, uri, "serverAuth,clientAuth");
}

/* A server name goes into a config string: only DNS characters or an IP literal. */
static bool name_ok(const char *s, bool *is_ip)
{
	unsigned char addr[16];
	size_t len = strlen(s);

	*is_ip = inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1;
	if (*is_ip)
		return true;
	if (!len || len > 253)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '-' || *p == '.' || (*p == '*' && p == s && p[1] == '.')))
			return false;
	return true;
}

X509 *tls_ca_sign_server(struct tls_ca *ca, const char *const *names, size_t n, EVP_PKEY *pub,
			 const struct tls_issue_opts *opts)
{
	size_t cap = 16 + n * (4 + 254), off;
	char *san;
	X509 *x;

	if (!n || n > TLS_SERVER_NAMES_MAX || !(san = malloc(cap))) {
		errno = n ? ENOMEM : EINVAL;
		return NULL;
	}
	off = (size_t)snprintf(san, cap, "critical");
	for (size_t i = 0; i < n; i++) {
		bool ip;
		if (!names[i] || !name_ok(names[i], &ip)) {
			free(san);
			errno = EINVAL;
			return NULL;
		}
		off += (size_t)snprintf(san + off, cap - off, ",%s:%s", ip ? "IP" : "DNS", names[i]);
	}
	x = sign_cert(ca, pub, opts, san, "serverAuth");
	free(san);
	return x;
}

STACK_OF(X509) *tls_ca_chain(const struct tls_ca *ca) { return ca->chain; }

struct tls_cert *tls_ca_issue(struct tls_ca *ca, const struct spiffe_id *id,
			      const struct tls_issue_opts *opts)
{
	int64_t now = opts && opts->now ? opts->now : (int64_t)time(NULL);
	struct tls_issue_opts o = { .lifetime_s = opts ? opts->lifetime_s : 0, .now = now };
	STACK_OF(X509) *chain = NULL;
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	int e = ENOMEM;

	if (!ca || !id) {
		errno = EINVAL;
		return NULL;
	}
	if (!ca->key) {
		errno = ENOKEY;
		return NULL;
	}
	if (!(key = gen_p256()) || !(chain = sk_X509_new_null()))
		goto fail;
	for (int i = 0; i < sk_X509_num(ca->chain); i++)
		if (push_ref(chain, sk_X509_value(ca->chain, i)))
			goto fail;
	if (!(x = tls_ca_sign_leaf(ca, id, key, &o))) {
		e = errno;
		goto fail;
	}
	return tls_cert_wrap(x, key, chain, now, NULL);
fail:
	ERR_clear_error();
	EVP_PKEY_free(key);
	sk_X509_pop_free(chain, X509_free);
	errno = e;
	return NULL;
}
