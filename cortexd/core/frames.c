/* frames.c — see frames.h. */
#include "frames.h"

#include <libwebsockets.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>

static uint64_t alloc_failures;
/* Service thread only, like every frame. */
static size_t live_bytes, live_high;
static uint64_t trims;
static uint64_t batch_writes, batch_frames; /* fq_write_batch */

/* After a burst is freed (a turn's frames held for slow clients), glibc
 * keeps the pages in its heap; give them back once the live frames fall to a
 * quarter of their high-water mark, if that freed at least TRIM_MIN. */
#define TRIM_MIN (4u << 20)

uint64_t frames_alloc_failures(void) { return alloc_failures; }
void frames_count_alloc_failure(void) { alloc_failures++; }
size_t frames_live_bytes(void) { return live_bytes; }
uint64_t frames_trims(void) { return trims; }

static struct frame *frame_alloc(size_t len)
{
	struct frame *f = malloc(sizeof *f + LWS_PRE + len);
	if (!f) {
		alloc_failures++;
		return NULL;
	}
	f->refs = 1;
	f->seq = 0;
	f->len = len;
	live_bytes += len;
	if (live_bytes > live_high)
		live_high = live_bytes;
	return f;
}

struct frame *frame_new(const void *data, size_t len)
{
	struct frame *f = frame_alloc(len);
	if (f)
		memcpy(f->buf + LWS_PRE, data, len);
	return f;
}

const char *frame_data(const struct frame *f) { return (const char *)f->buf + LWS_PRE; }

struct frame *frame_ref(struct frame *f)
{
	f->refs++;
	return f;
}

void frame_unref(struct frame *f)
{
	if (!f || --f->refs)
		return;
	live_bytes -= f->len;
	free(f);
	if (live_high - live_bytes >= TRIM_MIN && live_bytes < live_high / 4) {
		malloc_trim(0);
		trims++;
		live_high = live_bytes;
	}
}

#define FQ_MIN_SLOTS 16u
#define FQ_KEEP_SLOTS 1024u /* an emptied ring larger than this is freed */

static int fq_grow(struct fqueue *q)
{
	size_t slots = q->slots ? q->slots * 2 : FQ_MIN_SLOTS;
	struct frame **r = malloc(slots * sizeof *r);
	if (!r)
		return -1;
	for (size_t i = 0; i < q->n; i++)
		r[i] = q->ring[(q->head + i) & (q->slots - 1)];
	free(q->ring);
	q->ring = r;
	q->slots = slots;
	q->head = 0;
	return 0;
}

int fq_push(struct fqueue *q, struct frame *f)
{
	if (q->n == q->slots && fq_grow(q) < 0) {
		alloc_failures++;
		frame_unref(f);
		return -1;
	}
	q->ring[(q->head + q->n) & (q->slots - 1)] = f;
	q->n++;
	q->bytes += f->len;
	return 0;
}

struct frame *fq_peek(const struct fqueue *q) { return q->n ? q->ring[q->head] : NULL; }

struct frame *fq_at(const struct fqueue *q, size_t i)
{
	return i < q->n ? q->ring[(q->head + i) & (q->slots - 1)] : NULL;
}

struct frame *fq_pop(struct fqueue *q)
{
	if (!q->n)
		return NULL;
	struct frame *f = q->ring[q->head];
	q->head = (q->head + 1) & (q->slots - 1);
	q->n--;
	q->bytes -= f->len;
	if (!q->n && q->slots > FQ_KEEP_SLOTS) {
		free(q->ring);
		q->ring = NULL;
		q->slots = q->head = 0;
	}
	return f;
}

void fq_clear(struct fqueue *q)
{
	for (size_t i = 0; i < q->n; i++)
		frame_unref(q->ring[(q->head + i) & (q->slots - 1)]);
	free(q->ring);
	memset(q, 0, sizeof *q);
}

/* One frame per WRITEABLE.  Writing more while lws_send_pipe_choked() says
 * the socket takes them was measured (bench/flood.js, 16 per callback): no
 * gain for 100 B deltas, whose ceiling is elsewhere, so it is not done. */
