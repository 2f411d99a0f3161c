// SPDX-License-Identifier: Apache-2.0
/* Tracing settings per workload (agent/tracing.h): a refcounted state per version of the
 * Istio objects (the compiled telemetry set and one sink per provider in use), replaced on
 * the discovery thread when the model's mesh_config or resources change; the data path takes
 * a reference for the length of a span_start. */
#include "agent/tracing.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "agent/workloads.h"
#include "otlp/config.h"
#include "otlp/sink.h"

struct tracing_sink {
	const struct telemetry_provider *provider;	/* in st->set */
	char *url;			/* where it exports (the provider's endpoint, resolved) */
	char *key;			/* what the exporter depends on: reused when equal */
	struct otlp_sink *sink;		/* a reference; NULL: not exported (see the log) */
};

struct tracing_state {
	int refs;			/* atomic */
	struct telemetry_set *set;
	json_t *mesh_config, *resources;	/* references: what set was compiled from */
	char *resolved;			/* the providers' resolved URLs, to notice a change */
	struct tracing_sink *sinks;
	int nsinks;
};

static struct {
	pthread_mutex_t build_lock;	/* one rebuild at a time, and none during fini */
	pthread_mutex_t lock;
	bool active;
	struct otlp_tracer *tracer;
	char *root_ns;
	struct tracing_state *cur;	/* under lock */
	uint64_t gen;			/* atomic: tracing_generation() */
} T = { .build_lock = PTHREAD_MUTEX_INITIALIZER, .lock = PTHREAD_MUTEX_INITIALIZER };

