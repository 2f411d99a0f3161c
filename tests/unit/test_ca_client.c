// SPDX-License-Identifier: Apache-2.0
/* The agent's CA client (ca/client.c) against an independent server of Istio's certificate
 * API (tests/node/ca_server.js: grpc-js + proto-loader, signing with the openssl CLI): a good
 * chain, what the request carries (token, ImpersonatedIdentity, CSR SAN, validity), refusals,
 * a chain for the wrong identity, an untrusted server, token rotation, and an unreachable CA
 * behind the certstore's backoff until it comes up. */
#include "harness.h"
#include "ca/client.h"
#include "common/util.h"
#include "tls/ca.h"
#include "tls/certstore.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[64];
static char path_buf[16][192];
static int npaths;
static pid_t server_pid = -1;
static uint16_t server_port;
static bool have_node;

/* dir/name, kept for the run. */
static const char *at(const char *name)
{
	char *p = path_buf[npaths++ % 16];
	snprintf(p, sizeof(path_buf[0]), "%s/%s", dir, name);
	return p;
}

static void put(const char *name, const char *text)
{
	char tmp[256];
	FILE *f;
	/* Replace by rename, as kubelet swaps a projected token. */
	snprintf(tmp, sizeof(tmp), "%s.new", at(name));
	f = fopen(tmp, "w");
	if (!f || fputs(text, f) < 0 || fclose(f) || rename(tmp, at(name)))
		abort();
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

/* A root (ca.crt/ca.key) and a serving cert for localhost from it; "other" is a foreign root. */
static bool make_pki(void)
{
	return sh("cd %s && for n in ca other; do openssl req -x509 -newkey ec -pkeyopt "
		  "ec_paramgen_curve:P-256 -nodes -keyout $n.key -out $n.crt -days 2 -subj "
		  "/O=cluster.local/CN=$n -addext basicConstraints=critical,CA:TRUE -addext "
		  "keyUsage=critical,keyCertSign,cRLSign 2>/dev/null || exit 1; done && "
		  "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key "
		  "-out srv.csr -subj /CN=localhost 2>/dev/null && printf "
		  "'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > "
		  "srv.ext && openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -set_serial 7 "
		  "-days 2 -extfile srv.ext -out srv.crt 2>/dev/null", dir) == 0;
}

static void server_stop(void)
{
	if (server_pid <= 0)
		return;
	kill(server_pid, SIGTERM);
	waitpid(server_pid, NULL, 0);
	server_pid = -1;
}

/* Starts the independent CA on port (0 = any); reads its "PORT n" line. */
static bool server_start(uint16_t port)
{
	char ps[8], line[64];
	int pfd[2];
	FILE *f;

	snprintf(ps, sizeof(ps), "%u", port);
	if (pipe(pfd))
		return false;
	pid_t pid = fork();
	if (pid == 0) {
		const char *argv[] = { "node", "tests/node/ca_server.js", "--port", ps,
				       "--cert", at("srv.crt"), "--key", at("srv.key"),
				       "--ca-cert", at("ca.crt"), "--ca-key", at("ca.key"),
				       "--token-file", at("expected-token"), "--mode-file", at("mode"),
				       "--log", at("requests.jsonl"), NULL };
		dup2(pfd[1], 1);
		close(pfd[0]);
		execvp("node", (char *const *)argv);
		_exit(127);
	}
	close(pfd[1]);
	server_pid = pid;
	f = fdopen(pfd[0], "r");
	bool ok = f && fgets(line, sizeof(line), f) && sscanf(line, "PORT %hu", &server_port) == 1;
	if (f)
		fclose(f);
	if (!ok)
		server_stop();
	return ok;
}

static struct ca_client *client_new(const char *bundle, const char *token_file)
{
	char addr[64], err[256] = "";
	snprintf(addr, sizeof(addr), "https://localhost:%u", server_port);
	struct ca_client_opts o = { .address = addr, .bundle = bundle,
				    .token_file = token_file, .timeout_ms = 3000, .impersonate = true };
	struct ca_client *c = ca_client_new(&o, err, sizeof(err));
	if (!c)
		fprintf(stderr, "  ca_client_new: %s\n", err);
	return c;
}

/* The last request the server logged, or NULL. */
static json_t *last_request(void)
{
	FILE *f = fopen(at("requests.jsonl"), "r");
	char *line = NULL;
	size_t cap = 0;
	json_t *j = NULL;
	while (f && getline(&line, &cap, f) > 0) {
		json_decref(j);
		j = json_loads(line, 0, NULL);
	}
	free(line);
	if (f)
		fclose(f);
	return j;
}

static const char *jstr(json_t *j, const char *k)
{
	const char *v = json_string_value(json_object_get(j, k));
	return v ? v : "";
}

__attribute__((constructor)) static void setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	snprintf(dir, sizeof(dir), "/tmp/ambit-ca-client-XXXXXX");
	if (!mkdtemp(dir) || !make_pki())
		return;
	put("token", "token-one\n");
	put("expected-token", "token-one");
	put("mode", "ok");
	have_node = access("tests/node/node_modules/@grpc/proto-loader", F_OK) == 0 &&
		    server_start(0);
	if (!have_node)
		fprintf(stderr, "# node or tests/node/node_modules missing (make test-deps): "
			"the CA client tests are skipped\n");
}

