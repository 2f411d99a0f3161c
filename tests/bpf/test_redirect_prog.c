// SPDX-License-Identifier: Apache-2.0
/* BPF unit tests of bpf/redirect.bpf.c with BPF_PROG_TEST_RUN on crafted packets: what passes,
 * what is dropped (fail closed), and the egress turn-around, for IPv4 and IPv6 (extension
 * header chains, fragments, which listener a SYN is steered to). Needs root (CAP_BPF/CAP_NET_ADMIN).
 * Limits of test_run, covered by tests/bpf/test_capture_netns.c on real interfaces instead:
 * bpf_sk_assign() refuses its packets (not at tc ingress: -EOPNOTSUPP), and every test_run skb
 * carries a dummy skb->sk, so ambit_egress always sees a host-originated packet there. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "harness.h"
#include "bpf/redirect.skel.h"
#include "bpf/shared/redirect.h"

#define POD_IP		"10.244.1.11"
#define OTHER_IP	"10.244.2.12"
#define POD_IP6		"fd00:10:244:1::b"
#define OTHER_IP6	"fd00:10:244:2::c"
#define LO_IFINDEX	1	/* test_run's skb->dev is the loopback of the current netns */

static const uint8_t pod_mac[6] = { 0x02, 0, 0, 0, 0, 0x11 };
static const uint8_t node_mac[6] = { 0xee, 0xee, 0xee, 0xee, 0xee, 0xee };
static const uint8_t local_mac[6] = { 0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01 };

static struct redirect_bpf *skel;

static uint32_t ip4(const char *s)
{
	struct in_addr a;
	inet_pton(AF_INET, s, &a);
	return a.s_addr;
}

struct pkt4 {
	struct ethhdr eth;
	struct iphdr ip;
	struct tcphdr tcp;
} __attribute__((packed));

static struct pkt4 tcp4(const char *src, const char *dst, uint16_t sport, uint16_t dport,
			bool syn, bool ack, const uint8_t *smac, const uint8_t *dmac)
{
	struct pkt4 p;
	memset(&p, 0, sizeof(p));
	memcpy(p.eth.h_source, smac, 6);
	memcpy(p.eth.h_dest, dmac, 6);
	p.eth.h_proto = htons(ETH_P_IP);
	p.ip.version = 4;
	p.ip.ihl = 5;
	p.ip.ttl = 64;
	p.ip.protocol = IPPROTO_TCP;
	p.ip.tot_len = htons(sizeof(p.ip) + sizeof(p.tcp));
	p.ip.saddr = ip4(src);
	p.ip.daddr = ip4(dst);
	p.tcp.source = htons(sport);
	p.tcp.dest = htons(dport);
	p.tcp.doff = 5;
	p.tcp.syn = syn;
	p.tcp.ack = ack;
	p.tcp.window = htons(1024);
	return p;
}

/* Runs prog on data; returns the verdict (or -errno) and fills out/mark when given. */
static int run(const struct bpf_program *prog, const void *data, size_t len, void *out,
	       uint32_t *mark)
{
	struct __sk_buff ctx = { 0 }, ctx_out = { 0 };
	uint8_t buf[256];
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = data, .data_size_in = (__u32)len,
		    .data_out = buf, .data_size_out = sizeof(buf), .ctx_in = &ctx,
		    .ctx_size_in = sizeof(ctx), .ctx_out = &ctx_out, .ctx_size_out = sizeof(ctx_out),
		    .repeat = 1);
	int err = bpf_prog_test_run_opts(bpf_program__fd(prog), &o);
	if (err)
		return err;
	if (out)
		memcpy(out, buf, len < sizeof(buf) ? len : sizeof(buf));
	if (mark)
		*mark = ctx_out.mark;
	return (int)o.retval;
}

static uint64_t stat(uint32_t idx)
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t vals[ncpu > 0 ? ncpu : 1], sum = 0;

	if (ncpu <= 0 || bpf_map_lookup_elem(bpf_map__fd(skel->maps.stats), &idx, vals))
		return (uint64_t)-1;
	for (int i = 0; i < ncpu; i++)
		sum += vals[i];
	return sum;
}

static int in_verdict(const void *data, size_t len)
{
	return run(skel->progs.ambit_ingress, data, len, NULL, NULL);
}

/* ---- IPv6 packets: Ethernet + IPv6 + an extension header chain + an upper-layer header ---- */

#define NEXTHDR_HOP	0
#define NEXTHDR_ROUTING	43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH	51
#define NEXTHDR_NONE	59
#define NEXTHDR_DEST	60

/* Headers are built in aligned locals and copied in: after the 14-byte Ethernet header, the
 * IPv6 and TCP headers of a byte buffer are not 4-byte aligned. */
struct pkt6 {
	uint8_t b[512];
	size_t len;
	size_t nexthdr_at;	/* where the last header's next-header byte is */
};

