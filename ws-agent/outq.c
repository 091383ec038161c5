/* outq.c — frames waiting for LWS_CALLBACK_SERVER_WRITEABLE (and lines
 * waiting for an agent's stdin).  Each frame is allocated with LWS_PRE bytes
 * of headroom so lws_write() can put the WebSocket header in front without
 * copying. */
#include "wsa.h"

#include <errno.h>
#include <libwebsockets.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

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
	f->fd = f->fd2 = -1;
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
	while ((f = wsa_outq_pop(q))) {
		if (f->fd >= 0)
			close(f->fd);
		if (f->fd2 >= 0)
			close(f->fd2);
		free(f);
	}
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

/* The next message without a copy: one binary frame whose payload is as
 * many whole queued lines as fit in WSA_CAP_OUT_MESSAGE (a line bigger than
 * that alone), its header and the lines' bytes handed to one sendmsg() from
 * where they lie.  This is what lws_write would put on the socket (a server
 * frame is unmasked; no extension is negotiated on the link), so it is done
 * only when lws holds nothing of its own for the connection.  For lines of
 * min bytes and more: the writeable callback passes WSA_DIRECT_MIN (small
 * lines are cheaper copied, hundreds to a message); the send right after an
 * agent's read passes 0 (a turn's few lines, see wsa_conn_send_now).
 * What the socket did not take goes to lws as raw bytes, which sends them
 * before anything else.  Each line sent gets the next link seq (*seq) and
 * goes to keep() (the resend window), also when the send failed.  1: not
 * done here (nothing was sent: the caller's copying path), 0, or -1 (close). */

static size_t ws_binary_header(unsigned char *hdr, size_t len)
{
	hdr[0] = 0x82; /* FIN + binary */
	if (len < 126) {
		hdr[1] = (unsigned char)len;
		return 2;
	}
	if (len < 65536) {
		hdr[1] = 126;
		hdr[2] = (unsigned char)(len >> 8);
		hdr[3] = (unsigned char)len;
		return 4;
	}
	hdr[1] = 127;
	for (int i = 0; i < 8; i++)
		hdr[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	return 10;
}

int wsa_outq_send_direct(struct wsa_outq *q, struct lws *wsi, size_t min, uint64_t *seq,
			 void (*keep)(void *arg, struct wsa_frame *f), void *arg)
{
	if (!q->head || lws_partial_buffered(wsi) || q->head->len < min)
		return 1;
	struct iovec iov[1 + WSA_DIRECT_IOV];
	unsigned char hdr[10];
	size_t len = 0, n = 0;
	for (struct wsa_frame *l = q->head;
	     l && n < WSA_DIRECT_IOV &&
	     (!n || (l->len >= min && l->fd < 0 && len + l->len <= WSA_CAP_OUT_MESSAGE));
	     l = l->next) {
		if (!l->seq && !l->unnumbered)
			l->seq = ++*seq;
		iov[1 + n++] = (struct iovec){l->data + LWS_PRE, l->len};
		len += l->len;
	}
	iov[0] = (struct iovec){hdr, ws_binary_header(hdr, len)};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 1 + n};
	/* The head's descriptor goes with the message's first byte. */
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(2 * sizeof(int))];
	} cm;
	struct wsa_frame *head = q->head;
	if (head->fd >= 0) {
		int fds[2] = {head->fd, head->fd2};
		size_t k = head->fd2 >= 0 ? 2 : 1;
		memset(&cm, 0, sizeof cm);
		mh.msg_control = cm.b;
		mh.msg_controllen = CMSG_SPACE(k * sizeof(int));
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(k * sizeof(int));
		memcpy(CMSG_DATA(c), fds, k * sizeof(int));
	}
	ssize_t r;
	do
		r = sendmsg(lws_get_socket_fd(wsi), &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	if (head->fd >= 0 && (r > 0 || (errno != EAGAIN && errno != EWOULDBLOCK))) {
		close(head->fd); /* sent (cortexd has its own), or the link is failing */
		if (head->fd2 >= 0)
			close(head->fd2);
		head->fd = head->fd2 = -1;
	}
	if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
		lwsl_err("wsa: send to cortexd: %s\n", strerror(errno));
		for (size_t k = 0; k < n; k++) /* the next cortexd gets them again */
			keep(arg, wsa_outq_pop(q));
		return -1;
	}
	if (r <= 0) {
		lws_callback_on_writable(wsi); /* nothing went: all of it next time */
		return 0;
	}
	/* The rest of a message cut short, in order, to lws (it copies it). */
	size_t sent = (size_t)r;
	int failed = 0;
	for (size_t k = 0; k <= n && !failed; k++) {
		size_t take = sent < iov[k].iov_len ? sent : iov[k].iov_len;
		sent -= take;
		if (take < iov[k].iov_len &&
		    lws_write(wsi, (unsigned char *)iov[k].iov_base + take, iov[k].iov_len - take, LWS_WRITE_HTTP) < 0)
			failed = 1;
	}
	for (size_t k = 0; k < n; k++)
		keep(arg, wsa_outq_pop(q)); /* not freed: kept until cortexd acks it */
	if (failed) {
		lwsl_err("wsa: lws_write of the rest of a message failed\n");
		return -1;
	}
	return 0;
}
