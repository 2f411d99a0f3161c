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
#define ETH_ALEN	6
#define IP_MF		0x2000
#define IP_OFFSET	0x1fff
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
	struct iphdr *ip;
	struct tcphdr *tcp;	/* NULL for a non-first fragment */
};

/* Parses Ethernet + IPv4 + TCP with every header bounds-checked. 0 when the packet is IPv4
 * TCP (p filled), -1 for anything else (IPv6 capture is a TODO; ARP, UDP, ICMP, runts). */
static __always_inline int parse_tcp4(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct tcphdr *tcp;
	__u32 ihl;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5 ||
	    ip->protocol != IPPROTO_TCP)
		return -1;
	p->eth = eth;
	p->ip = ip;
	p->tcp = NULL;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return 0;
	ihl = ip->ihl * 4;
	tcp = (void *)ip + ihl;
	if ((void *)(tcp + 1) > end || tcp->doff < 5)
		return -1;
	p->tcp = tcp;
	return 0;
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

/* tc ingress of the host veth = packets leaving the pod (and those turned around by
 * ambit_egress). */
SEC("tc")
int ambit_ingress(struct __sk_buff *skb)
{
	struct bpf_sock_tuple tuple = {};
	struct redirect_iface *ifc;
	struct bpf_sock *sk;
	__u32 ifindex = skb->ifindex, key;
	struct pkt p;
	long err;

	ifc = bpf_map_lookup_elem(&ambit_ifaces, &ifindex);
	if (!ifc || parse_tcp4(skb, &p)) {
		count(REDIRECT_STAT_PASS);
		return TC_ACT_OK;
	}
	if (!p.tcp) {
		/* Not the first fragment: no ports. Reassembly happens on local delivery,
		 * after which the socket lookup is the kernel's own; never forwarded. */
		count(REDIRECT_STAT_FRAGMENT);
		return deliver_locally(skb, &p, ifc);
	}
	tuple.ipv4.saddr = p.ip->saddr;
	tuple.ipv4.daddr = p.ip->daddr;
	tuple.ipv4.sport = p.tcp->source;
	tuple.ipv4.dport = p.tcp->dest;

	/* An existing connection of the node: the agent's accepted socket (local address =
	 * the original destination), its transparent upstream socket, or a kubelet probe. */
	sk = (struct bpf_sock *)bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4),
						   BPF_F_CURRENT_NETNS_ID, 0);
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
	key = p.ip->daddr == ifc->pod_ip ? REDIRECT_LISTENER_INBOUND : REDIRECT_LISTENER_OUTBOUND;
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
	count(key == REDIRECT_LISTENER_INBOUND ? REDIRECT_STAT_INBOUND : REDIRECT_STAT_OUTBOUND);
	return deliver_locally(skb, &p, ifc);
}

/* tc egress of the host veth = packets going into the pod. The node's own sockets (the
 * agent, kubelet) pass; forwarded or bridged TCP is turned into ingress of this same
 * interface so that ambit_ingress captures it into 15006. */
SEC("tc")
int ambit_egress(struct __sk_buff *skb)
{
	struct redirect_iface *ifc;
	__u32 ifindex = skb->ifindex;
	struct pkt p;

	if (skb->sk)
		return TC_ACT_OK;
	ifc = bpf_map_lookup_elem(&ambit_ifaces, &ifindex);
	if (!ifc || parse_tcp4(skb, &p) || p.ip->daddr != ifc->pod_ip)
		return TC_ACT_OK;
	/* As if the pod had sent it towards the node: its own MAC as source (bridge learning
	 * stays right), the interface's local MAC as destination (PACKET_HOST on re-entry). */
	__builtin_memcpy(p.eth->h_source, p.eth->h_dest, ETH_ALEN);
	__builtin_memcpy(p.eth->h_dest, ifc->local_mac, ETH_ALEN);
	count(REDIRECT_STAT_EGRESS_REDIRECT);
	return bpf_redirect(ifindex, BPF_F_INGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
