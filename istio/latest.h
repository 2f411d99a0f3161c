/* SPDX-License-Identifier: Apache-2.0 */
/* The newest compiled set of a stream of models, whatever the set (policies: istio/authzset,
 * HTTPRoutes: the waypoint's routes): compiles are serialized, each may start from the newest
 * set, a model older than the newest set is skipped, the result is swapped in under a lock,
 * and readers take a reference. The set is refcounted by its owner's ref/unref. */
#ifndef AMBIT_ISTIO_LATEST_H
#define AMBIT_ISTIO_LATEST_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct istio_latest {
	pthread_mutex_t compile_lock;	/* serializes compiles (and start/stop) */
	pthread_mutex_t lock;		/* guards the fields below */
	void *set;			/* the newest compiled set, or NULL */
	uint64_t gen;			/* the model generation it was compiled from */
	bool active;			/* between start and stop */
	void (*ref)(void *set);		/* the set's reference counting (set at init) */
	void (*unref)(void *set);
};

#define ISTIO_LATEST_INIT(ref_fn, unref_fn) { .compile_lock = PTHREAD_MUTEX_INITIALIZER, \
					      .lock = PTHREAD_MUTEX_INITIALIZER, \
					      .ref = (ref_fn), .unref = (unref_fn) }

/* Makes l compile from now on; locked(arg) (may be NULL) runs under both locks, where the
 * compile callback's own inputs may change. */
void istio_latest_start(struct istio_latest *l, void (*locked)(void *arg), void *arg);
/* Stops compiling (a compile running now finishes first) and drops the newest set; locked(arg)
 * as for start. l may be started again. */
void istio_latest_stop(struct istio_latest *l, void (*locked)(void *arg), void *arg);
/* Compiles the set of model generation gen with compile(prev, arg) (prev: the newest set,
 * borrowed, or NULL; returns a set with one reference, which l takes, or NULL on ENOMEM) and
 * makes it the newest. Any thread. 0, -ESTALE when a newer model's set got there first or
 * -ECANCELED when l is stopped (compile not called), -ENOMEM (the newest set stays). With
 * old, *old is the set replaced (a reference for the caller, or NULL). */
int istio_latest_compile(struct istio_latest *l, uint64_t gen,
			 void *(*compile)(void *prev, void *arg), void *arg, void **old);
/* A new reference to the newest set, or NULL when none was compiled. */
void *istio_latest_get(struct istio_latest *l);
/* Between start and stop. */
bool istio_latest_active(struct istio_latest *l);

#endif
