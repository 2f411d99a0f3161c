// SPDX-License-Identifier: Apache-2.0
/* The Istio object envelope (istio/object.h): strict reading of apiVersion, kind, metadata,
 * selector and targetRefs, scope rules, and the per-object diagnostics list. */
#include "istio/object.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/jsonx.h"

static const struct {
	const char *kind;
	const char *group;
	const char *versions[3];
	enum istio_kind id;
} kinds[] = {
	{ "AuthorizationPolicy", "security.istio.io", { "v1", "v1beta1" }, ISTIO_KIND_AUTHORIZATION_POLICY },
	{ "PeerAuthentication", "security.istio.io", { "v1", "v1beta1" }, ISTIO_KIND_PEER_AUTHENTICATION },
	{ "Telemetry", "telemetry.istio.io", { "v1", "v1alpha1" }, ISTIO_KIND_TELEMETRY },
	{ "HTTPRoute", "gateway.networking.k8s.io", { "v1", "v1beta1" }, ISTIO_KIND_HTTP_ROUTE },
};

const char *istio_kind_str(enum istio_kind k)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (kinds[i].id == k)
			return kinds[i].kind;
	return "other";
}

/* The kinds[] entry of kind, or -1. */
static int kind_index(const char *kind)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(kinds[i].kind, kind) == 0)
			return (int)i;
	return -1;
}

static bool version_of(int k, const char *group, size_t glen, const char *version)
{
	if (strlen(kinds[k].group) != glen || strncmp(kinds[k].group, group, glen) != 0)
		return false;
	for (int v = 0; kinds[k].versions[v]; v++)
		if (strcmp(kinds[k].versions[v], version) == 0)
			return true;
	return false;
}

bool istio_api_version_known(const char *api_version, const char *kind)
{
	const char *slash = strchr(api_version, '/');
	int k = kind_index(kind);
	return k >= 0 && slash && version_of(k, api_version, (size_t)(slash - api_version), slash + 1);
}

const char *istio_diag_kind_str(enum istio_diag_kind k)
{
	switch (k) {
	case ISTIO_DIAG_REFUSED: return "refused";
	case ISTIO_DIAG_CONVERTED: return "converted";
	case ISTIO_DIAG_UNSUPPORTED: return "unsupported";
	case ISTIO_DIAG_IGNORED: return "ignored";
	}
	return "?";
}

const char *istio_severity_str(enum istio_severity s)
{
	switch (s) {
	case ISTIO_SEV_ERROR: return "error";
	case ISTIO_SEV_WARNING: return "warning";
	case ISTIO_SEV_INFO: return "info";
	}
	return "?";
}

const char *istio_scope_str(enum istio_scope s)
{
	switch (s) {
	case ISTIO_SCOPE_MESH: return "mesh";
	case ISTIO_SCOPE_NAMESPACE: return "namespace";
	case ISTIO_SCOPE_SELECTOR: return "selector";
	case ISTIO_SCOPE_TARGET_REFS: return "targetRefs";
	}
	return "?";
}

int istio_object_diag(struct istio_object *o, enum istio_diag_kind kind, const char *path,
		      const char *fmt, ...)
{
	struct istio_diag *d;
	va_list ap;
	int n;

	if (o->ndiags >= ISTIO_MAX_DIAGS) {
		o->ndiags_dropped++;
		return 0;
	}
	d = &o->diags[o->ndiags];
	d->kind = kind;
	d->severity = kind == ISTIO_DIAG_REFUSED ? ISTIO_SEV_ERROR :
		      kind == ISTIO_DIAG_IGNORED ? ISTIO_SEV_INFO : ISTIO_SEV_WARNING;
	d->path = strdup(path ? path : "");
	va_start(ap, fmt);
	n = vasprintf(&d->message, fmt, ap);
	va_end(ap);
	if (n < 0)
		d->message = NULL;
	if (!d->path || !d->message) {
		free(d->path);
		free(d->message);
		return -ENOMEM;
	}
	o->ndiags++;
	return 0;
}

