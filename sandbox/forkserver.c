/* forkserver.c — sandbox monitors forked from a small process, not the daemon.
 *
 * sandbox_create's monitor used to be a fork of cortexd itself: a large,
 * multi-threaded process.  Each such fork copies the daemon's page tables and
 * write-protects every private page of it, so all of the daemon's threads then
 * take copy-on-write faults (each one a TLB shootdown on every CPU) on memory
 * they touch; init, a fork of the monitor, pays the copy again.  In a create
 * burst that was about a third of cortexd's CPU (docs/benchmarks.md "Create
 * bursts").
 *
 * sandbox_forkserver_start(), called once while the daemon is still small and
 * single-threaded, forks a helper (comm "cortex-sbxfork") that makes monitors
 * on the library's behalf.  The helper execs the program cortex-sbxfork
 * (sandbox/sbxfork_main.c: this library in a small static binary, next to
 * cortexd) when it is given and runs, so a monitor and its init are copies of
 * a few hundred KB instead of the daemon's image with its ~50 shared
 * libraries; without it the forked copy of the daemon serves.  It is sent the sandbox's options (serialised into
 * a memfd) and the fds the monitor needs, and answers with the monitor's pid.
 * The monitor is made with clone(CLONE_PARENT): it is still the daemon's
 * child, as a fork of the daemon was -- waitpid, SIGCHLD, sandbox_handover's
 * parent check and the monitor's own getppid() check are unchanged -- and the
 * helper never has a child to reap.  The monitor then runs the same
 * sbx_monitor_main as before; the isolation it builds is the same.
 *
 * The helper ignores SIGINT, SIGTERM, SIGHUP and SIGPIPE, which the monitors
 * inherit: a fork of the daemon had its handlers (none of them ended it), and
 * a terminal's ^C or a unit's stop signal must not take sandboxes down ahead
 * of cortexd's own orderly stop.
 *
 * It ends when the daemon's end of its socket closes (exit, kill -9, execve:
 * the end is CLOEXEC) and has PR_SET_PDEATHSIG as a second guard.  Without a
 * helper (not started, stopped before an execve, or found dead before a
 * request was sent) sandbox_create forks the daemon directly, as before.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "sandbox-internal.h"

#define FS_MAGIC    0x43585346u /* "CXSF" */
#define FS_MAX_BLOB (4u << 20)	/* options: paths, layers, binds, the filter */
#define FS_MAX_LIST 4096u	/* entries of one string list */
#define FS_REPLY_MS 10000	/* a clone takes well under a millisecond */
#define FS_NFDS	    6		/* blob, sync, ctl, parent pidfd, root (opt), lib ctl (opt) */
#define FS_NONE	    UINT64_MAX	/* a NULL string or list */

typedef struct fs_req {
	uint32_t magic;
	int32_t parent; /* the daemon's pid: the monitor checks it is its parent */
	uint32_t has_root, has_lib_ctl;
} fs_req;

typedef struct fs_reply {
	int32_t pid;	    /* the monitor's, or -errno */
	int32_t mon_ctl_fd; /* the number of the control socket's daemon end in the
			       monitor (keep_grace_s), -1 without: a new cortexd
			       copies it out by this number (sandbox_reclaim) */
} fs_reply;

static pthread_mutex_t fs_lock = PTHREAD_MUTEX_INITIALIZER;
static int fs_fd = -1;	    /* the daemon's end; -1 = no helper */
static pid_t fs_pid = -1;   /* the helper, our child */
static pid_t fs_owner = -1; /* who started it: only its monitors can be made there */
static uint64_t fs_spawned;  /* monitors it made */

/* ---- serialisation (daemon side: allocating is fine here) ---- */

typedef struct fs_buf {
	char *p;
	size_t len, cap;
	bool bad;
} fs_buf;

