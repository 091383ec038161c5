/* npmindex.c — the installed packages: one entry in memory and one store row
 * "npm/<key>" per dir ROOT/<key>, least recently used evicted past the budget.
 * A row never names a missing or partial dir: a dir is complete before its
 * row is written, and a row is deleted before its dir goes. */
#include "npm-internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "pkgjson.h"
#include "work.h"

void npm_index_key(const char *name, const char *version, int major, char out[65])
{
	char buf[NPM_NAME_MAX + NPM_VERSION_MAX + 32];
	int n = snprintf(buf, sizeof buf, "%s@%s%cnode%d", name, version, '\0', major);
	unsigned char h[crypto_hash_sha256_BYTES];
	crypto_hash_sha256(h, (const unsigned char *)buf, (unsigned long long)n);
	sodium_bin2hex(out, 65, h, sizeof h);
}

static int is_key(const char *s)
{
	size_t i = 0;
	for (; s[i]; i++)
		if (i >= 64 || !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return i == 64;
}

struct entry *npm_index_find(const char *key)
{
	for (struct entry *e = npm_g.pkgs; e; e = e->next)
		if (!strcmp(e->pkg.key, key))
			return e;
	return NULL;
}

void npm_index_add(struct entry *e)
{
	e->next = npm_g.pkgs;
	npm_g.pkgs = e;
	npm_g.bytes += e->pkg.bytes;
}

void npm_index_entry_free(struct entry *e)
{
	if (e) {
		json_decref(e->bins);
		free(e);
	}
}

static void entry_remove(struct entry *e)
{
	for (struct entry **pp = &npm_g.pkgs; *pp; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	npm_g.bytes -= e->pkg.bytes;
	npm_index_entry_free(e);
}

void npm_index_free(void)
{
	while (npm_g.pkgs) {
		struct entry *e = npm_g.pkgs;
		npm_g.pkgs = e->next;
		npm_index_entry_free(e);
	}
}

/* ---- dirs ---- */

static void rm_job(void *arg)
{
	char *path = arg;
	if (cx_rm_rf(path) < 0)
		log_warn("npm cache: removing %s: %s", path, strerror(errno));
	free(path);
}

/* Renamed first: a half-removed tree never keeps its key name. */
int npm_index_retire_dir(const char *root, const char *dir, const char *key, int sync, cx_err *err)
{
	char rnd[17], aside[ROOT_MAX + 100];
	cx_random_hex(rnd, 8);
	snprintf(aside, sizeof aside, "%s/.tmp-evict-%s-%s", root, key, rnd);
	if (rename(dir, aside) < 0)
		return cx_err_set(err, errno, "rename %s", dir);
	char *copy = sync ? NULL : strdup(aside);
	if (copy)
		work_submit(rm_job, NULL, copy);
	else if (cx_rm_rf(aside) < 0)
		log_warn("npm cache: removing %s: %s", aside, strerror(errno));
	return 0;
}

/* ---- rows ---- */

static char *row_dump(const struct entry *e)
{
	json_t *o = json_pack("{s:s,s:s,s:i,s:I,s:I,s:I,s:O}", "name", e->pkg.name, "version",
			      e->pkg.version, "node_major", e->node_major, "bytes",
			      (json_int_t)e->pkg.bytes, "use_count", (json_int_t)e->pkg.use_count,
			      "last_used_at", (json_int_t)e->pkg.last_used_at, "bins", e->bins);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return s;
}

int npm_index_row_put(store *st, const struct entry *e, cx_err *err)
{
	cleanup_free char *val = row_dump(e);
	if (!val)
		return cx_err_set(err, ENOMEM, "npm cache: encoding row");
	char rowkey[sizeof ROW_PREFIX + 64];
	snprintf(rowkey, sizeof rowkey, ROW_PREFIX "%s", e->pkg.key);
	return store_put(st, rowkey, val, strlen(val), err);
}

struct row_write {
	store *st; /* not owned */
	unsigned gen;
	char key[65];
	char *val;
};

static void row_write_run(void *arg)
{
	struct row_write *w = arg;
	cx_err err = CX_ERR_INIT;
	char rowkey[sizeof ROW_PREFIX + 64];
	snprintf(rowkey, sizeof rowkey, ROW_PREFIX "%s", w->key);
	if (!w->val) { /* an eviction */
		if (store_delete(w->st, rowkey, &err) == -1)
			log_warn("npm cache: evicting %s: %s", w->key, err.msg);
	} else if (store_put(w->st, rowkey, w->val, strlen(w->val), &err) < 0) {
		log_warn("npm cache: recording use of %s: %s", w->key, err.msg);
	}
}

static void row_write_done(void *arg)
{
	struct row_write *w = arg;
	struct entry *e = npm_g.initialized && w->gen == npm_gen ? npm_index_find(w->key) : NULL;
	free(w->val);
	free(w);
	if (!e)
		return;
	e->writing = 0;
	if (e->dirty) {
		e->dirty = 0;
		npm_index_row_write_async(e);
	}
}

/* On a worker: a SQLite commit waits for the disk.  One write per package at
 * a time, so an older value never lands after a newer one; changes meanwhile
 * are coalesced into the next write.  (A change still dirty at shutdown is
 * lost: it is only use_count and last_used_at.) */
void npm_index_row_write_async(struct entry *e)
{
	if (e->writing) {
		e->dirty = 1;
		return;
	}
	struct row_write *w = calloc(1, sizeof *w);
	char *val = row_dump(e);
	if (!w || !val) {
		free(w);
		free(val);
		log_warn("npm cache: recording use of %s: out of memory", e->pkg.key);
		return;
	}
	w->st = npm_g.conf.st;
	w->gen = npm_gen;
	memcpy(w->key, e->pkg.key, sizeof w->key);
	w->val = val;
	e->writing = 1;
	work_submit(row_write_run, row_write_done, w);
}

/* ---- eviction ---- */

/* The dir first (a rename: no disk wait), then the row on a worker (a
 * commit waits for the disk).  Either left behind alone is cleared at the
 * next init: a rowless dir, or a row whose dir is gone. */
static int evict(struct entry *e)
{
	cx_err err = CX_ERR_INIT;
	struct row_write *w = calloc(1, sizeof *w);
	if (!w) {
		log_warn("npm cache: evicting %s@%s: out of memory", e->pkg.name, e->pkg.version);
		return -1;
	}
	if (npm_index_retire_dir(npm_g.conf.root, e->pkg.dir, e->pkg.key, 0, &err) < 0)
		log_warn("npm cache: evicting %s@%s: %s", e->pkg.name, e->pkg.version, err.msg);
	w->st = npm_g.conf.st;
	w->gen = npm_gen;
	memcpy(w->key, e->pkg.key, sizeof w->key);
	work_submit(row_write_run, row_write_done, w);
	log_info("npm: evicted %s@%s (%llu bytes, used %lld times)", e->pkg.name, e->pkg.version,
		 (unsigned long long)e->pkg.bytes, (long long)e->pkg.use_count);
	npm_stats.evictions++;
	entry_remove(e);
	return 0;
}

/* Least recently used first; never a pinned package, one with a row write
 * still queued, or keep (just installed, its waiters are about to use it). */
void npm_index_evict_over_budget(const struct entry *keep)
{
	while (npm_g.conf.budget && npm_g.bytes > npm_g.conf.budget) {
		struct entry *victim = NULL;
		for (struct entry *e = npm_g.pkgs; e; e = e->next)
			if (e != keep && !e->pins && !e->writing &&
			    (!victim || e->pkg.last_used_at < victim->pkg.last_used_at))
				victim = e;
		if (!victim) {
			log_warn(
			    "npm cache: %llu bytes, over the budget of %llu, nothing evictable",
			    (unsigned long long)npm_g.bytes, (unsigned long long)npm_g.conf.budget);
			return;
		}
		if (evict(victim) < 0)
			return;
	}
}

/* ---- loading at init ---- */

/* A row -> an entry, or NULL with the reason in why. */
static struct entry *entry_from_row(const char *key, const char *val, size_t len, char *why,
				    size_t why_cap)
{
	json_error_t jerr;
	json_t *o = json_loadb(val, len, 0, &jerr);
	const char *name = NULL, *version = NULL;
	json_int_t major = -1, bytes = -1, use_count = 0, last = 0;
	json_t *bins = NULL;
	struct entry *e = NULL;
	if (!o ||
	    json_unpack_ex(o, &jerr, 0, "{s:s,s:s,s:I,s:I,s?I,s?I,s:o}", "name", &name, "version",
			   &version, "node_major", &major, "bytes", &bytes, "use_count", &use_count,
			   "last_used_at", &last, "bins", &bins) < 0) {
		snprintf(why, why_cap, "malformed: %s", jerr.text);
		goto out;
	}
	char spec[NPM_NAME_MAX + NPM_VERSION_MAX + 2], n[NPM_NAME_MAX + 1], v[NPM_VERSION_MAX + 1];
	char k[65];
	snprintf(spec, sizeof spec, "%s@%s", name, version);
	if (npm_spec_parse(spec, n, v, why, why_cap) < 0)
		goto out;
	if (major < 0 || major > 10000 || bytes < 0 || !json_is_object(bins)) {
		snprintf(why, why_cap, "malformed");
		goto out;
	}
	npm_index_key(n, v, (int)major, k);
	if (strcmp(k, key)) {
		snprintf(why, why_cap, "key does not match %s", spec);
		goto out;
	}
	e = calloc(1, sizeof *e);
	if (!e) {
		snprintf(why, why_cap, "out of memory");
		goto out;
	}
	memcpy(e->pkg.key, key, sizeof e->pkg.key);
	snprintf(e->pkg.name, sizeof e->pkg.name, "%s", n);
	snprintf(e->pkg.version, sizeof e->pkg.version, "%s", v);
	snprintf(e->pkg.dir, sizeof e->pkg.dir, "%s/%s", npm_g.conf.root, key);
	e->pkg.bytes = (uint64_t)bytes;
	e->pkg.use_count = use_count;
	e->pkg.last_used_at = last;
	e->node_major = (int)major;
	e->bins = json_incref(bins);
	pkgjson_main_bin(bins, n, e->pkg.bin);
out:
	json_decref(o);
	return e;
}

static void drop_row(const char *rowkey, const char *why)
{
	cx_err err = CX_ERR_INIT;
	log_warn("npm cache: dropping %s: %s", rowkey, why);
	if (store_delete(npm_g.conf.st, rowkey, &err) == -1)
		log_warn("npm cache: dropping %s: %s", rowkey, err.msg);
}

static int load_rows(cx_err *err)
{
	store_kv *kv = NULL;
	size_t n = 0;
	if (store_list(npm_g.conf.st, ROW_PREFIX, 0, &kv, &n, err) < 0)
		return cx_err_wrap(err, "npm cache: loading rows");
	for (size_t i = 0; i < n; i++) {
		const char *key = kv[i].key + strlen(ROW_PREFIX);
		char why[256] = "";
		if (!is_key(key)) {
			drop_row(kv[i].key, "not a package key");
			continue;
		}
		struct entry *e = entry_from_row(key, kv[i].val, kv[i].len, why, sizeof why);
		if (!e) {
			drop_row(kv[i].key, why);
			continue;
		}
		struct stat sb;
		if (lstat(e->pkg.dir, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
			drop_row(kv[i].key, "its dir is gone");
			npm_index_entry_free(e);
			continue;
		}
		npm_index_add(e);
	}
	store_kv_free(kv, n);
	return 0;
}

/* Remove what no row accounts for: leftover .tmp-* and unknown entries. */
static int sweep_root(cx_err *err)
{
	const char *root = npm_g.conf.root;
	int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return cx_err_set(err, e, "open %s", root);
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *nm = de->d_name;
		if (!strcmp(nm, ".") || !strcmp(nm, ".."))
			continue;
		if (nm[0] == '.' ? strncmp(nm, ".tmp-", 5) != 0 : npm_index_find(nm) != NULL)
			continue;
		char path[ROOT_MAX + 300];
		snprintf(path, sizeof path, "%s/%s", root, nm);
		if (nm[0] != '.')
			log_warn("npm cache: removing %s (no store row)", path);
		if (cx_rm_rf(path) < 0)
			log_warn("npm cache: removing %s: %s", path, strerror(errno));
	}
	closedir(d);
	return 0;
}

int npm_index_load(cx_err *err)
{
	if (load_rows(err) < 0)
		return -1;
	return sweep_root(err);
}
