/* SPDX-License-Identifier: Apache-2.0 */
/* YAML to JSON (the only user of libyaml): the `istio` ConfigMap's `mesh` key is YAML, the
 * Istio modules read JSON. Scalars are typed as Kubernetes' YAML reader (YAML 1.1) types them:
 * plain true/false/yes/no/on/off are booleans, null/~/empty are null, numbers are numbers,
 * anything quoted is a string. */
#ifndef AMBIT_COMMON_YAMLJSON_H
#define AMBIT_COMMON_YAMLJSON_H

#include <jansson.h>
#include <stddef.h>

#define YAMLJSON_MAX_INPUT (1u << 20)	/* a ConfigMap holds at most 1 MiB */
#define YAMLJSON_MAX_DEPTH 64
#define YAMLJSON_MAX_NODES 100000

/* The first document of text[0..len) as JSON (an empty document is an empty object). Mapping
 * keys must be scalars; aliases, more than one document, and input past the bounds are
 * refused. NULL with err set ("line 3, column 5: ...") on bad input; NULL and errno ENOMEM. */
json_t *yaml_to_json(const char *text, size_t len, char *err, size_t errlen);

#endif