json_t *istio_object_diags_json(const struct istio_object *o)
{
	json_t *arr = json_array();
	for (int i = 0; arr && i < o->ndiags; i++) {
		const struct istio_diag *d = &o->diags[i];
		if (json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s}",
							 "severity", istio_severity_str(d->severity),
							 "kind", istio_diag_kind_str(d->kind),
							 "path", d->path, "message", d->message))) {
			json_decref(arr);
			return NULL;
		}
	}
	if (arr && o->ndiags_dropped &&
	    json_array_append_new(arr, json_pack("{s:s, s:i}", "kind", "dropped",
						 "count", o->ndiags_dropped))) {
		json_decref(arr);
		return NULL;
	}
	return arr;
}

static int digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++, (*p)++) {
		if (**p < '0' || **p > '9')
			return -EINVAL;
		v = v * 10 + (**p - '0');
	}
	*out = v;
	return 0;
}

static int expect(const char **p, const char *set)
{
	if (!**p || !strchr(set, **p))
		return -EINVAL;
	(*p)++;
	return 0;
}

int istio_parse_time(const char *s, int64_t *out)
{
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	struct tm tm = { 0 };
	int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
	const char *p = s;
	time_t t;

	if (digits(&p, 4, &y) || expect(&p, "-") || digits(&p, 2, &mo) || expect(&p, "-") ||
	    digits(&p, 2, &d) || expect(&p, "Tt") || digits(&p, 2, &h) || expect(&p, ":") ||
	    digits(&p, 2, &mi) || expect(&p, ":") || digits(&p, 2, &sec))
		return -EINVAL;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return -EINVAL;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p == '-' ? -1 : 1;
		p++;
		if (digits(&p, 2, &oh) || expect(&p, ":") || digits(&p, 2, &om) || oh > 23 || om > 59)
			return -EINVAL;
	} else {
		return -EINVAL;
	}
	if (*p || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
		return -EINVAL;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	*out = (int64_t)t - sign * (oh * 3600 + om * 60);
	return 0;
}

/* A string map (labels, annotations) into a label array; at most max entries, each value a
 * string of at most 63 (labels) or any length (annotations: non-strings are skipped). */
static int string_map(struct jx *j, const json_t *obj, const char *key, int max, bool strict,
		      struct label **out, int *nout)
{
	json_t *map, *v;
	const char *k;
	int n = 0, err;

