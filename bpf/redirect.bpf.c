// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* eBPF capture on the host-side interface of each enrolled pod (tc clsact): TCP leaving the
 * pod and forwarded TCP towards it is bpf_sk_assign()ed to the agent's transparent listeners. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "bpf/shared/redirect.h"

#define TC_ACT_OK	0
#define TC_ACT_SHOT	2
#define ETH_P_IP	0x0800
#define ETH_P_IPV6	0x86DD
#define ETH_ALEN	6
#define IP_MF		0x2000
#define IP_OFFSET	0x1fff
#define IP6_OFFSET	0xfff8	/* fragment offset bits of an IPv6 fragment header */
/* IPv6 extension headers walked before the upper-layer header (RFC 8200 §4.1 expects at most
 * one of each, two destination options). A TCP segment behind a longer chain is dropped on an
 * enrolled interface rather than passed: a deeper chain must not be a way around capture. */
#define IPV6_EXT_MAX	8
#define NEXTHDR_HOP	0
#define NEXTHDR_ROUTING	43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH	51
#define NEXTHDR_DEST	60
#define BPF_F_CURRENT_NETNS_ID	(-1L)

/* Tunables, set by agent/redirect.c between open and load. */
const volatile __u32 cfg_mark = 0x0a3b0000;
const volatile __u32 cfg_mark_mask = 0xffff0000;

/* The agent's transparent listeners; the kernel drops an entry when its socket closes, so
 * capture fails closed while the agent is down. Pinned: a restarted agent re-fills it. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, REDIRECT_LISTENER_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ambit_listeners SEC(".maps");

/* Host-side ifindex -> the enrolled pod behind it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct redirect_iface);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ambit_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REDIRECT_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &what);
	if (v)
		*v += 1;
}

struct pkt {
	struct ethhdr *eth;
	__u32 family;		/* 4 (ip set) or 6 (ip6 set); 0 before the IP header parsed */
	struct iphdr *ip;	/* IPv4 */
	struct ipv6hdr *ip6;	/* IPv6 */
	struct tcphdr *tcp;	/* NULL for a non-first fragment */
};

/* An IPv6 extension header's first two bytes (hop-by-hop, routing, destination options: length
 * in 8-octet units past the first 8, RFC 8200 §4.3-4.6; AH: 4-octet units past the first 8,
 * RFC 4302 §2.2) and the fragment header (RFC 8200 §4.5). */
struct ext6_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct frag6_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;	/* offset << 3 | M */
	__be32 identification;
};

/* parse_tcp() results. */
#define PARSE_TCP	0	/* TCP (p filled; p->tcp NULL for a non-first fragment) */
#define PARSE_OTHER	-1	/* not TCP, or malformed: passed */
#define PARSE_TOO_DEEP	-2	/* IPv6 with more than IPV6_EXT_MAX extension headers */

static __always_inline int parse_tcp4(void *end, struct pkt *p)
{
	struct iphdr *ip = (void *)(p->eth + 1);
	struct tcphdr *tcp;
	__u32 ihl;

	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5 ||
	    ip->protocol != IPPROTO_TCP)
		return PARSE_OTHER;
	p->ip = ip;
	p->family = 4;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return PARSE_TCP;
	ihl = ip->ihl * 4;
	tcp = (void *)ip + ihl;
	if ((void *)(tcp + 1) > end || tcp->doff < 5)
		return PARSE_OTHER;
	p->tcp = tcp;
	return PARSE_TCP;
}

/* Walks up to IPV6_EXT_MAX extension headers (each bounds-checked) to the TCP header. A
 * non-first fragment of TCP (the fragment header names TCP next) has no ports: PARSE_TCP with
 * p->tcp NULL, as for IPv4. */
static __always_inline int parse_tcp6(void *end, struct pkt *p)
{
	struct ipv6hdr *ip6 = (void *)(p->eth + 1);
	struct tcphdr *tcp;
	void *cur;
	__u8 nexthdr;

	if ((void *)(ip6 + 1) > end || ip6->version != 6)
		return PARSE_OTHER;
	p->ip6 = ip6;
	p->family = 6;
	nexthdr = ip6->nexthdr;
	cur = ip6 + 1;
	for (int i = 0; i <= IPV6_EXT_MAX; i++) {
		struct ext6_hdr *h = cur;
		struct frag6_hdr *f = cur;

		if (nexthdr == IPPROTO_TCP)
			goto tcp;
		if (i == IPV6_EXT_MAX)
			break;
		switch (nexthdr) {
		case NEXTHDR_HOP:
		case NEXTHDR_ROUTING:
		case NEXTHDR_DEST:
			if ((void *)(h + 1) > end)
				return PARSE_OTHER;
			nexthdr = h->nexthdr;
			cur += ((__u32)h->hdrlen + 1) * 8;
			break;
		case NEXTHDR_AUTH:
			if ((void *)(h + 1) > end)
				return PARSE_OTHER;
			nexthdr = h->nexthdr;
			cur += ((__u32)h->hdrlen + 2) * 4;
			break;
		case NEXTHDR_FRAGMENT:
			if ((void *)(f + 1) > end)
				return PARSE_OTHER;
			if (f->frag_off & bpf_htons(IP6_OFFSET))
				return f->nexthdr == IPPROTO_TCP ? PARSE_TCP : PARSE_OTHER;
			nexthdr = f->nexthdr;
			cur = f + 1;
			break;
		default:
			return PARSE_OTHER;	/* UDP, ICMPv6, ESP, no next header, ... */
		}
	}
	return PARSE_TOO_DEEP;
tcp:
	tcp = cur;
	if ((void *)(tcp + 1) > end || tcp->doff < 5)
		return PARSE_OTHER;
	p->tcp = tcp;
	return PARSE_TCP;
}

