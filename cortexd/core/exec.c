/* exec.c — commands in a session's sandbox (see exec.h). */
#include "exec.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "caps.h"
#include "fanout.h"
#include "lifecycle.h"
#include "log.h"
#include "metrics.h"
#include "work.h"

#include "exec-internal.h"

static uint64_t started_total, refused_total[2], timeouts_total, cancelled_total, failed_total, out_bytes_total;
static uint64_t running_now;

static void exec_metrics_write(FILE *f, void *arg)
{
	(void)arg;
	static const char *const why[] = {"session", "user"};
	metrics_counter(f, "cortex_exec_started_total", "commands started in sandboxes (exec)", started_total);
	metrics_counter_by(f, "cortex_exec_refused_total", "exec requests refused by a cap (exec.max_per_*)", "cap", why,
			   refused_total, 2);
	metrics_counter(f, "cortex_exec_timeouts_total", "commands killed at their timeout_s", timeouts_total);
	metrics_counter(f, "cortex_exec_cancelled_total", "commands killed by exec_cancel or their client leaving",
			cancelled_total);
	metrics_counter(f, "cortex_exec_failed_total", "commands that could not start", failed_total);
	metrics_counter(f, "cortex_exec_output_bytes_total", "stdout and stderr bytes read from commands",
			out_bytes_total);
	metrics_gauge(f, "cortex_exec_running", "commands running or waiting to start", (double)running_now);
}

void exec_count_started(void)
{
	started_total++;
}

void exec_init(void)
{
	metrics_register("exec", exec_metrics_write, NULL);
}

static unsigned user_execs(struct cortexd *d, const char *user)
{
	unsigned n = 0;
	for (struct session *s = d->sessions; s; s = s->next)
		if (!strcmp(s->user, user))
			n += s->nexec;
	return n;
}

/* ---- frames to the client ---- */

void exec_send_obj(struct exec *x, json_t *o)
{
	if (!x->c || !o)
		return json_decref(o);
	char *txt = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!txt)
		return frames_count_alloc_failure();
	fanout_send_one(x->c, txt, strlen(txt));
	free(txt);
}

static void send_error(struct session *s, struct client *c, const char *id, const char *code, const char *msg)
{
	json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "type", "cortex.error", "id", id, "code", code, "message", msg);
	if (o)
		fanout_to(s, c, o);
}

/* ---- the end of a command ---- */

static void pipe_close(struct ex_pipe *p)
{
	if (p->wsi) {
		lws_set_opaque_user_data(p->wsi, NULL);
		lws_set_timeout(p->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC); /* closes fd */
	} else if (p->fd >= 0) {
		close(p->fd);
	}
	p->wsi = NULL;
	p->fd = -1;
	p->open = 0;
}

void exec_free(struct exec *x)
{
	struct session *s = x->s;
	for (struct exec **pp = &s->execs; *pp; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			s->nexec--;
			running_now--;
			break;
		}
	lws_sul_cancel(&x->sul_wait);
	lws_sul_cancel(&x->sul_timeout);
	for (int i = 0; i < R_N; i++)
		pipe_close(&x->p[i]);
	exec_spec_clear(&x->sp);
	free(x->in_buf);
	free(x->buf[0]);
	free(x->buf[1]);
	free(x);
	session_unref(s);
}

static const char *sig_name(int sig)
{
	const char *n = sigabbrev_np(sig);
	return n ? n : "UNKNOWN";
}

/* It did not start (or its session went): one cortex.error with its id. */
void exec_fail(struct exec *x, const char *code, const char *msg)
{
	failed_total++;
	if (x->c) {
		send_error(x->s, x->c, x->sp.id, code, msg);
	} else if (x->done) {
		struct exec_result r = {.code = -1, .fail_code = code, .fail_msg = msg};
		x->done(x->arg, &r);
	}
	exec_free(x);
}

