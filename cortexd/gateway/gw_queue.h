/* gw_queue.h — the hand-over of one provider response from its curl thread
 * to the lws service thread: a capped queue of body chunks plus the
 * "headers known" and "finished" flags, under one mutex.
 *
 * The producer (curl thread) waits while the queue holds its cap, so a slow
 * agent slows the provider down instead of growing memory; the consumer
 * (service thread) never waits.  gw_queue_abort() releases the producer. */
#ifndef CORTEX_GW_QUEUE_H
#define CORTEX_GW_QUEUE_H

#include <libwebsockets.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Room before the payload for lws and the chunked framing ("<hex>\r\n"),
 * and 2 bytes after it ("\r\n"). */
#define GW_CHUNK_HEAD 16
struct gw_chunk {
	struct gw_chunk *next;
	uint64_t t_us;	     /* when the provider's bytes arrived */
	size_t len;	     /* payload bytes */
	unsigned char buf[]; /* LWS_PRE + GW_CHUNK_HEAD, payload, 2 */
};

static inline unsigned char *gw_chunk_data(struct gw_chunk *c)
{
	return c->buf + LWS_PRE + GW_CHUNK_HEAD;
}

struct gw_queue {
	pthread_mutex_t mu;
	pthread_cond_t cv;	      /* drained / aborted */
	int abort;		      /* [mu] (also read atomically, without mu) */
	int hdr_done;		      /* [mu] status + headers known (status >= 200) */
	int finished;		      /* [mu] the producer is done */
	struct gw_chunk *head, *tail; /* [mu] */
	size_t qbytes;		      /* [mu] payload bytes queued */
};

/* A consistent view for the consumer. */
struct gw_queue_state {
	int hdr_done, finished;
	int more; /* chunks are (still) queued */
};

void gw_queue_init(struct gw_queue *q);
/* Frees what is still queued. */
void gw_queue_destroy(struct gw_queue *q);

/* Producer: queue a copy of n bytes, waiting while cap bytes are queued.
 * 1: queued into an empty queue (wake the consumer); 0: queued;
 * -1: aborted or out of memory (nothing queued). */
int gw_queue_push(struct gw_queue *q, const char *p, size_t n, uint64_t t_us, size_t cap);
void gw_queue_headers_done(struct gw_queue *q);
void gw_queue_finish(struct gw_queue *q);
int gw_queue_aborted(struct gw_queue *q); /* lock-free: curl's progress callback */

/* Consumer: the state, and with take the first chunk (the caller frees it;
 * NULL if none). */
struct gw_chunk *gw_queue_pop(struct gw_queue *q, int take, struct gw_queue_state *st);
/* Stop the producer: its push fails from now on. */
void gw_queue_abort(struct gw_queue *q);

#endif
