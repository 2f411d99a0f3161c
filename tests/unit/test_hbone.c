// SPDX-License-Identifier: Apache-2.0
/* Unit tests of agent/hbone.c on one loop with real TLS and sockets: an outbound listener
 * (standing in for 15001) -> pooled HBONE client -> 15008 server -> TCP upstream (an echo
 * server or a socket the test drives), with certificates from a test CA. */
#include "harness.h"
#include "agent/conn.h"
#include "agent/hbone.h"
#include "agent/loop.h"
#include "common/util.h"
#include "tls/ca.h"
#include "tls/certstore.h"
#include "tls/ctx.h"
#include "tls/tls_int.h"	/* the interop peer needs its leaf key as a PEM file */

#include <openssl/pem.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define TD "cluster.local"

__attribute__((constructor)) static void ignore_sigpipe(void)
{
	signal(SIGPIPE, SIG_IGN);
}

static struct spiffe_id sid(const char *ns, const char *sa)
{
	struct spiffe_id id;
	if (spiffe_id_set(&id, TD, ns, sa, NULL))
		abort();
	return id;
}

static struct sockaddr_storage loopback(uint16_t port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin->sin_port = htons(port);
	return ss;
}

static int listen_any(struct sockaddr_storage *out)
{
	struct sockaddr_storage ss = loopback(0);
	socklen_t len = sizeof(ss);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)) || listen(fd, 512) ||
	    getsockname(fd, (struct sockaddr *)out, &len))
		abort();
	return fd;
}

static int dial(const struct sockaddr_storage *ss)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (connect(fd, (const struct sockaddr *)ss, sizeof(struct sockaddr_in)))
		abort();
	return fd;
}

/* ------------------------------------------------------------ echo thread ---- */

struct echo {
	int lfd;
	struct sockaddr_storage addr;
	pthread_t th;
	volatile int stop;
};

static void *echo_main(void *arg)
{
	struct echo *e = arg;
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = e->lfd }, evs[64];
	static __thread char buf[65536];

	epoll_ctl(ep, EPOLL_CTL_ADD, e->lfd, &ev);
	while (!e->stop) {
		int n = epoll_wait(ep, evs, 64, 50);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == e->lfd) {
				int c = accept4(e->lfd, NULL, NULL, SOCK_CLOEXEC);
				struct epoll_event ce = { .events = EPOLLIN, .data.fd = c };
				if (c >= 0)
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
				continue;
			}
			ssize_t r = read(fd, buf, sizeof(buf));
			if (r > 0) {
				for (ssize_t off = 0; off < r;) {
					ssize_t w = write(fd, buf + off, (size_t)(r - off));
					if (w <= 0)
						break;
					off += w;
				}
				continue;
			}
			/* EOF: pass the half-close back; error: drop */
			epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
			if (r == 0)
				shutdown(fd, SHUT_WR);
			close(fd);
		}
	}
	close(ep);
	return NULL;
}

/* -------------------------------------------------------------------- rig ---- */

struct closed_rec {
	int count;
	int err;
	char flag[8];
	char reason[512];
};

struct rig {
	struct loop *l;
	pthread_t th;
	struct tls_ca *ca, *ca2;
	struct certstore *cs, *cs2;
	struct tls_ctx *sctx, *cctx;
	struct hbone_server *srv;
	struct hbone_pool *pool, *pool2;	/* pool2: client certs from another CA */
	bool use_pool2;
	struct hbone_pool *use_pool;	/* when set, outbound conns go here */
	int out_lfd;
	struct loop_io out_io;
	struct sockaddr_storage out_addr, hbone_addr;
	struct echo echo;
	int up_lfd;
	struct sockaddr_storage up_addr;
	/* what outbound conns ask for */
	struct spiffe_id src, sni, expect;
	char authority[64];
	int up_sndbuf;		/* SO_SNDBUF of the inbound side's upstream sockets, 0 = default */
	/* pod-addressed HBONE: the server's second listener, standing in for a pod's IP:15008
	 * (a plain socket: its local address is what the client dialled) */
	struct sockaddr_storage pod_addr;
	bool no_sni;				/* outbound: ztunnel's form */
	struct sockaddr_storage key_src;	/* outbound: pool key part when family set */
	int pod_refused, refusals;		/* pod_cert said no; on_refused calls */
	bool pod_gone;				/* pod_cert refuses everything */
	bool in_pod;				/* the last inbound CONNECT was pod-addressed */
	/* results, written on the loop thread */
	struct closed_rec out_closed, in_closed;
	int inbound_seen;
	int inbound_to_up;	/* on_connect calls for up_addr */
	/* holding (the agent waiting for its model): on_connect returns -EINPROGRESS while hold
	 * is set, the server ctx's cert_wait holds handshakes while hs_hold is; what they saw */
	int hold, hs_hold;
	uint64_t last_held_ms, last_hs_waited_ms;
	int hs_asked;
	char in_traceparent[128], in_peer[SPIFFE_ID_STR_MAX], in_local[SPIFFE_ID_STR_MAX];
};

static struct rig *R;

static void on_closed(struct conn *c, int err, const char *flag, const char *reason)
{
	struct closed_rec *r = conn_info(c)->kind == CONN_OUTBOUND ? &R->out_closed : &R->in_closed;
	r->err = err;
	snprintf(r->flag, sizeof(r->flag), "%s", flag ? flag : "");
	snprintf(r->reason, sizeof(r->reason), "%s", reason ? reason : "");
	__atomic_add_fetch(&r->count, 1, __ATOMIC_RELEASE);
}

static void out_accept(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct conn_opts co = { .buffer_size = 65536 };
	(void)io;
	(void)events;
	for (;;) {
		int fd = accept4(R->out_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		struct conn *c = conn_new(l, &co);
		struct conn_end *down = conn_tcp_end_new(l, fd, false);
		struct hbone_header hdr[] = { { "traceparent",
						"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
					      { "baggage", "k8s.namespace.name=client" } };
		struct hbone_request req = {
			.source = &R->src, .dst = R->hbone_addr, .expect = &R->expect, .nexpect = 1,
			.sni = &R->sni, .authority = R->authority, .headers = hdr, .nheaders = 2,
			.no_sni = R->no_sni, .key_src = R->key_src.ss_family ? &R->key_src : NULL,
		};
		conn_info(c)->kind = CONN_OUTBOUND;
		conn_attach(c, CONN_DOWN, down);
		conn_tcp_end_start(down);
		conn_opened(c);
		int rc = hbone_connect(R->use_pool ? R->use_pool : R->use_pool2 ? R->pool2 : R->pool,
				       &req, c);
		if (rc)
			conn_abort(c, CONN_UP, rc, CONN_FLAG_UPSTREAM_CONNECT_FAILURE, "hbone_connect");
	}
}

static int on_connect(void *arg, const struct hbone_inbound *req)
{
	struct rig *r = arg;
	struct conn_opts co = { .buffer_size = 65536 };
	struct sockaddr_in *t = (struct sockaddr_in *)&req->target;
	struct conn *c;
	struct conn_end *up;
	int fd;

	r->inbound_seen++;
	if (sockaddr_port(&req->target) == sockaddr_port(&r->up_addr))
		r->inbound_to_up++;
	r->last_held_ms = req->held_ms;
	if (__atomic_load_n(&r->hold, __ATOMIC_ACQUIRE))
		return -EINPROGRESS;
	r->in_pod = req->pod_addressed;
	snprintf(r->in_traceparent, sizeof(r->in_traceparent), "%s",
		 req->traceparent ? req->traceparent : "");
	if (req->peer_id)
		spiffe_id_str(req->peer_id, r->in_peer);
	if (req->local_id)
		spiffe_id_str(req->local_id, r->in_local);
	if (t->sin_family != AF_INET || t->sin_addr.s_addr != htonl(INADDR_LOOPBACK))
		return hbone_stream_respond(req->end, 403, "authority is not a local workload");
	c = conn_new(r->l, &co);
	conn_info(c)->kind = CONN_INBOUND_HBONE;
	conn_attach(c, CONN_DOWN, req->end);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (r->up_sndbuf)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &r->up_sndbuf, sizeof(r->up_sndbuf));
	if (connect(fd, (const struct sockaddr *)&req->target, sizeof(struct sockaddr_in)) &&
	    errno != EINPROGRESS) {
		close(fd);
		conn_abort(c, CONN_UP, -errno, CONN_FLAG_UPSTREAM_CONNECT_FAILURE, "connect");
		return 0;
	}
	up = conn_tcp_end_new(r->l, fd, true);
	conn_attach(c, CONN_UP, up);
	conn_tcp_end_start(up);
	conn_opened(c);
	conn_arm_connect_timeout(c, 5000);
	return 0;
}

static void *loop_main(void *arg)
{
	loop_run(arg);
	return NULL;
}

/* Runs fn(arg) on the loop thread and waits for it. */
struct call {
	void (*fn)(void *);
	void *arg;
	int done;
};

static void call_task(struct loop *l, void *arg)
{
	struct call *c = arg;
	(void)l;
	c->fn(c->arg);
	__atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
}

static void on_loop(void (*fn)(void *), void *arg)
{
	struct call c = { fn, arg, 0 };
	loop_post(R->l, call_task, &c);
	while (!__atomic_load_n(&c.done, __ATOMIC_ACQUIRE))
		usleep(1000);
}

static struct tls_ca *the_ca, *other_ca;

__attribute__((destructor)) static void free_cas(void)
{
	tls_ca_free(the_ca);
	tls_ca_free(other_ca);
}

/* The certstores' wall clock: real time plus a skew a test moves (certs are issued at the
 * skewed time, so only a skew into the past keeps them valid for the real-time TLS checks). */
static int64_t clock_skew_s;

static int64_t skewed_clock(void *arg)
{
	(void)arg;
	return (int64_t)time(NULL) + __atomic_load_n(&clock_skew_s, __ATOMIC_ACQUIRE);
}

static struct tls_cert *select_cert(void *arg, const struct spiffe_id *id)
{
	struct spiffe_id server = sid("server", "echo");
	/* Like the agent: only identities it hosts (here one) are served. */
	if (id && !spiffe_id_equal(id, &server))
		return NULL;
	return certstore_get(arg, &server);
}

/* The pod behind the pod-addressed listener: its certificate for its own address, none else. */
static struct tls_cert *pod_cert(void *arg, const struct sockaddr_storage *dialed,
				 const struct sockaddr_storage *peer)
{
	struct rig *r = arg;
	struct spiffe_id pod = sid("pod", "web");
	(void)peer;
	if (r->pod_gone || !sockaddr_ip_equal(dialed, &r->pod_addr) ||
	    sockaddr_port(dialed) != sockaddr_port(&r->pod_addr)) {
		r->pod_refused++;
		return NULL;
	}
	return certstore_get(r->cs, &pod);
}

/* The agent's cert_wait stand-in: holds every named identity while R->hs_hold is set. */
static bool rig_cert_wait(void *arg, const struct spiffe_id *id, uint64_t waited_ms)
{
	(void)arg, (void)id;
	R->hs_asked++;
	R->last_hs_waited_ms = waited_ms;
	return __atomic_load_n(&R->hs_hold, __ATOMIC_ACQUIRE) != 0;
}

static void on_refused(void *arg, bool pod, int err, const char *reason)
{
	struct rig *r = arg;
	(void)pod, (void)err, (void)reason;
	r->refusals++;
}

static void rig_start(struct rig *r, const struct hbone_opts *copts, const struct hbone_opts *sopts)
{
	struct conn_hooks h = { .closed = on_closed };
	memset(r, 0, sizeof(*r));
	R = r;
	conn_set_hooks(&h);
	if (!the_ca)
		the_ca = tls_ca_new_self_signed(TD, 365 * 24 * 3600);
	if (!other_ca)
		other_ca = tls_ca_new_self_signed(TD, 365 * 24 * 3600);
	r->ca = the_ca;
	r->ca2 = other_ca;
	struct certstore_opts cso = { .clock = skewed_clock };
	r->cs = certstore_new(r->ca, &cso);
	r->cs2 = certstore_new(r->ca2, &cso);
	struct tls_ctx_opts so = { .roots = r->ca, .trust_domain = TD, .select_cert = select_cert,
				   .cert_wait = rig_cert_wait, .select_arg = r->cs };
	struct tls_ctx_opts co = { .roots = r->ca, .trust_domain = TD };
	r->sctx = tls_ctx_new(TLS_ROLE_SERVER, &so);
	r->cctx = tls_ctx_new(TLS_ROLE_CLIENT, &co);
	r->l = loop_new();
	struct sockaddr_storage any = loopback(0);
	struct hbone_server_cbs cbs = { .on_connect = on_connect, .pod_cert = pod_cert,
					.on_refused = on_refused, .arg = r };
	r->srv = hbone_server_new(r->l, &any, r->sctx, &cbs, sopts);
	hbone_server_addr(r->srv, &r->hbone_addr);
	int pfd = listen_any(&r->pod_addr);
	fd_set_nonblock(pfd);
	if (hbone_server_listen_pod(r->srv, pfd))
		abort();
	r->pool = hbone_pool_new(r->l, r->cctx, r->cs, copts);
	r->pool2 = hbone_pool_new(r->l, r->cctx, r->cs2, copts);
	r->out_lfd = listen_any(&r->out_addr);
	fd_set_nonblock(r->out_lfd);
	loop_io_init(&r->out_io, r->out_lfd, out_accept, r);
	loop_io_set(r->l, &r->out_io, EPOLLIN);
	r->echo.lfd = listen_any(&r->echo.addr);
	pthread_create(&r->echo.th, NULL, echo_main, &r->echo);
	r->up_lfd = listen_any(&r->up_addr);
	r->src = sid("client", "sleep");
	r->sni = r->expect = sid("server", "echo");
	snprintf(r->authority, sizeof(r->authority), "127.0.0.1:%u", sockaddr_port(&r->echo.addr));
	pthread_create(&r->th, NULL, loop_main, r->l);
}

static void teardown_on_loop(void *arg)
{
	struct rig *r = arg;
	hbone_pool_free(r->pool);
	hbone_pool_free(r->pool2);
	hbone_server_free(r->srv);
	loop_io_del(r->l, &r->out_io);
}

static void rig_stop(struct rig *r)
{
	on_loop(teardown_on_loop, r);
	loop_stop(r->l);
	pthread_join(r->th, NULL);
	loop_free(r->l);
	r->echo.stop = 1;
	pthread_join(r->echo.th, NULL);
	close(r->echo.lfd);
	close(r->out_lfd);
	close(r->up_lfd);
	tls_ctx_free(r->sctx);
	tls_ctx_free(r->cctx);
	certstore_free(r->cs);
	certstore_free(r->cs2);
	CHECK_EQ_INT(conn_count(), 0);
}

static bool wait_count(int *cnt, int want)
{
	for (int i = 0; i < 3000; i++) {	/* 30 s: generous, it returns once there */
		if (__atomic_load_n(cnt, __ATOMIC_ACQUIRE) >= want)
			return true;
		usleep(10000);
	}
	fprintf(stderr, "  timed out waiting for %d (have %d)\n", want, *cnt);
	return false;
}

static ssize_t read_full(int fd, void *buf, size_t n, int timeout_ms)
{
	size_t got = 0;
	while (got < n) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, timeout_ms) != 1)
			return got ? (ssize_t)got : -ETIMEDOUT;
		ssize_t r = read(fd, (char *)buf + got, n - got);
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

