// SPDX-License-Identifier: Apache-2.0
/* CreateCertificate as ztunnel sends it (istio/ztunnel src/identity/caclient.rs): a PEM CSR
 * for the workload's SPIFFE ID, validity_duration, metadata {ImpersonatedIdentity: the ID},
 * `authorization: Bearer <token>`; the leaf and chain of the answer are accepted only when
 * they carry our key and that ID and chain to the trust bundle. Runs on certstore workers. */
#include "ca/client.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ca/msg.h"
#include "common/log.h"
#include "common/util.h"
#include "grpc/client.h"
#include "tls/csr.h"

#define CA_MAX_CONNS 16
#define CA_TOKEN_MAX (16 * 1024)	/* a service account token is 1-2 KiB */

struct ca_slot {
	struct grpc_client *g;	/* made on first use */
	uint64_t gen;		/* the bundle generation g trusts */
	bool busy;
};

struct ca_client {
	char *address;
	char host[256];
	uint16_t port;
	char *bundle;
	struct tls_ca *roots;	/* the bundle as last loaded; replaced under the lock */
	struct stat bundle_st;	/* the file it came from */
	uint64_t bundle_gen;	/* bumped at each reload: older connections are remade */
	char *token_file;
	uint32_t timeout_ms;
	bool impersonate;
	struct certstore_backend be;

	pthread_mutex_t lock;	/* guards the slots, the token, the roots and the stats */
	pthread_cond_t slot_free;
	struct ca_slot slots[CA_MAX_CONNS];
	unsigned nslots;
	/* the token as last read, and the file identity it came from */
	char *token;
	struct stat token_st;
	struct ca_client_stats st;
};

int ca_address_parse(const char *address, char *host, size_t hostlen, uint16_t *port)
{
	const char *h, *hend, *rest;

	if (!address || strncmp(address, "https://", 8) != 0)
		return -EINVAL;
	h = address + 8;
	if (strpbrk(h, "/?#@ \t"))	/* no path, query, user or spaces: host and port only */
		return -EINVAL;
	if (*h == '[') {	/* [IPv6]:port */
		if (!(hend = strchr(++h, ']')))
			return -EINVAL;
		rest = hend + 1;
	} else {
		hend = strchr(h, ':');
		if (!hend)
			hend = h + strlen(h);
		rest = hend;
	}
	if (hend == h || (size_t)(hend - h) >= hostlen || (*rest && *rest != ':'))
		return -EINVAL;
	memcpy(host, h, (size_t)(hend - h));
	host[hend - h] = '\0';
	*port = CA_DEFAULT_PORT;
	if (*rest == ':') {
		char *e;
		unsigned long p = strtoul(rest + 1, &e, 10);
		if (e == rest + 1 || *e || !p || p > 65535)
			return -EINVAL;
		*port = (uint16_t)p;
	}
	return 0;
}

static struct tls_cert *backend_issue(void *arg, const struct spiffe_id *id, uint32_t lifetime_s,
				      int64_t now, char *why, size_t whylen)
{
	(void)now;	/* the CA's clock decides the validity */
	return ca_client_fetch(arg, id, lifetime_s, why, whylen);
}

struct ca_client *ca_client_new(const struct ca_client_opts *o, char *err, size_t errlen)
{
	struct ca_client *c;
	int e = ENOMEM;

	if (!o || !o->address || !o->bundle) {
		errno = EINVAL;
		return NULL;
	}
	if (!(c = calloc(1, sizeof(*c))))
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->slot_free, NULL);
	if (ca_address_parse(o->address, c->host, sizeof(c->host), &c->port)) {
		snprintf(err, errlen, "ca.address: '%s' is not https://HOST[:PORT]", o->address);
		e = EINVAL;
		goto fail;
	}
	c->address = strdup(o->address);
	c->bundle = strdup(o->bundle);
	c->token_file = o->token_file ? strdup(o->token_file) : NULL;
	if (!c->address || !c->bundle || (o->token_file && !c->token_file))
		goto fail;
	if (stat(c->bundle, &c->bundle_st) == -1) {
		e = errno;
		snprintf(err, errlen, "%s: %s", c->bundle, strerror(e));
		goto fail;
	}
	if (!(c->roots = tls_ca_load(c->bundle, NULL, err, errlen))) {
		e = errno;
		goto fail;
	}
	c->timeout_ms = o->timeout_ms ? o->timeout_ms : CA_CALL_TIMEOUT_MS;
	c->impersonate = o->impersonate;
	c->nslots = o->max_conns ? o->max_conns : 4;
	if (c->nslots > CA_MAX_CONNS)
		c->nslots = CA_MAX_CONNS;
	/* The first connection now: a bad bundle file is a configuration error, reported once. */
	struct grpc_client_opts go = { .host = c->host, .port = c->port, .tls = true,
				       .ca_file = c->bundle };
	if (!(c->slots[0].g = grpc_client_new(&go, err, errlen))) {
		e = errno;
		goto fail;
	}
	c->be = (struct certstore_backend){ .issue = backend_issue, .arg = c, .name = c->address };
	return c;
