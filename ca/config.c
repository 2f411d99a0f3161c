// SPDX-License-Identifier: Apache-2.0
/* Loads ambit-ca's configuration over its defaults; the discovery and log sections are read
 * by agent/config.c's own functions, so they mean what they mean for ambitd. */
#include "ca/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonx.h"
#include "common/util.h"
#include "tls/ctx.h"
#include "tls/identity.h"

#define CFG_MAX_STR 4096

int ca_config_init(struct ca_config *c)
{
	memset(c, 0, sizeof(*c));
	if (config_init(&c->agent, CONFIG_ROLE_AGENT))
		return -ENOMEM;
	c->path = strdup("");
	c->listen = strdup("0.0.0.0:15012");
	c->trust_domain = strdup(SPIFFE_DEFAULT_TRUST_DOMAIN);
	c->ca_cert = strdup("/etc/ambit/ca/ca.crt");
	c->ca_key = strdup("/etc/ambit/ca/ca.key");
	c->audience = strdup("istio-ca");
	c->admin_address = strdup("0.0.0.0:15014");
	c->root_configmap = strdup("ambit-root-cert");
	c->node_accounts[c->nnode_accounts++] = strdup("ambit-system/ambit");
	c->server_names[c->nserver_names++] = strdup("ambit-ca.ambit-system.svc");
	c->max_validity_s = 24 * 3600;
	c->default_validity_s = 24 * 3600;
	c->rate_burst = 200;
	c->rate_per_second = 20;
	c->serving_lifetime_s = 365u * 24 * 3600;
	c->serving_renew_fraction = 0.5;
	if (!c->path || !c->listen || !c->trust_domain || !c->ca_cert || !c->ca_key ||
	    !c->audience || !c->admin_address || !c->root_configmap || !c->node_accounts[0] ||
	    !c->server_names[0]) {
		ca_config_fini(c);
		return -ENOMEM;
	}
	return 0;
}

static void list_free(char **v, size_t *n)
{
	for (size_t i = 0; i < *n; i++)
		free(v[i]);
	*n = 0;
}

void ca_config_fini(struct ca_config *c)
{
	if (!c)
		return;
	free(c->path);
	free(c->listen);
	free(c->trust_domain);
	free(c->ca_cert);
	free(c->ca_key);
	free(c->audience);
	free(c->admin_address);
	free(c->root_configmap);
	list_free(c->server_names, &c->nserver_names);
	list_free(c->issuer_keys, &c->nissuer_keys);
	list_free(c->node_accounts, &c->nnode_accounts);
	config_fini(&c->agent);
	memset(c, 0, sizeof(*c));
}

/* A list of non-empty strings replacing *v when present. */
static int str_list(struct jx *j, const json_t *o, const char *key, size_t maxlen, size_t max,
		    char **v, size_t *n)
{
	json_t *a, *e;
	size_t i;
	int err;

	if ((err = jx_array(j, o, key, max, &a)) || !a)
		return err;
	list_free(v, n);
	json_array_foreach(a, i, e) {
		const char *s = json_string_value(e);
		if (!s || !*s || strlen(s) > maxlen) {
			size_t saved = jx_enter(j, "%s[%zu]", key, i);
			err = jx_fail(j, NULL, "must be a non-empty string of at most %zu characters",
				      maxlen);
			jx_leave(j, saved);
			return err;
		}
		if (!(v[(*n)++] = strdup(s)))
			return -ENOMEM;
	}
	return 0;
}

static int load_ca(struct jx *j, void *arg, const json_t *o)
{
	struct ca_config *c = arg;
	static const char *const keys[] = { "cert", "key", NULL };
	int err;

	if ((err = jx_keys(j, o, keys)) ||
	    (err = jx_str(j, o, "cert", false, CFG_MAX_STR, &c->ca_cert)) ||
	    (err = jx_str(j, o, "key", false, CFG_MAX_STR, &c->ca_key)))
		return err;
	return 0;
}

