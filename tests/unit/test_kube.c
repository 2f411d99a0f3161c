// SPDX-License-Identifier: Apache-2.0
/* Kubernetes discovery against tests/tools/fake_apiserver.py on 127.0.0.1: the model follows
 * pods, nodes, namespaces and services through watches, bookmarks, 410s, malformed events,
 * server restarts and token rotation. The tests run in order and share one fake server. */
#include "harness.h"

#include "agent/kube.h"
#include "agent/workloads.h"
#include "common/httpc.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT_MS 8000

static struct {
	pid_t pid;
	int port;
	char dir[64];
	char state[128];
	char token[128];
	char url[64];
} F;
static struct kube_discovery *KD;

/* ---- the fake API server ---- */

static const char *fake_path(void)
{
	static char path[512];
	const char *top = getenv("AMBIT_TOP");
	snprintf(path, sizeof(path), "%s/tests/tools/fake_apiserver.py", top ? top : ".");
	return path;
}

/* Starts the fake with extra arguments (NULL-terminated); 0 or -1. */
static int fake_start(const char *arg, ...)
{
	const char *argv[32];
	char port[16];
	int n = 0, fds[2];
	va_list ap;

	snprintf(port, sizeof(port), "%d", F.port);
	argv[n++] = "python3";
	argv[n++] = fake_path();
	argv[n++] = "--port";
	argv[n++] = port;
	argv[n++] = "--state";
	argv[n++] = F.state;
	va_start(ap, arg);
	for (; arg && n < 30; arg = va_arg(ap, const char *))
		argv[n++] = arg;
	va_end(ap);
	argv[n] = NULL;
	if (pipe(fds) == -1)
		return -1;
	F.pid = fork();
	if (F.pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);	/* no orphan if this test crashes */
		dup2(fds[1], 1);
		if (!getenv("VERBOSE")) {
			int dn = open("/dev/null", O_WRONLY);
			dup2(dn, 2);
		}
		close(fds[0]);
		close(fds[1]);
		execvp("python3", (char *const *)argv);
		_exit(127);
	}
	close(fds[1]);
	char buf[128] = "";
	size_t got = 0;
	uint64_t end = now_mono_ms() + 30000;
	while (got < sizeof(buf) - 1 && !strchr(buf, '\n') && now_mono_ms() < end) {
		struct pollfd p = { .fd = fds[0], .events = POLLIN };
		if (poll(&p, 1, 200) <= 0)
			continue;
		ssize_t r = read(fds[0], buf + got, sizeof(buf) - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
		buf[got] = '\0';
	}
	close(fds[0]);
	if (sscanf(buf, "LISTENING %d", &F.port) != 1) {
		fprintf(stderr, "  fake_apiserver did not start: '%s'\n", buf);
		return -1;
	}
	snprintf(F.url, sizeof(F.url), "http://127.0.0.1:%d", F.port);
	return 0;
}

static void fake_kill(void)
{
	if (F.pid > 0) {
		kill(F.pid, SIGKILL);
		waitpid(F.pid, NULL, 0);
		F.pid = 0;
	}
}

/* POSTs /_control/verb with body (single quotes stand for double quotes). Returns the HTTP
 * status; the response body into out when given. */
__attribute__((format(printf, 3, 4)))
static long ctl(const char *verb, json_t **out, const char *fmt, ...)
{
	char url[128], body[8192];
	struct httpc_request req = { .method = "POST" };
	struct httpc_response resp;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	for (char *c = body; *c; c++)
		if (*c == '\'')
			*c = '"';
	snprintf(url, sizeof(url), "%s/_control/%s", F.url, verb);
	req.url = url;
	req.body = body;
	req.body_len = strlen(body);
	req.timeout_ms = 5000;
	long st = httpc_do(&req, &resp) ? -1 : resp.status;
	if (out)
		*out = resp.body ? json_loads(resp.body, 0, NULL) : NULL;
	httpc_response_fini(&resp);
	return st;
}

static json_t *fake_stats(void)
{
	char url[128];
	struct httpc_request req = { .url = url, .timeout_ms = 5000 };
	struct httpc_response resp;
	json_t *j = NULL;
	snprintf(url, sizeof(url), "%s/_control/stats", F.url);
	if (!httpc_do(&req, &resp) && resp.body)
		j = json_loads(resp.body, 0, NULL);
	httpc_response_fini(&resp);
	return j;
}

