/* cgroup.c — one cgroup per sandbox, with memory, pids and cpu limits, on either
 * cgroup v2 (unified hierarchy at /sys/fs/cgroup) or v1/hybrid (a tmpfs at
 * /sys/fs/cgroup with one hierarchy per controller; v2 may also be mounted
 * at /sys/fs/cgroup/unified, but without controllers, so it is unused).
 *
 * Layout: <root>[/<controller>]/<cgroup_name>/<id>.  The <cgroup_name> level
 * is shared by all sandboxes and never removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>

#include "sandbox-internal.h"

static const char *const v1_controllers[SBX_CG_MAX] = {"memory", "pids", "freezer", "cpu"};

/* cpu_max_millicpu is per this period (100 ms, the kernel's default). */
#define CPU_PERIOD_US 100000ULL

static bool wants_cpu(const sandbox_opts *o)
{
	return o->cpu_weight || o->cpu_max_millicpu;
}

static int write_file(const char *dir, const char *file, const char *val, cx_err *err)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, file);
	cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, "open %s", path);
	/* cgroupfs takes each value in one write(); a short write is an error. */
	ssize_t n = write(fd, val, strlen(val));
	if (n < 0)
		return cx_err_set(err, errno, "write %s (%s)", path, val);
	if ((size_t)n != strlen(val))
		return cx_err_set(err, EIO, "write %s (%s): short write", path, val);
	return 0;
}

/* Reads up to cap-1 bytes of dir/file into buf (NUL-terminated). */
static int read_file(const char *dir, const char *file, char *buf, size_t cap, cx_err *err)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, file);
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, "open %s", path);
	ssize_t n = read(fd, buf, cap - 1);
	if (n < 0)
		return cx_err_set(err, errno, "read %s", path);
	buf[n] = '\0';
	return 0;
}

static int mkdir_ok(const char *path, cx_err *err)
{
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", path);
	return 0;
}

/* mkdir <base>/<name> and <base>/<name>/<id>; a leftover <id> from a crashed
 * daemon is removed first (it fails with EBUSY if processes remain). */
static int make_dir(char **out, const char *base, const char *name, const char *id, cx_err *err)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", base, name);
	if (mkdir_ok(path, err) < 0)
		return -1;
	snprintf(path, sizeof path, "%s/%s/%s", base, name, id);
	if (mkdir(path, 0755) < 0) {
		if (errno != EEXIST || rmdir(path) < 0 || mkdir(path, 0755) < 0)
			return cx_err_set(err, errno, "mkdir %s", path);
	}
	*out = strdup(path);
	if (!*out)
		return cx_err_set(err, ENOMEM, "strdup");
	return 0;
}

static void fmt_limit(char *buf, size_t cap, uint64_t v)
{
	if (v)
		snprintf(buf, cap, "%" PRIu64, v);
	else
		snprintf(buf, cap, "max");
}

static int create_v2(sbx_cgroup *cg, const sandbox_opts *opts, const char *name, cx_err *err)
{
	char parent[4096];
	snprintf(parent, sizeof parent, "%s/%s", SBX_CGROUP_ROOT, name);
	if (mkdir_ok(parent, err) < 0)
		return -1;
	/* Controllers must be enabled on every level above the leaf. */
	const char *ctrl = wants_cpu(opts) ? "+memory +pids +cpu" : "+memory +pids";
	if (write_file(SBX_CGROUP_ROOT, "cgroup.subtree_control", ctrl, err) < 0 ||
	    write_file(parent, "cgroup.subtree_control", ctrl, err) < 0)
		return -1;
	if (make_dir(&cg->dirs[0], SBX_CGROUP_ROOT, name, opts->id, err) < 0)
		return -1;
	char v[32];
	fmt_limit(v, sizeof v, opts->memory_max);
	if (write_file(cg->dirs[0], "memory.max", v, err) < 0)
		return -1;
	fmt_limit(v, sizeof v, opts->pids_max);
	if (write_file(cg->dirs[0], "pids.max", v, err) < 0)
		return -1;
	if (opts->cpu_weight) {
		snprintf(v, sizeof v, "%u", opts->cpu_weight);
		if (write_file(cg->dirs[0], "cpu.weight", v, err) < 0)
			return -1;
	}
	if (opts->cpu_max_millicpu) {
		snprintf(v, sizeof v, "%llu %llu",
			 (unsigned long long)opts->cpu_max_millicpu * CPU_PERIOD_US / 1000,
			 CPU_PERIOD_US);
		if (write_file(cg->dirs[0], "cpu.max", v, err) < 0)
			return -1;
	}
	return 0;
}