static void exec_finish(struct exec *x)
{
	int code = -1;
	const char *sig = NULL;
	if (x->have_status && WIFEXITED(x->status)) {
		code = WEXITSTATUS(x->status);
	} else if (x->have_status && WIFSIGNALED(x->status)) {
		code = 128 + WTERMSIG(x->status);
		sig = sig_name(WTERMSIG(x->status));
	} else if (x->killed) {
		code = 128 + SIGKILL;
		sig = "KILL";
	}
	double ms = (double)(cx_mono_us() - x->t0_us) / 1000.0;
	if (x->c) {
		json_t *o = json_pack("{s:s,s:s,s:o,s:o,s:b,s:b,s:f}", "type", "cortex.exit", "id", x->sp.id, "code",
				      code >= 0 ? json_integer(code) : json_null(), "signal",
				      sig ? json_string(sig) : json_null(), "timed_out", x->timed_out, "cancelled",
				      x->cancelled, "ms", ms);
		if (o && x->sandbox_gone && !x->have_status)
			json_object_set_new(o, "error", json_string("the session's sandbox stopped"));
		exec_send_obj(x, o);
	} else if (x->done) {
		struct exec_result r = {code, sig, x->timed_out, x->truncated, x->buf[0], x->buf[1],
					x->nbuf[0], x->nbuf[1], ms, NULL, NULL};
		if (x->sandbox_gone && !x->have_status) {
			r.fail_code = "session_unavailable";
			r.fail_msg = "the session's sandbox stopped while the command ran";
		}
		x->done(x->arg, &r);
	}
	exec_free(x);
}

static void drain_cb(lws_sorted_usec_list_t *sul)
{
	struct exec *x = lws_container_of(sul, struct exec, sul_wait);
	exec_finish(x); /* a process outside its group still holds the output: enough */
}

static void check_end(struct exec *x)
{
	if (!x->exited)
		return;
	if (!x->p[R_OUT].open && !x->p[R_ERR].open)
		exec_finish(x);
	else if (!x->sul_wait.list.owner && x->s->d->ctx)
		lws_sul_schedule(x->s->d->ctx, 0, &x->sul_wait, drain_cb, EXEC_DRAIN_US);
}

/* Cancel, timeout, the client gone: closing our end of the exit fd makes
 * init SIGKILL the command's process group. */
void exec_kill(struct exec *x)
{
	if (x->st != EX_RUN || x->exited)
		return;
	x->killed = 1;
	x->exited = 1;
	pipe_close(&x->p[R_EXIT]);
	check_end(x);
}

void exec_timeout_cb(lws_sorted_usec_list_t *sul)
{
	struct exec *x = lws_container_of(sul, struct exec, sul_timeout);
	x->timed_out = 1;
	timeouts_total++;
	exec_kill(x);
}

/* ---- output ---- */

static size_t queue_cap(const struct session *s)
{
	return s->d->cfg.ws_client_queue_max_bytes ? s->d->cfg.ws_client_queue_max_bytes : CX_CAP_CLIENT_QUEUE;
}

static void set_paused(struct exec *x, int paused)
{
	x->paused = paused;
	for (int r = R_OUT; r <= R_ERR; r++)
		if (x->p[r].wsi)
			lws_rx_flow_control(x->p[r].wsi, !paused);
}

/* Valid UTF-8 of buf (a cut sequence at the end is kept for the next read,
 * other bad bytes become U+FFFD). */
static json_t *utf8_text(struct ex_pipe *p, const unsigned char *in, size_t n, int last)
{
	size_t cap = (p->ncarry + n) * 3 + 1;
	unsigned char *src = malloc(p->ncarry + n + 1), *dst = malloc(cap);
	if (!src || !dst) {
		free(src);
		free(dst);
		return NULL;
	}
	memcpy(src, p->carry, p->ncarry);
	memcpy(src + p->ncarry, in, n);
	size_t len = p->ncarry + n, o = 0, i = 0;
	p->ncarry = 0;
	while (i < len) {
		size_t k = cx_utf8_seq(src + i, len - i);
		if (k) {
			memcpy(dst + o, src + i, k);
			o += k;
			i += k;
			continue;
		}
		unsigned char b = src[i];
		size_t want = b >= 0xF0 && b <= 0xF4 ? 4 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xC2 && b <= 0xDF ? 2 : 0;
		int cut = !last && want && len - i < want;
		for (size_t j = i + 1; cut && j < len; j++)
			cut = (src[j] & 0xC0) == 0x80;
		if (cut) {
			memcpy(p->carry, src + i, len - i);
			p->ncarry = len - i;
			break;
		}
		memcpy(dst + o, "\xEF\xBF\xBD", 3);
		o += 3;
		i++;
	}
	json_t *s = json_stringn((const char *)dst, o);
	free(src);
	free(dst);
	return s;
}

