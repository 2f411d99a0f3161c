// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the policy engine (istio/authz.c): a table of L4 cases over every field,
 * negation, wildcard, scope and Istio's L7-field conversions; L7 requests at a waypoint;
 * PeerAuthentication precedence and portLevelMtls; refused objects keeping their previous
 * version; dumps. */
#include <errno.h>

#include "harness.h"
#include "common/log.h"
#include "common/util.h"
#include "istio/authz.h"

#define ID_BAR "spiffe://cluster.local/ns/bar/sa/client"
#define ID_FOO "spiffe://cluster.local/ns/foo/sa/api"

/* An object in the workloads file's `resources` shape. */
#define OBJ(kind, ns, name, extra_md, spec)                                              \
	"{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"" kind "\",\"metadata\":{" \
	"\"name\":\"" name "\",\"namespace\":\"" ns "\"" extra_md "},\"spec\":" spec "}"
#define AP(ns, name, spec) OBJ("AuthorizationPolicy", ns, name, "", spec)
#define PA(ns, name, ts, spec) OBJ("PeerAuthentication", ns, name, ",\"creationTimestamp\":\"" ts "\"", spec)

static struct authz_set *compile(const char *resources, const struct authz_set *prev)
{
	json_error_t je;
	json_t *j = json_loads(resources, 0, &je);
	struct authz_set *s;
	if (!j) {
		fprintf(stderr, "  bad test JSON: %s: %s\n", je.text, resources);
		return NULL;
	}
	s = authz_compile(j, NULL, prev);
	json_decref(j);
	return s;
}

/* Labels from "k=v,k2=v2" into l (at most 8); returns the count. Borrows from buf. */
static int labels(char *buf, struct label *l)
{
	int n = 0;
	for (char *tok = strtok(buf, ","); tok && n < 8; tok = strtok(NULL, ",")) {
		char *eq = strchr(tok, '=');
		*eq = '\0';
		l[n].key = tok;
		l[n++].value = eq + 1;
	}
	return n;
}

struct l4_case {
	const char *name;
	const char *resources;
	const char *src;	/* source IP */
	const char *id;		/* NULL: plaintext */
	const char *dst_ns;
	const char *dst_labels;
	uint16_t port;
	enum authz_verdict verdict;
	enum authz_reason reason;
	const char *policy;	/* "ns/name" of the deciding policy, or NULL */
};

#define FOO_API "foo", "app=api,tier=web"

