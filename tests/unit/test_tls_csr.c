// SPDX-License-Identifier: Apache-2.0
/* Unit tests of tls/csr.c: the agent's CSR (P-256, one SPIFFE URI SAN) round-trips through
 * the CA's parser, signer and the client's acceptance; the parser refuses every malformed or
 * disallowed CSR with a reason (SAN count and type, key type and size, signature, framing,
 * size); the client refuses answers for another key, identity or CA. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/csr.h"
#include "tls/identity.h"

#define TD "cluster.local"

static struct spiffe_id sid(const char *ns, const char *sa)
{
	struct spiffe_id id;
	if (spiffe_id_set(&id, TD, ns, sa, NULL))
		abort();
	return id;
}

static struct tls_ca *mesh_ca(void)
{
	static struct tls_ca *ca;
	if (!ca)
		ca = tls_ca_new_self_signed(TD, 365 * 24 * 3600);
	return ca;
}

__attribute__((destructor)) static void free_mesh_ca(void)
{
	tls_ca_free(mesh_ca());
}

/* A CSR with the given SAN config ("URI:a,DNS:b"; NULL = no extension) for key, signed by
 * sign_key (the key itself when NULL). Returns malloc'ed PEM. */
static char *make_csr(EVP_PKEY *key, const char *san, EVP_PKEY *sign_key, const EVP_MD *md)
{
	X509_REQ *req = X509_REQ_new();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	X509_REQ_set_version(req, X509_REQ_VERSION_1);
	X509_REQ_set_pubkey(req, key);
	if (san) {
		X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
		if (!ext)
			abort();
		sk_X509_EXTENSION_push(exts, ext);
		X509_REQ_add_extensions(req, exts);
	}
	if (X509_REQ_sign(req, sign_key ? sign_key : key, md) <= 0)
		abort();
	PEM_write_bio_X509_REQ(bio, req);
	n = BIO_get_mem_data(bio, &data);
	out = strndup(data, (size_t)n);
	BIO_free(bio);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	return out;
}

static int parse(const char *pem, struct spiffe_id *id, char *why)
{
	struct tls_csr_req *req = NULL;
	int err = tls_csr_parse(pem, strlen(pem), &req, id, why);
	if (!err != !!req)
		abort();
	tls_csr_req_free(req);
	return err;
}

/* Expects a refusal whose reason contains needle. */
static void refused(const char *pem, const char *needle)
{
	struct spiffe_id id;
	char why[TLS_CSR_WHY_MAX];
	int err = parse(pem, &id, why);

	CHECK(err < 0);
	if (!strstr(why, needle)) {
		fprintf(stderr, "  reason \"%s\" lacks \"%s\"\n", why, needle);
		CHECK(strstr(why, needle));
	}
}

TEST(roundtrip_create_parse_sign_accept)
{
	struct spiffe_id id = sid("default", "api"), got;
	struct tls_csr *csr = tls_csr_new(&id);
	struct tls_csr_req *req = NULL;
	char why[TLS_CSR_WHY_MAX], err[200];
	char *chain = NULL;
	size_t len = 0;

	REQUIRE(csr);
	CHECK(strncmp(tls_csr_pem(csr), "-----BEGIN CERTIFICATE REQUEST-----", 35) == 0);
	CHECK_EQ_INT(strlen(tls_csr_pem(csr)), tls_csr_pem_len(csr));
	CHECK_EQ_INT(tls_csr_parse(tls_csr_pem(csr), tls_csr_pem_len(csr), &req, &got, why), 0);
	REQUIRE(req);
	CHECK(spiffe_id_equal(&got, &id));
	CHECK_EQ_INT(tls_ca_sign_csr(mesh_ca(), req, &id, &(struct tls_issue_opts){ .lifetime_s = 3600 },
				     &chain, &len), 0);
	REQUIRE(chain);
	CHECK_EQ_INT(strlen(chain), len);
	/* leaf then the root (self-signed CA: no intermediates) */
	const char *second = strstr(chain + 1, "-----BEGIN CERTIFICATE-----");
	CHECK(second && !strstr(second + 1, "-----BEGIN CERTIFICATE-----"));
	struct tls_cert *c = tls_csr_accept(csr, chain, len, mesh_ca(), 0, err, sizeof(err));
	CHECK(c);
	if (c) {
		CHECK(spiffe_id_equal(tls_cert_id(c), &id));
		int64_t life = tls_cert_not_after(c) - tls_cert_not_before(c);
		CHECK(life >= 3600 && life <= 3600 + 120);
		char pem[8192];
		/* the root is not kept in the chain: the leaf alone */
		CHECK(tls_cert_chain_pem(c, pem, sizeof(pem)) > 0);
		CHECK(!strstr(strstr(pem, "-----END") , "-----BEGIN"));
	}
	tls_cert_unref(c);
	free(chain);
	tls_csr_req_free(req);
	tls_csr_free(csr);
}

