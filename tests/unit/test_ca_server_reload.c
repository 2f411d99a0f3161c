// SPDX-License-Identifier: Apache-2.0
/* Unit tests of ambit-ca without restarts: the checks a new ca.cert/ca.key pair must pass
 * (key, validity), the poll of a Kubernetes-style Secret volume (..data symlink swaps: a good
 * pair is taken once, a mismatched or expired one refused and counted, the current one kept),
 * the serving certificate's renewal time, the serving.* keys, and over the real gRPC server
 * and client with TLS: after a key switch a renewed serving certificate from the new key reaches
 * new handshakes while an open connection keeps working (test_ca_server.c: the next
 * CreateCertificate is signed with the new key). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/workloads.h"
#include "ca/config.h"
#include "ca/msg.h"
#include "ca/reload.h"
#include "ca/service.h"
#include "common/util.h"
#include "grpc/client.h"
#include "grpc/server.h"
#include "harness.h"
#include "tls/ca.h"
#include "tls/csr.h"
#include "tls/ctx.h"

#define TD "cluster.local"

static const char *tmpdir;

/* A Secret volume as the kubelet writes it: dir/..vN/{ca.crt,ca.key}, dir/..data -> ..vN,
 * dir/ca.crt -> ..data/ca.crt, dir/ca.key -> ..data/ca.key; a new version swaps ..data by
 * rename. cert_of and key_of may differ (a mismatched pair). 0 or -1. */
static int secret_write(const char *dir, int version, const struct tls_ca *cert_of,
			const struct tls_ca *key_of)
{
	char v[256], crt[320], key[320], tmp[320], link[320], err[256], scratch[320];

	snprintf(v, sizeof(v), "%s/..v%d", dir, version);
	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		return -1;
	if (mkdir(v, 0700) == -1)
		return -1;
	snprintf(crt, sizeof(crt), "%s/ca.crt", v);
	snprintf(key, sizeof(key), "%s/ca.key", v);
	if (tls_ca_write(cert_of, crt, key, err, sizeof(err)))
		return -1;
	if (key_of != cert_of) {	/* the other CA's key replaces this one's */
		snprintf(scratch, sizeof(scratch), "%s/other", v);
		char okey[340];
		snprintf(okey, sizeof(okey), "%s/other.key", v);
		if (tls_ca_write(key_of, scratch, okey, err, sizeof(err)) || rename(okey, key) == -1)
			return -1;
	}
	snprintf(tmp, sizeof(tmp), "%s/..data_tmp", dir);
	snprintf(link, sizeof(link), "%s/..data", dir);
	snprintf(v, sizeof(v), "..v%d", version);
	if (symlink(v, tmp) == -1 || rename(tmp, link) == -1)
		return -1;
	snprintf(crt, sizeof(crt), "%s/ca.crt", dir);
	snprintf(key, sizeof(key), "%s/ca.key", dir);
	if (version == 1 && (symlink("..data/ca.crt", crt) == -1 ||
			     symlink("..data/ca.key", key) == -1))
		return -1;
	return 0;
}

/* Whether a and b publish the same roots. */
static bool same_roots(const struct tls_ca *a, const struct tls_ca *b)
{
	char *pa = tls_ca_roots_pem(a), *pb = tls_ca_roots_pem(b);
	bool same = pa && pb && strcmp(pa, pb) == 0;
	free(pa);
	free(pb);
	return same;
}

