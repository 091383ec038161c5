/* npmcache.c — see npmcache.h.
 *
 * State: one static `g`, owned by the service thread (the installed
 * packages, the installs queued or running, the counters).  An install is a
 * `struct install` that goes queued -> running (its own pthread) -> done:
 * the thread's last act is work_submit(NULL, install_done, in), which brings
 * it back to the service thread, where the waiters hear the result.  The
 * install thread touches only its own struct, the settings fixed at init
 * (root, npm, uid/gid, environment, stop pipe) and the store (thread-safe).
 *
 * On disk (ROOT is root-owned, 0755):
 *   ROOT/<key>/           complete packages, one per store row "npm/<key>"
 *   ROOT/.tmp-<key>-<r>/  an install under way, or a package being evicted
 *                         (.tmp-evict-...); removed at init if left by a crash
 *   ROOT/.npm, ROOT/.home npm's cache and HOME, owned by the npm uid; an
 *                         operator may put registry settings in ROOT/.home/.npmrc
 * Once installed, a package's files are chowned to the daemon's uid, so the
 * npm uid can no longer change what every sandbox runs.
 *
 * npm gets a small environment, not the daemon's (which holds API keys):
 * PATH, locale, proxy and CA settings, every npm_config_* variable, and
 * HOME / npm_config_cache pointing into ROOT.
 *
 * Shutdown drops the callbacks of installs that have not finished (the
 * daemon is going away; their args may already be gone) and aborts running
 * npm processes through the stop pipe.  Call it before work_stop(): the
 * last work_drain_done() frees what the aborted installs leave behind.
 */
#include "npmcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <jansson.h>
#include <limits.h>
#include <linux/openat2.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "log.h"
#include "work.h"

#define NPM_TIMEOUT_S	     300	   /* one npm install, then its process group is killed */
#define NPM_TAIL_MAX	     4096	   /* bytes of npm's output kept for the error */
#define PKG_JSON_MAX	     (1024 * 1024) /* package.json larger than this is refused */
#define ROOT_MAX	     3000 /* leaves room under PATH_MAX for <key>/node_modules/<name>/... */
#define NODE_VERSION_WAIT_MS 10000
#define ENV_MAX		     64 /* variables handed to npm */
#define ROW_PREFIX	     "npm/"
#define STRINGIFY_(x)	     #x
#define STRINGIFY(x)	     STRINGIFY_(x)

struct waiter {
	npm_ready_fn cb;
	void *arg;
	struct waiter *next;
};

/* An installed package. */
struct entry {
	npm_pkg pkg;
	json_t *bins; /* {"bin":"rel/path"}, owned */
	int node_major;
	int pins;
	int writing; /* a row write is on a worker: not evictable until it lands */
	int dirty;   /* changed since that write was made: write again when it lands */
	struct entry *next;
};

struct install {
	/* set before the thread starts, then read-only */
	char key[65];
	char name[NPM_NAME_MAX + 1];
	char version[NPM_VERSION_MAX + 1];
	int node_major;
	unsigned gen;
	/* service thread only */
	struct waiter *waiters, **waiters_tail;
	struct install *next;
	pthread_t thread;
	/* written by the install thread, read in install_done after work_submit */
	int ok, spawned;
	struct entry *result; /* ok: the new package, owned */
	char msg[NPM_TAIL_MAX + 512];
};

static struct {
	int initialized;
	store *st; /* not owned */
	char root[ROOT_MAX + 1];
	char npm[PATH_MAX];
	char *path_env; /* PATH for finding npm, owned */
	char **envp;	/* npm's environment, owned */
	uid_t uid;
	gid_t gid;
	int drop_ids; /* npm runs as another uid/gid than the daemon */
	uint64_t budget;
	int stop_pipe[2]; /* shutdown writes one byte; install threads poll the read end */
	struct entry *pkgs;
	struct install *running;
	struct install *queued, **queued_tail;
	unsigned nrunning;
	uint64_t bytes;
} g = {.stop_pipe = {-1, -1}};

static unsigned gen;	     /* bumped at every init: results of an older one are dropped */
static npmcache_stats stats; /* counters are "ever, this process"; bytes is g.bytes */
static int node_major = -1;  /* from `node --version`, read once */

/* ---- small helpers ---- */

static void key_of(const char *name, const char *version, int major, char out[65])
{
	char buf[NPM_NAME_MAX + NPM_VERSION_MAX + 32];
	int n = snprintf(buf, sizeof buf, "%s@%s%cnode%d", name, version, '\0', major);
	unsigned char h[crypto_hash_sha256_BYTES];
	crypto_hash_sha256(h, (const unsigned char *)buf, (unsigned long long)n);
	sodium_bin2hex(out, 65, h, sizeof h);
}

