// SPDX-License-Identifier: Apache-2.0
/* Unit tests of ambit-ca: JWT verification (good ES256 and RS256, expired, not yet valid,
 * wrong audience, wrong key, alg none and HS256, malformed, claims that disagree), the node
 * authorization table, the rate limiter, and CreateCertificate end to end over the real gRPC
 * server and client with TLS (issued chain, refusals with their gRPC status and message,
 * rate limit, unknown method, counters). */
#include <errno.h>
#include <jansson.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/workloads.h"
#include "ca/auth.h"
#include "ca/authz.h"
#include "ca/config.h"
#include "ca/msg.h"
#include "ca/ratelimit.h"
#include "ca/service.h"
#include "common/util.h"
#include "grpc/client.h"
#include "grpc/server.h"
#include "harness.h"
#include "tls/ca.h"
#include "tls/csr.h"
#include "tls/ctx.h"
#include "tls/jwt.h"

#define AUD "istio-ca"
#define TD "cluster.local"

__attribute__((constructor)) static void ignore_sigpipe(void)
{
	signal(SIGPIPE, SIG_IGN);
}

/* ---- helpers: keys, PEM files, tokens ---- */

static const char *tmpdir;

__attribute__((constructor)) static void make_tmpdir(void)
{
	tmpdir = test_tmpdir("ca-test");
}

/* Writes k's public key as PEM to a new file; returns its path (static buffer per call slot). */
static const char *pub_file(EVP_PKEY *k, const char *name)
{
	static char paths[8][128];
	static int slot;
	char *p = paths[slot++ % 8];
	snprintf(p, 128, "%s/%s.pem", tmpdir, name);
	FILE *f = fopen(p, "w");
	if (!f || !PEM_write_PUBKEY(f, k))
		abort();
	fclose(f);
	return p;
}

static void b64url(const uint8_t *in, size_t len, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) |
			     (i + 2 < len ? in[i + 2] : 0);
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
		if (i + 1 < len)
			out[o++] = tab[v >> 6 & 63];
		if (i + 2 < len)
			out[o++] = tab[v & 63];
	}
	out[o] = '\0';
}

/* header.payload.signature with alg's signature by k (k NULL: empty signature). */
static char *jwt(const char *alg, EVP_PKEY *k, const char *header, const char *payload)
{
	char *out = malloc(16384), sig64[1024];
	uint8_t sig[1024];
	size_t slen = sizeof(sig);
	char h[2048], p[4096];

	b64url((const uint8_t *)header, strlen(header), h);
	b64url((const uint8_t *)payload, strlen(payload), p);
	snprintf(out, 16384, "%s.%s", h, p);
	sig64[0] = '\0';
	if (k) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) != 1 ||
		    EVP_DigestSign(md, sig, &slen, (const uint8_t *)out, strlen(out)) != 1)
			abort();
		EVP_MD_CTX_free(md);
		if (EVP_PKEY_get_base_id(k) == EVP_PKEY_EC) {	/* DER -> R||S (RFC 7518 §3.4) */
			const uint8_t *q = sig;
			ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)slen);
			uint8_t rs[64];
			BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32);
			BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32);
			ECDSA_SIG_free(es);
			memcpy(sig, rs, 64);
			slen = 64;
		}
		b64url(sig, slen, sig64);
	}
	strcat(out, ".");
	strcat(out, sig64);
	return out;
}

/* A projected service-account token's claims, as the API server writes them. */
static char *claims(const char *aud, int64_t exp, int64_t nbf, const char *ns, const char *sa,
		    const char *node)
{
	char *s = malloc(2048);
	snprintf(s, 2048,
		 "{\"aud\":[\"%s\"],\"exp\":%lld,\"iat\":%lld,\"nbf\":%lld,"
		 "\"iss\":\"https://kubernetes.default.svc.cluster.local\","
		 "\"kubernetes.io\":{\"namespace\":\"%s\",\"node\":{\"name\":\"%s\",\"uid\":\"n-uid\"},"
		 "\"pod\":{\"name\":\"%s-pod\",\"uid\":\"p-uid\"},"
		 "\"serviceaccount\":{\"name\":\"%s\",\"uid\":\"s-uid\"}},"
		 "\"sub\":\"system:serviceaccount:%s:%s\"}",
		 aud, (long long)exp, (long long)nbf, (long long)nbf, ns, node, sa, sa, ns, sa);
	return s;
}

