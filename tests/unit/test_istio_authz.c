// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the policy engine (istio/authz.c): a table of L4 cases over every field,
 * negation, wildcard, scope and Istio's L7-field conversions; L7 requests at a waypoint;
 * PeerAuthentication precedence and portLevelMtls; refused objects keeping their previous
 * version; dumps. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

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

	if (!s) {	/* not REQUIRE: it stops at the first failed case of the table */
		CHECK(s);
		return;
	}
	snprintf(lb, sizeof(lb), "%s", tc->dst_labels);
	struct authz_workload w = { .namespace = tc->dst_ns, .name = "api-1", .labels = l, .nlabels = labels(lb, l) };
	CHECK(ip_parse(tc->src, &src) == 0);
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

/* ---- L7 at a waypoint ---- */

struct hdr {
	const char *name, *value;
};

static const char *hdr_get(void *arg, const char *name)
{
	for (const struct hdr *h = arg; h && h->name; h++)
		if (strcmp(h->name, name) == 0)
			return h->value;
	return NULL;
}

struct l7_case {
	const char *name;
	const char *spec;	/* of one policy foo/p targeting the waypoint */
	const char *method, *path, *host;
	const char *id;
	enum authz_verdict verdict;
};

#define WP_REFS "\"targetRefs\":[{\"kind\":\"Gateway\",\"group\":\"gateway.networking.k8s.io\",\"name\":\"waypoint\"}]"

static const struct l7_case l7_cases[] = {
	{ "methods", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"GET\",\"HEAD\"]}}]}]}",
	  "GET", "/", "api", ID_BAR, AUTHZ_ALLOW },
	{ "methods other", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"GET\"]}}]}]}",
	  "POST", "/", "api", ID_BAR, AUTHZ_DENY },
	{ "notMethods", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"notMethods\":[\"DELETE\"]}}]}]}",
	  "DELETE", "/", "api", ID_BAR, AUTHZ_DENY },
	{ "paths exact ignores the query", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"paths\":[\"/info\"]}}]}]}",
	  "GET", "/info?x=1", "api", ID_BAR, AUTHZ_ALLOW },
	{ "paths prefix", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"paths\":[\"/api/*\"]}}]}]}",
	  "GET", "/api/v1/x", "api", ID_BAR, AUTHZ_ALLOW },
	{ "paths prefix other", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"paths\":[\"/api/*\"]}}]}]}",
	  "GET", "/apix", "api", ID_BAR, AUTHZ_DENY },
	{ "paths suffix", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"paths\":[\"*.html\"]}}]}]}",
	  "GET", "/a/b.html", "api", ID_BAR, AUTHZ_ALLOW },
	{ "gRPC method path", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"paths\":[\"/pkg.Greeter/SayHello\"],\"methods\":[\"POST\"]}}]}]}",
	  "POST", "/pkg.Greeter/SayHello", "api:50051", ID_BAR, AUTHZ_ALLOW },
	{ "gRPC service prefix", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"paths\":[\"/pkg.Greeter/*\"]}}]}]}",
	  "POST", "/pkg.Other/SayHello", "api", ID_BAR, AUTHZ_DENY },
	{ "notPaths", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"notPaths\":[\"/admin*\"]}}]}]}",
	  "GET", "/admin/x", "api", ID_BAR, AUTHZ_DENY },
	{ "hosts case-insensitive", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"hosts\":[\"API.foo.svc\"]}}]}]}",
	  "GET", "/", "api.FOO.svc", ID_BAR, AUTHZ_ALLOW },
	{ "hosts: the port is part of the host", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"hosts\":[\"api.foo.svc\"]}}]}]}",
	  "GET", "/", "api.foo.svc:8080", ID_BAR, AUTHZ_DENY },
	{ "hosts prefix for any port", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"hosts\":[\"api.foo.svc*\"]}}]}]}",
	  "GET", "/", "api.foo.svc:8080", ID_BAR, AUTHZ_ALLOW },
	{ "hosts suffix", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"hosts\":[\"*.svc\"]}}]}]}",
	  "GET", "/", "api.foo.svc", ID_BAR, AUTHZ_ALLOW },
	{ "notHosts", "{" WP_REFS ",\"rules\":[{\"to\":[{\"operation\":{\"notHosts\":[\"api\"]}}]}]}",
	  "GET", "/", "api", ID_BAR, AUTHZ_DENY },
	{ "header when", "{" WP_REFS ",\"rules\":[{\"when\":[{\"key\":\"request.headers[X-User]\",\"values\":[\"ali*\"]}]}]}",
	  "GET", "/", "api", ID_BAR, AUTHZ_ALLOW },
	{ "header when absent", "{" WP_REFS ",\"rules\":[{\"when\":[{\"key\":\"request.headers[x-missing]\",\"values\":[\"*\"]}]}]}",
	  "GET", "/", "api", ID_BAR, AUTHZ_DENY },
	{ "header notValues absent passes", "{" WP_REFS ",\"rules\":[{\"when\":[{\"key\":\"request.headers[x-missing]\",\"notValues\":[\"*\"]}]}]}",
	  "GET", "/", "api", ID_BAR, AUTHZ_ALLOW },
	{ "principal at L7", "{" WP_REFS ",\"rules\":[{\"from\":[{\"source\":{\"principals\":[\"cluster.local/ns/bar/sa/client\"]}}],\"to\":[{\"operation\":{\"methods\":[\"GET\"]}}]}]}",
	  "GET", "/", "api", ID_BAR, AUTHZ_ALLOW },
	{ "principal at L7 other", "{" WP_REFS ",\"rules\":[{\"from\":[{\"source\":{\"principals\":[\"cluster.local/ns/bar/sa/client\"]}}]}]}",
	  "GET", "/", "api", ID_FOO, AUTHZ_DENY },
	{ "requestPrincipals without a JWT", "{" WP_REFS ",\"rules\":[{\"from\":[{\"source\":{\"requestPrincipals\":[\"*\"]}}]}]}",
	  "GET", "/", "api", ID_BAR, AUTHZ_DENY },
	{ "remoteIpBlocks", "{" WP_REFS ",\"rules\":[{\"from\":[{\"source\":{\"remoteIpBlocks\":[\"10.1.0.0/16\"]}}]}]}",
	  "GET", "/", "api", ID_BAR, AUTHZ_ALLOW },
	{ "deny with methods at L7", "{" WP_REFS ",\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"DELETE\"]}}]}]}",
	  "DELETE", "/", "api", ID_BAR, AUTHZ_DENY },
	{ "deny with methods at L7, other method", "{" WP_REFS ",\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"DELETE\"]}}]}]}",
	  "GET", "/", "api", ID_BAR, AUTHZ_ALLOW },
	{ "claims never match", "{" WP_REFS ",\"rules\":[{\"when\":[{\"key\":\"request.auth.claims[groups]\",\"values\":[\"a\"]}]}]}",
	  "GET", "/", "api", ID_BAR, AUTHZ_DENY },
};

