// SPDX-License-Identifier: Apache-2.0
/* The admin API (JSON on 127.0.0.1:15000) that ambitctl reads, plus the readiness and
 * metrics endpoints. Paths and keys are the contract with ambitctl (docs/admin-api.md). */
#include "agent/agent.h"
#include "agent/conn.h"
#include "agent/httpd.h"
#include "agent/mesh.h"
#include "agent/metrics.h"
#include "agent/policy.h"
#include "agent/redirect.h"
#include "agent/telemetry.h"
#include "agent/tracing.h"
#include "agent/workloads.h"
#include "common/log.h"
#include "common/util.h"
#include "tls/certstore.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void reply_json(struct httpd_response *resp, int status, json_t *j)
{
	httpd_reply_json(resp, status, j, JSON_COMPACT);
}

static void reply_error(struct httpd_response *resp, int status, const char *msg)
{
	reply_json(resp, status, json_pack("{s:s}", "error", msg));
}

static void get_workloads(struct agent *a, const struct httpd_request *req,
			  struct httpd_response *resp)
{
	struct model *m = model_current();
	json_t *dump = model_to_json(m), *out = json_array(), *w;
	size_t i;
	(void)req;
	json_array_foreach(json_object_get(dump, "workloads"), i, w) {
		const char *node = json_string_value(json_object_get(w, "node"));
		json_object_set_new(w, "local", json_boolean(node && a->cfg.node_name &&
							     strcmp(node, a->cfg.node_name) == 0));
		json_object_set_new(w, "protocol", json_string(json_is_true(json_object_get(w, "enrolled"))
								       ? "HBONE" : "TCP"));
		json_array_append(out, w);
	}
	reply_json(resp, 200, json_pack("{s:I,s:o}", "generation", (json_int_t)m->generation,
					"workloads", out));
	json_decref(dump);
	model_unref(m);
}

static void get_services(struct agent *a, const struct httpd_request *req,
			 struct httpd_response *resp)
{
	struct model *m = model_current();
	json_t *dump = model_to_json(m);
	(void)a, (void)req;
	reply_json(resp, 200, json_pack("{s:I,s:O}", "generation", (json_int_t)m->generation,
					"services", json_object_get(dump, "services")));
	json_decref(dump);
	model_unref(m);
}

static json_t *peer_json(const struct conn_peer *p)
{
	return json_pack("{s:s?,s:s?,s:s?,s:s?}", "workload", p->workload, "namespace", p->namespace,
			 "identity", p->principal, "service_account", p->service_account);
}

static void conn_to_json(struct conn *c, void *arg)
{
	json_t *arr = arg;
	const struct conn_info *ci = conn_info(c);
	char src[ADDR_STR_LEN], dst[ADDR_STR_LEN], tgt[ADDR_STR_LEN], via[ADDR_STR_LEN];
	json_array_append_new(arr, json_pack(
		"{s:I,s:s,s:s,s:s,s:s,s:s?,s:s?,s:s?,s:o,s:o,s:s,s:I,s:I,s:I}",
		"id", (json_int_t)conn_id(c), "direction", telemetry_direction(ci->kind),
		"state", conn_st_to_str(conn_state(c)),
		"src", sockaddr_str(&ci->src, src, sizeof(src)),
		"dst", sockaddr_str(&ci->orig_dst, dst, sizeof(dst)),
		"target", ci->target.ss_family ? sockaddr_str(&ci->target, tgt, sizeof(tgt)) : NULL,
		"via", ci->via.ss_family ? sockaddr_str(&ci->via, via, sizeof(via)) : NULL,
		"service", ci->service, "source", peer_json(&ci->source),
		"destination", peer_json(&ci->destination),
		"security", ci->mtls ? "mutual_tls" : "none",
		"bytes_sent", (json_int_t)conn_bytes(c, CONN_UP),
		"bytes_received", (json_int_t)conn_bytes(c, CONN_DOWN),
		"age_ms", (json_int_t)(now_mono_ms() - conn_start_ms(c))));
}

static void get_connections(struct agent *a, const struct httpd_request *req,
			    struct httpd_response *resp)
{
	json_t *arr = json_array();
	(void)a, (void)req;
	conn_foreach(conn_to_json, arr);
	reply_json(resp, 200, json_pack("{s:I,s:o}", "count", (json_int_t)conn_count(), "connections", arr));
}

