// SPDX-License-Identifier: Apache-2.0
/* Turns proxy routes to enrolled destinations into HBONE CONNECTs, and inbound CONNECTs on
 * 15008 into conns towards local pods. Identities come from the model, certificates from the
 * certstore: a connection always presents its own workload's identity, never the node's. */
#include "agent/mesh.h"
#include "agent/hbone.h"
#include "agent/metrics.h"
#include "agent/policy.h"
#include "agent/workloads.h"
#include "common/log.h"
#include "common/util.h"
#include "otlp/tracecontext.h"
#include "tls/ca.h"
#include "tls/certstore.h"
#include "tls/ctx.h"
#include "tls/identity.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Why an inbound HBONE connection or CONNECT was refused (ambit_hbone_refused_total's
 * `reason` label; `form` says node- or pod-addressed). */
enum mesh_refusal {
	MR_NO_CLIENT_CERT,	/* TLS: the client sent no certificate */
	MR_UNTRUSTED_CERT,	/* TLS: not from the mesh CA, expired, foreign trust domain */
	MR_TLS,			/* TLS: version, ALPN, plaintext, timeout, peer gave up */
	MR_NOT_ENROLLED,	/* the dialled pod, or :authority, is not a local enrolled workload */
	MR_NO_LOCAL_CERT,	/* the dialled pod's certificate cannot be had right now */
	MR_AUTHORITY,		/* pod-addressed: :authority is not the dialled pod */
	MR_IDENTITY,		/* node-addressed: SNI asked for another identity */
	MR_DRAINING,		/* a CONNECT that would wait for the model: the agent is exiting */
	MR_MAX,
};

static const char *const refusal_names[MR_MAX] = {
	[MR_NO_CLIENT_CERT] = "no_client_certificate",
	[MR_UNTRUSTED_CERT] = "untrusted_certificate",
	[MR_TLS] = "tls",
	[MR_NOT_ENROLLED] = "not_local_enrolled_workload",
	[MR_NO_LOCAL_CERT] = "no_local_certificate",
	[MR_AUTHORITY] = "authority_not_dialed_pod",
	[MR_IDENTITY] = "identity_mismatch",
	[MR_DRAINING] = "draining",
};

#define MESH_METRIC_NAME_MAX 96

/* How a held CONNECT ended (ambit_hbone_held_total's `outcome`; a peer that gives up first is
 * counted by ambit_hbone_reset_before_dial_total). */
enum mesh_held_outcome {
	MH_SERVED,		/* the model caught up: served */
	MH_REFUSED,		/* the model caught up, and the target is not ours: refused */
	MH_TIMEOUT,		/* hbone.model_wait_ms passed: refused */
	MH_FULL,		/* not held: hbone.model_wait_max_streams were held already */
	MH_DRAINED,		/* the agent began to drain: refused (503), not left to the reset */
	MH_MAX,
};

static const char *const held_names[MH_MAX] = {
	[MH_SERVED] = "served", [MH_REFUSED] = "refused", [MH_TIMEOUT] = "timeout",
	[MH_FULL] = "full", [MH_DRAINED] = "drained",
};

struct mesh {
	struct mesh_opts opts;
	char *node_name;
	char *trust_domain;
	struct tls_ctx *client_ctx, *server_ctx;
	struct hbone_pool *pool;
	struct hbone_server *server;
	int pod_fd[2];				/* pod-addressed listeners (IPv4, IPv6), -1 none;
						 * owned by the server once added */
	bool pod_added[2];			/* ... listening and added (mesh_start_listening
						 * when opts.defer_listen) */
	uint64_t refused[2][MR_MAX];		/* [pod_addressed][reason] */
	char refused_metric[2][MR_MAX][MESH_METRIC_NAME_MAX];
	/* CONNECTs held for the model (opts.wait_ms): */
	struct model *applied;			/* the agent's applied model; NULL: current */
	struct loop_timer wait_timer;		/* the earliest hold deadline */
	uint64_t held[MH_MAX];
	char held_metric[MH_MAX][MESH_METRIC_NAME_MAX];
	bool draining;				/* mesh_drain: nothing is held any more */
};

int mesh_workload_id(const char *td, const struct model_workload *w, struct spiffe_id *id)
{
	const char *why;
	return spiffe_id_set(id, td, w->namespace, w->service_account, &why);
}

static int wl_identity(const struct mesh *m, const struct model_workload *w, struct spiffe_id *id)
{
	return mesh_workload_id(m->trust_domain, w, id);
}

/* RFC 7239: for=IP, IPv6 quoted and bracketed. */
void mesh_forwarded_for(const struct sockaddr_storage *src, char *out, size_t len)
{
	char ip[ADDR_STR_LEN];
	sockaddr_ip_str(src, ip, sizeof(ip));
	if (src->ss_family == AF_INET6)
		snprintf(out, len, "for=\"[%s]\"", ip);
	else
		snprintf(out, len, "for=%s", ip);
}

bool mesh_request_spans_said(const char *tracestate)
{
	const char *v;
	size_t n;

	return tracestate &&
	       tracestate_get(tracestate, strlen(tracestate), MESH_TRACESTATE_KEY, &v, &n) == 0 &&
	       n == 2 && memcmp(v, "rq", 2) == 0;
}

