// SPDX-License-Identifier: Apache-2.0
/* Loads the JSON configuration over its defaults (CONTRACT.md "Configuration" plus the
 * extensions in docs/configuration.md). Unknown keys and bad values are refused. */
#include "agent/config.h"
#include "common/jsonx.h"
#include "common/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG_MAX_STR 4096
#define CFG_MAX_TAGS 64

int config_init(struct config *c, enum config_role role)
{
	memset(c, 0, sizeof(*c));
	c->path = strdup("");
	c->trust_domain = strdup("cluster.local");
	c->root_namespace = strdup("istio-system");
	c->ca_cert = strdup("/etc/ambit/ca/ca.crt");
	c->ca_key = strdup("/etc/ambit/ca/ca.key");
	/* Where Istio's node proxy reads its CA token (audience istio-ca). */
	c->ca_token_file = strdup("/var/run/secrets/tokens/istio-token");
	c->discovery_source = DISCOVERY_FILE;
	c->discovery_file = strdup("/etc/ambit/workloads.json");
	c->kube_token_file = strdup("/var/run/secrets/kubernetes.io/serviceaccount/token");
	c->kube_ca_file = strdup("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt");
	c->sampling = 100.0;
	c->otlp_protocol = strdup("grpc");
	c->otlp_timeout_ms = 10000;
	c->max_queue_size = 2048;
	c->max_export_batch_size = 512;
	c->schedule_delay_ms = 5000;
	c->tracing_enabled = true;
	c->request_spans = true;
	c->log_level = LOG_LVL_INFO;
	c->log_format = LOG_FMT_JSON;
	c->redirect_enabled = role == CONFIG_ROLE_AGENT;
	c->redirect_pin_dir = strdup("/sys/fs/bpf/ambit");
	c->redirect_mark = 0x0a3b0000;
	c->redirect_table = 133;
	c->connect_timeout_ms = 10000;
	c->max_connections = 65536;
	c->buffer_size = 64 * 1024;
	c->drain_timeout_ms = 30000;
	c->hbone_max_streams = 100;
	c->hbone_idle_timeout_ms = 60000;
	c->hbone_ping_interval_ms = 10000;
	c->hbone_window = 4 * 1024 * 1024;
	c->hbone_max_inbound = 4096;
	c->hbone_model_wait_ms = 5000;
	c->hbone_model_wait_max = 1024;
	c->hbone_limits = (struct hbone_limits)HBONE_DEFAULT_LIMITS;
	c->cert_lifetime_s = 24 * 3600;
	c->admin_address = strdup("127.0.0.1:15000");
	c->waypoint_lb = strdup("round_robin");
	c->wp_h2_conns_per_endpoint = 4;
	c->wp_h2_client_streams = 100;
	c->wp_h2_pending = 1024;
	c->hbone_dial = strdup("node");
	if (!c->path || !c->trust_domain || !c->root_namespace || !c->ca_cert || !c->ca_key ||
	    !c->ca_token_file || !c->discovery_file ||
	    !c->kube_token_file || !c->kube_ca_file || !c->otlp_protocol || !c->redirect_pin_dir ||
	    !c->admin_address || !c->waypoint_lb || !c->hbone_dial) {
		config_fini(c);
		return -ENOMEM;
	}
	return 0;
}

static void kv_free(struct config_kv *kv, int n)
{
	for (int i = 0; i < n; i++) {
		free(kv[i].key);
		free(kv[i].value);
	}
	free(kv);
}

