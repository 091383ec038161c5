/* server.c — the cortex-agent WebSocket protocol (v2, docs/protocol.md).
 *
 * Frames from cortexd: start (take the context file, spawn the agent of a
 * generation, retiring the current one), input (a line for the current
 * agent's stdin), stop, ping.  A start first waits for the context file
 * (inotify plus a deadline); a newer start supersedes a waiting one.  The
 * agents themselves live in runner.c.
 *
 * Every descriptor (the agents' pipes and pidfds, inotify, signalfd, and the
 * listening socket cortexd passed in) is adopted into the lws loop as a raw
 * file on the internal "wsa-fd" protocol; the wsi's opaque pointer is a
 * struct wsa_fdref saying which one it is.  A connection accepted on the
 * inherited listening socket is handed to lws (lws_adopt_socket_vhost) and
 * from there on is an ordinary WebSocket server connection.
 * Timers are lws_sul.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>

/* No lws keepalive: a Unix socket closes when the peer dies, and a sandbox
 * frozen for a while must not find its connection hung up on after the thaw.
 * Without an explicit policy lws pings idle connections after 300 s and hangs
 * up 10 s later; secs_since_valid_hangup = 0 turns the validity timer off. */
static const lws_retry_bo_t no_keepalive = {
	.secs_since_valid_ping = 0,
	.secs_since_valid_hangup = 0,
};

static struct wsa_server *server_of(struct lws *wsi)
{
	return lws_context_user(lws_get_context(wsi));
}

/* ---------------------------------------------------------------- output */

void wsa_conn_send(struct wsa_server *srv, struct wsa_conn *c, const char *data, size_t len)
{
	cx_err err = CX_ERR_INIT;
	if ((!c || !c->wsi) && srv->dropped) {
		/* The link dropped (--hold-on-drop) and a read of an agent's pipe
		 * was already under way: the line waits for the next cortexd. */
		if (srv->held_q.bytes <= 2 * (size_t)WSA_CAP_OUT_QUEUE &&
		    wsa_outq_push_line(&srv->held_q, data, len, &err) == 0)
			return;
		lwsl_err("wsa: dropping a held frame: %s\n", err.msg[0] ? err.msg : "queue full");
		return;
	}
	if (!c || !c->wsi)
		return; /* the owning connection is gone: output has nowhere to go */
	if (wsa_outq_push_line(&c->q, data, len, &err) < 0) {
		lwsl_err("wsa: dropping frame: %s\n", err.msg);
		return;
	}
	if (c != srv->defer)
		lws_callback_on_writable(c->wsi);
	if (!c->rx_paused && c->q.bytes > 2 * (size_t)WSA_CAP_OUT_QUEUE) {
		/* Only control replies can get here (agent output pauses at 1x):
		 * a client that never reads is not read either. */
		c->rx_paused = true;
		lws_rx_flow_control(c->wsi, 0);
	}
	wsa_runner_flow_update(srv);
}

/* obj queued with fd and fd2 riding on it, in that order (taken: closed
 * when it has nowhere to go). */
void wsa_conn_send_json_fds(struct wsa_server *srv, struct wsa_conn *c, json_t *obj, int fd, int fd2)
{
	if (fd < 0) {
		fd = fd2;
		fd2 = -1;
	}
	struct wsa_frame *last = c ? c->q.tail : NULL;
	wsa_conn_send_json(srv, c, obj);
	if (fd >= 0 && c && c->wsi && c->q.tail && c->q.tail != last) {
		c->q.tail->fd = fd; /* (queued to this connection, not held for the next) */
		c->q.tail->fd2 = fd2;
		return;
	}
	if (fd >= 0)
		close(fd);
	if (fd2 >= 0)
		close(fd2);
}

void wsa_conn_send_json(struct wsa_server *srv, struct wsa_conn *c, json_t *obj)
{
	if (!obj)
		return;
	char *s = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	if (s) {
		wsa_conn_send(srv, c, s, strlen(s));
		free(s);
	}
}

