// SPDX-License-Identifier: Apache-2.0
/* ambit-ca: the mesh CA for clusters without istiod. Serves Istio's certificate API
 * (IstioCertificateService/CreateCertificate) over gRPC/TLS on `listen` with a serving
 * certificate for `server_names` from its own CA, authenticates callers by TokenReview or
 * tokens.issuer_keys, signs only identities of workloads on the caller's node (its own view
 * of pods: discovery file or Kubernetes watch), and serves metrics, readiness and a config
 * dump on admin_address. Replicas share nothing but the CA key. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "agent/httpd.h"
#include "agent/kube.h"
#include "agent/loop.h"
#include "agent/runtime.h"
#include "agent/workloads.h"
#include "ca/auth.h"
#include "ca/config.h"
#include "ca/reload.h"
#include "ca/rootcm.h"
#include "ca/service.h"
#include "common/cli.h"
#include "common/httpc.h"
#include "common/log.h"
#include "common/util.h"
#include "grpc/server.h"
#include "tls/ca.h"
#include "tls/ctx.h"
#include "tls/jwt.h"

#define PROG "ambit-ca"
#define SERVING_RETRY_MS 30000	/* a failed serving renewal is tried again after this */
#define SERVING_MAX_WAIT_MS 3600000	/* the renewal time is checked at least hourly (the
					 * loop's timers are monotonic; certificates are not) */

static const char usage_text[] =
	"Usage: " PROG " --config FILE [--check]\n"
	"\n"
	"The ambit mesh CA: Istio's certificate API (istio.v1.auth.IstioCertificateService/\n"
	"CreateCertificate) over gRPC/TLS for clusters without istiod. Node agents ask it for their\n"
	"workloads' certificates with their service account token; it signs only SPIFFE IDs of its\n"
	"trust domain whose workloads run on the caller's node.\n"
	"\n"
	"Options:\n"
	"  -c, --config FILE   JSON configuration (see docs/ca.md): listen, trust_domain, ca,\n"
	"                      server_names, discovery, tokens, log, admin_address, ...\n"
	"      --check         validate the configuration and the CA files, then exit\n"
	"  -l, --log-level LVL override log.level (error, warn, info, debug, trace)\n"
	"  -h, --help          this text\n"
	"  -V, --version       print the version\n"
	"\n"
	"Ports: listen (default 0.0.0.0:15012) gRPC/TLS; admin_address (default 0.0.0.0:15014)\n"
	"/metrics, /stats/prometheus, /healthz/ready, /config_dump.\n"
	"Exit status: 0 success, 1 runtime failure, 2 bad usage or configuration.\n";

struct cad {
	struct ca_config cfg;
	struct loop *loop;
	struct tls_ca *ca;		/* the current signing CA (a reference) */
	struct ca_reload reload;	/* ca.cert/ca.key watched for a new pair */
	struct loop_timer reload_timer;
	struct loop_timer serving_timer;	/* the serving certificate's renewal */
	uint64_t serving_renewals, serving_errors;
	struct tls_jwt_keys *keys;
	struct ca_tokenreview tr;
	char *api_url;
	struct tls_ctx *tls;
	struct ca_service *svc;
	struct grpc_server *grpc;
	struct runtime_discovery discovery;
	struct ca_rootcm *rootcm;
	struct httpd *admin;
	struct loop_io signal_io;
};

static struct cad cad;

static void on_signal(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct signalfd_siginfo si;

	while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		pr_info("signal %u: stopping", si.ssi_signo);
		loop_stop(l);
	}
}

static int64_t serving_not_after(struct cad *d)
{
	int64_t issued_at = 0, not_after = 0;

	tls_ctx_https_server_validity(d->tls, &issued_at, &not_after);
	return not_after;
}

