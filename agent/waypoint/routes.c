// SPDX-License-Identifier: Apache-2.0
/* The waypoint's HTTPRoutes (GAMMA): the set compiled from each published model
 * (istio/httproute), and the per-request decision shared by the HTTP/1.x and HTTP/2 paths:
 * which rule, which backend Service by weight, which header edits, which redirect. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent/proxy.h"
#include "agent/waypoint/internal.h"
#include "agent/workloads.h"
#include "common/log.h"
#include "http/h2map.h"
#include "istio/httproute.h"
#include "istio/latest.h"
#include "otlp/span.h"

/* The set of the newest model, compiled on the publishing thread (istio/latest; one per
 * process, as the policies: model_subscribe has no way back, so the listener outlives a
 * waypoint and finds it stopped). */
static void routes_ref(void *set)
{
	httproute_set_ref(set);
}

static void routes_unref(void *set)
{
	httproute_set_unref(set);
}

static struct istio_latest rt_latest = ISTIO_LATEST_INIT(routes_ref, routes_unref);
static bool rt_subscribed;

/* Whether old refused hr the same way (same object generation and reason): logged once. */
static bool refused_before(const struct httproute_set *old, const struct httproute *hr)
{
	for (int i = 0; old && i < old->nroutes; i++) {
		const struct httproute *o = old->routes[i];
		if (o->accepted || !o->obj.name || !o->obj.namespace || !hr->obj.name ||
		    !hr->obj.namespace || strcmp(o->obj.name, hr->obj.name) != 0 ||
		    strcmp(o->obj.namespace, hr->obj.namespace) != 0)
			continue;
		return o->obj.generation == hr->obj.generation && o->obj.ndiags && hr->obj.ndiags &&
		       strcmp(o->obj.diags[o->obj.ndiags - 1].message,
			      hr->obj.diags[hr->obj.ndiags - 1].message) == 0;
	}
	return false;
}

static void log_refusals(const struct httproute_set *n, const struct httproute_set *old)
{
	for (int i = 0; i < n->nroutes; i++) {
		const struct httproute *hr = n->routes[i];
		for (int k = 0; k < hr->obj.ndiags; k++) {
			const struct istio_diag *d = &hr->obj.diags[k];
			if (d->kind != ISTIO_DIAG_REFUSED || refused_before(old, hr))
				continue;
			pr_warn("waypoint: HTTPRoute %s/%s not applied: %s%s%s",
				hr->obj.namespace ? hr->obj.namespace : "?", hr->obj.name ? hr->obj.name : "?",
				d->path, *d->path ? ": " : "", d->message);
		}
	}
}

struct routes_compile {
	const json_t *resources;
	uint64_t gen;
	struct httproute_set *set;	/* the result, a reference of ours (its refusals logged) */
};

static void *compile_routes(void *prev, void *arg)
{
	struct routes_compile *c = arg;
	(void)prev;	/* each set is compiled afresh */
	c->set = httproute_set_compile(c->resources, c->gen);
	if (c->set)
		httproute_set_ref(c->set);
	return c->set;
}

static void routes_compile_model(struct model *m, void *arg)
{
	struct routes_compile c = { .resources = m->resources, .gen = m->generation };
	void *old = NULL;
	(void)arg;
	int err = istio_latest_compile(&rt_latest, m->generation, compile_routes, &c, &old);
	if (err == -ENOMEM)
		pr_warn("waypoint: out of memory compiling the HTTPRoutes of model %" PRIu64
			"; the previous ones stay in force", m->generation);
	else if (!err)
		log_refusals(c.set, old);
	httproute_set_unref(c.set);
	httproute_set_unref(old);
}

int wp_routes_start(void)
{
	istio_latest_start(&rt_latest, NULL, NULL);
	return wp_follow_models(&rt_subscribed, routes_compile_model);
}

void wp_routes_stop(void)
{
	istio_latest_stop(&rt_latest, NULL, NULL);
}

static struct httproute_set *routes_current(void)
{
	return istio_latest_get(&rt_latest);
}

/* ---------------------------------------------------------- per request ---- */

int wp_route_request(struct wp_sess *s, const struct model *m, const struct hr_request *rq,
		     struct wp_route *rt, const char **why, const char **flag)
{
	const struct httproute *route = NULL;
	const struct hr_rule *rule = NULL;
	const struct hr_match *match = NULL;
	const struct hr_backend *be;
	const struct model_service *svc;

