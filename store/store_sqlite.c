/* store_sqlite.c — the embedded SQLite backend of the store (see store.h).
 *
 * One connection, one mutex.  SQLite's FULLMUTEX only serialises single API
 * calls; our mutex is what makes "bind, step, reset" on a cached statement and
 * a whole BEGIN…COMMIT atomic with respect to other threads.
 *
 * Schema: kv(key TEXT PRIMARY KEY, val BLOB NOT NULL, rev INTEGER) WITHOUT
 * ROWID, plus a one-row meta table holding the store revision (it must survive
 * deletes, so it cannot be derived from MAX(kv.rev)).  Keys are always bound
 * as TEXT so the BINARY collation compares them bytewise (memcmp) — that is
 * what makes the prefix range scan correct for any byte, including 0xff.
 *
 * Every write is its own BEGIN IMMEDIATE transaction: the revision bump and
 * the row change commit together, and IMMEDIATE takes the write lock up front
 * so a concurrent process makes us wait (busy_timeout) instead of failing at
 * COMMIT with SQLITE_BUSY.
 */
#include "store_sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SQ_BUSY_TIMEOUT_MS 5000

static const char *const sq_sql[ST__COUNT] = {
    [ST_GET] = "SELECT val FROM kv WHERE key = ?1",
    [ST_PUT] = "INSERT INTO kv(key, val, rev) VALUES (?1, ?2, ?3) "
	       "ON CONFLICT(key) DO UPDATE SET val = excluded.val, rev = excluded.rev",
    [ST_DEL] = "DELETE FROM kv WHERE key = ?1",
    [ST_LIST_RANGE] = "SELECT key, val FROM kv WHERE key >= ?1 AND key < ?2 AND key > ?4 "
		      "ORDER BY key LIMIT ?3",
    [ST_LIST_FROM] = "SELECT key, val FROM kv WHERE key >= ?1 AND key > ?3 ORDER BY key LIMIT ?2",
    [ST_DELP_RANGE] = "DELETE FROM kv WHERE key >= ?1 AND key < ?2 RETURNING key",
    [ST_DELP_FROM] = "DELETE FROM kv WHERE key >= ?1 RETURNING key",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_BUMP] = "UPDATE meta SET rev = rev + 1 WHERE id = 0 RETURNING rev",
    [ST_REV] = "SELECT rev FROM meta WHERE id = 0",
    [ST_LEASE_SET] = "INSERT INTO lease_keys(key, lease) VALUES (?1, ?2) "
		     "ON CONFLICT(key) DO UPDATE SET lease = excluded.lease",
    [ST_LEASE_CLEAR] = "DELETE FROM lease_keys WHERE key = ?1",
    [ST_LEASE_KEYS] = "DELETE FROM lease_keys WHERE lease = ?1 RETURNING key",
};

static const char sq_schema[] = "CREATE TABLE IF NOT EXISTS kv("
				"  key TEXT PRIMARY KEY,"
				"  val BLOB NOT NULL,"
				"  rev INTEGER NOT NULL"
				") WITHOUT ROWID;"
				"CREATE TABLE IF NOT EXISTS meta("
				"  id INTEGER PRIMARY KEY CHECK (id = 0),"
				"  rev INTEGER NOT NULL"
				");"
				"INSERT OR IGNORE INTO meta(id, rev) VALUES (0, 0);"
				"CREATE TABLE IF NOT EXISTS lease_keys("
				"  key TEXT PRIMARY KEY,"
				"  lease INTEGER NOT NULL"
				") WITHOUT ROWID;"
				/* leases live in the process: the keys of a gone one go */
				"BEGIN IMMEDIATE;"
				"UPDATE meta SET rev = rev + 1 WHERE id = 0 AND EXISTS"
				"  (SELECT 1 FROM lease_keys JOIN kv USING (key));"
				"DELETE FROM kv WHERE key IN (SELECT key FROM lease_keys);"
				"DELETE FROM lease_keys;"
				"COMMIT;";

/* ---- small helpers (all called with q->mu held) ---- */

int sq_fail(struct sq *q, int rc, const char *what, cx_err *err)
{
	return cx_err_set(err, 0, "store: sqlite %s: %s (%s, code %d)", q->path, what,
			  sqlite3_errmsg(q->db), rc);
}

