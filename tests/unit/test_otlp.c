// SPDX-License-Identifier: Apache-2.0
/* Unit tests of otlp/: trace context and baggage codecs, sampler ratios, attribute bounds,
 * OTEL_* parsing, the batcher's drop counting and retry/backoff against a fake exporter,
 * the tracer, and the protobuf encoding read back with protobuf-c. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "harness.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "otlp/batcher.h"
#include "otlp/config.h"
#include "otlp/encode.h"
#include "otlp/exporter.h"
#include "otlp/resource.h"
#include "otlp/sampler.h"
#include "otlp/sink.h"
#include "otlp/tracecontext.h"
#include "otlp/tracer.h"

#define TP_OK "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int tp(const char *s, struct span_context *c)
{
	return tracecontext_parse(s, strlen(s), c);
}

TEST(traceparent_parse_valid)
{
	struct span_context c;
	char hex[33];
	REQUIRE(tp(TP_OK, &c) == 0);
	span_trace_id_hex(&c, hex);
	CHECK_EQ_STR(hex, "4bf92f3577b34da6a3ce929d0e0e4736");
	span_span_id_hex(&c, hex);
	CHECK_EQ_STR(hex, "00f067aa0ba902b7");
	CHECK_EQ_INT(c.flags, 1);
	CHECK(c.remote);
	CHECK(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &c) == 0);
	CHECK_EQ_INT(c.flags & SPAN_FLAG_SAMPLED, 0);
	/* a future version with more fields: read by its version-00 prefix (§3.2.4) */
	CHECK(tp("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future", &c) == 0);
	CHECK(tp("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &c) == 0);
}

TEST(traceparent_parse_invalid)
{
	static const char *const bad[] = {
		"",
		"00",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",	/* upper case */
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",	/* zero trace-id */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",	/* zero parent-id */
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",	/* version ff */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",	/* 00 with extra */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
		"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",	/* future w/o '-' */
		"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
		"0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	};
	struct span_context c = { .flags = 0x55 };
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		if (tp(bad[i], &c) != -EINVAL)
			fprintf(stderr, "  accepted: '%s'\n", bad[i]);
		CHECK(tp(bad[i], &c) == -EINVAL);
	}
	CHECK_EQ_INT(c.flags, 0x55);	/* untouched on failure */
	CHECK(tracecontext_parse(NULL, 55, &c) == -EINVAL);
}

TEST(traceparent_format)
{
	struct span_context c, d;
	char buf[64];
	REQUIRE(tp(TP_OK, &c) == 0);
	CHECK_EQ_INT(tracecontext_format(&c, buf, sizeof(buf)), TRACEPARENT_LEN);
	CHECK_EQ_STR(buf, TP_OK);
	CHECK(tracecontext_format(&c, buf, TRACEPARENT_LEN) == -ENOSPC);
	memset(&d, 0, sizeof(d));
	CHECK(tracecontext_format(&d, buf, sizeof(buf)) == -EINVAL);
	/* round trip of random IDs */
	for (int i = 0; i < 100; i++) {
		REQUIRE(span_random_id(c.trace_id, 16) == 0 && span_random_id(c.span_id, 8) == 0);
		c.flags = (uint8_t)(i & 1);
		REQUIRE(tracecontext_format(&c, buf, sizeof(buf)) == TRACEPARENT_LEN);
		REQUIRE(tp(buf, &d) == 0);
		CHECK(memcmp(c.trace_id, d.trace_id, 16) == 0 && memcmp(c.span_id, d.span_id, 8) == 0);
		CHECK_EQ_INT(d.flags, c.flags);
	}
}

static int ts(const char *s, const char *key, char *out, size_t cap)
{
	const char *v = NULL;
	size_t n = 0;
	int rc = tracestate_get(s, strlen(s), key, &v, &n);
	if (rc == 0)
		snprintf(out, cap, "%.*s", (int)n, v);
	return rc;
}

TEST(tracestate_get)
{
	char v[300];

	CHECK_EQ_INT(ts("ambit=rq", "ambit", v, sizeof(v)), 0);
	CHECK_EQ_STR(v, "rq");
	CHECK_EQ_INT(ts(" congo=t61rcWkgMzE ,\t, rojo=00f067aa0ba902b7,ambit=rq:1 ", "ambit", v, sizeof(v)), 0);
	CHECK_EQ_STR(v, "rq:1");
	CHECK_EQ_INT(ts("fw529a3039@dt=x y,ambit=a,ambit=b", "ambit", v, sizeof(v)), 0);
	CHECK_EQ_STR(v, "a");	/* the first of a duplicate */
	CHECK_EQ_INT(ts("congo=t61rcWkgMzE", "ambit", v, sizeof(v)), -ENOENT);
	CHECK_EQ_INT(ts("", "ambit", v, sizeof(v)), -ENOENT);
	CHECK_EQ_INT(ts(" , ", "ambit", v, sizeof(v)), -ENOENT);
	/* malformed anywhere: the whole header is discarded */
	const char *bad[] = {
		"ambit=rq,Congo=x",	/* upper case key */
		"ambit=rq,congo",	/* no '=' */
		"ambit=rq,congo=",	/* empty value */
		"ambit=r,q",		/* ',' ends the member: "q" has no '=' */
		"ambit=r=q",		/* '=' in the value */
		"ambit=rq ,1a=x",	/* a simple key starts with a letter */
		"ambit=rq,a@=x",	/* empty system id */
		"ambit=rq,a@B=x",	/* system id starts lower case */
		"ambit=r\x01q",
		"ambit=rq,congo=x\x7f",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (ts(bad[i], "ambit", v, sizeof(v)) != -EINVAL)
			fprintf(stderr, "# accepted: %s\n", bad[i]);
		CHECK_EQ_INT(ts(bad[i], "ambit", v, sizeof(v)), -EINVAL);
	}
	char many[33 * 6 + 1] = "";
	for (int i = 0; i < 33; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many), "k%02d=v,", i);
	CHECK_EQ_INT(ts(many, "k00", v, sizeof(v)), -EINVAL);	/* 33 members */
	many[32 * 6 - 1] = '\0';
	CHECK_EQ_INT(ts(many, "k31", v, sizeof(v)), 0);		/* 32 are fine */
	CHECK_EQ_STR(v, "v");
	char long_val[300];
	snprintf(long_val, sizeof(long_val), "ambit=%0257d", 0);
	CHECK_EQ_INT(ts(long_val, "ambit", v, sizeof(v)), -EINVAL);
	long_val[6 + 256] = '\0';
	CHECK_EQ_INT(ts(long_val, "ambit", v, sizeof(v)), 0);
}

TEST(baggage_parse_ok)
{
	struct baggage b = { 0 };
	const char *h = "userId=alice, serverNode = DF%2028 ;prop1;prop2=x,isProduction=false,,k=a%25b";
	REQUIRE(baggage_parse(h, strlen(h), &b) == 0);
	CHECK_EQ_INT(b.n, 4);
	CHECK_EQ_STR(baggage_get(&b, "userId"), "alice");
	CHECK_EQ_STR(baggage_get(&b, "serverNode"), "DF 28");
	CHECK_EQ_STR(baggage_get(&b, "isProduction"), "false");
	CHECK_EQ_STR(baggage_get(&b, "k"), "a%b");
	CHECK(baggage_get(&b, "nope") == NULL);
	baggage_fini(&b);
	/* duplicate key: the last wins */
	REQUIRE(baggage_parse("a=1,a=2", 7, &b) == 0);
	CHECK_EQ_INT(b.n, 1);
	CHECK_EQ_STR(baggage_get(&b, "a"), "2");
	baggage_fini(&b);
	REQUIRE(baggage_parse("", 0, &b) == 0);
	CHECK_EQ_INT(b.n, 0);
	baggage_fini(&b);
}

TEST(baggage_parse_invalid)
{
	static const char *const bad[] = {
		"novalue", "=v", "k y=v", "k=v v", "k=a\"b", "k=a\\b", "k=%zz", "k=%4", "k=%00",
		"k=v;=x", "k=v;p=a b", "k(=v", "k=\x01",
	};
	struct baggage b = { 0 };
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		int rc = baggage_parse(bad[i], strlen(bad[i]), &b);
		if (rc != -EINVAL)
			fprintf(stderr, "  '%s' -> %d\n", bad[i], rc);
		CHECK(rc == -EINVAL);
		CHECK_EQ_INT(b.n, 0);
	}
	baggage_fini(&b);
}

TEST(baggage_limits)
{
	struct baggage b = { 0 };
	char *big = malloc(BAGGAGE_MAX_BYTES + 64);
	REQUIRE(big);
	/* 65 members */
	size_t n = 0;
	for (int i = 0; i < 65; i++)
		n += (size_t)sprintf(big + n, "%sk%d=v", i ? "," : "", i);
	CHECK(baggage_parse(big, n, &b) == -E2BIG);
	CHECK_EQ_INT(b.n, 0);
	/* over 8192 bytes */
	memset(big, 'a', BAGGAGE_MAX_BYTES + 10);
	big[0] = 'k';
	big[1] = '=';
	CHECK(baggage_parse(big, BAGGAGE_MAX_BYTES + 10, &b) == -E2BIG);
	/* formatting a value that encodes past 8192 */
	memset(big, ' ', 4000);
	big[4000] = '\0';
	REQUIRE(baggage_set(&b, "k", big) == 0);
	char *out = malloc(20000);
	REQUIRE(out);
	CHECK(baggage_format(&b, out, 20000) == -E2BIG);
	baggage_fini(&b);
	free(out);
	free(big);
	for (int i = 0; i < 64; i++) {
		char k[8];
		snprintf(k, sizeof(k), "k%d", i);
		REQUIRE(baggage_set(&b, k, "v") == 0);
	}
	CHECK(baggage_set(&b, "k64", "v") == -E2BIG);
	CHECK(baggage_set(&b, "k0", "w") == 0);	/* replacing is fine */
	CHECK(baggage_set(&b, "bad key", "w") == -EINVAL);
	baggage_fini(&b);
}

