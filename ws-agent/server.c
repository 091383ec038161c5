/* server.c — the cortex-agent WebSocket protocol and the turn state machine.
 *
 * One turn at a time: IDLE -> WAITING (for the context file) -> RUNNING (agent
 * alive or its pipes still open) -> IDLE.  A turn that reached RUNNING always
 * ends with exactly one wsa.exit frame, sent only once the agent is reaped AND
 * both pipes hit EOF, so no output line can arrive after it.
 *
 * Every descriptor (agent stdout/stderr, pidfd, inotify, signalfd) is adopted
 * into the lws loop as a raw file on the internal "wsa-fd" protocol; the wsi's
 * opaque pointer says which one it is.  Timers are lws_sul.
 *
 * Backpressure: stdout lines go to the owning connection's queue; past
 * WSA_CAP_OUT_QUEUE bytes the agent's pipes stop being polled (so the agent
 * blocks on write) until the queue drains to half.
 */
#include "wsa.h"

#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <libwebsockets.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* After the agent exits, how long output may keep draining before the turn is cut. */
#define WSA_EOF_GIVE_UP_MS 60000

enum fd_kind { FD_SIGNAL = 1, FD_INOTIFY, FD_STDOUT, FD_STDERR, FD_PIDFD };

/* Per WebSocket connection (lws per_session_data, zeroed by lws). */
struct wsa_conn {
	struct lws *wsi;
	struct wsa_outq q;
	char *rx; /* reassembly of a fragmented message, capped */
	size_t rx_len;
	bool rx_oversize;
	bool rx_binary;
	bool rx_paused; /* a client not reading its replies stops being read */
};

enum turn_state { TURN_IDLE, TURN_WAITING, TURN_RUNNING };

struct wsa_turn {
	enum turn_state state;
	json_int_t id;
	struct wsa_conn *owner; /* not owned; NULL once that connection closed */
	pid_t pid;              /* also the process group */
	bool reaped;
	int status;
	bool cancelled;
	bool paused; /* pipes flow-controlled off */
	int eof_stage;
	bool forced_eof;
	lws_usec_t reaped_at;
	struct lws *out_wsi, *err_wsi, *pid_wsi; /* NULL once closed */
	struct wsa_lines out_lines, err_lines;
	char tail[CX_CAP_STDERR_TAIL];
	size_t tail_len;
	bool tail_cut;
	lws_sorted_usec_list_t sul_deadline; /* context wait */
	lws_sorted_usec_list_t sul_kill;     /* SIGTERM -> SIGKILL */
	lws_sorted_usec_list_t sul_eof;      /* agent exited, pipes still open */
};

struct wsa_server {
	struct wsa_options opts;
	struct lws_context *ctx;
	struct lws_vhost *vh;
	char *ctx_dir;        /* owned */
	const char *ctx_base; /* into ctx_base_buf */
	char *ctx_base_buf;   /* owned */
	int inotify_fd;       /* owned by its wsi once adopted */
	struct lws *inotify_wsi, *signal_wsi;
	bool interrupted;
	bool stopping; /* context being destroyed: callbacks only let go */
	struct wsa_turn turn;
};

static const lws_retry_bo_t keepalive = {
	/* lws pings an idle cortexd connection and drops it if no pong follows;
	 * Node/lws clients answer pings themselves. */
	.secs_since_valid_ping = 30,
	.secs_since_valid_hangup = 60,
};

static struct wsa_server *server_of(struct lws *wsi)
{
	return lws_context_user(lws_get_context(wsi));
}

/* ---------------------------------------------------------------- output */

static void flow_update(struct wsa_server *srv);

static void conn_send(struct wsa_server *srv, struct wsa_conn *c, const char *data, size_t len)
{
	cx_err err = CX_ERR_INIT;
	if (!c || !c->wsi)
		return; /* the turn's connection is gone: output has nowhere to go */
	if (wsa_outq_push(&c->q, data, len, &err) < 0) {
		lwsl_err("wsa: dropping frame: %s\n", err.msg);
		return;
	}
	lws_callback_on_writable(c->wsi);
	if (!c->rx_paused && c->q.bytes > 2 * (size_t)WSA_CAP_OUT_QUEUE) {
		/* Only control replies can get here (agent output pauses at 1x):
		 * a client that never reads is not read either. */
		c->rx_paused = true;
		lws_rx_flow_control(c->wsi, 0);
	}
	flow_update(srv);
}