static const struct l4_case l4_cases[] = {
	/* order and the two special shapes */
	{ "no policy", "[]", "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },
	{ "allow spec {} matches nothing", "[" AP("foo", "a", "{}") "]", "10.1.0.1", ID_BAR, FOO_API, 8080,
	  AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "allow rules [{}] matches everything", "[" AP("foo", "a", "{\"rules\":[{}]}") "]", "10.1.0.1", NULL,
	  FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "deny without rules matches nothing", "[" AP("foo", "d", "{\"action\":\"DENY\"}") "]", "10.1.0.1", ID_BAR,
	  FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },
	{ "deny rules [{}]", "[" AP("foo", "d", "{\"action\":\"DENY\",\"rules\":[{}]}") "]", "10.1.0.1", ID_BAR,
	  FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_DENY_MATCHED, "foo/d" },
	{ "deny beats allow", "[" AP("foo", "a", "{\"rules\":[{}]}") "," AP("foo", "d", "{\"action\":\"DENY\",\"rules\":[{}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_DENY_MATCHED, "foo/d" },
	{ "one of two allows", "[" AP("foo", "a", "{\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"1\"]}}]}]}") ","
	  AP("foo", "b", "{\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"8080\"]}}]}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/b" },

	/* principals: exact, prefix, suffix, presence; compared without spiffe:// */
#define FROM(field, vals) "{\"rules\":[{\"from\":[{\"source\":{\"" field "\":" vals "}}]}]}"
	{ "principal exact", "[" AP("foo", "a", FROM("principals", "[\"cluster.local/ns/bar/sa/client\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "principal exact other", "[" AP("foo", "a", FROM("principals", "[\"cluster.local/ns/bar/sa/client\"]")) "]",
	  "10.1.0.1", ID_FOO, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "principal with spiffe:// never matches", "[" AP("foo", "a", FROM("principals", "[\"" ID_BAR "\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "principal prefix", "[" AP("foo", "a", FROM("principals", "[\"cluster.local/ns/bar/*\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "principal suffix", "[" AP("foo", "a", FROM("principals", "[\"*/sa/api\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "principal presence, mTLS", "[" AP("foo", "a", FROM("principals", "[\"*\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "principal presence, plaintext", "[" AP("foo", "a", FROM("principals", "[\"*\"]")) "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "notPrincipals excludes", "[" AP("foo", "a", FROM("notPrincipals", "[\"cluster.local/ns/bar/sa/client\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "notPrincipals, plaintext passes", "[" AP("foo", "a", FROM("notPrincipals", "[\"*\"]")) "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "deny notPrincipals * refuses plaintext", "[" AP("foo", "d", "{\"action\":\"DENY\",\"rules\":[{\"from\":[{\"source\":{\"notPrincipals\":[\"*\"]}}]}]}") "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_DENY_MATCHED, "foo/d" },
	{ "deny notPrincipals * lets mTLS in", "[" AP("foo", "d", "{\"action\":\"DENY\",\"rules\":[{\"from\":[{\"source\":{\"notPrincipals\":[\"*\"]}}]}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },

	/* namespaces */
	{ "namespace", "[" AP("foo", "a", FROM("namespaces", "[\"bar\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "namespace prefix", "[" AP("foo", "a", FROM("namespaces", "[\"ba*\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "namespace, plaintext", "[" AP("foo", "a", FROM("namespaces", "[\"*\"]")) "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "notNamespaces", "[" AP("foo", "a", FROM("notNamespaces", "[\"bar\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "notNamespaces, plaintext passes", "[" AP("foo", "a", FROM("notNamespaces", "[\"bar\"]")) "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },

	/* serviceAccounts: ns/sa, or sa in the policy's namespace; exact */
	{ "serviceAccount ns/sa", "[" AP("foo", "a", FROM("serviceAccounts", "[\"bar/client\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "serviceAccount bare is the policy's namespace", "[" AP("foo", "a", FROM("serviceAccounts", "[\"client\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "serviceAccount bare, same namespace", "[" AP("foo", "a", FROM("serviceAccounts", "[\"api\"]")) "]",
	  "10.1.0.1", ID_FOO, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "serviceAccount, plaintext", "[" AP("foo", "a", FROM("serviceAccounts", "[\"bar/client\"]")) "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "notServiceAccounts", "[" AP("foo", "a", FROM("notServiceAccounts", "[\"bar/client\"]")) "]",
	  "10.1.0.1", ID_FOO, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },

	/* ipBlocks */
	{ "ipBlocks CIDR", "[" AP("foo", "a", FROM("ipBlocks", "[\"10.1.0.0/16\"]")) "]",
	  "10.1.2.3", NULL, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "ipBlocks outside", "[" AP("foo", "a", FROM("ipBlocks", "[\"10.1.0.0/16\"]")) "]",
	  "10.2.2.3", NULL, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "ipBlocks bare IP", "[" AP("foo", "a", FROM("ipBlocks", "[\"10.1.2.3\"]")) "]",
	  "10.1.2.3", NULL, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "ipBlocks odd prefix", "[" AP("foo", "a", FROM("ipBlocks", "[\"10.1.2.0/23\"]")) "]",
	  "10.1.3.200", NULL, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "ipBlocks IPv4-mapped source", "[" AP("foo", "a", FROM("ipBlocks", "[\"10.1.0.0/16\"]")) "]",
	  "::ffff:10.1.2.3", NULL, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "ipBlocks IPv6", "[" AP("foo", "a", FROM("ipBlocks", "[\"fd00:1::/32\"]")) "]",
	  "fd00:1:2::5", NULL, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "ipBlocks IPv6 vs IPv4", "[" AP("foo", "a", FROM("ipBlocks", "[\"::/0\"]")) "]",
	  "10.1.2.3", NULL, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "notIpBlocks", "[" AP("foo", "a", FROM("notIpBlocks", "[\"10.1.0.0/16\"]")) "]",
	  "10.1.2.3", NULL, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "source fields AND", "[" AP("foo", "a", "{\"rules\":[{\"from\":[{\"source\":{\"namespaces\":[\"bar\"],\"ipBlocks\":[\"10.9.0.0/16\"]}}]}]}") "]",
	  "10.1.2.3", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "from entries OR", "[" AP("foo", "a", "{\"rules\":[{\"from\":[{\"source\":{\"ipBlocks\":[\"10.9.0.0/16\"]}},{\"source\":{\"namespaces\":[\"bar\"]}}]}]}") "]",
	  "10.1.2.3", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "from and to AND", "[" AP("foo", "a", "{\"rules\":[{\"from\":[{\"source\":{\"namespaces\":[\"bar\"]}}],\"to\":[{\"operation\":{\"ports\":[\"9090\"]}}]}]}") "]",
	  "10.1.2.3", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },

	/* ports: target ports */
#define TO(field, vals) "{\"rules\":[{\"to\":[{\"operation\":{\"" field "\":" vals "}}]}]}"
	{ "ports", "[" AP("foo", "a", TO("ports", "[\"8080\",\"9090\"]")) "]",
	  "10.1.0.1", NULL, FOO_API, 9090, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "ports other", "[" AP("foo", "a", TO("ports", "[\"8080\"]")) "]",
	  "10.1.0.1", NULL, FOO_API, 80, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "notPorts", "[" AP("foo", "a", TO("notPorts", "[\"8080\"]")) "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },

	/* when: the five L4 keys, values and notValues */
#define WHEN(key, vk, vals) "{\"rules\":[{\"when\":[{\"key\":\"" key "\",\"" vk "\":" vals "}]}]}"
	{ "when source.ip", "[" AP("foo", "a", WHEN("source.ip", "values", "[\"10.1.0.0/24\"]")) "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "when source.ip notValues", "[" AP("foo", "a", WHEN("source.ip", "notValues", "[\"10.1.0.0/24\"]")) "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "when source.namespace", "[" AP("foo", "a", WHEN("source.namespace", "values", "[\"bar\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "when source.principal suffix", "[" AP("foo", "a", WHEN("source.principal", "values", "[\"*/sa/client\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "when source.principal notValues", "[" AP("foo", "a", WHEN("source.principal", "notValues", "[\"*/sa/client\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "when destination.ip", "[" AP("foo", "a", WHEN("destination.ip", "values", "[\"10.0.0.2\"]")) "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "when destination.ip other", "[" AP("foo", "a", WHEN("destination.ip", "values", "[\"10.0.0.3/32\"]")) "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "when destination.port", "[" AP("foo", "a", WHEN("destination.port", "values", "[\"8080\"]")) "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "when destination.port notValues", "[" AP("foo", "a", WHEN("destination.port", "notValues", "[\"8080\"]")) "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "when entries AND", "[" AP("foo", "a", "{\"rules\":[{\"when\":[{\"key\":\"destination.port\",\"values\":[\"8080\"]},"
	  "{\"key\":\"source.namespace\",\"values\":[\"foo\"]}]}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },

	/* Istio's L7 conversions at the node agent */
	{ "allow with methods: rule dropped", "[" AP("foo", "a", TO("methods", "[\"GET\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "allow with ports and paths: rule dropped", "[" AP("foo", "a", "{\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"8080\"],\"paths\":[\"/x\"]}}]}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "allow: the L4 rule beside a dropped one", "[" AP("foo", "a", "{\"rules\":[{\"to\":[{\"operation\":{\"hosts\":[\"x\"]}}]},"
	  "{\"from\":[{\"source\":{\"namespaces\":[\"bar\"]}}]}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_ALLOW_MATCHED, "foo/a" },
	{ "allow with requestPrincipals: rule dropped", "[" AP("foo", "a", FROM("requestPrincipals", "[\"*\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "allow with an L7 when: rule dropped", "[" AP("foo", "a", WHEN("request.headers[X-User]", "values", "[\"a\"]")) "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "deny with only methods: matches nothing", "[" AP("foo", "d", "{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"GET\"]}}]}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },
	{ "deny with ports and methods: the ports", "[" AP("foo", "d", "{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"8080\"],\"methods\":[\"GET\"]}}]}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_DENY_MATCHED, "foo/d" },
	{ "deny with ports and methods: other port", "[" AP("foo", "d", "{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"8080\"],\"methods\":[\"GET\"]}}]}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 9090, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },
	{ "deny with namespaces and remoteIpBlocks", "[" AP("foo", "d", "{\"action\":\"DENY\",\"rules\":[{\"from\":[{\"source\":{\"namespaces\":[\"bar\"],\"remoteIpBlocks\":[\"1.2.3.4\"]}}]}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_DENY_MATCHED, "foo/d" },
	{ "deny with an L7 when: matches nothing", "[" AP("foo", "d", "{\"action\":\"DENY\",\"rules\":[{\"from\":[{\"source\":{\"namespaces\":[\"bar\"]}}],"
	  "\"when\":[{\"key\":\"request.headers[x]\",\"values\":[\"1\"]}]}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },

	/* scope */
	{ "other namespace", "[" AP("other", "d", "{\"action\":\"DENY\",\"rules\":[{}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },
	{ "mesh-wide from the root namespace", "[" AP("istio-system", "d", "{\"action\":\"DENY\",\"rules\":[{}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_DENY_MATCHED, "istio-system/d" },
	{ "mesh-wide allow makes the default deny", "[" AP("istio-system", "a", "{}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_NO_ALLOW_MATCHED, NULL },
	{ "selector matches", "[" AP("foo", "d", "{\"selector\":{\"matchLabels\":{\"app\":\"api\",\"tier\":\"web\"}},\"action\":\"DENY\",\"rules\":[{}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_DENY_MATCHED, "foo/d" },
	{ "selector does not match", "[" AP("foo", "d", "{\"selector\":{\"matchLabels\":{\"app\":\"api\",\"tier\":\"db\"}},\"action\":\"DENY\",\"rules\":[{}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },
	{ "selector in another namespace", "[" AP("bar", "d", "{\"selector\":{\"matchLabels\":{\"app\":\"api\"}},\"action\":\"DENY\",\"rules\":[{}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },
	{ "root-namespace selector reaches every namespace", "[" AP("istio-system", "d", "{\"selector\":{\"matchLabels\":{\"tier\":\"web\"}},\"action\":\"DENY\",\"rules\":[{}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_DENY_MATCHED, "istio-system/d" },
	{ "empty selector is namespace-wide", "[" AP("foo", "d", "{\"selector\":{},\"action\":\"DENY\",\"rules\":[{}]}") "]",
	  "10.1.0.1", ID_BAR, "foo", "x=y", 8080, AUTHZ_DENY, AUTHZ_REASON_DENY_MATCHED, "foo/d" },
	{ "targetRefs are the waypoint's", "[" AP("foo", "d", "{\"targetRefs\":[{\"kind\":\"Service\",\"group\":\"\",\"name\":\"api\"}],\"action\":\"DENY\",\"rules\":[{}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },

	/* not enforced at all */
	{ "AUDIT is not enforced", "[" AP("foo", "x", "{\"action\":\"AUDIT\",\"rules\":[{}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },
	{ "CUSTOM is not enforced", "[" AP("foo", "x", "{\"action\":\"CUSTOM\",\"provider\":{\"name\":\"ext\"},\"rules\":[{}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },
	{ "dry-run deny is not enforced", "[" OBJ("AuthorizationPolicy", "foo", "d", ",\"annotations\":{\"istio.io/dry-run\":\"true\"}",
	  "{\"action\":\"DENY\",\"rules\":[{}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },
	{ "a refused object is not applied", "[" AP("foo", "d", "{\"action\":\"DENY\",\"rules\":[{\"from\":[{\"source\":{\"ipBlocks\":[\"10.0.0.0/33\"]}}]}]}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },

	/* PeerAuthentication in the same check */
	{ "STRICT refuses plaintext", "[" PA("istio-system", "default", "2024-01-01T00:00:00Z", "{\"mtls\":{\"mode\":\"STRICT\"}}") "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_DENY, AUTHZ_REASON_MTLS_REQUIRED, "istio-system/default" },
	{ "STRICT accepts mTLS", "[" PA("istio-system", "default", "2024-01-01T00:00:00Z", "{\"mtls\":{\"mode\":\"STRICT\"}}") "]",
	  "10.1.0.1", ID_BAR, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },
	{ "PERMISSIVE accepts plaintext", "[" PA("foo", "p", "2024-01-01T00:00:00Z", "{\"mtls\":{\"mode\":\"PERMISSIVE\"}}") "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },
	{ "DISABLE accepts plaintext", "[" PA("foo", "p", "2024-01-01T00:00:00Z", "{\"mtls\":{\"mode\":\"DISABLE\"}}") "]",
	  "10.1.0.1", NULL, FOO_API, 8080, AUTHZ_ALLOW, AUTHZ_REASON_NO_POLICY, NULL },
};

static void run_l4(const struct l4_case *tc)
{
	struct authz_set *s = compile(tc->resources, NULL);
	struct sockaddr_storage src, dst;
	struct label l[8];
	char lb[128], msg[256];
	struct authz_result r;

	REQUIRE(s);
	snprintf(lb, sizeof(lb), "%s", tc->dst_labels);
	struct authz_workload w = { .namespace = tc->dst_ns, .name = "api-1", .labels = l, .nlabels = labels(lb, l) };
	REQUIRE(ip_parse(tc->src, &src) == 0);
	ip_parse("10.0.0.2", &dst);
	struct authz_conn c = { .src = &src, .dst = &dst, .dst_port = tc->port, .src_identity = tc->id,
				.dst_workload = &w };
	authz_check_conn(s, &c, &r);
	if (r.verdict != tc->verdict || r.reason != tc->reason ||
	    (tc->policy ? !r.policy.name : r.policy.name != NULL)) {
		fprintf(stderr, "  case \"%s\": %s (%s)\n", tc->name, authz_verdict_str(r.verdict),
			authz_result_str(&r, msg, sizeof(msg)));
		test_failed_now = 1;
	} else if (tc->policy) {
		char name[128];
		snprintf(name, sizeof(name), "%s/%s", r.policy.namespace, r.policy.name);
		if (strcmp(name, tc->policy) != 0) {
			fprintf(stderr, "  case \"%s\": decided by %s\n", tc->name, name);
			test_failed_now = 1;
		}
	}
	authz_set_unref(s);
}

TEST(l4_table)
{
	for (size_t i = 0; i < sizeof(l4_cases) / sizeof(l4_cases[0]); i++)
		run_l4(&l4_cases[i]);
}

int main(void)
{
	log_set_level(LOG_LVL_ERROR);	/* refusals and conversions are expected here */
	return test_main("istio_authz");
}
