/* repo.c — repo_clone(): stage dir, the cortex-clone helper as the session's
 * uid, its records, and the move into the workspace (repo.h says why). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "log.h"
#include "repo.h"
#include "repo_proto.h"

#ifndef CORTEX_CLONE_HELPER
#define CORTEX_CLONE_HELPER "cortex-clone"
#endif

#define ENTRIES_MAX 4096 /* top-level entries of a repository moved into the workspace */
#define ENV_MAX	    16

/* ---- the helper's process ---- */

struct spawn_plan {
	const char *helper, *stage;
	char **argv, **envp;
	int tok_r, rec_w, devnull;
	uid_t uid;
	gid_t gid;
	pid_t parent;
};

enum { SETUP_FDS = 1, SETUP_MOUNTS, SETUP_IDS, SETUP_PRCTL, SETUP_EXEC };

/* A mount namespace of the helper's own where every mount is read-only
 * (nosuid, nodev) but its stage dir: the clone cannot write anywhere else,
 * even where the session's uid could (every sandbox shares that uid).  The
 * namespace dies with the helper. */
/* The stage dir is bound at CLONE_MNT, on a fresh tmpfs over /tmp: the
 * helper reaches it there whatever the modes of its host parents (a 0700
 * data dir the session's uid cannot pass through), and sees no host /tmp. */
#define CLONE_MNT "/tmp/clone"
static int private_mounts(const char *stage)
{
	struct mount_attr ro = {.attr_set =
				    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
	struct mount_attr rw = {.attr_clr = MOUNT_ATTR_RDONLY};
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return -1;
	/* Opened in the new namespace (a bind source must be of it), and held
	 * across the tmpfs mount: stage may lie under /tmp itself. */
	char via[40];
	int sfd = open(stage, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sfd < 0)
		return -1;
	snprintf(via, sizeof via, "/proc/self/fd/%d", sfd);
	if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755") < 0 ||
	    mkdir(CLONE_MNT, 0755) < 0 || mount(via, CLONE_MNT, NULL, MS_BIND, NULL) < 0 ||
	    mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, &ro, sizeof ro) < 0 ||
	    mount_setattr(AT_FDCWD, CLONE_MNT, 0, &rw, sizeof rw) < 0) {
		close(sfd);
		return -1;
	}
	close(sfd);
	return 0;
}

/* In the forked child of a threaded process: async-signal-safe calls only. */
__attribute__((noreturn)) static void helper_child(const struct spawn_plan *p)
{
	struct repo_rec r = {.kind = REC_ERROR, .code = EC_SETUP, .phase = SETUP_FDS};
	int rec = p->rec_w;
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	for (int s = 1; s < NSIG; s++)
		(void)sigaction(s, &dfl, NULL);
	if (setpgid(0, 0) < 0)
		goto fail;
	/* Above 9 first: placing 0 and 3 must not clobber one still needed. */
	int tok = fcntl(p->tok_r, F_DUPFD_CLOEXEC, 10), rw = fcntl(p->rec_w, F_DUPFD_CLOEXEC, 10);
	int nul = fcntl(p->devnull, F_DUPFD_CLOEXEC, 10);
	if (tok < 0 || rw < 0 || nul < 0)
		goto fail;
	rec = rw;
	/* stdout: /dev/null (whatever fd 1 is in the daemon); stderr stays the
	 * daemon's (sanitizer reports, a usage error). */
	if (dup2(tok, 0) < 0 || dup2(nul, 1) < 0 || dup2(rw, REPO_REC_FD) < 0)
		goto fail;
	rec = REPO_REC_FD;
	(void)close_range(REPO_REC_FD + 1, ~0U, CLOSE_RANGE_CLOEXEC);
	umask(022);
	/* The helper by fd: the tmpfs over /tmp below may hide its path. */
	int hfd = open(p->helper, O_PATH | O_CLOEXEC);
	if (hfd < 0)
		goto fail;
	r.phase = SETUP_MOUNTS;
	if (private_mounts(p->stage) < 0)
		goto fail;
	r.phase = SETUP_IDS;
	if (setgroups(0, NULL) < 0 || setgid(p->gid) < 0 || setuid(p->uid) < 0)
		goto fail;
	r.phase = SETUP_PRCTL; /* after setuid, which clears the parent-death signal */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		goto fail;
	if (getppid() != p->parent)
		_exit(127); /* the parent is gone already */
	r.phase = SETUP_EXEC;
	fexecve(hfd, p->argv, p->envp);
fail:
	r.sys_errno = errno;
	(void)!write(rec, &r, sizeof r);
	_exit(127);
}

static void env_free(char **envp)
{
	for (char **e = envp; *e; e++)
		free(*e);
}

/* The helper's environment: none of the daemon's (it holds keys), but what
 * proxies and TLS need.  No HOME: no git config is read anyway. */
