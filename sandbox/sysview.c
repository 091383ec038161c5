/* sysview.c — the little of /sys a sandbox sees: its own limits.
 *
 * Runtimes size themselves from /sys: Bun (Claude Code), libuv (Node), the
 * JVM and Go read the memory and CPU limits of their cgroup (the path from
 * /proc/self/cgroup under /sys/fs/cgroup), the online CPUs, and whether
 * transparent huge pages are on.  With no /sys at all, a sandboxed runtime
 * believes it has the host's memory: its heap grows toward that instead of
 * the sandbox's limit (the OOM killer ends it where it should have collected),
 * and it behaves unlike the same program outside (benchmarks.md, "What the
 * agent sees of /sys").
 *
 * So /sys is a small read-only tmpfs holding:
 *  - the sandbox's own cgroup dirs, read-only, at the very paths
 *    /proc/self/cgroup names (v1: /sys/fs/cgroup/<controllers>/<path> for
 *    the memory, cpu and pids hierarchies; v2: /sys/fs/cgroup/<path>), so a
 *    runtime that joins the two finds its limits; no parent and no other
 *    cgroup is there (a hierarchy where the sandbox sits at the root is left
 *    out: that would be the host's figures);
 *  - a few host files that say how the machine is built (CPUs online,
 *    transparent huge pages), each bound read-only on its own.
 * Nothing else of the host's /sys (devices, classes, firmware, modules).
 *
 * Runs in init before pivot_root, as root, while the host's /proc and /sys
 * are still in view; the sources are kernel file systems, never a path the
 * sandbox controls, and every target is in the tmpfs made here.  Init is a
 * fork of a threaded daemon: no allocation, stack buffers only.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <linux/magic.h>

#include "sandbox-internal.h"

static const char *const host_files[] = {
    "/sys/devices/system/cpu/online",
    "/sys/devices/system/cpu/possible",
    "/sys/devices/system/cpu/present",
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/kernel/mm/transparent_hugepage/defrag",
    "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
};

/* v1 hierarchies whose limits a runtime reads. */
static const char *const v1_wanted[] = {"memory", "cpu", "pids"};

#define SYS_TMPFS "mode=0755,size=64k,nr_inodes=512"
#define RO_FLAGS  (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)

/* mkdir -p of root + rel (rel absolute, checked); with file, the last
 * component is an empty file instead (a bind target). */
static int make_path(const char *root, const char *rel, bool file, cx_err *err)
{
	char p[PATH_MAX];
	int n = snprintf(p, sizeof p, "%s%s", root, rel);
	if (n < 0 || (size_t)n >= sizeof p)
		return cx_err_set(err, ENAMETOOLONG, "/sys: %s", rel);
	size_t rl = strlen(root);
	for (char *s = p + rl + 1;; s++) {
		char *slash = strchr(s, '/');
		if (slash)
			*slash = '\0';
		if (!slash && file) {
			int fd = open(p, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0444);
			if (fd < 0)
				return cx_err_set(err, errno, "create %s", rel);
			close(fd);
			return 0;
		}
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			return cx_err_set(err, errno, "mkdir %s", p + rl);
		if (!slash)
			return 0;
		*slash = '/';
		s = slash;
	}
}

/* Bind host src read-only on root + rel (made here). */
static int bind_ro(const char *root, const char *src, const char *rel, bool file, cx_err *err)
{
	char dst[PATH_MAX];
	snprintf(dst, sizeof dst, "%s%s", root, rel);
	if (make_path(root, rel, file, err) < 0)
		return -1;
	if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
		return cx_err_set(err, errno, "bind %s", rel);
	if (mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | RO_FLAGS, NULL) < 0)
		return cx_err_set(err, errno, "make %s read-only", rel);
	return 0;
}

static bool wanted_v1(const char *ctrls)
{
	for (const char *c = ctrls; *c;) {
		size_t n = strcspn(c, ",");
		for (size_t i = 0; i < sizeof v1_wanted / sizeof v1_wanted[0]; i++)
			if (strlen(v1_wanted[i]) == n && strncmp(c, v1_wanted[i], n) == 0)
				return true;
		c += n + (c[n] == ',');
	}
	return false;
}

/* One line of /proc/self/cgroup ("id:controllers:path", NUL-terminated). */
static int cgroup_line(const char *root, char *line, bool v2, cx_err *err)
{
	char *c1 = strchr(line, ':');
	char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	if (!c2)
		return 0;
	*c2 = '\0';
	const char *ctrls = c1 + 1, *path = c2 + 1;
	/* At the root of a hierarchy: the host's own figures, not the sandbox's. */
	if (strcmp(path, "/") == 0 || !sb_path_ok(path, PATH_MAX / 2))
		return 0;
	char src[PATH_MAX], rel[PATH_MAX];
	if (v2) {
		if (ctrls[0])
			return 0; /* a v1 line on a v2 host: none */
		snprintf(rel, sizeof rel, "/sys/fs/cgroup%s", path);
	} else {
		if (!ctrls[0] || strchr(ctrls, '/') || strncmp(ctrls, "name=", 5) == 0 ||
		    !wanted_v1(ctrls))
			return 0;
		snprintf(rel, sizeof rel, "/sys/fs/cgroup/%s%s", ctrls, path);
	}
	snprintf(src, sizeof src, "%s", rel);
	struct stat st;
	if (stat(src, &st) < 0 || !S_ISDIR(st.st_mode))
		return 0; /* that hierarchy is mounted elsewhere: nothing to show */
	if (bind_ro(root, src, rel, false, err) < 0)
		return -1;
	/* Co-mounted v1 controllers ("cpu,cpuacct"): the usual links by name. */
	if (!v2 && strchr(ctrls, ',')) {
		for (const char *c = ctrls; *c;) {
			size_t n = strcspn(c, ",");
			char name[64], link[PATH_MAX];
			if (n < sizeof name) {
				memcpy(name, c, n);
				name[n] = '\0';
				snprintf(link, sizeof link, "%s/sys/fs/cgroup/%s", root, name);
				if (symlink(ctrls, link) < 0 && errno != EEXIST)
					return cx_err_set(err, errno, "link /sys/fs/cgroup/%s",
							  name);
			}
			c += n + (c[n] == ',');
		}
	}
	return 0;
}

int sbx_sysview_setup(const char *root, cx_err *err)
{
	char sys[PATH_MAX];
	snprintf(sys, sizeof sys, "%s/sys", root);
	if (mkdir(sys, 0555) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir /sys");
	if (mount("tmpfs", sys, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, SYS_TMPFS) < 0)
		return cx_err_set(err, errno, "mount tmpfs on /sys");

	for (size_t i = 0; i < sizeof host_files / sizeof host_files[0]; i++) {
		if (access(host_files[i], R_OK) < 0)
			continue; /* not on this kernel */
		if (bind_ro(root, host_files[i], host_files[i], true, err) < 0)
			return -1;
	}

	struct statfs sf;
	bool v2 = statfs(SBX_CGROUP_ROOT, &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC;
	char buf[4096];
	if (sbx_read_proc("/proc/self/cgroup", buf, sizeof buf, err) < 0)
		return -1;
	for (char *line = buf; *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		if (cgroup_line(root, line, v2, err) < 0)
			return -1;
		if (!nl)
			break;
		line = nl + 1;
	}

	/* The tmpfs itself (dirs, mountpoints) read-only too. */
	if (mount(NULL, sys, NULL, MS_REMOUNT | RO_FLAGS, SYS_TMPFS) < 0)
		return cx_err_set(err, errno, "make /sys read-only");
	return 0;
}