static EVP_PKEY *ec_key, *rsa_key, *other_key;
static struct tls_jwt_keys *keys;

__attribute__((constructor)) static void make_keys(void)
{
	ec_key = EVP_EC_gen("P-256");
	rsa_key = EVP_RSA_gen(2048);
	other_key = EVP_EC_gen("P-256");
	const char *paths[] = { pub_file(ec_key, "ec"), pub_file(rsa_key, "rsa") };
	char err[200];
	keys = tls_jwt_keys_load(paths, 2, err, sizeof(err));
	if (!keys) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
}

__attribute__((destructor)) static void free_keys(void)
{
	tls_jwt_keys_free(keys);
	EVP_PKEY_free(ec_key);
	EVP_PKEY_free(rsa_key);
	EVP_PKEY_free(other_key);
}

/* Checks the token (alg, signing key, claims) and returns 0 or -EACCES with why. */
static int check_tok(const char *alg, EVP_PKEY *k, const char *payload, struct ca_caller *c,
		     char *why)
{
	char header[64];
	snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"kid\":\"k1\"}", alg);
	char *t = jwt(alg, k, header, payload);
	int rc = ca_auth_jwt(keys, t, strlen(t), AUD, time(NULL), c, why);
	free(t);
	return rc;
}

#define EXPECT_REFUSED(rc, why, needle)                                              \
	do {                                                                         \
		CHECK_EQ_INT(rc, -EACCES);                                           \
		if (!strstr(why, needle)) {                                          \
			fprintf(stderr, "  reason \"%s\" lacks \"%s\"\n", why, needle); \
			CHECK(strstr(why, needle));                                  \
		}                                                                    \
	} while (0)

/* ---- JWT ---- */

TEST(jwt_good_es256_and_rs256)
{
	int64_t now = time(NULL);
	char *p = claims(AUD, now + 3600, now - 10, "ambit-system", "ambit", "node-1");
	struct ca_caller c;
	char why[CA_WHY_MAX];

	CHECK_EQ_INT(check_tok("ES256", ec_key, p, &c, why), 0);
	CHECK_EQ_STR(c.ns, "ambit-system");
	CHECK_EQ_STR(c.sa, "ambit");
	CHECK_EQ_STR(c.node, "node-1");
	CHECK_EQ_STR(c.pod, "ambit-pod");
	CHECK_EQ_INT(check_tok("RS256", rsa_key, p, &c, why), 0);
	CHECK_EQ_STR(c.node, "node-1");
	free(p);
	/* aud as a plain string, and among others */
	char buf[1024];
	snprintf(buf, sizeof(buf), "{\"aud\":\"%s\",\"exp\":%lld,\"sub\":\"system:serviceaccount:a:b\"}",
		 AUD, (long long)now + 60);
	CHECK_EQ_INT(check_tok("ES256", ec_key, buf, &c, why), 0);
	CHECK_EQ_STR(c.node, "");	/* no kubernetes.io claim: no node */
	snprintf(buf, sizeof(buf), "{\"aud\":[\"x\",\"%s\"],\"exp\":%lld,"
		 "\"sub\":\"system:serviceaccount:a:b\"}", AUD, (long long)now + 60);
	CHECK_EQ_INT(check_tok("ES256", ec_key, buf, &c, why), 0);
}

TEST(jwt_expired_and_not_yet_valid)
{
	int64_t now = time(NULL);
	struct ca_caller c;
	char why[CA_WHY_MAX], *p;

	p = claims(AUD, now - CA_AUTH_LEEWAY_S - 5, now - 7200, "a", "b", "n");
	EXPECT_REFUSED(check_tok("ES256", ec_key, p, &c, why), why, "expired");
	CHECK_EQ_STR(c.ns, "");	/* nothing of a refused token is kept */
	free(p);
	p = claims(AUD, now - 5, now - 7200, "a", "b", "n");	/* within the leeway */
	CHECK_EQ_INT(check_tok("ES256", ec_key, p, &c, why), 0);
	free(p);
	p = claims(AUD, now + 7200, now + 600, "a", "b", "n");
	EXPECT_REFUSED(check_tok("ES256", ec_key, p, &c, why), why, "not yet valid");
	free(p);
	char buf[256];
	snprintf(buf, sizeof(buf), "{\"aud\":\"%s\",\"sub\":\"system:serviceaccount:a:b\"}", AUD);
	EXPECT_REFUSED(check_tok("ES256", ec_key, buf, &c, why), why, "no valid exp");
	snprintf(buf, sizeof(buf), "{\"aud\":\"%s\",\"exp\":\"tomorrow\",\"sub\":\"system:serviceaccount:a:b\"}", AUD);
	EXPECT_REFUSED(check_tok("ES256", ec_key, buf, &c, why), why, "no valid exp");
}