	err = jx_object(j, obj, key, &map);
	if (err || !map)
		return err;
	if (json_object_size(map) > (size_t)max)
		return jx_fail(j, key, "has %zu entries; the bound is %d", json_object_size(map), max);
	*out = calloc(json_object_size(map) + 1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	json_object_foreach((json_t *)map, k, v) {
		if (!json_is_string(v)) {
			if (!strict)
				continue;
			size_t saved = jx_enter(j, "%s", key);
			err = jx_fail(j, k, "must be a string");
			jx_leave(j, saved);
			return err;
		}
		if (labels_add(*out, &n, k, json_string_value(v)))
			return -ENOMEM;
		*nout = n;
	}
	return 0;
}

static int target_ref(struct jx *j, const json_t *ref, struct istio_target_ref *t)
{
	static const char *const keys[] = { "group", "kind", "name", "namespace", NULL };
	int err;

	if (!json_is_object(ref))
		return jx_fail(j, NULL, "must be an object");
	err = jx_keys(j, ref, keys);
	if (!err)
		err = jx_str(j, ref, "kind", true, ISTIO_MAX_NAME, &t->kind);
	if (!err)
		err = jx_str(j, ref, "name", true, ISTIO_MAX_NAME, &t->name);
	if (!err)
		err = jx_str(j, ref, "namespace", false, ISTIO_MAX_NAME, &t->namespace);
	if (!err) {
		/* "" is the core group (Service): kubectl prints it as "" or leaves it out */
		json_t *g = json_object_get(ref, "group");
		if (g && !json_is_null(g) && !json_is_string(g))
			return jx_fail(j, "group", "must be a string");
		t->group = strdup(g && json_is_string(g) ? json_string_value(g) : "");
		if (!t->group)
			err = -ENOMEM;
	}
	return err;
}

static int parse_target_refs(struct jx *j, const json_t *spec, struct istio_object *o)
{
	json_t *one, *many, *v;
	size_t i;
	int err;

	err = jx_object(j, spec, "targetRef", &one);
	if (!err)
		err = jx_array(j, spec, "targetRefs", ISTIO_MAX_TARGET_REFS, &many);
	if (err)
		return err;
	if (one && many && json_array_size(many))
		return jx_fail(j, "targetRef", "must not be set together with targetRefs");
	o->target_refs = calloc(ISTIO_MAX_TARGET_REFS, sizeof(*o->target_refs));
	if (!o->target_refs)
		return -ENOMEM;
	if (one) {
		size_t saved = jx_enter(j, "targetRef");
		o->ntarget_refs = 1;
		err = target_ref(j, one, &o->target_refs[0]);
		jx_leave(j, saved);
		return err;
	}
	json_array_foreach(many, i, v) {
		size_t saved = jx_enter(j, "targetRefs[%zu]", i);
		o->ntarget_refs = (int)i + 1;
		err = target_ref(j, v, &o->target_refs[i]);
		jx_leave(j, saved);
		if (err)
			return err;
	}
	return 0;
}

static int parse_selector(struct jx *j, const json_t *spec, struct istio_object *o)
{
	static const char *const keys[] = { "matchLabels", NULL };
	json_t *sel;
	size_t saved;
	int err = jx_object(j, spec, "selector", &sel);

	if (err || !sel)
		return err;
	o->has_selector = true;
	saved = jx_enter(j, "selector");
	err = jx_keys(j, sel, keys);
	if (!err)
		err = string_map(j, sel, "matchLabels", ISTIO_MAX_LABELS, true, &o->selector, &o->nselector);
	jx_leave(j, saved);
	return err;
}

static int parse_metadata(struct jx *j, const json_t *json, struct istio_object *o)
{
	json_t *md, *ts;
	size_t saved;
	int err = jx_object(j, json, "metadata", &md);

	if (err)
		return err;
	if (!md)
		return jx_fail(j, "metadata", "missing");
	saved = jx_enter(j, "metadata");
	err = jx_str(j, md, "name", true, ISTIO_MAX_NAME, &o->name);
	if (!err)
		err = jx_str(j, md, "namespace", true, ISTIO_MAX_NAME, &o->namespace);
	if (err)
		goto out;
	ts = json_object_get(md, "creationTimestamp");
	if (ts && !json_is_null(ts)) {
		if (!json_is_string(ts) || istio_parse_time(json_string_value(ts), &o->created)) {
			err = jx_fail(j, "creationTimestamp", "must be an RFC 3339 time (2024-05-01T10:00:00Z)");
			goto out;
		}
		o->has_created = true;
	}
	ts = json_object_get(md, "generation");
	if (ts && !json_is_null(ts)) {
		if (!json_is_integer(ts) || json_integer_value(ts) < 0) {
			err = jx_fail(j, "generation", "must be a non-negative integer");
			goto out;
		}
		o->generation = json_integer_value(ts);
	}
	err = string_map(j, md, "annotations", 4096, false, &o->annotations, &o->nannotations);
	if (!err) {
		const char *dr = labels_get(o->annotations, o->nannotations, "istio.io/dry-run");
		/* read as Go's strconv.ParseBool, as istiod reads it; anything else is false */
		static const char *const yes[] = { "1", "t", "T", "true", "TRUE", "True" };
		for (size_t i = 0; dr && i < sizeof(yes) / sizeof(yes[0]); i++)
			o->dry_run |= strcmp(dr, yes[i]) == 0;
	}
out:
	jx_leave(j, saved);
	return err;
}

/* A string member for an error prefix, "?" when it is not one. */
static const char *peek(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);
	return json_is_string(v) && json_string_length(v) <= ISTIO_MAX_NAME ? json_string_value(v) : "?";
}

