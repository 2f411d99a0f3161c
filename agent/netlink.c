// SPDX-License-Identifier: Apache-2.0
/* Routing netlink for the eBPF capture (libnl-route): pod interface lookup for routed and
 * bridge CNIs, link/neighbour/route events, policy rule, local route, tc filter counts. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/fib_rules.h>
#include <linux/if_ether.h>
#include <linux/neighbour.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netlink/netlink.h>
#include <netlink/route/classifier.h>
#include <netlink/route/link.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>

#include "agent/netlink.h"
#include "bpf/shared/redirect.h"
#include "common/log.h"

#ifndef TC_H_CLSACT
#define TC_H_CLSACT TC_H_INGRESS
#endif
#ifndef TC_H_MIN_INGRESS
#define TC_H_MIN_INGRESS 0xFFF2U
#define TC_H_MIN_EGRESS  0xFFF3U
#endif

struct netlink {
	struct nl_sock *sk;		/* requests and dumps */
	struct nl_sock *ev;		/* multicast events, or NULL */
	struct nl_cache *links, *routes, *neighs;
	bool changed;			/* set by the event callback */
};

/* libnl's NLE_* codes back to errno values (nl_geterror has only strings). */
static int nl_errno(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:			return 0;
	case NLE_EXIST:		return -EEXIST;
	case NLE_OBJ_NOTFOUND:	return -ENOENT;
	case NLE_NOMEM:		return -ENOMEM;
	case NLE_PERM:		return -EPERM;
	case NLE_NOACCESS:	return -EACCES;
	case NLE_NODEV:		return -ENODEV;
	case NLE_INVAL:		return -EINVAL;
	case NLE_AGAIN:		return -EAGAIN;
	case NLE_BUSY:		return -EBUSY;
	case NLE_RANGE:		return -ERANGE;
	case NLE_OPNOTSUPP:	return -EOPNOTSUPP;
	case NLE_AF_NOSUPPORT:	return -EAFNOSUPPORT;
	default:		return -EIO;
	}
}

static void free_caches(struct netlink *nl)
{
	nl_cache_free(nl->links);
	nl_cache_free(nl->routes);
	nl_cache_free(nl->neighs);
	nl->links = nl->routes = nl->neighs = NULL;
}

static int on_event(struct nl_msg *msg, void *arg)
{
	struct netlink *nl = arg;
	(void)msg;
	nl->changed = true;
	return NL_OK;
}

struct netlink *netlink_new(bool events)
{
	struct netlink *nl = calloc(1, sizeof(*nl));
	int err;

	if (!nl)
		return NULL;
	nl->sk = nl_socket_alloc();
	if (!nl->sk) {
		err = -ENOMEM;
		goto fail;
	}
	err = nl_errno(nl_connect(nl->sk, NETLINK_ROUTE));
	if (err)
		goto fail;
	if (events) {
		nl->ev = nl_socket_alloc();
		if (!nl->ev) {
			err = -ENOMEM;
			goto fail;
		}
		nl_socket_disable_seq_check(nl->ev);
		nl_socket_modify_cb(nl->ev, NL_CB_VALID, NL_CB_CUSTOM, on_event, nl);
		if ((err = nl_errno(nl_connect(nl->ev, NETLINK_ROUTE))) ||
		    (err = nl_errno(nl_socket_add_memberships(nl->ev, RTNLGRP_LINK, RTNLGRP_NEIGH,
							      RTNLGRP_IPV4_ROUTE,
							      RTNLGRP_IPV6_ROUTE, 0))) ||
		    (err = nl_errno(nl_socket_set_nonblocking(nl->ev))))
			goto fail;
	}
	return nl;
fail:
	netlink_free(nl);
	errno = -err;
	return NULL;
}

void netlink_free(struct netlink *nl)
{
	if (!nl)
		return;
	free_caches(nl);
	nl_socket_free(nl->ev);
	nl_socket_free(nl->sk);
	free(nl);
}

int netlink_event_fd(struct netlink *nl)
{
	return nl->ev ? nl_socket_get_fd(nl->ev) : -1;
}

int netlink_drain_events(struct netlink *nl)
{
	int n;

	if (!nl->ev)
		return 0;
	nl->changed = false;
	do {
		n = nl_recvmsgs_default(nl->ev);
	} while (n > 0);
	if (n < 0 && n != -NLE_AGAIN) {
		/* Lost events (ENOBUFS shows as NLE_NOMEM): the caller resyncs everything. */
		if (n != -NLE_NOMEM && n != -NLE_DUMP_INTR)
			return nl_errno(n);
		nl->changed = true;
	}
	if (nl->changed)
		free_caches(nl);
	return nl->changed ? 1 : 0;
}

