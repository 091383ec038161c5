/* test_sandbox_mount.c — run-time mounts into a running sandbox
 * (sandbox_mount_ro, sandbox_umount, the opts.mount_dir tmpfs) and
 * sandbox_remove_file.  Needs root (CAP_SYS_ADMIN) and cgroups; run by ctest
 * with CORTEX_TEST_TMP set.
 *
 * Programs run inside through /bin/sh -c with stdout+stderr on a pipe read
 * to EOF, so each check sees exactly what the sandboxed process (uid 65534)
 * saw, and the program has finished when the check runs. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandbox_fixture.h"

#define MOUNT_DIR "/cortex/mcp"

static char g_base[512];	      /* per-run scratch dir */
static char g_pkg1[600], g_pkg2[600]; /* host dirs to mount */

/* ---- helpers ---- */

static void fixture_init(fixture *f, const char *tag)
{
	fixture_init_dirs(f, g_base, "m", tag);
	f->opts.pids_max = 64;
	f->opts.mount_dir = MOUNT_DIR;
}

/* Lines of the host's mount table that mention `s`. */
static int host_mounts_with(const char *s)
{
	static char buf[1 << 20];
	read_text("/proc/self/mountinfo", buf, sizeof buf);
	int n = 0;
	for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
		n += strstr(l, s) != NULL;
	return n;
}

/* ---- shared sandbox ---- */

static fixture g_main;

static sandbox *main_sb(void)
{
	if (!g_main.sb) {
		fixture_init(&g_main, "main");
		fixture_start(&g_main);
	}
	return g_main.sb;
}

