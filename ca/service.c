// SPDX-License-Identifier: Apache-2.0
/* CreateCertificate for ambit-ca: token -> caller -> rate limit -> request and CSR -> node
 * authorization -> signature; one log line and one counter per decision, whatever it was. */
#include "ca/service.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/workloads.h"
#include "ca/authz.h"
#include "ca/msg.h"
#include "ca/ratelimit.h"
#include "common/log.h"
#include "common/util.h"
#include "tls/csr.h"
#include "tls/identity.h"

struct ca_service {
	const struct ca_config *cfg;
	pthread_mutex_t ca_lock;
	struct tls_ca *ca;		/* a reference; replaced by ca_service_set_ca */
	const struct tls_jwt_keys *keys;
	const struct ca_tokenreview *tr;
	struct ca_ratelimit *rl;
	struct ca_authz_policy policy;
	atomic_uint_fast64_t count[CA_RES_COUNT];
};

static const char *const result_names[CA_RES_COUNT] = {
	"issued", "unauthenticated", "denied", "invalid", "rate_limited", "unavailable",
	"unimplemented", "error",
};

const char *ca_result_str(enum ca_result r)
{
	return r < CA_RES_COUNT ? result_names[r] : "unknown";
}

struct ca_service *ca_service_new(const struct ca_config *cfg, struct tls_ca *ca,
				  const struct tls_jwt_keys *keys, const struct ca_tokenreview *tr)
{
	struct ca_service *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->cfg = cfg;
	pthread_mutex_init(&s->ca_lock, NULL);
	s->ca = tls_ca_ref(ca);
	s->keys = keys;
	s->tr = tr;
	s->policy.trust_domain = cfg->trust_domain;
	s->policy.node_accounts = (const char *const *)cfg->node_accounts;
	s->policy.nnode_accounts = cfg->nnode_accounts;
	if (!(s->rl = ca_ratelimit_new(cfg->rate_burst, cfg->rate_per_second))) {
		ca_service_free(s);
		errno = ENOMEM;
		return NULL;
	}
	return s;
}

void ca_service_free(struct ca_service *s)
{
	if (!s)
		return;
	ca_ratelimit_free(s->rl);
	tls_ca_free(s->ca);
	pthread_mutex_destroy(&s->ca_lock);
	free(s);
}

void ca_service_set_ca(struct ca_service *s, struct tls_ca *ca)
{
	struct tls_ca *old;

	tls_ca_ref(ca);
	pthread_mutex_lock(&s->ca_lock);
	old = s->ca;
	s->ca = ca;
	pthread_mutex_unlock(&s->ca_lock);
	tls_ca_free(old);	/* calls that took it keep their own reference */
}

/* The CA a call signs with, taken when it starts: a reference the call drops. */
static struct tls_ca *current_ca(struct ca_service *s)
{
	struct tls_ca *ca;

	pthread_mutex_lock(&s->ca_lock);
	ca = tls_ca_ref(s->ca);
	pthread_mutex_unlock(&s->ca_lock);
	return ca;
}

uint64_t ca_service_count(struct ca_service *s, enum ca_result r)
{
	return atomic_load(&s->count[r]);
}

/* The state of one call, for its decision line. */
struct call_log {
	const struct grpc_server_call *call;
	struct ca_caller caller;
	bool authenticated;
	char identity[SPIFFE_ID_STR_MAX];
	int64_t validity_s;
	char serial[64];
};

/* Ends the call: status and message into reply, one counter, one log line. */
static void decide(struct ca_service *s, struct call_log *cl, struct grpc_server_reply *reply,
		   enum ca_result r, int status, const char *msg)
{
	char caller[64 + 254 + 2] = "-", validity[24];

	atomic_fetch_add(&s->count[r], 1);
	reply->status = status;
	snprintf(reply->message, sizeof(reply->message), "%s", msg ? msg : "");
	if (cl->authenticated)
		snprintf(caller, sizeof(caller), "%s/%s", cl->caller.ns, cl->caller.sa);
	snprintf(validity, sizeof(validity), "%lld", (long long)cl->validity_s);
	struct log_field f[] = {
		{ "decision", ca_result_str(r), false },
		{ "grpc_status", grpc_status_name(status), false },
		{ "caller", caller, false },
		{ "caller_node", cl->caller.node[0] ? cl->caller.node : "-", false },
		{ "caller_pod", cl->caller.pod[0] ? cl->caller.pod : "-", false },
		{ "identity", cl->identity[0] ? cl->identity : "-", false },
		{ "validity_s", validity, true },
		{ "peer", cl->call->peer, false },
		{ "reason", msg && *msg ? msg : "-", false },
	};
	log_fields(r == CA_RES_ISSUED ? LOG_LVL_INFO : LOG_LVL_WARN, f, (int)ARRAY_SIZE(f),
		   "CreateCertificate %s", ca_result_str(r));
}

static int authenticate(struct ca_service *s, const struct grpc_server_call *call,
			struct ca_caller *caller, char *why)
{
	const char *token;
	size_t len;

	if (ca_auth_bearer(grpc_server_call_header(call, "authorization"), &token, &len)) {
		snprintf(why, CA_WHY_MAX, "no bearer token in authorization");
		return -EACCES;
	}
	if (s->keys)
		return ca_auth_jwt(s->keys, token, len, s->cfg->audience, (int64_t)time(NULL), caller,
				   why);
	return ca_auth_tokenreview(s->tr, token, len, s->cfg->audience, caller, why);
}

