// SPDX-License-Identifier: Apache-2.0
/* ambitd, the node agent: loads the configuration, starts discovery, the capture listeners,
 * eBPF redirection and the agent's endpoints, runs the event loop, drains on SIGTERM.
 * `ambitd --cleanup` removes everything the agent installed in the kernel. */
#include "agent/agent.h"
#include "agent/conn.h"
#include "agent/httpd.h"
#include "agent/mesh.h"
#include "agent/metrics.h"
#include "agent/policy.h"
#include "agent/proxy.h"
#include "agent/redirect.h"
#include "agent/telemetry.h"
#include "agent/workloads.h"
#include "common/cli.h"
#include "common/httpc.h"
#include "common/log.h"
#include "common/util.h"
#include "otlp/tracer.h"
#include "tls/ctx.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static const char usage_text[] =
	"Usage: ambitd --config FILE [--check]\n"
	"       ambitd --cleanup [--config FILE]\n"
	"\n"
	"The ambit node agent: captures the TCP traffic of enrolled pods with eBPF, carries it to\n"
	"the destination node's agent inside HBONE (mTLS HTTP/2 CONNECT on port 15008) and emits\n"
	"one OpenTelemetry span per connection per side.\n"
	"\n"
	"Options:\n"
	"  -c, --config FILE   JSON configuration (see docs/configuration.md)\n"
	"      --check         validate the configuration and exit (0 valid, 2 invalid)\n"
	"      --cleanup       remove the tc filters, policy-routing rule and route, and pinned BPF\n"
	"                      objects that ambitd installed, then exit (uninstall); uses the\n"
	"                      configuration's redirect keys when --config is given\n"
	"  -l, --log-level LVL override log.level (error, warn, info, debug, trace)\n"
	"  -h, --help          this text\n"
	"  -V, --version       print the version\n"
	"\n"
	"Ports: 15001 outbound capture, 15006 inbound capture, 15008 HBONE, 15000 admin\n"
	"(127.0.0.1), 15020 metrics, 15021 readiness. Environment: NODE_NAME, NODE_IP and the\n"
	"OTEL_* variables of the OpenTelemetry specification.\n"
	"Exit status: 0 success, 1 runtime failure, 2 bad usage or configuration.\n";

static struct agent agent;

/* ---- upgrades without resets (docs/kubernetes.md "Upgrades") ----
 * A new agent may start while the one it replaces still runs in the same node netns (a
 * DaemonSet rolling update with maxSurge). Its listeners are bound with SO_REUSEPORT but not
 * listening, and its sockmap slots are left to the old agent, until its first model is applied:
 * then it listens (joining the ports' reuseport groups), puts its capture listeners into the
 * pinned sockmap (new captured connections come to it from then on) and reports ready. The old
 * agent, on SIGTERM, closes its listeners (tcp_migrate_req hands what waits in their queues to
 * ours), answers 503 on readiness, leaves capture as it is and serves its open connections
 * until they end or its drain deadline passes. */

#define MIGRATE_REQ_SYSCTL "/proc/sys/net/ipv4/tcp_migrate_req"

/* Connections queued on a listener that closes move to another listener of its reuseport
 * group instead of being reset (Linux 5.14+; per network namespace). */
static void listener_handover_enable(void)
{
	int fd = open(MIGRATE_REQ_SYSCTL, O_WRONLY | O_CLOEXEC);
	if (fd == -1 || write(fd, "1", 1) != 1)
		pr_info("upgrade: cannot set %s (%s): connections queued on a closing agent's "
			"listener may be reset during an upgrade", MIGRATE_REQ_SYSCTL, strerror(errno));
	if (fd != -1)
		close(fd);
}

