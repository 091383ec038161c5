/* disk.c — a session's disk: an ext4 image file on a loop device, mounted on
 * a host dir, so that the kernel caps what a session writes (ENOSPC for the
 * session, nothing for anyone else).
 *
 * The image is a sparse file made by mke2fs (the only program run; with a
 * clean environment, its output kept for the error message).  The loop device
 * is attached without losetup: LOOP_CTL_GET_FREE, then LOOP_CONFIGURE with
 * LO_FLAGS_AUTOCLEAR, retried when another attacher takes the same device
 * first.  Because of AUTOCLEAR the device frees itself when the last mount of
 * the file system goes (the host's, and any sandbox's bind of it), so detach
 * is one umount2(MNT_DETACH).  An image still attached (a sandbox holding a
 * detached mount) is mounted again through its existing loop device, never a
 * second one: two ext4 instances on one file would corrupt it.
 *
 * Runs in the daemon (not in a forked child): allocating is fine here.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include "sandbox-internal.h"

#define LOOP_MAJOR_NR	    7
#define LOOP_CONFIG_RETRIES 32
#define MKE2FS_OUT_CAP	    2048	  /* of mke2fs's output kept for the error */
#define DISK_MAX_MB	    (16ULL << 20) /* 16 TiB: ext4 with 4k blocks */

static const char *const mke2fs_paths[] = {"/usr/sbin/mke2fs", "/sbin/mke2fs"};

/* Runs mke2fs with argv (argv[0] replaced by its path) and a clean env;
 * stdout and stderr go to one pipe whose head ends in the error. */
static int run_mke2fs(char **argv, cx_err *err)
{
	const char *prog = NULL;
	for (size_t i = 0; i < sizeof mke2fs_paths / sizeof mke2fs_paths[0]; i++)
		if (access(mke2fs_paths[i], X_OK) == 0)
			prog = mke2fs_paths[i];
	if (!prog)
		return cx_err_set(err, ENOENT, "mke2fs not found (package e2fsprogs)");
	argv[0] = (char *)prog;
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return cx_err_set(err, errno, "pipe");
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_adddup2(&fa, p[1], 2);
	char *envp[] = {"PATH=/usr/sbin:/sbin:/usr/bin:/bin", "LC_ALL=C", NULL};
	pid_t pid;
	int r = posix_spawn(&pid, prog, &fa, NULL, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (r != 0) {
		close(p[0]);
		return cx_err_set(err, r, "spawn %s", prog);
	}
	char out[MKE2FS_OUT_CAP];
	size_t n = 0;
	for (;;) {
		char sink[512];
		char *dst = n < sizeof out - 1 ? out + n : sink;
		size_t cap = n < sizeof out - 1 ? sizeof out - 1 - n : sizeof sink;
		ssize_t k = read(p[0], dst, cap);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		if (dst == out + n)
			n += (size_t)k;
	}
	close(p[0]);
	out[n] = '\0';
	while (n && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = '\0';
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return cx_err_set(err, errno, "wait %s", prog);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return cx_err_set(err, EIO, "%s failed (status %d): %s", prog,
				  WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out);
	return 0;
}

/* ext4 with its journal: a session's workspace is the user's work and must
 * survive a host crash or a killed daemon without an fsck.  With lazy inode
 * tables and a lazily zeroed journal, mke2fs writes only the metadata: it
 * took the same time with and without the journal here (~90 ms for 64 MB and
 * 10 GB, process start and fsync included), and the file stays sparse (1 MB
 * allocated for 64 MB, 5 MB for 10 GB).  Mounted with noinit_itable, the
 * kernel does not zero the inode tables later either (holes read as zeros).
 * No root reserve (-m 0): the agent is never root.  No resize_inode: its
 * reserved GDT blocks (255 for 2 GB) were ~1 MB of the ~1.2 MB an empty
 * disk holds, copied and synced for every new session disk (a template
 * copy); nothing grows a mounted disk here. */
static int format(const char *image, const char *src_dir, cx_err *err)
{
	char *argv[] = {"mke2fs",
			"-q",
			"-F",
			"-t",
			"ext4",
			"-m",
			"0",
			"-O",
			"^resize_inode",
			"-E",
			"lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
			src_dir ? "-d" : NULL,
			(char *)src_dir,
			(char *)image,
			NULL};
	if (!src_dir) /* shift the image over the absent -d pair */
		argv[11] = (char *)image, argv[12] = NULL;
	return run_mke2fs(argv, err);
}

/* A sparse file of size_mb, 0600 (O_EXCL). */
static int create_sparse(const char *image, uint64_t size_mb, cx_err *err)
{
	cleanup_close int fd = open(image, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return cx_err_set(err, errno, "create %s", image);
	if (ftruncate(fd, (off_t)(size_mb << 20)) < 0) {
		int e = errno;
		unlink(image);
		return cx_err_set(err, e, "size %s to %" PRIu64 " MB", image, size_mb);
	}
	return 0;
}

/* A new image at `image`, never half made: built under a temporary name in
 * the same dir (sparse, formatted, from src_dir if set), then renamed into
 * place without replacing (RENAME_NOREPLACE keeps O_EXCL's promise).  A
 * daemon killed midway leaves only a "<image>.new-<pid>" behind. */
static int make_image(const char *image, uint64_t size_mb, const char *src_dir, cx_err *err)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof tmp, "%s.new-%d", image, (int)getpid()) >= (int)sizeof tmp)
		return cx_err_set(err, ENAMETOOLONG, "%s", image);
	unlink(tmp); /* a leftover of an earlier process with our pid */
	if (create_sparse(tmp, size_mb, err) < 0)
		return -1;
	if (format(tmp, src_dir, err) < 0) {
		unlink(tmp);
		return cx_err_wrap(err, "format %s", image);
	}
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, image, RENAME_NOREPLACE) < 0) {
		int e = errno;
		unlink(tmp);
		return cx_err_set(err, e, "create %s", image);
	}
	return 0;
}

