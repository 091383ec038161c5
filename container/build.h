/* build.h — image builds driven by Cortex: a build context tar (Dockerfile +
 * files) is extracted securely into a staging dir, hashed by content, built
 * with buildah in the background (a thread per build + a buildah child, its
 * output in a per-build log), exported as an OCI layout and imported into the
 * image store under the requested name.
 *
 * One build per content hash: a request for a hash already building joins it
 * (same build id); a hash built before is a cache hit (state "done" at once,
 * no buildah run: the kept OCI layout is imported under the name if the store
 * does not already hold that digest there).
 *
 * Layout under cfg.dir (root-only):
 *   stage/<id>/ctx/      the extracted context (removed when the build ends)
 *   stage/<id>/oci/      buildah's export
 *   logs/<id>.log        the build log
 *   cache/<hash>/oci/    OCI layout of a finished build; cache/<hash>/digest
 *
 * Thread-safe (one mutex).  Errors follow cx.h. */
#ifndef CORTEX_BUILD_H
#define CORTEX_BUILD_H

#include <stddef.h>
#include <stdint.h>

#include "cx.h"

struct imgstore;
struct builder;

/* An error a user caused: its message without errno text, its code kept
 * (EINVAL, EFBIG, EAGAIN map to 400, 413, 429 at the edge). */
int build_err(cx_err *err, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

struct builder_config {
	const char *dir;	    /* work dir (see above) */
	const char *base;	    /* --build-arg BASE=<base>, NULL or "" for none */
	const char *buildah;	    /* program, NULL = "buildah" (on PATH) */
	const char *storage_driver; /* NULL/"" = the machine's choice (see driver_file), else
				       buildah's default */
	const char *driver_file;    /* NULL = /var/cache/cortex/images/storage-driver
				       (container/buildah-common.sh) */
	uint64_t max_context;	    /* bytes of the context tar and of its extracted files */
	unsigned max_builds;	    /* concurrent builds (0 = 2) */
	unsigned max_per_user;	    /* concurrent builds one user starts (0 = 1) */
};

enum build_state { BUILD_NONE = 0, BUILD_RUNNING, BUILD_DONE, BUILD_FAILED, BUILD_CANCELED };

struct build_status {
	char id[40];
	enum build_state state;
	int step, steps;  /* from buildah's "STEP n/m:" lines; 0 before the first */
	int cached;	  /* done from the cache, no buildah run */
	int joined;	  /* builder_submit joined a build already running */
	char hash[72];	  /* "sha256:<hex>" of the context */
	char digest[72];  /* the image's digest once imported */
	char error[1024]; /* failed: the reason and the last log lines */
	char log_path[1024];
};

int builder_open(struct builder **out, const struct builder_config *cfg, struct imgstore *st,
		 cx_err *err);
/* Cancels running builds (their children are killed) and joins the threads. */
void builder_close(struct builder *b);

/* Start (or join, or answer from the cache) a build of the context tar at
 * ctx_tar (a file the caller owns; read, not kept) for image name, asked by
 * user (the per-user cap; NULL or "" for none).  Blocking (extracts and hashes): call it from a
 * worker.  Errors: EINVAL bad tar or no Dockerfile, EFBIG context over the
 * cap, EAGAIN too many builds (global or per user). */
int builder_submit(struct builder *b, const char *name, const char *user, const char *ctx_tar,
		   struct build_status *out, cx_err *err);
/* The latest build of name: 0, or CX_NOTFOUND when none was asked. */
int builder_status(struct builder *b, const char *name, struct build_status *out);
/* Stop the running build of name (if it builds for name only; a joined
 * build keeps running for its other names).  Non-blocking. */
void builder_cancel(struct builder *b, const char *name);
const char *build_state_name(enum build_state s);

/* The content hash of an extracted context dir (exposed for tests):
 * sha256 over every entry in byte order of its path: type, path, exec bit,
 * contents or link target — never mtimes or owners. */
int build_hash_dir(const char *dir, const char *extra, char out[72], cx_err *err);
/* Extract a tar into dir (which exists) refusing absolute paths, "..", and
 * writes through symlinks; only files, dirs and symlinks; at most max bytes. */
int build_extract(const char *tar_path, const char *dir, uint64_t max, cx_err *err);

#endif
