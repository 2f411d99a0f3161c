// SPDX-License-Identifier: Apache-2.0
/* istio/telemetry: MeshConfig providers and Telemetry objects resolved per workload as istiod
 * resolves them (levels, field-by-field overrides, customTags replaced whole, oldest object
 * first, match.mode, providers, http vs grpc, custom tag kinds, bad input). */
#include "harness.h"

#include "istio/telemetry.h"

/* The homelab's MeshConfig (issue 14), as the istio ConfigMap's `mesh` key holds it. */
static const char *HOMELAB_MESH =
	"{\"enableTracing\": true,"
	" \"defaultConfig\": {\"tracing\": {\"sampling\": 100.0}},"
	" \"defaultProviders\": {\"tracing\": [\"otel\"]},"
	" \"extensionProviders\": [{\"name\": \"otel\", \"opentelemetry\": {"
	"   \"service\": \"k8s-monitoring-alloy-receiver.monitoring.svc.cluster.local\","
	"   \"port\": 4317}}]}";

static const char *HOMELAB_TELEMETRY =
	"{\"apiVersion\": \"telemetry.istio.io/v1alpha1\", \"kind\": \"Telemetry\","
	" \"metadata\": {\"name\": \"mesh-default\", \"namespace\": \"istio-system\","
	"   \"creationTimestamp\": \"2025-01-01T00:00:00Z\"},"
	" \"spec\": {\"tracing\": [{\"customTags\": {"
	"   \"cluster_name\": {\"literal\": {\"value\": \"homelab\"}},"
	"   \"environment\": {\"literal\": {\"value\": \"development\"}}}}]}}";

static json_t *J(const char *s)
{
	json_error_t e;
	json_t *j = json_loads(s, 0, &e);
	if (!j)
		fprintf(stderr, "  bad test JSON: %s: %s\n", e.text, s);
	return j;
}

/* A set from a MeshConfig text and a list of object texts (NULL-terminated). */
static struct telemetry_set *set_of(const char *mesh, const char *const *objs)
{
	json_t *mc = mesh ? J(mesh) : NULL, *res = json_array();
	for (int i = 0; objs && objs[i]; i++)
		json_array_append_new(res, J(objs[i]));
	struct telemetry_set *s = telemetry_set_new(mc, res, NULL);
	json_decref(mc);
	json_decref(res);
	return s;
}

static char *tel(const char *ns, const char *name, const char *created, const char *spec)
{
	char *s;
	if (asprintf(&s, "{\"apiVersion\": \"telemetry.istio.io/v1\", \"kind\": \"Telemetry\","
		     " \"metadata\": {\"name\": \"%s\", \"namespace\": \"%s\","
		     " \"creationTimestamp\": \"%s\"}, \"spec\": %s}", name, ns, created, spec) < 0)
		abort();
	return s;
}

static const struct label APP_LABELS[] = { { "app", "web" }, { "version", "v1" } };
static const struct telemetry_subject WEB = { "apps", "web-1", APP_LABELS, 2, false };

static const struct telemetry_tag *tag(const struct telemetry_mode *m, const char *name)
{
	for (int i = 0; i < m->ntags; i++)
		if (strcmp(m->tags[i].name, name) == 0)
			return &m->tags[i];
	return NULL;
}

static bool has_diag(const struct telemetry_set *s, const char *a, const char *b)
{
	for (int i = 0; i < telemetry_set_ndiags(s); i++) {
		const char *d = telemetry_set_diag(s, i);
		if (strstr(d, a) && (!b || strstr(d, b)))
			return true;
	}
	for (int i = 0; i < telemetry_set_ndiags(s); i++)
		fprintf(stderr, "  diag: %s\n", telemetry_set_diag(s, i));
	return false;
}

