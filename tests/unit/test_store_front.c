/* test_store_front.c — the front (store.c) on its own, over a backend that
 * only counts its calls: whatever the front refuses never reaches a backend,
 * what it accepts reaches it unchanged, and store_open picks the kind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "unit_util.h"

struct spy {
	int calls;     /* every backend call but close */
	int closed;    /* set by close; the spy outlives the store */
	size_t last_n; /* txn: op count seen */
};

static int spy_get(void *impl, const char *key, char **out, size_t *out_len, cx_err *err)
{
	(void)key, (void)out, (void)out_len, (void)err;
	((struct spy *)impl)->calls++;
	return CX_NOTFOUND;
}
static int spy_put(void *impl, const char *key, const void *val, size_t len, cx_err *err)
{
	(void)key, (void)val, (void)len, (void)err;
	((struct spy *)impl)->calls++;
	return 0;
}
static int spy_del(void *impl, const char *key, cx_err *err)
{
	(void)key, (void)err;
	((struct spy *)impl)->calls++;
	return CX_NOTFOUND;
}
static int spy_list(void *impl, const char *prefix, const char *after, size_t limit, store_kv **out,
		    size_t *out_n, cx_err *err)
{
	(void)prefix, (void)after, (void)limit, (void)out, (void)out_n, (void)err;
	((struct spy *)impl)->calls++;
	return 0;
}
static int spy_txn(void *impl, const store_op *ops, size_t n, cx_err *err)
{
	(void)ops, (void)err;
	struct spy *sp = impl;
	sp->calls++;
	sp->last_n = n;
	return 0;
}
static int spy_delete_prefix(void *impl, const char *prefix, size_t *out_n, cx_err *err)
{
	(void)prefix, (void)out_n, (void)err;
	((struct spy *)impl)->calls++;
	return 0;
}
static void spy_close(void *impl)
{
	((struct spy *)impl)->closed++;
}

static const struct store_ops spy_ops = {
    .name = "spy",
    .get = spy_get,
    .put = spy_put,
    .del = spy_del,
    .list = spy_list,
    .txn = spy_txn,
    .delete_prefix = spy_delete_prefix,
    .revision = NULL, /* optional */
    .close = spy_close,
};

#define EXPECT_REFUSED(call)                                                                       \
	do {                                                                                       \
		int before_ = sp.calls;                                                            \
		int rc_ = (call);                                                                  \
		if (rc_ != -1 || sp.calls != before_)                                              \
			fail_msg("%s\n  expected -1 and no backend call, got rc %d and %d "        \
				 "call(s) (err: \"%s\")",                                          \
				 #call, rc_, sp.calls - before_, err.msg);                         \
	} while (0)

#define EXPECT_PASSED(want_rc, call)                                                               \
	do {                                                                                       \
		int before_ = sp.calls;                                                            \
		int rc_ = (call);                                                                  \
		if (rc_ != (want_rc) || sp.calls != before_ + 1)                                   \
			fail_msg("%s\n  expected rc %d after one backend call, got rc %d and %d "  \
				 "call(s) (err: \"%s\")",                                          \
				 #call, (want_rc), rc_, sp.calls - before_, err.msg);              \
	} while (0)

static void test_refusals_never_reach_the_backend(void **state)
{
	(void)state;
	struct spy sp = {0};
	store *s = NULL;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(0, store_new(&s, &spy_ops, &sp, &err));

	static char long_key[STORE_KEY_MAX + 2];
	memset(long_key, 'k', STORE_KEY_MAX + 1);
	char *v = NULL;
	store_kv *kv = NULL;
	size_t n = 0;
	static char one[1];
	EXPECT_REFUSED(store_put(s, "", "v", 1, &err));
	EXPECT_REFUSED(store_put(s, long_key, "v", 1, &err));
	EXPECT_REFUSED(store_put(s, "k", one, STORE_VAL_MAX + 1u, &err));
	EXPECT_REFUSED(store_put(s, "k", NULL, 1, &err));
	EXPECT_REFUSED(store_get(s, "", &v, NULL, &err));
	EXPECT_REFUSED(store_get(s, long_key, &v, NULL, &err));
	EXPECT_REFUSED(store_delete(s, NULL, &err));
	EXPECT_REFUSED(store_delete(s, long_key, &err));
	EXPECT_REFUSED(store_list(s, NULL, 0, &kv, &n, &err));
	EXPECT_REFUSED(store_list(s, long_key, 0, &kv, &n, &err));
	EXPECT_REFUSED(store_delete_prefix(s, "", &n, &err));
	EXPECT_REFUSED(store_delete_prefix(s, long_key, &n, &err));
	store_op bad[] = {{STORE_PUT, "a", "v", 1}, {STORE_DEL, "", NULL, 0}};
	EXPECT_REFUSED(store_txn(s, bad, 2, &err));
	EXPECT_REFUSED(store_txn(s, NULL, 1, &err));
	int64_t rev = 99;
	EXPECT_REFUSED(store_revision(s, &rev, &err));
	assert_int_eq_msg(err.code, ENOTSUP, "store_revision without a revision op");
	assert_int_eq_msg(rev, 0, "*out after a refused store_revision");

	/* limits are inclusive; a txn of no ops is answered by the front */
	long_key[STORE_KEY_MAX] = '\0';
	EXPECT_PASSED(0, store_put(s, long_key, "v", 1, &err));
	EXPECT_PASSED(0, store_put(s, "k", NULL, 0, &err));
	EXPECT_PASSED(CX_NOTFOUND, store_get(s, long_key, &v, NULL, &err));
	EXPECT_PASSED(CX_NOTFOUND, store_delete(s, long_key, &err));
	EXPECT_PASSED(0, store_list(s, "", 0, &kv, &n, &err));
	EXPECT_PASSED(0, store_delete_prefix(s, long_key, &n, &err));
	EXPECT_PASSED(0, store_txn(s, bad, 1, &err));
	assert_int_eq_msg(sp.last_n, 1, "ops seen by the backend");
	int before = sp.calls;
	assert_int_equal(0, store_txn(s, NULL, 0, &err));
	assert_int_eq_msg(sp.calls, before, "backend calls for an empty txn");

	store_close(s);
	assert_int_eq_msg(sp.closed, 1, "backend close calls");
}

static void test_open_kinds(void **state)
{
	(void)state;
	cx_err err = CX_ERR_INIT;
	store *s = NULL;
	assert_int_equal(-1, store_open(&s, "redis", "whatever", &err));
	assert_non_null(strstr(err.msg, "redis"));
	assert_null(s);
	/* port 1: nothing listens; the open fails fast and names the endpoint */
	assert_int_equal(-1, store_open(&s, "etcd", "http://127.0.0.1:1", &err));
	assert_non_null(strstr(err.msg, "127.0.0.1:1"));
	assert_int_equal(-1, store_open(&s, "etcd", "ftp://127.0.0.1:2379", &err));
	assert_non_null(strstr(err.msg, "bad etcd endpoint"));
	assert_int_equal(-1, store_open(&s, "etcd", NULL, &err));
	assert_non_null(strstr(err.msg, "endpoints"));
	assert_int_equal(-1, store_open(&s, NULL, "/nonexistent/x.db", &err));
	assert_non_null(strstr(err.msg, "no store kind"));
	assert_int_equal(-1, store_open(&s, "sqlite", "", &err));
	assert_non_null(strstr(err.msg, "path"));
	assert_int_equal(-1, store_open(&s, "sqlite", NULL, &err));
	assert_non_null(strstr(err.msg, "path"));
	assert_null(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_refusals_never_reach_the_backend),
	    cmocka_unit_test(test_open_kinds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