/* W3C baggage with the source workload's facts; "" when it cannot be built. */
void mesh_baggage_of(const struct model_workload *w, char *out, size_t len)
{
	struct baggage b = { 0 };
	if (!w || baggage_set(&b, "k8s.namespace.name", w->namespace) ||
	    baggage_set(&b, "k8s.pod.name", w->name) ||
	    baggage_set(&b, "service.name", w->canonical_service) ||
	    (w->node && baggage_set(&b, "k8s.node.name", w->node)) ||
	    baggage_format(&b, out, len) < 0)
		out[0] = '\0';
	baggage_fini(&b);
}

static int mesh_connect(void *arg, struct conn *c, const struct model *model,
			const struct proxy_route *r)
{
	struct mesh *m = arg;
	struct conn_info *ci = conn_info(c);
	struct spiffe_id src_id, dst_id;
	struct hbone_header hdrs[4];
	size_t nh = 0;
	char authority[ADDR_STR_LEN], fwd[ADDR_STR_LEN + 16], bag[768];
	struct hbone_request req = { 0 };
	(void)model;

	if (!r->src) {
		pr_warn_rl("outbound to the mesh from %s: not a known workload; refusing",
			   sockaddr_str(&ci->src, (char[ADDR_STR_LEN]){ 0 }, ADDR_STR_LEN));
		return -EACCES;
	}
	/* HBONE goes to the destination's node agent, or straight to a waypoint pod, which is
	 * HBONE-native and listens on its own IP. */
	const struct model_workload *peer = r->waypoint_wl ? r->waypoint_wl : r->dst;
	if (wl_identity(m, r->src, &src_id) || wl_identity(m, peer, &dst_id))
		return -EINVAL;
	/* -EHOSTUNREACH: node form, an enrolled workload without a known node */
	int err = mesh_hbone_dial(m->opts.dial_pod, r->dst_node ? &r->dst_node->addr : NULL,
				  r->waypoint_wl ? &r->waypoint_wl->addrs[0] : NULL, &r->target,
				  &ci->src, &req);
	if (err)
		return err;
	req.source = &src_id;
	req.expect = &dst_id;
	req.nexpect = 1;
	sockaddr_str(&r->target, authority, sizeof(authority));
	req.authority = authority;
	mesh_forwarded_for(&ci->src, fwd, sizeof(fwd));
	mesh_baggage_of(r->src, bag, sizeof(bag));
	hdrs[nh++] = (struct hbone_header){ "forwarded", fwd };
	if (bag[0])
		hdrs[nh++] = (struct hbone_header){ "baggage", bag };
	if (ci->traceparent[0])
		hdrs[nh++] = (struct hbone_header){ "traceparent", ci->traceparent };
	if (ci->traceparent[0] && ci->request_spans)
		hdrs[nh++] = (struct hbone_header){ "tracestate", MESH_TRACESTATE_REQUEST_SPANS };
	req.headers = hdrs;
	req.nheaders = nh;
	ci->via = req.dst;
	ci->mtls = true;
	return hbone_connect(m->pool, &req, c);
}

int mesh_hbone_dial(bool dial_pod, const struct sockaddr_storage *node,
		    const struct sockaddr_storage *waypoint, const struct sockaddr_storage *target,
		    const struct sockaddr_storage *src, struct hbone_request *req)
{
	const struct sockaddr_storage *to = waypoint ? waypoint : dial_pod ? target : node;

	if (!to || (to->ss_family != AF_INET && to->ss_family != AF_INET6))
		return -EHOSTUNREACH;
	req->dst = *to;
	sockaddr_set_port(&req->dst, HBONE_PORT);
	req->no_sni = dial_pod;
	req->key_src = dial_pod ? src : NULL;
	return 0;
}

/* Counts a refusal for ambit_hbone_refused_total. */
static void refused(struct mesh *m, bool pod, enum mesh_refusal why)
{
	m->refused[pod ? 1 : 0][why]++;
}

/* Answers an inbound CONNECT with a refusal: logged (who asked for what, and why), counted,
 * and sent as status + HBONE_REASON_HEADER. */
static void refuse_connect(struct mesh *m, const struct hbone_inbound *req, int status,
			   enum mesh_refusal why, const char *reason)
{
	char peer[ADDR_STR_LEN], pid[SPIFFE_ID_STR_MAX];

	refused(m, req->pod_addressed, why);
	pr_warn_rl("hbone: CONNECT %.128s from %s (%s, %s-addressed) refused with %d: %s",
		   req->authority, sockaddr_str(&req->peer_addr, peer, sizeof(peer)),
		   req->peer_id ? spiffe_id_str(req->peer_id, pid) : "no identity",
		   req->pod_addressed ? "pod" : "node", status, reason);
	hbone_stream_respond(req->end, status, reason);
}

/* The workload at *src if its identity is the peer's verified one, else NULL. */
static const struct model_workload *vouched_at(const struct model *model, const char *td,
					       const struct hbone_inbound *req,
					       const struct sockaddr_storage *src)
{
	const struct model_workload *w = model_workload_by_ip(model, src);
	struct spiffe_id id;

	if (!w || mesh_workload_id(td, w, &id) || !req->peer_id || !spiffe_id_equal(&id, req->peer_id))
		return NULL;
	return w;
}