TEST(homelab_objects_give_provider_sampling_and_tags)
{
	const char *objs[] = { HOMELAB_TELEMETRY, NULL };
	struct telemetry_set *s = set_of(HOMELAB_MESH, objs);
	struct telemetry_effective e;

	CHECK(s);
	CHECK_EQ_INT(telemetry_set_ndiags(s), 0);
	CHECK(telemetry_set_any(s));
	telemetry_resolve(s, &WEB, &e);
	CHECK(e.configured);
	for (int i = 0; i < 2; i++) {
		const struct telemetry_mode *m = i ? &e.server : &e.client;
		CHECK(m->provider);
		CHECK_EQ_STR(m->provider->name, "otel");
		CHECK(!m->provider->http);
		CHECK_EQ_STR(m->provider->endpoint,
			     "http://k8s-monitoring-alloy-receiver.monitoring.svc.cluster.local:4317");
		CHECK_EQ_STR(m->provider_from, "mesh_config");
		CHECK(!m->disabled);
		CHECK(m->sampling == 100.0);
		CHECK_EQ_STR(m->sampling_from, "mesh_config");
		CHECK_EQ_INT(m->ntags, 2);
		CHECK(tag(m, "cluster_name") && tag(m, "cluster_name")->kind == TELEMETRY_TAG_LITERAL);
		CHECK_EQ_STR(tag(m, "cluster_name")->value, "homelab");
		CHECK_EQ_STR(tag(m, "environment")->value, "development");
		CHECK_EQ_STR(m->tags_from, "Telemetry istio-system/mesh-default");
	}
	telemetry_set_free(s);
}

TEST(levels_override_field_by_field_and_replace_custom_tags)
{
	char *root = tel("istio-system", "mesh", "2025-01-01T00:00:00Z",
			 "{\"tracing\": [{\"randomSamplingPercentage\": 50,"
			 " \"customTags\": {\"a\": {\"literal\": {\"value\": \"1\"}},"
			 "                  \"b\": {\"literal\": {\"value\": \"2\"}}}}]}");
	char *ns = tel("apps", "ns", "2025-01-02T00:00:00Z",
		       "{\"tracing\": [{\"randomSamplingPercentage\": 10}]}");
	char *wl = tel("apps", "wl", "2025-01-03T00:00:00Z",
		       "{\"selector\": {\"matchLabels\": {\"app\": \"web\"}},"
		       " \"tracing\": [{\"customTags\": {\"c\": {\"literal\": {\"value\": \"3\"}}}}]}");
	const char *objs[] = { wl, ns, root, NULL };
	struct telemetry_set *s = set_of(HOMELAB_MESH, objs);
	struct telemetry_effective e;

	telemetry_resolve(s, &WEB, &e);
	CHECK(e.configured);
	CHECK(e.client.sampling == 10.0);
	CHECK_EQ_STR(e.client.sampling_from, "Telemetry apps/ns");
	CHECK_EQ_INT(e.client.ntags, 1);	/* the workload's tags replace the root's whole */
	CHECK(tag(&e.client, "c") && !tag(&e.client, "a"));
	CHECK_EQ_STR(e.client.tags_from, "Telemetry apps/wl");
	CHECK_EQ_STR(e.client.provider_from, "mesh_config");

	/* another workload of the namespace: no selector match, the root's tags stay */
	const struct label other_l[] = { { "app", "db" } };
	struct telemetry_subject other = { "apps", "db-1", other_l, 1, false };
	telemetry_resolve(s, &other, &e);
	CHECK_EQ_INT(e.server.ntags, 2);
	CHECK_EQ_STR(e.server.tags_from, "Telemetry istio-system/mesh");
	CHECK(e.server.sampling == 10.0);

	/* another namespace: only the root level */
	struct telemetry_subject far = { "shop", "web-1", APP_LABELS, 2, false };
	telemetry_resolve(s, &far, &e);
	CHECK(e.server.sampling == 50.0);
	CHECK_EQ_STR(e.server.sampling_from, "Telemetry istio-system/mesh");
	CHECK_EQ_INT(e.server.ntags, 2);
	telemetry_set_free(s);
	free(root);
	free(ns);
	free(wl);
}

