/* test_sandbox_image.c — a sandbox on an image: the root is an overlay of two
 * layers made here by hand (bottom: the static sbx_probe at /bin/probe; top:
 * an /etc/os-release of its own), home, workspace, run and the root's upper
 * on one 64 MB session disk (sandbox_disk_attach).  Checks that the image is
 * the root, no host dir or path shows, /proc/1 tells nothing of cortexd, the
 * disk caps writes with ENOSPC, the cpu limits are in the cgroup, the disk
 * keeps its files across detach/attach, and a link planted in an image
 * cannot send a mount to the host.  Root only (mounts, loop devices). */
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include "sandbox_fixture.h"

#define OS_RELEASE "ID=cortex-test-image\nPRETTY_NAME=\"Cortex test image\"\n"
#define DISK_MB	   64

static struct {
	char base[512], l0[600], l1[600], img[600], disk[600], root[600];
	char home[700], ws[700], run[700], upper[700], work[700];
	char id[64];
	const char *layers[3];
	sandbox_opts opts;
	sandbox *sb;
} T;

static void copy_file(const char *from, const char *to, mode_t mode)
{
	int in = open(from, O_RDONLY | O_CLOEXEC);
	int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	assert_true(in >= 0 && out >= 0);
	char buf[65536];
	ssize_t n;
	while ((n = read(in, buf, sizeof buf)) > 0)
		assert_int_equal(write(out, buf, (size_t)n), n);
	close(in);
	close(out);
	assert_int_equal(chmod(to, mode), 0);
}

