// SPDX-License-Identifier: Apache-2.0
/* The waypoint's data path. Each inbound CONNECT stream becomes a conn whose downstream end is
 * the HBONE stream and whose upstream end is a session (struct wp_sess) that reads HTTP/1.x;
 * each request goes to an upstream (struct wp_up): a conn whose downstream end is ours and
 * whose upstream end is an HBONE stream to the endpoint's node agent (or plain TCP to a
 * workload outside the mesh). Sessions and upstreams only copy between conn buffers and their
 * own bounded staging, so backpressure is the conns' own. Every conn callback only schedules
 * the session's pump, which runs in the loop's before-sleep step, never inside a callback. */
#include "agent/waypoint/waypoint.h"
#include "agent/waypoint/internal.h"
#include "agent/conn.h"
#include "agent/hbone.h"
#include "agent/mesh.h"
#include "agent/proxy.h"
#include "agent/tracing.h"
#include "agent/workloads.h"
#include "http/h2map.h"
#include "common/log.h"
#include "common/util.h"
#include "istio/authz.h"
#include "istio/authzset.h"
#include "istio/httproute.h"
#include "otlp/resource.h"
#include "otlp/tracecontext.h"
#include "otlp/tracer.h"
#include "tls/ca.h"
#include "tls/certstore.h"
#include "tls/ctx.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WP_FEED_MAX	(16 * 1024)	/* bytes parsed per step */
#define WP_IDLE_MAX	256		/* pooled keep-alive upstream connections */
#define WP_CLOSE_WAIT_MS 10000		/* after our EOF, how long the client may take to close */
#define WP_STEPS_MAX	64		/* pump iterations before yielding to other work */
#define WP_SERIES_MAX	10000		/* istio_requests_total series */
#define WP_DENIED_MAX	256		/* ambit_authorization_denied_total series */

/* ------------------------------------------------------------ objects ---- */

static const char *const sess_st_names[] = {
	[SS_SNIFF] = "sniff", [SS_HEAD] = "head", [SS_BODY] = "body",
	[SS_RESPONSE] = "response", [SS_TUNNEL] = "tunnel", [SS_CLOSING] = "closing",
	[SS_H2] = "h2",
};

static const char *sess_st_to_str(enum sess_st st)
{
	return (unsigned)st < ARRAY_SIZE(sess_st_names) ? sess_st_names[st] : "?";
}

static const struct conn_end_ops sess_ops, up_ops;
static void up_schedule(struct wp_up *u);

/* ---------------------------------------------------------- identity ---- */

static bool is_local_ip(const struct waypoint *w, const struct sockaddr_storage *ip)
{
	for (int i = 0; i < w->nlocal; i++)
		if (sockaddr_ip_equal(&w->local_ips[i], ip))
			return true;
	return false;
}

int waypoint_self(struct waypoint *w, const struct model *m, const struct model_workload **wlp,
		  struct spiffe_id *id)
{
	const struct model_workload *wl = NULL;
	const char *why;

	if (w->o.pod_ip.ss_family) {
		wl = model_workload_by_ip(m, &w->o.pod_ip);
	} else {
		const struct model_service *svc = model_service_by_name(m, w->namespace, w->name);
		for (int i = 0; svc && !wl && i < svc->nendpoints; i++) {
			const struct model_workload *c = &m->workloads[svc->endpoints[i]];
			for (int j = 0; j < c->naddrs && !wl; j++)
				if (is_local_ip(w, &c->addrs[j]))
					wl = c;
		}
	}
	if (!wl || spiffe_id_set(id, w->trust_domain, wl->namespace, wl->service_account, &why))
		return -ENOENT;
	if (wlp)
		*wlp = wl;
	return 0;
}

/* The resource of the waypoint's spans (its own workload), rebuilt when that changes. */
static struct otlp_resource *self_resource(struct waypoint *w, const struct model_workload *wl)
{
	char key[sizeof(w->resource_key)];
	if (!w->o.tracer || !wl)
		return w->resource;
	snprintf(key, sizeof(key), "%s|%s|%s", wl->canonical_service, wl->namespace, wl->name);
	if (w->resource && strcmp(key, w->resource_key) == 0)
		return w->resource;
	struct otlp_resource *r = otlp_resource_for_workload(otlp_tracer_config(w->o.tracer),
							     wl->canonical_service, wl->namespace,
							     wl->name, w->node_name);
	if (!r)
		return w->resource;
	otlp_resource_unref(w->resource);
	w->resource = r;
	strcpy(w->resource_key, key);
	return r;
}

/* ---------------------------------------------------------- metrics ---- */

static void esc(FILE *f, const char *s)
{
	for (s = s && *s ? s : "unknown"; *s; s++) {
		if (*s == '\\' || *s == '"')
			fputc('\\', f);
		if (*s == '\n') {
			fputs("\\n", f);
			continue;
		}
		fputc(*s, f);
	}
}

/* Adds 1 to the series of labels (taken over) in the hash table tab[n], bounded by max. */
static void series_inc(struct series **tab, size_t n, unsigned *count, unsigned max, char *labels)
{
	size_t h = 5381;
	for (const char *c = labels; *c; c++)
		h = h * 33 + (unsigned char)*c;
	h %= n;
	for (struct series *x = tab[h]; x; x = x->next) {
		if (strcmp(x->labels, labels) == 0) {
			x->v++;
			free(labels);
			return;
		}
	}
	struct series *x = *count < max ? calloc(1, sizeof(*x)) : NULL;
	if (!x) {
		free(labels);
		return;
	}
	x->labels = labels;
	x->v = 1;
	x->next = tab[h];
	tab[h] = x;
	(*count)++;
}

static void series_free(struct series **tab, size_t n)
{
	for (size_t b = 0; b < n; b++) {
		for (struct series *x = tab[b], *next; x; x = next) {
			next = x->next;
			free(x->labels);
			free(x);
		}
	}
}

/* Istio's labels; request_protocol is "grpc" for gRPC calls (whatever the HTTP version), and
 * grpc_response_status is only there for them, as Istio populates it. */
static void count_request(struct waypoint *w, const struct wp_sess *s, const char *dst_wl,
			  const char *dst_ns, const char *dst_principal, const struct wp_outcome *o)
{
	int code = o->code;
	const char *flag = o->flag;
	char *labels = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&labels, &len);
	char codebuf[16];
	const char *names[] = { "reporter", "source_workload", "source_workload_namespace",
		"source_principal", "source_app", "destination_workload",
		"destination_workload_namespace", "destination_principal", "destination_service",
		"request_protocol", "response_code", "response_flags", "connection_security_policy" };
	snprintf(codebuf, sizeof(codebuf), "%d", code);
	const char *vals[] = { "waypoint", s->source.workload, s->source.namespace,
		s->source.principal, s->source.canonical_service, dst_wl, dst_ns, dst_principal,
		o->service ? o->service : s->service, o->grpc ? "grpc" : "http", codebuf,
		flag ? flag : "-", "mutual_tls" };

	if (!f)
		return;
	fputc('{', f);
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		fprintf(f, "%s%s=\"", i ? "," : "", names[i]);
		esc(f, vals[i]);
		fputc('"', f);
	}
	if (o->grpc && o->grpc_status >= 0)
		fprintf(f, ",grpc_response_status=\"%d\"", o->grpc_status);
	fputc('}', f);
	if (fclose(f)) {
		free(labels);
		return;
	}
	series_inc(w->series, ARRAY_SIZE(w->series), &w->nseries, WP_SERIES_MAX, labels);
}

/* A denial (or a dry-run one) by policy p, as the node agent counts them (agent/policy.c). */
static void count_denial(struct waypoint *w, const struct authz_policy_ref *p,
			 enum authz_reason reason, bool dry_run)
{
	char *labels = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&labels, &len);
	if (!f)
		return;
	fputs("{policy=\"", f);
	if (p->name) {
		esc(f, p->namespace);
		fputc('/', f);
		esc(f, p->name);
	} else {
		fputc('-', f);
	}
	fprintf(f, "\",reason=\"%s\",dry_run=\"%s\"}", authz_reason_str(reason),
		dry_run ? "true" : "false");
	if (fclose(f)) {
		free(labels);
		return;
	}
	series_inc(w->denied, ARRAY_SIZE(w->denied), &w->ndenied, WP_DENIED_MAX, labels);
}

void waypoint_metrics_write(struct waypoint *w, FILE *f)
{
	fputs("# HELP istio_requests_total Requests the waypoint proxied, by response code.\n"
	      "# TYPE istio_requests_total counter\n", f);
	for (size_t b = 0; b < ARRAY_SIZE(w->series); b++)
		for (struct series *x = w->series[b]; x; x = x->next)
			fprintf(f, "istio_requests_total%s %" PRIu64 "\n", x->labels, x->v);
	fputs("# HELP ambit_authorization_denied_total Requests denied by AuthorizationPolicy "
	      "(dry_run: would have been).\n# TYPE ambit_authorization_denied_total counter\n", f);
	for (size_t b = 0; b < ARRAY_SIZE(w->denied); b++)
		for (struct series *x = w->denied[b]; x; x = x->next)
			fprintf(f, "ambit_authorization_denied_total%s %" PRIu64 "\n", x->labels, x->v);
	fprintf(f, "# HELP ambit_waypoint_sessions Client connections (CONNECT streams) open.\n"
		   "# TYPE ambit_waypoint_sessions gauge\nambit_waypoint_sessions %u\n"
		   "# HELP ambit_waypoint_upstreams_idle Pooled keep-alive upstream connections.\n"
		   "# TYPE ambit_waypoint_upstreams_idle gauge\nambit_waypoint_upstreams_idle %u\n"
		   "# HELP ambit_waypoint_upstreams_opened_total Upstream connections opened.\n"
		   "# TYPE ambit_waypoint_upstreams_opened_total counter\n"
		   "ambit_waypoint_upstreams_opened_total %" PRIu64 "\n"
		   "# HELP ambit_waypoint_upstreams_reused_total Requests sent on a pooled upstream connection.\n"
		   "# TYPE ambit_waypoint_upstreams_reused_total counter\n"
		   "ambit_waypoint_upstreams_reused_total %" PRIu64 "\n"
		   "# HELP ambit_waypoint_h2_sessions Client connections speaking HTTP/2.\n"
		   "# TYPE ambit_waypoint_h2_sessions gauge\nambit_waypoint_h2_sessions %u\n"
		   "# HELP ambit_waypoint_h2_upstreams HTTP/2 connections to endpoints.\n"
		   "# TYPE ambit_waypoint_h2_upstreams gauge\nambit_waypoint_h2_upstreams %u\n"
		   "# HELP ambit_waypoint_h2_upstreams_opened_total HTTP/2 connections to endpoints opened.\n"
		   "# TYPE ambit_waypoint_h2_upstreams_opened_total counter\n"
		   "ambit_waypoint_h2_upstreams_opened_total %" PRIu64 "\n",
		w->nsessions, w->nidle, w->upstreams_opened, w->upstreams_reused, w->nh2sessions,
		w->nh2ups, w->h2ups_opened);
}

/* ---------------------------------------------------------- authorization ---- */

/* The AuthorizationPolicy set of the newest model, compiled on the publishing thread
 * (istio/authzset; one per process: model_subscribe has no way back, so the listener outlives
 * a waypoint and finds it stopped). The data path takes a reference per request. */
static struct authz_latest wpz = AUTHZ_LATEST_INIT;
static bool wpz_subscribed;

static void authz_compile_model(struct model *m, void *arg)
{
	(void)arg;
	if (authz_latest_compile(&wpz, m->resources, m->generation, NULL) == -ENOMEM)
		pr_warn("waypoint: out of memory compiling the policies of model %" PRIu64
			"; the previous ones stay in force", m->generation);
}

int wp_follow_models(bool *subscribed, model_listener_fn fn)
{
	struct model *m;
	if (!*subscribed) {
		int err = model_subscribe(fn, NULL);
		if (err)
			return err;
		*subscribed = true;
	}
	m = model_current();
	fn(m, NULL);
	model_unref(m);
	return 0;
}

static int authz_start(const char *root_ns)
{
	int err = authz_latest_start(&wpz, root_ns);
	return err ? err : wp_follow_models(&wpz_subscribed, authz_compile_model);
}

static void authz_stop(void)
{
	authz_latest_stop(&wpz);
}

