// SPDX-License-Identifier: Apache-2.0
/* Accepts captured connections, resolves where they go against the current model, and
 * starts the upstream leg; conn.c moves the bytes from then on. */
#include "agent/proxy.h"
#include "agent/policy.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROXY_ACCEPT_BATCH 64
#define PROXY_BACKLOG 4096

struct listener {
	struct proxy *p;
	struct loop_io io;
	int fd;
	enum conn_kind kind;
	struct sockaddr_storage addr;
	bool listening;
};

struct proxy {
	struct loop *loop;
	struct proxy_opts opts;
	char *node_name;
	char *trust_domain;
	struct listener out, in;
	struct listener out6, in6;	/* fd -1 when the host has no IPv6 */
	struct proxy_mesh mesh;
	uint32_t rr;		/* round-robin cursor for service endpoints */
};

int proxy_bind_transparent(const struct sockaddr_storage *addr)
{
	int one = 1, fd, err;
	int lvl = addr->ss_family == AF_INET6 ? SOL_IPV6 : SOL_IP;
	int opt = addr->ss_family == AF_INET6 ? IPV6_TRANSPARENT : IP_TRANSPARENT;

	fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	/* IPv6 only: the BPF program hands IPv4 to the IPv4 listener, and accepted sockets keep
	 * plain IPv4 addresses rather than v4-mapped ones. */
	/* SO_REUSEPORT: the agent being upgraded keeps its listener on the same port until it
	 * closes it (then the kernel hands its queued connections to ours, tcp_migrate_req). */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1 ||
	    (addr->ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1) ||
	    setsockopt(fd, lvl, opt, &one, sizeof(one)) == -1 ||
	    bind(fd, (const struct sockaddr *)addr, sockaddr_len(addr)) == -1) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

