/* work.c — see work.h. */
#include "work.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <stdlib.h>

struct job {
	work_fn run, done;
	void *arg;
	struct job *next;
};

/* One lane: its own queue and threads.  Every lane's finished jobs go to one
 * done list (the service thread drains it). */
struct lane {
	struct job *todo_head, *todo_tail;
	pthread_cond_t cv;
	pthread_t threads[WORK_LANE_MAX_THREADS];
	unsigned nthreads;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct lane lanes[WORK_LANES] = {
	[WORK_GENERAL] = {.cv = PTHREAD_COND_INITIALIZER},
	[WORK_SANDBOX] = {.cv = PTHREAD_COND_INITIALIZER},
};
static struct job *done_head, *done_tail;
static int stopping;
static struct lws_context *svc_ctx;

static void push(struct job **head, struct job **tail, struct job *j)
{
	j->next = NULL;
	if (*tail)
		(*tail)->next = j;
	else
		*head = j;
	*tail = j;
}

static struct job *pop(struct job **head, struct job **tail)
{
	struct job *j = *head;
	if (j) {
		*head = j->next;
		if (!*head)
			*tail = NULL;
	}
	return j;
}

static void *worker(void *arg)
{
	struct lane *l = arg;
	pthread_mutex_lock(&mu);
	for (;;) {
		struct job *j;
		while (!(j = pop(&l->todo_head, &l->todo_tail)) && !stopping)
			pthread_cond_wait(&l->cv, &mu);
		if (!j)
			break;
		pthread_mutex_unlock(&mu);
		if (j->run)
			j->run(j->arg);
		pthread_mutex_lock(&mu);
		if (j->done) {
			push(&done_head, &done_tail, j);
			if (svc_ctx)
				lws_cancel_service(svc_ctx);
		} else {
			free(j);
		}
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

int work_start_lane(enum work_lane lane, unsigned n, cx_err *err)
{
	struct lane *l = &lanes[lane];
	if (n > WORK_LANE_MAX_THREADS)
		n = WORK_LANE_MAX_THREADS;
	for (unsigned i = l->nthreads; i < n; i++) {
		int rc = pthread_create(&l->threads[i], NULL, worker, l);
		if (rc)
			return cx_err_set(err, rc, "pthread_create");
		l->nthreads++;
	}
	return 0;
}

int work_start(struct lws_context *ctx, unsigned n, cx_err *err)
{
	svc_ctx = ctx;
	return work_start_lane(WORK_GENERAL, n, err);
}

void work_submit_lane(enum work_lane lane, work_fn run, work_fn done, void *arg)
{
	struct job *j = calloc(1, sizeof *j);
	if (!j)
		abort(); /* out of memory for 32 bytes: nothing sensible left to do */
	j->run = run;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&mu);
	struct lane *l = &lanes[lane];
	if (!l->nthreads) /* a lane that was never started: the general one runs it */
		l = &lanes[WORK_GENERAL];
	if (!run) {
		push(&done_head, &done_tail, j);
		if (svc_ctx)
			lws_cancel_service(svc_ctx);
	} else {
		push(&l->todo_head, &l->todo_tail, j);
		pthread_cond_signal(&l->cv);
	}
	pthread_mutex_unlock(&mu);
}

void work_submit(work_fn run, work_fn done, void *arg) { work_submit_lane(WORK_GENERAL, run, done, arg); }

void work_drain_done(void)
{
	for (;;) {
		pthread_mutex_lock(&mu);
		struct job *j = pop(&done_head, &done_tail);
		pthread_mutex_unlock(&mu);
		if (!j)
			return;
		j->done(j->arg);
		free(j);
	}
}

void work_stop(void)
{
	pthread_mutex_lock(&mu);
	stopping = 1;
	for (int i = 0; i < WORK_LANES; i++)
		pthread_cond_broadcast(&lanes[i].cv);
	pthread_mutex_unlock(&mu);
	for (int i = 0; i < WORK_LANES; i++) {
		for (unsigned k = 0; k < lanes[i].nthreads; k++)
			pthread_join(lanes[i].threads[k], NULL);
		lanes[i].nthreads = 0;
	}
	svc_ctx = NULL;
	work_drain_done();
	stopping = 0; /* a later work_start (unit tests) starts afresh */
}