/* Starts an IPv6 packet src -> dst (no payload yet). */
static void p6_init(struct pkt6 *p, const char *src, const char *dst, const uint8_t *smac,
		    const uint8_t *dmac)
{
	struct ethhdr eth = { .h_proto = htons(ETH_P_IPV6) };
	struct ipv6hdr ip6 = { .version = 6, .hop_limit = 64 };

	memset(p, 0, sizeof(*p));
	memcpy(eth.h_source, smac, 6);
	memcpy(eth.h_dest, dmac, 6);
	inet_pton(AF_INET6, src, &ip6.saddr);
	inet_pton(AF_INET6, dst, &ip6.daddr);
	memcpy(p->b, &eth, sizeof(eth));
	memcpy(p->b + sizeof(eth), &ip6, sizeof(ip6));
	p->len = sizeof(eth) + sizeof(ip6);
	p->nexthdr_at = sizeof(eth) + offsetof(struct ipv6hdr, nexthdr);
}

#define P6_L3 sizeof(struct ethhdr)				/* IPv6 header offset */
#define P6_L4 (sizeof(struct ethhdr) + sizeof(struct ipv6hdr))	/* first header after it */

static void p6_set_payload_len(struct pkt6 *p)
{
	uint16_t n = htons((uint16_t)(p->len - P6_L4));
	memcpy(p->b + P6_L3 + offsetof(struct ipv6hdr, payload_len), &n, 2);
}

/* Appends an extension header of `type` that is `bytes` long (hop-by-hop, routing and
 * destination options: a multiple of 8; AH: a multiple of 4, at least 12). */
static void p6_ext(struct pkt6 *p, uint8_t type, size_t bytes)
{
	uint8_t *h = p->b + p->len;

	p->b[p->nexthdr_at] = type;
	memset(h, 0, bytes);
	h[1] = (uint8_t)(type == NEXTHDR_AUTH ? bytes / 4 - 2 : bytes / 8 - 1);
	if (type != NEXTHDR_AUTH && bytes >= 8) {
		h[2] = 1;	/* PadN over the rest (RFC 8200 §4.2) */
		h[3] = (uint8_t)(bytes - 4);
	}
	p->nexthdr_at = p->len;
	p->len += bytes;
	p6_set_payload_len(p);
}

/* Appends a fragment header: byte offset (a multiple of 8) and the M flag. */
static void p6_frag(struct pkt6 *p, uint16_t offset, bool more)
{
	uint8_t *h = p->b + p->len;
	uint16_t off = htons((uint16_t)(offset | (more ? 1 : 0)));

	p->b[p->nexthdr_at] = NEXTHDR_FRAGMENT;
	memset(h, 0, 8);
	memcpy(h + 2, &off, 2);
	memcpy(h + 4, "\x12\x34\x56\x78", 4);
	p->nexthdr_at = p->len;
	p->len += 8;
	p6_set_payload_len(p);
}

/* Ends the chain with a TCP header (or 20 bytes of another protocol). */
static void p6_l4(struct pkt6 *p, uint8_t proto, uint16_t sport, uint16_t dport, bool syn, bool ack)
{
	struct tcphdr tcp = { .source = htons(sport), .dest = htons(dport), .doff = 5,
			      .syn = syn, .ack = ack, .window = htons(1024) };

	p->b[p->nexthdr_at] = proto;
	memcpy(p->b + p->len, &tcp, sizeof(tcp));
	p->len += sizeof(tcp);
	p6_set_payload_len(p);
}

static struct pkt6 tcp6(const char *src, const char *dst, uint16_t sport, uint16_t dport,
			bool syn, bool ack)
{
	struct pkt6 p;
	p6_init(&p, src, dst, pod_mac, node_mac);
	p6_l4(&p, IPPROTO_TCP, sport, dport, syn, ack);
	return p;
}

static int in6_verdict(const struct pkt6 *p)
{
	return run(skel->progs.ambit_ingress, p->b, p->len, NULL, NULL);
}

/* A listening socket of `family` put in the sockmap at key (test_run cannot complete the
 * bpf_sk_assign, -EOPNOTSUPP, so a SYN steered to it counts as drop_assign_failed: which
 * of the keys a SYN looks up shows in which counter moves). Returns the fd, or -1. */
