/* seccomp.c — the sandbox's syscall policy, as data, and the code that
 * applies it.
 *
 * The policy is a deny-list on top of "allow": the agent runs arbitrary
 * programs (node, git, compilers), so we only take away what an unprivileged
 * process could use to attack the kernel or escape: new namespaces, mounts,
 * keyrings, io_uring, bpf, perf, ptrace, module loading, tty injection, rare
 * socket families.  Blocked calls fail with EPERM (programs cope with that)
 * except clone3, which returns ENOSYS so that libc falls back to clone(),
 * whose flags a filter can inspect (clone3 passes them in memory).
 *
 * Architectures: only the native one is in the filter; any syscall made with
 * another audit arch (i386 via int 0x80, ...) kills the process
 * (SCMP_FLTATR_ACT_BADARCH).  x32 syscalls use the x86_64 audit arch with
 * bit 0x40000000 set in the number; libseccomp emits "nr >= 0x40000000 ->
 * bad-arch action" when x32 is not one of the filter's archs, so they are
 * killed as well (checked by test_seccomp).
 *
 * Building and installing are apart: libseccomp allocates all the way through
 * seccomp_load(), and the filter is needed in init, a fork of the threaded
 * daemon that must not allocate (a lock another thread held at the fork, the
 * allocator's included, stays held there).  So sandbox_create compiles the
 * policy to classic BPF in the daemon, and init installs it with one system
 * call.
 */
#include <errno.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "sandbox-internal.h"

#ifndef AF_ALG
#define AF_ALG 38
#endif
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

/* Compare only the low 32 bits: the kernel reads these arguments as int /
 * unsigned int, so garbage in the upper half must not dodge the rule
 * (CVE-2019-10063 for TIOCSTI in flatpak). */
#define A_EQ32(n, v) {(n), SCMP_CMP_MASKED_EQ, 0xffffffffULL, (scmp_datum_t)(v)}
/* Flag bit set in a 64-bit argument. */
#define A_NE(n, v) {(n), SCMP_CMP_NE, (scmp_datum_t)(v), 0}
#define A_BIT(n, bit) {(n), SCMP_CMP_MASKED_EQ, (scmp_datum_t)(bit), (scmp_datum_t)(bit)}

#define DENY(sc, w) {#sc, SBX_SC_EPERM, 0, {{0}}, w}
#define DENY_IF(sc, a, w) {#sc, SBX_SC_EPERM, 1, {a}, w}

