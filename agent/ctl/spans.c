// SPDX-License-Identifier: Apache-2.0
/* ambitctl spans: the recent spans of one or more agents (GET /spans), merged; with --trace,
 * the trace as a terminal waterfall (rows in parent/child order, bars on a shared time axis). */
#include "agent/ctl/ctl.h"
#include "common/util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WF_MAX_DEPTH 12
#define WF_LABEL_MAX 32
#define WF_NODE_MAX 20
#define WF_MSG_MAX 24
#define WF_BAR_MIN 20
#define WF_BAR_WIDE 60		/* the bar when nothing is cut (not a terminal, -o wide) */

struct span_row {
	json_t *j;		/* borrowed from the merged array */
	const char *span_id;
	const char *parent_id;
	const char *name;
	const char *node;	/* resource k8s.node.name, else the agent's address */
	const char *status;	/* UNSET, OK, ERROR */
	const char *message;
	long long start, end;	/* unix ns; end >= start */
	int parent;		/* index in rows, or -1 */
	int depth;
	bool placed;
};

struct merged {
	json_t *spans;		/* owned: every agent's spans, deduplicated, ordered by start */
	json_t *origin;		/* owned: "trace_id/span_id" -> the address of the agent that had it */
};

static long long span_start(const json_t *s)
{
	return jint(s, "start_unix_nano", 0);
}

static int cmp_start(const void *x, const void *y)
{
	const json_t *a = *(json_t *const *)x, *b = *(json_t *const *)y;
	long long sa = span_start(a), sb = span_start(b);
	const char *ia = jstr(a, "span_id"), *ib = jstr(b, "span_id");
	if (sa != sb)
		return sa < sb ? -1 : 1;
	return strcmp(ia ? ia : "", ib ? ib : "");
}

static void span_key(const json_t *s, char *buf, size_t len)
{
	const char *tid = jstr(s, "trace_id"), *sid = jstr(s, "span_id");
	snprintf(buf, len, "%s/%s", tid ? tid : "", sid ? sid : "");
}

/* Asks every agent (path: GET /spans with its query) and merges the answers; which agent had
 * each span goes to a side table, so the JSON output stays the admin API's. Returns 0 or CTL_EXIT_AGENT (some agent
 * failed: what the others said is still merged). */
static int fetch_all(struct ctl *c, const char *path, struct merged *m, size_t limit)
{
	int answered = 0;
	json_t *all = json_array(), *origin = json_object();
	json_t **v = NULL;
	size_t n;
	int rc = 0;

	m->spans = m->origin = NULL;
	if (!all || !origin)
		goto nomem;
	for (int i = 0; i < c->nadmins; i++) {
		const struct ctl_admin *a = &c->admins[i];
		json_t *ans, *arr, *s;
		size_t k;
		if (ctl_fetch(c, a, "GET", path, false, &ans)) {
			rc = CTL_EXIT_AGENT;
			continue;
		}
		arr = json_object_get(ans, "spans");
		if (!json_is_array(arr)) {
			rc = ctl_bad_answer(a, path, "no \"spans\" array");
			json_decref(ans);
			continue;
		}
		json_array_foreach(arr, k, s) {
			char key[160];
			if (!json_is_object(s) || !jstr(s, "span_id"))
				continue;
			span_key(s, key, sizeof(key));
			if (json_object_get(origin, key))
				continue;	/* the same agent given twice */
			if (json_object_set_new(origin, key, json_string(a->addr)) ||
			    json_array_append(all, s)) {
				json_decref(ans);
				goto nomem;
			}
		}
		json_decref(ans);
		answered++;
	}
	if (!answered) {	/* every agent failed, and said so */
		json_decref(all);
		json_decref(origin);
		return rc;
	}
	/* Order by start, keep the most recent `limit`. */
	n = json_array_size(all);
	if (n && !(v = calloc(n, sizeof(*v))))
		goto nomem;
	for (size_t i = 0; i < n; i++)
		v[i] = json_array_get(all, i);
	if (n)
		qsort(v, n, sizeof(*v), cmp_start);
	m->spans = json_array();
	if (!m->spans)
		goto nomem;
	for (size_t i = (limit && n > limit) ? n - limit : 0; i < n; i++)
		json_array_append(m->spans, v[i]);
	free(v);
	json_decref(all);
	m->origin = origin;
	return rc;
nomem:
	free(v);
	json_decref(all);
	json_decref(origin);
	json_decref(m->spans);
	m->spans = NULL;
	ctl_err("out of memory");
	return CTL_EXIT_AGENT;
}