static int load_tokens(struct jx *j, void *arg, const json_t *o)
{
	struct ca_config *c = arg;
	static const char *const keys[] = { "issuer_keys", "audience", "node_accounts", NULL };
	int err;

	if ((err = jx_keys(j, o, keys)) ||
	    (err = str_list(j, o, "issuer_keys", CFG_MAX_STR, CA_CONFIG_MAX_LIST, c->issuer_keys,
			    &c->nissuer_keys)) ||
	    (err = jx_str(j, o, "audience", false, 253, &c->audience)) ||
	    (err = str_list(j, o, "node_accounts", 63 + 1 + 253, CA_CONFIG_MAX_LIST,
			    c->node_accounts, &c->nnode_accounts)))
		return err;
	for (size_t i = 0; i < c->nnode_accounts; i++) {
		const char *s = c->node_accounts[i], *slash = strchr(s, '/');
		if (!slash || slash == s || !slash[1] || strchr(slash + 1, '/')) {
			size_t saved = jx_enter(j, "node_accounts[%zu]", i);
			err = jx_fail(j, NULL, "'%s' is not NAMESPACE/SERVICE_ACCOUNT", s);
			jx_leave(j, saved);
			return err;
		}
	}
	return 0;
}

static int load_rate(struct jx *j, void *arg, const json_t *o)
{
	struct ca_config *c = arg;
	static const char *const keys[] = { "burst", "per_second", NULL };
	int err;

	if ((err = jx_keys(j, o, keys)) ||
	    (err = jx_uint(j, o, "burst", 1, 1000000, &c->rate_burst)) ||
	    (err = jx_uint(j, o, "per_second", 1, 1000000, &c->rate_per_second)))
		return err;
	return 0;
}

static int load_serving(struct jx *j, void *arg, const json_t *o)
{
	struct ca_config *c = arg;
	static const char *const keys[] = { "lifetime_s", "renew_fraction", NULL };
	int err;

	if ((err = jx_keys(j, o, keys)) ||
	    (err = jx_uint(j, o, "lifetime_s", 10, 10u * 366 * 24 * 3600, &c->serving_lifetime_s)) ||
	    (err = jx_double(j, o, "renew_fraction", 0.1, 0.9, &c->serving_renew_fraction)))
		return err;
	return 0;
}

static int load_discovery(struct jx *j, void *arg, const json_t *o)
{
	return config_load_discovery(j, arg, o);
}

static int load_log(struct jx *j, void *arg, const json_t *o)
{
	return config_load_log(j, arg, o);
}

static int check(struct jx *j, struct ca_config *c)
{
	struct sockaddr_storage ss;
	struct spiffe_id id;
	const char *why;

	if (sockaddr_parse(c->listen, 0, &ss))
		return jx_fail(j, "listen", "'%s' is not IP:PORT", c->listen);
	if (sockaddr_parse(c->admin_address, 0, &ss))
		return jx_fail(j, "admin_address", "'%s' is not IP:PORT", c->admin_address);
	if (spiffe_id_set(&id, c->trust_domain, "a", "b", &why))
		return jx_fail(j, "trust_domain", "'%s': %s", c->trust_domain, why);
	if (!c->nserver_names)
		return jx_fail(j, "server_names", "needs at least one DNS name or IP address");
	if (c->nserver_names > TLS_SERVER_NAMES_MAX)
		return jx_fail(j, "server_names", "at most %d names", TLS_SERVER_NAMES_MAX);
	if (c->default_validity_s > c->max_validity_s)
		c->default_validity_s = c->max_validity_s;
	return 0;
}