/* Starts taking traffic; called once the first model is applied. 0 or -errno (logged). */
static int take_over(struct agent *a)
{
	int err;

	if (a->serving)
		return 0;
	listener_handover_enable();
	if ((err = proxy_start_listening(a->proxy)) || (err = mesh_start_listening(a->mesh))) {
		pr_err("upgrade: cannot start listening: %s", strerror(-err));
		return err;
	}
	struct redirect_opts fds = {
		.outbound_listener_fd = proxy_outbound_fd(a->proxy),
		.inbound_listener_fd = proxy_inbound_fd(a->proxy),
		.outbound6_listener_fd = proxy_outbound6_fd(a->proxy),
		.inbound6_listener_fd = proxy_inbound6_fd(a->proxy),
		.hbone_listener_fd = mesh_pod_listener_fd(a->mesh, AF_INET),
		.hbone6_listener_fd = mesh_pod_listener_fd(a->mesh, AF_INET6),
	};
	if (a->redirect && (err = redirect_set_listeners(a->redirect, &fds))) {
		pr_err("capture: inserting the listeners into the sockmap: %s", strerror(-err));
		return err;
	}
	a->serving = true;
	pr_info("taking traffic: listening on 15001/15006/15008%s", a->redirect
		? ", capture listeners in the sockmap" : "");
	return 0;
}

/* SIGTERM: stop accepting everywhere; capture stays (the successor owns it, or it fails
 * closed until the agent is back), and so does the readiness port's answer: 503. */
static void stop_taking_traffic(struct agent *a)
{
	if (a->proxy)
		proxy_stop_accepting(a->proxy);
	if (a->mesh)
		mesh_drain(a->mesh);
	/* The successor answers the kubelet's probes on 15021 from now on. */
	httpd_free(a->ready);
	a->ready = NULL;
}

/* Takes traffic once the first model is applied and every local workload has a certificate
 * (readiness says the same): before that, an old agent being replaced keeps serving, and a new
 * connection never meets an agent that would refuse it for want of a certificate. 0 or -errno
 * (take_over failed: the loop stops). */
static int maybe_take_over(struct agent *a)
{
	char why[512];
	int err;

	if (a->serving || !a->model_applied || a->draining ||
	    runtime_identity_status(&a->id, why, sizeof(why)) < 0)
		return 0;
	if ((err = take_over(a))) {
		loop_stop(a->loop);
		return err;
	}
	pr_info("ready: taking traffic");
	return 0;
}

/* The certstore has news (on the loop): waiting CONNECTs go on, and the agent may now take
 * traffic. */
static void on_certs(void *arg)
{
	struct agent *a = arg;

	mesh_certs_changed(a->mesh);
	maybe_take_over(a);
}

static int apply_model(struct agent *a)
{
	struct model *m = model_current();
	struct redirect_pod *pods = NULL;
	size_t n = 0, nids = 0;
	struct spiffe_id *ids = NULL;
	int err = 0;

	/* Certificates for every local enrolled workload, fetched before its first connection. */
	if (m->nworkloads && !(ids = calloc((size_t)m->nworkloads, sizeof(*ids)))) {
		err = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < m->nworkloads; i++) {
		const struct model_workload *w = &m->workloads[i];
		if (w->enrolled && w->node && strcmp(w->node, a->cfg.node_name) == 0 &&
		    mesh_workload_id(a->cfg.trust_domain, w, &ids[nids]) == 0)
			nids++;
	}
	runtime_identity_want(&a->id, ids, nids);
	if (a->redirect && m->nworkloads) {
		pods = calloc((size_t)m->nworkloads, sizeof(*pods));
		if (!pods) {
			err = -ENOMEM;
			goto out;
		}
	}
	for (int i = 0; pods && i < m->nworkloads; i++) {
		const struct model_workload *w = &m->workloads[i];
		if (!w->enrolled || !w->node || strcmp(w->node, a->cfg.node_name) != 0)
			continue;
		/* The interface is found through the IPv4 address; a dual-stack pod's IPv6
		 * address rides along (an IPv6-only pod is found through it). */
		const struct sockaddr_storage *a4 = model_workload_addr(w, AF_INET);
		const struct sockaddr_storage *a6 = model_workload_addr(w, AF_INET6);
		if (!a4 && !a6)
			continue;
		pods[n].uid = w->uid;
		pods[n].addr = a4 ? *a4 : *a6;
		if (a4 && a6)
			pods[n].addr6 = *a6;
		n++;
	}
	/* A draining agent leaves capture to its successor (or as it is, failing closed). */
	if (a->redirect && !a->draining) {
		err = redirect_set_pods(a->redirect, pods, n);
		if (err)
			pr_err("capture: applying %zu local enrolled pods: %s", n, strerror(-err));
		else
			a->npods_captured = (int)n;
	}
	/* Inbound HBONE follows the model once capture has been applied (held CONNECTs too),
	 * even when some pod failed: each pod is served only once its own capture is in place
	 * (mesh_opts.captured), as a tunnel to it before would lose the pod's replies. */
	mesh_model_applied(a->mesh, m);
	/* Ready only once a published model (not the empty one of start-up) is in place: with
	 * Kubernetes discovery that is after the first full list, so a node never reports ready
	 * while its enrolled pods are not captured yet. */
	if (!err && !a->model_applied && m->generation > 0 && !a->draining) {
		a->model_applied = true;
		pr_info("model applied: %d workloads known, %zu local pods captured", m->nworkloads, n);
	}
	if (!err)
		err = maybe_take_over(a);
out:
	free(ids);
	free(pods);
	model_unref(m);
	return err;
}

