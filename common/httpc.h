/* SPDX-License-Identifier: Apache-2.0 */
/* Blocking HTTP client (the only user of libcurl): one request at a time, bounded response,
 * optional streaming of the body (Kubernetes watches). For threads off the data path only. */
#ifndef AMBIT_COMMON_HTTPC_H
#define AMBIT_COMMON_HTTPC_H

#include <stdbool.h>
#include <stddef.h>

/* Called for each chunk of the response body when set; return non-zero to abort the
 * transfer (httpc_do then returns -ECANCELED). */
typedef int (*httpc_data_fn)(const char *data, size_t len, void *arg);

struct httpc_request {
	const char *method;		/* "GET" (default), "POST", ... */
	const char *url;
	const char *const *headers;	/* NULL-terminated "Name: value" lines, or NULL */
	const void *body;		/* POST body, or NULL */
	size_t body_len;
	const char *ca_file;		/* CA bundle for https, NULL = system default */
	const char *client_cert;	/* PEM client certificate for https, or NULL */
	const char *client_key;		/* its PEM private key (with client_cert) */
	const char *bearer_token;	/* adds "Authorization: Bearer ..." when set */
	long timeout_ms;		/* whole transfer; 0 = none (watches) */
	long connect_timeout_ms;	/* default 5000 */
	long idle_timeout_s;		/* abort when no byte arrives for this long; 0 = none */
	size_t max_response;		/* bound on a collected body; default 16 MiB */
	httpc_data_fn on_data;		/* stream instead of collecting */
	void *arg;
	const volatile bool *cancel;	/* checked while transferring; true aborts */
};

struct httpc_response {
	long status;		/* HTTP status, 0 when no response arrived */
	char *body;		/* collected body, NUL-terminated (owned; httpc_response_fini) */
	size_t body_len;
	char *content_type;	/* owned, or NULL */
	long retry_after_s;	/* Retry-After (seconds, an HTTP-date made seconds from now); 0 = none */
	char err[256];		/* transport error in words when httpc_do fails */
};

/* Once per process, before threads start. 0 or -EIO. */
int httpc_global_init(void);
void httpc_global_fini(void);
/* Performs the request. 0 when a response arrived (any status: check resp->status);
 * -ETIMEDOUT, -ECONNREFUSED, -EFBIG (body over max_response), -ECANCELED, or -EIO
 * otherwise, with resp->err set. resp is always initialised; call httpc_response_fini. */
int httpc_do(const struct httpc_request *req, struct httpc_response *resp);
void httpc_response_fini(struct httpc_response *resp);

#endif
