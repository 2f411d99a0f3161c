// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the mesh model: parsing, strict errors, lookups, endpoints, waypoints. */
#include "harness.h"
#include "agent/workloads.h"
#include "common/util.h"

static const char good[] =
	"{\"nodes\":[{\"name\":\"node-1\",\"address\":\"172.18.0.2\"},"
	"{\"name\":\"node-2\",\"address\":\"172.18.0.3\"}],"
	"\"workloads\":["
	"{\"uid\":\"default/api-1\",\"name\":\"api-1\",\"namespace\":\"default\","
	"\"service_account\":\"api\",\"node\":\"node-1\",\"addresses\":[\"10.244.1.5\"],"
	"\"canonical_service\":\"api\",\"labels\":{\"app\":\"api\",\"tier\":\"web\"},\"enrolled\":true,\"waypoint\":null},"
	"{\"name\":\"api-2\",\"namespace\":\"default\",\"node\":\"node-2\",\"addresses\":[\"10.244.2.5\",\"fd00::5\"],"
	"\"labels\":{\"app\":\"api\"},\"enrolled\":false},"
	"{\"name\":\"db-1\",\"namespace\":\"other\",\"node\":\"node-2\",\"addresses\":[\"10.244.2.9\"],"
	"\"labels\":{\"app\":\"api\"},\"enrolled\":true},"
	"{\"name\":\"waypoint-1\",\"namespace\":\"default\",\"node\":\"node-2\",\"addresses\":[\"10.244.2.20\"],"
	"\"labels\":{\"gateway\":\"waypoint\"}}],"
	"\"services\":["
	"{\"name\":\"api\",\"namespace\":\"default\",\"addresses\":[\"10.96.0.10\"],"
	"\"selector\":{\"app\":\"api\"},\"ports\":[{\"port\":80,\"target_port\":8080},{\"port\":443}],"
	"\"waypoint\":{\"name\":\"waypoint\",\"namespace\":\"default\"}},"
	"{\"name\":\"waypoint\",\"namespace\":\"default\",\"addresses\":[\"10.96.0.20\"],"
	"\"selector\":{\"gateway\":\"waypoint\"},\"ports\":[{\"port\":15008}]},"
	"{\"name\":\"headless\",\"namespace\":\"default\",\"addresses\":[]}]}";

static struct sockaddr_storage ip(const char *s)
{
	struct sockaddr_storage ss;
	ip_parse(s, &ss);
	return ss;
}

TEST(parse_and_lookup)
{
	char err[256];
	struct model *m = model_parse(good, sizeof(good) - 1, err, sizeof(err));
	REQUIRE(m != NULL);
	CHECK_EQ_INT(m->nnodes, 2);
	CHECK_EQ_INT(m->nworkloads, 4);
	CHECK_EQ_INT(m->nservices, 3);
	struct sockaddr_storage a = ip("10.244.1.5");
	const struct model_workload *w = model_workload_by_ip(m, &a);
	REQUIRE(w != NULL);
	CHECK_EQ_STR(w->name, "api-1");
	CHECK_EQ_STR(w->service_account, "api");
	CHECK(w->enrolled);
	a = ip("fd00::5");
	w = model_workload_by_ip(m, &a);
	REQUIRE(w != NULL);
	CHECK_EQ_STR(w->uid, "default/api-2");		/* default uid */
	CHECK_EQ_STR(w->service_account, "default");	/* default SA */
	CHECK_EQ_STR(w->canonical_service, "api-2");
	CHECK(!w->enrolled);
	a = ip("10.96.0.10");
	CHECK(model_workload_by_ip(m, &a) == NULL);
	const struct model_service *s = model_service_by_vip(m, &a);
	REQUIRE(s != NULL);
	CHECK_EQ_INT(model_service_target_port(s, 80), 8080);
	CHECK_EQ_INT(model_service_target_port(s, 443), 443);
	CHECK_EQ_INT(model_service_target_port(s, 81), 0);
	a = ip("10.1.1.1");
	CHECK(model_service_by_vip(m, &a) == NULL);
	CHECK(model_node_by_name(m, "node-2") != NULL);
	CHECK(model_node_by_name(m, "node-3") == NULL);
	model_unref(m);
}

TEST(endpoints_follow_selector_and_namespace)
{
	char err[256];
	struct model *m = model_parse(good, sizeof(good) - 1, err, sizeof(err));
	REQUIRE(m != NULL);
	const struct model_service *s = model_service_by_name(m, "default", "api");
	REQUIRE(s != NULL);
	/* db-1 has app=api but lives in namespace other: not an endpoint. */
	CHECK_EQ_INT(s->nendpoints, 2);
	const struct model_service *h = model_service_by_name(m, "default", "headless");
	REQUIRE(h != NULL);
	CHECK_EQ_INT(h->nendpoints, 0);
	const struct model_service *wp = model_waypoint_for(m, s, NULL);
	REQUIRE(wp != NULL);
	CHECK_EQ_STR(wp->name, "waypoint");
	CHECK_EQ_INT(wp->nendpoints, 1);
	CHECK(model_waypoint_for(m, wp, NULL) == NULL);
	model_unref(m);
}

