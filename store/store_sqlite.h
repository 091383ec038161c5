/* store_sqlite.h — what store_sqlite.c shares with store_sqlite_lease.c
 * (watches and leases).  Internal to store/. */
#ifndef CORTEX_STORE_SQLITE_H
#define CORTEX_STORE_SQLITE_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>

#include "store.h"
#include "store_evlog.h"

enum sq_stmt {
	ST_GET,
	ST_PUT,
	ST_DEL,
	ST_LIST_RANGE, /* prefix with an upper bound */
	ST_LIST_FROM,  /* prefix with no successor (empty or all 0xff) */
	ST_DELP_RANGE,
	ST_DELP_FROM,
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_BUMP,
	ST_REV,
	ST_LEASE_SET,
	ST_LEASE_CLEAR,
	ST_LEASE_KEYS,
	ST__COUNT
};

/* A change of the open transaction, published to watchers once committed. */
struct sq_pend {
	store_event_kind kind;
	char *key;	 /* owned */
	const void *val; /* not owned: the caller's, valid for the call */
	size_t len;
};

struct sq_lease {
	int64_t id, ttl;
	uint64_t deadline_ms; /* monotonic */
};

struct sq {
	pthread_mutex_t mu; /* guards db and every cached statement */
	sqlite3 *db;
	sqlite3_stmt *st[ST__COUNT];
	char *path; /* for error messages */
	/* watch: changes of the open transaction, then the log */
	struct evlog *log;
	struct sq_pend *pend;
	size_t npend, cap_pend;
	int64_t pend_rev;
	int pend_oom;
	/* leases (in the process), under mu; the reaper thread expires them */
	struct sq_lease *leases;
	size_t nleases, cap_leases;
	int64_t next_lease;
	int lease_used; /* a lease was ever granted: puts detach keys */
	int reaper_on, reaper_stop;
	pthread_cond_t lease_cv;
	pthread_t reaper;
};

/* ---- store_sqlite.c: helpers, called with q->mu held ---- */
int sq_fail(struct sq *q, int rc, const char *what, cx_err *err);
sqlite3_stmt *sq_stmt(struct sq *q, enum sq_stmt id);
void sq_done(sqlite3_stmt *st);
int sq_bind_text(sqlite3_stmt *st, int idx, const char *s, size_t len);
int sq_begin(struct sq *q, cx_err *err);
int sq_end(struct sq *q, int rc, cx_err *err);
int sq_bump(struct sq *q, int64_t *rev, cx_err *err);
int put_in_txn(struct sq *q, const char *key, const void *val, size_t len, int64_t rev,
	       cx_err *err);
int del_in_txn(struct sq *q, const char *key, int *deleted, cx_err *err);

/* ---- store_sqlite_lease.c: the ops of watches and leases ---- */
int sq_watch(void *impl, const char *prefix, int64_t from_rev, store_watch_fn cb, void *arg,
	     void **out, cx_err *err);
void sq_watch_cancel(void *impl, void *w);
int sq_lease_grant(void *impl, int64_t ttl_s, int64_t *out_id, cx_err *err);
int sq_lease_keepalive(void *impl, int64_t id, int64_t *out_ttl, cx_err *err);
int sq_lease_revoke(void *impl, int64_t id, cx_err *err);
/* q->mu held: put key attached to a live lease (CX_NOTFOUND if it is not). */
int sq_put_lease_locked(struct sq *q, const char *key, const void *val, size_t len, int64_t lease,
			cx_err *err);
int sq_put_lease(void *impl, const char *key, const void *val, size_t len, int64_t lease,
		 cx_err *err);
/* Stop the lease thread (close). */
void sq_lease_stop(struct sq *q);

#endif