int netlink_refresh(struct netlink *nl)
{
	int err;

	free_caches(nl);
	if ((err = nl_errno(rtnl_link_alloc_cache(nl->sk, AF_UNSPEC, &nl->links))) ||
	    (err = nl_errno(rtnl_route_alloc_cache(nl->sk, AF_UNSPEC, 0, &nl->routes))) ||
	    (err = nl_errno(rtnl_neigh_alloc_cache_flags(nl->sk, &nl->neighs, NL_CACHE_AF_ITER)))) {
		free_caches(nl);
		return err;
	}
	return 0;
}

static int ensure_snapshot(struct netlink *nl)
{
	return nl->links && nl->routes && nl->neighs ? 0 : netlink_refresh(nl);
}

static void copy_mac(uint8_t out[6], struct nl_addr *a)
{
	memset(out, 0, 6);
	if (a && nl_addr_get_len(a) == 6)
		memcpy(out, nl_addr_get_binary_addr(a), 6);
}

static unsigned int addr_len(int family)
{
	return family == AF_INET6 ? 16 : family == AF_INET ? 4 : 0;
}

/* Do the first len bits of a and b agree? */
static bool prefix_match(const uint8_t *a, const uint8_t *b, int len)
{
	int bytes = len / 8, bits = len % 8;

	if (memcmp(a, b, (size_t)bytes) != 0)
		return false;
	return !bits || ((a[bytes] ^ b[bytes]) & (uint8_t)(0xff << (8 - bits))) == 0;
}

/* The longest-prefix main-table unicast route of `family` containing ip; NULL if only a
 * default or none. */
static struct rtnl_route *route_to(struct netlink *nl, int family, const uint8_t *ip)
{
	struct rtnl_route *best = NULL;
	int best_len = 0, alen = (int)addr_len(family);

	for (struct nl_object *o = nl_cache_get_first(nl->routes); o; o = nl_cache_get_next(o)) {
		struct rtnl_route *r = (struct rtnl_route *)o;
		struct nl_addr *dst = rtnl_route_get_dst(r);
		int len;

		if (rtnl_route_get_table(r) != RT_TABLE_MAIN || rtnl_route_get_type(r) != RTN_UNICAST ||
		    !dst || nl_addr_get_family(dst) != family || (int)nl_addr_get_len(dst) != alen)
			continue;
		len = (int)nl_addr_get_prefixlen(dst);
		if (len <= best_len || len > alen * 8)
			continue;
		if (prefix_match(ip, nl_addr_get_binary_addr(dst), len)) {
			best = r;
			best_len = len;
		}
	}
	return best;
}

static int route_oif(struct rtnl_route *r)
{
	struct rtnl_nexthop *nh;

	if (rtnl_route_get_nnexthops(r) != 1)
		return 0;
	nh = rtnl_route_nexthop_n(r, 0);
	return nh && !rtnl_route_nh_get_gateway(nh) ? rtnl_route_nh_get_ifindex(nh) : 0;
}

static bool link_is_bridge(struct rtnl_link *l)
{
	const char *type = rtnl_link_get_type(l);
	return type && strcmp(type, "bridge") == 0;
}

static int fill_if(struct netlink_pod_if *out, struct rtnl_link *port, uint8_t mode,
		   struct rtnl_link *local)
{
	const char *name = rtnl_link_get_name(port);

	memset(out, 0, sizeof(*out));
	out->ifindex = rtnl_link_get_ifindex(port);
	snprintf(out->ifname, sizeof(out->ifname), "%s", name ? name : "?");
	out->mode = mode;
	out->bridge_ifindex = mode == REDIRECT_MODE_BRIDGE ? rtnl_link_get_ifindex(local) : 0;
	copy_mac(out->local_mac, rtnl_link_get_addr(local));
	return 0;
}

int netlink_find_pod_if(struct netlink *nl, int family, const void *ip,
			struct netlink_pod_if *out)
{
	struct rtnl_link *dev = NULL, *port = NULL;
	struct nl_addr *addr = NULL, *mac;
	struct rtnl_neigh *n = NULL;
	struct rtnl_route *r;
	int err, oif;

