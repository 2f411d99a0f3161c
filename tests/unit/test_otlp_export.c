// SPDX-License-Identifier: Apache-2.0
/* Exports spans through the real tracer, batcher and OTLP exporters (gRPC and HTTP) to
 * tests/node/otlp_sink.js, an independent receiver decoding with the official generated
 * protobuf code, and checks what it decoded; then collector outages and the drop bound. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/httpc.h"
#include "common/log.h"
#include "common/util.h"
#include "harness.h"
#include "otlp/config.h"
#include "otlp/tracecontext.h"
#include "otlp/tracer.h"

static pid_t sink_pid = -1;
static char dir[64];
static char out_path[128], ready_path[128], stats_path[128];
static uint16_t grpc_port, http_port;
static bool have_node;

/* A free port below the ephemeral range (32768+): the sink is stopped and restarted on the
 * same port, and an ephemeral port could meanwhile be taken by any outgoing connection. */
static uint16_t free_port(void)
{
	static unsigned seed;
	if (!seed)
		seed = (unsigned)getpid() * 2654435761u;
	for (int tries = 0; tries < 200; tries++) {
		uint16_t port = (uint16_t)(20000 + rand_r(&seed) % 12000);
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			return 0;
		int ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		close(fd);
		if (ok)
			return port;
	}
	return 0;
}

static void sink_stop(void)
{
	if (sink_pid > 0) {
		kill(sink_pid, SIGTERM);
		for (int i = 0; i < 50; i++) {
			if (waitpid(sink_pid, NULL, WNOHANG) == sink_pid) {
				sink_pid = -1;
				return;
			}
			usleep(100 * 1000);
		}
		kill(sink_pid, SIGKILL);
		waitpid(sink_pid, NULL, 0);
		sink_pid = -1;
	}
}

/* Starts the sink on the fixed ports with up to four extra args (NULL-terminated);
 * waits (bounded) until it listens. */
static bool sink_start(const char *a1, const char *a2, const char *a3, const char *a4)
{
	char gp[8], hp[8];
	sink_stop();
	unlink(ready_path);
	snprintf(gp, sizeof(gp), "%u", grpc_port);
	snprintf(hp, sizeof(hp), "%u", http_port);
	pid_t pid = fork();
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		dup2(devnull, 0);
		execlp("node", "node", "tests/node/otlp_sink.js", "--grpc-port", gp, "--http-port", hp,
		       "--out", out_path, "--ready", ready_path, "--stats", stats_path,
		       a1, a2, a3, a4, (char *)NULL);
		_exit(127);
	}
	if (pid < 0)
		return false;
	sink_pid = pid;
	for (int i = 0; i < 300; i++) {
		if (access(ready_path, F_OK) == 0)
			return true;
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			sink_pid = -1;
			return false;
		}
		usleep(50 * 1000);
	}
	return false;
}

/* The spans the sink wrote (a JSON array of the lines), or NULL. */
static json_t *sink_spans(void)
{
	json_t *arr = json_array();
	FILE *f = fopen(out_path, "r");
	char *line = NULL;
	size_t cap = 0;
	if (!f)
		return arr;
	while (getline(&line, &cap, f) > 0) {
		json_t *j = json_loads(line, 0, NULL);
		if (j)
			json_array_append_new(arr, j);
	}
	free(line);
	fclose(f);
	return arr;
}

static size_t wait_spans(size_t want, int timeout_ms)
{
	size_t n = 0;
	for (int t = 0; t <= timeout_ms; t += 50) {
		json_t *a = sink_spans();
		n = json_array_size(a);
		json_decref(a);
		if (n >= want)
			break;
		usleep(50 * 1000);
	}
	return n;
}

static void reset_out(void)
{
	unlink(out_path);
	unlink(stats_path);
}

static long sink_stat(const char *key)
{
	json_t *j = json_load_file(stats_path, 0, NULL);
	long v = j ? (long)json_integer_value(json_object_get(j, key)) : -1;
	json_decref(j);
	return v;
}

static json_t *find_span(json_t *arr, const char *span_id_hex)
{
	size_t i;
	json_t *s;
	json_array_foreach(arr, i, s)
		if (strcmp(json_string_value(json_object_get(s, "span_id")), span_id_hex) == 0)
			return s;
	return NULL;
}

static const char *jstr(json_t *o, const char *k1, const char *k2)
{
	json_t *v = json_object_get(o, k1);
	if (k2)
		v = json_object_get(v, k2);
	return json_string_value(v);
}

