// SPDX-License-Identifier: Apache-2.0
/* YAML to JSON over libyaml's event parser (common/yamljson.h): an explicit stack of open
 * containers, bounded in depth, node count and input size. */
#include "common/yamljson.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

struct frame {
	json_t *c;	/* an array or an object */
	char *key;	/* object: the key read, waiting for its value */
};

static bool one_of(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(s, *list) == 0)
			return true;
	return false;
}

/* A plain scalar typed as YAML 1.1 (Kubernetes' sigs.k8s.io/yaml) types it. */
static json_t *plain_scalar(const char *s)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL", NULL };
	static const char *const yes[] = { "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On",
					   "ON", "y", "Y", NULL };
	static const char *const no[] = { "false", "False", "FALSE", "no", "No", "NO", "off",
					  "Off", "OFF", "n", "N", NULL };
	char *end;

	if (one_of(s, nulls))
		return json_null();
	if (one_of(s, yes))
		return json_true();
	if (one_of(s, no))
		return json_false();
	const char *d = s + (*s == '-' || *s == '+');
	if (isdigit((unsigned char)*d)) {
		errno = 0;
		long long v = strtoll(s, &end, d[0] == '0' && (d[1] == 'x' || d[1] == 'X') ? 16 : 10);
		if (!*end && !errno)
			return json_integer(v);
	}
	if (isdigit((unsigned char)*d) || (*d == '.' && isdigit((unsigned char)d[1]))) {
		errno = 0;
		double v = strtod(s, &end);
		if (!*end && !errno && isfinite(v))
			return json_real(v);
	}
	return json_string(s);
}

json_t *yaml_to_json(const char *text, size_t len, char *err, size_t errlen)
{
	yaml_parser_t p;
	yaml_event_t ev;
	struct frame st[YAMLJSON_MAX_DEPTH];
	int depth = 0, docs = 0;
	size_t nodes = 0;
	json_t *root = NULL;
	bool done = false, nomem = false;
	const char *why = NULL;

	err[0] = '\0';
	if (len > YAMLJSON_MAX_INPUT) {
		snprintf(err, errlen, "larger than %u bytes", YAMLJSON_MAX_INPUT);
		return NULL;
	}
	if (!yaml_parser_initialize(&p)) {
		errno = ENOMEM;
		return NULL;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
	while (!done && !why && !nomem) {
		json_t *v = NULL;
		if (!yaml_parser_parse(&p, &ev)) {
			snprintf(err, errlen, "line %zu, column %zu: %s", p.problem_mark.line + 1,
				 p.problem_mark.column + 1, p.problem ? p.problem : "malformed YAML");
			why = err;
			break;
		}
		size_t line = ev.start_mark.line + 1, col = ev.start_mark.column + 1;
		switch (ev.type) {
		case YAML_DOCUMENT_START_EVENT:
			if (++docs > 1)
				why = "more than one document";
			break;
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_ALIAS_EVENT:
			why = "aliases are not supported";
			break;
		case YAML_SCALAR_EVENT: {
			const char *s = (const char *)ev.data.scalar.value;
			struct frame *top = depth ? &st[depth - 1] : NULL;
			if (top && json_is_object(top->c) && !top->key) {
				if (!(top->key = strdup(s)))
					nomem = true;
				break;
			}
			bool plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
				     (!ev.data.scalar.tag ||
				      strcmp((const char *)ev.data.scalar.tag, YAML_STR_TAG) != 0);
			v = plain ? plain_scalar(s) : json_stringn(s, ev.data.scalar.length);
			if (!v)	/* not UTF-8: libyaml checked the input, so memory */
				why = "a string that is not UTF-8";
			break;
		}
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (depth && json_is_object(st[depth - 1].c) && !st[depth - 1].key) {
				why = "a mapping key that is not a scalar";
				break;
			}
			if (depth == YAMLJSON_MAX_DEPTH) {
				why = "nested too deeply";
				break;
			}
			st[depth].c = ev.type == YAML_SEQUENCE_START_EVENT ? json_array() : json_object();
			st[depth].key = NULL;
			if (!st[depth].c)
				nomem = true;
			else
				depth++;
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			v = st[--depth].c;
			break;
		default:
			break;
		}
		if (v && !why && ++nodes > YAMLJSON_MAX_NODES)
			why = "too many nodes";
		if (v && !why) {
			struct frame *top = depth ? &st[depth - 1] : NULL;
			int rc = 0;
			if (!top) {
				root = v;
				v = NULL;
			} else if (json_is_array(top->c)) {
				rc = json_array_append_new(top->c, v);
				v = NULL;
			} else {
				rc = json_object_set_new(top->c, top->key, v);
				v = NULL;
				free(top->key);
				top->key = NULL;
			}
			if (rc)
				nomem = true;
		}
		json_decref(v);
		if (why && why != err)
			snprintf(err, errlen, "line %zu, column %zu: %s", line, col, why);
		yaml_event_delete(&ev);
	}
	while (depth > 0) {
		depth--;
		json_decref(st[depth].c);
		free(st[depth].key);
	}
	yaml_parser_delete(&p);
	if (why || nomem) {
		json_decref(root);
		if (nomem) {
			snprintf(err, errlen, "out of memory");
			errno = ENOMEM;
		}
		return NULL;
	}
	return root ? root : json_object();
}
