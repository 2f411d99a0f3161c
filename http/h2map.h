/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP/2 header fields for the waypoint: an owned, bounded list of fields (nghttp2_nv over one
 * arena) and the gRPC facts read from them (method path, grpc-status). No I/O. The HTTP/1.x
 * <-> HTTP/2 translation functions of the same interface come with the h1<->h2 paths. */
#ifndef AMBIT_HTTP_H2MAP_H
#define AMBIT_HTTP_H2MAP_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>

#define H2MAP_MAX_FIELDS	256		/* past it: -E2BIG */
#define H2MAP_MAX_BYTES		(64 * 1024)	/* names and values together */

/* A bounded, owned list of HTTP/2 header fields (nghttp2_nv with an arena). */
struct h2map_hdrs {
	nghttp2_nv *nv;
	size_t n, cap;
	char *arena;
	size_t arena_len, arena_cap;
};

void h2map_hdrs_init(struct h2map_hdrs *h);
void h2map_hdrs_fini(struct h2map_hdrs *h);
/* Copies one field (names as given: HTTP/2 wants them lower-case). 0, -ENOMEM, or -E2BIG past
 * the bounds above. */
int h2map_hdrs_add(struct h2map_hdrs *h, const char *name, size_t nlen, const char *value, size_t vlen);
/* The value of the first field named name (exact, lower-case), or NULL; *vlen its length. */
const char *h2map_hdrs_get(const struct h2map_hdrs *h, const char *name, size_t *vlen);

/* gRPC: "/pkg.Service/Method" -> service and method (pointers into path); -EINVAL otherwise. */
int h2map_grpc_method(const char *path, size_t len, const char **svc, size_t *svc_len,
		      const char **meth, size_t *meth_len);
/* grpc-status value -> code (0..16) or -1. */
int h2map_grpc_status(const char *v, size_t len);
/* Whether a code is a server-side error (its request span is ERROR, as the OpenTelemetry gRPC
 * conventions say for servers): UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
 * UNAVAILABLE, DATA_LOSS. */
bool h2map_grpc_is_server_error(int code);

#endif
