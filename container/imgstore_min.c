/* imgstore_min.c — TEMPORARY stand-in for the image store (imgstore.c, another
 * engineer's work) so the builder and the routes link and run before it lands.
 * Compiled only while container/imgstore.c does not exist (CMakeLists.txt).
 * Metadata only: it reads an OCI layout's index/manifest/config (or a docker
 * archive's manifest.json) and records name -> digest, layer count, Env,
 * WorkingDir, User in <dir>/images/<name>.json; layers are not unpacked. */
#include "imgstore.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct imgstore {
	char dir[1024];
	pthread_mutex_t mu;
};

static int valid_name(const char *n)
{
	size_t l = strlen(n);
	if (!l || l > 64 || !((n[0] >= 'a' && n[0] <= 'z') || (n[0] >= '0' && n[0] <= '9')))
		return 0;
	for (size_t i = 0; i < l; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789._-", n[i]))
			return 0;
	return 1;
}

int imgstore_open(struct imgstore **out, const char *dir, uint64_t budget_bytes, cx_err *err)
{
	(void)budget_bytes;
	struct imgstore *s = calloc(1, sizeof *s);
	if (!s)
		return cx_err_set(err, ENOMEM, "imgstore");
	snprintf(s->dir, sizeof s->dir, "%s", dir);
	char p[1100];
	mkdir(dir, 0700);
	snprintf(p, sizeof p, "%s/images", dir);
	if (mkdir(p, 0700) < 0 && errno != EEXIST) {
		free(s);
		return cx_err_set(err, errno, "mkdir %s", p);
	}
	pthread_mutex_init(&s->mu, NULL);
	*out = s;
	return 0;
}

void imgstore_close(struct imgstore *st)
{
	if (st) {
		pthread_mutex_destroy(&st->mu);
		free(st);
	}
}

static json_t *load_blob(const char *root, const char *digest, cx_err *err)
{
	char p[2048];
	if (strncmp(digest, "sha256:", 7) || strchr(digest, '/')) {
		cx_err_set(err, EINVAL, "bad digest %s", digest);
		return NULL;
	}
	snprintf(p, sizeof p, "%s/blobs/sha256/%s", root, digest + 7);
	json_error_t je;
	json_t *j = json_load_file(p, 0, &je);
	if (!j)
		cx_err_set(err, EINVAL, "%s: %s", p, je.text);
	return j;
}

static int save(struct imgstore *st, const char *name, const char *digest, json_t *config, size_t nl,
		uint64_t size, cx_err *err)
{
	json_t *c = json_object_get(config, "config");
	json_t *o = json_pack("{s:s, s:I, s:I, s:I}", "digest", digest, "layers", (json_int_t)nl, "size",
			      (json_int_t)size, "created", (json_int_t)time(NULL));
	json_object_set(o, "env", json_object_get(c, "Env") ? json_object_get(c, "Env") : json_array());
	json_object_set_new(o, "workdir", json_string(json_string_value(json_object_get(c, "WorkingDir"))
							      ? json_string_value(json_object_get(c, "WorkingDir")) : ""));
	json_object_set_new(o, "user", json_string(json_string_value(json_object_get(c, "User"))
							   ? json_string_value(json_object_get(c, "User")) : ""));
	char p[1300], t[1310];
	snprintf(p, sizeof p, "%s/images/%s.json", st->dir, name);
	snprintf(t, sizeof t, "%s.tmp", p);
	pthread_mutex_lock(&st->mu);
	int rc = json_dump_file(o, t, JSON_COMPACT) || rename(t, p) ? cx_err_set(err, errno, "write %s", p) : 0;
	pthread_mutex_unlock(&st->mu);
	json_decref(o);
	return rc;
}

static uint64_t du(const char *path)
{
	struct stat s;
	if (lstat(path, &s) < 0)
		return 0;
	if (!S_ISDIR(s.st_mode))
		return (uint64_t)s.st_size;
	uint64_t t = 0;
	DIR *d = opendir(path);
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			char p[4096];
			snprintf(p, sizeof p, "%s/%s", path, e->d_name);
			t += du(p);
		}
	if (d)
		closedir(d);
	return t;
}

