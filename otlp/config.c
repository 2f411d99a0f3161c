// SPDX-License-Identifier: Apache-2.0
/* Tracing configuration: defaults, setters for the agent's JSON values, and the OTEL_*
 * environment variables of the OTel SDK configuration and OTLP exporter specs. */
#include "otlp/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "otlp/resource.h"
#include "otlp/tracecontext.h"

static int pair_set(struct otlp_header *h, size_t *n, size_t max, const char *name, const char *value);

void otlp_config_init(struct otlp_config *c)
{
	memset(c, 0, sizeof(*c));
	c->enabled = true;
	c->export = true;
	c->protocol = OTLP_PROTO_GRPC;
	c->sampling = 100.0;
	c->sampler = SAMPLER_PARENT_TRACEIDRATIO;
	batcher_opts_default(&c->batch);
	c->shutdown_timeout_ms = 5000;
	c->ring_size = 1024;
}

static void pairs_fini(struct otlp_header *h, size_t *n)
{
	for (size_t i = 0; i < *n; i++) {
		free(h[i].name);
		free(h[i].value);
		h[i].name = h[i].value = NULL;
	}
	*n = 0;
}

void otlp_config_fini(struct otlp_config *c)
{
	if (!c)
		return;
	free(c->endpoint);
	free(c->service_name);
	free(c->ca_file);
	free(c->client_cert);
	free(c->client_key);
	pairs_fini(c->headers, &c->nheaders);
	pairs_fini(c->tags, &c->ntags);
	otlp_attrs_fini(&c->resource_attrs);
	memset(c, 0, sizeof(*c));
}

int otlp_config_copy(struct otlp_config *dst, const struct otlp_config *src)
{
	int rc = 0;

	*dst = *src;
	dst->endpoint = NULL;
	dst->service_name = NULL;
	dst->ca_file = dst->client_cert = dst->client_key = NULL;
	dst->nheaders = dst->ntags = 0;
	memset(&dst->resource_attrs, 0, sizeof(dst->resource_attrs));
	if ((src->endpoint && !(dst->endpoint = strdup(src->endpoint))) ||
	    (src->service_name && !(dst->service_name = strdup(src->service_name))) ||
	    (src->ca_file && !(dst->ca_file = strdup(src->ca_file))) ||
	    (src->client_cert && !(dst->client_cert = strdup(src->client_cert))) ||
	    (src->client_key && !(dst->client_key = strdup(src->client_key))))
		rc = -ENOMEM;
	for (size_t i = 0; !rc && i < src->nheaders; i++)
		rc = pair_set(dst->headers, &dst->nheaders, OTLP_MAX_HEADERS, src->headers[i].name, src->headers[i].value);
	for (size_t i = 0; !rc && i < src->ntags; i++)
		rc = pair_set(dst->tags, &dst->ntags, OTLP_MAX_TAGS, src->tags[i].name, src->tags[i].value);
	for (uint16_t i = 0; !rc && i < src->resource_attrs.n; i++) {
		const struct otlp_attr *a = &src->resource_attrs.v[i];
		if (a->type == OTLP_ATTR_STRING)
			rc = otlp_attrs_set_str(&dst->resource_attrs, a->key, a->v.s);
	}
	if (rc)
		otlp_config_fini(dst);
	return rc;
}

const char *otlp_protocol_str(enum otlp_protocol p)
{
	return p == OTLP_PROTO_HTTP_PROTOBUF ? "http/protobuf" : "grpc";
}

int otlp_config_set_protocol(struct otlp_config *c, const char *name, char *err, size_t errlen)
{
	if (name && strcmp(name, "grpc") == 0) {
		c->protocol = OTLP_PROTO_GRPC;
		return 0;
	}
	if (name && strcmp(name, "http/protobuf") == 0) {
		c->protocol = OTLP_PROTO_HTTP_PROTOBUF;
		return 0;
	}
	snprintf(err, errlen, "protocol '%.64s' is not supported (grpc or http/protobuf)", name ? name : "");
	return -EINVAL;
}

