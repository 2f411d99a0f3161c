// SPDX-License-Identifier: Apache-2.0
/* CSRs for Istio's certificate API (IstioCertificateRequest.csr): made by the node agent for
 * each workload identity, parsed and signed by ambit-ca. The parser trusts nothing: bounded
 * input, one PEM block, DER with no trailing bytes, known key types, a valid self-signature and
 * exactly one SAN, a SPIFFE URI. */
#include "tls/csr.h"

#include <errno.h>
#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tls/tls_int.h"

#define PEM_CSR_NAME "CERTIFICATE REQUEST"
#define CHAIN_CERTS_MAX 8	/* leaf + intermediates + root a client accepts */

struct tls_csr {
	EVP_PKEY *key;
	struct spiffe_id id;
	char *pem;
	size_t pem_len;
};

struct tls_csr_req {
	X509_REQ *req;
};

/* ---- client side ---- */

void tls_csr_free(struct tls_csr *csr)
{
	if (!csr)
		return;
	EVP_PKEY_free(csr->key);	/* EC keys clear their private scalar on free */
	free(csr->pem);
	free(csr);
}

const char *tls_csr_pem(const struct tls_csr *csr) { return csr->pem; }
size_t tls_csr_pem_len(const struct tls_csr *csr) { return csr->pem_len; }
const struct spiffe_id *tls_csr_id(const struct tls_csr *csr) { return &csr->id; }

/* A critical subjectAltName holding the one URI id. NULL on failure. */
static X509_EXTENSION *san_uri_ext(const struct spiffe_id *id)
{
	char conf[sizeof("critical,URI:") + SPIFFE_ID_STR_MAX];
	size_t off = (size_t)snprintf(conf, sizeof(conf), "critical,URI:");

	if (spiffe_id_format(id, conf + off, sizeof(conf) - off) < 0)
		return NULL;
	return X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, conf);
}

struct tls_csr *tls_csr_new(const struct spiffe_id *id)
{
	STACK_OF(X509_EXTENSION) *exts = NULL;
	X509_EXTENSION *san = NULL;
	struct tls_csr *csr = NULL;
	X509_REQ *req = NULL;
	BIO *bio = NULL;
	char *data;
	long n;
	int e = EIO;

	if (!id) {
		errno = EINVAL;
		return NULL;
	}
	if (!(csr = calloc(1, sizeof(*csr)))) {
		e = ENOMEM;
		goto fail;
	}
	csr->id = *id;
	if (!(csr->key = EVP_EC_gen("P-256")) || !(req = X509_REQ_new()) ||
	    !(exts = sk_X509_EXTENSION_new_null()) || !(san = san_uri_ext(id)))
		goto fail;
	if (!sk_X509_EXTENSION_push(exts, san))
		goto fail;
	san = NULL;
	/* PKCS #10 (RFC 2986 §4.1): version 0; the identity travels only in the SAN, as in an
	 * X509-SVID, so the subject stays empty. */
	if (!X509_REQ_set_version(req, X509_REQ_VERSION_1) || !X509_REQ_set_pubkey(req, csr->key) ||
	    !X509_REQ_add_extensions(req, exts) || X509_REQ_sign(req, csr->key, EVP_sha256()) <= 0)
		goto fail;
	if (!(bio = BIO_new(BIO_s_mem())) || !PEM_write_bio_X509_REQ(bio, req))
		goto fail;
	n = BIO_get_mem_data(bio, &data);
	if (n <= 0 || !(csr->pem = malloc((size_t)n + 1))) {
		e = ENOMEM;
		goto fail;
	}
	memcpy(csr->pem, data, (size_t)n);
	csr->pem[n] = '\0';
	csr->pem_len = (size_t)n;
	BIO_free(bio);
	X509_REQ_free(req);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return csr;
fail:
	ERR_clear_error();
	BIO_free(bio);
	X509_EXTENSION_free(san);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	tls_csr_free(csr);
	errno = e;
	return NULL;
}

static bool self_signed(X509 *x)
{
	return X509_check_issued(x, x) == X509_V_OK;
}

