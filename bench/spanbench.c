// SPDX-License-Identifier: Apache-2.0
/* bench/spanbench.c (`make bench-spans`): the CPU a request costs the agents in-process with
 * and without request spans (docs/request-spans.md), not a test. Two conns as the agents hold
 * them, an outbound one (source node: CLIENT spans) and an inbound HBONE one (destination node:
 * SERVER spans, parent from the first's traceparent), each relaying `make bench`'s HTTP/1.1
 * exchange (tcpkit's GET and 64-byte answer) through the conn buffers and the telemetry hooks:
 * tracker, span start, attributes, end, batcher and ring. Export goes to a port where nothing
 * listens, as in `make bench`. Each mode runs in a child of its own (telemetry is process-wide);
 * the figure is the median of rounds of the main thread's CPU time per request. With -c KiB,
 * every mode writes through that much memory between two requests (as the kernel's network
 * path, TLS and the other processes do in the lab): the on - off difference is then the spans'
 * cost run cold, the lab's case (issue 17, bench/README.md "Where the lab cost goes"). */
#include "agent/conn.h"
#include "agent/loop.h"
#include "agent/telemetry.h"
#include "agent/workloads.h"
#include "common/log.h"
#include "common/util.h"
#include "http/h1track.h"
#include "otlp/tracer.h"
#include "reqspan_rig.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char req[] = "GET /rr HTTP/1.1\r\nHost: tcpkit\r\n\r\n";
static const char resp[] = "HTTP/1.1 200 OK\r\ncontent-length: 64\r\n\r\n"
			   "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

enum mode { M_RELAY, M_SPANS, M_TRACKER };
static const char *const mode_names[] = { "request spans off", "request spans on",
					   "tracker only (two h1track, no spans)" };

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* -c: the bytes written through between two requests (0: none, the hot loop) */
static size_t cold_bytes;
static volatile uint8_t *cold_buf;

/* Evicts what the last request left in the caches: one write per 64-byte line. */
static void go_cold(void)
{
	for (size_t i = 0; i < cold_bytes; i += 64)
		cold_buf[i]++;
}

/* One exchange through c as the agent relays it (written on at once). */
static void relay(struct conn *c)
{
	rig_relay(c, req, sizeof(req) - 1, resp, sizeof(resp) - 1, true);
}

static void nop_req(void *arg, const struct h1t_request *r) { (void)arg; (void)r; }
static void nop_resp(void *arg, const struct h1t_response *r) { (void)arg; (void)r; }
static const struct h1t_cbs nop_cbs = { .on_request = nop_req, .on_response = nop_resp };

/* The child: sets up the mode and prints the median ns per request over `rounds`. */
static int run(enum mode m, unsigned long n, unsigned rounds, const char *endpoint)
{
	char err[256];
	struct otlp_config cfg;
	struct otlp_tracer *tracer = NULL;
	struct loop *l = loop_new();
	struct conn *out = NULL, *in = NULL;
	struct h1track t[2];
	double *per = calloc(rounds, sizeof(*per));

	if (cold_bytes && !(cold_buf = calloc(1, cold_bytes))) {
		fprintf(stderr, "spanbench: no memory for -c\n");
		return 1;
	}
	if (!l || !per || rig_publish_model(err, sizeof(err))) {
		fprintf(stderr, "spanbench: setup: %s\n", l && per ? err : strerror(errno));
		return 1;
	}
	if (m == M_TRACKER) {
		h1t_init(&t[0], &nop_cbs, NULL);
		h1t_init(&t[1], &nop_cbs, NULL);
	} else {
		otlp_config_init(&cfg);
		if (otlp_config_set_endpoint(&cfg, endpoint, err, sizeof(err)) ||
		    otlp_config_add_tag(&cfg, "cluster_name", "lab", err, sizeof(err)) ||
		    otlp_config_add_tag(&cfg, "environment", "test", err, sizeof(err)) ||
		    !(tracer = otlp_tracer_new(&cfg, err, sizeof(err)))) {
			fprintf(stderr, "spanbench: tracer: %s\n", err);
			return 1;
		}
		otlp_config_fini(&cfg);
		struct telemetry_opts to = { .cluster_id = "Kubernetes", .node_name = "node-1",
					     .tracer = tracer, .request_spans = m == M_SPANS };
		if (telemetry_init(&to)) {
			fprintf(stderr, "spanbench: telemetry_init failed\n");
			return 1;
		}
		out = rig_open_conn(l, CONN_OUTBOUND, NULL);
		in = out ? rig_open_conn(l, CONN_INBOUND_HBONE, out) : NULL;
		if (!in) {
			fprintf(stderr, "spanbench: out of memory\n");
			return 1;
		}
	}
	for (unsigned r = 0; r < rounds; r++) {
		uint64_t t0 = thread_cpu_ns(), sweep = 0;
		for (unsigned long i = 0; i < n; i++) {
			if (cold_bytes) {	/* not counted: only what the request then costs */
				uint64_t c0 = thread_cpu_ns();
				go_cold();
				sweep += thread_cpu_ns() - c0;
			}
			if (m == M_TRACKER) {
				uint64_t now = now_real_ns();
				for (int k = 0; k < 2; k++) {
					h1t_feed(&t[k], H1T_REQ, (const uint8_t *)req, sizeof(req) - 1, now);
					h1t_feed(&t[k], H1T_RESP, (const uint8_t *)resp, sizeof(resp) - 1, now);
				}
			} else {
				relay(out);
				relay(in);
			}
		}
		per[r] = (double)(thread_cpu_ns() - t0 - sweep) / (double)n;
	}
	for (unsigned i = 1; i < rounds; i++)	/* insertion sort: a handful of rounds */
		for (unsigned j = i; j > 0 && per[j - 1] > per[j]; j--) {
			double x = per[j];
			per[j] = per[j - 1];
			per[j - 1] = x;
		}
	printf("%.1f %.1f %.1f\n", per[rounds / 2], per[0], per[rounds - 1]);
	fflush(stdout);
	if (m != M_TRACKER) {
		conn_abort(out, CONN_DOWN, 0, NULL, NULL);
		conn_abort(in, CONN_DOWN, 0, NULL, NULL);
		telemetry_fini(0);
		otlp_tracer_free_within(tracer, 0);
	}
	free(per);
	return 0;
}

