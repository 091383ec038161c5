/* sandbox.h — a session's sandbox: a process tree in its own mount, PID, IPC
 * and UTS namespaces, a root that is either the host's read-only (host-root
 * mode) or an overlay of an image's layers (image mode: no host dir visible
 * but what is bound on purpose), private /tmp, per-session home and
 * /workspace, a libseccomp filter, no_new_privs, an unprivileged uid, a
 * cgroup with memory, pids and cpu limits, and /proc/1/cmdline reading
 * "cortex-init" (init is a fork of cortexd: its argv is not shown).  A
 * session's disk (sandbox_disk_attach) caps what it can write.
 *
 * Shape: sandbox_create() starts a small init (PID 1 in the new PID namespace)
 * that builds the mounts, drops privileges, loads the seccomp filter and then
 * serves exec requests from cortexd over a socketpair.  Everything in the
 * sandbox descends from that init, so killing it kills the whole tree; a
 * monitor process between cortexd and init carries PR_SET_PDEATHSIG so that
 * nothing outlives cortexd.
 *
 * All functions follow the cx.h error convention.  Not thread-safe per
 * sandbox object: the caller serialises calls on one sandbox.
 */
#ifndef CORTEX_SANDBOX_H
#define CORTEX_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cx.h"

typedef struct sandbox sandbox;

/* An extra read-only bind of a host path (file or dir) into the sandbox. */
typedef struct sandbox_bind {
	const char *host_path; /* not owned */
	const char *sandbox_path; /* absolute; parents are created (under a host dir
	                             that is bound read-only, e.g. /opt, it must
	                             already exist: prefer a new top-level dir) */
} sandbox_bind;

#define SANDBOX_OPTS_VERSION 1
typedef struct sandbox_opts {
	unsigned version;          /* SANDBOX_OPTS_VERSION */
	const char *id;            /* [A-Za-z0-9_-]{1,64}; names the cgroup and hostname */
	const char *root_mount;    /* existing empty host dir; the new root (a tmpfs, or the
	                              image's overlay) is mounted on it inside the sandbox's
	                              own mount namespace */
	const char *home_dir;      /* host dir -> /home/agent (rw, survives sleep) */
	const char *workspace_dir; /* host dir -> /workspace (rw, survives sleep) */
	const char *run_dir;       /* host dir -> /run/cortex (rw; ws-agent socket, logs) */
	const char *const *hide;   /* NULL-terminated host paths masked by an empty read-only
	                              tmpfs (e.g. the data dir); may be NULL */
	const sandbox_bind *binds; /* extra read-only binds; may be NULL */
	size_t n_binds;
	uid_t uid;                 /* the sandbox's processes run as uid:gid (not 0) */
	gid_t gid;
	uint64_t memory_max;       /* bytes; 0 = no limit */
	uint64_t pids_max;         /* 0 = no limit */
	uint64_t tmp_size;         /* bytes for the /tmp tmpfs; 0 = 256 MiB */
	const char *cgroup_name;   /* parent cgroup name under each hierarchy; NULL = "cortex" */
	const char *mount_dir;     /* absolute dir inside (e.g. "/cortex/mcp"); NULL = none.
	                              A small tmpfs writable by root only (0755): the place
	                              sandbox_mount_ro() attaches host dirs to at run time */
	/* ---- image root mode (fields added in place; zero = host-root mode) ---- */
	const char *const *lower_dirs; /* NULL-terminated host dirs, TOP layer first, at most
	                              SANDBOX_MAX_LAYERS; NULL = host-root mode.  Set: the root
	                              is an overlay of these (nosuid, nodev) instead of the host's
	                              top-level dirs; no host dir is visible but home, workspace,
	                              run, binds and mount_dir, and `hide` is ignored */
	const char *upper_dir;     /* host dirs on one file system, both or neither: the root's */
	const char *work_dir;      /* writable upper (survives sleep); NULL = read-only root */
	uint32_t cpu_weight;       /* 1..10000 (v2 cpu.weight; v1 cpu.shares = w*1024/100);
	                              0 = the default (100) */
	uint32_t cpu_max_millicpu; /* 1000 = one CPU per 100 ms period (v2 cpu.max, v1
	                              cfs_quota_us); 0 = no cap, else >= 10 */
	bool net_isolated;         /* own network namespace with only `lo` (up); false = the
	                              host's (host-root benchmarks compare both) */
	uint32_t keep_grace_s;     /* 0: the sandbox dies with cortexd (kill -9 included).
	                              N: when cortexd dies, the monitor keeps init (and the
	                              control socket's cortexd end) for N s, waiting for a new
	                              cortexd to take it back (sandbox_reclaim); past that it
	                              kills init and removes the cgroup itself */
} sandbox_opts;
#define SANDBOX_MAX_LAYERS 64
#define SANDBOX_OPTS_INIT {.version = SANDBOX_OPTS_VERSION}