__attribute__((destructor)) static void teardown(void)
{
	server_stop();
	if (dir[0])
		sh("rm -rf %s", dir);
}

static struct spiffe_id sid(const char *ns, const char *sa)
{
	struct spiffe_id id;
	spiffe_id_set(&id, "cluster.local", ns, sa, NULL);
	return id;
}

/* A client with the CA's bundle and the token; NULL when node is missing (the test skips). */
static struct ca_client *client_or_skip(void)
{
	struct ca_client *c = have_node ? client_new(at("ca.crt"), at("token")) : NULL;
	CHECK(c || !have_node);
	return c;
}

/* With the server in mode, a fetch for id fails; its reason holds want. Returns errno. */
static int fetch_fails(struct ca_client *c, const struct spiffe_id *id, const char *mode,
		       const char *want)
{
	char why[512];
	if (mode)
		put("mode", mode);
	errno = 0;
	CHECK(ca_client_fetch(c, id, 3600, why, sizeof(why)) == NULL);
	int e = errno;
	if (!strstr(why, want)) {
		fprintf(stderr, "  reason '%s' lacks '%s'\n", why, want);
		test_failed_now = 1;
	}
	put("mode", "ok");
	return e;
}

TEST(address_parse)
{
	char h[64];
	uint16_t p;
	CHECK_EQ_INT(ca_address_parse("https://istiod.istio-system.svc:15012", h, sizeof(h), &p), 0);
	CHECK_EQ_STR(h, "istiod.istio-system.svc");
	CHECK_EQ_INT(p, 15012);
	CHECK_EQ_INT(ca_address_parse("https://ambit-ca", h, sizeof(h), &p), 0);
	CHECK_EQ_INT(p, CA_DEFAULT_PORT);
	CHECK_EQ_INT(ca_address_parse("https://[fd00::1]:8443", h, sizeof(h), &p), 0);
	CHECK_EQ_STR(h, "fd00::1");
	CHECK_EQ_INT(p, 8443);
	const char *bad[] = { "http://x:1", "https://", "https://:15012", "https://x:0",
			      "https://x:99999", "https://x:12/path", "https://u@x", "https://[::1",
			      "https://[::1]x", "https://x:", "x:15012", NULL };
	for (int i = 0; bad[i]; i++)
		if (ca_address_parse(bad[i], h, sizeof(h), &p) != -EINVAL) {
			fprintf(stderr, "  accepted %s\n", bad[i]);
			test_failed_now = 1;
		}
}

