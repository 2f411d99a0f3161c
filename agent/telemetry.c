// SPDX-License-Identifier: Apache-2.0
/* Per-connection telemetry from the conn hooks: metrics at open and close, an access log line
 * at each (debug on open, info on close), and the connection span: started at accept (a child
 * of the CONNECT's traceparent on the inbound side), ended at close with the connection's
 * facts as attributes and status ERROR when it failed. */
#include "agent/telemetry.h"
#include "agent/metrics.h"
#include "agent/tracing.h"
#include "agent/workloads.h"
#include "agent/reqspan.h"
#include "common/log.h"
#include "common/util.h"
#include "otlp/resource.h"
#include "otlp/tracecontext.h"
#include "otlp/tracer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct telemetry_opts topts;

/* Resources per workload (service, namespace, pod): built once, shared by its spans. The
 * cache is flushed whole when it passes its bound (spans hold their own references). */
#define RES_CACHE_MAX 4096
struct res_entry {
	char *key;
	struct otlp_resource *res;
	struct res_entry *next;
};
static struct res_entry *res_cache[256];
static size_t res_count;

static void res_cache_flush(void)
{
	for (size_t b = 0; b < ARRAY_SIZE(res_cache); b++) {
		struct res_entry *e = res_cache[b];
		while (e) {
			struct res_entry *n = e->next;
			otlp_resource_unref(e->res);
			free(e->key);
			free(e);
			e = n;
		}
		res_cache[b] = NULL;
	}
	res_count = 0;
}

/* The cache key of a workload is "service|namespace|workload"; looked up part by part, so that
 * a hit (every span but a workload's first) builds no string. */
static size_t res_key_hash(const char *const part[3])
{
	size_t h = 5381;
	for (int i = 0; i < 3; i++) {
		if (i)
			h = h * 33 + '|';
		for (const char *c = part[i]; *c; c++)
			h = h * 33 + (unsigned char)*c;
	}
	return h % ARRAY_SIZE(res_cache);
}

/* A borrowed resource for the workload the agent acts for (NULL: none). */
struct otlp_resource *telemetry_resource_for(const struct conn_peer *p)
{
	const char *const part[3] = { p->canonical_service ? p->canonical_service : "",
				      p->namespace ? p->namespace : "", p->workload ? p->workload : "" };
	size_t h = res_key_hash(part);
	struct res_entry *e;
	char *key;

	for (e = res_cache[h]; e; e = e->next)
		if (str_parts_eq(e->key, part, 3, '|'))
			return e->res;
	if (asprintf(&key, "%s|%s|%s", part[0], part[1], part[2]) < 0)
		return NULL;
	if (res_count >= RES_CACHE_MAX)
		res_cache_flush();
	e = calloc(1, sizeof(*e));
	if (e)
		e->res = otlp_resource_for_workload(otlp_tracer_config(topts.tracer),
						    p->canonical_service, p->namespace, p->workload,
						    topts.node_name);
	if (!e || !e->res) {
		free(e);
		free(key);
		return NULL;
	}
	e->key = key;
	e->next = res_cache[h];
	res_cache[h] = e;
	res_count++;
	return e->res;
}

/* What a conn's telemetry keeps (conn_user): its span, the tracing settings it resolved at
 * its start (shared, agent/tracing.h: a reference, not a copy) and its request tracking. */
struct conn_tel {
	struct span *span;
	struct tracing_conf *conf;
	struct reqspan *req;
};

static struct span *conn_span(const struct conn *c)
{
	const struct conn_tel *t = conn_user(c);
	return t ? t->span : NULL;
}

/* The settings of the spans of the workload the agent acts for on ci's side (the source
 * outbound, the destination inbound): Istio's Telemetry and MeshConfig, else the config's
 * (provider, sampling, custom tags, reporting). NULL + errno on ENOMEM. */
