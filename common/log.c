// SPDX-License-Identifier: Apache-2.0
/* The one logger: formats a line in text or JSON and writes it to stderr with one write(2),
 * so lines from several threads never interleave. */
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

enum log_level log_cur_level = LOG_LVL_INFO;
static enum log_format cur_format = LOG_FMT_TEXT;
static const char *component = "ambit";

static const char *const level_names[] = {
	[LOG_LVL_ERROR] = "error", [LOG_LVL_WARN] = "warn", [LOG_LVL_INFO] = "info",
	[LOG_LVL_DEBUG] = "debug", [LOG_LVL_TRACE] = "trace",
};

int log_level_parse(const char *name, enum log_level *out)
{
	for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (name && strcasecmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	if (name && strcasecmp(name, "warning") == 0) {
		*out = LOG_LVL_WARN;
		return 0;
	}
	return -EINVAL;
}

const char *log_level_str(enum log_level lvl)
{
	return (unsigned)lvl < sizeof(level_names) / sizeof(level_names[0]) ? level_names[lvl] : "?";
}

int log_format_parse(const char *name, enum log_format *out)
{
	if (name && strcmp(name, "json") == 0)
		*out = LOG_FMT_JSON;
	else if (name && (strcmp(name, "text") == 0 || strcmp(name, "plain") == 0))
		*out = LOG_FMT_TEXT;
	else
		return -EINVAL;
	return 0;
}

void log_set_level(enum log_level lvl) { __atomic_store_n(&log_cur_level, lvl, __ATOMIC_RELAXED); }
enum log_level log_get_level(void) { return __atomic_load_n(&log_cur_level, __ATOMIC_RELAXED); }
void log_set_format(enum log_format fmt) { cur_format = fmt; }
void log_set_component(const char *name) { component = name; }

/* Appends at most what fits; the line is truncated, never overflowed. */
struct line {
	char buf[4096];
	size_t len;
};

static void line_putc(struct line *l, char c)
{
	if (l->len < sizeof(l->buf) - 2)
		l->buf[l->len++] = c;
}

static void line_puts(struct line *l, const char *s)
{
	while (*s)
		line_putc(l, *s++);
}

static void line_vprintf(struct line *l, const char *fmt, va_list ap)
{
	size_t room = sizeof(l->buf) - 2 - l->len;
	int n = vsnprintf(l->buf + l->len, room + 1, fmt, ap);
	if (n > 0)
		l->len += (size_t)n < room ? (size_t)n : room;
}

static void line_json_str(struct line *l, const char *s)
{
	line_putc(l, '"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			line_putc(l, '\\');
			line_putc(l, (char)c);
		} else if (c == '\n') {
			line_puts(l, "\\n");
		} else if (c < 0x20) {
			char esc[8];
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			line_puts(l, esc);
		} else {
			line_putc(l, (char)c);
		}
	}
	line_putc(l, '"');
}

static void log_emit(enum log_level lvl, const struct log_field *fields, int nfields,
		     const char *fmt, va_list ap)
{
	struct line l = { .len = 0 };
	struct timespec ts;
	struct tm tm;
	char tbuf[96];
	int saved = errno;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(tbuf, sizeof(tbuf), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);

	if (cur_format == LOG_FMT_JSON) {
		struct line msg = { .len = 0 };
		line_vprintf(&msg, fmt, ap);
		msg.buf[msg.len] = '\0';
		line_puts(&l, "{\"time\":\"");
		line_puts(&l, tbuf);
		line_puts(&l, "\",\"level\":\"");
		line_puts(&l, log_level_str(lvl));
		line_puts(&l, "\",\"scope\":");
		line_json_str(&l, component);
		line_puts(&l, ",\"msg\":");
		line_json_str(&l, msg.buf);
		for (int i = 0; i < nfields; i++) {
			if (!fields[i].val)
				continue;
			line_putc(&l, ',');
			line_json_str(&l, fields[i].key);
			line_putc(&l, ':');
			if (fields[i].is_num)
				line_puts(&l, fields[i].val);
			else
				line_json_str(&l, fields[i].val);
		}
		line_putc(&l, '}');
	} else {
		line_puts(&l, tbuf);
		line_putc(&l, ' ');
		char lv[8];
		snprintf(lv, sizeof(lv), "%-5s", log_level_str(lvl));
		line_puts(&l, lv);
		line_putc(&l, ' ');
		line_puts(&l, component);
		line_puts(&l, ": ");
		line_vprintf(&l, fmt, ap);
		for (int i = 0; i < nfields; i++) {
			if (!fields[i].val)
				continue;
			line_putc(&l, ' ');
			line_puts(&l, fields[i].key);
			line_putc(&l, '=');
			line_puts(&l, fields[i].val);
		}
	}
	l.buf[l.len++] = '\n';
	/* One write per line: atomic for lines under PIPE_BUF on pipes, never interleaved. */
	ssize_t off = 0;
	while (off < (ssize_t)l.len) {
		ssize_t n = write(STDERR_FILENO, l.buf + off, l.len - (size_t)off);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		off += n;
	}
	errno = saved;
}

void log_vmsg(enum log_level lvl, const char *fmt, va_list ap)
{
	log_emit(lvl, NULL, 0, fmt, ap);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_emit(lvl, NULL, 0, fmt, ap);
	va_end(ap);
}

void log_fields(enum log_level lvl, const struct log_field *fields, int nfields, const char *fmt, ...)
{
	va_list ap;
	if (!log_enabled(lvl))
		return;
	va_start(ap, fmt);
	log_emit(lvl, fields, nfields, fmt, ap);
	va_end(ap);
}

bool log_ratelimit_ok(struct log_ratelimit *rl)
{
	uint64_t now = now_mono_ms();
	if (now - rl->window_start_ms >= rl->interval_ms) {
		if (rl->suppressed)
			log_msg(LOG_LVL_WARN, "%u similar log lines suppressed", rl->suppressed);
		rl->window_start_ms = now;
		rl->printed = 0;
		rl->suppressed = 0;
	}
	if (rl->printed < rl->burst) {
		rl->printed++;
		return true;
	}
	rl->suppressed++;
	return false;
}