void config_fini(struct config *c)
{
	if (!c)
		return;
	free(c->path);
	free(c->node_name);
	free(c->node_ip);
	free(c->trust_domain);
	free(c->root_namespace);
	free(c->ca_cert);
	free(c->ca_key);
	free(c->ca_address);
	free(c->ca_token_file);
	free(c->discovery_file);
	free(c->kube_api_server);
	free(c->kube_token_file);
	free(c->kube_ca_file);
	kv_free(c->custom_tags, c->ncustom_tags);
	free(c->otlp_endpoint);
	free(c->otlp_protocol);
	kv_free(c->otlp_headers, c->notlp_headers);
	free(c->redirect_pin_dir);
	free(c->redirect_sysctl_dir);
	free(c->admin_address);
	free(c->waypoint_name);
	free(c->waypoint_namespace);
	free(c->waypoint_lb);
	free(c->hbone_dial);
	memset(c, 0, sizeof(*c));
}

/* A string->string object into kv (replacing what was there). */
static int load_kv(struct jx *j, const json_t *obj, const char *key, struct config_kv **kv, int *n)
{
	json_t *o, *v;
	const char *k;
	int err = jx_object(j, obj, key, &o), i = 0;
	struct config_kv *out;

	if (err || !o)
		return err;
	if (json_object_size(o) > CFG_MAX_TAGS)
		return jx_fail(j, key, "has more than %d entries", CFG_MAX_TAGS);
	out = calloc(json_object_size(o) + 1, sizeof(*out));
	if (!out)
		return -ENOMEM;
	json_object_foreach(o, k, v) {
		if (!json_is_string(v) || !*k) {
			kv_free(out, i);
			return jx_fail(j, key, "'%s' must be a non-empty key with a string value", k);
		}
		out[i].key = strdup(k);
		out[i].value = strdup(json_string_value(v));
		i++;
		if (!out[i - 1].key || !out[i - 1].value) {
			kv_free(out, i);
			return -ENOMEM;
		}
	}
	kv_free(*kv, *n);
	*kv = out;
	*n = i;
	return 0;
}

static int load_tracing(struct jx *j, struct config *c, const json_t *t)
{
	static const char *const keys[] = { "enabled", "sampling", "custom_tags", "otlp",
		"max_queue_size", "max_export_batch_size", "schedule_delay_ms", "request_spans", NULL };
	static const char *const okeys[] = { "endpoint", "protocol", "headers", "timeout_ms", NULL };
	static const char *const protocols[] = { "grpc", "http/protobuf", NULL };
	json_t *o;
	int err;

	if ((err = jx_keys(j, t, keys)) || (err = jx_bool(j, t, "enabled", &c->tracing_enabled)) ||
	    (err = jx_bool(j, t, "request_spans", &c->request_spans)) ||
	    (err = jx_double(j, t, "sampling", 0.0, 100.0, &c->sampling)) ||
	    (err = load_kv(j, t, "custom_tags", &c->custom_tags, &c->ncustom_tags)) ||
	    (err = jx_uint(j, t, "max_queue_size", 1, 1 << 20, &c->max_queue_size)) ||
	    (err = jx_uint(j, t, "max_export_batch_size", 1, 1 << 16, &c->max_export_batch_size)) ||
	    (err = jx_uint(j, t, "schedule_delay_ms", 1, 3600 * 1000, &c->schedule_delay_ms)) ||
	    (err = jx_object(j, t, "otlp", &o)))
		return err;
	if (c->max_export_batch_size > c->max_queue_size)
		return jx_fail(j, "max_export_batch_size", "%u is larger than max_queue_size %u",
			       c->max_export_batch_size, c->max_queue_size);
	if (!o)
		return 0;
	size_t saved = jx_enter(j, "otlp");
	if ((err = jx_keys(j, o, okeys)) || (err = jx_str(j, o, "endpoint", false, CFG_MAX_STR, &c->otlp_endpoint)) ||
	    (err = jx_enum(j, o, "protocol", protocols, &c->otlp_protocol)) ||
	    (err = load_kv(j, o, "headers", &c->otlp_headers, &c->notlp_headers)) ||
	    (err = jx_uint(j, o, "timeout_ms", 1, 600000, &c->otlp_timeout_ms)))
		return err;
	if (c->otlp_endpoint && strncmp(c->otlp_endpoint, "http://", 7) != 0 && strncmp(c->otlp_endpoint, "https://", 8) != 0)
		return jx_fail(j, "endpoint", "'%s' must start with http:// or https://", c->otlp_endpoint);
	jx_leave(j, saved);
	return 0;
}