/* The set in force (a new reference), or NULL when none was compiled. */
struct authz_set *wp_authz_current(void)
{
	return authz_latest_get(&wpz);
}

/* request.headers[NAME] for the engine: the values of NAME joined with ",". The string lives
 * until the next lookup (the engine uses each at once). */
struct req_headers {
	const struct h1 *h;
	char *buf;
};

static const char *req_header(void *arg, const char *name)
{
	struct req_headers *rh = arg;
	const struct h1 *h = rh->h;
	size_t nl = strlen(name), len = 0;
	char *v = NULL;

	free(rh->buf);
	rh->buf = NULL;
	bool first = true;
	for (int i = 0; i < h->nh; i++) {
		const struct h1_header *x = &h->h[i];
		if (x->name_len != nl || strncasecmp(h->arena + x->name, name, nl) != 0)
			continue;
		char *nv = realloc(v, len + 1 + x->value_len + 1);
		if (!nv) {
			free(v);
			return NULL;
		}
		v = nv;
		if (!first)
			v[len++] = ',';
		first = false;
		memcpy(v + len, h->arena + x->value, x->value_len);
		len += x->value_len;
		v[len] = '\0';
	}
	rh->buf = v;
	return v;
}

/* Authorization of the session's client for one request rq, or, rq NULL, for its stream as
 * TCP (the engine then applies istiod's TCP conversion: ALLOW rules with HTTP fields are
 * dropped, DENY rules lose them). Only the policies attached to this waypoint or the Service
 * apply. Records the deciding policy in the request span and counts denials; true when
 * denied, with the operator's sentence ("denied by NS/NAME", ...) in msg. */
bool wp_policy_denies(struct wp_sess *s, const struct authz_set *set, const struct authz_request *rq,
		      struct span *span, char *msg, size_t msglen)
{
	struct waypoint *w = s->w;
	struct authz_l7_target t = { .waypoint_namespace = w->namespace, .waypoint_name = w->name,
				     .service_namespace = s->svc_ns, .service_name = s->svc_name };
	struct authz_conn c = { .src = &s->src_ip, .dst = &s->authority, .dst_port = s->dst_port,
				.src_identity = s->peer_identity };
	struct authz_result r;
	char pol[2 * 254];

	if (!set || !authz_has_l7(set, &t))
		return false;
	authz_check_request(set, &c, &t, rq, &r);
	if (r.dry_run_applied) {
		struct authz_result d = r;
		char dmsg[300], *attr;
		d.verdict = r.dry_run_verdict;
		d.reason = r.dry_run_reason;
		d.policy = r.dry_run_policy;
		authz_result_str(&d, dmsg, sizeof(dmsg));
		if (span && asprintf(&attr, "%s: %s", authz_verdict_str(d.verdict), dmsg) >= 0) {
			span_set_str(span, "authorization.dry_run", attr);
			free(attr);
		}
		if (d.verdict == AUTHZ_DENY)
			count_denial(w, &d.policy, d.reason, true);
	}
	if (span && r.policy.name) {
		snprintf(pol, sizeof(pol), "%s/%s", r.policy.namespace ? r.policy.namespace : "",
			 r.policy.name);
		span_set_str(span, "authorization.policy", pol);
	}
	if (r.verdict != AUTHZ_DENY)
		return false;
	authz_result_str(&r, msg, msglen);
	count_denial(w, &r.policy, r.reason, false);
	return true;
}

/* L7 authorization of the request head h (url and host as sent, not NUL-terminated). Fails
 * closed on out of memory. */
static bool request_denied(struct wp_sess *s, const struct h1 *h, const char *url, size_t ulen,
			   const char *host, size_t hlen, char *msg, size_t msglen)
{
	struct authz_set *set = wp_authz_current();
	struct req_headers rh = { .h = h };
	char *path = NULL, *hs = NULL;
	bool denied = false;

	if (!set)
		return false;
	path = strndup(url, ulen);
	hs = host ? strndup(host, hlen) : NULL;
	if (!path || (host && !hs)) {
		snprintf(msg, msglen, "out of memory checking the request's policies");
		denied = true;
	} else {
		struct authz_request rq = { .method = h1_method(h), .path = path, .host = hs,
					    .header = req_header, .header_arg = &rh };
		denied = wp_policy_denies(s, set, &rq, s->span, msg, msglen);
		if (denied)
			pr_debug("waypoint: %s %s for %s from %s: %s", h1_method(h), path,
				 s->service ? s->service : "?",
				 s->peer_identity ? s->peer_identity : "?", msg);
	}
	free(rh.buf);
	free(path);
	free(hs);
	authz_set_unref(set);
	return denied;
}

/* Envoy's RBAC answer to a denied HTTP request: 403, "RBAC: access denied" as text/plain
 * (no body to HEAD), or a gRPC call's trailers-only PERMISSION_DENIED (7); with the matched
 * route's ResponseHeaderModifier (Envoy applies the route's response headers to every local
 * reply once a route is chosen). The connection goes on unless close. */
static void deny_reply(struct wp_sess *s, bool close, bool grpc)
{
	char cl[40];
	int err;
	s->w->local_replies++;
	snprintf(cl, sizeof(cl), "content-length: %zu", grpc ? 0 : strlen(WP_RBAC_BODY));
	const char *glines[] = { "content-type: application/grpc", "grpc-status: 7",
				 "grpc-message: " WP_RBAC_BODY, cl, "server: ambit-waypoint",
				 "connection: close" };
	const char *lines[] = { "content-type: text/plain", cl, "server: ambit-waypoint",
				"connection: close" };
	if (grpc)
		err = wp_h1_local_head(&s->to_down, 200, glines, ARRAY_SIZE(glines) - !close, s->rt_resp);
	else
		err = wp_h1_local_head(&s->to_down, 403, lines, ARRAY_SIZE(lines) - !close, s->rt_resp);
	if (!err && !grpc && !s->req_head)
		err = h1_buf_append(&s->to_down, WP_RBAC_BODY, strlen(WP_RBAC_BODY));
	if (err)
		pr_warn_rl("waypoint: cannot queue a denial (out of memory)");
}

/* A gRPC request by its content-type ("application/grpc", "+proto" or ";..." after it), as
 * Envoy tells one. */
static bool is_grpc_request(const struct h1 *h)
{
	size_t len, n = strlen("application/grpc");
	const char *ct = h1_header(h, "content-type", &len);
	return ct && len >= n && strncasecmp(ct, "application/grpc", n) == 0 &&
	       (len == n || ct[n] == '+' || ct[n] == ';');
}

/* ---------------------------------------------------------- balancing ---- */

struct endpoint_stat *wp_ep_stat(struct waypoint *w, const char *uid, bool create)
{
	size_t h = 5381;
	for (const char *c = uid; *c; c++)
		h = h * 33 + (unsigned char)*c;
	h %= ARRAY_SIZE(w->eps);
	for (struct endpoint_stat *e = w->eps[h]; e; e = e->next)
		if (strcmp(e->uid, uid) == 0)
			return e;
	if (!create)
		return NULL;
	struct endpoint_stat *e = calloc(1, sizeof(*e));
	if (!e || !(e->uid = strdup(uid))) {
		free(e);
		return NULL;
	}
	e->next = w->eps[h];
	w->eps[h] = e;
	return e;
}

/* Picks where the session's next request (or tunnel) goes, from the current model: an
 * endpoint of the service (round robin, or least request: of two at random the one with fewer
 * requests in flight; with two endpoints or fewer, the fewest with round robin among equals),
 * or the workload the CONNECT named. NULL when there is none. */
static const struct model_workload *pick_endpoint(struct waypoint *w, int family,
						  const struct model *m,
						  const struct model_service *svc, uint16_t port,
						  struct sockaddr_storage *target);

const struct model_workload *wp_pick(struct waypoint *w, struct wp_sess *s,
					 const struct model *m, struct sockaddr_storage *target)
{
	if (!s->svc_name) {
		const struct model_workload *wl = model_workload_by_ip(m, &s->authority);
		if (wl)
			*target = s->authority;
		return wl;
	}
	return pick_endpoint(w, s->authority.ss_family, m,
			     model_service_by_name(m, s->svc_ns, s->svc_name),
			     sockaddr_port(&s->authority), target);
}

const struct model_workload *wp_pick_route(struct waypoint *w, struct wp_sess *s,
					   const struct model *m, const struct wp_route *rt,
					   struct sockaddr_storage *target)
{
	if (!rt || !rt->ns)
		return wp_pick(w, s, m, target);
	return pick_endpoint(w, s->authority.ss_family, m, model_service_by_name(m, rt->ns, rt->name),
			     rt->port, target);
}

/* An endpoint of svc (NULL: none) for its service port port, by the waypoint's balancing. */
static const struct model_workload *pick_endpoint(struct waypoint *w, int family,
						  const struct model *m,
						  const struct model_service *svc, uint16_t port,
						  struct sockaddr_storage *target)
{
	uint16_t tport = svc ? model_service_target_port(svc, port) : 0;
	if (!tport || !svc->nendpoints)
		return NULL;
	uint32_t start = w->rr++;
	const struct model_workload *best = NULL;
	uint32_t best_active = UINT32_MAX;
	if (w->o.lb == WAYPOINT_LB_LEAST_REQUEST && svc->nendpoints > 2) {
		/* Envoy's least request with equal weights (Istio's default): the power of two
		 * choices, two endpoints at random and the one with fewer requests in flight */
		const struct model_workload *c[2] = { NULL, NULL };
		for (int tries = 0; tries < 8 && !c[1]; tries++) {
			const struct model_workload *wl =
				&m->workloads[svc->endpoints[(uint32_t)random() % (uint32_t)svc->nendpoints]];
			if (!model_workload_addr(wl, family) || wl == c[0])
				continue;
			c[c[0] ? 1 : 0] = wl;
		}
		if (c[1]) {
			struct endpoint_stat *a = wp_ep_stat(w, c[0]->uid, false);
			struct endpoint_stat *b = wp_ep_stat(w, c[1]->uid, false);
			best = (b ? b->active : 0) < (a ? a->active : 0) ? c[1] : c[0];
		}
	}
	bool chosen = best != NULL;
	for (int i = 0; !chosen && i < svc->nendpoints; i++) {
		const struct model_workload *wl =
			&m->workloads[svc->endpoints[(start + (uint32_t)i) % (uint32_t)svc->nendpoints]];
		if (!model_workload_addr(wl, family))
			continue;
		if (w->o.lb == WAYPOINT_LB_ROUND_ROBIN) {
			best = wl;
			break;
		}
		struct endpoint_stat *e = wp_ep_stat(w, wl->uid, false);
		uint32_t a = e ? e->active : 0;
		if (a < best_active) {
			best = wl;
			best_active = a;
		}
	}
	if (best) {
		*target = *model_workload_addr(best, family);
		sockaddr_set_port(target, tport);
	}
	return best;
}

/* ---------------------------------------------------------- upstreams ---- */

static void up_ref(struct wp_up *u)
{
	u->refs++;
}

static void up_unref(struct wp_up *u)
{
	if (--u->refs > 0)
		return;
	h1_fini(&u->resp);
	free(u);
}

static void idle_unlink(struct wp_up *u)
{
	struct waypoint *w = u->w;
	if (!u->idle)
		return;
	if (u->prev)
		u->prev->next = u->next;
	else
		w->idle = u->next;
	if (u->next)
		u->next->prev = u->prev;
	u->prev = u->next = NULL;
	u->idle = false;
	w->nidle--;
}

/* The response parser's callbacks go to the owning session (below). */
static int sess_on_resp_head(struct h1 *h, struct h1_buf *out, void *arg);
static const struct h1_cbs resp_cbs = { .on_head = sess_on_resp_head };

static void up_kick_write(struct conn_end *e)
{
	struct wp_up *u = container_of(e, struct wp_up, end);
	if (u->h2)
		wp_h2_up_kick(u->h2);
	else if (u->sess)
		wp_sess_schedule(u->sess);
	else
		up_schedule(u);
}

static void up_kick_read(struct conn_end *e)
{
	struct wp_up *u = container_of(e, struct wp_up, end);
	if (u->h2)
		wp_h2_up_kick(u->h2);
	else if (u->sess)
		wp_sess_schedule(u->sess);
}

