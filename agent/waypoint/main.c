// SPDX-License-Identifier: Apache-2.0
/* ambit-waypoint: the L7 waypoint proxy of one waypoint Service. Loads the configuration (the
 * agent's keys plus name, namespace, load_balancing, http2), starts discovery, the tracer and the
 * certificate store like ambitd, serves HBONE on the pod IP:15008, metrics on 15020, readiness
 * on 15021 and the admin API on 127.0.0.1:15000, and drains on SIGTERM. */
#include "agent/config.h"
#include "agent/conn.h"
#include "agent/httpd.h"
#include "agent/metrics.h"
#include "agent/runtime.h"
#include "agent/telemetry.h"
#include "agent/waypoint/waypoint.h"
#include "agent/workloads.h"
#include "common/cli.h"
#include "common/httpc.h"
#include "common/log.h"
#include "common/util.h"
#include "otlp/tracer.h"
#include "tls/ctx.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define PROG "ambit-waypoint"

static const char usage_text[] =
	"Usage: " PROG " --config FILE [--check]\n"
	"\n"
	"The ambit waypoint: an HBONE-native L7 proxy for the services (and workloads) that name\n"
	"its waypoint Service (istio.io/use-waypoint). It terminates HBONE on its pod IP:15008,\n"
	"reads HTTP/1.x (anything else passes as TCP), applies the AuthorizationPolicies attached\n"
	"to it or to the services it serves, balances each request over the service's endpoints\n"
	"and forwards it over HBONE to the endpoint's node agent under its own identity, with one\n"
	"OpenTelemetry span per request.\n"
	"\n"
	"Options:\n"
	"  -c, --config FILE   JSON configuration (see docs/waypoint.md): the agent's keys plus\n"
	"                      name, namespace, load_balancing (round_robin, least_request)\n"
	"                      and http2 (limits of the HTTP/2 path)\n"
	"      --check         validate the configuration and exit (0 valid, 2 invalid)\n"
	"  -l, --log-level LVL override log.level (error, warn, info, debug, trace)\n"
	"  -h, --help          this text\n"
	"  -V, --version       print the version\n"
	"\n"
	"Ports: 15008 HBONE, 15020 metrics, 15021 readiness (on the pod IP), 15000 admin\n"
	"(127.0.0.1). The pod IP, which names the waypoint's own workload and so its identity, is\n"
	"POD_IP, else node_ip (or NODE_IP), else the local address that is an endpoint of the\n"
	"waypoint Service. Environment: the OTEL_* variables of the OpenTelemetry specification.\n"
	"Exit status: 0 success, 1 runtime failure, 2 bad usage or configuration.\n";

struct wpd {
	struct config cfg;
	struct loop *loop;
	struct waypoint *wp;
	struct runtime_discovery discovery;
	struct runtime_identity id;
	struct httpd *admin, *metrics, *ready;
	struct loop_io signal_io;
	struct runtime_drain drain;
	struct otlp_tracer *tracer;
	struct sockaddr_storage pod_ip;
	bool draining;
};

static struct wpd wpd;

/* Drained: no session and no connection left. */
static bool drained(void *arg)
{
	struct wpd *d = arg;
	return waypoint_sessions(d->wp) == 0 && conn_count() == 0;
}

static void on_signal(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct wpd *d = io->arg;
	struct signalfd_siginfo si;
	(void)events;
	while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (d->draining) {
			pr_warn("second signal: exiting now");
			loop_stop(l);
			return;
		}
		pr_info("signal %u: draining (up to %u ms)", si.ssi_signo, d->cfg.drain_timeout_ms);
		d->draining = true;
		waypoint_drain(d->wp);
		runtime_drain_start(&d->drain, l, now_mono_ms() + d->cfg.drain_timeout_ms);
	}
}

/* ---- endpoints ---- */

static void reply_json(struct httpd_response *resp, int status, json_t *j)
{
	httpd_reply_json(resp, status, j, JSON_INDENT(2));
}

