/* SPDX-License-Identifier: Apache-2.0 */
/* W3C Trace Context (`traceparent`) and W3C Baggage (`baggage`) headers: strict parsers and
 * formatters for what crosses nodes on the HBONE CONNECT request. */
#ifndef AMBIT_OTLP_TRACECONTEXT_H
#define AMBIT_OTLP_TRACECONTEXT_H

#include <stddef.h>

#include "otlp/span.h"

/* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define TRACEPARENT_LEN 55

/* Parses a traceparent value (W3C Trace Context §3.2): version 00 must be exactly 55
 * characters; a higher version (not ff) is read by its version-00 prefix as §3.2.4 asks.
 * Lower-case hex only, all-zero trace-id or parent-id refused. Sets out->remote.
 * 0 or -EINVAL (out untouched). s need not be NUL-terminated. */
int tracecontext_parse(const char *s, size_t len, struct span_context *out);
/* Writes the version-00 traceparent of c and a NUL into buf. Length (55), or -ENOSPC when
 * buflen < 56, -EINVAL for an invalid context. */
int tracecontext_format(const struct span_context *c, char *buf, size_t buflen);

/* W3C Trace Context `tracestate` (§3.3): at most 32 list-members "key=value" separated by
 * commas and optional blanks; keys are a lower-case letter then lower-case letters, digits,
 * underscores, dashes, asterisks and slashes,
 * up to 256, or "tenant@system"; values up to 256 printable characters but ',' and '=', not
 * ending in a space. */
#define TRACESTATE_MAX_MEMBERS 32
/* Finds key's value in a tracestate header value: 0 with *val and *vlen (into s),
 * -ENOENT when the header holds no such member, -EINVAL when it is malformed (§3.3.1.1:
 * a receiver then discards it whole, so the caller treats it as absent). */
int tracestate_get(const char *s, size_t len, const char *key, const char **val, size_t *vlen);

/* W3C Baggage limits (§3.3.3 of the spec). */
#define BAGGAGE_MAX_MEMBERS	64
#define BAGGAGE_MAX_BYTES	8192

struct baggage_member {
	char *key;		/* owned, a token (RFC 7230 tchar) */
	char *value;		/* owned, decoded (any bytes but NUL) */
};

struct baggage {
	struct baggage_member *m;
	size_t n;
};

/* Parses a baggage header value into b (empty or previously cleared). Properties after
 * ';' are validated and ignored; duplicate keys: the last wins. 0; -EINVAL for a
 * malformed header (b left empty); -E2BIG over the limits; -ENOMEM. */
int baggage_parse(const char *s, size_t len, struct baggage *b);
/* The variant the OTel environment variables use (OTEL_RESOURCE_ATTRIBUTES,
 * OTEL_EXPORTER_OTLP_HEADERS): no properties, values may hold any printable character but
 * ',' (still percent-decoded), whitespace around keys and values trimmed. Same returns. */
int baggage_parse_env(const char *s, size_t len, struct baggage *b);
/* Adds or replaces a member (copied). 0; -EINVAL for a key that is not a token;
 * -E2BIG past BAGGAGE_MAX_MEMBERS; -ENOMEM. */
int baggage_set(struct baggage *b, const char *key, const char *value);
/* The decoded value of key, or NULL. */
const char *baggage_get(const struct baggage *b, const char *key);
/* Percent-encodes values (RFC 3986 for octets outside baggage-octet). Length written
 * (NUL added), -ENOSPC if buf is too small, -E2BIG if the header would pass
 * BAGGAGE_MAX_BYTES. */
int baggage_format(const struct baggage *b, char *buf, size_t buflen);
void baggage_fini(struct baggage *b);

#endif
