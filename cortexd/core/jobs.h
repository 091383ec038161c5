/* jobs.h — the lifecycle's blocking work, run on worker threads.
 *
 * A job gets copies of what it needs when it is submitted and writes only its
 * own struct; its result is applied to the session by lifecycle.c on the
 * service thread (work.h: run on a worker, done on the service thread).
 * Nothing here reads or writes a struct session. */
#ifndef CORTEX_JOBS_H
#define CORTEX_JOBS_H

#include <sys/types.h>

#include "config.h"
#include "sandbox.h"
#include "sync.h"

struct session;

/* Root-only dirs of the data dir, never bound into a sandbox: what cortexd
 * (root) opens, binds or connects to for a session lives there, never under
 * the session's dirs, which the sandbox can write (home, workspace, run). */
#define JOBS_SOCK_DIR "sock" /* <id>.sock: the listening socket ws-agent serves */
#define JOBS_LOG_DIR "logs"  /* <id>.ws-agent.log: ws-agent's stdout and stderr */
/* Open DATA/<sub> (O_PATH|O_DIRECTORY), making it 0700 when missing; refuses
 * a symlink, a dir of another owner, or one open to group or others.
 * Returns the fd, or -1 with err. */
int jobs_private_dir(const config *c, const char *sub, cx_err *err);
/* Remove what a session left in those dirs: its socket, and with the_log its
 * log too (delete).  Missing files are fine. */
void jobs_remove_session_files(const config *c, const char *id, int the_log);

/* Create the sandbox and start ws-agent in it; ready when ws-agent says so.
 * ws-agent gets the ready pipe as fd 3 and, as fd 4, a listening socket
 * cortexd made at DATA/sock/<id>.sock (it serves that, and cortexd connects
 * there: nothing the sandbox can write is on either path). */
struct prepare_job {
	struct session *s;      /* for done only: never touched by run */
	const config *cfg;      /* the daemon's, immutable while running */
	char id[40];
	char dir[4096];
	sandbox *old;           /* owned: a broken sandbox of the session, stopped first */
	/* result */
	sandbox *sb;            /* NULL on failure */
	pid_t wsa_pid;
	double ms;
	cx_err err;
};
void job_prepare_run(void *arg);

/* Stop every process (and remove the session's dir when deleting). */
struct stop_job {
	struct session *s;      /* for done only; NULL when the session is gone */
	const config *cfg;      /* the daemon's, immutable while running */
	sandbox *sb;            /* owned by the job */
	int remove_dir;
	char id[40];
	char dir[4096];
};
void job_stop_run(void *arg);

/* Freeze the sandbox's cgroup; returns once FROZEN. */
struct freeze_job {
	struct session *s;
	sandbox *sb;            /* borrowed: the session keeps it, nothing else runs meanwhile */
	int rc;
	cx_err err;
};
void job_freeze_run(void *arg);

/* Bring the sandbox in line with a config (files, package mounts). */
struct sync_job {
	struct session *s;
	sandbox *sb;            /* borrowed, as above */
	cconfig *cfg;           /* ref */
	int parallel;
	pid_t wsa_pid;
	struct sync_state state; /* a copy of the session's; the result replaces it */
	struct sync_result r;
};
void job_sync_run(void *arg);

#endif