int otlp_url_parse(const char *url, struct otlp_url *out, char *err, size_t errlen)
{
	const char *p, *host, *host_end, *port_s = NULL;

	memset(out, 0, sizeof(*out));
	if (!url || !*url) {
		snprintf(err, errlen, "empty endpoint URL");
		return -EINVAL;
	}
	for (p = url; *p; p++) {
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
			snprintf(err, errlen, "endpoint '%.128s' has a space or control character", url);
			return -EINVAL;
		}
	}
	if (strncmp(url, "http://", 7) == 0) {
		host = url + 7;
		out->port = 80;
	} else if (strncmp(url, "https://", 8) == 0) {
		host = url + 8;
		out->https = true;
		out->port = 443;
	} else {
		snprintf(err, errlen, "endpoint '%.128s' must start with http:// or https://", url);
		return -EINVAL;
	}
	if (*host == '[') {
		host_end = strchr(host, ']');
		if (!host_end || host_end == host + 1)
			goto bad_host;
		p = host_end + 1;
		host++;
	} else {
		host_end = host + strcspn(host, ":/?#");
		p = host_end;
		for (const char *q = host; q < host_end; q++)
			if (!isalnum((unsigned char)*q) && *q != '.' && *q != '-' && *q != '_')
				goto bad_host;
	}
	if (host_end == host || (size_t)(host_end - host) >= sizeof(out->host))
		goto bad_host;
	memcpy(out->host, host, (size_t)(host_end - host));
	if (*p == ':') {
		char *end;
		port_s = p + 1;
		unsigned long port = strtoul(port_s, &end, 10);
		if (end == port_s || !isdigit((unsigned char)*port_s) || port == 0 || port > 65535 ||
		    (*end && *end != '/' && *end != '?')) {
			snprintf(err, errlen, "endpoint '%.128s' has a bad port", url);
			return -EINVAL;
		}
		out->port = (uint16_t)port;
		p = end;
	}
	if (*p && *p != '/' && *p != '?') {
		snprintf(err, errlen, "endpoint '%.128s': unexpected '%c' after the host", url, *p);
		return -EINVAL;
	}
	if (strlen(p) >= sizeof(out->path)) {
		snprintf(err, errlen, "endpoint '%.128s': path too long", url);
		return -EINVAL;
	}
	strcpy(out->path, p);
	return 0;
bad_host:
	snprintf(err, errlen, "endpoint '%.128s' has no valid host", url);
	return -EINVAL;
}

/* "host:port" without a scheme, which only grpc takes (OTEL_EXPORTER_OTLP_INSECURE). */
static bool url_has_scheme(const char *url)
{
	return strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0;
}

/* Checks url, or "http://" + url when it has no scheme (the scheme is chosen later). */
static int endpoint_check(const char *url, char *err, size_t errlen)
{
	struct otlp_url u;
	char full[1024];

	if (!url || !*url || url_has_scheme(url) || strstr(url, "://"))
		return otlp_url_parse(url, &u, err, errlen);
	if (snprintf(full, sizeof(full), "http://%s", url) >= (int)sizeof(full)) {
		snprintf(err, errlen, "endpoint '%.128s' too long", url);
		return -EINVAL;
	}
	return otlp_url_parse(full, &u, err, errlen);
}

static int set_endpoint(struct otlp_config *c, const char *url, bool signal, char *err, size_t errlen)
{
	int rc = endpoint_check(url, err, errlen);
	if (rc)
		return rc;
	char *dup = strdup(url);
	if (!dup)
		return -ENOMEM;
	free(c->endpoint);
	c->endpoint = dup;
	c->endpoint_is_signal = signal;
	return 0;
}

int otlp_config_set_endpoint(struct otlp_config *c, const char *url, char *err, size_t errlen)
{
	return set_endpoint(c, url, false, err, errlen);
}

int otlp_config_set_sampling(struct otlp_config *c, double percent, char *err, size_t errlen)
{
	if (isnan(percent) || percent < 0.0 || percent > 100.0) {
		snprintf(err, errlen, "sampling %g is not a percentage (0..100)", percent);
		return -EINVAL;
	}
	c->sampling = percent;
	return 0;
}

static int pair_set(struct otlp_header *h, size_t *n, size_t max, const char *name, const char *value)
{
	for (size_t i = 0; i < *n; i++) {
		if (strcmp(h[i].name, name) == 0) {
			char *v = strdup(value);
			if (!v)
				return -ENOMEM;
			free(h[i].value);
			h[i].value = v;
			return 0;
		}
	}
	if (*n >= max)
		return -E2BIG;
	h[*n].name = strdup(name);
	h[*n].value = strdup(value);
	if (!h[*n].name || !h[*n].value) {
		free(h[*n].name);
		free(h[*n].value);
		h[*n].name = h[*n].value = NULL;
		return -ENOMEM;
	}
	(*n)++;
	return 0;
}

