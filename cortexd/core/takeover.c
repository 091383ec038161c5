/* takeover.c — a dead node's sessions claimed as soon as its lease expires
 * (owner.h "Takeover").
 *
 * When a node dies (or stops cleanly and revokes its lease) etcd deletes its
 * owners/<id> keys.  The owner cache sees each delete on the store's watch
 * thread and hands the id here (owner_orphaned); a worker then claims the
 * sessions with the usual create-if-absent txn and reads their records, and
 * the service thread only links the sessions it won (sleeping, as
 * lifecycle_load leaves them).  So a session is re-owned within the lease TTL
 * plus a watch delivery, whether or not anybody asks for it, and no store
 * round trip runs on the service thread.  Every live node races for every
 * orphan; the txn picks one winner per session, the others see OWNER_OTHER.
 *
 * The record's key is sessions/<user>/<id> and an owners/ key names no user,
 * so a sweep pages through sessions/ (keys and values, 256 at a time) and
 * keeps the orphans it finds; a node death is rare and the list runs off the
 * service thread.  Past TO_MAX pending ids, or when the owners/ watch missed
 * events (RESYNC), the sweep takes every session no live node owns. */
#include "owner.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lifecycle.h"
#include "log.h"
#include "metrics.h"
#include "work.h"

#define TO_MAX	  65536 /* ids waiting for a sweep; past it: a full rescan */
#define TO_PAGE	  256
#define TO_SCAN_MAX 1024 /* past it a sweep takes every unowned session (no id scan) */
#define TO_ID_MAX 64
#define TO_NODE_MAX 128

struct orphan {
	char id[TO_ID_MAX];
	char node[TO_NODE_MAX]; /* its owner before the delete */
	int checked;		/* drop_live read nodes/<node> */
};

struct to_won {
	struct to_won *next;
	char *key; /* sessions/<user>/<id> */
	char *val; /* its record */
	size_t len;
};

struct to_job {
	struct orphan *ids;
	size_t n;
	int all;
	struct to_won *won;
	unsigned lost; /* claimed by another node first */
	int listed;    /* some owner was gone: sessions/ was read */
	cx_err err;
};

static pthread_mutex_t to_mu = PTHREAD_MUTEX_INITIALIZER;
/* under to_mu */
static struct orphan *to_ids;
static size_t to_n, to_cap;
static int to_all, to_busy, to_off = 1;
static store *to_st;
static struct cortexd *to_d;
/* service thread */
static uint64_t to_sweeps, to_lost_total;

static void to_run(void *arg);
static void to_done(void *arg);

/* Under to_mu: a job with what is pending, or NULL. */
static struct to_job *take_locked(void)
{
	if (to_busy || to_off || (!to_n && !to_all))
		return NULL;
	struct to_job *j = calloc(1, sizeof *j);
	if (!j)
		return NULL; /* left pending: the next orphan or sweep takes it */
	j->ids = to_ids;
	j->n = to_n;
	j->all = to_all;
	to_ids = NULL;
	to_n = to_cap = 0;
	to_all = 0;
	to_busy = 1;
	return j;
}

static void kick(void)
{
	pthread_mutex_lock(&to_mu);
	struct to_job *j = take_locked();
	pthread_mutex_unlock(&to_mu);
	if (j)
		work_submit(to_run, to_done, j);
}

void owner_orphaned(const char *id, const char *node)
{
	if (strlen(id) >= TO_ID_MAX || strlen(node) >= TO_NODE_MAX)
		return;
	pthread_mutex_lock(&to_mu);
	if (to_n == to_cap && !to_all) {
		size_t cap = to_cap ? to_cap * 2 : 16;
		void *p = cap <= TO_MAX ? realloc(to_ids, cap * sizeof *to_ids) : NULL;
		if (p) {
			to_ids = p;
			to_cap = cap;
		} else {
			to_all = 1; /* too many (or no memory): every unowned session */
		}
	}
	if (to_n < to_cap) {
		snprintf(to_ids[to_n].id, TO_ID_MAX, "%s", id);
		snprintf(to_ids[to_n].node, TO_NODE_MAX, "%s", node);
		to_ids[to_n].checked = 0;
		to_n++;
	}
	pthread_mutex_unlock(&to_mu);
	kick();
}

void owner_orphans_resync(void)
{
	pthread_mutex_lock(&to_mu);
	to_all = 1;
	pthread_mutex_unlock(&to_mu);
	kick();
}

static int wanted(const struct to_job *j, const char *id)
{
	if (j->all)
		return 1;
	for (size_t i = 0; i < j->n; i++)
		if (j->ids[i].id[0] && !strcmp(j->ids[i].id, id))
			return 1;
	return 0;
}

/* An owners/ key is also deleted with its session, or by an owner letting it
 * go; only a node that is gone leaves orphans.  Its lease took nodes/<node>
 * and its owners/ keys in one revision, so nodes/<node> is already gone when
 * the delete is seen.  Drops the ids of live nodes: 1 if any are left. */
static int drop_live(struct to_job *j)
{
	int left = 0;
	for (size_t i = 0; i < j->n; i++) {
		struct orphan *o = &j->ids[i];
		if (!o->id[0] || o->checked)
			continue;
		char key[200], *v = NULL;
		snprintf(key, sizeof key, "nodes/%s", o->node);
		cx_err e = CX_ERR_INIT;
		int rc = store_get(to_st, key, &v, NULL, &e);
		free(v);
		/* alive: its ids were deleted on purpose; gone, or the store
		 * failed: they are claimed (the txn decides).  One read per node. */
		for (size_t k = i; k < j->n; k++)
			if (j->ids[k].id[0] && !strcmp(j->ids[k].node, o->node)) {
				j->ids[k].checked = 1;
				if (rc == 0)
					j->ids[k].id[0] = '\0';
				else
					left = 1;
			}
	}
	return left;
}

