// SPDX-License-Identifier: Apache-2.0
/* ambitctl's commands over one admin path each: workloads, services, certificates,
 * connections (with --watch), bpf, config, policies, log and version. spans lives in spans.c. */
#include "agent/ctl/ctl.h"
#include "common/util.h"
#include "common/version.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Renders one agent's answer as tables. Returns 0 or an exit status (already reported). */
typedef int (*render_fn)(struct ctl *c, const struct ctl_admin *a, const json_t *ans);

/* Parses the options of a command that has none of its own. */
static int no_options(struct ctl *c, int argc, char **argv)
{
	int rc = ctl_parse_opts(c, argc, argv, 1, argv[0], NULL, 0);
	return rc ? rc : ctl_ready(c);
}

static void agent_heading(const struct ctl *c, int idx)
{
	if (c->nadmins < 2)
		return;
	printf("%s# agent %s\n", idx ? "\n" : "", c->admins[idx].addr);
}

/* GET path from every agent; json: the answer (an object keyed by agent when several);
 * table: render() per agent. `array` names the member the answer must hold as an array. */
static int run_simple(struct ctl *c, const char *path, const char *array, render_fn render)
{
	json_t *all = NULL;
	int rc = 0;

	if (c->format == CTL_FMT_JSON && c->nadmins > 1 && !(all = json_object())) {
		ctl_err("out of memory");
		return CTL_EXIT_AGENT;
	}
	for (int i = 0; i < c->nadmins; i++) {
		const struct ctl_admin *a = &c->admins[i];
		json_t *ans;
		int r = ctl_fetch(c, a, "GET", path, false, &ans);
		if (!r && array && !json_is_array(json_object_get(ans, array))) {
			char why[64];
			snprintf(why, sizeof(why), "no \"%s\" array", array);
			r = ctl_bad_answer(a, path, why);
		}
		if (r) {
			rc = r;
			json_decref(ans);
			continue;
		}
		if (c->format == CTL_FMT_JSON) {
			if (all)
				json_object_set_new(all, a->addr, ans);
			else {
				r = ctl_print_json(ans);
				json_decref(ans);
			}
		} else {
			agent_heading(c, i);
			r = render(c, a, ans);
			json_decref(ans);
		}
		if (r)
			rc = r;
	}
	if (all) {
		int r = ctl_print_json(all);
		json_decref(all);
		if (r)
			rc = r;
	}
	return rc;
}

/* Orders an array's objects by up to two string members. */
static const char *sort_k1, *sort_k2;

static int cmp_objs(const void *x, const void *y)
{
	const json_t *a = *(json_t *const *)x, *b = *(json_t *const *)y;
	const char *a1 = jstr(a, sort_k1), *b1 = jstr(b, sort_k1);
	int r = strcmp(a1 ? a1 : "", b1 ? b1 : "");
	if (r || !sort_k2)
		return r;
	a1 = jstr(a, sort_k2), b1 = jstr(b, sort_k2);
	return strcmp(a1 ? a1 : "", b1 ? b1 : "");
}

/* The objects of arr sorted (borrowed pointers; free the array only). NULL when empty. */
static json_t **sorted(const json_t *arr, const char *k1, const char *k2, size_t *n)
{
	json_t **v;
	*n = json_array_size(arr);
	if (!*n || !(v = calloc(*n, sizeof(*v)))) {
		*n = 0;
		return NULL;
	}
	for (size_t i = 0; i < *n; i++)
		v[i] = json_array_get(arr, i);
	sort_k1 = k1, sort_k2 = k2;
	qsort(v, *n, sizeof(*v), cmp_objs);
	return v;
}

/* "a,b,c" from an array of strings into buf. */
static const char *join_strs(const json_t *arr, char *buf, size_t len)
{
	size_t i, off = 0;
	json_t *s;
	buf[0] = '\0';
	json_array_foreach(arr, i, s) {
		const char *v = json_string_value(s);
		if (!v)
			continue;
		int n = snprintf(buf + off, len - off, "%s%s", off ? "," : "", v);
		if (n < 0 || (size_t)n >= len - off)
			break;
		off += (size_t)n;
	}
	return buf;
}

/* A waypoint reference {"name","namespace"} as "name" (or "ns/name" from elsewhere). */
static const char *waypoint_str(const json_t *wp, const char *own_ns, char *buf, size_t len)
{
	const char *name = jstr(wp, "name"), *ns = jstr(wp, "namespace");
	if (!name)
		return "None";
	if (ns && own_ns && strcmp(ns, own_ns) != 0)
		snprintf(buf, len, "%s/%s", ns, name);
	else
		snprintf(buf, len, "%s", name);
	return buf;
}

/* ---- workloads ---- */

