/* frames.c — see frames.h. */
#include "frames.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>

static uint64_t alloc_failures;

uint64_t frames_alloc_failures(void) { return alloc_failures; }
void frames_count_alloc_failure(void) { alloc_failures++; }

static struct frame *frame_alloc(size_t len)
{
	struct frame *f = malloc(sizeof *f + LWS_PRE + len);
	if (!f) {
		alloc_failures++;
		return NULL;
	}
	f->next = NULL;
	f->seq = 0;
	f->len = len;
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

void fq_push(struct fqueue *q, struct frame *f)
{
	if (q->tail)
		q->tail->next = f;
	else
		q->head = f;
	q->tail = f;
	q->bytes += f->len;
}

struct frame *fq_pop(struct fqueue *q)
{
	struct frame *f = q->head;
	if (f) {
		q->head = f->next;
		if (!q->head)
			q->tail = NULL;
		q->bytes -= f->len;
		f->next = NULL;
	}
	return f;
}

void fq_clear(struct fqueue *q)
{
	struct frame *f;
	while ((f = fq_pop(q)))
		free(f);
}

int fq_write_one(struct lws *wsi, struct fqueue *q)
{
	struct frame *f = fq_pop(q);
	if (!f)
		return 0;
	int n = lws_write(wsi, f->buf + LWS_PRE, f->len, LWS_WRITE_TEXT);
	free(f);
	if (n < 0)
		return -1;
	if (q->head)
		lws_callback_on_writable(wsi);
	return 0;
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
