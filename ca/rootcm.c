// SPDX-License-Identifier: Apache-2.0
/* The root ConfigMap keeper of ambit-ca: GET the ConfigMap, POST it when missing, PUT it
 * (with the resourceVersion read) when root-cert.pem differs; every interval, through
 * common/httpc on a thread of its own. */
#include "ca/rootcm.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/httpc.h"
#include "common/log.h"
#include "common/util.h"
#include "tls/ca.h"

#define SA_NAMESPACE "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

struct ca_rootcm {
	char *api, *ca_file, *token_file, *ns, *name;
	char *pem;		/* the roots to publish: under lock (ca_rootcm_set_ca) */
	uint32_t interval_ms;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	bool changed;		/* pem replaced: sync now rather than at the next interval */
	atomic_uint_fast64_t writes, errors;
};

static char *token(const struct ca_rootcm *r)
{
	size_t len = 0;
	char *t = r->token_file ? read_file_bounded(r->token_file, 16384, &len) : NULL;

	while (t && len && (t[len - 1] == '\n' || t[len - 1] == ' '))
		t[--len] = '\0';
	return t;
}

/* One request; 0 with resp filled (any status), or -errno logged. */
static int call(struct ca_rootcm *r, const char *method, const char *url, const char *body,
		struct httpc_response *resp)
{
	static const char *const hdrs[] = { "Content-Type: application/json",
					    "Accept: application/json", NULL };
	char *tok = token(r);
	struct httpc_request req = {
		.method = method, .url = url, .headers = hdrs, .body = body,
		.body_len = body ? strlen(body) : 0, .ca_file = r->ca_file, .bearer_token = tok,
		.timeout_ms = 10000, .max_response = 1 << 20,
	};
	int err = httpc_do(&req, resp);

	if (tok)
		explicit_bzero(tok, strlen(tok));
	free(tok);
	if (err)
		pr_warn("root ConfigMap %s/%s: %s %s: %s", r->ns, r->name, method, url, resp->err);
	return err;
}

static char *cm_body(struct ca_rootcm *r, const char *pem, const char *rv)
{
	json_t *o = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}}, s:{s:s}}", "apiVersion", "v1",
			      "kind", "ConfigMap", "metadata", "name", r->name, "namespace", r->ns,
			      "labels", "app.kubernetes.io/managed-by", "ambit-ca",
			      "data", CA_ROOTCM_KEY, pem);
	char *s = NULL;

	if (o && rv)
		json_object_set_new(json_object_get(o, "metadata"), "resourceVersion", json_string(rv));
	if (o)
		s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

/* Makes the ConfigMap hold our roots. 0 or -errno. */
static int sync_once(struct ca_rootcm *r)
{
	char url[1024];
	struct httpc_response resp = { 0 };
	json_t *cm = NULL;
	char *body = NULL;
	const char *rv = NULL;
	char *pem;
	int err;

	pthread_mutex_lock(&r->lock);
	pem = strdup(r->pem);
	pthread_mutex_unlock(&r->lock);
	if (!pem) {
		err = -ENOMEM;
		goto out;
	}
	snprintf(url, sizeof(url), "%s/api/v1/namespaces/%s/configmaps/%s", r->api, r->ns, r->name);
	if ((err = call(r, "GET", url, NULL, &resp)))
		goto out;
	if (resp.status == 200) {
		cm = json_loadb(resp.body, resp.body_len, 0, NULL);
		const char *have = json_string_value(json_object_get(json_object_get(cm, "data"),
								     CA_ROOTCM_KEY));
		if (have && strcmp(have, pem) == 0)
			goto out;	/* current */
		rv = json_string_value(json_object_get(json_object_get(cm, "metadata"),
						       "resourceVersion"));
	} else if (resp.status != 404) {
		pr_warn("root ConfigMap %s/%s: GET answered %ld", r->ns, r->name, resp.status);
		err = -EIO;
		goto out;
	}
	if (!(body = cm_body(r, pem, rv))) {
		err = -ENOMEM;
		goto out;
	}
	long got = resp.status;
	httpc_response_fini(&resp);
	if (got == 404)
		snprintf(url, sizeof(url), "%s/api/v1/namespaces/%s/configmaps", r->api, r->ns);
	if ((err = call(r, got == 404 ? "POST" : "PUT", url, body, &resp)))
		goto out;
	if (resp.status != 200 && resp.status != 201) {
		/* 409: another replica wrote first; the next round reads it */
		pr_warn("root ConfigMap %s/%s: %s answered %ld", r->ns, r->name,
			got == 404 ? "create" : "update", resp.status);
		err = -EIO;
		goto out;
	}
	atomic_fetch_add(&r->writes, 1);
	pr_info("root ConfigMap %s/%s %s", r->ns, r->name, got == 404 ? "created" : "updated");
out:
	if (err)
		atomic_fetch_add(&r->errors, 1);
	json_decref(cm);
	free(body);
	free(pem);
	httpc_response_fini(&resp);
	return err;
}