void wsa_send_error(struct wsa_server *srv, struct wsa_conn *c, int64_t gen, const char *code,
		    const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	char *clean = cx_utf8_sanitize(msg, strlen(msg), NULL);
	json_t *o = json_pack("{s:s, s:s, s:s}", "type", "wsa.error", "code", code, "message",
			      clean ? clean : "");
	free(clean);
	if (o && gen > 0)
		json_object_set_new(o, "gen", json_integer((json_int_t)gen));
	wsa_conn_send_json(srv, c, o);
}

void wsa_close_wsi_async(struct lws *wsi)
{
	if (wsi)
		lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

struct lws *wsa_adopt_fd(struct wsa_server *srv, int fd, struct wsa_fdref *ref)
{
	lws_adopt_desc_t ad = {
		.vh = srv->vh,
		.type = LWS_ADOPT_RAW_FILE_DESC,
		.fd.filefd = fd,
		.vh_prot_name = WSA_FD_PROTOCOL,
		.opaque = ref,
	};
	/* On failure lws has closed fd. */
	return lws_adopt_descriptor_vhost_via_info(&ad);
}

/* ------------------------------------------------- the pending start */

static void pending_clear(struct wsa_server *srv)
{
	lws_sul_cancel(&srv->pending.sul_deadline);
	srv->pending.active = false;
	srv->pending.owner = NULL;
}

/* One attempt to take the context file; stays pending if it is not there. */
static void pending_try_context(struct wsa_server *srv)
{
	struct wsa_pending *p = &srv->pending;
	struct wsa_context actx = {0};
	cx_err err = CX_ERR_INIT;

	int rc = wsa_context_take(srv->opts.context_path, &actx, &err);
	if (rc == CX_NOTFOUND)
		return;
	int64_t gen = p->gen;
	struct wsa_conn *owner = p->owner;
	bool want_stdout = p->want_stdout;
	pending_clear(srv);
	if (rc < 0) {
		wsa_send_error(srv, owner, gen, "bad_context", "%s", err.msg);
		return;
	}
	wsa_runner_start(srv, owner, gen, want_stdout, &actx);
	wsa_context_free(&actx);
}

static void sul_deadline_cb(lws_sorted_usec_list_t *sul)
{
	struct wsa_server *srv = lws_container_of(sul, struct wsa_server, pending.sul_deadline);
	struct wsa_pending *p = &srv->pending;
	if (!p->active)
		return;
	pending_try_context(srv); /* last look, in case an event was missed */
	if (!p->active)
		return;
	int64_t gen = p->gen;
	struct wsa_conn *owner = p->owner;
	pending_clear(srv);
	wsa_send_error(srv, owner, gen, "context_timeout", "no context file at %s within %u ms",
		       srv->opts.context_path, srv->opts.context_timeout_ms);
}

static void handle_start(struct wsa_server *srv, struct wsa_conn *c, int64_t gen, bool want_stdout)
{
	struct wsa_pending *p = &srv->pending;
	if (gen <= srv->last_gen) {
		wsa_send_error(srv, c, gen, "bad_request", "gen %lld is not above the last start's %lld",
			       (long long)gen, (long long)srv->last_gen);
		return;
	}
	srv->last_gen = gen;
	if (p->active) {
		int64_t old = p->gen;
		struct wsa_conn *owner = p->owner;
		pending_clear(srv);
		wsa_send_error(srv, owner, old, "superseded",
			       "start %lld came before the context file of start %lld", (long long)gen,
			       (long long)old);
	}
	if (srv->current)
		wsa_runner_retire(srv->current);

	*p = (struct wsa_pending){.active = true, .gen = gen, .owner = c, .want_stdout = want_stdout};
	/* Watch first, then look: a file written in between is not missed. */
	if (inotify_add_watch(srv->inotify_fd, srv->ctx_dir, IN_CLOSE_WRITE | IN_MOVED_TO) < 0) {
		int e = errno;
		pending_clear(srv);
		wsa_send_error(srv, c, gen, "bad_context", "cannot watch %s: %s", srv->ctx_dir,
			       strerror(e));
		return;
	}
	pending_try_context(srv);
	if (p->active)
		lws_sul_schedule(srv->ctx, 0, &p->sul_deadline, sul_deadline_cb,
				 (lws_usec_t)srv->opts.context_timeout_ms * LWS_US_PER_MS);
}

/* ------------------------------------------- the link seq, resend window */

/* Lines up to seq are durable at cortexd (an ack, or an attach's "seq"). */
static void window_ack(struct wsa_server *srv, uint64_t seq)
{
	while (srv->sent.head && srv->sent.head->seq <= seq)
		free(wsa_outq_pop(&srv->sent));
}

/* f was handed to lws: kept until acked, the oldest dropped past the cap. */
static void window_keep(struct wsa_server *srv, struct wsa_frame *f)
{
	if (f->unnumbered) {
		free(f);
		return;
	}
	wsa_outq_append(&srv->sent, f);
	while (srv->sent.bytes > WSA_CAP_RESEND && srv->sent.head) {
		free(wsa_outq_pop(&srv->sent));
	}
}

static void seq_restart(struct wsa_server *srv)
{
	wsa_outq_clear(&srv->sent);
	srv->link_seq = 0;
	for (struct wsa_frame *f = srv->held_q.head; f; f = f->next)
		f->seq = 0; /* numbered again when sent */
}

/* The seq of the first line the attaching connection gets (resent or held). */
static uint64_t first_pending_seq(const struct wsa_server *srv)
{
	if (srv->sent.head)
		return srv->sent.head->seq;
	for (const struct wsa_frame *f = srv->held_q.head; f; f = f->next)
		if (f->seq)
			return f->seq;
	return srv->link_seq + 1;
}

/* attach: wsa.attached {"gen","pid","seq":S,"lost":N,"resent":R} (outside the
 * sequence), then every line after the "seq" cortexd has durably, from the
 * window (S is the first of them), then what a dropped link had not sent,
 * then what the agents write from now on.  N > 0: lines cortexd lacks were
 * dropped from the window by its cap; R: lines sent again from the window.
 * Without "seq" nothing is resent. */
static void handle_attach(struct wsa_server *srv, struct wsa_conn *c, const struct wsa_msg *m)
{
	int64_t gen = 0;
	pid_t pid = 0;
	wsa_runner_attach(srv, c, &gen, &pid);
	srv->dropped = false;
	uint64_t have = m->has_seq ? m->seq : UINT64_MAX;
	window_ack(srv, have);
	uint64_t first = first_pending_seq(srv);
	uint64_t lost = m->has_seq && first > have + 1 ? first - have - 1 : 0;
	if (lost)
		lwsl_warn("wsa: attach from line %llu: %llu line(s) past the resend window's cap\n",
			  (unsigned long long)have + 1, (unsigned long long)lost);
	wsa_conn_send_json(srv, c,
			   json_pack("{s:s,s:I,s:i,s:I,s:I,s:I}", "type", "wsa.attached", "gen", (json_int_t)gen, "pid",
				     (int)pid, "seq", (json_int_t)first, "lost", (json_int_t)lost, "resent",
				     (json_int_t)srv->sent.count));
	if (c->q.tail)
		c->q.tail->unnumbered = true;
	wsa_outq_splice(&c->q, &srv->sent);
	wsa_outq_splice(&c->q, &srv->held_q);
	if (c->q.head)
		lws_callback_on_writable(c->wsi);
	wsa_runner_flow_update(srv);
}

/* ------------------------------------------------------------- protocol */

static void handle_message(struct wsa_server *srv, struct wsa_conn *c, const char *buf, size_t len)
{
	struct wsa_msg m;
	int64_t egen;
	char why[256];
	if (wsa_msg_parse(buf, len, &m, &egen, why, sizeof why) < 0) {
		wsa_send_error(srv, c, egen, "bad_request", "%s", why);
		return;
	}
	if (!c->greeted) {
		c->greeted = true;
		if (m.type != WSA_MSG_ATTACH)
			seq_restart(srv); /* a new cortexd that takes nothing over */
	}
	switch (m.type) {
	case WSA_MSG_INPUT:
		if (m.has_seq)
			window_ack(srv, m.seq);
		wsa_runner_input(srv, c, m.gen, m.data, m.data_len);
		break;
	case WSA_MSG_START:
		handle_start(srv, c, m.gen, m.want_stdout);
		break;
	case WSA_MSG_STOP:
		/* Only the current agent can be stopped; an unknown or old gen is a no-op. */
		if (srv->current && srv->current->gen == m.gen)
			wsa_runner_retire(srv->current);
		break;
	case WSA_MSG_STDOUT_BACK:
		wsa_runner_stdout_back(srv, c, m.gen);
		break;
	case WSA_MSG_PING:
		wsa_conn_send(srv, c, "{\"type\":\"pong\"}", 15);
		break;
	case WSA_MSG_ACK:
		window_ack(srv, m.seq);
		break;
	case WSA_MSG_DETACH: {
		/* The answer is queued behind every line sent before it: once
		 * cortexd reads wsa.detached it has all of the agents' output. */
		int64_t gen = 0;
		pid_t pid = 0;
		wsa_runner_detach(srv, c, &m, &gen, &pid);
		wsa_conn_send_json(srv, c,
				   json_pack("{s:s,s:I,s:i}", "type", "wsa.detached", "gen", (json_int_t)gen, "pid", (int)pid));
		break;
	}
	case WSA_MSG_ATTACH:
		handle_attach(srv, c, &m);
		break;
	}
	wsa_msg_free(&m);
}

/* ------------------------------------------------ signals and inotify */

static int on_signalfd(struct wsa_server *srv, struct lws *wsi)
{
	struct signalfd_siginfo si;
	while (read(lws_get_socket_fd(wsi), &si, sizeof si) == (ssize_t)sizeof si) {
		if (si.ssi_signo == SIGCHLD)
			wsa_runner_reap_all(srv);
		else
			srv->interrupted = true; /* SIGTERM / SIGINT: wsa_server_run cleans up */
	}
	return 0;
}

static int on_inotify(struct wsa_server *srv, struct lws *wsi)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool hit = false;
	ssize_t r;
	while ((r = read(lws_get_socket_fd(wsi), buf, sizeof buf)) > 0) {
		for (char *p = buf; p < buf + r;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			if ((ev->mask & IN_Q_OVERFLOW) || (ev->len && !strcmp(ev->name, srv->ctx_base)))
				hit = true;
			p += sizeof *ev + ev->len;
		}
	}
	if (hit && srv->pending.active)
		pending_try_context(srv);
	return 0;
}

