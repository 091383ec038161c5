/* pty.c — a pseudo-terminal of the sandbox's own devpts instance
 * (sandbox_openpty in sandbox.h).
 *
 * The master is opened through init's root (sb->root_fd) at dev/pts/ptmx
 * with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS):
 * /dev is a root-owned tmpfs the sandbox cannot change, and no link is
 * followed anyway.  The slave comes from the master itself (TIOCGPTPEER), so
 * no path is looked up for it; it belongs to the sandbox's devpts, so the
 * program inside sees /dev/pts/N.  It is given to the sandbox uid, as login
 * does for a user's terminal.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include "sandbox-internal.h"

int sandbox_openpty(sandbox *sb, int *out_master, int *out_slave, cx_err *err)
{
	*out_master = *out_slave = -1;
	if (!sb || sb->root_fd < 0)
		return cx_err_set(err, ESRCH, "sandbox: not running");
	struct open_how how = {
		.flags = O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	cleanup_close int m = (int)syscall(SYS_openat2, sb->root_fd, "dev/pts/ptmx", &how, sizeof how);
	if (m < 0)
		return cx_err_set(err, errno, "sandbox %s: open /dev/pts/ptmx inside", sb->id);
	int unlock = 0;
	if (ioctl(m, TIOCSPTLCK, &unlock) < 0)
		return cx_err_set(err, errno, "sandbox %s: unlock the pty", sb->id);
	cleanup_close int sl = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (sl < 0)
		return cx_err_set(err, errno, "sandbox %s: open the pty's slave", sb->id);
	if (fchown(sl, sb->uid, sb->gid) < 0 || fchmod(sl, 0620) < 0)
		return cx_err_set(err, errno, "sandbox %s: give the pty to uid %u", sb->id, (unsigned)sb->uid);
	*out_master = steal_fd(&m);
	*out_slave = steal_fd(&sl);
	return 0;
}
