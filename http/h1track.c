// SPDX-License-Identifier: Apache-2.0
/* Passive HTTP/1.x request tracking: one http_parser per direction run over the bytes as they
 * pass, the response parser told by the pending request whether a body can follow (HEAD,
 * CONNECT), only the request fields a span needs kept, bounded, while the head streams by. */
#include "http/h1track.h"
#include "http/http1.h"

#include <string.h>
#include <strings.h>

enum { F_NONE, F_HOST, F_TP };

static const char *const state_names[] = {
	[H1T_SNIFF] = "sniff", [H1T_ON] = "on", [H1T_NOT_HTTP] = "not_http",
	[H1T_UPGRADED] = "upgraded", [H1T_STOPPED] = "stopped",
};

const char *h1t_state_str(enum h1t_state st)
{
	return (unsigned)st < sizeof(state_names) / sizeof(state_names[0]) ? state_names[st] : "?";
}

static struct h1t_pending *pending(struct h1track *t, uint64_t ordinal)
{
	return &t->q[ordinal % H1T_PIPELINE];
}

static size_t trim(const char *s, size_t n)
{
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	return n;
}

/* Reports the request being read (the newest pending one) from the fields kept so far. */
static void announce(struct h1track *t, uint64_t ordinal)
{
	struct h1t_pending *e = pending(t, ordinal);
	const http_parser *p = &t->p[H1T_REQ];
	const char *path = t->path;
	size_t path_len = t->path_len;
	struct h1t_request r;

	if (e->announced)
		return;
	e->announced = true;
	/* absolute-form (a request to a proxy): the path starts after the authority */
	if (path_len && path[0] != '/' && path[0] != '*') {
		const char *sep = memmem(path, path_len, "://", 3);
		if (sep) {
			const char *auth = sep + 3;
			const char *end = path + path_len;
			const char *slash = memchr(auth, '/', (size_t)(end - auth));
			if (!t->host_seen) {
				size_t hl = (size_t)((slash ? slash : end) - auth);
				if (hl > H1T_HOST_MAX)
					hl = H1T_HOST_MAX;
				memmove(t->host, auth, hl);
				t->host_len = (uint8_t)hl;
				t->host_seen = true;
			}
			path_len = slash ? (size_t)(end - slash) : 0;
			path = slash ? slash : path;
		}
	}
	r = (struct h1t_request){
		.ordinal = ordinal,
		.method = http_method_str(e->head_done ? (enum http_method)e->method
						       : (enum http_method)p->method),
		.http_major = p->http_major,
		.http_minor = p->http_minor,
		.path = path_len ? path : "/",
		.path_len = path_len ? path_len : 1,
		.host = t->host_seen ? t->host : NULL,
		.host_len = t->host_seen ? trim(t->host, t->host_len) : 0,
		.traceparent = t->tp_seen && !t->tp_bad ? t->tp : NULL,
		.traceparent_len = t->tp_seen && !t->tp_bad ? trim(t->tp, t->tp_len) : 0,
		.start_ns = e->start_ns,
	};
	if (t->cbs && t->cbs->on_request)
		t->cbs->on_request(t->arg, &r);
}

static void respond(struct h1track *t, int status, const char *why)
{
	struct h1t_pending *e = pending(t, t->resp_seq);
	struct h1t_response r = {
		.ordinal = t->resp_seq, .status = status, .end_ns = t->now_ns, .why = why,
	};
	bool announced = e->announced;

	t->resp_seq++;
	if (announced && t->cbs && t->cbs->on_response)
		t->cbs->on_response(t->arg, &r);
}

static void abandon(struct h1track *t, const char *why)
{
	while (t->resp_seq < t->req_seq)
		respond(t, 0, why);
}

/* Tracking ends (the bytes go on flowing): requests still waiting are abandoned. */
static void stop(struct h1track *t, enum h1t_state st, const char *why)
{
	if (!h1t_active(t))
		return;
	t->st = st;
	abandon(t, why);
	if (t->cbs && t->cbs->on_stop)
		t->cbs->on_stop(t->arg, why, st == H1T_STOPPED);
}