static int env_build(char *envp[ENV_MAX], cx_err *err)
{
	static const char *const pass[] = {
	    "http_proxy", "https_proxy",   "no_proxy",	   "HTTP_PROXY",   "HTTPS_PROXY",
	    "NO_PROXY",	  "SSL_CERT_FILE", "SSL_CERT_DIR", "ASAN_OPTIONS", "UBSAN_OPTIONS"};
	size_t n = 0;
	envp[n++] = strdup("PATH=/usr/bin:/bin");
	envp[n++] = strdup("LC_ALL=C");
	for (size_t i = 0; i < sizeof pass / sizeof *pass && n + 1 < ENV_MAX; i++) {
		const char *v = getenv(pass[i]);
		if (!v)
			continue;
		size_t len = strlen(pass[i]) + strlen(v) + 2;
		if ((envp[n] = malloc(len)))
			snprintf(envp[n], len, "%s=%s", pass[i], v);
		n++;
	}
	envp[n] = NULL;
	for (size_t i = 0; i < n; i++)
		if (!envp[i]) {
			for (size_t j = 0; j < n; j++)
				free(envp[j]);
			envp[0] = NULL;
			return cx_err_set(err, ENOMEM, "repo clone");
		}
	return 0;
}

static void reap(pid_t pid, int *status)
{
	while (waitpid(pid, status, 0) < 0 && errno == EINTR)
		;
}

/* ---- errors the user sees ---- */

/* Replace every occurrence of the host path `host` in msg by `shown`. */
static void scrub(char *msg, size_t cap, const char *host, const char *shown)
{
	size_t hl = strlen(host), sl = strlen(shown);
	if (!hl)
		return;
	char *p, *from = msg;
	while ((p = strstr(from, host))) {
		size_t tail = strlen(p + hl);
		if ((size_t)(p - msg) + sl + tail + 1 > cap)
			break;
		memmove(p + sl, p + hl, tail + 1);
		memcpy(p, shown, sl);
		from = p + sl; /* `shown` may hold `host` ("/workspace") */
	}
}

static int rec_error(const struct repo_rec *r, const struct repo_clone_opts *o, const char *stage,
		     cx_err *err)
{
	char msg[sizeof r->msg + 1];
	memcpy(msg, r->msg, sizeof r->msg);
	msg[sizeof r->msg] = '\0';
	scrub(msg, sizeof msg, stage, "/workspace");
	scrub(msg, sizeof msg, CLONE_MNT, "/workspace");
	scrub(msg, sizeof msg, o->stage_dir, "(stage)");
	scrub(msg, sizeof msg, o->workspace_dir, "/workspace");
	switch (r->code) {
	case EC_AUTH:
		return repo_err_user(err, EACCES,
				     "repo clone: authentication failed: the token was refused");
	case EC_AUTH_NEEDED:
		return repo_err_user(
		    err, EACCES,
		    "repo clone: authentication required: the repository is private or "
		    "does not exist, and no token was given");
	case EC_FORBIDDEN:
		return repo_err_user(
		    err, EACCES,
		    "repo clone: access denied (HTTP 403): the token (if any) has no "
		    "access to this repository");
	case EC_NOT_FOUND:
		return repo_err_user(err, ENOENT, "repo clone: repository not found");
	case EC_REF:
		return repo_err_user(err, ENOENT, "repo clone: %s", msg);
	case EC_NET:
		return repo_err_user(err, EHOSTUNREACH, "repo clone: cannot reach the server: %s",
				     msg);
	case EC_PRIVATE:
		return repo_err_user(err, EPERM, "repo clone: %s: not allowed", msg);
	case EC_TOO_BIG:
		return repo_err_user(err, EFBIG, "repo clone: %s", msg);
	case EC_REDIRECT:
		return repo_err_user(err, EACCES, "repo clone: %s", msg);
	case EC_SETUP: {
		static const char *const step[] = {"?",	    "fds", "mounts", "uid/gid switch",
						   "prctl", "exec"};
		cx_err_set(err, r->sys_errno, "repo clone: helper setup (%s)",
			   r->phase < 6 ? step[r->phase] : "?");
		err->code = EIO;
		return -1;
	}
	default:
		return repo_err_user(err, EIO, "repo clone: %s", msg);
	}
}

/* ---- records until the helper is done ---- */

static void report(const struct repo_clone_opts *o, const struct repo_rec *r)
{
	if (!o->progress)
		return;
	struct repo_progress p = {r->received_objects,
				  r->total_objects,
				  r->indexed_objects,
				  r->received_bytes,
				  r->phase == PHASE_CHECKOUT ? "checkout" : "cloning",
				  r->checkout_done,
				  r->checkout_total};
	o->progress(o->arg, &p);
}

