// SPDX-License-Identifier: Apache-2.0
/* End-to-end test of the eBPF capture (agent/redirect.c) on real interfaces: a node netns with
 * agent-like transparent listeners and pod netns behind veths, routed and bridge CNI styles.
 * Debugging: AMBIT_TEST_DEBUG=1 logs at debug level; AMBIT_TEST_PAUSE=SECONDS sleeps after the
 * first missed capture, so the namespaces can be inspected (ip netns list | grep ambtc). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "agent/redirect.h"
#include "common/log.h"

#define NODE_IP		"192.0.2.1"	/* the node's own address (on lo) */
#define FAR_IP		"198.51.100.7"	/* an arbitrary destination nobody routes */
#define POD_NET		"10.244.1."
#define NPODS		4		/* p1 enrolled, p2/p3 not, p4 enrolled and created late */

static char prefix[32];			/* "ambtc<pid>-": names of our netns */
static char pin_dir[64];
static int orig_ns = -1, node_ns = -1;
static bool built[NPODS + 1];		/* pod netns made (index 0 = node) */
static struct redirect *cur_r;		/* for the failure report */

/* After a failed check: what the BPF counters say. */
static void dump_state(void)
{
	json_t *j = cur_r ? redirect_state_json(cur_r) : NULL;
	char *s = j ? json_dumps(json_object_get(j, "counters"), JSON_COMPACT) : NULL;
	if (s)
		fprintf(stderr, "  counters: %s\n", s);
	free(s);
	json_decref(j);
}

static const char *ns_name(int pod)
{
	static char buf[NPODS + 1][48];
	if (pod == 0)
		snprintf(buf[0], sizeof(buf[0]), "%snode", prefix);
	else
		snprintf(buf[pod], sizeof(buf[pod]), "%sp%d", prefix, pod);
	return buf[pod];
}

static const char *pod_ip(int pod)
{
	static char buf[NPODS + 1][INET_ADDRSTRLEN + 8];
	snprintf(buf[pod], sizeof(buf[pod]), POD_NET "%d", 10 + (pod & 0xff));
	return buf[pod];
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	rc = system(cmd);
	if (rc != 0)
		fprintf(stderr, "  command failed (%d): %s\n", rc, cmd);
	return rc;
}

/* Output of a shell command (first 4 KiB). */
static char *sh_out(const char *cmd)
{
	static char buf[4096];
	size_t n = 0;
	FILE *f = popen(cmd, "r");

	buf[0] = '\0';
	if (!f)
		return buf;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	pclose(f);
	return buf;
}

static int ns_fd(const char *name)
{
	char path[128];
	snprintf(path, sizeof(path), "/run/netns/%s", name);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/* Everything the test made, even after a failure (also from atexit and signals). */
static void teardown_all(void)
{
	if (orig_ns >= 0)
		setns(orig_ns, CLONE_NEWNET);
	for (int i = NPODS; i >= 0; i--) {
		if (built[i]) {
			char cmd[128];
			snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null", ns_name(i));
			(void)!system(cmd);
			built[i] = false;
		}
	}
	if (node_ns >= 0) {
		close(node_ns);
		node_ns = -1;
	}
	if (pin_dir[0]) {
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", pin_dir);
		(void)!system(cmd);
	}
}

static void on_signal(int sig)
{
	teardown_all();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Removes netns left by earlier runs that were killed (their pid is gone). */
static void reap_stale(void)
{
	char *out = sh_out("ip netns list 2>/dev/null | awk '{print $1}' | grep '^ambtc'");
	for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
		int pid = atoi(line + 5);
		if (pid > 0 && kill(pid, 0) == -1 && errno == ESRCH) {
			char cmd[128];
			snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null; rm -rf /sys/fs/bpf/ambit-test-%d",
				 line, pid);
			(void)!system(cmd);
		}
	}
}

/* ---- topology ---- */