/* The client pod's IP from `forwarded: for=IP`, trusted only when the workload owning that IP
 * has the peer's verified identity; failing that, the peer's own address under the same check
 * (an HBONE-native peer, such as a waypoint, tunnels from its pod IP and is the source). Else
 * NULL: the destination then sees the node's IP. */
const struct model_workload *mesh_vouched_source(const struct model *model, const char *td,
						 const struct hbone_inbound *req,
						 struct sockaddr_storage *src)
{
	char ip[ADDR_STR_LEN + 4];
	const char *p = req->forwarded ? strstr(req->forwarded, "for=") : NULL;
	const struct model_workload *w;
	size_t n;

	if (p) {
		p += 4;
		if (*p == '"')
			p++;
		if (*p == '[')
			p++;
		n = strcspn(p, "]\";, ");
		if (n > 0 && n < sizeof(ip)) {
			memcpy(ip, p, n);
			ip[n] = '\0';
			if (!ip_parse(ip, src) && (w = vouched_at(model, td, req, src)))
				return w;
		}
	}
	*src = req->peer_addr;
	sockaddr_set_port(src, 0);
	return vouched_at(model, td, req, src);
}

/* Could w (NULL: not in the model) become a local enrolled workload with a later model? Yes
 * when unknown (a pod the model does not have yet), or known on this node (or on no node yet)
 * and not enrolled (its enrollment not seen yet). A workload of another node is not ours. */
static bool may_become_local(const struct model_workload *w, const char *node)
{
	return !w || !w->node || (strcmp(w->node, node) == 0 && !w->enrolled);
}

static bool local_enrolled(const struct model_workload *w, const char *node)
{
	return w && w->enrolled && w->node && strcmp(w->node, node) == 0;
}

enum mesh_wait mesh_wait_decide(const struct model_workload *dst, const char *node,
				bool captured, uint64_t held_ms, uint32_t wait_ms, uint32_t nheld,
				uint32_t wait_max)
{
	bool local = local_enrolled(dst, node);

	if (local && captured)
		return MESH_WAIT_SERVE;
	if ((!local && !may_become_local(dst, node)) || held_ms >= wait_ms || nheld >= wait_max)
		return MESH_WAIT_REFUSE;
	return MESH_WAIT_HOLD;
}

/* The model inbound HBONE answers from: the applied one (a pod enrolled there has its capture
 * in place, so its replies to a vouched source address come back to us), else the published
 * one (no agent behind us applies models). A new reference. */
static struct model *mesh_model(const struct mesh *m)
{
	return m->applied ? model_ref(m->applied) : model_current();
}

/* Arms the wait timer to fire within left ms at the latest. 0 or -ENOMEM. */
static int wait_arm(struct mesh *m, uint64_t left)
{
	uint64_t due = loop_now_ms(m->opts.loop) + left;

	if (loop_timer_armed(&m->wait_timer) && m->wait_timer.when_ms <= due)
		return 0;
	return loop_timer_arm(m->opts.loop, &m->wait_timer, left);
}

/* Holds an inbound CONNECT for the model (why: what it waits for, for the log): the wait
 * timer fires at its deadline at the latest (hbone_server_retry_held then refuses it).
 * -EINPROGRESS, or -ENOMEM (no timer: refused). */
static int wait_hold(struct mesh *m, const struct hbone_inbound *req, const char *why)
{
	char peer[ADDR_STR_LEN];

	if (wait_arm(m, m->opts.wait_ms - req->held_ms))
		return -ENOMEM;
	if (!req->held_ms)
		pr_info_rl("hbone: CONNECT %.128s from %s: %s; holding it up to %u ms for the "
			   "model (%u held)", req->authority,
			   sockaddr_str(&req->peer_addr, peer, sizeof(peer)), why, m->opts.wait_ms,
			   hbone_server_held(m->server) + 1);
	return -EINPROGRESS;
}

static void wait_timer_fired(struct loop *l, struct loop_timer *t)
{
	struct mesh *m = t->arg;
	(void)l;
	hbone_server_retry_held(m->server);
}

void mesh_retry_held(struct mesh *m)
{
	if (hbone_server_held(m->server))
		hbone_server_retry_held(m->server);
}

void mesh_model_applied(struct mesh *m, struct model *model)
{
	model_unref(m->applied);
	m->applied = model_ref(model);
	mesh_retry_held(m);
}

