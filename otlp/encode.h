/* SPDX-License-Identifier: Apache-2.0 */
/* OTLP protobuf encoding of span batches and decoding of export responses, shared by the
 * gRPC and HTTP exporters (the only place protobuf-c types are touched). */
#ifndef AMBIT_OTLP_ENCODE_H
#define AMBIT_OTLP_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "otlp/span.h"

/* An ExportTraceServiceRequest for spans[0..n), grouped by resource, scope "ambit".
 * prefix bytes are left free at the start of *out (gRPC's 5-byte frame header); *len
 * counts them. *out is malloc'ed (caller frees). 0 or -ENOMEM. */
int otlp_encode_request(struct span *const *spans, size_t n, size_t prefix, uint8_t **out, size_t *len);
/* Reads an ExportTraceServiceResponse: *rejected and msg from partial_success (0 and ""
 * when absent). An empty body is a full success. 0 or -EBADMSG. */
int otlp_decode_response(const uint8_t *buf, size_t len, int64_t *rejected, char *msg, size_t msglen);
/* Reads a google.rpc.Status (gRPC's grpc-status-details-bin, already base64-decoded) for a
 * google.rpc.RetryInfo detail: 0 with *delay_ms its retry_delay (capped at max_ms), -ENOENT
 * when there is none, -EBADMSG when buf is not a Status. */
int otlp_decode_retry_info(const uint8_t *buf, size_t len, uint32_t max_ms, uint32_t *delay_ms);

#endif
