/* SPDX-License-Identifier: Apache-2.0 */
/* Tracing configuration with defaults: filled by the agent from its JSON (tracing.*), then
 * overridden by the OTEL_* environment variables as the OTel SDK configuration spec says. */
#ifndef AMBIT_OTLP_CONFIG_H
#define AMBIT_OTLP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "otlp/batcher.h"
#include "otlp/sampler.h"
#include "otlp/span.h"

#define OTLP_GRPC_DEFAULT_ENDPOINT	"http://localhost:4317"
#define OTLP_HTTP_DEFAULT_ENDPOINT	"http://localhost:4318"
#define OTLP_MAX_TAGS			32
#define OTLP_MAX_HEADERS		32

enum otlp_protocol {
	OTLP_PROTO_GRPC,		/* "grpc" */
	OTLP_PROTO_HTTP_PROTOBUF,	/* "http/protobuf" */
};

struct otlp_header {
	char *name;	/* owned */
	char *value;	/* owned */
};

struct otlp_config {
	bool enabled;			/* false: spans get IDs (propagation) but nothing is kept */
	bool export;			/* false (OTEL_TRACES_EXPORTER=none): ring only */
	enum otlp_protocol protocol;
	char *endpoint;			/* owned; NULL: the protocol's default */
	bool endpoint_is_signal;	/* endpoint is the full traces URL (..._TRACES_ENDPOINT) */
	bool insecure;			/* grpc, endpoint without scheme: plaintext (..._INSECURE) */
	char *ca_file;			/* owned; PEM trust anchors for https (..._CERTIFICATE),
					 * NULL = the system store */
	char *client_cert;		/* owned; PEM client certificate (..._CLIENT_CERTIFICATE) */
	char *client_key;		/* owned; PEM client key (..._CLIENT_KEY) */
	struct otlp_header headers[OTLP_MAX_HEADERS];
	size_t nheaders;
	struct otlp_header tags[OTLP_MAX_TAGS];	/* custom tags: literal attributes on every span */
	size_t ntags;
	double sampling;		/* percent 0..100 (tracing.sampling); default 100 */
	enum sampler_kind sampler;	/* default parentbased_traceidratio(sampling) */
	struct batcher_opts batch;	/* export_timeout_ms doubles as the OTLP exporter timeout */
	uint32_t shutdown_timeout_ms;	/* flush on shutdown; default 5000 */
	uint32_t ring_size;		/* recent spans kept for the admin API; default 1024 */
	char *service_name;		/* owned; OTEL_SERVICE_NAME, NULL = none */
	struct otlp_attrs resource_attrs;	/* OTEL_RESOURCE_ATTRIBUTES */
};

/* Defaults. Never fails. */
void otlp_config_init(struct otlp_config *c);
void otlp_config_fini(struct otlp_config *c);

/* Deep copy into dst (initialised by this call). 0 or -ENOMEM (dst then empty). */
int otlp_config_copy(struct otlp_config *dst, const struct otlp_config *src);

/* Setters for the agent's JSON values; err gets one line naming the problem. 0 or -EINVAL
 * (-ENOMEM). Strings are copied. */
int otlp_config_set_protocol(struct otlp_config *c, const char *name, char *err, size_t errlen);
/* "http://host:port[/path]" or "https://..."; checked by otlp_url_parse. For grpc also
 * "host:port" without a scheme: https, or http when insecure (OTLP exporter spec). */
int otlp_config_set_endpoint(struct otlp_config *c, const char *url, char *err, size_t errlen);
int otlp_config_set_sampling(struct otlp_config *c, double percent, char *err, size_t errlen);
/* Adds or replaces a custom tag / exporter header. -E2BIG past the bound. */
int otlp_config_add_tag(struct otlp_config *c, const char *key, const char *value, char *err, size_t errlen);
int otlp_config_add_header(struct otlp_config *c, const char *name, const char *value, char *err, size_t errlen);

/* Applies the OTEL_* environment: OTEL_SDK_DISABLED, OTEL_SERVICE_NAME,
 * OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_TRACES_EXPORTER (otlp|none),
 * OTEL_EXPORTER_OTLP_{,TRACES_}{ENDPOINT,PROTOCOL,HEADERS,TIMEOUT,INSECURE,CERTIFICATE,
 * CLIENT_CERTIFICATE,CLIENT_KEY} (the TRACES_ one wins, key by key for HEADERS),
 * OTEL_BSP_{SCHEDULE_DELAY,EXPORT_TIMEOUT,MAX_QUEUE_SIZE,MAX_EXPORT_BATCH_SIZE}. Empty
 * variables are unset ones. A bad value is refused: -EINVAL with err naming the variable
 * and value (the caller decides to exit or warn); what came before it stays applied. */
int otlp_config_apply_env(struct otlp_config *c, char *err, size_t errlen);
/* Cross-field checks (batch <= queue, ...). 0 or -EINVAL with err. */
int otlp_config_validate(const struct otlp_config *c, char *err, size_t errlen);

/* The URL the exporter uses: for http/protobuf, endpoint + "/v1/traces" unless the
 * endpoint is signal-specific; for grpc, the endpoint, given the scheme insecure says when
 * it has none. Into buf; 0 or -ENOSPC. */
int otlp_config_traces_url(const struct otlp_config *c, char *buf, size_t buflen);
const char *otlp_protocol_str(enum otlp_protocol p);
/* The sampler the config describes. */
int otlp_config_sampler(const struct otlp_config *c, struct sampler *out);

/* Parses "w3c-baggage-like" header lists ("k=v,k2=v2", percent-decoded values) as
 * OTEL_EXPORTER_OTLP_HEADERS uses; adds each to c's headers. 0 or -EINVAL with err. */
int otlp_config_parse_headers(struct otlp_config *c, const char *s, char *err, size_t errlen);

/* A parsed endpoint URL. */
struct otlp_url {
	bool https;
	char host[256];		/* without brackets for IPv6 */
	uint16_t port;		/* the scheme's default (80/443) if absent */
	char path[512];		/* "" or "/..." */
};
/* Parses "http[s]://host[:port][/path]". 0 or -EINVAL with err saying what is wrong. */
int otlp_url_parse(const char *url, struct otlp_url *out, char *err, size_t errlen);

#endif
