// SPDX-License-Identifier: Apache-2.0
/* W3C Trace Context and W3C Baggage header codecs. Every input is untrusted (it arrives on
 * the HBONE CONNECT from another node): strict grammar, bounded sizes, no partial results. */
#include "otlp/tracecontext.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_SZ(a, b) ((a) < (b) ? (a) : (b))

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;	/* upper case is invalid in traceparent (W3C Trace Context §3.2.2) */
}

/* Exactly 2*n lower-case hex digits into out. */
static int lhex_decode(const char *s, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int tracecontext_parse(const char *s, size_t len, struct span_context *out)
{
	struct span_context c = { .remote = true };
	uint8_t version;

	if (!s || len < TRACEPARENT_LEN)
		return -EINVAL;
	if (lhex_decode(s, &version, 1) || version == 0xff)
		return -EINVAL;
	/* §3.2.4: version 00 is exactly 55 characters; a later version may append fields
	 * after a '-', and is parsed by what version 00 defines. */
	if (version == 0 && len != TRACEPARENT_LEN)
		return -EINVAL;
	if (version != 0 && len > TRACEPARENT_LEN && s[TRACEPARENT_LEN] != '-')
		return -EINVAL;
	if (s[2] != '-' || s[35] != '-' || s[52] != '-')
		return -EINVAL;
	if (lhex_decode(s + 3, c.trace_id, SPAN_TRACE_ID_LEN) ||
	    lhex_decode(s + 36, c.span_id, SPAN_ID_LEN) || lhex_decode(s + 53, &c.flags, 1))
		return -EINVAL;
	if (!span_context_valid(&c))	/* §3.2.2.3/4: all-zero IDs are invalid */
		return -EINVAL;
	*out = c;
	return 0;
}

int tracecontext_format(const struct span_context *c, char *buf, size_t buflen)
{
	char tid[2 * SPAN_TRACE_ID_LEN + 1], sid[2 * SPAN_ID_LEN + 1];

	if (!span_context_valid(c))
		return -EINVAL;
	if (!buf || buflen < TRACEPARENT_LEN + 1)
		return -ENOSPC;
	span_trace_id_hex(c, tid);
	span_span_id_hex(c, sid);
	/* version 00 defines only the sampled bit (and level 2's random bit); send those */
	return snprintf(buf, buflen, "00-%s-%s-%02x", tid, sid, c->flags & 0x03);
}

/* ---- W3C tracestate ---- */

static bool ts_key_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
	       c == '*' || c == '/';
}

/* key = simple-key / tenant-id "@" system-id (§3.3.1.3.1) */
static bool ts_key_ok(const char *k, size_t n)
{
	const char *at = memchr(k, '@', n);
	size_t t = at ? (size_t)(at - k) : n, sys = at ? n - t - 1 : 0;

	if (!n || (at && (!t || t > 241 || !sys || sys > 14)) || (!at && n > 256))
		return false;
	if (!((k[0] >= 'a' && k[0] <= 'z') || (at && k[0] >= '0' && k[0] <= '9')))
		return false;
	if (at && !(at[1] >= 'a' && at[1] <= 'z'))
		return false;
	for (size_t i = 0; i < n; i++)
		if (k + i != at && !ts_key_char((unsigned char)k[i]))
			return false;
	return true;
}

static bool ts_value_ok(const char *v, size_t n)
{
	if (!n || n > 256 || v[n - 1] == ' ')
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e || v[i] == ',' ||
		    v[i] == '=')
			return false;
	return true;
}

