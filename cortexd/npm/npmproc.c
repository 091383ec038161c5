/* npmproc.c — the processes the npm cache runs: `node --version` once, and
 * `npm install` as the npm uid in its own process group.
 *
 * npm gets a small environment, not the daemon's (which holds API keys):
 * PATH, locale, proxy and CA settings, every npm_config_* variable, and
 * HOME / npm_config_cache pointing into ROOT.  Shutdown aborts a running npm
 * through the stop pipe. */
#include "npm-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "log.h"

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

static void reap(pid_t pid, int *status)
{
	while (waitpid(pid, status, 0) < 0 && errno == EINTR)
		;
}

/* ---- node --version ---- */

static int spawn_node_version(int out_w, pid_t *pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, out_w, 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	posix_spawnattr_init(&attr);
	sigset_t none, dfl;
	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &dfl);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
					    POSIX_SPAWN_SETPGROUP);
	char a0[] = "node", a1[] = "--version", path[PATH_MAX + 8];
	const char *p = getenv("PATH");
	snprintf(path, sizeof path, "PATH=%s", p ? p : "/usr/local/bin:/usr/bin:/bin");
	char *argv[] = {a0, a1, NULL}, *envp[] = {path, NULL};
	int rc = posix_spawnp(pid, "node", &fa, &attr, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	return rc;
}

int npm_proc_node_major(void)
{
	int out[2];
	if (pipe2(out, O_CLOEXEC) < 0) {
		log_warn("npm cache: pipe: %s; node major taken as 0", strerror(errno));
		return 0;
	}
	pid_t pid;
	int rc = spawn_node_version(out[1], &pid);
	close(out[1]);
	if (rc) {
		close(out[0]);
		log_warn("npm cache: cannot run node (%s); node major taken as 0", strerror(rc));
		return 0;
	}
	char buf[64];
	size_t len = 0;
	uint64_t deadline = cx_mono_ms() + NODE_VERSION_WAIT_MS;
	for (;;) {
		uint64_t now = cx_mono_ms();
		struct pollfd pfd = {out[0], POLLIN, 0};
		int n = now < deadline ? poll(&pfd, 1, (int)(deadline - now)) : 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			kill(-pid, SIGKILL);
			break;
		}
		ssize_t r = read(out[0], buf + len, sizeof buf - 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
		if (len == sizeof buf - 1)
			break;
	}
	close(out[0]);
	buf[len] = '\0';
	int status = 0;
	reap(pid, &status);
	char *end = NULL;
	long major = buf[0] == 'v' ? strtol(buf + 1, &end, 10) : 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) || major <= 0 || major > 10000 ||
	    *end != '.') {
		log_warn("npm cache: `node --version` said \"%.20s\"; node major taken as 0", buf);
		return 0;
	}
	return (int)major;
}

/* ---- npm's environment ---- */

static int env_add(char **envp, size_t *n, const char *name, const char *val)
{
	if (*n + 1 >= ENV_MAX)
		return 0; /* the fixed variables come first; extra npm_config_* are dropped */
	size_t len = strlen(name) + strlen(val) + 2;
	char *s = malloc(len);
	if (!s)
		return -1;
	snprintf(s, len, "%s=%s", name, val);
	envp[(*n)++] = s;
	return 0;
}

void npm_proc_env_free(char **envp)
{
	if (envp)
		for (char **p = envp; *p; p++)
			free(*p);
	free(envp);
}

/* The daemon's npm_config_* variables, except those set here. */
static int env_add_npm_config(char **envp, size_t *n)
{
	static const char *const ours[] = {"npm_config_cache", "npm_config_update_notifier",
					   "npm_config_color", "npm_config_prefix"};
	extern char **environ;
	int rc = 0;
	for (char **e = environ; e && *e; e++) {
		const char *eq = strchr(*e, '=');
		if (!eq || strncasecmp(*e, "npm_config_", 11))
			continue;
		int skip = 0;
		for (size_t i = 0; i < sizeof ours / sizeof *ours; i++)
			skip |= strlen(ours[i]) == (size_t)(eq - *e) &&
				!strncasecmp(*e, ours[i], (size_t)(eq - *e));
		if (!skip && *n + 1 < ENV_MAX) {
			char *s = strdup(*e);
			if (!s)
				rc = -1;
			else
				envp[(*n)++] = s;
		}
	}
	return rc;
}

