/* SPDX-License-Identifier: Apache-2.0 */
/* Istio's certificate API messages (istio.v1.auth.IstioCertificateRequest/Response, ca.proto)
 * in protobuf, for both ends: the node agent's CA client and ambit-ca. protobuf-c stays here. */
#ifndef AMBIT_CA_MSG_H
#define AMBIT_CA_MSG_H

#include <stddef.h>
#include <stdint.h>

#define CA_GRPC_PATH "/istio.v1.auth.IstioCertificateService/CreateCertificate"
/* The metadata key ztunnel sets to the SPIFFE ID it asks for on a workload's behalf. */
#define CA_IMPERSONATED_IDENTITY "ImpersonatedIdentity"
#define CA_MSG_MAX (64 * 1024)	/* bound on either message */

/* A decoded request; every string is NUL-terminated and owned (ca_request_fini). */
struct ca_request {
	char *csr;		/* "" when absent */
	size_t csr_len;
	int64_t validity_s;	/* validity_duration; 0 = not asked */
	char *impersonated;	/* metadata ImpersonatedIdentity string; NULL when absent */
};
void ca_request_fini(struct ca_request *r);

/* Encodes an IstioCertificateRequest: csr (PEM, NUL-terminated), validity_duration, and
 * metadata {ImpersonatedIdentity: impersonated} unless impersonated is NULL.
 * *out is malloc'ed. 0 or -ENOMEM / -EMSGSIZE. */
int ca_msg_request_encode(const char *csr, int64_t validity_s, const char *impersonated,
			  uint8_t **out, size_t *len);
/* Decodes one (at most CA_MSG_MAX bytes). Unknown metadata keys are ignored; an
 * ImpersonatedIdentity that is not a string is refused. 0, or -EBADMSG / -EMSGSIZE / -ENOMEM
 * with why (may be NULL) saying what. */
int ca_msg_request_decode(const uint8_t *buf, size_t len, struct ca_request *out, char *why,
			  size_t whylen);

/* Encodes an IstioCertificateResponse from a PEM chain (several certificates concatenated,
 * leaf first): one cert_chain entry per certificate, as istiod answers. *out is malloc'ed.
 * 0, -EINVAL (no certificate in it), -ENOMEM. */
int ca_msg_response_encode(const char *chain_pem, size_t len, uint8_t **out, size_t *outlen);
/* Decodes one: the cert_chain entries joined with newlines into *chain_pem (malloc'ed,
 * NUL-terminated, *pem_len without the NUL), *ncerts entries. 0, -EBADMSG (undecodable or no
 * entry), -EMSGSIZE, -ENOMEM. */
int ca_msg_response_decode(const uint8_t *buf, size_t len, char **chain_pem, size_t *pem_len,
			   size_t *ncerts);

#endif
