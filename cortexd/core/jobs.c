/* jobs.c — see jobs.h. */
#include "jobs.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

int jobs_private_dir(const config *c, const char *sub, cx_err *err)
{
	char p[4200];
	snprintf(p, sizeof p, "%s/%s", c->data_dir, sub);
	if (mkdir(p, 0700) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", p);
	int fd = open(p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, "open %s", p);
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_uid != geteuid() || (st.st_mode & 077)) {
		close(fd);
		return cx_err_set(err, EPERM, "%s must be a dir of uid %u, mode 0700", p, (unsigned)geteuid());
	}
	return fd;
}

/* A session id names files in the root-only dirs: one plain component. */
static int id_ok(const char *id)
{
	size_t n = strlen(id);
	return n > 0 && n < 40 && strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

void jobs_remove_session_files(const config *c, const char *id, int the_log)
{
	char name[64];
	cx_err err = CX_ERR_INIT;
	if (!id_ok(id))
		return;
	cleanup_close int sock = jobs_private_dir(c, JOBS_SOCK_DIR, &err);
	snprintf(name, sizeof name, "%s.sock", id);
	if (sock >= 0 && unlinkat(sock, name, 0) < 0 && errno != ENOENT)
		log_warn("session %s: remove %s/%s/%s: %s", id, c->data_dir, JOBS_SOCK_DIR, name, strerror(errno));
	if (!the_log)
		return;
	cleanup_close int logs = jobs_private_dir(c, JOBS_LOG_DIR, &err);
	snprintf(name, sizeof name, "%s.ws-agent.log", id);
	if (logs >= 0 && unlinkat(logs, name, 0) < 0 && errno != ENOENT)
		log_warn("session %s: remove %s/%s/%s: %s", id, c->data_dir, JOBS_LOG_DIR, name, strerror(errno));
}

/* The session's listening socket, DATA/sock/<id>.sock, bound by us (root) in
 * a dir only root reaches.  A stale one goes first.  sun_path is 108 bytes,
 * the data dir may be deeper: bind through /proc/self/fd/<dirfd>/. */
static int listen_socket(const struct prepare_job *j, cx_err *err)
{
	cleanup_close int dfd = jobs_private_dir(j->cfg, JOBS_SOCK_DIR, err);
	if (dfd < 0)
		return -1;
	char name[64];
	snprintf(name, sizeof name, "%s.sock", j->id);
	if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
		return cx_err_set(err, errno, "remove stale %s/%s/%s", j->cfg->data_dir, JOBS_SOCK_DIR, name);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if ((size_t)snprintf(a.sun_path, sizeof a.sun_path, "/proc/self/fd/%d/%s", dfd, name) >= sizeof a.sun_path)
		return cx_err_set(err, ENAMETOOLONG, "socket name %s", name);
	cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return cx_err_set(err, errno, "socket");
	if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0)
		return cx_err_set(err, errno, "listen on %s/%s/%s", j->cfg->data_dir, JOBS_SOCK_DIR, name);
	return steal_fd(&fd);
}

/* ws-agent's log, DATA/logs/<id>.ws-agent.log: a root-only dir, and still
 * opened as if it were not (no link followed, no FIFO waited on, a regular
 * file with one name only). */
static int open_log(const struct prepare_job *j, cx_err *err)
{
	cleanup_close int dfd = jobs_private_dir(j->cfg, JOBS_LOG_DIR, err);
	if (dfd < 0)
		return -1;
	char name[64];
	snprintf(name, sizeof name, "%s.ws-agent.log", j->id);
	cleanup_close int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return cx_err_set(err, errno, "open %s/%s/%s", j->cfg->data_dir, JOBS_LOG_DIR, name);
	if (!S_ISREG(st.st_mode) || st.st_nlink != 1)
		return cx_err_set(err, EPERM, "%s/%s/%s is not a plain file", j->cfg->data_dir, JOBS_LOG_DIR, name);
	return steal_fd(&fd);
}