/* Parses Ethernet + IPv4 or IPv6 (+ extension headers) + TCP, every header bounds-checked.
 * PARSE_TCP, PARSE_OTHER (ARP, UDP, ICMP, runts, bad headers) or PARSE_TOO_DEEP. */
static __always_inline int parse_tcp(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	p->eth = eth;
	p->family = 0;
	p->ip = NULL;
	p->ip6 = NULL;
	p->tcp = NULL;
	if ((void *)(eth + 1) > end)
		return PARSE_OTHER;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return parse_tcp4(end, p);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return parse_tcp6(end, p);
	return PARSE_OTHER;
}

/* parse_tcp(), then barrier_var() (bpf_helpers.h) on p->family, which the code below
 * branches on (never on the header pointers: the verifier does not take a packet pointer
 * for non-NULL). The barrier keeps clang from re-deriving the family from the EtherType, a
 * relation the verifier cannot follow (it does not narrow a value on "!="). */
static __always_inline int parse_pkt(struct __sk_buff *skb, struct pkt *p)
{
	int rc = parse_tcp(skb, p);

	barrier_var(p->family);
	return rc;
}

static __always_inline bool ip6_eq(const struct in6_addr *a, const __u32 *b)
{
	const __u32 *x = a->in6_u.u6_addr32;
	return x[0] == b[0] && x[1] == b[1] && x[2] == b[2] && x[3] == b[3];
}

/* Is the packet addressed to the pod behind ifc (its IPv4, or its IPv6 when it has one)? */
static __always_inline bool to_pod(const struct pkt *p, const struct redirect_iface *ifc)
{
	if (p->family == 4)
		return p->ip->daddr == ifc->pod_ip;
	return p->family == 6 && (ifc->flags & REDIRECT_IFACE_F_IPV6) &&
	       ip6_eq(&p->ip6->daddr, ifc->pod_ip6);
}

/* Makes the frame go up the node's stack: the local MAC of this interface as destination
 * (needed for bridge ports, where the bridge would otherwise L2-forward it), and the fwmark
 * that the agent's policy rule routes to `local 0.0.0.0/0 dev lo`. */
static __always_inline int deliver_locally(struct __sk_buff *skb, struct pkt *p,
					   const struct redirect_iface *ifc)
{
	__builtin_memcpy(p->eth->h_dest, ifc->local_mac, ETH_ALEN);
	skb->mark = (skb->mark & ~cfg_mark_mask) | (cfg_mark & cfg_mark_mask);
	if (ifc->mode == REDIRECT_MODE_BRIDGE && ifc->bridge_ifindex)
		return bpf_redirect(ifc->bridge_ifindex, BPF_F_INGRESS);
	return TC_ACT_OK;
}

/* Steers a SYN with no socket to the agent's listener for its direction and family. A SYN
 * towards the pod's own port 15008 is HBONE addressed to the pod (as ztunnel and Istio's
 * waypoints send it): the agent's HBONE server terminates it in the pod's name. */
static __always_inline int assign_listener(struct __sk_buff *skb, struct pkt *p,
					   const struct redirect_iface *ifc)
{
	bool inbound = to_pod(p, ifc);
	bool hbone = p->tcp->dest == bpf_htons(REDIRECT_HBONE_PORT);
	struct bpf_sock *sk;
	__u32 key;
	long err;

	if (inbound && hbone)
		key = p->family == 4 ? REDIRECT_LISTENER_HBONE : REDIRECT_LISTENER_HBONE6;
	else if (p->family == 4)
		key = inbound ? REDIRECT_LISTENER_INBOUND : REDIRECT_LISTENER_OUTBOUND;
	else
		key = inbound ? REDIRECT_LISTENER_INBOUND6 : REDIRECT_LISTENER_OUTBOUND6;
	sk = bpf_map_lookup_elem(&ambit_listeners, &key);
	if (!sk) {
		count(REDIRECT_STAT_DROP_NO_LISTENER);
		return TC_ACT_SHOT;
	}
	err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		count(REDIRECT_STAT_DROP_ASSIGN);
		return TC_ACT_SHOT;
	}
	count(inbound ? REDIRECT_STAT_INBOUND : REDIRECT_STAT_OUTBOUND);
	if (inbound && hbone)
		count(REDIRECT_STAT_HBONE);
	if (p->family == 6)
		count(inbound ? REDIRECT_STAT_INBOUND6 : REDIRECT_STAT_OUTBOUND6);
	return deliver_locally(skb, p, ifc);
}

