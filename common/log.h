/* SPDX-License-Identifier: Apache-2.0 */
/* The one logger of every ambit binary: levels, text or JSON lines on stderr,
 * rate limiting for hot paths. Modules below agent/ (tls/, otlp/) log through it too. */
#ifndef AMBIT_COMMON_LOG_H
#define AMBIT_COMMON_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

enum log_level {
	LOG_LVL_ERROR,	/* something failed that an operator must look at */
	LOG_LVL_WARN,	/* something failed and was handled */
	LOG_LVL_INFO,	/* lifecycle and access-log close lines */
	LOG_LVL_DEBUG,	/* per-connection detail */
	LOG_LVL_TRACE,	/* per-packet / per-frame detail */
};

enum log_format {
	LOG_FMT_TEXT,
	LOG_FMT_JSON,
};

/* Returns 0 and sets *out, or -EINVAL for a name that is not a level. */
int log_level_parse(const char *name, enum log_level *out);
const char *log_level_str(enum log_level lvl);
int log_format_parse(const char *name, enum log_format *out);

void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
void log_set_format(enum log_format fmt);
/* The component name written in each line ("ambitd", "ambit-waypoint"). Not copied. */
void log_set_component(const char *name);

static inline bool log_enabled(enum log_level lvl)
{
	extern enum log_level log_cur_level;
	return lvl <= log_cur_level;
}

/* A structured field attached to a log line: key and an already formatted value.
 * JSON format writes them as members (strings unless is_num), text as key=value. */
struct log_field {
	const char *key;
	const char *val;
	bool is_num;
};

void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level lvl, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* A line with fields, for access logs: fields[nfields] follow the message. */
void log_fields(enum log_level lvl, const struct log_field *fields, int nfields,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define pr_err(...)   do { if (log_enabled(LOG_LVL_ERROR)) log_msg(LOG_LVL_ERROR, __VA_ARGS__); } while (0)
#define pr_warn(...)  do { if (log_enabled(LOG_LVL_WARN))  log_msg(LOG_LVL_WARN,  __VA_ARGS__); } while (0)
#define pr_info(...)  do { if (log_enabled(LOG_LVL_INFO))  log_msg(LOG_LVL_INFO,  __VA_ARGS__); } while (0)
#define pr_debug(...) do { if (log_enabled(LOG_LVL_DEBUG)) log_msg(LOG_LVL_DEBUG, __VA_ARGS__); } while (0)
#define pr_trace(...) do { if (log_enabled(LOG_LVL_TRACE)) log_msg(LOG_LVL_TRACE, __VA_ARGS__); } while (0)

/* Rate limiter for hot-path logs: at most `burst` lines per `interval_ms`,
 * then one "N suppressed" note when the window reopens. One static per call site. */
struct log_ratelimit {
	uint64_t window_start_ms;
	uint32_t interval_ms;
	uint32_t burst;
	uint32_t printed;
	uint32_t suppressed;
};
#define LOG_RATELIMIT_INIT(ms, n) { .interval_ms = (ms), .burst = (n) }
bool log_ratelimit_ok(struct log_ratelimit *rl);

#define pr_warn_rl(...) do { static struct log_ratelimit _rl = LOG_RATELIMIT_INIT(5000, 10); \
	if (log_enabled(LOG_LVL_WARN) && log_ratelimit_ok(&_rl)) log_msg(LOG_LVL_WARN, __VA_ARGS__); } while (0)
#define pr_info_rl(...) do { static struct log_ratelimit _rl = LOG_RATELIMIT_INIT(5000, 10); \
	if (log_enabled(LOG_LVL_INFO) && log_ratelimit_ok(&_rl)) log_msg(LOG_LVL_INFO, __VA_ARGS__); } while (0)

#endif
