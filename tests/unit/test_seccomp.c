/* test_seccomp.c — the sandbox's seccomp policy, bubblewrap try-syscall style.
 *
 * Every call in the table is made with deliberately bad arguments (fd -1,
 * NULL pointers, invalid flag combinations) chosen so that, when the filter
 * lets it through, the kernel fails it with something other than EPERM
 * (EBADF, EFAULT, EINVAL, ...).  A block (EPERM, or ENOSYS for clone3) can
 * then be told apart from an ordinary failure.  The same table runs:
 *
 *   1. as root without any filter   -> no "blocked" call may give EPERM/ENOSYS,
 *                                      i.e. the arguments really discriminate;
 *   2. as root with the policy       -> every blocked call gives its errno
 *      (built, then installed in    (as root a capability check cannot be
 *       a fork)                          what produced that EPERM);
 *   3. inside a real sandbox          -> the same, as uid 65534, via this very
 *      (this binary bound read-only,    binary re-executed with --try-syscalls;
 *       run with --try-syscalls)        also ptrace(PTRACE_ATTACH, 1).
 *
 * In every mode the control calls (allowed, same kind of bad arguments) must
 * give their ordinary result, so a filter that blocks too much fails too.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "sandbox-internal.h"
#include "sandbox.h"

#ifndef AF_ALG
#define AF_ALG 38
#endif
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#define BAD_SOCK_TYPE 0x7fff0000 /* flag bits other than NONBLOCK/CLOEXEC: EINVAL */
#define BAD_PID 0x3ffffff0
#define HIGH32 (1UL << 32)

typedef struct try_call {
	const char *name;
	long (*fn)(void);
	int blocked; /* errno the policy gives (EPERM/ENOSYS); 0 = allowed control */
	int normal;  /* controls: errno (or 0 = success) expected; blocked: unused */
	bool sandbox_only; /* only meaningful inside the sandbox (unsafe as host root) */
} try_call;

/* ---- the calls (return the raw result; errno holds the error) ---- */

