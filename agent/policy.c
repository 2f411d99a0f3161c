// SPDX-License-Identifier: Apache-2.0
/* The node agent's L4 authorization: compiles each published model's Istio objects
 * (istio/authz) on the publishing thread, off the data path, swaps the set in on the loop and
 * re-checks the open inbound connections there; the proxy (plaintext) and the HBONE server
 * call policy_check_inbound for each new inbound connection. */
#include "agent/policy.h"
#include "agent/metrics.h"
#include "common/log.h"
#include "common/util.h"
#include "istio/authz.h"
#include "istio/authzset.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
	struct loop *loop;
	char *trust_domain;
	struct authz_latest sets;		/* the newest compiled set, for the loop to take */
	/* Loop thread only: the set in force. */
	struct authz_set *cur;
	struct metrics_counter_vec *denied;
	uint64_t rechecks, recheck_closed;
} P = {
	.sets = AUTHZ_LATEST_INIT,
};

static const char *const denied_labels[] = { "policy", "reason", "dry_run" };

/* Compiles m's objects with the newest set as prev and makes the result the newest, unless a
 * newer model's set got there first. Any thread. */
static void compile_model(const struct model *m)
{
	struct authz_set_stats st;
	int err = authz_latest_compile(&P.sets, m->resources, m->generation, &st);

	if (err == -ENOMEM)
		pr_warn("policies: out of memory compiling model %" PRIu64 "; the previous policies "
			"stay in force", m->generation);
	else if (!err)
		pr_debug("policies: model %" PRIu64 ": %d AuthorizationPolicy, %d PeerAuthentication "
			 "(%d refused, %d converted, %d unsupported, %d dry-run)", m->generation,
			 st.authorization_policies, st.peer_authentications, st.refused,
			 st.converted, st.unsupported, st.dry_run);
}

static void fill_facts(struct authz_workload *w, struct authz_conn *ac,
		       const struct model_workload *dst, const struct sockaddr_storage *src,
		       const struct sockaddr_storage *target, const char *identity)
{
	*w = (struct authz_workload){ .namespace = dst->namespace, .name = dst->name,
				      .labels = dst->labels, .nlabels = dst->nlabels };
	*ac = (struct authz_conn){ .src = src, .dst = target, .dst_port = sockaddr_port(target),
				   .src_identity = identity, .dst_workload = w };
}

/* "NS/NAME" of a policy ref, or NULL when it names none. Owned by the caller. */
static char *policy_name(const struct authz_policy_ref *p)
{
	char *out;
	if (!p->name || asprintf(&out, "%s/%s", p->namespace ? p->namespace : "", p->name) < 0)
		return NULL;
	return out;
}

static void count_denial(const struct authz_policy_ref *p, enum authz_reason reason, bool dry_run)
{
	char *name = policy_name(p);
	const char *v[] = { name ? name : "-", authz_reason_str(reason), dry_run ? "true" : "false" };
	if (P.denied && metrics_counter_vec_add(P.denied, v, 1))
		pr_warn_rl("policies: cannot count a denial: out of memory");
	free(name);
}

/* The dry-run verdict of r as a result of its own. */
static void dry_run_result(const struct authz_result *r, struct authz_result *d)
{
	*d = *r;
	d->verdict = r->dry_run_verdict;
	d->reason = r->dry_run_reason;
	d->policy = r->dry_run_policy;
}

/* Records what dry-run policies would have done in ci (span attribute, access log), logs
 * and counts a would-be denial. `fresh`: a new connection (a re-check counts only a change). */
