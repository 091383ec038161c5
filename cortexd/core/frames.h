/* frames.h — outgoing WebSocket frames and the small pure pieces of the
 * message path: byte-capped frame queues (LWS_PRE headroom), reassembly of
 * fragmented messages, and splicing "seq" into an agent line without
 * re-encoding it. */
#ifndef CORTEX_FRAMES_H
#define CORTEX_FRAMES_H

#include <stddef.h>
#include <stdint.h>

struct lws;

/* One frame, allocated once and shared by reference: the turn's resume
 * buffer and every client queue hold the same bytes (refs counts them). */
struct frame {
	uint32_t refs;
	uint64_t seq;        /* session seq of the frame (0: none), for resume */
	size_t len;
	unsigned char buf[]; /* LWS_PRE bytes of headroom, then len bytes of payload */
};
/* A FIFO of frame references: a ring of pointers, so a frame sits in any
 * number of queues.  bytes: the payload bytes of the frames queued. */
struct fqueue {
	struct frame **ring;
	size_t slots, head, n;
	size_t bytes;
};

/* A frame holding a copy of data (one reference, the caller's), or NULL (out
 * of memory: counted in frames_alloc_failures()). */
struct frame *frame_new(const void *data, size_t len);
const char *frame_data(const struct frame *f);
struct frame *frame_ref(struct frame *f);
void frame_unref(struct frame *f);
/* Takes the caller's reference.  -1 when the ring cannot grow: the reference
 * is dropped and the failure counted. */
int fq_push(struct fqueue *q, struct frame *f);
/* The oldest frame, and its reference, or NULL. */
struct frame *fq_pop(struct fqueue *q);
/* Not owned by the caller. */
struct frame *fq_peek(const struct fqueue *q);
struct frame *fq_at(const struct fqueue *q, size_t i);
void fq_clear(struct fqueue *q);
/* The lws write discipline: one frame per WRITEABLE callback, another
 * callback requested while frames remain.  -1 means close the connection. */
int fq_write_one(struct lws *wsi, struct fqueue *q);
/* The same for a client (server role, text frames): the queued frames, up
 * to 256 KiB, in one sendmsg (large frames by reference, with their header
 * in their headroom; small ones copied together).  Service thread only. */
int fq_write_batch(struct lws *wsi, struct fqueue *q);
/* Batched sends so far and the frames they carried (for /metrics). */
void frames_batch_counts(uint64_t *writes, uint64_t *frames);
/* Frames that could not be allocated on the message path (never silent). */
uint64_t frames_alloc_failures(void);
void frames_count_alloc_failure(void);
/* Payload bytes of frames alive now, and malloc_trim() calls made after a
 * large drop of them (memory given back to the system). */
size_t frames_live_bytes(void);
uint64_t frames_trims(void);

/* Reassembly of one fragmented WebSocket message, capped. */
struct rxbuf {
	char *buf;
	size_t len;
	int overflow; /* past the cap: the rest was discarded, answer at the final fragment */
};
/* 0, or -1 only when out of memory. */
int rxbuf_append(struct rxbuf *r, size_t cap, const void *in, size_t n);
void rxbuf_reset(struct rxbuf *r);

/* An agent line (a JSON object, possibly with leading blanks) as a new frame
 * whose payload is {"seq":N, ...the line's members...}: the bytes the agent
 * printed are the bytes clients get.  NULL if line is not an object or on
 * ENOMEM.  Pure apart from the allocation. */
struct frame *frame_splice_seq(const char *line, size_t len, uint64_t seq);

#endif
