/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP/1.x framing for the waypoint: sniffing the first bytes of a stream, one http_parser per
 * direction that stops at message boundaries (keep-alive, pipelining), heads rebuilt with the
 * waypoint's own headers, bodies re-framed as they pass (chunked stays chunked), and the point
 * where an upgrade or CONNECT turns the stream into a raw tunnel. No I/O: bytes in, bytes out. */
#ifndef AMBIT_HTTP_HTTP1_H
#define AMBIT_HTTP_HTTP1_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define H1_MAX_HEADERS	128
#define H1_MAX_HEAD	(64 * 1024)	/* request line + headers; past it: 431 */
#define H1_MAX_TRAILERS	32		/* trailer fields of a chunked body kept; more are dropped */

/* A growable byte buffer (the staging areas between the parser and the conns). */
struct h1_buf {
	uint8_t *data;
	size_t len, cap;
	size_t off;		/* bytes already taken from the front */
};
int h1_buf_append(struct h1_buf *b, const void *p, size_t n);
int h1_buf_printf(struct h1_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline size_t h1_buf_pending(const struct h1_buf *b) { return b->len - b->off; }
/* The unread bytes (NULL for a buffer never filled: no pointer arithmetic on NULL). */
static inline const uint8_t *h1_buf_head(const struct h1_buf *b)
{
	return b->data ? b->data + b->off : NULL;
}
/* n bytes were taken from the front; the buffer resets when empty. */
void h1_buf_consume(struct h1_buf *b, size_t n);
void h1_buf_fini(struct h1_buf *b);

enum h1_sniff {
	H1_SNIFF_MORE,	/* not enough bytes to tell */
	H1_SNIFF_HTTP,	/* starts like an HTTP/1.x request line ("GET /...") */
	H1_SNIFF_OTHER,	/* anything else (TLS, HTTP/2 preface, a binary protocol): pass as TCP */
};
/* Looks at the first bytes of a client stream: a known method token followed by a space. */
enum h1_sniff h1_sniff(const uint8_t *p, size_t n);

struct h1_header {
	uint32_t name, value;		/* offsets into the arena */
	uint32_t name_len, value_len;
};

enum h1_st {
	H1_ST_HEAD,	/* reading a message head */
	H1_ST_BODY,	/* head seen; body bytes are re-framed into the output */
	H1_ST_DONE,	/* message complete; nothing more is read until h1_next() */
	H1_ST_UPGRADED,	/* upgrade or CONNECT accepted: what follows is not HTTP */
	H1_ST_ERROR,	/* malformed or refused: see error/status */
};
const char *h1_st_to_str(enum h1_st st);

/* What on_head returns (besides 0 = go on, <0 = refuse the message with H1_ST_ERROR). */
#define H1_HEAD_NO_BODY	1	/* a response that has no body whatever it says (to HEAD) */
#define H1_HEAD_TUNNEL	2	/* a 2xx response to CONNECT: the tunnel starts after the head */

struct h1;
struct h1_cbs {
	/* The head is complete (h1_method, h1_header, ...). The callee writes what it wants to
	 * forward (usually h1_format_head) into out before the body follows. */
	int (*on_head)(struct h1 *h, struct h1_buf *out, void *arg);
	/* The message is complete (the re-framed end, e.g. "0\r\n\r\n", is already in out). */
	void (*on_done)(struct h1 *h, void *arg);
};

struct h1 {
	http_parser p;
	enum http_parser_type type;
	enum h1_st st;
	const struct h1_cbs *cbs;
	void *arg;
	struct h1_buf *out;		/* during h1_feed only */
	/* the current head */
	char *arena;
	size_t arena_len, arena_cap;
	uint32_t url, url_len;
	struct h1_header h[H1_MAX_HEADERS];
	int nh;
	/* the trailer section of a chunked body (RFC 9112 §7.1.2) when keep_trailers, in the
	 * arena after the head; complete at H1_ST_DONE, until h1_next. Past H1_MAX_TRAILERS
	 * fields or H1_MAX_HEAD bytes with the head, the rest is dropped (tr_full). */
	struct h1_header tr[H1_MAX_TRAILERS];
	int ntr;
	bool tr_full;
	bool in_value;
	bool keep_trailers;		/* set by the caller: the trailer section is kept and the
					 * re-chunked output carries it (h1_trailer_forbidden
					 * fields left out); else dropped (RFC 9112 §7.1.2) */
	bool chunked_out;		/* the body is being re-chunked */
	bool keep_alive;		/* http_should_keep_alive at head and at end */
	bool upgrade;			/* the message asked for an upgrade (or is CONNECT) */
	uint64_t body_bytes;		/* decoded body bytes of the current message */
	uint64_t messages;		/* completed messages */
	int error_status;		/* H1_ST_ERROR: the answer a client should get (400, 431) */
	const char *error;		/* H1_ST_ERROR: why */
};

/* type HTTP_REQUEST (client to server) or HTTP_RESPONSE. cbs and arg are borrowed. */
void h1_init(struct h1 *h, enum http_parser_type type, const struct h1_cbs *cbs, void *arg);
void h1_fini(struct h1 *h);
/* Parses up to n bytes, writing the re-framed message into out (head through on_head).
 * Stops after a complete message (H1_ST_DONE), at an upgrade (H1_ST_UPGRADED; the bytes
 * after it are not consumed) or at an error (H1_ST_ERROR). Returns the bytes consumed. */
size_t h1_feed(struct h1 *h, const uint8_t *p, size_t n, struct h1_buf *out);
/* The peer closed: completes a body delimited by the close. 0, or -EPROTO when the close cut
 * a message short (H1_ST_ERROR). Bytes may be added to out. */
int h1_feed_eof(struct h1 *h, struct h1_buf *out);
/* After H1_ST_DONE: ready for the next message on the same connection. */
void h1_next(struct h1 *h);
/* True between messages (no byte of the next one seen yet). */
bool h1_idle(const struct h1 *h);

/* The current head. Strings are not NUL-terminated: use the lengths. */
const char *h1_method(const struct h1 *h);			/* "GET" (requests) */
int h1_status(const struct h1 *h);				/* responses */
const char *h1_url(const struct h1 *h, size_t *len);
/* The value of the first header named name (case-insensitive), or NULL. */
const char *h1_header(const struct h1 *h, const char *name, size_t *len);
/* The trailer fields of the current message: how many, and field i (not NUL-terminated,
 * the value trimmed as received by http_parser). */
int h1_trailer_count(const struct h1 *h);
void h1_trailer(const struct h1 *h, int i, const char **name, size_t *nlen, const char **value,
		size_t *vlen);
/* From on_head of a request: an "Upgrade: h2c" request (RFC 7540 §3.2's h2c upgrade, gone
 * from RFC 9113) is not taken as an upgrade, as Envoy ignores it (envoyproxy/envoy#7161): the
 * parser goes on with the message as HTTP/1.1 (h->upgrade false) and the caller drops the
 * upgrade and http2-settings fields and sends connection as *conn: the connection tokens but
 * "upgrade" and "http2-settings" (new string; NULL: none left, drop it). 1 when it was one,
 * 0 when not (nothing changed), -ENOMEM. */
int h1_ignore_h2c_upgrade(struct h1 *h, char **conn);
/* A field that must not be forwarded in a trailer section (RFC 9110 §6.5.1: framing, routing,
 * content and connection-specific fields). name is case-insensitive, len bytes. */
bool h1_trailer_forbidden(const char *name, size_t len);

/* Writes the head as received (request line or status line, then the headers), except the
 * headers named in drop[] (NULL-terminated, case-insensitive), then the extra lines (each
 * "name: value", may be NULL), then the blank line. 0 or -ENOMEM. */
int h1_format_head(const struct h1 *h, struct h1_buf *out, const char *const *drop,
		   const char *const *extra, size_t nextra);
/* The same, a request's target replaced by url (NULL: h's). */
int h1_format_head_url(const struct h1 *h, struct h1_buf *out, const char *url,
		       const char *const *drop, const char *const *extra, size_t nextra);

/* A complete local answer (errors the waypoint makes itself): status line, a text body with
 * content-length, connection: close when close. 0 or -ENOMEM. */
int h1_local_response(struct h1_buf *out, int status, const char *body, bool close);
const char *h1_reason(int status);
/* A tchar (RFC 9110 §5.6.2): a byte of a token such as a method or a field name. */
bool h1_is_tchar(unsigned char c);

#endif
