// SPDX-License-Identifier: Apache-2.0
/* Unit tests of agent/tracing.c's shared resolutions (tracing_conf_get): one conf per
 * (workload, direction) while nothing changes, a new one after a model is published (the
 * model's labels and the Istio objects both count), references held across a change stay
 * valid, and `reporting` follows Istio: disableSpanReporting, no provider and enableTracing
 * false turn it off, per direction (match.mode), sampling 0 does not. */
#include "harness.h"
#include "reqspan_rig.h"
#include "agent/tracing.h"
#include "agent/workloads.h"
#include "common/log.h"
#include "common/util.h"
#include "otlp/tracer.h"


static struct otlp_tracer *tracer;
static struct sockaddr_storage client_ip, server_ip;

/* The two pods of tests/reqspan_rig.h with the given MeshConfig and resources (JSON text,
 * NULL: none). */
/* The server in a namespace of its own (shop), for namespace-wide Telemetry objects. */
static const char model_json[] =
	"{\"nodes\":[{\"name\":\"node-1\",\"address\":\"172.18.0.2\"}],"
	"\"workloads\":["
	"{\"name\":\"client-1\",\"namespace\":\"default\",\"service_account\":\"client\","
	"\"node\":\"node-1\",\"addresses\":[\"10.244.1.5\"],\"labels\":{\"app\":\"client\"},"
	"\"enrolled\":true},"
	"{\"name\":\"server-1\",\"namespace\":\"shop\",\"service_account\":\"server\","
	"\"node\":\"node-1\",\"addresses\":[\"10.244.2.9\"],\"labels\":{\"app\":\"server\"},"
	"\"enrolled\":true}]}";

static void publish(const char *mesh, const char *resources)
{
	char err[256];
	int rc = rig_publish_with(model_json, mesh, resources, err, sizeof(err));
	if (rc)
		fprintf(stderr, "model: %s\n", err);
	REQUIRE(rc == 0);
}

#define MESH_OTEL "{\"defaultProviders\":{\"tracing\":[\"otel\"]},\"extensionProviders\":[" \
	"{\"name\":\"otel\",\"opentelemetry\":{\"service\":\"127.0.0.1\",\"port\":9}}]}"
#define TELEMETRY(ns, name, spec) "{\"apiVersion\":\"telemetry.istio.io/v1\",\"kind\":\"Telemetry\"," \
	"\"metadata\":{\"name\":\"" name "\",\"namespace\":\"" ns "\"," \
	"\"creationTimestamp\":\"2025-01-01T00:00:00Z\"},\"spec\":" spec "}"

static void setup(void)
{
	char err[256];
	struct otlp_config cfg;

	if (tracer)
		return;
	log_set_level(LOG_LVL_ERROR);
	sockaddr_parse("10.244.1.5", 0, &client_ip);
	sockaddr_parse("10.244.2.9", 0, &server_ip);
	publish(NULL, NULL);
	otlp_config_init(&cfg);
	cfg.export = false;
	tracer = otlp_tracer_new(&cfg, err, sizeof(err));
	otlp_config_fini(&cfg);
	REQUIRE(tracer);
	struct tracing_opts o = { .tracer = tracer };
	REQUIRE(tracing_init(&o) == 0);
}

static struct tracing_conf *client_conf(void)
{
	return tracing_conf_get("default", "client-1", &client_ip, true);
}

static struct tracing_conf *server_conf(void)
{
	return tracing_conf_get("shop", "server-1", &server_ip, false);
}

TEST(one_shared_conf_per_workload_and_direction)
{
	setup();
	struct tracing_conf *a = client_conf(), *b = client_conf();
	struct tracing_conf *in = tracing_conf_get("default", "client-1", &client_ip, false);
	REQUIRE(a && b && in);
	CHECK(a == b);		/* cached */
	CHECK(in != a);		/* the inbound side is another entry */
	CHECK(a->reporting && in->reporting);	/* no Istio objects: the tracer's settings */
	CHECK(!a->use);
	tracing_conf_unref(a);
	tracing_conf_unref(b);
	tracing_conf_unref(in);
}