static int on_inbound(void *arg, const struct hbone_inbound *req)
{
	struct mesh *m = arg;
	struct model *model = mesh_model(m);
	const struct model_workload *dst = model_workload_by_ip(model, &req->target);
	const struct model_workload *srcw;
	struct sockaddr_storage src;
	struct spiffe_id dst_id;
	struct conn_opts co = { .buffer_size = 0 };
	struct conn *c = NULL;
	char pid[SPIFFE_ID_STR_MAX], peer[SPIFFE_ID_STR_MAX], why[600];
	int err = 0;

	/* Pod-addressed (ztunnel's form): the tunnel leads to the pod that was dialled, whose
	 * certificate we presented, and nowhere else (ztunnel answers 400 too). */
	if (req->pod_addressed && !sockaddr_ip_equal(&req->target, &req->local_addr)) {
		refuse_connect(m, req, 400, MR_AUTHORITY, "authority is not the dialed pod");
		goto out;
	}
	bool local = local_enrolled(dst, m->node_name);
	bool captured = !local || !m->opts.captured ||
			m->opts.captured(m->opts.captured_arg, &req->target);
	enum mesh_wait verdict = mesh_wait_decide(dst, m->node_name, captured, req->held_ms,
						  m->opts.wait_ms, hbone_server_held(m->server),
						  m->opts.wait_max);
	if (verdict == MESH_WAIT_HOLD && m->draining) {
		if (req->held_ms)
			m->held[MH_DRAINED]++;
		snprintf(why, sizeof(why), "shutting down: not waiting for the model%s",
			 req->held_ms ? " any longer" : "");
		refuse_connect(m, req, 503, MR_DRAINING, why);
		goto out;
	}
	if (verdict == MESH_WAIT_HOLD &&
	    (err = wait_hold(m, req, local ? "its capture is not in place yet"
					   : "not a local enrolled workload in this node's model "
					     "yet")) == -EINPROGRESS)
		goto out;	/* hbone_server_retry_held brings it back */
	err = 0;
	if (verdict != MESH_WAIT_SERVE) {
		bool may = local || may_become_local(dst, m->node_name);
		if (req->held_ms)
			m->held[may ? MH_TIMEOUT : MH_REFUSED]++;
		else if (m->opts.wait_ms && may)
			m->held[MH_FULL]++;
		snprintf(why, sizeof(why), "authority is not a local enrolled workload%s",
			 local ? " with its capture in place" : "");
		if (req->held_ms)
			snprintf(why + strlen(why), sizeof(why) - strlen(why),
				 " (after %llu ms waiting for the model)",
				 (unsigned long long)req->held_ms);
		refuse_connect(m, req, 400, MR_NOT_ENROLLED, why);
		goto out;
	}
	if (req->held_ms) {
		m->held[MH_SERVED]++;
		pr_info_rl("hbone: CONNECT %.128s served after %llu ms waiting for the model",
			   req->authority, (unsigned long long)req->held_ms);
	}
	if (wl_identity(m, dst, &dst_id) ||
	    (req->local_id && !spiffe_id_equal(req->local_id, &dst_id))) {
		refuse_connect(m, req, 401, MR_IDENTITY,
			       "the identity the client asked for is not the destination's");
		goto out;
	}
	c = conn_new(m->opts.loop, &co);
	if (!c) {
		err = -ENOMEM;
		goto out;
	}
	conn_attach(c, CONN_DOWN, req->end);
	struct conn_info *ci = conn_info(c);
	ci->kind = CONN_INBOUND_HBONE;
	ci->orig_dst = req->target;
	ci->target = req->target;
	ci->via = req->peer_addr;
	ci->mtls = true;
	/* A destination behind a waypoint should only be reached through it. */
	const struct model_service *wp = proxy_protecting_waypoint(model, dst);
	if (wp) {
		bool from_wp = false;
		for (int i = 0; i < wp->nendpoints && !from_wp; i++) {
			struct spiffe_id wid;
			from_wp = req->peer_id &&
				  !wl_identity(m, &model->workloads[wp->endpoints[i]], &wid) &&
				  spiffe_id_equal(&wid, req->peer_id);
		}
		ci->waypoint_bypass = !from_wp;
		ci->via_waypoint = from_wp;
	}
	srcw = mesh_vouched_source(model, m->trust_domain, req, &src);
	ci->src = srcw ? src : req->peer_addr;
	if (proxy_peer_fill(&ci->source, srcw, m->trust_domain) ||
	    proxy_peer_fill(&ci->destination, dst, m->trust_domain) ||
	    proxy_inbound_service(ci, model, dst, ci->via_waypoint ? wp : NULL)) {
		conn_opened(c);
		conn_abort(c, CONN_DOWN, -ENOMEM, CONN_FLAG_OVERFLOW, "out of memory");
		goto out;
	}
	if (!srcw && req->peer_id) {
		/* Unknown source address, but a verified identity: report that. */
		ci->source.principal = strdup(spiffe_id_str(req->peer_id, pid));
		ci->source.namespace = strdup(req->peer_id->ns);
		ci->source.service_account = strdup(req->peer_id->sa);
	}
	if (req->traceparent && strlen(req->traceparent) < sizeof(ci->parent_traceparent))
		strcpy(ci->parent_traceparent, req->traceparent);
	ci->request_spans = ci->parent_traceparent[0] && mesh_request_spans_said(req->tracestate);
	/* L4 authorization: the verified peer identity, the vouched source address, the local
	 * workload and the target port. A denial answers 401 with the reason (the source agent
	 * resets its client); the conn closes with DENY. */
	bool denied = policy_check_inbound(c, model, dst,
					   req->peer_id ? spiffe_id_str(req->peer_id, peer) : NULL,
					   why, sizeof(why)) != 0;
	conn_opened(c);
	if (denied) {
		hbone_stream_respond(req->end, 401, why);
		goto out;
	}
	err = proxy_connect_tcp(m->opts.proxy, c, &req->target, srcw ? &src : NULL);
	if (err)
		conn_abort(c, CONN_UP, err, CONN_FLAG_UPSTREAM_CONNECT_FAILURE, strerror(-err));
	err = 0;
out:
	model_unref(model);
	return err;
}

/* Server certificate by SNI: only identities of local enrolled workloads are served. */
static struct tls_cert *select_cert(void *arg, const struct spiffe_id *id)
{
	struct mesh *m = arg;
	struct model *model;
	struct tls_cert *cert = NULL;

