// SPDX-License-Identifier: Apache-2.0
/* Spans to OTLP protobuf (opentelemetry/proto/collector/trace/v1) with protobuf-c: the
 * message tree is built in one arena per request and freed at once after packing. */
#include "otlp/encode.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/version.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "otlp/resource.h"

typedef Opentelemetry__Proto__Common__V1__KeyValue pb_kv;
typedef Opentelemetry__Proto__Common__V1__AnyValue pb_any;
typedef Opentelemetry__Proto__Trace__V1__Span pb_span;
typedef Opentelemetry__Proto__Trace__V1__ResourceSpans pb_rspans;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans pb_sspans;

/* A bump allocator: every message of one request lives until arena_fini. */
struct arena_chunk {
	struct arena_chunk *next;
	size_t used, size;
	max_align_t data[];
};

struct arena {
	struct arena_chunk *head;
};

static void *arena_alloc(struct arena *a, size_t size)
{
	size = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	struct arena_chunk *c = a->head;
	if (!c || c->size - c->used < size) {
		size_t csize = size > 65536 ? size : 65536;
		c = malloc(sizeof(*c) + csize);
		if (!c)
			return NULL;
		c->next = a->head;
		c->used = 0;
		c->size = csize;
		a->head = c;
	}
	void *p = (char *)c->data + c->used;
	c->used += size;
	memset(p, 0, size);
	return p;
}

static void arena_fini(struct arena *a)
{
	while (a->head) {
		struct arena_chunk *n = a->head->next;
		free(a->head);
		a->head = n;
	}
}

/* KeyValues of an attribute set; NULL only on allocation failure (n == 0 gives non-NULL). */
static pb_kv **encode_attrs(struct arena *a, const struct otlp_attrs *attrs)
{
	pb_kv **v = arena_alloc(a, (attrs->n + 1) * sizeof(*v));
	pb_kv *kv = arena_alloc(a, (attrs->n + 1) * sizeof(*kv));
	pb_any *any = arena_alloc(a, (attrs->n + 1) * sizeof(*any));
	if (!v || !kv || !any)
		return NULL;
	for (uint16_t i = 0; i < attrs->n; i++) {
		const struct otlp_attr *at = &attrs->v[i];
		opentelemetry__proto__common__v1__key_value__init(&kv[i]);
		opentelemetry__proto__common__v1__any_value__init(&any[i]);
		kv[i].key = at->key;
		kv[i].value = &any[i];
		switch (at->type) {
		case OTLP_ATTR_STRING:
			any[i].value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
			any[i].string_value = at->v.s;
			break;
		case OTLP_ATTR_INT:
			any[i].value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
			any[i].int_value = at->v.i;
			break;
		case OTLP_ATTR_BOOL:
			any[i].value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
			any[i].bool_value = at->v.b;
			break;
		case OTLP_ATTR_DOUBLE:
			any[i].value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE;
			any[i].double_value = at->v.d;
			break;
		}
		v[i] = &kv[i];
	}
	return v;
}

/* Span.flags (trace.proto SpanFlags): W3C flags in the low byte, plus whether the parent
 * (or the link) is remote, which the context knows. */
#define PB_FLAG_HAS_IS_REMOTE 0x100u
#define PB_FLAG_IS_REMOTE 0x200u

static pb_span *encode_span(struct arena *a, struct span *s)
{
	pb_span *p = arena_alloc(a, sizeof(*p));
	Opentelemetry__Proto__Trace__V1__Status *st = arena_alloc(a, sizeof(*st));
	if (!p || !st)
		return NULL;
	opentelemetry__proto__trace__v1__span__init(p);
	opentelemetry__proto__trace__v1__status__init(st);
	p->trace_id = (ProtobufCBinaryData){ SPAN_TRACE_ID_LEN, s->ctx.trace_id };
	p->span_id = (ProtobufCBinaryData){ SPAN_ID_LEN, s->ctx.span_id };
	if (s->has_parent)
		p->parent_span_id = (ProtobufCBinaryData){ SPAN_ID_LEN, s->parent_span_id };
	p->flags = s->ctx.flags | PB_FLAG_HAS_IS_REMOTE | (s->has_parent && s->parent_remote ? PB_FLAG_IS_REMOTE : 0);
	p->name = s->name;
	p->kind = (Opentelemetry__Proto__Trace__V1__Span__SpanKind)s->kind;
	p->start_time_unix_nano = s->start_ns;
	p->end_time_unix_nano = s->end_ns;
	p->attributes = encode_attrs(a, &s->attrs);
	if (!p->attributes)
		return NULL;
	p->n_attributes = s->attrs.n;
	p->dropped_attributes_count = s->attrs.dropped;
	st->code = (Opentelemetry__Proto__Trace__V1__Status__StatusCode)s->status;
	if (s->status_msg)
		st->message = s->status_msg;
	p->status = st;
	if (s->has_link) {
		Opentelemetry__Proto__Trace__V1__Span__Link *l = arena_alloc(a, sizeof(*l));
		Opentelemetry__Proto__Trace__V1__Span__Link **lv = arena_alloc(a, sizeof(*lv));
		if (!l || !lv)
			return NULL;
		opentelemetry__proto__trace__v1__span__link__init(l);
		l->trace_id = (ProtobufCBinaryData){ SPAN_TRACE_ID_LEN, s->link.trace_id };
		l->span_id = (ProtobufCBinaryData){ SPAN_ID_LEN, s->link.span_id };
		l->flags = s->link.flags | PB_FLAG_HAS_IS_REMOTE | (s->link.remote ? PB_FLAG_IS_REMOTE : 0);
		lv[0] = l;
		p->links = lv;
		p->n_links = 1;
	}
	return p;
}