/* Accept every pending connection on the inherited listening socket; lws
 * takes each from here as if its own listener had accepted it (HTTP, then
 * the WebSocket upgrade on the cortex-agent protocol). */
static void adopt_one(void *vh, int fd)
{
	if (!lws_adopt_socket_vhost(vh, fd)) /* it closed fd */
		lwsl_err("wsa: could not adopt an accepted connection\n");
}

static int on_listen(struct wsa_server *srv, struct lws *wsi)
{
	cx_err err = CX_ERR_INIT;
	if (cx_accept_each(lws_get_socket_fd(wsi), adopt_one, srv->vh, &err) < 0)
		lwsl_err("wsa: %s\n", err.msg);
	return 0;
}

/* ------------------------------------------------------- lws callbacks */

static int callback_fd(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		       size_t len)
{
	(void)user, (void)in, (void)len;
	struct wsa_server *srv = server_of(wsi);
	struct wsa_fdref *ref = lws_get_opaque_user_data(wsi);

	switch (reason) {
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		return -1; /* internal protocol: no WebSocket client may select it */
	case LWS_CALLBACK_RAW_RX_FILE:
		if (srv->stopping || !ref)
			return 0;
		if (ref->kind == FD_SIGNAL)
			return on_signalfd(srv, wsi);
		if (ref->kind == FD_INOTIFY)
			return on_inotify(srv, wsi);
		if (ref->kind == FD_LISTEN)
			return on_listen(srv, wsi);
		return wsa_runner_fd_rx(srv, wsi, ref);
	case LWS_CALLBACK_RAW_WRITEABLE_FILE:
		if (srv->stopping || !ref || !ref->agent)
			return 0;
		return wsa_runner_fd_writeable(srv, wsi, ref);
	case LWS_CALLBACK_RAW_CLOSE_FILE:
		if (!ref)
			return 0;
		if (ref->kind == FD_SIGNAL)
			srv->signal_wsi = NULL;
		else if (ref->kind == FD_INOTIFY)
			srv->inotify_wsi = NULL;
		else if (ref->kind == FD_LISTEN)
			srv->listen_wsi = NULL;
		else
			wsa_runner_fd_closed(srv, wsi, ref);
		return 0;
	default:
		return 0;
	}
}