TEST(oldest_object_wins_per_level)
{
	char *young = tel("apps", "young", "2025-03-01T00:00:00Z",
			  "{\"tracing\": [{\"randomSamplingPercentage\": 20}]}");
	char *old = tel("apps", "old", "2025-02-01T00:00:00Z",
			"{\"tracing\": [{\"randomSamplingPercentage\": 30}]}");
	char *sel_young = tel("apps", "a-sel", "2025-03-01T00:00:00Z",
			      "{\"selector\": {\"matchLabels\": {\"app\": \"web\"}},"
			      " \"tracing\": [{\"disableSpanReporting\": true}]}");
	char *sel_old = tel("apps", "z-sel", "2025-02-01T00:00:00Z",
			    "{\"selector\": {\"matchLabels\": {\"version\": \"v1\"}},"
			    " \"tracing\": [{\"disableSpanReporting\": false}]}");
	const char *objs[] = { young, old, sel_young, sel_old, NULL };
	struct telemetry_set *s = set_of(HOMELAB_MESH, objs);
	struct telemetry_effective e;

	telemetry_resolve(s, &WEB, &e);
	CHECK(e.client.sampling == 30.0);
	CHECK_EQ_STR(e.client.sampling_from, "Telemetry apps/old");
	CHECK(!e.client.disabled);
	CHECK_EQ_STR(e.client.disabled_from, "Telemetry apps/z-sel");
	telemetry_set_free(s);
	free(young);
	free(old);
	free(sel_young);
	free(sel_old);
}

TEST(match_mode_maps_to_outbound_and_inbound)
{
	char *t = tel("apps", "modes", "2025-01-01T00:00:00Z",
		      "{\"tracing\": [{\"match\": {\"mode\": \"CLIENT\"}, \"disableSpanReporting\": true},"
		      " {\"match\": {\"mode\": \"SERVER\"}, \"randomSamplingPercentage\": 5},"
		      " {\"match\": {\"mode\": \"CLIENT_AND_SERVER\"},"
		      "  \"customTags\": {\"x\": {\"literal\": {\"value\": \"y\"}}}}]}");
	const char *objs[] = { t, NULL };
	struct telemetry_set *s = set_of(HOMELAB_MESH, objs);
	struct telemetry_effective e;

	telemetry_resolve(s, &WEB, &e);
	CHECK(e.client.disabled);
	CHECK(!e.server.disabled);
	CHECK(e.client.sampling == 100.0);
	CHECK(e.server.sampling == 5.0);
	CHECK_EQ_INT(e.client.ntags, 1);
	CHECK_EQ_INT(e.server.ntags, 1);
	telemetry_set_free(s);
	free(t);
}

