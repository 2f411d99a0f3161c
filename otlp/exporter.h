/* SPDX-License-Identifier: Apache-2.0 */
/* The exporter interface the batcher drives (OTel SDK "SpanExporter"): OTLP/gRPC
 * (export_grpc.c), OTLP/HTTP protobuf (export_http.c), or a fake in tests. */
#ifndef AMBIT_OTLP_EXPORTER_H
#define AMBIT_OTLP_EXPORTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "otlp/span.h"

struct otlp_config;
struct otlp_header;

/* What one export attempt came to. */
struct otlp_export_status {
	const volatile bool *cancel;	/* in: becomes true when the attempt must end now */
	bool retryable;			/* on failure: worth retrying (OTLP spec "Failures") */
	uint32_t retry_after_ms;	/* server-asked delay (Retry-After, RetryInfo), 0 = none */
	int64_t rejected;		/* partial_success.rejected_spans on success */
	char msg[256];			/* failure (or partial-success) text for the log */
};

struct otlp_exporter;

struct otlp_exporter_ops {
	const char *name;	/* "grpc", "http/protobuf", ... */
	/* Sends spans[0..n) (borrowed) in one request within timeout_ms. Runs on the batcher
	 * thread only. 0 on success (st->rejected may be set); -errno on failure with st set. */
	int (*export_spans)(struct otlp_exporter *ex, struct span *const *spans, size_t n,
			    uint32_t timeout_ms, struct otlp_export_status *st);
	void (*free)(struct otlp_exporter *ex);
};

struct otlp_exporter {
	const struct otlp_exporter_ops *ops;
};

/* OTLP/gRPC over cleartext HTTP/2 (h2c) to endpoint "http://host:port" (a path is ignored).
 * https:// is refused with -ENOTSUP ("https not supported yet") until tls/ offers a client.
 * headers[0..nheaders) are copied. NULL + errno, with err set. Connects lazily. */
struct otlp_exporter *export_grpc_new(const char *endpoint, const struct otlp_header *headers,
				      size_t nheaders, char *err, size_t errlen);
/* OTLP/HTTP protobuf: POST to url as given (the full ".../v1/traces" URL) through
 * common/httpc. The process must have called httpc_global_init(). NULL + errno, err set. */
struct otlp_exporter *export_http_new(const char *url, const struct otlp_header *headers,
				      size_t nheaders, char *err, size_t errlen);
/* The exporter cfg asks for (protocol, resolved endpoint, headers). NULL + errno, err set. */
struct otlp_exporter *otlp_exporter_new(const struct otlp_config *cfg, char *err, size_t errlen);
void otlp_exporter_free(struct otlp_exporter *ex);

#endif
