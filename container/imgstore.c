/* imgstore.c — the image store; see imgstore.h and docs/images.md.
 *
 * Metadata lives on disk only (images/<name>.json, read on each call; the
 * mutex orders this process's readers and writers); pins live in memory.
 * An import unpacks every new layer into tmp/ first and renames them into
 * layers/ only when all succeeded, then writes the image JSON.  From its
 * first layer to its JSON it holds a shared flock on <dir>/lock: gc's sweep
 * of unreferenced layers takes it exclusive without waiting and is skipped
 * when it cannot, so no import (of this or another process) loses a layer it
 * has just renamed in or found there. */
#include "imgstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "caps.h"
#include "imgsrc.h"
#include "imgstore_int.h"
#include "unpack.h"

#define IMG_ENV_MAX 4096u /* Env entries kept from a config */

/* ---- small helpers ---- */

/* A fresh dir tmp/<pid>.<random> (0700); its path into out. */
static int tmp_new(struct imgstore *st, char *out, size_t cap, cx_err *err)
{
	char r[17];
	cx_random_hex(r, 8);
	snprintf(out, cap, "%s/tmp/%d.%s", st->dir, (int)getpid(), r);
	if (mkdir(out, 0700) < 0)
		return cx_err_set(err, errno, "mkdir %s", out);
	return 0;
}

