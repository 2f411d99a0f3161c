// SPDX-License-Identifier: Apache-2.0
/* File discovery: polls the workloads file's identity (device, inode, size, mtime), which
 * also catches the symlink swap a Kubernetes ConfigMap update makes, and republishes. */
#include "agent/discovery.h"
#include "agent/workloads.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define DISCOVERY_MAX_FILE (256u << 20)

struct discovery_file {
	char *path;
	uint32_t poll_ms;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	struct stat last;	/* identity of the last file read (good or bad) */
	uint64_t loads, errors;
	char last_error[512];
	uint64_t last_load_unix_ms;
};

/* Reads, parses and publishes. 0 or -errno with err set. */
static int load(struct discovery_file *d, char *err, size_t errlen)
{
	size_t len;
	char perr[400];
	char *text = read_file_bounded(d->path, DISCOVERY_MAX_FILE, &len);
	struct model *m;

	if (!text) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", d->path,
			 e == EFBIG ? "larger than 256 MiB" : strerror(e));
		return -e;
	}
	m = model_parse(text, len, perr, sizeof(perr));
	free(text);
	if (!m) {
		snprintf(err, errlen, "%s: %s", d->path, perr);
		return -EINVAL;
	}
	pr_info("workloads: loaded %s: %d nodes, %d workloads, %d services", d->path, m->nnodes,
		m->nworkloads, m->nservices);
	model_publish(m);
	return 0;
}

static void check(struct discovery_file *d)
{
	struct stat st;
	char err[512];
	int rc;

	if (stat(d->path, &st) == -1) {
		if (d->last.st_ino != 0 || d->loads == 0) {
			snprintf(err, sizeof(err), "%s: %s", d->path, strerror(errno));
			pthread_mutex_lock(&d->lock);
			if (strcmp(err, d->last_error) != 0)
				pr_warn("workloads: %s; keeping the last good state", err);
			snprintf(d->last_error, sizeof(d->last_error), "%s", err);
			pthread_mutex_unlock(&d->lock);
			memset(&d->last, 0, sizeof(d->last));
		}
		return;
	}
	if (stat_same_file(&st, &d->last))
		return;
	rc = load(d, err, sizeof(err));
	pthread_mutex_lock(&d->lock);
	d->last = st;
	if (rc) {
		d->errors++;
		snprintf(d->last_error, sizeof(d->last_error), "%s", err);
		pr_err("workloads: refusing %s; keeping the last good state", err);
	} else {
		d->loads++;
		d->last_error[0] = '\0';
		d->last_load_unix_ms = now_real_ns() / 1000000;
	}
	pthread_mutex_unlock(&d->lock);
}

static void *watch(void *arg)
{
	struct discovery_file *d = arg;
	pthread_mutex_lock(&d->lock);
	while (!d->stop) {
		struct timespec ts = timespec_after_ms(CLOCK_MONOTONIC, d->poll_ms);
		pthread_cond_timedwait(&d->cond, &d->lock, &ts);
		if (d->stop)
			break;
		pthread_mutex_unlock(&d->lock);
		check(d);
		pthread_mutex_lock(&d->lock);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

struct discovery_file *discovery_file_start(const char *path, uint32_t poll_ms, char *err,
					    size_t errlen)
{
	struct discovery_file *d = calloc(1, sizeof(*d));
	pthread_condattr_t ca;
	int rc;

	if (!d || !(d->path = strdup(path))) {
		free(d);
		snprintf(err, errlen, "out of memory");
		errno = ENOMEM;
		return NULL;
	}
	d->poll_ms = poll_ms ? poll_ms : 1000;
	pthread_mutex_init(&d->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&d->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (stat(path, &d->last) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		rc = -errno;
		goto fail;
	}
	rc = load(d, err, errlen);
	if (rc)
		goto fail;
	d->loads = 1;
	d->last_load_unix_ms = now_real_ns() / 1000000;
	rc = -pthread_create(&d->thread, NULL, watch, d);
	if (rc) {
		snprintf(err, errlen, "cannot start the discovery thread: %s", strerror(-rc));
		goto fail;
	}
	return d;
fail:
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->lock);
	free(d->path);
	free(d);
	errno = -rc;
	return NULL;
}

void discovery_file_stop(struct discovery_file *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	d->stop = true;
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&d->lock);
	pthread_join(d->thread, NULL);
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->lock);
	free(d->path);
	free(d);
}

json_t *discovery_file_status(struct discovery_file *d)
{
	json_t *j;
	pthread_mutex_lock(&d->lock);
	j = json_pack("{s:s,s:s,s:I,s:I,s:I,s:s?}", "source", "file", "path", d->path, "loads",
		      (json_int_t)d->loads, "errors", (json_int_t)d->errors, "last_load_unix_ms",
		      (json_int_t)d->last_load_unix_ms, "last_error",
		      d->last_error[0] ? d->last_error : NULL);
	pthread_mutex_unlock(&d->lock);
	return j;
}
