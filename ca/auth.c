// SPDX-License-Identifier: Apache-2.0
/* Caller authentication for ambit-ca: Kubernetes service-account tokens checked as JWTs with
 * the issuer's keys (signature in tls/jwt.c, claims here) or by TokenReview through
 * common/httpc. */
#include "ca/auth.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/httpc.h"
#include "common/util.h"
#include "tls/jwt.h"

#define SA_PREFIX "system:serviceaccount:"
#define SEG_MAX (CA_TOKEN_MAX * 3 / 4 + 4)	/* a decoded segment is at most this long */

int ca_whyf(char *why, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, CA_WHY_MAX, fmt, ap);
	va_end(ap);
	return ret;
}

int ca_auth_bearer(const char *value, const char **token, size_t *len)
{
	if (!value || strncasecmp(value, "Bearer ", 7) != 0)
		return -EINVAL;
	value += 7;
	while (*value == ' ')
		value++;
	*len = strlen(value);
	while (*len && value[*len - 1] == ' ')
		(*len)--;
	*token = value;
	return *len ? 0 : -EINVAL;
}

/* Copies a bounded string into a fixed field; false when absent, not a string, or too long. */
static bool copy_str(const json_t *v, char *out, size_t outlen)
{
	const char *s = json_string_value(v);

	if (!s || strlen(s) >= outlen)
		return false;
	memcpy(out, s, strlen(s) + 1);
	return true;
}

/* "system:serviceaccount:NS:SA" into caller ns/sa. */
static int parse_sa_user(const char *user, struct ca_caller *out)
{
	const char *ns, *colon;

	if (!user || strncmp(user, SA_PREFIX, strlen(SA_PREFIX)) != 0)
		return -EINVAL;
	ns = user + strlen(SA_PREFIX);
	colon = strchr(ns, ':');
	if (!colon || colon == ns || !colon[1] || strchr(colon + 1, ':') ||
	    (size_t)(colon - ns) >= sizeof(out->ns) || strlen(colon + 1) >= sizeof(out->sa))
		return -EINVAL;
	memcpy(out->ns, ns, (size_t)(colon - ns));
	out->ns[colon - ns] = '\0';
	strcpy(out->sa, colon + 1);
	return 0;
}

/* Decodes one base64url segment of the token into a JSON object. NULL when it is not one. */
static json_t *segment_json(const char *s, size_t len)
{
	uint8_t *buf = malloc(SEG_MAX);
	ssize_t n = buf ? base64_decode(s, len, buf, SEG_MAX, true) : -1;
	json_t *o = n > 0 ? json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL) : NULL;

	free(buf);
	if (o && !json_is_object(o)) {
		json_decref(o);
		o = NULL;
	}
	return o;
}

static bool aud_has(const json_t *aud, const char *audience)
{
	size_t i;
	json_t *v;

	if (json_is_string(aud))
		return strcmp(json_string_value(aud), audience) == 0;
	json_array_foreach(aud, i, v)
		if (json_is_string(v) && strcmp(json_string_value(v), audience) == 0)
			return true;
	return false;
}

/* A NumericDate claim (RFC 7519 §2): 0 and *t, -ENOENT absent, -EINVAL not a number. */
static int numeric_date(const json_t *payload, const char *key, int64_t *t)
{
	const json_t *v = json_object_get(payload, key);

	if (!v)
		return -ENOENT;
	if (!json_is_number(v))
		return -EINVAL;
	double d = json_number_value(v);
	if (d < 0 || d > 1e15)
		return -EINVAL;
	*t = (int64_t)d;
	return 0;
}