TEST(good_chain_and_what_the_request_carries)
{
	char why[512];
	struct ca_client *c = client_or_skip();
	if (!c)
		return;
	struct spiffe_id id = sid("shop", "cart");
	put("mode", "ok");
	struct tls_cert *cert = ca_client_fetch(c, &id, 3600, why, sizeof(why));
	if (!cert)
		fprintf(stderr, "  %s\n", why);
	REQUIRE(cert);
	CHECK(spiffe_id_equal(tls_cert_id(cert), &id));
	CHECK(tls_cert_not_after(cert) >= time(NULL) + 3500 && tls_cert_not_after(cert) <= time(NULL) + 3600);	/* as asked */
	char pem[8192];
	CHECK(tls_cert_chain_pem(cert, pem, sizeof(pem)) > 0);
	tls_cert_unref(cert);
	json_t *r = last_request();
	REQUIRE(r);
	CHECK_EQ_STR(jstr(r, "authorization"), "Bearer token-one");
	CHECK_EQ_STR(jstr(r, "impersonated"), "spiffe://cluster.local/ns/shop/sa/cart");
	CHECK_EQ_STR(jstr(r, "csr_uri"), "spiffe://cluster.local/ns/shop/sa/cart");
	CHECK_EQ_INT(json_integer_value(json_object_get(r, "validity")), 3600);
	json_decref(r);
	/* A second call reuses the connection and still works. */
	cert = ca_client_fetch(c, &id, 3600, why, sizeof(why));
	CHECK(cert != NULL);
	tls_cert_unref(cert);
	ca_client_free(c);

	/* A waypoint asks for itself: no ImpersonatedIdentity (as Envoy). */
	char addr[64];
	snprintf(addr, sizeof(addr), "https://localhost:%u", server_port);
	struct ca_client_opts o = { .address = addr, .bundle = at("ca.crt"),
				    .token_file = at("token") };
	c = ca_client_new(&o, why, sizeof(why));
	REQUIRE(c);
	cert = ca_client_fetch(c, &id, 3600, why, sizeof(why));
	CHECK(cert != NULL);
	tls_cert_unref(cert);
	r = last_request();
	CHECK(r && json_is_null(json_object_get(r, "impersonated")));
	CHECK_EQ_STR(jstr(r, "csr_uri"), "spiffe://cluster.local/ns/shop/sa/cart");
	json_decref(r);
	ca_client_free(c);
}

TEST(refusals_and_bad_answers)
{
	struct ca_client *c = client_or_skip();
	if (!c)
		return;
	struct spiffe_id id = sid("shop", "cart");

	CHECK_EQ_INT(fetch_fails(c, &id, "refuse", "refused spiffe://cluster.local/ns/shop/sa/cart: "
				 "PERMISSION_DENIED: identity not on the caller's node"), EACCES);
	fetch_fails(c, &id, "unavailable", "UNAVAILABLE: try again later");
	/* A chain for another identity is never used (ztunnel's SanError). */
	int e = fetch_fails(c, &id, "wrong-id", "answer for spiffe://cluster.local/ns/shop/sa/cart "
			    "refused");
	CHECK(e == EINVAL || e == EACCES);
	fetch_fails(c, &id, "wrong-id", "kube-system");
	struct ca_client_stats st;
	ca_client_stats(c, &st);
	CHECK_EQ_INT(st.refused, 2);
	CHECK_EQ_INT(st.bad_answers, 2);
	ca_client_free(c);

	/* A bundle that does not hold the CA's root: its serving cert is not trusted. */
	struct ca_client *o = client_new(at("other.crt"), at("token"));
	REQUIRE(o);
	fetch_fails(o, &id, NULL, "unreachable");
	fetch_fails(o, &id, NULL, "certificate");
	ca_client_free(o);
}