static long t_keyctl(void) { return syscall(SYS_keyctl, 0xffff, 0, 0, 0, 0); }
static long t_add_key(void) { return syscall(SYS_add_key, NULL, NULL, NULL, 0, 0); }
static long t_request_key(void) { return syscall(SYS_request_key, NULL, NULL, NULL, 0); }
static long t_userfaultfd(void) { return syscall(SYS_userfaultfd, 1 /* USER_MODE_ONLY */ | 0x100); }
static long t_io_uring_setup(void) { return syscall(SYS_io_uring_setup, 1, NULL); }
static long t_io_uring_enter(void) { return syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0); }
static long t_io_uring_register(void) { return syscall(SYS_io_uring_register, -1, 0, NULL, 0); }
static long t_bpf(void) { return syscall(SYS_bpf, -1, NULL, 0); }
static long t_perf_event_open(void) { return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0); }
static long t_mount(void) { return syscall(SYS_mount, NULL, NULL, NULL, 0, NULL); }
static long t_umount2(void) { return syscall(SYS_umount2, "/", 0xff00); }
static long t_pivot_root(void) { return syscall(SYS_pivot_root, NULL, NULL); }
static long t_fsopen(void) { return syscall(SYS_fsopen, NULL, 0); }
static long t_fsconfig(void) { return syscall(SYS_fsconfig, -1, 0xffff, NULL, NULL, 0); }
static long t_fsmount(void) { return syscall(SYS_fsmount, -1, 0, 0); }
static long t_fspick(void) { return syscall(SYS_fspick, -1, NULL, 0xffff0000); }
static long t_move_mount(void) { return syscall(SYS_move_mount, -1, NULL, -1, NULL, 0xffff0000); }
static long t_open_tree(void) { return syscall(SYS_open_tree, -1, NULL, 0xffff0000); }
static long t_mount_setattr(void) { return syscall(SYS_mount_setattr, -1, NULL, 0xffff0000, NULL, 0); }
static long t_unshare_user(void) { return syscall(SYS_unshare, CLONE_NEWUSER | 0x1 /* invalid */); }
static long t_setns(void) { return syscall(SYS_setns, -1, 0); }
/* CLONE_SIGHAND without CLONE_VM is EINVAL before any permission check. */
#define T_CLONE_NS(flag)                                                                    \
	static long t_clone_##flag(void)                                                    \
	{                                                                                   \
		return syscall(SYS_clone, CLONE_##flag | CLONE_SIGHAND | SIGCHLD, 0, 0, 0, 0); \
	}
T_CLONE_NS(NEWNS)
T_CLONE_NS(NEWUSER)
T_CLONE_NS(NEWNET)
T_CLONE_NS(NEWPID)
T_CLONE_NS(NEWIPC)
T_CLONE_NS(NEWUTS)
T_CLONE_NS(NEWCGROUP)
static long t_clone3(void) { return syscall(SYS_clone3, NULL, 0); }
static long t_open_by_handle_at(void) { return syscall(SYS_open_by_handle_at, -1, NULL, 0); }
static long t_name_to_handle_at(void) { return syscall(SYS_name_to_handle_at, -1, NULL, NULL, NULL, 0); }
static long t_ptrace_bad_pid(void) { return syscall(SYS_ptrace, PTRACE_ATTACH, BAD_PID, 0, 0); }
static long t_ptrace_init(void) { return syscall(SYS_ptrace, PTRACE_ATTACH, 1, 0, 0); }
static long t_process_vm_readv(void) { return syscall(SYS_process_vm_readv, getpid(), NULL, 0, NULL, 0, 1); }
static long t_process_vm_writev(void) { return syscall(SYS_process_vm_writev, getpid(), NULL, 0, NULL, 0, 1); }
static long t_kexec_load(void) { return syscall(SYS_kexec_load, 0, 0, NULL, 0xdead0000UL); }
static long t_init_module(void) { return syscall(SYS_init_module, NULL, 0, NULL); }
static long t_finit_module(void) { return syscall(SYS_finit_module, -1, NULL, 0); }
static long t_delete_module(void) { return syscall(SYS_delete_module, NULL, 0); }
static long t_reboot(void) { return syscall(SYS_reboot, 0, 0, 0, NULL); /* bad magic */ }
static long t_swapon(void) { return syscall(SYS_swapon, NULL, 0); }
static long t_swapoff(void) { return syscall(SYS_swapoff, NULL); }
static long t_acct(void) { return syscall(SYS_acct, (void *)1); }
static long t_ioctl_tiocsti(void) { return syscall(SYS_ioctl, -1, TIOCSTI, NULL); }
/* CVE-2019-10063: the kernel ignores the upper 32 bits of cmd. */
static long t_ioctl_tiocsti_high(void) { return syscall(SYS_ioctl, -1, TIOCSTI | HIGH32, NULL); }
static long t_ioctl_tioclinux(void) { return syscall(SYS_ioctl, -1, TIOCLINUX, NULL); }
static long t_socket_alg(void) { return syscall(SYS_socket, AF_ALG, BAD_SOCK_TYPE, 0); }
static long t_socket_alg_high(void) { return syscall(SYS_socket, AF_ALG | HIGH32, BAD_SOCK_TYPE, 0); }
static long t_socket_vsock(void) { return syscall(SYS_socket, AF_VSOCK, BAD_SOCK_TYPE, 0); }
static long t_socketpair_alg(void) { return syscall(SYS_socketpair, AF_ALG, BAD_SOCK_TYPE, 0, NULL); }
static long t_socketpair_vsock(void) { return syscall(SYS_socketpair, AF_VSOCK, BAD_SOCK_TYPE, 0, NULL); }
static long t_personality_bsd(void) { return syscall(SYS_personality, PER_BSD); }

/* Controls: allowed by the policy. */
static long c_read(void) { return syscall(SYS_read, -1, NULL, 0); }
static long c_close(void) { return syscall(SYS_close, -1); }
static long c_ioctl_winsz(void) { return syscall(SYS_ioctl, -1, TIOCGWINSZ, NULL); }
static long c_socket_inet(void) { return syscall(SYS_socket, AF_INET, BAD_SOCK_TYPE, 0); }
static long c_socket_unix(void)
{
	long fd = syscall(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0)
		close((int)fd);
	return fd < 0 ? fd : 0;
}
static long c_openat(void) { return syscall(SYS_openat, AT_FDCWD, NULL, O_RDONLY); }
static long c_personality_linux(void) { return syscall(SYS_personality, PER_LINUX); }
static long c_clone_fork(void)
{
	long pid = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid((pid_t)pid, NULL, 0);
	return pid < 0 ? pid : 0;
}
static long c_fork_libc(void) /* glibc fork uses clone3 first, then clone */
{
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	return pid < 0 ? -1 : 0;
}

static void *thread_fn(void *arg) { return arg; }
static long c_pthread(void) /* glibc tries clone3 first, falls back on ENOSYS */
{
	pthread_t t;
	int r = pthread_create(&t, NULL, thread_fn, NULL);
	if (r != 0) {
		errno = r;
		return -1;
	}
	pthread_join(t, NULL);
	return 0;
}

#define B(n, e) {#n, t_##n, e, 0, false}
#define C(n, e) {#n, c_##n, 0, e, false}
static const try_call calls[] = {
	B(keyctl, EPERM), B(add_key, EPERM), B(request_key, EPERM),
	B(userfaultfd, EPERM), B(io_uring_setup, EPERM), B(io_uring_enter, EPERM),
	B(io_uring_register, EPERM), B(bpf, EPERM), B(perf_event_open, EPERM),
	B(mount, EPERM), B(umount2, EPERM), B(pivot_root, EPERM), B(fsopen, EPERM),
	B(fsconfig, EPERM), B(fsmount, EPERM), B(fspick, EPERM), B(move_mount, EPERM),
	B(open_tree, EPERM), B(mount_setattr, EPERM), B(unshare_user, EPERM), B(setns, EPERM),
	B(clone_NEWNS, EPERM), B(clone_NEWUSER, EPERM), B(clone_NEWNET, EPERM),
	B(clone_NEWPID, EPERM), B(clone_NEWIPC, EPERM), B(clone_NEWUTS, EPERM),
	B(clone_NEWCGROUP, EPERM), B(clone3, ENOSYS), B(open_by_handle_at, EPERM),
	B(name_to_handle_at, EPERM), B(ptrace_bad_pid, EPERM),
	B(process_vm_readv, EPERM), B(process_vm_writev, EPERM), B(kexec_load, EPERM),
	B(init_module, EPERM), B(finit_module, EPERM), B(delete_module, EPERM),
	B(reboot, EPERM), B(swapon, EPERM), B(swapoff, EPERM), B(acct, EPERM),
	B(ioctl_tiocsti, EPERM), B(ioctl_tiocsti_high, EPERM), B(ioctl_tioclinux, EPERM),
	B(socket_alg, EPERM), B(socket_alg_high, EPERM), B(socket_vsock, EPERM),
	B(socketpair_alg, EPERM), B(socketpair_vsock, EPERM),
	/* As host root, attaching to pid 1 would succeed: sandbox only. */
	{"ptrace_init", t_ptrace_init, EPERM, 0, true},
	C(read, EBADF), C(close, EBADF), C(ioctl_winsz, EBADF), C(socket_inet, EINVAL),
	C(socket_unix, 0), C(openat, EFAULT), C(personality_linux, 0), C(clone_fork, 0),
	C(fork_libc, 0), C(pthread, 0),
	/* Last: when allowed it really changes the persona. */
	B(personality_bsd, EPERM),
};
#define N_CALLS (sizeof calls / sizeof calls[0])

/* Prints "name errno" per call (0 = success) to fd. */
static void run_calls(FILE *out, bool in_sandbox)
{
	for (size_t i = 0; i < N_CALLS; i++) {
		if (calls[i].sandbox_only && !in_sandbox)
			continue;
		errno = 0;
		long r = calls[i].fn();
		fprintf(out, "%s %d\n", calls[i].name, r < 0 ? errno : 0);
	}
	fflush(out);
}

/* ---- checking results ---- */

typedef enum { MODE_NO_FILTER, MODE_FILTER, MODE_SANDBOX } mode;

static int result_of(const char *out, const char *name)
{
	char key[128];
	snprintf(key, sizeof key, "\n%s ", name);
	const char *p = strstr(out, key);
	if (!p)
		return -1;
	return atoi(p + strlen(key));
}

static void check_results(const char *out, mode m)
{
	int bad = 0;
	for (size_t i = 0; i < N_CALLS; i++) {
		const try_call *c = &calls[i];
		if (c->sandbox_only && m != MODE_SANDBOX)
			continue;
		int got = result_of(out, c->name);
		if (got < 0) {
			print_error("%s: no result in output:\n%s\n", c->name, out);
			bad++;
			continue;
		}
		bool ok;
		const char *want;
		char wbuf[64];
		if (!c->blocked) {
			ok = got == c->normal;
			snprintf(wbuf, sizeof wbuf, "%s (allowed)", c->normal ? strerror(c->normal) : "success");
			want = wbuf;
		} else if (m == MODE_NO_FILTER) {
			ok = got != EPERM && got != ENOSYS;
			want = "not EPERM/ENOSYS without the filter (bad args must discriminate)";
			/* Kernels built without a feature say ENOSYS on their own. */
			if (got == ENOSYS && c->blocked == EPERM)
				ok = true;
		} else {
			ok = got == c->blocked;
			snprintf(wbuf, sizeof wbuf, "%s (blocked)", strerror(c->blocked));
			want = wbuf;
		}
		if (!ok) {
			print_error("%s: expected %s, got %d (%s)\n", c->name, want, got,
				    got ? strerror(got) : "success");
			bad++;
		}
	}
	assert_int_equal(bad, 0);
}

/* Forks; the child optionally loads the policy and runs the calls as root. */
static void run_in_fork(mode m, char *out, size_t cap)
{
	cx_err err = CX_ERR_INIT;
	cleanup_seccomp_prog sbx_seccomp_prog prog = {NULL, 0};
	if (m == MODE_FILTER && sbx_seccomp_build_policy(&prog, &err) < 0) {
		print_error("build failed: %s\n", err.msg);
		fail();
	}
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		FILE *f = fdopen(p[1], "w");
		if (!f)
			_exit(2);
		fputc('\n', f);
		if (m == MODE_FILTER) {
			if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
			    sbx_seccomp_install(&prog, &err) < 0) {
				fprintf(f, "install failed: %s\n", err.msg);
				fflush(f);
				_exit(3);
			}
		}
		run_calls(f, false);
		_exit(0);
	}
	close(p[1]);
	size_t n = 0;
	ssize_t k;
	while (n < cap - 1 && (k = read(p[0], out + n, cap - 1 - n)) > 0)
		n += (size_t)k;
	out[n] = '\0';
	close(p[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		print_error("try child failed (status 0x%x):\n%s\n", st, out);
		fail();
	}
}

