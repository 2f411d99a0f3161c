// SPDX-License-Identifier: Apache-2.0
/* OTLP/gRPC exporter (OTLP spec "OTLP/gRPC"): one unary TraceService/Export call per batch
 * through the shared gRPC client (grpc/client.h: HTTP/2 with nghttp2, cleartext or TLS with
 * ALPN h2, one kept connection), on the batcher thread; maps the answer to the OTLP retry
 * rules. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "common/version.h"
#include "grpc/client.h"
#include "otlp/config.h"
#include "otlp/encode.h"
#include "otlp/exporter.h"

#define GRPC_PATH "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

struct export_grpc {
	struct otlp_exporter ex;
	struct grpc_client *client;
	struct grpc_header *headers;	/* custom headers, names lower-cased; owned strings */
	size_t nheaders;
};

static bool grpc_retryable(int code, bool retry_info)
{
	/* OTLP/gRPC "Failures": the retryable codes; RESOURCE_EXHAUSTED only when the server
	 * can recover, which it says by sending RetryInfo ("OTLP/gRPC Throttling") */
	switch (code) {
	case GRPC_STATUS_CANCELLED: case GRPC_STATUS_DEADLINE_EXCEEDED: case GRPC_STATUS_ABORTED:
	case GRPC_STATUS_OUT_OF_RANGE: case GRPC_STATUS_UNAVAILABLE: case GRPC_STATUS_DATA_LOSS:
		return true;
	case GRPC_STATUS_RESOURCE_EXHAUSTED:
		return retry_info;
	}
	return false;
}

static int grpc_export(struct otlp_exporter *ex, struct span *const *spans, size_t n,
		       uint32_t timeout_ms, struct otlp_export_status *st)
{
	struct export_grpc *g = container_of(ex, struct export_grpc, ex);
	struct grpc_result r;
	uint32_t retry_info_ms = 0;
	bool retry_info = false;
	uint8_t *body = NULL;
	size_t len;
	int err;

	err = otlp_encode_request(spans, n, 0, &body, &len);
	if (err) {
		snprintf(st->msg, sizeof(st->msg), "encoding %zu spans: %s", n, strerror(-err));
		st->retryable = true;
		return err;
	}
	err = grpc_client_call(g->client, GRPC_PATH, g->headers, g->nheaders, body, len, timeout_ms, st->cancel, &r);
	free(body);
	if (err) {
		snprintf(st->msg, sizeof(st->msg), "%s", r.message);
		st->retryable = err != -ECANCELED;	/* connection errors: retry (OTLP spec) */
		goto out;
	}
	if (r.status != GRPC_STATUS_OK) {
		/* OTLP/gRPC "Failures": the server says when to retry in a RetryInfo */
		if (r.details && otlp_decode_retry_info(r.details, r.details_len,
							 GRPC_CLIENT_MAX_DELAY_MS, &retry_info_ms) == 0)
			retry_info = true;
		if (r.http_status != 200)
			snprintf(st->msg, sizeof(st->msg), "HTTP status %d (gRPC %d)", r.http_status,
				 r.status);
		else
			snprintf(st->msg, sizeof(st->msg), "grpc-status %d: %.200s", r.status, r.message);
		st->retryable = grpc_retryable(r.status, retry_info);
		st->retry_after_ms = MAX(r.pushback_ms, retry_info ? retry_info_ms : 0);
		err = st->retryable ? -EAGAIN : -EPROTO;
		goto out;
	}
	if (r.response)
		otlp_decode_response(r.response, r.response_len, &st->rejected, st->msg,
				     sizeof(st->msg));
out:
	grpc_result_fini(&r);
	return err;
}

static void grpc_free(struct otlp_exporter *ex)
{
	struct export_grpc *g = container_of(ex, struct export_grpc, ex);

	grpc_client_free(g->client);
	for (size_t i = 0; i < g->nheaders; i++) {
		free((char *)g->headers[i].name);
		free((char *)g->headers[i].value);
	}
	free(g->headers);
	free(g);
}

static const struct otlp_exporter_ops grpc_ops = {
	.name = "grpc",
	.export_spans = grpc_export,
	.free = grpc_free,
};

struct otlp_exporter *export_grpc_new(const char *endpoint, const struct otlp_header *headers,
				      size_t nheaders, const struct otlp_exporter_tls *tls, char *err,
				      size_t errlen)
{
	struct export_grpc *g;
	struct otlp_url u;
	char sub[200];

	if (otlp_url_parse(endpoint, &u, err, errlen)) {
		errno = EINVAL;
		return NULL;
	}
	if (!(g = calloc(1, sizeof(*g))) || !(g->headers = calloc(nheaders + 1, sizeof(*g->headers))))
		goto nomem;
	g->ex.ops = &grpc_ops;
	for (size_t i = 0; i < nheaders; i++) {
		char *name = strdup(headers[i].name), *value = strdup(headers[i].value);
		g->headers[g->nheaders].name = name;
		g->headers[g->nheaders++].value = value;
		if (!name || !value)
			goto nomem;
		for (char *p = name; *p; p++)	/* RFC 9113 §8.2.1: lower-case names */
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
	}
	struct grpc_client_opts o = {
		.host = u.host, .port = u.port, .tls = u.https,
		.ca_file = tls ? tls->ca_file : NULL,
		.client_cert = tls ? tls->client_cert : NULL,
		.client_key = tls ? tls->client_key : NULL,
		.user_agent = "ambit-otlp-grpc/" AMBIT_VERSION,
	};
	if (!(g->client = grpc_client_new(&o, sub, sizeof(sub)))) {
		int e = errno;
		snprintf(err, errlen, "OTLP/gRPC endpoint %.128s: %s", endpoint, sub);
		grpc_free(&g->ex);
		errno = e;
		return NULL;
	}
	return &g->ex;
nomem:
	if (g)
		grpc_free(&g->ex);
	snprintf(err, errlen, "out of memory");
	errno = ENOMEM;
	return NULL;
}
