/* SPDX-License-Identifier: Apache-2.0 */
/* What the agent records about each connection: istio_tcp_* metrics, the JSON access log
 * (open at debug, close at info, with trace_id/span_id) and one span per connection per side.
 * Installed as the conn hooks. */
#ifndef AMBIT_AGENT_TELEMETRY_H
#define AMBIT_AGENT_TELEMETRY_H

#include <jansson.h>

#include "agent/conn.h"
#include "otlp/span.h"

struct otlp_tracer;

struct telemetry_opts {
	const char *cluster_id;		/* source_cluster / destination_cluster label */
	const char *node_name;		/* k8s.node.name of the resources */
	struct otlp_tracer *tracer;	/* NULL: no spans */
	const char *root_ns;		/* Istio's root namespace (agent/tracing.h); NULL: default */
	bool request_spans;		/* tracing.request_spans: per-request HTTP/1 spans */
};

/* Installs the conn hooks, registers the span metrics and, with a tracer, starts the
 * per-workload tracing settings (agent/tracing.h). 0 or -errno. */
int telemetry_init(const struct telemetry_opts *opts);
/* Drops the cached resources and the tracing settings, giving the provider exporters up to
 * drain_ms to drain; call before freeing the tracer. */
void telemetry_fini(uint32_t drain_ms);
/* The "reporter" of a conn kind: "source" for outbound, "destination" for inbound. */
const char *telemetry_reporter(enum conn_kind kind);
const char *telemetry_direction(enum conn_kind kind);
/* For request spans (agent/reqspan.c): the cached resource of the workload a span is
 * for (borrowed, NULL ok), and the source.* / destination.* attributes of a conn. */
struct otlp_resource *telemetry_resource_for(const struct conn_peer *p);
struct span;
void telemetry_set_peers(struct span *s, const struct conn_info *ci);
/* A span (new, the caller ends it) for the workload the agent acts for on ci's side, with the
 * settings tc (agent/tracing.h) resolved for it at the conn's start (NULL: the tracer's own);
 * span_id (SPAN_ID_LEN bytes) is its ID, NULL: random. NULL on ENOMEM or without a tracer. */
struct tracing_conf;
struct span *telemetry_span_start(const struct conn_info *ci, const struct tracing_conf *tc,
				  const char *name, enum span_kind kind,
				  const struct span_context *parent, const uint8_t *span_id);
/* Recent finished spans (admin API /spans), newest last; trace_id hex filter or NULL, at
 * most limit. New reference. */
json_t *telemetry_spans_json(const char *trace_id, size_t limit);

#endif
