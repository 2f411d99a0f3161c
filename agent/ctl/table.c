// SPDX-License-Identifier: Apache-2.0
/* ambitctl's output: aligned tables, fitted to a terminal (cut cells end with an ellipsis) and
 * whole elsewhere, stable pretty JSON, and the small formatters for bytes, ages and times. */
#include "agent/ctl/ctl.h"
#include "common/util.h"

#include <errno.h>
#include <langinfo.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define TBL_GAP 2

const char *ctl_ellipsis = "~";
const char *ctl_block = "#";

void ctl_charset_init(void)
{
	const char *cs;
	setlocale(LC_CTYPE, "");
	cs = nl_langinfo(CODESET);
	if (cs && (strcasecmp(cs, "UTF-8") == 0 || strcasecmp(cs, "utf8") == 0)) {
		ctl_ellipsis = "\u2026";	/* … */
		ctl_block = "\u2588";		/* █ */
	}
}

struct tbl {
	const struct tbl_col *cols;
	int ncols;
	char **cells;	/* nrows * ncols, owned */
	int nrows;
	int cap;
};

struct tbl *tbl_new(const struct tbl_col *cols, int ncols)
{
	struct tbl *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->cols = cols;
	t->ncols = ncols;
	return t;
}

void tbl_free(struct tbl *t)
{
	if (!t)
		return;
	for (int i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}

void tbl_add_or_drop(struct tbl **t, const char *const *cells)
{
	if (*t && tbl_add(*t, cells)) {
		tbl_free(*t);
		*t = NULL;
	}
}

int tbl_rows(const struct tbl *t)
{
	return t->nrows;
}

int tbl_add(struct tbl *t, const char *const *cells)
{
	if (t->nrows == t->cap) {
		int ncap = t->cap ? t->cap * 2 : 16;
		char **n = realloc(t->cells, sizeof(*n) * (size_t)ncap * (size_t)t->ncols);
		if (!n)
			return -ENOMEM;
		t->cells = n;
		t->cap = ncap;
	}
	char **row = t->cells + (size_t)t->nrows * (size_t)t->ncols;
	for (int i = 0; i < t->ncols; i++) {
		row[i] = strdup(cells[i] && cells[i][0] ? cells[i] : "-");
		if (!row[i]) {
			while (i--)
				free(row[i]);
			return -ENOMEM;
		}
	}
	t->nrows++;
	return 0;
}

int str_width(const char *s)
{
	int w = 0;
	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

/* Byte offset of the character that starts column `col` of s (or its length). */
static size_t col_offset(const char *s, int col)
{
	size_t i = 0;
	int c = 0;
	for (; s[i]; i++) {
		if (((unsigned char)s[i] & 0xc0) != 0x80) {
			if (c == col)
				return i;
			c++;
		}
	}
	return i;
}

void str_fit(const char *s, int w, enum tbl_trunc how, char *buf, size_t len)
{
	int sw = str_width(s), ew = str_width(ctl_ellipsis);
	if (!len)
		return;
	if (sw <= w || w <= ew) {
		if (sw <= w)
			snprintf(buf, len, "%s", s);
		else
			snprintf(buf, len, "%.*s", (int)col_offset(s, w), s);
		return;
	}
	if (how == TBL_KEEP_START)
		snprintf(buf, len, "%.*s%s", (int)col_offset(s, w - ew), s, ctl_ellipsis);
	else
		snprintf(buf, len, "%s%s", ctl_ellipsis, s + col_offset(s, sw - (w - ew)));
}

static void put_cell(const char *s, int w, const struct tbl_col *col, bool last)
{
	char buf[1024];
	int pad;
	if (str_width(s) > w) {		/* cut: only ever to fit a terminal */
		str_fit(s, w, col->trunc, buf, sizeof(buf));
		s = buf;
	}
	pad = w - str_width(s);
	if (col->right)
		printf("%*s%s", pad, "", s);
	else if (last)
		fputs(s, stdout);
	else
		printf("%s%*s", s, pad, "");
}

/* Width of the widest part of a title split at its first '-' ("BYTES-SENT": 5). */
static int title_split_width(const char *title)
{
	const char *dash = strchr(title, '-');
	if (!dash)
		return str_width(title);
	return MAX((int)(dash - title), str_width(dash + 1));
}

static void print_row(const struct tbl *t, char *const *cells, const int *w, int gap)
{
	int last = t->ncols - 1;
	while (last > 0 && !cells[last][0])	/* no trailing blanks */
		last--;
	for (int c = 0; c <= last; c++) {
		if (c)
			printf("%*s", gap, "");
		put_cell(cells[c], w[c], &t->cols[c], c == last);
	}
	putchar('\n');
}

void tbl_print(const struct tbl *t, int width)
{
	int w[t->ncols], content = 0, gap = TBL_GAP;
	bool split = false;

	for (int c = 0; c < t->ncols; c++) {
		w[c] = str_width(t->cols[c].title);
		for (int r = 0; r < t->nrows; r++)
			w[c] = MAX(w[c], str_width(t->cells[r * t->ncols + c]));
		content += w[c];
	}
	if (width > 0 && content + gap * (t->ncols - 1) > width)
		gap = 1;
	/* Split the titles wider than their cells when that helps. */
	for (int c = 0; width > 0 && c < t->ncols; c++) {
		int cells = title_split_width(t->cols[c].title);
		for (int r = 0; r < t->nrows; r++)
			cells = MAX(cells, str_width(t->cells[r * t->ncols + c]));
		if (content + gap * (t->ncols - 1) > width && cells < w[c]) {
			content -= w[c] - cells;
			w[c] = cells;
			split = true;
		}
	}
	/* Shrink: the highest give first, the widest among equals, one column at a time. */
	while (width > 0 && content + gap * (t->ncols - 1) > width) {
		int best = -1;
		for (int c = 0; c < t->ncols; c++) {
			int min = MAX(t->cols[c].min, 3);
			if (w[c] <= min)
				continue;
			if (best < 0 || t->cols[c].give > t->cols[best].give ||
			    (t->cols[c].give == t->cols[best].give && w[c] > w[best]))
				best = c;
		}
		if (best < 0)
			break;
		w[best]--;
		content--;
	}
	for (int c = 0; c < t->ncols; c++)
		if (str_width(t->cols[c].title) > w[c] && strchr(t->cols[c].title, '-') &&
		    title_split_width(t->cols[c].title) <= w[c])
			split = true;
	if (split) {
		/* Line one: the first part of every split title, blanks elsewhere. */
		char *top[t->ncols], *bottom[t->ncols];
		char buf[t->ncols][64];
		for (int c = 0; c < t->ncols; c++) {
			const char *title = t->cols[c].title, *dash = strchr(title, '-');
			top[c] = (char *)"";
			bottom[c] = (char *)title;
			if (dash && str_width(title) > w[c] && title_split_width(title) <= w[c]) {
				snprintf(buf[c], sizeof(buf[c]), "%.*s", (int)(dash - title), title);
				top[c] = buf[c];
				bottom[c] = (char *)dash + 1;
			}
		}
		print_row(t, top, w, gap);
		print_row(t, bottom, w, gap);
	} else {
		char *titles[t->ncols];
		for (int c = 0; c < t->ncols; c++)
			titles[c] = (char *)t->cols[c].title;
		print_row(t, titles, w, gap);
	}
	for (int r = 0; r < t->nrows; r++)
		print_row(t, t->cells + r * t->ncols, w, gap);
}

int ctl_print_tbl(struct tbl *t, const struct ctl *c)
{
	if (!t) {
		ctl_err("out of memory");
		return CTL_EXIT_AGENT;
	}
	tbl_print(t, ctl_width(c));
	tbl_free(t);
	return 0;
}

int ctl_print_json(const json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	if (!s) {
		ctl_err("out of memory");
		return CTL_EXIT_AGENT;
	}
	puts(s);
	free(s);
	return 0;
}

void fmt_bytes(long long n, char *buf, size_t len)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	int u = -1;
	if (n < 1024) {
		snprintf(buf, len, "%lldB", n);
		return;
	}
	while (v >= 1024 && u < 3)
		v /= 1024, u++;
	snprintf(buf, len, v < 10 ? "%.1f%s" : "%.0f%s", v, units[u]);
}

void fmt_age_ms(long long ms, char *buf, size_t len)
{
	long long s = ms / 1000;
	if (ms < 0)
		snprintf(buf, len, "-");
	else if (ms < 1000)
		snprintf(buf, len, "%lldms", ms);
	else if (s < 60)
		snprintf(buf, len, "%llds", s);
	else if (s < 3600)
		snprintf(buf, len, "%lldm%llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%lldh%lldm", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, len, "%lldd%lldh", s / 86400, s % 86400 / 3600);
}

const char *jstr(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

long long jint(const json_t *obj, const char *key, long long dflt)
{
	json_t *v = json_object_get(obj, key);
	if (json_is_integer(v))
		return (long long)json_integer_value(v);
	if (json_is_real(v))
		return (long long)json_real_value(v);
	return dflt;
}
