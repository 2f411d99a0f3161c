// SPDX-License-Identifier: Apache-2.0
/* The agent's own HTTP endpoints: accept, parse one request with http_parser (bounded),
 * call the handler, write the response, close. Idle or slow clients are cut after 10 s. */
#include "agent/httpd.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <http_parser.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HTTPD_MAX_REQUEST (64 * 1024)
#define HTTPD_MAX_CLIENTS 64
#define HTTPD_TIMEOUT_MS 10000

struct httpd {
	struct loop *loop;
	struct loop_io io;
	int fd;
	httpd_handler_fn fn;
	void *arg;
	int nclients;
};

struct client {
	struct httpd *h;
	struct loop_io io;
	struct loop_timer timer;
	int fd;
	http_parser parser;
	char in[HTTPD_MAX_REQUEST + 1];
	size_t in_len;
	char url[2048];
	size_t url_len;
	char *body;
	size_t body_len;
	bool complete;
	bool bad;
	char *out;
	size_t out_len, out_off;
};

static void client_free(struct loop *l, void *arg)
{
	struct client *c = arg;
	(void)l;
	free(c->body);
	free(c->out);
	free(c);
}

static void client_close(struct client *c)
{
	if (c->fd < 0)
		return;
	loop_io_del(c->h->loop, &c->io);
	loop_timer_cancel(c->h->loop, &c->timer);
	close(c->fd);
	c->fd = -1;
	c->h->nclients--;
	if (loop_defer(c->h->loop, client_free, c))
		pr_warn_rl("httpd: cannot defer free");
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct client *c = p->data;
	if (c->url_len + len >= sizeof(c->url))
		return 1;
	memcpy(c->url + c->url_len, at, len);
	c->url_len += len;
	c->url[c->url_len] = '\0';
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct client *c = p->data;
	char *nb = realloc(c->body, c->body_len + len + 1);
	if (!nb)
		return 1;
	c->body = nb;
	memcpy(c->body + c->body_len, at, len);
	c->body_len += len;
	c->body[c->body_len] = '\0';
	return 0;
}

static int on_complete(http_parser *p)
{
	struct client *c = p->data;
	c->complete = true;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings parser_settings = {
	.on_url = on_url,
	.on_body = on_body,
	.on_message_complete = on_complete,
};

static const char *status_text(int status)
{
	switch (status) {
	case 200: return "OK";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Payload Too Large";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	default: return "Status";
	}
}

static void client_write(struct client *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EAGAIN || errno == EINTR) {
				loop_io_set(c->h->loop, &c->io, EPOLLOUT);
				return;
			}
			break;
		}
		c->out_off += (size_t)n;
	}
	client_close(c);
}

static void respond(struct client *c, struct httpd_response *r)
{
	const char *ct = r->content_type ? r->content_type : "application/json";
	char head[256];
	int hl = snprintf(head, sizeof(head),
			  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			  "Connection: close\r\n\r\n",
			  r->status, status_text(r->status), ct, r->body_len);
	c->out = malloc((size_t)hl + r->body_len);
	if (!c->out) {
		free(r->body);
		client_close(c);
		return;
	}
	memcpy(c->out, head, (size_t)hl);
	if (r->body_len)
		memcpy(c->out + hl, r->body, r->body_len);
	c->out_len = (size_t)hl + r->body_len;
	free(r->body);
	client_write(c);
}

static void handle(struct client *c)
{
	struct httpd_response r = { .status = 500 };
	struct httpd_request req = { 0 };
	char *q;

	if (c->bad) {
		httpd_reply(&r, 400, "text/plain", "bad request\n", 12);
		respond(c, &r);
		return;
	}
	q = strchr(c->url, '?');
	if (q)
		*q++ = '\0';
	req.method = http_method_str((enum http_method)c->parser.method);
	req.path = c->url;
	req.query = q ? q : "";
	req.body = c->body ? c->body : "";
	req.body_len = c->body_len;
	c->h->fn(c->h->arg, &req, &r);
	respond(c, &r);
}

static void client_io(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct client *c = io->arg;
	(void)l;

	if (c->out) {
		client_write(c);
		return;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		for (;;) {
			if (c->in_len >= HTTPD_MAX_REQUEST) {
				c->bad = true;
				break;
			}
			ssize_t n = recv(c->fd, c->in + c->in_len, HTTPD_MAX_REQUEST - c->in_len, 0);
			if (n == -1 && (errno == EAGAIN || errno == EINTR))
				return;
			if (n <= 0) {
				client_close(c);
				return;
			}
			size_t done = http_parser_execute(&c->parser, &parser_settings, c->in + c->in_len,
							  (size_t)n);
			c->in_len += (size_t)n;
			if (c->complete)
				break;
			if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || done != (size_t)n) {
				c->bad = true;
				break;
			}
		}
		handle(c);
	}
}