static int make_node(bool bridge)
{
	const char *n = ns_name(0);

	if (sh("ip netns add %s", n))
		return -1;
	built[0] = true;
	if (sh("ip -n %s link set lo up && ip -n %s addr add " NODE_IP "/32 dev lo", n, n) ||
	    sh("ip netns exec %s sh -c 'sysctl -qw net.ipv4.ip_forward=1 "
	       "net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0'", n))
		return -1;
	if (bridge && sh("ip -n %s link add cni0 type bridge && ip -n %s addr add " POD_NET "1/24 dev cni0 "
			 "&& ip -n %s link set cni0 up", n, n, n))
		return -1;
	return 0;
}

static int make_pod(int k, bool bridge)
{
	const char *n = ns_name(0), *p = ns_name(k), *ip = pod_ip(k);

	if (sh("ip netns add %s", p))
		return -1;
	built[k] = true;
	if (sh("ip -n %s link set lo up && ip -n %s link add hv%d type veth peer name eth0 netns %s",
	       p, n, k, p))
		return -1;
	if (!bridge)
		return sh("ip -n %s link set hv%d address ee:ee:ee:ee:ee:ee && ip -n %s link set hv%d up && "
			  "ip netns exec %s sysctl -qw net.ipv4.conf.hv%d.rp_filter=0 && "
			  "ip -n %s route add %s/32 dev hv%d && "
			  "ip -n %s addr add %s/32 dev eth0 && ip -n %s link set eth0 up && "
			  "ip -n %s route add 169.254.1.1 dev eth0 scope link && "
			  "ip -n %s neigh add 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent && "
			  "ip -n %s route add default via 169.254.1.1 dev eth0",
			  n, k, n, k, n, k, n, ip, k, p, ip, p, p, p, p);
	return sh("ip -n %s link set hv%d master cni0 up && ip -n %s addr add %s/24 dev eth0 && "
		  "ip -n %s link set eth0 up && ip -n %s route add default via " POD_NET "1 dev eth0",
		  n, k, p, ip, p, p);
}

/* ---- sockets ---- */

static void addr_of(struct sockaddr_in *sin, const char *ip, uint16_t port)
{
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	inet_pton(AF_INET, ip, &sin->sin_addr);
}

/* A TCP socket in netns `pod` (0 = node), bound to ip:port when ip, listening when asked. */
static int tcp_socket(int pod, const char *ip, uint16_t port, bool transparent, bool listening)
{
	int one = 1, fd = -1, nfd = -1;

	if (pod) {
		nfd = ns_fd(ns_name(pod));
		if (nfd < 0 || setns(nfd, CLONE_NEWNET) == -1)
			goto out;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		goto out;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (transparent && setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) == -1)
		goto fail;
	if (ip) {
		struct sockaddr_in sin;
		addr_of(&sin, ip, port);
		if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1)
			goto fail;
	}
	if (listening && listen(fd, 64) == -1)
		goto fail;
	goto out;
fail:
	fprintf(stderr, "  socket in %s (%s:%u): %s\n", ns_name(pod), ip ? ip : "*", port, strerror(errno));
	close(fd);
	fd = -1;
out:
	if (nfd >= 0) {
		setns(node_ns, CLONE_NEWNET);
		close(nfd);
	}
	return fd;
}

/* Starts a connect from netns `pod` (0 = node); the connection may complete later. */
static int tcp_connect(int pod, const char *src_ip, bool transparent, const char *ip, uint16_t port)
{
	struct sockaddr_in sin;
	int fd = tcp_socket(pod, src_ip, 0, transparent, false);

	if (fd < 0)
		return -1;
	addr_of(&sin, ip, port);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

static bool wait_fd(int fd, short ev, int ms)
{
	struct pollfd p = { .fd = fd, .events = ev };
	return poll(&p, 1, ms) == 1 && (p.revents & ev);
}

static bool connected(int fd, int ms)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (!wait_fd(fd, POLLOUT, ms))
		return false;
	return getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
}

