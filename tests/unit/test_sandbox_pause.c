/* test_sandbox_pause.c — pausing a sandbox and cleaning up after a daemon
 * crash: sandbox_freeze really stops the processes (no CPU time while frozen,
 * the same process with the same memory after thaw), freeze and thaw are
 * idempotent, a frozen sandbox can be destroyed, a sandbox whose processes are
 * all gone cannot be frozen, and sandbox_reap_stale() removes what an owner
 * that was SIGKILLed left behind (frozen or not).  On a hybrid machine the v2
 * mechanism (cgroup.freeze, cgroup.events, cgroup.kill) is also exercised on
 * the controller-less v2 hierarchy at /sys/fs/cgroup/unified.
 *
 * Needs root and cgroups; run by ctest with CORTEX_TEST_TMP set.  The test
 * process is a child subreaper, like cortexd, so a dead owner's sandbox
 * processes come to it and are reaped here.  Waits poll with a deadline. */
#include <errno.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox_fixture.h"
#include "sandbox-internal.h"

#define OBSERVE_MS  300	 /* window in which a frozen process must not run */
#define DEADLINE_MS 5000 /* for things that should happen "soon" */
#define MAX_PIDS    16
#define V2_ROOT	    "/sys/fs/cgroup/unified" /* hybrid: v2 without controllers */

static char g_base[512]; /* per-run scratch dir */

/* ---- helpers ---- */

static void fixture_init(fixture *f, const char *tag)
{
	fixture_init_dirs(f, g_base, "p", tag);
	f->opts.pids_max = 64;
}

static void nap_ms(long ms)
{
	nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
}

/* Pids listed in a cgroup.procs file, without cmocka asserts (also used in
 * a forked child); count or -1. */
static int list_pids(const char *procs, pid_t *pids, int max)
{
	FILE *fp = fopen(procs, "re");
	if (!fp)
		return -1;
	int n = 0, p;
	while (n < max && fscanf(fp, "%d", &p) == 1)
		pids[n++] = p;
	fclose(fp);
	return n;
}

static int sandbox_pids(const char *id, pid_t *pids, int max)
{
	char dir[600], path[700];
	cg_dir(dir, sizeof dir, "pids", id);
	pathf(path, sizeof path, "%s/cgroup.procs", dir);
	return list_pids(path, pids, max);
}

/* Host pid of the sandbox process that is `inner` in the sandbox's pid
 * namespace (NSpid: <host> <inner>), or -1. */
static pid_t host_pid_of(const char *id, pid_t inner)
{
	pid_t pids[MAX_PIDS];
	int n = sandbox_pids(id, pids, MAX_PIDS);
	for (int i = 0; i < n; i++) {
		char path[64], buf[4096];
		pathf(path, sizeof path, "/proc/%d/status", (int)pids[i]);
		read_text(path, buf, sizeof buf);
		const char *ns = strstr(buf, "NSpid:");
		int host = 0, in = 0;
		if (ns && sscanf(ns, "NSpid: %d %d", &host, &in) == 2 && in == inner)
			return host;
	}
	return -1;
}

/* utime + stime of a host pid in clock ticks; *state gets the state letter. */
static unsigned long cpu_ticks(pid_t pid, char *state)
{
	char path[64], buf[1024];
	pathf(path, sizeof path, "/proc/%d/stat", (int)pid);
	read_text(path, buf, sizeof buf);
	const char *rp = strrchr(buf, ')');
	assert_non_null(rp);
	char st = '?';
	unsigned long ut = 0, stime = 0;
	/* after "(comm) ": state ppid pgrp session tty tpgid flags minflt cminflt
	 * majflt cmajflt utime stime */
	assert_int_equal(
	    sscanf(rp + 2, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &st, &ut, &stime),
	    3);
	if (state)
		*state = st;
	return ut + stime;
}