/* Most fds passed beyond stdio (fd 3, 4, ...). */
#define SANDBOX_EXEC_MAX_EXTRA_FDS 4

/* Version 3 added exit_fd and ctty (at the end); version 2 callers still work. */
#define SANDBOX_EXEC_OPTS_VERSION 3
typedef struct sandbox_exec_opts {
	unsigned version;               /* SANDBOX_EXEC_OPTS_VERSION */
	const char *const *argv;        /* argv[0] is an absolute path inside the sandbox */
	const char *const *envp;        /* full environment; NULL = empty */
	const char *cwd;                /* inside the sandbox; NULL = /home/agent */
	int stdin_fd, stdout_fd, stderr_fd; /* host fds passed in; -1 = /dev/null */
	const int *extra_fds;           /* not owned; passed as fd 3, 4, ... in order (a
	                                   readiness pipe, a listening socket); each >= 0 */
	size_t n_extra_fds;             /* at most SANDBOX_EXEC_MAX_EXTRA_FDS */
	/* ---- version 3 ---- */
	int exit_fd;                    /* -1, or the write end of a host pipe (not seen by the
	                                   program): init writes the program's wait status to it
	                                   (an int32, as waitpid gives it) when it exits, after
	                                   SIGKILLing what is left of its process group, and
	                                   closes it.  Closing the read end before that kills
	                                   the process group (SIGKILL): the caller's handle on
	                                   the program's life.  EOF without a status: the
	                                   sandbox stopped.  At most SANDBOX_EXEC_MAX_WATCHED
	                                   such programs at once (then EAGAIN) */
	bool ctty;                      /* after setsid, make fd 0 (a terminal, e.g. the slave
	                                   of sandbox_openpty) the controlling terminal */
} sandbox_exec_opts;
#define SANDBOX_EXEC_OPTS_INIT {SANDBOX_EXEC_OPTS_VERSION, NULL, NULL, NULL, -1, -1, -1, NULL, 0, -1, false}
#define SANDBOX_EXEC_MAX_WATCHED 256

/* Start the sandbox.  Returns once the mounts are built, privileges dropped and
 * the filter loaded, or with the failing step and path in err. */
int sandbox_create(sandbox **out, const sandbox_opts *opts, cx_err *err);

/* Run a program inside, in its own session (setsid: no controlling tty), as the
 * sandbox uid, in the sandbox cgroup.  out_pid: its pid inside the sandbox. */
int sandbox_exec(sandbox *sb, pid_t *out_pid, const sandbox_exec_opts *eo, cx_err *err);

/* A pseudo-terminal pair of the sandbox's own devpts (/dev/pts inside), so
 * the program sees its terminal as /dev/pts/N: *out_master stays with the
 * caller (read output, write input, TIOCSWINSZ), *out_slave (owned by the
 * sandbox uid) is handed to sandbox_exec as stdio with ctty set.  Both
 * O_CLOEXEC; the master is O_NONBLOCK.  /dev/pts/ptmx is opened beneath
 * the sandbox's root without following any link.  No devpts inside: ENOENT.
 * Cheap (no request to init); thread-safe. */
