// SPDX-License-Identifier: Apache-2.0
/* AuthorizationPolicy and PeerAuthentication (istio/authz.h): each object of the model's
 * `resources` is compiled on its own (a refused one keeps its previous version), the set is
 * indexed by scope (mesh, namespace, one selector label, targetRef) so that a connection only
 * looks at the objects that can apply to its workload, and evaluated with ztunnel's rules at
 * L4 and with every field at L7. The shape of a compiled policy follows istiod's conversion
 * for ztunnel: a policy is a list of rules (any may match); a rule is a list of clauses (all
 * must match: its `from`, its `to`, each `when`); a clause is a list of matches (any); a match
 * is a list of tests (all); a test is one field with its values (any; none for `not*`). */
#include "istio/authz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/jsonx.h"
#include "common/log.h"
#include "common/util.h"
#include "istio/object.h"

/* ---- compiled form ---- */

enum attr {
	/* L4: what the node agent knows of a connection */
	A_PRINCIPAL,		/* source.principals, when source.principal */
	A_NAMESPACE,		/* source.namespaces, when source.namespace */
	A_SERVICE_ACCOUNT,	/* source.serviceAccounts */
	A_SOURCE_IP,		/* source.ipBlocks, when source.ip */
	A_DEST_IP,		/* when destination.ip */
	A_DEST_PORT,		/* operation.ports, when destination.port */
	A_L4_LAST = A_DEST_PORT,
	/* L7: only a waypoint knows them */
	A_REQ_PRINCIPAL,	/* source.requestPrincipals, when request.auth.principal */
	A_REMOTE_IP,		/* source.remoteIpBlocks, when remote.ip */
	A_HOST,			/* operation.hosts */
	A_METHOD,		/* operation.methods */
	A_PATH,			/* operation.paths */
	A_HEADER,		/* when request.headers[NAME] */
	A_SNI,			/* when connection.sni */
	A_NEVER,		/* when request.auth.claims/audiences/presenter, experimental.*: no value */
};

enum sm_type { SM_EXACT, SM_PREFIX, SM_SUFFIX, SM_PRESENCE };

struct strmatch {
	enum sm_type type;
	char *s;
	size_t len;
};

struct cidr {
	int family;
	int bits;
	uint8_t addr[16];
};

struct sa_match {
	char *ns;
	char *sa;
};

struct test {
	enum attr attr;
	bool neg;		/* a not* field or notValues: passes when no value matches */
	char *header;		/* A_HEADER: the header name, lower case */
	int n;
	struct strmatch *sm;	/* string attributes */
	struct cidr *cidr;	/* A_SOURCE_IP, A_DEST_IP, A_REMOTE_IP */
	uint16_t *ports;	/* A_DEST_PORT */
	struct sa_match *sa;	/* A_SERVICE_ACCOUNT */
};

struct match {
	struct test *tests;
	int ntests;
	int nl4;		/* tests with an L4 attribute: none = matches nothing at L4 */
};

struct clause {
	struct match *m;
	int n;
};

struct rule {
	struct clause *c;
	int n;
	bool has_l7;		/* at L4: dropped from an ALLOW policy, stripped in a DENY one */
};

enum action { ACT_ALLOW, ACT_DENY, ACT_AUDIT, ACT_CUSTOM };
static const char *const action_names[] = { "ALLOW", "DENY", "AUDIT", "CUSTOM", NULL };

enum pstate {
	PS_APPLIED,
	PS_REFUSED,	/* this version is refused */
	PS_UNSUPPORTED,	/* AUDIT, CUSTOM: parsed, never enforced */
	PS_IGNORED,	/* not for ambit (a root-namespace PeerAuthentication with a selector) */
};

struct port_mode {
	uint16_t port;
	enum authz_mtls_mode mode;
};

/* One version of one object, compiled. Immutable and shared between sets. */
struct policy {
	int refs;
	struct istio_object obj;	/* envelope and diagnostics; obj.spec is NULL */
	bool have_obj;			/* false: refused before its envelope was known */
	char *label;			/* "KIND NS/NAME" or "resources[N]" */
	char *key;			/* "KIND\x1fNS\x1fNAME" for previous-version lookups */
	char *json;			/* the object's JSON (compact, sorted keys): an unchanged
					 * object is shared with the next set, not compiled again */
	enum pstate state;
	bool converted;			/* L7 fields converted for the node agent */
	/* AuthorizationPolicy */
	enum action action;
	struct rule *rules;
	int nrules;
	/* PeerAuthentication */
	enum authz_mtls_mode mode;
	struct port_mode *ports;
	int nports;
};

/* One object of a set: its current version, and the version in force (the same when it
 * compiled; the previous good one, or NULL, when it was refused). */
struct entry {
	struct policy *cur;
	struct policy *in_force;
};

/* A chained hash map from a key of parts joined with \x1f to a list of pointers. */
struct plist {
	void **v;
	int n, cap;
};

struct bucket {
	char *key;
	uint64_t h;
	struct plist list;
	struct bucket *next;
};

struct pmap {
	struct bucket **slots;
	size_t mask;
	size_t count;
};

struct authz_set {
	int refs;
	char *root_ns;
	struct entry *entries;
	int nentries;
	struct pmap by_key;		/* policy key -> entry */
	/* L4 AuthorizationPolicies, in force and enforceable (ALLOW/DENY) */
	struct plist ap_mesh;		/* root namespace, no selector */
	struct pmap ap_ns;		/* NS -> namespace-wide */
	struct pmap ap_sel;		/* NS\x1fKEY\x1fVALUE (one selector pair) -> selector */
	bool ap_sel_root;		/* ap_sel holds root-namespace selectors */
	/* L7 AuthorizationPolicies: KIND\x1fNS\x1fNAME of each targetRef */
	struct pmap ap_l7;
	/* PeerAuthentication: the oldest mesh-level and per-namespace ones, and selectors */
	struct policy *pa_mesh;
	struct pmap pa_ns;
	struct pmap pa_sel;
	struct authz_set_stats stats;
};

/* ---- hash maps ---- */

/* A word-at-a-time multiply-xorshift hash: lookups hash a few labels per connection. */
static uint64_t mix(uint64_t h, const void *p, size_t len)
{
	const uint8_t *b = p;
	uint64_t w;

	for (; len >= 8; b += 8, len -= 8) {
		memcpy(&w, b, 8);
		h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
		h ^= h >> 29;
	}
	w = 0;
	memcpy(&w, b, len);
	h = (h ^ w ^ ((uint64_t)len << 56)) * 0x9e3779b97f4a7c15ULL;
	return h ^ (h >> 29);
}

#define HASH_INIT 0xcbf29ce484222325ULL

static uint64_t parts_hash(const char *const *parts, int n)
{
	uint64_t h = HASH_INIT;
	for (int i = 0; i < n; i++)
		h = mix(h, parts[i], strlen(parts[i]));
	return h;
}