/* Copy a sparse file's data extents (SEEK_DATA/SEEK_HOLE, copy_file_range
 * in the kernel) into out, sized like it: the holes stay holes.  A reflink
 * (FICLONE) first where the file system shares extents (btrfs, xfs). */
static int copy_sparse(int in, int out, off_t size, cx_err *err)
{
	if (ioctl(out, FICLONE, in) == 0)
		return 0;
	if (ftruncate(out, size) < 0)
		return cx_err_set(err, errno, "size the copy");
	for (off_t off = 0; off < size;) {
		off_t data = lseek(in, off, SEEK_DATA);
		if (data < 0 && errno == ENXIO)
			break; /* only a hole is left */
		if (data < 0)
			return cx_err_set(err, errno, "seek data");
		off_t hole = lseek(in, data, SEEK_HOLE);
		if (hole < 0)
			return cx_err_set(err, errno, "seek hole");
		for (loff_t a = data, b = data; a < hole;) {
			ssize_t n = copy_file_range(in, &a, out, &b, (size_t)(hole - a), 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return cx_err_set(err, errno, "copy_file_range");
			if (n == 0)
				return cx_err_set(err, EIO, "copy_file_range: short copy");
		}
		off = hole;
	}
	return 0;
}

/* FNV-1a over the dirs a template holds: their names and modes name it, so
 * a changed list gets a template of its own. */
static uint32_t dirs_hash(const sandbox_disk_dir *dirs, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++) {
		char m[16];
		snprintf(m, sizeof m, "/%o;", dirs[i].mode);
		for (const char *c = dirs[i].name; *c; c++)
			h = (h ^ (unsigned char)*c) * 16777619u;
		for (const char *c = m; *c; c++)
			h = (h ^ (unsigned char)*c) * 16777619u;
	}
	return h;
}

/* mke2fs -d's source for a template: a fresh dir (0755, as mke2fs makes a
 * root) in dir holding each of dirs (root's, mode as given) and nothing else. */