/* Runs /bin/probe argv... inside; its stdout+stderr (static), read to EOF. */
static const char *probe(sandbox *sb, const char *cmd, const char *path, const char *arg)
{
	static char out[64 << 10];
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	const char *argv[] = {"/bin/probe", cmd, path, arg, NULL};
	sandbox_exec_opts eo = SANDBOX_EXEC_OPTS_INIT;
	eo.argv = argv;
	eo.stdout_fd = p[1];
	eo.stderr_fd = p[1];
	cx_err err = CX_ERR_INIT;
	int r = sandbox_exec(sb, NULL, &eo, &err);
	close(p[1]);
	if (r != 0) {
		close(p[0]);
		print_error("sandbox_exec /bin/probe %s %s: %s\n", cmd, path, err.msg);
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

static void disk_dirs(void)
{
	mkdir_owned(T.home, SB_UID);
	mkdir_owned(T.ws, SB_UID);
	mkdir_owned(T.run, SB_UID);
	mkdir_owned(T.upper, 0);
	mkdir_owned(T.work, 0);
}

static void start_sandbox(void)
{
	cx_err err = CX_ERR_INIT;
	assert_ok(sandbox_create(&T.sb, &T.opts, &err), err);
}

static int group_setup(void **state)
{
	(void)state;
	const char *probe_bin = getenv("SBX_PROBE");
	if (geteuid() != 0 || !probe_bin) {
		fprintf(stderr, "needs root and SBX_PROBE\n");
		return -1;
	}
	if (scratch_dir(T.base, sizeof T.base, "sbx-image") < 0)
		return -1;
	char p[700];
	/* The image: two layers, top first. */
	pathf(T.l0, sizeof T.l0, "%s/l0", T.base);
	pathf(T.l1, sizeof T.l1, "%s/l1", T.base);
	mkdir_owned(T.l0, 0);
	mkdir_owned(T.l1, 0);
	pathf(p, sizeof p, "%s/bin", T.l0);
	mkdir_owned(p, 0);
	pathf(p, sizeof p, "%s/etc", T.l0);
	mkdir_owned(p, 0);
	write_host_file(strcat(p, "/os-release"), "ID=bottom-layer\n", 0644);
	pathf(p, sizeof p, "%s/bin/probe", T.l0);
	copy_file(probe_bin, p, 0755);
	pathf(p, sizeof p, "%s/etc", T.l1);
	mkdir_owned(p, 0);
	write_host_file(strcat(p, "/os-release"), OS_RELEASE, 0644);
	T.layers[0] = T.l1;
	T.layers[1] = T.l0;
	T.layers[2] = NULL;

	/* The session disk: home, workspace, run, upper, work on it. */
	pathf(T.img, sizeof T.img, "%s/disk.img", T.base);
	pathf(T.disk, sizeof T.disk, "%s/disk", T.base);
	cx_err err = CX_ERR_INIT;
	uint64_t t0 = cx_mono_us();
	if (sandbox_disk_attach(T.img, DISK_MB, T.disk, &err) < 0) {
		fprintf(stderr, "disk: %s\n", err.msg);
		return -1;
	}
	fprintf(stderr, "# mke2fs + attach of %d MB: %.1f ms\n", DISK_MB,
		(double)(cx_mono_us() - t0) / 1000.0);
	pathf(T.home, sizeof T.home, "%s/home", T.disk);
	pathf(T.ws, sizeof T.ws, "%s/ws", T.disk);
	pathf(T.run, sizeof T.run, "%s/run", T.disk);
	pathf(T.upper, sizeof T.upper, "%s/upper", T.disk);
	pathf(T.work, sizeof T.work, "%s/work", T.disk);
	disk_dirs();
	pathf(T.root, sizeof T.root, "%s/root", T.base);
	mkdir_owned(T.root, 0);

	pathf(T.id, sizeof T.id, "sbi%d", (int)getpid());
	sandbox_opts o = SANDBOX_OPTS_INIT;
	o.id = T.id;
	o.root_mount = T.root;
	o.home_dir = T.home;
	o.workspace_dir = T.ws;
	o.run_dir = T.run;
	o.uid = SB_UID;
	o.gid = SB_UID;
	o.tmp_size = 16 << 20;
	o.memory_max = 512ULL << 20;
	o.pids_max = 64;
	o.cgroup_name = CG_NAME;
	o.lower_dirs = T.layers;
	o.upper_dir = T.upper;
	o.work_dir = T.work;
	o.cpu_weight = 50;
	o.cpu_max_millicpu = 500;
	o.mount_dir = "/cortex/mcp";
	o.net_isolated = true; /* as cortexd's sessions */
	T.opts = o;
	if (sandbox_create(&T.sb, &T.opts, &err) < 0) {
		fprintf(stderr, "sandbox_create: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	sandbox_destroy(T.sb);
	T.sb = NULL;
	cx_err err = CX_ERR_INIT;
	if (sandbox_disk_detach(T.disk, &err) < 0)
		fprintf(stderr, "detach: %s\n", err.msg);
	cx_rm_rf(T.base);
	return 0;
}

static void test_root_is_the_image(void **state)
{
	(void)state;
	assert_string_equal(probe(T.sb, "cat", "/etc/os-release", NULL), OS_RELEASE);
	const char *top = probe(T.sb, "ls", "/", NULL);
	assert_contains(top, "bin\n");
	assert_contains(top, "workspace\n");
	assert_not_contains(top, "usr\n");
	assert_not_contains(top, "var\n");
	const char *host[] = {"/work",	     "/var/lib", "/root", "/usr/bin/gcc",
			      "/etc/passwd", "/lib",	 "/sys/class", T.base};
	for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) {
		const char *r = probe(T.sb, "exists", host[i], NULL);
		if (strcmp(r, "errno 2\n") != 0) {
			print_error("%s inside: expected errno 2 (absent), got %s", host[i], r);
			fail();
		}
	}
	/* The session dirs are there and the agent's. */
	assert_string_equal(probe(T.sb, "exists", "/workspace", NULL), "yes\n");
	assert_string_equal(probe(T.sb, "exists", "/home/agent", NULL), "yes\n");
}

static void test_mountinfo_names_no_host_path(void **state)
{
	(void)state;
	const char *mi = probe(T.sb, "cat", "/proc/self/mountinfo", NULL);
	assert_contains(mi, "lowerdir+=/proc/self/fd/");
	assert_not_contains(mi, "/work/"); /* "/workspace" is fine */
	assert_not_contains(mi, T.base);
	assert_not_contains(mi, T.l0);
	assert_not_contains(mi, "sbx-image");
	const char *tmp = getenv("TMPDIR");
	if (tmp && strcmp(tmp, "/tmp"))
		assert_not_contains(mi, tmp);
}

static void test_proc1_tells_nothing_of_cortexd(void **state)
{
	(void)state;
	assert_string_equal(probe(T.sb, "cat", "/proc/1/cmdline", NULL), "cortex-init|");
	assert_string_equal(probe(T.sb, "open", "/proc/1/environ", NULL), "errno 13\n");
	assert_string_equal(probe(T.sb, "open", "/proc/1/maps", NULL), "errno 13\n");
	assert_string_equal(probe(T.sb, "open", "/proc/1/mem", NULL), "errno 13\n");
	assert_string_equal(probe(T.sb, "readlink", "/proc/1/exe", NULL), "errno 13\n");
	assert_string_equal(probe(T.sb, "readlink", "/proc/1/cwd", NULL), "errno 13\n");
	char path[64], buf[256];
	pathf(path, sizeof path, "/proc/%d/comm", (int)sandbox_init_pid(T.sb));
	read_text(path, buf, sizeof buf);
	assert_string_equal(buf, "cortex-init\n");
}

/* The host-root mode's init hides cortexd's argv the same way. */
static void test_host_mode_cmdline(void **state)
{
	(void)state;
	fixture f;
	fixture_init_dirs(&f, T.base, "sbh", "host");
	fixture_start(&f);
	assert_string_equal(sh(f.sb, "tr '\\0' '|' < /proc/1/cmdline; echo"), "cortex-init|\n");
	assert_string_equal(sh(f.sb, "cat /proc/1/environ >/dev/null 2>&1 || echo denied"),
			    "denied\n");
	sandbox_destroy(f.sb);
}

static void test_disk_full_is_enospc_inside_only(void **state)
{
	(void)state;
	uint64_t t0 = cx_mono_us();
	const char *r = probe(T.sb, "write", "/workspace/big", "100");
	fprintf(stderr, "# 100 MB into the %d MB disk: %s  (%.0f ms)\n", DISK_MB, r,
		(double)(cx_mono_us() - t0) / 1000.0);
	long long wrote = -1;
	int e = -1;
	assert_int_equal(sscanf(r, "wrote %lld errno %d", &wrote, &e), 2);
	assert_int_equal(e, ENOSPC);
	assert_true(wrote > 0 && wrote < (long long)DISK_MB << 20);
	/* The host side, outside the disk, is unaffected. */
	char out[700];
	pathf(out, sizeof out, "%s/outside", T.base);
	int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	static char mb[1 << 20];
	assert_int_equal(write(fd, mb, sizeof mb), (ssize_t)sizeof mb);
	assert_int_equal(fsync(fd), 0);
	close(fd);
	/* And the disk's own count agrees: its file system is what is full. */
	struct statfs sfs;
	assert_int_equal(statfs(T.disk, &sfs), 0);
	assert_true((uint64_t)sfs.f_blocks * sfs.f_bsize <= (uint64_t)DISK_MB << 20);
	pathf(out, sizeof out, "%s/big", T.ws);
	assert_int_equal(unlink(out), 0);
}

static void read_cg(const char *ctrl, const char *file, char *buf, size_t cap)
{
	char dir[512], path[700];
	cg_dir(dir, sizeof dir, ctrl, T.id);
	pathf(path, sizeof path, "%s/%s", dir, file);
	read_text(path, buf, cap);
}

static void test_cpu_limits_in_cgroup(void **state)
{
	(void)state;
	char v[128];
	if (cgroup_v2()) {
		read_cg("cpu", "cpu.weight", v, sizeof v);
		assert_string_equal(v, "50\n");
		read_cg("cpu", "cpu.max", v, sizeof v);
		assert_string_equal(v, "50000 100000\n");
		return;
	}
	read_cg("cpu", "cpu.shares", v, sizeof v);
	assert_string_equal(v, "512\n");
	read_cg("cpu", "cpu.cfs_quota_us", v, sizeof v);
	assert_string_equal(v, "50000\n");
	read_cg("cpu", "cpu.cfs_period_us", v, sizeof v);
	assert_string_equal(v, "100000\n");
	/* init is in it, so everything the sandbox runs is. */
	read_cg("cpu", "cgroup.procs", v, sizeof v);
	char pid[32];
	pathf(pid, sizeof pid, "%d\n", (int)sandbox_init_pid(T.sb));
	assert_contains(v, pid);
}

/* Stop, detach, attach again, start again: the workspace and the upper
 * (with the mountpoints made there) are still on the disk. */
static void test_disk_survives_detach(void **state)
{
	(void)state;
	const char *r = probe(T.sb, "write", "/workspace/keep", "1");
	assert_string_equal(r, "wrote 1048576 errno 0\n");
	sandbox_destroy(T.sb);
	T.sb = NULL;
	cx_err err = CX_ERR_INIT;
	assert_ok(sandbox_disk_detach(T.disk, &err), err);
	assert_ok(sandbox_disk_detach(T.disk, &err), err); /* not mounted: 0 */
	char p[800];
	pathf(p, sizeof p, "%s/keep", T.ws);
	struct stat st;
	assert_int_equal(stat(p, &st), -1); /* gone with the disk */
	uint64_t t0 = cx_mono_us();
	assert_ok(sandbox_disk_attach(T.img, DISK_MB, T.disk, &err), err);
	fprintf(stderr, "# re-attach of an existing %d MB image: %.1f ms\n", DISK_MB,
		(double)(cx_mono_us() - t0) / 1000.0);
	assert_ok(sandbox_disk_attach(T.img, DISK_MB, T.disk, &err), err); /* no-op */
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, 1 << 20);
	pathf(p, sizeof p, "%s/home/agent", T.upper);
	assert_int_equal(stat(p, &st), 0); /* a mountpoint the image lacked */
	start_sandbox();
	assert_string_equal(probe(T.sb, "exists", "/workspace/keep", NULL), "yes\n");
}

static void test_bad_image_options(void **state)
{
	(void)state;
	cx_err err = CX_ERR_INIT;
	sandbox *sb = NULL;
	sandbox_opts o = T.opts;
	char id[64];
	pathf(id, sizeof id, "sbb%d", (int)getpid());
	o.id = id;
	const char *many[SANDBOX_MAX_LAYERS + 2];
	for (int i = 0; i < SANDBOX_MAX_LAYERS + 1; i++)
		many[i] = T.l0;
	many[SANDBOX_MAX_LAYERS + 1] = NULL;
	o.lower_dirs = many;
	assert_fails(sandbox_create(&sb, &o, &err), err, E2BIG);
	o.lower_dirs = T.layers;
	o.work_dir = NULL;
	assert_fails(sandbox_create(&sb, &o, &err), err, EINVAL);
	o.work_dir = T.work;
	o.cpu_weight = 10001;
	assert_fails(sandbox_create(&sb, &o, &err), err, EINVAL);
	o.cpu_weight = 0;
	o.cpu_max_millicpu = 5;
	assert_fails(sandbox_create(&sb, &o, &err), err, EINVAL);
	assert_null(sb);
	/* Disks: a size out of range, a relative path; nothing is left behind. */
	char img[700], mp[700];
	pathf(img, sizeof img, "%s/tiny.img", T.base);
	pathf(mp, sizeof mp, "%s/tiny", T.base);
	assert_fails(sandbox_disk_attach(img, 4, mp, &err), err, EINVAL);
	assert_fails(sandbox_disk_attach("disk.img", 64, mp, &err), err, EINVAL);
	struct stat st;
	assert_int_equal(stat(img, &st), -1);
}

/* A disk made from the template and attached as new (no loop device scan):
 * mounted, writable, and an attach of it as an existing image afterwards is
 * the no-op it is for a mounted one. */
static void test_disk_attach_new(void **state)
{
	(void)state;
	cx_err err = CX_ERR_INIT;
	char tpl[700], img[700], mp[700], f[800];
	pathf(tpl, sizeof tpl, "%s/templates", T.base);
	pathf(img, sizeof img, "%s/new.img", T.base);
	pathf(mp, sizeof mp, "%s/new", T.base);
	assert_int_equal(mkdir(tpl, 0700), 0);
	assert_ok(sandbox_disk_make_from_template(img, 16, tpl, NULL, 0, &err), err);
	assert_ok(sandbox_disk_attach_new(img, mp, &err), err);
	struct stat a, b;
	pathf(f, sizeof f, "%s/..", mp);
	assert_int_equal(stat(mp, &a), 0);
	assert_int_equal(stat(f, &b), 0);
	assert_true(a.st_dev != b.st_dev); /* a mount of its own */
	pathf(f, sizeof f, "%s/x", mp);
	write_host_file(f, "x\n", 0600);
	assert_ok(sandbox_disk_attach(img, 16, mp, &err), err); /* mounted: nothing done */
	assert_fails(sandbox_disk_attach_new("rel.img", mp, &err), err, EINVAL);
	assert_ok(sandbox_disk_detach(mp, &err), err);
	assert_int_equal(stat(f, &a), -1);
}

/* A template holding dirs: a disk made from it has them at its root, root's,
 * with their modes; a template of its own per list of dirs; a name that is
 * not one plain component is refused before anything is made. */
static void test_disk_template_dirs(void **state)
{
	(void)state;
	cx_err err = CX_ERR_INIT;
	char tpl[700], img[700], img2[700], mp[700], f[800];
	pathf(tpl, sizeof tpl, "%s/templates-dirs", T.base);
	pathf(img, sizeof img, "%s/dirs.img", T.base);
	pathf(img2, sizeof img2, "%s/plain.img", T.base);
	pathf(mp, sizeof mp, "%s/dirs", T.base);
	assert_int_equal(mkdir(tpl, 0700), 0);
	const sandbox_disk_dir dirs[] = {{"home", 0755}, {"work", 0700}, {"stage", 0711}};
	const sandbox_disk_dir bad[][1] = {{{"a/b", 0755}}, {{"..", 0755}}, {{"", 0755}}, {{"x", 010000}}};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		assert_fails(sandbox_disk_make_from_template(img, 16, tpl, bad[i], 1, &err), err, EINVAL);
	assert_int_equal(access(img, F_OK), -1);
	assert_ok(sandbox_disk_make_from_template(img, 16, tpl, dirs, 3, &err), err);
	assert_ok(sandbox_disk_make_from_template(img2, 16, tpl, NULL, 0, &err), err);
	/* two templates (with and without the dirs), no skeleton left beside them */
	DIR *d = opendir(tpl);
	assert_non_null(d);
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		if (e->d_name[0] != '.') {
			assert_int_equal(strncmp(e->d_name, "ext4-16mb", 9), 0);
			n++;
		}
	closedir(d);
	assert_int_equal(n, 2);
	assert_ok(sandbox_disk_attach_new(img, mp, &err), err);
	for (size_t i = 0; i < 3; i++) {
		struct stat st;
		pathf(f, sizeof f, "%s/%s", mp, dirs[i].name);
		assert_int_equal(lstat(f, &st), 0);
		assert_true(S_ISDIR(st.st_mode));
		assert_int_equal(st.st_mode & 07777, dirs[i].mode);
		assert_int_equal(st.st_uid, 0);
		assert_int_equal(st.st_gid, 0);
	}
	assert_ok(sandbox_disk_detach(mp, &err), err);
	assert_ok(sandbox_disk_attach_new(img2, mp, &err), err);
	pathf(f, sizeof f, "%s/home", mp);
	assert_int_equal(access(f, F_OK), -1); /* the plain template has none */
	assert_ok(sandbox_disk_detach(mp, &err), err);
	/* What a new 2 GB disk costs to copy and sync: its data, not ~1 MB of a
	 * resize_inode's reserved GDT blocks (mke2fs -O ^resize_inode). */
	struct stat st;
	pathf(f, sizeof f, "%s/big.img", T.base);
	assert_ok(sandbox_disk_make_from_template(f, 2048, tpl, dirs, 3, &err), err);
	assert_int_equal(stat(f, &st), 0);
	assert_int_equal(st.st_size, 2048ll << 20);
	assert_true(st.st_blocks * 512 < 512 * 1024);
	assert_int_equal(unlink(f), 0);
}

/* An image whose /home is a link to /root (absolute, as the host would read
 * it before pivot_root): creating the sandbox fails with ELOOP and nothing is
 * made on the host. */
static void test_planted_link_in_image(void **state)
{
	(void)state;
	char evil[700], link[800], upper[800], work[800], root[800];
	pathf(evil, sizeof evil, "%s/evil", T.base);
	mkdir_owned(evil, 0);
	pathf(link, sizeof link, "%s/home", evil);
	assert_int_equal(symlink("/root", link), 0);
	pathf(upper, sizeof upper, "%s/evil-upper", T.disk);
	pathf(work, sizeof work, "%s/evil-work", T.disk);
	pathf(root, sizeof root, "%s/evil-root", T.base);
	mkdir_owned(upper, 0);
	mkdir_owned(work, 0);
	mkdir_owned(root, 0);
	const char *layers[] = {evil, T.l0, NULL};
	sandbox_opts o = T.opts;
	char id[64];
	pathf(id, sizeof id, "sbe%d", (int)getpid());
	o.id = id;
	o.root_mount = root;
	o.lower_dirs = layers;
	o.upper_dir = upper;
	o.work_dir = work;
	struct stat before, after;
	int had = stat("/root/agent", &before);
	cx_err err = CX_ERR_INIT;
	sandbox *sb = NULL;
	assert_fails(sandbox_create(&sb, &o, &err), err, ELOOP);
	assert_contains(err.msg, "/home/agent");
	assert_int_equal(stat("/root/agent", &after), had);
}

/* A shared read-only runtime: an image made from a dir (mke2fs -d), attached
 * read-only; it holds the dir's files, owners and modes, and refuses writes. */
static void test_disk_from_dir_read_only(void **state)
{
	(void)state;
	char img[700], mp[700], p[800];
	pathf(img, sizeof img, "%s/runtime.img", T.base);
	pathf(mp, sizeof mp, "%s/runtime", T.base);
	cx_err err = CX_ERR_INIT;
	uint64_t t0 = cx_mono_us();
	assert_ok(sandbox_disk_make_from_dir(img, T.l0, &err), err);
	fprintf(stderr, "# image from a dir (mke2fs -d): %.1f ms\n",
		(double)(cx_mono_us() - t0) / 1000.0);
	assert_fails(sandbox_disk_make_from_dir(img, T.l0, &err), err, EEXIST);
	assert_ok(sandbox_disk_attach_ro(img, mp, &err), err);
	/* Where another disk is mounted: refused, not stacked. */
	assert_fails(sandbox_disk_attach_ro(img, T.disk, &err), err, EBUSY);
	struct stat st;
	pathf(p, sizeof p, "%s/bin/probe", mp);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	assert_int_equal(st.st_uid, 0);
	pathf(p, sizeof p, "%s/new", mp);
	assert_int_equal(open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644), -1);
	assert_int_equal(errno, EROFS);
	assert_ok(sandbox_disk_detach(mp, &err), err);
	pathf(p, sizeof p, "%s/bin/probe", mp);
	assert_int_equal(stat(p, &st), -1);
	assert_fails(sandbox_disk_attach_ro(img, "relative", &err), err, EINVAL);
}

/* What cortexd does to a running sandbox works the same on an image: a
 * run-time read-only mount under mount_dir (made in the upper: the image has
 * no /cortex) and a file written into home. */
static void test_mount_and_write_on_image(void **state)
{
	(void)state;
	cx_err err = CX_ERR_INIT;
	assert_ok(sandbox_mount_ro(T.sb, T.l1, "pkg", &err), err);
	assert_string_equal(probe(T.sb, "cat", "/cortex/mcp/pkg/etc/os-release", NULL), OS_RELEASE);
	assert_ok(sandbox_umount(T.sb, "pkg", &err), err);
	assert_string_equal(probe(T.sb, "exists", "/cortex/mcp/pkg/etc", NULL), "errno 2\n");
	assert_ok(sandbox_write_file(T.sb, "/home/agent/.config/x.json", "{}", 2, 0600, &err), err);
	assert_string_equal(probe(T.sb, "cat", "/home/agent/.config/x.json", NULL), "{}");
}

/* A daemon that died leaves the cgroup dirs, the cpu one included:
 * sandbox_reap_stale() kills and removes them all. */
/* A listener on the host: TCP on 127.0.0.1 (port out) or abstract unix. */
static int host_listener(int family, const char *name, unsigned *port_out)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	if (family == AF_INET) {
		struct sockaddr_in a = {.sin_family = AF_INET};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t len = sizeof a;
		assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
		assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
		*port_out = ntohs(a.sin_port);
	} else {
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		memcpy(a.sun_path + 1, name, strlen(name));
		socklen_t len =
		    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
		assert_int_equal(bind(fd, (struct sockaddr *)&a, len), 0);
	}
	assert_int_equal(listen(fd, 4), 0);
	return fd;
}

