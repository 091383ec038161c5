/* exec_launch.c — starting a command (exec.h): wait for the session's
 * sandbox (waking it as a message would), then the launch on a worker: its
 * pipes or pty, sandbox_exec with an exit fd; the pipes adopted into the lws
 * loop when it is done.  s->exec_launching holds the lifecycle off the
 * sandbox meanwhile. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "exec-internal.h"
#include "lifecycle.h"
#include "work.h"

/* ---- launch (a worker) ---- */

struct launch_job {
	struct exec *x;
	sandbox *sb;      /* borrowed: s->exec_launching holds the lifecycle off it */
	char **argv, **envp; /* owned copies */
	char cwd[1025];
	int pty;
	unsigned cols, rows;
	/* result */
	int fds[R_N];     /* ours: stdout (pty master), stderr, exit, stdin */
	pid_t pid;
	int rc;
	cx_err err;
};

static void strv_free(char **v)
{
	for (char **p = v; p && *p; p++)
		free(*p);
	free(v);
}

static void launch_run(void *arg)
{
	struct launch_job *j = arg;
	cx_err_clear(&j->err);
	int mine[R_N] = {-1, -1, -1, -1}, theirs[R_N] = {-1, -1, -1, -1};
	int pp[2];
	j->rc = -1;
	if (j->pty) {
		if (sandbox_openpty(j->sb, &mine[R_OUT], &theirs[R_OUT], &j->err) < 0)
			goto out;
		struct winsize ws = {.ws_row = (unsigned short)j->rows, .ws_col = (unsigned short)j->cols};
		(void)ioctl(mine[R_OUT], TIOCSWINSZ, &ws);
	} else {
		for (int r = R_OUT; r <= R_IN; r++) {
			if (r == R_EXIT)
				continue;
			if (pipe2(pp, O_CLOEXEC) < 0) {
				cx_err_set(&j->err, errno, "pipe");
				goto out;
			}
			mine[r] = r == R_IN ? pp[1] : pp[0];
			theirs[r] = r == R_IN ? pp[0] : pp[1];
			fcntl(mine[r], F_SETFL, O_NONBLOCK);
		}
	}
	if (pipe2(pp, O_CLOEXEC) < 0) {
		cx_err_set(&j->err, errno, "pipe");
		goto out;
	}
	mine[R_EXIT] = pp[0];
	theirs[R_EXIT] = pp[1];
	fcntl(mine[R_EXIT], F_SETFL, O_NONBLOCK);
	sandbox_exec_opts eo = SANDBOX_EXEC_OPTS_INIT;
	eo.argv = (const char *const *)j->argv;
	eo.envp = (const char *const *)j->envp;
	eo.cwd = j->cwd;
	eo.stdin_fd = j->pty ? theirs[R_OUT] : theirs[R_IN];
	eo.stdout_fd = theirs[R_OUT];
	eo.stderr_fd = j->pty ? theirs[R_OUT] : theirs[R_ERR];
	eo.exit_fd = theirs[R_EXIT];
	eo.ctty = j->pty != 0;
	if (sandbox_exec(j->sb, &j->pid, &eo, &j->err) < 0)
		goto out;
	j->rc = 0;
	memcpy(j->fds, mine, sizeof mine);
	for (int r = 0; r < R_N; r++)
		mine[r] = -1;
out:
	for (int r = 0; r < R_N; r++) {
		if (mine[r] >= 0)
			close(mine[r]);
		if (theirs[r] >= 0)
			close(theirs[r]);
	}
}

static int adopt(struct exec *x, enum ex_role r, int fd)
{
	struct ex_pipe *p = &x->p[r];
	p->x = x;
	p->role = r;
	p->fd = fd;
	p->open = fd >= 0;
	if (fd < 0 || !x->s->d->vh)
		return 0;
	lws_adopt_desc_t ad = {.vh = x->s->d->vh, .type = LWS_ADOPT_RAW_FILE_DESC, .fd.filefd = fd,
			       .vh_prot_name = "cortex-exec", .opaque = p};
	p->wsi = lws_adopt_descriptor_vhost_via_info(&ad);
	if (!p->wsi) { /* it closed fd */
		p->fd = -1;
		p->open = 0;
		return -1;
	}
	return 0;
}

static void launch_done(void *arg)
{
	struct launch_job *j = arg;
	struct exec *x = j->x;
	struct session *s = x->s;
	s->exec_launching--;
	strv_free(j->argv);
	strv_free(j->envp);
	if (j->rc < 0 || x->orphan) {
		for (int r = 0; r < R_N; r++)
			if (j->rc == 0 && j->fds[r] >= 0)
				close(j->fds[r]); /* the exit fd too: init kills it */
		if (x->orphan)
			exec_free(x);
		else
			exec_fail(x, j->err.code == ENOENT || j->err.code == EACCES ? "exec_not_found" : "exec_failed",
				  j->err.msg);
	} else {
		x->st = EX_RUN;
		x->pid = j->pid;
		exec_count_started();
		int bad = 0;
		for (int r = 0; r < R_N; r++)
			bad |= adopt(x, (enum ex_role)r, j->fds[r]) < 0;
		if (x->sp.pty)
			x->p[R_IN].open = 1; /* stdin goes to the master */
		if (x->c)
			exec_send_obj(x, json_pack("{s:s,s:s,s:i,s:b}", "type", "cortex.exec_started", "id", x->sp.id, "pid",
					      (int)x->pid, "pty", x->sp.pty));
		if (x->sp.timeout_s && s->d->ctx)
			lws_sul_schedule(s->d->ctx, 0, &x->sul_timeout, exec_timeout_cb,
					 (lws_usec_t)x->sp.timeout_s * LWS_US_PER_SEC);
		if (bad)
			exec_kill(x);
		else
			exec_in_flush(x);
	}
	free(j);
	if (!s->exec_launching && (s->lc.broken || (s->lc.goal != GOAL_HOT && s->lc.goal != GOAL_UP)))
		lifecycle_reconcile(s); /* a sleep, pause, delete or replacement waited for the launch */
}

