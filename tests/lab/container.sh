# SPDX-License-Identifier: Apache-2.0
# tests/lab/container.sh: the container engine for the image tests (source it after lib.sh).
# Picks an engine that can run containers here, with this kind of machine's workarounds kept
# out of the Makefile: podman with runc and cgroupfs (crun's setrlimit and hybrid-cgroup
# failures), no default ulimits, host networking for builds; and a debian:12 base image made
# locally with mmdebstrap when no registry has one (kept in the engine's storage, so it is
# made once per machine).
# shellcheck shell=bash

CONTAINER_CACHE=${AMBIT_CONTAINER_CACHE:-/var/tmp/ambit-image}
CONTAINER_LOCK=$CONTAINER_CACHE/lock
ENGINE=""

# container_engine_init: sets ENGINE (podman or docker) and, for podman, CONTAINERS_CONF.
# Non-zero, with CONTAINER_WHY set, when no engine can run containers here.
container_engine_init() {
	mkdir -p "$CONTAINER_CACHE"
	if command -v podman >/dev/null 2>&1; then
		ENGINE=podman
		if command -v runc >/dev/null 2>&1; then
			cat >"$CONTAINER_CACHE/containers.conf" <<-'CONF'
			[containers]
			default_ulimits = []
			netns = "host"
			[engine]
			runtime = "runc"
			cgroup_manager = "cgroupfs"
			CONF
			export CONTAINERS_CONF=$CONTAINER_CACHE/containers.conf
		fi
		podman info >/dev/null 2>&1 || { CONTAINER_WHY="podman info fails"; return 1; }
	elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
		ENGINE=docker
	else
		CONTAINER_WHY="neither podman nor a docker daemon is available"
		return 1
	fi
	export ENGINE
}

# container_base_image: debian:12 and debian:12-slim for deploy/Dockerfile. Present: nothing to
# do; else pulled, else (podman) made with mmdebstrap from the Debian mirror apt uses.
container_base_image() {
	local ref=docker.io/library/debian tar
	if $ENGINE image inspect "$ref:12" >/dev/null 2>&1 &&
		$ENGINE image inspect "$ref:12-slim" >/dev/null 2>&1; then
		return 0
	fi
	if $ENGINE pull -q "$ref:12" >/dev/null 2>&1 && $ENGINE pull -q "$ref:12-slim" >/dev/null 2>&1; then
		return 0
	fi
	command -v mmdebstrap >/dev/null 2>&1 || { echo "# no debian:12 image and no mmdebstrap" >&2; return 1; }
	tar=$CONTAINER_CACHE/base.tar
	echo "# making the debian:12 base image with mmdebstrap (once per machine)" >&2
	mmdebstrap --quiet --variant=minbase bookworm "$tar" >&2 &&
		$ENGINE import -q "$tar" "$ref:12" >/dev/null &&
		$ENGINE tag "$ref:12" "$ref:12-slim"
	local rc=$?
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