	memset(rt, 0, sizeof(*rt));
	if (!s->svc_name)	/* a workload addressed by IP: no Service, no routes */
		return 0;
	rt->set = routes_current();
	if (!rt->set)
		return 0;
	switch (httproute_match_ex(rt->set, s->svc_ns, s->svc_name, sockaddr_port(&s->authority), rq,
				   &route, &rule, &match)) {
	case HR_NO_ROUTES:
		return 0;
	case HR_NOT_FOUND:	/* Envoy: 404, NR */
		*why = "route not found";
		*flag = CONN_FLAG_NO_ROUTE;
		return 404;
	case HR_MATCHED:
		break;
	}
	rt->rule = rule;
	rt->timeout_ms = rule->timeout_ms;
	if (asprintf(&rt->route, "%s/%s", route->obj.namespace, route->obj.name) < 0) {
		rt->route = NULL;
		goto nomem;
	}
	if (rule->redirect.on) {	/* answered here, no backend (Envoy: the route's redirect) */
		const char *host = rq->header(rq->header_arg, ":authority");
		if (!host)
			host = rq->header(rq->header_arg, "host");
		rt->location = httproute_redirect_location(&rule->redirect, match, host ? host : "",
							   host ? strlen(host) : 0,
							   s->service ? s->service : s->svc_name,
							   sockaddr_port(&s->authority), rq->path, rq->plen,
							   rq->query, rq->qlen);
		if (!rt->location)
			goto nomem;
		*why = NULL;
		*flag = NULL;
		return rule->redirect.status;
	}
	/* the Gateway API: a backend that cannot be used answers its share of requests 500 */
	be = httproute_pick(rule, (uint32_t)random());
	if (!be) {
		*why = rule->nbackends ? "every backendRef of the route's rule has weight 0" :
					 "the route's rule has no backendRefs";
		*flag = WP_FLAG_NO_CLUSTER;
		return 500;
	}
	if (be->invalid) {
		*why = be->invalid;
		*flag = WP_FLAG_NO_CLUSTER;
		return 500;
	}
	svc = model_service_by_name(m, be->namespace, be->name);
	if (!svc || !model_service_target_port(svc, be->port)) {
		*why = svc ? "the route's backend Service has no such port" :
			     "the route's backend Service is not found";
		*flag = WP_FLAG_NO_CLUSTER;
		return 500;
	}
	rt->ns = strdup(be->namespace);
	rt->name = strdup(be->name);
	rt->service = proxy_service_fqdn(svc);
	rt->port = be->port;
	if (!rt->ns || !rt->name || !rt->service)
		goto nomem;
	if (rule->rewrite.on) {	/* the span keeps the original url.path (Envoy's %REQ(:PATH)%) */
		char *p = httproute_rewrite_path(&rule->rewrite.path, match, rq->path, rq->plen);
		if (!p || asprintf(&rt->rw_target, "%s%s%.*s", p, rq->query ? "?" : "",
				   rq->query ? (int)rq->qlen : 0, rq->query ? rq->query : "") < 0)
			rt->rw_target = NULL;
		free(p);
		if (!rt->rw_target ||
		    (rule->rewrite.hostname && !(rt->rw_host = strdup(rule->rewrite.hostname))))
			goto nomem;
	}
	return 0;
nomem:
	*why = "out of memory";
	*flag = CONN_FLAG_OVERFLOW;
	return 503;
}

void wp_route_fini(struct wp_route *rt)
{
	httproute_set_unref(rt->set);
	free(rt->route);
	free(rt->ns);
	free(rt->name);
	free(rt->service);
	free(rt->location);
	free(rt->rw_target);
	free(rt->rw_host);
	memset(rt, 0, sizeof(*rt));
}

int wp_route_copy(struct wp_route *dst, const struct wp_route *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->port = src->port;
	dst->timeout_ms = src->timeout_ms;
	dst->set = src->set;	/* the rule's response header edits apply to the answer */
	httproute_set_ref(dst->set);
	dst->rule = src->rule;
	if ((src->route && !(dst->route = strdup(src->route))) ||
	    (src->ns && !(dst->ns = strdup(src->ns))) ||
	    (src->name && !(dst->name = strdup(src->name))) ||
	    (src->service && !(dst->service = strdup(src->service))) ||
	    (src->rw_target && !(dst->rw_target = strdup(src->rw_target))) ||
	    (src->rw_host && !(dst->rw_host = strdup(src->rw_host))))
		return -ENOMEM;
	return 0;
}

void wp_route_deadline(struct waypoint *w, struct loop_timer *t, uint64_t ms)
{
	if (ms && !loop_timer_armed(t) && loop_timer_arm(w->o.loop, t, ms))
		pr_warn_rl("waypoint: out of memory arming a route timeout (not enforced)");
}

void wp_route_span(const struct wp_route *rt, struct span *sp)
{
	if (!sp)
		return;
	if (rt->route)
		span_set_str(sp, "route.name", rt->route);
	if (rt->service)
		span_set_str(sp, "destination.service", rt->service);
}

