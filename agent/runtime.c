// SPDX-License-Identifier: Apache-2.0
/* Start-up shared by the node agent and the waypoint: tracer, identity, discovery. */
#include "agent/runtime.h"
#include "agent/discovery.h"
#include "agent/kube.h"
#include "common/log.h"
#include "otlp/config.h"
#include "otlp/tracer.h"
#include "tls/ca.h"
#include "tls/certstore.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

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

/* Every minute: re-issue the certificates past half-life, before their next use. */
static void on_renew(struct loop *l, struct loop_timer *t)
{
	struct runtime_identity *id = t->arg;
	int n = certstore_renew_due(id->certs);
	if (n > 0)
		pr_info("certificates: renewed %d at half-life", n);
	else if (n < 0)
		pr_warn("certificates: renewal failed: %s; retrying in a minute", strerror(-n));
	loop_timer_arm(l, t, 60000);
}

int runtime_identity_start(struct runtime_identity *id, struct loop *l, const struct config *c,
			   const char *prog)
{
	char err[512];
	struct certstore_opts co = { .lifetime_s = c->cert_lifetime_s };

	memset(id, 0, sizeof(*id));
	id->loop = l;
	loop_timer_init(&id->renew, on_renew, id);
	id->ca = tls_ca_load(c->ca_cert, c->ca_key, err, sizeof(err));
	if (!id->ca) {
		fprintf(stderr, "%s: %s: ca: %s\n", prog, c->path, err);
		return -EINVAL;
	}
	id->certs = certstore_new(id->ca, &co);
	if (!id->certs) {
		int e = errno;
		pr_err("certificates: %s", strerror(e));
		return -e;
	}
	return loop_timer_arm(l, &id->renew, 60000);
}

void runtime_identity_stop(struct runtime_identity *id)
{
	if (id->loop)
		loop_timer_cancel(id->loop, &id->renew);
	certstore_free(id->certs);
	tls_ca_free(id->ca);
	id->certs = NULL;
	id->ca = NULL;
}

int runtime_discovery_start(struct runtime_discovery *d, const struct config *c,
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
	};
	d->kube = kube_discovery_new(&ko);
	if (!d->kube) {
		int e = errno;
		pr_err("kubernetes discovery: %s", strerror(e));
		return -e;
	}
	return 0;
}

void runtime_discovery_stop(struct runtime_discovery *d)
{
	discovery_file_stop(d->file);
	kube_discovery_free(d->kube);
	d->file = NULL;
	d->kube = NULL;
}

json_t *runtime_discovery_status(struct runtime_discovery *d)
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
