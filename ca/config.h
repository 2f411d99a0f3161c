/* SPDX-License-Identifier: Apache-2.0 */
/* ambit-ca's JSON configuration (CONTRACT.md "Certificates"; docs/ca.md lists every key):
 * listen, trust_domain, ca, server_names, discovery, tokens, log, admin_address and the
 * limits. Every key has a default; an unknown key or a bad value is one line naming file,
 * key and value. */
#ifndef AMBIT_CA_CONFIG_H
#define AMBIT_CA_CONFIG_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/config.h"

#define CA_CONFIG_MAX_LIST 32

struct ca_config {
	char *path;
	char *listen;			/* 0.0.0.0:15012 */
	char *trust_domain;		/* cluster.local */
	char *ca_cert;			/* /etc/ambit/ca/ca.crt */
	char *ca_key;			/* /etc/ambit/ca/ca.key */
	char *server_names[CA_CONFIG_MAX_LIST];	/* DNS names and IPs of the serving cert */
	size_t nserver_names;
	char *issuer_keys[CA_CONFIG_MAX_LIST];	/* tokens.issuer_keys: none = TokenReview */
	size_t nissuer_keys;
	char *audience;			/* tokens.audience: istio-ca */
	char *node_accounts[CA_CONFIG_MAX_LIST];	/* tokens.node_accounts: "NS/SA" */
	size_t nnode_accounts;
	char *admin_address;		/* 0.0.0.0:15014: metrics, readiness, config dump */
	uint32_t max_validity_s;	/* cap on validity_duration: 86400 */
	uint32_t default_validity_s;	/* when the request asks none: 86400 */
	uint32_t rate_burst;		/* rate_limit.burst per caller: 200 */
	uint32_t rate_per_second;	/* rate_limit.per_second: 20 */
	char *root_configmap;		/* root_cert_configmap: ambit-root-cert ("" = off) */
	uint32_t serving_lifetime_s;	/* serving.lifetime_s: 1 year (capped at the CA's) */
	double serving_renew_fraction;	/* serving.renew_fraction: renewed at 0.5 of it */
	/* discovery.* and log.* as ambitd reads them (agent/config.h), and the Kubernetes API
	 * settings TokenReview uses too. */
	struct config agent;
};

/* Defaults. 0 or -ENOMEM. */
int ca_config_init(struct ca_config *c);
/* Loads path over the defaults. -EINVAL (or -errno) with err: "FILE: KEY: what". */
int ca_config_load(struct ca_config *c, const char *path, char *err, size_t errlen);
void ca_config_fini(struct ca_config *c);
/* The effective configuration for /config_dump (no secrets). New reference. */
json_t *ca_config_to_json(const struct ca_config *c);

#endif
