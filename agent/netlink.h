/* SPDX-License-Identifier: Apache-2.0 */
/* The node's routing netlink, for the eBPF capture: finds a pod's host-side interface (routed
 * or bridge CNI), follows link/neighbour/route events, adds and removes the policy rule, the
 * local route and reads tc filter counts. The only user of libnl. */
#ifndef AMBIT_AGENT_NETLINK_H
#define AMBIT_AGENT_NETLINK_H

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct netlink;

/* The host side of a pod, as found by netlink_find_pod_if. */
struct netlink_pod_if {
	int ifindex;
	char ifname[IF_NAMESIZE];
	uint8_t mode;		/* REDIRECT_MODE_ROUTED or REDIRECT_MODE_BRIDGE */
	uint8_t local_mac[6];	/* the bridge's MAC (bridge), the veth's own MAC (routed) */
	int bridge_ifindex;	/* the bridge (bridge mode), else 0 */
	uint8_t pod_mac[6];	/* the pod's MAC (bridge mode), else zero */
};

/* Opens a request socket and, with `events`, a non-blocking socket subscribed to link,
 * neighbour and IPv4/IPv6 route changes. Sockets belong to the caller's network namespace.
 * NULL + errno. */
struct netlink *netlink_new(bool events);
void netlink_free(struct netlink *nl);

/* The event socket (-1 without events), readable when something changed. */
int netlink_event_fd(struct netlink *nl);
/* Reads all pending events. 1 when something changed (or events were lost: resync), 0 when
 * nothing, -errno. Also invalidates the snapshot. */
int netlink_drain_events(struct netlink *nl);

/* Dumps links, IPv4 and IPv6 routes and neighbours (ARP, NDP and bridge FDB) into a snapshot
 * that the lookups below read; call before a batch of lookups. 0 or -errno. */
int netlink_refresh(struct netlink *nl);
/* The host-side interface of the pod at `ip` (AF_INET: 4 bytes, AF_INET6: 16, network order),
 * from the snapshot: the /32 (/128) route's device (routed), or the bridge port that the
 * pod's MAC was learned on (the route to the pod goes to a bridge). 0; -ENOENT when no route
 * leads to it (yet); -EAGAIN when the route goes to a bridge that does not know the pod's MAC
 * or port yet (see netlink_kick_neigh); -EAFNOSUPPORT for another family. */
int netlink_find_pod_if(struct netlink *nl, int family, const void *ip,
			struct netlink_pod_if *out);
/* Name of ifindex in the snapshot into name (IF_NAMESIZE); -ENODEV when gone. */
int netlink_link_name(struct netlink *nl, int ifindex, char *name);
/* MAC of ifindex in the snapshot; -ENODEV when gone. */
int netlink_link_mac(struct netlink *nl, int ifindex, uint8_t mac[6]);
/* Every ifindex of the snapshot; *out is malloc'ed, the caller frees it. 0 or -errno. */
int netlink_links(struct netlink *nl, int **out, size_t *n);
/* Sends one empty UDP datagram to ip:9 (family and bytes as for netlink_find_pod_if) so that
 * the kernel resolves the pod's MAC and a bridge learns its port (bridge CNIs); the neighbour
 * event that follows retries lookups. */
void netlink_kick_neigh(int family, const void *ip);

/* `bridge fdb replace MAC dev PORT master static` (add) or its removal (0 when absent):
 * keeps the bridge from flooding frames for a pod whose frames it no longer sees. */
int netlink_fdb_static(struct netlink *nl, int port_ifindex, const uint8_t mac[6], bool add);

/* `ip [-6] rule add fwmark MARK/MASK lookup TABLE prio PRIO` (family AF_INET or AF_INET6; 0
 * if it already exists) and its removal (every copy; 0 when there was none). 0 or -errno. */
int netlink_rule_add(struct netlink *nl, int family, uint32_t mark, uint32_t mask,
		     uint32_t table, uint32_t prio);
int netlink_rule_del(struct netlink *nl, int family, uint32_t mark, uint32_t mask,
		     uint32_t table, uint32_t prio);
/* `ip route add local 0.0.0.0/0 dev lo table TABLE` (AF_INET6: `local ::/0`) and its removal;
 * same conventions. */
int netlink_local_route_add(struct netlink *nl, int family, uint32_t table);
int netlink_local_route_del(struct netlink *nl, int family, uint32_t table);
/* Number of tc filters under clsact ingress (or egress) of ifindex. >= 0 or -errno. */
int netlink_tc_filter_count(struct netlink *nl, int ifindex, bool ingress);

#endif
