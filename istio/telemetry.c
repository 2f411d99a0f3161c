// SPDX-License-Identifier: Apache-2.0
/* Istio tracing settings (istio/telemetry.h): MeshConfig providers and defaults plus the
 * `Telemetry` objects, compiled once per model and resolved per workload as istiod's
 * Telemetries.Tracing does: the oldest namespace-wide object of the root namespace, then of
 * the workload's namespace, then the oldest selecting one, merged entry by entry and field by
 * field (customTags replaced whole). A bad object or provider is left out with a diagnostic. */
#include "istio/telemetry.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>	/* isfinite */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "istio/object.h"

#define MODE_CLIENT 1
#define MODE_SERVER 2

/* One `spec.tracing[]` entry; has_* says which fields it sets. */
struct tm_entry {
	int modes;
	const struct telemetry_provider *provider;	/* NULL: not set */
	bool has_disabled, disabled;
	bool has_sampling;
	double sampling;
	bool has_tags;
	struct telemetry_tag *tags;
	int ntags;
};

struct tm_obj {
	struct istio_object obj;	/* the envelope (istio/object.h) */
	char *from;			/* "Telemetry ns/name" */
	struct tm_entry *entries;
	int nentries;
};

struct telemetry_set {
	char *root_ns;
	struct telemetry_provider *providers;
	int nproviders;
	char **bad_providers;		/* names of providers left out (for clearer diagnostics) */
	int nbad;
	const struct telemetry_provider *default_provider;
	bool enable_tracing;
	double sampling;		/* defaultConfig.tracing.sampling, or Istio's default */
	const char *sampling_from;
	struct tm_obj *objs;		/* valid Telemetry objects, oldest first */
	int nobjs;
	char **diags;
	int ndiags, diags_dropped;
};

static const char FROM_MESH[] = "mesh_config";
static const char FROM_DEFAULT[] = "default";