int npm_proc_env(const struct npm_conf *c, char ***out, cx_err *err)
{
	static const char *const pass[] = {
	    "LANG",	    "LC_ALL",	   "http_proxy", "https_proxy",		"no_proxy",
	    "HTTP_PROXY",   "HTTPS_PROXY", "NO_PROXY",	 "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE",
	    "SSL_CERT_DIR",
	};
	char **envp = calloc(ENV_MAX, sizeof *envp);
	size_t n = 0;
	if (!envp)
		return cx_err_set(err, ENOMEM, "npm cache");
	char home[ROOT_MAX + 16], cache[ROOT_MAX + 16];
	snprintf(home, sizeof home, "%s/.home", c->root);
	snprintf(cache, sizeof cache, "%s/.npm", c->root);
	int rc = env_add(envp, &n, "PATH", c->path_env);
	rc |= env_add(envp, &n, "HOME", home);
	rc |= env_add(envp, &n, "npm_config_cache", cache);
	rc |= env_add(envp, &n, "npm_config_update_notifier", "false");
	rc |= env_add(envp, &n, "npm_config_color", "false");
	for (size_t i = 0; i < sizeof pass / sizeof *pass; i++) {
		const char *v = getenv(pass[i]);
		if (v)
			rc |= env_add(envp, &n, pass[i], v);
	}
	rc |= env_add_npm_config(envp, &n);
	if (rc < 0) {
		npm_proc_env_free(envp);
		return cx_err_set(err, ENOMEM, "npm cache");
	}
	*out = envp;
	return 0;
}

/* ---- npm install ---- */

struct child_plan {
	const char *path, *cwd;
	char **argv, **envp;
	int devnull, out, report;
	int drop;
	uid_t uid;
	gid_t gid;
};

enum { STAGE_SETUP, STAGE_IDS, STAGE_CHDIR, STAGE_EXEC };
struct child_failure {
	int stage, errnum;
};

/* In the forked child of a threaded process: async-signal-safe calls only.
 * Never returns. */
__attribute__((noreturn)) static void npm_child(const struct child_plan *p)
{
	struct child_failure f = {STAGE_SETUP, 0};
	int report = p->report;
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	for (int s = 1; s < NSIG; s++)
		(void)sigaction(s, &dfl, NULL); /* ignored signals stay ignored across exec */
	if (setpgid(0, 0) < 0)
		goto fail;
	/* Above 9 first, so that placing 0..2 cannot clobber one still needed
	 * (a daemon started with a std fd closed gets pipes there). */
	int in = fcntl(p->devnull, F_DUPFD_CLOEXEC, 10), out = fcntl(p->out, F_DUPFD_CLOEXEC, 10);
	int rep = fcntl(p->report, F_DUPFD_CLOEXEC, 10);
	if (in < 0 || out < 0 || rep < 0)
		goto fail;
	report = rep;
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
		goto fail;
	/* Whatever another module left open without O_CLOEXEC closes at exec too. */
	(void)close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
	umask(022); /* every sandbox reads the package */
	f.stage = STAGE_IDS;
	if (p->drop && (setgroups(0, NULL) < 0 || setgid(p->gid) < 0 || setuid(p->uid) < 0))
		goto fail;
	f.stage = STAGE_CHDIR; /* after the drop: fails if the uid cannot reach ROOT */
	if (chdir(p->cwd) < 0)
		goto fail;
	f.stage = STAGE_EXEC;
	execve(p->path, p->argv, p->envp);
fail:
	f.errnum = errno;
	(void)!write(report, &f, sizeof f);
	_exit(127);
}