int imgstore_import_dir(struct imgstore *st, const char *name, const char *oci_dir, imgstore_progress_fn progress,
			void *arg, cx_err *err)
{
	if (!valid_name(name))
		return cx_err_set(err, EINVAL, "bad image name %s", name);
	char p[1100];
	json_error_t je;
	snprintf(p, sizeof p, "%s/index.json", oci_dir);
	json_t *idx = json_load_file(p, 0, &je);
	if (idx) {
		const char *md = json_string_value(json_object_get(json_array_get(json_object_get(idx, "manifests"), 0), "digest"));
		json_t *man = md ? load_blob(oci_dir, md, err) : NULL;
		json_decref(idx);
		if (!man)
			return md ? -1 : cx_err_set(err, EINVAL, "%s: no manifest", p);
		const char *cd = json_string_value(json_object_get(json_object_get(man, "config"), "digest"));
		json_t *cfg = cd ? load_blob(oci_dir, cd, err) : NULL;
		size_t nl = json_array_size(json_object_get(man, "layers"));
		int rc = cfg ? save(st, name, cd, cfg, nl, du(oci_dir), err) : -1;
		if (progress && !rc)
			progress(arg, "stored (metadata only: imgstore_min)");
		json_decref(cfg);
		json_decref(man);
		return rc;
	}
	snprintf(p, sizeof p, "%s/manifest.json", oci_dir); /* docker-archive */
	json_t *m = json_load_file(p, 0, &je);
	if (!m)
		return cx_err_set(err, EINVAL, "%s: neither an OCI layout (index.json) nor a docker archive (manifest.json)", oci_dir);
	json_t *e0 = json_array_get(m, 0);
	const char *cf = json_string_value(json_object_get(e0, "Config"));
	char cp[2048];
	snprintf(cp, sizeof cp, "%s/%s", oci_dir, cf ? cf : "");
	json_t *cfg = cf && !strstr(cf, "..") ? json_load_file(cp, 0, &je) : NULL;
	int rc;
	if (!cfg) {
		rc = cx_err_set(err, EINVAL, "docker archive: no config");
	} else {
		char dg[80];
		const char *base = strrchr(cf, '/') ? strrchr(cf, '/') + 1 : cf;
		snprintf(dg, sizeof dg, "sha256:%.64s", base);
		rc = save(st, name, dg, cfg, json_array_size(json_object_get(e0, "Layers")), du(oci_dir), err);
	}
	json_decref(cfg);
	json_decref(m);
	return rc;
}

int imgstore_import_tar(struct imgstore *st, const char *name, const char *tar_path, imgstore_progress_fn progress,
			void *arg, cx_err *err)
{
	char tmp[1100];
	snprintf(tmp, sizeof tmp, "%s/tmp-import-XXXXXX", st->dir);
	if (!mkdtemp(tmp))
		return cx_err_set(err, errno, "mkdtemp");
	struct archive *a = archive_read_new(), *w = archive_write_disk_new();
	archive_read_support_format_all(a);
	archive_read_support_filter_all(a);
	archive_write_disk_set_options(w, ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT);
	int rc = 0;
	if (archive_read_open_filename(a, tar_path, 65536) != ARCHIVE_OK) {
		rc = cx_err_set(err, EINVAL, "not a tar: %s", archive_error_string(a));
	} else {
		struct archive_entry *e;
		int r;
		while (!rc && (r = archive_read_next_header(a, &e)) != ARCHIVE_EOF) {
			if (r < ARCHIVE_WARN) {
				rc = cx_err_set(err, EINVAL, "bad tar: %s", archive_error_string(a));
				break;
			}
			mode_t t = archive_entry_filetype(e);
			const char *pn = archive_entry_pathname(e);
			if ((t != AE_IFREG && t != AE_IFDIR) || !pn || pn[0] == '/')
				continue;
			char full[4096];
			snprintf(full, sizeof full, "%s/%s", tmp, pn);
			archive_entry_set_pathname(e, full);
			if (archive_write_header(w, e) < ARCHIVE_WARN) {
				rc = cx_err_set(err, EINVAL, "%s", archive_error_string(w));
				break;
			}
			const void *buf;
			size_t len;
			int64_t off;
			while (archive_read_data_block(a, &buf, &len, &off) == ARCHIVE_OK)
				archive_write_data_block(w, buf, len, off);
			archive_write_finish_entry(w);
		}
	}
	archive_read_free(a);
	archive_write_free(w);
	if (!rc)
		rc = imgstore_import_dir(st, name, tmp, progress, arg, err);
	cx_rm_rf(tmp);
	return rc;
}

