// SPDX-License-Identifier: Apache-2.0
/* Kubernetes discovery: one thread per resource lists then watches the API (the reflector
 * pattern of client-go), keeping a compact record per object; a builder thread turns the
 * records into the workloads-file JSON after a quiet period and publishes the model. */
#include "agent/kube.h"
#include "agent/workloads.h"
#include "common/httpc.h"
#include "common/labels.h"
#include "common/log.h"
#include "common/util.h"
#include "common/yamljson.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define KUBE_SA_DIR	    "/var/run/secrets/kubernetes.io/serviceaccount"
#define KUBE_MAX_LINE	    (8u << 20)	/* one watch event; etcd caps an object near 1.5 MiB */
#define KUBE_MAX_PAGE	    (64u << 20)	/* one list page */
#define KUBE_MAX_TOKEN	    (64u << 10)
#define KUBE_MAX_NAMED_PORT 16		/* named container ports kept per pod */
#define KUBE_LIST_TIMEOUT_MS 60000

#define LBL_MODE	   "istio.io/dataplane-mode"
#define LBL_WAYPOINT	   "istio.io/use-waypoint"
#define LBL_WAYPOINT_NS	   "istio.io/use-waypoint-namespace"
#define LBL_CANONICAL	   "service.istio.io/canonical-name"
#define LBL_K8S_NAME	   "app.kubernetes.io/name"
#define LBL_TEMPLATE_HASH  "pod-template-hash"

/* ---- compact records: only what the model needs, never the raw JSON ---- */


struct knamed_port {
	char *name;
	uint16_t port;
};

struct kpod {
	char *service_account;
	char *node;
	char *canonical;
	char **ips;
	int nips;
	struct label *labels;
	int nlabels;
	struct knamed_port *named;	/* container ports with a name (Service targetPort) */
	int nnamed;
};

struct kport {
	uint16_t port;
	uint16_t target;	/* 0 when target_name is set */
	char *target_name;
	char *name;
	char *app_protocol;	/* appProtocol */
};

struct ksvc {
	char **ips;
	int nips;
	struct label *selector;
	int nselector;
	struct kport *ports;
	int nports;
	char *wp_name;	/* istio.io/use-waypoint */
	char *wp_ns;	/* istio.io/use-waypoint-namespace */
};

struct kns {
	char *mode;	/* istio.io/dataplane-mode */
	char *wp_name;
	char *wp_ns;
};

struct knode {
	char *ip;	/* the first InternalIP, NULL when the node has none */
};

struct kobj {
	struct kobj *next;	/* hash chain */
	uint32_t hash;
	char *key;		/* "namespace/name", or "name" for cluster-scoped kinds */
	char *ns;		/* NULL for cluster-scoped kinds */
	const char *name;	/* points into key */
	union {
		struct kpod pod;
		struct ksvc svc;
		struct kns ns;
		struct knode node;
		json_t *json;	/* Istio kinds: the object as listed (managedFields and status
				 * dropped); the ConfigMap: its MeshConfig as JSON (NULL: bad YAML) */
	} u;
};

struct kmap {
	struct kobj **b;
	size_t nb;	/* power of two, 0 before the first insert */
	size_t n;
};

/* ---- per-resource watch state ---- */

/* Why a watch stream was abandoned by the parser. */
enum watch_abort {
	WATCH_OK,	/* still streaming */
	WATCH_GONE,	/* 410 / Expired: the resourceVersion is too old, relist */
	WATCH_ERROR,	/* an ERROR event or a Status object: back off, relist */
	WATCH_BAD,	/* a malformed event: relist (the store may have missed it) */
	WATCH_STOP,	/* the discovery is being freed */
};

struct kres {
	struct kube_discovery *kd;
	enum kube_res id;
	char *paths[2];			/* the API paths to try, newest version first */
	int npaths, ver;		/* paths[ver] is in use */
	pthread_t thread;
	bool started;
	struct kmap store;		/* under kd->lock */
	struct kube_res_stats st;	/* under kd->lock */
	char rv[64];			/* this thread's copy of the last resourceVersion */
	uint64_t rng;
	/* the stream parser (this thread only) */
	char *line;
	size_t len, cap;
	enum watch_abort abort;
	int status_code;
	uint64_t stream_events;
};

struct kube_discovery {
	struct kube_opts o;
	char *api;		/* base URL, no trailing slash */
	char *token_file;
	char *ca_file;
	volatile bool stop;	/* httpc's cancel flag too */
	pthread_mutex_t lock;	/* stores, stats, dirty */
	pthread_cond_t cond;	/* CLOCK_MONOTONIC: dirty, stop */
	bool dirty;
	bool building;		/* the builder took dirty; false again once it published */
	struct kube_stats st;	/* global part; res[] lives in struct kres */
	struct kres res[KUBE_RES_COUNT];
	pthread_t builder;
	bool builder_started;
	pthread_mutex_t tok_lock;
	char *token;
	struct stat tok_st;
	bool tok_have_st;
	bool tok_stale;
};

struct res_desc {
	const char *name;
	const char *path;	/* for the ConfigMap a format taking the root namespace */
	bool namespaced;
	int (*parse)(const json_t *obj, struct kobj *o, bool *keep);
	void (*fini)(struct kobj *o);
	/* Istio kinds */
	const char *old_path;	/* the older version, tried when path answers 404 */
	const char *query;	/* extra list/watch parameters ("fieldSelector=...") */
	bool optional;		/* 404 (no CRD) or 403: no objects, asked again slowly */
};

static const struct res_desc res_descs[KUBE_RES_COUNT];

const char *kube_res_str(enum kube_res r)
{
	return r < KUBE_RES_COUNT ? res_descs[r].name : "?";
}

/* ---- small helpers ---- */