static int render_workloads(struct ctl *c, const struct ctl_admin *a, const json_t *ans)
{
	static const struct tbl_col cols[] = {
		{ "NAMESPACE", 9, TBL_KEEP_START, false, 1 }, { "POD-NAME", 16, TBL_KEEP_START, false, 1 },
		{ "ADDRESS", 15, TBL_KEEP_START, false, 2 }, { "NODE", 8, TBL_KEEP_START, false, 1 },
		{ "WAYPOINT", 8, TBL_KEEP_START, false, 0 }, { "PROTOCOL", 8, TBL_KEEP_START, false, 0 },
	};
	struct tbl *t = tbl_new(cols, ARRAY_SIZE(cols));
	size_t n;
	json_t **v = sorted(json_object_get(ans, "workloads"), "namespace", "name", &n);
	(void)a;
	for (size_t i = 0; t && i < n; i++) {
		char addrs[512], wp[256];
		const char *ns = jstr(v[i], "namespace");
		const char *row[] = { ns, jstr(v[i], "name"),
				      join_strs(json_object_get(v[i], "addresses"), addrs, sizeof(addrs)),
				      jstr(v[i], "node"),
				      waypoint_str(json_object_get(v[i], "waypoint"), ns, wp, sizeof(wp)),
				      jstr(v[i], "protocol") };
		tbl_add_or_drop(&t, row);
	}
	free(v);
	return ctl_print_tbl(t, c);
}

int cmd_workloads(struct ctl *c, int argc, char **argv)
{
	int rc = no_options(c, argc, argv);
	return rc ? rc : run_simple(c, "/workloads", "workloads", render_workloads);
}

/* ---- services ---- */

static int render_services(struct ctl *c, const struct ctl_admin *a, const json_t *ans)
{
	static const struct tbl_col cols[] = {
		{ "NAMESPACE", 9, TBL_KEEP_START, false, 0 }, { "SERVICE-NAME", 12, TBL_KEEP_START, false, 0 },
		{ "SERVICE-VIP", 15, TBL_KEEP_START, false, 0 }, { "WAYPOINT", 8, TBL_KEEP_START, false, 0 },
		{ "ENDPOINTS", 9, TBL_KEEP_START, true, 0 },
	};
	struct tbl *t = tbl_new(cols, ARRAY_SIZE(cols));
	size_t n;
	json_t **v = sorted(json_object_get(ans, "services"), "namespace", "name", &n);
	(void)a;
	for (size_t i = 0; t && i < n; i++) {
		char addrs[512], wp[256], eps[24];
		const char *ns = jstr(v[i], "namespace");
		snprintf(eps, sizeof(eps), "%zu", json_array_size(json_object_get(v[i], "endpoints")));
		const char *row[] = { ns, jstr(v[i], "name"),
				      join_strs(json_object_get(v[i], "addresses"), addrs, sizeof(addrs)),
				      waypoint_str(json_object_get(v[i], "waypoint"), ns, wp, sizeof(wp)), eps };
		tbl_add_or_drop(&t, row);
	}
	free(v);
	return ctl_print_tbl(t, c);
}

int cmd_services(struct ctl *c, int argc, char **argv)
{
	int rc = no_options(c, argc, argv);
	return rc ? rc : run_simple(c, "/services", "services", render_services);
}

/* ---- certificates ---- */

static int render_certificates(struct ctl *c, const struct ctl_admin *a, const json_t *ans)
{
	static const struct tbl_col cols[] = {
		{ "IDENTITY", 24, TBL_KEEP_END, false, 1 }, { "SERIAL", 10, TBL_KEEP_START, false, 2 },
		{ "NOT-AFTER", 20, TBL_KEEP_START, false, 0 }, { "STATE", 8, TBL_KEEP_START, false, 0 },
	};
	struct tbl *t = tbl_new(cols, ARRAY_SIZE(cols));
	size_t n;
	json_t **v = sorted(json_object_get(ans, "certificates"), "identity", "serial", &n);
	(void)a;
	for (size_t i = 0; t && i < n; i++) {
		char na[32] = "-";
		if (jint(v[i], "not_after", 0))	/* 0: none yet (pending) */
			fmt_utc(jint(v[i], "not_after", 0), na, sizeof(na));
		const char *serial = jstr(v[i], "serial");
		const char *row[] = { jstr(v[i], "identity"), serial && *serial ? serial : "-", na,
				      jstr(v[i], "state") };
		tbl_add_or_drop(&t, row);
	}
	free(v);
	int rc = ctl_print_tbl(t, c);
	/* Under the table, not in it (full width): why certificates are missing or not renewed. */
	const json_t *ca = json_object_get(ans, "ca");
	const char *err = jstr(ca, "last_error");
	if (!rc && (jint(ca, "failing", 0) || jint(ca, "without_certificate", 0)) && err && *err)
		printf("\nCA %s: %lld failing, %lld without a certificate; last error: %s\n",
		       jstr(ca, "backend") ? jstr(ca, "backend") : "?", jint(ca, "failing", 0),
		       jint(ca, "without_certificate", 0), err);
	return rc;
}