TEST(accept_refuses_other_key_identity_and_ca)
{
	struct spiffe_id id = sid("default", "api"), other = sid("default", "db");
	struct tls_csr *csr = tls_csr_new(&id), *csr2 = tls_csr_new(&id), *csr3 = tls_csr_new(&other);
	struct tls_ca *ca2 = tls_ca_new_self_signed(TD, 3600);
	struct tls_csr_req *req = NULL, *req3 = NULL;
	struct spiffe_id got;
	char why[TLS_CSR_WHY_MAX], err[200];
	char *chain = NULL, *chain3 = NULL, *chain_other_ca = NULL;
	size_t len, len3, len4;

	REQUIRE(csr && csr2 && csr3 && ca2);
	REQUIRE(tls_csr_parse(tls_csr_pem(csr), tls_csr_pem_len(csr), &req, &got, why) == 0);
	REQUIRE(tls_csr_parse(tls_csr_pem(csr3), tls_csr_pem_len(csr3), &req3, &got, why) == 0);
	REQUIRE(tls_ca_sign_csr(mesh_ca(), req, &id, NULL, &chain, &len) == 0);
	/* another key */
	CHECK(!tls_csr_accept(csr2, chain, len, mesh_ca(), 0, err, sizeof(err)));
	CHECK_EQ_INT(errno, EINVAL);
	CHECK(strstr(err, "not for the CSR's key"));
	/* the CA signed csr3's key for another identity than csr3 asked */
	REQUIRE(tls_ca_sign_csr(mesh_ca(), req3, &id, NULL, &chain3, &len3) == 0);
	CHECK(!tls_csr_accept(csr3, chain3, len3, mesh_ca(), 0, err, sizeof(err)));
	CHECK(strstr(err, "asked for spiffe://cluster.local/ns/default/sa/db"));
	/* a chain from a CA we do not trust */
	REQUIRE(tls_ca_sign_csr(ca2, req, &id, NULL, &chain_other_ca, &len4) == 0);
	CHECK(!tls_csr_accept(csr, chain_other_ca, len4, mesh_ca(), 0, err, sizeof(err)));
	CHECK_EQ_INT(errno, EACCES);
	/* expired by the time it arrives */
	CHECK(!tls_csr_accept(csr, chain, len, mesh_ca(), time(NULL) + 2 * 86400, err, sizeof(err)));
	CHECK(strstr(err, "expired"));
	/* garbage, empty, oversize */
	CHECK(!tls_csr_accept(csr, "hello", 5, mesh_ca(), 0, err, sizeof(err)));
	CHECK(!tls_csr_accept(csr, chain, 0, mesh_ca(), 0, err, sizeof(err)));
	CHECK(!tls_csr_accept(csr, chain, TLS_CHAIN_PEM_MAX + 1, mesh_ca(), 0, err, sizeof(err)));
	/* without roots the leaf checks still hold */
	struct tls_cert *c = tls_csr_accept(csr, chain, len, NULL, 0, err, sizeof(err));
	CHECK(c);
	tls_cert_unref(c);
	free(chain);
	free(chain3);
	free(chain_other_ca);
	tls_csr_req_free(req);
	tls_csr_req_free(req3);
	tls_csr_free(csr);
	tls_csr_free(csr2);
	tls_csr_free(csr3);
	tls_ca_free(ca2);
}

TEST(parse_san_rules)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	struct spiffe_id id;
	char why[TLS_CSR_WHY_MAX], *p;

	REQUIRE(k);
	p = make_csr(k, "URI:spiffe://cluster.local/ns/a/sa/b", NULL, EVP_sha256());
	CHECK_EQ_INT(parse(p, &id, why), 0);
	CHECK_EQ_STR(id.ns, "a");
	free(p);
	p = make_csr(k, NULL, NULL, EVP_sha256());
	refused(p, "no subjectAltName");
	free(p);
	p = make_csr(k, "URI:spiffe://cluster.local/ns/a/sa/b,URI:spiffe://cluster.local/ns/a/sa/c",
		     NULL, EVP_sha256());
	refused(p, "2 subjectAltName entries");
	free(p);
	p = make_csr(k, "URI:spiffe://cluster.local/ns/a/sa/b,DNS:evil.example", NULL, EVP_sha256());
	refused(p, "2 subjectAltName entries");
	free(p);
	p = make_csr(k, "DNS:evil.example", NULL, EVP_sha256());
	refused(p, "not a URI");
	free(p);
	p = make_csr(k, "URI:https://cluster.local/ns/a/sa/b", NULL, EVP_sha256());
	refused(p, "not a SPIFFE ID");
	free(p);
	p = make_csr(k, "URI:spiffe://cluster.local/ns/a/sa/b/extra", NULL, EVP_sha256());
	refused(p, "not a SPIFFE ID");
	free(p);
	EVP_PKEY_free(k);
}

