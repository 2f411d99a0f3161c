// SPDX-License-Identifier: Apache-2.0
/* HTTPRoute (istio/httproute.h): strict reading of gateway.networking.k8s.io v1/v1beta1
 * HTTPRoutes with Service parents, the Gateway API match precedence, weighted backend picks. */
#include "istio/httproute.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/jsonx.h"
#include "common/util.h"

/* ---------------------------------------------------------- small readers ---- */

static void kv_free(struct hr_kv *kv, int n)
{
	for (int i = 0; kv && i < n; i++) {
		free(kv[i].name);
		free(kv[i].value);
	}
	free(kv);
}

static void strs_free(char **v, int n)
{
	for (int i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

static void lower(char *s)
{
	for (; s && *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

/* The core group: "" or "core" (as Istio accepts both), absent the same. */
static int core_group(struct jx *j, const json_t *obj, bool *core)
{
	const json_t *g = json_object_get(obj, "group");
	*core = true;
	if (!g || json_is_null(g))
		return 0;
	if (!json_is_string(g))
		return jx_fail(j, "group", "must be a string");
	*core = !*json_string_value(g) || strcmp(json_string_value(g), "core") == 0;
	return 0;
}

/* A list of {name, value} (header or query matches, header modifier set/add). */
static int kv_list(struct jx *j, const json_t *obj, const char *key, bool header, bool with_type,
		   struct hr_kv **out, int *nout)
{
	static const char *const keys_t[] = { "name", "value", "type", NULL };
	static const char *const keys[] = { "name", "value", NULL };
	json_t *arr = NULL, *v;
	size_t i;
	int err = jx_array(j, obj, key, HTTPROUTE_MAX_FIELDS, &arr);

	if (err || !arr || !json_array_size(arr))
		return err;
	*out = calloc(json_array_size(arr), sizeof(**out));
	if (!*out)
		return -ENOMEM;
	json_array_foreach(arr, i, v) {
		size_t saved = jx_enter(j, "%s[%zu]", key, i);
		struct hr_kv *kv = &(*out)[i];
		char *type = NULL;
		if (!json_is_object(v))
			err = jx_fail(j, NULL, "must be an object");
		if (!err)
			err = jx_keys(j, v, with_type ? keys_t : keys);
		if (!err)
			err = jx_str(j, v, "name", true, 256, &kv->name);
		if (!err)
			err = jx_str_any(j, v, "value", true, HTTPROUTE_MAX_VALUE, &kv->value);
		if (!err && with_type)
			err = jx_str(j, v, "type", false, 64, &type);
		if (!err && type && strcmp(type, "Exact") != 0)
			err = jx_fail(j, "type", "'%s' is not supported (only Exact; RegularExpression "
				      "would need RE2 semantics)", type);
		free(type);
		*nout = (int)i + 1;
		if (!err && header) {
			if (!str_is_token(kv->name))
				err = jx_fail(j, "name", "'%s' is not a header name", kv->name);
			lower(kv->name);
		}
		for (size_t k = 0; !err && k < i; k++)
			if (header ? strcmp((*out)[k].name, kv->name) == 0 :
				     strcmp((*out)[k].name, kv->name) == 0)
				err = jx_fail(j, "name", "'%s' is listed twice", kv->name);
		jx_leave(j, saved);
		if (err)
			return err;
	}
	return 0;
}

/* "/a/b" without "//", "/./", "/../", "%2f", "%5c", "#", "?" (the CRD's own validation). */
static bool path_ok(const char *p)
{
	size_t n = strlen(p);
	if (p[0] != '/' || strstr(p, "//") || strstr(p, "/./") || strstr(p, "/../") ||
	    strcasestr(p, "%2f") || strcasestr(p, "%5c") || strpbrk(p, "#?"))
		return false;
	if ((n >= 2 && strcmp(p + n - 2, "/.") == 0) || (n >= 3 && strcmp(p + n - 3, "/..") == 0))
		return false;
	for (; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			return false;
	return true;
}

static int parse_match(struct jx *j, const json_t *v, struct hr_match *m)
{
	static const char *const keys[] = { "path", "headers", "queryParams", "method", NULL };
	static const char *const pkeys[] = { "type", "value", NULL };
	static const char *const methods[] = { "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT",
					       "OPTIONS", "TRACE", "PATCH", NULL };
	json_t *path = NULL;
	char *type = NULL;
	int err;

	if (!json_is_object(v))
		return jx_fail(j, NULL, "must be an object");
	err = jx_keys(j, v, keys);
	if (!err)
		err = jx_object(j, v, "path", &path);
	if (err)
		return err;
	m->path_type = HR_PATH_PREFIX;
	if (path) {
		size_t saved = jx_enter(j, "path");
		err = jx_keys(j, path, pkeys);
		if (!err)
			err = jx_str(j, path, "type", false, 64, &type);
		if (!err)
			err = jx_str(j, path, "value", false, HTTPROUTE_MAX_PATH, &m->path);
		if (!err && type) {
			if (strcmp(type, "Exact") == 0)
				m->path_type = HR_PATH_EXACT;
			else if (strcmp(type, "PathPrefix") != 0)
				err = jx_fail(j, "type", "'%s' is not supported (Exact or PathPrefix; "
					      "RegularExpression would need RE2 semantics)", type);
		}
		if (!err && m->path && !path_ok(m->path))
			err = jx_fail(j, "value", "'%s' is not an absolute path without '//', '/./', "
				      "'/../', '%%2f', '%%5c', '?', '#'", m->path);
		jx_leave(j, saved);
		free(type);
		if (err)
			return err;
	}
	if (!m->path && !(m->path = strdup("/")))
		return -ENOMEM;
	if (m->path_type == HR_PATH_PREFIX) {	/* the spec: a trailing '/' is ignored */
		size_t n = strlen(m->path);
		while (n > 0 && m->path[n - 1] == '/')
			m->path[--n] = '\0';
	}
	err = kv_list(j, v, "headers", true, true, &m->headers, &m->nheaders);
	if (!err)
		err = kv_list(j, v, "queryParams", false, true, &m->query, &m->nquery);
	if (!err)
		err = jx_enum(j, v, "method", methods, &m->method);
	return err;
}

/* The set/add/remove of a header modifier (mod, at j's position) into *h. */
static int parse_hmod(struct jx *j, const json_t *mod, struct hr_hmod *h)
{
	static const char *const mkeys[] = { "set", "add", "remove", NULL };
	json_t *rm = NULL, *n;
	size_t k, bytes = 0;
	int err = jx_keys(j, mod, mkeys);

	if (!err)
		err = kv_list(j, mod, "set", true, false, &h->set, &h->nset);
	if (!err)
		err = kv_list(j, mod, "add", true, false, &h->add, &h->nadd);
	if (!err)
		err = jx_array(j, mod, "remove", HTTPROUTE_MAX_FIELDS, &rm);
	if (!err && rm && json_array_size(rm) &&
	    !(h->remove = calloc(json_array_size(rm), sizeof(char *))))
		err = -ENOMEM;
	json_array_foreach(rm, k, n) {
		if (err)
			break;
		if (!json_is_string(n) || !str_is_token(json_string_value(n))) {
			err = jx_fail(j, "remove", "entry %zu is not a header name", k);
			break;
		}
		if (!(h->remove[k] = strdup(json_string_value(n))))
			err = -ENOMEM;
		else
			lower(h->remove[k]);
		h->nremove = (int)k + 1;
	}
	/* the message framing and the connection are the proxy's, not the route's */
	static const char *const framing[] = { "content-length", "transfer-encoding", "connection",
					       "keep-alive", "upgrade", "te", "proxy-connection",
					       "trailer", NULL };
	for (int i = 0; !err && i < h->nset + h->nadd + h->nremove; i++) {
		const char *n = i < h->nset ? h->set[i].name : i < h->nset + h->nadd ?
			h->add[i - h->nset].name : h->remove[i - h->nset - h->nadd];
		for (int k = 0; !err && framing[k]; k++)
			if (strcmp(n, framing[k]) == 0)
				err = jx_fail(j, NULL, "'%s' is a hop-by-hop or framing header: not "
					      "editable by a route", n);
	}
	/* a route adding huge heads is refused here rather than failing every request */
	for (int i = 0; !err && i < h->nset + h->nadd; i++) {
		const struct hr_kv *kv = i < h->nset ? &h->set[i] : &h->add[i - h->nset];
		bytes += strlen(kv->name) + strlen(kv->value) + 4;
	}
	if (!err && bytes > HTTPROUTE_MAX_HMOD_BYTES)
		err = jx_fail(j, NULL, "sets and adds %zu bytes of header lines (at most %d)", bytes,
			      HTTPROUTE_MAX_HMOD_BYTES);
	return err;
}

/* A precise hostname (RFC 1123, lower case, as the CRD's PreciseHostname). */
static bool hostname_ok(const char *h)
{
	size_t n = strlen(h), label = 0;
	if (!n || n > 253)
		return false;
	for (const char *p = h; *p; p++) {
		if (*p == '.') {
			if (!label || p[-1] == '-')
				return false;
			label = 0;
		} else if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || (*p == '-' && label)) {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return label && h[n - 1] != '-';
}

/* An HTTPPathModifier at obj's "path" (absent: HR_PATH_KEEP). */
static int parse_pathmod(struct jx *j, const json_t *obj, struct hr_pathmod *pm)
{
	static const char *const pkeys[] = { "type", "replaceFullPath", "replacePrefixMatch", NULL };
	static const char *const ptypes[] = { "ReplaceFullPath", "ReplacePrefixMatch", NULL };
	json_t *path = NULL;
	char *ptype = NULL;
	int err = jx_object(j, obj, "path", &path);

	if (err || !path)
		return err;
	size_t saved = jx_enter(j, "path");
	err = jx_keys(j, path, pkeys);
	if (!err)
		err = jx_enum(j, path, "type", ptypes, &ptype);
	if (!err && !ptype)
		err = jx_fail(j, "type", "missing");
	const char *key = err ? NULL : strcmp(ptype, "ReplaceFullPath") == 0 ? "replaceFullPath" :
								       "replacePrefixMatch";
	if (!err)
		err = jx_str(j, path, key, false, HTTPROUTE_MAX_PATH, &pm->value);
	if (!err && !pm->value)
		err = jx_fail(j, key, "missing (type %s)", ptype);
	if (!err && json_object_get(path, strcmp(key, "replaceFullPath") ? "replaceFullPath" :
									   "replacePrefixMatch"))
		err = jx_fail(j, NULL, "only the field of its type may be set");
	if (!err && (*pm->value || key[7] == 'F') && !path_ok(pm->value))
		err = jx_fail(j, key, "'%s' is not an absolute path without '//', '/./', '/../', "
			      "'%%2f', '%%5c', '?', '#'", pm->value);
	if (!err) {
		pm->mod = key[7] == 'F' ? HR_PATH_FULL : HR_PATH_REPLACE_PREFIX;
		size_t n = strlen(pm->value);
		while (pm->mod == HR_PATH_REPLACE_PREFIX && n > 0 && pm->value[n - 1] == '/')
			pm->value[--n] = '\0';
	}
	free(ptype);
	jx_leave(j, saved);
	return err;
}

static int parse_rewrite(struct jx *j, const json_t *rw, struct hr_rewrite *r)
{
	static const char *const keys[] = { "hostname", "path", NULL };
	int err = jx_keys(j, rw, keys);

	r->on = true;
	if (!err)
		err = jx_str(j, rw, "hostname", false, 253, &r->hostname);
	if (!err && r->hostname && !hostname_ok(r->hostname))
		err = jx_fail(j, "hostname", "'%s' is not a precise hostname", r->hostname);
	if (!err)
		err = parse_pathmod(j, rw, &r->path);
	return err;
}

static int parse_redirect(struct jx *j, const json_t *rr, struct hr_redirect *rd)
{
	static const char *const keys[] = { "scheme", "hostname", "path", "port", "statusCode", NULL };
	static const char *const schemes[] = { "http", "https", NULL };
	uint32_t port = 0, status = 302;
	int err = jx_keys(j, rr, keys);

	rd->on = true;
	if (!err)
		err = jx_enum(j, rr, "scheme", schemes, &rd->scheme);
	if (!err)
		err = jx_str(j, rr, "hostname", false, 253, &rd->hostname);
	if (!err && rd->hostname && !hostname_ok(rd->hostname))
		err = jx_fail(j, "hostname", "'%s' is not a precise hostname", rd->hostname);
	if (!err)
		err = jx_uint(j, rr, "port", 1, 65535, &port);
	if (!err)
		err = jx_uint(j, rr, "statusCode", 301, 308, &status);
	if (!err && status != 301 && status != 302 && status != 303 && status != 307 && status != 308)
		err = jx_fail(j, "statusCode", "%u is not a redirect status (301, 302, 303, 307, 308)",
			      status);
	rd->port = (uint16_t)port;
	rd->status = (int)status;
	if (!err)
		err = parse_pathmod(j, rr, &rd->path);
	return err;
}

static int parse_filters(struct jx *j, const json_t *obj, struct hr_rule *r, bool backend)
{
	static const char *const types[] = { "RequestHeaderModifier", "ResponseHeaderModifier",
					     "RequestRedirect", "URLRewrite", NULL };
	static const char *const keys[] = { "type", "requestHeaderModifier", "responseHeaderModifier",
					    "requestRedirect", "urlRewrite", NULL };
	static const char *const fkeys[] = { "requestHeaderModifier", "responseHeaderModifier",
					     "requestRedirect", "urlRewrite" };
	json_t *arr = NULL, *v, *mod = NULL;
	size_t i;
	int err = jx_array(j, obj, "filters", HTTPROUTE_MAX_FIELDS, &arr);

	json_array_foreach(arr, i, v) {
		size_t saved = jx_enter(j, "filters[%zu]", i);
		char *type = NULL;
		int t = 0;
		if (err)
			break;
		if (!json_is_object(v))
			err = jx_fail(j, NULL, "must be an object");
		if (!err)
			err = jx_str(j, v, "type", true, 64, &type);
		while (!err && types[t] && strcmp(types[t], type) != 0)
			t++;
		if (!err && (backend || !types[t]))
			err = jx_fail(j, "type", "'%s' is not supported%s (ambit-waypoint supports only "
				      "RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect and URLRewrite, on "
				      "rules)", type,
				      backend ? " on a backendRef" : "");
		struct hr_hmod *h = err || t >= 2 ? NULL : t ? &r->resp : &r->req;
		if (!err)
			err = jx_keys(j, v, keys);
		if (!err)
			err = jx_object(j, v, fkeys[t], &mod);
		if (!err && !mod)
			err = jx_fail(j, fkeys[t], "missing");
		if (!err && (h ? h->nset || h->nadd || h->nremove :
				 t == 2 ? r->redirect.on : r->rewrite.on))
			err = jx_fail(j, NULL, "%s is listed twice", types[t]);
		if (!err && (t == 2 ? r->rewrite.on : t == 3 && r->redirect.on))	/* the spec's rule */
			err = jx_fail(j, NULL, "RequestRedirect and URLRewrite cannot both be used");
		if (!err) {
			jx_enter(j, "%s", fkeys[t]);
			err = h ? parse_hmod(j, mod, h) : t == 2 ? parse_redirect(j, mod, &r->redirect) :
								     parse_rewrite(j, mod, &r->rewrite);
		}
		free(type);
		jx_leave(j, saved);
	}
	return err;
}

static int parse_backend(struct jx *j, const json_t *v, const char *route_ns, struct hr_rule *r,
			 struct hr_backend *b)
{
	static const char *const keys[] = { "group", "kind", "name", "namespace", "port", "weight",
					    "filters", NULL };
	char *kind = NULL;
	uint32_t port = 0;
	bool core;
	int err;

	if (!json_is_object(v))
		return jx_fail(j, NULL, "must be an object");
	b->weight = 1;
	err = jx_keys(j, v, keys);
	if (!err)
		err = jx_str(j, v, "name", true, ISTIO_MAX_NAME, &b->name);
	if (!err)
		err = jx_str(j, v, "namespace", false, ISTIO_MAX_NAME, &b->namespace);
	if (!err)
		err = jx_str(j, v, "kind", false, 64, &kind);
	if (!err)
		err = core_group(j, v, &core);
	if (!err)
		err = jx_uint(j, v, "port", 1, 65535, &port);
	if (!err)
		err = jx_uint(j, v, "weight", 0, 1000000, &b->weight);
	if (!err)
		err = parse_filters(j, v, r, true);
	if (!err && !b->namespace && !(b->namespace = strdup(route_ns)))
		err = -ENOMEM;
	if (err)
		goto out;
	b->port = (uint16_t)port;
	/* The spec's invalid references: their share of the requests gets 500 */
	if (!core || (kind && strcmp(kind, "Service") != 0))
		b->invalid = "backendRef is not a core Service";
	else if (strcmp(b->namespace, route_ns) != 0)
		b->invalid = "backendRef in another namespace (ReferenceGrant is not supported)";
	else if (!b->port)
		b->invalid = "backendRef to a Service without a port";
out:
	free(kind);
	return err;
}

/* One GEP-2257 duration of timeouts (absent: 0). */
static int timeout_ms(struct jx *j, const json_t *t, const char *key, uint64_t *ms)
{
	char *str = NULL;
	int err = jx_str(j, t, key, false, 32, &str);
	*ms = 0;
	if (!err && str && httproute_parse_duration(str, ms))
		err = jx_fail(j, key, "'%s' is not a Gateway API duration (1 to 4 of [0-9]{1,5} "
			      "followed by h, m, s or ms, e.g. \"500ms\", \"1m30s\")", str);
	free(str);
	return err;
}

/* timeouts (GEP-1742) as Istio applies them: without retry, backendRequest when set and not 0
 * is the route's timeout, else request; with retry, request is the route's timeout and
 * backendRequest each try's (Envoy's per_try_timeout); "0s" is none. Parsed after retry. */
static int parse_timeouts(struct jx *j, const json_t *v, struct hr_rule *r)
{
	static const char *const keys[] = { "request", "backendRequest", NULL };
	const json_t *t = json_object_get(v, "timeouts");
	uint64_t req = 0, be = 0;
	int err;

	if (!t || json_is_null(t))
		return 0;
	size_t saved = jx_enter(j, "timeouts");
	if (!json_is_object(t))
		err = jx_fail(j, NULL, "must be an object");
	else
		err = jx_keys(j, t, keys);
	if (!err)
		err = timeout_ms(j, t, "request", &req);
	if (!err)
		err = timeout_ms(j, t, "backendRequest", &be);
	/* the CRD's rule: backendRequest no longer than a request timeout that is not 0 */
	if (!err && req && be > req)
		err = jx_fail(j, "backendRequest", "must not be longer than request");
	jx_leave(j, saved);
	if (r->retry.on) {
		r->timeout_ms = req;
		r->retry.per_try_ms = be;
	} else {
		r->timeout_ms = be ? be : req;
	}
	return err;
}

/* retry (GEP-1731), Istio's mapping (see struct hr_retry): codes are the CRD's 400-599. */
static int parse_retry(struct jx *j, const json_t *v, struct hr_retry *rt)
{
	static const char *const keys[] = { "codes", "attempts", "backoff", NULL };
	const json_t *t = json_object_get(v, "retry");
	json_t *codes = NULL, *c;
	uint32_t attempts = 2;
	size_t i;
	int err;

	if (!t || json_is_null(t))
		return 0;
	size_t saved = jx_enter(j, "retry");
	if (!json_is_object(t))
		err = jx_fail(j, NULL, "must be an object");
	else
		err = jx_keys(j, t, keys);
	if (!err)
		err = jx_uint(j, t, "attempts", 0, HTTPROUTE_MAX_RETRIES, &attempts);
	if (!err)
		err = jx_array(j, t, "codes", HTTPROUTE_MAX_RETRY_CODES, &codes);
	json_array_foreach(err ? NULL : codes, i, c) {
		if (!json_is_integer(c) || json_integer_value(c) < 400 || json_integer_value(c) > 599) {
			err = jx_fail(j, NULL, "codes[%zu] must be an HTTP status from 400 to 599", i);
			break;
		}
		rt->codes[rt->ncodes++] = (uint16_t)json_integer_value(c);
	}
	if (!err)
		err = timeout_ms(j, t, "backoff", &rt->backoff_ms);
	jx_leave(j, saved);
	rt->on = true;
	rt->attempts = (uint8_t)attempts;
	return err;
}

static int parse_rule(struct jx *j, const json_t *v, const char *route_ns, struct hr_rule *r)
{
	static const char *const keys[] = { "name", "matches", "filters", "backendRefs", "timeouts",
					    "retry", "sessionPersistence", NULL };
	json_t *arr = NULL, *e;
	size_t i;
	int err;

	if (!json_is_object(v))
		return jx_fail(j, NULL, "must be an object");
	err = jx_keys(j, v, keys);
	if (!err)
		err = parse_retry(j, v, &r->retry);
	if (!err)
		err = parse_timeouts(j, v, r);
	if (!err && json_object_get(v, "sessionPersistence"))
		err = jx_fail(j, "sessionPersistence", "not supported");
	if (!err)
		err = jx_array(j, v, "matches", HTTPROUTE_MAX_MATCHES, &arr);
	if (err)
		return err;
	r->nmatches = arr && json_array_size(arr) ? (int)json_array_size(arr) : 1;
	r->matches = calloc((size_t)r->nmatches, sizeof(*r->matches));
	if (!r->matches)
		return -ENOMEM;
	if (!arr || !json_array_size(arr)) {	/* no matches: every request (PathPrefix "/") */
		r->matches[0].path = strdup("");
		if (!r->matches[0].path)
			return -ENOMEM;
	}
	json_array_foreach(arr, i, e) {
		size_t saved = jx_enter(j, "matches[%zu]", i);
		err = parse_match(j, e, &r->matches[i]);
		jx_leave(j, saved);
		if (err)
			return err;
	}
	err = parse_filters(j, v, r, false);
	bool prefix = r->redirect.path.mod == HR_PATH_REPLACE_PREFIX ||
		      r->rewrite.path.mod == HR_PATH_REPLACE_PREFIX;
	for (int k = 0; !err && prefix && k < r->nmatches; k++)
		if (r->matches[k].path_type != HR_PATH_PREFIX)	/* the spec's rule */
			err = jx_fail(j, "filters", "ReplacePrefixMatch needs every match of the rule "
				      "to be a PathPrefix (matches[%d] is not)", k);
	if (!err)
		err = jx_array(j, v, "backendRefs", HTTPROUTE_MAX_BACKENDS, &arr);
	if (err)
		return err;
	if (arr && json_array_size(arr) &&
	    !(r->backends = calloc(json_array_size(arr), sizeof(*r->backends))))
		return -ENOMEM;
	json_array_foreach(arr, i, e) {
		size_t saved = jx_enter(j, "backendRefs[%zu]", i);
		r->nbackends = (int)i + 1;
		err = parse_backend(j, e, route_ns, r, &r->backends[i]);
		jx_leave(j, saved);
		if (err)
			return err;
		r->total_weight += r->backends[i].weight;
	}
	return 0;
}

/* parentRefs: Services of the route's namespace are kept; Gateways and the rest are for other
 * components (a diagnostic says so). */
static int parse_parents(struct jx *j, const json_t *spec, struct httproute *hr)
{
	static const char *const keys[] = { "group", "kind", "name", "namespace", "port",
					    "sectionName", NULL };
	json_t *arr = NULL, *v;
	size_t i;
	int err = jx_array(j, spec, "parentRefs", HTTPROUTE_MAX_PARENTS, &arr);

	if (err || !arr || !json_array_size(arr))
		return err;
	hr->parents = calloc(json_array_size(arr), sizeof(*hr->parents));
	if (!hr->parents)
		return -ENOMEM;
	json_array_foreach(arr, i, v) {
		size_t saved = jx_enter(j, "parentRefs[%zu]", i);
		char *kind = NULL, *name = NULL, *ns = NULL, path[48];
		uint32_t port = 0;
		bool core = true;
		snprintf(path, sizeof(path), "spec.parentRefs[%zu]", i);
		if (!json_is_object(v))
			err = jx_fail(j, NULL, "must be an object");
		if (!err)
			err = jx_keys(j, v, keys);
		if (!err)
			err = jx_str(j, v, "name", true, ISTIO_MAX_NAME, &name);
		if (!err)
			err = jx_str(j, v, "kind", false, 64, &kind);
		if (!err)
			err = jx_str(j, v, "namespace", false, ISTIO_MAX_NAME, &ns);
		if (!err)
			err = jx_uint(j, v, "port", 1, 65535, &port);
		if (!err)
			err = core_group(j, v, &core);
		jx_leave(j, saved);
		if (!err && (!core || !kind || strcmp(kind, "Service") != 0))
			err = istio_object_diag(&hr->obj, ISTIO_DIAG_IGNORED, path,
						"not a Service (%s): for a gateway, not the waypoint",
						kind ? kind : "Gateway");
		else if (!err && ns && strcmp(ns, hr->obj.namespace) != 0)
			err = istio_object_diag(&hr->obj, ISTIO_DIAG_UNSUPPORTED, path,
						"a Service of another namespace (a consumer route) is not "
						"supported; ignored");
		else if (!err && json_object_get(v, "sectionName"))
			err = istio_object_diag(&hr->obj, ISTIO_DIAG_UNSUPPORTED, path,
						"sectionName is not supported (use port); ignored");
		else if (!err) {
			struct hr_parent *p = &hr->parents[hr->nparents++];
			p->name = name;
			p->port = (uint16_t)port;
			name = NULL;
		}
		free(kind);
		free(name);
		free(ns);
		if (err)
			return err;
	}
	return 0;
}

static void rule_fini(struct hr_rule *r)
{
	for (int i = 0; r->matches && i < r->nmatches; i++) {
		struct hr_match *m = &r->matches[i];
		free(m->path);
		free(m->method);
		kv_free(m->headers, m->nheaders);
		kv_free(m->query, m->nquery);
	}
	free(r->matches);
	for (int i = 0; i < r->nbackends; i++) {
		free(r->backends[i].name);
		free(r->backends[i].namespace);
	}
	free(r->backends);
	for (int pass = 0; pass < 2; pass++) {
		struct hr_hmod *h = pass ? &r->resp : &r->req;
		kv_free(h->set, h->nset);
		kv_free(h->add, h->nadd);
		strs_free(h->remove, h->nremove);
	}
	free(r->redirect.scheme);
	free(r->redirect.hostname);
	free(r->redirect.path.value);
	free(r->rewrite.hostname);
	free(r->rewrite.path.value);
}

static void route_free(struct httproute *hr)
{
	if (!hr)
		return;
	for (int i = 0; i < hr->nparents; i++)
		free(hr->parents[i].name);
	free(hr->parents);
	for (int i = 0; hr->rules && i < hr->nrules; i++)
		rule_fini(&hr->rules[i]);
	free(hr->rules);
	istio_object_fini(&hr->obj);
	free(hr);
}

/* Reads one HTTPRoute; a bad one comes back not accepted, with its refusal diagnostic.
 * NULL on ENOMEM. */
static struct httproute *route_compile(const json_t *json)
{
	static const char *const keys[] = { "parentRefs", "hostnames", "rules", NULL };
	struct httproute *hr = calloc(1, sizeof(*hr));
	char err[512] = "";
	json_t *rules = NULL, *v;
	struct jx j;
	size_t i;
	int rc;

	if (!hr)
		return NULL;
	rc = istio_object_parse(json, &hr->obj, err, sizeof(err));
	if (rc == -ENOMEM)
		goto nomem;
	if (!rc) {
		char prefix[2 * ISTIO_MAX_NAME + 32];
		snprintf(prefix, sizeof(prefix), "HTTPRoute %s/%s", hr->obj.namespace, hr->obj.name);
		jx_init(&j, prefix, err, sizeof(err));
		jx_enter(&j, "spec");
		rc = hr->obj.spec ? jx_keys(&j, hr->obj.spec, keys) : 0;
		if (!rc)
			rc = parse_parents(&j, hr->obj.spec, hr);
		if (!rc)
			rc = jx_array(&j, hr->obj.spec, "rules", HTTPROUTE_MAX_RULES, &rules);
		if (!rc && json_array_size(json_object_get(hr->obj.spec, "hostnames")))
			rc = istio_object_diag(&hr->obj, ISTIO_DIAG_IGNORED, "spec.hostnames",
					       "hostnames do not apply to Service parents (GAMMA)");
		if (!rc && rules && json_array_size(rules)) {
			hr->rules = calloc(json_array_size(rules), sizeof(*hr->rules));
			if (!hr->rules)
				goto nomem;
		}
		json_array_foreach(rules, i, v) {
			if (rc)
				break;
			size_t saved = jx_enter(&j, "rules[%zu]", i);
			hr->nrules = (int)i + 1;
			rc = parse_rule(&j, v, hr->obj.namespace, &hr->rules[i]);
			jx_leave(&j, saved);
			if (!rc && hr->rules[i].retry.on && hr->rules[i].retry.attempts) {
				char path[48];
				snprintf(path, sizeof(path), "spec.rules[%zu].retry", i);
				rc = istio_object_diag(&hr->obj, ISTIO_DIAG_UNSUPPORTED, path,
						       "an HTTP/2 client's request carried to the endpoint "
						       "as HTTP/1.1 (a port declared http) is not retried: "
						       "it gets one try, bounded by backendRequest");
			}
		}
		if (!rc && !hr->nrules)	/* the CRD's default: one rule sending everything nowhere */
			rc = jx_fail(&j, "rules", "no rules (ambit needs at least one)");
	}
	hr->obj.spec = NULL;	/* borrowed from json */
	if (rc == -ENOMEM)
		goto nomem;
	if (rc) {
		/* err is "HTTPRoute NS/NAME: path: message": the diagnostic keeps path and message */
		const char *pfx = strstr(err, ": "), *msg = pfx ? pfx + 2 : err;
		const char *colon = strstr(msg, ": ");
		char path[256] = "";
		if (colon && (size_t)(colon - msg) < sizeof(path) &&
		    !memchr(msg, ' ', (size_t)(colon - msg))) {
			snprintf(path, sizeof(path), "%.*s", (int)(colon - msg), msg);
			msg = colon + 2;
		}
		if (istio_object_diag(&hr->obj, ISTIO_DIAG_REFUSED, path, "%s", msg))
			goto nomem;
		return hr;
	}
	hr->accepted = true;
	return hr;
nomem:
	route_free(hr);
	errno = ENOMEM;
	return NULL;
}

/* ---------------------------------------------------------- the set ---- */

static bool is_httproute(const json_t *obj)
{
	const char *kind = json_string_value(json_object_get(obj, "kind"));
	const char *api = json_string_value(json_object_get(obj, "apiVersion"));
	return kind && api && strcmp(kind, "HTTPRoute") == 0 &&
	       strncmp(api, "gateway.networking.k8s.io/", 26) == 0;
}

static int route_age_cmp(const void *a, const void *b)
{
	const struct httproute *x = *(const struct httproute *const *)a;
	const struct httproute *y = *(const struct httproute *const *)b;
	if (!x->obj.namespace || !x->obj.name || !y->obj.namespace || !y->obj.name)	/* refused */
		return (!x->obj.namespace || !x->obj.name) - (!y->obj.namespace || !y->obj.name);
	return istio_object_age_cmp(&x->obj, &y->obj);
}

/* Gateway API match precedence: an Exact path; the longest PathPrefix; a method; the most
 * header matches; the most query matches; then the oldest route (creationTimestamp, then
 * namespace/name); then the rules and matches in the order written. */
static int entry_cmp(const void *a, const void *b)
{
	const struct hr_entry *x = a, *y = b;
	const struct hr_match *p = x->match, *q = y->match;
	int c;
	if (p->path_type != q->path_type)
		return p->path_type == HR_PATH_EXACT ? -1 : 1;
	size_t lp = strlen(p->path), lq = strlen(q->path);
	if (lp != lq)
		return lp > lq ? -1 : 1;
	if (!p->method != !q->method)
		return p->method ? -1 : 1;
	if (p->nheaders != q->nheaders)
		return p->nheaders > q->nheaders ? -1 : 1;
	if (p->nquery != q->nquery)
		return p->nquery > q->nquery ? -1 : 1;
	if ((c = istio_object_age_cmp(&x->route->obj, &y->route->obj)))
		return c;
	if (x->rule_idx != y->rule_idx)
		return x->rule_idx < y->rule_idx ? -1 : 1;
	return x->match < y->match ? -1 : x->match > y->match ? 1 : 0;
}

static struct hr_service *service_get(struct httproute_set *s, const char *ns, const char *name,
				      bool create)
{
	for (int i = 0; i < s->nservices; i++)
		if (strcmp(s->services[i].name, name) == 0 && strcmp(s->services[i].namespace, ns) == 0)
			return &s->services[i];
	if (!create)
		return NULL;
	struct hr_service *n = realloc(s->services, (size_t)(s->nservices + 1) * sizeof(*n));
	if (!n)
		return NULL;
	s->services = n;
	n = &n[s->nservices];
	memset(n, 0, sizeof(*n));
	n->namespace = strdup(ns);
	n->name = strdup(name);
	if (!n->namespace || !n->name) {
		free(n->namespace);
		free(n->name);
		return NULL;
	}
	s->nservices++;
	return n;
}

/* Attaches an accepted route to each of its parents (bounded per Service). */
static int attach(struct httproute_set *s, struct httproute *hr)
{
	for (int p = 0; p < hr->nparents; p++) {
		struct hr_service *svc = service_get(s, hr->obj.namespace, hr->parents[p].name, true);
		bool dup = false;
		if (!svc)
			return -ENOMEM;
		for (int k = 0; k < svc->nroutes; k++)
			dup |= svc->routes[k] == hr && svc->route_ports[k] == hr->parents[p].port;
		if (dup)
			continue;
		if (svc->nroutes >= HTTPROUTE_MAX_PER_SERVICE) {
			if (istio_object_diag(&hr->obj, ISTIO_DIAG_REFUSED, "spec.parentRefs",
					      "Service %s already has %d routes (the bound); not attached",
					      svc->name, HTTPROUTE_MAX_PER_SERVICE))
				return -ENOMEM;
			continue;
		}
		const struct httproute **r = realloc(svc->routes, (size_t)(svc->nroutes + 1) * sizeof(*r));
		if (!r)
			return -ENOMEM;
		svc->routes = r;
		uint16_t *ports = realloc(svc->route_ports, (size_t)(svc->nroutes + 1) * sizeof(*ports));
		if (!ports)
			return -ENOMEM;
		svc->route_ports = ports;
		svc->routes[svc->nroutes] = hr;
		svc->route_ports[svc->nroutes++] = hr->parents[p].port;
		int add = 0;
		for (int k = 0; k < hr->nrules; k++)
			add += hr->rules[k].nmatches;
		struct hr_entry *e = realloc(svc->entries, (size_t)(svc->nentries + add) * sizeof(*e));
		if (!e)
			return -ENOMEM;
		svc->entries = e;
		for (int k = 0; k < hr->nrules; k++)
			for (int m = 0; m < hr->rules[k].nmatches; m++)
				svc->entries[svc->nentries++] = (struct hr_entry){
					.route = hr, .rule = &hr->rules[k], .match = &hr->rules[k].matches[m],
					.port = hr->parents[p].port, .rule_idx = k };
	}
	return 0;
}

struct httproute_set *httproute_set_compile(const json_t *resources, uint64_t generation)
{
	struct httproute_set *s = calloc(1, sizeof(*s));
	const json_t *obj;
	size_t i;
	int n = 0;

	if (!s)
		goto nomem;
	s->refs = 1;
	s->generation = generation;
	json_array_foreach(resources, i, obj)
		n += is_httproute(obj);
	n = n > HTTPROUTE_MAX_OBJECTS ? HTTPROUTE_MAX_OBJECTS : n;
	if (n && !(s->routes = calloc((size_t)n, sizeof(*s->routes))))
		goto nomem;
	json_array_foreach(resources, i, obj) {
		if (!is_httproute(obj))
			continue;
		if (s->nroutes >= n) {
			s->stats.refused++;	/* past the bound: counted (the caller logs) */
			continue;
		}
		if (!(s->routes[s->nroutes] = route_compile(obj)))
			goto nomem;
		s->nroutes++;
	}
	/* oldest first: the per-Service bound keeps the oldest, as conflicts resolve */
	if (s->nroutes)
		qsort(s->routes, (size_t)s->nroutes, sizeof(*s->routes), route_age_cmp);
	for (int k = 0; k < s->nroutes; k++) {
		struct httproute *hr = s->routes[k];
		s->stats.routes++;
		if (!hr->accepted) {
			s->stats.refused++;
			continue;
		}
		s->stats.accepted++;
		if (attach(s, hr))
			goto nomem;
	}
	for (int k = 0; k < s->nservices; k++)
		qsort(s->services[k].entries, (size_t)s->services[k].nentries,
		      sizeof(*s->services[k].entries), entry_cmp);
	s->stats.services = s->nservices;
	return s;
nomem:
	httproute_set_unref(s);
	errno = ENOMEM;
	return NULL;
}

void httproute_set_ref(struct httproute_set *s)
{
	if (s)
		__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
}

void httproute_set_unref(struct httproute_set *s)
{
	if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	for (int i = 0; i < s->nservices; i++) {
		free(s->services[i].namespace);
		free(s->services[i].name);
		free(s->services[i].entries);
		free(s->services[i].routes);
		free(s->services[i].route_ports);
	}
	free(s->services);
	for (int i = 0; i < s->nroutes; i++)
		route_free(s->routes[i]);
	free(s->routes);
	free(s);
}

/* ---------------------------------------------------------- matching ---- */

bool httproute_path_matches(const struct hr_match *m, const char *path, size_t plen)
{
	size_t n = strlen(m->path);
	if (m->path_type == HR_PATH_EXACT)
		return plen == n && memcmp(path, m->path, n) == 0;
	/* element by element: "/abc" matches "/abc", "/abc/" and "/abc/def", not "/abcd" */
	return plen >= n && memcmp(path, m->path, n) == 0 && (plen == n || path[n] == '/');
}

/* Whether the query string has name=value exactly (the first parameter of that name, as
 * Envoy's query parameter matcher takes it). */
static bool query_has(const char *q, size_t qlen, const struct hr_kv *kv)
{
	size_t nl = strlen(kv->name), vl = strlen(kv->value);
	const char *end = q + qlen;
	while (q && q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *stop = amp ? amp : end;
		const char *eq = memchr(q, '=', (size_t)(stop - q));
		const char *ne = eq ? eq : stop;
		if ((size_t)(ne - q) == nl && memcmp(q, kv->name, nl) == 0) {
			const char *v = eq ? eq + 1 : stop;
			return (size_t)(stop - v) == vl && memcmp(v, kv->value, vl) == 0;
		}
		q = amp ? amp + 1 : NULL;
	}
	return false;
}

static bool match_request(const struct hr_match *m, const struct hr_request *rq)
{
	if (!httproute_path_matches(m, rq->path, rq->plen))
		return false;
	if (m->method && (!rq->method || strcmp(m->method, rq->method) != 0))
		return false;
	for (int i = 0; i < m->nheaders; i++) {
		const char *v = rq->header ? rq->header(rq->header_arg, m->headers[i].name) : NULL;
		if (!v || strcmp(v, m->headers[i].value) != 0)
			return false;
	}
	for (int i = 0; i < m->nquery; i++)
		if (!rq->query || !query_has(rq->query, rq->qlen, &m->query[i]))
			return false;
	return true;
}

enum hr_verdict httproute_match(const struct httproute_set *s, const char *ns, const char *name,
				uint16_t port, const struct hr_request *rq,
				const struct httproute **route, const struct hr_rule **rule)
{
	const struct hr_match *m;
	return httproute_match_ex(s, ns, name, port, rq, route, rule, &m);
}

enum hr_verdict httproute_match_ex(const struct httproute_set *s, const char *ns, const char *name,
				   uint16_t port, const struct hr_request *rq,
				   const struct httproute **route, const struct hr_rule **rule,
				   const struct hr_match **match)
{
	const struct hr_service *svc = NULL;
	bool attached = false;

	for (int i = 0; s && i < s->nservices && !svc; i++)
		if (strcmp(s->services[i].name, name) == 0 && strcmp(s->services[i].namespace, ns) == 0)
			svc = &s->services[i];
	if (!svc)
		return HR_NO_ROUTES;
	for (int i = 0; i < svc->nroutes && !attached; i++)
		attached = !svc->route_ports[i] || svc->route_ports[i] == port;
	if (!attached)
		return HR_NO_ROUTES;
	for (int i = 0; i < svc->nentries; i++) {
		const struct hr_entry *e = &svc->entries[i];
		if (e->port && e->port != port)
			continue;
		if (match_request(e->match, rq)) {
			*route = e->route;
			*rule = e->rule;
			*match = e->match;
			return HR_MATCHED;
		}
	}
	return HR_NOT_FOUND;
}

bool httproute_attached(const struct httproute_set *s, const char *ns, const char *name)
{
	for (int i = 0; s && i < s->nservices; i++)
		if (strcmp(s->services[i].name, name) == 0 && strcmp(s->services[i].namespace, ns) == 0)
			return s->services[i].nroutes > 0;
	return false;
}

char *httproute_rewrite_path(const struct hr_pathmod *pm, const struct hr_match *m,
			     const char *path, size_t plen)
{
	const char *pre = path, *rest = "";
	size_t prelen = plen, restlen = 0;
	char *out = NULL;

	if (pm->mod == HR_PATH_FULL) {
		pre = pm->value;
		prelen = strlen(pre);
	} else if (pm->mod == HR_PATH_REPLACE_PREFIX) {
		/* the matched prefix (no trailing '/') gives way to the replacement (no trailing '/'
		 * either): "/foo/bar" by "/foo" -> "/xyz" is "/xyz/bar", "/foo" is "/xyz", and an
		 * empty result is "/" */
		size_t mlen = m && m->path_type == HR_PATH_PREFIX ? strlen(m->path) : 0;
		if (mlen > plen)
			mlen = plen;
		pre = pm->value;
		prelen = strlen(pre);
		rest = path + mlen;
		restlen = plen - mlen;
		if (!prelen && !restlen) {
			pre = "/";
			prelen = 1;
		}
	}
	if (asprintf(&out, "%.*s%.*s", (int)prelen, pre, (int)restlen, rest) < 0)
		return NULL;
	return out;
}

char *httproute_redirect_location(const struct hr_redirect *rd, const struct hr_match *m,
				  const char *host, size_t hlen, const char *fallback, uint16_t port,
				  const char *path, size_t plen, const char *query, size_t qlen)
{
	const char *scheme = rd->scheme ? rd->scheme : "http";
	bool https = strcmp(scheme, "https") == 0;
	size_t keep = hlen;
	char pbuf[8] = "", *loc = NULL;

	/* the Host without its port ("[v6]:port" keeps its brackets) */
	for (size_t i = hlen; i > 0; i--) {
		if (host[i - 1] == ':') {
			keep = i - 1;
			break;
		}
		if (host[i - 1] < '0' || host[i - 1] > '9')
			break;
	}
	if (rd->hostname) {
		host = rd->hostname;
		keep = strlen(host);
	} else if (!keep) {
		host = fallback;
		keep = strlen(host);
	}
	port = rd->port ? rd->port : rd->scheme ? (https ? 443 : 80) : port;
	if (port != (https ? 443 : 80))
		snprintf(pbuf, sizeof(pbuf), ":%u", port);
	char *npath = httproute_rewrite_path(&rd->path, m, path, plen);
	if (!npath)
		return NULL;
	if (asprintf(&loc, "%s://%.*s%s%s%s%.*s", scheme, (int)keep, host, pbuf, npath, query ? "?" : "",
		     query ? (int)qlen : 0, query ? query : "") < 0)
		loc = NULL;
	free(npath);
	return loc;
}

const struct hr_backend *httproute_pick(const struct hr_rule *rule, uint32_t rnd)
{
	uint64_t at;
	if (!rule->total_weight)
		return NULL;
	at = rnd % rule->total_weight;
	for (int i = 0; i < rule->nbackends; i++) {
		if (at < rule->backends[i].weight)
			return &rule->backends[i];
		at -= rule->backends[i].weight;
	}
	return NULL;
}

int httproute_parse_duration(const char *s, uint64_t *ms)
{
	/* GEP-2257: ^([0-9]{1,5}(h|m|s|ms)){1,4}$ */
	uint64_t total = 0;
	int parts = 0;
	const char *p = s;
	while (*p) {
		uint64_t v = 0;
		int digits = 0;
		while (*p >= '0' && *p <= '9' && digits < 6) {
			v = v * 10 + (uint64_t)(*p++ - '0');
			digits++;
		}
		if (!digits || digits > 5 || ++parts > 4)
			return -EINVAL;
		if (p[0] == 'm' && p[1] == 's') {
			p += 2;
		} else if (*p == 'h') {
			v *= 3600000;
			p++;
		} else if (*p == 'm') {
			v *= 60000;
			p++;
		} else if (*p == 's') {
			v *= 1000;
			p++;
		} else {
			return -EINVAL;
		}
		total += v;
	}
	if (!parts)
		return -EINVAL;
	*ms = total;
	return 0;
}

/* ---------------------------------------------------------- admin ---- */

static json_t *kv_json(const struct hr_kv *kv, int n)
{
	json_t *a = json_array();
	for (int i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_pack("{s:s, s:s}", "name", kv[i].name, "value",
						       kv[i].value))) {
			json_decref(a);
			return NULL;
		}
	return a;
}

static const char *pathmod_type(const struct hr_pathmod *pm)
{
	return pm->mod == HR_PATH_FULL ? "ReplaceFullPath" :
	       pm->mod == HR_PATH_REPLACE_PREFIX ? "ReplacePrefixMatch" : NULL;
}

/* A header modifier as key of j when it does something. Nonzero on ENOMEM. */
static int hmod_json(json_t *j, const char *key, const struct hr_hmod *h)
{
	json_t *rm;
	if (!h->nset && !h->nadd && !h->nremove)
		return 0;
	rm = json_array();
	for (int i = 0; rm && i < h->nremove; i++)
		if (json_array_append_new(rm, json_string(h->remove[i]))) {
			json_decref(rm);
			return -1;
		}
	return json_object_set_new(j, key, json_pack("{s:o, s:o, s:o?}", "set", kv_json(h->set, h->nset),
						     "add", kv_json(h->add, h->nadd), "remove", rm));
}

static json_t *rule_json(const struct hr_rule *r)
{
	json_t *j = json_object(), *ms = json_array(), *bs = json_array();
	int bad = !j || !ms || !bs;
	for (int i = 0; !bad && i < r->nmatches; i++) {
		const struct hr_match *m = &r->matches[i];
		bad |= json_array_append_new(ms, json_pack("{s:s, s:s, s:s?, s:o, s:o}",
			"path_type", m->path_type == HR_PATH_EXACT ? "Exact" : "PathPrefix",
			"path", m->path_type == HR_PATH_PREFIX && !*m->path ? "/" : m->path,
			"method", m->method, "headers", kv_json(m->headers, m->nheaders),
			"query_params", kv_json(m->query, m->nquery)));
	}
	for (int i = 0; !bad && i < r->nbackends; i++) {
		const struct hr_backend *b = &r->backends[i];
		bad |= json_array_append_new(bs, json_pack("{s:s, s:s, s:i, s:I, s:s?}", "name", b->name,
			"namespace", b->namespace, "port", b->port, "weight", (json_int_t)b->weight,
			"invalid", b->invalid));
	}
	bad = bad || hmod_json(j, "request_header_modifier", &r->req) ||
	      hmod_json(j, "response_header_modifier", &r->resp);
	if (!bad && r->redirect.on) {
		const struct hr_redirect *rd = &r->redirect;
		bad |= json_object_set_new(j, "request_redirect", json_pack("{s:i, s:s?, s:s?, s:i, s:s?, s:s?}",
			"status_code", rd->status, "scheme", rd->scheme, "hostname", rd->hostname,
			"port", rd->port, "path_type", pathmod_type(&rd->path), "path", rd->path.value));
	}
	if (!bad && r->rewrite.on)
		bad |= json_object_set_new(j, "url_rewrite", json_pack("{s:s?, s:s?, s:s?}",
			"hostname", r->rewrite.hostname, "path_type", pathmod_type(&r->rewrite.path),
			"path", r->rewrite.path.value));
	if (!bad && r->timeout_ms)
		bad |= json_object_set_new(j, "timeout_ms", json_integer((json_int_t)r->timeout_ms));
	if (!bad && r->retry.on) {
		json_t *codes = json_array();
		for (int i = 0; codes && i < r->retry.ncodes; i++)
			bad |= json_array_append_new(codes, json_integer(r->retry.codes[i]));
		bad |= !codes || json_object_set_new(j, "retry", json_pack("{s:i, s:o, s:I, s:I}",
			"attempts", r->retry.attempts, "codes", codes,
			"backoff_ms", (json_int_t)r->retry.backoff_ms,
			"per_try_timeout_ms", (json_int_t)r->retry.per_try_ms));
	}
	bad = bad || json_object_set(j, "matches", ms) || json_object_set(j, "backends", bs);
	json_decref(ms);
	json_decref(bs);
	if (bad) {
		json_decref(j);
		return NULL;
	}
	return j;
}

static json_t *route_json(const struct httproute *hr)
{
	json_t *j = istio_object_to_json(&hr->obj, NULL), *ps = json_array(), *rs = json_array();
	int bad = !j || !ps || !rs;
	if (j)
		json_object_del(j, "scope");	/* a policy notion */
	for (int i = 0; !bad && i < hr->nparents; i++)
		bad |= json_array_append_new(ps, hr->parents[i].port ?
			json_pack("{s:s, s:s, s:i}", "kind", "Service", "name", hr->parents[i].name,
				  "port", hr->parents[i].port) :
			json_pack("{s:s, s:s}", "kind", "Service", "name", hr->parents[i].name));
	for (int i = 0; !bad && hr->accepted && i < hr->nrules; i++)
		bad |= json_array_append_new(rs, rule_json(&hr->rules[i]));
	bad = bad || json_object_set_new(j, "accepted", json_boolean(hr->accepted)) ||
	      json_object_set(j, "parents", ps) || json_object_set(j, "rules", rs);
	json_decref(ps);
	json_decref(rs);
	if (bad) {
		json_decref(j);
		return NULL;
	}
	return j;
}

json_t *httproute_set_json(const struct httproute_set *s,
			   bool (*keep)(void *arg, const char *ns, const char *name), void *arg)
{
	json_t *j = json_pack("{s:I, s:{s:i, s:i, s:i, s:i}}", "generation",
			      (json_int_t)(s ? s->generation : 0), "stats",
			      "routes", s ? s->stats.routes : 0, "accepted", s ? s->stats.accepted : 0,
			      "refused", s ? s->stats.refused : 0, "services", s ? s->stats.services : 0);
	json_t *rs = json_array();
	int bad = !j || !rs;
	for (int i = 0; !bad && s && i < s->nroutes; i++) {
		const struct httproute *hr = s->routes[i];
		bool show = !keep || !hr->accepted;
		for (int p = 0; !show && p < hr->nparents; p++)
			show = keep(arg, hr->obj.namespace, hr->parents[p].name);
		if (show)
			bad |= json_array_append_new(rs, route_json(hr));
	}
	bad = bad || json_object_set(j, "routes", rs);
	json_decref(rs);
	if (bad) {
		json_decref(j);
		return NULL;
	}
	return j;
}