/* Waits until pid has used more CPU than `from`; false after the deadline. */
static bool ticks_advance(pid_t pid, unsigned long from)
{
	uint64_t end = cx_mono_ms() + DEADLINE_MS;
	while (cx_mono_ms() < end) {
		if (cpu_ticks(pid, NULL) > from)
			return true;
		nap_ms(5);
	}
	return false;
}

/* The kernel's own word on the sandbox cgroup: frozen or not. */
static bool cg_frozen(const char *id)
{
	char dir[600], path[700], buf[512];
	cg_dir(dir, sizeof dir, "freezer", id);
	if (cgroup_v2()) {
		pathf(path, sizeof path, "%s/cgroup.events", dir);
		read_text(path, buf, sizeof buf);
		return strstr(buf, "frozen 1") != NULL;
	}
	pathf(path, sizeof path, "%s/freezer.state", dir);
	read_text(path, buf, sizeof buf);
	return strcmp(buf, "FROZEN\n") == 0;
}

static void assert_no_cgroup(const char *id)
{
	const char *ctrls[] = {"memory", "pids", "freezer"};
	for (size_t i = 0; i < 3; i++) {
		char dir[600];
		struct stat st;
		cg_dir(dir, sizeof dir, ctrls[i], id);
		if (stat(dir, &st) == 0) {
			print_error("cgroup %s still exists\n", dir);
			fail();
		}
	}
}

/* Starts argv inside with stdin/stdout on the given fds (-1: /dev/null);
 * returns its pid inside the sandbox. */
static pid_t start(sandbox *sb, const char *script, int in_fd, int out_fd)
{
	const char *argv[] = {"/bin/sh", "-c", script, NULL};
	const char *envp[] = {"PATH=/usr/bin:/bin", NULL};
	sandbox_exec_opts eo = SANDBOX_EXEC_OPTS_INIT;
	eo.argv = argv;
	eo.envp = envp;
	eo.stdin_fd = in_fd;
	eo.stdout_fd = out_fd;
	cx_err err = CX_ERR_INIT;
	pid_t pid = -1;
	assert_ok(sandbox_exec(sb, &pid, &eo, &err), err);
	return pid;
}

#define BUSY "while :; do :; done"

/* One line from fd within ms (NUL-terminated, without the newline); false
 * if none came in time. */
static bool read_line(int fd, char *buf, size_t cap, int ms)
{
	size_t n = 0;
	uint64_t end = cx_mono_ms() + (uint64_t)ms;
	while (n < cap - 1) {
		uint64_t now = cx_mono_ms();
		if (now >= end)
			break;
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, (int)(end - now)) <= 0)
			continue;
		ssize_t k = read(fd, buf + n, 1);
		if (k <= 0)
			break;
		if (buf[n] == '\n') {
			buf[n] = '\0';
			return true;
		}
		n++;
	}
	buf[n] = '\0';
	return false;
}

/* Gone, a zombie, or past the point of no return: in do_exit (PF_EXITING).
 * A pid namespace's init stays there until its last child is reaped. */
static bool process_dying(pid_t pid)
{
	char buf[1024];
	const char *f = proc_stat_fields(pid, buf, sizeof buf);
	if (!f || f[0] == 'Z')
		return true;
	unsigned flags = 0;
	/* state ppid pgrp session tty tpgid flags */
	if (sscanf(f, "%*c %*d %*d %*d %*d %*d %u", &flags) != 1)
		return false;
	return (flags & 0x4u) != 0; /* PF_EXITING */
}

/* Reaps whatever orphans came to this subreaper until none of pids has a
 * /proc entry any more; false after the deadline. */
static bool reap_until_gone(const pid_t *pids, int n)
{
	uint64_t end = cx_mono_ms() + DEADLINE_MS;
	for (;;) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		bool any = false;
		for (int i = 0; i < n; i++) {
			char path[64];
			struct stat st;
			pathf(path, sizeof path, "/proc/%d", (int)pids[i]);
			any |= stat(path, &st) == 0;
		}
		if (!any)
			return true;
		if (cx_mono_ms() >= end)
			return false;
		nap_ms(5);
	}
}