static int put_listener(uint32_t key, int family)
{
	struct sockaddr_storage ss = { .ss_family = (sa_family_t)family };
	socklen_t len = family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	__u64 v;

	if (fd < 0)
		return -1;
	if (family == AF_INET6) {
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		((struct sockaddr_in6 *)&ss)->sin6_addr = in6addr_loopback;
	} else {
		((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	}
	v = (__u64)fd;
	if (bind(fd, (struct sockaddr *)&ss, len) || listen(fd, 8) ||
	    bpf_map_update_elem(bpf_map__fd(skel->maps.ambit_listeners), &key, &v, BPF_ANY)) {
		close(fd);
		return -1;
	}
	return fd;
}

static void drop_listener(uint32_t key, int fd)
{
	bpf_map_delete_elem(bpf_map__fd(skel->maps.ambit_listeners), &key);
	if (fd >= 0)
		close(fd);
}

TEST(load)
{
	struct redirect_iface cfg = { .pod_ip = ip4(POD_IP), .mode = REDIRECT_MODE_ROUTED,
				      .flags = REDIRECT_IFACE_F_IPV6 };
	__u32 key = LO_IFINDEX;

	skel = redirect_bpf__open();
	REQUIRE(skel);
	/* No pinning in unit tests: private maps. */
	CHECK(bpf_map__set_pin_path(skel->maps.ambit_listeners, NULL) == 0);
	CHECK(bpf_map__set_pin_path(skel->maps.ambit_ifaces, NULL) == 0);
	skel->rodata->cfg_mark = 0x0a3b0000;
	skel->rodata->cfg_mark_mask = 0xffff0000;
	REQUIRE(redirect_bpf__load(skel) == 0);
	memcpy(cfg.local_mac, local_mac, 6);
	REQUIRE(inet_pton(AF_INET6, POD_IP6, cfg.pod_ip6) == 1);
	REQUIRE(bpf_map_update_elem(bpf_map__fd(skel->maps.ambit_ifaces), &key, &cfg, BPF_ANY) == 0);
}

TEST(short_and_non_tcp_pass)
{
	REQUIRE(skel);
	struct pkt4 p = tcp4(POD_IP, OTHER_IP, 40000, 80, true, false, pod_mac, node_mac);
	uint64_t before = stat(REDIRECT_STAT_PASS);

	int v;

	/* Ethernet header only, IPv4 cut inside the IP header: the kernel may refuse to run
	 * these (-EINVAL); when it runs them, they must pass. Then TCP cut short. */
	v = in_verdict(&p, sizeof(p.eth));
	CHECK(v == TC_ACT_OK || v == -EINVAL);
	before -= v == -EINVAL;
	v = in_verdict(&p, sizeof(p.eth) + 10);
	CHECK(v == TC_ACT_OK || v == -EINVAL);
	before -= v == -EINVAL;
	CHECK_EQ_INT(in_verdict(&p, sizeof(p.eth) + sizeof(p.ip) + 8), TC_ACT_OK);
	/* Bad IHL, bad version, bad TCP data offset. */
	struct pkt4 q = p;
	q.ip.ihl = 3;
	CHECK_EQ_INT(in_verdict(&q, sizeof(q)), TC_ACT_OK);
	q = p;
	q.ip.version = 6;
	CHECK_EQ_INT(in_verdict(&q, sizeof(q)), TC_ACT_OK);
	q = p;
	q.tcp.doff = 2;
	CHECK_EQ_INT(in_verdict(&q, sizeof(q)), TC_ACT_OK);
	/* IHL pointing past the end of the packet. */
	q = p;
	q.ip.ihl = 15;
	CHECK_EQ_INT(in_verdict(&q, sizeof(q)), TC_ACT_OK);
	/* UDP, ICMP, ARP. */
	q = p;
	q.ip.protocol = IPPROTO_UDP;
	CHECK_EQ_INT(in_verdict(&q, sizeof(q)), TC_ACT_OK);
	q = p;
	q.ip.protocol = IPPROTO_ICMP;
	CHECK_EQ_INT(in_verdict(&q, sizeof(q)), TC_ACT_OK);
	q = p;
	q.eth.h_proto = htons(ETH_P_ARP);
	CHECK_EQ_INT(in_verdict(&q, sizeof(q)), TC_ACT_OK);
	CHECK_EQ_INT(stat(REDIRECT_STAT_PASS) - before, 10);
}

TEST(ipv6_malformed_and_non_tcp_pass)
{
	REQUIRE(skel);
	struct pkt6 p = tcp6(POD_IP6, OTHER_IP6, 40100, 80, true, false), q;
	uint64_t before = stat(REDIRECT_STAT_PASS);
	int v, refused = 0;

	/* Cut inside the IPv6 header (the kernel may refuse to run that: -EINVAL), then inside
	 * the TCP header. */
	q = p;
	q.len = P6_L3 + 20;
	v = in6_verdict(&q);
	CHECK(v == TC_ACT_OK || v == -EINVAL);
	refused += v == -EINVAL;
	q.len = P6_L4 + 12;
	CHECK_EQ_INT(in6_verdict(&q), TC_ACT_OK);
	/* Version 4 in an IPv6 EtherType; TCP data offset below 5. */
	q = p;
	q.b[P6_L3] = 0x40;
	CHECK_EQ_INT(in6_verdict(&q), TC_ACT_OK);
	q = p;
	q.b[P6_L4 + 12] = 3 << 4;	/* data offset: 12 bytes */
	CHECK_EQ_INT(in6_verdict(&q), TC_ACT_OK);
	/* An extension header cut short, and one whose length runs past the end. */
	p6_init(&q, POD_IP6, OTHER_IP6, pod_mac, node_mac);
	p6_ext(&q, NEXTHDR_HOP, 8);
	q.len -= 7;
	CHECK_EQ_INT(in6_verdict(&q), TC_ACT_OK);
	p6_init(&q, POD_IP6, OTHER_IP6, pod_mac, node_mac);
	p6_ext(&q, NEXTHDR_DEST, 8);
	p6_l4(&q, IPPROTO_TCP, 40100, 80, true, false);
	q.b[P6_L4 + 1] = 200;	/* 1608 bytes */
	CHECK_EQ_INT(in6_verdict(&q), TC_ACT_OK);
	/* A fragment header cut short. */
	p6_init(&q, POD_IP6, OTHER_IP6, pod_mac, node_mac);
	p6_frag(&q, 0, true);
	q.len -= 4;
	CHECK_EQ_INT(in6_verdict(&q), TC_ACT_OK);
	/* Not TCP: UDP, ICMPv6 (neighbour discovery), no next header, ESP, and UDP behind a
	 * chain of extension headers. */
	static const uint8_t protos[] = { IPPROTO_UDP, IPPROTO_ICMPV6, NEXTHDR_NONE, IPPROTO_ESP };
	for (size_t i = 0; i < sizeof(protos); i++) {
		p6_init(&q, POD_IP6, OTHER_IP6, pod_mac, node_mac);
		p6_l4(&q, protos[i], 40100, 80, true, false);
		CHECK_EQ_INT(in6_verdict(&q), TC_ACT_OK);
	}
	p6_init(&q, POD_IP6, OTHER_IP6, pod_mac, node_mac);
	p6_ext(&q, NEXTHDR_HOP, 8);
	p6_ext(&q, NEXTHDR_DEST, 16);
	p6_l4(&q, IPPROTO_UDP, 40100, 53, false, false);
	CHECK_EQ_INT(in6_verdict(&q), TC_ACT_OK);
	/* A non-first fragment of UDP: not ours (its first fragment went on; keeping this one
	 * would break the datagram). */
	p6_init(&q, POD_IP6, OTHER_IP6, pod_mac, node_mac);
	p6_frag(&q, 1448, false);
	p6_l4(&q, IPPROTO_UDP, 0, 0, false, false);
	CHECK_EQ_INT(in6_verdict(&q), TC_ACT_OK);
	CHECK_EQ_INT(stat(REDIRECT_STAT_PASS) - before, 13 - refused);
	/* All of these pass the egress side too (not TCP towards the pod). */
	q = p;
	q.b[P6_L3 + offsetof(struct ipv6hdr, nexthdr)] = IPPROTO_UDP;
	CHECK_EQ_INT(run(skel->progs.ambit_egress, q.b, q.len, NULL, NULL), TC_ACT_OK);
}

TEST(ipv6_syn_without_listener_fails_closed)
{
	REQUIRE(skel);
	uint64_t before = stat(REDIRECT_STAT_DROP_NO_LISTENER);
	struct pkt6 out = tcp6(POD_IP6, OTHER_IP6, 40101, 80, true, false);
	struct pkt6 in = tcp6(OTHER_IP6, POD_IP6, 40102, 8080, true, false);
	struct pkt6 ack = tcp6(POD_IP6, OTHER_IP6, 40101, 80, false, true);
	uint32_t mark = 0;

	/* Before: IPv6 passed untouched. Now it is the pod's traffic like IPv4. */
	CHECK_EQ_INT(run(skel->progs.ambit_ingress, out.b, out.len, NULL, &mark), TC_ACT_SHOT);
	CHECK_EQ_INT(mark, 0);
	CHECK_EQ_INT(in6_verdict(&in), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_NO_LISTENER) - before, 2);
	before = stat(REDIRECT_STAT_DROP_NO_SOCKET);
	CHECK_EQ_INT(in6_verdict(&ack), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_NO_SOCKET) - before, 1);
}