static json_t *b64_text(const unsigned char *in, size_t n)
{
	size_t cap = (n + 2) / 3 * 4 + 4;
	char *out = malloc(cap);
	if (!out)
		return NULL;
	int l = lws_b64_encode_string((const char *)in, (int)n, out, (int)cap);
	json_t *s = l < 0 ? NULL : json_stringn(out, (size_t)l);
	free(out);
	return s;
}

static void on_output(struct ex_pipe *p, const unsigned char *in, size_t n, int last)
{
	struct exec *x = p->x;
	int which = p->role == R_ERR;
	out_bytes_total += n;
	if (!x->c) { /* one-shot: kept up to the cap, the rest read and dropped */
		size_t cap = (size_t)x->s->d->cfg.exec_max_output, room = cap - x->nbuf[which];
		size_t take = n < room ? n : room;
		if (take < n)
			x->truncated = 1;
		if (take) {
			char *nb = realloc(x->buf[which], x->nbuf[which] + take);
			if (!nb)
				return;
			memcpy(nb + x->nbuf[which], in, take);
			x->buf[which] = nb;
			x->nbuf[which] += take;
		}
		return;
	}
	json_t *data = x->sp.base64 ? (n ? b64_text(in, n) : NULL) : utf8_text(p, in, n, last);
	if (!data || (!json_string_length(data) && !n)) {
		json_decref(data);
		return;
	}
	exec_send_obj(x, json_pack("{s:s,s:s,s:o}", "type", which ? "cortex.stderr" : "cortex.stdout", "id", x->sp.id,
			      "data", data));
	if (!x->paused && x->c->out.bytes > queue_cap(x->s) / 2)
		set_paused(x, 1); /* the pipe fills, the command blocks on write */
}

static void on_readable(struct ex_pipe *p)
{
	struct exec *x = p->x;
	if (p->role == R_EXIT) {
		int32_t v;
		ssize_t n = read(p->fd, &v, sizeof v);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n == (ssize_t)sizeof v) {
			x->status = v;
			x->have_status = 1;
		} else {
			x->sandbox_gone = 1; /* EOF without a status: init is gone */
		}
		x->exited = 1;
		lws_sul_cancel(&x->sul_timeout);
		pipe_close(p);
		check_end(x);
		return;
	}
	unsigned char buf[EXEC_READ_CHUNK];
	ssize_t n = read(p->fd, buf, sizeof buf);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0) {
		on_output(p, buf, (size_t)n, 0);
		lifecycle_touch(x->s);
		return;
	}
	/* EOF (a pty's master reads EIO once no slave is open) */
	if (p->ncarry)
		on_output(p, (const unsigned char *)"", 0, 1);
	pipe_close(p);
	if (p->role == R_OUT && x->sp.pty)
		x->p[R_IN].open = 0;
	check_end(x);
}

/* ---- stdin ---- */

void exec_in_flush(struct exec *x)
{
	struct ex_pipe *p = x->sp.pty ? &x->p[R_OUT] : &x->p[R_IN];
	if (!p->open || p->fd < 0)
		return;
	while (x->in_len) {
		ssize_t n = write(p->fd, x->in_buf, x->in_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (p->wsi)
				lws_callback_on_writable(p->wsi);
			return;
		}
		if (n < 0) { /* the command closed its stdin */
			x->in_len = 0;
			break;
		}
		memmove(x->in_buf, x->in_buf + n, x->in_len - (size_t)n);
		x->in_len -= (size_t)n;
	}
	if (x->in_eof && !x->sp.pty) {
		pipe_close(&x->p[R_IN]);
	} else if (x->in_eof && x->sp.pty) {
		x->in_eof = 0; /* a pty has no EOF of its own: ^D, as a terminal would send */
		(void)!write(p->fd, "\x04", 1);
	}
}

static int in_append(struct exec *x, const char *data, size_t n)
{
	if (n > EXEC_STDIN_CAP - x->in_len)
		return -1;
	char *nb = realloc(x->in_buf, x->in_len + n + 1);
	if (!nb)
		return -1;
	memcpy(nb + x->in_len, data, n);
	x->in_buf = nb;
	x->in_len += n;
	return 0;
}

