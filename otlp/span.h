/* SPDX-License-Identifier: Apache-2.0 */
/* The span model: IDs, kind, times, bounded typed attributes, status, one link, and the
 * refcounted resource it belongs to. Built by the tracer, encoded by otlp/encode.c. */
#ifndef AMBIT_OTLP_SPAN_H
#define AMBIT_OTLP_SPAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPAN_TRACE_ID_LEN	16
#define SPAN_ID_LEN		8
#define SPAN_FLAG_SAMPLED	0x01	/* W3C trace-flags bit 0 */

/* Bounds (OTel SDK "Attribute Limits"): attributes past SPAN_MAX_ATTRS are dropped and
 * counted; string values past SPAN_MAX_VALUE_LEN bytes are truncated at a UTF-8 boundary. */
#define SPAN_MAX_ATTRS		64
#define SPAN_MAX_KEY_LEN	128
#define SPAN_MAX_VALUE_LEN	1024
#define SPAN_MAX_NAME_LEN	128
#define SPAN_MAX_STATUS_LEN	256

/* What identifies a span across processes (W3C trace context). */
struct span_context {
	uint8_t trace_id[SPAN_TRACE_ID_LEN];
	uint8_t span_id[SPAN_ID_LEN];
	uint8_t flags;		/* trace-flags, SPAN_FLAG_SAMPLED */
	bool remote;		/* came from a traceparent header */
};

/* Values are OTLP's SpanKind numbers. */
enum span_kind {
	SPAN_KIND_INTERNAL = 1,
	SPAN_KIND_SERVER = 2,
	SPAN_KIND_CLIENT = 3,
};

/* Values are OTLP's Status.StatusCode numbers. */
enum span_status {
	SPAN_STATUS_UNSET = 0,
	SPAN_STATUS_OK = 1,
	SPAN_STATUS_ERROR = 2,
};

enum otlp_attr_type {
	OTLP_ATTR_STRING,
	OTLP_ATTR_INT,
	OTLP_ATTR_BOOL,
	OTLP_ATTR_DOUBLE,
};

struct otlp_attr {
	char *key;			/* in the set's strings */
	enum otlp_attr_type type;
	uint32_t key_hash;		/* of key: replacing compares hashes first */
	union {
		char *s;		/* in the set's strings */
		int64_t i;
		bool b;
		double d;
	} v;
};

struct otlp_strs;

/* A bounded attribute set (spans and resources). Keys and string values are copied into
 * chunks the set owns and frees together (a few allocations per span, not two per
 * attribute). */
struct otlp_attrs {
	struct otlp_attr *v;
	uint16_t n, cap;
	uint32_t dropped;		/* over SPAN_MAX_ATTRS: OTLP dropped_attributes_count */
	uint64_t hashes;		/* bit (key_hash % 64) of every key: a new key is found
					 * new without a scan, most of the time */
	struct otlp_strs *strs;		/* newest chunk first */
};

/* Where a finished span is in the export pipeline (admin API, `ambitctl spans`). */
enum span_export_state {
	SPAN_EXPORT_NONE,	/* not ended, or not sampled (never queued) */
	SPAN_EXPORT_QUEUED,	/* waiting in the batcher (or being retried) */
	SPAN_EXPORT_EXPORTED,	/* the collector accepted it */
	SPAN_EXPORT_DROPPED,	/* queue full when it ended */
	SPAN_EXPORT_FAILED,	/* export gave up (non-retryable, retries exhausted, shutdown) */
};

struct otlp_resource;
struct otlp_tracer;

struct span {
	struct span_context ctx;
	uint8_t parent_span_id[SPAN_ID_LEN];
	bool has_parent;
	bool parent_remote;		/* the parent came from another process (traceparent) */
	bool recording;			/* sampled: attributes kept, exported */
	enum span_kind kind;
	char name[SPAN_MAX_NAME_LEN];
	uint64_t start_ns, end_ns;	/* Unix epoch ns; end_ns 0 until span_end */
	struct otlp_attrs attrs;
	enum span_status status;
	char *status_msg;		/* owned, only with SPAN_STATUS_ERROR */
	bool has_link;
	struct span_context link;	/* e.g. the peer side's span context */
	struct otlp_resource *resource;	/* a reference (span_start takes one) */
	struct otlp_tracer *tracer;	/* not owned; outlives the span */
	struct otlp_sink *sink;		/* a reference until span_end; NULL: the tracer's exporter */
	bool no_export;			/* recorded (ring) but never exported */
	int refs;			/* atomic: caller until span_end, batcher queue, ring */
	int export_state;		/* atomic enum span_export_state */
	struct span *pool_next;		/* private: the pool of freed spans (otlp/span.c) */
};