int tracestate_get(const char *s, size_t len, const char *key, const char **val, size_t *vlen)
{
	size_t klen = strlen(key), members = 0, i = 0;
	int rc = -ENOENT;

	while (i <= len) {
		size_t end = i, a, b;
		const char *eq;

		while (end < len && s[end] != ',')
			end++;
		a = i;
		b = end;
		while (a < b && (s[a] == ' ' || s[a] == '\t'))
			a++;
		while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
			b--;
		if (a < b) {	/* empty members are allowed and not counted (§3.3.1.1) */
			eq = memchr(s + a, '=', b - a);
			if (!eq || ++members > TRACESTATE_MAX_MEMBERS ||
			    !ts_key_ok(s + a, (size_t)(eq - (s + a))) ||
			    !ts_value_ok(eq + 1, (size_t)(s + b - eq - 1)))
				return -EINVAL;
			if (rc == -ENOENT && (size_t)(eq - (s + a)) == klen &&
			    memcmp(s + a, key, klen) == 0) {
				*val = eq + 1;
				*vlen = (size_t)(s + b - eq - 1);
				rc = 0;	/* the first wins; the rest is still checked */
			}
		}
		i = end + 1;
	}
	return rc;
}

/* ---- W3C Baggage ---- */

static bool is_tchar(unsigned char c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return true;
	return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* baggage-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E (no space, '"', ',', ';', '\') */
static bool is_baggage_octet(unsigned char c)
{
	return c >= 0x21 && c <= 0x7e && c != '"' && c != ',' && c != ';' && c != '\\';
}

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static int xval(char c)
{
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return hexval(c);
}

/* Percent-decodes s[0..len) into a new string; -EINVAL on a bad escape or %00. */
static int pct_decode(const char *s, size_t len, char **out)
{
	char *d = malloc(len + 1), *p = d;
	if (!d)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '%') {
			*p++ = s[i];
			continue;
		}
		int hi = -1, lo = -1;
		if (i + 2 < len) {
			hi = xval(s[i + 1]);
			lo = xval(s[i + 2]);
		}
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
			free(d);
			return -EINVAL;
		}
		*p++ = (char)(hi << 4 | lo);
		i += 2;
	}
	*p = '\0';
	*out = d;
	return 0;
}

static bool key_ok(const char *k, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!is_tchar((unsigned char)k[i]))
			return false;
	return true;
}

static void trim(const char **s, const char **e)
{
	while (*s < *e && is_ows(**s))
		(*s)++;
	while (*e > *s && is_ows((*e)[-1]))
		(*e)--;
}

/* A property after ';': key, or key OWS "=" OWS value (W3C Baggage §3.2.1). */
static bool property_ok(const char *s, const char *e)
{
	trim(&s, &e);
	const char *eq = memchr(s, '=', (size_t)(e - s));
	const char *ke = eq ? eq : e, *ks = s;
	trim(&ks, &ke);
	if (!key_ok(ks, (size_t)(ke - ks)))
		return false;
	if (!eq)
		return true;
	const char *vs = eq + 1, *ve = e;
	trim(&vs, &ve);
	for (const char *p = vs; p < ve; p++)
		if (!is_baggage_octet((unsigned char)*p))
			return false;
	return true;
}

static int baggage_set_n(struct baggage *b, const char *key, size_t klen, char *value_owned)
{
	for (size_t i = 0; i < b->n; i++) {
		if (strlen(b->m[i].key) == klen && memcmp(b->m[i].key, key, klen) == 0) {
			free(b->m[i].value);
			b->m[i].value = value_owned;
			return 0;
		}
	}
	if (b->n >= BAGGAGE_MAX_MEMBERS)
		return -E2BIG;
	struct baggage_member *m = realloc(b->m, (b->n + 1) * sizeof(*m));
	if (!m)
		return -ENOMEM;
	b->m = m;
	m[b->n].key = strndup(key, klen);
	if (!m[b->n].key)
		return -ENOMEM;
	m[b->n].value = value_owned;
	b->n++;
	return 0;
}

