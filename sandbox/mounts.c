/* mounts.c — builds the sandbox's file system view.  Runs in init (PID 1 of
 * the new pid namespace, in the mount namespace the monitor unshared), still
 * as root, before privileges are dropped.
 *
 * The new root is a small tmpfs on opts->root_mount.  Host top-level
 * directories are bound into it read-only (recursively, nosuid, nodev);
 * /home/agent, /workspace and /run/cortex are the session's own host dirs,
 * read-write; /tmp, /dev/shm are fresh tmpfs; /dev holds a few device nodes
 * bound from the host; /proc is a new procfs for the new pid namespace; /sys
 * shows only the sandbox's own cgroup and a few host facts (sysview.c).
 * After pivot_root the root tmpfs itself is made read-only, so the agent can
 * write only where it is meant to.  opts->mount_dir gets a tmpfs of its own,
 * root-owned 0755: it stays writable for cortexd (sandbox_mount_ro makes
 * mountpoints there at run time) and not for the agent.
 *
 * Image mode (opts->lower_dirs): the new root is instead the overlay the
 * library made (overlay.c), moved onto opts->root_mount; no host top-level dir
 * is bound.  Mountpoints the image lacks (/proc, /dev, /tmp, /home/agent, ...)
 * are created in the overlay's upper.  The tree is the image author's, so
 * every mountpoint path is first walked one component at a time without
 * following links (image_walk): a planted "/home -> /root" must not turn a
 * mkdir or a bind into one on the host.  With an upper the root stays
 * writable where the image's own permissions allow; without one it is
 * read-only.
 *
 * Errors name the path as seen inside the sandbox ("mount /workspace: ...").
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "sandbox-internal.h"

/* Host top-level entries never bound in: kernel/virtual file systems the
 * sandbox gets its own of, and places with other users' or the host's
 * private data. */
static const char *const skip_top[] = {
	"proc", "sys", "dev", "tmp", "run", "home", "root", "mnt", "media", "lost+found", "boot",
};

static const char *const dev_nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};

static const struct {
	const char *name, *target;
} dev_links[] = {
	{"fd", "/proc/self/fd"},
	{"stdin", "/proc/self/fd/0"},
	{"stdout", "/proc/self/fd/1"},
	{"stderr", "/proc/self/fd/2"},
};

#define DEFAULT_TMP_SIZE (256ULL << 20)
/* The mount_dir tmpfs holds only empty mountpoint dirs. */
#define MOUNT_DIR_TMPFS "mode=0755,uid=0,gid=0,size=1m"

/* Absolute, not too long, no "." or ".." components: the one path check for
 * every path cortexd hands the library (binds, hides, mount_dir, files to
 * write); then "root + path" cannot climb out of root by itself. */
bool sb_path_ok(const char *p, size_t max)
{
	if (!p || p[0] != '/' || strlen(p) >= max)
		return false;
	for (const char *c = p; *c;) {
		while (*c == '/')
			c++;
		size_t n = strcspn(c, "/");
		if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		c += n;
	}
	return true;
}

static int set_attr(const char *path, const char *shown, uint64_t attrs, bool recursive,
		    cx_err *err)
{
	struct mount_attr a = {.attr_set = attrs};
	if (mount_setattr(AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, &a, sizeof a) < 0)
		return cx_err_set(err, errno, "mount_setattr %s", shown);
	return 0;
}

/* Recursive bind of host `src` on `dst`; always nosuid+nodev, plus ro. */
static int bind_tree(const char *src, const char *dst, const char *shown, bool ro, cx_err *err)
{
	if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) < 0)
		return cx_err_set(err, errno, "bind %s on %s", src, shown);
	uint64_t attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (ro ? MOUNT_ATTR_RDONLY : 0);
	return set_attr(dst, shown, attrs, true, err);
}

