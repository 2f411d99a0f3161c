// SPDX-License-Identifier: Apache-2.0
/* Polls ambit-ca's ca.cert/ca.key and checks a changed pair before it is swapped in; the
 * serving certificate's renewal time. */
#include "ca/reload.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "tls/ca.h"

int ca_reload_init(struct ca_reload *r, const char *cert_path, const char *key_path)
{
	memset(r, 0, sizeof(*r));
	r->cert_path = cert_path;
	r->key_path = key_path;
	if (stat(cert_path, &r->cert_st) == -1 || stat(key_path, &r->key_st) == -1) {
		int e = errno;
		memset(&r->cert_st, 0, sizeof(r->cert_st));
		memset(&r->key_st, 0, sizeof(r->key_st));
		return -e;
	}
	return 0;
}

int ca_reload_validate(const struct tls_ca *ca, int64_t now, char *err, size_t errlen)
{
	if (!tls_ca_has_key(ca)) {
		snprintf(err, errlen, "no signing key");
		return -EINVAL;
	}
	if (tls_ca_not_after(ca) <= now) {
		snprintf(err, errlen, "the CA certificate expired %lld s ago",
			 (long long)(now - tls_ca_not_after(ca)));
		return -EKEYEXPIRED;
	}
	if (tls_ca_not_before(ca) > now) {
		snprintf(err, errlen, "the CA certificate is not valid for another %lld s",
			 (long long)(tls_ca_not_before(ca) - now));
		return -EINVAL;
	}
	return 0;
}

int ca_reload_poll(struct ca_reload *r, int64_t now, struct tls_ca **out, char *err,
		   size_t errlen)
{
	struct stat cst, kst;
	struct tls_ca *ca;
	int rc;

	*out = NULL;
	memset(&cst, 0, sizeof(cst));
	memset(&kst, 0, sizeof(kst));
	/* a file that is gone counts as changed (zeroed), once: the current pair stays */
	if (stat(r->cert_path, &cst) == -1)
		memset(&cst, 0, sizeof(cst));
	if (stat(r->key_path, &kst) == -1)
		memset(&kst, 0, sizeof(kst));
	if (stat_same_file(&cst, &r->cert_st) && stat_same_file(&kst, &r->key_st))
		return 0;
	r->cert_st = cst;
	r->key_st = kst;
	if (!(ca = tls_ca_load(r->cert_path, r->key_path, err, errlen))) {
		rc = -errno;
		goto bad;
	}
	if ((rc = ca_reload_validate(ca, now, err, errlen))) {
		tls_ca_free(ca);
		goto bad;
	}
	r->reloads++;
	*out = ca;
	return 1;
bad:
	r->errors++;
	return rc ? rc : -EINVAL;
}

int64_t ca_reload_serving_due(int64_t issued_at, int64_t not_after, double fraction)
{
	int64_t life = not_after > issued_at ? not_after - issued_at : 0;

	return issued_at + (int64_t)((double)life * fraction);
}
