/* SPDX-License-Identifier: Apache-2.0 */
/* The OTel resource a span belongs to (the workload the agent acts for), refcounted and
 * immutable once shared, plus the instrumentation scope ("ambit", version). */
#ifndef AMBIT_OTLP_RESOURCE_H
#define AMBIT_OTLP_RESOURCE_H

#include "otlp/span.h"

#define OTLP_SCOPE_NAME "ambit"

struct otlp_config;

struct otlp_resource {
	struct otlp_attrs attrs;
	int refs;		/* atomic */
};

/* An empty resource with one reference. NULL + errno. */
struct otlp_resource *otlp_resource_new(void);
/* A workload's resource: the config's OTEL_RESOURCE_ATTRIBUTES first, then service.name,
 * k8s.namespace.name, k8s.pod.name, k8s.node.name from the arguments (those win; NULL or
 * "" arguments are skipped), then telemetry.sdk.*. service NULL falls back to the config's
 * service name (OTEL_SERVICE_NAME) or "unknown_service:ambitd". cfg may be NULL. NULL + errno. */
struct otlp_resource *otlp_resource_for_workload(const struct otlp_config *cfg, const char *service,
						 const char *ns, const char *pod, const char *node);
/* Only before the resource is shared (spans read it without locks). Same rules as span_set_str. */
int otlp_resource_set(struct otlp_resource *r, const char *key, const char *value);
struct otlp_resource *otlp_resource_ref(struct otlp_resource *r);
void otlp_resource_unref(struct otlp_resource *r);
/* The string value of key, or NULL. */
const char *otlp_resource_get(const struct otlp_resource *r, const char *key);

/* Parses OTEL_RESOURCE_ATTRIBUTES ("k1=v1,k2=v2", values percent-decoded, OTel SDK
 * "Specifying resource information via an environment variable") into a (string) set.
 * 0; -EINVAL with err set on a malformed list (nothing added); -ENOMEM. */
int otlp_resource_parse_env(const char *s, struct otlp_attrs *out, char *err, size_t errlen);

#endif