int istio_object_parse(const json_t *json, struct istio_object *o, char *err, size_t errlen)
{
	static const char *const keys[] = { "apiVersion", "kind", "metadata", "spec", "status", NULL };
	char prefix[2 * ISTIO_MAX_NAME + 64];
	const char *slash;
	json_t *spec;
	struct jx j;
	int rc, k;

	memset(o, 0, sizeof(*o));
	jx_init(&j, NULL, err, errlen);
	if (!json_is_object(json))
		return jx_fail(&j, NULL, "an Istio object must be a JSON object");
	rc = jx_str(&j, json, "kind", true, 64, &o->kind_name);
	if (!rc)
		rc = jx_str(&j, json, "apiVersion", true, 128, &o->api_version);
	if (rc)
		return rc;
	/* From here on, errors name the object ("AuthorizationPolicy ns/name: spec...") */
	snprintf(prefix, sizeof(prefix), "%s %s/%s", o->kind_name,
		 peek(json_object_get(json, "metadata"), "namespace"),
		 peek(json_object_get(json, "metadata"), "name"));
	jx_init(&j, prefix, err, errlen);
	rc = parse_metadata(&j, json, o);
	if (rc)
		return rc;
	slash = strchr(o->api_version, '/');
	if (!slash || slash == o->api_version || !slash[1] || strchr(slash + 1, '/'))
		return jx_fail(&j, "apiVersion", "'%s' is not GROUP/VERSION", o->api_version);
	o->group = strndup(o->api_version, (size_t)(slash - o->api_version));
	o->version = strdup(slash + 1);
	if (!o->group || !o->version)
		return -ENOMEM;
	k = kind_index(o->kind_name);
	if (k >= 0) {
		if (!version_of(k, o->group, strlen(o->group), o->version))
			return jx_fail(&j, "apiVersion", "'%s' is not a known version of %s (%s/%s or /%s)",
				       o->api_version, o->kind_name, kinds[k].group,
				       kinds[k].versions[0], kinds[k].versions[1]);
		o->kind = kinds[k].id;
	}
	rc = jx_keys(&j, json, keys);
	if (!rc)
		rc = jx_object(&j, json, "spec", &spec);
	if (rc)
		return rc;
	o->spec = spec;
	if (o->kind == ISTIO_KIND_OTHER)
		return 0;
	jx_enter(&j, "spec");
	rc = parse_selector(&j, spec, o);
	if (!rc)
		rc = parse_target_refs(&j, spec, o);
	if (!rc && o->has_selector && o->nselector && o->ntarget_refs)
		rc = jx_fail(&j, "selector", "must not be set together with targetRef(s)");
	return rc;
}

void istio_object_fini(struct istio_object *o)
{
	if (!o)
		return;
	free(o->kind_name);
	free(o->api_version);
	free(o->group);
	free(o->version);
	free(o->name);
	free(o->namespace);
	labels_free(o->annotations, o->nannotations);
	labels_free(o->selector, o->nselector);
	for (int i = 0; o->target_refs && i < o->ntarget_refs; i++) {
		free(o->target_refs[i].group);
		free(o->target_refs[i].kind);
		free(o->target_refs[i].name);
		free(o->target_refs[i].namespace);
	}
	free(o->target_refs);
	for (int i = 0; i < o->ndiags; i++) {
		free(o->diags[i].path);
		free(o->diags[i].message);
	}
	memset(o, 0, sizeof(*o));
}

