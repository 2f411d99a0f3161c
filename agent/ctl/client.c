// SPDX-License-Identifier: Apache-2.0
/* ambitctl's side of the admin API: parses agent addresses, asks an agent through common/httpc
 * (bounded timeouts) and turns every failure into one line on stderr. */
#include "agent/ctl/ctl.h"
#include "common/httpc.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int parse_port(const char *s, int *out)
{
	long v = 0;
	if (!*s)
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		v = v * 10 + (*p - '0');
		if (v > 65535)
			return -EINVAL;
	}
	if (v < 1)
		return -EINVAL;
	*out = (int)v;
	return 0;
}

static bool hostname_ok(const char *h, size_t n)
{
	if (!n || n > 253)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)h[i]) && h[i] != '.' && h[i] != '-' && h[i] != '_')
			return false;
	return true;
}

int ctl_admin_parse(const char *s, struct ctl_admin *out, const char **why)
{
	const char *p = s, *host, *port_s = NULL;
	char hostbuf[256];
	size_t hlen;
	int port = 15000;
	bool v6 = false;

	memset(out, 0, sizeof(*out));
	*why = NULL;
	if (strlen(s) >= sizeof(out->addr)) {
		*why = "too long";
		return -EINVAL;
	}
	snprintf(out->addr, sizeof(out->addr), "%s", s);
	if (strncasecmp(p, "http://", 7) == 0)
		p += 7;
	if (*p == '[') {
		const char *end = strchr(p, ']');
		if (!end) {
			*why = "no ']' after the IPv6 address";
			return -EINVAL;
		}
		host = p + 1;
		hlen = (size_t)(end - host);
		if (end[1] == ':')
			port_s = end + 2;
		else if (end[1] && strcmp(end + 1, "/") != 0) {
			*why = "expected ':PORT' after the IPv6 address";
			return -EINVAL;
		}
		v6 = true;
	} else {
		const char *colon = strchr(p, ':');
		if (colon && strchr(colon + 1, ':')) {
			*why = "an IPv6 address needs brackets: [ADDRESS]:PORT";
			return -EINVAL;
		}
		host = p;
		hlen = colon ? (size_t)(colon - p) : strlen(p);
		if (colon)
			port_s = colon + 1;
	}
	if (hlen == 0 || hlen >= sizeof(hostbuf)) {
		*why = "no host";
		return -EINVAL;
	}
	memcpy(hostbuf, host, hlen);
	hostbuf[hlen] = '\0';
	if (port_s) {
		char pb[16];
		size_t pl = strlen(port_s);
		if (pl && port_s[pl - 1] == '/')	/* "http://h:p/" */
			pl--;
		if (pl >= sizeof(pb)) {
			*why = "the port must be a number from 1 to 65535";
			return -EINVAL;
		}
		memcpy(pb, port_s, pl);
		pb[pl] = '\0';
		if (parse_port(pb, &port)) {
			*why = "the port must be a number from 1 to 65535";
			return -EINVAL;
		}
	}
	if (v6) {
		struct in6_addr a6;
		if (inet_pton(AF_INET6, hostbuf, &a6) != 1) {
			*why = "not an IPv6 address inside the brackets";
			return -EINVAL;
		}
		out->loopback = IN6_IS_ADDR_LOOPBACK(&a6);
		snprintf(out->url, sizeof(out->url), "http://[%s]:%d", hostbuf, port);
	} else {
		struct in_addr a4;
		if (!hostname_ok(hostbuf, hlen)) {
			*why = "the host is neither an IP address nor a host name";
			return -EINVAL;
		}
		if (inet_pton(AF_INET, hostbuf, &a4) == 1)
			out->loopback = (ntohl(a4.s_addr) >> 24) == 127;
		else if (strspn(hostbuf, "0123456789.") == hlen) {
			*why = "not an IPv4 address";
			return -EINVAL;
		} else
			out->loopback = strcasecmp(hostbuf, "localhost") == 0;
		snprintf(out->url, sizeof(out->url), "http://%s:%d", hostbuf, port);
	}
	return 0;
}

int ctl_admins_add(struct ctl *c, const char *list)
{
	char *dup = strdup(list), *save = NULL, *tok;
	int rc = 0;

	if (!dup) {
		ctl_err("out of memory");
		return CTL_EXIT_AGENT;
	}
	if (!*dup) {
		free(dup);
		ctl_err("bad agent address '': no host (expected HOST:PORT, e.g. %s)", CTL_DEFAULT_ADMIN);
		return CTL_EXIT_AGENT;
	}
	for (tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		const char *why;
		while (*tok == ' ')
			tok++;
		if (c->nadmins == CTL_MAX_ADMINS) {
			rc = ctl_usage_err(NULL, "at most %d agents at once", CTL_MAX_ADMINS);
			break;
		}
		if (ctl_admin_parse(tok, &c->admins[c->nadmins], &why)) {
			/* A wrong address is an agent error (exit 1), as an unreachable one is. */
			ctl_err("bad agent address '%s': %s (expected HOST:PORT, e.g. %s)", tok, why,
				CTL_DEFAULT_ADMIN);
			rc = CTL_EXIT_AGENT;
			break;
		}
		c->nadmins++;
	}
	free(dup);
	return rc;
}