int otlp_config_add_tag(struct otlp_config *c, const char *key, const char *value, char *err, size_t errlen)
{
	if (!key || !*key || strlen(key) > SPAN_MAX_KEY_LEN || !value) {
		snprintf(err, errlen, "custom tag '%.64s': empty or over-long key, or no value", key ? key : "");
		return -EINVAL;
	}
	int rc = pair_set(c->tags, &c->ntags, OTLP_MAX_TAGS, key, value);
	if (rc == -E2BIG)
		snprintf(err, errlen, "custom tag '%.64s': more than %d tags", key, OTLP_MAX_TAGS);
	return rc;
}

int otlp_config_add_header(struct otlp_config *c, const char *name, const char *value, char *err, size_t errlen)
{
	if (!name || !str_is_token(name) || !value || strpbrk(value, "\r\n")) {
		snprintf(err, errlen, "header '%.64s': not a valid name, or a value with CR/LF", name ? name : "");
		return -EINVAL;
	}
	/* HTTP/2 wants lower-case field names (RFC 9113 §8.2.1); fold once here. */
	char lname[128];
	if (strlen(name) >= sizeof(lname)) {
		snprintf(err, errlen, "header '%.64s': name too long", name);
		return -EINVAL;
	}
	for (size_t i = 0; i <= strlen(name); i++)
		lname[i] = (char)tolower((unsigned char)name[i]);
	int rc = pair_set(c->headers, &c->nheaders, OTLP_MAX_HEADERS, lname, value);
	if (rc == -E2BIG)
		snprintf(err, errlen, "header '%.64s': more than %d headers", name, OTLP_MAX_HEADERS);
	return rc;
}

int otlp_config_parse_headers(struct otlp_config *c, const char *s, char *err, size_t errlen)
{
	struct baggage b = { 0 };
	int rc = baggage_parse_env(s, strlen(s), &b);
	if (rc) {
		snprintf(err, errlen, "'%.100s' is not a list of name=value (%s)", s,
			 rc == -E2BIG ? "too long" : "bad name, value or percent-encoding");
		return rc == -ENOMEM ? rc : -EINVAL;
	}
	for (size_t i = 0; i < b.n && !rc; i++)
		rc = otlp_config_add_header(c, b.m[i].key, b.m[i].value, err, errlen);
	baggage_fini(&b);
	return rc;
}

/* ---- environment ---- */

static const char *env(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;	/* OTel SDK spec: empty means unset */
}

static int env_u32(const char *name, uint32_t min, uint32_t max, uint32_t *out, char *err, size_t errlen)
{
	const char *v = env(name);
	char *end;
	if (!v)
		return 0;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	if (!isdigit((unsigned char)*v) || *end || errno || n < min || n > max) {
		snprintf(err, errlen, "%s: '%.64s' is not an integer in %u..%u", name, v, min, max);
		return -EINVAL;
	}
	*out = (uint32_t)n;
	return 0;
}

static int env_bool(const char *name, bool *out, char *err, size_t errlen)
{
	const char *v = env(name);
	if (!v)
		return 0;
	if (strcasecmp(v, "true") == 0)
		*out = true;
	else if (strcasecmp(v, "false") == 0)
		*out = false;
	else {
		snprintf(err, errlen, "%s: '%.64s' is not true or false", name, v);
		return -EINVAL;
	}
	return 0;
}

/* The signal-specific variable OTEL_EXPORTER_OTLP_TRACES_<suffix> if set, else the generic
 * OTEL_EXPORTER_OTLP_<suffix> (OTLP exporter spec); *name gets the one used. */
static const char *env_otlp(const char *suffix, char *name, size_t namelen)
{
	const char *v;

	snprintf(name, namelen, "OTEL_EXPORTER_OTLP_TRACES_%s", suffix);
	if ((v = env(name)))
		return v;
	snprintf(name, namelen, "OTEL_EXPORTER_OTLP_%s", suffix);
	return env(name);
}