static void apply_model_task(struct loop *l, void *arg)
{
	(void)l;
	apply_model(arg);
}

/* Called on the discovery thread: hand over to the loop. */
static void on_model(struct model *m, void *arg)
{
	struct agent *a = arg;
	(void)m;
	runtime_post_model(a->loop, apply_model_task, a);
}

/* mesh_opts.captured: has the local pod at addr its capture in place? */
static bool pod_captured(void *arg, const struct sockaddr_storage *addr)
{
	struct agent *a = arg;
	return !a->redirect || redirect_pod_captured(a->redirect, addr);
}

static void on_redirect_events(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct agent *a = io->arg;
	int err;
	(void)l, (void)events;
	if (a->draining) {	/* capture is the successor's to follow now */
		loop_io_del(a->loop, &a->redirect_io);
		return;
	}
	err = redirect_process_events(a->redirect);
	if (err)
		pr_warn_rl("capture: processing link events: %s", strerror(-err));
	mesh_retry_held(a->mesh);	/* a pod's capture may be in place now */
}

/* Drained: no connection left, and no inbound HBONE stream either (one answered at the drain,
 * a held CONNECT's 503, still has its response to send). */
static bool drained(void *arg)
{
	struct agent *a = arg;

	return conn_count() == 0 && (!a->mesh || mesh_inbound_streams(a->mesh) == 0);
}

static void on_signal(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct agent *a = io->arg;
	struct signalfd_siginfo si;
	(void)events;
	while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (a->draining) {
			pr_warn("second signal: exiting now");
			loop_stop(l);
			return;
		}
		pr_info("signal %u: draining (up to %u ms); capture stays in place and fails closed "
			"until the agent is back", si.ssi_signo, a->cfg.drain_timeout_ms);
		a->draining = true;
		stop_taking_traffic(a);
		/* drain_timeout_ms bounds the whole exit: connections get it less the span
		 * flush (at most half of it), so the spans of the connections closed at the
		 * deadline still go out before the kubelet's SIGKILL. */
		uint32_t flush = MIN(otlp_tracer_flush_budget_ms(a->tracer),
				     a->cfg.drain_timeout_ms / 2);
		a->exit_deadline_ms = now_mono_ms() + a->cfg.drain_timeout_ms;
		runtime_drain_start(&a->drain, l, a->exit_deadline_ms - flush);
	}
}

static struct httpd *start_httpd(struct agent *a, const char *what, const char *ip, uint16_t port,
				 httpd_handler_fn fn)
{
	struct sockaddr_storage ss;
	struct httpd *h;
	char s[ADDR_STR_LEN];

	if (sockaddr_parse(ip, port, &ss)) {
		pr_err("%s: '%s' is not an address", what, ip);
		return NULL;
	}
	h = httpd_new(a->loop, &ss, fn, a);
	if (!h)
		pr_err("%s: cannot listen on %s: %s", what, sockaddr_str(&ss, s, sizeof(s)),
		       strerror(errno));
	return h;
}

static double metric_conns(void *arg)
{
	(void)arg;
	return (double)conn_count();
}