static int make_skeleton(char *out, size_t cap, const char *dir, const sandbox_disk_dir *dirs, size_t n,
			 cx_err *err)
{
	if (snprintf(out, cap, "%s/skel-XXXXXX", dir) >= (int)cap)
		return cx_err_set(err, ENAMETOOLONG, "%s", dir);
	if (!mkdtemp(out))
		return cx_err_set(err, errno, "mkdtemp in %s", dir);
	cleanup_close int fd = open(out, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int rc = fd < 0 || fchmod(fd, 0755) < 0 ? cx_err_set(err, errno, "open %s", out) : 0;
	for (size_t i = 0; rc == 0 && i < n; i++)
		if (mkdirat(fd, dirs[i].name, 0700) < 0 || fchmodat(fd, dirs[i].name, dirs[i].mode, 0) < 0)
			rc = cx_err_set(err, errno, "mkdir %s/%s", out, dirs[i].name);
	if (rc < 0)
		cx_rm_rf(out);
	return rc;
}

/* The template of an empty disk of size_mb in dir (root's, not reachable by
 * a sandbox), holding dirs at its root: made by mke2fs once (make_image:
 * never half made).  The dirs come with the copy: a fresh disk's first
 * mkdirs each allocated a block on a just-mounted ext4, which made the
 * allocator scan and prefetch its groups' bitmaps on every create. */
static int template_path(char *out, size_t cap, const char *dir, uint64_t size_mb, const sandbox_disk_dir *dirs,
			 size_t n_dirs, cx_err *err)
{
	int len = n_dirs ? snprintf(out, cap, "%s/ext4-%" PRIu64 "mb-%08x.img", dir, size_mb, dirs_hash(dirs, n_dirs))
			 : snprintf(out, cap, "%s/ext4-%" PRIu64 "mb.img", dir, size_mb);
	if (len >= (int)cap)
		return cx_err_set(err, ENAMETOOLONG, "%s", dir);
	if (access(out, F_OK) == 0)
		return 0;
	/* One maker at a time in this process: make_image's temporary name is per pid. */
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_lock(&mu);
	cx_err e = CX_ERR_INIT;
	char skel[PATH_MAX];
	int rc = 0;
	if (access(out, F_OK) < 0) {
		rc = n_dirs ? make_skeleton(skel, sizeof skel, dir, dirs, n_dirs, &e) : 0;
		bool skel_made = n_dirs && rc == 0; /* by mkdtemp: ours alone */
		if (rc == 0)
			rc = make_image(out, size_mb, skel_made ? skel : NULL, &e);
		if (skel_made)
			cx_rm_rf(skel);
	}
	pthread_mutex_unlock(&mu);
	if (rc < 0 && e.code != EEXIST) {
		if (err)
			*err = e;
		return cx_err_wrap(err, "disk template");
	}
	return 0;
}

int sandbox_disk_make_from_template(const char *image_path, uint64_t size_mb, const char *template_dir,
				    const sandbox_disk_dir *dirs, size_t n_dirs, cx_err *err)
{
	if (!image_path || !template_dir || image_path[0] != '/' || template_dir[0] != '/')
		return cx_err_set(err, EINVAL, "disk: image and template dir must be absolute paths");
	if (size_mb < 8 || size_mb > DISK_MAX_MB)
		return cx_err_set(err, EINVAL, "disk: size %" PRIu64 " MB not in 8..%llu", size_mb, DISK_MAX_MB);
	if (n_dirs > 64 || (n_dirs && !dirs))
		return cx_err_set(err, EINVAL, "disk: %zu template dirs", n_dirs);
	for (size_t i = 0; i < n_dirs; i++) {
		const char *nm = dirs[i].name;
		if (!nm || !nm[0] || strchr(nm, '/') || !strcmp(nm, ".") || !strcmp(nm, "..") || strlen(nm) > 64 ||
		    !strcmp(nm, "lost+found") || (dirs[i].mode & ~07777u))
			return cx_err_set(err, EINVAL, "disk: template dir '%s'", nm ? nm : "");
	}
	if (access(image_path, F_OK) == 0)
		return cx_err_set(err, EEXIST, "disk: %s exists", image_path);
	char tpl[PATH_MAX], tmp[PATH_MAX];
	if (template_path(tpl, sizeof tpl, template_dir, size_mb, dirs, n_dirs, err) < 0)
		return -1;
	if (snprintf(tmp, sizeof tmp, "%s.new-%d", image_path, (int)getpid()) >= (int)sizeof tmp)
		return cx_err_set(err, ENAMETOOLONG, "%s", image_path);
	cleanup_close int in = open(tpl, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (in < 0 || fstat(in, &st) < 0)
		return cx_err_set(err, errno, "disk: open %s", tpl);
	if (!S_ISREG(st.st_mode) || st.st_size != (off_t)(size_mb << 20))
		return cx_err_set(err, EINVAL, "disk: %s is not a %" PRIu64 " MB image", tpl, size_mb);
	unlink(tmp); /* a leftover of an earlier process with our pid */
	cleanup_close int out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0)
		return cx_err_set(err, errno, "disk: create %s", tmp);
	/* Durable before it is renamed into place and mounted: the session's
	 * journal would otherwise sit on a file system whose metadata a host
	 * crash could take back (mke2fs syncs the same way). */
	int rc = copy_sparse(in, out, st.st_size, err);
	if (rc == 0 && fdatasync(out) < 0)
		rc = cx_err_set(err, errno, "sync");
	if (rc < 0) {
		unlink(tmp);
		return cx_err_wrap(err, "disk: copy %s", tpl);
	}
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, image_path, RENAME_NOREPLACE) < 0) {
		int e = errno;
		unlink(tmp);
		return cx_err_set(err, e, "disk: create %s", image_path);
	}
	return 0;
}