static void handle_admin(void *arg, const struct httpd_request *req, struct httpd_response *resp)
{
	struct wpd *d = arg;
	char tid[64] = "", lim[16] = "";

	if (strcmp(req->path, "/waypoint") == 0 || strcmp(req->path, "/stats") == 0) {
		json_t *o = waypoint_status_json(d->wp);
		json_object_set_new(o, "connections", json_integer((json_int_t)conn_count()));
		reply_json(resp, 200, o);
	} else if (strcmp(req->path, "/config_dump") == 0) {
		reply_json(resp, 200, runtime_config_dump(config_to_json(&d->cfg), &d->discovery));
	} else if (strcmp(req->path, "/policies") == 0) {
		reply_json(resp, 200, waypoint_policies_json(d->wp));
	} else if (strcmp(req->path, "/hbone") == 0) {
		reply_json(resp, 200, waypoint_hbone_json(d->wp));
	} else if (strcmp(req->path, "/spans") == 0) {
		httpd_query_get(req->query, "trace_id", tid, sizeof(tid));
		httpd_query_get(req->query, "limit", lim, sizeof(lim));
		reply_json(resp, 200, telemetry_spans_json(tid[0] ? tid : NULL,
							   lim[0] ? (size_t)strtoul(lim, NULL, 10) : 0));
	} else if (strcmp(req->path, "/certificates") == 0) {
		reply_json(resp, 200, runtime_identity_certificates_json(&d->id));
	} else if (strcmp(req->path, "/workloads") == 0) {
		struct model *m = model_current();
		reply_json(resp, 200, model_to_json(m));
		model_unref(m);
	} else if (strcmp(req->path, "/") == 0) {
		httpd_replyf(resp, 200, "text/plain",
			     "%s %s\n/waypoint /stats /config_dump /hbone /certificates /policies /spans?trace_id=&limit= "
			     "/workloads\n",
			     PROG, AMBIT_VERSION);
	} else {
		httpd_replyf(resp, 404, "text/plain", "no such path: %s\n", req->path);
	}
}

static void handle_ready(void *arg, const struct httpd_request *req, struct httpd_response *resp)
{
	struct wpd *d = arg;
	struct model *m = model_current();
	struct spiffe_id id;
	(void)req;
	if (d->draining)
		httpd_replyf(resp, 503, "text/plain", "draining\n");
	else if (!model_service_by_name(m, d->cfg.waypoint_namespace, d->cfg.waypoint_name))
		httpd_replyf(resp, 503, "text/plain", "waypoint Service %s/%s is not in the model\n",
			     d->cfg.waypoint_namespace, d->cfg.waypoint_name);
	else if (waypoint_self(d->wp, m, NULL, &id))
		httpd_replyf(resp, 503, "text/plain", "the waypoint's own workload is not in the model\n");
	else
		runtime_identity_reply_ready(&d->id, resp);
	model_unref(m);
}

static void handle_metrics(void *arg, const struct httpd_request *req, struct httpd_response *resp)
{
	struct wpd *d = arg;
	size_t len = 0, mlen = 0;
	char *buf = NULL, *tcp = metrics_render(&mlen);
	FILE *f = open_memstream(&buf, &len);
	(void)req;
	if (!f || !tcp) {
		if (f)
			fclose(f);
		free(buf);
		free(tcp);
		httpd_reply(resp, 500, "text/plain", "out of memory\n", 14);
		return;
	}
	fwrite(tcp, 1, mlen, f);
	free(tcp);
	waypoint_metrics_write(d->wp, f);
	if (fclose(f)) {
		free(buf);
		httpd_reply(resp, 500, "text/plain", "out of memory\n", 14);
		return;
	}
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4";
	resp->body = buf;
	resp->body_len = len;
}

static struct httpd *start_httpd(struct wpd *d, const char *what, const struct sockaddr_storage *ss,
				 httpd_handler_fn fn)
{
	char s[ADDR_STR_LEN];
	struct httpd *h = httpd_new(d->loop, ss, fn, d);
	if (!h)
		pr_err("%s: cannot listen on %s: %s", what, sockaddr_str(ss, s, sizeof(s)),
		       strerror(errno));
	return h;
}

/* ---- start-up: agent/runtime.c, shared with ambitd ---- */