static int group_setup(void **state)
{
	(void)state;
	if (scratch_dir(g_base, sizeof g_base, "sandbox-mount") < 0)
		return -1;
	/* p1: a file, a script, an empty dir (a host mountpoint later); p2: a file. */
	char path[700];
	pathf(g_pkg1, sizeof g_pkg1, "%s/pkgs-p1", g_base);
	pathf(g_pkg2, sizeof g_pkg2, "%s/pkgs-p2", g_base);
	if (mkdir(g_pkg1, 0755) < 0 || mkdir(g_pkg2, 0755) < 0)
		return -1;
	pathf(path, sizeof path, "%s/file", g_pkg1);
	write_host_file(path, "hello\n", 0644);
	pathf(path, sizeof path, "%s/run.sh", g_pkg1);
	write_host_file(path, "#!/bin/sh\necho ran as $(id -u)\n", 0755);
	pathf(path, sizeof path, "%s/sub", g_pkg1);
	if (mkdir(path, 0755) < 0)
		return -1;
	pathf(path, sizeof path, "%s/file", g_pkg2);
	write_host_file(path, "two\n", 0644);
	/* p1 as a shared mount of its own, as host dirs often are (systemd
	 * makes / shared): the copy in the sandbox must still not be a peer. */
	if (mount(g_pkg1, g_pkg1, NULL, MS_BIND, NULL) < 0 ||
	    mount(NULL, g_pkg1, NULL, MS_SHARED, NULL) < 0)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	sandbox_destroy(g_main.sb);
	g_main.sb = NULL;
	(void)umount2(g_pkg1, MNT_DETACH);
	char cmd[700];
	pathf(cmd, sizeof cmd, "rm -rf '%s'", g_base);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- mount_dir ---- */

static void test_mount_dir_root_only(void **state)
{
	(void)state;
	const char *out =
	    sh(main_sb(), "stat -c '%u %a %F' " MOUNT_DIR "; "
			  "touch " MOUNT_DIR "/x 2>/dev/null && echo created || echo denied; "
			  "mkdir " MOUNT_DIR "/d 2>/dev/null && echo created || echo denied; "
			  "ls -A " MOUNT_DIR " | wc -l; "
			  "grep ' " MOUNT_DIR " ' /proc/self/mountinfo | cut -d' ' -f6,9");
	assert_string_equal(out,
			    "0 755 directory\ndenied\ndenied\n0\nrw,nosuid,nodev,relatime tmpfs\n");
}

/* ---- mount_ro ---- */

static void test_mount_ro_visible_readonly_exec(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	cx_err err = CX_ERR_INIT;
	int fds = count_fds();
	assert_int_equal(host_mounts_with(MOUNT_DIR), 0);
	int host_pkg = host_mounts_with(g_pkg1);

	assert_ok(sandbox_mount_ro(sb, g_pkg1, "p1", &err), err);
	const char *out =
	    sh(sb, "cat " MOUNT_DIR "/p1/file && ! touch " MOUNT_DIR "/p1/x 2>/dev/null "
		   "&& echo readonly; " MOUNT_DIR "/p1/run.sh");
	assert_string_equal(out, "hello\nreadonly\nran as 65534\n");
	/* One mount, ro+nosuid+nodev, exec allowed, private (no "shared:N"
	 * tag in the optional fields: field 7 is the "-" separator). */
	out = sh(sb, "grep ' " MOUNT_DIR "/p1 ' /proc/self/mountinfo | cut -d' ' -f5,7; "
		     "grep ' " MOUNT_DIR "/p1 ' /proc/self/mountinfo | cut -d' ' -f6");
	assert_contains(out, MOUNT_DIR "/p1 -\nro,nosuid,nodev,"); /* then the host's atime flag */
	assert_not_contains(out, "noexec");

	/* Again: nothing to do, still one mount. */
	assert_ok(sandbox_mount_ro(sb, g_pkg1, "p1", &err), err);
	out = sh(sb, "grep -c ' " MOUNT_DIR "/p1 ' /proc/self/mountinfo");
	assert_string_equal(out, "1\n");

	/* The host's mount table did not change. */
	assert_int_equal(host_mounts_with(MOUNT_DIR), 0);
	assert_int_equal(host_mounts_with(g_pkg1), host_pkg);

	/* And nothing mounted on the host under the (shared) dir later
	 * reaches inside. */
	char sub[700];
	pathf(sub, sizeof sub, "%s/sub", g_pkg1);
	assert_int_equal(mount("tmpfs", sub, "tmpfs", 0, "size=64k"), 0);
	char marker[800];
	pathf(marker, sizeof marker, "%s/marker", sub);
	write_host_file(marker, "m\n", 0644);
	out = sh(sb, "ls -A " MOUNT_DIR "/p1/sub | wc -l");
	assert_int_equal(umount2(sub, MNT_DETACH), 0);
	assert_string_equal(out, "0\n");

	assert_int_equal(count_fds(), fds);
}

static void test_mount_errors(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	cx_err err = CX_ERR_INIT;
	int fds = count_fds();

	/* No sandbox (before create). */
	assert_fails(sandbox_mount_ro(NULL, g_pkg1, "p1", &err), err, ESRCH);
	assert_fails(sandbox_umount(NULL, "p1", &err), err, ESRCH);

	/* Bad names. */
	const char *bad[] = {
	    "..",  ".",
	    "a/b", "",
	    "/p",  "a b",
	    "x\n", "12345678901234567890123456789012345678901234567890123456789012345"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_fails(sandbox_mount_ro(sb, g_pkg1, bad[i], &err), err, EINVAL);
		assert_contains(err.msg, "bad name");
		assert_fails(sandbox_umount(sb, bad[i], &err), err, EINVAL);
	}
	assert_fails(sandbox_mount_ro(sb, g_pkg1, NULL, &err), err, EINVAL);
	/* 64 characters is the longest allowed: fine. */
	const char *longest = "1234567890123456789012345678901234567890123456789012345678901234";
	assert_ok(sandbox_mount_ro(sb, g_pkg2, longest, &err), err);
	assert_ok(sandbox_umount(sb, longest, &err), err);

	/* Bad host dirs. */
	char missing[700], file[700];
	pathf(missing, sizeof missing, "%s/no-such-dir", g_base);
	assert_fails(sandbox_mount_ro(sb, missing, "px", &err), err, ENOENT);
	assert_contains(err.msg, missing);
	assert_contains(err.msg, "No such file or directory");
	pathf(file, sizeof file, "%s/file", g_pkg1);
	assert_fails(sandbox_mount_ro(sb, file, "px", &err), err, ENOTDIR);
	assert_fails(sandbox_mount_ro(sb, "relative/dir", "px", &err), err, EINVAL);
	assert_fails(sandbox_mount_ro(sb, NULL, "px", &err), err, EINVAL);
	/* None of the failures left a mountpoint behind. */
	assert_string_equal(sh(sb, "ls -A " MOUNT_DIR " | grep -v '^p1$' | wc -l"), "0\n");

	/* A sandbox without mount_dir: a clear error, then ESRCH once stopped. */
	fixture f;
	fixture_init(&f, "nomd");
	f.opts.mount_dir = NULL;
	fixture_start(&f);
	assert_fails(sandbox_mount_ro(f.sb, g_pkg1, "p1", &err), err, EINVAL);
	assert_contains(err.msg, "no mount_dir");
	assert_fails(sandbox_umount(f.sb, "p1", &err), err, EINVAL);
	assert_contains(err.msg, "no mount_dir");
	sandbox_destroy(f.sb);

	fixture_init(&f, "stopped");
	fixture_start(&f);
	assert_ok(sandbox_stop(f.sb, &err), err);
	assert_fails(sandbox_mount_ro(f.sb, g_pkg1, "p1", &err), err, ESRCH);
	assert_fails(sandbox_umount(f.sb, "p1", &err), err, ESRCH);
	assert_fails(sandbox_remove_file(f.sb, "/home/agent/x", &err), err, ESRCH);
	sandbox_destroy(f.sb);

	assert_int_equal(count_fds(), fds);
}

static void test_create_bad_mount_dir(void **state)
{
	(void)state;
	cx_err err = CX_ERR_INIT;
	fixture f;
	fixture_init(&f, "badmd");
	const char *bad[] = {"cortex/mcp", "/cortex/../x", "/", "/cortex/mcp/", "", "/./x"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		f.opts.mount_dir = bad[i];
		sandbox *sb = NULL;
		assert_fails(sandbox_create(&sb, &f.opts, &err), err, EINVAL);
		assert_null(sb);
		assert_contains(err.msg, "mount_dir");
	}
	/* Under a host dir bound read-only: the mountpoint cannot be made. */
	f.opts.mount_dir = "/usr/cortex-test-mcp";
	sandbox *sb = NULL;
	assert_fails(sandbox_create(&sb, &f.opts, &err), err, EROFS);
	assert_null(sb);
	assert_contains(err.msg, "mount_dir");
	assert_contains(err.msg, "/usr/cortex-test-mcp");
}

/* ---- umount ---- */

static void test_umount(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	cx_err err = CX_ERR_INIT;
	int fds = count_fds();
	assert_ok(sandbox_mount_ro(sb, g_pkg2, "p2", &err), err);
	assert_string_equal(sh(sb, "cat " MOUNT_DIR "/p2/file"), "two\n");

	assert_ok(sandbox_umount(sb, "p2", &err), err);
	const char *out = sh(sb, "test -e " MOUNT_DIR "/p2 && echo present || echo gone; "
				 "grep -c ' " MOUNT_DIR "/p2 ' /proc/self/mountinfo");
	assert_string_equal(out, "gone\n0\n");
	/* Absent, or never mounted: nothing to do. */
	assert_ok(sandbox_umount(sb, "p2", &err), err);
	assert_ok(sandbox_umount(sb, "never", &err), err);

	/* The name can be used again. */
	assert_ok(sandbox_mount_ro(sb, g_pkg2, "p2", &err), err);
	assert_string_equal(sh(sb, "cat " MOUNT_DIR "/p2/file"), "two\n");
	assert_ok(sandbox_umount(sb, "p2", &err), err);
	assert_string_equal(sh(sb, "ls -A " MOUNT_DIR " | grep -c p2"), "0\n");
	assert_int_equal(count_fds(), fds);
}

/* ---- remove_file ---- */

static void test_remove_file(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	cx_err err = CX_ERR_INIT;
	int fds = count_fds();
	struct stat st;
	char host[800];

	assert_ok(sandbox_write_file(sb, "/home/agent/.cfg/rm.txt", "x", 1, 0644, &err), err);
	pathf(host, sizeof host, "%s/.cfg/rm.txt", g_main.home);
	assert_int_equal(stat(host, &st), 0);
	assert_ok(sandbox_remove_file(sb, "/home/agent/.cfg/rm.txt", &err), err);
	assert_int_equal(stat(host, &st), -1);
	assert_string_equal(sh(sb, "test -e /home/agent/.cfg/rm.txt && echo present || echo gone"),
			    "gone\n");
	/* Missing file, missing parent: nothing to do, and nothing created. */
	assert_ok(sandbox_remove_file(sb, "/home/agent/.cfg/rm.txt", &err), err);
	assert_ok(sandbox_remove_file(sb, "/home/agent/no/such/dir/f", &err), err);
	pathf(host, sizeof host, "%s/no", g_main.home);
	assert_int_equal(stat(host, &st), -1);

	/* A symlinked parent planted by the sandbox: ELOOP, target untouched. */
	const char *out =
	    sh(sb, "mkdir -p /home/agent/target && echo keep > /home/agent/target/f && "
		   "ln -s /home/agent/target /tmp/evil && echo planted");
	assert_string_equal(out, "planted\n");
	assert_fails(sandbox_remove_file(sb, "/tmp/evil/f", &err), err, ELOOP);
	assert_contains(err.msg, "/tmp/evil");
	pathf(host, sizeof host, "%s/target/f", g_main.home);
	assert_int_equal(stat(host, &st), 0);
	/* A symlink as the last component is removed itself, not its target. */
	assert_string_equal(sh(sb, "ln -s /home/agent/target/f /tmp/flink && echo ok"), "ok\n");
	assert_ok(sandbox_remove_file(sb, "/tmp/flink", &err), err);
	assert_string_equal(sh(sb, "test -L /tmp/flink || echo unlinked; cat /home/agent/target/f"),
			    "unlinked\nkeep\n");

	/* Read-only places stay read-only for the daemon too (the ro mount). */
	assert_ok(sandbox_mount_ro(sb, g_pkg1, "p1", &err), err);
	assert_fails(sandbox_remove_file(sb, MOUNT_DIR "/p1/file", &err), err, EROFS);
	pathf(host, sizeof host, "%s/file", g_pkg1);
	assert_int_equal(stat(host, &st), 0);
	/* A directory is not a file. */
	assert_fails(sandbox_remove_file(sb, "/home/agent/target", &err), err, EISDIR);
	/* Bad paths. */
	assert_fails(sandbox_remove_file(sb, "/tmp/../etc/passwd", &err), err, EINVAL);
	assert_fails(sandbox_remove_file(sb, "relative", &err), err, EINVAL);
	assert_fails(sandbox_remove_file(sb, "/", &err), err, EINVAL);
	assert_fails(sandbox_remove_file(sb, NULL, &err), err, EINVAL);
	assert_int_equal(count_fds(), fds);
}

/* ---- concurrency ---- */

typedef struct mounter_arg {
	sandbox *sb;
	int failures;
	cx_err err;
} mounter_arg;

static void *mounter(void *p)
{
	mounter_arg *a = p;
	for (int i = 0; i < 20; i++)
		if (sandbox_mount_ro(a->sb, g_pkg2, "pt", &a->err) < 0 ||
		    sandbox_umount(a->sb, "pt", &a->err) < 0)
			a->failures++;
	return NULL;
}

/* A worker thread mounts and unmounts while this one writes files. */
static void test_mount_while_writing(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	int fds = count_fds();
	mounter_arg a = {sb, 0, CX_ERR_INIT};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, mounter, &a), 0);
	cx_err err = CX_ERR_INIT;
	int failures = 0;
	for (int i = 0; i < 100; i++) {
		char data[32];
		pathf(data, sizeof data, "%d", i);
		if (sandbox_write_file(sb, "/workspace/conc/f.txt", data, strlen(data), 0644,
				       &err) < 0) {
			print_error("write %d: %s\n", i, err.msg);
			failures++;
		}
	}
	assert_int_equal(pthread_join(t, NULL), 0);
	if (a.failures)
		print_error("mounter: %d failures, last: %s\n", a.failures, a.err.msg);
	assert_int_equal(a.failures, 0);
	assert_int_equal(failures, 0);
	assert_string_equal(
	    sh(sb, "cat /workspace/conc/f.txt; echo; ls -A " MOUNT_DIR " | grep -c pt"), "99\n0\n");
	assert_int_equal(count_fds(), fds);
}

