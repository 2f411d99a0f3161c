// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the configuration loader: defaults, the CONTRACT.md example, precise errors. */
#include "harness.h"
#include "agent/config.h"

#include <unistd.h>

static char path[64];

static void unlink_cfg(void)
{
	if (path[0])
		unlink(path);	/* tests that return early leave their file otherwise */
}

static void write_cfg(const char *text)
{
	static bool registered;

	if (!registered)
		registered = atexit(unlink_cfg) == 0;
	unlink_cfg();
	strcpy(path, "/tmp/ambit-test-config-XXXXXX");
	int fd = mkstemp(path);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		abort();
	close(fd);
}

TEST(contract_example_loads)
{
	struct config c;
	char err[256];
	write_cfg("{\"node_name\":\"node-1\",\"node_ip\":\"172.18.0.2\",\"trust_domain\":\"cluster.local\","
		  "\"ca\":{\"cert\":\"/etc/ambit/ca/ca.crt\",\"key\":\"/etc/ambit/ca/ca.key\"},"
		  "\"discovery\":{\"source\":\"file\",\"file\":\"/etc/ambit/workloads.json\"},"
		  "\"tracing\":{\"sampling\":100.0,\"custom_tags\":{\"cluster_name\":\"homelab\","
		  "\"environment\":\"development\"},\"otlp\":{\"endpoint\":\"http://127.0.0.1:4317\","
		  "\"protocol\":\"grpc\"}},\"log\":{\"level\":\"info\",\"format\":\"json\"}}");
	REQUIRE(config_init(&c, CONFIG_ROLE_AGENT) == 0);
	int rc = config_load(&c, CONFIG_ROLE_AGENT, path, err, sizeof(err));
	if (rc)
		fprintf(stderr, "  %s\n", err);
	REQUIRE(rc == 0);
	CHECK_EQ_INT(config_validate(&c, CONFIG_ROLE_AGENT, err, sizeof(err)), 0);
	CHECK_EQ_STR(c.node_name, "node-1");
	CHECK_EQ_INT(c.ncustom_tags, 2);
	CHECK_EQ_STR(c.custom_tags[0].key, "cluster_name");
	CHECK_EQ_STR(c.otlp_endpoint, "http://127.0.0.1:4317");
	CHECK_EQ_INT(c.max_queue_size, 2048);
	CHECK_EQ_INT(c.hbone_max_streams, 100);
	CHECK(c.request_spans);	/* on by default (issue 17) */
	CHECK_EQ_STR(c.hbone_dial, "node");
	CHECK_EQ_STR(c.root_namespace, "istio-system");
	json_t *j = config_to_json(&c);
	CHECK(j != NULL);
	json_decref(j);
	config_fini(&c);
	unlink(path);
}

static void expect(enum config_role role, const char *text, const char *want)
{
	struct config c;
	char err[256] = "";
	write_cfg(text);
	config_init(&c, role);
	int rc = config_load(&c, role, path, err, sizeof(err));
	if (!rc)
		rc = config_validate(&c, role, err, sizeof(err));
	CHECK(rc != 0);
	if (!strstr(err, want) || !strstr(err, path)) {
		fprintf(stderr, "  error '%s' lacks '%s' or the file name\n", err, want);
		test_failed_now = 1;
	}
	config_fini(&c);
	unlink(path);
}

