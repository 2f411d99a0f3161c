// SPDX-License-Identifier: Apache-2.0
/* Fuzzes the policy engine (istio/authz.h) on arbitrary `resources`: the bytes are a JSON
 * array of objects (a lone object is wrapped). The set compiles (refusals are fine), compiles
 * again with itself as the previous set to the same dump, answers the same verdicts as a fresh
 * compile at L4 and L7, and dumps with workloads. */
#include "fuzz.h"

#include "common/util.h"
#include "istio/authz.h"

static const char *hdr(void *arg, const char *name)
{
	(void)arg;
	return strcmp(name, "x-user") == 0 ? "alice" : NULL;
}

static void verdicts(const struct authz_set *s, int out[12])
{
	static const char *const ids[] = { NULL, "spiffe://cluster.local/ns/bar/sa/client",
					   "spiffe://td/ns/foo/sa/api", "spiffe://odd" };
	struct label l[] = { { "app", "api" }, { "tier", "web" } };
	struct authz_workload w[] = { { "foo", "api-1", l, 2 }, { "istio-system", "x", l + 1, 1 },
				      { "bar", "y", NULL, 0 } };
	struct sockaddr_storage src, dst;
	struct authz_request req = { .method = "GET", .path = "/api/v1?q", .host = "api.foo:80",
				     .header = hdr };
	struct authz_l7_target t = { "foo", "waypoint", "foo", "api" };
	struct authz_result r;
	int k = 0;

	ip_parse("10.1.2.3", &src);
	ip_parse("fd00::2", &dst);
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 2; j++) {
			struct authz_conn c = { .src = &src, .dst = &dst, .dst_port = (uint16_t)(8080 + j),
						.src_identity = ids[i], .dst_workload = &w[(i + j) % 3] };
			authz_check_conn(s, &c, &r);
			out[k++] = (int)r.verdict * 16 + (int)r.reason;
			char msg[600];
			FUZZ_CHECK(authz_result_str(&r, msg, sizeof(msg)) == msg);
			json_decref(authz_result_to_json(&r));
		}
	for (int i = 0; i < 4; i++) {
		struct authz_conn c = { .src = &src, .dst = &dst, .dst_port = 80, .src_identity = ids[i] };
		authz_check_request(s, &c, &t, &req, &r);
		out[k++] = (int)r.verdict * 16 + (int)r.reason;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *j = fuzz_resources(data, size);
	struct label l[] = { { "app", "api" } };
	struct authz_workload ws[] = { { "foo", "a", l, 1 }, { "istio-system", "b", NULL, 0 } };
	int v1[12], v2[12];

	if (!j)
		return 0;
	struct authz_set *s1 = authz_compile(j, NULL, NULL);
	FUZZ_CHECK(s1);
	struct authz_set *s2 = authz_compile(j, NULL, s1);
	FUZZ_CHECK(s2);
	json_t *d1 = authz_set_to_json(s1, ws, 2), *d2 = authz_set_to_json(s2, ws, 2);
	FUZZ_CHECK(d1 && d2 && json_equal(d1, d2));
	verdicts(s1, v1);
	verdicts(s2, v2);
	FUZZ_CHECK(memcmp(v1, v2, sizeof(v1)) == 0);
	json_decref(d1);
	json_decref(d2);
	authz_set_unref(s1);
	authz_set_unref(s2);
	json_decref(j);
	return 0;
}
