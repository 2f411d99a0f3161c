/* SPDX-License-Identifier: Apache-2.0 */
/* The tracing settings in force per workload: Istio's (the published model's MeshConfig and
 * Telemetry objects, resolved by istio/telemetry) where they say anything, else the agent's
 * own `tracing` keys (the tracer's settings). One OTLP sink per provider in use; when the
 * objects change, new connections get the new settings and a provider no longer used drains
 * its queue before its exporter closes. Shared by the node agent and the waypoint. */
#ifndef AMBIT_AGENT_TRACING_H
#define AMBIT_AGENT_TRACING_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent/workloads.h"
#include "istio/telemetry.h"
#include "otlp/sampler.h"
#include "otlp/tracer.h"

struct tracing_opts {
	struct otlp_tracer *tracer;	/* fallback settings, ring, batch options; borrowed */
	const char *root_ns;		/* NULL: istio-system */
};

/* Subscribes to model updates and applies the current model. Call once, before spans
 * start; 0 or -errno. */
int tracing_init(const struct tracing_opts *o);
/* Drops the settings and waits (at most drain_ms) for the provider exporters to drain.
 * Spans must have ended. */
void tracing_fini(uint32_t drain_ms);

/* A request header's value by name (borrowed, *len bytes, not NUL-terminated), or NULL. */
typedef const char *(*tracing_header_fn)(void *arg, const char *name, size_t *len);

#define TRACING_TAG_BUF 4096

/* The settings of one span about to start. */
struct tracing_pick {
	bool use;			/* pass &opts to span_start_opts; false: the tracer's own */
	struct span_opts opts;
	/* private */
	struct tracing_state *st;
	struct sampler sampler;
	struct otlp_header tags[TELEMETRY_MAX_TAGS];
	char buf[TRACING_TAG_BUF];
};

/* Fills p for a span of w (client: outbound, else inbound). Custom tags: literal, the
 * process's environment (with defaultValue), and request headers through hdr (NULL: not a
 * request span, header tags are left out). Any thread. tracing_pick_done after span_start. */
void tracing_pick(struct tracing_pick *p, const struct telemetry_subject *w, bool client,
		  tracing_header_fn hdr, void *arg);
void tracing_pick_done(struct tracing_pick *p);

/* The settings of one side's spans of a workload (its connection spans and request spans:
 * no request-header tags), resolved once and shared by every connection that starts while
 * they hold. Immutable once made; refcounted. */
struct tracing_conf {
	int refs;			/* atomic */
	bool use;			/* pass (a copy of) opts to span_start_opts; false: the
					 * tracer's own settings */
	bool reporting;			/* these spans are reported: Istio's disableSpanReporting,
					 * no provider, enableTracing false or a disabled tracer
					 * say they are not (request tracking is then not worth it) */
	struct span_opts opts;		/* span_id is NULL: a copy sets it per span */
	/* private */
	uint64_t gen;			/* tracing_generation() when resolved */
	struct tracing_state *st;	/* a reference: opts' sink and tag names live in it */
	struct sampler sampler;
	char *key;			/* "namespace|workload|c" in the cache; NULL: not cached */
	struct tracing_conf *next;
	struct otlp_header tags[];	/* opts.ntags, their values after them */
};

/* Changes whenever a model is published or the Istio objects' settings are rebuilt: what
 * was resolved before may be stale. Any thread. */
uint64_t tracing_generation(void);
/* The shared settings of the spans of workload ns/name (the model's workload at ip gives its
 * labels for Telemetry selectors), outbound (client) or inbound: from a cache per (workload,
 * direction) emptied when tracing_generation() moves, resolved on a miss. A new reference,
 * or NULL + errno (ENOMEM). Any thread. */
struct tracing_conf *tracing_conf_get(const char *ns, const char *name,
				      const struct sockaddr_storage *ip, bool client);
struct tracing_conf *tracing_conf_ref(struct tracing_conf *c);
/* NULL ok. */
void tracing_conf_unref(struct tracing_conf *c);

/* The admin API's /telemetry: providers (with export counters), diagnostics, and the
 * effective settings of m's workloads on node (every node when NULL), or only of ns/name
 * when ns is set. New reference or NULL. */
json_t *tracing_to_json(const struct model *m, const char *node, const char *ns, const char *name);

#endif
