/* sandbox.c — sandbox lifecycle (create, stop, destroy) and the library's
 * side of the control protocol (exec, health).
 *
 * sandbox_create forks a monitor; the monitor unshares the mount, pid, ipc and
 * uts namespaces (and the network one when opts->net_isolated) and forks init (PID 1 there).  The monitor only waits for
 * init and exits with it; it exists because a process cannot move itself into
 * a new pid namespace, and it carries PR_SET_PDEATHSIG so that the sandbox
 * dies with cortexd (init has PDEATHSIG towards the monitor, and init's death
 * kills the namespace).  The monitor does not use PDEATHSIG itself: that
 * follows the *thread* that forked (a worker), and every thread but one ends
 * at an execve -- an upgrade restart (sandbox_handover) must keep the
 * sandboxes.  It polls a pidfd of cortexd instead, readable only when the
 * whole process is gone (crash, kill -9, exit), never at an execve.
 *
 * In cortexd the monitor is not a fork of the daemon but a clone of a small
 * helper forked at start (forkserver.c), made with CLONE_PARENT so it is the
 * daemon's child all the same; without the helper it is a fork, as here.
 *
 * Setup handshake on the sync socket (errors travel as code + message):
 *   monitor -> lib  PID(init's host pid)   lib puts it in the cgroup
 *   lib -> init     GO                      init builds mounts, drops privs
 *   init -> lib     READY | ERROR
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>

#include "sandbox-internal.h"

#define CTL_TIMEOUT_MS	10000 /* exec and ping replies */
#define STOP_TIMEOUT_MS 5000  /* stop: until the cgroup is empty */


/* ---- sync channel ---- */

typedef struct sync_hdr {
	int32_t type, code;
	uint32_t len;
} sync_hdr;

int sbx_sync_send(int fd, int type, int code, const char *msg)
{
	size_t len = msg ? strnlen(msg, sizeof ((cx_err *)0)->msg - 1) : 0;
	sync_hdr h = {type, code, (uint32_t)len};
	char buf[sizeof h + sizeof ((cx_err *)0)->msg];
	memcpy(buf, &h, sizeof h);
	if (len)
		memcpy(buf + sizeof h, msg, len);
	return cx_write_all(fd, buf, sizeof h + len, NULL);
}

int sbx_sync_recv(int fd, int *out_type, int *out_code, cx_err *err)
{
	sync_hdr h;
	if (cx_read_all(fd, &h, sizeof h, err) < 0)
		return -1;
	if (h.type != SBX_SYNC_ERROR) {
		*out_type = h.type;
		*out_code = h.code;
		return 0;
	}
	char msg[sizeof err->msg];
	size_t keep = h.len < sizeof msg - 1 ? h.len : sizeof msg - 1;
	if (cx_read_all(fd, msg, keep, err) < 0)
		return -1;
	msg[keep] = '\0';
	/* The child's message already carries its errno text. */
	cx_err_set(err, 0, "%s", msg);
	if (err)
		err->code = h.code;
	return -1;
}

/* A child that never answers must not hang its creator: bounded, not slept. */
static int sync_wait(int fd, uint64_t deadline_ms, cx_err *err)
{
	for (;;) {
		uint64_t now = cx_mono_ms();
		if (now >= deadline_ms)
			return cx_err_set(err, ETIMEDOUT, "sync: the sandbox did not start within %d ms",
					  SBX_START_TIMEOUT_MS);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, (int)(deadline_ms - now));
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return cx_err_set(err, errno, "sync: poll");
	}
}

void sbx_child_fail(int sync_fd, const cx_err *err)
{
	(void)sbx_sync_send(sync_fd, SBX_SYNC_ERROR, err->code ? err->code : EIO, err->msg);
	_exit(1);
}

int sbx_close_fds_except(const int *keep, size_t n_keep)
{
	int sorted[8];
	if (n_keep > sizeof sorted / sizeof sorted[0])
		return -1;
	memcpy(sorted, keep, n_keep * sizeof *keep);
	for (size_t i = 1; i < n_keep; i++) /* insertion sort; n is tiny */
		for (size_t j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
			int t = sorted[j];
			sorted[j] = sorted[j - 1];
			sorted[j - 1] = t;
		}
	unsigned lo = 3;
	for (size_t i = 0; i < n_keep; i++) {
		if (sorted[i] < (int)lo)
			continue;
		if ((unsigned)sorted[i] > lo && close_range(lo, (unsigned)sorted[i] - 1, 0) < 0)
			return -1;
		lo = (unsigned)sorted[i] + 1;
	}
	return close_range(lo, ~0U, 0);
}

