/* work.h — small fixed pools of worker threads for blocking work (sandbox
 * create/stop, transcript writes) so the libwebsockets service thread never
 * blocks on it.  A job's `run` runs on a worker; its `done` runs afterwards on
 * the service thread (woken with lws_cancel_service(), the only lws call that
 * is safe from another thread), where it may touch lws objects.
 *
 * Jobs go to a lane, each with its own FIFO queue and threads: the general
 * lane (store writes, deferred replies, imports) and the sandbox lane
 * (a session's prepare, stop, freeze, sync jobs; sandbox.workers threads), so a burst of sandbox
 * creates never holds up a store write or an API reply behind it.  A lane
 * never started hands its jobs to the general one.
 *
 * The background lane is for work that only has to be done soon, not now:
 * the group commits of the off-path store puts and the turn log's sync
 * passes.  A job taken there first waits for a quiet CPU (its thread turns
 * SCHED_IDLE and yields; within cortexd's own CPU share that is: until the
 * service thread leaves it room), then runs at normal priority.  So under
 * a burst the streams get the CPU first and the writes follow, and nothing
 * is ever held (a lock, the store) at idle priority.  Where a thread could not leave SCHED_IDLE again (no
 * CAP_SYS_NICE, RLIMIT_NICE under 20: probed once) there is no wait.
 * Measured in docs/benchmarks.md ("fifth re-run"). */
#ifndef CORTEX_WORK_H
#define CORTEX_WORK_H

#include <stdint.h>

#include "cx.h"

struct lws_context;

typedef void (*work_fn)(void *arg);

enum work_lane { WORK_GENERAL, WORK_SANDBOX, WORK_BACKGROUND, WORK_LANES };
#define WORK_LANE_MAX_THREADS 64

/* Start the general lane's nthreads (and remember ctx for wake-ups). */
int work_start(struct lws_context *ctx, unsigned nthreads, cx_err *err);
/* Start (more) threads of a lane, up to nthreads in all (capped at WORK_LANE_MAX_THREADS). */
int work_start_lane(enum work_lane lane, unsigned nthreads, cx_err *err);
/* Queue a job on the general lane.  run may be NULL (only done runs, on the
 * service thread).  done may be NULL. */
void work_submit(work_fn run, work_fn done, void *arg);
void work_submit_lane(enum work_lane lane, work_fn run, work_fn done, void *arg);
/* In a background job, where it holds nothing (no lock, no store): wait
 * for a quiet CPU again, so a long job yields to the streams as it goes.
 * Elsewhere a no-op. */
void work_quiet_point(void);
/* The background lane's waits for a quiet CPU so far, and their total microseconds. */
void work_quiet_counts(uint64_t *waits, uint64_t *us);
/* First tokens first.  The turns now waiting for their first token are
 * counted (turn.c: +1 when a message goes to an agent, -1 at its first text
 * delta or its end); a background job, before its quiet CPU, waits until
 * there are none -- at most work_first_token_wait_ms (default
 * WORK_FIRST_TOKEN_WAIT_MS) from when it was taken.  Any thread. */
#define WORK_FIRST_TOKEN_WAIT_MS 100
void work_first_tokens_add(int delta);
int work_first_tokens_pending(void);
void work_set_first_token_wait_ms(unsigned ms); /* tests */
/* The background jobs that waited for first tokens, and their total microseconds. */
void work_first_token_counts(uint64_t *waits, uint64_t *us);
/* Service thread only: run the `done` of every finished job. */
void work_drain_done(void);
/* Finish queued jobs, join the threads.  Call before destroying the lws context. */
void work_stop(void);

#endif
