/* SPDX-License-Identifier: Apache-2.0 */
/* Small helpers every binary shares: clocks, address formatting, hex, fd flags. */
#ifndef AMBIT_COMMON_UTIL_H
#define AMBIT_COMMON_UTIL_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

uint64_t now_mono_ms(void);
uint64_t now_mono_ns(void);
/* Wall clock in ns since the Unix epoch (span timestamps). */
uint64_t now_real_ns(void);

/* "2024-11-26T09:31:00Z" from Unix seconds ("-" when not positive); buf of 21 or more. */
void fmt_utc(long long unix_s, char *buf, size_t len);

/* Length of "[ffff:...]:65535" plus NUL. */
#define ADDR_STR_LEN 64
/* "1.2.3.4:80" or "[::1]:80" into buf (ADDR_STR_LEN); returns buf. */
char *sockaddr_str(const struct sockaddr_storage *ss, char *buf, size_t len);
/* Only the address, no port. */
char *sockaddr_ip_str(const struct sockaddr_storage *ss, char *buf, size_t len);
uint16_t sockaddr_port(const struct sockaddr_storage *ss);
void sockaddr_set_port(struct sockaddr_storage *ss, uint16_t port);
/* Parses "IP" (port set to `port`) or "IP:PORT" / "[IPv6]:PORT". 0 or -EINVAL. */
int sockaddr_parse(const char *s, uint16_t default_port, struct sockaddr_storage *out);
/* A bare IPv4 or IPv6 literal (no port, no brackets); port set to 0. 0 or -EINVAL. */
int ip_parse(const char *s, struct sockaddr_storage *out);
bool sockaddr_ip_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
socklen_t sockaddr_len(const struct sockaddr_storage *ss);

/* Lower-case hex of len bytes into out (2*len+1). */
void hex_encode(const uint8_t *in, size_t len, char *out);
/* Exactly 2*len hex digits into out; 0 or -EINVAL. */
int hex_decode(const char *in, uint8_t *out, size_t len);
/* Base64 (RFC 4648 §4), or base64url (§5) when url, with or without '=' padding (gRPC's
 * "-bin" metadata, JWT segments). Returns the decoded length, or -1 when malformed or longer
 * than outlen. */
ssize_t base64_decode(const char *in, size_t len, uint8_t *out, size_t outlen, bool url);

/* Is key the n parts joined by sep ("a<sep>b<sep>c")? Compares without building the join
 * (cache keys looked up on hot paths). */
bool str_parts_eq(const char *key, const char *const *parts, int n, char sep);

/* A non-empty RFC 9110 §5.6.2 token (a header field name, a method). */
bool str_is_token(const char *s);
int fd_set_nonblock(int fd);
int fd_set_cloexec(int fd);

/* Whether two stat(2) results describe the same content of a file: device, inode, size and
 * mtime. For change polling: stat follows symlinks, so a Kubernetes volume's ..data swap shows
 * as another inode. */
struct stat;
bool stat_same_file(const struct stat *a, const struct stat *b);

/* Reads a whole file, at most max bytes (NUL-terminated, *len without it). NULL + errno. */
char *read_file_bounded(const char *path, size_t max, size_t *len);

/* A delay in [d/2, d] drawn with xorshift64* from *rng (seed it non-zero): spreads the retries
 * of many agents that lost the same peer together. Jitter only, no strength. */
uint64_t jitter_half(uint64_t *rng, uint64_t d);

/* The absolute time ms from now on clock clk, for pthread_cond_timedwait (whose clock the
 * condvar names: CLOCK_REALTIME unless set) and pthread_timedjoin_np (CLOCK_REALTIME). */
struct timespec timespec_after_ms(clockid_t clk, uint64_t ms);

#endif