static int is_key(const char *s)
{
	size_t i = 0;
	for (; s[i]; i++)
		if (i >= 64 || !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return i == 64;
}

static const char *unscoped(const char *name)
{
	const char *slash = name[0] == '@' ? strchr(name, '/') : NULL;
	return slash ? slash + 1 : name;
}

static struct entry *find_entry(const char *key)
{
	for (struct entry *e = g.pkgs; e; e = e->next)
		if (!strcmp(e->pkg.key, key))
			return e;
	return NULL;
}

static struct install *find_install(const char *key)
{
	for (struct install *in = g.running; in; in = in->next)
		if (!strcmp(in->key, key))
			return in;
	for (struct install *in = g.queued; in; in = in->next)
		if (!strcmp(in->key, key))
			return in;
	return NULL;
}

static void entry_free(struct entry *e)
{
	if (e) {
		json_decref(e->bins);
		free(e);
	}
}

static void install_free(struct install *in)
{
	while (in->waiters) {
		struct waiter *w = in->waiters;
		in->waiters = w->next;
		free(w);
	}
	entry_free(in->result);
	free(in);
}


static void rm_job(void *arg)
{
	char *path = arg;
	if (cx_rm_rf(path) < 0)
		log_warn("npm cache: removing %s: %s", path, strerror(errno));
	free(path);
}

/* Rename dir out of the way (a half-removed tree never keeps its key name),
 * then remove it: now (sync) or on a worker. */
static int retire_dir(const char *dir, const char *key, int sync, cx_err *err)
{
	char rnd[17], aside[ROOT_MAX + 100];
	cx_random_hex(rnd, 8);
	snprintf(aside, sizeof aside, "%s/.tmp-evict-%s-%s", g.root, key, rnd);
	if (rename(dir, aside) < 0)
		return cx_err_set(err, errno, "rename %s", dir);
	char *copy = sync ? NULL : strdup(aside);
	if (copy)
		work_submit(rm_job, NULL, copy);
	else if (cx_rm_rf(aside) < 0)
		log_warn("npm cache: removing %s: %s", aside, strerror(errno));
	return 0;
}

/* The main bin: the only one, else the one named like the unscoped package
 * name, else the first. */
static void pick_main_bin(json_t *bins, const char *name, char out[128])
{
	out[0] = '\0';
	const char *first = NULL, *key;
	json_t *v;
	json_object_foreach(bins, key, v)
	{
		if (!first)
			first = key;
		if (!strcmp(key, unscoped(name))) {
			snprintf(out, 128, "%s", key);
			return;
		}
	}
	if (first)
		snprintf(out, 128, "%s", first);
}

static int bin_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (!n || n >= 128 || s[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.' || c == '~' || c == '+' || c == '@'))
			return 0;
	}
	return 1;
}

/* A bin's file: relative, inside the package. */
static int bin_path_ok(const char *s)
{
	size_t n = strlen(s);
	if (!n || n >= 1024 || s[0] == '/')
		return 0;
	for (const char *p = s; *p;) {
		size_t len = strcspn(p, "/");
		if (len == 2 && p[0] == '.' && p[1] == '.')
			return 0;
		p += len;
		while (*p == '/')
			p++;
	}
	return 1;
}

/* "bin" of a package.json -> {"name":"path"}: a string names the unscoped
 * package; names or paths npm would not link are left out. */
static json_t *bins_from_package(json_t *pj, const char *name)
{
	json_t *out = json_object(), *bin = json_object_get(pj, "bin");
	if (!out)
		return NULL;
	if (json_is_string(bin)) {
		if (bin_name_ok(unscoped(name)) && bin_path_ok(json_string_value(bin)))
			json_object_set(out, unscoped(name), bin);
	} else if (json_is_object(bin)) {
		const char *k;
		json_t *v;
		json_object_foreach(bin, k, v)
		{
			if (json_is_string(v) && bin_name_ok(k) &&
			    bin_path_ok(json_string_value(v)))
				json_object_set(out, k, v);
			else
				log_warn("npm: %s: ignoring bin \"%.100s\"", name, k);
		}
	}
	return out;
}

static char *row_dump(const struct entry *e)
{
	json_t *o = json_pack("{s:s,s:s,s:i,s:I,s:I,s:I,s:O}", "name", e->pkg.name, "version",
			      e->pkg.version, "node_major", e->node_major, "bytes",
			      (json_int_t)e->pkg.bytes, "use_count", (json_int_t)e->pkg.use_count,
			      "last_used_at", (json_int_t)e->pkg.last_used_at, "bins", e->bins);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return s;
}

static int row_put(store *st, const struct entry *e, cx_err *err)
{
	cleanup_free char *val = row_dump(e);
	if (!val)
		return cx_err_set(err, ENOMEM, "npm cache: encoding row");
	char rowkey[sizeof ROW_PREFIX + 64];
	snprintf(rowkey, sizeof rowkey, ROW_PREFIX "%s", e->pkg.key);
	return store_put(st, rowkey, val, strlen(val), err);
}

/* ---- node major ---- */

static int detect_node_major(void)
{
	int out[2];
	if (pipe2(out, O_CLOEXEC) < 0) {
		log_warn("npm cache: pipe: %s; node major taken as 0", strerror(errno));
		return 0;
	}
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
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
	pid_t pid;
	int rc = posix_spawnp(&pid, "node", &fa, &attr, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
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
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	char *end = NULL;
	long major = buf[0] == 'v' ? strtol(buf + 1, &end, 10) : 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) || major <= 0 || major > 10000 ||
	    *end != '.') {
		log_warn("npm cache: `node --version` said \"%.20s\"; node major taken as 0", buf);
		return 0;
	}
	return (int)major;
}

int npmcache_node_major(void)
{
	if (node_major < 0)
		node_major = detect_node_major();
	return node_major;
}

