/* SPDX-License-Identifier: Apache-2.0 */
/* A connected pair of TCP sockets on loopback (real TCP: FIN and RST semantics), for unit
 * tests of the splice engine (tests/unit/test_conn*.c). */
#ifndef AMBIT_TESTS_TCP_PAIR_H
#define AMBIT_TESTS_TCP_PAIR_H

#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static inline void tcp_pair(int *a, int *b)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (bind(l, (struct sockaddr *)&sin, sizeof(sin)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&sin, &len))
		abort();
	*a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (connect(*a, (struct sockaddr *)&sin, sizeof(sin)))
		abort();
	*b = accept(l, NULL, NULL);
	close(l);
}

#endif