typedef int (*freeze_fn)(void *obj, int frozen, cx_err *err);

static int sb_freeze(void *obj, int frozen, cx_err *err)
{
	return sandbox_freeze(obj, frozen, err);
}

static int cg_freeze(void *obj, int frozen, cx_err *err)
{
	return sbx_cgroup_freeze(obj, frozen != 0, err);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Freeze/thaw latency over repeated cycles, printed as min/median/max. */
static void measure_cycles(freeze_fn fn, void *obj, const char *label)
{
	enum { N = 21 };
	uint64_t fz[N], th[N];
	cx_err err = CX_ERR_INIT;
	for (int i = 0; i < N; i++) {
		uint64_t t0 = cx_mono_us();
		assert_ok(fn(obj, 1, &err), err);
		fz[i] = cx_mono_us() - t0;
		t0 = cx_mono_us();
		assert_ok(fn(obj, 0, &err), err);
		th[i] = cx_mono_us() - t0;
	}
	qsort(fz, N, sizeof fz[0], cmp_u64);
	qsort(th, N, sizeof th[0], cmp_u64);
	print_message("info: %s, %d cycles: freeze min/median/max %llu/%llu/%llu us, thaw "
		      "%llu/%llu/%llu us\n",
		      label, N, (unsigned long long)fz[0], (unsigned long long)fz[N / 2],
		      (unsigned long long)fz[N - 1], (unsigned long long)th[0],
		      (unsigned long long)th[N / 2], (unsigned long long)th[N - 1]);
}

static int group_setup(void **state)
{
	(void)state;
	if (scratch_dir(g_base, sizeof g_base, "pause") < 0)
		return -1;
	/* Like cortexd: a dead owner's sandbox processes re-parent to us. */
	return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

static int group_teardown(void **state)
{
	(void)state;
	char cmd[700];
	pathf(cmd, sizeof cmd, "rm -rf '%s'", g_base);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- freeze and thaw ---- */

static void test_freeze_stops_cpu(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f, "cpu");
	fixture_start(&f);
	cx_err err = CX_ERR_INIT;
	pid_t busy = host_pid_of(f.id, start(f.sb, BUSY, -1, -1));
	assert_true(busy > 0);
	assert_true(ticks_advance(busy, cpu_ticks(busy, NULL))); /* it runs */

	uint64_t t0 = cx_mono_us();
	assert_ok(sandbox_freeze(f.sb, 1, &err), err);
	uint64_t freeze_us = cx_mono_us() - t0;
	assert_true(cg_frozen(f.id)); /* FROZEN when the call returns, not later */
	char st = '?';
	unsigned long before = cpu_ticks(busy, &st);
	nap_ms(OBSERVE_MS);
	unsigned long after = cpu_ticks(busy, NULL);
	if (after != before) {
		print_error("frozen process %d used %lu ticks in %d ms\n", (int)busy,
			    after - before, OBSERVE_MS);
		fail();
	}
	assert_true(cg_frozen(f.id));

	t0 = cx_mono_us();
	assert_ok(sandbox_freeze(f.sb, 0, &err), err);
	uint64_t thaw_us = cx_mono_us() - t0;
	assert_false(cg_frozen(f.id));
	assert_true(ticks_advance(busy, after));
	print_message("info: %s: busy sandbox: freeze %llu us, thaw %llu us (task state while "
		      "frozen: %c)\n",
		      cgroup_v2() ? "cgroup v2" : "cgroup v1", (unsigned long long)freeze_us,
		      (unsigned long long)thaw_us, st);

	measure_cycles(sb_freeze, f.sb, "sandbox_freeze");
	assert_ok(sandbox_health(f.sb, &err), err);
	sandbox_destroy(f.sb);
	assert_true(process_gone(busy));
}

static void test_freeze_keeps_memory(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f, "mem");
	fixture_start(&f);
	cx_err err = CX_ERR_INIT;
	int in[2], out[2];
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	/* A counter and a random value that live only in the shell's memory. */
	pid_t inner = start(f.sb,
			    "n=0; s=$(od -An -N4 -tu4 /dev/urandom); "
			    "while read l; do n=$((n+1)); echo $n $s; done",
			    in[0], out[1]);
	close(in[0]);
	close(out[1]);
	pid_t host = host_pid_of(f.id, inner);
	assert_true(host > 0);
	char first[64], line[64];
	assert_int_equal(write(in[1], "a\n", 2), 2);
	assert_true(read_line(out[0], first, sizeof first, DEADLINE_MS));
	assert_true(strncmp(first, "1 ", 2) == 0);

	assert_ok(sandbox_freeze(f.sb, 1, &err), err);
	/* Frozen: the request waits in the pipe, unanswered. */
	assert_int_equal(write(in[1], "b\n", 2), 2);
	assert_false(read_line(out[0], line, sizeof line, OBSERVE_MS));
	/* Files are written without init, so also while it is frozen. */
	assert_ok(sandbox_write_file(f.sb, "/home/agent/while-frozen", "x", 1, 0644, &err), err);
	assert_ok(sandbox_freeze(f.sb, 0, &err), err);

	/* Same process, same memory: the counter goes on, the value is kept. */
	assert_true(read_line(out[0], line, sizeof line, DEADLINE_MS));
	char want[64];
	pathf(want, sizeof want, "2 %s", first + 2);
	assert_string_equal(line, want);
	assert_int_equal(host_pid_of(f.id, inner), host);
	assert_false(process_gone(host));
	assert_string_equal(sh(f.sb, "cat /home/agent/while-frozen"), "x");
	close(in[1]);
	close(out[0]);
	sandbox_destroy(f.sb);
}

static void test_freeze_idempotent(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f, "twice");
	fixture_start(&f);
	cx_err err = CX_ERR_INIT;
	assert_ok(sandbox_freeze(f.sb, 1, &err), err);
	assert_ok(sandbox_freeze(f.sb, 1, &err), err);
	assert_true(cg_frozen(f.id));
	assert_ok(sandbox_freeze(f.sb, 0, &err), err);
	assert_ok(sandbox_freeze(f.sb, 0, &err), err);
	assert_false(cg_frozen(f.id));
	assert_ok(sandbox_health(f.sb, &err), err);
	/* Thawing a sandbox that was never frozen is fine too. */
	assert_ok(sandbox_freeze(f.sb, 0, &err), err);
	/* A stopped sandbox is not running. */
	assert_ok(sandbox_stop(f.sb, &err), err);
	assert_fails(sandbox_freeze(f.sb, 1, &err), err, ESRCH);
	sandbox_destroy(f.sb);
}