/* ---- running npm (install thread) ---- */

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
static int resolve_npm(char out[PATH_MAX], cx_err *err)
{
	char found[PATH_MAX];
	if (strchr(g.npm, '/')) {
		snprintf(found, sizeof found, "%s", g.npm);
		goto absolute;
	}
	for (const char *p = g.path_env; *p;) {
		size_t len = strcspn(p, ":");
		if (len && len + strlen(g.npm) + 2 <= sizeof found) {
			snprintf(found, sizeof found, "%.*s/%s", (int)len, p, g.npm);
			struct stat sb;
			if (stat(found, &sb) == 0 && S_ISREG(sb.st_mode) &&
			    access(found, X_OK) == 0)
				goto absolute;
		}
		p += len;
		if (*p == ':')
			p++;
	}
	return cx_err_set(err, ENOENT, "%s not found on PATH (%.200s)", g.npm, g.path_env);
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
static void tail_add(char *tail, size_t *len, const char *buf, size_t n)
{
	if (n >= NPM_TAIL_MAX) {
		memcpy(tail, buf + n - NPM_TAIL_MAX, NPM_TAIL_MAX);
		*len = NPM_TAIL_MAX;
		return;
	}
	if (*len + n > NPM_TAIL_MAX) {
		size_t drop = *len + n - NPM_TAIL_MAX;
		memmove(tail, tail + drop, *len - drop);
		*len -= drop;
	}
	memcpy(tail + *len, buf, n);
	*len += n;
}

static int read_output(int fd, char *tail, size_t *tail_len)
{
	char buf[4096];
	ssize_t r = read(fd, buf, sizeof buf);
	if (r < 0)
		return errno == EINTR || errno == EAGAIN ? 1 : 0;
	tail_add(tail, tail_len, buf, (size_t)r);
	return r > 0;
}

static void reap(pid_t pid, int *status)
{
	while (waitpid(pid, status, 0) < 0 && errno == EINTR)
		;
}

/* Run npm install into tmp.  0: npm exited and *status says how (its output
 * in tail); -1: could not start, timed out or shutting down (err set). */
static int npm_run(const struct install *in, const char *tmp, char *tail, size_t *tail_len,
		   int *status, int *spawned, cx_err *err)
{
	char npm[PATH_MAX];
	if (resolve_npm(npm, err) < 0)
		return -1;
	char prefix[] = "--prefix", a_install[] = "install", a_is[] = "--ignore-scripts",
	     a_na[] = "--no-audit", a_nf[] = "--no-fund", a_od[] = "--omit=dev",
	     a_nl[] = "--no-package-lock", a_ll[] = "--loglevel=warn";
	char spec[NPM_NAME_MAX + NPM_VERSION_MAX + 2], dir[PATH_MAX];
	snprintf(spec, sizeof spec, "%s@%s", in->name, in->version);
	snprintf(dir, sizeof dir, "%s", tmp);
	char *argv[] = {npm,  a_install, prefix, dir,  a_is, a_na,
			a_nf, a_od,	 a_nl,	 a_ll, spec, NULL};

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
				  .cwd = tmp,
				  .argv = argv,
				  .envp = g.envp,
				  .devnull = devnull,
				  .out = out_w,
				  .report = rep_w,
				  .drop = g.drop_ids,
				  .uid = g.uid,
				  .gid = g.gid};
	pid_t pid = fork();
	if (pid < 0)
		return cx_err_set(err, errno, "fork");
	if (pid == 0)
		npm_child(&plan);
	*spawned = 1;
	close(steal_fd(&out_w));
	close(steal_fd(&rep_w));
	/* EOF: exec went through (the pipe closed on exec); a record: it did not. */
	struct child_failure f;
	ssize_t n;
	do
		n = read(rep_r, &f, sizeof f);
	while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof f) {
		reap(pid, status);
		switch (f.stage) {
		case STAGE_IDS:
			return cx_err_set(err, f.errnum, "switching to uid %u gid %u",
					  (unsigned)g.uid, (unsigned)g.gid);
		case STAGE_CHDIR:
			return cx_err_set(err, f.errnum, "chdir %s as uid %u", tmp,
					  (unsigned)g.uid);
		case STAGE_EXEC:
			return cx_err_set(err, f.errnum, "exec %s", npm);
		default:
			return cx_err_set(err, f.errnum, "setting up the npm process");
		}
	}

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
		    {out_r, POLLIN, 0}, {pidfd, POLLIN, 0}, {g.stop_pipe[0], POLLIN, 0}};
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
		if (pfd[0].revents && !read_output(out_r, tail, tail_len)) {
			close(steal_fd(&out_r)); /* EOF: poll ignores fd -1 from now on */
		}
		if (pfd[1].revents) {
			/* npm exited (a zombie keeps its group): end what it left running,
			 * take what is left of the output, then reap. */
			kill(-pid, SIGKILL);
			uint64_t drain_until = cx_mono_ms() + 1000;
			while (out_r >= 0 && cx_mono_ms() < drain_until) {
				struct pollfd o = {out_r, POLLIN, 0};
				if (poll(&o, 1, 100) > 0 && !read_output(out_r, tail, tail_len))
					close(steal_fd(&out_r));
			}
			reap(pid, status);
			return 0;
		}
	}
	kill(-pid, SIGKILL);
	reap(pid, status);
	return cx_err_set(err, 0, "%s", stop_why);
}

/* The output's tail as text for a message: from a line start, no trailing space. */
static const char *tail_text(char *tail, size_t len)
{
	tail[len] = '\0';
	for (size_t i = 0; i < len; i++)
		if (tail[i] == '\0')
			tail[i] = ' ';
	while (len && (tail[len - 1] == '\n' || tail[len - 1] == ' ' || tail[len - 1] == '\r'))
		tail[--len] = '\0';
	const char *t = tail;
	if (len == NPM_TAIL_MAX) {
		const char *nl = strchr(t, '\n');
		if (nl && nl[1])
			t = nl + 1;
	}
	return t;
}

