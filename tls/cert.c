// SPDX-License-Identifier: Apache-2.0
/* struct tls_cert (leaf + key + chain, refcounted) and the small OpenSSL helpers the rest
 * of tls/ shares: PEM file reading with wiping, ASN1 time conversion, error strings. */
#include "tls/tls_int.h"

#include <errno.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

#define PEM_FILE_MAX (1u << 20)

int tls_errf(char *err, size_t errlen, int e, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -e;
}

const char *tls_ossl_err(void)
{
	unsigned long e = ERR_peek_error();
	const char *s = e ? ERR_reason_error_string(e) : NULL;

	ERR_clear_error();
	return s ? s : "unknown OpenSSL error";
}

int tls_asn1_time_to_unix(const ASN1_TIME *t, int64_t *out)
{
	struct tm tm;

	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return -EINVAL;
	*out = (int64_t)timegm(&tm);
	return 0;
}

BIO *tls_read_pem_file(const char *path)
{
	size_t len = 0;
	char *buf = read_file_bounded(path, PEM_FILE_MAX, &len);
	BIO *bio = NULL;

	if (!buf)
		return NULL;
	/* A read-write memory BIO owns a copy that OpenSSL clears on free (BUF_MEM_free). */
	bio = BIO_new(BIO_s_mem());
	if (!bio || BIO_write(bio, buf, (int)len) != (int)len) {
		BIO_free(bio);
		bio = NULL;
		errno = ENOMEM;
	}
	OPENSSL_cleanse(buf, len);
	free(buf);
	return bio;
}

static void serial_hex(const X509 *x, char out[TLS_SERIAL_HEX_MAX])
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	uint8_t bin[(TLS_SERIAL_HEX_MAX - 1) / 2];
	int n = bn ? BN_num_bytes(bn) : -1;

	out[0] = '\0';
	if (n >= 0 && n <= (int)sizeof(bin)) {
		/* Issued serials are 16 bytes: keep their leading zero bytes for a stable width. */
		int w = n <= 16 ? 16 : n;
		if (BN_bn2binpad(bn, bin, w) == w)
			hex_encode(bin, (size_t)w, out);
	} else if (n > 0) {
		snprintf(out, TLS_SERIAL_HEX_MAX, "(serial too long)");
	}
	BN_free(bn);
}

struct tls_cert *tls_cert_wrap(X509 *x509, EVP_PKEY *key, STACK_OF(X509) *chain,
			       int64_t issued_at, const char **why)
{
	struct tls_cert *c = calloc(1, sizeof(*c));
	int err;

	if (!c) {
		err = ENOMEM;
		goto fail;
	}
	if ((err = -spiffe_id_from_x509(x509, &c->id, why)))
		goto fail;
	if (tls_asn1_time_to_unix(X509_get0_notBefore(x509), &c->not_before) ||
	    tls_asn1_time_to_unix(X509_get0_notAfter(x509), &c->not_after)) {
		if (why)
			*why = "bad validity dates";
		err = EINVAL;
		goto fail;
	}
	if (!chain && !(chain = sk_X509_new_null())) {
		err = ENOMEM;
		goto fail;
	}
	atomic_init(&c->refs, 1);
	c->x509 = x509;
	c->key = key;
	c->chain = chain;
	c->issued_at = issued_at ? issued_at : c->not_before;
	serial_hex(x509, c->serial);
	return c;
fail:
	free(c);
	X509_free(x509);
	EVP_PKEY_free(key);
	sk_X509_pop_free(chain, X509_free);
	errno = err;
	return NULL;
}

struct tls_cert *tls_cert_load(const char *cert_path, const char *key_path, char *err,
			       size_t errlen)
{
	BIO *bio = NULL;
	X509 *leaf = NULL, *x;
	EVP_PKEY *key = NULL;
	STACK_OF(X509) *chain = NULL;
	struct tls_cert *c = NULL;
	const char *why = NULL;
	int e = 0;

	if (!(bio = tls_read_pem_file(cert_path))) {
		e = -tls_errf(err, errlen, errno, "%s: %s", cert_path, strerror(errno));
		goto out;
	}
	if (!(leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		e = -tls_errf(err, errlen, EINVAL, "%s: no PEM certificate (%s)", cert_path,
			      tls_ossl_err());
		goto out;
	}
	if (!(chain = sk_X509_new_null())) {
		e = ENOMEM;
		goto out;
	}
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		if (!sk_X509_push(chain, x)) {
			X509_free(x);
			e = ENOMEM;
			goto out;
		}
	}
	ERR_clear_error();	/* the loop ends on "no start line" */
	BIO_free(bio);
	if (!(bio = tls_read_pem_file(key_path))) {
		e = -tls_errf(err, errlen, errno, "%s: %s", key_path, strerror(errno));
		goto out;
	}
	if (!(key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL))) {
		e = -tls_errf(err, errlen, EINVAL, "%s: no PEM private key (%s)", key_path,
			      tls_ossl_err());
		goto out;
	}
	if (X509_check_private_key(leaf, key) != 1) {
		ERR_clear_error();
		e = -tls_errf(err, errlen, EINVAL, "%s: key does not match certificate %s",
			      key_path, cert_path);
		goto out;
	}
	c = tls_cert_wrap(leaf, key, chain, 0, &why);
	leaf = NULL;
	key = NULL;
	chain = NULL;
	if (!c)
		e = -tls_errf(err, errlen, errno, "%s: %s", cert_path, why ? why : strerror(errno));
out:
	BIO_free(bio);
	X509_free(leaf);
	EVP_PKEY_free(key);
	sk_X509_pop_free(chain, X509_free);
	if (!c)
		errno = e;
	return c;
}

struct tls_cert *tls_cert_ref(struct tls_cert *c)
{
	if (c)
		atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	return c;
}

void tls_cert_unref(struct tls_cert *c)
{
	if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
		return;
	X509_free(c->x509);
	EVP_PKEY_free(c->key);	/* EC keys clear their private scalar on free */
	sk_X509_pop_free(c->chain, X509_free);
	free(c);
}

const struct spiffe_id *tls_cert_id(const struct tls_cert *c) { return &c->id; }
const char *tls_cert_serial_hex(const struct tls_cert *c) { return c->serial; }
int64_t tls_cert_not_before(const struct tls_cert *c) { return c->not_before; }
int64_t tls_cert_not_after(const struct tls_cert *c) { return c->not_after; }
int64_t tls_cert_issued_at(const struct tls_cert *c) { return c->issued_at; }

int tls_cert_chain_pem(const struct tls_cert *c, char *buf, size_t len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long n;
	int ret = -ENOMEM;

	if (!bio)
		return -ENOMEM;
	if (!PEM_write_bio_X509(bio, c->x509))
		goto out;
	for (int i = 0; i < sk_X509_num(c->chain); i++)
		if (!PEM_write_bio_X509(bio, sk_X509_value(c->chain, i)))
			goto out;
	n = BIO_get_mem_data(bio, &data);
	if (n < 0 || (size_t)n >= len) {
		ret = -ENOSPC;
		goto out;
	}
	memcpy(buf, data, (size_t)n);
	buf[n] = '\0';
	ret = (int)n;
out:
	ERR_clear_error();
	BIO_free(bio);
	return ret;
}