/* Arms the serving certificate's renewal: at serving.renew_fraction of its lifetime. */
static void serving_arm(struct cad *d)
{
	int64_t issued_at = 0, not_after = 0, due, now = (int64_t)time(NULL);
	uint64_t ms;

	tls_ctx_https_server_validity(d->tls, &issued_at, &not_after);
	due = ca_reload_serving_due(issued_at, not_after, d->cfg.serving_renew_fraction);
	ms = due > now ? (uint64_t)(due - now) * 1000 : 1000;
	loop_timer_arm(d->loop, &d->serving_timer, MIN(ms, (uint64_t)SERVING_MAX_WAIT_MS));
}

/* Issues the serving certificate again from the current signing key, for new handshakes.
 * 0 or -errno (logged, counted; the current certificate stays). */
static int serving_renew(struct cad *d, const char *why)
{
	char err[256], until[32];
	int rc = tls_ctx_https_server_renew(d->tls, d->ca, d->cfg.serving_lifetime_s, err,
					    sizeof(err));

	fmt_utc(serving_not_after(d), until, sizeof(until));
	if (rc) {
		d->serving_errors++;
		pr_err("serving certificate: cannot renew it (%s); the current one, valid until "
		       "%s, stays: %s", why, until, err);
		return rc;
	}
	d->serving_renewals++;
	pr_info("serving certificate renewed (%s) for new connections, valid until %s", why,
		until);
	return 0;
}

static void on_serving(struct loop *l, struct loop_timer *t)
{
	struct cad *d = t->arg;
	int64_t issued_at = 0, not_after = 0, now = (int64_t)time(NULL);

	tls_ctx_https_server_validity(d->tls, &issued_at, &not_after);
	if (now < ca_reload_serving_due(issued_at, not_after, d->cfg.serving_renew_fraction)) {
		serving_arm(d);
		return;
	}
	if (serving_renew(d, "due"))
		loop_timer_arm(l, t, SERVING_RETRY_MS);
	else
		serving_arm(d);
}

/* Every CA_RELOAD_CHECK_MS: a changed ca.cert/ca.key pair that passes the checks signs the
 * next calls (those under way finish with the old one), makes a new serving certificate and
 * becomes the root ConfigMap; a pair that does not stays unused, the current one signs on. */
static void on_reload(struct loop *l, struct loop_timer *t)
{
	struct cad *d = t->arg;
	struct tls_ca *ca;
	char err[512], until[32];
	int rc;

	loop_timer_arm(l, t, CA_RELOAD_CHECK_MS);
	rc = ca_reload_poll(&d->reload, (int64_t)time(NULL), &ca, err, sizeof(err));
	if (rc < 0) {
		fmt_utc(tls_ca_not_after(d->ca), until, sizeof(until));
		pr_err("ca: the changed ca.cert %s / ca.key %s are refused, the current pair "
		       "(valid until %s) signs on: %s", d->cfg.ca_cert, d->cfg.ca_key, until, err);
		return;
	}
	if (rc == 0)
		return;
	ca_service_set_ca(d->svc, ca);
	tls_ca_free(d->ca);
	d->ca = ca;
	if (ca_rootcm_set_ca(d->rootcm, ca))
		pr_warn("root ConfigMap %s: out of memory, it keeps the old roots until the next "
			"change", d->cfg.root_configmap);
	fmt_utc(tls_ca_not_after(ca), until, sizeof(until));
	pr_info("ca: %s and %s reloaded without a restart: new calls are signed with them "
		"(valid until %s)", d->cfg.ca_cert, d->cfg.ca_key, until);
	if (serving_renew(d, "new signing key"))
		loop_timer_arm(l, &d->serving_timer, SERVING_RETRY_MS);
	else
		serving_arm(d);
}

static void reply_json(struct httpd_response *resp, int status, json_t *j)
{
	httpd_reply_json(resp, status, j, JSON_INDENT(2));
}