static int create_v1(sbx_cgroup *cg, const sandbox_opts *opts, const char *name, cx_err *err)
{
	for (int c = 0; c < SBX_CG_MAX; c++) {
		char base[4096];
		if (c == SBX_CG_CPU && !wants_cpu(opts)) /* only for its limits */
			continue;
		snprintf(base, sizeof base, "%s/%s", SBX_CGROUP_ROOT, v1_controllers[c]);
		struct stat st;
		if (stat(base, &st) < 0) {
			if (c == SBX_CG_FREEZER) /* only needed for pause; optional */
				continue;
			return cx_err_set(err, errno, "cgroup v1 hierarchy %s", base);
		}
		if (make_dir(&cg->dirs[c], base, name, opts->id, err) < 0)
			return -1;
	}
	char v[32];
	if (opts->memory_max) {
		fmt_limit(v, sizeof v, opts->memory_max);
		if (write_file(cg->dirs[SBX_CG_MEMORY], "memory.limit_in_bytes", v, err) < 0)
			return -1;
	}
	fmt_limit(v, sizeof v, opts->pids_max);
	if (write_file(cg->dirs[SBX_CG_PIDS], "pids.max", v, err) < 0)
		return -1;
	const char *cpu = cg->dirs[SBX_CG_CPU];
	if (opts->cpu_weight) {
		/* v2 weight 100 (the default) is v1's 1024 shares; the kernel's floor is 2. */
		uint64_t shares = (uint64_t)opts->cpu_weight * 1024 / 100;
		snprintf(v, sizeof v, "%" PRIu64, shares < 2 ? 2 : shares);
		if (write_file(cpu, "cpu.shares", v, err) < 0)
			return -1;
	}
	if (opts->cpu_max_millicpu) {
		snprintf(v, sizeof v, "%llu", CPU_PERIOD_US);
		if (write_file(cpu, "cpu.cfs_period_us", v, err) < 0)
			return -1;
		snprintf(v, sizeof v, "%llu",
			 (unsigned long long)opts->cpu_max_millicpu * CPU_PERIOD_US / 1000);
		if (write_file(cpu, "cpu.cfs_quota_us", v, err) < 0)
			return -1;
	}
	return 0;
}

int sbx_cgroup_create(sbx_cgroup *cg, const sandbox_opts *opts, cx_err *err)
{
	memset(cg, 0, sizeof *cg);
	struct statfs sfs;
	if (statfs(SBX_CGROUP_ROOT, &sfs) < 0)
		return cx_err_set(err, errno, "statfs %s", SBX_CGROUP_ROOT);
	cg->v2 = sfs.f_type == CGROUP2_SUPER_MAGIC;
	const char *name = opts->cgroup_name ? opts->cgroup_name : "cortex";
	int r = cg->v2 ? create_v2(cg, opts, name, err) : create_v1(cg, opts, name, err);
	if (r < 0) {
		cx_err tmp = CX_ERR_INIT;
		sbx_cgroup_remove(cg, &tmp);
		return cx_err_wrap(err, "cgroup");
	}
	return 0;
}

int sbx_cgroup_add_pid(const sbx_cgroup *cg, pid_t pid, cx_err *err)
{
	char v[32];
	snprintf(v, sizeof v, "%d", (int)pid);
	for (int c = 0; c < SBX_CG_MAX; c++)
		if (cg->dirs[c] && write_file(cg->dirs[c], "cgroup.procs", v, err) < 0)
			return -1;
	return 0;
}

int sbx_cgroup_is_empty(const sbx_cgroup *cg, cx_err *err)
{
	for (int c = 0; c < SBX_CG_MAX; c++) {
		char buf[64];
		if (!cg->dirs[c])
			continue;
		if (read_file(cg->dirs[c], "cgroup.procs", buf, sizeof buf, err) < 0)
			return err && err->code == ENOENT ? 1 : -1;
		if (buf[0])
			return 0;
	}
	return 1;
}

/* ---- waiting for a cgroup state, without fixed sleeps ----
 *
 * cg_wait() re-checks `done` until it says yes or timeout_ms passes.  With a
 * `watch` file (cgroup v2's cgroup.events, which the kernel marks modified on
 * every "populated"/"frozen" change) it blocks on inotify between checks.
 * cgroup v1 files raise no notification at all (neither poll nor inotify; only
 * the per-hierarchy release_agent, which is not ours to take), so there it is
 * a bounded exponential backoff: 0.1, 0.2, 0.4 ... 25.6 ms between checks (a
 * v1 freeze of a busy sandbox settles within ~100 us; a 1 ms first step
 * made it cost 1.2 ms).  The v2 wait re-checks on the same steps too: the
 * kernel sends at most one cgroup.events notification per ~10 ms per file
 * (cgroup_file_notify(), CGROUP_FILE_NOTIFY_MIN_INTV) and delays the rest, so
 * a thaw right after a freeze, or a freeze right after a task joined, was
 * seen 4-12 ms late on inotify alone. */
