/* SPDX-License-Identifier: Apache-2.0 */
/* Conns as the agents hold them for request spans, without sockets: a client pod on node 1
 * and a server pod on node 2 in a published model, an outbound conn (CLIENT spans) or an
 * inbound HBONE one (SERVER spans), and an HTTP exchange relayed through a conn's buffers and
 * hooks. Shared by tests/unit/test_reqspan.c, test_tracing_conf.c (its model publishing) and
 * bench/spanbench.c. */
#ifndef AMBIT_TESTS_REQSPAN_RIG_H
#define AMBIT_TESTS_REQSPAN_RIG_H

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/conn.h"
#include "agent/workloads.h"
#include "common/util.h"

static const char rig_model_json[] =
	"{\"nodes\":[{\"name\":\"node-1\",\"address\":\"172.18.0.2\"},"
	"{\"name\":\"node-2\",\"address\":\"172.18.0.3\"}],"
	"\"workloads\":["
	"{\"name\":\"client-1\",\"namespace\":\"default\",\"service_account\":\"client\","
	"\"node\":\"node-1\",\"addresses\":[\"10.244.1.5\"],\"canonical_service\":\"client\","
	"\"labels\":{\"app\":\"client\"},\"enrolled\":true},"
	"{\"name\":\"server-1\",\"namespace\":\"default\",\"service_account\":\"server\","
	"\"node\":\"node-2\",\"addresses\":[\"10.244.2.9\"],\"canonical_service\":\"server\","
	"\"labels\":{\"app\":\"server\"},\"enrolled\":true}],"
	"\"services\":[{\"name\":\"server\",\"namespace\":\"default\",\"addresses\":[\"10.96.0.10\"],"
	"\"selector\":{\"app\":\"server\"},\"ports\":[{\"port\":9080}]}]}";

/* Publishes the model; 0 or -EINVAL (err says why). */
static inline int rig_publish_model(char *err, size_t errlen)
{
	struct model *m = model_parse(rig_model_json, sizeof(rig_model_json) - 1, err, errlen);
	if (!m)
		return -EINVAL;
	model_publish(m);
	return 0;
}

/* Publishes the model of base (a JSON object) with "mesh_config" and "resources" added when
 * given; 0 or -EINVAL (err says why). */
static inline int rig_publish_with(const char *base, const char *mesh, const char *resources,
				   char *err, size_t errlen)
{
	size_t n = strlen(base);
	char *text = NULL;
	struct model *m;

	if (n < 2 || base[n - 1] != '}' ||
	    asprintf(&text, "%.*s%s%s%s%s}", (int)(n - 1), base, mesh ? ",\"mesh_config\":" : "",
		     mesh ? mesh : "", resources ? ",\"resources\":" : "", resources ? resources : "") < 0) {
		snprintf(err, errlen, "cannot build the model text");
		return -EINVAL;
	}
	m = model_parse(text, strlen(text), err, errlen);
	free(text);
	if (!m)
		return -EINVAL;
	model_publish(m);
	return 0;
}

static inline void rig_peer(struct conn_peer *p, const char *w, const char *sa, const char *app)
{
	char id[128];
	snprintf(id, sizeof(id), "spiffe://cluster.local/ns/default/sa/%s", sa);
	*p = (struct conn_peer){ .workload = strdup(w), .namespace = strdup("default"),
				 .service_account = strdup(sa), .canonical_service = strdup(app),
				 .principal = strdup(id) };
}

/* An opened conn of kind (telemetry's hooks ran), client-1:40000 to server-1:9080; an
 * inbound one gets what the CONNECT of the outbound conn from carries (its traceparent, and
 * whether its tracestate says the source reports request spans; NULL: a CONNECT with
 * neither). NULL on ENOMEM. */
static inline struct conn *rig_open_conn(struct loop *l, enum conn_kind kind, struct conn *from)
{
	struct conn_opts co = { 0 };
	struct conn *c = conn_new(l, &co);
	struct conn_info *ci;

	if (!c)
		return NULL;
	ci = conn_info(c);
	ci->kind = kind;
	sockaddr_parse("10.244.1.5", 40000, &ci->src);
	sockaddr_parse("10.244.2.9", 9080, &ci->orig_dst);
	ci->target = ci->orig_dst;
	if (kind == CONN_OUTBOUND)
		sockaddr_parse("172.18.0.3", 15008, &ci->via);
	rig_peer(&ci->source, "client-1", "client", "client");
	rig_peer(&ci->destination, "server-1", "server", "server");
	ci->service = strdup("server.default.svc.cluster.local");
	ci->mtls = true;
	if (from) {
		snprintf(ci->parent_traceparent, sizeof(ci->parent_traceparent), "%s",
			 conn_info(from)->traceparent);
		ci->request_spans = conn_info(from)->request_spans;
	}
	conn_opened(c);
	return c;
}

/* One exchange through c as the agent relays it: req read from the client side, resp from the
 * server side; what is written on is consumed (sent) only when consume. */
static inline void rig_relay(struct conn *c, const char *req, size_t reqlen, const char *resp,
			     size_t resplen, bool consume)
{
	conn_in_write(c, CONN_DOWN, req, reqlen);
	if (consume)
		conn_out_consume(c, CONN_UP, reqlen);
	conn_in_write(c, CONN_UP, resp, resplen);
	if (consume)
		conn_out_consume(c, CONN_DOWN, resplen);
}

#endif