/* package.json of the installed package, without following links: 0 and *out, or -1. */
static int read_package_json(const char *tmp, const char *name, json_t **out, cx_err *err)
{
	cleanup_close int dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return cx_err_set(err, errno, "open %s", tmp);
	char rel[NPM_NAME_MAX + 64];
	snprintf(rel, sizeof rel, "node_modules/%s/package.json", name);
	struct open_how how = {
	    .flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	cleanup_close int fd = (int)syscall(SYS_openat2, dfd, rel, &how, sizeof how);
	if (fd < 0)
		return cx_err_set(err, errno, "npm left no %s", rel);
	struct stat sb;
	if (fstat(fd, &sb) < 0)
		return cx_err_set(err, errno, "stat %s", rel);
	if (!S_ISREG(sb.st_mode) || sb.st_size > PKG_JSON_MAX)
		return cx_err_set(err, 0, "%s: not a regular file of at most %d bytes", rel,
				  PKG_JSON_MAX);
	size_t cap = (size_t)sb.st_size + 1; /* one more: a file that grew is refused */
	cleanup_free char *buf = malloc(cap);
	if (!buf)
		return cx_err_set(err, ENOMEM, "reading %s", rel);
	size_t len = 0;
	for (;;) {
		ssize_t r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return cx_err_set(err, errno, "read %s", rel);
		if (r == 0)
			break;
		len += (size_t)r;
		if (len == cap)
			return cx_err_set(err, 0, "%s changed while read", rel);
	}
	json_error_t jerr;
	json_t *pj = json_loadb(buf, len, 0, &jerr);
	if (!pj)
		return cx_err_set(err, 0, "%s: line %d: %s", rel, jerr.line, jerr.text);
	if (!json_is_object(pj)) {
		json_decref(pj);
		return cx_err_set(err, 0, "%s: not a JSON object", rel);
	}
	*out = pj;
	return 0;
}

/* Walk of the installed tree: bytes on disk, and ownership taken from the npm
 * uid.  nftw has no user pointer; these are per install thread. */
static __thread uint64_t walk_bytes;
static __thread int walk_chown, walk_errno;

static int walk_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)ftw;
	if (flag == FTW_NS || flag == FTW_DNR) {
		walk_errno = EACCES;
		return -1;
	}
	walk_bytes += (uint64_t)sb->st_blocks * 512u;
	if (walk_chown && lchown(p, geteuid(), getegid()) < 0) {
		walk_errno = errno;
		return -1;
	}
	return 0;
}

static int walk_tree(const char *dir, uint64_t *bytes, cx_err *err)
{
	walk_bytes = 0;
	walk_errno = 0;
	walk_chown = g.drop_ids;
	/* pre-order: a directory changes owner before we look inside it */
	if (nftw(dir, walk_one, 16, FTW_PHYS | FTW_MOUNT) != 0)
		return cx_err_set(err, walk_errno ? walk_errno : errno, "walking %s", dir);
	*bytes = walk_bytes;
	return 0;
}

/* Move tmp to ROOT/<key>.  A dir already under that name is not in the
 * table (else we would not be installing): a leftover, set aside. */
static int move_into_place(const char *tmp, const char *dir, const char *key, cx_err *err)
{
	if (rename(tmp, dir) == 0)
		return 0;
	if (errno != EEXIST && errno != ENOTEMPTY)
		return cx_err_set(err, errno, "rename %s to %s", tmp, dir);
	log_warn("npm cache: %s exists without a row; replacing it", dir);
	if (retire_dir(dir, key, 1, err) < 0)
		return -1;
	if (rename(tmp, dir) < 0)
		return cx_err_set(err, errno, "rename %s to %s", tmp, dir);
	return 0;
}

static int install_into(struct install *in, const char *tmp, cx_err *err)
{
	if (chown(tmp, g.uid, g.gid) < 0)
		return cx_err_set(err, errno, "chown %s", tmp);
	char tail[NPM_TAIL_MAX + 1];
	size_t tail_len = 0;
	int status = 0;
	if (npm_run(in, tmp, tail, &tail_len, &status, &in->spawned, err) < 0) {
		cx_err_wrap(err, "npm install %s@%s", in->name, in->version);
		if (tail_len) /* the caller's cx_err holds 512 bytes; in->msg the whole tail */
			snprintf(in->msg, sizeof in->msg, "%s; output: %s", err->msg,
				 tail_text(tail, tail_len));
		return -1;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		char how[48];
		if (WIFEXITED(status))
			snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(status));
		else
			snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(status));
		snprintf(in->msg, sizeof in->msg, "npm install %s@%s failed (%s): %s", in->name,
			 in->version, how, tail_len ? tail_text(tail, tail_len) : "no output");
		return cx_err_set(err, 0, "%s", in->msg);
	}

	json_t *pj = NULL;
	if (read_package_json(tmp, in->name, &pj, err) < 0)
		return cx_err_wrap(err, "npm install %s@%s", in->name, in->version);
	const char *pname = json_string_value(json_object_get(pj, "name"));
	if (!pname || strcmp(pname, in->name)) {
		json_decref(pj);
		return cx_err_set(err, 0, "npm install %s@%s: package.json names \"%.100s\"",
				  in->name, in->version, pname ? pname : "");
	}
	struct entry *e = calloc(1, sizeof *e);
	if (!e) {
		json_decref(pj);
		return cx_err_set(err, ENOMEM, "npm install");
	}
	e->bins = bins_from_package(pj, in->name);
	json_decref(pj);
	if (!e->bins) {
		free(e);
		return cx_err_set(err, ENOMEM, "npm install");
	}
	npm_pkg *p = &e->pkg;
	memcpy(p->key, in->key, sizeof p->key);
	snprintf(p->name, sizeof p->name, "%s", in->name);
	snprintf(p->version, sizeof p->version, "%s", in->version);
	snprintf(p->dir, sizeof p->dir, "%s/%s", g.root, in->key);
	pick_main_bin(e->bins, in->name, p->bin);
	p->last_used_at = cx_wall_ms();
	e->node_major = in->node_major;
	in->result = e; /* freed with in on failure */

	if (walk_tree(tmp, &p->bytes, err) < 0)
		return -1;
	cleanup_close int dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || syncfs(dfd) < 0)
		return cx_err_set(err, errno, "sync %s", tmp);
	if (move_into_place(tmp, p->dir, in->key, err) < 0)
		return -1;
	cleanup_close int rfd = open(g.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rfd >= 0)
		(void)fsync(rfd);
	if (row_put(g.st, e, err) < 0) {
		cx_err tmp_err = CX_ERR_INIT;
		if (retire_dir(p->dir, in->key, 1, &tmp_err) < 0)
			log_warn("npm cache: %s", tmp_err.msg);
		return cx_err_wrap(err, "npm cache: recording %s@%s", in->name, in->version);
	}
	return 0;
}

