/* init.c — PID 1 inside the sandbox.
 *
 * Builds the mounts, drops to the sandbox uid, loads the seccomp filter
 * (inherited by everything it forks), then serves the control socket:
 * EXEC forks a program in its own session, PING answers PONG.  As PID 1 it
 * reaps every orphan.  When the control socket reaches EOF (cortexd closed it
 * or died) init exits, and the kernel kills the whole pid namespace.
 *
 * Init always leaves with _exit(): atexit handlers (and LeakSanitizer's
 * ptrace-based checker, which the filter forbids) belong to the daemon.
 *
 * Init is a fork of the threaded daemon and never execs, so it must not use
 * malloc (or anything that does, like stdio or opendir): a lock another
 * thread held at the fork stays held here for good.  What it needs comes
 * ready from the daemon (the compiled filter) or is mapped once (scratch).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "sandbox-internal.h"

/* Init's working memory.  An exec request of n bytes holds at most n
 * strings, so argv and envp with their NULLs fit in strs. */
typedef struct init_scratch {
	char req[sizeof(sbx_ctl_hdr) + SBX_CTL_MAX_MSG]; /* one request */
	char *strs[SBX_CTL_MAX_MSG + 2];                 /* argv..., NULL, envp..., NULL */
	/* Programs started with an exit fd (sandbox_exec_opts.exit_fd). */
	struct {
		pid_t pid;
		int fd;
	} watch[SANDBOX_EXEC_MAX_WATCHED];
	int nwatch;
	struct pollfd pfd[2 + SANDBOX_EXEC_MAX_WATCHED];
	/* The stack of an EXEC child made with CLONE_VM | CLONE_VFORK (one at a
	 * time: init waits until it has exec'd or exited). */
	_Alignas(16) char child_stack[64 << 10];
} init_scratch;

typedef struct init_state {
	int ctl;     /* control socket (SOCK_SEQPACKET) */
	int sigfd;   /* signalfd for SIGCHLD */
	int devnull; /* /dev/null inside the sandbox, for absent stdio fds */
	init_scratch *scratch; /* mapped once, never freed */
} init_state;

/* What an exec'd child reports on its CLOEXEC pipe when it fails before or
 * at execve (nothing arrives when execve succeeds). */
typedef struct exec_failure {
	int stage; /* 0 setup, 1 chdir, 2 execve */
	int errnum;
} exec_failure;

