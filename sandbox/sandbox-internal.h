/* sandbox-internal.h — what the files of sandbox/ share with each other (and
 * with the unit tests); not part of the public API.
 *
 * Process shape (see sandbox.c):
 *
 *   cortexd thread ──fork──> monitor (host pid ns, new mount/ipc/uts ns,
 *                            PDEATHSIG=KILL) ──fork──> init (PID 1 of the new
 *                            pid ns, PDEATHSIG=KILL) ──fork──> exec'd programs
 *
 * (With the fork server, forkserver.c, the monitor is cloned from a small
 * helper instead, with CLONE_PARENT: still the daemon's child.)
 *
 * Two socketpairs connect the library to the children:
 *   sync (SOCK_STREAM): used only during sandbox_create, carries sbx_sync_msg
 *        frames (pid of init, "go", "ready", or an error with its message);
 *   ctl  (SOCK_SEQPACKET): init's request/reply channel for the sandbox's whole
 *        life (exec, ping); EOF on it makes init exit.
 *
 * The monitor and init are forks of the threaded daemon and never exec: a
 * lock another thread held at the fork (the allocator's too) stays held in
 * them.  So they make system calls, snprintf and cx_err_set only: no malloc,
 * stdio, opendir, strerror or atfork handlers (_Fork below the first fork).
 * What takes allocating to make, the seccomp filter, is made before the fork.
 */
#ifndef CORTEX_SANDBOX_INTERNAL_H
#define CORTEX_SANDBOX_INTERNAL_H

#include <unistd.h>

/* The forks below the daemon's first one.  ThreadSanitizer must see every
 * fork to keep quiet in the child (its fork interceptor); _Fork would hide
 * it and the child would start TSan's own thread and hang.  So the TSan
 * build forks with fork(); its atfork handlers are TSan's own. */
/* Monitor and init up, mounts built, filter loaded: bounded. */
#define SBX_START_TIMEOUT_MS 30000

#if defined(__SANITIZE_THREAD__)
#define sbx_fork() fork()
#else
#define sbx_fork() _Fork()
#endif

#include <linux/filter.h>
#include <pthread.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "caps.h"
#include "cx.h"
#include "sandbox.h"

/* ---- cgroup.c ---- */

/* v1: one hierarchy each; freezer and cpu are optional (cpu is required only
 * when opts ask for a cpu weight or cap). */
enum { SBX_CG_MEMORY, SBX_CG_PIDS, SBX_CG_FREEZER, SBX_CG_CPU, SBX_CG_MAX };

typedef struct sbx_cgroup {
	bool v2;
	/* v2: dirs[0] is the one cgroup.  v1: one dir per controller (indexed
	 * by SBX_CG_*), NULL when that hierarchy is not mounted (freezer is
	 * optional).  Owned. */
	char *dirs[SBX_CG_MAX];
} sbx_cgroup;

/* Where cgroup hierarchies are mounted (statfs tells v2 from v1/hybrid). */
#define SBX_CGROUP_ROOT "/sys/fs/cgroup"

int sbx_cgroup_create(sbx_cgroup *cg, const sandbox_opts *opts, cx_err *err);
int sbx_cgroup_add_pid(const sbx_cgroup *cg, pid_t pid, cx_err *err);
/* 1 if no process is left in any of the cgroup's dirs, 0 if some are. */
int sbx_cgroup_is_empty(const sbx_cgroup *cg, cx_err *err);
/* Block until no task is left (v2: inotify on cgroup.events; v1: bounded backoff). */
int sbx_cgroup_wait_empty(const sbx_cgroup *cg, int timeout_ms, cx_err *err);
/* rmdir dfd/name, retried on EBUSY (a dying task holds a v1 cgroup for a
 * moment) with cg_wait's bounded backoff for at most timeout_ms; 0 or -1. */
int sbx_cgroup_rmdir_at(int dfd, const char *name, int timeout_ms);
/* Freeze or thaw; returns once the kernel reports the state reached (v2
 * cgroup.events "frozen 1|0", v1 freezer.state FROZEN|THAWED), or after
 * SBX_FREEZE_TIMEOUT_MS with ETIMEDOUT (a freeze that times out is undone). */
#define SBX_FREEZE_TIMEOUT_MS 1000
int sbx_cgroup_freeze(const sbx_cgroup *cg, bool frozen, cx_err *err);
/* SIGKILL every task, frozen or not, and wait (bounded) until none is left.
 * v2: cgroup.kill; v1 (or v2 before 5.14): freeze, kill each listed pid,
 * thaw, repeat until nothing is listed. */
int sbx_cgroup_kill(const sbx_cgroup *cg, int timeout_ms, cx_err *err);
/* 1 if the cgroup is frozen or freezing (v2 cgroup.freeze 1; v1 freezer.state
 * not THAWED), 0 if not, -1 if it cannot be told (no freezer, unreadable). */