static void report_dry_run(struct conn *c, const struct authz_result *r, bool fresh)
{
	static struct log_ratelimit rl = LOG_RATELIMIT_INIT(5000, 10);
	struct conn_info *ci = conn_info(c);
	struct authz_result d;
	char msg[600], src[ADDR_STR_LEN], dst[ADDR_STR_LEN], *s;

	if (!r->dry_run_applied)
		return;
	dry_run_result(r, &d);
	authz_result_str(&d, msg, sizeof(msg));
	if (asprintf(&s, "%s: %s", authz_verdict_str(d.verdict), msg) < 0)
		return;
	bool changed = !ci->authz_dry_run || strcmp(ci->authz_dry_run, s) != 0;
	free(ci->authz_dry_run);
	ci->authz_dry_run = s;
	if (d.verdict != AUTHZ_DENY || (!fresh && !changed))
		return;
	count_denial(&d.policy, d.reason, true);
	if (log_ratelimit_ok(&rl))
		pr_info("dry-run: connection %" PRIu64 " from %s to %s would be %s (not enforced)",
			conn_id(c), sockaddr_str(&ci->src, src, sizeof(src)),
			sockaddr_str(&ci->target, dst, sizeof(dst)), msg);
}

/* Evaluates c against the set in force; on deny fills reason and ci->authz_policy. */
static int check(struct conn *c, const struct model_workload *dst, const char *identity,
		 bool fresh, char *reason, size_t reasonlen)
{
	struct conn_info *ci = conn_info(c);
	struct authz_workload w;
	struct authz_conn ac;
	struct authz_result r;

	if (!P.cur)
		return 0;
	fill_facts(&w, &ac, dst, &ci->src, &ci->target, identity);
	authz_check_conn(P.cur, &ac, &r);
	report_dry_run(c, &r, fresh);
	if (r.verdict != AUTHZ_DENY)
		return 0;
	authz_result_str(&r, reason, reasonlen);
	free(ci->authz_policy);
	ci->authz_policy = policy_name(&r.policy);
	count_denial(&r.policy, r.reason, false);
	return -EACCES;
}

int policy_check_inbound(struct conn *c, const struct model *m, const struct model_workload *dst,
			 const char *peer_identity, char *reason, size_t reasonlen)
{
	int err;
	(void)m;
	err = check(c, dst, peer_identity, true, reason, reasonlen);
	if (err)
		conn_info(c)->denied = true;
	return err;
}

/* ---- re-checking open connections ---- */

static void recheck_one(struct conn *c, void *arg)
{
	const struct model *m = arg;
	const struct conn_info *ci = conn_info(c);
	const struct model_workload *dst;
	char reason[600], msg[700], src[ADDR_STR_LEN], tgt[ADDR_STR_LEN];

	if (ci->kind == CONN_OUTBOUND || conn_state(c) == CONN_ST_CLOSED)
		return;
	/* Only what the agent still serves: a destination that left the node or the mesh is
	 * not this agent's to judge. */
	dst = model_workload_by_ip(m, &ci->target);
	if (!dst || !dst->enrolled)
		return;
	P.rechecks++;
	/* HBONE: the source principal is the verified peer identity (mesh.c); plaintext has
	 * none, whatever workload owns the source address. */
	if (!check(c, dst, ci->kind == CONN_INBOUND_HBONE ? ci->source.principal : NULL, false,
		   reason, sizeof(reason)))
		return;
	P.recheck_closed++;
	snprintf(msg, sizeof(msg), "closed by the policy re-check: %s", reason);
	pr_info("connection %" PRIu64 " from %s to %s %s", conn_id(c),
		sockaddr_str(&ci->src, src, sizeof(src)), sockaddr_str(&ci->target, tgt, sizeof(tgt)),
		msg);
	conn_abort(c, CONN_DOWN, -EACCES, CONN_FLAG_DENIED, msg);
}

/* Loop: takes the newest set and re-checks every open inbound connection against it and the
 * current model (a policy or a workload changed). */
static void apply_task(struct loop *l, void *arg)
{
	struct authz_set *set;
	struct model *m;
	(void)l, (void)arg;

	set = authz_latest_get(&P.sets);
	if (set) {
		authz_set_unref(P.cur);
		P.cur = set;
	}
	m = model_current();
	conn_foreach(recheck_one, m);
	model_unref(m);
}

static void on_model(struct model *m, void *arg)
{
	(void)arg;
	compile_model(m);
	if (authz_latest_active(&P.sets) && loop_post(P.loop, apply_task, NULL))
		pr_warn("policies: cannot queue the new set (out of memory); it applies with the "
			"next model");
}

