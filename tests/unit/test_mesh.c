// SPDX-License-Identifier: Apache-2.0
/* Unit tests of agent/mesh.c's wait for the model (the enrollment race): which inbound CONNECTs
 * and handshakes are held, refused or served, from a model parsed out of a workloads file. The
 * .c is included to reach its statics (identity_state). */
#include "harness.h"
#include "agent/mesh.c"

#define NODE "node-2"

/* node-2 runs web-1 (enrolled, sa web), web-2 (not enrolled, sa web2); node-1 runs api-1
 * (enrolled, sa api); a pod with no node yet (sa fresh). */
static const char *const MODEL_JSON =
	"{\"nodes\":[{\"name\":\"node-1\",\"address\":\"172.30.0.11\"},"
	"{\"name\":\"node-2\",\"address\":\"172.30.0.12\"}],\"workloads\":["
	"{\"uid\":\"default/web-1\",\"name\":\"web-1\",\"namespace\":\"default\","
	"\"service_account\":\"web\",\"node\":\"node-2\",\"addresses\":[\"10.244.2.11\"],"
	"\"canonical_service\":\"web\",\"labels\":{},\"enrolled\":true,\"waypoint\":null},"
	"{\"uid\":\"default/web-2\",\"name\":\"web-2\",\"namespace\":\"default\","
	"\"service_account\":\"web2\",\"node\":\"node-2\",\"addresses\":[\"10.244.2.12\"],"
	"\"canonical_service\":\"web\",\"labels\":{},\"enrolled\":false,\"waypoint\":null},"
	"{\"uid\":\"default/api-1\",\"name\":\"api-1\",\"namespace\":\"default\","
	"\"service_account\":\"api\",\"node\":\"node-1\",\"addresses\":[\"10.244.1.11\"],"
	"\"canonical_service\":\"api\",\"labels\":{},\"enrolled\":true,\"waypoint\":null},"
	"{\"uid\":\"default/fresh-1\",\"name\":\"fresh-1\",\"namespace\":\"default\","
	"\"service_account\":\"fresh\",\"addresses\":[\"10.244.2.13\"],"
	"\"canonical_service\":\"fresh\",\"labels\":{},\"enrolled\":true,\"waypoint\":null}],"
	"\"services\":[]}";

static struct model *load(void)
{
	char err[256] = "";
	struct model *m = model_parse(MODEL_JSON, strlen(MODEL_JSON), err, sizeof(err));
	if (!m)
		fprintf(stderr, "  model: %s\n", err);
	return m;
}

static const struct model_workload *at(const struct model *m, const char *ip)
{
	struct sockaddr_storage ss;
	if (ip_parse(ip, &ss))
		abort();
	return model_workload_by_ip(m, &ss);
}