static void up_release(struct conn_end *e, int err)
{
	struct wp_up *u = container_of(e, struct wp_up, end);
	u->conn = NULL;
	u->err = err;
	if (u->h2) {
		wp_h2_up_kick(u->h2);
	} else if (u->sess) {
		wp_sess_schedule(u->sess);
	} else if (u->idle) {
		idle_unlink(u);
		up_unref(u);	/* the idle list's reference */
	}
	up_unref(u);		/* the conn's */
}

static const struct conn_end_ops up_ops = {
	.name = "waypoint-up",
	.kick_write = up_kick_write,
	.kick_read = up_kick_read,
	.release = up_release,
};

/* An upstream nobody owns: idle in the pool, or closing after its last response. Bytes or
 * EOF from the server end it (an idle HTTP/1.1 server may close at any time, RFC 9112 §9.5). */
static void up_task(struct loop *l, void *arg)
{
	struct wp_up *u = arg;
	const uint8_t *p;
	int drop = 0;	/* the idle list's reference, dropped with the task's at the end */
	(void)l;
	u->scheduled = false;
	if (u->conn && !u->sess) {
		size_t n = conn_out_peek(u->conn, CONN_DOWN, &p);
		if (n && u->idle) {
			idle_unlink(u);
			drop = 1;
			conn_abort(u->conn, CONN_DOWN, -EPROTO, CONN_FLAG_UPSTREAM_RESET,
				   "unexpected bytes on an idle upstream connection");
		} else {
			while (u->conn && (n = conn_out_peek(u->conn, CONN_DOWN, &p)) > 0)
				conn_out_consume(u->conn, CONN_DOWN, n);
			if (u->conn && conn_out_eof(u->conn, CONN_DOWN)) {
				if (u->idle) {
					idle_unlink(u);
					drop = 1;
				}
				if (!u->closing)
					conn_in_eof(u->conn, CONN_DOWN);
				u->closing = true;
				if (u->conn)
					conn_out_done(u->conn, CONN_DOWN);
			}
		}
	}
	u->refs -= drop;	/* never the last: the task holds one */
	up_unref(u);		/* the task's */
}

static void up_schedule(struct wp_up *u)
{
	if (u->scheduled)
		return;
	up_ref(u);
	if (loop_defer(u->w->o.loop, up_task, u)) {
		up_unref(u);
		return;
	}
	u->scheduled = true;
}

/* Hands an upstream back: to the idle pool when its HTTP/1.1 connection may carry another
 * request, else closed (gracefully when ok, reset when not). Drops the caller's reference. */
void wp_up_put(struct wp_up *u, bool reusable, bool ok)
{
	struct waypoint *w = u->w;

	u->sess = NULL;
	if (u->conn && reusable && !w->draining && w->nidle < WP_IDLE_MAX) {
		h1_next(&u->resp);
		u->idle = true;
		u->idle_since_ms = loop_now_ms(w->o.loop);
		u->next = w->idle;
		u->prev = NULL;
		if (w->idle)
			w->idle->prev = u;
		w->idle = u;
		w->nidle++;
		up_schedule(u);	/* it may have closed already */
		return;		/* the reference is the idle list's now */
	}
	if (u->conn) {
		if (ok) {
			u->closing = true;
			conn_in_eof(u->conn, CONN_DOWN);
			if (u->conn)
				up_schedule(u);	/* drains the rest and finishes on the server's EOF */
		} else {
			conn_abort(u->conn, CONN_DOWN, -ECONNRESET, CONN_FLAG_DOWNSTREAM_RESET,
				   "request abandoned");
		}
	}
	up_unref(u);
}

static void sweep_fire(struct loop *l, struct loop_timer *t)
{
	struct waypoint *w = t->arg;
	uint64_t now = loop_now_ms(l);
	struct wp_up *u = w->idle, *next;
	for (; u; u = next) {
		next = u->next;
		if (now - u->idle_since_ms < WP_IDLE_MS && !w->draining)
			continue;
		idle_unlink(u);
		wp_up_put(u, false, true);
	}
	wp_h2_sweep(w, now, w->draining);
	loop_timer_arm(l, t, 5000);
}

/* A TCP leg to a workload outside the mesh (no agent to carry HBONE to). */
static int connect_plain(struct waypoint *w, struct conn *c, const struct sockaddr_storage *t)
{
	int one = 1, fd = socket(t->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct conn_end *e;
	if (fd == -1)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (const struct sockaddr *)t, sockaddr_len(t)) == -1 && errno != EINPROGRESS) {
		int err = -errno;
		close(fd);
		return err;
	}
	e = conn_tcp_end_new(w->o.loop, fd, true);
	if (!e) {
		close(fd);
		return -ENOMEM;
	}
	conn_attach(c, CONN_UP, e);
	conn_tcp_end_start(e);
	conn_arm_connect_timeout(c, w->o.connect_timeout_ms);
	return 0;
}

int wp_up_key(struct waypoint *w, const struct model_workload *dst,
	      const struct sockaddr_storage *target, char *key, size_t len)
{
	struct spiffe_id id;
	char addr[ADDR_STR_LEN], pid[SPIFFE_ID_STR_MAX];
	if (mesh_workload_id(w->trust_domain, dst, &id))
		return -ENOENT;
	snprintf(key, len, "%s|%s|%d", sockaddr_str(target, addr, sizeof(addr)),
		 spiffe_id_str(&id, pid), dst->enrolled);
	return 0;
}

/* An upstream to dst at target for session s: a pooled idle one, or a new conn. On failure
 * returns NULL with *why set; the caller answers the client. New reference. */
struct wp_up *wp_up_get(struct wp_sess *s, const struct model *m,
			    const struct model_workload *dst, const struct sockaddr_storage *target,
			    const char *traceparent, bool pooled_ok, const char **why)
{
	struct waypoint *w = s->w;
	struct spiffe_id self_id, dst_id;
	const struct model_workload *self;
	char key[sizeof(((struct wp_up *)0)->key)], addr[ADDR_STR_LEN];
	int err;

	if (waypoint_self(w, m, &self, &self_id)) {
		*why = "the waypoint's own workload is not in the model";
		return NULL;
	}
	if (mesh_workload_id(w->trust_domain, dst, &dst_id) ||
	    wp_up_key(w, dst, target, key, sizeof(key))) {
		*why = "the endpoint has no valid identity";
		return NULL;
	}
	sockaddr_str(target, addr, sizeof(addr));
	if (pooled_ok) {
		for (struct wp_up *u = w->idle; u; u = u->next) {
			if (strcmp(u->key, key) != 0 || !u->conn)
				continue;
			idle_unlink(u);	/* its reference becomes the caller's */
			u->sess = s;
			w->upstreams_reused++;
			return u;
		}
	}
	struct wp_up *u = calloc(1, sizeof(*u));
	struct conn_opts co = { .buffer_size = w->o.buffer_size };
	struct conn *c = u ? conn_new(w->o.loop, &co) : NULL;
	if (!c) {
		free(u);
		*why = "out of memory";
		return NULL;
	}
	u->w = w;
	u->refs = 2;	/* the caller's and the conn's */
	u->sess = s;
	u->end.ops = &up_ops;
	u->conn = c;
	strcpy(u->key, key);
	h1_init(&u->resp, HTTP_RESPONSE, &resp_cbs, u);
	u->resp.keep_trailers = w->o.h1_trailers;	/* http1.enable_trailers */
	conn_attach(c, CONN_DOWN, &u->end);
	struct conn_info *ci = conn_info(c);
	ci->kind = CONN_OUTBOUND;
	if (w->o.pod_ip.ss_family)
		ci->src = w->o.pod_ip;
	else if (self->naddrs)
		ci->src = self->addrs[0];
	ci->orig_dst = *target;
	ci->target = *target;
	ci->mtls = dst->enrolled;
	ci->via_waypoint = true;
	if (s->service && !(ci->service = strdup(s->service)))
		goto nomem;
	if (proxy_peer_fill(&ci->source, self, w->trust_domain) ||
	    proxy_peer_fill(&ci->destination, dst, w->trust_domain))
		goto nomem;
	if (traceparent && strlen(traceparent) < sizeof(ci->parent_traceparent))
		strcpy(ci->parent_traceparent, traceparent);
	conn_opened(c);
	w->upstreams_opened++;
	if (!dst->enrolled) {
		err = connect_plain(w, c, target);
	} else {
		const struct model_node *node = dst->node ? model_node_by_name(m, dst->node) : NULL;
		struct hbone_request req = { 0 };
		struct hbone_header hdrs[3];
		char fwd[ADDR_STR_LEN + 16], bag[768];
		size_t nh = 0;
		/* hbone.dial: the endpoint's node agent (node form), or the endpoint pod's own
		 * IP:15008 (pod form, as ztunnel and Istio's waypoints send it). */
		if (mesh_hbone_dial(w->o.dial_pod, node ? &node->addr : NULL, NULL, target,
				    &ci->src, &req)) {
			conn_abort(c, CONN_UP, -EHOSTUNREACH, CONN_FLAG_NO_ROUTE,
				   "the endpoint's node is unknown");
			*why = "the endpoint's node is unknown";
			goto fail;
		}
		req.source = &self_id;
		req.expect = &dst_id;
		req.nexpect = 1;
		req.authority = addr;
		mesh_forwarded_for(&conn_info(s->down)->src, fwd, sizeof(fwd));
		mesh_baggage_of(self, bag, sizeof(bag));
		hdrs[nh++] = (struct hbone_header){ "forwarded", fwd };
		if (bag[0])
			hdrs[nh++] = (struct hbone_header){ "baggage", bag };
		if (ci->traceparent[0])
			hdrs[nh++] = (struct hbone_header){ "traceparent", ci->traceparent };
		req.headers = hdrs;
		req.nheaders = nh;
		ci->via = req.dst;
		err = hbone_connect(w->pool, &req, c);
	}
	if (err) {
		*why = "cannot open a connection to the endpoint";
		conn_abort(c, CONN_UP, err, CONN_FLAG_UPSTREAM_CONNECT_FAILURE, *why);
		goto fail;
	}
	return u;
nomem:
	*why = "out of memory";
	conn_opened(c);
	conn_abort(c, CONN_DOWN, -ENOMEM, CONN_FLAG_OVERFLOW, "out of memory");
fail:
	u->sess = NULL;
	up_unref(u);
	return NULL;
}

/* ---------------------------------------------------------- sessions ---- */

static void retry_reset(struct wp_sess *s);

static void sess_ref(struct wp_sess *s)
{
	s->refs++;
}

static void sess_unref(struct wp_sess *s)
{
	struct waypoint *w = s->w;
	if (--s->refs > 0)
		return;
	if (s->prev)
		s->prev->next = s->next;
	else
		w->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	w->nsessions--;
	loop_timer_cancel(w->o.loop, &s->timer);
	loop_timer_cancel(w->o.loop, &s->rt_timer);
	retry_reset(s);
	wp_h2_sess_fini(s);
	h1_fini(&s->req);
	h1_buf_fini(&s->to_up);
	h1_buf_fini(&s->to_down);
	free(s->svc_ns);
	free(s->svc_name);
	free(s->service);
	free(s->rt_service);
	httproute_set_unref(s->rt_set);
	free(s->ep_uid);
	free(s->peer_identity);
	conn_peer_fini(&s->source);
	free(s);
}

static void sess_task(struct loop *l, void *arg);

void wp_sess_schedule(struct wp_sess *s)
{
	if (s->pumping) {
		s->again = true;
		return;
	}
	if (s->scheduled)
		return;
	sess_ref(s);
	if (loop_defer(s->w->o.loop, sess_task, s)) {
		pr_warn_rl("waypoint: cannot schedule a session (out of memory)");
		s->refs--;	/* never the last: the conn holds one */
		return;
	}
	s->scheduled = true;
}

static void sess_kick(struct conn_end *e)
{
	wp_sess_schedule(container_of(e, struct wp_sess, end));
}

static void sess_release(struct conn_end *e, int err)
{
	struct wp_sess *s = container_of(e, struct wp_sess, end);
	s->down = NULL;
	s->down_err = err;
	wp_sess_schedule(s);
	sess_unref(s);	/* the conn's reference; the scheduled task keeps it alive */
}

static const struct conn_end_ops sess_ops = {
	.name = "waypoint",
	.kick_write = sess_kick,
	.kick_read = sess_kick,
	.release = sess_release,
};

