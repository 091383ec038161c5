/* store_sqlite_lease.c — watches and leases of the SQLite backend, in the
 * process.  Watches: the event log (store_evlog.c) fed by the backend's own
 * commits.  Leases: in memory; the keys put with one are rows of lease_keys,
 * deleted in one revision when it is revoked or expires (a thread waits for
 * the next expiry).  The keys of a process that is gone are deleted when the
 * database is opened again (the schema in store_sqlite.c). */
#include "store_sqlite.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int sq_watch(void *impl, const char *prefix, int64_t from_rev, store_watch_fn cb, void *arg,
		    void **out, cx_err *err)
{
	struct sq *q = impl;
	/* Under mu, no commit is half published: "from now" is exact. */
	pthread_mutex_lock(&q->mu);
	int r = evlog_watch(q->log, prefix, from_rev, cb, arg, out, err);
	pthread_mutex_unlock(&q->mu);
	return r;
}

void sq_watch_cancel(void *impl, void *w)
{
	struct sq *q = impl;
	evlog_cancel(q->log, w);
}

/* ---- leases: in memory, their keys in lease_keys; a thread expires them ---- */

static uint64_t sq_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct sq_lease *lease_find(struct sq *q, int64_t id)
{
	for (size_t i = 0; i < q->nleases; i++)
		if (q->leases[i].id == id)
			return &q->leases[i];
	return NULL;
}

/* Forget the lease and delete its keys, in one revision. */
static int lease_end_locked(struct sq *q, struct sq_lease *l, cx_err *err)
{
	int64_t id = l->id;
	*l = q->leases[--q->nleases];
	if (sq_begin(q, err) < 0)
		return -1;
	sqlite3_stmt *st = sq_stmt(q, ST_LEASE_KEYS);
	sqlite3_bind_int64(st, 1, id);
	char **keys = NULL;
	size_t n = 0, cap = 0;
	int rc, r = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			char **nk = realloc(keys, cap * sizeof *nk);
			if (!nk) {
				r = cx_err_set(err, ENOMEM, "store: lease keys");
				break;
			}
			keys = nk;
		}
		if (!(keys[n] = strdup((const char *)sqlite3_column_text(st, 0)))) {
			r = cx_err_set(err, ENOMEM, "store: lease keys");
			break;
		}
		n++;
	}
	sq_done(st);
	if (r == 0 && rc != SQLITE_DONE)
		r = sq_fail(q, rc, "lease keys", err);
	int removed = 0;
	for (size_t i = 0; r == 0 && i < n; i++) {
		int d = 0;
		r = del_in_txn(q, keys[i], &d, err);
		removed += d;
	}
	int64_t rev;
	if (r == 0 && removed)
		r = sq_bump(q, &rev, err);
	for (size_t i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
	return sq_end(q, r, err);
}