static struct tracing_conf *conf_of(const struct conn_info *ci)
{
	bool outbound = ci->kind == CONN_OUTBOUND;
	const struct conn_peer *self = outbound ? &ci->source : &ci->destination;
	return tracing_conf_get(self->namespace, self->workload, outbound ? &ci->src : &ci->target,
				outbound);
}

/* A span for the workload the agent acts for on ci's side with the settings tc resolved for
 * it (tracing_conf_get: resolved once per connection, not per span). Connection and request
 * spans both start here. */
struct span *telemetry_span_start(const struct conn_info *ci, const struct tracing_conf *tc,
				  const char *name, enum span_kind kind,
				  const struct span_context *parent, const uint8_t *span_id)
{
	const struct conn_peer *self = ci->kind == CONN_OUTBOUND ? &ci->source : &ci->destination;
	const struct otlp_config *cfg = otlp_tracer_config(topts.tracer);
	/* the tracer's own settings, spelled out to carry the span ID */
	struct span_opts o = { .tags = cfg->tags, .ntags = cfg->ntags };

	if (tc && tc->use)
		o = tc->opts;
	o.span_id = span_id;
	return span_start_opts(topts.tracer, telemetry_resource_for(self), name, kind, parent,
			       span_id || (tc && tc->use) ? &o : NULL);
}

static void span_open(struct conn *c)
{
	struct conn_info *ci = conn_info(c);
	struct span_context parent;
	bool outbound = ci->kind == CONN_OUTBOUND;
	struct conn_tel *t;
	struct span *s;

	if (!topts.tracer)
		return;
	t = calloc(1, sizeof(*t));
	if (!t)
		return;	/* out of memory: the conn goes on untraced */
	t->conf = conf_of(ci);	/* NULL (ENOMEM): the tracer's own settings */
	bool has_parent = ci->parent_traceparent[0] &&
			  tracecontext_parse(ci->parent_traceparent, strlen(ci->parent_traceparent),
					     &parent) == 0;
	s = telemetry_span_start(ci, t->conf, outbound ? "outbound" : "inbound",
				 outbound ? SPAN_KIND_CLIENT : SPAN_KIND_SERVER, has_parent ? &parent : NULL,
				 NULL);
	if (!s) {
		tracing_conf_unref(t->conf);
		free(t);
		return;	/* out of memory: the conn goes on untraced */
	}
	t->span = s;
	span_compact(s);	/* open as long as the conn: its start attributes (custom tags)
				 * keep their size, not a request span's room; the rest come at close */
	conn_set_user(c, t);
	if (tracecontext_format(&s->ctx, ci->traceparent, sizeof(ci->traceparent)) < 0)
		ci->traceparent[0] = '\0';
	/* Inbound, SERVER spans name the CLIENT spans only when the source agent said on the
	 * CONNECT that it reports them (its tracestate): its own settings (Telemetry, config)
	 * and a peer that is not ambit (ztunnel) are then all told apart. */
	if (reqspan_wanted(ci, topts.request_spans, t->conf && t->conf->reporting) &&
	    (t->req = reqspan_new(c, t->conf, outbound || ci->request_spans)))
		conn_set_observed(c, true);
	if (outbound)
		ci->request_spans = t->req != NULL;	/* the CONNECT tells the destination */
}

static void on_data(struct conn *c, enum conn_side from, const uint8_t *p, size_t n)
{
	struct conn_tel *t = conn_user(c);
	if (t && t->req && !reqspan_feed(t->req, from, p, n)) {
		conn_set_observed(c, false);	/* not HTTP, upgraded or stopped */
		if (reqspan_settled(t->req)) {	/* nothing awaits an answer: free it now */
			reqspan_free(t->req, "request tracking ended");
			t->req = NULL;
		}
	}
}

static void on_eof(struct conn *c, enum conn_side from)
{
	struct conn_tel *t = conn_user(c);
	if (t && t->req)
		reqspan_eof(t->req, from);
}