static int plist_add(struct plist *l, void *p)
{
	if (l->n == l->cap) {
		int cap = l->cap ? 2 * l->cap : 4;
		void **v = realloc(l->v, (size_t)cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = p;
	return 0;
}

static struct bucket *pmap_find(const struct pmap *m, const char *const *parts, int n)
{
	uint64_t h;
	if (!m->slots)
		return NULL;
	h = parts_hash(parts, n);
	for (struct bucket *b = m->slots[h & m->mask]; b; b = b->next)
		if (b->h == h && str_parts_eq(b->key, parts, n, '\x1f'))
			return b;
	return NULL;
}

static int pmap_grow(struct pmap *m)
{
	size_t cap = m->slots ? 2 * (m->mask + 1) : 64;
	struct bucket **slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; m->slots && i <= m->mask; i++)
		for (struct bucket *b = m->slots[i], *next; b; b = next) {
			next = b->next;
			b->next = slots[b->h & (cap - 1)];
			slots[b->h & (cap - 1)] = b;
		}
	free(m->slots);
	m->slots = slots;
	m->mask = cap - 1;
	return 0;
}

static int pmap_add(struct pmap *m, const char *const *parts, int n, void *p)
{
	struct bucket *b = pmap_find(m, parts, n);
	size_t len = 0;

	if (!b) {
		if ((!m->slots || m->count >= m->mask + 1) && pmap_grow(m))
			return -ENOMEM;
		b = calloc(1, sizeof(*b));
		for (int i = 0; i < n; i++)
			len += strlen(parts[i]) + 1;
		if (!b || !(b->key = malloc(len))) {
			free(b);
			return -ENOMEM;
		}
		b->key[0] = '\0';
		for (int i = 0; i < n; i++) {
			if (i)
				strcat(b->key, "\x1f");
			strcat(b->key, parts[i]);
		}
		b->h = parts_hash(parts, n);
		b->next = m->slots[b->h & m->mask];
		m->slots[b->h & m->mask] = b;
		m->count++;
	}
	return plist_add(&b->list, p);
}

static void pmap_free(struct pmap *m)
{
	for (size_t i = 0; m->slots && i <= m->mask; i++)
		for (struct bucket *b = m->slots[i], *next; b; b = next) {
			next = b->next;
			free(b->key);
			free(b->list.v);
			free(b);
		}
	free(m->slots);
}

/* ---- policies ---- */

static void test_fini(struct test *t)
{
	for (int i = 0; t->sm && i < t->n; i++)
		free(t->sm[i].s);
	for (int i = 0; t->sa && i < t->n; i++) {
		free(t->sa[i].ns);
		free(t->sa[i].sa);
	}
	free(t->sm);
	free(t->sa);
	free(t->cidr);
	free(t->ports);
	free(t->header);
}

static void rules_free(struct rule *rules, int nrules)
{
	for (int r = 0; rules && r < nrules; r++) {
		for (int c = 0; c < rules[r].n; c++) {
			struct clause *cl = &rules[r].c[c];
			for (int m = 0; m < cl->n; m++) {
				for (int t = 0; t < cl->m[m].ntests; t++)
					test_fini(&cl->m[m].tests[t]);
				free(cl->m[m].tests);
			}
			free(cl->m);
		}
		free(rules[r].c);
	}
	free(rules);
}

static void policy_unref(struct policy *p)
{
	if (!p || __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	istio_object_fini(&p->obj);
	free(p->label);
	free(p->key);
	free(p->json);
	rules_free(p->rules, p->nrules);
	free(p->ports);
	free(p);
}

static struct policy *policy_ref(struct policy *p)
{
	if (p)
		__atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
	return p;
}

/* ---- reading spec values ---- */

/* An array of non-empty strings at obj[key], at most AUTHZ_MAX_VALUES: *out borrowed, NULL
 * when absent, null or empty (Istio treats an empty list as an absent one). */
static int str_list(struct jx *j, const json_t *obj, const char *key, json_t **out)
{
	json_t *v;
	size_t i;
	int err = jx_array(j, obj, key, AUTHZ_MAX_VALUES, out);

	if (err || !*out)
		return err;
	json_array_foreach(*out, i, v) {
		const char *s = json_string_value(v);
		size_t saved;
		if (s && json_string_length(v) > 0 && json_string_length(v) <= AUTHZ_MAX_VALUE_LEN &&
		    strlen(s) == json_string_length(v))
			continue;
		saved = jx_enter(j, "%s[%zu]", key, i);
		err = jx_fail(j, NULL, !json_is_string(v) ? "must be a string" :
				       json_string_length(v) == 0 ? "must not be empty" :
				       strlen(s) != json_string_length(v) ? "contains a NUL character" :
				       "is longer than 1024 characters");
		jx_leave(j, saved);
		return err;
	}
	if (json_array_size(*out) == 0)
		*out = NULL;
	return 0;
}

static int parse_strmatch(const char *v, struct strmatch *m)
{
	size_t len = strlen(v);
	if (strcmp(v, "*") == 0) {
		m->type = SM_PRESENCE;
		m->s = strdup("");
	} else if (v[0] == '*') {
		m->type = SM_SUFFIX;
		m->s = strdup(v + 1);
	} else if (v[len - 1] == '*') {
		m->type = SM_PREFIX;
		m->s = strndup(v, len - 1);
	} else {
		m->type = SM_EXACT;
		m->s = strdup(v);
	}
	if (!m->s)
		return -ENOMEM;
	m->len = strlen(m->s);
	return 0;
}

static int parse_cidr(const char *v, struct cidr *c)
{
	char buf[INET6_ADDRSTRLEN + 8];
	const char *slash = strchr(v, '/');
	size_t alen = slash ? (size_t)(slash - v) : strlen(v);
	int max;

	if (alen >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, v, alen);
	buf[alen] = '\0';
	memset(c, 0, sizeof(*c));
	if (inet_pton(AF_INET, buf, c->addr) == 1) {
		c->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, c->addr) == 1) {
		c->family = AF_INET6;
		max = 128;
	} else {
		return -EINVAL;
	}
	c->bits = max;
	if (slash) {
		char *end;
		long b;
		if (slash[1] < '0' || slash[1] > '9')
			return -EINVAL;
		b = strtol(slash + 1, &end, 10);
		if (*end || b > max || end - (slash + 1) > 3)
			return -EINVAL;
		c->bits = (int)b;
	}
	return 0;
}

/* A port as Istio's API writes it: a string of digits, 1 to 65535. */
static int parse_port(const char *s, uint16_t *out)
{
	char *end;
	long p;

	if (!*s || strlen(s) > 5 || s[0] < '0' || s[0] > '9')
		return -EINVAL;
	p = strtol(s, &end, 10);
	if (*end || p < 1 || p > 65535)
		return -EINVAL;
	*out = (uint16_t)p;
	return 0;
}

/* One value of a test; i indexes t's arrays. 0, -EINVAL (message in j) or -ENOMEM. */
static int add_value(struct jx *j, struct test *t, size_t i, const char *v, const char *policy_ns)
{
	const char *slash;

	if (t->cidr)
		return parse_cidr(v, &t->cidr[i]) ?
		       jx_fail(j, NULL, "'%s' is not an IP address or CIDR block", v) : 0;
	if (t->ports)
		return parse_port(v, &t->ports[i]) ?
		       jx_fail(j, NULL, "'%s' is not a port (1 to 65535)", v) : 0;
	if (!t->sa)
		return parse_strmatch(v, &t->sm[i]);
	slash = strchr(v, '/');
	if (slash && (slash == v || !slash[1] || strchr(slash + 1, '/')))
		return jx_fail(j, NULL, "'%s' is not NAMESPACE/SERVICEACCOUNT or SERVICEACCOUNT", v);
	t->sa[i].ns = slash ? strndup(v, (size_t)(slash - v)) : strdup(policy_ns);
	t->sa[i].sa = strdup(slash ? slash + 1 : v);
	return t->sa[i].ns && t->sa[i].sa ? 0 : -ENOMEM;
}

/* Appends to m a test on attr built from the strings of arr (borrowed; NULL: nothing). */
static int add_test(struct jx *j, struct match *m, const char *key, const json_t *arr,
		    enum attr attr, bool neg, const char *header, const char *policy_ns)
{
	size_t n = json_array_size(arr);
	struct test *t;
	int err = -ENOMEM;

	if (!n)
		return 0;
	t = &m->tests[m->ntests];
	memset(t, 0, sizeof(*t));
	t->attr = attr;
	t->neg = neg;
	if (header && !(t->header = strdup(header)))
		goto fail;
	if (attr == A_SOURCE_IP || attr == A_DEST_IP || attr == A_REMOTE_IP)
		t->cidr = calloc(n, sizeof(*t->cidr));
	else if (attr == A_DEST_PORT)
		t->ports = calloc(n, sizeof(*t->ports));
	else if (attr == A_SERVICE_ACCOUNT)
		t->sa = calloc(n, sizeof(*t->sa));
	else
		t->sm = calloc(n, sizeof(*t->sm));
	if (!t->cidr && !t->ports && !t->sa && !t->sm)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		size_t saved = jx_enter(j, "%s[%zu]", key, i);
		t->n = (int)i + 1;
		err = add_value(j, t, i, json_string_value(json_array_get(arr, i)), policy_ns);
		jx_leave(j, saved);
		if (err)
			goto fail;
	}
	m->ntests++;
	if (attr <= A_L4_LAST)
		m->nl4++;
	return 0;
fail:
	test_fini(t);
	return err;
}

struct field {
	const char *key;
	enum attr attr;
	bool neg;
};

static const struct field source_fields[] = {
	{ "ipBlocks", A_SOURCE_IP, false },
	{ "notIpBlocks", A_SOURCE_IP, true },
	{ "principals", A_PRINCIPAL, false },
	{ "notPrincipals", A_PRINCIPAL, true },
	{ "namespaces", A_NAMESPACE, false },
	{ "notNamespaces", A_NAMESPACE, true },
	{ "serviceAccounts", A_SERVICE_ACCOUNT, false },
	{ "notServiceAccounts", A_SERVICE_ACCOUNT, true },
	{ "requestPrincipals", A_REQ_PRINCIPAL, false },
	{ "notRequestPrincipals", A_REQ_PRINCIPAL, true },
	{ "remoteIpBlocks", A_REMOTE_IP, false },
	{ "notRemoteIpBlocks", A_REMOTE_IP, true },
	{ NULL, 0, false },
};

static const struct field operation_fields[] = {
	{ "ports", A_DEST_PORT, false },
	{ "notPorts", A_DEST_PORT, true },
	{ "hosts", A_HOST, false },
	{ "notHosts", A_HOST, true },
	{ "methods", A_METHOD, false },
	{ "notMethods", A_METHOD, true },
	{ "paths", A_PATH, false },
	{ "notPaths", A_PATH, true },
	{ NULL, 0, false },
};

/* Names of the L7 fields a rule uses, for the conversion message ("methods, paths"), and of
 * those that need a validated JWT (never there: ambit has no RequestAuthentication). */
struct l7_found {
	char names[256];
	char jwt[256];
};

static void note_name(char *names, size_t size, const char *name)
{
	size_t len = strlen(names), nlen = strlen(name);
	for (const char *p = names; *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] ? 2 : 0))
		if (strncmp(p, name, nlen) == 0 && (p[nlen] == ',' || p[nlen] == '\0'))
			return;	/* each name once */
	snprintf(names + len, size - len, "%s%s", len ? ", " : "", name);
}