static double stat_of(void *arg)
{
	struct authz_set_stats st = { 0 };
	if (P.cur)
		authz_set_stats(P.cur, &st);
	switch ((int)(intptr_t)arg) {
	case 0: return st.authorization_policies;
	case 1: return st.peer_authentications;
	case 2: return st.refused;
	default: return (double)P.recheck_closed;
	}
}

int policy_init(const struct policy_opts *opts)
{
	struct model *m;
	int err;

	P.loop = opts->loop;
	P.trust_domain = strdup(opts->trust_domain ? opts->trust_domain : "cluster.local");
	if (!P.trust_domain)
		return -ENOMEM;
	P.denied = metrics_counter_vec_new("ambit_authorization_denied_total",
		"Inbound connections denied by L4 authorization, per deciding policy (NS/NAME, \"-\" "
		"when no ALLOW policy matched; dry_run=\"true\": would have been denied, not "
		"enforced; past its series bound, \"overflow\")",
		denied_labels, (int)ARRAY_SIZE(denied_labels), POLICY_METRIC_MAX_SERIES);
	if (!P.denied ||
	    metrics_register("ambit_authorization_policies", "AuthorizationPolicy objects in force",
			     "gauge", stat_of, (void *)0) ||
	    metrics_register("ambit_peer_authentications", "PeerAuthentication objects in force",
			     "gauge", stat_of, (void *)1) ||
	    metrics_register("ambit_policies_refused", "Istio policy objects refused (a version "
			     "that does not compile; a previous good one stays in force)", "gauge",
			     stat_of, (void *)2) ||
	    metrics_register("ambit_authorization_recheck_closed_total",
			     "Open inbound connections closed because a policy or workload change "
			     "denies them now", "counter", stat_of, (void *)3)) {
		pr_err("policies: cannot register the metrics");
		return -ENOMEM;
	}
	/* Subscribe first: a model published meanwhile is compiled by the listener, and the
	 * generation check keeps the newest. */
	err = authz_latest_start(&P.sets, opts->root_namespace);
	if (err)
		return err;
	err = model_subscribe(on_model, NULL);
	if (err) {
		pr_err("policies: cannot subscribe to the model: %s", strerror(-err));
		return err;
	}
	m = model_current();
	compile_model(m);
	model_unref(m);
	P.cur = authz_latest_get(&P.sets);
	if (!P.cur)
		P.cur = authz_set_new_empty();
	if (!P.cur) {
		pr_err("policies: out of memory");
		return -ENOMEM;
	}
	return 0;
}

void policy_fini(void)
{
	/* After the loop stopped. A model published from now on is ignored (the subscription
	 * cannot be removed); one being compiled right now finishes first. */
	authz_latest_stop(&P.sets);
	authz_set_unref(P.cur);
	P.cur = NULL;
	free(P.trust_domain);
	P.trust_domain = NULL;
	P.denied = NULL;	/* freed by metrics_reset */
}

/* ---- admin API ---- */

json_t *policy_dump_json(void)
{
	struct model *m = model_current();
	struct authz_workload *ws = calloc((size_t)m->nworkloads + 1, sizeof(*ws));
	struct authz_set_stats st = { 0 };
	json_t *pol = NULL, *out = NULL;

	if (!ws || !P.cur)
		goto out;
	for (int i = 0; i < m->nworkloads; i++)
		ws[i] = (struct authz_workload){ m->workloads[i].namespace, m->workloads[i].name,
						 m->workloads[i].labels, m->workloads[i].nlabels };
	pol = authz_set_to_json(P.cur, ws, m->nworkloads);
	authz_set_stats(P.cur, &st);
	out = json_pack("{s:s,s:I,s:{s:i,s:i,s:i,s:i,s:i,s:i},s:o*}", "root_namespace",
			authz_set_root_ns(P.cur), "model_generation", (json_int_t)m->generation,
			"stats", "authorization_policies", st.authorization_policies,
			"peer_authentications", st.peer_authentications, "refused", st.refused,
			"converted", st.converted, "unsupported", st.unsupported, "dry_run", st.dry_run,
			"policies", pol);
out:
	free(ws);
	model_unref(m);
	return out;
}