static int write_token(const char *tok)
{
	char tmp[160];
	snprintf(tmp, sizeof(tmp), "%s.tmp", F.token);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return -1;
	fprintf(f, "%s\n", tok);
	fclose(f);
	return rename(tmp, F.token);	/* a new inode, as kubelet's symlink swap gives */
}

/* ---- objects ---- */

static long apply_ns(const char *name, const char *labels)
{
	return ctl("apply", NULL, "{'resource':'namespaces','object':{'metadata':{'name':'%s',"
		   "'labels':{%s}}}}", name, labels);
}

static long apply_node(const char *name, const char *ip)
{
	return ctl("apply", NULL, "{'resource':'nodes','object':{'metadata':{'name':'%s'},"
		   "'status':{'addresses':[{'type':'Hostname','address':'%s'},"
		   "{'type':'InternalIP','address':'%s'}]}}}", name, name, ip);
}

/* A pod; `extra_spec` and `status` are JSON members without braces. */
static long apply_pod(const char *ns, const char *name, const char *labels, const char *owner,
		      const char *extra_spec, const char *status)
{
	return ctl("apply", NULL, "{'resource':'pods','object':{'metadata':{'name':'%s',"
		   "'namespace':'%s','labels':{%s},'ownerReferences':[%s]},"
		   "'spec':{'containers':[{'name':'c','image':'i','ports':[{'name':'http',"
		   "'containerPort':8080}]}]%s},'status':{%s}}}",
		   name, ns, labels, owner, extra_spec, status);
}

static long running_pod(const char *ns, const char *name, const char *labels, const char *node,
			const char *ip, const char *sa)
{
	char spec[256], status[256];
	snprintf(spec, sizeof(spec), ",'nodeName':'%s','serviceAccountName':'%s'", node, sa);
	snprintf(status, sizeof(status), "'phase':'Running','podIP':'%s','podIPs':[{'ip':'%s'}]",
		 ip, ip);
	return apply_pod(ns, name, labels, "", spec, status);
}

static long apply_svc(const char *ns, const char *name, const char *labels, const char *vip,
		      const char *selector, const char *ports)
{
	return ctl("apply", NULL, "{'resource':'services','object':{'metadata':{'name':'%s',"
		   "'namespace':'%s','labels':{%s}},'spec':{'type':'ClusterIP','clusterIP':'%s',"
		   "'clusterIPs':['%s'],'selector':{%s},'ports':[%s]}}}",
		   name, ns, labels, vip, vip, selector, ports);
}

static long del(const char *res, const char *ns, const char *name)
{
	return ctl("delete", NULL, "{'resource':'%s','namespace':'%s','name':'%s'}", res, ns, name);
}

/* ---- model checks ---- */

#define WAIT_UNTIL(ms, cond)                                                          \
	({                                                                            \
		bool _ok;                                                             \
		uint64_t _end = now_mono_ms() + (ms);                                 \
		for (;;) {                                                            \
			struct model *m = model_current();                            \
			_ok = (cond);                                                 \
			model_unref(m);                                               \
			if (_ok || now_mono_ms() > _end)                              \
				break;                                                \
			usleep(20000);                                                \
		}                                                                     \
		_ok;                                                                  \
	})

#define WAIT_STATS(ms, cond)                                                          \
	({                                                                            \
		bool _ok;                                                             \
		uint64_t _end = now_mono_ms() + (ms);                                 \
		struct kube_stats st;                                                 \
		for (;;) {                                                            \
			kube_discovery_stats(KD, &st);                                \
			_ok = (cond);                                                 \
			if (_ok || now_mono_ms() > _end)                              \
				break;                                                \
			usleep(20000);                                                \
		}                                                                     \
		_ok;                                                                  \
	})

static const struct model_workload *wl(const struct model *m, const char *uid)
{
	return model_workload_by_uid(m, uid);
}

static bool wl_on(const struct model *m, const char *uid, const char *node)
{
	const struct model_workload *w = wl(m, uid);
	return w && w->node && strcmp(w->node, node) == 0;
}

