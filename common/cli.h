/* SPDX-License-Identifier: Apache-2.0 */
/* The command line every ambit daemon shares (CONTRACT.md "Binaries"): --config FILE,
 * --check, --log-level LVL, --help, --version, with exit status 2 and one line for bad usage. */
#ifndef AMBIT_COMMON_CLI_H
#define AMBIT_COMMON_CLI_H

#include <stdbool.h>

struct cli_opts {
	const char *config_path;	/* -c, --config FILE (required) */
	const char *log_level;		/* -l, --log-level LVL, or NULL */
	bool check;			/* --check */
};

/* Parses argv into out. Returns -1 to go on, or the exit status to return at once: 0 after
 * --help (usage on stdout) or --version, 2 on bad usage (one line, or the usage, on stderr). */
int cli_parse(int argc, char **argv, const char *prog, const char *usage, struct cli_opts *out);

#endif