/* Sends and releases obj. */
static void conn_send_json(struct wsa_server *srv, struct wsa_conn *c, json_t *obj)
{
	if (!obj)
		return;
	char *s = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	if (s) {
		conn_send(srv, c, s, strlen(s));
		free(s);
	}
}

__attribute__((format(printf, 6, 7))) static void
send_error(struct wsa_server *srv, struct wsa_conn *c, bool with_turn, json_int_t turn,
	   const char *code, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	size_t n;
	char *clean = wsa_utf8_sanitize(msg, strlen(msg), &n);
	json_t *o = json_pack("{s:s, s:s, s:s}", "type", "wsa.error", "code", code, "message",
			      clean ? clean : "");
	free(clean);
	if (o && with_turn)
		json_object_set_new(o, "turn", json_integer(turn));
	conn_send_json(srv, c, o);
}

/* Pause/resume the agent's pipes around the owner's queue size (hysteresis). */
static void flow_update(struct wsa_server *srv)
{
	struct wsa_turn *t = &srv->turn;
	size_t queued = t->owner ? t->owner->q.bytes : 0;
	bool pause;
	if (!t->paused && queued > WSA_CAP_OUT_QUEUE)
		pause = true;
	else if (t->paused && queued <= WSA_CAP_OUT_QUEUE / 2)
		pause = false;
	else
		return;
	t->paused = pause;
	if (t->out_wsi)
		lws_rx_flow_control(t->out_wsi, !pause);
	if (t->err_wsi)
		lws_rx_flow_control(t->err_wsi, !pause);
}

/* ------------------------------------------------------------------ turn */

static void turn_reset(struct wsa_server *srv)
{
	struct wsa_turn *t = &srv->turn;
	lws_sul_cancel(&t->sul_deadline);
	lws_sul_cancel(&t->sul_kill);
	lws_sul_cancel(&t->sul_eof);
	wsa_lines_free(&t->out_lines);
	wsa_lines_free(&t->err_lines);
	t->state = TURN_IDLE;
	t->owner = NULL;
	t->pid = 0;
	t->reaped = t->cancelled = t->paused = t->tail_cut = t->forced_eof = false;
	t->eof_stage = 0;
	t->status = 0;
	t->tail_len = 0;
}

