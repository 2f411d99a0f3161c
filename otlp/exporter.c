// SPDX-License-Identifier: Apache-2.0
/* Picks the OTLP exporter the configuration asks for (protocol, endpoint, headers). */
#include "otlp/exporter.h"

#include <errno.h>
#include <stdio.h>

#include "otlp/config.h"

struct otlp_exporter *otlp_exporter_new(const struct otlp_config *cfg, char *err, size_t errlen)
{
	char url[1024];

	if (otlp_config_traces_url(cfg, url, sizeof(url))) {
		snprintf(err, errlen, "OTLP endpoint too long");
		errno = EINVAL;
		return NULL;
	}
	struct otlp_exporter_tls tls = {
		.ca_file = cfg->ca_file, .client_cert = cfg->client_cert, .client_key = cfg->client_key,
	};
	if (cfg->protocol == OTLP_PROTO_HTTP_PROTOBUF)
		return export_http_new(url, cfg->headers, cfg->nheaders, &tls, err, errlen);
	return export_grpc_new(url, cfg->headers, cfg->nheaders, &tls, err, errlen);
}

void otlp_exporter_free(struct otlp_exporter *ex)
{
	if (ex && ex->ops->free)
		ex->ops->free(ex);
}