TEST(baggage_format_roundtrip)
{
	struct baggage b = { 0 }, c = { 0 };
	char buf[256];
	REQUIRE(baggage_set(&b, "source.workload", "api gateway,v1;x=%\"\\") == 0);
	REQUIRE(baggage_set(&b, "ns", "default") == 0);
	int n = baggage_format(&b, buf, sizeof(buf));
	REQUIRE(n > 0);
	CHECK_EQ_STR(buf, "source.workload=api%20gateway%2Cv1%3Bx=%25%22%5C,ns=default");
	REQUIRE(baggage_parse(buf, (size_t)n, &c) == 0);
	CHECK_EQ_STR(baggage_get(&c, "source.workload"), "api gateway,v1;x=%\"\\");
	CHECK_EQ_STR(baggage_get(&c, "ns"), "default");
	CHECK(baggage_format(&b, buf, 10) == -ENOSPC);
	CHECK_EQ_INT(strlen(buf), 9);
	baggage_fini(&b);
	baggage_fini(&c);
}

TEST(baggage_env_variant)
{
	struct baggage b = { 0 };
	const char *s = " service.name = my svc , k8s.pod.name=p%2C1,Authorization=Bearer abc";
	REQUIRE(baggage_parse_env(s, strlen(s), &b) == 0);
	CHECK_EQ_STR(baggage_get(&b, "service.name"), "my svc");
	CHECK_EQ_STR(baggage_get(&b, "k8s.pod.name"), "p,1");
	CHECK_EQ_STR(baggage_get(&b, "Authorization"), "Bearer abc");
	baggage_fini(&b);
	CHECK(baggage_parse_env("k=%x1", 5, &b) == -EINVAL);
	CHECK(baggage_parse_env("justakey", 8, &b) == -EINVAL);
}

/* ---- sampler ---- */

static int count_sampled(const struct sampler *s, int n, const struct span_context *parent)
{
	uint8_t tid[16];
	int k = 0;
	for (int i = 0; i < n; i++) {
		span_random_id(tid, sizeof(tid));
		k += sampler_should_sample(s, parent, tid);
	}
	return k;
}

TEST(sampler_ratios)
{
	struct sampler s;
	REQUIRE(sampler_init(&s, SAMPLER_TRACEIDRATIO, 0.0) == 0);
	CHECK_EQ_INT(count_sampled(&s, 10000, NULL), 0);
	REQUIRE(sampler_init(&s, SAMPLER_TRACEIDRATIO, 1.0) == 0);
	CHECK_EQ_INT(count_sampled(&s, 10000, NULL), 10000);
	REQUIRE(sampler_init(&s, SAMPLER_TRACEIDRATIO, 0.5) == 0);
	int k = count_sampled(&s, 10000, NULL);
	fprintf(stderr, "  50%%: %d of 10000\n", k);
	CHECK(k > 4700 && k < 5300);	/* 6 sigma */
	REQUIRE(sampler_init(&s, SAMPLER_PARENT_TRACEIDRATIO, 0.1) == 0);
	k = count_sampled(&s, 10000, NULL);
	CHECK(k > 850 && k < 1150);
	/* deterministic on the low 8 bytes: same ID, same answer; high bytes do not matter */
	uint8_t tid[16] = { 0 };
	tid[15] = 1;
	REQUIRE(sampler_init(&s, SAMPLER_TRACEIDRATIO, 0.5) == 0);
	CHECK(sampler_should_sample(&s, NULL, tid));
	memset(tid + 8, 0xff, 8);
	CHECK(!sampler_should_sample(&s, NULL, tid));
	memset(tid, 0, 8);
	CHECK(!sampler_should_sample(&s, NULL, tid));
	CHECK(sampler_init(&s, SAMPLER_TRACEIDRATIO, 1.5) == -EINVAL);
	CHECK(sampler_init(&s, SAMPLER_TRACEIDRATIO, -0.1) == -EINVAL);
	CHECK(sampler_init(&s, SAMPLER_TRACEIDRATIO, NAN) == -EINVAL);
}

TEST(sampler_parent_based)
{
	struct sampler s;
	struct span_context sampled, unsampled;
	REQUIRE(tp(TP_OK, &sampled) == 0);
	REQUIRE(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &unsampled) == 0);
	/* ratio 0 root sampler: a sampled parent still wins */
	REQUIRE(sampler_init(&s, SAMPLER_PARENT_TRACEIDRATIO, 0.0) == 0);
	CHECK_EQ_INT(count_sampled(&s, 1000, &sampled), 1000);
	CHECK_EQ_INT(count_sampled(&s, 1000, NULL), 0);
	REQUIRE(sampler_init(&s, SAMPLER_PARENT_TRACEIDRATIO, 1.0) == 0);
	CHECK_EQ_INT(count_sampled(&s, 1000, &unsampled), 0);
	CHECK_EQ_INT(count_sampled(&s, 1000, NULL), 1000);
	REQUIRE(sampler_init(&s, SAMPLER_PARENT_ALWAYS_OFF, 0) == 0);
	CHECK_EQ_INT(count_sampled(&s, 10, &sampled), 10);
	CHECK_EQ_INT(count_sampled(&s, 10, NULL), 0);
	REQUIRE(sampler_init(&s, SAMPLER_PARENT_ALWAYS_ON, 0) == 0);
	CHECK_EQ_INT(count_sampled(&s, 10, &unsampled), 0);
	CHECK_EQ_INT(count_sampled(&s, 10, NULL), 10);
	/* non-parent-based samplers ignore the parent */
	REQUIRE(sampler_init(&s, SAMPLER_ALWAYS_ON, 0) == 0);
	CHECK_EQ_INT(count_sampled(&s, 10, &unsampled), 10);
	REQUIRE(sampler_init(&s, SAMPLER_ALWAYS_OFF, 0) == 0);
	CHECK_EQ_INT(count_sampled(&s, 10, &sampled), 0);
	enum sampler_kind k;
	CHECK(sampler_kind_parse("parentbased_traceidratio", &k) == 0 && k == SAMPLER_PARENT_TRACEIDRATIO);
	CHECK(sampler_kind_parse("jaeger_remote", &k) == -EINVAL);
	CHECK(sampler_kind_parse(NULL, &k) == -EINVAL);
}

/* ---- spans and attributes ---- */

TEST(span_attribute_bounds)
{
	struct span *s = span_new(NULL, "x", SPAN_KIND_INTERNAL);
	char key[32];
	REQUIRE(s);
	for (int i = 0; i < SPAN_MAX_ATTRS; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		REQUIRE(span_set_int(s, key, i) == 0);
	}
	CHECK(span_set_str(s, "one.too.many", "v") == -E2BIG);
	CHECK(span_set_bool(s, "another", true) == -E2BIG);
	CHECK_EQ_INT(s->attrs.n, SPAN_MAX_ATTRS);
	CHECK_EQ_INT(s->attrs.dropped, 2);
	/* replacing an existing key is always allowed, and may change its type */
	CHECK(span_set_str(s, "k3", "three") == 0);
	CHECK(span_get_attr(s, "k3")->type == OTLP_ATTR_STRING);
	CHECK_EQ_STR(span_get_attr(s, "k3")->v.s, "three");
	CHECK(span_set_double(s, "k3", 2.5) == 0);
	CHECK(span_get_attr(s, "k3")->v.d == 2.5);
	CHECK_EQ_INT(s->attrs.n, SPAN_MAX_ATTRS);
	span_unref(s);

	s = span_new(NULL, "y", SPAN_KIND_CLIENT);
	REQUIRE(s);
	char *big = malloc(5000);
	REQUIRE(big);
	memset(big, 'a', 4999);
	big[4999] = '\0';
	CHECK(span_set_str(s, "big", big) == 0);
	CHECK_EQ_INT(strlen(span_get_attr(s, "big")->v.s), SPAN_MAX_VALUE_LEN);
	/* truncation never splits a UTF-8 sequence: "é" is 2 bytes straddling the limit */
	memset(big, 'a', SPAN_MAX_VALUE_LEN - 1);
	memcpy(big + SPAN_MAX_VALUE_LEN - 1, "\xc3\xa9zz", 5);
	CHECK(span_set_str(s, "utf8", big) == 0);
	CHECK_EQ_INT(strlen(span_get_attr(s, "utf8")->v.s), SPAN_MAX_VALUE_LEN - 1);
	memset(key, 'k', sizeof(key));
	key[sizeof(key) - 1] = '\0';
	char longkey[SPAN_MAX_KEY_LEN + 2];
	memset(longkey, 'k', sizeof(longkey) - 1);
	longkey[sizeof(longkey) - 1] = '\0';
	CHECK(span_set_str(s, longkey, "v") == -EINVAL);
	CHECK(span_set_str(s, "", "v") == -EINVAL);
	CHECK(span_set_str(s, NULL, "v") == -EINVAL);
	CHECK(span_set_str(s, "k", NULL) == -EINVAL);
	CHECK_EQ_INT(s->attrs.dropped, 0);
	free(big);
	span_unref(s);
	span_unref(NULL);
}

/* Keys and values live in the set's own chunks: replacing a value (shorter, longer, another
 * type, its own text), big values next to small ones, and every value intact after many. */
