// SPDX-License-Identifier: Apache-2.0
/* The mesh model: built from the workloads-file JSON (file and Kubernetes discovery both go
 * through model_from_json), indexed by address, published by reference for the data path. */
#include "agent/workloads.h"
#include "common/jsonx.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_MAX_STR 253	/* DNS-1123 subdomain bound; also used for uids and labels */
#define MODEL_MAX_LABEL_VALUE 1024

/* Open-addressing hash: IP (16 bytes, v4-mapped) -> workload or service index. */
struct index_slot {
	uint8_t ip[16];
	int kind;	/* 0 empty, 1 workload, 2 service */
	int idx;
};

struct model_index {
	struct index_slot *slots;
	size_t mask;
};

static void ip_key(const struct sockaddr_storage *ss, uint8_t out[16])
{
	memset(out, 0, 16);
	if (ss->ss_family == AF_INET) {
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		memcpy(out, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
	}
}

static size_t ip_hash(const uint8_t ip[16])
{
	uint64_t h = 1469598103934665603ull;	/* FNV-1a */
	for (int i = 0; i < 16; i++)
		h = (h ^ ip[i]) * 1099511628211ull;
	return (size_t)h;
}

/* 0, -EEXIST when the address is already taken, -ENOMEM never (pre-sized). */
static int index_put(struct model_index *ix, const struct sockaddr_storage *ss, int kind, int idx)
{
	uint8_t key[16];
	ip_key(ss, key);
	for (size_t i = ip_hash(key) & ix->mask;; i = (i + 1) & ix->mask) {
		struct index_slot *s = &ix->slots[i];
		if (!s->kind) {
			memcpy(s->ip, key, 16);
			s->kind = kind;
			s->idx = idx;
			return 0;
		}
		if (memcmp(s->ip, key, 16) == 0)
			return -EEXIST;
	}
}

static const struct index_slot *index_get(const struct model_index *ix,
					  const struct sockaddr_storage *ss)
{
	uint8_t key[16];
	if (!ix || !ix->slots)
		return NULL;
	ip_key(ss, key);
	for (size_t i = ip_hash(key) & ix->mask;; i = (i + 1) & ix->mask) {
		const struct index_slot *s = &ix->slots[i];
		if (!s->kind)
			return NULL;
		if (memcmp(s->ip, key, 16) == 0)
			return s;
	}
}

/* ---- freeing ---- */

static void wp_free(struct model_waypoint_ref *w)
{
	free(w->name);
	free(w->namespace);
}

static void model_free(struct model *m)
{
	for (int i = 0; i < m->nnodes; i++)
		free(m->nodes[i].name);
	free(m->nodes);
	for (int i = 0; i < m->nworkloads; i++) {
		struct model_workload *w = &m->workloads[i];
		free(w->uid);
		free(w->name);
		free(w->namespace);
		free(w->service_account);
		free(w->node);
		free(w->canonical_service);
		free(w->addrs);
		labels_free(w->labels, w->nlabels);
		wp_free(&w->waypoint);
	}
	free(m->workloads);
	for (int i = 0; i < m->nservices; i++) {
		struct model_service *s = &m->services[i];
		free(s->name);
		free(s->namespace);
		free(s->addrs);
		labels_free(s->selector, s->nselector);
		for (int j = 0; j < s->nports; j++) {
			free(s->ports[j].name);
			free(s->ports[j].app_protocol);
		}
		free(s->ports);
		free(s->endpoints);
		wp_free(&s->waypoint);
	}
	free(m->services);
	json_decref(m->resources);
	json_decref(m->mesh_config);
	if (m->index)
		free(m->index->slots);
	free(m->index);
	free(m);
}

struct model *model_ref(struct model *m)
{
	if (m)
		__atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
	return m;
}

void model_unref(struct model *m)
{
	if (m && __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0)
		model_free(m);
}

struct model *model_new_empty(void)
{
	struct model *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->refs = 1;
	m->resources = json_array();
	m->mesh_config = json_object();
	if (!m->resources || !m->mesh_config) {
		json_decref(m->resources);
		json_decref(m->mesh_config);
		free(m);
		return NULL;
	}
	return m;
}

/* ---- parsing ---- */

static int parse_ip(struct jx *j, const json_t *v, const char *key, struct sockaddr_storage *out)
{
	if (!json_is_string(v))
		return jx_fail(j, key, "must be a string");
	if (ip_parse(json_string_value(v), out))
		return jx_fail(j, key, "'%s' is not an IP address", json_string_value(v));
	return 0;
}

/* Allocates exactly as many addresses as listed (most workloads have one or two). */
static int parse_addrs(struct jx *j, const json_t *obj, const char *key,
		       struct sockaddr_storage **out, int *n)
{
	json_t *arr, *v;
	size_t i;
	int err = jx_array(j, obj, key, MODEL_MAX_ADDRS, &arr);
	struct sockaddr_storage *addrs;

	*n = 0;
	if (err || !arr || !json_array_size(arr))
		return err;
	addrs = calloc(json_array_size(arr), sizeof(*addrs));
	if (!addrs)
		return -ENOMEM;
	*out = addrs;
	json_array_foreach(arr, i, v) {
		char k[64];
		snprintf(k, sizeof(k), "%s[%zu]", key, i);
		if ((err = parse_ip(j, v, k, &addrs[i])))
			return err;
		(*n)++;
	}
	return 0;
}

static int parse_labels(struct jx *j, const json_t *obj, const char *key,
			struct label **out, int *n)
{
	json_t *o, *v;
	const char *k;
	int err = jx_object(j, obj, key, &o);

	*out = NULL;
	*n = 0;
	if (err || !o || json_object_size(o) == 0)
		return err;
	if (json_object_size(o) > MODEL_MAX_LABELS)
		return jx_fail(j, key, "has more than %d entries", MODEL_MAX_LABELS);
	*out = calloc(json_object_size(o), sizeof(**out));
	if (!*out)
		return -ENOMEM;
	json_object_foreach(o, k, v) {
		if (!json_is_string(v))
			return jx_fail(j, key, "value of '%s' must be a string", k);
		if (strlen(k) > MODEL_MAX_STR || json_string_length(v) > MODEL_MAX_LABEL_VALUE)
			return jx_fail(j, key, "'%s' is too long", k);
		if (labels_add(*out, n, k, json_string_value(v)))
			return -ENOMEM;
	}
	return 0;
}

static int parse_waypoint(struct jx *j, const json_t *obj, const char *default_ns,
			  struct model_waypoint_ref *w)
{
	static const char *const keys[] = { "name", "namespace", NULL };
	json_t *v = json_object_get(obj, "waypoint");
	size_t saved;
	int err;

	memset(w, 0, sizeof(*w));
	if (!v || json_is_null(v))
		return 0;
	if (json_is_string(v))	/* shorthand: "waypoint": "name" */
		return (w->name = strdup(json_string_value(v))) &&
		       (w->namespace = strdup(default_ns)) ? 0 : -ENOMEM;
	if (!json_is_object(v))
		return jx_fail(j, "waypoint", "must be null, a name or {name, namespace}");
	saved = jx_enter(j, "waypoint");
	err = jx_keys(j, v, keys);
	if (!err)
		err = jx_str(j, v, "name", true, MODEL_MAX_STR, &w->name);
	if (!err)
		err = jx_str(j, v, "namespace", false, MODEL_MAX_STR, &w->namespace);
	if (!err && !w->namespace && !(w->namespace = strdup(default_ns)))
		err = -ENOMEM;
	jx_leave(j, saved);
	return err;
}

static int parse_node(struct jx *j, const json_t *o, void *out)
{
	static const char *const keys[] = { "name", "address", NULL };
	struct model_node *n = out;
	json_t *a;
	int err;

	if ((err = jx_keys(j, o, keys)) || (err = jx_str(j, o, "name", true, MODEL_MAX_STR, &n->name)))
		return err;
	a = json_object_get(o, "address");
	if (!a)
		return jx_fail(j, "address", "missing");
	return parse_ip(j, a, "address", &n->addr);
}

static int parse_workload(struct jx *j, const json_t *o, void *out)
{
	static const char *const keys[] = { "uid", "name", "namespace", "service_account", "node",
		"addresses", "canonical_service", "labels", "enrolled", "waypoint", NULL };
	struct model_workload *w = out;
	int err;

	if ((err = jx_keys(j, o, keys)) ||
	    (err = jx_str(j, o, "name", true, MODEL_MAX_STR, &w->name)) ||
	    (err = jx_str(j, o, "namespace", true, MODEL_MAX_STR, &w->namespace)) ||
	    (err = jx_str(j, o, "uid", false, 2 * MODEL_MAX_STR + 1, &w->uid)) ||
	    (err = jx_str(j, o, "service_account", false, MODEL_MAX_STR, &w->service_account)) ||
	    (err = jx_str(j, o, "node", false, MODEL_MAX_STR, &w->node)) ||
	    (err = jx_str(j, o, "canonical_service", false, MODEL_MAX_STR, &w->canonical_service)) ||
	    (err = parse_addrs(j, o, "addresses", &w->addrs, &w->naddrs)) ||
	    (err = parse_labels(j, o, "labels", &w->labels, &w->nlabels)) ||
	    (err = jx_bool(j, o, "enrolled", &w->enrolled)) ||
	    (err = parse_waypoint(j, o, w->namespace, &w->waypoint)))
		return err;
	/* Defaults as Kubernetes gives them. */
	if (!w->uid && asprintf(&w->uid, "%s/%s", w->namespace, w->name) < 0) {
		w->uid = NULL;
		return -ENOMEM;
	}
	if (!w->service_account && !(w->service_account = strdup("default")))
		return -ENOMEM;
	if (!w->canonical_service && !(w->canonical_service = strdup(w->name)))
		return -ENOMEM;
	return 0;
}

static int parse_service(struct jx *j, const json_t *o, void *out)
{
	static const char *const keys[] = { "name", "namespace", "addresses", "selector", "ports",
		"waypoint", NULL };
	static const char *const port_keys[] = { "port", "target_port", "name", "app_protocol",
		"protocol", NULL };
	struct model_service *s = out;
	json_t *ports, *pv;
	size_t i;
	int err;

	if ((err = jx_keys(j, o, keys)) ||
	    (err = jx_str(j, o, "name", true, MODEL_MAX_STR, &s->name)) ||
	    (err = jx_str(j, o, "namespace", true, MODEL_MAX_STR, &s->namespace)) ||
	    (err = parse_addrs(j, o, "addresses", &s->addrs, &s->naddrs)) ||
	    (err = parse_labels(j, o, "selector", &s->selector, &s->nselector)) ||
	    (err = parse_waypoint(j, o, s->namespace, &s->waypoint)) ||
	    (err = jx_array(j, o, "ports", MODEL_MAX_PORTS, &ports)) || !ports)
		return err;
	s->ports = calloc(json_array_size(ports) + 1, sizeof(*s->ports));
	if (!s->ports)
		return -ENOMEM;
	json_array_foreach(ports, i, pv) {
		size_t saved = jx_enter(j, "ports[%zu]", i);
		uint32_t port = 0, tp = 0;
		if (!json_is_object(pv))
			return jx_fail(j, NULL, "must be an object");
		s->nports++;	/* counted before its strings, which the model's free releases */
		if ((err = jx_keys(j, pv, port_keys)) || (err = jx_uint(j, pv, "port", 1, 65535, &port)) ||
		    (err = jx_uint(j, pv, "target_port", 1, 65535, &tp)) ||
		    (err = jx_str(j, pv, "name", false, MODEL_MAX_STR, &s->ports[i].name)) ||
		    (err = jx_str(j, pv, "app_protocol", false, MODEL_MAX_STR, &s->ports[i].app_protocol)))
			return err;
		if (!port)
			return jx_fail(j, "port", "missing");
		jx_leave(j, saved);
		s->ports[i].port = (uint16_t)port;
		s->ports[i].target_port = (uint16_t)(tp ? tp : port);
	}
	return 0;
}

/* Parses the array root[key] into elements of size `sz` with fn. */
static int parse_array(struct jx *j, const json_t *root, const char *key, size_t max, size_t sz,
		       void **out, int *n, int (*fn)(struct jx *, const json_t *, void *))
{
	json_t *arr, *v;
	size_t i;
	int err = jx_array(j, root, key, max, &arr);

	*n = 0;
	*out = NULL;
	if (err || !arr)
		return err;
	*out = calloc(json_array_size(arr) + 1, sz);
	if (!*out)
		return -ENOMEM;
	json_array_foreach(arr, i, v) {
		size_t saved = jx_enter(j, "%s[%zu]", key, i);
		(*n)++;	/* counted first so a half-parsed element is freed */
		if (!json_is_object(v))
			return jx_fail(j, NULL, "must be an object");
		if ((err = fn(j, v, (char *)*out + i * sz)))
			return err;
		jx_leave(j, saved);
	}
	return 0;
}

/* A Service without a selector has no automatic endpoints. */
static bool selects(const struct label *sel, int nsel, const struct label *lab, int nlab)
{
	return nsel > 0 && labels_subset(sel, nsel, lab, nlab);
}

static int ns_cmp(const void *a, const void *b, void *arg)
{
	const struct model *m = arg;
	const int *x = a, *y = b;
	int c = strcmp(m->workloads[*x].namespace, m->workloads[*y].namespace);
	return c ? c : *x - *y;
}

/* Endpoints: same-namespace workloads whose labels match the selector. Workloads are sorted
 * by namespace once so each service scans only its own namespace. */
static int resolve_endpoints(struct model *m)
{
	int *order = NULL, err = 0;
	if (!m->nworkloads || !m->nservices)
		return 0;
	order = malloc((size_t)m->nworkloads * sizeof(*order));
	if (!order)
		return -ENOMEM;
	for (int i = 0; i < m->nworkloads; i++)
		order[i] = i;
	qsort_r(order, (size_t)m->nworkloads, sizeof(*order), ns_cmp, m);
	for (int si = 0; si < m->nservices; si++) {
		struct model_service *s = &m->services[si];
		int lo = 0, hi = m->nworkloads, cap = 0;
		if (!s->nselector)
			continue;
		while (lo < hi) {	/* first workload of s->namespace */
			int mid = (lo + hi) / 2;
			if (strcmp(m->workloads[order[mid]].namespace, s->namespace) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (int i = lo; i < m->nworkloads; i++) {
			const struct model_workload *w = &m->workloads[order[i]];
			if (strcmp(w->namespace, s->namespace) != 0)
				break;
			if (!selects(s->selector, s->nselector, w->labels, w->nlabels))
				continue;
			if (s->nendpoints == cap) {
				cap = cap ? cap * 2 : 4;
				int *ne = realloc(s->endpoints, (size_t)cap * sizeof(*ne));
				if (!ne) {
					err = -ENOMEM;
					goto out;
				}
				s->endpoints = ne;
			}
			s->endpoints[s->nendpoints++] = order[i];
		}
	}
out:
	free(order);
	return err;
}

static int build_index(struct model *m, struct jx *j)
{
	size_t n = 0, cap = 16;
	for (int i = 0; i < m->nworkloads; i++)
		n += (size_t)m->workloads[i].naddrs;
	for (int i = 0; i < m->nservices; i++)
		n += (size_t)m->services[i].naddrs;
	while (cap < 2 * n)
		cap *= 2;
	m->index = calloc(1, sizeof(*m->index));
	if (!m->index)
		return -ENOMEM;
	m->index->slots = calloc(cap, sizeof(*m->index->slots));
	if (!m->index->slots)
		return -ENOMEM;
	m->index->mask = cap - 1;
	for (int i = 0; i < m->nservices; i++)
		for (int a = 0; a < m->services[i].naddrs; a++)
			if (index_put(m->index, &m->services[i].addrs[a], 2, i)) {
				char ip[ADDR_STR_LEN];
				jx_enter(j, "services[%d]", i);
				return jx_fail(j, "addresses", "%s is used twice",
					    sockaddr_ip_str(&m->services[i].addrs[a], ip, sizeof(ip)));
			}
	for (int i = 0; i < m->nworkloads; i++)
		for (int a = 0; a < m->workloads[i].naddrs; a++)
			if (index_put(m->index, &m->workloads[i].addrs[a], 1, i)) {
				char ip[ADDR_STR_LEN];
				jx_enter(j, "workloads[%d]", i);
				return jx_fail(j, "addresses", "%s is used twice",
					    sockaddr_ip_str(&m->workloads[i].addrs[a], ip, sizeof(ip)));
			}
	return 0;
}

/* `resources` and `mesh_config`: deep copies, so the model owns JSON no other thread can
 * change. Only the envelope is checked; the istio/ modules judge each object's content. */
static int parse_istio(struct jx *j, const json_t *root, struct model *m)
{
	json_t *res, *mesh, *v;
	size_t i;
	int err = jx_array(j, root, "resources", MODEL_MAX_RESOURCES, &res);
	if (!err)
		err = jx_object(j, root, "mesh_config", &mesh);
	if (err)
		return err;
	json_array_foreach(res, i, v) {
		size_t saved = jx_enter(j, "resources[%zu]", i);
		if (!json_is_object(v))
			return jx_fail(j, NULL, "must be an object (a Kubernetes resource)");
		if (!json_is_string(json_object_get(v, "apiVersion")))
			return jx_fail(j, "apiVersion", "must be a string");
		if (!json_is_string(json_object_get(v, "kind")))
			return jx_fail(j, "kind", "must be a string");
		jx_leave(j, saved);
	}
	if (res) {
		json_decref(m->resources);
		m->resources = json_deep_copy(res);
	}
	if (mesh) {
		json_decref(m->mesh_config);
		m->mesh_config = json_deep_copy(mesh);
	}
	return m->resources && m->mesh_config ? 0 : -ENOMEM;
}

struct model *model_from_json(const json_t *root, char *err, size_t errlen)
{
	static const char *const keys[] = { "nodes", "workloads", "services", "resources",
					    "mesh_config", NULL };
	struct jx j;
	struct model *m;
	int rc;

	jx_init(&j, NULL, err, errlen);
	if (!json_is_object(root)) {
		snprintf(err, errlen, "the top level must be an object with nodes, workloads, services");
		errno = EINVAL;
		return NULL;
	}
	m = model_new_empty();
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	rc = jx_keys(&j, root, keys);
	if (!rc)
		rc = parse_array(&j, root, "nodes", MODEL_MAX_NODES, sizeof(struct model_node),
				 (void **)&m->nodes, &m->nnodes, parse_node);
	if (!rc)
		rc = parse_array(&j, root, "workloads", MODEL_MAX_WORKLOADS,
				 sizeof(struct model_workload), (void **)&m->workloads,
				 &m->nworkloads, parse_workload);
	if (!rc)
		rc = parse_array(&j, root, "services", MODEL_MAX_SERVICES,
				 sizeof(struct model_service), (void **)&m->services, &m->nservices,
				 parse_service);
	if (!rc)
		rc = parse_istio(&j, root, m);
	for (int i = 0; !rc && i < m->nworkloads; i++) {
		if (m->workloads[i].node && !model_node_by_name(m, m->workloads[i].node)) {
			jx_enter(&j, "workloads[%d]", i);
			rc = jx_fail(&j, "node", "'%s' is not in nodes", m->workloads[i].node);
		}
	}
	if (!rc)
		rc = build_index(m, &j);
	if (!rc)
		rc = resolve_endpoints(m);
	if (rc) {
		if (rc == -ENOMEM)
			snprintf(err, errlen, "out of memory");
		model_free(m);
		errno = -rc;
		return NULL;
	}
	return m;
}

struct model *model_parse(const char *text, size_t len, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	struct model *m;
	if (!root) {
		snprintf(err, errlen, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
		errno = EINVAL;
		return NULL;
	}
	m = model_from_json(root, err, errlen);
	json_decref(root);
	return m;
}

/* ---- lookups ---- */

const struct model_workload *model_workload_by_ip(const struct model *m,
						  const struct sockaddr_storage *ip)
{
	const struct index_slot *s = index_get(m->index, ip);
	return s && s->kind == 1 ? &m->workloads[s->idx] : NULL;
}

const struct model_service *model_service_by_vip(const struct model *m,
						 const struct sockaddr_storage *ip)
{
	const struct index_slot *s = index_get(m->index, ip);
	return s && s->kind == 2 ? &m->services[s->idx] : NULL;
}

const struct model_service *model_service_by_name(const struct model *m, const char *ns,
						  const char *name)
{
	for (int i = 0; i < m->nservices; i++)
		if (strcmp(m->services[i].name, name) == 0 && strcmp(m->services[i].namespace, ns) == 0)
			return &m->services[i];
	return NULL;
}

const struct model_workload *model_workload_by_uid(const struct model *m, const char *uid)
{
	for (int i = 0; i < m->nworkloads; i++)
		if (strcmp(m->workloads[i].uid, uid) == 0)
			return &m->workloads[i];
	return NULL;
}

const struct model_node *model_node_by_name(const struct model *m, const char *name)
{
	for (int i = 0; i < m->nnodes; i++)
		if (strcmp(m->nodes[i].name, name) == 0)
			return &m->nodes[i];
	return NULL;
}

const struct sockaddr_storage *model_workload_addr(const struct model_workload *w, int family)
{
	for (int i = 0; i < w->naddrs; i++)
		if (w->addrs[i].ss_family == family)
			return &w->addrs[i];
	return NULL;
}

const struct model_port *model_service_port(const struct model_service *svc, uint16_t port)
{
	for (int i = 0; svc && i < svc->nports; i++)
		if (svc->ports[i].port == port)
			return &svc->ports[i];
	return NULL;
}

enum protocol model_port_protocol(const struct model_port *p)
{
	return p ? protocol_of_port(p->name, p->app_protocol) : PROTOCOL_UNKNOWN;
}

uint16_t model_service_target_port(const struct model_service *svc, uint16_t port)
{
	const struct model_port *p = model_service_port(svc, port);
	return p ? p->target_port : 0;
}

const struct model_service *model_service_of_endpoint(const struct model *m,
						      const struct model_workload *w,
						      uint16_t target_port,
						      const struct model_service *waypoint)
{
	const struct model_service *first = NULL;
	int wi = w ? (int)(w - m->workloads) : -1;

	if (wi < 0 || wi >= m->nworkloads)
		return NULL;
	for (int i = 0; i < m->nservices; i++) {
		const struct model_service *s = &m->services[i];
		bool member = false, port = false;
		for (int e = 0; e < s->nendpoints && !member; e++)
			member = s->endpoints[e] == wi;
		for (int p = 0; p < s->nports && member && !port; p++)
			port = (s->ports[p].target_port ? s->ports[p].target_port
							: s->ports[p].port) == target_port;
		if (!port)
			continue;
		if (!waypoint || model_waypoint_for(m, s, NULL) == waypoint)
			return s;
		if (!first)
			first = s;
	}
	return first;
}

const struct model_service *model_waypoint_for(const struct model *m,
					       const struct model_service *svc,
					       const struct model_workload *wl)
{
	const struct model_waypoint_ref *ref = NULL;
	if (svc && svc->waypoint.name)
		ref = &svc->waypoint;
	else if (!svc && wl && wl->waypoint.name)
		ref = &wl->waypoint;
	if (!ref)
		return NULL;
	return model_service_by_name(m, ref->namespace, ref->name);
}

/* ---- JSON dump ---- */

static json_t *addrs_json(const struct sockaddr_storage *a, int n)
{
	json_t *arr = json_array();
	char ip[ADDR_STR_LEN];
	for (int i = 0; arr && i < n; i++)
		json_array_append_new(arr, json_string(sockaddr_ip_str(&a[i], ip, sizeof(ip))));
	return arr;
}

static json_t *wp_json(const struct model_waypoint_ref *w)
{
	if (!w->name)
		return json_null();
	return json_pack("{s:s,s:s?}", "name", w->name, "namespace", w->namespace);
}

json_t *model_to_json(const struct model *m)
{
	json_t *root = json_object(), *nodes = json_array(), *wls = json_array(), *svcs = json_array();
	char ip[ADDR_STR_LEN];
	if (!root || !nodes || !wls || !svcs) {
		json_decref(root), json_decref(nodes), json_decref(wls), json_decref(svcs);
		return NULL;
	}
	for (int i = 0; i < m->nnodes; i++)
		json_array_append_new(nodes, json_pack("{s:s,s:s}", "name", m->nodes[i].name, "address",
						       sockaddr_ip_str(&m->nodes[i].addr, ip, sizeof(ip))));
	for (int i = 0; i < m->nworkloads; i++) {
		const struct model_workload *w = &m->workloads[i];
		json_array_append_new(wls, json_pack("{s:s,s:s,s:s,s:s,s:s?,s:o,s:s,s:o,s:b,s:o}",
			"uid", w->uid, "name", w->name, "namespace", w->namespace,
			"service_account", w->service_account, "node", w->node,
			"addresses", addrs_json(w->addrs, w->naddrs),
			"canonical_service", w->canonical_service,
			"labels", labels_to_json(w->labels, w->nlabels), "enrolled", w->enrolled,
			"waypoint", wp_json(&w->waypoint)));
	}
	for (int i = 0; i < m->nservices; i++) {
		const struct model_service *s = &m->services[i];
		json_t *ports = json_array(), *eps = json_array();
		for (int j = 0; ports && j < s->nports; j++)
			json_array_append_new(ports, json_pack("{s:i,s:i,s:s*,s:s*}", "port",
				s->ports[j].port, "target_port", s->ports[j].target_port,
				"name", s->ports[j].name, "app_protocol", s->ports[j].app_protocol));
		for (int j = 0; eps && j < s->nendpoints; j++)
			json_array_append_new(eps, json_string(m->workloads[s->endpoints[j]].uid));
		json_array_append_new(svcs, json_pack("{s:s,s:s,s:o,s:o,s:o,s:o,s:o}",
			"name", s->name, "namespace", s->namespace,
			"addresses", addrs_json(s->addrs, s->naddrs),
			"selector", labels_to_json(s->selector, s->nselector), "ports", ports,
			"waypoint", wp_json(&s->waypoint), "endpoints", eps));
	}
	json_object_set_new(root, "nodes", nodes);
	json_object_set_new(root, "workloads", wls);
	json_object_set_new(root, "services", svcs);
	/* Copies: the model's JSON is shared between threads and must not see refcount churn. */
	json_object_set_new(root, "resources", json_deep_copy(m->resources));
	json_object_set_new(root, "mesh_config", json_deep_copy(m->mesh_config));
	return root;
}

/* ---- publication ---- */

#define MODEL_MAX_LISTENERS 8

static pthread_mutex_t pub_lock = PTHREAD_MUTEX_INITIALIZER;
static struct model *pub_current;
static uint64_t pub_generation;
static struct {
	model_listener_fn fn;
	void *arg;
} listeners[MODEL_MAX_LISTENERS];
static int nlisteners;

void model_publish(struct model *m)
{
	struct model *old;
	model_listener_fn fns[MODEL_MAX_LISTENERS];
	void *args[MODEL_MAX_LISTENERS];
	int n;

	pthread_mutex_lock(&pub_lock);
	m->generation = ++pub_generation;
	old = pub_current;
	pub_current = m;
	n = nlisteners;
	for (int i = 0; i < n; i++) {
		fns[i] = listeners[i].fn;
		args[i] = listeners[i].arg;
	}
	model_ref(m);	/* held across the listener calls */
	pthread_mutex_unlock(&pub_lock);
	for (int i = 0; i < n; i++)
		fns[i](m, args[i]);
	model_unref(m);
	model_unref(old);
}

struct model *model_current(void)
{
	struct model *m;
	pthread_mutex_lock(&pub_lock);
	if (!pub_current)
		pub_current = model_new_empty();
	m = model_ref(pub_current);
	pthread_mutex_unlock(&pub_lock);
	return m;
}

int model_subscribe(model_listener_fn fn, void *arg)
{
	int err = 0;
	pthread_mutex_lock(&pub_lock);
	if (nlisteners == MODEL_MAX_LISTENERS) {
		err = -ENOSPC;
	} else {
		listeners[nlisteners].fn = fn;
		listeners[nlisteners].arg = arg;
		nlisteners++;
	}
	pthread_mutex_unlock(&pub_lock);
	return err;
}