int sandbox_openpty(sandbox *sb, int *out_master, int *out_slave, cx_err *err);

/* Write a file at an absolute path inside the sandbox, atomically (temp file +
 * rename), owned by the sandbox uid, never following a symlink the sandbox
 * could have planted (openat2 RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS).  Missing
 * parent directories are created (0755, owned by the sandbox uid); a symlink
 * anywhere in the parent path fails with ELOOP, a read-only place with EROFS. */
int sandbox_write_file(sandbox *sb, const char *path, const void *data, size_t len,
		       unsigned mode, cx_err *err);

/* Remove a file inside the sandbox (same safe walk as sandbox_write_file:
 * a symlink on the parent path is ELOOP).  A missing file is not an error. */
int sandbox_remove_file(sandbox *sb, const char *path, cx_err *err);

/* Attach a host dir read-only (nosuid, nodev) at `name` under opts.mount_dir
 * of a running sandbox, i.e. at <mount_dir>/<name>; name is one path
 * component.  Works after create (open_tree(OPEN_TREE_CLONE) of the host dir,
 * then a short-lived child setns()es into the sandbox's mount namespace and
 * move_mount()s it), so a session gets new packages without a restart.
 * Already mounted there: 0, nothing done.  Thread-safe with respect to
 * sandbox_write_file() on the same sandbox. */
int sandbox_mount_ro(sandbox *sb, const char *host_dir, const char *name, cx_err *err);
/* Detach what sandbox_mount_ro() attached at name (MNT_DETACH); absent: 0. */
int sandbox_umount(sandbox *sb, const char *name, cx_err *err);

/* 0 if init is alive and answers a ping on its control socket. */
int sandbox_health(sandbox *sb, cx_err *err);

/* Kill every process of the sandbox, reap them, remove its cgroup.  Home and
 * workspace stay on disk; /tmp is gone.  Idempotent.  Works on a frozen
 * sandbox: its tasks get SIGKILL while still frozen, then the cgroup is
 * thawed, so none of them runs again. */
int sandbox_stop(sandbox *sb, cx_err *err);

/* sandbox_stop() then free.  NULL is fine. */
void sandbox_destroy(sandbox *sb);

/* Freeze (frozen != 0) or thaw every process of the sandbox through its
 * cgroup (v2 cgroup.freeze, v1 freezer.state).  Returns once the kernel
 * reports the cgroup FROZEN (v2: cgroup.events "frozen 1") or thawed, waiting
 * at most 1 s (then ETIMEDOUT, and a freeze is undone).  Processes keep their
 * memory, pids and fds; while frozen they use no CPU.  Idempotent.  Freezing a
 * sandbox with no process left (init was killed) fails with ESRCH; a stopped
 * one too.  v1 without the freezer hierarchy: ENOTSUP.  While frozen, init
 * answers nothing: sandbox_exec() and sandbox_health() time out, so thaw
 * first; sandbox_write_file() works (it does not go through init). */
int sandbox_freeze(sandbox *sb, int frozen, cx_err *err);

/* Clean up after a daemon that died without stopping sandbox `id`: its
 * processes die with it (PDEATHSIG), but not v1-frozen ones, which wait for a
 * thaw, and the cgroup dirs stay.  If <cgroup_name>/<id> exists in any
 * hierarchy the library uses (*found = 1): SIGKILL every process in it (v2
 * cgroup.kill; v1: freeze, kill each listed pid, thaw, until none is left),
 * wait until it is empty (bounded, 5 s; then every process has left the
 * cgroup, though a pid namespace's init may still be finishing its exit) and
 * remove the dirs.  Absent: *found = 0 and 0.  cgroup_name NULL = "cortex";
 * id is checked as in sandbox_create().  Call it for a session's id before
 * creating its sandbox again, e.g. for every session the daemon finds at start. */