fail:
	ca_client_free(c);
	errno = e;
	return NULL;
}

void ca_client_free(struct ca_client *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < CA_MAX_CONNS; i++)
		grpc_client_free(c->slots[i].g);
	if (c->token)
		explicit_bzero(c->token, strlen(c->token));
	free(c->token);
	tls_ca_free(c->roots);
	free(c->address);
	free(c->bundle);
	free(c->token_file);
	pthread_cond_destroy(&c->slot_free);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

const struct certstore_backend *ca_client_backend(struct ca_client *c)
{
	return &c->be;
}

void ca_client_stats(struct ca_client *c, struct ca_client_stats *st)
{
	pthread_mutex_lock(&c->lock);
	*st = c->st;
	pthread_mutex_unlock(&c->lock);
}

/* The bearer token, re-read when the file is another one (kubelet swaps a projected token by
 * symlink) or changed in place. A malloc'ed copy, or NULL + errno with why. Lock held. */
static char *token_get(struct ca_client *c, char *why, size_t whylen)
{
	struct stat st;
	char *tok;
	size_t len;

	if (stat(c->token_file, &st) == -1) {
		int e = errno;
		snprintf(why, whylen, "ca.token_file %s: %s", c->token_file, strerror(e));
		errno = ENOKEY;
		return NULL;
	}
	if (!c->token || st.st_ino != c->token_st.st_ino || st.st_dev != c->token_st.st_dev ||
	    st.st_size != c->token_st.st_size ||
	    st.st_mtim.tv_sec != c->token_st.st_mtim.tv_sec ||
	    st.st_mtim.tv_nsec != c->token_st.st_mtim.tv_nsec) {
		if (!(tok = read_file_bounded(c->token_file, CA_TOKEN_MAX, &len))) {
			int e = errno;
			snprintf(why, whylen, "ca.token_file %s: %s", c->token_file, strerror(e));
			errno = ENOKEY;
			return NULL;
		}
		while (len && (tok[len - 1] == '\n' || tok[len - 1] == '\r' || tok[len - 1] == ' '))
			tok[--len] = '\0';
		if (!len) {
			free(tok);
			snprintf(why, whylen, "ca.token_file %s: empty", c->token_file);
			errno = ENOKEY;
			return NULL;
		}
		if (c->token) {
			explicit_bzero(c->token, strlen(c->token));
			c->st.token_reloads++;
		}
		free(c->token);
		c->token = tok;
		c->token_st = st;
	}
	if (!(tok = strdup(c->token)))
		snprintf(why, whylen, "out of memory");
	return tok;
}

/* The trust bundle, re-read when the file is another one (Kubernetes swaps a mounted ConfigMap
 * by symlink) or changed in place: issued chains must then verify to the new roots, and
 * connections are remade to verify the CA's serving cert against them. A bundle that does
 * not load leaves the old one in use (logged once per change). Lock held. */
static void bundle_check(struct ca_client *c)
{
	struct stat st;
	struct tls_ca *roots;
	char err[256];

	if (stat(c->bundle, &st) == -1 || (st.st_ino == c->bundle_st.st_ino &&
	    st.st_dev == c->bundle_st.st_dev && st.st_size == c->bundle_st.st_size &&
	    st.st_mtim.tv_sec == c->bundle_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == c->bundle_st.st_mtim.tv_nsec))
		return;
	c->bundle_st = st;
	if (!(roots = tls_ca_load(c->bundle, NULL, err, sizeof(err)))) {
		pr_warn("ca: the trust bundle changed but does not load, the old one stays: %s", err);
		return;
	}
	tls_ca_free(c->roots);
	c->roots = roots;
	c->bundle_gen++;
	c->st.bundle_reloads++;
	pr_info("ca: trust bundle %s reloaded", c->bundle);
}

/* A connection for this call: a free slot, made on first use; waits while all are busy.
 * Lock held. NULL + why when a connection cannot be made. */
static struct ca_slot *slot_take(struct ca_client *c, char *why, size_t whylen)
{
	for (;;) {
		for (unsigned i = 0; i < c->nslots; i++) {
			struct ca_slot *s = &c->slots[i];
			if (s->busy)
				continue;
			if (s->g && s->gen != c->bundle_gen) {
				grpc_client_free(s->g);
				s->g = NULL;
			}
			if (!s->g) {
				struct grpc_client_opts go = { .host = c->host, .port = c->port,
							       .tls = true, .ca_file = c->bundle };
				if (!(s->g = grpc_client_new(&go, why, whylen)))
					return NULL;
				s->gen = c->bundle_gen;
			}
			s->busy = true;
			return s;
		}
		pthread_cond_wait(&c->slot_free, &c->lock);
	}
}

