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

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct job *todo_head, *todo_tail, *done_head, *done_tail;
static int stopping;
static pthread_t threads[8];
static unsigned nthreads_running;
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

static void *worker(void *unused)
{
	(void)unused;
	pthread_mutex_lock(&mu);
	for (;;) {
		struct job *j;
		while (!(j = pop(&todo_head, &todo_tail)) && !stopping)
			pthread_cond_wait(&cv, &mu);
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

int work_start(struct lws_context *ctx, unsigned n, cx_err *err)
{
	svc_ctx = ctx;
	if (n > sizeof threads / sizeof threads[0])
		n = sizeof threads / sizeof threads[0];
	for (unsigned i = 0; i < n; i++) {
		int rc = pthread_create(&threads[i], NULL, worker, NULL);
		if (rc)
			return cx_err_set(err, rc, "pthread_create");
		nthreads_running++;
	}
	return 0;
}

void work_submit(work_fn run, work_fn done, void *arg)
{
	struct job *j = calloc(1, sizeof *j);
	if (!j)
		abort(); /* out of memory for 32 bytes: nothing sensible left to do */
	j->run = run;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&mu);
	if (!run) {
		push(&done_head, &done_tail, j);
		if (svc_ctx)
			lws_cancel_service(svc_ctx);
	} else {
		push(&todo_head, &todo_tail, j);
		pthread_cond_signal(&cv);
	}
	pthread_mutex_unlock(&mu);
}

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
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	for (unsigned i = 0; i < nthreads_running; i++)
		pthread_join(threads[i], NULL);
	nthreads_running = 0;
	svc_ctx = NULL;
	work_drain_done();
}