/* Keeps the waypoint's own certificate fetched: its identity comes from the model. */
static void want_self(struct loop *l, void *arg)
{
	struct wpd *d = arg;
	struct model *m = model_current();
	struct spiffe_id self;
	(void)l;
	if (d->wp && waypoint_self(d->wp, m, NULL, &self) == 0)
		runtime_identity_want(&d->id, &self, 1);
	model_unref(m);
}

/* Called on the discovery thread: hand over to the loop. */
static void on_model(struct model *m, void *arg)
{
	struct wpd *d = arg;
	(void)m;
	runtime_post_model(d->loop, want_self, d);
}

static int run(struct wpd *d)
{
	struct telemetry_opts to = { .cluster_id = "Kubernetes", .node_name = d->cfg.node_name,
				     .root_ns = d->cfg.root_namespace };
	struct sockaddr_storage any, ss;
	int rc = -EIO;

	runtime_drain_init(&d->drain, drained, d);
	d->loop = loop_new();
	if (!d->loop) {
		pr_err("cannot create the event loop: %s", strerror(errno));
		return -errno;
	}
	if ((rc = runtime_signals_start(d->loop, &d->signal_io, on_signal, d)))
		goto out;

	if ((rc = runtime_identity_start(&d->id, d->loop, &d->cfg, CONFIG_ROLE_WAYPOINT, PROG)) ||
	    (rc = runtime_tracer_new(&d->cfg, PROG, &d->tracer)))
		goto out;
	to.tracer = d->tracer;
	telemetry_init(&to);

	/* Discovery first: the waypoint's identity comes from the model. */
	if ((rc = runtime_discovery_start(&d->discovery, &d->cfg, true, on_model, d)))
		goto out;

	if (d->pod_ip.ss_family)
		any = d->pod_ip;
	else
		sockaddr_parse("0.0.0.0", 0, &any);
	struct waypoint_opts wo = {
		.loop = d->loop,
		.certs = d->id.certs,
		.ca = d->id.ca,
		.tracer = d->tracer,
		.trust_domain = d->cfg.trust_domain,
		.root_namespace = d->cfg.root_namespace,
		.name = d->cfg.waypoint_name,
		.namespace = d->cfg.waypoint_namespace,
		.node_name = d->cfg.node_name,
		.pod_ip = d->pod_ip,
		.lb = strcmp(d->cfg.waypoint_lb, "least_request") == 0 ? WAYPOINT_LB_LEAST_REQUEST
								       : WAYPOINT_LB_ROUND_ROBIN,
		.connect_timeout_ms = d->cfg.connect_timeout_ms,
		.buffer_size = d->cfg.buffer_size,
		.max_streams = d->cfg.hbone_max_streams,
		.idle_timeout_ms = d->cfg.hbone_idle_timeout_ms,
		.ping_interval_ms = d->cfg.hbone_ping_interval_ms,
		.window = d->cfg.hbone_window,
		.max_inbound = d->cfg.hbone_max_inbound,
		.limits = &d->cfg.hbone_limits,
		.dial_pod = strcmp(d->cfg.hbone_dial, "pod") == 0,
		.h2_conns_per_endpoint = d->cfg.wp_h2_conns_per_endpoint,
		.h2_client_streams = d->cfg.wp_h2_client_streams,
		.h2_pending = d->cfg.wp_h2_pending,
		.h1_trailers = d->cfg.wp_h1_trailers,
	};
	wo.hbone_addr = any;
	((struct sockaddr_in *)&wo.hbone_addr)->sin_port = htons(15008);
	if (any.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&wo.hbone_addr)->sin6_port = htons(15008);
	d->wp = waypoint_new(&wo);
	if (!d->wp) {
		rc = -errno;
		goto out;
	}
	d->id.on_certs = waypoint_certs_changed;
	d->id.on_certs_arg = d->wp;
	d->id.on_roots = waypoint_roots_changed;
	d->id.on_roots_arg = d->wp;
	runtime_identity_metrics(&d->id);
	want_self(d->loop, d);	/* the model may be in place already */
	if (sockaddr_parse(d->cfg.admin_address, 15000, &ss) == 0)
		d->admin = start_httpd(d, "admin", &ss, handle_admin);
	ss = any;
	((struct sockaddr_in *)&ss)->sin_port = htons(15020);
	if (ss.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(15020);
	d->metrics = start_httpd(d, "metrics", &ss, handle_metrics);
	((struct sockaddr_in *)&ss)->sin_port = htons(15021);
	if (ss.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(15021);
	d->ready = start_httpd(d, "readiness", &ss, handle_ready);
	if (!d->admin || !d->metrics || !d->ready) {
		rc = -EADDRINUSE;
		goto out;
	}
	{
		struct model *m = model_current();
		struct spiffe_id id;
		char ids[SPIFFE_ID_STR_MAX], a[ADDR_STR_LEN];
		if (waypoint_self(d->wp, m, NULL, &id) == 0)
			pr_info("%s %s: waypoint %s/%s as %s, listening on %s", PROG, AMBIT_VERSION,
				d->cfg.waypoint_namespace, d->cfg.waypoint_name,
				spiffe_id_str(&id, ids), sockaddr_str(&wo.hbone_addr, a, sizeof(a)));
		else
			pr_warn("%s %s: waypoint %s/%s: its own workload is not in the model yet "
				"(not ready until it is)", PROG, AMBIT_VERSION,
				d->cfg.waypoint_namespace, d->cfg.waypoint_name);
		model_unref(m);
	}
	rc = loop_run(d->loop);
	pr_info("stopped");
out:
	runtime_discovery_stop(&d->discovery);
	httpd_free(d->admin);
	httpd_free(d->metrics);
	httpd_free(d->ready);
	runtime_drain_stop(&d->drain, d->loop);
	if (d->loop) {
		loop_stop(d->loop);
		d->id.on_certs = NULL;
		d->id.on_roots = NULL;
		waypoint_free(d->wp);
	}
	telemetry_fini(otlp_tracer_flush_budget_ms(d->tracer));
	otlp_tracer_free(d->tracer);
	runtime_identity_stop(&d->id);
	runtime_signals_stop(d->loop, &d->signal_io);
	loop_free(d->loop);
	metrics_reset();
	return rc;
}

int main(int argc, char **argv)
{
	const char *pod_ip;
	struct cli_opts o;
	char err[768];
	int rc;

	log_set_component(PROG);
	if ((rc = cli_parse(argc, argv, PROG, usage_text, 0, &o)) >= 0)
		return rc;
	if (config_init(&wpd.cfg, CONFIG_ROLE_WAYPOINT)) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	if (config_load(&wpd.cfg, CONFIG_ROLE_WAYPOINT, o.config_path, err, sizeof(err)) ||
	    config_validate(&wpd.cfg, CONFIG_ROLE_WAYPOINT, err, sizeof(err))) {
		fprintf(stderr, PROG ": %s\n", err);
		config_fini(&wpd.cfg);
		return CLI_EXIT_USAGE;
	}
	/* The pod IP names the waypoint's own workload: POD_IP (downward API), else node_ip. */
	pod_ip = getenv("POD_IP");
	if (pod_ip && *pod_ip && ip_parse(pod_ip, &wpd.pod_ip)) {
		fprintf(stderr, PROG ": POD_IP: '%s' is not an IP address\n", pod_ip);
		config_fini(&wpd.cfg);
		return CLI_EXIT_USAGE;
	}
	if (!wpd.pod_ip.ss_family && wpd.cfg.node_ip)
		ip_parse(wpd.cfg.node_ip, &wpd.pod_ip);	/* validated by config_validate */
	if ((rc = cli_log_level(PROG, o.log_level, &wpd.cfg.log_level))) {
		config_fini(&wpd.cfg);
		return rc;
	}
	log_set_level(wpd.cfg.log_level);
	log_set_format(wpd.cfg.log_format);
	if (o.check) {
		printf("%s: valid\n", o.config_path);
		config_fini(&wpd.cfg);
		return 0;
	}
	if (httpc_global_init()) {
		pr_err("cannot initialise the HTTP client library");
		config_fini(&wpd.cfg);
		return 1;
	}
	if (tls_global_init()) {
		pr_err("cannot initialise the TLS library");
		config_fini(&wpd.cfg);
		return 1;
	}
	rc = run(&wpd);
	httpc_global_fini();
	config_fini(&wpd.cfg);
	return rc == -EINVAL ? CLI_EXIT_USAGE : rc ? 1 : 0;
}