/* Which listener a SYN is steered to: IPv6 outbound to OUTBOUND6, IPv6 towards the pod to
 * INBOUND6, and IPv4 never to an IPv6 listener. */
TEST(ipv6_syn_picks_the_ipv6_listeners)
{
	REQUIRE(skel);
	struct pkt6 out = tcp6(POD_IP6, OTHER_IP6, 40103, 443, true, false);
	struct pkt6 in = tcp6(OTHER_IP6, POD_IP6, 40104, 8080, true, false);
	struct pkt4 out4 = tcp4(POD_IP, OTHER_IP, 40105, 443, true, false, pod_mac, node_mac);
	uint64_t assign, nolis;
	int fd;

	fd = put_listener(REDIRECT_LISTENER_OUTBOUND6, AF_INET6);
	REQUIRE(fd >= 0);
	assign = stat(REDIRECT_STAT_DROP_ASSIGN);
	nolis = stat(REDIRECT_STAT_DROP_NO_LISTENER);
	CHECK_EQ_INT(in6_verdict(&out), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_ASSIGN) - assign, 1);	/* found the listener */
	CHECK_EQ_INT(in6_verdict(&in), TC_ACT_SHOT);
	CHECK_EQ_INT(in_verdict(&out4, sizeof(out4)), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_NO_LISTENER) - nolis, 2);	/* INBOUND6, OUTBOUND */
	drop_listener(REDIRECT_LISTENER_OUTBOUND6, fd);

	fd = put_listener(REDIRECT_LISTENER_INBOUND6, AF_INET6);
	REQUIRE(fd >= 0);
	assign = stat(REDIRECT_STAT_DROP_ASSIGN);
	nolis = stat(REDIRECT_STAT_DROP_NO_LISTENER);
	CHECK_EQ_INT(in6_verdict(&in), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_ASSIGN) - assign, 1);
	CHECK_EQ_INT(in6_verdict(&out), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_NO_LISTENER) - nolis, 1);
	drop_listener(REDIRECT_LISTENER_INBOUND6, fd);

	/* The IPv4 keys are not used for IPv6. */
	fd = put_listener(REDIRECT_LISTENER_OUTBOUND, AF_INET);
	REQUIRE(fd >= 0);
	nolis = stat(REDIRECT_STAT_DROP_NO_LISTENER);
	assign = stat(REDIRECT_STAT_DROP_ASSIGN);
	CHECK_EQ_INT(in6_verdict(&out), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_NO_LISTENER) - nolis, 1);
	CHECK_EQ_INT(in_verdict(&out4, sizeof(out4)), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_ASSIGN) - assign, 1);
	drop_listener(REDIRECT_LISTENER_OUTBOUND, fd);
}