int sbx_cgroup_frozen(const sbx_cgroup *cg);
/* Fill cg with the dirs of an existing sandbox cgroup <root>[/<ctrl>]/<name>/<id>
 * (v2 or v1 as statfs(root) says).  1 found (some dir exists), 0 none, -1 error. */
int sbx_cgroup_find_at(sbx_cgroup *cg, const char *root, const char *name, const char *id,
		       cx_err *err);
/* rmdir every dir (ENOENT is fine) and free the paths. */
int sbx_cgroup_remove(sbx_cgroup *cg, cx_err *err);

/* ---- sandbox.c ---- */

struct sandbox {
	char id[CX_CAP_NAME + 1];
	uid_t uid; /* of the sandbox's processes; owner of written files */
	gid_t gid;
	pid_t monitor_pid; /* our direct child; -1 when stopped */
	pid_t init_pid;    /* host pid; -1 when stopped */
	int init_pidfd;    /* immune to pid reuse */
	int root_fd;       /* O_PATH of init's root (/proc/<init>/root), opened once
	                      when init is ready: files are written beneath it */
	int ctl_fd;        /* control socket to init */
	int mon_ctl_fd;    /* the number of its copy in the monitor (keep_grace_s):
	                      ctl_fd's, unless the sandbox was reclaimed */
	bool net_isolated; /* init has a network namespace of its own (opts.net_isolated) */
	uint32_t seq;      /* of the last control request */
	sbx_cgroup cg;
	char *mount_dir;   /* opts.mount_dir (owned), NULL = none */
	/* Serialises sandbox_mount_ro/umount (mountin.c), which may come
	 * from worker threads: check-then-mount of one name must not
	 * interleave. */
	pthread_mutex_t mount_lock;
	/* Serialises control requests (exec, ping), which may come from
	 * several worker threads at once: one request and its reply at a time. */
	pthread_mutex_t ctl_lock;
};

/* Free the object only (nothing is stopped; cg dirs are not freed). */
void sbx_free(sandbox *sb);

/* ---- seccomp.c ---- */

typedef enum sbx_sc_action {
	SBX_SC_EPERM,  /* the call fails with EPERM */
	SBX_SC_ENOSYS, /* the call looks unimplemented (libc then falls back) */
} sbx_sc_action;

/* One line of the policy: when `name` is called and all `args` match, do
 * `action`.  n_args == 0 matches every call. */
typedef struct sbx_sc_rule {
	const char *name;
	sbx_sc_action action;
	unsigned n_args;
	struct scmp_arg_cmp args[2];
	const char *why; /* shown in errors; documents the rule */
} sbx_sc_rule;

/* A compiled filter: classic BPF as the kernel takes it. */
typedef struct sbx_seccomp_prog {
	struct sock_filter *insns; /* owned */
	unsigned short len;        /* instructions */
} sbx_seccomp_prog;

/* Compile `rules` (default: allow; other architectures killed).  Each rule is
 * validated; a bad one is reported by index and name.  Allocates: call it
 * before forking. */
int sbx_seccomp_build(sbx_seccomp_prog *out, const sbx_sc_rule *rules, size_t n_rules, cx_err *err);
/* The sandbox's policy, compiled. */
int sbx_seccomp_build_policy(sbx_seccomp_prog *out, cx_err *err);
/* Install on the calling thread: one system call, nothing allocated, so a
 * child forked from a threaded process may call it.  The caller must have
 * set no_new_privs. */
int sbx_seccomp_install(const sbx_seccomp_prog *prog, cx_err *err);
void sbx_seccomp_prog_free(sbx_seccomp_prog *prog);
#define cleanup_seccomp_prog __attribute__((cleanup(sbx_seccomp_prog_free)))
/* The sandbox's policy (seccomp.c). */
extern const sbx_sc_rule sbx_seccomp_policy[];
extern const size_t sbx_seccomp_policy_len;

/* ---- overlay.c (image mode; in the library, before the fork) ---- */

/* Layer count (1..SANDBOX_MAX_LAYERS), upper and work both or neither. */
int sbx_overlay_check(const sandbox_opts *opts, cx_err *err);
/* A detached overlay mount (nosuid, nodev) of opts->lower_dirs (+ upper,
 * work) whose options name no host path; *out_fd: its fsmount fd (CLOEXEC). */
int sbx_overlay_open(const sandbox_opts *opts, int *out_fd, cx_err *err);

/* ---- mounts.c (runs inside init, as root, before dropping privileges) ---- */

/* root_fd: the overlay mount fd in image mode (moved onto root_mount), or -1
 * for the host-root mode. */
int sbx_mounts_setup(const sandbox_opts *opts, int root_fd, cx_err *err);
/* sysview.c: root/sys as a read-only tmpfs with the caller's own cgroup dirs
 * and a few host facts, read-only (init, before pivot_root). */