enum istio_scope istio_object_scope(const struct istio_object *o, const char *root_ns)
{
	if (o->ntarget_refs)
		return ISTIO_SCOPE_TARGET_REFS;
	if (o->nselector)
		return ISTIO_SCOPE_SELECTOR;
	if (o->namespace && strcmp(o->namespace, root_ns ? root_ns : ISTIO_DEFAULT_ROOT_NS) == 0)
		return ISTIO_SCOPE_MESH;
	return ISTIO_SCOPE_NAMESPACE;
}

bool istio_object_selects(const struct istio_object *o, const char *root_ns, const char *ns,
			  const struct label *labels, int nlabels)
{
	bool in_root = strcmp(o->namespace, root_ns ? root_ns : ISTIO_DEFAULT_ROOT_NS) == 0;

	switch (istio_object_scope(o, root_ns)) {
	case ISTIO_SCOPE_MESH:
		return true;
	case ISTIO_SCOPE_NAMESPACE:
		return ns && strcmp(ns, o->namespace) == 0;
	case ISTIO_SCOPE_SELECTOR:
		return (in_root || (ns && strcmp(ns, o->namespace) == 0)) &&
		       labels_subset(o->selector, o->nselector, labels, nlabels);
	case ISTIO_SCOPE_TARGET_REFS:
		break;
	}
	return false;
}

bool istio_object_targets(const struct istio_object *o, const char *group, const char *kind,
			  const char *ns, const char *name)
{
	for (int i = 0; i < o->ntarget_refs; i++) {
		const struct istio_target_ref *t = &o->target_refs[i];
		const char *tns = t->namespace ? t->namespace : o->namespace;
		if (!t->group || !t->kind || !t->name)
			continue;	/* half-read (refused object) */
		if ((!group || strcmp(group, t->group) == 0) && strcmp(kind, t->kind) == 0 &&
		    strcmp(ns, tns) == 0 && strcmp(name, t->name) == 0)
			return true;
	}
	return false;
}

int istio_object_age_cmp(const struct istio_object *a, const struct istio_object *b)
{
	int c;
	if (a->created != b->created)
		return a->created < b->created ? -1 : 1;
	c = strcmp(a->namespace, b->namespace);
	return c ? c : strcmp(a->name, b->name);
}

json_t *istio_object_to_json(const struct istio_object *o, const char *root_ns)
{
	json_t *j = json_pack("{s:s?, s:s?, s:s?, s:s?, s:I, s:b, s:s}",
			      "kind", o->kind_name, "apiVersion", o->api_version,
			      "namespace", o->namespace, "name", o->name,
			      "generation", (json_int_t)o->generation, "dry_run", o->dry_run,
			      "scope", istio_scope_str(istio_object_scope(o, root_ns)));
	json_t *refs = json_array();

	if (!j || !refs)
		goto fail;
	if (o->has_created) {
		char buf[32];
		time_t t = (time_t)o->created;
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
		if (json_object_set_new(j, "creationTimestamp", json_string(buf)))
			goto fail;
	}
	if (o->has_selector && json_object_set_new(j, "selector", labels_to_json(o->selector, o->nselector)))
		goto fail;
	for (int i = 0; i < o->ntarget_refs; i++) {
		const struct istio_target_ref *t = &o->target_refs[i];
		/* a refused object may hold a half-read ref: its absent parts are left out */
		json_t *r = json_pack("{s:s?, s:s?, s:s?, s:s?}", "group", t->group, "kind", t->kind,
				      "name", t->name, "namespace", t->namespace ? t->namespace : o->namespace);
		if (json_array_append_new(refs, r))
			goto fail;
	}
	if (o->ntarget_refs && json_object_set(j, "targetRefs", refs))
		goto fail;
	json_decref(refs);
	if (json_object_set_new(j, "diagnostics", istio_object_diags_json(o)))
		goto fail_j;
	return j;
fail:
	json_decref(refs);
fail_j:
	json_decref(j);
	return NULL;
}
