/* jobs.c — see jobs.h. */
#include "jobs.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

static int mkdir_owned(const char *path, uid_t uid, gid_t gid, cx_err *err)
{
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", path);
	if (chown(path, uid, gid) < 0)
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
			return cx_err_set(err, n < 0 ? errno : EPIPE, "ws-agent exited before it was ready (see %s)",
					  "run/ws-agent.log");
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
	char logp[4300];
	snprintf(logp, sizeof logp, "%s/run/ws-agent.log", j->dir);
	cleanup_close int logfd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (logfd < 0)
		return cx_err_set(err, errno, "open %s", logp);
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return cx_err_set(err, errno, "pipe");
	cleanup_close int rd = pfd[0];
	cleanup_close int wr = pfd[1];
	char ctx_timeout[32];
	snprintf(ctx_timeout, sizeof ctx_timeout, "%d", c->context_timeout_ms);
	const char *argv[] = {"/cortex/bin/ws-agent", "--socket", "/run/cortex/agent.sock", "--ready-fd", "3",
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
	eo.extra_fd = wr;
	if (sandbox_exec(j->sb, &j->wsa_pid, &eo, err) < 0)
		return cx_err_wrap(err, "start ws-agent");
	close(steal_fd(&wr)); /* only ws-agent holds the write end now: EOF = it died */
	return wait_ready(rd, c->ready_timeout_ms, err);
}

void job_prepare_run(void *arg)
{
	struct prepare_job *j = arg;
	uint64_t t0 = cx_mono_us();
	cx_err_clear(&j->err);
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