/* The peer attributes of a side: "source.workload" ... (keys spelled out: no formatting on
 * the per-request path). */
static void set_peer(struct span *s, bool source, const struct conn_peer *p)
{
	static const char *const keys[2][4] = {
		{ "destination.workload", "destination.namespace", "destination.principal",
		  "destination.canonical_service" },
		{ "source.workload", "source.namespace", "source.principal",
		  "source.canonical_service" },
	};
	const char *const v[4] = { p->workload, p->namespace, p->principal, p->canonical_service };
	for (size_t i = 0; i < ARRAY_SIZE(v); i++)
		if (v[i])
			span_set_str(s, keys[source][i], v[i]);
}

static void set_addr(struct span *s, const char *addr_key, const char *port_key,
		     const struct sockaddr_storage *ss)
{
	char ip[ADDR_STR_LEN];
	if (!ss->ss_family)
		return;
	span_set_str(s, addr_key, sockaddr_ip_str(ss, ip, sizeof(ip)));
	if (port_key && sockaddr_port(ss))	/* 0: not known (an inbound client behind HBONE) */
		span_set_int(s, port_key, sockaddr_port(ss));
}

/* The policy of a denial: the inbound side knows it; the outbound side reads it from the
 * 401's reason ("... status 401: denied by NS/NAME"). Plus the dry-run verdict. */
static void set_authz(struct span *s, const struct conn_info *ci, const char *flag,
		      const char *reason)
{
	const char *p;
	char name[512];

	if (ci->authz_policy) {
		span_set_str(s, "authorization.policy", ci->authz_policy);
	} else if (flag && strcmp(flag, CONN_FLAG_DENIED) == 0 && reason &&
		   (p = strstr(reason, "denied by ")) && (p += 10, strcspn(p, " ") < sizeof(name))) {
		snprintf(name, sizeof(name), "%.*s", (int)strcspn(p, " "), p);
		span_set_str(s, "authorization.policy", name);
	}
	if (ci->authz_dry_run)
		span_set_str(s, "authorization.dry_run", ci->authz_dry_run);
}

/* Attribute names: OTel's client./server./network. conventions for addresses, Istio's
 * source/destination vocabulary for the mesh facts (what Tempo queries use). Bytes as Istio
 * and ztunnel count them: received = the request (read from the downstream side), sent = the
 * response (read from the upstream side and sent back downstream). */
void telemetry_set_peers(struct span *s, const struct conn_info *ci)
{
	set_peer(s, true, &ci->source);
	set_peer(s, false, &ci->destination);
	if (ci->service)
		span_set_str(s, "destination.service", ci->service);
}

static void span_close(struct conn *c, int err, const char *flag, const char *reason)
{
	struct conn_tel *t = conn_user(c);
	const struct conn_info *ci = conn_info(c);
	struct span *s;

	if (!t)
		return;
	conn_set_user(c, NULL);
	conn_set_observed(c, false);
	reqspan_free(t->req, err ? "connection reset before the response"
				 : "connection closed before the response");
	tracing_conf_unref(t->conf);
	s = t->span;
	free(t);
	if (s->recording) {
		telemetry_set_peers(s, ci);
		set_addr(s, "client.address", "client.port", &ci->src);
		set_addr(s, "server.address", "server.port", &ci->orig_dst);
		set_addr(s, "destination.address", "destination.port", &ci->target);
		set_addr(s, "hbone.peer.address", NULL, &ci->via);
		span_set_str(s, "network.transport", "tcp");
		span_set_str(s, "direction", telemetry_direction(ci->kind));
		span_set_int(s, "bytes_sent", (int64_t)conn_bytes(c, CONN_UP));
		span_set_int(s, "bytes_received", (int64_t)conn_bytes(c, CONN_DOWN));
		span_set_str(s, "connection_security_policy", ci->mtls ? "mutual_tls" : "unknown");
		if (ci->via_waypoint)
			span_set_bool(s, "waypoint", true);
		if (ci->waypoint_bypass)
			span_set_bool(s, "waypoint.bypassed", true);
		if (flag)
			span_set_str(s, "response_flags", flag);
		set_authz(s, ci, flag, reason);
		if (err) {
			char msg[SPAN_MAX_STATUS_LEN];
			snprintf(msg, sizeof(msg), "%s%s%s", flag ? flag : "", flag ? ": " : "",
				 reason ? reason : strerror(-err));
			span_set_status(s, SPAN_STATUS_ERROR, msg);
		}
	}
	span_end(s);
}

