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

/* TLS settings for an https:// endpoint (OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE,
 * _CLIENT_CERTIFICATE, _CLIENT_KEY). Paths of PEM files, borrowed; NULL = not set. */
struct otlp_exporter_tls {
	const char *ca_file;		/* trust anchors for the collector; NULL = the system store */
	const char *client_cert;	/* client certificate and key for mutual TLS */
	const char *client_key;
};

/* OTLP/gRPC to endpoint "http://host:port" (cleartext HTTP/2, h2c) or "https://host:port"
 * (TLS 1.2+ through tls/, ALPN h2, the collector's certificate verified against
 * tls->ca_file or the system store and the host name); a path is ignored. Client
 * certificates are refused with -ENOTSUP (tls/ has no client-cert https context yet).
 * headers[0..nheaders) are copied; tls may be NULL. The CA file is loaded here, so a bad
 * one fails now. NULL + errno, with err set. Connects lazily.
 * Over TLS a write to a connection the collector closed raises SIGPIPE: the process must
 * ignore it (tls/conn.h). */
struct otlp_exporter *export_grpc_new(const char *endpoint, const struct otlp_header *headers,
				      size_t nheaders, const struct otlp_exporter_tls *tls, char *err,
				      size_t errlen);
/* OTLP/HTTP protobuf: POST to url as given (the full ".../v1/traces" URL) through
 * common/httpc, with tls's files as curl's CA bundle and client certificate and key
 * (CURLOPT_CAINFO, CURLOPT_SSLCERT/SSLKEY) for https; unreadable ones fail now. A 429 or 503
 * with Retry-After asks the batcher to wait that long (at most 60 s).
 * The process must have called httpc_global_init(). NULL + errno, err set. */
struct otlp_exporter *export_http_new(const char *url, const struct otlp_header *headers,
				      size_t nheaders, const struct otlp_exporter_tls *tls, char *err,
				      size_t errlen);
/* The exporter cfg asks for (protocol, resolved endpoint, headers). NULL + errno, err set. */
struct otlp_exporter *otlp_exporter_new(const struct otlp_config *cfg, char *err, size_t errlen);
void otlp_exporter_free(struct otlp_exporter *ex);

#endif