/* npm's path: as given when it has a '/', else the first executable on PATH. */
static int resolve_npm(const struct npm_conf *c, char out[PATH_MAX], cx_err *err)
{
	char found[PATH_MAX];
	if (strchr(c->npm, '/')) {
		snprintf(found, sizeof found, "%s", c->npm);
		goto absolute;
	}
	for (const char *p = c->path_env; *p;) {
		size_t len = strcspn(p, ":");
		if (len && len + strlen(c->npm) + 2 <= sizeof found) {
			snprintf(found, sizeof found, "%.*s/%s", (int)len, p, c->npm);
			struct stat sb;
			if (stat(found, &sb) == 0 && S_ISREG(sb.st_mode) &&
			    access(found, X_OK) == 0)
				goto absolute;
		}
		p += len;
		if (*p == ':')
			p++;
	}
	return cx_err_set(err, ENOENT, "%s not found on PATH (%.200s)", c->npm, c->path_env);
absolute:
	/* the child changes directory before exec: a relative path would miss */
	if (found[0] == '/') {
		memcpy(out, found, sizeof found);
		return 0;
	}
	if (!realpath(found, out))
		return cx_err_set(err, errno, "%s", found);
	return 0;
}

/* Keep the last NPM_TAIL_MAX bytes of the output. */
static void tail_add(struct npm_tail *t, const char *buf, size_t n)
{
	if (n >= NPM_TAIL_MAX) {
		memcpy(t->buf, buf + n - NPM_TAIL_MAX, NPM_TAIL_MAX);
		t->len = NPM_TAIL_MAX;
		return;
	}
	if (t->len + n > NPM_TAIL_MAX) {
		size_t drop = t->len + n - NPM_TAIL_MAX;
		memmove(t->buf, t->buf + drop, t->len - drop);
		t->len -= drop;
	}
	memcpy(t->buf + t->len, buf, n);
	t->len += n;
}

static int read_output(int fd, struct npm_tail *t)
{
	char buf[4096];
	ssize_t r = read(fd, buf, sizeof buf);
	if (r < 0)
		return errno == EINTR || errno == EAGAIN ? 1 : 0;
	tail_add(t, buf, (size_t)r);
	return r > 0;
}

const char *npm_proc_tail_text(struct npm_tail *t)
{
	size_t len = t->len;
	char *tail = t->buf;
	tail[len] = '\0';
	for (size_t i = 0; i < len; i++)
		if (tail[i] == '\0')
			tail[i] = ' ';
	while (len && (tail[len - 1] == '\n' || tail[len - 1] == ' ' || tail[len - 1] == '\r'))
		tail[--len] = '\0';
	const char *s = tail;
	if (len == NPM_TAIL_MAX) {
		const char *nl = strchr(s, '\n');
		if (nl && nl[1])
			s = nl + 1;
	}
	return s;
}

/* Fork the child of plan.  0 and *pid once it has exec'd; -1 (err set, child
 * reaped into *status) when it could not get there. */
static int npm_spawn(const struct npm_conf *c, struct child_plan *plan, int rep_r, int *rep_w,
		     int *out_w, pid_t *pid, int *status, int *spawned, cx_err *err)
{
	*pid = fork();
	if (*pid < 0)
		return cx_err_set(err, errno, "fork");
	if (*pid == 0)
		npm_child(plan);
	*spawned = 1;
	close(steal_fd(out_w));
	close(steal_fd(rep_w));
	/* EOF: exec went through (the pipe closed on exec); a record: it did not. */
	struct child_failure f;
	ssize_t n;
	do
		n = read(rep_r, &f, sizeof f);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof f)
		return 0;
	reap(*pid, status);
	switch (f.stage) {
	case STAGE_IDS:
		return cx_err_set(err, f.errnum, "switching to uid %u gid %u", (unsigned)c->uid,
				  (unsigned)c->gid);
	case STAGE_CHDIR:
		return cx_err_set(err, f.errnum, "chdir %s as uid %u", plan->cwd, (unsigned)c->uid);
	case STAGE_EXEC:
		return cx_err_set(err, f.errnum, "exec %s", plan->path);
	default:
		return cx_err_set(err, f.errnum, "setting up the npm process");
	}
}

/* Collect npm's output until it exits (0, reaped into *status), or until the
 * timeout or a shutdown (-1: its group killed and reaped, err set). */