void wp_request_finish(struct wp_sess *s, struct span **spp, char **ep_uid, const struct wp_outcome *o)
{
	struct waypoint *w = s->w;
	struct span *sp = *spp;
	const char *dst_wl = o->dst ? o->dst->workload : NULL, *dst_ns = o->dst ? o->dst->namespace : NULL;
	const char *dst_pr = o->dst ? o->dst->principal : NULL, *error = o->error;
	int code = o->code;

	if (*ep_uid) {
		struct endpoint_stat *e = wp_ep_stat(w, *ep_uid, false);
		if (e && e->active)
			e->active--;
		free(*ep_uid);
		*ep_uid = NULL;
	}
	count_request(w, s, dst_wl, dst_ns, dst_pr, o);
	*spp = NULL;
	if (!sp)
		return;
	if (sp->recording) {
		if (code) {
			span_set_int(sp, "http.response.status_code", code);
			span_set_int(sp, "http.status_code", code);
		}
		if (o->grpc && o->grpc_status >= 0)
			span_set_int(sp, "rpc.grpc.status_code", o->grpc_status);
		/* destination.workload/namespace were set when the endpoint was picked, so a
		 * request whose upstream never connected still names it. */
		if (dst_pr)
			span_set_str(sp, "destination.principal", dst_pr);
		if (o->flag)
			span_set_str(sp, "response_flags", o->flag);
		char msg[SPAN_MAX_STATUS_LEN];
		if (error || code >= 500) {
			if (code)
				snprintf(msg, sizeof(msg), "HTTP %d%s%s", code, error ? ": " : "",
					 error ? error : "");
			else
				snprintf(msg, sizeof(msg), "%s", error);
			span_set_status(sp, SPAN_STATUS_ERROR, msg);
		} else if (o->grpc && h2map_grpc_is_server_error(o->grpc_status)) {
			/* OpenTelemetry's gRPC conventions: these codes are the server's failures */
			snprintf(msg, sizeof(msg), "gRPC status %d", o->grpc_status);
			span_set_status(sp, SPAN_STATUS_ERROR, msg);
		}
	}
	span_end(sp);
}

/* The retry state of the request in flight goes (its end, or the session's). */
static void retry_reset(struct wp_sess *s)
{
	loop_timer_cancel(s->w->o.loop, &s->retry_timer);
	loop_timer_cancel(s->w->o.loop, &s->try_timer);
	s->retry_wait = s->retry_answer = s->sent_over = false;
	s->retries = 0;
	s->pol.retries = 0;
	s->pol.per_try_ms = 0;
	h1_buf_fini(&s->sent);
	memset(&s->sent, 0, sizeof(s->sent));
	if (s->rt_try) {
		wp_route_fini(s->rt_try);
		free(s->rt_try);
		s->rt_try = NULL;
	}
}

/* Ends the HTTP/1.x request in flight: span, metrics, least-request accounting. */
static void request_end(struct wp_sess *s, int code, const char *flag, const char *error)
{
	loop_timer_cancel(s->w->o.loop, &s->rt_timer);
	retry_reset(s);
	struct wp_outcome o = { .code = code, .flag = flag, .error = error, .grpc_status = -1,
				.dst = s->up && s->up->conn ? &conn_info(s->up->conn)->destination : NULL,
				.service = s->rt_service };
	wp_request_finish(s, &s->span, &s->ep_uid, &o);
}

int wp_h1_local_answer(struct wp_sess *s, int code, const char *body, const char *location,
		       bool close)
{
	char cl[40], *loc = NULL;
	const char *lines[5];
	size_t n = 0, blen = body ? strlen(body) + 1 : 0;	/* the text and a newline */
	int err;

	if (location) {	/* a route's RequestRedirect: no body */
		if (asprintf(&loc, "location: %s", location) < 0)
			return -ENOMEM;
		lines[n++] = loc;
		blen = 0;
	} else {
		lines[n++] = "content-type: text/plain";
	}
	snprintf(cl, sizeof(cl), "content-length: %zu", blen);
	lines[n++] = cl;
	lines[n++] = "server: ambit-waypoint";
	if (close)
		lines[n++] = "connection: close";
	err = wp_h1_local_head(&s->to_down, code, lines, n, s->rt_resp);
	if (!err && blen && !s->req_head)
		err = h1_buf_printf(&s->to_down, "%s\n", body);
	free(loc);
	return err;
}

/* Answers the client ourselves (routing failure, bad request, upstream failure before any
 * byte of the response) and closes after it. */
static void local_reply_at(struct wp_sess *s, int code, const char *why, const char *flag,
			   const char *location)
{
	s->w->local_replies++;
	if (!s->resp_started && wp_h1_local_answer(s, code, why, location, true))
		pr_warn_rl("waypoint: cannot queue a local answer (out of memory)");
	request_end(s, code, flag, why);
	s->close_after = true;
	s->st = SS_CLOSING;
}

static void local_reply(struct wp_sess *s, int code, const char *why, const char *flag)
{
	local_reply_at(s, code, why, flag, NULL);
}

static void start_tunnel(struct wp_sess *s);

/* tracing_header_fn over a request head (header custom tags). */
static const char *tag_header(void *arg, const char *name, size_t *len)
{
	return h1_header(arg, name, len);
}

struct span *wp_request_span(struct wp_sess *s, const struct wp_req_head *rh, char tpbuf[64])
{
	struct waypoint *w = s->w;
	struct model *m;
	const struct model_workload *self = NULL;
	struct span_context parent;
	struct spiffe_id self_id;
	struct span *sp;
	char name[SPAN_MAX_NAME_LEN], ip[ADDR_STR_LEN], addr[ADDR_STR_LEN];
	bool has_parent;
	bool connect = strcmp(rh->method, "CONNECT") == 0;

	tpbuf[0] = '\0';
	if (!w->o.tracer)
		return NULL;
	/* The request's own context wins; else the inbound connection span is the parent. */
	has_parent = (rh->traceparent && tracecontext_parse(rh->traceparent, rh->tplen, &parent) == 0) ||
		     (s->down && conn_info(s->down)->traceparent[0] &&
		      tracecontext_parse(conn_info(s->down)->traceparent,
					 strlen(conn_info(s->down)->traceparent), &parent) == 0);
	m = model_current();
	waypoint_self(w, m, &self, &self_id);
	if (connect)
		snprintf(name, sizeof(name), "CONNECT");
	else
		snprintf(name, sizeof(name), "%s %.*s", rh->method, (int)MIN(rh->plen, 100), rh->path);
	/* Istio's settings for this waypoint (targetRefs naming its Gateway) */
	struct telemetry_subject subj = { .namespace = w->namespace ? w->namespace : "",
					  .name = w->name, .waypoint = true };
	struct tracing_pick *pk = malloc(sizeof(*pk));
	if (pk)
		tracing_pick(pk, &subj, false, rh->hdr, rh->hdr_arg);
	sp = span_start_opts(w->o.tracer, self_resource(w, self), name, SPAN_KIND_SERVER,
			     has_parent ? &parent : NULL, pk && pk->use ? &pk->opts : NULL);
	if (pk)
		tracing_pick_done(pk);
	free(pk);
	model_unref(m);
	if (!sp)
		return NULL;
	char *path = strndup(rh->path, rh->plen);
	span_set_str(sp, "http.request.method", rh->method);
	if (path)
		span_set_str(sp, "url.path", path);
	free(path);
	if (rh->host) {
		char *hs = strndup(rh->host, rh->hlen);
		if (hs)
			span_set_str(sp, "server.address", hs);
		free(hs);
	} else {
		span_set_str(sp, "server.address", sockaddr_str(&s->authority, addr, sizeof(addr)));
	}
	span_set_str(sp, "network.protocol.name", "http");
	span_set_str(sp, "network.protocol.version", rh->version);
	if (s->service)
		span_set_str(sp, "destination.service", s->service);
	if (s->source.workload)
		span_set_str(sp, "source.workload", s->source.workload);
	if (s->source.namespace)
		span_set_str(sp, "source.namespace", s->source.namespace);
	if (s->source.principal)
		span_set_str(sp, "source.principal", s->source.principal);
	if (s->down)
		span_set_str(sp, "client.address",
			     sockaddr_ip_str(&conn_info(s->down)->src, ip, sizeof(ip)));
	span_set_str(sp, "waypoint", w->name);
	tracecontext_format(&sp->ctx, tpbuf, 64);
	return sp;
}

void wp_span_grpc(struct span *sp, const char *path, size_t plen)
{
	const char *svc, *meth;
	size_t sl, ml;
	if (!sp)
		return;
	span_set_str(sp, "rpc.system", "grpc");
	if (h2map_grpc_method(path, plen, &svc, &sl, &meth, &ml) == 0) {
		char *a = strndup(svc, sl), *b = strndup(meth, ml);
		if (a && b) {
			span_set_str(sp, "rpc.service", a);
			span_set_str(sp, "rpc.method", b);
		}
		free(a);
		free(b);
	}
}