TEST(jwt_wrong_audience)
{
	int64_t now = time(NULL);
	struct ca_caller c;
	char why[CA_WHY_MAX];
	char *p = claims("https://kubernetes.default.svc", now + 3600, now, "a", "b", "n");

	EXPECT_REFUSED(check_tok("ES256", ec_key, p, &c, why), why, "audience istio-ca not in");
	free(p);
	char buf[256];
	snprintf(buf, sizeof(buf), "{\"exp\":%lld,\"sub\":\"system:serviceaccount:a:b\"}", (long long)now + 60);
	EXPECT_REFUSED(check_tok("ES256", ec_key, buf, &c, why), why, "audience");
}

TEST(jwt_wrong_key_and_algs)
{
	int64_t now = time(NULL);
	struct ca_caller c;
	char why[CA_WHY_MAX];
	char *p = claims(AUD, now + 3600, now, "a", "b", "n");

	EXPECT_REFUSED(check_tok("ES256", other_key, p, &c, why), why, "does not verify");
	/* an RSA signature labelled ES256, and the reverse */
	EXPECT_REFUSED(check_tok("ES256", rsa_key, p, &c, why), why, "does not verify");
	EXPECT_REFUSED(check_tok("RS256", ec_key, p, &c, why), why, "does not verify");
	EXPECT_REFUSED(check_tok("none", NULL, p, &c, why), why, "alg none refused");
	EXPECT_REFUSED(check_tok("HS256", ec_key, p, &c, why), why, "alg HS256 refused");
	/* crit extensions are refused (RFC 7515 §4.1.11) */
	char *t = jwt("ES256", ec_key, "{\"alg\":\"ES256\",\"crit\":[\"x\"],\"x\":1}", p);
	EXPECT_REFUSED(ca_auth_jwt(keys, t, strlen(t), AUD, now, &c, why), why, "crit");
	free(t);
	/* a payload changed after signing */
	t = jwt("ES256", ec_key, "{\"alg\":\"ES256\"}", p);
	char *other = claims(AUD, now + 3600, now, "kube-system", "admin", "n");
	char enc[4096];
	b64url((const uint8_t *)other, strlen(other), enc);
	char *d1 = strchr(t, '.'), *d2 = strchr(d1 + 1, '.');
	char forged[16384];
	snprintf(forged, sizeof(forged), "%.*s.%s%s", (int)(d1 - t), t, enc, d2);
	EXPECT_REFUSED(ca_auth_jwt(keys, forged, strlen(forged), AUD, now, &c, why), why,
		       "does not verify");
	free(other);
	free(t);
	free(p);
}