/* 0 after REC_DONE and a clean exit; -1 with err set (the child is reaped). */
static int helper_wait(const struct repo_clone_opts *o, pid_t pid, int rec_r, const char *stage,
		       cx_err *err)
{
	int timeout_s = o->timeout_s > 0 ? o->timeout_s : REPO_TIMEOUT_S;
	uint64_t deadline = cx_mono_ms() + (uint64_t)timeout_s * 1000u;
	struct repo_rec r, last = {0};
	int status = 0, rc = -1;
	for (;;) {
		uint64_t now = cx_mono_ms();
		struct pollfd pfd = {rec_r, POLLIN, 0};
		int k = now < deadline ? poll(&pfd, 1, (int)(deadline - now)) : 0;
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			reap(pid, &status);
			if (k == 0)
				return repo_err_user(err, ETIMEDOUT,
						     "repo clone: timed out after %d s", timeout_s);
			return cx_err_set(err, errno, "repo clone: poll");
		}
		ssize_t n = read(rec_r, &r, sizeof r);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* EOF: the helper exited (or closed fd 3) */
		if (n != (ssize_t)sizeof r) {
			kill(-pid, SIGKILL);
			last.kind = 0;
			break;
		}
		last = r;
		if (r.kind == REC_PROGRESS)
			report(o, &r);
		else if (r.kind != REC_ERROR && r.kind != REC_DONE)
			last.kind = 0;
	}
	reap(pid, &status);
	if (last.kind == REC_ERROR)
		return rec_error(&last, o, stage, err);
	if (last.kind == REC_DONE && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		last.kind = REC_PROGRESS; /* the final checkout count */
		last.phase = PHASE_CHECKOUT;
		report(o, &last);
		rc = 0;
	} else if (WIFSIGNALED(status)) {
		repo_err_user(err, EIO, "repo clone: the helper died (signal %d)",
			      WTERMSIG(status));
	} else {
		repo_err_user(err, EIO, "repo clone: the helper failed (exit %d)",
			      WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	}
	return rc;
}

static int helper_run(const struct repo_clone_opts *o, const char *stage, cx_err *err)
{
	const char *helper = o->helper ? o->helper : CORTEX_CLONE_HELPER;
	char a0[] = "cortex-clone", max[24], flags[16], *envp[ENV_MAX];
	snprintf(max, sizeof max, "%llu", (unsigned long long)o->max_bytes);
	snprintf(flags, sizeof flags, "%u", o->flags & REPO_ALLOW_PRIVATE);
	char mnt[] = CLONE_MNT; /* where the helper sees stage (private_mounts) */
	char *argv[] = {a0, (char *)o->url, (char *)(o->ref ? o->ref : ""), mnt, max, flags, NULL};
	if (env_build(envp, err) < 0)
		return -1;
	int tok[2] = {-1, -1}, rec[2] = {-1, -1}, rc = -1;
	cleanup_close int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (devnull < 0) {
		env_free(envp);
		return cx_err_set(err, errno, "repo clone: /dev/null");
	}
	size_t tlen = o->token ? strlen(o->token) : 0;
	if (tlen > REPO_TOKEN_MAX) {
		repo_err_user(err, EINVAL, "repo clone: the token is longer than %d bytes",
			      REPO_TOKEN_MAX);
		goto out;
	}
	if (pipe2(tok, O_CLOEXEC) < 0 || pipe2(rec, O_CLOEXEC) < 0) {
		cx_err_set(err, errno, "repo clone: pipe");
		goto out;
	}
	/* The whole token fits the pipe (REPO_TOKEN_MAX < 64 KiB): written and
	 * closed before the fork, so the helper reads it up to EOF. */
	if (tlen && cx_write_all(tok[1], o->token, tlen, err) < 0)
		goto out;
	close(steal_fd(&tok[1]));
	struct spawn_plan plan = {.helper = helper,
				  .stage = stage,
				  .argv = argv,
				  .envp = envp,
				  .tok_r = tok[0],
				  .rec_w = rec[1],
				  .devnull = devnull,
				  .uid = o->uid,
				  .gid = o->gid,
				  .parent = getpid()};
	pid_t pid = fork();
	if (pid < 0) {
		cx_err_set(err, errno, "repo clone: fork");
		goto out;
	}
	if (pid == 0)
		helper_child(&plan);
	close(steal_fd(&rec[1]));
	rc = helper_wait(o, pid, rec[0], stage, err);
out:
	for (int i = 0; i < 2; i++) {
		if (tok[i] >= 0)
			close(tok[i]);
		if (rec[i] >= 0)
			close(rec[i]);
	}
	env_free(envp);
	return rc;
}

/* ---- the move into the workspace ---- */

struct names {
	char *v[ENTRIES_MAX];
	size_t n;
};

