/* handover.c — a sandbox kept across cortexd's execve (sandbox.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/wait.h>
#include <signal.h>

#include "sandbox-internal.h"

int sandbox_handover_release(sandbox *sb, sandbox_handover *out, cx_err *err)
{
	memset(out, 0, sizeof *out);
	if (!sb || sb->monitor_pid < 0 || sb->ctl_fd < 0)
		return cx_err_set(err, ESRCH, "sandbox: not running");
	if (sb->mount_dir && strlen(sb->mount_dir) >= sizeof out->mount_dir)
		return cx_err_set(err, ENAMETOOLONG, "sandbox %s: mount_dir too long to hand over",
				  sb->id);
	int fl = fcntl(sb->ctl_fd, F_GETFD);
	if (fl < 0 || fcntl(sb->ctl_fd, F_SETFD, fl & ~FD_CLOEXEC) < 0)
		return cx_err_set(err, errno, "sandbox %s: keep the control socket", sb->id);
	out->monitor_pid = sb->monitor_pid;
	out->init_pid = sb->init_pid;
	out->ctl_fd = sb->ctl_fd;
	out->mon_ctl_fd = sb->mon_ctl_fd;
	out->seq = sb->seq;
	out->uid = sb->uid;
	out->gid = sb->gid;
	out->net_isolated = sb->net_isolated;
	snprintf(out->mount_dir, sizeof out->mount_dir, "%s", sb->mount_dir ? sb->mount_dir : "");
	if (sb->init_pidfd >= 0)
		close(sb->init_pidfd);
	if (sb->root_fd >= 0)
		close(sb->root_fd);
	for (int c = 0; c < SBX_CG_MAX; c++)
		free(sb->cg.dirs[c]);
	sbx_free(sb);
	return 0;
}

/* The parent pid of pid from /proc/<pid>/stat, or -1. */
static pid_t ppid_of(pid_t pid)
{
	char p[64], buf[512];
	snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	char *rp = strrchr(buf, ')'); /* comm may hold anything; fields follow the last ')' */
	int ppid = -1;
	if (!rp || sscanf(rp + 1, " %*c %d", &ppid) != 1)
		return -1;
	return ppid;
}

/* 1 if pid is listed in dir/cgroup.procs. */
static int in_cgroup(const char *dir, pid_t pid)
{
	char p[4200];
	snprintf(p, sizeof p, "%s/cgroup.procs", dir);
	FILE *f = fopen(p, "re");
	if (!f)
		return 0;
	int found = 0, v;
	while (!found && fscanf(f, "%d", &v) == 1)
		found = v == pid;
	fclose(f);
	return found;
}

void sandbox_record(const sandbox *sb, sandbox_handover *out)
{
	memset(out, 0, sizeof *out);
	if (!sb)
		return;
	out->monitor_pid = sb->monitor_pid;
	out->init_pid = sb->init_pid;
	out->ctl_fd = sb->mon_ctl_fd;
	out->mon_ctl_fd = sb->mon_ctl_fd;
	out->seq = 0; /* (a worker's exec may be counting it: sandbox_reclaim picks its own) */
	out->uid = sb->uid;
	out->gid = sb->gid;
	out->net_isolated = sb->net_isolated;
	snprintf(out->mount_dir, sizeof out->mount_dir, "%s", sb->mount_dir ? sb->mount_dir : "");
}

