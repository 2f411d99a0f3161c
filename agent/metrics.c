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
	table_size = 0;
	nseries = 0;
	ncallbacks = 0;
}
