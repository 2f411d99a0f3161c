/* SPDX-License-Identifier: Apache-2.0 */
/* The newest compiled policy set of a stream of models, shared by the node agent
 * (agent/policy.c) and the waypoint: each model's objects are compiled (istio/authz) with the
 * newest set as prev, so a refused object keeps its last good version; the rest (a model
 * older than the newest set skipped, the swap under a lock, readers' references) is
 * istio/latest. */
#ifndef AMBIT_ISTIO_AUTHZSET_H
#define AMBIT_ISTIO_AUTHZSET_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "istio/authz.h"
#include "istio/latest.h"

struct authz_latest {
	struct istio_latest base;	/* of struct authz_set */
	char *root_ns;			/* changed only under both of base's locks */
};

void authz_latest_ref_(void *set);
void authz_latest_unref_(void *set);
#define AUTHZ_LATEST_INIT { .base = ISTIO_LATEST_INIT(authz_latest_ref_, authz_latest_unref_) }

/* Makes l compile from now on, with Istio's root namespace root_ns (NULL = "istio-system",
 * copied). 0 or -ENOMEM. */
int authz_latest_start(struct authz_latest *l, const char *root_ns);
/* Stops compiling (a compile running now finishes first) and drops the newest set. l may be
 * started again. */
void authz_latest_stop(struct authz_latest *l);
/* Compiles resources (borrowed; the model's JSON array) of model generation gen and makes the
 * result the newest set. Any thread. 0 (stats, when not NULL, describe the new set), -ESTALE
 * when a newer model's set got there first or -ECANCELED when l is stopped (nothing done), or
 * -ENOMEM (the newest set stays). The caller logs. */
int authz_latest_compile(struct authz_latest *l, const json_t *resources, uint64_t gen,
			 struct authz_set_stats *stats);
/* A new reference to the newest set (authz_set_unref), or NULL when none was compiled. */
struct authz_set *authz_latest_get(struct authz_latest *l);
/* Between start and stop. */
bool authz_latest_active(struct authz_latest *l);

#endif