/* A session's home, workspace or run dir, handed to the sandbox uid.  The
 * session dir holding them is root's (0700) and never bound into a sandbox,
 * so nothing inside can rename them; still, the chown goes through a fd
 * opened without following a link, onto a dir and nothing else. */
static int mkdir_owned(const char *path, uid_t uid, gid_t gid, cx_err *err)
{
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", path);
	cleanup_close int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, "open %s (a dir, not a link)", path);
	if (fchown(fd, uid, gid) < 0)
		return cx_err_set(err, errno, "chown %s", path);
	return 0;
}

/* Wait for ws-agent's "ready\n" on the pipe, bounded: readiness is signalled,
 * never slept on. */
static int wait_ready(int fd, int timeout_ms, cx_err *err)
{
	uint64_t deadline = cx_mono_ms() + (uint64_t)timeout_ms;
	char buf[16];
	size_t got = 0;
	for (;;) {
		uint64_t now = cx_mono_ms();
		if (now >= deadline)
			return cx_err_set(err, ETIMEDOUT, "ws-agent not ready after %d ms", timeout_ms);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, (int)(deadline - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return cx_err_set(err, errno, "poll ready pipe");
		if (r == 0)
			continue;
		ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return cx_err_set(err, n < 0 ? errno : EPIPE, "ws-agent exited before it was ready");
		got += (size_t)n;
		buf[got] = '\0';
		if (strchr(buf, '\n'))
			return strncmp(buf, "ready", 5) ? cx_err_set(err, EPROTO, "ws-agent said '%s'", buf) : 0;
		if (got >= sizeof buf - 1)
			return cx_err_set(err, EPROTO, "ws-agent readiness line too long");
	}
}

static int make_dirs(const struct prepare_job *j, cx_err *err)
{
	const config *c = j->cfg;
	char p[4200];
	if (mkdir(j->dir, 0700) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", j->dir);
	static const char *const sub[] = {"home", "workspace", "run"};
	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof p, "%s/%s", j->dir, sub[i]);
		if (mkdir_owned(p, c->sandbox_uid, c->sandbox_gid, err) < 0)
			return -1;
	}
	/* The session dir itself is traversable by nobody else; the sandbox
	 * reaches its dirs through bind mounts, not this path. */
	snprintf(p, sizeof p, "%s/rootfs", c->data_dir);
	if (mkdir(p, 0755) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", p);
	return 0;
}

static int create_sandbox(struct prepare_job *j, cx_err *err)
{
	const config *c = j->cfg;
	char home[4200], ws[4200], run[4200], rootm[4200];
	snprintf(home, sizeof home, "%s/home", j->dir);
	snprintf(ws, sizeof ws, "%s/workspace", j->dir);
	snprintf(run, sizeof run, "%s/run", j->dir);
	snprintf(rootm, sizeof rootm, "%s/rootfs", c->data_dir);
	const char *hide[] = {c->data_dir, NULL};
	sandbox_bind binds[2] = {
		{c->ws_agent_path, "/cortex/bin/ws-agent"},
		{c->agent_dir, "/cortex/agent"},
	};
	sandbox_opts o = SANDBOX_OPTS_INIT;
	o.id = j->id;
	o.root_mount = rootm;
	o.home_dir = home;
	o.workspace_dir = ws;
	o.run_dir = run;
	o.hide = hide;
	o.binds = binds;
	o.n_binds = c->agent_dir[0] ? 2 : 1;
	o.uid = c->sandbox_uid;
	o.gid = c->sandbox_gid;
	o.memory_max = c->sandbox_memory_max;
	o.pids_max = c->sandbox_pids_max;
	o.mount_dir = SYNC_MOUNT_DIR; /* MCP packages are attached here at run time */
	if (sandbox_create(&j->sb, &o, err) < 0)
		return cx_err_wrap(err, "sandbox");
	return 0;
}

static int start_ws_agent(struct prepare_job *j, cx_err *err)
{
	const config *c = j->cfg;
	if (!id_ok(j->id)) /* it names our files below */
		return cx_err_set(err, EINVAL, "bad session id '%s'", j->id);
	cleanup_close int logfd = open_log(j, err);
	if (logfd < 0)
		return -1;
	cleanup_close int lfd = listen_socket(j, err);
	if (lfd < 0)
		return -1;
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return cx_err_set(err, errno, "pipe");
	cleanup_close int rd = pfd[0];
	cleanup_close int wr = pfd[1];
	char ctx_timeout[32];
	snprintf(ctx_timeout, sizeof ctx_timeout, "%d", c->context_timeout_ms);
	const char *argv[] = {"/cortex/bin/ws-agent", "--listen-fd", "4", "--ready-fd", "3",
			      "--context", "/tmp/vf-pending-query.json", "--context-timeout-ms", ctx_timeout, NULL};
	/* Sanitizer runtimes in test builds: leak checking needs ptrace, which the
	 * sandbox's filter forbids, so it is off inside. */
	const char *envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/home/agent", "LANG=C.UTF-8",
			      "ASAN_OPTIONS=detect_leaks=0", "TSAN_OPTIONS=halt_on_error=1", NULL};
	sandbox_exec_opts eo = SANDBOX_EXEC_OPTS_INIT;
	eo.argv = argv;
	eo.envp = envp;
	eo.cwd = "/workspace";
	eo.stdout_fd = logfd;
	eo.stderr_fd = logfd;
	const int extra[] = {wr, lfd}; /* fd 3, fd 4 */
	eo.extra_fds = extra;
	eo.n_extra_fds = 2;
	if (sandbox_exec(j->sb, &j->wsa_pid, &eo, err) < 0)
		return cx_err_wrap(err, "start ws-agent");
	close(steal_fd(&wr)); /* only ws-agent holds the write end now: EOF = it died */
	/* Nor do we keep the listening socket: once ws-agent is gone, a connect
	 * is refused at once instead of waiting in a backlog nobody accepts. */
	close(steal_fd(&lfd));
	if (wait_ready(rd, c->ready_timeout_ms, err) < 0)
		return cx_err_wrap(err, "ws-agent (its log: %s/%s/%s.ws-agent.log)", c->data_dir, JOBS_LOG_DIR, j->id);
	return 0;
}