/* A pod without an IPv6 address in its entry: IPv6 towards "the pod's" address is just more
 * outbound traffic of the pod, never inbound. */
TEST(ipv6_pod_without_ipv6_entry)
{
	REQUIRE(skel);
	__u32 key = LO_IFINDEX;
	struct redirect_iface cfg, saved;
	struct pkt6 in = tcp6(OTHER_IP6, POD_IP6, 40106, 8080, true, false);
	int mfd = bpf_map__fd(skel->maps.ambit_ifaces), fd;
	uint64_t assign;

	REQUIRE(bpf_map_lookup_elem(mfd, &key, &saved) == 0);
	cfg = saved;
	cfg.flags &= (uint8_t)~REDIRECT_IFACE_F_IPV6;
	REQUIRE(bpf_map_update_elem(mfd, &key, &cfg, BPF_EXIST) == 0);
	fd = put_listener(REDIRECT_LISTENER_OUTBOUND6, AF_INET6);
	CHECK(fd >= 0);
	assign = stat(REDIRECT_STAT_DROP_ASSIGN);
	CHECK_EQ_INT(in6_verdict(&in), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_ASSIGN) - assign, 1);
	drop_listener(REDIRECT_LISTENER_OUTBOUND6, fd);
	CHECK(bpf_map_update_elem(mfd, &key, &saved, BPF_EXIST) == 0);
}

/* TCP behind hop-by-hop, destination options, routing, AH and a first fragment header is
 * found and treated as without them; the chain bound is IPV6_EXT_MAX (8) headers. */