static struct h1track *of(http_parser *p)
{
	return p->data;
}

/* Counts head bytes (start line and field data; http_parser's nread depends on how the
 * input was split) and stops tracking past the bound. */
static int head_bound(struct h1track *t, enum h1t_dir dir, size_t len)
{
	t->head_bytes[dir] += (uint32_t)(len < H1T_MAX_HEAD ? len : H1T_MAX_HEAD + 1);
	if (t->head_bytes[dir] <= H1T_MAX_HEAD)
		return 0;
	stop(t, H1T_STOPPED, "head over 64 KiB");
	return -1;
}

/* ---- requests ---- */

static int req_begin(http_parser *p)
{
	struct h1track *t = of(p);
	struct h1t_pending *e;

	if (t->req_seq - t->resp_seq >= H1T_PIPELINE) {
		stop(t, H1T_STOPPED, "too many pipelined requests");
		return -1;
	}
	e = pending(t, t->req_seq++);
	*e = (struct h1t_pending){ .start_ns = t->now_ns };
	t->in_head[H1T_REQ] = true;
	t->head_bytes[H1T_REQ] = 0;
	t->in_value = t->path_done = t->host_seen = t->tp_seen = t->tp_bad = false;
	t->field = F_NONE;
	t->name_len = 0;
	t->path_len = t->host_len = t->tp_len = 0;
	return 0;
}

static int req_url(http_parser *p, const char *at, size_t len)
{
	struct h1track *t = of(p);

	if (head_bound(t, H1T_REQ, len))
		return -1;
	for (size_t i = 0; i < len && !t->path_done; i++) {
		/* the query and fragment are not part of url.path (and may hold secrets) */
		if (at[i] == '?' || at[i] == '#' || t->path_len == H1T_PATH_MAX) {
			t->path_done = true;
			break;
		}
		t->path[t->path_len++] = at[i];
	}
	return 0;
}

static int req_field(http_parser *p, const char *at, size_t len)
{
	struct h1track *t = of(p);

	if (head_bound(t, H1T_REQ, len + 4))	/* ": " and CRLF */
		return -1;
	if (t->in_value) {
		t->in_value = false;
		t->name_len = 0;
	}
	if (t->name_len == 0xff)
		return 0;
	if (t->name_len + len > sizeof(t->name)) {
		t->name_len = 0xff;	/* longer than any field kept */
		return 0;
	}
	memcpy(t->name + t->name_len, at, len);
	t->name_len = (uint8_t)(t->name_len + len);
	return 0;
}

static bool name_is(const struct h1track *t, const char *name)
{
	return t->name_len == strlen(name) && strncasecmp(t->name, name, t->name_len) == 0;
}

static int req_value(http_parser *p, const char *at, size_t len)
{
	struct h1track *t = of(p);

	if (head_bound(t, H1T_REQ, len))
		return -1;
	if (!t->in_value) {
		t->in_value = true;
		t->field = F_NONE;
		if (name_is(t, "host") && !t->host_seen) {
			t->field = F_HOST;
			t->host_seen = true;
		} else if (name_is(t, "traceparent")) {
			/* two traceparent fields: neither is trusted (W3C Trace Context §3.2) */
			if (t->tp_seen)
				t->tp_bad = true;
			else
				t->field = F_TP;
			t->tp_seen = true;
		}
	}
	if (t->field == F_HOST) {
		size_t k = len < (size_t)(H1T_HOST_MAX - t->host_len) ? len : (size_t)(H1T_HOST_MAX - t->host_len);
		memcpy(t->host + t->host_len, at, k);
		t->host_len = (uint8_t)(t->host_len + k);
	} else if (t->field == F_TP) {
		if (t->tp_len + len > H1T_TP_MAX) {
			t->tp_bad = true;
			t->field = F_NONE;
		} else {
			memcpy(t->tp + t->tp_len, at, len);
			t->tp_len = (uint8_t)(t->tp_len + len);
		}
	}
	return 0;
}

