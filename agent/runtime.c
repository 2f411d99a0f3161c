// SPDX-License-Identifier: Apache-2.0
/* Start-up shared by the node agent and the waypoint: tracer, identity, discovery. */
#include "agent/runtime.h"
#include "agent/conn.h"
#include "agent/discovery.h"
#include "agent/httpd.h"
#include "agent/kube.h"
#include "agent/metrics.h"
#include "ca/client.h"
#include "common/log.h"
#include "common/util.h"
#include "otlp/config.h"
#include "otlp/tracer.h"
#include "tls/ca.h"
#include "tls/certstore.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

int runtime_tracer_new(const struct config *c, const char *prog, struct otlp_tracer **out)
{
	struct otlp_config oc;
	char err[512];
	int rc = 0;

	*out = NULL;
	otlp_config_init(&oc);
	oc.enabled = c->tracing_enabled;
	oc.batch.max_queue = c->max_queue_size;
	oc.batch.max_batch = c->max_export_batch_size;
	oc.batch.schedule_delay_ms = c->schedule_delay_ms;
	oc.batch.export_timeout_ms = c->otlp_timeout_ms;
	if ((rc = otlp_config_set_protocol(&oc, c->otlp_protocol, err, sizeof(err))) ||
	    (c->otlp_endpoint && (rc = otlp_config_set_endpoint(&oc, c->otlp_endpoint, err, sizeof(err)))) ||
	    (rc = otlp_config_set_sampling(&oc, c->sampling, err, sizeof(err))))
		goto bad;
	for (int i = 0; i < c->ncustom_tags; i++)
		if ((rc = otlp_config_add_tag(&oc, c->custom_tags[i].key, c->custom_tags[i].value, err,
					      sizeof(err))))
			goto bad;
	for (int i = 0; i < c->notlp_headers; i++)
		if ((rc = otlp_config_add_header(&oc, c->otlp_headers[i].key, c->otlp_headers[i].value,
						 err, sizeof(err))))
			goto bad;
	/* The OTel environment variables win over the file, as the specification defines. */
	if ((rc = otlp_config_apply_env(&oc, err, sizeof(err))) ||
	    (rc = otlp_config_validate(&oc, err, sizeof(err))))
		goto bad;
	*out = otlp_tracer_new(&oc, err, sizeof(err));
	if (!*out) {
		rc = -errno;
		goto bad;
	}
	otlp_config_fini(&oc);
	return 0;
bad:
	fprintf(stderr, "%s: %s: tracing: %s\n", prog, c->path, err);
	otlp_config_fini(&oc);
	return rc == -ENOMEM ? rc : -EINVAL;
}

/* Every minute: wake the certstore's workers (renewal at half-life is theirs; this catches a
 * wall-clock jump). */
static void on_renew(struct loop *l, struct loop_timer *t)
{
	struct runtime_identity *id = t->arg;
	certstore_renew_due(id->certs);
	loop_timer_arm(l, t, 60000);
}

static bool chains_to_first(void *arg, const struct tls_cert *c)
{
	return tls_ca_issued_by_first(arg, c);
}

/* Every RUNTIME_BUNDLE_CHECK_MS: a changed ca.cert is loaded and handed to the TLS contexts
 * for new handshakes (open connections stay), and leaves from a root that is no longer the
 * bundle's first are renewed now. */
static void on_bundle(struct loop *l, struct loop_timer *t)
{
	struct runtime_identity *id = t->arg;
	struct tls_ca *roots;
	struct stat st;
	char err[512];

	loop_timer_arm(l, t, RUNTIME_BUNDLE_CHECK_MS);
	if (stat(id->bundle_path, &st) == -1 || stat_same_file(&st, &id->bundle_st))
		return;
	id->bundle_st = st;
	if (!(roots = tls_ca_load(id->bundle_path, NULL, err, sizeof(err)))) {
		pr_warn("certificates: the trust bundle changed but does not load, the old one "
			"stays: %s", err);
		return;
	}
	if (id->on_roots)
		id->on_roots(id->on_roots_arg, roots);
	tls_ca_free(id->ca);
	id->ca = roots;
	size_t n = certstore_renew_unless(id->certs, chains_to_first, roots);
	pr_info("certificates: trust bundle %s reloaded for new connections; %zu certificate(s) "
		"from another root renewed now", id->bundle_path, n);
}

static void certs_task(struct loop *l, void *arg)
{
	struct runtime_identity *id = arg;
	(void)l;
	atomic_store(&id->posted, false);
	if (id->on_certs)
		id->on_certs(id->on_certs_arg);
}