static void get_bpf(struct agent *a, const struct httpd_request *req, struct httpd_response *resp)
{
	(void)req;
	if (!a->redirect) {
		reply_json(resp, 200, json_pack("{s:b}", "enabled", 0));
		return;
	}
	json_t *j = redirect_state_json(a->redirect);
	if (j)
		json_object_set_new(j, "enabled", json_true());
	reply_json(resp, 200, j);
}

static void get_certificates(struct agent *a, const struct httpd_request *req,
			     struct httpd_response *resp)
{
	(void)req;
	reply_json(resp, 200, runtime_identity_certificates_json(&a->id));
}

static void get_hbone(struct agent *a, const struct httpd_request *req, struct httpd_response *resp)
{
	(void)req;
	if (!a->mesh) {
		reply_error(resp, 404, "HBONE is not running");
		return;
	}
	reply_json(resp, 200, mesh_hbone_json(a->mesh));
}

static void get_spans(struct agent *a, const struct httpd_request *req, struct httpd_response *resp)
{
	char tid[64] = "", lim[16] = "";
	long limit = 0;
	(void)a;
	httpd_query_get(req->query, "trace_id", tid, sizeof(tid));
	if (httpd_query_get(req->query, "limit", lim, sizeof(lim)) == 0) {
		char *end;
		limit = strtol(lim, &end, 10);
		if (*end || limit < 0) {
			reply_error(resp, 400, "limit must be a non-negative integer");
			return;
		}
	}
	for (char *p = tid; *p; p++)
		if (*p >= 'A' && *p <= 'F')
			*p = (char)(*p - 'A' + 'a');
	reply_json(resp, 200, telemetry_spans_json(tid[0] ? tid : NULL, (size_t)limit));
}

/* /telemetry[?workload=NS/NAME]: the tracing settings in force (agent/tracing.h), for the
 * workloads of this node or for the one named (any node). */
static void get_telemetry(struct agent *a, const struct httpd_request *req,
			  struct httpd_response *resp)
{
	char wl[512] = "";
	char *slash = NULL;
	struct model *m;

	if (httpd_query_get(req->query, "workload", wl, sizeof(wl)) == 0 &&
	    (!(slash = strchr(wl, '/')) || slash == wl || !slash[1])) {
		reply_error(resp, 400, "workload must be NAMESPACE/NAME");
		return;
	}
	if (slash)
		*slash = '\0';
	m = model_current();
	json_t *j = tracing_to_json(m, a->cfg.node_name, slash ? wl : NULL, slash ? slash + 1 : NULL);
	if (j)
		json_object_set_new(j, "generation", json_integer((json_int_t)m->generation));
	model_unref(m);
	reply_json(resp, 200, j);
}

static void get_policies(struct agent *a, const struct httpd_request *req,
			 struct httpd_response *resp)
{
	(void)a, (void)req;
	json_t *j = policy_dump_json();
	if (!j)
		reply_error(resp, 500, "out of memory");
	else
		reply_json(resp, 200, j);
}

static void get_policies_check(struct agent *a, const struct httpd_request *req,
			       struct httpd_response *resp)
{
	char from[512] = "", to[600] = "", err[700] = "";
	(void)a;
	if (httpd_query_get(req->query, "from", from, sizeof(from)) ||
	    httpd_query_get(req->query, "to", to, sizeof(to))) {
		reply_error(resp, 400, "from=ADDR|NS/NAME and to=NS/NAME:PORT are required");
		return;
	}
	json_t *j = policy_check_json(from, to, err, sizeof(err));
	if (!j)
		reply_error(resp, 400, err[0] ? err : "out of memory");
	else
		reply_json(resp, 200, j);
}

static void get_config(struct agent *a, const struct httpd_request *req, struct httpd_response *resp)
{
	(void)req;
	reply_json(resp, 200, runtime_config_dump(config_to_json(&a->cfg), &a->disc));
}

static void logging(struct agent *a, const struct httpd_request *req, struct httpd_response *resp)
{
	char level[16];
	enum log_level lvl;
	(void)a;
	if (httpd_query_get(req->query, "level", level, sizeof(level)) == 0) {
		if (strcmp(req->method, "POST") != 0 && strcmp(req->method, "PUT") != 0) {
			reply_error(resp, 405, "use POST to change the level");
			return;
		}
		if (log_level_parse(level, &lvl)) {
			reply_error(resp, 400, "level must be one of error, warn, info, debug, trace");
			return;
		}
		log_set_level(lvl);
		pr_info("log level set to %s through the admin API", log_level_str(lvl));
	}
	reply_json(resp, 200, json_pack("{s:s}", "level", log_level_str(log_get_level())));
}

