/* imgstore_int.h — what imgstore.c (import, lookups, pins) and imggc.c
 * (eviction, sweep) share.  Internal to container/. */
#ifndef CORTEX_IMGSTORE_INT_H
#define CORTEX_IMGSTORE_INT_H

#include <dirent.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "imgstore.h"

struct pin {
	struct pin *next;
	char name[65];
	size_t n;
	char (*hex)[65]; /* the layers the pinned image had */
};

struct imgstore {
	char *dir; /* realpath of the store dir */
	int dir_fd, layers_fd, images_fd, tmp_fd;
	uint64_t budget;
	pthread_mutex_t mu;
	struct pin *pins; /* under mu */
};

/* One images/<name>.json as read by img_scan. */
struct rec {
	char name[65];
	json_t *j;
	int64_t last_used;
	bool gone; /* evicted by this gc */
};

/* [a-z0-9][a-z0-9._-]{0,63}, else EINVAL (err may be NULL). */
int img_check_name(const char *n, cx_err *err);
/* images/<name>.json parsed into *out; *ino (may be NULL) its inode. */
int img_read_image(struct imgstore *st, const char *name, json_t **out, ino_t *ino, cx_err *err);
/* Every readable images/<name>.json (unreadable ones are skipped); call under st->mu. */
int img_scan(struct imgstore *st, struct rec **out, size_t *n, cx_err *err);
void img_recs_free(struct rec *r, size_t n);
/* Size of layer hex as recorded by any of the images, else UINT64_MAX. */
uint64_t img_recs_layer_size(const struct rec *r, size_t n, const char *hex);
/* Under st->mu: is name pinned / is layer hex held by a pin? */
bool img_is_pinned(struct imgstore *st, const char *name);
bool img_hex_pinned(struct imgstore *st, const char *hex);
bool img_is_hex64(const char *s);
/* A DIR of dirfd from its start (a dup shares the offset of the last walk). */
DIR *img_dir_walk(int dirfd);
/* Regular-file bytes below path, hardlinked files once (what unpack_stats.bytes counts). */
uint64_t img_tree_size(const char *path);
/* Evict LRU unpinned images (never `protect`) until within budget; sweep
 * unreferenced layers when always_sweep or something was evicted.  Takes st->mu. */
int img_gc_run(struct imgstore *st, const char *protect, bool always_sweep, uint64_t *freed,
	       cx_err *err);

#endif
