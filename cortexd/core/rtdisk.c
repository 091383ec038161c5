/* rtdisk.c — the runtime disks (jobs.h): what cortexd, not the image, puts
 * into every sandbox, read-only — ws-agent with its loader and libraries at
 * /cortex/rt, the agent package at /cortex/agent when the image has none.
 * Each is an ext4 image made once per content (mke2fs -d) under
 * images.dir/runtime and loop-mounted under DATA/runtime, so a sandbox's
 * mountinfo shows "/" of that disk, never a host path. */
#include "jobs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* A content key of a tree: names, sizes, mtimes and modes (not contents:
 * enough to tell a rebuilt binary or an upgraded package). */
static crypto_hash_sha256_state tree_h;
static int tree_walk(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)type;
	(void)ftw;
	char rec[64];
	crypto_hash_sha256_update(&tree_h, (const unsigned char *)path, strlen(path) + 1);
	int n = snprintf(rec, sizeof rec, "%lld:%lld:%o", (long long)st->st_size, (long long)st->st_mtime,
			 (unsigned)st->st_mode);
	crypto_hash_sha256_update(&tree_h, (const unsigned char *)rec, (size_t)n);
	return 0;
}

static pthread_mutex_t rt_mu = PTHREAD_MUTEX_INITIALIZER;

int jobs_runtime_mount(const config *c, const char *what, char *out, size_t cap, cx_err *err)
{
	char trust[4300];
	snprintf(trust, sizeof trust, "%s/" JOBS_TRUST_DIR, c->data_dir);
	const char *src = !strcmp(what, "rt") ? c->ws_agent_rt : !strcmp(what, "trust") ? trust : c->agent_dir;
	if (!src[0])
		return cx_err_set(err, ENOENT, "no %s dir configured", what);
	pthread_mutex_lock(&rt_mu);
	unsigned char h[crypto_hash_sha256_BYTES];
	char hex[2 * sizeof h + 1];
	crypto_hash_sha256_init(&tree_h);
	int rc = nftw(src, tree_walk, 16, FTW_PHYS);
	crypto_hash_sha256_final(&tree_h, h);
	sodium_bin2hex(hex, sizeof hex, h, sizeof h);
	char img[4300], dir[4300];
	if (rc != 0) {
		rc = cx_err_set(err, errno ? errno : EIO, "read %s", src);
		goto out;
	}
	/* The images are shared by every daemon of the machine that uses the
	 * same images dir; the mount is this data dir's. */
	snprintf(dir, sizeof dir, "%s/runtime", c->images_dir);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		rc = cx_err_set(err, errno, "mkdir %s", dir);
		goto out;
	}
	snprintf(img, sizeof img, "%s/%s-%.16s.img", dir, what, hex);
	if (access(img, F_OK) < 0 && sandbox_disk_make_from_dir(img, src, err) < 0 && err->code != EEXIST) {
		rc = cx_err_wrap(err, "runtime disk %s", what);
		goto out;
	}
	snprintf(dir, sizeof dir, "%s/runtime", c->data_dir);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		rc = cx_err_set(err, errno, "mkdir %s", dir);
		goto out;
	}
	if ((size_t)snprintf(out, cap, "%s/%s-%.16s", dir, what, hex) >= cap) {
		rc = cx_err_set(err, ENAMETOOLONG, "runtime dir");
		goto out;
	}
	rc = sandbox_disk_attach_ro(img, out, err);
out:
	pthread_mutex_unlock(&rt_mu);
	return rc;
}

void jobs_runtime_unmount_all(const config *c)
{
	char dir[4300];
	snprintf(dir, sizeof dir, "%s/runtime", c->data_dir);
	cleanup_close int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d)
		return;
	fd = -1; /* the DIR owns it */
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		char p[4600];
		cx_err err = CX_ERR_INIT;
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		if (sandbox_disk_detach(p, &err) < 0)
			log_warn("runtime disk %s: %s", p, err.msg);
		else
			(void)rmdir(p);
	}
	closedir(d);
}

