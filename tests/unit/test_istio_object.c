// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the Istio object envelope (istio/object.c): strict parsing, precise errors,
 * RFC 3339 times, scope, selection, targetRefs, the diagnostics bound. */
#include <errno.h>

#include "harness.h"
#include "istio/object.h"

static int parse(const char *text, struct istio_object *o, char *err, size_t errlen)
{
	json_error_t je;
	json_t *j = json_loads(text, 0, &je);
	int rc;
	if (!j) {
		fprintf(stderr, "  bad test JSON: %s\n", je.text);
		memset(o, 0, sizeof(*o));
		return -1;
	}
	rc = istio_object_parse(j, o, err, errlen);
	o->spec = NULL;	/* borrowed from j */
	json_decref(j);
	return rc;
}

TEST(envelope)
{
	struct istio_object o;
	char err[256];
	int rc = parse("{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\","
		       "\"metadata\":{\"name\":\"a\",\"namespace\":\"foo\",\"uid\":\"x\",\"resourceVersion\":\"3\","
		       "\"creationTimestamp\":\"2024-05-01T10:00:00Z\",\"generation\":4,"
		       "\"annotations\":{\"istio.io/dry-run\":\"true\",\"n\":\"v\"},\"labels\":{\"x\":\"y\"}},"
		       "\"spec\":{\"selector\":{\"matchLabels\":{\"app\":\"api\"}},\"action\":\"DENY\"},"
		       "\"status\":{}}", &o, err, sizeof(err));
	CHECK_EQ_INT(rc, 0);
	CHECK_EQ_INT(o.kind, ISTIO_KIND_AUTHORIZATION_POLICY);
	CHECK_EQ_STR(o.group, "security.istio.io");
	CHECK_EQ_STR(o.version, "v1");
	CHECK_EQ_STR(o.name, "a");
	CHECK_EQ_STR(o.namespace, "foo");
	CHECK(o.has_created);
	CHECK_EQ_INT(o.created, 1714557600);
	CHECK_EQ_INT(o.generation, 4);
	CHECK(o.dry_run);
	CHECK_EQ_INT(o.nselector, 1);
	CHECK_EQ_STR(labels_get(o.selector, o.nselector, "app"), "api");
	CHECK_EQ_INT(istio_object_scope(&o, NULL), ISTIO_SCOPE_SELECTOR);
	struct label l[] = { { "app", "api" }, { "v", "1" } };
	CHECK(istio_object_selects(&o, NULL, "foo", l, 2));
	CHECK(!istio_object_selects(&o, NULL, "bar", l, 2));
	CHECK(!istio_object_selects(&o, NULL, "foo", l + 1, 1));
	istio_object_fini(&o);
}

TEST(dry_run_values)
{
	static const struct {
		const char *value;
		bool dry;
	} cases[] = { { "true", true }, { "True", true }, { "1", true }, { "t", true },
		      { "false", false }, { "yes", false }, { "", false } };
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct istio_object o;
		char text[512], err[256];
		snprintf(text, sizeof(text), "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\","
			 "\"metadata\":{\"name\":\"a\",\"namespace\":\"n\",\"annotations\":{\"istio.io/dry-run\":\"%s\"}}}",
			 cases[i].value);
		CHECK_EQ_INT(parse(text, &o, err, sizeof(err)), 0);
		CHECK_EQ_INT(o.dry_run, cases[i].dry);
		istio_object_fini(&o);
	}
}

TEST(versions_and_kinds)
{
	struct istio_object o;
	char err[256];
	CHECK(istio_api_version_known("security.istio.io/v1beta1", "PeerAuthentication"));
	CHECK(istio_api_version_known("telemetry.istio.io/v1alpha1", "Telemetry"));
	CHECK(!istio_api_version_known("telemetry.istio.io/v1beta1", "Telemetry"));
	CHECK(!istio_api_version_known("security.istio.io/v1", "Telemetry"));
	CHECK_EQ_INT(parse("{\"apiVersion\":\"security.istio.io/v2\",\"kind\":\"AuthorizationPolicy\","
			   "\"metadata\":{\"name\":\"a\",\"namespace\":\"foo\"}}", &o, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "AuthorizationPolicy foo/a: apiVersion: 'security.istio.io/v2' is not a known version") == err);
	istio_object_fini(&o);
	/* another kind: envelope only, spec not judged */
	CHECK_EQ_INT(parse("{\"apiVersion\":\"networking.istio.io/v1\",\"kind\":\"VirtualService\","
			   "\"metadata\":{\"name\":\"a\",\"namespace\":\"foo\"},\"spec\":{\"selector\":7}}",
			   &o, err, sizeof(err)), 0);
	CHECK_EQ_INT(o.kind, ISTIO_KIND_OTHER);
	istio_object_fini(&o);
}

