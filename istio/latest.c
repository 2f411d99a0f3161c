// SPDX-License-Identifier: Apache-2.0
/* The newest compiled set of a model stream (istio/latest.h): the compile-and-swap the node
 * agent's policies and the waypoint's policies and routes use. */
#include "istio/latest.h"

#include <errno.h>
#include <stddef.h>

void istio_latest_start(struct istio_latest *l, void (*locked)(void *arg), void *arg)
{
	pthread_mutex_lock(&l->compile_lock);
	pthread_mutex_lock(&l->lock);
	if (locked)
		locked(arg);
	l->active = true;
	pthread_mutex_unlock(&l->lock);
	pthread_mutex_unlock(&l->compile_lock);
}

void istio_latest_stop(struct istio_latest *l, void (*locked)(void *arg), void *arg)
{
	void *old;

	pthread_mutex_lock(&l->compile_lock);
	pthread_mutex_lock(&l->lock);
	l->active = false;
	old = l->set;
	l->set = NULL;
	l->gen = 0;
	if (locked)
		locked(arg);
	pthread_mutex_unlock(&l->lock);
	pthread_mutex_unlock(&l->compile_lock);
	if (old)
		l->unref(old);
}

int istio_latest_compile(struct istio_latest *l, uint64_t gen,
			 void *(*compile)(void *prev, void *arg), void *arg, void **old)
{
	void *prev = NULL, *set, *was;
	int err = 0;

	if (old)
		*old = NULL;
	pthread_mutex_lock(&l->compile_lock);
	pthread_mutex_lock(&l->lock);
	if (!l->active)
		err = -ECANCELED;
	else if (l->set && gen < l->gen)
		err = -ESTALE;
	else if (l->set)
		l->ref(prev = l->set);
	pthread_mutex_unlock(&l->lock);
	if (err)
		goto out;
	/* what compile reads cannot change meanwhile: start and stop take compile_lock too */
	set = compile(prev, arg);
	if (prev)
		l->unref(prev);
	if (!set) {
		err = -ENOMEM;
		goto out;
	}
	pthread_mutex_lock(&l->lock);
	was = l->set;
	l->set = set;
	l->gen = gen;
	pthread_mutex_unlock(&l->lock);
	if (old)
		*old = was;
	else if (was)
		l->unref(was);
out:
	pthread_mutex_unlock(&l->compile_lock);
	return err;
}

void *istio_latest_get(struct istio_latest *l)
{
	void *s;

	pthread_mutex_lock(&l->lock);
	s = l->set;
	if (s)
		l->ref(s);
	pthread_mutex_unlock(&l->lock);
	return s;
}

bool istio_latest_active(struct istio_latest *l)
{
	bool active;

	pthread_mutex_lock(&l->lock);
	active = l->active;
	pthread_mutex_unlock(&l->lock);
	return active;
}
