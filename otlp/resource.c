// SPDX-License-Identifier: Apache-2.0
/* Resources: the workload facts every span of that workload shares (service.name, k8s.*)
 * merged with OTEL_RESOURCE_ATTRIBUTES; built once per workload, shared by reference. */
#include "otlp/resource.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/version.h"
#include "otlp/config.h"
#include "otlp/tracecontext.h"

struct otlp_resource *otlp_resource_new(void)
{
	struct otlp_resource *r = calloc(1, sizeof(*r));
	if (r)
		r->refs = 1;
	return r;
}

int otlp_resource_set(struct otlp_resource *r, const char *key, const char *value)
{
	return otlp_attrs_set_str(&r->attrs, key, value);
}

struct otlp_resource *otlp_resource_ref(struct otlp_resource *r)
{
	if (r)
		__atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
	return r;
}

void otlp_resource_unref(struct otlp_resource *r)
{
	if (!r || __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	otlp_attrs_fini(&r->attrs);
	free(r);
}

const char *otlp_resource_get(const struct otlp_resource *r, const char *key)
{
	const struct otlp_attr *a = r ? otlp_attrs_get(&r->attrs, key) : NULL;
	return a && a->type == OTLP_ATTR_STRING ? a->v.s : NULL;
}

static int set_if(struct otlp_resource *r, const char *key, const char *value)
{
	return value && *value ? otlp_resource_set(r, key, value) : 0;
}

struct otlp_resource *otlp_resource_for_workload(const struct otlp_config *cfg, const char *service,
						 const char *ns, const char *pod, const char *node)
{
	struct otlp_resource *r = otlp_resource_new();
	int err = 0;

	if (!r)
		return NULL;
	/* OTel SDK: OTEL_SERVICE_NAME wins over service.name from OTEL_RESOURCE_ATTRIBUTES;
	 * the workload's own facts (what the agent knows for sure) win over both. */
	for (uint16_t i = 0; cfg && i < cfg->resource_attrs.n && !err; i++) {
		const struct otlp_attr *a = &cfg->resource_attrs.v[i];
		if (a->type == OTLP_ATTR_STRING)
			err = otlp_resource_set(r, a->key, a->v.s);
	}
	if (!err && cfg && cfg->service_name)
		err = otlp_resource_set(r, "service.name", cfg->service_name);
	if (!err)
		err = set_if(r, "service.name", service);
	if (!err && !otlp_resource_get(r, "service.name"))
		err = otlp_resource_set(r, "service.name", "unknown_service:ambitd");
	if (!err)
		err = set_if(r, "k8s.namespace.name", ns);
	if (!err)
		err = set_if(r, "k8s.pod.name", pod);
	if (!err)
		err = set_if(r, "k8s.node.name", node);
	/* Semantic conventions "telemetry.sdk.*": ambit is its own SDK, so the name is ours
	 * ("opentelemetry" is reserved); the language enum has no "c", "cpp" is the closest
	 * well-known value. Set when OTEL_RESOURCE_ATTRIBUTES did not, as an OTel SDK merges its
	 * default resource under the environment's. */
	static const char *const sdk[][2] = {
		{ "telemetry.sdk.language", "cpp" },
		{ "telemetry.sdk.name", OTLP_SCOPE_NAME },
		{ "telemetry.sdk.version", AMBIT_VERSION },
	};
	for (size_t i = 0; i < ARRAY_SIZE(sdk) && !err; i++)
		if (!otlp_resource_get(r, sdk[i][0]))
			err = otlp_resource_set(r, sdk[i][0], sdk[i][1]);
	if (err && err != -E2BIG) {
		otlp_resource_unref(r);
		errno = -err;
		return NULL;
	}
	return r;
}

int otlp_resource_parse_env(const char *s, struct otlp_attrs *out, char *err, size_t errlen)
{
	struct baggage b = { 0 };
	int rc;

	rc = baggage_parse_env(s, strlen(s), &b);
	if (rc) {
		snprintf(err, errlen, "OTEL_RESOURCE_ATTRIBUTES: '%.100s' is not a list of key=value (%s)",
			 s, rc == -E2BIG ? "too long" : "bad key, value or percent-encoding");
		return rc == -ENOMEM ? rc : -EINVAL;
	}
	for (size_t i = 0; i < b.n && !rc; i++)
		rc = otlp_attrs_set_str(out, b.m[i].key, b.m[i].value);
	baggage_fini(&b);
	if (rc)
		snprintf(err, errlen, "OTEL_RESOURCE_ATTRIBUTES: %s", strerror(-rc));
	return rc;
}
