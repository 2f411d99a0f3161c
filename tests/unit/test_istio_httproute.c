// SPDX-License-Identifier: Apache-2.0
/* Unit tests of HTTPRoute compilation and matching (istio/httproute.c): Service parents,
 * the Gateway API match precedence, weighted picks, refusals with a clear diagnostic. */
#include <errno.h>

#include "harness.h"
#include "istio/httproute.h"

/* A set from a JSON array of objects. */
static struct httproute_set *compile(const char *text)
{
	json_error_t je;
	json_t *j = json_loads(text, 0, &je);
	struct httproute_set *s;
	if (!j) {
		fprintf(stderr, "  bad test JSON: %s\n", je.text);
		return NULL;
	}
	s = httproute_set_compile(j, 7);
	json_decref(j);
	return s;
}

#define ROUTE(name, ts, spec) \
	"{\"apiVersion\":\"gateway.networking.k8s.io/v1\",\"kind\":\"HTTPRoute\"," \
	"\"metadata\":{\"name\":\"" name "\",\"namespace\":\"default\"," \
	"\"creationTimestamp\":\"" ts "\"},\"spec\":" spec "}"

struct hdrs {
	const char *const *kv;	/* name, value, ..., NULL */
};

static const char *hdr(void *arg, const char *name)
{
	const struct hdrs *h = arg;
	for (int i = 0; h->kv && h->kv[i]; i += 2)
		if (strcmp(h->kv[i], name) == 0)
			return h->kv[i + 1];
	return NULL;
}

/* Which route and rule "METHOD URL" with headers takes on echo:80: "r1#0", "404", "none". */
static const char *route_of(const struct httproute_set *s, const char *method, const char *url,
			    const char *const *headers, uint16_t port)
{
	static char buf[64];
	struct hdrs h = { headers };
	const char *q = strchr(url, '?');
	struct hr_request rq = { .method = method, .path = url, .plen = q ? (size_t)(q - url) : strlen(url),
				 .query = q ? q + 1 : NULL, .qlen = q ? strlen(q + 1) : 0,
				 .header = hdr, .header_arg = &h };
	const struct httproute *r = NULL;
	const struct hr_rule *rule = NULL;
	switch (httproute_match(s, "default", "echo", port, &rq, &r, &rule)) {
	case HR_NO_ROUTES: return "none";
	case HR_NOT_FOUND: return "404";
	case HR_MATCHED: break;
	}
	snprintf(buf, sizeof(buf), "%s#%d", r->obj.name, (int)(rule - r->rules));
	return buf;
}

static const char *const canary[] = { "x-canary", "1", NULL };
static const char *const two[] = { "x-canary", "1", "x-b", "b", NULL };

TEST(precedence_table)
{
	struct httproute_set *s = compile("[" ROUTE("r1", "2024-01-01T00:00:00Z",
		"{\"parentRefs\":[{\"group\":\"\",\"kind\":\"Service\",\"name\":\"echo\",\"port\":80}],"
		"\"rules\":["
		"{\"matches\":[{\"path\":{\"type\":\"PathPrefix\",\"value\":\"/\"}}],"
		" \"backendRefs\":[{\"name\":\"v1\",\"port\":80}]},"
		"{\"matches\":[{\"path\":{\"type\":\"PathPrefix\",\"value\":\"/api/\"}}],"
		" \"backendRefs\":[{\"name\":\"v1\",\"port\":80}]},"
		"{\"matches\":[{\"path\":{\"type\":\"Exact\",\"value\":\"/api\"}}],"
		" \"backendRefs\":[{\"name\":\"v1\",\"port\":80}]},"
		"{\"matches\":[{\"headers\":[{\"name\":\"X-Canary\",\"value\":\"1\"}]}],"
		" \"backendRefs\":[{\"name\":\"v2\",\"port\":80}]},"
		"{\"matches\":[{\"headers\":[{\"name\":\"x-canary\",\"value\":\"1\"},{\"name\":\"x-b\",\"value\":\"b\"}]}],"
		" \"backendRefs\":[{\"name\":\"v2\",\"port\":80}]},"
		"{\"matches\":[{\"method\":\"POST\"}],\"backendRefs\":[{\"name\":\"v2\",\"port\":80}]},"
		"{\"matches\":[{\"queryParams\":[{\"name\":\"v\",\"value\":\"2\"}]}],"
		" \"backendRefs\":[{\"name\":\"v2\",\"port\":80}]}"
		"]}") "," ROUTE("r0", "2023-01-01T00:00:00Z",
		"{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],"
		"\"rules\":[{\"matches\":[{\"path\":{\"type\":\"PathPrefix\",\"value\":\"/old\"}},"
		"{\"path\":{\"type\":\"PathPrefix\",\"value\":\"/api\"}}],"
		"\"backendRefs\":[{\"name\":\"v1\",\"port\":80}]}]}") "]");
	static const struct {
		const char *method, *url;
		const char *const *headers;
		uint16_t port;
		const char *want;
	} cases[] = {
		{ "GET", "/api", NULL, 80, "r1#2" },		/* exact beats any prefix */
		{ "GET", "/api/x", NULL, 80, "r0#0" },		/* same prefix length: the older route */
		{ "GET", "/api?v=2", NULL, 80, "r1#2" },
		{ "GET", "/apix", NULL, 80, "r1#0" },		/* element-wise */
		{ "GET", "/old", NULL, 81, "r0#0" },		/* r0 attaches to every port */
		{ "GET", "/x", NULL, 81, "404" },		/* r1 only on 80; r0 has no "/" rule */
		{ "GET", "/x", canary, 80, "r1#3" },		/* header beats nothing */
		{ "GET", "/x", two, 80, "r1#4" },		/* more headers win */
		{ "POST", "/x", canary, 80, "r1#5" },		/* method beats headers */
		{ "GET", "/x?a=1&v=2", NULL, 80, "r1#6" },
		{ "GET", "/x?v=22", NULL, 80, "r1#0" },		/* exact value */
		{ "GET", "/x", NULL, 80, "r1#0" },
		{ "GET", "/oldie", NULL, 80, "r1#0" },
		{ "GET", "/old/1", NULL, 80, "r0#0" },
	};
	CHECK(s != NULL);
	if (!s)
		return;
	CHECK_EQ_INT(s->stats.accepted, 2);
	CHECK_EQ_INT(s->stats.refused, 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *got = route_of(s, cases[i].method, cases[i].url, cases[i].headers, cases[i].port);
		if (strcmp(got, cases[i].want) != 0)
			fprintf(stderr, "  case %zu: %s %s port %u: got %s, want %s\n", i, cases[i].method,
				cases[i].url, cases[i].port, got, cases[i].want);
		CHECK_EQ_STR(got, cases[i].want);
	}
	struct hdrs h = { NULL };
	struct hr_request rq = { .method = "GET", .path = "/", .plen = 1, .header = hdr, .header_arg = &h };
	const struct httproute *r;
	const struct hr_rule *rule;
	CHECK_EQ_INT(httproute_match(s, "default", "other", 80, &rq, &r, &rule), HR_NO_ROUTES);
	CHECK_EQ_INT(httproute_match(s, "other", "echo", 80, &rq, &r, &rule), HR_NO_ROUTES);
	CHECK(httproute_attached(s, "default", "echo"));
	CHECK(!httproute_attached(s, "default", "v1"));
	httproute_set_unref(s);
}

