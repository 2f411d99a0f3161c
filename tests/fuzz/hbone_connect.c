// SPDX-License-Identifier: Apache-2.0
/* Fuzzes what the agent reads from an inbound HBONE CONNECT's headers before it dials anything:
 * the :authority (sockaddr_parse, common/util.h, as agent/hbone.c's server_request parses it)
 * and the `forwarded: for=IP` that names the client (mesh_vouched_source, agent/mesh.h).
 * Input: "AUTHORITY\0FORWARDED". An accepted authority is IP:PORT with a port of digits only,
 * and formats back to an address that parses equal; a vouched source is a workload of the
 * model whose identity is the peer's and whose addresses hold the source IP. */
#include "fuzz.h"

#include <arpa/inet.h>

#include "agent/hbone.h"
#include "agent/mesh.h"
#include "agent/workloads.h"
#include "common/util.h"
#include "tls/identity.h"

/* Two workloads with the peer's identity (ns/sa) and one with another. */
static const char model_json[] =
	"{\"workloads\":["
	"{\"name\":\"a\",\"namespace\":\"ns\",\"service_account\":\"sa\",\"node\":\"n1\","
	"\"addresses\":[\"10.0.0.1\",\"fd00::1\"],\"enrolled\":true},"
	"{\"name\":\"b\",\"namespace\":\"ns\",\"service_account\":\"sa\",\"node\":\"n1\","
	"\"addresses\":[\"10.0.0.2\"],\"enrolled\":true},"
	"{\"name\":\"c\",\"namespace\":\"other\",\"service_account\":\"sa\",\"node\":\"n1\","
	"\"addresses\":[\"10.0.0.3\"],\"enrolled\":true}],"
	"\"nodes\":[{\"name\":\"n1\",\"address\":\"10.0.1.1\"}],\"services\":[]}";

static struct model *model;
static struct spiffe_id peer_id;

/* The port text of an accepted authority: after "]:" or after the one ':' of an IPv4 form. */
static const char *port_text(const char *s)
{
	const char *c = s[0] == '[' ? strstr(s, "]:") : strchr(s, ':');

	if (!c)
		return NULL;
	return s[0] == '[' ? c + 2 : (strchr(c + 1, ':') ? NULL : c + 1);
}

static void check_authority(const char *a)
{
	struct sockaddr_storage ss, again;
	char buf[ADDR_STR_LEN];
	const char *port;

	if (sockaddr_parse(a, 0, &ss))
		return;
	port = port_text(a);
	if (port) {	/* 1 to 5 digits, nothing else (no sign, space or 0x) */
		size_t n = strspn(port, "0123456789");
		FUZZ_CHECK(n >= 1 && n <= 5 && port[n] == '\0');
	}
	sockaddr_str(&ss, buf, sizeof(buf));
	FUZZ_CHECK(sockaddr_parse(buf, 0, &again) == 0);
	FUZZ_CHECK(sockaddr_ip_equal(&ss, &again) && sockaddr_port(&ss) == sockaddr_port(&again));
}

static void check_forwarded(const char *fwd)
{
	struct hbone_inbound req;
	struct sockaddr_storage src;
	struct spiffe_id id;
	const struct model_workload *w;
	bool has = false;

	memset(&req, 0, sizeof(req));
	req.forwarded = fwd;
	req.peer_id = &peer_id;
	FUZZ_CHECK(sockaddr_parse("10.0.1.9:40000", 0, &req.peer_addr) == 0);
	w = mesh_vouched_source(model, "cluster.local", &req, &src);
	if (!w)
		return;
	FUZZ_CHECK(mesh_workload_id("cluster.local", w, &id) == 0 && spiffe_id_equal(&id, &peer_id));
	for (int i = 0; i < w->naddrs; i++)
		has = has || sockaddr_ip_equal(&w->addrs[i], &src);
	FUZZ_CHECK(has);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_str(data, size);
	size_t al = strlen(s);
	const char *fwd = al < size ? s + al + 1 : NULL;
	char err[256];

	if (!model) {	/* once: the model is read-only here */
		model = model_parse(model_json, sizeof(model_json) - 1, err, sizeof(err));
		FUZZ_CHECK(model);
		FUZZ_CHECK(spiffe_id_parse("spiffe://cluster.local/ns/ns/sa/sa", &peer_id, NULL) == 0);
	}
	check_authority(s);
	check_forwarded(fwd);
	free(s);
	return 0;
}
