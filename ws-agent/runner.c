/* runner.c — the agent processes on the lws loop (the internal half of server.c).
 *
 * One agent is current: its stdout lines go to the connection that started it,
 * verbatim, and input frames reach its stdin.  Retiring agents (stopped, or
 * replaced by a newer start) get SIGTERM, then SIGKILL after WSA_KILL_GRACE_MS;
 * their output is still drained, but dropped.  Each spawned agent ends with
 * exactly one wsa.exit: a current agent's once it is reaped AND both pipes hit
 * EOF (so no line of it can follow), a retired agent's once it is reaped.  An
 * agent struct is freed only when lws has closed all of its descriptors.
 *
 * Backpressure: past WSA_CAP_OUT_QUEUE bytes queued to the owner, the current
 * agent's pipes stop being polled (so it blocks on write) until the queue
 * drains to half.
 *
 * stdout read by cortexd: when the start asks ("stdout":true) the read end
 * of the agent's stdout goes to cortexd with wsa.started and cortexd reads
 * it itself (no wake-up of ours per turn).  We keep a copy we never read
 * (out_fd), so that the pipe comes back to us whenever cortexd lets go: a
 * retire, stdout_back, a detach, a dropped link.  A current agent's wsa.exit
 * then also waits for that pipe's writers to be gone (POLLHUP on our copy):
 * cortexd reads to EOF before it acts on the exit, so every line of the
 * agent comes before its exit there too.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

/* After a current agent exits, how long output may keep draining before it is cut. */
#define WSA_EOF_GIVE_UP_MS 60000

static void agent_maybe_finish(struct wsa_agent *a);

static lws_usec_t ms(unsigned v)
{
	return (lws_usec_t)v * LWS_US_PER_MS;
}

/* --------------------------------------------------------------- lifetime */

static void agent_cancel_timers(struct wsa_agent *a)
{
	lws_sul_cancel(&a->sul_kill);
	lws_sul_cancel(&a->sul_eof);
	lws_sul_cancel(&a->sul_in);
	lws_sul_cancel(&a->sul_hup);
}

/* Timers must already be cancelled (lws_sul_cancel needs a live context). */
static void agent_free(struct wsa_agent *a)
{
	cx_lines_free(&a->out_lines);
	cx_lines_free(&a->err_lines);
	wsa_outq_clear(&a->inq);
	if (a->in_fd >= 0)
		close(a->in_fd);
	if (a->out_fd >= 0)
		close(a->out_fd);
	free(a);
}

static void agent_unlink(struct wsa_agent *a)
{
	struct wsa_server *srv = a->srv;
	for (struct wsa_agent **pp = &srv->agents; *pp; pp = &(*pp)->next)
		if (*pp == a) {
			*pp = a->next;
			break;
		}
	if (srv->current == a)
		srv->current = NULL;
}

/* ---------------------------------------------- stdout read by cortexd */

/* No writer holds the stdout cortexd reads any more: what is in the pipe is
 * all there will be (POLLHUP on a pipe's read end, data left or not). */
static bool direct_hup(const struct wsa_agent *a)
{
	struct pollfd p = {.fd = a->out_fd, .events = 0};
	return a->out_fd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & POLLHUP);
}