TEST(path_prefix_elements)
{
	struct hr_match m = { .path_type = HR_PATH_PREFIX, .path = "/abc" };
	CHECK(httproute_path_matches(&m, "/abc", 4));
	CHECK(httproute_path_matches(&m, "/abc/", 5));
	CHECK(httproute_path_matches(&m, "/abc/def", 8));
	CHECK(!httproute_path_matches(&m, "/abcd", 5));
	CHECK(!httproute_path_matches(&m, "/ab", 3));
	struct hr_match root = { .path_type = HR_PATH_PREFIX, .path = "" };
	CHECK(httproute_path_matches(&root, "/", 1));
	CHECK(httproute_path_matches(&root, "/anything", 9));
	struct hr_match ex = { .path_type = HR_PATH_EXACT, .path = "/abc" };
	CHECK(httproute_path_matches(&ex, "/abc", 4));
	CHECK(!httproute_path_matches(&ex, "/abc/", 5));
}

TEST(weights)
{
	struct httproute_set *s = compile("[" ROUTE("w", "2024-01-01T00:00:00Z",
		"{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":["
		"{\"backendRefs\":[{\"name\":\"v1\",\"port\":80,\"weight\":90},{\"name\":\"v2\",\"port\":8080,\"weight\":10},"
		"{\"name\":\"v3\",\"port\":80,\"weight\":0}]},"
		"{\"matches\":[{\"path\":{\"value\":\"/zero\"}}],\"backendRefs\":[{\"name\":\"v1\",\"port\":80,\"weight\":0}]},"
		"{\"matches\":[{\"path\":{\"value\":\"/none\"}}]},"
		"{\"matches\":[{\"path\":{\"value\":\"/bad\"}}],\"backendRefs\":[{\"name\":\"v1\",\"port\":80,\"namespace\":\"x\"},"
		"{\"name\":\"v1\",\"port\":80,\"kind\":\"ServiceImport\",\"group\":\"multicluster.x-k8s.io\"},{\"name\":\"v1\"}]}"
		"]}") "]");
	CHECK(s != NULL);
	if (!s)
		return;
	const struct hr_rule *r = &s->routes[0]->rules[0];
	int n1 = 0, n2 = 0;
	CHECK_EQ_INT(r->total_weight, 100);
	for (uint32_t i = 0; i < 1000; i++) {
		const struct hr_backend *b = httproute_pick(r, i * 2654435761u);
		CHECK(b != NULL);
		n1 += b && strcmp(b->name, "v1") == 0;
		n2 += b && strcmp(b->name, "v2") == 0;
	}
	CHECK(n1 > 850 && n1 < 950);
	CHECK_EQ_INT(n1 + n2, 1000);
	CHECK_EQ_INT(r->backends[1].port, 8080);
	CHECK_EQ_STR(r->backends[0].namespace, "default");
	CHECK(httproute_pick(&s->routes[0]->rules[1], 5) == NULL);	/* all weight 0: 500 */
	CHECK(httproute_pick(&s->routes[0]->rules[2], 5) == NULL);	/* no backends: 500 */
	const struct hr_rule *bad = &s->routes[0]->rules[3];
	for (int i = 0; i < 3; i++)
		CHECK(bad->backends[i].invalid != NULL);
	httproute_set_unref(s);
}

/* Each refused object: not accepted, one refusal diagnostic with this path and text. */
TEST(refusals)
{
	static const struct {
		const char *spec, *path, *msg;
	} cases[] = {
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"matches\":[{\"path\":"
		  "{\"type\":\"RegularExpression\",\"value\":\"/a.*\"}}]}]}",
		  "spec.rules[0].matches[0].path.type", "RegularExpression" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"matches\":[{\"headers\":"
		  "[{\"type\":\"RegularExpression\",\"name\":\"a\",\"value\":\"b\"}]}]}]}",
		  "spec.rules[0].matches[0].headers[0].type", "only Exact" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"RequestRedirect\",\"requestRedirect\":{\"statusCode\":200}}]}]}",
		  "spec.rules[0].filters[0].requestRedirect.statusCode", "" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"RequestRedirect\",\"requestRedirect\":{\"statusCode\":304}}]}]}",
		  "spec.rules[0].filters[0].requestRedirect.statusCode", "not a redirect status" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"RequestRedirect\",\"requestRedirect\":{\"scheme\":\"ftp\"}}]}]}",
		  "spec.rules[0].filters[0].requestRedirect.scheme", "" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"RequestRedirect\",\"requestRedirect\":{\"hostname\":\"Bad_Host\"}}]}]}",
		  "spec.rules[0].filters[0].requestRedirect.hostname", "precise hostname" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"RequestRedirect\",\"requestRedirect\":{\"port\":0}}]}]}",
		  "spec.rules[0].filters[0].requestRedirect.port", "" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"RequestRedirect\",\"requestRedirect\":{\"path\":{\"type\":\"ReplaceFullPath\"}}}]}]}",
		  "spec.rules[0].filters[0].requestRedirect.path.replaceFullPath", "missing" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"RequestRedirect\",\"requestRedirect\":{\"path\":{\"type\":\"ReplaceFullPath\",\"replaceFullPath\":\"a/b\"}}}]}]}",
		  "spec.rules[0].filters[0].requestRedirect.path.replaceFullPath", "absolute path" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"RequestRedirect\",\"requestRedirect\":{\"path\":{\"type\":\"ReplaceFullPath\",\"replaceFullPath\":\"/a\",\"replacePrefixMatch\":\"/b\"}}}]}]}",
		  "spec.rules[0].filters[0].requestRedirect.path", "only the field" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"RequestRedirect\",\"requestRedirect\":{\"path\":{\"type\":\"RegexReplace\",\"replaceFullPath\":\"/a\"}}}]}]}",
		  "spec.rules[0].filters[0].requestRedirect.path.type", "" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"matches\":[{\"path\":"
		  "{\"type\":\"Exact\",\"value\":\"/a\"}}],\"filters\":[{\"type\":\"RequestRedirect\",\"requestRedirect\":"
		  "{\"path\":{\"type\":\"ReplacePrefixMatch\",\"replacePrefixMatch\":\"/b\"}}}]}]}",
		  "spec.rules[0].filters", "PathPrefix" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"RequestRedirect\",\"requestRedirect\":{}},{\"type\":\"RequestRedirect\",\"requestRedirect\":{}}]}]}",
		  "spec.rules[0].filters[1]", "listed twice" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"URLRewrite\",\"urlRewrite\":{}},{\"type\":\"RequestRedirect\",\"requestRedirect\":{}}]}]}",
		  "spec.rules[0].filters[1]", "cannot both be used" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"URLRewrite\",\"urlRewrite\":{\"hostname\":\"a..b\"}}]}]}",
		  "spec.rules[0].filters[0].urlRewrite.hostname", "precise hostname" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"matches\":[{\"path\":"
		  "{\"type\":\"Exact\",\"value\":\"/a\"}}],\"filters\":[{\"type\":\"URLRewrite\",\"urlRewrite\":"
		  "{\"path\":{\"type\":\"ReplacePrefixMatch\",\"replacePrefixMatch\":\"/b\"}}}]}]}",
		  "spec.rules[0].filters", "PathPrefix" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"RequestMirror\"}]}]}", "spec.rules[0].filters[0].type", "not supported" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"timeouts\":{\"request\":\"1.5s\"}}]}",
		  "spec.rules[0].timeouts.request", "not a Gateway API duration" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"timeouts\":{\"request\":\"-1s\"}}]}",
		  "spec.rules[0].timeouts.request", "not a Gateway API duration" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"timeouts\":{\"request\":10}}]}",
		  "spec.rules[0].timeouts.request", "" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"timeouts\":"
		  "{\"request\":\"1s\",\"backendRequest\":\"2s\"}}]}",
		  "spec.rules[0].timeouts.backendRequest", "not be longer than request" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"timeouts\":{\"idle\":\"1s\"}}]}",
		  "spec.rules[0].timeouts.idle", "unknown" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"timeouts\":\"1s\"}]}",
		  "spec.rules[0].timeouts", "object" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"matches\":[{\"path\":"
		  "{\"value\":\"a/b\"}}]}]}", "spec.rules[0].matches[0].path.value", "absolute path" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"matches\":[{\"path\":"
		  "{\"value\":\"/a/../b\"}}]}]}", "spec.rules[0].matches[0].path.value", "absolute path" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"matches\":[{\"method\":\"FETCH\"}]}]}",
		  "spec.rules[0].matches[0].method", "" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"backendRefs\":"
		  "[{\"name\":\"v1\",\"port\":80,\"weight\":-1}]}]}", "spec.rules[0].backendRefs[0].weight", "" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"backendRefs\":"
		  "[{\"name\":\"v1\",\"port\":80,\"filters\":[{\"type\":\"RequestHeaderModifier\"}]}]}]}",
		  "spec.rules[0].backendRefs[0].filters[0].type", "on a backendRef" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"backendRefs\":"
		  "[{\"name\":\"v1\",\"port\":80,\"filters\":[{\"type\":\"ResponseHeaderModifier\"}]}]}]}",
		  "spec.rules[0].backendRefs[0].filters[0].type", "on a backendRef" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"ResponseHeaderModifier\",\"responseHeaderModifier\":{\"set\":[{\"name\":\"Content-Length\",\"value\":\"1\"}]}}]}]}",
		  "spec.rules[0].filters[0].responseHeaderModifier", "framing header" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"RequestHeaderModifier\",\"requestHeaderModifier\":{\"remove\":[\"Transfer-Encoding\"]}}]}]}",
		  "spec.rules[0].filters[0].requestHeaderModifier", "framing header" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"ResponseHeaderModifier\"}]}]}",
		  "spec.rules[0].filters[0].responseHeaderModifier", "missing" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"ResponseHeaderModifier\",\"responseHeaderModifier\":{\"add\":[{\"name\":\"a\",\"value\":\"1\"}]}},"
		  "{\"type\":\"ResponseHeaderModifier\",\"responseHeaderModifier\":{\"remove\":[\"b\"]}}]}]}",
		  "spec.rules[0].filters[1]", "listed twice" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
		  "[{\"type\":\"ResponseHeaderModifier\",\"responseHeaderModifier\":{\"set\":[{\"name\":\"a b\",\"value\":\"1\"}]}}]}]}",
		  "spec.rules[0].filters[0].responseHeaderModifier.set[0].name", "not a header name" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[]}", "spec.rules", "no rules" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"matches\":[{\"headers\":"
		  "[{\"name\":\"bad name\",\"value\":\"b\"}]}]}]}", "spec.rules[0].matches[0].headers[0].name",
		  "not a header name" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"bogus\":1}]}",
		  "spec.rules[0].bogus", "unknown" },
		{ "{\"parentRefs\":\"echo\",\"rules\":[{}]}", "spec.parentRefs", "array" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"retry\":{\"attempts\":11}}]}",
		  "spec.rules[0].retry.attempts", "from 0 to 10" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"retry\":{\"codes\":[503,200]}}]}",
		  "spec.rules[0].retry", "codes[1] must be an HTTP status from 400 to 599" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"retry\":{\"codes\":[\"503\"]}}]}",
		  "spec.rules[0].retry", "codes[0]" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"retry\":{\"backoff\":\"1.5s\"}}]}",
		  "spec.rules[0].retry.backoff", "not a Gateway API duration" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"retry\":{\"budget\":1}}]}",
		  "spec.rules[0].retry.budget", "unknown" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"retry\":3}]}",
		  "spec.rules[0].retry", "object" },
		{ "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"retry\":{\"codes\":"
		  "[500,501,502,503,504,505,506,507,508,509,510,511,512,513,514,515,516]}}]}",
		  "spec.rules[0].retry.codes", "bound is 16" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *text;
		CHECK(asprintf(&text, "[" ROUTE("bad", "2024-01-01T00:00:00Z", "%s") "]", cases[i].spec) > 0);
		struct httproute_set *s = compile(text);
		free(text);
		CHECK(s != NULL);
		if (!s)
			continue;
		CHECK_EQ_INT(s->nroutes, 1);
		CHECK_EQ_INT(s->stats.refused, 1);
		CHECK(!s->routes[0]->accepted);
		CHECK(!httproute_attached(s, "default", "echo"));
		const struct istio_diag *d = NULL;
		for (int k = 0; k < s->routes[0]->obj.ndiags; k++)
			if (s->routes[0]->obj.diags[k].kind == ISTIO_DIAG_REFUSED)
				d = &s->routes[0]->obj.diags[k];
		CHECK(d != NULL);
		if (d && (strstr(d->path, cases[i].path) != d->path || !strstr(d->message, cases[i].msg)))
			fprintf(stderr, "  case %zu: path '%s' message '%s'\n", i, d->path, d->message);
		CHECK(d && strstr(d->path, cases[i].path) == d->path && strstr(d->message, cases[i].msg));
		httproute_set_unref(s);
	}
}

