/* outq.c — frames waiting for LWS_CALLBACK_SERVER_WRITEABLE.  Each frame is
 * allocated with LWS_PRE bytes of headroom so lws_write() can put the
 * WebSocket header in front without copying. */
#include "wsa.h"

#include <errno.h>
#include <libwebsockets.h>
#include <string.h>

int wsa_outq_push(struct wsa_outq *q, const char *payload, size_t len, cx_err *err)
{
	struct wsa_frame *f = malloc(sizeof *f + LWS_PRE + len);
	if (!f)
		return cx_err_set(err, ENOMEM, "frame of %zu bytes", len);
	f->next = NULL;
	f->len = len;
	memcpy(f->data + LWS_PRE, payload, len);
	if (q->tail)
		q->tail->next = f;
	else
		q->head = f;
	q->tail = f;
	q->bytes += len;
	q->count++;
	return 0;
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

void wsa_outq_clear(struct wsa_outq *q)
{
	struct wsa_frame *f;
	while ((f = wsa_outq_pop(q)))
		free(f);
}