TEST(reload_validate)
{
	int64_t now = time(NULL);
	char err[256], crt[128], key[128];
	struct tls_ca *ca = tls_ca_new_self_signed(TD, 3600);

	REQUIRE(ca);
	CHECK_EQ_INT(ca_reload_validate(ca, now, err, sizeof(err)), 0);
	CHECK_EQ_INT(ca_reload_validate(ca, now + 3700, err, sizeof(err)), -EKEYEXPIRED);
	CHECK(strstr(err, "expired"));
	CHECK_EQ_INT(ca_reload_validate(ca, now - 600, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "not valid for another"));
	/* a certificate without its key cannot sign */
	snprintf(crt, sizeof(crt), "%s/v.crt", tmpdir);
	snprintf(key, sizeof(key), "%s/v.key", tmpdir);
	REQUIRE(tls_ca_write(ca, crt, key, err, sizeof(err)) == 0);
	struct tls_ca *vo = tls_ca_load(crt, NULL, err, sizeof(err));
	REQUIRE(vo);
	CHECK_EQ_INT(ca_reload_validate(vo, now, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "no signing key"));
	tls_ca_free(vo);
	/* references: the last free frees */
	CHECK(tls_ca_ref(ca) == ca);
	tls_ca_free(ca);
	CHECK_EQ_INT(ca_reload_validate(ca, now, err, sizeof(err)), 0);
	tls_ca_free(ca);
	CHECK(tls_ca_ref(NULL) == NULL);
}

TEST(reload_poll_secret_volume)
{
	char dir[128], crt[160], key[160], err[512];
	struct tls_ca *a = tls_ca_new_self_signed(TD, 3600), *b = tls_ca_new_self_signed(TD, 3600);
	struct tls_ca *short_lived = tls_ca_new_self_signed(TD, 100), *got = NULL;
	struct ca_reload r;
	int64_t now = time(NULL);

	REQUIRE(a && b && short_lived);
	snprintf(dir, sizeof(dir), "%s/secret", tmpdir);
	snprintf(crt, sizeof(crt), "%s/ca.crt", dir);
	snprintf(key, sizeof(key), "%s/ca.key", dir);
	REQUIRE(secret_write(dir, 1, a, a) == 0);
	REQUIRE(ca_reload_init(&r, crt, key) == 0);
	CHECK_EQ_INT(ca_reload_poll(&r, now, &got, err, sizeof(err)), 0);
	CHECK(!got);
	/* a new good pair: taken once */
	REQUIRE(secret_write(dir, 2, b, b) == 0);
	CHECK_EQ_INT(ca_reload_poll(&r, now, &got, err, sizeof(err)), 1);
	CHECK(got && same_roots(got, b) && !same_roots(got, a));
	tls_ca_free(got);
	got = NULL;
	CHECK_EQ_INT(ca_reload_poll(&r, now, &got, err, sizeof(err)), 0);
	CHECK_EQ_INT(r.reloads, 1);
	/* a certificate with another CA's key: refused, counted, not tried again unchanged */
	REQUIRE(secret_write(dir, 3, a, b) == 0);
	CHECK_EQ_INT(ca_reload_poll(&r, now, &got, err, sizeof(err)), -EINVAL);
	CHECK(!got);
	CHECK(strstr(err, "key does not match"));
	CHECK_EQ_INT(r.errors, 1);
	CHECK_EQ_INT(ca_reload_poll(&r, now, &got, err, sizeof(err)), 0);
	/* an expired pair (checked at a later now): refused */
	REQUIRE(secret_write(dir, 4, short_lived, short_lived) == 0);
	CHECK_EQ_INT(ca_reload_poll(&r, now + 200, &got, err, sizeof(err)), -EKEYEXPIRED);
	CHECK_EQ_INT(r.errors, 2);
	/* not a certificate at all */
	char junk[200];
	snprintf(junk, sizeof(junk), "%s/..v4/ca.crt", dir);
	FILE *f = fopen(junk, "w");
	REQUIRE(f);
	fputs("not a PEM file\n", f);
	fclose(f);
	CHECK(ca_reload_poll(&r, now, &got, err, sizeof(err)) < 0);
	CHECK(strstr(err, "no PEM certificate"));
	CHECK_EQ_INT(r.errors, 3);
	/* the files gone: refused, once */
	unlink(crt);
	CHECK(ca_reload_poll(&r, now, &got, err, sizeof(err)) < 0);
	CHECK_EQ_INT(ca_reload_poll(&r, now, &got, err, sizeof(err)), 0);
	CHECK_EQ_INT(r.errors, 4);
	/* back with a good pair */
	REQUIRE(symlink("..data/ca.crt", crt) == 0);
	REQUIRE(secret_write(dir, 5, a, a) == 0);
	CHECK_EQ_INT(ca_reload_poll(&r, now, &got, err, sizeof(err)), 1);
	CHECK(got && same_roots(got, a));
	CHECK_EQ_INT(r.reloads, 2);
	tls_ca_free(got);
	tls_ca_free(a);
	tls_ca_free(b);
	tls_ca_free(short_lived);
}