static void run_l7(const struct l7_case *tc)
{
	char res[2048];
	struct sockaddr_storage src, dst;
	struct hdr h[] = { { "x-user", "alice" }, { NULL, NULL } };
	struct authz_request req = { .method = tc->method, .path = tc->path, .host = tc->host,
				     .header = hdr_get, .header_arg = h };
	struct authz_l7_target t = { "foo", "waypoint", "foo", "api" };
	struct authz_result r;
	struct authz_set *s;

	snprintf(res, sizeof(res), "[" AP("foo", "p", "%s") "]", tc->spec);
	s = compile(res, NULL);
	if (!s) {
		CHECK(s);
		return;
	}
	ip_parse("10.1.0.1", &src);
	ip_parse("10.0.0.2", &dst);
	struct authz_conn c = { .src = &src, .dst = &dst, .dst_port = 8080, .src_identity = tc->id };
	CHECK(authz_has_l7(s, &t));
	authz_check_request(s, &c, &t, &req, &r);
	if (r.verdict != tc->verdict) {
		char msg[256];
		fprintf(stderr, "  case \"%s\": %s (%s)\n", tc->name, authz_verdict_str(r.verdict),
			authz_result_str(&r, msg, sizeof(msg)));
		test_failed_now = 1;
	}
	authz_set_unref(s);
}

TEST(l7_table)
{
	for (size_t i = 0; i < sizeof(l7_cases) / sizeof(l7_cases[0]); i++)
		run_l7(&l7_cases[i]);
}

