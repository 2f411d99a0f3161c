// SPDX-License-Identifier: Apache-2.0
/* eBPF capture: loads bpf/redirect.bpf.c (skeleton), keeps its maps pinned, attaches it to the
 * host-side interface of each local enrolled pod and installs the local-delivery policy route. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "agent/netlink.h"
#include "agent/redirect.h"
#include "bpf/redirect.skel.h"
#include "bpf/shared/redirect.h"
#include "common/log.h"
#include "common/util.h"

/* Re-try a bridge pod's neighbour kick at most this often; pending pods are retried on
 * netlink events and on a timer of this period. */
#define KICK_INTERVAL_MS 1000
#define RETRY_INTERVAL_MS 1000

/* One local enrolled pod (wanted) and where it is attached, if anywhere. A pod is known by
 * its IPv4 address, or by its IPv6 address when it has no IPv4 (IPv6-only); a dual-stack pod's
 * IPv6 address rides along (its interface is found through the IPv4 one). */
struct rd_pod {
	char *uid;			/* owned; NULL for one adopted from a previous run */
	uint32_t ip;			/* IPv4, network order; 0 for an IPv6-only pod */
	uint32_t ip6[4];		/* IPv6, network order, when has6 */
	bool has6;
	int ifindex;			/* 0 while pending */
	char ifname[IF_NAMESIZE];
	uint8_t mode;			/* REDIRECT_MODE_* */
	bool qdisc_ours;
	bool wanted;			/* scratch for redirect_set_pods */
	uint64_t kicked_ms;
};

struct redirect {
	struct redirect_opts opts;
	char *pin_dir;			/* owned copy of opts.pin_dir */
	char *sysctl_dir;		/* owned: the net sysctl folder in use (auto resolved) */
	struct redirect_bpf *skel;
	struct netlink *nl;
	int epfd;			/* the event fd: netlink events + retry timer */
	int timerfd;			/* armed while some pod is pending */
	struct rd_pod *pods;
	size_t npods, cap;
	bool ipv6;			/* the IPv6 rule and local route are in place */
};

static const char *const stat_names[REDIRECT_STAT_MAX] = {
	[REDIRECT_STAT_PASS] = "pass",
	[REDIRECT_STAT_SOCKET] = "assigned_socket",
	[REDIRECT_STAT_OUTBOUND] = "captured_outbound",
	[REDIRECT_STAT_INBOUND] = "captured_inbound",
	[REDIRECT_STAT_DROP_NO_LISTENER] = "drop_no_listener",
	[REDIRECT_STAT_DROP_NO_SOCKET] = "drop_no_socket",
	[REDIRECT_STAT_DROP_ASSIGN] = "drop_assign_failed",
	[REDIRECT_STAT_EGRESS_REDIRECT] = "egress_to_ingress",
	[REDIRECT_STAT_FRAGMENT] = "fragment_local",
	[REDIRECT_STAT_OUTBOUND6] = "captured_outbound_ipv6",
	[REDIRECT_STAT_INBOUND6] = "captured_inbound_ipv6",
	[REDIRECT_STAT_DROP_EXTHDR] = "drop_ipv6_header_chain",
	[REDIRECT_STAT_HBONE] = "captured_hbone_pod",
};

static const char *const listener_names[REDIRECT_LISTENER_MAX] = {
	[REDIRECT_LISTENER_OUTBOUND] = "outbound",
	[REDIRECT_LISTENER_INBOUND] = "inbound",
	[REDIRECT_LISTENER_OUTBOUND6] = "outbound6",
	[REDIRECT_LISTENER_INBOUND6] = "inbound6",
	[REDIRECT_LISTENER_HBONE] = "hbone_pod",
	[REDIRECT_LISTENER_HBONE6] = "hbone_pod6",
};

void redirect_opts_default(struct redirect_opts *opts)
{
	*opts = (struct redirect_opts){
		.pin_dir = "/sys/fs/bpf/ambit",
		.mark = 0x0a3b0000,
		.mark_mask = 0xffff0000,
		.table = 133,
		.rule_priority = 32000,
		.outbound_listener_fd = -1,
		.inbound_listener_fd = -1,
		.outbound6_listener_fd = -1,
		.inbound6_listener_fd = -1,
		.hbone_listener_fd = -1,
		.hbone6_listener_fd = -1,
	};
}

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	enum log_level lvl = level == LIBBPF_WARN ? LOG_LVL_WARN :
			     level == LIBBPF_INFO ? LOG_LVL_DEBUG : LOG_LVL_TRACE;
	char line[512];
	size_t n;

	if (!log_enabled(lvl))
		return 0;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = '\0';
	/* Kernel extack notes ("Parent Qdisc doesn't exists" on a probe) come with an error
	 * code that the caller decides about and logs. */
	if (strstr(line, "Kernel error message")) {
		if (!log_enabled(LOG_LVL_DEBUG))
			return 0;
		lvl = LOG_LVL_DEBUG;
	}
	log_msg(lvl, "%s%s", strncmp(line, "libbpf: ", 8) ? "libbpf: " : "", line);
	return 0;
}

static void setup_libbpf_log(void)
{
	static bool done;
	if (!done) {
		libbpf_set_print(libbpf_log);
		done = true;
	}
}

/* "10.244.1.11", "10.244.1.11 fd00:10:244:1::b" or "fd00:10:244:1::b" for logs. */
#define POD_ADDR_STR_LEN (INET_ADDRSTRLEN + INET6_ADDRSTRLEN + 1)

static char *pod_addr_str(uint32_t ip, bool has6, const uint32_t ip6[4], char *buf)
{
	char *p = buf;

	buf[0] = '\0';
	if (ip && inet_ntop(AF_INET, &ip, p, INET_ADDRSTRLEN))
		p += strlen(p);
	if (has6) {
		if (p != buf)
			*p++ = ' ';
		if (!inet_ntop(AF_INET6, ip6, p, INET6_ADDRSTRLEN))
			*p = '\0';
	}
	return buf;
}

