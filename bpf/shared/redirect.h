/* SPDX-License-Identifier: Apache-2.0 */
/* What bpf/redirect.bpf.c and agent/redirect.c share: map keys and values, map names and
 * constants of the eBPF capture. Fixed-size __u8..__u64 fields only (both sides compile it). */
#ifndef AMBIT_BPF_SHARED_REDIRECT_H
#define AMBIT_BPF_SHARED_REDIRECT_H

#ifdef __BPF__
/* vmlinux.h already defines the __uN types. */
#else
#include <linux/types.h>
#endif

/* Keys of the listener sockmap (pinned as REDIRECT_MAP_LISTENERS). */
#define REDIRECT_LISTENER_OUTBOUND	0	/* 15001: IPv4 TCP leaving an enrolled pod */
#define REDIRECT_LISTENER_INBOUND	1	/* 15006: IPv4 TCP towards an enrolled pod */
#define REDIRECT_LISTENER_OUTBOUND6	2	/* [::1]:15001, IPV6_V6ONLY: IPv6 TCP leaving it */
#define REDIRECT_LISTENER_INBOUND6	3	/* [::1]:15006, IPV6_V6ONLY: IPv6 TCP towards it */
/* Pod-addressed HBONE (ztunnel's wire format): TCP towards the pod's own port 15008 goes to
 * the agent's HBONE server, which answers with that pod's certificate. */
#define REDIRECT_LISTENER_HBONE		4	/* 127.0.0.1:15008: IPv4 to <pod IP>:15008 */
#define REDIRECT_LISTENER_HBONE6	5	/* [::1]:15008, IPV6_V6ONLY: IPv6 to it */
#define REDIRECT_LISTENER_MAX		6

/* The port of pod-addressed HBONE (CONTRACT.md: the same number as ztunnel's). */
#define REDIRECT_HBONE_PORT		15008

/* Pinned map names (also the file names in the pin dir; at most 15 characters). */
#define REDIRECT_MAP_LISTENERS	"ambit_listeners"
#define REDIRECT_MAP_IFACES	"ambit_ifaces"

/* tc filter identity: fixed so that a restarted agent replaces its programs and cleanup
 * finds them. Program names start with REDIRECT_PROG_PREFIX (checked before detaching). */
#define REDIRECT_TC_HANDLE	0xa3b
#define REDIRECT_TC_PRIORITY	0xa3b
#define REDIRECT_PROG_PREFIX	"ambit_"

/* How the pod's host-side interface is wired. */
enum redirect_iface_mode {
	REDIRECT_MODE_ROUTED = 1,	/* a /32 route to the veth (kindnet, Calico) */
	REDIRECT_MODE_BRIDGE = 2,	/* the veth is a bridge port (flannel cni0) */
};

/* redirect_iface.flags */
#define REDIRECT_IFACE_F_QDISC_OURS	0x1	/* the agent created the clsact qdisc */
#define REDIRECT_IFACE_F_IPV6		0x2	/* pod_ip6 is set (a dual-stack pod) */

/* Value of the ifaces map, key = the host-side ifindex (__u32). */
struct redirect_iface {
	__u32 pod_ip;		/* IPv4, network byte order (0 for an IPv6-only pod) */
	__u8 mode;		/* enum redirect_iface_mode */
	__u8 flags;		/* REDIRECT_IFACE_F_* */
	/* The destination MAC that makes a captured frame go up the node's stack on this
	 * interface: the bridge's MAC (bridge mode) or the host veth's own MAC (routed). */
	__u8 local_mac[6];
	/* Bridge mode: the bridge, whose ingress captured frames are redirected to (the
	 * bridge's own receive path would lose the assigned socket). 0 when routed. */
	__u32 bridge_ifindex;
	/* Bridge mode: the pod's MAC, pinned as a static FDB entry on its port by the agent
	 * (captured frames skip the bridge, so it would never re-learn them). */
	__u8 pod_mac[6];
	__u8 pad[2];
	/* The pod's IPv6 address, network byte order, when flags has REDIRECT_IFACE_F_IPV6:
	 * IPv6 TCP to it is inbound (15006), other IPv6 TCP from the pod outbound (15001). */
	__u32 pod_ip6[4];
};

/* Indexes of the per-CPU counter array (map "stats", not pinned). */
enum redirect_stat {
	REDIRECT_STAT_PASS,		/* not ours: non-TCP, malformed, not enrolled */
	REDIRECT_STAT_SOCKET,		/* assigned to an existing non-listening socket */
	REDIRECT_STAT_OUTBOUND,		/* SYN from the pod assigned to 15001 */
	REDIRECT_STAT_INBOUND,		/* SYN towards the pod assigned to 15006 */
	REDIRECT_STAT_DROP_NO_LISTENER,	/* SYN while the agent is down: fail closed */
	REDIRECT_STAT_DROP_NO_SOCKET,	/* non-SYN without a socket */
	REDIRECT_STAT_DROP_ASSIGN,	/* bpf_sk_assign failed */
	REDIRECT_STAT_EGRESS_REDIRECT,	/* forwarded TCP towards the pod turned into ingress */
	REDIRECT_STAT_FRAGMENT,		/* non-first fragment delivered locally for reassembly */
	REDIRECT_STAT_OUTBOUND6,	/* of REDIRECT_STAT_OUTBOUND: IPv6, to [::1]:15001 */
	REDIRECT_STAT_INBOUND6,		/* of REDIRECT_STAT_INBOUND: IPv6, to [::1]:15006 */
	REDIRECT_STAT_DROP_EXTHDR,	/* IPv6 with more extension headers than are walked */
	REDIRECT_STAT_HBONE,		/* of REDIRECT_STAT_INBOUND: to the pod's port 15008,
					 * assigned to the pod-addressed HBONE listener */
	REDIRECT_STAT_MAX,
};

#endif