/* Accepts one connection within ms, -1 if none came. */
static int accept_within(int lfd, int ms)
{
	if (!wait_fd(lfd, POLLIN, ms))
		return -1;
	return accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

static bool has_pending(int lfd)
{
	int fd = accept_within(lfd, 100);
	if (fd >= 0)
		close(fd);
	return fd >= 0;
}

static bool name_is(int fd, bool peer, const char *ip, int port)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	char buf[INET_ADDRSTRLEN];

	if (!ip)
		return true;	/* any address (the node's source depends on the CNI style) */
	if ((peer ? getpeername(fd, (struct sockaddr *)&sin, &len)
		  : getsockname(fd, (struct sockaddr *)&sin, &len)) == -1)
		return false;
	inet_ntop(AF_INET, &sin.sin_addr, buf, sizeof(buf));
	if (strcmp(buf, ip) != 0 || (port >= 0 && ntohs(sin.sin_port) != port)) {
		fprintf(stderr, "  %s is %s:%u, want %s:%d\n", peer ? "peer" : "local", buf,
			ntohs(sin.sin_port), ip, port);
		return false;
	}
	return true;
}

/* Sends msg on a and reads it on b. */
static bool transfer(int a, int b, const char *msg)
{
	char buf[64];
	size_t len = strlen(msg);
	ssize_t n;

	if (!wait_fd(a, POLLOUT, 1000) || send(a, msg, len, MSG_NOSIGNAL) != (ssize_t)len)
		return false;
	if (!wait_fd(b, POLLIN, 2000))
		return false;
	n = recv(b, buf, sizeof(buf), 0);
	return n == (ssize_t)len && memcmp(buf, msg, len) == 0;
}

/* A connection from `from` to ip:port must be taken by lfd (original destination kept, the
 * client's address as peer) and carry data both ways. */
static bool captured_by(int lfd, int from, const char *ip, uint16_t port)
{
	int c = tcp_connect(from, NULL, false, ip, port), s = -1;
	bool ok = false;

	if (c < 0)
		return false;
	s = accept_within(lfd, 2000);
	if (s < 0) {
		fprintf(stderr, "  %s -> %s:%u: not captured\n", ns_name(from), ip, port);
		dump_state();
		if (getenv("AMBIT_TEST_PAUSE"))
			sleep((unsigned)atoi(getenv("AMBIT_TEST_PAUSE")));
		goto out;
	}
	ok = connected(c, 2000) && name_is(s, false, ip, port) &&
	     name_is(s, true, from ? pod_ip(from) : NODE_IP, -1) &&
	     transfer(c, s, "ping from the pod") && transfer(s, c, "pong from the agent");
out:
	if (s >= 0)
		close(s);
	close(c);
	return ok;
}

/* A connection from `from` to ip:port must reach lfd (the real server) untouched. */
static bool reaches(int lfd, int from, const char *src_ip, bool transparent, const char *ip,
		    uint16_t port)
{
	int c = tcp_connect(from, src_ip, transparent, ip, port), s = -1;
	bool ok = false;

	if (c < 0)
		return false;
	s = accept_within(lfd, 2000);
	if (s < 0) {
		fprintf(stderr, "  %s -> %s:%u: did not reach the server\n", ns_name(from), ip, port);
		goto out;
	}
	ok = connected(c, 2000) && name_is(s, false, ip, port) &&
	     name_is(s, true, src_ip ? src_ip : from ? pod_ip(from) : NULL, -1) &&
	     transfer(c, s, "hello") && transfer(s, c, "hello back");
out:
	if (s >= 0)
		close(s);
	close(c);
	return ok;
}