/* Its uid is in uids/ (a record from before the cluster claimed uids gets
 * the key now); one another session holds is logged (owner.h). */
static void uid_keep(const char *id, const char *val, size_t len)
{
	json_t *o = json_loadb(val, len, 0, NULL);
	json_int_t uid = json_integer_value(json_object_get(o, "uid"));
	json_decref(o);
	char other[64] = "";
	cx_err e = CX_ERR_INIT;
	int rc = uid > 0 ? owner_uid_claim(to_st, (uid_t)uid, id, other, &e) : 0;
	if (rc == 1)
		log_error("session %s: its uid %lld is session %s's too (a record from before uids/)", id,
			  (long long)uid, other);
	else if (rc < 0)
		log_warn("session %s: uids/%lld: %s", id, (long long)uid, e.msg);
}

/* On a worker: claim the wanted sessions that no live node owns. */
static void to_run(void *arg)
{
	struct to_job *j = arg;
	char after[300] = "";
	if (j->n > TO_SCAN_MAX)
		j->all = 1;
	if (!j->all && !drop_live(j))
		return;
	j->listed = 1;
	for (;;) {
		store_kv *kv = NULL;
		size_t n = 0;
		if (store_list_after(to_st, "sessions/", after, TO_PAGE, &kv, &n, &j->err) < 0)
			return;
		for (size_t i = 0; i < n; i++) {
			const char *id = strrchr(kv[i].key, '/');
			char node[128], url[8];
			if (!id || !wanted(j, ++id) || strlen(id) >= TO_ID_MAX)
				continue;
			/* owned by a live node (the cache may lag: the txn decides) */
			if (owner_cache_lookup(id, node, sizeof node, url, sizeof url) == 1)
				continue;
			cx_err e = CX_ERR_INIT;
			enum owner_who who = owner_claim(to_st, id, node, sizeof node, &e);
			if (who == OWNER_OTHER) {
				j->lost++;
				continue;
			}
			if (who == OWNER_ERROR) {
				log_warn("takeover of session %s: %s", id, e.msg);
				continue;
			}
			/* Ours: its record as it is now (deleted in between: let go). */
			char *v = NULL;
			size_t len = 0;
			int rc = store_get(to_st, kv[i].key, &v, &len, &e);
			if (rc == CX_NOTFOUND) {
				owner_forget(to_st, id);
				continue;
			}
			struct to_won *w = rc == 0 ? calloc(1, sizeof *w) : NULL;
			if (!w || !(w->key = strdup(kv[i].key))) {
				log_warn("takeover of session %s: %s", id, rc ? e.msg : "out of memory");
				free(w);
				free(v);
				continue; /* claimed, not loaded: a request loads it (owner_route) */
			}
			uid_keep(id, v, len);
			w->val = v;
			w->len = len;
			w->next = j->won;
			j->won = w;
		}
		if (n)
			snprintf(after, sizeof after, "%s", kv[n - 1].key);
		store_kv_free(kv, n);
		if (n < TO_PAGE)
			return;
	}
}

/* On the service thread: the sessions won, loaded sleeping. */
static void to_done(void *arg)
{
	struct to_job *j = arg;
	pthread_mutex_lock(&to_mu);
	int off = to_off;
	pthread_mutex_unlock(&to_mu);
	to_sweeps += j->listed;
	to_lost_total += j->lost;
	if (j->err.code)
		log_warn("takeover sweep: %s", j->err.msg);
	while (j->won) {
		struct to_won *w = j->won;
		j->won = w->next;
		const char *id = strrchr(w->key, '/') + 1;
		cx_err e = CX_ERR_INIT;
		if (!off && !session_find(to_d, id)) { /* (stopping: the next start loads it) */
			if (lifecycle_load_record(to_d, w->key, w->val, w->len, &e) < 0) {
				log_warn("takeover of session %s: %s", id, e.msg);
			} else {
				owner_took_over(id);
			}
		}
		free(w->key);
		free(w->val);
		free(w);
	}
	int failed = j->err.code != 0;
	free(j->ids);
	free(j);
	pthread_mutex_lock(&to_mu);
	to_busy = 0;
	if (failed) /* the store failed mid-list: try every unowned session again */
		to_all = 1;
	pthread_mutex_unlock(&to_mu);
	kick();
}

static void to_metrics(FILE *f, void *arg)
{
	(void)arg;
	metrics_counter(f, "cortex_owner_takeover_sweeps_total",
			"Sweeps for the sessions of nodes that are gone (owners/ keys deleted with their lease)",
			to_sweeps);
	metrics_counter(f, "cortex_owner_takeover_lost_total",
			"Orphaned sessions another node claimed first", to_lost_total);
}

void owner_takeover_start(struct cortexd *d, store *st)
{
	to_d = d;
	to_st = st;
	pthread_mutex_lock(&to_mu);
	to_off = 0;
	pthread_mutex_unlock(&to_mu);
	metrics_register("owner_takeover", to_metrics, NULL);
	kick();
}

void owner_takeover_stop(void)
{
	pthread_mutex_lock(&to_mu);
	to_off = 1;
	free(to_ids);
	to_ids = NULL;
	to_n = to_cap = 0;
	to_all = 0;
	pthread_mutex_unlock(&to_mu);
}