int proxy_listen_transparent(const struct sockaddr_storage *addr)
{
	int fd = proxy_bind_transparent(addr);
	if (fd >= 0 && listen(fd, PROXY_BACKLOG) == -1) {
		int err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

bool proxy_workload_is_local(const struct proxy *p, const struct model_workload *w)
{
	return w && w->node && strcmp(w->node, p->node_name) == 0;
}

char *proxy_service_fqdn(const struct model_service *s)
{
	char *out;
	if (asprintf(&out, "%s.%s.svc.cluster.local", s->name, s->namespace) < 0)
		return NULL;
	return out;
}

int proxy_inbound_service(struct conn_info *ci, const struct model *m,
			  const struct model_workload *dst, const struct model_service *waypoint)
{
	const struct model_service *svc;

	if (ci->service || !dst)
		return 0;
	svc = model_service_of_endpoint(m, dst, sockaddr_port(&ci->target), waypoint);
	if (svc && !(ci->service = proxy_service_fqdn(svc)))
		return -ENOMEM;
	return 0;
}

int proxy_peer_fill(struct conn_peer *peer, const struct model_workload *w, const char *td)
{
	if (!w)
		return 0;
	peer->workload = strdup(w->name);
	peer->namespace = strdup(w->namespace);
	peer->service_account = strdup(w->service_account);
	peer->canonical_service = strdup(w->canonical_service);
	if (w->node)
		peer->node = strdup(w->node);
	if (asprintf(&peer->principal, "spiffe://%s/ns/%s/sa/%s", td, w->namespace,
		     w->service_account) < 0)
		peer->principal = NULL;
	if (!peer->workload || !peer->namespace || !peer->service_account ||
	    !peer->canonical_service || !peer->principal || (w->node && !peer->node))
		return -ENOMEM;
	return 0;
}

const struct model_workload *proxy_pick_endpoint(struct proxy *p, const struct model *m,
						 const struct model_service *svc, uint16_t port,
						 int family, struct sockaddr_storage *target)
{
	uint16_t tport = model_service_target_port(svc, port);
	if (!tport || !svc->nendpoints)
		return NULL;
	for (int tries = 0; tries < svc->nendpoints; tries++) {
		const struct model_workload *w =
			&m->workloads[svc->endpoints[p->rr++ % (uint32_t)svc->nendpoints]];
		const struct sockaddr_storage *a = model_workload_addr(w, family);
		if (!a)
			continue;
		*target = *a;
		sockaddr_set_port(target, tport);
		return w;
	}
	return NULL;
}

int proxy_connect_tcp(struct proxy *p, struct conn *c, const struct sockaddr_storage *target,
		      const struct sockaddr_storage *src_ip)
{
	int fd, one = 1, err;
	struct conn_end *e;

	fd = socket(target->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (src_ip) {
		/* Source preservation: the destination sees the client pod's IP. The reply is
		 * steered back to this socket by the BPF program's socket lookup. */
		struct sockaddr_storage src = *src_ip;
		int lvl = src.ss_family == AF_INET6 ? SOL_IPV6 : SOL_IP;
		int opt = src.ss_family == AF_INET6 ? IPV6_TRANSPARENT : IP_TRANSPARENT;
		sockaddr_set_port(&src, 0);
		if (setsockopt(fd, lvl, opt, &one, sizeof(one)) == -1 ||
		    setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) == -1 ||
		    bind(fd, (struct sockaddr *)&src, sockaddr_len(&src)) == -1) {
			err = -errno;
			goto fail;
		}
	}
	if (connect(fd, (const struct sockaddr *)target, sockaddr_len(target)) == -1 &&
	    errno != EINPROGRESS) {
		err = -errno;
		goto fail;
	}
	e = conn_tcp_end_new(p->loop, fd, true);
	if (!e) {
		err = -ENOMEM;
		goto fail;
	}
	conn_attach(c, CONN_UP, e);
	conn_tcp_end_start(e);
	conn_arm_connect_timeout(c, p->opts.connect_timeout_ms);
	return 0;
fail:
	close(fd);
	return err;
}

bool proxy_is_waypoint_pod(const struct model *m, const struct model_service *svc,
			   const struct model_workload *w)
{
	for (int i = 0; w && i < svc->nendpoints; i++)
		if (&m->workloads[svc->endpoints[i]] == w)
			return true;
	return false;
}

const struct model_service *proxy_protecting_waypoint(const struct model *m,
						      const struct model_workload *w)
{
	const struct model_service *wp = model_waypoint_for(m, NULL, w);
	if (wp || !w)
		return wp;
	for (int i = 0; i < m->nservices; i++) {
		const struct model_service *s = &m->services[i];
		if (s->waypoint.name && proxy_is_waypoint_pod(m, s, w))
			return model_waypoint_for(m, s, NULL);
	}
	return NULL;
}

/* Traffic for a service (or workload) that names a waypoint goes to one of the waypoint's
 * pods, unless it comes from that waypoint. Returns false when it does not apply; sets
 * r->waypoint_wl (NULL: the waypoint has no pod, the caller refuses). */
static bool route_waypoint(struct proxy *p, const struct model *m, struct proxy_route *r,
			   const struct model_workload *dst_wl)
{
	r->waypoint = model_waypoint_for(m, r->svc, r->svc ? NULL : dst_wl);
	if (!r->waypoint || proxy_is_waypoint_pod(m, r->waypoint, r->src))
		return false;
	for (int tries = 0; tries < r->waypoint->nendpoints; tries++) {
		const struct model_workload *w =
			&m->workloads[r->waypoint->endpoints[p->rr++ % (uint32_t)r->waypoint->nendpoints]];
		if (w->naddrs && w->node) {
			r->waypoint_wl = w;
			r->dst_node = model_node_by_name(m, w->node);
			break;
		}
	}
	return true;
}

/* Fills the destination-side facts and starts the upstream leg. */
static void route_outbound(struct proxy *p, struct conn *c, struct model *m)
{
	struct conn_info *ci = conn_info(c);
	struct proxy_route r = { 0 };
	char dst[ADDR_STR_LEN];
	int err;

	r.src = model_workload_by_ip(m, &ci->src);
	r.svc = model_service_by_vip(m, &ci->orig_dst);
	if (proxy_peer_fill(&ci->source, r.src, p->trust_domain))
		goto nomem;
	if (r.svc && !(ci->service = proxy_service_fqdn(r.svc)))
		goto nomem;
	if (p->mesh.connect &&
	    route_waypoint(p, m, &r, r.svc ? NULL : model_workload_by_ip(m, &ci->orig_dst))) {
		char reason[200];
		/* Known before the opened hook: request spans skip waypoint traffic. */
		ci->via_waypoint = true;
		conn_opened(c);
		if (!r.waypoint_wl) {
			snprintf(reason, sizeof(reason), "waypoint %s/%s has no ready pod",
				 r.waypoint->namespace, r.waypoint->name);
			conn_abort(c, CONN_UP, -EHOSTUNREACH, CONN_FLAG_NO_ROUTE, reason);
			return;
		}
		r.target = ci->orig_dst;	/* the waypoint resolves the endpoint itself */
		ci->target = r.target;
		err = p->mesh.connect(p->mesh.arg, c, m, &r);
		if (err)
			conn_abort(c, CONN_UP, err, CONN_FLAG_UPSTREAM_CONNECT_FAILURE,
				   "cannot open HBONE to the waypoint");
		return;
	}
	if (r.svc) {
		r.dst = proxy_pick_endpoint(p, m, r.svc, sockaddr_port(&ci->orig_dst),
					    ci->orig_dst.ss_family, &r.target);
		if (!r.dst) {
			char reason[160];
			snprintf(reason, sizeof(reason), "service %s/%s has no endpoint for port %u",
				 r.svc->namespace, r.svc->name, sockaddr_port(&ci->orig_dst));
			conn_opened(c);
			conn_abort(c, CONN_UP, -EHOSTUNREACH, CONN_FLAG_NO_ROUTE, reason);
			return;
		}
	} else {
		r.dst = model_workload_by_ip(m, &ci->orig_dst);
		r.target = ci->orig_dst;
	}
	ci->target = r.target;
	if (proxy_peer_fill(&ci->destination, r.dst, p->trust_domain))
		goto nomem;
	if (r.dst && r.dst->node)
		r.dst_node = model_node_by_name(m, r.dst->node);
	conn_opened(c);

	if (p->mesh.connect && r.dst && r.dst->enrolled) {
		err = p->mesh.connect(p->mesh.arg, c, m, &r);
	} else {
		/* Plaintext: a destination outside the mesh, or no HBONE. A local enrolled
		 * destination gets the client's IP as source, as its inbound side would. */
		bool preserve = r.dst && r.dst->enrolled && proxy_workload_is_local(p, r.dst);
		err = proxy_connect_tcp(p, c, &r.target, preserve ? &ci->src : NULL);
	}
	if (err)
		conn_abort(c, CONN_UP, err, CONN_FLAG_UPSTREAM_CONNECT_FAILURE,
			   sockaddr_str(&r.target, dst, sizeof(dst)));
	return;
nomem:
	conn_opened(c);
	conn_abort(c, CONN_DOWN, -ENOMEM, CONN_FLAG_OVERFLOW, "out of memory");
}

static void route_inbound_plain(struct proxy *p, struct conn *c, struct model *m)
{
	struct conn_info *ci = conn_info(c);
	const struct model_workload *dst = model_workload_by_ip(m, &ci->orig_dst);
	char why[600];
	int err;

	ci->target = ci->orig_dst;
	if (proxy_peer_fill(&ci->source, model_workload_by_ip(m, &ci->src), p->trust_domain) ||
	    proxy_peer_fill(&ci->destination, dst, p->trust_domain) ||
	    proxy_inbound_service(ci, m, dst, NULL)) {
		conn_opened(c);
		conn_abort(c, CONN_DOWN, -ENOMEM, CONN_FLAG_OVERFLOW, "out of memory");
		return;
	}
	/* Plaintext from outside the mesh never came through a waypoint. */
	ci->waypoint_bypass = dst && proxy_protecting_waypoint(m, dst) != NULL;
	bool local = dst && dst->enrolled && proxy_workload_is_local(p, dst);
	/* L4 authorization of plaintext: no identity (PeerAuthentication STRICT refuses it);
	 * a denial resets the client (SO_LINGER 0). */
	bool denied = local && policy_check_inbound(c, m, dst, NULL, why, sizeof(why)) != 0;
	conn_opened(c);
	if (!local) {
		conn_abort(c, CONN_UP, -EHOSTUNREACH, CONN_FLAG_NO_ROUTE,
			   "inbound capture for an address that is not a local enrolled workload");
		return;
	}
	if (denied) {
		conn_abort(c, CONN_DOWN, -EACCES, CONN_FLAG_DENIED, why);
		return;
	}
	err = proxy_connect_tcp(p, c, &ci->orig_dst, &ci->src);
	if (err)
		conn_abort(c, CONN_UP, err, CONN_FLAG_UPSTREAM_CONNECT_FAILURE, strerror(-err));
}

static void accept_one(struct listener *ls, int fd)
{
	struct proxy *p = ls->p;
	struct conn_opts co = { .buffer_size = p->opts.buffer_size };
	struct sockaddr_storage src, dst;
	socklen_t sl = sizeof(src), dl = sizeof(dst);
	struct conn *c;
	struct conn_end *down;
	struct model *m;
	int one = 1;

	if (getpeername(fd, (struct sockaddr *)&src, &sl) == -1 ||
	    getsockname(fd, (struct sockaddr *)&dst, &dl) == -1) {
		close(fd);
		return;
	}
	/* The original destination is our own listener: someone dialled 15001/15006 directly.
	 * Forwarding it would loop. */
	if (sockaddr_ip_equal(&dst, &ls->addr) && sockaddr_port(&dst) == sockaddr_port(&ls->addr)) {
		pr_warn_rl("refusing a direct connection to the capture port from %s",
			   sockaddr_str(&src, (char[ADDR_STR_LEN]){ 0 }, ADDR_STR_LEN));
		close(fd);
		return;
	}
	if (conn_count() >= p->opts.max_connections) {
		pr_warn_rl("connection limit %u reached; refusing", p->opts.max_connections);
		struct linger lg = { 1, 0 };
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = conn_new(p->loop, &co);
	down = c ? conn_tcp_end_new(p->loop, fd, false) : NULL;
	if (!down) {
		pr_warn_rl("out of memory accepting a connection");
		if (c) {
			conn_opened(c);
			conn_abort(c, CONN_DOWN, -ENOMEM, CONN_FLAG_OVERFLOW, "out of memory");
		}
		close(fd);
		return;
	}
	conn_attach(c, CONN_DOWN, down);
	conn_tcp_end_start(down);
	conn_info(c)->kind = ls->kind;
	conn_info(c)->src = src;
	conn_info(c)->orig_dst = dst;
	m = model_current();
	if (ls->kind == CONN_OUTBOUND)
		route_outbound(p, c, m);
	else
		route_inbound_plain(p, c, m);
	model_unref(m);
}

static void on_accept(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct listener *ls = io->arg;
	(void)l, (void)events;

	for (int i = 0; i < PROXY_ACCEPT_BATCH; i++) {
		int fd = accept4(ls->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				pr_warn_rl("accept: %s", strerror(errno));
			return;
		}
		accept_one(ls, fd);
	}
}

static int listener_listen(struct proxy *p, struct listener *ls);

/* Starts ls on addr. With `optional` (the IPv6 listeners), a host without IPv6 is not an
 * error: ls stays closed (fd -1) and 0 is returned. */
static int listener_start(struct proxy *p, struct listener *ls, enum conn_kind kind,
			  const struct sockaddr_storage *addr, bool optional)
{
	char a[ADDR_STR_LEN];
	ls->p = p;
	ls->kind = kind;
	ls->addr = *addr;
	ls->fd = proxy_bind_transparent(addr);
	if (ls->fd == -EADDRINUSE) {
		struct sockaddr_storage any = *addr;
		sockaddr_set_port(&any, 0);
		pr_warn("%s is held without SO_REUSEPORT (an agent from before surge upgrades?): "
			"listening on an ephemeral port instead; capture goes by the sockmap",
			sockaddr_str(addr, a, sizeof(a)));
		ls->fd = proxy_bind_transparent(&any);
	}
	if (optional && (ls->fd == -EAFNOSUPPORT || ls->fd == -EADDRNOTAVAIL)) {
		pr_info("no IPv6 listener on %s: %s", sockaddr_str(addr, a, sizeof(a)),
			strerror(-ls->fd));
		ls->fd = -1;
		return 0;
	}
	if (ls->fd < 0) {
		pr_err("cannot listen on %s (transparent): %s", sockaddr_str(addr, a, sizeof(a)),
		       strerror(-ls->fd));
		return ls->fd;
	}
	loop_io_init(&ls->io, ls->fd, on_accept, ls);
	return p->opts.defer_listen ? 0 : listener_listen(p, ls);
}

/* listen() joins the port's SO_REUSEPORT group: only then may connections come. */
static int listener_listen(struct proxy *p, struct listener *ls)
{
	char a[ADDR_STR_LEN];
	int err;

	if (ls->fd < 0 || ls->listening)
		return 0;
	err = listen(ls->fd, PROXY_BACKLOG) == -1 ? -errno : loop_io_set(p->loop, &ls->io, EPOLLIN);
	if (err) {
		pr_err("cannot listen on %s (transparent): %s", sockaddr_str(&ls->addr, a, sizeof(a)),
		       strerror(-err));
		return err;
	}
	ls->listening = true;
	return 0;
}

int proxy_start_listening(struct proxy *p)
{
	struct listener *ls[] = { &p->out, &p->in, &p->out6, &p->in6 };
	int err;
	for (size_t i = 0; i < ARRAY_SIZE(ls); i++)
		if ((err = listener_listen(p, ls[i])))
			return err;
	return 0;
}

/* [::1] with the port of v4 (the default IPv6 companion of an IPv4 listener). */
static void loopback6(struct sockaddr_storage *out, const struct sockaddr_storage *v4)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;

	memset(out, 0, sizeof(*out));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_addr = in6addr_loopback;
	sockaddr_set_port(out, sockaddr_port(v4));
}

struct proxy *proxy_new(const struct proxy_opts *opts)
{
	struct proxy *p = calloc(1, sizeof(*p));
	struct sockaddr_storage out6, in6;
	int err;

	if (!p)
		return NULL;
	p->loop = opts->loop;
	p->opts = *opts;
	p->out.fd = p->in.fd = p->out6.fd = p->in6.fd = -1;
	p->node_name = strdup(opts->node_name ? opts->node_name : "");
	p->trust_domain = strdup(opts->trust_domain ? opts->trust_domain : "cluster.local");
	if (!p->node_name || !p->trust_domain) {
		err = -ENOMEM;
		goto fail;
	}
	out6 = opts->outbound6_addr;
	in6 = opts->inbound6_addr;
	if (out6.ss_family != AF_INET6)
		loopback6(&out6, &opts->outbound_addr);
	if (in6.ss_family != AF_INET6)
		loopback6(&in6, &opts->inbound_addr);
	if ((err = listener_start(p, &p->out, CONN_OUTBOUND, &opts->outbound_addr, false)) ||
	    (err = listener_start(p, &p->in, CONN_INBOUND_PLAIN, &opts->inbound_addr, false)) ||
	    (err = listener_start(p, &p->out6, CONN_OUTBOUND, &out6, true)) ||
	    (err = listener_start(p, &p->in6, CONN_INBOUND_PLAIN, &in6, true)))
		goto fail;
	return p;
fail:
	proxy_free(p);
	errno = -err;
	return NULL;
}

void proxy_stop_accepting(struct proxy *p)
{
	struct listener *ls[] = { &p->out, &p->in, &p->out6, &p->in6 };
	for (size_t i = 0; i < ARRAY_SIZE(ls); i++) {
		if (ls[i]->fd < 0)
			continue;
		if (ls[i]->listening)
			loop_io_del(p->loop, &ls[i]->io);
		close(ls[i]->fd);
		ls[i]->fd = -1;
		ls[i]->listening = false;
	}
}

void proxy_free(struct proxy *p)
{
	if (!p)
		return;
	proxy_stop_accepting(p);
	free(p->node_name);
	free(p->trust_domain);
	free(p);
}

int proxy_outbound_fd(const struct proxy *p) { return p->out.fd; }
int proxy_inbound_fd(const struct proxy *p) { return p->in.fd; }
int proxy_outbound6_fd(const struct proxy *p) { return p->out6.fd; }
int proxy_inbound6_fd(const struct proxy *p) { return p->in6.fd; }

void proxy_set_mesh(struct proxy *p, const struct proxy_mesh *mesh)
{
	p->mesh = *mesh;
}
