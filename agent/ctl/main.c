// SPDX-License-Identifier: Apache-2.0
/* ambitctl: entry point. Global options, the table of subcommands ({name, fn, help}, one
 * cmd_x() each, as wireguard-tools' wg.c), man-page style help, exit statuses 0/1/2. */
#include "agent/ctl/ctl.h"
#include "common/httpc.h"
#include "common/version.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static const char common_options[] =
	"--admin HOST:PORT\n"
	"    The agent's admin API (default " CTL_DEFAULT_ADMIN "). May be repeated, or a comma "
	"list, to ask several agents: `spans` merges their answers, other commands show one "
	"section per agent.\n"
	"-o, --output table|wide|json\n"
	"    table (default): aligned columns for people; on a terminal they are fitted to its "
	"width (a cut cell ends with an ellipsis), written to a pipe or a file they are never cut, "
	"so grep finds whole values. wide: the same table with every column whole, on a terminal "
	"too. json: the admin API's answer, pretty-printed with sorted keys, for scripts.\n"
	"--width N\n"
	"    Fit tables into N columns (0: never cut), terminal or not. Default: on a terminal "
	"its width, else $COLUMNS, else 80; not on a terminal, 0.\n"
	"-h, --help\n"
	"    This page.\n";

const struct ctl_cmd ctl_cmds[] = {
	{ "workloads", cmd_workloads, "workloads known to the agent",
	  "workloads [-o table|wide|json]",
	  "Lists the workloads (pods) of the agent's discovery model, sorted by namespace and "
	  "name: NAMESPACE, POD-NAME, ADDRESS (its IPs, comma separated), NODE, "
	  "WAYPOINT (\"None\" without one) and PROTOCOL (HBONE for enrolled workloads, else TCP). "
	  "Reads GET /workloads.",
	  "", "ambitctl workloads\nambitctl workloads -o json | jq -r '.workloads[] | select(.local) | .name'" },
	{ "services", cmd_services, "services and their endpoints",
	  "services [-o table|wide|json]",
	  "Lists the services of the discovery model: NAMESPACE, SERVICE-NAME, SERVICE-VIP, "
	  "WAYPOINT and ENDPOINTS (how many workloads its selector matches). Reads GET /services.",
	  "", "ambitctl services\nambitctl services -o json | jq '.services[] | {name, endpoints}'" },
	{ "certificates", cmd_certificates, "workload certificates held by the agent",
	  "certificates [-o table|wide|json]",
	  "Lists the leaf certificates the agent holds for its local workloads' identities: "
	  "IDENTITY (SPIFFE ID), SERIAL, NOT-AFTER (UTC) and STATE (fresh, renewing, expired). "
	  "Reads GET /certificates.",
	  "", "ambitctl certificates\nambitctl certificates -o json | jq -r '.certificates[] | select(.state != \"fresh\") | .identity'" },
	{ "connections", cmd_connections, "live proxied connections and HBONE tunnels",
	  "connections [-o table|wide|json] [--watch [--interval S]]",
	  "Lists the connections the agent proxies now: DIRECTION (outbound or inbound), SRC, "
	  "DST (the original destination), TARGET (where the agent sent it), IDENTITY (the peer's "
	  "SPIFFE ID: the destination's for outbound, the source's for inbound), BYTES-SENT, "
	  "BYTES-RECV and AGE. When the agent runs HBONE, a second table lists its tunnels "
	  "(GET /hbone): ROLE, PEER, PEER-IDENTITY, STREAMS, AGE and STATE.\n"
	  "With -o json the answer of GET /connections is printed with an extra \"hbone\" array "
	  "(the \"connections\" of GET /hbone; null when HBONE is not running).",
	  "--watch\n"
	  "    Clear the screen and redraw every interval until interrupted (Ctrl-C, exit 0).\n"
	  "    While the agent cannot be reached the error is shown and the watch goes on.\n"
	  "--interval S\n"
	  "    Seconds between refreshes with --watch, 0.2 to 3600 (default 2).\n",
	  "ambitctl connections\nambitctl connections --watch --interval 1\nambitctl connections -o json | jq '.connections[] | select(.direction == \"outbound\")'" },
	{ "bpf", cmd_bpf, "eBPF capture state: interfaces and programs",
	  "bpf [-o table|wide|json]",
	  "Shows the traffic capture: one row per pod interface with the tc programs attached "
	  "(IFACE, IFINDEX, POD, IP, PROGRAMS as direction:program-id), pods still waiting for "
	  "their interface, then the capture counters. Reads GET /bpf.",
	  "", "ambitctl bpf\nambitctl bpf -o json | jq .counters" },
	{ "spans", cmd_spans, "recent connection spans; a trace as a waterfall",
	  "spans [-o table|wide|json] [--trace ID] [--limit N]",
	  "Without --trace, lists the most recent spans of the agent's ring: TRACE-ID, SPAN-ID, "
	  "NAME, NODE, START (UTC), DURATION and STATUS.\n"
	  "With --trace, draws that trace as a waterfall: one row per span, children under their "
	  "parent ordered by start and indented by depth, with its node, a bar placed and scaled "
	  "on the trace's duration, the duration in ms, and ERROR with its message when the span "
	  "failed. A trace that crosses nodes has its outbound span on one agent and its inbound "
	  "span on the other: give both agents (--admin A --admin B, or --admin A,B) to see it "
	  "whole. Exits 1 when no agent holds a span of the trace.\n"
	  "With -o json, the spans of every agent are merged into one {\"spans\": [...]} ordered "
	  "by start. Reads GET /spans?trace_id=ID&limit=N.",
	  "--trace ID\n"
	  "    The trace ID, 32 hex digits (as in access logs and traceparent headers).\n"
	  "--limit N\n"
	  "    At most the N most recent spans (per agent, then overall).\n",
	  "ambitctl spans --limit 20\nambitctl --admin 10.0.0.1:15000 --admin 10.0.0.2:15000 spans --trace 4bf92f3577b34da6a3ce929d0e0e4736" },
	{ "telemetry", cmd_telemetry, "tracing settings per workload and where they come from",
	  "telemetry [-o table|json] [--workload NS/NAME]",
	  "Shows the tracing settings in force for each workload of the agent's node (or the one "
	  "named, on any node), per direction (outbound = Istio's CLIENT mode, inbound = SERVER): "
	  "WORKLOAD, DIRECTION, PROVIDER (the MeshConfig extension provider; \"config\" when "
	  "ambit's own tracing keys apply), SAMPLING, REPORTING (off: IDs and traceparent only), "
	  "TAGS (literal, $ENV, <header>) and FROM, the MeshConfig or Telemetry object each field "
	  "came from. Then the providers with their export counters, and a warning line for each "
	  "Istio object or MeshConfig part left out. Reads GET /telemetry[?workload=NS/NAME].",
	  "--workload NS/NAME\n"
	  "    Only this workload (namespace and pod name).\n",
	  "ambitctl telemetry\nambitctl telemetry --workload apps/web-1 -o json | jq .workloads[0].outbound.from" },
	{ "config", cmd_config, "the agent's effective configuration",
	  "config [-o table|wide|json]",
	  "Prints the configuration the agent runs with (defaults, file and environment merged; "
	  "credentials redacted) and its discovery status, as KEY VALUE rows with dotted paths. "
	  "Reads GET /config_dump.",
	  "", "ambitctl config\nambitctl config -o json | jq .tracing" },
	{ "policies", cmd_policies, "L4 authorization policies in force; check a connection",
	  "policies [-o table|json]\n       ambitctl policies check --from ADDR|NS/NAME --to NS/NAME:PORT [-o table|json]",
	  "Without check, lists the Istio AuthorizationPolicy and PeerAuthentication objects the "
	  "agent compiled (GET /policies): NAMESPACE, NAME, KIND (authz or peerauthn), ACTION (ALLOW, "
	  "DENY, AUDIT, CUSTOM; a PeerAuthentication's mode, +ports with portLevelMtls; "
	  "\"(dry-run)\" for istio.io/dry-run), SCOPE (mesh, namespace, selector, targetRefs), "
	  "STATE (applied, converted, previous, refused, unsupported, ignored), WORKLOADS (how many "
	  "it applies to at L4) and NOTES (the first refusal, conversion or unsupported feature; "
	  "-o json has them all, with the workloads' names).\n"
	  "With check, asks the agent's live state for the verdict on a connection from ADDR (an "
	  "IP) or the workload NS/NAME (over HBONE with its identity when it is enrolled, else "
	  "plaintext) to the workload NS/NAME on target port PORT: the verdict, the reason, the "
	  "deciding policy, the effective mTLS mode and what dry-run policies would decide, as KEY "
	  "VALUE rows (GET /policies/check?from=...&to=...).",
	  "--from ADDR|NS/NAME\n    check: the source, an IP address or a workload.\n"
	  "--to NS/NAME:PORT\n    check: the destination workload and its target port.\n",
	  "ambitctl policies\nambitctl policies -o json | jq '.policies[] | select(.state != \"applied\")'\n"
	  "ambitctl policies check --from default/sleep --to default/httpbin:8080" },
	{ "log", cmd_log, "show or change the agent's log level",
	  "log [-o table|wide|json] [LEVEL]",
	  "Without LEVEL, shows the agent's log level (GET /logging). With LEVEL, one of error, "
	  "warn, info, debug or trace, sets it at once (POST /logging?level=LEVEL); the change "
	  "lasts until the agent restarts.",
	  "", "ambitctl log\nambitctl log debug" },
	{ "version", cmd_version, "versions of ambitctl and the agent",
	  "version [-o table|wide|json] [--client]",
	  "Prints ambitctl's version, then the agent's (version, node, uptime, connections, "
	  "memory, CPU time) from GET /stats.",
	  "--client\n"
	  "    Only ambitctl's version; do not ask the agent.\n",
	  "ambitctl version\nambitctl version --client" },
	{ "help", cmd_help, "this help, or a command's",
	  "help [COMMAND]",
	  "Prints the manual of ambitctl, or of COMMAND (the same as `ambitctl COMMAND --help`).",
	  "", "ambitctl help connections" },
};
const size_t ctl_ncmds = sizeof(ctl_cmds) / sizeof(ctl_cmds[0]);

