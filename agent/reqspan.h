/* SPDX-License-Identifier: Apache-2.0 */
/* Per-request spans of a node agent (docs/request-spans.md): the passive HTTP/1 tracker run
 * over a conn's bytes, a CLIENT span per request on the source node, a SERVER span (its
 * child) on the destination node, the CLIENT span's ID derived on both nodes from the
 * connection's trace context and the request's ordinal. */
#ifndef AMBIT_AGENT_REQSPAN_H
#define AMBIT_AGENT_REQSPAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/conn.h"
#include "otlp/span.h"

struct reqspan;

/* Does c get request spans? Outbound conns from a pod and inbound HBONE conns, neither to
 * nor from a waypoint (the waypoint traces those requests itself). `on` is the agent's
 * switch (tracing.request_spans), `reporting` whether the spans of the workload the agent
 * acts for are reported (its Telemetry resolution: agent/tracing.h tracing_conf). */
bool reqspan_wanted(const struct conn_info *ci, bool on, bool reporting);
struct tracing_conf;
/* Tracking state for c (info filled, conn span started), its spans made with tc (borrowed:
 * must outlive r; NULL: the tracer's own settings). client_reported (inbound): the source
 * workload's CLIENT request spans are reported, so the SERVER spans name them as parents;
 * else their parent is the request's traceparent or the inbound conn span. NULL + errno
 * (ENOMEM). */
struct reqspan *reqspan_new(struct conn *c, const struct tracing_conf *tc, bool client_reported);
/* Bytes read from `from` (CONN_DOWN: the client's requests). False once nothing more is
 * worth feeding (not HTTP, upgraded, stopped): the caller may stop observing. */
bool reqspan_feed(struct reqspan *r, enum conn_side from, const uint8_t *p, size_t n);
void reqspan_eof(struct reqspan *r, enum conn_side from);
/* The conn closed: requests without a response end as errors; frees r. NULL ok. */
void reqspan_free(struct reqspan *r, const char *why);
/* Tracking ended (not HTTP, upgraded or stopped) with no request awaiting its answer: r can
 * be freed now rather than with its connection (an idle non-HTTP connection keeps no tracker). */
bool reqspan_settled(const struct reqspan *r);
/* Trackers alive now (loop thread). */
uint64_t reqspan_live_count(void);

/* The CLIENT span ID of request `ordinal` on the connection whose outbound span is conn
 * (the CONNECT traceparent): never zero, the same on both nodes. */
void reqspan_client_id(const struct span_context *conn, uint64_t ordinal, uint8_t out[SPAN_ID_LEN]);

/* Trackers that stopped on malformed input or a bound (ambit_request_tracing_stopped_total). */
uint64_t reqspan_stopped_count(void);

#endif