static void install_done(void *arg);

static void *install_main(void *arg)
{
	struct install *in = arg;
	cx_err err = CX_ERR_INIT;
	uint64_t t0 = cx_mono_ms();
	log_info("npm: installing %s@%s", in->name, in->version);
	char rnd[17], tmp[ROOT_MAX + 100];
	cx_random_hex(rnd, 8);
	snprintf(tmp, sizeof tmp, "%s/.tmp-%s-%s", g.root, in->key, rnd);
	if (mkdir(tmp, 0755) < 0) {
		cx_err_set(&err, errno, "npm install %s@%s: mkdir %s", in->name, in->version, tmp);
	} else if (install_into(in, tmp, &err) == 0) {
		in->ok = 1;
	} else if (cx_rm_rf(tmp) < 0) {
		log_warn("npm cache: removing %s: %s", tmp, strerror(errno));
	}
	if (in->ok) {
		log_info("npm: installed %s@%s in %llu ms, %llu bytes", in->name, in->version,
			 (unsigned long long)(cx_mono_ms() - t0),
			 (unsigned long long)in->result->pkg.bytes);
	} else {
		if (!in->msg[0])
			snprintf(in->msg, sizeof in->msg, "%s", err.msg);
		char line[sizeof in->msg]; /* logs are one line each */
		snprintf(line, sizeof line, "%s", in->msg);
		for (char *c = line; *c; c++)
			if (*c == '\n' || *c == '\r')
				*c = '|';
		log_warn("%s", line);
	}
	work_submit(NULL, install_done, in);
	return NULL;
}

/* ---- service thread ---- */

static int install_start(struct install *in, cx_err *err)
{
	int rc = pthread_create(&in->thread, NULL, install_main, in);
	if (rc)
		return cx_err_set(err, rc, "npm install %s@%s: pthread_create", in->name,
				  in->version);
	in->next = g.running;
	g.running = in;
	g.nrunning++;
	return 0;
}

static void call_waiters(struct install *in, const npm_pkg *pkg, int ok, const char *msg)
{
	struct waiter *w = in->waiters;
	in->waiters = NULL;
	in->waiters_tail = &in->waiters;
	while (w) {
		struct waiter *next = w->next;
		w->cb(w->arg, pkg, ok, msg);
		free(w);
		w = next;
	}
}

static void start_queued(void)
{
	while (g.nrunning < NPMCACHE_PARALLEL && g.queued) {
		struct install *in = g.queued;
		g.queued = in->next;
		if (!g.queued)
			g.queued_tail = &g.queued;
		cx_err err = CX_ERR_INIT;
		if (install_start(in, &err) < 0) {
			log_warn("%s", err.msg);
			stats.installs_failed++;
			call_waiters(in, NULL, 0, err.msg);
			install_free(in);
		}
	}
}