static void test_args_discriminate_without_filter(void **state)
{
	(void)state;
	static char out[16384];
	run_in_fork(MODE_NO_FILTER, out, sizeof out);
	check_results(out, MODE_NO_FILTER);
}

static void test_policy_blocks_as_root(void **state)
{
	(void)state;
	static char out[16384];
	run_in_fork(MODE_FILTER, out, sizeof out);
	check_results(out, MODE_FILTER);
}

static void test_x32_killed(void **state)
{
	(void)state;
	cx_err err = CX_ERR_INIT;
	cleanup_seccomp_prog sbx_seccomp_prog prog = {NULL, 0};
	assert_int_equal(sbx_seccomp_build_policy(&prog, &err), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || sbx_seccomp_install(&prog, &err) < 0)
			_exit(3);
		/* x32 getpid: the x86_64 audit arch with bit 30 set in the number. */
		syscall(0x40000000L | SYS_getpid);
		_exit(0);
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSYS) {
		print_error("expected x32 syscall to be killed by SIGSYS, got status 0x%x\n", st);
		fail();
	}
}

static void test_policy_validation(void **state)
{
	(void)state;
	cx_err err = CX_ERR_INIT;
	/* The real table is well-formed. */
	cleanup_seccomp_prog sbx_seccomp_prog prog = {NULL, 0};
	if (sbx_seccomp_build_policy(&prog, &err) != 0) {
		print_error("policy does not build: %s\n", err.msg);
		fail();
	}
	assert_true(prog.len > sbx_seccomp_policy_len);
	/* Compiled once per process: a second caller gets the same program in
	 * a buffer of its own (each frees its copy), the same as a fresh build. */
	cleanup_seccomp_prog sbx_seccomp_prog again = {NULL, 0}, fresh = {NULL, 0};
	assert_int_equal(sbx_seccomp_build_policy(&again, &err), 0);
	assert_true(again.insns != prog.insns);
	assert_int_equal(again.len, prog.len);
	assert_memory_equal(again.insns, prog.insns, prog.len * sizeof *prog.insns);
	assert_int_equal(sbx_seccomp_build(&fresh, sbx_seccomp_policy, sbx_seccomp_policy_len, &err), 0);
	assert_int_equal(fresh.len, prog.len);
	assert_memory_equal(fresh.insns, prog.insns, prog.len * sizeof *prog.insns);
	const sbx_sc_rule bad[] = {
		{"keyctl", SBX_SC_EPERM, 0, {{0}}, "ok"},
		{"no_such_syscall", SBX_SC_EPERM, 0, {{0}}, "typo"},
	};
	sbx_seccomp_prog none = {NULL, 0};
	assert_int_equal(sbx_seccomp_build(&none, bad, 2, &err), -1);
	assert_null(none.insns);
	if (!strstr(err.msg, "rule 1 (no_such_syscall)")) {
		print_error("expected the failing rule named, got: %s\n", err.msg);
		fail();
	}
	/* Nothing to install is an error, not an empty filter. */
	assert_int_equal(sbx_seccomp_install(&none, &err), -1);
	assert_int_equal(err.code, EINVAL);
	/* Two comparisons on one argument are refused by libseccomp. */
	const sbx_sc_rule dup[] = {
		{"personality", SBX_SC_EPERM, 2, {{0, SCMP_CMP_NE, 0, 0}, {0, SCMP_CMP_NE, 1, 0}}, "x"},
	};
	cx_err_clear(&err);
	assert_int_equal(sbx_seccomp_build(&none, dup, 1, &err), -1);
	if (!strstr(err.msg, "rule 0 (personality")) {
		print_error("expected rule 0 named, got: %s\n", err.msg);
		fail();
	}
}

