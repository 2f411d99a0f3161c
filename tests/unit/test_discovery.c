// SPDX-License-Identifier: Apache-2.0
/* File discovery: the first load, re-reading on change (in place and by atomic rename, as a
 * ConfigMap update does), refusing an invalid file with a precise error while keeping the
 * last good model, surviving the file's removal, and a bad file at start. */
#include "harness.h"
#include "agent/discovery.h"
#include "agent/workloads.h"

#include <stdio.h>
#include <unistd.h>

static char dir[64], path[96];

static void put(const char *text)
{
	char tmp[128];
	snprintf(tmp, sizeof(tmp), "%s/.tmp", dir);
	FILE *f = fopen(tmp, "w");
	if (!f || fputs(text, f) < 0 || fclose(f))
		abort();
	if (rename(tmp, path))	/* atomic, as a ConfigMap symlink swap */
		abort();
}

static int workloads_now(void)
{
	struct model *m = model_current();
	int n = m->nworkloads;
	model_unref(m);
	return n;
}

static bool wait_workloads(int n)
{
	for (int i = 0; i < 300; i++) {
		if (workloads_now() == n)
			return true;
		usleep(10000);
	}
	return false;
}

static const char one[] = "{\"workloads\":[{\"name\":\"a\",\"namespace\":\"d\",\"addresses\":[\"10.0.0.1\"]}]}";
static const char two[] = "{\"workloads\":[{\"name\":\"a\",\"namespace\":\"d\",\"addresses\":[\"10.0.0.1\"]},"
			  "{\"name\":\"b\",\"namespace\":\"d\",\"addresses\":[\"10.0.0.2\"]}]}";

TEST(reload_keep_last_good)
{
	char err[256];
	strcpy(dir, "/tmp/ambit-disc-XXXXXX");
	REQUIRE(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/workloads.json", dir);
	put(one);
	struct discovery_file *d = discovery_file_start(path, 20, err, sizeof(err));
	REQUIRE(d != NULL);
	CHECK_EQ_INT(workloads_now(), 1);

	put(two);
	CHECK(wait_workloads(2));			/* re-read on change */

	put("{\"workloads\":[{\"name\":\"c\",\"namespace\":\"d\",\"addresses\":[\"10.0.0.300\"]}]}");
	usleep(200000);
	CHECK_EQ_INT(workloads_now(), 2);		/* refused: the last good state stays */
	json_t *st = discovery_file_status(d);
	const char *le = json_string_value(json_object_get(st, "last_error"));
	CHECK(le && strstr(le, "workloads[0].addresses[0]: '10.0.0.300' is not an IP address"));
	CHECK(json_integer_value(json_object_get(st, "errors")) >= 1);
	json_decref(st);

	unlink(path);
	usleep(200000);
	CHECK_EQ_INT(workloads_now(), 2);		/* gone: still the last good state */

	put(one);
	CHECK(wait_workloads(1));			/* back */
	st = discovery_file_status(d);
	CHECK(json_object_get(st, "last_error") == NULL || json_is_null(json_object_get(st, "last_error")));
	json_decref(st);
	discovery_file_stop(d);
	unlink(path);
	rmdir(dir);
}

TEST(bad_file_at_start_is_a_precise_error)
{
	char err[256];
	strcpy(dir, "/tmp/ambit-disc-XXXXXX");
	REQUIRE(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/workloads.json", dir);
	put("{\"workloads\": [ {\"name\": \"a\" ");
	struct discovery_file *d = discovery_file_start(path, 20, err, sizeof(err));
	CHECK(d == NULL);
	CHECK(strstr(err, path) != NULL && strstr(err, "line 1") != NULL);
	d = discovery_file_start("/nonexistent/workloads.json", 20, err, sizeof(err));
	CHECK(d == NULL);
	CHECK(strstr(err, "No such file") != NULL);
	unlink(path);
	rmdir(dir);
}

TEST_MAIN("discovery")