/* A connection from `from` to ip:port must not complete, nor reach lfd (fail closed). */
static bool blocked(int lfd, int from, const char *ip, uint16_t port)
{
	int c = tcp_connect(from, NULL, false, ip, port);
	bool ok;

	if (c < 0)
		return false;
	ok = !connected(c, 1200);
	if (lfd >= 0 && has_pending(lfd))
		ok = false;
	close(c);
	return ok;
}

/* ---- the agent side ---- */

struct agent {
	struct redirect *r;
	int out_fd, in_fd;
};

static void agent_opts(struct redirect_opts *o, const struct agent *a)
{
	redirect_opts_default(o);
	o->pin_dir = pin_dir;
	o->outbound_listener_fd = a ? a->out_fd : -1;
	o->inbound_listener_fd = a ? a->in_fd : -1;
}

static bool agent_listen(struct agent *a)
{
	a->out_fd = tcp_socket(0, "127.0.0.1", 15001, true, true);
	a->in_fd = tcp_socket(0, "127.0.0.1", 15006, true, true);
	return a->out_fd >= 0 && a->in_fd >= 0;
}

static void agent_close_listeners(struct agent *a)
{
	if (a->out_fd >= 0)
		close(a->out_fd);
	if (a->in_fd >= 0)
		close(a->in_fd);
	a->out_fd = a->in_fd = -1;
}

static size_t n_attached(struct redirect *r)
{
	json_t *j = redirect_state_json(r);
	size_t n = j ? json_array_size(json_object_get(j, "interfaces")) : 0;
	json_decref(j);
	return n;
}

/* Runs the agent's event handling until n interfaces are attached (or ms pass). */
static bool wait_attached(struct redirect *r, size_t n, int ms)
{
	for (int waited = 0; waited <= ms; waited += 50) {
		if (n_attached(r) == n)
			return true;
		wait_fd(redirect_event_fd(r), POLLIN, 50);
		redirect_process_events(r);
	}
	fprintf(stderr, "  %zu interfaces attached, want %zu\n", n_attached(r), n);
	return false;
}

static int set_pods(struct redirect *r, const int *pods, size_t n)
{
	struct redirect_pod v[NPODS];
	char uids[NPODS][32];

	for (size_t i = 0; i < n; i++) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&v[i].addr;
		memset(&v[i], 0, sizeof(v[i]));
		snprintf(uids[i], sizeof(uids[i]), "default/p%d", pods[i]);
		v[i].uid = uids[i];
		addr_of(sin, pod_ip(pods[i]), 0);
	}
	return redirect_set_pods(r, v, n);
}

static bool no_capture_left(void)
{
	char cmd[256];
	bool ok = true;

	for (int k = 1; k <= NPODS; k++) {
		if (!built[k])
			continue;
		snprintf(cmd, sizeof(cmd), "tc filter show dev hv%d ingress; tc filter show dev hv%d egress; "
			 "tc qdisc show dev hv%d | grep clsact", k, k, k);
		if (sh_out(cmd)[0]) {
			fprintf(stderr, "  left on hv%d: %s\n", k, sh_out(cmd));
			ok = false;
		}
	}
	if (strstr(sh_out("ip rule show"), "fwmark")) {
		fprintf(stderr, "  rule left: %s\n", sh_out("ip rule show"));
		ok = false;
	}
	if (sh_out("ip route show table 133 2>/dev/null")[0]) {
		fprintf(stderr, "  route left: %s\n", sh_out("ip route show table 133"));
		ok = false;
	}
	if (access(pin_dir, F_OK) == 0) {
		fprintf(stderr, "  pin dir %s left\n", pin_dir);
		ok = false;
	}
	return ok;
}

