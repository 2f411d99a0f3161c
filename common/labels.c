// SPDX-License-Identifier: Apache-2.0
/* Kubernetes labels and equality selectors (common/labels.h). */
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
