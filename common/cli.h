/* SPDX-License-Identifier: Apache-2.0 */
/* The command line every ambit daemon shares (CONTRACT.md "Binaries"): --config FILE,
 * --check, --log-level LVL, --help, --version (and ambitd's --cleanup), with exit status 2 and
 * one line for bad usage. */
#ifndef AMBIT_COMMON_CLI_H
#define AMBIT_COMMON_CLI_H

#include <stdbool.h>

#include "common/log.h"

/* Exit status for bad usage or configuration (CONTRACT.md "Binaries"). */
#define CLI_EXIT_USAGE 2

/* Options only some daemons accept (cli_parse's flags). */
enum cli_flag {
	CLI_CLEANUP = 1u << 0,		/* --cleanup (ambitd); --config is optional with it */
};

struct cli_opts {
	const char *config_path;	/* -c, --config FILE (required, except with --cleanup) */
	const char *log_level;		/* -l, --log-level LVL, or NULL */
	bool check;			/* --check */
	bool cleanup;			/* --cleanup (with CLI_CLEANUP only) */
};

/* Parses argv into out; flags (enum cli_flag) add options. Returns -1 to go on, or the exit
 * status to return at once: 0 after --help (usage on stdout) or --version, CLI_EXIT_USAGE on
 * bad usage (one line, or the usage, on stderr). */
int cli_parse(int argc, char **argv, const char *prog, const char *usage, unsigned flags,
	      struct cli_opts *out);

/* Applies --log-level's value arg (NULL: none given) to *level. 0, or CLI_EXIT_USAGE after
 * saying why on stderr ("PROG: --log-level: ..."). */
int cli_log_level(const char *prog, const char *arg, enum log_level *level);

#endif