TEST(ipv6_extension_headers_walked)
{
	REQUIRE(skel);
	struct pkt6 q;
	uint64_t nolis = stat(REDIRECT_STAT_DROP_NO_LISTENER);
	uint64_t nosock = stat(REDIRECT_STAT_DROP_NO_SOCKET);
	uint64_t deep = stat(REDIRECT_STAT_DROP_EXTHDR);

	p6_init(&q, POD_IP6, OTHER_IP6, pod_mac, node_mac);
	p6_ext(&q, NEXTHDR_HOP, 8);
	p6_ext(&q, NEXTHDR_DEST, 24);
	p6_ext(&q, NEXTHDR_ROUTING, 8);
	p6_ext(&q, NEXTHDR_AUTH, 24);
	p6_frag(&q, 0, true);
	p6_l4(&q, IPPROTO_TCP, 40107, 80, true, false);
	CHECK_EQ_INT(in6_verdict(&q), TC_ACT_SHOT);	/* a SYN: no listener */
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_NO_LISTENER) - nolis, 1);
	/* The flags are read from the right place: an ACK behind the chain has no socket. */
	p6_init(&q, POD_IP6, OTHER_IP6, pod_mac, node_mac);
	p6_ext(&q, NEXTHDR_DEST, 8);
	p6_ext(&q, NEXTHDR_ROUTING, 16);
	p6_l4(&q, IPPROTO_TCP, 40107, 80, false, true);
	CHECK_EQ_INT(in6_verdict(&q), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_NO_SOCKET) - nosock, 1);
	/* Towards the pod behind a chain: inbound (the listener key shows it). */
	int fd = put_listener(REDIRECT_LISTENER_INBOUND6, AF_INET6);
	uint64_t assign = stat(REDIRECT_STAT_DROP_ASSIGN);
	CHECK(fd >= 0);
	p6_init(&q, OTHER_IP6, POD_IP6, node_mac, local_mac);
	p6_ext(&q, NEXTHDR_HOP, 8);
	p6_ext(&q, NEXTHDR_DEST, 8);
	p6_l4(&q, IPPROTO_TCP, 40108, 8080, true, false);
	CHECK_EQ_INT(in6_verdict(&q), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_ASSIGN) - assign, 1);
	drop_listener(REDIRECT_LISTENER_INBOUND6, fd);

	/* Eight extension headers are walked; a ninth is one too many: a TCP segment behind it
	 * is dropped (never passed around capture), on egress towards the pod too (turned into
	 * ingress, which drops it). */
	nolis = stat(REDIRECT_STAT_DROP_NO_LISTENER);
	p6_init(&q, POD_IP6, OTHER_IP6, pod_mac, node_mac);
	for (int i = 0; i < 8; i++)
		p6_ext(&q, NEXTHDR_DEST, 8);
	p6_l4(&q, IPPROTO_TCP, 40109, 80, true, false);
	CHECK_EQ_INT(in6_verdict(&q), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_NO_LISTENER) - nolis, 1);
	p6_init(&q, POD_IP6, OTHER_IP6, pod_mac, node_mac);
	for (int i = 0; i < 9; i++)
		p6_ext(&q, NEXTHDR_DEST, 8);
	p6_l4(&q, IPPROTO_TCP, 40109, 80, true, false);
	CHECK_EQ_INT(in6_verdict(&q), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_EXTHDR) - deep, 1);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_NO_LISTENER) - nolis, 1);
	/* ...but UDP behind a long chain is still not ours. */
	p6_init(&q, POD_IP6, OTHER_IP6, pod_mac, node_mac);
	for (int i = 0; i < 3; i++)
		p6_ext(&q, NEXTHDR_DEST, 8);
	p6_l4(&q, IPPROTO_UDP, 40109, 53, false, false);
	CHECK_EQ_INT(in6_verdict(&q), TC_ACT_OK);
}

TEST(ipv6_fragment_delivered_locally)
{
	REQUIRE(skel);
	struct pkt6 q;
	uint8_t out[sizeof(q.b)];
	uint32_t mark = 0;
	uint64_t before = stat(REDIRECT_STAT_FRAGMENT);

	/* Offset 1448: no TCP header in it; the fragment header names TCP next. */
	p6_init(&q, POD_IP6, OTHER_IP6, pod_mac, node_mac);
	p6_ext(&q, NEXTHDR_HOP, 8);
	p6_frag(&q, 1448, false);
	p6_l4(&q, IPPROTO_TCP, 0, 0, false, false);
	CHECK_EQ_INT(run(skel->progs.ambit_ingress, q.b, q.len, out, &mark), TC_ACT_OK);
	CHECK_EQ_INT(mark & 0xffff0000, 0x0a3b0000);
	CHECK(memcmp(((struct ethhdr *)out)->h_dest, local_mac, 6) == 0);
	CHECK_EQ_INT(stat(REDIRECT_STAT_FRAGMENT) - before, 1);
}

TEST(ipv6_not_enrolled_and_host_originated_untouched)
{
	REQUIRE(skel);
	__u32 key = LO_IFINDEX;
	struct redirect_iface cfg;
	struct pkt6 syn = tcp6(POD_IP6, OTHER_IP6, 40110, 80, true, false);
	struct pkt6 in = tcp6(OTHER_IP6, POD_IP6, 40111, 8080, true, false), out;
	int fd = bpf_map__fd(skel->maps.ambit_ifaces);
	uint64_t before = stat(REDIRECT_STAT_EGRESS_REDIRECT);

	/* test_run's skb->sk is set: a host-originated packet towards the pod is never turned
	 * around (the forwarded case is in test_capture_netns). */
	CHECK_EQ_INT(run(skel->progs.ambit_egress, in.b, in.len, out.b, NULL), TC_ACT_OK);
	CHECK(memcmp(out.b, in.b, in.len) == 0);
	CHECK_EQ_INT(stat(REDIRECT_STAT_EGRESS_REDIRECT) - before, 0);
	REQUIRE(bpf_map_lookup_elem(fd, &key, &cfg) == 0);
	REQUIRE(bpf_map_delete_elem(fd, &key) == 0);
	CHECK_EQ_INT(in6_verdict(&syn), TC_ACT_OK);
	CHECK_EQ_INT(in6_verdict(&in), TC_ACT_OK);
	CHECK(bpf_map_update_elem(fd, &key, &cfg, BPF_ANY) == 0);
}

