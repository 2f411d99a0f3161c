/* SPDX-License-Identifier: Apache-2.0 */
/* Shared bits of the libFuzzer targets (tests/fuzz/README.md): a quiet logger, a NUL-terminated
 * copy of the input, and FUZZ_CHECK for properties that must hold (a failure aborts). */
#ifndef AMBIT_TESTS_FUZZ_H
#define AMBIT_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/log.h"

#define FUZZ_CHECK(cond)                                                             \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__,  \
				__LINE__, #cond);                                    \
			abort();                                                     \
		}                                                                    \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Parsers log what they refuse; a fuzzer refuses millions of inputs. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_set_level(LOG_LVL_ERROR);
	return 0;
}

/* A malloc'ed NUL-terminated copy of data (embedded NULs stay: C-string parsers stop there). */
static inline char *fuzz_str(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/* The input as a `resources` JSON array: a lone object is wrapped; NULL when it is neither. */
static inline json_t *fuzz_resources(const uint8_t *data, size_t size)
{
	json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	if (json_is_object(j)) {
		json_t *arr = json_array();
		if (!arr)
			abort();
		json_array_append_new(arr, j);
		j = arr;
	}
	if (!json_is_array(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

#endif