int sandbox_reap_stale(const char *cgroup_name, const char *id, int *found, cx_err *err);

/* ---- per-session disks (disk.c): a file system the kernel caps ----
 *
 * Attach an ext4 image at mountpoint (nosuid, nodev; the dir is made 0700 if
 * missing).  A missing image is first created sparse (O_EXCL, 0600) of
 * size_mb (8 MB .. 16 TB) and formatted by mke2fs (journal, lazy inode
 * tables, no root reserve; its output ends in the error when it fails).  The
 * loop device is attached with LO_FLAGS_AUTOCLEAR, so it frees itself when
 * the last mount goes; an image still attached (a sandbox still holds its
 * mount) is mounted again through the same device.  Attaches of one image are
 * serialised (flock on the image).  size_mb is used only to create; an existing
 * image keeps its size.  Already mounted there: 0, nothing done; another file
 * system there: EBUSY.  No loop support
 * (/dev/loop-control): ENOENT.  Give home, workspace and the root's upper of
 * a sandbox dirs on one disk: writes past its size get ENOSPC, nothing else
 * on the host fills up. */
int sandbox_disk_attach(const char *image_path, uint64_t size_mb, const char *mountpoint,
			cx_err *err);
/* As sandbox_disk_attach, for an image the caller made just now (e.g. with
 * sandbox_disk_make_from_template) while holding a lock that every attacher
 * of it takes: no loop device can back it yet, so the host's loop devices are
 * not scanned for one (each is an open and an ioctl: hundreds on a busy host). */
int sandbox_disk_attach_new(const char *image_path, const char *mountpoint, cx_err *err);
/* A dir at the root of a new disk, root's, with mode (a single name). */
typedef struct {
	const char *name;
	unsigned mode;
} sandbox_disk_dir;
/* A new image (O_EXCL) at image_path: a copy of an empty size_mb disk holding
 * only dirs (n_dirs, may be 0) at its root, the template
 * template_dir/ext4-<size_mb>mb[-<hash of dirs>].img (made by mke2fs the
 * first time, as sandbox_disk_attach would), reflinked where the file system
 * can, else its data extents copied in the kernel (the holes stay holes),
 * then synced.  Much cheaper than mke2fs per disk.  EEXIST when image_path
 * exists; EINVAL for a dir name that is not one plain component. */
int sandbox_disk_make_from_template(const char *image_path, uint64_t size_mb, const char *template_dir,
				    const sandbox_disk_dir *dirs, size_t n_dirs, cx_err *err);
/* An existing image, read-only (e.g. a shared runtime made by
 * sandbox_disk_make_from_dir), as sandbox_disk_attach otherwise. */
int sandbox_disk_attach_ro(const char *image_path, const char *mountpoint, cx_err *err);
/* A new image (O_EXCL) holding a copy of the tree src_dir (mke2fs -d), sized
 * to it with room for metadata; owners and modes are kept. */
int sandbox_disk_make_from_dir(const char *image_path, const char *src_dir, cx_err *err);
/* umount2(MNT_DETACH) of what is mounted at mountpoint; not mounted: 0. */
int sandbox_disk_detach(const char *mountpoint, cx_err *err);

/* Host pid of the sandbox's init (PID 1 inside), or -1 when stopped. */
pid_t sandbox_init_pid(const sandbox *sb);

/* ---- the sandbox's network namespace (netns.c) ---- */

/* An fd of the sandbox's network namespace (/proc/<init>/ns/net, O_CLOEXEC),
 * proved to be this sandbox's: the init pidfd is checked alive after the open,
 * so a recycled pid cannot hand out another process's namespace.  The fd keeps
 * the namespace, not the sandbox: a stopped sandbox's connects are refused.
 * Stopped: ESRCH; a sandbox in the host's namespace (net_isolated off): ENOTSUP.
 * Cheap (no blocking call): fine on a service thread. */