sqlite3_stmt *sq_stmt(struct sq *q, enum sq_stmt id)
{
	sqlite3_stmt *st = q->st[id];
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return st;
}

/* Release a statement after use: drops bindings so no caller pointer (bound
 * SQLITE_STATIC) outlives the call. */
void sq_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

int sq_bind_text(sqlite3_stmt *st, int idx, const char *s, size_t len)
{
	return sqlite3_bind_text(st, idx, s, (int)len, SQLITE_STATIC);
}

/* Zero-length values are bound as zeroblob: sqlite3_bind_blob with a NULL
 * pointer would bind SQL NULL and trip NOT NULL. */
static int sq_bind_val(sqlite3_stmt *st, int idx, const void *val, size_t len)
{
	if (len == 0)
		return sqlite3_bind_zeroblob(st, idx, 0);
	return sqlite3_bind_blob64(st, idx, val, (sqlite3_uint64)len, SQLITE_STATIC);
}

/* Step a statement that returns no rows. */
static int sq_exec(struct sq *q, enum sq_stmt id, const char *what, cx_err *err)
{
	sqlite3_stmt *st = sq_stmt(q, id);
	int rc = sqlite3_step(st);
	sq_done(st);
	if (rc != SQLITE_DONE)
		return sq_fail(q, rc, what, err);
	return 0;
}

/* Roll back if a transaction is open.  Some errors (SQLITE_FULL, IOERR, …)
 * already rolled back automatically, hence the autocommit check.  Errors here
 * are not reported: the caller already has the error that matters. */
static void sq_pend_clear(struct sq *q)
{
	for (size_t i = 0; i < q->npend; i++)
		free(q->pend[i].key);
	q->npend = 0;
	q->pend_oom = 0;
}

/* Note a change of the open transaction (published if it commits). */
static void sq_note(struct sq *q, store_event_kind kind, const char *key, const void *val,
		    size_t len)
{
	if (q->npend == q->cap_pend) {
		size_t ncap = q->cap_pend ? q->cap_pend * 2 : 16;
		struct sq_pend *np = realloc(q->pend, ncap * sizeof *np);
		if (!np) {
			q->pend_oom = 1;
			return;
		}
		q->pend = np;
		q->cap_pend = ncap;
	}
	char *k = strdup(key);
	if (!k) {
		q->pend_oom = 1;
		return;
	}
	q->pend[q->npend++] = (struct sq_pend){kind, k, val, len};
}

static void sq_publish(struct sq *q)
{
	for (size_t i = 0; i < q->npend; i++)
		evlog_add(q->log, q->pend[i].kind, q->pend[i].key, q->pend[i].val, q->pend[i].len,
			  q->pend_rev);
	if (q->pend_oom) /* a change we could not note: watchers resync */
		evlog_add(q->log, STORE_EV_RESYNC, "", NULL, 0, q->pend_rev);
	evlog_publish(q->log);
	sq_pend_clear(q);
}

static void sq_rollback(struct sq *q)
{
	sq_pend_clear(q);
	if (!sqlite3_get_autocommit(q->db))
		(void)sq_exec(q, ST_ROLLBACK, "rollback", NULL);
}

int sq_begin(struct sq *q, cx_err *err)
{
	return sq_exec(q, ST_BEGIN, "begin transaction", err);
}

/* Commit when rc == 0, otherwise (or when COMMIT fails) roll back.  Returns rc
 * or -1 on commit failure, so callers can `return sq_end(q, r, err);`. */
int sq_end(struct sq *q, int rc, cx_err *err)
{
	if (rc == 0 && sq_exec(q, ST_COMMIT, "commit", err) < 0)
		rc = -1;
	if (rc != 0)
		sq_rollback(q);
	else
		sq_publish(q);
	return rc;
}

/* Bump the store revision inside the open transaction; new value in *rev. */
int sq_bump(struct sq *q, int64_t *rev, cx_err *err)
{
	sqlite3_stmt *st = sq_stmt(q, ST_BUMP);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*rev = q->pend_rev = sqlite3_column_int64(st, 0);
	sq_done(st);
	if (rc != SQLITE_ROW)
		return sq_fail(q, rc, "bumping revision", err);
	return 0;
}