void job_prepare_run(void *arg)
{
	struct prepare_job *j = arg;
	uint64_t t0 = cx_mono_us();
	cx_err_clear(&j->err);
	if (j->old) { /* what is left of a broken sandbox goes first */
		sandbox_destroy(j->old);
		j->old = NULL;
	}
	if (make_dirs(j, &j->err) < 0 || create_sandbox(j, &j->err) < 0 || start_ws_agent(j, &j->err) < 0) {
		if (j->sb) {
			sandbox_destroy(j->sb);
			j->sb = NULL;
		}
		return;
	}
	j->ms = (double)(cx_mono_us() - t0) / 1000.0;
}

void job_stop_run(void *arg)
{
	struct stop_job *j = arg;
	if (j->sb)
		sandbox_destroy(j->sb);
	j->sb = NULL;
	jobs_remove_session_files(j->cfg, j->id, j->remove_dir);
	/* Every process of the sandbox is dead (stop waited for its cgroup to
	 * empty): nothing can plant a link meanwhile, and nftw(FTW_PHYS) removes
	 * a symlink, never what it points to. */
	if (j->remove_dir)
		cx_rm_rf(j->dir);
}

void job_freeze_run(void *arg)
{
	struct freeze_job *j = arg;
	j->rc = sandbox_freeze(j->sb, 1, &j->err);
}

void job_sync_run(void *arg)
{
	struct sync_job *j = arg;
	(void)sync_apply(j->sb, j->cfg, &j->state, j->parallel, j->wsa_pid, &j->r);
}
