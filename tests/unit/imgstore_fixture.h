/* imgstore_fixture.h — images for test_imgstore.c, built in memory with
 * libarchive's writer: layers (struct blob, entries through put() and the
 * DIR_/FILE_/LINK_/HARDLINK_ macros, which use a local `a`), OCI layouts and
 * docker-archives as lists of files (struct img) written out as a tar or a
 * dir.  Not a test itself: CMake globs only test_*.c.  Include after cmocka.h. */
#ifndef CORTEX_IMGSTORE_FIXTURE_H
#define CORTEX_IMGSTORE_FIXTURE_H

#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <limits.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define BLOB_CAP (8u << 20)

/* ---- blobs: layers written in memory ---- */

struct blob {
	unsigned char *data;
	size_t len;
	bool gz;
	char hex[65];
};

static inline void blob_hash(struct blob *b)
{
	unsigned char bin[crypto_hash_sha256_BYTES];
	crypto_hash_sha256(bin, b->data, b->len);
	sodium_bin2hex(b->hex, sizeof b->hex, bin, sizeof bin);
}

static inline struct archive *layer_open(struct blob *b, bool gz)
{
	b->data = malloc(BLOB_CAP);
	b->gz = gz;
	b->len = 0;
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	if (gz)
		archive_write_add_filter_gzip(a);
	assert_int_equal(archive_write_open_memory(a, b->data, BLOB_CAP, &b->len), ARCHIVE_OK);
	return a;
}

static inline void layer_close(struct archive *a, struct blob *b)
{
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	blob_hash(b);
}

struct ent {
	const char *path;
	unsigned type; /* AE_IF* */
	unsigned perm;
	const char *data; /* file content, symlink target or (type 0) hardlink target */
	size_t len;	  /* file size (data repeated/zero-filled when > strlen) */
	unsigned uid, gid;
	int64_t mtime;
};

static inline void put(struct archive *a, struct ent e)
{
	struct archive_entry *x = archive_entry_new();
	archive_entry_set_pathname(x, e.path);
	archive_entry_set_uid(x, e.uid);
	archive_entry_set_gid(x, e.gid);
	archive_entry_set_mtime(x, e.mtime ? e.mtime : 1700000000, 0);
	if (e.type == 0) { /* hardlink */
		archive_entry_set_filetype(x, AE_IFREG);
		archive_entry_set_perm(x, 0644);
		archive_entry_set_hardlink(x, e.data);
	} else {
		archive_entry_set_filetype(x, e.type);
		archive_entry_set_perm(x, e.perm ? e.perm : (e.type == AE_IFDIR ? 0755 : 0644));
	}
	if (e.type == AE_IFLNK)
		archive_entry_set_symlink(x, e.data);
	if (e.type == AE_IFCHR)
		archive_entry_set_rdev(x, makedev(1, 3));
	size_t len = e.type == AE_IFREG ? (e.len ? e.len : (e.data ? strlen(e.data) : 0)) : 0;
	archive_entry_set_size(x, (la_int64_t)len);
	assert_int_equal(archive_write_header(a, x), ARCHIVE_OK);
	if (len) {
		char *buf = calloc(1, len);
		if (e.data)
			for (size_t i = 0; i < len; i++)
				buf[i] = e.data[i % strlen(e.data)];
		assert_int_equal(archive_write_data(a, buf, len), (la_ssize_t)len);
		free(buf);
	}
	archive_entry_free(x);
}

#define DIR_(p)		put(a, (struct ent){.path = p, .type = AE_IFDIR})
#define FILE_(p, s)	put(a, (struct ent){.path = p, .type = AE_IFREG, .data = s})
#define LINK_(p, t)	put(a, (struct ent){.path = p, .type = AE_IFLNK, .data = t})
#define HARDLINK_(p, t) put(a, (struct ent){.path = p, .type = 0, .data = t})

