// SPDX-License-Identifier: Apache-2.0
/* Fuzzes HTTPRoute compilation and matching (istio/httproute.h) on arbitrary `resources`: the
 * bytes are a JSON array of objects (a lone object is wrapped). The set compiles (refusals are
 * fine) and every refused route says why; compiling again dumps the same; each Service's
 * requests match a rule of an accepted route attached to it, and weighted picks stay in it. */
#include "fuzz.h"

#include "istio/httproute.h"

static const char *hdr(void *arg, const char *name)
{
	(void)arg;
	return strcmp(name, "x-canary") == 0 ? "1" : strcmp(name, "x-user") == 0 ? "a,b" : NULL;
}

static void requests(const struct httproute_set *s)
{
	static const char *const paths[] = { "/", "/api", "/api/v1", "/apix", "/a/b/c", "" };
	static const char *const methods[] = { "GET", "POST", "DELETE" };
	for (int i = 0; i < s->nservices; i++) {
		const struct hr_service *svc = &s->services[i];
		FUZZ_CHECK(httproute_attached(s, svc->namespace, svc->name) == (svc->nroutes > 0));
		for (size_t p = 0; p < sizeof(paths) / sizeof(paths[0]); p++)
			for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
				struct hr_request rq = { .method = methods[m], .path = paths[p],
							 .plen = strlen(paths[p]), .query = "v=2&x",
							 .qlen = 5, .header = hdr };
				const struct httproute *r = NULL;
				const struct hr_rule *rule = NULL;
				const struct hr_match *hm = NULL;
				enum hr_verdict v = httproute_match_ex(s, svc->namespace, svc->name,
								       (uint16_t)(80 + m), &rq, &r, &rule, &hm);
				if (v != HR_MATCHED)
					continue;
				FUZZ_CHECK(r && r->accepted && rule >= r->rules && rule < r->rules + r->nrules);
				FUZZ_CHECK(hm >= rule->matches && hm < rule->matches + rule->nmatches);
				if (rule->redirect.on) {	/* the Location is an absolute URL */
					char *loc = httproute_redirect_location(&rule->redirect, hm, "h:8080", 6,
										"f", 80, rq.path, rq.plen,
										rq.query, rq.qlen);
					FUZZ_CHECK(!loc || strncmp(loc, "http", 4) == 0);
					free(loc);
				}
				if (rule->rewrite.on) {	/* a rewritten path is absolute */
					char *p = httproute_rewrite_path(&rule->rewrite.path, hm, rq.path,
									 rq.plen);
					FUZZ_CHECK(!p || p[0] == '/' || (!rq.plen && !*p));
					free(p);
				}
				for (uint32_t k = 0; k < 4; k++) {
					const struct hr_backend *b = httproute_pick(rule, k * 2654435761u);
					FUZZ_CHECK(!b || (b >= rule->backends &&
							  b < rule->backends + rule->nbackends && b->weight));
					FUZZ_CHECK(b || !rule->total_weight);
				}
			}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *j = fuzz_resources(data, size);
	if (!j)
		return 0;
	struct httproute_set *s1 = httproute_set_compile(j, 1), *s2 = httproute_set_compile(j, 1);
	FUZZ_CHECK(s1 && s2);
	for (int i = 0; i < s1->nroutes; i++) {
		const struct httproute *r = s1->routes[i];
		bool why = r->accepted;
		for (int k = 0; k < r->obj.ndiags; k++)
			why |= r->obj.diags[k].kind == ISTIO_DIAG_REFUSED && r->obj.diags[k].message[0];
		FUZZ_CHECK(why);
	}
	json_t *d1 = httproute_set_json(s1, NULL, NULL), *d2 = httproute_set_json(s2, NULL, NULL);
	FUZZ_CHECK(d1 && d2 && json_equal(d1, d2));
	requests(s1);
	json_decref(d1);
	json_decref(d2);
	httproute_set_unref(s1);
	httproute_set_unref(s2);
	json_decref(j);
	return 0;
}
