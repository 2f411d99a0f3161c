/* SPDX-License-Identifier: Apache-2.0 */
/* ambit-ca's signing credentials without restarts: ca.cert and ca.key are polled (as the
 * agents poll their trust bundle: stat, which follows a Kubernetes volume's ..data symlink
 * swap), and a changed pair is loaded and checked before ca/main.c swaps it in; a pair that
 * fails the checks is refused and the current one stays. Also when the serving certificate
 * is due for renewal. Runs on ambit-ca's loop thread. */
#ifndef AMBIT_CA_RELOAD_H
#define AMBIT_CA_RELOAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

struct tls_ca;

#define CA_RELOAD_CHECK_MS 2000

struct ca_reload {
	const char *cert_path, *key_path;	/* borrowed (the config's) */
	struct stat cert_st, key_st;		/* of the pair last tried, good or bad */
	uint64_t reloads;			/* pairs swapped in */
	uint64_t errors;			/* changed pairs refused */
};

/* Remembers the files as they are now (call it before loading the pair at start). 0, or
 * -errno when one cannot be stat'ed (nothing remembered: the first poll loads the pair). */
int ca_reload_init(struct ca_reload *r, const char *cert_path, const char *key_path);
/* The checks a new pair must pass beyond tls_ca_load's (the key matches the certificate,
 * which is a CA): a signing key, and now within the certificate's validity. 0 or -EINVAL
 * (-EKEYEXPIRED when expired) with err saying why. */
int ca_reload_validate(const struct tls_ca *ca, int64_t now, char *err, size_t errlen);
/* When either file changed since the last call: loads the pair and checks it. 1 with *out a
 * new CA (the caller owns it); 0 nothing changed; -errno the changed pair is refused (err
 * says why, counted in errors; it is not tried again until a file changes again). */
int ca_reload_poll(struct ca_reload *r, int64_t now, struct tls_ca **out, char *err,
		   size_t errlen);
/* When a serving certificate issued at issued_at and expiring at not_after is renewed: at
 * fraction of its lifetime (counted from its issuance, not its backdated notBefore). */
int64_t ca_reload_serving_due(int64_t issued_at, int64_t not_after, double fraction);

#endif