/* Layer 1 (gzip): the lower; layer 2 (plain tar) deletes and hides. */
static inline void layer1(struct blob *b)
{
	struct archive *a = layer_open(b, true);
	DIR_("./");
	DIR_("etc");
	FILE_("etc/passwd", "root:x:0:0::/root:/bin/sh\n");
	FILE_("etc/gone", "deleted by layer 2\n");
	LINK_("etc/link", "passwd");
	DIR_("opq");
	FILE_("opq/lower-only", "hidden by layer 2\n");
	DIR_("bin");
	put(a, (struct ent){.path = "bin/su", .type = AE_IFREG, .perm = 04755, .data = "su"});
	put(a, (struct ent){.path = "bin/sg", .type = AE_IFREG, .perm = 02755, .data = "sg"});
	HARDLINK_("bin/su-link", "bin/su");
	DIR_("dev");
	put(a, (struct ent){.path = "dev/null", .type = AE_IFCHR, .perm = 0666});
	put(a, (struct ent){.path = "dev/fifo", .type = AE_IFIFO, .perm = 0644});
	put(a, (struct ent){.path = "owned",
			    .type = AE_IFREG,
			    .data = "x",
			    .uid = 1234,
			    .gid = 5678,
			    .mtime = 1600000000});
	layer_close(a, b);
}

static inline void layer2(struct blob *b)
{
	struct archive *a = layer_open(b, false);
	DIR_("etc");
	FILE_("etc/.wh.gone", "");
	DIR_("opq");
	FILE_("opq/.wh..wh..opq", "");
	FILE_("opq/upper", "from layer 2\n");
	FILE_("new", "new in layer 2\n");
	layer_close(a, b);
}

/* A layer of one file of `size` bytes of `seed` (distinct per seed). */
static inline void layer_sized(struct blob *b, const char *seed, size_t size)
{
	struct archive *a = layer_open(b, false);
	put(a, (struct ent){.path = "data", .type = AE_IFREG, .data = seed, .len = size});
	layer_close(a, b);
}

/* ---- images: files of an OCI layout or docker archive ---- */

#define MAXF 16
struct img {
	size_t n;
	char *path[MAXF];
	unsigned char *data[MAXF];
	size_t len[MAXF];
};

static inline void img_add(struct img *im, const char *path, const void *data, size_t len)
{
	assert_true(im->n < MAXF);
	im->path[im->n] = strdup(path);
	im->data[im->n] = malloc(len ? len : 1);
	memcpy(im->data[im->n], data, len);
	im->len[im->n++] = len;
}

static inline void img_free(struct img *im)
{
	for (size_t i = 0; i < im->n; i++) {
		free(im->path[i]);
		free(im->data[i]);
	}
	im->n = 0;
}

/* Add data as blobs/sha256/<hex>; hex out. */
static inline void img_blob(struct img *im, const void *data, size_t len, char hex[65])
{
	struct blob b = {.data = (unsigned char *)data, .len = len};
	blob_hash(&b);
	char path[100];
	snprintf(path, sizeof path, "blobs/sha256/%s", b.hex);
	img_add(im, path, data, len);
	memcpy(hex, b.hex, 65);
}

static inline void img_add_json(struct img *im, const char *path, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT);
	img_add(im, path, s, strlen(s));
	free(s);
	json_decref(j);
}

static inline json_t *config_json(struct blob *l, size_t n)
{
	json_t *ids = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(ids, json_sprintf("sha256:%s", l[i].hex));
	return json_pack("{s:s, s:s, s:{s:[s,s], s:s, s:s}, s:{s:s, s:o}}", "architecture", "amd64",
			 "os", "linux", "config", "Env", "PATH=/usr/bin", "FOO=bar", "WorkingDir",
			 "/work", "User", "1000:1000", "rootfs", "type", "layers", "diff_ids", ids);
}

static inline json_t *descriptor(const char *mt, const char *hex, size_t size)
{
	return json_pack("{s:s, s:s+, s:I}", "mediaType", mt, "digest", "sha256:", hex, "size",
			 (json_int_t)size);
}