/* The W3C list grammar, strict (headers) or as the OTel environment variables use it. */
static int list_parse(const char *s, size_t len, bool env, struct baggage *b)
{
	const char *end = s + len, *p = s;
	int err = 0;

	if (!s)
		return -EINVAL;
	if (len > BAGGAGE_MAX_BYTES)
		return -E2BIG;
	if (memchr(s, '\0', len))
		return -EINVAL;
	while (p <= end && !err) {
		const char *me = memchr(p, ',', (size_t)(end - p));
		if (!me)
			me = end;
		const char *ms = p, *mend = me;
		p = me + 1;
		trim(&ms, &mend);
		if (ms == mend)
			continue;	/* empty list-member (",,"): tolerated, nothing to keep */
		const char *eq = memchr(ms, '=', (size_t)(mend - ms));
		if (!eq) {
			err = -EINVAL;
			break;
		}
		const char *ks = ms, *ke = eq;
		trim(&ks, &ke);
		if (!key_ok(ks, (size_t)(ke - ks))) {
			err = -EINVAL;
			break;
		}
		const char *vs = eq + 1, *ve = mend;
		if (!env) {
			/* properties follow the first ';' */
			const char *semi = memchr(vs, ';', (size_t)(ve - vs));
			while (semi) {
				const char *pe = memchr(semi + 1, ';', (size_t)(mend - semi - 1));
				if (!property_ok(semi + 1, pe ? pe : mend)) {
					err = -EINVAL;
					break;
				}
				if (ve == mend)
					ve = semi;
				semi = pe;
			}
			if (err)
				break;
		}
		trim(&vs, &ve);
		for (const char *q = vs; q < ve; q++) {
			unsigned char c = (unsigned char)*q;
			if (env ? (c < 0x20 || c == 0x7f) : !is_baggage_octet(c)) {
				err = -EINVAL;
				break;
			}
		}
		if (err)
			break;
		char *val;
		err = pct_decode(vs, (size_t)(ve - vs), &val);
		if (err)
			break;
		err = baggage_set_n(b, ks, (size_t)(ke - ks), val);
		if (err)
			free(val);
	}
	if (err)
		baggage_fini(b);
	return err;
}

int baggage_parse(const char *s, size_t len, struct baggage *b)
{
	return list_parse(s, len, false, b);
}

int baggage_parse_env(const char *s, size_t len, struct baggage *b)
{
	return list_parse(s, len, true, b);
}

int baggage_set(struct baggage *b, const char *key, const char *value)
{
	if (!key || !value || !key_ok(key, strlen(key)))
		return -EINVAL;
	char *v = strdup(value);
	if (!v)
		return -ENOMEM;
	int err = baggage_set_n(b, key, strlen(key), v);
	if (err)
		free(v);
	return err;
}

const char *baggage_get(const struct baggage *b, const char *key)
{
	for (size_t i = 0; key && i < b->n; i++)
		if (strcmp(b->m[i].key, key) == 0)
			return b->m[i].value;
	return NULL;
}

int baggage_format(const struct baggage *b, char *buf, size_t buflen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;
	int err = 0;

	if (!buf || buflen == 0)
		return -ENOSPC;
	/* Writes one byte, tracking the spec's bound and the buffer's separately. */
#define PUT(c) do { if (n >= BAGGAGE_MAX_BYTES) { err = -E2BIG; goto out; } \
		if (n + 1 >= buflen) { err = -ENOSPC; goto out; } buf[n++] = (c); } while (0)
	for (size_t i = 0; i < b->n; i++) {
		if (i)
			PUT(',');
		for (const char *k = b->m[i].key; *k; k++)
			PUT(*k);
		PUT('=');
		for (const unsigned char *v = (const unsigned char *)b->m[i].value; *v; v++) {
			if (is_baggage_octet(*v) && *v != '%') {
				PUT((char)*v);
			} else {
				PUT('%');
				PUT(hex[*v >> 4]);
				PUT(hex[*v & 15]);
			}
		}
	}
#undef PUT
out:
	buf[MIN_SZ(n, buflen - 1)] = '\0';
	return err ? err : (int)n;
}

void baggage_fini(struct baggage *b)
{
	if (!b)
		return;
	for (size_t i = 0; i < b->n; i++) {
		free(b->m[i].key);
		free(b->m[i].value);
	}
	free(b->m);
	b->m = NULL;
	b->n = 0;
}
