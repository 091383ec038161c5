/* writefile.c — sandbox_write_file and sandbox_remove_file: cortexd (root)
 * writes or removes a file in a running sandbox without being tricked by
 * links the sandbox planted.
 *
 * Both walk to the file's directory the same way (open_parent): start at
 * /proc/<init>/root, i.e. the sandbox's own root, and go one component at a
 * time with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS): any symlink on the way is an error (ELOOP), ".." is
 * refused up front, and nothing can resolve outside the sandbox root.
 * Writing creates missing parent directories (mode 0755, owned by the sandbox
 * uid/gid, as if the agent had made them); removing does not (a missing
 * parent means there is nothing to remove).  The data goes into a temp file
 * made with O_EXCL|O_NOFOLLOW in the final directory, then renamed over the
 * target, so readers see the old or the new file, never a partial one, and a
 * planted hard link or symlink at the target is replaced, not written through.
 * Removing is unlinkat() in that directory, which never follows the last
 * component either.
 *
 * Where the sandbox cannot write (/etc, /usr, the root tmpfs) the kernel says
 * EROFS: those mounts are read-only for cortexd here too.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/pidfd.h>

#include "sandbox-internal.h"

static int open_beneath(int dirfd, const char *name, uint64_t flags)
{
	struct open_how how = {
		.flags = flags | O_CLOEXEC,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	return (int)syscall(SYS_openat2, dirfd, name, &how, sizeof how);
}

/* Opens the directory `name` inside `dirfd`; when it is missing, creates it
 * if `create`, else returns CX_NOTFOUND (err untouched). */
static int open_dir(const sandbox *sb, int dirfd, const char *name, bool create,
		    const char *shown, cx_err *err)
{
	int fd = open_beneath(dirfd, name, O_RDONLY | O_DIRECTORY);
	if (fd < 0 && errno == ENOENT && !create)
		return CX_NOTFOUND;
	if (fd < 0 && errno == ENOENT) {
		if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST)
			return cx_err_set(err, errno, "mkdir %s", shown);
		fd = open_beneath(dirfd, name, O_RDONLY | O_DIRECTORY);
		/* Chown through the fd: the name could already be swapped. */
		if (fd >= 0 && fchown(fd, sb->uid, sb->gid) < 0) {
			int e = errno;
			close(fd);
			return cx_err_set(err, e, "chown %s", shown);
		}
	}
	if (fd < 0 && errno == ELOOP)
		return cx_err_set(err, ELOOP, "%s is a symlink; not following it", shown);
	if (fd < 0)
		return cx_err_set(err, errno, "open %s", shown);
	return fd;
}

/* A file path: valid, and naming something below / (not / itself). */
static bool path_ok(const char *path)
{
	return sb_path_ok(path, PATH_MAX) && strrchr(path, '/')[1] != '\0';
}

static int write_in(const sandbox *sb, int dirfd, const char *base, const char *path,
		    const void *data, size_t len, unsigned mode, cx_err *err)
{
	char tmp[NAME_MAX + 1], hex[17];
	cx_random_hex(hex, 8);
	snprintf(tmp, sizeof tmp, ".%.200s.cortex-%s", base, hex);
	cleanup_close int fd = open_beneath(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW);
	if (fd < 0)
		return cx_err_set(err, errno, "create temp file for %s", path);
	int r = 0;
	if (cx_write_all(fd, data, len, err) < 0)
		r = cx_err_wrap(err, "write %s", path);
	else if (fchown(fd, sb->uid, sb->gid) < 0)
		r = cx_err_set(err, errno, "chown %s", path);
	else if (fchmod(fd, (mode_t)(mode & 0777)) < 0) /* never setuid/setgid/sticky */
		r = cx_err_set(err, errno, "chmod %s", path);
	else if (fsync(fd) < 0)
		r = cx_err_set(err, errno, "fsync %s", path);
	else if (renameat(dirfd, tmp, dirfd, base) < 0)
		r = cx_err_set(err, errno, "rename to %s", path);
	if (r < 0)
		(void)unlinkat(dirfd, tmp, 0);
	return r;
}

/* The walk shared by write and remove: opens the directory holding the last
 * component of `path` (valid per path_ok) and points *out_base at that
 * component.  Missing directories are made when `create`, else the result
 * is CX_NOTFOUND.  Errors name the sandbox and `what` ("write /x/y"). */
static int open_parent(const sandbox *sb, const char *path, bool create, const char *what,
		       const char **out_base, cx_err *err)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	*slash = '\0';
	*out_base = path + (slash - dir) + 1;

	/* root_fd: opened once at create; see sandbox-internal.h */
	cleanup_close int cur = open_beneath(sb->root_fd, "/", O_RDONLY | O_DIRECTORY);
	if (cur < 0)
		return cx_err_set(err, errno, "sandbox %s: %s: open /", sb->id, what);
	for (char *save = NULL, *comp = strtok_r(dir, "/", &save); comp;
	     comp = strtok_r(NULL, "/", &save)) {
		char shown[PATH_MAX];
		snprintf(shown, sizeof shown, "%.*s", (int)(comp - dir + strlen(comp)), path);
		int next = open_dir(sb, cur, comp, create, shown, err);
		if (next == CX_NOTFOUND)
			return CX_NOTFOUND;
		if (next < 0)
			return cx_err_wrap(err, "sandbox %s: %s", sb->id, what);
		close(cur);
		cur = next;
	}
	return steal_fd(&cur);
}

/* A running sandbox and a clean absolute path; what = "<verb> <path>" for errors. */
static int target_check(sandbox *sb, const char *path, const char *verb, char *what, size_t cap, cx_err *err)
{
	if (!sb || sb->root_fd < 0)
		return cx_err_set(err, ESRCH, "sandbox: not running");
	if (!path_ok(path))
		return cx_err_set(err, EINVAL, "sandbox %s: %s %s: path must be absolute, "
				  "without . or .., naming a file", sb->id, verb, path ? path : "(null)");
	snprintf(what, cap, "%s %s", verb, path);
	return 0;
}

int sandbox_write_file(sandbox *sb, const char *path, const void *data, size_t len,
		       unsigned mode, cx_err *err)
{
	char what[PATH_MAX + 16];
	if (target_check(sb, path, "write", what, sizeof what, err) < 0)
		return -1;
	const char *base;
	cleanup_close int dirfd = open_parent(sb, path, true, what, &base, err);
	if (dirfd < 0)
		return -1; /* never CX_NOTFOUND: missing dirs are created */
	if (write_in(sb, dirfd, base, path, data, len, mode, err) < 0)
		return cx_err_wrap(err, "sandbox %s", sb->id);
	return 0;
}

int sandbox_remove_file(sandbox *sb, const char *path, cx_err *err)
{
	char what[PATH_MAX + 16];
	if (target_check(sb, path, "remove", what, sizeof what, err) < 0)
		return -1;
	const char *base;
	cleanup_close int dirfd = open_parent(sb, path, false, what, &base, err);
	if (dirfd == CX_NOTFOUND)
		return 0; /* no parent dir, no file */
	if (dirfd < 0)
		return -1;
	if (unlinkat(dirfd, base, 0) < 0 && errno != ENOENT)
		return cx_err_set(err, errno, "sandbox %s: remove %s", sb->id, path);
	return 0;
}