/* Runs mode m in a child; its "median min max" line into out. */
static int child(enum mode m, unsigned long n, unsigned rounds, const char *endpoint, double out[3])
{
	int fd[2];
	char line[128] = "";
	pid_t pid;
	int status;
	FILE *f;

	if (pipe(fd))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		close(fd[0]);
		if (dup2(fd[1], STDOUT_FILENO) < 0)
			_exit(1);
		_exit(run(m, n, rounds, endpoint));
	}
	close(fd[1]);
	f = fdopen(fd[0], "r");
	if (!f || !fgets(line, sizeof(line), f) ||
	    sscanf(line, "%lf %lf %lf", &out[0], &out[1], &out[2]) != 3)
		out[0] = -1;
	if (f)
		fclose(f);
	waitpid(pid, &status, 0);
	return out[0] < 0 || !WIFEXITED(status) || WEXITSTATUS(status) ? -EIO : 0;
}

int main(int argc, char **argv)
{
	unsigned long n = 100000;
	unsigned rounds = 7;
	const char *endpoint = "http://127.0.0.1:9";	/* discard: nothing listens */
	double r[3][3];
	int opt;

	while ((opt = getopt(argc, argv, "n:r:e:c:h")) != -1) {
		switch (opt) {
		case 'n': n = strtoul(optarg, NULL, 10); break;
		case 'r': rounds = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'e': endpoint = optarg; break;
		case 'c': cold_bytes = (size_t)strtoul(optarg, NULL, 10) * 1024; break;
		default:
			fprintf(stderr, "usage: %s [-n requests per round (100000)] [-r rounds (7)] "
					"[-e OTLP gRPC endpoint (http://127.0.0.1:9: none)] "
					"[-c KiB written through between requests (0)]\n", argv[0]);
			return opt == 'h' ? 0 : 2;
		}
	}
	if (!n || !rounds || rounds > 1000) {
		fprintf(stderr, "spanbench: -n and -r must be positive (-r at most 1000)\n");
		return 2;
	}
	log_set_level(LOG_LVL_ERROR);	/* the exporter's retries against no collector */
	for (int m = 0; m < 3; m++) {
		if (child((enum mode)m, n, rounds, endpoint, r[m])) {
			fprintf(stderr, "spanbench: the '%s' run failed\n", mode_names[m]);
			return 1;
		}
	}
	printf("CPU ns per request (main thread; median of %u rounds of %lu requests, [min max]),\n"
	       "one request relayed by both agents (outbound conn + inbound conn)", rounds, n);
	if (cold_bytes)
		printf(", %zu KiB written through before each (in every mode, not counted)", cold_bytes / 1024);
	printf(":\n");
	for (int m = 0; m < 3; m++)
		printf("  %-38s %8.0f  [%.0f %.0f]\n", mode_names[m], r[m][0], r[m][1], r[m][2]);
	printf("  %-38s %8.0f\n", "request-span pair (on - off)", r[M_SPANS][0] - r[M_RELAY][0]);
	return 0;
}