/* foreign: the monitor is not our child (cortexd died; a new one reclaims). */
static int adopt(sandbox **out, const char *id, const char *cgroup_name, const sandbox_handover *h,
		 bool foreign, cx_err *err)
{
	*out = NULL;
	size_t idlen = id ? strlen(id) : 0;
	if (!idlen || idlen > CX_CAP_NAME ||
	    strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != idlen)
		return cx_err_set(err, EINVAL, "sandbox adopt: bad id");
	if (h->monitor_pid <= 1 || h->init_pid <= 1 || h->ctl_fd < 3 || !h->uid || !h->gid)
		return cx_err_set(err, EINVAL, "sandbox %s adopt: bad handover record", id);
	struct stat st;
	int type = 0;
	socklen_t tl = sizeof type;
	if (fstat(h->ctl_fd, &st) < 0 || !S_ISSOCK(st.st_mode) ||
	    getsockopt(h->ctl_fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_SEQPACKET)
		return cx_err_set(err, EBADF, "sandbox %s adopt: fd %d is not its control socket",
				  id, h->ctl_fd);
	sandbox *sb = calloc(1, sizeof *sb);
	if (!sb)
		return cx_err_set(err, ENOMEM, "sandbox adopt");
	snprintf(sb->id, sizeof sb->id, "%s", id);
	sb->uid = h->uid;
	sb->gid = h->gid;
	sb->net_isolated = h->net_isolated;
	sb->seq = h->seq;
	sb->monitor_pid = h->monitor_pid;
	sb->init_pid = h->init_pid;
	sb->ctl_fd = h->ctl_fd;
	sb->mon_ctl_fd = h->mon_ctl_fd > 0 ? h->mon_ctl_fd : h->ctl_fd;
	sb->root_fd = sb->init_pidfd = -1;
	pthread_mutex_init(&sb->mount_lock, NULL);
	(void)fcntl(sb->ctl_fd, F_SETFD, FD_CLOEXEC);
	int rc = -1, verified = 0;
	if (h->mount_dir[0] && !(sb->mount_dir = strdup(h->mount_dir))) {
		cx_err_set(err, ENOMEM, "sandbox %s adopt", id);
		goto fail;
	}
	sb->init_pidfd = pidfd_open(h->init_pid, 0);
	if (sb->init_pidfd < 0) {
		cx_err_set(err, errno, "sandbox %s adopt: init %d is gone", id, (int)h->init_pid);
		goto fail;
	}
	int r = sbx_cgroup_find_at(&sb->cg, SBX_CGROUP_ROOT, cgroup_name ? cgroup_name : "cortex",
				   id, err);
	if (r <= 0) {
		if (!r)
			cx_err_set(err, ENOENT, "sandbox %s adopt: no cgroup", id);
		goto fail;
	}
	const char *dir = NULL;
	for (int c = 0; c < SBX_CG_MAX && !dir; c++)
		dir = sb->cg.dirs[c];
	/* Whose child is whom, and which cgroup: all read while the pidfd holds
	 * init's pid, and checked alive after, so it was this init throughout. */
	if ((!foreign && ppid_of(h->monitor_pid) != getpid()) ||
	    ppid_of(h->init_pid) != h->monitor_pid || !dir ||
	    !in_cgroup(dir, h->init_pid)) {
		cx_err_set(err, ESRCH, "sandbox %s adopt: pids %d/%d are not its monitor and init",
			   id, (int)h->monitor_pid, (int)h->init_pid);
		goto fail;
	}
	if (foreign && sbx_cgroup_frozen(&sb->cg) == 1) {
		/* A paused sandbox would not answer the ping for its whole
		 * timeout: it is not taken back (the reap by id stops it). */
		cx_err_set(err, EAGAIN, "sandbox %s reclaim: it is frozen (paused)", id);
		goto fail;
	}
	verified = 1;
	char proc[64];
	snprintf(proc, sizeof proc, "/proc/%d/root", (int)h->init_pid);
	sb->root_fd = open(proc, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sb->root_fd < 0 || pidfd_send_signal(sb->init_pidfd, 0, NULL, 0) < 0) {
		cx_err_set(err, errno, "sandbox %s adopt: init died", id);
		goto fail;
	}
	if (sandbox_health(sb, err) < 0)
		goto fail;
	*out = sb;
	rc = 0;
fail:
	if (rc < 0) {
		/* A verified sandbox that fails later (init died, no answer) is
		 * taken down and its monitor, our child, reaped.  An unverified
		 * record's pids are never signalled: the caller's cgroup reap
		 * (sandbox_reap_stale) by id stops what is there. */
		if (verified)
			(void)pidfd_send_signal(sb->init_pidfd, SIGKILL, NULL, 0);
		if (sb->init_pidfd >= 0)
			close(sb->init_pidfd);
		if (sb->root_fd >= 0)
			close(sb->root_fd);
		close(sb->ctl_fd);
		if (verified && !foreign)
			while (waitpid(h->monitor_pid, NULL, 0) < 0 && errno == EINTR)
				;
		for (int c = 0; c < SBX_CG_MAX; c++)
			free(sb->cg.dirs[c]);
		sbx_free(sb);
	}
	return rc;
}

int sandbox_adopt(sandbox **out, const char *id, const char *cgroup_name, const sandbox_handover *h,
		  cx_err *err)
{
	return adopt(out, id, cgroup_name, h, false, err);
}

int sandbox_reclaim(sandbox **out, const char *id, const char *cgroup_name,
		    const sandbox_handover *h, cx_err *err)
{
	*out = NULL;
	if (h->monitor_pid <= 1 || h->init_pid <= 1 || h->ctl_fd < 3)
		return cx_err_set(err, EINVAL, "sandbox %s reclaim: bad record", id ? id : "?");
	cleanup_close int mfd = pidfd_open(h->monitor_pid, 0);
	if (mfd < 0)
		return cx_err_set(err, errno, "sandbox %s reclaim: monitor %d is gone", id,
				  (int)h->monitor_pid);
	int ctl = (int)syscall(SYS_pidfd_getfd, mfd, h->ctl_fd, 0);
	if (ctl < 0)
		return cx_err_set(err, errno, "sandbox %s reclaim: the monitor holds no control socket",
				  id);
	(void)fcntl(ctl, F_SETFD, FD_CLOEXEC);
	sandbox_handover mine = *h;
	mine.ctl_fd = ctl; /* adopt takes it, also when it refuses */
	mine.mon_ctl_fd = h->ctl_fd;
	/* Requests go on from a seq no earlier one is likely to have had:
	 * replies the dead cortexd never read are skipped by their seq. */
	mine.seq = (uint32_t)(cx_mono_ms() << 8);
	if (ctl < 3) {
		close(ctl);
		return cx_err_set(err, EBADF, "sandbox %s reclaim: fd %d", id, ctl);
	}
	if (adopt(out, id, cgroup_name, &mine, true, err) < 0)
		return -1;
	/* From now on the monitor watches this process; the pidfd was taken
	 * before the checks, so it is the monitor they verified. */
	if (pidfd_send_signal(mfd, SIGUSR1, NULL, 0) < 0) {
		cx_err_set(err, errno, "sandbox %s reclaim: tell the monitor", id);
		sandbox_destroy(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}
