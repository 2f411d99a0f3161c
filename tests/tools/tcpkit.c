// SPDX-License-Identifier: Apache-2.0
/* tcpkit: the TCP traffic tool of the lab tests and benchmarks. `serve` answers in one of several
 * modes, `client` drives verified transfers, echo storms, half-close, resets, connect rate and
 * latency.
 * Self-contained (libc, poll); results are key=value lines on stdout, failures one line on stderr.
 *
 * Every byte stream is the same deterministic pattern, keyed by its offset from the start of the
 * connection, so either side can check what it receives without keeping a copy. */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef AMBIT_VERSION
#define AMBIT_VERSION "0.0.0"
#endif

#define IO_BUF (256u * 1024u)   /* one read or write */
#define ECHO_BUF (64u * 1024u)  /* per-connection echo buffer on the server */

/* ---------- memory: the running mode's buffers are held here rather than only in locals, so
 * that every way out frees them, die() included (LSan checks the exit of a timeout or a failed
 * check as well as a clean one). ---------- */

struct sconn;
static struct {
	void *blk[4];         /* the mode's buffers, by slot */
	struct sconn *conns;  /* serve: the open connections, each with its echo buffer */
	size_t nconns;
} g_held;
static uint8_t *pat_scratch; /* IO_BUF + 16 bytes, for checks */
static void held_free_conns(void);

/* Records p as the mode's buffer in slot (replacing the slot's old one, as after a realloc). */
static void *held(unsigned slot, void *p)
{
	g_held.blk[slot] = p;
	return p;
}

static void held_free(void)
{
	held_free_conns();
	for (unsigned i = 0; i < sizeof(g_held.blk) / sizeof(g_held.blk[0]); i++) {
		free(g_held.blk[i]);
		g_held.blk[i] = NULL;
	}
}

/* ---------- failure reporting ---------- */

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...)
{
	va_list ap;
	held_free();
	free(pat_scratch);
	fflush(stdout);
	fputs("tcpkit: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n, sz);
	if (!p)
		die(1, "out of memory (%zu x %zu bytes)", n, sz);
	return p;
}

/* realloc in one of the held slots: on failure the old block stays held and is freed by die(). */
static void *xrealloc_held(unsigned slot, size_t n, size_t sz)
{
	void *p = n > SIZE_MAX / sz ? NULL : realloc(g_held.blk[slot], n * sz);
	if (!p)
		die(1, "out of memory (%zu x %zu bytes)", n, sz);
	return held(slot, p);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---------- the pattern: byte o is byte (o & 7) of little-endian word o / 8, where word i is
 * table[i mod 2^17] ^ (i / 2^17) * golden: a 1 MiB xorshift64 table, re-keyed every MiB so that
 * a lost or repeated MiB is caught as well as a corrupted byte. ---------- */

#define PAT_SHIFT 17
#define PAT_WORDS (1u << PAT_SHIFT)
static uint64_t pat_table[PAT_WORDS];
static void pat_init(void)
{
	uint64_t x = 0x2545f4914f6cdd1dull;
	for (unsigned i = 0; i < PAT_WORDS; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		pat_table[i] = x;
	}
	pat_scratch = xcalloc(1, IO_BUF + 16);
}

static inline uint64_t pat_word(uint64_t i)
{
	return htole64(pat_table[i & (PAT_WORDS - 1)] ^ ((i >> PAT_SHIFT) * 0x9e3779b97f4a7c15ull));
}

/* Writes the pattern bytes [off, off + len) to buf. */
static void pat_fill(uint8_t *buf, uint64_t off, size_t len)
{
	uint64_t w = off >> 3, v;
	size_t skip = off & 7;

	if (skip && len) {
		size_t n = 8 - skip < len ? 8 - skip : len;
		v = pat_word(w++);
		memcpy(buf, (uint8_t *)&v + skip, n);
		buf += n;
		len -= n;
	}
	for (; len >= 8; len -= 8, buf += 8) {
		v = pat_word(w++);
		memcpy(buf, &v, 8);
	}
	if (len) {
		v = pat_word(w);
		memcpy(buf, &v, len);
	}
}

/* Checks that buf holds the pattern bytes [off, off + len), len <= IO_BUF. Returns true when it
 * does; otherwise stores the stream offset of the first wrong byte in *bad. */
static bool pat_check(const uint8_t *buf, uint64_t off, size_t len, uint64_t *bad)
{
	pat_fill(pat_scratch, off, len);
	if (memcmp(buf, pat_scratch, len) == 0)
		return true;
	for (size_t i = 0; i < len; i++)
		if (buf[i] != pat_scratch[i]) {
			*bad = off + i;
			break;
		}
	return false;
}

/* ---------- addresses ---------- */

struct addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

/* Parses "IP", "IP:PORT" or "[IPv6]:PORT" (port 0 when absent and allowed). */
static int addr_parse(const char *s, int default_port, struct addr *a)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *port = NULL;
	long p = default_port;
	char *end;

	memset(a, 0, sizeof(*a));
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || (size_t)(rb - s - 1) >= sizeof(host))
			return -1;
		memcpy(host, s + 1, rb - s - 1);
		host[rb - s - 1] = 0;
		if (rb[1] == ':')
			port = rb + 2;
		else if (rb[1])
			return -1;
	} else {
		const char *c = strrchr(s, ':');
		if (c && strchr(s, ':') == c) { /* exactly one colon: IPv4:port */
			if ((size_t)(c - s) >= sizeof(host))
				return -1;
			memcpy(host, s, c - s);
			host[c - s] = 0;
			port = c + 1;
		} else {
			if (strlen(s) >= sizeof(host))
				return -1;
			strcpy(host, s);
		}
	}
	if (port) {
		errno = 0;
		p = strtol(port, &end, 10);
		if (errno || *end || end == port || p < 0 || p > 65535)
			return -1;
	}
	if (p < 0)
		return -1;
	struct sockaddr_in *in4 = (struct sockaddr_in *)&a->ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->ss;
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)p);
		a->len = sizeof(*in4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)p);
		a->len = sizeof(*in6);
		return 0;
	}
	return -1;
}

