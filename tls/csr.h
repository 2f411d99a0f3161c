/* SPDX-License-Identifier: Apache-2.0 */
/* Certificate signing requests for Istio's certificate API: the client side makes a P-256 key
 * and a PEM CSR whose only SAN is a SPIFFE ID, then turns the CA's answer into a tls_cert; the
 * CA side parses a caller's CSR defensively and signs its public key (tls_ca_sign_csr). */
#ifndef AMBIT_TLS_CSR_H
#define AMBIT_TLS_CSR_H

#include <stddef.h>
#include <stdint.h>

#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/identity.h"

/* Bounds on what a CA accepts: a PEM CSR (a P-256 one is about 500 bytes, RSA-4096 about
 * 1.7 KiB) and the PEM chain a client accepts back. */
#define TLS_CSR_PEM_MAX 8192
#define TLS_CHAIN_PEM_MAX (64 * 1024)
#define TLS_CSR_WHY_MAX 160

/* ---- client side ---- */

struct tls_csr;

/* A fresh ECDSA P-256 key and a CSR signed with it (SHA-256) whose subject is empty and whose
 * only extension is a critical subjectAltName holding one URI, id. NULL + errno. The caller
 * owns the result (tls_csr_free). Thread-safe. */
struct tls_csr *tls_csr_new(const struct spiffe_id *id);
/* Wipes the key. Accepts NULL. */
void tls_csr_free(struct tls_csr *csr);
/* The CSR as PEM, NUL-terminated, owned by csr; its length without the NUL. */
const char *tls_csr_pem(const struct tls_csr *csr);
size_t tls_csr_pem_len(const struct tls_csr *csr);
const struct spiffe_id *tls_csr_id(const struct tls_csr *csr);

/* Turns the CA's answer into credentials: chain_pem (len bytes, at most TLS_CHAIN_PEM_MAX,
 * no NUL needed) is the leaf first, then intermediates, optionally the root last (as Istio's
 * IstioCertificateResponse.cert_chain, one PEM or several concatenated). The leaf must hold
 * the CSR's public key and exactly the CSR's SPIFFE ID; with roots non-NULL it must chain to
 * them at `now` (0 = time(NULL)). Self-signed certificates are not kept in the chain.
 * The key is copied into the cert (a new reference; csr stays usable and is still the
 * caller's). NULL + errno (EINVAL bad answer, EACCES does not verify, ENOMEM); err gets one
 * line saying what. */
struct tls_cert *tls_csr_accept(const struct tls_csr *csr, const char *chain_pem, size_t len,
				struct tls_ca *roots, int64_t now, char *err, size_t errlen);

/* ---- CA side ---- */

struct tls_csr_req;

/* Parses a caller's PEM CSR (len bytes, not NUL-terminated, at most TLS_CSR_PEM_MAX):
 * exactly one PEM CERTIFICATE REQUEST block (only whitespace around it), a valid
 * self-signature, a public key that is EC P-256 or P-384 or RSA 2048..4096 bits, and a
 * subjectAltName with exactly one entry, a URI that is a SPIFFE ID (no DNS, IP, e-mail or
 * other names). On success *out (owned by the caller, tls_csr_req_free) and *id are set.
 * -EINVAL (or -EMSGSIZE for an oversize input, -ENOMEM) with why (TLS_CSR_WHY_MAX) saying
 * what, e.g. "CSR has 2 subjectAltName entries". Never reads beyond len. */
int tls_csr_parse(const void *pem, size_t len, struct tls_csr_req **out, struct spiffe_id *id,
		  char why[TLS_CSR_WHY_MAX]);
void tls_csr_req_free(struct tls_csr_req *req);

/* Issues a leaf for req's public key with identity id (the caller has checked it may), the
 * same profile as tls_ca_issue, and returns the PEM chain as Istio's CA does: leaf, the CA's
 * intermediates, then the root (malloc'ed, NUL-terminated, *len without the NUL, the caller
 * frees). opts may be NULL. Thread-safe. 0 or -errno (-ENOKEY verify-only CA). */
int tls_ca_sign_csr(struct tls_ca *ca, const struct tls_csr_req *req, const struct spiffe_id *id,
		    const struct tls_issue_opts *opts, char **chain_pem, size_t *len);

#endif