/* Copy the blob in column col into a malloc'd, NUL-terminated buffer. */
static int sq_copy_col(sqlite3_stmt *st, int col, char **out, size_t *out_len, cx_err *err)
{
	const void *p = sqlite3_column_blob(st, col); /* blob before bytes: SQLite's rule */
	size_t n = (size_t)sqlite3_column_bytes(st, col);
	char *buf = malloc(n + 1);
	if (!buf)
		return cx_err_set(err, ENOMEM, "store: allocating %zu bytes", n + 1);
	if (n)
		memcpy(buf, p, n);
	buf[n] = '\0';
	*out = buf;
	if (out_len)
		*out_len = n;
	return 0;
}

/* The smallest string greater than every string that starts with prefix:
 * drop trailing 0xff bytes, then increment the last byte.  Returns its length
 * (written to buf, which must hold len bytes), or 0 if there is none — the
 * prefix is empty or all 0xff, and the range is open-ended. */
static size_t prefix_successor(const char *prefix, size_t len, char *buf)
{
	memcpy(buf, prefix, len);
	while (len > 0 && (unsigned char)buf[len - 1] == 0xff)
		len--;
	if (len > 0)
		buf[len - 1] = (char)((unsigned char)buf[len - 1] + 1);
	return len;
}

/* Pick the RANGE or FROM statement for prefix and bind ?1 = prefix and, when
 * there is a successor, ?2 = successor.  succ (STORE_KEY_MAX bytes) is bound
 * in place, so it must outlive the statement's use.  *next_param = the index
 * of the first parameter left for the caller. */
static sqlite3_stmt *sq_prefix_stmt(struct sq *q, enum sq_stmt range, enum sq_stmt from,
				    const char *prefix, char *succ, int *next_param)
{
	size_t plen = strlen(prefix);
	size_t slen = prefix_successor(prefix, plen, succ);
	sqlite3_stmt *st = sq_stmt(q, slen ? range : from);
	sq_bind_text(st, 1, prefix, plen);
	if (slen)
		sq_bind_text(st, 2, succ, slen);
	*next_param = slen ? 3 : 2;
	return st;
}

/* ---- operations (take the lock, call a _locked body) ---- */

static int get_locked(struct sq *q, const char *key, char **out, size_t *out_len, cx_err *err)
{
	sqlite3_stmt *st = sq_stmt(q, ST_GET);
	sq_bind_text(st, 1, key, strlen(key));
	int rc = sqlite3_step(st);
	int r;
	if (rc == SQLITE_ROW)
		r = sq_copy_col(st, 0, out, out_len, err);
	else if (rc == SQLITE_DONE)
		r = CX_NOTFOUND;
	else
		r = sq_fail(q, rc, "get", err);
	sq_done(st);
	return r;
}

static int sq_get(void *impl, const char *key, char **out, size_t *out_len, cx_err *err)
{
	struct sq *q = impl;
	pthread_mutex_lock(&q->mu);
	int r = get_locked(q, key, out, out_len, err);
	pthread_mutex_unlock(&q->mu);
	return r;
}

/* Inside an open transaction. */
int put_in_txn(struct sq *q, const char *key, const void *val, size_t len, int64_t rev,
		      cx_err *err)
{
	sqlite3_stmt *st = sq_stmt(q, ST_PUT);
	sq_bind_text(st, 1, key, strlen(key));
	int rc = sq_bind_val(st, 2, val, len);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, rev);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	sq_done(st);
	if (rc != SQLITE_DONE)
		return sq_fail(q, rc, "put", err);
	if (q->lease_used) { /* a put without a lease detaches the key */
		st = sq_stmt(q, ST_LEASE_CLEAR);
		sq_bind_text(st, 1, key, strlen(key));
		rc = sqlite3_step(st);
		sq_done(st);
		if (rc != SQLITE_DONE)
			return sq_fail(q, rc, "put (lease)", err);
	}
	sq_note(q, STORE_EV_PUT, key, val, len);
	return 0;
}