static char *rd_pod_str(const struct rd_pod *p, char *buf)
{
	return pod_addr_str(p->ip, p->has6, p->ip6, buf);
}

/* The address a pod's interface is found by (its IPv4, else its IPv6): the family, *addr. */
static int rd_pod_anchor(const struct rd_pod *p, const void **addr)
{
	if (p->ip || !p->has6) {
		*addr = &p->ip;
		return AF_INET;
	}
	*addr = p->ip6;
	return AF_INET6;
}

/* The addresses a pinned ifaces entry names, as a (not yet attached) pod. */
static struct rd_pod rd_pod_of_cfg(const struct redirect_iface *cfg)
{
	struct rd_pod p = { .ip = cfg->pod_ip, .has6 = cfg->flags & REDIRECT_IFACE_F_IPV6 };

	if (p.has6)
		memcpy(p.ip6, cfg->pod_ip6, sizeof(p.ip6));
	return p;
}

static int mkdir_p(const char *path)
{
	char tmp[256];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, path, len + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) == -1 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0700) == -1 && errno != EEXIST)
		return -errno;
	return 0;
}

#define BPFFS_ROOT "/sys/fs/bpf"
#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

/* Pins need a bpffs at /sys/fs/bpf. Most distributions mount one at boot; where the host did
 * not (some minimal or container images), mount it, as Cilium's agent does, rather than fail:
 * the DaemonSet's hostPath then shares it with the next agent run. */
static int bpffs_ensure(void)
{
	struct statfs st;

	if (statfs(BPFFS_ROOT, &st) == 0 && (unsigned long)st.f_type == BPF_FS_MAGIC)
		return 0;
	if (mkdir(BPFFS_ROOT, 0700) == -1 && errno != EEXIST)
		return -errno;
	if (mount("bpffs", BPFFS_ROOT, "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") == -1)
		return -errno;
	/* In a container this mount is the container's own: pins then die with the pod. */
	pr_warn("capture: mounted a bpffs at %s, where there was none; pinned maps last as long "
		"as this mount (in a container, mount the host's %s there: hostPath)", BPFFS_ROOT,
		BPFFS_ROOT);
	return 0;
}

static void pin_path(char *buf, size_t len, const char *dir, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

/* Removes our pinned maps and the pin dir (when nothing else is left in it). */
static int unpin_all(const char *dir)
{
	static const char *const names[] = { REDIRECT_MAP_LISTENERS, REDIRECT_MAP_IFACES };
	char path[300];
	int err = 0;

	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		pin_path(path, sizeof(path), dir, names[i]);
		if (unlink(path) == -1 && errno != ENOENT)
			err = -errno;
	}
	if (rmdir(dir) == -1 && errno != ENOENT)
		err = err ? err : -errno;
	return err;
}

/* TCP early demux must be off in the node netns: it gives a forwarded packet of an inbound
 * captured connection (client -> pod IP:port) the agent's accepted socket, whose local address
 * is the pod's, and ip_forward() drops packets that carry a socket, before they reach the
 * pod's interface where ambit_egress would turn them into ingress.
 * A container's /proc/sys is read-only, so in Kubernetes the sysctl is written through the
 * host's /proc/sys/net mounted elsewhere: a procfs answers for the writer's network namespace
 * (the node's, with hostNetwork), whichever mount it is reached through. */
#define PROC_SYSCTL_DIR "/proc/sys/net"
#define EARLY_DEMUX "ipv4/tcp_early_demux"
#ifndef PROC_SUPER_MAGIC
#define PROC_SUPER_MAGIC 0x9fa0
#endif

static bool is_procfs(const char *path)
{
	struct statfs st;

	return statfs(path, &st) == 0 && (unsigned long)st.f_type == PROC_SUPER_MAGIC;
}

/* The configured folder of net sysctls, else the host's where the DaemonSet mounts it, else
 * our own (a bare host, the lab). */
static const char *sysctl_dir(const struct redirect_opts *opts)
{
	if (opts->sysctl_dir)
		return opts->sysctl_dir;
	return is_procfs(REDIRECT_HOST_SYSCTL_DIR) ? REDIRECT_HOST_SYSCTL_DIR : PROC_SYSCTL_DIR;
}

/* Writes DIR/ipv4/tcp_early_demux. what gets, for the caller's log line, the step, the file and,
 * on a failure an operator can fix, what is missing. 0 or -errno. */
static int set_tcp_early_demux(const char *dir, bool on, char *what, size_t len)
{
	const char *hint = "";
	char path[300];
	int fd = -1, err = 0;

	snprintf(path, sizeof(path), "%s/" EARLY_DEMUX, dir);
	if (!is_procfs(dir)) {
		err = access(dir, F_OK) == -1 ? -errno : -EINVAL;
		hint = "; not a procfs folder: mount the host's /proc/sys/net there (hostPath) "
		       "or fix redirect.sysctl_dir";
		goto out;
	}
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd == -1 || write(fd, on ? "1\n" : "0\n", 2) != 2)
		err = -errno;
	if (err == -EROFS)
		hint = "; read-only, as /proc/sys is in a container: mount the host's /proc/sys/net "
		       "at " REDIRECT_HOST_SYSCTL_DIR " (hostPath, as the DaemonSet does) or name a "
		       "writable one in redirect.sysctl_dir";
	else if (err == -EACCES || err == -EPERM)
		hint = "; needs uid 0 or CAP_NET_ADMIN in the node's network namespace";
out:
	if (fd >= 0)
		close(fd);
	snprintf(what, len, "turning %s TCP early demux (%s%s)", on ? "on" : "off", path, hint);
	return err;
}

/* ---- tc attach / detach ---- */