/* Formats a socket address as IP:PORT ([IP]:PORT for IPv6; v4-mapped shown as IPv4). */
static const char *addr_str(const struct sockaddr *sa, char *buf, size_t n)
{
	char ip[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)sa;
		inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
		snprintf(buf, n, "%s:%u", ip, ntohs(s->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr)) {
			inet_ntop(AF_INET, &s->sin6_addr.s6_addr[12], ip, sizeof(ip));
			snprintf(buf, n, "%s:%u", ip, ntohs(s->sin6_port));
		} else {
			inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
			snprintf(buf, n, "[%s]:%u", ip, ntohs(s->sin6_port));
		}
	} else {
		snprintf(buf, n, "?");
	}
	return buf;
}

static void set_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Closes with SO_LINGER 0, so that the peer gets a RST instead of a FIN (RFC 9293 §3.6). */
static void close_reset(int fd)
{
	struct linger lg = { 1, 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* Raises the open-file limit to the hard limit so that thousands of connections fit. */
static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* ---------- options ---------- */

enum mode { M_ECHO, M_SINK, M_SOURCE, M_VERIFY, M_HALFCLOSE, M_RR, M_CRR, M_RESET, M_ABORT, M_HTTP };
static const char *const mode_names[] = { "echo", "sink", "source", "verify", "halfclose", "rr",
	"crr", "reset", "abort", "http", NULL };

/* The http mode's exchange: a bodiless GET, a 200 with --msg-size body bytes. */
static const char http_req[] = "GET /rr HTTP/1.1\r\nHost: tcpkit\r\n\r\n";
static size_t http_resp(char *buf, size_t cap, size_t body)
{
	int n = snprintf(buf, cap, "HTTP/1.1 200 OK\r\ncontent-length: %zu\r\n\r\n", body);
	if (n < 0 || (size_t)n + body > cap)
		return 0;
	memset(buf + n, 'x', body);
	return (size_t)n + body;
}

struct opts {
	bool server;
	enum mode mode;
	struct addr to, bind;
	bool have_bind;
	int port;
	uint64_t bytes;       /* per connection */
	bool bytes_set;
	uint64_t reply;       /* halfclose reply size */
	uint64_t conns;       /* client: connections in total; server: exit after this many */
	unsigned parallel;
	size_t msg_size;
	uint64_t count;
	double timeout;
	bool timeout_set;
	bool peers, verbose;
};

static void usage(FILE *f)
{
	fputs("usage: tcpkit serve --port P [--bind IP] [--mode MODE] [--bytes N] [--reply N]\n"
	      "                    [--peers] [--exit-after N] [--timeout S] [-v]\n"
	      "       tcpkit client --to IP:PORT [--mode MODE] [--bytes N] [--reply N] [--conns N]\n"
	      "                    [--parallel N] [--msg-size N] [--count N] [--bind IP] [--timeout S]\n"
	      "modes (server side / client side):\n"
	      "  echo       server echoes; client sends --bytes per connection and checks the echo.\n"
	      "             --conns N --parallel N holds N connections open at once (the batch is\n"
	      "             closed only when every connection in it has its echo)\n"
	      "  sink       server discards; client sends --bytes unchecked (raw throughput)\n"
	      "  source     server sends --bytes then FIN; client checks them (download)\n"
	      "  verify     server checks the stream and answers \"ok bytes=N\" after the client's FIN;\n"
	      "             client sends --bytes and requires that answer (checked upload)\n"
	      "  halfclose  server reads to EOF, then sends --reply bytes and closes; client sends\n"
	      "             --bytes, shuts down writing, and requires the whole reply, then EOF\n"
	      "  rr         (server: same as echo) --count round trips of --msg-size bytes on one\n"
	      "             connection; reports latency percentiles in microseconds\n"
	      "  crr        (server: same as echo) --count connections, each connect, one\n"
	      "             --msg-size request/response, close; reports conn_per_s\n"
	      "  reset      server echoes the first --bytes, resets the connection when more arrives,\n"
	      "             and prints \"end peer=IP:PORT in=N how=reset|eof|server-reset\" for each\n"
	      "             connection; client sends --bytes, requires their echo, sends one byte more\n"
	      "             and requires a reset (ECONNRESET), not a clean EOF\n"
	      "  abort      (server: use reset with a larger --bytes) client sends --bytes, requires\n"
	      "             their echo, then resets the connection itself (close with SO_LINGER 0)\n"
	      "  http       server answers each request head (up to a blank line) with a 200 and\n"
	      "             --msg-size body bytes; client: rr with HTTP/1.1 GETs on one keep-alive\n"
	      "             connection instead of echoed messages (latency percentiles)\n"
	      "Sizes accept K, M, G suffixes (powers of 1024). --peers prints \"peer IP:PORT local IP:PORT\"\n"
	      "for each accepted connection. Exit 0 on success, 1 on a failed check, 2 on bad usage.\n",
	      f);
}

static uint64_t parse_size(const char *opt, const char *s)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || s[0] == '-')
		die(2, "bad value for %s: '%s'", opt, s);
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end == 'i' || *end == 'B')
		end++;
	if (*end == 'B')
		end++;
	if (*end)
		die(2, "bad value for %s: '%s'", opt, s);
	return v;
}