static void diag(struct telemetry_set *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void diag(struct telemetry_set *s, const char *fmt, ...)
{
	va_list ap;
	char *line = NULL;

	if (s->ndiags >= TELEMETRY_MAX_DIAGS) {
		s->diags_dropped++;
		return;
	}
	va_start(ap, fmt);
	if (vasprintf(&line, fmt, ap) < 0)
		line = NULL;
	va_end(ap);
	if (line)
		s->diags[s->ndiags++] = line;
}

/* ------------------------------------------------------------ MeshConfig ---- */

/* A percentage in 0..100 to Envoy's precision, 0.01 (round half up). */
static double hundredths(double v)
{
	return (double)(int64_t)(v * 100 + 0.5) / 100;
}

/* A protobuf-JSON / Go duration: "10s", "1.5s", "250ms", "1m". -1 when malformed. */
static int64_t duration_ms(const char *v)
{
	char *end;
	double x;

	if (!v || !*v || !(isdigit((unsigned char)*v) || *v == '.'))
		return -1;
	errno = 0;
	x = strtod(v, &end);
	if (errno || !isfinite(x) || x < 0)
		return -1;
	if (strcmp(end, "ms") == 0)
		;
	else if (strcmp(end, "s") == 0)
		x *= 1000;
	else if (strcmp(end, "m") == 0)
		x *= 60000;
	else if (strcmp(end, "h") == 0)
		x *= 3600000;
	else
		return -1;
	return x > 86400000.0 ? -1 : (int64_t)x;
}

static bool host_ok(const char *h)
{
	size_t n = strlen(h);
	if (!n || n > 253)
		return false;
	for (const char *c = h; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '.' && *c != '-' && *c != ':')
			return false;
	return h[0] != '.' && h[0] != '-';
}

static void provider_fini(struct telemetry_provider *p)
{
	free(p->name);
	free(p->service);
	free(p->host);
	free(p->path);
	free(p->endpoint);
	for (int i = 0; i < p->nheaders; i++) {
		free(p->headers[i].name);
		free(p->headers[i].value);
	}
	free(p->headers);
	memset(p, 0, sizeof(*p));
}

/* [{name, value}] into p->headers. A message (static) on bad input, NULL when fine. */
static const char *load_headers(struct telemetry_provider *p, const json_t *arr)
{
	size_t i;
	json_t *h;

	if (!arr)
		return NULL;
	if (!json_is_array(arr))
		return "is not a list";
	if (json_array_size(arr) > TELEMETRY_MAX_HEADERS)
		return "has too many entries";
	p->headers = calloc(json_array_size(arr) + 1, sizeof(*p->headers));
	if (!p->headers)
		return "out of memory";
	json_array_foreach(arr, i, h) {
		const char *n = json_string_value(json_object_get(h, "name"));
		const char *v = json_string_value(json_object_get(h, "value"));
		if (!n || !*n || !v)
			return "has an entry without a string name and value";
		p->headers[p->nheaders].name = strdup(n);
		p->headers[p->nheaders].value = strdup(v);
		p->nheaders++;
		if (!p->headers[p->nheaders - 1].name || !p->headers[p->nheaders - 1].value)
			return "out of memory";
	}
	return NULL;
}

/* One extensionProviders[] entry of type opentelemetry. 0, or -EINVAL with a diagnostic. */
static int load_provider(struct telemetry_set *s, size_t idx, const char *name, const json_t *o,
			 struct telemetry_provider *p)
{
	const char *svc = json_string_value(json_object_get(o, "service"));
	const json_t *port = json_object_get(o, "port");
	const json_t *http = json_object_get(o, "http"), *grpc = json_object_get(o, "grpc");
	const char *slash, *why, *field;
	const char *path = NULL, *timeout = NULL;
	int64_t ms = 0;

	memset(p, 0, sizeof(*p));
	if (!svc || !*svc) {
		field = "service";
		why = "is missing";
		goto bad;
	}
	slash = strchr(svc, '/');
	if ((slash && (slash == svc || strchr(slash + 1, '/'))) || !host_ok(slash ? slash + 1 : svc)) {
		field = "service";
		why = "is not 'host' or 'namespace/host'";
		goto bad;
	}
	if (!json_is_integer(port) || json_integer_value(port) < 1 || json_integer_value(port) > 65535) {
		field = "port";
		why = "must be a number in 1..65535";
		goto bad;
	}
	if (http && !json_is_object(http)) {
		field = "http";
		why = "is not an object";
		goto bad;
	}
	if (grpc && !json_is_object(grpc)) {
		field = "grpc";
		why = "is not an object";
		goto bad;
	}
	field = http ? "http.headers" : "grpc.initialMetadata";
	if ((why = load_headers(p, json_object_get(http ? http : grpc, http ? "headers" : "initialMetadata"))))
		goto bad;
	if (http) {
		path = json_string_value(json_object_get(http, "path"));
		if (json_object_get(http, "path") && !path) {
			field = "http.path";
			why = "is not a string";
			goto bad;
		}
	}
	if (http || grpc) {
		const json_t *t = json_object_get(http ? http : grpc, "timeout");
		timeout = json_string_value(t);
		if (t && (ms = duration_ms(timeout)) < 0) {
			field = http ? "http.timeout" : "grpc.timeout";
			why = "is not a duration such as \"10s\"";
			goto bad;
		}
	}
	p->name = strdup(name);
	p->service = strdup(svc);
	p->host = strdup(slash ? slash + 1 : svc);
	p->port = (uint16_t)json_integer_value(port);
	p->http = http != NULL;
	p->timeout_ms = (uint32_t)ms;
	if (http && asprintf(&p->path, "%s%s", path && *path == '/' ? "" : "/",
			     path && *path ? path : "v1/traces") < 0)
		p->path = NULL;
	bool v6 = strchr(p->host ? p->host : "", ':') != NULL;
	if (!p->name || !p->service || !p->host || (http && !p->path) ||
	    asprintf(&p->endpoint, "http://%s%s%s:%u%s", v6 ? "[" : "", p->host, v6 ? "]" : "",
		     p->port, p->path ? p->path : "") < 0) {
		p->endpoint = NULL;
		provider_fini(p);
		return -ENOMEM;
	}
	return 0;
bad:
	diag(s, "mesh_config: extensionProviders[%zu] (%s): opentelemetry.%s %s; provider ignored",
	     idx, name, field, why);
	provider_fini(p);
	return -EINVAL;
}

static const struct telemetry_provider *provider_by_name(const struct telemetry_set *s, const char *n)
{
	for (int i = 0; i < s->nproviders; i++)
		if (strcmp(s->providers[i].name, n) == 0)
			return &s->providers[i];
	return NULL;
}

static const char *provider_unknown_why(const struct telemetry_set *s, const char *n)
{
	for (int i = 0; i < s->nbad; i++)
		if (strcmp(s->bad_providers[i], n) == 0)
			return "is not a usable opentelemetry provider";
	return "is not among MeshConfig's extensionProviders";
}

static int load_mesh(struct telemetry_set *s, const json_t *mc)
{
	const json_t *eps = json_object_get(mc, "extensionProviders");
	const json_t *dp = json_object_get(json_object_get(mc, "defaultProviders"), "tracing");
	const json_t *et = json_object_get(mc, "enableTracing");
	const json_t *smp = json_object_get(json_object_get(json_object_get(mc, "defaultConfig"),
							     "tracing"), "sampling");
	size_t i, n = json_array_size(eps);
	json_t *e;

	s->enable_tracing = !json_is_false(et);
	s->sampling = TELEMETRY_DEFAULT_SAMPLING;
	s->sampling_from = FROM_DEFAULT;
	if (smp && !json_is_number(smp)) {
		diag(s, "mesh_config: defaultConfig.tracing.sampling is not a number; Istio's default %.2f applies",
		     TELEMETRY_DEFAULT_SAMPLING);
	} else if (smp) {
		double v = json_number_value(smp);
		/* istiod: 0 means unset, above 100 falls back to the default */
		if (v < 0 || v > 100 || !isfinite(v))
			diag(s, "mesh_config: defaultConfig.tracing.sampling: %g is not in 0..100; "
				"Istio's default %.2f applies", v, TELEMETRY_DEFAULT_SAMPLING);
		else if (v > 0) {
			s->sampling = hundredths(v);
			s->sampling_from = FROM_MESH;
		}
	}
	if (eps && !json_is_array(eps))
		diag(s, "mesh_config: extensionProviders is not a list; ignored");
	s->providers = calloc(MIN(n, TELEMETRY_MAX_PROVIDERS) + 1, sizeof(*s->providers));
	s->bad_providers = calloc(n + 1, sizeof(*s->bad_providers));
	if (!s->providers || !s->bad_providers)
		return -ENOMEM;
	json_array_foreach(eps, i, e) {
		const char *name = json_string_value(json_object_get(e, "name"));
		const json_t *otel = json_object_get(e, "opentelemetry");
		int rc;

		if (!name || !*name) {
			diag(s, "mesh_config: extensionProviders[%zu].name is missing; ignored", i);
			continue;
		}
		if (!otel || s->nproviders >= TELEMETRY_MAX_PROVIDERS ||
		    provider_by_name(s, name)) {
			if (!(s->bad_providers[s->nbad++] = strdup(name)))
				return -ENOMEM;
			if (otel)
				diag(s, "mesh_config: extensionProviders[%zu] (%s): %s; ignored", i, name,
				     s->nproviders >= TELEMETRY_MAX_PROVIDERS ? "too many providers"
									     : "a second provider of that name");
			continue;	/* zipkin, envoyOtelAls, ...: not ambit's to export to */
		}
		rc = load_provider(s, i, name, otel, &s->providers[s->nproviders]);
		if (rc == -ENOMEM)
			return rc;
		if (rc == 0)
			s->nproviders++;
		else if (!(s->bad_providers[s->nbad++] = strdup(name)))
			return -ENOMEM;
	}
	if (dp && !json_is_array(dp))
		diag(s, "mesh_config: defaultProviders.tracing is not a list; ignored");
	json_array_foreach(dp, i, e) {
		const char *name = json_string_value(e);
		const struct telemetry_provider *p = name ? provider_by_name(s, name) : NULL;
		if (p) {
			s->default_provider = p;
			s->providers[p - s->providers].in_use = true;
			break;
		}
		diag(s, "mesh_config: defaultProviders.tracing[%zu]: '%s' %s; skipped", i,
		     name ? name : "?", name ? provider_unknown_why(s, name) : "is not a string");
	}
	return 0;
}

/* ------------------------------------------------------- Telemetry objects ---- */

static void tags_free(struct telemetry_tag *t, int n)
{
	for (int i = 0; t && i < n; i++) {
		free(t[i].name);
		free(t[i].value);
		free(t[i].default_value);
	}
	free(t);
}

static void obj_fini(struct tm_obj *o)
{
	for (int i = 0; i < o->nentries; i++)
		tags_free(o->entries[i].tags, o->entries[i].ntags);
	free(o->entries);
	free(o->from);
	istio_object_fini(&o->obj);
}

/* customTags: {name: {literal: {value}} | {environment: {name, defaultValue}} |
 * {header: {name, defaultValue}}}. A message into why (field path in where), -EINVAL. */
static int load_tags(const json_t *ct, struct tm_entry *e, char *where, size_t wlen,
		     const char **why)
{
	const char *key;
	json_t *v;

	if (!json_is_object(ct)) {
		snprintf(where, wlen, "customTags");
		*why = "is not an object";
		return -EINVAL;
	}
	if (json_object_size(ct) > TELEMETRY_MAX_TAGS) {
		snprintf(where, wlen, "customTags");
		*why = "has too many tags";
		return -EINVAL;
	}
	e->has_tags = true;
	e->tags = calloc(json_object_size(ct) + 1, sizeof(*e->tags));
	if (!e->tags)
		return -ENOMEM;
	json_object_foreach((json_t *)ct, key, v) {
		static const char *const kinds[] = { "literal", "environment", "header" };
		struct telemetry_tag *t = &e->tags[e->ntags];
		const json_t *body = NULL;
		int nkinds = 0;

		snprintf(where, wlen, "customTags.%s", key);
		for (size_t k = 0; k < ARRAY_SIZE(kinds); k++) {
			const json_t *b = json_object_get(v, kinds[k]);
			if (b) {
				nkinds++;
				body = b;
				t->kind = (enum telemetry_tag_kind)k;
			}
		}
		if (!*key || nkinds != 1 || !json_is_object(body)) {
			*why = "needs exactly one of literal, environment or header";
			return -EINVAL;
		}
		const char *val = json_string_value(json_object_get(body, t->kind == TELEMETRY_TAG_LITERAL
									  ? "value" : "name"));
		const json_t *dv = json_object_get(body, "defaultValue");
		if (!val || (t->kind != TELEMETRY_TAG_LITERAL && !*val)) {
			*why = t->kind == TELEMETRY_TAG_LITERAL ? "literal.value is missing"
								 : "needs a name";
			return -EINVAL;
		}
		if (dv && !json_is_string(dv)) {
			*why = "defaultValue is not a string";
			return -EINVAL;
		}
		t->name = strdup(key);
		t->value = strdup(val);
		t->default_value = dv && t->kind != TELEMETRY_TAG_LITERAL ? strdup(json_string_value(dv)) : NULL;
		e->ntags++;
		if (!t->name || !t->value || (dv && t->kind != TELEMETRY_TAG_LITERAL && !t->default_value))
			return -ENOMEM;
	}
	return 0;
}

/* One spec.tracing[] entry. 0; -EINVAL with where/why set; -ENOMEM. */
static int load_entry(struct telemetry_set *s, const struct tm_obj *o, size_t idx, const json_t *t,
		      struct tm_entry *e, char *where, size_t wlen, const char **why)
{
	const json_t *match = json_object_get(t, "match"), *provs = json_object_get(t, "providers");
	const json_t *dis = json_object_get(t, "disableSpanReporting");
	const json_t *pct = json_object_get(t, "randomSamplingPercentage");
	const json_t *ct = json_object_get(t, "customTags");
	size_t i;
	json_t *p;

	e->modes = MODE_CLIENT | MODE_SERVER;
	if (!json_is_object(t)) {
		snprintf(where, wlen, "%s", "");
		*why = "is not an object";
		return -EINVAL;
	}
	if (match) {
		const json_t *mj = json_object_get(match, "mode");
		const char *mode = json_string_value(mj);
		snprintf(where, wlen, "match.mode");
		if (!json_is_object(match) || (mj && !mode)) {
			*why = "is not CLIENT, SERVER or CLIENT_AND_SERVER";
			return -EINVAL;
		}
		if (!mode || strcmp(mode, "CLIENT_AND_SERVER") == 0)
			;
		else if (strcmp(mode, "CLIENT") == 0)
			e->modes = MODE_CLIENT;
		else if (strcmp(mode, "SERVER") == 0)
			e->modes = MODE_SERVER;
		else {
			*why = "is not CLIENT, SERVER or CLIENT_AND_SERVER";
			return -EINVAL;
		}
	}
	if (provs && !json_is_array(provs)) {
		snprintf(where, wlen, "providers");
		*why = "is not a list";
		return -EINVAL;
	}
	json_array_foreach(provs, i, p) {
		const char *name = json_string_value(json_object_get(p, "name"));
		if (name && (e->provider = provider_by_name(s, name)))
			break;
		diag(s, "%s: spec.tracing[%zu].providers[%zu].name: '%s' %s; skipped", o->from, idx,
		     i, name ? name : "?", name ? provider_unknown_why(s, name) : "is missing");
	}
	if (json_array_size(provs) && !e->provider) {
		snprintf(where, wlen, "providers");
		*why = "names no usable provider";
		return -EINVAL;
	}
	if (dis && !json_is_null(dis)) {
		snprintf(where, wlen, "disableSpanReporting");
		if (!json_is_boolean(dis)) {
			*why = "is not true or false";
			return -EINVAL;
		}
		e->has_disabled = true;
		e->disabled = json_is_true(dis);
	}
	if (pct && !json_is_null(pct)) {
		double v = json_number_value(pct);
		snprintf(where, wlen, "randomSamplingPercentage");
		if (!json_is_number(pct) || !isfinite(v) || v < 0 || v > 100) {
			*why = "is not a number in 0..100";
			return -EINVAL;
		}
		e->has_sampling = true;
		e->sampling = hundredths(v);
	}
	if (ct && !json_is_null(ct))
		return load_tags(ct, e, where, wlen, why);
	return 0;
}

/* Compiles r into s->objs[s->nobjs]; a bad one is left out with a diagnostic. 0 or -ENOMEM. */
static int load_telemetry(struct telemetry_set *s, const json_t *r)
{
	struct tm_obj *o = &s->objs[s->nobjs];
	const json_t *tr;
	char where[256];
	const char *why = NULL;
	size_t i;
	json_t *t;
	int rc;

	memset(o, 0, sizeof(*o));
	rc = istio_object_parse(r, &o->obj, where, sizeof(where));
	if (rc) {
		if (rc == -EINVAL)
			diag(s, "%s; this Telemetry is ignored", where);
		obj_fini(o);
		return rc == -ENOMEM ? rc : 0;
	}
	if (asprintf(&o->from, "Telemetry %s/%s", o->obj.namespace, o->obj.name) < 0) {
		o->from = NULL;
		obj_fini(o);
		return -ENOMEM;
	}
	if (o->obj.has_selector && o->obj.ntarget_refs) {
		snprintf(where, sizeof(where), "spec");
		why = "has both selector and targetRefs";
		rc = -EINVAL;
		goto done;
	}
	tr = json_object_get(o->obj.spec, "tracing");
	if (tr && !json_is_array(tr)) {
		snprintf(where, sizeof(where), "spec.tracing");
		why = "is not a list";
		rc = -EINVAL;
		goto done;
	}
	o->entries = calloc(json_array_size(tr) + 1, sizeof(*o->entries));
	if (!o->entries) {
		rc = -ENOMEM;
		goto done;
	}
	json_array_foreach(tr, i, t) {
		char field[96] = "";
		rc = load_entry(s, o, i, t, &o->entries[o->nentries++], field, sizeof(field), &why);
		if (rc) {
			snprintf(where, sizeof(where), "spec.tracing[%zu]%s%s", i, *field ? "." : "", field);
			break;
		}
	}
done:
	if (rc == -EINVAL)
		diag(s, "%s: %s %s; this Telemetry is ignored", o->from, where, why);
	if (rc) {
		obj_fini(o);
		return rc == -ENOMEM ? rc : 0;
	}
	for (int k = 0; k < o->nentries; k++)
		if (o->entries[k].provider)
			s->providers[o->entries[k].provider - s->providers].in_use = true;
	s->nobjs++;
	return 0;
}

static int obj_cmp(const void *a, const void *b)
{
	return istio_object_age_cmp(&((const struct tm_obj *)a)->obj, &((const struct tm_obj *)b)->obj);
}

static bool is_telemetry(const json_t *r)
{
	const char *kind = json_string_value(json_object_get(r, "kind"));
	const char *api = json_string_value(json_object_get(r, "apiVersion"));
	return kind && api && strcmp(kind, "Telemetry") == 0 &&
	       (strcmp(api, "telemetry.istio.io/v1") == 0 ||
		strcmp(api, "telemetry.istio.io/v1alpha1") == 0);
}

static int load_objects(struct telemetry_set *s, const json_t *resources)
{
	size_t i;
	json_t *r;

	s->objs = calloc(json_array_size(resources) + 1, sizeof(*s->objs));
	if (!s->objs)
		return -ENOMEM;
	json_array_foreach(resources, i, r) {
		int rc;
		if (is_telemetry(r) && (rc = load_telemetry(s, r)))
			return rc;
	}
	qsort(s->objs, (size_t)s->nobjs, sizeof(*s->objs), obj_cmp);
	return 0;
}

/* ------------------------------------------------------------------ set ---- */

struct telemetry_set *telemetry_set_new(const json_t *mesh_config, const json_t *resources,
					const char *root_ns)
{
	struct telemetry_set *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->root_ns = strdup(root_ns && *root_ns ? root_ns : "istio-system");
	s->diags = calloc(TELEMETRY_MAX_DIAGS, sizeof(*s->diags));
	if (!s->root_ns || !s->diags || load_mesh(s, json_is_object(mesh_config) ? mesh_config : NULL) ||
	    load_objects(s, json_is_array(resources) ? resources : NULL)) {
		telemetry_set_free(s);
		errno = ENOMEM;
		return NULL;
	}
	return s;
}

void telemetry_set_free(struct telemetry_set *s)
{
	if (!s)
		return;
	for (int i = 0; s->providers && i < s->nproviders; i++)
		provider_fini(&s->providers[i]);
	free(s->providers);
	for (int i = 0; i < s->nbad; i++)
		free(s->bad_providers[i]);
	free(s->bad_providers);
	for (int i = 0; i < s->nobjs; i++)
		obj_fini(&s->objs[i]);
	free(s->objs);
	for (int i = 0; i < s->ndiags; i++)
		free(s->diags[i]);
	free(s->diags);
	free(s->root_ns);
	free(s);
}

int telemetry_set_ndiags(const struct telemetry_set *s)
{
	return s ? s->ndiags : 0;
}

const char *telemetry_set_diag(const struct telemetry_set *s, int i)
{
	return s && i >= 0 && i < s->ndiags ? s->diags[i] : NULL;
}

int telemetry_set_nproviders(const struct telemetry_set *s)
{
	return s ? s->nproviders : 0;
}

const struct telemetry_provider *telemetry_set_provider(const struct telemetry_set *s, int i)
{
	return s && i >= 0 && i < s->nproviders ? &s->providers[i] : NULL;
}

bool telemetry_set_any(const struct telemetry_set *s)
{
	if (!s)
		return false;
	if (s->default_provider || !s->enable_tracing)
		return true;
	for (int i = 0; i < s->nobjs; i++)
		if (s->objs[i].nentries)
			return true;
	return false;
}

/* ------------------------------------------------------------ resolution ---- */

/* The oldest object of ns that selects no workload (no matchLabels, no targetRefs). */
static const struct tm_obj *namespace_wide(const struct telemetry_set *s, const char *ns)
{
	for (int i = 0; i < s->nobjs; i++) {
		const struct istio_object *o = &s->objs[i].obj;
		enum istio_scope sc = istio_object_scope(o, s->root_ns);
		if (strcmp(o->namespace, ns) == 0 &&
		    (sc == ISTIO_SCOPE_MESH || sc == ISTIO_SCOPE_NAMESPACE))
			return &s->objs[i];
	}
	return NULL;
}

/* The oldest object of w's own namespace (istiod looks nowhere else for this level) whose
 * selector (a workload) or targetRefs (a waypoint's Gateway) picks w. */
static const struct tm_obj *workload_level(const struct telemetry_set *s,
					   const struct telemetry_subject *w)
{
	for (int i = 0; i < s->nobjs; i++) {
		const struct istio_object *o = &s->objs[i].obj;
		enum istio_scope sc = istio_object_scope(o, s->root_ns);
		if (strcmp(o->namespace, w->namespace) != 0)
			continue;
		if (!w->waypoint && sc == ISTIO_SCOPE_SELECTOR &&
		    labels_subset(o->selector, o->nselector, w->labels, w->nlabels))
			return &s->objs[i];
		if (w->waypoint && w->name && sc == ISTIO_SCOPE_TARGET_REFS &&
		    istio_object_targets(o, "gateway.networking.k8s.io", "Gateway", w->namespace, w->name))
			return &s->objs[i];
	}
	return NULL;
}

static void apply(struct telemetry_mode *m, const struct tm_entry *e, const char *from)
{
	if (e->provider) {
		m->provider = e->provider;
		m->provider_from = from;
	}
	if (e->has_disabled) {
		m->disabled = e->disabled;
		m->disabled_from = from;
	}
	if (e->has_tags) {
		m->tags = e->tags;
		m->ntags = e->ntags;
		m->tags_from = from;
	}
	if (e->has_sampling) {
		m->sampling = e->sampling;
		m->sampling_from = from;
	}
}

void telemetry_resolve(const struct telemetry_set *s, const struct telemetry_subject *w,
		       struct telemetry_effective *out)
{
	const struct tm_obj *levels[3] = { NULL, NULL, NULL };
	int nentries = 0;

	memset(out, 0, sizeof(*out));
	if (!s || !w || !w->namespace)
		return;
	levels[0] = namespace_wide(s, s->root_ns);
	if (strcmp(w->namespace, s->root_ns) != 0)
		levels[1] = namespace_wide(s, w->namespace);
	levels[2] = workload_level(s, w);
	for (int l = 0; l < 3; l++)
		nentries += levels[l] ? levels[l]->nentries : 0;
	if (!nentries && !s->default_provider) {
		/* istiod's legacy path: MeshConfig enableTracing, else the proxy's own settings */
		out->mesh_disabled = !s->enable_tracing;
		return;
	}
	out->configured = true;
	struct telemetry_mode base = {
		.provider = s->default_provider,
		.provider_from = s->default_provider ? FROM_MESH : NULL,
		.disabled_from = FROM_DEFAULT,
		.sampling = s->sampling,
		.sampling_from = s->sampling_from,
		.tags_from = NULL,
	};
	out->client = out->server = base;
	for (int l = 0; l < 3; l++) {
		for (int i = 0; levels[l] && i < levels[l]->nentries; i++) {
			const struct tm_entry *e = &levels[l]->entries[i];
			if (e->modes & MODE_CLIENT)
				apply(&out->client, e, levels[l]->from);
			if (e->modes & MODE_SERVER)
				apply(&out->server, e, levels[l]->from);
		}
	}
	/* no provider: reporting is off (istiod disables the spec) */
	if (!out->client.provider) {
		out->client.disabled = true;
		out->client.disabled_from = "no provider";
	}
	if (!out->server.provider) {
		out->server.disabled = true;
		out->server.disabled_from = "no provider";
	}
}

const char *telemetry_tag_kind_str(enum telemetry_tag_kind k)
{
	return k == TELEMETRY_TAG_LITERAL ? "literal" : k == TELEMETRY_TAG_ENVIRONMENT ? "environment"
										  : "header";
}

json_t *telemetry_mode_json(const struct telemetry_mode *m)
{
	json_t *tags = json_object(), *from;
	const struct telemetry_provider *p = m->provider;

	for (int i = 0; tags && i < m->ntags; i++) {
		const struct telemetry_tag *t = &m->tags[i];
		json_t *o = json_pack("{s:s}", telemetry_tag_kind_str(t->kind), t->value);
		if (o && t->default_value)
			json_object_set_new(o, "default", json_string(t->default_value));
		json_object_set_new(tags, t->name, o);
	}
	from = json_pack("{s:s?,s:s?,s:s?,s:s?}", "provider", m->provider_from, "disabled",
			 m->disabled_from, "sampling", m->sampling_from, "custom_tags", m->tags_from);
	return json_pack("{s:s?,s:s?,s:s?,s:b,s:f,s:o*,s:o*}", "provider", p ? p->name : NULL,
			 "endpoint", p ? p->endpoint : NULL, "protocol",
			 p ? (p->http ? "http/protobuf" : "grpc") : NULL, "disabled", m->disabled,
			 "sampling", m->sampling, "custom_tags", tags, "from", from);
}

bool telemetry_mode_equal(const struct telemetry_mode *a, const struct telemetry_mode *b)
{
	return a->provider == b->provider && a->disabled == b->disabled &&
	       a->sampling == b->sampling && a->tags == b->tags && a->ntags == b->ntags;
}
