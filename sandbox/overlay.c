/* overlay.c — the root of an image-mode sandbox: an overlay of the image's
 * layers (and the session's upper), made in the library before the fork.
 *
 * The mount is built with the new mount API (fsopen/fsconfig/fsmount) into a
 * detached mount fd; init moves it onto root_mount inside the sandbox's own
 * mount namespace (mounts.c).  Each layer is opened O_PATH first and handed to
 * overlayfs as "/proc/self/fd/N" (one "lowerdir+" per layer, kernel 6.8+):
 * overlayfs shows the names it was given in mountinfo, so the sandbox reads
 * "lowerdir+=/proc/self/fd/7" — fd numbers of a process it cannot see — never
 * a host path.  (FSCONFIG_SET_FD would show d_path(), i.e. the host path.)
 * The layer fds are closed once the superblock exists; the mount fd is the
 * only thing that crosses the fork.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>

#include "sandbox-internal.h"

static int fsconfig_str(int fs, const char *key, const char *val, cx_err *err)
{
	if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, key, val, 0) < 0)
		return cx_err_set(err, errno, "overlay: %s", key);
	return 0;
}

/* Opens dir (O_PATH) and gives it to the fs context as key=/proc/self/fd/N. */
static int add_dir(int fs, const char *key, const char *dir, const char *what, cx_err *err)
{
	if (!dir || dir[0] != '/')
		return cx_err_set(err, EINVAL, "overlay: %s must be an absolute path", what);
	cleanup_close int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, "overlay: open %s %s", what, dir);
	char name[32];
	snprintf(name, sizeof name, "/proc/self/fd/%d", fd);
	if (fsconfig_str(fs, key, name, err) < 0)
		return cx_err_wrap(err, "%s %s", what, dir);
	return 0;
}

int sbx_overlay_check(const sandbox_opts *o, cx_err *err)
{
	size_t n = 0;
	while (o->lower_dirs[n])
		if (++n > SANDBOX_MAX_LAYERS)
			return cx_err_set(err, E2BIG, "sandbox: more than %d image layers",
					  SANDBOX_MAX_LAYERS);
	if (n == 0)
		return cx_err_set(err, EINVAL, "sandbox: lower_dirs is empty");
	if (!o->upper_dir != !o->work_dir)
		return cx_err_set(err, EINVAL, "sandbox: upper_dir and work_dir go together");
	return 0;
}

int sbx_overlay_open(const sandbox_opts *o, int *out_fd, cx_err *err)
{
	*out_fd = -1;
	cleanup_close int fs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
	if (fs < 0)
		return cx_err_set(err, errno, "overlay: fsopen");
	if (fsconfig_str(fs, "source", "overlay", err) < 0)
		return -1;
	/* fsconfig("lowerdir+"/"upperdir"/"workdir") resolves the name at once
	 * and the context keeps the path, so each fd closes right after (and
	 * mountinfo shows the same N for every layer). */
	char what[32];
	for (size_t i = 0; o->lower_dirs[i]; i++) {
		snprintf(what, sizeof what, "layer %zu", i);
		if (add_dir(fs, "lowerdir+", o->lower_dirs[i], what, err) < 0)
			return -1;
	}
	if (o->upper_dir && (add_dir(fs, "upperdir", o->upper_dir, "upper_dir", err) < 0 ||
			     add_dir(fs, "workdir", o->work_dir, "work_dir", err) < 0))
		return -1;
	if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return cx_err_set(err, errno,
				  "overlay: create (upper and work on one file system, "
				  "not in use by another sandbox?)");
	int m =
	    (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
	if (m < 0)
		return cx_err_set(err, errno, "overlay: fsmount");
	*out_fd = m;
	return 0;
}