static void parse_opts(int argc, char **argv, bool server, struct opts *o)
{
	enum { O_PORT = 256, O_BIND, O_MODE, O_BYTES, O_REPLY, O_TO, O_CONNS, O_PAR, O_MSG, O_COUNT,
		O_TIMEOUT, O_PEERS, O_EXIT };
	static const struct option lo[] = {
		{ "port", required_argument, NULL, O_PORT },
		{ "bind", required_argument, NULL, O_BIND },
		{ "mode", required_argument, NULL, O_MODE },
		{ "bytes", required_argument, NULL, O_BYTES },
		{ "reply", required_argument, NULL, O_REPLY },
		{ "to", required_argument, NULL, O_TO },
		{ "conns", required_argument, NULL, O_CONNS },
		{ "parallel", required_argument, NULL, O_PAR },
		{ "msg-size", required_argument, NULL, O_MSG },
		{ "count", required_argument, NULL, O_COUNT },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "peers", no_argument, NULL, O_PEERS },
		{ "exit-after", required_argument, NULL, O_EXIT },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool have_to = false, conns_set = false, par_set = false;
	char *end;
	int c;

	memset(o, 0, sizeof(*o));
	o->server = server;
	o->mode = M_ECHO;
	o->port = -1;
	o->bytes = 1024;
	o->reply = 64 * 1024;
	o->conns = 1;
	o->parallel = 1;
	o->msg_size = 1;
	o->count = 10000;
	o->timeout = 60;
	optind = 2;
	while ((c = getopt_long(argc, argv, "vh", lo, NULL)) != -1) {
		switch (c) {
		case O_PORT:
			o->port = (int)strtol(optarg, &end, 10);
			if (*end || end == optarg || o->port < 0 || o->port > 65535)
				die(2, "bad value for --port: '%s'", optarg);
			break;
		case O_BIND:
			if (addr_parse(optarg, 0, &o->bind))
				die(2, "bad value for --bind: '%s' (want an IP address)", optarg);
			o->have_bind = true;
			break;
		case O_MODE: {
			int i;
			for (i = 0; mode_names[i] && strcmp(mode_names[i], optarg); i++)
				;
			if (!mode_names[i])
				die(2, "bad value for --mode: '%s'", optarg);
			o->mode = (enum mode)i;
			break;
		}
		case O_BYTES: o->bytes = parse_size("--bytes", optarg); o->bytes_set = true; break;
		case O_REPLY: o->reply = parse_size("--reply", optarg); break;
		case O_TO:
			if (addr_parse(optarg, -1, &o->to))
				die(2, "bad value for --to: '%s' (want IP:PORT)", optarg);
			have_to = true;
			break;
		case O_CONNS:
		case O_EXIT:
			o->conns = parse_size(c == O_CONNS ? "--conns" : "--exit-after", optarg);
			conns_set = true;
			break;
		case O_PAR: {
			uint64_t v = parse_size("--parallel", optarg);
			if (v < 1 || v > 1000000)
				die(2, "bad value for --parallel: '%s' (1..1000000)", optarg);
			o->parallel = (unsigned)v;
			par_set = true;
			break;
		}
		case O_MSG:
			o->msg_size = parse_size("--msg-size", optarg);
			if (o->msg_size < 1 || o->msg_size > IO_BUF)
				die(2, "bad value for --msg-size: '%s' (1..%u)", optarg, IO_BUF);
			break;
		case O_COUNT: o->count = parse_size("--count", optarg); break;
		case O_TIMEOUT:
			o->timeout = strtod(optarg, &end);
			if (*end || end == optarg || o->timeout <= 0)
				die(2, "bad value for --timeout: '%s' (seconds > 0)", optarg);
			o->timeout_set = true;
			break;
		case O_PEERS: o->peers = true; break;
		case 'v': o->verbose = true; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (optind < argc)
		die(2, "unexpected argument '%s'", argv[optind]);
	if (o->server) {
		if (o->port < 0)
			die(2, "serve needs --port");
		if (o->mode == M_ABORT)
			die(2, "abort is a client mode (serve with --mode reset)");
		if (!conns_set)
			o->conns = 0; /* serve forever */
		if (!o->bytes_set && o->mode == M_SOURCE)
			o->bytes = 1ull << 30;
		return;
	}
	if (!have_to)
		die(2, "client needs --to IP:PORT");
	if (((struct sockaddr_in *)&o->to.ss)->sin_port == 0)
		die(2, "--to needs a port");
	if (conns_set && !par_set)
		o->parallel = o->conns > 1000000 ? 1000000 : (unsigned)o->conns;
	if (!conns_set)
		o->conns = o->parallel;
	if (o->conns < 1)
		die(2, "--conns must be at least 1");
	if (o->mode == M_CRR && !par_set)
		o->parallel = 1;
	if ((o->mode == M_RR || o->mode == M_CRR || o->mode == M_HTTP) && o->count < 1)
		die(2, "--count must be at least 1");
	if (o->mode == M_HTTP && o->msg_size > 128)
		die(2, "--msg-size: at most 128 in http mode");
}

/* ---------- client: a poll loop over up to --parallel connections ---------- */

struct job_spec {
	uint64_t send_total;  /* pattern bytes to send */
	bool shut_after_send; /* shutdown(SHUT_WR) once sent */
	uint64_t recv_total;  /* pattern bytes expected back */
	bool recv_text;       /* instead: a text answer up to EOF ("ok bytes=N") */
	bool expect_eof;      /* the peer must close after recv_total */
	bool hold;            /* keep finished connections open until the whole batch is done */
	bool nodelay;
};

enum job_state { J_FREE, J_CONNECTING, J_RUN, J_HELD };

struct job {
	int fd;
	enum job_state st;
	uint64_t id, sent, recvd;
	bool shut, eof;
	char text[96];
	size_t tlen;
};

struct run_stats {
	uint64_t done, bytes_out, bytes_in, max_open;
	double seconds;
};

static const struct opts *g_opts;

static const char *to_str(void)
{
	static char b[80];
	return addr_str((const struct sockaddr *)&g_opts->to.ss, b, sizeof(b));
}

static void job_start(struct job *j, const struct job_spec *sp)
{
	const struct opts *o = g_opts;
	j->fd = socket(o->to.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (j->fd == -1)
		die(1, "socket: %s (connection %" PRIu64 ")", strerror(errno), j->id);
	if (sp->nodelay)
		set_nodelay(j->fd);
	if (o->have_bind && bind(j->fd, (const struct sockaddr *)&o->bind.ss, o->bind.len) == -1)
		die(1, "bind to --bind address: %s", strerror(errno));
	j->sent = j->recvd = 0;
	j->shut = j->eof = false;
	j->tlen = 0;
	if (connect(j->fd, (const struct sockaddr *)&o->to.ss, o->to.len) == 0) {
		j->st = J_RUN;
	} else if (errno == EINPROGRESS) {
		j->st = J_CONNECTING;
	} else {
		die(1, "connect to %s: %s (connection %" PRIu64 ")", to_str(), strerror(errno), j->id);
	}
}

static bool job_complete(const struct job *j, const struct job_spec *sp)
{
	if (j->sent < sp->send_total || (sp->shut_after_send && !j->shut))
		return false;
	if (sp->recv_text)
		return j->eof;
	return j->recvd == sp->recv_total && (!sp->expect_eof || j->eof);
}

/* Does the I/O the poll result allows; dies with one line on any failure. */
static void job_io(struct job *j, const struct job_spec *sp, short rev, uint8_t *buf,
		   struct run_stats *rs)
{
	if (j->st == J_CONNECTING) {
		int err = 0;
		socklen_t l = sizeof(err);
		if (getsockopt(j->fd, SOL_SOCKET, SO_ERROR, &err, &l) == -1)
			err = errno;
		if (err)
			die(1, "connect to %s: %s (connection %" PRIu64 ")", to_str(), strerror(err), j->id);
		if (!(rev & (POLLOUT | POLLIN | POLLHUP | POLLERR)))
			return;
		j->st = J_RUN;
		rev |= POLLOUT;
	}
	if ((rev & (POLLOUT | POLLERR | POLLHUP)) && j->sent < sp->send_total) {
		size_t n = sp->send_total - j->sent > IO_BUF ? IO_BUF : (size_t)(sp->send_total - j->sent);
		pat_fill(buf, j->sent, n);
		ssize_t w = send(j->fd, buf, n, MSG_NOSIGNAL);
		if (w == -1 && errno != EAGAIN && errno != EINTR)
			die(1, "send to %s: %s after %" PRIu64 " bytes (connection %" PRIu64 ")", to_str(),
			    strerror(errno), j->sent, j->id);
		if (w > 0) {
			j->sent += (uint64_t)w;
			rs->bytes_out += (uint64_t)w;
		}
	}
	if (sp->shut_after_send && !j->shut && j->sent == sp->send_total) {
		if (shutdown(j->fd, SHUT_WR) == -1)
			die(1, "shutdown(SHUT_WR) towards %s: %s", to_str(), strerror(errno));
		j->shut = true;
	}
	if (rev & (POLLIN | POLLERR | POLLHUP)) {
		ssize_t r = recv(j->fd, buf, IO_BUF, 0);
		if (r == -1 && errno != EAGAIN && errno != EINTR)
			die(1, "recv from %s: %s after %" PRIu64 " bytes in, %" PRIu64
			    " out (connection %" PRIu64 ")", to_str(), strerror(errno), j->recvd, j->sent,
			    j->id);
		if (r == 0) {
			j->eof = true;
			if (!sp->recv_text && j->recvd < sp->recv_total)
				die(1, "connection %" PRIu64 " to %s closed by peer after %" PRIu64
				    " of %" PRIu64 " bytes", j->id, to_str(), j->recvd, sp->recv_total);
		}
		if (r > 0) {
			uint64_t bad = 0;
			rs->bytes_in += (uint64_t)r;
			if (sp->recv_text) {
				size_t n = (size_t)r;
				if (n > sizeof(j->text) - 1 - j->tlen)
					n = sizeof(j->text) - 1 - j->tlen;
				memcpy(j->text + j->tlen, buf, n);
				j->tlen += n;
				j->text[j->tlen] = 0;
			} else if (j->recvd + (uint64_t)r > sp->recv_total) {
				die(1, "connection %" PRIu64 " to %s: received %" PRIu64
				    " bytes, more than the %" PRIu64 " expected", j->id, to_str(),
				    j->recvd + (uint64_t)r, sp->recv_total);
			} else if (!pat_check(buf, j->recvd, (size_t)r, &bad)) {
				die(1, "connection %" PRIu64 " to %s: data mismatch at offset %" PRIu64, j->id,
				    to_str(), bad);
			}
			j->recvd += (uint64_t)r;
		}
	}
	if (sp->recv_text && j->eof) {
		char want[64];
		snprintf(want, sizeof(want), "ok bytes=%" PRIu64 "\n", sp->send_total);
		if (strcmp(j->text, want) != 0) {
			char *nl = strchr(j->text, '\n');
			if (nl)
				*nl = 0;
			for (char *p = j->text; *p; p++) /* the answer may be anything: keep one line */
				if (*p < 0x20 || *p > 0x7e)
					*p = '?';
			die(1, "connection %" PRIu64 " to %s: server check failed: '%s' (sent %" PRIu64
			    " bytes)", j->id, to_str(), j->tlen ? j->text : "no answer", j->sent);
		}
	}
}

static void job_close(struct job *j)
{
	close(j->fd);
	j->fd = -1;
	j->st = J_FREE;
}

/* Runs o->conns connections, o->parallel at a time, each doing *sp. Dies on any failure. */
static void run_jobs(const struct opts *o, const struct job_spec *sp, struct run_stats *rs)
{
	unsigned par = o->parallel;
	struct job *jobs = held(0, xcalloc(par, sizeof(*jobs)));
	struct pollfd *pfd = held(1, xcalloc(par, sizeof(*pfd)));
	unsigned *idx = held(2, xcalloc(par, sizeof(*idx)));
	uint8_t *buf = held(3, xcalloc(1, IO_BUF));
	uint64_t started = 0, active = 0;
	double t0 = now_s(), deadline = t0 + o->timeout;

	memset(rs, 0, sizeof(*rs));
	for (unsigned i = 0; i < par; i++)
		jobs[i].fd = -1;
	for (;;) {
		/* Without hold, refill free slots; with hold, start a new batch only when empty. */
		if (!sp->hold || active == 0) {
			for (unsigned i = 0; i < par && started < o->conns; i++) {
				if (jobs[i].st != J_FREE)
					continue;
				jobs[i].id = started++;
				job_start(&jobs[i], sp);
				active++;
			}
		}
		if (active > rs->max_open)
			rs->max_open = active;
		if (active == 0)
			break;
		unsigned n = 0, held = 0;
		for (unsigned i = 0; i < par; i++) {
			struct job *j = &jobs[i];
			if (j->st == J_FREE)
				continue;
			if (j->st == J_HELD) {
				held++;
				continue;
			}
			short ev = 0;
			if (j->st == J_CONNECTING || j->sent < sp->send_total)
				ev |= POLLOUT;
			if (j->st == J_RUN && !j->eof)
				ev |= POLLIN;
			pfd[n] = (struct pollfd){ .fd = j->fd, .events = ev };
			idx[n++] = i;
		}
		if (held == active) { /* the whole batch has its answers: close it */
			for (unsigned i = 0; i < par; i++)
				if (jobs[i].st == J_HELD)
					job_close(&jobs[i]);
			rs->done += active;
			active = 0;
			continue;
		}
		double left = deadline - now_s();
		if (left <= 0)
			die(1, "timeout after %.1fs towards %s: %" PRIu64 " of %" PRIu64
			    " connections done, %" PRIu64 " open", o->timeout, to_str(), rs->done,
			    o->conns, active);
		int pr = poll(pfd, n, (int)(left * 1000) + 1);
		if (pr == -1 && errno != EINTR)
			die(1, "poll: %s", strerror(errno));
		for (unsigned k = 0; pr > 0 && k < n; k++) {
			struct job *j = &jobs[idx[k]];
			if (!pfd[k].revents)
				continue;
			job_io(j, sp, pfd[k].revents, buf, rs);
			if (j->st == J_RUN && job_complete(j, sp)) {
				if (sp->hold) {
					j->st = J_HELD;
				} else {
					job_close(j);
					active--;
					rs->done++;
				}
			}
		}
	}
	rs->seconds = now_s() - t0;
	held_free();
}

static void print_rate(const struct run_stats *rs, uint64_t bytes)
{
	double s = rs->seconds > 0 ? rs->seconds : 1e-9;
	printf("seconds=%.6f\n", rs->seconds);
	printf("gib_per_s=%.4f\n", (double)bytes / s / (1024.0 * 1024 * 1024));
	printf("gbit_per_s=%.4f\n", (double)bytes * 8 / s / 1e9);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void write_all(int fd, const uint8_t *b, size_t n)
{
	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1)
			die(1, "send to %s: %s", to_str(), strerror(errno));
		b += w;
		n -= (size_t)w;
	}
}

static void read_exact(int fd, uint8_t *b, size_t n)
{
	while (n) {
		ssize_t r = recv(fd, b, n, 0);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			die(1, "recv from %s: %s", to_str(), strerror(errno));
		if (r == 0)
			die(1, "connection to %s closed by peer in the middle of a response", to_str());
		b += r;
		n -= (size_t)r;
	}
}

/* One blocking connection to --to, TCP_NODELAY, each send and recv bounded by --timeout. */
static int connect_blocking(const struct opts *o)
{
	int fd = socket(o->to.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd == -1)
		die(1, "socket: %s", strerror(errno));
	struct timeval tv = { .tv_sec = (time_t)o->timeout,
			      .tv_usec = (suseconds_t)((o->timeout - (double)(time_t)o->timeout) * 1e6) };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	set_nodelay(fd);
	if (o->have_bind && bind(fd, (const struct sockaddr *)&o->bind.ss, o->bind.len) == -1)
		die(1, "bind to --bind address: %s", strerror(errno));
	if (connect(fd, (const struct sockaddr *)&o->to.ss, o->to.len) == -1)
		die(1, "connect to %s: %s", to_str(), strerror(errno));
	return fd;
}

/* One persistent connection, o->count round trips of o->msg_size; latency percentiles. */
static int client_rr(const struct opts *o)
{
	bool http = o->mode == M_HTTP;
	size_t m = o->msg_size, qlen = http ? sizeof(http_req) - 1 : m;
	uint64_t warm = o->count / 10 < 100 ? o->count / 10 : 100;
	uint64_t *lat = held(0, xcalloc(o->count, sizeof(*lat)));
	uint8_t *req = held(1, xcalloc(1, qlen)), *resp = held(2, xcalloc(1, m + 128));
	uint8_t *want = held(3, xcalloc(1, m + 128));
	size_t rlen = m;
	uint64_t bad = 0, sum = 0;
	int fd = connect_blocking(o);
	double t0 = now_s();
	if (http) {
		memcpy(req, http_req, qlen);
		rlen = http_resp((char *)want, m + 128, m);
	}
	for (uint64_t i = 0; i < warm + o->count; i++) {
		uint64_t off = (i * m) % (1ull << 40);
		if (!http)
			pat_fill(req, off, m);
		uint64_t a = now_ns();
		write_all(fd, req, qlen);
		read_exact(fd, resp, rlen);
		uint64_t b = now_ns();
		if (http && memcmp(resp, want, rlen) != 0)
			die(1, "http: response %" PRIu64 " is not the expected 200", i);
		if (!http && memcmp(req, resp, m) != 0) {
			pat_check(resp, off, m, &bad);
			die(1, "rr: response %" PRIu64 " differs from the request at byte %" PRIu64, i,
			    bad - off);
		}
		if (i >= warm) {
			lat[i - warm] = b - a;
			sum += b - a;
		}
		if (now_s() - t0 > o->timeout)
			die(1, "timeout after %.1fs: %" PRIu64 " of %" PRIu64 " round trips", o->timeout, i,
			    o->count);
	}
	close(fd);
	qsort(lat, o->count, sizeof(*lat), cmp_u64);
#define PCT(p) ((double)lat[(size_t)((double)(o->count - 1) * (p) + 0.5)] / 1000.0)
	printf("mode=%s\nto=%s\nmsg_size=%zu\ncount=%" PRIu64 "\n", mode_names[o->mode], to_str(), m,
	       o->count);
	printf("p50_us=%.2f\np90_us=%.2f\np99_us=%.2f\nmax_us=%.2f\nmin_us=%.2f\navg_us=%.2f\n",
	       PCT(0.50), PCT(0.90), PCT(0.99), (double)lat[o->count - 1] / 1000.0,
	       (double)lat[0] / 1000.0, (double)sum / (double)o->count / 1000.0);
#undef PCT
	printf("result=ok\n");
	held_free();
	return 0;
}

/* Reset and abort modes: one connection; --bytes sent and their echo checked, chunk by chunk
 * (so that no buffer fills), then the reset, by the server (reset) or by this side (abort). */
static int client_reset(const struct opts *o)
{
	uint8_t *req = held(0, xcalloc(1, ECHO_BUF / 4)), *resp = held(1, xcalloc(1, ECHO_BUF / 4));
	uint64_t off = 0, bad = 0;
	int fd = connect_blocking(o);
	const char *how;

	while (off < o->bytes) {
		size_t n = o->bytes - off > ECHO_BUF / 4 ? ECHO_BUF / 4 : (size_t)(o->bytes - off);
		pat_fill(req, off, n);
		write_all(fd, req, n);
		read_exact(fd, resp, n);
		if (!pat_check(resp, off, n, &bad))
			die(1, "%s: echo from %s differs at offset %" PRIu64, mode_names[o->mode], to_str(),
			    bad);
		off += n;
	}
	if (o->mode == M_ABORT) {
		close_reset(fd);
		how = "client-reset";
	} else {
		pat_fill(req, off, 1);
		write_all(fd, req, 1);
		ssize_t r;
		do
			r = recv(fd, resp, 1, 0);
		while (r == -1 && errno == EINTR);
		if (r > 0)
			die(1, "reset: %s answered the byte past --bytes instead of resetting", to_str());
		if (r == 0)
			die(1, "reset: connection to %s closed cleanly (FIN) where the server reset it",
			    to_str());
		if (errno == EAGAIN)
			die(1, "reset: timeout after %.1fs waiting for the reset from %s", o->timeout,
			    to_str());
		if (errno != ECONNRESET)
			die(1, "reset: recv from %s: %s (wanted ECONNRESET)", to_str(), strerror(errno));
		close(fd);
		how = "reset";
	}
	printf("mode=%s\nto=%s\nbytes_out=%" PRIu64 "\nbytes_in=%" PRIu64 "\nend=%s\nresult=ok\n",
	       mode_names[o->mode], to_str(), off + (o->mode == M_RESET), off, how);
	held_free();
	return 0;
}

static int client(const struct opts *o)
{
	struct job_spec sp = { 0 };
	struct run_stats rs;
	struct opts oo = *o;

	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	switch (o->mode) {
	case M_RR:
	case M_HTTP:
		return client_rr(o);
	case M_RESET:
	case M_ABORT:
		return client_reset(o);
	case M_CRR:
		oo.conns = o->count;
		if (oo.parallel > oo.conns)
			oo.parallel = (unsigned)oo.conns;
		sp.send_total = sp.recv_total = o->msg_size;
		sp.nodelay = true;
		break;
	case M_ECHO:
		sp.send_total = sp.recv_total = o->bytes;
		sp.hold = true;
		sp.nodelay = true;
		break;
	case M_SINK:
		sp.send_total = o->bytes;
		sp.shut_after_send = true;
		sp.expect_eof = true;
		break;
	case M_SOURCE:
		sp.recv_total = o->bytes;
		sp.expect_eof = true;
		break;
	case M_VERIFY:
		sp.send_total = o->bytes;
		sp.shut_after_send = true;
		sp.recv_text = true;
		break;
	case M_HALFCLOSE:
		sp.send_total = o->bytes;
		sp.shut_after_send = true;
		sp.recv_total = o->reply;
		sp.expect_eof = true;
		break;
	}
	run_jobs(&oo, &sp, &rs);
	printf("mode=%s\nto=%s\nconns=%" PRIu64 "\nparallel=%u\n", mode_names[o->mode], to_str(),
	       rs.done, oo.parallel);
	printf("bytes_out=%" PRIu64 "\nbytes_in=%" PRIu64 "\n", rs.bytes_out, rs.bytes_in);
	switch (o->mode) {
	case M_CRR:
		printf("msg_size=%zu\nseconds=%.6f\nconn_per_s=%.1f\n", o->msg_size, rs.seconds,
		       (double)rs.done / (rs.seconds > 0 ? rs.seconds : 1e-9));
		break;
	case M_ECHO:
		printf("max_open=%" PRIu64 "\nseconds=%.6f\n", rs.max_open, rs.seconds);
		break;
	case M_HALFCLOSE:
		printf("seconds=%.6f\n", rs.seconds);
		break;
	case M_SOURCE:
		print_rate(&rs, rs.bytes_in);
		break;
	default:
		print_rate(&rs, rs.bytes_out);
		break;
	}
	printf("result=ok\n");
	return 0;
}

/* ---------- server: one poll loop, every connection a small state machine by mode ---------- */

struct sconn {
	int fd;
	uint8_t *buf;       /* echo: pending bytes [boff, blen) */
	size_t blen, boff;
	uint64_t in, out;   /* pattern offsets received and sent */
	uint64_t out_total; /* source/halfclose: bytes to send once allowed */
	bool eof, sending, shut, bad;
	bool reset;         /* close with a RST */
	uint64_t bad_off;
	char msg[64];       /* verify: the answer */
	size_t mlen, moff;
	char peer[80];
	uint8_t hmatch;     /* http: bytes of "\r\n\r\n" matched at the end of what was read */
};

static void held_free_conns(void)
{
	for (size_t i = 0; i < g_held.nconns; i++) {
		if (g_held.conns[i].fd >= 0)
			close(g_held.conns[i].fd);
		free(g_held.conns[i].buf);
	}
	g_held.conns = NULL;
	g_held.nconns = 0;
}

static volatile sig_atomic_t g_stop;
static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static int listen_on(const struct opts *o)
{
	struct addr a;
	int one = 1;
	if (o->have_bind) {
		a = o->bind;
	} else {
		memset(&a, 0, sizeof(a));
		((struct sockaddr_in *)&a.ss)->sin_family = AF_INET;
		a.len = sizeof(struct sockaddr_in);
	}
	if (a.ss.ss_family == AF_INET)
		((struct sockaddr_in *)&a.ss)->sin_port = htons((uint16_t)o->port);
	else
		((struct sockaddr_in6 *)&a.ss)->sin6_port = htons((uint16_t)o->port);
	int fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		die(1, "socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	char b[80];
	if (bind(fd, (const struct sockaddr *)&a.ss, a.len) == -1)
		die(1, "bind %s: %s", addr_str((const struct sockaddr *)&a.ss, b, sizeof(b)),
		    strerror(errno));
	if (listen(fd, 4096) == -1)
		die(1, "listen: %s", strerror(errno));
	printf("listening=%s\nmode=%s\n", addr_str((const struct sockaddr *)&a.ss, b, sizeof(b)),
	       mode_names[o->mode]);
	fflush(stdout);
	return fd;
}

/* Server modes that echo what they receive. */
static bool mode_echoes(enum mode m)
{
	return m == M_ECHO || m == M_RR || m == M_CRR || m == M_RESET || m == M_HTTP;
}

/* http mode: the r bytes just read into c->buf become one answer per request head they end
 * (requests have no body). False when the answers would not fit (the client pipelines). */
static bool http_answer(const struct opts *o, struct sconn *c, size_t r)
{
	static const char end[] = "\r\n\r\n";
	size_t heads = 0, len = 0;
	char one[256];

	for (size_t i = 0; i < r; i++) {
		uint8_t b = c->buf[i];
		c->hmatch = b == (uint8_t)end[c->hmatch] ? c->hmatch + 1 : b == '\r';
		if (c->hmatch == 4) {
			heads++;
			c->hmatch = 0;
		}
	}
	len = http_resp(one, sizeof(one), o->msg_size);
	if (!len || heads * len > ECHO_BUF)
		return false;
	for (size_t k = 0; k < heads; k++)
		memcpy(c->buf + k * len, one, len);
	c->blen = heads * len;
	c->boff = 0;
	return true;
}

/* Reset mode: one line for the end of each connection, saying who ended it and how. */
static void sconn_end(const struct opts *o, const struct sconn *c, const char *how)
{
	if (o->mode == M_RESET)
		printf("end peer=%s in=%" PRIu64 " how=%s\n", c->peer, c->in, how);
}

/* Returns true when the connection is finished and must be closed. */
static bool sconn_io(const struct opts *o, struct sconn *c, short rev, uint8_t *buf)
{
	bool echo = mode_echoes(o->mode);

	if ((rev & (POLLIN | POLLHUP | POLLERR)) && !c->eof && !(echo && c->blen > c->boff)) {
		uint8_t *dst = echo ? c->buf : buf;
		size_t cap = echo ? ECHO_BUF : IO_BUF;
		ssize_t r = recv(c->fd, dst, cap, 0);
		if (r == -1 && errno != EAGAIN && errno != EINTR) {
			fprintf(stderr, "tcpkit: recv from %s: %s after %" PRIu64 " bytes\n", c->peer,
				strerror(errno), c->in);
			sconn_end(o, c, errno == ECONNRESET ? "reset" : "error");
			return true;
		}
		if (r == 0) {
			c->eof = true;
			if (o->mode == M_VERIFY) {
				if (c->bad)
					snprintf(c->msg, sizeof(c->msg), "bad offset=%" PRIu64 " bytes=%" PRIu64
						 "\n", c->bad_off, c->in);
				else
					snprintf(c->msg, sizeof(c->msg), "ok bytes=%" PRIu64 "\n", c->in);
				c->mlen = strlen(c->msg);
			}
			if (o->mode == M_HALFCLOSE) {
				if (c->bad) { /* reset instead of replying, so the client sees it */
					c->reset = true;
					return true;
				}
				c->out_total = o->reply;
				c->sending = true;
			}
		} else if (r > 0) {
			if (o->mode == M_RESET && c->in + (uint64_t)r > o->bytes) {
				/* The byte past --bytes asks for the reset; it is not echoed. */
				c->in += (uint64_t)r;
				sconn_end(o, c, "server-reset");
				c->reset = true;
				return true;
			}
			if (o->mode == M_HTTP) {
				if (!http_answer(o, c, (size_t)r)) {
					fprintf(stderr, "tcpkit: http: too many requests at once from %s\n", c->peer);
					sconn_end(o, c, "error");
					return true;
				}
			} else if (echo) {
				c->blen = (size_t)r;
				c->boff = 0;
			} else if ((o->mode == M_VERIFY || o->mode == M_HALFCLOSE) && !c->bad &&
				   !pat_check(dst, c->in, (size_t)r, &c->bad_off)) {
				c->bad = true;
				fprintf(stderr, "tcpkit: data from %s wrong at offset %" PRIu64 "\n", c->peer,
					c->bad_off);
			}
			c->in += (uint64_t)r;
		}
	}
	if (rev & (POLLOUT | POLLERR | POLLHUP)) {
		ssize_t w = 0;
		if (echo && c->blen > c->boff) {
			w = send(c->fd, c->buf + c->boff, c->blen - c->boff, MSG_NOSIGNAL);
			if (w > 0) {
				c->boff += (size_t)w;
				if (c->boff == c->blen)
					c->boff = c->blen = 0;
			}
		} else if (c->mlen > c->moff) {
			w = send(c->fd, c->msg + c->moff, c->mlen - c->moff, MSG_NOSIGNAL);
			if (w > 0)
				c->moff += (size_t)w;
		} else if (c->sending && c->out < c->out_total) {
			size_t n = c->out_total - c->out > IO_BUF ? IO_BUF : (size_t)(c->out_total - c->out);
			pat_fill(buf, c->out, n);
			w = send(c->fd, buf, n, MSG_NOSIGNAL);
			if (w > 0)
				c->out += (uint64_t)w;
		}
		if (w == -1 && errno != EAGAIN && errno != EINTR) {
			fprintf(stderr, "tcpkit: send to %s: %s\n", c->peer, strerror(errno));
			sconn_end(o, c, errno == ECONNRESET || errno == EPIPE ? "reset" : "error");
			return true;
		}
	}
	/* Done sending what this mode sends: FIN, then wait for (or already have) the peer's. */
	bool out_done = echo ? (c->eof && c->blen == c->boff) :
			o->mode == M_VERIFY ? (c->eof && c->moff == c->mlen) :
			o->mode == M_SINK ? c->eof :
			(c->sending && c->out == c->out_total);
	if (out_done && !c->shut) {
		shutdown(c->fd, SHUT_WR);
		c->shut = true;
	}
	if (c->shut && c->eof)
		sconn_end(o, c, "eof");
	return c->shut && c->eof;
}

static int serve(const struct opts *o)
{
	int lfd = listen_on(o);
	size_t cap = 64, n = 0;
	struct sconn *cs = held(0, xcalloc(cap, sizeof(*cs)));
	struct pollfd *pfd = held(1, xcalloc(cap + 1, sizeof(*pfd)));
	uint8_t *buf = held(2, xcalloc(1, IO_BUF));
	uint64_t finished = 0, failed = 0;
	double deadline = now_s() + o->timeout;
	bool timed = false;

	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	raise_nofile();
	/* With --exit-after, --timeout (default 60s) bounds the wait; otherwise only if given. */
	timed = o->conns > 0 || o->timeout_set;
	while (!g_stop && (o->conns == 0 || finished < o->conns)) {
		pfd[0] = (struct pollfd){ .fd = lfd, .events = POLLIN };
		for (size_t i = 0; i < n; i++) {
			struct sconn *c = &cs[i];
			bool echo = mode_echoes(o->mode);
			short ev = 0;
			if (!c->eof && !(echo && c->blen > c->boff))
				ev |= POLLIN;
			if ((echo && c->blen > c->boff) || c->mlen > c->moff ||
			    (c->sending && c->out < c->out_total))
				ev |= POLLOUT;
			pfd[i + 1] = (struct pollfd){ .fd = c->fd, .events = ev };
		}
		int left = timed ? (int)((deadline - now_s()) * 1000) + 1 : -1;
		if (timed && left <= 0)
			die(1, "timeout after %.1fs: %" PRIu64 " of %" PRIu64 " connections finished",
			    o->timeout, finished, o->conns);
		int pr = poll(pfd, n + 1, left);
		if (pr == -1 && errno != EINTR)
			die(1, "poll: %s", strerror(errno));
		if (pr <= 0)
			continue;
		/* Service existing connections first (indices are stable until compaction). */
		size_t w = 0;
		for (size_t i = 0; i < n; i++) {
			struct sconn *c = &cs[i];
			bool done = pfd[i + 1].revents && sconn_io(o, c, pfd[i + 1].revents, buf);
			if (done) {
				finished++;
				if (c->bad)
					failed++;
				if (o->verbose)
					printf("conn peer=%s in=%" PRIu64 " out=%" PRIu64 " result=%s\n", c->peer,
					       c->in, c->out + c->moff, c->bad ? "bad" : "ok");
				if (c->reset)
					close_reset(c->fd);
				else
					close(c->fd);
				free(c->buf);
				c->buf = NULL; /* until compaction, the slot is still among g_held.conns */
				c->fd = -1;
				continue;
			}
			cs[w++] = *c;
		}
		n = g_held.nconns = w;
		if (pfd[0].revents & POLLIN) {
			for (;;) {
				struct sockaddr_storage ss;
				socklen_t sl = sizeof(ss);
				int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (fd == -1) {
					if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
						break;
					if (errno == EMFILE || errno == ENFILE) {
						fprintf(stderr, "tcpkit: accept: %s\n", strerror(errno));
						break;
					}
					die(1, "accept: %s", strerror(errno));
				}
				if (n == cap) {
					cap *= 2;
					cs = g_held.conns = xrealloc_held(0, cap, sizeof(*cs));
					pfd = xrealloc_held(1, cap + 1, sizeof(*pfd));
				}
				struct sconn *c = &cs[n++];
				memset(c, 0, sizeof(*c));
				c->fd = fd;
				g_held.conns = cs;
				g_held.nconns = n;
				addr_str((struct sockaddr *)&ss, c->peer, sizeof(c->peer));
				if (mode_echoes(o->mode)) {
					set_nodelay(fd);
					c->buf = xcalloc(1, ECHO_BUF);
				}
				if (o->mode == M_SOURCE) {
					c->sending = true;
					c->out_total = o->bytes;
				}
				if (o->peers) {
					struct sockaddr_storage ls;
					socklen_t ll = sizeof(ls);
					char lb[80];
					if (getsockname(fd, (struct sockaddr *)&ls, &ll) == -1)
						snprintf(lb, sizeof(lb), "?");
					else
						addr_str((struct sockaddr *)&ls, lb, sizeof(lb));
					printf("peer %s local %s\n", c->peer, lb);
					fflush(stdout);
				}
			}
		}
		fflush(stdout);
	}
	held_free();
	close(lfd);
	printf("served=%" PRIu64 "\nfailed=%" PRIu64 "\n", finished, failed);
	if (failed)
		die(1, "%" PRIu64 " of %" PRIu64 " connections carried wrong data", failed, finished);
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("tcpkit %s\n", AMBIT_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "serve") && strcmp(argv[1], "client"))
		die(2, "unknown command '%s' (serve or client)", argv[1]);
	parse_opts(argc, argv, !strcmp(argv[1], "serve"), &o);
	g_opts = &o;
	pat_init();
	int rc = o.server ? serve(&o) : client(&o);
	free(pat_scratch);
	return rc;
}