TEST(parents_and_filters)
{
	struct httproute_set *s = compile("[" ROUTE("p", "2024-01-01T00:00:00Z",
		"{\"parentRefs\":[{\"group\":\"gateway.networking.k8s.io\",\"kind\":\"Gateway\",\"name\":\"gw\"},"
		"{\"kind\":\"Service\",\"name\":\"far\",\"namespace\":\"other\"},"
		"{\"group\":\"core\",\"kind\":\"Service\",\"name\":\"echo\",\"namespace\":\"default\"}],"
		"\"hostnames\":[\"echo.example\"],"
		"\"rules\":[{\"filters\":[{\"type\":\"RequestHeaderModifier\",\"requestHeaderModifier\":"
		"{\"set\":[{\"name\":\"X-Set\",\"value\":\"s\"}],\"add\":[{\"name\":\"x-add\",\"value\":\"\"}],"
		"\"remove\":[\"X-Gone\"]}},{\"type\":\"ResponseHeaderModifier\",\"responseHeaderModifier\":"
		"{\"set\":[{\"name\":\"X-Resp\",\"value\":\"r\"}],\"remove\":[\"Server\"]}}],"
		"\"backendRefs\":[{\"name\":\"v1\",\"port\":80}]}]}")
		"," "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\","
		"\"metadata\":{\"name\":\"a\",\"namespace\":\"default\"},\"spec\":{}}"
		"," "{\"apiVersion\":\"gateway.networking.k8s.io/v1beta1\",\"kind\":\"HTTPRoute\","
		"\"metadata\":{\"name\":\"nons\"},\"spec\":{}}" "]");
	CHECK(s != NULL);
	if (!s)
		return;
	CHECK_EQ_INT(s->nroutes, 2);	/* the policy is not a route */
	CHECK_EQ_INT(s->stats.accepted, 1);
	CHECK_EQ_INT(s->stats.refused, 1);	/* no namespace */
	const struct httproute *r = s->routes[0]->accepted ? s->routes[0] : s->routes[1];
	CHECK_EQ_INT(r->nparents, 1);
	CHECK_EQ_STR(r->parents[0].name, "echo");
	CHECK_EQ_INT(r->obj.ndiags, 3);	/* the Gateway, the consumer route, hostnames */
	CHECK(httproute_attached(s, "default", "echo"));
	CHECK(!httproute_attached(s, "other", "far"));
	CHECK_EQ_STR(r->rules[0].req.set[0].name, "x-set");
	CHECK_EQ_STR(r->rules[0].req.add[0].value, "");
	CHECK_EQ_STR(r->rules[0].req.remove[0], "x-gone");
	CHECK_EQ_INT(r->rules[0].req.nset + r->rules[0].req.nadd + r->rules[0].req.nremove, 3);
	CHECK_EQ_INT(r->rules[0].resp.nset, 1);
	CHECK_EQ_INT(r->rules[0].resp.nadd, 0);
	CHECK_EQ_STR(r->rules[0].resp.set[0].name, "x-resp");
	CHECK_EQ_STR(r->rules[0].resp.remove[0], "server");
	json_t *j = httproute_set_json(s, NULL, NULL);
	CHECK(j != NULL);
	CHECK_EQ_INT(json_array_size(json_object_get(j, "routes")), 2);
	char *dump = json_dumps(j, 0);
	CHECK(dump && strstr(dump, "\"x-set\"") && strstr(dump, "\"accepted\": false"));
	CHECK(dump && strstr(dump, "\"response_header_modifier\"") && strstr(dump, "\"x-resp\""));
	free(dump);
	json_decref(j);
	httproute_set_unref(s);
}

