/* SPDX-License-Identifier: Apache-2.0 */
/* The node agent's state, shared by main.c (lifecycle) and admin.c (the admin API). */
#ifndef AMBIT_AGENT_AGENT_H
#define AMBIT_AGENT_AGENT_H

#include <stdbool.h>
#include <stdint.h>

#include "agent/config.h"
#include "agent/loop.h"
#include "agent/runtime.h"

struct agent {
	struct config cfg;
	struct loop *loop;
	struct proxy *proxy;
	struct mesh *mesh;
	struct redirect *redirect;
	struct runtime_discovery disc;
	struct httpd *admin, *metrics, *ready;
	struct loop_io redirect_io;
	struct loop_io signal_io;
	struct runtime_drain drain;	/* after SIGTERM: open connections closed at its deadline */
	struct runtime_identity id;	/* mesh CA, certificate store, renewal */
	struct otlp_tracer *tracer;
	uint64_t start_unix_ms;
	bool model_applied;	/* the first model has been turned into capture state */
	bool serving;		/* took over: listening, listeners in the sockmap (main.c) */
	bool draining;
	uint64_t exit_deadline_ms;	/* SIGTERM + drain_timeout_ms: spans flushed by then */
	int npods_captured;
};

/* Admin API (127.0.0.1:15000) request handler; arg is the struct agent. */
struct httpd_request;
struct httpd_response;
void admin_handle(void *arg, const struct httpd_request *req, struct httpd_response *resp);
/* Readiness (15021) and metrics (15020) handlers. */
void admin_handle_ready(void *arg, const struct httpd_request *req, struct httpd_response *resp);
void admin_handle_metrics(void *arg, const struct httpd_request *req, struct httpd_response *resp);

#endif