static void test_policy_inside_sandbox(void **state)
{
	(void)state;
	const char *tmp = getenv("CORTEX_TEST_TMP");
	char base[512], home[600], ws[600], run[600], root[600], self[4096], id[32];
	snprintf(base, sizeof base, "%s/seccomp-%d", tmp ? tmp : "/tmp", (int)getpid());
	snprintf(home, sizeof home, "%s/home", base);
	snprintf(ws, sizeof ws, "%s/ws", base);
	snprintf(run, sizeof run, "%s/run", base);
	snprintf(root, sizeof root, "%s/root", base);
	snprintf(id, sizeof id, "sc%d", (int)getpid());
	if (tmp)
		mkdir(tmp, 0755);
	const char *dirs[] = {base, home, ws, run, root};
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(mkdir(dirs[i], 0755), 0);
		if (i >= 1 && i <= 3)
			assert_int_equal(chown(dirs[i], 65534, 65534), 0);
	}
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	assert_true(n > 0);
	self[n] = '\0';

	/* The build dir may not be reachable for uid 65534: bind the binary. */
	sandbox_bind b = {self, "/cortex-test/test_seccomp"};
	sandbox_opts o = SANDBOX_OPTS_INIT;
	o.id = id;
	o.root_mount = root;
	o.home_dir = home;
	o.workspace_dir = ws;
	o.run_dir = run;
	o.binds = &b;
	o.n_binds = 1;
	o.uid = 65534;
	o.gid = 65534;
	o.cgroup_name = "cortex-test";
	sandbox *sb = NULL;
	cx_err err = CX_ERR_INIT;
	if (sandbox_create(&sb, &o, &err) != 0) {
		print_error("sandbox_create: %s\n", err.msg);
		fail();
	}
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	const char *argv[] = {"/cortex-test/test_seccomp", "--try-syscalls", NULL};
	sandbox_exec_opts eo = SANDBOX_EXEC_OPTS_INIT;
	eo.argv = argv;
	eo.stdout_fd = p[1];
	eo.stderr_fd = p[1];
	int r = sandbox_exec(sb, NULL, &eo, &err);
	close(p[1]);
	static char out[16384];
	size_t len = 0;
	ssize_t k;
	out[len++] = '\n';
	while (r == 0 && len < sizeof out - 1 && (k = read(p[0], out + len, sizeof out - 1 - len)) > 0)
		len += (size_t)k;
	out[len] = '\0';
	close(p[0]);
	sandbox_destroy(sb);
	char cmd[700];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
	(void)!system(cmd);
	if (r != 0) {
		print_error("sandbox_exec: %s\n", err.msg);
		fail();
	}
	check_results(out, MODE_SANDBOX);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--try-syscalls") == 0) {
		run_calls(stdout, true);
		/* _exit: LeakSanitizer's exit-time check needs ptrace, which the
		 * filter (rightly) refuses. */
		_exit(0);
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_policy_validation),
		cmocka_unit_test(test_args_discriminate_without_filter),
		cmocka_unit_test(test_policy_blocks_as_root),
		cmocka_unit_test(test_x32_killed),
		cmocka_unit_test(test_policy_inside_sandbox),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