int cmd_certificates(struct ctl *c, int argc, char **argv)
{
	int rc = no_options(c, argc, argv);
	return rc ? rc : run_simple(c, "/certificates", "certificates", render_certificates);
}

/* ---- connections ---- */

static int render_connections(struct ctl *c, const json_t *conns, const json_t *hbone)
{
	static const struct tbl_col cols[] = {
		{ "DIRECTION", 8, TBL_KEEP_START, false, 0 }, { "SRC", 12, TBL_KEEP_START, false, 1 },
		{ "DST", 12, TBL_KEEP_END, false, 1 }, { "TARGET", 10, TBL_KEEP_END, false, 2 },
		{ "IDENTITY", 12, TBL_KEEP_END, false, 3 }, { "BYTES-SENT", 6, TBL_KEEP_START, true, 0 },
		{ "BYTES-RECV", 6, TBL_KEEP_START, true, 0 }, { "AGE", 5, TBL_KEEP_START, true, 0 },
	};
	static const struct tbl_col hcols[] = {
		{ "ROLE", 6, TBL_KEEP_START, false, 0 }, { "PEER", 12, TBL_KEEP_END, false, 1 },
		{ "PEER-IDENTITY", 16, TBL_KEEP_END, false, 2 }, { "STREAMS", 7, TBL_KEEP_START, true, 0 },
		{ "AGE", 5, TBL_KEEP_START, true, 0 }, { "STATE", 5, TBL_KEEP_START, false, 0 },
	};
	struct tbl *t = tbl_new(cols, ARRAY_SIZE(cols));
	size_t i;
	json_t *x;
	int rc;

	json_array_foreach(json_object_get(conns, "connections"), i, x) {
		const char *dir = jstr(x, "direction");
		bool in = dir && strcmp(dir, "inbound") == 0;
		const json_t *peer = json_object_get(x, in ? "source" : "destination");
		char sent[32], recv[32], age[32];
		fmt_bytes(jint(x, "bytes_sent", 0), sent, sizeof(sent));
		fmt_bytes(jint(x, "bytes_received", 0), recv, sizeof(recv));
		fmt_age_ms(jint(x, "age_ms", -1), age, sizeof(age));
		const char *row[] = { dir, jstr(x, "src"), jstr(x, "dst"), jstr(x, "target"),
				      jstr(peer, "identity"), sent, recv, age };
		tbl_add_or_drop(&t, row);
	}
	if ((rc = ctl_print_tbl(t, c)) != 0 || !hbone)
		return rc;
	printf("\nHBONE TUNNELS\n");
	t = tbl_new(hcols, ARRAY_SIZE(hcols));
	json_array_foreach(json_object_get(hbone, "connections"), i, x) {
		char streams[24], age[32];
		snprintf(streams, sizeof(streams), "%lld", jint(x, "streams", 0));
		fmt_age_ms(jint(x, "age_ms", -1), age, sizeof(age));
		const char *row[] = { jstr(x, "role"), jstr(x, "peer"), jstr(x, "peer_identity"), streams,
				      age, jstr(x, "state") };
		tbl_add_or_drop(&t, row);
	}
	return ctl_print_tbl(t, c);
}

/* One snapshot from every agent. */
static int connections_once(struct ctl *c)
{
	json_t *all = NULL;
	int rc = 0;

	if (c->format == CTL_FMT_JSON && c->nadmins > 1 && !(all = json_object())) {
		ctl_err("out of memory");
		return CTL_EXIT_AGENT;
	}
	for (int i = 0; i < c->nadmins; i++) {
		const struct ctl_admin *a = &c->admins[i];
		json_t *conns = NULL, *hbone = NULL;
		int r = ctl_fetch(c, a, "GET", "/connections", false, &conns);
		if (!r && !json_is_array(json_object_get(conns, "connections")))
			r = ctl_bad_answer(a, "/connections", "no \"connections\" array");
		/* 404: this agent runs without HBONE (or predates /hbone). */
		if (!r)
			r = ctl_fetch(c, a, "GET", "/hbone", true, &hbone);
		if (!r && hbone && !json_is_array(json_object_get(hbone, "connections")))
			r = ctl_bad_answer(a, "/hbone", "no \"connections\" array");
		if (r) {
			rc = r;
		} else if (c->format == CTL_FMT_JSON) {
			json_t *h = json_object_get(hbone, "connections");
			json_object_set(conns, "hbone", h ? h : json_null());
			if (all) {
				json_object_set(all, a->addr, conns);
			} else if ((r = ctl_print_json(conns)) != 0)
				rc = r;
		} else {
			agent_heading(c, i);
			if ((r = render_connections(c, conns, hbone)) != 0)
				rc = r;
		}
		json_decref(conns);
		json_decref(hbone);
	}
	if (all) {
		int r = ctl_print_json(all);
		json_decref(all);
		if (r)
			rc = r;
	}
	return rc;
}

