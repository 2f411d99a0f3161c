// SPDX-License-Identifier: Apache-2.0
/* Fuzzes the Kubernetes watch-stream parser (watch_on_data / watch_line, static in
 * agent/kube.c, hence included as the unit tests do): the stream arrives in random chunks,
 * then the store is turned into workloads JSON and a model as the builder would.
 * Input: resource byte (pods, services, namespaces, nodes), split seed, stream. */
#include "fuzz.h"

#include "agent/kube.c"

static struct kube_discovery fkd = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
	.tok_lock = PTHREAD_MUTEX_INITIALIZER,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kres *r;
	uint32_t seed;
	char err[256];

	if (size < 2)
		return 0;
	r = &fkd.res[data[0] % KUBE_RES_COUNT];
	*r = (struct kres){ .kd = &fkd, .id = data[0] % KUBE_RES_COUNT };
	seed = 0x9e3779b9u * (data[1] + 1u);
	data += 2;
	size -= 2;
	for (size_t off = 0; off < size;) {
		seed ^= seed << 13;
		seed ^= seed >> 17;
		seed ^= seed << 5;
		size_t n = 1 + seed % (size - off);
		if (watch_on_data((const char *)data + off, n, r))
			break;
		off += n;
	}
	FUZZ_CHECK(r->abort != WATCH_STOP);
	FUZZ_CHECK(r->store.n == r->st.objects || r->st.events == 0);

	json_t *j = build_json(&fkd);
	FUZZ_CHECK(j);
	model_unref(model_from_json(j, err, sizeof(err)));
	json_decref(j);

	kmap_clear(r->id, &r->store);
	free(r->line);
	*r = (struct kres){ 0 };
	return 0;
}