/* A new command (sp consumed): the caps, then wait or launch. */
static struct exec *exec_new(struct session *s, struct client *c, struct exec_spec *sp, int *status, char *msg,
			     size_t mcap)
{
	struct cortexd *d = s->d;
	if (s->nexec >= d->cfg.exec_max_per_session) {
		refused_total[0]++;
		snprintf(msg, mcap, "%u commands run on this session (cap exec.max_per_session)", s->nexec);
		*status = 429;
		return NULL;
	}
	unsigned nu = user_execs(d, s->user);
	if (nu >= d->cfg.exec_max_per_user) {
		refused_total[1]++;
		snprintf(msg, mcap, "%u commands of yours run (cap exec.max_per_user)", nu);
		*status = 429;
		return NULL;
	}
	struct exec *x = calloc(1, sizeof *x);
	if (!x) {
		snprintf(msg, mcap, "out of memory");
		*status = 500;
		return NULL;
	}
	x->s = s;
	s->refs++;
	x->c = c;
	x->sp = *sp;
	memset(sp, 0, sizeof *sp);
	for (int r = 0; r < R_N; r++)
		x->p[r].fd = -1;
	x->t0_us = cx_mono_us();
	x->wait_until_us = x->t0_us + EXEC_WAIT_MAX_US;
	x->next = s->execs;
	s->execs = x;
	s->nexec++;
	running_now++;
	if (x->sp.stdin_data) {
		x->in_buf = x->sp.stdin_data;
		x->in_len = x->sp.stdin_len;
		x->sp.stdin_data = NULL;
	}
	lifecycle_touch(s);
	return x;
}

int exec_oneshot(struct session *s, struct exec_spec *sp, exec_done_fn done, void *arg, int *status, char *msg,
		 size_t mcap)
{
	struct exec *x = exec_new(s, NULL, sp, status, msg, mcap);
	exec_spec_clear(sp);
	if (!x)
		return -1;
	x->done = done;
	x->arg = arg;
	x->in_eof = 1;
	exec_try_launch(x);
	return 0;
}

/* ---- client frames ---- */

static struct exec *find(struct session *s, struct client *c, const char *id)
{
	for (struct exec *x = s->execs; x; x = x->next)
		if (x->c == c && !strcmp(x->sp.id, id))
			return x;
	return NULL;
}

static void on_exec(struct session *s, struct client *c, json_t *o)
{
	struct exec_spec sp;
	char msg[300];
	int status = 0;
	const char *id = json_string_value(json_object_get(o, "id"));
	if (find(s, c, id)) {
		send_error(s, c, id, "bad_frame", "a command with this id is running");
		return;
	}
	if (exec_spec_parse(o, 0, &s->d->cfg, &sp, msg, sizeof msg) < 0) {
		exec_spec_clear(&sp);
		cx_utf8_fix(msg);
		send_error(s, c, id, "bad_frame", msg);
		return;
	}
	struct exec *x = exec_new(s, c, &sp, &status, msg, sizeof msg);
	exec_spec_clear(&sp);
	if (!x) {
		send_error(s, c, id, status == 429 ? "too_many_execs" : "internal", msg);
		return;
	}
	exec_try_launch(x);
}

static void on_stdin(struct session *s, struct client *c, struct exec *x, json_t *o)
{
	json_t *dv = json_object_get(o, "data"), *ev = json_object_get(o, "eof");
	if ((dv && !json_is_string(dv)) || (ev && !json_is_boolean(ev)))
		return send_error(s, c, x->sp.id, "bad_frame", "\"stdin\" takes a string \"data\" and/or \"eof\": true");
	if (dv) {
		size_t n = json_string_length(dv);
		const char *data = json_string_value(dv);
		char *dec = NULL;
		if (x->sp.base64) {
			dec = malloc(n + 1);
			long r = dec ? exec_b64_decode(data, n, dec) : -1;
			if (r < 0) {
				free(dec);
				return send_error(s, c, x->sp.id, "bad_frame", "\"data\" is not valid base64");
			}
			n = r < 0 ? 0 : (size_t)r;
			data = dec;
		}
		int rc = in_append(x, data, n);
		free(dec);
		if (rc < 0)
			return send_error(s, c, x->sp.id, "stdin_full",
					  "stdin not yet read by the command is over 256 KiB; this data was dropped");
	}
	if (json_is_true(ev))
		x->in_eof = 1;
	if (x->st == EX_RUN)
		exec_in_flush(x);
	lifecycle_touch(s);
}