TEST(span_attribute_strings)
{
	struct span *s = span_new(NULL, "x", SPAN_KIND_INTERNAL);
	char key[32], val[64], big[SPAN_MAX_VALUE_LEN + 1];
	REQUIRE(s);
	CHECK(span_set_str(s, "a", "long value") == 0);
	const struct otlp_attr *a = span_get_attr(s, "a");
	CHECK(span_set_str(s, "a", "short") == 0);
	CHECK_EQ_STR(span_get_attr(s, "a")->v.s, "short");
	CHECK(span_get_attr(s, "a") == a);	/* the same slot */
	CHECK(span_set_str(s, "a", "a value longer than the first one") == 0);
	CHECK_EQ_STR(span_get_attr(s, "a")->v.s, "a value longer than the first one");
	CHECK(span_set_str(s, "a", span_get_attr(s, "a")->v.s + 2) == 0);	/* its own text */
	CHECK_EQ_STR(span_get_attr(s, "a")->v.s, "value longer than the first one");
	CHECK(span_set_int(s, "a", 7) == 0 && span_get_attr(s, "a")->v.i == 7);
	CHECK(span_set_str(s, "a", "back") == 0);
	CHECK_EQ_STR(span_get_attr(s, "a")->v.s, "back");
	memset(big, 'b', SPAN_MAX_VALUE_LEN);
	big[SPAN_MAX_VALUE_LEN] = '\0';
	for (int i = 0; i < SPAN_MAX_ATTRS - 1; i++) {
		snprintf(key, sizeof(key), "key.%d", i);
		snprintf(val, sizeof(val), "value %d", i);
		REQUIRE(span_set_str(s, key, i % 10 == 5 ? big : val) == 0);
	}
	CHECK_EQ_INT(s->attrs.n, SPAN_MAX_ATTRS);
	for (int i = 0; i < SPAN_MAX_ATTRS - 1; i++) {
		snprintf(key, sizeof(key), "key.%d", i);
		snprintf(val, sizeof(val), "value %d", i);
		a = span_get_attr(s, key);
		REQUIRE(a && a->type == OTLP_ATTR_STRING);
		CHECK_EQ_STR(a->v.s, i % 10 == 5 ? big : val);
		CHECK_EQ_STR(a->key, key);
	}
	CHECK_EQ_STR(span_get_attr(s, "a")->v.s, "back");
	CHECK_EQ_INT(s->attrs.dropped, 0);
	span_unref(s);
}

/* A freed span comes back from the pool empty: no attribute, status, name or resource of the
 * one before; its kept array and chunk take new attributes (many, big) as a new one does. */
TEST(span_pool_reuse_starts_empty)
{
	struct otlp_resource *r = otlp_resource_new();
	char key[32], big[SPAN_MAX_VALUE_LEN + 1];
	struct span *s, *t;

	REQUIRE(r);
	memset(big, 'b', SPAN_MAX_VALUE_LEN);
	big[SPAN_MAX_VALUE_LEN] = '\0';
	for (int round = 0; round < 3; round++) {
		s = span_new(r, "first", SPAN_KIND_SERVER);
		REQUIRE(s);
		for (int i = 0; i < SPAN_MAX_ATTRS; i++) {
			snprintf(key, sizeof(key), "k%d.%d", round, i);
			CHECK(span_set_str(s, key, i % 7 == 3 ? big : key) == 0);
		}
		span_set_status(s, SPAN_STATUS_ERROR, "boom");
		span_unref(s);
		t = span_alloc();	/* the one just freed, from the pool */
		REQUIRE(t);
		CHECK(t->attrs.n == 0 && t->attrs.hashes == 0 && t->attrs.dropped == 0);
		CHECK(t->status == SPAN_STATUS_UNSET && !t->status_msg && !t->resource && !t->sink);
		CHECK(t->name[0] == '\0' && t->refs == 0 && !t->recording && !t->end_ns);
		t->refs = 1;
		t->recording = true;
		CHECK(span_get_attr(t, "k0.0") == NULL);
		for (int i = 0; i < SPAN_MAX_ATTRS; i++) {
			snprintf(key, sizeof(key), "n%d", i);
			CHECK(span_set_str(t, key, i % 5 == 1 ? big : key) == 0);
		}
		CHECK_EQ_INT(t->attrs.n, SPAN_MAX_ATTRS);
		CHECK_EQ_STR(span_get_attr(t, "n1")->v.s, big);
		CHECK_EQ_STR(span_get_attr(t, "n2")->v.s, "n2");
		span_unref(t);
	}
	otlp_resource_unref(r);
}

/* A long-open span sized down to what it holds: its attributes read the same, more can be
 * set after, and it goes back to the pool (or not) without harm. */
TEST(span_compact_keeps_attributes)
{
	struct span *s = span_new(NULL, "conn", SPAN_KIND_CLIENT);
	char key[32];

	REQUIRE(s);
	CHECK(span_set_str(s, "cluster_name", "east") == 0);
	CHECK(span_set_int(s, "port", 8080) == 0);
	CHECK(span_set_str(s, "environment", "prod") == 0);
	CHECK(span_set_str(s, "environment", "staging") == 0);	/* replaced: old bytes stay */
	REQUIRE(s->attrs.cap >= 32 && otlp_attrs_bytes(&s->attrs) > 1024);
	span_compact(s);
	CHECK_EQ_INT(s->attrs.cap, 3);
	/* three slots and the strings' bytes (with the replaced value's): well under 200 */
	CHECK(otlp_attrs_bytes(&s->attrs) < 3 * sizeof(struct otlp_attr) + 100);
	CHECK_EQ_STR(span_get_attr(s, "cluster_name")->v.s, "east");
	CHECK_EQ_STR(span_get_attr(s, "environment")->v.s, "staging");
	CHECK(span_get_attr(s, "port")->v.i == 8080);
	for (int i = 0; i < 40; i++) {	/* the close's attributes: the array and strings grow */
		snprintf(key, sizeof(key), "late.%d", i);
		CHECK(span_set_str(s, key, key) == 0);
	}
	CHECK_EQ_INT(s->attrs.n, 43);
	CHECK_EQ_STR(span_get_attr(s, "late.39")->v.s, "late.39");
	CHECK_EQ_STR(span_get_attr(s, "cluster_name")->v.s, "east");
	span_unref(s);
	/* empty: nothing kept */
	s = span_new(NULL, "empty", SPAN_KIND_SERVER);
	REQUIRE(s);
	span_compact(s);
	CHECK(s->attrs.cap == 0 && !s->attrs.v && otlp_attrs_bytes(&s->attrs) == 0);
	CHECK(span_set_str(s, "a", "b") == 0);
	CHECK_EQ_STR(span_get_attr(s, "a")->v.s, "b");
	span_compact(s);
	span_unref(s);	/* a sized-down span is pooled without its small array and chunk */
	s = span_alloc();
	REQUIRE(s);
	/* none of the sized-down memory came back with it */
	CHECK(!s->attrs.v || s->attrs.cap >= 32);
	CHECK(otlp_attrs_bytes(&s->attrs) == 0 || otlp_attrs_bytes(&s->attrs) >= 1024);
	s->refs = 1;
	span_unref(s);
}

TEST(span_status_rules)
{
	struct span *s = span_new(NULL, "x", SPAN_KIND_CLIENT);
	REQUIRE(s);
	span_set_status(s, SPAN_STATUS_ERROR, "connection refused");
	CHECK(s->status == SPAN_STATUS_ERROR);
	CHECK_EQ_STR(s->status_msg, "connection refused");
	span_set_status(s, SPAN_STATUS_UNSET, NULL);	/* ignored */
	CHECK(s->status == SPAN_STATUS_ERROR);
	span_set_status(s, SPAN_STATUS_OK, "ignored text");
	CHECK(s->status == SPAN_STATUS_OK && s->status_msg == NULL);
	span_set_status(s, SPAN_STATUS_ERROR, "late");	/* OK is final */
	CHECK(s->status == SPAN_STATUS_OK);
	span_unref(s);
}

TEST(random_ids)
{
	uint8_t a[16], b[16];
	for (int i = 0; i < 1000; i++) {
		REQUIRE(span_random_id(a, 16) == 0 && span_random_id(b, 16) == 0);
		CHECK(memcmp(a, b, 16) != 0);
	}
	uint8_t one[1];
	for (int i = 0; i < 2000; i++) {	/* a 1-byte ID hits 0 often without the retry */
		REQUIRE(span_random_id(one, 1) == 0);
		CHECK(one[0] != 0);
	}
	/* IDs are read ahead per thread: past the read-ahead (2 KiB) they keep coming, all
	 * different, and a second thread draws its own */
	static uint8_t many[600][16];
	for (int i = 0; i < 600; i++)
		REQUIRE(span_random_id(many[i], 16) == 0);
	for (int i = 0; i < 600; i++)
		for (int j = i + 1; j < 600; j++)
			CHECK(memcmp(many[i], many[j], 16) != 0);
}

static void *draw_id(void *arg)
{
	span_random_id(arg, 16);
	return NULL;
}

/* A forked child must not hand out the IDs its parent read ahead (nor two threads the same). */
TEST(random_ids_differ_across_fork_and_threads)
{
	uint8_t mine[16], theirs[16] = { 0 }, other[16] = { 0 };
	int fd[2];
	pthread_t th;

	REQUIRE(span_random_id(mine, 16) == 0);	/* the read-ahead holds more now */
	REQUIRE(pipe(fd) == 0);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		uint8_t id[16];
		_exit(span_random_id(id, 16) == 0 && write(fd[1], id, 16) == 16 ? 0 : 1);
	}
	close(fd[1]);
	CHECK(read(fd[0], theirs, 16) == 16);
	close(fd[0]);
	waitpid(pid, NULL, 0);
	REQUIRE(span_random_id(mine, 16) == 0);	/* what the child would have had */
	CHECK(memcmp(mine, theirs, 16) != 0);
	REQUIRE(pthread_create(&th, NULL, draw_id, other) == 0);
	pthread_join(th, NULL);
	REQUIRE(span_random_id(mine, 16) == 0);
	CHECK(memcmp(mine, other, 16) != 0);
}