	if (!id)
		return NULL;
	model = mesh_model(m);
	for (int i = 0; i < model->nworkloads; i++) {
		const struct model_workload *w = &model->workloads[i];
		struct spiffe_id wid;
		if (!local_enrolled(w, m->node_name) || wl_identity(m, w, &wid) ||
		    !spiffe_id_equal(&wid, id))
			continue;
		cert = certstore_get(m->opts.certs, id);
		if (!cert) {
			char why[512], ids[SPIFFE_ID_STR_MAX];
			certstore_reason(m->opts.certs, id, why, sizeof(why));
			pr_warn_rl("hbone: inbound handshake for %s refused: %s",
				   spiffe_id_str(id, ids), why[0] ? why : strerror(errno));
		}
		break;
	}
	model_unref(model);
	return cert;
}

/* Where identity id stands in model: served (a local enrolled workload has it), or may be
 * served with a later model (no workload has it yet, or one of this node has it and is not
 * enrolled yet, as may_become_local says of an address), or neither (only other nodes'). */
enum id_state { ID_SERVED, ID_MAY_COME, ID_NOT_OURS };

static enum id_state identity_state(const struct mesh *m, const struct model *model,
				    const struct spiffe_id *id)
{
	bool any = false, may = false;

	for (int i = 0; i < model->nworkloads; i++) {
		const struct model_workload *w = &model->workloads[i];
		struct spiffe_id wid;
		if (wl_identity(m, w, &wid) || !spiffe_id_equal(&wid, id))
			continue;
		if (local_enrolled(w, m->node_name))
			return ID_SERVED;
		any = true;
		may = may || may_become_local(w, m->node_name);
	}
	return !any || may ? ID_MAY_COME : ID_NOT_OURS;
}

/* tls cert_wait, node-addressed HBONE: the handshake of a client whose SNI names an identity
 * this node cannot serve yet (no local enrolled workload has it in the applied model, or its
 * certificate is still being fetched) waits for the model and the certificate, bounded as
 * CONNECTs are (opts.wait_ms, opts.wait_max). */
static bool cert_wait(void *arg, const struct spiffe_id *id, uint64_t waited_ms)
{
	struct mesh *m = arg;
	struct model *model = mesh_model(m);
	enum id_state st = identity_state(m, model, id);
	struct tls_cert *cert = NULL;
	char ids[SPIFFE_ID_STR_MAX];

	model_unref(model);
	if (st == ID_NOT_OURS || !m->opts.wait_ms)
		return false;
	if (st == ID_SERVED) {
		cert = certstore_get(m->opts.certs, id);
		if (!cert && errno != EAGAIN)
			return false;	/* cannot be had: select_cert refuses, with the reason */
	}
	if (cert) {
		tls_cert_unref(cert);
		if (waited_ms) {
			m->held[MH_SERVED]++;
			pr_info_rl("hbone: handshake for %s goes on after %llu ms waiting for the "
				   "model and the certificate", spiffe_id_str(id, ids),
				   (unsigned long long)waited_ms);
		}
		return false;
	}
	if (m->draining) {	/* nothing is held any more: refused now, not reset at the exit */
		if (waited_ms)
			m->held[MH_DRAINED]++;
		return false;
	}
	if (waited_ms >= m->opts.wait_ms) {
		m->held[MH_TIMEOUT]++;
		return false;
	}
	if (!waited_ms && hbone_server_held(m->server) >= m->opts.wait_max) {
		m->held[MH_FULL]++;
		return false;
	}
	if (wait_arm(m, m->opts.wait_ms - waited_ms))
		return false;
	if (!waited_ms)
		pr_info_rl("hbone: inbound handshake for %s: not served by this node yet; holding "
			   "it up to %u ms for the model and the certificate (%u held)",
			   spiffe_id_str(id, ids), m->opts.wait_ms, hbone_server_held(m->server) + 1);
	return true;
}

/* The local enrolled workload at addr (any port), or NULL. */
static const struct model_workload *local_enrolled_at(const struct mesh *m,
						      const struct model *model,
						      const struct sockaddr_storage *addr)
{
	const struct model_workload *w = model_workload_by_ip(model, addr);

	return local_enrolled(w, m->node_name) ? w : NULL;
}

/* Pod-addressed HBONE: the certificate of the pod whose IP:15008 was dialled (the original
 * destination, captured by eBPF). Refused (logged, counted) when that is not a local enrolled
 * workload or its certificate cannot be had. */
static struct tls_cert *pod_cert(void *arg, const struct sockaddr_storage *dialed,
				 const struct sockaddr_storage *peer)
{
	struct mesh *m = arg;
	struct model *model = mesh_model(m);
	const struct model_workload *w = local_enrolled_at(m, model, dialed);
	struct tls_cert *cert = NULL;
	struct spiffe_id id;
	char d[ADDR_STR_LEN], p[ADDR_STR_LEN], ids[SPIFFE_ID_STR_MAX];

	sockaddr_str(dialed, d, sizeof(d));
	sockaddr_str(peer, p, sizeof(p));
	if (!w || wl_identity(m, w, &id)) {
		refused(m, true, MR_NOT_ENROLLED);
		pr_warn_rl("hbone: pod-addressed connection from %s to %s refused: not a local "
			   "enrolled workload", p, d);
	} else if (!(cert = certstore_get(m->opts.certs, &id))) {
		refused(m, true, MR_NO_LOCAL_CERT);
		pr_warn_rl("hbone: pod-addressed connection from %s to %s refused: no certificate "
			   "for %s: %s", p, d, spiffe_id_str(&id, ids), strerror(errno));
	}
	model_unref(model);
	return cert;
}