int fq_write_one(struct lws *wsi, struct fqueue *q)
{
	struct frame *f = fq_pop(q);
	if (!f)
		return 0;
	/* lws writes the frame's header into the headroom: the same bytes for
	 * every client (server frames are unmasked), and lws copies what the
	 * socket did not take, so the frame may go at once. */
	int n = lws_write(wsi, f->buf + LWS_PRE, f->len, LWS_WRITE_TEXT);
	frame_unref(f);
	if (n < 0)
		return -1;
	if (q->n)
		lws_callback_on_writable(wsi);
	return 0;
}

/* A burst of frames to one client in one send.  Each frame's WebSocket
 * header is written into its own headroom (the same bytes for every client:
 * server frames are unmasked, and lws_write would put them there too), so a
 * frame is one contiguous run on the wire, and the queued frames go out with
 * one sendmsg() of references: a 64 KB delta's frame is not copied by
 * cortexd on its way out (a batch buffer had been a copy per frame, and
 * frames over half of it went one send each).  Small frames are copied into
 * the service thread's staging buffer (one iovec for a run of them: a
 * thousand 100 B deltas are not a thousand iovecs).  This is the socket's
 * byte stream exactly as lws would write it, so it is done only when lws has
 * nothing of its own buffered for the connection (and never on TLS or a
 * multiplexed stream); what the socket did not take of a frame cut in the
 * middle goes to lws as raw bytes, which it sends before anything else
 * (its buffered-out list); the frames not begun stay queued. */
#define FQ_SEND_MAX (256u << 10) /* bytes per sendmsg: the socket's buffer decides the rest */
#define FQ_IOV 64
#define FQ_MAXF 2048 /* frames per send (100 B ones: the staging buffer's worth) */
#define FQ_SMALL 2048 /* frames below this are copied into the staging buffer */
#define FQ_BATCH_MAX (128u << 10) /* the staging buffer */

static size_t ws_header(unsigned char *p, size_t len)
{
	p[0] = 0x81; /* FIN + text */
	if (len < 126) {
		p[1] = (unsigned char)len;
		return 2;
	}
	if (len < 65536) {
		p[1] = 126;
		p[2] = (unsigned char)(len >> 8);
		p[3] = (unsigned char)len;
		return 4;
	}
	p[1] = 127;
	for (int i = 0; i < 8; i++)
		p[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	return 10;
}

/* lws's own path, through the staging buffer: TLS, a stream of a muxed
 * connection, or bytes lws still holds for the connection. */
static int write_batch_lws(struct lws *wsi, struct fqueue *q)
{
	static unsigned char buf[LWS_PRE + FQ_BATCH_MAX];
	struct frame *f = fq_peek(q);
	/* Not two frames in the batch (a 64 KB delta's frame fills half of it):
	 * the frame goes from where it lies, not copied into the batch first. */
	if (q->n < 2 || !f || 20 + f->len + fq_at(q, 1)->len > FQ_BATCH_MAX)
		return fq_write_one(wsi, q);
	size_t off = 0;
	while ((f = fq_peek(q)) && off + 10 + f->len <= FQ_BATCH_MAX) {
		off += ws_header(buf + LWS_PRE + off, f->len);
		memcpy(buf + LWS_PRE + off, f->buf + LWS_PRE, f->len);
		off += f->len;
		frame_unref(fq_pop(q));
		batch_frames++;
	}
	batch_writes++;
	if (lws_write(wsi, buf + LWS_PRE, off, LWS_WRITE_HTTP) < 0)
		return -1;
	if (q->n)
		lws_callback_on_writable(wsi);
	return 0;
}

int fq_write_batch(struct lws *wsi, struct fqueue *q)
{
	static unsigned char stage[FQ_BATCH_MAX];
	if (!q->n)
		return 0;
	if (lws_is_ssl(wsi) || lws_get_network_wsi(wsi) != wsi || lws_partial_buffered(wsi))
		return write_batch_lws(wsi, q);
	_Static_assert(LWS_PRE >= 10, "a frame's headroom holds its WebSocket header");
	struct iovec iov[FQ_IOV];
	/* Where each frame's wire bytes start (a frame's header and payload
	 * are one run, in its headroom and buffer or in the staging buffer). */
	static const unsigned char *wire[FQ_MAXF];
	static size_t wlen[FQ_MAXF];
	size_t niov = 0, nf = 0, total = 0, staged = 0;
	for (struct frame *f; nf < FQ_MAXF && (f = fq_at(q, nf));) {
		unsigned char hdr[10];
		size_t hl = ws_header(hdr, f->len), w = hl + f->len;
		if (nf && total + w > FQ_SEND_MAX)
			break;
		const unsigned char *at;
		if (w <= FQ_SMALL && staged + w <= sizeof stage) {
			unsigned char *p = stage + staged;
			memcpy(p, hdr, hl);
			memcpy(p + hl, f->buf + LWS_PRE, f->len);
			if (niov && (unsigned char *)iov[niov - 1].iov_base + iov[niov - 1].iov_len == p)
				iov[niov - 1].iov_len += w;
			else if (niov < FQ_IOV)
				iov[niov++] = (struct iovec){p, w};
			else
				break;
			staged += w;
			at = p;
		} else {
			if (niov == FQ_IOV)
				break;
			unsigned char *p = f->buf + LWS_PRE - hl;
			memcpy(p, hdr, hl);
			iov[niov++] = (struct iovec){p, w};
			at = p;
		}
		wire[nf] = at;
		wlen[nf] = w;
		nf++;
		total += w;
	}
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = niov};
	ssize_t n;
	do
		n = sendmsg(lws_get_socket_fd(wsi), &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -1; /* the peer is gone: close */
		n = 0;
	}
	size_t sent = (size_t)n;
	if (nf > 1 && sent) {
		batch_writes++;
		batch_frames += nf;
	}
	for (size_t k = 0; k < nf && sent; k++) {
		if (sent < wlen[k]) {
			/* Cut inside this frame: the rest goes first, held by lws. */
			if (lws_write(wsi, (unsigned char *)wire[k] + sent, wlen[k] - sent, LWS_WRITE_HTTP) < 0)
				return -1;
			sent = wlen[k];
		}
		sent -= wlen[k];
		frame_unref(fq_pop(q));
	}
	if (q->n)
		lws_callback_on_writable(wsi);
	return 0;
}