int wp_h1_edits(const struct hr_hmod *mod, const char *name, const char *value,
		struct wp_h1_edits *e)
{
	int nd = 0;
	memset(e, 0, sizeof(*e));
	if (name && wp_h1_edits_replace(e, name, value))
		return -ENOMEM;
	nd = name ? 1 : 0;
	for (int i = 0; mod && i < mod->nremove; i++)
		e->drop[nd++] = mod->remove[i];
	for (int pass = 0; mod && pass < 2; pass++) {
		const struct hr_kv *kv = pass ? mod->add : mod->set;
		int n = pass ? mod->nadd : mod->nset;
		for (int i = 0; i < n; i++) {
			if (!pass)
				e->drop[nd++] = kv[i].name;
			if (asprintf(&e->mem[e->nmem], "%s: %s", kv[i].name, kv[i].value) < 0)
				return -ENOMEM;
			e->extra[e->nextra++] = e->mem[e->nmem++];
		}
	}
	e->drop[nd] = NULL;
	return 0;
}

int wp_h1_edits_drop(struct wp_h1_edits *e, const char *name)
{
	int nd = 0;
	while (e->drop[nd])
		nd++;
	if (nd + 2 > (int)(sizeof(e->drop) / sizeof(e->drop[0])))
		return -ENOMEM;
	e->drop[nd] = name;
	e->drop[nd + 1] = NULL;
	return 0;
}

int wp_h1_edits_replace(struct wp_h1_edits *e, const char *name, const char *value)
{
	if (e->nmem >= (int)(sizeof(e->mem) / sizeof(e->mem[0])) ||
	    e->nextra >= (int)(sizeof(e->extra) / sizeof(e->extra[0])) || wp_h1_edits_drop(e, name))
		return -ENOMEM;
	if (asprintf(&e->mem[e->nmem], "%s: %s", name, value) < 0)
		return -ENOMEM;
	e->extra[e->nextra++] = e->mem[e->nmem++];
	return 0;
}

void wp_h1_edits_fini(struct wp_h1_edits *e)
{
	for (int i = 0; i < e->nmem; i++)
		free(e->mem[i]);
	memset(e, 0, sizeof(*e));
}

bool wp_route_drops(const struct hr_hmod *mod, const char *name, size_t nlen)
{
	for (int i = 0; mod && i < mod->nremove; i++)
		if (strlen(mod->remove[i]) == nlen && strncasecmp(mod->remove[i], name, nlen) == 0)
			return true;
	for (int i = 0; mod && i < mod->nset; i++)
		if (strlen(mod->set[i].name) == nlen && strncasecmp(mod->set[i].name, name, nlen) == 0)
			return true;
	return false;
}

int wp_route_add_fields(const struct hr_hmod *mod, struct h2map_hdrs *out)
{
	int err = 0;
	for (int pass = 0; mod && pass < 2 && !err; pass++) {
		const struct hr_kv *kv = pass ? mod->add : mod->set;
		int n = pass ? mod->nadd : mod->nset;
		for (int i = 0; i < n && !err; i++)
			err = h2map_hdrs_add(out, kv[i].name, strlen(kv[i].name), kv[i].value,
					     strlen(kv[i].value));
	}
	return err;
}

int wp_h1_local_head(struct h1_buf *out, int code, const char *const *lines, size_t n,
		     const struct hr_hmod *mod)
{
	int err = h1_buf_printf(out, "HTTP/1.1 %d %s\r\n", code, h1_reason(code));
	for (size_t i = 0; i < n && !err; i++) {
		const char *colon = strchr(lines[i], ':');
		if (colon && wp_route_drops(mod, lines[i], (size_t)(colon - lines[i])))
			continue;	/* the route's modifier sets or removes it */
		err = h1_buf_printf(out, "%s\r\n", lines[i]);
	}
	for (int pass = 0; mod && pass < 2 && !err; pass++) {
		const struct hr_kv *kv = pass ? mod->add : mod->set;
		int nkv = pass ? mod->nadd : mod->nset;
		for (int i = 0; i < nkv && !err; i++)
			err = h1_buf_printf(out, "%s: %s\r\n", kv[i].name, kv[i].value);
	}
	return err ? err : h1_buf_append(out, "\r\n", 2);
}

const struct hr_hmod *wp_route_resp_mod(const struct hr_rule *rule)
{
	return rule && (rule->resp.nset || rule->resp.nadd || rule->resp.nremove) ? &rule->resp : NULL;
}

/* ---------------------------------------------------------- admin ---- */

struct keep_arg {
	struct waypoint *w;
	const struct model *m;
	const struct model_service *me;
};

/* A Service this waypoint serves. */
static bool keep_service(void *arg, const char *ns, const char *name)
{
	struct keep_arg *k = arg;
	const struct model_service *svc = model_service_by_name(k->m, ns, name);
	return svc && k->me && model_waypoint_for(k->m, svc, NULL) == k->me;
}

json_t *wp_routes_json(struct waypoint *w)
{
	struct httproute_set *set = routes_current();
	struct model *m = model_current();
	struct keep_arg k = { .w = w, .m = m,
			      .me = model_service_by_name(m, w->namespace, w->name) };
	json_t *j = httproute_set_json(set, keep_service, &k);
	model_unref(m);
	httproute_set_unref(set);
	return j;
}