TEST(jwt_malformed)
{
	int64_t now = time(NULL);
	struct ca_caller c;
	char why[CA_WHY_MAX];
	static const char *const bad[] = {
		"", "abc", "a.b", "a.b.c.d", "!!!.e30.", "e30.e30.", "bm90IGpzb24.e30.AAAA",
		"W10.e30.AAAA",	/* header [] is not an object */
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		CHECK_EQ_INT(ca_auth_jwt(keys, bad[i], strlen(bad[i]), AUD, now, &c, why), -EACCES);
	/* payload not JSON, signed */
	char *t = jwt("ES256", ec_key, "{\"alg\":\"ES256\"}", "not json");
	EXPECT_REFUSED(ca_auth_jwt(keys, t, strlen(t), AUD, now, &c, why), why, "payload");
	free(t);
	/* sub not a service account; kubernetes.io disagreeing with sub */
	char buf[512];
	snprintf(buf, sizeof(buf), "{\"aud\":\"%s\",\"exp\":%lld,\"sub\":\"admin\"}", AUD, (long long)now + 60);
	EXPECT_REFUSED(check_tok("ES256", ec_key, buf, &c, why), why, "sub");
	snprintf(buf, sizeof(buf), "{\"aud\":\"%s\",\"exp\":%lld,\"sub\":\"system:serviceaccount:a:b\","
		 "\"kubernetes.io\":{\"namespace\":\"other\"}}", AUD, (long long)now + 60);
	EXPECT_REFUSED(check_tok("ES256", ec_key, buf, &c, why), why, "namespace does not match");
	/* oversize */
	char *big = malloc(CA_TOKEN_MAX + 2);
	memset(big, 'a', CA_TOKEN_MAX + 1);
	big[CA_TOKEN_MAX + 1] = '\0';
	EXPECT_REFUSED(ca_auth_jwt(keys, big, CA_TOKEN_MAX + 1, AUD, now, &c, why), why, "over");
	free(big);
	/* bearer header forms */
	const char *tok;
	size_t len;
	CHECK_EQ_INT(ca_auth_bearer("Bearer abc", &tok, &len), 0);
	CHECK_EQ_INT(len, 3);
	CHECK_EQ_INT(ca_auth_bearer("bearer  abc ", &tok, &len), 0);
	CHECK_EQ_INT(len, 3);
	CHECK_EQ_INT(ca_auth_bearer("Basic abc", &tok, &len), -EINVAL);
	CHECK_EQ_INT(ca_auth_bearer("Bearer ", &tok, &len), -EINVAL);
	CHECK_EQ_INT(ca_auth_bearer(NULL, &tok, &len), -EINVAL);
}

TEST(jwt_issuer_keys_refused)
{
	EVP_PKEY *p384 = EVP_EC_gen("P-384"), *rsa1k = EVP_RSA_gen(1024);
	const char *a[] = { pub_file(p384, "p384") }, *b[] = { pub_file(rsa1k, "rsa1k") };
	const char *missing[] = { "/nonexistent/key.pem" };
	char err[256];

	CHECK(!tls_jwt_keys_load(a, 1, err, sizeof(err)));
	CHECK(strstr(err, "neither EC P-256"));
	CHECK(!tls_jwt_keys_load(b, 1, err, sizeof(err)));
	CHECK(!tls_jwt_keys_load(missing, 1, err, sizeof(err)));
	CHECK(strstr(err, "/nonexistent/key.pem"));
	EVP_PKEY_free(p384);
	EVP_PKEY_free(rsa1k);
}

/* ---- node authorization ---- */

static const char model_json[] =
	"{\"nodes\":[{\"name\":\"node-1\",\"address\":\"172.18.0.2\"},"
	"{\"name\":\"node-2\",\"address\":\"172.18.0.3\"}],"
	"\"workloads\":["
	"{\"uid\":\"u1\",\"name\":\"api-1\",\"namespace\":\"default\",\"service_account\":\"api\","
	"\"node\":\"node-1\",\"addresses\":[\"10.244.1.5\"],\"enrolled\":true},"
	"{\"uid\":\"u2\",\"name\":\"db-1\",\"namespace\":\"prod\",\"service_account\":\"db\","
	"\"node\":\"node-2\",\"addresses\":[\"10.244.2.5\"],\"enrolled\":true},"
	"{\"uid\":\"u3\",\"name\":\"ambit-n2\",\"namespace\":\"ambit-system\",\"service_account\":\"ambit\","
	"\"node\":\"node-2\",\"addresses\":[\"172.18.0.3\"],\"enrolled\":false}],"
	"\"services\":[]}";

static struct model *test_model(void)
{
	char err[256];
	struct model *m = model_parse(model_json, strlen(model_json), err, sizeof(err));
	if (!m) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
	return m;
}

TEST(node_authorization_table)
{
	static const char *const accounts[] = { "ambit-system/ambit" };
	struct ca_authz_policy pol = { TD, accounts, 1 };
	struct model *m = test_model();
	struct ca_caller agent1 = { "ambit-system", "ambit", "ambit-x", "node-1" };
	struct ca_caller agent_nonode = { "ambit-system", "ambit", "", "" };
	struct ca_caller agent_podonly = { "ambit-system", "ambit", "ambit-n2", "" };
	struct ca_caller agent_unknownpod = { "ambit-system", "ambit", "ambit-gone", "" };
	struct ca_caller app = { "default", "api", "api-1", "node-1" };
	struct spiffe_id api, db, own_agent, other_td;
	spiffe_id_set(&api, TD, "default", "api", NULL);
	spiffe_id_set(&db, TD, "prod", "db", NULL);
	spiffe_id_set(&own_agent, TD, "ambit-system", "ambit", NULL);
	spiffe_id_set(&other_td, "evil.example", "default", "api", NULL);
	struct {
		const char *name;
		const struct ca_caller *caller;
		const char *impersonated;
		const struct spiffe_id *csr;
		int want;
		const char *why;
	} cases[] = {
		{ "agent, workload on its node", &agent1, "spiffe://cluster.local/ns/default/sa/api", &api, GRPC_STATUS_OK, "" },
		{ "agent, workload on another node", &agent1, "spiffe://cluster.local/ns/prod/sa/db", &db, GRPC_STATUS_PERMISSION_DENIED, "no workload of spiffe://cluster.local/ns/prod/sa/db runs on node node-1" },
		{ "agent, no such workload", &agent1, "spiffe://cluster.local/ns/kube-system/sa/admin", NULL, GRPC_STATUS_PERMISSION_DENIED, "runs on node" },
		{ "agent, its own identity", &agent1, NULL, &own_agent, GRPC_STATUS_OK, "" },
		{ "agent without node claim", &agent_nonode, "spiffe://cluster.local/ns/default/sa/api", &api, GRPC_STATUS_PERMISSION_DENIED, "names no node" },
		{ "agent known by its pod only: its pod's node", &agent_podonly, "spiffe://cluster.local/ns/prod/sa/db", &db, GRPC_STATUS_OK, "" },
		{ "agent known by its pod only, other node's pod", &agent_podonly, "spiffe://cluster.local/ns/default/sa/api", &api, GRPC_STATUS_PERMISSION_DENIED, "runs on node node-2" },
		{ "agent whose pod we do not know", &agent_unknownpod, "spiffe://cluster.local/ns/prod/sa/db", &db, GRPC_STATUS_PERMISSION_DENIED, "nor a pod we know" },
		{ "app impersonating a neighbour", &app, "spiffe://cluster.local/ns/prod/sa/db", &db, GRPC_STATUS_PERMISSION_DENIED, "not a node agent" },
		{ "app, its own identity", &app, NULL, &api, GRPC_STATUS_OK, "" },
		{ "app, own identity named explicitly", &app, "spiffe://cluster.local/ns/default/sa/api", &api, GRPC_STATUS_OK, "" },
		{ "other trust domain", &agent1, "spiffe://evil.example/ns/default/sa/api", &other_td, GRPC_STATUS_PERMISSION_DENIED, "trust domain evil.example is not ours" },
		{ "CSR SAN differs from the request", &agent1, "spiffe://cluster.local/ns/default/sa/api", &db, GRPC_STATUS_INVALID_ARGUMENT, "the CSR is for spiffe://cluster.local/ns/prod/sa/db" },
		{ "CSR SAN differs, no impersonation", &app, NULL, &db, GRPC_STATUS_INVALID_ARGUMENT, "the CSR is for" },
		{ "impersonated not a SPIFFE ID", &agent1, "https://x/ns/a/sa/b", &api, GRPC_STATUS_INVALID_ARGUMENT, "not a SPIFFE ID" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct spiffe_id grant, csr_id;
		char why[CA_WHY_MAX] = "";
		if (cases[i].csr)
			csr_id = *cases[i].csr;
		else
			spiffe_id_set(&csr_id, TD, "kube-system", "admin", NULL);
		int st = ca_authorize(&pol, cases[i].caller, cases[i].impersonated, &csr_id, m,
				      &grant, why);
		if (st != cases[i].want || !strstr(why, cases[i].why)) {
			fprintf(stderr, "  case \"%s\": status %d (want %d), why \"%s\"\n",
				cases[i].name, st, cases[i].want, why);
			CHECK(0);
		}
		if (st == GRPC_STATUS_OK)
			CHECK(spiffe_id_equal(&grant, &csr_id));
	}
	model_unref(m);
}

TEST(rate_limit_buckets)
{
	struct ca_ratelimit *rl = ca_ratelimit_new(3, 2);
	REQUIRE(rl);
	uint64_t t = 1000000;
	CHECK(ca_ratelimit_take(rl, "node/a", t));
	CHECK(ca_ratelimit_take(rl, "node/a", t));
	CHECK(ca_ratelimit_take(rl, "node/a", t));
	CHECK(!ca_ratelimit_take(rl, "node/a", t));
	CHECK(ca_ratelimit_take(rl, "node/b", t));	/* another caller has its own bucket */
	CHECK(ca_ratelimit_take(rl, "node/a", t + 500));	/* 2/s refills one in 500 ms */
	CHECK(!ca_ratelimit_take(rl, "node/a", t + 500));
	/* many callers: bounded table, no failure */
	char k[32];
	for (int i = 0; i < 3 * CA_RATELIMIT_KEYS; i++) {
		snprintf(k, sizeof(k), "node/%d", i);
		CHECK(ca_ratelimit_take(rl, k, t + 1000));
	}
	ca_ratelimit_free(rl);
}

/* ---- CreateCertificate end to end ---- */

struct fixture {
	struct ca_config cfg;
	struct tls_ca *ca;
	struct tls_ctx *tls;
	struct ca_service *svc;
	struct grpc_server *srv;
	struct grpc_client *cli;
	char ca_pem[128];
};

static int fixture_start(struct fixture *f, uint32_t burst)
{
	static unsigned seq;
	char err[256];

	memset(f, 0, sizeof(*f));
	seq++;
	if (ca_config_init(&f->cfg))
		return -1;
	f->cfg.rate_burst = burst;
	f->cfg.rate_per_second = 1;
	f->cfg.max_validity_s = 7200;
	f->ca = tls_ca_new_self_signed(TD, 30 * 86400);
	snprintf(f->ca_pem, sizeof(f->ca_pem), "%s/ca-%u.crt", tmpdir, seq);
	char key[160];
	snprintf(key, sizeof(key), "%s/ca-%u.key", tmpdir, seq);
	if (!f->ca || tls_ca_write(f->ca, f->ca_pem, key, err, sizeof(err)))
		return -1;
	const char *names[] = { "127.0.0.1", "ambit-ca.ambit-system.svc" };
	if (!(f->tls = tls_ctx_new_https_server(f->ca, names, 2, 3600, err, sizeof(err))))
		return -1;
	if (!(f->svc = ca_service_new(&f->cfg, f->ca, keys, NULL)))
		return -1;
	struct grpc_server_opts so = { .listen = "127.0.0.1:0", .tls = f->tls,
				       .handler = ca_service_handle, .arg = f->svc };
	if (!(f->srv = grpc_server_start(&so, err, sizeof(err))))
		return -1;
	struct grpc_client_opts co = { .host = "127.0.0.1", .port = grpc_server_port(f->srv),
				       .tls = true, .ca_file = f->ca_pem };
	if (!(f->cli = grpc_client_new(&co, err, sizeof(err))))
		return -1;
	return 0;
}

static void fixture_stop(struct fixture *f)
{
	grpc_client_free(f->cli);
	grpc_server_stop(f->srv);
	ca_service_free(f->svc);
	tls_ctx_free(f->tls);
	tls_ca_free(f->ca);
	ca_config_fini(&f->cfg);
}

/* One CreateCertificate for id (impersonated unless NULL) with token; res filled. */
static int create(struct fixture *f, const char *token, const struct tls_csr *csr,
		  const char *impersonated, struct grpc_result *res)
{
	char auth[16384];
	uint8_t *msg;
	size_t len;
	struct grpc_header h[1] = { { "authorization", auth } };

	snprintf(auth, sizeof(auth), "Bearer %s", token);
	if (ca_msg_request_encode(tls_csr_pem(csr), 86400, impersonated, &msg, &len))
		abort();
	int rc = grpc_client_call(f->cli, CA_GRPC_PATH, h, token ? 1 : 0, msg, len, 5000, NULL, res);
	free(msg);
	return rc;
}

static char *agent_token(const char *node, const char *aud)
{
	int64_t now = time(NULL);
	char *p = claims(aud, now + 3600, now, "ambit-system", "ambit", node);
	char *t = jwt("ES256", ec_key, "{\"alg\":\"ES256\"}", p);
	free(p);
	return t;
}

TEST(create_certificate_no_view_yet)
{
	struct fixture f;
	struct grpc_result r;
	struct spiffe_id api;

	REQUIRE(fixture_start(&f, 100) == 0);
	spiffe_id_set(&api, TD, "default", "api", NULL);
	struct model *m = model_current();
	REQUIRE(m->generation == 0);	/* runs before any test publishes a model */
	model_unref(m);
	struct tls_csr *csr = tls_csr_new(&api);
	char *tok = agent_token("node-1", AUD);
	CHECK_EQ_INT(create(&f, tok, csr, "spiffe://cluster.local/ns/default/sa/api", &r), 0);
	CHECK_EQ_INT(r.status, GRPC_STATUS_UNAVAILABLE);
	CHECK(strstr(r.message, "no view of the cluster's pods yet"));
	grpc_result_fini(&r);
	free(tok);
	tls_csr_free(csr);
	fixture_stop(&f);
}

TEST(create_certificate_end_to_end)
{
	struct fixture f;
	struct grpc_result r;
	struct spiffe_id api, db;
	char err[256];

	REQUIRE(fixture_start(&f, 100) == 0);
	struct model *m = test_model();
	model_publish(m);
	spiffe_id_set(&api, TD, "default", "api", NULL);
	spiffe_id_set(&db, TD, "prod", "db", NULL);
	struct tls_csr *csr_api = tls_csr_new(&api), *csr_db = tls_csr_new(&db);
	char *tok1 = agent_token("node-1", AUD), *tok_aud = agent_token("node-1", "other");

	/* a workload on the caller's node: a chain that verifies against the root */
	CHECK_EQ_INT(create(&f, tok1, csr_api, "spiffe://cluster.local/ns/default/sa/api", &r), 0);
	CHECK_EQ_INT(r.status, GRPC_STATUS_OK);
	if (r.status == GRPC_STATUS_OK) {
		char *pem;
		size_t plen, n;
		CHECK_EQ_INT(ca_msg_response_decode(r.response, r.response_len, &pem, &plen, &n), 0);
		CHECK_EQ_INT(n, 2);	/* leaf, root */
		struct tls_cert *c = tls_csr_accept(csr_api, pem, plen, f.ca, 0, err, sizeof(err));
		CHECK(c);
		if (c) {
			/* capped at max_validity_s (7200) though 86400 was asked */
			int64_t life = tls_cert_not_after(c) - tls_cert_not_before(c);
			CHECK(life <= 7200 + 60 && life >= 7200);
		}
		tls_cert_unref(c);
		free(pem);
	}
	grpc_result_fini(&r);
	/* another node's pod */
	CHECK_EQ_INT(create(&f, tok1, csr_db, "spiffe://cluster.local/ns/prod/sa/db", &r), 0);
	CHECK_EQ_INT(r.status, GRPC_STATUS_PERMISSION_DENIED);
	CHECK(strstr(r.message, "no workload of spiffe://cluster.local/ns/prod/sa/db runs on node node-1"));
	grpc_result_fini(&r);
	/* wrong audience, bad token, no token */
	CHECK_EQ_INT(create(&f, tok_aud, csr_api, "spiffe://cluster.local/ns/default/sa/api", &r), 0);
	CHECK_EQ_INT(r.status, GRPC_STATUS_UNAUTHENTICATED);
	CHECK(strstr(r.message, "audience istio-ca"));
	grpc_result_fini(&r);
	CHECK_EQ_INT(create(&f, "not.a.token", csr_api, NULL, &r), 0);
	CHECK_EQ_INT(r.status, GRPC_STATUS_UNAUTHENTICATED);
	grpc_result_fini(&r);
	CHECK_EQ_INT(create(&f, NULL, csr_api, NULL, &r), 0);
	CHECK_EQ_INT(r.status, GRPC_STATUS_UNAUTHENTICATED);
	CHECK(strstr(r.message, "no bearer token"));
	grpc_result_fini(&r);
	/* a CSR for another identity than the one asked */
	CHECK_EQ_INT(create(&f, tok1, csr_db, "spiffe://cluster.local/ns/default/sa/api", &r), 0);
	CHECK_EQ_INT(r.status, GRPC_STATUS_INVALID_ARGUMENT);
	grpc_result_fini(&r);
	/* garbage instead of a request message */
	{
		char auth[16384];
		struct grpc_header h[1] = { { "authorization", auth } };
		snprintf(auth, sizeof(auth), "Bearer %s", tok1);
		CHECK_EQ_INT(grpc_client_call(f.cli, CA_GRPC_PATH, h, 1, (const uint8_t *)"\xff\xff", 2,
					      5000, NULL, &r), 0);
		CHECK_EQ_INT(r.status, GRPC_STATUS_INVALID_ARGUMENT);
		grpc_result_fini(&r);
		/* another method */
		CHECK_EQ_INT(grpc_client_call(f.cli, "/istio.v1.auth.IstioCertificateService/Other", h, 1,
					      NULL, 0, 5000, NULL, &r), 0);
		CHECK_EQ_INT(r.status, GRPC_STATUS_UNIMPLEMENTED);
		grpc_result_fini(&r);
	}
	/* a key switch (ambit-ca reloaded ca.cert/ca.key): the next call is signed with the
	 * new key, its chain ends at the new root */
	{
		struct tls_ca *next = tls_ca_new_self_signed(TD, 30 * 86400);
		REQUIRE(next);
		ca_service_set_ca(f.svc, next);
		CHECK_EQ_INT(create(&f, tok1, csr_api, "spiffe://cluster.local/ns/default/sa/api",
				    &r), 0);
		CHECK_EQ_INT(r.status, GRPC_STATUS_OK);
		char *pem = NULL;
		size_t plen, n;
		if (r.status == GRPC_STATUS_OK &&
		    !ca_msg_response_decode(r.response, r.response_len, &pem, &plen, &n)) {
			struct tls_cert *c = tls_csr_accept(csr_api, pem, plen, next, 0, err,
							    sizeof(err));
			CHECK(c);
			tls_cert_unref(c);
			c = tls_csr_accept(csr_api, pem, plen, f.ca, 0, err, sizeof(err));
			CHECK(!c);	/* not from the old root */
			tls_cert_unref(c);
		}
		free(pem);
		grpc_result_fini(&r);
		tls_ca_free(next);	/* the service holds its own reference */
	}
	CHECK_EQ_INT(ca_service_count(f.svc, CA_RES_ISSUED), 2);
	CHECK_EQ_INT(ca_service_count(f.svc, CA_RES_DENIED), 1);
	CHECK_EQ_INT(ca_service_count(f.svc, CA_RES_UNAUTHENTICATED), 3);
	CHECK_EQ_INT(ca_service_count(f.svc, CA_RES_INVALID), 2);
	CHECK_EQ_INT(ca_service_count(f.svc, CA_RES_UNIMPLEMENTED), 1);
	size_t mlen;
	char *metrics = ca_service_metrics(f.svc, &mlen);
	CHECK(metrics && strstr(metrics, "ambit_ca_server_requests_total{decision=\"issued\"} 2\n"));
	CHECK(metrics && strstr(metrics, "ambit_ca_server_requests_total{decision=\"denied\"} 1\n"));
	free(metrics);
	free(tok1);
	free(tok_aud);
	tls_csr_free(csr_api);
	tls_csr_free(csr_db);
	fixture_stop(&f);
	model_publish(model_new_empty());
}

TEST(create_certificate_rate_limited)
{
	struct fixture f;
	struct grpc_result r;
	struct spiffe_id api;

	REQUIRE(fixture_start(&f, 2) == 0);
	model_publish(test_model());
	spiffe_id_set(&api, TD, "default", "api", NULL);
	struct tls_csr *csr = tls_csr_new(&api);
	char *tok = agent_token("node-1", AUD), *tok2 = agent_token("node-2", AUD);
	int ok = 0, limited = 0;
	for (int i = 0; i < 4; i++) {
		CHECK_EQ_INT(create(&f, tok, csr, "spiffe://cluster.local/ns/default/sa/api", &r), 0);
		ok += r.status == GRPC_STATUS_OK;
		if (r.status == GRPC_STATUS_RESOURCE_EXHAUSTED) {
			limited++;
			CHECK(strstr(r.message, "rate limit"));
		}
		grpc_result_fini(&r);
	}
	CHECK_EQ_INT(ok, 2);
	CHECK_EQ_INT(limited, 2);
	/* another node is not held back by the first (it is refused for the identity, not the rate) */
	CHECK_EQ_INT(create(&f, tok2, csr, "spiffe://cluster.local/ns/default/sa/api", &r), 0);
	CHECK_EQ_INT(r.status, GRPC_STATUS_PERMISSION_DENIED);
	grpc_result_fini(&r);
	CHECK_EQ_INT(ca_service_count(f.svc, CA_RES_RATE_LIMITED), 2);
	free(tok);
	free(tok2);
	tls_csr_free(csr);
	fixture_stop(&f);
	model_publish(model_new_empty());
}

int main(void)
{
	return test_main("ca_server");
}
