/* gw_queue.c — provider chunks from a curl thread to the service thread (see gw_queue.h). */
#include "gw_queue.h"

#include <stdlib.h>
#include <string.h>

void gw_queue_init(struct gw_queue *q)
{
	memset(q, 0, sizeof *q);
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
}

void gw_queue_destroy(struct gw_queue *q)
{
	for (struct gw_chunk *c = q->head, *n; c; c = n) {
		n = c->next;
		free(c);
	}
	q->head = q->tail = NULL;
	q->qbytes = 0;
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
}

int gw_queue_push(struct gw_queue *q, const char *p, size_t n, uint64_t t_us, size_t cap)
{
	struct gw_chunk *c = malloc(sizeof *c + LWS_PRE + GW_CHUNK_HEAD + n + 2);
	if (!c)
		return -1;
	c->next = NULL;
	c->t_us = t_us;
	c->len = n;
	memcpy(gw_chunk_data(c), p, n);

	pthread_mutex_lock(&q->mu);
	/* Backpressure: the agent reads slower than the provider sends. */
	while (q->qbytes && q->qbytes + n > cap && !q->abort)
		pthread_cond_wait(&q->cv, &q->mu);
	if (q->abort) {
		pthread_mutex_unlock(&q->mu);
		free(c);
		return -1;
	}
	/* The consumer re-arms itself while the queue is non-empty: only the
	 * first chunk needs a wake-up. */
	int wake = !q->head;
	if (q->tail)
		q->tail->next = c;
	else
		q->head = c;
	q->tail = c;
	q->qbytes += n;
	pthread_mutex_unlock(&q->mu);
	return wake;
}

void gw_queue_headers_done(struct gw_queue *q)
{
	pthread_mutex_lock(&q->mu);
	q->hdr_done = 1;
	pthread_mutex_unlock(&q->mu);
}

void gw_queue_finish(struct gw_queue *q)
{
	pthread_mutex_lock(&q->mu);
	q->finished = 1;
	pthread_mutex_unlock(&q->mu);
}

int gw_queue_aborted(struct gw_queue *q)
{
	return __atomic_load_n(&q->abort, __ATOMIC_RELAXED);
}

struct gw_chunk *gw_queue_pop(struct gw_queue *q, int take, struct gw_queue_state *st)
{
	pthread_mutex_lock(&q->mu);
	struct gw_chunk *c = NULL;
	if (take && (c = q->head)) {
		q->head = c->next;
		if (!q->head)
			q->tail = NULL;
		q->qbytes -= c->len;
		pthread_cond_signal(&q->cv);
	}
	st->hdr_done = q->hdr_done;
	st->finished = q->finished;
	st->more = q->head != NULL;
	pthread_mutex_unlock(&q->mu);
	return c;
}

void gw_queue_abort(struct gw_queue *q)
{
	pthread_mutex_lock(&q->mu);
	__atomic_store_n(&q->abort, 1, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
}
