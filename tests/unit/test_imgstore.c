/* test_imgstore.c — the image store (container/imgstore.c) on images built
 * here with libarchive's writer: an OCI layout (tar and dir) of two layers,
 * docker-archives, layers that try to escape, digest mismatches, pins and LRU
 * eviction, and an overlay mount of imported layers.  Needs root (owners,
 * whiteout devices, trusted.* xattrs, mount); scratch under $CORTEX_TEST_TMP.
 * The image builders are in imgstore_fixture.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "imgstore.h"
#include "imgstore_fixture.h"
#include "unit_util.h"

static char g_base[PATH_MAX];

struct fx {
	char dir[PATH_MAX];   /* this test's scratch dir */
	char store[PATH_MAX]; /* the store */
	struct imgstore *st;
	cx_err err;
};

/* ---- fixture ---- */

static int group_setup(void **state)
{
	(void)state;
	if (sodium_init() < 0 || unit_tmpdir("imgstore", g_base, sizeof g_base) < 0)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	cx_rm_rf(g_base);
	return 0;
}

static int open_store(struct fx *f, uint64_t budget)
{
	if (f->st)
		imgstore_close(f->st);
	f->st = NULL;
	return imgstore_open(&f->st, f->store, budget, &f->err);
}

static int fx_setup(void **state)
{
	static int seq;
	struct fx *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "%s/t%d", g_base, ++seq);
	snprintf(f->store, sizeof f->store, "%s/store", f->dir);
	if (mkdir(f->dir, 0755) < 0 || open_store(f, 0) < 0)
		return -1;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	imgstore_close(f->st);
	cx_rm_rf(f->dir);
	free(f);
	return 0;
}