/* 1 enrolled, 0 not, -1 absent */
static int wl_enrolled(const struct model *m, const char *uid)
{
	const struct model_workload *w = wl(m, uid);
	return w ? w->enrolled : -1;
}

static const struct model_service *svc(const struct model *m, const char *ns, const char *name)
{
	return model_service_by_name(m, ns, name);
}

static int svc_endpoints(const struct model *m, const char *ns, const char *name)
{
	const struct model_service *s = svc(m, ns, name);
	return s ? s->nendpoints : -1;
}

static const char *svc_waypoint(const struct model *m, const char *ns, const char *name)
{
	const struct model_service *s = svc(m, ns, name);
	return s && s->waypoint.name ? s->waypoint.name : "";
}

static bool ip_is_workload(const struct model *m, const char *ip)
{
	struct sockaddr_storage ss;
	return ip_parse(ip, &ss) == 0 && model_workload_by_ip(m, &ss) != NULL;
}

static const char *node_addr(const struct model *m, const char *name, char *buf)
{
	const struct model_node *n = model_node_by_name(m, name);
	return n ? sockaddr_ip_str(&n->addr, buf, ADDR_STR_LEN) : "";
}

#define API_POD "default/api-7d9f8b6c5d-abcde"
#define PORTS_HTTP "{'name':'http','port':80,'targetPort':8080,'protocol':'TCP'}"

static struct kube_discovery *start_kd(const char *url)
{
	struct kube_opts o = {
		.api_url = url,
		.token_file = F.token,
		.ca_file = "/nonexistent/ca.crt",
		.watch_timeout_s = 20,
		.idle_timeout_s = 30,
		.debounce_ms = 30,
		.backoff_min_ms = 50,
		.backoff_max_ms = 400,
		.list_page = 2,	/* exercise paging */
	};
	return kube_discovery_new(&o);
}

static void cleanup(void)
{
	fake_kill();
	if (F.dir[0]) {
		unlink(F.state);
		unlink(F.token);
		rmdir(F.dir);
	}
}

/* The temporary directory with the token and the fake's state; once per run. */
static int fixture_init(void)
{
	if (F.dir[0])
		return 0;
	snprintf(F.dir, sizeof(F.dir), "/tmp/ambit-kube-XXXXXX");
	if (!mkdtemp(F.dir)) {
		F.dir[0] = '\0';
		return -1;
	}
	snprintf(F.state, sizeof(F.state), "%s/state.json", F.dir);
	snprintf(F.token, sizeof(F.token), "%s/token", F.dir);
	atexit(cleanup);
	return 0;
}