static void tc_hook_init(struct bpf_tc_hook *h, int ifindex, enum bpf_tc_attach_point ap)
{
	memset(h, 0, sizeof(*h));
	h->sz = sizeof(*h);
	h->ifindex = ifindex;
	h->attach_point = ap;
}

static int tc_detach_one(int ifindex, enum bpf_tc_attach_point ap)
{
	struct bpf_tc_hook h;
	LIBBPF_OPTS(bpf_tc_opts, o, .handle = REDIRECT_TC_HANDLE, .priority = REDIRECT_TC_PRIORITY);
	int err;

	tc_hook_init(&h, ifindex, ap);
	err = bpf_tc_detach(&h, &o);
	return err == -ENOENT || err == -EINVAL || err == -ENODEV ? 0 : err;
}

/* Is the filter at our handle/priority on (ifindex, ap) an ambit program? 1, 0 or -errno. */
static int tc_is_ours(int ifindex, enum bpf_tc_attach_point ap)
{
	struct bpf_tc_hook h;
	LIBBPF_OPTS(bpf_tc_opts, o, .handle = REDIRECT_TC_HANDLE, .priority = REDIRECT_TC_PRIORITY);
	struct bpf_prog_info info = { 0 };
	__u32 len = sizeof(info);
	int err, fd;

	tc_hook_init(&h, ifindex, ap);
	err = bpf_tc_query(&h, &o);
	if (err)
		return err == -ENOENT || err == -EINVAL ? 0 : err;
	fd = bpf_prog_get_fd_by_id(o.prog_id);
	if (fd < 0)
		return fd;
	err = bpf_obj_get_info_by_fd(fd, &info, &len);
	close(fd);
	if (err)
		return err;
	return strncmp(info.name, REDIRECT_PROG_PREFIX, strlen(REDIRECT_PROG_PREFIX)) == 0;
}

/* Destroys the clsact qdisc of ifindex when it has no filter left. */
static void tc_destroy_if_empty(struct netlink *nl, int ifindex)
{
	struct bpf_tc_hook h;

	if (netlink_tc_filter_count(nl, ifindex, true) != 0 ||
	    netlink_tc_filter_count(nl, ifindex, false) != 0)
		return;
	tc_hook_init(&h, ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS);
	bpf_tc_hook_destroy(&h);
}

static int tc_attach_one(int ifindex, enum bpf_tc_attach_point ap, int prog_fd)
{
	struct bpf_tc_hook h;
	LIBBPF_OPTS(bpf_tc_opts, o, .handle = REDIRECT_TC_HANDLE, .priority = REDIRECT_TC_PRIORITY,
		    .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE);

	tc_hook_init(&h, ifindex, ap);
	return bpf_tc_attach(&h, &o);
}

/* ---- pods ---- */

static int ifaces_fd(struct redirect *r)
{
	return bpf_map__fd(r->skel->maps.ambit_ifaces);
}

/* Removes the static FDB entry that pod_attach made for the bridge port ifindex (its MAC is
 * in the ifaces map entry). */
static void fdb_unpin(struct netlink *nl, int map_fd, int ifindex)
{
	struct redirect_iface cfg;
	__u32 key = (__u32)ifindex;
	int err;

	if (bpf_map_lookup_elem(map_fd, &key, &cfg) || cfg.mode != REDIRECT_MODE_BRIDGE)
		return;
	err = netlink_fdb_static(nl, ifindex, cfg.pod_mac, false);
	if (err)
		pr_warn("capture: removing the static FDB entry on ifindex %d: %s", ifindex,
			strerror(-err));
}

static void pod_detach(struct redirect *r, struct rd_pod *p)
{
	__u32 key = (__u32)p->ifindex;
	char ip[POD_ADDR_STR_LEN];

	if (!p->ifindex)
		return;
	if (p->mode == REDIRECT_MODE_BRIDGE)
		fdb_unpin(r->nl, ifaces_fd(r), p->ifindex);
	/* Egress first: it turns packets into ingress, which must still capture them. */
	tc_detach_one(p->ifindex, BPF_TC_EGRESS);
	tc_detach_one(p->ifindex, BPF_TC_INGRESS);
	bpf_map_delete_elem(ifaces_fd(r), &key);
	if (p->qdisc_ours)
		tc_destroy_if_empty(r->nl, p->ifindex);
	pr_info("capture: detached from %s (ifindex %d, pod %s %s)", p->ifname, p->ifindex,
		p->uid ? p->uid : "?", rd_pod_str(p, ip));
	p->ifindex = 0;
	p->ifname[0] = '\0';
	p->qdisc_ours = false;
}

/* Writes the ifaces entry, then ingress, then egress (so that nothing is turned around
 * before ingress captures). The entry's flags remember whether we made the qdisc. */