static struct otlp_tracer *make_tracer(enum otlp_protocol proto, uint32_t queue, uint32_t delay_ms)
{
	struct otlp_config c;
	char err[256], url[128];
	otlp_config_init(&c);
	c.protocol = proto;
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", proto == OTLP_PROTO_GRPC ? grpc_port : http_port);
	otlp_config_set_endpoint(&c, url, err, sizeof(err));
	otlp_config_add_tag(&c, "cluster_name", "homelab", err, sizeof(err));
	otlp_config_add_tag(&c, "environment", "development", err, sizeof(err));
	otlp_config_add_header(&c, "x-ambit-test", "yes", err, sizeof(err));
	c.batch.max_queue = queue;
	c.batch.max_batch = MIN(queue, 512u);
	c.batch.schedule_delay_ms = delay_ms;
	c.batch.export_timeout_ms = 3000;
	c.batch.backoff_initial_ms = 100;
	c.batch.backoff_max_ms = 400;
	struct otlp_tracer *t = otlp_tracer_new(&c, err, sizeof(err));
	if (!t)
		fprintf(stderr, "  tracer: %s\n", err);
	otlp_config_fini(&c);
	return t;
}

/* An outbound/inbound pair linked through traceparent, plus a refused connection. */
static void linked_spans(enum otlp_protocol proto, const char *proto_name)
{
	char tid[33], out_sid[17], in_sid[17], err_sid[17], tpbuf[64];
	reset_out();
	REQUIRE(sink_start(NULL, NULL, NULL, NULL));
	struct otlp_tracer *t = make_tracer(proto, 2048, 200);
	REQUIRE(t);
	struct otlp_resource *src = otlp_resource_for_workload(NULL, "sleep", "default", "sleep-1", "node-1");
	struct otlp_resource *dst = otlp_resource_for_workload(NULL, "httpbin", "apps", "httpbin-1", "node-2");
	REQUIRE(src && dst);

	struct span *out = span_start(t, src, "outbound", SPAN_KIND_CLIENT, NULL);
	REQUIRE(out);
	span_set_str(out, "destination.workload", "httpbin-1");
	span_set_int(out, "bytes_sent", 4096);
	span_set_bool(out, "mtls", true);
	REQUIRE(tracecontext_format(&out->ctx, tpbuf, sizeof(tpbuf)) == TRACEPARENT_LEN);
	struct span_context remote;
	REQUIRE(tracecontext_parse(tpbuf, strlen(tpbuf), &remote) == 0);
	struct span *in = span_start(t, dst, "inbound", SPAN_KIND_SERVER, &remote);
	REQUIRE(in);
	span_set_double(in, "ratio", 0.5);
	struct span *bad = span_start(t, src, "outbound", SPAN_KIND_CLIENT, NULL);
	REQUIRE(bad);
	span_set_status(bad, SPAN_STATUS_ERROR, "connection refused");
	span_set_str(bad, "response_flags", "UF");
	span_trace_id_hex(&out->ctx, tid);
	span_span_id_hex(&out->ctx, out_sid);
	span_span_id_hex(&in->ctx, in_sid);
	span_span_id_hex(&bad->ctx, err_sid);
	span_end(in);
	span_end(out);
	span_end(bad);
	CHECK(otlp_tracer_flush(t, 10000) == 0);
	CHECK_EQ_INT(wait_spans(3, 5000), 3);

	json_t *arr = sink_spans();
	json_t *o = find_span(arr, out_sid), *i = find_span(arr, in_sid), *e = find_span(arr, err_sid);
	REQUIRE(o && i && e);
	CHECK_EQ_STR(jstr(o, "proto", NULL), proto_name);
	CHECK_EQ_STR(jstr(o, "trace_id", NULL), tid);
	CHECK_EQ_STR(jstr(i, "trace_id", NULL), tid);
	CHECK_EQ_STR(jstr(i, "parent_span_id", NULL), out_sid);	/* the cross-node link */
	CHECK_EQ_STR(jstr(o, "parent_span_id", NULL), "");
	CHECK_EQ_STR(jstr(o, "name", NULL), "outbound");
	CHECK_EQ_STR(jstr(i, "name", NULL), "inbound");
	CHECK_EQ_INT(json_integer_value(json_object_get(o, "kind")), 3);	/* CLIENT */
	CHECK_EQ_INT(json_integer_value(json_object_get(i, "kind")), 2);	/* SERVER */
	CHECK_EQ_STR(jstr(o, "resource", "service.name"), "sleep");
	CHECK_EQ_STR(jstr(o, "resource", "k8s.namespace.name"), "default");
	CHECK_EQ_STR(jstr(o, "resource", "k8s.pod.name"), "sleep-1");
	CHECK_EQ_STR(jstr(o, "resource", "k8s.node.name"), "node-1");
	CHECK_EQ_STR(jstr(i, "resource", "service.name"), "httpbin");
	CHECK_EQ_STR(jstr(i, "resource", "k8s.node.name"), "node-2");
	CHECK_EQ_STR(jstr(o, "scope", "name"), "ambit");
	CHECK_EQ_STR(jstr(o, "attributes", "cluster_name"), "homelab");
	CHECK_EQ_STR(jstr(i, "attributes", "environment"), "development");
	CHECK_EQ_STR(jstr(o, "attributes", "destination.workload"), "httpbin-1");
	CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(o, "attributes"), "bytes_sent")), 4096);
	CHECK(json_is_true(json_object_get(json_object_get(o, "attributes"), "mtls")));
	CHECK(json_real_value(json_object_get(json_object_get(i, "attributes"), "ratio")) == 0.5);
	CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(e, "status"), "code")), 2);
	CHECK_EQ_STR(jstr(e, "status", "message"), "connection refused");
	CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(o, "status"), "code")), 0);
	/* start/end are Unix ns, end after start */
	const char *st = jstr(o, "start", NULL), *en = jstr(o, "end", NULL);
	REQUIRE(st && en);
	CHECK(strlen(st) == 19 && strcmp(en, st) >= 0);
	json_decref(arr);

	struct batcher_stats bs;
	otlp_tracer_stats(t, &bs);
	CHECK_EQ_INT(bs.exported, 3);
	CHECK_EQ_INT(bs.dropped, 0);
	/* a second export reuses (or re-establishes) the connection */
	span_end(span_start(t, src, "again", SPAN_KIND_INTERNAL, NULL));
	CHECK(otlp_tracer_flush(t, 10000) == 0);
	CHECK_EQ_INT(wait_spans(4, 5000), 4);
	otlp_resource_unref(src);
	otlp_resource_unref(dst);
	otlp_tracer_free(t);
	sink_stop();
}