TEST(serving_due)
{
	CHECK_EQ_INT(ca_reload_serving_due(1000, 2000, 0.5), 1500);
	CHECK_EQ_INT(ca_reload_serving_due(1000, 2000, 0.8), 1800);
	CHECK_EQ_INT(ca_reload_serving_due(1000, 900, 0.5), 1000);	/* expired: now */
}

static int config_from(const char *json, struct ca_config *c, char *err, size_t len)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/ca.json", tmpdir);
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	fputs(json, f);
	fclose(f);
	if (ca_config_init(c))
		return -1;
	return ca_config_load(c, path, err, len);
}

TEST(serving_config_keys)
{
	struct ca_config c;
	char err[512];

	REQUIRE(ca_config_init(&c) == 0);
	CHECK_EQ_INT(c.serving_lifetime_s, 365 * 24 * 3600);
	CHECK(c.serving_renew_fraction == 0.5);
	ca_config_fini(&c);
	CHECK_EQ_INT(config_from("{\"serving\": {\"lifetime_s\": 20, \"renew_fraction\": 0.25}}",
				 &c, err, sizeof(err)), 0);
	CHECK_EQ_INT(c.serving_lifetime_s, 20);
	CHECK(c.serving_renew_fraction == 0.25);
	json_t *j = ca_config_to_json(&c);
	CHECK(j && json_integer_value(json_object_get(json_object_get(j, "serving"),
						      "lifetime_s")) == 20);
	json_decref(j);
	ca_config_fini(&c);
	CHECK_EQ_INT(config_from("{\"serving\": {\"lifetime_s\": 5}}", &c, err, sizeof(err)),
		     -EINVAL);
	CHECK(strstr(err, "serving.lifetime_s"));
	ca_config_fini(&c);
	CHECK_EQ_INT(config_from("{\"serving\": {\"renew_fraction\": 1.5}}", &c, err, sizeof(err)),
		     -EINVAL);
	CHECK(strstr(err, "serving.renew_fraction"));
	ca_config_fini(&c);
	CHECK_EQ_INT(config_from("{\"serving\": {\"renew_at\": 1}}", &c, err, sizeof(err)), -EINVAL);
	ca_config_fini(&c);
}

/* ---- over the wire ---- */

struct wire {
	struct ca_config cfg;
	struct tls_ca *a, *b;
	struct tls_ctx *tls;
	struct ca_service *svc;
	struct grpc_server *srv;
	char a_pem[128], b_pem[128];
};

static struct grpc_client *wire_client(struct wire *w, const char *ca_file)
{
	char err[256];
	struct grpc_client_opts co = { .host = "127.0.0.1", .port = grpc_server_port(w->srv),
				       .tls = true, .ca_file = ca_file };
	return grpc_client_new(&co, err, sizeof(err));
}

/* A call of another method (answered UNIMPLEMENTED before any token check): whether the TLS
 * handshake succeeds. Returns the gRPC status, or -1 when the call could not be made (the
 * client refused the server's certificate). */
static int wire_call(struct grpc_client *cli)
{
	struct grpc_result res;
	struct grpc_header h[1] = { { "authorization", "Bearer x.y.z" } };
	int st;

	if (grpc_client_call(cli, "/istio.v1.auth.IstioCertificateService/Other", h, 1, NULL, 0,
			     5000, NULL, &res))
		return -1;
	st = res.status;
	grpc_result_fini(&res);
	return st;
}