static void entry_remove(struct entry *e)
{
	for (struct entry **pp = &g.pkgs; *pp; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	g.bytes -= e->pkg.bytes;
	entry_free(e);
}

/* Row first, then the dir: a row never names a missing or partial dir. */
static int evict(struct entry *e)
{
	cx_err err = CX_ERR_INIT;
	char rowkey[sizeof ROW_PREFIX + 64];
	snprintf(rowkey, sizeof rowkey, ROW_PREFIX "%s", e->pkg.key);
	if (store_delete(g.st, rowkey, &err) == -1) {
		log_warn("npm cache: evicting %s@%s: %s", e->pkg.name, e->pkg.version, err.msg);
		return -1;
	}
	/* If the rename fails the dir stays, rowless: the next install of this
	 * key or the next init clears it. */
	if (retire_dir(e->pkg.dir, e->pkg.key, 0, &err) < 0)
		log_warn("npm cache: evicting %s@%s: %s", e->pkg.name, e->pkg.version, err.msg);
	log_info("npm: evicted %s@%s (%llu bytes, used %lld times)", e->pkg.name, e->pkg.version,
		 (unsigned long long)e->pkg.bytes, (long long)e->pkg.use_count);
	stats.evictions++;
	entry_remove(e);
	return 0;
}

/* Least recently used first; never a pinned package, one with a row write
 * still queued, or keep (just installed, its waiters are about to use it). */
static void evict_over_budget(const struct entry *keep)
{
	while (g.budget && g.bytes > g.budget) {
		struct entry *victim = NULL;
		for (struct entry *e = g.pkgs; e; e = e->next)
			if (e != keep && !e->pins && !e->writing &&
			    (!victim || e->pkg.last_used_at < victim->pkg.last_used_at))
				victim = e;
		if (!victim) {
			log_warn(
			    "npm cache: %llu bytes, over the budget of %llu, nothing evictable",
			    (unsigned long long)g.bytes, (unsigned long long)g.budget);
			return;
		}
		if (evict(victim) < 0)
			return;
	}
}

static void install_done(void *arg)
{
	struct install *in = arg;
	stats.npm_runs += (uint64_t)in->spawned;
	if (!g.initialized || in->gen != gen) { /* shut down meanwhile: joined there */
		install_free(in);
		return;
	}
	pthread_join(in->thread, NULL); /* it is returning: submitting was its last act */
	for (struct install **pp = &g.running; *pp; pp = &(*pp)->next)
		if (*pp == in) {
			*pp = in->next;
			break;
		}
	g.nrunning--;
	struct entry *e = NULL;
	if (in->ok) {
		e = steal_pointer(&in->result);
		e->next = g.pkgs;
		g.pkgs = e;
		g.bytes += e->pkg.bytes;
		stats.installs_ok++;
	} else {
		stats.installs_failed++;
	}
	start_queued();
	unsigned my_gen = gen;
	call_waiters(in, e ? &e->pkg : NULL, in->ok, in->ok ? "" : in->msg);
	if (in->ok && g.initialized && gen == my_gen) /* a callback may have shut us down */
		evict_over_budget(e);
	install_free(in);
}

struct row_write {
	store *st; /* not owned */
	unsigned gen;
	char key[65];
	char *val;
};

static void row_write_run(void *arg)
{
	struct row_write *w = arg;
	cx_err err = CX_ERR_INIT;
	char rowkey[sizeof ROW_PREFIX + 64];
	snprintf(rowkey, sizeof rowkey, ROW_PREFIX "%s", w->key);
	if (store_put(w->st, rowkey, w->val, strlen(w->val), &err) < 0)
		log_warn("npm cache: recording use of %s: %s", w->key, err.msg);
}

static void row_write_async(struct entry *e);

static void row_write_done(void *arg)
{
	struct row_write *w = arg;
	struct entry *e = g.initialized && w->gen == gen ? find_entry(w->key) : NULL;
	free(w->val);
	free(w);
	if (!e)
		return;
	e->writing = 0;
	if (e->dirty) {
		e->dirty = 0;
		row_write_async(e);
	}
}

/* Persist e's row on a worker (a SQLite commit waits for the disk).  One
 * write per package at a time, so an older value never lands after a newer
 * one; changes meanwhile are coalesced into the next write.  (A change still
 * dirty at shutdown is lost: it is only use_count and last_used_at.) */
static void row_write_async(struct entry *e)
{
	if (e->writing) {
		e->dirty = 1;
		return;
	}
	struct row_write *w = calloc(1, sizeof *w);
	char *val = row_dump(e);
	if (!w || !val) {
		free(w);
		free(val);
		log_warn("npm cache: recording use of %s: out of memory", e->pkg.key);
		return;
	}
	w->st = g.st;
	w->gen = gen;
	memcpy(w->key, e->pkg.key, sizeof w->key);
	w->val = val;
	e->writing = 1;
	work_submit(row_write_run, row_write_done, w);
}

/* ---- init: settings, the environment for npm, the rows ---- */

static int mkdir_p(const char *path, mode_t mode, cx_err *err)
{
	char buf[ROOT_MAX + 1];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return cx_err_set(err, errno, "mkdir %s", buf);
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", buf);
	struct stat sb;
	if (lstat(buf, &sb) < 0)
		return cx_err_set(err, errno, "stat %s", buf);
	if (!S_ISDIR(sb.st_mode))
		return cx_err_set(err, ENOTDIR, "%s", buf);
	return 0;
}

/* ROOT/<name>, 0700, owned by the npm uid. */
static int npm_owned_dir(const char *name, cx_err *err)
{
	char path[ROOT_MAX + 16];
	snprintf(path, sizeof path, "%s/%s", g.root, name);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", path);
	cleanup_close int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, "open %s", path);
	if (fchown(fd, g.uid, g.gid) < 0 || fchmod(fd, 0700) < 0)
		return cx_err_set(err, errno, "chown %s to %u:%u", path, (unsigned)g.uid,
				  (unsigned)g.gid);
	return 0;
}

static int env_add(char **envp, size_t *n, const char *name, const char *val)
{
	if (*n + 1 >= ENV_MAX)
		return 0; /* the fixed variables come first; extra npm_config_* beyond the cap are
			     dropped */
	size_t len = strlen(name) + strlen(val) + 2;
	char *s = malloc(len);
	if (!s)
		return -1;
	snprintf(s, len, "%s=%s", name, val);
	envp[(*n)++] = s;
	return 0;
}

static void env_free(char **envp)
{
	if (envp)
		for (char **p = envp; *p; p++)
			free(*p);
	free(envp);
}

static int build_env(cx_err *err)
{
	static const char *const pass[] = {
	    "LANG",	    "LC_ALL",	   "http_proxy", "https_proxy",		"no_proxy",
	    "HTTP_PROXY",   "HTTPS_PROXY", "NO_PROXY",	 "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE",
	    "SSL_CERT_DIR",
	};
	/* set here; the daemon's own values for these never reach npm */
	static const char *const ours[] = {"npm_config_cache", "npm_config_update_notifier",
					   "npm_config_color", "npm_config_prefix"};
	char **envp = calloc(ENV_MAX, sizeof *envp);
	size_t n = 0;
	if (!envp)
		return cx_err_set(err, ENOMEM, "npm cache");
	char home[ROOT_MAX + 16], cache[ROOT_MAX + 16];
	snprintf(home, sizeof home, "%s/.home", g.root);
	snprintf(cache, sizeof cache, "%s/.npm", g.root);
	int rc = env_add(envp, &n, "PATH", g.path_env);
	rc |= env_add(envp, &n, "HOME", home);
	rc |= env_add(envp, &n, "npm_config_cache", cache);
	rc |= env_add(envp, &n, "npm_config_update_notifier", "false");
	rc |= env_add(envp, &n, "npm_config_color", "false");
	for (size_t i = 0; i < sizeof pass / sizeof *pass; i++) {
		const char *v = getenv(pass[i]);
		if (v)
			rc |= env_add(envp, &n, pass[i], v);
	}
	extern char **environ;
	for (char **e = environ; e && *e; e++) {
		const char *eq = strchr(*e, '=');
		if (!eq || strncasecmp(*e, "npm_config_", 11))
			continue;
		int skip = 0;
		for (size_t i = 0; i < sizeof ours / sizeof *ours; i++)
			skip |= strlen(ours[i]) == (size_t)(eq - *e) &&
				!strncasecmp(*e, ours[i], (size_t)(eq - *e));
		if (!skip && n + 1 < ENV_MAX) {
			char *s = strdup(*e);
			if (!s)
				rc = -1;
			else
				envp[n++] = s;
		}
	}
	if (rc < 0) {
		env_free(envp);
		return cx_err_set(err, ENOMEM, "npm cache");
	}
	g.envp = envp;
	return 0;
}

