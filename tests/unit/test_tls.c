// SPDX-License-Identifier: Apache-2.0
/* Unit tests of tls/: SPIFFE parsing, issued certificate fields, real TLS 1.3 handshakes over
 * socketpairs (identities, SNI, every refusal and its reason), certstore renewal and bounds. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "harness.h"
#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/certstore.h"
#include "tls/conn.h"
#include "tls/ctx.h"
#include "tls/identity.h"
#include "tls/tls_int.h"

#define TD "cluster.local"

/* As in the agent: a write to a closed socket is an error, not a signal. */
__attribute__((constructor)) static void ignore_sigpipe(void)
{
	signal(SIGPIPE, SIG_IGN);
}

static struct tls_ca *mesh_ca(void)
{
	static struct tls_ca *ca;	/* shared by the tests; freed at exit */
	if (!ca)
		ca = tls_ca_new_self_signed(TD, 365 * 24 * 3600);
	return ca;
}

__attribute__((destructor)) static void free_mesh_ca(void)
{
	tls_ca_free(mesh_ca());
}

static struct spiffe_id sid(const char *td, const char *ns, const char *sa)
{
	struct spiffe_id id;
	if (spiffe_id_set(&id, td, ns, sa, NULL))
		abort();
	return id;
}

static struct tls_cert *issue(struct tls_ca *ca, struct spiffe_id id)
{
	return tls_ca_issue(ca, &id, NULL);
}

/* ---- identity ---- */

TEST(spiffe_parse_ok)
{
	struct spiffe_id id;
	char buf[SPIFFE_ID_STR_MAX];

	CHECK_EQ_INT(spiffe_id_parse("spiffe://cluster.local/ns/default/sa/api-gateway", &id, NULL), 0);
	CHECK_EQ_STR(id.td, "cluster.local");
	CHECK_EQ_STR(id.ns, "default");
	CHECK_EQ_STR(id.sa, "api-gateway");
	CHECK_EQ_INT(spiffe_id_format(&id, buf, sizeof(buf)), 48);
	CHECK_EQ_STR(buf, "spiffe://cluster.local/ns/default/sa/api-gateway");
	CHECK_EQ_INT(spiffe_id_format(&id, buf, 10), -ENOSPC);
	CHECK_EQ_STR(buf, "");
	struct spiffe_id b = sid(TD, "default", "api-gateway"), c = sid(TD, "default", "b");
	CHECK(spiffe_id_equal(&id, &b));
	CHECK(!spiffe_id_equal(&id, &c));
	CHECK(spiffe_id_cmp(&id, &c) < 0);
	CHECK_EQ_INT(spiffe_id_parse("spiffe://td_x.example/ns/a/sa/my.sa-1", &id, NULL), 0);
	CHECK_EQ_STR(id.sa, "my.sa-1");
}

TEST(spiffe_parse_edge_cases)
{
	static const struct {
		const char *in;
		int err;
		const char *why;
	} bad[] = {
		{ "", -EINVAL, "empty identity" },
		{ "http://cluster.local/ns/a/sa/b", -EINVAL, "bad scheme (want spiffe://)" },
		{ "SPIFFE://cluster.local/ns/a/sa/b", -EINVAL, "bad scheme (want spiffe://)" },
		{ "spiffe:/cluster.local/ns/a/sa/b", -EINVAL, "bad scheme (want spiffe://)" },
		{ "spiffe:///ns/a/sa/b", -EINVAL, "empty trust domain" },
		{ "spiffe://Cluster.local/ns/a/sa/b", -EINVAL, "trust domain must be lower case" },
		{ "spiffe://cluster.local:443/ns/a/sa/b", -EINVAL, "port not allowed in trust domain" },
		{ "spiffe://u@cluster.local/ns/a/sa/b", -EINVAL, "userinfo not allowed in trust domain" },
		{ "spiffe://cluster.local", -EINVAL, "missing path (want /ns/<ns>/sa/<sa>)" },
		{ "spiffe://cluster.local/ns//sa/b", -EINVAL, "empty namespace" },
		{ "spiffe://cluster.local/ns/a/sa/", -EINVAL, "empty service account" },
		{ "spiffe://cluster.local/ns/a/sa/b/extra", -EINVAL, "extra path segments" },
		{ "spiffe://cluster.local/ns/a/sa/b/", -EINVAL, "trailing slash" },
		{ "spiffe://cluster.local/ns/a/sa", -EINVAL, "path must be /ns/<ns>/sa/<sa>" },
		{ "spiffe://cluster.local/sa/a/ns/b", -EINVAL, "path must be /ns/<ns>/sa/<sa>" },
		{ "spiffe://cluster.local/ns/a/sa/b?x=1", -EINVAL, "query or fragment not allowed" },
		{ "spiffe://cluster.local/ns/a/sa/b#f", -EINVAL, "query or fragment not allowed" },
		{ "spiffe://cluster.local/ns/a/sa/%62", -EINVAL, "percent-encoding not allowed" },
		{ "spiffe://cluster.local/ns/A/sa/b", -EINVAL,
		  "namespace is not a DNS label ([a-z0-9-], alphanumeric ends)" },
		{ "spiffe://cluster.local/ns/-a/sa/b", -EINVAL,
		  "namespace is not a DNS label ([a-z0-9-], alphanumeric ends)" },
		{ "spiffe://cluster.local/ns/a/sa/b..c", -EINVAL, "empty label in service account" },
		{ "spiffe://cluster.local/ns/a/sa/..", -EINVAL, "empty label in service account" },
	};
	struct spiffe_id id;
	char big[4096];

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		const char *why = NULL;
		int r = spiffe_id_parse(bad[i].in, &id, &why);
		if (r != bad[i].err || !why || strcmp(why, bad[i].why) != 0) {
			fprintf(stderr, "  %s: got %d \"%s\"\n", bad[i].in, r, why ? why : "");
			CHECK(0);
		}
	}
	/* too long: namespace of 64, trust domain of 256, whole string over the bound */
	const char *why = NULL;
	snprintf(big, sizeof(big), "spiffe://cluster.local/ns/%064d/sa/b", 0);
	CHECK_EQ_INT(spiffe_id_parse(big, &id, &why), -ENAMETOOLONG);
	CHECK_EQ_STR(why, "namespace too long");
	memset(big, 'a', sizeof(big));
	memcpy(big, "spiffe://", 9);
	big[sizeof(big) - 1] = '\0';
	CHECK_EQ_INT(spiffe_id_parse(big, &id, &why), -ENAMETOOLONG);
	CHECK_EQ_STR(why, "identity too long");
	snprintf(big, sizeof(big), "spiffe://%0256d/ns/a/sa/b", 0);
	CHECK_EQ_INT(spiffe_id_parse(big, &id, &why), -ENAMETOOLONG);
	CHECK_EQ_STR(why, "trust domain too long");
	CHECK_EQ_INT(spiffe_id_parse(NULL, &id, NULL), -EINVAL);
}

TEST(spiffe_sni_roundtrip)
{
	struct spiffe_id id = sid(TD, "shop", "cart.v2"), out;
	char sni[SPIFFE_SNI_MAX];

	CHECK(spiffe_sni_encode(&id, sni, sizeof(sni)) > 0);
	CHECK_EQ_STR(sni, "cart.v2.shop.cluster.local.spiffe");
	CHECK_EQ_INT(spiffe_sni_decode(sni, TD, &out), 0);
	CHECK(spiffe_id_equal(&id, &out));
	CHECK_EQ_INT(spiffe_sni_decode("CART.v2.Shop.cluster.local.SPIFFE", TD, &out), 0);
	CHECK(spiffe_id_equal(&id, &out));
	CHECK_EQ_INT(spiffe_sni_decode(sni, "other.local", &out), -EINVAL);
	CHECK_EQ_INT(spiffe_sni_decode("example.com", TD, &out), -EINVAL);
	CHECK_EQ_INT(spiffe_sni_decode("shop.cluster.local.spiffe", TD, &out), -EINVAL);
	CHECK_EQ_INT(spiffe_sni_decode("a.b.xcluster.local.spiffe", TD, &out), -EINVAL);
	/* one-letter namespace and service account: the shortest name (found by tests/fuzz/spiffe) */
	struct spiffe_id tiny = sid(TD, "d", "a");
	CHECK_EQ_INT(spiffe_sni_encode(&tiny, sni, sizeof(sni)), 4 + strlen(TD) + 7);
	CHECK_EQ_INT(spiffe_sni_decode(sni, TD, &out), 0);
	CHECK(spiffe_id_equal(&tiny, &out));
	CHECK_EQ_INT(spiffe_sni_decode("a..cluster.local.spiffe", TD, &out), -EINVAL);
	CHECK_EQ_INT(spiffe_sni_decode(".cluster.local.spiffe", TD, &out), -EINVAL);
	/* a service account of 250 characters cannot fit a DNS name with the rest */
	char sa[251];
	memset(sa, 'a', sizeof(sa) - 1);
	sa[sizeof(sa) - 1] = '\0';
	for (int i = 60; i < 250; i += 61)
		sa[i] = '.';
	struct spiffe_id longid = sid(TD, "ns", sa);
	CHECK_EQ_INT(spiffe_sni_encode(&longid, sni, sizeof(sni)), -ENAMETOOLONG);
}

