/* SPDX-License-Identifier: Apache-2.0 */
/* Strict reading of JSON documents (config, workloads file): typed getters with bounds that
 * leave defaults alone when a key is absent, unknown-key checks, and one error line naming
 * the file, the key path and the bad value ("node1.json: tracing.otlp.protocol: ..."). */
#ifndef AMBIT_COMMON_JSONX_H
#define AMBIT_COMMON_JSONX_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct jx {
	const char *file;	/* prefix of error lines, or NULL */
	char *err;
	size_t errlen;
	char path[192];		/* "tracing.otlp" while inside that object */
};

void jx_init(struct jx *j, const char *file, char *err, size_t errlen);
/* Writes "FILE: PATH[.KEY]: message" and returns -EINVAL. key may be NULL. */
int jx_fail(struct jx *j, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Enters a member or index: returns the old path length for jx_leave. */
size_t jx_enter(struct jx *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void jx_leave(struct jx *j, size_t saved);

/* obj may hold only keys in allowed (NULL-terminated). */
int jx_keys(struct jx *j, const json_t *obj, const char *const *allowed);
/* Absent or null: *out is left as it was (a default); an error when required. Present: must
 * be a non-empty string of at most maxlen; replaces *out with a copy (the old one is freed). */
int jx_str(struct jx *j, const json_t *obj, const char *key, bool required, size_t maxlen, char **out);
/* jx_str that accepts "" (header and query values). */
int jx_str_any(struct jx *j, const json_t *obj, const char *key, bool required, size_t maxlen,
	       char **out);
int jx_uint(struct jx *j, const json_t *obj, const char *key, uint32_t min, uint32_t max, uint32_t *out);
int jx_double(struct jx *j, const json_t *obj, const char *key, double min, double max, double *out);
int jx_bool(struct jx *j, const json_t *obj, const char *key, bool *out);
/* An optional object member: *out = NULL when absent or null (borrowed reference). */
int jx_object(struct jx *j, const json_t *obj, const char *key, json_t **out);
/* Runs fn(j, arg, member) on the optional object member key, with the error path inside it
 * (a config file's sections). 0 when absent; else what fn returns. */
int jx_section(struct jx *j, const json_t *obj, const char *key,
	       int (*fn)(struct jx *j, void *arg, const json_t *o), void *arg);
/* An optional array member, at most max entries (borrowed reference). */
int jx_array(struct jx *j, const json_t *obj, const char *key, size_t max, json_t **out);
/* One of the NULL-terminated choices; stores a copy in *out. */
int jx_enum(struct jx *j, const json_t *obj, const char *key, const char *const *choices, char **out);

#endif