static void l7_note(struct l7_found *f, const char *name, enum attr attr)
{
	note_name(f->names, sizeof(f->names), name);
	if (attr == A_REQ_PRINCIPAL || (attr == A_NEVER && strncmp(name, "request.auth.", 13) == 0))
		note_name(f->jwt, sizeof(f->jwt), name);
}

/* from[i].source or to[i].operation: one match with a test per non-empty field. */
static int parse_entry(struct jx *j, const json_t *entry, const char *inner,
		       const struct field *fields, const char *policy_ns, struct match *m,
		       struct l7_found *l7)
{
	const char *keys[2] = { inner, NULL };
	const char *allowed[16];
	json_t *obj, *lists[16];
	int nf = 0, nonempty = 0, err;
	size_t saved;

	if (!json_is_object(entry))
		return jx_fail(j, NULL, "must be an object");
	err = jx_keys(j, entry, keys);
	if (!err)
		err = jx_object(j, entry, inner, &obj);
	if (err)
		return err;
	if (!obj)
		return jx_fail(j, inner, "missing");
	saved = jx_enter(j, "%s", inner);
	for (nf = 0; fields[nf].key; nf++)
		allowed[nf] = fields[nf].key;
	allowed[nf] = NULL;
	err = jx_keys(j, obj, allowed);
	for (int f = 0; !err && f < nf; f++) {
		err = str_list(j, obj, fields[f].key, &lists[f]);
		if (!err && lists[f])
			nonempty++;
	}
	if (!err && !nonempty)
		err = jx_fail(j, NULL, "must not be empty");
	if (!err && !(m->tests = calloc((size_t)nonempty, sizeof(*m->tests))))
		err = -ENOMEM;
	for (int f = 0; !err && f < nf; f++) {
		err = add_test(j, m, fields[f].key, lists[f], fields[f].attr, fields[f].neg, NULL, policy_ns);
		if (!err && lists[f] && fields[f].attr > A_L4_LAST)
			l7_note(l7, fields[f].key, fields[f].attr);
	}
	jx_leave(j, saved);
	return err;
}

/* when[i]: one match with a test on the key's attribute. */
static int parse_when(struct jx *j, const json_t *cond, const char *policy_ns, struct match *m,
		      struct l7_found *l7)
{
	static const char *const keys[] = { "key", "values", "notValues", NULL };
	static const struct {
		const char *key;
		enum attr attr;
	} attrs[] = {
		{ "source.ip", A_SOURCE_IP }, { "source.namespace", A_NAMESPACE },
		{ "source.principal", A_PRINCIPAL }, { "destination.ip", A_DEST_IP },
		{ "destination.port", A_DEST_PORT }, { "remote.ip", A_REMOTE_IP },
		{ "request.auth.principal", A_REQ_PRINCIPAL }, { "connection.sni", A_SNI },
		{ "request.auth.audiences", A_NEVER }, { "request.auth.presenter", A_NEVER },
	};
	char *key = NULL, header[AUTHZ_MAX_VALUE_LEN + 1] = "";
	json_t *values, *not_values;
	enum attr attr = A_NEVER;
	bool known = false;
	int err;

	if (!json_is_object(cond))
		return jx_fail(j, NULL, "must be an object");
	err = jx_keys(j, cond, keys);
	if (!err)
		err = jx_str(j, cond, "key", true, 256, &key);
	if (!err)
		err = str_list(j, cond, "values", &values);
	if (!err)
		err = str_list(j, cond, "notValues", &not_values);
	if (err)
		goto out;
	for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++)
		if (strcmp(key, attrs[i].key) == 0) {
			attr = attrs[i].attr;
			known = true;
		}
	if (!known) {
		size_t len = strlen(key);
		const char *name = NULL;
		if (strncmp(key, "request.headers[", 16) == 0 && key[len - 1] == ']' && len > 17) {
			name = key + 16;
			attr = A_HEADER;
		} else if (strncmp(key, "request.auth.claims[", 20) == 0 && key[len - 1] == ']' && len > 21) {
			name = key + 20;
		} else if (strncmp(key, "experimental.envoy.filters.", 27) == 0 && len > 27) {
			name = key;
		}
		if (!name) {
			err = jx_fail(j, "key", "'%s' is not an attribute Istio knows", key);
			goto out;
		}
		if (attr == A_HEADER) {
			size_t n = len - 17;
			for (size_t i = 0; i < n; i++)
				header[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
			header[n] = '\0';
		}
	}
	if (!values && !not_values) {
		err = jx_fail(j, NULL, "needs values or notValues for '%s'", key);
		goto out;
	}
	if (!(m->tests = calloc(2, sizeof(*m->tests)))) {
		err = -ENOMEM;
		goto out;
	}
	err = add_test(j, m, "values", values, attr, false, attr == A_HEADER ? header : NULL, policy_ns);
	if (!err)
		err = add_test(j, m, "notValues", not_values, attr, true, attr == A_HEADER ? header : NULL, policy_ns);
	if (!err && attr > A_L4_LAST)
		l7_note(l7, key, attr);
out:
	free(key);
	return err;
}

/* An array of entries of a rule (from, to, when) into one clause. */
static int parse_clause(struct jx *j, const json_t *rule, const char *key, const char *inner,
			const struct field *fields, const char *policy_ns, struct clause *c,
			struct l7_found *l7)
{
	json_t *arr, *v;
	size_t i;
	int err = jx_array(j, rule, key, AUTHZ_MAX_ENTRIES, &arr);

	if (err || !arr)
		return err;
	if (json_array_size(arr) == 0)
		return jx_fail(j, key, "must not be empty (leave it out to match any)");
	if (!(c->m = calloc(json_array_size(arr), sizeof(*c->m))))
		return -ENOMEM;
	json_array_foreach(arr, i, v) {
		size_t saved = jx_enter(j, "%s[%zu]", key, i);
		c->n = (int)i + 1;
		err = parse_entry(j, v, inner, fields, policy_ns, &c->m[i], l7);
		jx_leave(j, saved);
		if (err)
			return err;
	}
	return 0;
}

static int parse_rule(struct jx *j, const json_t *jr, struct policy *p, struct rule *r)
{
	static const char *const keys[] = { "from", "to", "when", NULL };
	struct l7_found l7 = { "", "" };
	const char *ns = p->obj.namespace;
	json_t *when, *v;
	size_t i;
	int err;

	if (!json_is_object(jr))
		return jx_fail(j, NULL, "must be an object");
	err = jx_keys(j, jr, keys);
	if (!err)
		err = jx_array(j, jr, "when", AUTHZ_MAX_ENTRIES, &when);
	if (err)
		return err;
	/* from, to, then each when: Istio's clause order */
	if (!(r->c = calloc(2 + json_array_size(when), sizeof(*r->c))))
		return -ENOMEM;
	/* a clause counts as soon as it holds memory, so that rules_free finds it */
	err = parse_clause(j, jr, "to", "operation", operation_fields, ns, &r->c[r->n], &l7);
	if (r->c[r->n].m)
		r->n++;
	if (!err)
		err = parse_clause(j, jr, "from", "source", source_fields, ns, &r->c[r->n], &l7);
	if (r->c[r->n].m)
		r->n++;
	json_array_foreach(when, i, v) {
		size_t saved;
		if (err)
			break;
		saved = jx_enter(j, "when[%zu]", i);
		if (!(r->c[r->n].m = calloc(1, sizeof(*r->c[r->n].m)))) {
			err = -ENOMEM;
		} else {
			r->c[r->n].n = 1;
			r->n++;
			err = parse_when(j, v, ns, &r->c[r->n - 1].m[0], &l7);
		}
		jx_leave(j, saved);
	}
	if (err)
		return err;
	if (l7.jwt[0] && p->obj.ntarget_refs &&
	    (err = istio_object_diag(&p->obj, ISTIO_DIAG_UNSUPPORTED, j->path,
				     "ambit validates no JWT (RequestAuthentication): %s have no value at "
				     "the waypoint, so they never match and their not* forms always do",
				     l7.jwt)))
		return err;
	if (l7.names[0]) {
		r->has_l7 = true;
		/* the node agent enforces selector, namespace and mesh-wide policies: Istio's
		 * conversions for ztunnel; a waypoint (targetRefs) enforces them as written */
		if (!p->obj.ntarget_refs && (p->action == ACT_ALLOW || p->action == ACT_DENY)) {
			p->converted = true;
			err = istio_object_diag(&p->obj, ISTIO_DIAG_CONVERTED, j->path,
				p->action == ACT_ALLOW ?
				"the node agent does not enforce HTTP attributes (%s): in an ALLOW policy "
				"the whole rule is left out, which is more restrictive than written; use a "
				"waypoint for HTTP rules" :
				"the node agent does not enforce HTTP attributes (%s): this DENY rule is "
				"enforced without them (an entry left with no L4 field matches nothing); "
				"use a waypoint for HTTP rules", l7.names);
		}
	}
	return err;
}