const sbx_sc_rule sbx_seccomp_policy[] = {
	/* Kernel keyrings are not namespaced: shared with the host. */
	DENY(keyctl, "keyrings are not namespaced"),
	DENY(add_key, "keyrings are not namespaced"),
	DENY(request_key, "keyrings are not namespaced"),
	/* Frequent sources of kernel exploits; nothing the agent needs. */
	DENY(userfaultfd, "used to widen kernel race windows"),
	DENY(io_uring_setup, "io_uring bypasses this filter and is a large attack surface"),
	DENY(io_uring_enter, "io_uring"),
	DENY(io_uring_register, "io_uring"),
	DENY(bpf, "bpf programs"),
	DENY(perf_event_open, "perf events leak kernel addresses and are an attack surface"),
	/* The mount tree was built by init and must stay as it is. */
	DENY(mount, "mounts"),
	DENY(umount2, "mounts"),
	DENY(pivot_root, "mounts"),
	DENY(fsopen, "new mount API"),
	DENY(fsconfig, "new mount API"),
	DENY(fsmount, "new mount API"),
	DENY(fspick, "new mount API"),
	DENY(move_mount, "new mount API"),
	DENY(open_tree, "new mount API"),
	DENY(mount_setattr, "new mount API"),
	/* No new namespaces: user namespaces would give capabilities over
	 * fresh namespaces and expose much more of the kernel. */
	DENY(unshare, "namespaces"),
	DENY(setns, "namespaces"),
	DENY_IF(clone, A_BIT(0, CLONE_NEWNS), "clone into a new mount namespace"),
	DENY_IF(clone, A_BIT(0, CLONE_NEWCGROUP), "clone into a new cgroup namespace"),
	DENY_IF(clone, A_BIT(0, CLONE_NEWUTS), "clone into a new uts namespace"),
	DENY_IF(clone, A_BIT(0, CLONE_NEWIPC), "clone into a new ipc namespace"),
	DENY_IF(clone, A_BIT(0, CLONE_NEWUSER), "clone into a new user namespace"),
	DENY_IF(clone, A_BIT(0, CLONE_NEWPID), "clone into a new pid namespace"),
	DENY_IF(clone, A_BIT(0, CLONE_NEWNET), "clone into a new net namespace"),
	/* (CLONE_NEWTIME shares its bit with the exit signal in clone(); it only
	 * works with clone3 and unshare, both handled here.) */
	{"clone3", SBX_SC_ENOSYS, 0, {{0}}, "flags are in memory; make libc fall back to clone"},
	/* File handles step around path-based permission checks. */
	DENY(open_by_handle_at, "file handles bypass path checks (shocker)"),
	DENY(name_to_handle_at, "file handles"),
	/* ptrace: every sandbox process runs as the same uid, so ptrace would let
	 * any program take over any other (ws-agent, the agent itself) and read
	 * its memory and secrets; on old kernels it also let a tracer rewrite
	 * syscalls after this filter ran.  Debuggers lose; that's accepted. */
	DENY(ptrace, "tracing other sandbox processes"),
	DENY(process_vm_readv, "reading other processes' memory"),
	DENY(process_vm_writev, "writing other processes' memory"),
	/* Host-wide administration. */
	DENY(kexec_load, "host administration"),
	DENY(kexec_file_load, "host administration"),
	DENY(init_module, "host administration"),
	DENY(finit_module, "host administration"),
	DENY(delete_module, "host administration"),
	DENY(reboot, "host administration"),
	DENY(swapon, "host administration"),
	DENY(swapoff, "host administration"),
	DENY(acct, "host administration"),
	/* Faking input on a terminal someone else reads. */
	DENY_IF(ioctl, A_EQ32(1, TIOCSTI), "injecting terminal input"),
	DENY_IF(ioctl, A_EQ32(1, TIOCLINUX), "console tricks incl. input injection"),
	/* Rare socket families with a history of kernel bugs. */
	DENY_IF(socket, A_EQ32(0, AF_ALG), "kernel crypto sockets"),
	DENY_IF(socket, A_EQ32(0, AF_VSOCK), "vsock reaches the hypervisor"),
	DENY_IF(socketpair, A_EQ32(0, AF_ALG), "kernel crypto sockets"),
	DENY_IF(socketpair, A_EQ32(0, AF_VSOCK), "vsock"),
	/* Execution domains other than PER_LINUX (e.g. READ_IMPLIES_EXEC,
	 * ADDR_NO_RANDOMIZE) weaken the process; like bubblewrap, even the
	 * 0xffffffff query is refused (libseccomp allows one comparison per
	 * argument, so "neither 0 nor query" cannot be said). */
	DENY_IF(personality, A_NE(0, PER_LINUX),
		"only the default execution domain"),
};
const size_t sbx_seccomp_policy_len = sizeof sbx_seccomp_policy / sizeof sbx_seccomp_policy[0];

static void ctx_release(scmp_filter_ctx *ctx)
{
	if (*ctx)
		seccomp_release(*ctx);
}

/* Every rule into ctx, each validated; a bad one is named by index. */
static int add_rules(scmp_filter_ctx ctx, const sbx_sc_rule *rules, size_t n_rules, cx_err *err)
{
	for (size_t i = 0; i < n_rules; i++) {
		const sbx_sc_rule *rule = &rules[i];
		if (!rule->name || rule->n_args > sizeof rule->args / sizeof rule->args[0])
			return cx_err_set(err, EINVAL, "seccomp rule %zu: malformed", i);
		int nr = seccomp_syscall_resolve_name(rule->name);
		if (nr == __NR_SCMP_ERROR)
			return cx_err_set(err, EINVAL, "seccomp rule %zu (%s): unknown syscall", i,
					  rule->name);
		uint32_t action;
		switch (rule->action) {
		case SBX_SC_EPERM:
			action = SCMP_ACT_ERRNO(EPERM);
			break;
		case SBX_SC_ENOSYS:
			action = SCMP_ACT_ERRNO(ENOSYS);
			break;
		default:
			return cx_err_set(err, EINVAL, "seccomp rule %zu (%s): bad action %d", i,
					  rule->name, (int)rule->action);
		}
		int r = seccomp_rule_add_array(ctx, action, nr, rule->n_args, rule->args);
		if (r < 0)
			return cx_err_set(err, -r, "seccomp rule %zu (%s, %s)", i, rule->name,
					  rule->why ? rule->why : "");
	}
	return 0;
}