static void put(fs_buf *b, const void *d, size_t n)
{
	if (b->bad)
		return;
	if (b->len + n > FS_MAX_BLOB) {
		b->bad = true;
		return;
	}
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n)
			cap *= 2;
		char *np = realloc(b->p, cap);
		if (!np) {
			b->bad = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void put_u64(fs_buf *b, uint64_t v)
{
	put(b, &v, sizeof v);
}

static void put_str(fs_buf *b, const char *s)
{
	if (!s) {
		put_u64(b, FS_NONE);
		return;
	}
	size_t n = strlen(s);
	put_u64(b, n);
	put(b, s, n + 1); /* with its NUL: the reader points into the blob */
}

static void put_list(fs_buf *b, const char *const *v)
{
	if (!v) {
		put_u64(b, FS_NONE);
		return;
	}
	uint64_t n = 0;
	while (v[n])
		n++;
	put_u64(b, n);
	for (uint64_t i = 0; i < n; i++)
		put_str(b, v[i]);
}

static void put_opts(fs_buf *b, const sandbox_opts *o, const sbx_seccomp_prog *f,
		     const sbx_cgroup *cg)
{
	put_u64(b, o->version);
	put_str(b, o->id);
	put_str(b, o->root_mount);
	put_str(b, o->home_dir);
	put_str(b, o->workspace_dir);
	put_str(b, o->run_dir);
	put_list(b, o->hide);
	put_u64(b, o->binds ? o->n_binds : FS_NONE);
	for (size_t i = 0; o->binds && i < o->n_binds; i++) {
		put_str(b, o->binds[i].host_path);
		put_str(b, o->binds[i].sandbox_path);
	}
	put_u64(b, o->uid);
	put_u64(b, o->gid);
	put_u64(b, o->memory_max);
	put_u64(b, o->pids_max);
	put_u64(b, o->tmp_size);
	put_str(b, o->cgroup_name);
	put_str(b, o->mount_dir);
	put_list(b, o->lower_dirs);
	put_str(b, o->upper_dir);
	put_str(b, o->work_dir);
	put_u64(b, o->cpu_weight);
	put_u64(b, o->cpu_max_millicpu);
	put_u64(b, o->net_isolated);
	put_u64(b, o->keep_grace_s);
	put_u64(b, f->len);
	put(b, f->insns, (size_t)f->len * sizeof *f->insns);
	put_u64(b, cg->v2);
	for (int c = 0; c < SBX_CG_MAX; c++)
		put_str(b, cg->dirs[c]);
}

/* ---- deserialisation (the helper) ---- */

typedef struct fs_rd {
	const char *p;
	size_t len, off;
	bool bad;
} fs_rd;

static uint64_t get_u64(fs_rd *r)
{
	uint64_t v = 0;
	if (r->bad || r->len - r->off < sizeof v) {
		r->bad = true;
		return 0;
	}
	memcpy(&v, r->p + r->off, sizeof v);
	r->off += sizeof v;
	return v;
}

static const char *get_str(fs_rd *r)
{
	uint64_t n = get_u64(r);
	if (r->bad || n == FS_NONE)
		return NULL;
	if (n >= r->len - r->off || r->p[r->off + n] != '\0' || memchr(r->p + r->off, 0, n)) {
		r->bad = true;
		return NULL;
	}
	const char *s = r->p + r->off;
	r->off += n + 1;
	return s;
}

/* Returns a NULL-terminated array (to free) or NULL for an absent list. */
static const char **get_list(fs_rd *r)
{
	uint64_t n = get_u64(r);
	if (r->bad || n == FS_NONE)
		return NULL;
	if (n > FS_MAX_LIST) {
		r->bad = true;
		return NULL;
	}
	const char **v = calloc(n + 1, sizeof *v);
	if (!v) {
		r->bad = true;
		return NULL;
	}
	for (uint64_t i = 0; i < n; i++)
		if (!(v[i] = get_str(r)))
			r->bad = true;
	return v;
}

typedef struct fs_decoded {
	sandbox_opts o;
	sbx_seccomp_prog f;
	sbx_cgroup cg;
	const char **hide, **lower;
	sandbox_bind *binds;
} fs_decoded;

static void decoded_free(fs_decoded *d)
{
	free(d->hide);
	free(d->lower);
	free(d->binds);
	free(d->f.insns);
}

static int get_opts(fs_rd *r, fs_decoded *d)
{
	memset(d, 0, sizeof *d);
	sandbox_opts *o = &d->o;
	o->version = (unsigned)get_u64(r);
	o->id = get_str(r);
	o->root_mount = get_str(r);
	o->home_dir = get_str(r);
	o->workspace_dir = get_str(r);
	o->run_dir = get_str(r);
	o->hide = d->hide = get_list(r);
	uint64_t nb = get_u64(r);
	if (!r->bad && nb != FS_NONE) {
		if (nb > FS_MAX_LIST || !(d->binds = calloc(nb ? nb : 1, sizeof *d->binds)))
			return -1;
		for (uint64_t i = 0; i < nb; i++) {
			d->binds[i].host_path = get_str(r);
			d->binds[i].sandbox_path = get_str(r);
		}
		o->binds = d->binds;
		o->n_binds = nb;
	}
	o->uid = (uid_t)get_u64(r);
	o->gid = (gid_t)get_u64(r);
	o->memory_max = get_u64(r);
	o->pids_max = get_u64(r);
	o->tmp_size = get_u64(r);
	o->cgroup_name = get_str(r);
	o->mount_dir = get_str(r);
	o->lower_dirs = d->lower = get_list(r);
	o->upper_dir = get_str(r);
	o->work_dir = get_str(r);
	o->cpu_weight = (uint32_t)get_u64(r);
	o->cpu_max_millicpu = (uint32_t)get_u64(r);
	o->net_isolated = get_u64(r) != 0;
	o->keep_grace_s = (uint32_t)get_u64(r);
	uint64_t fl = get_u64(r);
	if (r->bad || !fl || fl > BPF_MAXINSNS || r->len - r->off < fl * sizeof *d->f.insns)
		return -1;
	if (!(d->f.insns = malloc(fl * sizeof *d->f.insns)))
		return -1;
	memcpy(d->f.insns, r->p + r->off, fl * sizeof *d->f.insns);
	r->off += fl * sizeof *d->f.insns;
	d->f.len = (unsigned short)fl;
	d->cg.v2 = get_u64(r) != 0;
	for (int c = 0; c < SBX_CG_MAX; c++)
		d->cg.dirs[c] = (char *)get_str(r); /* read only: never freed here */
	return r->bad || r->off != r->len || !o->id ? -1 : 0;
}

/* ---- the helper ---- */

static void close_all(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* One request: a monitor made, its pid (or -errno) returned. */
static pid_t serve_one(const fs_req *q, int *fds)
{
	struct stat st;
	if (fstat(fds[0], &st) < 0 || st.st_size <= 0 || (uint64_t)st.st_size > FS_MAX_BLOB)
		return -EINVAL;
	char *blob = malloc((size_t)st.st_size);
	if (!blob)
		return -ENOMEM;
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = pread(fds[0], blob + got, (size_t)st.st_size - got, (off_t)got);
		if (n <= 0) {
			free(blob);
			return -EIO;
		}
		got += (size_t)n;
	}
	fs_rd r = {blob, got, 0, false};
	fs_decoded d;
	pid_t pid;
	if (get_opts(&r, &d) < 0) {
		pid = -EINVAL;
	} else {
		/* The monitor is the daemon's child (CLONE_PARENT), as a fork of
		 * the daemon was; it runs on a copy of this small process. */
		pid = (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, NULL, NULL, 0);
		if (pid == 0)
			sbx_monitor_main(&d.o, &d.f, q->parent, fds[1], fds[2],
					 q->has_root ? fds[4] : -1, fds[3],
					 q->has_lib_ctl ? fds[5] : -1, &d.cg);
		if (pid < 0)
			pid = -errno;
	}
	decoded_free(&d);
	free(blob);
	return pid;
}

__attribute__((noreturn)) void sbx_forkserver_serve(int fd, pid_t parent)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(0);
	prctl(PR_SET_NAME, "cortex-sbxfork");
	int keep[1] = {fd};
	if (sbx_close_fds_except(keep, 1) < 0)
		_exit(1);
	const int ign[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
	for (size_t i = 0; i < sizeof ign / sizeof ign[0]; i++)
		signal(ign[i], SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (;;) {
		fs_req q;
		int fds[FS_NFDS];
		for (int i = 0; i < FS_NFDS; i++)
			fds[i] = -1;
		char cbuf[CMSG_SPACE(sizeof fds)];
		struct iovec iov = {&q, sizeof q};
		struct msghdr m = {.msg_iov = &iov,
				   .msg_iovlen = 1,
				   .msg_control = cbuf,
				   .msg_controllen = sizeof cbuf};
		ssize_t n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(0); /* the daemon is gone (or execed) */
		int nfds = 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
				nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
				if (nfds > FS_NFDS)
					nfds = FS_NFDS;
				memcpy(fds, CMSG_DATA(c), (size_t)nfds * sizeof(int));
			}
		fs_reply reply = {-EPROTO, -1};
		if (n == (ssize_t)sizeof q && q.magic == FS_MAGIC && !(m.msg_flags & MSG_CTRUNC) &&
		    nfds == FS_NFDS) {
			reply.pid = serve_one(&q, fds);
			/* The monitor is a copy of us: the fd has the same number there. */
			reply.mon_ctl_fd = q.has_lib_ctl ? fds[5] : -1;
		}
		close_all(fds, FS_NFDS);
		if (send(fd, &reply, sizeof reply, MSG_NOSIGNAL) < 0)
			_exit(0);
	}
}

/* ---- the daemon's side ---- */

/* The forked child: the helper program if there is one (fd 3 is its end),
 * else this copy of the daemon serves. */
__attribute__((noreturn, unused)) static void helper_child(const char *helper, int fd, pid_t parent)
{
	if (helper && helper[0]) {
		int ok = fd == 3 ? fcntl(3, F_SETFD, 0) : dup2(fd, 3); /* dup2: no CLOEXEC on 3 */
		char ppid[16];
		snprintf(ppid, sizeof ppid, "%d", (int)parent);
		char *const argv[] = {(char *)"cortex-sbxfork", (char *)"3", ppid, NULL};
		/* Only the sanitizer runtimes' settings: none of cortexd's
		 * environment (provider keys, tokens) is copied into the helper,
		 * nor into the monitors and inits made from it. */
		extern char **environ;
		char *envp[8];
		size_t ne = 0;
		for (char **e = environ; e && *e && ne < sizeof envp / sizeof envp[0] - 1; e++)
			if (!strncmp(*e, "ASAN_OPTIONS=", 13) || !strncmp(*e, "UBSAN_OPTIONS=", 14) ||
			    !strncmp(*e, "LSAN_OPTIONS=", 13) || !strncmp(*e, "TSAN_OPTIONS=", 13))
				envp[ne++] = *e;
		envp[ne] = NULL;
		if (ok >= 0)
			execve(helper, argv, envp);
		if (fd != 3)
			close(3); /* not found or not runnable: serve from here */
	}
	sbx_forkserver_serve(fd, parent);
}

int sandbox_forkserver_start(const char *helper, cx_err *err)
{
#if defined(__SANITIZE_THREAD__)
	(void)err;
	(void)helper;
	return 0; /* TSan's fork interceptor must see every fork: direct forks only */
#else
	pthread_mutex_lock(&fs_lock);
	if (fs_fd >= 0) {
		pthread_mutex_unlock(&fs_lock);
		return 0;
	}
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
		pthread_mutex_unlock(&fs_lock);
		return cx_err_set(err, errno, "sandbox fork server: socketpair");
	}
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		close(sp[0]);
		helper_child(helper, sp[1], parent);
	}
	close(sp[1]);
	if (pid < 0) {
		int e = errno;
		close(sp[0]);
		pthread_mutex_unlock(&fs_lock);
		return cx_err_set(err, e, "sandbox fork server: fork");
	}
	fs_fd = sp[0];
	fs_pid = pid;
	fs_owner = parent;
	pthread_mutex_unlock(&fs_lock);
	return 0;