TEST(initial_sync)
{
	REQUIRE(fixture_init() == 0);
	REQUIRE(write_token("t1") == 0);
	REQUIRE(fake_start("--token", "t1", NULL) == 0);

	CHECK(apply_ns("default", "'istio.io/dataplane-mode':'ambient'") == 200);
	CHECK(apply_ns("plain", "'team':'x'") == 200);
	CHECK(apply_node("n1", "172.18.0.2") == 200);
	CHECK(apply_node("n2", "172.18.0.3") == 200);
	/* a ReplicaSet pod: canonical service from the app label */
	CHECK(apply_pod("default", "api-7d9f8b6c5d-abcde",
			"'app':'api','pod-template-hash':'7d9f8b6c5d'",
			"{'kind':'ReplicaSet','name':'api-7d9f8b6c5d','controller':true}",
			",'nodeName':'n1','serviceAccountName':'api'",
			"'phase':'Running','podIP':'10.244.1.5','podIPs':[{'ip':'10.244.1.5'}]") == 200);
	/* no app label: the owner's name minus its hash */
	CHECK(apply_pod("plain", "web-5c9d8f7b6a-xyz12", "'pod-template-hash':'5c9d8f7b6a'",
			"{'kind':'ReplicaSet','name':'web-5c9d8f7b6a','controller':true}",
			",'nodeName':'n1'", "'phase':'Running','podIPs':[{'ip':'10.244.1.6'}]") == 200);
	/* not workloads: host network, finished, no IP yet */
	CHECK(apply_pod("default", "hostnet", "'app':'h'", "", ",'nodeName':'n1','hostNetwork':true",
			"'phase':'Running','podIP':'172.18.0.2'") == 200);
	CHECK(apply_pod("default", "done", "'app':'d'", "", ",'nodeName':'n1'",
			"'phase':'Succeeded','podIP':'10.244.1.9'") == 200);
	CHECK(apply_pod("default", "pending", "'app':'p'", "", "", "'phase':'Pending'") == 200);
	CHECK(apply_svc("default", "api", "", "10.96.0.10", "'app':'api'", PORTS_HTTP) == 200);
	CHECK(apply_svc("default", "api-named", "", "10.96.0.11", "'app':'api'",
			"{'port':81,'targetPort':'http'},{'port':53,'protocol':'UDP'}") == 200);
	/* the waypoint: its pods opt out, its Service is the target of use-waypoint labels */
	CHECK(running_pod("default", "waypoint-0", "'app':'waypoint','istio.io/dataplane-mode':'none'",
			  "n2", "10.244.2.2", "waypoint") == 200);
	CHECK(apply_svc("default", "waypoint", "", "10.96.0.15", "'app':'waypoint'",
			"{'name':'hbone','port':15008}") == 200);

	KD = start_kd(F.url);
	REQUIRE(KD != NULL);
	char b[ADDR_STR_LEN];
	REQUIRE(WAIT_UNTIL(WAIT_MS, wl(m, API_POD) && svc(m, "default", "waypoint")));
	struct model *m = model_current();
	const struct model_workload *w = wl(m, API_POD);
	CHECK(w->enrolled);
	CHECK_EQ_STR(w->node, "n1");
	CHECK_EQ_STR(w->service_account, "api");
	CHECK_EQ_STR(w->canonical_service, "api");
	CHECK_EQ_INT(w->naddrs, 1);
	CHECK(ip_is_workload(m, "10.244.1.5"));
	CHECK_EQ_INT(wl_enrolled(m, "plain/web-5c9d8f7b6a-xyz12"), 0);
	if (wl(m, "plain/web-5c9d8f7b6a-xyz12")) {
		CHECK_EQ_STR(wl(m, "plain/web-5c9d8f7b6a-xyz12")->canonical_service, "web");
		CHECK_EQ_STR(wl(m, "plain/web-5c9d8f7b6a-xyz12")->service_account, "default");
	}
	CHECK(!wl(m, "default/hostnet"));
	CHECK(!wl(m, "default/done"));
	CHECK(!wl(m, "default/pending"));
	CHECK_EQ_INT(wl_enrolled(m, "default/waypoint-0"), 0);
	CHECK_EQ_STR(node_addr(m, "n1", b), "172.18.0.2");
	CHECK_EQ_STR(node_addr(m, "n2", b), "172.18.0.3");
	CHECK_EQ_INT(svc_endpoints(m, "default", "api"), 1);
	CHECK_EQ_INT(model_service_target_port(svc(m, "default", "api"), 80), 8080);
	CHECK_EQ_INT(model_service_target_port(svc(m, "default", "api-named"), 81), 8080);
	CHECK_EQ_INT(model_service_target_port(svc(m, "default", "api-named"), 53), 0);
	CHECK_EQ_STR(svc_waypoint(m, "default", "api"), "");
	model_unref(m);
	struct kube_stats st;
	kube_discovery_stats(KD, &st);
	CHECK(st.synced);
	CHECK(st.models_published >= 1);
	CHECK_EQ_INT(st.res[KUBE_RES_PODS].objects, 3);	/* api, web, waypoint */
	CHECK(st.res[KUBE_RES_PODS].resource_version[0] != '\0');
	json_t *j = kube_stats_to_json(&st);
	CHECK(j && json_is_true(json_object_get(j, "synced")));
	json_decref(j);
}