/* The PEM file variables: kept as paths, checked when the exporter loads them. */
static int env_file(const char *suffix, char **out)
{
	char name[64];
	const char *v = env_otlp(suffix, name, sizeof(name));
	char *d;

	if (!v)
		return 0;
	if (!(d = strdup(v)))
		return -ENOMEM;
	free(*out);
	*out = d;
	return 0;
}

static int env_sampler(struct otlp_config *c, char *err, size_t errlen)
{
	const char *name = env("OTEL_TRACES_SAMPLER"), *arg = env("OTEL_TRACES_SAMPLER_ARG");
	enum sampler_kind kind = c->sampler;

	if (name && sampler_kind_parse(name, &kind)) {
		snprintf(err, errlen, "OTEL_TRACES_SAMPLER: '%.64s' is not one of always_on, always_off, "
			 "traceidratio, parentbased_always_on, parentbased_always_off, "
			 "parentbased_traceidratio", name);
		return -EINVAL;
	}
	c->sampler = kind;
	/* The argument is used only when OTEL_TRACES_SAMPLER names a ratio sampler (OTel SDK
	 * env spec). Otherwise the configured percentage stays (tracing.sampling, default 100). */
	if (name && arg && (kind == SAMPLER_TRACEIDRATIO || kind == SAMPLER_PARENT_TRACEIDRATIO)) {
		char *end;
		double r = strtod(arg, &end);
		if (end == arg || *end || isnan(r) || r < 0.0 || r > 1.0) {
			snprintf(err, errlen, "OTEL_TRACES_SAMPLER_ARG: '%.64s' is not a probability in 0..1", arg);
			return -EINVAL;
		}
		c->sampling = r * 100.0;
	}
	return 0;
}