/* An OCI layout of layers l[0..n) (bottom first); config hex out.
 * bad_layer: the manifest names layer 0 by a wrong digest whose blob holds l[0]. */
static inline void oci_image(struct img *im, struct blob *l, size_t n, char cfg_hex[65],
			     bool bad_layer)
{
	json_t *layers = json_array();
	for (size_t i = 0; i < n; i++) {
		char hex[65];
		img_blob(im, l[i].data, l[i].len, hex);
		if (i == 0 && bad_layer) {
			memcpy(hex,
			       "0000000000000000000000000000000000000000000000000000000000000000",
			       64);
			char path[100];
			snprintf(path, sizeof path, "blobs/sha256/%s", hex);
			img_add(im, path, l[i].data, l[i].len);
		}
		json_array_append_new(
		    layers, descriptor(l[i].gz ? "application/vnd.oci.image.layer.v1.tar+gzip"
					       : "application/vnd.oci.image.layer.v1.tar",
				       hex, l[i].len));
	}
	json_t *cj = config_json(l, n);
	char *cfg = json_dumps(cj, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(cj);
	img_blob(im, cfg, strlen(cfg), cfg_hex);
	json_t *m =
	    json_pack("{s:i, s:s, s:o, s:o}", "schemaVersion", 2, "mediaType",
		      "application/vnd.oci.image.manifest.v1+json", "config",
		      descriptor("application/vnd.oci.image.config.v1+json", cfg_hex, strlen(cfg)),
		      "layers", layers);
	free(cfg);
	char *ms = json_dumps(m, JSON_COMPACT);
	json_decref(m);
	char mhex[65];
	img_blob(im, ms, strlen(ms), mhex);
	img_add_json(
	    im, "index.json",
	    json_pack("{s:i, s:[o]}", "schemaVersion", 2, "manifests",
		      descriptor("application/vnd.oci.image.manifest.v1+json", mhex, strlen(ms))));
	free(ms);
	img_add_json(im, "oci-layout", json_pack("{s:s}", "imageLayoutVersion", "1.0.0"));
}

static inline void img_write_tar(struct img *im, const char *path)
{
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
	for (size_t i = 0; i < im->n; i++) {
		struct archive_entry *x = archive_entry_new();
		archive_entry_set_pathname(x, im->path[i]);
		archive_entry_set_filetype(x, AE_IFREG);
		archive_entry_set_perm(x, 0644);
		archive_entry_set_size(x, (la_int64_t)im->len[i]);
		assert_int_equal(archive_write_header(a, x), ARCHIVE_OK);
		assert_int_equal(archive_write_data(a, im->data[i], im->len[i]),
				 (la_ssize_t)im->len[i]);
		archive_entry_free(x);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

static inline void img_write_dir(struct img *im, const char *dir)
{
	char path[PATH_MAX];
	mkdir(dir, 0755);
	for (size_t i = 0; i < im->n; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, im->path[i]);
		for (char *s = path + strlen(dir) + 1; (s = strchr(s, '/')); s++) {
			*s = '\0';
			mkdir(path, 0755);
			*s = '/';
		}
		FILE *fp = fopen(path, "w");
		assert_non_null(fp);
		assert_int_equal(fwrite(im->data[i], 1, im->len[i], fp), im->len[i]);
		fclose(fp);
	}
}

/* The two-layer OCI image of layer1 and layer2 as a tar at dir/<file>; config hex out. */
static inline void make_oci_tar(const char *dir, const char *file, char *tar, size_t cap,
				char cfg[65])
{
	struct blob l[2];
	struct img im = {0};
	layer1(&l[0]);
	layer2(&l[1]);
	oci_image(&im, l, 2, cfg, false);
	snprintf(tar, cap, "%s/%s", dir, file);
	img_write_tar(&im, tar);
	img_free(&im);
	free(l[0].data);
	free(l[1].data);
}

#endif