static int load_section(struct jx *j, const json_t *root, const char *name,
			int (*fn)(struct jx *, struct config *, const json_t *), struct config *c)
{
	json_t *o;
	int err = jx_object(j, root, name, &o);
	if (err || !o)
		return err;
	size_t saved = jx_enter(j, "%s", name);
	err = fn(j, c, o);
	if (!err)
		jx_leave(j, saved);
	return err;
}

static bool ca_address_ok(const char *a)
{
	return strncmp(a, "https://", 8) == 0 && a[8];
}

static int load_ca(struct jx *j, struct config *c, const json_t *o)
{
	static const char *const keys[] = { "address", "cert", "key", "token_file", NULL };
	int err;
	if ((err = jx_keys(j, o, keys)) || (err = jx_str(j, o, "cert", false, CFG_MAX_STR, &c->ca_cert)) ||
	    (err = jx_str(j, o, "key", false, CFG_MAX_STR, &c->ca_key)) ||
	    (err = jx_str(j, o, "address", false, CFG_MAX_STR, &c->ca_address)) ||
	    (err = jx_str(j, o, "token_file", false, CFG_MAX_STR, &c->ca_token_file)))
		return err;
	if (!c->ca_address)
		return 0;
	/* The CA is reached over TLS only: the token must never travel in the clear. */
	if (!ca_address_ok(c->ca_address))
		return jx_fail(j, "address", "'%s' must be https://HOST[:PORT]", c->ca_address);
	if (json_object_get(o, "key"))
		return jx_fail(j, "key", "ca.key (signing inside the agent, development only) and "
			       "ca.address exclude each other");
	return 0;
}

int config_load_discovery(struct jx *j, struct config *c, const json_t *o)
{
	static const char *const keys[] = { "source", "file", "kubernetes", NULL };
	static const char *const kkeys[] = { "api_server", "token_file", "ca_file", NULL };
	static const char *const sources[] = { "file", "kubernetes", NULL };
	char *source = NULL;
	json_t *k;
	int err;

	if ((err = jx_keys(j, o, keys)) || (err = jx_enum(j, o, "source", sources, &source)) ||
	    (err = jx_str(j, o, "file", false, CFG_MAX_STR, &c->discovery_file)) ||
	    (err = jx_object(j, o, "kubernetes", &k))) {
		free(source);
		return err;
	}
	if (source)
		c->discovery_source = strcmp(source, "kubernetes") == 0 ? DISCOVERY_KUBERNETES : DISCOVERY_FILE;
	free(source);
	if (!k)
		return 0;
	size_t saved = jx_enter(j, "kubernetes");
	if ((err = jx_keys(j, k, kkeys)) ||
	    (err = jx_str(j, k, "api_server", false, CFG_MAX_STR, &c->kube_api_server)) ||
	    (err = jx_str(j, k, "token_file", false, CFG_MAX_STR, &c->kube_token_file)) ||
	    (err = jx_str(j, k, "ca_file", false, CFG_MAX_STR, &c->kube_ca_file)))
		return err;
	jx_leave(j, saved);
	return 0;
}

int config_load_log(struct jx *j, struct config *c, const json_t *o)
{
	static const char *const keys[] = { "level", "format", NULL };
	static const char *const levels[] = { "error", "warn", "info", "debug", "trace", NULL };
	static const char *const formats[] = { "json", "text", NULL };
	char *level = NULL, *format = NULL;
	int err;

	if (!(err = jx_keys(j, o, keys)) && !(err = jx_enum(j, o, "level", levels, &level)))
		err = jx_enum(j, o, "format", formats, &format);
	if (!err && level)
		log_level_parse(level, &c->log_level);
	if (!err && format)
		log_format_parse(format, &c->log_format);
	free(level);
	free(format);
	return err;
}