static void reset_signals(void)
{
	/* The daemon may ignore SIGPIPE or block signals for its own threads;
	 * none of that belongs in the sandbox (both survive execve). */
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			signal(s, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

static int drop_privileges(const sandbox_opts *opts, cx_err *err)
{
	/* Empty the bounding set so nothing can regain a capability, even
	 * through a file capability on some binary. */
	for (int cap = 0; cap <= 63; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return cx_err_set(err, errno, "drop capability %d", cap);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return cx_err_set(err, errno, "clear ambient capabilities");
	if (setgroups(0, NULL) < 0)
		return cx_err_set(err, errno, "setgroups");
	if (setresgid(opts->gid, opts->gid, opts->gid) < 0)
		return cx_err_set(err, errno, "setgid %u", (unsigned)opts->gid);
	if (setresuid(opts->uid, opts->uid, opts->uid) < 0)
		return cx_err_set(err, errno, "setuid %u", (unsigned)opts->uid);
	if (getuid() != opts->uid || geteuid() != opts->uid)
		return cx_err_set(err, EPERM, "setuid %u: did not stick", (unsigned)opts->uid);
	/* Keep sandbox processes (same uid) out of /proc/1: init's fds are the
	 * channel to cortexd. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return cx_err_set(err, errno, "PR_SET_DUMPABLE");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return cx_err_set(err, errno, "PR_SET_NO_NEW_PRIVS");
	return 0;
}

/* Init is a fork of cortexd, so /proc/1/cmdline (readable by every process
 * inside, ptrace rules or not) would show cortexd's argv, and /proc/1/environ
 * its environment.  Point both at static bytes of init's own.  One
 * PR_SET_MM_MAP does it: unlike the single-field PR_SET_MM_ARG_START, it
 * needs no CAP_SYS_RESOURCE (which containers often lack) as long as the exe
 * link is left alone; the other fields are the current ones, read from
 * /proc/self/stat (and brk(0)).  The new strings live in an anonymous page
 * of their own: the kernel reads cmdline with FOLL_ANON, so bytes in a file
 * mapping (a static buffer in .data) would read as empty.  The daemon's
 * strings stay on init's stack, readable only through ptrace, which
 * non-dumpable init refuses. */
static const char init_cmdline[] = "cortex-init";

/* Field `want` (1-based, as in proc(5)) of /proc/self/stat as a number. */
static int stat_field(const char *buf, int want, uint64_t *out)
{
	const char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	p++;
	for (int field = 3; *p; field++) { /* fields after "(comm)" start at 3 */
		while (*p == ' ')
			p++;
		uint64_t v = 0;
		bool digits = false;
		for (; *p >= '0' && *p <= '9'; p++, digits = true)
			v = v * 10 + (uint64_t)(*p - '0');
		if (field == want) {
			*out = v;
			return digits ? 0 : -1;
		}
		while (*p && *p != ' ')
			p++;
	}
	return -1;
}

ssize_t sbx_read_proc(const char *path, char *buf, size_t cap, cx_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, "open %s", path);
	ssize_t n = read(fd, buf, cap - 1);
	close(fd);
	if (n <= 0)
		return cx_err_set(err, n < 0 ? errno : EIO, "read %s", path);
	buf[n] = '\0';
	return n;
}

static int set_cmdline(cx_err *err)
{
	char buf[1024];
	ssize_t n = sbx_read_proc("/proc/self/stat", buf, sizeof buf, err);
	if (n < 0)
		return -1;
	struct prctl_mm_map m;
	memset(&m, 0, sizeof m);
	const struct {
		int field;
		__u64 *dst;
	} f[] = {
		{26, &m.start_code}, {27, &m.end_code},	 {28, &m.start_stack},
		{45, &m.start_data}, {46, &m.end_data},	 {47, &m.start_brk},
	};
	for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
		uint64_t v;
		if (stat_field(buf, f[i].field, &v) < 0)
			return cx_err_set(err, EIO, "/proc/self/stat: no field %d", f[i].field);
		*f[i].dst = v;
	}
	/* "cortex-init\0" then an empty environment ("\0"); never unmapped. */
	char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		return cx_err_set(err, errno, "map a page for argv");
	memcpy(page, init_cmdline, sizeof init_cmdline);
	m.brk = (__u64)syscall(SYS_brk, 0);
	m.arg_start = (__u64)(uintptr_t)page;
	m.arg_end = m.arg_start + sizeof init_cmdline;
	m.env_start = m.arg_end;
	m.env_end = m.env_start + 1;
	m.exe_fd = (__u32)-1;
	if (prctl(PR_SET_MM, PR_SET_MM_MAP, (unsigned long)&m, sizeof m, 0) < 0)
		return cx_err_set(err, errno, "PR_SET_MM_MAP (argv of init)");
	if (prctl(PR_SET_NAME, (unsigned long)init_cmdline, 0, 0, 0) < 0)
		return cx_err_set(err, errno, "PR_SET_NAME");
	return 0;
}

/* A new network namespace has `lo` down: 127.0.0.1 would not even reach
 * itself.  Root inside the namespace (before the drop) sets IFF_UP; no
 * allocation (an AF_INET dgram socket and two ioctls). */
static int lo_up(cx_err *err)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return cx_err_set(err, errno, "socket for lo");
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	memcpy(ifr.ifr_name, "lo", 3);
	int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
	if (rc == 0 && !(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags = (short)(ifr.ifr_flags | IFF_UP);
		rc = ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	int e = errno;
	close(s);
	return rc < 0 ? cx_err_set(err, e, "bring lo up") : 0;
}

static int setup(const sandbox_opts *opts, const sbx_seccomp_prog *filter, int root_fd,
		 init_state *st, cx_err *err)
{
	if (sbx_mounts_setup(opts, root_fd, err) < 0)
		return -1;
	if (set_cmdline(err) < 0)
		return -1;
	char host[64];
	snprintf(host, sizeof host, "cortex-%.12s", opts->id);
	if (sethostname(host, strlen(host)) < 0)
		return cx_err_set(err, errno, "sethostname %s", host);
	if (opts->net_isolated && lo_up(err) < 0)
		return -1;

	st->devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (st->devnull < 0)
		return cx_err_set(err, errno, "open /dev/null");
	/* Init's own stdio came from the daemon (its log, maybe): not ours. */
	for (int fd = 0; fd < 3; fd++)
		if (dup2(st->devnull, fd) < 0)
			return cx_err_set(err, errno, "dup2 /dev/null");

	if (drop_privileges(opts, err) < 0)
		return -1;
	if (sbx_seccomp_install(filter, err) < 0)
		return -1;

	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0)
		return cx_err_set(err, errno, "block SIGCHLD");
	st->sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (st->sigfd < 0)
		return cx_err_set(err, errno, "signalfd");
	/* Pages are only touched as requests need them. */
	void *m = mmap(NULL, sizeof *st->scratch, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return cx_err_set(err, errno, "map %zu bytes of scratch", sizeof *st->scratch);
	st->scratch = m;
	return 0;
}

static void unwatch(const init_state *st, int i)
{
	init_scratch *sc = st->scratch;
	close(sc->watch[i].fd);
	sc->watch[i] = sc->watch[--sc->nwatch];
}

static void reap(const init_state *st)
{
	struct signalfd_siginfo si;
	while (read(st->sigfd, &si, sizeof si) > 0)
		;
	init_scratch *sc = st->scratch;
	pid_t pid;
	int status;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (int i = 0; i < sc->nwatch; i++) {
			if (sc->watch[i].pid != pid)
				continue;
			/* The program's group ends with it, then the caller hears of it. */
			kill(-pid, SIGKILL);
			int32_t v = status;
			(void)!write(sc->watch[i].fd, &v, sizeof v);
			unwatch(st, i);
			break;
		}
	}
}

/* The caller closed its end of an exit fd: the program's group is killed. */
static void watch_hangups(const init_state *st)
{
	init_scratch *sc = st->scratch;
	for (int i = sc->nwatch - 1; i >= 0; i--)
		if (sc->pfd[2 + i].revents & (POLLERR | POLLHUP | POLLNVAL)) {
			kill(-sc->watch[i].pid, SIGKILL);
			unwatch(st, i);
		}
}

static void reply(const init_state *st, uint32_t type, uint32_t seq, int code, pid_t pid,
		  const char *msg)
{
	struct {
		sbx_ctl_hdr h;
		char msg[512];
	} r;
	memset(&r, 0, sizeof r);
	r.h.type = type;
	r.h.seq = seq;
	r.h.code = code;
	r.h.pid = pid;
	size_t n = msg ? strnlen(msg, sizeof r.msg - 1) : 0;
	if (msg)
		memcpy(r.msg, msg, n);
	/* Nobody to tell if this fails: the next recv sees EOF and init exits. */
	(void)send(st->ctl, &r, sizeof r.h + n, MSG_NOSIGNAL);
}

/* In the child: never returns.  It may share init's memory (CLONE_VM, see
 * spawn_child): it writes only its own stack, never `in_slots`. */
__attribute__((noreturn)) static void exec_child(const init_state *st, int report,
						 const int in_slots[SBX_CTL_MAX_FDS], bool ctty,
						 const char *cwd, char **argv, char **envp)
{
	exec_failure f = {0, 0};
	int slots[SBX_CTL_MAX_FDS];
	memcpy(slots, in_slots, sizeof slots);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (setsid() < 0)
		goto fail;
	/* Move every passed fd above the slots first, so that dup2 into
	 * 0..SBX_CTL_MAX_FDS-1 cannot clobber one still to be placed.  The
	 * extra slots (3, 4, ...) are contiguous: serve_one checked. */
	int top = 3;
	for (int i = 0; i < SBX_CTL_MAX_FDS; i++) {
		int src = slots[i] >= 0 ? slots[i] : (i < 3 ? st->devnull : -1);
		slots[i] = src >= 0 ? fcntl(src, F_DUPFD_CLOEXEC, SBX_CTL_MAX_FDS + 8) : -1;
		if (src >= 0 && slots[i] < 0)
			goto fail;
		if (i >= 3 && slots[i] >= 0)
			top = i + 1;
	}
	for (int i = 0; i < SBX_CTL_MAX_FDS; i++)
		if (slots[i] >= 0 && dup2(slots[i], i) < 0)
			goto fail;
	if (ctty && ioctl(0, TIOCSCTTY, 0) < 0)
		goto fail;
	/* Everything else (including the report pipe) closes at execve. */
	if (close_range((unsigned)top, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
		goto fail;
	f.stage = 1;
	if (chdir(cwd) < 0)
		goto fail;
	f.stage = 2;
	execve(argv[0], argv, envp);
fail:
	f.errnum = errno;
	(void)!write(report, &f, sizeof f);
	_exit(127);
}

/* Splits payload into cwd, argv[argc], envp[envc] (NULL-terminated arrays,
 * pointing into payload).  The payload must be exactly those strings. */
static int parse_strings(char *payload, size_t len, const sbx_ctl_hdr *h, char **out_cwd,
			 char **argv, char **envp)
{
	size_t n = 1 + (size_t)h->argc + h->envc, i = 0, off = 0;
	while (i < n && off < len) {
		char *s = payload + off;
		size_t l = strnlen(s, len - off);
		if (l == len - off)
			return -1; /* unterminated */
		if (i == 0)
			*out_cwd = s;
		else if (i <= h->argc)
			argv[i - 1] = s;
		else
			envp[i - 1 - h->argc] = s;
		off += l + 1;
		i++;
	}
	if (i != n || off != len)
		return -1;
	argv[h->argc] = NULL;
	envp[h->envc] = NULL;
	return 0;
}

struct child_args {
	const init_state *st;
	int report;
	const int *slots;
	bool ctty;
	const char *cwd;
	char **argv, **envp;
};

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
static int child_entry(void *arg)
{
	const struct child_args *a = arg;
	exec_child(a->st, a->report, a->slots, a->ctty, a->cwd, a->argv, a->envp);
}
#endif

/* The EXEC child: clone(CLONE_VM | CLONE_VFORK) on the scratch stack, as
 * posix_spawn does -- init's page tables are not copied (init is a copy of
 * the daemon or of its fork server, with every library mapped) and init takes
 * no copy-on-write faults afterwards; init waits only until the execve.
 * Signals stay blocked across it (init's SIGCHLD is blocked for its signalfd
 * anyway); the child unblocks them.  Sanitizer builds fork (their runtimes
 * keep state in our memory). */
static pid_t spawn_child(const struct child_args *a)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	pid_t pid = sbx_fork(); /* as the monitor does: no atfork handlers */
	if (pid == 0)
		exec_child(a->st, a->report, a->slots, a->ctty, a->cwd, a->argv, a->envp);
	return pid;
#else
	sigset_t all, old;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	char *top = a->st->scratch->child_stack + sizeof a->st->scratch->child_stack;
	pid_t pid = clone(child_entry, top, CLONE_VM | CLONE_VFORK | SIGCHLD, (void *)a);
	int e = errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	errno = e;
	return pid;
#endif
}

static void reply_err(const init_state *st, uint32_t seq, const cx_err *e)
{
	reply(st, SBX_CTL_EXEC_ERR, seq, e->code, 0, e->msg);
}

static void handle_exec(const init_state *st, const sbx_ctl_hdr *h, char *payload, size_t len,
			int slots[SBX_CTL_MAX_FDS], int *exit_fd)
{
	cx_err e = CX_ERR_INIT;
	if (*exit_fd >= 0 && st->scratch->nwatch >= SANDBOX_EXEC_MAX_WATCHED) {
		reply(st, SBX_CTL_EXEC_ERR, h->seq, EAGAIN, 0, "exec: too many watched programs");
		return;
	}
	/* cwd, argv and envp are at least one byte each. */
	if (h->argc < 1 || (size_t)h->argc + h->envc + 1 > len) {
		reply(st, SBX_CTL_EXEC_ERR, h->seq, EINVAL, 0, "exec: bad argc/envc");
		return;
	}
	char **argv = st->scratch->strs, **envp = argv + h->argc + 1;
	char *cwd = NULL;
	if (parse_strings(payload, len, h, &cwd, argv, envp) < 0) {
		reply(st, SBX_CTL_EXEC_ERR, h->seq, EINVAL, 0, "exec: malformed request");
		return;
	}
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		cx_err_set(&e, errno, "exec: pipe");
		reply_err(st, h->seq, &e);
		return;
	}
	/* The child's copy of pipefd[0] closes at its execve (CLOEXEC). */
	struct child_args ca = {st, pipefd[1], slots, (h->flags & SBX_EXEC_CTTY) != 0, cwd, argv, envp};
	pid_t pid = spawn_child(&ca);
	int fork_errno = errno;
	close(pipefd[1]);
	if (pid < 0) {
		close(pipefd[0]);
		cx_err_set(&e, fork_errno, "exec %s: fork", argv[0]);
		reply_err(st, h->seq, &e);
		return;
	}
	/* EOF = execve succeeded (the pipe closed on exec); a record = failure.
	 * The failed child is reaped by the SIGCHLD handler later. */
	exec_failure f;
	ssize_t n;
	do
		n = read(pipefd[0], &f, sizeof f);
	while (n < 0 && errno == EINTR);
	close(pipefd[0]);
	if (n == (ssize_t)sizeof f) {
		static const char *const stage[] = {"setup", "chdir", "execve"};
		const char *what = f.stage == 1 ? cwd : argv[0];
		cx_err_set(&e, f.errnum, "%s %s", stage[f.stage % 3], what);
		reply_err(st, h->seq, &e);
		return;
	}
	if (*exit_fd >= 0) { /* init keeps it until the program exits */
		init_scratch *sc = st->scratch;
		sc->watch[sc->nwatch].pid = pid;
		sc->watch[sc->nwatch].fd = *exit_fd;
		sc->nwatch++;
		*exit_fd = -1;
	}
	reply(st, SBX_CTL_EXEC_OK, h->seq, 0, pid, NULL);
}

/* One request.  Returns -1 when the daemon is gone (EOF or a dead socket). */
static int serve_one(const init_state *st)
{
	char *buf = st->scratch->req;
	size_t cap = sizeof st->scratch->req;
	union {
		char b[CMSG_SPACE(sizeof(int) * SBX_CTL_MAX_PASS)];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = {buf, cap};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.b,
			    .msg_controllen = sizeof cbuf.b};
	ssize_t n = recvmsg(st->ctl, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -1;
	if (n == 0)
		return -1;

	int fds[SBX_CTL_MAX_PASS], nfds = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			if (nfds < SBX_CTL_MAX_PASS)
				fds[nfds++] = fd;
			else
				close(fd);
		}
	}

	sbx_ctl_hdr h;
	memset(&h, 0, sizeof h);
	if ((size_t)n >= sizeof h)
		memcpy(&h, buf, sizeof h);
	if ((size_t)n < sizeof h || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		reply(st, SBX_CTL_EXEC_ERR, h.seq, EINVAL, 0, "control: truncated request");
	} else if (h.type == SBX_CTL_PING) {
		reply(st, SBX_CTL_PONG, h.seq, 0, 0, NULL);
	} else if (h.type == SBX_CTL_EXEC && (h.flags & SBX_EXEC_EXIT_FD) && nfds < 1) {
		reply(st, SBX_CTL_EXEC_ERR, h.seq, EINVAL, 0, "exec: exit fd missing");
	} else if (h.type == SBX_CTL_EXEC) {
		/* Hand the received fds to their slots in fdmask order; the
		 * slots from 3 on must be contiguous (fd 3, 4, ... in order).
		 * The exit fd, if any, comes last. */
		int exit_fd = -1;
		if (h.flags & SBX_EXEC_EXIT_FD) {
			exit_fd = fds[--nfds];
			fcntl(exit_fd, F_SETFL, O_NONBLOCK);
		}
		int slots[SBX_CTL_MAX_FDS], used = 0;
		uint32_t extra = h.fdmask >> 3;
		for (int i = 0; i < SBX_CTL_MAX_FDS; i++) {
			slots[i] = -1;
			if ((h.fdmask & (1u << i)) && used < nfds)
				slots[i] = fds[used++];
		}
		if (used != nfds || (h.fdmask >> SBX_CTL_MAX_FDS) || (extra & (extra + 1)) ||
		    (unsigned)__builtin_popcount(h.fdmask) != (unsigned)nfds)
			reply(st, SBX_CTL_EXEC_ERR, h.seq, EINVAL, 0, "exec: fd count mismatch");
		else
			handle_exec(st, &h, buf + sizeof h, (size_t)n - sizeof h, slots, &exit_fd);
		if (exit_fd >= 0)
			close(exit_fd); /* not kept: the caller reads EOF */
	} else {
		reply(st, SBX_CTL_EXEC_ERR, h.seq, EINVAL, 0, "control: unknown request");
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	return 0;
}

void sbx_init_main(const sandbox_opts *opts, const sbx_seccomp_prog *filter, int sync_fd,
		   int ctl_fd, int root_fd)
{
	cx_err err = CX_ERR_INIT;
	init_state st = {ctl_fd, -1, -1, NULL};

	/* Die with the monitor (and so with cortexd).  getppid() is 0 here
	 * (the parent is outside our pid namespace), so a monitor that died
	 * before this line is caught by the library instead: it kills init
	 * when the sync exchange fails. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) {
		cx_err_set(&err, errno, "PR_SET_PDEATHSIG");
		sbx_child_fail(sync_fd, &err);
	}
	reset_signals();

	/* Wait until the library has put us into the cgroup: everything init
	 * forks must be accounted there. */
	int type = 0, code = 0;
	if (sbx_sync_recv(sync_fd, &type, &code, &err) < 0 || type != SBX_SYNC_GO)
		_exit(1);

	if (setup(opts, filter, root_fd, &st, &err) < 0)
		sbx_child_fail(sync_fd, &err);
	if (sbx_sync_send(sync_fd, SBX_SYNC_READY, 0, NULL) < 0)
		_exit(1);
	close(sync_fd);

	for (;;) {
		/* ctl, SIGCHLD, then every exit fd (no events asked: a hangup of
		 * the reader shows as POLLERR). */
		struct pollfd *p = st.scratch->pfd;
		p[0] = (struct pollfd){st.ctl, POLLIN, 0};
		p[1] = (struct pollfd){st.sigfd, POLLIN, 0};
		int nw = st.scratch->nwatch;
		for (int i = 0; i < nw; i++)
			p[2 + i] = (struct pollfd){st.scratch->watch[i].fd, 0, 0};
		if (poll(p, (nfds_t)(2 + nw), -1) < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		if (p[1].revents)
			reap(&st);
		else if (nw)
			watch_hangups(&st); /* after a reap the table moved: next round */
		if (p[0].revents && serve_one(&st) < 0)
			_exit(0); /* daemon gone: the kernel kills the pid namespace */
	}
}