/* A certstore worker has news: hand it to the loop, once however many come meanwhile. */
static void on_update(void *arg)
{
	struct runtime_identity *id = arg;
	if (!atomic_exchange(&id->posted, true) && loop_post(id->loop, certs_task, id)) {
		atomic_store(&id->posted, false);
		pr_warn_rl("certificates: cannot queue news for the loop (out of memory); waiting "
			   "connections resume with the next");
	}
}

int runtime_identity_start(struct runtime_identity *id, struct loop *l, const struct config *c,
			   enum config_role role, const char *prog)
{
	char err[512];
	struct certstore_opts co = { .lifetime_s = c->cert_lifetime_s, .async = true,
				     .on_update = on_update, .update_arg = id };

	memset(id, 0, sizeof(*id));
	id->loop = l;
	loop_timer_init(&id->renew, on_renew, id);
	loop_timer_init(&id->bundle, on_bundle, id);
	/* With a CA address, ca.cert is only a trust bundle: no key is loaded, whatever sits
	 * next to it. */
	id->ca = tls_ca_load(c->ca_cert, c->ca_address ? NULL : c->ca_key, err, sizeof(err));
	if (!id->ca) {
		fprintf(stderr, "%s: %s: ca: %s\n", prog, c->path, err);
		return -EINVAL;
	}
	if (c->ca_address) {
		struct ca_client_opts o = { .address = c->ca_address, .bundle = c->ca_cert,
					    .token_file = c->ca_token_file,
					    .impersonate = role == CONFIG_ROLE_AGENT };
		if (!(id->client = ca_client_new(&o, err, sizeof(err)))) {
			fprintf(stderr, "%s: %s: ca: %s\n", prog, c->path, err);
			return errno == ENOMEM ? -ENOMEM : -EINVAL;
		}
		co.backend = ca_client_backend(id->client);
		if (!(id->bundle_path = strdup(c->ca_cert)) || stat(c->ca_cert, &id->bundle_st) == -1)
			return -errno;
		pr_info("certificates: from the CA at %s (trust bundle %s, token %s)", c->ca_address,
			c->ca_cert, c->ca_token_file);
	} else {
		pr_warn("certificates: signed inside this process with ca.key %s: development "
			"mode only (a node holding the mesh CA key can mint any identity); set "
			"ca.address to use istiod or ambit-ca", c->ca_key);
	}
	id->certs = certstore_new(id->ca, &co);
	if (!id->certs) {
		int e = errno;
		pr_err("certificates: %s", strerror(e));
		return -e;
	}
	if (id->bundle_path) {
		int err = loop_timer_arm(l, &id->bundle, RUNTIME_BUNDLE_CHECK_MS);
		if (err)
			return err;
	}
	return loop_timer_arm(l, &id->renew, 60000);
}

void runtime_identity_stop(struct runtime_identity *id)
{
	if (id->loop)
		loop_timer_cancel(id->loop, &id->renew);
	if (id->loop && id->bundle_path)
		loop_timer_cancel(id->loop, &id->bundle);
	free(id->bundle_path);
	id->bundle_path = NULL;
	id->on_roots = NULL;
	id->on_certs = NULL;
	certstore_free(id->certs);	/* joins the workers: nothing calls the client after */
	ca_client_free(id->client);
	tls_ca_free(id->ca);
	id->certs = NULL;
	id->client = NULL;
	id->ca = NULL;
}

int runtime_identity_want(struct runtime_identity *id, const struct spiffe_id *ids, size_t n)
{
	int err = certstore_set_wanted(id->certs, ids, n);
	if (err)
		pr_warn("certificates: cannot track %zu identities: %s", n, strerror(-err));
	return err;
}

struct first_missing {
	char id[SPIFFE_ID_STR_MAX];
	int64_t now;
};

static int find_missing(const struct certstore_info *info, void *arg)
{
	struct first_missing *f = arg;
	if (info->state != CERTSTORE_PENDING && info->state != CERTSTORE_EXPIRED)
		return 0;
	spiffe_id_str(info->id, f->id);
	return 1;
}