TEST(errors_name_file_key_value)
{
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"tracing\":{\"otlp\":"
	       "{\"endpoint\":\"http://x:4317\",\"protocol\":\"thrift\"}}}",
	       "tracing.otlp.protocol: 'thrift' is not one of grpc, http/protobuf");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"tracng\":{}}",
	       "tracng: unknown key");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"tracing\":{\"sampling\":150}}",
	       "tracing.sampling: must be a number from 0 to 100");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"not-an-ip\"}",
	       "node_ip: 'not-an-ip' is not an IP address");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\"", "line 1");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"log\":{\"level\":\"loud\"}}",
	       "log.level: 'loud' is not one of");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"name\":\"wp\"}",
	       "name: unknown key");
	expect(CONFIG_ROLE_WAYPOINT, "{\"name\":\"wp\"}", "name and namespace");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"redirect\":{\"pin_dir\":\"/tmp/x\"}}",
	       "redirect.pin_dir: '/tmp/x' must be under /sys/fs/bpf/");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"redirect\":{\"sysctl_dir\":\"host/proc\"}}",
	       "redirect.sysctl_dir: 'host/proc' is neither \"auto\" nor an absolute path");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"admin_address\":\"0.0.0.0:15000\"}",
	       "admin_address: '0.0.0.0:15000' is not a loopback address");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"admin_address\":\"[fd00::1]:15000\"}",
	       "is not a loopback address");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"hbone\":{\"dial\":\"sni\"}}",
	       "hbone.dial: 'sni' is not one of node, pod");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"root_namespace\":\"Istio_System\"}",
	       "root_namespace: 'Istio_System' is not a namespace name");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"root_namespace\":\"\"}",
	       "root_namespace: must not be empty");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"tracing\":{\"request_spans\":\"no\"}}",
	       "tracing.request_spans");
}

TEST(root_namespace_set)
{
	struct config c;
	char err[256];
	write_cfg("{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"root_namespace\":\"mesh-root\"}");
	config_init(&c, CONFIG_ROLE_AGENT);
	CHECK_EQ_INT(config_load(&c, CONFIG_ROLE_AGENT, path, err, sizeof(err)), 0);
	CHECK_EQ_INT(config_validate(&c, CONFIG_ROLE_AGENT, err, sizeof(err)), 0);
	CHECK_EQ_STR(c.root_namespace, "mesh-root");
	json_t *j = config_to_json(&c);
	CHECK_EQ_STR(json_string_value(json_object_get(j, "root_namespace")), "mesh-root");
	json_decref(j);
	config_fini(&c);
	unlink(path);
}

TEST(request_spans_off)
{
	struct config c;
	char err[256];
	write_cfg("{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"tracing\":{\"request_spans\":false}}");
	REQUIRE(config_init(&c, CONFIG_ROLE_AGENT) == 0);
	CHECK_EQ_INT(config_load(&c, CONFIG_ROLE_AGENT, path, err, sizeof(err)), 0);
	CHECK(!c.request_spans);
	config_fini(&c);
	unlink(path);
}

/* hbone.dial: "pod" (ztunnel's form) for the agent and the waypoint alike. */
TEST(hbone_dial_pod)
{
	struct config c;
	char err[256];
	write_cfg("{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"hbone\":{\"dial\":\"pod\"}}");
	config_init(&c, CONFIG_ROLE_AGENT);
	CHECK_EQ_INT(config_load(&c, CONFIG_ROLE_AGENT, path, err, sizeof(err)), 0);
	CHECK_EQ_STR(c.hbone_dial, "pod");
	json_t *j = config_to_json(&c);
	CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(j, "hbone"), "dial")), "pod");
	json_decref(j);
	config_fini(&c);
	unlink(path);
	write_cfg("{\"name\":\"wp\",\"namespace\":\"default\",\"hbone\":{\"dial\":\"pod\"}}");
	config_init(&c, CONFIG_ROLE_WAYPOINT);
	CHECK_EQ_INT(config_load(&c, CONFIG_ROLE_WAYPOINT, path, err, sizeof(err)), 0);
	CHECK_EQ_STR(c.hbone_dial, "pod");
	config_fini(&c);
	unlink(path);
}

/* The waypoint's "http2" limits: defaults, a file's values shown by /config_dump, bounds, and
 * the key is the waypoint's only. */