TEST(http_and_grpc_providers)
{
	const char *mesh =
		"{\"extensionProviders\": ["
		" {\"name\": \"h\", \"opentelemetry\": {\"service\": \"observability/collector.obs.svc\","
		"  \"port\": 4318, \"http\": {\"path\": \"/otlp/v1/traces\", \"timeout\": \"2.5s\","
		"  \"headers\": [{\"name\": \"x-tenant\", \"value\": \"home\"}]}}},"
		" {\"name\": \"h2\", \"opentelemetry\": {\"service\": \"c2\", \"port\": 4318, \"http\": {}}},"
		" {\"name\": \"g\", \"opentelemetry\": {\"service\": \"otel.obs.svc.cluster.local\","
		"  \"port\": 4317, \"grpc\": {\"timeout\": \"250ms\","
		"  \"initialMetadata\": [{\"name\": \"authorization\", \"value\": \"Bearer t\"}]}}},"
		" {\"name\": \"z\", \"zipkin\": {\"service\": \"zipkin\", \"port\": 9411}}],"
		" \"defaultProviders\": {\"tracing\": [\"z\", \"h\"]}}";
	char *t = tel("apps", "to-grpc", "2025-01-01T00:00:00Z",
		      "{\"tracing\": [{\"providers\": [{\"name\": \"nope\"}, {\"name\": \"g\"}]}]}");
	const char *objs[] = { t, NULL };
	struct telemetry_set *s = set_of(mesh, objs);
	struct telemetry_effective e;
	const struct telemetry_provider *p;

	CHECK_EQ_INT(telemetry_set_nproviders(s), 3);
	p = telemetry_set_provider(s, 0);
	CHECK(p->http);
	CHECK_EQ_STR(p->host, "collector.obs.svc");
	CHECK_EQ_STR(p->service, "observability/collector.obs.svc");
	CHECK_EQ_STR(p->endpoint, "http://collector.obs.svc:4318/otlp/v1/traces");
	CHECK_EQ_INT(p->timeout_ms, 2500);
	CHECK_EQ_INT(p->nheaders, 1);
	CHECK_EQ_STR(p->headers[0].name, "x-tenant");
	p = telemetry_set_provider(s, 1);
	CHECK_EQ_STR(p->endpoint, "http://c2:4318/v1/traces");	/* the OTLP default path */
	CHECK(!p->in_use);	/* neither the default nor named by a Telemetry */
	CHECK(telemetry_set_provider(s, 0)->in_use && telemetry_set_provider(s, 2)->in_use);
	p = telemetry_set_provider(s, 2);
	CHECK(!p->http);
	CHECK(!p->path);
	CHECK_EQ_STR(p->endpoint, "http://otel.obs.svc.cluster.local:4317");
	CHECK_EQ_INT(p->timeout_ms, 250);
	CHECK_EQ_STR(p->headers[0].value, "Bearer t");
	/* defaultProviders: the first that resolves (zipkin is not an OTLP provider) */
	CHECK(has_diag(s, "defaultProviders.tracing[0]", "'z'"));
	struct telemetry_subject other = { "shop", "x", NULL, 0, false };
	telemetry_resolve(s, &other, &e);
	CHECK_EQ_STR(e.client.provider->name, "h");
	CHECK(e.client.sampling == TELEMETRY_DEFAULT_SAMPLING);
	CHECK_EQ_STR(e.client.sampling_from, "default");
	/* tracing[].providers: the first that resolves */
	CHECK(has_diag(s, "Telemetry apps/to-grpc: spec.tracing[0].providers[0].name", "'nope'"));
	telemetry_resolve(s, &WEB, &e);
	CHECK_EQ_STR(e.server.provider->name, "g");
	CHECK_EQ_STR(e.server.provider_from, "Telemetry apps/to-grpc");
	telemetry_set_free(s);
	free(t);
}

TEST(environment_and_header_tags)
{
	char *t = tel("istio-system", "tags", "2025-01-01T00:00:00Z",
		      "{\"tracing\": [{\"customTags\": {"
		      " \"node\": {\"environment\": {\"name\": \"NODE_NAME\", \"defaultValue\": \"unknown\"}},"
		      " \"pod\": {\"environment\": {\"name\": \"POD_NAME\"}},"
		      " \"agent\": {\"header\": {\"name\": \"user-agent\", \"defaultValue\": \"none\"}}}}]}");
	const char *objs[] = { t, NULL };
	struct telemetry_set *s = set_of(HOMELAB_MESH, objs);
	struct telemetry_effective e;
	const struct telemetry_tag *x;

	telemetry_resolve(s, &WEB, &e);
	CHECK_EQ_INT(e.client.ntags, 3);
	x = tag(&e.client, "node");
	CHECK(x && x->kind == TELEMETRY_TAG_ENVIRONMENT);
	CHECK_EQ_STR(x->value, "NODE_NAME");
	CHECK_EQ_STR(x->default_value, "unknown");
	x = tag(&e.client, "pod");
	CHECK(x && x->kind == TELEMETRY_TAG_ENVIRONMENT && !x->default_value);
	x = tag(&e.client, "agent");
	CHECK(x && x->kind == TELEMETRY_TAG_HEADER);
	CHECK_EQ_STR(x->value, "user-agent");
	CHECK_EQ_STR(x->default_value, "none");
	telemetry_set_free(s);
	free(t);
}

