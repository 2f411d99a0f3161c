// SPDX-License-Identifier: Apache-2.0
/* common/yamljson: the istio ConfigMap's `mesh` YAML to JSON, typed as Kubernetes types it,
 * and bad or oversized input refused with a line and column. */
#include "harness.h"

#include "common/yamljson.h"

static json_t *Y(const char *s, char *err, size_t errlen)
{
	return yaml_to_json(s, strlen(s), err, errlen);
}

TEST(homelab_mesh_config)
{
	char err[256];
	json_t *j = Y("enableTracing: true\n"
		      "defaultConfig:\n"
		      "  tracing:\n"
		      "    sampling: 100.0\n"
		      "defaultProviders:\n"
		      "  tracing:\n"
		      "  - otel\n"
		      "extensionProviders:\n"
		      "- name: otel\n"
		      "  opentelemetry:\n"
		      "    port: 4317\n"
		      "    service: k8s-monitoring-alloy-receiver.monitoring.svc.cluster.local\n"
		      "    http: {path: \"/v1/traces\", timeout: 5s}\n"
		      "rootNamespace: istio-system\n"
		      "trustDomain: cluster.local\n", err, sizeof(err));
	REQUIRE(j);
	CHECK(json_is_true(json_object_get(j, "enableTracing")));
	CHECK(json_real_value(json_object_get(json_object_get(json_object_get(j, "defaultConfig"),
		"tracing"), "sampling")) == 100.0);
	json_t *p = json_array_get(json_object_get(j, "extensionProviders"), 0);
	CHECK_EQ_STR(json_string_value(json_object_get(p, "name")), "otel");
	json_t *o = json_object_get(p, "opentelemetry");
	CHECK(json_is_integer(json_object_get(o, "port")));
	CHECK_EQ_INT(json_integer_value(json_object_get(o, "port")), 4317);
	CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(o, "http"), "timeout")), "5s");
	CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(json_object_get(j,
		"defaultProviders"), "tracing"), 0)), "otel");
	json_decref(j);
}

TEST(scalars_are_typed_as_yaml_1_1_and_quotes_keep_strings)
{
	char err[256];
	json_t *j = Y("a: yes\nb: off\nc: ~\nd: \"4317\"\ne: '-1.5'\nf: -1.5\ng: 0x1f\nh: 1e3\n"
		      "i: hello world\nj:\nk: !!str true\n", err, sizeof(err));
	REQUIRE(j);
	CHECK(json_is_true(json_object_get(j, "a")));
	CHECK(json_is_false(json_object_get(j, "b")));
	CHECK(json_is_null(json_object_get(j, "c")));
	CHECK_EQ_STR(json_string_value(json_object_get(j, "d")), "4317");
	CHECK_EQ_STR(json_string_value(json_object_get(j, "e")), "-1.5");
	CHECK(json_real_value(json_object_get(j, "f")) == -1.5);
	CHECK_EQ_INT(json_integer_value(json_object_get(j, "g")), 31);
	CHECK(json_real_value(json_object_get(j, "h")) == 1000.0);
	CHECK_EQ_STR(json_string_value(json_object_get(j, "i")), "hello world");
	CHECK(json_is_null(json_object_get(j, "j")));
	CHECK_EQ_STR(json_string_value(json_object_get(j, "k")), "true");
	json_decref(j);
	j = Y("", err, sizeof(err));	/* an empty mesh key: an empty MeshConfig */
	CHECK(j && json_is_object(j) && json_object_size(j) == 0);
	json_decref(j);
}

TEST(bad_input_is_refused_with_a_position)
{
	char err[256];
	CHECK(!Y("a: [1, 2\n", err, sizeof(err)));
	CHECK(strstr(err, "line ") != NULL);
	CHECK(!Y("a: &x 1\nb: *x\n", err, sizeof(err)));
	CHECK(strstr(err, "aliases") != NULL);
	CHECK(!Y("a: 1\n---\nb: 2\n", err, sizeof(err)));
	CHECK(strstr(err, "more than one document") != NULL);
	CHECK(!Y("? [a, b]\n: c\n", err, sizeof(err)));
	CHECK(strstr(err, "not a scalar") != NULL);
	/* nesting past the bound */
	char deep[400];
	size_t n = 0;
	for (int i = 0; i < 100; i++)
		deep[n++] = '[';
	deep[n] = '\0';
	CHECK(!Y(deep, err, sizeof(err)));
	CHECK(strstr(err, "deeply") != NULL || strstr(err, "line") != NULL);
	char *big = malloc(YAMLJSON_MAX_INPUT + 2);
	REQUIRE(big);
	memset(big, 'a', YAMLJSON_MAX_INPUT + 1);
	big[YAMLJSON_MAX_INPUT + 1] = '\0';
	CHECK(!yaml_to_json(big, YAMLJSON_MAX_INPUT + 1, err, sizeof(err)));
	CHECK(strstr(err, "larger") != NULL);
	free(big);
}

TEST_MAIN("yamljson")