static void handle_admin(void *arg, const struct httpd_request *req, struct httpd_response *resp)
{
	struct cad *d = arg;

	if (strcmp(req->path, "/metrics") == 0 || strcmp(req->path, "/stats/prometheus") == 0) {
		size_t len = 0;
		char *m = ca_service_metrics(d->svc, &len), *all = NULL;
		struct model *mod = model_current();
		if (m && asprintf(&all, "%s"
				  "# HELP ambit_ca_server_connections Open gRPC connections.\n"
				  "# TYPE ambit_ca_server_connections gauge\n"
				  "ambit_ca_server_connections %u\n"
				  "# HELP ambit_ca_server_workloads Workloads in the CA's view of pods.\n"
				  "# TYPE ambit_ca_server_workloads gauge\n"
				  "ambit_ca_server_workloads %d\n"
				  "# HELP ambit_ca_server_root_configmap_writes_total Root ConfigMap "
				  "creates and updates.\n"
				  "# TYPE ambit_ca_server_root_configmap_writes_total counter\n"
				  "ambit_ca_server_root_configmap_writes_total %llu\n"
				  "# HELP ambit_ca_server_root_configmap_errors_total Failed root "
				  "ConfigMap syncs.\n"
				  "# TYPE ambit_ca_server_root_configmap_errors_total counter\n"
				  "ambit_ca_server_root_configmap_errors_total %llu\n"
				  "# HELP ambit_ca_server_ca_reloads_total New ca.cert/ca.key pairs "
				  "taken without a restart.\n"
				  "# TYPE ambit_ca_server_ca_reloads_total counter\n"
				  "ambit_ca_server_ca_reloads_total %llu\n"
				  "# HELP ambit_ca_server_ca_reload_errors_total Changed ca.cert/ca.key "
				  "pairs refused (the current pair stays).\n"
				  "# TYPE ambit_ca_server_ca_reload_errors_total counter\n"
				  "ambit_ca_server_ca_reload_errors_total %llu\n"
				  "# HELP ambit_ca_server_ca_cert_expiry_timestamp_seconds When the "
				  "signing certificate expires.\n"
				  "# TYPE ambit_ca_server_ca_cert_expiry_timestamp_seconds gauge\n"
				  "ambit_ca_server_ca_cert_expiry_timestamp_seconds %lld\n"
				  "# HELP ambit_ca_server_serving_cert_renewals_total Serving "
				  "certificates issued after the first.\n"
				  "# TYPE ambit_ca_server_serving_cert_renewals_total counter\n"
				  "ambit_ca_server_serving_cert_renewals_total %llu\n"
				  "# HELP ambit_ca_server_serving_cert_renewal_errors_total Failed "
				  "serving certificate renewals.\n"
				  "# TYPE ambit_ca_server_serving_cert_renewal_errors_total counter\n"
				  "ambit_ca_server_serving_cert_renewal_errors_total %llu\n"
				  "# HELP ambit_ca_server_serving_cert_expiry_timestamp_seconds When "
				  "the serving certificate expires.\n"
				  "# TYPE ambit_ca_server_serving_cert_expiry_timestamp_seconds gauge\n"
				  "ambit_ca_server_serving_cert_expiry_timestamp_seconds %lld\n",
				  m, grpc_server_conns(d->grpc), mod->nworkloads,
				  (unsigned long long)ca_rootcm_writes(d->rootcm),
				  (unsigned long long)ca_rootcm_errors(d->rootcm),
				  (unsigned long long)d->reload.reloads,
				  (unsigned long long)d->reload.errors,
				  (long long)tls_ca_not_after(d->ca),
				  (unsigned long long)d->serving_renewals,
				  (unsigned long long)d->serving_errors, (long long)serving_not_after(d))
		    >= 0) {
			resp->status = 200;
			resp->content_type = "text/plain; version=0.0.4";
			resp->body = all;
			resp->body_len = strlen(all);
		} else {
			httpd_reply(resp, 500, "text/plain", "out of memory\n", 14);
		}
		model_unref(mod);
		free(m);
	} else if (strcmp(req->path, "/healthz/ready") == 0) {
		struct model *m = model_current();
		if (m->generation == 0)
			httpd_replyf(resp, 503, "text/plain", "no view of the cluster's pods yet\n");
		else
			httpd_replyf(resp, 200, "text/plain", "ready\n");
		model_unref(m);
	} else if (strcmp(req->path, "/config_dump") == 0) {
		reply_json(resp, 200, runtime_config_dump(ca_config_to_json(&d->cfg), &d->discovery));
	} else if (strcmp(req->path, "/") == 0) {
		httpd_replyf(resp, 200, "text/plain", "%s %s\n/metrics /stats/prometheus "
			     "/healthz/ready /config_dump\n", PROG, AMBIT_VERSION);
	} else {
		httpd_replyf(resp, 404, "text/plain", "no such path: %s\n", req->path);
	}
}