TEST(precise_errors)
{
	static const struct {
		const char *json;
		const char *err;
	} cases[] = {
		{ "[]", "(top level): an Istio object must be a JSON object" },
		{ "{\"kind\":\"AuthorizationPolicy\"}", "apiVersion: missing" },
		{ "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\"}",
		  "AuthorizationPolicy ?/?: metadata: missing" },
		{ "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"a\"}}",
		  "AuthorizationPolicy ?/a: metadata.namespace: missing" },
		{ "{\"apiVersion\":\"security.istio.io\",\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"}}",
		  "AuthorizationPolicy n/a: apiVersion: 'security.istio.io' is not GROUP/VERSION" },
		{ "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"a\",\"namespace\":\"n\","
		  "\"creationTimestamp\":\"2024-13-01T00:00:00Z\"}}",
		  "AuthorizationPolicy n/a: metadata.creationTimestamp: must be an RFC 3339 time" },
		{ "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},"
		  "\"spec\":{\"selector\":{\"matchLabels\":{\"app\":1}}}}",
		  "AuthorizationPolicy n/a: spec.selector.matchLabels.app: must be a string" },
		{ "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},"
		  "\"spec\":{\"selector\":{\"labels\":{}}}}",
		  "AuthorizationPolicy n/a: spec.selector.labels: unknown key" },
		{ "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},"
		  "\"spec\":{\"targetRefs\":[{\"kind\":\"Service\"}]}}",
		  "AuthorizationPolicy n/a: spec.targetRefs[0].name: missing" },
		{ "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},"
		  "\"spec\":{\"selector\":{\"matchLabels\":{\"a\":\"b\"}},\"targetRef\":{\"kind\":\"Service\",\"name\":\"s\"}}}",
		  "AuthorizationPolicy n/a: spec.selector: must not be set together with targetRef(s)" },
		{ "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},"
		  "\"spec\":[]}", "AuthorizationPolicy n/a: spec: must be an object" },
		{ "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},"
		  "\"extra\":1}", "AuthorizationPolicy n/a: extra: unknown key" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct istio_object o;
		char err[256];
		int rc = parse(cases[i].json, &o, err, sizeof(err));
		CHECK_EQ_INT(rc, -EINVAL);
		if (strncmp(err, cases[i].err, strlen(cases[i].err)) != 0) {
			fprintf(stderr, "  case %zu: got \"%s\"\n", i, err);
			CHECK(0);
		}
		istio_object_fini(&o);
	}
}

/* A refused object still dumps (its half-read parts left out): fuzz regression. */
TEST(refused_object_dumps)
{
	struct istio_object o;
	char err[256];
	CHECK_EQ_INT(parse("{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\","
			   "\"metadata\":{\"name\":\"w\",\"namespace\":\"foo\"},\"spec\":{\"targetRefs\":["
			   "{\"kind\":\"Gateway\",\"name\":\"waypoint\"},{\"kind\":\"Service\",\"groux\":\"\",\"name\":\"api\"}]}}",
			   &o, err, sizeof(err)), -EINVAL);
	CHECK_EQ_STR(err, "AuthorizationPolicy foo/w: spec.targetRefs[1].groux: unknown key");
	json_t *j = istio_object_to_json(&o, NULL);
	CHECK(j != NULL);
	CHECK_EQ_INT(json_array_size(json_object_get(j, "targetRefs")), 2);
	CHECK(!istio_object_targets(&o, NULL, "Service", "foo", "api"));
	json_decref(j);
	istio_object_fini(&o);
}

TEST(rfc3339)
{
	int64_t t;
	CHECK_EQ_INT(istio_parse_time("1970-01-01T00:00:00Z", &t), 0);
	CHECK_EQ_INT(t, 0);
	CHECK_EQ_INT(istio_parse_time("2024-05-01T12:00:00.123456+02:00", &t), 0);
	CHECK_EQ_INT(t, 1714557600);
	CHECK_EQ_INT(istio_parse_time("2024-05-01t08:00:00-02:00", &t), 0);
	CHECK_EQ_INT(t, 1714557600);
	CHECK_EQ_INT(istio_parse_time("2024-05-01T10:00:00", &t), -EINVAL);
	CHECK_EQ_INT(istio_parse_time("2024-05-01T10:00:00.Z", &t), -EINVAL);
	CHECK_EQ_INT(istio_parse_time("2024-05-01T10:00:00Zjunk", &t), -EINVAL);
	CHECK_EQ_INT(istio_parse_time("2024-02-30T10:00:00Z", &t), -EINVAL);
	CHECK_EQ_INT(istio_parse_time("", &t), -EINVAL);
}