/* The program libseccomp generates for ctx.  libseccomp 2.5 (Debian 12)
 * exports only to an fd (seccomp_export_bpf_mem came with 2.6): a memfd. */
static int export_prog(scmp_filter_ctx ctx, sbx_seccomp_prog *out, cx_err *err)
{
	cleanup_close int fd = memfd_create("cortex-seccomp", MFD_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, "seccomp: memfd_create");
	int r = seccomp_export_bpf(ctx, fd);
	if (r < 0)
		return cx_err_set(err, -r, "seccomp: export the filter");
	struct stat st;
	if (fstat(fd, &st) < 0)
		return cx_err_set(err, errno, "seccomp: stat the exported filter");
	size_t size = (size_t)st.st_size;
	size_t len = size / sizeof(struct sock_filter);
	if (size == 0 || size % sizeof(struct sock_filter) || len > BPF_MAXINSNS)
		return cx_err_set(err, EINVAL,
				  "seccomp: exported filter of %zu bytes is not 1..%d instructions",
				  size, BPF_MAXINSNS);
	cleanup_free struct sock_filter *insns = malloc(size);
	if (!insns)
		return cx_err_set(err, ENOMEM, "seccomp: filter of %zu bytes", size);
	ssize_t got = pread(fd, insns, size, 0);
	if (got != (ssize_t)size)
		return cx_err_set(err, got < 0 ? errno : EIO, "seccomp: read the exported filter");
	out->insns = steal_pointer(&insns);
	out->len = (unsigned short)len;
	return 0;
}

int sbx_seccomp_build(sbx_seccomp_prog *out, const sbx_sc_rule *rules, size_t n_rules, cx_err *err)
{
	out->insns = NULL;
	out->len = 0;
	__attribute__((cleanup(ctx_release))) scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx)
		return cx_err_set(err, ENOMEM, "seccomp_init");
	int r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (r < 0)
		return cx_err_set(err, -r, "seccomp: set bad-arch action");
	if (add_rules(ctx, rules, n_rules, err) < 0)
		return -1;
	return export_prog(ctx, out, err);
}

/* The policy is the same for every sandbox: compiled once per process
 * (libseccomp's rule adding and export were ~1.6 % of cortexd's CPU in a burst
 * of creates), each caller given its own copy to free. */
int sbx_seccomp_build_policy(sbx_seccomp_prog *out, cx_err *err)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static sbx_seccomp_prog compiled; /* under mu; kept for the process's life */
	out->insns = NULL;
	out->len = 0;
	pthread_mutex_lock(&mu);
	int rc = compiled.insns ? 0 : sbx_seccomp_build(&compiled, sbx_seccomp_policy, sbx_seccomp_policy_len, err);
	if (rc == 0 && !(out->insns = malloc(compiled.len * sizeof *compiled.insns)))
		rc = cx_err_set(err, ENOMEM, "seccomp: copy of the filter");
	if (rc == 0) {
		memcpy(out->insns, compiled.insns, compiled.len * sizeof *compiled.insns);
		out->len = compiled.len;
	}
	pthread_mutex_unlock(&mu);
	return rc;
}

int sbx_seccomp_install(const sbx_seccomp_prog *prog, cx_err *err)
{
	if (!prog || !prog->insns || !prog->len)
		return cx_err_set(err, EINVAL, "seccomp: no filter was built");
	struct sock_fprog fprog = {prog->len, prog->insns};
	/* Flags 0, as seccomp_load() with default attributes: this thread only,
	 * and it is the only one. */
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) == 0)
		return 0;
	if (errno == EACCES)
		return cx_err_set(err, errno, "seccomp: install filter (no_new_privs is not set)");
	return cx_err_set(err, errno, "seccomp: install filter of %u instructions",
			  (unsigned)prog->len);
}

void sbx_seccomp_prog_free(sbx_seccomp_prog *prog)
{
	free(prog->insns);
	prog->insns = NULL;
	prog->len = 0;
}