static void clear_env(void);

/* A given span ID (span_opts.span_id) is the span's; all zero or none: random. A child keeps
 * its parent's trace ID. */
TEST(span_opts_span_id)
{
	struct otlp_config c;
	char err[256];
	uint8_t want[SPAN_ID_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8 }, zero[SPAN_ID_LEN] = { 0 };
	struct span_context parent = { .flags = SPAN_FLAG_SAMPLED };

	clear_env();
	otlp_config_init(&c);
	c.export = false;
	REQUIRE(otlp_config_add_tag(&c, "from_config", "yes", err, sizeof(err)) == 0);
	struct otlp_tracer *t = otlp_tracer_new(&c, err, sizeof(err));
	otlp_config_fini(&c);
	REQUIRE(t);
	memset(parent.trace_id, 7, SPAN_TRACE_ID_LEN);
	memset(parent.span_id, 9, SPAN_ID_LEN);
	struct span_opts o = { .span_id = want };
	struct span *s = span_start_opts(t, NULL, "x", SPAN_KIND_CLIENT, &parent, &o);
	REQUIRE(s);
	CHECK(memcmp(s->ctx.span_id, want, SPAN_ID_LEN) == 0);
	CHECK(memcmp(s->ctx.trace_id, parent.trace_id, SPAN_TRACE_ID_LEN) == 0);
	CHECK(memcmp(s->parent_span_id, parent.span_id, SPAN_ID_LEN) == 0);
	span_end(s);
	o.span_id = zero;
	s = span_start_opts(t, NULL, "x", SPAN_KIND_CLIENT, NULL, &o);
	REQUIRE(s);
	CHECK(span_context_valid(&s->ctx) && memcmp(s->ctx.span_id, want, SPAN_ID_LEN) != 0);
	span_end(s);
	otlp_tracer_free(t);
}

/* ---- configuration ---- */

static void clear_env(void)
{
	static const char *const vars[] = {
		"OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER",
		"OTEL_TRACES_SAMPLER_ARG", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_ENDPOINT",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS",
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_TIMEOUT",
		"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT",
		"OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_EXPORTER_OTLP_INSECURE",
		"OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_CERTIFICATE",
		"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
		"OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_KEY",
		"OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
	};
	for (size_t i = 0; i < ARRAY_SIZE(vars); i++)
		unsetenv(vars[i]);
}

TEST(config_defaults_and_urls)
{
	struct otlp_config c;
	char url[256], err[256];
	clear_env();
	otlp_config_init(&c);
	CHECK(c.enabled && c.export && c.protocol == OTLP_PROTO_GRPC && c.sampling == 100.0);
	CHECK_EQ_INT(c.batch.max_queue, 2048);
	CHECK_EQ_INT(c.batch.max_batch, 512);
	CHECK_EQ_INT(c.batch.schedule_delay_ms, 5000);
	CHECK_EQ_INT(c.batch.export_timeout_ms, 30000);
	REQUIRE(otlp_config_traces_url(&c, url, sizeof(url)) == 0);
	CHECK_EQ_STR(url, "http://localhost:4317");
	REQUIRE(otlp_config_set_protocol(&c, "http/protobuf", err, sizeof(err)) == 0);
	REQUIRE(otlp_config_traces_url(&c, url, sizeof(url)) == 0);
	CHECK_EQ_STR(url, "http://localhost:4318/v1/traces");
	REQUIRE(otlp_config_set_endpoint(&c, "http://collector:4318/", err, sizeof(err)) == 0);
	REQUIRE(otlp_config_traces_url(&c, url, sizeof(url)) == 0);
	CHECK_EQ_STR(url, "http://collector:4318/v1/traces");
	CHECK(otlp_config_set_protocol(&c, "http/json", err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "http/json") != NULL);
	CHECK(otlp_config_set_sampling(&c, 100.5, err, sizeof(err)) == -EINVAL);
	CHECK(otlp_config_set_sampling(&c, NAN, err, sizeof(err)) == -EINVAL);
	CHECK(otlp_config_set_sampling(&c, 25, err, sizeof(err)) == 0);
	struct sampler s;
	REQUIRE(otlp_config_sampler(&c, &s) == 0);
	CHECK(s.kind == SAMPLER_PARENT_TRACEIDRATIO && fabs(s.ratio - 0.25) < 1e-9);
	otlp_config_fini(&c);

	static const char *const bad[] = {
		"", "collector:4317", "ftp://x", "http://", "http://:80", "http://h:0", "http://h:65536",
		"http://h:12x", "http://h h", "http://[::1", "http://h\n", "http://ho$t/",
	};
	struct otlp_url u;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		err[0] = '\0';
		CHECK(otlp_url_parse(bad[i], &u, err, sizeof(err)) == -EINVAL);
		CHECK(err[0] != '\0');
	}
	REQUIRE(otlp_url_parse("https://[::1]:4317/x", &u, err, sizeof(err)) == 0);
	CHECK(u.https && u.port == 4317);
	CHECK_EQ_STR(u.host, "::1");
	CHECK_EQ_STR(u.path, "/x");
	REQUIRE(otlp_url_parse("http://otel.example", &u, err, sizeof(err)) == 0);
	CHECK_EQ_INT(u.port, 80);
	/* OTLP/gRPC over TLS: the CA file and client certificate are loaded at once (a bad one
	 * is refused by name) */
	struct otlp_exporter_tls tls = { .ca_file = "/nonexistent/ca.pem" };
	struct otlp_exporter *ex = export_grpc_new("https://collector:4317", NULL, 0, &tls, err, sizeof(err));
	CHECK(ex == NULL && strstr(err, "/nonexistent/ca.pem") != NULL);
	ex = export_http_new("https://collector:4318/v1/traces", NULL, 0, &tls, err, sizeof(err));
	CHECK(ex == NULL && errno == ENOENT && strstr(err, "/nonexistent/ca.pem") != NULL);
	ex = export_grpc_new("https://collector:4317", NULL, 0, NULL, err, sizeof(err));
	CHECK(ex != NULL);	/* the system store; connects lazily */
	otlp_exporter_free(ex);
	tls = (struct otlp_exporter_tls){ .client_cert = "/c.pem", .client_key = "/k.pem" };
	ex = export_grpc_new("https://collector:4317", NULL, 0, &tls, err, sizeof(err));
	CHECK(ex == NULL && errno == EINVAL && strstr(err, "/c.pem") != NULL);
	ex = export_http_new("https://collector:4318/v1/traces", NULL, 0, &tls, err, sizeof(err));
	CHECK(ex == NULL && errno == ENOENT && strstr(err, "/c.pem") != NULL);	/* curl takes them */
	ex = export_grpc_new("nonsense", NULL, 0, NULL, err, sizeof(err));
	CHECK(ex == NULL && errno == EINVAL);
	ex = export_http_new("http://x y", NULL, 0, NULL, err, sizeof(err));
	CHECK(ex == NULL && errno == EINVAL);
}

TEST(config_env)
{
	struct otlp_config c;
	char url[256], err[256];
	clear_env();
	otlp_config_init(&c);
	REQUIRE(otlp_config_add_tag(&c, "cluster_name", "homelab", err, sizeof(err)) == 0);
	setenv("OTEL_SERVICE_NAME", "ambit-node", 1);
	setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=dev,team=mesh%20ops", 1);
	setenv("OTEL_TRACES_SAMPLER", "traceidratio", 1);
	setenv("OTEL_TRACES_SAMPLER_ARG", "0.5", 1);
	setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", 1);
	setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf", 1);
	setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318", 1);
	setenv("OTEL_EXPORTER_OTLP_HEADERS", "Api-Key=secret,x-tenant=a%2Cb", 1);
	setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=traces-secret", 1);
	setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "7000", 1);
	setenv("OTEL_BSP_SCHEDULE_DELAY", "250", 1);
	setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100", 1);
	setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10", 1);
	setenv("OTEL_SDK_DISABLED", "", 1);	/* empty is unset */
	err[0] = '\0';
	int rc = otlp_config_apply_env(&c, err, sizeof(err));
	if (rc)
		fprintf(stderr, "  %s\n", err);
	REQUIRE(rc == 0);
	CHECK(c.enabled);
	CHECK_EQ_STR(c.service_name, "ambit-node");
	CHECK(c.sampler == SAMPLER_TRACEIDRATIO && c.sampling == 50.0);
	CHECK(c.protocol == OTLP_PROTO_HTTP_PROTOBUF);
	REQUIRE(otlp_config_traces_url(&c, url, sizeof(url)) == 0);
	CHECK_EQ_STR(url, "http://generic:4318/v1/traces");
	CHECK_EQ_INT(c.nheaders, 2);
	CHECK_EQ_STR(c.headers[0].name, "api-key");
	CHECK_EQ_STR(c.headers[0].value, "traces-secret");
	CHECK_EQ_STR(c.headers[1].value, "a,b");
	CHECK_EQ_INT(c.batch.export_timeout_ms, 7000);
	CHECK_EQ_INT(c.batch.schedule_delay_ms, 250);
	CHECK_EQ_INT(c.batch.max_queue, 100);
	CHECK_EQ_INT(c.batch.max_batch, 10);
	CHECK(otlp_config_validate(&c, err, sizeof(err)) == 0);
	/* the signal-specific endpoint is used as is */
	setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/custom/path", 1);
	REQUIRE(otlp_config_apply_env(&c, err, sizeof(err)) == 0);
	REQUIRE(otlp_config_traces_url(&c, url, sizeof(url)) == 0);
	CHECK_EQ_STR(url, "http://traces:9999/custom/path");

	/* resource: env attributes, then OTEL_SERVICE_NAME, then the workload's facts */
	struct otlp_resource *r = otlp_resource_for_workload(&c, "reviews", "default", "reviews-1", "node-1");
	REQUIRE(r);
	CHECK_EQ_STR(otlp_resource_get(r, "service.name"), "reviews");
	CHECK_EQ_STR(otlp_resource_get(r, "team"), "mesh ops");
	CHECK_EQ_STR(otlp_resource_get(r, "k8s.namespace.name"), "default");
	CHECK_EQ_STR(otlp_resource_get(r, "k8s.pod.name"), "reviews-1");
	CHECK_EQ_STR(otlp_resource_get(r, "k8s.node.name"), "node-1");
	otlp_resource_unref(r);
	r = otlp_resource_for_workload(&c, NULL, NULL, NULL, NULL);
	REQUIRE(r);
	CHECK_EQ_STR(otlp_resource_get(r, "service.name"), "ambit-node");
	otlp_resource_unref(r);

	/* copies are deep */
	struct otlp_config d;
	REQUIRE(otlp_config_copy(&d, &c) == 0);
	otlp_config_fini(&c);
	CHECK_EQ_STR(d.tags[0].value, "homelab");
	CHECK_EQ_STR(d.headers[0].value, "traces-secret");
	otlp_config_fini(&d);
	clear_env();
}

