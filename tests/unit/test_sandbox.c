/* test_sandbox.c — the sandbox from the outside: namespaces, mounts, uid,
 * fds, session, no_new_privs/seccomp, cgroups, sandbox_write_file, stop,
 * persistence and dying with the creator.  Needs root (CAP_SYS_ADMIN) and
 * cgroups; run by ctest with CORTEX_TEST_TMP set.  With CX_TEST_FORKSERVER=1
 * (unit.test_sandbox_forkserver) the same cases run with the fork server
 * started, as cortexd starts it: every monitor is then made by the helper.
 *
 * Programs run inside through /bin/sh -c with stdout+stderr on a pipe read
 * to EOF, so each check sees exactly what the sandboxed process saw. */
#include <errno.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox-internal.h"
#include "sandbox_fixture.h"

#define MEM_MAX (300ULL << 20)
#define PIDS_MAX 77

static char g_base[512]; /* per-run scratch dir */
static int g_leak_fd = -1, g_leak_fd_cloexec = -1;

/* ---- helpers ---- */

static void fixture_init(fixture *f, const char *tag)
{
	fixture_init_dirs(f, g_base, "t", tag);
	/* The hidden dir lives under /var/tmp, not under the test dir: when the
	 * checkout is under /tmp (CI clones into mktemp -d), the sandbox's own
	 * /tmp would hide it anyway and the mask would go untested. */
	pathf(f->hide, sizeof f->hide, "/var/tmp/cortex-test-hide-%s", f->id);
	mkdir_owned(f->hide, 0);
	/* Something to hide: the daemon's data dir, world-readable on purpose. */
	char secret[700];
	pathf(secret, sizeof secret, "%s/secret.db", f->hide);
	write_host_file(secret, "secret\n", 0644);
	f->hide_list[0] = f->hide;
	f->hide_list[1] = NULL;
	f->opts.hide = f->hide_list;
	f->opts.memory_max = MEM_MAX;
	f->opts.pids_max = PIDS_MAX;
}

/* ---- shared sandbox for read-only checks ---- */

static fixture g_main;

static int group_setup(void **state)
{
	(void)state;
	if (scratch_dir(g_base, sizeof g_base, "sandbox") < 0)
		return -1;
	/* fds the daemon holds must not reach the sandbox, with or without
	 * O_CLOEXEC (the monitor closes what a concurrent fork might leak). */
	g_leak_fd = open("/dev/null", O_RDONLY);
	g_leak_fd_cloexec = open("/dev/null", O_RDONLY | O_CLOEXEC);
	/* After the leak fds: the helper must close what it inherits, too. */
	const char *fs = getenv("CX_TEST_FORKSERVER");
	if (fs && !strcmp(fs, "1")) {
		cx_err err = CX_ERR_INIT;
		if (sandbox_forkserver_start(getenv("SBX_FORK_HELPER"), &err) < 0 ||
		    sandbox_forkserver_pid() <= 0) {
			fprintf(stderr, "fork server: %s\n", err.msg);
			return -1;
		}
	}
	return 0;
}

