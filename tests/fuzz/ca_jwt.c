// SPDX-License-Identifier: Apache-2.0
/* Fuzzes ambit-ca's offline check of a node's service-account token (ca_auth_jwt, ca/auth.h),
 * which runs on whatever bearer token a caller sends, before anything else trusts it. The
 * issuer key is an EC P-256 key made at start. First byte, bit 0: 0, the rest is the token as
 * sent (so it is never signed by the issuer: it must be refused, with a reason); 1, the rest is
 * "HEADER\0PAYLOAD", which the target base64url-encodes and signs with the issuer key (ES256),
 * so that the claims' checks are reached too. An accepted token names a service account
 * (namespace and name non-empty, terminated in their fields); a refused one says why and
 * leaves the caller zeroed. */
#include "fuzz.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "ca/auth.h"
#include "tls/jwt.h"

#define NOW 1700000000

static EVP_PKEY *issuer;
static struct tls_jwt_keys *keys;

/* The issuer key, and its public half loaded as ambit-ca loads tokens.issuer_keys. */
static void setup(void)
{
	char path[64], err[256];
	const char *paths[1] = { path };
	int fd = memfd_create("fuzz-jwt-key", 0);
	FILE *f;

	issuer = EVP_EC_gen("P-256");
	FUZZ_CHECK(issuer && fd >= 0);
	f = fdopen(dup(fd), "w");
	FUZZ_CHECK(f && PEM_write_PUBKEY(f, issuer) == 1);
	fclose(f);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	keys = tls_jwt_keys_load(paths, 1, err, sizeof(err));
	FUZZ_CHECK(keys);
	close(fd);
}

static size_t b64url(const uint8_t *in, size_t len, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;

	for (size_t i = 0; i < len; i++) {
		acc = acc << 8 | in[i];
		for (bits += 8; bits >= 6; bits -= 6)
			out[o++] = a[(acc >> (bits - 6)) & 63];
	}
	if (bits)
		out[o++] = a[(acc << (6 - bits)) & 63];
	out[o] = '\0';
	return o;
}

/* "b64(header).b64(payload).b64(R||S)" signed by the issuer; malloc'ed. */
static char *sign(const uint8_t *hdr, size_t hlen, const uint8_t *pl, size_t plen, size_t *len)
{
	size_t cap = (hlen + plen) * 4 / 3 + 200, n;
	char *tok = malloc(cap);
	uint8_t der[128], rs[64];
	size_t derlen = sizeof(der);
	const unsigned char *p = der;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	ECDSA_SIG *sig;

	FUZZ_CHECK(tok && md);
	n = b64url(hdr, hlen, tok);
	tok[n++] = '.';
	n += b64url(pl, plen, tok + n);
	FUZZ_CHECK(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, issuer) == 1);
	FUZZ_CHECK(EVP_DigestSign(md, der, &derlen, (const uint8_t *)tok, n) == 1);
	EVP_MD_CTX_free(md);
	sig = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
	FUZZ_CHECK(sig);
	FUZZ_CHECK(BN_bn2binpad(ECDSA_SIG_get0_r(sig), rs, 32) == 32 &&
		   BN_bn2binpad(ECDSA_SIG_get0_s(sig), rs + 32, 32) == 32);
	ECDSA_SIG_free(sig);
	tok[n++] = '.';
	n += b64url(rs, sizeof(rs), tok + n);
	*len = n;
	return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ca_caller c;
	char why[CA_WHY_MAX];
	char *tok;
	size_t len;
	bool signed_ = size && (data[0] & 1);
	int rc;

	if (!size)
		return 0;
	if (!keys)
		setup();	/* once: read-only afterwards */
	if (signed_) {
		const uint8_t *nul = memchr(data + 1, '\0', size - 1);
		size_t hlen = nul ? (size_t)(nul - data - 1) : size - 1;
		const uint8_t *pl = nul ? nul + 1 : data + size;

		tok = sign(data + 1, hlen, pl, (size_t)(data + size - pl), &len);
	} else {
		tok = fuzz_str(data + 1, size - 1);
		len = size - 1;
	}
	why[0] = '\0';
	rc = ca_auth_jwt(keys, tok, len, "istio-ca", NOW, &c, why);
	if (rc == 0) {
		FUZZ_CHECK(signed_);	/* nothing unsigned passes: no alg none, no key confusion */
		FUZZ_CHECK(memchr(c.ns, '\0', sizeof(c.ns)) && memchr(c.sa, '\0', sizeof(c.sa)));
		FUZZ_CHECK(memchr(c.pod, '\0', sizeof(c.pod)) && memchr(c.node, '\0', sizeof(c.node)));
		FUZZ_CHECK(c.ns[0] && c.sa[0]);
	} else {
		static const struct ca_caller zero;
		FUZZ_CHECK(rc == -EACCES || rc == -ENOMEM);
		FUZZ_CHECK(why[0] && memchr(why, '\0', sizeof(why)));
		FUZZ_CHECK(memcmp(&c, &zero, sizeof(c)) == 0);
	}
	free(tok);
	return 0;
}