const char *telemetry_reporter(enum conn_kind kind)
{
	return kind == CONN_OUTBOUND ? "source" : "destination";
}

const char *telemetry_direction(enum conn_kind kind)
{
	return kind == CONN_OUTBOUND ? "outbound" : "inbound";
}

static void labels_of(const struct conn_info *ci, const char *flag, struct metrics_tcp_labels *l)
{
	memset(l, 0, sizeof(*l));
	l->reporter = telemetry_reporter(ci->kind);
	l->source_workload = ci->source.workload;
	l->source_workload_namespace = ci->source.namespace;
	l->source_principal = ci->source.principal;
	l->source_app = ci->source.canonical_service;
	l->source_cluster = topts.cluster_id;
	l->destination_workload = ci->destination.workload;
	l->destination_workload_namespace = ci->destination.namespace;
	l->destination_principal = ci->destination.principal;
	l->destination_app = ci->destination.canonical_service;
	l->destination_service = ci->service;
	l->destination_cluster = topts.cluster_id;
	l->connection_security_policy = ci->mtls ? "mutual_tls" : "unknown";
	/* A conn refused by policy says DENY on all its series; others carry a flag only on the
	 * closed series of a failure. */
	l->response_flags = flag ? flag : ci->denied ? CONN_FLAG_DENIED : "-";
}

/* The access log line of a conn; fields as ztunnel names them. */
static void access_log(struct conn *c, enum log_level lvl, const char *msg, int err,
		       const char *flag, const char *reason)
{
	const struct conn_info *ci = conn_info(c);
	char src[ADDR_STR_LEN], dst[ADDR_STR_LEN], tgt[ADDR_STR_LEN], via[ADDR_STR_LEN];
	char sent[24], recv[24], dur[24], id[24];
	char trace_id[2 * SPAN_TRACE_ID_LEN + 1], span_id[2 * SPAN_ID_LEN + 1];
	struct span *s = conn_span(c);

	if (!log_enabled(lvl))
		return;
	if (s) {
		span_trace_id_hex(&s->ctx, trace_id);
		span_span_id_hex(&s->ctx, span_id);
	}
	snprintf(id, sizeof(id), "%" PRIu64, conn_id(c));
	snprintf(sent, sizeof(sent), "%" PRIu64, conn_bytes(c, CONN_UP));
	snprintf(recv, sizeof(recv), "%" PRIu64, conn_bytes(c, CONN_DOWN));
	snprintf(dur, sizeof(dur), "%" PRIu64, now_mono_ms() - conn_start_ms(c));
	struct log_field f[] = {
		{ "conn_id", id, true },
		{ "direction", telemetry_direction(ci->kind), false },
		{ "src.addr", sockaddr_str(&ci->src, src, sizeof(src)), false },
		{ "src.workload", ci->source.workload, false },
		{ "src.namespace", ci->source.namespace, false },
		{ "src.identity", ci->source.principal, false },
		{ "dst.addr", sockaddr_str(&ci->orig_dst, dst, sizeof(dst)), false },
		{ "dst.target", ci->target.ss_family ? sockaddr_str(&ci->target, tgt, sizeof(tgt)) : NULL, false },
		{ "dst.hbone_addr", ci->via.ss_family ? sockaddr_str(&ci->via, via, sizeof(via)) : NULL, false },
		{ "dst.service", ci->service, false },
		{ "dst.workload", ci->destination.workload, false },
		{ "dst.namespace", ci->destination.namespace, false },
		{ "dst.identity", ci->destination.principal, false },
		{ "connection_security_policy", ci->mtls ? "mutual_tls" : "unknown", false },
		{ "waypoint", ci->via_waypoint ? "true" : NULL, true },
		{ "waypoint_bypassed", ci->waypoint_bypass ? "true" : NULL, true },
		{ "bytes_sent", lvl == LOG_LVL_INFO ? sent : NULL, true },
		{ "bytes_recv", lvl == LOG_LVL_INFO ? recv : NULL, true },
		{ "duration_ms", lvl == LOG_LVL_INFO ? dur : NULL, true },
		{ "response_flags", flag, false },
		{ "authorization_policy", ci->authz_policy, false },
		{ "authorization_dry_run", ci->authz_dry_run, false },
		{ "error", err ? (reason ? reason : strerror(-err)) : NULL, false },
		{ "trace_id", s ? trace_id : NULL, false },
		{ "span_id", s ? span_id : NULL, false },
	};
	log_fields(lvl, f, (int)ARRAY_SIZE(f), "%s", msg);
}