static int parse_authorization(struct jx *j, const json_t *spec, struct policy *p)
{
	static const char *const keys[] = { "selector", "targetRef", "targetRefs", "action",
					    "provider", "rules", NULL };
	char *action = NULL;
	json_t *rules, *provider, *v;
	size_t i;
	int err;

	err = jx_keys(j, spec, keys);
	if (!err)
		err = jx_enum(j, spec, "action", action_names, &action);
	if (err)
		return err;
	p->action = ACT_ALLOW;
	for (int a = 0; action && action_names[a]; a++)
		if (strcmp(action, action_names[a]) == 0)
			p->action = (enum action)a;
	free(action);
	err = jx_object(j, spec, "provider", &provider);
	if (err)
		return err;
	if (provider && p->action != ACT_CUSTOM)
		return jx_fail(j, "provider", "is only for the CUSTOM action");
	if (p->action == ACT_CUSTOM && (!provider ||
	    !json_is_string(json_object_get(provider, "name"))))
		return jx_fail(j, "provider", "the CUSTOM action needs provider.name");
	err = jx_array(j, spec, "rules", AUTHZ_MAX_RULES, &rules);
	if (err)
		return err;
	if (rules && !(p->rules = calloc(json_array_size(rules), sizeof(*p->rules))))
		return -ENOMEM;
	json_array_foreach(rules, i, v) {
		size_t saved = jx_enter(j, "rules[%zu]", i);
		p->nrules = (int)i + 1;
		err = parse_rule(j, v, p, &p->rules[i]);
		jx_leave(j, saved);
		if (err)
			return err;
	}
	for (int t = 0; t < p->obj.ntarget_refs; t++) {
		const char *kind = p->obj.target_refs[t].kind;
		if (strcmp(kind, "Gateway") != 0 && strcmp(kind, "Service") != 0 &&
		    (err = istio_object_diag(&p->obj, ISTIO_DIAG_UNSUPPORTED, "spec.targetRefs",
					     "targetRef kind %s is not supported: only a waypoint "
					     "(Gateway) or a Service it serves", kind)))
			return err;
	}
	if (p->action == ACT_AUDIT || p->action == ACT_CUSTOM) {
		p->state = PS_UNSUPPORTED;
		return istio_object_diag(&p->obj, ISTIO_DIAG_UNSUPPORTED, "spec.action",
					 "the %s action is not enforced by ambit (nothing is allowed or "
					 "denied by this policy)", action_names[p->action]);
	}
	return 0;
}

static const char *const mtls_names[] = { "UNSET", "DISABLE", "PERMISSIVE", "STRICT", NULL };

/* {"mode": ...} at the current path + key (m borrowed; NULL: UNSET). */
static int parse_mode(struct jx *j, const json_t *m, const char *key, enum authz_mtls_mode *out)
{
	static const char *const keys[] = { "mode", NULL };
	char *mode = NULL;
	size_t saved;
	int err;

	*out = AUTHZ_MTLS_UNSET;
	if (!m || json_is_null(m))
		return 0;
	if (!json_is_object(m))
		return jx_fail(j, key, "must be an object with mode");
	saved = jx_enter(j, "%s", key);
	err = jx_keys(j, m, keys);
	if (!err)
		err = jx_enum(j, m, "mode", mtls_names, &mode);
	for (int i = 0; !err && mode && mtls_names[i]; i++)
		if (strcmp(mode, mtls_names[i]) == 0)
			*out = (enum authz_mtls_mode)i;
	free(mode);
	jx_leave(j, saved);
	return err;
}

static int parse_peer_authentication(struct jx *j, const json_t *spec, struct policy *p,
				     const char *root_ns)
{
	static const char *const keys[] = { "selector", "mtls", "portLevelMtls", NULL };
	json_t *ports, *v;
	const char *k;
	int err;

	err = jx_keys(j, spec, keys);
	if (!err)
		err = parse_mode(j, json_object_get(spec, "mtls"), "mtls", &p->mode);
	if (!err)
		err = jx_object(j, spec, "portLevelMtls", &ports);
	if (err)
		return err;
	if (ports && json_object_size(ports)) {
		size_t saved;
		if (!p->obj.nselector)
			return jx_fail(j, "portLevelMtls", "needs a workload selector (as Istio requires)");
		if (json_object_size(ports) > 1024)
			return jx_fail(j, "portLevelMtls", "has more than 1024 ports");
		if (!(p->ports = calloc(json_object_size(ports), sizeof(*p->ports))))
			return -ENOMEM;
		saved = jx_enter(j, "portLevelMtls");
		json_object_foreach(ports, k, v) {
			uint16_t port = 0;
			if (parse_port(k, &port)) {
				err = jx_fail(j, k, "'%s' is not a port (1 to 65535)", k);
				break;
			}
			p->ports[p->nports].port = port;
			err = parse_mode(j, v, k, &p->ports[p->nports].mode);
			if (err)
				break;
			p->nports++;
		}
		jx_leave(j, saved);
		if (err)
			return err;
	}
	if (p->obj.nselector && strcmp(p->obj.namespace, root_ns) == 0) {
		p->state = PS_IGNORED;
		return istio_object_diag(&p->obj, ISTIO_DIAG_IGNORED, "spec.selector",
					 "a PeerAuthentication with a selector in the root namespace "
					 "applies to no workload in ambient mode (as Istio)");
	}
	return 0;
}

/* Compiles one object (dump: its JSON, owned by the result). Returns NULL only on ENOMEM; a
 * refused object comes back with state PS_REFUSED and its one refusal diagnostic. */
static struct policy *compile_object(const json_t *json, size_t index, const char *root_ns,
				     char *dump)
{
	struct policy *p = calloc(1, sizeof(*p));
	char err[512];
	struct jx j;
	int rc;

	if (!p) {
		free(dump);
		return NULL;
	}
	p->refs = 1;
	p->json = dump;
	rc = istio_object_parse(json, &p->obj, err, sizeof(err));
	if (rc == -ENOMEM)
		goto nomem;
	if (p->obj.name && p->obj.namespace && p->obj.kind_name) {
		p->have_obj = true;
		if (asprintf(&p->label, "%s %s/%s", p->obj.kind_name, p->obj.namespace, p->obj.name) < 0 ||
		    asprintf(&p->key, "%s\x1f%s\x1f%s", p->obj.kind_name, p->obj.namespace, p->obj.name) < 0) {
			p->label = p->key = NULL;
			goto nomem;
		}
	} else if (asprintf(&p->label, "resources[%zu]", index) < 0) {
		p->label = NULL;
		goto nomem;
	}
	if (!rc) {
		jx_init(&j, p->label, err, sizeof(err));
		jx_enter(&j, "spec");
		if (p->obj.kind == ISTIO_KIND_AUTHORIZATION_POLICY)
			rc = parse_authorization(&j, p->obj.spec, p);
		else if (p->obj.kind == ISTIO_KIND_PEER_AUTHENTICATION)
			rc = parse_peer_authentication(&j, p->obj.spec, p, root_ns);
		if (rc == -ENOMEM)
			goto nomem;
	}
	p->obj.spec = NULL;
	if (rc) {
		/* err is "LABEL: path: message"; the diagnostic keeps path and message */
		const char *msg = err, *pfx = p->have_obj ? p->label : NULL;
		const char *colon;
		char path[256] = "";
		if (pfx && strncmp(msg, pfx, strlen(pfx)) == 0 && msg[strlen(pfx)] == ':')
			msg += strlen(pfx) + 2;
		colon = strstr(msg, ": ");
		if (colon && (size_t)(colon - msg) < sizeof(path)) {
			memcpy(path, msg, (size_t)(colon - msg));
			path[colon - msg] = '\0';
			msg = colon + 2;
		}
		/* a refused object keeps only its envelope and this one diagnostic */
		rules_free(p->rules, p->nrules);
		p->rules = NULL;
		p->nrules = 0;
		p->state = PS_REFUSED;
		p->converted = false;
		for (int i = 0; i < p->obj.ndiags; i++) {
			free(p->obj.diags[i].path);
			free(p->obj.diags[i].message);
		}
		p->obj.ndiags = p->obj.ndiags_dropped = 0;
		if (istio_object_diag(&p->obj, ISTIO_DIAG_REFUSED, path, "%s", msg))
			goto nomem;
	}
	return p;
nomem:
	policy_unref(p);
	return NULL;
}

/* ---- sets ---- */

struct authz_set *authz_set_ref(struct authz_set *s)
{
	if (s)
		__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
	return s;
}

void authz_set_unref(struct authz_set *s)
{
	if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (int i = 0; i < s->nentries; i++) {
		policy_unref(s->entries[i].cur);
		policy_unref(s->entries[i].in_force);
	}
	free(s->entries);
	pmap_free(&s->by_key);
	free(s->ap_mesh.v);
	pmap_free(&s->ap_ns);
	pmap_free(&s->ap_sel);
	pmap_free(&s->ap_l7);
	pmap_free(&s->pa_ns);
	pmap_free(&s->pa_sel);
	free(s->root_ns);
	free(s);
}

static struct authz_set *set_new(const char *root_ns, size_t cap)
{
	struct authz_set *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->refs = 1;
	s->root_ns = strdup(root_ns ? root_ns : ISTIO_DEFAULT_ROOT_NS);
	s->entries = calloc(cap ? cap : 1, sizeof(*s->entries));
	if (!s->root_ns || !s->entries) {
		authz_set_unref(s);
		return NULL;
	}
	return s;
}