TEST(waypoint_http2)
{
	struct config c;
	char err[256];
	config_init(&c, CONFIG_ROLE_WAYPOINT);
	CHECK_EQ_INT(c.wp_h2_conns_per_endpoint, 4);
	CHECK_EQ_INT(c.wp_h2_client_streams, 100);
	CHECK_EQ_INT(c.wp_h2_pending, 1024);
	config_fini(&c);
	write_cfg("{\"name\":\"wp\",\"namespace\":\"default\",\"http2\":{\"max_connections_per_endpoint\":2,"
		  "\"max_concurrent_streams\":50,\"max_pending_requests\":10}}");
	config_init(&c, CONFIG_ROLE_WAYPOINT);
	CHECK_EQ_INT(config_load(&c, CONFIG_ROLE_WAYPOINT, path, err, sizeof(err)), 0);
	CHECK_EQ_INT(c.wp_h2_conns_per_endpoint, 2);
	CHECK_EQ_INT(c.wp_h2_client_streams, 50);
	CHECK_EQ_INT(c.wp_h2_pending, 10);
	json_t *j = config_to_json(&c), *h = json_object_get(j, "http2");
	CHECK_EQ_INT(json_integer_value(json_object_get(h, "max_connections_per_endpoint")), 2);
	CHECK_EQ_INT(json_integer_value(json_object_get(h, "max_concurrent_streams")), 50);
	CHECK_EQ_INT(json_integer_value(json_object_get(h, "max_pending_requests")), 10);
	json_decref(j);
	config_fini(&c);
	unlink(path);
	expect(CONFIG_ROLE_WAYPOINT, "{\"name\":\"wp\",\"namespace\":\"d\",\"http2\":{\"max_connections_per_endpoint\":0}}",
	       "http2.max_connections_per_endpoint: must be");
	expect(CONFIG_ROLE_WAYPOINT, "{\"name\":\"wp\",\"namespace\":\"d\",\"http2\":{\"max_concurrent_streams\":10001}}",
	       "http2.max_concurrent_streams: must be");
	expect(CONFIG_ROLE_WAYPOINT, "{\"name\":\"wp\",\"namespace\":\"d\",\"http2\":{\"max_pending_requests\":-1}}",
	       "http2.max_pending_requests");
	expect(CONFIG_ROLE_WAYPOINT, "{\"name\":\"wp\",\"namespace\":\"d\",\"http2\":{\"max_streams\":1}}",
	       "http2.max_streams: unknown key");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"http2\":{}}",
	       "http2: unknown key");
}

/* The waypoint's "http1.enable_trailers": off by default (Istio's Envoy drops HTTP/1 trailers),
 * on from the file, shown by /config_dump, a boolean only, the waypoint's key only. */
TEST(waypoint_http1_trailers)
{
	struct config c;
	char err[256];
	config_init(&c, CONFIG_ROLE_WAYPOINT);
	CHECK(!c.wp_h1_trailers);
	config_fini(&c);
	write_cfg("{\"name\":\"wp\",\"namespace\":\"default\",\"http1\":{\"enable_trailers\":true}}");
	config_init(&c, CONFIG_ROLE_WAYPOINT);
	CHECK_EQ_INT(config_load(&c, CONFIG_ROLE_WAYPOINT, path, err, sizeof(err)), 0);
	CHECK(c.wp_h1_trailers);
	json_t *j = config_to_json(&c);
	CHECK(json_is_true(json_object_get(json_object_get(j, "http1"), "enable_trailers")));
	json_decref(j);
	config_fini(&c);
	unlink(path);
	expect(CONFIG_ROLE_WAYPOINT, "{\"name\":\"wp\",\"namespace\":\"d\",\"http1\":{\"enable_trailers\":1}}",
	       "http1.enable_trailers");
	expect(CONFIG_ROLE_WAYPOINT, "{\"name\":\"wp\",\"namespace\":\"d\",\"http1\":{\"trailers\":true}}",
	       "http1.trailers: unknown key");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"http1\":{}}",
	       "http1: unknown key");
}

/* redirect.sysctl_dir: "auto" (the default) leaves the choice to the capture module (NULL);
 * a path is kept, and shown by the admin API's config. */
TEST(redirect_sysctl_dir)
{
	const char *cases[][2] = {
		{ "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\"}", "auto" },
		{ "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"redirect\":{\"sysctl_dir\":\"auto\"}}", "auto" },
		{ "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"redirect\":{\"sysctl_dir\":\"/host/proc/sys/net\"}}",
		  "/host/proc/sys/net" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config c;
		char err[256];
		json_t *j;

		write_cfg(cases[i][0]);
		config_init(&c, CONFIG_ROLE_AGENT);
		CHECK_EQ_INT(config_load(&c, CONFIG_ROLE_AGENT, path, err, sizeof(err)), 0);
		if (strcmp(cases[i][1], "auto") == 0)
			CHECK(c.redirect_sysctl_dir == NULL);
		else
			CHECK_EQ_STR(c.redirect_sysctl_dir, cases[i][1]);
		j = config_to_json(&c);
		CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(j, "redirect"),
							      "sysctl_dir")), cases[i][1]);
		json_decref(j);
		config_fini(&c);
		unlink(path);
	}
}