static int load_redirect(struct jx *j, struct config *c, const json_t *o)
{
	static const char *const keys[] = { "enabled", "pin_dir", "sysctl_dir", "mark", "table",
		NULL };
	int err;
	if ((err = jx_keys(j, o, keys)) || (err = jx_bool(j, o, "enabled", &c->redirect_enabled)) ||
	    (err = jx_str(j, o, "pin_dir", false, CFG_MAX_STR, &c->redirect_pin_dir)) ||
	    (err = jx_str(j, o, "sysctl_dir", false, 200, &c->redirect_sysctl_dir)) ||
	    (err = jx_uint(j, o, "mark", 1, UINT32_MAX, &c->redirect_mark)) ||
	    (err = jx_uint(j, o, "table", 1, 252, &c->redirect_table)))
		return err;
	if (strncmp(c->redirect_pin_dir, "/sys/fs/bpf/", 12) != 0)
		return jx_fail(j, "pin_dir", "'%s' must be under /sys/fs/bpf/", c->redirect_pin_dir);
	if (c->redirect_sysctl_dir && strcmp(c->redirect_sysctl_dir, "auto") == 0) {
		free(c->redirect_sysctl_dir);
		c->redirect_sysctl_dir = NULL;
	}
	if (c->redirect_sysctl_dir && c->redirect_sysctl_dir[0] != '/')
		return jx_fail(j, "sysctl_dir", "'%s' is neither \"auto\" nor an absolute path",
			       c->redirect_sysctl_dir);
	return 0;
}

static int load_proxy(struct jx *j, struct config *c, const json_t *o)
{
	static const char *const keys[] = { "connect_timeout_ms", "max_connections", "buffer_size",
		"drain_timeout_ms", NULL };
	int err;
	if ((err = jx_keys(j, o, keys)) ||
	    (err = jx_uint(j, o, "connect_timeout_ms", 100, 600000, &c->connect_timeout_ms)) ||
	    (err = jx_uint(j, o, "max_connections", 1, 1 << 20, &c->max_connections)) ||
	    (err = jx_uint(j, o, "buffer_size", 4096, 16 << 20, &c->buffer_size)) ||
	    (err = jx_uint(j, o, "drain_timeout_ms", 0, 600000, &c->drain_timeout_ms)))
		return err;
	return 0;
}

/* hbone.limits.<name>: { "burst": N, "per_s": N } */
static int load_hbone_rate(struct jx *j, const json_t *o, const char *name, struct hbone_rate *r)
{
	static const char *const keys[] = { "burst", "per_s", NULL };
	json_t *b;
	int err = jx_object(j, o, name, &b);
	if (err || !b)
		return err;
	size_t saved = jx_enter(j, "%s", name);
	if ((err = jx_keys(j, b, keys)) || (err = jx_uint(j, b, "burst", 1, 1000000, &r->burst)) ||
	    (err = jx_uint(j, b, "per_s", 1, 1000000, &r->per_s)))
		return err;
	jx_leave(j, saved);
	return 0;
}

/* hbone.limits: what one inbound 15008 connection may do before it is cut off. */
static int load_hbone_limits(struct jx *j, struct config *c, const json_t *o)
{
	static const char *const keys[] = { "resets", "settings", "pings", "empty_frames",
		"max_continuations", "max_pending_streams", NULL };
	struct hbone_limits *l = &c->hbone_limits;
	int err;
	if ((err = jx_keys(j, o, keys)) || (err = load_hbone_rate(j, o, "resets", &l->resets)) ||
	    (err = load_hbone_rate(j, o, "settings", &l->settings)) ||
	    (err = load_hbone_rate(j, o, "pings", &l->pings)) ||
	    (err = load_hbone_rate(j, o, "empty_frames", &l->empty_frames)) ||
	    (err = jx_uint(j, o, "max_continuations", 1, 1000, &l->max_continuations)) ||
	    (err = jx_uint(j, o, "max_pending_streams", 1, 100000, &l->max_pending_streams)))
		return err;
	return 0;
}