struct authz_set *authz_set_new_empty(void)
{
	struct authz_set *s = set_new(NULL, 0);
	if (!s)
		errno = ENOMEM;
	return s;
}

const char *authz_set_root_ns(const struct authz_set *s)
{
	return s->root_ns;
}

void authz_set_stats(const struct authz_set *s, struct authz_set_stats *out)
{
	*out = s->stats;
}

static void log_policy(const struct policy *p, bool kept_previous)
{
	for (int i = 0; i < p->obj.ndiags; i++) {
		const struct istio_diag *d = &p->obj.diags[i];
		if (d->kind == ISTIO_DIAG_IGNORED)
			continue;
		pr_warn("%s: %s%s%s: %s%s", p->label, istio_diag_kind_str(d->kind), d->path[0] ? " at " : "",
			d->path, d->message,
			d->kind != ISTIO_DIAG_REFUSED ? "" :
			kept_previous ? " (its previous version stays in force)" : " (not applied)");
	}
}

/* A root-namespace selector is indexed under the root namespace; lookups ask both. The
 * selector's first pair is its key: a workload finds it through that one label. */
static int index_selector(struct pmap *m, const struct policy *p)
{
	const char *parts[3] = { p->obj.namespace, p->obj.selector[0].key, p->obj.selector[0].value };
	return pmap_add(m, parts, 3, (void *)p);
}

static int index_policy(struct authz_set *s, struct policy *p)
{
	enum istio_scope scope = istio_object_scope(&p->obj, s->root_ns);
	const char *parts[3];

	if (p->obj.kind == ISTIO_KIND_PEER_AUTHENTICATION) {
		if (p->state != PS_APPLIED)
			return 0;
		if (scope == ISTIO_SCOPE_MESH) {
			if (!s->pa_mesh || istio_object_age_cmp(&p->obj, &s->pa_mesh->obj) < 0)
				s->pa_mesh = p;
			return 0;
		}
		if (scope == ISTIO_SCOPE_SELECTOR)
			return index_selector(&s->pa_sel, p);
		parts[0] = p->obj.namespace;
		return pmap_add(&s->pa_ns, parts, 1, p);
	}
	if (p->state != PS_APPLIED)
		return 0;
	switch (scope) {
	case ISTIO_SCOPE_MESH:
		return plist_add(&s->ap_mesh, p);
	case ISTIO_SCOPE_NAMESPACE:
		parts[0] = p->obj.namespace;
		return pmap_add(&s->ap_ns, parts, 1, p);
	case ISTIO_SCOPE_SELECTOR:
		if (strcmp(p->obj.namespace, s->root_ns) == 0)
			s->ap_sel_root = true;
		return index_selector(&s->ap_sel, p);
	case ISTIO_SCOPE_TARGET_REFS:
		for (int i = 0; i < p->obj.ntarget_refs; i++) {
			const struct istio_target_ref *t = &p->obj.target_refs[i];
			int err;
			parts[0] = t->kind;
			parts[1] = t->namespace ? t->namespace : p->obj.namespace;
			parts[2] = t->name;
			/* the same target twice in one policy: index it once */
			struct bucket *b = pmap_find(&s->ap_l7, parts, 3);
			if (b && b->list.n && b->list.v[b->list.n - 1] == p)
				continue;
			if ((err = pmap_add(&s->ap_l7, parts, 3, p)))
				return err;
		}
		return 0;
	}
	return 0;
}

static int age_sort(const void *a, const void *b)
{
	const struct policy *pa = *(const struct policy *const *)a, *pb = *(const struct policy *const *)b;
	return istio_object_age_cmp(&pa->obj, &pb->obj);
}

static void sort_map(struct pmap *m)
{
	for (size_t i = 0; m->slots && i <= m->mask; i++)
		for (struct bucket *b = m->slots[i]; b; b = b->next)
			qsort(b->list.v, (size_t)b->list.n, sizeof(void *), age_sort);
}

static bool is_security_kind(const json_t *obj)
{
	const char *k = json_string_value(json_object_get(obj, "kind"));
	return k && (strcmp(k, "AuthorizationPolicy") == 0 || strcmp(k, "PeerAuthentication") == 0);
}

/* The entry of prev with key, or NULL. */
static const struct entry *prev_entry(const struct authz_set *prev, const char *key)
{
	const char *parts[1] = { key };
	const struct bucket *b;
	if (!prev || !key)
		return NULL;
	b = pmap_find(&prev->by_key, parts, 1);
	return b && b->list.n ? b->list.v[0] : NULL;
}

/* "KIND\x1fNS\x1fNAME" from the raw JSON (even of an object refused before its metadata
 * was read), or NULL when it has none; *err = -ENOMEM on failure. */
static char *raw_key(const json_t *obj, int *err)
{
	const json_t *md = json_object_get(obj, "metadata");
	const char *ns = json_string_value(json_object_get(md, "namespace"));
	const char *name = json_string_value(json_object_get(md, "name"));
	char *key;

	*err = 0;
	if (!ns || !name)
		return NULL;
	if (asprintf(&key, "%s\x1f%s\x1f%s", json_string_value(json_object_get(obj, "kind")), ns, name) < 0) {
		*err = -ENOMEM;
		return NULL;
	}
	return key;
}

/* Adds resources[index] to s: shared with prev when unchanged, else compiled (a refused
 * version keeps prev's version in force). 0 or -ENOMEM. */
static int add_object(struct authz_set *s, const struct authz_set *prev, bool same_root,
		      const json_t *obj, size_t index)
{
	struct entry *e = &s->entries[s->nentries];
	char *dump = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);	/* NULL: compile it */
	const struct entry *old;
	struct policy *p;
	const char *parts[1];
	int err;
	char *key = raw_key(obj, &err);

	if (err) {
		free(dump);
		return err;
	}
	parts[0] = key;
	if (key && pmap_find(&s->by_key, parts, 1)) {
		pr_warn("resources[%zu]: refused: %s %s is defined twice; the first stays", index,
			json_string_value(json_object_get(obj, "kind")),
			json_string_value(json_object_get(json_object_get(obj, "metadata"), "name")));
		free(key);
		free(dump);
		return 0;
	}
	old = same_root ? prev_entry(prev, key) : NULL;
	if (old && dump && old->cur->json && strcmp(old->cur->json, dump) == 0) {
		/* unchanged since prev: share both versions, log nothing */
		free(dump);
		e->cur = policy_ref(old->cur);
		e->in_force = policy_ref(old->in_force);
	} else {
		p = compile_object(obj, index, s->root_ns, dump);	/* takes dump */
		if (!p) {
			free(key);
			return -ENOMEM;
		}
		if (!p->key) {	/* refused before its metadata: still the same object */
			p->key = key;
			key = NULL;
		}
		e->cur = p;
		if (p->state != PS_REFUSED)
			e->in_force = policy_ref(p);
		else if (old && old->in_force)
			e->in_force = policy_ref(old->in_force);
		log_policy(p, e->in_force != NULL);
	}
	s->nentries++;
	free(key);
	parts[0] = e->cur->key;
	return e->cur->key ? pmap_add(&s->by_key, parts, 1, e) : 0;
}

struct authz_set *authz_compile(const json_t *resources, const char *root_ns,
				const struct authz_set *prev)
{
	struct authz_set *s;
	size_t i, n = 0;
	json_t *obj;
	bool same_root;

	json_array_foreach(resources, i, obj)
		if (is_security_kind(obj))
			n++;
	s = set_new(root_ns, n);
	if (!s)
		goto nomem;
	same_root = prev && strcmp(prev->root_ns, s->root_ns) == 0;
	json_array_foreach(resources, i, obj) {
		if (!is_security_kind(obj))
			continue;
		if (s->nentries >= AUTHZ_MAX_OBJECTS) {
			pr_warn("policies: more than %d AuthorizationPolicy and PeerAuthentication objects; "
				"resources[%zu] and the rest are refused", AUTHZ_MAX_OBJECTS, i);
			break;
		}
		if (add_object(s, prev, same_root, obj, i))
			goto nomem;
	}
	for (int k = 0; k < s->nentries; k++) {
		struct entry *e = &s->entries[k];
		struct policy *f = e->in_force;
		if (e->cur->state == PS_REFUSED)
			s->stats.refused++;
		if (!f)
			continue;
		if (index_policy(s, f))
			goto nomem;
		if (f->state == PS_UNSUPPORTED)
			s->stats.unsupported++;
		else if (f->obj.kind == ISTIO_KIND_AUTHORIZATION_POLICY)
			s->stats.authorization_policies++;
		else if (f->state == PS_APPLIED)
			s->stats.peer_authentications++;
		if (f->converted)
			s->stats.converted++;
		if (f->obj.dry_run && f->obj.kind == ISTIO_KIND_AUTHORIZATION_POLICY)
			s->stats.dry_run++;
	}
	if (s->ap_mesh.n)
		qsort(s->ap_mesh.v, (size_t)s->ap_mesh.n, sizeof(void *), age_sort);
	sort_map(&s->ap_ns);
	sort_map(&s->ap_sel);
	sort_map(&s->ap_l7);
	sort_map(&s->pa_ns);
	sort_map(&s->pa_sel);
	return s;
nomem:
	authz_set_unref(s);
	errno = ENOMEM;
	return NULL;
}