TEST(non_syn_without_socket_dropped)
{
	REQUIRE(skel);
	uint64_t before = stat(REDIRECT_STAT_DROP_NO_SOCKET);
	struct pkt4 ack = tcp4(POD_IP, OTHER_IP, 40001, 80, false, true, pod_mac, node_mac);
	struct pkt4 synack = tcp4(POD_IP, OTHER_IP, 40001, 80, true, true, pod_mac, node_mac);
	struct pkt4 rst = tcp4(POD_IP, OTHER_IP, 40001, 80, false, false, pod_mac, node_mac);
	rst.tcp.rst = 1;

	CHECK_EQ_INT(in_verdict(&ack, sizeof(ack)), TC_ACT_SHOT);
	CHECK_EQ_INT(in_verdict(&synack, sizeof(synack)), TC_ACT_SHOT);
	CHECK_EQ_INT(in_verdict(&rst, sizeof(rst)), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_NO_SOCKET) - before, 3);
}

TEST(syn_without_listener_fails_closed)
{
	REQUIRE(skel);
	uint64_t before = stat(REDIRECT_STAT_DROP_NO_LISTENER);
	/* Outbound (any destination) and inbound (destination = the pod) both need a listener. */
	struct pkt4 out = tcp4(POD_IP, OTHER_IP, 40002, 80, true, false, pod_mac, node_mac);
	struct pkt4 in = tcp4(OTHER_IP, POD_IP, 40003, 8080, true, false, node_mac, local_mac);
	uint32_t mark = 0;

	CHECK_EQ_INT(run(skel->progs.ambit_ingress, &out, sizeof(out), NULL, &mark), TC_ACT_SHOT);
	CHECK_EQ_INT(mark, 0);
	CHECK_EQ_INT(in_verdict(&in, sizeof(in)), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_NO_LISTENER) - before, 2);
}

TEST(not_enrolled_interface_untouched)
{
	REQUIRE(skel);
	__u32 key = LO_IFINDEX;
	struct redirect_iface cfg;
	struct pkt4 syn = tcp4(POD_IP, OTHER_IP, 40004, 80, true, false, pod_mac, node_mac);
	struct pkt4 ack = tcp4(POD_IP, OTHER_IP, 40004, 80, false, true, pod_mac, node_mac);
	int fd = bpf_map__fd(skel->maps.ambit_ifaces);

	REQUIRE(bpf_map_lookup_elem(fd, &key, &cfg) == 0);
	REQUIRE(bpf_map_delete_elem(fd, &key) == 0);
	CHECK_EQ_INT(in_verdict(&syn, sizeof(syn)), TC_ACT_OK);
	CHECK_EQ_INT(in_verdict(&ack, sizeof(ack)), TC_ACT_OK);
	CHECK_EQ_INT(run(skel->progs.ambit_egress, &ack, sizeof(ack), NULL, NULL), TC_ACT_OK);
	CHECK(bpf_map_update_elem(fd, &key, &cfg, BPF_ANY) == 0);
}

TEST(fragment_delivered_locally)
{
	REQUIRE(skel);
	struct pkt4 p = tcp4(POD_IP, OTHER_IP, 40005, 80, false, true, pod_mac, node_mac);
	uint8_t out[sizeof(p)];
	uint32_t mark = 0;

	p.ip.frag_off = htons(185);	/* offset 1480: no TCP header in it */
	CHECK_EQ_INT(run(skel->progs.ambit_ingress, &p, sizeof(p), out, &mark), TC_ACT_OK);
	CHECK_EQ_INT(mark & 0xffff0000, 0x0a3b0000);
	CHECK(memcmp(((struct ethhdr *)out)->h_dest, local_mac, 6) == 0);
}

TEST(egress_host_originated_passes)
{
	REQUIRE(skel);
	uint64_t before = stat(REDIRECT_STAT_EGRESS_REDIRECT);
	struct pkt4 in = tcp4(OTHER_IP, POD_IP, 40006, 8080, true, false, node_mac, pod_mac);
	struct pkt4 out;

	/* test_run's skb->sk is set: like the agent's or kubelet's own packets, never turned
	 * around (the forwarded case is in test_capture_netns). */
	CHECK_EQ_INT(run(skel->progs.ambit_egress, &in, sizeof(in), &out, NULL), TC_ACT_OK);
	CHECK(memcmp(&out, &in, sizeof(in)) == 0);
	CHECK_EQ_INT(stat(REDIRECT_STAT_EGRESS_REDIRECT) - before, 0);
	in.ip.protocol = IPPROTO_UDP;
	CHECK_EQ_INT(run(skel->progs.ambit_egress, &in, sizeof(in), NULL, NULL), TC_ACT_OK);
}

