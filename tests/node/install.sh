#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the npm packages the tests use as independent implementations (OTLP decoding,
# gRPC server, Kubernetes schema validation) into tests/node/node_modules, once.
set -euo pipefail
cd "$(dirname "$0")"
[ -f package.json ] || exit 0
if [ -d node_modules ] && [ node_modules/.stamp -nt package.json ]; then
	exit 0
fi
npm install --no-audit --no-fund --loglevel=error >/dev/null
touch node_modules/.stamp