/* Inside an open transaction; *deleted = rows removed (0 or 1). */
int del_in_txn(struct sq *q, const char *key, int *deleted, cx_err *err)
{
	sqlite3_stmt *st = sq_stmt(q, ST_DEL);
	sq_bind_text(st, 1, key, strlen(key));
	int rc = sqlite3_step(st);
	sq_done(st);
	if (rc != SQLITE_DONE)
		return sq_fail(q, rc, "delete", err);
	*deleted = sqlite3_changes(q->db);
	if (*deleted)
		sq_note(q, STORE_EV_DEL, key, NULL, 0);
	return 0;
}

static int put_locked(struct sq *q, const char *key, const void *val, size_t len, cx_err *err)
{
	if (sq_begin(q, err) < 0)
		return -1;
	int64_t rev = 0;
	int r = sq_bump(q, &rev, err);
	if (r == 0)
		r = put_in_txn(q, key, val, len, rev, err);
	return sq_end(q, r, err);
}

/* Put if absent, in the store's lock: 0 put, 1 present, CX_NOTFOUND lease gone. */
static int sq_create_lease(void *impl, const char *key, const void *val, size_t len, int64_t lease,
			   cx_err *err)
{
	struct sq *q = impl;
	pthread_mutex_lock(&q->mu);
	char *v = NULL;
	size_t vl = 0;
	int r = get_locked(q, key, &v, &vl, err);
	free(v);
	if (r == 0)
		r = 1;
	else if (r == CX_NOTFOUND)
		r = lease ? sq_put_lease_locked(q, key, val, len, lease, err) : put_locked(q, key, val, len, err);
	pthread_mutex_unlock(&q->mu);
	if (r == -1)
		return cx_err_wrap(err, "store: create '%.64s'", key);
	return r;
}

static int sq_put(void *impl, const char *key, const void *val, size_t len, cx_err *err)
{
	struct sq *q = impl;
	pthread_mutex_lock(&q->mu);
	int r = put_locked(q, key, val, len, err);
	pthread_mutex_unlock(&q->mu);
	if (r < 0)
		return cx_err_wrap(err, "store: put '%.64s'", key);
	return 0;
}

static int del_locked(struct sq *q, const char *key, cx_err *err)
{
	if (sq_begin(q, err) < 0)
		return -1;
	int deleted = 0;
	int r = del_in_txn(q, key, &deleted, err);
	/* A no-op delete must not bump the revision: end the transaction unused. */
	if (r == 0 && !deleted) {
		sq_rollback(q);
		return CX_NOTFOUND;
	}
	int64_t rev;
	if (r == 0)
		r = sq_bump(q, &rev, err);
	return sq_end(q, r, err);
}

static int sq_del(void *impl, const char *key, cx_err *err)
{
	struct sq *q = impl;
	pthread_mutex_lock(&q->mu);
	int r = del_locked(q, key, err);
	pthread_mutex_unlock(&q->mu);
	if (r == -1)
		return cx_err_wrap(err, "store: delete '%.64s'", key);
	return r;
}

static int list_locked(struct sq *q, const char *prefix, const char *after, size_t limit,
		       store_kv **out, size_t *out_n, cx_err *err)
{
	char succ[STORE_KEY_MAX];
	int lim_param;
	sqlite3_stmt *st = sq_prefix_stmt(q, ST_LIST_RANGE, ST_LIST_FROM, prefix, succ, &lim_param);
	/* LIMIT -1 is SQLite's "no limit". */
	sqlite3_bind_int64(st, lim_param, limit == 0 || limit > INT64_MAX ? -1 : (int64_t)limit);
	/* Keys are never empty, so "" bounds nothing. */
	sqlite3_bind_text(st, lim_param + 1, after ? after : "", -1, SQLITE_STATIC);

	store_kv *kv = NULL;
	size_t n = 0, cap = 0;
	int rc, r = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			store_kv *nkv = realloc(kv, ncap * sizeof *kv);
			if (!nkv) {
				r = cx_err_set(err, ENOMEM, "store: list: allocating %zu entries",
					       ncap);
				break;
			}
			kv = nkv;
			cap = ncap;
		}
		store_kv *e = &kv[n];
		memset(e, 0, sizeof *e);
		size_t klen;
		if (sq_copy_col(st, 0, &e->key, &klen, err) < 0 ||
		    sq_copy_col(st, 1, &e->val, &e->len, err) < 0) {
			free(e->key);
			r = -1;
			break;
		}
		n++;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = sq_fail(q, rc, "list", err);
	sq_done(st);
	if (r < 0) {
		store_kv_free(kv, n);
		return -1;
	}
	*out = kv;
	*out_n = n;
	return 0;
}