static int accept_up(struct rig *r)
{
	struct pollfd p = { .fd = r->up_lfd, .events = POLLIN };
	if (poll(&p, 1, 5000) != 1)
		return -1;
	return accept4(r->up_lfd, NULL, NULL, SOCK_CLOEXEC);
}

struct stats_req {
	struct hbone_stats pool, srv;
};

static void stats_on_loop(void *arg)
{
	struct stats_req *s = arg;
	hbone_pool_stats(R->pool, &s->pool);
	hbone_server_stats(R->srv, &s->srv);
}

/* ------------------------------------------------------------------ tests ---- */

TEST(bytes_both_ways_and_half_close)
{
	struct rig r;
	char buf[64];
	rig_start(&r, NULL, NULL);
	snprintf(r.authority, sizeof(r.authority), "127.0.0.1:%u", sockaddr_port(&r.up_addr));
	int cl = dial(&r.out_addr);
	CHECK_EQ_INT(write(cl, "hello", 5), 5);
	int up = accept_up(&r);
	REQUIRE(up >= 0);
	CHECK_EQ_INT(read_full(up, buf, 5, 5000), 5);
	CHECK(memcmp(buf, "hello", 5) == 0);
	CHECK_EQ_STR(r.in_traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
	CHECK_EQ_STR(r.in_peer, "spiffe://cluster.local/ns/client/sa/sleep");
	CHECK_EQ_STR(r.in_local, "spiffe://cluster.local/ns/server/sa/echo");
	/* client half-closes; the upstream sees EOF and still talks back */
	shutdown(cl, SHUT_WR);
	CHECK_EQ_INT(read_full(up, buf, sizeof(buf), 5000), 0);
	CHECK_EQ_INT(write(up, "world", 5), 5);
	CHECK_EQ_INT(read_full(cl, buf, 5, 5000), 5);
	CHECK(memcmp(buf, "world", 5) == 0);
	CHECK_EQ_INT(r.out_closed.count, 0);
	/* the other direction closes: everything ends cleanly */
	shutdown(up, SHUT_WR);
	CHECK_EQ_INT(read_full(cl, buf, sizeof(buf), 5000), 0);
	CHECK(wait_count(&r.out_closed.count, 1));
	CHECK(wait_count(&r.in_closed.count, 1));
	CHECK_EQ_INT(r.out_closed.err, 0);
	CHECK_EQ_INT(r.in_closed.err, 0);
	/* the pooled connection stays for the next stream */
	struct stats_req s;
	on_loop(stats_on_loop, &s);
	CHECK_EQ_INT(s.pool.conns, 1);
	CHECK_EQ_INT(s.pool.streams, 0);
	close(cl);
	close(up);
	rig_stop(&r);
}

TEST(reset_propagates_both_ways)
{
	struct rig r;
	char buf[8];
	struct linger lg = { 1, 0 };
	rig_start(&r, NULL, NULL);
	snprintf(r.authority, sizeof(r.authority), "127.0.0.1:%u", sockaddr_port(&r.up_addr));

	/* upstream RST -> RST_STREAM -> the client sees a reset */
	int cl = dial(&r.out_addr);
	CHECK_EQ_INT(write(cl, "x", 1), 1);
	int up = accept_up(&r);
	REQUIRE(up >= 0);
	CHECK_EQ_INT(read_full(up, buf, 1, 5000), 1);
	setsockopt(up, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(up);
	CHECK_EQ_INT(read_full(cl, buf, sizeof(buf), 5000), -ECONNRESET);
	CHECK(wait_count(&r.out_closed.count, 1));
	CHECK_EQ_STR(r.out_closed.flag, CONN_FLAG_UPSTREAM_RESET);
	CHECK(strstr(r.out_closed.reason, "reset by peer") != NULL);
	close(cl);

	/* client RST -> RST_STREAM -> the upstream sees a reset */
	cl = dial(&r.out_addr);
	CHECK_EQ_INT(write(cl, "y", 1), 1);
	up = accept_up(&r);
	REQUIRE(up >= 0);
	CHECK_EQ_INT(read_full(up, buf, 1, 5000), 1);
	setsockopt(cl, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(cl);
	CHECK_EQ_INT(read_full(up, buf, sizeof(buf), 5000), -ECONNRESET);
	CHECK(wait_count(&r.in_closed.count, 2));
	CHECK_EQ_STR(r.in_closed.flag, CONN_FLAG_DOWNSTREAM_RESET);
	close(up);
	rig_stop(&r);
}

static void streams_round(struct rig *r, int nstreams)
{
	int *fds = calloc((size_t)nstreams, sizeof(int));
	char msg[32], buf[32];
	for (int i = 0; i < nstreams; i++) {
		fds[i] = dial(&r->out_addr);
		int n = snprintf(msg, sizeof(msg), "stream %d", i);
		CHECK_EQ_INT(write(fds[i], msg, (size_t)n), n);
	}
	/* all are open at once: check each echo, then the pool */
	for (int i = 0; i < nstreams; i++) {
		int n = snprintf(msg, sizeof(msg), "stream %d", i);
		CHECK_EQ_INT(read_full(fds[i], buf, (size_t)n, 5000), n);
		CHECK(memcmp(buf, msg, (size_t)n) == 0);
	}
	struct stats_req s;
	on_loop(stats_on_loop, &s);
	CHECK_EQ_INT(s.pool.streams, nstreams);
	CHECK_EQ_INT(s.srv.streams, nstreams);
	for (int i = 0; i < nstreams; i++) {
		shutdown(fds[i], SHUT_WR);
		CHECK_EQ_INT(read_full(fds[i], buf, sizeof(buf), 5000), 0);
		close(fds[i]);
	}
	free(fds);
}

TEST(concurrent_streams_share_one_connection)
{
	struct rig r;
	struct hbone_opts o = { .max_streams = 256 };
	struct stats_req s;
	rig_start(&r, &o, NULL);
	streams_round(&r, 200);
	on_loop(stats_on_loop, &s);
	CHECK_EQ_INT(s.pool.conns, 1);
	CHECK_EQ_INT(s.pool.conns_total, 1);
	CHECK_EQ_INT(s.pool.streams_total, 200);
	CHECK_EQ_INT(s.srv.conns, 1);
	CHECK(wait_count(&r.out_closed.count, 200));
	CHECK_EQ_INT(r.out_closed.err, 0);
	rig_stop(&r);
}

TEST(full_connections_open_another)
{
	struct rig r;
	struct hbone_opts o = { .max_streams = 100 };
	struct stats_req s;
	rig_start(&r, &o, NULL);
	streams_round(&r, 200);
	on_loop(stats_on_loop, &s);
	CHECK_EQ_INT(s.pool.conns, 2);
	CHECK_EQ_INT(s.srv.conns, 2);
	CHECK(wait_count(&r.out_closed.count, 200));
	rig_stop(&r);
}

static void expect_refused(struct rig *r, const char *flag, const char *needle)
{
	char buf[8];
	int cl = dial(&r->out_addr);
	CHECK_EQ_INT(write(cl, "x", 1), 1);
	ssize_t n = read_full(cl, buf, sizeof(buf), 5000);
	CHECK(n == 0 || n == -ECONNRESET);
	CHECK(wait_count(&r->out_closed.count, 1));
	CHECK_EQ_STR(r->out_closed.flag, flag);
	if (!strstr(r->out_closed.reason, needle))
		fprintf(stderr, "  reason \"%s\" lacks \"%s\"\n", r->out_closed.reason, needle);
	CHECK(strstr(r->out_closed.reason, needle) != NULL);
	close(cl);
}

TEST(wrong_server_identity_refused)
{
	struct rig r;
	rig_start(&r, NULL, NULL);
	r.expect = sid("other", "db");	/* SNI still asks for the real server */
	expect_refused(&r, CONN_FLAG_UPSTREAM_CONNECT_FAILURE, "expected spiffe://cluster.local/ns/other/sa/db");
	CHECK_EQ_INT(r.inbound_seen, 0);
	rig_stop(&r);
}

TEST(client_cert_from_another_ca_refused)
{
	struct rig r;
	rig_start(&r, NULL, NULL);
	r.use_pool2 = true;
	expect_refused(&r, CONN_FLAG_UPSTREAM_CONNECT_FAILURE, "peer rejected our certificate");
	CHECK_EQ_INT(r.inbound_seen, 0);
	rig_stop(&r);
}

TEST(non_local_authority_refused_with_403)
{
	struct rig r;
	rig_start(&r, NULL, NULL);
	snprintf(r.authority, sizeof(r.authority), "10.9.8.7:80");
	/* 401 and 403 are the destination's refusals (policy): the source side says DENY */
	expect_refused(&r, CONN_FLAG_DENIED, "status 403: authority is not a local workload");
	CHECK_EQ_INT(r.inbound_seen, 1);
	rig_stop(&r);
}

TEST(upstream_refused_answers_503)
{
	struct rig r;
	struct sockaddr_storage dead;
	rig_start(&r, NULL, NULL);
	int fd = listen_any(&dead);
	close(fd);	/* nothing listens there now */
	snprintf(r.authority, sizeof(r.authority), "127.0.0.1:%u", sockaddr_port(&dead));
	expect_refused(&r, CONN_FLAG_UPSTREAM_CONNECT_FAILURE, "status 503: upstream: Connection refused");
	rig_stop(&r);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Sends total bytes through fd and reads the echo back, checking every byte. */
static size_t pump_echo(int fd, size_t total, double *mbps)
{
	uint8_t *out = malloc(total), *in = malloc(total);
	size_t sent = 0, got = 0;
	uint64_t t0 = mono_ms();
	for (size_t i = 0; i < total; i++)
		out[i] = (uint8_t)(i * 2654435761u >> 13);
	fd_set_nonblock(fd);
	while (got < total) {
		struct pollfd p = { fd, POLLIN | (sent < total ? POLLOUT : 0), 0 };
		if (poll(&p, 1, 10000) <= 0)
			break;
		if (p.revents & POLLOUT) {
			ssize_t w = write(fd, out + sent, MIN((size_t)262144, total - sent));
			if (w > 0)
				sent += (size_t)w;
			if (sent == total)
				shutdown(fd, SHUT_WR);
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(fd, in + got, total - got);
			if (n <= 0)
				break;
			got += (size_t)n;
		}
	}
	uint64_t dt = mono_ms() - t0;
	*mbps = dt ? (double)total * 2 * 8 / 1e6 / ((double)dt / 1000) : 0;
	if (got == total && memcmp(in, out, total) != 0)
		got = 0;
	free(in);
	free(out);
	return got;
}

TEST(transfer_16mib_byte_for_byte)
{
	struct rig r;
	double mbps;
	char b;
	rig_start(&r, NULL, NULL);
	int cl = dial(&r.out_addr);
	CHECK_EQ_INT(pump_echo(cl, 16u << 20, &mbps), 16u << 20);
	CHECK_EQ_INT(read_full(cl, &b, 1, 5000), 0);
	printf("# 16 MiB echoed through HBONE: %.0f Mbit/s (both directions counted)\n", mbps);
	close(cl);
	CHECK(wait_count(&r.out_closed.count, 1));
	CHECK_EQ_INT(r.out_closed.err, 0);
	rig_stop(&r);
}

/* HBONE_BENCH_MIB=256 [HBONE_BENCH_WINDOW=bytes]: a bigger echo for throughput figures. */
TEST(bench_optional)
{
	const char *mib = getenv("HBONE_BENCH_MIB"), *win = getenv("HBONE_BENCH_WINDOW");
	struct rig r;
	struct hbone_opts o = { .window = win ? (uint32_t)atoi(win) : 0 };
	double mbps;
	if (!mib)
		return;
	rig_start(&r, &o, &o);
	int cl = dial(&r.out_addr);
	size_t total = (size_t)atoi(mib) << 20;
	CHECK_EQ_INT(pump_echo(cl, total, &mbps), total);
	printf("# %s MiB echoed, window %s: %.0f Mbit/s (both directions counted)\n", mib,
	       win ? win : "default", mbps);
	close(cl);
	CHECK(wait_count(&r.out_closed.count, 1));
	rig_stop(&r);
}

TEST(slow_reader_is_bounded_by_the_window)
{
	struct rig r;
	struct hbone_opts o = { .window = 256 * 1024 };
	struct stats_req s;
	enum { TOTAL = 64 << 20 };
	rig_start(&r, &o, &o);
	snprintf(r.authority, sizeof(r.authority), "127.0.0.1:%u", sockaddr_port(&r.up_addr));
	int cl = dial(&r.out_addr);
	int up = accept_up(&r);
	REQUIRE(up >= 0);
	/* The upstream does not read: the client writes until everything stalls. */
	uint8_t *out = malloc(TOTAL), *in = malloc(TOTAL);
	for (size_t i = 0; i < TOTAL; i++)
		out[i] = (uint8_t)(i * 2654435761u >> 11);
	fd_set_nonblock(cl);
	size_t sent = 0;
	for (int idle = 0; idle < 50 && sent < TOTAL;) {
		ssize_t w = write(cl, out + sent, TOTAL - sent);
		if (w > 0) {
			sent += (size_t)w;
			idle = 0;
		} else {
			usleep(10000);
			idle++;
		}
	}
	CHECK(sent < TOTAL);	/* backpressure reached the client */
	on_loop(stats_on_loop, &s);
	printf("# stalled after %zu bytes; held in HBONE overflow: client %zu, server %zu\n", sent,
	       s.pool.buffered, s.srv.buffered);
	CHECK(s.srv.buffered <= 256 * 1024);
	CHECK(s.pool.buffered <= 256 * 1024);
	/* Another stream on the same connection still flows. */
	snprintf(r.authority, sizeof(r.authority), "127.0.0.1:%u", sockaddr_port(&r.echo.addr));
	int cl2 = dial(&r.out_addr);
	char buf[4];
	CHECK_EQ_INT(write(cl2, "ping", 4), 4);
	CHECK_EQ_INT(read_full(cl2, buf, 4, 5000), 4);
	on_loop(stats_on_loop, &s);
	CHECK_EQ_INT(s.pool.conns, 1);
	close(cl2);
	/* Now read everything: nothing was lost. */
	size_t got = 0;
	while (got < TOTAL) {
		if (sent < TOTAL) {
			ssize_t w = write(cl, out + sent, TOTAL - sent);
			if (w > 0)
				sent += (size_t)w;
		}
		struct pollfd p = { up, POLLIN, 0 };
		if (poll(&p, 1, 5000) != 1)
			break;
		ssize_t n = read(up, in + got, TOTAL - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	CHECK_EQ_INT(got, TOTAL);
	CHECK(memcmp(in, out, TOTAL) == 0);
	free(in);
	free(out);
	close(cl);
	close(up);
	rig_stop(&r);
}

/* A TCP relay between the pool and the server that can stop forwarding (a dead path). */
struct relay {
	int lfd;
	struct sockaddr_storage addr, to;
	pthread_t th;
	volatile int freeze, stop;
};

static void *relay_main(void *arg)
{
	struct relay *rl = arg;
	char buf[65536];
	struct pollfd p = { rl->lfd, POLLIN, 0 };
	if (poll(&p, 1, 5000) != 1)
		return NULL;
	int a = accept4(rl->lfd, NULL, NULL, SOCK_CLOEXEC), b = dial(&rl->to);
	while (!rl->stop) {
		struct pollfd ps[2] = { { a, POLLIN, 0 }, { b, POLLIN, 0 } };
		if (rl->freeze) {
			usleep(10000);
			continue;
		}
		if (poll(ps, 2, 50) <= 0)
			continue;
		for (int i = 0; i < 2; i++) {
			if (!ps[i].revents)
				continue;
			ssize_t n = read(ps[i].fd, buf, sizeof(buf));
			if (n <= 0)
				goto out;
			if (write(i ? a : b, buf, (size_t)n) != n)
				goto out;
		}
	}
out:
	close(a);
	close(b);
	return NULL;
}

TEST(dead_peer_detected_by_ping)
{
	struct rig r;
	struct relay rl = { 0 };
	/* a timeout well above what a loaded machine stalls, so only the freeze trips it */
	struct hbone_opts o = { .ping_interval_ms = 100, .ping_timeout_ms = 1000 };
	char buf[8];
	rig_start(&r, &o, NULL);
	rl.lfd = listen_any(&rl.addr);
	rl.to = r.hbone_addr;
	r.hbone_addr = rl.addr;
	pthread_create(&rl.th, NULL, relay_main, &rl);
	int cl = dial(&r.out_addr);
	CHECK_EQ_INT(write(cl, "abc", 3), 3);
	CHECK_EQ_INT(read_full(cl, buf, 3, 5000), 3);
	usleep(2500 * 1000);	/* pings flow and are answered: alive past two timeouts */
	CHECK_EQ_INT(r.out_closed.count, 0);
	rl.freeze = 1;
	CHECK_EQ_INT(read_full(cl, buf, sizeof(buf), 30000), -ECONNRESET);
	CHECK(wait_count(&r.out_closed.count, 1));
	CHECK_EQ_STR(r.out_closed.flag, CONN_FLAG_UPSTREAM_RESET);
	CHECK(strstr(r.out_closed.reason, "peer not answering pings") != NULL);
	rl.stop = 1;
	pthread_join(rl.th, NULL);
	close(rl.lfd);
	close(cl);
	rig_stop(&r);
}

static void drain_srv_on_loop(void *arg)
{
	hbone_server_drain(arg);
}

TEST(server_drain_lets_streams_finish_and_idle_pool_closes)
{
	struct rig r;
	struct hbone_opts o = { .idle_timeout_ms = 300 };
	struct stats_req s;
	char buf[16];
	rig_start(&r, &o, NULL);
	snprintf(r.authority, sizeof(r.authority), "127.0.0.1:%u", sockaddr_port(&r.up_addr));
	int cl = dial(&r.out_addr);
	CHECK_EQ_INT(write(cl, "before", 6), 6);
	int up = accept_up(&r);
	REQUIRE(up >= 0);
	CHECK_EQ_INT(read_full(up, buf, 6, 5000), 6);
	on_loop(drain_srv_on_loop, r.srv);
	usleep(1300 * 1000);	/* shutdown notice, then the final GOAWAY */
	/* the open stream still carries bytes both ways and closes cleanly */
	CHECK_EQ_INT(write(cl, "after", 5), 5);
	CHECK_EQ_INT(read_full(up, buf, 5, 5000), 5);
	CHECK_EQ_INT(write(up, "back", 4), 4);
	CHECK_EQ_INT(read_full(cl, buf, 4, 5000), 4);
	/* a new stream cannot land: the listener is closed, the old connection refuses more */
	int cl2 = dial(&r.out_addr);
	/* (the reset may come before the write: on a loaded machine it often does) */
	ssize_t n = write(cl2, "x", 1);
	if (n == 1)
		n = read_full(cl2, buf, sizeof(buf), 5000);
	else
		n = -errno;
	CHECK(n == 0 || n == -ECONNRESET || n == -EPIPE);
	CHECK(wait_count(&r.out_closed.count, 1));
	CHECK_EQ_STR(r.out_closed.flag, CONN_FLAG_UPSTREAM_CONNECT_FAILURE);
	close(cl2);
	shutdown(cl, SHUT_WR);
	CHECK_EQ_INT(read_full(up, buf, sizeof(buf), 5000), 0);
	shutdown(up, SHUT_WR);
	CHECK_EQ_INT(read_full(cl, buf, sizeof(buf), 5000), 0);
	CHECK(wait_count(&r.out_closed.count, 2));
	CHECK_EQ_INT(r.out_closed.err, 0);
	/* the drained server connection and the idle pool connection close (30 s bound) */
	for (int i = 0; i < 3000; i++) {
		on_loop(stats_on_loop, &s);
		if (!s.srv.conns && !s.pool.conns)
			break;
		usleep(10000);
	}
	CHECK_EQ_INT(s.srv.conns, 0);
	CHECK_EQ_INT(s.pool.conns, 0);
	close(cl);
	close(up);
	rig_stop(&r);
}

/* ------------------------------------------------- certificate renewal ---- */

struct sess_seen {
	int n;
	struct {
		bool server;
		enum hbone_sess_st st;
		uint32_t streams;
		char serial[TLS_SERIAL_HEX_MAX];
	} s[8];
};

static void sess_visit(const struct hbone_conn_info *ci, void *arg)
{
	struct sess_seen *v = arg;
	if (v->n >= (int)ARRAY_SIZE(v->s))
		return;
	v->s[v->n].server = ci->server;
	v->s[v->n].st = ci->state;
	v->s[v->n].streams = ci->streams;
	snprintf(v->s[v->n].serial, sizeof(v->s[v->n].serial), "%s",
		 ci->cert_serial ? ci->cert_serial : "");
	v->n++;
}

static void pool_sessions_on_loop(void *arg)
{
	memset(arg, 0, sizeof(struct sess_seen));
	hbone_pool_foreach(R->pool, sess_visit, arg);
}

static int current_serial_cb(const struct certstore_info *info, void *arg)
{
	struct spiffe_id src = sid("client", "sleep");
	if (spiffe_id_equal(info->id, &src))
		snprintf(arg, TLS_SERIAL_HEX_MAX, "%s", info->serial_hex);
	return 0;
}

/* Polls the pool (on the loop thread) until it has want sessions; generous, not a timing. */
static bool wait_pool_sessions(struct sess_seen *v, int want)
{
	for (int i = 0; i < 1000; i++) {
		on_loop(pool_sessions_on_loop, v);
		if (v->n == want)
			return true;
		usleep(10000);
	}
	fprintf(stderr, "  timed out waiting for %d pooled sessions (have %d)\n", want, v->n);
	return false;
}

TEST(renewed_cert_drains_the_old_connection_and_opens_a_new_one)
{
	struct rig r;
	struct sess_seen v;
	struct stats_req s;
	char buf[16], old_serial[TLS_SERIAL_HEX_MAX], cur[TLS_SERIAL_HEX_MAX] = "";
	/* Certs issued 13 h "ago": valid now, past half-life once the clock is put right. */
	__atomic_store_n(&clock_skew_s, -13 * 3600, __ATOMIC_RELEASE);
	rig_start(&r, NULL, NULL);
	snprintf(r.authority, sizeof(r.authority), "127.0.0.1:%u", sockaddr_port(&r.up_addr));
	int cl1 = dial(&r.out_addr);
	CHECK_EQ_INT(write(cl1, "one", 3), 3);
	int up1 = accept_up(&r);
	REQUIRE(up1 >= 0);
	CHECK_EQ_INT(read_full(up1, buf, 3, 5000), 3);
	on_loop(pool_sessions_on_loop, &v);
	REQUIRE(v.n == 1);
	CHECK(v.s[0].serial[0] != '\0');
	snprintf(old_serial, sizeof(old_serial), "%s", v.s[0].serial);

	/* Renewal is due: the next stream renews the cert and gets a new connection with it. */
	__atomic_store_n(&clock_skew_s, 0, __ATOMIC_RELEASE);
	int cl2 = dial(&r.out_addr);
	CHECK_EQ_INT(write(cl2, "two", 3), 3);
	int up2 = accept_up(&r);
	REQUIRE(up2 >= 0);
	CHECK_EQ_INT(read_full(up2, buf, 3, 5000), 3);
	certstore_foreach(r.cs, current_serial_cb, cur);
	CHECK(strcmp(cur, old_serial) != 0);
	on_loop(pool_sessions_on_loop, &v);
	REQUIRE(v.n == 2);
	for (int i = 0; i < v.n; i++) {
		CHECK_EQ_INT(v.s[i].streams, 1);
		if (!strcmp(v.s[i].serial, old_serial)) {
			CHECK_EQ_STR(hbone_sess_st_to_str(v.s[i].st), "draining");
		} else {
			CHECK_EQ_STR(v.s[i].serial, cur);
			CHECK_EQ_STR(hbone_sess_st_to_str(v.s[i].st), "ready");
		}
	}
	CHECK(strcmp(v.s[0].serial, v.s[1].serial) != 0);
	on_loop(stats_on_loop, &s);
	CHECK_EQ_INT(s.srv.conns, 2);

	/* The old connection still carries its stream both ways. */
	CHECK_EQ_INT(write(cl1, "more", 4), 4);
	CHECK_EQ_INT(read_full(up1, buf, 4, 5000), 4);
	CHECK(memcmp(buf, "more", 4) == 0);
	CHECK_EQ_INT(write(up1, "back", 4), 4);
	CHECK_EQ_INT(read_full(cl1, buf, 4, 5000), 4);
	CHECK(memcmp(buf, "back", 4) == 0);
	CHECK_EQ_INT(r.out_closed.count, 0);

	/* Its last stream ends cleanly, then it closes; the new one stays. */
	shutdown(cl1, SHUT_WR);
	CHECK_EQ_INT(read_full(up1, buf, sizeof(buf), 5000), 0);
	shutdown(up1, SHUT_WR);
	CHECK_EQ_INT(read_full(cl1, buf, sizeof(buf), 5000), 0);
	CHECK(wait_count(&r.out_closed.count, 1));
	CHECK_EQ_INT(r.out_closed.err, 0);
	CHECK(wait_pool_sessions(&v, 1));
	CHECK_EQ_STR(v.s[0].serial, cur);

	/* The next stream joins the new connection. */
	int cl3 = dial(&r.out_addr);
	CHECK_EQ_INT(write(cl3, "three", 5), 5);
	int up3 = accept_up(&r);
	REQUIRE(up3 >= 0);
	CHECK_EQ_INT(read_full(up3, buf, 5, 5000), 5);
	on_loop(stats_on_loop, &s);
	CHECK_EQ_INT(s.pool.conns, 1);
	CHECK_EQ_INT(s.pool.conns_total, 2);
	CHECK_EQ_INT(s.pool.streams, 2);
	/* cl2 still flows after all that */
	CHECK_EQ_INT(write(cl2, "two!", 4), 4);
	CHECK_EQ_INT(read_full(up2, buf, 4, 5000), 4);
	close(cl1);
	close(up1);
	close(cl2);
	close(up2);
	close(cl3);
	close(up3);
	rig_stop(&r);
}

/* --------------------------------------------------- bounded buffering ---- */

struct held_req {
	struct hbone_stats srv;
	size_t in_conns;	/* bytes inbound conns hold for their upstream sockets */
	int nconns;
};

static void held_visit(struct conn *c, void *arg)
{
	struct held_req *h = arg;
	if (conn_info(c)->kind != CONN_INBOUND_HBONE)
		return;
	h->in_conns += conn_out_pending(c, CONN_UP);
	h->nconns++;
}

static void held_on_loop(void *arg)
{
	struct held_req *h = arg;
	memset(h, 0, sizeof(*h));
	hbone_server_stats(R->srv, &h->srv);
	conn_foreach(held_visit, h);
}

/* Many streams whose upstreams do not read: the server holds at most its connection window
 * (plus a frame per stream), not streams x (stream window + conn buffer). */
TEST(slow_readers_hold_at_most_the_connection_window)
{
	enum { N = 32, WIN = 256 * 1024, CONN_WIN = 1024 * 1024, PER = 2 << 20 };
	struct rig r;
	struct hbone_opts o = { .window = WIN, .conn_window = CONN_WIN, .max_streams = 64 };
	struct held_req h;
	struct stats_req s;
	int cl[N], up[N], small = 4096;
	size_t sent[N] = { 0 }, got[N] = { 0 };
	uint8_t *data = malloc(PER), *in = malloc(PER);

	for (size_t i = 0; i < PER; i++)
		data[i] = (uint8_t)(i * 2654435761u >> 9);
	rig_start(&r, &o, &o);
	r.up_sndbuf = small;	/* keep the kernel from soaking up what we want to count */
	setsockopt(r.up_lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	snprintf(r.authority, sizeof(r.authority), "127.0.0.1:%u", sockaddr_port(&r.up_addr));
	for (int i = 0; i < N; i++) {
		cl[i] = dial(&r.out_addr);
		fd_set_nonblock(cl[i]);
	}
	for (int i = 0; i < N; i++) {
		up[i] = accept_up(&r);
		REQUIRE(up[i] >= 0);
		fd_set_nonblock(up[i]);
	}
	/* Write on every stream until nothing moves (the upstreams read nothing). */
	for (int idle = 0; idle < 50;) {
		bool moved = false;
		for (int i = 0; i < N; i++) {
			if (sent[i] == PER)
				continue;
			ssize_t w = write(cl[i], data + sent[i], MIN((size_t)65536, PER - sent[i]));
			if (w > 0) {
				sent[i] += (size_t)w;
				moved = true;
			}
		}
		if (moved) {
			idle = 0;
		} else {
			usleep(10000);
			idle++;
		}
	}
	on_loop(held_on_loop, &h);
	printf("# %d slow streams: server holds %zu B in overflow + %zu B in conns, %zu B "
	       "unconsumed (connection window %d)\n", N, h.srv.buffered, h.in_conns,
	       h.srv.unconsumed, CONN_WIN);
	CHECK_EQ_INT(h.nconns, N);
	CHECK_EQ_INT(h.srv.conns, 1);
	/* Really filled (the counters are not trivially zero), and bounded. */
	CHECK(h.srv.buffered + h.in_conns >= CONN_WIN / 4);
	CHECK(h.srv.buffered + h.in_conns <= CONN_WIN + N * 16384);
	CHECK(h.srv.unconsumed <= CONN_WIN);
	CHECK(h.srv.unconsumed >= h.srv.buffered + h.in_conns);

	/* The readers wake up: every byte arrives, in order, on every stream. */
	for (int idle = 0; idle < 500;) {
		bool moved = false, done = true;
		for (int i = 0; i < N; i++) {
			if (sent[i] < PER) {
				ssize_t w = write(cl[i], data + sent[i], PER - sent[i]);
				if (w > 0) {
					sent[i] += (size_t)w;
					moved = true;
				}
			}
			ssize_t n = read(up[i], in, PER);
			if (n > 0) {
				if (memcmp(in, data + got[i], (size_t)n) != 0) {
					fprintf(stderr, "  stream %d: bytes differ at %zu\n", i, got[i]);
					idle = 500;
				}
				got[i] += (size_t)n;
				moved = true;
			}
			done &= got[i] == PER;
		}
		if (done)
			break;
		if (moved) {
			idle = 0;
		} else {
			usleep(10000);
			idle++;
		}
	}
	for (int i = 0; i < N; i++) {
		CHECK_EQ_INT(got[i], PER);
		close(cl[i]);
		close(up[i]);
	}
	CHECK(wait_count(&r.out_closed.count, N));
	on_loop(stats_on_loop, &s);
	CHECK_EQ_INT(s.srv.unconsumed, 0);
	CHECK_EQ_INT(s.srv.buffered, 0);
	free(data);
	free(in);
	rig_stop(&r);
}

TEST(inbound_connections_beyond_max_sessions_are_refused)
{
	struct rig r;
	struct hbone_opts co = { .max_streams = 1 }, so = { .max_sessions = 2 };
	struct stats_req s;
	int cl[3];
	char buf[8];
	rig_start(&r, &co, &so);
	/* one stream per pooled connection: three streams want three connections */
	for (int i = 0; i < 2; i++) {
		cl[i] = dial(&r.out_addr);
		CHECK_EQ_INT(write(cl[i], "ab", 2), 2);
		CHECK_EQ_INT(read_full(cl[i], buf, 2, 5000), 2);
	}
	/* Its stream is opened on accept; the refusal may reset it before we could write. */
	cl[2] = dial(&r.out_addr);
	ssize_t n = read_full(cl[2], buf, sizeof(buf), 5000);
	CHECK(n == 0 || n == -ECONNRESET);
	CHECK(wait_count(&r.out_closed.count, 1));
	CHECK_EQ_STR(r.out_closed.flag, CONN_FLAG_UPSTREAM_CONNECT_FAILURE);
	on_loop(stats_on_loop, &s);
	CHECK_EQ_INT(s.srv.conns, 2);
	CHECK_EQ_INT(s.srv.refused_total, 1);
	/* the admitted ones are untouched */
	for (int i = 0; i < 2; i++) {
		CHECK_EQ_INT(write(cl[i], "cd", 2), 2);
		CHECK_EQ_INT(read_full(cl[i], buf, 2, 5000), 2);
		CHECK(memcmp(buf, "cd", 2) == 0);
	}
	for (int i = 0; i < 3; i++)
		close(cl[i]);
	rig_stop(&r);
}

/* One echo round trip through the outbound listener; 0 when it came back intact. */
static int echo_once(struct rig *r, const char *msg)
{
	char buf[32];
	size_t n = strlen(msg);
	int cl = dial(&r->out_addr), ok;

	ok = write(cl, msg, n) == (ssize_t)n && read_full(cl, buf, n, 5000) == (ssize_t)n &&
	     memcmp(buf, msg, n) == 0;
	shutdown(cl, SHUT_WR);
	read_full(cl, buf, sizeof(buf), 5000);
	close(cl);
	return ok ? 0 : -1;
}

/* ztunnel's form: no SNI, the server's certificate chosen by the address dialled (the pod's),
 * the CONNECT marked pod-addressed; the client pools per (source, destination, source pod
 * address); a dialled address with no pod behind it is refused before TLS. */
TEST(pod_addressed_no_sni_cert_by_dialled_address)
{
	struct rig r;
	struct stats_req s;
	rig_start(&r, NULL, NULL);
	r.hbone_addr = r.pod_addr;
	r.no_sni = true;
	r.expect = sid("pod", "web");
	r.key_src = loopback(0);
	CHECK_EQ_INT(echo_once(&r, "one"), 0);
	CHECK(r.in_pod);
	CHECK_EQ_STR(r.in_local, "spiffe://cluster.local/ns/pod/sa/web");
	CHECK_EQ_INT(echo_once(&r, "two"), 0);	/* same key: the pooled connection */
	on_loop(stats_on_loop, &s);
	CHECK_EQ_INT(s.pool.conns_total, 1);
	/* another source pod address: a connection of its own */
	sockaddr_parse("127.0.0.2", 0, &r.key_src);
	CHECK_EQ_INT(echo_once(&r, "three"), 0);
	on_loop(stats_on_loop, &s);
	CHECK_EQ_INT(s.pool.conns_total, 2);
	CHECK_EQ_INT(s.srv.conns_total, 2);
	CHECK_EQ_INT(r.pod_refused, 0);
	CHECK_EQ_INT(r.refusals, 0);
	/* no pod behind the dialled address: closed at accept, the client fails (UF); its stream
	 * may be reset before anything is written */
	CHECK(wait_count(&r.out_closed.count, 3));
	r.pod_gone = true;
	sockaddr_parse("127.0.0.3", 0, &r.key_src);
	char buf[8];
	int cl = dial(&r.out_addr);
	ssize_t n = read_full(cl, buf, sizeof(buf), 5000);
	CHECK(n == 0 || n == -ECONNRESET);
	close(cl);
	CHECK(wait_count(&r.out_closed.count, 4));
	CHECK_EQ_STR(r.out_closed.flag, CONN_FLAG_UPSTREAM_CONNECT_FAILURE);
	CHECK_EQ_INT(r.pod_refused, 1);
	rig_stop(&r);
}

/* The pod-addressed listener presents the pod's certificate: a client expecting another
 * identity refuses it, and the server counts its handshake failure as a refusal. */
TEST(pod_addressed_wrong_identity_and_refusal_hook)
{
	struct rig r;
	rig_start(&r, NULL, NULL);
	r.hbone_addr = r.pod_addr;
	r.no_sni = true;	/* expect stays server/echo: the pod is pod/web */
	expect_refused(&r, CONN_FLAG_UPSTREAM_CONNECT_FAILURE,
		       "expected spiffe://cluster.local/ns/server/sa/echo");
	CHECK_EQ_INT(r.inbound_seen, 0);
	for (int i = 0; i < 3000 && !__atomic_load_n(&r.refusals, __ATOMIC_ACQUIRE); i++)
		usleep(10000);
	CHECK_EQ_INT(r.refusals, 1);
	rig_stop(&r);
}

/* ------------------------------------------ interop with python3-h2 + ssl ---- */

static const char *h2_python(void)
{
	static const char *const cands[] = { "python3", "/usr/bin/python3" };
	static char found[64];
	const char *env = getenv("AMBIT_PYTHON");
	char cmd[160];

	if (found[0])
		return found;
	if (env && *env) {
		snprintf(found, sizeof(found), "%s", env);
		return found;
	}
	for (size_t i = 0; i < ARRAY_SIZE(cands); i++) {
		snprintf(cmd, sizeof(cmd), "%s -c 'import h2' >/dev/null 2>&1", cands[i]);
		if (system(cmd) == 0) {
			snprintf(found, sizeof(found), "%s", cands[i]);
			return found;
		}
	}
	return NULL;
}

struct peer_files {
	char dir[64];
	char ca[96], cert[96], key[96], ca_key[96];
};

static void write_leaf(struct tls_cert *c, const char *cert_path, const char *key_path)
{
	FILE *f = fopen(cert_path, "w");
	PEM_write_X509(f, c->x509);
	fclose(f);
	int fd = open(key_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	f = fdopen(fd, "w");
	PEM_write_PrivateKey(f, c->key, NULL, NULL, 0, NULL, NULL);
	fclose(f);
}

static void peer_files_make(struct peer_files *pf, struct spiffe_id id)
{
	snprintf(pf->dir, sizeof(pf->dir), "/tmp/ambit-h2peer-XXXXXX");
	if (!mkdtemp(pf->dir))
		abort();
	snprintf(pf->ca, sizeof(pf->ca), "%s/ca.pem", pf->dir);
	snprintf(pf->ca_key, sizeof(pf->ca_key), "%s/ca.key", pf->dir);
	snprintf(pf->cert, sizeof(pf->cert), "%s/leaf.pem", pf->dir);
	snprintf(pf->key, sizeof(pf->key), "%s/leaf.key", pf->dir);
	tls_ca_write(the_ca, pf->ca, pf->ca_key, NULL, 0);
	struct tls_cert *c = tls_ca_issue(the_ca, &id, NULL);
	write_leaf(c, pf->cert, pf->key);
	tls_cert_unref(c);
}

static void peer_files_remove(struct peer_files *pf)
{
	unlink(pf->ca);
	unlink(pf->ca_key);
	unlink(pf->cert);
	unlink(pf->key);
	rmdir(pf->dir);
}

struct peer_proc {
	pid_t pid;
	int out;	/* its stdout */
	char buf[8192];
	size_t len;
};

static void peer_spawn(struct peer_proc *pp, char *const argv[])
{
	int p[2];
	if (pipe2(p, O_CLOEXEC))
		abort();
	pp->len = 0;
	pp->pid = fork();
	if (pp->pid == 0) {
		dup2(p[1], 1);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	pp->out = p[0];
}

/* Reads the peer's output until EOF or timeout; lines are echoed as comments. */
static void peer_read(struct peer_proc *pp, int timeout_ms, const char *until)
{
	uint64_t end = mono_ms() + (uint64_t)timeout_ms;
	while (mono_ms() < end && pp->len < sizeof(pp->buf) - 1) {
		struct pollfd p = { pp->out, POLLIN, 0 };
		if (poll(&p, 1, 100) != 1)
			continue;
		ssize_t n = read(pp->out, pp->buf + pp->len, sizeof(pp->buf) - 1 - pp->len);
		if (n <= 0)
			break;
		pp->len += (size_t)n;
		pp->buf[pp->len] = '\0';
		if (until && strstr(pp->buf, until) && strchr(strstr(pp->buf, until), '\n'))
			return;
	}
	pp->buf[pp->len] = '\0';
}

/* Waits (bounded) for the peer to exit; kills it on timeout. Returns its exit status. */
static int peer_wait(struct peer_proc *pp, int timeout_ms)
{
	int status = -1;
	uint64_t end = mono_ms() + (uint64_t)timeout_ms;
	peer_read(pp, timeout_ms, NULL);
	while (waitpid(pp->pid, &status, WNOHANG) == 0) {
		if (mono_ms() > end) {
			kill(pp->pid, SIGKILL);
			waitpid(pp->pid, &status, 0);
			fprintf(stderr, "  h2peer timed out\n");
			break;
		}
		usleep(10000);
	}
	close(pp->out);
	for (char *line = strtok(pp->buf, "\n"); line; line = strtok(NULL, "\n"))
		printf("#   %s\n", line);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void h2peer_path(char *buf, size_t len)
{
	const char *top = getenv("AMBIT_TOP");
	snprintf(buf, len, "%s/tests/tools/h2peer.py", top && *top ? top : ".");
}

TEST(interop_h2_client_through_our_server)
{
	struct rig r;
	struct peer_files pf;
	struct peer_proc pp;
	char script[256], target[64], authority[64], sni[SPIFFE_SNI_MAX];
	struct spiffe_id server_id = sid("server", "echo");
	const char *py = h2_python();
	REQUIRE(py != NULL);
	rig_start(&r, NULL, NULL);
	peer_files_make(&pf, sid("py", "client"));
	h2peer_path(script, sizeof(script));
	snprintf(target, sizeof(target), "127.0.0.1:%u", sockaddr_port(&r.hbone_addr));
	snprintf(authority, sizeof(authority), "127.0.0.1:%u", sockaddr_port(&r.echo.addr));
	spiffe_sni_encode(&server_id, sni, sizeof(sni));
	char *argv[] = { (char *)py, script, "client", target, authority, "--ca", pf.ca,
			 "--cert", pf.cert, "--key", pf.key, "--sni", sni,
			 "--expect", "spiffe://cluster.local/ns/server/sa/echo",
			 "--bytes", "4194304", NULL };
	peer_spawn(&pp, argv);
	CHECK_EQ_INT(peer_wait(&pp, 60000), 0);
	CHECK_EQ_STR(r.in_peer, "spiffe://cluster.local/ns/py/sa/client");
	CHECK_EQ_STR(r.in_traceparent, "00-11111111111111111111111111111111-2222222222222222-01");
	CHECK(wait_count(&r.in_closed.count, 1));
	CHECK_EQ_INT(r.in_closed.err, 0);
	peer_files_remove(&pf);
	rig_stop(&r);
}

/* Starts h2peer.py's server (one stream; extra: one more argument or NULL) for the rig's
 * outbound connections to go to. false when it did not come up. */
static bool h2_server_start(struct rig *r, struct peer_files *pf, struct peer_proc *pp,
			    char *extra)
{
	char script[256];
	const char *py = h2_python();
	if (!py)
		return false;
	peer_files_make(pf, sid("py", "server"));
	h2peer_path(script, sizeof(script));
	char *argv[] = { (char *)py, script, "server", "--ca", pf->ca, "--cert", pf->cert,
			 "--key", pf->key, "--expect-peer", "spiffe://cluster.local/ns/client/sa/sleep",
			 "--authority", r->authority, "--streams", "1", extra, NULL };
	peer_spawn(pp, argv);
	peer_read(pp, 20000, "PORT ");
	char *port = strstr(pp->buf, "PORT ");
	if (!port)
		return false;
	r->hbone_addr = loopback((uint16_t)atoi(port + 5));
	r->expect = r->sni = sid("py", "server");
	return true;
}

TEST(interop_our_client_to_h2_server)
{
	struct rig r;
	struct peer_files pf;
	struct peer_proc pp;
	double mbps;
	char b;
	rig_start(&r, NULL, NULL);
	REQUIRE(h2_server_start(&r, &pf, &pp, NULL));
	int cl = dial(&r.out_addr);
	CHECK_EQ_INT(pump_echo(cl, 4u << 20, &mbps), 4u << 20);
	CHECK_EQ_INT(read_full(cl, &b, 1, 5000), 0);
	close(cl);
	CHECK(wait_count(&r.out_closed.count, 1));
	CHECK_EQ_INT(r.out_closed.err, 0);
	CHECK_EQ_INT(peer_wait(&pp, 60000), 0);
	peer_files_remove(&pf);
	rig_stop(&r);
}

/* ---- an asynchronous certstore: CONNECTs wait for their source certificate ---- */

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cv;
	bool hold, fail;
	int calls;
	struct hbone_pool *pool;
} gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false, 0, NULL };

static struct tls_cert *gated_issue(void *arg, const struct spiffe_id *id, uint32_t lifetime_s,
				    int64_t now, char *why, size_t whylen)
{
	bool fail;
	pthread_mutex_lock(&gate.lock);
	gate.calls++;
	while (gate.hold)
		pthread_cond_wait(&gate.cv, &gate.lock);
	fail = gate.fail;
	pthread_mutex_unlock(&gate.lock);
	if (fail) {
		snprintf(why, whylen, "test CA: UNAVAILABLE: no route");
		errno = EHOSTUNREACH;
		return NULL;
	}
	return tls_ca_issue(arg, id, &(struct tls_issue_opts){ .lifetime_s = lifetime_s,
								.now = now });
}

static void certs_changed_task(struct loop *l, void *arg)
{
	(void)l;
	hbone_pool_certs_changed(arg);
}

static void gated_update(void *arg)
{
	(void)arg;
	loop_post(R->l, certs_changed_task, gate.pool);
}

static void gate_set(bool hold, bool fail)
{
	pthread_mutex_lock(&gate.lock);
	gate.hold = hold;
	gate.fail = fail;
	pthread_cond_broadcast(&gate.cv);
	pthread_mutex_unlock(&gate.lock);
}

struct async_pool {
	struct rig *r;
	struct certstore *cs;
	struct hbone_opts o;
	uint32_t waits;
};

static void async_pool_new(void *arg)
{
	struct async_pool *a = arg;
	gate.pool = a->r->use_pool = hbone_pool_new(a->r->l, a->r->cctx, a->cs, &a->o);
}

static void async_pool_free(void *arg)
{
	struct async_pool *a = arg;
	hbone_pool_free(a->r->use_pool);
	a->r->use_pool = gate.pool = NULL;
}

static void async_waits(void *arg)
{
	struct async_pool *a = arg;
	a->waits = hbone_pool_cert_waits(a->r->use_pool);
}

TEST(connect_waits_for_the_source_certificate)
{
	struct rig r;
	char buf[8];
	struct certstore_backend be = { .issue = gated_issue, .name = "test CA" };
	rig_start(&r, NULL, NULL);
	be.arg = r.ca;
	struct certstore_opts o = { .backend = &be, .async = true, .retry_min_ms = 50,
				    .retry_max_ms = 50, .on_update = gated_update };
	struct async_pool a = { .r = &r, .cs = certstore_new(NULL, &o),
				.o = { .connect_timeout_ms = 400 } };
	REQUIRE(a.cs);
	on_loop(async_pool_new, &a);
	snprintf(r.authority, sizeof(r.authority), "127.0.0.1:%u", sockaddr_port(&r.up_addr));

	/* The CA has not answered: the conn waits, its bytes buffered, nothing upstream. */
	gate_set(true, false);
	int cl = dial(&r.out_addr);
	CHECK_EQ_INT(write(cl, "hello", 5), 5);
	struct pollfd pf = { .fd = r.up_lfd, .events = POLLIN };
	CHECK_EQ_INT(poll(&pf, 1, 150), 0);
	on_loop(async_waits, &a);
	CHECK_EQ_INT(a.waits, 1);
	CHECK_EQ_INT(gate.calls, 1);

	/* The cert lands: the CONNECT goes ahead with it and the bytes arrive. */
	gate_set(false, false);
	int up = accept_up(&r);
	REQUIRE(up >= 0);
	CHECK_EQ_INT(read_full(up, buf, 5, 5000), 5);
	CHECK(memcmp(buf, "hello", 5) == 0);
	CHECK_EQ_STR(r.in_peer, "spiffe://cluster.local/ns/client/sa/sleep");
	on_loop(async_waits, &a);
	CHECK_EQ_INT(a.waits, 0);
	close(up);
	close(cl);
	CHECK(wait_count(&r.out_closed.count, 1));

	/* A source the CA cannot serve: after connect_timeout_ms the conn fails with the
	 * store's reason, and no busy loop ran meanwhile (a handful of CA attempts). */
	gate_set(false, true);
	r.src = sid("client", "other");
	int calls = gate.calls;
	cl = dial(&r.out_addr);
	CHECK(wait_count(&r.out_closed.count, 2));
	CHECK_EQ_STR(r.out_closed.flag, CONN_FLAG_UPSTREAM_CONNECT_FAILURE);
	CHECK(strstr(r.out_closed.reason, "no certificate for "
		     "spiffe://cluster.local/ns/client/sa/other: ") != NULL);
	CHECK(strstr(r.out_closed.reason, "test CA: UNAVAILABLE: no route") != NULL);
	CHECK(gate.calls - calls >= 2 && gate.calls - calls <= 20);	/* 400 ms, retries >= 25 ms apart */
	CHECK_EQ_INT(read_full(cl, buf, sizeof(buf), 5000), -ECONNRESET);
	close(cl);
	on_loop(async_pool_free, &a);
	certstore_free(a.cs);
	rig_stop(&r);
}

/* ------------------------------------------- upgrades: deferred, shared 15008 ---- */

/* A server that says GOAWAY before our queued request left (an agent being upgraded): the
 * request goes again on a new connection, and the application's connection never notices. */
TEST(request_crossed_by_goaway_goes_again)
{
	struct rig r;
	struct peer_files pf;
	struct peer_proc pp;
	double mbps;
	rig_start(&r, NULL, NULL);
	REQUIRE(h2_server_start(&r, &pf, &pp, "--goaway-first"));
	int cl = dial(&r.out_addr);
	CHECK_EQ_INT(pump_echo(cl, 64 << 10, &mbps), 64 << 10);
	close(cl);
	CHECK(wait_count(&r.out_closed.count, 1));
	CHECK_EQ_INT(r.out_closed.err, 0);
	peer_read(&pp, 5000, "sent GOAWAY on the first connection");
	CHECK(strstr(pp.buf, "sent GOAWAY on the first connection") != NULL);
	CHECK_EQ_INT(peer_wait(&pp, 30000), 0);
	peer_files_remove(&pf);
	rig_stop(&r);
}

static void listen_on_loop(void *arg)
{
	CHECK_EQ_INT(hbone_server_listen(arg), 0);
}

struct second_server {
	struct sockaddr_storage addr;
	struct hbone_server *srv;
};

static void second_on_loop(void *arg)
{
	struct second_server *ss = arg;
	struct hbone_server_cbs cbs = { .on_connect = on_connect, .arg = R };
	struct hbone_opts o = { .defer_listen = true };
	ss->srv = hbone_server_new(R->l, &ss->addr, R->sctx, &cbs, &o);
}

static void second_free_on_loop(void *arg)
{
	hbone_server_free(arg);
}

/* An agent taking over from another binds 15008 beside it (SO_REUSEPORT) and accepts only
 * once hbone_server_listen() says so. */
TEST(deferred_listen_then_shared_port)
{
	struct rig r;
	struct hbone_opts so = { .defer_listen = true };
	struct second_server ss;
	double mbps;
	rig_start(&r, NULL, &so);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(connect(fd, (struct sockaddr *)&r.hbone_addr, sizeof(struct sockaddr_in)) == -1 &&
	      errno == ECONNREFUSED);
	close(fd);
	/* A second server on the same port binds too (the successor of an upgrade). */
	ss.addr = r.hbone_addr;
	on_loop(second_on_loop, &ss);
	CHECK(ss.srv != NULL);
	on_loop(listen_on_loop, r.srv);
	int cl = dial(&r.out_addr);
	CHECK_EQ_INT(pump_echo(cl, 64 << 10, &mbps), 64 << 10);
	close(cl);
	CHECK(wait_count(&r.out_closed.count, 1));
	CHECK_EQ_INT(r.out_closed.err, 0);
	on_loop(second_free_on_loop, ss.srv);
	rig_stop(&r);
}

/* ------------------------------------- HTTP/2 abuse from a certified peer ---- */

struct attack_res {
	int n;				/* RESULT lines */
	int sent[8], goaway[8], last[8], refused[8];
	char ended[8][48];
	bool legit_ok;			/* the echo through the pool, during the attack */
	int legit_ms;
};

/* Runs h2peer.py attack KIND against the rig's server (count frames/streams per connection,
 * conns connections); with legit, a normal connection through the pool pumps 256 KiB while
 * the attack runs. extra: more h2peer arguments (NULL-terminated), may be NULL. */
static void run_attack(struct rig *r, const char *kind, const char *authority, int count,
		       int conns, bool legit, char *const *extra, struct attack_res *res)
{
	struct peer_files pf;
	struct peer_proc pp;
	char script[256], target[64], sni[SPIFFE_SNI_MAX], cnt[16], nconn[16];
	struct spiffe_id server_id = sid("server", "echo");
	const char *py = h2_python();
	char *argv[40];
	int n = 0;

	memset(res, 0, sizeof(*res));
	if (!py) {
		CHECK(py != NULL);
		return;
	}
	peer_files_make(&pf, sid("evil", "attacker"));
	h2peer_path(script, sizeof(script));
	snprintf(target, sizeof(target), "127.0.0.1:%u", sockaddr_port(&r->hbone_addr));
	snprintf(cnt, sizeof(cnt), "%d", count);
	snprintf(nconn, sizeof(nconn), "%d", conns);
	spiffe_sni_encode(&server_id, sni, sizeof(sni));
	char *base[] = { (char *)py, script, "attack", target, "--kind", (char *)kind,
			 "--authority", (char *)authority, "--count", cnt, "--connections", nconn,
			 "--ca", pf.ca, "--cert", pf.cert, "--key", pf.key, "--sni", sni, NULL };
	for (int i = 0; base[i]; i++)
		argv[n++] = base[i];
	for (int i = 0; extra && extra[i] && n < 38; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	peer_spawn(&pp, argv);
	if (legit) {
		double mbps;
		peer_read(&pp, 20000, "ATTACKING conn=0");
		uint64_t t0 = mono_ms();
		int cl = dial(&r->out_addr);
		res->legit_ok = pump_echo(cl, 256 << 10, &mbps) == 256 << 10;
		res->legit_ms = (int)(mono_ms() - t0);
		close(cl);
	}
	peer_read(&pp, 60000, NULL);
	for (char *p = pp.buf; (p = strstr(p, "RESULT ")) && res->n < 8; p++) {
		int i = res->n;
		if (sscanf(p, "RESULT conn=%*d sent=%d goaway=%d last=%d refused=%d ended=%47s",
			   &res->sent[i], &res->goaway[i], &res->last[i], &res->refused[i],
			   res->ended[i]) == 5)
			res->n++;
	}
	CHECK_EQ_INT(peer_wait(&pp, 10000), 0);
	peer_files_remove(&pf);
}

/* Connections waiting in a listener's accept queue (the "destination pod" saw them). */
static int accept_all(int lfd)
{
	int n = 0, fd;
	fd_set_nonblock(lfd);
	while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
		close(fd);
		n++;
	}
	return n;
}

static struct hbone_stats server_stats(void)
{
	struct stats_req st;
	on_loop(stats_on_loop, &st);
	return st.srv;
}

/* What the peer waits for the server to cut an attack off: generous, it ends once cut (a loaded
 * machine may take seconds to get there). How much the peer managed to write before is no
 * verdict: on a slow server the whole flood fits in the socket buffers. */
static char *const cut_wait[] = { "--verdict-s", "60", NULL };

TEST(abuse_rapid_reset_is_cut_off_and_never_dials)
{
	struct rig r;
	struct attack_res res;
	char auth[64];
	rig_start(&r, NULL, NULL);
	/* The upstream is a listener nobody accepts on: any dial shows in its queue. */
	snprintf(auth, sizeof(auth), "127.0.0.1:%u", sockaddr_port(&r.up_addr));
	run_attack(&r, "rapid_reset", auth, 20000, 3, true, cut_wait, &res);
	CHECK_EQ_INT(res.n, 3);
	for (int i = 0; i < res.n; i++) {
		printf("#   conn %d: sent %d streams, GOAWAY %d last %d, %s\n", i, res.sent[i],
		       res.goaway[i], res.last[i], res.ended[i]);
		CHECK_EQ_INT(res.goaway[i], 11);	/* ENHANCE_YOUR_CALM */
		CHECK(res.last[i] >= 0 && res.last[i] < 2 * 1000);	/* < 1000 streams */
		CHECK(strcmp(res.ended[i], "open") != 0);
	}
	CHECK_EQ_INT(accept_all(r.up_lfd), 0);
	CHECK_EQ_INT(r.inbound_to_up, 0);
	CHECK(res.legit_ok);
	printf("#   a normal connection meanwhile: %d ms\n", res.legit_ms);
	struct hbone_stats st = server_stats();
	CHECK_EQ_INT((int)st.cut_off[HBONE_ABUSE_RAPID_RESET], 3);
	CHECK(st.reset_before_dial_total >= 3 * 100);
	rig_stop(&r);
}

/* A reset that comes after the dial started cancels it; one within the limits is no abuse. */
TEST(abuse_slow_resets_within_the_limit_are_served)
{
	struct rig r;
	struct attack_res res;
	char auth[64];
	struct hbone_opts so = { .limits.resets = { .burst = 1000, .per_s = 1000 } };
	rig_start(&r, NULL, &so);
	snprintf(auth, sizeof(auth), "127.0.0.1:%u", sockaddr_port(&r.up_addr));
	run_attack(&r, "rapid_reset", auth, 300, 1, false, NULL, &res);
	CHECK_EQ_INT(res.n, 1);
	CHECK_EQ_INT(res.goaway[0], -1);
	CHECK_EQ_INT(r.inbound_seen, 0);
	CHECK_EQ_INT(accept_all(r.up_lfd), 0);
	struct hbone_stats st = server_stats();
	CHECK_EQ_INT((int)st.cut_off[HBONE_ABUSE_RAPID_RESET], 0);
	CHECK_EQ_INT((int)st.reset_before_dial_total, 300);
	rig_stop(&r);
}

static void flood_case(const char *kind, enum hbone_abuse why, bool expect_goaway)
{
	struct rig r;
	struct attack_res res;
	rig_start(&r, NULL, NULL);
	run_attack(&r, kind, r.authority, 20000, 2, true, cut_wait, &res);
	CHECK_EQ_INT(res.n, 2);
	for (int i = 0; i < res.n; i++) {
		printf("#   %s conn %d: sent %d, GOAWAY %d, %s\n", kind, i, res.sent[i],
		       res.goaway[i], res.ended[i]);
		if (expect_goaway)
			CHECK_EQ_INT(res.goaway[i], 11);
		CHECK(strcmp(res.ended[i], "open") != 0);
	}
	CHECK(res.legit_ok);
	printf("#   a normal connection meanwhile: %d ms\n", res.legit_ms);
	struct hbone_stats st = server_stats();
	CHECK_EQ_INT((int)st.cut_off[why], 2);
	rig_stop(&r);
}

TEST(abuse_settings_flood_is_cut_off)
{
	flood_case("settings", HBONE_ABUSE_SETTINGS_FLOOD, true);
}

TEST(abuse_ping_flood_is_cut_off)
{
	flood_case("ping", HBONE_ABUSE_PING_FLOOD, true);
}

TEST(abuse_empty_data_flood_is_cut_off)
{
	flood_case("empty_data", HBONE_ABUSE_EMPTY_FRAMES, true);
}

TEST(abuse_continuation_flood_is_cut_off)
{
	flood_case("continuation", HBONE_ABUSE_CONTINUATION_FLOOD, false);
}

/* Streams opened faster than they are served: past max_pending_streams they are refused
 * (REFUSED_STREAM), the connection lives on, and the ones in flight stay. */
TEST(abuse_streams_beyond_max_pending_are_refused)
{
	struct rig r;
	struct attack_res res;
	char auth[64];
	struct sockaddr_storage hole;
	struct hbone_opts so = { .limits.max_pending_streams = 20 };
	char *extra[] = { "--want-refused", "30", "--verdict-s", "60", NULL };
	rig_start(&r, NULL, &so);
	/* A listener whose accept queue is full: connects to it hang (SYNs are dropped). */
	int hl = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_storage any = loopback(0);
	socklen_t len = sizeof(hole);
	REQUIRE(bind(hl, (struct sockaddr *)&any, sizeof(struct sockaddr_in)) == 0 &&
		listen(hl, 0) == 0 && getsockname(hl, (struct sockaddr *)&hole, &len) == 0);
	int fill[2];
	for (int i = 0; i < 2; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		connect(fill[i], (struct sockaddr *)&hole, sizeof(struct sockaddr_in));
	}
	usleep(100000);
	snprintf(auth, sizeof(auth), "127.0.0.1:%u", sockaddr_port(&hole));
	run_attack(&r, "pending", auth, 50, 1, false, extra, &res);
	CHECK_EQ_INT(res.n, 1);
	printf("#   pending: sent %d, refused %d, GOAWAY %d, %s\n", res.sent[0], res.refused[0],
	       res.goaway[0], res.ended[0]);
	CHECK_EQ_INT(res.refused[0], 30);
	CHECK_EQ_INT(res.goaway[0], -1);
	struct hbone_stats st = server_stats();
	CHECK_EQ_INT((int)st.streams_refused_total, 30);
	for (int i = 0; i < 5; i++)
		CHECK_EQ_INT((int)st.cut_off[i], 0);
	close(fill[0]);
	close(fill[1]);
	close(hl);
	rig_stop(&r);
}

/* ---------------------------------------------- held CONNECTs and handshakes ---- */

static void hold_count_on_loop(void *arg)
{
	*(uint32_t *)arg = hbone_server_held(R->srv);
}

static bool wait_held(uint32_t want)
{
	uint32_t n = 0;
	for (int i = 0; i < 3000; i++) {
		on_loop(hold_count_on_loop, &n);
		if (n == want)
			return true;
		usleep(10000);
	}
	fprintf(stderr, "  timed out waiting for %u held (have %u)\n", want, n);
	return false;
}

static void retry_on_loop(void *arg)
{
	(void)arg;
	hbone_server_retry_held(R->srv);
}

/* Starts r with *flag (r->hold or r->hs_hold) set, and one client connection that sent a byte
 * and is held on the server. Returns the client's socket. */
static int start_held(struct rig *r, int *flag)
{
	rig_start(r, NULL, NULL);
	__atomic_store_n(flag, 1, __ATOMIC_RELEASE);
	int cl = dial(&r->out_addr);
	CHECK_EQ_INT(write(cl, "x", 1), 1);
	CHECK(wait_held(1));
	return cl;
}

TEST(held_connect_is_answered_when_dispatched_again)
{
	struct rig r;
	char buf[8];
	int cl = start_held(&r, &r.hold);
	CHECK_EQ_INT(r.inbound_seen, 1);
	CHECK_EQ_INT((int)r.last_held_ms, 0);	/* its first dispatch */
	/* nothing comes back while it is held */
	CHECK_EQ_INT(read_full(cl, buf, 1, 200), -ETIMEDOUT);
	on_loop(retry_on_loop, NULL);	/* still held: held again, and it knows for how long */
	CHECK(wait_held(1));
	CHECK_EQ_INT(r.inbound_seen, 2);
	CHECK(r.last_held_ms >= 150);
	__atomic_store_n(&r.hold, 0, __ATOMIC_RELEASE);
	on_loop(retry_on_loop, NULL);
	CHECK(wait_held(0));
	CHECK_EQ_INT(r.inbound_seen, 3);
	CHECK_EQ_INT(read_full(cl, buf, 1, 5000), 1);	/* the early byte went through */
	CHECK(buf[0] == 'x');
	shutdown(cl, SHUT_WR);
	CHECK_EQ_INT(read_full(cl, buf, sizeof(buf), 5000), 0);
	close(cl);
	CHECK(wait_count(&r.out_closed.count, 1));
	CHECK_EQ_INT(r.out_closed.err, 0);
	rig_stop(&r);
}

TEST(held_connect_reset_by_its_peer_is_dropped_then_session_close_frees)
{
	struct rig r;
	struct linger lg = { 1, 0 };
	int cl = start_held(&r, &r.hold);
	/* the client gives up: its stream is reset, and the server forgets the held one */
	setsockopt(cl, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(cl);
	CHECK(wait_held(0));
	CHECK_EQ_INT((int)server_stats().reset_before_dial_total, 1);
	on_loop(retry_on_loop, NULL);
	CHECK_EQ_INT(r.inbound_seen, 1);	/* never dispatched again */
	/* held when the whole thing goes away: freed with its session (ASan checks) */
	cl = dial(&r.out_addr);
	CHECK_EQ_INT(write(cl, "y", 1), 1);
	CHECK(wait_held(1));
	rig_stop(&r);
	close(cl);
}

static void stream_count_on_loop(void *arg)
{
	*(uint32_t *)arg = hbone_server_stream_count(R->srv);
}

TEST(held_connect_is_answered_503_when_the_server_drains)
{
	struct rig r;
	uint32_t n = 1;
	int cl = start_held(&r, &r.hold);	/* on_connect would go on holding it */
	on_loop(drain_srv_on_loop, r.srv);
	/* dispatched again at once and, as it would be held again, refused: its client sees
	 * the 503 (the source side's flag and reason), not a reset of the connection */
	CHECK(wait_count(&r.out_closed.count, 1));
	CHECK_EQ_STR(r.out_closed.flag, CONN_FLAG_UPSTREAM_CONNECT_FAILURE);
	if (!strstr(r.out_closed.reason, "status 503: shutting down"))
		fprintf(stderr, "  reason \"%s\"\n", r.out_closed.reason);
	CHECK(strstr(r.out_closed.reason, "status 503: shutting down") != NULL);
	CHECK_EQ_INT(r.inbound_seen, 2);
	CHECK(wait_held(0));
	/* the answered stream is gone: what the agent's drain waits for */
	for (int i = 0; i < 500 && n; i++) {
		on_loop(stream_count_on_loop, &n);
		if (n)
			usleep(10000);
	}
	CHECK_EQ_INT((int)n, 0);
	close(cl);
	rig_stop(&r);
}

TEST(held_handshake_resumes_when_retried)
{
	struct rig r;
	char buf[8];
	int cl = start_held(&r, &r.hs_hold);
	CHECK_EQ_INT(r.inbound_seen, 0);	/* no CONNECT before the handshake */
	CHECK_EQ_INT(r.hs_asked, 1);
	CHECK_EQ_INT((int)r.last_hs_waited_ms, 0);
	usleep(100000);
	on_loop(retry_on_loop, NULL);	/* asked again, held again */
	CHECK(wait_held(1));
	CHECK_EQ_INT(r.hs_asked, 2);
	CHECK(r.last_hs_waited_ms >= 80);
	__atomic_store_n(&r.hs_hold, 0, __ATOMIC_RELEASE);
	on_loop(retry_on_loop, NULL);
	CHECK(wait_held(0));
	CHECK_EQ_INT(read_full(cl, buf, 1, 5000), 1);
	CHECK(buf[0] == 'x');
	CHECK_EQ_INT(r.inbound_seen, 1);
	close(cl);
	CHECK(wait_count(&r.out_closed.count, 1));
	rig_stop(&r);
}

static void pool_gone_on_loop(void *arg)
{
	(void)arg;
	hbone_pool_free(R->pool);	/* closes its connections now */
	R->pool = NULL;
}

TEST(held_handshake_of_a_peer_gone_ends_at_the_retry)
{
	struct rig r;
	int cl = start_held(&r, &r.hs_hold);
	on_loop(pool_gone_on_loop, NULL);	/* the client side goes away */
	CHECK(wait_count(&r.out_closed.count, 1));
	CHECK_EQ_INT((int)server_stats().conns, 1);	/* held: not polled, not known yet */
	__atomic_store_n(&r.hs_hold, 0, __ATOMIC_RELEASE);
	on_loop(retry_on_loop, NULL);	/* resumed: the handshake meets the closed socket */
	CHECK(wait_held(0));
	for (int i = 0; i < 3000 && server_stats().conns; i++)
		usleep(10000);
	CHECK_EQ_INT((int)server_stats().conns, 0);
	CHECK_EQ_INT(r.inbound_seen, 0);
	close(cl);
	rig_stop(&r);
}

TEST_MAIN("hbone")