/* The sandbox has its own network namespace: only `lo` (up: a connect to a
 * closed port is refused, not unreachable), no host socket in /proc/net/tcp,
 * no way to the host's loopback listeners or abstract unix sockets. */
static void test_net_only_lo(void **state)
{
	(void)state;
	unsigned port = 0;
	int tcp = host_listener(AF_INET, NULL, &port);
	char name[64], portstr[16], hexport[16];
	snprintf(name, sizeof name, "cortex-test-net-%d", (int)getpid());
	int ux = host_listener(AF_UNIX, name, NULL);
	snprintf(portstr, sizeof portstr, "%u", port);
	snprintf(hexport, sizeof hexport, ":%04X ", port);

	/* Seen from the host, both are there (the probe's checks are not void). */
	char host_tcp[1 << 16];
	int fd = open("/proc/net/tcp", O_RDONLY | O_CLOEXEC);
	ssize_t n = read(fd, host_tcp, sizeof host_tcp - 1);
	close(fd);
	host_tcp[n > 0 ? n : 0] = '\0';
	assert_non_null(strstr(host_tcp, hexport));

	const char *dev = probe(T.sb, "cat", "/proc/net/dev", NULL);
	unsigned ifaces = 0;
	for (const char *l = strchr(dev, '\n'); l && (l = strchr(l + 1, '\n'));)
		if (l[1] && strchr(l + 1, ':'))
			ifaces++;
	if (ifaces != 1 || !strstr(dev, " lo:")) {
		print_error("expected only lo in /proc/net/dev, got:\n%s\n", dev);
		fail();
	}
	const char *in_tcp = probe(T.sb, "cat", "/proc/net/tcp", NULL);
	if (strstr(in_tcp, hexport)) {
		print_error("host port %u (%s) visible inside:\n%s\n", port, hexport, in_tcp);
		fail();
	}
	assert_string_equal(probe(T.sb, "tcp", portstr, NULL), "errno 111\n"); /* ECONNREFUSED */
	assert_string_equal(probe(T.sb, "unix", name, NULL), "errno 111\n");
	close(tcp);
	close(ux);
}