/* /proc/<pid>/status's PPid, and its comm in comm[]; -1 if unreadable. */
static pid_t ppid_comm(pid_t pid, char *comm, size_t cap)
{
	char p[64], buf[4096];
	snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
	FILE *f = fopen(p, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	int pp = -1;
	const char *q = strstr(buf, "\nPPid:");
	if (!q || sscanf(q + 7, "%d", &pp) != 1)
		return -1;
	if (sscanf(buf, "Name:\t%63s", comm) != 1 || cap < 64)
		return -1;
	return pp;
}

static int group_teardown(void **state)
{
	(void)state;
	sandbox_destroy(g_main.sb);
	g_main.sb = NULL;
	char cmd[700];
	pathf(cmd, sizeof cmd, "rm -rf '%s' /var/tmp/cortex-test-hide-t*", g_base);
	return system(cmd) == 0 ? 0 : -1;
}

static sandbox *main_sb(void)
{
	if (!g_main.sb) {
		fixture_init(&g_main, "main");
		fixture_start(&g_main);
	}
	return g_main.sb;
}

static void test_pid_namespace(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	const char *out = sh(sb, "echo self=$$; ls /proc | grep -E '^[0-9]+$' | wc -l");
	int self = -1, count = -1;
	assert_int_equal(sscanf(out, "self=%d %d", &self, &count), 2);
	/* init (1), the shell, ls, grep, wc: a handful, never the host's. */
	if (count < 2 || count > 8 || self > 20) {
		print_error("expected a fresh pid namespace, got shell pid %d and %d pids in "
			    "/proc\n", self, count);
		fail();
	}
	char mine[32];
	pathf(mine, sizeof mine, "\n%d\n", (int)getpid());
	char script[128];
	pathf(script, sizeof script, "echo; ls /proc; test -e /proc/%d && echo HOSTPID", (int)getpid());
	out = sh(sb, script);
	assert_not_contains(out, mine);
	assert_not_contains(out, "HOSTPID");
	assert_true(sandbox_init_pid(sb) > 1);
	/* The monitor (init's parent) is our child either way, named so. */
	char comm[64];
	pid_t mon = ppid_comm(sandbox_init_pid(sb), comm, sizeof comm);
	assert_true(mon > 1);
	assert_int_equal(ppid_comm(mon, comm, sizeof comm), getpid());
	assert_string_equal(comm, "cortex-monitor");
	/* With the fork server, it made this one (and the next). */
	const char *fs = getenv("CX_TEST_FORKSERVER");
	bool with = fs && !strcmp(fs, "1");
	uint64_t before = sandbox_forkserver_spawned();
	assert_true(with ? before >= 1 : before == 0);
	/* With the cortex-sbxfork program, the helper runs it and the monitor
	 * is a copy of it (not of this process); without, both are our copies. */
	const char *prog = getenv("SBX_FORK_HELPER");
	if (prog && access(prog, X_OK) < 0)
		prog = NULL; /* unit.test_sandbox_forkserver_fork: a path with nothing there */
	if (with) {
		char want[4096], exe[4096], p[64];
		if (!realpath(prog ? prog : "/proc/self/exe", want))
			fail_msg("realpath %s", prog ? prog : "/proc/self/exe");
		pid_t srv[2] = {sandbox_forkserver_pid(), mon};
		for (int i = 0; i < 2; i++) {
			pathf(p, sizeof p, "/proc/%d/exe", (int)srv[i]);
			ssize_t n = readlink(p, exe, sizeof exe - 1);
			assert_true(n > 0);
			exe[n] = '\0';
			assert_string_equal(exe, want);
		}
		/* The program gets none of our environment (CX_TEST_FORKSERVER is
		 * in it): only sanitizer settings cross the exec. */
		if (prog) {
			char env[8192];
			pathf(p, sizeof p, "/proc/%d/environ", (int)srv[0]);
			FILE *ef = fopen(p, "r");
			assert_non_null(ef);
			size_t en = fread(env, 1, sizeof env - 1, ef);
			fclose(ef);
			for (size_t i = 0; i < en; i += strlen(env + i) + 1) {
				env[en] = '\0';
				if (strncmp(env + i, "ASAN_OPTIONS=", 13) && strncmp(env + i, "UBSAN_OPTIONS=", 14) &&
				    strncmp(env + i, "LSAN_OPTIONS=", 13) && strncmp(env + i, "TSAN_OPTIONS=", 13))
					fail_msg("the fork server's environment has %s", env + i);
			}
		}
	}
	fixture f;
	fixture_init(&f, "fs");
	cx_err err = CX_ERR_INIT;
	if (sandbox_create(&f.sb, &f.opts, &err) < 0)
		fail_msg("create: %s", err.msg);
	assert_int_equal(sandbox_forkserver_spawned(), before + (with ? 1 : 0));
	assert_true(strstr(sh(f.sb, "echo ok"), "ok") != NULL);
	sandbox_destroy(f.sb);
}

static void test_identity(void **state)
{
	(void)state;
	const char *out = sh(main_sb(), "id -u; id -g; id -G; hostname");
	char want[128];
	pathf(want, sizeof want, "65534\n65534\n65534\ncortex-%.12s\n", g_main.id);
	assert_string_equal(out, want);
}

static void test_writable_places(void **state)
{
	(void)state;
	const char *out = sh(main_sb(),
			     "for p in /etc/x /usr/x /x /opt/x /work/x /home/agent/x /workspace/x "
			     "/tmp/x /run/cortex/x /dev/shm/x /dev/x /proc/x; do "
			     "if (echo hi > $p) 2>/dev/null; then echo \"$p ok\"; else echo \"$p no\"; fi; "
			     "done; rm -f /home/agent/x /workspace/x /run/cortex/x");
	assert_string_equal(out, "/etc/x no\n/usr/x no\n/x no\n/opt/x no\n/work/x no\n"
				 "/home/agent/x ok\n/workspace/x ok\n/tmp/x ok\n/run/cortex/x ok\n"
				 "/dev/shm/x ok\n/dev/x no\n/proc/x no\n");
	struct stat st;
	assert_int_equal(stat("/etc/x", &st), -1);
	/* Devices still work on the read-only /dev. */
	out = sh(main_sb(), "echo a > /dev/null && head -c 4 /dev/zero | wc -c && "
			    "head -c 4 /dev/urandom | wc -c");
	assert_string_equal(out, "4\n4\n");
}

static void test_hidden_path(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	char script[1400];
	pathf(script, sizeof script,
	      "ls -A '%s' | wc -l; cat '%s/secret.db' 2>/dev/null || echo unreadable; "
	      "touch '%s/y' 2>/dev/null || echo readonly",
	      g_main.hide, g_main.hide, g_main.hide);
	assert_string_equal(sh(sb, script), "0\nunreadable\nreadonly\n");
	/* The dir it lives in is visible: the mask is only on the data dir. */
	pathf(script, sizeof script, "test -d /var/tmp && echo visible");
	assert_string_equal(sh(sb, script), "visible\n");
}

static void test_no_leaked_fds(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	assert_true(g_leak_fd >= 0 && g_leak_fd_cloexec >= 0);
	/* A process that opens nothing itself (a shell would hold pipeline fds
	 * for a moment): exactly stdio. */
	const char *argv[] = {"/bin/sleep", "60", NULL};
	sandbox_exec_opts eo = SANDBOX_EXEC_OPTS_INIT;
	eo.argv = argv;
	cx_err err = CX_ERR_INIT;
	pid_t pid = -1;
	assert_ok(sandbox_exec(sb, &pid, &eo, &err), err);
	char script[128];
	pathf(script, sizeof script, "ls /proc/%d/fd | tr '\\n' ' '; kill %d", (int)pid, (int)pid);
	const char *out = sh(sb, script);
	assert_string_equal(out, "0 1 2 ");
	/* Init's fds (control socket) are out of reach: it is not dumpable. */
	out = sh(sb, "ls /proc/1/fd >/dev/null 2>&1 && echo readable || echo denied");
	assert_string_equal(out, "denied\n");
}

/* exit_fd (sandbox_exec_opts v3): the wait status arrives on it; closing our
 * end kills the program's whole process group; a missing program still fails
 * the call (no status, init closes the fd). */
static int32_t read_status(int fd)
{
	struct pollfd p = {fd, POLLIN, 0};
	int32_t st = -1;
	assert_int_equal(poll(&p, 1, 10000), 1);
	assert_int_equal(read(fd, &st, sizeof st), (ssize_t)sizeof st);
	return st;
}

static void test_exec_exit_fd(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	cx_err err = CX_ERR_INIT;
	int ex[2];
	assert_int_equal(pipe2(ex, O_CLOEXEC), 0);
	const char *argv[] = {"/bin/sh", "-c", "exit 7", NULL};
	sandbox_exec_opts eo = SANDBOX_EXEC_OPTS_INIT;
	eo.argv = argv;
	eo.exit_fd = ex[1];
	assert_ok(sandbox_exec(sb, NULL, &eo, &err), err);
	close(ex[1]);
	int32_t st = read_status(ex[0]);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 7);
	char c;
	assert_int_equal(read(ex[0], &c, 1), 0); /* then closed */
	close(ex[0]);

	/* A signal: the raw status says so. */
	assert_int_equal(pipe2(ex, O_CLOEXEC), 0);
	const char *argv2[] = {"/bin/sh", "-c", "kill -TERM $$", NULL};
	eo.argv = argv2;
	eo.exit_fd = ex[1];
	assert_ok(sandbox_exec(sb, NULL, &eo, &err), err);
	close(ex[1]);
	st = read_status(ex[0]);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
	close(ex[0]);

	/* Closing the read end kills the group, background children too. */
	assert_int_equal(pipe2(ex, O_CLOEXEC), 0);
	const char *argv3[] = {"/bin/sh", "-c", "sleep 611 & sleep 612", NULL};
	eo.argv = argv3;
	eo.exit_fd = ex[1];
	pid_t pid;
	assert_ok(sandbox_exec(sb, &pid, &eo, &err), err);
	close(ex[1]);
	const char *out = NULL;
	for (int i = 0; i < 100; i++) {
		out = sh(sb, "pgrep -c -f '^sleep 61[12]' || true");
		if (!strcmp(out, "2\n"))
			break;
		usleep(20000);
	}
	assert_string_equal(out, "2\n");
	close(ex[0]);
	for (int i = 0; i < 100; i++) {
		out = sh(sb, "pgrep -c -f '^sleep 61[12]' || true");
		if (!strcmp(out, "0\n"))
			break;
		usleep(20000);
	}
	assert_string_equal(out, "0\n");

	/* The program's exit ends its group: a background child does not outlive it. */
	assert_int_equal(pipe2(ex, O_CLOEXEC), 0);
	const char *argv4[] = {"/bin/sh", "-c", "sleep 613 & exit 0", NULL};
	eo.argv = argv4;
	eo.exit_fd = ex[1];
	assert_ok(sandbox_exec(sb, NULL, &eo, &err), err);
	close(ex[1]);
	st = read_status(ex[0]);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(ex[0]);
	for (int i = 0; i < 100; i++) {
		out = sh(sb, "pgrep -c -f '^sleep 613' || true");
		if (!strcmp(out, "0\n"))
			break;
		usleep(20000);
	}
	assert_string_equal(out, "0\n");

	/* A failed exec: -1, and init does not keep the fd (EOF). */
	assert_int_equal(pipe2(ex, O_CLOEXEC), 0);
	const char *argv5[] = {"/no/such/program", NULL};
	eo.argv = argv5;
	eo.exit_fd = ex[1];
	assert_int_equal(sandbox_exec(sb, NULL, &eo, &err), -1);
	assert_int_equal(err.code, ENOENT);
	close(ex[1]);
	assert_int_equal(read(ex[0], &c, 1), 0);
	close(ex[0]);
}

