/* SPDX-License-Identifier: Apache-2.0 */
/* What the agent records about each connection: istio_tcp_* metrics, the JSON access log
 * (open at debug, close at info, with trace_id/span_id) and the connection span. Installed
 * as the conn hooks. */
#ifndef AMBIT_AGENT_TELEMETRY_H
#define AMBIT_AGENT_TELEMETRY_H

#include "agent/conn.h"

struct telemetry_opts {
	const char *cluster_id;		/* source_cluster / destination_cluster label */
	struct otlp_tracer *tracer;	/* NULL: no spans */
};

/* Installs the conn hooks. 0 or -errno. */
int telemetry_init(const struct telemetry_opts *opts);
void telemetry_fini(void);
/* The "reporter" of a conn kind: "source" for outbound, "destination" for inbound. */
const char *telemetry_reporter(enum conn_kind kind);
const char *telemetry_direction(enum conn_kind kind);

#endif