TEST(bad_input_is_one_diagnostic_and_the_level_is_skipped)
{
	const char *mesh =
		"{\"extensionProviders\": ["
		" {\"name\": \"otel\", \"opentelemetry\": {\"service\": \"otel.obs\", \"port\": 4317}},"
		" {\"name\": \"noport\", \"opentelemetry\": {\"service\": \"otel.obs\"}},"
		" {\"name\": \"badsvc\", \"opentelemetry\": {\"service\": \"a/b/c\", \"port\": 1}},"
		" {\"name\": \"badhttp\", \"opentelemetry\": {\"service\": \"x\", \"port\": 1,"
		"   \"http\": {\"timeout\": \"soon\"}}}],"
		" \"defaultProviders\": {\"tracing\": [\"otel\"]},"
		" \"defaultConfig\": {\"tracing\": {\"sampling\": 40}}}";
	char *root = tel("istio-system", "root", "2025-01-01T00:00:00Z",
			 "{\"tracing\": [{\"randomSamplingPercentage\": 25}]}");
	char *pct = tel("apps", "pct", "2025-01-01T00:00:00Z",
			"{\"tracing\": [{\"randomSamplingPercentage\": 120}]}");
	char *unknown = tel("apps", "unknown", "2025-01-02T00:00:00Z",
			    "{\"selector\": {\"matchLabels\": {\"app\": \"web\"}},"
			    " \"tracing\": [{\"providers\": [{\"name\": \"noport\"}]}]}");
	char *tags = tel("shop", "tags", "2025-01-01T00:00:00Z",
			 "{\"tracing\": [{\"customTags\": {\"t\": {\"literal\": {}}}}]}");
	char *mode = tel("shop", "mode", "2025-01-02T00:00:00Z",
			 "{\"tracing\": [{\"match\": {\"mode\": \"BOTH\"}}]}");
	const char *objs[] = { root, pct, unknown, tags, mode,
			       "{\"apiVersion\": \"telemetry.istio.io/v1\", \"kind\": \"Telemetry\"}",
			       NULL };
	struct telemetry_set *s = set_of(mesh, objs);
	struct telemetry_effective e;

	CHECK_EQ_INT(telemetry_set_nproviders(s), 1);
	CHECK(has_diag(s, "extensionProviders[1] (noport): opentelemetry.port", NULL));
	CHECK(has_diag(s, "extensionProviders[2] (badsvc): opentelemetry.service", NULL));
	CHECK(has_diag(s, "extensionProviders[3] (badhttp): opentelemetry.http.timeout", NULL));
	CHECK(has_diag(s, "Telemetry apps/pct: spec.tracing[0].randomSamplingPercentage", "ignored"));
	CHECK(has_diag(s, "Telemetry apps/unknown: spec.tracing[0].providers[0].name: 'noport'",
		       "not a usable"));
	CHECK(has_diag(s, "Telemetry shop/tags: spec.tracing[0].customTags.t", NULL));
	CHECK(has_diag(s, "Telemetry shop/mode: spec.tracing[0].match.mode", NULL));
	/* the bad levels are left out: the root level and MeshConfig stand */
	telemetry_resolve(s, &WEB, &e);
	CHECK(e.client.sampling == 25.0);
	CHECK_EQ_STR(e.client.sampling_from, "Telemetry istio-system/root");
	CHECK_EQ_STR(e.client.provider->name, "otel");
	struct telemetry_subject shop = { "shop", "x", NULL, 0, false };
	telemetry_resolve(s, &shop, &e);
	CHECK(e.server.sampling == 25.0);
	CHECK_EQ_INT(e.server.ntags, 0);
	telemetry_set_free(s);
	free(root);
	free(pct);
	free(unknown);
	free(tags);
	free(mode);
}

TEST(no_istio_tracing_falls_back)
{
	struct telemetry_effective e;
	struct telemetry_set *s = set_of(NULL, NULL);

	CHECK(!telemetry_set_any(s));
	telemetry_resolve(s, &WEB, &e);
	CHECK(!e.configured && !e.mesh_disabled);
	telemetry_set_free(s);

	/* providers without defaultProviders and no Telemetry: not configured */
	s = set_of("{\"extensionProviders\": [{\"name\": \"o\", \"opentelemetry\": "
		   "{\"service\": \"o\", \"port\": 1}}]}", NULL);
	telemetry_resolve(s, &WEB, &e);
	CHECK(!e.configured);
	telemetry_set_free(s);

	/* enableTracing false on istiod's legacy path */
	s = set_of("{\"enableTracing\": false}", NULL);
	CHECK(telemetry_set_any(s));
	telemetry_resolve(s, &WEB, &e);
	CHECK(!e.configured && e.mesh_disabled);
	telemetry_set_free(s);
}

