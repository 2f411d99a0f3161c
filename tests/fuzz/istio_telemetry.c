// SPDX-License-Identifier: Apache-2.0
/* Fuzzes the MeshConfig YAML reader (common/yamljson) and the Telemetry compiler and resolver
 * (istio/telemetry): input `YAML\0JSON`, the istio ConfigMap's mesh key and a resources list.
 * What is accepted resolves, for a few workloads, to settings within their bounds: sampling in
 * 0..100, a provider from the set or none (then reporting off), every field with a source. */
#include "fuzz.h"

#include "common/yamljson.h"
#include "istio/telemetry.h"

static void check_mode(const struct telemetry_set *s, const struct telemetry_mode *m)
{
	bool known = m->provider == NULL;
	for (int i = 0; i < telemetry_set_nproviders(s); i++)
		known = known || m->provider == telemetry_set_provider(s, i);
	FUZZ_CHECK(known);
	FUZZ_CHECK(m->sampling >= 0 && m->sampling <= 100);
	FUZZ_CHECK(m->provider || m->disabled);
	FUZZ_CHECK(!m->provider || m->provider_from);
	FUZZ_CHECK(m->sampling_from && m->disabled_from);
	FUZZ_CHECK(m->ntags >= 0 && m->ntags <= TELEMETRY_MAX_TAGS && (!m->ntags || m->tags_from));
	json_t *j = telemetry_mode_json(m);
	FUZZ_CHECK(j);
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	size_t ylen = strnlen(text, size);
	char err[256];
	json_t *mesh, *res = NULL;

	mesh = yaml_to_json(text, ylen, err, sizeof(err));
	if (!mesh)
		FUZZ_CHECK(err[0]);
	if (ylen < size)
		res = json_loadb(text + ylen + 1, size - ylen - 1, 0, NULL);
	struct telemetry_set *s = telemetry_set_new(mesh, res, "istio-system");
	FUZZ_CHECK(s);
	for (int i = 0; i < telemetry_set_ndiags(s); i++)
		FUZZ_CHECK(telemetry_set_diag(s, i) && *telemetry_set_diag(s, i));
	static const struct label lab[] = { { "app", "web" }, { "version", "v1" } };
	const struct telemetry_subject who[] = {
		{ "default", "web-1", lab, 2, false },
		{ "istio-system", "x", NULL, 0, false },
		{ "default", "waypoint", NULL, 0, true },
	};
	for (size_t k = 0; k < sizeof(who) / sizeof(who[0]); k++) {
		struct telemetry_effective e;
		telemetry_resolve(s, &who[k], &e);
		if (!e.configured)
			continue;
		check_mode(s, &e.client);
		check_mode(s, &e.server);
	}
	telemetry_set_free(s);
	json_decref(mesh);
	json_decref(res);
	return 0;
}