static volatile bool watch_stop;

static void on_sigint(int sig)
{
	(void)sig;
	watch_stop = true;
}

static int watch(struct ctl *c, double interval)
{
	struct sigaction sa = { .sa_handler = on_sigint };
	struct sigaction old_int, old_term;

	sigemptyset(&sa.sa_mask);	/* no SA_RESTART: the sleep ends at once */
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	c->cancel = &watch_stop;
	while (!watch_stop) {
		char now[32];
		struct timespec ts;
		fmt_utc((long long)time(NULL), now, sizeof(now));
		printf("\033[H\033[2J");	/* home, clear screen */
		printf("Every %gs: ambitctl connections    %s    (Ctrl-C to stop)\n\n", interval, now);
		fflush(stdout);
		connections_once(c);
		fflush(stdout);
		ts.tv_sec = (time_t)interval;
		ts.tv_nsec = (long)((interval - (double)ts.tv_sec) * 1e9);
		while (!watch_stop && nanosleep(&ts, &ts) == -1 && errno == EINTR)
			;
	}
	c->cancel = NULL;
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	putchar('\n');
	return 0;
}

int cmd_connections(struct ctl *c, int argc, char **argv)
{
	bool watch_on = false, have_interval = false;
	double interval = 2;
	int rc;

	for (int i = 1; i < argc; i++) {
		const char *v;
		int r = ctl_common_opt(c, argv[0], argc, argv, &i);
		if (r < 0)
			return -r;
		if (r > 0)
			continue;
		if (strcmp(argv[i], "--watch") == 0 || strcmp(argv[i], "-w") == 0) {
			watch_on = true;
			continue;
		}
		r = ctl_opt_value(argv, argc, &i, "--interval", 0, &v);
		if (r < 0)
			return CTL_EXIT_USAGE;
		if (r > 0) {
			if (ctl_parse_seconds(v, &interval) || interval < 0.2 || interval > 3600)
				return ctl_usage_err(argv[0], "--interval '%s': give seconds from 0.2 to 3600", v);
			have_interval = true;
			continue;
		}
		return ctl_usage_err(argv[0], "connections: unexpected argument '%s'", argv[i]);
	}
	if (have_interval && !watch_on)
		return ctl_usage_err(argv[0], "--interval goes with --watch");
	if ((rc = ctl_ready(c)) != 0)
		return rc;
	return watch_on ? watch(c, interval) : connections_once(c);
}

/* ---- bpf ---- */

static void prog_str(const json_t *progs, char *buf, size_t len)
{
	static const char *const dirs[] = { "ingress", "egress" };
	size_t off = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		const json_t *p = json_object_get(progs, dirs[i]);
		int n;
		if (!json_is_object(p))
			continue;
		n = snprintf(buf + off, len - off, "%s%s:%lld", off ? "," : "", dirs[i], jint(p, "id", 0));
		if (n < 0 || (size_t)n >= len - off)
			break;
		off += (size_t)n;
	}
}