/* sandbox_openpty + ctty: the program's terminal is /dev/pts/N of the
 * sandbox's devpts, its controlling terminal, of the size we set. */
static void test_exec_pty(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	cx_err err = CX_ERR_INIT;
	int m, s, ex[2];
	assert_ok(sandbox_openpty(sb, &m, &s, &err), err);
	struct winsize ws = {.ws_row = 33, .ws_col = 111};
	assert_int_equal(ioctl(m, TIOCSWINSZ, &ws), 0);
	assert_int_equal(pipe2(ex, O_CLOEXEC), 0);
	const char *argv[] = {"/bin/sh", "-c", "tty; stty size; cat /proc/self/stat | cut -d' ' -f7", NULL};
	sandbox_exec_opts eo = SANDBOX_EXEC_OPTS_INIT;
	eo.argv = argv;
	eo.stdin_fd = eo.stdout_fd = eo.stderr_fd = s;
	eo.ctty = true;
	eo.exit_fd = ex[1];
	assert_ok(sandbox_exec(sb, NULL, &eo, &err), err);
	close(s);
	close(ex[1]);
	assert_int_equal(WEXITSTATUS(read_status(ex[0])), 0);
	close(ex[0]);
	char buf[512];
	size_t n = 0;
	for (int i = 0; i < 200 && n < sizeof buf - 1; i++) {
		ssize_t k = read(m, buf + n, sizeof buf - 1 - n);
		if (k > 0)
			n += (size_t)k;
		else if (k < 0 && errno == EAGAIN)
			usleep(10000);
		else
			break; /* EIO: no slave left */
	}
	buf[n] = '\0';
	close(m);
	int pts = -1, rows = 0, cols = 0, tty_nr = 0;
	assert_int_equal(sscanf(buf, "/dev/pts/%d\r\n%d %d\r\n%d", &pts, &rows, &cols, &tty_nr), 4);
	assert_true(pts >= 0);
	assert_int_equal(rows, 33);
	assert_int_equal(cols, 111);
	assert_true(tty_nr != 0); /* a controlling terminal */
}

