/* repo_proto.h — what repo.c and the cortex-clone helper say to each other;
 * not for other parts.
 *
 *   cortex-clone URL REF DEST [MAX_BYTES]
 *     REF "" = the remote's HEAD.  DEST: an empty dir owned by the caller.
 *     MAX_BYTES: stop once the server has sent more (0 or absent: no cap).
 *     FLAGS: repo.h's REPO_ALLOW_PRIVATE (0 or absent: none).
 *     fd 0: the token (bytes up to EOF, at most REPO_TOKEN_MAX; empty = none)
 *     fd 3: records (struct repo_rec) out; an invalid fd 3 is ignored, so the
 *           helper can be run by hand or by the bench
 *   exit 0 after a REC_DONE record; 1 after a REC_ERROR record.
 *
 * A record is smaller than PIPE_BUF, so each write() lands whole. */
#ifndef CORTEX_REPO_PROTO_H
#define CORTEX_REPO_PROTO_H

#include <stdint.h>

#include "cx.h"

#define REPO_REC_FD 3

enum repo_rec_kind { REC_PROGRESS = 1, REC_ERROR = 2, REC_DONE = 3 };
enum repo_rec_phase { PHASE_CLONING = 0, PHASE_CHECKOUT = 1 };

/* What kind of failure (REC_ERROR .code); repo.c turns it into errno + text. */
enum repo_ec {
	EC_INTERNAL = 1, /* msg: libgit2's text (may name local paths: repo.c scrubs) */
	EC_AUTH,	 /* the token was refused */
	EC_AUTH_NEEDED,	 /* the server asked for credentials and there is no token */
	EC_NOT_FOUND,	 /* the repository does not exist (404) */
	EC_REF,		 /* the ref is neither a branch, a tag nor a commit */
	EC_NET,		 /* DNS, connect, TLS; msg: libgit2's text */
	EC_REDIRECT,	 /* asked for credentials by another host: token not sent */
	EC_SETUP,	 /* before exec (fork side): .sys_errno, .phase = step */
	EC_TOO_BIG,	 /* the server sent more than MAX_BYTES */
	EC_PRIVATE,	 /* the host resolves to a private address */
	EC_FORBIDDEN,	 /* 403: authenticated (or not) but no access */
};

struct repo_rec {
	uint32_t kind;	/* enum repo_rec_kind */
	uint32_t phase; /* enum repo_rec_phase */
	uint32_t received_objects, total_objects, indexed_objects;
	uint32_t checkout_done, checkout_total;
	int32_t code;	   /* enum repo_ec (REC_ERROR) */
	int32_t sys_errno; /* EC_SETUP */
	uint32_t pad;
	uint64_t received_bytes;
	char msg[448]; /* NUL-terminated */
};

/* An error for the user: the text as given, no errno description appended
 * (cx_err_set's), and code (repo.h lists them).  Returns -1. */
int repo_err_user(cx_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

_Static_assert(sizeof(struct repo_rec) <= 512, "a record must fit one atomic pipe write");

#endif