static void conn_rx(struct wsa_server *srv, struct wsa_conn *c, struct lws *wsi, const char *in,
		    size_t len)
{
	if (lws_frame_is_binary(wsi))
		c->rx_binary = true;
	if (!c->rx_oversize && c->rx_len + len > WSA_CAP_CLIENT_FRAME)
		c->rx_oversize = true; /* swallow the rest, then say so */
	if (!c->rx_oversize && c->rx_len + len > c->rx_alloc) {
		size_t want = c->rx_alloc ? c->rx_alloc : 4096;
		while (want < c->rx_len + len)
			want *= 2;
		if (want > WSA_CAP_CLIENT_FRAME)
			want = WSA_CAP_CLIENT_FRAME;
		char *nb = realloc(c->rx, want);
		if (nb) {
			c->rx = nb;
			c->rx_alloc = want;
		} else {
			c->rx_oversize = true;
		}
	}
	if (!c->rx_oversize && len) {
		memcpy(c->rx + c->rx_len, in, len);
		c->rx_len += len;
	}
	if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi))
		return;
	if (c->rx_oversize)
		wsa_send_error(srv, c, 0, "bad_request", "message over %u bytes",
			       (unsigned)WSA_CAP_CLIENT_FRAME);
	else if (c->rx_binary)
		wsa_send_error(srv, c, 0, "bad_request", "binary messages are not accepted");
	else
		handle_message(srv, c, c->rx ? c->rx : "", c->rx_len);
	c->rx_len = 0;
	c->rx_oversize = c->rx_binary = false;
}