int otlp_encode_request(struct span *const *spans, size_t n, size_t prefix, uint8_t **out, size_t *len)
{
	Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest req =
		OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
	Opentelemetry__Proto__Common__V1__InstrumentationScope scope =
		OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
	struct arena a = { 0 };
	struct otlp_resource **res = NULL;
	size_t nres = 0;
	int err = -ENOMEM;
	uint8_t *buf = NULL;

	*out = NULL;
	*len = 0;
	scope.name = (char *)OTLP_SCOPE_NAME;
	scope.version = (char *)AMBIT_VERSION;
	/* Distinct resources, by pointer: the agent shares one resource per workload. */
	res = arena_alloc(&a, (n + 1) * sizeof(*res));
	if (!res)
		goto cleanup;
	for (size_t i = 0; i < n; i++) {
		size_t r;
		for (r = 0; r < nres && res[r] != spans[i]->resource; r++)
			;
		if (r == nres)
			res[nres++] = spans[i]->resource;
	}
	req.resource_spans = arena_alloc(&a, (nres + 1) * sizeof(*req.resource_spans));
	if (!req.resource_spans)
		goto cleanup;
	for (size_t r = 0; r < nres; r++) {
		pb_rspans *rs = arena_alloc(&a, sizeof(*rs));
		pb_sspans *ss = arena_alloc(&a, sizeof(*ss));
		pb_sspans **ssv = arena_alloc(&a, sizeof(*ssv));
		Opentelemetry__Proto__Resource__V1__Resource *pr = arena_alloc(&a, sizeof(*pr));
		if (!rs || !ss || !ssv || !pr)
			goto cleanup;
		opentelemetry__proto__trace__v1__resource_spans__init(rs);
		opentelemetry__proto__trace__v1__scope_spans__init(ss);
		opentelemetry__proto__resource__v1__resource__init(pr);
		if (res[r]) {
			pr->attributes = encode_attrs(&a, &res[r]->attrs);
			if (!pr->attributes)
				goto cleanup;
			pr->n_attributes = res[r]->attrs.n;
			pr->dropped_attributes_count = res[r]->attrs.dropped;
		}
		rs->resource = pr;
		ss->scope = &scope;
		ss->spans = arena_alloc(&a, (n + 1) * sizeof(*ss->spans));
		if (!ss->spans)
			goto cleanup;
		for (size_t i = 0; i < n; i++) {
			if (spans[i]->resource != res[r])
				continue;
			pb_span *p = encode_span(&a, spans[i]);
			if (!p)
				goto cleanup;
			ss->spans[ss->n_spans++] = p;
		}
		ssv[0] = ss;
		rs->scope_spans = ssv;
		rs->n_scope_spans = 1;
		req.resource_spans[req.n_resource_spans++] = rs;
	}
	size_t size = opentelemetry__proto__collector__trace__v1__export_trace_service_request__get_packed_size(&req);
	buf = malloc(prefix + size + 1);
	if (!buf)
		goto cleanup;
	opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(&req, buf + prefix);
	*out = buf;
	*len = prefix + size;
	err = 0;
cleanup:
	arena_fini(&a);
	return err;
}

int otlp_decode_response(const uint8_t *buf, size_t len, int64_t *rejected, char *msg, size_t msglen)
{
	*rejected = 0;
	if (msglen)
		msg[0] = '\0';
	if (len == 0)
		return 0;
	Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse *r =
		opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(NULL, len, buf);
	if (!r)
		return -EBADMSG;
	if (r->partial_success) {
		*rejected = r->partial_success->rejected_spans;
		if (r->partial_success->error_message)
			snprintf(msg, msglen, "%s", r->partial_success->error_message);
	}
	opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked(r, NULL);
	return 0;
}

int otlp_decode_retry_info(const uint8_t *buf, size_t len, uint32_t max_ms, uint32_t *delay_ms)
{
	static const char type[] = "type.googleapis.com/google.rpc.RetryInfo";
	Google__Rpc__Status *st = google__rpc__status__unpack(NULL, len, buf);
	int rc = -ENOENT;

	if (!st)
		return -EBADMSG;
	for (size_t i = 0; i < st->n_details && rc == -ENOENT; i++) {
		const Google__Protobuf__Any *a = st->details[i];
		if (!a->type_url || strcmp(a->type_url, type) != 0)
			continue;
		Google__Rpc__RetryInfo *ri = google__rpc__retry_info__unpack(NULL, a->value.len, a->value.data);
		if (!ri) {
			rc = -EBADMSG;
			break;
		}
		/* a RetryInfo without retry_delay, or a negative one, means "retry, no delay" */
		uint64_t ms = 0;
		const Google__Protobuf__Duration *d = ri->retry_delay;
		if (d && d->seconds >= 0 && d->nanos >= 0)
			ms = d->seconds > (int64_t)max_ms ? max_ms : (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000;
		*delay_ms = (uint32_t)(ms < max_ms ? ms : max_ms);
		google__rpc__retry_info__free_unpacked(ri, NULL);
		rc = 0;
	}
	google__rpc__status__free_unpacked(st, NULL);
	return rc;
}
