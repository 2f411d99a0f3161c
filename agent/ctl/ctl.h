/* SPDX-License-Identifier: Apache-2.0 */
/* ambitctl: the node-level debugging CLI. It links no agent objects: what it shares with
 * ambitd is only the admin API's paths and JSON keys (docs/admin-api.md). */
#ifndef AMBIT_CTL_CTL_H
#define AMBIT_CTL_CTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define CTL_DEFAULT_ADMIN "127.0.0.1:15000"
#define CTL_MAX_ADMINS 16
#define CTL_CONNECT_TIMEOUT_MS 2000L
#define CTL_TIMEOUT_MS 10000L
#define CTL_MAX_ANSWER (32u << 20)

/* Exit statuses (CONTRACT.md). */
enum {
	CTL_EXIT_OK = 0,
	CTL_EXIT_AGENT = 1,	/* unreachable, refused, HTTP error, malformed answer */
	CTL_EXIT_USAGE = 2,
};

enum ctl_format {
	CTL_FMT_TABLE,
	CTL_FMT_JSON,
};

/* One agent's admin API. */
struct ctl_admin {
	char addr[300];		/* as the user wrote it, for messages */
	char url[320];		/* "http://host:port" */
	bool loopback;		/* 127.0.0.0/8 or ::1: unreachable can only mean refused */
};

/* What the command line said, shared by every command. */
struct ctl {
	const char *admin_args[CTL_MAX_ADMINS];	/* --admin values as given (argv) */
	int nadmin_args;
	struct ctl_admin admins[CTL_MAX_ADMINS];	/* parsed by ctl_ready() */
	int nadmins;
	enum ctl_format format;
	bool wide;			/* -o wide: a table with every cell whole */
	int width;			/* --width, else the terminal's; 0 = unlimited (not a terminal) */
	const volatile bool *cancel;	/* set by SIGINT in --watch */
};

/* A subcommand: one cmd_x() each, with the man page `help X` and `X --help` print. */
struct ctl_cmd {
	const char *name;
	int (*fn)(struct ctl *c, int argc, char **argv);	/* argv[0] is the name */
	const char *summary;					/* one line, for `help` */
	const char *synopsis;					/* after "ambitctl " */
	const char *description;
	const char *options;
	const char *examples;
};

extern const struct ctl_cmd ctl_cmds[];
extern const size_t ctl_ncmds;