static uint64_t waypoint_bypasses;

static double bypass_count(void *arg)
{
	(void)arg;
	return (double)waypoint_bypasses;
}

static void on_opened(struct conn *c)
{
	struct metrics_tcp_labels l;
	labels_of(conn_info(c), NULL, &l);
	metrics_tcp_add(&l, METRICS_TCP_OPENED, 1);
	span_open(c);
	if (conn_info(c)->waypoint_bypass) {
		waypoint_bypasses++;
		pr_warn_rl("connection to a workload behind a waypoint did not come through it "
			   "(conn %llu)", (unsigned long long)conn_id(c));
	}
	access_log(c, LOG_LVL_DEBUG, "connection opened", 0, NULL, NULL);
}

static void on_closed(struct conn *c, int err, const char *flag, const char *reason)
{
	struct metrics_tcp_labels l;
	const struct conn_info *ci = conn_info(c);

	if (err && !flag)
		flag = CONN_FLAG_UPSTREAM_RESET;
	/* A failure's flag makes its own closed series, as Istio reports it; bytes stay on the
	 * series of the open. */
	labels_of(ci, flag, &l);
	metrics_tcp_add(&l, METRICS_TCP_CLOSED, 1);
	labels_of(ci, NULL, &l);
	metrics_tcp_add(&l, METRICS_TCP_SENT_BYTES, conn_bytes(c, CONN_UP));
	metrics_tcp_add(&l, METRICS_TCP_RECEIVED_BYTES, conn_bytes(c, CONN_DOWN));
	access_log(c, LOG_LVL_INFO, "connection complete", err, flag, reason);
	span_close(c, err, flag, reason);
}

static double stopped_count(void *arg)
{
	(void)arg;
	return (double)reqspan_stopped_count();
}

static double stat_of(void *arg)
{
	struct batcher_stats st;
	otlp_tracer_stats(topts.tracer, &st);
	switch ((int)(intptr_t)arg) {
	case 0: return (double)st.exported;
	case 1: return (double)st.dropped;
	case 2: return (double)st.failed;
	default: return (double)st.queue_len;
	}
}