static int npm_wait(const struct npm_conf *c, pid_t pid, int *out_r, struct npm_tail *tail,
		    int *status, cx_err *err)
{
	cleanup_close int pidfd = pidfd_open(pid, 0);
	if (pidfd < 0) {
		int e = errno;
		kill(-pid, SIGKILL);
		reap(pid, status);
		return cx_err_set(err, e, "pidfd_open");
	}
	uint64_t deadline = cx_mono_ms() + NPM_TIMEOUT_S * 1000u;
	const char *stop_why = NULL;
	for (;;) {
		struct pollfd pfd[3] = {
		    {*out_r, POLLIN, 0}, {pidfd, POLLIN, 0}, {c->stop_pipe[0], POLLIN, 0}};
		uint64_t now = cx_mono_ms();
		int k = now < deadline ? poll(pfd, 3, (int)(deadline - now)) : 0;
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			stop_why = "poll failed";
			break;
		}
		if (k == 0) {
			stop_why = "timed out after " STRINGIFY(NPM_TIMEOUT_S) " s";
			break;
		}
		if (pfd[2].revents) {
			stop_why = "aborted: npm cache shutting down";
			break;
		}
		if (pfd[0].revents && !read_output(*out_r, tail))
			close(steal_fd(out_r)); /* EOF: poll ignores fd -1 from now on */
		if (pfd[1].revents) {
			/* npm exited (a zombie keeps its group): end what it left running,
			 * take what is left of the output, then reap. */
			kill(-pid, SIGKILL);
			uint64_t drain_until = cx_mono_ms() + 1000;
			while (*out_r >= 0 && cx_mono_ms() < drain_until) {
				struct pollfd o = {*out_r, POLLIN, 0};
				if (poll(&o, 1, 100) > 0 && !read_output(*out_r, tail))
					close(steal_fd(out_r));
			}
			reap(pid, status);
			return 0;
		}
	}
	kill(-pid, SIGKILL);
	reap(pid, status);
	return cx_err_set(err, 0, "%s", stop_why);
}

int npm_proc_install(const struct npm_conf *c, const char *spec, const char *dir,
		     struct npm_tail *tail, int *status, int *spawned, cx_err *err)
{
	char npm[PATH_MAX];
	if (resolve_npm(c, npm, err) < 0)
		return -1;
	char prefix[] = "--prefix", a_install[] = "install", a_is[] = "--ignore-scripts",
	     a_na[] = "--no-audit", a_nf[] = "--no-fund", a_od[] = "--omit=dev",
	     a_nl[] = "--no-package-lock", a_ll[] = "--loglevel=warn";
	char a_spec[NPM_NAME_MAX + NPM_VERSION_MAX + 2], a_dir[PATH_MAX];
	snprintf(a_spec, sizeof a_spec, "%s", spec);
	snprintf(a_dir, sizeof a_dir, "%s", dir);
	char *argv[] = {npm,  a_install, prefix, a_dir, a_is,	a_na,
			a_nf, a_od,	 a_nl,	 a_ll,	a_spec, NULL};

	cleanup_close int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	int out[2] = {-1, -1}, report[2] = {-1, -1};
	if (devnull < 0)
		return cx_err_set(err, errno, "open /dev/null");
	if (pipe2(out, O_CLOEXEC) < 0)
		return cx_err_set(err, errno, "pipe");
	cleanup_close int out_r = out[0], out_w = out[1];
	if (pipe2(report, O_CLOEXEC) < 0)
		return cx_err_set(err, errno, "pipe");
	cleanup_close int rep_r = report[0], rep_w = report[1];

	struct child_plan plan = {.path = npm,
				  .cwd = dir,
				  .argv = argv,
				  .envp = c->envp,
				  .devnull = devnull,
				  .out = out_w,
				  .report = rep_w,
				  .drop = c->drop_ids,
				  .uid = c->uid,
				  .gid = c->gid};
	pid_t pid;
	if (npm_spawn(c, &plan, rep_r, &rep_w, &out_w, &pid, status, spawned, err) < 0)
		return -1;
	return npm_wait(c, pid, &out_r, tail, status, err);
}