int ca_config_load(struct ca_config *c, const char *path, char *err, size_t errlen)
{
	static const char *const keys[] = { "listen", "trust_domain", "ca", "server_names",
		"discovery", "tokens", "log", "admin_address", "max_validity_s",
		"default_validity_s", "rate_limit", "root_cert_configmap", "serving", NULL };
	json_error_t jerr;
	json_t *root;
	struct jx j;
	int rc;

	jx_init(&j, path, err, errlen);
	free(c->path);
	if (!(c->path = strdup(path)))
		return -ENOMEM;
	if (!(root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr))) {
		if (jerr.line <= 0)
			snprintf(err, errlen, "%s: %s", path, jerr.text);
		else
			snprintf(err, errlen, "%s: line %d column %d: %s", path, jerr.line,
				 jerr.column, jerr.text);
		return -EINVAL;
	}
	if (!json_is_object(root)) {
		rc = jx_fail(&j, NULL, "must be a JSON object");
		goto out;
	}
	if ((rc = jx_keys(&j, root, keys)) ||
	    (rc = jx_str(&j, root, "listen", false, 64, &c->listen)) ||
	    (rc = jx_str(&j, root, "trust_domain", false, SPIFFE_TD_MAX, &c->trust_domain)) ||
	    (rc = jx_str(&j, root, "admin_address", false, 64, &c->admin_address)) ||
	    (rc = str_list(&j, root, "server_names", 253, CA_CONFIG_MAX_LIST, c->server_names,
			   &c->nserver_names)) ||
	    (rc = jx_uint(&j, root, "max_validity_s", 600, 366 * 24 * 3600, &c->max_validity_s)) ||
	    (rc = jx_uint(&j, root, "default_validity_s", 600, 366 * 24 * 3600,
			  &c->default_validity_s)) ||
	    (rc = jx_section(&j, root, "ca", load_ca, c)) ||
	    (rc = jx_section(&j, root, "tokens", load_tokens, c)) ||
	    (rc = jx_section(&j, root, "rate_limit", load_rate, c)) ||
	    (rc = jx_section(&j, root, "serving", load_serving, c)) ||
	    (rc = jx_section(&j, root, "discovery", load_discovery, &c->agent)) ||
	    (rc = jx_section(&j, root, "log", load_log, &c->agent)))
		goto out;
	/* "" turns the ConfigMap off */
	json_t *cm = json_object_get(root, "root_cert_configmap");
	if (cm) {
		if (!json_is_string(cm) || strlen(json_string_value(cm)) > 253) {
			rc = jx_fail(&j, "root_cert_configmap", "must be a ConfigMap name or \"\"");
			goto out;
		}
		free(c->root_configmap);
		if (!(c->root_configmap = strdup(json_string_value(cm)))) {
			rc = -ENOMEM;
			goto out;
		}
	}
	rc = check(&j, c);
out:
	json_decref(root);
	return rc;
}

static json_t *list_json(char *const *v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

json_t *ca_config_to_json(const struct ca_config *c)
{
	const struct config *a = &c->agent;

	return json_pack("{s:s, s:s, s:{s:s, s:s}, s:o, s:{s:o, s:s, s:o, s:s}, s:s, s:i, s:i, "
			 "s:{s:i, s:i}, s:s, s:{s:I, s:f}, s:{s:s, s:s?}, s:{s:s, s:s}}",
			 "listen", c->listen, "trust_domain", c->trust_domain,
			 "ca", "cert", c->ca_cert, "key", c->ca_key,
			 "server_names", list_json(c->server_names, c->nserver_names),
			 "tokens", "issuer_keys", list_json(c->issuer_keys, c->nissuer_keys),
			 "audience", c->audience,
			 "node_accounts", list_json(c->node_accounts, c->nnode_accounts),
			 "authentication", c->nissuer_keys ? "jwt" : "tokenreview",
			 "admin_address", c->admin_address,
			 "max_validity_s", (int)c->max_validity_s,
			 "default_validity_s", (int)c->default_validity_s,
			 "rate_limit", "burst", (int)c->rate_burst, "per_second", (int)c->rate_per_second,
			 "root_cert_configmap", c->root_configmap,
			 "serving", "lifetime_s", (json_int_t)c->serving_lifetime_s,
			 "renew_fraction", c->serving_renew_fraction,
			 "discovery", "source", a->discovery_source == DISCOVERY_FILE ? "file" : "kubernetes",
			 "file", a->discovery_source == DISCOVERY_FILE ? a->discovery_file : NULL,
			 "log", "level", log_level_str(a->log_level),
			 "format", a->log_format == LOG_FMT_JSON ? "json" : "text");
}