TEST(grpc_linked_spans)
{
	if (!have_node)
		return;
	linked_spans(OTLP_PROTO_GRPC, "grpc");
}

TEST(http_linked_spans)
{
	if (!have_node)
		return;
	linked_spans(OTLP_PROTO_HTTP_PROTOBUF, "http");
}

/* Collector down, spans queue up (the excess over the bound is dropped and counted), the
 * collector comes back: every queued span arrives. */
static void down_then_back(enum otlp_protocol proto)
{
	const uint32_t bound = 300;
	reset_out();
	sink_stop();
	struct otlp_tracer *t = make_tracer(proto, bound, 100);
	REQUIRE(t);
	struct otlp_resource *res = otlp_resource_for_workload(NULL, "w", "ns", "w-1", "node-1");
	REQUIRE(res);
	for (uint32_t i = 0; i < bound + 120; i++) {
		struct span *s = span_start(t, res, "outbound", SPAN_KIND_CLIENT, NULL);
		REQUIRE(s);
		span_set_int(s, "seq", i);
		span_end(s);
	}
	usleep(1500 * 1000);	/* several failed attempts while down */
	struct batcher_stats bs;
	otlp_tracer_stats(t, &bs);
	CHECK_EQ_INT(bs.exported, 0);
	CHECK_EQ_INT(bs.dropped, 120);
	CHECK_EQ_INT(bs.queue_len, bound);
	CHECK(bs.export_errors >= 2);
	CHECK_EQ_INT(bs.failed, 0);
	REQUIRE(sink_start(NULL, NULL, NULL, NULL));
	CHECK(otlp_tracer_flush(t, 15000) == 0);
	CHECK_EQ_INT(wait_spans(bound, 5000), bound);
	otlp_tracer_stats(t, &bs);
	CHECK_EQ_INT(bs.exported, bound);
	CHECK_EQ_INT(bs.failed, 0);
	/* each seq 0..bound-1 once: the first `bound` were kept, in order, none twice */
	json_t *arr = sink_spans();
	char *seen = calloc(bound + 120, 1);
	size_t i;
	json_t *s;
	json_array_foreach(arr, i, s) {
		json_int_t seq = json_integer_value(json_object_get(json_object_get(s, "attributes"), "seq"));
		if (seq >= 0 && seq < (json_int_t)bound)
			seen[seq]++;
		else
			CHECK(!"a span over the bound arrived");
	}
	for (uint32_t k = 0; k < bound; k++)
		CHECK_EQ_INT(seen[k], 1);
	free(seen);
	json_decref(arr);
	otlp_resource_unref(res);
	otlp_tracer_free(t);
	sink_stop();
}

TEST(grpc_collector_down_then_back)
{
	if (!have_node)
		return;
	down_then_back(OTLP_PROTO_GRPC);
}