/* A TLS refusal of an inbound connection (already logged by the HBONE layer with its reason). */
static void on_refused(void *arg, bool pod, int err, const char *reason)
{
	struct mesh *m = arg;
	enum mesh_refusal why = MR_TLS;

	if (err == -EACCES && strstr(reason, "no client certificate"))
		why = MR_NO_CLIENT_CERT;
	else if (err == -EACCES && !strstr(reason, "peer rejected"))
		why = MR_UNTRUSTED_CERT;
	refused(m, pod, why);
}

static double refused_value(void *arg)
{
	return (double)*(const uint64_t *)arg;
}

static double held_now(void *arg)
{
	return (double)hbone_server_held(((struct mesh *)arg)->server);
}

static int register_refusal_metrics(struct mesh *m)
{
	int err = metrics_register("ambit_hbone_held_streams", "Inbound HBONE CONNECTs and TLS "
				   "handshakes held now, waiting for the model, a certificate or a "
				   "pod's capture (hbone.model_wait_ms)", "gauge", held_now, m);

	for (int o = 0; o < MH_MAX && !err; o++) {
		char *name = m->held_metric[o];
		snprintf(name, MESH_METRIC_NAME_MAX, "ambit_hbone_held_total{outcome=\"%s\"}",
			 held_names[o]);
		err = metrics_register(name, "Inbound HBONE CONNECTs and TLS handshakes that "
				       "waited for the model (hbone.model_wait_ms), by how the wait "
				       "ended", "counter", refused_value, &m->held[o]);
	}

	for (int f = 0; f < 2 && !err; f++) {
		for (int r = 0; r < MR_MAX && !err; r++) {
			char *name = m->refused_metric[f][r];
			snprintf(name, MESH_METRIC_NAME_MAX,
				 "ambit_hbone_refused_total{form=\"%s\",reason=\"%s\"}",
				 f ? "pod" : "node", refusal_names[r]);
			err = metrics_register(name, "Inbound HBONE connections and CONNECTs refused, "
					       "by address form and reason", "counter",
					       refused_value, &m->refused[f][r]);
		}
	}
	return err;
}

/* The transparent pod-addressed listeners on loopback:15008 (IPv6 optional), handed to the
 * HBONE server; their fds stay known for the capture's sockmap. */
static int pods_start(struct mesh *m);

static int listen_pods(struct mesh *m)
{
	static const char *const ips[2] = { "127.0.0.1", "::1" };
	char a[ADDR_STR_LEN];

	for (int i = 0; i < 2; i++) {
		struct sockaddr_storage addr;
		int fd;

		sockaddr_parse(ips[i], HBONE_PORT, &addr);
		fd = proxy_bind_transparent(&addr);	/* pods_start() listens */
		if (i == 1 && (fd == -EAFNOSUPPORT || fd == -EADDRNOTAVAIL)) {
			pr_info("hbone: no IPv6 pod-addressed listener: %s", strerror(-fd));
			continue;
		}
		if (fd < 0) {
			pr_err("hbone: cannot listen on %s (transparent, pod-addressed): %s",
			       sockaddr_str(&addr, a, sizeof(a)), strerror(-fd));
			return fd;
		}
		m->pod_fd[i] = fd;
		pr_info("hbone: pod-addressed HBONE (captured <pod IP>:15008) on %s",
			sockaddr_str(&addr, a, sizeof(a)));
	}
	return m->opts.defer_listen ? 0 : pods_start(m);
}

/* Listens on the pod-addressed sockets and hands them to the server. 0 or -errno. */
static int pods_start(struct mesh *m)
{
	int err;

	for (int i = 0; i < 2; i++) {
		if (m->pod_fd[i] < 0 || m->pod_added[i])
			continue;
		if (listen(m->pod_fd[i], 1024) == -1)
			return -errno;
		if ((err = hbone_server_listen_pod(m->server, m->pod_fd[i])))
			return err;
		m->pod_added[i] = true;
	}
	return 0;
}

int mesh_pod_listener_fd(const struct mesh *m, int family)
{
	return m->pod_fd[family == AF_INET6 ? 1 : 0];
}

void mesh_certs_changed(void *arg)
{
	struct mesh *m = arg;
	hbone_pool_certs_changed(m->pool);
	mesh_retry_held(m);	/* handshakes waiting for a certificate */
}

/* Shared with the waypoint: both contexts of a side take the new roots, or neither is left
 * half-changed in a way that matters (a failure is logged: the old roots stay for it). */
void mesh_set_ctx_roots(struct tls_ctx *client, struct tls_ctx *server, struct tls_ca *roots)
{
	int err = tls_ctx_set_roots(client, roots);
	if (!err)
		err = tls_ctx_set_roots(server, roots);
	if (err)
		pr_err("hbone: cannot load the new trust bundle into the TLS contexts: %s",
		       strerror(-err));
}

