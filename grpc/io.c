// SPDX-License-Identifier: Apache-2.0
/* Socket and TLS I/O under the gRPC client's and server's nghttp2 sessions (grpc/io.h). */
#include "grpc/io.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "tls/conn.h"

#define POLL_SLICE_MS 100	/* how often a blocked wait looks at the cancel flag */

void grpc_io_nv(nghttp2_nv *nv, const char *name, const char *value)
{
	nv->name = (uint8_t *)name;
	nv->namelen = strlen(name);
	nv->value = (uint8_t *)value;
	nv->valuelen = strlen(value);
	nv->flags = NGHTTP2_NV_FLAG_NONE;
}

int grpc_io_wait(int fd, short events, uint64_t deadline, const volatile bool *cancel)
{
	for (;;) {
		uint64_t now = now_mono_ms();
		if (cancel && *cancel)
			return -ECANCELED;
		if (now >= deadline)
			return -ETIMEDOUT;
		struct pollfd p = { .fd = fd, .events = events };
		int n = poll(&p, 1, (int)MIN(deadline - now, (uint64_t)POLL_SLICE_MS));
		if (n == -1 && errno != EINTR)
			return -errno;
		if (n > 0)
			return 0;
	}
}

short grpc_io_tls_events(const struct tls_conn *c)
{
	unsigned w = tls_conn_want(c);
	return (short)((w & TLS_WANT_READ ? POLLIN : 0) | (w & TLS_WANT_WRITE ? POLLOUT : 0));
}

int grpc_io_handshake(struct grpc_io *io, uint64_t deadline, const volatile bool *cancel)
{
	int err;

	while ((err = tls_conn_handshake(io->conn)) == -EAGAIN)
		if ((err = grpc_io_wait(io->fd, grpc_io_tls_events(io->conn), deadline, cancel)))
			break;
	return err;
}

/* One write of the connection's bytes: >0 taken, -EAGAIN (then *events says for what), or
 * -errno. */
static ssize_t io_write(struct grpc_io *io, const uint8_t *data, size_t len, short *events)
{
	*events = POLLOUT;
	if (io->conn) {
		ssize_t w = tls_conn_write(io->conn, data, len);
		if (w == -EAGAIN)
			*events = grpc_io_tls_events(io->conn);
		return w;
	}
	for (;;) {
		ssize_t w = send(io->fd, data, len, MSG_NOSIGNAL);
		if (w >= 0)
			return w;
		if (errno != EINTR)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

int grpc_io_flush(struct grpc_io *io, uint64_t deadline, const volatile bool *cancel)
{
	for (;;) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(io->sess, &data);
		if (n < 0)
			return -EPROTO;
		if (n == 0) {
			/* Records a full socket did not take yet. */
			while (io->conn && tls_conn_unsent(io->conn)) {
				int err = tls_conn_flush(io->conn);
				if (err == -EAGAIN)
					err = grpc_io_wait(io->fd, POLLOUT, deadline, cancel);
				if (err)
					return err;
			}
			return 0;
		}
		for (ssize_t off = 0; off < n;) {
			short events;
			ssize_t w = io_write(io, data + off, (size_t)(n - off), &events);
			if (w >= 0) {
				off += w;
				continue;
			}
			if (w != -EAGAIN)
				return (int)w;
			int err = grpc_io_wait(io->fd, events, deadline, cancel);
			if (err)
				return err;
		}
	}
}

int grpc_io_read(struct grpc_io *io, short *events)
{
	uint8_t buf[16384];
	ssize_t n;

	*events = POLLIN;
	do {
		if (io->conn) {
			n = tls_conn_read(io->conn, buf, sizeof(buf));
			if (n == -EAGAIN)
				*events = grpc_io_tls_events(io->conn);
		} else {
			n = recv(io->fd, buf, sizeof(buf), 0);
			if (n < 0)
				n = errno == EINTR || errno == EWOULDBLOCK ? -EAGAIN : -errno;
		}
		if (n == 0)
			return -ECONNRESET;
		if (n < 0)
			return (int)n;
		if (nghttp2_session_mem_recv(io->sess, buf, (size_t)n) < 0)
			return -EPROTO;
	} while (io->conn && tls_conn_pending(io->conn));	/* poll will not announce these */
	return 0;
}