TEST(ca_client_keys)
{
	struct config c;
	char err[256];
	write_cfg("{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"ca\":{\"address\":"
		  "\"https://istiod.istio-system.svc:15012\",\"cert\":\"/etc/ambit/root/root-cert.pem\","
		  "\"token_file\":\"/var/run/secrets/tokens/istio-token\"}}");
	config_init(&c, CONFIG_ROLE_AGENT);
	CHECK_EQ_INT(config_load(&c, CONFIG_ROLE_AGENT, path, err, sizeof(err)), 0);
	CHECK_EQ_STR(c.ca_address, "https://istiod.istio-system.svc:15012");
	CHECK_EQ_STR(c.ca_cert, "/etc/ambit/root/root-cert.pem");
	CHECK_EQ_STR(c.ca_token_file, "/var/run/secrets/tokens/istio-token");
	json_t *j = config_to_json(&c);
	json_t *ca = json_object_get(j, "ca");
	CHECK(json_is_null(json_object_get(ca, "key")));	/* no key in CA-client mode */
	CHECK_EQ_STR(json_string_value(json_object_get(ca, "address")),
		     "https://istiod.istio-system.svc:15012");
	json_decref(j);
	config_fini(&c);
	unlink(path);

	/* Defaults: development mode (no address), Istio's token path. */
	config_init(&c, CONFIG_ROLE_AGENT);
	CHECK(c.ca_address == NULL);
	CHECK_EQ_STR(c.ca_token_file, "/var/run/secrets/tokens/istio-token");
	config_fini(&c);

	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"ca\":{\"address\":"
	       "\"http://istiod:15012\"}}", "ca.address: 'http://istiod:15012' must be https://HOST[:PORT]");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"ca\":{\"address\":"
	       "\"https://ca:15012\",\"key\":\"/k\"}}", "ca.key: ca.key (signing inside the agent, "
	       "development only) and ca.address exclude each other");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"ca\":{\"adress\":"
	       "\"https://ca\"}}", "ca.adress: unknown key");

	/* CA_ADDRESS, as ztunnel reads it, wins over the file (the istiod component sets it). */
	write_cfg("{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"ca\":{\"address\":\"https://ambit-ca:15012\"}}");
	setenv("CA_ADDRESS", "https://istiod.istio-system.svc:15012", 1);
	config_init(&c, CONFIG_ROLE_AGENT);
	CHECK_EQ_INT(config_load(&c, CONFIG_ROLE_AGENT, path, err, sizeof(err)), 0);
	CHECK_EQ_STR(c.ca_address, "https://istiod.istio-system.svc:15012");
	config_fini(&c);
	setenv("CA_ADDRESS", "istiod:15012", 1);
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\"}",
	       "CA_ADDRESS: 'istiod:15012' must be https://HOST[:PORT]");
	unsetenv("CA_ADDRESS");
	unlink(path);
}