static void test_session_no_tty(void **state)
{
	(void)state;
	/* /proc/<sh>/stat: pid (comm) state ppid pgrp session tty_nr ... */
	const char *out = sh(main_sb(), "cat /proc/$$/stat");
	int pid = 0, ppid = 0, pgrp = 0, sid = 0, tty = -1;
	const char *rp = strrchr(out, ')');
	assert_non_null(rp);
	assert_int_equal(sscanf(out, "%d", &pid), 1);
	assert_int_equal(sscanf(rp + 2, "%*c %d %d %d %d", &ppid, &pgrp, &sid, &tty), 4);
	assert_int_equal(tty, 0);   /* no controlling terminal */
	assert_int_equal(sid, pid); /* session leader */
	assert_int_equal(ppid, 1);  /* child of the sandbox's init */
}

static void test_nnp_seccomp_caps(void **state)
{
	(void)state;
	const char *out = sh(main_sb(), "grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd):' /proc/self/status");
	assert_string_equal(out, "CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n"
				 "NoNewPrivs:\t1\nSeccomp:\t2\n");
}

static void test_cgroup_limits(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	char dir[600], path[700], buf[4096], want[64];
	cg_dir(dir, sizeof dir, "memory", g_main.id);
	pathf(path, sizeof path, "%s/%s", dir, cgroup_v2() ? "memory.max" : "memory.limit_in_bytes");
	read_text(path, buf, sizeof buf);
	pathf(want, sizeof want, "%llu\n", (unsigned long long)MEM_MAX);
	assert_string_equal(buf, want);

	cg_dir(dir, sizeof dir, "pids", g_main.id);
	pathf(path, sizeof path, "%s/pids.max", dir);
	read_text(path, buf, sizeof buf);
	pathf(want, sizeof want, "%d\n", PIDS_MAX);
	assert_string_equal(buf, want);

	pathf(path, sizeof path, "%s/cgroup.procs", dir);
	read_text(path, buf, sizeof buf);
	pathf(want, sizeof want, "%d\n", (int)sandbox_init_pid(sb));
	assert_contains(buf, want);

	/* Processes started later are in it too (inherited from init). */
	const char *out = sh(sb, "cat /proc/self/cgroup");
	pathf(want, sizeof want, "/%s/%s", CG_NAME, g_main.id);
	assert_contains(out, want);
}

/* /sys inside: the sandbox's own cgroup at the path /proc/self/cgroup names,
 * read-only, with its real limit; the online CPUs; nothing else of the
 * host's /sys (sysview.c). */
static void test_sys_view(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	char dir[600], cmd[1600], want[64], host[256];
	cg_dir(dir, sizeof dir, "memory", g_main.id);
	const char *lim = cgroup_v2() ? "memory.max" : "memory.limit_in_bytes";

	pathf(cmd, sizeof cmd, "cat %s/%s", dir, lim);
	pathf(want, sizeof want, "%llu\n", (unsigned long long)MEM_MAX);
	assert_string_equal(sh(sb, cmd), want);
	/* Only this sandbox's dir under its parent: no sibling, no host root. */
	pathf(cmd, sizeof cmd, "ls %s/..", dir);
	pathf(want, sizeof want, "%s\n", g_main.id);
	assert_string_equal(sh(sb, cmd), want);
	/* Read-only, whoever asks: the mount refuses before permissions do. */
	pathf(cmd, sizeof cmd, "( echo 1 > %s/%s ) 2>&1 | grep -c 'Read-only file system'", dir,
	      lim);
	assert_string_equal(sh(sb, cmd), "1\n");
	assert_string_equal(sh(sb, "( touch /sys/x ) 2>&1 | grep -c 'Read-only file system'"),
			    "1\n");

	read_text("/sys/devices/system/cpu/online", host, sizeof host);
	assert_true(host[0]);
	assert_string_equal(sh(sb, "cat /sys/devices/system/cpu/online"), host);
	assert_string_equal(sh(sb, "ls /sys/class /sys/block /sys/firmware 2>/dev/null | wc -l"),
			    "0\n");
}

