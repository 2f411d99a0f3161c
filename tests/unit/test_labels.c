// SPDX-License-Identifier: Apache-2.0
/* common/labels: building label arrays (labels_add), lookup and matchLabels selection. */
#include "common/labels.h"
#include "harness.h"

TEST(add_get_subset)
{
	struct label *l = calloc(3, sizeof(*l)), *sel = calloc(1, sizeof(*sel));
	char key[] = "app", value[] = "api";
	int n = 0, nsel = 0;

	REQUIRE(l && sel);
	CHECK_EQ_INT(labels_add(l, &n, key, value), 0);
	CHECK_EQ_INT(labels_add(l, &n, "version", "v1"), 0);
	CHECK_EQ_INT(n, 2);
	/* copies: the caller's strings may go */
	key[0] = value[0] = 'X';
	CHECK_EQ_STR(labels_get(l, n, "app"), "api");
	CHECK_EQ_STR(labels_get(l, n, "version"), "v1");
	CHECK(!labels_get(l, n, "Xpp"));
	CHECK_EQ_INT(labels_add(sel, &nsel, "version", "v1"), 0);
	CHECK(labels_subset(sel, nsel, l, n));
	CHECK(!labels_subset(l, n, sel, nsel));
	labels_free(l, n);
	labels_free(sel, nsel);
	labels_free(NULL, 0);
}

TEST_MAIN("labels")