	if (!addr_len(family))
		return -EAFNOSUPPORT;
	if ((err = ensure_snapshot(nl)))
		return err;
	r = route_to(nl, family, ip);
	oif = r ? route_oif(r) : 0;
	if (!oif)
		return -ENOENT;
	dev = rtnl_link_get(nl->links, oif);
	if (!dev)
		return -ENOENT;
	if (!link_is_bridge(dev)) {
		/* Routed CNI: a /32 (/128) straight to the pod's veth. */
		if (nl_addr_get_prefixlen(rtnl_route_get_dst(r)) != addr_len(family) * 8) {
			err = -ENOENT;
			goto out;
		}
		err = fill_if(out, dev, REDIRECT_MODE_ROUTED, dev);
		goto out;
	}
	/* Bridge CNI: pod IP -> its MAC (ARP or NDP on the bridge) -> the port the bridge
	 * learned that MAC on (FDB entry, family AF_BRIDGE, master = the bridge). */
	addr = nl_addr_build(family, ip, addr_len(family));
	if (!addr) {
		err = -ENOMEM;
		goto out;
	}
	n = rtnl_neigh_get(nl->neighs, oif, addr);
	mac = n ? rtnl_neigh_get_lladdr(n) : NULL;
	if (!mac || (rtnl_neigh_get_state(n) & (NUD_FAILED | NUD_INCOMPLETE))) {
		pr_debug("netlink: no neighbour entry yet for a pod on bridge %s",
			 rtnl_link_get_name(dev));
		err = -EAGAIN;
		goto out;
	}
	err = -EAGAIN;
	for (struct nl_object *o = nl_cache_get_first(nl->neighs); o; o = nl_cache_get_next(o)) {
		struct rtnl_neigh *f = (struct rtnl_neigh *)o;
		struct nl_addr *fmac = rtnl_neigh_get_lladdr(f);
		int pidx = rtnl_neigh_get_ifindex(f);

		if (rtnl_neigh_get_family(f) != AF_BRIDGE || !fmac || nl_addr_cmp(fmac, mac) ||
		    pidx == oif)
			continue;
		port = rtnl_link_get(nl->links, pidx);
		if (port && rtnl_link_get_master(port) == oif) {
			err = fill_if(out, port, REDIRECT_MODE_BRIDGE, dev);
			copy_mac(out->pod_mac, mac);
			break;
		}
		rtnl_link_put(port);
		port = NULL;
	}
	if (err == -EAGAIN)
		pr_debug("netlink: pod's MAC not in the FDB of bridge %s yet", rtnl_link_get_name(dev));
out:
	rtnl_link_put(port);
	rtnl_link_put(dev);
	rtnl_neigh_put(n);
	nl_addr_put(addr);
	return err;
}

/* The snapshot's link ifindex into *out (a reference: rtnl_link_put). 0, -ENODEV or the
 * snapshot's error. */
static int link_get(struct netlink *nl, int ifindex, struct rtnl_link **out)
{
	int err = ensure_snapshot(nl);

	if (err)
		return err;
	*out = rtnl_link_get(nl->links, ifindex);
	return *out ? 0 : -ENODEV;
}

int netlink_link_name(struct netlink *nl, int ifindex, char *name)
{
	struct rtnl_link *l;
	int err = link_get(nl, ifindex, &l);

	if (err)
		return err;
	snprintf(name, IF_NAMESIZE, "%s", rtnl_link_get_name(l) ? rtnl_link_get_name(l) : "?");
	rtnl_link_put(l);
	return 0;
}

int netlink_link_mac(struct netlink *nl, int ifindex, uint8_t mac[6])
{
	struct rtnl_link *l;
	int err = link_get(nl, ifindex, &l);

	if (err)
		return err;
	copy_mac(mac, rtnl_link_get_addr(l));
	rtnl_link_put(l);
	return 0;
}

int netlink_links(struct netlink *nl, int **out, size_t *n)
{
	size_t cnt = 0;
	int err, *v;

	if ((err = ensure_snapshot(nl)))
		return err;
	v = calloc((size_t)nl_cache_nitems(nl->links) + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (struct nl_object *o = nl_cache_get_first(nl->links); o; o = nl_cache_get_next(o))
		v[cnt++] = rtnl_link_get_ifindex((struct rtnl_link *)o);
	*out = v;
	*n = cnt;
	return 0;
}

void netlink_kick_neigh(int family, const void *ip)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(9) };
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons(9) };
	const struct sockaddr *sa = family == AF_INET6 ? (struct sockaddr *)&sin6 : (struct sockaddr *)&sin;
	socklen_t len = family == AF_INET6 ? sizeof(sin6) : sizeof(sin);
	int fd;

	if (!addr_len(family))
		return;
	memcpy(family == AF_INET6 ? (void *)&sin6.sin6_addr : (void *)&sin.sin_addr, ip,
	       addr_len(family));
	fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1)
		return;
	(void)!sendto(fd, "", 0, 0, sa, len);
	close(fd);
}

