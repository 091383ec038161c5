/* imgstore.h — Cortex's own image store: OCI / docker-archive images unpacked
 * once into content-addressed layer dirs under <dir>, shared by every sandbox
 * that runs on them (as overlay lower dirs), evicted least-recently-used past
 * a byte budget.
 *
 * Layout under dir (root-only, 0700):
 *   layers/<sha256-hex>/   one unpacked layer (overlay-ready: whiteouts are
 *                          0:0 char devices, opaque dirs carry the xattr
 *                          trusted.overlay.opaque=y), made in tmp/ then renamed
 *   images/<name>.json     name -> {digest, layers[] (hex, bottom first),
 *                          layer_sizes[], env[], workdir, user, size, created
 *                          (unix s), last_used (unix ms)}
 *   tmp/<pid>.<random>     staging; what dead processes left is removed at open
 *   lock                   flock: imports hold it shared, gc's sweep exclusive
 *
 * Unpacking (libarchive): refuses absolute paths, "..", and entries whose
 * parent is a symlink (the import fails with EPERM and a message naming the
 * entry, nothing stored); skips device nodes and fifos (counted); strips
 * setuid/setgid bits; hardlinks must point to a regular file of the same layer.
 * Every blob's sha256 is checked against its digest (EINVAL on mismatch).
 *
 * Thread-safe: one mutex around the metadata; unpacking runs outside it.
 * Several processes may share a dir (renames are atomic); eviction only
 * removes layers no image names and no open pin holds in this process.
 * docs/images.md has the details and limits.
 * Errors follow cx.h. */
#ifndef CORTEX_IMGSTORE_H
#define CORTEX_IMGSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "cx.h"

struct imgstore;

struct image_info {
	char name[128];
	char digest[72];      /* "sha256:<hex>" of the image config (the image id) */
	size_t n_layers;
	char **layers;        /* absolute host dirs, BOTTOM first (overlay wants top first: reverse) */
	char **env;           /* config Env, NULL-terminated, "K=V" */
	char workdir[1024];   /* config WorkingDir, "" if unset */
	char user[256];       /* config User, "" if unset */
	uint64_t size;        /* bytes unpacked */
	int64_t created;      /* unix seconds it was stored */
	int64_t last_used_ms; /* unix ms of the last import or pin (the LRU key) */
};

/* Name: [a-z0-9][a-z0-9._-]{0,63}.  budget 0 = unlimited. */
int imgstore_open(struct imgstore **out, const char *dir, uint64_t budget_bytes, cx_err *err);
void imgstore_close(struct imgstore *st);

/* Import an image from a tar (OCI image layout or `docker save` archive,
 * told apart by index.json / manifest.json) or from an OCI layout dir.
 * Replaces an image of the same name atomically.  progress (may be NULL) is
 * called with a short line per layer ("layer 2/5 sha256:ab.. 12.3 MB"). */
typedef void (*imgstore_progress_fn)(void *arg, const char *line);
int imgstore_import_tar(struct imgstore *st, const char *name, const char *tar_path,
			imgstore_progress_fn progress, void *arg, cx_err *err);
int imgstore_import_dir(struct imgstore *st, const char *name, const char *oci_dir,
			imgstore_progress_fn progress, void *arg, cx_err *err);

/* Look up; *out freed with image_info_free.  Unknown name: ENOENT.
 * imgstore_pin also marks the image used (LRU; while this process already
 * pins it, at most once a minute) and keeps its layers from eviction until
 * imgstore_unpin(name). */
int imgstore_get(struct imgstore *st, const char *name, struct image_info **out, cx_err *err);
/* 0 when the name has a record (not read: a cheap check for the service
 * thread), else -1 (ENOENT: not in the store). */
int imgstore_has(struct imgstore *st, const char *name, cx_err *err);
int imgstore_pin(struct imgstore *st, const char *name, struct image_info **out, cx_err *err);
void imgstore_unpin(struct imgstore *st, const char *name);
void image_info_free(struct image_info *i);

/* All images, sorted by name; *out is an array of n pointers. */
int imgstore_list(struct imgstore *st, struct image_info ***out, size_t *n, cx_err *err);
void image_info_list_free(struct image_info **l, size_t n);

/* Remove the name (its layers go at the next gc unless shared). Pinned: EBUSY. */
int imgstore_delete(struct imgstore *st, const char *name, cx_err *err);
/* Evict least-recently-used unpinned images, then unreferenced layers, until
 * the store is within budget.  Returns bytes freed in *freed (may be NULL). */
int imgstore_gc(struct imgstore *st, uint64_t *freed, cx_err *err);

#endif