/* The command's environment: the image's Env, then PATH, HOME, LANG (and
 * TERM for a pty) where the image has none, then the caller's entries. */
static char **build_env(const struct exec *x)
{
	const struct session *s = x->s;
	size_t n = json_object_size(s->rt.env) + 8;
	for (char **e = x->sp.env; e && *e; e++)
		n++;
	char **v = calloc(n, sizeof *v);
	size_t k = 0;
	if (!v)
		return NULL;
	const char *name;
	json_t *val;
	json_object_foreach(s->rt.env, name, val) {
		const char *sv = json_string_value(val);
		if (sv && asprintf(&v[k], "%s=%s", name, sv) >= 0)
			k++;
	}
	static const char *const defs[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
					   "HOME=/home/agent", "LANG=C.UTF-8", "TERM=xterm-256color"};
	for (size_t d = 0; d < 4; d++) {
		if (d == 3 && !x->sp.pty)
			continue;
		size_t nl = strcspn(defs[d], "=") + 1;
		int have = json_object_getn(s->rt.env, defs[d], nl - 1) != NULL;
		for (char **e = x->sp.env; !have && e && *e; e++)
			have = !strncmp(*e, defs[d], nl);
		if (!have && (v[k] = strdup(defs[d])))
			k++;
	}
	for (char **e = x->sp.env; e && *e; e++) {
		size_t nl = strcspn(*e, "=") + 1;
		for (size_t i = 0; i < k; i++) /* the caller's value wins */
			if (!strncmp(v[i], *e, nl)) {
				free(v[i]);
				v[i] = v[--k];
				v[k] = NULL;
				break;
			}
		if ((v[k] = strdup(*e)))
			k++;
	}
	return v;
}

static void launch(struct exec *x)
{
	struct session *s = x->s;
	struct launch_job *j = calloc(1, sizeof *j);
	size_t n = 0;
	for (char **a = x->sp.argv; *a; a++)
		n++;
	int relative = x->sp.argv[0][0] != '/';
	char **argv = j ? calloc(n + 2, sizeof *argv) : NULL;
	char **envp = argv ? build_env(x) : NULL;
	if (!j || !argv || !envp) {
		free(j);
		free(argv);
		strv_free(envp);
		return exec_fail(x, "internal", "out of memory");
	}
	/* A program name: looked up in the command's PATH inside, by env. */
	size_t k = 0;
	if (relative)
		argv[k++] = strdup("/usr/bin/env");
	for (size_t i = 0; i < n; i++)
		argv[k++] = strdup(x->sp.argv[i]);
	j->x = x;
	j->sb = s->lc.sb;
	j->argv = argv;
	j->envp = envp;
	snprintf(j->cwd, sizeof j->cwd, "%s", x->sp.cwd);
	j->pty = x->sp.pty;
	j->cols = x->sp.cols;
	j->rows = x->sp.rows;
	x->st = EX_LAUNCH;
	s->exec_launching++;
	work_submit(launch_run, launch_done, j);
}

/* Launch once the sandbox is there and running; wake the session first. */
static void wait_cb(lws_sorted_usec_list_t *sul);

void exec_try_launch(struct exec *x)
{
	struct session *s = x->s;
	if (s->deleted)
		return exec_fail(x, "not_found", "the session was deleted");
	if (s->lc.sb && s->lc.job == JOB_NONE && s->lc.state != SS_PAUSED && !s->lc.broken &&
	    (s->lc.goal == GOAL_HOT || s->lc.goal == GOAL_UP))
		return launch(x);
	if (s->lc.state == SS_ERROR && s->lc.failed && x->wake_asked)
		return exec_fail(x, "session_unavailable", s->lc.error[0] ? s->lc.error : "the session is in error");
	if (!x->wake_asked) {
		cx_err err = CX_ERR_INIT;
		int rc = lifecycle_wake(s, &err); /* as a message would; EBUSY: a job runs, look again */
		if (rc == 0 || err.code != EBUSY)
			x->wake_asked = 1;
		if (rc < 0 && err.code != EBUSY)
			return exec_fail(x, "session_unavailable", err.msg);
		if (rc == 0 && s->lc.sb && s->lc.job == JOB_NONE && s->lc.state != SS_PAUSED && !s->lc.broken)
			return launch(x);
	}
	if (cx_mono_us() > x->wait_until_us)
		return exec_fail(x, "session_unavailable", "the session did not wake in time");
	if (s->d->ctx)
		lws_sul_schedule(s->d->ctx, 0, &x->sul_wait, wait_cb, EXEC_WAIT_TICK_US);
}

static void wait_cb(lws_sorted_usec_list_t *sul)
{
	exec_try_launch(lws_container_of(sul, struct exec, sul_wait));
}
