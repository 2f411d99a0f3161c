/* SPDX-License-Identifier: Apache-2.0 */
/* Private to grpc/: moving an nghttp2 session's bytes over a non-blocking socket, cleartext or
 * through a tls_conn, with poll() waits bounded by a deadline and a cancel flag. The client
 * and the server share it. */
#ifndef AMBIT_GRPC_IO_H
#define AMBIT_GRPC_IO_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>

struct tls_conn;

struct grpc_io {
	int fd;				/* -1: not connected */
	struct tls_conn *conn;		/* TLS over fd, or NULL for h2c */
	nghttp2_session *sess;
};

/* Points nv at name and value (NUL-terminated, borrowed until nghttp2 copies them). */
void grpc_io_nv(nghttp2_nv *nv, const char *name, const char *value);

/* Waits for events on fd until deadline (monotonic ms) in slices that look at *cancel.
 * 0, -ETIMEDOUT, -ECANCELED, -errno. */
int grpc_io_wait(int fd, short events, uint64_t deadline, const volatile bool *cancel);
/* The poll events a TLS step that said -EAGAIN waits for. */
short grpc_io_tls_events(const struct tls_conn *c);
/* Drives a TLS handshake on io->conn to completion. 0 or the tls_conn_handshake error. */
int grpc_io_handshake(struct grpc_io *io, uint64_t deadline, const volatile bool *cancel);
/* Writes everything nghttp2 has queued (and TLS records still unsent), waiting as needed.
 * 0, -EPROTO (nghttp2), or the wait / socket error. */
int grpc_io_flush(struct grpc_io *io, uint64_t deadline, const volatile bool *cancel);
/* Reads what is there (non-blocking) into nghttp2, with what TLS already decrypted. 0;
 * -EAGAIN when nothing was there (*events says what to wait for); -ECONNRESET on EOF;
 * -EPROTO when nghttp2 refused the bytes; another -errno. */
int grpc_io_read(struct grpc_io *io, short *events);

#endif