static struct image_info *load(struct imgstore *st, const char *name)
{
	char p[1300];
	snprintf(p, sizeof p, "%s/images/%s.json", st->dir, name);
	json_t *o = json_load_file(p, 0, NULL);
	if (!o)
		return NULL;
	struct image_info *i = calloc(1, sizeof *i);
	snprintf(i->name, sizeof i->name, "%s", name);
	snprintf(i->digest, sizeof i->digest, "%s", json_string_value(json_object_get(o, "digest")));
	i->n_layers = (size_t)json_integer_value(json_object_get(o, "layers"));
	i->size = (uint64_t)json_integer_value(json_object_get(o, "size"));
	i->created = json_integer_value(json_object_get(o, "created"));
	snprintf(i->workdir, sizeof i->workdir, "%s", json_string_value(json_object_get(o, "workdir")));
	snprintf(i->user, sizeof i->user, "%s", json_string_value(json_object_get(o, "user")));
	json_t *env = json_object_get(o, "env");
	i->env = calloc(json_array_size(env) + 1, sizeof *i->env);
	for (size_t k = 0; k < json_array_size(env); k++)
		i->env[k] = strdup(json_string_value(json_array_get(env, k)));
	json_decref(o);
	return i;
}

int imgstore_get(struct imgstore *st, const char *name, struct image_info **out, cx_err *err)
{
	if (!valid_name(name) || !(*out = load(st, name)))
		return cx_err_set(err, ENOENT, "no image %s", name);
	return 0;
}

int imgstore_pin(struct imgstore *st, const char *name, struct image_info **out, cx_err *err)
{
	return imgstore_get(st, name, out, err);
}

void imgstore_unpin(struct imgstore *st, const char *name)
{
	(void)st;
	(void)name;
}

void image_info_free(struct image_info *i)
{
	if (!i)
		return;
	for (size_t k = 0; i->env && i->env[k]; k++)
		free(i->env[k]);
	free(i->env);
	free(i->layers);
	free(i);
}

int imgstore_list(struct imgstore *st, struct image_info ***out, size_t *n, cx_err *err)
{
	char p[1100];
	snprintf(p, sizeof p, "%s/images", st->dir);
	struct dirent **ents;
	int k = scandir(p, &ents, NULL, alphasort);
	if (k < 0)
		return cx_err_set(err, errno, "%s", p);
	*out = calloc((size_t)k + 1, sizeof **out);
	*n = 0;
	for (int i = 0; i < k; i++) {
		char *dot = strstr(ents[i]->d_name, ".json");
		if (dot && !dot[5]) {
			*dot = '\0';
			struct image_info *ii = load(st, ents[i]->d_name);
			if (ii)
				(*out)[(*n)++] = ii;
		}
		free(ents[i]);
	}
	free(ents);
	return 0;
}

void image_info_list_free(struct image_info **l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		image_info_free(l[i]);
	free(l);
}

int imgstore_delete(struct imgstore *st, const char *name, cx_err *err)
{
	char p[1300];
	snprintf(p, sizeof p, "%s/images/%s.json", st->dir, name);
	if (!valid_name(name) || unlink(p) < 0)
		return cx_err_set(err, ENOENT, "no image %s", name);
	return 0;
}

int imgstore_gc(struct imgstore *st, uint64_t *freed, cx_err *err)
{
	(void)st;
	(void)err;
	if (freed)
		*freed = 0;
	return 0;
}
