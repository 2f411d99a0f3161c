// SPDX-License-Identifier: Apache-2.0
/* Unit tests of agent/reqspan.c through the conn hooks: request spans are made in the loop
 * turn's before-sleep step after the relay's flush hooks (not while the bytes wait to be
 * written on), with the derived CLIENT ID on both sides; a turn with more events than the
 * queue holds, and a conn closing with events queued, lose none. */
#include "harness.h"
#include "agent/conn.h"
#include "agent/loop.h"
#include "agent/reqspan.h"
#include "agent/telemetry.h"
#include "agent/workloads.h"
#include "common/log.h"
#include "common/util.h"
#include "otlp/tracecontext.h"
#include "otlp/tracer.h"
#include "reqspan_rig.h"

static const char req[] = "GET /rr?q=1 HTTP/1.1\r\nHost: server:9080\r\n\r\n";
static const char resp[] = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

static struct otlp_tracer *tracer;
static struct loop *lp;

static void setup(void)
{
	char err[256];
	struct otlp_config cfg;

	if (tracer)
		return;
	log_set_level(LOG_LVL_ERROR);
	if (rig_publish_model(err, sizeof(err))) {
		fprintf(stderr, "model: %s\n", err);
		exit(1);
	}
	otlp_config_init(&cfg);
	cfg.export = false;
	cfg.ring_size = 512;
	tracer = otlp_tracer_new(&cfg, err, sizeof(err));
	otlp_config_fini(&cfg);
	struct telemetry_opts to = { .cluster_id = "Kubernetes", .node_name = "node-1",
				     .tracer = tracer, .request_spans = true };
	if (!tracer || telemetry_init(&to) || !(lp = loop_new())) {
		fprintf(stderr, "setup failed\n");
		exit(1);
	}
}

static struct conn *open_conn(enum conn_kind kind, struct conn *from)
{
	return rig_open_conn(lp, kind, from);
}

/* One exchange relayed through c; the written-on side is consumed only when `consume`. */
static void relay(struct conn *c, bool consume)
{
	rig_relay(c, req, sizeof(req) - 1, resp, sizeof(resp) - 1, consume);
}

struct found {
	int n;
	struct span_context ctx[64];
	uint8_t parent[64][SPAN_ID_LEN];
	enum span_kind kind[64];
	int64_t ordinal[64], status[64];
	bool order_ok;
};

static void collect(const struct span *s, void *arg)
{
	struct found *f = arg;
	const struct otlp_attr *o = span_get_attr(s, "http.request.ordinal");
	const struct otlp_attr *st = span_get_attr(s, "http.response.status_code");

	if (strcmp(s->name, "GET /rr") != 0 || f->n == 64)
		return;
	f->ctx[f->n] = s->ctx;
	memcpy(f->parent[f->n], s->parent_span_id, SPAN_ID_LEN);
	f->kind[f->n] = s->kind;
	f->ordinal[f->n] = o ? o->v.i : -1;
	f->status[f->n] = st ? st->v.i : -1;
	if (s->start_ns > s->end_ns)
		f->order_ok = false;
	f->n++;
}

static struct found *found_now(void)
{
	static struct found f;
	memset(&f, 0, sizeof(f));
	f.order_ok = true;
	otlp_tracer_recent(tracer, collect, &f);
	return &f;
}

/* The relay's flush hook: what request spans exist while the bytes wait to be written. */
static int spans_at_flush = -1;
static struct conn *flush_conn;

static void flush_hook(struct loop *l, void *arg)
{
	(void)l;
	(void)arg;
	if (spans_at_flush < 0 && flush_conn && conn_out_pending(flush_conn, CONN_UP))
		spans_at_flush = found_now()->n;
}

static void stop_task(struct loop *l, void *arg)
{
	(void)arg;
	loop_stop(l);
}

static void close_conn(struct conn *c)
{
	conn_abort(c, CONN_DOWN, 0, NULL, NULL);
}

