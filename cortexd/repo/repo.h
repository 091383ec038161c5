/* repo.h — check a git repository out into a session's workspace.
 *
 * repo_clone() runs the clone in the helper program `cortex-clone`
 * (cortexd/repo/clone_main.c, the only code that links libgit2): forked,
 * given a mount namespace where all but its stage dir is read-only, switched
 * to the session's uid/gid, no_new_privs, parent-death signal, then exec'd
 * with a small environment.  The token reaches it on a pipe
 * (never argv, env or disk); progress and errors come back as fixed-size
 * records on another pipe.  The helper clones into STAGE/<random>, a dir the
 * sandbox cannot see; on success this process (root) moves each top-level
 * entry into the workspace with renameat2(RENAME_NOREPLACE) through dirfds
 * opened O_NOFOLLOW.  On any failure the stage copy is removed and the
 * workspace is left as it was.  Messages name "/workspace", never a host path.
 *
 * Depends on base/ and common/ only.  docs/repo.md has the user-facing view. */
#ifndef CORTEX_REPO_H
#define CORTEX_REPO_H

#include <stdint.h>
#include <sys/types.h>

#include "cx.h"

#define REPO_URL_MAX		2048
#define REPO_REF_MAX		255
#define REPO_TOKEN_MAX		4096
#define REPO_TIMEOUT_S		600 /* when opts.timeout_s is 0 */
#define REPO_CLONE_OPTS_VERSION 1

/* repo_clone_opts.flags */
#define REPO_ALLOW_PRIVATE                                                                         \
	1u /* hosts on loopback, private, link-local networks (tests,                              \
	      on-premises servers); redirects are then followed once                               \
	      when there is no token */

struct repo_progress {
	uint32_t received_objects, total_objects, indexed_objects;
	uint64_t received_bytes;
	const char *phase; /* "cloning" | "checkout" (static) */
	uint32_t checkout_done, checkout_total;
};

/* Called on the thread that runs repo_clone(), at most every ~100 ms and at
 * each phase change; the last "cloning" report has received == total. */
typedef void (*repo_progress_fn)(void *arg, const struct repo_progress *p);

struct repo_clone_opts {
	unsigned version;  /* REPO_CLONE_OPTS_VERSION */
	const char *url;   /* checked with repo_url_ok() */
	const char *ref;   /* branch, tag or commit sha; NULL = the remote's HEAD */
	const char *token; /* may be NULL; not owned; sent as the basic-auth password */
	uid_t uid;	   /* the session's uid and gid: the clone runs as them */
	gid_t gid;
	const char *stage_dir;	   /* host dir the sandbox cannot see, on the workspace's fs,
				      searchable (x) by uid all the way down */
	const char *workspace_dir; /* host dir bound as the sandbox's /workspace */
	int timeout_s;		   /* whole clone; 0 = REPO_TIMEOUT_S */
	repo_progress_fn progress; /* may be NULL */
	void *arg;
	const char *helper; /* path of cortex-clone; NULL = the one built with cortexd */
	unsigned flags;	    /* REPO_ALLOW_PRIVATE */
	uint64_t max_bytes; /* stop once the server sent more; 0 = no cap (the checked-out
			       files may take more room than the compressed pack) */
};

#define REPO_CLONE_OPTS_INIT                                                                       \
	{                                                                                          \
		.version = REPO_CLONE_OPTS_VERSION                                                 \
	}

/* Blocking (seconds to minutes): call from a worker thread, never the service
 * thread.  It holds that thread for up to timeout_s (with 2 workers, a thread
 * of its own may suit better, as npm installs have).  The helper's
 * parent-death signal fires when the calling *thread* exits: call it from a
 * long-lived thread.  0, or -1 with err set; err->code says what went wrong:
 *   EINVAL       bad url or ref (nothing was started)
 *   EACCES       authentication failed / required, or access denied (HTTP 403)
 *   ENOENT       repository not found, or "ref X not found"
 *   EHOSTUNREACH the server could not be reached (DNS, refused, TLS)
 *   EPERM        the host is on a private network (without REPO_ALLOW_PRIVATE)
 *   EEXIST       /workspace already holds an entry of the repository's
 *   ETIMEDOUT    timed out (the helper was killed)
 *   EFBIG        the server sent more than max_bytes
 *   EIO / other  the helper failed otherwise
 * The workspace is untouched unless 0 is returned. */
int repo_clone(const struct repo_clone_opts *o, cx_err *err);

/* http:// or https:// only, a host, no password in the URL (a user name
 * alone is allowed), no whitespace or control characters, at most
 * REPO_URL_MAX bytes.  0, or -1 with err->code EINVAL and a message for the
 * user. */
int repo_url_ok(const char *url, cx_err *err);

/* A branch, tag or commit name as git allows it (no "..", "@{", control
 * characters, leading '-', ...), at most REPO_REF_MAX bytes.  0 or -1. */
int repo_ref_ok(const char *ref, cx_err *err);

#endif