/* A request head is complete: route it, open or reuse an upstream, write the head. */
static int sess_on_req_head(struct h1 *h, struct h1_buf *out, void *arg)
{
	struct wp_sess *s = arg;
	struct waypoint *w = s->w;
	struct model *m = model_current();
	struct sockaddr_storage target;
	const struct model_workload *dst;
	size_t ulen = 0, tlen = 0, hlen = 0;
	const char *url = h1_url(h, &ulen), *tp = h1_header(h, "traceparent", &tlen);
	const char *host = h1_header(h, "host", &hlen);
	char tpbuf[64] = "", ip[ADDR_STR_LEN];
	char amsg[300];
	const char *why = NULL, *flag = CONN_FLAG_NO_ROUTE;
	struct wp_route rt = { 0 };
	struct wp_h1_edits ed = { 0 };
	bool denied = false;
	size_t plen = 0, qend;
	int rc = 0, code = 503;

	while (plen < ulen && url[plen] != '?' && url[plen] != '#')
		plen++;	/* the URL is not NUL-terminated */
	for (qend = plen; qend < ulen && url[qend] != '#'; qend++)
		;
	w->requests++;
	/* "Upgrade: h2c" is not an upgrade here (Envoy ignores it): the request goes on as HTTP/1.1,
	 * without its upgrade fields */
	char *h2c_conn = NULL;
	int h2c = h1_ignore_h2c_upgrade(h, &h2c_conn);
	free(s->rt_service);
	s->rt_service = NULL;
	httproute_set_unref(s->rt_set);
	s->rt_set = NULL;
	s->rt_resp = NULL;
	loop_timer_cancel(w->o.loop, &s->rt_timer);
	s->rt_timeout_ms = 0;
	s->status = 0;
	s->resp_started = false;
	s->req_head = strcmp(h1_method(h), "HEAD") == 0;
	s->req_connect = strcmp(h1_method(h), "CONNECT") == 0;
	struct wp_req_head rh = { .method = h1_method(h), .path = url, .plen = plen, .host = host,
				  .hlen = hlen, .traceparent = tp, .tplen = tlen,
				  .version = h->p.http_minor ? "1.1" : "1.0", .hdr = tag_header,
				  .hdr_arg = h };
	s->span = wp_request_span(s, &rh, tpbuf);
	if (h2c < 0) {
		why = "out of memory";
		rc = -1;
		goto out;
	}
	/* The HTTPRoute rule is chosen first (Envoy picks the route before its filters run, so
	 * the rule's ResponseHeaderModifier is on every local answer, the RBAC filter's 403
	 * included) and acted on after authorization (the RBAC filter runs before the router: a
	 * denied request gets 403 whatever the route would answer). */
	struct req_headers rqh = { .h = h };
	struct hr_request hq = { .method = h1_method(h), .path = url, .plen = plen,
				 .query = plen < qend ? url + plen + 1 : NULL,
				 .qlen = plen < qend ? qend - plen - 1 : 0,
				 .header = req_header, .header_arg = &rqh };
	int rcode = wp_route_request(s, m, &hq, &rt, &why, &flag);
	free(rqh.buf);
	if ((s->rt_resp = wp_route_resp_mod(rt.rule))) {	/* local answers, sess_on_resp_head */
		s->rt_set = rt.set;
		httproute_set_ref(s->rt_set);
	}
	/* A request answered here without a body of ours to wait for (a denial, a redirect)
	 * leaves the connection open: its body is read and dropped, then the next request
	 * follows; unless the client waits for 100-continue, asked for an upgrade, or does not
	 * keep alive (Envoy keeps an HTTP/1.1 connection after a local reply likewise). */
	size_t elen;
	bool close = !h->keep_alive || h->upgrade || w->draining ||
		     h1_header(h, "expect", &elen) != NULL;
	if ((denied = request_denied(s, h, url, ulen, host, hlen, amsg, sizeof(amsg)))) {
		bool grpc = is_grpc_request(h);
		deny_reply(s, close, grpc);
		if (grpc)
			wp_span_grpc(s->span, url, plen);
		struct wp_outcome o = { .code = grpc ? 200 : 403, .flag = CONN_FLAG_DENIED,
					.error = amsg, .grpc = grpc, .grpc_status = grpc ? 7 : -1 };
		wp_request_finish(s, &s->span, &s->ep_uid, &o);
		goto answered;
	}
	wp_route_span(&rt, s->span);
	code = rcode;
	if (code && rt.location) {	/* a RequestRedirect */
		s->w->local_replies++;
		if (wp_h1_local_answer(s, code, NULL, rt.location, close)) {
			why = "out of memory";
			code = 503;
			rc = -1;
			goto out;
		}
		request_end(s, code, NULL, NULL);
		goto answered;
	}
	if (code) {
		rc = -1;
		goto out;
	}
	code = 503;
	s->rt_timeout_ms = rt.timeout_ms;
	if (rt.service && !(s->rt_service = strdup(rt.service))) {
		why = "out of memory";
		rc = -1;
		goto out;
	}
	dst = wp_pick_route(w, s, m, &rt, &target);
	if (!dst) {
		why = "no healthy upstream";
		rc = -1;
		goto out;
	}
	if (s->span) {
		span_set_str(s->span, "destination.workload", dst->name);
		span_set_str(s->span, "destination.namespace", dst->namespace);
		span_set_str(s->span, "destination.address", sockaddr_ip_str(&target, ip, sizeof(ip)));
		span_set_int(s->span, "destination.port", sockaddr_port(&target));
	}
	if (protocol_is_h2(s->proto) && !s->req_connect && !h->upgrade) {
		/* an http2/grpc port: the request goes as HTTP/2, its body decoded into DATA */
		s->rt_cur = &rt;
		rc = wp_h2_h1c_request(s, h, m, dst, &target, tpbuf, &why);
		s->rt_cur = NULL;
		if (!rc)
			h->chunked_out = false;
		goto out;
	}
	s->up = wp_up_get(s, m, dst, &target, tpbuf[0] ? tpbuf : NULL, true, &why);
	if (!s->up) {
		rc = -1;
		goto out;
	}
	struct endpoint_stat *e = wp_ep_stat(w, dst->uid, true);
	if (e) {
		e->active++;
		e->total++;
		s->ep_uid = strdup(dst->uid);
	}
	/* The request carries the request span's context to the application (W3C §3), and
	 * the route's header edits and URL rewrite. */
	if (wp_h1_edits(rt.rule ? &rt.rule->req : NULL, tpbuf[0] ? "traceparent" : NULL, tpbuf, &ed) ||
	    (rt.rw_host && wp_h1_edits_replace(&ed, "host", rt.rw_host)) ||
	    (h2c > 0 && (wp_h1_edits_drop(&ed, "upgrade") || wp_h1_edits_drop(&ed, "http2-settings") ||
			 (h2c_conn ? wp_h1_edits_replace(&ed, "connection", h2c_conn) :
				     wp_h1_edits_drop(&ed, "connection")))) ||
	    h1_format_head_url(h, out, rt.rw_target, ed.drop, ed.extra, (size_t)ed.nextra)) {
		why = "out of memory";
		rc = -1;
		goto out;
	}
	/* Retries as on the HTTP/2 path (its policy: the default, or the rule's retry); not for
	 * an upgrade or CONNECT, whose bytes after the answer are not HTTP. */
	retry_reset(s);
	wp_retry_policy_of(rt.rule, &s->pol);
	snprintf(s->tp, sizeof(s->tp), "%s", tpbuf);
	if (s->req_connect || h->upgrade || !(s->rt_try = calloc(1, sizeof(*s->rt_try))) ||
	    wp_route_copy(s->rt_try, &rt))
		s->pol.retries = 0;
	goto out;
answered:
	if (close) {
		s->close_after = true;
		s->st = SS_CLOSING;
		rc = -1;
	} else {
		s->answered = true;
	}
out:
	if (rc && !denied && s->st != SS_CLOSING)
		local_reply_at(s, code, why, flag, NULL);
	wp_h1_edits_fini(&ed);
	wp_route_fini(&rt);
	model_unref(m);
	free(h2c_conn);
	return rc;
}

static const struct h1_cbs req_cbs = { .on_head = sess_on_req_head };

static int sess_on_resp_head(struct h1 *h, struct h1_buf *out, void *arg)
{
	struct wp_up *u = arg;
	struct wp_sess *s = u->sess;
	int status = h1_status(h);

	if (u->h2s)
		return wp_h2_h1_resp_head(u->h2s, h);
	struct wp_h1_edits ed;
	int err;

	if (!s)
		return -1;
	struct wp_h2_attempt a = { .client_waits = s->down != NULL, .answered = s->resp_started,
				   .body_gone = s->sent_over, .retries = s->retries };
	if (status >= 200 && status != 101 && wp_h2_retry_on_answer(&a, &s->pol, status, -1)) {
		s->retry_answer = true;	/* this answer goes nowhere: up_step retries */
		s->status = status;
		return -1;
	}
	if (status >= 200 || status == 101)
		s->status = status;
	s->resp_started = true;
	/* Closing the client connection after this answer: say so (RFC 9112 §9.6). The route's
	 * ResponseHeaderModifier edits final answers (Envoy: response_headers_to_add). */
	bool closing = status >= 200 && (s->close_after || s->w->draining) && !s->req_connect;
	err = wp_h1_edits(status >= 200 ? s->rt_resp : NULL, closing ? "connection" : NULL, "close", &ed);
	err = err ? err : h1_format_head(h, out, ed.drop, ed.extra, (size_t)ed.nextra);
	wp_h1_edits_fini(&ed);
	if (err)
		return -1;
	if (s->req_head)
		return H1_HEAD_NO_BODY;
	if (s->req_connect && status >= 200 && status < 300)
		return H1_HEAD_TUNNEL;
	return 0;
}

/* The request in flight is over; the next one has no answer yet (a local reply to it, for a
 * malformed head, is due, without the last one's route edits). */
static void sess_next_request(struct wp_sess *s)
{
	httproute_set_unref(s->rt_set);
	s->rt_set = NULL;
	s->rt_resp = NULL;
	s->resp_started = false;
	s->req_head = false;
	s->status = 0;
	s->st = SS_HEAD;
}

/* The response is complete: account it, hand the upstream back, and go on with the next
 * request (pipelined bytes may already wait) or close. */
static void response_done(struct wp_sess *s)
{
	struct wp_up *u = s->up;
	bool req_done = s->st == SS_RESPONSE;
	bool keep = s->req.keep_alive && u->resp.keep_alive && !s->close_after && !s->w->draining;

	request_end(s, s->status, NULL, NULL);
	s->up = NULL;
	wp_up_put(u, keep && req_done, req_done);
	if (!req_done || !keep) {
		s->close_after = true;
		s->st = SS_CLOSING;
		return;
	}
	if (s->req.st == H1_ST_UPGRADED) {
		/* An upgrade the server declined: the connection goes on as HTTP/1.1. */
		h1_fini(&s->req);
		h1_init(&s->req, HTTP_REQUEST, &req_cbs, s);
		s->req.keep_trailers = s->w->o.h1_trailers;
	} else {
		h1_next(&s->req);
	}
	sess_next_request(s);
}

/* Not HTTP (or an upgrade): pick an endpoint and splice raw bytes. */
static void start_tunnel(struct wp_sess *s)
{
	struct model *m = model_current();
	struct sockaddr_storage target;
	const struct model_workload *dst = wp_pick(s->w, s, m, &target);
	const char *why = "no healthy upstream";
	char tp[64] = "";

	loop_timer_cancel(s->w->o.loop, &s->timer);
	s->st = SS_TUNNEL;
	s->w->tunnels++;
	if (s->down)
		strcpy(tp, conn_info(s->down)->traceparent);
	/* A stream that is not HTTP/1.x is checked once, as TCP: an L7 policy cannot be
	 * sidestepped by speaking another protocol. */
	struct authz_set *set = wp_authz_current();
	char amsg[300];
	bool denied = wp_policy_denies(s, set, NULL, s->span, amsg, sizeof(amsg));
	authz_set_unref(set);
	if (denied) {
		model_unref(m);
		pr_debug("waypoint: TCP stream for %s from %s refused: %s",
			 s->service ? s->service : "?", s->peer_identity ? s->peer_identity : "?", amsg);
		if (s->down)
			conn_abort(s->down, CONN_UP, -EACCES, CONN_FLAG_DENIED, amsg);
		return;
	}
	if (dst)
		s->up = wp_up_get(s, m, dst, &target, tp[0] ? tp : NULL, false, &why);
	model_unref(m);
	if (!s->up && s->down) {
		pr_warn_rl("waypoint: TCP stream for %s: %s", s->service ? s->service : "?", why);
		conn_abort(s->down, CONN_UP, -EHOSTUNREACH, CONN_FLAG_NO_ROUTE, why);
	}
}

static bool flush(struct h1_buf *b, struct conn *c, enum conn_side side)
{
	bool progress = false;
	while (c && h1_buf_pending(b)) {
		size_t k = conn_in_write(c, side, h1_buf_head(b), h1_buf_pending(b));
		if (!k)
			break;
		h1_buf_consume(b, k);
		progress = true;
	}
	return progress;
}

/* Raw copy from one conn's out side to another's in side, EOF included. */
static bool splice_raw(struct conn **from, enum conn_side from_side, struct conn **to,
		       enum conn_side to_side, bool *eof_passed)
{
	const uint8_t *p;
	size_t n;
	bool progress = false;

	while (*from && *to && (n = conn_out_peek(*from, from_side, &p)) > 0) {
		size_t k = conn_in_write(*to, to_side, p, n);
		if (!k || !*from)
			break;
		conn_out_consume(*from, from_side, k);
		progress = true;
	}
	if (*from && *to && !*eof_passed && conn_out_eof(*from, from_side)) {
		*eof_passed = true;
		conn_in_eof(*to, to_side);
		if (*from)
			conn_out_done(*from, from_side);
		progress = true;
	}
	return progress;
}

static void close_wait_fire(struct loop *l, struct loop_timer *t)
{
	struct wp_sess *s = t->arg;
	(void)l;
	if (s->down)
		conn_abort(s->down, CONN_UP, -ETIMEDOUT, CONN_FLAG_DOWNSTREAM_RESET,
			   "client did not close after the last response");
}

static void sniff_fire(struct loop *l, struct loop_timer *t)
{
	struct wp_sess *s = t->arg;
	(void)l;
	if (s->st == SS_SNIFF && s->down) {
		/* A protocol where the server speaks first: pass it as TCP. */
		sess_ref(s);
		start_tunnel(s);
		wp_sess_schedule(s);
		sess_unref(s);
	}
}

/* The route timeout of the request in flight expired (Envoy: 504, UT). No answer yet: 504;
 * else the client connection is cut. The upstream connection is reset, never reused, so its
 * late answer goes nowhere. */
static void rt_timeout_fire(struct loop *l, struct loop_timer *t)
{
	struct wp_sess *s = t->arg;
	struct wp_up *u = s->up;
	(void)l;
	if (s->st != SS_RESPONSE || !s->down || (!u && !s->h2x && !s->retry_wait))
		return;
	sess_ref(s);
	pr_debug("waypoint: %s: %s after %" PRIu64 " ms", s->service ? s->service : "?",
		 WP_TIMEOUT_WHY, s->rt_timeout_ms);
	if (s->h2x) {
		wp_h2_h1c_timeout(s);
	} else if (!s->resp_started) {
		local_reply(s, 504, WP_TIMEOUT_WHY, WP_FLAG_TIMEOUT);	/* reads s->up's facts */
	} else {
		request_end(s, s->status, WP_FLAG_TIMEOUT, WP_TIMEOUT_WHY);
		conn_abort(s->down, CONN_UP, -ETIMEDOUT, WP_FLAG_TIMEOUT, WP_TIMEOUT_WHY);
	}
	if (u && s->up == u) {
		s->up = NULL;
		wp_up_put(u, false, false);
	}
	wp_sess_schedule(s);
	sess_unref(s);
}

