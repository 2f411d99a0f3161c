/* SPDX-License-Identifier: Apache-2.0 */
/* Prometheus metrics: ztunnel's istio_tcp_* counters with their labels, plus the agent's own
 * counters and gauges, rendered in the text exposition format. Loop thread only, except
 * gauges whose callbacks read atomics. */
#ifndef AMBIT_AGENT_METRICS_H
#define AMBIT_AGENT_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* The label values of one istio_tcp_* series (NULL = "unknown"). */
struct metrics_tcp_labels {
	const char *reporter;			/* "source" or "destination" */
	const char *source_workload;
	const char *source_workload_namespace;
	const char *source_principal;
	const char *source_app;
	const char *source_cluster;
	const char *destination_workload;
	const char *destination_workload_namespace;
	const char *destination_principal;
	const char *destination_app;
	const char *destination_service;
	const char *destination_cluster;
	const char *connection_security_policy;	/* "mutual_tls" or "unknown" */
	const char *response_flags;		/* "-" when none */
};

enum metrics_tcp_counter {
	METRICS_TCP_OPENED,
	METRICS_TCP_CLOSED,
	METRICS_TCP_SENT_BYTES,
	METRICS_TCP_RECEIVED_BYTES,
	METRICS_TCP_NCOUNTERS,
};

/* Adds v to a counter of the series; -ENOMEM when a new series cannot be made, -ENOSPC past
 * the series bound (the sample is then counted in ambit_metrics_series_dropped_total). */
int metrics_tcp_add(const struct metrics_tcp_labels *l, enum metrics_tcp_counter which, uint64_t v);

/* An agent metric read at scrape time. */
typedef double (*metrics_value_fn)(void *arg);
/* type is "counter" or "gauge". At most 64. name may carry labels (`name{k="v"}`, borrowed,
 * must stay valid): the series of one family are registered one after the other. */
int metrics_register(const char *name, const char *help, const char *type, metrics_value_fn fn,
		     void *arg);

/* Renders everything; returns a malloc'ed string (NULL on ENOMEM), *len its length. */
char *metrics_render(size_t *len);
void metrics_reset(void);

#endif