static int req_headers_done(http_parser *p)
{
	struct h1track *t = of(p);
	uint64_t ord = t->req_seq - 1;
	struct h1t_pending *e = pending(t, ord);

	t->in_head[H1T_REQ] = false;
	if (ord < t->resp_seq)
		return 0;	/* answered before its head was complete: already reported */
	e->method = (uint8_t)p->method;
	e->head_done = true;
	e->upgrade = p->upgrade || p->method == HTTP_CONNECT;
	announce(t, ord);
	return 0;
}

static int req_done(http_parser *p)
{
	struct h1track *t = of(p);

	if (p->upgrade || p->method == HTTP_CONNECT) {
		if (t->req_seq - 1 < t->resp_seq) {
			stop(t, H1T_STOPPED, "upgrade request answered before it was sent");
			return -1;
		}
		/* What follows may be another protocol: wait for the answer. */
		t->await_upgrade = true;
		http_parser_pause(p, 1);
	}
	return 0;
}

static const http_parser_settings req_settings = {
	.on_message_begin = req_begin,
	.on_url = req_url,
	.on_header_field = req_field,
	.on_header_value = req_value,
	.on_headers_complete = req_headers_done,
	.on_message_complete = req_done,
};

/* ---- responses ---- */

static int resp_begin(http_parser *p)
{
	struct h1track *t = of(p);

	if (t->resp_seq == t->req_seq) {
		stop(t, H1T_STOPPED, "response without a request");
		return -1;
	}
	t->in_head[H1T_RESP] = true;
	t->head_bytes[H1T_RESP] = 0;
	t->resp_interim = t->resp_upgrades = false;
	return 0;
}

/* Returns what http_parser 2.9 takes from on_headers_complete: 0 body as framed, 1 no
 * body, 2 no body and the protocol switches. */
static int resp_headers_done(http_parser *p)
{
	struct h1track *t = of(p);
	struct h1t_pending *e = pending(t, t->resp_seq);
	int status = p->status_code;

	t->in_head[H1T_RESP] = false;
	if (status < 100) {
		/* http_parser takes "0" or "42"; RFC 9110 §15 wants three digits */
		stop(t, H1T_STOPPED, "invalid HTTP status code");
		return -1;
	}
	if (status == 101) {
		t->resp_upgrades = true;
		return 2;
	}
	if (status / 100 == 1) {
		t->resp_interim = true;	/* 100 Continue, 103 Early Hints: the final one follows */
		return 1;
	}
	if (e->head_done && e->method == HTTP_CONNECT && status / 100 == 2) {
		t->resp_upgrades = true;
		return 2;
	}
	/* RFC 9112 §6.3: no body whatever the fields say */
	if ((e->head_done && e->method == HTTP_HEAD) || status == 204 || status == 304)
		return 1;
	return 0;
}

static int resp_done(http_parser *p)
{
	struct h1track *t = of(p);
	struct h1t_pending *e = pending(t, t->resp_seq);
	bool upgrade_asked = e->upgrade;

	if (t->resp_seq == t->req_seq) {
		/* http_parser may end a close-delimited message it never began again */
		stop(t, H1T_STOPPED, "response without a request");
		return -1;
	}
	if (t->resp_interim) {
		t->resp_interim = false;
		return 0;
	}
	/* The request head may still be streaming (an early answer): report what was kept. */
	if (!e->announced && t->resp_seq == t->req_seq - 1)
		announce(t, t->resp_seq);
	respond(t, p->status_code, NULL);
	if (t->resp_upgrades) {
		stop(t, H1T_UPGRADED, "protocol switched");
		http_parser_pause(p, 1);
		return 0;
	}
	if (upgrade_asked && t->await_upgrade) {
		/* Declined: the client's next bytes are HTTP again, if none passed meanwhile. */
		t->await_upgrade = false;
		if (t->lost_req_bytes) {
			stop(t, H1T_STOPPED, "client bytes after a declined upgrade");
			return -1;
		}
		http_parser_init(&t->p[H1T_REQ], HTTP_REQUEST);
		t->p[H1T_REQ].data = t;
	}
	return 0;
}

static int resp_data(http_parser *p, const char *at, size_t len)
{
	return head_bound(of(p), H1T_RESP, len);
}