/* tc ingress of the host veth = packets leaving the pod (and those turned around by
 * ambit_egress). */
SEC("tc")
int ambit_ingress(struct __sk_buff *skb)
{
	struct bpf_sock_tuple tuple = {};
	struct redirect_iface *ifc;
	struct bpf_sock *sk;
	__u32 ifindex = skb->ifindex, tlen;
	struct pkt p;
	long err;
	int rc;

	ifc = bpf_map_lookup_elem(&ambit_ifaces, &ifindex);
	if (!ifc) {
		count(REDIRECT_STAT_PASS);
		return TC_ACT_OK;
	}
	rc = parse_pkt(skb, &p);
	if (rc == PARSE_TOO_DEEP) {
		count(REDIRECT_STAT_DROP_EXTHDR);
		return TC_ACT_SHOT;
	}
	if (rc != PARSE_TCP) {
		count(REDIRECT_STAT_PASS);
		return TC_ACT_OK;
	}
	if (!p.tcp) {
		/* Not the first fragment: no ports. Reassembly happens on local delivery,
		 * after which the socket lookup is the kernel's own; never forwarded. */
		count(REDIRECT_STAT_FRAGMENT);
		return deliver_locally(skb, &p, ifc);
	}
	if (p.family == 4) {
		tuple.ipv4.saddr = p.ip->saddr;
		tuple.ipv4.daddr = p.ip->daddr;
		tuple.ipv4.sport = p.tcp->source;
		tuple.ipv4.dport = p.tcp->dest;
		tlen = sizeof(tuple.ipv4);
	} else if (p.family == 6) {
		__builtin_memcpy(tuple.ipv6.saddr, p.ip6->saddr.in6_u.u6_addr32, 16);
		__builtin_memcpy(tuple.ipv6.daddr, p.ip6->daddr.in6_u.u6_addr32, 16);
		tuple.ipv6.sport = p.tcp->source;
		tuple.ipv6.dport = p.tcp->dest;
		tlen = sizeof(tuple.ipv6);
	} else {
		return TC_ACT_OK;	/* not reached: PARSE_TCP sets one of them */
	}

	/* An existing connection of the node: the agent's accepted socket (local address =
	 * the original destination), its transparent upstream socket, or a kubelet probe. */
	sk = (struct bpf_sock *)bpf_skc_lookup_tcp(skb, &tuple, tlen, BPF_F_CURRENT_NETNS_ID, 0);
	if (sk) {
		if (sk->state != BPF_TCP_LISTEN) {
			err = bpf_sk_assign(skb, sk, 0);
			bpf_sk_release(sk);
			if (err) {
				count(REDIRECT_STAT_DROP_ASSIGN);
				return TC_ACT_SHOT;
			}
			count(REDIRECT_STAT_SOCKET);
			return deliver_locally(skb, &p, ifc);
		}
		/* A node listener that happens to match (say *:22): not the pod's peer. */
		bpf_sk_release(sk);
	}
	if (!p.tcp->syn || p.tcp->ack) {
		count(REDIRECT_STAT_DROP_NO_SOCKET);
		return TC_ACT_SHOT;
	}
	return assign_listener(skb, &p, ifc);
}

/* tc egress of the host veth = packets going into the pod. The node's own sockets (the
 * agent, kubelet) pass; forwarded or bridged TCP (IPv4 or IPv6) is turned into ingress of
 * this same interface so that ambit_ingress captures it into 15006. */
SEC("tc")
int ambit_egress(struct __sk_buff *skb)
{
	struct redirect_iface *ifc;
	__u32 ifindex = skb->ifindex;
	struct pkt p;
	int rc;

	if (skb->sk)
		return TC_ACT_OK;
	ifc = bpf_map_lookup_elem(&ambit_ifaces, &ifindex);
	if (!ifc)
		return TC_ACT_OK;
	/* A chain too deep to parse goes round too: ambit_ingress drops it, so that it cannot
	 * reach the pod uncaptured. */
	rc = parse_pkt(skb, &p);
	if ((rc != PARSE_TCP && rc != PARSE_TOO_DEEP) || !to_pod(&p, ifc))
		return TC_ACT_OK;
	/* As if the pod had sent it towards the node: its own MAC as source (bridge learning
	 * stays right), the interface's local MAC as destination (PACKET_HOST on re-entry). */
	__builtin_memcpy(p.eth->h_source, p.eth->h_dest, ETH_ALEN);
	__builtin_memcpy(p.eth->h_dest, ifc->local_mac, ETH_ALEN);
	count(REDIRECT_STAT_EGRESS_REDIRECT);
	return bpf_redirect(ifindex, BPF_F_INGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