static void test_exec_errors_and_fd3(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	cx_err err = CX_ERR_INIT;
	const char *argv[] = {"/no/such/program", NULL};
	sandbox_exec_opts eo = SANDBOX_EXEC_OPTS_INIT;
	eo.argv = argv;
	assert_int_equal(sandbox_exec(sb, NULL, &eo, &err), -1);
	assert_contains(err.msg, "execve /no/such/program: No such file or directory");
	assert_int_equal(err.code, ENOENT);

	const char *argv2[] = {"/bin/true", NULL};
	eo.argv = argv2;
	eo.cwd = "/nonexistent";
	cx_err_clear(&err);
	assert_int_equal(sandbox_exec(sb, NULL, &eo, &err), -1);
	assert_contains(err.msg, "chdir /nonexistent");

	/* fd 3 and cwd reach the program. */
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	/* Extra fds arrive as 3, 4, ... in order, and nothing above them. */
	int p4[2];
	assert_int_equal(pipe2(p4, O_CLOEXEC), 0);
	const char *argv3[] = {"/bin/sh", "-c",
			       "pwd >&3; if echo x >&5; then echo five-open; else echo four >&4; fi",
			       NULL};
	eo.argv = argv3;
	eo.cwd = "/workspace";
	int extra[2] = {p[1], p4[1]};
	eo.extra_fds = extra;
	eo.n_extra_fds = 2;
	cx_err_clear(&err);
	assert_ok(sandbox_exec(sb, NULL, &eo, &err), err);
	close(p[1]);
	close(p4[1]);
	char buf[64] = {0};
	assert_true(read(p[0], buf, sizeof buf - 1) > 0);
	close(p[0]);
	assert_string_equal(buf, "/workspace\n");
	memset(buf, 0, sizeof buf);
	assert_true(read(p4[0], buf, sizeof buf - 1) > 0);
	close(p4[0]);
	assert_string_equal(buf, "four\n");

	/* Over the cap, or a hole in the list: refused before anything is sent. */
	int many[SANDBOX_EXEC_MAX_EXTRA_FDS + 1] = {0};
	eo.extra_fds = many;
	eo.n_extra_fds = SANDBOX_EXEC_MAX_EXTRA_FDS + 1;
	assert_int_equal(sandbox_exec(sb, NULL, &eo, &err), -1);
	assert_int_equal(err.code, EINVAL);
	int hole[2] = {1, -1};
	eo.extra_fds = hole;
	eo.n_extra_fds = 2;
	assert_int_equal(sandbox_exec(sb, NULL, &eo, &err), -1);
	assert_int_equal(err.code, EBADF);
	eo.extra_fds = NULL;
	eo.n_extra_fds = 0;
	assert_ok(sandbox_health(sb, &err), err);

	/* A big argv fits in one control message; over the cap is E2BIG. */
	static char big[200 << 10];
	memset(big, 'a', 100 << 10);
	big[100 << 10] = '\0';
	int q[2];
	assert_int_equal(pipe2(q, O_CLOEXEC), 0);
	const char *argv4[] = {"/bin/sh", "-c", "echo ${#1}", "sh", big, NULL};
	sandbox_exec_opts eo2 = SANDBOX_EXEC_OPTS_INIT;
	eo2.argv = argv4;
	eo2.stdout_fd = q[1];
	assert_ok(sandbox_exec(sb, NULL, &eo2, &err), err);
	close(q[1]);
	memset(buf, 0, sizeof buf);
	assert_true(read(q[0], buf, sizeof buf - 1) > 0);
	close(q[0]);
	assert_string_equal(buf, "102400\n");
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	cx_err_clear(&err);
	assert_int_equal(sandbox_exec(sb, NULL, &eo2, &err), -1);
	assert_int_equal(err.code, E2BIG);
	assert_ok(sandbox_health(sb, &err), err);
}

/* An EXEC request written by hand: the reply's code and message. */
static int raw_exec(sandbox *sb, uint32_t argc, uint32_t envc, const char *payload, size_t len,
		    char *msg, size_t cap)
{
	struct {
		sbx_ctl_hdr h;
		char p[256];
	} rq, rep;
	memset(&rq, 0, sizeof rq);
	assert_true(len <= sizeof rq.p);
	rq.h.type = SBX_CTL_EXEC;
	rq.h.seq = ++sb->seq;
	rq.h.argc = argc;
	rq.h.envc = envc;
	memcpy(rq.p, payload, len);
	assert_int_equal(send(sb->ctl_fd, &rq, sizeof rq.h + len, 0), (ssize_t)(sizeof rq.h + len));
	ssize_t n = recv(sb->ctl_fd, &rep, sizeof rep - 1, 0);
	assert_true(n >= (ssize_t)sizeof rep.h);
	assert_int_equal(rep.h.seq, rq.h.seq);
	assert_int_equal(rep.h.type, SBX_CTL_EXEC_ERR);
	pathf(msg, cap, "%.*s", (int)(n - (ssize_t)sizeof rep.h), rep.p);
	return rep.h.code;
}

/* Counts that do not match the strings sent are refused before init
 * touches its argv/envp tables, and init keeps serving. */
static void test_exec_bad_counts(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	static const char two[] = "/\0/bin/true"; /* cwd, argv[0] */
	char msg[256];
	assert_int_equal(raw_exec(sb, 1, 0xffffffffu, two, sizeof two, msg, sizeof msg), EINVAL);
	assert_string_equal(msg, "exec: bad argc/envc");
	assert_int_equal(raw_exec(sb, 1000, 0, two, sizeof two, msg, sizeof msg), EINVAL);
	assert_string_equal(msg, "exec: bad argc/envc");
	assert_int_equal(raw_exec(sb, 0, 1, two, sizeof two, msg, sizeof msg), EINVAL);
	/* Fewer strings than counted, within the bound. */
	assert_int_equal(raw_exec(sb, 2, 0, two, sizeof two, msg, sizeof msg), EINVAL);
	assert_string_equal(msg, "exec: malformed request");
	cx_err err = CX_ERR_INIT;
	assert_ok(sandbox_health(sb, &err), err);
}