/* Verifies leaf (with untrusted intermediates) against the trust anchors of roots at now. */
static int verify_chain(X509 *leaf, STACK_OF(X509) *untrusted, struct tls_ca *roots, int64_t now,
			char *err, size_t errlen)
{
	STACK_OF(X509) *anchors = tls_ca_anchors(roots);
	X509_STORE_CTX *sctx = NULL;
	X509_STORE *store = X509_STORE_new();
	int ret = -ENOMEM;

	if (!store || !(sctx = X509_STORE_CTX_new()))
		goto out;
	for (int i = 0; i < sk_X509_num(anchors); i++)
		if (!X509_STORE_add_cert(store, sk_X509_value(anchors, i)))
			goto out;
	if (!X509_STORE_CTX_init(sctx, store, leaf, untrusted))
		goto out;
	X509_STORE_CTX_set_time(sctx, 0, (time_t)now);
	if (tls_ca_partial_chain(roots))
		X509_STORE_CTX_set_flags(sctx, X509_V_FLAG_PARTIAL_CHAIN);
	if (X509_verify_cert(sctx) == 1) {
		ret = 0;
	} else {
		ret = tls_errf(err, errlen, EACCES, "certificate from the CA does not verify: %s",
			       X509_verify_cert_error_string(X509_STORE_CTX_get_error(sctx)));
	}
out:
	if (ret == -ENOMEM)
		tls_errf(err, errlen, ENOMEM, "out of memory");
	ERR_clear_error();
	X509_STORE_CTX_free(sctx);
	X509_STORE_free(store);
	return ret;
}

struct tls_cert *tls_csr_accept(const struct tls_csr *csr, const char *chain_pem, size_t len,
				struct tls_ca *roots, int64_t now, char *err, size_t errlen)
{
	STACK_OF(X509) *rest = NULL, *chain = NULL;
	struct tls_cert *c = NULL;
	struct spiffe_id got;
	char a[SPIFFE_ID_STR_MAX], b[SPIFFE_ID_STR_MAX];
	const char *why = NULL;
	X509 *leaf = NULL, *x;
	BIO *bio = NULL;
	int e = 0;

	if (!csr || !chain_pem || !len || len > TLS_CHAIN_PEM_MAX || len > INT_MAX) {
		e = -tls_errf(err, errlen, EINVAL, "certificate chain empty or over %u bytes",
			      TLS_CHAIN_PEM_MAX);
		goto out;
	}
	if (!now)
		now = (int64_t)time(NULL);
	if (!(bio = BIO_new_mem_buf(chain_pem, (int)len)) || !(rest = sk_X509_new_null()) ||
	    !(chain = sk_X509_new_null())) {
		e = -tls_errf(err, errlen, ENOMEM, "out of memory");
		goto out;
	}
	if (!(leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		e = -tls_errf(err, errlen, EINVAL, "no PEM certificate in the chain (%s)",
			      tls_ossl_err());
		goto out;
	}
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		if (sk_X509_num(rest) + 1 >= CHAIN_CERTS_MAX || !sk_X509_push(rest, x)) {
			X509_free(x);
			e = -tls_errf(err, errlen, EINVAL, "certificate chain over %d certificates",
				      CHAIN_CERTS_MAX);
			goto out;
		}
	}
	ERR_clear_error();	/* the loop ends on "no start line" */
	if (X509_check_private_key(leaf, csr->key) != 1) {
		ERR_clear_error();
		e = -tls_errf(err, errlen, EINVAL, "the certificate is not for the CSR's key");
		goto out;
	}
	if (spiffe_id_from_x509(leaf, &got, &why)) {
		e = -tls_errf(err, errlen, EINVAL, "the certificate's identity: %s", why);
		goto out;
	}
	if (!spiffe_id_equal(&got, &csr->id)) {
		e = -tls_errf(err, errlen, EINVAL, "the certificate is for %s, asked for %s",
			      spiffe_id_str(&got, a), spiffe_id_str(&csr->id, b));
		goto out;
	}
	if (roots && (e = -verify_chain(leaf, rest, roots, now, err, errlen)))
		goto out;
	for (int i = 0; i < sk_X509_num(rest); i++) {
		x = sk_X509_value(rest, i);
		if (self_signed(x))
			continue;
		if (!X509_up_ref(x) || !sk_X509_push(chain, x)) {
			e = -tls_errf(err, errlen, ENOMEM, "out of memory");
			goto out;
		}
	}
	if (!EVP_PKEY_up_ref(csr->key)) {
		e = -tls_errf(err, errlen, ENOMEM, "out of memory");
		goto out;
	}
	c = tls_cert_wrap(leaf, csr->key, chain, 0, &why);
	leaf = NULL;
	chain = NULL;
	if (!c)
		e = -tls_errf(err, errlen, errno, "%s", why ? why : strerror(errno));
out:
	ERR_clear_error();
	BIO_free(bio);
	X509_free(leaf);
	sk_X509_pop_free(rest, X509_free);
	sk_X509_pop_free(chain, X509_free);
	if (!c)
		errno = e;
	return c;
}

/* ---- CA side ---- */

void tls_csr_req_free(struct tls_csr_req *req)
{
	if (!req)
		return;
	X509_REQ_free(req->req);
	free(req);
}

