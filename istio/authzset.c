// SPDX-License-Identifier: Apache-2.0
/* The newest compiled policy set of a model stream (istio/authzset.h): the compile and swap
 * the node agent's policies and the waypoint both use. */
#include "istio/authzset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int authz_latest_start(struct authz_latest *l, const char *root_ns)
{
	char *ns = strdup(root_ns ? root_ns : "istio-system");
	if (!ns)
		return -ENOMEM;
	pthread_mutex_lock(&l->compile_lock);
	pthread_mutex_lock(&l->lock);
	free(l->root_ns);
	l->root_ns = ns;
	l->active = true;
	pthread_mutex_unlock(&l->lock);
	pthread_mutex_unlock(&l->compile_lock);
	return 0;
}

void authz_latest_stop(struct authz_latest *l)
{
	struct authz_set *old;

	pthread_mutex_lock(&l->compile_lock);
	pthread_mutex_lock(&l->lock);
	l->active = false;
	old = l->set;
	l->set = NULL;
	l->gen = 0;
	free(l->root_ns);
	l->root_ns = NULL;
	pthread_mutex_unlock(&l->lock);
	pthread_mutex_unlock(&l->compile_lock);
	authz_set_unref(old);
}

int authz_latest_compile(struct authz_latest *l, const json_t *resources, uint64_t gen,
			 struct authz_set_stats *stats)
{
	struct authz_set *prev = NULL, *set, *old;
	int err = 0;

	pthread_mutex_lock(&l->compile_lock);
	pthread_mutex_lock(&l->lock);
	if (!l->active)
		err = -ECANCELED;
	else if (l->set && gen < l->gen)
		err = -ESTALE;
	else if (l->set)
		prev = authz_set_ref(l->set);
	pthread_mutex_unlock(&l->lock);
	if (err)
		goto out;
	/* root_ns cannot change meanwhile: that takes compile_lock too. */
	set = authz_compile(resources, l->root_ns, prev);
	authz_set_unref(prev);
	if (!set) {
		err = -ENOMEM;
		goto out;
	}
	if (stats)
		authz_set_stats(set, stats);
	pthread_mutex_lock(&l->lock);
	old = l->set;
	l->set = set;
	l->gen = gen;
	pthread_mutex_unlock(&l->lock);
	authz_set_unref(old);
out:
	pthread_mutex_unlock(&l->compile_lock);
	return err;
}

struct authz_set *authz_latest_get(struct authz_latest *l)
{
	struct authz_set *s = NULL;

	pthread_mutex_lock(&l->lock);
	if (l->set)
		s = authz_set_ref(l->set);
	pthread_mutex_unlock(&l->lock);
	return s;
}

bool authz_latest_active(struct authz_latest *l)
{
	bool active;

	pthread_mutex_lock(&l->lock);
	active = l->active;
	pthread_mutex_unlock(&l->lock);
	return active;
}
