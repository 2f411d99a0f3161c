/* SPDX-License-Identifier: Apache-2.0 */
/* struct tls_cert: one workload's credentials (leaf certificate, private key, chain to the
 * mesh root), immutable and refcounted, so renewal never pulls a cert from a live connection. */
#ifndef AMBIT_TLS_CERT_H
#define AMBIT_TLS_CERT_H

#include <stddef.h>
#include <stdint.h>

#include "tls/identity.h"

struct tls_cert;

/* 128-bit serial as 32 lower-case hex digits (longer serials are shown in full up to 40). */
#define TLS_SERIAL_HEX_MAX 41

/* Loads a leaf (first PEM block of cert_path, further blocks are its chain) and its key.
 * The leaf must carry one SPIFFE URI SAN. NULL + errno; err (may be NULL) gets one line
 * naming the file and the problem. The caller owns the single reference. */
struct tls_cert *tls_cert_load(const char *cert_path, const char *key_path, char *err,
			       size_t errlen);

/* Takes one more reference (thread-safe); returns c. */
struct tls_cert *tls_cert_ref(struct tls_cert *c);
/* Drops a reference; the last one wipes and frees the key. Accepts NULL. Thread-safe. */
void tls_cert_unref(struct tls_cert *c);

/* Accessors; the cert owns the results, valid while the caller holds a reference. */
const struct spiffe_id *tls_cert_id(const struct tls_cert *c);
const char *tls_cert_serial_hex(const struct tls_cert *c);
/* Validity in Unix seconds. */
int64_t tls_cert_not_before(const struct tls_cert *c);
int64_t tls_cert_not_after(const struct tls_cert *c);
/* When the cert was issued (not_before plus the backdating); renewal is due at
 * issued + (not_after - issued) / 2. */
int64_t tls_cert_issued_at(const struct tls_cert *c);

/* PEM of the leaf and chain (public parts only, never the key) into buf, NUL-terminated.
 * Returns the length, or -ENOSPC / -ENOMEM. For the admin API's certificate dump. */
int tls_cert_chain_pem(const struct tls_cert *c, char *buf, size_t len);

#endif