static int pod_attach(struct redirect *r, struct rd_pod *p, const struct netlink_pod_if *pif,
		      bool qdisc_ours_before)
{
	struct redirect_iface cfg = { .pod_ip = p->ip, .mode = pif->mode,
				      .bridge_ifindex = (__u32)pif->bridge_ifindex };
	static const uint8_t zero_mac[6];
	struct bpf_tc_hook h;
	__u32 key = (__u32)pif->ifindex;
	char ip[POD_ADDR_STR_LEN];
	bool ours = qdisc_ours_before;
	int err;

	tc_hook_init(&h, pif->ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS);
	err = bpf_tc_hook_create(&h);
	if (err == 0)
		ours = true;
	else if (err != -EEXIST)
		goto fail;
	memcpy(cfg.local_mac, pif->local_mac, sizeof(cfg.local_mac));
	memcpy(cfg.pod_mac, pif->pod_mac, sizeof(cfg.pod_mac));
	cfg.flags = ours ? REDIRECT_IFACE_F_QDISC_OURS : 0;
	if (p->has6) {
		cfg.flags |= REDIRECT_IFACE_F_IPV6;
		memcpy(cfg.pod_ip6, p->ip6, sizeof(cfg.pod_ip6));
	}
	err = bpf_map_update_elem(ifaces_fd(r), &key, &cfg, BPF_ANY);
	if (err)
		goto fail_qdisc;
	err = tc_attach_one(pif->ifindex, BPF_TC_INGRESS, bpf_program__fd(r->skel->progs.ambit_ingress));
	if (err)
		goto fail_map;
	err = tc_attach_one(pif->ifindex, BPF_TC_EGRESS, bpf_program__fd(r->skel->progs.ambit_egress));
	if (err)
		goto fail_ingress;
	if (pif->mode == REDIRECT_MODE_BRIDGE && memcmp(pif->pod_mac, zero_mac, 6) != 0 &&
	    (err = netlink_fdb_static(r->nl, pif->ifindex, pif->pod_mac, true)))
		pr_warn("capture: pinning the pod's MAC on bridge port %s: %s (the bridge may "
			"flood its frames once it forgets it)", pif->ifname, strerror(-err));
	p->ifindex = pif->ifindex;
	p->mode = pif->mode;
	p->qdisc_ours = ours;
	snprintf(p->ifname, sizeof(p->ifname), "%s", pif->ifname);
	pr_info("capture: attached to %s (ifindex %d, %s) for pod %s %s", p->ifname, p->ifindex,
		p->mode == REDIRECT_MODE_BRIDGE ? "bridge port" : "routed", p->uid ? p->uid : "?",
		rd_pod_str(p, ip));
	return 0;
fail_ingress:
	tc_detach_one(pif->ifindex, BPF_TC_INGRESS);
fail_map:
	bpf_map_delete_elem(ifaces_fd(r), &key);
fail_qdisc:
	if (ours)
		tc_destroy_if_empty(r->nl, pif->ifindex);
fail:
	pr_warn("capture: attaching to %s (ifindex %d) for pod %s: %s", pif->ifname, pif->ifindex,
		rd_pod_str(p, ip), strerror(-err));
	return err;
}

/* Keeps the ifaces entry's local MAC equal to the interface's (routed) or the bridge's
 * (bridge) current MAC: a bridge without a set address takes its ports' lowest MAC, so it
 * changes as pods come and go, and frames sent with the old one would not go up the stack. */
