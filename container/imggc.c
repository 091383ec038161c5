/* imggc.c — the image store's eviction: least-recently-used unpinned images
 * until the layers they hold fit the budget, then a sweep of layer dirs no
 * image names and no pin holds (moved to tmp/ under the lock, removed after).
 * The sweep runs only with the store's flock taken exclusive without waiting:
 * an import in progress (any process) holds it shared, and its layers are
 * swept at a later gc if it never writes its image. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "imgstore_int.h"


/* ---- gc ---- */

struct ref {
	const char *hex; /* not owned */
	uint64_t size;
};

static int by_hex(const void *a, const void *b)
{
	return strcmp(((const struct ref *)a)->hex, ((const struct ref *)b)->hex);
}

/* Bytes of the distinct layers that remaining images and pins hold. */
static uint64_t held_bytes(struct imgstore *st, struct rec *r, size_t n)
{
	size_t cap = 0, m = 0;
	for (size_t i = 0; i < n; i++)
		cap += json_array_size(json_object_get(r[i].j, "layers"));
	for (struct pin *p = st->pins; p; p = p->next)
		cap += p->n;
	struct ref *refs = calloc(cap ? cap : 1, sizeof *refs);
	if (!refs)
		return UINT64_MAX;
	for (size_t i = 0; i < n; i++) {
		json_t *l = json_object_get(r[i].j, "layers"),
		       *sz = json_object_get(r[i].j, "layer_sizes"), *v;
		size_t k;
		if (r[i].gone)
			continue;
		json_array_foreach(l, k, v) refs[m++] =
		    (struct ref){json_string_value(v) ?: "",
				 (uint64_t)json_integer_value(json_array_get(sz, k))};
	}
	for (struct pin *p = st->pins; p; p = p->next)
		for (size_t k = 0; k < p->n; k++) {
			uint64_t s = img_recs_layer_size(r, n, p->hex[k]);
			refs[m++] = (struct ref){p->hex[k], s == UINT64_MAX ? 0 : s};
		}
	qsort(refs, m, sizeof *refs, by_hex);
	uint64_t total = 0;
	for (size_t k = 0; k < m; k++)
		if (k == 0 || strcmp(refs[k].hex, refs[k - 1].hex))
			total += refs[k].size;
	free(refs);
	return total;
}

static bool live_ref(struct rec *r, size_t n, const char *hex)
{
	for (size_t i = 0; i < n; i++) {
		json_t *l = json_object_get(r[i].j, "layers"), *v;
		size_t k;
		if (r[i].gone)
			continue;
		json_array_foreach(l, k,
				   v) if (!strcmp(json_string_value(v) ?: "", hex)) return true;
	}
	return false;
}

static int by_lru(const void *a, const void *b)
{
	const struct rec *x = a, *y = b;
	if (x->last_used != y->last_used)
		return x->last_used < y->last_used ? -1 : 1;
	return strcmp(x->name, y->name);
}

struct trash {
	char path[PATH_MAX];
	uint64_t size; /* UINT64_MAX: measure before removing */
};

/* Under st->mu: evict images, move unreferenced layers to tmp/ (into *tr). */
static int gc_locked(struct imgstore *st, const char *protect, bool always_sweep, struct trash **tr,
		     size_t *ntr, cx_err *err)
{
	struct rec *r;
	size_t n;
	if (img_scan(st, &r, &n, err) < 0)
		return -1;
	if (n)
		qsort(r, n, sizeof *r, by_lru);
	bool sweep = always_sweep;
	while (st->budget && held_bytes(st, r, n) > st->budget) {
		size_t v = 0;
		while (v < n && (r[v].gone || img_is_pinned(st, r[v].name) ||
				 (protect && !strcmp(r[v].name, protect))))
			v++;
		if (v == n)
			break; /* all that is left is in use */
		char rel[80];
		snprintf(rel, sizeof rel, "%s.json", r[v].name);
		if (unlinkat(st->images_fd, rel, 0) < 0 && errno != ENOENT)
			break;
		r[v].gone = sweep = true;
	}
	int lock = sweep ? openat(st->dir_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
	DIR *d = NULL;
	if (lock >= 0 && flock(lock, LOCK_EX | LOCK_NB) == 0)
		d = img_dir_walk(st->layers_fd); /* else an import runs: sweep next time */
	size_t cap = 0;
	for (struct dirent *e; d && (e = readdir(d));) {
		if (!img_is_hex64(e->d_name) || live_ref(r, n, e->d_name) ||
		    img_hex_pinned(st, e->d_name))
			continue;
		if (*ntr == cap) {
			cap = cap ? 2 * cap : 8;
			struct trash *g = realloc(*tr, cap * sizeof **tr);
			if (!g)
				break;
			*tr = g;
		}
		struct trash *t = &(*tr)[*ntr];
		char rnd[17];
		cx_random_hex(rnd, 8);
		snprintf(t->path, sizeof t->path, "%s/tmp/%d.%s", st->dir, (int)getpid(), rnd);
		if (renameat(st->layers_fd, e->d_name, AT_FDCWD, t->path) < 0)
			continue;
		t->size = img_recs_layer_size(r, n, e->d_name);
		(*ntr)++;
	}
	if (d)
		closedir(d);
	if (lock >= 0)
		close(lock);
	img_recs_free(r, n);
	return 0;
}

int img_gc_run(struct imgstore *st, const char *protect, bool always_sweep, uint64_t *freed,
	       cx_err *err)
{
	struct trash *tr = NULL;
	size_t ntr = 0;
	uint64_t total = 0;
	pthread_mutex_lock(&st->mu);
	int rc = gc_locked(st, protect, always_sweep, &tr, &ntr, err);
	pthread_mutex_unlock(&st->mu);
	for (size_t k = 0; k < ntr; k++) { /* outside the lock: removing trees takes time */
		total += tr[k].size != UINT64_MAX ? tr[k].size : img_tree_size(tr[k].path);
		cx_rm_rf(tr[k].path);
	}
	free(tr);
	if (freed)
		*freed = total;
	return rc < 0 ? cx_err_wrap(err, "gc") : 0;
}

int imgstore_gc(struct imgstore *st, uint64_t *freed, cx_err *err)
{
	return img_gc_run(st, NULL, true, freed, err);
}