TEST(http_collector_down_then_back)
{
	if (!have_node)
		return;
	down_then_back(OTLP_PROTO_HTTP_PROTOBUF);
}

/* The collector answers UNAVAILABLE / 503 a few times: retried, nothing lost. */
static void refusing_collector(enum otlp_protocol proto)
{
	reset_out();
	REQUIRE(sink_start("--fail-first", "3", NULL, NULL));
	struct otlp_tracer *t = make_tracer(proto, 2048, 100);
	REQUIRE(t);
	for (int i = 0; i < 10; i++)
		span_end(span_start(t, NULL, "x", SPAN_KIND_CLIENT, NULL));
	CHECK(otlp_tracer_flush(t, 15000) == 0);
	CHECK_EQ_INT(wait_spans(10, 5000), 10);
	struct batcher_stats bs;
	otlp_tracer_stats(t, &bs);
	CHECK_EQ_INT(bs.exported, 10);
	CHECK_EQ_INT(bs.export_errors, 3);
	CHECK_EQ_INT(sink_stat("refused"), 3);
	otlp_tracer_free(t);
	sink_stop();
}

TEST(grpc_unavailable_retried)
{
	if (!have_node)
		return;
	refusing_collector(OTLP_PROTO_GRPC);
}

TEST(http_503_retried)
{
	if (!have_node)
		return;
	refusing_collector(OTLP_PROTO_HTTP_PROTOBUF);
}

/* A non-retryable answer (INVALID_ARGUMENT) gives the batch up at once. */
TEST(grpc_non_retryable)
{
	if (!have_node)
		return;
	reset_out();
	REQUIRE(sink_start("--fail-first", "1", "--fail-code", "3"));	/* INVALID_ARGUMENT */
	struct otlp_tracer *t = make_tracer(OTLP_PROTO_GRPC, 2048, 100);
	REQUIRE(t);
	span_end(span_start(t, NULL, "x", SPAN_KIND_CLIENT, NULL));
	CHECK(otlp_tracer_flush(t, 10000) == 0);
	struct batcher_stats bs;
	otlp_tracer_stats(t, &bs);
	CHECK_EQ_INT(bs.failed, 1);
	CHECK_EQ_INT(bs.exported, 0);
	CHECK_EQ_INT(bs.export_requests, 1);
	otlp_tracer_free(t);
	sink_stop();
}

/* partial_success.rejected_spans is read back and counted (and not retried). */
TEST(grpc_partial_success)
{
	if (!have_node)
		return;
	reset_out();
	REQUIRE(sink_start("--partial", "2", NULL, NULL));
	struct otlp_tracer *t = make_tracer(OTLP_PROTO_GRPC, 2048, 100);
	REQUIRE(t);
	for (int i = 0; i < 5; i++)
		span_end(span_start(t, NULL, "x", SPAN_KIND_CLIENT, NULL));
	CHECK(otlp_tracer_flush(t, 10000) == 0);
	struct batcher_stats bs;
	otlp_tracer_stats(t, &bs);
	CHECK_EQ_INT(bs.exported, 5);
	CHECK(bs.export_requests >= 1);	/* one batch, unless the timer split it */
	CHECK_EQ_INT(bs.rejected, 2 * bs.export_requests);
	otlp_tracer_free(t);
	sink_stop();
}

static void cleanup(void)
{
	char cmd[128];
	sink_stop();
	if (dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cleanup of %s failed\n", dir);
	}
}

static void on_signal(int sig)
{
	if (sink_pid > 0)
		kill(sink_pid, SIGKILL);
	signal(sig, SIG_DFL);
	raise(sig);
}

int main(void)
{
	log_set_level(LOG_LVL_ERROR);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (httpc_global_init())
		return 1;
	snprintf(dir, sizeof(dir), "/tmp/ambit-otlp-XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	atexit(cleanup);
	snprintf(out_path, sizeof(out_path), "%s/spans.jsonl", dir);
	snprintf(ready_path, sizeof(ready_path), "%s/ready", dir);
	snprintf(stats_path, sizeof(stats_path), "%s/stats.json", dir);
	grpc_port = free_port();
	http_port = free_port();
	have_node = system("node --version >/dev/null 2>&1") == 0;
	if (have_node && access("tests/node/node_modules/@grpc/grpc-js", F_OK) != 0 &&
	    system("./tests/node/install.sh") != 0)
		have_node = false;
	if (!have_node || !grpc_port || !http_port) {
		/* no independent receiver: say so in a failing line rather than pass silently */
		printf("not ok - otlp_export.setup (node or tests/node/node_modules unavailable)\n");
		return 1;
	}
	int rc = test_main("otlp_export");
	httpc_global_fini();
	return rc;
}
