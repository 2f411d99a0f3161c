// SPDX-License-Identifier: Apache-2.0
/* Spans and bounded attribute sets: the data the tracer fills and the encoder reads.
 * A span is refcounted because the batcher queue and the recent-spans ring share it. */
#include "otlp/span.h"
#include "otlp/sink.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/util.h"
#include "otlp/resource.h"

/* ---- attribute sets ---- */

/* Length of s cut to at most max bytes without splitting a UTF-8 sequence. */
static size_t utf8_trunc_len(const char *s, size_t max)
{
	size_t len = strnlen(s, max + 1);
	if (len <= max)
		return len;
	len = max;
	/* back off continuation bytes (10xxxxxx) so the cut lands on a character start */
	while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
		len--;
	return len;
}

/* A chunk of a set's strings: keys and values, NUL-terminated, bump-allocated. */
struct otlp_strs {
	struct otlp_strs *next;
	uint32_t used, cap;
	char data[];
};

#define STRS_CHUNK	1024	/* a request span's keys and values fit in one or two */
#define ATTRS_FIRST_CAP	32	/* a connection or request span's attributes fit */

/* A copy of s[0..len) NUL-terminated in a's strings; NULL on ENOMEM. */
static char *strs_copy(struct otlp_attrs *a, const char *s, size_t len)
{
	struct otlp_strs *c = a->strs;
	char *d;

	if (!c || c->cap - c->used < len + 1) {
		size_t cap = MAX((size_t)STRS_CHUNK, len + 1);
		c = malloc(sizeof(*c) + cap);
		if (!c)
			return NULL;
		c->cap = (uint32_t)cap;
		c->used = 0;
		/* a big string gets a chunk of its own behind the current one, which keeps
		 * its room for the small strings that follow */
		if (a->strs && len + 1 > STRS_CHUNK) {
			c->next = a->strs->next;
			a->strs->next = c;
		} else {
			c->next = a->strs;
			a->strs = c;
		}
	}
	d = c->data + c->used;
	memcpy(d, s, len);
	d[len] = '\0';
	c->used += (uint32_t)(len + 1);
	return d;
}

/* A hash of key and its length into *len; 0 or -EINVAL (NULL, empty, over-long). Eight bytes
 * a step (a multiply-xorshift per word, the tail zero-padded, the length mixed in): a span's
 * twenty-odd keys are hashed on every request, and a byte-wise hash's chain of multiplies
 * was a fifth of a request span's CPU. */