static json_t *rate_json(const struct hbone_rate *r)
{
	return json_pack("{s:I,s:I}", "burst", (json_int_t)r->burst, "per_s", (json_int_t)r->per_s);
}

/* Adds hbone.limits (and the model wait) to the config_to_json object. */
static json_t *hbone_limits_json(json_t *root, const struct config *c)
{
	const struct hbone_limits *l = &c->hbone_limits;
	json_t *h = json_object_get(root, "hbone");
	if (h) {
		json_object_set_new(h, "model_wait_ms", json_integer(c->hbone_model_wait_ms));
		json_object_set_new(h, "model_wait_max_streams",
				    json_integer(c->hbone_model_wait_max));
	}
	if (h)
		json_object_set_new(h, "limits", json_pack("{s:o,s:o,s:o,s:o,s:I,s:I}",
			"resets", rate_json(&l->resets), "settings", rate_json(&l->settings),
			"pings", rate_json(&l->pings), "empty_frames", rate_json(&l->empty_frames),
			"max_continuations", (json_int_t)l->max_continuations,
			"max_pending_streams", (json_int_t)l->max_pending_streams));
	return root;
}

/* The waypoint's "http2" object: its HTTP/2 limits. */
static int load_wp_http2(struct jx *j, struct config *c, const json_t *o)
{
	static const char *const keys[] = { "max_connections_per_endpoint", "max_concurrent_streams",
		"max_pending_requests", NULL };
	int err;
	if ((err = jx_keys(j, o, keys)) ||
	    (err = jx_uint(j, o, "max_connections_per_endpoint", 1, 1024, &c->wp_h2_conns_per_endpoint)) ||
	    (err = jx_uint(j, o, "max_concurrent_streams", 1, 10000, &c->wp_h2_client_streams)) ||
	    (err = jx_uint(j, o, "max_pending_requests", 1, 1000000, &c->wp_h2_pending)))
		return err;
	return 0;
}

/* The waypoint's "http1" object: Envoy's Http1ProtocolOptions it implements. */
static int load_wp_http1(struct jx *j, struct config *c, const json_t *o)
{
	static const char *const keys[] = { "enable_trailers", NULL };
	int err;
	if ((err = jx_keys(j, o, keys)) ||
	    (err = jx_bool(j, o, "enable_trailers", &c->wp_h1_trailers)))
		return err;
	return 0;
}

static int load_hbone(struct jx *j, struct config *c, const json_t *o)
{
	static const char *const keys[] = { "max_streams_per_connection", "idle_timeout_ms",
		"ping_interval_ms", "window_size", "cert_lifetime_s", "max_inbound_connections",
		"limits", "dial", "model_wait_ms", "model_wait_max_streams", NULL };
	static const char *const dials[] = { "node", "pod", NULL };
	int err;
	if ((err = jx_keys(j, o, keys)) ||
	    (err = jx_uint(j, o, "max_streams_per_connection", 1, 10000, &c->hbone_max_streams)) ||
	    (err = jx_uint(j, o, "idle_timeout_ms", 100, 3600000, &c->hbone_idle_timeout_ms)) ||
	    (err = jx_uint(j, o, "ping_interval_ms", 100, 3600000, &c->hbone_ping_interval_ms)) ||
	    (err = jx_uint(j, o, "window_size", 65535, (1u << 31) - 1, &c->hbone_window)) ||
	    (err = jx_uint(j, o, "cert_lifetime_s", 60, 366 * 24 * 3600, &c->cert_lifetime_s)) ||
	    (err = jx_uint(j, o, "max_inbound_connections", 1, 1000000, &c->hbone_max_inbound)) ||
	    (err = jx_uint(j, o, "model_wait_ms", 0, 60000, &c->hbone_model_wait_ms)) ||
	    (err = jx_uint(j, o, "model_wait_max_streams", 1, 1000000, &c->hbone_model_wait_max)) ||
	    (err = load_section(j, o, "limits", load_hbone_limits, c)) ||
	    (err = jx_enum(j, o, "dial", dials, &c->hbone_dial)))
		return err;
	return 0;
}