static void test_destroy_frozen(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f, "dfrozen");
	fixture_start(&f);
	cx_err err = CX_ERR_INIT;
	start(f.sb, BUSY, -1, -1);
	start(f.sb, "sleep 1000", -1, -1);
	pid_t pids[MAX_PIDS];
	int n = sandbox_pids(f.id, pids, MAX_PIDS);
	assert_true(n >= 3); /* init, the loop, sleep (and its shell, if any) */
	assert_ok(sandbox_freeze(f.sb, 1, &err), err);
	assert_true(cg_frozen(f.id));

	uint64_t t0 = cx_mono_us();
	sandbox_destroy(f.sb);
	uint64_t us = cx_mono_us() - t0;
	for (int i = 0; i < n; i++)
		if (!process_gone(pids[i])) {
			print_error("pid %d survived destroy of a frozen sandbox\n", (int)pids[i]);
			fail();
		}
	assert_no_cgroup(f.id);

	/* The same for a running sandbox, for comparison. */
	fixture g;
	fixture_init(&g, "drunning");
	fixture_start(&g);
	start(g.sb, BUSY, -1, -1);
	start(g.sb, "sleep 1000", -1, -1);
	n = sandbox_pids(g.id, pids, MAX_PIDS);
	t0 = cx_mono_us();
	sandbox_destroy(g.sb);
	uint64_t us_running = cx_mono_us() - t0;
	for (int i = 0; i < n; i++)
		assert_true(process_gone(pids[i]));
	assert_no_cgroup(g.id);
	print_message("info: destroy: frozen sandbox %llu us, running sandbox %llu us\n",
		      (unsigned long long)us, (unsigned long long)us_running);
}

