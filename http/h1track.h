/* SPDX-License-Identifier: Apache-2.0 */
/* Passive HTTP/1.x request tracking for a relayed connection: fed the bytes as they pass in
 * each direction (never holding, changing or buffering them), it pairs request heads with
 * their final responses through keep-alive, pipelining, interim 1xx answers, HEAD, chunked
 * and close-delimited bodies, and stops at an upgrade or at anything it cannot parse.
 * No I/O, no clock: the caller passes the time with each feed. */
#ifndef AMBIT_HTTP_H1TRACK_H
#define AMBIT_HTTP_H1TRACK_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define H1T_MAX_HEAD	(64 * 1024)	/* a head (start line + fields) past it stops tracking */
#define H1T_PATH_MAX	128		/* url.path kept (longer ones are cut) */
#define H1T_HOST_MAX	64		/* host kept (longer ones are cut) */
#define H1T_TP_MAX	63		/* a longer traceparent is ignored */
#define H1T_PIPELINE	8		/* requests awaiting their response; one more stops tracking */

enum h1t_dir {
	H1T_REQ = 0,	/* client to server */
	H1T_RESP = 1,	/* server to client */
};

enum h1t_state {
	H1T_SNIFF,	/* no byte of the client seen yet (or fewer than a method and a space) */
	H1T_ON,		/* HTTP/1.x: tracking */
	H1T_NOT_HTTP,	/* the first bytes were not an HTTP/1.x request (TLS, h2, anything else) */
	H1T_UPGRADED,	/* 101 or a CONNECT tunnel: what follows is not HTTP (not an error) */
	H1T_STOPPED,	/* a parse error or a bound: tracking ended, the bytes still flow */
};
const char *h1t_state_str(enum h1t_state st);

/* A request head, reported once when it is complete (or when its response completes first).
 * Strings are not NUL-terminated and valid during the callback only. */
struct h1t_request {
	uint64_t ordinal;		/* 0 for the connection's first request */
	const char *method;		/* "GET" */
	int http_major, http_minor;
	const char *path;		/* origin-form path without the query; may be cut */
	size_t path_len;
	const char *host;		/* the Host field (or the authority of an absolute URL) */
	size_t host_len;
	const char *traceparent;	/* the request's own traceparent field, NULL if none */
	size_t traceparent_len;
	uint64_t start_ns;		/* the feed that carried the request's first byte */
};

/* The final response of a request (status >= 200, or 101), or its abandonment (status 0:
 * the connection closed, or tracking stopped, before the response was complete). */
struct h1t_response {
	uint64_t ordinal;
	int status;
	uint64_t end_ns;		/* the feed that carried the response's last byte */
	const char *why;		/* status 0: why there is no response */
};

struct h1t_cbs {
	void (*on_request)(void *arg, const struct h1t_request *r);
	void (*on_response)(void *arg, const struct h1t_response *r);
	/* Tracking ended for a reason other than "not HTTP" (state H1T_UPGRADED or
	 * H1T_STOPPED; error true for the latter). Called once per tracker. */
	void (*on_stop)(void *arg, const char *why, bool error);
};

struct h1t_pending {
	uint64_t start_ns;
	uint8_t method;			/* enum http_method, valid once head_done */
	bool head_done;			/* the request head was parsed */
	bool announced;			/* on_request was called */
	bool upgrade;			/* asked for an upgrade or is CONNECT */
};

struct h1track {
	http_parser p[2];		/* per enum h1t_dir */
	enum h1t_state st;
	const struct h1t_cbs *cbs;
	void *arg;
	uint64_t now_ns;		/* of the current feed */
	uint64_t req_seq;		/* requests begun */
	uint64_t resp_seq;		/* requests answered (the oldest pending one's ordinal) */
	struct h1t_pending q[H1T_PIPELINE];	/* ordinals resp_seq .. req_seq-1, ring by ordinal */
	bool in_head[2];		/* between message begin and headers complete */
	uint32_t head_bytes[2];		/* of the head being read */
	bool resp_interim;		/* the response being read is a 1xx other than 101 */
	bool resp_upgrades;		/* the response being read switches protocols */
	bool await_upgrade;		/* a request asked for an upgrade: its answer decides */
	bool lost_req_bytes;		/* client bytes passed while await_upgrade */
	bool eof[2];			/* the direction's sender finished */
	/* The request head being read: the fields kept (bounded). */
	bool in_value, path_done, host_seen, tp_seen, tp_bad;
	uint8_t field;			/* which field the current value belongs to */
	uint8_t name_len;		/* bytes of the current field name (0xff: too long to matter) */
	char name[12];
	uint8_t sniff_len;
	char sniff[16];			/* the first bytes, while fewer than a method and a space */
	uint16_t path_len;
	uint8_t host_len, tp_len;
	char path[H1T_PATH_MAX];
	char host[H1T_HOST_MAX];
	char tp[H1T_TP_MAX];
};

/* cbs and arg are borrowed. */
void h1t_init(struct h1track *t, const struct h1t_cbs *cbs, void *arg);
/* n bytes passed in direction dir at time now_ns. Never fails: problems end tracking. */
void h1t_feed(struct h1track *t, enum h1t_dir dir, const uint8_t *p, size_t n, uint64_t now_ns);
/* The sender of dir finished (FIN): completes a close-delimited response. */
void h1t_eof(struct h1track *t, enum h1t_dir dir, uint64_t now_ns);
/* The connection is gone: every request still waiting is reported abandoned with why. */
void h1t_close(struct h1track *t, const char *why, uint64_t now_ns);
/* True while bytes are still worth feeding. */
static inline bool h1t_active(const struct h1track *t)
{
	return t->st == H1T_SNIFF || t->st == H1T_ON;
}

#endif