/* /dev/loop<n>, made when the container's /dev (a tmpfs) lacks the node. */
static int loop_node(char *path, size_t cap, int n, cx_err *err)
{
	snprintf(path, cap, "/dev/loop%d", n);
	if (mknod(path, S_IFBLK | 0660, makedev(LOOP_MAJOR_NR, (unsigned)n)) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mknod %s", path);
	return 0;
}

/* Attaches image_fd to a free loop device (autoclear); *out_fd keeps it
 * until the mount holds it. */
static int loop_attach(int image_fd, bool ro, char *dev, size_t cap, int *out_fd, cx_err *err)
{
	cleanup_close int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		return cx_err_set(err, errno,
				  "open /dev/loop-control (no loop device support here?)");
	for (int attempt = 0; attempt < LOOP_CONFIG_RETRIES; attempt++) {
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0)
			return cx_err_set(err, errno, "LOOP_CTL_GET_FREE");
		if (loop_node(dev, cap, n, err) < 0)
			return -1;
		int fd = open(dev, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
		if (fd < 0)
			return cx_err_set(err, errno, "open %s", dev);
		struct loop_config lc;
		memset(&lc, 0, sizeof lc);
		lc.fd = (uint32_t)image_fd;
		lc.info.lo_flags = LO_FLAGS_AUTOCLEAR | (ro ? LO_FLAGS_READ_ONLY : 0);
		if (ioctl(fd, LOOP_CONFIGURE, &lc) == 0) {
			*out_fd = fd;
			return 0;
		}
		int e = errno;
		close(fd);
		if (e != EBUSY) /* EBUSY: another attacher took it between the two calls */
			return cx_err_set(err, e, "LOOP_CONFIGURE %s", dev);
	}
	return cx_err_set(err, EBUSY, "no free loop device after %d tries", LOOP_CONFIG_RETRIES);
}

/* The loop device already backed by the image (st), into dev; 1 found, 0 not. */
static int loop_find(const struct stat *st, char *dev, size_t cap)
{
	DIR *d = opendir("/sys/block");
	if (!d)
		return 0;
	int found = 0;
	for (struct dirent *de; !found && (de = readdir(d));) {
		if (strncmp(de->d_name, "loop", 4) != 0)
			continue;
		snprintf(dev, cap, "/dev/%s", de->d_name);
		cleanup_close int fd = open(dev, O_RDONLY | O_CLOEXEC);
		struct loop_info64 li;
		if (fd >= 0 && ioctl(fd, LOOP_GET_STATUS64, &li) == 0 &&
		    li.lo_inode == st->st_ino && li.lo_device == st->st_dev)
			found = 1;
	}
	closedir(d);
	return found;
}

/* 1 if mountpoint is the root of a mount of the image's loop device, 0 if it
 * is no mountpoint at all; EBUSY when something else is mounted there. */
static int mounted_here(const char *mountpoint, const struct stat *img, cx_err *err)
{
	struct stat mp, parent;
	char up[PATH_MAX];
	if (snprintf(up, sizeof up, "%s/..", mountpoint) >= (int)sizeof up)
		return cx_err_set(err, ENAMETOOLONG, "%s", mountpoint);
	if (stat(mountpoint, &mp) < 0)
		return errno == ENOENT ? 0 : cx_err_set(err, errno, "stat %s", mountpoint);
	if (stat(up, &parent) < 0)
		return cx_err_set(err, errno, "stat %s", up);
	if (mp.st_dev == parent.st_dev && mp.st_ino != parent.st_ino)
		return 0;
	char dev[64];
	snprintf(dev, sizeof dev, "/dev/loop%u", minor(mp.st_dev));
	cleanup_close int fd =
	    major(mp.st_dev) == LOOP_MAJOR_NR ? open(dev, O_RDONLY | O_CLOEXEC) : -1;
	struct loop_info64 li;
	if (fd >= 0 && ioctl(fd, LOOP_GET_STATUS64, &li) == 0 && li.lo_inode == img->st_ino &&
	    li.lo_device == img->st_dev)
		return 1;
	return cx_err_set(err, EBUSY, "%s: another file system is mounted there", mountpoint);
}

/* fresh: the caller made the image just now, holding a lock every attacher
 * of it takes, so no loop device can back it: the scan is skipped. */
static int attach(const char *image, const char *mountpoint, bool ro, bool fresh, cx_err *err)
{
	if (access("/dev/loop-control", F_OK) < 0)
		return cx_err_set(err, errno, "/dev/loop-control: this host has no loop devices");
	cleanup_close int ifd = open(image, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (ifd < 0)
		return cx_err_set(err, errno, "open %s", image);
	struct stat st;
	if (fstat(ifd, &st) < 0)
		return cx_err_set(err, errno, "stat %s", image);
	if (!S_ISREG(st.st_mode))
		return cx_err_set(err, EINVAL, "%s: not a regular file", image);
	/* One attacher of an image at a time (threads or processes): two that
	 * both found no loop device would give the file two ext4 instances.
	 * On an open file of its own: the loop device keeps ifd's open file
	 * (and so any lock on it) for as long as it is attached. */
	cleanup_close int lock = open(image, O_RDONLY | O_CLOEXEC);
	if (lock < 0 || flock(lock, LOCK_EX) < 0)
		return cx_err_set(err, errno, "lock %s", image);
	int here = mounted_here(mountpoint, &st, err);
	if (here != 0)
		return here < 0 ? -1 : 0;
	if (mkdir(mountpoint, 0700) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", mountpoint);

	char dev[64];
	cleanup_close int lfd = -1;
	if ((fresh || !loop_find(&st, dev, sizeof dev)) &&
	    loop_attach(ifd, ro, dev, sizeof dev, &lfd, err) < 0)
		return cx_err_wrap(err, "attach %s", image);
	unsigned long flags = MS_NOSUID | MS_NODEV | (ro ? MS_RDONLY : 0);
	if (mount(dev, mountpoint, "ext4", flags, ro ? NULL : "noinit_itable") < 0)
		return cx_err_set(err, errno, "mount %s (%s) on %s", image, dev, mountpoint);
	return 0; /* lfd closes: the mount holds the device, autoclear frees it after */
}

int sandbox_disk_attach(const char *image_path, uint64_t size_mb, const char *mountpoint,
			cx_err *err)
{
	if (!image_path || !mountpoint || image_path[0] != '/' || mountpoint[0] != '/')
		return cx_err_set(err, EINVAL, "disk: image and mountpoint must be absolute paths");
	if (access(image_path, F_OK) < 0) {
		if (errno != ENOENT)
			return cx_err_set(err, errno, "disk: %s", image_path);
		if (size_mb < 8 || size_mb > DISK_MAX_MB)
			return cx_err_set(err, EINVAL, "disk: size %" PRIu64 " MB not in 8..%llu",
					  size_mb, DISK_MAX_MB);
		/* EEXIST: a concurrent attach made it first; attach that one. */
		cx_err e = CX_ERR_INIT;
		if (make_image(image_path, size_mb, NULL, &e) < 0 && e.code != EEXIST) {
			if (err)
				*err = e;
			return cx_err_wrap(err, "disk");
		}
	}
	if (attach(image_path, mountpoint, false, false, err) < 0)
		return cx_err_wrap(err, "disk");
	return 0;
}

int sandbox_disk_attach_new(const char *image_path, const char *mountpoint, cx_err *err)
{
	if (!image_path || !mountpoint || image_path[0] != '/' || mountpoint[0] != '/')
		return cx_err_set(err, EINVAL, "disk: image and mountpoint must be absolute paths");
	if (attach(image_path, mountpoint, false, true, err) < 0)
		return cx_err_wrap(err, "disk");
	return 0;
}

int sandbox_disk_attach_ro(const char *image_path, const char *mountpoint, cx_err *err)
{
	if (!image_path || !mountpoint || image_path[0] != '/' || mountpoint[0] != '/')
		return cx_err_set(err, EINVAL, "disk: image and mountpoint must be absolute paths");
	if (attach(image_path, mountpoint, true, false, err) < 0)
		return cx_err_wrap(err, "disk (read-only)");
	return 0;
}

/* Size for `mke2fs -d src`: what the tree holds (blocks, not lengths), plus
 * room for metadata, rounded up to a MB. */
static int tree_bytes(int dirfd, uint64_t *total, unsigned depth, cx_err *err)
{
	if (depth > 256)
		return cx_err_set(err, ELOOP, "tree deeper than 256 levels");
	DIR *d = fdopendir(dirfd);
	if (!d) {
		close(dirfd);
		return cx_err_set(err, errno, "fdopendir");
	}
	int r = 0;
	for (struct dirent *de; r == 0 && (de = readdir(d));) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		struct stat st;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = cx_err_set(err, errno, "stat %s", de->d_name);
			break;
		}
		*total += (uint64_t)st.st_blocks * 512 + 4096; /* + an inode's worth */
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, de->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0)
				r = cx_err_set(err, errno, "open %s", de->d_name);
			else
				r = tree_bytes(sub, total, depth + 1, err);
		}
	}
	closedir(d);
	return r;
}