static void test_write_file(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	cx_err err = CX_ERR_INIT;
	assert_ok(sandbox_write_file(sb, "/home/agent/.cfg/sub/f.txt", "hello", 5, 0640, &err), err);
	const char *out = sh(sb, "stat -c '%u %g %a' /home/agent/.cfg /home/agent/.cfg/sub "
				 "/home/agent/.cfg/sub/f.txt; cat /home/agent/.cfg/sub/f.txt; "
				 "ls -A /home/agent/.cfg/sub");
	assert_string_equal(out, "65534 65534 755\n65534 65534 755\n65534 65534 640\nhello"
				 "f.txt\n");
	/* Overwrite is atomic replace. */
	assert_ok(sandbox_write_file(sb, "/home/agent/.cfg/sub/f.txt", "bye", 3, 0600, &err), err);
	assert_string_equal(sh(sb, "cat /home/agent/.cfg/sub/f.txt"), "bye");

	/* Read-only places stay read-only for the daemon too. */
	cx_err_clear(&err);
	assert_int_equal(sandbox_write_file(sb, "/etc/cortex-x", "x", 1, 0644, &err), -1);
	assert_int_equal(err.code, EROFS);

	/* A symlink planted by the sandbox in the path is refused... */
	out = sh(sb, "ln -s /etc /tmp/evil && ln -s /etc/passwd /tmp/link && echo planted");
	assert_string_equal(out, "planted\n");
	cx_err_clear(&err);
	assert_int_equal(sandbox_write_file(sb, "/tmp/evil/x", "x", 1, 0644, &err), -1);
	assert_int_equal(err.code, ELOOP);
	assert_contains(err.msg, "/tmp/evil");
	struct stat st;
	assert_int_equal(stat("/etc/x", &st), -1);
	/* ...and one at the final name is replaced, not written through. */
	assert_ok(sandbox_write_file(sb, "/tmp/link", "new", 3, 0644, &err), err);
	out = sh(sb, "test -L /tmp/link || cat /tmp/link; echo; head -c 5 /etc/passwd");
	assert_string_equal(out, "new\nroot:");
	cx_err_clear(&err);
	assert_int_equal(sandbox_write_file(sb, "/tmp/../etc/x", "x", 1, 0644, &err), -1);
	assert_int_equal(err.code, EINVAL);
}

static void test_freeze(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	cx_err err = CX_ERR_INIT;
	char dir[600], path[700], buf[64];
	assert_ok(sandbox_freeze(sb, 1, &err), err);
	if (cgroup_v2()) {
		cg_dir(dir, sizeof dir, "", g_main.id);
		pathf(path, sizeof path, "%s/cgroup.freeze", dir);
		read_text(path, buf, sizeof buf);
		assert_string_equal(buf, "1\n");
	} else {
		cg_dir(dir, sizeof dir, "freezer", g_main.id);
		pathf(path, sizeof path, "%s/freezer.state", dir);
		read_text(path, buf, sizeof buf);
		assert_string_equal(buf, "FROZEN\n");
	}
	assert_ok(sandbox_freeze(sb, 0, &err), err);
	assert_ok(sandbox_health(sb, &err), err);
}

/* ---- lifecycle ---- */

static void test_create_errors(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f, "errors");
	cx_err err = CX_ERR_INIT;
	sandbox *sb = NULL;

	char missing[700];
	pathf(missing, sizeof missing, "%s/does-not-exist", f.ws);
	f.opts.workspace_dir = missing;
	assert_int_equal(sandbox_create(&sb, &f.opts, &err), -1);
	assert_null(sb);
	assert_contains(err.msg, "/workspace: No such file or directory");
	assert_contains(err.msg, missing);
	assert_int_equal(err.code, ENOENT);
	/* No cgroup left behind by the failed attempt. */
	char dir[600];
	struct stat st;
	cg_dir(dir, sizeof dir, "pids", f.id);
	assert_int_equal(stat(dir, &st), -1);

	f.opts.workspace_dir = f.ws;
	f.opts.uid = 0;
	cx_err_clear(&err);
	assert_int_equal(sandbox_create(&sb, &f.opts, &err), -1);
	assert_int_equal(err.code, EINVAL);

	f.opts.uid = SB_UID;
	f.opts.id = "../x";
	cx_err_clear(&err);
	assert_int_equal(sandbox_create(&sb, &f.opts, &err), -1);
	assert_contains(err.msg, "bad id");
}

static void test_stop_and_persistence(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f, "stop");
	fixture_start(&f);
	cx_err err = CX_ERR_INIT;
	pid_t init = sandbox_init_pid(f.sb);
	assert_true(init > 0);
	const char *out = sh(f.sb, "echo h > /home/agent/keep; echo w > /workspace/keep; "
				   "echo t > /tmp/gone; sleep 1000 >/dev/null 2>&1 & echo started");
	assert_string_equal(out, "started\n");

	assert_ok(sandbox_stop(f.sb, &err), err);
	assert_int_equal(sandbox_init_pid(f.sb), -1);
	assert_true(process_gone(init));
	char dir[600];
	struct stat st;
	const char *ctrls[] = {"memory", "pids", "freezer"};
	for (size_t i = 0; i < 3; i++) {
		cg_dir(dir, sizeof dir, ctrls[i], f.id);
		if (stat(dir, &st) == 0) {
			print_error("cgroup %s still exists after stop\n", dir);
			fail();
		}
	}
	assert_ok(sandbox_stop(f.sb, &err), err); /* idempotent */
	assert_int_equal(sandbox_health(f.sb, &err), -1);
	sandbox_destroy(f.sb);
	f.sb = NULL;

	/* Same dirs, new sandbox: home and workspace survive, /tmp does not. */
	fixture_start(&f);
	out = sh(f.sb, "cat /home/agent/keep /workspace/keep; ls /tmp | wc -l");
	assert_string_equal(out, "h\nw\n0\n");
	sandbox_destroy(f.sb);
	assert_true(process_gone(init));
}