TEST(l7_targets)
{
	struct authz_set *s = compile("[" AP("foo", "svc", "{\"targetRefs\":[{\"kind\":\"Service\",\"group\":\"\",\"name\":\"api\"}],"
				      "\"action\":\"DENY\",\"rules\":[{}]}") ","
				      AP("foo", "sel", "{\"selector\":{\"matchLabels\":{\"app\":\"api\"}},\"action\":\"DENY\",\"rules\":[{}]}") "]", NULL);
	struct sockaddr_storage src, dst;
	struct authz_request req = { .method = "GET", .path = "/" };
	struct authz_conn c = { .src = &src, .dst = &dst, .dst_port = 80, .src_identity = ID_BAR };
	struct authz_l7_target api = { "foo", "waypoint", "foo", "api" };
	struct authz_l7_target db = { "foo", "waypoint", "foo", "db" };
	struct authz_result r;

	REQUIRE(s);
	ip_parse("10.1.0.1", &src);
	ip_parse("10.0.0.2", &dst);
	authz_check_request(s, &c, &api, &req, &r);
	CHECK_EQ_INT(r.verdict, AUTHZ_DENY);
	CHECK_EQ_STR(r.policy.name, "svc");
	/* the selector policy is the node agent's, not the waypoint's */
	CHECK(!authz_has_l7(s, &db));
	authz_check_request(s, &c, &db, &req, &r);
	CHECK_EQ_INT(r.verdict, AUTHZ_ALLOW);
	CHECK_EQ_INT(r.reason, AUTHZ_REASON_NO_POLICY);
	authz_set_unref(s);

	/* JWT attributes at a waypoint: reported unsupported */
	s = compile("[" AP("foo", "jwt", "{" WP_REFS ",\"rules\":[{\"from\":[{\"source\":{\"requestPrincipals\":[\"*\"]}}],"
		    "\"when\":[{\"key\":\"request.auth.claims[groups]\",\"values\":[\"a\"]}]}]}") "]", NULL);
	REQUIRE(s);
	json_t *d = authz_set_to_json(s, NULL, 0), *diag = json_array_get(json_object_get(json_array_get(d, 0), "diagnostics"), 0);
	CHECK_EQ_STR(json_string_value(json_object_get(diag, "kind")), "unsupported");
	CHECK_EQ_STR(json_string_value(json_object_get(diag, "path")), "spec.rules[0]");
	CHECK(strstr(json_string_value(json_object_get(diag, "message")), "requestPrincipals, request.auth.claims[groups] have no value"));
	CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(d, 0), "state")), "applied");
	json_decref(d);
	authz_set_unref(s);
}

/* ---- PeerAuthentication ---- */

struct pa_case {
	const char *name;
	const char *resources;
	const char *labels;
	uint16_t port;
	enum authz_mtls_mode mode;
	const char *by;		/* deciding object, or NULL */
};

#define T1 "2024-01-01T00:00:00Z"
#define T2 "2024-02-01T00:00:00Z"
#define MODE(m) "{\"mtls\":{\"mode\":\"" m "\"}}"
#define SEL_API "\"selector\":{\"matchLabels\":{\"app\":\"api\"}}"

static const struct pa_case pa_cases[] = {
	{ "none: PERMISSIVE", "[]", "app=api", 80, AUTHZ_MTLS_PERMISSIVE, NULL },
	{ "mesh STRICT", "[" PA("istio-system", "m", T1, MODE("STRICT")) "]", "app=api", 80, AUTHZ_MTLS_STRICT, "istio-system/m" },
	{ "namespace overrides mesh", "[" PA("istio-system", "m", T1, MODE("STRICT")) "," PA("foo", "n", T1, MODE("PERMISSIVE")) "]",
	  "app=api", 80, AUTHZ_MTLS_PERMISSIVE, "foo/n" },
	{ "namespace UNSET inherits", "[" PA("istio-system", "m", T1, MODE("STRICT")) "," PA("foo", "n", T1, "{}") "]",
	  "app=api", 80, AUTHZ_MTLS_STRICT, "istio-system/m" },
	{ "other namespace does not apply", "[" PA("bar", "n", T1, MODE("STRICT")) "]", "app=api", 80, AUTHZ_MTLS_PERMISSIVE, NULL },
	{ "workload overrides namespace", "[" PA("foo", "n", T1, MODE("STRICT")) "," PA("foo", "w", T1, "{" SEL_API ",\"mtls\":{\"mode\":\"DISABLE\"}}") "]",
	  "app=api", 80, AUTHZ_MTLS_DISABLE, "foo/w" },
	{ "workload selector not matching", "[" PA("foo", "n", T1, MODE("STRICT")) "," PA("foo", "w", T1, "{" SEL_API ",\"mtls\":{\"mode\":\"DISABLE\"}}") "]",
	  "app=db", 80, AUTHZ_MTLS_STRICT, "foo/n" },
	{ "workload UNSET inherits", "[" PA("foo", "n", T1, MODE("STRICT")) "," PA("foo", "w", T1, "{" SEL_API "}") "]",
	  "app=api", 80, AUTHZ_MTLS_STRICT, "foo/n" },
	{ "oldest namespace-level wins", "[" PA("foo", "young", T2, MODE("PERMISSIVE")) "," PA("foo", "old", T1, MODE("STRICT")) "]",
	  "app=api", 80, AUTHZ_MTLS_STRICT, "foo/old" },
	{ "oldest mesh-level wins", "[" PA("istio-system", "young", T2, MODE("STRICT")) "," PA("istio-system", "old", T1, MODE("PERMISSIVE")) "]",
	  "app=api", 80, AUTHZ_MTLS_PERMISSIVE, "istio-system/old" },
	{ "oldest workload-level wins", "[" PA("foo", "young", T2, "{" SEL_API ",\"mtls\":{\"mode\":\"STRICT\"}}") ","
	  PA("foo", "old", T1, "{\"selector\":{\"matchLabels\":{\"tier\":\"web\"}},\"mtls\":{\"mode\":\"PERMISSIVE\"}}") "]",
	  "app=api,tier=web", 80, AUTHZ_MTLS_PERMISSIVE, "foo/old" },
	{ "root-namespace selector is ignored", "[" PA("istio-system", "w", T1, "{" SEL_API ",\"mtls\":{\"mode\":\"STRICT\"}}") "]",
	  "app=api", 80, AUTHZ_MTLS_PERMISSIVE, NULL },
	{ "portLevelMtls exempts a port", "[" PA("foo", "w", T1, "{" SEL_API ",\"mtls\":{\"mode\":\"STRICT\"},\"portLevelMtls\":{\"8080\":{\"mode\":\"PERMISSIVE\"}}}") "]",
	  "app=api", 8080, AUTHZ_MTLS_PERMISSIVE, "foo/w" },
	{ "portLevelMtls other port", "[" PA("foo", "w", T1, "{" SEL_API ",\"mtls\":{\"mode\":\"STRICT\"},\"portLevelMtls\":{\"8080\":{\"mode\":\"PERMISSIVE\"}}}") "]",
	  "app=api", 9090, AUTHZ_MTLS_STRICT, "foo/w" },
	{ "portLevelMtls STRICT under PERMISSIVE", "[" PA("foo", "w", T1, "{" SEL_API ",\"portLevelMtls\":{\"5432\":{\"mode\":\"STRICT\"}}}") "]",
	  "app=api", 5432, AUTHZ_MTLS_STRICT, "foo/w" },
	{ "portLevelMtls with UNSET workload inherits for other ports", "[" PA("istio-system", "m", T1, MODE("STRICT")) ","
	  PA("foo", "w", T1, "{" SEL_API ",\"portLevelMtls\":{\"8080\":{\"mode\":\"DISABLE\"}}}") "]",
	  "app=api", 80, AUTHZ_MTLS_STRICT, "istio-system/m" },
	{ "portLevelMtls UNSET port inherits", "[" PA("foo", "n", T1, MODE("STRICT")) ","
	  PA("foo", "w", T1, "{" SEL_API ",\"portLevelMtls\":{\"8080\":{\"mode\":\"UNSET\"}}}") "]",
	  "app=api", 8080, AUTHZ_MTLS_STRICT, "foo/n" },
	{ "portLevelMtls without a selector is refused", "[" PA("foo", "n", T1, "{\"mtls\":{\"mode\":\"STRICT\"},\"portLevelMtls\":{\"8080\":{\"mode\":\"DISABLE\"}}}") "]",
	  "app=api", 80, AUTHZ_MTLS_PERMISSIVE, NULL },
};

