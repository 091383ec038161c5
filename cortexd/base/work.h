/* work.h — a small fixed pool of worker threads for blocking work (sandbox
 * create/stop, transcript writes) so the libwebsockets service thread never
 * blocks on it.  A job's `run` runs on a worker; its `done` runs afterwards on
 * the service thread (woken with lws_cancel_service(), the only lws call that
 * is safe from another thread), where it may touch lws objects. */
#ifndef CORTEX_WORK_H
#define CORTEX_WORK_H

#include "cx.h"

struct lws_context;

typedef void (*work_fn)(void *arg);

int work_start(struct lws_context *ctx, unsigned nthreads, cx_err *err);
/* Queue a job.  run may be NULL (only done runs, on the service thread).  done may be NULL. */
void work_submit(work_fn run, work_fn done, void *arg);
/* Service thread only: run the `done` of every finished job. */
void work_drain_done(void);
/* Finish queued jobs, join the threads.  Call before destroying the lws context. */
void work_stop(void);

#endif