static void close_wsi_async(struct lws *wsi)
{
	if (wsi)
		lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static void turn_maybe_finish(struct wsa_server *srv)
{
	struct wsa_turn *t = &srv->turn;
	if (t->state != TURN_RUNNING || !t->reaped || t->out_wsi || t->err_wsi || t->pid_wsi)
		return;

	/* A tail cut mid-character would start with continuation bytes. */
	const char *tail = t->tail;
	size_t tlen = t->tail_len;
	for (int i = 0; t->tail_cut && i < 3 && tlen && ((unsigned char)*tail & 0xC0) == 0x80; i++)
		tail++, tlen--;
	char *clean = wsa_utf8_sanitize(tail, tlen, NULL);

	json_t *o = json_pack("{s:s, s:I, s:s}", "type", "wsa.exit", "turn", t->id, "stderr_tail",
			      clean ? clean : "");
	free(clean);
	if (o) {
		int st = t->status;
		json_object_set_new(o, "code", WIFEXITED(st) ? json_integer(WEXITSTATUS(st)) : json_null());
		json_object_set_new(o, "signal", WIFSIGNALED(st) ? json_integer(WTERMSIG(st)) : json_null());
		json_object_set_new(o, "cancelled", json_boolean(t->cancelled));
	}
	conn_send_json(srv, t->owner, o);
	turn_reset(srv);
}

static void sul_eof_cb(lws_sorted_usec_list_t *sul);

static void turn_on_reaped(struct wsa_server *srv, int status)
{
	struct wsa_turn *t = &srv->turn;
	t->reaped = true;
	t->reaped_at = lws_now_usecs();
	t->status = status;
	lws_sul_cancel(&t->sul_kill);
	close_wsi_async(t->pid_wsi);
	if (t->out_wsi || t->err_wsi)
		lws_sul_schedule(srv->ctx, 0, &t->sul_eof, sul_eof_cb, WSA_KILL_GRACE_MS * LWS_US_PER_MS);
}

static void turn_try_reap(struct wsa_server *srv)
{
	struct wsa_turn *t = &srv->turn;
	int status;
	if (t->state != TURN_RUNNING || t->reaped)
		return;
	int r = wsa_agent_try_reap(t->pid, &status);
	if (r == 1)
		turn_on_reaped(srv, status);
	else if (r < 0) /* ECHILD: nothing left to wait for */
		turn_on_reaped(srv, 0);
	turn_maybe_finish(srv);
}

static bool pipe_has_data(struct lws *wsi)
{
	int n = 0;
	return wsi && ioctl(lws_get_socket_fd(wsi), FIONREAD, &n) == 0 && n > 0;
}

/* The agent exited but something (a background child, possibly outside the
 * group) still holds its stdout/stderr.  While output is still flowing to
 * cortexd (paused for backpressure, or unread bytes in a pipe) keep waiting,
 * up to WSA_EOF_GIVE_UP_MS; otherwise kill the group, then stop listening:
 * the turn must end. */
static void sul_eof_cb(lws_sorted_usec_list_t *sul)
{
	struct wsa_server *srv = lws_container_of(sul, struct wsa_server, turn.sul_eof);
	struct wsa_turn *t = &srv->turn;
	if (t->state != TURN_RUNNING)
		return;
	bool draining = t->paused || pipe_has_data(t->out_wsi) || pipe_has_data(t->err_wsi);
	if (draining && lws_now_usecs() - t->reaped_at < WSA_EOF_GIVE_UP_MS * LWS_US_PER_MS) {
		lws_sul_schedule(srv->ctx, 0, sul, sul_eof_cb, 500 * LWS_US_PER_MS);
		return;
	}
	if (t->eof_stage++ == 0) {
		wsa_agent_signal_group(t->pid, SIGKILL);
		lws_sul_schedule(srv->ctx, 0, sul, sul_eof_cb, 500 * LWS_US_PER_MS);
		return;
	}
	t->forced_eof = true; /* a partial last line is a cut line: drop it */
	close_wsi_async(t->out_wsi);
	close_wsi_async(t->err_wsi);
}

static void sul_kill_cb(lws_sorted_usec_list_t *sul)
{
	struct wsa_server *srv = lws_container_of(sul, struct wsa_server, turn.sul_kill);
	struct wsa_turn *t = &srv->turn;
	if (t->state == TURN_RUNNING && !t->reaped)
		wsa_agent_signal_group(t->pid, SIGKILL);
}

static void turn_cancel(struct wsa_server *srv)
{
	struct wsa_turn *t = &srv->turn;
	if (t->state == TURN_WAITING) {
		send_error(srv, t->owner, true, t->id, "cancelled", "cancelled before the agent started");
		turn_reset(srv);
	} else if (t->state == TURN_RUNNING && !t->cancelled) {
		t->cancelled = true;
		if (t->reaped) {
			wsa_agent_signal_group(t->pid, SIGKILL); /* only leftovers remain */
		} else {
			wsa_agent_signal_group(t->pid, SIGTERM);
			lws_sul_schedule(srv->ctx, 0, &t->sul_kill, sul_kill_cb,
					 WSA_KILL_GRACE_MS * LWS_US_PER_MS);
		}
	}
}

static struct lws *adopt_fd(struct wsa_server *srv, int fd, enum fd_kind kind)
{
	lws_adopt_desc_t ad = {
		.vh = srv->vh,
		.type = LWS_ADOPT_RAW_FILE_DESC,
		.fd.filefd = fd,
		.vh_prot_name = WSA_FD_PROTOCOL,
		.opaque = (void *)(uintptr_t)kind,
	};
	/* On failure lws has closed fd. */
	return lws_adopt_descriptor_vhost_via_info(&ad);
}

static void turn_start_agent(struct wsa_server *srv, struct wsa_context *actx)
{
	struct wsa_turn *t = &srv->turn;
	struct wsa_child child;
	cx_err err = CX_ERR_INIT;

	if (wsa_agent_spawn(actx, &child, &err) < 0) {
		send_error(srv, t->owner, true, t->id, "spawn_failed", "%s", err.msg);
		turn_reset(srv);
		return;
	}
	t->state = TURN_RUNNING;
	t->pid = child.pid;
	wsa_lines_init(&t->out_lines, CX_CAP_AGENT_LINE, false);
	wsa_lines_init(&t->err_lines, CX_CAP_STDERR_TAIL, true);
	t->out_wsi = adopt_fd(srv, child.out_fd, FD_STDOUT);
	t->err_wsi = adopt_fd(srv, child.err_fd, FD_STDERR);
	if (child.pidfd >= 0)
		t->pid_wsi = adopt_fd(srv, child.pidfd, FD_PIDFD);
	if (!t->out_wsi || !t->err_wsi) {
		/* Cannot watch it, so do not let it run; the turn still ends with wsa.exit. */
		send_error(srv, t->owner, true, t->id, "internal", "cannot watch the agent's pipes");
		turn_cancel(srv);
		wsa_agent_signal_group(t->pid, SIGKILL);
	}
	flow_update(srv);
	turn_try_reap(srv); /* covers the no-pidfd case where SIGCHLD already came */
}

/* One attempt to take the context file; stays WAITING if it is not there. */
static void turn_try_context(struct wsa_server *srv)
{
	struct wsa_turn *t = &srv->turn;
	struct wsa_context actx = {0};
	cx_err err = CX_ERR_INIT;

	int rc = wsa_context_take(srv->opts.context_path, &actx, &err);
	if (rc == CX_NOTFOUND)
		return;
	lws_sul_cancel(&t->sul_deadline);
	if (rc < 0) {
		send_error(srv, t->owner, true, t->id, "bad_context", "%s", err.msg);
		turn_reset(srv);
		return;
	}
	turn_start_agent(srv, &actx);
	wsa_context_free(&actx);
}

static void sul_deadline_cb(lws_sorted_usec_list_t *sul)
{
	struct wsa_server *srv = lws_container_of(sul, struct wsa_server, turn.sul_deadline);
	struct wsa_turn *t = &srv->turn;
	if (t->state != TURN_WAITING)
		return;
	turn_try_context(srv); /* last look, in case an event was missed */
	if (t->state != TURN_WAITING)
		return;
	send_error(srv, t->owner, true, t->id, "context_timeout", "no context file at %s within %u ms",
		   srv->opts.context_path, srv->opts.context_timeout_ms);
	turn_reset(srv);
}

static void handle_run(struct wsa_server *srv, struct wsa_conn *c, json_int_t id)
{
	struct wsa_turn *t = &srv->turn;
	if (t->state != TURN_IDLE) {
		send_error(srv, c, true, id, "busy", "turn %" JSON_INTEGER_FORMAT " is still running",
			   t->id);
		return;
	}
	t->state = TURN_WAITING;
	t->id = id;
	t->owner = c;
	/* Watch first, then look: a file written in between is not missed. */
	if (inotify_add_watch(srv->inotify_fd, srv->ctx_dir, IN_CLOSE_WRITE | IN_MOVED_TO) < 0) {
		send_error(srv, c, true, id, "bad_context", "cannot watch %s: %s", srv->ctx_dir,
			   strerror(errno));
		turn_reset(srv);
		return;
	}
	turn_try_context(srv);
	if (t->state == TURN_WAITING)
		lws_sul_schedule(srv->ctx, 0, &t->sul_deadline, sul_deadline_cb,
				 (lws_usec_t)srv->opts.context_timeout_ms * LWS_US_PER_MS);
}

static void handle_message(struct wsa_server *srv, struct wsa_conn *c, const char *buf, size_t len)
{
	json_error_t jerr;
	json_t *root = json_loadb(buf, len, 0, &jerr);
	if (!root || !json_is_object(root)) {
		send_error(srv, c, false, 0, "bad_request", "%s",
			   root ? "frame must be a JSON object" : jerr.text);
		json_decref(root);
		return;
	}
	const char *type = json_string_value(json_object_get(root, "type"));
	if (!type) {
		send_error(srv, c, false, 0, "bad_request", "missing string field \"type\"");
	} else if (!strcmp(type, "run")) {
		json_t *jturn = json_object_get(root, "turn");
		if (!json_is_integer(jturn))
			send_error(srv, c, false, 0, "bad_request", "\"run\" needs an integer \"turn\"");
		else
			handle_run(srv, c, json_integer_value(jturn));
	} else if (!strcmp(type, "cancel")) {
		turn_cancel(srv); /* nothing running: nothing to do */
	} else if (!strcmp(type, "ping")) {
		conn_send(srv, c, "{\"type\":\"pong\"}", 15);
	} else {
		send_error(srv, c, false, 0, "bad_request", "unknown type \"%.64s\"", type);
	}
	json_decref(root);
}

/* ---------------------------------------------------------- agent output */

static int on_stdout_line(void *arg, const char *line, size_t len, bool too_long)
{
	struct wsa_server *srv = arg;
	struct wsa_turn *t = &srv->turn;
	if (too_long) {
		send_error(srv, t->owner, true, t->id, "line_too_long",
			   "agent stdout line over %u bytes dropped", CX_CAP_AGENT_LINE);
		return 0;
	}
	if (!len)
		return 0;
	if (!wsa_utf8_valid(line, len)) {
		/* A text frame must be UTF-8 or the peer closes the connection. */
		send_error(srv, t->owner, true, t->id, "bad_line",
			   "agent stdout line of %zu bytes is not valid UTF-8; dropped", len);
		return 0;
	}
	conn_send(srv, t->owner, line, len); /* verbatim: never re-encoded */
	return 0;
}

static int on_stderr_line(void *arg, const char *line, size_t len, bool too_long)
{
	struct wsa_server *srv = arg;
	struct wsa_turn *t = &srv->turn;
	(void)too_long; /* split mode: long lines arrive in pieces */
	if (!len || !t->owner)
		return 0;
	char *clean = wsa_utf8_sanitize(line, len, NULL);
	if (!clean)
		return 0;
	conn_send_json(srv, t->owner,
		       json_pack("{s:s, s:I, s:s}", "type", "wsa.stderr", "turn", t->id, "text", clean));
	free(clean);
	return 0;
}

static void tail_append(struct wsa_turn *t, const char *data, size_t n)
{
	const size_t cap = sizeof t->tail;
	if (n >= cap) {
		memcpy(t->tail, data + n - cap, cap);
		t->tail_len = cap;
		t->tail_cut = true;
		return;
	}
	if (t->tail_len + n > cap) {
		size_t drop = t->tail_len + n - cap;
		memmove(t->tail, t->tail + drop, t->tail_len - drop);
		t->tail_len -= drop;
		t->tail_cut = true;
	}
	memcpy(t->tail + t->tail_len, data, n);
	t->tail_len += n;
}

/* 0: data consumed; 1: nothing to read right now; -1: EOF or error (close it). */
static int on_pipe_readable(struct wsa_server *srv, struct lws *wsi, enum fd_kind kind)
{
	static char buf[WSA_READ_CHUNK]; /* single-threaded loop */
	struct wsa_turn *t = &srv->turn;
	cx_err err = CX_ERR_INIT;

	ssize_t r;
	do
		r = read(lws_get_socket_fd(wsi), buf, sizeof buf);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return errno == EAGAIN ? 1 : -1; /* 1: nothing now, try later */
	if (r == 0)
		return -1; /* EOF: the close callback finishes the stream */
	int rc;
	if (kind == FD_STDOUT) {
		rc = wsa_lines_feed(&t->out_lines, buf, (size_t)r, on_stdout_line, srv, &err);
	} else {
		tail_append(t, buf, (size_t)r);
		rc = wsa_lines_feed(&t->err_lines, buf, (size_t)r, on_stderr_line, srv, &err);
	}
	if (rc < 0) {
		lwsl_err("wsa: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static void on_fd_closed(struct wsa_server *srv, struct lws *wsi, enum fd_kind kind)
{
	struct wsa_turn *t = &srv->turn;
	/* lws also closes a pipe on POLLHUP while we have POLLIN masked for
	 * backpressure, with output still buffered in it.  The fd is still open
	 * here: take what is left (at most one pipe buffer, so still bounded). */
	if ((kind == FD_STDOUT || kind == FD_STDERR) && !srv->stopping && !t->forced_eof &&
	    (wsi == t->out_wsi || wsi == t->err_wsi))
		while (on_pipe_readable(srv, wsi, kind) == 0)
			;
	if (kind == FD_STDOUT && wsi == t->out_wsi) {
		t->out_wsi = NULL;
		if (!srv->stopping && !t->forced_eof)
			wsa_lines_finish(&t->out_lines, on_stdout_line, srv);
	} else if (kind == FD_STDERR && wsi == t->err_wsi) {
		t->err_wsi = NULL;
		if (!srv->stopping && !t->forced_eof)
			wsa_lines_finish(&t->err_lines, on_stderr_line, srv);
	} else if (kind == FD_PIDFD && wsi == t->pid_wsi) {
		t->pid_wsi = NULL;
	} else if (kind == FD_INOTIFY) {
		srv->inotify_wsi = NULL;
	} else if (kind == FD_SIGNAL) {
		srv->signal_wsi = NULL;
	}
	if (!srv->stopping)
		turn_maybe_finish(srv);
}

static int on_signalfd(struct wsa_server *srv, struct lws *wsi)
{
	struct signalfd_siginfo si;
	while (read(lws_get_socket_fd(wsi), &si, sizeof si) == (ssize_t)sizeof si) {
		if (si.ssi_signo == SIGCHLD)
			turn_try_reap(srv);
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
	if (hit && srv->turn.state == TURN_WAITING)
		turn_try_context(srv);
	return 0;
}

/* ------------------------------------------------------- lws callbacks */

static int callback_fd(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		       size_t len)
{
	(void)user, (void)in, (void)len;
	struct wsa_server *srv = server_of(wsi);
	enum fd_kind kind = (enum fd_kind)(uintptr_t)lws_get_opaque_user_data(wsi);

	switch (reason) {
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		return -1; /* internal protocol: no WebSocket client may select it */
	case LWS_CALLBACK_RAW_RX_FILE:
		if (srv->stopping)
			return 0;
		switch (kind) {
		case FD_STDOUT:
		case FD_STDERR:
			return on_pipe_readable(srv, wsi, kind) < 0 ? -1 : 0;
		case FD_PIDFD:
			if (srv->turn.state == TURN_RUNNING && !srv->turn.reaped)
				turn_try_reap(srv);
			/* Once reaped the pidfd stays readable forever: drop it. */
			return (srv->turn.state != TURN_RUNNING || srv->turn.reaped) ? -1 : 0;
		case FD_SIGNAL:
			return on_signalfd(srv, wsi);
		case FD_INOTIFY:
			return on_inotify(srv, wsi);
		}
		return -1;
	case LWS_CALLBACK_RAW_CLOSE_FILE:
		on_fd_closed(srv, wsi, kind);
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
	if (!c->rx_oversize) {
		if (c->rx_len + len > WSA_CAP_CLIENT_FRAME) {
			c->rx_oversize = true; /* swallow the rest, then say so */
		} else {
			if (!c->rx && !(c->rx = malloc(WSA_CAP_CLIENT_FRAME))) {
				c->rx_oversize = true;
			} else {
				memcpy(c->rx + c->rx_len, in, len);
				c->rx_len += len;
			}
		}
	}
	if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi))
		return;
	if (c->rx_oversize)
		send_error(srv, c, false, 0, "bad_request", "message over %u bytes",
			   WSA_CAP_CLIENT_FRAME);
	else if (c->rx_binary)
		send_error(srv, c, false, 0, "bad_request", "binary messages are not accepted");
	else
		handle_message(srv, c, c->rx, c->rx_len);
	c->rx_len = 0;
	c->rx_oversize = c->rx_binary = false;
}

static int conn_writeable(struct wsa_server *srv, struct wsa_conn *c, struct lws *wsi)
{
	struct wsa_frame *f = wsa_outq_pop(&c->q);
	if (!f)
		return 0;
	int m = lws_write(wsi, f->data + LWS_PRE, f->len, LWS_WRITE_TEXT);
	size_t sent_len = f->len;
	free(f);
	if (m < (int)sent_len) {
		lwsl_err("wsa: lws_write failed (%d of %zu)\n", m, sent_len);
		return -1;
	}
	if (c->rx_paused && c->q.bytes <= WSA_CAP_OUT_QUEUE) {
		c->rx_paused = false;
		lws_rx_flow_control(wsi, 1);
	}
	flow_update(srv);
	if (c->q.head)
		lws_callback_on_writable(wsi); /* one lws_write per callback */
	return 0;
}

static void conn_closed(struct wsa_server *srv, struct wsa_conn *c)
{
	struct wsa_turn *t = &srv->turn;
	if (!srv->stopping && t->owner == c) {
		/* cortexd went away: nobody will read this turn, stop the agent.
		 * Detach first so nothing is queued to the closing connection. */
		t->owner = NULL;
		turn_cancel(srv);
		flow_update(srv); /* output now drops, so let the pipes drain */
	}
	wsa_outq_clear(&c->q);
	free(c->rx);
	c->rx = NULL;
	c->wsi = NULL;
}

static int callback_agent(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
			  size_t len)
{
	struct wsa_conn *c = user;
	struct wsa_server *srv = server_of(wsi);

	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED:
		*c = (struct wsa_conn){.wsi = wsi};
		return 0;
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
	{WSA_PROTOCOL, callback_agent, sizeof(struct wsa_conn), 4096, 0, NULL, 0},
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
	if (!(srv->signal_wsi = adopt_fd(srv, sfd, FD_SIGNAL)))
		return cx_err_set(err, 0, "cannot adopt the signalfd into the event loop");

	int ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (ifd < 0)
		return cx_err_set(err, errno, "inotify_init1");
	srv->inotify_fd = ifd;
	if (!(srv->inotify_wsi = adopt_fd(srv, ifd, FD_INOTIFY)))
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

static int report_ready(struct wsa_server *srv, cx_err *err)
{
	/* lws logs but does not fail vhost creation on a bind error: check. */
	struct stat st;
	if (stat(srv->opts.socket_path, &st) < 0 || !S_ISSOCK(st.st_mode))
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
	if (lstat(opts->socket_path, &st) == 0) {
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
	if (!(srv->ctx = lws_create_context(&ci))) {
		cx_err_set(err, 0, "lws_create_context failed");
		goto fail;
	}

	struct lws_context_creation_info vi;
	memset(&vi, 0, sizeof vi);
	vi.vhost_name = "ws-agent";
	vi.options = LWS_SERVER_OPTION_UNIX_SOCK;
	vi.iface = opts->socket_path;
	vi.port = 0; /* with UNIX_SOCK: listen on iface as a path */
	vi.protocols = protocols;
	vi.retry_and_idle_policy = &keepalive;
	if (!(srv->vh = lws_create_vhost(srv->ctx, &vi))) {
		cx_err_set(err, 0, "cannot listen on %s", opts->socket_path);
		goto fail;
	}
	if (setup_fds(srv, err) < 0 || report_ready(srv, err) < 0)
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

	struct wsa_turn *t = &srv->turn;
	if (t->state == TURN_RUNNING) {
		/* We are going away: nothing may outlive us in the sandbox. */
		wsa_agent_signal_group(t->pid, SIGKILL);
		if (!t->reaped) {
			int status;
			while (waitpid(t->pid, &status, 0) < 0 && errno == EINTR)
				;
			t->reaped = true;
		}
	}
	return 0;
}

void wsa_server_destroy(struct wsa_server *srv)
{
	if (!srv)
		return;
	srv->stopping = true;
	if (srv->ctx)
		lws_context_destroy(srv->ctx); /* closes adopted fds too */
	wsa_lines_free(&srv->turn.out_lines);
	wsa_lines_free(&srv->turn.err_lines);
	if (srv->opts.ready_fd >= 0)
		close(srv->opts.ready_fd);
	free(srv->ctx_dir);
	free(srv->ctx_base_buf);
	free(srv);
}