static void test_freeze_no_process(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f, "empty");
	fixture_start(&f);
	cx_err err = CX_ERR_INIT;
	pid_t init = sandbox_init_pid(f.sb);
	assert_int_equal(kill(init, SIGKILL), 0);
	pid_t pids[MAX_PIDS];
	uint64_t end = cx_mono_ms() + DEADLINE_MS;
	while (sandbox_pids(f.id, pids, MAX_PIDS) != 0 && cx_mono_ms() < end)
		nap_ms(5);
	assert_int_equal(sandbox_pids(f.id, pids, MAX_PIDS), 0);

	assert_fails(sandbox_freeze(f.sb, 1, &err), err, ESRCH);
	assert_contains(err.msg, "no process left");
	assert_false(cg_frozen(f.id));
	assert_ok(sandbox_freeze(f.sb, 0, &err), err);
	assert_ok(sandbox_stop(f.sb, &err), err);
	assert_no_cgroup(f.id);
	sandbox_destroy(f.sb);
}

/* ---- stale sandboxes after the owner died ---- */

struct owner_report {
	int ok;
	int n;
	pid_t pids[MAX_PIDS]; /* host pids in the sandbox cgroup */
	char msg[512];
};

/* Forks an owner that creates the sandbox f describes, starts a busy loop
 * and a sleep in it, freezes it if asked, reports its pids and waits; then
 * SIGKILLs the owner, so that nobody cleans up. */
static void owner_dies(fixture *f, bool frozen, struct owner_report *rep)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid_t owner = fork();
	assert_true(owner >= 0);
	if (owner == 0) {
		/* No cmocka asserts in here: report and wait to be killed. */
		struct owner_report r = {0};
		cx_err err = CX_ERR_INIT;
		const char *busy[] = {"/bin/sh", "-c", BUSY, NULL};
		const char *sleeper[] = {"/bin/sleep", "1000", NULL};
		sandbox_exec_opts eo = SANDBOX_EXEC_OPTS_INIT;
		sandbox *sb = NULL;
		int ok = sandbox_create(&sb, &f->opts, &err) == 0;
		eo.argv = busy;
		ok = ok && sandbox_exec(sb, NULL, &eo, &err) == 0;
		eo.argv = sleeper;
		ok = ok && sandbox_exec(sb, NULL, &eo, &err) == 0;
		ok = ok && (!frozen || sandbox_freeze(sb, 1, &err) == 0);
		r.ok = ok;
		snprintf(r.msg, sizeof r.msg, "%s", err.msg);
		if (ok)
			r.n = sandbox_pids(f->id, r.pids, MAX_PIDS);
		(void)!write(p[1], &r, sizeof r);
		for (;;)
			pause();
	}
	close(p[1]);
	assert_int_equal(read(p[0], rep, sizeof *rep), (ssize_t)sizeof *rep);
	close(p[0]);
	assert_int_equal(kill(owner, SIGKILL), 0);
	assert_int_equal(waitpid(owner, NULL, 0), owner);
	if (!rep->ok) {
		print_error("owner: %s\n", rep->msg);
		fail();
	}
	assert_true(rep->n >= 3); /* init, the loop, sleep */
}