/* "ambitctl: <message>" on stderr, after what stdout holds, without the line's end. */
static void __attribute__((format(printf, 1, 0))) vmsg(const char *fmt, va_list ap)
{
	fflush(stdout);
	fputs("ambitctl: ", stderr);
	vfprintf(stderr, fmt, ap);
}

void ctl_err(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int ctl_usage_err(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	if (cmd)
		fprintf(stderr, " (see 'ambitctl help %s')\n", cmd);
	else
		fputs(" (see 'ambitctl --help')\n", stderr);
	return CTL_EXIT_USAGE;
}

const struct ctl_cmd *ctl_cmd_find(const char *name)
{
	for (size_t i = 0; i < ctl_ncmds; i++)
		if (strcmp(ctl_cmds[i].name, name) == 0)
			return &ctl_cmds[i];
	return NULL;
}

#define HELP_WIDTH 80

/* Prints text with every line indented by `indent` spaces and wrapped at word boundaries to
 * HELP_WIDTH columns (continuations keep the line's own leading spaces). gap: a blank line
 * between lines (paragraphs). */
static void put_indented(const char *text, int indent, bool gap, bool wrap)
{
	const char *p = text;
	while (*p) {
		const char *nl = strchr(p, '\n');
		int n = nl ? (int)(nl - p) : (int)strlen(p), lead = 0;
		const char *line = p;

		while (lead < n && line[lead] == ' ')
			lead++;
		if (n == 0)
			putchar('\n');
		for (int off = lead; off < n;) {
			int room = wrap ? HELP_WIDTH - 1 - indent - lead : n, len = n - off;
			if (len > room) {
				int cut = room;
				while (cut > 0 && line[off + cut] != ' ')
					cut--;
				len = cut > 0 ? cut : room;
			}
			printf("%*s%.*s\n", indent + lead, "", len, line + off);
			off += len;
			while (off < n && line[off] == ' ')
				off++;
		}
		p += n + (nl ? 1 : 0);
		if (gap && *p)
			putchar('\n');
	}
}

void ctl_print_help(const char *name)
{
	const struct ctl_cmd *cmd = name ? ctl_cmd_find(name) : NULL;

	if (!cmd) {
		printf("NAME\n    ambitctl - node-level debugging CLI for the ambit node agent\n\n");
		printf("SYNOPSIS\n    ambitctl [--admin HOST:PORT] COMMAND [-o table|wide|json] [command options]\n"
		       "    ambitctl help [COMMAND] | --help | --version\n\n");
		printf("DESCRIPTION\n");
		put_indented("Reads the admin API of ambitd (JSON on 127.0.0.1:15000, docs/admin-api.md) "
			     "and shows it as tables for people or JSON for scripts. Commands:\n", 4, false, true);
		for (size_t i = 0; i < ctl_ncmds; i++)
			printf("        %-14s %s\n", ctl_cmds[i].name, ctl_cmds[i].summary);
		printf("\nOPTIONS\n");
		put_indented(common_options, 4, false, true);
		printf("    --version\n        ambitctl's version.\n\n");
		printf("EXIT STATUS\n    0 success; 1 agent error (bad address, unreachable, refused, HTTP error\n"
		       "    status, malformed answer); 2 bad usage.\n\n");
		printf("EXAMPLES\n");
		put_indented("ambitctl workloads\nambitctl connections --watch\n"
			     "ambitctl --admin 127.0.0.1:15000 spans --trace 4bf92f3577b34da6a3ce929d0e0e4736\n"
			     "ambitctl config -o json\nambitctl log debug\n", 4, false, false);
		return;
	}
	printf("NAME\n    ambitctl %s - %s\n\n", cmd->name, cmd->summary);
	printf("SYNOPSIS\n    ambitctl [--admin HOST:PORT] %s\n\n", cmd->synopsis);
	printf("DESCRIPTION\n");
	put_indented(cmd->description, 4, true, true);
	printf("\nOPTIONS\n");
	if (cmd->options[0])
		put_indented(cmd->options, 4, false, true);
	if (strcmp(cmd->name, "help") != 0)
		put_indented(common_options, 4, false, true);
	else
		printf("    (none)\n");
	printf("\nEXAMPLES\n");
	put_indented(cmd->examples, 4, false, false);
}

int ctl_opt_value(char **argv, int argc, int *i, const char *lng, char shrt, const char **val)
{
	const char *a = argv[*i];
	size_t ll = lng ? strlen(lng) : 0;

	if (lng && strncmp(a, lng, ll) == 0 && (a[ll] == '\0' || a[ll] == '=')) {
		if (a[ll] == '=') {
			*val = a + ll + 1;
			return 1;
		}
	} else if (shrt && a[0] == '-' && a[1] == shrt) {
		if (a[2]) {
			*val = a + 2;
			return 1;
		}
	} else {
		return 0;
	}
	if (*i + 1 >= argc) {
		ctl_usage_err(NULL, "option %s needs a value", a);
		return -1;
	}
	*val = argv[++*i];
	return 1;
}

int ctl_common_opt(struct ctl *c, const char *cmd, int argc, char **argv, int *i)
{
	const char *v;
	int r;

	if ((r = ctl_opt_value(argv, argc, i, "--output", 'o', &v)) != 0) {
		if (r < 0)
			return -CTL_EXIT_USAGE;
		c->wide = strcmp(v, "wide") == 0;
		if (strcmp(v, "table") == 0 || c->wide)
			c->format = CTL_FMT_TABLE;
		else if (strcmp(v, "json") == 0)
			c->format = CTL_FMT_JSON;
		else
			return -ctl_usage_err(cmd, "output format '%s' is not table, wide or json", v);
		return 1;
	}
	if ((r = ctl_opt_value(argv, argc, i, "--admin", 0, &v)) != 0) {
		if (r < 0)
			return -CTL_EXIT_USAGE;
		if (c->nadmin_args == CTL_MAX_ADMINS)
			return -ctl_usage_err(cmd, "at most %d --admin options", CTL_MAX_ADMINS);
		c->admin_args[c->nadmin_args++] = v;
		return 1;
	}
	if ((r = ctl_opt_value(argv, argc, i, "--width", 0, &v)) != 0) {
		char *end;
		long w;
		if (r < 0)
			return -CTL_EXIT_USAGE;
		errno = 0;
		w = strtol(v, &end, 10);
		if (errno || end == v || *end || w < 0 || w > 100000)
			return -ctl_usage_err(cmd, "--width '%s' is not a number of columns", v);
		c->width = (int)w;
		return 1;
	}
	return 0;
}

int ctl_parse_opts(struct ctl *c, int argc, char **argv, int first, const char *what,
		   const struct ctl_valopt *opts, size_t nopts)
{
	for (int i = first; i < argc; i++) {
		size_t k;
		int r = ctl_common_opt(c, argv[0], argc, argv, &i);
		if (r < 0)
			return -r;
		if (r > 0)
			continue;
		for (k = 0; k < nopts; k++)
			if ((r = ctl_opt_value(argv, argc, &i, opts[k].lng, opts[k].shrt, opts[k].val)))
				break;
		if (r < 0)
			return CTL_EXIT_USAGE;
		if (k == nopts)
			return ctl_usage_err(argv[0], "%s: unexpected argument '%s'", what, argv[i]);
	}
	return 0;
}

int ctl_ready(struct ctl *c)
{
	int rc;
	if (c->nadmins)
		return 0;
	if (!c->nadmin_args)
		return ctl_admins_add(c, CTL_DEFAULT_ADMIN);
	for (int i = 0; i < c->nadmin_args; i++)
		if ((rc = ctl_admins_add(c, c->admin_args[i])) != 0)
			return rc;
	return 0;
}

int ctl_parse_seconds(const char *s, double *out)
{
	char *end;
	double v;
	if (!*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !(v > 0) || v != v)
		return -EINVAL;
	*out = v;
	return 0;
}

int ctl_width(const struct ctl *c)
{
	return c->wide ? 0 : c->width;
}

/* Tables are cut to fit only on a terminal: what goes to a pipe or a file is read by grep, awk
 * or a person's pager, which must see whole values (CONTRACT.md). */
static int default_width(void)
{
	struct winsize ws;
	const char *cols = getenv("COLUMNS");
	if (!isatty(STDOUT_FILENO))
		return 0;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	if (cols && *cols) {
		char *end;
		long v = strtol(cols, &end, 10);
		if (!*end && v > 0 && v < 100000)
			return (int)v;
	}
	return 80;
}

int cmd_help(struct ctl *c, int argc, char **argv)
{
	(void)c;
	if (argc > 2)
		return ctl_usage_err("help", "help takes at most one COMMAND");
	if (argc == 2 && strcmp(argv[1], "--help") != 0 && strcmp(argv[1], "-h") != 0) {
		if (!ctl_cmd_find(argv[1]))
			return ctl_usage_err(NULL, "no command '%s'", argv[1]);
		ctl_print_help(argv[1]);
		return 0;
	}
	ctl_print_help(argc == 2 ? "help" : NULL);
	return 0;
}

int main(int argc, char **argv)
{
	struct ctl c = { .format = CTL_FMT_TABLE };
	const struct ctl_cmd *cmd;
	int i, rc;

	ctl_charset_init();
	c.width = default_width();
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		}
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			ctl_print_help(NULL);
			return 0;
		}
		if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
			printf("ambitctl %s (%s)\n", AMBIT_VERSION, AMBIT_GIT_REV);
			return 0;
		}
		rc = ctl_common_opt(&c, NULL, argc, argv, &i);
		if (rc < 0)
			return -rc;
		if (rc == 0)
			return ctl_usage_err(NULL, "unknown option '%s'", argv[i]);
	}
	if (i >= argc)
		return ctl_usage_err(NULL, "no command given");
	cmd = ctl_cmd_find(argv[i]);
	if (!cmd)
		return ctl_usage_err(NULL, "no command '%s'", argv[i]);
	/* Every command answers --help before anything else is checked. */
	for (int j = i + 1; j < argc && strcmp(argv[j], "--") != 0; j++) {
		if (strcmp(argv[j], "--help") == 0 || strcmp(argv[j], "-h") == 0) {
			ctl_print_help(cmd->name);
			return 0;
		}
	}
	/* The admin API is on the node itself: never through an HTTP proxy from the environment
	 * (libcurl honours http_proxy and friends unless told otherwise). */
	setenv("no_proxy", "*", 1);
	setenv("NO_PROXY", "*", 1);
	if (httpc_global_init()) {
		ctl_err("cannot initialise libcurl");
		return CTL_EXIT_AGENT;
	}
	rc = cmd->fn(&c, argc - i, argv + i);
	httpc_global_fini();
	if (fflush(stdout) == EOF || ferror(stdout)) {
		if (errno != EPIPE)
			ctl_err("writing the output: %s", strerror(errno));
		return rc ? rc : CTL_EXIT_AGENT;
	}
	return rc;
}
