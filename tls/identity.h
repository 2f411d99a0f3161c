/* SPDX-License-Identifier: Apache-2.0 */
/* SPIFFE workload identities (spiffe://<td>/ns/<ns>/sa/<sa>): strict parse, format, compare,
 * extraction from a certificate's URI SAN, and the DNS-safe SNI name that carries one. */
#ifndef AMBIT_TLS_IDENTITY_H
#define AMBIT_TLS_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>

struct x509_st;	/* OpenSSL's X509; only tls/ passes one */

/* Bounds: trust domain 255 (SPIFFE spec §2.1), namespace = Kubernetes DNS label (63),
 * service account = Kubernetes DNS subdomain (253, labels <= 63). */
#define SPIFFE_TD_MAX 255
#define SPIFFE_NS_MAX 63
#define SPIFFE_SA_MAX 253
/* "spiffe://" + td + "/ns/" + ns + "/sa/" + sa + NUL */
#define SPIFFE_ID_STR_MAX (9 + SPIFFE_TD_MAX + 4 + SPIFFE_NS_MAX + 4 + SPIFFE_SA_MAX + 1)
/* A DNS name: 253 characters + NUL. */
#define SPIFFE_SNI_MAX 254

#define SPIFFE_DEFAULT_TRUST_DOMAIN "cluster.local"

/* A value type: copy it freely. Every field is NUL-terminated and validated. */
struct spiffe_id {
	char td[SPIFFE_TD_MAX + 1];	/* trust domain: [a-z0-9._-] */
	char ns[SPIFFE_NS_MAX + 1];	/* namespace: RFC 1123 label */
	char sa[SPIFFE_SA_MAX + 1];	/* service account: RFC 1123 subdomain */
};

/* Parses "spiffe://td/ns/NS/sa/SA" strictly (lower-case scheme and td, no query, fragment,
 * port, userinfo, empty or extra segments). 0, or -EINVAL / -ENAMETOOLONG with *why (may be
 * NULL) set to a static human reason ("empty namespace", "bad scheme", ...). */
int spiffe_id_parse(const char *s, struct spiffe_id *out, const char **why);
/* Builds and validates an identity from its parts; same errors as spiffe_id_parse. */
int spiffe_id_set(struct spiffe_id *out, const char *td, const char *ns, const char *sa,
		  const char **why);
/* Writes the URI into buf; returns its length, or -ENOSPC (buf then holds "" if len > 0).
 * SPIFFE_ID_STR_MAX always suffices. */
int spiffe_id_format(const struct spiffe_id *id, char *buf, size_t len);
/* Convenience for logs: formats into a caller buffer of SPIFFE_ID_STR_MAX; returns buf. */
char *spiffe_id_str(const struct spiffe_id *id, char buf[SPIFFE_ID_STR_MAX]);
/* Exact comparison (all parts are canonical lower-case, so byte equality is identity). */
bool spiffe_id_equal(const struct spiffe_id *a, const struct spiffe_id *b);
/* Total order (td, ns, sa) for sorted output; <0, 0, >0. */
int spiffe_id_cmp(const struct spiffe_id *a, const struct spiffe_id *b);

/* The identity of a certificate: it must carry exactly one URI SAN starting "spiffe://"
 * (other URI SANs and DNS/IP SANs are ignored), and that URI must parse. 0, or -ENOENT (no
 * SPIFFE URI SAN), -EEXIST (more than one), -EINVAL (malformed) with *why set. */
int spiffe_id_from_x509(const struct x509_st *cert, struct spiffe_id *out, const char **why);

/* SNI carrying the destination identity on port 15008: "<sa>.<ns>.<td>.spiffe".
 * The namespace has no dots, so decoding with the server's own trust domain is unambiguous.
 * Returns the name length, or -ENAMETOOLONG (over 253 or a label over 63), -ENOSPC. */
int spiffe_sni_encode(const struct spiffe_id *id, char *buf, size_t len);
/* Decodes a name made by spiffe_sni_encode for trust domain td (case-insensitive, as DNS is).
 * 0, or -EINVAL when the name is not an encoded identity of td. */
int spiffe_sni_decode(const char *sni, const char *td, struct spiffe_id *out);
/* The host_name of a ClientHello's server_name extension body (RFC 6066 §3: a 2-byte list
 * length, then name type 0, a 2-byte length and the name) into out, NUL-terminated. The name
 * length, or -EINVAL (malformed, another name type, empty, or a NUL in the name), -ENOSPC
 * (it does not fit in outlen). */
int spiffe_sni_ext_host_name(const unsigned char *ext, size_t len, char *out, size_t outlen);

#endif