/* hbone.limits: defaults when absent, each key read, shown by config_to_json, bad ones named. */
TEST(hbone_limits)
{
	struct config c;
	char err[256];
	config_init(&c, CONFIG_ROLE_AGENT);
	CHECK_EQ_INT(c.hbone_limits.resets.burst, 100);
	CHECK_EQ_INT(c.hbone_limits.resets.per_s, 10);
	CHECK_EQ_INT(c.hbone_limits.max_pending_streams, 256);
	write_cfg("{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"hbone\":{\"limits\":{"
		  "\"resets\":{\"burst\":500,\"per_s\":50},\"pings\":{\"burst\":7},"
		  "\"max_continuations\":4,\"max_pending_streams\":64}}}");
	CHECK_EQ_INT(config_load(&c, CONFIG_ROLE_AGENT, path, err, sizeof(err)), 0);
	CHECK_EQ_INT(c.hbone_limits.resets.burst, 500);
	CHECK_EQ_INT(c.hbone_limits.resets.per_s, 50);
	CHECK_EQ_INT(c.hbone_limits.pings.burst, 7);
	CHECK_EQ_INT(c.hbone_limits.pings.per_s, 5);	/* untouched default */
	CHECK_EQ_INT(c.hbone_limits.settings.burst, 50);
	CHECK_EQ_INT(c.hbone_limits.max_continuations, 4);
	CHECK_EQ_INT(c.hbone_limits.max_pending_streams, 64);
	json_t *j = config_to_json(&c);
	CHECK_EQ_INT((int)json_integer_value(json_object_get(json_object_get(json_object_get(
		json_object_get(j, "hbone"), "limits"), "resets"), "burst")), 500);
	CHECK_EQ_INT((int)json_integer_value(json_object_get(json_object_get(
		json_object_get(j, "hbone"), "limits"), "max_pending_streams")), 64);
	json_decref(j);
	config_fini(&c);
	unlink(path);
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"hbone\":{\"limits\":"
	       "{\"resets\":{\"burst\":0}}}}", "hbone.limits.resets.burst");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"hbone\":{\"limits\":"
	       "{\"rapid\":1}}}", "hbone.limits.rapid: unknown key");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"hbone\":{\"limits\":"
	       "{\"pings\":{\"per_s\":1,\"every\":2}}}}", "hbone.limits.pings.every: unknown key");
}

/* hbone.model_wait_ms and model_wait_max_streams (the wait for the model): defaults, read,
 * shown by config_to_json, 0 allowed for the wait (no hold), bounds named. */
TEST(hbone_model_wait)
{
	struct config c;
	char err[256];
	write_cfg("{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\"}");
	config_init(&c, CONFIG_ROLE_AGENT);
	CHECK_EQ_INT(config_load(&c, CONFIG_ROLE_AGENT, path, err, sizeof(err)), 0);
	CHECK_EQ_INT(c.hbone_model_wait_ms, 5000);
	CHECK_EQ_INT(c.hbone_model_wait_max, 1024);
	config_fini(&c);
	unlink(path);
	write_cfg("{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"hbone\":{\"model_wait_ms\":0,"
		  "\"model_wait_max_streams\":16}}");
	config_init(&c, CONFIG_ROLE_AGENT);
	CHECK_EQ_INT(config_load(&c, CONFIG_ROLE_AGENT, path, err, sizeof(err)), 0);
	CHECK_EQ_INT(c.hbone_model_wait_ms, 0);
	CHECK_EQ_INT(c.hbone_model_wait_max, 16);
	json_t *j = config_to_json(&c);
	json_t *h = json_object_get(j, "hbone");
	CHECK_EQ_INT((int)json_integer_value(json_object_get(h, "model_wait_ms")), 0);
	CHECK_EQ_INT((int)json_integer_value(json_object_get(h, "model_wait_max_streams")), 16);
	json_decref(j);
	config_fini(&c);
	unlink(path);
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"hbone\":"
	       "{\"model_wait_ms\":60001}}", "hbone.model_wait_ms");
	expect(CONFIG_ROLE_AGENT, "{\"node_name\":\"n\",\"node_ip\":\"1.2.3.4\",\"hbone\":"
	       "{\"model_wait_max_streams\":0}}", "hbone.model_wait_max_streams");
}

TEST(env_overrides_node)
{
	struct config c;
	char err[256];
	write_cfg("{\"node_name\":\"file-node\",\"node_ip\":\"1.2.3.4\"}");
	setenv("NODE_NAME", "env-node", 1);
	config_init(&c, CONFIG_ROLE_AGENT);
	CHECK_EQ_INT(config_load(&c, CONFIG_ROLE_AGENT, path, err, sizeof(err)), 0);
	CHECK_EQ_STR(c.node_name, "env-node");
	unsetenv("NODE_NAME");
	config_fini(&c);
	unlink(path);
}

TEST_MAIN("config")