static void slot_give(struct ca_client *c, struct ca_slot *s)
{
	pthread_mutex_lock(&c->lock);
	s->busy = false;
	pthread_cond_signal(&c->slot_free);
	pthread_mutex_unlock(&c->lock);
}

struct tls_cert *ca_client_fetch(struct ca_client *c, const struct spiffe_id *id,
				 uint32_t lifetime_s, char *why, size_t whylen)
{
	char ids[SPIFFE_ID_STR_MAX], auth[CA_TOKEN_MAX + 16];
	struct tls_csr *csr = NULL;
	struct ca_slot *slot = NULL;
	struct grpc_result res = { 0 };
	struct grpc_header hdr[1];
	size_t nhdr = 0, reqlen = 0, pemlen = 0, ncerts = 0;
	uint8_t *req = NULL;
	char *token = NULL, *pem = NULL;
	struct tls_cert *cert = NULL;
	char err[256];
	int e = 0, rc;

	why[0] = '\0';
	spiffe_id_str(id, ids);
	pthread_mutex_lock(&c->lock);
	c->st.calls++;
	if (c->token_file && !(token = token_get(c, why, whylen))) {
		e = errno == ENOKEY ? ENOKEY : ENOMEM;
		pthread_mutex_unlock(&c->lock);
		goto out;
	}
	bundle_check(c);
	slot = slot_take(c, err, sizeof(err));
	pthread_mutex_unlock(&c->lock);
	if (!slot) {
		snprintf(why, whylen, "CA %s: %s", c->address, err);
		e = errno ? errno : EIO;
		goto out;
	}
	if (!(csr = tls_csr_new(id)) ||
	    (rc = ca_msg_request_encode(tls_csr_pem(csr), lifetime_s,
						c->impersonate ? ids : NULL, &req, &reqlen))) {
		e = ENOMEM;
		snprintf(why, whylen, "cannot make the request: %s", strerror(e));
		goto out;
	}
	if (token) {
		snprintf(auth, sizeof(auth), "Bearer %s", token);
		hdr[nhdr++] = (struct grpc_header){ "authorization", auth };
	}
	rc = grpc_client_call(slot->g, CA_GRPC_PATH, hdr, nhdr, req, reqlen, c->timeout_ms, NULL,
			      &res);
	if (rc) {
		snprintf(why, whylen, "CA %s unreachable: %s", c->address, res.message);
		e = -rc;
		grpc_client_disconnect(slot->g);
		pthread_mutex_lock(&c->lock);
		c->st.transport_errors++;
		pthread_mutex_unlock(&c->lock);
		goto out;
	}
	if (res.status != GRPC_STATUS_OK) {
		snprintf(why, whylen, "CA %s refused %s: %s: %s", c->address, ids,
			 grpc_status_name(res.status), res.message);
		e = res.status == GRPC_STATUS_UNAVAILABLE ? EAGAIN : EACCES;
		pthread_mutex_lock(&c->lock);
		c->st.refused++;
		pthread_mutex_unlock(&c->lock);
		goto out;
	}
	if ((rc = ca_msg_response_decode(res.response, res.response_len, &pem, &pemlen, &ncerts))) {
		snprintf(why, whylen, "CA %s: undecodable answer: %s", c->address, strerror(-rc));
		e = EINVAL;
		goto bad;
	}
	/* ztunnel's SanError check and more: our key, exactly our ID, chained to the bundle
	 * (under the lock: a reload may replace the roots). */
	pthread_mutex_lock(&c->lock);
	cert = tls_csr_accept(csr, pem, pemlen, c->roots, 0, err, sizeof(err));
	pthread_mutex_unlock(&c->lock);
	if (!cert) {
		e = errno;
		snprintf(why, whylen, "CA %s: answer for %s refused: %s", c->address, ids, err);
		goto bad;
	}
	goto out;
bad:
	pthread_mutex_lock(&c->lock);
	c->st.bad_answers++;
	pthread_mutex_unlock(&c->lock);
out:
	if (slot)
		slot_give(c, slot);
	grpc_result_fini(&res);
	explicit_bzero(auth, sizeof(auth));
	if (token)
		explicit_bzero(token, strlen(token));
	free(token);
	free(req);
	free(pem);
	tls_csr_free(csr);
	if (!cert)
		errno = e ? e : EIO;
	return cert;
}
