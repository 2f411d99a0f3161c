/* SPDX-License-Identifier: Apache-2.0 */
/* JWS signatures (RFC 7515) of Kubernetes service-account tokens, for ambit-ca's
 * tokens.issuer_keys: ES256 (RFC 7518 §3.4) and RS256 (§3.3) checked against PEM public keys.
 * The claims (exp, aud, the kubernetes.io node) are ca/token.c's business. */
#ifndef AMBIT_TLS_JWT_H
#define AMBIT_TLS_JWT_H

#include <stddef.h>
#include <stdint.h>

struct tls_jwt_keys;

#define TLS_JWT_KEYS_MAX 16

/* Loads every PEM PUBLIC KEY (or CERTIFICATE, whose key is taken) of the files paths[0, n):
 * EC P-256 keys serve ES256, RSA keys of 2048 bits or more serve RS256; other keys are
 * refused. NULL + errno, err names the file and the problem. */
struct tls_jwt_keys *tls_jwt_keys_load(const char *const *paths, size_t n, char *err,
				       size_t errlen);
void tls_jwt_keys_free(struct tls_jwt_keys *k);
size_t tls_jwt_keys_count(const struct tls_jwt_keys *k);

/* Verifies sig[0, siglen) over input[0, len) for alg ("ES256": the 64-byte R||S of RFC 7518
 * §3.4; "RS256") with any loaded key of that type. 0; -ENOTSUP for another alg (none, HS256,
 * ...); -EACCES when no key verifies it. Thread-safe. */
int tls_jwt_verify(const struct tls_jwt_keys *k, const char *alg, const void *input, size_t len,
		   const uint8_t *sig, size_t siglen);

#endif
