/* jobs.c — see jobs.h. */
#include "jobs.h"
#include "egress.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <stdlib.h>
#include <unistd.h>

#include "imgstore.h"
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

int jobs_disk_lock(const char *dir, cx_err *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, "open %s", dir);
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			int e = errno;
			close(fd);
			return cx_err_set(err, e, "lock %s", dir);
		}
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
	cleanup_close int keep = jobs_private_dir(c, JOBS_KEEP_DIR, &err);
	snprintf(name, sizeof name, "%s.json", id); /* its sandbox is gone: no crash record */
	if (keep >= 0 && unlinkat(keep, name, 0) < 0 && errno != ENOENT)
		log_warn("session %s: remove %s/%s/%s: %s", id, c->data_dir, JOBS_KEEP_DIR, name, strerror(errno));
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
static int mkdir_owned(const char *path, uid_t uid, gid_t gid, unsigned mode, cx_err *err)
{
	if (mkdir(path, mode) < 0 && errno != EEXIST)
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

/* ---- the session's disk and dirs ---- */

static int mkdir_in(const char *base, const char *name, unsigned mode, uid_t uid, cx_err *err)
{
	char p[4300];
	snprintf(p, sizeof p, "%s/%s", base, name);
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", p);
	return mkdir_owned(p, uid, uid, mode, err);
}

/* The dirs at a session disk's root, in its template already (root's: home,
 * workspace and run are handed to the session below, as on a disk made
 * before templates held them).  A new fresh disk's mkdirs were each a block
 * allocation on a just-mounted ext4 (its bitmaps scanned and prefetched). */
static const sandbox_disk_dir disk_dirs[] = {
    {"home", 0755}, {"workspace", 0755}, {"run", 0755}, {"upper", 0755}, {"work", 0700}, {"stage", 0711},
};

/* The session dir (root's, 0711: the clone helper, running as the session's
 * uid, must pass through to disk/stage; nothing in it can be listed) and its
 * disk, mounted at disk/ with home, workspace, run owned by the session. */
static int make_dirs(const struct prepare_job *j, cx_err *err)
{
	const config *c = j->cfg;
	char p[4200], mnt[4200];
	if (mkdir(j->dir, 0711) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", j->dir);
	if (chmod(j->dir, 0711) < 0)
		return cx_err_set(err, errno, "chmod %s", j->dir);
	snprintf(p, sizeof p, "%s/" JOBS_DISK_IMG, j->dir);
	snprintf(mnt, sizeof mnt, "%s/" JOBS_DISK_DIR, j->dir);
	/* Under the disk's lock from here: every attacher of it (the files
	 * route too) takes it, so a disk made below is attached with no other
	 * attach in between and no scan for a loop device backing it. */
	cleanup_close int lock = jobs_disk_lock(j->dir, err);
	if (lock < 0)
		return cx_err_wrap(err, "the session's disk");
	bool fresh = false;
	/* A new disk is a copy of an empty one (jobs.h: JOBS_DISK_TEMPLATES),
	 * not an mke2fs run each time. */
	if (access(p, F_OK) < 0 && errno == ENOENT) {
		char tpl[4200];
		cleanup_close int tfd = jobs_private_dir(c, JOBS_DISK_TEMPLATES, err);
		if (tfd < 0)
			return cx_err_wrap(err, "the session's disk");
		snprintf(tpl, sizeof tpl, "%s/" JOBS_DISK_TEMPLATES, c->data_dir);
		cx_err e = CX_ERR_INIT;
		if (sandbox_disk_make_from_template(p, j->disk_mb, tpl, disk_dirs, sizeof disk_dirs / sizeof *disk_dirs,
						    &e) < 0 &&
		    e.code != EEXIST) {
			*err = e;
			return cx_err_wrap(err, "the session's disk");
		}
		fresh = e.code != EEXIST;
	}
	if ((fresh ? sandbox_disk_attach_new(p, mnt, err) : sandbox_disk_attach(p, j->disk_mb, mnt, err)) < 0)
		return cx_err_wrap(err, "the session's disk");
	if (chmod(mnt, 0711) < 0)
		return cx_err_set(err, errno, "chmod %s", mnt);
	/* Made where the disk predates the template's dirs; the first three the session's. */
	for (size_t i = 0; i < sizeof disk_dirs / sizeof *disk_dirs; i++)
		if (mkdir_in(mnt, disk_dirs[i].name, disk_dirs[i].mode, i < 3 ? j->uid : 0, err) < 0)
			return -1;
	/* Host-root mode: the root is a tmpfs mounted on this empty dir. */
	snprintf(p, sizeof p, "%s/rootfs", c->data_dir);
	if (mkdir(p, 0755) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", p);
	return 0;
}

/* Is there an executable at rel (no leading /) in any layer (top first)? */
static int layers_have(char *const *lower, const char *rel)
{
	for (size_t i = 0; lower && lower[i]; i++) {
		char p[4300];
		struct stat st;
		snprintf(p, sizeof p, "%s/%s", lower[i], rel);
		if (lstat(p, &st) == 0)
			return S_ISREG(st.st_mode) && (st.st_mode & 0111);
	}
	return 0;
}

/* Does any layer (top first) have rel (no leading /) as a dir? */
static int layers_have_dir(char *const *lower, const char *rel)
{
	for (size_t i = 0; lower && lower[i]; i++) {
		char p[4300];
		struct stat st;
		snprintf(p, sizeof p, "%s/%s", lower[i], rel);
		if (lstat(p, &st) == 0)
			return S_ISDIR(st.st_mode);
	}
	return 0;
}

/* An image's WorkingDir that none of its layers has is made in the
 * session's upper (as a container runtime makes the cwd), owned by the
 * session.  The upper is the sandbox's to write: each component is made or
 * opened with no link followed. */
static int make_workdir(const char *upper, const char *path, uid_t uid, cx_err *err)
{
	cleanup_close int fd = open(upper, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, "open the root's upper");
	char buf[1024];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *save = NULL, *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (!strcmp(c, ".") || !strcmp(c, ".."))
			return cx_err_set(err, EINVAL, "WorkingDir %s", path);
		int made = mkdirat(fd, c, 0755) == 0;
		if (!made && errno != EEXIST)
			return cx_err_set(err, errno, "make WorkingDir %s", path);
		int next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0)
			return cx_err_set(err, errno, "make WorkingDir %s (a link or a file is in the way)", path);
		close(fd);
		fd = next;
		if (made && fchown(fd, uid, uid) < 0)
			return cx_err_set(err, errno, "chown WorkingDir %s", path);
	}
	return 0;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/* Pin the image and take what the sandbox and the agent need from it:
 * its layers (top first, for overlay), Env, WorkingDir, and whether it
 * brings the agent. */
static int use_image(struct prepare_job *j, char ***lower_out, cx_err *err)
{
	struct image_info *ii = NULL;
	if (!j->images)
		return cx_err_set(err, ENOENT, "no image store");
	if (imgstore_pin(j->images, j->image, &ii, err) < 0) {
		j->image_missing = err->code == ENOENT;
		return j->image_missing ? cx_err_set(err, ENOENT,
						     "image '%s' is not in the store (build it: POST /v1/images/%s/build)",
						     j->image, j->image)
					: cx_err_wrap(err, "image %s", j->image);
	}
	char **lower = calloc(ii->n_layers + 1, sizeof *lower);
	for (size_t i = 0; lower && i < ii->n_layers; i++)
		if (!(lower[i] = strdup(ii->layers[ii->n_layers - 1 - i])))
			break;
	if (!lower || (ii->n_layers && !lower[ii->n_layers - 1])) {
		strv_free(lower);
		image_info_free(ii);
		imgstore_unpin(j->images, j->image);
		return cx_err_set(err, ENOMEM, "image %s", j->image);
	}
	j->env = json_object();
	for (char **e = ii->env; e && *e && j->env; e++) {
		const char *eq = strchr(*e, '=');
		if (eq && eq > *e) {
			char k[256];
			snprintf(k, sizeof k, "%.*s", (int)(eq - *e), *e);
			json_object_set_new(j->env, k, json_string(eq + 1));
		}
	}
	if (ii->workdir[0] == '/' && strcmp(ii->workdir, "/")) {
		char upper[4300];
		snprintf(upper, sizeof upper, "%s/" JOBS_DISK_DIR "/upper", j->dir);
		if (!layers_have_dir(lower, ii->workdir + 1) && make_workdir(upper, ii->workdir, j->uid, err) < 0) {
			strv_free(lower);
			image_info_free(ii);
			imgstore_unpin(j->images, j->image);
			return -1;
		}
		snprintf(j->cwd, sizeof j->cwd, "%s", ii->workdir);
	}
	/* The configured agent, unless it is the default and the image has its own. */
	if (!j->cfg->agent_command_set && layers_have(lower, "usr/local/bin/claude"))
		snprintf(j->agent_cmd, sizeof j->agent_cmd, "/usr/local/bin/claude");
	else if (!j->cfg->agent_command_set && layers_have(lower, "usr/bin/claude"))
		snprintf(j->agent_cmd, sizeof j->agent_cmd, "/usr/bin/claude");
	image_info_free(ii);
	*lower_out = lower;
	return 0;
}

static int create_sandbox(struct prepare_job *j, cx_err *err)
{
	const config *c = j->cfg;
	char home[4300], ws[4300], run[4300], upper[4300], work[4300], rootm[4200], rt[4300], agent[4300],
		trust[4300];
	snprintf(home, sizeof home, "%s/" JOBS_DISK_DIR "/home", j->dir);
	snprintf(ws, sizeof ws, "%s/" JOBS_DISK_DIR "/workspace", j->dir);
	snprintf(run, sizeof run, "%s/" JOBS_DISK_DIR "/run", j->dir);
	snprintf(upper, sizeof upper, "%s/" JOBS_DISK_DIR "/upper", j->dir);
	snprintf(work, sizeof work, "%s/" JOBS_DISK_DIR "/work", j->dir);
	snprintf(rootm, sizeof rootm, "%s/rootfs", c->data_dir);
	int host = !strcmp(j->image, "host");
	snprintf(j->agent_cmd, sizeof j->agent_cmd, "%s", c->agent_command);
	snprintf(j->cwd, sizeof j->cwd, "/workspace");
	char **lower = NULL;
	if (!host && use_image(j, &lower, err) < 0)
		return -1;
	int rc = -1;
	sandbox_bind binds[3];
	size_t nb = 0;
	if (jobs_runtime_mount(c, "rt", rt, sizeof rt, err) < 0)
		goto out;
	binds[nb++] = (sandbox_bind){rt, "/cortex/rt"};
	/* The agent package: bound when the agent runs from it. */
	if (c->agent_dir[0] && !strncmp(j->agent_cmd, "/cortex/agent/", 14)) {
		if (host) {
			snprintf(agent, sizeof agent, "%s", c->agent_dir);
		} else if (jobs_runtime_mount(c, "agent", agent, sizeof agent, err) < 0) {
			goto out;
		}
		binds[nb++] = (sandbox_bind){agent, "/cortex/agent"};
	}
	/* The egress proxy's CA, for brokered hosts (server.c writes the files;
	 * a runtime disk of them, so mountinfo names no host path). */
	if (j->egress && egress_ca_pem()) {
		if (jobs_runtime_mount(c, "trust", trust, sizeof trust, err) < 0)
			goto out;
		binds[nb++] = (sandbox_bind){trust, EGRESS_TRUST_MOUNT};
	}
	const char *hide[] = {c->data_dir, NULL};
	sandbox_opts o = SANDBOX_OPTS_INIT;
	o.id = j->id;
	o.root_mount = rootm;
	o.home_dir = home;
	o.workspace_dir = ws;
	o.run_dir = run;
	o.hide = host ? hide : NULL;
	o.lower_dirs = (const char *const *)lower;
	o.upper_dir = host ? NULL : upper;
	o.work_dir = host ? NULL : work;
	o.binds = binds;
	o.n_binds = nb;
	o.uid = j->uid;
	o.gid = j->uid;
	o.memory_max = j->memory_mb << 20;
	o.pids_max = j->pids;
	o.cpu_weight = j->cpu_weight;
	o.cpu_max_millicpu = j->cpu_max_milli;
	o.mount_dir = SYNC_MOUNT_DIR; /* MCP packages are attached here at run time */
	o.net_isolated = c->sandbox_net_isolated;
	o.keep_grace_s = c->keep_on_crash ? c->keep_on_crash_grace_s : 0; /* a crash keeps it */
	if (sandbox_create(&j->sb, &o, err) < 0) {
		cx_err_wrap(err, "sandbox");
		goto out;
	}
	rc = 0;
out:
	strv_free(lower);
	if (rc < 0 && !host)
		imgstore_unpin(j->images, j->image);
	return rc;
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
	char hold_ms[32]; /* sessions.keep_on_crash: a dropped link is a detach */
	snprintf(hold_ms, sizeof hold_ms, "%u", c->keep_on_crash ? c->keep_on_crash_grace_s * 1000u : 0u);
	/* ws-agent runs with its own loader and libraries (ws-agent/bundle.sh),
	 * or is static: nothing of the image's /lib is needed. */
	/* In its own network namespace the agent reaches the gateway through
	 * ws-agent: an O_PATH fd (fd 5) of the gateway's socket in the root-only
	 * sock dir, connected through /proc/self/fd/5 (no path followed). */
	/* The egress proxy the same way: fd 6, served at 127.0.0.1:<egress port>. */
	cleanup_close int gwfd = -1;
	cleanup_close int egfd = -1;
	char gw_port[16], eg_port[16];
	snprintf(gw_port, sizeof gw_port, "%d", j->gateway_port);
	snprintf(eg_port, sizeof eg_port, "%d", c->egress_port);
	if (c->sandbox_net_isolated && j->gateway_port > 0) {
		cleanup_close int dfd = jobs_private_dir(c, JOBS_SOCK_DIR, err);
		if (dfd < 0)
			return -1;
		gwfd = openat(dfd, JOBS_GATEWAY_SOCK, O_PATH | O_CLOEXEC | O_NOFOLLOW);
		if (gwfd < 0)
			return cx_err_set(err, errno, "open %s/%s/%s", c->data_dir, JOBS_SOCK_DIR,
					  JOBS_GATEWAY_SOCK);
		if (j->egress && (egfd = openat(dfd, EGRESS_SOCK, O_PATH | O_CLOEXEC | O_NOFOLLOW)) < 0)
			return cx_err_set(err, errno, "open %s/%s/%s", c->data_dir, JOBS_SOCK_DIR, EGRESS_SOCK);
	}
	const char *argv[] = {"/cortex/rt/lib/ld.so", "--library-path", "/cortex/rt/lib", "/cortex/rt/ws-agent",
			      "--listen-fd", "4", "--ready-fd", "3",
			      "--context", "/tmp/vf-pending-query.json", "--context-timeout-ms", ctx_timeout,
			      "--hold-on-drop", hold_ms,
			      gwfd >= 0 ? "--gateway-fd" : NULL, "5", "--gateway-port", gw_port,
			      egfd >= 0 ? "--egress-fd" : NULL, "6", "--egress-port", eg_port, NULL};
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
	const int extra[] = {wr, lfd, gwfd, egfd}; /* fd 3, fd 4, fd 5, fd 6 */
	eo.extra_fds = extra;
	eo.n_extra_fds = egfd >= 0 ? 4 : gwfd >= 0 ? 3 : 2;
	if (c->ws_agent_static)
		eo.argv = argv + 3; /* no loader: /cortex/rt/ws-agent itself */
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

void jobs_detach_disk(const char *dir, const char *id)
{
	char mnt[4200];
	cx_err err = CX_ERR_INIT;
	snprintf(mnt, sizeof mnt, "%s/" JOBS_DISK_DIR, dir);
	cleanup_close int lock = jobs_disk_lock(dir, &err); /* -1: no dir, nothing mounted there */
	if (lock >= 0 && sandbox_disk_detach(mnt, &err) < 0)
		log_warn("session %s: detach its disk: %s", id, err.msg);
}

void job_prepare_run(void *arg)
{
	struct prepare_job *j = arg;
	uint64_t t0 = cx_mono_us();
	cx_err_clear(&j->err);
	if (j->old) { /* what is left of a broken sandbox goes first */
		sandbox_destroy(j->old);
		j->old = NULL;
		if (j->old_pinned)
			imgstore_unpin(j->images, j->image);
	}
	if (j->submit_us)
		j->queued_ms = (double)(t0 - j->submit_us) / 1000.0;
	int rc = make_dirs(j, &j->err);
	uint64_t t1 = cx_mono_us();
	j->disk_ms = (double)(t1 - t0) / 1000.0;
	if (rc == 0)
		rc = create_sandbox(j, &j->err);
	uint64_t t2 = cx_mono_us();
	j->sandbox_ms = (double)(t2 - t1) / 1000.0;
	if (rc == 0)
		rc = start_ws_agent(j, &j->err);
	j->wsagent_ms = (double)(cx_mono_us() - t2) / 1000.0;
	if (rc < 0) {
		if (j->sb) {
			sandbox_destroy(j->sb);
			j->sb = NULL;
			if (strcmp(j->image, "host"))
				imgstore_unpin(j->images, j->image);
		}
		jobs_detach_disk(j->dir, j->id);
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
	if (j->images && j->image[0])
		imgstore_unpin(j->images, j->image);
	jobs_remove_session_files(j->cfg, j->id, j->remove_dir);
	/* Nothing runs on the disk any more: it comes off the host until the
	 * next wake (a re-attach costs well under a millisecond to a few). */
	jobs_detach_disk(j->dir, j->id);
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