TEST(config_env_refusals)
{
	static const char *const cases[][2] = {
		{ "OTEL_TRACES_SAMPLER", "sometimes" },
		{ "OTEL_TRACES_SAMPLER_ARG", "1.5" },
		{ "OTEL_TRACES_SAMPLER_ARG", "half" },
		{ "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json" },
		{ "OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318" },	/* http/protobuf: needs a scheme */
		{ "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:99999" },
		{ "OTEL_EXPORTER_OTLP_TRACES_INSECURE", "1" },
		{ "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://bad host" },
		{ "OTEL_EXPORTER_OTLP_HEADERS", "novalue" },
		{ "OTEL_EXPORTER_OTLP_HEADERS", "k=%zz" },
		{ "OTEL_EXPORTER_OTLP_TIMEOUT", "-5" },
		{ "OTEL_BSP_MAX_QUEUE_SIZE", "0" },
		{ "OTEL_BSP_SCHEDULE_DELAY", "5s" },
		{ "OTEL_BSP_EXPORT_TIMEOUT", "99999999999999999999" },
		{ "OTEL_SDK_DISABLED", "yes" },
		{ "OTEL_TRACES_EXPORTER", "zipkin" },
		{ "OTEL_RESOURCE_ATTRIBUTES", "a=b,=c" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct otlp_config c;
		char err[256] = "";
		clear_env();
		otlp_config_init(&c);
		setenv(cases[i][0], cases[i][1], 1);
		if (strcmp(cases[i][0], "OTEL_TRACES_SAMPLER_ARG") == 0)
			setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio", 1);
		if (strcmp(cases[i][1], "collector:4318") == 0)
			setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", 1);
		int rc = otlp_config_apply_env(&c, err, sizeof(err));
		if (rc != -EINVAL)
			fprintf(stderr, "  %s=%s -> %d\n", cases[i][0], cases[i][1], rc);
		CHECK(rc == -EINVAL);
		CHECK(strstr(err, cases[i][0]) != NULL);	/* the message names the variable */
		otlp_config_fini(&c);
	}
	clear_env();
	struct otlp_config c;
	char err[256];
	otlp_config_init(&c);
	setenv("OTEL_SDK_DISABLED", "TRUE", 1);
	setenv("OTEL_TRACES_EXPORTER", "none", 1);
	CHECK(otlp_config_apply_env(&c, err, sizeof(err)) == 0);
	CHECK(!c.enabled && !c.export);
	c.batch.max_batch = c.batch.max_queue + 1;
	CHECK(otlp_config_validate(&c, err, sizeof(err)) == -EINVAL);
	otlp_config_fini(&c);
	clear_env();
}

/* OTEL_TRACES_SAMPLER_ARG counts only when OTEL_TRACES_SAMPLER names a ratio sampler. */
TEST(config_sampler_arg)
{
	struct otlp_config c;
	char err[256];
	static const struct { const char *sampler, *arg; enum sampler_kind kind; double sampling; } cases[] = {
		{ NULL, "0.25", SAMPLER_PARENT_TRACEIDRATIO, 40.0 },	/* no sampler named: ignored */
		{ "always_on", "0.25", SAMPLER_ALWAYS_ON, 40.0 },
		{ "parentbased_always_off", "not-a-number", SAMPLER_PARENT_ALWAYS_OFF, 40.0 },
		{ "traceidratio", "0.25", SAMPLER_TRACEIDRATIO, 25.0 },
		{ "parentbased_traceidratio", "0.1", SAMPLER_PARENT_TRACEIDRATIO, 10.0 },
		{ "parentbased_traceidratio", NULL, SAMPLER_PARENT_TRACEIDRATIO, 40.0 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		clear_env();
		otlp_config_init(&c);
		REQUIRE(otlp_config_set_sampling(&c, 40.0, err, sizeof(err)) == 0);	/* tracing.sampling */
		if (cases[i].sampler)
			setenv("OTEL_TRACES_SAMPLER", cases[i].sampler, 1);
		if (cases[i].arg)
			setenv("OTEL_TRACES_SAMPLER_ARG", cases[i].arg, 1);
		int rc = otlp_config_apply_env(&c, err, sizeof(err));
		if (rc)
			fprintf(stderr, "  case %zu: %s\n", i, err);
		CHECK_EQ_INT(rc, 0);
		CHECK_EQ_INT(c.sampler, cases[i].kind);
		CHECK(fabs(c.sampling - cases[i].sampling) < 1e-9);
		otlp_config_fini(&c);
	}
	clear_env();
}

/* The _TRACES_ header list wins name by name over the generic one, which wins over the
 * file's; each name is sent once. */
TEST(config_header_precedence)
{
	struct otlp_config c;
	char err[256];
	clear_env();
	otlp_config_init(&c);
	REQUIRE(otlp_config_add_header(&c, "Authorization", "Bearer file", err, sizeof(err)) == 0);
	REQUIRE(otlp_config_add_header(&c, "x-file-only", "1", err, sizeof(err)) == 0);
	setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20generic,x-generic-only=2,x-both=generic", 1);
	setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-Both=traces,x-traces-only=3", 1);
	REQUIRE(otlp_config_apply_env(&c, err, sizeof(err)) == 0);
	static const char *const want[][2] = {
		{ "authorization", "Bearer generic" }, { "x-file-only", "1" }, { "x-generic-only", "2" },
		{ "x-both", "traces" }, { "x-traces-only", "3" },
	};
	CHECK_EQ_INT(c.nheaders, ARRAY_SIZE(want));
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		size_t seen = 0;
		for (size_t k = 0; k < c.nheaders; k++) {
			if (strcmp(c.headers[k].name, want[i][0]) == 0) {
				seen++;
				CHECK_EQ_STR(c.headers[k].value, want[i][1]);
			}
		}
		CHECK_EQ_INT(seen, 1);
	}
	otlp_config_fini(&c);
	clear_env();
}

/* OTEL_EXPORTER_OTLP_[TRACES_]INSECURE picks the scheme of a grpc endpoint given without
 * one; the certificate variables, the _TRACES_ one first, reach the config. */
TEST(config_tls_env)
{
	struct otlp_config c;
	char err[256], url[256];
	static const struct { const char *endpoint, *insecure, *traces_insecure, *url; } cases[] = {
		{ "collector:4317", NULL, NULL, "https://collector:4317" },
		{ "collector:4317", "true", NULL, "http://collector:4317" },
		{ "collector:4317", "true", "false", "https://collector:4317" },
		{ "collector:4317", "false", "TRUE", "http://collector:4317" },
		{ "https://collector:4317", "true", NULL, "https://collector:4317" },	/* scheme wins */
		{ "http://collector:4317", "false", NULL, "http://collector:4317" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		clear_env();
		otlp_config_init(&c);
		setenv("OTEL_EXPORTER_OTLP_ENDPOINT", cases[i].endpoint, 1);
		if (cases[i].insecure)
			setenv("OTEL_EXPORTER_OTLP_INSECURE", cases[i].insecure, 1);
		if (cases[i].traces_insecure)
			setenv("OTEL_EXPORTER_OTLP_TRACES_INSECURE", cases[i].traces_insecure, 1);
		REQUIRE(otlp_config_apply_env(&c, err, sizeof(err)) == 0);
		CHECK(otlp_config_validate(&c, err, sizeof(err)) == 0);
		REQUIRE(otlp_config_traces_url(&c, url, sizeof(url)) == 0);
		CHECK_EQ_STR(url, cases[i].url);
		otlp_config_fini(&c);
	}
	/* http/protobuf needs the scheme, from the file too */
	clear_env();
	otlp_config_init(&c);
	REQUIRE(otlp_config_set_endpoint(&c, "collector:4318", err, sizeof(err)) == 0);
	CHECK(otlp_config_validate(&c, err, sizeof(err)) == 0);
	REQUIRE(otlp_config_set_protocol(&c, "http/protobuf", err, sizeof(err)) == 0);
	CHECK(otlp_config_validate(&c, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "http://") != NULL);
	otlp_config_fini(&c);

	otlp_config_init(&c);
	setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/generic-ca.pem", 1);
	setenv("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/etc/traces-ca.pem", 1);
	setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/client.pem", 1);
	REQUIRE(otlp_config_apply_env(&c, err, sizeof(err)) == 0);
	CHECK_EQ_STR(c.ca_file, "/etc/traces-ca.pem");
	CHECK_EQ_STR(c.client_cert, "/etc/client.pem");
	CHECK(c.client_key == NULL);
	CHECK(otlp_config_validate(&c, err, sizeof(err)) == -EINVAL);	/* a cert needs its key */
	setenv("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/etc/client.key", 1);
	REQUIRE(otlp_config_apply_env(&c, err, sizeof(err)) == 0);
	CHECK_EQ_STR(c.client_key, "/etc/client.key");
	CHECK(otlp_config_validate(&c, err, sizeof(err)) == 0);
	struct otlp_config d;
	REQUIRE(otlp_config_copy(&d, &c) == 0);
	otlp_config_fini(&c);
	CHECK_EQ_STR(d.ca_file, "/etc/traces-ca.pem");
	CHECK_EQ_STR(d.client_key, "/etc/client.key");
	/* both set: plaintext has no use for them; for https they are loaded at once, so
	 * files that do not exist are refused by name rather than connected without */
	struct otlp_exporter *ex = otlp_exporter_new(&d, err, sizeof(err));
	CHECK(ex != NULL);
	otlp_exporter_free(ex);
	REQUIRE(otlp_config_set_endpoint(&d, "https://collector:4317", err, sizeof(err)) == 0);
	ex = otlp_exporter_new(&d, err, sizeof(err));
	CHECK(ex == NULL && strstr(err, "/etc/traces-ca.pem") != NULL);
	otlp_exporter_free(ex);
	otlp_config_fini(&d);
	clear_env();
}

/* telemetry.sdk.* describe ambit as the SDK unless OTEL_RESOURCE_ATTRIBUTES says otherwise. */
TEST(resource_sdk_attributes)
{
	struct otlp_config c;
	char err[256];
	clear_env();
	otlp_config_init(&c);
	struct otlp_resource *r = otlp_resource_for_workload(&c, "svc", "ns", "pod", "node");
	REQUIRE(r);
	CHECK_EQ_STR(otlp_resource_get(r, "telemetry.sdk.language"), "cpp");
	CHECK_EQ_STR(otlp_resource_get(r, "telemetry.sdk.name"), "ambit");
	CHECK_EQ_STR(otlp_resource_get(r, "telemetry.sdk.version"), AMBIT_VERSION);
	otlp_resource_unref(r);
	setenv("OTEL_RESOURCE_ATTRIBUTES", "telemetry.sdk.name=vendor-build,team=mesh", 1);
	REQUIRE(otlp_config_apply_env(&c, err, sizeof(err)) == 0);
	r = otlp_resource_for_workload(&c, NULL, NULL, NULL, NULL);
	REQUIRE(r);
	CHECK_EQ_STR(otlp_resource_get(r, "telemetry.sdk.name"), "vendor-build");
	CHECK_EQ_STR(otlp_resource_get(r, "telemetry.sdk.language"), "cpp");
	CHECK_EQ_STR(otlp_resource_get(r, "team"), "mesh");
	otlp_resource_unref(r);
	otlp_config_fini(&c);
	clear_env();
}

/* A google.rpc.Status packed with protobuf-c, as grpc-status-details-bin carries it. */
static size_t pack_status(uint8_t *buf, const char *type_url, const uint8_t *detail, size_t detail_len)
{
	Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT, *anys[] = { &any };
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	st.code = 8;
	st.message = (char *)"slow down";
	if (type_url) {
		any.type_url = (char *)type_url;
		any.value.data = (uint8_t *)detail;
		any.value.len = detail_len;
		st.details = anys;
		st.n_details = 1;
	}
	return google__rpc__status__pack(&st, buf);
}

TEST(decode_retry_info)
{
	static const char ri_type[] = "type.googleapis.com/google.rpc.RetryInfo";
	uint8_t ri_buf[64], buf[256];
	Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
	Google__Rpc__RetryInfo ri = GOOGLE__RPC__RETRY_INFO__INIT;
	uint32_t ms = 12345;

	ri.retry_delay = &d;
	d.seconds = 2;
	d.nanos = 500 * 1000 * 1000;
	size_t rlen = google__rpc__retry_info__pack(&ri, ri_buf);
	size_t len = pack_status(buf, ri_type, ri_buf, rlen);
	CHECK_EQ_INT(otlp_decode_retry_info(buf, len, 60000, &ms), 0);
	CHECK_EQ_INT(ms, 2500);
	CHECK_EQ_INT(otlp_decode_retry_info(buf, len, 1000, &ms), 0);
	CHECK_EQ_INT(ms, 1000);	/* capped */
	d.seconds = 1LL << 40;	/* no overflow on absurd delays */
	rlen = google__rpc__retry_info__pack(&ri, ri_buf);
	len = pack_status(buf, ri_type, ri_buf, rlen);
	CHECK_EQ_INT(otlp_decode_retry_info(buf, len, 60000, &ms), 0);
	CHECK_EQ_INT(ms, 60000);
	ri.retry_delay = NULL;	/* RetryInfo without a delay: retry, no wait asked */
	rlen = google__rpc__retry_info__pack(&ri, ri_buf);
	len = pack_status(buf, ri_type, ri_buf, rlen);
	CHECK_EQ_INT(otlp_decode_retry_info(buf, len, 60000, &ms), 0);
	CHECK_EQ_INT(ms, 0);
	/* another detail type, or none: no RetryInfo */
	len = pack_status(buf, "type.googleapis.com/google.rpc.DebugInfo", ri_buf, rlen);
	CHECK_EQ_INT(otlp_decode_retry_info(buf, len, 60000, &ms), -ENOENT);
	len = pack_status(buf, NULL, NULL, 0);
	CHECK_EQ_INT(otlp_decode_retry_info(buf, len, 60000, &ms), -ENOENT);
	static const uint8_t junk[] = { 0x1a, 0x05, 0x0a, 0xff };	/* details, truncated */
	CHECK_EQ_INT(otlp_decode_retry_info(junk, sizeof(junk), 60000, &ms), -EBADMSG);
}

/* ---- batcher with a fake exporter ---- */

struct fake_exporter {
	struct otlp_exporter ex;
	pthread_mutex_t lock;
	int fail_next;		/* fail this many calls */
	bool retryable;
	uint32_t retry_after_ms;
	int calls;
	size_t spans;		/* accepted */
	uint64_t call_ms[64];
	uint32_t block_ms;	/* each call takes this long */
};

static int fake_export(struct otlp_exporter *ex, struct span *const *spans, size_t n, uint32_t timeout_ms,
		       struct otlp_export_status *st)
{
	struct fake_exporter *f = container_of(ex, struct fake_exporter, ex);
	if (f->block_ms)
		usleep(f->block_ms * 1000);
	pthread_mutex_lock(&f->lock);
	if (f->calls < 64)
		f->call_ms[f->calls] = now_mono_ms();
	f->calls++;
	int rc = 0;
	if (f->fail_next > 0) {
		f->fail_next--;
		st->retryable = f->retryable;
		st->retry_after_ms = f->retry_after_ms;
		snprintf(st->msg, sizeof(st->msg), "fake failure");
		rc = -EAGAIN;
	} else {
		for (size_t i = 0; i < n; i++)
			CHECK(span_export_state(spans[i]) == SPAN_EXPORT_QUEUED);
		f->spans += n;
	}
	pthread_mutex_unlock(&f->lock);
	return rc;
}

static void fake_free(struct otlp_exporter *ex)
{
	(void)ex;	/* the test owns it */
}

static const struct otlp_exporter_ops fake_ops = { "fake", fake_export, fake_free };

static void fake_init(struct fake_exporter *f)
{
	memset(f, 0, sizeof(*f));
	f->ex.ops = &fake_ops;
	pthread_mutex_init(&f->lock, NULL);
}

static void submit_n(struct batcher *b, int n, int *refused)
{
	for (int i = 0; i < n; i++) {
		struct span *s = span_new(NULL, "s", SPAN_KIND_INTERNAL);
		if (batcher_submit(b, s) == -ENOSPC) {
			(*refused)++;
			CHECK(span_export_state(s) == SPAN_EXPORT_DROPPED);
		}
		span_unref(s);
	}
}

TEST(batcher_drops_over_bound)
{
	struct fake_exporter f;
	struct batcher_stats st;
	int refused = 0;
	fake_init(&f);
	f.fail_next = 1000000;	/* collector down */
	f.retryable = true;
	struct batcher_opts o = { .max_queue = 100, .max_batch = 10, .schedule_delay_ms = 20,
				  .backoff_initial_ms = 20, .backoff_max_ms = 50 };
	struct batcher *b = batcher_new(&o, &f.ex);
	REQUIRE(b);
	submit_n(b, 150, &refused);
	batcher_stats(b, &st);
	CHECK_EQ_INT(refused, 50);
	CHECK_EQ_INT(st.dropped, 50);
	CHECK_EQ_INT(st.queue_len, 100);
	/* retrying keeps them queued: none lost under the bound */
	usleep(300 * 1000);
	batcher_stats(b, &st);
	CHECK_EQ_INT(st.queue_len, 100);
	CHECK_EQ_INT(st.failed, 0);
	CHECK(st.export_errors >= 3);
	/* the collector comes back */
	pthread_mutex_lock(&f.lock);
	f.fail_next = 0;
	pthread_mutex_unlock(&f.lock);
	CHECK(batcher_flush(b, 5000) == 0);
	batcher_stats(b, &st);
	CHECK_EQ_INT(st.exported, 100);
	CHECK_EQ_INT(f.spans, 100);
	CHECK_EQ_INT(st.queue_len, 0);
	batcher_free(b, 1000);
}

TEST(batcher_backoff)
{
	struct fake_exporter f;
	struct batcher_stats st;
	int refused = 0;
	fake_init(&f);
	f.fail_next = 4;
	f.retryable = true;
	struct batcher_opts o = { .max_queue = 64, .max_batch = 64, .schedule_delay_ms = 10,
				  .backoff_initial_ms = 40, .backoff_max_ms = 100 };
	struct batcher *b = batcher_new(&o, &f.ex);
	REQUIRE(b);
	submit_n(b, 5, &refused);
	CHECK(batcher_flush(b, 5000) == 0);
	batcher_stats(b, &st);
	CHECK_EQ_INT(st.exported, 5);
	CHECK_EQ_INT(st.export_requests, 5);
	CHECK_EQ_INT(st.export_errors, 4);
	REQUIRE(f.calls == 5);
	/* delays: jittered into [d/2, d] of 40, 80, 100 (capped), 100 */
	static const uint32_t nominal[] = { 40, 80, 100, 100 };
	for (int i = 0; i < 4; i++) {
		uint64_t gap = f.call_ms[i + 1] - f.call_ms[i];
		if (gap + 2 < nominal[i] / 2 || gap > nominal[i] + 40)
			fprintf(stderr, "  gap %d: %llu ms for %u\n", i, (unsigned long long)gap, nominal[i]);
		CHECK(gap + 2 >= nominal[i] / 2);
		CHECK(gap <= nominal[i] + 40);
	}
	/* a server-asked delay (Retry-After / pushback) stretches the wait */
	pthread_mutex_lock(&f.lock);
	f.fail_next = 1;
	f.retry_after_ms = 300;
	f.calls = 0;
	pthread_mutex_unlock(&f.lock);
	submit_n(b, 1, &refused);
	CHECK(batcher_flush(b, 5000) == 0);
	REQUIRE(f.calls == 2);
	CHECK(f.call_ms[1] - f.call_ms[0] >= 298);
	batcher_free(b, 1000);
}

TEST(batcher_gives_up)
{
	struct fake_exporter f;
	struct batcher_stats st;
	int refused = 0;
	fake_init(&f);
	/* not retryable: failed at once */
	f.fail_next = 1;
	f.retryable = false;
	struct batcher_opts o = { .max_queue = 64, .max_batch = 64, .schedule_delay_ms = 10,
				  .backoff_initial_ms = 10, .backoff_max_ms = 20, .retry_max_elapsed_ms = 200 };
	struct batcher *b = batcher_new(&o, &f.ex);
	REQUIRE(b);
	submit_n(b, 3, &refused);
	CHECK(batcher_flush(b, 5000) == 0);
	batcher_stats(b, &st);
	CHECK_EQ_INT(st.failed, 3);
	CHECK_EQ_INT(st.exported, 0);
	CHECK_EQ_INT(f.calls, 1);
	/* retryable but past retry_max_elapsed: given up */
	pthread_mutex_lock(&f.lock);
	f.fail_next = 1000000;
	f.retryable = true;
	pthread_mutex_unlock(&f.lock);
	submit_n(b, 2, &refused);
	uint64_t t0 = now_mono_ms();
	CHECK(batcher_flush(b, 5000) == 0);
	CHECK(now_mono_ms() - t0 >= 190);
	batcher_stats(b, &st);
	CHECK_EQ_INT(st.failed, 5);
	batcher_free(b, 1000);
}

TEST(batcher_shutdown)
{
	struct fake_exporter f;
	struct batcher_stats st;
	int refused = 0;
	fake_init(&f);
	struct batcher_opts o = { .max_queue = 1000, .max_batch = 100, .schedule_delay_ms = 60000 };
	struct batcher *b = batcher_new(&o, &f.ex);
	REQUIRE(b);
	submit_n(b, 250, &refused);	/* two full batches go at once, 50 wait for the delay */
	uint64_t end = now_mono_ms() + 30000;	/* generous: it returns once they went */
	do {
		usleep(10 * 1000);
		batcher_stats(b, &st);
	} while (st.exported < 200 && now_mono_ms() < end);
	CHECK_EQ_INT(st.exported, 200);
	CHECK_EQ_INT(st.queue_len, 50);
	batcher_free(b, 2000);	/* shutdown flushes the rest */
	CHECK_EQ_INT(f.spans, 250);

	/* collector down at shutdown: the deadline is kept and the rest counted failed */
	fake_init(&f);
	f.fail_next = 1000000;
	f.retryable = true;
	o.schedule_delay_ms = 10;
	o.backoff_initial_ms = 50;
	b = batcher_new(&o, &f.ex);
	REQUIRE(b);
	submit_n(b, 20, &refused);
	usleep(50 * 1000);
	uint64_t t0 = now_mono_ms();
	batcher_free(b, 300);
	uint64_t took = now_mono_ms() - t0;
	/* the 300 ms deadline kept, not the 5 min of retries: a bound far from both, so that a
	 * loaded machine passes (speed is make bench's) */
	CHECK(took < 30000);
	CHECK_EQ_INT(f.spans, 0);
	/* an export stuck past the deadline is cancelled (the fake ignores cancel, so the
	 * join waits for it: a slow fake is what shows the deadline) */
	fake_init(&f);
	f.block_ms = 200;
	b = batcher_new(&o, &f.ex);
	REQUIRE(b);
	submit_n(b, 10, &refused);
	batcher_free(b, 1000);
	CHECK_EQ_INT(f.spans, 10);
	CHECK_EQ_INT(refused, 0);
}

/* ---- tracer ---- */

struct recent_seen {
	int n, exported;
	char names[8][16];
};

static void on_recent(const struct span *s, void *arg)
{
	struct recent_seen *r = arg;
	if (r->n < 8)
		snprintf(r->names[r->n], sizeof(r->names[0]), "%.15s", s->name);
	r->n++;
	r->exported += span_export_state(s) == SPAN_EXPORT_EXPORTED;
}

TEST(tracer_spans)
{
	struct fake_exporter f;
	struct otlp_config c;
	char err[256];
	clear_env();
	fake_init(&f);
	otlp_config_init(&c);
	c.ring_size = 4;
	c.batch.schedule_delay_ms = 10;
	REQUIRE(otlp_config_add_tag(&c, "cluster_name", "homelab", err, sizeof(err)) == 0);
	REQUIRE(otlp_config_add_tag(&c, "environment", "development", err, sizeof(err)) == 0);
	struct otlp_tracer *t = otlp_tracer_new_with_exporter(&c, &f.ex, err, sizeof(err));
	otlp_config_fini(&c);
	REQUIRE(t);
	struct otlp_resource *res = otlp_resource_for_workload(NULL, "api", "default", "api-1", "node-1");
	REQUIRE(res);

	struct span *out = span_start(t, res, "outbound", SPAN_KIND_CLIENT, NULL);
	REQUIRE(out);
	CHECK(out->recording && (out->ctx.flags & SPAN_FLAG_SAMPLED) && !out->has_parent);
	CHECK(span_context_valid(&out->ctx));
	CHECK_EQ_STR(span_get_attr(out, "cluster_name")->v.s, "homelab");
	CHECK_EQ_STR(span_get_attr(out, "environment")->v.s, "development");
	char tpbuf[64];
	REQUIRE(tracecontext_format(&out->ctx, tpbuf, sizeof(tpbuf)) == TRACEPARENT_LEN);
	struct span_context remote;
	REQUIRE(tracecontext_parse(tpbuf, strlen(tpbuf), &remote) == 0);
	struct span *in = span_start(t, res, "inbound", SPAN_KIND_SERVER, &remote);
	REQUIRE(in);
	CHECK(memcmp(in->ctx.trace_id, out->ctx.trace_id, 16) == 0);
	CHECK(memcmp(in->parent_span_id, out->ctx.span_id, 8) == 0);
	CHECK(memcmp(in->ctx.span_id, out->ctx.span_id, 8) != 0);
	CHECK(in->has_parent && in->parent_remote);
	span_end(in);
	span_end(out);

	/* an unsampled parent: IDs for propagation, nothing recorded or queued */
	remote.flags = 0;
	struct span *un = span_start(t, res, "unsampled", SPAN_KIND_SERVER, &remote);
	REQUIRE(un);
	CHECK(!un->recording && span_context_valid(&un->ctx));
	CHECK(span_set_str(un, "k", "v") == 0 && un->attrs.n == 0);
	span_end(un);
	/* an invalid parent makes a root */
	struct span_context zero = { 0 };
	struct span *root = span_start(t, res, "root", SPAN_KIND_INTERNAL, &zero);
	REQUIRE(root);
	CHECK(!root->has_parent);
	span_end(root);

	CHECK(otlp_tracer_flush(t, 5000) == 0);
	struct batcher_stats st;
	otlp_tracer_stats(t, &st);
	CHECK_EQ_INT(st.exported, 3);
	struct recent_seen r = { 0 };
	CHECK_EQ_INT(otlp_tracer_recent(t, on_recent, &r), 3);
	CHECK_EQ_STR(r.names[0], "inbound");
	CHECK_EQ_STR(r.names[2], "root");
	CHECK_EQ_INT(r.exported, 3);
	/* the ring keeps the last ring_size */
	for (int i = 0; i < 6; i++)
		span_end(span_start(t, res, "more", SPAN_KIND_INTERNAL, NULL));
	memset(&r, 0, sizeof(r));
	CHECK_EQ_INT(otlp_tracer_recent(t, on_recent, &r), 4);
	otlp_resource_unref(res);
	otlp_tracer_free(t);
}

TEST(tracer_sampling_zero_and_disabled)
{
	struct otlp_config c;
	char err[256];
	clear_env();
	otlp_config_init(&c);
	c.export = false;	/* no exporter: ring only */
	REQUIRE(otlp_config_set_sampling(&c, 0, err, sizeof(err)) == 0);
	struct otlp_tracer *t = otlp_tracer_new(&c, err, sizeof(err));
	REQUIRE(t);
	int sampled = 0;
	for (int i = 0; i < 1000; i++) {
		struct span *s = span_start(t, NULL, "x", SPAN_KIND_CLIENT, NULL);
		REQUIRE(s);
		sampled += s->recording;
		span_end(s);
	}
	CHECK_EQ_INT(sampled, 0);
	CHECK_EQ_INT(otlp_tracer_recent(t, NULL, NULL), 0);
	otlp_tracer_free(t);
	c.enabled = false;
	REQUIRE(otlp_config_set_sampling(&c, 100, err, sizeof(err)) == 0);
	t = otlp_tracer_new(&c, err, sizeof(err));
	REQUIRE(t);
	struct span *s = span_start(t, NULL, "x", SPAN_KIND_CLIENT, NULL);
	REQUIRE(s);
	CHECK(!s->recording && span_context_valid(&s->ctx));
	span_end(s);
	otlp_tracer_free(t);
	/* a bad configuration is refused with a message */
	c.enabled = true;
	c.export = true;
	c.batch.max_batch = 5000;
	t = otlp_tracer_new(&c, err, sizeof(err));
	CHECK(t == NULL);
	CHECK(strstr(err, "max_export_batch_size") != NULL);
	otlp_config_fini(&c);
}

/* ---- encoding ---- */

TEST(encode_roundtrip)
{
	struct otlp_resource *r1 = otlp_resource_for_workload(NULL, "a", "ns", "a-1", "n1");
	struct otlp_resource *r2 = otlp_resource_for_workload(NULL, "b", "ns", "b-1", "n1");
	REQUIRE(r1 && r2);
	struct span *s[3] = {
		span_new(r1, "outbound", SPAN_KIND_CLIENT),
		span_new(r2, "inbound", SPAN_KIND_SERVER),
		span_new(r1, "outbound", SPAN_KIND_CLIENT),
	};
	REQUIRE(s[0] && s[1] && s[2]);
	s[0]->start_ns = 1000;
	s[0]->end_ns = 2000;
	span_set_str(s[0], "destination.workload", "b");
	span_set_int(s[0], "bytes_sent", 1234567890123LL);
	span_set_bool(s[0], "mtls", true);
	span_set_double(s[0], "ratio", 0.25);
	span_set_status(s[0], SPAN_STATUS_ERROR, "connection refused");
	memcpy(s[1]->ctx.trace_id, s[0]->ctx.trace_id, 16);
	memcpy(s[1]->parent_span_id, s[0]->ctx.span_id, 8);
	s[1]->has_parent = true;
	s[1]->parent_remote = true;
	span_set_link(s[1], &s[0]->ctx);

	uint8_t *buf;
	size_t len;
	REQUIRE(otlp_encode_request(s, 3, 5, &buf, &len) == 0);
	Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *req =
		opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(NULL, len - 5, buf + 5);
	REQUIRE(req);
	CHECK_EQ_INT(req->n_resource_spans, 2);	/* grouped by resource */
	Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = req->resource_spans[0];
	CHECK_EQ_INT(rs->scope_spans[0]->n_spans, 2);
	CHECK_EQ_STR(rs->scope_spans[0]->scope->name, "ambit");
	Opentelemetry__Proto__Trace__V1__Span *p = rs->scope_spans[0]->spans[0];
	CHECK(p->trace_id.len == 16 && memcmp(p->trace_id.data, s[0]->ctx.trace_id, 16) == 0);
	CHECK(p->span_id.len == 8 && memcmp(p->span_id.data, s[0]->ctx.span_id, 8) == 0);
	CHECK_EQ_INT(p->parent_span_id.len, 0);
	CHECK_EQ_INT(p->kind, 3);
	CHECK_EQ_INT(p->start_time_unix_nano, 1000);
	CHECK_EQ_INT(p->end_time_unix_nano, 2000);
	CHECK_EQ_INT(p->n_attributes, 4);
	CHECK_EQ_INT(p->attributes[1]->value->int_value, 1234567890123LL);
	CHECK_EQ_INT(p->status->code, 2);
	CHECK_EQ_STR(p->status->message, "connection refused");
	CHECK_EQ_INT(p->flags, 0x101);
	Opentelemetry__Proto__Trace__V1__Span *q = req->resource_spans[1]->scope_spans[0]->spans[0];
	CHECK_EQ_INT(q->kind, 2);
	CHECK(q->parent_span_id.len == 8 && memcmp(q->parent_span_id.data, s[0]->ctx.span_id, 8) == 0);
	CHECK_EQ_INT(q->flags, 0x301);
	CHECK_EQ_INT(q->n_links, 1);
	const char *svc = NULL;
	for (size_t i = 0; i < req->resource_spans[1]->resource->n_attributes; i++)
		if (strcmp(req->resource_spans[1]->resource->attributes[i]->key, "service.name") == 0)
			svc = req->resource_spans[1]->resource->attributes[i]->value->string_value;
	CHECK_EQ_STR(svc, "b");
	opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(req, NULL);
	free(buf);

	int64_t rej;
	char msg[64];
	CHECK(otlp_decode_response(NULL, 0, &rej, msg, sizeof(msg)) == 0 && rej == 0);
	static const uint8_t junk[] = { 0x0a, 0x05, 0x01 };
	CHECK(otlp_decode_response(junk, sizeof(junk), &rej, msg, sizeof(msg)) == -EBADMSG);
	for (int i = 0; i < 3; i++)
		span_unref(s[i]);
	otlp_resource_unref(r1);
	otlp_resource_unref(r2);
}

/* Per-span settings (Istio's per-workload tracing): the sampler and tags replace the
 * tracer's, spans go to their provider's sink, and a retired sink drains before it closes. */
TEST(span_opts_route_to_sinks_and_retired_sinks_drain)
{
	struct fake_exporter own, fa, fb;
	struct otlp_config c;
	struct batcher_stats st;
	char err[256];
	clear_env();
	fake_init(&own);
	fake_init(&fa);
	fake_init(&fb);
	otlp_config_init(&c);
	c.ring_size = 16;
	c.batch.schedule_delay_ms = 10;
	REQUIRE(otlp_config_add_tag(&c, "from_config", "yes", err, sizeof(err)) == 0);
	struct otlp_tracer *t = otlp_tracer_new_with_exporter(&c, &own.ex, err, sizeof(err));
	otlp_config_fini(&c);
	REQUIRE(t);
	struct batcher_opts bo = { .schedule_delay_ms = 10 };
	struct otlp_sink *a = otlp_sink_new_with_exporter("a", &bo, 2000, &fa.ex);
	fb.block_ms = 200;	/* a slow collector: spans are still queued when b retires */
	struct otlp_sink *b = otlp_sink_new_with_exporter("b", &bo, 2000, &fb.ex);
	REQUIRE(a && b);
	CHECK_EQ_STR(otlp_sink_name(a), "a");

	struct sampler never;
	REQUIRE(sampler_init(&never, SAMPLER_PARENT_TRACEIDRATIO, 0) == 0);
	struct otlp_header tags[] = { { "cluster_name", "homelab" } };
	struct span_opts oa = { .tags = tags, .ntags = 1, .sink = a };
	struct span *s = span_start_opts(t, NULL, "outbound", SPAN_KIND_CLIENT, NULL, &oa);
	REQUIRE(s);
	CHECK_EQ_STR(span_get_attr(s, "cluster_name")->v.s, "homelab");
	CHECK(!span_get_attr(s, "from_config"));	/* replaced, not added to */
	span_end(s);
	/* sampling 0: IDs for propagation, nothing recorded; a sampled parent still wins */
	struct span_opts on = { .sampler = &never, .sink = a };
	s = span_start_opts(t, NULL, "x", SPAN_KIND_CLIENT, NULL, &on);
	CHECK(s && !s->recording && span_context_valid(&s->ctx));
	span_end(s);
	struct span_context parent = { .flags = SPAN_FLAG_SAMPLED };
	memset(parent.trace_id, 1, 16);
	memset(parent.span_id, 2, 8);
	s = span_start_opts(t, NULL, "x", SPAN_KIND_SERVER, &parent, &on);
	CHECK(s && s->recording);
	span_end(s);
	/* disabled reporting: recorded for the admin ring, exported nowhere */
	struct span_opts off = { .no_export = true };
	s = span_start_opts(t, NULL, "quiet", SPAN_KIND_CLIENT, NULL, &off);
	CHECK(s && s->recording);
	span_end(s);
	for (int i = 0; i < 5; i++) {
		struct span_opts ob = { .sink = b };
		span_end(span_start_opts(t, NULL, "to-b", SPAN_KIND_CLIENT, NULL, &ob));
	}
	CHECK(otlp_sink_flush(a, 2000) == 0);
	CHECK(otlp_tracer_flush(t, 2000) == 0);
	pthread_mutex_lock(&fa.lock);
	CHECK_EQ_INT(fa.spans, 2);
	pthread_mutex_unlock(&fa.lock);
	CHECK_EQ_INT(own.spans, 0);
	/* b retires with its spans queued: they are exported before it closes */
	otlp_sink_unref(b);
	CHECK(otlp_sinks_wait_retired(5000) == 0);
	CHECK_EQ_INT(fb.spans, 5);
	otlp_tracer_stats(t, &st);
	CHECK_EQ_INT(st.exported, 7);
	otlp_sink_unref(a);
	CHECK(otlp_sinks_wait_retired(5000) == 0);
	otlp_tracer_stats(t, &st);
	CHECK_EQ_INT(st.exported, 7);	/* retired sinks' counters stay counted */
	otlp_tracer_free(t);
}

int main(void)
{
	log_set_level(LOG_LVL_ERROR);
	return test_main("otlp");
}