static int render_bpf(struct ctl *c, const struct ctl_admin *a, const json_t *ans)
{
	static const struct tbl_col cols[] = {
		{ "IFACE", 6, TBL_KEEP_START, false, 0 }, { "IFINDEX", 7, TBL_KEEP_START, true, 0 },
		{ "POD", 12, TBL_KEEP_START, false, 0 }, { "IP", 15, TBL_KEEP_START, false, 0 },
		{ "PROGRAMS", 10, TBL_KEEP_START, false, 0 },
	};
	static const struct tbl_col ccols[] = {
		{ "COUNTER", 10, TBL_KEEP_START, false, 0 }, { "PACKETS", 7, TBL_KEEP_START, true, 0 },
	};
	struct tbl *t;
	char progs[128];
	size_t i;
	json_t *x;
	int rc;

	(void)a;
	if (!json_is_true(json_object_get(ans, "enabled"))) {
		printf("eBPF capture is not enabled on this agent (configuration key redirect.enabled).\n");
		return 0;
	}
	prog_str(json_object_get(ans, "programs"), progs, sizeof(progs));
	t = tbl_new(cols, ARRAY_SIZE(cols));
	json_array_foreach(json_object_get(ans, "interfaces"), i, x) {
		char idx[24];
		snprintf(idx, sizeof(idx), "%lld", jint(x, "ifindex", 0));
		const char *row[] = { jstr(x, "ifname"), idx, jstr(x, "pod_uid"), jstr(x, "ip"), progs };
		tbl_add_or_drop(&t, row);
	}
	json_array_foreach(json_object_get(ans, "pending"), i, x) {
		const char *row[] = { "-", "-", jstr(x, "pod_uid"), jstr(x, "ip"), "(no interface yet)" };
		tbl_add_or_drop(&t, row);
	}
	if ((rc = ctl_print_tbl(t, c)) != 0)
		return rc;
	const json_t *counters = json_object_get(ans, "counters");
	if (!json_is_object(counters) || !json_object_size(counters))
		return 0;
	putchar('\n');
	t = tbl_new(ccols, ARRAY_SIZE(ccols));
	const char *key;
	json_object_foreach((json_t *)counters, key, x) {
		char v[24];
		snprintf(v, sizeof(v), "%lld", json_is_integer(x) ? (long long)json_integer_value(x) : 0);
		const char *row[] = { key, v };
		tbl_add_or_drop(&t, row);
	}
	return ctl_print_tbl(t, c);
}

int cmd_bpf(struct ctl *c, int argc, char **argv)
{
	int rc = no_options(c, argc, argv);
	return rc ? rc : run_simple(c, "/bpf", NULL, render_bpf);
}

/* ---- config ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Adds one KEY VALUE row per leaf of j (objects descend with dotted keys, sorted). */
static int flatten(struct tbl *t, const char *prefix, const json_t *j)
{
	char key[512];
	int rc = 0;

	if (json_is_object(j) && json_object_size(j)) {
		size_t n = json_object_size(j), k = 0;
		const char **keys = calloc(n, sizeof(*keys));
		const char *kk;
		json_t *v;
		if (!keys)
			return -ENOMEM;
		json_object_foreach((json_t *)j, kk, v)
			keys[k++] = kk;
		qsort(keys, n, sizeof(*keys), cmp_str);
		for (size_t i = 0; !rc && i < n; i++) {
			snprintf(key, sizeof(key), "%s%s%s", prefix, prefix[0] ? "." : "", keys[i]);
			rc = flatten(t, key, json_object_get(j, keys[i]));
		}
		free(keys);
		return rc;
	}
	char *val = json_is_string(j) ? strdup(json_string_value(j))
				       : json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	if (!val)
		return -ENOMEM;
	const char *row[] = { prefix, json_is_string(j) && !val[0] ? "\"\"" : val };
	rc = tbl_add(t, row);
	free(val);
	return rc;
}

static int render_config(struct ctl *c, const struct ctl_admin *a, const json_t *ans)
{
	static const struct tbl_col cols[] = {
		{ "KEY", 24, TBL_KEEP_START, false, 0 }, { "VALUE", 20, TBL_KEEP_START, false, 1 },
	};
	struct tbl *t = tbl_new(cols, ARRAY_SIZE(cols));
	(void)a;
	if (t && flatten(t, "", ans)) {
		tbl_free(t);
		t = NULL;
	}
	return ctl_print_tbl(t, c);
}

int cmd_config(struct ctl *c, int argc, char **argv)
{
	int rc = no_options(c, argc, argv);
	return rc ? rc : run_simple(c, "/config_dump", NULL, render_config);
}

/* ---- policies ---- */

/* The ACTION cell: an AuthorizationPolicy's action, a PeerAuthentication's mode (with "+ports"
 * when portLevelMtls is set), "(dry-run)" appended. */
static void policy_action(const json_t *p, char *buf, size_t len)
{
	const json_t *mtls = json_object_get(p, "mtls");
	const char *act = jstr(p, "action");
	const json_t *ports = json_is_object(mtls) ? json_object_get(mtls, "portLevelMtls") : NULL;

	if (!act && json_is_object(mtls))
		act = jstr(mtls, "mode");
	else if (!act && json_is_string(mtls))
		act = json_string_value(mtls);
	snprintf(buf, len, "%s%s%s", act ? act : "-",
		 json_object_size(ports) || json_array_size(ports) ? "+ports" : "",
		 json_is_true(json_object_get(p, "dry_run")) ? " (dry-run)" : "");
}

