/* SPDX-License-Identifier: Apache-2.0 */
/* Start-up pieces shared by ambitd and ambit-waypoint: the tracer from the tracing config and
 * OTEL_* environment, the mesh CA with its certificate store and renewal timer, and the
 * discovery source (file or Kubernetes). Errors are reported once, here, naming the config. */
#ifndef AMBIT_AGENT_RUNTIME_H
#define AMBIT_AGENT_RUNTIME_H

#include "agent/config.h"
#include "agent/loop.h"
#include "agent/workloads.h"

struct otlp_tracer;
struct tls_ca;
struct certstore;
struct discovery_file;
struct kube_discovery;

/* The tracer per tracing.* with OTEL_* applied over it. 0; -EINVAL (bad value: a line naming
 * the config went to stderr, exit 2 is right); -ENOMEM. */
int runtime_tracer_new(const struct config *c, const char *prog, struct otlp_tracer **out);

/* The mesh CA (ca.cert, ca.key) and a certstore with the configured lifetime, renewed at
 * half-life by a timer on l. 0; -EINVAL (bad CA files, reported); -errno. */
struct runtime_identity {
	struct tls_ca *ca;
	struct certstore *certs;
	struct loop *loop;
	struct loop_timer renew;
};
int runtime_identity_start(struct runtime_identity *id, struct loop *l, const struct config *c,
			   const char *prog);
void runtime_identity_stop(struct runtime_identity *id);

/* Subscribes fn to model updates, then starts the configured source. 0 or -errno (logged). */
struct runtime_discovery {
	struct discovery_file *file;
	struct kube_discovery *kube;
};
int runtime_discovery_start(struct runtime_discovery *d, const struct config *c,
			    model_listener_fn fn, void *arg);
void runtime_discovery_stop(struct runtime_discovery *d);
/* Its status for /config_dump. New reference, or NULL. */
json_t *runtime_discovery_status(struct runtime_discovery *d);

#endif