/* The upstream went away (reset, refused, closed). */
/* Another try of s's request (its upstream let go): another endpoint than the last when there
 * is one, the kept bytes sent again. */
static void retry_go(struct wp_sess *s)
{
	struct waypoint *w = s->w;
	struct model *m;
	const struct model_workload *dst = NULL;
	struct sockaddr_storage target;
	const char *why = "no healthy upstream";
	char ip[ADDR_STR_LEN];

	if (!s->down || s->up || (s->st != SS_BODY && s->st != SS_RESPONSE))
		return;
	m = model_current();
	for (int i = 0; i < WP_H2_RETRY_PICKS; i++) {
		dst = wp_pick_route(w, s, m, s->rt_try, &target);
		if (!dst || !s->ep_uid || strcmp(dst->uid, s->ep_uid) != 0)
			break;
	}
	struct endpoint_stat *e = s->ep_uid ? wp_ep_stat(w, s->ep_uid, false) : NULL;
	if (e && e->active)
		e->active--;
	free(s->ep_uid);
	s->ep_uid = NULL;
	if (dst)
		s->up = wp_up_get(s, m, dst, &target, s->tp[0] ? s->tp : NULL, true, &why);
	if (s->up) {
		h1_buf_consume(&s->to_up, h1_buf_pending(&s->to_up));
		if (h1_buf_append(&s->to_up, h1_buf_head(&s->sent), h1_buf_pending(&s->sent))) {
			struct wp_up *u = s->up;
			s->up = NULL;
			wp_up_put(u, false, false);
			why = "out of memory";
		}
	}
	if (!s->up) {
		local_reply(s, 503, why, dst ? CONN_FLAG_UPSTREAM_CONNECT_FAILURE : CONN_FLAG_NO_ROUTE);
		model_unref(m);
		return;
	}
	if ((e = wp_ep_stat(w, dst->uid, true))) {
		e->active++;
		e->total++;
		s->ep_uid = strdup(dst->uid);
	}
	if (s->span) {
		span_set_str(s->span, "destination.workload", dst->name);
		span_set_str(s->span, "destination.namespace", dst->namespace);
		span_set_str(s->span, "destination.address", sockaddr_ip_str(&target, ip, sizeof(ip)));
		span_set_int(s->span, "destination.port", sockaddr_port(&target));
		span_set_int(s->span, "retry.count", s->retries);
	}
	if (s->st == SS_RESPONSE)
		wp_route_deadline(w, &s->try_timer, s->pol.per_try_ms);
	model_unref(m);
	wp_sess_schedule(s);
}

static void retry_fire(struct loop *l, struct loop_timer *t)
{
	struct wp_sess *s = t->arg;
	(void)l;
	if (!s->retry_wait)
		return;
	s->retry_wait = false;
	sess_ref(s);
	retry_go(s);
	wp_sess_schedule(s);
	sess_unref(s);
}

/* s's try failed before any answer, or its answer asked for a retry: the next one goes after
 * the policy's back-off (at once when it draws 0). */
static void retry_start(struct wp_sess *s)
{
	uint64_t ms;
	loop_timer_cancel(s->w->o.loop, &s->try_timer);
	s->retries++;
	ms = wp_retry_backoff_ms(&s->pol, s->retries, (uint32_t)random());
	if (ms && loop_timer_arm(s->w->o.loop, &s->retry_timer, ms) == 0) {
		s->retry_wait = true;
		return;
	}
	retry_go(s);
}

static void up_gone(struct wp_sess *s)
{
	struct wp_up *u = s->up;
	int err = u->err;
	char why[160];

	snprintf(why, sizeof(why), "upstream %s: %s",
		 s->resp_started ? "reset" : "connect failed",
		 err ? strerror(-err) : "closed");
	if (s->st == SS_TUNNEL) {
		s->up = NULL;
		up_unref(u);
		if (err && s->down)
			conn_abort(s->down, CONN_UP, err, CONN_FLAG_UPSTREAM_RESET, why);
		return;
	}
	s->up = NULL;
	struct wp_h2_attempt a = { .client_waits = s->down != NULL, .answered = s->resp_started,
				   .body_gone = s->sent_over, .retries = s->retries };
	if (wp_h2_retry_on_failure(&a, &s->pol, 0, true)) {	/* nothing answered: connect-failure */
		pr_debug("waypoint: %s: %s, retried", s->service ? s->service : "?", why);
		retry_start(s);
	} else if (s->down && !s->resp_started) {
		s->up = u;	/* request_end reads its facts */
		local_reply(s, 503, why, s->resp_started ? CONN_FLAG_UPSTREAM_RESET
							 : CONN_FLAG_UPSTREAM_CONNECT_FAILURE);
		s->up = NULL;
	} else {
		request_end(s, s->status ? s->status : 502, CONN_FLAG_UPSTREAM_RESET, why);
		if (s->down)
			conn_abort(s->down, CONN_UP, err ? err : -ECONNRESET, CONN_FLAG_UPSTREAM_RESET,
				   why);
	}
	up_unref(u);
}

/* The upstream side of an HTTP exchange: request bytes out, response bytes in. */
static bool up_step(struct wp_sess *s)
{
	struct wp_up *u = s->up;
	bool progress = false;
	const uint8_t *p;
	size_t n;

	if (!u->conn) {
		up_gone(s);
		return true;
	}
	progress |= flush(&s->to_up, u->conn, CONN_DOWN);
	if (!u->conn)
		return true;
	while (s->up == u && u->conn && h1_buf_pending(&s->to_down) < WP_STAGE_MAX &&
	       (n = conn_out_peek(u->conn, CONN_DOWN, &p)) > 0) {
		size_t k = h1_feed(&u->resp, p, MIN(n, WP_FEED_MAX), &s->to_down);
		if (u->conn)
			conn_out_consume(u->conn, CONN_DOWN, k);
		progress |= k > 0;
		if (u->resp.st == H1_ST_DONE && u->resp.p.status_code < 200 &&
		    u->resp.p.status_code != 101) {
			h1_next(&u->resp);	/* 1xx interim answer: the final one follows */
			continue;
		}
		if (u->resp.st != H1_ST_HEAD && u->resp.st != H1_ST_BODY)
			break;
		if (!k)
			break;
	}
	if (s->up != u)
		return true;
	if (u->conn && (u->resp.st == H1_ST_HEAD || u->resp.st == H1_ST_BODY) &&
	    conn_out_eof(u->conn, CONN_DOWN)) {
		/* A body delimited by the close (RFC 9112 §6.3 item 8), or a cut-short answer. */
		h1_feed_eof(&u->resp, &s->to_down);
		conn_out_done(u->conn, CONN_DOWN);
		s->close_after = true;
		progress = true;
	}
	switch (u->resp.st) {
	case H1_ST_DONE:
		if (s->st == SS_RESPONSE || s->st == SS_BODY) {
			response_done(s);
			return true;
		}
		break;
	case H1_ST_UPGRADED:
		/* 101 Switching Protocols, or 2xx to CONNECT: raw from here (RFC 9110 §7.8). */
		request_end(s, s->status, NULL, NULL);
		s->st = SS_TUNNEL;
		return true;
	case H1_ST_ERROR: {
		char why[128];
		if (s->retry_answer) {
			s->retry_answer = false;
			s->up = NULL;
			wp_up_put(u, false, false);	/* the rest of that answer is not read */
			retry_start(s);
			return true;
		}
		snprintf(why, sizeof(why), "bad response from the upstream: %s",
			 u->resp.error ? u->resp.error : "?");
		s->up = NULL;
		if (!s->resp_started) {
			s->up = u;
			local_reply(s, 502, why, CONN_FLAG_UPSTREAM_RESET);
			s->up = NULL;
		} else {
			request_end(s, 502, CONN_FLAG_UPSTREAM_RESET, why);
			if (s->down)
				conn_abort(s->down, CONN_UP, -EPROTO, CONN_FLAG_UPSTREAM_RESET, why);
		}
		wp_up_put(u, false, false);
		return true;
	}
	default:
		if (u->conn == NULL) {
			up_gone(s);
			return true;
		}
		break;
	}
	return progress;
}

/* What s's request put into to_up past its first `before` bytes is kept for a retry, while
 * a retry is left, nothing of the answer went to the client and it all fits. */
static void keep_sent(struct wp_sess *s, size_t before)
{
	size_t n = h1_buf_pending(&s->to_up);
	if (n <= before || s->sent_over || s->pol.retries <= s->retries || s->resp_started ||
	    (!s->up && !s->retry_wait))
		return;
	if (h1_buf_pending(&s->sent) + (n - before) > WP_STAGE_MAX ||
	    h1_buf_append(&s->sent, h1_buf_head(&s->to_up) + before, n - before)) {
		s->sent_over = true;	/* no retry: what left is not all kept */
		h1_buf_fini(&s->sent);
		memset(&s->sent, 0, sizeof(s->sent));
	}
}

