/* mountin.c — sandbox_mount_ro / sandbox_umount: attach a host directory to a
 * running sandbox, read-only, at <mount_dir>/<name>, and detach it again.
 *
 * A mount can only be attached from inside the target mount namespace, and
 * cortexd is multi-threaded (a thread cannot setns(CLONE_NEWNS) without
 * moving the whole daemon).  So the work is split:
 *
 *   calling thread  open_tree(host_dir, OPEN_TREE_CLONE | AT_RECURSIVE): a
 *                   detached copy of the host tree, made ro, nosuid, nodev
 *                   and private with mount_setattr before anyone sees it;
 *   forked helper   setns(init's pidfd, CLONE_NEWNS); open mount_dir without
 *                   following symlinks; mkdir name; move_mount the tree
 *                   onto it; report; _exit.
 *
 * The pidfd (not /proc/<pid>/ns/mnt) names the namespace: it cannot point at
 * a recycled pid.  The helper is a fork of a multi-threaded process, so it
 * makes plain system calls only (no malloc, stdio or locks) and runs with
 * every signal blocked; it reports {status, step, errno} on a pipe, which
 * this side turns into a message naming the step and path.  Reading the
 * report (not the exit status) keeps working when the daemon ignores SIGCHLD.
 * Every step below mount_dir is relative to an fd, and mount_dir is a
 * root-owned tmpfs the agent cannot write, so no planted link is followed.
 *
 * "Already mounted": the helper statx()es <mount_dir>/<name>; the directory
 * is the root of a mount (STATX_ATTR_MOUNT_ROOT) exactly when something is
 * mounted on it, since a plain directory of the mount_dir tmpfs never is.
 * mount_lock makes that check and the move one step per sandbox.
 *
 * Propagation: the clone is made private before the move, so nothing
 * mounted on the host under host_dir later shows up in the sandbox and
 * nothing crosses back; the mount_dir tmpfs is private too (the sandbox's
 * whole tree is, see mounts.c), so the host never sees the new mount.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "sandbox-internal.h"

#define NAME_MAX_LEN 64

/* What the helper did, in the order it does it (the report's `step`). */
enum helper_step {
	STEP_SETNS,	  /* enter the sandbox's mount namespace */
	STEP_OPEN_DIR,	  /* open mount_dir */
	STEP_MKDIR,	  /* make the mountpoint */
	STEP_OPEN_TARGET, /* open the mountpoint */
	STEP_STATX,	  /* is something mounted there? */
	STEP_MOVE,	  /* move_mount the tree */
	STEP_UMOUNT,	  /* umount2 MNT_DETACH */
	STEP_RMDIR,	  /* remove the mountpoint */
};
static const char *const step_text[] = {
    "enter the sandbox's mount namespace",
    "open",
    "mkdir",
    "open the mountpoint",
    "statx",
    "move_mount",
    "umount",
    "rmdir",
};

enum helper_status {
	HELPER_DONE = 1, /* mounted / unmounted */
	HELPER_NOOP,	 /* already mounted / nothing there */
	HELPER_FAILED,	 /* at `step`, with `errnum` */
};

typedef struct helper_report {
	int32_t status, step, errnum;
} helper_report;

typedef struct helper_req {
	bool mount;	       /* true: mount tree_fd at name; false: umount name */
	int pidfd;	       /* init's: names the mount namespace; not owned */
	const char *mount_dir; /* inside the sandbox; not owned */
	const char *name;      /* one component; not owned */
	int tree_fd;	       /* mount: the detached tree; not owned */
} helper_req;

/* One component of [A-Za-z0-9._-], at most NAME_MAX_LEN, not "." or "..". */
static bool name_ok(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	return n >= 1 && n <= NAME_MAX_LEN && strcmp(name, ".") && strcmp(name, "..") &&
	       strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
		   n;
}

