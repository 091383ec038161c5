/* outq.c — frames waiting for LWS_CALLBACK_SERVER_WRITEABLE (and lines
 * waiting for an agent's stdin).  Each frame is allocated with LWS_PRE bytes
 * of headroom so lws_write() can put the WebSocket header in front without
 * copying. */
#include "wsa.h"

#include <errno.h>
#include <libwebsockets.h>
#include <string.h>

static int push(struct wsa_outq *q, const char *payload, size_t len, bool nl, cx_err *err)
{
	size_t extra = nl ? 1 : 0;
	struct wsa_frame *f = malloc(sizeof *f + LWS_PRE + len + extra);
	if (!f)
		return cx_err_set(err, ENOMEM, "frame of %zu bytes", len);
	f->next = NULL;
	f->len = len + extra;
	f->seq = 0;
	f->unnumbered = false;
	memcpy(f->data + LWS_PRE, payload, len);
	if (nl)
		f->data[LWS_PRE + len] = '\n';
	len = f->len;
	if (q->tail)
		q->tail->next = f;
	else
		q->head = f;
	q->tail = f;
	q->bytes += len;
	q->count++;
	return 0;
}

int wsa_outq_push(struct wsa_outq *q, const char *payload, size_t len, cx_err *err)
{
	return push(q, payload, len, false, err);
}

int wsa_outq_push_line(struct wsa_outq *q, const char *payload, size_t len, cx_err *err)
{
	return push(q, payload, len, true, err);
}

struct wsa_frame *wsa_outq_pop(struct wsa_outq *q)
{
	struct wsa_frame *f = q->head;
	if (!f)
		return NULL;
	q->head = f->next;
	if (!q->head)
		q->tail = NULL;
	q->bytes -= f->len;
	q->count--;
	f->next = NULL;
	return f;
}

void wsa_outq_append(struct wsa_outq *q, struct wsa_frame *f)
{
	f->next = NULL;
	if (q->tail)
		q->tail->next = f;
	else
		q->head = f;
	q->tail = f;
	q->bytes += f->len;
	q->count++;
}

void wsa_outq_clear(struct wsa_outq *q)
{
	struct wsa_frame *f;
	while ((f = wsa_outq_pop(q)))
		free(f);
}

void wsa_outq_splice(struct wsa_outq *to, struct wsa_outq *from)
{
	if (!from->head)
		return;
	if (to->tail)
		to->tail->next = from->head;
	else
		to->head = from->head;
	to->tail = from->tail;
	to->bytes += from->bytes;
	to->count += from->count;
	*from = (struct wsa_outq){0};
}