void frames_batch_counts(uint64_t *writes, uint64_t *frames)
{
	*writes = batch_writes;
	*frames = batch_frames;
}

int rxbuf_append(struct rxbuf *r, size_t cap, const void *in, size_t n)
{
	if (r->overflow || r->len + n > cap) {
		r->overflow = 1;
		return 0;
	}
	char *nb = realloc(r->buf, r->len + n + 1);
	if (!nb)
		return -1;
	r->buf = nb;
	memcpy(nb + r->len, in, n);
	r->len += n;
	nb[r->len] = '\0';
	return 0;
}

void rxbuf_reset(struct rxbuf *r)
{
	free(r->buf);
	r->buf = NULL;
	r->len = 0;
	r->overflow = 0;
}

static int blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

struct frame *frame_splice_seq(const char *line, size_t len, uint64_t seq)
{
	size_t i = 0;
	while (i < len && blank(line[i]))
		i++;
	size_t e = len;
	while (e > i && blank(line[e - 1]))
		e--;
	if (i >= len || line[i] != '{' || e - i < 2 || line[e - 1] != '}')
		return NULL; /* not an object (agent_line.c parsed it first; this is the last guard) */
	const char *r = line + i + 1; /* after '{' */
	size_t rest = len - i - 1;
	size_t k = 0;
	while (k < rest && blank(r[k]))
		k++;
	int empty = k < rest && r[k] == '}';
	char head[40];
	int hn = snprintf(head, sizeof head, "{\"seq\":%llu", (unsigned long long)seq);
	size_t total = (size_t)hn + (empty ? 0 : 1) + (empty ? rest - k : rest);
	struct frame *f = frame_alloc(total);
	if (!f)
		return NULL;
	char *p = (char *)f->buf + LWS_PRE;
	memcpy(p, head, (size_t)hn);
	size_t off = (size_t)hn;
	if (!empty)
		p[off++] = ',';
	memcpy(p + off, empty ? r + k : r, empty ? rest - k : rest);
	f->seq = seq;
	return f;
}