int config_load(struct config *c, enum config_role role, const char *path, char *err, size_t errlen)
{
	static const char *const agent_keys[] = { "node_name", "node_ip", "trust_domain",
		"root_namespace", "ca", "discovery", "tracing", "log", "redirect", "proxy", "hbone", "admin_address", NULL };
	static const char *const wp_keys[] = { "name", "namespace", "node_name", "node_ip",
		"trust_domain", "root_namespace", "ca", "discovery", "tracing", "log", "proxy",
		"hbone", "admin_address", "load_balancing", "http2", "http1", NULL };
	static const char *const lbs[] = { "round_robin", "least_request", NULL };
	json_error_t jerr;
	json_t *root;
	struct jx j;
	int rc;
	const char *env;

	jx_init(&j, path, err, errlen);
	free(c->path);
	c->path = strdup(path);
	if (!c->path)
		return -ENOMEM;
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (jerr.line <= 0)
			snprintf(err, errlen, "%s: %s", path, jerr.text);
		else
			snprintf(err, errlen, "%s: line %d column %d: %s", path, jerr.line, jerr.column,
				 jerr.text);
		return -EINVAL;
	}
	if (!json_is_object(root)) {
		rc = jx_fail(&j, NULL, "must be a JSON object");
		goto out;
	}
	rc = jx_keys(&j, root, role == CONFIG_ROLE_AGENT ? agent_keys : wp_keys);
	if (!rc)
		rc = jx_str(&j, root, "node_name", false, 253, &c->node_name);
	if (!rc)
		rc = jx_str(&j, root, "node_ip", false, 64, &c->node_ip);
	if (!rc)
		rc = jx_str(&j, root, "trust_domain", false, 255, &c->trust_domain);
	if (!rc)
		rc = jx_str(&j, root, "root_namespace", false, 63, &c->root_namespace);
	if (!rc)
		rc = jx_str(&j, root, "admin_address", false, 64, &c->admin_address);
	if (!rc && role == CONFIG_ROLE_WAYPOINT) {
		rc = jx_str(&j, root, "name", false, 253, &c->waypoint_name);
		if (!rc)
			rc = jx_str(&j, root, "namespace", false, 253, &c->waypoint_namespace);
		if (!rc)
			rc = jx_enum(&j, root, "load_balancing", lbs, &c->waypoint_lb);
		if (!rc)
			rc = load_section(&j, root, "http2", load_wp_http2, c);
		if (!rc)
			rc = load_section(&j, root, "http1", load_wp_http1, c);
	}
	if (!rc)
		rc = load_section(&j, root, "ca", load_ca, c);
	if (!rc)
		rc = load_section(&j, root, "discovery", config_load_discovery, c);
	if (!rc)
		rc = load_section(&j, root, "tracing", load_tracing, c);
	if (!rc)
		rc = load_section(&j, root, "log", config_load_log, c);
	if (!rc && role == CONFIG_ROLE_AGENT)
		rc = load_section(&j, root, "redirect", load_redirect, c);
	if (!rc)
		rc = load_section(&j, root, "proxy", load_proxy, c);
	if (!rc)
		rc = load_section(&j, root, "hbone", load_hbone, c);
	if (rc)
		goto out;
	/* Kubernetes downward-API variables win over the file, as ztunnel does. */
	if ((env = getenv("NODE_NAME")) && *env) {
		free(c->node_name);
		if (!(c->node_name = strdup(env)))
			rc = -ENOMEM;
	}
	if ((env = getenv("NODE_IP")) && *env) {
		free(c->node_ip);
		if (!(c->node_ip = strdup(env)))
			rc = -ENOMEM;
	}
	/* The CA address as ztunnel reads it (CA_ADDRESS): a manifest component can point the
	 * agents at istiod without rewriting their config file. */
	if (!rc && (env = getenv("CA_ADDRESS")) && *env) {
		if (!ca_address_ok(env)) {
			snprintf(err, errlen, "%s: CA_ADDRESS: '%s' must be https://HOST[:PORT]", path,
				 env);
			rc = -EINVAL;
			goto out;
		}
		free(c->ca_address);
		if (!(c->ca_address = strdup(env)))
			rc = -ENOMEM;
	}
