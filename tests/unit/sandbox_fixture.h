/* sandbox_fixture.h — helpers shared by the sandbox unit tests
 * (test_sandbox.c, test_sandbox_mount.c): string and error asserts, path
 * formatting, scratch dirs, a fixture that builds a sandbox's host dirs and
 * options, sh() to run /bin/sh -c inside and collect its output, and small
 * /proc readers.  Everything is static inline or a macro, so a test that
 * uses only part of it still compiles with -Werror. */
#ifndef CORTEX_TESTS_SANDBOX_FIXTURE_H
#define CORTEX_TESTS_SANDBOX_FIXTURE_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>

#include "sandbox.h"

#define SB_UID	65534
#define CG_NAME "cortex-test"

/* ---- asserts ---- */

#define assert_contains(hay, needle)                                                               \
	do {                                                                                       \
		const char *h_ = (hay), *n_ = (needle);                                            \
		if (!h_ || !strstr(h_, n_)) {                                                      \
			print_error("expected to find \"%s\" in:\n---\n%s\n---\n", n_,             \
				    h_ ? h_ : "(null)");                                           \
			fail();                                                                    \
		}                                                                                  \
	} while (0)
#define assert_not_contains(hay, needle)                                                           \
	do {                                                                                       \
		const char *h_ = (hay), *n_ = (needle);                                            \
		if (h_ && strstr(h_, n_)) {                                                        \
			print_error("expected NOT to find \"%s\" in:\n---\n%s\n---\n", n_, h_);    \
			fail();                                                                    \
		}                                                                                  \
	} while (0)