/* Pod-addressed HBONE (ztunnel's wire format): a SYN towards the pod's own port 15008 goes to
 * the HBONE listener of its family, never to 15006; fails closed without it. Port 15008
 * elsewhere (outbound to another pod, a source port) is not it. */
TEST(hbone_pod_syn_picks_the_hbone_listeners)
{
	REQUIRE(skel);
	struct pkt4 hb = tcp4(OTHER_IP, POD_IP, 40201, REDIRECT_HBONE_PORT, true, false, node_mac,
			      local_mac);
	struct pkt4 app = tcp4(OTHER_IP, POD_IP, 40202, 8080, true, false, node_mac, local_mac);
	struct pkt4 sport = tcp4(OTHER_IP, POD_IP, REDIRECT_HBONE_PORT, 8080, true, false,
				 node_mac, local_mac);
	struct pkt4 out = tcp4(POD_IP, OTHER_IP, 40203, REDIRECT_HBONE_PORT, true, false, pod_mac,
			       node_mac);
	struct pkt6 hb6 = tcp6(OTHER_IP6, POD_IP6, 40204, REDIRECT_HBONE_PORT, true, false);
	struct pkt6 app6 = tcp6(OTHER_IP6, POD_IP6, 40205, 8080, true, false);
	uint64_t assign, nolis, hbone = stat(REDIRECT_STAT_HBONE);
	int in_fd, fd;

	/* Only the 15006 listener: a SYN to 15008 is not plaintext inbound, it is dropped. */
	in_fd = put_listener(REDIRECT_LISTENER_INBOUND, AF_INET);
	REQUIRE(in_fd >= 0);
	assign = stat(REDIRECT_STAT_DROP_ASSIGN);
	nolis = stat(REDIRECT_STAT_DROP_NO_LISTENER);
	CHECK_EQ_INT(in_verdict(&hb, sizeof(hb)), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_NO_LISTENER) - nolis, 1);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_ASSIGN) - assign, 0);
	drop_listener(REDIRECT_LISTENER_INBOUND, in_fd);

	/* Only the HBONE listener: 15008 finds it; 8080, a source port 15008 and the pod's own
	 * outbound to port 15008 do not. */
	fd = put_listener(REDIRECT_LISTENER_HBONE, AF_INET);
	REQUIRE(fd >= 0);
	assign = stat(REDIRECT_STAT_DROP_ASSIGN);
	nolis = stat(REDIRECT_STAT_DROP_NO_LISTENER);
	CHECK_EQ_INT(in_verdict(&hb, sizeof(hb)), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_ASSIGN) - assign, 1);	/* found the listener */
	CHECK_EQ_INT(in_verdict(&app, sizeof(app)), TC_ACT_SHOT);
	CHECK_EQ_INT(in_verdict(&sport, sizeof(sport)), TC_ACT_SHOT);
	CHECK_EQ_INT(in_verdict(&out, sizeof(out)), TC_ACT_SHOT);
	CHECK_EQ_INT(in6_verdict(&hb6), TC_ACT_SHOT);	/* IPv6 never takes the IPv4 one */
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_NO_LISTENER) - nolis, 4);
	drop_listener(REDIRECT_LISTENER_HBONE, fd);

	fd = put_listener(REDIRECT_LISTENER_HBONE6, AF_INET6);
	REQUIRE(fd >= 0);
	assign = stat(REDIRECT_STAT_DROP_ASSIGN);
	nolis = stat(REDIRECT_STAT_DROP_NO_LISTENER);
	CHECK_EQ_INT(in6_verdict(&hb6), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_ASSIGN) - assign, 1);
	CHECK_EQ_INT(in6_verdict(&app6), TC_ACT_SHOT);
	CHECK_EQ_INT(in_verdict(&hb, sizeof(hb)), TC_ACT_SHOT);
	CHECK_EQ_INT(stat(REDIRECT_STAT_DROP_NO_LISTENER) - nolis, 2);
	drop_listener(REDIRECT_LISTENER_HBONE6, fd);
	/* Counted only once assigned, which test_run cannot do (test_capture_netns does). */
	CHECK_EQ_INT(stat(REDIRECT_STAT_HBONE) - hbone, 0);
}

TEST(teardown)
{
	redirect_bpf__destroy(skel);
	skel = NULL;
}

TEST_MAIN("bpf_redirect_prog")