static void *rootcm_main(void *arg)
{
	struct ca_rootcm *r = arg;
	struct timespec ts;

	pthread_mutex_lock(&r->lock);
	while (!r->stop) {
		r->changed = false;
		pthread_mutex_unlock(&r->lock);
		sync_once(r);
		pthread_mutex_lock(&r->lock);
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += r->interval_ms / 1000;
		ts.tv_nsec += (long)(r->interval_ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		while (!r->stop && !r->changed &&
		       pthread_cond_timedwait(&r->cond, &r->lock, &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

static char *own_namespace(const char *given)
{
	const char *env = getenv("POD_NAMESPACE");
	size_t len;
	char *ns;

	if (given)
		return strdup(given);
	if (env && *env)
		return strdup(env);
	if ((ns = read_file_bounded(SA_NAMESPACE, 253, &len))) {
		while (len && (ns[len - 1] == '\n' || ns[len - 1] == ' '))
			ns[--len] = '\0';
		if (len)
			return ns;
		free(ns);
	}
	return strdup("ambit-system");
}

static void rootcm_free(struct ca_rootcm *r)
{
	free(r->api);
	free(r->ca_file);
	free(r->token_file);
	free(r->ns);
	free(r->name);
	free(r->pem);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	free(r);
}

struct ca_rootcm *ca_rootcm_start(const struct ca_rootcm_opts *o, const struct tls_ca *ca)
{
	struct ca_rootcm *r = calloc(1, sizeof(*r));
	pthread_condattr_t ca_attr;
	int e = ENOMEM;

	if (!r)
		return NULL;
	pthread_mutex_init(&r->lock, NULL);
	pthread_condattr_init(&ca_attr);
	pthread_condattr_setclock(&ca_attr, CLOCK_MONOTONIC);
	pthread_cond_init(&r->cond, &ca_attr);
	pthread_condattr_destroy(&ca_attr);
	r->interval_ms = o->interval_ms ? o->interval_ms : 60000;
	if (!(r->api = strdup(o->api_url)) || (o->ca_file && !(r->ca_file = strdup(o->ca_file))) ||
	    (o->token_file && !(r->token_file = strdup(o->token_file))) ||
	    !(r->ns = own_namespace(o->namespace)) || !(r->name = strdup(o->name)) ||
	    !(r->pem = tls_ca_roots_pem(ca)))
		goto fail;
	if ((e = pthread_create(&r->thread, NULL, rootcm_main, r)))
		goto fail;
	return r;
fail:
	rootcm_free(r);
	errno = e;
	return NULL;
}

void ca_rootcm_stop(struct ca_rootcm *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->stop = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	pthread_join(r->thread, NULL);
	rootcm_free(r);
}

int ca_rootcm_set_ca(struct ca_rootcm *r, const struct tls_ca *ca)
{
	char *pem, *old;

	if (!r)
		return 0;
	if (!(pem = tls_ca_roots_pem(ca)))
		return -ENOMEM;
	pthread_mutex_lock(&r->lock);
	old = r->pem;
	r->pem = pem;
	r->changed = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	free(old);
	return 0;
}

uint64_t ca_rootcm_writes(const struct ca_rootcm *r)
{
	return r ? atomic_load(&((struct ca_rootcm *)r)->writes) : 0;
}

uint64_t ca_rootcm_errors(const struct ca_rootcm *r)
{
	return r ? atomic_load(&((struct ca_rootcm *)r)->errors) : 0;
}