/* ---- evaluation ---- */

/* The facts of one check, decoded once. */
struct facts {
	const struct authz_conn *c;
	const struct authz_request *req;	/* NULL at L4 */
	bool l7;
	const char *id;		/* the identity without "spiffe://", NULL when none */
	const char *ns;		/* its namespace part ("" when none) */
	size_t nslen;
	const char *sa;
	size_t salen;
	bool has_sa;
	const char *path;	/* request path without its query */
	size_t pathlen;
};

static bool sm_match(const struct strmatch *m, const char *s, size_t len, bool icase)
{
	switch (m->type) {
	case SM_PRESENCE:
		return len > 0;
	case SM_EXACT:
		return len == m->len && (icase ? strncasecmp(s, m->s, len) : memcmp(s, m->s, len)) == 0;
	case SM_PREFIX:
		return len >= m->len && (icase ? strncasecmp(s, m->s, m->len) : memcmp(s, m->s, m->len)) == 0;
	case SM_SUFFIX:
		return len >= m->len && (icase ? strncasecmp(s + len - m->len, m->s, m->len) :
					 memcmp(s + len - m->len, m->s, m->len)) == 0;
	}
	return false;
}

/* The address bytes of ss (an IPv4-mapped IPv6 address counts as IPv4). */
static int ip_bytes(const struct sockaddr_storage *ss, const uint8_t **out)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	if (!ss)
		return 0;
	if (ss->ss_family == AF_INET) {
		*out = (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr;
		return AF_INET;
	}
	if (ss->ss_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
		if (memcmp(a, mapped, 12) == 0) {
			*out = a + 12;
			return AF_INET;
		}
		*out = a;
		return AF_INET6;
	}
	return 0;
}

static bool cidr_contains(const struct cidr *c, const struct sockaddr_storage *ss)
{
	const uint8_t *a;
	int fam = ip_bytes(ss, &a), full = c->bits / 8, rest = c->bits % 8;
	if (!fam || fam != c->family)
		return false;
	if (memcmp(a, c->addr, (size_t)full) != 0)
		return false;
	if (rest) {
		uint8_t mask = (uint8_t)(0xff << (8 - rest));
		return (a[full] & mask) == (c->addr[full] & mask);
	}
	return true;
}

/* Whether value i of t matches the facts. */
static bool value_matches(const struct test *t, int i, const struct facts *f)
{
	const struct authz_request *r = f->req;
	const char *s;

	switch (t->attr) {
	case A_PRINCIPAL:
		return f->id && sm_match(&t->sm[i], f->id, strlen(f->id), false);
	case A_NAMESPACE:
		return sm_match(&t->sm[i], f->ns, f->nslen, false);
	case A_SERVICE_ACCOUNT:
		return f->has_sa && strlen(t->sa[i].ns) == f->nslen && strlen(t->sa[i].sa) == f->salen &&
		       memcmp(t->sa[i].ns, f->ns, f->nslen) == 0 && memcmp(t->sa[i].sa, f->sa, f->salen) == 0;
	case A_SOURCE_IP:
		return cidr_contains(&t->cidr[i], f->c->src);
	case A_DEST_IP:
		return cidr_contains(&t->cidr[i], f->c->dst);
	case A_DEST_PORT:
		return t->ports[i] == f->c->dst_port;
	case A_REQ_PRINCIPAL:
		return r && r->request_principal &&
		       sm_match(&t->sm[i], r->request_principal, strlen(r->request_principal), false);
	case A_REMOTE_IP:
		return cidr_contains(&t->cidr[i], r && r->remote_ip ? r->remote_ip : f->c->src);
	case A_HOST:
		/* as Istio's host matcher: case-insensitive, the port is part of the value */
		return r && r->host && sm_match(&t->sm[i], r->host, strlen(r->host), true);
	case A_METHOD:
		return r && r->method && sm_match(&t->sm[i], r->method, strlen(r->method), false);
	case A_PATH:
		return f->path && sm_match(&t->sm[i], f->path, f->pathlen, false);
	case A_HEADER:
		s = r && r->header ? r->header(r->header_arg, t->header) : NULL;
		return s && sm_match(&t->sm[i], s, strlen(s), false);
	case A_SNI:
		return r && r->sni && sm_match(&t->sm[i], r->sni, strlen(r->sni), false);
	case A_NEVER:
		return false;
	}
	return false;
}

static bool test_passes(const struct test *t, const struct facts *f)
{
	bool any = false;
	for (int i = 0; i < t->n && !any; i++)
		any = value_matches(t, i, f);
	return t->neg ? !any : any;
}

static bool match_matches(const struct match *m, const struct facts *f)
{
	if (!f->l7 && m->nl4 == 0)
		return false;	/* ztunnel: a match left with no field matches nothing */
	for (int i = 0; i < m->ntests; i++) {
		if (!f->l7 && m->tests[i].attr > A_L4_LAST)
			continue;
		if (!test_passes(&m->tests[i], f))
			return false;
	}
	return true;
}

static bool policy_matches(const struct policy *p, const struct facts *f)
{
	for (int r = 0; r < p->nrules; r++) {
		const struct rule *rule = &p->rules[r];
		bool ok = true;
		if (!f->l7 && rule->has_l7 && p->action == ACT_ALLOW)
			continue;	/* istiod drops an ALLOW rule with HTTP fields for ztunnel */
		for (int c = 0; ok && c < rule->n; c++) {
			bool any = false;
			for (int m = 0; m < rule->c[c].n && !any; m++)
				any = match_matches(&rule->c[c].m[m], f);
			ok = any;
		}
		if (ok)
			return true;
	}
	return false;	/* spec: {} has no rule: it matches nothing */
}

/* Enforced and dry-run state of one evaluation. */
struct verdicts {
	bool has_allow, dr_has_allow, dr_applied;
	const struct policy *deny, *allow, *dr_deny, *dr_allow;
};

static void consider(struct verdicts *v, const struct policy *p, const struct facts *f)
{
	bool dry = p->obj.dry_run, need, m;

	if (p->action == ACT_DENY)
		need = (!dry && !v->deny) || !v->dr_deny;
	else
		need = (!dry && !v->allow) || !v->dr_allow;
	if (dry)
		v->dr_applied = true;
	if (!need)
		m = false;
	else
		m = policy_matches(p, f);
	if (p->action == ACT_DENY) {
		if (m && !dry && !v->deny)
			v->deny = p;
		if (m && !v->dr_deny)
			v->dr_deny = p;
	} else {
		if (!dry)
			v->has_allow = true;
		v->dr_has_allow = true;
		if (m && !dry && !v->allow)
			v->allow = p;
		if (m && !v->dr_allow)
			v->dr_allow = p;
	}
}

static void consider_list(struct verdicts *v, const struct plist *l, const struct facts *f,
			  const struct authz_workload *w, const char *root_ns)
{
	for (int i = 0; l && i < l->n; i++) {
		const struct policy *p = l->v[i];
		if (w && p->obj.nselector &&
		    !istio_object_selects(&p->obj, root_ns, w->namespace, w->labels, w->nlabels))
			continue;
		consider(v, p, f);
	}
}

static const struct plist *map_list(const struct pmap *m, const char *const *parts, int n)
{
	const struct bucket *b = pmap_find(m, parts, n);
	return b ? &b->list : NULL;
}

/* Each list of selector-indexed objects of map that may select w: those keyed by one of w's
 * labels in w's namespace, and in the root namespace when `root` (a root-namespace selector
 * reaches every namespace). */
#define FOR_SELECTOR_CANDIDATES(s, map, root, w, list)					\
	for (int _l = 0; _l < (w)->nlabels; _l++)					\
		for (int _r = 0; _r < ((root) ? 2 : 1); _r++)				\
			if (!(_r == 1 && strcmp((w)->namespace, (s)->root_ns) == 0) &&	\
			    ((list) = map_list(map, (const char *const[]){			\
					_r ? (s)->root_ns : (w)->namespace,		\
					(w)->labels[_l].key, (w)->labels[_l].value }, 3)))

static void ref_of(const struct policy *p, struct authz_policy_ref *r)
{
	if (!p) {
		memset(r, 0, sizeof(*r));
		return;
	}
	r->kind = p->obj.kind_name;
	r->namespace = p->obj.namespace;
	r->name = p->obj.name;
}