/* ---- teardown ---- */

/* Last: destroy with a mount in place leaves no process behind, and no
 * helper child was left unreaped along the way. */
static void test_destroy_leaves_nothing(void **state)
{
	(void)state;
	sandbox *sb = main_sb();
	cx_err err = CX_ERR_INIT;
	assert_ok(sandbox_mount_ro(sb, g_pkg2, "p2", &err), err);
	pid_t init = sandbox_init_pid(sb);
	assert_true(init > 0);
	sandbox_destroy(sb);
	g_main.sb = NULL;
	assert_true(process_gone(init));
	char path[64], buf[256];
	pathf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
	read_text(path, buf, sizeof buf);
	if (buf[0]) {
		print_error("child processes left: %s\n", buf);
		fail();
	}
	assert_int_equal(host_mounts_with(MOUNT_DIR), 0);
}


int main(void)
{
	if (fixture_tsan_idle_thread() != 0)
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mount_dir_root_only),
	    cmocka_unit_test(test_mount_ro_visible_readonly_exec),
	    cmocka_unit_test(test_mount_errors),
	    cmocka_unit_test(test_create_bad_mount_dir),
	    cmocka_unit_test(test_umount),
	    cmocka_unit_test(test_remove_file),
	    cmocka_unit_test(test_mount_while_writing),
	    cmocka_unit_test(test_destroy_leaves_nothing),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