/* A row -> an entry, or NULL with the reason in why. */
static struct entry *entry_from_row(const char *key, const char *val, size_t len, char *why,
				    size_t why_cap)
{
	json_error_t jerr;
	json_t *o = json_loadb(val, len, 0, &jerr);
	const char *name = NULL, *version = NULL;
	json_int_t major = -1, bytes = -1, use_count = 0, last = 0;
	json_t *bins = NULL;
	struct entry *e = NULL;
	if (!o ||
	    json_unpack_ex(o, &jerr, 0, "{s:s,s:s,s:I,s:I,s?I,s?I,s:o}", "name", &name, "version",
			   &version, "node_major", &major, "bytes", &bytes, "use_count", &use_count,
			   "last_used_at", &last, "bins", &bins) < 0) {
		snprintf(why, why_cap, "malformed: %s", jerr.text);
		goto out;
	}
	char spec[NPM_NAME_MAX + NPM_VERSION_MAX + 2], n[NPM_NAME_MAX + 1], v[NPM_VERSION_MAX + 1];
	char k[65];
	snprintf(spec, sizeof spec, "%s@%s", name, version);
	if (npm_spec_parse(spec, n, v, why, why_cap) < 0)
		goto out;
	if (major < 0 || major > 10000 || bytes < 0 || !json_is_object(bins)) {
		snprintf(why, why_cap, "malformed");
		goto out;
	}
	key_of(n, v, (int)major, k);
	if (strcmp(k, key)) {
		snprintf(why, why_cap, "key does not match %s", spec);
		goto out;
	}
	e = calloc(1, sizeof *e);
	if (!e) {
		snprintf(why, why_cap, "out of memory");
		goto out;
	}
	memcpy(e->pkg.key, key, sizeof e->pkg.key);
	snprintf(e->pkg.name, sizeof e->pkg.name, "%s", n);
	snprintf(e->pkg.version, sizeof e->pkg.version, "%s", v);
	snprintf(e->pkg.dir, sizeof e->pkg.dir, "%s/%s", g.root, key);
	e->pkg.bytes = (uint64_t)bytes;
	e->pkg.use_count = use_count;
	e->pkg.last_used_at = last;
	e->node_major = (int)major;
	e->bins = json_incref(bins);
	pick_main_bin(bins, n, e->pkg.bin);
out:
	json_decref(o);
	return e;
}

static void drop_row(const char *rowkey, const char *why)
{
	cx_err err = CX_ERR_INIT;
	log_warn("npm cache: dropping %s: %s", rowkey, why);
	if (store_delete(g.st, rowkey, &err) == -1)
		log_warn("npm cache: dropping %s: %s", rowkey, err.msg);
}