static void test_dies_with_creator(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		/* Created from this process's only (main) thread, which then exits. */
		fixture f;
		fixture_init(&f, "orphan");
		cx_err err = CX_ERR_INIT;
		pid_t init = -1;
		if (sandbox_create(&f.sb, &f.opts, &err) == 0)
			init = sandbox_init_pid(f.sb);
		(void)!write(p[1], &init, sizeof init);
		_exit(0);
	}
	close(p[1]);
	pid_t init = -1;
	assert_int_equal(read(p[0], &init, sizeof init), (ssize_t)sizeof init);
	close(p[0]);
	assert_true(init > 0);
	waitpid(child, NULL, 0);
	bool gone = false;
	for (int i = 0; i < 500 && !(gone = process_gone(init)); i++)
		nanosleep(&(struct timespec){0, 10000000L}, NULL);
	if (!gone) {
		print_error("sandbox init %d still alive 5 s after its creator exited\n", (int)init);
		kill(init, SIGKILL);
		fail();
	}
	/* Nobody called stop: remove the orphaned cgroup dirs ourselves. */
	char id[32], dir[600];
	pathf(id, sizeof id, "t%d-orphan", (int)child);
	const char *ctrls[] = {"memory", "pids", "freezer"};
	for (size_t i = 0; i < 3; i++) {
		cg_dir(dir, sizeof dir, ctrls[i], id);
		for (int k = 0; k < 100 && rmdir(dir) < 0 && errno == EBUSY; k++)
			nanosleep(&(struct timespec){0, 10000000L}, NULL);
	}
}

static void *create_thread(void *arg)
{
	fixture *f = arg;
	cx_err err = CX_ERR_INIT;
	if (sandbox_create(&f->sb, &f->opts, &err) < 0)
		print_error("%s\n", err.msg);
	return NULL;
}

/* An upgrade restart's two halves in one process: a sandbox made by a thread
 * that then exits (execve ends every thread but one) lives on; it is let go
 * of (sandbox_handover_release) and taken back (sandbox_adopt) and works;
 * records that lie -- another init pid, a dead one, an fd that is not its
 * socket, another id's cgroup -- are refused. */
static void test_handover_adopt(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f, "handover");
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, create_thread, &f), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_non_null(f.sb);
	pid_t init = sandbox_init_pid(f.sb);
	nanosleep(&(struct timespec){0, 200000000L}, NULL);
	assert_false(process_gone(init)); /* the creating thread is gone, the sandbox is not */
	cx_err err = CX_ERR_INIT;
	assert_int_equal(sandbox_health(f.sb, &err), 0);

	sandbox_handover h;
	assert_int_equal(sandbox_handover_release(f.sb, &h, &err), 0);
	f.sb = NULL;
	assert_int_equal(h.init_pid, init);
	assert_false(fcntl(h.ctl_fd, F_GETFD) & FD_CLOEXEC); /* it must cross the execve */

	const char *id = f.opts.id;
	sandbox *sb = NULL;
	/* (A record's fd is the adopter's from then on, even when refused: the
	 * bad records get copies of it, so the real one keeps init alive.) */
	sandbox_handover bad = h;
	bad.init_pid = getpid(); /* not the monitor's child */
	bad.ctl_fd = dup(h.ctl_fd);
	assert_int_equal(sandbox_adopt(&sb, id, f.opts.cgroup_name, &bad, &err), -1);
	bad = h;
	bad.ctl_fd = 0; /* stdin: not its control socket (and not taken) */
	assert_int_equal(sandbox_adopt(&sb, id, f.opts.cgroup_name, &bad, &err), -1);
	assert_int_equal(fcntl(0, F_GETFD) >= 0, 1);
	bad = h;
	bad.ctl_fd = dup(h.ctl_fd);
	assert_int_equal(sandbox_adopt(&sb, "another-id", f.opts.cgroup_name, &bad, &err), -1); /* not its cgroup */
	bad = h;
	bad.monitor_pid = getppid(); /* not our child */
	bad.ctl_fd = dup(h.ctl_fd);
	assert_int_equal(sandbox_adopt(&sb, id, f.opts.cgroup_name, &bad, &err), -1);
	assert_null(sb);
	assert_false(process_gone(init)); /* an unverified record's pids are never signalled */

	if (sandbox_adopt(&sb, id, f.opts.cgroup_name, &h, &err) < 0)
		fail_msg("adopt: %s", err.msg);
	assert_non_null(sb);
	assert_int_equal(sandbox_init_pid(sb), init);
	assert_int_equal(sandbox_health(sb, &err), 0);
	assert_string_equal(sh(sb, "echo adopted"), "adopted\n");
	sandbox_destroy(sb);
	assert_true(process_gone(init));
}

/* kill -9 of the creator with keep_grace_s: the sandbox lives on; a record of
 * it (sandbox_record) lets another process take it back (sandbox_reclaim),
 * which refuses a record of another id; when nobody does within the grace,
 * the monitor kills init and removes the cgroup itself. */
struct crash_rec {
	sandbox_handover h;
	char id[64];
};