void ca_service_handle(void *arg, const struct grpc_server_call *call,
		       struct grpc_server_reply *reply)
{
	struct ca_service *s = arg;
	struct tls_ca *ca = NULL;
	struct call_log cl = { .call = call };
	struct ca_request req = { 0 };
	struct tls_csr_req *csr = NULL;
	struct model *m = NULL;
	struct spiffe_id csr_id, grant;
	char why[CA_WHY_MAX], cwhy[TLS_CSR_WHY_MAX], key[64 + 254 + 260];
	char *chain = NULL;
	size_t chain_len;
	int err, st;

	if (strcmp(call->path, CA_GRPC_PATH) != 0) {
		decide(s, &cl, reply, CA_RES_UNIMPLEMENTED, GRPC_STATUS_UNIMPLEMENTED,
		       "unknown method");
		return;
	}
	/* Istio answers a bad token UNAUTHENTICATED; an API server it could not ask is not
	 * the caller's fault: UNAVAILABLE, so the agent retries. */
	err = authenticate(s, call, &cl.caller, why);
	if (err) {
		decide(s, &cl, reply, err == -EIO ? CA_RES_UNAVAILABLE : CA_RES_UNAUTHENTICATED,
		       err == -EIO ? GRPC_STATUS_UNAVAILABLE : GRPC_STATUS_UNAUTHENTICATED, why);
		return;
	}
	cl.authenticated = true;
	if (cl.caller.node[0])
		snprintf(key, sizeof(key), "node/%s", cl.caller.node);
	else
		snprintf(key, sizeof(key), "sa/%s/%s", cl.caller.ns, cl.caller.sa);
	if (!ca_ratelimit_take(s->rl, key, now_mono_ms())) {
		decide(s, &cl, reply, CA_RES_RATE_LIMITED, GRPC_STATUS_RESOURCE_EXHAUSTED,
		       "rate limit: too many requests from this caller");
		return;
	}
	ca = current_ca(s);	/* a key switched meanwhile is for the next call */
	if (ca_msg_request_decode(call->msg, call->len, &req, why, sizeof(why))) {
		decide(s, &cl, reply, CA_RES_INVALID, GRPC_STATUS_INVALID_ARGUMENT, why);
		goto out;
	}
	if (req.impersonated)
		snprintf(cl.identity, sizeof(cl.identity), "%.*s", (int)sizeof(cl.identity) - 1,
			 req.impersonated);
	if (tls_csr_parse(req.csr, req.csr_len, &csr, &csr_id, cwhy)) {
		decide(s, &cl, reply, CA_RES_INVALID, GRPC_STATUS_INVALID_ARGUMENT, cwhy);
		goto out;
	}
	m = model_current();
	if (req.impersonated && m->generation == 0) {
		decide(s, &cl, reply, CA_RES_UNAVAILABLE, GRPC_STATUS_UNAVAILABLE,
		       "no view of the cluster's pods yet");
		goto out;
	}
	st = ca_authorize(&s->policy, &cl.caller, req.impersonated, &csr_id, m, &grant, why);
	if (st != GRPC_STATUS_OK) {
		if (!cl.identity[0])
			spiffe_id_str(&csr_id, cl.identity);
		decide(s, &cl, reply, st == GRPC_STATUS_INVALID_ARGUMENT ? CA_RES_INVALID
									 : CA_RES_DENIED, st, why);
		goto out;
	}
	spiffe_id_str(&grant, cl.identity);
	/* validity_duration: what was asked, within the cap (Istio caps at its max TTL too) */
	cl.validity_s = req.validity_s > 0 ? MIN(req.validity_s, (int64_t)s->cfg->max_validity_s)
					   : (int64_t)s->cfg->default_validity_s;
	struct tls_issue_opts o = { .lifetime_s = (uint32_t)cl.validity_s };
	if ((err = tls_ca_sign_csr(ca, csr, &grant, &o, &chain, &chain_len)) ||
	    (err = ca_msg_response_encode(chain, chain_len, &reply->response,
					  &reply->response_len))) {
		snprintf(why, sizeof(why), "signing: %s", strerror(-err));
		decide(s, &cl, reply, CA_RES_ERROR, GRPC_STATUS_INTERNAL, why);
		goto out;
	}
	decide(s, &cl, reply, CA_RES_ISSUED, GRPC_STATUS_OK, NULL);
out:
	tls_ca_free(ca);
	free(chain);
	model_unref(m);
	tls_csr_req_free(csr);
	ca_request_fini(&req);
}

char *ca_service_metrics(struct ca_service *s, size_t *len)
{
	char *buf = NULL;
	size_t cap = 0;
	FILE *f = open_memstream(&buf, &cap);

	if (!f)
		return NULL;
	fprintf(f, "# HELP ambit_ca_server_requests_total CreateCertificate calls by decision.\n"
		   "# TYPE ambit_ca_server_requests_total counter\n");
	for (int r = 0; r < CA_RES_COUNT; r++)
		fprintf(f, "ambit_ca_server_requests_total{decision=\"%s\"} %llu\n", result_names[r],
			(unsigned long long)atomic_load(&s->count[r]));
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	*len = cap;
	return buf;
}
