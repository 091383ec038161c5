/* files.h — the files API's work on a session's disk (docs/protocol.md
 * "Files"): list a directory, read a file (capped, ranged), write one
 * atomically, remove one, under /workspace or /home/agent.
 *
 * Everything runs on a worker (files_run) on copies; nothing touches a
 * struct session.  The host side of those dirs is DATA/sessions/<id>/disk/
 * {workspace,home}, which the sandbox writes: every name below them is
 * resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV) from a dirfd of that dir, so a
 * symlink anywhere on the path is refused (never followed), ".." cannot
 * climb out, and no other mount is crossed.  The disk lock (jobs.h) is held
 * for the whole operation; while the session sleeps its disk is attached
 * for the operation alone (read-only for a read) and detached after: the
 * session is never woken. */
#ifndef CORTEX_FILES_H
#define CORTEX_FILES_H

#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "cx.h"

enum files_op { FILES_GET, FILES_PUT, FILES_DELETE };

#define FILES_PATH_MAX 1024 /* a path as asked, bytes */

struct files_job {
	/* in (copies) */
	enum files_op op;
	char dir[4096];            /* DATA/sessions/<id> */
	char path[FILES_PATH_MAX]; /* as asked, checked by files_path_ok */
	uid_t uid;                 /* the session's uid (= gid): owner of what a write makes */
	uint64_t max_read;         /* bytes of one read reply */
	unsigned max_entries;      /* entries of one listing */
	int ranged;                /* a Range: bytes=first-last (last UINT64_MAX = to the end) */
	int suffix;                /* bytes=-n: the last `first` bytes */
	uint64_t first, last;
	char *data;                /* PUT body (owned) */
	size_t len;
	int recursive;             /* DELETE a dir with what it holds */
	/* out */
	int status;                /* the HTTP status */
	const char *code;          /* error code when status >= 400 */
	cx_err err;                /* its message */
	json_t *json;              /* listing or write result (owned) */
	char *bytes;               /* file bytes (owned) */
	size_t nbytes;
	uint64_t off, size;        /* a 206's range start; the file's size */
	int attached;              /* the disk was attached for this operation (the session slept) */
	double ms;
};

/* A path the API accepts: /workspace or /home/agent, or below them, each
 * component non-empty and neither "." nor ".." (a trailing / is fine).
 * 0, or -1 with a message in err. */
int files_path_ok(const char *path, cx_err *err);
/* A Range header value into j (ranged, suffix, first, last): "bytes=a-b",
 * "bytes=a-", "bytes=-n".  0, or -1 (unsupported or malformed: 416). */
int files_parse_range(const char *v, struct files_job *j);
void files_run(struct files_job *j);
/* openat2 below dirfd with O_NOFOLLOW|O_CLOEXEC and RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV. */
int files_open_beneath(int dirfd, const char *rel, uint64_t flags);
/* O_PATH fd of DATA/sessions/<id>/disk/{workspace,home} as mounted now
 * (disk/ is root's 0711 and so are its names), or -1 with errno.  Blocking. */
int files_open_root(const char *dir, int home);
/* Frees what j owns (data, bytes, json), not j. */
void files_job_clear(struct files_job *j);

#endif
