/* npm-internal.h — what the files of the npm cache share; not for other parts.
 *
 *   npmcache.c   the public front (npmcache.h): init, lookups, installs queued
 *                or running, their report back on the service thread
 *   npmindex.c   the installed packages: entries, store rows, eviction, ROOT's dirs
 *   npminstall.c one install, on its own thread: temp dir, npm, package.json,
 *                ownership, rename into place, row
 *   npmproc.c    the npm and node processes: environment, fork/exec as the npm uid
 *   pkgjson.c    the package.json reader (pure)
 *
 * State: `npm_g`, owned by the service thread (the installed packages, the
 * installs queued or running).  An install is a `struct install` that goes
 * queued -> running (its own pthread) -> done: the thread's last act is
 * work_submit(NULL, ...), which brings it back to the service thread, where
 * the waiters hear the result.  The install thread touches only its own
 * struct, the npm_conf fixed at init and the store (thread-safe).
 *
 * On disk (ROOT is root-owned, 0755):
 *   ROOT/<key>/           complete packages, one per store row "npm/<key>"
 *   ROOT/.tmp-<key>-<r>/  an install under way, or a package being evicted
 *                         (.tmp-evict-...); removed at init if left by a crash
 *   ROOT/.npm, ROOT/.home npm's cache and HOME, owned by the npm uid; an
 *                         operator may put registry settings in ROOT/.home/.npmrc
 * Once installed, a package's files are chowned to the daemon's uid, so the
 * npm uid can no longer change what every sandbox runs. */
#ifndef CORTEX_NPM_INTERNAL_H
#define CORTEX_NPM_INTERNAL_H

#include <jansson.h>
#include <limits.h>
#include <pthread.h>

#include "npmcache.h"

#define NPM_TIMEOUT_S	     300  /* one npm install, then its process group is killed */
#define NPM_TAIL_MAX	     4096 /* bytes of npm's output kept for the error */
#define ROOT_MAX	     3000 /* leaves room under PATH_MAX for <key>/node_modules/<name>/... */
#define NODE_VERSION_WAIT_MS 10000
#define ENV_MAX		     64 /* variables handed to npm */
#define ROW_PREFIX	     "npm/"

/* Fixed at init, read-only until shutdown: install threads read it unlocked. */
struct npm_conf {
	store *st; /* not owned */
	char root[ROOT_MAX + 1];
	char npm[PATH_MAX];
	char *path_env; /* PATH for finding npm, owned */
	char **envp;	/* npm's environment, owned */
	uid_t uid;
	gid_t gid;
	int drop_ids; /* npm runs as another uid/gid than the daemon */
	uint64_t budget;
	int stop_pipe[2]; /* shutdown writes one byte; install threads poll the read end */
};

struct waiter {
	npm_ready_fn cb;
	void *arg;
	struct waiter *next;
};

/* An installed package. */
struct entry {
	npm_pkg pkg;
	json_t *bins; /* {"bin":"rel/path"}, owned */
	int node_major;
	int pins;
	int writing; /* a row write is on a worker: not evictable until it lands */
	int dirty;   /* changed since that write was made: write again when it lands */
	struct entry *next;
};

struct install {
	/* set before the thread starts, then read-only */
	char key[65];
	char name[NPM_NAME_MAX + 1];
	char version[NPM_VERSION_MAX + 1];
	int node_major;
	unsigned gen;
	const struct npm_conf *conf; /* not owned */
	/* service thread only */
	struct waiter *waiters, **waiters_tail;
	struct install *next;
	pthread_t thread;
	/* written by the install thread, read on the service thread after work_submit */
	int ok, spawned;
	struct entry *result; /* ok: the new package, owned */
	char msg[NPM_TAIL_MAX + 512];
};

struct npm_state {
	int initialized;
	struct npm_conf conf;
	struct entry *pkgs;
	struct install *running;
	struct install *queued, **queued_tail;
	unsigned nrunning;
	uint64_t bytes;
};

extern struct npm_state npm_g;
extern unsigned npm_gen;	 /* bumped at every init: results of an older one are dropped */
extern npmcache_stats npm_stats; /* counters are "ever, this process"; bytes is npm_g.bytes */

/* ---- npmindex.c (service thread unless noted) ---- */
/* sha256hex("name@version" "\0" "node<major>"); any thread. */
void npm_index_key(const char *name, const char *version, int major, char out[65]);
struct entry *npm_index_find(const char *key);
/* Adds e (owned from now on) to the installed packages. */
void npm_index_add(struct entry *e);
void npm_index_entry_free(struct entry *e);
/* Writes e's row now; any thread. */
int npm_index_row_put(store *st, const struct entry *e, cx_err *err);
/* Writes e's row on a worker (use counts). */
void npm_index_row_write_async(struct entry *e);
/* Renames dir out of the way, then removes it: now (sync, any thread) or on a worker. */
int npm_index_retire_dir(const char *root, const char *dir, const char *key, int sync, cx_err *err);
void npm_index_evict_over_budget(const struct entry *keep);
/* Loads the rows, drops those whose dir is gone, removes what no row accounts for. */
int npm_index_load(cx_err *err);
void npm_index_free(void);

/* ---- npminstall.c (install thread) ---- */
/* Installs in->name@version: in->ok and in->result, or in->msg. */
void npm_install_run(struct install *in);

/* ---- npmproc.c (any thread) ---- */
struct npm_tail {
	char buf[NPM_TAIL_MAX + 1];
	size_t len;
};
/* npm's environment (not the daemon's, which holds API keys) into *out. */
int npm_proc_env(const struct npm_conf *c, char ***out, cx_err *err);
void npm_proc_env_free(char **envp);
/* Runs npm install of spec into dir as the npm uid.  0: npm exited and
 * *status says how (its output's end in tail); -1: could not start, timed out
 * or shutting down (err set).  *spawned = 1 once a process was started. */
int npm_proc_install(const struct npm_conf *c, const char *spec, const char *dir,
		     struct npm_tail *tail, int *status, int *spawned, cx_err *err);
/* The tail as text for a message: from a line start, no trailing space. */
const char *npm_proc_tail_text(struct npm_tail *tail);
/* The major version of `node --version`, 0 when it cannot be told. */
int npm_proc_node_major(void);

#endif