TEST(peer_authentication_table)
{
	for (size_t i = 0; i < sizeof(pa_cases) / sizeof(pa_cases[0]); i++) {
		const struct pa_case *tc = &pa_cases[i];
		struct authz_set *s = compile(tc->resources, NULL);
		struct authz_policy_ref by;
		struct label l[8];
		char lb[128], name[128] = "";
		if (!s) {
			CHECK(s);
			continue;
		}
		snprintf(lb, sizeof(lb), "%s", tc->labels);
		struct authz_workload w = { .namespace = "foo", .labels = l, .nlabels = labels(lb, l) };
		enum authz_mtls_mode m = authz_mtls_mode(s, &w, tc->port, &by);
		if (by.name)
			snprintf(name, sizeof(name), "%s/%s", by.namespace, by.name);
		if (m != tc->mode || (tc->by ? strcmp(name, tc->by) != 0 : by.name != NULL)) {
			fprintf(stderr, "  case \"%s\": %s by \"%s\"\n", tc->name, authz_mtls_mode_str(m), name);
			test_failed_now = 1;
		}
		authz_set_unref(s);
	}
}

/* ---- refusals, previous versions, dumps ---- */

struct bad_case {
	const char *spec;
	const char *message;	/* the refused diagnostic: "path: message" prefix */
};