TEST(token_rotation_and_missing_token)
{
	char why[512];
	struct ca_client *c = client_or_skip();
	if (!c)
		return;
	struct spiffe_id id = sid("a", "b");
	struct tls_cert *cert = ca_client_fetch(c, &id, 600, why, sizeof(why));
	CHECK(cert != NULL);
	tls_cert_unref(cert);

	/* kubelet rotates the projected token: the next call sends the new one. */
	put("token", "token-two\n");
	put("expected-token", "token-two");
	cert = ca_client_fetch(c, &id, 600, why, sizeof(why));
	if (!cert)
		fprintf(stderr, "  %s\n", why);
	CHECK(cert != NULL);
	tls_cert_unref(cert);
	json_t *r = last_request();
	CHECK_EQ_STR(jstr(r, "authorization"), "Bearer token-two");
	json_decref(r);
	struct ca_client_stats st;
	ca_client_stats(c, &st);
	CHECK_EQ_INT(st.token_reloads, 1);

	/* An old token is refused by the CA, and says so. */
	put("expected-token", "token-three");
	fetch_fails(c, &id, NULL, "UNAUTHENTICATED");
	put("expected-token", "token-two");
	ca_client_free(c);

	/* No token file: a clear reason, no call made. */
	c = client_new(at("ca.crt"), at("no-such-token"));
	REQUIRE(c);
	CHECK_EQ_INT(fetch_fails(c, &id, NULL, "no-such-token: No such file or directory"), ENOKEY);
	ca_client_free(c);
}

/* A rotation of the root as the agent sees it: the mounted bundle gains the CA's root, later
 * loses it, each time swapped by rename (the ConfigMap's symlink swap). */
TEST(bundle_reload_follows_the_file)
{
	char why[512], both[8192] = "", *ca = NULL, *other = NULL;
	size_t n;
	if (!have_node)
		return;
	REQUIRE((ca = read_file_bounded(at("ca.crt"), 8192, &n)) &&
		(other = read_file_bounded(at("other.crt"), 8192, &n)));
	snprintf(both, sizeof(both), "%s%s", other, ca);
	put("bundle.crt", other);
	struct ca_client *c = client_new(at("bundle.crt"), at("token"));
	REQUIRE(c);
	struct spiffe_id id = sid("a", "b");
	/* the CA's root is not in the bundle: its serving cert is not trusted */
	fetch_fails(c, &id, NULL, "certificate");
	/* added: new connections trust it, and the chain it issues verifies */
	put("bundle.crt", both);
	struct tls_cert *cert = ca_client_fetch(c, &id, 600, why, sizeof(why));
	if (!cert)
		fprintf(stderr, "  %s\n", why);
	CHECK(cert != NULL);
	tls_cert_unref(cert);
	struct ca_client_stats st;
	ca_client_stats(c, &st);
	CHECK_EQ_INT(st.bundle_reloads, 1);
	/* removed again: the open connection is remade and refused */
	put("bundle.crt", other);
	fetch_fails(c, &id, NULL, "certificate");
	/* a bundle that does not load keeps the last good one (still without the CA's root) */
	put("bundle.crt", "not a certificate\n");
	fetch_fails(c, &id, NULL, "certificate");
	ca_client_stats(c, &st);
	CHECK_EQ_INT(st.bundle_reloads, 2);
	ca_client_free(c);
	free(ca);
	free(other);
}

static int updates;
static void count_update(void *arg)
{
	(void)arg;
	__atomic_add_fetch(&updates, 1, __ATOMIC_SEQ_CST);
}

/* A backend that notes when each fetch starts, then asks the real one. */
#define REC_MAX 64
struct rec_backend {
	const struct certstore_backend *real;
	pthread_mutex_t lock;
	int n;
	uint64_t at[REC_MAX];	/* monotonic ms */
};

static struct tls_cert *rec_issue(void *arg, const struct spiffe_id *id, uint32_t lifetime_s,
				  int64_t now, char *why, size_t whylen)
{
	struct rec_backend *rb = arg;
	pthread_mutex_lock(&rb->lock);
	if (rb->n < REC_MAX)
		rb->at[rb->n++] = now_mono_ms();
	pthread_mutex_unlock(&rb->lock);
	return rb->real->issue(rb->real->arg, id, lifetime_s, now, why, whylen);
}