/* The agent address a span came from (its node when the resource does not name one). */
static const char *origin_of(const struct merged *m, const json_t *s)
{
	char key[160];
	span_key(s, key, sizeof(key));
	return jstr(m->origin, key);
}

static void fill_row(struct span_row *r, json_t *s, const struct merged *m)
{
	const json_t *res = json_object_get(s, "resource"), *st = json_object_get(s, "status");
	memset(r, 0, sizeof(*r));
	r->j = s;
	r->span_id = jstr(s, "span_id");
	r->parent_id = jstr(s, "parent_span_id");
	r->name = jstr(s, "name") ? jstr(s, "name") : "?";
	r->node = jstr(res, "k8s.node.name");
	if (!r->node || !r->node[0])
		r->node = origin_of(m, s);
	r->status = jstr(st, "code") ? jstr(st, "code") : "UNSET";
	r->message = jstr(st, "message");
	r->start = span_start(s);
	r->end = jint(s, "end_unix_nano", r->start);
	if (r->end < r->start)
		r->end = r->start;
	r->parent = -1;
}

/* ---- the waterfall ---- */

static void place(struct span_row *rows, int n, int at, int depth, int *order, int *norder)
{
	rows[at].placed = true;
	rows[at].depth = depth;
	order[(*norder)++] = at;
	/* rows are ordered by start, so children come out in start order. */
	for (int i = 0; i < n; i++)
		if (!rows[i].placed && rows[i].parent == at)
			place(rows, n, i, depth + 1, order, norder);
}

/* Lays the rows out in tree order: roots (no parent among the rows) by start, each followed by
 * its children by start. A cycle's members that are never reached become roots. */
static void tree_order(struct span_row *rows, int n, int *order)
{
	int norder = 0;
	for (int i = 0; i < n; i++) {
		const char *p = rows[i].parent_id;
		for (int k = 0; p && p[0] && k < n; k++)
			if (k != i && rows[k].span_id && strcmp(rows[k].span_id, p) == 0) {
				rows[i].parent = k;
				break;
			}
	}
	for (int i = 0; i < n; i++)
		if (!rows[i].placed && rows[i].parent < 0)
			place(rows, n, i, 0, order, &norder);
	for (int i = 0; i < n; i++)
		if (!rows[i].placed)
			place(rows, n, i, 0, order, &norder);
}

static void fmt_ms(long long ns, char *buf, size_t len)
{
	snprintf(buf, len, "%.3f ms", (double)ns / 1e6);
}

/* s in w columns: whole and padded when it fits, else cut with the ellipsis. indent: blanks
 * in front, counted in w. */
static void put_padded(const char *s, int indent, int w)
{
	char buf[512];
	if (indent + str_width(s) <= w) {
		printf("%*s%s%*s", indent, "", s, w - indent - str_width(s), "");
		return;
	}
	indent = MIN(indent, w);
	str_fit(s, w - indent, TBL_KEEP_START, buf, sizeof(buf));
	printf("%*s%s%*s", indent, "", buf, w - indent - str_width(buf), "");
}

/* Draws rows (already in tree order through order[]) fitted to width columns; width 0 (not a
 * terminal, -o wide): labels, nodes and messages whole, the bar WF_BAR_WIDE columns. */
