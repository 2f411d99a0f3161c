/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP/1.x <-> HTTP/2 message translation for the waypoint (RFC 9113 §8.2-8.3): request and
 * response heads both ways, chunked trailers, and the gRPC path and status helpers. No I/O and
 * no nghttp2 session: header lists are nghttp2_nv arrays the caller submits as they are. */
#ifndef AMBIT_HTTP_H2MAP_H
#define AMBIT_HTTP_H2MAP_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>

#include "http/http1.h"

/* Bounds of one header list, as for an HTTP/1 head: at most H1_MAX_HEADERS regular fields plus
 * H2MAP_MAX_PSEUDO pseudo-header fields, and H1_MAX_HEAD bytes of names and values together.
 * Past them h2map_hdrs_add returns -E2BIG (the caller answers 431). */
#define H2MAP_MAX_PSEUDO	8

/* A bounded, owned list of HTTP/2 header fields. nv[i].name and nv[i].value point into arena
 * (each NUL-terminated there, lengths in namelen/valuelen); names are stored lowercase. */
struct h2map_hdrs {
	nghttp2_nv *nv;
	size_t n, cap;
	char *arena;
	size_t arena_len, arena_cap;
};

void h2map_hdrs_init(struct h2map_hdrs *h);
/* Frees what the list owns; the list is empty (and usable) afterwards. */
void h2map_hdrs_fini(struct h2map_hdrs *h);
/* Appends a copy of one field. The name is lowercased; it must be a token (RFC 9110 §5.6.2),
 * or ':' and a token for a pseudo-header; the value must hold no control character but HTAB
 * (no NUL, CR, LF: RFC 9113 §8.2.1; no other CTL: RFC 9110 §5.5). 0, -EPROTO
 * (a bad name or value), -E2BIG (past the bounds above) or -ENOMEM. `authorization` and
 * `proxy-authorization` are marked never-indexed for HPACK (RFC 7541 §7.1.3). */
int h2map_hdrs_add(struct h2map_hdrs *h, const char *name, size_t nlen, const char *value, size_t vlen);
/* The value (NUL-terminated, owned by h) of the first field named name (case-insensitive),
 * or NULL. vlen may be NULL. */
const char *h2map_hdrs_get(const struct h2map_hdrs *h, const char *name, size_t *vlen);

/* HTTP/1.x request head (h: an HTTP_REQUEST parser after on_head) -> HTTP/2 request headers
 * appended to out: :method, :scheme (the absolute-form target's scheme, else scheme, else
 * "http"), :authority (the absolute-form target's authority, else Host; none when neither is
 * there), :path, then the fields lowercased and trimmed, without the connection-specific ones
 * (RFC 9113 §8.2.2: connection, keep-alive, proxy-connection, transfer-encoding, upgrade,
 * http2-settings, those named by Connection; te only as "trailers") nor host. -EPROTO when the
 * request cannot be expressed in HTTP/2 (CONNECT, an upgrade, an unusable target, more than one
 * Host), -E2BIG, -ENOMEM. The caller may append more fields (h2map_hdrs_add) afterwards. */
int h2map_request_from_h1(const struct h1 *h, const char *scheme, struct h2map_hdrs *out);

/* HTTP/2 request headers -> an HTTP/1.1 request head appended to out (origin-form target, host
 * from :authority, else from a host field, else empty; cookie fields joined with "; " (RFC 9113
 * §8.2.3); connection-specific fields dropped). Framing: a content-length field is kept; else
 * with end_stream a POST/PUT/PATCH gets "content-length: 0"; else the body will come and
 * "transfer-encoding: chunked" is added and *chunked set (the caller then chunks DATA and ends
 * with h2map_trailers_to_h1). -EPROTO for a malformed request (missing or repeated or unknown
 * pseudo-header, a pseudo-header after a field, CONNECT, a bad method/path/content-length),
 * -ENOMEM. On error out is left as it was. */
int h2map_request_to_h1(const struct h2map_hdrs *in, bool end_stream, struct h1_buf *out, bool *chunked);

/* HTTP/1.x response head (an HTTP_RESPONSE parser after on_head) -> HTTP/2 response headers
 * appended to out: :status, then the fields without the connection-specific ones. -EPROTO for
 * 101 (no HTTP/2 equivalent, RFC 9113 §8.6), -E2BIG, -ENOMEM. */
int h2map_response_from_h1(const struct h1 *h, struct h2map_hdrs *out);

/* HTTP/2 response headers -> an HTTP/1.1 response head appended to out, status line with
 * h1_reason(). *chunked is set when a body may follow without a content-length (not for a
 * response to HEAD, nor 1xx, 204, 304): "transfer-encoding: chunked" is added. With end_stream
 * and no content-length a response that could have a body gets "content-length: 0". The
 * client is taken to speak HTTP/1.1 (an HTTP/1.0 client cannot take chunked: the caller then
 * delimits the body by closing). -EPROTO for a missing, repeated or invalid :status (101
 * included) or another pseudo-header, -ENOMEM. On error out is left as it was. */
int h2map_response_to_h1(const struct h2map_hdrs *in, bool head_request, bool end_stream,
			 struct h1_buf *out, bool *chunked);

/* The end of a chunked body: "0\r\n", the trailer fields (in may be NULL: none; framing,
 * routing and connection-specific fields are left out, RFC 9110 §6.5.1), "\r\n". -EPROTO for
 * a pseudo-header in trailers, -ENOMEM. On error out is left as it was. */
int h2map_trailers_to_h1(const struct h2map_hdrs *in, struct h1_buf *out);

/* The trailer section of a chunked HTTP/1.x body (h at H1_ST_DONE) -> HTTP/2 trailer fields
 * appended to out: lowercased and trimmed, without the fields h1_trailer_forbidden names.
 * 0, -EPROTO (a value HTTP/2 cannot carry), -E2BIG, -ENOMEM. */
int h2map_trailers_from_h1(const struct h1 *h, struct h2map_hdrs *out);

/* gRPC: "/pkg.Service/Method" -> service ("pkg.Service") and method ("Method"), pointers into
 * path. -EINVAL when path is not of that shape (both parts non-empty, no other '/', no query). */
int h2map_grpc_method(const char *path, size_t len, const char **svc, size_t *svc_len,
		      const char **meth, size_t *meth_len);
/* A grpc-status value -> its code (0..16), or -1 when it is not a decimal code in that range. */
int h2map_grpc_status(const char *v, size_t len);
/* The codes a server answers for its own failure (a span in ERROR, as Istio/OpenTelemetry's
 * semantic conventions for gRPC servers): UNKNOWN 2, DEADLINE_EXCEEDED 4, UNIMPLEMENTED 12,
 * INTERNAL 13, UNAVAILABLE 14, DATA_LOSS 15. */
bool h2map_grpc_is_server_error(int code);

#endif