/* The call returns 0; err.msg is printed when not. */
#define assert_ok(call, err)                                                                       \
	do {                                                                                       \
		if ((call) != 0) {                                                                 \
			print_error("%s failed: %s\n", #call, (err).msg);                          \
			fail();                                                                    \
		}                                                                                  \
	} while (0)
/* The call fails with errno-style code `want`; err.msg is printed when not. */
#define assert_fails(call, err, want)                                                              \
	do {                                                                                       \
		cx_err_clear(&(err));                                                              \
		int r_ = (call);                                                                   \
		if (r_ != -1 || (err).code != (want)) {                                            \
			print_error("%s: expected -1 with code %d (%s), got %d with code "         \
				    "%d: %s\n",                                                    \
				    #call, (want), strerror(want), r_, (err).code, (err).msg);     \
			fail();                                                                    \
		}                                                                                  \
	} while (0)

/* ---- host files and dirs ---- */

static inline void pathf(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void pathf(char *out, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out, cap, fmt, ap);
	va_end(ap);
}

static inline void mkdir_owned(const char *path, uid_t uid)
{
	if (mkdir(path, 0755) < 0 && errno != EEXIST) {
		print_error("mkdir %s: %s\n", path, strerror(errno));
		fail();
	}
	assert_int_equal(chown(path, uid, uid), 0);
}

static inline void write_host_file(const char *path, const char *text, mode_t mode)
{
	FILE *fp = fopen(path, "w");
	if (!fp) {
		print_error("fopen %s: %s\n", path, strerror(errno));
		fail();
	}
	fputs(text, fp);
	fclose(fp);
	assert_int_equal(chmod(path, mode), 0);
}

/* Whole small file (procfs, cgroupfs: read until EOF). */
static inline void read_text(const char *path, char *buf, size_t cap)
{
	buf[0] = '\0';
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		print_error("open %s: %s\n", path, strerror(errno));
		fail();
	}
	size_t n = 0;
	ssize_t k = 0;
	while (n < cap - 1 && (k = read(fd, buf + n, cap - 1 - n)) > 0)
		n += (size_t)k;
	close(fd);
	assert_true(k >= 0);
	buf[n] = '\0';
}

/* The per-run scratch dir $CORTEX_TEST_TMP/<name>-<pid> (/tmp without the
 * variable), made fresh; 0, or -1 when it cannot be made. */
static inline int scratch_dir(char *out, size_t cap, const char *name)
{
	const char *tmp = getenv("CORTEX_TEST_TMP");
	if (!tmp)
		tmp = "/tmp";
	mkdir(tmp, 0755);
	pathf(out, cap, "%s/%s-%d", tmp, name, (int)getpid());
	return mkdir(out, 0755) < 0 ? -1 : 0;
}

/* ---- processes ---- */

static inline int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	int n = 0;
	for (struct dirent *de; (de = readdir(d));)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* /proc/<pid>/stat after "(comm) ", NUL-terminated in buf; NULL when the process is gone. */
static inline const char *proc_stat_fields(pid_t pid, char *buf, size_t cap)
{
	char path[64];
	pathf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	ssize_t n = read(fd, buf, cap - 1);
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	const char *rp = strrchr(buf, ')');
	return rp && rp[1] == ' ' ? rp + 2 : NULL;
}

static inline bool process_gone(pid_t pid)
{
	char buf[512];
	const char *f = proc_stat_fields(pid, buf, sizeof buf);
	return !f || f[0] == 'Z'; /* a zombie is dead too */
}

static inline bool cgroup_v2(void)
{
	struct statfs s;
	return statfs("/sys/fs/cgroup", &s) == 0 && s.f_type == CGROUP2_SUPER_MAGIC;
}

/* A sandbox's cgroup dir for a controller (v1) or the unified one (v2). */
static inline void cg_dir(char *out, size_t cap, const char *ctrl, const char *id)
{
	if (cgroup_v2())
		pathf(out, cap, "/sys/fs/cgroup/%s/%s", CG_NAME, id);
	else
		pathf(out, cap, "/sys/fs/cgroup/%s/%s/%s", ctrl, CG_NAME, id);
}

/* ---- the sandbox ---- */

/* A sandbox's host dirs and options.  hide and hide_list are for a test
 * that masks a host dir (fixture_init_dirs leaves them empty). */
typedef struct fixture {
	char id[32], home[600], ws[600], run[600], root[600], hide[600];
	sandbox *sb;
	sandbox_opts opts;
	const char *hide_list[2];
} fixture;

/* Id <prefix><pid>-<tag>; home, workspace and run (owned by SB_UID) and
 * root under <base>/<tag>; opts for them with SB_UID, CG_NAME and a 16 MiB
 * /tmp.  The test adds its own limits and options before fixture_start. */
static inline void fixture_init_dirs(fixture *f, const char *base, const char *prefix,
				     const char *tag)
{
	memset(f, 0, sizeof *f);
	pathf(f->id, sizeof f->id, "%s%d-%s", prefix, (int)getpid(), tag);
	char dir[600];
	pathf(dir, sizeof dir, "%s/%s", base, tag);
	mkdir_owned(dir, 0);
	pathf(f->home, sizeof f->home, "%s/home", dir);
	pathf(f->ws, sizeof f->ws, "%s/ws", dir);
	pathf(f->run, sizeof f->run, "%s/run", dir);
	pathf(f->root, sizeof f->root, "%s/root", dir);
	mkdir_owned(f->home, SB_UID);
	mkdir_owned(f->ws, SB_UID);
	mkdir_owned(f->run, SB_UID);
	mkdir_owned(f->root, 0);
	sandbox_opts o = SANDBOX_OPTS_INIT;
	o.id = f->id;
	o.root_mount = f->root;
	o.home_dir = f->home;
	o.workspace_dir = f->ws;
	o.run_dir = f->run;
	o.uid = SB_UID;
	o.gid = SB_UID;
	o.tmp_size = 16 << 20;
	o.cgroup_name = CG_NAME;
	f->opts = o;
}

static inline void fixture_start(fixture *f)
{
	cx_err err = CX_ERR_INIT;
	assert_ok(sandbox_create(&f->sb, &f->opts, &err), err);
	assert_non_null(f->sb);
}

/* Runs script with /bin/sh inside; returns its stdout+stderr (static), read
 * to EOF, so the program has finished when the caller checks it. */
static inline const char *sh(sandbox *sb, const char *script)
{
	static char out[64 << 10];
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	const char *argv[] = {"/bin/sh", "-c", script, NULL};
	const char *envp[] = {"PATH=/usr/bin:/bin", "HOME=/home/agent", NULL};
	sandbox_exec_opts eo = SANDBOX_EXEC_OPTS_INIT;
	eo.argv = argv;
	eo.envp = envp;
	eo.stdout_fd = p[1];
	eo.stderr_fd = p[1];
	cx_err err = CX_ERR_INIT;
	pid_t pid = -1;
	int r = sandbox_exec(sb, &pid, &eo, &err);
	close(p[1]);
	if (r != 0) {
		close(p[0]);
		print_error("sandbox_exec: %s\n", err.msg);
		fail();
	}
	size_t n = 0;
	ssize_t k;
	while (n < sizeof out - 1 && (k = read(p[0], out + n, sizeof out - 1 - n)) > 0)
		n += (size_t)k;
	out[n] = '\0';
	close(p[0]);
	return out;
}

/* Under TSan a fork from a single-threaded process starts TSan's thread in
 * the child, and the mount helper's setns(CLONE_NEWNS) then fails with
 * EINVAL; cortexd is multi-threaded, so a test that mounts into a running
 * sandbox keeps one idle thread to be the same.  A no-op without TSan. */
#ifdef __SANITIZE_THREAD__
static void *fixture_idle_thread(void *unused)
{
	(void)unused;
	for (;;)
		pause();
	return NULL;
}
#endif
static inline int fixture_tsan_idle_thread(void)
{
#ifdef __SANITIZE_THREAD__
	pthread_t idle;
	if (pthread_create(&idle, NULL, fixture_idle_thread, NULL) != 0 || pthread_detach(idle) != 0)
		return -1;
#endif
	return 0;
}

#endif /* CORTEX_TESTS_SANDBOX_FIXTURE_H */