/* A modifier whose set and add lines pass HTTPROUTE_MAX_HMOD_BYTES is refused whole. */
TEST(header_modifier_bytes)
{
	char big[4001], *text;
	memset(big, 'v', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (int n = 2; n <= 3; n++) {
		CHECK(asprintf(&text, "[" ROUTE("big", "2024-01-01T00:00:00Z",
			"{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"filters\":"
			"[{\"type\":\"ResponseHeaderModifier\",\"responseHeaderModifier\":{\"set\":"
			"[{\"name\":\"a\",\"value\":\"%s\"},{\"name\":\"b\",\"value\":\"%s\"}],"
			"\"add\":[{\"name\":\"c\",\"value\":\"%s\"}]}}]}]}") "]",
			big, big, n == 3 ? big : "") > 0);
		struct httproute_set *s = compile(text);
		free(text);
		CHECK(s != NULL);
		if (!s)
			continue;
		CHECK_EQ_INT(s->stats.accepted, n == 2 ? 1 : 0);	/* 8015 bytes fit, 12015 do not */
		CHECK(n == 2 || (s->routes[0]->obj.ndiags &&
				 strstr(s->routes[0]->obj.diags[s->routes[0]->obj.ndiags - 1].message,
					"bytes of header lines")));
		httproute_set_unref(s);
	}
}

/* Whether the admin JSON of s holds both strings. */
static bool admin_has(const struct httproute_set *s, const char *a, const char *b)
{
	json_t *j = httproute_set_json(s, NULL, NULL);
	char *dump = j ? json_dumps(j, 0) : NULL;
	bool ok = dump && strstr(dump, a) && strstr(dump, b);
	free(dump);
	json_decref(j);
	return ok;
}

/* RequestRedirect: compiled fields, and the Location as the Gateway API builds it. */
TEST(redirect_location)
{
	struct hr_redirect rd = { .on = true, .status = 302 };
	struct hr_match pre = { .path_type = HR_PATH_PREFIX, .path = (char *)"/foo" };
	struct hr_match root = { .path_type = HR_PATH_PREFIX, .path = (char *)"" };
	static const struct {
		const char *scheme, *hostname, *path, *req, *query, *host, *want;
		int mod;
		uint16_t port, svc_port;
		bool root;
	} cases[] = {
		/* nothing set: the request's host, path, query; the Service port (80: left out) */
		{ NULL, NULL, NULL, "/foo/bar", "a=1", "echo.default:80", "http://echo.default/foo/bar?a=1",
		  HR_PATH_KEEP, 0, 80, false },
		{ NULL, NULL, NULL, "/foo", NULL, "echo", "http://echo:8080/foo", HR_PATH_KEEP, 0, 8080, false },
		/* a scheme: its port unless one is set */
		{ "https", NULL, NULL, "/foo", NULL, "echo:8080", "https://echo/foo", HR_PATH_KEEP, 0, 8080, false },
		{ "https", "example.org", NULL, "/x", "q", "echo", "https://example.org:8443/x?q",
		  HR_PATH_KEEP, 8443, 80, false },
		{ NULL, NULL, NULL, "/x", NULL, "[fd00::1]:80", "http://[fd00::1]:81/x", HR_PATH_KEEP, 81, 80, false },
		{ NULL, NULL, NULL, "/x", NULL, "", "http://echo.default.svc.cluster.local/x", HR_PATH_KEEP, 0, 80, false },
		{ NULL, NULL, "/new", "/foo/bar", "k=v", "h", "http://h/new?k=v", HR_PATH_FULL, 0, 80, false },
		/* ReplacePrefixMatch, the spec's table */
		{ NULL, NULL, "/xyz", "/foo/bar", NULL, "h", "http://h/xyz/bar", HR_PATH_REPLACE_PREFIX, 0, 80, false },
		{ NULL, NULL, "/xyz", "/foo", NULL, "h", "http://h/xyz", HR_PATH_REPLACE_PREFIX, 0, 80, false },
		{ NULL, NULL, "/xyz", "/foo/", NULL, "h", "http://h/xyz/", HR_PATH_REPLACE_PREFIX, 0, 80, false },
		{ NULL, NULL, "", "/foo/bar", NULL, "h", "http://h/bar", HR_PATH_REPLACE_PREFIX, 0, 80, false },
		{ NULL, NULL, "", "/foo", NULL, "h", "http://h/", HR_PATH_REPLACE_PREFIX, 0, 80, false },
		{ NULL, NULL, "", "/foo/", NULL, "h", "http://h/", HR_PATH_REPLACE_PREFIX, 0, 80, false },
		{ NULL, NULL, "/xyz", "/a/b", "z", "h", "http://h/xyz/a/b?z", HR_PATH_REPLACE_PREFIX, 0, 80, true },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		rd.scheme = (char *)cases[i].scheme;
		rd.hostname = (char *)cases[i].hostname;
		rd.path.value = (char *)cases[i].path;
		rd.path.mod = cases[i].mod;
		rd.port = cases[i].port;
		const char *q = cases[i].query;
		char *loc = httproute_redirect_location(&rd, cases[i].root ? &root : &pre, cases[i].host,
							strlen(cases[i].host),
							"echo.default.svc.cluster.local", cases[i].svc_port,
							cases[i].req, strlen(cases[i].req), q, q ? strlen(q) : 0);
		if (!loc || strcmp(loc, cases[i].want) != 0)
			fprintf(stderr, "  case %zu: got '%s' want '%s'\n", i, loc ? loc : "(null)", cases[i].want);
		CHECK(loc && strcmp(loc, cases[i].want) == 0);
		free(loc);
	}

	struct httproute_set *s = compile("[" ROUTE("r", "2024-01-01T00:00:00Z",
		"{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"matches\":"
		"[{\"path\":{\"type\":\"PathPrefix\",\"value\":\"/old/\"}}],\"filters\":[{\"type\":"
		"\"RequestRedirect\",\"requestRedirect\":{\"scheme\":\"https\",\"hostname\":\"new.example\","
		"\"port\":8443,\"statusCode\":301,\"path\":{\"type\":\"ReplacePrefixMatch\","
		"\"replacePrefixMatch\":\"/new/\"}}}]},{\"filters\":[{\"type\":\"RequestRedirect\","
		"\"requestRedirect\":{}}]}]}") "]");
	CHECK(s != NULL);
	if (!s)
		return;
	CHECK_EQ_INT(s->stats.accepted, 1);
	const struct hr_rule *r0 = &s->routes[0]->rules[0], *r1 = &s->routes[0]->rules[1];
	CHECK(r0->redirect.on && r1->redirect.on);
	CHECK_EQ_INT(r0->redirect.status, 301);
	CHECK_EQ_INT(r1->redirect.status, 302);	/* the spec's default */
	CHECK_EQ_INT(r0->redirect.port, 8443);
	CHECK_EQ_STR(r0->redirect.scheme, "https");
	CHECK_EQ_STR(r0->redirect.hostname, "new.example");
	CHECK_EQ_STR(r0->redirect.path.value, "/new");
	CHECK_EQ_INT(r0->redirect.path.mod, HR_PATH_REPLACE_PREFIX);
	CHECK(r1->redirect.path.mod == HR_PATH_KEEP && !r1->redirect.scheme);
	char *loc = httproute_redirect_location(&r0->redirect, &r0->matches[0], "echo", 4, "x", 80,
						"/old/a", 6, NULL, 0);
	CHECK(loc && strcmp(loc, "https://new.example:8443/new/a") == 0);
	free(loc);
	CHECK(admin_has(s, "\"request_redirect\"", "\"ReplacePrefixMatch\""));
	httproute_set_unref(s);
}

/* URLRewrite: compiled, and the rewritten path (the same HTTPPathModifier as redirects). */
TEST(url_rewrite)
{
	struct httproute_set *s = compile("[" ROUTE("w", "2024-01-01T00:00:00Z",
		"{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{\"matches\":"
		"[{\"path\":{\"type\":\"PathPrefix\",\"value\":\"/legacy\"}}],\"filters\":[{\"type\":"
		"\"URLRewrite\",\"urlRewrite\":{\"hostname\":\"new.example\",\"path\":{\"type\":"
		"\"ReplacePrefixMatch\",\"replacePrefixMatch\":\"/\"}}}],\"backendRefs\":[{\"name\":\"v1\","
		"\"port\":80}]},{\"filters\":[{\"type\":\"URLRewrite\",\"urlRewrite\":{\"path\":{\"type\":"
		"\"ReplaceFullPath\",\"replaceFullPath\":\"/all\"}}}],\"backendRefs\":[{\"name\":\"v1\","
		"\"port\":80}]}]}") "]");
	CHECK(s != NULL);
	if (!s)
		return;
	CHECK_EQ_INT(s->stats.accepted, 1);
	const struct hr_rule *r0 = &s->routes[0]->rules[0], *r1 = &s->routes[0]->rules[1];
	CHECK(r0->rewrite.on && r1->rewrite.on && !r0->redirect.on);
	CHECK_EQ_STR(r0->rewrite.hostname, "new.example");
	CHECK(!r1->rewrite.hostname);
	static const struct {
		int rule;
		const char *path, *want;
	} cases[] = {
		{ 0, "/legacy/status/202", "/status/202" }, { 0, "/legacy", "/" }, { 0, "/legacy/", "/" },
		{ 1, "/x/y", "/all" }, { 1, "/", "/all" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct hr_rule *r = cases[i].rule ? r1 : r0;
		char *p = httproute_rewrite_path(&r->rewrite.path, &r->matches[0], cases[i].path,
						 strlen(cases[i].path));
		if (!p || strcmp(p, cases[i].want) != 0)
			fprintf(stderr, "  case %zu: got '%s' want '%s'\n", i, p ? p : "(null)", cases[i].want);
		CHECK(p && strcmp(p, cases[i].want) == 0);
		free(p);
	}
	struct hr_pathmod keep = { .mod = HR_PATH_KEEP };
	char *p = httproute_rewrite_path(&keep, NULL, "/same/x", 7);
	CHECK(p && strcmp(p, "/same/x") == 0);
	free(p);
	CHECK(admin_has(s, "\"url_rewrite\"", "\"new.example\""));
	httproute_set_unref(s);
}

TEST(per_service_bound)
{
	json_t *arr = json_array();
	for (int i = 0; i < HTTPROUTE_MAX_PER_SERVICE + 3; i++) {
		char buf[512];
		snprintf(buf, sizeof(buf), ROUTE("r%03d", "2024-01-01T00:00:%02dZ",
			 "{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":[{}]}"),
			 i, i % 60);
		json_array_append_new(arr, json_loads(buf, 0, NULL));
	}
	struct httproute_set *s = httproute_set_compile(arr, 1);
	json_decref(arr);
	CHECK(s != NULL);
	if (!s)
		return;
	CHECK_EQ_INT(s->nservices, 1);
	CHECK_EQ_INT(s->services[0].nroutes, HTTPROUTE_MAX_PER_SERVICE);
	int refused = 0;
	for (int i = 0; i < s->nroutes; i++)
		for (int k = 0; k < s->routes[i]->obj.ndiags; k++)
			refused += s->routes[i]->obj.diags[k].kind == ISTIO_DIAG_REFUSED;
	CHECK_EQ_INT(refused, 3);
	httproute_set_unref(s);
}

TEST(durations)
{
	uint64_t ms = 0;
	CHECK_EQ_INT(httproute_parse_duration("1h", &ms), 0);
	CHECK_EQ_INT(ms, 3600000);
	CHECK_EQ_INT(httproute_parse_duration("1m30s", &ms), 0);
	CHECK_EQ_INT(ms, 90000);
	CHECK_EQ_INT(httproute_parse_duration("250ms", &ms), 0);
	CHECK_EQ_INT(ms, 250);
	CHECK_EQ_INT(httproute_parse_duration("", &ms), -EINVAL);
	CHECK_EQ_INT(httproute_parse_duration("1.5s", &ms), -EINVAL);
	CHECK_EQ_INT(httproute_parse_duration("123456s", &ms), -EINVAL);
	CHECK_EQ_INT(httproute_parse_duration("1s1s1s1s1s", &ms), -EINVAL);
	CHECK_EQ_INT(httproute_parse_duration("0s", &ms), 0);
	CHECK_EQ_INT(ms, 0);
	CHECK_EQ_INT(httproute_parse_duration("99999h", &ms), 0);
	CHECK_EQ_INT(ms, 99999ull * 3600000);
	CHECK_EQ_INT(httproute_parse_duration("1h2m3s4ms", &ms), 0);
	CHECK_EQ_INT(ms, 3723004);
	CHECK_EQ_INT(httproute_parse_duration("10", &ms), -EINVAL);
	CHECK_EQ_INT(httproute_parse_duration("s", &ms), -EINVAL);
	CHECK_EQ_INT(httproute_parse_duration("1d", &ms), -EINVAL);
	CHECK_EQ_INT(httproute_parse_duration("1us", &ms), -EINVAL);
	CHECK_EQ_INT(httproute_parse_duration("-1s", &ms), -EINVAL);
	CHECK_EQ_INT(httproute_parse_duration(" 1s", &ms), -EINVAL);
	CHECK_EQ_INT(httproute_parse_duration("1s ", &ms), -EINVAL);
	CHECK_EQ_INT(httproute_parse_duration("1S", &ms), -EINVAL);
	CHECK_EQ_INT(httproute_parse_duration("1mss", &ms), -EINVAL);
}

/* timeouts as Istio maps them without a retry policy: backendRequest (not 0) wins, "0s" is
 * none. */
TEST(rule_timeouts)
{
	struct httproute_set *s = compile("[" ROUTE("t", "2024-01-01T00:00:00Z",
		"{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":["
		"{\"matches\":[{\"path\":{\"value\":\"/a\"}}],\"timeouts\":{\"request\":\"500ms\"}},"
		"{\"matches\":[{\"path\":{\"value\":\"/b\"}}],\"timeouts\":{\"request\":\"0s\"}},"
		"{\"matches\":[{\"path\":{\"value\":\"/c\"}}],\"timeouts\":{\"request\":\"10s\",\"backendRequest\":\"2s\"}},"
		"{\"matches\":[{\"path\":{\"value\":\"/d\"}}],\"timeouts\":{\"request\":\"0s\",\"backendRequest\":\"1m\"}},"
		"{\"matches\":[{\"path\":{\"value\":\"/e\"}}]}"
		"]}") "]");
	CHECK(s != NULL);
	if (!s)
		return;
	CHECK(s->routes[0]->accepted);
	CHECK_EQ_INT(s->routes[0]->nrules, 5);
	if (s->routes[0]->nrules == 5) {
		CHECK_EQ_INT(s->routes[0]->rules[0].timeout_ms, 500);
		CHECK_EQ_INT(s->routes[0]->rules[1].timeout_ms, 0);
		CHECK_EQ_INT(s->routes[0]->rules[2].timeout_ms, 2000);
		CHECK_EQ_INT(s->routes[0]->rules[3].timeout_ms, 60000);
		CHECK_EQ_INT(s->routes[0]->rules[4].timeout_ms, 0);
	}
	json_t *j = httproute_set_json(s, NULL, NULL);
	json_t *r0 = json_array_get(json_object_get(json_array_get(json_object_get(j, "routes"), 0),
						    "rules"), 0);
	CHECK_EQ_INT(json_integer_value(json_object_get(r0, "timeout_ms")), 500);
	json_decref(j);
	httproute_set_unref(s);
}

/* retry as Istio's gateway conversion maps it: attempts default 2 (0: none), the codes kept,
 * backoff the base interval, and with retry backendRequest is each try's timeout while request
 * stays the route's. */
TEST(rule_retry)
{
	struct httproute_set *s = compile("[" ROUTE("r", "2024-01-01T00:00:00Z",
		"{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"echo\"}],\"rules\":["
		"{\"matches\":[{\"path\":{\"value\":\"/a\"}}],\"retry\":{\"codes\":[503,500],\"attempts\":3,"
		"\"backoff\":\"100ms\"},\"timeouts\":{\"request\":\"10s\",\"backendRequest\":\"2s\"}},"
		"{\"matches\":[{\"path\":{\"value\":\"/b\"}}],\"retry\":{}},"
		"{\"matches\":[{\"path\":{\"value\":\"/c\"}}],\"retry\":{\"attempts\":0,\"codes\":[503]},"
		"\"timeouts\":{\"backendRequest\":\"1s\"}},"
		"{\"matches\":[{\"path\":{\"value\":\"/d\"}}],\"timeouts\":{\"backendRequest\":\"1s\"}}"
		"]}") "]");
	CHECK(s != NULL);
	if (!s)
		return;
	CHECK(s->routes[0]->accepted);
	CHECK_EQ_INT(s->routes[0]->nrules, 4);
	if (s->routes[0]->nrules == 4) {
		const struct hr_rule *r = s->routes[0]->rules;
		CHECK(r[0].retry.on);
		CHECK_EQ_INT(r[0].retry.attempts, 3);
		CHECK_EQ_INT(r[0].retry.ncodes, 2);
		CHECK_EQ_INT(r[0].retry.codes[0], 503);
		CHECK_EQ_INT(r[0].retry.codes[1], 500);
		CHECK_EQ_INT(r[0].retry.backoff_ms, 100);
		CHECK_EQ_INT(r[0].retry.per_try_ms, 2000);
		CHECK_EQ_INT(r[0].timeout_ms, 10000);
		CHECK(r[1].retry.on);
		CHECK_EQ_INT(r[1].retry.attempts, 2);	/* Istio's default when unset */
		CHECK_EQ_INT(r[1].retry.ncodes, 0);
		CHECK_EQ_INT(r[1].retry.backoff_ms, 0);
		CHECK(r[2].retry.on);
		CHECK_EQ_INT(r[2].retry.attempts, 0);
		CHECK_EQ_INT(r[2].retry.per_try_ms, 1000);
		CHECK_EQ_INT(r[2].timeout_ms, 0);
		CHECK(!r[3].retry.on);			/* without retry: backendRequest is the route's */
		CHECK_EQ_INT(r[3].timeout_ms, 1000);
		CHECK_EQ_INT(r[3].retry.per_try_ms, 0);
	}
	json_t *j = httproute_set_json(s, NULL, NULL);
	json_t *r0 = json_array_get(json_object_get(json_array_get(json_object_get(j, "routes"), 0),
						    "rules"), 0);
	json_t *rj = json_object_get(r0, "retry");
	CHECK_EQ_INT(json_integer_value(json_object_get(rj, "attempts")), 3);
	CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(rj, "codes"), 1)), 500);
	CHECK_EQ_INT(json_integer_value(json_object_get(rj, "per_try_timeout_ms")), 2000);
	json_decref(j);
	httproute_set_unref(s);
}

TEST(garbage_is_refused_not_crashed)
{
	static const char *const bad[] = {
		"[{\"apiVersion\":\"gateway.networking.k8s.io/v1\",\"kind\":\"HTTPRoute\"}]",
		"[{\"apiVersion\":\"gateway.networking.k8s.io/v9\",\"kind\":\"HTTPRoute\",\"metadata\":"
		"{\"name\":\"a\",\"namespace\":\"b\"}}]",
		"[" ROUTE("x", "2024-01-01T00:00:00Z", "{\"rules\":[{\"matches\":[1]}]}") "]",
		"[" ROUTE("x", "2024-01-01T00:00:00Z", "{\"rules\":[{\"backendRefs\":[{\"name\":\"a\",\"port\":70000}]}]}") "]",
		"[" ROUTE("x", "2024-01-01T00:00:00Z", "{\"rules\":[{\"matches\":[{\"queryParams\":[{\"name\":\"a\"}]}]}]}") "]",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct httproute_set *s = compile(bad[i]);
		CHECK(s != NULL);
		if (s) {
			CHECK_EQ_INT(s->stats.refused, 1);
			CHECK_EQ_INT(s->nservices, 0);
		}
		httproute_set_unref(s);
	}
}

TEST_MAIN("istio_httproute")