int telemetry_init(const struct telemetry_opts *opts)
{
	struct conn_hooks h = { .opened = on_opened, .closed = on_closed, .data = on_data,
				.eof = on_eof };
	topts = *opts;
	conn_set_hooks(&h);
	metrics_register("ambit_waypoint_bypass_total",
			 "Inbound connections to a workload behind a waypoint that skipped it",
			 "counter", bypass_count, NULL);
	if (!topts.tracer)
		return 0;
	struct tracing_opts tro = { .tracer = topts.tracer, .root_ns = topts.root_ns };
	int rc = tracing_init(&tro);
	if (rc)
		return rc;
	if (topts.request_spans)
		metrics_register("ambit_request_tracing_stopped_total",
				 "Connections whose request tracing stopped on malformed HTTP or a bound",
				 "counter", stopped_count, NULL);
	metrics_register("ambit_spans_exported_total", "Spans accepted by the collector", "counter",
			 stat_of, (void *)0);
	metrics_register("ambit_spans_dropped_total",
			 "Spans dropped because the export queue was full", "counter", stat_of,
			 (void *)1);
	metrics_register("ambit_spans_failed_total",
			 "Spans given up after non-retryable errors or retries", "counter", stat_of,
			 (void *)2);
	return metrics_register("ambit_spans_queued", "Spans waiting for export", "gauge", stat_of,
				(void *)3);
}

void telemetry_fini(uint32_t drain_ms)
{
	struct conn_hooks h = { 0 };
	conn_set_hooks(&h);
	res_cache_flush();
	if (topts.tracer)
		tracing_fini(drain_ms);
}

static json_t *attrs_json(const struct otlp_attrs *a)
{
	json_t *o = json_object();
	for (uint16_t i = 0; o && i < a->n; i++) {
		const struct otlp_attr *x = &a->v[i];
		json_t *v = x->type == OTLP_ATTR_STRING ? json_string(x->v.s)
			  : x->type == OTLP_ATTR_INT	  ? json_integer(x->v.i)
			  : x->type == OTLP_ATTR_BOOL	  ? json_boolean(x->v.b)
							  : json_real(x->v.d);
		json_object_set_new(o, x->key, v);
	}
	return o;
}

/* The admin API spells kinds and codes as OTLP's enums do, upper case. */
static const char *upper_kind(enum span_kind k)
{
	return k == SPAN_KIND_CLIENT ? "CLIENT" : k == SPAN_KIND_SERVER ? "SERVER" : "INTERNAL";
}

static const char *upper_status(enum span_status st)
{
	return st == SPAN_STATUS_ERROR ? "ERROR" : st == SPAN_STATUS_OK ? "OK" : "UNSET";
}

struct spans_q {
	const char *trace_id;
	json_t *arr;
};

static void span_json(const struct span *s, void *arg)
{
	struct spans_q *q = arg;
	char tid[2 * SPAN_TRACE_ID_LEN + 1], sid[2 * SPAN_ID_LEN + 1], pid[2 * SPAN_ID_LEN + 1] = "";
	span_trace_id_hex(&s->ctx, tid);
	if (q->trace_id && strcmp(q->trace_id, tid) != 0)
		return;
	span_span_id_hex(&s->ctx, sid);
	if (s->has_parent)
		hex_encode(s->parent_span_id, SPAN_ID_LEN, pid);
	enum span_export_state es = span_export_state(s);
	json_array_append_new(q->arr, json_pack(
		"{s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:{s:s,s:s},s:o,s:o,s:b,s:s}",
		"trace_id", tid, "span_id", sid, "parent_span_id", pid, "name", s->name,
		"kind", upper_kind(s->kind), "start_unix_nano", (json_int_t)s->start_ns,
		"end_unix_nano", (json_int_t)s->end_ns, "status", "code", upper_status(s->status),
		"message", s->status_msg ? s->status_msg : "", "attributes", attrs_json(&s->attrs),
		"resource", s->resource ? attrs_json(&s->resource->attrs) : json_object(),
		"exported", es == SPAN_EXPORT_EXPORTED, "export_state", span_export_state_str(es)));
}

json_t *telemetry_spans_json(const char *trace_id, size_t limit)
{
	struct spans_q q = { .trace_id = trace_id, .arr = json_array() };
	if (topts.tracer)
		otlp_tracer_recent(topts.tracer, span_json, &q);
	while (limit && json_array_size(q.arr) > limit)
		json_array_remove(q.arr, 0);
	return json_pack("{s:o}", "spans", q.arr);
}