static const struct bad_case bad_cases[] = {
	{ FROM("ipBlocks", "[\"10.0.0.0/33\"]"), "spec.rules[0].from[0].source.ipBlocks[0]: '10.0.0.0/33' is not an IP address or CIDR block" },
	{ FROM("ipBlocks", "[\"10.0.0.x\"]"), "spec.rules[0].from[0].source.ipBlocks[0]: '10.0.0.x' is not an IP address or CIDR block" },
	{ TO("ports", "[\"70000\"]"), "spec.rules[0].to[0].operation.ports[0]: '70000' is not a port (1 to 65535)" },
	{ TO("notPorts", "[\"80\",\"http\"]"), "spec.rules[0].to[0].operation.notPorts[1]: 'http' is not a port (1 to 65535)" },
	{ WHEN("destination.port", "values", "[\"0\"]"), "spec.rules[0].when[0].values[0]: '0' is not a port (1 to 65535)" },
	{ WHEN("source.ip", "notValues", "[\"1.2.3.4/40\"]"), "spec.rules[0].when[0].notValues[0]: '1.2.3.4/40' is not an IP address or CIDR block" },
	{ "{\"action\":\"BLOCK\"}", "spec.action: 'BLOCK' is not one of ALLOW, DENY, AUDIT, CUSTOM" },
	{ "{\"actions\":\"DENY\"}", "spec.actions: unknown key" },
	{ FROM("principal", "[\"a\"]"), "spec.rules[0].from[0].source.principal: unknown key" },
	{ "{\"rules\":[{\"from\":[{\"source\":{}}]}]}", "spec.rules[0].from[0].source: must not be empty" },
	{ "{\"rules\":[{\"from\":[{}]}]}", "spec.rules[0].from[0].source: missing" },
	{ "{\"rules\":[{\"from\":[]}]}", "spec.rules[0].from: must not be empty" },
	{ FROM("principals", "[\"\"]"), "spec.rules[0].from[0].source.principals[0]: must not be empty" },
	{ FROM("principals", "\"a\""), "spec.rules[0].from[0].source.principals: must be an array" },
	{ FROM("serviceAccounts", "[\"a/b/c\"]"), "spec.rules[0].from[0].source.serviceAccounts[0]: 'a/b/c' is not NAMESPACE/SERVICEACCOUNT" },
	{ WHEN("source.color", "values", "[\"x\"]"), "spec.rules[0].when[0].key: 'source.color' is not an attribute Istio knows" },
	{ "{\"rules\":[{\"when\":[{\"key\":\"source.ip\"}]}]}", "spec.rules[0].when[0]: needs values or notValues" },
	{ "{\"action\":\"CUSTOM\"}", "spec.provider: the CUSTOM action needs provider.name" },
	{ "{\"provider\":{\"name\":\"x\"}}", "spec.provider: is only for the CUSTOM action" },
	{ "{\"rules\":{}}", "spec.rules: must be an array" },
	{ TO("ports", "[8080]"), "spec.rules[0].to[0].operation.ports[0]: must be a string" },
};

TEST(refused_objects)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		char res[1024];
		snprintf(res, sizeof(res), "[" AP("foo", "bad", "%s") "," AP("foo", "good", "{\"rules\":[{}]}") "]",
			 bad_cases[i].spec);
		struct authz_set *s = compile(res, NULL);
		if (!s) {
			CHECK(s);
			continue;
		}
		json_t *d = authz_set_to_json(s, NULL, 0);
		json_t *bad = json_array_get(d, 0), *diag = json_array_get(json_object_get(bad, "diagnostics"), 0);
		char got[512];
		snprintf(got, sizeof(got), "%s: %s", json_string_value(json_object_get(diag, "path")),
			 json_string_value(json_object_get(diag, "message")));
		if (strncmp(got, bad_cases[i].message, strlen(bad_cases[i].message)) != 0) {
			fprintf(stderr, "  case %zu: got \"%s\"\n", i, got);
			test_failed_now = 1;
		}
		CHECK_EQ_STR(json_string_value(json_object_get(bad, "state")), "refused");
		CHECK_EQ_STR(json_string_value(json_object_get(diag, "kind")), "refused");
		CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(d, 1), "state")), "applied");
		struct authz_set_stats st;
		authz_set_stats(s, &st);
		CHECK_EQ_INT(st.refused, 1);
		CHECK_EQ_INT(st.authorization_policies, 1);
		json_decref(d);
		authz_set_unref(s);
	}
}

static enum authz_verdict check_plain(const struct authz_set *s, uint16_t port)
{
	struct sockaddr_storage src, dst;
	struct label l[] = { { "app", "api" } };
	struct authz_workload w = { .namespace = "foo", .labels = l, .nlabels = 1 };
	struct authz_result r;
	ip_parse("10.1.0.1", &src);
	ip_parse("10.0.0.2", &dst);
	struct authz_conn c = { .src = &src, .dst = &dst, .dst_port = port, .dst_workload = &w };
	authz_check_conn(s, &c, &r);
	return r.verdict;
}

