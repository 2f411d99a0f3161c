/* SPDX-License-Identifier: Apache-2.0 */
/* The JSON configuration of ambitd and ambit-waypoint (CONTRACT.md "Configuration"): every key
 * has a default, an unknown key or a bad value is an error naming file, key and value. */
#ifndef AMBIT_AGENT_CONFIG_H
#define AMBIT_AGENT_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/hbone.h"	/* struct hbone_limits */
#include "common/log.h"

enum config_role {
	CONFIG_ROLE_AGENT,	/* ambitd */
	CONFIG_ROLE_WAYPOINT,	/* ambit-waypoint: adds name/namespace, no node/redirect keys */
};

enum discovery_source {
	DISCOVERY_FILE,
	DISCOVERY_KUBERNETES,
};

struct config_kv {
	char *key;
	char *value;
};

struct config {
	char *path;			/* the file it came from ("" for defaults) */
	char *node_name;
	char *node_ip;
	char *trust_domain;
	char *root_namespace;		/* Istio's root namespace (istio-system): mesh-wide objects */
	char *ca_address;		/* https://host[:port] of the CA (istiod, ambit-ca); NULL =
					 * development mode: the agent signs with ca_key */
	char *ca_cert;			/* trust bundle (with ca_key: the signing CA's cert) */
	char *ca_key;			/* development only; never with ca_address */
	char *ca_token_file;		/* bearer token for the CA, re-read when it changes */

	enum discovery_source discovery_source;
	char *discovery_file;
	char *kube_api_server;		/* default: from KUBERNETES_SERVICE_HOST/_PORT */
	char *kube_token_file;
	char *kube_ca_file;

	double sampling;		/* percent, 0..100 */
	struct config_kv *custom_tags;
	int ncustom_tags;
	char *otlp_endpoint;		/* NULL: OTel default for the protocol */
	char *otlp_protocol;		/* "grpc" or "http/protobuf" */
	struct config_kv *otlp_headers;
	int notlp_headers;
	uint32_t otlp_timeout_ms;
	uint32_t max_queue_size;
	uint32_t max_export_batch_size;
	uint32_t schedule_delay_ms;
	bool tracing_enabled;
	bool request_spans;		/* per-request HTTP/1 spans from the agents (issue 17) */

	enum log_level log_level;
	enum log_format log_format;

	/* extensions (documented in docs/configuration.md) */
	bool redirect_enabled;		/* false: no BPF capture (tests, waypoint-only nodes) */
	char *redirect_pin_dir;
	char *redirect_sysctl_dir;	/* NULL: auto (redirect_opts.sysctl_dir) */
	uint32_t redirect_mark;
	uint32_t redirect_table;

	uint32_t connect_timeout_ms;
	uint32_t max_connections;
	uint32_t buffer_size;		/* per direction per connection */
	uint32_t drain_timeout_ms;	/* SIGTERM: how long streams may finish */

	uint32_t hbone_max_streams;	/* per pooled connection (100) */
	uint32_t hbone_idle_timeout_ms;
	uint32_t hbone_ping_interval_ms;
	uint32_t hbone_window;		/* HTTP/2 stream window, bytes */
	uint32_t hbone_max_inbound;	/* concurrent inbound 15008 connections (4096) */
	uint32_t hbone_model_wait_ms;	/* inbound CONNECT to a workload the model does not
					 * know as local and enrolled yet: held this long (5000) */
	uint32_t hbone_model_wait_max;	/* ... at most this many at a time (1024) */
	struct hbone_limits hbone_limits;	/* HTTP/2 abuse limits on 15008 (hbone.limits) */
	char *hbone_dial;		/* "node" (node IP:15008, SNI; default) or "pod" (the
					 * destination pod's IP:15008, no SNI: ztunnel's form) */
	uint32_t cert_lifetime_s;

	char *admin_address;		/* 127.0.0.1:15000 */
	char *waypoint_name;		/* waypoint role */
	char *waypoint_namespace;
	char *waypoint_lb;		/* "round_robin" or "least_request" */
	/* waypoint "http2": its HTTP/2 limits */
	uint32_t wp_h2_conns_per_endpoint;	/* max_connections_per_endpoint (4) */
	uint32_t wp_h2_client_streams;		/* max_concurrent_streams, per client (100) */
	uint32_t wp_h2_pending;			/* max_pending_requests, in all (1024) */
	bool wp_h1_trailers;			/* http1.enable_trailers (false, as Istio) */
};

/* Defaults for role. 0 or -ENOMEM. */
int config_init(struct config *c, enum config_role role);
/* Loads path over the defaults, then applies NODE_NAME / NODE_IP from the environment.
 * On error returns -EINVAL (or -errno reading the file) and writes one line to err:
 * "FILE: KEY: what is wrong". */
int config_load(struct config *c, enum config_role role, const char *path, char *err, size_t errlen);
/* The "discovery" and "log" objects of a config file into c, with j's file and key path in
 * errors: ambit-ca reads these sections exactly as ambitd does. 0 or -EINVAL. */
struct jx;
int config_load_discovery(struct jx *j, struct config *c, const json_t *o);
int config_load_log(struct jx *j, struct config *c, const json_t *o);
/* Checks cross-key constraints after loading (node_ip set for the agent, ...). */
int config_validate(const struct config *c, enum config_role role, char *err, size_t errlen);
void config_fini(struct config *c);
/* The effective configuration, as the admin API shows it (no secrets). New reference. */
json_t *config_to_json(const struct config *c);

#endif
