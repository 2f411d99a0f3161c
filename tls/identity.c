// SPDX-License-Identifier: Apache-2.0
/* SPIFFE IDs: strict parsing (SPIFFE ID spec §2, Kubernetes naming for ns/sa), formatting,
 * the URI SAN of a certificate, and the SNI encoding used on port 15008. */
#include "tls/identity.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#define SPIFFE_SCHEME "spiffe://"
#define SNI_SUFFIX ".spiffe"

static int set_why(const char **why, const char *msg, int err)
{
	if (why)
		*why = msg;
	return err;
}

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* SPIFFE ID spec §2.1: [a-z0-9._-], 1..255. */
static int check_td(const char *s, size_t n, const char **why)
{
	if (n == 0)
		return set_why(why, "empty trust domain", -EINVAL);
	if (n > SPIFFE_TD_MAX)
		return set_why(why, "trust domain too long", -ENAMETOOLONG);
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (is_lower_alnum(c) || c == '.' || c == '-' || c == '_')
			continue;
		if (c == ':')
			return set_why(why, "port not allowed in trust domain", -EINVAL);
		if (c == '@')
			return set_why(why, "userinfo not allowed in trust domain", -EINVAL);
		if (c >= 'A' && c <= 'Z')
			return set_why(why, "trust domain must be lower case", -EINVAL);
		return set_why(why, "bad character in trust domain", -EINVAL);
	}
	return 0;
}

/* RFC 1123 label: [a-z0-9-], 1..63, alphanumeric at both ends. */
static int check_label(const char *s, size_t n, const char *what_empty, const char *what_bad,
		       const char **why)
{
	if (n == 0)
		return set_why(why, what_empty, -EINVAL);
	if (n > 63)
		return set_why(why, "name label longer than 63", -ENAMETOOLONG);
	if (!is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
		return set_why(why, what_bad, -EINVAL);
	for (size_t i = 0; i < n; i++)
		if (!is_lower_alnum(s[i]) && s[i] != '-')
			return set_why(why, what_bad, -EINVAL);
	return 0;
}

static int check_ns(const char *s, size_t n, const char **why)
{
	if (n > SPIFFE_NS_MAX)
		return set_why(why, "namespace too long", -ENAMETOOLONG);
	return check_label(s, n, "empty namespace",
			   "namespace is not a DNS label ([a-z0-9-], alphanumeric ends)", why);
}

/* RFC 1123 subdomain: labels joined by dots, 1..253. */
static int check_sa(const char *s, size_t n, const char **why)
{
	if (n == 0)
		return set_why(why, "empty service account", -EINVAL);
	if (n > SPIFFE_SA_MAX)
		return set_why(why, "service account too long", -ENAMETOOLONG);
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != '.')
			continue;
		int err = check_label(s + start, i - start, "empty label in service account",
				      "service account is not a DNS name ([a-z0-9.-])", why);
		if (err)
			return err;
		start = i + 1;
	}
	return 0;
}

int spiffe_id_set(struct spiffe_id *out, const char *td, const char *ns, const char *sa,
		  const char **why)
{
	int err;
	size_t ltd, lns, lsa;

	if (!out || !td || !ns || !sa)
		return set_why(why, "missing identity part", -EINVAL);
	ltd = strnlen(td, SPIFFE_TD_MAX + 1);
	lns = strnlen(ns, SPIFFE_NS_MAX + 1);
	lsa = strnlen(sa, SPIFFE_SA_MAX + 1);
	if ((err = check_td(td, ltd, why)) || (err = check_ns(ns, lns, why)) ||
	    (err = check_sa(sa, lsa, why)))
		return err;
	memset(out, 0, sizeof(*out));
	memcpy(out->td, td, ltd);
	memcpy(out->ns, ns, lns);
	memcpy(out->sa, sa, lsa);
	return 0;
}

int spiffe_id_parse(const char *s, struct spiffe_id *out, const char **why)
{
	const char *p, *seg[4];
	size_t seglen[4], n, ltd;
	int err;

	if (!s || !out)
		return set_why(why, "missing identity", -EINVAL);
	n = strnlen(s, SPIFFE_ID_STR_MAX);
	if (n == 0)
		return set_why(why, "empty identity", -EINVAL);
	if (n >= SPIFFE_ID_STR_MAX)
		return set_why(why, "identity too long", -ENAMETOOLONG);
	if (strncmp(s, SPIFFE_SCHEME, strlen(SPIFFE_SCHEME)) != 0)
		return set_why(why, "bad scheme (want spiffe://)", -EINVAL);
	if (strpbrk(s, "?#"))
		return set_why(why, "query or fragment not allowed", -EINVAL);
	if (strchr(s, '%'))
		return set_why(why, "percent-encoding not allowed", -EINVAL);
	p = s + strlen(SPIFFE_SCHEME);
	ltd = strcspn(p, "/");
	if ((err = check_td(p, ltd, why)))
		return err;
	if (p[ltd] != '/')
		return set_why(why, "missing path (want /ns/<ns>/sa/<sa>)", -EINVAL);
	p += ltd;
	for (int i = 0; i < 4; i++) {
		if (*p != '/')
			return set_why(why, "path must be /ns/<ns>/sa/<sa>", -EINVAL);
		p++;
		seg[i] = p;
		seglen[i] = strcspn(p, "/");
		p += seglen[i];
	}
	if (*p == '/')
		return set_why(why, p[1] ? "extra path segments" : "trailing slash", -EINVAL);
	if (seglen[0] != 2 || memcmp(seg[0], "ns", 2) != 0 || seglen[2] != 2 ||
	    memcmp(seg[2], "sa", 2) != 0)
		return set_why(why, "path must be /ns/<ns>/sa/<sa>", -EINVAL);
	if ((err = check_ns(seg[1], seglen[1], why)) || (err = check_sa(seg[3], seglen[3], why)))
		return err;
	memset(out, 0, sizeof(*out));
	memcpy(out->td, s + strlen(SPIFFE_SCHEME), ltd);
	memcpy(out->ns, seg[1], seglen[1]);
	memcpy(out->sa, seg[3], seglen[3]);
	return 0;
}

