// SPDX-License-Identifier: Apache-2.0
/* getopt_long for the daemons' shared options (common/cli.h). */
#include "common/cli.h"
#include "common/util.h"
#include "common/version.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

int cli_parse(int argc, char **argv, const char *prog, const char *usage, unsigned flags,
	      struct cli_opts *out)
{
	/* In this order (getopt_long lists an ambiguous abbreviation's candidates so). */
	static const struct option all[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'k' },
		{ "cleanup", no_argument, NULL, 'x' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct option longopts[ARRAY_SIZE(all)];
	size_t n = 0;
	int opt;

	for (size_t i = 0; i < ARRAY_SIZE(all); i++)
		if (all[i].val != 'x' || (flags & CLI_CLEANUP))
			longopts[n++] = all[i];
	memset(out, 0, sizeof(*out));
	while ((opt = getopt_long(argc, argv, "c:l:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': out->config_path = optarg; break;
		case 'k': out->check = true; break;
		case 'x': out->cleanup = true; break;
		case 'l': out->log_level = optarg; break;
		case 'h': fputs(usage, stdout); return 0;
		case 'V': printf("%s %s (%s)\n", prog, AMBIT_VERSION, AMBIT_GIT_REV); return 0;
		default: fputs(usage, stderr); return CLI_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", prog, argv[optind]);
		return CLI_EXIT_USAGE;
	}
	if (!out->config_path && !out->cleanup) {
		fprintf(stderr, "%s: --config FILE is required (see --help)\n", prog);
		return CLI_EXIT_USAGE;
	}
	return -1;
}

int cli_log_level(const char *prog, const char *arg, enum log_level *level)
{
	if (!arg || !log_level_parse(arg, level))
		return 0;
	fprintf(stderr, "%s: --log-level: '%s' is not one of error, warn, info, debug, trace\n",
		prog, arg);
	return CLI_EXIT_USAGE;
}
