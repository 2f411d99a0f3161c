// SPDX-License-Identifier: Apache-2.0
/* JWS signature checks with OpenSSL for ambit-ca's token verification (tokens.issuer_keys):
 * the issuer's public keys loaded once, ES256 and RS256 verified per request. */
#include "tls/jwt.h"

#include <errno.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tls/tls_int.h"

struct tls_jwt_keys {
	EVP_PKEY *keys[TLS_JWT_KEYS_MAX];
	size_t n;
};

void tls_jwt_keys_free(struct tls_jwt_keys *k)
{
	if (!k)
		return;
	for (size_t i = 0; i < k->n; i++)
		EVP_PKEY_free(k->keys[i]);
	free(k);
}

size_t tls_jwt_keys_count(const struct tls_jwt_keys *k)
{
	return k ? k->n : 0;
}

static bool is_p256(EVP_PKEY *pk)
{
	char group[32];
	size_t glen;

	return EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC &&
	       EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
					      &glen) &&
	       strcmp(group, "prime256v1") == 0;
}

/* Takes pk (owned) into k when it is a key JWT verification may use. */
static int add_key(struct tls_jwt_keys *k, EVP_PKEY *pk, const char *path, char *err,
		   size_t errlen)
{
	bool rsa = EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA;

	if (!is_p256(pk) && !(rsa && EVP_PKEY_get_bits(pk) >= 2048)) {
		EVP_PKEY_free(pk);
		return tls_errf(err, errlen, EINVAL, "%s: key is neither EC P-256 (ES256) nor RSA "
				"of 2048 bits or more (RS256)", path);
	}
	if (k->n == TLS_JWT_KEYS_MAX) {
		EVP_PKEY_free(pk);
		return tls_errf(err, errlen, E2BIG, "%s: more than %d issuer keys", path,
				TLS_JWT_KEYS_MAX);
	}
	k->keys[k->n++] = pk;
	return 0;
}

struct tls_jwt_keys *tls_jwt_keys_load(const char *const *paths, size_t n, char *err,
				       size_t errlen)
{
	struct tls_jwt_keys *k = calloc(1, sizeof(*k));
	int e = 0;

	if (!k)
		return NULL;
	for (size_t i = 0; i < n && !e; i++) {
		BIO *bio = tls_read_pem_file(paths[i]);
		char *name = NULL, *header = NULL;
		unsigned char *der = NULL;
		long dlen;
		size_t found = 0;

		if (!bio) {
			e = -tls_errf(err, errlen, errno, "%s: %s", paths[i], strerror(errno));
			break;
		}
		while (!e && PEM_read_bio(bio, &name, &header, &der, &dlen)) {
			const unsigned char *p = der;
			EVP_PKEY *pk = NULL;
			if (strcmp(name, "PUBLIC KEY") == 0) {
				pk = d2i_PUBKEY(NULL, &p, dlen);
			} else if (strcmp(name, "CERTIFICATE") == 0) {
				X509 *x = d2i_X509(NULL, &p, dlen);
				pk = x ? X509_get_pubkey(x) : NULL;
				X509_free(x);
			}
			if (pk) {
				e = -add_key(k, pk, paths[i], err, errlen);
				found++;
			}
			OPENSSL_free(name);
			OPENSSL_free(header);
			OPENSSL_free(der);
		}
		BIO_free(bio);
		if (!e && !found)
			e = -tls_errf(err, errlen, EINVAL, "%s: no PEM PUBLIC KEY or CERTIFICATE",
				      paths[i]);
	}
	ERR_clear_error();
	if (!e && !k->n)
		e = -tls_errf(err, errlen, EINVAL, "no issuer keys");
	if (e) {
		tls_jwt_keys_free(k);
		errno = e;
		return NULL;
	}
	return k;
}

/* RFC 7518 §3.4: R||S, 32 bytes each, into the DER ECDSA-Sig-Value OpenSSL verifies. */
static int es256_der(const uint8_t *sig, size_t siglen, unsigned char **der, int *derlen)
{
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *s = NULL;
	int ret = -EACCES;

	*der = NULL;
	if (siglen != 64)
		return -EACCES;
	if (!(es = ECDSA_SIG_new()) || !(r = BN_bin2bn(sig, 32, NULL)) ||
	    !(s = BN_bin2bn(sig + 32, 32, NULL)) || !ECDSA_SIG_set0(es, r, s))
		goto out;
	r = s = NULL;	/* es owns them now */
	if ((*derlen = i2d_ECDSA_SIG(es, der)) > 0)
		ret = 0;
out:
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	return ret;
}

static bool verify_one(EVP_PKEY *pk, const void *input, size_t len, const unsigned char *sig,
		       size_t siglen)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pk) == 1 &&
		  EVP_DigestVerify(md, sig, siglen, input, len) == 1;

	EVP_MD_CTX_free(md);
	return ok;
}

int tls_jwt_verify(const struct tls_jwt_keys *k, const char *alg, const void *input, size_t len,
		   const uint8_t *sig, size_t siglen)
{
	unsigned char *der = NULL;
	int derlen = 0, ret = -EACCES;
	bool es;

	if (!alg)
		return -ENOTSUP;
	if (strcmp(alg, "ES256") == 0)
		es = true;
	else if (strcmp(alg, "RS256") == 0)
		es = false;
	else
		return -ENOTSUP;
	if (es && es256_der(sig, siglen, &der, &derlen))
		goto out;
	for (size_t i = 0; k && i < k->n; i++) {
		EVP_PKEY *pk = k->keys[i];
		if (es ? !is_p256(pk) : EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA)
			continue;
		if (es ? verify_one(pk, input, len, der, (size_t)derlen)
		       : verify_one(pk, input, len, sig, siglen)) {
			ret = 0;
			break;
		}
	}
out:
	OPENSSL_free(der);
	ERR_clear_error();
	return ret;
}
