/* SPDX-License-Identifier: Apache-2.0 */
/* Istio's tracing configuration: MeshConfig's OpenTelemetry extension providers and defaults,
 * and `Telemetry` objects (telemetry.istio.io v1, v1alpha1), compiled into an immutable set
 * and resolved per workload the way istiod does (root namespace < namespace < selector or
 * targetRefs, field by field), with the object each effective field came from. */
#ifndef AMBIT_ISTIO_TELEMETRY_H
#define AMBIT_ISTIO_TELEMETRY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/labels.h"

#define TELEMETRY_MAX_PROVIDERS	64	/* extensionProviders kept */
#define TELEMETRY_MAX_TAGS	32	/* customTags per tracing entry */
#define TELEMETRY_MAX_HEADERS	32	/* http.headers / grpc.initialMetadata per provider */
#define TELEMETRY_MAX_DIAGS	256	/* diagnostics kept per set (more are counted) */
/* Istio's default sampling when MeshConfig has none (PILOT_TRACE_SAMPLING's default). */
#define TELEMETRY_DEFAULT_SAMPLING 1.0

struct telemetry_header {
	char *name;
	char *value;
};

/* An `extensionProviders[]` entry of type opentelemetry whose service resolved. */
struct telemetry_provider {
	char *name;
	char *service;		/* as written: "host" or "ns/host" */
	char *host;		/* the host part */
	uint16_t port;
	bool http;		/* OTLP/HTTP (`http` present), else OTLP/gRPC */
	char *path;		/* http: the request path, default "/v1/traces"; grpc: NULL */
	uint32_t timeout_ms;	/* http.timeout or grpc.timeout; 0 = the exporter's default */
	struct telemetry_header *headers;	/* http.headers or grpc.initialMetadata */
	int nheaders;
	char *endpoint;		/* "http://host:port[path]": the exporter's URL */
	bool in_use;		/* defaultProviders.tracing's, or named by a Telemetry in the set */
};

enum telemetry_tag_kind {
	TELEMETRY_TAG_LITERAL,		/* value is the attribute's value */
	TELEMETRY_TAG_ENVIRONMENT,	/* value names an environment variable of the process */
	TELEMETRY_TAG_HEADER,		/* value names a request header (request spans only) */
};

struct telemetry_tag {
	char *name;		/* the span attribute */
	enum telemetry_tag_kind kind;
	char *value;
	char *default_value;	/* environment/header: when unset or absent; NULL = none */
};

/* Where a field's value came from: "mesh_config" (MeshConfig), "default" (Istio's default),
 * or "Telemetry <ns>/<name>" (borrowed from the set). */
struct telemetry_mode {
	const struct telemetry_provider *provider;	/* NULL: no provider (disabled) */
	bool disabled;			/* no span reporting: IDs and traceparent only */
	double sampling;		/* percent, 0..100 in 0.01 steps */
	const struct telemetry_tag *tags;	/* customTags, replaced as a whole per level */
	int ntags;
	const char *provider_from, *disabled_from, *sampling_from, *tags_from;
};

/* The effective tracing of one workload. configured false: neither a Telemetry with tracing
 * nor `defaultProviders.tracing` applies, and the caller's own settings (ambit's `tracing`
 * keys) stand, unless mesh_disabled (MeshConfig `enableTracing: false`, istiod's legacy
 * path) turns reporting off. */
struct telemetry_effective {
	bool configured;
	bool mesh_disabled;
	struct telemetry_mode client;	/* outbound spans (match.mode CLIENT) */
	struct telemetry_mode server;	/* inbound spans (match.mode SERVER) */
};

/* The workload whose tracing is resolved; borrowed. A waypoint (waypoint true, name = its
 * Gateway's name) is selected by `targetRefs` naming its Gateway, a workload by
 * `selector.matchLabels`. */
struct telemetry_subject {
	const char *namespace;
	const char *name;
	const struct label *labels;
	int nlabels;
	bool waypoint;
};

struct telemetry_set;

/* Compiles mesh_config (a MeshConfig JSON object, or NULL) and the Telemetry objects of
 * resources (a JSON array of Kubernetes objects, other kinds ignored; or NULL) with root_ns
 * as the root namespace (NULL: "istio-system"). Both JSON values are only read. Bad parts
 * are left out, each with one diagnostic (telemetry_set_diag); never fails on input.
 * NULL + errno on ENOMEM only. */
struct telemetry_set *telemetry_set_new(const json_t *mesh_config, const json_t *resources,
					const char *root_ns);
void telemetry_set_free(struct telemetry_set *s);

/* Diagnostics, one line each naming the object and the field ("Telemetry ns/x:
 * spec.tracing[0].randomSamplingPercentage: 120 is not in 0..100; ignored"); borrowed. */
int telemetry_set_ndiags(const struct telemetry_set *s);
const char *telemetry_set_diag(const struct telemetry_set *s, int i);
/* The usable providers, in MeshConfig order; borrowed. */
int telemetry_set_nproviders(const struct telemetry_set *s);
const struct telemetry_provider *telemetry_set_provider(const struct telemetry_set *s, int i);
/* Whether any Istio tracing configuration exists at all (a Telemetry with tracing, or
 * defaultProviders.tracing, or enableTracing false). */
bool telemetry_set_any(const struct telemetry_set *s);

/* Resolves w's tracing into out; pointers in out are borrowed from s. */
void telemetry_resolve(const struct telemetry_set *s, const struct telemetry_subject *w,
		       struct telemetry_effective *out);

/* JSON of one direction's settings (ambitctl telemetry): provider, endpoint, protocol,
 * sampling, disabled, custom_tags, and `from` per field. New reference or NULL. */
json_t *telemetry_mode_json(const struct telemetry_mode *m);
/* Two settings produce the same spans (provider, disabled, sampling, tags). */
bool telemetry_mode_equal(const struct telemetry_mode *a, const struct telemetry_mode *b);
const char *telemetry_tag_kind_str(enum telemetry_tag_kind k);

#endif
