# SPDX-License-Identifier: Apache-2.0
# tests/lab/container.sh: the container engine for the image tests (source it after lib.sh).
# Sets up podman to run containers here, with this kind of machine's workarounds kept
# out of the Makefile: podman with runc and cgroupfs (crun's setrlimit and hybrid-cgroup
# failures), no default ulimits, host networking for builds; and a debian:12 base image made
# locally with mmdebstrap, since no registry may be reachable (kept in the engine's storage, so
# it is made once per machine; its build cache stays there too: `podman image prune` frees it).
# shellcheck shell=bash

CONTAINER_CACHE=${AMBIT_CONTAINER_CACHE:-/var/tmp/ambit-image}
CONTAINER_LOCK=$CONTAINER_CACHE/lock
ENGINE=""

# container_engine_init: sets ENGINE and, for runc, CONTAINERS_CONF. The lab needs podman: its
# `--network ns:PATH` joins a lab node's named network namespace, which docker cannot do.
# Returns 2, with CONTAINER_WHY set, when there is no podman (a skip), 1 when podman is there but
# cannot run (a failure).
container_engine_init() {
	mkdir -p "$CONTAINER_CACHE"
	if ! command -v podman >/dev/null 2>&1; then
		CONTAINER_WHY="podman is not installed (mk/packages.txt lists it: make deps)"
		return 2
	fi
	ENGINE=podman
	if command -v runc >/dev/null 2>&1; then
		# Written aside and renamed: a concurrent run may be reading it.
		cat >"$CONTAINER_CACHE/containers.conf.$$" <<-'CONF'
		[containers]
		default_ulimits = []
		netns = "host"
		[engine]
		runtime = "runc"
		cgroup_manager = "cgroupfs"
		CONF
		mv "$CONTAINER_CACHE/containers.conf.$$" "$CONTAINER_CACHE/containers.conf"
		export CONTAINERS_CONF=$CONTAINER_CACHE/containers.conf
	fi
	if ! CONTAINER_WHY=$(podman info 2>&1 >/dev/null); then
		CONTAINER_WHY="podman info fails: $(printf '%s\n' "$CONTAINER_WHY" | tail -n 1)"
		return 1
	fi
	export ENGINE
}

# container_base_image: debian:12 for deploy/Dockerfile's build stage (the runtime stage is
# FROM scratch). Present: nothing to do; else made with mmdebstrap from the Debian mirror (no
# registry needs to be reachable), else pulled.
container_base_image() {
	local ref=docker.io/library/debian:12 tar rc
	$ENGINE image inspect "$ref" >/dev/null 2>&1 && return 0
	if ! command -v mmdebstrap >/dev/null 2>&1; then
		$ENGINE pull -q "$ref" >/dev/null
		return
	fi
	tar=$CONTAINER_CACHE/base.tar
	echo "# making the debian:12 base image with mmdebstrap (once per machine)" >&2
	mmdebstrap --quiet --variant=minbase bookworm "$tar" >&2 &&
		$ENGINE import -q "$tar" "$ref" >/dev/null
	rc=$?
	rm -f "$tar"
	return "$rc"
}

# container_build IMAGE: the base image, then `make image` with this engine, under a lock (other
# runs share the base and the build cache).
container_build() {
	(
		flock 9
		container_base_image &&
			make -C "$LAB_TOP" --no-print-directory image CONTAINER_ENGINE="$ENGINE" IMAGE="$1"
	) 9>"$CONTAINER_LOCK"
}
