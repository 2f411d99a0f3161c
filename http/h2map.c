// SPDX-License-Identifier: Apache-2.0
/* HTTP/2 header field lists and gRPC facts for the waypoint's HTTP/2 path (http/h2map.h). */
#include "http/h2map.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void h2map_hdrs_init(struct h2map_hdrs *h)
{
	memset(h, 0, sizeof(*h));
}

void h2map_hdrs_fini(struct h2map_hdrs *h)
{
	free(h->nv);
	free(h->arena);
	memset(h, 0, sizeof(*h));
}

/* The nv pointers point into the arena, which may move: before it grows they become offsets
 * (to_off), after it they are pointers again (from_off). */
static void to_off(struct h2map_hdrs *h)
{
	for (size_t i = 0; i < h->n; i++) {
		h->nv[i].name = (uint8_t *)(uintptr_t)((char *)h->nv[i].name - h->arena);
		h->nv[i].value = (uint8_t *)(uintptr_t)((char *)h->nv[i].value - h->arena);
	}
}

static void from_off(struct h2map_hdrs *h)
{
	for (size_t i = 0; i < h->n; i++) {
		h->nv[i].name = (uint8_t *)h->arena + (uintptr_t)h->nv[i].name;
		h->nv[i].value = (uint8_t *)h->arena + (uintptr_t)h->nv[i].value;
	}
}

int h2map_hdrs_add(struct h2map_hdrs *h, const char *name, size_t nlen, const char *value, size_t vlen)
{
	size_t need = nlen + vlen + 2;
	if (h->n >= H2MAP_MAX_FIELDS || h->arena_len + need > H2MAP_MAX_BYTES)
		return -E2BIG;
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 16;
		nghttp2_nv *nv = realloc(h->nv, cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		h->nv = nv;
		h->cap = cap;
	}
	if (h->arena_len + need > h->arena_cap) {
		size_t cap = h->arena_cap ? h->arena_cap : 512;
		while (cap < h->arena_len + need)
			cap *= 2;
		to_off(h);
		char *a = realloc(h->arena, cap);
		if (a) {
			h->arena = a;
			h->arena_cap = cap;
		}
		from_off(h);
		if (!a)
			return -ENOMEM;
	}
	char *n = h->arena + h->arena_len;
	memcpy(n, name, nlen);
	n[nlen] = '\0';
	char *v = n + nlen + 1;
	if (vlen)
		memcpy(v, value, vlen);
	v[vlen] = '\0';
	h->arena_len += need;
	h->nv[h->n++] = (nghttp2_nv){ .name = (uint8_t *)n, .value = (uint8_t *)v, .namelen = nlen,
				      .valuelen = vlen, .flags = NGHTTP2_NV_FLAG_NONE };
	return 0;
}

const char *h2map_hdrs_get(const struct h2map_hdrs *h, const char *name, size_t *vlen)
{
	size_t nl = strlen(name);
	for (size_t i = 0; i < h->n; i++) {
		if (h->nv[i].namelen == nl && memcmp(h->nv[i].name, name, nl) == 0) {
			if (vlen)
				*vlen = h->nv[i].valuelen;
			return (const char *)h->nv[i].value;
		}
	}
	return NULL;
}

int h2map_grpc_method(const char *path, size_t len, const char **svc, size_t *svc_len,
		      const char **meth, size_t *meth_len)
{
	if (!path || len < 4 || path[0] != '/')
		return -EINVAL;
	const char *sl = memchr(path + 1, '/', len - 1);
	if (!sl || sl == path + 1 || sl == path + len - 1 || memchr(sl + 1, '/', (size_t)(path + len - sl - 1)))
		return -EINVAL;
	*svc = path + 1;
	*svc_len = (size_t)(sl - path - 1);
	*meth = sl + 1;
	*meth_len = (size_t)(path + len - sl - 1);
	return 0;
}

int h2map_grpc_status(const char *v, size_t len)
{
	int code = 0;
	if (!v || len == 0 || len > 2)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		code = code * 10 + (v[i] - '0');
	}
	return code <= 16 ? code : -1;
}

bool h2map_grpc_is_server_error(int code)
{
	switch (code) {
	case 2: case 4: case 12: case 13: case 14: case 15:
		return true;
	default:
		return false;
	}
}