static pid_t crash_creator(const char *tag, uint32_t grace_s, struct crash_rec *r)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		fixture f;
		fixture_init(&f, tag);
		f.opts.keep_grace_s = grace_s;
		cx_err err = CX_ERR_INIT;
		struct crash_rec rec = {0};
		if (sandbox_create(&f.sb, &f.opts, &err) == 0)
			sandbox_record(f.sb, &rec.h);
		else
			print_error("create: %s\n", err.msg);
		snprintf(rec.id, sizeof rec.id, "%s", f.opts.id);
		(void)!write(p[1], &rec, sizeof rec);
		for (;;)
			pause(); /* until SIGKILL */
	}
	close(p[1]);
	assert_int_equal(read(p[0], r, sizeof *r), (ssize_t)sizeof *r);
	close(p[0]);
	assert_true(r->h.init_pid > 0);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	nanosleep(&(struct timespec){0, 300000000L}, NULL);
	return child;
}

static void test_reclaim_after_crash(void **state)
{
	(void)state;
	struct crash_rec r;
	crash_creator("crash", 30, &r);
	assert_false(process_gone(r.h.init_pid)); /* kept through the creator's kill -9 */
	cx_err err = CX_ERR_INIT;
	sandbox *sb = NULL;
	assert_int_equal(sandbox_reclaim(&sb, "another-id", CG_NAME, &r.h, &err), -1);
	assert_null(sb);
	assert_false(process_gone(r.h.init_pid));
	/* Paused (frozen): refused at once, not after a ping's timeout. */
	char fz[600];
	cg_dir(fz, sizeof fz, "freezer", r.id);
	strcat(fz, cgroup_v2() ? "/cgroup.freeze" : "/freezer.state");
	FILE *ff = fopen(fz, "w");
	struct stat fst;
	if (cgroup_v2() || stat("/sys/fs/cgroup/freezer", &fst) == 0)
		assert_non_null(ff); /* (v1 without a freezer: nothing can pause) */
	if (ff) {
		fputs(cgroup_v2() ? "1" : "FROZEN", ff);
		fclose(ff);
		uint64_t t0 = cx_mono_ms();
		assert_int_equal(sandbox_reclaim(&sb, r.id, CG_NAME, &r.h, &err), -1);
		assert_true(cx_mono_ms() - t0 < 2000);
		assert_int_equal(err.code, EAGAIN);
		ff = fopen(fz, "w");
		assert_non_null(ff);
		fputs(cgroup_v2() ? "0" : "THAWED", ff);
		fclose(ff);
		assert_false(process_gone(r.h.init_pid));
	}
	if (sandbox_reclaim(&sb, r.id, CG_NAME, &r.h, &err) < 0)
		fail_msg("reclaim: %s", err.msg);
	assert_int_equal(sandbox_init_pid(sb), r.h.init_pid);
	assert_string_equal(sh(sb, "echo reclaimed"), "reclaimed\n");
	sandbox_destroy(sb);
	assert_true(process_gone(r.h.init_pid));
	char dir[600];
	struct stat st;
	cg_dir(dir, sizeof dir, "pids", r.id);
	assert_int_not_equal(stat(dir, &st), 0);
}

static void test_grace_runs_out(void **state)
{
	(void)state;
	struct crash_rec r;
	crash_creator("grace", 1, &r);
	assert_false(process_gone(r.h.init_pid));
	bool gone = false;
	for (int i = 0; i < 500 && !(gone = process_gone(r.h.init_pid)); i++)
		nanosleep(&(struct timespec){0, 10000000L}, NULL);
	assert_true(gone);
	char dir[600];
	struct stat st;
	cg_dir(dir, sizeof dir, "pids", r.id);
	bool rmd = false;
	for (int i = 0; i < 300 && !(rmd = stat(dir, &st) != 0); i++)
		nanosleep(&(struct timespec){0, 10000000L}, NULL);
	if (!rmd) {
		print_error("cgroup %s left after the grace\n", dir);
		fail();
	}
	cx_err err = CX_ERR_INIT;
	sandbox *sb = NULL;
	assert_int_equal(sandbox_reclaim(&sb, r.id, CG_NAME, &r.h, &err), -1);
}

static void test_runtime_init(void **state)
{
	(void)state;
	pid_t c = fork();
	if (c == 0) {
		cx_err err = CX_ERR_INIT;
		int v = 0;
		if (sandbox_runtime_init(&err) != 0 || prctl(PR_GET_CHILD_SUBREAPER, &v) != 0)
			_exit(2);
		_exit(v == 1 ? 0 : 3);
	}
	int st = -1;
	assert_int_equal(waitpid(c, &st, 0), c);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pid_namespace),
		cmocka_unit_test(test_identity),
		cmocka_unit_test(test_writable_places),
		cmocka_unit_test(test_hidden_path),
		cmocka_unit_test(test_no_leaked_fds),
		cmocka_unit_test(test_session_no_tty),
		cmocka_unit_test(test_exec_exit_fd),
		cmocka_unit_test(test_exec_pty),
		cmocka_unit_test(test_nnp_seccomp_caps),
		cmocka_unit_test(test_cgroup_limits),
		cmocka_unit_test(test_sys_view),
		cmocka_unit_test(test_exec_errors_and_fd3),
		cmocka_unit_test(test_exec_bad_counts),
		cmocka_unit_test(test_write_file),
		cmocka_unit_test(test_freeze),
		cmocka_unit_test(test_create_errors),
		cmocka_unit_test(test_stop_and_persistence),
		cmocka_unit_test(test_dies_with_creator),
		cmocka_unit_test(test_runtime_init),
		cmocka_unit_test(test_handover_adopt),
		cmocka_unit_test(test_reclaim_after_crash),
		cmocka_unit_test(test_grace_runs_out),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