/* ---- monitor ---- */

/* The cgroup's parent dirs, opened before unshare: init's pivot_root moves
 * the monitor's root too (they share the mount namespace), so the paths no
 * longer reach the host's cgroup tree afterwards. */
typedef struct mon_cg {
	int pfd[SBX_CG_MAX];
	const char *name[SBX_CG_MAX];
} mon_cg;

static void mon_cg_open(mon_cg *m, const sbx_cgroup *cg)
{
	for (int c = 0; c < SBX_CG_MAX; c++) {
		m->pfd[c] = -1;
		m->name[c] = NULL;
		const char *slash = cg->dirs[c] ? strrchr(cg->dirs[c], '/') : NULL;
		char parent[PATH_MAX];
		if (!slash || (size_t)(slash - cg->dirs[c]) >= sizeof parent)
			continue;
		memcpy(parent, cg->dirs[c], (size_t)(slash - cg->dirs[c]));
		parent[slash - cg->dirs[c]] = '\0';
		m->pfd[c] = open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
		m->name[c] = slash + 1;
	}
}

static void mon_cg_close(mon_cg *m)
{
	for (int c = 0; c < SBX_CG_MAX; c++)
		if (m->pfd[c] >= 0)
			close(m->pfd[c]);
}

/* A sandbox given up after its grace: init is dead, so the cgroup empties;
 * its dirs go (bounded: a task still leaving keeps one busy briefly). */
static void monitor_remove_cgroup(const mon_cg *m)
{
	for (int c = 0; c < SBX_CG_MAX; c++)
		if (m->pfd[c] >= 0)
			(void)sbx_cgroup_rmdir_at(m->pfd[c], m->name[c], 5000);
}

/* Wait for init; if cortexd (the process, parent_pidfd) dies first, take init
 * down with it -- at once, or with grace_s (sandbox_opts.keep_grace_s) only
 * if no new cortexd says within grace_s that it took the sandbox back: a
 * SIGUSR1 from root, whose sender the monitor watches from then on.  Threads
 * of cortexd ending (an execve ends all but one) are not its death. */
__attribute__((noreturn)) static void monitor_wait(pid_t init, int parent_pidfd, uint32_t grace_s,
						   const mon_cg *cg)
{
	int ipfd = (int)syscall(SYS_pidfd_open, init, 0);
	int sfd = -1;
	if (grace_s) {
		sigset_t u;
		sigemptyset(&u);
		sigaddset(&u, SIGUSR1);
		sigprocmask(SIG_BLOCK, &u, NULL);
		sfd = signalfd(-1, &u, SFD_CLOEXEC | SFD_NONBLOCK);
	}
	bool orphan = false, gave_up = false;
	uint64_t deadline = 0;
	while (ipfd >= 0) {
		struct pollfd p[3] = {{ipfd, POLLIN, 0}, {orphan ? -1 : parent_pidfd, POLLIN, 0},
				      {sfd, POLLIN, 0}};
		int tmo = -1;
		if (orphan) {
			uint64_t now = cx_mono_ms();
			tmo = deadline > now ? (int)(deadline - now) : 0;
		}
		int r = poll(p, 3, tmo);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			kill(init, SIGKILL);
			break;
		}
		if (p[0].revents)
			break; /* init ended */
		struct signalfd_siginfo si;
		while (sfd >= 0 && read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
			int np = si.ssi_uid == 0 ? (int)syscall(SYS_pidfd_open, (pid_t)si.ssi_pid, 0) : -1;
			if (np < 0)
				continue;
			close(parent_pidfd);
			parent_pidfd = np; /* the new cortexd: its death is the one watched */
			orphan = false;
		}
		if (!orphan && parent_pidfd >= 0 && p[1].revents) {
			if (!grace_s) {
				kill(init, SIGKILL); /* cortexd is gone: so is the sandbox */
				break;
			}
			orphan = true;
			deadline = cx_mono_ms() + (uint64_t)grace_s * 1000;
		} else if (orphan && r == 0 && cx_mono_ms() >= deadline) {
			kill(init, SIGKILL); /* nobody took it back in time */
			gave_up = true;
			break;
		}
	}
	int st;
	while (waitpid(init, &st, 0) < 0)
		if (errno != EINTR)
			_exit(1);
	if (gave_up)
		monitor_remove_cgroup(cg);
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

