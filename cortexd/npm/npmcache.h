/* npmcache.h — MCP server packages from npm, installed once per host.
 *
 * Each package version lives in a content-addressed dir
 *     ROOT/<key>/          key = sha256hex("name@version" "\0" "node<major>")
 *         node_modules/<name>/...   node_modules/.bin/<bins>
 * installed by `npm install --prefix ROOT/.tmp-<key>-<rand> --ignore-scripts
 * --no-audit --no-fund --omit=dev name@version` run as the sandbox uid (never
 * root), then renamed into place, so a dir under ROOT/<key> is always complete.
 * A sandbox gets ROOT/<key> bind-mounted read-only (see sandbox_mount_ro) and
 * node_modules/.bin on its PATH.
 *
 * The store records one row per package, key "npm/<key>", value
 *   {"name","version","node_major","bytes","use_count","last_used_at","bins":{"bin":"rel/path"}}.
 * Past the size budget, least-recently-used packages not in use are evicted.
 *
 * Threads: every function here is for the service thread.  Installs run on
 * their own threads (at most NPMCACHE_PARALLEL at once, more are queued) and
 * report back on the service thread via work_submit(NULL, done, ...).
 * Concurrent requests for one package share one install. */
#ifndef CORTEX_NPMCACHE_H
#define CORTEX_NPMCACHE_H

#include <stdint.h>
#include <sys/types.h>

#include "cx.h"
#include "npmspec.h"
#include "store.h"

#define NPMCACHE_PARALLEL 2

typedef struct npm_pkg {
	char key[65];                 /* sha256 hex */
	char name[NPM_NAME_MAX + 1];
	char version[NPM_VERSION_MAX + 1];
	char dir[4096];               /* host path ROOT/<key> */
	char bin[128];                /* the package's main bin name ("" if none):
	                                 the only bin, else the one named like the
	                                 unscoped package name, else the first */
	uint64_t bytes;
	int64_t use_count, last_used_at;
} npm_pkg;

typedef struct npmcache_stats {
	uint64_t npm_runs;        /* npm processes started (ever, this process) */
	uint64_t installs_ok, installs_failed;
	uint64_t hits;            /* npmcache_ensure() found it installed */
	uint64_t joins;           /* npmcache_ensure() joined an install under way */
	uint64_t evictions;
	uint64_t bytes;           /* on disk now */
} npmcache_stats;

/* Called on the service thread when an install finishes: ok != 0 and pkg set,
 * or ok == 0 and a reason in msg. */
typedef void (*npm_ready_fn)(void *arg, const npm_pkg *pkg, int ok, const char *msg);

/* root: host dir (created 0755); npm: path of the npm binary ("npm" = PATH);
 * uid/gid: who runs npm; budget: bytes (0 = unlimited).  Loads the store rows
 * and drops rows whose dir is gone (and dirs with no row). */
int npmcache_init(store *st, const char *root, const char *npm, uid_t uid, gid_t gid,
		  uint64_t budget, cx_err *err);
/* Aborts running installs (their npm is killed) and drops the callbacks of
 * every unfinished install: the daemon is going away.  Call it before
 * work_stop() and store_close(). */
void npmcache_shutdown(void);

/* The installed package, or NULL (not installed, or spec invalid).  Valid
 * until the package is evicted (never while pinned) or the cache shuts down. */
const npm_pkg *npmcache_lookup(const char *spec);

/* Make sure spec is installed.  Returns 1 (installed: *out set, no callback),
 * 0 (install started or joined: cb(arg, ...) runs later, exactly once), or -1
 * (invalid spec or cannot start: err set, no callback). */
int npmcache_ensure(const char *spec, npm_ready_fn cb, void *arg, const npm_pkg **out, cx_err *err);

/* A session starts using these packages: use_count++ and last_used_at = now
 * (persisted off the service thread).  Pinned packages are never evicted
 * while pinned; npmcache_unpin() when the session stops using them. */
void npmcache_pin(const char *key);
void npmcache_unpin(const char *key);

void npmcache_get_stats(npmcache_stats *out);

/* The node major version the keys are computed with (from `node --version`, read once). */
int npmcache_node_major(void);

#endif