static int run(struct agent *a)
{
	struct proxy_opts po = {
		.node_name = a->cfg.node_name,
		.trust_domain = a->cfg.trust_domain,
		.connect_timeout_ms = a->cfg.connect_timeout_ms,
		.max_connections = a->cfg.max_connections,
		.buffer_size = a->cfg.buffer_size,
		.defer_listen = true,	/* take_over() */
	};
	/* The cluster label of metrics: CLUSTER_ID as ztunnel reads it, "Kubernetes" by default. */
	const char *cluster = getenv("CLUSTER_ID");
	struct telemetry_opts to = { .cluster_id = cluster && *cluster ? cluster : "Kubernetes",
				     .node_name = a->cfg.node_name,
				     .root_ns = a->cfg.root_namespace };
	int err = -EIO;

	a->start_unix_ms = now_real_ns() / 1000000;
	runtime_drain_init(&a->drain, drained, a);
	a->loop = loop_new();
	if (!a->loop) {
		pr_err("cannot create the event loop: %s", strerror(errno));
		return -errno;
	}
	if ((err = runtime_signals_start(a->loop, &a->signal_io, on_signal, a)))
		goto out;

	err = runtime_identity_start(&a->id, a->loop, &a->cfg, CONFIG_ROLE_AGENT, "ambitd");
	if (!err)
		err = runtime_tracer_new(&a->cfg, "ambitd", &a->tracer);
	if (err)
		goto out;
	to.tracer = a->tracer;
	to.request_spans = a->cfg.request_spans;
	telemetry_init(&to);
	metrics_register("ambit_connections_active", "Connections proxied right now", "gauge",
			 metric_conns, NULL);
	runtime_identity_metrics(&a->id);

	po.loop = a->loop;
	sockaddr_parse("127.0.0.1", 15001, &po.outbound_addr);
	sockaddr_parse("127.0.0.1", 15006, &po.inbound_addr);
	a->proxy = proxy_new(&po);
	if (!a->proxy) {
		err = -errno;
		goto out;
	}
	struct mesh_opts mo = {
		.loop = a->loop,
		.proxy = a->proxy,
		.certs = a->id.certs,
		.ca = a->id.ca,
		.node_name = a->cfg.node_name,
		.trust_domain = a->cfg.trust_domain,
		.max_streams = a->cfg.hbone_max_streams,
		.idle_timeout_ms = a->cfg.hbone_idle_timeout_ms,
		.ping_interval_ms = a->cfg.hbone_ping_interval_ms,
		.window = a->cfg.hbone_window,
		.max_inbound = a->cfg.hbone_max_inbound,
		.limits = &a->cfg.hbone_limits,
		.defer_listen = true,	/* take_over() */
		.connect_timeout_ms = a->cfg.connect_timeout_ms,
		.dial_pod = strcmp(a->cfg.hbone_dial, "pod") == 0,
		.pod_listeners = a->cfg.redirect_enabled,
		.wait_ms = a->cfg.hbone_model_wait_ms,
		.wait_max = a->cfg.hbone_model_wait_max,
		.captured = a->cfg.redirect_enabled ? pod_captured : NULL,
		.captured_arg = a,
	};
	sockaddr_parse(a->cfg.node_ip, 15008, &mo.hbone_addr);
	a->mesh = mesh_new(&mo);
	if (!a->mesh) {
		err = -errno;
		goto out;
	}
	a->id.on_certs = on_certs;
	a->id.on_certs_arg = a;
	a->id.on_roots = mesh_roots_changed;
	a->id.on_roots_arg = a->mesh;
	if (a->cfg.redirect_enabled) {
		struct redirect_opts ro;
		redirect_opts_default(&ro);
		ro.pin_dir = a->cfg.redirect_pin_dir;
		ro.sysctl_dir = a->cfg.redirect_sysctl_dir;
		ro.mark = a->cfg.redirect_mark;
		ro.table = a->cfg.redirect_table;
		/* No listeners yet: take_over() inserts them once the agent can serve. */
		a->redirect = redirect_new(&ro);
		if (!a->redirect) {
			err = -errno;
			pr_err("capture: cannot set up eBPF redirection: %s", strerror(errno));
			goto out;
		}
		loop_io_init(&a->redirect_io, redirect_event_fd(a->redirect), on_redirect_events, a);
		loop_io_set(a->loop, &a->redirect_io, EPOLLIN);
	}
	a->admin = start_httpd(a, "admin", a->cfg.admin_address, 15000, admin_handle);
	a->metrics = start_httpd(a, "metrics", a->cfg.node_ip, 15020, admin_handle_metrics);
	a->ready = start_httpd(a, "readiness", a->cfg.node_ip, 15021, admin_handle_ready);
	if (!a->admin || !a->metrics || !a->ready) {
		err = -EADDRINUSE;
		goto out;
	}
	/* Before discovery starts: every model is compiled into policies as it is published. */
	struct policy_opts pol = { .loop = a->loop, .root_namespace = a->cfg.root_namespace,
				  .trust_domain = a->cfg.trust_domain };
	err = policy_init(&pol);
	if (err)
		goto out;
	err = runtime_discovery_start(&a->disc, &a->cfg, false, on_model, a);
	if (err)
		goto out;
	/* The first model may have been published before we subscribed. */
	apply_model(a);
	pr_info("ambitd %s on node %s (%s): capture %s, listening", AMBIT_VERSION, a->cfg.node_name,
		a->cfg.node_ip, a->redirect ? "on" : "off");
	err = loop_run(a->loop);
	if (!err && !a->serving && !a->draining)
		err = -EIO;	/* take_over() failed (logged) */
	pr_info("stopped");
out:
	runtime_discovery_stop(&a->disc);
	httpd_free(a->admin);
	httpd_free(a->metrics);
	httpd_free(a->ready);
	if (a->redirect) {
		loop_io_del(a->loop, &a->redirect_io);
		redirect_free(a->redirect);
	}
	a->id.on_certs = NULL;
	a->id.on_roots = NULL;
	mesh_free(a->mesh);
	proxy_free(a->proxy);
	policy_fini();
	runtime_drain_stop(&a->drain, a->loop);
	if (a->draining) {
		uint64_t now = now_mono_ms();
		telemetry_fini(a->exit_deadline_ms > now ? (uint32_t)(a->exit_deadline_ms - now) : 0);
		now = now_mono_ms();
		otlp_tracer_free_within(a->tracer, a->exit_deadline_ms > now
							   ? (uint32_t)(a->exit_deadline_ms - now) : 0);
	} else {
		telemetry_fini(otlp_tracer_flush_budget_ms(a->tracer));
		otlp_tracer_free(a->tracer);
	}
	runtime_identity_stop(&a->id);
	runtime_signals_stop(a->loop, &a->signal_io);
	loop_free(a->loop);
	metrics_reset();
	return err;
}