#endif
}

static void stop_locked(void)
{
	if (fs_fd >= 0)
		close(fs_fd);
	fs_fd = -1;
	if (fs_pid > 0)
		while (waitpid(fs_pid, NULL, 0) < 0 && errno == EINTR)
			;
	fs_pid = -1;
}

void sandbox_forkserver_stop(void)
{
	pthread_mutex_lock(&fs_lock);
	if (getpid() != fs_owner) { /* a fork of the owner: not ours to reap */
		pthread_mutex_unlock(&fs_lock);
		return;
	}
	stop_locked();
	pthread_mutex_unlock(&fs_lock);
}

pid_t sandbox_forkserver_pid(void)
{
	pthread_mutex_lock(&fs_lock);
	pid_t p = fs_pid;
	pthread_mutex_unlock(&fs_lock);
	return p;
}

uint64_t sandbox_forkserver_spawned(void)
{
	pthread_mutex_lock(&fs_lock);
	uint64_t n = fs_spawned;
	pthread_mutex_unlock(&fs_lock);
	return n;
}

static int send_req(const fs_req *q, const int *fds)
{
	char cbuf[CMSG_SPACE(FS_NFDS * sizeof(int))];
	memset(cbuf, 0, sizeof cbuf);
	struct iovec iov = {(void *)q, sizeof *q};
	struct msghdr m = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(FS_NFDS * sizeof(int));
	memcpy(CMSG_DATA(c), fds, FS_NFDS * sizeof(int));
	ssize_t n;
	while ((n = sendmsg(fs_fd, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	return n == (ssize_t)sizeof *q ? 0 : -1;
}

int sbx_forkserver_spawn(const sandbox_opts *opts, const sbx_seccomp_prog *filter, pid_t parent,
			 int sync_child, int ctl_child, int root_fd, int parent_pidfd,
			 int lib_ctl_fd, const sbx_cgroup *cg, pid_t *out, int *out_mon_ctl_fd,
			 cx_err *err)
{
	pthread_mutex_lock(&fs_lock);
	bool have = fs_fd >= 0 && parent == fs_owner;
	pthread_mutex_unlock(&fs_lock);
	if (!have)
		return 0; /* no helper: the caller forks */
	fs_buf b = {0};
	put_opts(&b, opts, filter, cg);
	if (b.bad) {
		free(b.p);
		return cx_err_set(err, E2BIG, "sandbox fork server: options too large");
	}
	cleanup_close int blob = memfd_create("cortex-sandbox-opts", MFD_CLOEXEC);
	if (blob < 0 || write(blob, b.p, b.len) != (ssize_t)b.len) {
		int e = errno;
		free(b.p);
		return cx_err_set(err, e, "sandbox fork server: memfd");
	}
	free(b.p);
	/* Unused slots carry the blob's fd again: the helper closes what it got. */
	int fds[FS_NFDS] = {blob,
			    sync_child,
			    ctl_child,
			    parent_pidfd,
			    root_fd >= 0 ? root_fd : blob,
			    lib_ctl_fd >= 0 ? lib_ctl_fd : blob};
	fs_req q = {FS_MAGIC, (int32_t)parent, root_fd >= 0, lib_ctl_fd >= 0};

	pthread_mutex_lock(&fs_lock);
	if (fs_fd < 0 || parent != fs_owner) {
		/* No helper, or we are a fork of its owner (whose child a monitor
		 * made there would be): the caller forks. */
		pthread_mutex_unlock(&fs_lock);
		return 0;
	}
	if (send_req(&q, fds) < 0) {
		/* Nothing was made: the helper is gone.  Reap it; fork directly. */
		stop_locked();
		pthread_mutex_unlock(&fs_lock);
		return 0;
	}
	fs_reply reply = {-EPROTO, -1};
	struct pollfd p = {fs_fd, POLLIN, 0};
	int pr;
	while ((pr = poll(&p, 1, FS_REPLY_MS)) < 0 && errno == EINTR)
		;
	ssize_t n = pr > 0 ? recv(fs_fd, &reply, sizeof reply, 0) : -1;
	if (n != (ssize_t)sizeof reply) {
		/* The request may have made a monitor we cannot know of; it finds
		 * its sync socket closed and exits.  The helper is given up. */
		if (fs_pid > 0)
			kill(fs_pid, SIGKILL);
		stop_locked();
		pthread_mutex_unlock(&fs_lock);
		return cx_err_set(err, EPROTO, "sandbox fork server: no answer");
	}
	pthread_mutex_unlock(&fs_lock);
	if (reply.pid <= 0)
		return cx_err_set(err, reply.pid < 0 ? -reply.pid : EPROTO,
				  "sandbox fork server: clone monitor");
	if (lib_ctl_fd >= 0 && reply.mon_ctl_fd < 0)
		return cx_err_set(err, EPROTO, "sandbox fork server: no control fd number");
	*out = reply.pid;
	*out_mon_ctl_fd = reply.mon_ctl_fd;
	pthread_mutex_lock(&fs_lock);
	fs_spawned++;
	pthread_mutex_unlock(&fs_lock);
	return 1;
}