static void refresh_local_mac(struct redirect *r, struct rd_pod *p)
{
	struct redirect_iface cfg;
	__u32 key = (__u32)p->ifindex;
	uint8_t mac[6];
	int dev;

	if (!p->ifindex || bpf_map_lookup_elem(ifaces_fd(r), &key, &cfg))
		return;
	dev = cfg.mode == REDIRECT_MODE_BRIDGE ? (int)cfg.bridge_ifindex : p->ifindex;
	if (netlink_link_mac(r->nl, dev, mac) || memcmp(mac, cfg.local_mac, 6) == 0)
		return;
	memcpy(cfg.local_mac, mac, 6);
	if (bpf_map_update_elem(ifaces_fd(r), &key, &cfg, BPF_EXIST) == 0)
		pr_info("capture: local MAC of %s is now %02x:%02x:%02x:%02x:%02x:%02x", p->ifname,
			mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
}

/* Attaches a pending pod if its interface can be found now. 0 (attached or still pending)
 * or -errno from attaching. */
static int pod_try_attach(struct redirect *r, struct rd_pod *p)
{
	struct netlink_pod_if pif;
	const void *addr;
	int family = rd_pod_anchor(p, &addr), err;

	err = netlink_find_pod_if(r->nl, family, addr, &pif);
	if (err == -EAGAIN) {
		/* A bridge pod that has not talked yet: make the kernel ARP (NDP) for it (the reply
		 * teaches the bridge its port; the neighbour event or the retry timer brings
		 * us back here). */
		uint64_t now = now_mono_ms();
		if (now - p->kicked_ms >= KICK_INTERVAL_MS) {
			p->kicked_ms = now;
			netlink_kick_neigh(family, addr);
		}
		return 0;
	}
	if (err == -ENOENT)
		return 0;	/* no route to it yet: a route event will come */
	if (err)
		return err;
	return pod_attach(r, p, &pif, false);
}

/* The pod known by the same address as q (see struct rd_pod). */
static struct rd_pod *pod_find(struct redirect *r, const struct rd_pod *q)
{
	for (size_t i = 0; i < r->npods; i++) {
		const struct rd_pod *p = &r->pods[i];
		if (q->ip ? p->ip == q->ip
			  : !p->ip && p->has6 && q->has6 && memcmp(p->ip6, q->ip6, sizeof(p->ip6)) == 0)
			return &r->pods[i];
	}
	return NULL;
}

/* Adds a pod with q's addresses (not attached). */
static struct rd_pod *pod_add(struct redirect *r, const struct rd_pod *q)
{
	if (r->npods == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		struct rd_pod *v = realloc(r->pods, cap * sizeof(*v));
		if (!v)
			return NULL;
		r->pods = v;
		r->cap = cap;
	}
	r->pods[r->npods] = (struct rd_pod){ .ip = q->ip, .has6 = q->has6 };
	memcpy(r->pods[r->npods].ip6, q->ip6, sizeof(q->ip6));
	return &r->pods[r->npods++];
}

static void pod_remove(struct redirect *r, size_t i)
{
	free(r->pods[i].uid);
	r->pods[i] = r->pods[--r->npods];
}

/* The addresses of a caller's pod: -EAFNOSUPPORT when it names no IPv4 or IPv6 address. */
static int rd_pod_of_redirect_pod(const struct redirect_pod *in, struct rd_pod *q)
{
	const struct sockaddr_storage *v6 = NULL;

	memset(q, 0, sizeof(*q));
	if (in->addr.ss_family == AF_INET) {
		q->ip = ((const struct sockaddr_in *)&in->addr)->sin_addr.s_addr;
		if (in->addr6.ss_family == AF_INET6)
			v6 = &in->addr6;
	} else if (in->addr.ss_family == AF_INET6) {
		v6 = &in->addr;
	}
	if (v6) {
		q->has6 = true;
		memcpy(q->ip6, &((const struct sockaddr_in6 *)v6)->sin6_addr, sizeof(q->ip6));
	}
	return q->ip || q->has6 ? 0 : -EAFNOSUPPORT;
}

bool redirect_pod_captured(const struct redirect *r, const struct sockaddr_storage *addr)
{
	for (size_t i = 0; r && i < r->npods; i++) {
		const struct rd_pod *p = &r->pods[i];
		bool match = addr->ss_family == AF_INET
			? p->ip && p->ip == ((const struct sockaddr_in *)addr)->sin_addr.s_addr
			: addr->ss_family == AF_INET6 && p->has6 &&
			  memcmp(p->ip6, &((const struct sockaddr_in6 *)addr)->sin6_addr,
				 sizeof(p->ip6)) == 0;
		if (match)
			return p->ifindex != 0;
	}
	return false;
}

/* A dual-stack pod's IPv6 address came, went or changed: follow it (in the BPF entry too
 * when the pod is attached). 0 or -errno of the map update. */
static int pod_set_ip6(struct redirect *r, struct rd_pod *p, const struct rd_pod *q)
{
	struct redirect_iface cfg;
	__u32 key = (__u32)p->ifindex;
	char ip[POD_ADDR_STR_LEN];

	if (p->has6 == q->has6 && (!p->has6 || memcmp(p->ip6, q->ip6, sizeof(p->ip6)) == 0))
		return 0;
	p->has6 = q->has6;
	memcpy(p->ip6, q->ip6, sizeof(p->ip6));
	if (!p->ifindex || bpf_map_lookup_elem(ifaces_fd(r), &key, &cfg))
		return 0;
	cfg.flags = (uint8_t)((cfg.flags & ~REDIRECT_IFACE_F_IPV6) |
			      (p->has6 ? REDIRECT_IFACE_F_IPV6 : 0));
	memcpy(cfg.pod_ip6, p->ip6, sizeof(cfg.pod_ip6));
	if (bpf_map_update_elem(ifaces_fd(r), &key, &cfg, BPF_EXIST))
		return -errno;
	pr_info("capture: pod %s on %s is now %s", p->uid ? p->uid : "?", p->ifname,
		rd_pod_str(p, ip));
	return 0;
}

/* Interfaces attached by a previous run (the pinned ifaces map): take them over with this
 * run's programs when the pod's IP still leads there; otherwise (the interface is gone, or
 * its ifindex now belongs to another interface) drop the entry and our filters. Pods that
 * are still enrolled are then found again by redirect_set_pods. */
static int adopt_previous(struct redirect *r)
{
	__u32 key, *prev = NULL, *keys = NULL;
	size_t n = 0, cap = 0;
	int fd = ifaces_fd(r), err = 0;

	while (bpf_map_get_next_key(fd, prev, &key) == 0) {
		if (n == cap) {
			__u32 *v = realloc(keys, (cap = cap ? cap * 2 : 64) * sizeof(*v));
			if (!v) {
				err = -ENOMEM;
				goto out;
			}
			keys = v;
		}
		keys[n++] = key;
		prev = &keys[n - 1];
	}
	for (size_t i = 0; i < n; i++) {
		struct redirect_iface cfg;
		struct netlink_pod_if pif = { .ifindex = (int)keys[i] }, now;
		struct rd_pod *p, prev_pod;
		const void *addr;
		int found, family;

		if (bpf_map_lookup_elem(fd, &keys[i], &cfg))
			continue;
		prev_pod = rd_pod_of_cfg(&cfg);
		family = rd_pod_anchor(&prev_pod, &addr);
		found = netlink_find_pod_if(r->nl, family, addr, &now);
		if (netlink_link_name(r->nl, pif.ifindex, pif.ifname) || pod_find(r, &prev_pod) ||
		    (found == 0 && now.ifindex != pif.ifindex) || (found && found != -EAGAIN)) {
			tc_detach_one(pif.ifindex, BPF_TC_EGRESS);
			tc_detach_one(pif.ifindex, BPF_TC_INGRESS);
			bpf_map_delete_elem(fd, &keys[i]);
			continue;
		}
		p = pod_add(r, &prev_pod);
		if (!p) {
			err = -ENOMEM;
			goto out;
		}
		pif.mode = cfg.mode;
		pif.bridge_ifindex = (int)cfg.bridge_ifindex;
		memcpy(pif.pod_mac, cfg.pod_mac, sizeof(pif.pod_mac));
		memcpy(pif.local_mac, cfg.local_mac, sizeof(pif.local_mac));
		err = pod_attach(r, p, &pif, cfg.flags & REDIRECT_IFACE_F_QDISC_OURS);
		if (err)
			goto out;
		refresh_local_mac(r, p);
	}
out:
	free(keys);
	return err;
}

/* Arms the retry timer while a pod is pending, disarms it otherwise. */
static void retry_timer_update(struct redirect *r)
{
	struct itimerspec its = { 0 };
	bool pending = false;

	for (size_t i = 0; i < r->npods && !pending; i++)
		pending = !r->pods[i].ifindex;
	if (pending) {
		its.it_value.tv_nsec = RETRY_INTERVAL_MS % 1000 * 1000000L;
		its.it_value.tv_sec = RETRY_INTERVAL_MS / 1000;
		its.it_interval = its.it_value;
	}
	timerfd_settime(r->timerfd, 0, &its, NULL);
}

static int events_open(struct redirect *r)
{
	struct epoll_event ev = { .events = EPOLLIN };

	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	r->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (r->epfd == -1 || r->timerfd == -1)
		return -errno;
	ev.data.fd = netlink_event_fd(r->nl);
	if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, ev.data.fd, &ev) == -1)
		return -errno;
	ev.data.fd = r->timerfd;
	if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->timerfd, &ev) == -1)
		return -errno;
	return 0;
}