TEST(pods_appear_and_move)
{
	REQUIRE(KD);
	CHECK(running_pod("default", "api-7d9f8b6c5d-fghij", "'app':'api','pod-template-hash':'7d9f8b6c5d'",
			  "n2", "10.244.2.7", "api") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, wl_on(m, "default/api-7d9f8b6c5d-fghij", "n2") &&
				  svc_endpoints(m, "default", "api") == 2));
	/* a StatefulSet pod recreated on the other node with a new address */
	CHECK(running_pod("plain", "db-0", "'app':'db'", "n1", "10.244.1.20", "db") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, wl_on(m, "plain/db-0", "n1")));
	CHECK(del("pods", "plain", "db-0") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, !wl(m, "plain/db-0") && !ip_is_workload(m, "10.244.1.20")));
	CHECK(running_pod("plain", "db-0", "'app':'db'", "n2", "10.244.2.20", "db") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, wl_on(m, "plain/db-0", "n2") && ip_is_workload(m, "10.244.2.20") &&
				  !ip_is_workload(m, "10.244.1.20")));
	/* a pod that finishes leaves the model */
	CHECK(apply_pod("default", "api-7d9f8b6c5d-fghij", "'app':'api'", "", ",'nodeName':'n2'",
			"'phase':'Failed','podIP':'10.244.2.7'") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, !wl(m, "default/api-7d9f8b6c5d-fghij") &&
				  svc_endpoints(m, "default", "api") == 1));
	/* a node's InternalIP changes */
	CHECK(apply_node("n2", "172.18.0.33") == 200);
	char b[ADDR_STR_LEN];
	CHECK(WAIT_UNTIL(WAIT_MS, strcmp(node_addr(m, "n2", b), "172.18.0.33") == 0));
}

TEST(namespace_enrollment)
{
	REQUIRE(KD);
	CHECK(apply_ns("plain", "'istio.io/dataplane-mode':'ambient'") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, wl_enrolled(m, "plain/db-0") == 1 &&
				  wl_enrolled(m, "plain/web-5c9d8f7b6a-xyz12") == 1));
	CHECK(apply_ns("plain", "'team':'x'") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, wl_enrolled(m, "plain/db-0") == 0 &&
				  wl_enrolled(m, "plain/web-5c9d8f7b6a-xyz12") == 0));
}

TEST(pod_enrollment_labels)
{
	REQUIRE(KD);
	/* `none` on a pod opts it out of an ambient namespace */
	CHECK(running_pod("default", "api-7d9f8b6c5d-abcde",
			  "'app':'api','istio.io/dataplane-mode':'none'", "n1", "10.244.1.5", "api") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, wl_enrolled(m, API_POD) == 0));
	CHECK(running_pod("default", "api-7d9f8b6c5d-abcde", "'app':'api'", "n1", "10.244.1.5",
			  "api") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, wl_enrolled(m, API_POD) == 1));
	/* `ambient` on a pod enrolls it in a namespace that is not */
	CHECK(running_pod("plain", "db-0", "'app':'db','istio.io/dataplane-mode':'ambient'", "n2",
			  "10.244.2.20", "db") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, wl_enrolled(m, "plain/db-0") == 1));
}

TEST(services_change)
{
	REQUIRE(KD);
	CHECK(apply_svc("default", "api", "", "10.96.0.10", "'app':'other'", PORTS_HTTP) == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, svc_endpoints(m, "default", "api") == 0));
	CHECK(apply_svc("default", "api", "'istio.io/use-waypoint':'waypoint'", "10.96.0.10",
			"'app':'api'", "{'port':80,'targetPort':9090}") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, svc_endpoints(m, "default", "api") == 1 &&
				  strcmp(svc_waypoint(m, "default", "api"), "waypoint") == 0 &&
				  model_service_target_port(svc(m, "default", "api"), 80) == 9090));
	struct model *m = model_current();
	const struct model_service *wp = model_waypoint_for(m, svc(m, "default", "api"), NULL);
	CHECK(wp && strcmp(wp->name, "waypoint") == 0);
	model_unref(m);
	/* the namespace label: every service but the waypoint's own; use-waypoint-namespace */
	CHECK(apply_svc("plain", "db", "", "10.96.1.1", "'app':'db'", PORTS_HTTP) == 200);
	CHECK(apply_ns("plain", "'istio.io/use-waypoint':'waypoint',"
			"'istio.io/use-waypoint-namespace':'default'") == 200);
	CHECK(apply_ns("default", "'istio.io/dataplane-mode':'ambient',"
			"'istio.io/use-waypoint':'waypoint'") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, strcmp(svc_waypoint(m, "plain", "db"), "waypoint") == 0 &&
				  strcmp(svc_waypoint(m, "default", "api-named"), "waypoint") == 0));
	m = model_current();
	CHECK(svc(m, "plain", "db") && svc(m, "plain", "db")->waypoint.namespace &&
	      strcmp(svc(m, "plain", "db")->waypoint.namespace, "default") == 0);
	CHECK_EQ_STR(svc_waypoint(m, "default", "waypoint"), "");
	CHECK(wl(m, API_POD) && wl(m, API_POD)->waypoint.name);
	CHECK(wl(m, "default/waypoint-0") && !wl(m, "default/waypoint-0")->waypoint.name);
	model_unref(m);
	/* `none` on the Service overrides its namespace; removing the label falls back */
	CHECK(apply_svc("plain", "db", "'istio.io/use-waypoint':'none'", "10.96.1.1", "'app':'db'",
			PORTS_HTTP) == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, svc(m, "plain", "db") && !svc(m, "plain", "db")->waypoint.name));
	CHECK(apply_ns("plain", "'team':'x'") == 200);
	CHECK(del("services", "plain", "db") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, !svc(m, "plain", "db")));
}

