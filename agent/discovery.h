/* SPDX-License-Identifier: Apache-2.0 */
/* Discovery from a workloads file (discovery.source = file): a thread re-reads the file when
 * it changes and publishes the model; an invalid file is refused with a precise error and the
 * last good model stays. (Kubernetes discovery lives in agent/kube.c.) */
#ifndef AMBIT_AGENT_DISCOVERY_H
#define AMBIT_AGENT_DISCOVERY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct discovery_file;

/* Loads the file once synchronously (an error here is returned, the agent decides whether to
 * start without a model), then watches it every poll_ms. NULL + errno; err filled. */
struct discovery_file *discovery_file_start(const char *path, uint32_t poll_ms, char *err,
					    size_t errlen);
void discovery_file_stop(struct discovery_file *d);
/* Status for the admin API: path, loads, errors, last error. New reference. */
json_t *discovery_file_status(struct discovery_file *d);

#endif