static int open_dir_nofollow(int dirfd, const char *path)
{
	struct open_how how = {
	    .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
	    .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

/* 1 if something is mounted on `name` in dirfd ("" = dirfd itself), 0 if
 * not, -1 with errno. */
static int is_mountpoint(int dirfd, const char *name)
{
	struct statx stx;
	int flags = AT_SYMLINK_NOFOLLOW | (name[0] ? 0 : AT_EMPTY_PATH);
	if (statx(dirfd, name, flags, STATX_BASIC_STATS, &stx) < 0)
		return -1;
	if (!(stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)) {
		errno = EOPNOTSUPP;
		return -1;
	}
	return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
}

__attribute__((noreturn)) static void helper_exit(int report, int status, int step, int errnum)
{
	helper_report r = {status, step, errnum};
	(void)!write(report, &r, sizeof r); /* a pipe: 12 bytes are atomic */
	_exit(status == HELPER_FAILED);
}

/* In the forked helper: system calls only. */
__attribute__((noreturn)) static void helper_main(const helper_req *rq, int report)
{
	/* The daemon's other fds have no business in the sandbox's namespace
	 * (and other threads' pipes should not gain a writer); best effort. */
	int keep[3] = {rq->pidfd, rq->tree_fd, report};
	(void)sbx_close_fds_except(keep, 3);
	if (setns(rq->pidfd, CLONE_NEWNS) < 0)
		helper_exit(report, HELPER_FAILED, STEP_SETNS, errno);
	/* setns() moved our root and cwd to the sandbox's root. */
	int dir = open_dir_nofollow(AT_FDCWD, rq->mount_dir);
	if (dir < 0)
		helper_exit(report, HELPER_FAILED, STEP_OPEN_DIR, errno);

	if (!rq->mount) {
		int m = is_mountpoint(dir, rq->name);
		if (m < 0 && errno == ENOENT)
			helper_exit(report, HELPER_NOOP, 0, 0);
		if (m < 0)
			helper_exit(report, HELPER_FAILED, STEP_STATX, errno);
		/* Relative to mount_dir, and never through a link. */
		if (m && (fchdir(dir) < 0 || umount2(rq->name, MNT_DETACH | UMOUNT_NOFOLLOW) < 0))
			helper_exit(report, HELPER_FAILED, STEP_UMOUNT, errno);
		if (unlinkat(dir, rq->name, AT_REMOVEDIR) < 0 && errno != ENOENT)
			helper_exit(report, HELPER_FAILED, STEP_RMDIR, errno);
		helper_exit(report, m ? HELPER_DONE : HELPER_NOOP, 0, 0);
	}

	bool made = mkdirat(dir, rq->name, 0755) == 0;
	if (!made && errno != EEXIST)
		helper_exit(report, HELPER_FAILED, STEP_MKDIR, errno);
	int target = open_dir_nofollow(dir, rq->name);
	if (target < 0)
		helper_exit(report, HELPER_FAILED, STEP_OPEN_TARGET, errno);
	int m = is_mountpoint(target, "");
	if (m < 0)
		helper_exit(report, HELPER_FAILED, STEP_STATX, errno);
	if (m)
		helper_exit(report, HELPER_NOOP, 0, 0);
	if (move_mount(rq->tree_fd, "", target, "",
		       MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0) {
		int e = errno;
		if (made) /* leave no empty mountpoint behind */
			(void)unlinkat(dir, rq->name, AT_REMOVEDIR);
		helper_exit(report, HELPER_FAILED, STEP_MOVE, e);
	}
	helper_exit(report, HELPER_DONE, 0, 0);
}

/* Runs the helper for rq and waits for it.  Returns its status (HELPER_DONE
 * or HELPER_NOOP), or -1 with err naming the failed step. */
static int run_helper(const sandbox *sb, const helper_req *rq, const char *what, cx_err *err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return cx_err_set(err, errno, "sandbox %s: %s: pipe", sb->id, what);
	cleanup_close int rd = p[0], wr = p[1];

	/* Blocked across fork so that no daemon signal handler runs in the
	 * helper; restored here right after. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid_t pid = fork();
	if (pid == 0)
		helper_main(rq, wr);
	int fork_errno = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (pid < 0)
		return cx_err_set(err, fork_errno, "sandbox %s: %s: fork", sb->id, what);
	close(steal_fd(&wr));

	helper_report r;
	size_t got = 0;
	while (got < sizeof r) { /* EOF early = the helper died without a word */
		ssize_t n = read(rd, (char *)&r + got, sizeof r - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		; /* ECHILD: the daemon reaps on its own; the report is what counts */

	if (got != sizeof r || r.status < HELPER_DONE || r.status > HELPER_FAILED)
		return cx_err_set(err, EIO, "sandbox %s: %s: helper process died", sb->id, what);
	if (r.status != HELPER_FAILED)
		return r.status;
	const char *step = r.step >= 0 && (size_t)r.step < sizeof step_text / sizeof step_text[0]
			       ? step_text[r.step]
			       : "?";
	/* `what` names the mountpoint already; only mount_dir needs saying. */
	const char *where = r.step == STEP_OPEN_DIR ? rq->mount_dir : "";
	return cx_err_set(err, r.errnum, "sandbox %s: %s: %s%s%s", sb->id, what, step,
			  where[0] ? " " : "", where);
}

/* The checks both calls share: running, mount_dir set, a valid name. */
static int check_target(const sandbox *sb, const char *name, const char *what, cx_err *err)
{
	if (!sb || sb->init_pidfd < 0)
		return cx_err_set(err, ESRCH, "sandbox: not running");
	if (!sb->mount_dir)
		return cx_err_set(err, EINVAL, "sandbox %s: %s: no mount_dir was set at create",
				  sb->id, what);
	if (!name_ok(name))
		return cx_err_set(err, EINVAL,
				  "sandbox %s: %s: bad name '%s' (one path component "
				  "of [A-Za-z0-9._-], at most %d, not . or ..)",
				  sb->id, what, name ? name : "(null)", NAME_MAX_LEN);
	return 0;
}

int sandbox_mount_ro(sandbox *sb, const char *host_dir, const char *name, cx_err *err)
{
	if (check_target(sb, name, "mount", err) < 0)
		return -1;
	char what[PATH_MAX * 2];
	snprintf(what, sizeof what, "mount %s at %s/%s", host_dir ? host_dir : "(null)",
		 sb->mount_dir, name);
	if (!sb_path_ok(host_dir, PATH_MAX))
		return cx_err_set(err, EINVAL,
				  "sandbox %s: %s: host dir must be absolute, "
				  "without . or ..",
				  sb->id, what);

	cleanup_close int tree =
	    open_tree(AT_FDCWD, host_dir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
	if (tree < 0)
		return cx_err_set(err, errno, "sandbox %s: %s: open_tree %s", sb->id, what,
				  host_dir);
	struct stat st;
	if (fstat(tree, &st) < 0)
		return cx_err_set(err, errno, "sandbox %s: %s: stat", sb->id, what);
	if (!S_ISDIR(st.st_mode))
		return cx_err_set(err, ENOTDIR, "sandbox %s: %s", sb->id, what);
	/* Set on the detached copy, before it is visible anywhere. */
	struct mount_attr a = {
	    .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
	    .propagation = MS_PRIVATE,
	};
	if (mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &a, sizeof a) < 0)
		return cx_err_set(err, errno, "sandbox %s: %s: mount_setattr", sb->id, what);

	helper_req rq = {true, sb->init_pidfd, sb->mount_dir, name, tree};
	pthread_mutex_lock(&sb->mount_lock);
	int r = run_helper(sb, &rq, what, err);
	pthread_mutex_unlock(&sb->mount_lock);
	return r < 0 ? -1 : 0;
}

int sandbox_umount(sandbox *sb, const char *name, cx_err *err)
{
	if (check_target(sb, name, "umount", err) < 0)
		return -1;
	char what[PATH_MAX];
	snprintf(what, sizeof what, "umount %s/%s", sb->mount_dir, name);
	helper_req rq = {false, sb->init_pidfd, sb->mount_dir, name, -1};
	pthread_mutex_lock(&sb->mount_lock);
	int r = run_helper(sb, &rq, what, err);
	pthread_mutex_unlock(&sb->mount_lock);
	return r < 0 ? -1 : 0;
}