static void names_free(struct names *nm)
{
	for (size_t i = 0; i < nm->n; i++)
		free(nm->v[i]);
	nm->n = 0;
}

static int names_read(int dirfd, struct names *nm, cx_err *err)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return cx_err_set(err, errno, "repo clone: reading the clone");
	}
	struct dirent *de;
	int rc = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (nm->n == ENTRIES_MAX) {
			rc = repo_err_user(err, E2BIG, "repo clone: more than %d top-level entries",
					   ENTRIES_MAX);
			break;
		}
		if (!(nm->v[nm->n] = strdup(de->d_name))) {
			rc = cx_err_set(err, ENOMEM, "repo clone");
			break;
		}
		nm->n++;
	}
	closedir(d);
	return rc;
}

/* Move every top-level entry of the clone into the workspace, never over an
 * entry already there (followed or not): on a clash, or any error, the ones
 * already moved go back and the workspace is as it was. */
static int move_all(int clonefd, int wsfd, cx_err *err)
{
	struct names *nmp = calloc(1, sizeof *nmp); /* 32 KiB: not on a worker's stack */
	if (!nmp)
		return cx_err_set(err, ENOMEM, "repo clone");
	if (names_read(clonefd, nmp, err) < 0)
		goto fail;
	struct stat sb;
	for (size_t i = 0; i < nmp->n; i++)
		if (fstatat(wsfd, nmp->v[i], &sb, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT) {
			repo_err_user(
			    err, EEXIST,
			    "repo clone: /workspace/%s already exists; nothing was checked out",
			    nmp->v[i]);
			goto fail;
		}
	size_t moved;
	for (moved = 0; moved < nmp->n; moved++)
		if (renameat2(clonefd, nmp->v[moved], wsfd, nmp->v[moved], RENAME_NOREPLACE) < 0)
			break;
	if (moved == nmp->n) {
		names_free(nmp);
		free(nmp);
		return 0;
	}
	int e = errno;
	if (e == EEXIST)
		repo_err_user(err, EEXIST,
			      "repo clone: /workspace/%s already exists; nothing was checked out",
			      nmp->v[moved]);
	else if (e == EXDEV)
		repo_err_user(err, EXDEV,
			      "repo clone: the stage dir is not on the workspace's file system");
	else
		cx_err_set(err, e, "repo clone: moving %s into /workspace", nmp->v[moved]);
	/* Back into the clone, which is then removed whole.  What the sandbox
	 * may have renamed in meanwhile is its own: it goes too, unfollowed. */
	while (moved--)
		(void)renameat2(wsfd, nmp->v[moved], clonefd, nmp->v[moved], RENAME_NOREPLACE);
fail:
	names_free(nmp);
	free(nmp);
	return -1;
}

/* ---- repo_clone ---- */

int repo_clone(const struct repo_clone_opts *o, cx_err *err)
{
	if (!o || o->version != REPO_CLONE_OPTS_VERSION || !o->stage_dir || !o->workspace_dir)
		return repo_err_user(err, EINVAL, "repo clone: bad options");
	if (repo_url_ok(o->url, err) < 0 || (o->ref && repo_ref_ok(o->ref, err) < 0))
		return -1;
	cleanup_close int stagefd =
	    open(o->stage_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (stagefd < 0)
		return cx_err_set(err, errno, "repo clone: opening the stage dir");
	cleanup_close int wsfd =
	    open(o->workspace_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (wsfd < 0)
		return cx_err_set(err, errno, "repo clone: opening /workspace");
	char name[40], path[PATH_MAX];
	memcpy(name, "clone-", 6);
	cx_random_hex(name + 6, 8);
	if ((size_t)snprintf(path, sizeof path, "%s/%s", o->stage_dir, name) >= sizeof path)
		return repo_err_user(err, ENAMETOOLONG, "repo clone: stage dir path");
	if (mkdirat(stagefd, name, 0700) < 0)
		return cx_err_set(err, errno, "repo clone: making the stage dir");
	int rc = -1;
	cleanup_close int clonefd = -1;
	if (fchownat(stagefd, name, o->uid, o->gid, AT_SYMLINK_NOFOLLOW) < 0) {
		cx_err_set(err, errno, "repo clone: chown of the stage dir");
		goto out;
	}
	if (helper_run(o, path, err) < 0)
		goto out;
	clonefd = openat(stagefd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (clonefd < 0) {
		cx_err_set(err, errno, "repo clone: opening the clone");
		goto out;
	}
	rc = move_all(clonefd, wsfd, err);
out:
	/* Removed by path: the stage dir is the host's, and the helper is dead. */
	if (cx_rm_rf(path) < 0)
		log_warn("repo clone: cannot remove %s: %s", path, strerror(errno));
	return rc;
}
