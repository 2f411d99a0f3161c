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
#include <unistd.h>

#include "agent/httpd.h"
#include "agent/kube.h"
#include "agent/loop.h"
#include "agent/runtime.h"
#include "agent/workloads.h"
#include "ca/auth.h"
#include "ca/config.h"
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
#define SERVING_LIFETIME_S (365u * 24 * 3600)	/* capped at the CA's own expiry */

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
	struct tls_ca *ca;
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
				  "ambit_ca_server_root_configmap_errors_total %llu\n",
				  m, grpc_server_conns(d->grpc), mod->nworkloads,
				  (unsigned long long)ca_rootcm_writes(d->rootcm),
				  (unsigned long long)ca_rootcm_errors(d->rootcm)) >= 0) {
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
	if (!(d->tls = tls_ctx_new_https_server(d->ca, (const char *const *)d->cfg.server_names,
						d->cfg.nserver_names, SERVING_LIFETIME_S, err,
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

	if ((rc = load_credentials(d)))
		goto out;
	rc = -EIO;
	if (!(d->loop = loop_new())) {
		pr_err("cannot create the event loop: %s", strerror(errno));
		goto out;
	}
	if ((rc = runtime_signals_start(d->loop, &d->signal_io, on_signal, d)))
		goto out;
	if ((rc = runtime_discovery_start(&d->discovery, &d->cfg.agent, NULL, NULL)))
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
	pr_info("%s %s: trust domain %s, gRPC/TLS on %s (port %u), callers by %s, admin on %s",
		PROG, AMBIT_VERSION, d->cfg.trust_domain, d->cfg.listen, grpc_server_port(d->grpc),
		d->keys ? "JWT (tokens.issuer_keys)" : "TokenReview", d->cfg.admin_address);
	rc = loop_run(d->loop);
	pr_info("stopped");
out:
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