/* The inbound side's guess of the dialled service: an endpoint and a matching target port. */
TEST(service_of_endpoint)
{
	char err[256];
	struct model *m = model_parse(good, sizeof(good) - 1, err, sizeof(err));
	REQUIRE(m != NULL);
	struct sockaddr_storage a = ip("10.244.1.5");
	const struct model_workload *api1 = model_workload_by_ip(m, &a);
	a = ip("10.244.2.9");
	const struct model_workload *db1 = model_workload_by_ip(m, &a);
	REQUIRE(api1 && db1);
	const struct model_service *s = model_service_of_endpoint(m, api1, 8080, NULL);
	REQUIRE(s != NULL);
	CHECK_EQ_STR(s->name, "api");
	s = model_service_of_endpoint(m, api1, 443, NULL);	/* a port without target_port */
	REQUIRE(s != NULL);
	CHECK_EQ_STR(s->name, "api");
	CHECK(model_service_of_endpoint(m, api1, 80, NULL) == NULL);	/* 80 is the service port */
	CHECK(model_service_of_endpoint(m, db1, 8080, NULL) == NULL);	/* not an endpoint */
	CHECK(model_service_of_endpoint(m, NULL, 8080, NULL) == NULL);
	model_unref(m);

	/* Two services select the same pod and port; the one the waypoint serves wins when the
	 * connection came through that waypoint, the first otherwise. */
	static const char two[] =
		"{\"workloads\":[{\"name\":\"p\",\"namespace\":\"d\",\"addresses\":[\"10.0.0.1\"],"
		"\"labels\":{\"app\":\"a\"}},{\"name\":\"wp\",\"namespace\":\"d\","
		"\"addresses\":[\"10.0.0.2\"],\"labels\":{\"gw\":\"wp\"}}],\"services\":["
		"{\"name\":\"plain\",\"namespace\":\"d\",\"addresses\":[\"10.96.0.1\"],"
		"\"selector\":{\"app\":\"a\"},\"ports\":[{\"port\":80,\"target_port\":8080}]},"
		"{\"name\":\"viawp\",\"namespace\":\"d\",\"addresses\":[\"10.96.0.2\"],"
		"\"selector\":{\"app\":\"a\"},\"ports\":[{\"port\":80,\"target_port\":8080}],"
		"\"waypoint\":{\"name\":\"wp\",\"namespace\":\"d\"}},"
		"{\"name\":\"wp\",\"namespace\":\"d\",\"addresses\":[\"10.96.0.3\"],"
		"\"selector\":{\"gw\":\"wp\"},\"ports\":[{\"port\":15008}]}]}";
	m = model_parse(two, sizeof(two) - 1, err, sizeof(err));
	REQUIRE(m != NULL);
	a = ip("10.0.0.1");
	const struct model_workload *p = model_workload_by_ip(m, &a);
	const struct model_service *wp = model_service_by_name(m, "d", "wp");
	REQUIRE(p && wp);
	s = model_service_of_endpoint(m, p, 8080, NULL);
	REQUIRE(s != NULL);
	CHECK_EQ_STR(s->name, "plain");
	s = model_service_of_endpoint(m, p, 8080, wp);
	REQUIRE(s != NULL);
	CHECK_EQ_STR(s->name, "viawp");
	model_unref(m);
}

static void expect_error(const char *json, const char *want)
{
	char err[256];
	struct model *m = model_parse(json, strlen(json), err, sizeof(err));
	CHECK(m == NULL);
	if (!strstr(err, want)) {
		fprintf(stderr, "  error '%s' does not contain '%s'\n", err, want);
		test_failed_now = 1;
	}
	model_unref(m);
}

