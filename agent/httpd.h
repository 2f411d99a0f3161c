/* SPDX-License-Identifier: Apache-2.0 */
/* A small HTTP/1.1 server on the event loop for the agent's own endpoints (admin 15000,
 * metrics 15020, readiness 15021): one request per connection, bounded sizes, http_parser. */
#ifndef AMBIT_AGENT_HTTPD_H
#define AMBIT_AGENT_HTTPD_H

#include <jansson.h>
#include <stddef.h>
#include <sys/socket.h>

#include "agent/loop.h"

struct httpd;

struct httpd_request {
	const char *method;	/* "GET", "POST", ... */
	const char *path;	/* without the query */
	const char *query;	/* after '?', or "" */
	const char *body;	/* NUL-terminated */
	size_t body_len;
};

struct httpd_response {
	int status;
	const char *content_type;	/* default application/json */
	char *body;			/* malloc'ed, freed by httpd */
	size_t body_len;
};

/* Fills resp; runs on the loop thread. */
typedef void (*httpd_handler_fn)(void *arg, const struct httpd_request *req,
				 struct httpd_response *resp);

/* Listens on addr. NULL + errno (logged by the caller). */
struct httpd *httpd_new(struct loop *l, const struct sockaddr_storage *addr, httpd_handler_fn fn,
			void *arg);
void httpd_free(struct httpd *h);

/* Helpers for handlers: sets status and a copied body. */
void httpd_reply(struct httpd_response *resp, int status, const char *content_type,
		 const char *body, size_t len);
/* Sets the body from a printf format. */
void httpd_replyf(struct httpd_response *resp, int status, const char *content_type,
		  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Sets a JSON body: j (taken over, NULL means out of memory) dumped with jansson's flags
 * (JSON_COMPACT, JSON_INDENT(2), ...); a dump that fails is a 500 with {"error": ...}. */
void httpd_reply_json(struct httpd_response *resp, int status, json_t *j, size_t flags);
/* Value of query parameter `key` into out (URL-decoded); 0 or -ENOENT. */
int httpd_query_get(const char *query, const char *key, char *out, size_t outlen);

#endif