/* A recording span with fresh random IDs and no parent, for tests and tools; spans of the
 * agent come from span_start() (otlp/tracer.h). Takes a reference on resource (may be NULL).
 * NULL + errno (ENOMEM, EINVAL on a NULL name). */
struct span *span_new(struct otlp_resource *resource, const char *name, enum span_kind kind);
/* A zeroed span, refs 0, for the tracer to fill: from the pool of freed ones (their attribute
 * array and first string chunk kept) or new. NULL + errno (ENOMEM). Any thread. */
struct span *span_alloc(void);
struct span *span_ref(struct span *s);
/* Drops a reference; the last one frees the span and releases its resource. NULL ok. */
void span_unref(struct span *s);

/* Attributes. Setting a key again replaces its value (OTel spec). On a non-recording span
 * these do nothing and return 0. 0; -EINVAL for a NULL/empty/over-long key or NULL value;
 * -E2BIG when the span already has SPAN_MAX_ATTRS (the attribute is dropped and counted);
 * -ENOMEM. Over-long string values are truncated, not refused. Strings are copied. */
int span_set_str(struct span *s, const char *key, const char *value);
int span_set_int(struct span *s, const char *key, int64_t value);
int span_set_bool(struct span *s, const char *key, bool value);
int span_set_double(struct span *s, const char *key, double value);
/* A span that stays open long (a connection's): its attributes' memory sized to what it
 * holds now (otlp_attrs_compact). The owner's thread, as the setters. */
void span_compact(struct span *s);
/* The attribute with key, or NULL. Valid until the attribute is replaced or the span freed. */
const struct otlp_attr *span_get_attr(const struct span *s, const char *key);

/* Status: ERROR keeps msg (copied, truncated to SPAN_MAX_STATUS_LEN); OK/UNSET drop any
 * message (spec: description only with ERROR). OK is final: a later ERROR/UNSET is ignored. */
void span_set_status(struct span *s, enum span_status status, const char *msg);
/* One link (the spec allows many; one is all a connection span needs). */
void span_set_link(struct span *s, const struct span_context *link);

/* Fills buf with random bytes, never all zero (IDs): getrandom(2)'s, read ahead per thread
 * (2 KiB at a time; a fork's child reads afresh). Any thread. 0 or -errno. */
int span_random_id(uint8_t *buf, size_t len);
/* Lower-case hex of the IDs into out[33] / out[17] (access logs, admin API). */
void span_trace_id_hex(const struct span_context *c, char out[2 * SPAN_TRACE_ID_LEN + 1]);
void span_span_id_hex(const struct span_context *c, char out[2 * SPAN_ID_LEN + 1]);
bool span_context_valid(const struct span_context *c);

enum span_export_state span_export_state(const struct span *s);
void span_set_export_state(struct span *s, enum span_export_state st);
const char *span_export_state_str(enum span_export_state st);
const char *span_kind_str(enum span_kind kind);
const char *span_status_str(enum span_status st);

/* Attribute sets shared with the resource (same rules as span_set_*). */
int otlp_attrs_set_str(struct otlp_attrs *a, const char *key, const char *value);
int otlp_attrs_set_int(struct otlp_attrs *a, const char *key, int64_t value);
int otlp_attrs_set_bool(struct otlp_attrs *a, const char *key, bool value);
int otlp_attrs_set_double(struct otlp_attrs *a, const char *key, double value);
const struct otlp_attr *otlp_attrs_get(const struct otlp_attrs *a, const char *key);
void otlp_attrs_fini(struct otlp_attrs *a);
/* Sizes a's array and strings to what they hold (a set that stays long, e.g. an open
 * connection's span: not the room a request span's twenty attributes take). Nothing on ENOMEM. */
void otlp_attrs_compact(struct otlp_attrs *a);
/* The heap bytes a holds (its array's slots and its string chunks' room). */
size_t otlp_attrs_bytes(const struct otlp_attrs *a);

#endif