TEST(scope_and_targets)
{
	struct istio_object o;
	char err[256];
	struct label l[] = { { "app", "x" } };
	CHECK_EQ_INT(parse("{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\","
			   "\"metadata\":{\"name\":\"a\",\"namespace\":\"istio-system\"},\"spec\":{}}",
			   &o, err, sizeof(err)), 0);
	CHECK_EQ_INT(istio_object_scope(&o, NULL), ISTIO_SCOPE_MESH);
	CHECK_EQ_INT(istio_object_scope(&o, "mesh-root"), ISTIO_SCOPE_NAMESPACE);
	CHECK(istio_object_selects(&o, NULL, "any", NULL, 0));
	CHECK(!istio_object_selects(&o, "mesh-root", "any", NULL, 0));
	istio_object_fini(&o);
	/* an empty selector is no selector (namespace-wide); in the root namespace a selector
	 * reaches every namespace */
	CHECK_EQ_INT(parse("{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\","
			   "\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},\"spec\":{\"selector\":{}}}",
			   &o, err, sizeof(err)), 0);
	CHECK(o.has_selector);
	CHECK_EQ_INT(istio_object_scope(&o, NULL), ISTIO_SCOPE_NAMESPACE);
	istio_object_fini(&o);
	CHECK_EQ_INT(parse("{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\","
			   "\"metadata\":{\"name\":\"a\",\"namespace\":\"istio-system\"},"
			   "\"spec\":{\"selector\":{\"matchLabels\":{\"app\":\"x\"}}}}", &o, err, sizeof(err)), 0);
	CHECK(istio_object_selects(&o, NULL, "elsewhere", l, 1));
	istio_object_fini(&o);
	CHECK_EQ_INT(parse("{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\","
			   "\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},\"spec\":{\"targetRefs\":["
			   "{\"kind\":\"Gateway\",\"group\":\"gateway.networking.k8s.io\",\"name\":\"waypoint\"},"
			   "{\"kind\":\"Service\",\"group\":\"\",\"name\":\"api\",\"namespace\":\"other\"}]}}",
			   &o, err, sizeof(err)), 0);
	CHECK_EQ_INT(istio_object_scope(&o, NULL), ISTIO_SCOPE_TARGET_REFS);
	CHECK(!istio_object_selects(&o, NULL, "n", l, 1));
	CHECK(istio_object_targets(&o, NULL, "Gateway", "n", "waypoint"));
	CHECK(istio_object_targets(&o, "", "Service", "other", "api"));
	CHECK(!istio_object_targets(&o, "", "Service", "n", "api"));
	json_t *j = istio_object_to_json(&o, NULL);
	CHECK(j && json_array_size(json_object_get(j, "targetRefs")) == 2);
	CHECK_EQ_STR(json_string_value(json_object_get(j, "scope")), "targetRefs");
	json_decref(j);
	istio_object_fini(&o);
}

TEST(diagnostics_bounded)
{
	struct istio_object o;
	char err[256];
	CHECK_EQ_INT(parse("{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\","
			   "\"metadata\":{\"name\":\"a\",\"namespace\":\"n\",\"creationTimestamp\":\"2024-01-01T00:00:00Z\"}}",
			   &o, err, sizeof(err)), 0);
	for (int i = 0; i < ISTIO_MAX_DIAGS + 5; i++)
		CHECK_EQ_INT(istio_object_diag(&o, ISTIO_DIAG_CONVERTED, "spec.rules", "n%d", i), 0);
	CHECK_EQ_INT(o.ndiags, ISTIO_MAX_DIAGS);
	CHECK_EQ_INT(o.ndiags_dropped, 5);
	CHECK_EQ_INT(o.diags[0].severity, ISTIO_SEV_WARNING);
	json_t *d = istio_object_diags_json(&o);
	CHECK_EQ_INT(json_array_size(d), ISTIO_MAX_DIAGS + 1);
	json_decref(d);
	json_t *j = istio_object_to_json(&o, NULL);
	CHECK_EQ_STR(json_string_value(json_object_get(j, "creationTimestamp")), "2024-01-01T00:00:00Z");
	json_decref(j);
	istio_object_fini(&o);
}

TEST(age_order)
{
	struct istio_object a = { .name = "b", .namespace = "n", .created = 10 };
	struct istio_object b = { .name = "a", .namespace = "n", .created = 20 };
	struct istio_object c = { .name = "a", .namespace = "n", .created = 10 };
	CHECK(istio_object_age_cmp(&a, &b) < 0);
	CHECK(istio_object_age_cmp(&c, &a) < 0);
	CHECK(istio_object_age_cmp(&a, &a) == 0);
}

TEST_MAIN("istio_object")