int sandbox_netns_open(sandbox *sb, int *out, cx_err *err);
/* A TCP connection to 127.0.0.1:port inside the namespace netns_fd: a
 * short-lived thread setns()es into it and makes the socket there (a socket
 * stays in the namespace it was made in), the calling thread connects, waiting
 * at most timeout_ms.  The caller's own namespace never changes.  *out is
 * O_CLOEXEC | O_NONBLOCK with TCP_NODELAY.  Nothing listens: ECONNREFUSED;
 * no answer in time: ETIMEDOUT.  Blocks: call it from a worker. */
int sandbox_netns_connect(int netns_fd, uint16_t port, int timeout_ms, int *out, cx_err *err);

/* ---- upgrade restarts (handover.c) ----
 *
 * cortexd re-executing itself keeps its sandboxes: sandbox_handover_release
 * lets go of the object without stopping anything and keeps the control
 * socket open across the execve (its CLOEXEC cleared; init exits when it
 * closes); the new process takes the sandbox back with sandbox_adopt, which
 * trusts nothing it is told: the monitor must be its own child, init the
 * monitor's child and listed in <cgroup_name>/<id>'s cgroup.procs (checked
 * through a pidfd, so a recycled pid fails), and init must answer a ping on
 * the socket. */
typedef struct sandbox_handover {
	pid_t monitor_pid;
	pid_t init_pid;
	int ctl_fd;            /* open in the new process (same number) */
	uint32_t seq;
	uid_t uid;
	gid_t gid;
	bool net_isolated;
	char mount_dir[256];   /* "" = none */
	int mon_ctl_fd;        /* the monitor's copy of the control socket (sandbox_record,
	                          sandbox_reclaim); 0 = ctl_fd's number */
} sandbox_handover;
int sandbox_handover_release(sandbox *sb, sandbox_handover *out, cx_err *err);
/* What a crash record needs of a running sandbox (nothing is let go of):
 * ctl_fd is the number of the control socket's cortexd end, which the
 * monitor of a sandbox made with keep_grace_s also holds. */
void sandbox_record(const sandbox *sb, sandbox_handover *out);
/* After cortexd died (kill -9) with keep_grace_s set: take a sandbox back
 * from a record of sandbox_record.  The monitor is no longer our child; the
 * control socket is copied out of it (pidfd_getfd of h->ctl_fd), then the
 * checks of sandbox_adopt hold (init the monitor's child, in <id>'s cgroup,
 * answering a ping) and the monitor is told (SIGUSR1) to watch this process
 * from now on.  A record that fails is never acted on: the caller's cgroup
 * reap (sandbox_reap_stale) stops what is left. */
int sandbox_reclaim(sandbox **out, const char *id, const char *cgroup_name,
		    const sandbox_handover *h, cx_err *err);
int sandbox_adopt(sandbox **out, const char *id, const char *cgroup_name, const sandbox_handover *h,
		  cx_err *err);

/* The fork server (forkserver.c): a small helper process, forked here, that
 * makes sandbox monitors as children of the calling process, so creating a
 * sandbox does not fork the (large, threaded) caller.  Call once, early, while
 * the process is small and single-threaded; sandbox_create uses it from then
 * on and forks directly when there is none.  `helper`: the path of the
 * cortex-sbxfork program the helper execs (NULL, missing or not runnable: the
 * forked copy of the caller serves).  Stop it (and reap it) before an
 * execve.  A no-op in ThreadSanitizer builds. */
int sandbox_forkserver_start(const char *helper, cx_err *err);
void sandbox_forkserver_stop(void);
/* The helper's pid, -1 when there is none; monitors it made so far. */
pid_t sandbox_forkserver_pid(void);
uint64_t sandbox_forkserver_spawned(void);

/* Make the calling process a child subreaper and ignore nothing else; call once
 * at daemon start so sandbox processes re-parent to cortexd, never to host init. */
int sandbox_runtime_init(cx_err *err);

#endif
