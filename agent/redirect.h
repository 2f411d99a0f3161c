/* SPDX-License-Identifier: Apache-2.0 */
/* eBPF traffic capture: loads bpf/redirect.bpf.c through its skeleton, keeps its maps pinned
 * (so capture survives an agent restart and fails closed while the agent is down), attaches
 * it to the host-side interface of every local enrolled pod, installs the policy-routing rule
 * that delivers captured packets locally, and undoes all of it on `ambitd --cleanup`.
 * The only user of libbpf. Interface lookups and rules go through agent/netlink.h.
 *
 * What the node netns gets: tc clsact filters (handle/priority REDIRECT_TC_*) on each enrolled
 * pod's host veth; `ip rule fwmark MARK/MASK lookup TABLE prio PRIO`; `local 0.0.0.0/0 dev lo
 * table TABLE`; the same two for IPv6 (`ip -6 rule`, `local ::/0`) when the node has IPv6;
 * net.ipv4.tcp_early_demux=0 (it covers IPv6 TCP too) (else forwarded packets of inbound-captured
 * connections would meet the agent's socket in early demux and be dropped by ip_forward);
 * in bridge mode a static FDB entry per pod (captured frames skip the bridge's learning).
 * Must run in the node's network namespace (netlink sockets, sysctl and tc are per netns). */
#ifndef AMBIT_AGENT_REDIRECT_H
#define AMBIT_AGENT_REDIRECT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct redirect_opts {
	const char *pin_dir;		/* bpffs folder, default /sys/fs/bpf/ambit */
	/* The node netns's net sysctls (a procfs `sys/net` folder); NULL: auto, i.e.
	 * REDIRECT_HOST_SYSCTL_DIR when a procfs is mounted there (a container's read-only
	 * /proc/sys; the DaemonSet's hostPath), else /proc/sys/net. */
	const char *sysctl_dir;
	uint32_t mark;			/* fwmark for local delivery, default 0x0a3b0000 */
	uint32_t mark_mask;		/* default 0xffff0000 */
	uint32_t table;			/* routing table, default 133 */
	uint32_t rule_priority;		/* ip rule priority, default 32000 */
	int outbound_listener_fd;	/* transparent listener on 15001 (127.0.0.1 works), -1 none */
	int inbound_listener_fd;	/* transparent listener on 15006, -1 none */
	/* IPv6 transparent listeners (IPV6_V6ONLY; [::1] works), -1 none: then IPv6 SYNs of
	 * enrolled pods are dropped, as IPv4 ones are without a listener. */
	int outbound6_listener_fd;
	int inbound6_listener_fd;
	/* Pod-addressed HBONE: transparent listeners for TCP towards a pod's own port 15008
	 * (ztunnel's wire format), IPv4 and IPv6; -1 none: such SYNs are then dropped. */
	int hbone_listener_fd;
	int hbone6_listener_fd;
};

/* Where the DaemonSet mounts the host's /proc/sys/net (hostPath), as Cilium's agent does. */
#define REDIRECT_HOST_SYSCTL_DIR "/host/proc/sys/net"

struct redirect;

/* A local enrolled pod to capture. Its interface is found through addr. */
struct redirect_pod {
	const char *uid;
	struct sockaddr_storage addr;	/* pod IPv4 (or the IPv6 of an IPv6-only pod), port 0 */
	struct sockaddr_storage addr6;	/* a dual-stack pod's IPv6; ss_family 0 when none */
};

/* Loads (or re-uses pinned) BPF state, installs rule and route, registers the listeners
 * (the fds stay the caller's; the sockmap holds the sockets, and the kernel drops them from it
 * when they close) and takes over the interfaces a previous run attached. opts is copied.
 * NULL + errno on failure, after logging what failed. */
struct redirect *redirect_new(const struct redirect_opts *opts);
/* Puts the listening sockets of fds' *_listener_fd into the sockmap (-1: that slot is left as it
 * is; the other fields are ignored). New SYNs of
 * captured pods go to them from now on: an agent taking over from the one being upgraded
 * calls this once it is ready (the old agent's listeners serve until then). 0 or -errno. */
int redirect_set_listeners(struct redirect *r, const struct redirect_opts *fds);
/* Stops following links; leaves capture in place (restart keeps pods captured). NULL ok. */
void redirect_free(struct redirect *r);
/* Makes the captured set exactly `pods`: attaches to newly enrolled pods' interfaces,
 * detaches from pods no longer enrolled. Pods whose interface is not there yet are retried
 * on link events. 0 or -errno. */
int redirect_set_pods(struct redirect *r, const struct redirect_pod *pods, size_t n);
/* Is the pod with address addr (IPv4 or IPv6, port ignored) captured now: in the set and
 * attached to its interface (false while it waits for its interface, and for unknown pods)? */
bool redirect_pod_captured(const struct redirect *r, const struct sockaddr_storage *addr);
/* The fd for the event loop (an epoll fd over the netlink event socket and a retry timer that
 * runs while some pod is pending); call redirect_process_events when it is readable. */
int redirect_event_fd(struct redirect *r);
int redirect_process_events(struct redirect *r);
/* Attached interfaces and pending pods, program ids, listeners (socket cookies), rule and
 * per-verdict counters (admin API `bpf`). New reference; NULL + errno. */
json_t *redirect_state_json(struct redirect *r);
/* Removes every tc filter (on every link; clsact too when that leaves it empty), rule, route
 * (IPv4 and IPv6),
 * static FDB entry and pinned object that ambit installed and restores tcp_early_demux=1.
 * Needs no running agent; idempotent. 0 or the first -errno (all steps are tried). */
int redirect_cleanup(const struct redirect_opts *opts);
/* Defaults: pin_dir /sys/fs/bpf/ambit, sysctl_dir NULL (auto), mark 0x0a3b0000/0xffff0000,
 * table 133, priority 32000, no listeners (all six fds -1). */
void redirect_opts_default(struct redirect_opts *opts);

#endif
