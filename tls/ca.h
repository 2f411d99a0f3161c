/* SPDX-License-Identifier: Apache-2.0 */
/* The mesh CA: loads ca.crt/ca.key (config `ca`), issues workload leaf certificates
 * (ECDSA P-256, URI SAN = SPIFFE ID, 24 h), and makes self-signed roots for tests/ca-init. */
#ifndef AMBIT_TLS_CA_H
#define AMBIT_TLS_CA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tls/cert.h"
#include "tls/identity.h"

struct tls_ca;

#define TLS_LEAF_LIFETIME_DEFAULT_S (24 * 3600)
#define TLS_LEAF_BACKDATE_S 60	/* not-before moved back for clock skew between nodes */

/* Loads the CA: cert_path holds the signing certificate first, then optionally its chain up
 * to the root (all of them become trust anchors for verification). key_path may be NULL for a
 * verify-only CA (tls_ca_issue then fails with -ENOKEY). Checks the key matches the cert and
 * the cert is a CA. NULL + errno, err (may be NULL) gets one line naming the file. */
struct tls_ca *tls_ca_load(const char *cert_path, const char *key_path, char *err,
			   size_t errlen);
/* Makes a new self-signed root (ECDSA P-256, CA:TRUE, keyCertSign|cRLSign) with subject
 * O=<trust_domain>, CN=ambit mesh root, valid lifetime_s from now - backdate. NULL + errno. */
struct tls_ca *tls_ca_new_self_signed(const char *trust_domain, uint32_t lifetime_s);
/* Writes the CA's cert (0644) and key (0600, created exclusively: an existing key file is
 * -EEXIST) as PEM. For `ambitd ca-init`. 0 or -errno; err names the file. */
int tls_ca_write(const struct tls_ca *ca, const char *cert_path, const char *key_path,
		 char *err, size_t errlen);
/* CAs are shared by reference (a CA swapped while calls still sign with the old one): ref
 * takes one more and returns ca (NULL accepted); free drops one, and the last frees and wipes
 * the key. Thread-safe. Accepts NULL. */
struct tls_ca *tls_ca_ref(struct tls_ca *ca);
void tls_ca_free(struct tls_ca *ca);
/* The signing certificate's validity (Unix seconds), and whether a key was loaded. */
int64_t tls_ca_not_before(const struct tls_ca *ca);
int64_t tls_ca_not_after(const struct tls_ca *ca);
bool tls_ca_has_key(const struct tls_ca *ca);
/* Whether c's chain ends at a certificate issued by ca's first one (in a trust bundle the
 * first root, which a CA that switched its signing key writes first): a leaf for which this is
 * false comes from a root that is on its way out. A name/key-identifier match, no signature
 * check (c was verified when it arrived). */
bool tls_ca_issued_by_first(const struct tls_ca *ca, const struct tls_cert *c);

/* The trust bundle agents need, as PEM: the self-signed roots of ca.crt (every certificate
 * of it when it holds no root). malloc'ed, NUL-terminated; NULL + errno. */
char *tls_ca_roots_pem(const struct tls_ca *ca);

struct tls_issue_opts {
	uint32_t lifetime_s;	/* 0 = TLS_LEAF_LIFETIME_DEFAULT_S */
	int64_t now;		/* Unix seconds of issuance; 0 = time(NULL) (tests inject) */
};

/* Issues a leaf for id: fresh P-256 key, random 128-bit serial, validity
 * [now - 60 s, now + lifetime], KU digitalSignature+keyEncipherment, EKU serverAuth+clientAuth,
 * CA:FALSE, SKI/AKI, URI SAN = id. opts may be NULL. Thread-safe for one ca.
 * Returns a cert with one reference owned by the caller; NULL + errno (ENOKEY: verify-only CA). */
struct tls_cert *tls_ca_issue(struct tls_ca *ca, const struct spiffe_id *id,
			      const struct tls_issue_opts *opts);

#endif