/* After a send: reading resumes below the cap, the agent's pipes follow the
 * queue, what is still queued waits for the next callback. */
static void conn_sent(struct wsa_server *srv, struct wsa_conn *c, struct lws *wsi)
{
	if (c->rx_paused && c->q.bytes <= WSA_CAP_OUT_QUEUE) {
		c->rx_paused = false;
		lws_rx_flow_control(wsi, 1);
	}
	wsa_runner_flow_update(srv);
	if (c->q.head)
		lws_callback_on_writable(wsi); /* one lws_write per callback */
}

/* A line handed to the socket or to lws: into the resend window. */
static void keep_sent(void *arg, struct wsa_frame *f) { window_keep(arg, f); }

/* The next message, the copying way (lines under 2 KiB, or lws holds bytes of an earlier
 * write): as many whole queued lines as fit in
 * WSA_CAP_OUT_MESSAGE, copied end to end into one buffer kept for the
 * process (a burst of small deltas costs one send and one cortexd wakeup,
 * not one per line; a fresh 256 KiB allocation per message would be an
 * mmap and 64 page faults each time).  lws copies whatever the socket does
 * not take, so the buffer is free again once lws_write returns.  A line
 * bigger than the buffer goes alone, in its own frame's allocation. */
static int conn_writeable(struct wsa_server *srv, struct wsa_conn *c, struct lws *wsi)
{
	static unsigned char mbuf[LWS_PRE + WSA_CAP_OUT_MESSAGE];
	struct wsa_frame *f = c->q.head;
	if (!f)
		return 0;
	int d = wsa_outq_send_direct(&c->q, wsi, f->fd >= 0 ? 0 : WSA_DIRECT_MIN, &srv->link_seq,
				     keep_sent, srv);
	if (d < 0)
		return -1;
	if (d == 0)
		goto sent;
	if (f->fd >= 0) { /* its descriptor needs the direct send: after lws's own bytes */
		lws_callback_on_writable(wsi);
		return 0;
	}
	unsigned char *payload;
	size_t len = 0;
	if (f->len > WSA_CAP_OUT_MESSAGE) {
		f = wsa_outq_pop(&c->q);
		if (!f->seq && !f->unnumbered)
			f->seq = ++srv->link_seq;
		payload = f->data + LWS_PRE;
		len = f->len;
	} else {
		f = NULL;
		payload = mbuf + LWS_PRE;
		while (c->q.head && c->q.head->fd < 0 && len + c->q.head->len <= WSA_CAP_OUT_MESSAGE) {
			struct wsa_frame *l = wsa_outq_pop(&c->q);
			if (!l->seq && !l->unnumbered)
				l->seq = ++srv->link_seq;
			memcpy(payload + len, l->data + LWS_PRE, l->len);
			len += l->len;
			window_keep(srv, l); /* not freed: kept until cortexd acks it */
		}
	}
	/* Binary: a text frame would make cortexd check its UTF-8 again;
	 * cortexd parses every line (the fast path or jansson), which
	 * validates it, and forwards only what it accepted.  Every line is in
	 * the resend window before lws_write: one that a failing write (which
	 * may close the connection inside lws_write) or cortexd's death lost
	 * goes again to the cortexd that attaches. */
	int m = lws_write(wsi, payload, len, LWS_WRITE_BINARY);
	if (f)
		window_keep(srv, f);
	if (m < (int)len) {
		lwsl_err("wsa: lws_write failed (%d of %zu)\n", m, len);
		return -1;
	}
sent:
	conn_sent(srv, c, wsi);
	return 0;
}