/* The CA, the token checker and the serving context: all from files, so a problem here is
 * a configuration error (exit 2). */
static int load_credentials(struct cad *d)
{
	char err[512];
	const struct config *a = &d->cfg.agent;
	int rc;

	if (!(d->ca = tls_ca_load(d->cfg.ca_cert, d->cfg.ca_key, err, sizeof(err)))) {
		pr_err("%s: ca: %s", d->cfg.path, err);
		return -EINVAL;
	}
	if (d->cfg.nissuer_keys) {
		if (!(d->keys = tls_jwt_keys_load((const char *const *)d->cfg.issuer_keys,
						  d->cfg.nissuer_keys, err, sizeof(err)))) {
			pr_err("%s: tokens.issuer_keys: %s", d->cfg.path, err);
			return -EINVAL;
		}
	} else {
		d->api_url = a->kube_api_server ? strdup(a->kube_api_server) : kube_default_api_url();
		if (!d->api_url) {
			pr_err("%s: tokens: no issuer_keys, and no API server for TokenReview "
			       "(discovery.kubernetes.api_server or KUBERNETES_SERVICE_HOST)",
			       d->cfg.path);
			return -EINVAL;
		}
		d->tr.api_url = d->api_url;
		d->tr.ca_file = a->kube_ca_file;
		d->tr.token_file = a->kube_token_file;
		d->tr.timeout_ms = 5000;
	}
	if ((rc = ca_reload_validate(d->ca, (int64_t)time(NULL), err, sizeof(err)))) {
		pr_err("%s: ca: %s: %s", d->cfg.path, d->cfg.ca_cert, err);
		return -EINVAL;
	}
	if (!(d->tls = tls_ctx_new_https_server(d->ca, (const char *const *)d->cfg.server_names,
						d->cfg.nserver_names, d->cfg.serving_lifetime_s, err,
						sizeof(err)))) {
		pr_err("%s: server_names: %s", d->cfg.path, err);
		return -EINVAL;
	}
	return 0;
}