static int rec_count(struct rec_backend *rb)
{
	pthread_mutex_lock(&rb->lock);
	int n = rb->n;
	pthread_mutex_unlock(&rb->lock);
	return n;
}

TEST(unreachable_ca_backs_off_then_serves)
{
	enum { MIN_MS = 100, MAX_MS = 400, ATTEMPTS = 8 };
	char why[512];
	struct ca_client *c = client_or_skip();
	if (!c)
		return;
	uint16_t port = server_port;
	server_stop();	/* the CA goes away */

	struct rec_backend rb = { .real = ca_client_backend(c), .lock = PTHREAD_MUTEX_INITIALIZER };
	struct certstore_backend be = { .issue = rec_issue, .arg = &rb, .name = rb.real->name };
	struct certstore_opts o = { .backend = &be, .async = true,
				    .retry_min_ms = MIN_MS, .retry_max_ms = MAX_MS,
				    .on_update = count_update };
	struct certstore *cs = certstore_new(NULL, &o);
	REQUIRE(cs);
	struct spiffe_id id = sid("shop", "cart");
	CHECK_EQ_INT(certstore_set_wanted(cs, &id, 1), 0);
	/* a generous bound: about 2 s on an idle machine, the check is the shape, not the speed */
	uint64_t end = now_mono_ms() + 60000;
	while (rec_count(&rb) < ATTEMPTS && now_mono_ms() < end)
		usleep(20 * 1000);
	REQUIRE(rec_count(&rb) >= ATTEMPTS);
	struct certstore_stats st;
	certstore_stats(cs, &st);
	CHECK(st.failures >= ATTEMPTS - 1);
	CHECK_EQ_INT(st.without_cert, 1);
	CHECK(strstr(st.last_error, "unreachable") != NULL);
	CHECK(certstore_get(cs, &id) == NULL);
	certstore_reason(cs, &id, why, sizeof(why));
	CHECK(strstr(why, "unreachable") != NULL);

	/* The shape, from when the attempts started. Retry i waits 50-100 % of MIN_MS doubling
	 * up to MAX_MS: each gap is at least half its step (a slow machine only makes gaps
	 * longer, never shorter), so the gaps grow and there is no busy loop. The cap: without
	 * it the last two gaps would be at least 1600 and 3200 ms; with it they are at most
	 * 400 ms plus scheduling delay, so the smaller of them stays under 1600 ms. */
	pthread_mutex_lock(&rb.lock);
	uint64_t gap[ATTEMPTS - 1];
	for (int i = 0; i < ATTEMPTS - 1; i++) {
		uint64_t step = MIN_MS << i, capped = step < MAX_MS ? step : MAX_MS;
		gap[i] = rb.at[i + 1] - rb.at[i];
		printf("#   retry %d after %llu ms (step %llu ms)\n", i + 1,
		       (unsigned long long)gap[i], (unsigned long long)capped);
		CHECK(gap[i] >= capped / 2);
	}
	pthread_mutex_unlock(&rb.lock);
	uint64_t last = MIN(gap[ATTEMPTS - 2], gap[ATTEMPTS - 3]);
	CHECK(last < ((uint64_t)MIN_MS << (ATTEMPTS - 3)) / 2);

	/* Back on the same port: a later retry gets the certificate. */
	REQUIRE(server_start(port));
	struct tls_cert *cert = NULL;
	end = now_mono_ms() + 60000;
	while (!(cert = certstore_get(cs, &id)) && now_mono_ms() < end)
		usleep(50 * 1000);
	CHECK(cert != NULL);
	tls_cert_unref(cert);
	certstore_stats(cs, &st);
	CHECK_EQ_INT(st.without_cert, 0);
	CHECK_EQ_INT(st.failing, 0);
	certstore_free(cs);
	ca_client_free(c);
}

TEST_MAIN("ca_client")
