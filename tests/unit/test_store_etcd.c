/* test_store_etcd.c — what only the etcd backend shows (the contract itself
 * is test_store.c's): etcd's request caps refused before sending, with the
 * option named; namespaces that keep deployments apart on one cluster; and
 * failover past an endpoint that does not answer.  A real etcd on loopback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_fixture.h"
#include "store.h"
#include "unit_util.h"

static char dir[512];
static store *big; /* the fixture's store (32 MiB cap, namespace "cortex/") */

static int setup(void **state)
{
	(void)state;
	cx_err err = CX_ERR_INIT;
	if (unit_tmpdir("store-etcd", dir, sizeof dir) < 0 || etcd_fixture_open(&big, dir, &err) < 0) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	store_close(big);
	etcd_fixture_stop();
	cx_rm_rf(dir);
	return 0;
}

static store *open_with(const char *endpoints, const char *ns, size_t max_req)
{
	store *s = NULL;
	cx_err err = CX_ERR_INIT;
	struct store_etcd_opts o = {.endpoints = endpoints, .ns = ns, .max_request_bytes = max_req};
	if (store_open_etcd(&s, &o, &err) < 0)
		fail_msg("opening %s: %s", endpoints, err.msg);
	return s;
}

/* etcd's default cap (1.5 MiB) and 128 ops per txn: refused before sending. */
static void test_request_caps(void **state)
{
	(void)state;
	store *s = open_with(etcd_fixture_url, NULL, 0);
	cx_err err = CX_ERR_INIT;
	size_t n = 2u << 20;
	char *v = calloc(1, n);
	assert_non_null(v);
	int64_t rev0 = 0, rev1 = 0;
	assert_int_equal(0, store_revision(s, &rev0, &err));
	assert_int_equal(-1, store_put(s, "caps/big", v, n, &err));
	assert_int_eq_msg(err.code, EFBIG, "err.code of a put over the cap");
	assert_non_null(strstr(err.msg, "--max-request-bytes"));
	assert_int_equal(0, store_put(s, "caps/mib", v, 1u << 20, &err)); /* 1 MiB fits */

	store_op ops[128];
	char keys[128][16];
	for (int i = 0; i < 128; i++) {
		snprintf(keys[i], sizeof keys[i], "caps/%03d", i);
		ops[i] = (store_op){STORE_PUT, keys[i], "x", 1};
	}
	cx_err_clear(&err);
	assert_int_equal(-1, store_txn(s, ops, 128, &err)); /* + the store's own op */
	assert_int_eq_msg(err.code, E2BIG, "err.code of a txn over the op cap");
	assert_non_null(strstr(err.msg, "--max-txn-ops"));
	assert_int_equal(0, store_txn(s, ops, 127, &err));
	/* a key twice: the last op wins, as in order */
	store_op dup[] = {{STORE_PUT, "caps/d", "1", 1}, {STORE_DEL, "caps/d", NULL, 0},
			  {STORE_PUT, "caps/e", "1", 1}, {STORE_PUT, "caps/e", "2", 1}};
	assert_int_equal(0, store_txn(s, dup, 4, &err));
	char *got = NULL;
	assert_int_equal(CX_NOTFOUND, store_get(s, "caps/d", &got, NULL, &err));
	assert_int_equal(0, store_get(s, "caps/e", &got, NULL, &err));
	assert_string_equal("2", got);
	free(got);
	assert_int_equal(0, store_revision(s, &rev1, &err));
	assert_int_eq_msg(rev1 - rev0, 3, "revisions: the 1 MiB put and two txns, nothing refused");
	free(v);
	store_close(s);
}

/* Two namespaces on one cluster see nothing of each other. */
static void test_namespaces(void **state)
{
	(void)state;
	store *a = open_with(etcd_fixture_url, "ns-a/", 0), *b = open_with(etcd_fixture_url, "ns-b/", 0);
	cx_err err = CX_ERR_INIT;
	assert_int_equal(0, store_put(a, "k", "a", 1, &err));
	assert_int_equal(0, store_put(b, "k", "b", 1, &err));
	store_kv *kv = NULL;
	size_t n = 0;
	assert_int_equal(0, store_list(a, "", 0, &kv, &n, &err));
	assert_int_eq_msg(n, 1, "keys a sees");
	assert_string_equal("k", kv[0].key);
	assert_string_equal("a", kv[0].val);
	store_kv_free(kv, n);
	assert_int_equal(0, store_delete_prefix(b, "k", &n, &err));
	char *got = NULL;
	assert_int_equal(0, store_get(a, "k", &got, NULL, &err));
	assert_string_equal("a", got);
	free(got);
	store *bad = NULL;
	assert_int_equal(-1, store_open_etcd(&bad, &(struct store_etcd_opts){.endpoints = etcd_fixture_url, .ns = "bad"},
					     &err)); /* no trailing '/' */
	assert_non_null(strstr(err.msg, "namespace"));
	store_close(a);
	store_close(b);
}

/* An endpoint that refuses connections is skipped, now and afterwards. */
static void test_failover(void **state)
{
	(void)state;
	char eps[160];
	snprintf(eps, sizeof eps, "http://127.0.0.1:1,%s", etcd_fixture_url);
	store *s = open_with(eps, NULL, 0);
	cx_err err = CX_ERR_INIT;
	for (int i = 0; i < 5; i++)
		assert_int_equal(0, store_put(s, "fo/k", "v", 1, &err));
	char *got = NULL;
	assert_int_equal(0, store_get(s, "fo/k", &got, NULL, &err));
	free(got);
	store_close(s);
	store *none = NULL;
	assert_int_equal(-1, store_open_etcd(&none, &(struct store_etcd_opts){.endpoints = "http://127.0.0.1:1,http://127.0.0.1:2"}, &err));
	assert_non_null(strstr(err.msg, "127.0.0.1:2"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_request_caps),
	    cmocka_unit_test(test_namespaces),
	    cmocka_unit_test(test_failover),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