static void finish(const struct verdicts *v, struct authz_result *r)
{
	if (v->deny) {
		r->verdict = AUTHZ_DENY;
		r->reason = AUTHZ_REASON_DENY_MATCHED;
		ref_of(v->deny, &r->policy);
	} else if (!v->has_allow) {
		r->verdict = AUTHZ_ALLOW;
		r->reason = AUTHZ_REASON_NO_POLICY;
	} else if (v->allow) {
		r->verdict = AUTHZ_ALLOW;
		r->reason = AUTHZ_REASON_ALLOW_MATCHED;
		ref_of(v->allow, &r->policy);
	} else {
		r->verdict = AUTHZ_DENY;
		r->reason = AUTHZ_REASON_NO_ALLOW_MATCHED;
	}
	r->dry_run_applied = v->dr_applied;
	if (v->dr_deny) {
		r->dry_run_verdict = AUTHZ_DENY;
		r->dry_run_reason = AUTHZ_REASON_DENY_MATCHED;
		ref_of(v->dr_deny, &r->dry_run_policy);
	} else if (!v->dr_has_allow) {
		r->dry_run_verdict = AUTHZ_ALLOW;
		r->dry_run_reason = AUTHZ_REASON_NO_POLICY;
	} else if (v->dr_allow) {
		r->dry_run_verdict = AUTHZ_ALLOW;
		r->dry_run_reason = AUTHZ_REASON_ALLOW_MATCHED;
		ref_of(v->dr_allow, &r->dry_run_policy);
	} else {
		r->dry_run_verdict = AUTHZ_DENY;
		r->dry_run_reason = AUTHZ_REASON_NO_ALLOW_MATCHED;
	}
}

static void facts_init(struct facts *f, const struct authz_conn *c, const struct authz_request *req)
{
	const char *id = c->src_identity;

	memset(f, 0, sizeof(*f));
	f->c = c;
	f->req = req;
	f->l7 = req != NULL;
	f->ns = "";
	if (id && strncmp(id, "spiffe://", 9) == 0) {
		/* td/ns/NS/sa/SA */
		const char *p = id + 9, *a = strchr(p, '/');
		f->id = p;
		if (a && strncmp(a, "/ns/", 4) == 0) {
			const char *ns = a + 4, *b = strchr(ns, '/');
			if (b && b > ns && strncmp(b, "/sa/", 4) == 0 && b[4] && !strchr(b + 4, '/')) {
				f->ns = ns;
				f->nslen = (size_t)(b - ns);
				f->sa = b + 4;
				f->salen = strlen(f->sa);
				f->has_sa = true;
			}
		}
	}
	if (req && req->path) {
		f->path = req->path;
		f->pathlen = strcspn(req->path, "?#");
	}
}

static const struct policy *oldest_selecting(const struct authz_set *s, const struct pmap *map,
					     const struct authz_workload *w)
{
	const struct policy *best = NULL;
	const struct plist *l;

	/* root-namespace ones apply to no workload in ambient (never indexed): no root lookup */
	FOR_SELECTOR_CANDIDATES(s, map, false, w, l)
		for (int i = 0; i < l->n; i++) {
			const struct policy *p = l->v[i];
			/* ambient: workload-level PeerAuthentication only in the workload's namespace */
			if (strcmp(p->obj.namespace, w->namespace) != 0 ||
			    !labels_subset(p->obj.selector, p->obj.nselector, w->labels, w->nlabels))
				continue;
			if (!best || istio_object_age_cmp(&p->obj, &best->obj) < 0)
				best = p;
		}
	return best;
}

enum authz_mtls_mode authz_mtls_mode(const struct authz_set *s, const struct authz_workload *w,
				     uint16_t port, struct authz_policy_ref *by)
{
	const char *parts[1] = { w->namespace };
	const struct plist *nsl = map_list(&s->pa_ns, parts, 1);
	const struct policy *wl = oldest_selecting(s, &s->pa_sel, w);
	const struct policy *ns = nsl && nsl->n ? nsl->v[0] : NULL;	/* sorted: oldest first */
	const struct policy *levels[3] = { wl, ns, s->pa_mesh };

	if (wl)
		for (int i = 0; i < wl->nports; i++)
			if (wl->ports[i].port == port && wl->ports[i].mode != AUTHZ_MTLS_UNSET) {
				if (by)
					ref_of(wl, by);
				return wl->ports[i].mode;
			}
	for (int i = 0; i < 3; i++)
		if (levels[i] && levels[i]->mode != AUTHZ_MTLS_UNSET) {
			if (by)
				ref_of(levels[i], by);
			return levels[i]->mode;
		}
	if (by)
		ref_of(NULL, by);
	return AUTHZ_MTLS_PERMISSIVE;
}

void authz_check_conn(const struct authz_set *s, const struct authz_conn *c,
		      struct authz_result *r)
{
	static const struct authz_workload unknown = { .namespace = "" };	/* mesh-wide only */
	const struct authz_workload *w = c->dst_workload ? c->dst_workload : &unknown;
	const char *parts[1] = { w->namespace };
	struct verdicts v = { 0 };
	struct authz_policy_ref pa;
	const struct plist *l;
	struct facts f;

	memset(r, 0, sizeof(*r));
	facts_init(&f, c, NULL);
	consider_list(&v, &s->ap_mesh, &f, NULL, s->root_ns);
	if (strcmp(w->namespace, s->root_ns) != 0)
		consider_list(&v, map_list(&s->ap_ns, parts, 1), &f, NULL, s->root_ns);
	FOR_SELECTOR_CANDIDATES(s, &s->ap_sel, s->ap_sel_root, w, l)
		consider_list(&v, l, &f, w, s->root_ns);
	finish(&v, r);
	r->mtls_mode = authz_mtls_mode(s, w, c->dst_port, &pa);
	if (r->mtls_mode == AUTHZ_MTLS_STRICT && !c->src_identity) {
		r->verdict = r->dry_run_verdict = AUTHZ_DENY;
		r->reason = r->dry_run_reason = AUTHZ_REASON_MTLS_REQUIRED;
		r->policy = r->dry_run_policy = pa;
	}
}

static void l7_lists(const struct authz_set *s, const struct authz_l7_target *t,
		     const struct plist *out[4])
{
	static const char *const kinds[] = { "Gateway", "Service" };
	int n = 0;
	for (int k = 0; k < 2; k++)
		if (t->waypoint_name && t->waypoint_namespace)
			out[n++] = map_list(&s->ap_l7, (const char *const[]){ kinds[k],
					    t->waypoint_namespace, t->waypoint_name }, 3);
	if (t->service_name && t->service_namespace &&
	    !(t->waypoint_name && t->waypoint_namespace && strcmp(t->service_name, t->waypoint_name) == 0 &&
	      strcmp(t->service_namespace, t->waypoint_namespace) == 0))
		out[n++] = map_list(&s->ap_l7, (const char *const[]){ "Service",
				    t->service_namespace, t->service_name }, 3);
	while (n < 4)
		out[n++] = NULL;
}

void authz_check_request(const struct authz_set *s, const struct authz_conn *c,
			 const struct authz_l7_target *t, const struct authz_request *req,
			 struct authz_result *r)
{
	static const struct authz_request none = { 0 };
	const struct plist *lists[4];
	struct verdicts v = { 0 };
	struct facts f;

	memset(r, 0, sizeof(*r));
	facts_init(&f, c, req ? req : &none);
	l7_lists(s, t, lists);
	for (int i = 0; i < 4; i++)
		for (int k = 0; lists[i] && k < lists[i]->n; k++) {
			/* a policy naming both the waypoint and the Service counts once */
			const struct policy *p = lists[i]->v[k];
			bool seen = false;
			for (int j = 0; j < i && !seen; j++)
				for (int q = 0; lists[j] && q < lists[j]->n && !seen; q++)
					seen = lists[j]->v[q] == p;
			if (!seen)
				consider(&v, p, &f);
		}
	finish(&v, r);
	r->mtls_mode = AUTHZ_MTLS_STRICT;	/* a waypoint only takes HBONE */
}

bool authz_has_l7(const struct authz_set *s, const struct authz_l7_target *t)
{
	const struct plist *lists[4];
	l7_lists(s, t, lists);
	for (int i = 0; i < 4; i++)
		if (lists[i] && lists[i]->n)
			return true;
	return false;
}

/* ---- strings and dumps ---- */

const char *authz_verdict_str(enum authz_verdict v)
{
	return v == AUTHZ_ALLOW ? "allow" : "deny";
}

const char *authz_reason_str(enum authz_reason r)
{
	switch (r) {
	case AUTHZ_REASON_NO_POLICY: return "no_policy";
	case AUTHZ_REASON_ALLOW_MATCHED: return "allow_matched";
	case AUTHZ_REASON_DENY_MATCHED: return "deny_matched";
	case AUTHZ_REASON_NO_ALLOW_MATCHED: return "no_allow_matched";
	case AUTHZ_REASON_MTLS_REQUIRED: return "mtls_required";
	}
	return "?";
}

const char *authz_mtls_mode_str(enum authz_mtls_mode m)
{
	return (unsigned)m < 4 ? mtls_names[m] : "?";
}

static char *reason_sentence(enum authz_reason reason, const struct authz_policy_ref *p,
			     char *buf, size_t len)
{
	switch (reason) {
	case AUTHZ_REASON_NO_POLICY:
		snprintf(buf, len, "no policy");
		break;
	case AUTHZ_REASON_ALLOW_MATCHED:
		snprintf(buf, len, "allowed by %s/%s", p->namespace, p->name);
		break;
	case AUTHZ_REASON_DENY_MATCHED:
		snprintf(buf, len, "denied by %s/%s", p->namespace, p->name);
		break;
	case AUTHZ_REASON_NO_ALLOW_MATCHED:
		snprintf(buf, len, "allow policies exist, but none allowed");
		break;
	case AUTHZ_REASON_MTLS_REQUIRED:
		if (p->name)
			snprintf(buf, len, "plaintext refused by STRICT PeerAuthentication %s/%s",
				 p->namespace, p->name);
		else
			snprintf(buf, len, "plaintext refused: mTLS is STRICT");
		break;
	}
	return buf;
}