static void state_unref(struct tracing_state *st)
{
	if (!st || __atomic_sub_fetch(&st->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (int i = 0; i < st->nsinks; i++) {
		otlp_sink_unref(st->sinks[i].sink);	/* unused now: it drains and closes */
		free(st->sinks[i].key);
		free(st->sinks[i].url);
	}
	free(st->resolved);
	free(st->sinks);
	telemetry_set_free(st->set);
	json_decref(st->mesh_config);
	json_decref(st->resources);
	free(st);
}

static struct tracing_state *state_get(void)
{
	struct tracing_state *st;
	pthread_mutex_lock(&T.lock);
	st = T.cur;
	if (st)
		__atomic_add_fetch(&st->refs, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&T.lock);
	return st;
}

/* ---------------------------------------------------- provider endpoints ---- */

/* The Service a provider's host names, as istiod finds it in its registry: "name.ns.svc[.
 * domain]", or a bare "name" with the "ns/" prefix. 0 with name/ns set, -ENOENT otherwise
 * (another host: left to DNS). */
static int service_of_host(const struct telemetry_provider *p, char *name, size_t nlen,
			   char *ns, size_t nslen)
{
	const char *h = p->host, *slash = strchr(p->service, '/');
	const char *d1 = strchr(h, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;

	if (d1 && d2 && strncmp(d2, ".svc", 4) == 0 && (d2[4] == '\0' || d2[4] == '.')) {
		snprintf(name, nlen, "%.*s", (int)(d1 - h), h);
		snprintf(ns, nslen, "%.*s", (int)(d2 - d1 - 1), d1 + 1);
		return 0;
	}
	if (slash && !d1) {
		snprintf(name, nlen, "%s", h);
		snprintf(ns, nslen, "%.*s", (int)(slash - p->service), p->service);
		return 0;
	}
	return -ENOENT;
}

/* Where p's spans go. A cluster Service is resolved in the model, as istiod does it, to one
 * of its endpoints (the pod IP and the target port of p's port): Envoy would load-balance
 * over them; the agent runs in the host network, which reaches pod IPs, and needs no cluster
 * DNS. Another host is left to DNS. NULL with why set when the Service is not in the model
 * or has no endpoint; the caller owns the result. */
static char *provider_url(const struct model *m, const struct telemetry_provider *p,
			  const char **why)
{
	char name[256], ns[256], ip[ADDR_STR_LEN], *url = NULL;
	const struct model_service *svc;
	const struct sockaddr_storage *a = NULL;

	if (service_of_host(p, name, sizeof(name), ns, sizeof(ns)))
		return strdup(p->endpoint);
	svc = model_service_by_name(m, ns, name);
	if (!svc) {
		*why = "names no Service the mesh knows";
		return NULL;
	}
	for (int i = 0; !a && i < svc->nendpoints; i++) {
		const struct model_workload *w = &m->workloads[svc->endpoints[i]];
		a = model_workload_addr(w, AF_INET);
		if (!a)
			a = model_workload_addr(w, AF_INET6);
	}
	if (!a) {
		*why = "is a Service without endpoints";
		return NULL;
	}
	uint16_t port = model_service_target_port(svc, p->port);
	sockaddr_ip_str(a, ip, sizeof(ip));
	if (asprintf(&url, "http://%s%s%s:%u%s", a->ss_family == AF_INET6 ? "[" : "", ip,
		     a->ss_family == AF_INET6 ? "]" : "", port ? port : p->port,
		     p->path ? p->path : "") < 0)
		url = NULL;
	return url;
}

/* The resolved URLs of s's providers in use, one line each, for change detection. */
static char *resolution_of(const struct model *m, const struct telemetry_set *set)
{
	char *out = strdup(""), *n;
	for (int i = 0; out && i < telemetry_set_nproviders(set); i++) {
		const struct telemetry_provider *p = telemetry_set_provider(set, i);
		const char *why = NULL;
		char *u;
		if (!p->in_use)
			continue;
		u = provider_url(m, p, &why);
		if (asprintf(&n, "%s%s=%s\n", out, p->name, u ? u : "-") < 0)
			n = NULL;
		free(u);
		free(out);
		out = n;
	}
	return out;
}

static char *sink_key(const struct telemetry_provider *p, const char *url)
{
	char *k = NULL, *n;
	if (asprintf(&k, "%s|%d|%u", url, p->http, p->timeout_ms) < 0)
		return NULL;
	for (int i = 0; i < p->nheaders; i++, k = n) {
		if (asprintf(&n, "%s|%s=%s", k, p->headers[i].name, p->headers[i].value) < 0)
			n = NULL;
		free(k);
		if (!n)
			return NULL;
	}
	return k;
}

/* The exporter of provider p to url: the tracer's batch and TLS settings, p's protocol,
 * headers and timeout. */
static struct otlp_sink *sink_start(const struct telemetry_provider *p, const char *url)
{
	struct otlp_config c;
	struct otlp_sink *s = NULL;
	char err[256];

	if (otlp_config_copy(&c, otlp_tracer_config(T.tracer))) {
		pr_warn("tracing: provider %s: out of memory", p->name);
		return NULL;
	}
	for (size_t i = 0; i < c.nheaders; i++) {
		free(c.headers[i].name);
		free(c.headers[i].value);
	}
	c.nheaders = 0;
	c.protocol = p->http ? OTLP_PROTO_HTTP_PROTOBUF : OTLP_PROTO_GRPC;
	if (p->timeout_ms)
		c.batch.export_timeout_ms = p->timeout_ms;
	int rc = otlp_config_set_endpoint(&c, url, err, sizeof(err));
	c.endpoint_is_signal = p->http;	/* the provider's path is the full traces path */
	for (int i = 0; !rc && i < p->nheaders; i++)
		rc = otlp_config_add_header(&c, p->headers[i].name, p->headers[i].value, err, sizeof(err));
	if (!rc)
		s = otlp_sink_new(p->name, &c, err, sizeof(err));
	if (!s)
		pr_warn("tracing: provider %s (%s): %s; its spans are not exported", p->name, url, err);
	else
		pr_info("tracing: exporting to provider %s (%s) at %s over %s", p->name, p->service,
			url, p->http ? "http/protobuf" : "grpc");
	otlp_config_fini(&c);
	return s;
}

static struct otlp_sink *sink_reuse(const struct tracing_state *old, const char *key)
{
	for (int i = 0; old && key && i < old->nsinks; i++)
		if (old->sinks[i].sink && strcmp(old->sinks[i].key, key) == 0)
			return otlp_sink_ref(old->sinks[i].sink);
	return NULL;
}

/* Logs the diagnostics of set that old's set did not have (each problem once). */
static void log_new_diags(const struct telemetry_set *set, const struct telemetry_set *old)
{
	for (int i = 0; i < telemetry_set_ndiags(set); i++) {
		const char *d = telemetry_set_diag(set, i);
		bool seen = false;
		for (int j = 0; !seen && j < telemetry_set_ndiags(old); j++)
			seen = strcmp(d, telemetry_set_diag(old, j)) == 0;
		if (!seen)
			pr_warn("tracing: %s", d);
	}
}

static struct tracing_state *state_build(const struct model *m, const struct tracing_state *old)
{
	struct tracing_state *st = calloc(1, sizeof(*st));
	const struct otlp_config *tc = otlp_tracer_config(T.tracer);
	int n;

	if (!st)
		return NULL;
	st->refs = 1;
	st->mesh_config = json_incref(m->mesh_config);
	st->resources = json_incref(m->resources);
	st->set = telemetry_set_new(m->mesh_config, m->resources, T.root_ns);
	if (!st->set || !(st->resolved = resolution_of(m, st->set)))
		goto fail;
	log_new_diags(st->set, old ? old->set : NULL);
	n = telemetry_set_nproviders(st->set);
	st->sinks = calloc((size_t)n + 1, sizeof(*st->sinks));
	if (!st->sinks)
		goto fail;
	for (int i = 0; i < n; i++) {
		const struct telemetry_provider *p = telemetry_set_provider(st->set, i);
		struct tracing_sink *ts = &st->sinks[st->nsinks];
		if (!p->in_use || !tc->enabled || !tc->export)
			continue;	/* OTEL_SDK_DISABLED / OTEL_TRACES_EXPORTER=none win */
		const char *why = NULL;
		ts->provider = p;
		ts->url = provider_url(m, p, &why);
		st->nsinks++;
		if (!ts->url) {
			if (why)	/* istiod: an unresolvable provider is not used */
				pr_warn("tracing: mesh_config: extensionProviders %s: opentelemetry.service "
					"'%s' %s; its spans are not exported", p->name, p->service, why);
			else
				goto fail;
			continue;
		}
		if (!(ts->key = sink_key(p, ts->url)))
			goto fail;
		ts->sink = sink_reuse(old, ts->key);
		if (!ts->sink)
			ts->sink = sink_start(p, ts->url);
	}
	return st;
fail:
	pr_warn("tracing: out of memory applying the Istio objects; the previous settings stay");
	state_unref(st);
	return NULL;
}

static void rebuild(struct model *m)
{
	struct tracing_state *old, *st;

	pthread_mutex_lock(&T.lock);
	old = T.cur;
	bool active = T.active;
	pthread_mutex_unlock(&T.lock);
	/* only rebuild (under build_lock) replaces T.cur, so old stays valid here */
	if (!active)
		return;
	if (old && json_equal(old->mesh_config, m->mesh_config) &&
	    json_equal(old->resources, m->resources)) {
		char *r = resolution_of(m, old->set);
		bool same = r && strcmp(r, old->resolved) == 0;
		free(r);
		if (same)
			return;
		/* a provider's Service moved to other endpoints: rebuild */
	}
	st = state_build(m, old);
	if (!st)
		return;
	pthread_mutex_lock(&T.lock);
	T.cur = st;
	pthread_mutex_unlock(&T.lock);
	state_unref(old);
}

/* Model listener (discovery thread; tracing_init's thread for the first). */
static void on_model(struct model *m, void *arg)
{
	(void)arg;
	pthread_mutex_lock(&T.build_lock);
	rebuild(m);
	/* after the rebuild: what is resolved from now on sees both the model and the settings */
	__atomic_add_fetch(&T.gen, 1, __ATOMIC_ACQ_REL);
	pthread_mutex_unlock(&T.build_lock);
}

int tracing_init(const struct tracing_opts *o)
{
	struct model *m;
	int rc;

	T.tracer = o->tracer;
	T.root_ns = strdup(o->root_ns && *o->root_ns ? o->root_ns : "istio-system");
	if (!T.root_ns)
		return -ENOMEM;
	T.active = true;
	rc = model_subscribe(on_model, NULL);
	if (rc)
		return rc;
	m = model_current();
	on_model(m, NULL);
	model_unref(m);
	return 0;
}

static void conf_cache_drop(void);

void tracing_fini(uint32_t drain_ms)
{
	struct tracing_state *st;

	pthread_mutex_lock(&T.build_lock);
	pthread_mutex_lock(&T.lock);
	T.active = false;
	st = T.cur;
	T.cur = NULL;
	pthread_mutex_unlock(&T.lock);
	__atomic_add_fetch(&T.gen, 1, __ATOMIC_ACQ_REL);
	conf_cache_drop();	/* its confs hold the state: they go with it */
	free(T.root_ns);
	T.root_ns = NULL;
	pthread_mutex_unlock(&T.build_lock);
	state_unref(st);
	if (otlp_sinks_wait_retired(drain_ms))
		pr_warn("tracing: provider exporters did not drain within %u ms", drain_ms);
}

/* Copies s[0..n) into p's buffer, NUL-terminated; NULL when it is full. */
static const char *keep(struct tracing_pick *p, size_t *used, const char *s, size_t n)
{
	char *d = p->buf + *used;
	if (*used + n + 1 > sizeof(p->buf))
		return NULL;
	memcpy(d, s, n);
	d[n] = '\0';
	*used += n + 1;
	return d;
}

/* tracing_pick, and whether its spans are reported (*reporting). */
static void pick_fill(struct tracing_pick *p, const struct telemetry_subject *w, bool client,
		      tracing_header_fn hdr, void *arg, bool *reporting)
{
	struct telemetry_effective e;
	const struct telemetry_mode *md;
	size_t used = 0;
	bool enabled = T.tracer && otlp_tracer_config(T.tracer)->enabled;

	memset(&p->opts, 0, sizeof(p->opts));
	p->use = false;
	p->st = state_get();
	*reporting = enabled;	/* no settings: the tracer's own */
	if (!p->st)
		return;
	telemetry_resolve(p->st->set, w, &e);
	if (!e.configured) {
		/* the agent's own settings; MeshConfig enableTracing false only stops export */
		p->use = e.mesh_disabled;
		*reporting = enabled && !e.mesh_disabled;
		p->opts.no_export = true;
		p->opts.tags = otlp_tracer_config(T.tracer)->tags;
		p->opts.ntags = otlp_tracer_config(T.tracer)->ntags;
		return;
	}
	md = client ? &e.client : &e.server;
	p->use = true;
	/* Istio: disableSpanReporting (or no provider) configures no tracer on the proxy at
	 * all; the trace context still passes through (the connection span keeps its IDs). */
	*reporting = enabled && !md->disabled;
	if (sampler_init(&p->sampler, SAMPLER_PARENT_TRACEIDRATIO, md->sampling / 100.0) == 0)
		p->opts.sampler = &p->sampler;
	for (int i = 0; !md->disabled && i < p->st->nsinks; i++)
		if (p->st->sinks[i].provider == md->provider)
			p->opts.sink = p->st->sinks[i].sink;
	p->opts.no_export = !p->opts.sink;
	p->opts.tags = p->tags;
	for (int i = 0; i < md->ntags && p->opts.ntags < ARRAY_SIZE(p->tags); i++) {
		const struct telemetry_tag *t = &md->tags[i];
		const char *v = t->value;
		size_t n = 0;
		if (t->kind == TELEMETRY_TAG_HEADER && !hdr)
			continue;	/* connection spans have no request headers */
		if (t->kind == TELEMETRY_TAG_ENVIRONMENT)
			v = getenv(t->value);
		else if (t->kind == TELEMETRY_TAG_HEADER)
			v = hdr(arg, t->value, &n);
		if (v && t->kind != TELEMETRY_TAG_HEADER)
			n = strlen(v);
		if (!v || (!n && t->kind == TELEMETRY_TAG_ENVIRONMENT)) {
			v = t->default_value;	/* unset (Envoy: empty counts as unset for env) */
			n = v ? strlen(v) : 0;
		}
		if (!v || !(v = keep(p, &used, v, n)))
			continue;
		p->tags[p->opts.ntags].name = t->name;	/* lives in the set, as long as p->st */
		p->tags[p->opts.ntags].value = (char *)v;
		p->opts.ntags++;
	}
}

void tracing_pick(struct tracing_pick *p, const struct telemetry_subject *w, bool client,
		  tracing_header_fn hdr, void *arg)
{
	bool reporting;
	pick_fill(p, w, client, hdr, arg, &reporting);
}

void tracing_pick_done(struct tracing_pick *p)
{
	state_unref(p->st);
	p->st = NULL;
}

/* ------------------------------------------------- shared resolutions ---- */

uint64_t tracing_generation(void)
{
	return __atomic_load_n(&T.gen, __ATOMIC_ACQUIRE);
}

struct tracing_conf *tracing_conf_ref(struct tracing_conf *c)
{
	if (c)
		__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
	return c;
}

void tracing_conf_unref(struct tracing_conf *c)
{
	if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	state_unref(c->st);
	free(c->key);
	free(c);
}

/* A conf from a pick (whose state reference it takes over): the tags and their values in
 * one allocation sized to them, not the pick's 5 KiB. NULL on ENOMEM (p is then done). */
static struct tracing_conf *conf_of_pick(struct tracing_pick *p, bool reporting, uint64_t gen)
{
	size_t nt = p->opts.ntags, vlen = 0;
	struct tracing_conf *c;
	char *v;

	for (size_t i = 0; i < nt; i++)
		vlen += strlen(p->opts.tags[i].value) + 1;
	c = calloc(1, sizeof(*c) + nt * sizeof(c->tags[0]) + vlen);
	if (!c) {
		tracing_pick_done(p);
		return NULL;
	}
	c->refs = 1;
	c->gen = gen;
	c->use = p->use;
	c->reporting = reporting;
	c->st = p->st;		/* tag names live in its set (or in the tracer's config) */
	p->st = NULL;
	c->opts = p->opts;
	c->opts.span_id = NULL;
	if (p->opts.sampler == &p->sampler) {
		c->sampler = p->sampler;
		c->opts.sampler = &c->sampler;
	}
	v = (char *)&c->tags[nt];
	for (size_t i = 0; i < nt; i++) {
		size_t n = strlen(p->opts.tags[i].value) + 1;
		c->tags[i].name = p->opts.tags[i].name;
		c->tags[i].value = memcpy(v, p->opts.tags[i].value, n);
		v += n;
	}
	c->opts.tags = nt ? c->tags : NULL;
	return c;
}

/* Resolves a conf for ns/name (labels from the model's workload at ip); uncached. */
static struct tracing_conf *conf_resolve(const char *ns, const char *name,
					 const struct sockaddr_storage *ip, bool client, uint64_t gen)
{
	struct model *m = model_current();
	const struct model_workload *w = ip ? model_workload_by_ip(m, ip) : NULL;
	struct telemetry_subject subj = {
		.namespace = ns ? ns : "",
		.name = name,
		.labels = w ? w->labels : NULL,
		.nlabels = w ? w->nlabels : 0,
	};
	struct tracing_pick *pk = malloc(sizeof(*pk));	/* ~5 KiB: off the stack, only here */
	struct tracing_conf *c = NULL;
	bool reporting;

	if (pk) {
		pick_fill(pk, &subj, client, NULL, NULL, &reporting);
		c = conf_of_pick(pk, reporting, gen);
	}
	free(pk);
	model_unref(m);
	if (!c)
		errno = ENOMEM;
	return c;
}

/* The cache: (namespace, workload, direction) -> conf, all of one generation; emptied whole
 * when the generation moves or it passes its bound (connections keep their references). */
#define CONF_CACHE_MAX 4096
static struct {
	pthread_mutex_t lock;
	uint64_t gen;
	size_t n;
	struct tracing_conf *b[256];
} C = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void conf_cache_flush(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(C.b); i++) {
		while (C.b[i]) {
			struct tracing_conf *c = C.b[i];
			C.b[i] = c->next;
			tracing_conf_unref(c);
		}
	}
	C.n = 0;
}

static void conf_cache_drop(void)
{
	pthread_mutex_lock(&C.lock);
	conf_cache_flush();
	pthread_mutex_unlock(&C.lock);
}

struct tracing_conf *tracing_conf_get(const char *ns, const char *name,
				      const struct sockaddr_storage *ip, bool client)
{
	const char *const part[3] = { ns ? ns : "", name ? name : "", client ? "c" : "s" };
	uint64_t gen = tracing_generation();	/* read before resolving: a later change makes
						 * what is resolved now stale, never the reverse */
	struct tracing_conf *c;
	size_t h = 5381;

	if (!name)	/* no workload name: no key that tells its labels apart */
		return conf_resolve(ns, name, ip, client, gen);
	for (int i = 0; i < 3; i++)
		for (const char *p = part[i]; *p; p++)
			h = h * 33 + (unsigned char)*p;
	h %= ARRAY_SIZE(C.b);
	pthread_mutex_lock(&C.lock);
	if (C.gen < gen) {
		conf_cache_flush();
		C.gen = gen;
	} else if (C.gen > gen) {	/* a newer generation was cached meanwhile: never go back */
		pthread_mutex_unlock(&C.lock);
		return conf_resolve(ns, name, ip, client, gen);
	}
	for (c = C.b[h]; c; c = c->next)
		if (str_parts_eq(c->key, part, 3, '|'))
			break;
	if (c) {
		tracing_conf_ref(c);
		pthread_mutex_unlock(&C.lock);
		return c;
	}
	pthread_mutex_unlock(&C.lock);
	/* resolved unlocked (it takes the model's and the settings' locks) */
	c = conf_resolve(ns, name, ip, client, gen);
	if (!c || asprintf(&c->key, "%s|%s|%s", part[0], part[1], part[2]) < 0) {
		if (c)
			c->key = NULL;
		return c;	/* uncached */
	}
	pthread_mutex_lock(&C.lock);
	if (C.gen == gen) {	/* else stale already: the caller uses it once */
		if (C.n >= CONF_CACHE_MAX)
			conf_cache_flush();
		c->next = C.b[h];
		C.b[h] = tracing_conf_ref(c);
		C.n++;
	}
	pthread_mutex_unlock(&C.lock);
	return c;
}

/* ----------------------------------------------------------------- admin ---- */

/* The agent's own settings in the shape of telemetry_mode_json. */
static json_t *fallback_json(bool mesh_disabled)
{
	const struct otlp_config *c = otlp_tracer_config(T.tracer);
	char url[1024];
	json_t *tags = json_object();
	const char *from = mesh_disabled ? "mesh_config.enableTracing" : "config";

	if (otlp_config_traces_url(c, url, sizeof(url)))
		url[0] = '\0';
	for (size_t i = 0; tags && i < c->ntags; i++)
		json_object_set_new(tags, c->tags[i].name, json_pack("{s:s}", "literal", c->tags[i].value));
	return json_pack("{s:s,s:s,s:s,s:b,s:f,s:o*,s:{s:s,s:s,s:s,s:s}}", "provider", "config",
			 "endpoint", url, "protocol", otlp_protocol_str(c->protocol), "disabled",
			 mesh_disabled || !c->enabled || !c->export, "sampling", c->sampling,
			 "custom_tags", tags, "from", "provider", "config", "disabled", from,
			 "sampling", "config", "custom_tags", "config");
}

static json_t *workload_json(const struct tracing_state *st, const struct model_workload *w)
{
	struct telemetry_subject subj = { w->namespace, w->name, w->labels, w->nlabels, false };
	struct telemetry_effective e;
	char id[512];

	telemetry_resolve(st ? st->set : NULL, &subj, &e);
	snprintf(id, sizeof(id), "%s/%s", w->namespace, w->name);
	return json_pack("{s:s,s:s?,s:s,s:o*,s:o*}", "workload", id, "node", w->node, "source",
			 e.configured ? "istio" : e.mesh_disabled ? "mesh_config" : "config",
			 "outbound", e.configured ? telemetry_mode_json(&e.client) : fallback_json(e.mesh_disabled),
			 "inbound", e.configured ? telemetry_mode_json(&e.server) : fallback_json(e.mesh_disabled));
}

json_t *tracing_to_json(const struct model *m, const char *node, const char *ns, const char *name)
{
	struct tracing_state *st = state_get();
	json_t *out = json_object(), *provs = json_array(), *diags = json_array(), *wls = json_array();

	for (int i = 0; st && i < telemetry_set_nproviders(st->set); i++) {
		const struct telemetry_provider *p = telemetry_set_provider(st->set, i);
		struct batcher_stats bs = { 0 };
		struct otlp_sink *s = NULL;
		const char *url = NULL;
		for (int k = 0; k < st->nsinks; k++) {
			if (st->sinks[k].provider == p) {
				s = st->sinks[k].sink;
				url = st->sinks[k].url;
			}
		}
		if (s)
			otlp_sink_stats(s, &bs);
		json_array_append_new(provs, json_pack(
			"{s:s,s:s,s:s,s:s?,s:b,s:b,s:I,s:I,s:I,s:I}", "name", p->name, "endpoint",
			p->endpoint, "protocol", p->http ? "http/protobuf" : "grpc", "export_url", url,
			"in_use", p->in_use, "exporting", s != NULL, "exported", (json_int_t)bs.exported, "dropped",
			(json_int_t)bs.dropped, "failed", (json_int_t)bs.failed, "queued",
			(json_int_t)bs.queue_len));
	}
	for (int i = 0; st && i < telemetry_set_ndiags(st->set); i++)
		json_array_append_new(diags, json_string(telemetry_set_diag(st->set, i)));
	for (int i = 0; m && i < m->nworkloads; i++) {
		const struct model_workload *w = &m->workloads[i];
		if (ns ? (strcmp(w->namespace, ns) != 0 || (name && strcmp(w->name, name) != 0))
		       : (node && (!w->node || strcmp(w->node, node) != 0)))
			continue;
		json_array_append_new(wls, workload_json(st, w));
	}
	json_object_set_new(out, "root_namespace", json_string(T.root_ns ? T.root_ns : "istio-system"));
	json_object_set_new(out, "istio", json_boolean(st && telemetry_set_any(st->set)));
	json_object_set_new(out, "providers", provs);
	json_object_set_new(out, "diagnostics", diags);
	json_object_set_new(out, "workloads", wls);
	state_unref(st);
	return out;
}
