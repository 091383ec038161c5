/* build.c — the builder: one record per build, a thread per running build that
 * runs buildah (bud, then push to an OCI layout) as a child in its own process
 * group, copies its output into the build's log and follows "STEP n/m:".
 * See build.h for the rules (join, cache, caps). */
#include "build.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "imgstore.h"

extern char **environ;

#define MAX_NAMES 8

struct build {
	struct build *next;
	struct build_status st;	    /* guarded by builder.mu */
	char names[MAX_NAMES][128]; /* images this build is for ("" = free slot) */
	char user[128];		    /* who started it (per-user cap) */
	char stage[1024];
	pid_t pid; /* running child, 0 if none */
	int cancel;
	uint64_t cancel_ms; /* when it was canceled (SIGKILL to the whole group 30 s later) */
	pthread_t thread;
	int has_thread;
	struct builder *b;
};

struct builder {
	pthread_mutex_t mu;
	char dir[1024], base[512], buildah[512], driver[32];
	uint64_t max_context;
	unsigned max_builds, max_per_user, seq;
	struct imgstore *st; /* not owned */
	struct build *builds;
};

const char *build_state_name(enum build_state s)
{
	static const char *const n[] = {"none", "running", "done", "failed", "canceled"};
	return (unsigned)s < sizeof n / sizeof *n ? n[s] : "?";
}

static int mkdir_p(const char *dir, cx_err *err)
{
	char p[1024];
	snprintf(p, sizeof p, "%s", dir);
	for (char *s = p + 1; *s; s++)
		if (*s == '/') {
			*s = '\0';
			if (mkdir(p, 0700) < 0 && errno != EEXIST)
				return cx_err_set(err, errno, "mkdir %s", p);
			*s = '/';
		}
	if (mkdir(p, 0700) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", p);
	return 0;
}

int builder_open(struct builder **out, const struct builder_config *cfg, struct imgstore *st,
		 cx_err *err)
{
	struct builder *b = calloc(1, sizeof *b);
	if (!b)
		return cx_err_set(err, ENOMEM, "builder");
	pthread_mutex_init(&b->mu, NULL);
	snprintf(b->dir, sizeof b->dir, "%s", cfg->dir);
	snprintf(b->base, sizeof b->base, "%s", cfg->base ? cfg->base : "");
	snprintf(b->buildah, sizeof b->buildah, "%s",
		 cfg->buildah && *cfg->buildah ? cfg->buildah : "buildah");
	b->max_context = cfg->max_context ? cfg->max_context : 256ull << 20;
	b->max_builds = cfg->max_builds ? cfg->max_builds : 2;
	b->max_per_user = cfg->max_per_user ? cfg->max_per_user : 1;
	b->st = st;
	if (cfg->storage_driver && *cfg->storage_driver) {
		snprintf(b->driver, sizeof b->driver, "%s", cfg->storage_driver);
	} else {
		FILE *f = fopen(cfg->driver_file ? cfg->driver_file
						 : "/var/cache/cortex/images/storage-driver",
				"re");
		if (f) {
			if (fgets(b->driver, sizeof b->driver, f))
				b->driver[strcspn(b->driver, "\r\n \t")] = '\0';
			fclose(f);
		}
	}
	static const char *const sub[] = {"stage", "logs", "cache"};
	for (size_t i = 0; i < 3; i++) {
		char p[1100];
		snprintf(p, sizeof p, "%s/%s", b->dir, sub[i]);
		if (mkdir_p(p, err) < 0) {
			free(b);
			return cx_err_wrap(err, "builder");
		}
	}
	char stage[1100];
	snprintf(stage, sizeof stage, "%s/stage", b->dir);
	cx_rm_rf(stage); /* builds of an earlier run are gone */
	mkdir(stage, 0700);
	*out = b;
	return 0;
}

/* Cancel (b->mu held); run_child does the killing (see kill_below). */
static void build_kill(struct build *x)
{
	x->cancel = 1;
	if (!x->cancel_ms)
		x->cancel_ms = cx_mono_ms();
}

/* SIGKILL every process of buildah's group but buildah: a RUN step's
 * processes.  Its step then fails and buildah removes its working containers
 * (--force-rm) and exits.  Signalling buildah itself kills it outright when
 * no RUN is running, leaving its containers in storage. */
static void kill_below(pid_t leader)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		pid_t p = (pid_t)atoi(e->d_name);
		if (p <= 0 || p == leader)
			continue;
		char path[64], buf[512];
		snprintf(path, sizeof path, "/proc/%d/stat", (int)p);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, buf, sizeof buf - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		const char *rp = strrchr(buf, ')'); /* "pid (comm) state ppid pgrp ..." */
		int ppid, pgrp;
		char st;
		if (rp && sscanf(rp + 1, " %c %d %d", &st, &ppid, &pgrp) == 3 && pgrp == leader)
			kill(p, SIGKILL);
	}
	if (d)
		closedir(d);
}