static const char *pods_rv(struct kube_stats *st)
{
	return st->res[KUBE_RES_PODS].resource_version;
}

TEST(bookmark_advances_rv)
{
	REQUIRE(KD);
	json_t *r = NULL;
	struct kube_stats before;
	kube_discovery_stats(KD, &before);
	REQUIRE(ctl("bookmark", &r, "{}") == 200 && r);
	char rv[64];
	snprintf(rv, sizeof(rv), "%s", json_string_value(json_object_get(r, "resourceVersion")));
	json_decref(r);
	CHECK(strcmp(rv, pods_rv(&before)) != 0);
	CHECK(WAIT_STATS(WAIT_MS, strcmp(pods_rv(&st), rv) == 0 &&
				  strcmp(st.res[KUBE_RES_NODES].resource_version, rv) == 0 &&
				  st.res[KUBE_RES_PODS].bookmarks > before.res[KUBE_RES_PODS].bookmarks));
	/* no relist for it */
	struct kube_stats after;
	kube_discovery_stats(KD, &after);
	CHECK_EQ_INT(after.res[KUBE_RES_PODS].lists, before.res[KUBE_RES_PODS].lists);
}

TEST(gone_relists)
{
	REQUIRE(KD);
	struct kube_stats before;
	kube_discovery_stats(KD, &before);
	/* a change the agent sees only through the relist: compacted away before it watches */
	REQUIRE(ctl("expire", NULL, "{}") == 200);
	CHECK(WAIT_STATS(WAIT_MS, st.res[KUBE_RES_PODS].lists > before.res[KUBE_RES_PODS].lists &&
				  st.res[KUBE_RES_SERVICES].lists > before.res[KUBE_RES_SERVICES].lists &&
				  st.res[KUBE_RES_PODS].relists_gone > before.res[KUBE_RES_PODS].relists_gone));
	CHECK(running_pod("default", "late", "'app':'api'", "n1", "10.244.1.30", "api") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, wl_on(m, "default/late", "n1") &&
				  svc_endpoints(m, "default", "api") == 2));
}

TEST(malformed_event_relists)
{
	REQUIRE(KD);
	struct kube_stats before;
	kube_discovery_stats(KD, &before);
	uint64_t gen0;
	struct model *m0 = model_current();
	gen0 = m0->generation;
	model_unref(m0);
	REQUIRE(ctl("garbage", NULL, "{'resource':'pods'}") == 200);
	CHECK(WAIT_STATS(WAIT_MS, st.res[KUBE_RES_PODS].lists > before.res[KUBE_RES_PODS].lists &&
				  st.res[KUBE_RES_PODS].errors > before.res[KUBE_RES_PODS].errors));
	CHECK(WAIT_UNTIL(WAIT_MS, m->generation >= gen0 && wl(m, "default/late")));
	CHECK(del("pods", "default", "late") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, !wl(m, "default/late")));
}