static long proc_status_kb(const char *key)
{
	char *s = read_file_bounded("/proc/self/status", 1 << 16, NULL);
	long v = -1;
	if (s) {
		char *p = strstr(s, key);
		if (p)
			v = strtol(p + strlen(key), NULL, 10);
		free(s);
	}
	return v;
}

static void get_stats(struct agent *a, const struct httpd_request *req, struct httpd_response *resp)
{
	struct rusage ru;
	/* glibc's allocator totals: a walk of its arenas, cheap at the admin API's rate. */
	struct mallinfo2 mi = mallinfo2();

	(void)req;
	if (getrusage(RUSAGE_SELF, &ru) == -1)
		memset(&ru, 0, sizeof(ru));
	reply_json(resp, 200, json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:i}",
		"version", AMBIT_VERSION, "node", a->cfg.node_name ? a->cfg.node_name : "",
		"uptime_ms", (json_int_t)(now_real_ns() / 1000000 - a->start_unix_ms),
		"rss_kb", (json_int_t)proc_status_kb("VmRSS:"),
		"hwm_kb", (json_int_t)proc_status_kb("VmHWM:"),
		"cpu_user_ms", (json_int_t)ru.ru_utime.tv_sec * 1000 + ru.ru_utime.tv_usec / 1000,
		"cpu_system_ms", (json_int_t)ru.ru_stime.tv_sec * 1000 + ru.ru_stime.tv_usec / 1000,
		"heap_in_use_kb", (json_int_t)((mi.uordblks + mi.hblkhd) / 1024),
		"heap_free_kb", (json_int_t)(mi.fordblks / 1024),
		"connections", (json_int_t)conn_count(), "pods_captured", a->npods_captured));
}

static const struct {
	const char *path;
	void (*fn)(struct agent *a, const struct httpd_request *req, struct httpd_response *resp);
	bool write;	/* accepts POST */
} routes[] = {
	{ "/workloads", get_workloads, false },
	{ "/services", get_services, false },
	{ "/connections", get_connections, false },
	{ "/bpf", get_bpf, false },
	{ "/certificates", get_certificates, false },
	{ "/hbone", get_hbone, false },
	{ "/spans", get_spans, false },
	{ "/telemetry", get_telemetry, false },
	{ "/policies", get_policies, false },
	{ "/policies/check", get_policies_check, false },
	{ "/config_dump", get_config, false },
	{ "/logging", logging, true },
	{ "/stats", get_stats, false },
};

void admin_handle(void *arg, const struct httpd_request *req, struct httpd_response *resp)
{
	struct agent *a = arg;
	for (size_t i = 0; i < ARRAY_SIZE(routes); i++) {
		if (strcmp(req->path, routes[i].path) != 0)
			continue;
		if (strcmp(req->method, "GET") != 0 && !routes[i].write) {
			reply_error(resp, 405, "method not allowed");
			return;
		}
		routes[i].fn(a, req, resp);
		return;
	}
	if (strcmp(req->path, "/") == 0) {
		json_t *paths = json_array();
		for (size_t i = 0; i < ARRAY_SIZE(routes); i++)
			json_array_append_new(paths, json_string(routes[i].path));
		reply_json(resp, 200, json_pack("{s:s,s:o}", "ambitd", AMBIT_VERSION, "paths", paths));
		return;
	}
	reply_error(resp, 404, "no such admin path");
}

void admin_handle_ready(void *arg, const struct httpd_request *req, struct httpd_response *resp)
{
	struct agent *a = arg;
	if (strcmp(req->path, "/healthz/ready") != 0) {
		httpd_reply(resp, 404, "text/plain", "not found\n", 10);
		return;
	}
	if (a->draining)
		httpd_reply(resp, 503, "text/plain", "draining\n", 9);
	else if (!a->model_applied || !a->serving)
		httpd_reply(resp, 503, "text/plain", "not ready: no workloads applied yet\n", 36);
	else
		runtime_identity_reply_ready(&a->id, resp);
}

void admin_handle_metrics(void *arg, const struct httpd_request *req, struct httpd_response *resp)
{
	size_t len;
	char *body;
	(void)arg;
	if (strcmp(req->path, "/metrics") != 0 && strcmp(req->path, "/stats/prometheus") != 0) {
		httpd_reply(resp, 404, "text/plain", "not found\n", 10);
		return;
	}
	body = metrics_render(&len);
	if (!body) {
		httpd_reply(resp, 500, "text/plain", "out of memory\n", 14);
		return;
	}
	free(resp->body);
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4";
	resp->body = body;
	resp->body_len = len;
}