/* A turn's lines (the agent's burst, read in one read) leave in one sendmsg
 * from where they lie at the end of that read, not on the writeable callback
 * of the loop's next pass: one poll() and lws pass fewer per turn.  Only what
 * fits one gathered message; a bigger backlog (a flood of small lines) is
 * copied into full messages by conn_writeable. */
void wsa_conn_send_now(struct wsa_server *srv, struct wsa_conn *c)
{
	srv->defer = NULL;
	if (!c || !c->wsi || !c->q.head)
		return;
	if (c->q.count <= WSA_DIRECT_IOV && c->q.bytes <= WSA_CAP_OUT_MESSAGE) {
		int d = wsa_outq_send_direct(&c->q, c->wsi, 0, &srv->link_seq, keep_sent, srv);
		if (d <= 0) { /* < 0: outside a callback, close from the loop (lines kept) */
			d < 0 ? wsa_close_wsi_async(c->wsi) : conn_sent(srv, c, c->wsi);
			return;
		}
	}
	lws_callback_on_writable(c->wsi);
}

static void conn_closed(struct wsa_server *srv, struct wsa_conn *c)
{
	if (!srv->stopping) {
		/* cortexd went away: nobody will read these agents, stop them all.
		 * A new connection starts from no agent. */
		if (srv->pending.active && srv->pending.owner == c)
			pending_clear(srv);
		wsa_runner_conn_closed(srv, c);
		if (srv->opts.hold_on_drop_ms) /* the next cortexd gets them after wsa.attached */
			wsa_outq_splice(&srv->held_q, &c->q); /* (what was sent waits in the window) */
	}
	wsa_outq_clear(&c->q);
	free(c->rx);
	c->rx = NULL;
	c->rx_len = c->rx_alloc = 0;
	c->wsi = NULL;
}