static int resp_field(http_parser *p, const char *at, size_t len)
{
	return head_bound(of(p), H1T_RESP, len + 4);
}

static const http_parser_settings resp_settings = {
	.on_message_begin = resp_begin,
	.on_status = resp_data,
	.on_header_field = resp_field,
	.on_header_value = resp_data,
	.on_headers_complete = resp_headers_done,
	.on_message_complete = resp_done,
};

/* ---- feeding ---- */

void h1t_init(struct h1track *t, const struct h1t_cbs *cbs, void *arg)
{
	memset(t, 0, sizeof(*t));
	t->cbs = cbs;
	t->arg = arg;
	t->st = H1T_SNIFF;
	http_parser_init(&t->p[H1T_REQ], HTTP_REQUEST);
	http_parser_init(&t->p[H1T_RESP], HTTP_RESPONSE);
	t->p[H1T_REQ].data = t->p[H1T_RESP].data = t;
}

static void run(struct h1track *t, enum h1t_dir dir, const uint8_t *p, size_t n)
{
	http_parser *hp = &t->p[dir];
	size_t done;
	enum http_errno e;

	if (dir == H1T_REQ && t->await_upgrade) {
		t->lost_req_bytes = t->lost_req_bytes || n;
		return;
	}
	done = http_parser_execute(hp, dir == H1T_REQ ? &req_settings : &resp_settings,
				   (const char *)p, n);
	if (!h1t_active(t))
		return;
	e = HTTP_PARSER_ERRNO(hp);
	if (e == HPE_PAUSED && dir == H1T_REQ && t->await_upgrade) {
		if (done < n)
			t->lost_req_bytes = true;
		return;
	}
	if (e != HPE_OK)
		stop(t, H1T_STOPPED, http_errno_description(e));
}

void h1t_feed(struct h1track *t, enum h1t_dir dir, const uint8_t *p, size_t n, uint64_t now_ns)
{
	if (!n || !h1t_active(t) || t->eof[dir])
		return;	/* nothing follows an EOF on a real connection */
	t->now_ns = now_ns;
	if (t->st == H1T_SNIFF) {
		size_t old = t->sniff_len;
		size_t k = n < sizeof(t->sniff) - old ? n : sizeof(t->sniff) - old;

		if (dir == H1T_RESP) {
			t->st = H1T_NOT_HTTP;	/* the server spoke first */
			return;
		}
		memcpy(t->sniff + old, p, k);
		t->sniff_len = (uint8_t)(old + k);
		switch (h1_sniff((const uint8_t *)t->sniff, t->sniff_len)) {
		case H1_SNIFF_MORE:
			/* wait for more, unless it is longer than any method */
			if (t->sniff_len < sizeof(t->sniff))
				return;
			t->st = H1T_NOT_HTTP;
			return;
		case H1_SNIFF_OTHER:
			t->st = H1T_NOT_HTTP;
			return;
		case H1_SNIFF_HTTP:
			t->st = H1T_ON;
			break;
		}
		/* The bytes held back from earlier feeds first, then this feed whole. */
		if (old)
			run(t, H1T_REQ, (const uint8_t *)t->sniff, old);
		if (h1t_active(t))
			run(t, H1T_REQ, p, n);
		return;
	}
	run(t, dir, p, n);
}

void h1t_eof(struct h1track *t, enum h1t_dir dir, uint64_t now_ns)
{
	t->now_ns = now_ns;
	if (t->st == H1T_SNIFF) {
		t->st = H1T_NOT_HTTP;
		return;
	}
	if (t->st != H1T_ON || t->eof[dir])
		return;
	t->eof[dir] = true;
	if (dir != H1T_RESP)
		return;
	/* A body delimited by the close ends here; a head cut short is an error. */
	run(t, H1T_RESP, NULL, 0);
}

void h1t_close(struct h1track *t, const char *why, uint64_t now_ns)
{
	t->now_ns = now_ns;
	abandon(t, why);
	if (h1t_active(t))
		t->st = t->st == H1T_SNIFF ? H1T_NOT_HTTP : H1T_STOPPED;
}