static int attr_key_hash(const char *key, uint32_t *hash, size_t *len)
{
	uint64_t h = 0x9e3779b97f4a7c15ull, w;
	size_t n, i;

	if (!key || !*key)
		return -EINVAL;
	n = strnlen(key, SPAN_MAX_KEY_LEN + 1);
	if (n > SPAN_MAX_KEY_LEN)
		return -EINVAL;
	for (i = 0; i + 8 <= n; i += 8) {
		memcpy(&w, key + i, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	/* the tail: the key's last 8 bytes again (overlapping) or, shorter keys, bytes; a
	 * variable-length memcpy here cost more than the whole rest (rep movs, a stalled load) */
	if (n >= 8) {
		memcpy(&w, key + n - 8, 8);
	} else {
		w = 0;
		for (size_t j = 0; j < n; j++)
			w |= (uint64_t)(uint8_t)key[j] << (8 * j);
	}
	h = (h ^ w ^ ((uint64_t)n << 56)) * 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 29;
	*hash = (uint32_t)h ^ (uint32_t)(h >> 32);
	*len = n;
	return 0;
}

/* The slot for key: the existing one (its type and value kept for the caller to replace) or
 * a new one (type INT, value 0). NULL + *err. */
static struct otlp_attr *attrs_slot(struct otlp_attrs *a, const char *key, int *err)
{
	uint32_t h;
	size_t klen;

	*err = attr_key_hash(key, &h, &klen);
	if (*err)
		return NULL;
	uint64_t bit = 1ull << (h % 64);
	for (uint16_t i = 0; (a->hashes & bit) && i < a->n; i++)
		if (a->v[i].key_hash == h && strcmp(a->v[i].key, key) == 0)
			return &a->v[i];
	if (a->n >= SPAN_MAX_ATTRS) {
		a->dropped++;
		*err = -E2BIG;
		return NULL;
	}
	if (a->n == a->cap) {
		uint16_t cap = a->cap ? (uint16_t)MIN(a->cap * 2, SPAN_MAX_ATTRS) : ATTRS_FIRST_CAP;
		struct otlp_attr *v = realloc(a->v, cap * sizeof(*v));
		if (!v) {
			*err = -ENOMEM;
			return NULL;
		}
		a->v = v;
		a->cap = cap;
	}
	char *k = strs_copy(a, key, klen);
	if (!k) {
		*err = -ENOMEM;
		return NULL;
	}
	struct otlp_attr *slot = &a->v[a->n++];
	memset(slot, 0, sizeof(*slot));
	slot->key = k;
	slot->key_hash = h;
	a->hashes |= bit;
	slot->type = OTLP_ATTR_INT;
	return slot;
}

int otlp_attrs_set_str(struct otlp_attrs *a, const char *key, const char *value)
{
	int err;
	size_t len;
	struct otlp_attr *slot;

	if (!value)
		return -EINVAL;
	uint16_t had = a->n;
	len = utf8_trunc_len(value, SPAN_MAX_VALUE_LEN);
	slot = attrs_slot(a, key, &err);
	if (!slot)
		return err;
	if (slot->type == OTLP_ATTR_STRING && strlen(slot->v.s) >= len) {
		memmove(slot->v.s, value, len);	/* the old value's room is enough */
		slot->v.s[len] = '\0';
		return 0;
	}
	char *v = strs_copy(a, value, len);
	if (!v) {
		a->n = had;	/* a new key goes again; an old one keeps its value */
		return -ENOMEM;
	}
	slot->type = OTLP_ATTR_STRING;
	slot->v.s = v;
	return 0;
}

int otlp_attrs_set_int(struct otlp_attrs *a, const char *key, int64_t value)
{
	int err;
	struct otlp_attr *slot = attrs_slot(a, key, &err);
	if (!slot)
		return err;
	slot->type = OTLP_ATTR_INT;
	slot->v.i = value;
	return 0;
}

int otlp_attrs_set_bool(struct otlp_attrs *a, const char *key, bool value)
{
	int err;
	struct otlp_attr *slot = attrs_slot(a, key, &err);
	if (!slot)
		return err;
	slot->type = OTLP_ATTR_BOOL;
	slot->v.b = value;
	return 0;
}

int otlp_attrs_set_double(struct otlp_attrs *a, const char *key, double value)
{
	int err;
	struct otlp_attr *slot = attrs_slot(a, key, &err);
	if (!slot)
		return err;
	slot->type = OTLP_ATTR_DOUBLE;
	slot->v.d = value;
	return 0;
}

const struct otlp_attr *otlp_attrs_get(const struct otlp_attrs *a, const char *key)
{
	for (uint16_t i = 0; key && i < a->n; i++)
		if (strcmp(a->v[i].key, key) == 0)
			return &a->v[i];
	return NULL;
}

void otlp_attrs_fini(struct otlp_attrs *a)
{
	if (!a)
		return;
	while (a->strs) {
		struct otlp_strs *next = a->strs->next;
		free(a->strs);
		a->strs = next;
	}
	free(a->v);
	memset(a, 0, sizeof(*a));
}

size_t otlp_attrs_bytes(const struct otlp_attrs *a)
{
	size_t n = (size_t)a->cap * sizeof(*a->v);
	for (const struct otlp_strs *c = a->strs; c; c = c->next)
		n += sizeof(*c) + c->cap;
	return n;
}

void span_compact(struct span *s)
{
	if (s)
		otlp_attrs_compact(&s->attrs);
}

void otlp_attrs_compact(struct otlp_attrs *a)
{
	struct otlp_strs *c = a->strs, *n;

	if (a->cap > a->n) {
		struct otlp_attr *v = a->n ? realloc(a->v, a->n * sizeof(*v)) : NULL;
		if (!a->n) {
			free(a->v);
			a->v = NULL;
			a->cap = 0;
		} else if (v) {
			a->v = v;
			a->cap = a->n;
		}
	}
	if (!c || c->next || c->used == c->cap)
		return;	/* one chunk with room to give back, or nothing to do */
	if (!c->used) {
		free(c);
		a->strs = NULL;
		return;
	}
	n = malloc(sizeof(*n) + c->used);
	if (!n)
		return;
	memcpy(n->data, c->data, c->used);
	n->used = n->cap = c->used;
	n->next = NULL;
	for (uint16_t i = 0; i < a->n; i++) {	/* every key and string value is in c */
		a->v[i].key = n->data + (a->v[i].key - c->data);
		if (a->v[i].type == OTLP_ATTR_STRING)
			a->v[i].v.s = n->data + (a->v[i].v.s - c->data);
	}
	free(c);
	a->strs = n;
}

/* ---- IDs ---- */

/* IDs are the kernel's CSPRNG output (getrandom, ChaCha20), read ahead into a per-thread buffer:
 * one syscall per about 80 spans instead of two per span, and IDs as unpredictable as
 * getrandom's own (W3C asks for random IDs, not for cryptographic ones). A forked child drops
 * what its parent had read ahead: both would otherwise hand out the same IDs. */
#define RAND_AHEAD 2048
static __thread struct {
	uint16_t pos, len;
	uint8_t b[RAND_AHEAD];
} rand_buf;
static pthread_once_t rand_once = PTHREAD_ONCE_INIT;

static void rand_forget(void)
{
	rand_buf.pos = rand_buf.len = 0;
}

static void rand_setup(void)
{
	pthread_atfork(NULL, NULL, rand_forget);
}

/* len random bytes into buf: 0 or -errno (getrandom's). */
static int rand_bytes(uint8_t *buf, size_t len)
{
	pthread_once(&rand_once, rand_setup);
	while (len) {
		size_t k;
		if (rand_buf.pos == rand_buf.len) {
			ssize_t n = getrandom(rand_buf.b, sizeof(rand_buf.b), 0);
			if (n == -1) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			rand_buf.pos = 0;
			rand_buf.len = (uint16_t)n;
		}
		k = MIN(len, (size_t)(rand_buf.len - rand_buf.pos));
		memcpy(buf, rand_buf.b + rand_buf.pos, k);
		rand_buf.pos = (uint16_t)(rand_buf.pos + k);
		buf += k;
		len -= k;
	}
	return 0;
}

int span_random_id(uint8_t *buf, size_t len)
{
	for (int tries = 0; tries < 8; tries++) {
		int rc = rand_bytes(buf, len);
		if (rc)
			return rc;
		for (size_t i = 0; i < len; i++)
			if (buf[i])
				return 0;
	}
	return -EIO;	/* eight all-zero draws: the generator is broken */
}

static bool all_zero(const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (b[i])
			return false;
	return true;
}

bool span_context_valid(const struct span_context *c)
{
	return c && !all_zero(c->trace_id, SPAN_TRACE_ID_LEN) && !all_zero(c->span_id, SPAN_ID_LEN);
}

void span_trace_id_hex(const struct span_context *c, char out[2 * SPAN_TRACE_ID_LEN + 1])
{
	hex_encode(c->trace_id, SPAN_TRACE_ID_LEN, out);
}

void span_span_id_hex(const struct span_context *c, char out[2 * SPAN_ID_LEN + 1])
{
	hex_encode(c->span_id, SPAN_ID_LEN, out);
}

/* ---- spans ---- */

/* ---- span memory ---- */

/* Spans are made and freed at the request rate, most of them freed on another thread than the
 * one that made them (the exporter's, or the loop's when the ring lets one go): malloc and a
 * cross-thread free for the span, its attribute array and its first string chunk each were
 * about a sixth of a request span's CPU. A freed span goes back, with its array and first
 * chunk kept, to a pool shared by all threads (bounded: SPAN_POOL_MAX spans, ~2 KiB each). */
#define SPAN_POOL_MAX 256
static struct {
	pthread_mutex_t lock;
	struct span *head;		/* linked through pool_next */
	unsigned n;
} pool = { .lock = PTHREAD_MUTEX_INITIALIZER };

struct span *span_alloc(void)
{
	struct span *s;

	pthread_mutex_lock(&pool.lock);
	s = pool.head;
	if (s) {
		pool.head = s->pool_next;
		pool.n--;
	}
	pthread_mutex_unlock(&pool.lock);
	if (!s)
		return calloc(1, sizeof(*s));
	s->pool_next = NULL;
	return s;	/* zeroed at release, its array and chunk empty */
}

/* The last reference went: what s refers to is released, s itself pooled or freed. */
static void span_release(struct span *s)
{
	struct otlp_attrs *a = &s->attrs;
	bool keep;

	free(s->status_msg);
	otlp_resource_unref(s->resource);
	otlp_sink_unref(s->sink);
	pthread_mutex_lock(&pool.lock);
	keep = pool.n < SPAN_POOL_MAX;
	if (keep)
		pool.n++;	/* a place held; s goes in below */
	pthread_mutex_unlock(&pool.lock);
	if (!keep) {
		otlp_attrs_fini(a);
		free(s);
		return;
	}
	/* keep the array and the newest chunk if they are ordinary ones (not a big string's
	 * chunk, nor what otlp_attrs_compact sized down); free the others */
	struct otlp_strs *c = a->strs;
	if ((c && c->cap != STRS_CHUNK) || (a->v && a->cap < ATTRS_FIRST_CAP)) {
		otlp_attrs_fini(a);
		c = NULL;
	} else if (c) {
		while (c->next) {
			struct otlp_strs *n = c->next->next;
			free(c->next);
			c->next = n;
		}
		c->used = 0;
	}
	struct otlp_attr *v = a->v;	/* NULL after a fini */
	uint16_t cap = a->cap;
	memset(s, 0, sizeof(*s));
	s->attrs.v = v;
	s->attrs.cap = cap;
	s->attrs.strs = c;
	pthread_mutex_lock(&pool.lock);
	s->pool_next = pool.head;
	pool.head = s;
	pthread_mutex_unlock(&pool.lock);
}

struct span *span_new(struct otlp_resource *resource, const char *name, enum span_kind kind)
{
	struct span *s;

	if (!name) {
		errno = EINVAL;
		return NULL;
	}
	s = span_alloc();
	if (!s)
		return NULL;
	if (span_random_id(s->ctx.trace_id, SPAN_TRACE_ID_LEN) || span_random_id(s->ctx.span_id, SPAN_ID_LEN)) {
		s->refs = 1;
		span_unref(s);
		errno = EIO;
		return NULL;
	}
	s->ctx.flags = SPAN_FLAG_SAMPLED;
	s->recording = true;
	s->kind = kind;
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->refs = 1;
	s->resource = resource ? otlp_resource_ref(resource) : NULL;
	return s;
}

struct span *span_ref(struct span *s)
{
	if (s)
		__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
	return s;
}

void span_unref(struct span *s)
{
	if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	span_release(s);
}

int span_set_str(struct span *s, const char *key, const char *value)
{
	return s->recording ? otlp_attrs_set_str(&s->attrs, key, value) : 0;
}

int span_set_int(struct span *s, const char *key, int64_t value)
{
	return s->recording ? otlp_attrs_set_int(&s->attrs, key, value) : 0;
}

int span_set_bool(struct span *s, const char *key, bool value)
{
	return s->recording ? otlp_attrs_set_bool(&s->attrs, key, value) : 0;
}

int span_set_double(struct span *s, const char *key, double value)
{
	return s->recording ? otlp_attrs_set_double(&s->attrs, key, value) : 0;
}

const struct otlp_attr *span_get_attr(const struct span *s, const char *key)
{
	return otlp_attrs_get(&s->attrs, key);
}

void span_set_status(struct span *s, enum span_status status, const char *msg)
{
	/* OTel API "Set Status": OK is final; a description only goes with ERROR. */
	if (s->status == SPAN_STATUS_OK || status > SPAN_STATUS_ERROR)
		return;
	if (status == SPAN_STATUS_UNSET)
		return;
	free(s->status_msg);
	s->status_msg = NULL;
	s->status = status;
	if (status == SPAN_STATUS_ERROR && msg && *msg)
		s->status_msg = strndup(msg, utf8_trunc_len(msg, SPAN_MAX_STATUS_LEN));
}

void span_set_link(struct span *s, const struct span_context *link)
{
	if (!span_context_valid(link)) {
		s->has_link = false;
		return;
	}
	s->link = *link;
	s->has_link = true;
}

enum span_export_state span_export_state(const struct span *s)
{
	return (enum span_export_state)__atomic_load_n(&s->export_state, __ATOMIC_RELAXED);
}

void span_set_export_state(struct span *s, enum span_export_state st)
{
	__atomic_store_n(&s->export_state, (int)st, __ATOMIC_RELAXED);
}

const char *span_export_state_str(enum span_export_state st)
{
	switch (st) {
	case SPAN_EXPORT_NONE: return "none";
	case SPAN_EXPORT_QUEUED: return "queued";
	case SPAN_EXPORT_EXPORTED: return "exported";
	case SPAN_EXPORT_DROPPED: return "dropped";
	case SPAN_EXPORT_FAILED: return "failed";
	}
	return "?";
}

const char *span_kind_str(enum span_kind kind)
{
	switch (kind) {
	case SPAN_KIND_INTERNAL: return "internal";
	case SPAN_KIND_SERVER: return "server";
	case SPAN_KIND_CLIENT: return "client";
	}
	return "?";
}

const char *span_status_str(enum span_status st)
{
	switch (st) {
	case SPAN_STATUS_UNSET: return "unset";
	case SPAN_STATUS_OK: return "ok";
	case SPAN_STATUS_ERROR: return "error";
	}
	return "?";
}
