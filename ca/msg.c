// SPDX-License-Identifier: Apache-2.0
/* IstioCertificateRequest/Response with protobuf-c (generated from ca/proto into build/ca/pb):
 * the wire form of the certificate API for ca/client.c and the ambit-ca server. */
#include "ca/msg.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "security/v1alpha1/ca.pb-c.h"

#define PEM_END "-----END CERTIFICATE-----"
#define CHAIN_MAX 16

static int whyf(char *why, size_t len, int e, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int whyf(char *why, size_t len, int e, const char *fmt, ...)
{
	va_list ap;

	if (why && len) {
		va_start(ap, fmt);
		vsnprintf(why, len, fmt, ap);
		va_end(ap);
	}
	return -e;
}

void ca_request_fini(struct ca_request *r)
{
	if (!r)
		return;
	free(r->csr);
	free(r->impersonated);
	memset(r, 0, sizeof(*r));
}

int ca_msg_request_encode(const char *csr, int64_t validity_s, const char *impersonated,
			  uint8_t **out, size_t *len)
{
	Istio__V1__Auth__IstioCertificateRequest req = ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;
	Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
	Google__Protobuf__Struct__FieldsEntry entry = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	Google__Protobuf__Struct__FieldsEntry *entries[1] = { &entry };
	Google__Protobuf__Value val = GOOGLE__PROTOBUF__VALUE__INIT;

	req.csr = (char *)csr;
	req.validity_duration = validity_s;
	if (impersonated) {
		val.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
		val.string_value = (char *)impersonated;
		entry.key = (char *)CA_IMPERSONATED_IDENTITY;
		entry.value = &val;
		md.n_fields = 1;
		md.fields = entries;
		req.metadata = &md;
	}
	*len = istio__v1__auth__istio_certificate_request__get_packed_size(&req);
	if (*len > CA_MSG_MAX)
		return -EMSGSIZE;
	if (!(*out = malloc(*len ? *len : 1)))
		return -ENOMEM;
	istio__v1__auth__istio_certificate_request__pack(&req, *out);
	return 0;
}

int ca_msg_request_decode(const uint8_t *buf, size_t len, struct ca_request *out, char *why,
			  size_t whylen)
{
	Istio__V1__Auth__IstioCertificateRequest *req;
	int err = 0;

	memset(out, 0, sizeof(*out));
	if (len > CA_MSG_MAX)
		return whyf(why, whylen, EMSGSIZE, "request of %zu bytes", len);
	if (!(req = istio__v1__auth__istio_certificate_request__unpack(NULL, len, buf)))
		return whyf(why, whylen, EBADMSG, "undecodable IstioCertificateRequest");
	out->validity_s = req->validity_duration;
	out->csr_len = req->csr ? strlen(req->csr) : 0;
	if (!(out->csr = strdup(req->csr ? req->csr : ""))) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; req->metadata && i < req->metadata->n_fields; i++) {
		const Google__Protobuf__Struct__FieldsEntry *e = req->metadata->fields[i];
		if (!e->key || strcmp(e->key, CA_IMPERSONATED_IDENTITY) != 0)
			continue;
		if (!e->value || e->value->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE) {
			err = whyf(why, whylen, EBADMSG, "metadata %s is not a string",
				   CA_IMPERSONATED_IDENTITY);
			goto out;
		}
		free(out->impersonated);	/* a map keeps the last of repeated keys */
		if (!(out->impersonated = strdup(e->value->string_value))) {
			err = -ENOMEM;
			goto out;
		}
	}
out:
	istio__v1__auth__istio_certificate_request__free_unpacked(req, NULL);
	if (err)
		ca_request_fini(out);
	return err;
}

int ca_msg_response_encode(const char *chain_pem, size_t len, uint8_t **out, size_t *outlen)
{
	Istio__V1__Auth__IstioCertificateResponse resp = ISTIO__V1__AUTH__ISTIO_CERTIFICATE_RESPONSE__INIT;
	char *certs[CHAIN_MAX];
	size_t n = 0, off = 0;
	int err = 0;

	while (off < len && n < CHAIN_MAX) {
		const char *end = memmem(chain_pem + off, len - off, PEM_END, strlen(PEM_END));
		if (!end)
			break;
		size_t stop = (size_t)(end - chain_pem) + strlen(PEM_END);
		if (stop < len && chain_pem[stop] == '\n')
			stop++;
		if (!(certs[n] = strndup(chain_pem + off, stop - off))) {
			err = -ENOMEM;
			goto out;
		}
		n++;
		off = stop;
	}
	if (!n)
		return -EINVAL;
	resp.n_cert_chain = n;
	resp.cert_chain = certs;
	*outlen = istio__v1__auth__istio_certificate_response__get_packed_size(&resp);
	if (!(*out = malloc(*outlen))) {
		err = -ENOMEM;
		goto out;
	}
	istio__v1__auth__istio_certificate_response__pack(&resp, *out);
out:
	for (size_t i = 0; i < n; i++)
		free(certs[i]);
	return err;
}

int ca_msg_response_decode(const uint8_t *buf, size_t len, char **chain_pem, size_t *pem_len,
			   size_t *ncerts)
{
	Istio__V1__Auth__IstioCertificateResponse *resp;
	size_t total = 1;
	int err = 0;

	*chain_pem = NULL;
	*pem_len = *ncerts = 0;
	if (len > CA_MSG_MAX)
		return -EMSGSIZE;
	if (!(resp = istio__v1__auth__istio_certificate_response__unpack(NULL, len, buf)))
		return -EBADMSG;
	if (!resp->n_cert_chain) {
		err = -EBADMSG;
		goto out;
	}
	for (size_t i = 0; i < resp->n_cert_chain; i++)
		total += strlen(resp->cert_chain[i]) + 1;
	if (!(*chain_pem = malloc(total))) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < resp->n_cert_chain; i++) {
		size_t l = strlen(resp->cert_chain[i]);
		memcpy(*chain_pem + *pem_len, resp->cert_chain[i], l);
		*pem_len += l;
		if (!l || resp->cert_chain[i][l - 1] != '\n')
			(*chain_pem)[(*pem_len)++] = '\n';
	}
	(*chain_pem)[*pem_len] = '\0';
	*ncerts = resp->n_cert_chain;
out:
	istio__v1__auth__istio_certificate_response__free_unpacked(resp, NULL);
	return err;
}