static bool pipe_has_data_fd(int fd)
{
	int n = 0;
	return fd >= 0 && ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

static void set_paused(struct wsa_agent *a, bool pause);

/* cortexd lets go of the agent's stdout: we read it from here on (what it
 * did not read is still in the pipe).  A retired agent's is drained and
 * dropped; held or paused, it waits like the other pipes. */
static void stdout_take_back(struct wsa_agent *a)
{
	if (a->out_fd < 0 || a->out_wsi)
		return;
	int fd = a->out_fd;
	a->out_fd = -1;
	a->out_wsi = wsa_adopt_fd(a->srv, fd, &a->ref_out); /* closes fd on failure */
	if (!a->out_wsi) {
		/* Nobody could read it: it must not run on into a full pipe. */
		lwsl_err("wsa: cannot watch the stdout of gen %lld: killed\n", (long long)a->gen);
		wsa_agent_signal_group(a->pid, SIGKILL);
		return;
	}
	if (a->paused || a->held)
		set_paused(a, true);
}

static void agent_send_exit(struct wsa_agent *a)
{
	struct wsa_server *srv = a->srv;
	a->exit_sent = true;
	if (a->out_fd >= 0) { /* cortexd's copy is its own: ours served for POLLHUP */
		close(a->out_fd);
		a->out_fd = -1;
	}
	if (srv->current == a)
		srv->current = NULL; /* input to this gen is no_agent from now on */

	/* A tail cut mid-character would start with continuation bytes. */
	const char *tail = a->tail;
	size_t tlen = a->tail_len;
	for (int i = 0; a->tail_cut && i < 3 && tlen && ((unsigned char)*tail & 0xC0) == 0x80; i++)
		tail++, tlen--;
	char *clean = cx_utf8_sanitize(tail, tlen, NULL);
	int st = a->status;
	json_t *o = json_pack("{s:s, s:I, s:o, s:o, s:b, s:s}", "type", "wsa.exit", "gen",
			      (json_int_t)a->gen, "code",
			      WIFEXITED(st) ? json_integer(WEXITSTATUS(st)) : json_null(), "signal",
			      WIFSIGNALED(st) ? json_integer(WTERMSIG(st)) : json_null(), "retired",
			      a->retired, "stderr_tail", clean ? clean : "");
	free(clean);
	if (!o)
		lwsl_err("wsa: cannot build wsa.exit of gen %lld\n", (long long)a->gen);
	wsa_conn_send_json(srv, a->owner, o);
}

/* Send wsa.exit when it is due; free the agent once nothing refers to it.
 * a may be freed on return. */
static void agent_maybe_finish(struct wsa_agent *a)
{
	if (a->srv->stopping)
		return;
	if (!a->exit_sent && a->reaped &&
	    (a->retired || (!a->out_wsi && !a->err_wsi && (a->out_fd < 0 || a->forced_eof || direct_hup(a)))))
		agent_send_exit(a);
	if (a->exit_sent && !a->out_wsi && !a->err_wsi && !a->pid_wsi && !a->in_wsi) {
		agent_unlink(a);
		agent_cancel_timers(a);
		agent_free(a);
	}
}

/* ------------------------------------------------------------------ stdin */

/* Drop what is queued and let go of the write end: the agent sees EOF. */
static void stdin_close(struct wsa_agent *a)
{
	wsa_outq_clear(&a->inq);
	a->in_off = 0;
	lws_sul_cancel(&a->sul_in);
	if (a->in_fd >= 0) {
		close(a->in_fd);
		a->in_fd = -1;
	}
	wsa_close_wsi_async(a->in_wsi);
}

/* Write what the pipe takes.  0: queue empty; 1: pipe full; -1: the agent's
 * stdin is gone (EPIPE) and the queue was dropped, silently: its exit follows. */
static int stdin_flush(struct wsa_agent *a)
{
	struct wsa_frame *f;
	while ((f = a->inq.head)) {
		ssize_t w = write(a->in_fd, f->data + LWS_PRE + a->in_off, f->len - a->in_off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			return 1;
		if (w < 0) {
			if (errno != EPIPE)
				lwsl_warn("wsa: stdin of gen %lld: %s\n", (long long)a->gen,
					  strerror(errno));
			stdin_close(a);
			return -1;
		}
		a->in_off += (size_t)w;
		if (a->in_off == f->len) {
			free(wsa_outq_pop(&a->inq));
			a->in_off = 0;
		}
	}
	return 0;
}

/* The raw-file role clears POLLOUT right after the writeable callback, so a
 * request made inside it is lost: re-arm from a timer due at once. */
static void sul_in_cb(lws_sorted_usec_list_t *sul)
{
	struct wsa_agent *a = lws_container_of(sul, struct wsa_agent, sul_in);
	if (a->in_wsi)
		lws_callback_on_writable(a->in_wsi);
}

/* The pipe is full: watch a dup of the write end for POLLOUT until the queue drains. */
static void stdin_watch(struct wsa_agent *a)
{
	if (a->in_wsi)
		return;
	int d = fcntl(a->in_fd, F_DUPFD_CLOEXEC, 3);
	if (d < 0 || !(a->in_wsi = wsa_adopt_fd(a->srv, d, &a->ref_in))) {
		size_t lost = a->inq.bytes - a->in_off;
		wsa_outq_clear(&a->inq);
		a->in_off = 0;
		wsa_send_error(a->srv, a->owner, a->gen, "stdin_full",
			       "cannot watch the agent's stdin; %zu bytes dropped", lost);
		return;
	}
	lws_callback_on_writable(a->in_wsi);
}

int wsa_runner_fd_writeable(struct wsa_server *srv, struct lws *wsi, struct wsa_fdref *ref)
{
	struct wsa_agent *a = ref->agent;
	if (ref->kind != FD_STDIN || wsi != a->in_wsi || a->in_fd < 0)
		return ref->kind == FD_STDIN ? -1 : 0;
	if (stdin_flush(a) == 1) {
		lws_sul_schedule(srv->ctx, 0, &a->sul_in, sul_in_cb, 0);
		return 0;
	}
	return -1; /* drained (or gone): stop watching; the close callback clears in_wsi */
}

void wsa_runner_input(struct wsa_server *srv, struct wsa_conn *c, int64_t gen, const char *data,
		      size_t len)
{
	struct wsa_agent *a = srv->current;
	cx_err err = CX_ERR_INIT;

	if (!a || a->gen != gen || a->reaped) {
		wsa_send_error(srv, c, gen, "no_agent", "no running agent of gen %lld",
			       (long long)gen);
		return;
	}
	if (a->in_fd < 0)
		return; /* it closed its stdin: dropped silently, its exit will follow */
	size_t queued = a->inq.bytes - a->in_off;
	if (len + 1 > WSA_CAP_STDIN_QUEUE - queued) {
		wsa_send_error(
		    srv, c, gen, "stdin_full",
		    "%zu bytes already queued to the agent's stdin (cap %u); %zu dropped", queued,
		    WSA_CAP_STDIN_QUEUE, len + 1);
		return;
	}
	if (wsa_outq_push_line(&a->inq, data, len, &err) < 0) {
		wsa_send_error(srv, c, gen, "stdin_full", "%s", err.msg);
		return;
	}
	if (!a->in_wsi && stdin_flush(a) == 1)
		stdin_watch(a);
}

/* ----------------------------------------------------------------- output */

static int on_stdout_line(void *arg, const char *line, size_t len, bool too_long)
{
	struct wsa_agent *a = arg;
	struct wsa_server *srv = a->srv;
	if (a->resync) {
		/* Taken back from a cortexd that vanished mid-read: the first
		 * line may be the rest of one it had begun.  Only a line that is
		 * a whole JSON object by itself goes on (the agent's lines are
		 * JSON objects; the tail of one cut inside is not one): half a
		 * line is never forwarded as a line. */
		a->resync = false;
		if (!too_long && len) {
			json_t *o = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
			bool whole = json_is_object(o);
			json_decref(o);
			if (!whole) {
				lwsl_warn("wsa: gen %lld: dropped %zu bytes up to the first line boundary after the link dropped\n",
					  (long long)a->gen, len);
				return 0;
			}
		} else if (too_long) {
			return 0;
		}
	}
	if (too_long) {
		wsa_send_error(srv, a->owner, a->gen, "line_too_long",
			       "agent stdout line over %u bytes dropped", CX_CAP_AGENT_LINE);
		return 0;
	}
	if (!len)
		return 0;
	if (!cx_utf8_valid(line, len)) {
		/* A text frame must be UTF-8 or the peer closes the connection. */
		wsa_send_error(srv, a->owner, a->gen, "bad_line",
			       "agent stdout line of %zu bytes is not valid UTF-8; dropped", len);
		return 0;
	}
	if (cx_line_spoofs_event(line, len)) {
		/* The agent's output must never pass for ws-agent's own events. */
		wsa_send_error(srv, a->owner, a->gen, "bad_line",
			       "agent stdout line with a \"wsa.\" type dropped");
		return 0;
	}
	wsa_conn_send(srv, a->owner, line, len); /* verbatim: never re-encoded */
	return 0;
}

static int on_stderr_line(void *arg, const char *line, size_t len, bool too_long)
{
	struct wsa_agent *a = arg;
	(void)too_long; /* split mode: long lines arrive in pieces */
	if (!len || !a->owner)
		return 0;
	char *clean = cx_utf8_sanitize(line, len, NULL);
	if (!clean)
		return 0;
	wsa_conn_send_json(a->srv, a->owner,
			   json_pack("{s:s, s:I, s:s}", "type", "wsa.stderr", "gen",
				     (json_int_t)a->gen, "text", clean));
	free(clean);
	return 0;
}

static void tail_append(struct wsa_agent *a, const char *data, size_t n)
{
	const size_t cap = sizeof a->tail;
	if (n >= cap) {
		memcpy(a->tail, data + n - cap, cap);
		a->tail_len = cap;
		a->tail_cut = true;
		return;
	}
	if (a->tail_len + n > cap) {
		size_t drop = a->tail_len + n - cap;
		memmove(a->tail, a->tail + drop, a->tail_len - drop);
		a->tail_len -= drop;
		a->tail_cut = true;
	}
	memcpy(a->tail + a->tail_len, data, n);
	a->tail_len += n;
}

/* 0: data consumed; 1: nothing to read right now; -1: EOF or error (close it). */
static int pipe_read(struct wsa_agent *a, struct lws *wsi, enum fd_kind kind)
{
	static char buf[WSA_READ_CHUNK]; /* single-threaded loop */
	cx_err err = CX_ERR_INIT;

	ssize_t r;
	do
		r = read(lws_get_socket_fd(wsi), buf, sizeof buf);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return errno == EAGAIN ? 1 : -1;
	if (r == 0)
		return -1; /* EOF: the close callback finishes the stream */
	if (kind == FD_STDERR)
		tail_append(a, buf, (size_t)r);
	if (a->retired)
		return 0; /* drained and dropped */
	struct wsa_server *srv = a->srv;
	srv->defer = a->owner; /* the read's lines leave together, after it */
	int rc = kind == FD_STDOUT
		     ? cx_lines_feed(&a->out_lines, buf, (size_t)r, on_stdout_line, a, &err)
		     : cx_lines_feed(&a->err_lines, buf, (size_t)r, on_stderr_line, a, &err);
	wsa_conn_send_now(srv, a->owner);
	if (rc < 0) {
		lwsl_err("wsa: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static void set_paused(struct wsa_agent *a, bool pause)
{
	a->paused = pause;
	if (a->out_wsi)
		lws_rx_flow_control(a->out_wsi, !pause);
	if (a->err_wsi)
		lws_rx_flow_control(a->err_wsi, !pause);
}

void wsa_runner_flow_update(struct wsa_server *srv)
{
	struct wsa_agent *a = srv->current;
	if (!a || a->held)
		return;
	size_t queued = a->owner ? a->owner->q.bytes : 0;
	if (!a->paused && queued > WSA_CAP_OUT_QUEUE)
		set_paused(a, true);
	else if (a->paused && queued <= WSA_CAP_OUT_QUEUE / 2)
		set_paused(a, false);
}

/* ------------------------------------------------------- kill and reap */

static bool pipe_has_data(struct lws *wsi)
{
	return wsi && pipe_has_data_fd(lws_get_socket_fd(wsi));
}

/* The agent was reaped but something (a background child, possibly outside
 * the group) still holds its stdout/stderr.  A current agent's output that is
 * still flowing to cortexd (paused for backpressure, or unread bytes in a
 * pipe) may keep draining up to WSA_EOF_GIVE_UP_MS; otherwise kill the group,
 * give it a moment to reach EOF, then stop listening.  A retired agent's
 * pipes are closed as soon as this fires (reaped + grace). */
static void sul_eof_cb(lws_sorted_usec_list_t *sul)
{
	struct wsa_agent *a = lws_container_of(sul, struct wsa_agent, sul_eof);
	struct wsa_server *srv = a->srv;
	if (!a->retired) {
		bool draining = a->paused || pipe_has_data(a->out_wsi) || pipe_has_data(a->err_wsi) ||
				pipe_has_data_fd(a->out_fd); /* cortexd still reading (or paused) */
		if (draining && lws_now_usecs() - a->reaped_at < ms(WSA_EOF_GIVE_UP_MS)) {
			lws_sul_schedule(srv->ctx, 0, sul, sul_eof_cb, ms(500));
			return;
		}
		if (a->eof_stage++ == 0) {
			wsa_agent_signal_group(a->pid, SIGKILL);
			lws_sul_schedule(srv->ctx, 0, sul, sul_eof_cb, ms(500));
			return;
		}
	} else {
		wsa_agent_signal_group(a->pid, SIGKILL);
	}
	a->forced_eof = true; /* a partial last line is a cut line: drop it */
	wsa_close_wsi_async(a->out_wsi);
	wsa_close_wsi_async(a->err_wsi);
	agent_maybe_finish(a); /* cortexd's stdout: its reader stops at the exit; a may be freed */
}

/* Reaped with cortexd reading its stdout: the exit waits for the pipe's last
 * writer (a background child may hold it), checked here until sul_eof gives up. */
static void sul_hup_cb(lws_sorted_usec_list_t *sul)
{
	struct wsa_agent *a = lws_container_of(sul, struct wsa_agent, sul_hup);
	if (a->exit_sent || a->out_fd < 0)
		return;
	if (!direct_hup(a)) {
		lws_sul_schedule(a->srv->ctx, 0, sul, sul_hup_cb, ms(50));
		return;
	}
	agent_maybe_finish(a); /* a may be freed */
}

static void sul_kill_cb(lws_sorted_usec_list_t *sul)
{
	struct wsa_agent *a = lws_container_of(sul, struct wsa_agent, sul_kill);
	if (!a->reaped)
		wsa_agent_signal_group(a->pid, SIGKILL);
}

/* a may be freed on return. */
static void agent_on_reaped(struct wsa_agent *a, int status)
{
	struct wsa_server *srv = a->srv;
	a->reaped = true;
	a->reaped_at = lws_now_usecs();
	a->status = status;
	lws_sul_cancel(&a->sul_kill);
	wsa_close_wsi_async(a->pid_wsi);
	stdin_close(a); /* nobody reads it any more */
	bool direct_open = a->out_fd >= 0 && !direct_hup(a);
	if (a->out_wsi || a->err_wsi || direct_open)
		lws_sul_schedule(srv->ctx, 0, &a->sul_eof, sul_eof_cb, ms(WSA_KILL_GRACE_MS));
	if (direct_open)
		lws_sul_schedule(srv->ctx, 0, &a->sul_hup, sul_hup_cb, ms(50));
	agent_maybe_finish(a);
}

/* a may be freed on return. */
static void agent_try_reap(struct wsa_agent *a)
{
	int status;
	if (a->reaped)
		return;
	int r = wsa_agent_try_reap(a->pid, &status);
	if (r == 1)
		agent_on_reaped(a, status);
	else if (r < 0) /* ECHILD: nothing left to wait for */
		agent_on_reaped(a, 0);
}

void wsa_runner_reap_all(struct wsa_server *srv)
{
	struct wsa_agent *next;
	for (struct wsa_agent *a = srv->agents; a; a = next) {
		next = a->next;
		agent_try_reap(a);
	}
}

void wsa_runner_retire(struct wsa_agent *a)
{
	struct wsa_server *srv = a->srv;
	if (a->retired)
		return;
	a->retired = true;
	if (srv->current == a)
		srv->current = NULL;
	stdin_close(a);
	/* Nothing of it is forwarded any more: partial lines go, pipes drain freely. */
	cx_lines_free(&a->out_lines);
	cx_lines_free(&a->err_lines);
	if (a->paused)
		set_paused(a, false);
	stdout_take_back(a); /* cortexd stopped reading it: drained and dropped here */
	if (!a->reaped) {
		wsa_agent_signal_group(a->pid, SIGTERM);
		lws_sul_schedule(srv->ctx, 0, &a->sul_kill, sul_kill_cb, ms(WSA_KILL_GRACE_MS));
		return;
	}
	/* It had already exited (its pipes were still open): only leftovers remain. */
	wsa_agent_signal_group(a->pid, SIGKILL);
	if (a->out_wsi || a->err_wsi) {
		lws_usec_t left = a->reaped_at + ms(WSA_KILL_GRACE_MS) - lws_now_usecs();
		lws_sul_schedule(srv->ctx, 0, &a->sul_eof, sul_eof_cb, left > 0 ? left : 0);
	}
	agent_maybe_finish(a);
}

static void current_of(struct wsa_server *srv, int64_t *gen, pid_t *pid)
{
	struct wsa_agent *a = srv->current;
	*gen = a && !a->reaped ? a->gen : 0;
	*pid = a && !a->reaped ? a->pid : 0;
}

static void sul_detach_cb(lws_sorted_usec_list_t *sul)
{
	struct wsa_server *srv = lws_container_of(sul, struct wsa_server, sul_detach);
	struct wsa_agent *next;
	wsa_outq_clear(&srv->held_q); /* nobody attached: their output had nowhere to go */
	srv->dropped = false;
	for (struct wsa_agent *a = srv->agents; a; a = next) {
		next = a->next;
		if (!a->held || a->owner)
			continue;
		lwsl_warn("wsa: agent gen %lld was not attached again in time: stopped\n", (long long)a->gen);
		a->held = false;
		if (!a->exit_sent)
			wsa_runner_retire(a);
		else
			agent_maybe_finish(a);
	}
}

void wsa_runner_detach(struct wsa_server *srv, struct wsa_conn *c, const struct wsa_msg *m, int64_t *gen,
		       pid_t *pid)
{
	for (struct wsa_agent *a = srv->agents; a; a = a->next) {
		if (a->owner != c || a->retired)
			continue;
		a->held = true;
		set_paused(a, true); /* its output waits in its pipes */
		if (a->out_fd < 0)
			continue;
		/* cortexd stopped reading its stdout at a line boundary, or handed
		 * back the line it had begun: we go on from exactly there. */
		cx_err err = CX_ERR_INIT;
		if (m->out_gen == a->gen &&
		    cx_lines_preload(&a->out_lines, m->partial, m->partial_len, m->partial_dropping, &err) < 0) {
			lwsl_err("wsa: detach: %s: gen %lld resyncs at the next line\n", err.msg, (long long)a->gen);
			a->resync = true;
		}
		stdout_take_back(a);
	}
	lws_sul_schedule(srv->ctx, 0, &srv->sul_detach, sul_detach_cb, ms(WSA_DETACH_GRACE_MS));
	current_of(srv, gen, pid);
}

void wsa_runner_attach(struct wsa_server *srv, struct wsa_conn *c, int64_t *gen, pid_t *pid)
{
	lws_sul_cancel(&srv->sul_detach);
	current_of(srv, gen, pid);
	for (struct wsa_agent *a = srv->agents; a; a = a->next) {
		if (!a->held)
			continue;
		a->held = false;
		a->owner = c;
		set_paused(a, false);
	}
	wsa_runner_flow_update(srv);
}

void wsa_runner_conn_closed(struct wsa_server *srv, struct wsa_conn *c)
{
	/* cortexd died (sessions.keep_on_crash): the drop is a detach, and a
	 * new cortexd attaches within the grace or the agents are stopped. */
	if (srv->opts.hold_on_drop_ms && !srv->stopping) {
		bool any = false;
		for (struct wsa_agent *a = srv->agents; a; a = a->next) {
			if (a->owner != c)
				continue;
			a->owner = NULL;
			if (a->retired || a->exit_sent)
				continue;
			a->held = any = true;
			set_paused(a, true); /* its output waits in its pipes */
			if (a->out_fd >= 0) {
				/* cortexd died reading its stdout, maybe inside a line */
				a->resync = true;
				stdout_take_back(a);
			}
		}
		if (any) {
			srv->dropped = true;
			lwsl_warn("wsa: the connection dropped: its agents are held for %u ms\n",
				  srv->opts.hold_on_drop_ms);
			lws_sul_schedule(srv->ctx, 0, &srv->sul_detach, sul_detach_cb,
					 ms(srv->opts.hold_on_drop_ms));
		}
		return;
	}
	struct wsa_agent *next;
	for (struct wsa_agent *a = srv->agents; a; a = next) {
		next = a->next;
		if (a->owner != c)
			continue;
		a->owner = NULL; /* nothing more is queued to the closing connection */
		if (!a->exit_sent && !a->held)
			wsa_runner_retire(a);
	}
}

/* ------------------------------------------------------------------ start */

static void abandon_child(struct wsa_child *ch)
{
	int status;
	wsa_agent_signal_group(ch->pid, SIGKILL);
	while (waitpid(ch->pid, &status, 0) < 0 && errno == EINTR)
		;
	int fds[] = {ch->pidfd, ch->in_fd, ch->out_fd, ch->err_fd};
	for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

void wsa_runner_stdout_back(struct wsa_server *srv, struct wsa_conn *c, int64_t gen)
{
	for (struct wsa_agent *a = srv->agents; a; a = a->next)
		if (a->gen == gen && a->owner == c && a->out_fd >= 0) {
			lwsl_info("wsa: cortexd gave back the stdout of gen %lld\n", (long long)gen);
			stdout_take_back(a);
			wsa_runner_flow_update(srv);
			agent_maybe_finish(a); /* (a may be freed) */
			return;
		}
}

void wsa_runner_start(struct wsa_server *srv, struct wsa_conn *owner, int64_t gen, bool give_stdout,
		      const struct wsa_context *ctx)
{
	struct wsa_child child;
	cx_err err = CX_ERR_INIT;

	if (wsa_agent_spawn(ctx, &child, &err) < 0) {
		wsa_send_error(srv, owner, gen, "spawn_failed", "%s", err.msg);
		return;
	}
	struct wsa_agent *a = calloc(1, sizeof *a);
	if (!a) {
		abandon_child(&child);
		wsa_send_error(srv, owner, gen, "spawn_failed", "out of memory");
		return;
	}
	a->srv = srv;
	a->gen = gen;
	a->owner = owner;
	a->pid = child.pid;
	a->in_fd = child.in_fd;
	a->out_fd = -1;
	a->ref_in = (struct wsa_fdref){FD_STDIN, a};
	a->ref_out = (struct wsa_fdref){FD_STDOUT, a};
	a->ref_err = (struct wsa_fdref){FD_STDERR, a};
	a->ref_pid = (struct wsa_fdref){FD_PIDFD, a};
	cx_lines_init(&a->out_lines, CX_CAP_AGENT_LINE, false);
	cx_lines_init(&a->err_lines, CX_CAP_STDERR_TAIL, true);
	a->next = srv->agents;
	srv->agents = a;
	srv->current = a;

	/* Before any of its output: that only flows from the next loop iteration.
	 * The agent's stdin goes with it: cortexd writes its inputs there
	 * itself (no wake-up of ours per input); what it cannot write at once
	 * still comes as input frames (docs/protocol.md). */
	int pass = fcntl(child.in_fd, F_DUPFD_CLOEXEC, 3);
	/* The stdout too when cortexd asked (it then reads it, or says
	 * stdout_back): an fd nobody reads would stall the agent. */
	int pass_out = give_stdout ? fcntl(child.out_fd, F_DUPFD_CLOEXEC, 3) : -1;
	wsa_conn_send_json_fds(srv, owner,
			       json_pack("{s:s, s:I, s:i, s:b, s:b}", "type", "wsa.started", "gen",
					 (json_int_t)gen, "pid", (int)child.pid, "stdin", pass >= 0, "stdout",
					 pass_out >= 0),
			       pass, pass_out);

	if (pass_out >= 0) {
		a->out_fd = child.out_fd;
		a->out_wsi = NULL;
	} else {
		a->out_wsi = wsa_adopt_fd(srv, child.out_fd, &a->ref_out);
	}
	a->err_wsi = wsa_adopt_fd(srv, child.err_fd, &a->ref_err);
	if (child.pidfd >= 0)
		a->pid_wsi = wsa_adopt_fd(srv, child.pidfd, &a->ref_pid);
	if ((!a->out_wsi && a->out_fd < 0) || !a->err_wsi) {
		/* Cannot watch it, so do not let it run; it still ends with wsa.exit. */
		wsa_send_error(srv, owner, gen, "internal", "cannot watch the agent's pipes");
		wsa_runner_retire(a);
		wsa_agent_signal_group(a->pid, SIGKILL);
	} else if (a->paused) {
		/* wsa.started already found the owner's queue full: the pipes
		 * exist only now, so apply the pause to them. */
		set_paused(a, true);
	} else {
		wsa_runner_flow_update(srv);
	}
	agent_try_reap(a); /* covers the no-pidfd case where SIGCHLD already came */
}

/* ------------------------------------------------------- descriptors */

int wsa_runner_fd_rx(struct wsa_server *srv, struct lws *wsi, struct wsa_fdref *ref)
{
	(void)srv;
	struct wsa_agent *a = ref->agent;
	switch (ref->kind) {
	case FD_STDOUT:
	case FD_STDERR:
		return pipe_read(a, wsi, ref->kind) < 0 ? -1 : 0;
	case FD_PIDFD:
		/* a survives: its pid_wsi is only closed asynchronously. */
		agent_try_reap(a);
		/* Once reaped the pidfd stays readable forever: drop it. */
		return a->reaped ? -1 : 0;
	default:
		return 0;
	}
}

void wsa_runner_fd_closed(struct wsa_server *srv, struct lws *wsi, struct wsa_fdref *ref)
{
	struct wsa_agent *a = ref->agent;
	bool live = !srv->stopping && !a->forced_eof && !a->retired;

	if ((ref->kind == FD_STDOUT && wsi == a->out_wsi) ||
	    (ref->kind == FD_STDERR && wsi == a->err_wsi)) {
		/* lws also closes a pipe on POLLHUP while we have POLLIN masked for
		 * backpressure, with output still buffered in it.  The fd is still
		 * open here: take what is left (at most one pipe buffer, so bounded). */
		if (live)
			while (pipe_read(a, wsi, ref->kind) == 0)
				;
		if (ref->kind == FD_STDOUT) {
			a->out_wsi = NULL;
			if (live)
				cx_lines_finish(&a->out_lines, on_stdout_line, a);
		} else {
			a->err_wsi = NULL;
			if (live)
				cx_lines_finish(&a->err_lines, on_stderr_line, a);
		}
	} else if (ref->kind == FD_PIDFD && wsi == a->pid_wsi) {
		a->pid_wsi = NULL;
	} else if (ref->kind == FD_STDIN && wsi == a->in_wsi) {
		a->in_wsi = NULL;
		lws_sul_cancel(&a->sul_in);
	} else {
		return; /* not (or no longer) one of ours, e.g. a failed adoption */
	}
	agent_maybe_finish(a);
}

/* ------------------------------------------------------------- shutdown */

void wsa_runner_kill_all(struct wsa_server *srv)
{
	for (struct wsa_agent *a = srv->agents; a; a = a->next) {
		agent_cancel_timers(a);
		/* We are going away: nothing may outlive us in the sandbox. */
		wsa_agent_signal_group(a->pid, SIGKILL);
		if (!a->reaped) {
			int status;
			while (waitpid(a->pid, &status, 0) < 0 && errno == EINTR)
				;
			a->reaped = true;
		}
	}
	srv->current = NULL;
}

void wsa_runner_free_all(struct wsa_server *srv)
{
	struct wsa_agent *next;
	for (struct wsa_agent *a = srv->agents; a; a = next) {
		next = a->next;
		agent_free(a);
	}
	srv->agents = srv->current = NULL;
}