#define OK(call)                                                                                   \
	do {                                                                                       \
		if ((call) != 0)                                                                   \
			fail_msg("%s: %s", #call, f->err.msg);                                     \
	} while (0)

/* Entries of store/<sub> (tmp, layers, images), dot files included. */
static int count_in(struct fx *f, const char *sub)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s", f->store, sub);
	DIR *d = opendir(path);
	assert_non_null(d);
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

static void at(char *out, size_t cap, const char *dir, const char *rel)
{
	snprintf(out, cap, "%s/%s", dir, rel);
}

/* ---- import ---- */

static void progress_keep(void *arg, const char *line)
{
	char(*lines)[160] = arg;
	snprintf(lines[lines[0][0] ? 1 : 0], 160, "%s", line);
}

static void test_oci_tar_import(void **state)
{
	struct fx *f = *state;
	char tar[PATH_MAX], cfg[65], want[80], p[PATH_MAX], q[PATH_MAX], buf[64];
	make_oci_tar(f->dir, "img.tar", tar, sizeof tar, cfg);
	char lines[2][160] = {"", ""};
	OK(imgstore_import_tar(f->st, "base", tar, progress_keep, lines, &f->err));
	if (!strstr(lines[0], "layer 1/2 sha256:") || !strstr(lines[0], "2 skipped"))
		fail_msg("progress line 1: \"%s\"", lines[0]);
	if (!strstr(lines[1], "layer 2/2 sha256:") || strstr(lines[1], "skipped"))
		fail_msg("progress line 2: \"%s\"", lines[1]);

	struct image_info *i;
	OK(imgstore_get(f->st, "base", &i, &f->err));
	snprintf(want, sizeof want, "sha256:%s", cfg);
	assert_string_equal(i->digest, want);
	assert_int_eq_msg(i->n_layers, 2, "layers");
	assert_string_equal(i->env[0], "PATH=/usr/bin");
	assert_string_equal(i->env[1], "FOO=bar");
	assert_null(i->env[2]);
	assert_string_equal(i->workdir, "/work");
	assert_string_equal(i->user, "1000:1000");
	assert_true(i->size > 0);
	const char *l1 = i->layers[0], *l2 = i->layers[1];
	struct stat sb, sb2;

	at(p, sizeof p, l1, "etc/passwd");
	assert_int_equal(stat(p, &sb), 0);
	at(p, sizeof p, l1, "bin/su");
	assert_int_equal(stat(p, &sb), 0);
	assert_int_eq_msg(sb.st_mode & 07777, 0755, "setuid bit stripped");
	at(q, sizeof q, l1, "bin/su-link");
	assert_int_equal(stat(q, &sb2), 0);
	assert_int_eq_msg(sb2.st_ino, sb.st_ino, "hardlink shares the inode");
	at(p, sizeof p, l1, "bin/sg");
	assert_int_equal(stat(p, &sb), 0);
	assert_int_eq_msg(sb.st_mode & 07777, 0755, "setgid bit stripped");
	at(p, sizeof p, l1, "etc/link");
	assert_int_equal(lstat(p, &sb), 0);
	assert_true(S_ISLNK(sb.st_mode));
	ssize_t n = readlink(p, buf, sizeof buf);
	assert_int_equal(n, 6);
	assert_memory_equal(buf, "passwd", 6);
	at(p, sizeof p, l1, "dev/null");
	assert_int_eq_msg(lstat(p, &sb) < 0 && errno == ENOENT, 1, "device node skipped");
	at(p, sizeof p, l1, "dev/fifo");
	assert_int_eq_msg(lstat(p, &sb) < 0 && errno == ENOENT, 1, "fifo skipped");
	at(p, sizeof p, l1, "owned");
	assert_int_equal(lstat(p, &sb), 0);
	assert_int_eq_msg(sb.st_uid, 1234, "uid kept");
	assert_int_eq_msg(sb.st_gid, 5678, "gid kept");
	assert_int_eq_msg(sb.st_mtime, 1600000000, "mtime kept");

	at(p, sizeof p, l2, "etc/gone");
	assert_int_equal(lstat(p, &sb), 0);
	assert_true(S_ISCHR(sb.st_mode));
	assert_int_eq_msg(sb.st_rdev, makedev(0, 0), "whiteout is 0:0");
	at(p, sizeof p, l2, "etc/.wh.gone");
	assert_true(lstat(p, &sb) < 0);
	at(p, sizeof p, l2, "opq");
	n = getxattr(p, "trusted.overlay.opaque", buf, sizeof buf);
	assert_int_eq_msg(n, 1, "opaque xattr");
	assert_int_equal(buf[0], 'y');
	at(p, sizeof p, l2, "opq/.wh..wh..opq");
	assert_true(lstat(p, &sb) < 0);
	image_info_free(i);
	assert_int_eq_msg(count_in(f, "tmp"), 0, "tmp emptied");
}

static int overlay_child(const char *lower, const char *mnt)
{
	char opts[PATH_MAX * 2 + 32];
	struct stat sb;
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return 10;
	snprintf(opts, sizeof opts, "lowerdir=%s", lower);
	if (mount("overlay", mnt, "overlay", MS_RDONLY, opts) < 0)
		return 11;
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s/etc/gone", mnt);
	if (lstat(p, &sb) == 0 || errno != ENOENT)
		return 12; /* whited out */
	snprintf(p, sizeof p, "%s/etc/passwd", mnt);
	if (lstat(p, &sb) < 0)
		return 13;
	snprintf(p, sizeof p, "%s/opq/lower-only", mnt);
	if (lstat(p, &sb) == 0 || errno != ENOENT)
		return 14; /* opaque dir hides the lower */
	snprintf(p, sizeof p, "%s/opq/upper", mnt);
	if (lstat(p, &sb) < 0)
		return 15;
	snprintf(p, sizeof p, "%s/new", mnt);
	if (lstat(p, &sb) < 0)
		return 16;
	snprintf(p, sizeof p, "%s/bin/su", mnt);
	if (lstat(p, &sb) < 0 || (sb.st_mode & 06000))
		return 17;
	return 0;
}

static void test_overlay_mount(void **state)
{
	struct fx *f = *state;
	char tar[PATH_MAX], cfg[65], mnt[PATH_MAX], lower[PATH_MAX * 2 + 2];
	make_oci_tar(f->dir, "img.tar", tar, sizeof tar, cfg);
	OK(imgstore_import_tar(f->st, "ov", tar, NULL, NULL, &f->err));
	struct image_info *i;
	OK(imgstore_get(f->st, "ov", &i, &f->err));
	snprintf(lower, sizeof lower, "%s:%s", i->layers[1], i->layers[0]); /* top first */
	at(mnt, sizeof mnt, f->dir, "mnt");
	assert_int_equal(mkdir(mnt, 0755), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(overlay_child(lower, mnt));
	int ws;
	assert_int_equal(waitpid(pid, &ws, 0), pid);
	assert_true(WIFEXITED(ws));
	assert_int_eq_msg(WEXITSTATUS(ws), 0, "overlay child (10+ = which check failed)");
	image_info_free(i);
}

static void test_oci_dir_import_nested_index(void **state)
{
	struct fx *f = *state;
	struct blob l[2];
	struct img im = {0};
	char cfg[65], dir[PATH_MAX];
	layer1(&l[0]);
	layer2(&l[1]);
	oci_image(&im, l, 2, cfg, false);
	/* move index.json's manifest under a nested index: arm64 first, amd64 second */
	json_t *idx = json_loadb((char *)im.data[im.n - 2], im.len[im.n - 2], 0, NULL);
	json_t *amd = json_deep_copy(json_array_get(json_object_get(idx, "manifests"), 0));
	json_t *arm = json_deep_copy(amd);
	json_object_set_new(
	    arm, "digest",
	    json_string("sha256:1111111111111111111111111111111111111111111111111111111111111111"));
	json_object_set_new(arm, "platform",
			    json_pack("{s:s,s:s}", "os", "linux", "architecture", "arm64"));
	json_object_set_new(amd, "platform",
			    json_pack("{s:s,s:s}", "os", "linux", "architecture", "amd64"));
	json_t *nested =
	    json_pack("{s:i, s:s, s:[o,o]}", "schemaVersion", 2, "mediaType",
		      "application/vnd.oci.image.index.v1+json", "manifests", arm, amd);
	char *ns = json_dumps(nested, JSON_COMPACT);
	char nhex[65];
	img_blob(&im, ns, strlen(ns), nhex);
	json_decref(idx);
	json_decref(nested);
	free(im.data[im.n - 3]); /* index.json */
	char *top = NULL;
	json_t *tj =
	    json_pack("{s:i, s:[o]}", "schemaVersion", 2, "manifests",
		      descriptor("application/vnd.oci.image.index.v1+json", nhex, strlen(ns)));
	top = json_dumps(tj, JSON_COMPACT);
	json_decref(tj);
	im.data[im.n - 3] = (unsigned char *)top;
	im.len[im.n - 3] = strlen(top);
	free(ns);
	at(dir, sizeof dir, f->dir, "layout");
	img_write_dir(&im, dir);
	img_free(&im);
	free(l[0].data);
	free(l[1].data);
	OK(imgstore_import_dir(f->st, "nested", dir, NULL, NULL, &f->err));
	struct image_info *i;
	OK(imgstore_get(f->st, "nested", &i, &f->err));
	assert_int_equal(i->n_layers, 2);
	image_info_free(i);
}

static void test_docker_archive(void **state)
{
	struct fx *f = *state;
	struct blob l[2];
	struct img im = {0};
	char tar[PATH_MAX], p[PATH_MAX], name[100], cfg_hex[65];
	struct stat sb;
	struct archive *a = layer_open(&l[0], false);
	DIR_("app");
	FILE_("app/run", "#!/bin/sh\n");
	layer_close(a, &l[0]);
	a = layer_open(&l[1], false);
	FILE_("app/.wh.run", "");
	FILE_("app/other", "o\n");
	layer_close(a, &l[1]);
	json_t *cj = config_json(l, 2);
	char *cfg = json_dumps(cj, JSON_COMPACT);
	json_decref(cj);
	struct blob cb = {.data = (unsigned char *)cfg, .len = strlen(cfg)};
	blob_hash(&cb);
	memcpy(cfg_hex, cb.hex, 65);
	snprintf(name, sizeof name, "%s.json", cfg_hex);
	img_add(&im, name, cfg, strlen(cfg));
	free(cfg);
	img_add(&im, "aaaa/layer.tar", l[0].data, l[0].len);
	img_add(&im, "bbbb/layer.tar", l[1].data, l[1].len);
	img_add_json(&im, "manifest.json",
		     json_pack("[{s:s, s:[s], s:[s,s]}]", "Config", name, "RepoTags", "x:latest",
			       "Layers", "aaaa/layer.tar", "bbbb/layer.tar"));
	at(tar, sizeof tar, f->dir, "docker.tar");
	img_write_tar(&im, tar);
	img_free(&im);
	OK(imgstore_import_tar(f->st, "dock", tar, NULL, NULL, &f->err));
	struct image_info *i;
	OK(imgstore_get(f->st, "dock", &i, &f->err));
	assert_int_equal(i->n_layers, 2);
	char want[80];
	snprintf(want, sizeof want, "sha256:%s", cfg_hex);
	assert_string_equal(i->digest, want);
	at(p, sizeof p, i->layers[0], "app/run");
	assert_int_equal(stat(p, &sb), 0);
	at(p, sizeof p, i->layers[1], "app/run");
	assert_int_equal(lstat(p, &sb), 0);
	assert_true(S_ISCHR(sb.st_mode));
	/* content address: the layer tar's own sha256 */
	assert_non_null(strstr(i->layers[0], l[0].hex));
	image_info_free(i);
	free(l[0].data);
	free(l[1].data);
}

/* ---- refusals ---- */

/* A good layer 1 and the bad layer 2 built by fn: the import fails with EPERM
 * naming `entry`, and nothing is stored. */
static void refuse(struct fx *f, void (*fn)(struct archive *), const char *entry)
{
	struct blob l[2];
	struct img im = {0};
	char cfg[65], tar[PATH_MAX];
	layer1(&l[0]);
	struct archive *a = layer_open(&l[1], true);
	FILE_("fine", "written before the bad entry\n");
	fn(a);
	layer_close(a, &l[1]);
	oci_image(&im, l, 2, cfg, false);
	at(tar, sizeof tar, f->dir, "bad.tar");
	img_write_tar(&im, tar);
	img_free(&im);
	free(l[0].data);
	free(l[1].data);
	cx_err_clear(&f->err);
	assert_int_equal(imgstore_import_tar(f->st, "bad", tar, NULL, NULL, &f->err), -1);
	assert_int_eq_msg(f->err.code, EPERM, f->err.msg);
	if (!strstr(f->err.msg, entry))
		fail_msg("error \"%s\" does not name \"%s\"", f->err.msg, entry);
	struct image_info *i = NULL;
	assert_int_equal(imgstore_get(f->st, "bad", &i, &f->err), -1);
	assert_int_equal(f->err.code, ENOENT);
	assert_int_eq_msg(count_in(f, "layers"), 0, "no layer stored");
	assert_int_eq_msg(count_in(f, "images"), 0, "no image json");
	assert_int_eq_msg(count_in(f, "tmp"), 0, "tmp emptied");
}

static void bad_dotdot(struct archive *a)
{
	FILE_("../escape", "x");
}
static void bad_dotdot_inner(struct archive *a)
{
	FILE_("a/../../escape", "x");
}
static void bad_abs(struct archive *a)
{
	FILE_("/abs", "x");
}
static void bad_below_link(struct archive *a)
{
	LINK_("link", "/tmp");
	FILE_("link/x", "x");
}
static void bad_hardlink_abs(struct archive *a)
{
	HARDLINK_("hl", "/etc/passwd");
}
static void bad_hardlink_out(struct archive *a)
{
	HARDLINK_("hl", "../outside");
}
static void bad_hardlink_missing(struct archive *a)
{
	HARDLINK_("hl", "etc/passwd");
}
static void bad_hardlink_via_link(struct archive *a)
{
	LINK_("ln", "/etc");
	HARDLINK_("hl", "ln/passwd");
}

static void bad_hardlink_to_symlink(struct archive *a)
{
	LINK_("sym", "/etc/passwd");
	HARDLINK_("hl", "sym");
}

/* "d" and "f" first symlinks to outside targets, then a dir and a file of the
 * same names: the entries replace the links, the targets stay untouched. */
static void test_entry_replaces_symlink(void **state)
{
	struct fx *f = *state;
	char outside[PATH_MAX], dir[PATH_MAX], file[PATH_MAX], p[PATH_MAX], cfg[65], tar[PATH_MAX];
	struct stat sb;
	at(outside, sizeof outside, f->dir, "outside");
	at(dir, sizeof dir, outside, "d");
	at(file, sizeof file, outside, "f");
	assert_int_equal(mkdir(outside, 0755), 0);
	assert_int_equal(mkdir(dir, 0755), 0);
	FILE *fp = fopen(file, "w");
	fputs("outside\n", fp);
	fclose(fp);
	assert_int_equal(chmod(file, 0644), 0);
	struct blob l;
	struct img im = {0};
	struct archive *a = layer_open(&l, false);
	LINK_("d", dir);
	LINK_("f", file);
	put(a, (struct ent){.path = "d", .type = AE_IFDIR, .perm = 0700, .uid = 4321});
	put(a, (struct ent){
		   .path = "f", .type = AE_IFREG, .perm = 0600, .data = "inside\n", .uid = 4321});
	layer_close(a, &l);
	oci_image(&im, &l, 1, cfg, false);
	at(tar, sizeof tar, f->dir, "replace.tar");
	img_write_tar(&im, tar);
	img_free(&im);
	free(l.data);
	OK(imgstore_import_tar(f->st, "replace", tar, NULL, NULL, &f->err));
	struct image_info *i;
	OK(imgstore_get(f->st, "replace", &i, &f->err));
	at(p, sizeof p, i->layers[0], "d");
	assert_int_equal(lstat(p, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	at(p, sizeof p, i->layers[0], "f");
	assert_int_equal(lstat(p, &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	image_info_free(i);
	assert_int_equal(stat(dir, &sb), 0);
	assert_int_eq_msg(sb.st_mode & 07777, 0755, "outside dir mode untouched");
	assert_int_eq_msg(sb.st_uid, 0, "outside dir owner untouched");
	assert_int_equal(stat(file, &sb), 0);
	assert_int_eq_msg(sb.st_mode & 07777, 0644, "outside file mode untouched");
	assert_int_eq_msg(sb.st_size, 8, "outside file content untouched");
}

static void test_refuse_dotdot(void **state)
{
	refuse(*state, bad_dotdot, "../escape");
	refuse(*state, bad_dotdot_inner, "a/../../escape");
}
static void test_refuse_absolute(void **state)
{
	refuse(*state, bad_abs, "/abs");
}
static void test_refuse_below_symlink(void **state)
{
	refuse(*state, bad_below_link, "link/x");
}
static void test_refuse_hardlink_outside(void **state)
{
	refuse(*state, bad_hardlink_abs, "/etc/passwd");
	refuse(*state, bad_hardlink_out, "../outside");
	/* etc/passwd is in layer 1, not in this layer */
	refuse(*state, bad_hardlink_missing, "etc/passwd");
	refuse(*state, bad_hardlink_via_link, "ln/passwd");
	refuse(*state, bad_hardlink_to_symlink, "sym");
}

static void test_digest_mismatch(void **state)
{
	struct fx *f = *state;
	struct blob l[2];
	struct img im = {0};
	char cfg[65], tar[PATH_MAX];
	layer1(&l[0]);
	layer2(&l[1]);
	oci_image(&im, l, 2, cfg, true);
	at(tar, sizeof tar, f->dir, "mismatch.tar");
	img_write_tar(&im, tar);
	img_free(&im);
	free(l[0].data);
	free(l[1].data);
	assert_int_equal(imgstore_import_tar(f->st, "mm", tar, NULL, NULL, &f->err), -1);
	assert_int_eq_msg(f->err.code, EINVAL, f->err.msg);
	assert_non_null(strstr(f->err.msg, "digest mismatch"));
	assert_int_eq_msg(count_in(f, "layers"), 0, "no layer stored");
	assert_int_eq_msg(count_in(f, "images"), 0, "no image json");
	assert_int_eq_msg(count_in(f, "tmp"), 0, "tmp emptied");
}

static void test_bad_names(void **state)
{
	struct fx *f = *state;
	const char *bad[] = {"",
			     "Upper",
			     "-dash",
			     ".dot",
			     "a/b",
			     "a b",
			     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
	struct image_info *i;
	for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
		assert_int_equal(
		    imgstore_import_tar(f->st, bad[k], "/nonexistent", NULL, NULL, &f->err), -1);
		assert_int_eq_msg(f->err.code, EINVAL, bad[k]);
		assert_int_equal(imgstore_get(f->st, bad[k], &i, &f->err), -1);
		assert_int_eq_msg(f->err.code, EINVAL, bad[k]);
	}
	/* 64 chars with . _ - is fine (the import fails later, on the missing file) */
	assert_int_equal(
	    imgstore_import_tar(f->st,
				"a.b_c-d012345678901234567890123456789012345678901234567890123456",
				"/nonexistent", NULL, NULL, &f->err),
	    -1);
	assert_int_eq_msg(f->err.code, ENOENT, f->err.msg);
}

/* ---- sharing, pins, gc ---- */

static void progress_count(void *arg, const char *line)
{
	(void)line;
	(*(int *)arg)++;
}

static void test_reimport_reuses_layers(void **state)
{
	struct fx *f = *state;
	char tar[PATH_MAX], cfg[65];
	struct stat s1[2], s2[2];
	make_oci_tar(f->dir, "img.tar", tar, sizeof tar, cfg);
	int lines = 0;
	OK(imgstore_import_tar(f->st, "one", tar, progress_count, &lines, &f->err));
	assert_int_equal(lines, 2);
	struct image_info *a, *b;
	OK(imgstore_get(f->st, "one", &a, &f->err));
	for (int k = 0; k < 2; k++)
		assert_int_equal(stat(a->layers[k], &s1[k]), 0);
	sleep(1); /* a rewritten dir would get a newer ctime */
	OK(imgstore_import_tar(f->st, "two", tar, NULL, NULL, &f->err));
	OK(imgstore_import_tar(f->st, "one", tar, NULL, NULL, &f->err)); /* replace: same layers */
	OK(imgstore_get(f->st, "two", &b, &f->err));
	for (int k = 0; k < 2; k++) {
		assert_string_equal(a->layers[k], b->layers[k]);
		assert_int_equal(stat(b->layers[k], &s2[k]), 0);
		assert_int_eq_msg(s2[k].st_ino, s1[k].st_ino, "layer dir inode");
		assert_int_eq_msg(s2[k].st_ctim.tv_sec, s1[k].st_ctim.tv_sec, "layer dir ctime");
		assert_int_eq_msg(s2[k].st_mtim.tv_sec, s1[k].st_mtim.tv_sec, "layer dir mtime");
	}
	assert_int_eq_msg(count_in(f, "layers"), 2, "two layer dirs for two images");
	assert_int_equal(a->size, b->size);
	image_info_free(a);
	image_info_free(b);
	/* re-opening keeps everything */
	OK(open_store(f, 0));
	struct image_info **l;
	size_t n;
	OK(imgstore_list(f->st, &l, &n, &f->err));
	assert_int_equal(n, 2);
	assert_string_equal(l[0]->name, "one");
	assert_string_equal(l[1]->name, "two");
	image_info_list_free(l, n);
}

static void test_pin_delete_busy(void **state)
{
	struct fx *f = *state;
	char tar[PATH_MAX], cfg[65];
	make_oci_tar(f->dir, "img.tar", tar, sizeof tar, cfg);
	OK(imgstore_import_tar(f->st, "p", tar, NULL, NULL, &f->err));
	struct image_info *i, *j;
	OK(imgstore_pin(f->st, "p", &i, &f->err));
	OK(imgstore_pin(f->st, "p", &j, &f->err));
	image_info_free(j);
	assert_int_equal(imgstore_delete(f->st, "p", &f->err), -1);
	assert_int_eq_msg(f->err.code, EBUSY, f->err.msg);
	imgstore_unpin(f->st, "p");
	assert_int_equal(imgstore_delete(f->st, "p", &f->err), -1);
	assert_int_eq_msg(f->err.code, EBUSY, "still pinned once");
	imgstore_unpin(f->st, "p");
	OK(imgstore_delete(f->st, "p", &f->err));
	assert_int_equal(imgstore_get(f->st, "p", &j, &f->err), -1);
	assert_int_equal(f->err.code, ENOENT);
	assert_int_equal(imgstore_delete(f->st, "p", &f->err), -1);
	assert_int_equal(f->err.code, ENOENT);
	assert_int_equal(imgstore_pin(f->st, "p", &j, &f->err), -1);
	assert_int_equal(f->err.code, ENOENT);
	struct stat sb;
	assert_int_equal(stat(i->layers[0], &sb), 0); /* layers stay until gc */
	uint64_t freed = 0;
	OK(imgstore_gc(f->st, &freed, &f->err));
	assert_int_eq_msg(freed, i->size, "gc frees the layers' bytes");
	assert_int_eq_msg(count_in(f, "layers"), 0, "layers swept");
	image_info_free(i);
}

static ino_t record_ino(struct fx *f, const char *name)
{
	char path[PATH_MAX];
	struct stat sb;
	snprintf(path, sizeof path, "%s/images/%s.json", f->store, name);
	assert_int_equal(stat(path, &sb), 0);
	return sb.st_ino;
}

/* imgstore_has says whether a record is there without reading it; a pin
 * rewrites last_used (a new record: a new inode) unless the image is already
 * pinned here and was marked used under a minute ago; the first pin after
 * the last unpin always marks it. */
static void test_has_and_pin_marks_used(void **state)
{
	struct fx *f = *state;
	char tar[PATH_MAX], cfg[65];
	make_oci_tar(f->dir, "img.tar", tar, sizeof tar, cfg);
	OK(imgstore_import_tar(f->st, "p", tar, NULL, NULL, &f->err));
	OK(imgstore_has(f->st, "p", &f->err));
	assert_int_equal(imgstore_has(f->st, "q", &f->err), -1);
	assert_int_equal(f->err.code, ENOENT);
	assert_int_equal(imgstore_has(f->st, "../p", &f->err), -1);
	assert_int_equal(f->err.code, EINVAL);

	struct image_info *i, *j;
	ino_t imported = record_ino(f, "p");
	usleep(2000);
	OK(imgstore_pin(f->st, "p", &i, &f->err));
	ino_t first = record_ino(f, "p");
	assert_true(first != imported); /* the first pin marks it used */
	OK(imgstore_get(f->st, "p", &j, &f->err));
	assert_int_equal(j->last_used_ms, i->last_used_ms); /* what the pin wrote */
	int64_t marked = j->last_used_ms;
	image_info_free(j);
	OK(imgstore_pin(f->st, "p", &j, &f->err)); /* pinned already, marked just now: no write */
	assert_int_eq_msg(record_ino(f, "p"), first, "a second pin within the grain rewrote the record");
	assert_int_equal(j->last_used_ms, marked);
	assert_int_equal(j->n_layers, i->n_layers);
	assert_string_equal(j->layers[0], i->layers[0]);
	image_info_free(j);
	imgstore_unpin(f->st, "p");
	imgstore_unpin(f->st, "p");
	usleep(2000);
	OK(imgstore_pin(f->st, "p", &j, &f->err)); /* unpinned in between: marked again */
	assert_true(record_ino(f, "p") != first);
	assert_true(j->last_used_ms > marked);
	image_info_free(j);
	imgstore_unpin(f->st, "p");
	image_info_free(i);
	OK(imgstore_delete(f->st, "p", &f->err));
	assert_int_equal(imgstore_has(f->st, "p", &f->err), -1);
	assert_int_equal(f->err.code, ENOENT);

	/* A record is read whole: an empty, a cut or a non-object one is refused. */
	static const char *const bad[] = {"", "{\"digest\": \"x\", \"layers\": [", "[]"};
	for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
		char path[PATH_MAX];
		snprintf(path, sizeof path, "%s/images/bad.json", f->store);
		FILE *fp = fopen(path, "w");
		assert_non_null(fp);
		fputs(bad[k], fp);
		fclose(fp);
		OK(imgstore_has(f->st, "bad", &f->err)); /* there, if unreadable */
		assert_int_equal(imgstore_get(f->st, "bad", &j, &f->err), -1);
		assert_int_eq_msg(f->err.code, EIO, bad[k]);
		assert_null(j);
	}
}

/* A one-layer image of `size` bytes named name; tar under f->dir. */
static void import_sized(struct fx *f, const char *name, size_t size)
{
	struct blob l;
	struct img im = {0};
	char cfg[65], tar[PATH_MAX];
	layer_sized(&l, name, size);
	oci_image(&im, &l, 1, cfg, false);
	snprintf(tar, sizeof tar, "%s/%s.tar", f->dir, name);
	img_write_tar(&im, tar);
	img_free(&im);
	free(l.data);
	OK(imgstore_import_tar(f->st, name, tar, NULL, NULL, &f->err));
}

static bool has_image(struct fx *f, const char *name)
{
	struct image_info *i = NULL;
	int rc = imgstore_get(f->st, name, &i, &f->err);
	image_info_free(i);
	return rc == 0;
}

static void test_gc_lru_budget(void **state)
{
	struct fx *f = *state;
	OK(open_store(f, 250000)); /* two 100 kB images fit, three do not */
	import_sized(f, "a", 100000);
	usleep(5000);
	import_sized(f, "b", 100000);
	usleep(5000);
	struct image_info *i;
	OK(imgstore_pin(f->st, "a", &i, &f->err)); /* a is now used after b */
	image_info_free(i);
	imgstore_unpin(f->st, "a");
	usleep(5000);
	import_sized(f, "c", 100000); /* over budget: b, the least recently used, goes */
	assert_true(has_image(f, "a"));
	assert_false(has_image(f, "b"));
	assert_true(has_image(f, "c"));
	assert_int_eq_msg(count_in(f, "layers"), 2, "b's layer swept");

	/* pinned images are never evicted, nor the one just imported */
	OK(imgstore_pin(f->st, "a", &i, &f->err));
	image_info_free(i);
	usleep(5000);
	import_sized(f, "d", 100000); /* c goes (a is pinned) */
	assert_true(has_image(f, "a"));
	assert_false(has_image(f, "c"));
	assert_true(has_image(f, "d"));
	import_sized(f, "big", 400000); /* alone over budget: kept, the others evicted but a */
	assert_true(has_image(f, "big"));
	assert_true(has_image(f, "a"));
	assert_false(has_image(f, "d"));
	imgstore_unpin(f->st, "a");
	uint64_t freed = 0;
	OK(imgstore_gc(f->st, &freed, &f->err)); /* unpinned, and no import to protect: LRU order */
	assert_false(has_image(f, "a"));
	assert_false(has_image(f, "big"));
	assert_int_eq_msg(freed, 500000, "a's and big's layers freed");
	assert_int_eq_msg(count_in(f, "layers"), 0, "all layers swept");
}

struct conc {
	struct imgstore *st;
	const char *name, *tar;
	int rc;
	cx_err err;
};

static void *conc_import(void *arg)
{
	struct conc *c = arg;
	c->rc = imgstore_import_tar(c->st, c->name, c->tar, NULL, NULL, &c->err);
	return NULL;
}

static void test_concurrent_imports(void **state)
{
	struct fx *f = *state;
	char tar[PATH_MAX], cfg[65];
	make_oci_tar(f->dir, "img.tar", tar, sizeof tar, cfg);
	struct conc c[3] = {{f->st, "c0", tar, 0, CX_ERR_INIT},
			    {f->st, "c1", tar, 0, CX_ERR_INIT},
			    {f->st, "c2", tar, 0, CX_ERR_INIT}};
	pthread_t t[3];
	for (int k = 0; k < 3; k++)
		assert_int_equal(pthread_create(&t[k], NULL, conc_import, &c[k]), 0);
	uint64_t freed;
	OK(imgstore_gc(f->st, &freed, &f->err)); /* sweeps nothing an import holds */
	for (int k = 0; k < 3; k++) {
		pthread_join(t[k], NULL);
		if (c[k].rc)
			fail_msg("import %s: %s", c[k].name, c[k].err.msg);
	}
	OK(imgstore_gc(f->st, &freed, &f->err));
	assert_int_equal(freed, 0);
	assert_int_eq_msg(count_in(f, "layers"), 2, "one dir per layer");
	assert_int_eq_msg(count_in(f, "tmp"), 0, "losers' copies removed");
	struct image_info **l;
	size_t n;
	OK(imgstore_list(f->st, &l, &n, &f->err));
	assert_int_equal(n, 3);
	for (size_t k = 0; k < n; k++) {
		struct stat sb;
		assert_int_equal(stat(l[k]->layers[1], &sb), 0);
		assert_string_equal(l[k]->layers[0], l[0]->layers[0]);
	}
	image_info_list_free(l, n);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_oci_tar_import),
	    T(test_overlay_mount),
	    T(test_oci_dir_import_nested_index),
	    T(test_docker_archive),
	    T(test_refuse_dotdot),
	    T(test_refuse_absolute),
	    T(test_refuse_below_symlink),
	    T(test_refuse_hardlink_outside),
	    T(test_entry_replaces_symlink),
	    T(test_digest_mismatch),
	    T(test_bad_names),
	    T(test_reimport_reuses_layers),
	    T(test_pin_delete_busy),
	    T(test_has_and_pin_marks_used),
	    T(test_gc_lru_budget),
	    T(test_concurrent_imports),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