/* Remove what dead processes left in tmp/ (names <pid>.<random>). */
static void tmp_clean(struct imgstore *st)
{
	char path[PATH_MAX];
	DIR *d = img_dir_walk(st->tmp_fd);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		long pid = strtol(e->d_name, NULL, 10);
		if (pid > 0 && pid <= INT_MAX && (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
			continue;
		snprintf(path, sizeof path, "%s/tmp/%s", st->dir, e->d_name);
		cx_rm_rf(path);
	}
	closedir(d);
}

static int lock_open(struct imgstore *st, int op, cx_err *err)
{
	cleanup_close int fd = openat(st->dir_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return cx_err_set(err, errno, "open %s/lock", st->dir);
	while (flock(fd, op) < 0) {
		if (errno != EINTR)
			return cx_err_set(err, errno, "flock %s/lock", st->dir);
	}
	return steal_fd(&fd);
}

/* ---- image JSON ---- */

/* Atomically (tmp, fsync, rename).  only_ino != 0: only if images/<name>.json
 * is still that inode (a pin's last_used must not undo another process's
 * import in between); otherwise nothing is written. */
static int write_image(struct imgstore *st, const char *name, json_t *j, ino_t only_ino,
		       cx_err *err)
{
	char tmp[100], rel[80], r[17];
	cx_random_hex(r, 8);
	snprintf(tmp, sizeof tmp, ".%s.json.%s", name, r);
	snprintf(rel, sizeof rel, "%s.json", name);
	cleanup_free char *s = json_dumps(j, JSON_COMPACT);
	if (!s)
		return cx_err_set(err, ENOMEM, "image %s: encode", name);
	int fd = openat(st->images_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return cx_err_set(err, errno, "image %s: create", name);
	int rc = cx_write_all(fd, s, strlen(s), err);
	if (rc == 0 && fsync(fd) < 0)
		rc = cx_err_set(err, errno, "image %s: fsync", name);
	close(fd);
	struct stat sb;
	bool keep = only_ino && (fstatat(st->images_fd, rel, &sb, 0) < 0 || sb.st_ino != only_ino);
	if (rc == 0 && !keep && renameat(st->images_fd, tmp, st->images_fd, rel) < 0)
		rc = cx_err_set(err, errno, "image %s: rename", name);
	if (rc < 0 || keep)
		unlinkat(st->images_fd, tmp, 0);
	return rc < 0 ? cx_err_wrap(err, "write image") : 0;
}

static struct image_info *info_from_json(struct imgstore *st, const char *name, json_t *j,
					 cx_err *err)
{
	struct image_info *i = calloc(1, sizeof *i);
	json_t *layers = json_object_get(j, "layers"), *env = json_object_get(j, "env"), *v;
	size_t k;
	if (!i)
		goto oom;
	snprintf(i->name, sizeof i->name, "%s", name);
	snprintf(i->digest, sizeof i->digest, "%s",
		 json_string_value(json_object_get(j, "digest")) ?: "");
	snprintf(i->workdir, sizeof i->workdir, "%s",
		 json_string_value(json_object_get(j, "workdir")) ?: "");
	snprintf(i->user, sizeof i->user, "%s",
		 json_string_value(json_object_get(j, "user")) ?: "");
	i->size = (uint64_t)json_integer_value(json_object_get(j, "size"));
	i->created = json_integer_value(json_object_get(j, "created"));
	i->last_used_ms = json_integer_value(json_object_get(j, "last_used"));
	i->layers = calloc(json_array_size(layers) + 1, sizeof *i->layers);
	i->env = calloc(json_array_size(env) + 1, sizeof *i->env);
	if (!i->layers || !i->env)
		goto oom;
	json_array_foreach(layers, k, v)
	{
		if (!img_is_hex64(json_string_value(v))) {
			image_info_free(i);
			cx_err_set(err, EIO, "image %s: bad layer id", name);
			return NULL;
		}
		if (asprintf(&i->layers[k], "%s/layers/%s", st->dir, json_string_value(v)) < 0) {
			i->layers[k] = NULL;
			goto oom;
		}
		i->n_layers = k + 1;
	}
	json_array_foreach(env, k,
			   v) if (!(i->env[k] = strdup(json_string_value(v) ?: ""))) goto oom;
	return i;
oom:
	image_info_free(i);
	cx_err_set(err, ENOMEM, "image %s", name);
	return NULL;
}

void image_info_free(struct image_info *i)
{
	if (!i)
		return;
	for (size_t k = 0; i->layers && i->layers[k]; k++)
		free(i->layers[k]);
	for (size_t k = 0; i->env && i->env[k]; k++)
		free(i->env[k]);
	free(i->layers);
	free(i->env);
	free(i);
}

void image_info_list_free(struct image_info **l, size_t n)
{
	for (size_t k = 0; k < n; k++)
		image_info_free(l[k]);
	free(l);
}

/* ---- pins ---- */

/* ---- open / close ---- */

static int open_sub(struct imgstore *st, const char *sub, int *fd, cx_err *err)
{
	if (mkdirat(st->dir_fd, sub, 0700) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s/%s", st->dir, sub);
	*fd = openat(st->dir_fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return *fd < 0 ? cx_err_set(err, errno, "open %s/%s", st->dir, sub) : 0;
}

int imgstore_open(struct imgstore **out, const char *dir, uint64_t budget_bytes, cx_err *err)
{
	unpack_init();
	*out = NULL;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "imgstore: mkdir %s", dir);
	struct imgstore *st = calloc(1, sizeof *st);
	if (!st)
		return cx_err_set(err, ENOMEM, "imgstore");
	st->dir_fd = st->layers_fd = st->images_fd = st->tmp_fd = -1;
	st->budget = budget_bytes;
	pthread_mutex_init(&st->mu, NULL);
	int rc = 0;
	if (!(st->dir = realpath(dir, NULL)))
		rc = cx_err_set(err, errno, "imgstore: %s", dir);
	else if ((st->dir_fd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		rc = cx_err_set(err, errno, "imgstore: open %s", st->dir);
	if (rc == 0 && (open_sub(st, "layers", &st->layers_fd, err) < 0 ||
			open_sub(st, "images", &st->images_fd, err) < 0 ||
			open_sub(st, "tmp", &st->tmp_fd, err) < 0))
		rc = cx_err_wrap(err, "imgstore");
	if (rc < 0) {
		imgstore_close(st);
		return rc;
	}
	tmp_clean(st);
	*out = st;
	return 0;
}

void imgstore_close(struct imgstore *st)
{
	if (!st)
		return;
	while (st->pins) {
		struct pin *p = st->pins;
		st->pins = p->next;
		free(p->hex);
		free(p);
	}
	int fds[] = {st->dir_fd, st->layers_fd, st->images_fd, st->tmp_fd};
	for (size_t k = 0; k < sizeof fds / sizeof *fds; k++)
		if (fds[k] >= 0)
			close(fds[k]);
	pthread_mutex_destroy(&st->mu);
	free(st->dir);
	free(st);
}

/* ---- import ---- */

struct lay {
	char tmp[PATH_MAX]; /* unpacked here, "" when the layer was already stored */
	uint64_t size;	    /* UINT64_MAX: not known yet */
};

/* Unpack the layers src lacks in layers/ into tmp/, all or none. */
static int unpack_all(struct imgstore *st, struct img_src *src, struct lay *lay,
		      imgstore_progress_fn progress, void *arg, cx_err *err)
{
	size_t n = src->n_layers;
	for (size_t i = 0; i < n; i++) {
		struct img_layer *l = &src->layers[i];
		struct stat sb;
		char line[160];
		lay[i].size = UINT64_MAX;
		for (size_t k = 0; k < i; k++)
			if (!strcmp(src->layers[k].hex, l->hex))
				lay[i].size = lay[k].size; /* twice in one image: once on disk */
		if (lay[i].size == UINT64_MAX &&
		    fstatat(st->layers_fd, l->hex, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
			struct unpack_stats us;
			cleanup_close int fd = -1;
			if (tmp_new(st, lay[i].tmp, sizeof lay[i].tmp, err) < 0 ||
			    chmod(lay[i].tmp, 0755) < 0 ||
			    (fd = imgsrc_open(src, l->path, err)) < 0 ||
			    unpack_layer(fd, lay[i].tmp, l->hex, CX_CAP_IMAGE_LAYER, &us, err) < 0)
				return cx_err_wrap(err, "layer %zu/%zu sha256:%.12s", i + 1, n,
						   l->hex);
			lay[i].size = us.bytes;
			int k = snprintf(line, sizeof line, "layer %zu/%zu sha256:%.12s %.1f MB",
					 i + 1, n, l->hex, (double)us.bytes / 1e6);
			if (us.skipped && k > 0 && (size_t)k < sizeof line)
				snprintf(line + k, sizeof line - (size_t)k,
					 ", %llu skipped (devices, fifos)",
					 (unsigned long long)us.skipped);
		} else {
			snprintf(line, sizeof line, "layer %zu/%zu sha256:%.12s already stored",
				 i + 1, n, l->hex);
		}
		if (progress)
			progress(arg, line);
	}
	return 0;
}

static json_t *image_json(struct img_src *src, struct lay *lay, cx_err *err)
{
	json_t *cfg = json_object_get(src->config, "config"), *v;
	json_t *env = json_object_get(cfg, "Env");
	const char *wd = json_string_value(json_object_get(cfg, "WorkingDir")) ?: "";
	const char *user = json_string_value(json_object_get(cfg, "User")) ?: "";
	size_t k;
	if (strlen(wd) >= sizeof((struct image_info *)0)->workdir ||
	    strlen(user) >= sizeof((struct image_info *)0)->user ||
	    json_array_size(env) > IMG_ENV_MAX) {
		cx_err_set(err, EINVAL, "image config: WorkingDir, User or Env too long");
		return NULL;
	}
	json_t *j = json_object(), *layers = json_array(), *sizes = json_array(), *e = json_array();
	uint64_t total = 0;
	for (size_t i = 0; i < src->n_layers; i++) {
		bool dup = false;
		for (size_t d = 0; d < i; d++)
			dup |= !strcmp(src->layers[d].hex, src->layers[i].hex);
		total += dup ? 0 : lay[i].size;
		json_array_append_new(layers, json_string(src->layers[i].hex));
		json_array_append_new(sizes, json_integer((json_int_t)lay[i].size));
	}
	json_array_foreach(env, k, v) if (json_is_string(v)) json_array_append(e, v);
	int64_t now = cx_wall_ms();
	json_object_set_new(j, "digest", json_string(src->digest));
	json_object_set_new(j, "layers", layers);
	json_object_set_new(j, "layer_sizes", sizes);
	json_object_set_new(j, "env", e);
	json_object_set_new(j, "workdir", json_string(wd));
	json_object_set_new(j, "user", json_string(user));
	json_object_set_new(j, "size", json_integer((json_int_t)total));
	json_object_set_new(j, "created", json_integer(now / 1000));
	json_object_set_new(j, "last_used", json_integer(now));
	return j;
}

static int import_src(struct imgstore *st, const char *name, struct img_src *src,
		      imgstore_progress_fn progress, void *arg, cx_err *err)
{
	size_t n = src->n_layers;
	cleanup_free struct lay *lay = calloc(n ? n : 1, sizeof *lay);
	if (!lay)
		return cx_err_set(err, ENOMEM, "import");
	cleanup_close int lock = lock_open(st, LOCK_SH, err);
	if (lock < 0)
		return -1;
	int rc = unpack_all(st, src, lay, progress, arg, err);
	/* all unpacked: rename them in; one another import stored meanwhile is reused */
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (!lay[i].tmp[0])
			continue;
		if (renameat2(AT_FDCWD, lay[i].tmp, st->layers_fd, src->layers[i].hex,
			      RENAME_NOREPLACE) == 0)
			lay[i].tmp[0] = '\0';
		else if (errno != EEXIST && errno != ENOTEMPTY)
			rc =
			    cx_err_set(err, errno, "rename layer sha256:%.12s", src->layers[i].hex);
	}
	for (size_t i = 0; i < n; i++)
		if (lay[i].tmp[0])
			cx_rm_rf(lay[i].tmp);
	if (rc < 0)
		return -1;
	pthread_mutex_lock(&st->mu);
	struct rec *recs = NULL;
	size_t nrec = 0;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (lay[i].size != UINT64_MAX)
			continue;
		if (!recs && img_scan(st, &recs, &nrec, err) < 0) {
			rc = -1;
			break;
		}
		lay[i].size = img_recs_layer_size(recs, nrec, src->layers[i].hex);
		if (lay[i].size == UINT64_MAX) { /* stored by an import that never finished */
			char path[PATH_MAX];
			snprintf(path, sizeof path, "%s/layers/%s", st->dir, src->layers[i].hex);
			lay[i].size = img_tree_size(path);
		}
	}
	img_recs_free(recs, nrec);
	json_t *j = rc == 0 ? image_json(src, lay, err) : NULL;
	if (!j || write_image(st, name, j, 0, err) < 0)
		rc = -1;
	json_decref(j);
	pthread_mutex_unlock(&st->mu);
	close(steal_fd(&lock));
	if (rc == 0 && st->budget) {
		cx_err gc_err =
		    CX_ERR_INIT; /* the image is stored: a failed gc waits for the next */
		(void)img_gc_run(st, name, false, NULL, &gc_err);
	}
	return rc;
}

int imgstore_import_dir(struct imgstore *st, const char *name, const char *oci_dir,
			imgstore_progress_fn progress, void *arg, cx_err *err)
{
	if (img_check_name(name, err) < 0)
		return -1;
	struct img_src src;
	int rc = imgsrc_load(&src, oci_dir, err);
	if (rc == 0)
		rc = import_src(st, name, &src, progress, arg, err);
	imgsrc_free(&src);
	return rc < 0 ? cx_err_wrap(err, "import %s", name) : 0;
}

int imgstore_import_tar(struct imgstore *st, const char *name, const char *tar_path,
			imgstore_progress_fn progress, void *arg, cx_err *err)
{
	if (img_check_name(name, err) < 0)
		return -1;
	char stage[PATH_MAX];
	if (tmp_new(st, stage, sizeof stage, err) < 0)
		return cx_err_wrap(err, "import %s", name);
	int rc = unpack_stage(tar_path, stage, CX_CAP_IMAGE_TAR, err);
	if (rc < 0)
		cx_err_wrap(err, "import %s", name);
	else
		rc = imgstore_import_dir(st, name, stage, progress, arg, err);
	cx_rm_rf(stage);
	return rc;
}

/* ---- lookups ---- */

int imgstore_get(struct imgstore *st, const char *name, struct image_info **out, cx_err *err)
{
	*out = NULL;
	if (img_check_name(name, err) < 0)
		return -1;
	json_t *j = NULL;
	pthread_mutex_lock(&st->mu);
	int rc = img_read_image(st, name, &j, NULL, err);
	pthread_mutex_unlock(&st->mu);
	if (rc == 0 && !(*out = info_from_json(st, name, j, err)))
		rc = -1;
	json_decref(j);
	return rc;
}

int imgstore_has(struct imgstore *st, const char *name, cx_err *err)
{
	if (img_check_name(name, err) < 0)
		return -1;
	char rel[80];
	struct stat sb;
	snprintf(rel, sizeof rel, "%s.json", name);
	/* Records are replaced by rename: a stat sees the old one or the new one. */
	if (fstatat(st->images_fd, rel, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return cx_err_set(err, errno, errno == ENOENT ? "image %s: not found" : "image %s", name);
	if (!S_ISREG(sb.st_mode))
		return cx_err_set(err, EIO, "image %s: not a regular file", name);
	return 0;
}

/* A pin rewrites the record's last_used (tmp, fsync, rename) unless this
 * process already holds a pin of the image and the recorded use is younger
 * than this: a burst of creates of one image made one fsync each, in
 * series under st->mu.  Nothing here evicts a pinned image, and the first
 * pin after an idle spell is exact, so LRU order among unused images is as
 * before; another process's gc sees a busy image at most this stale. */
#define IMG_USED_GRAIN_MS 60000

int imgstore_pin(struct imgstore *st, const char *name, struct image_info **out, cx_err *err)
{
	*out = NULL;
	if (img_check_name(name, err) < 0)
		return -1;
	json_t *j = NULL;
	ino_t ino = 0;
	pthread_mutex_lock(&st->mu);
	int rc = img_read_image(st, name, &j, &ino, err);
	struct pin *p = rc == 0 ? calloc(1, sizeof *p) : NULL;
	if (rc == 0 && !p)
		rc = cx_err_set(err, ENOMEM, "pin %s", name);
	int64_t now = cx_wall_ms(), used = json_integer_value(json_object_get(j, "last_used"));
	if (rc == 0 && !(img_is_pinned(st, name) && now >= used && now - used < IMG_USED_GRAIN_MS)) {
		json_object_set_new(j, "last_used", json_integer(now));
		rc = write_image(st, name, j, ino ? ino : 1, err);
	}
	if (rc == 0 && !(*out = info_from_json(st, name, j, err)))
		rc = -1;
	if (rc == 0 && !(p->hex = calloc((*out)->n_layers + 1, sizeof *p->hex)))
		rc = cx_err_set(err, ENOMEM, "pin %s", name);
	if (rc == 0) {
		json_t *layers = json_object_get(j, "layers");
		snprintf(p->name, sizeof p->name, "%s", name);
		for (p->n = 0; p->n < (*out)->n_layers; p->n++)
			snprintf(p->hex[p->n], sizeof p->hex[p->n], "%s",
				 json_string_value(json_array_get(layers, p->n)));
		p->next = st->pins;
		st->pins = p;
	} else {
		free(p);
		image_info_free(*out);
		*out = NULL;
	}
	pthread_mutex_unlock(&st->mu);
	json_decref(j);
	return rc;
}

void imgstore_unpin(struct imgstore *st, const char *name)
{
	pthread_mutex_lock(&st->mu);
	struct pin **pp = &st->pins, *found = NULL;
	for (; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->name, name))
			found = *pp; /* the oldest pin of the name */
	for (pp = &st->pins; found && *pp; pp = &(*pp)->next)
		if (*pp == found) {
			*pp = found->next;
			break;
		}
	pthread_mutex_unlock(&st->mu);
	if (found)
		free(found->hex);
	free(found);
}

static int by_name(const void *a, const void *b)
{
	return strcmp((*(struct image_info *const *)a)->name,
		      (*(struct image_info *const *)b)->name);
}

int imgstore_list(struct imgstore *st, struct image_info ***out, size_t *n, cx_err *err)
{
	*out = NULL;
	*n = 0;
	struct rec *recs;
	size_t nrec;
	pthread_mutex_lock(&st->mu);
	int rc = img_scan(st, &recs, &nrec, err);
	pthread_mutex_unlock(&st->mu);
	if (rc < 0)
		return -1;
	struct image_info **l = calloc(nrec ? nrec : 1, sizeof *l);
	if (!l)
		rc = cx_err_set(err, ENOMEM, "list");
	for (size_t i = 0; rc == 0 && i < nrec; i++)
		if (!(l[i] = info_from_json(st, recs[i].name, recs[i].j, err)))
			rc = -1;
	img_recs_free(recs, nrec);
	if (rc < 0) {
		image_info_list_free(l, nrec);
		return -1;
	}
	qsort(l, nrec, sizeof *l, by_name);
	*out = l;
	*n = nrec;
	return 0;
}

int imgstore_delete(struct imgstore *st, const char *name, cx_err *err)
{
	if (img_check_name(name, err) < 0)
		return -1;
	char rel[80];
	snprintf(rel, sizeof rel, "%s.json", name);
	int rc = 0;
	pthread_mutex_lock(&st->mu);
	if (img_is_pinned(st, name))
		rc = cx_err_set(err, EBUSY, "image %s is in use", name);
	else if (unlinkat(st->images_fd, rel, 0) < 0)
		rc = cx_err_set(err, errno,
				errno == ENOENT ? "image %s: not found" : "delete image %s", name);
	pthread_mutex_unlock(&st->mu);
	return rc;
}