int netlink_fdb_static(struct netlink *nl, int port_ifindex, const uint8_t mac[6], bool add)
{
	struct rtnl_neigh *n = rtnl_neigh_alloc();
	struct nl_addr *ll = nl_addr_build(AF_LLC, mac, 6);
	int err;

	if (!n || !ll) {
		err = -ENOMEM;
		goto out;
	}
	rtnl_neigh_set_family(n, AF_BRIDGE);
	rtnl_neigh_set_ifindex(n, port_ifindex);
	rtnl_neigh_set_lladdr(n, ll);
	rtnl_neigh_set_flags(n, NTF_MASTER);
	rtnl_neigh_set_state(n, NUD_NOARP);
	if (add)
		err = nl_errno(rtnl_neigh_add(nl->sk, n, NLM_F_CREATE | NLM_F_REPLACE));
	else
		err = nl_errno(rtnl_neigh_delete(nl->sk, n, 0));
	if (!add && (err == -ENOENT || err == -ENODEV))
		err = 0;
out:
	nl_addr_put(ll);
	rtnl_neigh_put(n);
	return err;
}

static struct rtnl_rule *rule_build(int family, uint32_t mark, uint32_t mask, uint32_t table,
				     uint32_t prio)
{
	struct rtnl_rule *r = rtnl_rule_alloc();

	if (!r)
		return NULL;
	rtnl_rule_set_family(r, family);
	rtnl_rule_set_mark(r, mark);
	rtnl_rule_set_mask(r, mask);
	rtnl_rule_set_table(r, table);
	rtnl_rule_set_prio(r, prio);
	rtnl_rule_set_action(r, FR_ACT_TO_TBL);
	return r;
}

int netlink_rule_add(struct netlink *nl, int family, uint32_t mark, uint32_t mask,
		     uint32_t table, uint32_t prio)
{
	struct rtnl_rule *r = rule_build(family, mark, mask, table, prio);
	int err;

	if (!r)
		return -ENOMEM;
	err = nl_errno(rtnl_rule_add(nl->sk, r, NLM_F_CREATE | NLM_F_EXCL));
	rtnl_rule_put(r);
	return err == -EEXIST ? 0 : err;
}

int netlink_rule_del(struct netlink *nl, int family, uint32_t mark, uint32_t mask,
		     uint32_t table, uint32_t prio)
{
	struct rtnl_rule *r = rule_build(family, mark, mask, table, prio);
	int err = 0;

	if (!r)
		return -ENOMEM;
	for (int i = 0; i < 64 && !err; i++)
		err = nl_errno(rtnl_rule_delete(nl->sk, r, 0));
	rtnl_rule_put(r);
	return err == -ENOENT ? 0 : err;
}

static struct rtnl_route *local_route_build(int family, uint32_t table)
{
	struct rtnl_route *r = rtnl_route_alloc();
	struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
	static const uint8_t any[16];
	struct nl_addr *dst = addr_len(family) ? nl_addr_build(family, any, addr_len(family)) : NULL;
	int lo = (int)if_nametoindex("lo");

	if (!r || !nh || !dst || !lo) {
		rtnl_route_put(r);
		rtnl_route_nh_free(nh);
		nl_addr_put(dst);
		return NULL;
	}
	nl_addr_set_prefixlen(dst, 0);
	rtnl_route_set_family(r, (uint8_t)family);
	rtnl_route_set_table(r, table);
	rtnl_route_set_type(r, RTN_LOCAL);
	rtnl_route_set_scope(r, RT_SCOPE_HOST);
	rtnl_route_set_dst(r, dst);
	nl_addr_put(dst);
	rtnl_route_nh_set_ifindex(nh, lo);
	rtnl_route_add_nexthop(r, nh);
	return r;
}

int netlink_local_route_add(struct netlink *nl, int family, uint32_t table)
{
	struct rtnl_route *r = local_route_build(family, table);
	int err;

	if (!r)
		return -ENOMEM;
	err = nl_errno(rtnl_route_add(nl->sk, r, NLM_F_CREATE | NLM_F_EXCL));
	rtnl_route_put(r);
	return err == -EEXIST ? 0 : err;
}

int netlink_local_route_del(struct netlink *nl, int family, uint32_t table)
{
	struct rtnl_route *r = local_route_build(family, table);
	int err;

	if (!r)
		return -ENOMEM;
	err = nl_errno(rtnl_route_delete(nl->sk, r, 0));
	rtnl_route_put(r);
	/* ESRCH from the kernel shows as NLE_OBJ_NOTFOUND. */
	return err == -ENOENT ? 0 : err;
}

int netlink_tc_filter_count(struct netlink *nl, int ifindex, bool ingress)
{
	uint32_t parent = TC_H_MAKE(TC_H_CLSACT, ingress ? TC_H_MIN_INGRESS : TC_H_MIN_EGRESS);
	struct nl_cache *c = NULL;
	int err, n;

	err = nl_errno(rtnl_cls_alloc_cache(nl->sk, ifindex, parent, &c));
	if (err)
		return err;
	n = nl_cache_nitems(c);
	nl_cache_free(c);
	return n;
}