out:
	json_decref(root);
	return rc;
}

int config_validate(const struct config *c, enum config_role role, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	const char *p = c->path && *c->path ? c->path : "config";

	if (role == CONFIG_ROLE_AGENT && !c->node_name) {
		snprintf(err, errlen, "%s: node_name: missing (set it or NODE_NAME)", p);
		return -EINVAL;
	}
	if (role == CONFIG_ROLE_AGENT && !c->node_ip) {
		snprintf(err, errlen, "%s: node_ip: missing (set it or NODE_IP)", p);
		return -EINVAL;
	}
	if (c->node_ip && ip_parse(c->node_ip, &ss)) {
		snprintf(err, errlen, "%s: node_ip: '%s' is not an IP address", p, c->node_ip);
		return -EINVAL;
	}
	if (sockaddr_parse(c->admin_address, 15000, &ss)) {
		snprintf(err, errlen, "%s: admin_address: '%s' is not IP:PORT", p, c->admin_address);
		return -EINVAL;
	}
	/* The admin API changes log levels and shows the mesh model, unauthenticated: it stays
	 * on the node's loopback (CONTRACT.md), whatever the config says. */
	if (!(ss.ss_family == AF_INET &&
	      (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127) &&
	    !(ss.ss_family == AF_INET6 &&
	      IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ss)->sin6_addr))) {
		snprintf(err, errlen, "%s: admin_address: '%s' is not a loopback address", p,
			 c->admin_address);
		return -EINVAL;
	}
	if (role == CONFIG_ROLE_WAYPOINT && (!c->waypoint_name || !c->waypoint_namespace)) {
		snprintf(err, errlen, "%s: name and namespace: required for ambit-waypoint", p);
		return -EINVAL;
	}
	/* A Kubernetes namespace name (RFC 1123 label): the root namespace of Istio's objects. */
	for (const char *s = c->root_namespace; *s || s == c->root_namespace; s++) {
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
		      (*s == '-' && s != c->root_namespace && s[1]))) {
			snprintf(err, errlen, "%s: root_namespace: '%s' is not a namespace name "
				 "(a-z 0-9 -, at most 63)", p, c->root_namespace);
			return -EINVAL;
		}
	}
	for (const char *s = c->trust_domain; *s; s++) {
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '.' || *s == '-' ||
		      *s == '_')) {
			snprintf(err, errlen, "%s: trust_domain: '%s' may hold only a-z 0-9 . - _", p,
				 c->trust_domain);
			return -EINVAL;
		}
	}
	return 0;
}

static json_t *kv_json(const struct config_kv *kv, int n)
{
	json_t *o = json_object();
	for (int i = 0; o && i < n; i++)
		json_object_set_new(o, kv[i].key, json_string(kv[i].value));
	return o;
}

