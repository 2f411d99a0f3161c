// SPDX-License-Identifier: Apache-2.0
/* istio_tcp_* series in a hash map keyed by their label values, and callback metrics;
 * rendered in the Prometheus text format (labels escaped per the exposition spec). */
#include "agent/metrics.h"
#include "common/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_MAX_SERIES 20000
#define METRICS_MAX_CALLBACKS 64
#define NLABELS 14

static const char *const label_names[NLABELS] = {
	"reporter", "source_workload", "source_workload_namespace", "source_principal",
	"source_app", "source_cluster", "destination_workload", "destination_workload_namespace",
	"destination_principal", "destination_app", "destination_service", "destination_cluster",
	"connection_security_policy", "response_flags",
};

static const struct {
	const char *name;
	const char *help;
} tcp_names[METRICS_TCP_NCOUNTERS] = {
	[METRICS_TCP_OPENED] = { "istio_tcp_connections_opened_total", "Total TCP connections opened" },
	[METRICS_TCP_CLOSED] = { "istio_tcp_connections_closed_total", "Total TCP connections closed" },
	[METRICS_TCP_SENT_BYTES] = { "istio_tcp_sent_bytes_total", "Bytes sent during the response of a TCP connection (destination to source)" },
	[METRICS_TCP_RECEIVED_BYTES] = { "istio_tcp_received_bytes_total", "Bytes received during the request of a TCP connection (source to destination)" },
};

struct series {
	char *key;	/* label values joined by \x1f, also the identity of the series */
	char *labels;	/* rendered {a="b",...} */
	uint64_t v[METRICS_TCP_NCOUNTERS];
	struct series *next;
};

static struct series **table;
static size_t table_size;
static size_t nseries;
static uint64_t series_dropped;

static struct {
	const char *name, *help, *type;
	metrics_value_fn fn;
	void *arg;
} callbacks[METRICS_MAX_CALLBACKS];
static int ncallbacks;

#define METRICS_MAX_VECS 16

struct vec_series {
	char *labels;	/* rendered {a="b",...}, also the identity of the series */
	uint64_t v;
	struct vec_series *next;
};

struct metrics_counter_vec {
	const char *name, *help;
	const char *const *label_names;
	int nlabels;
	size_t max_series, nseries;
	struct vec_series *series;	/* newest first */
};

static struct metrics_counter_vec *vecs[METRICS_MAX_VECS];
static int nvecs;

static size_t str_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return (size_t)h;
}

/* Appends s escaped for a label value (\\, \", \n). */
static void esc_append(char **p, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"') {
			*(*p)++ = '\\';
			*(*p)++ = *s;
		} else if (*s == '\n') {
			*(*p)++ = '\\';
			*(*p)++ = 'n';
		} else {
			*(*p)++ = *s;
		}
	}
}

static struct series *series_get(const struct metrics_tcp_labels *l)
{
	const char *vals[NLABELS] = {
		l->reporter, l->source_workload, l->source_workload_namespace, l->source_principal,
		l->source_app, l->source_cluster, l->destination_workload,
		l->destination_workload_namespace, l->destination_principal, l->destination_app,
		l->destination_service, l->destination_cluster, l->connection_security_policy,
		l->response_flags,
	};
	size_t klen = 0, llen = 2;
	for (int i = 0; i < NLABELS; i++) {
		if (!vals[i] || !*vals[i])
			vals[i] = "unknown";
		klen += strlen(vals[i]) + 1;
		llen += strlen(label_names[i]) + 4 + 2 * strlen(vals[i]);
	}
	char *key = malloc(klen), *k = key;
	if (!key)
		return NULL;
	for (int i = 0; i < NLABELS; i++) {
		size_t n = strlen(vals[i]);
		memcpy(k, vals[i], n);
		k += n;
		*k++ = i + 1 < NLABELS ? '\x1f' : '\0';
	}
	if (!table) {
		table_size = 1024;
		table = calloc(table_size, sizeof(*table));
		if (!table) {
			free(key);
			return NULL;
		}
	}
	size_t b = str_hash(key) & (table_size - 1);
	for (struct series *s = table[b]; s; s = s->next) {
		if (strcmp(s->key, key) == 0) {
			free(key);
			return s;
		}
	}
	if (nseries >= METRICS_MAX_SERIES) {
		free(key);
		series_dropped++;
		errno = ENOSPC;
		return NULL;
	}
	struct series *s = calloc(1, sizeof(*s));
	char *labels = malloc(llen + 1), *p = labels;
	if (!s || !labels) {
		free(s);
		free(labels);
		free(key);
		return NULL;
	}
	*p++ = '{';
	for (int i = 0; i < NLABELS; i++) {
		p += sprintf(p, "%s%s=\"", i ? "," : "", label_names[i]);
		esc_append(&p, vals[i]);
		*p++ = '"';
	}
	*p++ = '}';
	*p = '\0';
	s->key = key;
	s->labels = labels;
	s->next = table[b];
	table[b] = s;
	nseries++;
	return s;
}

int metrics_tcp_add(const struct metrics_tcp_labels *l, enum metrics_tcp_counter which, uint64_t v)
{
	struct series *s = series_get(l);
	if (!s)
		return errno == ENOSPC ? -ENOSPC : -ENOMEM;
	s->v[which] += v;
	return 0;
}

