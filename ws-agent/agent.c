/* agent.c — start, signal and reap one agent process.
 *
 * The agent gets its own process group so a stop can reach everything it
 * started (shells, tools), exactly the environment from the context file,
 * pipes for stdin/stdout/stderr, and no other descriptor of ours.  Exec failures travel back over a CLOEXEC pipe: EOF
 * on it means execve succeeded, a record on it carries the failing step and
 * errno (crun's sync-socket pattern, reduced to one message).
 *
 * The child is made with clone(CLONE_VM | CLONE_VFORK) on a stack of its own,
 * as posix_spawn does: no copy of ws-agent's page tables, no copy-on-write
 * faults in ws-agent afterwards, and ws-agent waits only until the execve.
 * Signals are blocked around the clone, so no handler of ours runs in the
 * child on our memory; the child resets them before unblocking.  Sanitizer
 * builds fork instead (their interceptors keep state in our memory).
 */
#include "wsa.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define WSA_SPAWN_FORK 1
#else
#define WSA_SPAWN_FORK 0
#endif
#define WSA_SPAWN_STACK (64u << 10)

enum spawn_stage { STAGE_SETUP = 1, STAGE_CHDIR, STAGE_EXEC };

struct spawn_report {
	int stage;
	int errnum;
};

static const char *stage_name(int stage)
{
	switch (stage) {
	case STAGE_CHDIR:
		return "chdir to";
	case STAGE_EXEC:
		return "exec";
	default:
		return "set up the child for";
	}
}

/* In the forked child: only async-signal-safe calls from here to execve. */
__attribute__((noreturn)) static void child_exec(const struct wsa_context *ctx, pid_t parent,
						 int in_r, int out_w, int err_w, int sync_w)
{
	struct spawn_report rep = {STAGE_SETUP, 0};

	if (setpgid(0, 0) < 0)
		goto fail;
	/* If ws-agent dies without cleaning up, do not leave the agent behind. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		goto fail;
	/* Blocked and ignored signals survive execve: give the agent a clean slate
	 * (ws-agent blocks SIGTERM/SIGINT/SIGCHLD for its signalfd and ignores SIGPIPE). */
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	for (int sig = 1; sig < NSIG; sig++)
		(void)sigaction(sig, &dfl, NULL);
	sigset_t none;
	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		goto fail;

	if (dup2(in_r, STDIN_FILENO) < 0 || dup2(out_w, STDOUT_FILENO) < 0 ||
	    dup2(err_w, STDERR_FILENO) < 0)
		goto fail;
	rep.stage = STAGE_CHDIR;
	if (chdir(ctx->cwd) < 0)
		goto fail;
	rep.stage = STAGE_SETUP;
	/* CLOEXEC rather than close: sync_w must stay open until execve. */
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
		long max = sysconf(_SC_OPEN_MAX);
		if (max < 0 || max > 65536)
			max = 65536;
		for (int fd = 3; fd < (int)max; fd++)
			if (fd != sync_w)
				(void)close(fd);
	}
	rep.stage = STAGE_EXEC;
	execve(ctx->argv[0], ctx->argv, ctx->envp);
fail:
	rep.errnum = errno;
	(void)!write(sync_w, &rep, sizeof rep);
	_exit(127);
}

struct spawn_args {
	const struct wsa_context *ctx;
	pid_t parent;
	int in_r, out_w, err_w, sync_w;
};

static int child_entry(void *arg)
{
	const struct spawn_args *a = arg;
	child_exec(a->ctx, a->parent, a->in_r, a->out_w, a->err_w, a->sync_w);
}