int sbx_sysview_setup(const char *root, cx_err *err);
/* init.c: a small /proc file in one read into buf (NUL-terminated, at most
 * cap - 1 bytes); its length, or -1 (err set; also for an empty file). */
ssize_t sbx_read_proc(const char *path, char *buf, size_t cap, cx_err *err);

/* ---- sync channel (sandbox.c) ---- */

enum sbx_sync_type {
	SBX_SYNC_PID = 1, /* monitor -> lib: code = host pid of init */
	SBX_SYNC_GO,      /* lib -> init: placed in the cgroup, go on */
	SBX_SYNC_READY,   /* init -> lib: mounts built, privileges dropped */
	SBX_SYNC_ERROR,   /* child -> lib: code = errno, message follows */
};

/* Frame: int32 type, int32 code, uint32 len, then len bytes of message. */
int sbx_sync_send(int fd, int type, int code, const char *msg);
/* Reads one frame.  An SBX_SYNC_ERROR frame is turned into err (code and
 * message as the child made them) and -1; anything else fills type/code. */
int sbx_sync_recv(int fd, int *out_type, int *out_code, cx_err *err);

/* ---- control protocol (sandbox.c client side, init.c server side) ---- */

#define SBX_CTL_MAX_MSG (128u << 10) /* one request: argv + envp + cwd */
#define SBX_CTL_MAX_FDS (3 + SANDBOX_EXEC_MAX_EXTRA_FDS) /* stdio, then fd 3, 4, ... */

enum sbx_ctl_type {
	SBX_CTL_PING = 1,
	SBX_CTL_PONG,
	SBX_CTL_EXEC,
	SBX_CTL_EXEC_OK,  /* reply: pid */
	SBX_CTL_EXEC_ERR, /* reply: code + message */
};

typedef struct sbx_ctl_hdr {
	uint32_t type;
	uint32_t seq;    /* echoed in the reply; stale replies are skipped */
	int32_t code;    /* replies: errno */
	int32_t pid;     /* EXEC_OK: pid inside the sandbox */
	uint32_t argc;   /* EXEC: strings follow the header: cwd, argv..., envp... */
	uint32_t envc;
	uint32_t fdmask; /* EXEC: bit i set = fd slot i was passed (in order); the
	                    slots from 3 on are contiguous */
	uint32_t flags;  /* EXEC: SBX_EXEC_* */
} sbx_ctl_hdr;
#define SBX_EXEC_EXIT_FD 1u /* one more fd follows the slots: sandbox_exec_opts.exit_fd */
#define SBX_EXEC_CTTY 2u    /* TIOCSCTTY fd 0 after setsid */
#define SBX_CTL_MAX_PASS (SBX_CTL_MAX_FDS + 1) /* fds in one request: slots + exit fd */

/* init.c: PID 1 inside the sandbox; never returns.  Everything it needs
 * that takes allocating to make (the filter) is made before the fork. */
__attribute__((noreturn)) void sbx_init_main(const sandbox_opts *opts,
					     const sbx_seccomp_prog *filter, int sync_fd,
					     int ctl_fd, int root_fd);

/* sandbox.c: the monitor (see there); never returns.  parent: the daemon's
 * pid, which must be the caller's parent. */
__attribute__((noreturn)) void sbx_monitor_main(const sandbox_opts *opts,
					       const sbx_seccomp_prog *filter, pid_t parent, int sync_fd,
					       int ctl_fd, int root_fd, int parent_pidfd, int lib_ctl_fd,
					       const sbx_cgroup *cg);

/* forkserver.c: have the fork server make the monitor (as the daemon's child).
 * 1 and *out set (and *out_mon_ctl_fd: lib_ctl_fd's number in the monitor, -1
 * without one), 0 when there is no fork server (the caller forks), -1 error. */
int sbx_forkserver_spawn(const sandbox_opts *opts, const sbx_seccomp_prog *filter, pid_t parent,
			 int sync_child, int ctl_child, int root_fd, int parent_pidfd, int lib_ctl_fd,
			 const sbx_cgroup *cg, pid_t *out, int *out_mon_ctl_fd, cx_err *err);

/* forkserver.c: the fork server's loop on its end `fd` of the socket, for
 * `parent` (the daemon; it exits when the daemon is not its parent or closes
 * its end).  Run by the forked helper, or by cortex-sbxfork (sbxfork_main.c). */
__attribute__((noreturn)) void sbx_forkserver_serve(int fd, pid_t parent);

/* Close every fd >= 3 except those in keep[]. */
int sbx_close_fds_except(const int *keep, size_t n_keep);

/* Report err on the sync socket and _exit(1); for forked children. */
__attribute__((noreturn)) void sbx_child_fail(int sync_fd, const cx_err *err);

/* mounts.c: absolute, shorter than max, no "." or ".." components. */
bool sb_path_ok(const char *p, size_t max);

#endif