void exec_client_frame(struct session *s, struct client *c, enum exec_frame type, json_t *o)
{
	if (type == EXEC_FRAME_START)
		return on_exec(s, c, o);
	const char *id = json_string_value(json_object_get(o, "id"));
	struct exec *x = find(s, c, id);
	if (!x)
		return send_error(s, c, id, "no_exec", "no command with this id is running");
	if (type == EXEC_FRAME_STDIN)
		return on_stdin(s, c, x, o);
	if (type == EXEC_FRAME_CANCEL) {
		x->cancelled = 1;
		cancelled_total++;
		if (x->st == EX_WAIT) {
			lws_sul_cancel(&x->sul_wait);
			x->exited = 1;
			return exec_finish(x);
		}
		if (x->st == EX_LAUNCH) { /* killed when the launch is done; the exit is reported now */
			x->orphan = 1;
			x->killed = 1;
			json_t *e = json_pack("{s:s,s:s,s:i,s:s,s:b,s:b,s:f}", "type", "cortex.exit", "id", x->sp.id, "code",
					      128 + SIGKILL, "signal", "KILL", "timed_out", 0, "cancelled", 1, "ms",
					      (double)(cx_mono_us() - x->t0_us) / 1000.0);
			exec_send_obj(x, e);
			x->c = NULL;
			return;
		}
		return exec_kill(x);
	}
	/* resize */
	json_t *cv = json_object_get(o, "cols"), *rv = json_object_get(o, "rows");
	json_int_t cols = json_integer_value(cv), rows = json_integer_value(rv);
	if (!x->sp.pty)
		return send_error(s, c, id, "bad_frame", "\"resize\" needs a command started with \"pty\"");
	if (!json_is_integer(cv) || !json_is_integer(rv) || cols < 1 || cols > 1000 || rows < 1 || rows > 1000)
		return send_error(s, c, id, "bad_frame", "\"resize\" needs integer \"cols\" and \"rows\" from 1 to 1000");
	x->sp.cols = (unsigned)cols;
	x->sp.rows = (unsigned)rows;
	if (x->st == EX_RUN && x->p[R_OUT].fd >= 0) {
		struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
		(void)ioctl(x->p[R_OUT].fd, TIOCSWINSZ, &ws);
	}
}

void exec_client_left(struct client *c)
{
	struct session *s = c->sess;
	if (!s)
		return;
	struct exec *x = s->execs, *next;
	for (; x; x = next) {
		next = x->next;
		if (x->c != c)
			continue;
		x->c = NULL;
		cancelled_total++;
		if (x->st == EX_LAUNCH) {
			x->orphan = 1;
		} else {
			exec_free(x); /* closing the exit fd kills the group */
		}
	}
}

void exec_session_gone(struct session *s, const char *why)
{
	struct exec *x = s->execs, *next;
	for (; x; x = next) {
		next = x->next;
		x->c = NULL; /* its client is about to be let go */
		if (x->st != EX_LAUNCH) {
			exec_fail(x, "not_found", why); /* frees x */
			continue;
		}
		x->orphan = 1; /* launch_done frees it (and so kills it) */
		if (x->done) {
			struct exec_result r = {.code = -1, .fail_code = "not_found", .fail_msg = why};
			x->done(x->arg, &r);
			x->done = NULL;
		}
	}
}

void exec_client_drained(struct client *c)
{
	struct session *s = c->sess;
	if (!s || c->out.bytes > queue_cap(s) / 4)
		return;
	for (struct exec *x = s->execs; x; x = x->next)
		if (x->c == c && x->paused)
			set_paused(x, 0);
}

int exec_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	(void)user, (void)in, (void)len;
	struct ex_pipe *p = lws_get_opaque_user_data(wsi);
	if (!p)
		return 0;
	switch (reason) {
	case LWS_CALLBACK_RAW_RX_FILE:
		on_readable(p);
		break;
	case LWS_CALLBACK_RAW_WRITEABLE_FILE:
		exec_in_flush(p->x);
		break;
	case LWS_CALLBACK_RAW_CLOSE_FILE: { /* a hangup lws saw first */
		struct exec *x = p->x;
		p->wsi = NULL;
		p->fd = -1;
		if (p->role == R_EXIT && !x->exited) {
			x->exited = 1;
			x->sandbox_gone = 1;
		}
		p->open = 0;
		check_end(x);
		break;
	}
	default:
		break;
	}
	return 0;
}
