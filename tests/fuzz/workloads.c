// SPDX-License-Identifier: Apache-2.0
/* Fuzzes the workloads file parser (model_parse) on arbitrary bytes; a model that parses must
 * dump (model_to_json) to JSON that parses again into the same model. */
#include "fuzz.h"

#include "agent/workloads.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	struct model *m = model_parse((const char *)data, size, err, sizeof(err));
	if (!m)
		return 0;
	json_t *j = model_to_json(m), *svc;
	size_t i;
	FUZZ_CHECK(j);
	/* endpoints are derived; drop them so the dump parses as a workloads file again */
	json_array_foreach(json_object_get(j, "services"), i, svc)
		json_object_del(svc, "endpoints");
	struct model *m2 = model_from_json(j, err, sizeof(err));
	if (!m2)
		fprintf(stderr, "re-parse of the dump failed: %s\n", err);
	FUZZ_CHECK(m2);
	FUZZ_CHECK(m2->nworkloads == m->nworkloads && m2->nservices == m->nservices &&
		   m2->nnodes == m->nnodes);
	for (int k = 0; k < m->nservices; k++) {
		FUZZ_CHECK(m2->services[k].nendpoints == m->services[k].nendpoints);
		FUZZ_CHECK(m2->services[k].nports == m->services[k].nports);
		for (int q = 0; q < m->services[k].nports; q++)	/* name, app_protocol kept */
			FUZZ_CHECK(model_port_protocol(&m2->services[k].ports[q]) ==
				   model_port_protocol(&m->services[k].ports[q]));
	}
	json_t *j2 = model_to_json(m2);
	FUZZ_CHECK(j2);
	json_array_foreach(json_object_get(j2, "services"), i, svc)
		json_object_del(svc, "endpoints");
	FUZZ_CHECK(json_equal(j, j2));
	json_decref(j2);
	json_decref(j);
	model_unref(m2);
	model_unref(m);
	return 0;
}