TEST(previous_version_stays)
{
	const char *v1 = "[" AP("foo", "d", "{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"8080\"]}}]}]}") "]";
	const char *v2 = "[" AP("foo", "d", "{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"70000\"]}}]}]}") "]";
	const char *v3 = "[" AP("foo", "d", "{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"9090\"]}}]}]}") "]";
	struct authz_set *s1 = compile(v1, NULL), *s2, *s3, *s4, *fresh;
	json_t *d;

	REQUIRE(s1);
	CHECK_EQ_INT(check_plain(s1, 8080), AUTHZ_DENY);
	/* the bad version is refused; version 1 stays in force */
	s2 = compile(v2, s1);
	REQUIRE(s2);
	CHECK_EQ_INT(check_plain(s2, 8080), AUTHZ_DENY);
	d = authz_set_to_json(s2, NULL, 0);
	CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(d, 0), "state")), "previous");
	json_decref(d);
	/* still refused in the next round (unchanged), still the old version */
	s3 = compile(v2, s2);
	REQUIRE(s3);
	CHECK_EQ_INT(check_plain(s3, 8080), AUTHZ_DENY);
	/* without a previous set there is nothing to keep */
	fresh = compile(v2, NULL);
	REQUIRE(fresh);
	CHECK_EQ_INT(check_plain(fresh, 8080), AUTHZ_ALLOW);
	/* a good version replaces it */
	s4 = compile(v3, s3);
	REQUIRE(s4);
	CHECK_EQ_INT(check_plain(s4, 8080), AUTHZ_ALLOW);
	CHECK_EQ_INT(check_plain(s4, 9090), AUTHZ_DENY);
	authz_set_unref(s1);
	authz_set_unref(s2);
	authz_set_unref(s3);
	authz_set_unref(fresh);
	/* refused before its metadata was read (no apiVersion): the same object all the same,
	 * over more than one round */
	{
		const char *v5 = "[{\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"d\",\"namespace\":\"foo\"},\"spec\":{}}]";
		struct authz_set *s5 = compile(v5, s4), *s6 = s5 ? compile(v5, s5) : NULL;
		CHECK(s5 && s6);
		if (s6) {
			CHECK_EQ_INT(check_plain(s6, 9090), AUTHZ_DENY);
			d = authz_set_to_json(s6, NULL, 0);
			CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(d, 0), "state")), "previous");
			json_t *diag = json_array_get(json_object_get(json_array_get(d, 0), "diagnostics"), 0);
			CHECK_EQ_STR(json_string_value(json_object_get(diag, "path")), "apiVersion");
			CHECK_EQ_STR(json_string_value(json_object_get(diag, "message")), "missing");
			json_decref(d);
		}
		authz_set_unref(s5);
		authz_set_unref(s6);
	}
	/* deleted: gone, even from a set that kept a previous version */
	s1 = compile("[]", s4);
	CHECK_EQ_INT(check_plain(s1, 9090), AUTHZ_ALLOW);
	authz_set_unref(s4);
	authz_set_unref(s1);
}

TEST(duplicates_and_other_kinds)
{
	struct authz_set *s = compile("[" AP("foo", "d", "{\"action\":\"DENY\",\"rules\":[{}]}") ","
				      AP("foo", "d", "{}") ","
				      "{\"apiVersion\":\"telemetry.istio.io/v1\",\"kind\":\"Telemetry\",\"metadata\":{\"name\":\"t\",\"namespace\":\"foo\"},\"spec\":{}},"
				      "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"namespace\":\"foo\"}}]", NULL);
	REQUIRE(s);
	CHECK_EQ_INT(check_plain(s, 80), AUTHZ_DENY);	/* the first one stays */
	json_t *d = authz_set_to_json(s, NULL, 0);
	CHECK_EQ_INT(json_array_size(d), 2);
	CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(d, 1), "object")), "resources[3]");
	CHECK(strstr(json_string_value(json_object_get(json_array_get(json_object_get(json_array_get(d, 1), "diagnostics"), 0), "message")),
		     "missing"));
	json_decref(d);
	authz_set_unref(s);
}

