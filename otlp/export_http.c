// SPDX-License-Identifier: Apache-2.0
/* OTLP/HTTP with binary protobuf (OTLP spec "OTLP/HTTP"): one POST of an
 * ExportTraceServiceRequest per batch through common/httpc, on the batcher thread. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/httpc.h"
#include "common/util.h"
#include "otlp/config.h"
#include "otlp/encode.h"
#include "otlp/exporter.h"

#define HTTP_MAX_RETRY_AFTER_S 60	/* as gRPC's server-asked delays */

struct export_http {
	struct otlp_exporter ex;
	char *url;
	char *ca_file;		/* owned; CA bundle for https, NULL = curl's default store */
	char *client_cert;	/* owned; mutual TLS, or NULL */
	char *client_key;
	char **headers;		/* NULL-terminated "Name: value" lines, owned */
};

/* OTLP/HTTP "Failures": these statuses are retryable, every other 4xx/5xx is not. */
static bool http_retryable(long status)
{
	return status == 429 || status == 502 || status == 503 || status == 504;
}

static int http_export(struct otlp_exporter *ex, struct span *const *spans, size_t n,
		       uint32_t timeout_ms, struct otlp_export_status *st)
{
	struct export_http *h = container_of(ex, struct export_http, ex);
	struct httpc_response resp;
	uint8_t *body = NULL;
	size_t len;
	int rc;

	rc = otlp_encode_request(spans, n, 0, &body, &len);
	if (rc) {
		snprintf(st->msg, sizeof(st->msg), "encoding %zu spans: %s", n, strerror(-rc));
		st->retryable = true;
		return rc;
	}
	struct httpc_request req = {
		.method = "POST",
		.url = h->url,
		.headers = (const char *const *)h->headers,
		.body = body,
		.body_len = len,
		.ca_file = h->ca_file,
		.client_cert = h->client_cert,
		.client_key = h->client_key,
		.timeout_ms = timeout_ms,
		.connect_timeout_ms = timeout_ms < 5000 ? timeout_ms : 5000,
		.max_response = 1 << 20,
		.cancel = st->cancel,
	};
	rc = httpc_do(&req, &resp);
	free(body);
	if (rc) {
		/* no response: connection refused, reset, timeout; the spec retries these */
		snprintf(st->msg, sizeof(st->msg), "POST %.100s: %.140s", h->url, resp.err[0] ? resp.err : strerror(-rc));
		st->retryable = rc != -ECANCELED;
		goto out;
	}
	if (resp.status >= 200 && resp.status < 300) {
		if (otlp_decode_response((const uint8_t *)resp.body, resp.body_len, &st->rejected,
					 st->msg, sizeof(st->msg)) != 0)
			st->rejected = 0;	/* a 2xx is a success even with an odd body */
		rc = 0;
		goto out;
	}
	st->retryable = http_retryable(resp.status);
	/* OTLP/HTTP "Throttling": 429 or 503 with Retry-After says how long to wait (bounded) */
	if ((resp.status == 429 || resp.status == 503) && resp.retry_after_s > 0)
		st->retry_after_ms = (uint32_t)MIN(resp.retry_after_s, HTTP_MAX_RETRY_AFTER_S) * 1000;
	snprintf(st->msg, sizeof(st->msg), "POST %.200s: HTTP %ld", h->url, resp.status);
	rc = st->retryable ? -EAGAIN : -EPROTO;
out:
	httpc_response_fini(&resp);
	return rc;
}

static void http_free(struct otlp_exporter *ex)
{
	struct export_http *h = container_of(ex, struct export_http, ex);
	for (char **p = h->headers; p && *p; p++)
		free(*p);
	free(h->headers);
	free(h->ca_file);
	free(h->client_cert);
	free(h->client_key);
	free(h->url);
	free(h);
}

static const struct otlp_exporter_ops http_ops = {
	.name = "http/protobuf",
	.export_spans = http_export,
	.free = http_free,
};

struct otlp_exporter *export_http_new(const char *url, const struct otlp_header *headers,
				      size_t nheaders, const struct otlp_exporter_tls *tls, char *err,
				      size_t errlen)
{
	struct otlp_url u;
	struct export_http *h;
	size_t k = 0;

	if (otlp_url_parse(url, &u, err, errlen)) {
		errno = EINVAL;
		return NULL;
	}
	/* curl reads the files per request: a missing one is better refused at start */
	const char *files[] = { tls ? tls->ca_file : NULL, tls ? tls->client_cert : NULL,
				tls ? tls->client_key : NULL };
	for (size_t i = 0; u.https && i < ARRAY_SIZE(files); i++) {
		int fd = files[i] ? open(files[i], O_RDONLY | O_CLOEXEC) : -2;
		if (fd == -1) {
			int e = errno;
			snprintf(err, errlen, "%.200s: %s", files[i], strerror(e));
			errno = e;
			return NULL;
		}
		if (fd >= 0)
			close(fd);
	}
	h = calloc(1, sizeof(*h));
	if (!h)
		goto nomem;
	h->ex.ops = &http_ops;
	h->url = strdup(url);
	h->headers = calloc(nheaders + 3, sizeof(*h->headers));
	if (!h->url || !h->headers || (tls && tls->ca_file && !(h->ca_file = strdup(tls->ca_file))) ||
	    (tls && tls->client_cert && !(h->client_cert = strdup(tls->client_cert))) ||
	    (tls && tls->client_key && !(h->client_key = strdup(tls->client_key))))
		goto nomem;
	if (asprintf(&h->headers[k++], "Content-Type: application/x-protobuf") < 0) {
		h->headers[--k] = NULL;
		goto nomem;
	}
	/* an empty "Expect:" stops curl from waiting for 100-continue on large batches */
	if (!(h->headers[k++] = strdup("Expect:"))) {
		h->headers[--k] = NULL;
		goto nomem;
	}
	for (size_t i = 0; i < nheaders; i++) {
		if (asprintf(&h->headers[k++], "%s: %s", headers[i].name, headers[i].value) < 0) {
			h->headers[--k] = NULL;
			goto nomem;
		}
	}
	return &h->ex;
nomem:
	if (h)
		http_free(&h->ex);
	snprintf(err, errlen, "out of memory");
	errno = ENOMEM;
	return NULL;
}
