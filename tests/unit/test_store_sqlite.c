/* test_store_sqlite.c — what only the SQLite backend shows: the database file
 * (mode, WAL, symlinks), data and revision surviving a reopen, the per-row
 * revision, a failure inside SQLite mid-transaction, and two handles on one
 * file.  The store contract itself is in test_store.c (unit.store.sqlite). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
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

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	if (!f)
		return -1;
	if (unit_tmpdir("store-sqlite", f->dir, sizeof f->dir) < 0) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof f->path, "%s/cortex.db", f->dir);
	if (store_open_sqlite(&f->s, f->path, &f->err) < 0) {
		fprintf(stderr, "store_open_sqlite: %s\n", f->err.msg);
		cx_rm_rf(f->dir);
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
	cx_rm_rf(f->dir);
	free(f);
	return 0;
}

static void check_value(struct fx *f, const char *key, const void *want, size_t want_len)
{
	char *got = NULL;
	size_t got_len = 0;
	OK(store_get(f->s, key, &got, &got_len, &f->err));
	assert_int_eq_msg(got_len, want_len, key);
	assert_memory_equal(want, got, want_len);
	free(got);
}

static int64_t revision(struct fx *f)
{
	int64_t rev = -1;
	OK(store_revision(f->s, &rev, &f->err));
	return rev;
}

/* A second, plain SQLite connection to the same file, for looking underneath. */
static sqlite3 *raw_open(struct fx *f)
{
	sqlite3 *db = NULL;
	if (sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
		fail_msg("opening %s: %s", f->path, sqlite3_errmsg(db));
	return db;
}

static int64_t raw_int(sqlite3 *db, const char *sql, const char *key)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	if (key)
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	int64_t v = -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* ---- tests ---- */

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
	sqlite3 *db = raw_open(f);
	sqlite3_stmt *st = NULL;
	assert_int_equal(SQLITE_OK, sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL));
	assert_int_equal(SQLITE_ROW, sqlite3_step(st));
	assert_string_equal("wal", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void test_existing_file_tightened(void **state)
{
	struct fx *f = *state;
	char p[700];
	snprintf(p, sizeof p, "%s/loose.db", f->dir);
	int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(0, fchmod(fd, 0644));
	close(fd);
	store *s2 = NULL;
	OK(store_open_sqlite(&s2, p, &f->err));
	store_close(s2);
	struct stat sb;
	assert_int_equal(0, stat(p, &sb));
	if ((sb.st_mode & 0777) != 0600)
		fail_msg("%s: expected mode 0600, got %04o", p, sb.st_mode & 0777);
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
}

static void test_not_a_database(void **state)
{
	struct fx *f = *state;
	char p[700];
	snprintf(p, sizeof p, "%s/junk.db", f->dir);
	int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	static const char junk[] = "this is not an SQLite database, not even close......";
	assert_int_equal((ssize_t)sizeof junk, write(fd, junk, sizeof junk));
	close(fd);
	store *s2 = NULL;
	EXPECT_RC(-1, store_open_sqlite(&s2, p, &f->err));
	assert_null(s2);
	EXPECT_MSG_HAS(p);
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
	EXPECT_RC(CX_NOTFOUND, store_get(f->s, "p/3", &(char *){NULL}, NULL, &f->err));
	assert_int_eq_msg(revision(f), rev, "revision after reopen");
	OK(store_put(f->s, "p/4", "four", 4, &f->err)); /* and it counts on from there */
	assert_int_eq_msg(revision(f), rev + 1, "revision after a write on the reopened store");
}

/* Every row records the revision that last wrote it; a txn's rows share one. */
static void test_row_revision(void **state)
{
	struct fx *f = *state;
	OK(store_put(f->s, "a", "1", 1, &f->err));
	OK(store_put(f->s, "b", "1", 1, &f->err));
	store_op ops[] = {{STORE_PUT, "c", "1", 1}, {STORE_PUT, "d", "1", 1}};
	OK(store_txn(f->s, ops, 2, &f->err));
	OK(store_put(f->s, "a", "2", 1, &f->err));
	sqlite3 *db = raw_open(f);
	const char *sql = "SELECT rev FROM kv WHERE key = ?1";
	assert_int_eq_msg(raw_int(db, sql, "a"), 4, "rev of a (overwritten last)");
	assert_int_eq_msg(raw_int(db, sql, "b"), 2, "rev of b");
	assert_int_eq_msg(raw_int(db, sql, "c"), 3, "rev of c (txn)");
	assert_int_eq_msg(raw_int(db, sql, "d"), 3, "rev of d (same txn)");
	assert_int_eq_msg(raw_int(db, "SELECT MAX(rev) FROM kv", NULL), revision(f),
			  "the newest row carries the store revision");
	sqlite3_close(db);
}

/* A failure inside SQLite after ops 1-2 were applied must roll them back.
 * Inject one with a trigger, from a second connection. */
static void test_txn_backend_failure_rolls_back(void **state)
{
	struct fx *f = *state;
	sqlite3 *db = raw_open(f);
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
	EXPECT_RC(CX_NOTFOUND, store_get(f->s, "x/1", &(char *){NULL}, NULL, &f->err));
	check_value(f, "x/2", "before", 6);
	assert_int_eq_msg(revision(f), rev0, "revision after a rolled-back txn");
	/* and the store is still usable afterwards (no transaction left open) */
	OK(store_put(f->s, "x/after", "ok", 2, &f->err));
	check_value(f, "x/after", "ok", 2);
}

/* Two handles on one file, as two processes would have: writers wait for each
 * other instead of failing, and the revision counts every write once. */
#define TWO_PUTS 150

struct two {
	store *s;
	int id;
	int failures;
	char first_err[512];
};

static void *two_writer(void *arg)
{
	struct two *w = arg;
	for (int i = 0; i < TWO_PUTS; i++) {
		char key[32];
		snprintf(key, sizeof key, "h/%d/%04d", w->id, i);
		cx_err err = CX_ERR_INIT;
		int r = i % 3 ? store_put(w->s, key, "v", 1, &err)
			      : store_txn(w->s, &(store_op){STORE_PUT, key, "v", 1}, 1, &err);
		if (r < 0 && w->failures++ == 0)
			snprintf(w->first_err, sizeof w->first_err, "%s", err.msg);
	}
	return NULL;
}

static void test_two_handles_one_file(void **state)
{
	struct fx *f = *state;
	store *s2 = NULL;
	OK(store_open_sqlite(&s2, f->path, &f->err));
	struct two w[2] = {{.s = f->s, .id = 0}, {.s = s2, .id = 1}};
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(0, pthread_create(&th[i], NULL, two_writer, &w[i]));
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 2; i++)
		if (w[i].failures)
			fail_msg("handle %d: %d failed writes, first: %s", i, w[i].failures,
				 w[i].first_err);
	store_kv *kv = NULL;
	size_t n = 0;
	OK(store_list(s2, "h/", 0, &kv, &n, &f->err));
	assert_int_eq_msg(n, 2 * TWO_PUTS, "keys written through both handles");
	store_kv_free(kv, n);
	int64_t r1 = revision(f), r2 = -1;
	OK(store_revision(s2, &r2, &f->err));
	assert_int_eq_msg(r1, 2 * TWO_PUTS, "revision through the first handle");
	assert_int_eq_msg(r2, 2 * TWO_PUTS, "revision through the second handle");
	store_close(s2);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_file_mode_and_wal),
	    T(test_existing_file_tightened),
	    T(test_symlink_refused),
	    T(test_not_a_database),
	    T(test_persistence_across_reopen),
	    T(test_row_revision),
	    T(test_txn_backend_failure_rolls_back),
	    T(test_two_handles_one_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