static void test_reap_stale_covers_cpu(void **state)
{
	(void)state;
	char dir[512];
	cg_dir(dir, sizeof dir, "cpu", T.id);
	struct stat st;
	assert_int_equal(stat(dir, &st), 0);
	pid_t init = sandbox_init_pid(T.sb);
	int found = 0;
	cx_err err = CX_ERR_INIT;
	assert_ok(sandbox_reap_stale(CG_NAME, T.id, &found, &err), err);
	assert_int_equal(found, 1);
	assert_int_equal(stat(dir, &st), -1);
	assert_int_equal(errno, ENOENT);
	cg_dir(dir, sizeof dir, "memory", T.id);
	assert_int_equal(stat(dir, &st), -1);
	for (int i = 0; i < 200 && !process_gone(init); i++)
		usleep(10000);
	assert_true(process_gone(init));
	sandbox_destroy(T.sb); /* what is left of it: nothing to kill or remove */
	T.sb = NULL;
}

int main(void)
{
	if (fixture_tsan_idle_thread() != 0)
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_root_is_the_image),
	    cmocka_unit_test(test_mountinfo_names_no_host_path),
	    cmocka_unit_test(test_proc1_tells_nothing_of_cortexd),
	    cmocka_unit_test(test_net_only_lo),
	    cmocka_unit_test(test_host_mode_cmdline),
	    cmocka_unit_test(test_disk_full_is_enospc_inside_only),
	    cmocka_unit_test(test_cpu_limits_in_cgroup),
	    cmocka_unit_test(test_bad_image_options),
	    cmocka_unit_test(test_planted_link_in_image),
	    cmocka_unit_test(test_disk_from_dir_read_only),
	    cmocka_unit_test(test_mount_and_write_on_image),
	    cmocka_unit_test(test_disk_survives_detach),
	    cmocka_unit_test(test_disk_attach_new),
	    cmocka_unit_test(test_disk_template_dirs),
	    cmocka_unit_test(test_reap_stale_covers_cpu),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
