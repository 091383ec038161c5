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

/* Create the sandbox and start ws-agent in it; ready when ws-agent says so. */
struct prepare_job {
	struct session *s;      /* for done only: never touched by run */
	const config *cfg;      /* the daemon's, immutable while running */
	char id[40];
	char dir[4096];
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
	sandbox *sb;            /* owned by the job */
	int remove_dir;
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