/* Copies at most 120 bytes of s into buf on one line (control characters become spaces). */
static void one_line(const char *s, size_t n, char *buf, size_t len)
{
	size_t j = 0;
	while (n && (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t'))
		s++, n--;
	for (size_t i = 0; i < n && j + 4 < len && j < 120; i++)
		buf[j++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? ' ' : s[i];
	while (j && buf[j - 1] == ' ')
		j--;
	if (j < n && j + 4 < len && j >= 120)
		buf[j++] = '.', buf[j++] = '.', buf[j++] = '.';
	buf[j] = '\0';
}

int ctl_bad_answer(const struct ctl_admin *a, const char *path, const char *why)
{
	ctl_err("unexpected answer from the agent at %s to %s: %s", a->addr, path, why);
	return CTL_EXIT_AGENT;
}

static void report_transport(const struct ctl_admin *a, int err, const char *detail)
{
	switch (err) {
	case -ECONNREFUSED:
		if (a->loopback)
			ctl_err("cannot reach the agent at %s: connection refused (is ambitd running on this node?)",
				a->addr);
		else
			ctl_err("cannot reach the agent at %s: connection refused or host unreachable "
				"(is ambitd running there, with its admin API on that address?)", a->addr);
		break;
	case -ETIMEDOUT:
		ctl_err("cannot reach the agent at %s: no answer within %ld s (connect %ld s)", a->addr,
			CTL_TIMEOUT_MS / 1000, CTL_CONNECT_TIMEOUT_MS / 1000);
		break;
	case -EFBIG:
		ctl_err("the agent at %s sent an answer over %u MiB", a->addr, CTL_MAX_ANSWER >> 20);
		break;
	case -ECANCELED:
		ctl_err("interrupted while asking the agent at %s", a->addr);
		break;
	default:
		ctl_err("cannot reach the agent at %s: %s", a->addr, detail[0] ? detail : strerror(-err));
		break;
	}
}

int ctl_fetch(const struct ctl *c, const struct ctl_admin *a, const char *method,
	      const char *path_query, bool allow_404, json_t **out)
{
	char url[1024], line[160];
	struct httpc_request req = {
		.method = method,
		.url = url,
		.timeout_ms = CTL_TIMEOUT_MS,
		.connect_timeout_ms = CTL_CONNECT_TIMEOUT_MS,
		.max_response = CTL_MAX_ANSWER,
		.cancel = c->cancel,
	};
	struct httpc_response resp;
	json_error_t jerr;
	json_t *j = NULL;
	int err, rc = CTL_EXIT_AGENT;

	*out = NULL;
	if ((size_t)snprintf(url, sizeof(url), "%s%s", a->url, path_query) >= sizeof(url)) {
		ctl_err("request too long: %s", path_query);
		return CTL_EXIT_AGENT;
	}
	if (strcmp(method, "POST") == 0) {
		req.body = "";	/* an empty body, Content-Length: 0 */
		req.body_len = 0;
	}
	err = httpc_do(&req, &resp);
	if (err) {
		report_transport(a, err, resp.err);
		goto out;
	}
	if (resp.status == 404 && allow_404) {
		rc = 0;
		goto out;
	}
	if (resp.body_len)
		j = json_loadb(resp.body, resp.body_len, 0, &jerr);
	if (resp.status < 200 || resp.status > 299) {
		const char *msg = jstr(j, "error");
		one_line(msg ? msg : resp.body ? resp.body : "", msg ? strlen(msg) : resp.body_len, line,
			 sizeof(line));
		ctl_err("the agent at %s answered HTTP %ld to %s %s%s%s", a->addr, resp.status, method,
			path_query, line[0] ? ": " : resp.status == 404 ? " " : "",
			line[0] ? line : resp.status == 404 ? "(is that ambitd's admin API?)" : "");
		goto out;
	}
	if (!j) {
		if (!resp.body_len)
			ctl_err("malformed answer from the agent at %s to %s %s: empty body", a->addr, method,
				path_query);
		else
			ctl_err("malformed answer from the agent at %s to %s %s: %s (line %d, column %d)",
				a->addr, method, path_query, jerr.text, jerr.line, jerr.column);
		goto out;
	}
	if (!json_is_object(j)) {
		ctl_err("malformed answer from the agent at %s to %s %s: not a JSON object", a->addr,
			method, path_query);
		goto out;
	}
	*out = j;
	j = NULL;
	rc = 0;
out:
	json_decref(j);
	httpc_response_fini(&resp);
	return rc;
}