static int render_policies(struct ctl *c, const struct ctl_admin *a, const json_t *ans)
{
	static const struct tbl_col cols[] = {
		{ "NAMESPACE", 9, TBL_KEEP_START, false, 1 }, { "NAME", 10, TBL_KEEP_START, false, 1 },
		{ "KIND", 8, TBL_KEEP_START, false, 2 }, { "ACTION", 6, TBL_KEEP_START, false, 0 },
		{ "SCOPE", 5, TBL_KEEP_START, false, 0 }, { "STATE", 7, TBL_KEEP_START, false, 0 },
		{ "WORKLOADS", 4, TBL_KEEP_START, true, 0 }, { "NOTES", 10, TBL_KEEP_START, false, 3 },
	};
	struct tbl *t = tbl_new(cols, ARRAY_SIZE(cols));
	size_t n;
	json_t **v = sorted(json_object_get(ans, "policies"), "namespace", "name", &n);
	(void)a;
	for (size_t i = 0; t && i < n; i++) {
		const json_t *diags = json_object_get(v[i], "diagnostics");
		const json_t *d0 = json_array_get(diags, 0);
		char act[64], wl[24], notes[600] = "";
		policy_action(v[i], act, sizeof(act));
		snprintf(wl, sizeof(wl), "%lld", jint(v[i], "workloads_total", 0));
		if (d0)
			snprintf(notes, sizeof(notes), "%s%s%s%s", jstr(d0, "path") ? jstr(d0, "path") : "",
				 jstr(d0, "path") && *jstr(d0, "path") ? ": " : "",
				 jstr(d0, "message") ? jstr(d0, "message") : "",
				 json_array_size(diags) > 1 ? " (+more: -o json)" : "");
		const char *kind = jstr(v[i], "kind");
		const char *row[] = { jstr(v[i], "namespace"), jstr(v[i], "name"),
				      kind && !strcmp(kind, "AuthorizationPolicy") ? "authz"
				      : kind && !strcmp(kind, "PeerAuthentication") ? "peerauthn" : kind,
				      act, jstr(v[i], "scope"), jstr(v[i], "state"), wl,
				      notes[0] ? notes : NULL };
		tbl_add_or_drop(&t, row);
	}
	free(v);
	return ctl_print_tbl(t, c);
}

/* Appends s to out percent-encoded (RFC 3986 unreserved, '/' and ':' kept). */
static void query_escape(const char *s, char *out, size_t len)
{
	size_t o = 0;
	for (; *s && o + 4 < len; s++) {
		unsigned char ch = (unsigned char)*s;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    strchr("-._~/:", ch))
			out[o++] = (char)ch;
		else
			o += (size_t)snprintf(out + o, len - o, "%%%02X", ch);
	}
	out[o] = '\0';
}

static int policies_check(struct ctl *c, int argc, char **argv)
{
	const char *from = NULL, *to = NULL;
	char ef[1600], et[1600], path[3300];
	int rc;

	const struct ctl_valopt opts[] = { { "--from", 0, &from }, { "--to", 0, &to } };
	if ((rc = ctl_parse_opts(c, argc, argv, 2, "policies check", opts, ARRAY_SIZE(opts))))
		return rc;
	if (!from || !to)
		return ctl_usage_err("policies", "policies check: --from ADDR|NS/NAME and --to "
				     "NS/NAME:PORT are required");
	if (strlen(from) > 500 || strlen(to) > 500)
		return ctl_usage_err("policies", "policies check: --from or --to is too long");
	if ((rc = ctl_ready(c)) != 0)
		return rc;
	query_escape(from, ef, sizeof(ef));
	query_escape(to, et, sizeof(et));
	snprintf(path, sizeof(path), "/policies/check?from=%s&to=%s", ef, et);
	return run_simple(c, path, NULL, render_config);
}

int cmd_policies(struct ctl *c, int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "check") == 0)
		return policies_check(c, argc, argv);
	int rc = no_options(c, argc, argv);
	return rc ? rc : run_simple(c, "/policies", "policies", render_policies);
}

/* ---- log ---- */

static const char *const log_levels[] = { "error", "warn", "info", "debug", "trace" };