static void draw_waterfall(const char *trace_id, struct span_row *rows, const int *order, int n,
			   int width)
{
	long long t0 = rows[0].start, t1 = rows[0].end, total;
	int lw = 4, nw = 4, dw = 8, mw = 0, bw, errors = 0, nnodes = 0, orphans = 0;
	const char *nodes[64];
	char dur[32], axis[32];

	for (int i = 0; i < n; i++) {
		struct span_row *r = &rows[i];
		bool known = false;
		t0 = MIN(t0, r->start);
		t1 = MAX(t1, r->end);
		lw = MAX(lw, 2 * MIN(r->depth, WF_MAX_DEPTH) + str_width(r->name));
		nw = MAX(nw, str_width(r->node ? r->node : "-"));
		fmt_ms(r->end - r->start, dur, sizeof(dur));
		dw = MAX(dw, (int)strlen(dur));
		if (strcmp(r->status, "ERROR") == 0) {
			errors++;
			mw = MAX(mw, str_width(r->message ? r->message : ""));
		}
		orphans += r->parent < 0 && r->parent_id && r->parent_id[0];
		for (int k = 0; k < nnodes; k++)
			known |= strcmp(nodes[k], r->node ? r->node : "-") == 0;
		if (!known && nnodes < (int)ARRAY_SIZE(nodes))
			nodes[nnodes++] = r->node ? r->node : "-";
	}
	total = t1 - t0 > 0 ? t1 - t0 : 1;
	if (width > 0) {
		lw = MIN(lw, WF_LABEL_MAX);
		nw = MIN(nw, WF_NODE_MAX);
		mw = MIN(mw, WF_MSG_MAX);
		/* label  node  |bar|  duration  ERROR message; the message gives way to the bar. */
		bw = width - 1 - (lw + 2 + nw + 2 + 1 + 1 + 2 + dw + (errors ? 2 + 5 : 0));
		if (mw && bw - (mw + 1) < WF_BAR_MIN)
			mw = MAX(bw - WF_BAR_MIN - 1, 0);
		bw -= mw ? mw + 1 : 0;
		if (bw < WF_BAR_MIN)
			bw = WF_BAR_MIN;
	} else {
		bw = WF_BAR_WIDE;
	}

	fmt_ms(total, dur, sizeof(dur));
	printf("trace %s: %d span%s on %d node%s, %s", trace_id, n, n == 1 ? "" : "s", nnodes,
	       nnodes == 1 ? "" : "s", dur);
	if (errors)
		printf(", %d error%s", errors, errors == 1 ? "" : "s");
	putchar('\n');

	put_padded("SPAN", 0, lw);
	printf("  ");
	put_padded("NODE", 0, nw);
	snprintf(axis, sizeof(axis), "%.3g ms", (double)total / 1e6);
	printf("  |0%*s|  %*s", bw - 1, axis, dw, "DURATION");
	if (errors)
		printf("  STATUS");
	putchar('\n');

	for (int oi = 0; oi < n; oi++) {
		const struct span_row *r = &rows[order[oi]];
		int depth = MIN(r->depth, WF_MAX_DEPTH);
		int from = (int)((double)(r->start - t0) * bw / (double)total);
		int len = (int)((double)(r->end - r->start) * bw / (double)total + 0.5);

		if (from >= bw)
			from = bw - 1;
		if (len < 1)
			len = 1;
		if (from + len > bw)
			len = bw - from;
		put_padded(r->name, 2 * depth, lw);
		printf("  ");
		put_padded(r->node ? r->node : "-", 0, nw);
		printf("  |%*s", from, "");
		for (int k = 0; k < len; k++)
			fputs(ctl_block, stdout);
		printf("%*s|  ", bw - from - len, "");
		fmt_ms(r->end - r->start, dur, sizeof(dur));
		printf("%*s", dw, dur);
		if (strcmp(r->status, "ERROR") == 0) {
			const char *m = r->message ? r->message : "";
			char msg[256];
			if (width > 0) {
				str_fit(m, mw, TBL_KEEP_START, msg, sizeof(msg));
				m = msg;
			}
			printf("  ERROR%s%s", m[0] ? " " : "", m);
		}
		putchar('\n');
	}
	if (orphans)
		printf("(%d span%s with a parent on another node: add that agent, --admin A,B)\n",
		       orphans, orphans == 1 ? "" : "s");
}

/* The merged spans as the admin API spells one answer: {"spans": [...]}. */
static int print_spans_json(const struct merged *m)
{
	json_t *o = json_pack("{s:O}", "spans", m->spans);
	int rc;
	if (!o) {
		ctl_err("out of memory");
		return CTL_EXIT_AGENT;
	}
	rc = ctl_print_json(o);
	json_decref(o);
	return rc;
}