char *authz_result_str(const struct authz_result *r, char *buf, size_t len)
{
	return reason_sentence(r->reason, &r->policy, buf, len);
}

static json_t *ref_json(const struct authz_policy_ref *p)
{
	if (!p->name)
		return json_null();
	return json_pack("{s:s, s:s, s:s}", "kind", p->kind, "namespace", p->namespace, "name", p->name);
}

json_t *authz_result_to_json(const struct authz_result *r)
{
	char msg[600], dmsg[600];
	return json_pack("{s:s, s:s, s:s, s:o, s:s, s:{s:b, s:s, s:s, s:s, s:o}}",
			 "verdict", authz_verdict_str(r->verdict),
			 "reason", authz_reason_str(r->reason),
			 "message", authz_result_str(r, msg, sizeof(msg)),
			 "policy", ref_json(&r->policy),
			 "mtls_mode", authz_mtls_mode_str(r->mtls_mode),
			 "dry_run", "applied", r->dry_run_applied,
			 "verdict", authz_verdict_str(r->dry_run_verdict),
			 "reason", authz_reason_str(r->dry_run_reason),
			 "message", reason_sentence(r->dry_run_reason, &r->dry_run_policy, dmsg, sizeof(dmsg)),
			 "policy", ref_json(&r->dry_run_policy));
}

static const char *state_str(const struct entry *e)
{
	if (e->cur->state == PS_REFUSED)
		return e->in_force ? "previous" : "refused";
	if (e->cur->state == PS_UNSUPPORTED)
		return "unsupported";
	if (e->cur->state == PS_IGNORED)
		return "ignored";
	return e->cur->converted ? "converted" : "applied";
}

static json_t *entry_json(const struct authz_set *s, const struct entry *e)
{
	const struct policy *f = e->in_force ? e->in_force : e->cur;
	/* the envelope: this version's, else (refused before it was read) the one in force */
	const struct policy *p = e->cur->have_obj ? e->cur : e->in_force;
	json_t *j, *d;

	if (!p)
		return json_pack("{s:s, s:s, s:o}", "object", e->cur->label, "state", "refused",
				 "diagnostics", istio_object_diags_json(&e->cur->obj));
	j = istio_object_to_json(&p->obj, s->root_ns);
	if (!j)
		return NULL;
	if (p != e->cur && json_object_set_new(j, "diagnostics", istio_object_diags_json(&e->cur->obj)))
		goto fail;
	if (json_object_set_new(j, "state", json_string(state_str(e))) ||
	    json_object_set_new(j, "enforced_by", json_string(
		    istio_object_scope(&p->obj, s->root_ns) == ISTIO_SCOPE_TARGET_REFS ? "waypoint" : "node")))
		goto fail;
	if (f->obj.kind == ISTIO_KIND_AUTHORIZATION_POLICY && f->state != PS_REFUSED) {
		if (json_object_set_new(j, "action", json_string(action_names[f->action])) ||
		    json_object_set_new(j, "rules", json_integer(f->nrules)))
			goto fail;
	} else if (f->obj.kind == ISTIO_KIND_PEER_AUTHENTICATION && f->state != PS_REFUSED) {
		json_t *ports = json_object();
		for (int i = 0; ports && i < f->nports; i++) {
			char k[8];
			snprintf(k, sizeof(k), "%u", f->ports[i].port);
			json_object_set_new(ports, k, json_string(mtls_names[f->ports[i].mode]));
		}
		if (json_object_set_new(j, "mtls", json_pack("{s:s, s:o*}", "mode", mtls_names[f->mode],
							     "portLevelMtls", ports)))
			goto fail;
	}
	/* a kept previous version: its own diagnostics (conversions) come after the refusal */
	if (e->in_force && e->in_force != e->cur) {
		json_t *prev = istio_object_diags_json(&e->in_force->obj);
		d = json_object_get(j, "diagnostics");
		if (!prev || json_array_extend(d, prev)) {
			json_decref(prev);
			goto fail;
		}
		json_decref(prev);
		if (json_object_set_new(j, "in_force_generation", json_integer(e->in_force->obj.generation)))
			goto fail;
	}
	return j;
fail:
	json_decref(j);
	return NULL;
}

/* Pointer -> dump index, for the workloads an object applies to. */
struct ptr_index {
	const void **keys;
	int *vals;
	size_t mask;
};

static int pi_find(const struct ptr_index *pi, const void *p)
{
	size_t h = ((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ULL;
	for (size_t i = h & pi->mask;; i = (i + 1) & pi->mask) {
		if (pi->keys[i] == p)
			return pi->vals[i];
		if (!pi->keys[i])
			return -1;
	}
}

static void pi_put(struct ptr_index *pi, const void *p, int v)
{
	size_t h = ((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ULL;
	size_t i = h & pi->mask;
	while (pi->keys[i] && pi->keys[i] != p)
		i = (i + 1) & pi->mask;
	pi->keys[i] = p;
	pi->vals[i] = v;
}

#define DUMP_MAX_WORKLOADS 100

static int note_workload(json_t *arr, const struct ptr_index *pi, const struct policy *p,
			 const struct authz_workload *w, int *counts, const struct authz_set *s)
{
	int k = pi_find(pi, p);
	char name[2 * ISTIO_MAX_NAME + 2];
	if (k < 0 || (p->obj.nselector &&
		      !istio_object_selects(&p->obj, s->root_ns, w->namespace, w->labels, w->nlabels)))
		return 0;
	if (counts[k]++ >= DUMP_MAX_WORKLOADS)
		return 0;
	snprintf(name, sizeof(name), "%s/%s", w->namespace, w->name ? w->name : "?");
	return json_array_append_new(json_object_get(json_array_get(arr, (size_t)k), "workloads"),
				     json_string(name));
}

static int dump_workloads(const struct authz_set *s, json_t *arr, const struct authz_workload *ws,
			  int nws)
{
	struct ptr_index pi = { 0 };
	size_t cap = 16;
	int *counts = NULL, err = -ENOMEM;

	while (cap < 2 * (size_t)s->nentries + 2)
		cap *= 2;
	pi.keys = calloc(cap, sizeof(*pi.keys));
	pi.vals = calloc(cap, sizeof(*pi.vals));
	counts = calloc((size_t)s->nentries + 1, sizeof(*counts));
	if (!pi.keys || !pi.vals || !counts)
		goto out;
	pi.mask = cap - 1;
	for (int i = 0; i < s->nentries; i++) {
		const struct policy *f = s->entries[i].in_force;
		json_t *o = json_array_get(arr, (size_t)i);
		if (f && istio_object_scope(&f->obj, s->root_ns) != ISTIO_SCOPE_TARGET_REFS &&
		    (f->state == PS_APPLIED)) {
			pi_put(&pi, f, i);
			if (json_object_set_new(o, "workloads", json_array()))
				goto out;
		}
	}
	for (int wi = 0; wi < nws; wi++) {
		const struct authz_workload *w = &ws[wi];
		const char *parts[1] = { w->namespace };
		const struct plist *l;
		const struct plist *lists[2] = { &s->ap_mesh,
			strcmp(w->namespace, s->root_ns) ? map_list(&s->ap_ns, parts, 1) : NULL };
		const struct plist *pns = map_list(&s->pa_ns, parts, 1);
		/* PeerAuthentication: only the one in effect at each level (the oldest) */
		const struct policy *pas[3] = { s->pa_mesh, pns && pns->n ? pns->v[0] : NULL,
						oldest_selecting(s, &s->pa_sel, w) };
		for (int k = 0; k < 3; k++)
			if (pas[k] && note_workload(arr, &pi, pas[k], w, counts, s))
				goto out;
		for (int li = 0; li < 2; li++)
			for (int k = 0; lists[li] && k < lists[li]->n; k++)
				if (note_workload(arr, &pi, lists[li]->v[k], w, counts, s))
					goto out;
		FOR_SELECTOR_CANDIDATES(s, &s->ap_sel, s->ap_sel_root, w, l)
			for (int k = 0; k < l->n; k++)
				if (note_workload(arr, &pi, l->v[k], w, counts, s))
					goto out;
	}
	for (int i = 0; i < s->nentries; i++) {
		json_t *o = json_array_get(arr, (size_t)i);
		if (json_object_get(o, "workloads") &&
		    json_object_set_new(o, "workloads_total", json_integer(counts[i])))
			goto out;
	}
	err = 0;
out:
	free(pi.keys);
	free(pi.vals);
	free(counts);
	return err;
}

json_t *authz_set_to_json(const struct authz_set *s, const struct authz_workload *ws, int nws)
{
	json_t *arr = json_array();
	for (int i = 0; arr && i < s->nentries; i++)
		if (json_array_append_new(arr, entry_json(s, &s->entries[i]))) {
			json_decref(arr);
			return NULL;
		}
	if (arr && ws && nws > 0 && dump_workloads(s, arr, ws, nws)) {
		json_decref(arr);
		return NULL;
	}
	return arr;
}