static int sq_list(void *impl, const char *prefix, const char *after, size_t limit, store_kv **out,
		   size_t *out_n, cx_err *err)
{
	struct sq *q = impl;
	pthread_mutex_lock(&q->mu);
	int r = list_locked(q, prefix, after, limit, out, out_n, err);
	pthread_mutex_unlock(&q->mu);
	if (r < 0)
		return cx_err_wrap(err, "store: list '%.64s'", prefix);
	return 0;
}

static int txn_locked(struct sq *q, const store_op *ops, size_t n, cx_err *err)
{
	if (sq_begin(q, err) < 0)
		return -1;
	int64_t rev = 0;
	int r = sq_bump(q, &rev, err);
	for (size_t i = 0; r == 0 && i < n; i++) {
		int deleted;
		if (ops[i].kind == STORE_PUT)
			r = put_in_txn(q, ops[i].key, ops[i].val, ops[i].len, rev, err);
		else /* STORE_DEL; kinds were checked by the front.  Absent keys are fine. */
			r = del_in_txn(q, ops[i].key, &deleted, err);
		if (r < 0)
			cx_err_wrap(err, "txn op %zu of %zu ('%.64s')", i + 1, n, ops[i].key);
	}
	return sq_end(q, r, err);
}

static int sq_txn(void *impl, const store_op *ops, size_t n, cx_err *err)
{
	struct sq *q = impl;
	pthread_mutex_lock(&q->mu);
	int r = txn_locked(q, ops, n, err);
	pthread_mutex_unlock(&q->mu);
	if (r < 0)
		return cx_err_wrap(err, "store: txn rolled back");
	return 0;
}

static int delete_prefix_locked(struct sq *q, const char *prefix, size_t *out_n, cx_err *err)
{
	if (sq_begin(q, err) < 0)
		return -1;
	char succ[STORE_KEY_MAX];
	int unused;
	sqlite3_stmt *st = sq_prefix_stmt(q, ST_DELP_RANGE, ST_DELP_FROM, prefix, succ, &unused);
	int rc;
	size_t deleted = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		deleted++;
		sq_note(q, STORE_EV_DEL, (const char *)sqlite3_column_text(st, 0), NULL, 0);
	}
	sq_done(st);
	if (rc != SQLITE_DONE)
		return sq_end(q, sq_fail(q, rc, "delete prefix", err), err);
	if (deleted == 0) {
		sq_rollback(q); /* nothing changed: no revision bump */
		return 0;
	}
	int64_t rev;
	int r = sq_bump(q, &rev, err);
	r = sq_end(q, r, err);
	if (r == 0 && out_n)
		*out_n = deleted;
	return r;
}

static int sq_delete_prefix(void *impl, const char *prefix, size_t *out_n, cx_err *err)
{
	struct sq *q = impl;
	pthread_mutex_lock(&q->mu);
	int r = delete_prefix_locked(q, prefix, out_n, err);
	pthread_mutex_unlock(&q->mu);
	if (r < 0)
		return cx_err_wrap(err, "store: delete prefix '%.64s'", prefix);
	return 0;
}

static int sq_revision(void *impl, int64_t *out, cx_err *err)
{
	struct sq *q = impl;
	pthread_mutex_lock(&q->mu);
	sqlite3_stmt *st = sq_stmt(q, ST_REV);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	sq_done(st);
	int r = rc == SQLITE_ROW ? 0 : sq_fail(q, rc, "reading revision", err);
	pthread_mutex_unlock(&q->mu);
	return r;
}

static void sq_close(void *impl)
{
	struct sq *q = impl;
	if (!q)
		return;
	sq_lease_stop(q);
	evlog_free(q->log);
	sq_pend_clear(q);
	free(q->pend);
	free(q->leases);
	pthread_cond_destroy(&q->lease_cv);
	for (int i = 0; i < ST__COUNT; i++)
		sqlite3_finalize(q->st[i]); /* NULL is a no-op */
	sqlite3_close(q->db);		    /* last connection: checkpoints the WAL */
	pthread_mutex_destroy(&q->mu);
	free(q->path);
	free(q);
}

