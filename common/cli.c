// SPDX-License-Identifier: Apache-2.0
/* getopt_long for the daemons' shared options (common/cli.h). */
#include "common/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#ifndef AMBIT_VERSION
#define AMBIT_VERSION "0.0.0"
#endif
#ifndef AMBIT_GIT_REV
#define AMBIT_GIT_REV "unknown"
#endif

#define EXIT_USAGE 2

int cli_parse(int argc, char **argv, const char *prog, const char *usage, struct cli_opts *out)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'k' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;

	memset(out, 0, sizeof(*out));
	while ((opt = getopt_long(argc, argv, "c:l:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': out->config_path = optarg; break;
		case 'k': out->check = true; break;
		case 'l': out->log_level = optarg; break;
		case 'h': fputs(usage, stdout); return 0;
		case 'V': printf("%s %s (%s)\n", prog, AMBIT_VERSION, AMBIT_GIT_REV); return 0;
		default: fputs(usage, stderr); return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", prog, argv[optind]);
		return EXIT_USAGE;
	}
	if (!out->config_path) {
		fprintf(stderr, "%s: --config FILE is required (see --help)\n", prog);
		return EXIT_USAGE;
	}
	return -1;
}