/* The server_name extension of a ClientHello (RFC 6066 §3), as a handshake held for the model
 * reads it: exactly one well-formed host_name, or a refusal. */
TEST(sni_extension_host_name)
{
	static const unsigned char ok[] = { 0, 8, 0, 0, 5, 'a', '.', 'b', '.', 'c' };
	static const unsigned char other_type[] = { 0, 8, 1, 0, 5, 'a', '.', 'b', '.', 'c' };
	static const unsigned char list_len_off[] = { 0, 9, 0, 0, 5, 'a', '.', 'b', '.', 'c' };
	static const unsigned char name_past_end[] = { 0, 8, 0, 0, 6, 'a', '.', 'b', '.', 'c' };
	static const unsigned char empty[] = { 0, 3, 0, 0, 0 };
	static const unsigned char nul[] = { 0, 8, 0, 0, 5, 'a', 0, 'b', '.', 'c' };
	char out[16];

	CHECK_EQ_INT(spiffe_sni_ext_host_name(ok, sizeof(ok), out, sizeof(out)), 5);
	CHECK_EQ_STR(out, "a.b.c");
	CHECK_EQ_INT(spiffe_sni_ext_host_name(ok, sizeof(ok), out, 5), -ENOSPC);
	CHECK_EQ_INT(spiffe_sni_ext_host_name(ok, 4, out, sizeof(out)), -EINVAL);
	CHECK_EQ_INT(spiffe_sni_ext_host_name(other_type, sizeof(other_type), out, sizeof(out)), -EINVAL);
	CHECK_EQ_INT(spiffe_sni_ext_host_name(list_len_off, sizeof(list_len_off), out, sizeof(out)), -EINVAL);
	CHECK_EQ_INT(spiffe_sni_ext_host_name(name_past_end, sizeof(name_past_end), out, sizeof(out)), -EINVAL);
	CHECK_EQ_INT(spiffe_sni_ext_host_name(empty, sizeof(empty), out, sizeof(out)), -EINVAL);
	CHECK_EQ_INT(spiffe_sni_ext_host_name(nul, sizeof(nul), out, sizeof(out)), -EINVAL);
}

/* ---- issued certificates ---- */

