/* SPDX-License-Identifier: Apache-2.0 */
/* Who is calling ambit-ca: the bearer token of a CreateCertificate call checked either
 * offline (tokens.issuer_keys: the JWT's signature, exp/nbf, aud, and its kubernetes.io
 * claims) or by the API server (TokenReview, in-cluster). Either way the result is the
 * caller's service account, pod and node. */
#ifndef AMBIT_CA_AUTH_H
#define AMBIT_CA_AUTH_H

#include <stddef.h>
#include <stdint.h>

struct tls_jwt_keys;

#define CA_TOKEN_MAX 16384	/* bytes of a bearer token we look at */
#define CA_AUTH_LEEWAY_S 30	/* clock skew allowed on exp and nbf */
#define CA_WHY_MAX 200

/* The authenticated caller. Strings are NUL-terminated; "" when the token did not say. */
struct ca_caller {
	char ns[64];		/* service account namespace */
	char sa[254];		/* service account name */
	char pod[254];		/* the pod the token is bound to */
	char node[254];		/* the node that pod runs on */
};

/* Formats why (CA_WHY_MAX) and returns ret: "return ca_whyf(why, -EACCES, ...)". */
int ca_whyf(char *why, int ret, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The token of an "authorization: Bearer TOKEN" value (scheme case-insensitive, RFC 6750).
 * 0 with *token and *len pointing into value, or -EINVAL. */
int ca_auth_bearer(const char *value, const char **token, size_t *len);

/* Verifies a compact JWS (RFC 7515 §7.1) offline: header alg ES256 or RS256 (never none),
 * no crit; signature by one of keys; payload exp present and now < exp + leeway, nbf (when
 * present) <= now + leeway; aud (string or array) contains audience; sub
 * "system:serviceaccount:NS:SA"; kubernetes.io {namespace, serviceaccount.name, pod.name,
 * node.name} consistent with sub. 0 and *out, or -EACCES with why (CA_WHY_MAX) saying
 * what ("token expired", "audience istio-ca not in aud", ...). */
int ca_auth_jwt(const struct tls_jwt_keys *keys, const char *token, size_t len,
		const char *audience, int64_t now, struct ca_caller *out, char *why);

struct ca_tokenreview {
	const char *api_url;	/* https://host:port of the API server */
	const char *ca_file;	/* its CA; NULL = the system store */
	const char *token_file;	/* ambit-ca's own token, re-read per review */
	long timeout_ms;
};
/* Asks the API server (POST /apis/authentication.k8s.io/v1/tokenreviews with spec.token and
 * spec.audiences = [audience]) whether the token is valid; the answer's user
 * (system:serviceaccount:NS:SA) and extra authentication.kubernetes.io/{pod-name,node-name}
 * fill *out. 0; -EACCES (not authenticated: why has the API server's error); -EIO (the API
 * server could not be asked or answered nonsense: why says what). Blocking; thread-safe. */
int ca_auth_tokenreview(const struct ca_tokenreview *tr, const char *token, size_t len,
			const char *audience, struct ca_caller *out, char *why);

#endif