TEST(wait_decide_serves_local_enrolled_refuses_other_nodes_holds_the_rest)
{
	struct model *m = load();
	REQUIRE(m);
	/* a local enrolled pod: served at once, whatever the wait */
	CHECK_EQ_INT(mesh_wait_decide(at(m, "10.244.2.11"), NODE, true, 0, 5000, 0, 10), MESH_WAIT_SERVE);
	CHECK_EQ_INT(mesh_wait_decide(at(m, "10.244.2.11"), NODE, true, 9000, 5000, 99, 10),
		     MESH_WAIT_SERVE);
	/* another node's pod: not ours, refused at once (not worth a wait) */
	CHECK_EQ_INT(mesh_wait_decide(at(m, "10.244.1.11"), NODE, true, 0, 5000, 0, 10), MESH_WAIT_REFUSE);
	/* unknown address, this node's pod not enrolled yet, a pod with no node yet: held */
	CHECK(at(m, "10.244.2.99") == NULL);
	CHECK_EQ_INT(mesh_wait_decide(NULL, NODE, true, 0, 5000, 0, 10), MESH_WAIT_HOLD);
	CHECK_EQ_INT(mesh_wait_decide(at(m, "10.244.2.12"), NODE, true, 0, 5000, 0, 10), MESH_WAIT_HOLD);
	CHECK_EQ_INT(mesh_wait_decide(at(m, "10.244.2.13"), NODE, true, 0, 5000, 0, 10), MESH_WAIT_HOLD);
	/* ... until the wait is over */
	CHECK_EQ_INT(mesh_wait_decide(NULL, NODE, true, 4999, 5000, 0, 10), MESH_WAIT_HOLD);
	CHECK_EQ_INT(mesh_wait_decide(NULL, NODE, true, 5000, 5000, 0, 10), MESH_WAIT_REFUSE);
	/* ... or when as many are held already */
	CHECK_EQ_INT(mesh_wait_decide(NULL, NODE, true, 0, 5000, 9, 10), MESH_WAIT_HOLD);
	CHECK_EQ_INT(mesh_wait_decide(NULL, NODE, true, 0, 5000, 10, 10), MESH_WAIT_REFUSE);
	/* a local enrolled pod whose capture is not attached yet waits for it, like the rest */
	CHECK_EQ_INT(mesh_wait_decide(at(m, "10.244.2.11"), NODE, false, 0, 5000, 0, 10),
		     MESH_WAIT_HOLD);
	CHECK_EQ_INT(mesh_wait_decide(at(m, "10.244.2.11"), NODE, false, 5000, 5000, 0, 10),
		     MESH_WAIT_REFUSE);
	CHECK_EQ_INT(mesh_wait_decide(at(m, "10.244.2.11"), NODE, false, 0, 5000, 10, 10),
		     MESH_WAIT_REFUSE);
	/* model_wait_ms 0: never held (the behaviour before the wait existed) */
	CHECK_EQ_INT(mesh_wait_decide(NULL, NODE, true, 0, 0, 0, 10), MESH_WAIT_REFUSE);
	CHECK_EQ_INT(mesh_wait_decide(at(m, "10.244.2.12"), NODE, true, 0, 0, 0, 10), MESH_WAIT_REFUSE);
	model_unref(m);
}

TEST(wait_decide_follows_the_model_when_it_catches_up)
{
	struct model *m = load();
	REQUIRE(m);
	/* node-1's view of web-2 enrolled, while node-2 (this node) still has it not enrolled:
	 * held; the same pod in a model where it is enrolled here: served */
	struct model_workload w = *at(m, "10.244.2.12");
	CHECK_EQ_INT(mesh_wait_decide(&w, NODE, true, 1200, 5000, 1, 10), MESH_WAIT_HOLD);
	w.enrolled = true;
	CHECK_EQ_INT(mesh_wait_decide(&w, NODE, true, 1200, 5000, 1, 10), MESH_WAIT_SERVE);
	/* the model says it went to another node meanwhile: refused, not held on */
	w.node = "node-1";
	CHECK_EQ_INT(mesh_wait_decide(&w, NODE, true, 1200, 5000, 1, 10), MESH_WAIT_REFUSE);
	model_unref(m);
}

TEST(identity_state_for_the_handshake_wait)
{
	struct model *m = load();
	struct mesh me = { .node_name = NODE, .trust_domain = "cluster.local" };
	struct spiffe_id id;
	REQUIRE(m);
	spiffe_id_set(&id, "cluster.local", "default", "web", NULL);
	CHECK_EQ_INT(identity_state(&me, m, &id), ID_SERVED);
	spiffe_id_set(&id, "cluster.local", "default", "web2", NULL);	/* here, not enrolled */
	CHECK_EQ_INT(identity_state(&me, m, &id), ID_MAY_COME);
	spiffe_id_set(&id, "cluster.local", "default", "fresh", NULL);	/* no node yet */
	CHECK_EQ_INT(identity_state(&me, m, &id), ID_MAY_COME);
	spiffe_id_set(&id, "cluster.local", "default", "newcomer", NULL);	/* nobody has it */
	CHECK_EQ_INT(identity_state(&me, m, &id), ID_MAY_COME);
	spiffe_id_set(&id, "cluster.local", "default", "api", NULL);	/* only node-1's */
	CHECK_EQ_INT(identity_state(&me, m, &id), ID_NOT_OURS);
	model_unref(m);
}

TEST_MAIN("mesh")