/* The client side: sniff, parse requests, or copy raw. */
static bool down_step(struct wp_sess *s)
{
	const uint8_t *p;
	size_t n;
	bool progress = false;

	switch (s->st) {
	case SS_SNIFF:
		if (!protocol_is_http(s->proto)) {
			/* declared TCP, TLS, a database protocol...: no sniffing, no waiting for
			 * a server that speaks first */
			start_tunnel(s);
			return true;
		}
		n = conn_out_peek(s->down, CONN_UP, &p);
		if (n) {
			/* h2c with prior knowledge (RFC 9113 §3.3): every stream its own request */
			enum protocol_sniff k2 = protocol_sniff_h2(p, n);
			if (k2 == PROTOCOL_SNIFF_MORE && !conn_out_eof(s->down, CONN_UP) &&
			    conn_out_pending(s->down, CONN_UP) == n)
				return false;
			if (k2 == PROTOCOL_SNIFF_H2) {
				loop_timer_cancel(s->w->o.loop, &s->timer);
				if (wp_h2_start(s))
					conn_abort(s->down, CONN_UP, -ENOMEM, CONN_FLAG_OVERFLOW,
						   "out of memory");
				return true;
			}
			enum h1_sniff k = h1_sniff(p, n);
			if (k == H1_SNIFF_MORE && conn_out_pending(s->down, CONN_UP) < 16 &&
			    !conn_out_eof(s->down, CONN_UP))
				return false;
			loop_timer_cancel(s->w->o.loop, &s->timer);
			if (k == H1_SNIFF_HTTP) {
				s->st = SS_HEAD;
				return true;
			}
			start_tunnel(s);
			return true;
		}
		if (conn_out_eof(s->down, CONN_UP)) {
			/* Closed without a byte: nothing to forward. */
			loop_timer_cancel(s->w->o.loop, &s->timer);
			s->client_eof = true;
			conn_out_done(s->down, CONN_UP);
			s->st = SS_CLOSING;
			s->close_after = true;
			return true;
		}
		return false;
	case SS_HEAD:
	case SS_BODY:
		while (s->down && s->req.st != H1_ST_ERROR && h1_buf_pending(&s->to_up) < WP_STAGE_MAX &&
		       (s->req.st == H1_ST_HEAD || s->req.st == H1_ST_BODY) &&
		       (n = conn_out_peek(s->down, CONN_UP, &p)) > 0) {
			size_t before = h1_buf_pending(&s->to_up);
			size_t k = h1_feed(&s->req, p, MIN(n, WP_FEED_MAX), &s->to_up);
			keep_sent(s, before);
			if (s->down && k)
				conn_out_consume(s->down, CONN_UP, k);
			if (s->answered)	/* the body of a request answered here goes nowhere */
				h1_buf_consume(&s->to_up, h1_buf_pending(&s->to_up));
			progress |= k > 0;
			if (s->st == SS_CLOSING)
				return true;	/* answered locally (routing failed) */
			if (s->req.st == H1_ST_BODY)
				s->st = SS_BODY;
			if (!k)
				break;
		}
		if (!s->down)
			return true;
		if (s->req.st == H1_ST_ERROR) {
			if (s->st != SS_CLOSING) {
				int code = s->req.error_status ? s->req.error_status : 400;
				if (s->up) {
					struct wp_up *u = s->up;
					s->up = NULL;
					wp_up_put(u, false, false);
				}
				wp_h2_h1c_end(s, NULL, s->req.error ? s->req.error : "bad request");
				local_reply(s, code, s->req.error ? s->req.error : "bad request", NULL);
			}
			return true;
		}
		if (s->req.st == H1_ST_DONE && s->answered) {
			/* answered already (403, a redirect): on with the next request */
			s->answered = false;
			h1_next(&s->req);
			sess_next_request(s);
			return true;
		}
		if (s->req.st == H1_ST_DONE || s->req.st == H1_ST_UPGRADED) {
			if (s->up || s->h2x) {
				s->st = SS_RESPONSE;
				/* the route's timeout runs from the end of the request (Envoy's), and
				 * the try's (an HTTP/1.1 upstream's; the HTTP/2 path times its own) */
				wp_route_deadline(s->w, &s->rt_timer, s->rt_timeout_ms);
				if (s->up)
					wp_route_deadline(s->w, &s->try_timer, s->pol.per_try_ms);
			}
			return true;
		}
		if (conn_out_eof(s->down, CONN_UP)) {
			s->client_eof = true;
			conn_out_done(s->down, CONN_UP);
			if (s->st == SS_HEAD && h1_idle(&s->req)) {
				s->st = SS_CLOSING;	/* a clean close between requests */
				s->close_after = true;
			} else if (s->h2x) {
				wp_h2_h1c_end(s, CONN_FLAG_DOWNSTREAM_RESET, "client closed inside a request");
				if (s->down)
					conn_abort(s->down, CONN_UP, -ECONNRESET,
						   CONN_FLAG_DOWNSTREAM_RESET, "client closed inside a request");
			} else if (s->up) {
				/* Cut inside a request: the upstream gets a reset. */
				struct wp_up *u = s->up;
				s->up = NULL;
				request_end(s, 0, CONN_FLAG_DOWNSTREAM_RESET,
					    "client closed inside a request");
				wp_up_put(u, false, false);
				if (s->down)
					conn_abort(s->down, CONN_UP, -ECONNRESET,
						   CONN_FLAG_DOWNSTREAM_RESET, "client closed inside a request");
			} else {
				s->st = SS_CLOSING;
				s->close_after = true;
			}
			return true;
		}
		return progress;
	case SS_RESPONSE:
		/* Pipelined requests wait in the conn's buffer (its bound is the backpressure). */
		if (!s->client_eof && conn_out_pending(s->down, CONN_UP) == 0 &&
		    conn_out_eof(s->down, CONN_UP)) {
			s->client_eof = true;
			s->close_after = true;
			conn_out_done(s->down, CONN_UP);
			return true;
		}
		return false;
	case SS_TUNNEL:
		if (!s->up)
			return false;
		progress |= flush(&s->to_up, s->up->conn, CONN_DOWN);
		if (!h1_buf_pending(&s->to_up))
			progress |= splice_raw(&s->down, CONN_UP, &s->up->conn, CONN_DOWN, &s->client_eof);
		if (s->up && s->up->conn && !h1_buf_pending(&s->to_down)) {
			bool eof_passed = s->eof_to_client;
			progress |= splice_raw(&s->up->conn, CONN_DOWN, &s->down, CONN_UP, &eof_passed);
			s->eof_to_client = eof_passed;
		}
		return progress;
	case SS_H2:
		return wp_h2_step(s);
	case SS_CLOSING:
		while (s->down && (n = conn_out_peek(s->down, CONN_UP, &p)) > 0) {
			conn_out_consume(s->down, CONN_UP, n);
			progress = true;
		}
		if (s->down && !s->client_eof && conn_out_eof(s->down, CONN_UP)) {
			s->client_eof = true;
			conn_out_done(s->down, CONN_UP);
			progress = true;
		}
		return progress;
	}
	return false;
}

/* The client went away: reset whatever serves it. */
static void sess_teardown(struct wp_sess *s)
{
	loop_timer_cancel(s->w->o.loop, &s->timer);
	loop_timer_cancel(s->w->o.loop, &s->rt_timer);
	loop_timer_cancel(s->w->o.loop, &s->retry_timer);
	loop_timer_cancel(s->w->o.loop, &s->try_timer);
	s->retry_wait = false;
	wp_h2_sess_fini(s);
	if (s->span)
		request_end(s, s->status, CONN_FLAG_DOWNSTREAM_RESET,
			    s->down_err ? "client connection reset" : "client closed");
	if (s->up) {
		struct wp_up *u = s->up;
		s->up = NULL;
		wp_up_put(u, false, s->st == SS_TUNNEL && !s->down_err);
	}
}

static void sess_step(struct wp_sess *s)
{
	for (int i = 0; i < WP_STEPS_MAX; i++) {
		bool progress = false;
		if (!s->down) {
			sess_teardown(s);
			return;
		}
		progress |= flush(&s->to_down, s->down, CONN_UP);
		if (s->up && s->st != SS_TUNNEL)
			progress |= up_step(s);
		else if (s->h2x)
			progress |= wp_h2_h1c_step(s);
		else if (s->up && !s->up->conn)
			progress |= (up_gone(s), true);
		if (!s->down)
			continue;
		progress |= flush(&s->to_down, s->down, CONN_UP);
		if (!s->down)
			continue;
		progress |= down_step(s);
		if (!s->down)
			continue;
		if (s->close_after && !s->up && !s->h2x && !s->eof_to_client && s->st == SS_CLOSING &&
		    !h1_buf_pending(&s->to_down)) {
			s->eof_to_client = true;
			conn_in_eof(s->down, CONN_UP);
			if (s->down && !s->client_eof) {
				s->timer.fn = close_wait_fire;
				loop_timer_arm(s->w->o.loop, &s->timer, WP_CLOSE_WAIT_MS);
			}
			progress = true;
		}
		if (!progress)
			return;
	}
	wp_sess_schedule(s);	/* more to do: after other connections had their turn */
}

static void sess_task(struct loop *l, void *arg)
{
	struct wp_sess *s = arg;
	(void)l;
	s->scheduled = false;
	s->pumping = true;
	do {
		s->again = false;
		sess_step(s);
	} while (s->again);
	s->pumping = false;
	sess_unref(s);	/* the task's */
}

/* ---------------------------------------------------------- inbound ---- */

static int on_connect(void *arg, const struct hbone_inbound *req)
{
	struct waypoint *w = arg;
	struct model *m = model_current();
	const struct model_service *me = model_service_by_name(m, w->namespace, w->name);
	const struct model_service *svc = model_service_by_vip(m, &req->target);
	const struct model_workload *self, *srcw, *wl = NULL;
	struct spiffe_id self_id;
	struct sockaddr_storage src;
	char reason[256], pid[SPIFFE_ID_STR_MAX];
	struct wp_sess *s = NULL;
	struct conn *c = NULL;
	int err = 0;

	if (w->draining) {
		hbone_stream_respond(req->end, 503, "waypoint is draining");
		goto out;
	}
	if (!me || waypoint_self(w, m, &self, &self_id)) {
		hbone_stream_respond(req->end, 503, "waypoint not ready: its own workload is unknown");
		goto out;
	}
	if (svc) {
		if (model_waypoint_for(m, svc, NULL) != me) {
			snprintf(reason, sizeof(reason), "service %s/%s does not use waypoint %s/%s",
				 svc->namespace, svc->name, w->namespace, w->name);
			hbone_stream_respond(req->end, 403, reason);
			goto out;
		}
		if (!model_service_target_port(svc, sockaddr_port(&req->target))) {
			snprintf(reason, sizeof(reason), "service %s/%s has no port %u", svc->namespace,
				 svc->name, sockaddr_port(&req->target));
			hbone_stream_respond(req->end, 400, reason);
			goto out;
		}
	} else {
		wl = model_workload_by_ip(m, &req->target);
		if (!wl || model_waypoint_for(m, NULL, wl) != me) {
			snprintf(reason, sizeof(reason),
				 "%s is not a service or workload that uses waypoint %s/%s",
				 req->authority, w->namespace, w->name);
			hbone_stream_respond(req->end, wl ? 403 : 400, reason);
			goto out;
		}
	}
	s = calloc(1, sizeof(*s));
	struct conn_opts co = { .buffer_size = w->o.buffer_size };
	c = s ? conn_new(w->o.loop, &co) : NULL;
	if (!c) {
		free(s);
		err = -ENOMEM;
		goto out;
	}
	s->w = w;
	s->refs = 1;	/* the conn's */
	s->end.ops = &sess_ops;
	s->down = c;
	s->authority = req->target;
	s->st = SS_SNIFF;
	h1_init(&s->req, HTTP_REQUEST, &req_cbs, s);
	s->req.keep_trailers = w->o.h1_trailers;	/* http1.enable_trailers */
	loop_timer_init(&s->timer, sniff_fire, s);
	loop_timer_init(&s->rt_timer, rt_timeout_fire, s);
	loop_timer_init(&s->try_timer, rt_timeout_fire, s);
	loop_timer_init(&s->retry_timer, retry_fire, s);
	s->next = w->sessions;
	if (w->sessions)
		w->sessions->prev = s;
	w->sessions = s;
	w->nsessions++;
	conn_attach(c, CONN_DOWN, req->end);
	conn_attach(c, CONN_UP, &s->end);

	struct conn_info *ci = conn_info(c);
	ci->kind = CONN_INBOUND_HBONE;
	ci->orig_dst = req->target;
	ci->target = req->target;
	ci->via = req->peer_addr;
	ci->mtls = true;
	srcw = mesh_vouched_source(m, w->trust_domain, req, &src);
	ci->src = srcw ? src : req->peer_addr;
	s->src_ip = ci->src;
	s->dst_port = svc ? model_service_target_port(svc, sockaddr_port(&req->target))
			  : sockaddr_port(&req->target);
	s->proto = svc ? model_port_protocol(model_service_port(svc, sockaddr_port(&req->target)))
		       : PROTOCOL_UNKNOWN;
	bool nomem = false;
	if (req->peer_id)
		nomem |= !(s->peer_identity = strdup(spiffe_id_str(req->peer_id, pid)));
	if (svc) {
		nomem |= !(s->svc_ns = strdup(svc->namespace)) || !(s->svc_name = strdup(svc->name)) ||
			 !(s->service = proxy_service_fqdn(svc)) || !(ci->service = strdup(s->service));
	} else {
		nomem |= asprintf(&s->service, "%s.%s", wl->name, wl->namespace) < 0;
		if (nomem)
			s->service = NULL;
	}
	nomem |= proxy_peer_fill(&ci->source, srcw, w->trust_domain) != 0 ||
		 proxy_peer_fill(&ci->destination, self, w->trust_domain) != 0 ||
		 proxy_peer_fill(&s->source, srcw, w->trust_domain) != 0;
	if (!srcw && req->peer_id && !nomem) {
		ci->source.principal = strdup(spiffe_id_str(req->peer_id, pid));
		ci->source.namespace = strdup(req->peer_id->ns);
		s->source.principal = strdup(ci->source.principal ? ci->source.principal : "");
		s->source.namespace = strdup(req->peer_id->ns);
	}
	if (req->traceparent && strlen(req->traceparent) < sizeof(ci->parent_traceparent))
		strcpy(ci->parent_traceparent, req->traceparent);
	conn_opened(c);
	if (nomem) {
		conn_abort(c, CONN_DOWN, -ENOMEM, CONN_FLAG_OVERFLOW, "out of memory");
		goto out;
	}
	/* The tunnel is up as far as the client knows: 200 now (RFC 9113 §8.5); each request
	 * finds its own upstream. */
	conn_established(c);
	if (!protocol_is_http(s->proto))
		wp_sess_schedule(s);	/* straight to TCP */
	else if (w->o.sniff_timeout_ms)
		loop_timer_arm(w->o.loop, &s->timer, w->o.sniff_timeout_ms);
out:
	model_unref(m);
	return err;
}

/* The waypoint presents its own identity whatever the SNI asks for: the client checks it
 * (a mismatch fails there, with the client's reason, as Envoy's waypoint behaves). */
static struct tls_cert *select_cert(void *arg, const struct spiffe_id *id)
{
	struct waypoint *w = arg;
	struct model *m = model_current();
	struct spiffe_id self;
	struct tls_cert *cert = NULL;
	char a[SPIFFE_ID_STR_MAX], b[SPIFFE_ID_STR_MAX];