TEST(dump_and_reports)
{
	struct authz_set *s = compile("["
		AP("foo", "conv", "{\"selector\":{\"matchLabels\":{\"app\":\"api\"}},\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"GET\"]}}]}]}") ","
		AP("foo", "audit", "{\"action\":\"AUDIT\",\"rules\":[{}]}") ","
		OBJ("AuthorizationPolicy", "foo", "dry", ",\"annotations\":{\"istio.io/dry-run\":\"true\"}", "{\"action\":\"DENY\",\"rules\":[{}]}") ","
		AP("foo", "wp", "{" WP_REFS ",\"rules\":[{}]}") ","
		PA("foo", "pa", T1, "{" SEL_API ",\"mtls\":{\"mode\":\"STRICT\"},\"portLevelMtls\":{\"8080\":{\"mode\":\"PERMISSIVE\"}}}") ","
		PA("foo", "shadowed", T2, "{" SEL_API ",\"mtls\":{\"mode\":\"DISABLE\"}}") "]", NULL);
	struct label la[] = { { "app", "api" } }, lb[] = { { "app", "db" } };
	struct authz_workload ws[] = { { "foo", "api-1", la, 1 }, { "foo", "db-1", lb, 1 }, { "bar", "api-2", la, 1 } };
	struct authz_set_stats st;
	json_t *d, *o;

	REQUIRE(s);
	authz_set_stats(s, &st);
	CHECK_EQ_INT(st.converted, 1);
	CHECK_EQ_INT(st.unsupported, 1);
	CHECK_EQ_INT(st.dry_run, 1);
	CHECK_EQ_INT(st.peer_authentications, 2);
	d = authz_set_to_json(s, ws, 3);
	REQUIRE(d && json_array_size(d) == 6);
	o = json_array_get(d, 0);
	CHECK_EQ_STR(json_string_value(json_object_get(o, "state")), "converted");
	CHECK_EQ_STR(json_string_value(json_object_get(o, "scope")), "selector");
	CHECK_EQ_STR(json_string_value(json_object_get(o, "action")), "ALLOW");
	CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(o, "diagnostics"), 0), "path")), "spec.rules[0]");
	CHECK(strstr(json_string_value(json_object_get(json_array_get(json_object_get(o, "diagnostics"), 0), "message")), "(methods)"));
	CHECK_EQ_INT(json_integer_value(json_object_get(o, "workloads_total")), 1);
	CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(o, "workloads"), 0)), "foo/api-1");
	o = json_array_get(d, 1);
	CHECK_EQ_STR(json_string_value(json_object_get(o, "state")), "unsupported");
	CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(o, "diagnostics"), 0), "kind")), "unsupported");
	o = json_array_get(d, 2);
	CHECK(json_is_true(json_object_get(o, "dry_run")));
	CHECK_EQ_INT(json_integer_value(json_object_get(o, "workloads_total")), 2);
	o = json_array_get(d, 3);
	CHECK_EQ_STR(json_string_value(json_object_get(o, "enforced_by")), "waypoint");
	CHECK(!json_object_get(o, "workloads"));
	o = json_array_get(d, 4);
	CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(o, "mtls"), "mode")), "STRICT");
	CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(json_object_get(o, "mtls"), "portLevelMtls"), "8080")), "PERMISSIVE");
	CHECK_EQ_INT(json_integer_value(json_object_get(o, "workloads_total")), 1);
	/* the younger workload-level object is in effect nowhere */
	CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(d, 5), "workloads_total")), 0);
	json_decref(d);

	/* the dry-run DENY is reported, not enforced */
	struct sockaddr_storage src, dst;
	struct authz_result r;
	char msg[256];
	ip_parse("10.1.0.1", &src);
	ip_parse("10.0.0.2", &dst);
	struct authz_conn c = { .src = &src, .dst = &dst, .dst_port = 9090, .src_identity = ID_BAR, .dst_workload = &ws[1] };
	authz_check_conn(s, &c, &r);
	CHECK_EQ_INT(r.verdict, AUTHZ_ALLOW);
	CHECK(r.dry_run_applied);
	CHECK_EQ_INT(r.dry_run_verdict, AUTHZ_DENY);
	CHECK_EQ_STR(r.dry_run_policy.name, "dry");
	json_t *rj = authz_result_to_json(&r);
	CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(rj, "dry_run"), "message")), "denied by foo/dry");
	json_decref(rj);
	/* plaintext to api-1:9090 under the workload's STRICT; 8080 is exempt */
	c.src_identity = NULL;
	c.dst_workload = &ws[0];
	authz_check_conn(s, &c, &r);
	CHECK_EQ_INT(r.verdict, AUTHZ_DENY);
	CHECK_EQ_STR(authz_result_str(&r, msg, sizeof(msg)), "plaintext refused by STRICT PeerAuthentication foo/pa");
	c.dst_port = 8080;
	authz_check_conn(s, &c, &r);
	CHECK_EQ_INT(r.mtls_mode, AUTHZ_MTLS_PERMISSIVE);
	/* the converted ALLOW policy leaves api-1 with an ALLOW policy that matches nothing */
	CHECK_EQ_INT(r.verdict, AUTHZ_DENY);
	CHECK_EQ_STR(authz_result_str(&r, msg, sizeof(msg)), "allow policies exist, but none allowed");
	authz_set_unref(s);
}

TEST(many_policies)
{
	/* 2,000 selector policies on distinct labels and 2,000 namespaces: each check finds its
	 * own through the index; the set shares unchanged objects with the previous one */
	size_t cap = 4000 * 220 + 64, len = 0;
	char *res = malloc(cap);
	REQUIRE(res);
	len += (size_t)snprintf(res + len, cap - len, "[");
	for (int i = 0; i < 2000; i++)
		len += (size_t)snprintf(res + len, cap - len, "%s" AP("foo", "p%d", "{\"selector\":{\"matchLabels\":{\"app\":\"a%d\"}},\"action\":\"DENY\",\"rules\":[{}]}")
					"," AP("ns%d", "n", "{\"action\":\"DENY\",\"rules\":[{}]}"), i ? "," : "", i, i, i);
	len += (size_t)snprintf(res + len, cap - len, "]");
	struct authz_set *s = compile(res, NULL), *s2;
	REQUIRE(s);
	s2 = compile(res, s);
	free(res);
	REQUIRE(s2);
	struct label l[] = { { "app", "a1234" } }, o[] = { { "app", "zzz" } };
	struct authz_workload w = { "foo", "x", l, 1 }, w2 = { "foo", "y", o, 1 }, w3 = { "ns77", "z", o, 1 };
	struct sockaddr_storage src, dst;
	struct authz_result r;
	ip_parse("10.1.0.1", &src);
	ip_parse("10.0.0.2", &dst);
	struct authz_conn c = { .src = &src, .dst = &dst, .dst_port = 80, .dst_workload = &w };
	authz_check_conn(s2, &c, &r);
	CHECK_EQ_INT(r.verdict, AUTHZ_DENY);
	CHECK_EQ_STR(r.policy.name, "p1234");
	c.dst_workload = &w2;
	authz_check_conn(s2, &c, &r);
	CHECK_EQ_INT(r.verdict, AUTHZ_ALLOW);
	c.dst_workload = &w3;
	authz_check_conn(s2, &c, &r);
	CHECK_EQ_INT(r.verdict, AUTHZ_DENY);
	CHECK_EQ_STR(r.policy.namespace, "ns77");
	authz_set_unref(s);
	authz_set_unref(s2);
}