TEST(parse_key_rules)
{
	const char *san = "URI:spiffe://cluster.local/ns/a/sa/b";
	EVP_PKEY *p384 = EVP_EC_gen("P-384"), *p521 = EVP_EC_gen("P-521");
	EVP_PKEY *rsa1024 = EVP_RSA_gen(1024), *rsa2048 = EVP_RSA_gen(2048);
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	struct spiffe_id id;
	char why[TLS_CSR_WHY_MAX], *p;

	REQUIRE(p384 && p521 && rsa1024 && rsa2048 && ed);
	p = make_csr(p384, san, NULL, EVP_sha384());
	CHECK_EQ_INT(parse(p, &id, why), 0);
	free(p);
	p = make_csr(rsa2048, san, NULL, EVP_sha256());
	CHECK_EQ_INT(parse(p, &id, why), 0);
	free(p);
	p = make_csr(p521, san, NULL, EVP_sha512());
	refused(p, "curve secp521r1");
	free(p);
	p = make_csr(rsa1024, san, NULL, EVP_sha256());
	refused(p, "RSA key of 1024 bits");
	free(p);
	p = make_csr(ed, san, NULL, NULL);
	refused(p, "key type ED25519 not allowed");
	free(p);
	/* signed by another key than the one it holds */
	p = make_csr(p384, san, rsa2048, EVP_sha256());
	refused(p, "signature does not verify");
	free(p);
	EVP_PKEY_free(p384);
	EVP_PKEY_free(p521);
	EVP_PKEY_free(rsa1024);
	EVP_PKEY_free(rsa2048);
	EVP_PKEY_free(ed);
}

TEST(parse_framing_rules)
{
	struct spiffe_id id = sid("a", "b");
	struct tls_csr *csr = tls_csr_new(&id);
	const char *pem;
	char why[TLS_CSR_WHY_MAX], buf[2 * TLS_CSR_PEM_MAX];
	struct tls_csr_req *req = NULL;

	REQUIRE(csr);
	pem = tls_csr_pem(csr);
	/* whitespace around is fine */
	snprintf(buf, sizeof(buf), "\n  %s\n\n", pem);
	CHECK_EQ_INT(parse(buf, &id, why), 0);
	snprintf(buf, sizeof(buf), "%s%s", pem, pem);
	refused(buf, "data after its PEM block");
	snprintf(buf, sizeof(buf), "junk%s", pem);
	refused(buf, "not a PEM");
	snprintf(buf, sizeof(buf), "%.*s", (int)(strlen(pem) - 40), pem);
	refused(buf, "no END line");
	/* a certificate is not a CSR */
	refused("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a PEM");
	/* a corrupted base64 body */
	snprintf(buf, sizeof(buf), "%s", pem);
	buf[100] = buf[100] == 'A' ? 'B' : 'A';
	CHECK(parse(buf, &id, why) < 0);
	refused("-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n",
		"malformed");
	refused("", "empty");
	/* size bound */
	memset(buf, ' ', TLS_CSR_PEM_MAX + 1);
	CHECK_EQ_INT(tls_csr_parse(buf, TLS_CSR_PEM_MAX + 1, &req, &id, why), -EMSGSIZE);
	CHECK(!req);
	/* input is not NUL-terminated: never read past len */
	size_t n = tls_csr_pem_len(csr);
	char *exact = malloc(n);
	memcpy(exact, pem, n);
	CHECK_EQ_INT(tls_csr_parse(exact, n, &req, &id, why), 0);
	tls_csr_req_free(req);
	CHECK(tls_csr_parse(exact, n - 2, &req, &id, why) < 0);	/* cut inside "-----" */
	CHECK(!req);
	free(exact);
	tls_csr_free(csr);
}

int main(void)
{
	return test_main("tls_csr");
}