	if (waypoint_self(w, m, NULL, &self) == 0) {
		if (id && !spiffe_id_equal(id, &self))
			pr_debug("hbone: client asked for %s; presenting %s", spiffe_id_str(id, a),
				 spiffe_id_str(&self, b));
		cert = certstore_get(w->o.certs, &self);
		if (!cert) {
			char why[512];
			certstore_reason(w->o.certs, &self, why, sizeof(why));
			pr_warn_rl("hbone: handshake refused: %s", why[0] ? why : strerror(errno));
		}
	} else {
		pr_warn_rl("hbone: handshake refused: the waypoint's own workload is not in the model");
	}
	model_unref(m);
	return cert;
}

/* ---------------------------------------------------------- lifecycle ---- */

static void local_addrs(struct waypoint *w)
{
	struct ifaddrs *ifa, *i;
	if (getifaddrs(&ifa) == -1)
		return;
	for (i = ifa; i && w->nlocal < (int)ARRAY_SIZE(w->local_ips); i = i->ifa_next) {
		if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET &&
				     i->ifa_addr->sa_family != AF_INET6))
			continue;
		memset(&w->local_ips[w->nlocal], 0, sizeof(w->local_ips[0]));
		memcpy(&w->local_ips[w->nlocal], i->ifa_addr,
		       i->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
							 : sizeof(struct sockaddr_in6));
		w->nlocal++;
	}
	freeifaddrs(ifa);
}

struct waypoint *waypoint_new(const struct waypoint_opts *opts)
{
	struct waypoint *w = calloc(1, sizeof(*w));
	struct hbone_opts ho;
	char a[ADDR_STR_LEN];
	int err = ENOMEM;

	if (!w)
		goto fail;
	w->o = *opts;
	if (!w->o.sniff_timeout_ms)
		w->o.sniff_timeout_ms = 1000;
	w->name = strdup(opts->name);
	w->namespace = strdup(opts->namespace);
	w->trust_domain = strdup(opts->trust_domain ? opts->trust_domain : "cluster.local");
	w->node_name = opts->node_name ? strdup(opts->node_name) : NULL;
	if (!w->name || !w->namespace || !w->trust_domain || (opts->node_name && !w->node_name))
		goto fail;
	w->o.name = w->name;
	w->o.namespace = w->namespace;
	w->o.trust_domain = w->trust_domain;
	w->o.node_name = w->node_name;
	local_addrs(w);
	loop_timer_init(&w->sweep, sweep_fire, w);
	if (authz_start(opts->root_namespace)) {
		pr_err("waypoint: cannot start the policy engine");
		goto fail;
	}
	if (wp_routes_start()) {
		pr_err("waypoint: cannot follow the HTTPRoutes");
		goto fail;
	}

	struct tls_ctx_opts co = { .roots = opts->ca, .trust_domain = w->trust_domain };
	w->client_ctx = tls_ctx_new(TLS_ROLE_CLIENT, &co);
	co.select_cert = select_cert;
	co.select_arg = w;
	w->server_ctx = w->client_ctx ? tls_ctx_new(TLS_ROLE_SERVER, &co) : NULL;
	if (!w->server_ctx) {
		err = errno;
		pr_err("hbone: cannot create TLS contexts: %s", strerror(err));
		goto fail;
	}
	ho = (struct hbone_opts){
		.max_streams = opts->max_streams,
		.idle_timeout_ms = opts->idle_timeout_ms,
		.ping_interval_ms = opts->ping_interval_ms,
		.window = opts->window,
		.connect_timeout_ms = opts->connect_timeout_ms,
	};
	w->pool = hbone_pool_new(opts->loop, w->client_ctx, opts->certs, &ho);
	if (!w->pool) {
		err = errno;
		pr_err("hbone: cannot create the client pool: %s", strerror(err));
		goto fail;
	}
	ho.max_streams = 0;
	ho.max_sessions = opts->max_inbound;
	if (opts->limits)
		ho.limits = *opts->limits;
	struct hbone_server_cbs cbs = { .on_connect = on_connect, .arg = w };
	w->server = hbone_server_new(opts->loop, &opts->hbone_addr, w->server_ctx, &cbs, &ho);
	if (!w->server) {
		err = errno;
		pr_err("hbone: cannot listen on %s: %s",
		       sockaddr_str(&opts->hbone_addr, a, sizeof(a)), strerror(err));
		goto fail;
	}
	loop_timer_arm(opts->loop, &w->sweep, 5000);
	return w;
fail:
	waypoint_free(w);
	errno = err;
	return NULL;
}

void waypoint_free(struct waypoint *w)
{
	if (!w)
		return;
	loop_timer_cancel(w->o.loop, &w->sweep);
	for (struct wp_sess *s = w->sessions; s; s = s->next)
		if (s->down)
			conn_abort(s->down, CONN_UP, -ESHUTDOWN, CONN_FLAG_DOWNSTREAM_RESET,
				   "waypoint shutting down");
	while (w->idle) {
		struct wp_up *u = w->idle;
		idle_unlink(u);
		wp_up_put(u, false, false);
	}
	wp_h2_sweep(w, 0, true);
	/* Resets every stream; sessions and upstreams free as their conns release them. */
	hbone_server_free(w->server);
	hbone_pool_free(w->pool);
	w->server = NULL;
	w->pool = NULL;
	/* The releases above deferred their frees (and the sessions' last steps): the loop is
	 * stopped, so loop_run only runs the before-sleep step until nothing is left. */
	loop_run(w->o.loop);
	tls_ctx_free(w->server_ctx);
	tls_ctx_free(w->client_ctx);
	otlp_resource_unref(w->resource);
	for (size_t b = 0; b < ARRAY_SIZE(w->eps); b++) {
		for (struct endpoint_stat *e = w->eps[b], *n; e; e = n) {
			n = e->next;
			free(e->uid);
			free(e);
		}
	}
	series_free(w->series, ARRAY_SIZE(w->series));
	series_free(w->denied, ARRAY_SIZE(w->denied));
	authz_stop();
	wp_routes_stop();
	free(w->name);
	free(w->namespace);
	free(w->trust_domain);
	free(w->node_name);
	free(w);
}

void waypoint_certs_changed(void *arg)
{
	struct waypoint *w = arg;
	hbone_pool_certs_changed(w->pool);
}

void waypoint_roots_changed(void *arg, struct tls_ca *roots)
{
	struct waypoint *w = arg;
	mesh_set_ctx_roots(w->client_ctx, w->server_ctx, roots);
}

void waypoint_drain(struct waypoint *w)
{
	w->draining = true;
	hbone_server_drain(w->server);
	/* Idle keep-alive clients are closed now; busy ones after their current answer. */
	for (struct wp_sess *s = w->sessions; s; s = s->next) {
		if (s->st == SS_H2)
			wp_h2_drain(s);
		if ((s->st == SS_HEAD && h1_idle(&s->req)) || s->st == SS_SNIFF) {
			if (s->st == SS_SNIFF && s->down && conn_out_pending(s->down, CONN_UP))
				continue;
			s->st = SS_CLOSING;
			s->close_after = true;
			loop_timer_cancel(w->o.loop, &s->timer);
			wp_sess_schedule(s);
		}
	}
	sweep_fire(w->o.loop, &w->sweep);
}

unsigned waypoint_sessions(const struct waypoint *w)
{
	return w->nsessions;
}

json_t *waypoint_status_json(struct waypoint *w)
{
	struct model *m = model_current();
	const struct model_workload *self = NULL;
	struct spiffe_id id;
	char ids[SPIFFE_ID_STR_MAX], a[ADDR_STR_LEN];
	bool known = waypoint_self(w, m, &self, &id) == 0;
	json_t *sessions = json_array(), *eps = json_array();

	for (struct wp_sess *s = w->sessions; s; s = s->next)
		json_array_append_new(sessions, json_pack("{s:s,s:s?,s:s,s:s,s:b,s:o*}",
			"authority", sockaddr_str(&s->authority, a, sizeof(a)), "service", s->service,
			"protocol", protocol_str(s->proto), "state", sess_st_to_str(s->st),
			"upstream", s->up != NULL, "h2", wp_h2_sess_json(s)));
	for (size_t b = 0; b < ARRAY_SIZE(w->eps); b++)
		for (struct endpoint_stat *e = w->eps[b]; e; e = e->next)
			json_array_append_new(eps, json_pack("{s:s,s:i,s:I}", "workload", e->uid,
				"active", (int)e->active, "requests", (json_int_t)e->total));
	json_t *o = json_pack("{s:s,s:s,s:s?,s:s?,s:s,s:b,s:I,s:I,s:I,s:i,s:I,s:I,s:o,s:o}",
		"name", w->name, "namespace", w->namespace,
		"workload", known ? self->name : NULL, "identity", known ? spiffe_id_str(&id, ids) : NULL,
		"load_balancing", w->o.lb == WAYPOINT_LB_LEAST_REQUEST ? "least_request" : "round_robin",
		"draining", w->draining, "requests", (json_int_t)w->requests,
		"local_replies", (json_int_t)w->local_replies, "tcp_tunnels", (json_int_t)w->tunnels,
		"upstreams_idle", (int)w->nidle, "upstreams_opened", (json_int_t)w->upstreams_opened,
		"upstreams_reused", (json_int_t)w->upstreams_reused,
		"sessions", sessions, "endpoints", eps);
	if (o) {
		json_object_set_new(o, "h2_upstreams", wp_h2_pool_json(w));
		json_object_set_new(o, "routes", wp_routes_json(w));
	}
	model_unref(m);
	return o;
}

json_t *waypoint_hbone_json(struct waypoint *w)
{
	json_t *arr = json_array();
	struct hbone_stats ss;
	hbone_pool_foreach(w->pool, mesh_hbone_conn_json, arr);
	hbone_server_foreach(w->server, mesh_hbone_conn_json, arr);
	hbone_server_stats(w->server, &ss);
	return json_pack("{s:o,s:{s:o}}", "connections", arr, "server", "limits",
			 mesh_hbone_limits_json(&ss));
}

/* Whether a policy's targetRefs (as the dump shows them) name this waypoint, its Gateway, or a
 * Service that uses it. */
static bool policy_applies_here(struct waypoint *w, const struct model *m,
				const struct model_service *me, const json_t *pol)
{
	size_t i;
	json_t *ref;
	json_array_foreach(json_object_get(pol, "targetRefs"), i, ref) {
		const char *kind = json_string_value(json_object_get(ref, "kind"));
		const char *ns = json_string_value(json_object_get(ref, "namespace"));
		const char *name = json_string_value(json_object_get(ref, "name"));
		if (!kind || !ns || !name)
			continue;
		if ((strcmp(kind, "Gateway") == 0 || strcmp(kind, "Service") == 0) &&
		    strcmp(ns, w->namespace) == 0 && strcmp(name, w->name) == 0)
			return true;
		const struct model_service *svc = strcmp(kind, "Service") == 0 ?
			model_service_by_name(m, ns, name) : NULL;
		if (svc && me && model_waypoint_for(m, svc, NULL) == me)
			return true;
	}
	return false;
}

json_t *waypoint_policies_json(struct waypoint *w)
{
	struct authz_set *set = wp_authz_current();
	struct model *m = model_current();
	const struct model_service *me = model_service_by_name(m, w->namespace, w->name);
	struct authz_set_stats st = { 0 };
	json_t *pol = NULL, *out = NULL, *p;
	size_t i;

	if (!set)
		set = authz_set_new_empty();
	if (!set || !(pol = authz_set_to_json(set, NULL, 0)))
		goto out;
	json_array_foreach(pol, i, p)
		json_object_set_new(p, "waypoint_applies", json_boolean(policy_applies_here(w, m, me, p)));
	authz_set_stats(set, &st);
	out = json_pack("{s:{s:s,s:s},s:s,s:I,s:{s:i,s:i,s:i,s:i,s:i,s:i},s:o}",
			"waypoint", "namespace", w->namespace, "name", w->name, "root_namespace", authz_set_root_ns(set),
			"model_generation", (json_int_t)m->generation,
			"stats", "authorization_policies", st.authorization_policies,
			"peer_authentications", st.peer_authentications, "refused", st.refused,
			"converted", st.converted, "unsupported", st.unsupported, "dry_run", st.dry_run,
			"policies", pol);
	pol = NULL;
out:
	json_decref(pol);
	authz_set_unref(set);
	model_unref(m);
	return out;
}