/* fork(), or its CLONE_VM | CLONE_VFORK equivalent (see the top). */
static pid_t spawn_child(const struct spawn_args *a)
{
	if (WSA_SPAWN_FORK) {
		pid_t pid = fork();
		if (pid == 0)
			child_exec(a->ctx, a->parent, a->in_r, a->out_w, a->err_w, a->sync_w);
		return pid;
	}
	void *stack = mmap(NULL, WSA_SPAWN_STACK, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED)
		return -1;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pid_t pid = clone(child_entry, (char *)stack + WSA_SPAWN_STACK,
			  CLONE_VM | CLONE_VFORK | SIGCHLD, (void *)a);
	int e = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	munmap(stack, WSA_SPAWN_STACK); /* the child has exec'd or exited */
	errno = e;
	return pid;
}

static void close_pair(int p[2])
{
	for (int i = 0; i < 2; i++)
		if (p[i] >= 0) {
			close(p[i]);
			p[i] = -1;
		}
}

int wsa_agent_spawn(const struct wsa_context *ctx, struct wsa_child *out, cx_err *err)
{
	int inp[2] = {-1, -1}, outp[2] = {-1, -1}, errp[2] = {-1, -1}, syncp[2] = {-1, -1};
	int rc = -1;

	if (pipe2(inp, O_CLOEXEC) < 0 || pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 ||
	    pipe2(syncp, O_CLOEXEC) < 0) {
		cx_err_set(err, errno, "pipe");
		goto out;
	}
	/* A bigger stdout pipe: a burst of large deltas is read in few reads
	 * (the pages are the sandbox user's; best effort, the default works). */
	(void)fcntl(outp[0], F_SETPIPE_SZ, (int)WSA_STDOUT_PIPE);
	/* Only our end is non-blocking: O_NONBLOCK on pipe2 would reach the
	 * agent's read end too (each end is its own open file description). */
	int fl = fcntl(inp[1], F_GETFL);
	if (fl < 0 || fcntl(inp[1], F_SETFL, fl | O_NONBLOCK) < 0) {
		cx_err_set(err, errno, "stdin pipe O_NONBLOCK");
		goto out;
	}

	struct spawn_args a = {ctx, getpid(), inp[0], outp[1], errp[1], syncp[1]};
	pid_t pid = spawn_child(&a);
	if (pid < 0) {
		cx_err_set(err, errno, "spawn");
		goto out;
	}

	/* Both sides set the group so a stop right after spawn cannot miss it. */
	(void)setpgid(pid, pid);
	close(inp[0]);
	close(outp[1]);
	close(errp[1]);
	close(syncp[1]);
	inp[0] = outp[1] = errp[1] = syncp[1] = -1;

	struct spawn_report rep;
	ssize_t r;
	do
		r = read(syncp[0], &rep, sizeof rep);
	while (r < 0 && errno == EINTR);
	if (r != 0) {
		int status;
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		if (r == (ssize_t)sizeof rep)
			cx_err_set(err, rep.errnum, "%s %s", stage_name(rep.stage),
				   rep.stage == STAGE_CHDIR ? ctx->cwd : ctx->argv[0]);
		else
			cx_err_set(err, r < 0 ? errno : EPROTO, "spawn %s: lost the child's report",
				   ctx->argv[0]);
		goto out;
	}

	out->pid = pid;
	/* pidfd makes the exit a readable event on the loop; without it (old
	 * kernel, seccomp) the SIGCHLD signalfd path reaps instead. */
	out->pidfd = pidfd_open(pid, 0);
	out->in_fd = inp[1];
	out->out_fd = outp[0];
	out->err_fd = errp[0];
	inp[1] = outp[0] = errp[0] = -1;
	rc = 0;
out:
	close_pair(inp);
	close_pair(outp);
	close_pair(errp);
	close_pair(syncp);
	return rc;
}

void wsa_agent_signal_group(pid_t pgid, int sig)
{
	if (pgid > 0)
		(void)kill(-pgid, sig);
}

int wsa_agent_try_reap(pid_t pid, int *status)
{
	pid_t r;
	do
		r = waitpid(pid, status, WNOHANG);
	while (r < 0 && errno == EINTR);
	if (r == pid)
		return 1;
	return r == 0 ? 0 : -1;
}