/* The kubernetes.io claims, which must agree with sub. */
static int kube_claims(const json_t *payload, struct ca_caller *out, char *why)
{
	const json_t *k = json_object_get(payload, "kubernetes.io");
	struct ca_caller c = { 0 };

	if (!k)
		return 0;
	if (!json_is_object(k))
		return ca_whyf(why, -EACCES, "kubernetes.io claim is not an object");
	if (!copy_str(json_object_get(k, "namespace"), c.ns, sizeof(c.ns)) || strcmp(c.ns, out->ns))
		return ca_whyf(why, -EACCES, "kubernetes.io.namespace does not match sub");
	if (json_object_get(k, "serviceaccount") &&
	    (!copy_str(json_object_get(json_object_get(k, "serviceaccount"), "name"), c.sa,
		       sizeof(c.sa)) || strcmp(c.sa, out->sa)))
		return ca_whyf(why, -EACCES, "kubernetes.io.serviceaccount.name does not match sub");
	if (json_object_get(k, "pod") &&
	    !copy_str(json_object_get(json_object_get(k, "pod"), "name"), out->pod, sizeof(out->pod)))
		return ca_whyf(why, -EACCES, "kubernetes.io.pod.name malformed");
	if (json_object_get(k, "node") &&
	    !copy_str(json_object_get(json_object_get(k, "node"), "name"), out->node, sizeof(out->node)))
		return ca_whyf(why, -EACCES, "kubernetes.io.node.name malformed");
	return 0;
}

int ca_auth_jwt(const struct tls_jwt_keys *keys, const char *token, size_t len,
		const char *audience, int64_t now, struct ca_caller *out, char *why)
{
	const char *dot1, *dot2;
	json_t *header = NULL, *payload = NULL;
	uint8_t *sig = NULL;
	ssize_t siglen;
	int64_t exp, nbf;
	int err, rc;

	memset(out, 0, sizeof(*out));
	if (!token || !len || len > CA_TOKEN_MAX)
		return ca_whyf(why, -EACCES, "token empty or over %d bytes", CA_TOKEN_MAX);
	if (!(dot1 = memchr(token, '.', len)) ||
	    !(dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))) ||
	    memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
		return ca_whyf(why, -EACCES, "token is not a compact JWS (three segments)");
	if (!(header = segment_json(token, (size_t)(dot1 - token)))) {
		err = ca_whyf(why, -EACCES, "token header is not base64url JSON");
		goto out;
	}
	const char *alg = json_string_value(json_object_get(header, "alg"));
	if (!alg) {
		err = ca_whyf(why, -EACCES, "token header has no alg");
		goto out;
	}
	if (json_object_get(header, "crit")) {
		err = ca_whyf(why, -EACCES, "token header has crit extensions");	/* RFC 7515 §4.1.11 */
		goto out;
	}
	if (!(sig = malloc(SEG_MAX))) {
		err = ca_whyf(why, -ENOMEM, "out of memory");
		goto out;
	}
	siglen = base64_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), sig, SEG_MAX, true);
	if (siglen < 0) {
		err = ca_whyf(why, -EACCES, "token signature is not base64url");
		goto out;
	}
	/* the signing input is the first two segments as sent (RFC 7515 §5.2) */
	rc = tls_jwt_verify(keys, alg, token, (size_t)(dot2 - token), sig, (size_t)siglen);
	if (rc == -ENOTSUP) {
		err = ca_whyf(why, -EACCES, "token alg %.20s refused (ES256 or RS256 only)", alg);
		goto out;
	}
	if (rc) {
		err = ca_whyf(why, -EACCES, "token signature does not verify with the issuer keys");
		goto out;
	}
	if (!(payload = segment_json(dot1 + 1, (size_t)(dot2 - dot1 - 1)))) {
		err = ca_whyf(why, -EACCES, "token payload is not base64url JSON");
		goto out;
	}
	if (numeric_date(payload, "exp", &exp)) {
		err = ca_whyf(why, -EACCES, "token has no valid exp");
		goto out;
	}
	if (now >= exp + CA_AUTH_LEEWAY_S) {
		err = ca_whyf(why, -EACCES, "token expired %lld s ago", (long long)(now - exp));
		goto out;
	}
	rc = numeric_date(payload, "nbf", &nbf);
	if (rc == -EINVAL || (!rc && nbf > now + CA_AUTH_LEEWAY_S)) {
		err = ca_whyf(why, -EACCES, "token not yet valid");
		goto out;
	}
	if (!aud_has(json_object_get(payload, "aud"), audience)) {
		err = ca_whyf(why, -EACCES, "audience %.64s not in the token's aud", audience);
		goto out;
	}
	if (parse_sa_user(json_string_value(json_object_get(payload, "sub")), out)) {
		err = ca_whyf(why, -EACCES, "token sub is not system:serviceaccount:NS:SA");
		goto out;
	}
	err = kube_claims(payload, out, why);