static void *sq_reaper(void *arg)
{
	struct sq *q = arg;
	pthread_mutex_lock(&q->mu);
	while (!q->reaper_stop) {
		uint64_t now = sq_now_ms(), next = UINT64_MAX;
		for (size_t i = 0; i < q->nleases;) {
			struct sq_lease *l = &q->leases[i];
			if (l->deadline_ms <= now) {
				cx_err err = CX_ERR_INIT; /* nobody to tell; the keys stay */
				(void)lease_end_locked(q, l, &err);
				continue; /* the last lease moved into slot i */
			}
			if (l->deadline_ms < next)
				next = l->deadline_ms;
			i++;
		}
		if (next == UINT64_MAX) {
			pthread_cond_wait(&q->lease_cv, &q->mu);
			continue;
		}
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t wait = next - now;
		ts.tv_sec += (time_t)(wait / 1000u);
		ts.tv_nsec += (long)(wait % 1000u) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&q->lease_cv, &q->mu, &ts);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

int sq_lease_grant(void *impl, int64_t ttl_s, int64_t *out_id, cx_err *err)
{
	struct sq *q = impl;
	int r = 0;
	pthread_mutex_lock(&q->mu);
	if (!q->reaper_on) {
		int rc = pthread_create(&q->reaper, NULL, sq_reaper, q);
		if (rc != 0)
			r = cx_err_set(err, rc, "store: starting the lease thread");
		else
			q->reaper_on = 1;
	}
	if (r == 0 && q->nleases == q->cap_leases) {
		size_t ncap = q->cap_leases ? q->cap_leases * 2 : 8;
		struct sq_lease *nl = realloc(q->leases, ncap * sizeof *nl);
		if (!nl)
			r = cx_err_set(err, ENOMEM, "store: allocating a lease");
		else {
			q->leases = nl;
			q->cap_leases = ncap;
		}
	}
	if (r == 0) {
		*out_id = ++q->next_lease;
		q->leases[q->nleases++] = (struct sq_lease){*out_id, ttl_s,
							    sq_now_ms() + (uint64_t)ttl_s * 1000u};
		q->lease_used = 1;
		pthread_cond_signal(&q->lease_cv);
	}
	pthread_mutex_unlock(&q->mu);
	return r;
}

/* The lease if it is alive (an expired one the reaper has not reached is not). */
static struct sq_lease *lease_alive(struct sq *q, int64_t id)
{
	struct sq_lease *l = lease_find(q, id);
	return l && l->deadline_ms > sq_now_ms() ? l : NULL;
}

int sq_lease_keepalive(void *impl, int64_t id, int64_t *out_ttl, cx_err *err)
{
	(void)err;
	struct sq *q = impl;
	pthread_mutex_lock(&q->mu);
	struct sq_lease *l = lease_alive(q, id);
	if (l) {
		l->deadline_ms = sq_now_ms() + (uint64_t)l->ttl * 1000u;
		*out_ttl = l->ttl;
	}
	pthread_mutex_unlock(&q->mu);
	return l ? 0 : CX_NOTFOUND;
}

int sq_lease_revoke(void *impl, int64_t id, cx_err *err)
{
	struct sq *q = impl;
	pthread_mutex_lock(&q->mu);
	struct sq_lease *l = lease_alive(q, id);
	int r = l ? lease_end_locked(q, l, err) : CX_NOTFOUND;
	pthread_mutex_unlock(&q->mu);
	if (r == -1)
		return cx_err_wrap(err, "store: revoking lease %lld", (long long)id);
	return r;
}

int sq_put_lease_locked(struct sq *q, const char *key, const void *val, size_t len,
			    int64_t lease, cx_err *err)
{
	if (!lease_alive(q, lease))
		return CX_NOTFOUND;
	if (sq_begin(q, err) < 0)
		return -1;
	int64_t rev = 0;
	int r = sq_bump(q, &rev, err);
	if (r == 0)
		r = put_in_txn(q, key, val, len, rev, err);
	if (r == 0) {
		sqlite3_stmt *st = sq_stmt(q, ST_LEASE_SET);
		sq_bind_text(st, 1, key, strlen(key));
		sqlite3_bind_int64(st, 2, lease);
		int rc = sqlite3_step(st);
		sq_done(st);
		if (rc != SQLITE_DONE)
			r = sq_fail(q, rc, "put (lease)", err);
	}
	return sq_end(q, r, err);
}

int sq_put_lease(void *impl, const char *key, const void *val, size_t len, int64_t lease,
			cx_err *err)
{
	struct sq *q = impl;
	pthread_mutex_lock(&q->mu);
	int r = sq_put_lease_locked(q, key, val, len, lease, err);
	pthread_mutex_unlock(&q->mu);
	if (r == -1)
		return cx_err_wrap(err, "store: put '%.64s'", key);
	return r;
}

void sq_lease_stop(struct sq *q)
{
	if (!q->reaper_on)
		return;
	pthread_mutex_lock(&q->mu);
	q->reaper_stop = 1;
	pthread_cond_signal(&q->lease_cv);
	pthread_mutex_unlock(&q->mu);
	pthread_join(q->reaper, NULL);
}
