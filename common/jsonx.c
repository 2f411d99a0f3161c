// SPDX-License-Identifier: Apache-2.0
/* Strict JSON reading helpers shared by the config loader and the workloads model. */
#include "common/jsonx.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jx_init(struct jx *j, const char *file, char *err, size_t errlen)
{
	j->file = file;
	j->err = err;
	j->errlen = errlen;
	j->path[0] = '\0';
	if (errlen)
		err[0] = '\0';
}

int jx_fail(struct jx *j, const char *key, const char *fmt, ...)
{
	va_list ap;
	int n;
	const char *dot = j->path[0] && key ? "." : "";

	n = snprintf(j->err, j->errlen, "%s%s%s%s%s: ", j->file ? j->file : "", j->file ? ": " : "",
		     j->path, dot, key ? key : (j->path[0] ? "" : "(top level)"));
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < j->errlen)
		vsnprintf(j->err + n, j->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

size_t jx_enter(struct jx *j, const char *fmt, ...)
{
	size_t saved = strlen(j->path);
	va_list ap;
	char part[96];

	va_start(ap, fmt);
	vsnprintf(part, sizeof(part), fmt, ap);
	va_end(ap);
	snprintf(j->path + saved, sizeof(j->path) - saved, "%s%s",
		 saved && part[0] != '[' ? "." : "", part);
	return saved;
}

void jx_leave(struct jx *j, size_t saved)
{
	j->path[saved] = '\0';
}

int jx_keys(struct jx *j, const json_t *obj, const char *const *allowed)
{
	const char *key;
	json_t *val;

	json_object_foreach((json_t *)obj, key, val) {
		const char *const *a;
		for (a = allowed; *a; a++)
			if (strcmp(*a, key) == 0)
				break;
		if (!*a)
			return jx_fail(j, key, "unknown key");
	}
	return 0;
}

static int str_get(struct jx *j, const json_t *obj, const char *key, bool required, size_t maxlen,
		   bool empty_ok, char **out)
{
	json_t *v = json_object_get(obj, key);
	char *s;

	if (!v || json_is_null(v))
		return required ? jx_fail(j, key, "missing") : 0;
	if (!json_is_string(v))
		return jx_fail(j, key, "must be a string");
	if (json_string_length(v) > maxlen)
		return jx_fail(j, key, "longer than %zu characters", maxlen);
	if (strlen(json_string_value(v)) != json_string_length(v))
		return jx_fail(j, key, "contains a NUL character");
	if (json_string_length(v) == 0 && !empty_ok)
		return jx_fail(j, key, "must not be empty");
	s = strdup(json_string_value(v));
	if (!s)
		return -ENOMEM;
	free(*out);
	*out = s;
	return 0;
}

int jx_str(struct jx *j, const json_t *obj, const char *key, bool required, size_t maxlen, char **out)
{
	return str_get(j, obj, key, required, maxlen, false, out);
}

int jx_str_any(struct jx *j, const json_t *obj, const char *key, bool required, size_t maxlen,
	       char **out)
{
	return str_get(j, obj, key, required, maxlen, true, out);
}

int jx_uint(struct jx *j, const json_t *obj, const char *key, uint32_t min, uint32_t max, uint32_t *out)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)min ||
	    json_integer_value(v) > (json_int_t)max)
		return jx_fail(j, key, "must be an integer from %u to %u", min, max);
	*out = (uint32_t)json_integer_value(v);
	return 0;
}

int jx_double(struct jx *j, const json_t *obj, const char *key, double min, double max, double *out)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < min ||
	    json_number_value(v) > max)
		return jx_fail(j, key, "must be a number from %g to %g", min, max);
	*out = json_number_value(v);
	return 0;
}

int jx_bool(struct jx *j, const json_t *obj, const char *key, bool *out)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return jx_fail(j, key, "must be true or false");
	*out = json_is_true(v);
	return 0;
}

int jx_object(struct jx *j, const json_t *obj, const char *key, json_t **out)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return jx_fail(j, key, "must be an object");
	*out = v;
	return 0;
}

int jx_array(struct jx *j, const json_t *obj, const char *key, size_t max, json_t **out)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_array(v))
		return jx_fail(j, key, "must be an array");
	if (json_array_size(v) > max)
		return jx_fail(j, key, "has %zu entries; the bound is %zu", json_array_size(v), max);
	*out = v;
	return 0;
}

int jx_enum(struct jx *j, const json_t *obj, const char *key, const char *const *choices, char **out)
{
	json_t *v = json_object_get(obj, key);
	char list[256] = "";
	size_t len = 0;

	if (!v || json_is_null(v))
		return 0;
	for (const char *const *c = choices; *c; c++) {
		if (json_is_string(v) && strcmp(json_string_value(v), *c) == 0) {
			char *s = strdup(*c);
			if (!s)
				return -ENOMEM;
			free(*out);
			*out = s;
			return 0;
		}
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", c == choices ? "" : ", ", *c);
		if (len >= sizeof(list))
			len = sizeof(list) - 1;
	}
	if (json_is_string(v))
		return jx_fail(j, key, "'%s' is not one of %s", json_string_value(v), list);
	return jx_fail(j, key, "must be one of %s", list);
}

int jx_section(struct jx *j, const json_t *obj, const char *key,
	       int (*fn)(struct jx *j, void *arg, const json_t *o), void *arg)
{
	json_t *o;
	int err = jx_object(j, obj, key, &o);

	if (err || !o)
		return err;
	size_t saved = jx_enter(j, "%s", key);
	err = fn(j, arg, o);
	if (!err)
		jx_leave(j, saved);
	return err;
}