out:
	free(sig);
	json_decref(header);
	json_decref(payload);
	if (err)
		memset(out, 0, sizeof(*out));
	return err;
}

/* The first string of user.extra[key], into out. */
static void extra_first(const json_t *user, const char *key, char *out, size_t outlen)
{
	const json_t *v = json_object_get(json_object_get(user, "extra"), key);

	if (!copy_str(json_array_get(v, 0), out, outlen))
		out[0] = '\0';
}

int ca_auth_tokenreview(const struct ca_tokenreview *tr, const char *token, size_t len,
			const char *audience, struct ca_caller *out, char *why)
{
	char url[512], *own = NULL, *body = NULL;
	struct httpc_response resp;
	json_t *req = NULL, *ans = NULL;
	size_t own_len = 0;
	int err;

	memset(out, 0, sizeof(*out));
	memset(&resp, 0, sizeof(resp));
	if (!token || !len || len > CA_TOKEN_MAX)
		return ca_whyf(why, -EACCES, "token empty or over %d bytes", CA_TOKEN_MAX);
	snprintf(url, sizeof(url), "%s/apis/authentication.k8s.io/v1/tokenreviews", tr->api_url);
	if (tr->token_file && !(own = read_file_bounded(tr->token_file, CA_TOKEN_MAX, &own_len)))
		return ca_whyf(why, -EIO, "reading %s: %s", tr->token_file, strerror(errno));
	while (own_len && (own[own_len - 1] == '\n' || own[own_len - 1] == ' '))
		own[--own_len] = '\0';
	req = json_pack("{s:s, s:s, s:{s:s%, s:[s]}}", "apiVersion", "authentication.k8s.io/v1",
			"kind", "TokenReview", "spec", "token", token, len, "audiences", audience);
	if (!req || !(body = json_dumps(req, JSON_COMPACT))) {
		err = ca_whyf(why, -EIO, "out of memory");
		goto out;
	}
	static const char *const hdrs[] = { "Content-Type: application/json",
					    "Accept: application/json", NULL };
	struct httpc_request r = {
		.method = "POST", .url = url, .headers = hdrs, .body = body,
		.body_len = strlen(body), .ca_file = tr->ca_file, .bearer_token = own,
		.timeout_ms = tr->timeout_ms ? tr->timeout_ms : 5000, .max_response = 64 * 1024,
	};
	if ((err = httpc_do(&r, &resp))) {
		err = ca_whyf(why, -EIO, "TokenReview: %s", resp.err);
		goto out;
	}
	if (resp.status != 201 && resp.status != 200) {
		err = ca_whyf(why, -EIO, "TokenReview: HTTP %ld from the API server", resp.status);
		goto out;
	}
	if (!(ans = json_loadb(resp.body, resp.body_len, 0, NULL))) {
		err = ca_whyf(why, -EIO, "TokenReview: the answer is not JSON");
		goto out;
	}
	const json_t *st = json_object_get(ans, "status");
	if (!json_is_true(json_object_get(st, "authenticated"))) {
		const char *e = json_string_value(json_object_get(st, "error"));
		err = ca_whyf(why, -EACCES, "token not authenticated by the API server%s%.150s",
			   e ? ": " : "", e ? e : "");
		goto out;
	}
	/* an answer for other audiences than asked is no answer for ours */
	const json_t *auds = json_object_get(st, "audiences");
	if (auds && !aud_has(auds, audience)) {
		err = ca_whyf(why, -EACCES, "token not valid for audience %.64s", audience);
		goto out;
	}
	const json_t *user = json_object_get(st, "user");
	if (parse_sa_user(json_string_value(json_object_get(user, "username")), out)) {
		err = ca_whyf(why, -EACCES, "caller is not a service account");
		goto out;
	}
	extra_first(user, "authentication.kubernetes.io/pod-name", out->pod, sizeof(out->pod));
	extra_first(user, "authentication.kubernetes.io/node-name", out->node, sizeof(out->node));
	err = 0;
out:
	/* both hold bearer tokens */
	if (own) {
		explicit_bzero(own, own_len);
		free(own);
	}
	if (body) {
		explicit_bzero(body, strlen(body));
		free(body);
	}
	json_decref(req);
	json_decref(ans);
	httpc_response_fini(&resp);
	if (err)
		memset(out, 0, sizeof(*out));
	return err;
}