int runtime_identity_status(struct runtime_identity *id, char *why, size_t len)
{
	struct certstore_stats st;
	struct first_missing f = { .id = "" };
	char reason[512];
	struct spiffe_id sid;

	certstore_stats(id->certs, &st);
	if (st.without_cert) {
		certstore_foreach(id->certs, find_missing, &f);
		reason[0] = '\0';
		if (f.id[0] && spiffe_id_parse(f.id, &sid, NULL) == 0)
			certstore_reason(id->certs, &sid, reason, sizeof(reason));
		snprintf(why, len, "no certificate yet for %zu of %zu local identities; %s: %s",
			 st.without_cert, st.entries, f.id, reason);
		return -EAGAIN;
	}
	if (st.last_failure && st.last_failure >= st.last_success) {
		snprintf(why, len, "the CA (%s) is failing: %zu identities could not be renewed, "
			 "last error: %s; serving with the current certificates", st.backend,
			 st.failing, st.last_error);
		return 1;
	}
	why[0] = '\0';
	return 0;
}

json_t *runtime_identity_json(struct runtime_identity *id)
{
	struct certstore_stats st;
	certstore_stats(id->certs, &st);
	return json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:s}",
			 "mode", id->client ? "ca-client" : "development (ca.key)",
			 "backend", st.backend, "requests", (json_int_t)st.requests,
			 "failures", (json_int_t)st.failures,
			 "without_certificate", (json_int_t)st.without_cert,
			 "failing", (json_int_t)st.failing,
			 "last_success", (json_int_t)st.last_success,
			 "last_failure", (json_int_t)st.last_failure, "last_error", st.last_error);
}

static int cert_to_json(const struct certstore_info *info, void *arg)
{
	char id[SPIFFE_ID_STR_MAX];
	json_array_append_new(arg, json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:s,s:i,s:I,s:b,s:i,s:s,s:I}",
		"identity", spiffe_id_str(info->id, id), "serial", info->serial_hex,
		"not_before", (json_int_t)info->not_before, "not_after", (json_int_t)info->not_after,
		"issued_at", (json_int_t)info->issued_at, "renew_at", (json_int_t)info->renew_at, "state", certstore_state_str(info->state),
		"refs", (int)info->refs, "issued_total", (json_int_t)info->issued_total,
		"in_flight", info->in_flight, "failures", (int)info->failures,
		"last_error", info->last_error, "next_attempt_ms", (json_int_t)info->next_attempt_ms));
	return 0;
}

json_t *runtime_identity_certificates_json(struct runtime_identity *id)
{
	json_t *arr = json_array();
	if (id->certs)
		certstore_foreach(id->certs, cert_to_json, arr);
	return json_pack("{s:o,s:o?}", "certificates", arr, "ca",
			 id->certs ? runtime_identity_json(id) : NULL);
}

/* Readiness from the certificates: none yet for a local workload is 503 with the reason; a
 * failing CA with valid certificates is 200 with a warning line (the agent keeps serving). */
void runtime_identity_reply_ready(struct runtime_identity *id, struct httpd_response *resp)
{
	char why[1024];
	int st = runtime_identity_status(id, why, sizeof(why));

	if (st < 0)
		httpd_replyf(resp, 503, "text/plain", "not ready: %s\n", why);
	else if (st > 0)
		httpd_replyf(resp, 200, "text/plain", "ready\nwarning: %s\n", why);
	else
		httpd_reply(resp, 200, "text/plain", "ready\n", 6);
}

enum id_metric { M_REQUESTS, M_FAILURES, M_CERTS, M_MISSING, M_FAILING, M_LAST_OK };

static struct runtime_identity *metrics_id;

static double id_metric(void *arg)
{
	struct certstore_stats st;
	certstore_stats(metrics_id->certs, &st);
	switch ((enum id_metric)(uintptr_t)arg) {
	case M_REQUESTS: return (double)st.requests;
	case M_FAILURES: return (double)st.failures;
	case M_CERTS: return (double)st.entries;
	case M_MISSING: return (double)st.without_cert;
	case M_FAILING: return (double)st.failing;
	case M_LAST_OK: return (double)st.last_success;
	}
	return 0;
}