/* Runs compile with stderr in a file at WARN level; returns the number of log lines that
 * contain needle. */
static int logged_lines(const char *resources, struct authz_set **inout, const char *needle)
{
	char path[] = "/tmp/ambit-test-authz-XXXXXX", line[1024];
	int fd = mkstemp(path), saved = dup(2), n = 0;
	struct authz_set *s;
	FILE *f;

	if (fd < 0 || saved < 0)
		return -1;
	fflush(stderr);
	dup2(fd, 2);
	log_set_level(LOG_LVL_WARN);
	s = compile(resources, *inout);
	log_set_level(LOG_LVL_ERROR);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	authz_set_unref(*inout);
	*inout = s;
	f = fdopen(fd, "r");
	rewind(f);
	while (f && fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	unlink(path);
	return n;
}

TEST(reported_once)
{
	const char *res = "[" AP("foo", "audit", "{\"action\":\"AUDIT\",\"rules\":[{}]}") ","
		AP("foo", "conv", "{\"rules\":[{\"to\":[{\"operation\":{\"paths\":[\"/a\"]}}]}]}") ","
		AP("foo", "bad", "{\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"70000\"]}}]}]}") "]";
	struct authz_set *s = NULL;

	CHECK_EQ_INT(logged_lines(res, &s, "AuthorizationPolicy foo/"), 3);
	CHECK_EQ_INT(logged_lines(res, &s, "foo/audit: unsupported at spec.action"), 0);
	CHECK(s != NULL);
	/* a new version of one object: that one again, the others not */
	const char *res2 = "[" AP("foo", "audit", "{\"action\":\"AUDIT\",\"rules\":[{}]}") ","
		AP("foo", "conv", "{\"rules\":[{\"to\":[{\"operation\":{\"paths\":[\"/b\"]}}]}]}") ","
		AP("foo", "bad", "{\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"70000\"]}}]}]}") "]";
	CHECK_EQ_INT(logged_lines(res2, &s, "AuthorizationPolicy foo/conv: converted at spec.rules[0]"), 1);
	CHECK_EQ_INT(logged_lines(res2, &s, "AuthorizationPolicy foo/"), 0);
	authz_set_unref(s);
}

TEST(object_bound)
{
	/* past AUTHZ_MAX_OBJECTS the rest are refused (left out), the first ones apply */
	size_t per = 160, cap = (AUTHZ_MAX_OBJECTS + 2) * per + 16, len = 0;
	char *res = malloc(cap);
	REQUIRE(res);
	len += (size_t)snprintf(res + len, cap - len, "[");
	for (int i = 0; i < AUTHZ_MAX_OBJECTS + 1; i++)
		len += (size_t)snprintf(res + len, cap - len, "%s" AP("n%d", "p", "{}"), i ? "," : "",
					i == AUTHZ_MAX_OBJECTS ? 0 : i + 1);
	snprintf(res + len, cap - len, "]");
	struct authz_set *s = compile(res, NULL);
	free(res);
	REQUIRE(s);
	struct authz_set_stats st;
	authz_set_stats(s, &st);
	CHECK_EQ_INT(st.authorization_policies, AUTHZ_MAX_OBJECTS);
	/* n0/p came last: past the bound, not applied */
	struct authz_workload w0 = { "n0", "x", NULL, 0 }, w1 = { "n1", "x", NULL, 0 };
	struct sockaddr_storage src, dst;
	struct authz_result r;
	ip_parse("10.1.0.1", &src);
	ip_parse("10.0.0.2", &dst);
	struct authz_conn c = { .src = &src, .dst = &dst, .dst_port = 80, .dst_workload = &w0 };
	authz_check_conn(s, &c, &r);
	CHECK_EQ_INT(r.verdict, AUTHZ_ALLOW);
	c.dst_workload = &w1;
	authz_check_conn(s, &c, &r);
	CHECK_EQ_INT(r.verdict, AUTHZ_DENY);
	authz_set_unref(s);
}

int main(void)
{
	log_set_level(LOG_LVL_ERROR);	/* refusals and conversions are expected here */
	return test_main("istio_authz");
}