static int whyf(char why[TLS_CSR_WHY_MAX], int e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int whyf(char why[TLS_CSR_WHY_MAX], int e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, TLS_CSR_WHY_MAX, fmt, ap);
	va_end(ap);
	return -e;
}

static bool is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* The one PEM block of s[0, len): only whitespace may surround it; it is s[*from, *to). */
static int pem_block(const char *s, size_t len, size_t *from, size_t *to, char *why)
{
	static const char begin[] = "-----BEGIN " PEM_CSR_NAME "-----";
	static const char end[] = "-----END " PEM_CSR_NAME "-----";
	size_t i = 0, j;

	while (i < len && is_space(s[i]))
		i++;
	if (len - i < sizeof(begin) - 1 || memcmp(s + i, begin, sizeof(begin) - 1) != 0)
		return whyf(why, EINVAL, "CSR is not a PEM " PEM_CSR_NAME);
	for (j = i + sizeof(begin) - 1; j + sizeof(end) - 1 <= len; j++)
		if (s[j] == '-' && memcmp(s + j, end, sizeof(end) - 1) == 0)
			break;
	if (j + sizeof(end) - 1 > len)
		return whyf(why, EINVAL, "CSR PEM block has no END line");
	*from = i;
	*to = j + sizeof(end) - 1;
	for (j = *to; j < len; j++)
		if (!is_space(s[j]))
			return whyf(why, EINVAL, "CSR has data after its PEM block");
	return 0;
}

/* The public key must be one Istio's CA accepts and a mesh leaf may use. */
static int check_key(EVP_PKEY *pk, char *why)
{
	char group[64];
	size_t glen = 0;
	int bits;

	if (!pk)
		return whyf(why, EINVAL, "CSR public key unreadable");
	bits = EVP_PKEY_get_bits(pk);
	switch (EVP_PKEY_get_base_id(pk)) {
	case EVP_PKEY_EC:
		if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group,
						    sizeof(group), &glen))
			return whyf(why, EINVAL, "CSR EC key has no named curve");
		if (strcmp(group, "prime256v1") != 0 && strcmp(group, "secp384r1") != 0)
			return whyf(why, EINVAL, "CSR EC key on curve %s (P-256 or P-384 only)",
				    group);
		return 0;
	case EVP_PKEY_RSA:
		if (bits < 2048 || bits > 4096)
			return whyf(why, EINVAL, "CSR RSA key of %d bits (2048 to 4096 only)", bits);
		return 0;
	}
	return whyf(why, EINVAL, "CSR key type %s not allowed (EC P-256/P-384 or RSA)",
		    OBJ_nid2sn(EVP_PKEY_get_base_id(pk)));
}

/* Exactly one extension request, one subjectAltName in it, one name in that: a SPIFFE URI. */
static int check_san(X509_REQ *req, struct spiffe_id *id, char *why)
{
	STACK_OF(X509_EXTENSION) *exts = NULL;
	GENERAL_NAMES *names = NULL;
	int found = -1, nsan = 0, err;

	if (X509_REQ_get_attr_by_NID(req, NID_ext_req, -1) < 0)
		return whyf(why, EINVAL, "CSR has no subjectAltName");
	if (X509_REQ_get_attr_by_NID(req, NID_ext_req,
				     X509_REQ_get_attr_by_NID(req, NID_ext_req, -1)) >= 0)
		return whyf(why, EINVAL, "CSR has several extension requests");
	if (!(exts = X509_REQ_get_extensions(req))) {
		err = whyf(why, EINVAL, "CSR extension request malformed");
		goto out;
	}
	for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		if (OBJ_obj2nid(X509_EXTENSION_get_object(sk_X509_EXTENSION_value(exts, i))) ==
		    NID_subject_alt_name) {
			found = i;
			nsan++;
		}
	}
	if (nsan != 1) {
		err = nsan ? whyf(why, EINVAL, "CSR has %d subjectAltName extensions", nsan)
			   : whyf(why, EINVAL, "CSR has no subjectAltName");
		goto out;
	}
	if (!(names = X509V3_EXT_d2i(sk_X509_EXTENSION_value(exts, found)))) {
		err = whyf(why, EINVAL, "CSR subjectAltName malformed");
		goto out;
	}
	if (sk_GENERAL_NAME_num(names) != 1) {
		err = whyf(why, EINVAL, "CSR has %d subjectAltName entries (one URI only)",
			   sk_GENERAL_NAME_num(names));
		goto out;
	}
	const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, 0);
	if (gn->type != GEN_URI) {
		err = whyf(why, EINVAL, "CSR subjectAltName is not a URI");
		goto out;
	}
	const unsigned char *data = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
	int len = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
	char buf[SPIFFE_ID_STR_MAX];
	const char *pwhy = NULL;
	if (len <= 0 || len >= (int)sizeof(buf)) {
		err = whyf(why, EINVAL, "CSR URI SAN empty or too long");
		goto out;
	}
	memcpy(buf, data, (size_t)len);
	buf[len] = '\0';
	if (strlen(buf) != (size_t)len) {
		err = whyf(why, EINVAL, "NUL byte in the CSR's URI SAN");
		goto out;
	}
	if ((err = spiffe_id_parse(buf, id, &pwhy)))
		whyf(why, EINVAL, "CSR URI SAN is not a SPIFFE ID: %s", pwhy ? pwhy : "malformed");