typedef int (*cg_check_fn)(void *ctx, cx_err *err); /* 1 done, 0 not yet, -1 error */

static int cg_wait(const char *watch, cg_check_fn done, void *ctx, int timeout_ms, cx_err *err)
{
	int r = done(ctx, err);
	if (r != 0)
		return r < 0 ? -1 : 0;
	cleanup_close int ifd = -1;
	if (watch) {
		ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
		if (ifd < 0 || inotify_add_watch(ifd, watch, IN_MODIFY) < 0)
			return cx_err_set(err, errno, "inotify %s", watch);
	}
	uint64_t deadline = cx_mono_ms() + (uint64_t)timeout_ms;
	long backoff_us = 100;
	for (;;) {
		/* Re-check after arming the watch: the change may have come first. */
		if ((r = done(ctx, err)) != 0)
			return r < 0 ? -1 : 0;
		uint64_t now = cx_mono_ms();
		if (now >= deadline)
			return cx_err_set(err, ETIMEDOUT, "still waiting after %d ms", timeout_ms);
		long left_us = (long)(deadline - now) * 1000;
		long us = backoff_us < left_us ? backoff_us : left_us;
		struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
		if (backoff_us < 25600)
			backoff_us *= 2;
		if (ifd >= 0) {
			/* The event, or the next backoff step if it is held back. */
			struct pollfd p = {.fd = ifd, .events = POLLIN};
			if (ppoll(&p, 1, &ts, NULL) < 0 && errno != EINTR)
				return cx_err_set(err, errno, "poll inotify %s", watch);
			char ev[4096];
			while (read(ifd, ev, sizeof ev) > 0)
				; /* drain; the state itself is re-read above */
		} else {
			/* Bounded exponential backoff (0.1..25.6 ms, capped by the deadline),
			 * not a fixed sleep: cgroup v1 files (tasks, freezer.state) raise no
			 * inotify or poll event, so re-reading them is the only signal there is. */
			nanosleep(&ts, NULL); /* backoff step, not a fixed sleep (see above) */
		}
	}
}

struct events_want {
	const char *dir;
	const char *want; /* e.g. "frozen 1", "populated 0" */
};

static int events_has(void *ctx, cx_err *err)
{
	struct events_want *w = ctx;
	char buf[256];
	if (read_file(w->dir, "cgroup.events", buf, sizeof buf, err) < 0)
		return err && err->code == ENOENT ? 1 : -1;
	return strstr(buf, w->want) != NULL;
}

static int cg_all_empty(void *ctx, cx_err *err)
{
	return sbx_cgroup_is_empty(ctx, err);
}

int sbx_cgroup_wait_empty(const sbx_cgroup *cg, int timeout_ms, cx_err *err)
{
	if (cg->v2 && cg->dirs[0]) {
		char path[PATH_MAX];
		snprintf(path, sizeof path, "%s/cgroup.events", cg->dirs[0]);
		struct events_want w = {cg->dirs[0], "populated 0"};
		if (cg_wait(path, events_has, &w, timeout_ms, err) < 0)
			return cx_err_wrap(err, "%s: wait until empty", cg->dirs[0]);
		return 0;
	}
	if (cg_wait(NULL, cg_all_empty, (void *)cg, timeout_ms, err) < 0)
		return cx_err_wrap(err, "cgroup: wait until empty");
	return 0;
}

struct v1_state {
	const char *dir;
	const char *want;
	uint64_t next_retry_ms;
};

/* v1 freezes in one pass over the tasks (freeze_cgroup()); a task that was
 * mid-fork or mid-exec in that pass, or woke and ran again before it reached
 * the freezer, leaves the cgroup in FREEZING until someone asks again.
 * Writing FROZEN again re-runs the pass, so while it is still FREEZING the
 * request is repeated every 20 ms (seen under TSan on 2 loaded cores: one
 * pass left a just-started shell running and the freeze timed out). */
static int v1_freezer_is(void *ctx, cx_err *err)
{
	struct v1_state *v = ctx;
	char buf[32];
	if (read_file(v->dir, "freezer.state", buf, sizeof buf, err) < 0)
		return -1;
	if (strncmp(buf, v->want, strlen(v->want)) == 0)
		return 1;
	uint64_t now = cx_mono_ms();
	if (strncmp(buf, "FREEZING", 8) == 0 && now >= v->next_retry_ms) {
		v->next_retry_ms = now + 20;
		if (write_file(v->dir, "freezer.state", v->want, err) < 0)
			return -1;
	}
	return 0;
}