struct metrics_counter_vec *metrics_counter_vec_new(const char *name, const char *help,
						    const char *const *labels, int nlabels,
						    size_t max_series)
{
	struct metrics_counter_vec *cv;

	if (nlabels < 1 || nlabels > METRICS_VEC_MAX_LABELS) {
		errno = EINVAL;
		return NULL;
	}
	if (nvecs == METRICS_MAX_VECS) {
		errno = ENOSPC;
		return NULL;
	}
	cv = calloc(1, sizeof(*cv));
	if (!cv)
		return NULL;
	cv->name = name;
	cv->help = help;
	cv->label_names = labels;
	cv->nlabels = nlabels;
	cv->max_series = max_series ? max_series : 1;
	vecs[nvecs++] = cv;
	return cv;
}

/* {a="x",b="y"} of values (escaped); malloc'ed, NULL on ENOMEM. */
static char *vec_labels(const struct metrics_counter_vec *cv, const char *const *values)
{
	size_t len = 3;
	char *out, *p;

	for (int i = 0; i < cv->nlabels; i++)
		len += strlen(cv->label_names[i]) + 4 +
		       2 * strlen(values[i] && *values[i] ? values[i] : "unknown");
	out = p = malloc(len);
	if (!out)
		return NULL;
	*p++ = '{';
	for (int i = 0; i < cv->nlabels; i++) {
		p += sprintf(p, "%s%s=\"", i ? "," : "", cv->label_names[i]);
		esc_append(&p, values[i] && *values[i] ? values[i] : "unknown");
		*p++ = '"';
	}
	*p++ = '}';
	*p = '\0';
	return out;
}

int metrics_counter_vec_add(struct metrics_counter_vec *cv, const char *const *values, uint64_t v)
{
	const char *over[METRICS_VEC_MAX_LABELS];
	struct vec_series *s;
	char *labels = vec_labels(cv, values);

	if (!labels)
		return -ENOMEM;
	for (s = cv->series; s && strcmp(s->labels, labels) != 0; s = s->next)
		;
	if (!s && cv->nseries >= cv->max_series) {
		free(labels);
		for (int i = 0; i < cv->nlabels; i++)
			over[i] = METRICS_VEC_OVERFLOW;
		if (!(labels = vec_labels(cv, over)))
			return -ENOMEM;
		for (s = cv->series; s && strcmp(s->labels, labels) != 0; s = s->next)
			;
	}
	if (s) {
		free(labels);
		s->v += v;
		return 0;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		free(labels);
		return -ENOMEM;
	}
	s->labels = labels;
	s->v = v;
	s->next = cv->series;
	cv->series = s;
	cv->nseries++;	/* the overflow series may exceed the bound by one */
	return 0;
}

int metrics_register(const char *name, const char *help, const char *type, metrics_value_fn fn,
		     void *arg)
{
	if (ncallbacks == METRICS_MAX_CALLBACKS)
		return -ENOSPC;
	callbacks[ncallbacks].name = name;
	callbacks[ncallbacks].help = help;
	callbacks[ncallbacks].type = type;
	callbacks[ncallbacks].fn = fn;
	callbacks[ncallbacks].arg = arg;
	ncallbacks++;
	return 0;
}

char *metrics_render(size_t *len)
{
	char *buf = NULL;
	size_t sz = 0;
	FILE *f = open_memstream(&buf, &sz);
	if (!f)
		return NULL;
	for (int c = 0; c < METRICS_TCP_NCOUNTERS; c++) {
		fprintf(f, "# HELP %s %s.\n# TYPE %s counter\n", tcp_names[c].name, tcp_names[c].help,
			tcp_names[c].name);
		for (size_t b = 0; b < table_size; b++)
			for (struct series *s = table[b]; s; s = s->next)
				fprintf(f, "%s%s %llu\n", tcp_names[c].name, s->labels,
					(unsigned long long)s->v[c]);
	}
	fprintf(f, "# HELP ambit_metrics_series_dropped_total Samples not recorded because the series bound (%d) was reached.\n"
		   "# TYPE ambit_metrics_series_dropped_total counter\nambit_metrics_series_dropped_total %llu\n",
		METRICS_MAX_SERIES, (unsigned long long)series_dropped);
	for (int i = 0; i < nvecs; i++) {
		fprintf(f, "# HELP %s %s.\n# TYPE %s counter\n", vecs[i]->name, vecs[i]->help,
			vecs[i]->name);
		for (struct vec_series *s = vecs[i]->series; s; s = s->next)
			fprintf(f, "%s%s %llu\n", vecs[i]->name, s->labels, (unsigned long long)s->v);
	}
	for (int i = 0; i < ncallbacks; i++) {
		/* A name may carry labels (name{a="b"}): one HELP/TYPE per family, registered
		 * one after the other. */
		const char *name = callbacks[i].name;
		int base = (int)strcspn(name, "{");
		if (i == 0 || strncmp(callbacks[i - 1].name, name, (size_t)base) != 0 ||
		    (callbacks[i - 1].name[base] != '\0' && callbacks[i - 1].name[base] != '{'))
			fprintf(f, "# HELP %.*s %s.\n# TYPE %.*s %s\n", base, name,
				callbacks[i].help, base, name, callbacks[i].type);
		fprintf(f, "%s %.17g\n", name, callbacks[i].fn(callbacks[i].arg));
	}
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	*len = sz;
	return buf;
}

void metrics_reset(void)
{
	for (size_t b = 0; b < table_size; b++) {
		struct series *s = table[b];
		while (s) {
			struct series *n = s->next;
			free(s->key);
			free(s->labels);
			free(s);
			s = n;
		}
	}
	free(table);
	table = NULL;
	for (int i = 0; i < nvecs; i++) {
		struct vec_series *s = vecs[i]->series;
		while (s) {
			struct vec_series *n = s->next;
			free(s->labels);
			free(s);
			s = n;
		}
		free(vecs[i]);
		vecs[i] = NULL;
	}
	nvecs = 0;
	table_size = 0;
	nseries = 0;
	ncallbacks = 0;
}