void mesh_roots_changed(void *arg, struct tls_ca *roots)
{
	struct mesh *m = arg;
	m->opts.ca = roots;	/* the old one is freed after this returns */
	mesh_set_ctx_roots(m->client_ctx, m->server_ctx, roots);
}

struct mesh *mesh_new(const struct mesh_opts *opts)
{
	struct mesh *m = calloc(1, sizeof(*m));
	struct hbone_opts ho = {
		.max_streams = opts->max_streams,
		.idle_timeout_ms = opts->idle_timeout_ms,
		.ping_interval_ms = opts->ping_interval_ms,
		.window = opts->window,
		.connect_timeout_ms = opts->connect_timeout_ms,
	};
	struct hbone_opts so = ho;
	char a[ADDR_STR_LEN];
	int err = ENOMEM;

	if (!m)
		goto fail;
	m->pod_fd[0] = m->pod_fd[1] = -1;
	m->opts = *opts;
	loop_timer_init(&m->wait_timer, wait_timer_fired, m);
	m->node_name = strdup(opts->node_name);
	m->trust_domain = strdup(opts->trust_domain);
	if (!m->node_name || !m->trust_domain)
		goto fail;
	struct tls_ctx_opts co = { .roots = opts->ca, .trust_domain = opts->trust_domain };
	m->client_ctx = tls_ctx_new(TLS_ROLE_CLIENT, &co);
	co.select_cert = select_cert;
	co.cert_wait = cert_wait;
	co.select_arg = m;
	m->server_ctx = m->client_ctx ? tls_ctx_new(TLS_ROLE_SERVER, &co) : NULL;
	if (!m->server_ctx) {
		err = errno;
		pr_err("hbone: cannot create TLS contexts: %s", strerror(err));
		goto fail;
	}
	m->pool = hbone_pool_new(opts->loop, m->client_ctx, opts->certs, &ho);
	if (!m->pool) {
		err = errno;
		pr_err("hbone: cannot create the client pool: %s", strerror(err));
		goto fail;
	}
	so.max_streams = 0;	/* server: its own default (SETTINGS_MAX_CONCURRENT_STREAMS) */
	so.max_sessions = opts->max_inbound;
	if (opts->limits)
		so.limits = *opts->limits;
	so.defer_listen = opts->defer_listen;
	struct hbone_server_cbs cbs = { .on_connect = on_inbound, .pod_cert = pod_cert,
					.on_refused = on_refused, .arg = m };
	m->server = hbone_server_new(opts->loop, &opts->hbone_addr, m->server_ctx, &cbs, &so);
	if (!m->server) {
		err = errno;
		pr_err("hbone: cannot listen on %s: %s",
		       sockaddr_str(&opts->hbone_addr, a, sizeof(a)), strerror(err));
		goto fail;
	}
	if (opts->pod_listeners && (err = -listen_pods(m)))
		goto fail;
	if ((err = -register_refusal_metrics(m))) {
		pr_err("hbone: cannot register metrics: %s", strerror(err));
		goto fail;
	}
	struct proxy_mesh pm = { .connect = mesh_connect, .arg = m };
	proxy_set_mesh(opts->proxy, &pm);
	if (mesh_hbone_metrics_register(m->server))
		pr_warn("hbone: no room for the abuse-limit metrics");
	return m;
fail:
	mesh_free(m);
	errno = err;
	return NULL;
}

void mesh_free(struct mesh *m)
{
	if (!m)
		return;
	if (m->opts.proxy)
		proxy_set_mesh(m->opts.proxy, &(struct proxy_mesh){ 0 });
	if (m->opts.loop)
		loop_timer_cancel(m->opts.loop, &m->wait_timer);
	hbone_server_free(m->server);	/* drops the held CONNECTs */
	model_unref(m->applied);
	for (int i = 0; i < 2; i++)	/* bound, never handed to the server */
		if (m->pod_fd[i] >= 0 && !m->pod_added[i])
			close(m->pod_fd[i]);
	hbone_pool_free(m->pool);
	tls_ctx_free(m->server_ctx);
	tls_ctx_free(m->client_ctx);
	free(m->node_name);
	free(m->trust_domain);
	free(m);
}

int mesh_start_listening(struct mesh *m)
{
	int err = hbone_server_listen(m->server);
	return err ? err : pods_start(m);
}

void mesh_drain(struct mesh *m)
{
	m->draining = true;	/* before the server's drain answers what it held */
	hbone_server_drain(m->server);
	hbone_pool_drain(m->pool);
}

unsigned mesh_inbound_streams(const struct mesh *m)
{
	return hbone_server_stream_count(m->server);
}

void mesh_hbone_conn_json(const struct hbone_conn_info *i, void *arg)
{
	char peer[ADDR_STR_LEN], lid[SPIFFE_ID_STR_MAX], pid[SPIFFE_ID_STR_MAX];
	json_array_append_new(arg, json_pack("{s:s,s:s,s:s,s:s,s:s?,s:s?,s:s?,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:s}",
		"role", i->server ? "server" : "client", "form", i->pod_addressed ? "pod" : "node",
		"state", hbone_sess_st_to_str(i->state),
		"peer", sockaddr_str(&i->peer_addr, peer, sizeof(peer)),
		"local_identity", i->local_id ? spiffe_id_str(i->local_id, lid) : NULL,
		"peer_identity", i->peer_id ? spiffe_id_str(i->peer_id, pid) : NULL,
		"cert_serial", i->cert_serial, "unconsumed", (json_int_t)i->unconsumed,
		"streams", (int)i->streams, "queued", (int)i->queued,
		"streams_total", (json_int_t)i->streams_total, "age_ms", (json_int_t)i->age_ms,
		"idle_ms", (json_int_t)i->idle_ms, "bytes_sent", (json_int_t)i->bytes_sent,
		"bytes_received", (json_int_t)i->bytes_received, "blocked", i->blocked ? i->blocked : ""));
}

