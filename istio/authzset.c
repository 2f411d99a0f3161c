// SPDX-License-Identifier: Apache-2.0
/* The newest compiled policy set of a model stream (istio/authzset.h): the compile the node
 * agent's policies and the waypoint both use, on istio/latest. */
#include "istio/authzset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* istio_latest's reference counting of struct authz_set (AUTHZ_LATEST_INIT) */
void authz_latest_ref_(void *set)
{
	authz_set_ref(set);
}

void authz_latest_unref_(void *set)
{
	authz_set_unref(set);
}

struct root_ns_swap {
	struct authz_latest *l;
	char *ns;		/* the new root namespace (taken), or NULL */
};

/* Under both locks: the root namespace compiles read changes. */
static void root_ns_set(void *arg)
{
	struct root_ns_swap *sw = arg;
	free(sw->l->root_ns);
	sw->l->root_ns = sw->ns;
}

int authz_latest_start(struct authz_latest *l, const char *root_ns)
{
	struct root_ns_swap sw = { .l = l, .ns = strdup(root_ns ? root_ns : "istio-system") };
	if (!sw.ns)
		return -ENOMEM;
	istio_latest_start(&l->base, root_ns_set, &sw);
	return 0;
}

void authz_latest_stop(struct authz_latest *l)
{
	struct root_ns_swap sw = { .l = l };
	istio_latest_stop(&l->base, root_ns_set, &sw);
}

struct authz_compile_arg {
	struct authz_latest *l;
	const json_t *resources;
	struct authz_set_stats *stats;
};

static void *compile_set(void *prev, void *arg)
{
	struct authz_compile_arg *a = arg;
	/* root_ns cannot change meanwhile: that takes compile_lock too. */
	struct authz_set *set = authz_compile(a->resources, a->l->root_ns, prev);
	if (set && a->stats)
		authz_set_stats(set, a->stats);
	return set;
}

int authz_latest_compile(struct authz_latest *l, const json_t *resources, uint64_t gen,
			 struct authz_set_stats *stats)
{
	struct authz_compile_arg a = { .l = l, .resources = resources, .stats = stats };
	return istio_latest_compile(&l->base, gen, compile_set, &a, NULL);
}

struct authz_set *authz_latest_get(struct authz_latest *l)
{
	return istio_latest_get(&l->base);
}

bool authz_latest_active(struct authz_latest *l)
{
	return istio_latest_active(&l->base);
}