static const struct model_workload *workload_by_name(const struct model *m, const char *ns_name)
{
	const char *slash = strchr(ns_name, '/');
	size_t nslen;

	if (!slash)
		return NULL;
	nslen = (size_t)(slash - ns_name);
	for (int i = 0; i < m->nworkloads; i++) {
		const struct model_workload *w = &m->workloads[i];
		if (strlen(w->namespace) == nslen && strncmp(w->namespace, ns_name, nslen) == 0 &&
		    strcmp(w->name, slash + 1) == 0)
			return w;
	}
	return NULL;
}

static const struct sockaddr_storage *first_addr(const struct model_workload *w)
{
	const struct sockaddr_storage *a = model_workload_addr(w, AF_INET);
	return a ? a : model_workload_addr(w, AF_INET6);
}

json_t *policy_check_json(const char *from, const char *to, char *err, size_t errlen)
{
	struct model *m = model_current();
	const struct model_workload *srcw = NULL, *dst;
	struct sockaddr_storage src, target;
	struct authz_workload w;
	struct authz_conn ac;
	struct authz_result r;
	char *id = NULL, name[600], ip[ADDR_STR_LEN], sip[ADDR_STR_LEN], *colon, *end;
	json_t *out = NULL;
	long port;

	if (!P.cur) {
		snprintf(err, errlen, "no policy set is loaded");
		goto out;
	}
	if (!from || !*from || !to || !*to) {
		snprintf(err, errlen, "from (ADDR or NS/NAME) and to (NS/NAME:PORT) are required");
		goto out;
	}
	if (!ip_parse(from, &src)) {
		srcw = model_workload_by_ip(m, &src);
	} else if ((srcw = workload_by_name(m, from)) && first_addr(srcw)) {
		src = *first_addr(srcw);
	} else {
		snprintf(err, errlen, "from: '%s' is neither an IP address nor NS/NAME of a workload "
			 "with an address", from);
		goto out;
	}
	colon = strrchr(to, ':');
	if (!colon || (size_t)(colon - to) >= sizeof(name)) {
		snprintf(err, errlen, "to: '%s' is not NS/NAME:PORT", to);
		goto out;
	}
	memcpy(name, to, (size_t)(colon - to));
	name[colon - to] = '\0';
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || port < 1 || port > 65535) {
		snprintf(err, errlen, "to: port '%s' is not 1 to 65535", colon + 1);
		goto out;
	}
	dst = workload_by_name(m, name);
	if (!dst || !first_addr(dst)) {
		snprintf(err, errlen, "to: no workload %s with an address", name);
		goto out;
	}
	target = *first_addr(dst);
	sockaddr_set_port(&target, (uint16_t)port);
	/* An enrolled source reaches the destination over HBONE with its own identity. */
	if (srcw && srcw->enrolled &&
	    asprintf(&id, "spiffe://%s/ns/%s/sa/%s", P.trust_domain, srcw->namespace,
		     srcw->service_account) < 0) {
		id = NULL;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	fill_facts(&w, &ac, dst, &src, &target, id);
	authz_check_conn(P.cur, &ac, &r);
	out = authz_result_to_json(&r);
	if (!out) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	json_object_set_new(out, "from", json_pack("{s:s,s:s?,s:s?,s:s}",
		"address", sockaddr_ip_str(&src, sip, sizeof(sip)),
		"workload", srcw ? srcw->name : NULL, "identity", id,
		"transport", id ? "HBONE" : "plaintext"));
	json_object_set_new(out, "to", json_pack("{s:s,s:s,s:s,s:i,s:b}",
		"namespace", dst->namespace, "workload", dst->name,
		"address", sockaddr_ip_str(&target, ip, sizeof(ip)), "port", (int)port,
		"enrolled", dst->enrolled));
	if (!dst->enrolled)
		json_object_set_new(out, "note", json_string("the destination is not in the mesh: "
			"no node agent enforces its policies"));
out:
	free(id);
	model_unref(m);
	return out;
}
