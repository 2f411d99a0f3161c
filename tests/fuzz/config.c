// SPDX-License-Identifier: Apache-2.0
/* Fuzzes config_load (agent/config.h) for both roles: the input is written to a memfd and
 * loaded through its /proc/self/fd path, then validated and dumped. */
#include "fuzz.h"

#include "agent/config.h"

#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum config_role role = CONFIG_ROLE_AGENT;
	struct config c;
	char path[64], err[512];
	int fd;

	if (size && data[0] == 'W') {	/* 'W' picks the waypoint role (the rest is the file) */
		role = CONFIG_ROLE_WAYPOINT;
		data++;
		size--;
	}
	fd = memfd_create("fuzz-config", MFD_CLOEXEC);
	FUZZ_CHECK(fd != -1);
	FUZZ_CHECK(write(fd, data, size) == (ssize_t)size);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	FUZZ_CHECK(config_init(&c, role) == 0);
	err[0] = '\0';
	if (config_load(&c, role, path, err, sizeof(err)) == 0) {
		config_validate(&c, role, err, sizeof(err));
		json_t *j = config_to_json(&c);
		FUZZ_CHECK(j);
		json_decref(j);
	} else {
		FUZZ_CHECK(err[0]);	/* every refusal says why */
	}
	config_fini(&c);
	close(fd);
	return 0;
}