static int show_trace(struct ctl *c, const char *trace_id, struct merged *m)
{
	int n = (int)json_array_size(m->spans);
	struct span_row *rows;
	int *order;

	if (c->format == CTL_FMT_JSON)
		return print_spans_json(m);
	rows = calloc((size_t)n, sizeof(*rows));
	order = calloc((size_t)n, sizeof(*order));
	if (!rows || !order) {
		free(rows);
		free(order);
		ctl_err("out of memory");
		return CTL_EXIT_AGENT;
	}
	for (int i = 0; i < n; i++)
		fill_row(&rows[i], json_array_get(m->spans, (size_t)i), m);
	tree_order(rows, n, order);
	draw_waterfall(trace_id, rows, order, n, ctl_width(c));
	free(rows);
	free(order);
	return 0;
}

static int show_list(struct ctl *c, struct merged *m)
{
	static const struct tbl_col cols[] = {
		{ "TRACE-ID", 32, TBL_KEEP_START, false, 0 }, { "SPAN-ID", 6, TBL_KEEP_START, false, 2 },
		{ "NAME", 8, TBL_KEEP_START, false, 1 }, { "NODE", 6, TBL_KEEP_START, false, 1 },
		{ "START", 8, TBL_KEEP_START, false, 0 }, { "DURATION", 8, TBL_KEEP_START, true, 0 },
		{ "STATUS", 5, TBL_KEEP_START, false, 0 },
	};
	struct tbl *t;
	size_t i;
	json_t *s;

	if (c->format == CTL_FMT_JSON)
		return print_spans_json(m);
	t = tbl_new(cols, ARRAY_SIZE(cols));
	json_array_foreach(m->spans, i, s) {
		struct span_row r;
		char start[32], dur[32];
		time_t secs;
		struct tm tm;
		fill_row(&r, s, m);
		secs = (time_t)(r.start / 1000000000LL);
		if (!gmtime_r(&secs, &tm) || !strftime(start, sizeof(start), "%H:%M:%S", &tm))
			snprintf(start, sizeof(start), "-");
		snprintf(dur, sizeof(dur), "%.1fms", (double)(r.end - r.start) / 1e6);
		const char *row[] = { jstr(s, "trace_id"), r.span_id, r.name, r.node, start, dur, r.status };
		tbl_add_or_drop(&t, row);
	}
	return ctl_print_tbl(t, c);
}

int cmd_spans(struct ctl *c, int argc, char **argv)
{
	const char *trace = NULL, *lim = NULL;
	char tid[33], path[128];
	unsigned long limit = 0;
	struct merged m;
	int rc;

	const struct ctl_valopt opts[] = { { "--trace", 't', &trace }, { "--limit", 'n', &lim } };
	if ((rc = ctl_parse_opts(c, argc, argv, 1, "spans", opts, ARRAY_SIZE(opts))))
		return rc;
	if (trace) {
		size_t n = strlen(trace);
		if (n != 32 || strspn(trace, "0123456789abcdefABCDEF") != n)
			return ctl_usage_err(argv[0], "--trace '%s' is not a trace ID (32 hex digits)", trace);
		for (size_t k = 0; k <= n; k++)
			tid[k] = (char)tolower((unsigned char)trace[k]);
	}
	if (lim) {
		char *end;
		limit = strtoul(lim, &end, 10);
		if (!*lim || *end || lim[0] == '-' || limit < 1 || limit > 1000000)
			return ctl_usage_err(argv[0], "--limit '%s' is not a number from 1 to 1000000", lim);
	}
	if ((rc = ctl_ready(c)) != 0)
		return rc;
	if (trace && lim)
		snprintf(path, sizeof(path), "/spans?trace_id=%s&limit=%lu", tid, limit);
	else if (trace)
		snprintf(path, sizeof(path), "/spans?trace_id=%s", tid);
	else if (lim)
		snprintf(path, sizeof(path), "/spans?limit=%lu", limit);
	else
		snprintf(path, sizeof(path), "/spans");
	rc = fetch_all(c, path, &m, limit);
	if (!m.spans)
		return rc;
	if (trace && !json_array_size(m.spans)) {
		if (!rc) {
			ctl_err("no span of trace %s on %s%s (the agents keep only their recent spans)", tid,
				c->admins[0].addr, c->nadmins > 1 ? " or the other agents given" : "");
			rc = CTL_EXIT_AGENT;
		}
	} else {
		int r = trace ? show_trace(c, tid, &m) : show_list(c, &m);
		if (r)
			rc = r;
	}
	json_decref(m.spans);
	json_decref(m.origin);
	return rc;
}