static int callback_agent(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
			  size_t len)
{
	struct wsa_conn *c = user;
	struct wsa_server *srv = server_of(wsi);

	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED: {
		*c = (struct wsa_conn){.wsi = wsi};
		/* Room for a whole message in flight (the kernel doubles it, capped
		 * by net.core.wmem_max): with the default (~208 KiB) a 256 KiB
		 * message was cut nearly every time, its rest copied by lws and
		 * sent in more calls. */
		int sb = (int)WSA_CAP_OUT_MESSAGE;
		(void)setsockopt(lws_get_socket_fd(wsi), SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb);
		return 0;
	}
	case LWS_CALLBACK_RECEIVE:
		if (!srv->stopping)
			conn_rx(srv, c, wsi, in, len);
		return 0;
	case LWS_CALLBACK_SERVER_WRITEABLE:
		return conn_writeable(srv, c, wsi);
	case LWS_CALLBACK_CLOSED:
		conn_closed(srv, c);
		return 0;
	default:
		return 0;
	}
}

static const struct lws_protocols protocols[] = {
	/* First = default: clients that ask for no subprotocol get this one. */
	/* tx_packet_size: lws sends at most this much per syscall (else
	 * rx_buffer_size, 4 KiB here), buffering the rest: a coalesced message
	 * goes in one send. */
	{WSA_PROTOCOL, callback_agent, sizeof(struct wsa_conn), 4096, 0, NULL, WSA_CAP_OUT_MESSAGE},
	{WSA_FD_PROTOCOL, callback_fd, 0, 0, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0},
};

/* -------------------------------------------------------------- lifecycle */

static int setup_fds(struct wsa_server *srv, cx_err *err)
{
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return cx_err_set(err, errno, "sigprocmask");
	int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0)
		return cx_err_set(err, errno, "signalfd");
	srv->ref_signal = (struct wsa_fdref){FD_SIGNAL, NULL};
	if (!(srv->signal_wsi = wsa_adopt_fd(srv, sfd, &srv->ref_signal)))
		return cx_err_set(err, 0, "cannot adopt the signalfd into the event loop");

	int ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (ifd < 0)
		return cx_err_set(err, errno, "inotify_init1");
	srv->inotify_fd = ifd;
	srv->ref_inotify = (struct wsa_fdref){FD_INOTIFY, NULL};
	if (!(srv->inotify_wsi = wsa_adopt_fd(srv, ifd, &srv->ref_inotify)))
		return cx_err_set(err, 0, "cannot adopt the inotify fd into the event loop");
	return 0;
}

static int split_context_path(struct wsa_server *srv, cx_err *err)
{
	cleanup_free char *d = strdup(srv->opts.context_path);
	srv->ctx_base_buf = strdup(srv->opts.context_path);
	if (!d || !srv->ctx_base_buf)
		return cx_err_set(err, ENOMEM, "context path");
	srv->ctx_dir = strdup(dirname(d));
	srv->ctx_base = basename(srv->ctx_base_buf);
	if (!srv->ctx_dir || !srv->ctx_base[0] || !strcmp(srv->ctx_base, "/"))
		return cx_err_set(err, EINVAL, "bad --context path %s", srv->opts.context_path);
	return 0;
}

/* The listening socket cortexd made and passed in: checked, non-blocking,
 * adopted into the loop (nothing else may accept on it: it is CLOEXEC). */
static int adopt_listen_fd(struct wsa_server *srv, cx_err *err)
{
	int fd = srv->opts.listen_fd, on = 0;
	socklen_t len = sizeof on;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode) ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0 || !on)
		return cx_err_set(err, EINVAL, "--listen-fd %d is not a listening socket", fd);
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return cx_err_set(err, errno, "--listen-fd %d: O_NONBLOCK", fd);
	srv->opts.listen_fd = -1; /* lws owns it now (closed on failure too) */
	srv->ref_listen = (struct wsa_fdref){FD_LISTEN, NULL};
	if (!(srv->listen_wsi = wsa_adopt_fd(srv, fd, &srv->ref_listen)))
		return cx_err_set(err, 0, "cannot adopt the listening socket into the event loop");
	return 0;
}