/* Brings every watch to the newest resourceVersion (a bookmark), so a restart can resume. */
static bool all_at_bookmark(void)
{
	json_t *r = NULL;
	char rv[64];
	if (ctl("bookmark", &r, "{}") != 200 || !r)
		return false;
	snprintf(rv, sizeof(rv), "%s", json_string_value(json_object_get(r, "resourceVersion")));
	json_decref(r);
	return WAIT_STATS(WAIT_MS, ({
		bool all = true;
		for (int i = 0; i < KUBE_RES_COUNT; i++)
			all = all && strcmp(st.res[i].resource_version, rv) == 0;
		all;
	}));
}

TEST(server_restart_resumes)
{
	REQUIRE(KD);
	REQUIRE(all_at_bookmark());
	struct kube_stats before;
	kube_discovery_stats(KD, &before);
	struct model *m0 = model_current();
	uint64_t gen0 = m0->generation;
	int nwl = m0->nworkloads;
	model_unref(m0);

	fake_kill();
	usleep(700 * 1000);
	/* the API is gone: the last good model stays */
	CHECK(WAIT_STATS(WAIT_MS, st.res[KUBE_RES_PODS].errors > before.res[KUBE_RES_PODS].errors));
	CHECK(WAIT_UNTIL(10, m->generation == gen0 && m->nworkloads == nwl && wl(m, API_POD)));

	REQUIRE(fake_start("--token", "t1", NULL) == 0);
	CHECK(running_pod("default", "after-restart", "'app':'api'", "n2", "10.244.2.40", "api") == 200);
	CHECK(WAIT_UNTIL(WAIT_MS, wl_on(m, "default/after-restart", "n2")));
	struct kube_stats after;
	kube_discovery_stats(KD, &after);
	for (int i = 0; i < KUBE_RES_COUNT; i++)	/* resumed from the resourceVersion */
		CHECK_EQ_INT(after.res[i].lists, before.res[i].lists);
}

TEST(server_restore_relists)
{
	REQUIRE(KD);
	struct kube_stats before;
	kube_discovery_stats(KD, &before);
	fake_kill();
	/* restored from a backup 1000 versions later, without history; a pod vanished */
	json_t *state = json_load_file(F.state, 0, NULL);
	REQUIRE(state);
	json_object_del(json_object_get(json_object_get(state, "objects"), "pods"),
			"default/after-restart");
	CHECK(json_dump_file(state, F.state, 0) == 0);
	json_decref(state);
	REQUIRE(fake_start("--token", "t1", "--rv-jump", "1000", NULL) == 0);
	CHECK(WAIT_STATS(WAIT_MS, st.res[KUBE_RES_PODS].lists > before.res[KUBE_RES_PODS].lists &&
				  st.res[KUBE_RES_NAMESPACES].lists >
					  before.res[KUBE_RES_NAMESPACES].lists));
	CHECK(WAIT_UNTIL(WAIT_MS, !wl(m, "default/after-restart") && wl(m, API_POD)));
}

TEST(token_rotation)
{
	REQUIRE(KD);
	struct kube_stats before;
	kube_discovery_stats(KD, &before);
	/* the API accepts only the new token; the open watches end */
	CHECK(ctl("token", NULL, "{'token':'t2'}") == 200);
	CHECK(ctl("close", NULL, "{}") == 200);
	json_t *s = NULL;
	uint64_t end = now_mono_ms() + WAIT_MS;
	while (now_mono_ms() < end) {	/* the agent meets 401 until the file rotates */
		json_decref(s);
		s = fake_stats();
		if (s && json_integer_value(json_object_get(s, "unauthorized")) > 0)
			break;
		usleep(20000);
	}
	CHECK(s && json_integer_value(json_object_get(s, "unauthorized")) > 0);
	json_decref(s);
	CHECK(running_pod("default", "rotated", "'app':'api'", "n1", "10.244.1.50", "api") == 200);
	usleep(200 * 1000);
	struct model *m0 = model_current();
	CHECK(!wl(m0, "default/rotated"));
	model_unref(m0);
	REQUIRE(write_token("t2") == 0);
	CHECK(WAIT_UNTIL(WAIT_MS, wl(m, "default/rotated") != NULL));
	CHECK(WAIT_STATS(WAIT_MS, st.auth_reloads > before.auth_reloads));
}