static const struct store_ops sq_ops = {
    .name = "sqlite",
    .get = sq_get,
    .put = sq_put,
    .del = sq_del,
    .list = sq_list,
    .txn = sq_txn,
    .delete_prefix = sq_delete_prefix,
    .revision = sq_revision,
    .watch = sq_watch,
    .watch_cancel = sq_watch_cancel,
    .lease_grant = sq_lease_grant,
    .lease_keepalive = sq_lease_keepalive,
    .lease_revoke = sq_lease_revoke,
    .put_lease = sq_put_lease,
    .create_lease = sq_create_lease,
    .close = sq_close,
};

/* ---- open ---- */

/* Create the file ourselves, 0600 and without following a symlink: SQLite
 * would create it 0644 & ~umask, and its -wal/-shm files copy the main file's
 * mode, so getting this one right covers all three.  An existing file that is
 * group/other accessible is tightened. */
static int sq_create_file(const char *path, cx_err *err)
{
	cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return cx_err_set(err, errno, "store: opening %s", path);
	struct stat sb;
	if (fstat(fd, &sb) < 0)
		return cx_err_set(err, errno, "store: stat %s", path);
	if (!S_ISREG(sb.st_mode))
		return cx_err_set(err, EINVAL, "store: %s is not a regular file", path);
	if ((sb.st_mode & 077) && fchmod(fd, 0600) < 0)
		return cx_err_set(err, errno, "store: chmod 0600 %s", path);
	return 0;
}

static int sq_setup(struct sq *q, cx_err *err)
{
	int rc = sqlite3_open_v2(q->path, &q->db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				     SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW,
				 NULL);
	if (rc != SQLITE_OK) {
		if (!q->db)
			return cx_err_set(err, ENOMEM, "store: sqlite open %s: out of memory",
					  q->path);
		return sq_fail(q, rc, "open", err);
	}
	sqlite3_extended_result_codes(q->db, 1);
	sqlite3_busy_timeout(q->db, SQ_BUSY_TIMEOUT_MS);

	/* journal_mode answers with the mode actually in effect; WAL can be refused
	 * (e.g. on some network filesystems) and we would rather fail loudly. */
	sqlite3_stmt *st = NULL;
	rc = sqlite3_prepare_v2(q->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	int wal = rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW)
		return sq_fail(q, rc, "setting journal_mode=WAL", err);
	if (!wal)
		return cx_err_set(err, 0, "store: sqlite %s: WAL journal mode not available",
				  q->path);

	char *msg = NULL;
	rc = sqlite3_exec(q->db, "PRAGMA synchronous=FULL; PRAGMA trusted_schema=OFF;", NULL, NULL,
			  &msg);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(q->db, sq_schema, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		cx_err_set(err, 0, "store: sqlite %s: creating schema: %s (code %d)", q->path,
			   msg ? msg : sqlite3_errstr(rc), rc);
		sqlite3_free(msg);
		return -1;
	}

	for (int i = 0; i < ST__COUNT; i++) {
		rc = sqlite3_prepare_v3(q->db, sq_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &q->st[i],
					NULL);
		if (rc != SQLITE_OK)
			return sq_fail(q, rc, sq_sql[i], err);
	}
	return 0;
}

int store_open_sqlite(store **out, const char *path, cx_err *err)
{
	*out = NULL;
	if (!path || !*path)
		return cx_err_set(err, EINVAL, "store: empty sqlite database path");
	if (sq_create_file(path, err) < 0)
		return -1;
	struct sq *q = calloc(1, sizeof *q);
	if (!q)
		return cx_err_set(err, ENOMEM, "store: allocating sqlite backend");
	pthread_mutex_init(&q->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->lease_cv, &ca);
	pthread_condattr_destroy(&ca);
	q->path = strdup(path);
	if (!q->path) {
		sq_close(q);
		return cx_err_set(err, ENOMEM, "store: allocating sqlite backend");
	}
	int64_t rev = 0;
	if (sq_setup(q, err) < 0 || sq_revision(q, &rev, err) < 0 ||
	    evlog_new(&q->log, rev, err) < 0) {
		sq_close(q);
		return -1;
	}
	return store_new(out, &sq_ops, q, err);
}