/* Asks for the state, then waits until the kernel reports it reached:
 * freezing is asynchronous on both versions (v1 passes through FREEZING). */
static int set_freeze(const sbx_cgroup *cg, bool frozen, cx_err *err)
{
	if (cg->v2) {
		if (write_file(cg->dirs[0], "cgroup.freeze", frozen ? "1" : "0", err) < 0)
			return -1;
		char path[PATH_MAX];
		snprintf(path, sizeof path, "%s/cgroup.events", cg->dirs[0]);
		struct events_want w = {cg->dirs[0], frozen ? "frozen 1" : "frozen 0"};
		if (cg_wait(path, events_has, &w, SBX_FREEZE_TIMEOUT_MS, err) < 0)
			return cx_err_wrap(err, "%s: not %s", path, w.want);
		return 0;
	}
	const char *dir = cg->dirs[SBX_CG_FREEZER];
	const char *want = frozen ? "FROZEN" : "THAWED";
	if (write_file(dir, "freezer.state", want, err) < 0)
		return -1;
	struct v1_state v = {dir, want, cx_mono_ms() + 20};
	if (cg_wait(NULL, v1_freezer_is, &v, SBX_FREEZE_TIMEOUT_MS, err) < 0)
		return cx_err_wrap(err, "%s/freezer.state: not %s", dir, want);
	return 0;
}

int sbx_cgroup_freeze(const sbx_cgroup *cg, bool frozen, cx_err *err)
{
	if (cg->v2 ? !cg->dirs[0] : !cg->dirs[SBX_CG_FREEZER])
		return cx_err_set(err, cg->v2 ? ENOENT : ENOTSUP, "cgroup: %s",
				  cg->v2 ? "not created" : "v1: no freezer hierarchy");
	if (set_freeze(cg, frozen, err) == 0)
		return 0;
	/* A task that does not stop in time (e.g. in uninterruptible I/O) would
	 * leave the sandbox half frozen: undo, so it is either paused or running. */
	if (frozen) {
		cx_err tmp = CX_ERR_INIT;
		(void)set_freeze(cg, false, &tmp);
	}
	return -1;
}

/* Sends sig to every pid listed in dir/cgroup.procs; *n += how many were
 * listed.  A missing dir lists none. */
static int signal_listed(const char *dir, int sig, int *n, cx_err *err)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/cgroup.procs", dir);
	FILE *fp = fopen(path, "re");
	if (!fp)
		return errno == ENOENT ? 0 : cx_err_set(err, errno, "open %s", path);
	int pid, ret = 0;
	while (fscanf(fp, "%d", &pid) == 1) {
		(*n)++;
		if (pid > 0 && kill(pid, sig) < 0 && errno != ESRCH && ret == 0)
			ret = cx_err_set(err, errno, "kill %d (listed in %s)", pid, path);
	}
	fclose(fp);
	return ret;
}

/* cg_wait check: SIGKILL whatever is still listed; done when nothing is. */
static int kill_listed(void *ctx, cx_err *err)
{
	const sbx_cgroup *cg = ctx;
	int n = 0;
	for (int c = 0; c < SBX_CG_MAX; c++)
		if (cg->dirs[c] && signal_listed(cg->dirs[c], SIGKILL, &n, err) < 0)
			return -1;
	return n == 0;
}

int sbx_cgroup_frozen(const sbx_cgroup *cg)
{
	char buf[256];
	cx_err err = CX_ERR_INIT;
	const char *dir = cg->v2 ? cg->dirs[0] : cg->dirs[SBX_CG_FREEZER];
	if (!dir || read_file(dir, cg->v2 ? "cgroup.freeze" : "freezer.state", buf, sizeof buf, &err) < 0 ||
	    !buf[0])
		return -1;
	if (cg->v2)
		return buf[0] == '1';
	return strncmp(buf, "THAWED", 6) != 0;
}