void builder_close(struct builder *b)
{
	if (!b)
		return;
	pthread_mutex_lock(&b->mu);
	for (struct build *x = b->builds; x; x = x->next)
		if (x->st.state == BUILD_RUNNING)
			build_kill(x);
	pthread_mutex_unlock(&b->mu);
	for (struct build *x = b->builds; x; x = x->next)
		if (x->has_thread)
			pthread_join(x->thread, NULL);
	while (b->builds) {
		struct build *x = b->builds;
		b->builds = x->next;
		free(x);
	}
	pthread_mutex_destroy(&b->mu);
	free(b);
}

static void log_line(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(int fd, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof buf - 2)
		n = (int)sizeof buf - 2;
	buf[n++] = '\n';
	cx_err e;
	cx_write_all(fd, buf, (size_t)n, &e);
}

/* Run argv with its output into logfd, line by line; STEP lines update x. */
static int run_child(struct build *x, char *const argv[], int logfd, cx_err *err)
{
	struct builder *b = x->b;
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return cx_err_set(err, errno, "pipe");
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
	posix_spawnattr_init(&at);
	posix_spawnattr_setpgroup(&at, 0);
	sigset_t none;
	sigemptyset(&none);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
					  POSIX_SPAWN_SETSIGDEF);
	sigset_t all;
	sigfillset(&all);
	posix_spawnattr_setsigdefault(&at, &all);
	pid_t pid;
	pthread_mutex_lock(&b->mu);
	int rc = x->cancel ? ECANCELED : posix_spawnp(&pid, argv[0], &fa, &at, argv, environ);
	if (!rc)
		x->pid = pid;
	pthread_mutex_unlock(&b->mu);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(pfd[1]);
	if (rc) {
		close(pfd[0]);
		return cx_err_set(err, rc, "%s", rc == ECANCELED ? "canceled" : argv[0]);
	}
	char line[4096];
	size_t n = 0;
	int status = 0, exited = 0, eof = 0, pidfd = -1;
	uint64_t last_kill = 0;
	while (!exited) {
		pthread_mutex_lock(&b->mu);
		int cancel = x->cancel, late = cancel && cx_mono_ms() - x->cancel_ms > 30000;
		pthread_mutex_unlock(&b->mu);
		if (cancel &&
		    cx_mono_ms() - last_kill >=
			250) { /* a step that runs nothing (COPY, commit) ends by itself */
			last_kill = cx_mono_ms();
			late ? (void)kill(-pid, SIGKILL) : kill_below(pid);
		}
		struct pollfd pf = {pfd[0], POLLIN, 0};
		if (!eof && poll(&pf, 1, 250) > 0) {
			char buf[4096];
			ssize_t r = read(pfd[0], buf, sizeof buf);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				eof = 1; /* buildah closed its output: it is exiting */
			for (ssize_t i = 0; i < r; i++) {
				if (buf[i] != '\n' && n < sizeof line - 1) {
					line[n++] = buf[i];
					continue;
				}
				line[n] = '\0';
				n = 0;
				log_line(logfd, "%s", line);
				int st, m;
				if (sscanf(line, "STEP %d/%d:", &st, &m) == 2) {
					pthread_mutex_lock(&b->mu);
					x->st.step = st;
					x->st.steps = m;
					pthread_mutex_unlock(&b->mu);
				}
			}
			if (r > 0)
				continue;
		}
		/* buildah exited? (WNOWAIT: its pid, the group's id, stays reserved) */
		siginfo_t si;
		si.si_pid = 0;
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
		    si.si_pid == pid)
			exited = 1;
		else if (eof) {
			/* Output closed, buildah not gone yet: wait for its exit on a
			 * pidfd (bounded, so a cancel is still seen). */
			if (pidfd < 0)
				pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
			struct pollfd pw = {.fd = pidfd, .events = POLLIN};
			(void)poll(&pw, pidfd >= 0 ? 1 : 0, 100); /* no pidfd (old kernel): a 100 ms step */
		}
	}
	if (pidfd >= 0)
		close(pidfd);
	if (n) {
		line[n] = '\0';
		log_line(logfd, "%s", line);
	}
	kill(-pid,
	     SIGKILL); /* what a canceled RUN left behind in the group (none after a normal exit) */
	close(pfd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&b->mu);
	x->pid = 0;
	int canceled = x->cancel;
	pthread_mutex_unlock(&b->mu);
	if (canceled)
		return cx_err_set(err, ECANCELED, "canceled");
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	return cx_err_set(err, EIO, "%s %s exited with %s %d", argv[0], argv[3],
			  WIFEXITED(status) ? "status" : "signal",
			  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* The last lines of the log, for a failed build's error. */
static void log_tail(const char *path, char *out, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	off_t end = lseek(fd, 0, SEEK_END);
	size_t want = cap - 1;
	off_t from = end > (off_t)want ? end - (off_t)want : 0;
	ssize_t r = pread(fd, out, want, from);
	close(fd);
	out[r > 0 ? r : 0] = '\0';
}

static void progress_to_log(void *arg, const char *line)
{
	log_line(*(int *)arg, "import: %s", line);
}

static void *build_thread(void *arg)
{
	struct build *x = arg;
	struct builder *b = x->b;
	cx_err err = CX_ERR_INIT;
	int logfd = open(x->st.log_path, O_WRONLY | O_APPEND | O_CLOEXEC);
	uint64_t t0 = cx_mono_ms();
	char tag[128], ctx[1100], df[1200], oci[1100], ocidest[1200], basearg[600];
	snprintf(tag, sizeof tag, "localhost/cortex-build:%.16s", x->st.hash + 7);
	snprintf(ctx, sizeof ctx, "%s/ctx", x->stage);
	snprintf(df, sizeof df, "%s/Dockerfile", ctx);
	snprintf(oci, sizeof oci, "%s/oci", x->stage);
	snprintf(ocidest, sizeof ocidest, "oci:%s", oci);
	snprintf(basearg, sizeof basearg, "BASE=%s", b->base);
	const char *drv = b->driver[0] ? b->driver : NULL;
	/* argv[3] names the subcommand in errors: keep "--storage-driver D" or "--log-level warn"
	 * first */
	char *bud[] = {b->buildah,
		       drv ? "--storage-driver" : "--log-level",
		       drv ? (char *)drv : "warn",
		       "bud",
		       "--isolation",
		       "chroot",
		       "--force-rm",
		       "--layers",
		       "-t",
		       tag,
		       "-f",
		       df,
		       b->base[0] ? "--build-arg" : ctx,
		       b->base[0] ? basearg : NULL,
		       ctx,
		       NULL};
	char *push[] = {b->buildah,
			drv ? "--storage-driver" : "--log-level",
			drv ? (char *)drv : "warn",
			"push",
			"--quiet",
			tag,
			ocidest,
			NULL};
	int rc;
	log_line(logfd, "build %s: context %s", x->st.id, x->st.hash);
	rc = run_child(x, bud, logfd, &err);
	if (!rc) {
		log_line(logfd, "exporting %s as an OCI layout", tag);
		rc = run_child(x, push, logfd, &err);
	}
	char names[MAX_NAMES][128];
	pthread_mutex_lock(&b->mu);
	memcpy(names, x->names, sizeof names);
	pthread_mutex_unlock(&b->mu);
	char cache[1200];
	snprintf(cache, sizeof cache, "%s/cache/%.64s", b->dir, x->st.hash + 7);
	for (int i = 0; !rc && i < MAX_NAMES; i++) {
		if (!names[i][0])
			continue;
		log_line(logfd, "importing into the image store as %s", names[i]);
		rc = imgstore_import_dir(b->st, names[i], oci, progress_to_log, &logfd, &err);
		struct image_info *info = NULL;
		if (!rc && !imgstore_get(b->st, names[i], &info, &err)) {
			pthread_mutex_lock(&b->mu);
			snprintf(x->st.digest, sizeof x->st.digest, "%s", info->digest);
			pthread_mutex_unlock(&b->mu);
			image_info_free(info);
		}
	}
	if (!rc) { /* keep the layout for cache hits under other names */
		char co[1300], dg[1300];
		snprintf(co, sizeof co, "%s/oci", cache);
		snprintf(dg, sizeof dg, "%s/digest", cache);
		cx_rm_rf(cache);
		cx_err e2;
		if (!mkdir_p(cache, &e2) && !rename(oci, co)) {
			FILE *f = fopen(dg, "we");
			if (f) {
				fprintf(f, "%s\n", x->st.digest);
				fclose(f);
			}
		}
	}
	if (rc)
		log_line(logfd, "build failed: %s", err.msg);
	else
		log_line(logfd, "build done in %.1fs: %s", (double)(cx_mono_ms() - t0) / 1000.0,
			 x->st.digest);
	if (logfd >= 0)
		close(logfd);
	cx_rm_rf(x->stage);
	pthread_mutex_lock(&b->mu);
	if (rc) {
		x->st.state = err.code == ECANCELED ? BUILD_CANCELED : BUILD_FAILED;
		char tail[700];
		log_tail(x->st.log_path, tail, sizeof tail);
		snprintf(x->st.error, sizeof x->st.error, "%s; log ends with:\n%s", err.msg, tail);
	} else {
		x->st.state = BUILD_DONE;
	}
	pthread_mutex_unlock(&b->mu);
	return NULL;
}

static struct build *find_name(struct builder *b, const char *name)
{
	for (struct build *x = b->builds; x; x = x->next) /* newest first */
		for (int i = 0; i < MAX_NAMES; i++)
			if (!strcmp(x->names[i], name))
				return x;
	return NULL;
}

static int add_name(struct build *x, const char *name)
{
	for (int i = 0; i < MAX_NAMES; i++)
		if (!strcmp(x->names[i], name))
			return 0;
	for (int i = 0; i < MAX_NAMES; i++)
		if (!x->names[i][0]) {
			snprintf(x->names[i], sizeof x->names[i], "%s", name);
			return 0;
		}
	return -1;
}

#define KEEP_BUILDS 256

/* Join the threads of finished builds (each is past its last lock: the join
 * is immediate) and forget the oldest finished builds past KEEP_BUILDS, with
 * their logs.  b->mu held. */
static void reap_builds(struct builder *b)
{
	unsigned n = 0;
	for (struct build **pp = &b->builds; *pp;) {
		struct build *x = *pp;
		if (x->has_thread && x->st.state != BUILD_RUNNING) {
			pthread_join(x->thread, NULL);
			x->has_thread = 0;
		}
		if (++n > KEEP_BUILDS && x->st.state != BUILD_RUNNING && !x->has_thread) {
			*pp = x->next;
			unlink(x->st.log_path);
			free(x);
			continue;
		}
		pp = &x->next;
	}
}

/* A new record at the head of the list (b->mu held). */
static struct build *new_build(struct builder *b, const char *name, const char *user,
			       const char *hash)
{
	reap_builds(b);
	struct build *x = calloc(1, sizeof *x);
	if (!x)
		return NULL;
	x->b = b;
	char rnd[9];
	cx_random_hex(rnd, 4);
	snprintf(x->st.id, sizeof x->st.id, "b%u-%s", ++b->seq, rnd);
	snprintf(x->st.hash, sizeof x->st.hash, "%s", hash);
	snprintf(x->st.log_path, sizeof x->st.log_path, "%s/logs/%s.log", b->dir, x->st.id);
	snprintf(x->stage, sizeof x->stage, "%s/stage/%s", b->dir, x->st.id);
	snprintf(x->user, sizeof x->user, "%s", user ? user : "");
	add_name(x, name);
	x->next = b->builds;
	b->builds = x;
	return x;
}

/* A cache hit: the name gets the kept layout unless it already holds it. */
static int from_cache(struct builder *b, const char *name, const char *user, const char *hash,
		      struct build_status *out, cx_err *err)
{
	char cache[1200], dg[1300], oci[1300], digest[72] = "";
	snprintf(cache, sizeof cache, "%s/cache/%.64s", b->dir, hash + 7);
	snprintf(dg, sizeof dg, "%s/digest", cache);
	snprintf(oci, sizeof oci, "%s/oci", cache);
	FILE *f = fopen(dg, "re");
	if (!f)
		return CX_NOTFOUND;
	if (!fgets(digest, sizeof digest, f))
		digest[0] = '\0';
	fclose(f);
	digest[strcspn(digest, "\n")] = '\0';
	struct image_info *info = NULL;
	int have = !imgstore_get(b->st, name, &info, &(cx_err){0}) && !strcmp(info->digest, digest);
	if (info)
		image_info_free(info);
	if (!have && imgstore_import_dir(b->st, name, oci, NULL, NULL, err) < 0) {
		cx_rm_rf(cache); /* a broken cache entry: build again */
		return CX_NOTFOUND;
	}
	pthread_mutex_lock(&b->mu);
	struct build *x = new_build(b, name, user, hash);
	if (!x) {
		pthread_mutex_unlock(&b->mu);
		return cx_err_set(err, ENOMEM, "build");
	}
	x->st.state = BUILD_DONE;
	x->st.cached = 1;
	snprintf(x->st.digest, sizeof x->st.digest, "%s", digest);
	*out = x->st;
	pthread_mutex_unlock(&b->mu);
	int fd = open(out->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0) {
		log_line(fd, "build %s: context %s", out->id, hash);
		log_line(fd, "cached: this context was built before as %s%s", digest,
			 have ? " (the image already holds it)"
			      : "; imported from the build cache");
		close(fd);
	}
	return 0;
}

int builder_submit(struct builder *b, const char *name, const char *user, const char *ctx_tar,
		   struct build_status *out, cx_err *err)
{
	struct stat st;
	if (stat(ctx_tar, &st) < 0)
		return cx_err_set(err, errno, "build context %s", ctx_tar);
	if ((uint64_t)st.st_size > b->max_context)
		return build_err(err, EFBIG, "build context over %llu bytes",
				 (unsigned long long)b->max_context);
	char tmp[1100];
	char rnd[17];
	cx_random_hex(rnd, 8);
	snprintf(tmp, sizeof tmp, "%s/stage/new-%s", b->dir, rnd);
	char ctx[1200];
	snprintf(ctx, sizeof ctx, "%s/ctx", tmp);
	if (mkdir_p(ctx, err) < 0)
		return -1;
	char hash[72];
	struct stat ds;
	if (build_extract(ctx_tar, ctx, b->max_context, err) < 0)
		goto fail;
	char dfp[1300];
	snprintf(dfp, sizeof dfp, "%s/Dockerfile", ctx);
	if (lstat(dfp, &ds) < 0 || !S_ISREG(ds.st_mode)) {
		build_err(err, EINVAL, "the build context has no Dockerfile at its top");
		goto fail;
	}
	if (build_hash_dir(ctx, b->base, hash, err) < 0)
		goto fail;

	/* Join, cache or start under one hold of the lock: two requests for the
	 * same context never start two builds. */
	char digest_file[1300];
	snprintf(digest_file, sizeof digest_file, "%s/cache/%.64s/digest", b->dir, hash + 7);
	pthread_mutex_lock(&b->mu);
	for (struct build *x = b->builds; x; x = x->next)
		if (x->st.state == BUILD_RUNNING && !x->cancel && !strcmp(x->st.hash, hash)) {
			add_name(x, name);
			/* the name's latest build is this one: move it to the head */
			*out = x->st;
			out->joined = 1;
			struct build **pp = &b->builds;
			while (*pp != x)
				pp = &(*pp)->next;
			*pp = x->next;
			x->next = b->builds;
			b->builds = x;
			pthread_mutex_unlock(&b->mu);
			cx_rm_rf(tmp);
			return 0;
		}
	if (access(digest_file, F_OK) == 0) {
		pthread_mutex_unlock(&b->mu);
		int c = from_cache(b, name, user, hash, out, err);
		if (c != CX_NOTFOUND) {
			cx_rm_rf(tmp);
			return c;
		}
		pthread_mutex_lock(&b->mu); /* a broken cache entry (now removed): build */
	}
	unsigned all = 0, mine = 0;
	for (struct build *x = b->builds; x; x = x->next)
		if (x->st.state == BUILD_RUNNING &&
		    !x->cancel) { /* a canceled one is on its way out */
			all++;
			mine += user && *user && !strcmp(x->user, user);
		}
	if (all >= b->max_builds || mine >= b->max_per_user) {
		pthread_mutex_unlock(&b->mu);
		build_err(err, EAGAIN, "%s",
			  all >= b->max_builds
			      ? "too many builds running; try again later"
			      : "you have a build running already; try again when it ends");
		goto fail;
	}
	struct build *x = new_build(b, name, user, hash);
	if (!x || rename(tmp, x->stage) < 0) {
		pthread_mutex_unlock(&b->mu);
		cx_err_set(err, x ? errno : ENOMEM, "build stage");
		goto fail;
	}
	int fd = open(x->st.log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	x->st.state = BUILD_RUNNING;
	int e = pthread_create(&x->thread, NULL, build_thread, x);
	if (e) {
		x->st.state = BUILD_FAILED;
		snprintf(x->st.error, sizeof x->st.error, "cannot start a build thread: %s",
			 strerror(e));
	} else {
		x->has_thread = 1;
	}
	*out = x->st;
	pthread_mutex_unlock(&b->mu);
	return 0;
fail:
	cx_rm_rf(tmp);
	return -1;
}

int builder_status(struct builder *b, const char *name, struct build_status *out)
{
	pthread_mutex_lock(&b->mu);
	struct build *x = find_name(b, name);
	if (x)
		*out = x->st;
	pthread_mutex_unlock(&b->mu);
	return x ? 0 : CX_NOTFOUND;
}

void builder_cancel(struct builder *b, const char *name)
{
	pthread_mutex_lock(&b->mu);
	for (struct build *x = b->builds; x; x = x->next) {
		int others = 0, mine = 0;
		for (int i = 0; i < MAX_NAMES; i++) {
			if (!strcmp(x->names[i], name)) {
				mine = 1;
				x->names[i][0] = '\0';
			} else if (x->names[i][0]) {
				others++;
			}
		}
		if (mine && !others && x->st.state == BUILD_RUNNING)
			build_kill(x);
	}
	pthread_mutex_unlock(&b->mu);
}