TEST(a_published_model_makes_a_new_conf_and_old_references_stay_valid)
{
	setup();
	struct tracing_conf *old = client_conf();
	uint64_t gen = tracing_generation();
	REQUIRE(old);
	publish(MESH_OTEL, "[" TELEMETRY("default", "off", "{\"tracing\":[{\"disableSpanReporting\":true}]}") "]");
	CHECK(tracing_generation() != gen);
	struct tracing_conf *now = client_conf(), *srv = server_conf();
	REQUIRE(now && srv);
	CHECK(now != old);
	CHECK(now->use && !now->reporting);	/* namespace default: reporting off */
	CHECK(srv->use && srv->reporting);	/* namespace shop: the mesh default provider */
	CHECK(old->reporting);			/* what a conn resolved at its start stays */
	tracing_conf_unref(old);
	tracing_conf_unref(now);
	tracing_conf_unref(srv);

	/* a model change that is not about the Istio objects (the labels a selector reads)
	 * invalidates too */
	publish(MESH_OTEL, "[" TELEMETRY("shop", "sel", "{\"selector\":{\"matchLabels\":{\"app\":\"server\"}},"
					  "\"tracing\":[{\"disableSpanReporting\":true}]}") "]");
	srv = server_conf();
	REQUIRE(srv);
	CHECK(!srv->reporting);
	tracing_conf_unref(srv);
	publish(MESH_OTEL, "[" TELEMETRY("shop", "sel", "{\"selector\":{\"matchLabels\":{\"app\":\"other\"}},"
					  "\"tracing\":[{\"disableSpanReporting\":true}]}") "]");
	srv = server_conf();
	REQUIRE(srv);
	CHECK(srv->reporting);
	tracing_conf_unref(srv);
}

TEST(reporting_per_direction_follows_istio)
{
	setup();
	/* match.mode CLIENT: only the outbound side of the namespace stops reporting */
	publish(MESH_OTEL, "[" TELEMETRY("default", "cl", "{\"tracing\":[{\"match\":{\"mode\":\"CLIENT\"},"
					  "\"disableSpanReporting\":true}]}") "]");
	struct tracing_conf *out = client_conf();
	struct tracing_conf *in = tracing_conf_get("default", "client-1", &client_ip, false);
	REQUIRE(out && in);
	CHECK(!out->reporting);
	CHECK(in->reporting);
	tracing_conf_unref(out);
	tracing_conf_unref(in);

	/* sampling 0 still reports (a sampled parent is followed) */
	publish(MESH_OTEL, "[" TELEMETRY("default", "zero", "{\"tracing\":[{\"randomSamplingPercentage\":0}]}") "]");
	out = client_conf();
	REQUIRE(out);
	CHECK(out->reporting && out->use && out->opts.sampler);
	tracing_conf_unref(out);

	/* a Telemetry without a provider anywhere: none is configured, nothing is reported */
	publish("{}", "[" TELEMETRY("default", "np", "{\"tracing\":[{\"randomSamplingPercentage\":50}]}") "]");
	out = client_conf();
	REQUIRE(out);
	CHECK(!out->reporting);
	tracing_conf_unref(out);

	/* MeshConfig enableTracing false, no Telemetry: off */
	publish("{\"enableTracing\":false}", NULL);
	out = client_conf();
	REQUIRE(out);
	CHECK(!out->reporting);
	tracing_conf_unref(out);

	/* and back: no objects, the tracer's own settings report */
	publish(NULL, NULL);
	out = client_conf();
	REQUIRE(out);
	CHECK(out->reporting && !out->use);
	tracing_conf_unref(out);
}

TEST(a_workload_without_a_name_is_resolved_but_not_cached)
{
	setup();
	struct tracing_conf *a = tracing_conf_get("default", NULL, NULL, true);
	struct tracing_conf *b = tracing_conf_get("default", NULL, NULL, true);
	REQUIRE(a && b);
	CHECK(a != b);
	tracing_conf_unref(a);
	tracing_conf_unref(b);
}

int main(void)
{
	int rc = test_main("tracing_conf");
	tracing_fini(0);
	otlp_tracer_free(tracer);
	return rc;
}