/* ---- lifecycle ---- */

static int load_skel(struct redirect *r)
{
	LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = r->pin_dir);
	int err;

	for (int attempt = 0; attempt < 2; attempt++) {
		r->skel = redirect_bpf__open_opts(&oo);
		if (!r->skel)
			return -errno;
		r->skel->rodata->cfg_mark = r->opts.mark;
		r->skel->rodata->cfg_mark_mask = r->opts.mark_mask;
		err = redirect_bpf__load(r->skel);
		if (!err)
			return 0;
		redirect_bpf__destroy(r->skel);
		r->skel = NULL;
		if (attempt == 0 && err == -EINVAL) {
			/* Pinned maps of an incompatible (older) layout: start afresh. */
			pr_warn("capture: cannot reuse the maps pinned in %s; re-creating them",
				r->pin_dir);
			unpin_all(r->pin_dir);
			mkdir_p(r->pin_dir);
			continue;
		}
		break;
	}
	return err;
}

/* fd < 0 leaves the slot alone: it may hold the listener of the agent this one takes over
 * from (an upgrade), which keeps capture going until ours is inserted. */
static int set_listener(struct redirect *r, __u32 key, int fd)
{
	__u64 v = (__u64)fd;
	int mfd = bpf_map__fd(r->skel->maps.ambit_listeners);

	if (fd < 0)
		return 0;
	return bpf_map_update_elem(mfd, &key, &v, BPF_ANY);
}

int redirect_set_listeners(struct redirect *r, const struct redirect_opts *fds)
{
	int err;
	if ((err = set_listener(r, REDIRECT_LISTENER_OUTBOUND, fds->outbound_listener_fd)) ||
	    (err = set_listener(r, REDIRECT_LISTENER_INBOUND, fds->inbound_listener_fd)) ||
	    (err = set_listener(r, REDIRECT_LISTENER_OUTBOUND6, fds->outbound6_listener_fd)) ||
	    (err = set_listener(r, REDIRECT_LISTENER_INBOUND6, fds->inbound6_listener_fd)) ||
	    (err = set_listener(r, REDIRECT_LISTENER_HBONE, fds->hbone_listener_fd)) ||
	    (err = set_listener(r, REDIRECT_LISTENER_HBONE6, fds->hbone6_listener_fd)))
		return err;
	r->opts.outbound_listener_fd = fds->outbound_listener_fd;
	r->opts.inbound_listener_fd = fds->inbound_listener_fd;
	r->opts.outbound6_listener_fd = fds->outbound6_listener_fd;
	r->opts.inbound6_listener_fd = fds->inbound6_listener_fd;
	r->opts.hbone_listener_fd = fds->hbone_listener_fd;
	r->opts.hbone6_listener_fd = fds->hbone6_listener_fd;
	return 0;
}

/* IPv6 local delivery: `ip -6 rule fwmark MARK/MASK lookup TABLE` and `local ::/0 dev lo` in
 * TABLE, as for IPv4. A node without IPv6 (ipv6.disable=1, or IPv6 disabled on lo) cannot take
 * them: then IPv6 capture is off, and r->ipv6 stays false (a captured IPv6 packet could not be
 * delivered; the socket assigned to it keeps it from being forwarded, so it is dropped: capture
 * still fails closed). 0, or -errno for any other failure. */
static int ipv6_delivery_add(struct redirect *r)
{
	const struct redirect_opts *o = &r->opts;
	int err;

	err = netlink_rule_add(r->nl, AF_INET6, o->mark, o->mark_mask, o->table, o->rule_priority);
	if (!err) {
		err = netlink_local_route_add(r->nl, AF_INET6, o->table);
		if (err)
			netlink_rule_del(r->nl, AF_INET6, o->mark, o->mark_mask, o->table,
					 o->rule_priority);
	}
	if (err == -EAFNOSUPPORT || err == -EACCES || err == -EOPNOTSUPP) {
		pr_info("capture: IPv6 is off on this node (%s): IPv6 TCP of enrolled pods is not "
			"captured", strerror(-err));
		return 0;
	}
	r->ipv6 = err == 0;
	return err;
}

struct redirect *redirect_new(const struct redirect_opts *opts)
{
	struct redirect *r = calloc(1, sizeof(*r));
	const char *what = "";
	char sysctl[640];
	int err = -ENOMEM;

	setup_libbpf_log();
	if (!r)
		goto fail;
	r->epfd = r->timerfd = -1;
	r->opts = *opts;
	r->pin_dir = strdup(opts->pin_dir ? opts->pin_dir : "/sys/fs/bpf/ambit");
	if (!r->pin_dir)
		goto fail;
	r->opts.pin_dir = r->pin_dir;
	r->sysctl_dir = strdup(sysctl_dir(opts));
	if (!r->sysctl_dir)
		goto fail;
	r->opts.sysctl_dir = r->sysctl_dir;
	what = "mounting bpffs at " BPFFS_ROOT;
	if ((err = bpffs_ensure()))
		goto fail;
	what = "creating the pin dir";
	if ((err = mkdir_p(r->pin_dir)))
		goto fail;
	what = "loading the BPF programs";
	if ((err = load_skel(r)))
		goto fail;
	what = "inserting the listeners into the sockmap";
	if ((err = redirect_set_listeners(r, opts)))
		goto fail;
	what = "opening netlink";
	r->nl = netlink_new(true);
	if (!r->nl) {
		err = -errno;
		goto fail;
	}
	what = "creating the event fd";
	if ((err = events_open(r)))
		goto fail;
	what = "adding the policy rule";
	if ((err = netlink_rule_add(r->nl, AF_INET, opts->mark, opts->mark_mask, opts->table,
				    opts->rule_priority)))
		goto fail;
	what = "adding the local route";
	if ((err = netlink_local_route_add(r->nl, AF_INET, opts->table)))
		goto fail;
	what = "adding the IPv6 policy rule and local route";
	if ((err = ipv6_delivery_add(r)))
		goto fail;
	if ((err = set_tcp_early_demux(r->sysctl_dir, false, sysctl, sizeof(sysctl)))) {
		what = sysctl;
		goto fail;
	}
	what = "taking over the interfaces of the previous run";
	if ((err = netlink_refresh(r->nl)) || (err = adopt_previous(r)))
		goto fail;
	pr_info("capture: BPF loaded (maps pinned in %s), rule fwmark 0x%x/0x%x lookup %u prio %u%s",
		r->pin_dir, opts->mark, opts->mark_mask, opts->table, opts->rule_priority,
		r->ipv6 ? " (IPv4 and IPv6)" : " (IPv4)");
	return r;
fail:
	pr_warn("capture: %s: %s", what, strerror(-err));
	redirect_free(r);
	errno = -err;
	return NULL;
}