/* The whole life of a capture on one CNI style. */
static void scenario(bool bridge)
{
	struct agent a = { .out_fd = -1, .in_fd = -1 };
	struct redirect_opts o;
	int node_srv = -1, p1_app = -1, p3_srv = -1, p4_app = -1;
	const int enrolled[] = { 1, 4 };

	snprintf(prefix, sizeof(prefix), "ambtc%d-", (int)getpid());
	snprintf(pin_dir, sizeof(pin_dir), "/sys/fs/bpf/ambit-test-%d", (int)getpid());
	REQUIRE(make_node(bridge) == 0);
	for (int k = 1; k <= 3; k++)
		REQUIRE(make_pod(k, bridge) == 0);
	node_ns = ns_fd(ns_name(0));
	REQUIRE(node_ns >= 0 && setns(node_ns, CLONE_NEWNET) == 0);

	/* Servers: the node's own (on its IP), pod 1's app, pod 3's server. */
	node_srv = tcp_socket(0, NODE_IP, 7070, false, true);
	p1_app = tcp_socket(1, pod_ip(1), 9090, false, true);
	p3_srv = tcp_socket(3, pod_ip(3), 7070, false, true);
	REQUIRE(node_srv >= 0 && p1_app >= 0 && p3_srv >= 0);
	/* Before any agent: everything reaches everything. */
	CHECK(reaches(node_srv, 1, NULL, false, NODE_IP, 7070));
	CHECK(reaches(p1_app, 2, NULL, false, pod_ip(1), 9090));

	REQUIRE(agent_listen(&a));
	agent_opts(&o, &a);
	a.r = cur_r = redirect_new(&o);
	REQUIRE(a.r);
	/* p4 does not exist yet: pending until its interface appears. */
	CHECK_EQ_INT(set_pods(a.r, enrolled, 2), 0);
	CHECK(wait_attached(a.r, 1, 3000));

	/* Early demux off (else forwarded packets of inbound-captured connections would carry the
	 * agent's socket into ip_forward and be dropped); in bridge mode the pod's MAC is pinned
	 * on its port, since captured frames skip the bridge's learning. */
	CHECK(strncmp(sh_out("cat /proc/sys/net/ipv4/tcp_early_demux"), "0", 1) == 0);
	if (bridge)
		CHECK(strstr(sh_out("bridge fdb show dev hv1 | grep -v permanent"), "static") != NULL);

	/* Outbound: anything from the enrolled pod lands on 15001 with its original destination. */
	CHECK(captured_by(a.out_fd, 1, FAR_IP, 8080));
	CHECK(captured_by(a.out_fd, 1, NODE_IP, 7070));
	CHECK(captured_by(a.out_fd, 1, pod_ip(3), 7070));	/* same node; same L2 in bridge mode */
	CHECK(!has_pending(node_srv) && !has_pending(p3_srv));
	/* Inbound: from a non-enrolled pod, and from the node's forwarding path, to 15006. */
	CHECK(captured_by(a.in_fd, 2, pod_ip(1), 9090));
	CHECK(!has_pending(p1_app));
	/* Not enrolled: untouched. */
	CHECK(reaches(node_srv, 2, NULL, false, NODE_IP, 7070));
	CHECK(reaches(p3_srv, 2, NULL, false, pod_ip(3), 7070));
	/* The node's own sockets are never captured (no loops): the agent's upstream to the
	 * pod, plain and source-preserving (transparent, spoofing pod 2's IP). */
	CHECK(reaches(p1_app, 0, NULL, false, pod_ip(1), 9090));
	CHECK(reaches(p1_app, 0, pod_ip(2), true, pod_ip(1), 9090));

	/* A pod whose interface appears later is attached on the link/route/neighbour events. */
	REQUIRE(make_pod(4, bridge) == 0);
	p4_app = tcp_socket(4, pod_ip(4), 9090, false, true);
	CHECK(p4_app >= 0);
	CHECK(wait_attached(a.r, 2, 5000));
	CHECK(captured_by(a.out_fd, 4, FAR_IP, 443));
	CHECK(captured_by(a.in_fd, 2, pod_ip(4), 9090));
	/* A new bridge port may change the bridge's MAC: pod 1's capture follows it. */
	CHECK(captured_by(a.out_fd, 1, FAR_IP, 8081));

	/* Agent down: listeners gone from the sockmap, new SYNs are dropped, never bypass. */
	agent_close_listeners(&a);
	redirect_free(a.r);
	a.r = cur_r = NULL;
	CHECK(blocked(node_srv, 1, NODE_IP, 7070));
	CHECK(blocked(p3_srv, 1, pod_ip(3), 7070));
	CHECK(blocked(p1_app, 2, pod_ip(1), 9090));
	CHECK(reaches(node_srv, 2, NULL, false, NODE_IP, 7070));	/* others unaffected */

	/* Restart: pinned maps re-used, interfaces taken over, capture back. */
	REQUIRE(agent_listen(&a));
	agent_opts(&o, &a);
	a.r = cur_r = redirect_new(&o);
	REQUIRE(a.r);
	CHECK_EQ_INT(n_attached(a.r), 2);
	CHECK(captured_by(a.out_fd, 1, NODE_IP, 7070));
	CHECK_EQ_INT(set_pods(a.r, enrolled, 2), 0);
	CHECK_EQ_INT(n_attached(a.r), 2);
	CHECK(captured_by(a.out_fd, 1, FAR_IP, 8080));
	CHECK(captured_by(a.in_fd, 2, pod_ip(1), 9090));

	/* Un-enrolling pod 1 releases it; pod 4 stays captured. */
	CHECK_EQ_INT(set_pods(a.r, &enrolled[1], 1), 0);
	CHECK_EQ_INT(n_attached(a.r), 1);
	CHECK(reaches(node_srv, 1, NULL, false, NODE_IP, 7070));
	CHECK(reaches(p1_app, 2, NULL, false, pod_ip(1), 9090));
	CHECK(captured_by(a.out_fd, 4, NODE_IP, 7070));
	{
		json_t *j = redirect_state_json(a.r);
		json_t *c = j ? json_object_get(j, "counters") : NULL;
		CHECK(c && json_integer_value(json_object_get(c, "captured_outbound")) > 0);
		CHECK(json_object_get(json_object_get(j, "listeners"), "outbound") != json_null());
		json_decref(j);
	}

	/* Uninstall: nothing left, and traffic flows as without an agent. */
	redirect_free(a.r);
	a.r = cur_r = NULL;
	agent_opts(&o, NULL);
	CHECK_EQ_INT(redirect_cleanup(&o), 0);
	CHECK(no_capture_left());
	CHECK(strncmp(sh_out("cat /proc/sys/net/ipv4/tcp_early_demux"), "1", 1) == 0);
	CHECK(!strstr(sh_out("bridge fdb show | grep -v permanent"), "static"));
	CHECK(reaches(node_srv, 4, NULL, false, NODE_IP, 7070));
	CHECK(reaches(p4_app, 2, NULL, false, pod_ip(4), 9090));
	CHECK_EQ_INT(redirect_cleanup(&o), 0);	/* idempotent */

	agent_close_listeners(&a);
	close(node_srv);
	close(p1_app);
	close(p3_srv);
	if (p4_app >= 0)
		close(p4_app);
	teardown_all();
}

TEST(routed)
{
	scenario(false);
	teardown_all();
}

TEST(bridge)
{
	scenario(true);
	teardown_all();
}

int main(void)
{
	if (geteuid() != 0) {
		/* Not run is not passed: the capture tests need root (CI runs them as root). */
		printf("not ok - capture_netns (needs root: network namespaces and BPF)\n");
		return 1;
	}
	log_set_level(getenv("AMBIT_TEST_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_WARN);
	orig_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (orig_ns < 0)
		return 1;
	reap_stale();
	atexit(teardown_all);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	signal(SIGPIPE, SIG_IGN);
	int rc = test_main("capture_netns");
	teardown_all();
	close(orig_ns);
	orig_ns = -1;
	return rc;
}