int runtime_identity_metrics(struct runtime_identity *id)
{
	static const struct {
		const char *name, *help, *type;
	} m[] = {
		[M_REQUESTS] = { "ambit_ca_requests_total", "Certificate requests made to the CA "
				 "(or the development CA)", "counter" },
		[M_FAILURES] = { "ambit_ca_request_failures_total", "Certificate requests that "
				 "failed (unreachable, refused, bad answer)", "counter" },
		[M_CERTS] = { "ambit_certificates", "Workload identities the agent holds or "
			      "fetches certificates for", "gauge" },
		[M_MISSING] = { "ambit_certificates_missing", "Identities with no valid "
				"certificate (their connections wait)", "gauge" },
		[M_FAILING] = { "ambit_certificates_failing", "Identities whose last certificate "
				"request failed (served with the current certificate while valid)",
				"gauge" },
		[M_LAST_OK] = { "ambit_ca_last_success_timestamp_seconds", "When the CA last "
				"issued a certificate (Unix seconds; 0 = never)", "gauge" },
	};
	int err = 0;

	metrics_id = id;
	for (size_t i = 0; i < ARRAY_SIZE(m) && !err; i++)
		err = metrics_register(m[i].name, m[i].help, m[i].type, id_metric,
				       (void *)(uintptr_t)i);
	return err;
}

int runtime_signals_start(struct loop *l, struct loop_io *io, loop_io_fn fn, void *arg)
{
	sigset_t mask;
	int fd, err;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd == -1) {
		err = -errno;
		pr_err("signalfd: %s", strerror(errno));
		return err;
	}
	loop_io_init(io, fd, fn, arg);
	err = loop_io_set(l, io, EPOLLIN);
	if (err) {
		pr_err("signalfd: cannot watch it: %s", strerror(-err));
		close(fd);
		return err;
	}
	return 0;
}

void runtime_signals_stop(struct loop *l, struct loop_io *io)
{
	if (!io->registered)
		return;
	loop_io_del(l, io);
	close(io->fd);
}

static void drain_check(struct loop *l, struct loop_timer *t)
{
	struct runtime_drain *d = t->arg;

	if (d->idle(d->arg) || now_mono_ms() >= d->deadline_ms) {
		if (conn_count())
			pr_warn("drain deadline reached with %zu connections open; closing them",
				conn_count());
		loop_stop(l);
		return;
	}
	loop_timer_arm(l, t, 100);
}

void runtime_drain_init(struct runtime_drain *d, bool (*idle)(void *arg), void *arg)
{
	loop_timer_init(&d->timer, drain_check, d);
	d->deadline_ms = 0;
	d->idle = idle;
	d->arg = arg;
}

void runtime_drain_start(struct runtime_drain *d, struct loop *l, uint64_t deadline_ms)
{
	d->deadline_ms = deadline_ms;
	drain_check(l, &d->timer);
}

void runtime_drain_stop(struct runtime_drain *d, struct loop *l)
{
	loop_timer_cancel(l, &d->timer);
}

int runtime_discovery_start(struct runtime_discovery *d, const struct config *c, bool l7,
			    model_listener_fn fn, void *arg)
{
	char err[512];

	memset(d, 0, sizeof(*d));
	if (fn && model_subscribe(fn, arg))
		return -ENOSPC;
	if (c->discovery_source == DISCOVERY_FILE) {
		d->file = discovery_file_start(c->discovery_file, 1000, err, sizeof(err));
		if (!d->file) {
			int e = errno;
			pr_err("workloads: %s", err);
			return -e;
		}
		return 0;
	}
	struct kube_opts ko = {
		.api_url = c->kube_api_server,
		.token_file = c->kube_token_file,
		.ca_file = c->kube_ca_file,
		.root_ns = c->root_namespace,
		.skip = l7 ? 0 : 1u << KUBE_RES_HTTPROUTES,
	};
	d->kube = kube_discovery_new(&ko);
	if (!d->kube) {
		int e = errno;
		pr_err("kubernetes discovery: %s", strerror(e));
		return -e;
	}
	return 0;
}

void runtime_post_model(struct loop *l, loop_task_fn fn, void *arg)
{
	if (loop_post(l, fn, arg))
		pr_warn("cannot queue a model update (out of memory); it applies with the next one");
}

void runtime_discovery_stop(struct runtime_discovery *d)
{
	discovery_file_stop(d->file);
	kube_discovery_free(d->kube);
	d->file = NULL;
	d->kube = NULL;
}

/* Its status, or NULL (no source). New reference. */
static json_t *runtime_discovery_status(struct runtime_discovery *d)
{
	if (d->file)
		return discovery_file_status(d->file);
	if (d->kube) {
		struct kube_stats st;
		kube_discovery_stats(d->kube, &st);
		return kube_stats_to_json(&st);
	}
	return NULL;
}

json_t *runtime_config_dump(json_t *cfg, struct runtime_discovery *d)
{
	json_t *st = runtime_discovery_status(d);

	if (cfg && st)
		json_object_set_new(cfg, "discovery_status", st);
	else
		json_decref(st);
	return cfg;
}