void redirect_free(struct redirect *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->npods; i++)
		free(r->pods[i].uid);
	free(r->pods);
	netlink_free(r->nl);
	if (r->epfd >= 0)
		close(r->epfd);
	if (r->timerfd >= 0)
		close(r->timerfd);
	redirect_bpf__destroy(r->skel);
	free(r->pin_dir);
	free(r->sysctl_dir);
	free(r);
}

int redirect_set_pods(struct redirect *r, const struct redirect_pod *pods, size_t n)
{
	int err, first_err = 0;

	if ((err = netlink_refresh(r->nl)))
		return err;
	for (size_t i = 0; i < r->npods; i++)
		r->pods[i].wanted = false;
	for (size_t i = 0; i < n; i++) {
		struct rd_pod q, *p;
		char *uid;

		if (rd_pod_of_redirect_pod(&pods[i], &q))
			continue;
		p = pod_find(r, &q);
		if (!p && !(p = pod_add(r, &q)))
			return -ENOMEM;
		p->wanted = true;
		if ((err = pod_set_ip6(r, p, &q)) && !first_err)
			first_err = err;
		if (pods[i].uid && (!p->uid || strcmp(p->uid, pods[i].uid) != 0)) {
			if (!(uid = strdup(pods[i].uid)))
				return -ENOMEM;
			free(p->uid);
			p->uid = uid;
		}
	}
	for (size_t i = 0; i < r->npods;) {
		struct rd_pod *p = &r->pods[i];
		if (!p->wanted) {
			pod_detach(r, p);
			pod_remove(r, i);
			continue;
		}
		if (!p->ifindex && (err = pod_try_attach(r, p)) && !first_err)
			first_err = err;
		refresh_local_mac(r, p);
		i++;
	}
	retry_timer_update(r);
	return first_err;
}

int redirect_event_fd(struct redirect *r)
{
	return r->epfd;
}

int redirect_process_events(struct redirect *r)
{
	uint64_t ticks = 0;
	bool retry;
	int err, first_err = 0;

	retry = read(r->timerfd, &ticks, sizeof(ticks)) == (ssize_t)sizeof(ticks);
	err = netlink_drain_events(r->nl);
	if (err < 0 || (err == 0 && !retry))
		return err;
	if ((err = netlink_refresh(r->nl)))
		return err;
	for (size_t i = 0; i < r->npods; i++) {
		struct rd_pod *p = &r->pods[i];
		char name[IF_NAMESIZE];

		/* Interface gone (pod deleted or re-created): its filters went with it. */
		if (p->ifindex && (netlink_link_name(r->nl, p->ifindex, name) ||
				   strcmp(name, p->ifname) != 0)) {
			__u32 key = (__u32)p->ifindex;
			pr_info("capture: %s (ifindex %d) is gone; pod %s pending", p->ifname,
				p->ifindex, p->uid ? p->uid : "?");
			bpf_map_delete_elem(ifaces_fd(r), &key);
			p->ifindex = 0;
			p->ifname[0] = '\0';
			p->qdisc_ours = false;
		}
		if (!p->ifindex && (err = pod_try_attach(r, p)) && !first_err)
			first_err = err;
		refresh_local_mac(r, p);
	}
	retry_timer_update(r);
	return first_err;
}

/* ---- introspection ---- */

static json_t *prog_json(const struct bpf_program *prog)
{
	struct bpf_prog_info info = { 0 };
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len))
		return json_null();
	return json_pack("{s:s, s:I}", "name", info.name, "id", (json_int_t)info.id);
}