TEST(issued_cert_fields)
{
	struct tls_ca *ca = mesh_ca();
	struct spiffe_id id = sid(TD, "default", "api-gateway"), got;
	time_t now = time(NULL);
	struct tls_cert *c = issue(ca, id);
	REQUIRE(c);
	X509 *x = c->x509;

	/* ECDSA P-256 */
	char group[32] = "";
	size_t glen;
	CHECK(EVP_PKEY_is_a(c->key, "EC"));
	CHECK(EVP_PKEY_get_utf8_string_param(c->key, "group", group, sizeof(group), &glen) == 1);
	CHECK_EQ_STR(group, "prime256v1");
	CHECK_EQ_INT(EVP_PKEY_get_bits(c->key), 256);
	/* URI SAN, critical, and the empty subject that goes with it */
	CHECK_EQ_INT(spiffe_id_from_x509(x, &got, NULL), 0);
	CHECK(spiffe_id_equal(&got, &id));
	int idx = X509_get_ext_by_NID(x, NID_subject_alt_name, -1);
	CHECK(idx >= 0 && X509_EXTENSION_get_critical(X509_get_ext(x, idx)));
	CHECK_EQ_INT(X509_NAME_entry_count(X509_get_subject_name(x)), 0);
	/* 24 h from now, backdated a minute */
	CHECK(tls_cert_not_after(c) - tls_cert_not_before(c) == 24 * 3600 + 60);
	CHECK(llabs((long long)(tls_cert_not_before(c) - (now - 60))) <= 2);
	/* usages */
	CHECK_EQ_INT(X509_check_ca(x), 0);
	CHECK(X509_get_extension_flags(x) & EXFLAG_BCONS);
	CHECK_EQ_INT(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
	CHECK_EQ_INT(X509_get_extended_key_usage(x), XKU_SSL_SERVER | XKU_SSL_CLIENT);
	CHECK(X509_get0_subject_key_id(x) != NULL);
	CHECK(X509_get0_authority_key_id(x) != NULL);
	/* random 128-bit serial, signed by the CA */
	CHECK_EQ_INT(strlen(tls_cert_serial_hex(c)), 32);
	struct tls_cert *c2 = issue(ca, id);
	REQUIRE(c2);
	CHECK(strcmp(tls_cert_serial_hex(c), tls_cert_serial_hex(c2)) != 0);
	X509 *root = sk_X509_value(tls_ca_anchors(ca), 0);
	CHECK_EQ_INT(X509_verify(x, X509_get0_pubkey(root)), 1);
	CHECK_EQ_INT(X509_check_issued(root, x), X509_V_OK);
	/* public PEM only */
	char pem[4096];
	CHECK(tls_cert_chain_pem(c, pem, sizeof(pem)) > 0);
	CHECK(strstr(pem, "BEGIN CERTIFICATE") && !strstr(pem, "PRIVATE"));
	/* configurable lifetime */
	struct tls_issue_opts o = { .lifetime_s = 3600 };
	struct tls_cert *c3 = tls_ca_issue(ca, &id, &o);
	REQUIRE(c3);
	CHECK_EQ_INT(tls_cert_not_after(c3) - tls_cert_not_before(c3), 3660);
	tls_cert_unref(c3);
	tls_cert_unref(c2);
	tls_cert_unref(c);
	ERR_clear_error();
}

TEST(ca_files_roundtrip)
{
	char dir[] = "/tmp/ambit-tls-XXXXXX", crt[64], key[64], err[256] = "";
	struct tls_ca *ca = tls_ca_new_self_signed("lab.local", 3600), *ca2 = NULL, *ro = NULL;
	struct tls_cert *c = NULL;
	struct stat st;

	REQUIRE(ca && mkdtemp(dir));
	snprintf(crt, sizeof(crt), "%s/ca.crt", dir);
	snprintf(key, sizeof(key), "%s/ca.key", dir);
	CHECK_EQ_INT(tls_ca_write(ca, crt, key, err, sizeof(err)), 0);
	CHECK(stat(key, &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK_EQ_INT(tls_ca_write(ca, crt, key, err, sizeof(err)), -EEXIST);
	CHECK(strstr(err, key) != NULL);
	ca2 = tls_ca_load(crt, key, err, sizeof(err));
	CHECK(ca2 != NULL);
	if (ca2) {
		struct spiffe_id id = sid("lab.local", "a", "b");
		c = tls_ca_issue(ca2, &id, NULL);
		CHECK(c != NULL);
	}
	/* verify-only */
	ro = tls_ca_load(crt, NULL, err, sizeof(err));
	CHECK(ro != NULL);
	if (ro) {
		struct spiffe_id id = sid("lab.local", "a", "b");
		CHECK(tls_ca_issue(ro, &id, NULL) == NULL && errno == ENOKEY);
	}
	/* errors name the file */
	CHECK(tls_ca_load("/nonexistent/ca.crt", key, err, sizeof(err)) == NULL);
	CHECK_EQ_INT(errno, ENOENT);
	CHECK(strstr(err, "/nonexistent/ca.crt: No such file") != NULL);
	CHECK(tls_ca_load(key, key, err, sizeof(err)) == NULL);
	CHECK(strstr(err, key) && strstr(err, "no PEM certificate"));
	CHECK(tls_ca_load(crt, crt, err, sizeof(err)) == NULL);
	CHECK(strstr(err, crt) && strstr(err, "no PEM private key"));
	/* a leaf is not a CA */
	if (c) {
		char leaf[64], pem[4096];
		snprintf(leaf, sizeof(leaf), "%s/leaf.crt", dir);
		int n = tls_cert_chain_pem(c, pem, sizeof(pem));
		FILE *f = fopen(leaf, "w");
		if (f) {
			fwrite(pem, 1, (size_t)n, f);
			fclose(f);
		}
		CHECK(tls_ca_load(leaf, NULL, err, sizeof(err)) == NULL);
		CHECK(strstr(err, "not a CA certificate") != NULL);
		unlink(leaf);
	}
	/* a key that is not the CA's */
	struct tls_ca *other = tls_ca_new_self_signed("lab.local", 3600);
	char okey[64], ocrt[64];
	snprintf(okey, sizeof(okey), "%s/o.key", dir);
	snprintf(ocrt, sizeof(ocrt), "%s/o.crt", dir);
	CHECK(other && tls_ca_write(other, ocrt, okey, err, sizeof(err)) == 0);
	CHECK(tls_ca_load(crt, okey, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "key does not match") != NULL);
	tls_ca_free(other);
	unlink(okey);
	unlink(ocrt);
	tls_cert_unref(c);
	tls_ca_free(ro);
	tls_ca_free(ca2);
	tls_ca_free(ca);
	unlink(crt);
	unlink(key);
	rmdir(dir);
}

/* ---- handshakes over socketpairs ---- */

struct server_certs {
	struct tls_cert *certs[4];
	int n;
	struct tls_cert *dflt;
};

static struct tls_cert *select_cert(void *arg, const struct spiffe_id *id)
{
	struct server_certs *sc = arg;
	if (!id)
		return tls_cert_ref(sc->dflt);
	for (int i = 0; i < sc->n; i++)
		if (spiffe_id_equal(tls_cert_id(sc->certs[i]), id))
			return tls_cert_ref(sc->certs[i]);
	return NULL;
}

static void pair(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		abort();
	fd_set_nonblock(sv[0]);
	fd_set_nonblock(sv[1]);
}

/* Runs both handshakes until neither wants more; results in *rc, *rs. */
static void drive(struct tls_conn *cl, struct tls_conn *sv, int *rc, int *rs)
{
	*rc = *rs = -EAGAIN;
	for (int i = 0; i < 200 && (*rc == -EAGAIN || *rs == -EAGAIN); i++) {
		if (*rc == -EAGAIN)
			*rc = tls_conn_handshake(cl);
		if (*rs == -EAGAIN)
			*rs = tls_conn_handshake(sv);
	}
}

/* Reads what is there (up to len) after the other side wrote; -EAGAIN if nothing. */
static ssize_t read_some(struct tls_conn *c, char *buf, size_t len)
{
	ssize_t n = -EAGAIN;
	for (int i = 0; i < 50 && n == -EAGAIN; i++)
		n = tls_conn_read(c, buf, len);
	return n;
}

struct mesh {
	struct tls_ctx *sctx, *cctx;
	struct server_certs sc;
	int sv[2];
	struct tls_conn *cl, *srv;
	int rc, rs;
};

static struct tls_ctx *server_ctx(struct tls_ca *ca, struct server_certs *sc)
{
	struct tls_ctx_opts o = { .roots = ca, .trust_domain = TD, .select_cert = select_cert,
				  .select_arg = sc };
	return tls_ctx_new(TLS_ROLE_SERVER, &o);
}

static struct tls_ctx *client_ctx(struct tls_ca *ca)
{
	struct tls_ctx_opts o = { .roots = ca, .trust_domain = TD };
	return tls_ctx_new(TLS_ROLE_CLIENT, &o);
}

/* A full handshake: client with ccert, SNI sni (may be NULL), expecting expect. */
static void mesh_run(struct mesh *m, struct tls_ca *client_roots, struct tls_cert *ccert,
		     const struct spiffe_id *sni, const struct spiffe_id *expect)
{
	struct tls_conn_opts co = { .cert = ccert, .sni = sni, .expect = expect, .nexpect = 1 };
	m->sctx = server_ctx(mesh_ca(), &m->sc);
	m->cctx = client_ctx(client_roots);
	pair(m->sv);
	m->cl = tls_conn_new(m->cctx, m->sv[0], &co);
	m->srv = tls_conn_new(m->sctx, m->sv[1], NULL);
	if (!m->sctx || !m->cctx || !m->cl || !m->srv)
		abort();
	drive(m->cl, m->srv, &m->rc, &m->rs);
}

static void mesh_done(struct mesh *m)
{
	tls_conn_free(m->cl);
	tls_conn_free(m->srv);
	tls_ctx_free(m->cctx);
	tls_ctx_free(m->sctx);
	close(m->sv[0]);
	close(m->sv[1]);
	for (int i = 0; i < m->sc.n; i++)
		tls_cert_unref(m->sc.certs[i]);
	tls_cert_unref(m->sc.dflt);
	ERR_clear_error();
}

TEST(handshake_ok_data_and_close)
{
	struct spiffe_id src = sid(TD, "default", "client"), dst = sid(TD, "shop", "cart");
	struct tls_cert *ccert = issue(mesh_ca(), src);
	struct mesh m = { .sc = { .n = 1, .certs = { issue(mesh_ca(), dst) } } };
	char buf[64 * 1024];

	m.sc.dflt = tls_cert_ref(m.sc.certs[0]);
	mesh_run(&m, mesh_ca(), ccert, &dst, &dst);
	tls_cert_unref(ccert);	/* the conn holds its own reference */
	CHECK_EQ_INT(m.rc, 0);
	CHECK_EQ_INT(m.rs, 0);
	if (m.rc || m.rs)
		fprintf(stderr, "  client: %s / server: %s\n", tls_conn_reason(m.cl),
			tls_conn_reason(m.srv));
	REQUIRE(m.rc == 0 && m.rs == 0);
	CHECK_EQ_INT(tls_conn_state(m.cl), TLS_ST_ESTABLISHED);
	CHECK_EQ_STR(tls_conn_st_to_str(tls_conn_state(m.cl)), "established");
	CHECK(tls_conn_peer_id(m.cl) && spiffe_id_equal(tls_conn_peer_id(m.cl), &dst));
	CHECK(tls_conn_peer_id(m.srv) && spiffe_id_equal(tls_conn_peer_id(m.srv), &src));
	CHECK(tls_conn_sni_id(m.srv) && spiffe_id_equal(tls_conn_sni_id(m.srv), &dst));
	CHECK(spiffe_id_equal(tls_cert_id(tls_conn_local_cert(m.cl)), &src));
	CHECK_EQ_STR(tls_conn_alpn(m.cl), "h2");
	CHECK_EQ_STR(tls_conn_alpn(m.srv), "h2");
	CHECK_EQ_STR(tls_conn_version(m.cl), "TLSv1.3");
	CHECK_EQ_STR(tls_conn_reason(m.cl), "");

	/* nothing to read yet */
	CHECK_EQ_INT(tls_conn_read(m.srv, buf, sizeof(buf)), -EAGAIN);
	CHECK(tls_conn_want(m.srv) & TLS_WANT_READ);
	/* two records, read in small pieces: the rest stays in SSL_pending */
	CHECK_EQ_INT(tls_conn_write(m.cl, "hello ", 6), 6);
	CHECK_EQ_INT(tls_conn_write(m.cl, "mesh", 4), 4);
	char small[4];
	CHECK_EQ_INT(read_some(m.srv, small, 4), 4);
	CHECK(memcmp(small, "hell", 4) == 0);
	CHECK_EQ_INT(tls_conn_pending(m.srv), 2);
	CHECK_EQ_INT(tls_conn_read(m.srv, small, 4), 2);
	CHECK_EQ_INT(tls_conn_read(m.srv, small, 4), 4);
	CHECK(memcmp(small, "mesh", 4) == 0);
	/* a big write fills the socket: partial progress, then -EAGAIN wanting write */
	memset(buf, 'x', sizeof(buf));
	size_t sent = 0, got = 0;
	ssize_t n;
	int rounds = 0;
	while (sent < 4 * sizeof(buf) && rounds++ < 10000) {
		n = tls_conn_write(m.srv, buf, sizeof(buf));
		if (n == -EAGAIN) {
			CHECK(tls_conn_want(m.srv) & TLS_WANT_WRITE);
			while ((n = tls_conn_read(m.cl, buf, sizeof(buf))) > 0)
				got += (size_t)n;
			continue;
		}
		REQUIRE(n > 0);
		sent += (size_t)n;
	}
	/* records the full socket did not take wait in the conn until flushed */
	for (rounds = 0; tls_conn_unsent(m.srv) && rounds < 10000; rounds++) {
		n = tls_conn_flush(m.srv);
		REQUIRE(n == 0 || n == -EAGAIN);
		while ((n = tls_conn_read(m.cl, buf, sizeof(buf))) > 0)
			got += (size_t)n;
	}
	CHECK_EQ_INT(tls_conn_unsent(m.srv), 0);
	CHECK_EQ_INT(tls_conn_flush(m.srv), 0);
	while ((n = tls_conn_read(m.cl, buf, sizeof(buf))) > 0)
		got += (size_t)n;
	CHECK_EQ_INT(got, sent);
	/* clean close: the client's close_notify reads as 0 on the server */
	CHECK_EQ_INT(tls_conn_shutdown(m.cl), 0);
	CHECK_EQ_INT(tls_conn_state(m.cl), TLS_ST_SHUTDOWN);
	CHECK_EQ_INT(tls_conn_write(m.cl, "x", 1), -EPIPE);
	CHECK_EQ_INT(read_some(m.srv, buf, sizeof(buf)), 0);
	/* TLS 1.3 half-close: the server may still write after the client's close_notify */
	CHECK_EQ_INT(tls_conn_write(m.srv, "late", 4), 4);
	/* then the socket goes away without the server's close_notify: a write fails */
	close(m.sv[0]);
	m.sv[0] = -1;
	CHECK_EQ_INT(tls_conn_write(m.srv, "gone", 4), -EPIPE);
	CHECK(tls_conn_reason(m.srv)[0] != '\0');
	CHECK_EQ_INT(tls_conn_state(m.srv), TLS_ST_FAILED);
	mesh_done(&m);
}

TEST(server_picks_cert_by_sni)
{
	struct spiffe_id src = sid(TD, "default", "client"), a = sid(TD, "shop", "cart"),
			 b = sid(TD, "shop", "checkout");
	struct tls_cert *ccert = issue(mesh_ca(), src);
	struct tls_cert *ca_ = issue(mesh_ca(), a), *cb = issue(mesh_ca(), b);

	/* SNI names b: the server presents b */
	struct mesh m = { .sc = { .n = 2, .certs = { tls_cert_ref(ca_), tls_cert_ref(cb) },
				  .dflt = tls_cert_ref(ca_) } };
	mesh_run(&m, mesh_ca(), ccert, &b, &b);
	CHECK_EQ_INT(m.rc, 0);
	CHECK_EQ_INT(m.rs, 0);
	CHECK(m.rc || spiffe_id_equal(tls_conn_peer_id(m.cl), &b));
	CHECK(spiffe_id_equal(tls_cert_id(tls_conn_local_cert(m.srv)), &b));
	mesh_done(&m);

	/* no SNI: the default (a); expecting a or b works */
	struct spiffe_id both[2] = { b, a };
	struct mesh m2 = { .sc = { .n = 2, .certs = { tls_cert_ref(ca_), tls_cert_ref(cb) },
				   .dflt = tls_cert_ref(ca_) } };
	struct tls_conn_opts co = { .cert = ccert, .expect = both, .nexpect = 2 };
	m2.sctx = server_ctx(mesh_ca(), &m2.sc);
	m2.cctx = client_ctx(mesh_ca());
	pair(m2.sv);
	m2.cl = tls_conn_new(m2.cctx, m2.sv[0], &co);
	m2.srv = tls_conn_new(m2.sctx, m2.sv[1], NULL);
	REQUIRE(m2.cl && m2.srv);
	drive(m2.cl, m2.srv, &m2.rc, &m2.rs);
	CHECK_EQ_INT(m2.rc, 0);
	CHECK_EQ_INT(m2.rs, 0);
	CHECK(tls_conn_sni_id(m2.srv) == NULL);
	CHECK(spiffe_id_equal(tls_cert_id(tls_conn_local_cert(m2.srv)), &a));
	mesh_done(&m2);

	/* SNI for an identity this node does not serve: refused with unrecognized_name */
	struct spiffe_id c = sid(TD, "shop", "gone");
	struct mesh m3 = { .sc = { .n = 1, .certs = { tls_cert_ref(ca_) }, .dflt = tls_cert_ref(ca_) } };
	mesh_run(&m3, mesh_ca(), ccert, &c, &c);
	CHECK_EQ_INT(m3.rs, -EACCES);
	CHECK_EQ_STR(tls_conn_reason(m3.srv), "no local certificate for spiffe://cluster.local/ns/shop/sa/gone (SNI)");
	CHECK_EQ_INT(m3.rc, -EACCES);
	CHECK_EQ_STR(tls_conn_reason(m3.cl), "peer has no certificate for the requested identity");
	mesh_done(&m3);

	tls_cert_unref(ccert);
	tls_cert_unref(ca_);
	tls_cert_unref(cb);
}

/* Pod-addressed HBONE: the server's cert is chosen before the handshake (by the dialled
 * address) and presented whatever the SNI says, with no SNI or with one naming another. */
TEST(server_fixed_cert_ignores_sni)
{
	struct spiffe_id src = sid(TD, "default", "client"), a = sid(TD, "shop", "cart"),
			 b = sid(TD, "shop", "checkout");
	struct tls_cert *ccert = issue(mesh_ca(), src);
	struct tls_cert *ca_ = issue(mesh_ca(), a), *cb = issue(mesh_ca(), b);
	const struct spiffe_id *snis[2] = { NULL, &a };

	for (int i = 0; i < 2; i++) {
		struct mesh m = { .sc = { .n = 1, .certs = { tls_cert_ref(ca_) },
					  .dflt = tls_cert_ref(ca_) } };
		struct tls_conn_opts co = { .cert = ccert, .sni = snis[i], .expect = &b, .nexpect = 1 };
		struct tls_conn_opts so = { .cert = cb };
		m.sctx = server_ctx(mesh_ca(), &m.sc);
		m.cctx = client_ctx(mesh_ca());
		pair(m.sv);
		m.cl = tls_conn_new(m.cctx, m.sv[0], &co);
		m.srv = tls_conn_new(m.sctx, m.sv[1], &so);
		REQUIRE(m.cl && m.srv);
		drive(m.cl, m.srv, &m.rc, &m.rs);
		CHECK_EQ_INT(m.rc, 0);
		CHECK_EQ_INT(m.rs, 0);
		CHECK(m.rc || spiffe_id_equal(tls_conn_peer_id(m.cl), &b));
		CHECK(spiffe_id_equal(tls_cert_id(tls_conn_local_cert(m.srv)), &b));
		CHECK(m.rs || spiffe_id_equal(tls_conn_peer_id(m.srv), &src));
		mesh_done(&m);
	}
	tls_cert_unref(ccert);
	tls_cert_unref(ca_);
	tls_cert_unref(cb);
}

/* The client of a refused handshake sees the server's alert on its first read (TLS 1.3: the
 * client's handshake ends before the server has checked the client certificate). */
static int client_outcome(struct mesh *m)
{
	char b[16];
	if (m->rc != 0)
		return m->rc;
	return (int)read_some(m->cl, b, sizeof(b));
}

TEST(refuse_client_from_other_ca)
{
	struct tls_ca *evil = tls_ca_new_self_signed(TD, 3600);
	struct spiffe_id src = sid(TD, "default", "client"), dst = sid(TD, "shop", "cart");
	REQUIRE(evil);
	struct tls_cert *ccert = issue(evil, src);
	struct mesh m = { .sc = { .n = 1, .certs = { issue(mesh_ca(), dst) } } };
	m.sc.dflt = tls_cert_ref(m.sc.certs[0]);
	mesh_run(&m, mesh_ca(), ccert, &dst, &dst);
	CHECK_EQ_INT(m.rs, -EACCES);
	CHECK_EQ_STR(tls_conn_reason(m.srv), "peer certificate not signed by mesh CA");
	CHECK_EQ_INT(client_outcome(&m), -EACCES);
	CHECK(strstr(tls_conn_reason(m.cl), "peer rejected our certificate") != NULL);
	CHECK(tls_conn_peer_id(m.srv) == NULL);
	mesh_done(&m);

	/* and a server whose cert comes from another CA */
	struct tls_cert *good = issue(mesh_ca(), src);
	struct mesh m2 = { .sc = { .n = 1, .certs = { issue(evil, dst) } } };
	m2.sc.dflt = tls_cert_ref(m2.sc.certs[0]);
	mesh_run(&m2, mesh_ca(), good, &dst, &dst);
	CHECK_EQ_INT(m2.rc, -EACCES);
	CHECK_EQ_STR(tls_conn_reason(m2.cl), "peer certificate not signed by mesh CA");
	CHECK(m2.rs < 0 && m2.rs != -EAGAIN);
	mesh_done(&m2);
	tls_cert_unref(good);
	tls_cert_unref(ccert);
	tls_ca_free(evil);
}

TEST(refuse_wrong_server_identity)
{
	struct spiffe_id src = sid(TD, "default", "client"), dst = sid(TD, "shop", "cart"),
			 want = sid(TD, "shop", "payments");
	struct tls_cert *ccert = issue(mesh_ca(), src);
	struct mesh m = { .sc = { .n = 1, .certs = { issue(mesh_ca(), dst) } } };
	m.sc.dflt = tls_cert_ref(m.sc.certs[0]);
	/* SNI names want, but this server only has cart and defaults to it */
	mesh_run(&m, mesh_ca(), ccert, NULL, &want);
	CHECK_EQ_INT(m.rc, -EACCES);
	CHECK_EQ_STR(tls_conn_reason(m.cl), "peer identity spiffe://cluster.local/ns/shop/sa/cart, "
					    "expected spiffe://cluster.local/ns/shop/sa/payments");
	CHECK(tls_conn_peer_id(m.cl) == NULL);
	CHECK(m.rs < 0 && m.rs != -EAGAIN);
	mesh_done(&m);
	tls_cert_unref(ccert);
}

TEST(refuse_expired_certificate)
{
	struct spiffe_id src = sid(TD, "default", "client"), dst = sid(TD, "shop", "cart");
	struct tls_issue_opts old = { .lifetime_s = 3600, .now = time(NULL) - 2 * 24 * 3600 };
	struct tls_cert *ccert = tls_ca_issue(mesh_ca(), &src, &old);
	REQUIRE(ccert);
	struct mesh m = { .sc = { .n = 1, .certs = { issue(mesh_ca(), dst) } } };
	m.sc.dflt = tls_cert_ref(m.sc.certs[0]);
	mesh_run(&m, mesh_ca(), ccert, &dst, &dst);
	CHECK_EQ_INT(m.rs, -EACCES);
	CHECK_EQ_STR(tls_conn_reason(m.srv), "peer certificate expired");
	CHECK_EQ_INT(client_outcome(&m), -EACCES);
	mesh_done(&m);

	/* an expired server cert, seen by the client */
	struct tls_cert *good = issue(mesh_ca(), src);
	struct mesh m2 = { .sc = { .n = 1, .certs = { tls_ca_issue(mesh_ca(), &dst, &old) } } };
	m2.sc.dflt = tls_cert_ref(m2.sc.certs[0]);
	mesh_run(&m2, mesh_ca(), good, &dst, &dst);
	CHECK_EQ_INT(m2.rc, -EACCES);
	CHECK_EQ_STR(tls_conn_reason(m2.cl), "peer certificate expired");
	mesh_done(&m2);
	tls_cert_unref(good);
	tls_cert_unref(ccert);
}

TEST(refuse_wrong_trust_domain)
{
	struct spiffe_id src = sid("other.local", "default", "client"), dst = sid(TD, "shop", "cart");
	struct tls_cert *ccert = issue(mesh_ca(), src);	/* same CA, other trust domain */
	struct mesh m = { .sc = { .n = 1, .certs = { issue(mesh_ca(), dst) } } };
	m.sc.dflt = tls_cert_ref(m.sc.certs[0]);
	mesh_run(&m, mesh_ca(), ccert, &dst, &dst);
	CHECK_EQ_INT(m.rs, -EACCES);
	CHECK_EQ_STR(tls_conn_reason(m.srv), "peer identity spiffe://other.local/ns/default/sa/client "
					     "not in trust domain cluster.local");
	CHECK_EQ_INT(client_outcome(&m), -EACCES);
	mesh_done(&m);
	tls_cert_unref(ccert);
}

/* ---- raw OpenSSL clients that break one rule ---- */

struct raw {
	SSL_CTX *ctx;
	SSL *ssl;
};

static void raw_new(struct raw *r, int fd, int max_version, bool alpn, struct tls_cert *cert)
{
	r->ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(r->ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(r->ctx, max_version);
	SSL_CTX_set_verify(r->ctx, SSL_VERIFY_NONE, NULL);
	if (alpn)
		SSL_CTX_set_alpn_protos(r->ctx, (const unsigned char *)"\x02h2", 3);
	r->ssl = SSL_new(r->ctx);
	if (cert) {
		SSL_use_certificate(r->ssl, cert->x509);
		SSL_use_PrivateKey(r->ssl, cert->key);
	}
	SSL_set_fd(r->ssl, fd);
	SSL_set_connect_state(r->ssl);
}

static void raw_free(struct raw *r)
{
	SSL_free(r->ssl);
	SSL_CTX_free(r->ctx);
}

/* Drives a raw client against our server; returns the server's result. */
static int raw_vs_server(int max_version, bool alpn, struct tls_cert *ccert, char *reason,
			 size_t rlen, int *raw_ok)
{
	struct spiffe_id dst = sid(TD, "shop", "cart");
	struct server_certs sc = { .n = 1, .certs = { issue(mesh_ca(), dst) } };
	struct tls_ctx *sctx;
	struct tls_conn *srv;
	struct raw r;
	int sv[2], rs = -EAGAIN, rr = -1;

	sc.dflt = tls_cert_ref(sc.certs[0]);
	sctx = server_ctx(mesh_ca(), &sc);
	pair(sv);
	srv = tls_conn_new(sctx, sv[1], NULL);
	raw_new(&r, sv[0], max_version, alpn, ccert);
	for (int i = 0; i < 200 && rs == -EAGAIN; i++) {
		if (rr != 1) {
			ERR_clear_error();
			rr = SSL_do_handshake(r.ssl);
		}
		rs = tls_conn_handshake(srv);
	}
	if (rr == 1) {	/* TLS 1.3: the refusal arrives after the client's Finished */
		char b[8];
		ERR_clear_error();
		rr = SSL_read(r.ssl, b, sizeof(b)) > 0;
	}
	*raw_ok = rr == 1;
	snprintf(reason, rlen, "%s", tls_conn_reason(srv));
	tls_conn_free(srv);
	raw_free(&r);
	tls_ctx_free(sctx);
	tls_cert_unref(sc.certs[0]);
	tls_cert_unref(sc.dflt);
	close(sv[0]);
	close(sv[1]);
	ERR_clear_error();
	return rs;
}

TEST(refuse_no_client_certificate)
{
	char reason[TLS_REASON_MAX];
	int raw_ok;
	int rs = raw_vs_server(TLS1_3_VERSION, true, NULL, reason, sizeof(reason), &raw_ok);
	CHECK_EQ_INT(rs, -EACCES);
	CHECK_EQ_STR(reason, "no client certificate");
	CHECK(!raw_ok);
}

TEST(refuse_tls12_client)
{
	struct spiffe_id src = sid(TD, "default", "client");
	struct tls_cert *ccert = issue(mesh_ca(), src);
	char reason[TLS_REASON_MAX];
	int raw_ok;
	int rs = raw_vs_server(TLS1_2_VERSION, true, ccert, reason, sizeof(reason), &raw_ok);
	CHECK_EQ_INT(rs, -EPROTO);
	CHECK_EQ_STR(reason, "TLS 1.2 refused (client offers no TLS 1.3)");
	CHECK(!raw_ok);
	/* the same client with TLS 1.3 allowed gets through: the refusal was the version */
	rs = raw_vs_server(TLS1_3_VERSION, true, ccert, reason, sizeof(reason), &raw_ok);
	CHECK_EQ_INT(rs, 0);
	tls_cert_unref(ccert);
}

TEST(refuse_client_without_alpn_h2)
{
	struct spiffe_id src = sid(TD, "default", "client");
	struct tls_cert *ccert = issue(mesh_ca(), src);
	char reason[TLS_REASON_MAX];
	int raw_ok;
	int rs = raw_vs_server(TLS1_3_VERSION, false, ccert, reason, sizeof(reason), &raw_ok);
	CHECK_EQ_INT(rs, -EPROTO);
	CHECK_EQ_STR(reason, "client offers no ALPN h2");
	CHECK(!raw_ok);
	tls_cert_unref(ccert);
}

TEST(refuse_plaintext)
{
	struct spiffe_id dst = sid(TD, "shop", "cart");
	struct server_certs sc = { .n = 1, .certs = { issue(mesh_ca(), dst) } };
	sc.dflt = tls_cert_ref(sc.certs[0]);
	struct tls_ctx *sctx = server_ctx(mesh_ca(), &sc);
	int sv[2];
	pair(sv);
	struct tls_conn *srv = tls_conn_new(sctx, sv[1], NULL);
	const char req[] = "CONNECT 10.0.0.1:80 HTTP/1.1\r\nHost: x\r\n\r\n";
	CHECK_EQ_INT(write(sv[0], req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
	CHECK_EQ_INT(tls_conn_handshake(srv), -EPROTO);
	CHECK_EQ_STR(tls_conn_reason(srv), "peer is not speaking TLS (plaintext?)");
	CHECK_EQ_INT(tls_conn_state(srv), TLS_ST_FAILED);
	CHECK_EQ_INT(tls_conn_read(srv, (char[4]){0}, 4), -EPROTO);
	tls_conn_free(srv);
	tls_ctx_free(sctx);
	tls_cert_unref(sc.certs[0]);
	tls_cert_unref(sc.dflt);
	close(sv[0]);
	close(sv[1]);
	ERR_clear_error();
}

/* ---- certstore ---- */

static int64_t fake_now;
static int64_t fake_clock(void *arg) { return fake_now; }

struct seen {
	int n;
	char serial[4][TLS_SERIAL_HEX_MAX];
	enum certstore_state st[4];
	uint32_t refs[4];
};

static int collect(const struct certstore_info *info, void *arg)
{
	struct seen *s = arg;
	if (s->n < 4) {
		snprintf(s->serial[s->n], TLS_SERIAL_HEX_MAX, "%s", info->serial_hex);
		s->st[s->n] = info->state;
		s->refs[s->n] = info->refs;
	}
	s->n++;
	return 0;
}

TEST(certstore_renews_at_half_life_without_dropping_conns)
{
	struct certstore_opts o = { .clock = fake_clock };
	struct spiffe_id src = sid(TD, "default", "client"), dst = sid(TD, "shop", "cart");
	struct certstore *cs;
	struct seen s = { 0 };
	char a_serial[TLS_SERIAL_HEX_MAX];

	fake_now = time(NULL);
	cs = certstore_new(mesh_ca(), &o);
	REQUIRE(cs);
	struct tls_cert *a = certstore_get(cs, &src), *a2 = certstore_get(cs, &src);
	REQUIRE(a && a2);
	CHECK(a == a2);	/* cached */
	tls_cert_unref(a2);
	snprintf(a_serial, sizeof(a_serial), "%s", tls_cert_serial_hex(a));
	CHECK_EQ_INT(tls_cert_not_after(a) - fake_now, 24 * 3600);

	/* a live connection that uses a */
	struct mesh m = { .sc = { .n = 1, .certs = { issue(mesh_ca(), dst) } } };
	m.sc.dflt = tls_cert_ref(m.sc.certs[0]);
	mesh_run(&m, mesh_ca(), a, &dst, &dst);
	tls_cert_unref(a);	/* only the store and the connection hold it now */
	REQUIRE(m.rc == 0 && m.rs == 0);
	CHECK_EQ_INT(certstore_foreach(cs, collect, &s), 0);
	CHECK_EQ_INT(s.n, 1);
	CHECK_EQ_INT(s.st[0], CERTSTORE_FRESH);
	CHECK_EQ_INT(s.refs[0], 1);	/* the connection */

	/* just before half-life: same cert; after: renewing, then a new one */
	fake_now += 12 * 3600 - 1;
	struct tls_cert *same = certstore_get(cs, &src);
	CHECK(same && strcmp(tls_cert_serial_hex(same), a_serial) == 0);
	tls_cert_unref(same);
	fake_now += 2;
	s.n = 0;
	certstore_foreach(cs, collect, &s);
	CHECK_EQ_INT(s.st[0], CERTSTORE_RENEWING);
	CHECK_EQ_STR(certstore_state_str(s.st[0]), "renewing");
	struct tls_cert *b = certstore_get(cs, &src);
	REQUIRE(b);
	CHECK(strcmp(tls_cert_serial_hex(b), a_serial) != 0);
	CHECK_EQ_INT(tls_cert_issued_at(b), fake_now);
	s.n = 0;
	certstore_foreach(cs, collect, &s);
	CHECK_EQ_INT(s.n, 1);
	CHECK_EQ_STR(s.serial[0], tls_cert_serial_hex(b));
	CHECK_EQ_INT(s.st[0], CERTSTORE_FRESH);

	/* the old connection still works, even with the store gone */
	certstore_free(cs);
	char buf[16];
	CHECK_EQ_INT(tls_conn_write(m.cl, "still", 5), 5);
	CHECK_EQ_INT(read_some(m.srv, buf, sizeof(buf)), 5);
	CHECK_EQ_INT(tls_conn_write(m.srv, "alive", 5), 5);
	CHECK_EQ_INT(read_some(m.cl, buf, sizeof(buf)), 5);
	CHECK(strcmp(tls_cert_serial_hex(tls_conn_local_cert(m.cl)), a_serial) == 0);
	mesh_done(&m);

	/* a new connection with b, verified at the fake time */
	struct tls_ctx_opts so = { .roots = mesh_ca(), .trust_domain = TD,
				   .default_cert = NULL, .verify_time = fake_now };
	struct tls_cert *sb = tls_ca_issue(mesh_ca(), &dst,
					   &(struct tls_issue_opts){ .now = fake_now });
	so.default_cert = sb;
	struct tls_ctx *sctx = tls_ctx_new(TLS_ROLE_SERVER, &so);
	so.default_cert = NULL;
	struct tls_ctx *cctx = tls_ctx_new(TLS_ROLE_CLIENT, &so);
	int sv[2], rc, rs;
	pair(sv);
	struct tls_conn_opts co = { .cert = b, .expect = &dst, .nexpect = 1 };
	struct tls_conn *cl = tls_conn_new(cctx, sv[0], &co), *srv = tls_conn_new(sctx, sv[1], NULL);
	REQUIRE(cl && srv);
	drive(cl, srv, &rc, &rs);
	CHECK_EQ_INT(rc, 0);
	CHECK_EQ_INT(rs, 0);
	tls_conn_free(cl);
	tls_conn_free(srv);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
	close(sv[0]);
	close(sv[1]);
	tls_cert_unref(sb);
	tls_cert_unref(b);
	ERR_clear_error();
}

TEST(certstore_expiry_renew_due_and_bound)
{
	struct certstore_opts o = { .clock = fake_clock, .max_entries = 2, .lifetime_s = 600 };
	struct spiffe_id x = sid(TD, "a", "x"), y = sid(TD, "a", "y"), z = sid(TD, "a", "z");
	struct seen s = { 0 };

	fake_now = time(NULL);
	struct certstore *cs = certstore_new(mesh_ca(), &o);
	REQUIRE(cs);
	struct tls_cert *cx = certstore_get(cs, &x), *cy = certstore_get(cs, &y);
	REQUIRE(cx && cy);
	CHECK_EQ_INT(tls_cert_not_after(cx) - tls_cert_not_before(cx), 660);
	/* touching x makes y the least recently used; z evicts y */
	tls_cert_unref(certstore_get(cs, &x));
	struct tls_cert *cz = certstore_get(cs, &z);
	REQUIRE(cz);
	CHECK_EQ_INT(certstore_count(cs), 2);
	certstore_foreach(cs, collect, &s);
	CHECK_EQ_INT(s.n, 2);
	CHECK_EQ_STR(s.serial[0], tls_cert_serial_hex(cx));	/* sorted: x, z */
	CHECK_EQ_STR(s.serial[1], tls_cert_serial_hex(cz));
	CHECK(tls_cert_serial_hex(cy)[0] != '\0');	/* evicted, still alive for its holder */

	/* past not_after: expired; renew_due renews both */
	fake_now += 601;
	s.n = 0;
	certstore_foreach(cs, collect, &s);
	CHECK_EQ_INT(s.st[0], CERTSTORE_EXPIRED);
	CHECK_EQ_STR(certstore_state_str(CERTSTORE_EXPIRED), "expired");
	CHECK_EQ_INT(certstore_renew_due(cs), 2);
	CHECK_EQ_INT(certstore_renew_due(cs), 0);
	s.n = 0;
	certstore_foreach(cs, collect, &s);
	CHECK_EQ_INT(s.st[0], CERTSTORE_FRESH);
	CHECK(strcmp(s.serial[0], tls_cert_serial_hex(cx)) != 0);
	CHECK_EQ_INT(certstore_remove(cs, &x), 0);
	CHECK_EQ_INT(certstore_remove(cs, &x), -ENOENT);
	CHECK_EQ_INT(certstore_count(cs), 1);
	tls_cert_unref(cx);
	tls_cert_unref(cy);
	tls_cert_unref(cz);
	certstore_free(cs);
	certstore_free(NULL);
}

/* ---- blocking mode, https client ---- */

struct srv_thread {
	struct tls_conn *srv;
	int rs;
	char got[16];
};

static void *serve(void *arg)
{
	struct srv_thread *t = arg;
	t->rs = tls_conn_handshake(t->srv);
	if (t->rs == 0) {
		ssize_t n = tls_conn_read(t->srv, t->got, sizeof(t->got) - 1);
		if (n > 0)
			tls_conn_write(t->srv, t->got, (size_t)n);
	}
	return NULL;
}

TEST(blocking_fd_mesh_and_https_client)
{
	struct spiffe_id src = sid(TD, "default", "client"), dst = sid(TD, "shop", "cart");
	struct server_certs sc = { .n = 1, .certs = { issue(mesh_ca(), dst) } };
	sc.dflt = tls_cert_ref(sc.certs[0]);
	struct tls_ctx *sctx = server_ctx(mesh_ca(), &sc), *cctx = client_ctx(mesh_ca());
	struct tls_cert *ccert = issue(mesh_ca(), src);
	struct tls_conn_opts co = { .cert = ccert, .sni = &dst, .expect = &dst, .nexpect = 1 };
	struct srv_thread t = { 0 };
	pthread_t th;
	int sv[2];
	char buf[16] = "";

	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);	/* blocking */
	struct tls_conn *cl = tls_conn_new(cctx, sv[0], &co);
	t.srv = tls_conn_new(sctx, sv[1], NULL);
	REQUIRE(cl && t.srv);
	pthread_create(&th, NULL, serve, &t);
	CHECK_EQ_INT(tls_conn_handshake(cl), 0);
	CHECK_EQ_INT(tls_conn_write(cl, "ping", 4), 4);
	CHECK_EQ_INT(tls_conn_read(cl, buf, sizeof(buf)), 4);
	pthread_join(th, NULL);
	CHECK_EQ_INT(t.rs, 0);
	CHECK(memcmp(buf, "ping", 4) == 0);
	tls_conn_free(cl);
	tls_conn_free(t.srv);
	close(sv[0]);
	close(sv[1]);

	/* https client with a CA file: our mesh server has no DNS name, so host verification
	 * refuses it; a missing CA file is named */
	char dir[] = "/tmp/ambit-tls-XXXXXX", crt[64], key[64], err[256];
	REQUIRE(mkdtemp(dir));
	snprintf(crt, sizeof(crt), "%s/ca.crt", dir);
	snprintf(key, sizeof(key), "%s/ca.key", dir);
	CHECK_EQ_INT(tls_ca_write(mesh_ca(), crt, key, err, sizeof(err)), 0);
	CHECK(tls_ctx_new_https_client("/nonexistent.pem", NULL, NULL, "h2", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "/nonexistent.pem") != NULL);
	/* a client certificate needs its key; an unreadable one is named */
	CHECK(tls_ctx_new_https_client(crt, crt, NULL, "h2", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "needs its key") != NULL);
	CHECK(tls_ctx_new_https_client(crt, "/nonexistent.crt", key, "h2", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "/nonexistent.crt") != NULL);
	/* the CA's own cert and key make a pair: loaded and checked against each other */
	struct tls_ctx *hctx = tls_ctx_new_https_client(crt, crt, key, "h2", err, sizeof(err));
	REQUIRE(hctx);
	tls_ctx_free(hctx);
	hctx = tls_ctx_new_https_client(crt, NULL, NULL, "h2", err, sizeof(err));
	REQUIRE(hctx);
	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	struct tls_conn_opts ho = { .hostname = "otel-collector.example" };
	cl = tls_conn_new(hctx, sv[0], &ho);
	memset(&t, 0, sizeof(t));
	t.srv = tls_conn_new(sctx, sv[1], NULL);
	REQUIRE(cl && t.srv);
	pthread_create(&th, NULL, serve, &t);
	CHECK_EQ_INT(tls_conn_handshake(cl), -EACCES);
	CHECK_EQ_STR(tls_conn_reason(cl), "server certificate does not match the host name");
	shutdown(sv[0], SHUT_RDWR);
	pthread_join(th, NULL);
	CHECK(t.rs < 0);
	tls_conn_free(cl);
	tls_conn_free(t.srv);
	close(sv[0]);
	close(sv[1]);
	tls_ctx_free(hctx);
	unlink(crt);
	unlink(key);
	rmdir(dir);

	tls_ctx_free(sctx);
	tls_ctx_free(cctx);
	tls_cert_unref(ccert);
	tls_cert_unref(sc.certs[0]);
	tls_cert_unref(sc.dflt);
	ERR_clear_error();
}

/* ---- trust bundles and root rotation ---- */

/* Loads a verify-only CA from the roots of a and (if not NULL) b, written one after the other
 * in one file: a trust bundle as a mounted ConfigMap holds it. */
static struct tls_ca *bundle_of(struct tls_ca *a, struct tls_ca *b)
{
	char path[] = "/tmp/ambit-bundle-XXXXXX", err[256] = "";
	char *pa = tls_ca_roots_pem(a), *pb = b ? tls_ca_roots_pem(b) : NULL;
	struct tls_ca *ca = NULL;
	int fd = mkstemp(path);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;

	if (f && pa && (!b || pb)) {
		fputs(pa, f);
		if (pb)
			fputs(pb, f);
		fclose(f);
		f = NULL;
		ca = tls_ca_load(path, NULL, err, sizeof(err));
		if (!ca)
			fprintf(stderr, "  bundle: %s\n", err);
	}
	if (f)
		fclose(f);
	if (fd >= 0)
		unlink(path);
	free(pa);
	free(pb);
	return ca;
}

/* One handshake between two given contexts: the client presents ccert and expects dst. */
struct hs {
	int sv[2];
	struct tls_conn *cl, *srv;
	int rc, rs;
};

static void hs_run(struct hs *h, struct tls_ctx *cctx, struct tls_ctx *sctx,
		   struct tls_cert *ccert, const struct spiffe_id *dst)
{
	struct tls_conn_opts co = { .cert = ccert, .sni = dst, .expect = dst, .nexpect = 1 };
	pair(h->sv);
	h->cl = tls_conn_new(cctx, h->sv[0], &co);
	h->srv = tls_conn_new(sctx, h->sv[1], NULL);
	if (!h->cl || !h->srv)
		abort();
	drive(h->cl, h->srv, &h->rc, &h->rs);
}

static void hs_done(struct hs *h)
{
	tls_conn_free(h->cl);
	tls_conn_free(h->srv);
	close(h->sv[0]);
	close(h->sv[1]);
	ERR_clear_error();
}

/* Data both ways over an established pair. */
static bool hs_echo(struct hs *h)
{
	char b[8] = "";
	if (tls_conn_write(h->cl, "ping", 4) != 4 || read_some(h->srv, b, sizeof(b)) != 4 ||
	    memcmp(b, "ping", 4) || tls_conn_write(h->srv, "pong", 4) != 4 ||
	    read_some(h->cl, b, sizeof(b)) != 4 || memcmp(b, "pong", 4))
		return false;
	return true;
}

TEST(bundle_of_two_roots_accepts_both)
{
	struct tls_ca *old = tls_ca_new_self_signed(TD, 3600), *new = tls_ca_new_self_signed(TD, 3600);
	REQUIRE(old && new);
	struct tls_ca *both = bundle_of(old, new);
	REQUIRE(both);
	struct spiffe_id src = sid(TD, "default", "client"), dst = sid(TD, "shop", "cart");
	struct tls_cert *c_old = issue(old, src), *c_new = issue(new, src);
	struct server_certs sc = { .n = 1, .certs = { issue(new, dst) } };
	sc.dflt = tls_cert_ref(sc.certs[0]);
	struct tls_ctx *sctx = server_ctx(both, &sc), *cctx = client_ctx(both);
	REQUIRE(sctx && cctx && c_old && c_new);

	/* clients from either root are accepted; the server's cert (new root) by the client */
	struct hs a = { 0 }, b = { 0 };
	hs_run(&a, cctx, sctx, c_old, &dst);
	CHECK_EQ_INT(a.rc, 0);
	CHECK_EQ_INT(a.rs, 0);
	CHECK(hs_echo(&a));
	hs_run(&b, cctx, sctx, c_new, &dst);
	CHECK_EQ_INT(b.rc, 0);
	CHECK_EQ_INT(b.rs, 0);
	CHECK(hs_echo(&b));
	hs_done(&a);
	hs_done(&b);

	/* a root outside the bundle is still refused */
	struct tls_ca *evil = tls_ca_new_self_signed(TD, 3600);
	struct tls_cert *c_evil = evil ? issue(evil, src) : NULL;
	REQUIRE(c_evil);
	hs_run(&a, cctx, sctx, c_evil, &dst);
	CHECK_EQ_INT(a.rs, -EACCES);
	CHECK_EQ_STR(tls_conn_reason(a.srv), "peer certificate not signed by mesh CA");
	hs_done(&a);

	tls_cert_unref(c_evil);
	tls_ca_free(evil);
	tls_ctx_free(sctx);
	tls_ctx_free(cctx);
	tls_cert_unref(sc.certs[0]);
	tls_cert_unref(sc.dflt);
	tls_cert_unref(c_old);
	tls_cert_unref(c_new);
	tls_ca_free(both);
	tls_ca_free(old);
	tls_ca_free(new);
}

TEST(set_roots_drops_removed_root_for_new_handshakes_only)
{
	struct tls_ca *old = tls_ca_new_self_signed(TD, 3600), *new = tls_ca_new_self_signed(TD, 3600);
	REQUIRE(old && new);
	struct tls_ca *both = bundle_of(old, new), *only_new = bundle_of(new, NULL),
		      *only_old = bundle_of(old, NULL);
	REQUIRE(both && only_new && only_old);
	struct spiffe_id src = sid(TD, "default", "client"), dst = sid(TD, "shop", "cart");
	struct tls_cert *c_old = issue(old, src), *c_new = issue(new, src);
	struct server_certs sc = { .n = 1, .certs = { issue(new, dst) } };
	sc.dflt = tls_cert_ref(sc.certs[0]);
	/* step 1 of a rotation: the server trusts the old root only, then both (added) */
	struct tls_ctx *sctx = server_ctx(only_old, &sc), *cctx = client_ctx(both);
	REQUIRE(sctx && cctx && c_old && c_new);
	struct hs est = { 0 }, h = { 0 };

	hs_run(&h, cctx, sctx, c_new, &dst);
	CHECK_EQ_INT(h.rs, -EACCES);	/* the new root is not trusted yet */
	hs_done(&h);
	CHECK_EQ_INT(tls_ctx_set_roots(sctx, both), 0);
	hs_run(&h, cctx, sctx, c_new, &dst);
	CHECK_EQ_INT(h.rs, 0);
	hs_done(&h);

	/* an established conn from the old root ... */
	hs_run(&est, cctx, sctx, c_old, &dst);
	CHECK_EQ_INT(est.rc, 0);
	CHECK_EQ_INT(est.rs, 0);
	REQUIRE(est.rc == 0 && est.rs == 0);
	CHECK(hs_echo(&est));

	/* step 3: the old root leaves the bundle (client and server side) */
	CHECK_EQ_INT(tls_ctx_set_roots(sctx, only_new), 0);
	CHECK_EQ_INT(tls_ctx_set_roots(cctx, only_new), 0);
	/* ... keeps working */
	CHECK(hs_echo(&est));
	CHECK(hs_echo(&est));
	/* new handshakes: old root refused, new root accepted */
	hs_run(&h, cctx, sctx, c_old, &dst);
	CHECK_EQ_INT(h.rs, -EACCES);
	CHECK_EQ_STR(tls_conn_reason(h.srv), "peer certificate not signed by mesh CA");
	hs_done(&h);
	hs_run(&h, cctx, sctx, c_new, &dst);
	CHECK_EQ_INT(h.rc, 0);
	CHECK_EQ_INT(h.rs, 0);
	CHECK(hs_echo(&h));
	CHECK(hs_echo(&est));
	hs_done(&h);
	/* the client side dropped it too: a server with an old-root cert is refused */
	struct server_certs sc_old = { .n = 1, .certs = { issue(old, dst) } };
	sc_old.dflt = tls_cert_ref(sc_old.certs[0]);
	struct tls_ctx *sctx_old = server_ctx(both, &sc_old);
	REQUIRE(sctx_old);
	hs_run(&h, cctx, sctx_old, c_new, &dst);
	CHECK_EQ_INT(h.rc, -EACCES);
	CHECK_EQ_STR(tls_conn_reason(h.cl), "peer certificate not signed by mesh CA");
	hs_done(&h);

	/* misuse: an https client ctx has no mesh roots to swap */
	struct tls_ctx *https = tls_ctx_new_https_client(NULL, NULL, NULL, NULL, NULL, 0);
	CHECK(https != NULL);
	CHECK_EQ_INT(tls_ctx_set_roots(https, only_new), -EINVAL);
	CHECK_EQ_INT(tls_ctx_set_roots(sctx, NULL), -EINVAL);
	tls_ctx_free(https);

	hs_done(&est);
	tls_ctx_free(sctx_old);
	tls_cert_unref(sc_old.certs[0]);
	tls_cert_unref(sc_old.dflt);
	tls_ctx_free(sctx);
	tls_ctx_free(cctx);
	tls_cert_unref(sc.certs[0]);
	tls_cert_unref(sc.dflt);
	tls_cert_unref(c_old);
	tls_cert_unref(c_new);
	tls_ca_free(both);
	tls_ca_free(only_new);
	tls_ca_free(only_old);
	tls_ca_free(old);
	tls_ca_free(new);
}

static bool keep_first(void *arg, const struct tls_cert *c)
{
	return tls_ca_issued_by_first(arg, c);
}

TEST(certstore_renews_leaves_of_a_root_no_longer_first)
{
	struct tls_ca *old = tls_ca_new_self_signed(TD, 3600), *new = tls_ca_new_self_signed(TD, 3600);
	REQUIRE(old && new);
	struct tls_ca *old_first = bundle_of(old, new), *new_first = bundle_of(new, old);
	REQUIRE(old_first && new_first);
	struct certstore *cs = certstore_new(old, NULL);
	struct spiffe_id a = sid(TD, "shop", "cart"), b = sid(TD, "shop", "pay");
	REQUIRE(cs);
	struct tls_cert *ca1 = certstore_get(cs, &a), *cb1 = certstore_get(cs, &b);
	REQUIRE(ca1 && cb1);
	CHECK(tls_ca_issued_by_first(old_first, ca1));
	CHECK(!tls_ca_issued_by_first(new_first, ca1));
	/* step 1 of a rotation (new root added after the old): nothing to renew */
	CHECK_EQ_INT(certstore_renew_unless(cs, keep_first, old_first), 0);
	struct tls_cert *again = certstore_get(cs, &a);
	CHECK(again == ca1);
	tls_cert_unref(again);
	/* step 2 (the new root first): both leaves are due now, once */
	CHECK_EQ_INT(certstore_renew_unless(cs, keep_first, new_first), 2);
	CHECK_EQ_INT(certstore_renew_unless(cs, keep_first, new_first), 0);
	struct tls_cert *ca2 = certstore_get(cs, &a);
	CHECK(ca2 && ca2 != ca1);	/* re-issued (by this store's CA) */
	tls_cert_unref(ca2);
	certstore_free(cs);
	tls_cert_unref(ca1);
	tls_cert_unref(cb1);
	tls_ca_free(old_first);
	tls_ca_free(new_first);
	tls_ca_free(old);
	tls_ca_free(new);
}

TEST(api_misuse)
{
	struct tls_ctx_opts o = { .roots = mesh_ca() };
	struct tls_ctx *cctx = tls_ctx_new(TLS_ROLE_CLIENT, &o);
	REQUIRE(cctx);
	CHECK(tls_ctx_new(TLS_ROLE_SERVER, &o) == NULL && errno == EINVAL);	/* no cert source */
	CHECK(tls_conn_new(cctx, 0, NULL) == NULL && errno == EINVAL);	/* client: no cert */
	tls_ctx_free(cctx);
	tls_ctx_free(NULL);
	tls_conn_free(NULL);
	tls_cert_unref(NULL);
	tls_ca_free(NULL);
	CHECK_EQ_INT(tls_global_init(), 0);
}

TEST_MAIN("tls")
