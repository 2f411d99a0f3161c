// SPDX-License-Identifier: Apache-2.0
/* common/cli: the daemons' shared command line (ambitd, ambit-waypoint, ambit-ca): options,
 * --cleanup only where asked for, exit statuses and the one-line errors on stderr. */
#include "common/cli.h"
#include "harness.h"

#include <getopt.h>
#include <stdarg.h>
#include <unistd.h>

static const char usage[] = "Usage: prog --config FILE\n";

/* stdout and stderr into temporary files between capture_begin and capture_end. */
static int cap_saved[2];
static FILE *cap_file[2];

static void capture_begin(void)
{
	fflush(stdout);
	fflush(stderr);
	for (int k = 0; k < 2; k++) {
		cap_file[k] = tmpfile();
		cap_saved[k] = dup(k + 1);
		dup2(fileno(cap_file[k]), k + 1);
	}
}

/* What was written to stdout (out) and stderr (err), each of len bytes at most. */
static void capture_end(char *out, char *err, size_t len)
{
	fflush(stdout);
	fflush(stderr);
	for (int k = 0; k < 2; k++) {
		char *buf = k ? err : out;
		size_t n;
		dup2(cap_saved[k], k + 1);
		close(cap_saved[k]);
		rewind(cap_file[k]);
		n = fread(buf, 1, len - 1, cap_file[k]);
		buf[n] = '\0';
		fclose(cap_file[k]);
	}
}

/* Runs cli_parse on a NULL-terminated argument list (argv[0] = "prog") with stdout and stderr
 * captured into out and err. Returns cli_parse's result. */
static int parse(unsigned flags, struct cli_opts *o, char *out, char *err, size_t len, ...)
{
	char *argv[16] = { "prog" };
	int argc = 1, rc;
	va_list ap;

	va_start(ap, len);
	while (argc < 15 && (argv[argc] = va_arg(ap, char *)))
		argc++;
	va_end(ap);
	argv[argc] = NULL;
	capture_begin();
	optind = 0;	/* glibc: a full re-initialisation of getopt between parses */
	rc = cli_parse(argc, argv, "prog", usage, flags, o);
	capture_end(out, err, len);
	return rc;
}

#define LEN 512

TEST(config_check_log_level)
{
	struct cli_opts o;
	char out[LEN], err[LEN];

	CHECK_EQ_INT(parse(0, &o, out, err, LEN, "--config", "a.json", "--check", "-l", "debug",
			   NULL), -1);
	CHECK_EQ_STR(o.config_path, "a.json");
	CHECK(o.check && !o.cleanup);
	CHECK_EQ_STR(o.log_level, "debug");
	CHECK_EQ_STR(err, "");
	CHECK_EQ_INT(parse(0, &o, out, err, LEN, "-c", "b.json", NULL), -1);
	CHECK(o.config_path && !strcmp(o.config_path, "b.json") && !o.check && !o.log_level);
}

TEST(help_and_version_exit_0_on_stdout)
{
	struct cli_opts o;
	char out[LEN], err[LEN];

	CHECK_EQ_INT(parse(0, &o, out, err, LEN, "--help", NULL), 0);
	CHECK_EQ_STR(out, usage);
	CHECK_EQ_INT(parse(CLI_CLEANUP, &o, out, err, LEN, "-V", NULL), 0);
	CHECK(strncmp(out, "prog ", 5) == 0 && strchr(out, '(') && strchr(out, '\n'));
	CHECK_EQ_STR(err, "");
}

TEST(bad_usage_exits_2_with_one_line)
{
	struct cli_opts o;
	char out[LEN], err[LEN];

	CHECK_EQ_INT(parse(0, &o, out, err, LEN, NULL), CLI_EXIT_USAGE);
	CHECK_EQ_STR(err, "prog: --config FILE is required (see --help)\n");
	CHECK_EQ_INT(parse(0, &o, out, err, LEN, "-c", "a.json", "extra", NULL), CLI_EXIT_USAGE);
	CHECK_EQ_STR(err, "prog: unexpected argument 'extra' (see --help)\n");
	/* An unknown option: getopt's line, then the usage, on stderr. */
	CHECK_EQ_INT(parse(0, &o, out, err, LEN, "--bogus", NULL), CLI_EXIT_USAGE);
	CHECK(strstr(err, "'--bogus'") && strstr(err, usage));
	CHECK_EQ_STR(out, "");
}

TEST(cleanup_only_when_asked_for)
{
	struct cli_opts o;
	char out[LEN], err[LEN];

	/* ambitd: --cleanup alone is enough (the redirect keys then are the defaults). */
	CHECK_EQ_INT(parse(CLI_CLEANUP, &o, out, err, LEN, "--cleanup", NULL), -1);
	CHECK(o.cleanup && !o.config_path);
	CHECK_EQ_INT(parse(CLI_CLEANUP, &o, out, err, LEN, "--cleanup", "-c", "a.json", NULL), -1);
	CHECK(o.cleanup && o.config_path);
	/* The others do not know it. */
	CHECK_EQ_INT(parse(0, &o, out, err, LEN, "--cleanup", NULL), CLI_EXIT_USAGE);
	CHECK(strstr(err, "'--cleanup'") && strstr(err, usage));
	CHECK(!o.cleanup);
	/* Abbreviations stay what they were: "--cl" is --cleanup where it exists. */
	CHECK_EQ_INT(parse(CLI_CLEANUP, &o, out, err, LEN, "--cl", NULL), -1);
	CHECK(o.cleanup);
	CHECK_EQ_INT(parse(0, &o, out, err, LEN, "--cl", "-c", "a.json", NULL), CLI_EXIT_USAGE);
}

TEST(log_level)
{
	enum log_level lvl = LOG_LVL_INFO;
	char out[LEN], err[LEN];
	int rc;

	CHECK_EQ_INT(cli_log_level("prog", NULL, &lvl), 0);
	CHECK_EQ_INT(lvl, LOG_LVL_INFO);
	CHECK_EQ_INT(cli_log_level("prog", "trace", &lvl), 0);
	CHECK_EQ_INT(lvl, LOG_LVL_TRACE);
	capture_begin();
	rc = cli_log_level("prog", "loud", &lvl);
	capture_end(out, err, LEN);
	CHECK_EQ_INT(rc, CLI_EXIT_USAGE);
	CHECK_EQ_STR(err, "prog: --log-level: 'loud' is not one of error, warn, info, debug, trace\n");
	CHECK_EQ_STR(out, "");
}

int main(void)
{
	return test_main("cli");
}
