/* handover.h — upgrade restarts that keep sessions (docs/operations.md,
 * "Upgrade restarts").
 *
 * SIGHUP: cortexd stops taking work, drops its clients, and asks every
 * session that is ready (sandbox up, ws-agent linked, no job, agent not
 * booting) to "detach": ws-agent holds its agents (their output waits in
 * their pipes) and answers wsa.detached behind every line it sent before, so
 * cortexd has all of the agents' output, in the turn log.  Then it writes
 * DATA/handover/state.json (root-only; its pid, and per session the sandbox's
 * monitor and init pids and control socket fd, kept open across the execve,
 * the hot agent, the running turn, the gateway token), shuts the rest down as
 * a graceful stop does (sessions it could not detach are stopped and come back
 * sleeping) and execve()s its own binary with the same argv.
 *
 * The new process (same pid) reads the record only if it names its own pid
 * and deletes it; each session's sandbox is adopted after checks that trust
 * nothing the record says (sandbox_adopt), the link to ws-agent is opened
 * again and its first frame is "attach": the agents go on, the running turn
 * continues with the next seq, and a client that reconnects and resumes gets
 * every frame it lacks from the turn log.  A sandbox that cannot be adopted
 * is stopped and its session comes back sleeping, its turn ended by
 * cortex.error cortexd_restarted.
 *
 * kill -9 (sessions.keep_on_crash): no record is written at the end, so one
 * is kept all along (handover_keep_note, DATA/keep/<id>.json); a cortexd
 * started on the same data dir reclaims the sandboxes from those records
 * (sandbox_reclaim: the monitor is no longer our child) in handover_adopt,
 * then the same attach as above (docs/operations.md, "Crashes that keep
 * sessions"). */
#ifndef CORTEX_HANDOVER_H
#define CORTEX_HANDOVER_H

#include "session.h"

#define HANDOVER_DIR	  "handover"
#define HANDOVER_DRAIN_MS 5000 /* longest wait for the detach answers */

/* Drop every client and send detach where it applies: the number sent. */
unsigned handover_detach_all(struct cortexd *d);
/* wsa.detached of s arrived (agent.c). */
void handover_detached(struct session *s);
/* After the drain: write the record; the kept sandboxes are let go of (the
 * lifecycle's shutdown leaves those sessions alone).  0, or -1 (logged): then
 * nothing is kept (the shutdown stops everything). */
int handover_write(struct cortexd *d);
/* execve() of d->exe with d->argv; returns only on failure (logged). */
void handover_exec(struct cortexd *d);

/* New process, at load: read (and remove) the record if it is ours. */
void handover_load(struct cortexd *d);
/* At load of s: take its sandbox back if the record has it; 1 adopted. */
int handover_adopt(struct session *s);
/* After the cgroup reap of a session whose sandbox was not taken back: its
 * monitor (our child) is reaped, bounded. */
void handover_reap_failed(struct session *s);
/* After load: close what the record held that no session took. */
void handover_load_done(struct cortexd *d);
/* sessions.keep_on_crash: (re)write DATA/keep/<id>.json (root-only) for s's
 * running sandbox -- its monitor and init pids, the monitor's copy of the
 * control socket, the hot agent, the running turn -- so that a cortexd
 * started after a kill -9 takes it back (sandbox_reclaim) from handover_adopt.
 * Called when the sandbox is up, an agent turns hot, a turn's message is sent
 * and a turn ends.  No-op when the option is off. */
void handover_keep_note(struct session *s);
/* Once the event loop runs: adopted sessions link to ws-agent again. */
void handover_resume(struct cortexd *d);

#endif