int cmd_log(struct ctl *c, int argc, char **argv)
{
	const char *level = NULL;
	char path[64];
	int rc = 0;

	for (int i = 1; i < argc; i++) {
		int r = ctl_common_opt(c, argv[0], argc, argv, &i);
		if (r < 0)
			return -r;
		if (r > 0)
			continue;
		if (argv[i][0] == '-' || level)
			return ctl_usage_err(argv[0], "log: unexpected argument '%s'", argv[i]);
		level = argv[i];
	}
	if (level) {
		size_t k;
		for (k = 0; k < ARRAY_SIZE(log_levels); k++)
			if (strcasecmp(level, log_levels[k]) == 0)
				break;
		if (strcasecmp(level, "warning") == 0)
			k = 1;
		if (k == ARRAY_SIZE(log_levels))
			return ctl_usage_err(argv[0], "log level '%s' is not one of error, warn, info, debug, trace",
					     level);
		level = log_levels[k];
		snprintf(path, sizeof(path), "/logging?level=%s", level);
	}
	if ((rc = ctl_ready(c)) != 0)
		return rc;
	for (int i = 0; i < c->nadmins; i++) {
		const struct ctl_admin *a = &c->admins[i];
		json_t *before = NULL, *after = NULL;
		int r = ctl_fetch(c, a, "GET", "/logging", false, &before);
		if (!r && !jstr(before, "level"))
			r = ctl_bad_answer(a, "/logging", "no \"level\"");
		if (!r && level) {
			r = ctl_fetch(c, a, "POST", path, false, &after);
			if (!r && !jstr(after, "level"))
				r = ctl_bad_answer(a, path, "no \"level\"");
		}
		if (!r) {
			const json_t *now = after ? after : before;
			if (c->format == CTL_FMT_JSON) {
				if (c->nadmins > 1)
					json_object_set_new((json_t *)now, "admin", json_string(a->addr));
				r = ctl_print_json(now);
			} else if (after) {
				printf("%s%s%slog level: %s (was %s)\n", c->nadmins > 1 ? a->addr : "",
				       c->nadmins > 1 ? ": " : "", "", jstr(after, "level"), jstr(before, "level"));
			} else {
				printf("%s%slog level: %s\n", c->nadmins > 1 ? a->addr : "",
				       c->nadmins > 1 ? ": " : "", jstr(before, "level"));
			}
		}
		if (r)
			rc = r;
		json_decref(before);
		json_decref(after);
	}
	return rc;
}

/* ---- version ---- */

int cmd_version(struct ctl *c, int argc, char **argv)
{
	bool client_only = false;
	json_t *out = NULL, *agents = NULL;
	int rc = 0;

	for (int i = 1; i < argc; i++) {
		int r = ctl_common_opt(c, argv[0], argc, argv, &i);
		if (r < 0)
			return -r;
		if (r > 0)
			continue;
		if (strcmp(argv[i], "--client") == 0 || strcmp(argv[i], "--short") == 0) {
			client_only = true;
			continue;
		}
		return ctl_usage_err(argv[0], "version: unexpected argument '%s'", argv[i]);
	}
	if (c->format == CTL_FMT_JSON) {
		out = json_pack("{s:{s:s,s:s}}", "client", "version", AMBIT_VERSION, "git_rev", AMBIT_GIT_REV);
		agents = json_array();
		if (!out || !agents) {
			json_decref(out);
			json_decref(agents);
			ctl_err("out of memory");
			return CTL_EXIT_AGENT;
		}
	} else {
		printf("ambitctl %s (%s)\n", AMBIT_VERSION, AMBIT_GIT_REV);
	}
	if (!client_only && (rc = ctl_ready(c)) == 0) {
		for (int i = 0; i < c->nadmins; i++) {
			const struct ctl_admin *a = &c->admins[i];
			json_t *st;
			if (ctl_fetch(c, a, "GET", "/stats", false, &st)) {
				rc = CTL_EXIT_AGENT;
				continue;
			}
			if (agents) {
				json_object_set_new(st, "admin", json_string(a->addr));
				json_array_append_new(agents, st);
				continue;
			}
			char up[32], rss[32], heap[32];
			fmt_age_ms(jint(st, "uptime_ms", -1), up, sizeof(up));
			fmt_bytes(jint(st, "rss_kb", 0) * 1024, rss, sizeof(rss));
			fmt_bytes(jint(st, "heap_in_use_kb", 0) * 1024, heap, sizeof(heap));
			printf("ambitd %s on node %s at %s: up %s, %lld connections, RSS %s, heap %s, "
			       "CPU %.2f s user %.2f s system\n",
			       jstr(st, "version") ? jstr(st, "version") : "?",
			       jstr(st, "node") && jstr(st, "node")[0] ? jstr(st, "node") : "?", a->addr, up,
			       jint(st, "connections", 0), rss, heap, jint(st, "cpu_user_ms", 0) / 1000.0,
			       jint(st, "cpu_system_ms", 0) / 1000.0);
			json_decref(st);
		}
	}
	if (out) {
		if (!client_only)
			json_object_set(out, "agents", agents);
		int r = ctl_print_json(out);
		if (r)
			rc = r;
	}
	json_decref(agents);
	json_decref(out);
	return rc;
}

/* ---- telemetry ---- */