int main(int argc, char **argv)
{
	struct cli_opts o;
	char err[768];
	int rc;

	log_set_component("ambitd");
	if ((rc = cli_parse(argc, argv, "ambitd", usage_text, CLI_CLEANUP, &o)) >= 0)
		return rc;
	if (config_init(&agent.cfg, CONFIG_ROLE_AGENT)) {
		fprintf(stderr, "ambitd: out of memory\n");
		return 1;
	}
	if (o.config_path &&
	    (config_load(&agent.cfg, CONFIG_ROLE_AGENT, o.config_path, err, sizeof(err)) ||
	     (!o.cleanup && config_validate(&agent.cfg, CONFIG_ROLE_AGENT, err, sizeof(err))))) {
		fprintf(stderr, "ambitd: %s\n", err);
		config_fini(&agent.cfg);
		return CLI_EXIT_USAGE;
	}
	if ((rc = cli_log_level("ambitd", o.log_level, &agent.cfg.log_level))) {
		config_fini(&agent.cfg);
		return rc;
	}
	log_set_level(agent.cfg.log_level);
	log_set_format(agent.cfg.log_format);
	if (o.check) {
		printf("%s: valid\n", o.config_path);
		config_fini(&agent.cfg);
		return 0;
	}
	if (o.cleanup) {
		struct redirect_opts ro;
		redirect_opts_default(&ro);
		ro.pin_dir = agent.cfg.redirect_pin_dir;
		ro.sysctl_dir = agent.cfg.redirect_sysctl_dir;
		ro.mark = agent.cfg.redirect_mark;
		ro.table = agent.cfg.redirect_table;
		rc = redirect_cleanup(&ro);
		if (rc)
			pr_err("cleanup: %s", strerror(-rc));
		else
			pr_info("cleanup: removed ambit's tc filters, rule, route and pinned objects");
		config_fini(&agent.cfg);
		return rc ? 1 : 0;
	}
	if (httpc_global_init()) {
		pr_err("cannot initialise the HTTP client library");
		return 1;
	}
	if (tls_global_init()) {
		pr_err("cannot initialise the TLS library");
		return 1;
	}
	rc = run(&agent);
	httpc_global_fini();
	config_fini(&agent.cfg);
	return rc == -EINVAL ? CLI_EXIT_USAGE : rc ? 1 : 0;
}