int sandbox_disk_make_from_dir(const char *image_path, const char *src_dir, cx_err *err)
{
	if (!image_path || !src_dir || image_path[0] != '/' || src_dir[0] != '/')
		return cx_err_set(err, EINVAL, "disk: image and source must be absolute paths");
	if (access(image_path, F_OK) == 0)
		return cx_err_set(err, EEXIST, "disk: %s exists", image_path);
	int dfd = open(src_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return cx_err_set(err, errno, "disk: open %s", src_dir);
	uint64_t bytes = 0;
	if (tree_bytes(dfd, &bytes, 0, err) < 0)
		return cx_err_wrap(err, "disk: measure %s", src_dir);
	uint64_t mb = (bytes + bytes / 4 + (16ULL << 20) + (1ULL << 20) - 1) >> 20;
	if (make_image(image_path, mb, src_dir, err) < 0)
		return cx_err_wrap(err, "disk: from %s", src_dir);
	return 0;
}

int sandbox_disk_detach(const char *mountpoint, cx_err *err)
{
	if (!mountpoint || mountpoint[0] != '/')
		return cx_err_set(err, EINVAL, "disk: mountpoint must be an absolute path");
	if (umount2(mountpoint, MNT_DETACH | UMOUNT_NOFOLLOW) < 0) {
		if (errno == EINVAL || errno == ENOENT) /* not a mountpoint, or no dir */
			return 0;
		return cx_err_set(err, errno, "disk: umount %s", mountpoint);
	}
	return 0;
}