/* ---- messages (main.c) ---- */
void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "ambitctl: <msg>" plus the usage hint and returns CTL_EXIT_USAGE. */
int ctl_usage_err(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The man page of a command (NULL: the tool's own) on stdout. */
void ctl_print_help(const char *cmd);
const struct ctl_cmd *ctl_cmd_find(const char *name);

/* ---- option parsing shared by the commands (main.c) ---- */
/* Matches argv[*i] against "--long"/"-s" taking a value ("--long=v", "--long v", "-sv", "-s v").
 * Returns 1 and sets *val on a match, 0 when it is another option, -1 when the value is missing
 * (already reported). */
int ctl_opt_value(char **argv, int argc, int *i, const char *lng, char shrt, const char **val);
/* Handles the options every command accepts after its name: -o/--output, --admin, --width.
 * Returns 1 when argv[*i] was one of them, 0 if not, or -CTL_EXIT_USAGE on a bad value. */
int ctl_common_opt(struct ctl *c, const char *cmd, int argc, char **argv, int *i);
/* An option of a command's own that takes a value. */
struct ctl_valopt {
	const char *lng;	/* "--trace" */
	char shrt;		/* 't', or 0 when it has no short form */
	const char **val;	/* set when given (the last one wins) */
};
/* Parses a command's arguments from argv[first] on: the common options and the command's
 * value options opts[0..nopts). Anything else is "WHAT: unexpected argument '...'" (what: the
 * command as the user wrote it, e.g. "policies check"). 0, or the exit status after printing
 * why. */
int ctl_parse_opts(struct ctl *c, int argc, char **argv, int first, const char *what,
		   const struct ctl_valopt *opts, size_t nopts);
/* After a command parsed its options: parses the --admin values (the default when none).
 * 0, or CTL_EXIT_AGENT / CTL_EXIT_USAGE after printing why. */
int ctl_ready(struct ctl *c);
/* The width tables are fitted into: 0 (never cut) with -o wide, else c->width, which is the
 * terminal's width when stdout is one and 0 when it is a pipe or a file, unless --width N. */
int ctl_width(const struct ctl *c);
/* Parses a positive decimal number with an optional fraction ("2", "0.5"). 0 or -EINVAL. */
int ctl_parse_seconds(const char *s, double *out);

/* ---- admin API client (client.c) ---- */
/* Parses HOST:PORT ([v6]:PORT, an optional http:// prefix, HOST alone = port 15000).
 * 0, or -EINVAL with a reason in why (static string). */
int ctl_admin_parse(const char *s, struct ctl_admin *out, const char **why);
/* Adds each address of a comma list to c->admins. 0, or CTL_EXIT_USAGE / CTL_EXIT_AGENT after
 * printing why. */
int ctl_admins_add(struct ctl *c, const char *list);
/* Asks one agent. method "GET" or "POST"; path_query like "/spans?limit=5". On success returns
 * 0 and *out (owned by the caller, json_decref) holds the parsed answer; on failure prints one
 * line on stderr and returns CTL_EXIT_AGENT. allow_404: a 404 returns 0 with *out NULL, silently. */
int ctl_fetch(const struct ctl *c, const struct ctl_admin *a, const char *method,
	      const char *path_query, bool allow_404, json_t **out);
/* Prints one line "ambitctl: unexpected answer from the agent at ADDR to PATH: why". Returns
 * CTL_EXIT_AGENT. */
int ctl_bad_answer(const struct ctl_admin *a, const char *path, const char *why);

/* ---- output helpers (table.c) ---- */
enum tbl_trunc {
	TBL_KEEP_START,		/* "spiffe://cluster.lo…" */
	TBL_KEEP_END,		/* "…/ns/default/sa/api" */
};

struct tbl_col {
	const char *title;	/* "BYTES-SENT" may print on two lines, split at '-', to fit */
	int min;		/* never narrower than this when shrinking to fit */
	enum tbl_trunc trunc;
	bool right;		/* right-aligned (numbers) */
	int give;		/* columns with a higher give shrink first (to min) */
};

struct tbl;

/* A table of ncols columns (cols is borrowed, must outlive the table). NULL on ENOMEM. */
struct tbl *tbl_new(const struct tbl_col *cols, int ncols);
void tbl_free(struct tbl *t);
/* Appends a row of ncols cells (copied; NULL prints as "-"). 0 or -ENOMEM. */
int tbl_add(struct tbl *t, const char *const *cells);
/* tbl_add, and when that fails frees the table and sets *t to NULL (ctl_print_tbl then says
 * out of memory); nothing when *t is NULL already. Renderers add rows without checking. */
void tbl_add_or_drop(struct tbl **t, const char *const *cells);
int tbl_rows(const struct tbl *t);
/* Prints the table to stdout, header first, fitted into width columns (0 = no limit): the gap
 * narrows from two spaces to one, titles split at '-' onto two lines, then the columns with the
 * highest give (the widest among equals) shrink to their min; a cut cell ends with an ellipsis. */
void tbl_print(const struct tbl *t, int width);
/* Prints t fitted to ctl_width(c) and frees it. 0, or CTL_EXIT_AGENT after "out of memory"
 * when t is NULL (tbl_new or tbl_add_or_drop failed). */
int ctl_print_tbl(struct tbl *t, const struct ctl *c);
/* Display width of a UTF-8 string (code points; every character counts as one column). */
int str_width(const char *s);
/* Copies s into buf fitted to at most w columns, with the ellipsis where it was cut. */
void str_fit(const char *s, int w, enum tbl_trunc how, char *buf, size_t len);
/* The ellipsis and the bar blocks: UTF-8 when the locale is, ASCII otherwise. */
extern const char *ctl_ellipsis;
extern const char *ctl_block;
void ctl_charset_init(void);

/* Pretty, stable JSON (2-space indent, sorted keys) on stdout. 0 or CTL_EXIT_AGENT. */
int ctl_print_json(const json_t *j);
/* "900B", "1.2KiB", "34MiB" (binary units). */
void fmt_bytes(long long n, char *buf, size_t len);
/* "850ms", "12s", "5m3s", "2h10m", "3d4h". */
void fmt_age_ms(long long ms, char *buf, size_t len);
/* The string value of obj[key], or NULL when absent or not a string. */
const char *jstr(const json_t *obj, const char *key);
/* The integer value of obj[key] (reals truncated), or dflt. */
long long jint(const json_t *obj, const char *key, long long dflt);

/* ---- commands (cmds.c, spans.c) ---- */
int cmd_workloads(struct ctl *c, int argc, char **argv);
int cmd_services(struct ctl *c, int argc, char **argv);
int cmd_certificates(struct ctl *c, int argc, char **argv);
int cmd_connections(struct ctl *c, int argc, char **argv);
int cmd_bpf(struct ctl *c, int argc, char **argv);
int cmd_config(struct ctl *c, int argc, char **argv);
int cmd_policies(struct ctl *c, int argc, char **argv);
int cmd_log(struct ctl *c, int argc, char **argv);
int cmd_spans(struct ctl *c, int argc, char **argv);
int cmd_telemetry(struct ctl *c, int argc, char **argv);
int cmd_version(struct ctl *c, int argc, char **argv);
int cmd_help(struct ctl *c, int argc, char **argv);

#endif
