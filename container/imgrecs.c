/* imgrecs.c — what the image store (imgstore.c) and its eviction (imggc.c)
 * both read: image names, images/<name>.json records, pins, tree sizes.
 * Below both, so neither depends on the other's internals. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caps.h"
#include "imgstore_int.h"

static _Thread_local double tl_sum;

int img_check_name(const char *n, cx_err *err)
{
	size_t len = n ? strnlen(n, 66) : 0;
	bool ok =
	    len >= 1 && len <= 64 && ((n[0] >= 'a' && n[0] <= 'z') || (n[0] >= '0' && n[0] <= '9'));
	for (size_t i = 1; ok && i < len; i++)
		ok = (n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '.' ||
		     n[i] == '_' || n[i] == '-';
	return ok ? 0
		  : cx_err_set(err, EINVAL,
			       "bad image name \"%.70s\" (want [a-z0-9][a-z0-9._-]{0,63})",
			       n ? n : "");
}

bool img_is_hex64(const char *s)
{
	size_t n = 0;
	for (; s && s[n]; n++)
		if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
			return false;
	return n == 64;
}

/* A DIR of dirfd from its start (a dup shares the offset of the last walk). */
DIR *img_dir_walk(int dirfd)
{
	int fd = dup(dirfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (d)
		rewinddir(d);
	else if (fd >= 0)
		close(fd);
	return d;
}

/* *ino (may be NULL): the inode read, for write_image's check. */
int img_read_image(struct imgstore *st, const char *name, json_t **out, ino_t *ino, cx_err *err)
{
	char rel[80];
	snprintf(rel, sizeof rel, "%s.json", name);
	cleanup_close int fd = openat(st->images_fd, rel, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, errno == ENOENT ? "image %s: not found" : "image %s",
				  name);
	json_error_t je;
	struct stat sb;
	if (fstat(fd, &sb) < 0)
		return cx_err_set(err, errno, "image %s", name);
	if (ino)
		*ino = sb.st_ino;
	if (!S_ISREG(sb.st_mode) || sb.st_size <= 0 || (uint64_t)sb.st_size > CX_CAP_IMAGE_JSON)
		return cx_err_set(err, EIO, "image %s: the record is not a file of 1..%u bytes", name,
				  CX_CAP_IMAGE_JSON);
	/* Read whole, then parsed: json_loadfd reads one byte per read(2), ~550
	 * syscalls for a record, on every create's pin (write_image replaces a
	 * record by rename, never in place: the size fstat saw is the file's). */
	cleanup_free char *buf = malloc((size_t)sb.st_size);
	if (!buf)
		return cx_err_set(err, ENOMEM, "image %s", name);
	if (cx_read_all(fd, buf, (size_t)sb.st_size, err) < 0)
		return cx_err_wrap(err, "image %s", name);
	*out = json_loadb(buf, (size_t)sb.st_size, 0, &je);
	if (!json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		return cx_err_set(err, EIO, "image %s: bad JSON: %s", name, je.text);
	}
	return 0;
}

void img_recs_free(struct rec *r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		json_decref(r[i].j);
	free(r);
}

/* Every readable images/<name>.json (unreadable ones are skipped). */
int img_scan(struct imgstore *st, struct rec **out, size_t *n, cx_err *err)
{
	*out = NULL;
	*n = 0;
	DIR *d = img_dir_walk(st->images_fd);
	if (!d)
		return cx_err_set(err, errno, "opendir %s/images", st->dir);
	size_t cap = 0;
	int rc = 0;
	for (struct dirent *e; (e = readdir(d));) {
		size_t len = strlen(e->d_name);
		char name[65];
		json_t *j;
		if (e->d_name[0] == '.' || len < 6 || len - 5 > 64 ||
		    strcmp(e->d_name + len - 5, ".json"))
			continue;
		memcpy(name, e->d_name, len - 5);
		name[len - 5] = '\0';
		if (img_check_name(name, NULL) < 0 || img_read_image(st, name, &j, NULL, NULL) < 0)
			continue;
		if (*n == cap) {
			cap = cap ? 2 * cap : 16;
			struct rec *g = realloc(*out, cap * sizeof **out);
			if (!g) {
				json_decref(j);
				rc = cx_err_set(err, ENOMEM, "scan");
				break;
			}
			*out = g;
		}
		struct rec *r = &(*out)[(*n)++];
		memcpy(r->name, name, sizeof r->name);
		r->j = j;
		r->last_used = json_integer_value(json_object_get(j, "last_used"));
		r->gone = false;
	}
	closedir(d);
	if (rc < 0) {
		img_recs_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return rc;
}

/* Size of layer hex as recorded by any image, else UINT64_MAX. */
uint64_t img_recs_layer_size(const struct rec *r, size_t n, const char *hex)
{
	for (size_t i = 0; i < n; i++) {
		json_t *l = json_object_get(r[i].j, "layers"), *v;
		json_t *sz = json_object_get(r[i].j, "layer_sizes");
		size_t k;
		json_array_foreach(l, k, v) if (!strcmp(json_string_value(v) ?: "", hex)) return (
		    uint64_t)json_integer_value(json_array_get(sz, k));
	}
	return UINT64_MAX;
}

bool img_is_pinned(struct imgstore *st, const char *name)
{
	for (struct pin *p = st->pins; p; p = p->next)
		if (!strcmp(p->name, name))
			return true;
	return false;
}

bool img_hex_pinned(struct imgstore *st, const char *hex)
{
	for (struct pin *p = st->pins; p; p = p->next)
		for (size_t k = 0; k < p->n; k++)
			if (!strcmp(p->hex[k], hex))
				return true;
	return false;
}

static int sum_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)p;
	(void)ftw;
	if (flag == FTW_F && S_ISREG(sb->st_mode)) /* a layer holds every link of its inodes */
		tl_sum += (double)sb->st_size / (double)(sb->st_nlink ? sb->st_nlink : 1);
	return 0;
}

/* Regular-file bytes below path, hardlinked files once (what unpack_stats.bytes counts). */
uint64_t img_tree_size(const char *path)
{
	tl_sum = 0;
	nftw(path, sum_one, 16, FTW_PHYS | FTW_MOUNT);
	return (uint64_t)(tl_sum + 0.5);
}