static int load_rows(cx_err *err)
{
	store_kv *kv = NULL;
	size_t n = 0;
	if (store_list(g.st, ROW_PREFIX, 0, &kv, &n, err) < 0)
		return cx_err_wrap(err, "npm cache: loading rows");
	for (size_t i = 0; i < n; i++) {
		const char *key = kv[i].key + strlen(ROW_PREFIX);
		char why[256] = "";
		if (!is_key(key)) {
			drop_row(kv[i].key, "not a package key");
			continue;
		}
		struct entry *e = entry_from_row(key, kv[i].val, kv[i].len, why, sizeof why);
		if (!e) {
			drop_row(kv[i].key, why);
			continue;
		}
		struct stat sb;
		if (lstat(e->pkg.dir, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
			drop_row(kv[i].key, "its dir is gone");
			entry_free(e);
			continue;
		}
		e->next = g.pkgs;
		g.pkgs = e;
		g.bytes += e->pkg.bytes;
	}
	store_kv_free(kv, n);
	return 0;
}

/* Remove what no row accounts for: leftover .tmp-* and unknown entries. */
static int sweep_root(cx_err *err)
{
	int fd = open(g.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return cx_err_set(err, e, "open %s", g.root);
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *nm = de->d_name;
		if (!strcmp(nm, ".") || !strcmp(nm, ".."))
			continue;
		if (nm[0] == '.' ? strncmp(nm, ".tmp-", 5) != 0 : find_entry(nm) != NULL)
			continue;
		char path[ROOT_MAX + 300];
		snprintf(path, sizeof path, "%s/%s", g.root, nm);
		if (nm[0] != '.')
			log_warn("npm cache: removing %s (no store row)", path);
		if (cx_rm_rf(path) < 0)
			log_warn("npm cache: removing %s: %s", path, strerror(errno));
	}
	closedir(d);
	return 0;
}

static void state_free(void)
{
	while (g.queued) {
		struct install *in = g.queued;
		g.queued = in->next;
		install_free(in);
	}
	while (g.pkgs) {
		struct entry *e = g.pkgs;
		g.pkgs = e->next;
		entry_free(e);
	}
	env_free(g.envp);
	free(g.path_env);
	for (int i = 0; i < 2; i++)
		if (g.stop_pipe[i] >= 0)
			close(g.stop_pipe[i]);
	memset(&g, 0, sizeof g);
	g.stop_pipe[0] = g.stop_pipe[1] = -1;
	g.queued_tail = &g.queued;
}

int npmcache_init(store *st, const char *root, const char *npm, uid_t uid, gid_t gid,
		  uint64_t budget, cx_err *err)
{
	if (g.initialized)
		return cx_err_set(err, EBUSY, "npm cache: already initialized");
	if (!st || !root || !*root)
		return cx_err_set(err, EINVAL, "npm cache: no store or root");
	if (strlen(root) > ROOT_MAX)
		return cx_err_set(err, ENAMETOOLONG, "npm cache: root longer than %d bytes",
				  ROOT_MAX);
	if (!npm || !*npm)
		npm = "npm";
	if (strlen(npm) >= sizeof g.npm)
		return cx_err_set(err, ENAMETOOLONG, "npm cache: npm path too long");
	state_free();
	char real[PATH_MAX];
	if (mkdir_p(root, 0755, err) < 0)
		return cx_err_wrap(err, "npm cache");
	if (!realpath(root, real))
		return cx_err_set(err, errno, "npm cache: %s", root);
	if (strlen(real) > ROOT_MAX)
		return cx_err_set(err, ENAMETOOLONG, "npm cache: %s too long", real);
	snprintf(g.root, sizeof g.root, "%s", real);
	snprintf(g.npm, sizeof g.npm, "%s", npm);
	g.st = st;
	g.uid = uid;
	g.gid = gid;
	g.drop_ids = uid != geteuid() || gid != getegid();
	g.budget = budget;
	const char *path = getenv("PATH");
	g.path_env = strdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
	if (!g.path_env) {
		state_free();
		return cx_err_set(err, ENOMEM, "npm cache");
	}
	npmcache_node_major();
	int rc = npm_owned_dir(".npm", err);
	if (rc == 0)
		rc = npm_owned_dir(".home", err);
	if (rc == 0)
		rc = build_env(err);
	if (rc == 0 && pipe2(g.stop_pipe, O_CLOEXEC) < 0)
		rc = cx_err_set(err, errno, "pipe");
	if (rc == 0)
		rc = load_rows(err);
	if (rc == 0)
		rc = sweep_root(err);
	if (rc < 0) {
		state_free();
		return cx_err_wrap(err, "npm cache %s", root);
	}
	gen++;
	g.initialized = 1;
	size_t count = 0;
	for (struct entry *e = g.pkgs; e; e = e->next)
		count++;
	log_info("npm cache: %s, %zu packages, %llu bytes, node %d", g.root, count,
		 (unsigned long long)g.bytes, node_major);
	return 0;
}

void npmcache_shutdown(void)
{
	if (!g.initialized)
		return;
	/* Running installs kill their npm and finish; what they submit is freed
	 * by install_done when it sees the cache gone. */
	(void)!write(g.stop_pipe[1], "x", 1);
	g.initialized = 0;
	for (struct install *in = g.running, *next; in; in = next) {
		next = in->next;
		pthread_join(in->thread, NULL);
	}
	g.running = NULL;
	state_free();
}

const npm_pkg *npmcache_lookup(const char *spec)
{
	char name[NPM_NAME_MAX + 1], version[NPM_VERSION_MAX + 1], why[256], key[65];
	if (!g.initialized || npm_spec_parse(spec, name, version, why, sizeof why) < 0)
		return NULL;
	key_of(name, version, node_major, key);
	struct entry *e = find_entry(key);
	return e ? &e->pkg : NULL;
}

int npmcache_ensure(const char *spec, npm_ready_fn cb, void *arg, const npm_pkg **out, cx_err *err)
{
	if (out)
		*out = NULL;
	if (!g.initialized)
		return cx_err_set(err, EINVAL, "npm cache not initialized");
	char name[NPM_NAME_MAX + 1], version[NPM_VERSION_MAX + 1], why[256], key[65];
	if (npm_spec_parse(spec, name, version, why, sizeof why) < 0)
		return cx_err_set(err, EINVAL, "%s", why);
	key_of(name, version, node_major, key);
	struct entry *e = find_entry(key);
	if (e) {
		stats.hits++;
		if (out)
			*out = &e->pkg;
		return 1;
	}
	struct waiter *w = NULL;
	if (cb) {
		w = calloc(1, sizeof *w);
		if (!w)
			return cx_err_set(err, ENOMEM, "npm install %s", spec);
		w->cb = cb;
		w->arg = arg;
	}
	struct install *in = find_install(key);
	if (in) {
		stats.joins++;
		if (w) {
			*in->waiters_tail = w;
			in->waiters_tail = &w->next;
		}
		return 0;
	}
	in = calloc(1, sizeof *in);
	if (!in) {
		free(w);
		return cx_err_set(err, ENOMEM, "npm install %s", spec);
	}
	memcpy(in->key, key, sizeof key);
	snprintf(in->name, sizeof in->name, "%s", name);
	snprintf(in->version, sizeof in->version, "%s", version);
	in->node_major = node_major;
	in->gen = gen;
	in->waiters = w;
	in->waiters_tail = w ? &w->next : &in->waiters;
	if (g.nrunning < NPMCACHE_PARALLEL) {
		if (install_start(in, err) < 0) {
			install_free(in);
			return -1;
		}
	} else {
		*g.queued_tail = in;
		g.queued_tail = &in->next;
	}
	return 0;
}

void npmcache_pin(const char *key)
{
	struct entry *e = g.initialized && key ? find_entry(key) : NULL;
	if (!e) {
		log_warn("npm cache: pin of unknown package %.64s", key ? key : "(null)");
		return;
	}
	e->pins++;
	e->pkg.use_count++;
	e->pkg.last_used_at = cx_wall_ms();
	row_write_async(e);
}

void npmcache_unpin(const char *key)
{
	struct entry *e = g.initialized && key ? find_entry(key) : NULL;
	if (!e || e->pins <= 0) {
		log_warn("npm cache: unpin of %s package %.64s", e ? "an unpinned" : "unknown",
			 key ? key : "(null)");
		return;
	}
	e->pins--;
}

void npmcache_get_stats(npmcache_stats *out)
{
	*out = stats;
	out->bytes = g.bytes;
}