TEST(spans_made_after_the_flush_with_derived_ids)
{
	struct span_context conn_ctx;
	uint8_t want[SPAN_ID_LEN];

	setup();
	struct conn *out = open_conn(CONN_OUTBOUND, NULL);
	REQUIRE(out);
	REQUIRE(conn_info(out)->request_spans);	/* its CONNECT says CLIENT spans come */
	struct conn *in = open_conn(CONN_INBOUND_HBONE, out);
	REQUIRE(in);
	REQUIRE(tracecontext_parse(conn_info(out)->traceparent, strlen(conn_info(out)->traceparent),
				   &conn_ctx) == 0);
	REQUIRE(loop_add_before_sleep(lp, flush_hook, NULL) == 0);
	flush_conn = out;
	relay(out, false);	/* the request still waits in the buffer at the flush */
	relay(in, true);
	CHECK_EQ_INT(found_now()->n, 0);	/* nothing made inside the read */
	REQUIRE(loop_defer(lp, stop_task, NULL) == 0);
	CHECK(loop_run(lp) == 0);
	CHECK_EQ_INT(spans_at_flush, 0);
	flush_conn = NULL;
	conn_out_consume(out, CONN_UP, sizeof(req) - 1);
	conn_out_consume(out, CONN_DOWN, sizeof(resp) - 1);

	struct found *f = found_now();
	REQUIRE(f->n == 2);
	reqspan_client_id(&conn_ctx, 0, want);
	CHECK(f->kind[0] == SPAN_KIND_CLIENT && f->kind[1] == SPAN_KIND_SERVER);
	CHECK(memcmp(f->ctx[0].span_id, want, SPAN_ID_LEN) == 0);
	CHECK(memcmp(f->parent[1], want, SPAN_ID_LEN) == 0);
	CHECK(memcmp(f->ctx[0].trace_id, conn_ctx.trace_id, SPAN_TRACE_ID_LEN) == 0);
	CHECK(memcmp(f->ctx[1].trace_id, conn_ctx.trace_id, SPAN_TRACE_ID_LEN) == 0);
	CHECK(f->status[0] == 200 && f->status[1] == 200);
	CHECK(f->ordinal[0] == 0 && f->ordinal[1] == 0);
	CHECK(f->order_ok);
	close_conn(out);
	close_conn(in);
	REQUIRE(loop_defer(lp, stop_task, NULL) == 0);
	loop_run(lp);	/* frees the conns */
}

/* More events in one turn than the queue holds, then a close with events queued: every
 * request gets its span, in order, ended with its status. */
TEST(a_busy_turn_and_a_close_lose_no_span)
{
	setup();
	int before = found_now()->n;
	struct conn *out = open_conn(CONN_OUTBOUND, NULL);
	REQUIRE(out);
	for (int i = 0; i < 40; i++)
		relay(out, true);
	REQUIRE(loop_defer(lp, stop_task, NULL) == 0);
	CHECK(loop_run(lp) == 0);
	struct found *f = found_now();
	REQUIRE(f->n == before + 40);
	for (int i = 0; i < 40; i++) {
		CHECK_EQ_INT(f->ordinal[before + i], i);
		CHECK_EQ_INT(f->status[before + i], 200);
	}
	/* a request and its answer queued, then the conn closes in the same turn */
	conn_in_write(out, CONN_DOWN, req, sizeof(req) - 1);
	conn_out_consume(out, CONN_UP, sizeof(req) - 1);
	static const char unavailable[] = "HTTP/1.1 503 x\r\ncontent-length: 0\r\n\r\n";
	conn_in_write(out, CONN_UP, unavailable, sizeof(unavailable) - 1);
	conn_out_consume(out, CONN_DOWN, sizeof(unavailable) - 1);
	conn_in_write(out, CONN_DOWN, req, sizeof(req) - 1);	/* never answered */
	close_conn(out);
	f = found_now();
	REQUIRE(f->n == before + 42);
	CHECK_EQ_INT(f->status[before + 40], 503);
	CHECK_EQ_INT(f->status[before + 41], -1);
	CHECK_EQ_INT(f->ordinal[before + 41], 41);
	REQUIRE(loop_defer(lp, stop_task, NULL) == 0);
	CHECK(loop_run(lp) == 0);	/* the queued task finds nothing left; the conn is freed */
	CHECK_EQ_INT(found_now()->n, before + 42);
}

/* The rig's model with MeshConfig and resources (JSON text) added. */
static void publish_with(const char *mesh, const char *resources)
{
	char err[256];
	int rc = rig_publish_with(rig_model_json, mesh, resources, err, sizeof(err));
	if (rc)
		fprintf(stderr, "model: %s\n", err);
	REQUIRE(rc == 0);
}

static int count_kind(struct found *f, int from, enum span_kind k)
{
	int n = 0;
	for (int i = from; i < f->n; i++)
		n += f->kind[i] == k;
	return n;
}

/* Istio's Telemetry: the client workload's span reporting off. Its outbound conns get no
 * tracker (no CLIENT spans); the server's inbound conns still get SERVER spans, under the
 * inbound conn span (nobody reports the CLIENT span they would name); without the object new
 * conns are traced again. */