static void reap_stale_case(const char *tag, bool frozen)
{
	fixture f;
	fixture_init(&f, tag);
	struct owner_report rep;
	owner_dies(&f, frozen, &rep);

	if (frozen && !cgroup_v2()) {
		/* The problem being solved: v1-frozen tasks outlive their owner. */
		nap_ms(OBSERVE_MS);
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		for (int i = 0; i < rep.n; i++)
			assert_false(process_gone(rep.pids[i]));
	}
	char dir[600];
	struct stat st;
	cg_dir(dir, sizeof dir, "pids", f.id);
	assert_int_equal(stat(dir, &st), 0); /* the cgroup stays */

	cx_err err = CX_ERR_INIT;
	int found = -1;
	uint64_t t0 = cx_mono_us();
	assert_ok(sandbox_reap_stale(CG_NAME, f.id, &found, &err), err);
	uint64_t us = cx_mono_us() - t0;
	assert_int_equal(found, 1);
	/* When the call returns every process has left the cgroup: dead, or
	 * in its last steps of exit, never to run again... */
	for (int i = 0; i < rep.n; i++)
		if (!process_dying(rep.pids[i])) {
			print_error("pid %d of stale sandbox %s is alive after reap\n",
				    (int)rep.pids[i], f.id);
			fail();
		}
	assert_no_cgroup(f.id);
	/* ...then gone for good, reaped by us, the subreaper. */
	if (!reap_until_gone(rep.pids, rep.n)) {
		print_error("processes of stale sandbox %s still exist %d ms after reap\n", f.id,
			    DEADLINE_MS);
		fail();
	}
	print_message("info: reap of a stale %s sandbox (%d processes): %llu us\n",
		      frozen ? "frozen" : "running", rep.n, (unsigned long long)us);

	found = -1;
	assert_ok(sandbox_reap_stale(CG_NAME, f.id, &found, &err), err);
	assert_int_equal(found, 0);
}

static void test_reap_stale_frozen(void **state)
{
	(void)state;
	reap_stale_case("stalefz", true);
}

static void test_reap_stale_running(void **state)
{
	(void)state;
	reap_stale_case("stalerun", false);
}

static void test_reap_stale_args(void **state)
{
	(void)state;
	cx_err err = CX_ERR_INIT;
	int found = -1;
	assert_fails(sandbox_reap_stale(CG_NAME, "../x", &found, &err), err, EINVAL);
	assert_contains(err.msg, "bad id");
	assert_int_equal(found, 0);
	assert_fails(sandbox_reap_stale(CG_NAME, "", &found, &err), err, EINVAL);
	assert_fails(sandbox_reap_stale("a/b", "x", &found, &err), err, EINVAL);
	assert_fails(sandbox_reap_stale("..", "x", &found, &err), err, EINVAL);
	found = -1;
	assert_ok(sandbox_reap_stale(CG_NAME, "no-such-sandbox", &found, &err), err);
	assert_int_equal(found, 0);
	found = -1;
	assert_ok(sandbox_reap_stale(NULL, "no-such-sandbox", &found, &err), err);
	assert_int_equal(found, 0);
}

/* ---- the v2 mechanism, on a hybrid machine's v2 hierarchy ---- */

static bool v2_hierarchy_usable(void)
{
	struct statfs s;
	char path[256];
	struct stat st;
	if (cgroup_v2() || statfs(V2_ROOT, &s) < 0 || s.f_type != CGROUP2_SUPER_MAGIC)
		return false;
	pathf(path, sizeof path, "%s/cgroup.procs", V2_ROOT);
	return stat(path, &st) == 0;
}

/* A child that spins (busy) or sleeps in pause(); killed by the test. */
static pid_t fork_child(bool busy)
{
	pid_t c = fork();
	if (c == 0) {
		if (busy)
			for (volatile unsigned long i = 0;; i++)
				;
		for (;;)
			pause();
	}
	assert_true(c > 0);
	return c;
}

