// SPDX-License-Identifier: Apache-2.0
/* Per-connection telemetry from the conn hooks: metrics at open and close, an access log line
 * at each (debug on open, info on close). */
#include "agent/telemetry.h"
#include "agent/metrics.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static struct telemetry_opts topts;

const char *telemetry_reporter(enum conn_kind kind)
{
	return kind == CONN_OUTBOUND ? "source" : "destination";
}

const char *telemetry_direction(enum conn_kind kind)
{
	return kind == CONN_OUTBOUND ? "outbound" : "inbound";
}

static void labels_of(const struct conn_info *ci, const char *flag, struct metrics_tcp_labels *l)
{
	memset(l, 0, sizeof(*l));
	l->reporter = telemetry_reporter(ci->kind);
	l->source_workload = ci->source.workload;
	l->source_workload_namespace = ci->source.namespace;
	l->source_principal = ci->source.principal;
	l->source_app = ci->source.canonical_service;
	l->source_cluster = topts.cluster_id;
	l->destination_workload = ci->destination.workload;
	l->destination_workload_namespace = ci->destination.namespace;
	l->destination_principal = ci->destination.principal;
	l->destination_app = ci->destination.canonical_service;
	l->destination_service = ci->service;
	l->destination_cluster = topts.cluster_id;
	l->connection_security_policy = ci->mtls ? "mutual_tls" : "unknown";
	l->response_flags = flag ? flag : "-";
}

/* The access log line of a conn; fields as ztunnel names them. */
static void access_log(struct conn *c, enum log_level lvl, const char *msg, int err,
		       const char *flag, const char *reason)
{
	const struct conn_info *ci = conn_info(c);
	char src[ADDR_STR_LEN], dst[ADDR_STR_LEN], tgt[ADDR_STR_LEN], via[ADDR_STR_LEN];
	char sent[24], recv[24], dur[24], id[24];
	const char *trace_id = NULL, *span_id = NULL;

	if (!log_enabled(lvl))
		return;
	snprintf(id, sizeof(id), "%" PRIu64, conn_id(c));
	snprintf(sent, sizeof(sent), "%" PRIu64, conn_bytes(c, CONN_DOWN));
	snprintf(recv, sizeof(recv), "%" PRIu64, conn_bytes(c, CONN_UP));
	snprintf(dur, sizeof(dur), "%" PRIu64, now_mono_ms() - conn_start_ms(c));
	struct log_field f[] = {
		{ "conn_id", id, true },
		{ "direction", telemetry_direction(ci->kind), false },
		{ "src.addr", sockaddr_str(&ci->src, src, sizeof(src)), false },
		{ "src.workload", ci->source.workload, false },
		{ "src.namespace", ci->source.namespace, false },
		{ "src.identity", ci->source.principal, false },
		{ "dst.addr", sockaddr_str(&ci->orig_dst, dst, sizeof(dst)), false },
		{ "dst.target", ci->target.ss_family ? sockaddr_str(&ci->target, tgt, sizeof(tgt)) : NULL, false },
		{ "dst.hbone_addr", ci->via.ss_family ? sockaddr_str(&ci->via, via, sizeof(via)) : NULL, false },
		{ "dst.service", ci->service, false },
		{ "dst.workload", ci->destination.workload, false },
		{ "dst.namespace", ci->destination.namespace, false },
		{ "dst.identity", ci->destination.principal, false },
		{ "connection_security_policy", ci->mtls ? "mutual_tls" : "unknown", false },
		{ "bytes_sent", lvl == LOG_LVL_INFO ? sent : NULL, true },
		{ "bytes_recv", lvl == LOG_LVL_INFO ? recv : NULL, true },
		{ "duration_ms", lvl == LOG_LVL_INFO ? dur : NULL, true },
		{ "response_flags", flag, false },
		{ "error", err ? (reason ? reason : strerror(-err)) : NULL, false },
		{ "trace_id", trace_id, false },
		{ "span_id", span_id, false },
	};
	log_fields(lvl, f, (int)ARRAY_SIZE(f), "%s", msg);
}

static void on_opened(struct conn *c)
{
	struct metrics_tcp_labels l;
	labels_of(conn_info(c), NULL, &l);
	metrics_tcp_add(&l, METRICS_TCP_OPENED, 1);
	access_log(c, LOG_LVL_DEBUG, "connection opened", 0, NULL, NULL);
}

static void on_closed(struct conn *c, int err, const char *flag, const char *reason)
{
	struct metrics_tcp_labels l;
	const struct conn_info *ci = conn_info(c);

	if (err && !flag)
		flag = CONN_FLAG_UPSTREAM_RESET;
	/* A failure's flag makes its own closed series, as Istio reports it; bytes stay on the
	 * series of the open. */
	labels_of(ci, flag, &l);
	metrics_tcp_add(&l, METRICS_TCP_CLOSED, 1);
	labels_of(ci, NULL, &l);
	metrics_tcp_add(&l, METRICS_TCP_SENT_BYTES, conn_bytes(c, CONN_DOWN));
	metrics_tcp_add(&l, METRICS_TCP_RECEIVED_BYTES, conn_bytes(c, CONN_UP));
	access_log(c, LOG_LVL_INFO, "connection complete", err, flag, reason);
}

int telemetry_init(const struct telemetry_opts *opts)
{
	struct conn_hooks h = { .opened = on_opened, .closed = on_closed };
	topts = *opts;
	conn_set_hooks(&h);
	return 0;
}

void telemetry_fini(void)
{
	struct conn_hooks h = { 0 };
	conn_set_hooks(&h);
}