static int run(struct cad *d)
{
	const struct config *a = &d->cfg.agent;
	struct sockaddr_storage ss;
	char err[256];
	int rc;

	loop_timer_init(&d->reload_timer, on_reload, d);
	loop_timer_init(&d->serving_timer, on_serving, d);
	/* stamped before the load: a change in between is seen by the first poll, and files
	 * that cannot be stat'ed fail the load with their reason */
	(void)ca_reload_init(&d->reload, d->cfg.ca_cert, d->cfg.ca_key);
	if ((rc = load_credentials(d)))
		goto out;
	rc = -EIO;
	if (!(d->loop = loop_new())) {
		pr_err("cannot create the event loop: %s", strerror(errno));
		goto out;
	}
	if ((rc = runtime_signals_start(d->loop, &d->signal_io, on_signal, d)))
		goto out;
	if ((rc = runtime_discovery_start(&d->discovery, &d->cfg.agent, false, NULL, NULL)))
		goto out;
	if (!(d->svc = ca_service_new(&d->cfg, d->ca, d->keys, d->keys ? NULL : &d->tr))) {
		rc = -errno;
		goto out;
	}
	struct grpc_server_opts go = {
		.listen = d->cfg.listen, .tls = d->tls, .handler = ca_service_handle, .arg = d->svc,
	};
	if (!(d->grpc = grpc_server_start(&go, err, sizeof(err)))) {
		rc = -errno;
		pr_err("%s", err);
		goto out;
	}
	sockaddr_parse(d->cfg.admin_address, 15014, &ss);
	if (!(d->admin = httpd_new(d->loop, &ss, handle_admin, d))) {
		rc = -errno;
		pr_err("admin: cannot listen on %s: %s", d->cfg.admin_address, strerror(errno));
		goto out;
	}
	/* The root ConfigMap, as istiod keeps istio-ca-root-cert: wherever an API server is. */
	if (d->cfg.root_configmap[0]) {
		char *api = a->kube_api_server ? strdup(a->kube_api_server) : kube_default_api_url();
		struct ca_rootcm_opts ro = { .api_url = api, .ca_file = a->kube_ca_file,
					     .token_file = a->kube_token_file,
					     .name = d->cfg.root_configmap };
		if (!api)
			pr_info("no API server: root ConfigMap %s not kept", d->cfg.root_configmap);
		else if (!(d->rootcm = ca_rootcm_start(&ro, d->ca)))
			pr_warn("root ConfigMap %s: %s", d->cfg.root_configmap, strerror(errno));
		free(api);
	}
	if ((rc = loop_timer_arm(d->loop, &d->reload_timer, CA_RELOAD_CHECK_MS)))
		goto out;
	serving_arm(d);
	pr_info("%s %s: trust domain %s, gRPC/TLS on %s (port %u), callers by %s, admin on %s",
		PROG, AMBIT_VERSION, d->cfg.trust_domain, d->cfg.listen, grpc_server_port(d->grpc),
		d->keys ? "JWT (tokens.issuer_keys)" : "TokenReview", d->cfg.admin_address);
	rc = loop_run(d->loop);
	pr_info("stopped");
out:
	if (d->loop) {
		loop_timer_cancel(d->loop, &d->reload_timer);
		loop_timer_cancel(d->loop, &d->serving_timer);
	}
	ca_rootcm_stop(d->rootcm);
	grpc_server_stop(d->grpc);
	httpd_free(d->admin);
	runtime_discovery_stop(&d->discovery);
	ca_service_free(d->svc);
	runtime_signals_stop(d->loop, &d->signal_io);
	loop_free(d->loop);
	tls_ctx_free(d->tls);
	tls_jwt_keys_free(d->keys);
	tls_ca_free(d->ca);
	free(d->api_url);
	return rc;
}

int main(int argc, char **argv)
{
	struct cli_opts o;
	char err[768];
	int rc;

	log_set_component(PROG);
	if ((rc = cli_parse(argc, argv, PROG, usage_text, 0, &o)) >= 0)
		return rc;
	if (ca_config_init(&cad.cfg)) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	if (ca_config_load(&cad.cfg, o.config_path, err, sizeof(err))) {
		fprintf(stderr, PROG ": %s\n", err);
		ca_config_fini(&cad.cfg);
		return CLI_EXIT_USAGE;
	}
	if ((rc = cli_log_level(PROG, o.log_level, &cad.cfg.agent.log_level))) {
		ca_config_fini(&cad.cfg);
		return rc;
	}
	log_set_level(cad.cfg.agent.log_level);
	log_set_format(cad.cfg.agent.log_format);
	if (httpc_global_init() || tls_global_init()) {
		pr_err("cannot initialise the HTTP client or TLS library");
		ca_config_fini(&cad.cfg);
		return 1;
	}
	if (o.check) {
		rc = load_credentials(&cad);
		if (!rc)
			printf("%s: valid\n", o.config_path);
		tls_ctx_free(cad.tls);
		tls_jwt_keys_free(cad.keys);
		tls_ca_free(cad.ca);
		free(cad.api_url);
	} else {
		rc = run(&cad);
	}
	httpc_global_fini();
	ca_config_fini(&cad.cfg);
	return rc == -EINVAL ? CLI_EXIT_USAGE : rc ? 1 : 0;
}