int otlp_config_apply_env(struct otlp_config *c, char *err, size_t errlen)
{
	const char *v;
	int rc;
	bool disabled = false;
	char sub[200];

	if ((rc = env_bool("OTEL_SDK_DISABLED", &disabled, err, errlen)))
		return rc;
	if (disabled)
		c->enabled = false;
	if ((v = env("OTEL_SERVICE_NAME"))) {
		char *d = strdup(v);
		if (!d)
			return -ENOMEM;
		free(c->service_name);
		c->service_name = d;
	}
	if ((v = env("OTEL_RESOURCE_ATTRIBUTES"))) {
		struct otlp_attrs a = { 0 };
		if ((rc = otlp_resource_parse_env(v, &a, err, errlen))) {
			otlp_attrs_fini(&a);
			return rc;
		}
		otlp_attrs_fini(&c->resource_attrs);
		c->resource_attrs = a;
	}
	if ((rc = env_sampler(c, err, errlen)))
		return rc;
	if ((v = env("OTEL_TRACES_EXPORTER"))) {
		if (strcmp(v, "otlp") == 0)
			c->export = true;
		else if (strcmp(v, "none") == 0)
			c->export = false;
		else {
			snprintf(err, errlen, "OTEL_TRACES_EXPORTER: '%.64s' is not supported (otlp or none)", v);
			return -EINVAL;
		}
	}
	/* The signal-specific variable wins over the generic one (OTLP exporter spec). */
	char vname[64];
	if ((v = env_otlp("PROTOCOL", vname, sizeof(vname))) &&
	    (rc = otlp_config_set_protocol(c, v, sub, sizeof(sub)))) {
		snprintf(err, errlen, "%s: %s", vname, sub);
		return rc;
	}
	if ((v = env_otlp("ENDPOINT", vname, sizeof(vname)))) {
		bool signal = strcmp(vname, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == 0;
		if (c->protocol != OTLP_PROTO_GRPC && !url_has_scheme(v))
			rc = otlp_url_parse(v, &(struct otlp_url){ 0 }, sub, sizeof(sub));
		else
			rc = set_endpoint(c, v, signal, sub, sizeof(sub));
		if (rc) {
			snprintf(err, errlen, "%s: %s", vname, sub);
			return rc;
		}
	}
	(void)env_otlp("INSECURE", vname, sizeof(vname));	/* names the one to read */
	if ((rc = env_bool(vname, &c->insecure, err, errlen)))
		return rc;
	if ((rc = env_file("CERTIFICATE", &c->ca_file)) || (rc = env_file("CLIENT_CERTIFICATE", &c->client_cert)) ||
	    (rc = env_file("CLIENT_KEY", &c->client_key)))
		return rc;
	/* Both header lists apply, the generic one first: a name in both takes the
	 * signal-specific value (pair_set replaces, so each name is sent once). */
	static const char *const hvars[] = { "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS" };
	for (size_t i = 0; i < ARRAY_SIZE(hvars); i++) {
		if ((v = env(hvars[i])) && (rc = otlp_config_parse_headers(c, v, sub, sizeof(sub)))) {
			snprintf(err, errlen, "%s: %s", hvars[i], sub);
			return rc;
		}
	}
	const char *tname = env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") ? "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
								     : "OTEL_EXPORTER_OTLP_TIMEOUT";
	if ((rc = env_u32(tname, 1, 600000, &c->batch.export_timeout_ms, err, errlen)) ||
	    (rc = env_u32("OTEL_BSP_EXPORT_TIMEOUT", 1, 600000, &c->batch.export_timeout_ms, err, errlen)) ||
	    (rc = env_u32("OTEL_BSP_SCHEDULE_DELAY", 1, 3600000, &c->batch.schedule_delay_ms, err, errlen)) ||
	    (rc = env_u32("OTEL_BSP_MAX_QUEUE_SIZE", 1, 1u << 20, &c->batch.max_queue, err, errlen)) ||
	    (rc = env_u32("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1, 1u << 20, &c->batch.max_batch, err, errlen)))
		return rc;
	return 0;
}

int otlp_config_validate(const struct otlp_config *c, char *err, size_t errlen)
{
	struct otlp_url u;
	char sub[200];

	if (c->endpoint && (c->protocol == OTLP_PROTO_GRPC ? endpoint_check(c->endpoint, sub, sizeof(sub))
							   : otlp_url_parse(c->endpoint, &u, sub, sizeof(sub)))) {
		snprintf(err, errlen, "tracing.otlp.endpoint: %s", sub);
		return -EINVAL;
	}
	if (!c->client_cert != !c->client_key) {
		snprintf(err, errlen, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and _CLIENT_KEY go together");
		return -EINVAL;
	}
	if (isnan(c->sampling) || c->sampling < 0.0 || c->sampling > 100.0) {
		snprintf(err, errlen, "tracing.sampling: %g is not in 0..100", c->sampling);
		return -EINVAL;
	}
	if (c->batch.max_queue == 0 || c->batch.max_batch == 0 || c->batch.max_batch > c->batch.max_queue) {
		snprintf(err, errlen, "max_export_batch_size %u must be 1..max_queue_size (%u)",
			 c->batch.max_batch, c->batch.max_queue);
		return -EINVAL;
	}
	if (c->batch.schedule_delay_ms == 0 || c->batch.export_timeout_ms == 0) {
		snprintf(err, errlen, "schedule delay and export timeout must be positive");
		return -EINVAL;
	}
	return 0;
}

int otlp_config_traces_url(const struct otlp_config *c, char *buf, size_t buflen)
{
	const char *ep = c->endpoint;
	int n;

	if (!ep)
		ep = c->protocol == OTLP_PROTO_GRPC ? OTLP_GRPC_DEFAULT_ENDPOINT : OTLP_HTTP_DEFAULT_ENDPOINT;
	if (c->protocol == OTLP_PROTO_GRPC) {
		/* OTLP exporter spec, "insecure": only for an endpoint without a scheme */
		n = snprintf(buf, buflen, "%s%s", url_has_scheme(ep) ? "" : c->insecure ? "http://" : "https://", ep);
	} else if (c->endpoint && c->endpoint_is_signal) {
		n = snprintf(buf, buflen, "%s", ep);
	} else {
		/* OTLP exporter spec: the generic endpoint is a base URL; append the signal path. */
		size_t len = strlen(ep);
		while (len > 0 && ep[len - 1] == '/')
			len--;
		n = snprintf(buf, buflen, "%.*s/v1/traces", (int)len, ep);
	}
	return n < 0 || (size_t)n >= buflen ? -ENOSPC : 0;
}

int otlp_config_sampler(const struct otlp_config *c, struct sampler *out)
{
	return sampler_init(out, c->sampler, c->sampling / 100.0);
}