int spiffe_id_format(const struct spiffe_id *id, char *buf, size_t len)
{
	int n = snprintf(buf, len, SPIFFE_SCHEME "%s/ns/%s/sa/%s", id->td, id->ns, id->sa);
	if (n < 0 || (size_t)n >= len) {
		if (len)
			buf[0] = '\0';
		return -ENOSPC;
	}
	return n;
}

char *spiffe_id_str(const struct spiffe_id *id, char buf[SPIFFE_ID_STR_MAX])
{
	spiffe_id_format(id, buf, SPIFFE_ID_STR_MAX);
	return buf;
}

bool spiffe_id_equal(const struct spiffe_id *a, const struct spiffe_id *b)
{
	return strcmp(a->td, b->td) == 0 && strcmp(a->ns, b->ns) == 0 &&
	       strcmp(a->sa, b->sa) == 0;
}

int spiffe_id_cmp(const struct spiffe_id *a, const struct spiffe_id *b)
{
	int r = strcmp(a->td, b->td);
	if (!r)
		r = strcmp(a->ns, b->ns);
	if (!r)
		r = strcmp(a->sa, b->sa);
	return r;
}

int spiffe_id_from_x509(const struct x509_st *cert, struct spiffe_id *out, const char **why)
{
	GENERAL_NAMES *names;
	int crit = 0, found = 0, err = 0;

	if (!cert || !out)
		return set_why(why, "no certificate", -EINVAL);
	names = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
	if (!names) {
		if (crit == -2)
			return set_why(why, "certificate has several SAN extensions", -EINVAL);
		return set_why(why, "certificate has no SPIFFE URI SAN", -ENOENT);
	}
	for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		const unsigned char *data;
		int len;

		if (gn->type != GEN_URI)
			continue;
		data = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
		len = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
		if (len < 7 || strncasecmp((const char *)data, "spiffe:", 7) != 0)
			continue;
		if (++found > 1) {
			err = set_why(why, "certificate has more than one SPIFFE URI SAN", -EEXIST);
			break;
		}
		if (len >= SPIFFE_ID_STR_MAX) {
			err = set_why(why, "SPIFFE URI SAN too long", -ENAMETOOLONG);
			continue;
		}
		char buf[SPIFFE_ID_STR_MAX];
		memcpy(buf, data, (size_t)len);
		buf[len] = '\0';
		if (strlen(buf) != (size_t)len) {
			err = set_why(why, "NUL byte in SPIFFE URI SAN", -EINVAL);
			continue;
		}
		err = spiffe_id_parse(buf, out, why);
	}
	GENERAL_NAMES_free(names);
	if (!found)
		return set_why(why, "certificate has no SPIFFE URI SAN", -ENOENT);
	return err;
}

int spiffe_sni_encode(const struct spiffe_id *id, char *buf, size_t len)
{
	size_t start = 0;
	int n = snprintf(buf, len, "%s.%s.%s" SNI_SUFFIX, id->sa, id->ns, id->td);

	if (n < 0 || (size_t)n >= len) {
		if (len)
			buf[0] = '\0';
		return n > SPIFFE_SNI_MAX - 1 ? -ENAMETOOLONG : -ENOSPC;
	}
	if (n > SPIFFE_SNI_MAX - 1)
		goto too_long;
	for (int i = 0; i <= n; i++) {
		if (buf[i] != '.' && buf[i] != '\0')
			continue;
		if (i - start > 63 || i == (int)start)
			goto too_long;
		start = (size_t)i + 1;
	}
	return n;
too_long:
	buf[0] = '\0';
	return -ENAMETOOLONG;
}

int spiffe_sni_decode(const char *sni, const char *td, struct spiffe_id *out)
{
	char name[SPIFFE_SNI_MAX];
	size_t n, ltd, lsuf = strlen(SNI_SUFFIX);
	char *dot;

	if (!sni || !td || !out)
		return -EINVAL;
	n = strnlen(sni, sizeof(name));
	ltd = strlen(td);
	if (n >= sizeof(name) || n < lsuf + ltd + 4)	/* "a.b." + td + suffix */
		return -EINVAL;
	for (size_t i = 0; i <= n; i++)
		name[i] = (char)tolower((unsigned char)sni[i]);
	if (memcmp(name + n - lsuf, SNI_SUFFIX, lsuf) != 0)
		return -EINVAL;
	n -= lsuf;
	if (memcmp(name + n - ltd, td, ltd) != 0 || name[n - ltd - 1] != '.')
		return -EINVAL;
	n -= ltd + 1;
	name[n] = '\0';
	dot = strrchr(name, '.');
	if (!dot)
		return -EINVAL;
	*dot = '\0';
	return spiffe_id_set(out, td, dot + 1, name, NULL) ? -EINVAL : 0;
}

int spiffe_sni_ext_host_name(const unsigned char *ext, size_t len, char *out, size_t outlen)
{
	size_t n;

	if (len < 5 || (size_t)((ext[0] << 8) | ext[1]) + 2 != len || ext[2] != 0)
		return -EINVAL;
	n = (size_t)((ext[3] << 8) | ext[4]);
	if (n == 0 || n + 5 > len || memchr(ext + 5, '\0', n))
		return -EINVAL;
	if (n >= outlen)
		return -ENOSPC;
	memcpy(out, ext + 5, n);
	out[n] = '\0';
	return (int)n;
}
