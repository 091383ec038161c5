/* create_commit.c — group commit of created sessions' rows.
 *
 * A create is answered (201, and its session starts) only once its row is
 * durable: one SQLite commit with synchronous=FULL (an fsync) or one etcd
 * txn.  A burst of creates committed one by one waited on one fsync after
 * another, each behind the sandbox lane's disk I/O; here the rows that
 * arrive while a commit runs go together in the next one (one fsync for all
 * of them, at most CREATE_BATCH_MAX rows).  Each create is still
 * acknowledged only after the commit that holds its row returned: never
 * before.  A batch that fails is retried row by row, so one bad row fails
 * only its own create.  Service thread, except create_commit_run (a worker).
 */
#include "edge.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "work.h"

#define CREATE_BATCH_MAX 64 /* rows per commit (an etcd txn takes 100 ops at most) */

struct create_item {
	struct create_item *next;
	store *st;
	const char *key, *val;  /* not owned: the create's, alive until j completes */
	struct api_defer *j;
	int rc;
	cx_err err;
};

struct create_batch {
	store *st;
	struct create_item *items;
	size_t n;
};

static struct create_item *q_head, **q_tail = &q_head;
static int inflight;

static void create_commit_run(void *arg)
{
	struct create_batch *b = arg;
	cx_err err = CX_ERR_INIT;
	store_op *ops = calloc(b->n, sizeof *ops);
	size_t i = 0;
	for (struct create_item *it = b->items; ops && it; it = it->next, i++)
		ops[i] = (store_op){.kind = STORE_PUT, .key = it->key, .val = it->val, .len = strlen(it->val)};
	int rc = ops ? store_txn(b->st, ops, b->n, &err) : cx_err_set(&err, ENOMEM, "out of memory");
	free(ops);
	for (struct create_item *it = b->items; it; it = it->next) {
		if (rc == 0 || b->n == 1) {
			it->rc = rc;
			it->err = err;
		} else { /* one row may be the cause: each alone */
			it->rc = store_put(b->st, it->key, it->val, strlen(it->val), &it->err);
		}
	}
}

static void kick(void);

static void create_commit_done(void *arg)
{
	struct create_batch *b = arg;
	inflight = 0;
	struct create_item *it = b->items;
	free(b);
	kick(); /* the next rows commit while these are answered */
	while (it) {
		struct create_item *next = it->next;
		api_defer_complete(it->j, it->rc, &it->err); /* may free what key/val point to */
		free(it);
		it = next;
	}
}

static void kick(void)
{
	if (inflight || !q_head)
		return;
	struct create_batch *b = calloc(1, sizeof *b);
	if (!b)
		return; /* retried at the next create or batch end */
	b->st = q_head->st;
	b->items = q_head;
	struct create_item *last = q_head;
	for (b->n = 1; b->n < CREATE_BATCH_MAX && last->next; b->n++)
		last = last->next;
	q_head = last->next;
	if (!q_head)
		q_tail = &q_head;
	last->next = NULL;
	inflight = 1;
	work_submit(create_commit_run, create_commit_done, b);
}

void create_commit(store *st, const char *key, const char *val, struct api_resp *resp, api_then_fn then,
		   void *arg)
{
	struct create_item *it = calloc(1, sizeof *it);
	if (!it) {
		then(arg, -1, &(cx_err){ENOMEM, "out of memory"}, resp);
		return;
	}
	if (!(it->j = api_defer_event(resp, then, arg))) { /* then() already said so */
		free(it);
		return;
	}
	it->st = st;
	it->key = key;
	it->val = val;
	*q_tail = it;
	q_tail = &it->next;
	kick();
}