__attribute__((noreturn)) void sbx_monitor_main(const sandbox_opts *opts,
					       const sbx_seccomp_prog *filter, pid_t parent, int sync_fd,
					       int ctl_fd, int root_fd, int parent_pidfd, int lib_ctl_fd,
					       const sbx_cgroup *cg)
{
	cx_err err = CX_ERR_INIT;
	if (getppid() != parent)
		_exit(1); /* the creator is already gone */
	prctl(PR_SET_NAME, "cortex-monitor"); /* not the daemon's name, nor its fork server's */
	/* The daemon may ignore SIGCHLD (then waitpid fails) or block signals. */
	signal(SIGCHLD, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Other threads' fds without O_CLOEXEC must not reach the sandbox. */
	/* With a grace, the monitor holds cortexd's end of the control socket
	 * too: init sees no EOF when cortexd dies, and a new cortexd copies it
	 * out of here (sandbox_reclaim). */
	if (!opts->keep_grace_s)
		lib_ctl_fd = -1;
	int keep[5] = {sync_fd, ctl_fd, parent_pidfd, root_fd >= 0 ? root_fd : sync_fd,
		       lib_ctl_fd >= 0 ? lib_ctl_fd : sync_fd};
	if (sbx_close_fds_except(keep, 5) < 0) {
		cx_err_set(&err, errno, "close inherited fds");
		sbx_child_fail(sync_fd, &err);
	}
	mon_cg mcg;
	mon_cg_open(&mcg, opts->keep_grace_s ? cg : &(sbx_cgroup){0});
	int ns = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
	if (opts->net_isolated)
		ns |= CLONE_NEWNET; /* only `lo`, down until init brings it up */
	if (unshare(ns) < 0) {
		cx_err_set(&err, errno, "unshare namespaces");
		sbx_child_fail(sync_fd, &err);
	}
	/* _Fork: the daemon's atfork handlers (library code) have no business
	 * here, and the daemon's own fork already reset libc's state. */
	pid_t init = sbx_fork();
	if (init == 0) {
		close(parent_pidfd);
		if (lib_ctl_fd >= 0)
			close(lib_ctl_fd);
		mon_cg_close(&mcg);
		sbx_init_main(opts, filter, sync_fd, ctl_fd, root_fd);
	}
	if (init < 0) {
		cx_err_set(&err, errno, "fork init");
		sbx_child_fail(sync_fd, &err);
	}
	close(ctl_fd);
	if (root_fd >= 0)
		close(root_fd);
	if (sbx_sync_send(sync_fd, SBX_SYNC_PID, init, NULL) < 0)
		_exit(1); /* PDEATHSIG takes init with us */
	close(sync_fd);
	monitor_wait(init, parent_pidfd, opts->keep_grace_s, &mcg);
}

/* ---- lifecycle ---- */

/* The id and the cgroup name become path components of the cgroup dirs. */
static int check_names(const char *id, const char *cgroup_name, cx_err *err)
{
	size_t idlen = id ? strlen(id) : 0;
	if (idlen < 1 || idlen > CX_CAP_NAME ||
	    strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != idlen)
		return cx_err_set(err, EINVAL, "sandbox: bad id '%s'", id ? id : "(null)");
	if (cgroup_name && (!cgroup_name[0] || strchr(cgroup_name, '/') ||
			    !strcmp(cgroup_name, ".") || !strcmp(cgroup_name, "..")))
		return cx_err_set(err, EINVAL, "sandbox: bad cgroup_name '%s'", cgroup_name);
	return 0;
}

static int check_opts(const sandbox_opts *o, cx_err *err)
{
	if (!o || o->version != SANDBOX_OPTS_VERSION)
		return cx_err_set(err, EINVAL, "sandbox: unsupported opts version");
	if (check_names(o->id, o->cgroup_name, err) < 0)
		return -1;
	const char *dirs[][2] = {{"root_mount", o->root_mount}, {"home_dir", o->home_dir},
				 {"workspace_dir", o->workspace_dir}, {"run_dir", o->run_dir}};
	for (size_t i = 0; i < 4; i++)
		if (!dirs[i][1] || dirs[i][1][0] != '/')
			return cx_err_set(err, EINVAL, "sandbox: %s must be an absolute path",
					  dirs[i][0]);
	if (o->uid == 0 || o->gid == 0)
		return cx_err_set(err, EINVAL, "sandbox: uid and gid must not be 0");
	if (o->n_binds && !o->binds)
		return cx_err_set(err, EINVAL, "sandbox: n_binds without binds");
	/* A dir below /, named without a trailing '/': mountin.c appends "/name". */
	if (o->mount_dir && (!sb_path_ok(o->mount_dir, PATH_MAX / 2) ||
			     o->mount_dir[strlen(o->mount_dir) - 1] == '/'))
		return cx_err_set(err, EINVAL, "sandbox: mount_dir '%s' must be an absolute dir "
				  "below /, without . or .. or a trailing /", o->mount_dir);
	if (o->lower_dirs && sbx_overlay_check(o, err) < 0)
		return -1;
	if (!o->lower_dirs && (o->upper_dir || o->work_dir))
		return cx_err_set(err, EINVAL, "sandbox: upper_dir/work_dir need lower_dirs");
	if (o->cpu_weight > 10000)
		return cx_err_set(err, EINVAL, "sandbox: cpu_weight %u is not in 1..10000",
				  o->cpu_weight);
	if (o->cpu_max_millicpu && o->cpu_max_millicpu < 10)
		return cx_err_set(err, EINVAL, "sandbox: cpu_max_millicpu %u is below 10 (the "
				  "kernel's 1 ms quota per 100 ms)", o->cpu_max_millicpu);
	return 0;
}

void sbx_free(sandbox *sb)
{
	pthread_mutex_destroy(&sb->mount_lock);
	pthread_mutex_destroy(&sb->ctl_lock);
	free(sb->mount_dir);
	free(sb);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Kill init (and with it the pid namespace), reap the monitor. */
static void kill_and_reap(sandbox *sb)
{
	if (sb->init_pidfd >= 0)
		(void)pidfd_send_signal(sb->init_pidfd, SIGKILL, NULL, 0);
	if (sb->monitor_pid > 0) {
		/* Before init is known the monitor is the only handle. */
		if (sb->init_pidfd < 0)
			kill(sb->monitor_pid, SIGKILL);
		while (waitpid(sb->monitor_pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	sb->monitor_pid = -1;
	sb->init_pid = -1;
	close_fd(&sb->init_pidfd);
	close_fd(&sb->root_fd);
	close_fd(&sb->ctl_fd);
}

static int start(sandbox *sb, const sandbox_opts *opts, cx_err *err)
{
	/* Compiled here: the children are forks of a threaded process and
	 * must not allocate (see seccomp.c). */
	cleanup_seccomp_prog sbx_seccomp_prog filter = {NULL, 0};
	if (sbx_seccomp_build_policy(&filter, err) < 0)
		return -1;
	int sp[2], cp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return cx_err_set(err, errno, "socketpair");
	cleanup_close int sync_fd = sp[0], sync_child = sp[1];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, cp) < 0)
		return cx_err_set(err, errno, "socketpair");
	sb->ctl_fd = sb->mon_ctl_fd = cp[0];
	cleanup_close int ctl_child = cp[1];
	/* Image mode: the root overlay is made here, where allocating is fine;
	 * only its mount fd crosses the fork. */
	cleanup_close int root_fd = -1;
	if (opts->lower_dirs && sbx_overlay_open(opts, &root_fd, err) < 0)
		return -1;

	pid_t parent = getpid();
	cleanup_close int parent_pidfd = pidfd_open(parent, 0);
	if (parent_pidfd < 0)
		return cx_err_set(err, errno, "pidfd_open (cortexd)");
	/* The fork server's monitor costs the daemon no page-table copy and no
	 * copy-on-write faults (forkserver.c); without one, fork the daemon. */
	pid_t pid = -1;
	int mon_ctl = -1;
	int fs = sbx_forkserver_spawn(opts, &filter, parent, sync_child, ctl_child, root_fd,
				      parent_pidfd, opts->keep_grace_s ? sb->ctl_fd : -1, &sb->cg,
				      &pid, &mon_ctl, err);
	if (fs < 0)
		return -1;
	if (fs > 0 && opts->keep_grace_s)
		sb->mon_ctl_fd = mon_ctl; /* its number there is not ours */
	if (fs == 0) {
		pid = fork();
		if (pid < 0)
			return cx_err_set(err, errno, "fork");
		if (pid == 0)
			sbx_monitor_main(opts, &filter, parent, sync_child, ctl_child, root_fd,
					 parent_pidfd, sb->ctl_fd, &sb->cg);
	}
	sb->monitor_pid = pid;
	close_fd(&sync_child);
	close_fd(&ctl_child);
	close_fd(&root_fd);

	int type = 0, code = 0;
	uint64_t deadline = cx_mono_ms() + SBX_START_TIMEOUT_MS;
	if (sync_wait(sync_fd, deadline, err) < 0 || sbx_sync_recv(sync_fd, &type, &code, err) < 0)
		return -1;
	if (type != SBX_SYNC_PID || code <= 0)
		return cx_err_set(err, EPROTO, "sync: expected init pid, got type %d", type);
	sb->init_pid = code;
	sb->init_pidfd = pidfd_open(sb->init_pid, 0);
	if (sb->init_pidfd < 0)
		return cx_err_set(err, errno, "pidfd_open %d", (int)sb->init_pid);
	if (sbx_cgroup_add_pid(&sb->cg, sb->init_pid, err) < 0)
		return -1;
	if (sbx_sync_send(sync_fd, SBX_SYNC_GO, 0, NULL) < 0)
		return cx_err_set(err, errno, "sync: send go");
	if (sync_wait(sync_fd, deadline, err) < 0 || sbx_sync_recv(sync_fd, &type, &code, err) < 0)
		return -1;
	if (type != SBX_SYNC_READY)
		return cx_err_set(err, EPROTO, "sync: expected ready, got type %d", type);
	/* Init has pivoted: take its root once, so no message pays for it.  The
	 * pidfd check after the open proves the pid was still ours. */
	char proc[64];
	snprintf(proc, sizeof proc, "/proc/%d/root", (int)sb->init_pid);
	sb->root_fd = open(proc, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sb->root_fd < 0)
		return cx_err_set(err, errno, "open %s", proc);
	if (pidfd_send_signal(sb->init_pidfd, 0, NULL, 0) < 0)
		return cx_err_set(err, errno, "init died while starting");
	return 0;
}

int sandbox_create(sandbox **out, const sandbox_opts *opts, cx_err *err)
{
	*out = NULL;
	if (check_opts(opts, err) < 0)
		return -1;
	sandbox *sb = calloc(1, sizeof *sb);
	if (!sb)
		return cx_err_set(err, ENOMEM, "sandbox: calloc");
	snprintf(sb->id, sizeof sb->id, "%s", opts->id);
	sb->uid = opts->uid;
	sb->net_isolated = opts->net_isolated;
	sb->gid = opts->gid;
	sb->monitor_pid = sb->init_pid = -1;
	sb->init_pidfd = sb->ctl_fd = sb->root_fd = -1;
	pthread_mutex_init(&sb->mount_lock, NULL);
	pthread_mutex_init(&sb->ctl_lock, NULL);
	if (opts->mount_dir && !(sb->mount_dir = strdup(opts->mount_dir))) {
		sbx_free(sb);
		return cx_err_set(err, ENOMEM, "sandbox %s: strdup", opts->id);
	}
	if (sbx_cgroup_create(&sb->cg, opts, err) < 0) {
		sbx_free(sb);
		return cx_err_wrap(err, "sandbox %s", opts->id);
	}
	if (start(sb, opts, err) < 0) {
		cx_err tmp = CX_ERR_INIT;
		kill_and_reap(sb);
		sbx_cgroup_remove(&sb->cg, &tmp);
		sbx_free(sb);
		return cx_err_wrap(err, "sandbox %s", opts->id);
	}
	*out = sb;
	return 0;
}

pid_t sandbox_init_pid(const sandbox *sb)
{
	return sb ? sb->init_pid : -1;
}

int sandbox_stop(sandbox *sb, cx_err *err)
{
	if (!sb || sb->monitor_pid < 0)
		return 0;
	cx_err tmp = CX_ERR_INIT;
	/* Through the cgroup first, because the sandbox may be frozen: a v1-frozen
	 * task acts on SIGKILL only once thawed, and init's exit would wait for
	 * it forever.  The kill leaves every task dying, then thaws.  On v1 that
	 * freeze and thaw each flip a kernel static key (a text patch on every
	 * CPU: the largest single cost of a burst of deletes), so a v1 sandbox
	 * whose freezer.state reads THAWED -- nothing can freeze it but
	 * sandbox_freeze -- is ended through init alone: SIGKILL to a PID
	 * namespace's init kills every task in it, and init was the only task
	 * put into the cgroup.  Anything still listed after is killed through
	 * the cgroup as before. */
	bool via_init = !sb->cg.v2 && sbx_cgroup_frozen(&sb->cg) == 0;
	if (!via_init)
		(void)sbx_cgroup_kill(&sb->cg, STOP_TIMEOUT_MS, &tmp);
	kill_and_reap(sb);
	if (via_init && sbx_cgroup_is_empty(&sb->cg, &tmp) != 1)
		(void)sbx_cgroup_kill(&sb->cg, STOP_TIMEOUT_MS, &tmp);
	/* Init's exit already waits for every task of its PID namespace, so the
	 * cgroup is normally empty here; the wait (bounded) covers a task still
	 * leaving it.  On timeout the rmdir below reports EBUSY with the path. */
	(void)sbx_cgroup_wait_empty(&sb->cg, STOP_TIMEOUT_MS, &tmp);
	if (sbx_cgroup_remove(&sb->cg, err) < 0)
		return cx_err_wrap(err, "sandbox %s: stop", sb->id);
	return 0;
}

void sandbox_destroy(sandbox *sb)
{
	if (!sb)
		return;
	cx_err err = CX_ERR_INIT;
	(void)sandbox_stop(sb, &err);
	sbx_free(sb);
}

int sandbox_freeze(sandbox *sb, int frozen, cx_err *err)
{
	if (!sb || sb->monitor_pid < 0)
		return cx_err_set(err, ESRCH, "sandbox: not running");
	/* An empty cgroup freezes at once; say instead that nothing is left. */
	if (frozen) {
		cx_err tmp = CX_ERR_INIT;
		int empty = sbx_cgroup_is_empty(&sb->cg, &tmp);
		if (empty == 1)
			return cx_err_set(err, ESRCH,
					  "sandbox %s: freeze: no process left (init exited)",
					  sb->id);
		if (empty < 0) {
			if (err)
				*err = tmp;
			return cx_err_wrap(err, "sandbox %s: freeze", sb->id);
		}
	}
	if (sbx_cgroup_freeze(&sb->cg, frozen != 0, err) < 0)
		return cx_err_wrap(err, "sandbox %s: %s", sb->id, frozen ? "freeze" : "thaw");
	return 0;
}

int sandbox_reap_stale(const char *cgroup_name, const char *id, int *found, cx_err *err)
{
	*found = 0;
	if (check_names(id, cgroup_name, err) < 0)
		return -1;
	sbx_cgroup cg;
	const char *name = cgroup_name ? cgroup_name : "cortex";
	int r = sbx_cgroup_find_at(&cg, SBX_CGROUP_ROOT, name, id, err);
	if (r <= 0)
		return r < 0 ? cx_err_wrap(err, "sandbox %s: reap stale", id) : 0;
	*found = 1;
	cx_err kill_err = CX_ERR_INIT;
	int killed = sbx_cgroup_kill(&cg, STOP_TIMEOUT_MS, &kill_err);
	if (sbx_cgroup_remove(&cg, err) < 0) {
		/* The kill's failure says why the dir is still busy. */
		if (killed < 0 && err)
			*err = kill_err;
		return cx_err_wrap(err, "sandbox %s: reap stale", id);
	}
	return 0;
}

int sandbox_runtime_init(cx_err *err)
{
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		return cx_err_set(err, errno, "PR_SET_CHILD_SUBREAPER");
	return 0;
}

/* ---- control protocol, client side ---- */

/* Waits for the reply to `seq`, skipping stale replies of requests that
 * timed out earlier. */
static int ctl_recv(sandbox *sb, uint32_t seq, sbx_ctl_hdr *h, char *msg, size_t msgcap,
		    cx_err *err)
{
	uint64_t deadline = cx_mono_ms() + CTL_TIMEOUT_MS;
	for (;;) {
		uint64_t now = cx_mono_ms();
		if (now >= deadline)
			return cx_err_set(err, ETIMEDOUT, "control: no reply from init");
		struct pollfd p = {sb->ctl_fd, POLLIN, 0};
		int r = poll(&p, 1, (int)(deadline - now));
		if (r < 0 && errno != EINTR)
			return cx_err_set(err, errno, "control: poll");
		if (r <= 0)
			continue;
		struct {
			sbx_ctl_hdr h;
			char msg[512];
		} rep;
		ssize_t n = recv(sb->ctl_fd, &rep, sizeof rep, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return cx_err_set(err, errno, "control: recv");
		if (n == 0)
			return cx_err_set(err, EPIPE, "control: init is gone");
		if ((size_t)n < sizeof rep.h)
			return cx_err_set(err, EPROTO, "control: short reply");
		if (rep.h.seq != seq)
			continue;
		*h = rep.h;
		size_t ml = (size_t)n - sizeof rep.h;
		if (ml >= msgcap)
			ml = msgcap - 1;
		memcpy(msg, rep.msg, ml);
		msg[ml] = '\0';
		return 0;
	}
}

static int health_locked(sandbox *sb, cx_err *err);

int sandbox_health(sandbox *sb, cx_err *err)
{
	if (!sb || sb->ctl_fd < 0)
		return cx_err_set(err, ESRCH, "sandbox: not running");
	pthread_mutex_lock(&sb->ctl_lock);
	int rc = health_locked(sb, err);
	pthread_mutex_unlock(&sb->ctl_lock);
	return rc;
}

static int health_locked(sandbox *sb, cx_err *err)
{
	sbx_ctl_hdr h = {.type = SBX_CTL_PING, .seq = ++sb->seq};
	if (send(sb->ctl_fd, &h, sizeof h, MSG_NOSIGNAL) < 0)
		return cx_err_set(err, errno, "sandbox %s: ping", sb->id);
	char msg[512];
	uint32_t seq = h.seq;
	if (ctl_recv(sb, seq, &h, msg, sizeof msg, err) < 0)
		return cx_err_wrap(err, "sandbox %s: ping", sb->id);
	if (h.type != SBX_CTL_PONG)
		return cx_err_set(err, EPROTO, "sandbox %s: ping: unexpected reply %u", sb->id,
				  h.type);
	return 0;
}

/* Appends s and its NUL to buf; -1 when the request would exceed the cap. */
static int put_str(char *buf, size_t *len, const char *s)
{
	size_t l = strlen(s) + 1;
	if (l > SBX_CTL_MAX_MSG - *len)
		return -1;
	memcpy(buf + *len, s, l);
	*len += l;
	return 0;
}

static int exec_locked(sandbox *sb, pid_t *out_pid, const sandbox_exec_opts *eo, cx_err *err);

int sandbox_exec(sandbox *sb, pid_t *out_pid, const sandbox_exec_opts *eo, cx_err *err)
{
	if (!sb || sb->ctl_fd < 0)
		return cx_err_set(err, ESRCH, "sandbox: not running");
	if (!eo || (eo->version != 2 && eo->version != SANDBOX_EXEC_OPTS_VERSION) || !eo->argv ||
	    !eo->argv[0] || eo->argv[0][0] != '/')
		return cx_err_set(err, EINVAL, "sandbox exec: argv[0] must be an absolute path");
	pthread_mutex_lock(&sb->ctl_lock);
	int rc = exec_locked(sb, out_pid, eo, err);
	pthread_mutex_unlock(&sb->ctl_lock);
	return rc;
}

static int exec_locked(sandbox *sb, pid_t *out_pid, const sandbox_exec_opts *eo, cx_err *err)
{
	int exit_fd = eo->version >= 3 ? eo->exit_fd : -1;
	bool ctty = eo->version >= 3 && eo->ctty;
	cleanup_free char *buf = malloc(sizeof(sbx_ctl_hdr) + SBX_CTL_MAX_MSG);
	if (!buf)
		return cx_err_set(err, ENOMEM, "sandbox exec");
	sbx_ctl_hdr h = {.type = SBX_CTL_EXEC, .seq = ++sb->seq};
	char *p = buf + sizeof h;
	size_t len = 0;
	bool fits = put_str(p, &len, eo->cwd ? eo->cwd : "/home/agent") == 0;
	for (const char *const *a = eo->argv; fits && *a; a++, h.argc++)
		fits = put_str(p, &len, *a) == 0;
	for (const char *const *e = eo->envp; fits && e && *e; e++, h.envc++)
		fits = put_str(p, &len, *e) == 0;
	if (!fits)
		return cx_err_set(err, E2BIG, "sandbox exec %s: argv + envp exceed %u bytes",
				  eo->argv[0], SBX_CTL_MAX_MSG);

	if (eo->n_extra_fds > SANDBOX_EXEC_MAX_EXTRA_FDS || (eo->n_extra_fds && !eo->extra_fds))
		return cx_err_set(err, EINVAL, "sandbox exec %s: %zu extra fds (at most %d)", eo->argv[0],
				  eo->n_extra_fds, SANDBOX_EXEC_MAX_EXTRA_FDS);
	int fds[SBX_CTL_MAX_PASS], nfds = 0;
	int slots[SBX_CTL_MAX_FDS] = {eo->stdin_fd, eo->stdout_fd, eo->stderr_fd};
	for (size_t i = 0; i < eo->n_extra_fds; i++) {
		if (eo->extra_fds[i] < 0) /* a hole would renumber the ones after it */
			return cx_err_set(err, EBADF, "sandbox exec %s: extra fd %zu is %d", eo->argv[0], i,
					  eo->extra_fds[i]);
		slots[3 + i] = eo->extra_fds[i];
	}
	for (size_t i = 3 + eo->n_extra_fds; i < SBX_CTL_MAX_FDS; i++)
		slots[i] = -1;
	for (int i = 0; i < SBX_CTL_MAX_FDS; i++)
		if (slots[i] >= 0) {
			h.fdmask |= 1u << i;
			fds[nfds++] = slots[i];
		}
	if (exit_fd >= 0) { /* after the slots, outside fdmask */
		h.flags |= SBX_EXEC_EXIT_FD;
		fds[nfds++] = exit_fd;
	}
	if (ctty)
		h.flags |= SBX_EXEC_CTTY;
	memcpy(buf, &h, sizeof h);

	union {
		char b[CMSG_SPACE(sizeof(int) * SBX_CTL_MAX_PASS)];
		struct cmsghdr align;
	} cbuf;
	memset(&cbuf, 0, sizeof cbuf);
	struct iovec iov = {buf, sizeof h + len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds) {
		mh.msg_control = cbuf.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		/* The first header is the buffer itself (what CMSG_FIRSTHDR returns
		 * here; its NULL case cannot happen, but gcc -O1 warns about it). */
		struct cmsghdr *c = &cbuf.align;
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	ssize_t n;
	while ((n = sendmsg(sb->ctl_fd, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return cx_err_set(err, errno, "sandbox %s: exec %s: send", sb->id, eo->argv[0]);

	char msg[512];
	uint32_t seq = h.seq;
	if (ctl_recv(sb, seq, &h, msg, sizeof msg, err) < 0)
		return cx_err_wrap(err, "sandbox %s: exec %s", sb->id, eo->argv[0]);
	if (h.type == SBX_CTL_EXEC_ERR) {
		cx_err_set(err, 0, "sandbox %s: %s", sb->id, msg);
		if (err)
			err->code = h.code;
		return -1;
	}
	if (h.type != SBX_CTL_EXEC_OK)
		return cx_err_set(err, EPROTO, "sandbox %s: exec: unexpected reply %u", sb->id,
				  h.type);
	if (out_pid)
		*out_pid = h.pid;
	return 0;
}