static void client_timeout(struct loop *l, struct loop_timer *t)
{
	(void)l;
	client_close(t->arg);
}

static void on_accept(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct httpd *h = io->arg;
	(void)events;
	for (int i = 0; i < 16; i++) {
		int fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1)
			return;
		struct client *c = h->nclients < HTTPD_MAX_CLIENTS ? calloc(1, sizeof(*c)) : NULL;
		if (!c) {
			close(fd);
			continue;
		}
		c->h = h;
		c->fd = fd;
		http_parser_init(&c->parser, HTTP_REQUEST);
		c->parser.data = c;
		loop_io_init(&c->io, fd, client_io, c);
		loop_timer_init(&c->timer, client_timeout, c);
		h->nclients++;
		if (loop_io_set(l, &c->io, EPOLLIN) || loop_timer_arm(l, &c->timer, HTTPD_TIMEOUT_MS))
			client_close(c);
	}
}

struct httpd *httpd_new(struct loop *l, const struct sockaddr_storage *addr, httpd_handler_fn fn,
			void *arg)
{
	struct httpd *h = calloc(1, sizeof(*h));
	int one = 1, err;

	if (!h)
		return NULL;
	h->loop = l;
	h->fn = fn;
	h->arg = arg;
	h->fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (h->fd == -1) {
		err = errno;
		goto fail;
	}
	setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* An agent being upgraded (DaemonSet maxSurge) shares its ports with its successor. */
	setsockopt(h->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(h->fd, (const struct sockaddr *)addr, sockaddr_len(addr)) == -1 ||
	    listen(h->fd, 128) == -1) {
		err = errno;
		goto fail_fd;
	}
	loop_io_init(&h->io, h->fd, on_accept, h);
	if ((err = -loop_io_set(l, &h->io, EPOLLIN)))
		goto fail_fd;
	return h;
fail_fd:
	close(h->fd);
fail:
	free(h);
	errno = err;
	return NULL;
}

void httpd_free(struct httpd *h)
{
	if (!h)
		return;
	loop_io_del(h->loop, &h->io);
	close(h->fd);
	free(h);
}

void httpd_reply(struct httpd_response *resp, int status, const char *content_type,
		 const char *body, size_t len)
{
	free(resp->body);
	resp->status = status;
	resp->content_type = content_type;
	resp->body = malloc(len + 1);
	resp->body_len = resp->body ? len : 0;
	if (resp->body) {
		memcpy(resp->body, body, len);
		resp->body[len] = '\0';
	} else {
		resp->status = 500;
	}
}

void httpd_reply_json(struct httpd_response *resp, int status, json_t *j, size_t flags)
{
	char *s = j ? json_dumps(j, flags) : NULL;

	json_decref(j);
	if (!s) {
		httpd_reply(resp, 500, "application/json", "{\"error\":\"out of memory\"}", 25);
		return;
	}
	free(resp->body);
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = s;
	resp->body_len = strlen(s);
}

void httpd_replyf(struct httpd_response *resp, int status, const char *content_type,
		  const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;
	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0) {
		resp->status = 500;
		return;
	}
	free(resp->body);
	resp->status = status;
	resp->content_type = content_type;
	resp->body = s;
	resp->body_len = (size_t)n;
}

static int hexv(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
					     : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int httpd_query_get(const char *query, const char *key, char *out, size_t outlen)
{
	size_t kl = strlen(key);
	const char *p = query;
	while (p && *p) {
		const char *amp = strchr(p, '&');
		size_t seg = amp ? (size_t)(amp - p) : strlen(p);
		if (seg > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
			size_t o = 0;
			for (size_t i = kl + 1; i < seg && o + 1 < outlen; i++) {
				if (p[i] == '%' && i + 2 < seg && hexv(p[i + 1]) >= 0 && hexv(p[i + 2]) >= 0) {
					out[o++] = (char)(hexv(p[i + 1]) << 4 | hexv(p[i + 2]));
					i += 2;
				} else {
					out[o++] = p[i] == '+' ? ' ' : p[i];
				}
			}
			out[o] = '\0';
			return 0;
		}
		if (seg == kl && strncmp(p, key, kl) == 0) {
			if (outlen)
				out[0] = '\0';
			return 0;
		}
		p = amp ? amp + 1 : NULL;
	}
	return -ENOENT;
}