static int report_ready(struct wsa_server *srv, cx_err *err)
{
	/* lws logs but does not fail vhost creation on a bind error: check. */
	struct stat st;
	if (srv->opts.socket_path &&
	    (stat(srv->opts.socket_path, &st) < 0 || !S_ISSOCK(st.st_mode)))
		return cx_err_set(err, errno, "not listening on %s", srv->opts.socket_path);
	if (srv->opts.ready_fd < 0)
		return 0;
	int rc = cx_write_all(srv->opts.ready_fd, "ready\n", 6, err);
	close(srv->opts.ready_fd);
	srv->opts.ready_fd = -1;
	return rc < 0 ? cx_err_wrap(err, "ready fd") : 0;
}

int wsa_server_create(const struct wsa_options *opts, struct wsa_server **out, cx_err *err)
{
	struct wsa_server *srv = calloc(1, sizeof *srv);
	if (!srv)
		return cx_err_set(err, ENOMEM, "server");
	srv->opts = *opts;
	srv->inotify_fd = -1;

	if (split_context_path(srv, err) < 0)
		goto fail;

	/* A stale socket from a previous run would make bind fail; only ever
	 * remove a socket, never a file someone put there. */
	struct stat st;
	if (opts->socket_path && lstat(opts->socket_path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			cx_err_set(err, EEXIST, "%s exists and is not a socket", opts->socket_path);
			goto fail;
		}
		if (unlink(opts->socket_path) < 0) {
			cx_err_set(err, errno, "remove stale %s", opts->socket_path);
			goto fail;
		}
	}

	struct lws_context_creation_info ci;
	memset(&ci, 0, sizeof ci);
	ci.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
	ci.user = srv;
	ci.port = CONTEXT_PORT_NO_LISTEN;
	ci.pt_serv_buf_size = WSA_CAP_OUT_MESSAGE; /* a coalesced message in one send, not 4 KiB pieces */
	ci.fd_limit_per_thread = WSA_CAP_LWS_FDS;
	if (!(srv->ctx = lws_create_context(&ci))) {
		cx_err_set(err, 0, "lws_create_context failed");
		goto fail;
	}

	struct lws_context_creation_info vi;
	memset(&vi, 0, sizeof vi);
	vi.vhost_name = "ws-agent";
	vi.options = LWS_SERVER_OPTION_UNIX_SOCK;
	if (opts->socket_path) {
		vi.iface = opts->socket_path;
		vi.port = 0; /* with UNIX_SOCK: listen on iface as a path */
	} else {
		vi.port = CONTEXT_PORT_NO_LISTEN_SERVER; /* a server fed by adoption */
	}
	vi.protocols = protocols;
	vi.retry_and_idle_policy = &no_keepalive;
	if (!(srv->vh = lws_create_vhost(srv->ctx, &vi))) {
		cx_err_set(err, 0, "cannot create the vhost%s%s", opts->socket_path ? " on " : "",
			   opts->socket_path ? opts->socket_path : "");
		goto fail;
	}
	if (setup_fds(srv, err) < 0 || (srv->opts.listen_fd >= 0 && adopt_listen_fd(srv, err) < 0) ||
	    report_ready(srv, err) < 0)
		goto fail;
	*out = srv;
	return 0;
fail:
	wsa_server_destroy(srv);
	return -1;
}

int wsa_server_run(struct wsa_server *srv, cx_err *err)
{
	(void)err;
	while (!srv->interrupted)
		if (lws_service(srv->ctx, 0) < 0)
			break;
	wsa_runner_kill_all(srv);
	return 0;
}

void wsa_server_destroy(struct wsa_server *srv)
{
	if (!srv)
		return;
	srv->stopping = true;
	if (srv->ctx) {
		lws_sul_cancel(&srv->pending.sul_deadline);
		lws_sul_cancel(&srv->sul_detach);
		lws_context_destroy(srv->ctx); /* closes adopted fds too */
	}
	wsa_outq_clear(&srv->held_q);
	wsa_outq_clear(&srv->sent);
	wsa_runner_free_all(srv);
	if (srv->opts.ready_fd >= 0)
		close(srv->opts.ready_fd);
	if (srv->opts.listen_fd >= 0)
		close(srv->opts.listen_fd);
	free(srv->ctx_dir);
	free(srv->ctx_base_buf);
	free(srv);
}