out:
	GENERAL_NAMES_free(names);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return err ? -EINVAL : 0;
}

int tls_csr_parse(const void *pem, size_t len, struct tls_csr_req **out, struct spiffe_id *id,
		  char why[TLS_CSR_WHY_MAX])
{
	char *name = NULL, *header = NULL;
	unsigned char *der = NULL;
	const unsigned char *p;
	long derlen = 0;
	X509_REQ *req = NULL;
	BIO *bio = NULL;
	size_t from = 0, to = 0;
	int err;

	*out = NULL;
	why[0] = '\0';
	if (!pem || !len)
		return whyf(why, EINVAL, "CSR is empty");
	if (len > TLS_CSR_PEM_MAX)
		return whyf(why, EMSGSIZE, "CSR of %zu bytes (at most %u)", len, TLS_CSR_PEM_MAX);
	if ((err = pem_block(pem, len, &from, &to, why)))
		return err;
	if (!(bio = BIO_new_mem_buf((const char *)pem + from, (int)(to - from)))) {
		err = whyf(why, ENOMEM, "out of memory");
		goto out;
	}
	if (!PEM_read_bio(bio, &name, &header, &der, &derlen) || strcmp(name, PEM_CSR_NAME) != 0) {
		err = whyf(why, EINVAL, "CSR PEM block malformed");
		goto out;
	}
	if (header && *header) {
		err = whyf(why, EINVAL, "CSR PEM block has headers");
		goto out;
	}
	p = der;
	if (!(req = d2i_X509_REQ(NULL, &p, derlen)) || p != der + derlen) {
		err = whyf(why, EINVAL, "CSR DER malformed");
		goto out;
	}
	if ((err = check_key(X509_REQ_get0_pubkey(req), why)))
		goto out;
	if (X509_REQ_verify(req, X509_REQ_get0_pubkey(req)) != 1) {
		err = whyf(why, EINVAL, "CSR signature does not verify");
		goto out;
	}
	if ((err = check_san(req, id, why)))
		goto out;
	if (!(*out = calloc(1, sizeof(**out)))) {
		err = whyf(why, ENOMEM, "out of memory");
		goto out;
	}
	(*out)->req = req;
	req = NULL;
out:
	ERR_clear_error();
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(der);
	BIO_free(bio);
	X509_REQ_free(req);
	return err;
}

int tls_ca_sign_csr(struct tls_ca *ca, const struct tls_csr_req *req, const struct spiffe_id *id,
		    const struct tls_issue_opts *opts, char **chain_pem, size_t *len)
{
	STACK_OF(X509) *chain, *anchors;
	X509 *leaf;
	BIO *bio = NULL;
	char *data;
	long n;
	int err = -ENOMEM;

	*chain_pem = NULL;
	*len = 0;
	if (!ca || !req || !id)
		return -EINVAL;
	if (!(leaf = tls_ca_sign_leaf(ca, id, X509_REQ_get0_pubkey(req->req), opts)))
		return -errno;
	/* IstioCertificateResponse.cert_chain: leaf, intermediates, root last. */
	chain = tls_ca_chain(ca);
	anchors = tls_ca_anchors(ca);
	if (!(bio = BIO_new(BIO_s_mem())) || !PEM_write_bio_X509(bio, leaf))
		goto out;
	for (int i = 0; i < sk_X509_num(chain); i++)
		if (!PEM_write_bio_X509(bio, sk_X509_value(chain, i)))
			goto out;
	for (int i = 0; i < sk_X509_num(anchors); i++)
		if (self_signed(sk_X509_value(anchors, i)) &&
		    !PEM_write_bio_X509(bio, sk_X509_value(anchors, i)))
			goto out;
	n = BIO_get_mem_data(bio, &data);
	if (n <= 0 || !(*chain_pem = malloc((size_t)n + 1)))
		goto out;
	memcpy(*chain_pem, data, (size_t)n);
	(*chain_pem)[n] = '\0';
	*len = (size_t)n;
	err = 0;
out:
	ERR_clear_error();
	BIO_free(bio);
	X509_free(leaf);
	return err;
}