static int mount_tmpfs(const char *dst, const char *shown, unsigned long flags,
		       const char *data, cx_err *err)
{
	if (mount("tmpfs", dst, "tmpfs", flags, data) < 0)
		return cx_err_set(err, errno, "mount tmpfs on %s", shown);
	return 0;
}

static int make_dir(const char *path, const char *shown, mode_t mode, cx_err *err)
{
	if (mkdir(path, mode) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", shown);
	return 0;
}

/* mkdir -p of every parent of `rel` (a sandbox path) below `root`. */
static int make_parents(const char *root, const char *rel, cx_err *err)
{
	char path[PATH_MAX];
	int n = snprintf(path, sizeof path, "%s%s", root, rel);
	if (n < 0 || (size_t)n >= sizeof path)
		return cx_err_set(err, ENAMETOOLONG, "%s", rel);
	size_t rl = strlen(root);
	for (char *s = path + rl + 1; (s = strchr(s, '/')); s++) {
		*s = '\0';
		int r = make_dir(path, path + rl, 0755, err);
		*s = '/';
		if (r < 0)
			return -1;
	}
	return 0;
}

/* One top-level host entry into the new root: a dir is bound read-only, a
 * link stays a link (merged /usr: /bin -> usr/bin), a plain file at the top
 * (/.dockerenv, ...) is left out. */
static int bind_top_entry(const char *root, const char *name, cx_err *err)
{
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return 0;
	for (size_t i = 0; i < sizeof skip_top / sizeof skip_top[0]; i++)
		if (!strcmp(name, skip_top[i]))
			return 0;
	char src[PATH_MAX], dst[PATH_MAX];
	snprintf(src, sizeof src, "/%s", name);
	snprintf(dst, sizeof dst, "%s/%s", root, name);
	struct stat st;
	if (lstat(src, &st) < 0)
		return cx_err_set(err, errno, "lstat %s", src);
	if (S_ISLNK(st.st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlink(src, target, sizeof target - 1);
		if (n < 0)
			return cx_err_set(err, errno, "readlink %s", src);
		target[n] = '\0';
		if (symlink(target, dst) < 0)
			return cx_err_set(err, errno, "symlink %s", src);
		return 0;
	}
	if (!S_ISDIR(st.st_mode))
		return 0;
	if (make_dir(dst, src, 0755, err) < 0)
		return -1;
	return bind_tree(src, dst, src, true, err);
}

/* getdents64 into a stack buffer, not opendir(): that mallocs, and init
 * must not (see init.c). */
static int bind_host_top(const char *root, cx_err *err)
{
	cleanup_close int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, "open /");
	union {
		char b[8192];
		struct dirent64 align;
	} buf;
	for (;;) {
		ssize_t n = getdents64(fd, buf.b, sizeof buf.b);
		if (n < 0)
			return cx_err_set(err, errno, "read dir /");
		if (n == 0)
			return 0;
		for (ssize_t off = 0; off < n;) {
			const struct dirent64 *de = (const struct dirent64 *)(buf.b + off);
			if (bind_top_entry(root, de->d_name, err) < 0)
				return -1;
			off += de->d_reclen;
		}
	}
}

/* Image mode: walks `rel` below root component by component (O_NOFOLLOW,
 * no "..": sb_path_ok), making missing dirs (0755, root's) and, when `file`,
 * the last one as an empty file.  A link or a non-dir on the way fails
 * (ELOOP/ENOTDIR): nothing is then created or mounted through it.  No
 * sandbox process runs yet, so the checked path cannot change before the
 * mount that follows. */
static int image_walk(const char *root, const char *rel, bool file, cx_err *err)
{
	if (!sb_path_ok(rel, PATH_MAX / 2))
		return cx_err_set(err, EINVAL, "%s: not an absolute path without . or ..", rel);
	cleanup_close int dir = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0)
		return cx_err_set(err, errno, "open the new root");
	char name[NAME_MAX + 1];
	for (const char *c = rel;;) {
		while (*c == '/')
			c++;
		size_t n = strcspn(c, "/");
		if (n == 0)
			return 0;
		if (n > NAME_MAX)
			return cx_err_set(err, ENAMETOOLONG, "%s", rel);
		memcpy(name, c, n);
		name[n] = '\0';
		c += n;
		bool last = c[strspn(c, "/")] == '\0';
		if (last && file) {
			int fd = openat(dir, name, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
			if (fd < 0 && errno != EISDIR)
				return cx_err_set(err, errno, "image path %s", rel);
			if (fd >= 0)
				close(fd);
			return 0;
		}
		int next = openat(dir, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0 && errno == ENOENT) {
			if (mkdirat(dir, name, 0755) < 0 && errno != EEXIST)
				return cx_err_set(err, errno, "mkdir %s (in the image)", rel);
			next = openat(dir, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		}
		if (next < 0)
			return cx_err_set(err, errno == ENOTDIR ? ELOOP : errno,
					  "image path %s: a link or not a directory on the way",
					  rel);
		close(dir);
		dir = next;
	}
}

/* image_walk() in image mode; a no-op in host-root mode. */
static int walk_if_image(bool image, const char *root, const char *rel, bool file, cx_err *err)
{
	return image ? image_walk(root, rel, file, err) : 0;
}

/* A writable host dir of the session at `rel`. */
static int bind_session_dir(const char *root, const char *host, const char *rel, cx_err *err)
{
	char dst[PATH_MAX];
	snprintf(dst, sizeof dst, "%s%s", root, rel);
	if (make_parents(root, rel, err) < 0 || make_dir(dst, rel, 0755, err) < 0)
		return -1;
	return bind_tree(host, dst, rel, false, err);
}

static int setup_dev(const char *root, cx_err *err)
{
	char dev[PATH_MAX], p[PATH_MAX];
	snprintf(dev, sizeof dev, "%s/dev", root);
	if (make_dir(dev, "/dev", 0755, err) < 0 ||
	    mount_tmpfs(dev, "/dev", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k", err) < 0)
		return -1;
	for (size_t i = 0; i < sizeof dev_nodes / sizeof dev_nodes[0]; i++) {
		char src[64], shown[64];
		snprintf(src, sizeof src, "/dev/%s", dev_nodes[i]);
		snprintf(shown, sizeof shown, "/dev/%s", dev_nodes[i]);
		snprintf(p, sizeof p, "%s/%s", dev, dev_nodes[i]);
		int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
		if (fd < 0)
			return cx_err_set(err, errno, "create %s", shown);
		close(fd);
		if (mount(src, p, NULL, MS_BIND, NULL) < 0)
			return cx_err_set(err, errno, "bind %s", shown);
	}
	for (size_t i = 0; i < sizeof dev_links / sizeof dev_links[0]; i++) {
		snprintf(p, sizeof p, "%s/%s", dev, dev_links[i].name);
		if (symlink(dev_links[i].target, p) < 0)
			return cx_err_set(err, errno, "symlink /dev/%s", dev_links[i].name);
	}
	snprintf(p, sizeof p, "%s/shm", dev);
	if (make_dir(p, "/dev/shm", 01777, err) < 0 ||
	    mount_tmpfs(p, "/dev/shm", MS_NOSUID | MS_NODEV, "mode=1777,size=64m", err) < 0)
		return -1;
	/* A private devpts so that terminal programs (script, expect, node-pty)
	 * work; optional: without it only those programs fail. */
	snprintf(p, sizeof p, "%s/pts", dev);
	if (make_dir(p, "/dev/pts", 0755, err) < 0)
		return -1;
	if (mount("devpts", p, "devpts", MS_NOSUID | MS_NOEXEC,
		  "newinstance,ptmxmode=0666,mode=0620") == 0) {
		snprintf(p, sizeof p, "%s/ptmx", dev);
		if (symlink("pts/ptmx", p) < 0)
			return cx_err_set(err, errno, "symlink /dev/ptmx");
	}
	/* Only the tmpfs itself; the nodes, shm and pts are separate mounts. */
	return set_attr(dev, "/dev", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
			false, err);
}

static int bind_extra(const char *root, bool image, const sandbox_bind *b, cx_err *err)
{
	if (!sb_path_ok(b->host_path, PATH_MAX / 2) || !sb_path_ok(b->sandbox_path, PATH_MAX / 2))
		return cx_err_set(err, EINVAL, "bind %s on %s: paths must be absolute, without . or ..",
				  b->host_path ? b->host_path : "(null)",
				  b->sandbox_path ? b->sandbox_path : "(null)");
	struct stat st, mst;
	if (stat(b->host_path, &st) < 0)
		return cx_err_set(err, errno, "bind %s", b->host_path);
	if (walk_if_image(image, root, b->sandbox_path, !S_ISDIR(st.st_mode), err) < 0)
		return cx_err_wrap(err, "bind %s", b->host_path);
	char dst[PATH_MAX];
	snprintf(dst, sizeof dst, "%s%s", root, b->sandbox_path);
	/* The mountpoint is created in the root tmpfs; under a host dir that is
	 * already bound read-only it must exist already (EROFS otherwise). */
	if (stat(dst, &mst) < 0) {
		if (make_parents(root, b->sandbox_path, err) < 0)
			return cx_err_wrap(err, "bind %s", b->host_path);
		if (S_ISDIR(st.st_mode)) {
			if (make_dir(dst, b->sandbox_path, 0755, err) < 0)
				return cx_err_wrap(err, "bind %s", b->host_path);
		} else {
			int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
			if (fd < 0)
				return cx_err_set(err, errno, "bind %s: create %s", b->host_path,
						  b->sandbox_path);
			close(fd);
		}
	}
	return bind_tree(b->host_path, dst, b->sandbox_path, true, err);
}

/* The place for run-time mounts (sandbox_mount_ro, see mountin.c). */
static int setup_mount_dir(const char *root, const char *rel, cx_err *err)
{
	char dst[PATH_MAX];
	snprintf(dst, sizeof dst, "%s%s", root, rel);
	if (make_parents(root, rel, err) < 0 || make_dir(dst, rel, 0755, err) < 0 ||
	    mount_tmpfs(dst, rel, MS_NOSUID | MS_NODEV, MOUNT_DIR_TMPFS, err) < 0)
		return cx_err_wrap(err, "mount_dir");
	return 0;
}

/* After pivot_root: paths resolve in the new root. */
static int hide_path(const char *path, cx_err *err)
{
	if (!sb_path_ok(path, PATH_MAX / 2))
		return cx_err_set(err, EINVAL, "hide %s: path must be absolute, without . or ..",
				  path ? path : "(null)");
	struct stat st;
	if (stat(path, &st) < 0) {
		if (errno == ENOENT) /* not visible inside: nothing to hide */
			return 0;
		return cx_err_set(err, errno, "hide %s", path);
	}
	if (!S_ISDIR(st.st_mode))
		return cx_err_set(err, ENOTDIR, "hide %s", path);
	return mount_tmpfs(path, path, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
			   "mode=0755,size=4k", err);
}

static int enter_root(const char *root, cx_err *err)
{
	/* pivot_root(".", "."): the old root ends up stacked on the new one and
	 * is lazily detached right away; no directory for it is needed. */
	if (chdir(root) < 0)
		return cx_err_set(err, errno, "chdir %s", root);
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return cx_err_set(err, errno, "pivot_root %s", root);
	if (umount2(".", MNT_DETACH) < 0)
		return cx_err_set(err, errno, "detach old root");
	if (chdir("/") < 0)
		return cx_err_set(err, errno, "chdir /");
	return 0;
}

/* The new root on root_mount: the host-root mode's small tmpfs, or the
 * image's overlay (root_fd, from overlay.c) moved there. */
static int mount_root(const char *root, int root_fd, cx_err *err)
{
	if (root_fd < 0)
		return mount_tmpfs(root, "/", MS_NOSUID | MS_NODEV, "mode=0755,size=4m", err);
	if (move_mount(root_fd, "", AT_FDCWD, root, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return cx_err_set(err, errno, "move the image overlay onto the root");
	return 0;
}

int sbx_mounts_setup(const sandbox_opts *opts, int root_fd, cx_err *err)
{
	const char *root = opts->root_mount;
	const bool image = root_fd >= 0;
	char p[PATH_MAX], data[64];
	static const char *const session_dirs[] = {"/home/agent", "/workspace", "/run/cortex",
						   "/tmp", "/dev", "/proc", "/sys"};

	/* Nothing we mount may propagate back to the host. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return cx_err_set(err, errno, "make / rprivate");
	if (mount_root(root, root_fd, err) < 0)
		return cx_err_wrap(err, "root %s", root);
	if (image)
		close(root_fd);
	/* Unbindable: when root_mount lies under a host dir we bind (it does, in
	 * tests: /work/...), the recursive bind skips it instead of nesting the
	 * new root inside itself. */
	if (mount(NULL, root, NULL, MS_UNBINDABLE, NULL) < 0)
		return cx_err_set(err, errno, "make %s unbindable", root);

	if (!image && bind_host_top(root, err) < 0)
		return -1;
	for (size_t i = 0; i < sizeof session_dirs / sizeof session_dirs[0]; i++)
		if (walk_if_image(image, root, session_dirs[i], false, err) < 0)
			return -1;
	if (bind_session_dir(root, opts->home_dir, "/home/agent", err) < 0 ||
	    bind_session_dir(root, opts->workspace_dir, "/workspace", err) < 0 ||
	    bind_session_dir(root, opts->run_dir, "/run/cortex", err) < 0)
		return -1;

	snprintf(p, sizeof p, "%s/tmp", root);
	snprintf(data, sizeof data, "mode=1777,size=%" PRIu64,
		 opts->tmp_size ? opts->tmp_size : (uint64_t)DEFAULT_TMP_SIZE);
	if (make_dir(p, "/tmp", 01777, err) < 0 ||
	    mount_tmpfs(p, "/tmp", MS_NOSUID | MS_NODEV, data, err) < 0)
		return -1;

	if (setup_dev(root, err) < 0)
		return -1;

	/* Mounted by PID 1 of the new pid namespace, so it lists only the
	 * sandbox's processes. */
	snprintf(p, sizeof p, "%s/proc", root);
	if (make_dir(p, "/proc", 0555, err) < 0)
		return -1;
	if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return cx_err_set(err, errno, "mount /proc");

	/* Its own limits and little else (sysview.c). */
	if (sbx_sysview_setup(root, err) < 0)
		return -1;

	for (size_t i = 0; i < opts->n_binds; i++)
		if (bind_extra(root, image, &opts->binds[i], err) < 0)
			return -1;
	if (opts->mount_dir && (walk_if_image(image, root, opts->mount_dir, false, err) < 0 ||
				setup_mount_dir(root, opts->mount_dir, err) < 0))
		return -1;

	if (enter_root(root, err) < 0)
		return -1;
	/* Image mode: no host dir is there to hide, and the overlay keeps the
	 * image's own permissions (read-only without an upper). */
	if (image)
		return 0;

	for (const char *const *h = opts->hide; h && *h; h++)
		if (hide_path(*h, err) < 0)
			return -1;

	/* Last: the root tmpfs (mountpoints only) becomes read-only; not
	 * recursive, so the mount_dir tmpfs stays writable for root. */
	return set_attr("/", "/", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, false,
			err);
}