TEST(telemetry_without_provider_disables_reporting)
{
	char *t = tel("apps", "t", "2025-01-01T00:00:00Z",
		      "{\"tracing\": [{\"randomSamplingPercentage\": 100}]}");
	const char *objs[] = { t, NULL };
	struct telemetry_set *s = set_of(NULL, objs);
	struct telemetry_effective e;

	telemetry_resolve(s, &WEB, &e);
	CHECK(e.configured);
	CHECK(e.client.disabled && e.server.disabled);
	CHECK(!e.client.provider);
	CHECK_EQ_STR(e.client.disabled_from, "no provider");
	telemetry_set_free(s);
	free(t);
}

TEST(sampling_in_hundredths_and_zero_silences)
{
	char *t = tel("apps", "t", "2025-01-01T00:00:00Z",
		      "{\"tracing\": [{\"randomSamplingPercentage\": 33.3333}]}");
	char *z = tel("shop", "z", "2025-01-01T00:00:00Z",
		      "{\"tracing\": [{\"randomSamplingPercentage\": 0}]}");
	const char *objs[] = { t, z, NULL };
	struct telemetry_set *s = set_of(HOMELAB_MESH, objs);
	struct telemetry_effective e;

	telemetry_resolve(s, &WEB, &e);
	CHECK(e.client.sampling > 33.33 - 1e-9 && e.client.sampling < 33.33 + 1e-9);
	struct telemetry_subject shop = { "shop", "x", NULL, 0, false };
	telemetry_resolve(s, &shop, &e);
	CHECK(e.client.sampling == 0.0);
	CHECK(!e.client.disabled);
	telemetry_set_free(s);
	free(t);
	free(z);
}

TEST(waypoint_is_selected_by_target_refs)
{
	char *t = tel("apps", "wp", "2025-01-01T00:00:00Z",
		      "{\"targetRefs\": [{\"group\": \"gateway.networking.k8s.io\", \"kind\": \"Gateway\","
		      " \"name\": \"waypoint\"}], \"tracing\": [{\"randomSamplingPercentage\": 7}]}");
	const char *objs[] = { t, NULL };
	struct telemetry_set *s = set_of(HOMELAB_MESH, objs);
	struct telemetry_effective e;
	struct telemetry_subject wp = { "apps", "waypoint", NULL, 0, true };
	struct telemetry_subject wp2 = { "apps", "other", NULL, 0, true };

	telemetry_resolve(s, &wp, &e);
	CHECK(e.server.sampling == 7.0);
	telemetry_resolve(s, &wp2, &e);
	CHECK(e.server.sampling == 100.0);
	telemetry_resolve(s, &WEB, &e);	/* targetRefs never select a workload */
	CHECK(e.server.sampling == 100.0);
	telemetry_set_free(s);
	free(t);
}

TEST(effective_json_names_the_sources)
{
	const char *objs[] = { HOMELAB_TELEMETRY, NULL };
	struct telemetry_set *s = set_of(HOMELAB_MESH, objs);
	struct telemetry_effective e;

	telemetry_resolve(s, &WEB, &e);
	json_t *j = telemetry_mode_json(&e.client);
	CHECK(j);
	CHECK_EQ_STR(json_string_value(json_object_get(j, "provider")), "otel");
	CHECK_EQ_STR(json_string_value(json_object_get(j, "protocol")), "grpc");
	CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(json_object_get(j,
		"custom_tags"), "cluster_name"), "literal")), "homelab");
	CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(j, "from"), "custom_tags")),
		     "Telemetry istio-system/mesh-default");
	json_decref(j);
	CHECK(telemetry_mode_equal(&e.client, &e.server));
	telemetry_set_free(s);
}

TEST_MAIN("istio_telemetry")