static json_t *hbone_stats_json(const struct hbone_stats *st)
{
	return json_pack("{s:i,s:i,s:I,s:I,s:I,s:I,s:I}", "connections", (int)st->conns,
			 "streams", (int)st->streams, "connections_total", (json_int_t)st->conns_total,
			 "streams_total", (json_int_t)st->streams_total,
			 "buffered", (json_int_t)st->buffered, "unconsumed", (json_int_t)st->unconsumed,
			 "refused_total", (json_int_t)st->refused_total);
}

/* ---- HTTP/2 abuse limits: admin JSON and Prometheus counters ---- */

json_t *mesh_hbone_limits_json(const struct hbone_stats *st)
{
	json_t *cut = json_object();
	for (int i = 0; cut && i < HBONE_ABUSE_N; i++)
		json_object_set_new(cut, hbone_abuse_to_str(i), json_integer((json_int_t)st->cut_off[i]));
	return json_pack("{s:o,s:I,s:I}", "cut_off", cut,
			 "streams_refused_total", (json_int_t)st->streams_refused_total,
			 "reset_before_dial_total", (json_int_t)st->reset_before_dial_total);
}

/* One registered counter: which field of the server's stats it reads. */
struct limit_metric {
	struct hbone_server *server;
	int cut_off;		/* enum hbone_abuse, or -1 / -2 for refused / reset before dial */
};

static struct limit_metric limit_metrics[HBONE_ABUSE_N + 2];

static double limit_metric_value(void *arg)
{
	const struct limit_metric *lm = arg;
	struct hbone_stats st;
	hbone_server_stats(lm->server, &st);
	if (lm->cut_off >= 0)
		return (double)st.cut_off[lm->cut_off];
	return (double)(lm->cut_off == -1 ? st.streams_refused_total : st.reset_before_dial_total);
}

int mesh_hbone_metrics_register(struct hbone_server *server)
{
	static const struct {
		const char *name, *help;
	} m[HBONE_ABUSE_N + 2] = {
		[HBONE_ABUSE_RAPID_RESET] = { "ambit_hbone_rapid_reset_cutoffs_total",
			"Inbound HBONE connections cut off for resetting streams too fast (hbone.limits.resets)" },
		[HBONE_ABUSE_SETTINGS_FLOOD] = { "ambit_hbone_settings_flood_cutoffs_total",
			"Inbound HBONE connections cut off for a SETTINGS flood (hbone.limits.settings)" },
		[HBONE_ABUSE_PING_FLOOD] = { "ambit_hbone_ping_flood_cutoffs_total",
			"Inbound HBONE connections cut off for a PING flood (hbone.limits.pings)" },
		[HBONE_ABUSE_EMPTY_FRAMES] = { "ambit_hbone_empty_frames_cutoffs_total",
			"Inbound HBONE connections cut off for a flood of empty DATA frames (hbone.limits.empty_frames)" },
		[HBONE_ABUSE_CONTINUATION_FLOOD] = { "ambit_hbone_continuation_flood_cutoffs_total",
			"Inbound HBONE connections cut off for too many CONTINUATION frames (hbone.limits.max_continuations)" },
		[HBONE_ABUSE_N] = { "ambit_hbone_streams_refused_total",
			"Inbound HBONE streams refused because too many were not served yet (hbone.limits.max_pending_streams)" },
		[HBONE_ABUSE_N + 1] = { "ambit_hbone_reset_before_dial_total",
			"Inbound HBONE streams reset by the peer before their upstream was dialled (none was)" },
	};
	int err = 0;
	for (int i = 0; i < HBONE_ABUSE_N + 2 && !err; i++) {
		limit_metrics[i].server = server;
		limit_metrics[i].cut_off = i < HBONE_ABUSE_N ? i : HBONE_ABUSE_N - 1 - i;
		err = metrics_register(m[i].name, m[i].help, "counter", limit_metric_value,
				       &limit_metrics[i]);
	}
	return err;
}

json_t *mesh_hbone_json(struct mesh *m)
{
	struct hbone_stats cs = { 0 }, ss = { 0 };
	json_t *arr = json_array();

	hbone_pool_foreach(m->pool, mesh_hbone_conn_json, arr);
	hbone_server_foreach(m->server, mesh_hbone_conn_json, arr);
	hbone_pool_stats(m->pool, &cs);
	hbone_server_stats(m->server, &ss);
	json_t *srv = hbone_stats_json(&ss);
	if (srv) {
		json_object_set_new(srv, "held", json_integer(hbone_server_held(m->server)));
		json_object_set_new(srv, "limits", mesh_hbone_limits_json(&ss));
	}
	return json_pack("{s:o,s:o,s:o}", "connections", arr, "client", hbone_stats_json(&cs),
			 "server", srv);
}
