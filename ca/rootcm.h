/* SPDX-License-Identifier: Apache-2.0 */
/* Keeps ConfigMap `root_cert_configmap` (default ambit-root-cert, key root-cert.pem) in
 * ambit-ca's namespace holding the mesh root, as istiod keeps istio-ca-root-cert: created when
 * missing, rewritten when it differs, checked every minute, on its own thread. */
#ifndef AMBIT_CA_ROOTCM_H
#define AMBIT_CA_ROOTCM_H

#include <stdint.h>

struct ca_rootcm;
struct tls_ca;

#define CA_ROOTCM_KEY "root-cert.pem"

struct ca_rootcm_opts {
	const char *api_url;	/* the API server */
	const char *ca_file;	/* its CA (NULL: the system store) */
	const char *token_file;	/* our service account token, re-read per request */
	const char *namespace;	/* NULL: POD_NAMESPACE, else the service account's, else
				 * ambit-system */
	const char *name;	/* the ConfigMap */
	uint32_t interval_ms;	/* 0: 60000 */
};

/* Copies opts; reads the roots of ca now. NULL + errno. */
struct ca_rootcm *ca_rootcm_start(const struct ca_rootcm_opts *o, const struct tls_ca *ca);
/* Publishes the roots of ca from now on (a reloaded ca.cert): the ConfigMap is synced at
 * once, not at the next interval. Any thread; r may be NULL (nothing to keep). 0 or
 * -ENOMEM (the old roots stay). */
int ca_rootcm_set_ca(struct ca_rootcm *r, const struct tls_ca *ca);
/* Accepts NULL; joins the thread. */
void ca_rootcm_stop(struct ca_rootcm *r);
/* Counters for metrics: writes done (create or update) and failed attempts. */
uint64_t ca_rootcm_writes(const struct ca_rootcm *r);
uint64_t ca_rootcm_errors(const struct ca_rootcm *r);

#endif
