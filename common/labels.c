// SPDX-License-Identifier: Apache-2.0
/* Kubernetes labels and equality selectors (common/labels.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/labels.h"

void labels_free(struct label *l, int n)
{
	for (int i = 0; l && i < n; i++) {
		free(l[i].key);
		free(l[i].value);
	}
	free(l);
}

int labels_add(struct label *l, int *n, const char *key, const char *value)
{
	char *k = strdup(key), *v = strdup(value);

	if (!k || !v) {
		free(k);
		free(v);
		return -ENOMEM;
	}
	l[*n] = (struct label){ .key = k, .value = v };
	(*n)++;
	return 0;
}

const char *labels_get(const struct label *l, int n, const char *key)
{
	for (int i = 0; i < n; i++)
		if (strcmp(l[i].key, key) == 0)
			return l[i].value;
	return NULL;
}

bool labels_subset(const struct label *sel, int nsel, const struct label *lab, int nlab)
{
	for (int i = 0; i < nsel; i++) {
		const char *v = labels_get(lab, nlab, sel[i].key);
		if (!v || strcmp(v, sel[i].value) != 0)
			return false;
	}
	return true;
}

json_t *labels_to_json(const struct label *l, int n)
{
	json_t *o = json_object();
	for (int i = 0; o && i < n; i++)
		if (json_object_set_new(o, l[i].key, json_string(l[i].value))) {
			json_decref(o);
			return NULL;
		}
	return o;
}