int sbx_cgroup_kill(const sbx_cgroup *cg, int timeout_ms, cx_err *err)
{
	if (cg->v2 && cg->dirs[0]) {
		/* cgroup.kill (5.14+) kills every task at once, frozen or not. */
		cx_err tmp = CX_ERR_INIT;
		if (write_file(cg->dirs[0], "cgroup.kill", "1", &tmp) == 0)
			return sbx_cgroup_wait_empty(cg, timeout_ms, err);
		if (tmp.code != ENOENT) {
			if (err)
				*err = tmp;
			return -1;
		}
	}
	/* By pid: freeze first, so that no listed task can exit and its pid be
	 * reused between reading cgroup.procs and kill(); then thaw, and every
	 * task dies on its pending SIGKILL before it runs another instruction
	 * (v1 frozen tasks act on no signal until thawed).  Without a freezer
	 * the kill is still repeated until nothing is listed. */
	bool freezer = cg->v2 ? cg->dirs[0] != NULL : cg->dirs[SBX_CG_FREEZER] != NULL;
	cx_err tmp = CX_ERR_INIT;
	if (freezer)
		(void)set_freeze(cg, true, &tmp); /* a task stuck in I/O: kill anyway */
	int r = kill_listed((void *)cg, err);
	if (freezer && set_freeze(cg, false, &tmp) < 0) {
		if (err && r == 0)
			*err = tmp;
		return cx_err_wrap(err, "cgroup: kill");
	}
	if (r < 0)
		return cx_err_wrap(err, "cgroup: kill");
	if (cg_wait(NULL, kill_listed, (void *)cg, timeout_ms, err) < 0)
		return cx_err_wrap(err, "cgroup: kill until empty");
	return 0;
}

int sbx_cgroup_find_at(sbx_cgroup *cg, const char *root, const char *name, const char *id,
		       cx_err *err)
{
	memset(cg, 0, sizeof *cg);
	struct statfs sfs;
	if (statfs(root, &sfs) < 0)
		return cx_err_set(err, errno, "statfs %s", root);
	cg->v2 = sfs.f_type == CGROUP2_SUPER_MAGIC;
	int found = 0;
	for (int c = 0; c < (cg->v2 ? 1 : SBX_CG_MAX); c++) {
		char path[PATH_MAX];
		if (cg->v2)
			snprintf(path, sizeof path, "%s/%s/%s", root, name, id);
		else
			snprintf(path, sizeof path, "%s/%s/%s/%s", root, v1_controllers[c], name,
				 id);
		struct stat st;
		if (stat(path, &st) < 0) {
			if (errno == ENOENT)
				continue;
			cx_err_set(err, errno, "stat %s", path);
			goto fail;
		}
		if (!(cg->dirs[c] = strdup(path))) {
			cx_err_set(err, ENOMEM, "strdup");
			goto fail;
		}
		found = 1;
	}
	return found;
fail:
	for (int c = 0; c < SBX_CG_MAX; c++) {
		free(cg->dirs[c]);
		cg->dirs[c] = NULL;
	}
	return -1;
}

struct rmdir_ctx {
	const char *dir;
	int errnum;
};

/* Done when rmdir succeeds or fails for any reason but EBUSY (a dying task can
 * hold a v1 cgroup for a moment after cgroup.procs reads empty). */
static int try_rmdir(void *ctx, cx_err *err)
{
	(void)err;
	struct rmdir_ctx *r = ctx;
	if (rmdir(r->dir) == 0) {
		r->errnum = 0;
		return 1;
	}
	r->errnum = errno;
	return errno != EBUSY;
}

struct rmdirat_ctx {
	int dfd;
	const char *name;
	int errnum;
};

static int try_rmdirat(void *ctx, cx_err *err)
{
	(void)err;
	struct rmdirat_ctx *r = ctx;
	if (unlinkat(r->dfd, r->name, AT_REMOVEDIR) == 0) {
		r->errnum = 0;
		return 1;
	}
	r->errnum = errno;
	return errno != EBUSY;
}

int sbx_cgroup_rmdir_at(int dfd, const char *name, int timeout_ms)
{
	struct rmdirat_ctx r = {dfd, name, 0};
	cx_err tmp = CX_ERR_INIT;
	(void)cg_wait(NULL, try_rmdirat, &r, timeout_ms, &tmp);
	return r.errnum ? -1 : 0;
}

int sbx_cgroup_remove(sbx_cgroup *cg, cx_err *err)
{
	int ret = 0;
	for (int c = 0; c < SBX_CG_MAX; c++) {
		if (!cg->dirs[c])
			continue;
		struct rmdir_ctx r = {cg->dirs[c], 0};
		cx_err tmp = CX_ERR_INIT;
		(void)cg_wait(NULL, try_rmdir, &r, 1000, &tmp);
		if (r.errnum && r.errnum != ENOENT && ret == 0)
			ret = cx_err_set(err, r.errnum, "rmdir %s", cg->dirs[c]);
		free(cg->dirs[c]);
		cg->dirs[c] = NULL;
	}
	return ret;
}