/* "cluster_name=homelab,node=$NODE_NAME,ua=<user-agent>" from custom_tags. */
static const char *tags_str(const json_t *tags, char *buf, size_t len)
{
	const char *k;
	json_t *v;
	size_t n = 0;

	buf[0] = '\0';
	json_object_foreach((json_t *)tags, k, v) {
		const char *lit = jstr(v, "literal"), *env = jstr(v, "environment"), *hdr = jstr(v, "header");
		int w = snprintf(buf + n, len - n, "%s%s=%s%s%s", n ? "," : "", k,
				 env ? "$" : hdr ? "<" : "", lit ? lit : env ? env : hdr ? hdr : "?",
				 hdr ? ">" : "");
		if (w < 0 || (size_t)w >= len - n)
			break;
		n += (size_t)w;
	}
	return n ? buf : "-";
}

/* The sources of a direction's fields, collapsed: "mesh_config" or "provider:mesh_config,..." */
static const char *from_str(const json_t *from, char *buf, size_t len)
{
	static const char *const keys[] = { "provider", "sampling", "custom_tags", "disabled" };
	size_t n = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		const char *f = jstr(from, keys[i]);
		int w;
		if (!f)
			continue;
		w = snprintf(buf + n, len - n, "%s%s:%s", n ? " " : "", keys[i], f);
		if (w < 0 || (size_t)w >= len - n)
			break;
		n += (size_t)w;
	}
	return n ? buf : "-";
}

static int render_telemetry(struct ctl *c, const struct ctl_admin *a, const json_t *ans)
{
	static const struct tbl_col cols[] = {
		/* namespace/pod fits whole in 80 columns; tags and sources give way first */
		{ "WORKLOAD", 24, TBL_KEEP_START, false, 0 }, { "DIRECTION", 9, TBL_KEEP_START, false, 0 },
		{ "PROVIDER", 8, TBL_KEEP_START, false, 0 }, { "SAMPLING", 8, TBL_KEEP_START, true, 0 },
		{ "REPORTING", 9, TBL_KEEP_START, false, 0 }, { "TAGS", 6, TBL_KEEP_START, false, 2 },
		{ "FROM", 6, TBL_KEEP_START, false, 1 },
	};
	struct tbl *t = tbl_new(cols, ARRAY_SIZE(cols));
	size_t n, i;
	json_t **v = sorted(json_object_get(ans, "workloads"), "workload", NULL, &n), *p;
	int rc;
	(void)a;
	for (i = 0; t && i < n; i++) {
		for (int d = 0; d < 2; d++) {
			const json_t *m = json_object_get(v[i], d ? "inbound" : "outbound");
			char smp[24], tags[512], from[512];
			json_t *s = json_object_get(m, "sampling");
			snprintf(smp, sizeof(smp), "%.2f%%", json_number_value(s));
			const char *row[] = { jstr(v[i], "workload"), d ? "inbound" : "outbound",
					      jstr(m, "provider") ? jstr(m, "provider") : "-", smp,
					      json_is_true(json_object_get(m, "disabled")) ? "off" : "on",
					      tags_str(json_object_get(m, "custom_tags"), tags, sizeof(tags)),
					      from_str(json_object_get(m, "from"), from, sizeof(from)) };
			tbl_add_or_drop(&t, row);
		}
	}
	free(v);
	rc = ctl_print_tbl(t, c);
	if (json_array_size(json_object_get(ans, "providers")) ||
	    json_array_size(json_object_get(ans, "diagnostics")))
		putchar('\n');
	json_array_foreach(json_object_get(ans, "providers"), i, p)
		printf("provider %s: %s %s%s, exported %lld, dropped %lld, failed %lld, queued %lld\n",
		       jstr(p, "name"), jstr(p, "protocol"), jstr(p, "endpoint"),
		       json_is_true(json_object_get(p, "in_use")) ? "" : " (not in use)",
		       jint(p, "exported", 0), jint(p, "dropped", 0), jint(p, "failed", 0),
		       jint(p, "queued", 0));
	json_array_foreach(json_object_get(ans, "diagnostics"), i, p)
		printf("warning: %s\n", json_string_value(p));
	return rc;
}

int cmd_telemetry(struct ctl *c, int argc, char **argv)
{
	const char *wl = NULL;
	char path[600];

	const struct ctl_valopt opts[] = { { "--workload", 'w', &wl } };
	int rc = ctl_parse_opts(c, argc, argv, 1, "telemetry", opts, ARRAY_SIZE(opts));
	if (rc)
		return rc;
	if (wl) {
		const char *slash = strchr(wl, '/');
		if (!slash || slash == wl || !slash[1] || strchr(slash + 1, '/') ||
		    strlen(wl) > 500 || strpbrk(wl, "&?#% "))
			return ctl_usage_err(argv[0], "--workload '%s' is not NAMESPACE/NAME", wl);
	}
	snprintf(path, sizeof(path), "/telemetry%s%s", wl ? "?workload=" : "", wl ? wl : "");
	rc = ctl_ready(c);
	return rc ? rc : run_simple(c, path, "workloads", render_telemetry);
}
