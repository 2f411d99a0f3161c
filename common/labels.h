/* SPDX-License-Identifier: Apache-2.0 */
/* Kubernetes labels (key=value pairs) and equality selectors (`matchLabels`), shared by the
 * mesh model (Service selectors) and the Istio objects (workload selectors). */
#ifndef AMBIT_COMMON_LABELS_H
#define AMBIT_COMMON_LABELS_H

#include <jansson.h>
#include <stdbool.h>

struct label {
	char *key;
	char *value;
};

/* Frees n labels and the array. Accepts NULL. */
void labels_free(struct label *l, int n);
/* Appends copies of key and value as l[*n] (room for it is the caller's) and counts it in *n.
 * 0, or -ENOMEM with nothing added. */
int labels_add(struct label *l, int *n, const char *key, const char *value);
/* The value of key among l[0..n), or NULL. Borrowed. */
const char *labels_get(const struct label *l, int n, const char *key);
/* Every pair of sel[0..nsel) is in lab[0..nlab) (Kubernetes `matchLabels`). An empty
 * selector selects everything: callers with another rule for it (a Service without a selector
 * has no endpoints) check nsel themselves. */
bool labels_subset(const struct label *sel, int nsel, const struct label *lab, int nlab);
/* {"key": "value", ...}: a new reference, NULL on ENOMEM. */
json_t *labels_to_json(const struct label *l, int n);

#endif