TEST(serving_renewed_for_new_handshakes)
{
	struct wire w;
	char err[256], key[160];
	int64_t issued0, after0, issued1, after1;

	memset(&w, 0, sizeof(w));
	REQUIRE(ca_config_init(&w.cfg) == 0);
	w.a = tls_ca_new_self_signed(TD, 30 * 86400);
	w.b = tls_ca_new_self_signed(TD, 30 * 86400);
	REQUIRE(w.a && w.b);
	snprintf(w.a_pem, sizeof(w.a_pem), "%s/a.crt", tmpdir);
	snprintf(key, sizeof(key), "%s/a.key", tmpdir);
	REQUIRE(tls_ca_write(w.a, w.a_pem, key, err, sizeof(err)) == 0);
	snprintf(w.b_pem, sizeof(w.b_pem), "%s/b.crt", tmpdir);
	snprintf(key, sizeof(key), "%s/b.key", tmpdir);
	REQUIRE(tls_ca_write(w.b, w.b_pem, key, err, sizeof(err)) == 0);
	const char *names[] = { "127.0.0.1" };
	REQUIRE((w.tls = tls_ctx_new_https_server(w.a, names, 1, 20, err, sizeof(err))));
	/* a short lifetime counts from issuance: due at half of it, not at once */
	REQUIRE(tls_ctx_https_server_validity(w.tls, &issued0, &after0) == 0);
	CHECK(after0 - issued0 == 20);
	CHECK_EQ_INT(ca_reload_serving_due(issued0, after0, 0.5), issued0 + 10);
	REQUIRE((w.svc = ca_service_new(&w.cfg, w.a, NULL, NULL)));
	struct grpc_server_opts so = { .listen = "127.0.0.1:0", .tls = w.tls,
				       .handler = ca_service_handle, .arg = w.svc };
	REQUIRE((w.srv = grpc_server_start(&so, err, sizeof(err))));

	struct grpc_client *old = wire_client(&w, w.a_pem);
	REQUIRE(old);
	CHECK_EQ_INT(wire_call(old), GRPC_STATUS_UNIMPLEMENTED);	/* connected, answered */
	struct grpc_client *b_first = wire_client(&w, w.b_pem);
	CHECK_EQ_INT(wire_call(b_first), -1);	/* the serving cert is not from b yet */
	grpc_client_free(b_first);

	/* the key switch: the service signs with b, the serving certificate comes from b */
	ca_service_set_ca(w.svc, w.b);
	tls_ca_free(w.b);	/* the service's reference keeps it */
	CHECK_EQ_INT(tls_ctx_https_server_renew(w.tls, w.b, 3600, err, sizeof(err)), 0);
	REQUIRE(tls_ctx_https_server_validity(w.tls, &issued1, &after1) == 0);
	CHECK(after1 - issued1 == 3600);
	struct grpc_client *by_b = wire_client(&w, w.b_pem), *by_a = wire_client(&w, w.a_pem);
	REQUIRE(by_b && by_a);
	CHECK_EQ_INT(wire_call(by_b), GRPC_STATUS_UNIMPLEMENTED);
	CHECK_EQ_INT(wire_call(by_a), -1);	/* a new handshake gets the new certificate */
	CHECK_EQ_INT(wire_call(old), GRPC_STATUS_UNIMPLEMENTED);	/* the open one stays */

	/* an expired CA cannot renew it: the current certificate stays */
	struct tls_ca *dying = tls_ca_new_self_signed(TD, 1);
	REQUIRE(dying);
	sleep(2);
	CHECK_EQ_INT(tls_ctx_https_server_renew(w.tls, dying, 3600, err, sizeof(err)),
		     -EKEYEXPIRED);
	CHECK(strstr(err, "expired"));
	tls_ca_free(dying);
	struct grpc_client *by_b2 = wire_client(&w, w.b_pem);
	CHECK_EQ_INT(wire_call(by_b2), GRPC_STATUS_UNIMPLEMENTED);
	grpc_client_free(by_b2);
	CHECK_EQ_INT(tls_ctx_https_server_renew(NULL, w.a, 60, err, sizeof(err)), -EINVAL);

	grpc_client_free(by_a);
	grpc_client_free(by_b);
	grpc_client_free(old);
	grpc_server_stop(w.srv);
	ca_service_free(w.svc);
	tls_ctx_free(w.tls);
	tls_ca_free(w.a);
	ca_config_fini(&w.cfg);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	tmpdir = test_tmpdir("careload-test");
	return test_main("ca_server_reload");
}