static uint32_t str_hash(const char *s)
{
	uint32_t h = 2166136261u;	/* FNV-1a */
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;	/* xorshift64 */
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static const char *jstr(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* strdup of NULL is NULL; returns -ENOMEM only when s was not NULL. */
static int dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (!s)
		return 0;
	*out = strdup(s);
	return *out ? 0 : -ENOMEM;
}

static bool ip_valid(const char *s)
{
	struct sockaddr_storage ss;
	return s && ip_parse(s, &ss) == 0;
}

/* Copies a JSON object of strings; keys the model would refuse (longer than a DNS
 * subdomain) are dropped, and at most MODEL_MAX_LABELS are kept. */
static int labels_copy(const json_t *obj, struct label **out, int *n)
{
	const char *k;
	json_t *v;
	size_t sz = json_object_size(obj);
	*out = NULL;
	*n = 0;
	if (!json_is_object(obj) || sz == 0)
		return 0;
	*out = calloc(MIN(sz, (size_t)MODEL_MAX_LABELS), sizeof(**out));
	if (!*out)
		return -ENOMEM;
	json_object_foreach((json_t *)obj, k, v) {
		if (*n == MODEL_MAX_LABELS)
			break;
		if (!json_is_string(v) || strlen(k) > 253 || json_string_length(v) > 1024)
			continue;
		if (labels_add(*out, n, k, json_string_value(v)))
			return -ENOMEM;
	}
	return 0;
}

static void strv_free(char **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static int strv_add(char ***v, int *n, const char *s)
{
	char **nv;
	if (*n >= MODEL_MAX_ADDRS)
		return 0;
	for (int i = 0; i < *n; i++)
		if (strcmp((*v)[i], s) == 0)
			return 0;
	nv = realloc(*v, (size_t)(*n + 1) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	if (!(nv[*n] = strdup(s)))
		return -ENOMEM;
	(*n)++;
	return 0;
}

/* Percent-encodes s (RFC 3986 unreserved characters pass) into out. */
static void url_escape(const char *s, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (; *s && o + 4 < outlen; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~') {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
}

/* ---- the object map ---- */

static struct kobj *kmap_get(const struct kmap *m, const char *key)
{
	uint32_t h;
	if (!m->nb)
		return NULL;
	h = str_hash(key);
	for (struct kobj *o = m->b[h & (m->nb - 1)]; o; o = o->next)
		if (o->hash == h && strcmp(o->key, key) == 0)
			return o;
	return NULL;
}

/* Removes and returns the object with key, or NULL. */
static struct kobj *kmap_del(struct kmap *m, const char *key)
{
	uint32_t h;
	if (!m->nb)
		return NULL;
	h = str_hash(key);
	for (struct kobj **pp = &m->b[h & (m->nb - 1)]; *pp; pp = &(*pp)->next) {
		struct kobj *o = *pp;
		if (o->hash == h && strcmp(o->key, key) == 0) {
			*pp = o->next;
			o->next = NULL;
			m->n--;
			return o;
		}
	}
	return NULL;
}

/* Inserts o (taking it over) and sets *old to the object it replaced (or NULL).
 * -ENOMEM only when the first table cannot be allocated: o is then not inserted. A failed
 * growth keeps the table (chains get longer). */
static int kmap_put(struct kmap *m, struct kobj *o, struct kobj **old)
{
	*old = kmap_del(m, o->key);
	if (m->n + 1 > m->nb) {
		size_t nb = m->nb ? m->nb * 2 : 64;
		struct kobj **b = calloc(nb, sizeof(*b));
		if (b) {
			for (size_t i = 0; i < m->nb; i++) {
				struct kobj *x = m->b[i], *next;
				for (; x; x = next) {
					next = x->next;
					x->next = b[x->hash & (nb - 1)];
					b[x->hash & (nb - 1)] = x;
				}
			}
			free(m->b);
			m->b = b;
			m->nb = nb;
		}
	}
	if (!m->nb)
		return -ENOMEM;
	o->next = m->b[o->hash & (m->nb - 1)];
	m->b[o->hash & (m->nb - 1)] = o;
	m->n++;
	return 0;
}

#define kmap_foreach(m, o)                                             \
	for (size_t _i = 0; _i < (m)->nb; _i++)                         \
		for (struct kobj *o = (m)->b[_i]; o; o = o->next)

static void kobj_free(enum kube_res r, struct kobj *o)
{
	if (!o)
		return;
	res_descs[r].fini(o);
	free(o->key);
	free(o->ns);
	free(o);
}

static void kmap_clear(enum kube_res r, struct kmap *m)
{
	for (size_t i = 0; i < m->nb; i++) {
		struct kobj *o = m->b[i], *next;
		for (; o; o = next) {
			next = o->next;
			kobj_free(r, o);
		}
	}
	free(m->b);
	memset(m, 0, sizeof(*m));
}

/* ---- object parsers: JSON object -> compact record ---- */

/* Fills key/ns/name from metadata. -EINVAL when the object has no usable name. */
static int kobj_init_key(const json_t *obj, bool namespaced, struct kobj *o)
{
	const json_t *meta = json_object_get(obj, "metadata");
	const char *name = jstr(meta, "name"), *ns = jstr(meta, "namespace");
	if (!name || !*name || (namespaced && (!ns || !*ns)))
		return -EINVAL;
	if (namespaced) {
		if (asprintf(&o->key, "%s/%s", ns, name) < 0) {
			o->key = NULL;
			return -ENOMEM;
		}
		if (!(o->ns = strdup(ns)))
			return -ENOMEM;
		o->name = o->key + strlen(ns) + 1;
	} else {
		if (!(o->key = strdup(name)))
			return -ENOMEM;
		o->name = o->key;
	}
	o->hash = str_hash(o->key);
	return 0;
}

/* The owner's name minus the hash a controller appended: a ReplicaSet "api-7d9f8b6c5d"
 * (its pod-template-hash) or a CronJob's Job "backup-28472839" gives "api" / "backup". */
static char *owner_base_name(const json_t *meta, const char *tmpl_hash)
{
	const json_t *refs = json_object_get(meta, "ownerReferences"), *ref, *pick = NULL;
	size_t i;
	json_array_foreach(refs, i, ref) {
		if (!pick || json_is_true(json_object_get(ref, "controller")))
			pick = ref;
		if (json_is_true(json_object_get(ref, "controller")))
			break;
	}
	const char *kind = jstr(pick, "kind"), *name = jstr(pick, "name");
	if (!name || !*name)
		return NULL;
	size_t len = strlen(name);
	const char *dash = strrchr(name, '-');
	if (kind && strcmp(kind, "ReplicaSet") == 0 && dash && dash != name) {
		if (!tmpl_hash || strcmp(dash + 1, tmpl_hash) == 0)
			len = (size_t)(dash - name);
	} else if (kind && strcmp(kind, "Job") == 0 && dash && dash != name && dash[1] &&
		   strspn(dash + 1, "0123456789") == strlen(dash + 1)) {
		len = (size_t)(dash - name);
	}
	return strndup(name, len);
}

static void pod_fini(struct kobj *o)
{
	struct kpod *p = &o->u.pod;
	free(p->service_account);
	free(p->node);
	free(p->canonical);
	strv_free(p->ips, p->nips);
	labels_free(p->labels, p->nlabels);
	for (int i = 0; i < p->nnamed; i++)
		free(p->named[i].name);
	free(p->named);
}

/* Keeps running or pending pods that have an IP and do not use the host network. */
static int pod_parse(const json_t *obj, struct kobj *o, bool *keep)
{
	const json_t *meta = json_object_get(obj, "metadata");
	const json_t *spec = json_object_get(obj, "spec");
	const json_t *status = json_object_get(obj, "status");
	const json_t *v, *c;
	const char *phase = jstr(status, "phase"), *s;
	struct kpod *p = &o->u.pod;
	size_t i, j;
	int err;

	*keep = false;
	if ((err = kobj_init_key(obj, true, o)))
		return err;
	if (json_is_true(json_object_get(spec, "hostNetwork")))
		return 0;
	if (phase && (strcmp(phase, "Succeeded") == 0 || strcmp(phase, "Failed") == 0))
		return 0;
	json_array_foreach(json_object_get(status, "podIPs"), i, v) {
		s = jstr(v, "ip");
		if (ip_valid(s) && (err = strv_add(&p->ips, &p->nips, s)))
			return err;
	}
	s = jstr(status, "podIP");
	if (!p->nips && ip_valid(s) && (err = strv_add(&p->ips, &p->nips, s)))
		return err;
	if (!p->nips)
		return 0;
	if ((err = labels_copy(json_object_get(meta, "labels"), &p->labels, &p->nlabels)))
		return err;
	s = jstr(spec, "serviceAccountName");
	if (!s || !*s)
		s = jstr(spec, "serviceAccount");
	if ((err = dup_opt(s && *s ? s : "default", &p->service_account)))
		return err;
	s = jstr(spec, "nodeName");
	if ((err = dup_opt(s && *s ? s : NULL, &p->node)))
		return err;
	/* canonical service: as Istio derives it */
	s = labels_get(p->labels, p->nlabels, LBL_CANONICAL);
	if (!s)
		s = labels_get(p->labels, p->nlabels, LBL_K8S_NAME);
	if (!s)
		s = labels_get(p->labels, p->nlabels, "app");
	if (s) {
		p->canonical = strdup(s);
	} else {
		p->canonical = owner_base_name(meta, labels_get(p->labels, p->nlabels,
								 LBL_TEMPLATE_HASH));
		if (!p->canonical)
			p->canonical = strdup(o->name);
	}
	if (!p->canonical)
		return -ENOMEM;
	json_array_foreach(json_object_get(spec, "containers"), i, c) {
		json_array_foreach(json_object_get(c, "ports"), j, v) {
			const char *pn = jstr(v, "name");
			json_int_t cp = json_integer_value(json_object_get(v, "containerPort"));
			if (!pn || !*pn || cp < 1 || cp > 65535 || p->nnamed == KUBE_MAX_NAMED_PORT)
				continue;
			struct knamed_port *nn = realloc(p->named,
							 (size_t)(p->nnamed + 1) * sizeof(*nn));
			if (!nn)
				return -ENOMEM;
			p->named = nn;
			if (!(nn[p->nnamed].name = strdup(pn)))
				return -ENOMEM;
			nn[p->nnamed++].port = (uint16_t)cp;
		}
	}
	*keep = true;
	return 0;
}

static void svc_fini(struct kobj *o)
{
	struct ksvc *s = &o->u.svc;
	strv_free(s->ips, s->nips);
	labels_free(s->selector, s->nselector);
	for (int i = 0; i < s->nports; i++) {
		free(s->ports[i].target_name);
		free(s->ports[i].name);
		free(s->ports[i].app_protocol);
	}
	free(s->ports);
	free(s->wp_name);
	free(s->wp_ns);
}

/* Keeps every Service but ExternalName ones; only TCP ports (the mesh carries TCP). */
static int svc_parse(const json_t *obj, struct kobj *o, bool *keep)
{
	const json_t *meta = json_object_get(obj, "metadata");
	const json_t *spec = json_object_get(obj, "spec");
	const json_t *labels = json_object_get(meta, "labels");
	const json_t *v;
	const char *s;
	struct ksvc *sv = &o->u.svc;
	size_t i;
	int err;

	*keep = false;
	if ((err = kobj_init_key(obj, true, o)))
		return err;
	s = jstr(spec, "type");
	if (s && strcmp(s, "ExternalName") == 0)
		return 0;
	json_array_foreach(json_object_get(spec, "clusterIPs"), i, v) {
		s = json_string_value(v);
		if (ip_valid(s) && (err = strv_add(&sv->ips, &sv->nips, s)))
			return err;
	}
	s = jstr(spec, "clusterIP");
	if (!sv->nips && ip_valid(s) && (err = strv_add(&sv->ips, &sv->nips, s)))
		return err;
	if ((err = labels_copy(json_object_get(spec, "selector"), &sv->selector, &sv->nselector)))
		return err;
	const json_t *ports = json_object_get(spec, "ports");
	if (json_array_size(ports)) {
		sv->ports = calloc(MIN(json_array_size(ports), (size_t)MODEL_MAX_PORTS),
				   sizeof(*sv->ports));
		if (!sv->ports)
			return -ENOMEM;
	}
	json_array_foreach(ports, i, v) {
		const char *proto = jstr(v, "protocol");
		json_int_t port = json_integer_value(json_object_get(v, "port"));
		const json_t *tp = json_object_get(v, "targetPort");
		struct kport *kp;
		if (sv->nports == MODEL_MAX_PORTS)
			break;
		if ((proto && strcmp(proto, "TCP") != 0) || port < 1 || port > 65535)
			continue;
		kp = &sv->ports[sv->nports++];
		kp->port = (uint16_t)port;
		if (json_is_integer(tp) && json_integer_value(tp) >= 1 &&
		    json_integer_value(tp) <= 65535)
			kp->target = (uint16_t)json_integer_value(tp);
		else if (json_is_string(tp) && json_string_length(tp))
			err = dup_opt(json_string_value(tp), &kp->target_name);
		else
			kp->target = kp->port;
		if (!err)
			err = dup_opt(jstr(v, "name"), &kp->name);
		if (!err)
			err = dup_opt(jstr(v, "appProtocol"), &kp->app_protocol);
		if (err)
			return err;
	}
	if ((err = dup_opt(jstr(labels, LBL_WAYPOINT), &sv->wp_name)) ||
	    (err = dup_opt(jstr(labels, LBL_WAYPOINT_NS), &sv->wp_ns)))
		return err;
	*keep = true;
	return 0;
}

static void ns_fini(struct kobj *o)
{
	free(o->u.ns.mode);
	free(o->u.ns.wp_name);
	free(o->u.ns.wp_ns);
}

static int ns_parse(const json_t *obj, struct kobj *o, bool *keep)
{
	const json_t *labels = json_object_get(json_object_get(obj, "metadata"), "labels");
	int err;
	*keep = false;
	if ((err = kobj_init_key(obj, false, o)) ||
	    (err = dup_opt(jstr(labels, LBL_MODE), &o->u.ns.mode)) ||
	    (err = dup_opt(jstr(labels, LBL_WAYPOINT), &o->u.ns.wp_name)) ||
	    (err = dup_opt(jstr(labels, LBL_WAYPOINT_NS), &o->u.ns.wp_ns)))
		return err;
	*keep = true;
	return 0;
}

static void node_fini(struct kobj *o)
{
	free(o->u.node.ip);
}

static int node_parse(const json_t *obj, struct kobj *o, bool *keep)
{
	const json_t *v;
	size_t i;
	int err;
	*keep = false;
	if ((err = kobj_init_key(obj, false, o)))
		return err;
	json_array_foreach(json_object_get(json_object_get(obj, "status"), "addresses"), i, v) {
		const char *type = jstr(v, "type"), *a = jstr(v, "address");
		if (type && strcmp(type, "InternalIP") == 0 && ip_valid(a)) {
			if ((err = dup_opt(a, &o->u.node.ip)))
				return err;
			break;
		}
	}
	*keep = true;
	return 0;
}

static void json_fini(struct kobj *o)
{
	json_decref(o->u.json);
}

/* An Istio object, kept whole (the istio/ modules judge it) minus what they never read. */
static int istio_parse(const json_t *obj, struct kobj *o, bool *keep)
{
	json_t *meta;
	int err;
	*keep = false;
	if ((err = kobj_init_key(obj, true, o)))
		return err;
	if (!jstr(obj, "apiVersion") || !jstr(obj, "kind")) {
		/* the API sends both for custom resources; the model needs them */
		pr_warn_rl("kube: %s without apiVersion or kind; ignored", o->key);
		return 0;
	}
	if (!(o->u.json = json_deep_copy(obj)))
		return -ENOMEM;
	json_object_del(o->u.json, "status");
	if ((meta = json_object_get(o->u.json, "metadata")))
		json_object_del(meta, "managedFields");
	*keep = true;
	return 0;
}

/* The `istio` ConfigMap: its `mesh` key (YAML) as JSON; absent: an empty MeshConfig. Bad YAML
 * is kept as NULL (no MeshConfig) with a warning, so one bad edit does not stop discovery. */
static int meshcfg_parse(const json_t *obj, struct kobj *o, bool *keep)
{
	const char *mesh = jstr(json_object_get(obj, "data"), "mesh");
	char err[200];
	int rc;
	*keep = false;
	if ((rc = kobj_init_key(obj, true, o)))
		return rc;
	if (strcmp(o->name, "istio") != 0)
		return 0;	/* not ours (the field selector asks only for it) */
	errno = 0;
	o->u.json = mesh ? yaml_to_json(mesh, strlen(mesh), err, sizeof(err)) : json_object();
	if (!o->u.json && (!mesh || errno == ENOMEM))
		return -ENOMEM;
	if (!o->u.json)
		pr_warn("kube: ConfigMap %s/istio: data.mesh: %s; MeshConfig ignored", o->ns, err);
	else if (!json_is_object(o->u.json)) {
		pr_warn("kube: ConfigMap %s/istio: data.mesh is not a mapping; MeshConfig ignored", o->ns);
		json_decref(o->u.json);
		o->u.json = NULL;
	}
	*keep = true;
	return 0;
}

static const struct res_desc res_descs[KUBE_RES_COUNT] = {
	[KUBE_RES_PODS] = { "pods", "/api/v1/pods", true, pod_parse, pod_fini, NULL, NULL, false },
	[KUBE_RES_SERVICES] = { "services", "/api/v1/services", true, svc_parse, svc_fini, NULL, NULL,
				false },
	[KUBE_RES_NAMESPACES] = { "namespaces", "/api/v1/namespaces", false, ns_parse, ns_fini, NULL,
				  NULL, false },
	[KUBE_RES_NODES] = { "nodes", "/api/v1/nodes", false, node_parse, node_fini, NULL, NULL, false },
	[KUBE_RES_AUTHZ_POLICIES] = { "authorizationpolicies",
		"/apis/security.istio.io/v1/authorizationpolicies", true, istio_parse, json_fini,
		"/apis/security.istio.io/v1beta1/authorizationpolicies", NULL, true },
	[KUBE_RES_PEER_AUTHNS] = { "peerauthentications",
		"/apis/security.istio.io/v1/peerauthentications", true, istio_parse, json_fini,
		"/apis/security.istio.io/v1beta1/peerauthentications", NULL, true },
	[KUBE_RES_TELEMETRIES] = { "telemetries", "/apis/telemetry.istio.io/v1/telemetries", true,
		istio_parse, json_fini, "/apis/telemetry.istio.io/v1alpha1/telemetries", NULL, true },
	[KUBE_RES_HTTPROUTES] = { "httproutes", "/apis/gateway.networking.k8s.io/v1/httproutes", true,
		istio_parse, json_fini, "/apis/gateway.networking.k8s.io/v1beta1/httproutes", NULL, true },
	[KUBE_RES_MESH_CONFIG] = { "meshconfig", "/api/v1/namespaces/%s/configmaps", true,
		meshcfg_parse, json_fini, NULL, "fieldSelector=metadata.name%3Distio", true },
};

/* Parses obj into a new record. Returns 0 with *out set (kept) or NULL (the object exists
 * but is not part of the model, e.g. a finished pod: remove it); -EINVAL or -ENOMEM. */
static int kobj_parse(enum kube_res r, const json_t *obj, struct kobj **out, char **key)
{
	struct kobj *o = calloc(1, sizeof(*o));
	bool keep = false;
	int err;
	*out = NULL;
	*key = NULL;
	if (!o)
		return -ENOMEM;
	if (!json_is_object(obj))
		err = -EINVAL;
	else
		err = res_descs[r].parse(obj, o, &keep);
	if (!err && !keep) {
		*key = o->key;
		o->key = NULL;
	}
	if (err || !keep) {
		kobj_free(r, o);
		return err;
	}
	*out = o;
	return 0;
}

/* ---- the discovery: locking, sleeping, the token ---- */

static void kd_mark_dirty(struct kube_discovery *kd)
{
	kd->dirty = true;
	pthread_cond_broadcast(&kd->cond);
}

/* Sleeps ms unless stopped; false when stopping. */
static bool kd_sleep(struct kube_discovery *kd, uint64_t ms)
{
	struct timespec ts = timespec_after_ms(CLOCK_MONOTONIC, ms);
	bool stop;
	pthread_mutex_lock(&kd->lock);
	while (!kd->stop && pthread_cond_timedwait(&kd->cond, &kd->lock, &ts) != ETIMEDOUT)
		;
	stop = kd->stop;
	pthread_mutex_unlock(&kd->lock);
	return !stop;
}

static void token_wipe_free(char *t)
{
	if (t) {
		explicit_bzero(t, strlen(t));
		free(t);
	}
}

/* A copy of the current bearer token (NULL when there is none), re-reading the file when
 * it changed: kubelet rotates projected tokens by swapping a symlink, so stat() sees a new
 * inode or mtime. The caller frees the copy with token_wipe_free. */
static char *token_get(struct kube_discovery *kd)
{
	struct stat st;
	char *copy = NULL;
	pthread_mutex_lock(&kd->tok_lock);
	if (stat(kd->token_file, &st) == -1) {
		token_wipe_free(kd->token);
		kd->token = NULL;
		kd->tok_have_st = false;
		goto out;
	}
	if (!kd->token || kd->tok_stale || !kd->tok_have_st || st.st_ino != kd->tok_st.st_ino ||
	    st.st_size != kd->tok_st.st_size || st.st_mtim.tv_sec != kd->tok_st.st_mtim.tv_sec ||
	    st.st_mtim.tv_nsec != kd->tok_st.st_mtim.tv_nsec) {
		size_t len;
		char *t = read_file_bounded(kd->token_file, KUBE_MAX_TOKEN, &len);
		if (t) {
			while (len && (t[len - 1] == '\n' || t[len - 1] == '\r' || t[len - 1] == ' '))
				t[--len] = '\0';
			token_wipe_free(kd->token);
			kd->token = t;
			kd->tok_st = st;
			kd->tok_have_st = true;
			kd->tok_stale = false;
			pthread_mutex_lock(&kd->lock);
			kd->st.auth_reloads++;
			pthread_mutex_unlock(&kd->lock);
		} else {
			pr_warn_rl("kube: reading token %s: %s", kd->token_file, strerror(errno));
		}
	}
	if (kd->token && kd->token[0])
		copy = strdup(kd->token);
out:
	pthread_mutex_unlock(&kd->tok_lock);
	return copy;
}

static void token_mark_stale(struct kube_discovery *kd)
{
	pthread_mutex_lock(&kd->tok_lock);
	kd->tok_stale = true;
	pthread_mutex_unlock(&kd->tok_lock);
}

static void res_error(struct kres *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Counts an error, keeps its text for the admin API and logs it (rate-limited). */
static void res_error(struct kres *r, const char *fmt, ...)
{
	struct kube_discovery *kd = r->kd;
	char msg[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&kd->lock);
	r->st.errors++;
	snprintf(r->st.last_error, sizeof(r->st.last_error), "%s", msg);
	pthread_mutex_unlock(&kd->lock);
	if (!kd->stop)
		pr_warn_rl("kube: %s: %s", res_descs[r->id].name, msg);
}

static void res_set_rv(struct kres *r, const char *rv)
{
	if (!rv || !*rv)
		return;
	snprintf(r->rv, sizeof(r->rv), "%s", rv);
	snprintf(r->st.resource_version, sizeof(r->st.resource_version), "%s", rv);
}

/* ---- list ---- */

/* One GET; 0 with resp filled (any status), or -errno from httpc. */
static int api_get(struct kube_discovery *kd, const char *url, struct httpc_response *resp,
		   httpc_data_fn on_data, void *arg, long timeout_ms, long idle_s)
{
	static const char *const hdrs[] = { "Accept: application/json", NULL };
	char *tok = token_get(kd);
	struct httpc_request req = {
		.url = url,
		.headers = hdrs,
		.ca_file = kd->ca_file,
		.bearer_token = tok,
		.timeout_ms = timeout_ms,
		.idle_timeout_s = idle_s,
		.max_response = KUBE_MAX_PAGE,
		.on_data = on_data,
		.arg = arg,
		.cancel = &kd->stop,
	};
	int err = httpc_do(&req, resp);
	token_wipe_free(tok);
	if (!err && resp->status == 401)
		token_mark_stale(kd);
	/* curl's TLS errors ("SSL peer certificate ... was not OK") do not say which CA was
	 * tried; a wrong or missing ca.crt is the usual cause, so name it */
	if (err && err != -ECANCELED && strncmp(url, "https:", 6) == 0 && strstr(resp->err, "SSL")) {
		size_t l = strlen(resp->err);
		snprintf(resp->err + l, sizeof(resp->err) - l, " (CA file %s)", kd->ca_file);
	}
	return err;
}

/* Lists every object (paginated) into a fresh map and swaps it in: the store then holds
 * exactly what the API holds (deletions missed during an outage disappear).
 * 0, -ESTALE (a continue token expired: list again), or another -errno. */
static int res_list(struct kres *r)
{
	struct kube_discovery *kd = r->kd;
	const struct res_desc *d = &res_descs[r->id];
	struct kmap fresh = { 0 };
	char *cont = NULL, *url = NULL, rv[64] = "";
	int err = 0;

	pthread_mutex_lock(&kd->lock);
	snprintf(r->st.path, sizeof(r->st.path), "%s", r->paths[r->ver]);
	pthread_mutex_unlock(&kd->lock);

	do {
		struct httpc_response resp;
		json_error_t jerr;
		json_t *root, *items, *item;
		size_t i;
		char esc[1024] = "";

		if (cont)
			url_escape(cont, esc, sizeof(esc));
		free(url);
		if (asprintf(&url, "%s%s?%s%slimit=%d%s%s", kd->api, r->paths[r->ver],
			     d->query ? d->query : "", d->query ? "&" : "", kd->o.list_page,
			     cont ? "&continue=" : "", esc) < 0) {
			url = NULL;
			err = -ENOMEM;
			break;
		}
		err = api_get(kd, url, &resp, NULL, NULL, KUBE_LIST_TIMEOUT_MS, 0);
		if (err) {
			if (err != -ECANCELED)
				res_error(r, "list: %s", resp.err);
			httpc_response_fini(&resp);
			break;
		}
		if (d->optional && (resp.status == 404 || resp.status == 403)) {
			/* no CRD (or no right to read it): not an error for an Istio kind */
			err = resp.status == 404 ? -ENOENT : -EACCES;
			if (err == -EACCES)
				res_error(r, "list: HTTP 403 (RBAC: get, list, watch %s)", d->name);
			httpc_response_fini(&resp);
			break;
		}
		if (resp.status != 200) {
			err = resp.status == 410 ? -ESTALE : -EIO;
			res_error(r, "list: HTTP %ld", resp.status);
			httpc_response_fini(&resp);
			break;
		}
		root = json_loadb(resp.body, resp.body_len, 0, &jerr);
		httpc_response_fini(&resp);
		items = json_object_get(root, "items");
		if (!root || !(json_is_array(items) || json_is_null(items))) {
			res_error(r, "list: not a list: %s", root ? "no items" : jerr.text);
			json_decref(root);
			err = -EBADMSG;
			break;
		}
		json_array_foreach(items, i, item) {
			struct kobj *o;
			char *key;
			int perr = kobj_parse(r->id, item, &o, &key);
			free(key);
			if (perr == -ENOMEM) {
				err = perr;
				break;
			}
			if (o) {
				struct kobj *old;
				if (kmap_put(&fresh, o, &old)) {
					kobj_free(r->id, o);
					err = -ENOMEM;
					break;
				}
				kobj_free(r->id, old);
			}
		}
		const json_t *meta = json_object_get(root, "metadata");
		const char *c = jstr(meta, "continue");
		if (!cont)	/* the first page's version is the list's */
			snprintf(rv, sizeof(rv), "%s", jstr(meta, "resourceVersion") ?: "");
		free(cont);
		cont = c && *c ? strdup(c) : NULL;
		if (!err && c && *c && !cont)
			err = -ENOMEM;
		json_decref(root);
	} while (!err && cont && !kd->stop);

	free(url);
	free(cont);
	if (!err && kd->stop)
		err = -ECANCELED;
	if (!err && !rv[0]) {
		res_error(r, "list: no metadata.resourceVersion");
		err = -EBADMSG;
	}
	if (err) {
		kmap_clear(r->id, &fresh);
		return err;
	}
	pthread_mutex_lock(&kd->lock);
	struct kmap old = r->store;
	r->store = fresh;
	res_set_rv(r, rv);
	r->st.objects = r->store.n;
	r->st.lists++;
	r->st.synced = true;
	r->st.absent = false;
	kd_mark_dirty(kd);
	pthread_mutex_unlock(&kd->lock);
	kmap_clear(r->id, &old);
	pr_debug("kube: %s: listed %zu at resourceVersion %s", d->name, fresh.n, rv);
	return 0;
}

/* ---- watch ---- */

static int status_code(const json_t *st)
{
	json_int_t c = json_integer_value(json_object_get(st, "code"));
	const char *reason = jstr(st, "reason");
	if (c == 0 && reason && (strcmp(reason, "Expired") == 0 || strcmp(reason, "Gone") == 0))
		c = 410;
	return (int)c;
}

/* Applies one watch event line. Sets r->abort when the stream must end. */
static void watch_line(struct kres *r, const char *buf, size_t len)
{
	struct kube_discovery *kd = r->kd;
	json_error_t jerr;
	json_t *root;
	const json_t *obj;
	const char *type;

	while (len && (buf[len - 1] == '\r' || buf[len - 1] == ' '))
		len--;
	if (!len)
		return;
	root = json_loadb(buf, len, 0, &jerr);
	if (!root) {
		res_error(r, "watch: malformed event (%s); relisting", jerr.text);
		r->abort = WATCH_BAD;
		return;
	}
	type = jstr(root, "type");
	obj = json_object_get(root, "object");
	if (!type) {
		const char *kind = jstr(root, "kind");
		if (kind && strcmp(kind, "Status") == 0) {	/* an error response body */
			r->status_code = status_code(root);
			r->abort = r->status_code == 410 ? WATCH_GONE : WATCH_ERROR;
			res_error(r, "watch: status %d: %s", r->status_code,
				  jstr(root, "message") ?: "");
		} else {
			res_error(r, "watch: event without a type; relisting");
			r->abort = WATCH_BAD;
		}
		goto out;
	}
	if (!json_is_object(obj)) {
		res_error(r, "watch: %s event without an object; relisting", type);
		r->abort = WATCH_BAD;
		goto out;
	}
	const char *rv = jstr(json_object_get(obj, "metadata"), "resourceVersion");
	if (strcmp(type, "ADDED") == 0 || strcmp(type, "MODIFIED") == 0 ||
	    strcmp(type, "DELETED") == 0) {
		struct kobj *o = NULL, *old;
		char *key = NULL;
		int err = kobj_parse(r->id, obj, &o, &key);
		if (err) {
			res_error(r, "watch: %s object unusable (%s); relisting", type,
				  strerror(-err));
			r->abort = WATCH_BAD;
			goto out;
		}
		if (o && strcmp(type, "DELETED") == 0) {
			key = o->key;
			o->key = NULL;
			kobj_free(r->id, o);
			o = NULL;
		}
		pthread_mutex_lock(&kd->lock);
		if (!o) {
			old = kmap_del(&r->store, key);
		} else if (kmap_put(&r->store, o, &old)) {
			kobj_free(r->id, o);	/* the store misses it: relist later */
			o = NULL;
			r->abort = WATCH_BAD;
		}
		res_set_rv(r, rv);
		r->st.objects = r->store.n;
		r->st.events++;
		if (o || old)
			kd_mark_dirty(kd);
		pthread_mutex_unlock(&kd->lock);
		kobj_free(r->id, old);
		free(key);
		r->stream_events++;
	} else if (strcmp(type, "BOOKMARK") == 0) {
		pthread_mutex_lock(&kd->lock);
		res_set_rv(r, rv);
		r->st.bookmarks++;
		pthread_mutex_unlock(&kd->lock);
		r->stream_events++;
	} else if (strcmp(type, "ERROR") == 0) {
		r->status_code = status_code(obj);
		r->abort = r->status_code == 410 ? WATCH_GONE : WATCH_ERROR;
		if (r->abort == WATCH_GONE) {
			pr_info("kube: %s: resourceVersion %s expired; relisting", res_descs[r->id].name,
				r->rv);
		} else {
			res_error(r, "watch: ERROR event %d: %s", r->status_code,
				  jstr(obj, "message") ?: "");
		}
	} else {
		res_error(r, "watch: unknown event type '%.32s'; relisting", type);
		r->abort = WATCH_BAD;
	}
out:
	json_decref(root);
}

/* httpc's streaming callback: splits the body into lines (bounded) and applies each. */
static int watch_on_data(const char *data, size_t len, void *arg)
{
	struct kres *r = arg;
	while (len && r->abort == WATCH_OK) {
		const char *nl;
		if (r->kd->stop) {
			r->abort = WATCH_STOP;
			break;
		}
		nl = memchr(data, '\n', len);
		size_t take = nl ? (size_t)(nl - data) : len;
		if (r->len + take > KUBE_MAX_LINE) {
			res_error(r, "watch: event longer than %u bytes; relisting", KUBE_MAX_LINE);
			r->abort = WATCH_BAD;
			break;
		}
		if (nl && r->len == 0) {	/* a whole line in this chunk: no copy */
			watch_line(r, data, take);
		} else {
			if (r->len + take > r->cap) {
				size_t ncap = r->cap ? r->cap : 16384;
				while (ncap < r->len + take)
					ncap *= 2;
				char *nb = realloc(r->line, ncap);
				if (!nb) {
					res_error(r, "watch: out of memory for an event");
					r->abort = WATCH_BAD;
					break;
				}
				r->line = nb;
				r->cap = ncap;
			}
			memcpy(r->line + r->len, data, take);
			r->len += take;
			if (nl) {
				watch_line(r, r->line, r->len);
				r->len = 0;
			}
		}
		if (!nl)
			break;
		data = nl + 1;
		len -= take + 1;
	}
	return r->abort != WATCH_OK;
}

/* Watches from r->rv until the server ends the stream. 0 on a normal end (re-watch),
 * -ESTALE (relist now), -EBADMSG (relist after a backoff), -ECANCELED, other -errno. */
static int res_watch(struct kres *r)
{
	struct kube_discovery *kd = r->kd;
	const struct res_desc *d = &res_descs[r->id];
	struct httpc_response resp;
	char esc[200], *url;
	int timeout_s = kd->o.watch_timeout_s;
	int err;

	timeout_s += (int)(rng_next(&r->rng) % (uint64_t)(timeout_s + 1));	/* client-go's spread */
	url_escape(r->rv, esc, sizeof(esc));
	if (asprintf(&url, "%s%s?%s%swatch=1&resourceVersion=%s&allowWatchBookmarks=true&timeoutSeconds=%d",
		     kd->api, r->paths[r->ver], d->query ? d->query : "", d->query ? "&" : "", esc,
		     timeout_s) < 0)
		return -ENOMEM;
	r->len = 0;
	r->abort = WATCH_OK;
	r->status_code = 0;
	r->stream_events = 0;
	pthread_mutex_lock(&kd->lock);
	r->st.watches++;
	pthread_mutex_unlock(&kd->lock);

	err = api_get(kd, url, &resp, watch_on_data, r, (long)(timeout_s + 30) * 1000L,
		      kd->o.idle_timeout_s);
	free(url);
	/* a stream the parser abandoned comes back as -ECANCELED: its reason decides */
	if (r->abort == WATCH_STOP || kd->stop) {
		err = -ECANCELED;
	} else if (r->abort == WATCH_GONE) {
		err = -ESTALE;
	} else if (r->abort == WATCH_ERROR || r->abort == WATCH_BAD) {
		err = -EBADMSG;
	} else if (err) {
		res_error(r, "watch: %s", resp.err);
	} else if (resp.status == 410) {
		err = -ESTALE;
	} else if (d->optional && resp.status == 404) {
		err = -ENOENT;	/* the CRD went away: the list says what is left */
	} else if (resp.status != 200) {
		res_error(r, "watch: HTTP %ld", resp.status);
		err = -EIO;
	}
	if (err == -ESTALE) {	/* every way the API says "Gone" is counted here, once */
		pthread_mutex_lock(&kd->lock);
		r->st.relists_gone++;
		pthread_mutex_unlock(&kd->lock);
	}
	if (r->cap > (1u << 20)) {	/* do not keep a huge line buffer around */
		free(r->line);
		r->line = NULL;
		r->cap = 0;
	}
	httpc_response_fini(&resp);
	return err;
}

/* Delay before retry n (1-based): exponential, capped, with full jitter over its upper half. */
static uint64_t backoff_ms(struct kres *r, int n)
{
	uint64_t d = (uint64_t)r->kd->o.backoff_min_ms;
	for (int i = 1; i < n && d < (uint64_t)r->kd->o.backoff_max_ms; i++)
		d *= 2;
	d = MIN(d, (uint64_t)r->kd->o.backoff_max_ms);
	return d / 2 + rng_next(&r->rng) % (d / 2 + 1);
}

/* An Istio kind found absent (no CRD, or 403): an empty, synced store, so that the model
 * is built without it; the thread asks again after absent_retry_ms. */
static void res_absent(struct kres *r)
{
	struct kube_discovery *kd = r->kd;
	pthread_mutex_lock(&kd->lock);
	struct kmap old = r->store;
	memset(&r->store, 0, sizeof(r->store));
	bool had = old.n > 0 || !r->st.synced || !r->st.absent;
	r->st.objects = 0;
	r->st.synced = true;
	r->st.absent = true;
	r->rv[0] = '\0';
	if (had)
		kd_mark_dirty(kd);
	pthread_mutex_unlock(&kd->lock);
	kmap_clear(r->id, &old);
	if (had)
		pr_info("kube: %s: not served by the API (%s); none until it is", res_descs[r->id].name,
			r->st.last_error[0] ? r->st.last_error : "no CRD");
}

static void *res_thread(void *arg)
{
	struct kres *r = arg;
	struct kube_discovery *kd = r->kd;
	bool need_list = true;
	int failures = 0, gone_streak = 0;

	while (!kd->stop) {
		uint64_t start = now_mono_ms();
		int err;
		if (need_list) {
			err = res_list(r);
			if (err == -ENOENT && r->ver + 1 < r->npaths) {
				r->ver++;	/* the older API version of the CRD */
				continue;
			}
			if (err == -ENOENT || err == -EACCES) {
				res_absent(r);
				r->ver = 0;
				failures = 0;
				if (!kd_sleep(kd, (uint64_t)kd->o.absent_retry_ms))
					break;
				continue;
			}
			if (!err) {
				need_list = false;
				failures = 0;
			} else if (err == -ESTALE && failures == 0) {
				failures++;	/* an expired continue token: once more, at once */
				continue;
			}
		} else {
			err = res_watch(r);
			if (r->stream_events)
				gone_streak = 0;
			if (err == -ESTALE) {
				/* 410: relist at once, unless the version a fresh list gave is
				 * already refused (a server that cannot serve watches) */
				need_list = true;
				if (++gone_streak < 2)
					continue;
				err = -EAGAIN;
			}
			if (err == -EBADMSG || err == -ENOENT)
				need_list = true;
			if (err == -ENOENT)
				continue;
			if (!err && (r->stream_events || now_mono_ms() - start > 1000)) {
				failures = 0;	/* a normal end: re-watch from where it stopped */
				gone_streak = 0;
				continue;
			}
			if (!err)
				err = -EAGAIN;	/* ended at once with nothing: do not spin */
		}
		if (err == -ECANCELED || kd->stop)
			break;
		if (err) {
			failures++;
			if (!kd_sleep(kd, backoff_ms(r, failures)))
				break;
		}
	}
	return NULL;
}

/* ---- the model builder ---- */

/* A set of C strings for the build (addresses already given out). */
struct strset {
	const char **slot;
	size_t mask;
};

static int strset_init(struct strset *s, size_t n)
{
	size_t cap = 64;
	while (cap < 2 * n)
		cap *= 2;
	s->slot = calloc(cap, sizeof(*s->slot));
	s->mask = cap - 1;
	return s->slot ? 0 : -ENOMEM;
}

/* true when added, false when already there. */
static bool strset_add(struct strset *s, const char *str)
{
	for (size_t i = str_hash(str) & s->mask;; i = (i + 1) & s->mask) {
		if (!s->slot[i]) {
			s->slot[i] = str;
			return true;
		}
		if (strcmp(s->slot[i], str) == 0)
			return false;
	}
}

static json_t *labels_json(const struct label *l, int n)
{
	json_t *o = json_object();
	for (int i = 0; o && i < n; i++)
		json_object_set_new(o, l[i].key, json_string(l[i].value));
	return o;
}

/* Addresses not yet taken by another object (the model refuses duplicates; a pod IP
 * reused while the old pod is still listed must not sink the whole model). */
static json_t *addrs_json(struct strset *seen, char **ips, int n)
{
	json_t *a = json_array();
	for (int i = 0; a && i < n; i++)
		if (strset_add(seen, ips[i]))
			json_array_append_new(a, json_string(ips[i]));
	return a;
}

/* The waypoint from an object's own labels, else its namespace's; "none" on the object
 * opts out of the namespace's. NULL name when there is none. */
static void waypoint_of(const char *obj_ns, const char *own, const char *own_ns,
			const struct kobj *ns, bool inherit, const char **name, const char **wns)
{
	*name = NULL;
	*wns = NULL;
	if (own) {
		if (strcmp(own, "none") == 0 || !*own)
			return;
		*name = own;
		*wns = own_ns && *own_ns ? own_ns : obj_ns;
	} else if (inherit && ns && ns->u.ns.wp_name && *ns->u.ns.wp_name &&
		   strcmp(ns->u.ns.wp_name, "none") != 0) {
		*name = ns->u.ns.wp_name;
		*wns = ns->u.ns.wp_ns && *ns->u.ns.wp_ns ? ns->u.ns.wp_ns : obj_ns;
	}
}

static json_t *waypoint_json(const char *name, const char *ns)
{
	return name ? json_pack("{s:s,s:s}", "name", name, "namespace", ns) : json_null();
}

static int pod_ns_cmp(const void *a, const void *b)
{
	const struct kobj *x = *(const struct kobj *const *)a, *y = *(const struct kobj *const *)b;
	return strcmp(x->ns, y->ns);
}

static bool selector_matches(const struct ksvc *s, const struct kpod *p)
{
	/* A Service without a selector has no automatic endpoints. */
	return s->nselector && labels_subset(s->selector, s->nselector, p->labels, p->nlabels);
}

/* A named targetPort: the number the first selected pod gives that name, as kube-proxy
 * resolves it per endpoint (the model holds one number per service port). */
static uint16_t resolve_named_port(struct kobj **by_ns, size_t npods, const struct kobj *svc,
				   const char *pname)
{
	size_t lo = 0, hi = npods;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (strcmp(by_ns[mid]->ns, svc->ns) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i < npods && strcmp(by_ns[i]->ns, svc->ns) == 0; i++) {
		const struct kpod *p = &by_ns[i]->u.pod;
		if (!selector_matches(&svc->u.svc, p))
			continue;
		for (int j = 0; j < p->nnamed; j++)
			if (strcmp(p->named[j].name, pname) == 0)
				return p->named[j].port;
	}
	return 0;
}

static json_t *service_json(struct kube_discovery *kd, const struct kobj *o, struct strset *seen,
			    struct kobj ***by_ns, size_t *nby_ns)
{
	const struct ksvc *s = &o->u.svc;
	const struct kobj *ns = kmap_get(&kd->res[KUBE_RES_NAMESPACES].store, o->ns);
	const char *wp, *wpns;
	json_t *ports = json_array();

	for (int i = 0; ports && i < s->nports; i++) {
		const struct kport *p = &s->ports[i];
		uint16_t target = p->target;
		if (p->target_name) {
			if (!*by_ns) {	/* pods by namespace, once per build */
				struct kmap *pm = &kd->res[KUBE_RES_PODS].store;
				*by_ns = malloc((pm->n + 1) * sizeof(**by_ns));
				if (!*by_ns) {
					json_decref(ports);
					return NULL;
				}
				kmap_foreach(pm, po)
					(*by_ns)[(*nby_ns)++] = po;
				qsort(*by_ns, *nby_ns, sizeof(**by_ns), pod_ns_cmp);
			}
			target = resolve_named_port(*by_ns, *nby_ns, o, p->target_name);
			if (!target)
				target = p->port;
		}
		json_array_append_new(ports, json_pack("{s:i,s:i,s:s*,s:s*}", "port", (int)p->port,
						       "target_port", (int)target, "name", p->name,
						       "app_protocol", p->app_protocol));
	}
	waypoint_of(o->ns, s->wp_name, s->wp_ns, ns, true, &wp, &wpns);
	if (wp && strcmp(wp, o->name) == 0 && strcmp(wpns, o->ns) == 0)
		wp = NULL;	/* the waypoint's own Service does not loop through itself */
	return json_pack("{s:s,s:s,s:o,s:o,s:o,s:o}", "name", o->name, "namespace", o->ns,
			 "addresses", addrs_json(seen, s->ips, s->nips),
			 "selector", labels_json(s->selector, s->nselector), "ports", ports,
			 "waypoint", waypoint_json(wp, wpns));
}

static json_t *workload_json(struct kube_discovery *kd, const struct kobj *o, struct strset *seen)
{
	const struct kpod *p = &o->u.pod;
	const struct kobj *ns = kmap_get(&kd->res[KUBE_RES_NAMESPACES].store, o->ns);
	const struct kobj *node = p->node ? kmap_get(&kd->res[KUBE_RES_NODES].store, p->node) : NULL;
	const char *mode = labels_get(p->labels, p->nlabels, LBL_MODE);
	const char *wp, *wpns;
	bool enrolled, opted_out = mode && strcmp(mode, "none") == 0;

	if (mode && (opted_out || strcmp(mode, "ambient") == 0))
		enrolled = !opted_out;
	else
		enrolled = ns && ns->u.ns.mode && strcmp(ns->u.ns.mode, "ambient") == 0;
	/* a pod that opted out (a waypoint's own pods do) inherits no namespace waypoint */
	waypoint_of(o->ns, labels_get(p->labels, p->nlabels, LBL_WAYPOINT),
		    labels_get(p->labels, p->nlabels, LBL_WAYPOINT_NS), ns, !opted_out, &wp, &wpns);
	return json_pack("{s:s,s:s,s:s,s:s,s:s*,s:o,s:s,s:o,s:b,s:o}", "uid", o->key, "name",
			 o->name, "namespace", o->ns, "service_account", p->service_account, "node",
			 node && node->u.node.ip ? p->node : NULL, "addresses",
			 addrs_json(seen, p->ips, p->nips), "canonical_service", p->canonical,
			 "labels", labels_json(p->labels, p->nlabels), "enrolled", enrolled,
			 "waypoint", waypoint_json(wp, wpns));
}

/* The workloads-file JSON of the stores. Called with kd->lock held. NULL on ENOMEM. */
static json_t *build_json(struct kube_discovery *kd)
{
	struct kmap *pods = &kd->res[KUBE_RES_PODS].store, *svcs = &kd->res[KUBE_RES_SERVICES].store;
	struct kmap *nodes = &kd->res[KUBE_RES_NODES].store;
	json_t *root = NULL, *jn = json_array(), *jw = json_array(), *js = json_array();
	struct strset seen = { 0 };
	struct kobj **by_ns = NULL;
	size_t nby_ns = 0;
	bool fail = !jn || !jw || !js;

	if (!fail && strset_init(&seen, pods->n * 2 + svcs->n * 2))
		fail = true;
	if (!fail) {
		kmap_foreach(nodes, o) {
			if (o->u.node.ip && json_array_append_new(jn, json_pack("{s:s,s:s}", "name",
					o->name, "address", o->u.node.ip)))
				fail = true;
		}
	}
	if (!fail) {	/* services first: a VIP wins over a pod IP */
		kmap_foreach(svcs, o) {
			if (json_array_append_new(js, service_json(kd, o, &seen, &by_ns, &nby_ns)))
				fail = true;
		}
	}
	if (!fail) {
		kmap_foreach(pods, o) {
			if (json_array_append_new(jw, workload_json(kd, o, &seen)))
				fail = true;
		}
	}
	json_t *jr = json_array(), *mc = NULL;
	for (int i = KUBE_RES_AUTHZ_POLICIES; !fail && i <= KUBE_RES_HTTPROUTES; i++) {
		kmap_foreach(&kd->res[i].store, o) {
			if (!jr || json_array_append(jr, o->u.json))
				fail = true;
		}
	}
	kmap_foreach(&kd->res[KUBE_RES_MESH_CONFIG].store, o)
		mc = o->u.json;
	if (!fail)	/* resources is stolen, mesh_config referenced or new */
		root = json_pack("{s:O,s:O,s:O,s:o,s:o}", "nodes", jn, "workloads", jw, "services", js,
				 "resources", jr, "mesh_config", mc ? json_incref(mc) : json_object());
	else
		json_decref(jr);
	json_decref(jn);
	json_decref(jw);
	json_decref(js);
	free(seen.slot);
	free(by_ns);
	return root;
}

static bool all_synced(struct kube_discovery *kd)
{
	for (int i = 0; i < KUBE_RES_COUNT; i++)
		if (!kd->res[i].st.synced)
			return false;
	return true;
}

static void *builder_thread(void *arg)
{
	struct kube_discovery *kd = arg;
	uint64_t last_build = 0;

	for (;;) {
		char err[256];
		json_t *root;
		struct model *m;
		uint64_t t0;

		pthread_mutex_lock(&kd->lock);
		while (!kd->stop && !(kd->dirty && all_synced(kd)))
			pthread_cond_wait(&kd->cond, &kd->lock);
		pthread_mutex_unlock(&kd->lock);
		/* debounce; a slow build (a large cluster) spaces builds out further */
		if (!kd_sleep(kd, MAX((uint64_t)kd->o.debounce_ms, MIN(2 * last_build, 2000))))
			break;
		pthread_mutex_lock(&kd->lock);
		t0 = now_mono_ms();
		kd->dirty = false;
		kd->building = true;
		root = build_json(kd);
		pthread_mutex_unlock(&kd->lock);
		m = root ? model_from_json(root, err, sizeof(err)) : NULL;
		if (!root)
			snprintf(err, sizeof(err), "out of memory");
		json_decref(root);
		last_build = now_mono_ms() - t0;
		pthread_mutex_lock(&kd->lock);
		kd->st.last_build_ms = last_build;
		if (m) {
			kd->st.models_published++;
			kd->st.last_sync_unix_ms = now_real_ns() / 1000000u;
		} else {
			kd->st.model_errors++;
		}
		if (!m)
			kd->building = false;
		pthread_mutex_unlock(&kd->lock);
		if (!m) {
			pr_warn_rl("kube: model not built, keeping the last one: %s", err);
			continue;
		}
		pr_debug("kube: model: %d nodes, %d workloads, %d services (%llu ms)", m->nnodes,
			 m->nworkloads, m->nservices, (unsigned long long)last_build);
		if (kd->o.on_model)
			kd->o.on_model(m, kd->o.arg);
		else
			model_publish(m);
		pthread_mutex_lock(&kd->lock);
		kd->building = false;
		pthread_mutex_unlock(&kd->lock);
	}
	return NULL;
}

/* ---- public API ---- */

char *kube_default_api_url(void)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");
	char *url;
	if (!host || !*host)
		return NULL;
	if (asprintf(&url, strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host,
		     port && *port ? port : "443") < 0)
		return NULL;
	return url;
}

struct kube_discovery *kube_discovery_new(const struct kube_opts *opts)
{
	struct kube_discovery *kd = calloc(1, sizeof(*kd));
	pthread_condattr_t ca;
	int err = 0;

	if (!kd)
		return NULL;
	kd->o = *opts;
	if (kd->o.watch_timeout_s <= 0)
		kd->o.watch_timeout_s = 300;
	if (kd->o.idle_timeout_s <= 0)
		kd->o.idle_timeout_s = 120;
	if (kd->o.debounce_ms <= 0)
		kd->o.debounce_ms = 100;
	if (kd->o.backoff_min_ms <= 0)
		kd->o.backoff_min_ms = 250;
	if (kd->o.backoff_max_ms < kd->o.backoff_min_ms)
		kd->o.backoff_max_ms = MAX(30000, kd->o.backoff_min_ms);
	if (kd->o.list_page <= 0)
		kd->o.list_page = 250;
	if (kd->o.absent_retry_ms <= 0)
		kd->o.absent_retry_ms = 30000;
	kd->api = opts->api_url ? strdup(opts->api_url) : kube_default_api_url();
	kd->token_file = strdup(opts->token_file ? opts->token_file : KUBE_SA_DIR "/token");
	kd->ca_file = strdup(opts->ca_file ? opts->ca_file : KUBE_SA_DIR "/ca.crt");
	kd->o.api_url = kd->o.token_file = kd->o.ca_file = NULL;
	if (!kd->api) {
		pr_err("kube: no API server: set KUBERNETES_SERVICE_HOST or the API URL");
		free(kd->token_file);
		free(kd->ca_file);
		free(kd);
		errno = EINVAL;
		return NULL;
	}
	size_t l = strlen(kd->api);
	while (l && kd->api[l - 1] == '/')
		kd->api[--l] = '\0';
	pthread_mutex_init(&kd->lock, NULL);
	pthread_mutex_init(&kd->tok_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&kd->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (!kd->token_file || !kd->ca_file) {
		err = -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < KUBE_RES_COUNT; i++) {
		struct kres *r = &kd->res[i];
		const struct res_desc *d = &res_descs[i];
		r->kd = kd;
		r->id = (enum kube_res)i;
		r->rng = now_mono_ns() ^ ((uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull);
		if (i == KUBE_RES_MESH_CONFIG) {
			if (asprintf(&r->paths[0], d->path, opts->root_ns && *opts->root_ns
							      ? opts->root_ns : "istio-system") < 0)
				r->paths[0] = NULL;
		} else {
			r->paths[0] = strdup(d->path);
		}
		r->paths[1] = d->old_path ? strdup(d->old_path) : NULL;
		r->npaths = d->old_path ? 2 : 1;
		if (!r->paths[0] || (d->old_path && !r->paths[1])) {
			err = -ENOMEM;
			goto fail;
		}
	}
	kd->o.root_ns = NULL;
	err = -pthread_create(&kd->builder, NULL, builder_thread, kd);
	if (err)
		goto fail;
	kd->builder_started = true;
	for (int i = 0; i < KUBE_RES_COUNT; i++) {
		if (kd->o.skip & (1u << i)) {
			kd->res[i].st.synced = true;	/* never watched: empty */
			continue;
		}
		kd->res[i].st.watched = true;
		err = -pthread_create(&kd->res[i].thread, NULL, res_thread, &kd->res[i]);
		if (err)
			goto fail;
		kd->res[i].started = true;
	}
	pr_info("kube: watching %s", kd->api);
	return kd;
fail:
	pr_err("kube: starting discovery: %s", strerror(-err));
	kube_discovery_free(kd);
	errno = -err;
	return NULL;
}

void kube_discovery_free(struct kube_discovery *kd)
{
	if (!kd)
		return;
	pthread_mutex_lock(&kd->lock);
	kd->stop = true;
	pthread_cond_broadcast(&kd->cond);
	pthread_mutex_unlock(&kd->lock);
	for (int i = 0; i < KUBE_RES_COUNT; i++)
		if (kd->res[i].started)
			pthread_join(kd->res[i].thread, NULL);
	if (kd->builder_started)
		pthread_join(kd->builder, NULL);
	for (int i = 0; i < KUBE_RES_COUNT; i++) {
		kmap_clear((enum kube_res)i, &kd->res[i].store);
		free(kd->res[i].line);
		free(kd->res[i].paths[0]);
		free(kd->res[i].paths[1]);
	}
	pthread_cond_destroy(&kd->cond);
	pthread_mutex_destroy(&kd->lock);
	pthread_mutex_destroy(&kd->tok_lock);
	token_wipe_free(kd->token);
	free(kd->api);
	free(kd->token_file);
	free(kd->ca_file);
	free(kd);
}

void kube_discovery_stats(struct kube_discovery *kd, struct kube_stats *out)
{
	pthread_mutex_lock(&kd->lock);
	*out = kd->st;
	for (int i = 0; i < KUBE_RES_COUNT; i++)
		out->res[i] = kd->res[i].st;
	out->synced = all_synced(kd);
	pthread_mutex_unlock(&kd->lock);
}

json_t *kube_stats_to_json(const struct kube_stats *st)
{
	json_t *res = json_object(), *root;
	for (int i = 0; res && i < KUBE_RES_COUNT; i++) {
		const struct kube_res_stats *r = &st->res[i];
		if (!r->watched)
			continue;	/* skipped (kube_opts.skip) */
		json_object_set_new(res, kube_res_str((enum kube_res)i),
			json_pack("{s:b,s:b,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s*}", "synced",
				  r->synced, "absent", r->absent, "path", r->path,
				  "resource_version", r->resource_version,
				  "objects", (json_int_t)r->objects, "lists", (json_int_t)r->lists,
				  "relists_gone", (json_int_t)r->relists_gone,
				  "watches", (json_int_t)r->watches, "events", (json_int_t)r->events,
				  "bookmarks", (json_int_t)r->bookmarks, "errors", (json_int_t)r->errors,
				  "last_error", r->last_error[0] ? r->last_error : NULL));
	}
	root = json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:o*}", "source", "kubernetes", "synced",
			 st->synced, "last_sync_unix_ms", (json_int_t)st->last_sync_unix_ms,
			 "models_published", (json_int_t)st->models_published, "model_errors",
			 (json_int_t)st->model_errors, "last_build_ms", (json_int_t)st->last_build_ms,
			 "auth_reloads", (json_int_t)st->auth_reloads, "resources", res);
	return root;
}
