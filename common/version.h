/* SPDX-License-Identifier: Apache-2.0 */
/* The version strings every binary reports (--version, the admin API, OTLP's resource and
 * scope, gRPC's user-agent). The Makefile defines them from VERSION and git; these are the
 * fallbacks for a compile without it (a fuzz target, a compiler run by hand). */
#ifndef AMBIT_COMMON_VERSION_H
#define AMBIT_COMMON_VERSION_H

#ifndef AMBIT_VERSION
#define AMBIT_VERSION "0.0.0"
#endif
#ifndef AMBIT_GIT_REV
#define AMBIT_GIT_REV "unknown"
#endif

#endif