static void test_v2_freeze_and_kill(void **state)
{
	(void)state;
	if (cgroup_v2() || !v2_hierarchy_usable()) {
		/* On a pure v2 machine the sandbox tests above already use v2. */
		print_message("info: no separate v2 hierarchy at %s; skipped\n", V2_ROOT);
		skip();
	}
	char parent[300], id[64], dir[400];
	pathf(id, sizeof id, "v2-%d", (int)getpid());
	pathf(parent, sizeof parent, "%s/%s", V2_ROOT, CG_NAME);
	pathf(dir, sizeof dir, "%s/%s", parent, id);
	assert_true(mkdir(parent, 0755) == 0 || errno == EEXIST);
	assert_int_equal(mkdir(dir, 0755), 0);
	sbx_cgroup cg = {.v2 = true};
	cg.dirs[0] = strdup(dir);
	cx_err err = CX_ERR_INIT;
	pid_t kids[2] = {fork_child(true), fork_child(false)};
	for (int i = 0; i < 2; i++)
		assert_ok(sbx_cgroup_add_pid(&cg, kids[i], &err), err);
	assert_true(ticks_advance(kids[0], cpu_ticks(kids[0], NULL)));

	uint64_t t0 = cx_mono_us();
	assert_ok(sbx_cgroup_freeze(&cg, true, &err), err);
	uint64_t freeze_us = cx_mono_us() - t0;
	char path[500], buf[256];
	pathf(path, sizeof path, "%s/cgroup.events", dir);
	read_text(path, buf, sizeof buf);
	assert_contains(buf, "frozen 1");
	unsigned long before = cpu_ticks(kids[0], NULL);
	nap_ms(OBSERVE_MS);
	assert_int_equal(cpu_ticks(kids[0], NULL), before);
	t0 = cx_mono_us();
	assert_ok(sbx_cgroup_freeze(&cg, false, &err), err);
	uint64_t thaw_us = cx_mono_us() - t0;
	read_text(path, buf, sizeof buf);
	assert_contains(buf, "frozen 0");
	assert_true(ticks_advance(kids[0], before));
	print_message("info: cgroup v2 (%s): freeze %llu us, thaw %llu us\n", V2_ROOT,
		      (unsigned long long)freeze_us, (unsigned long long)thaw_us);

	measure_cycles(cg_freeze, &cg, "cgroup v2 sbx_cgroup_freeze");

	/* Found as a stale cgroup, killed while frozen, removed. */
	assert_ok(sbx_cgroup_freeze(&cg, true, &err), err);
	sbx_cgroup found;
	assert_int_equal(sbx_cgroup_find_at(&found, V2_ROOT, CG_NAME, id, &err), 1);
	assert_true(found.v2);
	assert_string_equal(found.dirs[0], dir);
	assert_ok(sbx_cgroup_kill(&found, DEADLINE_MS, &err), err);
	for (int i = 0; i < 2; i++)
		assert_true(process_gone(kids[i]));
	assert_ok(sbx_cgroup_remove(&found, &err), err);
	struct stat st;
	assert_int_equal(stat(dir, &st), -1);
	assert_int_equal(sbx_cgroup_find_at(&found, V2_ROOT, CG_NAME, id, &err), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(waitpid(kids[i], NULL, 0), kids[i]);
	free(cg.dirs[0]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_freeze_stops_cpu),   cmocka_unit_test(test_freeze_keeps_memory),
	    cmocka_unit_test(test_freeze_idempotent),  cmocka_unit_test(test_destroy_frozen),
	    cmocka_unit_test(test_freeze_no_process),  cmocka_unit_test(test_reap_stale_frozen),
	    cmocka_unit_test(test_reap_stale_running), cmocka_unit_test(test_reap_stale_args),
	    cmocka_unit_test(test_v2_freeze_and_kill),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