TEST(free_is_prompt)
{
	REQUIRE(KD);
	uint64_t t0 = now_mono_ms();
	kube_discovery_free(KD);	/* four watches in flight */
	KD = NULL;
	uint64_t took = now_mono_ms() - t0;
	fprintf(stderr, "  free took %llu ms\n", (unsigned long long)took);
	CHECK(took < 2500);
	/* an API that never answers: nothing is published, free is still prompt */
	fake_kill();
	struct model *m0 = model_current();
	uint64_t gen0 = m0->generation;
	model_unref(m0);
	KD = start_kd(F.url);
	REQUIRE(KD);
	CHECK(WAIT_STATS(3000, st.res[KUBE_RES_PODS].errors >= 2 && !st.synced));
	m0 = model_current();
	CHECK_EQ_INT(m0->generation, gen0);
	model_unref(m0);
	t0 = now_mono_ms();
	kube_discovery_free(KD);
	KD = NULL;
	CHECK(now_mono_ms() - t0 < 2500);
	/* no URL at all */
	unsetenv("KUBERNETES_SERVICE_HOST");
	struct kube_opts o = { 0 };
	errno = 0;
	CHECK(kube_discovery_new(&o) == NULL && errno == EINVAL);
}

static long status_kb(const char *field)
{
	char line[256];
	long v = -1;
	FILE *f = fopen("/proc/self/status", "r");
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, field, strlen(field)) == 0)
			v = strtol(line + strlen(field) + 1, NULL, 10);
	if (f)
		fclose(f);
	return v;
}

/* 10,000 pods and 2,000 services (AMBIT_KUBE_SCALE_PODS / _SERVICES change it): the model
 * is complete and the memory figure is printed for docs/kubernetes.md. */
TEST(scale)
{
	const char *ep = getenv("AMBIT_KUBE_SCALE_PODS"), *es = getenv("AMBIT_KUBE_SCALE_SERVICES");
	int npods = ep ? atoi(ep) : 10000, nsvcs = es ? atoi(es) : 2000;
	char gen[128];
	REQUIRE(!KD);
	REQUIRE(fixture_init() == 0);
	REQUIRE(write_token("t2") == 0);
	unlink(F.state);
	F.port = 0;
	snprintf(gen, sizeof(gen), "pods=%d,services=%d,nodes=100,namespaces=50", npods, nsvcs);
	REQUIRE(fake_start("--token", "t2", "--generate", gen, NULL) == 0);
	model_publish(model_new_empty());
	long rss0 = status_kb("VmRSS:");
	uint64_t t0 = now_mono_ms();
	struct kube_opts o = { .api_url = F.url, .token_file = F.token };
	KD = kube_discovery_new(&o);
	REQUIRE(KD);
	CHECK(WAIT_UNTIL(120000, m->nworkloads == npods && m->nservices == nsvcs));
	uint64_t took = now_mono_ms() - t0;
	long rss1 = status_kb("VmRSS:"), hwm = status_kb("VmHWM:");
	struct kube_stats st;
	kube_discovery_stats(KD, &st);
	struct model *m = model_current();
	CHECK_EQ_INT(m->nnodes, 100);
	CHECK(svc_endpoints(m, "ns-0", "app-0") == npods / nsvcs);
	model_unref(m);
	printf("# scale: %d pods, %d services: synced in %llu ms, last build %llu ms, "
	       "RSS %ld -> %ld KiB (+%ld), peak %ld KiB\n", npods, nsvcs,
	       (unsigned long long)took, (unsigned long long)st.last_build_ms, rss0, rss1,
	       rss1 - rss0, hwm);
	kube_discovery_free(KD);
	KD = NULL;
	model_publish(model_new_empty());
	fake_kill();
}

int main(void)
{
	int rc;
	signal(SIGPIPE, SIG_IGN);
	log_set_level(getenv("VERBOSE") ? LOG_LVL_DEBUG : LOG_LVL_ERROR);
	httpc_global_init();
	rc = test_main("kube");
	kube_discovery_free(KD);
	model_publish(model_new_empty());
	httpc_global_fini();
	return rc;
}