json_t *config_to_json(const struct config *c)
{
	json_t *headers = json_object();
	/* Header values may hold credentials: show the names only. */
	for (int i = 0; headers && i < c->notlp_headers; i++)
		json_object_set_new(headers, c->otlp_headers[i].key, json_string("<redacted>"));
	return hbone_limits_json(json_pack(
		"{s:s, s:s?, s:s?, s:s, s:s, s:s, s:{s:s?, s:s, s:s?, s:s?},"
		" s:{s:s, s:s, s:{s:s?, s:s, s:s}},"
		" s:{s:b, s:f, s:o, s:{s:s?, s:s, s:o, s:i}, s:i, s:i, s:i, s:b},"
		" s:{s:s, s:s}, s:{s:b, s:s, s:s, s:i, s:i},"
		" s:{s:i, s:i, s:i, s:i}, s:{s:i, s:i, s:i, s:i, s:i, s:i, s:s}, s:s?, s:s?, s:s,"
		" s:{s:i, s:i, s:i}, s:{s:b}}",
		"config_file", c->path, "node_name", c->node_name, "node_ip", c->node_ip,
		"trust_domain", c->trust_domain, "root_namespace", c->root_namespace,
		"admin_address", c->admin_address,
		"ca", "address", c->ca_address, "cert", c->ca_cert, "key", c->ca_address ? NULL : c->ca_key,
		"token_file", c->ca_address ? c->ca_token_file : NULL,
		"discovery", "source", c->discovery_source == DISCOVERY_FILE ? "file" : "kubernetes",
		"file", c->discovery_file, "kubernetes", "api_server", c->kube_api_server,
		"token_file", c->kube_token_file, "ca_file", c->kube_ca_file,
		"tracing", "enabled", c->tracing_enabled, "sampling", c->sampling,
		"custom_tags", kv_json(c->custom_tags, c->ncustom_tags),
		"otlp", "endpoint", c->otlp_endpoint, "protocol", c->otlp_protocol, "headers", headers,
		"timeout_ms", (json_int_t)c->otlp_timeout_ms,
		"max_queue_size", (json_int_t)c->max_queue_size,
		"max_export_batch_size", (json_int_t)c->max_export_batch_size,
		"schedule_delay_ms", (json_int_t)c->schedule_delay_ms,
		"request_spans", c->request_spans,
		"log", "level", log_level_str(c->log_level),
		"format", c->log_format == LOG_FMT_JSON ? "json" : "text",
		"redirect", "enabled", c->redirect_enabled, "pin_dir", c->redirect_pin_dir,
		"sysctl_dir", c->redirect_sysctl_dir ? c->redirect_sysctl_dir : "auto",
		"mark", (json_int_t)c->redirect_mark, "table", (json_int_t)c->redirect_table,
		"proxy", "connect_timeout_ms", (json_int_t)c->connect_timeout_ms,
		"max_connections", (json_int_t)c->max_connections,
		"buffer_size", (json_int_t)c->buffer_size, "drain_timeout_ms", (json_int_t)c->drain_timeout_ms,
		"hbone", "max_streams_per_connection", (json_int_t)c->hbone_max_streams,
		"idle_timeout_ms", (json_int_t)c->hbone_idle_timeout_ms,
		"ping_interval_ms", (json_int_t)c->hbone_ping_interval_ms,
		"window_size", (json_int_t)c->hbone_window, "cert_lifetime_s", (json_int_t)c->cert_lifetime_s,
		"max_inbound_connections", (json_int_t)c->hbone_max_inbound, "dial", c->hbone_dial,
		"name", c->waypoint_name, "namespace", c->waypoint_namespace,
		"load_balancing", c->waypoint_lb,
		"http2", "max_connections_per_endpoint", (json_int_t)c->wp_h2_conns_per_endpoint,
		"max_concurrent_streams", (json_int_t)c->wp_h2_client_streams,
		"max_pending_requests", (json_int_t)c->wp_h2_pending,
		"http1", "enable_trailers", c->wp_h1_trailers), c);
}