json_t *redirect_state_json(struct redirect *r)
{
	json_t *o = json_object(), *ifs = json_array(), *pend = json_array();
	json_t *lis = json_object(), *st = json_object();
	int ncpu = libbpf_num_possible_cpus();
	char ip[INET_ADDRSTRLEN], ip6[INET6_ADDRSTRLEN], mac[18];

	if (!o || !ifs || !pend || !lis || !st || ncpu <= 0)
		goto fail;
	for (size_t i = 0; i < r->npods; i++) {
		struct rd_pod *p = &r->pods[i];
		struct redirect_iface cfg = { 0 };
		__u32 key = (__u32)p->ifindex;

		const char *ip4s = p->ip ? inet_ntop(AF_INET, &p->ip, ip, sizeof(ip)) : NULL;
		const char *ip6s = p->has6 ? inet_ntop(AF_INET6, p->ip6, ip6, sizeof(ip6)) : NULL;

		if (!p->ifindex) {
			json_array_append_new(pend, json_pack("{s:s?, s:s?, s:s?}", "pod_uid", p->uid,
							      "ip", ip4s, "ip6", ip6s));
			continue;
		}
		bpf_map_lookup_elem(ifaces_fd(r), &key, &cfg);
		snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", cfg.local_mac[0],
			 cfg.local_mac[1], cfg.local_mac[2], cfg.local_mac[3], cfg.local_mac[4],
			 cfg.local_mac[5]);
		json_array_append_new(ifs, json_pack("{s:s, s:i, s:s?, s:s?, s:s?, s:s, s:s, s:b}",
			"ifname", p->ifname, "ifindex", p->ifindex, "pod_uid", p->uid, "ip", ip4s,
			"ip6", ip6s,
			"mode", p->mode == REDIRECT_MODE_BRIDGE ? "bridge" : "routed",
			"local_mac", mac, "qdisc_ours", p->qdisc_ours));
	}
	for (__u32 k = 0; k < REDIRECT_LISTENER_MAX; k++) {
		__u64 cookie = 0;
		int ok = bpf_map_lookup_elem(bpf_map__fd(r->skel->maps.ambit_listeners), &k, &cookie) == 0;
		json_object_set_new(lis, listener_names[k],
				    ok ? json_pack("{s:I}", "socket_cookie", (json_int_t)cookie) : json_null());
	}
	{
		__u64 vals[ncpu];
		for (__u32 k = 0; k < REDIRECT_STAT_MAX; k++) {
			__u64 sum = 0;
			if (bpf_map_lookup_elem(bpf_map__fd(r->skel->maps.stats), &k, vals) == 0)
				for (int c = 0; c < ncpu; c++)
					sum += vals[c];
			json_object_set_new(st, stat_names[k], json_integer((json_int_t)sum));
		}
	}
	json_object_set_new(o, "pin_dir", json_string(r->pin_dir));
	json_object_set_new(o, "sysctl_dir", json_string(r->sysctl_dir));
	json_object_set_new(o, "programs", json_pack("{s:o, s:o}",
		"ingress", prog_json(r->skel->progs.ambit_ingress),
		"egress", prog_json(r->skel->progs.ambit_egress)));
	json_object_set_new(o, "tc", json_pack("{s:i, s:i}", "handle", REDIRECT_TC_HANDLE,
					       "priority", REDIRECT_TC_PRIORITY));
	json_object_set_new(o, "rule", json_pack("{s:I, s:I, s:I, s:I, s:b}",
		"fwmark", (json_int_t)r->opts.mark, "mask", (json_int_t)r->opts.mark_mask,
		"table", (json_int_t)r->opts.table, "priority", (json_int_t)r->opts.rule_priority,
		"ipv6", r->ipv6));
	json_object_set_new(o, "listeners", lis);
	json_object_set_new(o, "interfaces", ifs);
	json_object_set_new(o, "pending", pend);
	json_object_set_new(o, "counters", st);
	return o;
fail:
	json_decref(o);
	json_decref(ifs);
	json_decref(pend);
	json_decref(lis);
	json_decref(st);
	errno = ENOMEM;
	return NULL;
}

/* ---- uninstall ---- */

int redirect_cleanup(const struct redirect_opts *opts)
{
	const char *dir = opts->pin_dir ? opts->pin_dir : "/sys/fs/bpf/ambit";
	char sysctl[640];
	struct netlink *nl;
	int *links = NULL, err, first_err = 0;
	size_t n = 0;

	setup_libbpf_log();
	nl = netlink_new(false);
	if (!nl)
		return -errno;
	err = netlink_links(nl, &links, &n);
	if (err) {
		netlink_free(nl);
		return err;
	}
	/* Static FDB entries of bridge-mode pods are listed in the pinned ifaces map. */
	{
		char path[300];
		int mfd;
		__u32 key, *prev = NULL;

		pin_path(path, sizeof(path), dir, REDIRECT_MAP_IFACES);
		mfd = bpf_obj_get(path);
		while (mfd >= 0 && bpf_map_get_next_key(mfd, prev, &key) == 0) {
			fdb_unpin(nl, mfd, (int)key);
			prev = &key;
		}
		if (mfd >= 0)
			close(mfd);
	}
	for (size_t i = 0; i < n; i++) {
		bool removed = false;
		for (int d = 0; d < 2; d++) {
			enum bpf_tc_attach_point ap = d ? BPF_TC_EGRESS : BPF_TC_INGRESS;
			err = tc_is_ours(links[i], ap);
			if (err > 0) {
				err = tc_detach_one(links[i], ap);
				removed = removed || !err;
			}
			if (err < 0) {
				pr_warn("cleanup: tc filter on ifindex %d: %s", links[i], strerror(-err));
				first_err = first_err ? first_err : err;
			}
		}
		/* A clsact left empty by us was ours (or is of no use to anyone). */
		if (removed)
			tc_destroy_if_empty(nl, links[i]);
	}
	free(links);
	for (int f = 0; f < 2; f++) {
		int family = f ? AF_INET6 : AF_INET;
		const char *v = f ? "IPv6 " : "";

		/* A node without IPv6 has no IPv6 rule or route to remove. */
		err = netlink_rule_del(nl, family, opts->mark, opts->mark_mask, opts->table,
				       opts->rule_priority);
		if (err && !(f && err == -EAFNOSUPPORT)) {
			pr_warn("cleanup: %spolicy rule: %s", v, strerror(-err));
			first_err = first_err ? first_err : err;
		}
		err = netlink_local_route_del(nl, family, opts->table);
		if (err && !(f && err == -EAFNOSUPPORT)) {
			pr_warn("cleanup: %slocal route in table %u: %s", v, opts->table,
				strerror(-err));
			first_err = first_err ? first_err : err;
		}
	}
	if ((err = set_tcp_early_demux(sysctl_dir(opts), true, sysctl, sizeof(sysctl)))) {
		pr_warn("cleanup: %s: %s", sysctl, strerror(-err));
		first_err = first_err ? first_err : err;
	}
	if ((err = unpin_all(dir))) {
		pr_warn("cleanup: pinned maps in %s: %s", dir, strerror(-err));
		first_err = first_err ? first_err : err;
	}
	netlink_free(nl);
	return first_err;
}
