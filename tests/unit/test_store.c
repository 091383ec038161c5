/* test_store.c — the store front and its SQLite backend, against a real
 * database file in $CORTEX_TEST_TMP.  Each test gets a fresh directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"
#include "unit_util.h"

struct fx {
	char dir[512];
	char path[600];
	store *s;
	cx_err err;
};

/* Failures print the call, expected and actual return code, and the error text. */
#define EXPECT_RC(want, call)                                                                      \
	do {                                                                                       \
		int got_ = (call);                                                                 \
		if (got_ != (want))                                                                \
			fail_msg("%s\n  expected rc %d, got %d (err: \"%s\")", #call, (want),      \
				 got_, f->err.msg);                                                \
	} while (0)
#define OK(call) EXPECT_RC(0, call)

#define EXPECT_MSG_HAS(needle)                                                                     \
	do {                                                                                       \
		if (!strstr(f->err.msg, (needle)))                                                 \
			fail_msg("error message should mention \"%s\"\n  actual: \"%s\"",          \
				 (needle), f->err.msg);                                            \
	} while (0)

#define EXPECT_SIZE(want, got)                                                                     \
	do {                                                                                       \
		size_t w_ = (want), g_ = (got);                                                    \
		if (w_ != g_)                                                                      \
			fail_msg("%s: expected %zu, got %zu", #got, w_, g_);                       \
	} while (0)

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	if (!f)
		return -1;
	if (unit_tmpdir("store", f->dir, sizeof f->dir) < 0) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof f->path, "%s/cortex.db", f->dir);
	if (store_open_sqlite(&f->s, f->path, &f->err) < 0) {
		fprintf(stderr, "store_open_sqlite: %s\n", f->err.msg);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	store_close(f->s);
	static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
	for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
		char p[700];
		snprintf(p, sizeof p, "%s%s", f->path, suffixes[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

static void check_value(struct fx *f, const char *key, const void *want, size_t want_len)
{
	char *got = NULL;
	size_t got_len = 0;
	OK(store_get(f->s, key, &got, &got_len, &f->err));
	EXPECT_SIZE(want_len, got_len);
	assert_memory_equal(want, got, want_len);
	if (got[got_len] != '\0')
		fail_msg("value of '%s' is not NUL-terminated", key);
	free(got);
}

static void check_absent(struct fx *f, const char *key)
{
	char *got = NULL;
	EXPECT_RC(CX_NOTFOUND, store_get(f->s, key, &got, NULL, &f->err));
	assert_null(got);
}

static int64_t revision(struct fx *f)
{
	int64_t rev = -1;
	OK(store_revision(f->s, &rev, &f->err));
	return rev;
}

/* ---- tests ---- */

static void test_put_get_round_trip(void **state)
{
	struct fx *f = *state;
	OK(store_put(f->s, "users/alice", "hello", 5, &f->err));
	check_value(f, "users/alice", "hello", 5);
	/* out_len may be NULL */
	char *v = NULL;
	OK(store_get(f->s, "users/alice", &v, NULL, &f->err));
	assert_string_equal("hello", v);
	free(v);
}

static void test_binary_value_with_nuls(void **state)
{
	struct fx *f = *state;
	const char bin[] = {'a', 0, 'b', 0, 0, (char)0xff, 'c'};
	OK(store_put(f->s, "bin", bin, sizeof bin, &f->err));
	check_value(f, "bin", bin, sizeof bin);
}

static void test_empty_value(void **state)
{
	struct fx *f = *state;
	OK(store_put(f->s, "empty", NULL, 0, &f->err));
	check_value(f, "empty", "", 0);
	OK(store_put(f->s, "empty2", "", 0, &f->err));
	check_value(f, "empty2", "", 0);
}

static void test_get_missing(void **state)
{
	struct fx *f = *state;
	check_absent(f, "nope");
}

static void test_delete(void **state)
{
	struct fx *f = *state;
	EXPECT_RC(CX_NOTFOUND, store_delete(f->s, "nope", &f->err));
	OK(store_put(f->s, "k", "v", 1, &f->err));
	OK(store_delete(f->s, "k", &f->err));
	check_absent(f, "k");
	EXPECT_RC(CX_NOTFOUND, store_delete(f->s, "k", &f->err));
}

static void test_overwrite(void **state)
{
	struct fx *f = *state;
	OK(store_put(f->s, "k", "first value", 11, &f->err));
	OK(store_put(f->s, "k", "2nd", 3, &f->err));
	check_value(f, "k", "2nd", 3);
}

static void test_key_and_value_limits(void **state)
{
	struct fx *f = *state;
	EXPECT_RC(-1, store_put(f->s, "", "v", 1, &f->err));
	EXPECT_MSG_HAS("empty key");
	EXPECT_RC(-1, store_get(f->s, "", &(char *){NULL}, NULL, &f->err));
	EXPECT_MSG_HAS("empty key");

	char key[STORE_KEY_MAX + 2];
	memset(key, 'k', sizeof key - 1);
	key[STORE_KEY_MAX] = '\0'; /* exactly the maximum: allowed */
	OK(store_put(f->s, key, "v", 1, &f->err));
	check_value(f, key, "v", 1);
	key[STORE_KEY_MAX] = 'k';
	key[STORE_KEY_MAX + 1] = '\0'; /* one over */
	EXPECT_RC(-1, store_put(f->s, key, "v", 1, &f->err));
	EXPECT_MSG_HAS("longer than 1024");

	size_t big = STORE_VAL_MAX + 1;
	char *val = calloc(1, big);
	assert_non_null(val);
	EXPECT_RC(-1, store_put(f->s, "big", val, big, &f->err));
	EXPECT_MSG_HAS("max 16777216");
	check_absent(f, "big");
	OK(store_put(f->s, "big", val, STORE_VAL_MAX, &f->err)); /* exactly the maximum */
	free(val);
	char *got = NULL;
	size_t got_len = 0;
	OK(store_get(f->s, "big", &got, &got_len, &f->err));
	EXPECT_SIZE(STORE_VAL_MAX, got_len);
	free(got);
}

/* Keys chosen so a LIKE-based or off-by-one range scan would get them wrong. */
static void test_list_prefix_order_and_boundaries(void **state)
{
	struct fx *f = *state;
	const char *keys[] = {
	    "a",  "a/", "a/%", "a/_x", "a/b",  "a/b/c",	     "a/\xff", "a/\xff\xff", "a0",   "a.",
	    "b/", "ab", "A/x", "a/z",  "\xff", "\xff\xff/1", "a%/x",   "a_/x",	     "aa/x",
	};
	for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
		OK(store_put(f->s, keys[i], keys[i], strlen(keys[i]), &f->err));

	store_kv *kv = NULL;
	size_t n = 0;
	OK(store_list(f->s, "a/", 0, &kv, &n, &f->err));
	const char *want[] = {"a/", "a/%", "a/_x", "a/b", "a/b/c", "a/z", "a/\xff", "a/\xff\xff"};
	EXPECT_SIZE(sizeof want / sizeof *want, n);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(want[i], kv[i].key);
		EXPECT_SIZE(strlen(want[i]), kv[i].len);
		assert_memory_equal(want[i], kv[i].val, kv[i].len);
	}
	store_kv_free(kv, n);

	/* % and _ are literal bytes, not wildcards */
	OK(store_list(f->s, "a%", 0, &kv, &n, &f->err));
	EXPECT_SIZE(1, n);
	assert_string_equal("a%/x", kv[0].key);
	store_kv_free(kv, n);
	OK(store_list(f->s, "a_", 0, &kv, &n, &f->err));
	EXPECT_SIZE(1, n);
	assert_string_equal("a_/x", kv[0].key);
	store_kv_free(kv, n);

	/* prefix ending in 0xff: successor must carry into the previous byte */
	OK(store_list(f->s, "a/\xff", 0, &kv, &n, &f->err));
	EXPECT_SIZE(2, n);
	assert_string_equal("a/\xff", kv[0].key);
	assert_string_equal("a/\xff\xff", kv[1].key);
	store_kv_free(kv, n);

	/* all-0xff prefix: no successor, open-ended range */
	OK(store_list(f->s, "\xff", 0, &kv, &n, &f->err));
	EXPECT_SIZE(2, n);
	assert_string_equal("\xff", kv[0].key);
	assert_string_equal("\xff\xff/1", kv[1].key);
	store_kv_free(kv, n);

	/* empty prefix: everything, in byte order */
	OK(store_list(f->s, "", 0, &kv, &n, &f->err));
	EXPECT_SIZE(sizeof keys / sizeof *keys, n);
	for (size_t i = 1; i < n; i++)
		if (strcmp(kv[i - 1].key, kv[i].key) >= 0)
			fail_msg("keys out of order at %zu: \"%s\" then \"%s\"", i, kv[i - 1].key,
				 kv[i].key);
	assert_string_equal("A/x", kv[0].key);
	store_kv_free(kv, n);

	/* no match */
	OK(store_list(f->s, "zzz", 0, &kv, &n, &f->err));
	EXPECT_SIZE(0, n);
	store_kv_free(kv, n);
}

static void test_list_limit(void **state)
{
	struct fx *f = *state;
	for (int i = 9; i >= 0; i--) {
		char k[32];
		snprintf(k, sizeof k, "t/%02d", i);
		OK(store_put(f->s, k, "x", 1, &f->err));
	}
	store_kv *kv = NULL;
	size_t n = 0;
	OK(store_list(f->s, "t/", 3, &kv, &n, &f->err));
	EXPECT_SIZE(3, n);
	assert_string_equal("t/00", kv[0].key);
	assert_string_equal("t/01", kv[1].key);
	assert_string_equal("t/02", kv[2].key);
	store_kv_free(kv, n);
	OK(store_list(f->s, "t/", 100, &kv, &n, &f->err));
	EXPECT_SIZE(10, n);
	store_kv_free(kv, n);
	OK(store_list(f->s, "t/", 0, &kv, &n, &f->err));
	EXPECT_SIZE(10, n);
	store_kv_free(kv, n);
}

static void test_txn_commits_all(void **state)
{
	struct fx *f = *state;
	OK(store_put(f->s, "x/old", "o", 1, &f->err));
	int64_t rev0 = revision(f);
	store_op ops[] = {
	    {STORE_PUT, "x/1", "one", 3},
	    {STORE_PUT, "x/2", "two", 3},
	    {STORE_DEL, "x/old", NULL, 0},
	    {STORE_DEL, "x/never-existed", NULL, 0},
	};
	OK(store_txn(f->s, ops, 4, &f->err));
	check_value(f, "x/1", "one", 3);
	check_value(f, "x/2", "two", 3);
	check_absent(f, "x/old");
	/* one revision per transaction, like etcd */
	if (revision(f) != rev0 + 1)
		fail_msg("revision: expected %lld, got %lld", (long long)rev0 + 1,
			 (long long)revision(f));
}

static void test_txn_invalid_op_stores_nothing(void **state)
{
	struct fx *f = *state;
	int64_t rev0 = revision(f);
	store_op ops[] = {
	    {STORE_PUT, "x/1", "one", 3},
	    {STORE_PUT, "x/2", "two", 3},
	    {STORE_PUT, "", "bad", 3},
	};
	EXPECT_RC(-1, store_txn(f->s, ops, 3, &f->err));
	EXPECT_MSG_HAS("op 3");
	EXPECT_MSG_HAS("empty key");
	check_absent(f, "x/1");
	check_absent(f, "x/2");
	if (revision(f) != rev0)
		fail_msg("revision moved on a failed txn: %lld -> %lld", (long long)rev0,
			 (long long)revision(f));

	store_op bad_kind[] = {{STORE_PUT, "x/1", "one", 3}, {(store_op_kind)7, "x/2", NULL, 0}};
	EXPECT_RC(-1, store_txn(f->s, bad_kind, 2, &f->err));
	EXPECT_MSG_HAS("unknown op kind 7");
	check_absent(f, "x/1");
}

/* A failure inside SQLite after ops 1-2 were applied must roll them back.
 * Inject one with a trigger, from a second connection. */
static void test_txn_backend_failure_rolls_back(void **state)
{
	struct fx *f = *state;
	sqlite3 *db = NULL;
	assert_int_equal(SQLITE_OK, sqlite3_open(f->path, &db));
	char *msg = NULL;
	int rc = sqlite3_exec(db,
			      "CREATE TRIGGER boom BEFORE INSERT ON kv WHEN NEW.key = 'x/boom' "
			      "BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
			      NULL, NULL, &msg);
	if (rc != SQLITE_OK)
		fail_msg("creating trigger: %s", msg);
	sqlite3_close(db);

	OK(store_put(f->s, "x/2", "before", 6, &f->err));
	int64_t rev0 = revision(f);
	store_op ops[] = {
	    {STORE_PUT, "x/1", "one", 3},
	    {STORE_PUT, "x/2", "two", 3},
	    {STORE_PUT, "x/boom", "three", 5},
	};
	EXPECT_RC(-1, store_txn(f->s, ops, 3, &f->err));
	EXPECT_MSG_HAS("injected failure");
	EXPECT_MSG_HAS("op 3");
	check_absent(f, "x/1");
	check_value(f, "x/2", "before", 6);
	if (revision(f) != rev0)
		fail_msg("revision moved on a rolled-back txn: %lld -> %lld", (long long)rev0,
			 (long long)revision(f));
	/* and the store is still usable afterwards (no transaction left open) */
	OK(store_put(f->s, "x/after", "ok", 2, &f->err));
	check_value(f, "x/after", "ok", 2);
}

static void test_delete_prefix(void **state)
{
	struct fx *f = *state;
	const char *keys[] = {"s/u/1", "s/u/2", "s/u/3/x", "s/u", "s/v/1", "s/u0"};
	for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
		OK(store_put(f->s, keys[i], "v", 1, &f->err));
	size_t n = 99;
	OK(store_delete_prefix(f->s, "s/u/", &n, &f->err));
	EXPECT_SIZE(3, n);
	check_absent(f, "s/u/1");
	check_absent(f, "s/u/3/x");
	check_value(f, "s/u", "v", 1);
	check_value(f, "s/v/1", "v", 1);
	check_value(f, "s/u0", "v", 1);

	int64_t rev0 = revision(f);
	OK(store_delete_prefix(f->s, "s/u/", &n, &f->err));
	EXPECT_SIZE(0, n);
	if (revision(f) != rev0)
		fail_msg("no-op delete_prefix moved the revision");
	OK(store_delete_prefix(f->s, "s/", NULL, &f->err));

	EXPECT_RC(-1, store_delete_prefix(f->s, "", &n, &f->err));
	EXPECT_MSG_HAS("empty prefix");
}

static void test_persistence_across_reopen(void **state)
{
	struct fx *f = *state;
	const char bin[] = {1, 0, 2};
	OK(store_put(f->s, "p/1", "one", 3, &f->err));
	OK(store_put(f->s, "p/2", bin, sizeof bin, &f->err));
	OK(store_put(f->s, "p/3", "gone", 4, &f->err));
	OK(store_delete(f->s, "p/3", &f->err));
	int64_t rev = revision(f);
	store_close(f->s);
	f->s = NULL;

	OK(store_open(&f->s, "sqlite", f->path, &f->err));
	check_value(f, "p/1", "one", 3);
	check_value(f, "p/2", bin, sizeof bin);
	check_absent(f, "p/3");
	if (revision(f) != rev)
		fail_msg("revision after reopen: expected %lld, got %lld", (long long)rev,
			 (long long)revision(f));
}

static void test_file_mode_and_wal(void **state)
{
	struct fx *f = *state;
	OK(store_put(f->s, "k", "v", 1, &f->err));
	const char *files[] = {"", "-wal", "-shm"};
	for (size_t i = 0; i < 3; i++) {
		char p[700];
		snprintf(p, sizeof p, "%s%s", f->path, files[i]);
		struct stat sb;
		if (stat(p, &sb) < 0) {
			if (i == 0)
				fail_msg("stat %s: %s", p, strerror(errno));
			continue; /* -wal/-shm may legitimately be absent */
		}
		if ((sb.st_mode & 0777) != 0600)
			fail_msg("%s: expected mode 0600, got %04o", p, sb.st_mode & 0777);
	}

	sqlite3 *db = NULL;
	assert_int_equal(SQLITE_OK, sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL));
	sqlite3_stmt *st = NULL;
	assert_int_equal(SQLITE_OK, sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL));
	assert_int_equal(SQLITE_ROW, sqlite3_step(st));
	assert_string_equal("wal", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void test_symlink_refused(void **state)
{
	struct fx *f = *state;
	char link[700];
	snprintf(link, sizeof link, "%s/link.db", f->dir);
	assert_int_equal(0, symlink(f->path, link));
	store *s2 = NULL;
	EXPECT_RC(-1, store_open_sqlite(&s2, link, &f->err));
	assert_null(s2);
	unlink(link);
}

static void test_revision_counts_writes(void **state)
{
	struct fx *f = *state;
	int64_t r0 = revision(f);
	OK(store_put(f->s, "r/1", "a", 1, &f->err));
	OK(store_put(f->s, "r/1", "b", 1, &f->err));
	EXPECT_RC(CX_NOTFOUND, store_delete(f->s, "r/none", &f->err)); /* no-op: no bump */
	OK(store_delete(f->s, "r/1", &f->err));
	if (revision(f) != r0 + 3)
		fail_msg("revision: expected %lld, got %lld", (long long)r0 + 3,
			 (long long)revision(f));
}

#define WRITERS		4
#define PUTS_PER_WRITER 500

struct writer {
	store *s;
	int id;
	int failures;
	char first_err[512];
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	for (int i = 0; i < PUTS_PER_WRITER; i++) {
		char key[64], val[64];
		snprintf(key, sizeof key, "c/%d/%04d", w->id, i);
		int n = snprintf(val, sizeof val, "w%d-%d", w->id, i);
		cx_err err = CX_ERR_INIT;
		if (store_put(w->s, key, val, (size_t)n, &err) < 0 && w->failures++ == 0)
			snprintf(w->first_err, sizeof w->first_err, "%s", err.msg);
	}
	return NULL;
}

static void test_concurrent_writers(void **state)
{
	struct fx *f = *state;
	int64_t rev0 = revision(f);
	struct writer w[WRITERS];
	pthread_t th[WRITERS];
	for (int i = 0; i < WRITERS; i++) {
		w[i] = (struct writer){.s = f->s, .id = i};
		assert_int_equal(0, pthread_create(&th[i], NULL, writer_main, &w[i]));
	}
	for (int i = 0; i < WRITERS; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < WRITERS; i++)
		if (w[i].failures)
			fail_msg("writer %d: %d failed puts, first: %s", i, w[i].failures,
				 w[i].first_err);

	store_kv *kv = NULL;
	size_t n = 0;
	OK(store_list(f->s, "c/", 0, &kv, &n, &f->err));
	EXPECT_SIZE(WRITERS * PUTS_PER_WRITER, n);
	for (size_t i = 0; i < n; i++) {
		char want[64];
		snprintf(want, sizeof want, "w%zu-%zu", i / PUTS_PER_WRITER, i % PUTS_PER_WRITER);
		assert_string_equal(want, kv[i].val);
	}
	store_kv_free(kv, n);
	if (revision(f) != rev0 + WRITERS * PUTS_PER_WRITER)
		fail_msg("revision: expected %lld, got %lld",
			 (long long)(rev0 + WRITERS * PUTS_PER_WRITER), (long long)revision(f));
}

static void test_open_kinds(void **state)
{
	struct fx *f = *state;
	store *s2 = NULL;
	EXPECT_RC(-1, store_open(&s2, "redis", "whatever", &f->err));
	EXPECT_MSG_HAS("redis");
	assert_null(s2);
	EXPECT_RC(-1, store_open(&s2, "etcd", "http://127.0.0.1:2379", &f->err));
	EXPECT_MSG_HAS("etcd backend not built");
	EXPECT_RC(-1, store_open(&s2, NULL, f->path, &f->err));
	EXPECT_MSG_HAS("no store kind");
	EXPECT_RC(-1, store_open(&s2, "sqlite", "", &f->err));
	EXPECT_MSG_HAS("path");
	assert_null(s2);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_put_get_round_trip),
	    T(test_binary_value_with_nuls),
	    T(test_empty_value),
	    T(test_get_missing),
	    T(test_delete),
	    T(test_overwrite),
	    T(test_key_and_value_limits),
	    T(test_list_prefix_order_and_boundaries),
	    T(test_list_limit),
	    T(test_txn_commits_all),
	    T(test_txn_invalid_op_stores_nothing),
	    T(test_txn_backend_failure_rolls_back),
	    T(test_delete_prefix),
	    T(test_persistence_across_reopen),
	    T(test_file_mode_and_wal),
	    T(test_symlink_refused),
	    T(test_revision_counts_writes),
	    T(test_concurrent_writers),
	    T(test_open_kinds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