TEST(errors_are_precise)
{
	expect_error("{\"workloads\":[{\"name\":\"a\",\"namespace\":\"d\",\"addresses\":[\"10.1.x\"]}]}",
		     "workloads[0].addresses[0]: '10.1.x' is not an IP address");
	expect_error("{\"nodez\":[]}", "nodez: unknown key");
	expect_error("{\"workloads\":[{\"name\":\"a\"}]}", "workloads[0].namespace: missing");
	expect_error("{\"workloads\":[{\"name\":\"a\",\"namespace\":\"d\",\"node\":\"n9\"}]}",
		     "workloads[0].node: 'n9' is not in nodes");
	expect_error("{\"services\":[{\"name\":\"s\",\"namespace\":\"d\",\"ports\":[{\"port\":70000}]}]}",
		     "services[0].ports[0].port: must be an integer from 1 to 65535");
	expect_error("{\"workloads\":[{\"name\":\"a\",\"namespace\":\"d\",\"addresses\":[\"10.0.0.1\"]},"
		     "{\"name\":\"b\",\"namespace\":\"d\",\"addresses\":[\"10.0.0.1\"]}]}",
		     "10.0.0.1 is used twice");
	expect_error("{\"workloads\":[{\"name\":\"a\",\"namespace\":\"d\",\"enrolled\":\"yes\"}]}",
		     "workloads[0].enrolled: must be true or false");
	expect_error("[1,2]", "top level must be an object");
	expect_error("{\"resources\":[{\"kind\":\"AuthorizationPolicy\"}]}",
		     "resources[0].apiVersion: must be a string");
	expect_error("{\"resources\":[7]}", "resources[0]: must be an object");
	expect_error("{\"resources\":{}}", "resources: must be an array");
	expect_error("{\"mesh_config\":[]}", "mesh_config: must be an object");
	expect_error("{\"workloads\": [", "line 1");
	expect_error("{\"workloads\":[{\"name\":\"a\",\"namespace\":\"d\",\"addresses\":[\"10.0.0.1:80\"]}]}",
		     "is not an IP address");
}

/* Istio objects and MeshConfig ride along as read-only JSON copies (the istio/ modules
 * compile them); absent, they are an empty array and an empty object. */
TEST(istio_resources_carried)
{
	static const char doc[] =
		"{\"resources\":[{\"apiVersion\":\"security.istio.io/v1\",\"kind\":"
		"\"AuthorizationPolicy\",\"metadata\":{\"name\":\"p\",\"namespace\":\"d\"},"
		"\"spec\":{}}],\"mesh_config\":{\"enableTracing\":true}}";
	char err[256];
	json_error_t jerr;
	json_t *root = json_loads(doc, 0, &jerr);
	REQUIRE(root != NULL);
	struct model *m = model_from_json(root, err, sizeof(err));
	REQUIRE(m != NULL);
	json_object_set_new(root, "mesh_config", json_null());	/* the caller's copy changes */
	CHECK_EQ_INT((int)json_array_size(m->resources), 1);
	CHECK(json_is_true(json_object_get(m->mesh_config, "enableTracing")));
	json_t *dump = model_to_json(m);
	CHECK(json_equal(json_object_get(dump, "resources"), m->resources));
	json_decref(dump);
	json_decref(root);
	model_unref(m);
	m = model_parse("{}", 2, err, sizeof(err));
	REQUIRE(m != NULL);
	CHECK(json_is_array(m->resources) && json_array_size(m->resources) == 0);
	CHECK(json_is_object(m->mesh_config));
	model_unref(m);
}

TEST(roundtrip_json)
{
	char err[256];
	struct model *m = model_parse(good, sizeof(good) - 1, err, sizeof(err));
	REQUIRE(m != NULL);
	json_t *j = model_to_json(m);
	REQUIRE(j != NULL);
	/* endpoints are derived; drop them so the dump parses as a workloads file again */
	size_t i;
	json_t *s;
	json_array_foreach(json_object_get(j, "services"), i, s)
		json_object_del(s, "endpoints");
	struct model *m2 = model_from_json(j, err, sizeof(err));
	REQUIRE(m2 != NULL);
	CHECK_EQ_INT(m2->nworkloads, m->nworkloads);
	CHECK_EQ_INT(model_service_by_name(m2, "default", "api")->nendpoints, 2);
	json_decref(j);
	model_unref(m2);
	model_unref(m);
}

static int calls;
static void on_model(struct model *m, void *arg)
{
	(void)arg;
	calls += m->nworkloads >= 0;
}

TEST(publish_swaps_and_notifies)
{
	char err[256];
	struct model *cur = model_current();
	CHECK_EQ_INT(cur->nworkloads, 0);
	model_unref(cur);
	CHECK_EQ_INT(model_subscribe(on_model, NULL), 0);
	model_publish(model_parse(good, sizeof(good) - 1, err, sizeof(err)));
	cur = model_current();
	CHECK_EQ_INT(cur->nworkloads, 4);
	CHECK(cur->generation >= 1);
	model_publish(model_new_empty());
	CHECK_EQ_INT(calls, 2);
	CHECK_EQ_INT(cur->nworkloads, 4);	/* a held reference stays valid */
	model_unref(cur);
	model_publish(model_new_empty());
	cur = model_current();
	model_unref(cur);
}

TEST_MAIN("workloads")