TEST(span_reporting_disabled_for_a_workload_means_no_tracker)
{
	setup();
	publish_with("{\"defaultConfig\":{\"tracing\":{\"sampling\":100}},\"defaultProviders\":{\"tracing\":[\"otel\"]},\"extensionProviders\":["
		     "{\"name\":\"otel\",\"opentelemetry\":{\"service\":\"127.0.0.1\",\"port\":9}}]}",
		     "[{\"apiVersion\":\"telemetry.istio.io/v1\",\"kind\":\"Telemetry\","
		     "\"metadata\":{\"name\":\"quiet\",\"namespace\":\"default\"},"
		     "\"spec\":{\"selector\":{\"matchLabels\":{\"app\":\"client\"}},"
		     "\"tracing\":[{\"disableSpanReporting\":true}]}}]");
	int before = found_now()->n;
	struct conn *out = open_conn(CONN_OUTBOUND, NULL);
	REQUIRE(out);
	CHECK(!conn_observed(out));	/* no tracker: no parser CPU */
	CHECK(!conn_info(out)->request_spans);	/* its CONNECT says no CLIENT spans come */
	struct conn *in = open_conn(CONN_INBOUND_HBONE, out);
	REQUIRE(in);
	CHECK(conn_observed(in));
	relay(out, true);
	relay(in, true);
	REQUIRE(loop_defer(lp, stop_task, NULL) == 0);
	CHECK(loop_run(lp) == 0);
	struct found *f = found_now();
	CHECK_EQ_INT(count_kind(f, before, SPAN_KIND_CLIENT), 0);
	REQUIRE(count_kind(f, before, SPAN_KIND_SERVER) == 1);
	struct span_context out_ctx, in_ctx;
	REQUIRE(tracecontext_parse(conn_info(out)->traceparent, strlen(conn_info(out)->traceparent),
				   &out_ctx) == 0);
	REQUIRE(tracecontext_parse(conn_info(in)->traceparent, strlen(conn_info(in)->traceparent),
				   &in_ctx) == 0);
	CHECK(memcmp(f->ctx[f->n - 1].trace_id, out_ctx.trace_id, SPAN_TRACE_ID_LEN) == 0);
	CHECK(memcmp(f->parent[f->n - 1], in_ctx.span_id, SPAN_ID_LEN) == 0);
	close_conn(out);
	close_conn(in);

	/* the object goes: conns opened from now on are traced; */
	char err[256];
	REQUIRE(rig_publish_model(err, sizeof(err)) == 0);
	before = found_now()->n;
	out = open_conn(CONN_OUTBOUND, NULL);
	REQUIRE(out);
	CHECK(conn_observed(out));
	relay(out, true);
	REQUIRE(loop_defer(lp, stop_task, NULL) == 0);
	CHECK(loop_run(lp) == 0);
	CHECK_EQ_INT(count_kind(found_now(), before, SPAN_KIND_CLIENT), 1);
	close_conn(out);
	REQUIRE(loop_defer(lp, stop_task, NULL) == 0);
	loop_run(lp);
}

/* A connection that turns out not to be HTTP keeps no tracker: it is freed at its first
 * bytes, not with the connection (idle connections stay small). */
TEST(not_http_frees_the_tracker_at_once)
{
	static const char junk[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
	setup();
	uint64_t before = reqspan_live_count();
	struct conn *out = open_conn(CONN_OUTBOUND, NULL);
	REQUIRE(out);
	CHECK(conn_observed(out));
	CHECK(reqspan_live_count() == before + 1);
	rig_relay(out, junk, sizeof(junk) - 1, junk, sizeof(junk) - 1, true);
	REQUIRE(loop_defer(lp, stop_task, NULL) == 0);
	CHECK(loop_run(lp) == 0);
	CHECK(!conn_observed(out));
	CHECK(reqspan_live_count() == before);	/* before the conn closes */
	close_conn(out);
	CHECK(reqspan_live_count() == before);
	/* an HTTP connection keeps its tracker while it lasts */
	out = open_conn(CONN_OUTBOUND, NULL);
	REQUIRE(out);
	relay(out, true);
	REQUIRE(loop_defer(lp, stop_task, NULL) == 0);
	CHECK(loop_run(lp) == 0);
	CHECK(conn_observed(out) && reqspan_live_count() == before + 1);
	close_conn(out);
	CHECK(reqspan_live_count() == before);
	REQUIRE(loop_defer(lp, stop_task, NULL) == 0);
	loop_run(lp);
}

int main(void)
{
	int rc = test_main("reqspan");
	telemetry_fini(0);
	otlp_tracer_free(tracer);
	loop_free(lp);
	return rc;
}
